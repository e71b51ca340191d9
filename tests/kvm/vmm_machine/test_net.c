/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net through a real tap device. The test runs in a network
 * namespace of its own (so nothing of it reaches the host's network):
 * a persistent tap there with 10.0.0.1/30, and a guest (guest_net.S)
 * that sends an ARP request "who has 10.0.0.1, tell 10.0.0.2" from its
 * MAC through the device. The host kernel answers; the guest finds the
 * reply among its rx buffers. Checked: the MAC in the config space, the
 * reply's addresses, the rx virtio_net_hdr (zeros, num_buffers 1) and
 * the used length; then the device's snapshot state restores into a
 * device with the same MAC and is refused by one with another; and a
 * missing tap is -ENODEV, never created.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>

#include "guest_run.h"
#include "test.h"

#define TAP "embt0"
#define TXBUF 0x60000
#define RXBUF 0x50000
#define RXUSED 0x42000

static const uint8_t guest_mac[6] = { 0x06, 0x00, 0xac, 0x10, 0x00, 0x02 };

/* A persistent tap (with no queue attached) in this namespace. */
static int make_tap(bool persist)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR };
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", TAP);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 ||
	    ioctl(fd, TUNSETPERSIST, persist ? 1 : 0) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static int tap_up(uint8_t hw[6])
{
	struct ifreq ifr = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret = 0;

	if (s < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", TAP);
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, "10.0.0.1", &sin->sin_addr);
	if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
		ret = -errno;
	inet_pton(AF_INET, "255.255.255.252", &sin->sin_addr);
	if (!ret && ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
		ret = -errno;
	if (!ret && ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		ret = -errno;
	ifr.ifr_flags |= IFF_UP;
	if (!ret && ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		ret = -errno;
	if (!ret && ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
		ret = -errno;
	if (!ret)
		memcpy(hw, ifr.ifr_hwaddr.sa_data, 6);
	close(s);
	return ret;
}

/* virtio_net_hdr (12 zero bytes) and an ARP request from the guest. */
static size_t arp_request(uint8_t *b)
{
	static const uint8_t spa[4] = { 10, 0, 0, 2 }, tpa[4] = { 10, 0, 0, 1 };
	uint8_t *f = b + 12;

	memset(b, 0, 12 + 42);
	memset(f, 0xff, 6);
	memcpy(f + 6, guest_mac, 6);
	f[12] = 0x08, f[13] = 0x06;		/* ARP */
	f[14] = 0, f[15] = 1;			/* Ethernet */
	f[16] = 0x08, f[17] = 0;		/* IPv4 */
	f[18] = 6, f[19] = 4;
	f[20] = 0, f[21] = 1;			/* request */
	memcpy(f + 22, guest_mac, 6);
	memcpy(f + 28, spa, 4);
	memcpy(f + 38, tpa, 4);
	return 12 + 42;
}

/* Sends one frame to the guest's MAC out of the tap (as the network
 * would), with a packet socket on the host side. */
static int send_to_guest(void)
{
	struct sockaddr_ll to = { .sll_family = AF_PACKET,
				  .sll_ifindex = (int)if_nametoindex(TAP),
				  .sll_halen = 6 };
	uint8_t f[60] = { 0 };
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0), ret = 0;

	if (s < 0)
		return -errno;
	memcpy(f, guest_mac, 6);
	f[12] = 0x88, f[13] = 0xb5; /* local experimental ethertype */
	memcpy(to.sll_addr, guest_mac, 6);
	if (sendto(s, f, sizeof(f), 0, (struct sockaddr *)&to, sizeof(to)) !=
	    (ssize_t)sizeof(f))
		ret = -errno;
	close(s);
	return ret;
}

static uint16_t rx_used(struct machine *m)
{
	return __atomic_load_n((uint16_t *)machine_gpa_to_hva(m, RXUSED + 2, 2),
			       __ATOMIC_ACQUIRE);
}

/* While quiesced (a paused VM) a frame waits in the tap; it arrives once
 * the device is let go. */
static void check_quiesce(struct machine *m)
{
	const struct timespec tick = { 0, 10 * 1000 * 1000 };
	uint16_t before = rx_used(m);
	int waited;

	virtio_net_quiesce(m, true);
	CHECK(send_to_guest() == 0);
	for (waited = 0; waited < 300 && rx_used(m) == before; waited += 10)
		nanosleep(&tick, NULL);
	CHECK(rx_used(m) == before);
	virtio_net_quiesce(m, false);
	for (waited = 0; waited < 10000 && rx_used(m) == before; waited += 10)
		nanosleep(&tick, NULL);
	CHECK(rx_used(m) == (uint16_t)(before + 1));
}

static struct machine_dev *net_dev(struct machine *m)
{
	for (unsigned i = 0; i < m->n_devs; i++)
		if (!strcmp(m->devs[i]->name, "virtio-net"))
			return m->devs[i];
	return NULL;
}

/* The device state of a run guest restores into a device with the same
 * MAC, not into one with another. */
static void check_state(const uint8_t *buf, size_t len, const char *image)
{
	static const uint8_t other[6] = { 0x06, 0, 0, 0, 0, 9 };
	struct machine_dev *d2;
	struct guest g2;

	for (int pass = 0; pass < 2; pass++) {
		CHECK(guest_create(&g2, image, 1) == 0);
		CHECK(virtio_net_setup(g2.m, TAP, pass ? other : guest_mac) ==
		      0);
		d2 = net_dev(g2.m);
		CHECK(d2 && d2->restore);
		if (d2 && d2->restore) {
			int r = d2->restore(d2->opaque, buf, len);

			if (pass == 0)
				CHECK(r == 0);
			else
				CHECK(r == -EINVAL);
		}
		guest_destroy(&g2);
	}
}

int main(int argc, char **argv)
{
	uint8_t frame[64], tap_mac[6];
	uint32_t len;
	struct guest g;
	char *out;
	int fd;

	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-net", NULL);
	if (unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "no network namespace of our own: %s; skipped\n",
			strerror(errno));
		return TEST_SKIP;
	}
	/* No IPv6 chatter (router solicitations) in the guest's rx. */
	fd = open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY);
	if (fd >= 0) {
		CHECK(write(fd, "1", 1) == 1);
		close(fd);
	}
	if (make_tap(true) < 0) {
		fprintf(stderr, "no tap device: %s; skipped\n", strerror(errno));
		return TEST_SKIP;
	}
	REQUIRE(guest_create(&g, argv[1], 1) == 0);
	CHECK(virtio_net_setup(g.m, "nosuchtap0", NULL) == -ENODEV);
	CHECK(if_nametoindex("nosuchtap0") == 0);
	REQUIRE(virtio_net_setup(g.m, TAP, guest_mac) == 0);
	REQUIRE(tap_up(tap_mac) == 0);
	len = (uint32_t)arp_request(frame);
	CHECK(machine_write_guest(g.m, TXBUF, frame, len) == 0);
	CHECK(machine_write_guest(g.m, GUEST_DATA + 0x10, &len, 4) == 0);
	CHECK(guest_run(&g) == MACHINE_END_RESET);
	out = guest_serial(&g);
	CHECK(strcmp(out, "arp reply received\n") == 0);
	if (strcmp(out, "arp reply received\n"))
		fprintf(stderr, "guest said: %s\n", out);
	free(out);

	CHECK(memcmp(machine_gpa_to_hva(g.m, GUEST_DATA, 6), guest_mac, 6) ==
	      0);
	uint32_t k = *(uint32_t *)machine_gpa_to_hva(g.m, GUEST_DATA + 0x20, 4);
	uint32_t *used = machine_gpa_to_hva(g.m, RXUSED + 4 + 8 * k, 8);
	uint8_t *b = machine_gpa_to_hva(g.m, RXBUF + used[0] * 0x800ULL, 0x800);
	static const uint8_t zero[10], spa[4] = { 10, 0, 0, 1 },
				       tpa[4] = { 10, 0, 0, 2 };
	uint16_t nbuf;

	CHECK(k < 8 && used[0] < 8);
	CHECK(used[1] >= 12 + 42 && used[1] <= 0x800);
	CHECK(memcmp(b, zero, 10) == 0);
	memcpy(&nbuf, b + 10, 2);
	CHECK(nbuf == 1);
	b += 12;
	CHECK(memcmp(b, guest_mac, 6) == 0);	/* to the guest */
	CHECK(memcmp(b + 6, tap_mac, 6) == 0);	/* from the tap */
	CHECK(memcmp(b + 22, tap_mac, 6) == 0);
	CHECK(memcmp(b + 28, spa, 4) == 0);
	CHECK(memcmp(b + 32, guest_mac, 6) == 0);
	CHECK(memcmp(b + 38, tpa, 4) == 0);

	check_quiesce(g.m);

	/* The tap takes one queue: the first machine goes before the
	 * others open it. */
	struct machine_dev *d = net_dev(g.m);
	uint8_t *state = NULL;
	size_t state_len = 0;

	CHECK(d && d->save && d->save(d->opaque, &state, &state_len) == 0);
	guest_destroy(&g);
	if (state)
		check_state(state, state_len, argv[1]);
	free(state);
	CHECK(make_tap(false) == 0);
	CHECK(if_nametoindex(TAP) == 0);
	return test_summary("vmm-machine-virtio-net");
}
