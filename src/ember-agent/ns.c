// SPDX-License-Identifier: Apache-2.0
/*
 * Path layout, and the VMM's own mount namespace.
 *
 * A snapshot records the paths the VM was configured with (drive, vsock
 * socket, kernel). So that a snapshot taken in one sandbox restores in any
 * other, every VMM sees its own files at the same fixed paths:
 *
 *   namespace path          host path (differs per sandbox)
 *   /run/ember-vm/run/      <run>/vms/<id>/            api.sock, vsock.sock
 *   /run/ember-vm/disk/     <state>/sandboxes/<id>/disk/  rootfs.ext4
 *   /run/ember-vm/snap/     <state>/sandboxes/<id>/snap/  snapshot files
 *   /run/ember-vm/kernel    the kernel file
 *
 * How: the child unshares its mount namespace, makes every mount private,
 * opens the host paths (O_PATH), puts a fresh tmpfs on /run (every host has
 * a /run; the host's own /run is hidden from the VMM, which needs nothing of
 * it), makes the mount points in that tmpfs and bind-mounts the opened
 * paths through /proc/self/fd. A socket the VMM binds under /run/ember-vm/run
 * appears in <run>/vms/<id> for the agent. The namespace dies with the VMM.
 *
 * The network: a sandbox with networking has a named network namespace
 * (net.c); the child joins it first (its name lives under /run, which the
 * tmpfs hides next). Any other VMM gets a new empty network namespace of
 * its own, which dies with it: it needs no network, and a snapshot with a
 * network interface then fails to load instead of opening a host tap.
 */
#include "agent.h"

#include <ember/log.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int sbx_path(const struct agent_config *cfg, const char *id,
	     enum sbx_path kind, char *buf, size_t len)
{
	static const char *const leaf[] = {
		[P_DIR] = "", [P_STATE] = "/state.json",
		[P_DISK_DIR] = "/disk", [P_ROOTFS] = "/disk/rootfs.ext4",
		[P_SNAP_DIR] = "/snap", [P_CONSOLE] = "/console.log",
		[P_VMM_LOG] = "/vmm.log", [P_RUN_DIR] = "",
		[P_API_SOCK] = "/api.sock", [P_VSOCK_SOCK] = "/vsock.sock",
		[P_UFFD_SOCK] = "/uffd.sock",
	};
	bool run = kind >= P_RUN_DIR;
	int n;

	if (!agent_valid_id(id))
		return -EINVAL;
	n = snprintf(buf, len, "%s/%s/%s%s", run ? cfg->run_dir : cfg->state_dir,
		     run ? "vms" : "sandboxes", id, leaf[kind]);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if ((kind == P_API_SOCK || kind == P_VSOCK_SOCK ||
	     kind == P_UFFD_SOCK) &&
	    (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	return 0;
}

/* In the child only: async-signal-safe calls, no allocation, no logging;
 * a failure writes one line to the VMM log (stderr) and exits 127. */
static void child_fail(const char *what)
{
	const char *e = strerror(errno);

	(void)!write(2, "ember-agent: VMM namespace: ", 28);
	(void)!write(2, what, strlen(what));
	(void)!write(2, ": ", 2);
	(void)!write(2, e, strlen(e));
	(void)!write(2, "\n", 1);
	_exit(127);
}

static void child_bind(int fd, const char *target)
{
	char src[64];

	snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
	if (mount(src, target, NULL, MS_BIND, NULL) < 0)
		child_fail(target);
}

static void child_run(const struct vmm_spawn *v, int console, int log,
		      char *const argv[], const char *netns)
{
	int run_fd, disk_fd, snap_fd, kernel_fd = -1;

	if (dup2(console, 1) < 0 || dup2(log, 2) < 0)
		_exit(127);
	int nul = open("/dev/null", O_RDONLY);
	if (nul >= 0 && nul != 0) {
		dup2(nul, 0);
		close(nul);
	}
	setsid();
	if (netns) {
		int fd = open(netns, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			child_fail(netns);
		close(fd);
	}
	if (unshare(CLONE_NEWNS | (netns ? 0 : CLONE_NEWNET)) < 0)
		child_fail("unshare(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		child_fail("making / private");
	run_fd = open(v->run_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	disk_fd = open(v->disk_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	snap_fd = open(v->snap_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (run_fd < 0 || disk_fd < 0 || snap_fd < 0)
		child_fail("opening the sandbox's folders");
	if (v->kernel && (kernel_fd = open(v->kernel, O_PATH | O_CLOEXEC)) < 0)
		child_fail(v->kernel);
	if (mount("ember-vm", "/run", "tmpfs", MS_NOSUID | MS_NODEV,
		  "mode=755,size=1m") < 0)
		child_fail("tmpfs on /run");
	if (mkdir(NS_ROOT, 0755) < 0 || mkdir(NS_RUN, 0755) < 0 ||
	    mkdir(NS_DISK, 0755) < 0 || mkdir(NS_SNAP, 0755) < 0)
		child_fail("mount points in " NS_ROOT);
	child_bind(run_fd, NS_RUN);
	child_bind(disk_fd, NS_DISK);
	child_bind(snap_fd, NS_SNAP);
	if (kernel_fd >= 0) {
		int k = open(NS_KERNEL, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
		if (k < 0)
			child_fail(NS_KERNEL);
		close(k);
		child_bind(kernel_fd, NS_KERNEL);
	}
	close(run_fd);
	close(disk_fd);
	close(snap_fd);
	if (kernel_fd >= 0)
		close(kernel_fd);
	/* The VMM outlives the agent (an agent restart adopts it); it
	 * must not take the agent's signal mask or dispositions. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	execv(argv[0], argv);
	child_fail(argv[0]);
}

int ns_spawn_vmm(const struct vmm_spawn *v, pid_t *pid)
{
	char *argv[] = { (char *)v->vmm_bin, "--api-sock", NS_API_SOCK,
			 "--id", (char *)v->id, NULL };
	char netns[PATH_MAX];
	bool has_netns;
	int console, log, r;
	pid_t p;

	has_netns = net_netns_path(v->id, netns, sizeof(netns)) == 0 &&
		    access(netns, F_OK) == 0;

	console = open(v->console_path,
		       O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (console < 0)
		return -errno;
	log = open(v->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
		   0600);
	if (log < 0) {
		r = -errno;
		close(console);
		return r;
	}
	p = fork();
	if (p == 0)
		child_run(v, console, log, argv, has_netns ? netns : NULL);
	r = p < 0 ? -errno : 0;
	close(console);
	close(log);
	if (r == 0)
		*pid = p;
	return r;
}

bool ns_pid_alive(pid_t pid, bool child)
{
	if (pid <= 0)
		return false;
	if (child) {
		pid_t w = waitpid(pid, NULL, WNOHANG);
		if (w == pid || (w < 0 && errno == ECHILD))
			return false;
	}
	return kill(pid, 0) == 0 || errno == EPERM;
}

void ns_stop_vmm(pid_t pid, bool child, int timeout_ms)
{
	const struct timespec tick = { 0, 20 * 1000 * 1000 };

	if (!ns_pid_alive(pid, child))
		return;
	kill(pid, SIGTERM);
	for (int waited = 0; waited < timeout_ms; waited += 20) {
		if (!ns_pid_alive(pid, child))
			return;
		nanosleep(&tick, NULL);
	}
	kill(pid, SIGKILL);
	/* SIGKILL cannot be refused; a child is reaped, an adopted VMM is
	 * reaped by init. Wait a bounded time for it to go. */
	for (int waited = 0; waited < 5000; waited += 20) {
		if (!ns_pid_alive(pid, child))
			return;
		nanosleep(&tick, NULL);
	}
}

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 &&
	    errno != ENOENT)
		return -errno;
	return 0;
}

int ns_remove_tree(const char *path)
{
	struct stat st;
	int r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	r = nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	if (r < 0)
		return -errno;
	return r;
}
