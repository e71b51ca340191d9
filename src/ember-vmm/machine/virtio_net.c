/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net on a host tap device (docs/vmm-machine.md).
 *
 * Queues: 0 rx (frames for the guest), 1 tx (frames from the guest). Every
 * buffer starts with the 12-byte virtio_net_hdr of virtio 1.x (the
 * num_buffers field is always there once VERSION_1 is negotiated). No
 * offload is offered: the guest sends complete frames with their
 * checksums, and the tap is told to hand us only such frames
 * (TUNSETOFFLOAD 0), so both directions carry a header of zeros (rx:
 * num_buffers = 1; the tap's DATA_VALID hint is dropped, and a partial
 * checksum is completed here before the frame goes in). The tap is opened with IFF_VNET_HDR and a 12-byte
 * header size, so the bytes on each side are the same layout.
 *
 * Threads and locking: all state is guarded by the bus lock of the
 * device's MMIO window.
 *   - tx runs on the vCPU thread that wrote QueueNotify: each chain is one
 *     frame, written to the tap (non-blocking; a frame the tap refuses is
 *     dropped, as a full NIC queue would);
 *   - rx runs on the device thread, woken by the tap being readable
 *     (epoll, level-triggered). A frame is read only once an rx chain is
 *     held for it; with no chain available (or the VM paused) the tap is
 *     taken out of the epoll set until the driver adds buffers (its
 *     QueueNotify) or the VM resumes, so frames wait in the tap's queue.
 *
 * While the VM is paused (virtio_net_quiesce) nothing is written to guest
 * memory, so a snapshot sees the rings and the buffers as the transport's
 * saved state says.
 *
 * TODO(vmm-machine): no checksum or segmentation offload, no mergeable rx
 * buffers, no event index: every frame costs a copy through the bounce
 * buffer and an interrupt. Right, not fast; offloads would cut the per-
 * frame cost for bulk transfers.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/if_tun.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_net.h>

#include "ember/log.h"
#include "ember/util.h"
#include "virtio_mmio.h"

#define NET_RXQ 0
#define NET_TXQ 1
#define NET_HDR_LEN 12
#define NET_MIN_FRAME 14		 /* an Ethernet header */
#define NET_MAX_FRAME (65535 + 14)	 /* what a tap may hand over */
#define NET_TX_BATCH 64

#define EV_TAP 1
#define EV_STOP 2

_Static_assert(sizeof(struct virtio_net_hdr_v1) == NET_HDR_LEN,
	       "virtio_net_hdr_v1 is 12 bytes");

struct virtio_net {
	struct machine *m;
	struct virtio_mmio *t;
	pthread_mutex_t *lock; /* the bus lock of the MMIO window */
	char tap_name[IFNAMSIZ];
	uint8_t mac[6];
	bool has_mac;
	int tap_fd, epoll_fd, stop_fd;
	pthread_t thread;
	bool thread_started;
	bool quiesced;	/* the VM is paused: no guest memory writes */
	bool tap_armed; /* the tap is in the epoll set */
	uint64_t rx_frames, tx_frames, rx_dropped, tx_dropped;
	uint8_t frame[NET_HDR_LEN + NET_MAX_FRAME]; /* rx bounce buffer */
};

static bool driver_ready(const struct virtio_net *n)
{
	const struct virtio_mmio *t = n->t;

	return t && (t->status & VIRTIO_CONFIG_S_DRIVER_OK) &&
	       !(t->status & VIRTIO_CONFIG_S_NEEDS_RESET);
}

/* Puts the tap in or out of the epoll set. */
static void arm_tap(struct virtio_net *n, bool on)
{
	struct epoll_event ev = { .events = on ? EPOLLIN : 0,
				  .data.u64 = EV_TAP };

	if (on == n->tap_armed)
		return;
	if (epoll_ctl(n->epoll_fd, EPOLL_CTL_MOD, n->tap_fd, &ev) < 0) {
		olog_error(n->m->id, "virtio-net %s: epoll_ctl: %s",
			   n->tap_name, strerror(errno));
		return;
	}
	n->tap_armed = on;
}

/*
 * The tap marks frames whose checksum the host already checked
 * (DATA_VALID: the guest, without VIRTIO_NET_F_GUEST_CSUM, checks again
 * itself) and, should one slip through despite TUNSETOFFLOAD 0, frames
 * whose checksum is left to the receiver (NEEDS_CSUM: the field at
 * csum_start + csum_offset holds the pseudo-header sum; the one's
 * complement sum from csum_start to the end completes it). -EINVAL for
 * offsets outside the frame.
 */
static int complete_csum(const struct virtio_net_hdr_v1 *h, uint8_t *f,
			 size_t len)
{
	size_t start = h->csum_start, at = start + h->csum_offset;
	uint32_t sum = 0;

	if (!(h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))
		return 0;
	if (start >= len || at + 2 > len)
		return -EINVAL;
	for (size_t i = start; i + 1 < len; i += 2)
		sum += (uint32_t)(f[i] << 8 | f[i + 1]);
	if ((len - start) & 1)
		sum += (uint32_t)f[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	sum = ~sum & 0xffff;
	f[at] = (uint8_t)(sum >> 8);
	f[at + 1] = (uint8_t)sum;
	return 0;
}

/* Moves frames from the tap into rx chains while both have some. With the
 * lock held. */
static void rx_deliver(struct virtio_net *n)
{
	struct virtio_mmio *t = n->t;
	struct virtq *q = &t->queues[NET_RXQ];
	struct virtq_chain c;
	bool used = false, starved = false;

	while (!n->quiesced && driver_ready(n) && q->ready) {
		struct virtio_net_hdr_v1 *h = (void *)n->frame;
		ssize_t got;
		int r = virtq_pop(t, q, &c);

		if (r <= 0) {
			starved = r == 0;
			break;
		}
		if (c.n == 0 || !c.bufs[0].device_writes ||
		    virtq_chain_writable(&c) < NET_HDR_LEN + NET_MIN_FRAME) {
			olog_debug(n->m->id, "virtio-net %s: rx chain too small or not writable",
				   n->tap_name);
			virtq_push(t, q, c.head, 0);
			used = true;
			continue;
		}
		do {
			got = read(n->tap_fd, n->frame, sizeof(n->frame));
		} while (got < 0 && errno == EINTR);
		if (got < 0) {
			virtq_unpop(q);
			if (errno != EAGAIN)
				olog_warn(n->m->id, "virtio-net %s: reading the tap: %s",
					  n->tap_name, strerror(errno));
			break;
		}
		/* A frame the chain cannot hold whole, or a segmentation
		 * offload we did not ask for, is dropped; the chain waits
		 * for the next frame. */
		if (got < NET_HDR_LEN + NET_MIN_FRAME ||
		    (size_t)got > virtq_chain_writable(&c) ||
		    h->gso_type != VIRTIO_NET_HDR_GSO_NONE ||
		    complete_csum(h, n->frame + NET_HDR_LEN,
				  (size_t)got - NET_HDR_LEN) < 0) {
			virtq_unpop(q);
			n->rx_dropped++;
			continue;
		}
		memset(h, 0, NET_HDR_LEN);
		h->num_buffers = 1;
		virtq_chain_write(&c, 0, n->frame, (size_t)got);
		virtq_push(t, q, c.head, (uint32_t)got);
		n->rx_frames++;
		used = true;
	}
	if (used)
		virtio_mmio_signal_used(t);
	/* Out of the epoll set while nothing could be delivered; the
	 * driver's next rx notify or the resume brings it back. */
	arm_tap(n, !n->quiesced && driver_ready(n) && q->ready && !starved);
}

/* One frame from a tx chain to the tap. */
static void tx_frame(struct virtio_net *n, const struct virtq_chain *c)
{
	static const uint8_t zero_hdr[NET_HDR_LEN];
	struct iovec iov[VIRTQ_MAX_CHAIN + 1];
	size_t skip = NET_HDR_LEN, frame = 0;
	int cnt = 0;
	ssize_t w;

	/* Our own header of zeros: no offload was negotiated, so the
	 * driver's can ask for nothing; a malicious one asks for nothing. */
	iov[cnt].iov_base = (void *)zero_hdr;
	iov[cnt++].iov_len = NET_HDR_LEN;
	for (unsigned i = 0; i < c->n; i++) {
		const struct virtq_buf *b = &c->bufs[i];

		if (b->device_writes)
			goto malformed;
		if (skip >= b->len) {
			skip -= b->len;
			continue;
		}
		iov[cnt].iov_base = b->hva + skip;
		iov[cnt++].iov_len = b->len - skip;
		frame += b->len - skip;
		skip = 0;
	}
	if (skip || frame < NET_MIN_FRAME || frame > NET_MAX_FRAME)
		goto malformed;
	do {
		w = writev(n->tap_fd, iov, cnt);
	} while (w < 0 && errno == EINTR);
	if (w < 0) {
		/* EAGAIN/ENOBUFS: the tap's queue is full; EIO: it is
		 * down. The frame is lost either way, as on a wire. */
		olog_debug(n->m->id, "virtio-net %s: frame of %zu bytes dropped: %s",
			   n->tap_name, frame, strerror(errno));
		n->tx_dropped++;
		return;
	}
	n->tx_frames++;
	return;
malformed:
	olog_debug(n->m->id, "virtio-net %s: malformed tx chain dropped",
		   n->tap_name);
	n->tx_dropped++;
}

/* vCPU thread, with the lock held. */
static void net_notify(void *dev, struct virtio_mmio *t, unsigned qi)
{
	struct virtio_net *n = dev;
	struct virtq *q = &t->queues[qi];
	struct virtq_chain c;
	bool used = false;

	if (qi == NET_RXQ) {
		rx_deliver(n);
		return;
	}
	if (qi != NET_TXQ)
		return;
	/* In batches, so that a guest that keeps the queue full does not
	 * hold its vCPU here for ever. */
	for (unsigned i = 0; i < NET_TX_BATCH && virtq_pop(t, q, &c) > 0;
	     i++) {
		tx_frame(n, &c);
		virtq_push(t, q, c.head, 0);
		used = true;
	}
	if (used)
		virtio_mmio_signal_used(t);
}

static void net_config_read(void *dev, uint64_t off, uint8_t *data,
			    unsigned len)
{
	struct virtio_net *n = dev;
	struct virtio_net_config cfg = { 0 };

	memcpy(cfg.mac, n->mac, sizeof(cfg.mac));
	if (off < sizeof(cfg))
		memcpy(data, (uint8_t *)&cfg + off,
		       EMBER_MIN((size_t)len, sizeof(cfg) - off));
}

static void net_reset(void *dev)
{
	struct virtio_net *n = dev;

	arm_tap(n, false);
}

/*
 * The device's own snapshot state, after the transport's:
 *   u32 version (1), u8 mac[6], u8 has_mac, u8 0
 * The queues are the transport's; the frames in the tap's queue are not
 * part of the VM (a restored VM sees them lost, as on a wire).
 */
#define NET_STATE_SIZE 12

static int net_save(void *dev, uint8_t **buf, size_t *len)
{
	struct virtio_net *n = dev;
	uint8_t *b = calloc(1, NET_STATE_SIZE);
	uint32_t version = 1;

	if (!b)
		return -ENOMEM;
	memcpy(b, &version, 4);
	memcpy(b + 4, n->mac, 6);
	b[10] = n->has_mac;
	*buf = b;
	*len = NET_STATE_SIZE;
	return 0;
}

static int net_restore(void *dev, const uint8_t *b, size_t len)
{
	struct virtio_net *n = dev;
	uint32_t version;

	if (len != NET_STATE_SIZE)
		return -EINVAL;
	memcpy(&version, b, 4);
	/* The guest knows its MAC already: the device must keep it. */
	if (version != 1 || b[10] != n->has_mac || memcmp(b + 4, n->mac, 6))
		return -EINVAL;
	return 0;
}

static void *net_thread(void *arg)
{
	struct virtio_net *n = arg;
	struct epoll_event evs[2];

	for (;;) {
		int cnt = epoll_wait(n->epoll_fd, evs, 2, -1);

		if (cnt < 0) {
			if (errno == EINTR)
				continue;
			olog_error(n->m->id, "virtio-net %s: epoll_wait: %s",
				   n->tap_name, strerror(errno));
			return NULL;
		}
		for (int i = 0; i < cnt; i++)
			if (evs[i].data.u64 == EV_STOP)
				return NULL;
		pthread_mutex_lock(n->lock);
		rx_deliver(n);
		pthread_mutex_unlock(n->lock);
	}
}

static void net_teardown(void *dev)
{
	struct virtio_net *n = dev;

	if (n->thread_started) {
		uint64_t one = 1;

		if (write(n->stop_fd, &one, sizeof(one)) < 0)
			olog_warn(n->m->id, "virtio-net: stop: %s",
				  strerror(errno));
		pthread_join(n->thread, NULL);
	}
	if (n->tap_fd >= 0)
		olog_debug(n->m->id,
			   "virtio-net %s: rx %llu frames (%llu dropped), tx %llu (%llu dropped)",
			   n->tap_name, (unsigned long long)n->rx_frames,
			   (unsigned long long)n->rx_dropped,
			   (unsigned long long)n->tx_frames,
			   (unsigned long long)n->tx_dropped);
	for (unsigned i = 0; i < n->m->n_nets; i++)
		if (n->m->nets[i] == n)
			n->m->nets[i] = NULL;
	ember_close(&n->tap_fd);
	ember_close(&n->epoll_fd);
	ember_close(&n->stop_fd);
	free(n);
}

static const struct virtio_dev_ops net_ops_mac = {
	.name = "virtio-net",
	.device_id = VIRTIO_ID_NET,
	.features = 1ULL << VIRTIO_NET_F_MAC,
	.num_queues = 2,
	.config_read = net_config_read,
	.queue_notify = net_notify,
	.reset = net_reset,
	.teardown = net_teardown,
	.save = net_save,
	.restore = net_restore,
};

/* Without a MAC the driver makes up its own. */
static const struct virtio_dev_ops net_ops_nomac = {
	.name = "virtio-net",
	.device_id = VIRTIO_ID_NET,
	.features = 0,
	.num_queues = 2,
	.config_read = net_config_read,
	.queue_notify = net_notify,
	.reset = net_reset,
	.teardown = net_teardown,
	.save = net_save,
	.restore = net_restore,
};

/* Opens the existing tap `name` in this network namespace. */
static int open_tap(const char *name)
{
	struct ifreq ifr = { 0 };
	int fd, hdr = NET_HDR_LEN, ret;

	/* TUNSETIFF would create a missing tap (with CAP_NET_ADMIN), in
	 * whatever namespace the VMM happens to be: only an existing one
	 * is taken, as the agent (or the user) made it. */
	if (if_nametoindex(name) == 0)
		return -ENODEV;
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 ||
	    ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
	    ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

int virtio_net_setup(struct machine *m, const char *tap_name,
		     const uint8_t *mac)
{
	struct epoll_event ev = { .events = 0, .data.u64 = EV_TAP };
	struct virtio_net *n;
	int ret;

	if (!tap_name || !tap_name[0] || strlen(tap_name) >= IFNAMSIZ)
		return -EINVAL;
	if (m->n_nets >= MACHINE_MAX_NETS)
		return -ENOSPC;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->m = m;
	n->epoll_fd = n->stop_fd = -1;
	snprintf(n->tap_name, sizeof(n->tap_name), "%s", tap_name);
	if (mac) {
		memcpy(n->mac, mac, 6);
		n->has_mac = true;
	}
	n->tap_fd = open_tap(tap_name);
	if (n->tap_fd < 0) {
		ret = n->tap_fd;
		free(n);
		return ret; /* the caller names the interface */
	}
	n->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	n->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->epoll_fd < 0 || n->stop_fd < 0 ||
	    epoll_ctl(n->epoll_fd, EPOLL_CTL_ADD, n->tap_fd, &ev) < 0)
		goto fail_errno;
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = EV_STOP };
	if (epoll_ctl(n->epoll_fd, EPOLL_CTL_ADD, n->stop_fd, &ev) < 0)
		goto fail_errno;

	/* From here the transport owns n (its teardown frees it). */
	ret = virtio_mmio_add(m, n->has_mac ? &net_ops_mac : &net_ops_nomac,
			      n, &n->t);
	if (ret)
		return ret;
	for (unsigned i = 0; i < m->n_devs; i++)
		if (m->devs[i]->opaque == n->t)
			n->lock = &m->devs[i]->lock;
	if (!n->lock)
		return -EFAULT; /* torn down with the machine */
	m->nets[m->n_nets++] = n;
	ret = pthread_create(&n->thread, NULL, net_thread, n);
	if (ret) {
		olog_error(m->id, "virtio-net: cannot start its thread: %s",
			   strerror(ret));
		return -ret;
	}
	n->thread_started = true;
	olog_debug(m->id, "virtio-net on tap %s", tap_name);
	return 0;

fail_errno:
	ret = -errno;
	olog_error(m->id, "virtio-net %s: %s", tap_name, strerror(-ret));
	net_teardown(n);
	return ret;
}

void virtio_net_quiesce(struct machine *m, bool on)
{
	for (unsigned i = 0; i < m->n_nets; i++) {
		struct virtio_net *n = m->nets[i];

		if (!n)
			continue;
		pthread_mutex_lock(n->lock);
		n->quiesced = on;
		if (on)
			arm_tap(n, false);
		else
			rx_deliver(n);
		pthread_mutex_unlock(n->lock);
	}
}
