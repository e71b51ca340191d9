// SPDX-License-Identifier: Apache-2.0
/*
 * Networking of one sandbox (docs/agent.md, "Networking").
 *
 *   guest eth0 172.31.0.2/30 ── tap0 172.31.0.1/30 ┐ netns ember-<id>
 *                                veth0 10.200.x.2/30 ┘ masquerade to x.2
 *                                  │
 *   host                         emv<slot> 10.200.x.1/30
 *                                  │ forward, masquerade out of the host
 *                                  ▼
 *                               the host's routes
 *
 * Every sandbox sees the same inside: the tap has one fixed name and MAC,
 * the guest one fixed address and MAC, so a snapshot taken in one sandbox
 * restores in any other (its ARP cache included). The VMM runs in the namespace (ns.c joins it), so
 * host_dev_name "tap0" is that namespace's tap. What differs is the
 * veth's /30 from the pool 10.200.0.0/16, chosen by a slot number kept
 * in the sandbox's record.
 *
 * Rules on the host (iptables, each with the comment "ember:<id>"):
 *   filter INPUT    -i emvN -j DROP                  none of the host's
 *                                                    own addresses
 *   filter FORWARD  -i emvN ! -o emv+ -j ACCEPT      out, not to another
 *                                                    sandbox
 *                   -o emvN  replies -j ACCEPT
 *                   -o emvN  anything new -j DROP    nobody opens a
 *                                                    connection to it
 *   nat POSTROUTING -s 10.200.x.0/30 ! -o emv+ -j MASQUERADE
 * The rules of one sandbox do not depend on their order among each other
 * or among other sandboxes' (their matches are disjoint), so each is
 * inserted at the top and deleted by its own spec.
 *
 * Teardown undoes all of it: the rules, the host end of the veth (which
 * takes the other end with it) and the namespace (which takes the tap).
 * Every step is tried, and a missing piece is no error, so an interrupted
 * setup or destroy is finished by running it again.
 */
#include "agent.h"

#include <ember/log.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NETNS_DIR "/run/netns"
/* TODO(agent): the pool is fixed; a host whose own networks overlap
 * 10.200.0.0/16 needs a flag to move it. */
#define NET_POOL_BASE ((10u << 24) | (200u << 16)) /* 10.200.0.0/16 */
#define NET_SLOTS 16384				   /* /30s in the pool */

/* One setup or teardown at a time: iptables -w serializes the rule
 * changes, this keeps a slot from being taken twice. */
static pthread_mutex_t net_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *tool(const char *name)
{
	static const char *const dirs[] = { "/usr/sbin", "/sbin", "/usr/bin",
					     "/bin" };
	static char found[2][64];
	char *slot = found[strcmp(name, "ip") == 0 ? 0 : 1];

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(slot, sizeof(found[0]), "%s/%s", dirs[i], name);
		if (access(slot, X_OK) == 0)
			return slot;
	}
	return name;
}

int net_netns_path(const char *id, char *buf, size_t len)
{
	int n = snprintf(buf, len, NETNS_DIR "/ember-%s", id);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void ipv4(uint32_t a, char *out, size_t len)
{
	snprintf(out, len, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255,
		 (a >> 8) & 255, a & 255);
}

/*
 * Runs argv (argv[0] a tool name), in the network namespace at netns when
 * it is not NULL. 0 when it exited 0; otherwise -EIO with its stderr in e
 * (unless quiet).
 */
static int run(const char *id, const char *netns, bool quiet,
	       struct agent_err *e, const char *const argv[])
{
	char out[512];
	const char *path = tool(argv[0]);
	int pfd[2], status = 0;
	ssize_t n, got = 0;
	pid_t p;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	p = fork();
	if (p == 0) {
		int nul = open("/dev/null", O_RDWR);

		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
		}
		dup2(pfd[1], 2);
		if (netns) {
			int fd = open(netns, O_RDONLY | O_CLOEXEC);

			if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
				_exit(126);
		}
		execv(path, (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	if (p < 0) {
		close(pfd[0]);
		return -errno;
	}
	while (got < (ssize_t)sizeof(out) - 1 &&
	       (n = read(pfd[0], out + got, sizeof(out) - 1 - (size_t)got)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		got += n;
	}
	out[got] = '\0';
	out[strcspn(out, "\n")] = '\0';
	close(pfd[0]);
	while (waitpid(p, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (!quiet) {
		char cmd[256] = "";
		size_t used = 0;

		for (int i = 0; argv[i] && used < sizeof(cmd) - 1; i++)
			used += (size_t)snprintf(cmd + used, sizeof(cmd) - used,
						 "%s%s", i ? " " : "", argv[i]);
		olog_error(id, "network: %s failed (%s%d): %s", cmd,
			   WIFEXITED(status) ? "exit " : "signal ",
			   WIFEXITED(status) ? WEXITSTATUS(status)
					     : WTERMSIG(status),
			   out[0] ? out : "no message");
		agent_err_set(e, "network setup: %s: %s", cmd,
			      out[0] ? out : "failed");
	}
	return -EIO;
}

/* Writes value to /proc/sys/<key> of the namespace at netns (NULL: the
 * agent's own). */
static int sysctl_set(const char *netns, const char *key, const char *value)
{
	char path[256];
	int status = 0;
	pid_t p;

	snprintf(path, sizeof(path), "/proc/sys/%s", key);
	p = fork();
	if (p == 0) {
		int fd;

		if (netns) {
			fd = open(netns, O_RDONLY | O_CLOEXEC);
			if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
				_exit(1);
		}
		/* /proc/sys/net shows the namespace of whoever opens it. */
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, value, strlen(value)) < 0)
			_exit(1);
		_exit(0);
	}
	if (p < 0)
		return -errno;
	while (waitpid(p, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

struct net_names {
	char netns[64 + AGENT_ID_MAX];	/* /run/netns/ember-<id> */
	char ns_name[16 + AGENT_ID_MAX];	/* ember-<id> */
	char veth[16];			/* emv<slot> */
	char host_ip[20], ns_ip[20], subnet[24], host_cidr[24], ns_cidr[24];
	char comment[16 + AGENT_ID_MAX];
};

static int names(const char *id, unsigned slot, struct net_names *n)
{
	uint32_t base = NET_POOL_BASE + 4 * slot;
	char a[20];

	if (slot >= NET_SLOTS || net_netns_path(id, n->netns, sizeof(n->netns)))
		return -EINVAL;
	snprintf(n->ns_name, sizeof(n->ns_name), "ember-%s", id);
	snprintf(n->veth, sizeof(n->veth), "emv%u", slot);
	ipv4(base + 1, n->host_ip, sizeof(n->host_ip));
	ipv4(base + 2, n->ns_ip, sizeof(n->ns_ip));
	ipv4(base, a, sizeof(a));
	snprintf(n->subnet, sizeof(n->subnet), "%s/30", a);
	snprintf(n->host_cidr, sizeof(n->host_cidr), "%s/30", n->host_ip);
	snprintf(n->ns_cidr, sizeof(n->ns_cidr), "%s/30", n->ns_ip);
	snprintf(n->comment, sizeof(n->comment), "ember:%s", id);
	return 0;
}

/* The host's rules of one sandbox; op is "-I" or "-D". */
static int host_rules(const char *id, const struct net_names *n,
		      const char *op, bool quiet, struct agent_err *e)
{
	const char *const rules[][20] = {
		{ "iptables", "-w", op, "INPUT", "-i", n->veth, "-m",
		  "comment", "--comment", n->comment, "-j", "DROP", NULL },
		{ "iptables", "-w", op, "FORWARD", "-i", n->veth, "!", "-o",
		  "emv+", "-m", "comment", "--comment", n->comment, "-j",
		  "ACCEPT", NULL },
		{ "iptables", "-w", op, "FORWARD", "-o", n->veth, "-m",
		  "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-m",
		  "comment", "--comment", n->comment, "-j", "ACCEPT" },
		{ "iptables", "-w", op, "FORWARD", "-o", n->veth, "-m",
		  "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED", "-m",
		  "comment", "--comment", n->comment, "-j", "DROP" },
		{ "iptables", "-w", "-t", "nat", op, "POSTROUTING", "-s",
		  n->subnet, "!", "-o", "emv+", "-m", "comment", "--comment",
		  n->comment, "-j", "MASQUERADE", NULL },
	};
	int r = 0;

	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const char *const *argv = rules[i];

		/* Delete every copy an interrupted run may have left. */
		if (op[1] == 'D') {
			while (run(id, NULL, true, NULL, argv) == 0)
				;
			continue;
		}
		r = run(id, NULL, quiet, e, argv);
		if (r < 0)
			return r;
	}
	return r;
}

static void teardown(const char *id, const struct net_names *n)
{
	const char *del_veth[] = { "ip", "link", "del", n->veth, NULL };
	const char *del_ns[] = { "ip", "netns", "del", n->ns_name, NULL };

	host_rules(id, n, "-D", true, NULL);
	/* The host end first: it takes its peer with it at once, where the
	 * namespace's own end would go only when the namespace is freed. */
	run(id, NULL, true, NULL, del_veth);
	if (access(n->netns, F_OK) == 0)
		run(id, NULL, false, NULL, del_ns);
}

/* The lowest slot no networked sandbox of the table holds. With a->lock. */
static int free_slot(struct agent *a)
{
	static unsigned char used[NET_SLOTS];

	memset(used, 0, sizeof(used));
	for (struct sandbox *s = a->sandboxes; s; s = s->next)
		if (s->network && s->net_slot < NET_SLOTS)
			used[s->net_slot] = 1;
	for (unsigned i = 0; i < NET_SLOTS; i++)
		if (!used[i])
			return (int)i;
	return -ENOSPC;
}

static void set_net(struct sandbox *s, void *arg)
{
	int slot = *(int *)arg;

	s->network = slot >= 0;
	s->net_slot = slot >= 0 ? (unsigned)slot : 0;
}

int net_setup(struct agent *a, const char *id, struct agent_err *e)
{
	struct net_names n;
	int slot, r;

	pthread_mutex_lock(&net_lock);
	pthread_mutex_lock(&a->lock);
	slot = free_slot(a);
	pthread_mutex_unlock(&a->lock);
	if (slot < 0) {
		pthread_mutex_unlock(&net_lock);
		agent_err_set(e, "no free address in the network pool (%d sandboxes have networking)",
			      NET_SLOTS);
		return -ENOSPC;
	}
	if ((r = names(id, (unsigned)slot, &n)) < 0) {
		pthread_mutex_unlock(&net_lock);
		agent_err_set(e, "sandbox %s: network names: %s", id,
			      strerror(-r));
		return r;
	}
	/* Recorded before anything exists, so that whatever follows is
	 * found and removed by a destroy, even after a crash. */
	if ((r = sandbox_apply(a, id, set_net, &slot)) < 0) {
		pthread_mutex_unlock(&net_lock);
		return r;
	}
	/* Leftovers of a sandbox that had this id or slot before a crash. */
	teardown(id, &n);

	char veth_sysctl[64];
	snprintf(veth_sysctl, sizeof(veth_sysctl),
		 "net/ipv6/conf/%s/disable_ipv6", n.veth);
	const char *const steps[][12] = {
		{ "ip", "netns", "add", n.ns_name, NULL },
		{ "ip", "link", "add", n.veth, "type", "veth", "peer", "name",
		  "veth0", "netns", n.ns_name, NULL },
		{ "ip", "addr", "add", n.host_cidr, "dev", n.veth, NULL },
		{ "ip", "link", "set", n.veth, "up", NULL },
		{ "ip", "-n", n.ns_name, "link", "set", "lo", "up", NULL },
		{ "ip", "-n", n.ns_name, "tuntap", "add", "dev", NET_TAP,
		  "mode", "tap", "vnet_hdr", NULL },
		{ "ip", "-n", n.ns_name, "link", "set", NET_TAP, "address",
		  NET_TAP_MAC, NULL },
		{ "ip", "-n", n.ns_name, "addr", "add", NET_TAP_CIDR, "dev",
		  NET_TAP, NULL },
		{ "ip", "-n", n.ns_name, "link", "set", NET_TAP, "up", NULL },
		{ "ip", "-n", n.ns_name, "addr", "add", n.ns_cidr, "dev",
		  "veth0", NULL },
		{ "ip", "-n", n.ns_name, "link", "set", "veth0", "up", NULL },
		{ "ip", "-n", n.ns_name, "route", "add", "default", "via",
		  n.host_ip, NULL },
	};
	const char *const masq[] = { "iptables", "-w", "-t", "nat", "-A",
				     "POSTROUTING", "-o", "veth0", "-j",
				     "MASQUERADE", NULL };

	r = run(id, NULL, false, e, steps[0]);
	/* Before any device is there: no IPv6 (the guest gets none, and a
	 * link-local address would be a way around the IPv4 rules). */
	if (!r && ((r = sysctl_set(n.netns, "net/ipv6/conf/default/disable_ipv6", "1")) < 0 ||
		   (r = sysctl_set(n.netns, "net/ipv6/conf/all/disable_ipv6", "1")) < 0 ||
		   (r = sysctl_set(n.netns, "net/ipv4/ip_forward", "1")) < 0))
		agent_err_set(e, "network setup: sysctls in %s failed",
			      n.ns_name);
	for (size_t i = 1; !r && i < sizeof(steps) / sizeof(steps[0]); i++) {
		r = run(id, NULL, false, e, steps[i]);
		if (!r && i == 1)
			sysctl_set(NULL, veth_sysctl, "1");
	}
	if (!r)
		r = run(id, n.netns, false, e, masq);
	if (!r && (r = sysctl_set(NULL, "net/ipv4/ip_forward", "1")) < 0)
		agent_err_set(e, "network setup: cannot turn on IPv4 forwarding on the host");
	if (!r)
		r = host_rules(id, &n, "-I", false, e);
	if (r < 0) {
		teardown(id, &n);
		slot = -1;
		sandbox_apply(a, id, set_net, &slot);
	} else {
		olog_info(id, "network: namespace %s, %s %s, guest %s behind NAT",
			  n.ns_name, n.veth, n.host_cidr, NET_GUEST_IP);
	}
	pthread_mutex_unlock(&net_lock);
	return r;
}

void net_teardown(const struct sandbox *s)
{
	struct net_names n;

	if (!s->network || names(s->id, s->net_slot, &n) < 0)
		return;
	pthread_mutex_lock(&net_lock);
	teardown(s->id, &n);
	pthread_mutex_unlock(&net_lock);
	olog_info(s->id, "network: %s and %s removed", n.ns_name, n.veth);
}

bool net_present(const struct sandbox *s)
{
	char path[128];

	return s->network && net_netns_path(s->id, path, sizeof(path)) == 0 &&
	       access(path, F_OK) == 0;
}
