// SPDX-License-Identifier: Apache-2.0
/*
 * ember-uffd: serves a restored VM's page faults from a snapshot layer chain
 * (docs/snapshots.md).
 *
 *   START ── load and validate the header, map every layer (missing or
 *            wrong-sized layer: exit 1), read the prefetch file
 *     │
 *   LISTEN ─ the socket is bound under a temporary name and renamed into
 *            place once listening: when the path exists, connect works.
 *            Prints "listening PATH".
 *     │      accept one VMM (timeout), SO_PEERCRED, recvmsg: the region
 *     │      JSON with the userfaultfd as SCM_RIGHTS
 *   CHECK ── regions must cover exactly the header's total size; on any
 *            mismatch the VMM is killed (through its pidfd) so that it never
 *            runs on pages we cannot serve, and we exit 1
 *     │
 *   READY ── "ready" on --ready-fd and stdout (with --ready-after-prefetch
 *            once the working set is installed); serve (server.c) until
 *            the VM goes away or SIGTERM: exit 0
 */
#include "server.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define HANDSHAKE_MAX (64u << 10)
#define MAX_LAYER_DIRS 16

static const char usage[] =
	"Usage: ember-uffd --socket PATH --header HDR [OPTIONS]\n"
	"Serves the page faults of a VM restored with Firecracker's Uffd\n"
	"memory backend from a snapshot layer chain.\n"
	"\n"
	"  --socket PATH          Unix socket the VMM connects to\n"
	"  --header HDR           the generation's header (<id>.hdr)\n"
	"  --layers-dir DIR       where layers are; may repeat; default: the\n"
	"                         header's folder\n"
	"  --verify-layers        check every layer's checksum first (reads\n"
	"                         all of them)\n"
	"  --ready-fd N           write \"ready\\n\" to fd N after the handshake\n"
	"  --accept-timeout S     give up when no VMM connects in S seconds\n"
	"                         (default 120; 0 waits for ever)\n"
	"  --metrics-path FILE    write metrics JSON there on exit and SIGUSR1\n"
	"  --record-ws FILE       record into FILE the order of the pages\n"
	"                         faulted after the handshake\n"
	"  --record-seconds N     record for N seconds (default 10)\n"
	"  --record-tail-ms N     or until N ms (default 1000) after SIGUSR2\n"
	"  --prefetch FILE        install a recorded working set in bulk\n"
	"                         right after the handshake; a corrupt or\n"
	"                         stale file is ignored with a warning; with\n"
	"                         --record-ws, recording happens only then\n"
	"  --prefetch-all         install all of guest memory (eager)\n"
	"  --ready-after-prefetch announce \"ready\" once the prefetch is\n"
	"                         done (the VM then runs on installed pages)\n"
	"  --id ID                object id for log lines (e.g. the sandbox)\n"
	"  --log-level LEVEL      error, warn, info (default), debug\n"
	"  -h, --help, -V, --version\n"
	"\n"
	"Prints \"listening PATH\", \"ready\" and \"prefetched N\" lines on\n"
	"stdout. SIGUSR1 writes metrics; SIGUSR2 (the guest is ready) too,\n"
	"and ends the recording window.\n"
	"\n"
	"Exit status: 0 when the VM went away or on SIGTERM, 1 on a runtime\n"
	"failure (bad header, missing layer, regions that disagree with the\n"
	"header), 2 on a usage error.\n";

struct options {
	const char *socket_path, *header_path, *prefetch_path, *id;
	const char *dirs[MAX_LAYER_DIRS];
	size_t n_dirs;
	bool verify, prefetch_all;
	uint64_t accept_timeout_s, record_seconds;
};

static void parse_args(int argc, char **argv, struct options *o,
		       struct server *s)
{
	enum { O_SOCKET = 256, O_HEADER, O_DIRS, O_VERIFY, O_READY, O_ACCEPT,
	       O_METRICS, O_RECORD, O_RECORD_S, O_PREFETCH, O_ID, O_LEVEL,
	       O_RECORD_TAIL, O_PREFETCH_ALL, O_READY_AFTER };
	static const struct option opts[] = {
		{"socket", required_argument, 0, O_SOCKET},
		{"header", required_argument, 0, O_HEADER},
		{"layers-dir", required_argument, 0, O_DIRS},
		{"verify-layers", no_argument, 0, O_VERIFY},
		{"ready-fd", required_argument, 0, O_READY},
		{"accept-timeout", required_argument, 0, O_ACCEPT},
		{"metrics-path", required_argument, 0, O_METRICS},
		{"record-ws", required_argument, 0, O_RECORD},
		{"record-seconds", required_argument, 0, O_RECORD_S},
		{"prefetch", required_argument, 0, O_PREFETCH},
		{"record-tail-ms", required_argument, 0, O_RECORD_TAIL},
		{"prefetch-all", no_argument, 0, O_PREFETCH_ALL},
		{"ready-after-prefetch", no_argument, 0, O_READY_AFTER},
		{"id", required_argument, 0, O_ID},
		{"log-level", required_argument, 0, O_LEVEL},
		{"help", no_argument, 0, 'h'},
		{"version", no_argument, 0, 'V'},
		{0, 0, 0, 0},
	};
	enum ember_log_level level;
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case O_SOCKET: o->socket_path = optarg; break;
		case O_HEADER: o->header_path = optarg; break;
		case O_DIRS:
			if (o->n_dirs == MAX_LAYER_DIRS)
				ember_die(EMBER_EXIT_USAGE,
					  "at most %d --layers-dir",
					  MAX_LAYER_DIRS);
			o->dirs[o->n_dirs++] = optarg;
			break;
		case O_VERIFY: o->verify = true; break;
		case O_READY:
			if (ember_parse_u64(optarg, &v) || v > INT_MAX)
				ember_die(EMBER_EXIT_USAGE, "--ready-fd %s: "
					  "not a descriptor", optarg);
			s->ready_fd = (int)v;
			break;
		case O_ACCEPT:
			if (ember_parse_u64(optarg, &o->accept_timeout_s))
				ember_die(EMBER_EXIT_USAGE,
					  "--accept-timeout %s: not a number",
					  optarg);
			break;
		case O_METRICS: s->metrics_path = optarg; break;
		case O_RECORD: s->record_path = optarg; break;
		case O_RECORD_S:
			if (ember_parse_u64(optarg, &o->record_seconds) ||
			    o->record_seconds > 86400)
				ember_die(EMBER_EXIT_USAGE,
					  "--record-seconds %s: not a number "
					  "of seconds",
					  optarg);
			break;
		case O_PREFETCH: o->prefetch_path = optarg; break;
		case O_PREFETCH_ALL: o->prefetch_all = true; break;
		case O_READY_AFTER: s->ready_after_prefetch = true; break;
		case O_RECORD_TAIL:
			if (ember_parse_u64(optarg, &v) || v > 3600000)
				ember_die(EMBER_EXIT_USAGE,
					  "--record-tail-ms %s: not a number "
					  "of milliseconds",
					  optarg);
			s->record_tail_ns = v * 1000000;
			break;
		case O_ID: o->id = optarg; break;
		case O_LEVEL:
			if (ember_log_parse_level(optarg, &level))
				ember_die(EMBER_EXIT_USAGE,
					  "--log-level %s: unknown", optarg);
			ember_log_set_level(level);
			break;
		case 'h': fputs(usage, stdout); exit(EMBER_EXIT_OK);
		case 'V':
			printf("ember-uffd %s\n", EMBER_VERSION);
			exit(EMBER_EXIT_OK);
		default: fputs(usage, stderr); exit(EMBER_EXIT_USAGE);
		}
	}
	if (optind != argc || !o->socket_path || !o->header_path) {
		fputs(usage, stderr);
		exit(EMBER_EXIT_USAGE);
	}
	if (o->prefetch_all && o->prefetch_path)
		ember_die(EMBER_EXIT_USAGE,
			  "--prefetch-all and --prefetch exclude each other");
}

/* Header, layers and prefetch file: everything checked before a VMM may
 * connect. Returns an exit status. */
static int load_chain(struct server *s, struct options *o)
{
	static char own[PATH_MAX];
	enum ember_hdr_error err = EMBER_HDR_OK;
	char why[512] = "";
	int rc;

	rc = ember_header_load(o->header_path, &s->h, &err);
	if (rc) {
		olog_error(s->id, "%s: %s", o->header_path,
			   rc == -EINVAL ? ember_hdr_strerror(err)
					 : strerror(-rc));
		return EMBER_EXIT_FAILURE;
	}
	if (!o->n_dirs) {
		const char *slash = strrchr(o->header_path, '/');

		snprintf(own, sizeof(own), "%.*s",
			 slash ? (int)(slash - o->header_path) : 1,
			 slash ? o->header_path : ".");
		if (!own[0])
			snprintf(own, sizeof(own), "/");
		o->dirs[o->n_dirs++] = own;
	}
	rc = ember_chain_open(&s->chain, &s->h, o->dirs, o->n_dirs, o->verify,
			      why, sizeof(why));
	if (rc) {
		olog_error(s->id, "%s: %s", o->header_path,
			   why[0] ? why : strerror(-rc));
		return EMBER_EXIT_FAILURE;
	}
	/* A working set only saves faults: one that cannot be used is
	 * ignored (and recorded anew when --record-ws says where). */
	if (o->prefetch_path) {
		rc = ws_read(o->prefetch_path, &s->h, &s->prefetch_page,
			     &s->prefetch, &s->n_prefetch, why, sizeof(why));
		if (rc) {
			olog_warn(s->id, "prefetch %s: %s; ignored",
				  o->prefetch_path,
				  rc == -EINVAL ? why : strerror(-rc));
			s->prefetch = NULL;
			s->n_prefetch = 0;
		} else {
			s->record_path = NULL;
			s->mode = "prefetch";
		}
	}
	if (s->record_path)
		s->mode = "record";
	if (o->prefetch_all)
		s->mode = "eager";
	return EMBER_EXIT_OK;
}

static int listen_socket(struct server *s, const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char tmp[sizeof(a.sun_path)];
	int fd;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, getpid()) >=
		    sizeof(tmp) ||
	    strlen(path) >= sizeof(a.sun_path)) {
		olog_error(s->id, "%s: socket path too long", path);
		return -ENAMETOOLONG;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memcpy(a.sun_path, tmp, strlen(tmp) + 1);
	unlink(tmp);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(fd, 4) < 0 || rename(tmp, path) < 0) {
		int rc = -errno;

		olog_error(s->id, "%s: %s", path, strerror(-rc));
		unlink(tmp);
		close(fd);
		return rc;
	}
	return fd;
}

/* Waits for the VMM and receives the region list and the userfaultfd. */
static int accept_vmm(struct server *s, int lfd, uint64_t timeout_s,
		      char *json, size_t *json_len)
{
	struct pollfd p = {.fd = lfd, .events = POLLIN},
		      pw[2] = {{.fd = lfd, .events = POLLIN},
			       {.fd = s->sig_fd, .events = POLLIN}};
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = json, .iov_len = HANDSHAKE_MAX - 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf)};
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int conn, rc;
	ssize_t n;

	do {
		rc = poll(pw, 2, timeout_s ? (int)EMBER_MIN(timeout_s * 1000,
							    INT_MAX)
					   : -1);
	} while (rc < 0 && errno == EINTR);
	if (rc > 0 && (pw[1].revents & POLLIN)) {
		olog_info(s->id, "stopped before a VMM connected");
		return -ECANCELED;
	}
	if (rc <= 0) {
		olog_error(s->id, "no VMM connected within %" PRIu64 " s",
			   timeout_s);
		return -ETIMEDOUT;
	}
	conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (conn < 0) {
		olog_error(s->id, "accept: %s", strerror(errno));
		return -errno;
	}
	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		s->peer = cred.pid;
		olog_info(s->id, "VMM connected: pid %d uid %u", cred.pid,
			  cred.uid);
	}
	p = (struct pollfd){.fd = conn, .events = POLLIN};
	if (poll(&p, 1, 10000) <= 0) {
		olog_error(s->id, "VMM sent no handshake within 10 s");
		close(conn);
		return -ETIMEDOUT;
	}
	do {
		n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	close(conn);
	if (n <= 0) {
		olog_error(s->id, "handshake: %s",
			   n < 0 ? strerror(errno) : "connection closed");
		return -EPROTO;
	}
	*json_len = (size_t)n;
	json[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
	     c = CMSG_NXTHDR(&mh, c)) {
		size_t nfd;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
			if (s->uffd < 0)
				s->uffd = fd;
			else
				close(fd);
		}
	}
	if (s->uffd < 0) {
		olog_error(s->id, "handshake carried no userfaultfd");
		return -EPROTO;
	}
	return 0;
}

static int cmp_region(const void *a, const void *b)
{
	const struct ember_uffd_region *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The regions must tile [0, total_size) of the header exactly. */
static int check_regions(struct server *s)
{
	uint64_t end = 0;
	char link[64], target[64] = "";
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", s->uffd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n > 0)
		target[n] = '\0';
	if (n > 0 && !strstr(target, "userfaultfd")) {
		olog_error(s->id, "the descriptor sent is %s, not a "
				  "userfaultfd",
			   target);
		return -EINVAL;
	}
	qsort(s->regions, s->n_regions, sizeof(*s->regions), cmp_region);
	for (size_t i = 0; i < s->n_regions; i++) {
		const struct ember_uffd_region *r = &s->regions[i];

		if (r->offset != end) {
			olog_error(s->id, "regions: offset 0x%" PRIx64
					  " where 0x%" PRIx64 " was expected "
					  "(gap or overlap)",
				   r->offset, end);
			return -EINVAL;
		}
		end += r->size;
		s->max_page = EMBER_MAX(s->max_page, r->page_size);
	}
	if (end != s->h.total_size) {
		olog_error(s->id, "regions cover %" PRIu64 " bytes, the header "
				  "says %" PRIu64,
			   end, s->h.total_size);
		return -EINVAL;
	}
	if (s->prefetch && s->prefetch_page < s->max_page) {
		olog_warn(s->id, "working set recorded with %" PRIu64
				 "-byte pages, regions use %" PRIu64
				 ": prefetch skipped",
			  s->prefetch_page, s->max_page);
		s->n_prefetch = 0;
	}
	s->bounce = malloc(s->max_page);
	return s->bounce ? 0 : -ENOMEM;
}

static int handshake(struct server *s, int lfd, uint64_t timeout_s)
{
	char *json = malloc(HANDSHAKE_MAX), why[256] = "";
	size_t len = 0;
	int rc;

	if (!json)
		return -ENOMEM;
	rc = accept_vmm(s, lfd, timeout_s, json, &len);
	if (!rc) {
		rc = ember_uffd_parse_regions(json, len, &s->regions,
					      &s->n_regions, why, sizeof(why));
		if (rc)
			olog_error(s->id, "handshake: %s", why);
	}
	free(json);
	if (s->peer > 0) {
		s->pid_fd = pidfd_open(s->peer, 0);
		if (s->pid_fd < 0)
			olog_warn(s->id, "pidfd_open(%d): %s; the VM's exit "
					 "is seen through ESRCH only",
				  s->peer, strerror(errno));
	}
	if (!rc)
		rc = check_regions(s);
	return rc;
}

/* Never let a VM run on pages we will not serve. */
static void kill_peer(struct server *s)
{
	if (s->pid_fd < 0 || s->uffd < 0)
		return;
	olog_error(s->id, "killing VMM pid %d: its memory cannot be served",
		   s->peer);
	if (pidfd_send_signal(s->pid_fd, SIGKILL, NULL, 0) < 0)
		olog_error(s->id, "kill VMM: %s", strerror(errno));
}

/* Eager: the working set is every page of guest memory. */
static int prefetch_everything(struct server *s)
{
	size_t n = (size_t)(s->h.total_size / s->max_page);

	s->prefetch = malloc((n ? n : 1) * sizeof(*s->prefetch));
	if (!s->prefetch)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		s->prefetch[i] = (uint64_t)i * s->max_page;
	s->n_prefetch = n;
	s->prefetch_page = s->max_page;
	return 0;
}

static int setup_signals(struct server *s)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGPIPE);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	sigdelset(&set, SIGPIPE);
	s->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return s->sig_fd < 0 ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct options o = {.accept_timeout_s = 120, .record_seconds = 10};
	struct server s = {.uffd = -1, .sig_fd = -1, .pid_fd = -1,
			   .ready_fd = -1, .record_tail_ns = 1000000000ull,
			   .mode = "lazy", .exit_status = EMBER_EXIT_OK};
	char default_id[32];
	int lfd, rc, status = EMBER_EXIT_FAILURE;

	ember_log_init("ember-uffd", NULL);
	parse_args(argc, argv, &o, &s);
	snprintf(default_id, sizeof(default_id), "uffd-%d", getpid());
	s.id = o.id ? o.id : default_id;
	s.start_ns = ember_now_ns();
	if (setup_signals(&s)) {
		olog_error(s.id, "signals: %s", strerror(errno));
		return EMBER_EXIT_FAILURE;
	}
	if (load_chain(&s, &o))
		goto out;
	lfd = listen_socket(&s, o.socket_path);
	if (lfd < 0)
		goto out;
	olog_info(s.id, "listening on %s", o.socket_path);
	printf("listening %s\n", o.socket_path);
	fflush(stdout);
	rc = handshake(&s, lfd, o.accept_timeout_s);
	close(lfd);
	unlink(o.socket_path);
	if (rc == -ECANCELED)
		status = EMBER_EXIT_OK;
	if (rc) {
		kill_peer(&s);
		goto out;
	}
	if (fcntl(s.uffd, F_SETFL, fcntl(s.uffd, F_GETFL) | O_NONBLOCK) < 0)
		olog_warn(s.id, "O_NONBLOCK on the userfaultfd: %s",
			  strerror(errno));
	if (s.record_path) {
		s.recording = true;
		s.record_until_ns = ember_now_ns() + o.record_seconds *
							     1000000000ull;
	}
	if (o.prefetch_all && prefetch_everything(&s) < 0) {
		olog_error(s.id, "out of memory for --prefetch-all");
		kill_peer(&s);
		goto out;
	}
	server_sort_prefetch(&s);
	s.prefetch_start_ns = ember_now_ns();
	if (!s.ready_after_prefetch)
		server_announce_ready(&s);
	status = server_run(&s);
	server_finish_recording(&s);
	server_write_metrics(&s, true);
out:
	ember_chain_close(&s.chain);
	ember_header_free(&s.h);
	ember_close(&s.uffd);
	ember_close(&s.pid_fd);
	ember_close(&s.sig_fd);
	ember_close(&s.ready_fd);
	free(s.regions);
	free(s.bounce);
	free(s.removed);
	free(s.queue);
	free(s.ws);
	free(s.prefetch);
	free(s.lat_ns);
	return status;
}
