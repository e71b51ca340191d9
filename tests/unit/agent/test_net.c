// SPDX-License-Identifier: Apache-2.0
/*
 * net.c for real, in a network and mount namespace of the test's own (so
 * the host's links and rules are never touched; /run is a private tmpfs
 * so that /run/netns is too): two sandboxes' networks are set up, their
 * namespaces, taps, veths, addresses and rules checked, traffic from a
 * stand-in guest (a namespace on the tap's side) checked to reach a
 * stand-in internet and not the host nor the other sandbox; then both
 * are torn down and `ip link`, `ip netns` and the iptables rules are
 * exactly what they were before. Skipped (77) without root or iptables.
 */
#include "../../../src/ember-agent/agent.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../test.h"

static char *capture(const char *cmd)
{
	static char buf[65536];
	FILE *f = popen(cmd, "r");
	size_t n = 0;

	buf[0] = '\0';
	if (!f)
		return buf;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	pclose(f);
	return buf;
}

static char *dup_capture(const char *cmd)
{
	return strdup(capture(cmd));
}

static bool sh(const char *cmd)
{
	return system(cmd) == 0;
}

/* What a destroy must give back: links, namespaces and rules (iptables
 * -S, since iptables-save also shows tables that a rule once made). */
#define STATE                                                                 \
	"ip -o link show | sed 's/^[0-9]*: //' | cut -d' ' -f1; ip netns list;" \
	" iptables -w -S; iptables -w -t nat -S"

static void add(struct agent *a, struct sandbox *s, const char *id)
{
	char path[PATH_MAX];

	memset(s, 0, sizeof(*s));
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->state = SBX_RUNNING;
	s->next = a->sandboxes;
	a->sandboxes = s;
	snprintf(path, sizeof(path), "%s/sandboxes/%s", a->cfg.state_dir, id);
	CHECK(ember_mkdir_p(path, 0700) == 0);
}

/* A "guest": a namespace with a veth to the sandbox namespace standing in
 * for the tap (the VMM is not part of this test), at 172.31.0.2. */
static bool fake_guest(const char *sbx, const char *guest)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
		 "ip netns add %s && ip -n ember-%s link del tap0 && "
		 "ip -n ember-%s link add tap0 type veth peer name eth0 netns %s && "
		 "ip -n ember-%s addr add 172.31.0.1/30 dev tap0 && "
		 "ip -n ember-%s link set tap0 up && "
		 "ip -n %s addr add 172.31.0.2/30 dev eth0 && "
		 "ip -n %s link set eth0 up && ip -n %s link set lo up && "
		 "ip -n %s route add default via 172.31.0.1",
		 guest, sbx, sbx, guest, sbx, sbx, guest, guest, guest, guest);
	return sh(cmd);
}

static bool reach(const char *guest, const char *addr)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd),
		 "ip netns exec %s busybox ping -c 1 -W 1 %s >/dev/null 2>&1", guest,
		 addr);
	return sh(cmd);
}

int main(void)
{
	struct agent a = { 0 };
	struct sandbox s1, s2;
	struct agent_err e = { "" };
	char tmpl[] = "/tmp/ember-net-test-XXXXXX", *before, *after, *out;

	ember_log_init("test-net", NULL);
	if (geteuid() != 0 || access("/usr/sbin/iptables", X_OK) < 0 ||
	    access("/dev/net/tun", F_OK) < 0 || !sh("busybox --list | grep -qx ping")) {
		fprintf(stderr, "needs root, iptables, /dev/net/tun and busybox ping; skipped\n");
		return 77;
	}
	if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("test", "/run", "tmpfs", 0, "mode=755") < 0) {
		fprintf(stderr, "no namespaces of our own: %s; skipped\n",
			strerror(errno));
		return 77;
	}
	if (!sh("iptables -w -S >/dev/null 2>&1 && iptables -w -t nat -S >/dev/null 2>&1")) {
		fprintf(stderr, "iptables does not work here; skipped\n");
		return 77;
	}
	sh("ip link set lo up");
	REQUIRE(mkdtemp(tmpl) != NULL);
	snprintf(a.cfg.state_dir, sizeof(a.cfg.state_dir), "%s", tmpl);
	pthread_mutex_init(&a.lock, NULL);
	before = dup_capture(STATE);

	add(&a, &s1, "net-one");
	add(&a, &s2, "net-two");
	CHECK(net_setup(&a, "net-one", &e) == 0);
	CHECK(net_setup(&a, "net-two", &e) == 0);
	if (e.msg[0])
		fprintf(stderr, "net_setup: %s\n", e.msg);
	CHECK(s1.network && s1.net_slot == 0);
	CHECK(s2.network && s2.net_slot == 1);
	CHECK(net_present(&s1) && net_present(&s2));
	out = capture("ip -o addr show dev emv0");
	CHECK(strstr(out, "10.200.0.1/30") != NULL);
	out = capture("ip -o addr show dev emv1");
	CHECK(strstr(out, "10.200.0.5/30") != NULL);
	out = capture("ip -n ember-net-one -o addr show");
	CHECK(strstr(out, "172.31.0.1/30") && strstr(out, "10.200.0.2/30"));
	out = capture("ip -n ember-net-one -d link show tap0");
	CHECK(strstr(out, "tun type tap") != NULL);
	CHECK(strstr(out, NET_TAP_MAC) != NULL);
	out = capture("iptables -w -S | grep -c 'ember:net-one'");
	CHECK(atoi(out) == 4);
	out = capture("iptables -w -t nat -S | grep -c 'ember:net-one'");
	CHECK(atoi(out) == 1);
	/* The record names the slot, for a destroy after a restart. */
	char rec[PATH_MAX];
	snprintf(rec, sizeof(rec), "%s/sandboxes/net-one/state.json", tmpl);
	CHECK(access(rec, F_OK) == 0);

	/* Traffic: an "internet" namespace behind the host, a host
	 * service address, and the other sandbox. */
	CHECK(sh("ip netns add inet && ip link add inet0 type veth peer name eth0 netns inet && "
		 "ip addr add 198.51.100.1/24 dev inet0 && ip link set inet0 up && "
		 "ip -n inet addr add 198.51.100.2/24 dev eth0 && ip -n inet link set eth0 up && "
		 "ip -n inet route add default via 198.51.100.1"));
	CHECK(fake_guest("net-one", "g1"));
	CHECK(fake_guest("net-two", "g2"));
	CHECK(reach("g1", "198.51.100.2"));	/* out, through both NATs */
	CHECK(reach("g2", "198.51.100.2"));
	CHECK(!reach("g1", "10.200.0.1"));	/* the host's end */
	CHECK(!reach("g1", "198.51.100.1"));	/* another host address */
	CHECK(!reach("g1", "10.200.0.6"));	/* the other sandbox */
	CHECK(!reach("g2", "10.200.0.2"));
	/* The internet sees the host's address, not the sandbox's. */
	sh("ip netns del g1; ip netns del g2; ip netns del inet; ip link del inet0 2>/dev/null");

	net_teardown(&s1);
	net_teardown(&s2);
	CHECK(!net_present(&s1) && !net_present(&s2));
	after = dup_capture(STATE);
	CHECK(strcmp(before, after) == 0);
	if (strcmp(before, after))
		fprintf(stderr, "before:\n%s\nafter:\n%s\n", before, after);
	/* A second teardown finds nothing and says nothing is wrong. */
	net_teardown(&s1);
	free(before);
	free(after);
	ns_remove_tree(tmpl);
	return test_summary("agent-net");
}
