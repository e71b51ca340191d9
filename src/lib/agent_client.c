// SPDX-License-Identifier: Apache-2.0
/*
 * Host-side client of the guest agent protocol (see agent_proto.c for the
 * frame layout and docs/guest-agent.md for the requests).
 *
 * The socket is non-blocking; every wait is a poll() with a deadline.
 * Outgoing bytes go through one buffer (a->out) so that frames are never
 * interleaved, even when an exec callback sends a signal request while a
 * stdin frame is half written.
 */
#include <ember/agent_client.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 30000
#define EXEC_DEFAULT_TIMEOUT_MS (3600u * 1000)

struct ember_agent {
	int fd;
	int timeout_ms;
	uint32_t next_id;
	uint32_t exec_id; /* the exec running now, for ember_agent_exec_signal */
	char token[EMBER_AGENT_TOKEN_MAX + 1];
	char err[512];
	struct ember_agent_reader rd;
	uint8_t *out; /* bytes not yet written to fd */
	size_t out_len, out_off, out_cap;
};

static void set_err(struct ember_agent *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_err(struct ember_agent *a, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(a->err, sizeof(a->err), fmt, ap);
	va_end(ap);
}

static int deadline_left(uint64_t deadline_ns)
{
	uint64_t now = ember_now_ns();

	if (now >= deadline_ns)
		return 0;
	return (int)EMBER_MIN((deadline_ns - now + 999999) / 1000000,
			      (uint64_t)INT32_MAX);
}

static uint64_t deadline_in(int ms)
{
	return ember_now_ns() + (uint64_t)ms * 1000000ull;
}

/* Waits for events on fd until the deadline. 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int left = deadline_left(deadline_ns), r;

		if (left == 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r > 0)
			return 0;
	}
}

static int out_append(struct ember_agent *a, uint8_t type, uint32_t id,
		      const void *payload, size_t len)
{
	struct ember_agent_hdr h = {
		.len = (uint32_t)len,
		.type = type,
		.version = EMBER_AGENT_PROTO_VERSION,
		.id = id,
	};
	size_t need;

	if (len > EMBER_AGENT_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (a->out_off == a->out_len)
		a->out_off = a->out_len = 0;
	need = a->out_len + EMBER_AGENT_HDR_SIZE + len;
	if (need > a->out_cap) {
		size_t cap = EMBER_MAX(need, a->out_cap * 2);
		uint8_t *n = realloc(a->out, cap);
		if (!n)
			return -ENOMEM;
		a->out = n;
		a->out_cap = cap;
	}
	ember_agent_hdr_encode(&h, a->out + a->out_len);
	if (len)
		memcpy(a->out + a->out_len + EMBER_AGENT_HDR_SIZE, payload, len);
	a->out_len = need;
	return 0;
}

/* Writes what the socket takes now. 0 (maybe with bytes left) or -errno. */
static int out_try_flush(struct ember_agent *a)
{
	while (a->out_off < a->out_len) {
		ssize_t w = send(a->fd, a->out + a->out_off,
				 a->out_len - a->out_off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (w < 0)
			return -errno;
		a->out_off += (size_t)w;
	}
	a->out_off = a->out_len = 0;
	return 0;
}

static int out_flush(struct ember_agent *a, uint64_t deadline_ns)
{
	for (;;) {
		int r = out_try_flush(a);

		if (r < 0 || a->out_off == a->out_len)
			return r;
		r = wait_fd(a->fd, POLLOUT, deadline_ns);
		if (r < 0)
			return r;
	}
}

int ember_agent_send_frame(struct ember_agent *a, uint8_t type, uint32_t id,
			   const void *payload, size_t len)
{
	int r = out_append(a, type, id, payload, len);

	if (r < 0)
		return r;
	return out_flush(a, deadline_in(a->timeout_ms));
}

int ember_agent_recv_frame(struct ember_agent *a, struct ember_agent_hdr *h,
			   const uint8_t **payload, int timeout_ms)
{
	uint64_t deadline = deadline_in(timeout_ms);

	for (;;) {
		int r = ember_agent_reader_next(&a->rd, h, payload);
		ssize_t n;

		if (r != 0)
			return r > 0 ? 0 : r;
		r = wait_fd(a->fd, POLLIN, deadline);
		if (r < 0)
			return r;
		n = ember_agent_reader_fill(&a->rd, a->fd);
		if (n == -EAGAIN)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
	}
}

int ember_agent_fd(const struct ember_agent *a)
{
	return a->fd;
}

uint32_t ember_agent_next_id(struct ember_agent *a)
{
	if (a->next_id == 0)
		a->next_id = 1;
	return a->next_id++;
}

const char *ember_agent_last_error(const struct ember_agent *a)
{
	return a->err;
}

int ember_agent_set_token(struct ember_agent *a, const char *token)
{
	if (!token || strlen(token) > EMBER_AGENT_TOKEN_MAX)
		return -EINVAL;
	snprintf(a->token, sizeof(a->token), "%s", token);
	return 0;
}

void ember_agent_set_timeout(struct ember_agent *a, int timeout_ms)
{
	a->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
}

static int agent_new(int fd, const char *token, int timeout_ms,
		     struct ember_agent **out)
{
	struct ember_agent *a = calloc(1, sizeof(*a));

	if (!a)
		return -ENOMEM;
	a->fd = fd;
	a->next_id = 1;
	ember_agent_set_timeout(a, timeout_ms);
	ember_agent_reader_init(&a->rd, EMBER_AGENT_MAX_PAYLOAD);
	if (ember_agent_set_token(a, token ? token : "") < 0) {
		free(a);
		return -EINVAL;
	}
	*out = a;
	return 0;
}

void ember_agent_close(struct ember_agent *a)
{
	if (!a)
		return;
	ember_close(&a->fd);
	ember_agent_reader_free(&a->rd);
	free(a->out);
	free(a);
}

/* Connects a non-blocking Unix stream socket within the deadline. */
static int unix_connect(const char *path, uint64_t deadline_ns)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd, r;
	socklen_t len = sizeof(r);

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
		return fd;
	if (errno != EINPROGRESS && errno != EAGAIN) {
		r = -errno;
		close(fd);
		return r;
	}
	r = wait_fd(fd, POLLOUT, deadline_ns);
	if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &r, &len) == 0)
		r = -r;
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

int ember_agent_connect_unix(const char *path, const char *token,
			     int timeout_ms, struct ember_agent **out)
{
	int ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
	int fd = unix_connect(path, deadline_in(ms)), r;

	if (fd < 0)
		return fd;
	r = agent_new(fd, token, ms, out);
	if (r < 0)
		close(fd);
	return r;
}

int ember_agent_connect_vsock(const char *uds_path, uint32_t port,
			      const char *token, int timeout_ms,
			      struct ember_agent **out)
{
	int ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
	uint64_t deadline = deadline_in(ms);
	char line[64];
	size_t n = 0;
	int fd = unix_connect(uds_path, deadline), r;

	if (fd < 0)
		return fd;
	snprintf(line, sizeof(line), "CONNECT %u\n", port);
	for (size_t off = 0, len = strlen(line); off < len;) {
		ssize_t w = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			r = wait_fd(fd, POLLOUT, deadline);
			if (r < 0)
				goto fail;
			continue;
		}
		if (w < 0) {
			r = -errno;
			goto fail;
		}
		off += (size_t)w;
	}
	/* One byte at a time: the agent's first frame may follow the line. */
	while (n < sizeof(line) - 1) {
		ssize_t got = read(fd, line + n, 1);
		if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
			r = wait_fd(fd, POLLIN, deadline);
			if (r < 0)
				goto fail;
			continue;
		}
		if (got <= 0) {
			r = got < 0 ? -errno : -ECONNREFUSED;
			goto fail;
		}
		if (line[n++] == '\n')
			break;
	}
	line[n] = '\0';
	if (strncmp(line, "OK ", 3) != 0) {
		r = -ECONNREFUSED;
		goto fail;
	}
	r = agent_new(fd, token, ms, out);
	if (r < 0)
		goto fail;
	return 0;
fail:
	close(fd);
	return r;
}

/* Sends {"op": op, "token": ..., fields...} as stream id. Steals fields. */
static int send_request(struct ember_agent *a, const char *op, json_t *fields,
			uint32_t id, bool flush)
{
	json_t *req = fields ? fields : json_object();
	char *text;
	int r;

	if (!req)
		return -ENOMEM;
	json_object_set_new(req, "op", json_string(op));
	json_object_set_new(req, "token", json_string(a->token));
	text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!text)
		return -ENOMEM;
	r = out_append(a, EMBER_AGENT_REQUEST, id, text, strlen(text));
	free(text);
	if (r == 0 && flush)
		r = out_flush(a, deadline_in(a->timeout_ms));
	return r;
}

static json_t *parse_payload(const uint8_t *p, size_t len)
{
	return json_loadb((const char *)p, len, 0, NULL);
}

/* Turns an ERROR payload into -errno and a message in a->err. */
static int take_error(struct ember_agent *a, const uint8_t *p, size_t len)
{
	json_t *j = parse_payload(p, len);
	int e = EPROTO;

	if (j) {
		json_int_t v = json_integer_value(json_object_get(j, "errno"));
		const char *msg = json_string_value(json_object_get(j, "error"));
		if (v > 0 && v < 4096)
			e = (int)v;
		set_err(a, "%s", msg ? msg : "agent error");
		json_decref(j);
	} else {
		set_err(a, "agent error (unreadable answer)");
	}
	return -e;
}

/* Waits for the RESPONSE or ERROR of stream id; other frames are dropped.
 * *resp (optional) gets the parsed RESPONSE. */
static int wait_final(struct ember_agent *a, uint32_t id, json_t **resp)
{
	for (;;) {
		struct ember_agent_hdr h;
		const uint8_t *p;
		int r = ember_agent_recv_frame(a, &h, &p, a->timeout_ms);

		if (r < 0) {
			set_err(a, "no answer from the agent: %s", strerror(-r));
			return r;
		}
		if (h.id != id)
			continue;
		if (h.type == EMBER_AGENT_ERROR)
			return take_error(a, p, h.len);
		if (h.type != EMBER_AGENT_RESPONSE)
			continue;
		if (resp) {
			*resp = parse_payload(p, h.len);
			if (!*resp) {
				set_err(a, "unreadable answer");
				return -EPROTO;
			}
		}
		return 0;
	}
}

/* One request, one answer. */
static int call(struct ember_agent *a, const char *op, json_t *fields,
		json_t **resp)
{
	uint32_t id = ember_agent_next_id(a);
	int r = send_request(a, op, fields, id, true);

	if (r < 0) {
		set_err(a, "cannot send to the agent: %s", strerror(-r));
		return r;
	}
	return wait_final(a, id, resp);
}

static void copy_str(char *dst, size_t size, json_t *v)
{
	const char *s = json_string_value(v);

	snprintf(dst, size, "%s", s ? s : "");
}

int ember_agent_health(struct ember_agent *a, struct ember_agent_health *out)
{
	json_t *resp;
	int r = call(a, "health", NULL, &resp);

	if (r < 0)
		return r;
	memset(out, 0, sizeof(*out));
	copy_str(out->version, sizeof(out->version),
		 json_object_get(resp, "version"));
	copy_str(out->sandbox_id, sizeof(out->sandbox_id),
		 json_object_get(resp, "sandbox_id"));
	copy_str(out->hostname, sizeof(out->hostname),
		 json_object_get(resp, "hostname"));
	out->proto = (unsigned)json_integer_value(json_object_get(resp, "proto"));
	out->uptime_ms =
		(uint64_t)json_integer_value(json_object_get(resp, "uptime_ms"));
	out->pid1 = json_is_true(json_object_get(resp, "pid1"));
	out->execs = (unsigned)json_integer_value(json_object_get(resp, "execs"));
	json_decref(resp);
	return 0;
}

void ember_agent_exec_opts_init(struct ember_agent_exec_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->stdin_fd = -1;
}

static json_t *exec_request(const struct ember_agent_exec_opts *o,
			    uint32_t timeout_ms)
{
	json_t *req = json_object(), *argv = json_array(), *env = json_object();

	for (size_t i = 0; o->argv[i]; i++)
		json_array_append_new(argv, json_string(o->argv[i]));
	for (size_t i = 0; o->env && o->env[i]; i++) {
		const char *eq = strchr(o->env[i], '=');
		char key[256];

		if (!eq || eq == o->env[i] ||
		    (size_t)(eq - o->env[i]) >= sizeof(key))
			continue;
		memcpy(key, o->env[i], (size_t)(eq - o->env[i]));
		key[eq - o->env[i]] = '\0';
		json_object_set_new(env, key, json_string(eq + 1));
	}
	json_object_set_new(req, "argv", argv);
	json_object_set_new(req, "env", env);
	if (o->cwd)
		json_object_set_new(req, "cwd", json_string(o->cwd));
	if (o->user)
		json_object_set_new(req, "user", json_string(o->user));
	json_object_set_new(req, "stdin", json_boolean(o->stdin_fd >= 0));
	json_object_set_new(req, "timeout_ms", json_integer(timeout_ms));
	return req;
}

/* Handles one frame of a running exec. Returns 1 when the exec ended. */
static int exec_frame(struct ember_agent *a, const struct ember_agent_hdr *h,
		      const uint8_t *p, const struct ember_agent_exec_opts *o,
		      struct ember_agent_exec_result *res, int *cb_err)
{
	ember_agent_output_fn fn = NULL;
	json_t *j;

	if (h->id != a->exec_id)
		return 0; /* answers to signal requests */
	switch (h->type) {
	case EMBER_AGENT_STARTED:
		j = parse_payload(p, h->len);
		res->pid = j ? (int)json_integer_value(json_object_get(j, "pid"))
			     : 0;
		json_decref(j);
		if (o->on_started)
			o->on_started(o->ctx, a, res->pid);
		return 0;
	case EMBER_AGENT_STDOUT:
		fn = o->on_stdout;
		break;
	case EMBER_AGENT_STDERR:
		fn = o->on_stderr;
		break;
	case EMBER_AGENT_ERROR:
		*cb_err = take_error(a, p, h->len);
		return 1;
	case EMBER_AGENT_RESPONSE:
		j = parse_payload(p, h->len);
		if (!j) {
			set_err(a, "unreadable exec result");
			*cb_err = -EPROTO;
			return 1;
		}
		res->exit_code = (int)json_integer_value(
			json_object_get(j, "exit_code"));
		if (json_is_null(json_object_get(j, "exit_code")))
			res->exit_code = -1;
		res->signal = (int)json_integer_value(json_object_get(j, "signal"));
		res->timed_out = json_is_true(json_object_get(j, "timed_out"));
		json_decref(j);
		return 1;
	default:
		return 0;
	}
	if (fn && *cb_err == 0) {
		int r = fn(o->ctx, p, h->len);
		if (r < 0) {
			*cb_err = r;
			set_err(a, "output callback stopped the command");
			ember_agent_exec_signal(a, SIGKILL);
		}
	}
	return 0;
}

int ember_agent_exec(struct ember_agent *a,
		     const struct ember_agent_exec_opts *o,
		     struct ember_agent_exec_result *res)
{
	uint32_t timeout_ms = o->timeout_ms ? o->timeout_ms
					    : EXEC_DEFAULT_TIMEOUT_MS;
	uint64_t deadline = deadline_in((int)EMBER_MIN(
		(uint64_t)timeout_ms + (uint64_t)a->timeout_ms,
		(uint64_t)INT32_MAX));
	bool stdin_open = o->stdin_fd >= 0, started = false;
	int r, cb_err = 0, done = 0;
	uint8_t *chunk = NULL;

	if (!o->argv || !o->argv[0])
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	a->exec_id = ember_agent_next_id(a);
	r = send_request(a, "exec", exec_request(o, timeout_ms), a->exec_id,
			 false);
	if (r < 0)
		goto out;
	if (stdin_open) {
		chunk = malloc(EMBER_AGENT_CHUNK);
		if (!chunk) {
			r = -ENOMEM;
			goto out;
		}
	}
	while (!done) {
		struct pollfd p[2] = {
			{ .fd = a->fd, .events = POLLIN },
			{ .fd = -1, .events = POLLIN },
		};
		struct ember_agent_hdr h;
		const uint8_t *payload;
		int left = deadline_left(deadline);

		if (a->out_off < a->out_len)
			p[0].events |= POLLOUT;
		else if (stdin_open && started)
			p[1].fd = o->stdin_fd;
		if (left == 0) {
			r = -ETIMEDOUT;
			set_err(a, "exec: no result from the agent in time");
			goto out;
		}
		r = poll(p, 2, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			r = -errno;
			goto out;
		}
		if (p[0].revents & POLLOUT) {
			r = out_try_flush(a);
			if (r < 0)
				goto out;
		}
		if (p[1].revents) {
			ssize_t n = read(o->stdin_fd, chunk, EMBER_AGENT_CHUNK);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				stdin_open = false;
				r = out_append(a, EMBER_AGENT_EOF_IN,
					       a->exec_id, NULL, 0);
			} else {
				r = out_append(a, EMBER_AGENT_DATA_IN,
					       a->exec_id, chunk, (size_t)n);
			}
			if (r < 0)
				goto out;
			out_try_flush(a);
		}
		if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		{
			ssize_t n = ember_agent_reader_fill(&a->rd, a->fd);
			if (n == 0) {
				r = -ECONNRESET;
				set_err(a, "exec: the agent closed the connection");
				goto out;
			}
			if (n < 0 && n != -EAGAIN) {
				r = (int)n;
				goto out;
			}
		}
		while (!done && (r = ember_agent_reader_next(&a->rd, &h,
							     &payload)) > 0) {
			if (h.id == a->exec_id && h.type == EMBER_AGENT_STARTED)
				started = true;
			done = exec_frame(a, &h, payload, o, res, &cb_err);
		}
		if (r < 0)
			goto out;
	}
	r = cb_err;
out:
	free(chunk);
	a->exec_id = 0;
	return r;
}

int ember_agent_exec_signal(struct ember_agent *a, int sig)
{
	json_t *req = json_object();

	if (!a->exec_id)
		return -ESRCH;
	json_object_set_new(req, "target", json_integer(a->exec_id));
	json_object_set_new(req, "signal", json_integer(sig));
	/* Queued; the exec loop writes it out. */
	return send_request(a, "signal", req, ember_agent_next_id(a), false);
}

int ember_agent_signal_pid(struct ember_agent *a, int pid, int sig)
{
	json_t *req = json_object();

	json_object_set_new(req, "pid", json_integer(pid));
	json_object_set_new(req, "signal", json_integer(sig));
	return call(a, "signal", req, NULL);
}

/* Returns the agent's ERROR for id if one is already waiting, else 0. */
static int early_error(struct ember_agent *a, uint32_t id)
{
	struct ember_agent_hdr h;
	const uint8_t *p;
	struct pollfd pf = { .fd = a->fd, .events = POLLIN };

	if (poll(&pf, 1, 0) <= 0)
		return 0;
	if (ember_agent_reader_fill(&a->rd, a->fd) == 0)
		return -ECONNRESET;
	while (ember_agent_reader_next(&a->rd, &h, &p) > 0) {
		if (h.id == id && h.type == EMBER_AGENT_ERROR)
			return take_error(a, p, h.len);
	}
	return 0;
}

int ember_agent_write_file(struct ember_agent *a, const char *path, int fd,
			   unsigned mode, uint64_t *size)
{
	uint32_t id = ember_agent_next_id(a);
	json_t *req = json_object(), *resp = NULL;
	uint8_t *chunk = malloc(EMBER_AGENT_CHUNK);
	int r;

	if (!chunk) {
		json_decref(req);
		return -ENOMEM;
	}
	json_object_set_new(req, "path", json_string(path));
	json_object_set_new(req, "mode", json_integer(mode));
	r = send_request(a, "write", req, id, true);
	while (r == 0) {
		ssize_t n = read(fd, chunk, EMBER_AGENT_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			set_err(a, "write: reading the source: %s", strerror(-r));
			free(chunk);
			return r; /* the agent drops the stream on close */
		}
		if (n == 0)
			break;
		r = ember_agent_send_frame(a, EMBER_AGENT_DATA_IN, id, chunk,
					   (size_t)n);
		if (r == 0)
			r = early_error(a, id);
	}
	free(chunk);
	if (r < 0)
		return r;
	r = ember_agent_send_frame(a, EMBER_AGENT_EOF_IN, id, NULL, 0);
	if (r == 0)
		r = wait_final(a, id, &resp);
	if (r == 0 && size)
		*size = (uint64_t)json_integer_value(json_object_get(resp, "size"));
	json_decref(resp);
	return r;
}

int ember_agent_read_file(struct ember_agent *a, const char *path, int fd,
			  uint64_t *size)
{
	uint32_t id = ember_agent_next_id(a);
	json_t *req = json_object();
	uint64_t total = 0;
	int r;

	json_object_set_new(req, "path", json_string(path));
	r = send_request(a, "read", req, id, true);
	while (r == 0) {
		struct ember_agent_hdr h;
		const uint8_t *p;

		r = ember_agent_recv_frame(a, &h, &p, a->timeout_ms);
		if (r < 0) {
			set_err(a, "read: no data from the agent: %s",
				strerror(-r));
			break;
		}
		if (h.id != id)
			continue;
		if (h.type == EMBER_AGENT_ERROR)
			return take_error(a, p, h.len);
		if (h.type == EMBER_AGENT_RESPONSE)
			break;
		if (h.type != EMBER_AGENT_DATA_OUT)
			continue;
		r = ember_write_full(fd, p, h.len);
		if (r < 0) {
			/* The rest still arrives; drop it with the stream. */
			set_err(a, "read: writing the output: %s", strerror(-r));
			int e = wait_final(a, id, NULL);
			(void)e;
			return r;
		}
		total += h.len;
	}
	if (r == 0 && size)
		*size = total;
	return r;
}

static void fill_stat(json_t *j, struct ember_agent_stat *st)
{
	const char *type = json_string_value(json_object_get(j, "type"));

	memset(st, 0, sizeof(*st));
	st->type = type ? type[0] : 'o';
	if (type && strcmp(type, "symlink") == 0)
		st->type = 'l';
	st->mode = (unsigned)json_integer_value(json_object_get(j, "mode"));
	st->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
	st->uid = (unsigned)json_integer_value(json_object_get(j, "uid"));
	st->gid = (unsigned)json_integer_value(json_object_get(j, "gid"));
	st->mtime_ns = json_integer_value(json_object_get(j, "mtime_ns"));
}

int ember_agent_stat(struct ember_agent *a, const char *path,
		     struct ember_agent_stat *st)
{
	json_t *req = json_object(), *resp;
	int r;

	json_object_set_new(req, "path", json_string(path));
	r = call(a, "stat", req, &resp);
	if (r < 0)
		return r;
	fill_stat(resp, st);
	json_decref(resp);
	return 0;
}

int ember_agent_list(struct ember_agent *a, const char *path,
		     struct ember_agent_dirent **entries, size_t *count,
		     bool *truncated)
{
	json_t *req = json_object(), *resp, *arr, *e;
	struct ember_agent_dirent *out;
	size_t i;
	int r;

	json_object_set_new(req, "path", json_string(path));
	r = call(a, "list", req, &resp);
	if (r < 0)
		return r;
	arr = json_object_get(resp, "entries");
	out = calloc(json_array_size(arr) + 1, sizeof(*out));
	if (!out) {
		json_decref(resp);
		return -ENOMEM;
	}
	json_array_foreach(arr, i, e) {
		copy_str(out[i].name, sizeof(out[i].name),
			 json_object_get(e, "name"));
		fill_stat(e, &out[i].st);
	}
	*entries = out;
	*count = json_array_size(arr);
	if (truncated)
		*truncated = json_is_true(json_object_get(resp, "truncated"));
	json_decref(resp);
	return 0;
}

int ember_agent_remove(struct ember_agent *a, const char *path,
		       bool recursive)
{
	json_t *req = json_object();

	json_object_set_new(req, "path", json_string(path));
	json_object_set_new(req, "recursive", json_boolean(recursive));
	return call(a, "remove", req, NULL);
}

int ember_agent_reidentify(struct ember_agent *a,
			   const struct ember_agent_identity *id)
{
	json_t *req = json_object();
	int r;

	if (id->realtime_ns)
		json_object_set_new(req, "realtime_ns",
				    json_integer((json_int_t)id->realtime_ns));
	if (id->entropy_len) {
		char *hex = malloc(id->entropy_len * 2 + 1);
		if (!hex) {
			json_decref(req);
			return -ENOMEM;
		}
		ember_agent_hex_encode(id->entropy, id->entropy_len, hex);
		json_object_set_new(req, "entropy", json_string(hex));
		free(hex);
	}
	if (id->hostname)
		json_object_set_new(req, "hostname", json_string(id->hostname));
	if (id->sandbox_id)
		json_object_set_new(req, "sandbox_id",
				    json_string(id->sandbox_id));
	if (id->new_token)
		json_object_set_new(req, "new_token",
				    json_string(id->new_token));
	r = call(a, "reidentify", req, NULL);
	if (r == 0 && id->new_token)
		r = ember_agent_set_token(a, id->new_token);
	return r;
}
