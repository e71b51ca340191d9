// SPDX-License-Identifier: Apache-2.0
/*
 * `ember-nested start|stop|exec` on the outer machine.
 *
 * State folder (--state-dir, $EMBER_NESTED_STATE, default /run/ember/nested):
 *   qemu.pid      QEMU's pid (written by QEMU's -pidfile)
 *   ctl-port      the outer TCP port forwarded to the command server
 *   forwards      the --forward pairs, "HOST:GUEST" a line
 *   token         the command channel's secret (mode 0600)
 *   scratch.ext4  the scratch disk (sparse; deleted by stop)
 *   console.log   the nested host's serial console
 *   qemu.log      QEMU's own messages
 */
#include "nested.h"

#include <ember/log.h>
#include <ember/util.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIN_FREE_BYTES (1ull << 30)

static void state_path(char *out, const char *dir, const char *name)
{
	snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

static int read_u64_file(const char *dir, const char *name, uint64_t *v)
{
	char path[PATH_MAX], *s;
	int r;

	state_path(path, dir, name);
	r = ember_read_file(path, 64, &s, NULL);
	if (r < 0)
		return r;
	s[strcspn(s, "\n")] = '\0';
	r = ember_parse_u64(s, v);
	free(s);
	return r;
}

static bool pid_is_qemu(pid_t pid)
{
	char path[64], exe[PATH_MAX];
	ssize_t n;

	if (pid <= 0 || kill(pid, 0) < 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n < 0)
		return false;
	exe[n] = '\0';
	return strstr(exe, "qemu") != NULL;
}

static pid_t state_pid(const char *dir)
{
	uint64_t v;

	return read_u64_file(dir, "qemu.pid", &v) == 0 && v < INT_MAX ? (pid_t)v
								      : -1;
}

bool nested_running(const char *dir, uint16_t *ctl_port)
{
	uint64_t port;

	if (!pid_is_qemu(state_pid(dir)))
		return false;
	if (read_u64_file(dir, "ctl-port", &port) < 0 || port == 0 ||
	    port > 65535)
		return false;
	if (ctl_port)
		*ctl_port = (uint16_t)port;
	return true;
}

static int read_token(const char *dir, char **token)
{
	char path[PATH_MAX];
	int r;

	state_path(path, dir, "token");
	r = ember_read_file(path, 256, token, NULL);
	if (r == 0)
		(*token)[strcspn(*token, "\n")] = '\0';
	return r;
}

/* Connects to 127.0.0.1:port within timeout_ms. fd or -errno. */
static int connect_local(uint16_t port, int timeout_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd, r, one = 1, err = 0;
	socklen_t elen = sizeof(err);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r < 0 && errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};

		r = poll(&p, 1, timeout_ms);
		if (r == 0)
			err = ETIMEDOUT;
		else if (r < 0 ||
			 getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			err = errno;
	} else if (r < 0) {
		err = errno;
	}
	if (err) {
		close(fd);
		return -err;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Opens an authenticated channel. fd or -errno. */
static int channel_open(const char *dir, uint16_t port, int timeout_ms)
{
	char *token;
	int fd, r;

	r = read_token(dir, &token);
	if (r < 0)
		return r;
	fd = connect_local(port, timeout_ms);
	if (fd >= 0) {
		r = nested_frame_write(fd, FRAME_TOKEN, token,
				       (uint32_t)strlen(token));
		if (r < 0) {
			close(fd);
			fd = r;
		}
	}
	free(token);
	return fd;
}

static bool ping(const char *dir, uint16_t port)
{
	uint8_t type;
	uint32_t len;
	char *buf;
	int fd = channel_open(dir, port, 1000);
	bool ok;

	if (fd < 0)
		return false;
	ok = nested_frame_write(fd, FRAME_PING, NULL, 0) == 0 &&
	     nested_frame_read(fd, &type, &buf, &len, 3000) == 0 &&
	     type == FRAME_PING;
	if (ok)
		free(buf);
	close(fd);
	return ok;
}

/* Waits for a child at most timeout_s; kills it after. Its status or -errno. */
static int wait_child(pid_t pid, unsigned timeout_s)
{
	uint64_t end = ember_now_ns() + timeout_s * 1000000000ull;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (ember_now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -ETIMEDOUT;
		}
		usleep(20000);
	}
}

/* Runs argv with stdout and stderr to log_fd (or inherited when -1). */
static int spawn_wait(char *const argv[], int log_fd, unsigned timeout_s)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		if (log_fd >= 0) {
			dup2(log_fd, 1);
			dup2(log_fd, 2);
		}
		execvp(argv[0], argv);
		dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return wait_child(pid, timeout_s);
}

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
		if (access(buf, X_OK) == 0)
			return true;
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

/* The images folder: --images, $EMBER_NESTED_IMAGES, or
 * <builddir>/artifacts/nested next to <builddir>/hosts/nested/ember-nested. */
static int find_images(const struct nested_args *a, char *out)
{
	char exe[PATH_MAX], guess[PATH_MAX + 32];
	const char *dir = a->images ? a->images : getenv("EMBER_NESTED_IMAGES");
	ssize_t n;

	if (!dir) {
		n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (n < 0)
			return -errno;
		exe[n] = '\0';
		*strrchr(exe, '/') = '\0';
		if (snprintf(guess, sizeof(guess), "%s/../../artifacts/nested",
			     exe) >= (int)sizeof(guess))
			return -ENAMETOOLONG;
		dir = guess;
	}
	if (!realpath(dir, out)) {
		int r = -errno;

		if (snprintf(out, PATH_MAX, "%s", dir) >= PATH_MAX)
			out[0] = '\0';
		return r;
	}
	return 0;
}

static void show_tail(const char *path, int lines)
{
	char *s;
	size_t len;
	int seen = 0;

	if (ember_read_file(path, 16u << 20, &s, &len) < 0)
		return;
	size_t i = len;

	while (i > 0 && seen <= lines)
		if (s[--i] == '\n')
			seen++;
	fprintf(stderr, "--- last lines of %s ---\n%s\n---\n", path,
		s + (i ? i + 1 : 0));
	free(s);
}

static int pick_port(uint16_t *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), r = 0;

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		r = -errno;
	else
		*port = ntohs(sa.sin_port);
	close(fd);
	return r;
}

static int write_text(const char *dir, const char *name, const char *text,
		      mode_t mode)
{
	char path[PATH_MAX];

	state_path(path, dir, name);
	return ember_write_file_atomic(path, text, strlen(text), mode);
}

static int make_scratch(const char *dir, uint64_t bytes)
{
	char path[PATH_MAX], log[PATH_MAX];
	int fd, r;

	state_path(path, dir, "scratch.ext4");
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = ftruncate(fd, (off_t)bytes) < 0 ? -errno : 0;
	close(fd);
	if (r < 0)
		return r;
	state_path(log, dir, "qemu.log");
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	char *argv[] = {"mkfs.ext4",
			"-q",
			"-F",
			"-L",
			"ember-scratch",
			"-E",
			"lazy_itable_init=1,lazy_journal_init=1",
			path,
			NULL};
	r = spawn_wait(argv, fd, 120);
	if (fd >= 0)
		close(fd);
	if (r < 0)
		return r;
	return WIFEXITED(r) && WEXITSTATUS(r) == 0 ? 0 : -EIO;
}

static void remove_state(const char *dir)
{
	static const char *const names[] = {"scratch.ext4", "qemu.pid",
					    "ctl-port", "token", "forwards"};
	char path[PATH_MAX];

	for (size_t i = 0; i < EMBER_ARRAY_SIZE(names); i++) {
		state_path(path, dir, names[i]);
		unlink(path);
	}
}

int nested_cmd_stop(const char *dir, bool quiet)
{
	pid_t pid = state_pid(dir);
	uint64_t end;

	if (!pid_is_qemu(pid)) {
		if (!quiet)
			fprintf(stderr,
				"ember-nested: no nested host runs in %s\n",
				dir);
		remove_state(dir);
		return EMBER_EXIT_OK;
	}
	kill(pid, SIGTERM);
	end = ember_now_ns() + 15000000000ull;
	while (kill(pid, 0) == 0 && ember_now_ns() < end)
		usleep(50000);
	if (kill(pid, 0) == 0) {
		log_warn("QEMU (pid %d) did not stop on SIGTERM; killing it",
			 (int)pid);
		kill(pid, SIGKILL);
		end = ember_now_ns() + 5000000000ull;
		while (kill(pid, 0) == 0 && ember_now_ns() < end)
			usleep(50000);
	}
	remove_state(dir);
	if (!quiet)
		fprintf(stderr, "ember-nested: stopped the nested host in %s\n",
			dir);
	return EMBER_EXIT_OK;
}

/* Appends a printf'd string to argv (kept in a static pool). */
#define MAX_QEMU_ARGV (64 + 2 * NESTED_MAX_QEMU_ARGS)

int nested_cmd_start(const struct nested_args *a, const char *dir)
{
	char images[PATH_MAX], kernel[PATH_MAX + 32], initrd[PATH_MAX + 32];
	char modroot[PATH_MAX + 32], self[PATH_MAX], path[PATH_MAX];
	char append[PATH_MAX * 3], netdev[4096], fwd_text[1024] = "";
	char smp[16], mem[16], drive[PATH_MAX + 64], serial[PATH_MAX + 8];
	char pidfile[PATH_MAX], token[33], port_text[16];
	const char *argv[MAX_QEMU_ARGV];
	uint8_t rnd[16];
	uint16_t ctl_port = 0;
	struct statvfs vfs;
	uint64_t t0 = ember_now_ns(), end;
	int n = 0, r, log_fd;
	pid_t pid;

	if (nested_running(dir, NULL)) {
		fprintf(
		    stderr,
		    "ember-nested: a nested host already runs in %s (pid %d); stop it with: ember-nested stop --state-dir %s\n",
		    dir, (int)state_pid(dir), dir);
		return EMBER_EXIT_FAILURE;
	}
	if (!in_path("qemu-system-x86_64")) {
		fprintf(
		    stderr,
		    "ember-nested: qemu-system-x86_64 is not in PATH: install the package qemu-system-x86 (scripts/deps.sh does)\n");
		return EMBER_EXIT_FAILURE;
	}
	if (!in_path("mkfs.ext4")) {
		fprintf(
		    stderr,
		    "ember-nested: mkfs.ext4 is not in PATH: install the package e2fsprogs (scripts/deps.sh does)\n");
		return EMBER_EXIT_FAILURE;
	}
	r = find_images(a, images);
	snprintf(kernel, sizeof(kernel), "%s/vmlinuz", images);
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio.gz", images);
	snprintf(modroot, sizeof(modroot), "%s/root", images);
	if (r < 0 || access(kernel, R_OK) < 0 || access(initrd, R_OK) < 0) {
		fprintf(
		    stderr,
		    "ember-nested: the nested host's kernel and initramfs are not in %s: build them with hosts/nested/build.sh (scripts/artifacts.sh links them into build/artifacts/nested), or set EMBER_NESTED_IMAGES or --images\n",
		    images);
		return EMBER_EXIT_FAILURE;
	}
	if (!realpath("/proc/self/exe", self)) {
		log_error("cannot resolve /proc/self/exe: %s", strerror(errno));
		return EMBER_EXIT_FAILURE;
	}
	r = ember_mkdir_p(dir, 0755);
	if (r < 0) {
		fprintf(stderr,
			"ember-nested: cannot create the state folder %s: %s\n",
			dir, strerror(-r));
		return EMBER_EXIT_FAILURE;
	}
	if (statvfs(dir, &vfs) == 0 &&
	    (uint64_t)vfs.f_bavail * vfs.f_frsize < MIN_FREE_BYTES) {
		fprintf(
		    stderr,
		    "ember-nested: no space in %s for the scratch disk: %llu MB free, 1024 MB needed; free some or use --state-dir elsewhere\n",
		    dir,
		    (unsigned long long)((uint64_t)vfs.f_bavail *
					     vfs.f_frsize >>
					 20));
		return EMBER_EXIT_FAILURE;
	}
	remove_state(dir);
	r = make_scratch(dir, a->scratch_bytes);
	if (r < 0) {
		state_path(path, dir, "qemu.log");
		fprintf(
		    stderr,
		    "ember-nested: cannot make the scratch disk in %s: %s (log: %s)\n",
		    dir, strerror(-r), path);
		return EMBER_EXIT_FAILURE;
	}
	if (pick_port(&ctl_port) < 0 ||
	    getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
		log_error("cannot pick a port or a token: %s", strerror(errno));
		return EMBER_EXIT_FAILURE;
	}
	for (int i = 0; i < 16; i++)
		snprintf(token + 2 * i, 3, "%02x", rnd[i]);
	write_text(dir, "token", token, 0600);

	int off = snprintf(netdev, sizeof(netdev),
			   "user,id=n0,hostfwd=tcp:127.0.0.1:%u-:%u", ctl_port,
			   NESTED_SERVE_PORT);
	for (int i = 0; i < a->n_forwards; i++) {
		off += snprintf(netdev + off, sizeof(netdev) - (size_t)off,
				",hostfwd=tcp:127.0.0.1:%u-:%u",
				a->forwards[i].host_port,
				a->forwards[i].guest_port);
		size_t fl = strlen(fwd_text);

		snprintf(fwd_text + fl, sizeof(fwd_text) - fl, "%u:%u\n",
			 a->forwards[i].host_port, a->forwards[i].guest_port);
	}
	snprintf(append, sizeof(append),
		 "console=ttyS0 quiet panic=-1 ember.serve=%s ember.port=%u "
		 "ember.modroot=%s ember.token=%s",
		 self, NESTED_SERVE_PORT, modroot, token);
	snprintf(smp, sizeof(smp), "%u", a->smp);
	snprintf(mem, sizeof(mem), "%u", a->memory_mb);
	state_path(path, dir, "scratch.ext4");
	snprintf(drive, sizeof(drive),
		 "file=%s,format=raw,if=virtio,cache=unsafe", path);
	state_path(path, dir, "console.log");
	snprintf(serial, sizeof(serial), "file:%s", path);
	state_path(pidfile, dir, "qemu.pid");

	argv[n++] = "qemu-system-x86_64";
	argv[n++] = "-name";
	argv[n++] = "ember-nested";
	argv[n++] = "-accel";
	argv[n++] = "tcg,thread=multi";
	argv[n++] = "-cpu";
	argv[n++] = "max";
	argv[n++] = "-smp";
	argv[n++] = smp;
	argv[n++] = "-m";
	argv[n++] = mem;
	argv[n++] = "-nodefaults";
	argv[n++] = "-no-user-config";
	argv[n++] = "-display";
	argv[n++] = "none";
	argv[n++] = "-no-reboot";
	argv[n++] = "-serial";
	argv[n++] = serial;
	argv[n++] = "-kernel";
	argv[n++] = kernel;
	argv[n++] = "-initrd";
	argv[n++] = initrd;
	argv[n++] = "-append";
	argv[n++] = append;
	argv[n++] = "-virtfs";
	argv[n++] = "local,path=/,mount_tag=hostroot,security_model=none,"
		    "readonly=on,multidevs=remap";
	argv[n++] = "-drive";
	argv[n++] = drive;
	argv[n++] = "-netdev";
	argv[n++] = netdev;
	argv[n++] = "-device";
	argv[n++] = "virtio-net-pci,netdev=n0";
	argv[n++] = "-pidfile";
	argv[n++] = pidfile;
	argv[n++] = "-daemonize";
	for (int i = 0; i < a->n_qemu_args; i++)
		argv[n++] = a->qemu_args[i];
	argv[n] = NULL;

	state_path(path, dir, "qemu.log");
	log_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	r = spawn_wait((char *const *)argv, log_fd, 60);
	if (log_fd >= 0)
		close(log_fd);
	if (r < 0 || !WIFEXITED(r) || WEXITSTATUS(r) != 0) {
		fprintf(stderr, "ember-nested: QEMU did not start; see %s\n",
			path);
		show_tail(path, 10);
		remove_state(dir);
		return EMBER_EXIT_FAILURE;
	}
	pid = state_pid(dir);
	snprintf(port_text, sizeof(port_text), "%u\n", ctl_port);
	write_text(dir, "ctl-port", port_text, 0644);
	write_text(dir, "forwards", fwd_text, 0644);

	state_path(path, dir, "console.log");
	end = t0 + a->boot_timeout_s * 1000000000ull;
	for (;;) {
		if (!pid_is_qemu(pid)) {
			fprintf(
			    stderr,
			    "ember-nested: the nested host stopped while booting; console: %s\n",
			    path);
			show_tail(path, 20);
			remove_state(dir);
			return EMBER_EXIT_FAILURE;
		}
		if (ping(dir, ctl_port))
			break;
		if (ember_now_ns() > end) {
			fprintf(
			    stderr,
			    "ember-nested: the nested host did not answer within %u s; console: %s\n",
			    a->boot_timeout_s, path);
			show_tail(path, 20);
			nested_cmd_stop(dir, true);
			return EMBER_EXIT_FAILURE;
		}
		usleep(250000);
	}
	if (!a->quiet)
		fprintf(
		    stderr,
		    "ember-nested: host up in %.1f s (state %s, pid %d, control port %u)\n",
		    (double)(ember_now_ns() - t0) / 1e9, dir, (int)pid,
		    ctl_port);
	return EMBER_EXIT_OK;
}
