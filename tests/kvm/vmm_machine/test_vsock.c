/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-vsock with real host Unix sockets. The test plays the guest's
 * driver itself: it writes the device's MMIO registers through the bus
 * handler (under the device lock, as a vCPU would) and keeps the rings in
 * guest memory; no vCPU runs. Checked: CONNECT/REQUEST/RESPONSE/OK, data
 * both ways, the guest's credit limiting what the device sends, a guest
 * connection to <uds_path>_P and one to a port with no listener (RST), the
 * host closing (SHUTDOWN), the transport reset event, nothing written to
 * guest memory while quiesced (a paused VM), and a reset event still
 * pending carried in the device's snapshot state.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_vsock.h>

#include "ember/util.h"
#include "machine/machine.h"
#include "machine/virtio_vsock.h"
#include "test.h"

#define QN 16
#define CID 7
#define RING_GPA(q) (0x100000ULL + (q) * 0x10000ULL)
#define RXBUF_GPA(i) (0x200000ULL + (i) * 0x1000ULL)
#define TXBUF_GPA(i) (0x300000ULL + (i) * 0x1000ULL)
#define EVBUF_GPA 0x380000ULL

static struct machine *m;
static struct machine_dev *dev;
static uint16_t used_seen[3], tx_next;

static void mmio_w(uint64_t off, uint32_t v)
{
	pthread_mutex_lock(&dev->lock);
	dev->io(dev->opaque, off, (uint8_t *)&v, 4, true);
	pthread_mutex_unlock(&dev->lock);
}

static uint32_t mmio_r(uint64_t off)
{
	uint32_t v = ~0u;

	pthread_mutex_lock(&dev->lock);
	dev->io(dev->opaque, off, (uint8_t *)&v, 4, false);
	pthread_mutex_unlock(&dev->lock);
	return v;
}

static struct vring_desc *desc(unsigned q)
{
	return machine_gpa_to_hva(m, RING_GPA(q), QN * sizeof(struct vring_desc));
}
static struct vring_avail *avail(unsigned q)
{
	return machine_gpa_to_hva(m, RING_GPA(q) + 0x1000, 0x100);
}
static struct vring_used *used(unsigned q)
{
	return machine_gpa_to_hva(m, RING_GPA(q) + 0x2000, 0x200);
}

static void make_avail(unsigned q, uint16_t head)
{
	struct vring_avail *a = avail(q);

	a->ring[a->idx % QN] = head;
	__atomic_store_n(&a->idx, (uint16_t)(a->idx + 1), __ATOMIC_RELEASE);
}

static void setup_queue(unsigned q)
{
	mmio_w(VIRTIO_MMIO_QUEUE_SEL, q);
	mmio_w(VIRTIO_MMIO_QUEUE_NUM, QN);
	mmio_w(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)RING_GPA(q));
	mmio_w(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
	mmio_w(VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)(RING_GPA(q) + 0x1000));
	mmio_w(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
	mmio_w(VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)(RING_GPA(q) + 0x2000));
	mmio_w(VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
	mmio_w(VIRTIO_MMIO_QUEUE_READY, 1);
}

static void driver_init(void)
{
	mmio_w(VIRTIO_MMIO_STATUS, 0);
	mmio_w(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE |
					   VIRTIO_CONFIG_S_DRIVER);
	mmio_w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	mmio_w(VIRTIO_MMIO_DRIVER_FEATURES, 1); /* VERSION_1 */
	mmio_w(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE |
					   VIRTIO_CONFIG_S_DRIVER |
					   VIRTIO_CONFIG_S_FEATURES_OK);
	for (unsigned q = 0; q < 3; q++)
		setup_queue(q);
	for (unsigned i = 0; i < QN; i++) {
		desc(0)[i] = (struct vring_desc){ .addr = RXBUF_GPA(i),
						  .len = 0x1000,
						  .flags = VRING_DESC_F_WRITE };
		make_avail(0, (uint16_t)i);
	}
	desc(2)[0] = (struct vring_desc){ .addr = EVBUF_GPA, .len = 4,
					  .flags = VRING_DESC_F_WRITE };
	make_avail(2, 0);
	mmio_w(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE |
					   VIRTIO_CONFIG_S_DRIVER |
					   VIRTIO_CONFIG_S_FEATURES_OK |
					   VIRTIO_CONFIG_S_DRIVER_OK);
}

/* Next packet the device put on rx other than CREDIT_UPDATE (waits up to
 * 5 s); the buffer goes back to the device. Returns the payload length or
 * -1. */
static int rx_next(struct virtio_vsock_hdr *h, void *payload, size_t max)
{
	for (int i = 0; i < 500; i++) {
		struct vring_used *u = used(0);
		uint16_t idx = __atomic_load_n(&u->idx, __ATOMIC_ACQUIRE);

		if (idx != used_seen[0]) {
			struct vring_used_elem e = u->ring[used_seen[0] % QN];
			uint8_t *buf = machine_gpa_to_hva(m, RXBUF_GPA(e.id),
							  0x1000);
			size_t n;

			used_seen[0]++;
			memcpy(h, buf, sizeof(*h));
			/* Credit updates come whenever the device drains its
			 * ring (timing): not what the checks wait for. */
			if (h->op == VIRTIO_VSOCK_OP_CREDIT_UPDATE) {
				make_avail(0, (uint16_t)e.id);
				mmio_w(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
				continue;
			}
			n = EMBER_MIN((size_t)h->len, max);
			memcpy(payload, buf + sizeof(*h), n);
			make_avail(0, (uint16_t)e.id);
			mmio_w(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
			return (int)n;
		}
		usleep(10000);
	}
	return -1;
}

static void tx(uint32_t src_port, uint32_t dst_port, uint16_t op,
	       uint32_t flags, uint32_t buf_alloc, uint32_t fwd_cnt,
	       const void *data, uint32_t len)
{
	unsigned slot = tx_next++ % QN;
	uint8_t *buf = machine_gpa_to_hva(m, TXBUF_GPA(slot), 0x1000);
	struct virtio_vsock_hdr h = {
		.src_cid = CID, .dst_cid = 2, .src_port = src_port,
		.dst_port = dst_port, .len = len,
		.type = VIRTIO_VSOCK_TYPE_STREAM, .op = op, .flags = flags,
		.buf_alloc = buf_alloc, .fwd_cnt = fwd_cnt,
	};

	memcpy(buf, &h, sizeof(h));
	/* Header and payload in two descriptors, as Linux 6.1 sends. */
	desc(1)[slot] = (struct vring_desc){
		.addr = TXBUF_GPA(slot), .len = sizeof(h),
		.flags = len ? VRING_DESC_F_NEXT : 0,
		.next = (uint16_t)((slot + 8) % QN) };
	if (len) {
		memcpy(buf + 0x800, data, len);
		desc(1)[(slot + 8) % QN] = (struct vring_desc){
			.addr = TXBUF_GPA(slot) + 0x800, .len = len };
	}
	make_avail(1, (uint16_t)slot);
	mmio_w(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
}

static int unix_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int unix_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 4) < 0)
		return -1;
	return fd;
}

/* Reads exactly len bytes with a 5 s bound; returns the count read. */
static size_t read_n(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 5000) <= 0)
			break;
		n = read(fd, (uint8_t *)buf + got, len - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

/* While quiesced (a paused VM) a host CONNECT waits in the device: no
 * REQUEST reaches guest memory until it is let go. */
static void check_quiesce(const char *path)
{
	struct virtio_vsock_hdr h;
	uint8_t data[64];
	uint16_t before = __atomic_load_n(&used(0)->idx, __ATOMIC_ACQUIRE);
	int c;

	virtio_vsock_quiesce(m, true);
	c = unix_connect(path);
	CHECK(c >= 0 && write(c, "CONNECT 1025\n", 13) == 13);
	/* Longer than the 5 s a guest has to answer a CONNECT: a paused
	 * guest's time only runs from the resume. */
	usleep(5600 * 1000);
	CHECK(__atomic_load_n(&used(0)->idx, __ATOMIC_ACQUIRE) == before);
	virtio_vsock_quiesce(m, false);
	CHECK(rx_next(&h, data, sizeof(data)) == 0 &&
	      h.op == VIRTIO_VSOCK_OP_REQUEST && h.dst_port == 1025);
	/* The guest refuses: the host socket is closed. */
	tx(1025, h.src_port, VIRTIO_VSOCK_OP_RST, 0, 0, 0, NULL, 0);
	CHECK(c >= 0 && read_n(c, data, 1) == 0);
	if (c >= 0)
		close(c);
}

static struct machine_dev *vsock_dev(struct machine *mm)
{
	for (unsigned i = 0; i < mm->n_devs; i++)
		if (strcmp(mm->devs[i]->name, "virtio-vsock") == 0)
			return mm->devs[i];
	return NULL;
}

/* A transport reset while the driver has no event buffer is kept in the
 * device's saved state; a device restored from it (guest memory copied,
 * as a snapshot does) hands the event to the driver's next buffer. */
static int check_pending_reset(const char *dir)
{
	struct machine_config mc = { .id = "vsock-test-2", .vcpu_count = 1,
				     .mem_size = 16ULL << 20 };
	struct machine *m1 = m, *m2 = NULL;
	struct machine_dev *dev1 = dev;
	uint8_t *state = NULL;
	size_t len = 0;
	uint32_t words[2];
	char path2[80];
	int r;

	/* The first reset used the driver's only event buffer. */
	virtio_vsock_transport_reset(m);
	CHECK(__atomic_load_n(&used(2)->idx, __ATOMIC_ACQUIRE) == 1);
	pthread_mutex_lock(&dev->lock);
	r = dev->save ? dev->save(dev->opaque, &state, &len) : -1;
	pthread_mutex_unlock(&dev->lock);
	REQUIRE(r == 0 && len >= 8);
	memcpy(words, state + len - 8, 8);
	CHECK(words[0] == 1 && words[1] == 1); /* version 1, reset pending */

	snprintf(path2, sizeof(path2), "%s/v2.sock", dir);
	REQUIRE(machine_create(&mc, &m2) == 0);
	REQUIRE(virtio_vsock_setup(m2, CID, path2) == 0);
	memcpy(machine_gpa_to_hva(m2, 0x100000, 0x300000),
	       machine_gpa_to_hva(m1, 0x100000, 0x300000), 0x300000);
	m = m2;
	dev = vsock_dev(m2);
	REQUIRE(dev != NULL);
	/* Unknown flags are refused. */
	state[len - 4] = 3;
	pthread_mutex_lock(&dev->lock);
	CHECK(dev->restore(dev->opaque, state, len) == -EINVAL);
	state[len - 4] = 1;
	CHECK(dev->restore(dev->opaque, state, len) == 0);
	pthread_mutex_unlock(&dev->lock);
	/* Nothing for the driver until it posts an event buffer. */
	CHECK(__atomic_load_n(&used(2)->idx, __ATOMIC_ACQUIRE) == 1);
	desc(2)[1] = (struct vring_desc){ .addr = EVBUF_GPA + 0x100, .len = 4,
					  .flags = VRING_DESC_F_WRITE };
	make_avail(2, 1);
	mmio_w(VIRTIO_MMIO_QUEUE_NOTIFY, 2);
	CHECK(__atomic_load_n(&used(2)->idx, __ATOMIC_ACQUIRE) == 2);
	CHECK(*(uint32_t *)machine_gpa_to_hva(m2, EVBUF_GPA + 0x100, 4) ==
	      VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
	machine_destroy(m2);
	CHECK(access(path2, F_OK) != 0);
	m = m1;
	dev = dev1;
	free(state);
	return 0;
}

int main(void)
{
	struct machine_config mc = { .id = "vsock-test", .vcpu_count = 1,
				     .mem_size = 16ULL << 20 };
	char dir[] = "/tmp/ember-vsock-XXXXXX", path[80], path52[108];
	struct virtio_vsock_hdr h;
	uint8_t data[4096];
	uint32_t host_port;
	char line[64];
	int c, l, s, n;

	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		fprintf(stderr, "SKIP: no /dev/kvm\n");
		return 77;
	}
	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/v.sock", dir);
	snprintf(path52, sizeof(path52), "%s_52", path);
	REQUIRE(machine_create(&mc, &m) == 0);
	CHECK(virtio_vsock_setup(m, 2, path) == -EINVAL);
	REQUIRE(virtio_vsock_setup(m, CID, path) == 0);
	for (unsigned i = 0; i < m->n_devs; i++)
		if (strcmp(m->devs[i]->name, "virtio-vsock") == 0)
			dev = m->devs[i];
	REQUIRE(dev != NULL);
	CHECK(mmio_r(VIRTIO_MMIO_DEVICE_ID) == 19);
	CHECK(mmio_r(VIRTIO_MMIO_CONFIG) == CID);
	driver_init();

	/* Host -> guest: CONNECT, REQUEST, RESPONSE, OK. */
	c = unix_connect(path);
	REQUIRE(c >= 0);
	CHECK(write(c, "CONNECT 1024\n", 13) == 13);
	REQUIRE(rx_next(&h, data, sizeof(data)) == 0);
	CHECK(h.op == VIRTIO_VSOCK_OP_REQUEST && h.dst_port == 1024 &&
	      h.src_cid == 2 && h.dst_cid == CID && h.type == 1);
	host_port = h.src_port;
	CHECK(host_port >= 1u << 30);
	/* The guest grants 1000 bytes of credit. */
	tx(1024, host_port, VIRTIO_VSOCK_OP_RESPONSE, 0, 1000, 0, NULL, 0);
	snprintf(line, sizeof(line), "OK %u\n", host_port);
	memset(data, 0, sizeof(data));
	CHECK(read_n(c, data, strlen(line)) == strlen(line));
	CHECK(memcmp(data, line, strlen(line)) == 0);

	/* Guest -> host data. */
	tx(1024, host_port, VIRTIO_VSOCK_OP_RW, 0, 1000, 0, "hello", 5);
	CHECK(read_n(c, data, 5) == 5 && memcmp(data, "hello", 5) == 0);

	/* Host -> guest data, held to the guest's credit of 1000 bytes. */
	memset(data, 'x', 3000);
	CHECK(write(c, data, 3000) == 3000);
	{
		size_t total = 0;
		int pkts = 0;

		while (total < 1000 && pkts < 20 &&
		       (n = rx_next(&h, data, sizeof(data))) >= 0) {
			pkts++;
			if (h.op == VIRTIO_VSOCK_OP_RW)
				total += (size_t)n;
		}
		CHECK(total == 1000);
		/* Out of credit: one CREDIT_REQUEST, no more data. */
		n = rx_next(&h, data, sizeof(data));
		CHECK(n == 0 && h.op == VIRTIO_VSOCK_OP_CREDIT_REQUEST);
		/* The guest read it all: 2000 more bytes arrive. */
		tx(1024, host_port, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0, 1000,
		   1000, NULL, 0);
		total = 0;
		for (pkts = 0; total < 2000 && pkts < 20; pkts++) {
			n = rx_next(&h, data, sizeof(data));
			if (n < 0)
				break;
			if (h.op == VIRTIO_VSOCK_OP_RW)
				total += (size_t)n;
			if (h.op == VIRTIO_VSOCK_OP_CREDIT_REQUEST)
				tx(1024, host_port,
				   VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0, 1000,
				   (uint32_t)(1000 + total), NULL, 0);
		}
		CHECK(total == 2000);
	}

	/* Guest -> host connection to port 52, and to 53 (no listener). */
	l = unix_listen(path52);
	REQUIRE(l >= 0);
	tx(5000, 52, VIRTIO_VSOCK_OP_REQUEST, 0, 65536, 0, NULL, 0);
	CHECK(rx_next(&h, data, sizeof(data)) == 0 &&
	      h.op == VIRTIO_VSOCK_OP_RESPONSE && h.dst_port == 5000 &&
	      h.src_port == 52);
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	CHECK(s >= 0);
	tx(5000, 52, VIRTIO_VSOCK_OP_RW, 0, 65536, 0, "ping", 4);
	CHECK(read_n(s, data, 4) == 4 && memcmp(data, "ping", 4) == 0);
	tx(5001, 53, VIRTIO_VSOCK_OP_REQUEST, 0, 65536, 0, NULL, 0);
	n = rx_next(&h, data, sizeof(data));
	if (n != 0 || h.op != VIRTIO_VSOCK_OP_RST)
		fprintf(stderr, "got %d: op %u %u->%u\n", n, h.op, h.src_port,
			h.dst_port);
	CHECK(n == 0 && h.op == VIRTIO_VSOCK_OP_RST && h.dst_port == 5001);

	/* The host client closes: SHUTDOWN both ways, the guest's RST. */
	close(c);
	CHECK(rx_next(&h, data, sizeof(data)) == 0 &&
	      h.op == VIRTIO_VSOCK_OP_SHUTDOWN && h.flags == 3 &&
	      h.src_port == host_port);
	tx(1024, host_port, VIRTIO_VSOCK_OP_RST, 0, 1000, 3000, NULL, 0);
	/* RW on the dropped connection: answered RST. */
	tx(1024, host_port, VIRTIO_VSOCK_OP_RW, 0, 1000, 3000, "late", 4);
	CHECK(rx_next(&h, data, sizeof(data)) == 0 &&
	      h.op == VIRTIO_VSOCK_OP_RST);

	/* Transport reset: the event, and the guest->host socket closed. */
	virtio_vsock_transport_reset(m);
	{
		struct vring_used *u = used(2);
		uint32_t *ev = machine_gpa_to_hva(m, EVBUF_GPA, 4);

		CHECK(__atomic_load_n(&u->idx, __ATOMIC_ACQUIRE) == 1);
		CHECK(*ev == VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
	}
	CHECK(s >= 0 && read_n(s, data, 1) == 0); /* EOF */

	/* A bad handshake line is closed without an answer. */
	c = unix_connect(path);
	CHECK(c >= 0 && write(c, "HELLO\n", 6) == 6);
	CHECK(c >= 0 && read_n(c, data, 1) == 0);

	if (c >= 0)
		close(c);
	check_quiesce(path);
	REQUIRE(check_pending_reset(dir) == 0);
	if (s >= 0)
		close(s);
	close(l);
	machine_destroy(m);
	CHECK(access(path, F_OK) != 0); /* socket removed */
	unlink(path52);
	rmdir(dir);
	return test_summary("vmm-machine-vsock");
}
