// SPDX-License-Identifier: Apache-2.0
/*
 * The guest's init duties (mounts, console, hostname, the boot-timer
 * signal, the kernel command line) and the post-restore reidentify
 * request. Users are resolved from /etc/passwd directly: the static
 * binary must not call into NSS.
 */
#include "init.h"

#include <ember/log.h>
#include <ember/util.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <sys/io.h>
#endif

/* Firecracker's boot timer: the guest writes this byte to this port. */
#define BOOT_TIMER_PORT 0x3f0
#define BOOT_TIMER_VALUE 123
#define ENTROPY_MAX 4096

static bool is_mountpoint(const char *path)
{
	char parent[PATH_MAX];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s/..", path);
	if (stat(path, &a) < 0 || stat(parent, &b) < 0)
		return false;
	return a.st_dev != b.st_dev || a.st_ino == b.st_ino;
}

static void mount_if_needed(const char *src, const char *target,
			    const char *type, unsigned long flags,
			    const char *data)
{
	if (mkdir(target, 0755) < 0 && errno != EEXIST) {
		log_warn("mkdir %s: %s", target, strerror(errno));
		return;
	}
	if (is_mountpoint(target))
		return;
	if (mount(src, target, type, flags, data) < 0 && errno != EBUSY)
		log_warn("mount %s on %s: %s", type, target, strerror(errno));
}

void system_guest_setup(void)
{
	int fd;

	mount_if_needed("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			NULL);
	mount_if_needed("sysfs", "/sys", "sysfs",
			MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_if_needed("devtmpfs", "/dev", "devtmpfs", MS_NOSUID,
			"mode=0755");
	mount_if_needed("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
			"gid=5,mode=0620,ptmxmode=0666");
	mount_if_needed("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
			"mode=1777");
	mount_if_needed("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
			"mode=1777");
	mount_if_needed("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV,
			"mode=0755");
	if (symlink("/proc/self/fd", "/dev/fd") < 0 && errno != EEXIST)
		log_debug("symlink /dev/fd: %s", strerror(errno));
	/* The kernel may start init without stdio when /dev was empty. */
	fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd >= 0) {
		for (int i = 0; i < 3; i++) {
			struct stat st;
			if (fstat(i, &st) < 0 || S_ISCHR(st.st_mode) == 0 ||
			    major(st.st_rdev) == 1) /* /dev/null */
				dup2(fd, i);
		}
		if (fd > 2)
			close(fd);
	}
}

void system_read_cmdline(char *token, size_t token_size, char *sandbox_id,
			 size_t id_size, char *hostname, size_t host_size,
			 uint32_t *port)
{
	/* Not ember_read_file: /proc files have st_size 0. */
	enum { CMDLINE_MAX = 65536 };
	char *data = malloc(CMDLINE_MAX), *save = NULL;
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t r = -1;

	if (data && fd >= 0)
		r = ember_read_full(fd, data, CMDLINE_MAX - 1);
	if (r < 0) {
		log_warn("cannot read /proc/cmdline: %s",
			 strerror(data ? errno : ENOMEM));
		if (fd >= 0)
			close(fd);
		free(data);
		return;
	}
	close(fd);
	data[r] = '\0';
	for (char *w = strtok_r(data, " \t\n", &save); w;
	     w = strtok_r(NULL, " \t\n", &save)) {
		uint64_t v;

		if (strncmp(w, "ember.token=", 12) == 0)
			snprintf(token, token_size, "%s", w + 12);
		else if (strncmp(w, "ember.sandbox_id=", 17) == 0)
			snprintf(sandbox_id, id_size, "%s", w + 17);
		else if (strncmp(w, "ember.hostname=", 15) == 0)
			snprintf(hostname, host_size, "%s", w + 15);
		else if (strncmp(w, "ember.port=", 11) == 0 &&
			 ember_parse_u64(w + 11, &v) == 0 && v <= UINT32_MAX)
			*port = (uint32_t)v;
	}
	free(data);
}

void system_boot_signal(void)
{
#if defined(__x86_64__) || defined(__i386__)
	if (ioperm(BOOT_TIMER_PORT, 1, 1) < 0) {
		log_warn("boot timer: ioperm: %s", strerror(errno));
		return;
	}
	outb(BOOT_TIMER_VALUE, BOOT_TIMER_PORT);
	ioperm(BOOT_TIMER_PORT, 1, 0);
#endif
}

static bool valid_hostname(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > EMBER_AGENT_HOSTNAME_MAX || s[0] == '-' ||
	    s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.')
			return false;
	return true;
}

static bool valid_printable(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] == 0x7f)
			return false;
	return true;
}

int system_set_hostname(const char *name)
{
	if (!valid_hostname(name))
		return -EINVAL;
	if (sethostname(name, strlen(name)) < 0) {
		int e = errno;
		log_warn("sethostname %s: %s", name, strerror(e));
		return -e;
	}
	return 0;
}

int system_lookup_user(const char *spec, uid_t *uid, gid_t *gid, char *home,
		       size_t home_size, char *name, size_t name_size)
{
	char buf[64], *colon, *data, *save = NULL;
	uint64_t want_uid = 0, want_gid = 0;
	bool numeric = false, have_gid = false, found = false;

	if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf) ||
	    !buf[0])
		return -EINVAL;
	colon = strchr(buf, ':');
	if (colon) {
		*colon = '\0';
		if (ember_parse_u64(colon + 1, &want_gid) < 0 ||
		    want_gid > UINT32_MAX - 1)
			return -EINVAL;
		have_gid = true;
	}
	if (ember_parse_u64(buf, &want_uid) == 0) {
		if (want_uid > UINT32_MAX - 1)
			return -EINVAL;
		numeric = true;
	} else if (have_gid) {
		return -EINVAL;
	}
	if (ember_read_file("/etc/passwd", 4u << 20, &data, NULL) < 0)
		data = NULL;
	for (char *line = data ? strtok_r(data, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *f[7];
		uint64_t u, g;
		int n = 0;

		for (char *p = line; n < 7; n++) {
			f[n] = p;
			p = strchr(p, ':');
			if (!p) {
				n++;
				break;
			}
			*p++ = '\0';
		}
		if (n < 7 || ember_parse_u64(f[2], &u) < 0 ||
		    ember_parse_u64(f[3], &g) < 0)
			continue;
		if (numeric ? u != want_uid : strcmp(f[0], buf) != 0)
			continue;
		want_uid = u;
		if (!have_gid)
			want_gid = g;
		have_gid = true;
		snprintf(home, home_size, "%s", f[5][0] ? f[5] : "/");
		snprintf(name, name_size, "%s", f[0]);
		found = true;
		break;
	}
	free(data);
	if (!found && !numeric)
		return -ENOENT;
	*uid = (uid_t)want_uid;
	*gid = (gid_t)(have_gid ? want_gid : want_uid);
	return 0;
}

static int add_entropy(const uint8_t *bytes, size_t len)
{
	struct rand_pool_info *info = malloc(sizeof(*info) + len + 4);
	int fd, r = 0;

	if (!info)
		return -ENOMEM;
	info->entropy_count = (int)(len * 8);
	info->buf_size = (int)len;
	memcpy(info->buf, bytes, len);
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, info) < 0)
		r = -errno;
	/* Credited entropy alone does not reseed a CRNG that is already
	 * initialised (Linux reseeds it about once a minute): clones of one
	 * template read the same bytes until then. Force the reseed; a
	 * kernel without RNDRESEEDCRNG (before 4.17) keeps the old way. */
	else if (ioctl(fd, RNDRESEEDCRNG) < 0)
		log_warn("RNDRESEEDCRNG: %s (the new entropy is used at the "
			 "kernel's next reseed)", strerror(errno));
	if (fd >= 0)
		close(fd);
	free(info);
	return r;
}

/*
 * Everything is checked before anything changes; then the clock, the
 * entropy, the hostname and last the identity and token. A step that fails
 * stops there with an ERROR, the old token still valid, so the host can
 * retry.
 */
void system_reidentify(struct conn *c, uint32_t id, json_t *req)
{
	json_t *tv = json_object_get(req, "realtime_ns");
	const char *hex = json_string_value(json_object_get(req, "entropy"));
	const char *host = json_string_value(json_object_get(req, "hostname"));
	const char *sid = json_string_value(json_object_get(req, "sandbox_id"));
	const char *tok = json_string_value(json_object_get(req, "new_token"));
	uint8_t entropy[ENTROPY_MAX];
	ssize_t elen = 0;
	int r;

	if (tv && (!json_is_integer(tv) || json_integer_value(tv) <= 0)) {
		conn_send_error(c, id, EINVAL,
				"reidentify: \"realtime_ns\" must be positive");
		return;
	}
	if (hex) {
		elen = ember_agent_hex_decode(hex, entropy, sizeof(entropy));
		if (elen < 0) {
			conn_send_error(c, id, EINVAL, "reidentify: \"entropy\" "
					"must be hex, at most %d bytes",
					ENTROPY_MAX);
			return;
		}
	}
	if ((host && !valid_hostname(host)) ||
	    (sid && !valid_printable(sid, EMBER_AGENT_ID_MAX)) ||
	    (tok && !valid_printable(tok, EMBER_AGENT_TOKEN_MAX))) {
		conn_send_error(c, id, EINVAL, "reidentify: bad hostname, "
				"sandbox_id or new_token");
		return;
	}
	if (tv) {
		json_int_t ns = json_integer_value(tv);
		struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000),
				       .tv_nsec = (long)(ns % 1000000000) };
		if (!agent.guest && !agent.allow_clock) {
			conn_send_error(c, id, EPERM, "reidentify: not setting "
					"the clock outside a guest (ember-init "
					"is not the guest's init; see "
					"--allow-clock)");
			return;
		}
		if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
			conn_send_error(c, id, errno, "reidentify: setting the "
					"clock: %s", strerror(errno));
			return;
		}
	}
	if (elen > 0) {
		r = add_entropy(entropy, (size_t)elen);
		explicit_bzero(entropy, sizeof(entropy));
		if (r < 0) {
			conn_send_error(c, id, -r, "reidentify: adding entropy "
					"(RNDADDENTROPY): %s", strerror(-r));
			return;
		}
	}
	if (host) {
		if (agent.guest) {
			r = system_set_hostname(host);
			if (r < 0) {
				conn_send_error(c, id, -r, "reidentify: "
						"sethostname: %s", strerror(-r));
				return;
			}
		}
		snprintf(agent.hostname, sizeof(agent.hostname), "%s", host);
	}
	if (sid) {
		snprintf(agent.sandbox_id, sizeof(agent.sandbox_id), "%s", sid);
		ember_log_set_id(agent.sandbox_id);
	}
	if (tok)
		snprintf(agent.token, sizeof(agent.token), "%s", tok);
	olog_info(c->name, "reidentified%s%s%s%s", tv ? " clock" : "",
		  elen ? " entropy" : "", host ? " hostname" : "",
		  tok ? " token" : "");
	conn_send_json(c, EMBER_AGENT_RESPONSE, id, json_object());
}
