// SPDX-License-Identifier: Apache-2.0
/*
 * ember-init: the guest agent. PID 1 of the base image (or started by it):
 * mounts what Linux needs, reaps zombies, sets the hostname, and serves the
 * agent protocol (src/lib/agent_proto.c) on a vsock port, or on a Unix
 * socket when run as a normal process for tests.
 *
 * One thread, one poll() loop over: the listening socket, a signalfd
 * (SIGCHLD, SIGTERM, SIGINT, SIGHUP), every connection, and the pipes of
 * every running command. All fds are non-blocking, so a slow command or a
 * slow host never blocks an answer to anyone else.
 */
#include "init.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define FRAMES_PER_TURN 64
#define CLOSE_LINGER_NS (5000ull * 1000 * 1000)

struct agent agent;

static int listen_fd = -1, signal_fd = -1;
static bool stopping;

/* ---- connections ------------------------------------------------------ */

static void conn_flush(struct conn *c)
{
	while (c->out_head && !c->failed) {
		struct outbuf *b = c->out_head;
		ssize_t w = send(c->fd, b->data + b->off, b->len - b->off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (w < 0) {
			olog_debug(c->name, "send: %s", strerror(errno));
			c->failed = true;
			return;
		}
		b->off += (size_t)w;
		c->out_bytes -= (size_t)w;
		if (b->off == b->len) {
			c->out_head = b->next;
			if (!c->out_head)
				c->out_tail = NULL;
			free(b);
		}
	}
}

int conn_send(struct conn *c, uint8_t type, uint32_t id, const void *p,
	      size_t len)
{
	struct ember_agent_hdr h = {
		.len = (uint32_t)len,
		.type = type,
		.version = EMBER_AGENT_PROTO_VERSION,
		.id = id,
	};
	struct outbuf *b;

	if (!c || c->dead || c->failed)
		return -EPIPE;
	if (len > EMBER_AGENT_MAX_PAYLOAD)
		return -EMSGSIZE;
	b = malloc(sizeof(*b) + EMBER_AGENT_HDR_SIZE + len);
	if (!b) {
		olog_error(c->name, "out of memory queueing a frame");
		c->failed = true;
		return -ENOMEM;
	}
	b->next = NULL;
	b->off = 0;
	b->len = EMBER_AGENT_HDR_SIZE + len;
	ember_agent_hdr_encode(&h, b->data);
	if (len)
		memcpy(b->data + EMBER_AGENT_HDR_SIZE, p, len);
	if (c->out_tail)
		c->out_tail->next = b;
	else
		c->out_head = b;
	c->out_tail = b;
	c->out_bytes += b->len;
	if (c->out_head == b)
		conn_flush(c);
	return 0;
}

int conn_send_json(struct conn *c, uint8_t type, uint32_t id, json_t *j)
{
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	int r;

	json_decref(j);
	if (!text)
		return -ENOMEM;
	r = conn_send(c, type, id, text, strlen(text));
	free(text);
	return r;
}

void conn_send_error(struct conn *c, uint32_t id, int err, const char *fmt,
		     ...)
{
	char msg[1024];
	const char *code = strerrorname_np(err);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	olog_debug(c ? c->name : NULL, "stream %u: error: %s", id, msg);
	conn_send_json(c, EMBER_AGENT_ERROR, id,
		       json_pack("{s:s, s:i, s:s}", "error", msg, "errno", err,
				 "code", code ? code : "EIO"));
}

bool conn_output_full(const struct conn *c)
{
	return !c || c->out_bytes >= OUT_HIGH;
}

static bool conn_input_blocked(const struct conn *c)
{
	if (c->closing || c->dead || c->failed || c->out_bytes >= OUT_HARD)
		return true;
	for (struct stream *s = agent.streams; s; s = s->next)
		if (s->conn == c && !s->done && s->in_bytes >= STDIN_HIGH)
			return true;
	return false;
}

static void conn_new(int fd)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		log_error("out of memory accepting a connection");
		close(fd);
		return;
	}
	c->fd = fd;
	snprintf(c->name, sizeof(c->name), "conn-%u", ++agent.conn_serial);
	ember_agent_reader_init(&c->rd, EMBER_AGENT_MAX_PAYLOAD);
	c->next = agent.conns;
	agent.conns = c;
	olog_debug(c->name, "connected");
}

/* Tears a connection down: its streams are detached (commands killed,
 * writes aborted); the memory goes in the sweep. */
static void conn_gone(struct conn *c)
{
	if (c->dead)
		return;
	for (struct stream *s = agent.streams; s; s = s->next) {
		if (s->conn != c)
			continue;
		if (s->kind == STREAM_EXEC)
			exec_detach(s);
		else
			file_detach(s);
	}
	c->dead = true;
	ember_close(&c->fd);
	olog_debug(c->name, "closed");
}

/* Answers a frame that breaks the framing and stops reading. */
static void conn_protocol_error(struct conn *c, const struct ember_agent_hdr *h,
				int err)
{
	if (err == -EMSGSIZE)
		conn_send_error(c, h->id, EMSGSIZE,
				"frame of %u bytes is over the limit of %u",
				h->len, EMBER_AGENT_MAX_PAYLOAD);
	else
		conn_send_error(c, h->id, EPROTO,
				"bad frame header (version %u, flags %u)",
				h->version, h->flags);
	olog_warn(c->name, "closing after a bad frame: %s", strerror(-err));
	c->closing = true;
	c->close_deadline_ns = ember_now_ns() + CLOSE_LINGER_NS;
}

/* ---- requests ----------------------------------------------------------- */

struct stream *stream_new(struct conn *c, uint32_t id, enum stream_kind kind)
{
	struct stream *s = calloc(1, sizeof(*s));

	if (!s) {
		conn_send_error(c, id, ENOMEM, "out of memory");
		return NULL;
	}
	s->conn = c;
	s->id = id;
	s->kind = kind;
	s->out_fd = s->err_fd = s->in_fd = s->fd = -1;
	s->next = agent.streams;
	agent.streams = s;
	return s;
}

static struct stream *stream_find(struct conn *c, uint32_t id)
{
	for (struct stream *s = agent.streams; s; s = s->next)
		if (s->conn == c && s->id == id && !s->done)
			return s;
	return NULL;
}

static void op_health(struct conn *c, uint32_t id)
{
	uint64_t up = (ember_now_ns() - agent.start_ns) / 1000000;

	conn_send_json(c, EMBER_AGENT_RESPONSE, id,
		       json_pack("{s:s, s:i, s:I, s:s, s:s, s:b, s:i}",
				 "version", EMBER_VERSION, "proto",
				 EMBER_AGENT_PROTO_VERSION, "uptime_ms",
				 (json_int_t)up, "sandbox_id",
				 agent.sandbox_id, "hostname", agent.hostname,
				 "pid1", agent.guest, "execs",
				 (int)exec_count()));
}

static void handle_request(struct conn *c, uint32_t id, const uint8_t *p,
			   size_t len)
{
	json_error_t jerr;
	json_t *req = json_loadb((const char *)p, len, 0, &jerr);
	const char *op, *token;

	if (!req || !json_is_object(req)) {
		conn_send_error(c, id, EBADMSG, "request is not a JSON object%s%s",
				req ? "" : ": ", req ? "" : jerr.text);
		goto out;
	}
	op = json_string_value(json_object_get(req, "op"));
	token = json_string_value(json_object_get(req, "token"));
	if (!ember_agent_token_equal(agent.token, token)) {
		olog_warn(c->name, "stream %u: request refused: wrong token", id);
		conn_send_error(c, id, EACCES, "access token refused");
		goto out;
	}
	if (id == 0) {
		conn_send_error(c, id, EINVAL, "a request needs a nonzero id");
		goto out;
	}
	if (stream_find(c, id)) {
		conn_send_error(c, id, EEXIST, "stream %u is already open", id);
		goto out;
	}
	if (!op) {
		conn_send_error(c, id, EINVAL, "request has no \"op\"");
	} else if (strcmp(op, "health") == 0) {
		op_health(c, id);
	} else if (strcmp(op, "exec") == 0) {
		exec_start(c, id, req);
	} else if (strcmp(op, "signal") == 0) {
		exec_signal(c, id, req);
	} else if (strcmp(op, "write") == 0) {
		file_write_start(c, id, req);
	} else if (strcmp(op, "read") == 0) {
		file_read_start(c, id, req);
	} else if (strcmp(op, "stat") == 0) {
		file_stat(c, id, req);
	} else if (strcmp(op, "list") == 0) {
		file_list(c, id, req);
	} else if (strcmp(op, "remove") == 0) {
		file_remove(c, id, req);
	} else if (strcmp(op, "reidentify") == 0) {
		system_reidentify(c, id, req);
	} else {
		conn_send_error(c, id, EOPNOTSUPP, "unknown request \"%s\"", op);
	}
out:
	json_decref(req);
}

static void handle_frame(struct conn *c, const struct ember_agent_hdr *h,
			 const uint8_t *p)
{
	struct stream *s;

	switch (h->type) {
	case EMBER_AGENT_REQUEST:
		handle_request(c, h->id, p, h->len);
		return;
	case EMBER_AGENT_DATA_IN:
	case EMBER_AGENT_EOF_IN:
		s = stream_find(c, h->id);
		if (!s || s->kind == STREAM_READ)
			return; /* stream already over: drop */
		if (s->kind == STREAM_EXEC)
			exec_stdin(s, p, h->len, h->type == EMBER_AGENT_EOF_IN);
		else
			file_write_data(s, p, h->len,
					h->type == EMBER_AGENT_EOF_IN);
		return;
	default:
		conn_send_error(c, h->id, EBADMSG,
				"unexpected frame type %u (%s)", h->type,
				ember_agent_type_name(h->type));
	}
}

static void conn_process(struct conn *c)
{
	for (int i = 0; i < FRAMES_PER_TURN && !conn_input_blocked(c); i++) {
		struct ember_agent_hdr h;
		const uint8_t *p;
		int r = ember_agent_reader_next(&c->rd, &h, &p);

		if (r == 0)
			return;
		if (r < 0) {
			conn_protocol_error(c, &h, r);
			return;
		}
		handle_frame(c, &h, p);
	}
}

static bool conn_has_frame(const struct conn *c)
{
	size_t n = ember_agent_reader_pending(&c->rd);

	/* A header is enough: a bad one must be answered too. */
	return n >= EMBER_AGENT_HDR_SIZE;
}

static void conn_on_readable(struct conn *c)
{
	ssize_t n = ember_agent_reader_fill(&c->rd, c->fd);

	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		if (n < 0)
			olog_debug(c->name, "read: %s", strerror((int)-n));
		conn_gone(c);
		return;
	}
	conn_process(c);
}

/* ---- the loop ------------------------------------------------------------ */

static void reap_children(void)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid <= 0)
			return;
		exec_reaped(pid, status);
	}
}

static void on_signal(void)
{
	struct signalfd_siginfo si;

	while (read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap_children();
			break;
		case SIGTERM:
		case SIGINT:
			if (agent.guest)
				log_info("ignoring signal %u as the guest's init",
					 si.ssi_signo);
			else
				stopping = true;
			break;
		default:
			break;
		}
	}
}

static void on_accept(void)
{
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		conn_new(fd);
	}
}

static void sweep(void)
{
	struct stream **sp = &agent.streams;
	struct conn **cp = &agent.conns;

	while (*sp) {
		struct stream *s = *sp;
		if (!s->done) {
			sp = &s->next;
			continue;
		}
		*sp = s->next;
		for (struct outbuf *b = s->in_head, *n; b; b = n) {
			n = b->next;
			free(b);
		}
		free(s);
	}
	while (*cp) {
		struct conn *c = *cp;
		if (!c->dead) {
			cp = &c->next;
			continue;
		}
		*cp = c->next;
		for (struct outbuf *b = c->out_head, *n; b; b = n) {
			n = b->next;
			free(b);
		}
		ember_agent_reader_free(&c->rd);
		free(c);
	}
}

enum poll_tag { P_LISTEN, P_SIGNAL, P_CONN, P_STDOUT, P_STDERR, P_STDIN };

struct poll_set {
	struct pollfd *fds;
	enum poll_tag *tags;
	void **objs;
	size_t n, cap;
};

static int poll_add(struct poll_set *ps, int fd, short events,
		    enum poll_tag tag, void *obj)
{
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 64;
		struct pollfd *f = realloc(ps->fds, cap * sizeof(*f));
		enum poll_tag *t;
		void **o;

		if (!f)
			return -ENOMEM;
		ps->fds = f;
		t = realloc(ps->tags, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		ps->tags = t;
		o = realloc(ps->objs, cap * sizeof(*o));
		if (!o)
			return -ENOMEM;
		ps->objs = o;
		ps->cap = cap;
	}
	ps->fds[ps->n] = (struct pollfd){ .fd = fd, .events = events };
	ps->tags[ps->n] = tag;
	ps->objs[ps->n] = obj;
	ps->n++;
	return 0;
}

/* Builds the poll set and returns the poll timeout in ms. */
static int poll_prepare(struct poll_set *ps, uint64_t now)
{
	int timeout = 1000;

	ps->n = 0;
	poll_add(ps, signal_fd, POLLIN, P_SIGNAL, NULL);
	if (listen_fd >= 0 && !stopping)
		poll_add(ps, listen_fd, POLLIN, P_LISTEN, NULL);
	for (struct conn *c = agent.conns; c; c = c->next) {
		short ev = 0;
		if (c->dead)
			continue;
		if (!conn_input_blocked(c)) {
			ev |= POLLIN;
			if (conn_has_frame(c))
				timeout = 0;
		}
		if (c->out_head)
			ev |= POLLOUT;
		poll_add(ps, c->fd, ev, P_CONN, c);
	}
	for (struct stream *s = agent.streams; s; s = s->next) {
		if (s->done || !s->conn)
			continue;
		if (s->kind == STREAM_READ && !conn_output_full(s->conn))
			timeout = 0;
		if (s->kind != STREAM_EXEC)
			continue;
		if (!conn_output_full(s->conn)) {
			if (s->out_fd >= 0)
				poll_add(ps, s->out_fd, POLLIN, P_STDOUT, s);
			if (s->err_fd >= 0)
				poll_add(ps, s->err_fd, POLLIN, P_STDERR, s);
		}
		if (s->in_fd >= 0 && s->in_head)
			poll_add(ps, s->in_fd, POLLOUT, P_STDIN, s);
		if (s->deadline_ns && !s->exited) {
			uint64_t ms = s->deadline_ns > now
				? (s->deadline_ns - now) / 1000000 + 1 : 0;
			timeout = (int)EMBER_MIN((uint64_t)timeout, ms);
		}
	}
	return timeout;
}

static void poll_dispatch(struct poll_set *ps)
{
	for (size_t i = 0; i < ps->n; i++) {
		short re = ps->fds[i].revents;
		struct conn *c = ps->objs[i];
		struct stream *s = ps->objs[i];

		if (!re)
			continue;
		switch (ps->tags[i]) {
		case P_SIGNAL:
			on_signal();
			break;
		case P_LISTEN:
			on_accept();
			break;
		case P_CONN:
			if (c->dead)
				break;
			if (re & POLLOUT)
				conn_flush(c);
			if (re & (POLLIN | POLLHUP | POLLERR))
				conn_on_readable(c);
			break;
		case P_STDOUT:
		case P_STDERR:
			if (!s->done && s->conn)
				exec_on_output(s, ps->tags[i] == P_STDERR);
			break;
		case P_STDIN:
			if (!s->done && s->conn)
				exec_on_stdin_writable(s);
			break;
		}
	}
}

/* Work that does not wait for an fd: timeouts, buffered frames, file
 * reads, connections to close. */
static void loop_chores(uint64_t now)
{
	for (struct stream *s = agent.streams; s; s = s->next) {
		if (s->done)
			continue;
		if (s->kind == STREAM_EXEC)
			exec_tick(s, now);
		else if (s->kind == STREAM_READ && s->conn &&
			 !conn_output_full(s->conn))
			file_read_pump(s);
	}
	for (struct conn *c = agent.conns; c; c = c->next) {
		if (c->dead)
			continue;
		if (!c->failed && conn_has_frame(c))
			conn_process(c);
		if (c->failed ||
		    (c->closing && (!c->out_head || now >= c->close_deadline_ns)))
			conn_gone(c);
	}
}

static int run_loop(void)
{
	struct poll_set ps = { 0 };

	while (!stopping) {
		uint64_t now = ember_now_ns();
		int timeout = poll_prepare(&ps, now);
		int r = poll(ps.fds, ps.n, timeout);

		if (r < 0 && errno != EINTR) {
			log_error("poll: %s", strerror(errno));
			sleep(1);
			continue;
		}
		if (r > 0)
			poll_dispatch(&ps);
		loop_chores(ember_now_ns());
		sweep();
	}
	free(ps.fds);
	free(ps.tags);
	free(ps.objs);
	return 0;
}

/* Stops: every connection closed (its commands killed), children reaped
 * for up to two seconds. */
static void shutdown_agent(void)
{
	uint64_t end = ember_now_ns() + 2000ull * 1000 * 1000;

	for (struct conn *c = agent.conns; c; c = c->next)
		conn_gone(c);
	while (exec_count() > 0 && ember_now_ns() < end) {
		struct pollfd p = { .fd = signal_fd, .events = POLLIN };
		if (poll(&p, 1, 100) > 0)
			on_signal();
		reap_children();
		sweep();
	}
	sweep();
}

/* ---- start-up ------------------------------------------------------------ */

static int listen_on(const char *spec, uint32_t default_port)
{
	uint64_t port = default_port;
	int fd, r;

	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		const char *path = spec + 5;

		if (!*path || strlen(path) >= sizeof(sun.sun_path))
			return -ENAMETOOLONG;
		strcpy(sun.sun_path, path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    0);
		if (fd < 0)
			return -errno;
		unlink(path);
		if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
		    listen(fd, 64) < 0) {
			r = -errno;
			close(fd);
			return r;
		}
		return fd;
	}
	if (strncmp(spec, "vsock:", 6) == 0 && spec[6]) {
		r = ember_parse_u64(spec + 6, &port);
		if (r < 0 || port > UINT32_MAX)
			return -EINVAL;
	} else if (strcmp(spec, "vsock") != 0) {
		return -EINVAL;
	}
	{
		struct sockaddr_vm svm = {
			.svm_family = AF_VSOCK,
			.svm_port = (unsigned)port,
			.svm_cid = VMADDR_CID_ANY,
		};
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    0);
		if (fd < 0)
			return -errno;
		if (bind(fd, (struct sockaddr *)&svm, sizeof(svm)) < 0 ||
		    listen(fd, 64) < 0) {
			r = -errno;
			close(fd);
			return r;
		}
	}
	return fd;
}

static void say_ready(void)
{
	static const char line[] = "ember-guest: ready\n";
	int fd = -1;

	if (agent.guest)
		fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (ember_write_full(fd >= 0 ? fd : STDOUT_FILENO, line,
			     sizeof(line) - 1) < 0)
		log_warn("cannot print the ready line: %s", strerror(errno));
	ember_close(&fd);
}

static void ensure_std_fds(void)
{
	for (int i = 0; i < 3; i++) {
		if (fcntl(i, F_GETFD) >= 0)
			continue;
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0 && fd != i) {
			dup2(fd, i);
			close(fd);
		}
	}
}

static int setup_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return signal_fd < 0 ? -errno : 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ember-init [options]\n"
		"The guest agent of an Ember sandbox (see docs/guest-agent.md).\n"
		"\n"
		"  --listen SPEC       vsock:PORT (default vsock:%u) or unix:PATH\n"
		"  --token T           the access token every request must carry\n"
		"  --token-file F      read the access token from a file\n"
		"  --sandbox-id ID     the sandbox id (logs, health)\n"
		"  --hostname NAME     the hostname (set only as the guest's init)\n"
		"  --pid1              act as the guest's init even if not PID 1\n"
		"  --no-pid1           act as a normal process even as PID 1\n"
		"  --allow-clock       let reidentify set the clock outside a guest\n"
		"  --log-level LEVEL   error, warn, info or debug\n"
		"  --help, --version\n"
		"\n"
		"As the guest's init (PID 1 unless --no-pid1) it mounts /proc, /sys,\n"
		"/dev, /dev/pts, /tmp and /run, sets the hostname, reads ember.token=,\n"
		"ember.sandbox_id=, ember.hostname= and ember.port= from the kernel\n"
		"command line, and prints \"ember-guest: ready\" once listening.\n",
		EMBER_AGENT_VSOCK_PORT);
}

static void read_token_file(const char *path)
{
	char *data;
	size_t len;
	int r = ember_read_file(path, EMBER_AGENT_TOKEN_MAX + 2, &data, &len);

	if (r < 0 && getpid() == 1) {
		log_error("cannot read token file %s: %s", path, strerror(-r));
		return;
	}
	if (r < 0)
		ember_die(EMBER_EXIT_USAGE, "cannot read token file %s: %s",
			  path, strerror(-r));
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		data[--len] = '\0';
	if (len == 0 || len > EMBER_AGENT_TOKEN_MAX)
		ember_die(EMBER_EXIT_USAGE, "token file %s: bad token", path);
	snprintf(agent.token, sizeof(agent.token), "%s", data);
	free(data);
}

int main(int argc, char **argv)
{
	enum { O_TOKEN_FILE = 256, O_SANDBOX, O_HOST, O_PID1, O_NO_PID1,
	       O_CLOCK, O_LEVEL, O_VERSION };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "token", required_argument, NULL, 't' },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		{ "sandbox-id", required_argument, NULL, O_SANDBOX },
		{ "hostname", required_argument, NULL, O_HOST },
		{ "pid1", no_argument, NULL, O_PID1 },
		{ "no-pid1", no_argument, NULL, O_NO_PID1 },
		{ "allow-clock", no_argument, NULL, O_CLOCK },
		{ "log-level", required_argument, NULL, O_LEVEL },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, O_VERSION },
		{ 0 },
	};
	const char *listen_spec = NULL, *token = NULL, *token_file = NULL;
	const char *sandbox_id = NULL, *hostname = NULL;
	char spec[64];
	int pid1_mode = -1, opt, r;
	uint32_t port = EMBER_AGENT_VSOCK_PORT;
	bool logged = false;

	ember_log_init("ember-init", NULL);
	agent.start_ns = ember_now_ns();
	while ((opt = getopt_long(argc, argv, "l:t:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'l': listen_spec = optarg; break;
		case 't': token = optarg; break;
		case O_TOKEN_FILE: token_file = optarg; break;
		case O_SANDBOX: sandbox_id = optarg; break;
		case O_HOST: hostname = optarg; break;
		case O_PID1: pid1_mode = 1; break;
		case O_NO_PID1: pid1_mode = 0; break;
		case O_CLOCK: agent.allow_clock = true; break;
		case O_LEVEL: {
			enum ember_log_level l;
			if (ember_log_parse_level(optarg, &l) < 0)
				ember_die(EMBER_EXIT_USAGE,
					  "bad --log-level %s", optarg);
			ember_log_set_level(l);
			break;
		}
		case 'h': usage(stdout); return EMBER_EXIT_OK;
		case O_VERSION:
			printf("ember-init %s (protocol %d)\n", EMBER_VERSION,
			       EMBER_AGENT_PROTO_VERSION);
			return EMBER_EXIT_OK;
		default:
			/* The guest's init must not exit: that panics it. */
			if (getpid() == 1) {
				log_warn("ignoring a bad option");
				break;
			}
			usage(stderr);
			return EMBER_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		/* The kernel passes unknown command-line words to init. */
		if (getpid() != 1) {
			usage(stderr);
			return EMBER_EXIT_USAGE;
		}
	}
	if (getpid() != 1 && pid1_mode < 0 && !listen_spec) {
		fprintf(stderr, "ember-init: not PID 1: this is the guest's init; "
				"to run it as a normal process give --listen "
				"(and --token), or --no-pid1\n");
		return EMBER_EXIT_USAGE;
	}
	agent.guest = pid1_mode >= 0 ? pid1_mode == 1 : getpid() == 1;
	ensure_std_fds();
	if (agent.guest) {
		system_guest_setup();
		system_read_cmdline(agent.token, sizeof(agent.token),
				    agent.sandbox_id, sizeof(agent.sandbox_id),
				    agent.hostname, sizeof(agent.hostname),
				    &port);
	} else if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
		log_warn("cannot become a subreaper: %s", strerror(errno));
	}
	if (token && strlen(token) > EMBER_AGENT_TOKEN_MAX)
		ember_die(EMBER_EXIT_USAGE, "--token is too long");
	if (token)
		snprintf(agent.token, sizeof(agent.token), "%s", token);
	else if (token_file)
		read_token_file(token_file);
	if (sandbox_id)
		snprintf(agent.sandbox_id, sizeof(agent.sandbox_id), "%s",
			 sandbox_id);
	if (hostname)
		snprintf(agent.hostname, sizeof(agent.hostname), "%s", hostname);
	if (!agent.hostname[0])
		snprintf(agent.hostname, sizeof(agent.hostname), "%.*s",
			 EMBER_AGENT_HOSTNAME_MAX,
			 agent.sandbox_id[0] ? agent.sandbox_id : "ember");
	ember_log_set_id(agent.sandbox_id);
	if (!agent.token[0])
		log_warn("no access token given: every request will be refused");
	if (agent.guest && system_set_hostname(agent.hostname) < 0)
		log_warn("cannot set the hostname to %s", agent.hostname);
	r = setup_signals();
	if (r < 0)
		ember_die(EMBER_EXIT_FAILURE, "signals: %s", strerror(-r));
	if (!listen_spec) {
		snprintf(spec, sizeof(spec), "vsock:%u", port);
		listen_spec = spec;
	}
	for (;;) {
		listen_fd = listen_on(listen_spec, port);
		if (listen_fd >= 0)
			break;
		if (listen_fd == -EINVAL || listen_fd == -ENAMETOOLONG)
			ember_die(EMBER_EXIT_USAGE, "bad --listen %s",
				  listen_spec);
		if (!agent.guest)
			ember_die(EMBER_EXIT_FAILURE, "cannot listen on %s: %s",
				  listen_spec, strerror(-listen_fd));
		/* The guest's init must not exit: wait for the device. */
		if (!logged)
			log_error("cannot listen on %s: %s; retrying",
				  listen_spec, strerror(-listen_fd));
		logged = true;
		sleep(1);
	}
	log_info("listening on %s (protocol %d)", listen_spec,
		 EMBER_AGENT_PROTO_VERSION);
	if (agent.guest)
		system_boot_signal();
	say_ready();
	run_loop();
	shutdown_agent();
	ember_close(&listen_fd);
	if (strncmp(listen_spec, "unix:", 5) == 0)
		unlink(listen_spec + 5);
	log_info("stopped");
	return EMBER_EXIT_OK;
}
