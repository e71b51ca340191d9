/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-vsock (device id 19) with Firecracker's host side: the guest's
 * stream sockets are bridged to Unix sockets on the host. See
 * docs/vsock.md for the host-side protocol.
 *
 *   host -> guest  a client connects to uds_path and writes
 *                  "CONNECT <port>\n"; once the guest accepts, the device
 *                  answers "OK <host port>\n" and the socket carries the
 *                  stream; a refusal closes it.
 *   guest -> host  a guest connection to CID 2, port P is connected to the
 *                  Unix socket "<uds_path>_P".
 */
#ifndef EMBER_VMM_VIRTIO_VSOCK_H
#define EMBER_VMM_VIRTIO_VSOCK_H

#include <stdbool.h>
#include <stdint.h>

struct machine;

#define VSOCK_HOST_CID 2
#define VSOCK_MIN_GUEST_CID 3

/* Adds the device: listens on uds_path (an existing socket file there is
 * replaced) and starts the device thread that serves the host sockets.
 * 0 or -errno (-EINVAL for a bad CID or a path too long for a socket). */
int virtio_vsock_setup(struct machine *m, uint32_t guest_cid,
		       const char *uds_path);

/* Drops every connection (their host sockets are closed) and tells the
 * driver VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (at once,
 * or as soon as it makes an event buffer available). For snapshots: the
 * guest's sockets do not survive the move to another host. Safe from any
 * thread but a device handler's. No-op without a vsock device. */
void virtio_vsock_transport_reset(struct machine *m);

/* While the VM is paused (on), the device writes nothing to guest memory
 * and raises no interrupt: host connections and their data wait. Off
 * delivers what waited. The transport reset above still writes its event
 * while quiesced (it is meant for the snapshot). No-op without a vsock
 * device. */
void virtio_vsock_quiesce(struct machine *m, bool on);

#endif
