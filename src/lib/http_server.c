// SPDX-License-Identifier: Apache-2.0
/*
 * HTTP/1.1 server glue on libevent's evhttp over a Unix socket (include/
 * ember/http.h). One thread of the server's own runs an event loop that
 * handles every connection, so requests reach the handler one at a time.
 *
 * evhttp reads a whole request (headers and body, at most
 * EMBER_HTTP_MAX_BODY bytes of body and EMBER_HTTP_MAX_HEADERS of headers)
 * before it calls on_request, which runs the handler and queues the
 * response. What evhttp refuses itself (a body or headers too large, a
 * request line that is not HTTP, a method it does not know) it answers with
 * its own status (413, 400, 501) and a short HTML page, and closes the
 * connection. An idle connection is closed after 60 s.
 *
 * Why libevent and not libmicrohttpd, which the agent and emberd use:
 * Debian's libmicrohttpd is built with HTTPS and pulls in GnuTLS, nettle,
 * gmp, p11-kit and more, whose constructors and pages cost ember-vmm about
 * 2.4 MB of resident memory beside every guest; libevent's evhttp (core and
 * extra) costs about 0.35 MB, which keeps the VMM's own memory under its
 * 3 MiB target (docs/vmm-machine.md, "Boot time and memory").
 */
#include <ember/http.h>

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct ember_http_server {
	struct event_base *base;
	struct evhttp *http;
	struct event *stop_ev;
	int stop_fd; /* eventfd: written by ember_http_server_stop */
	pthread_t thread;
	ember_http_handler handler;
	void *ctx;
	atomic_int in_flight; /* requests handled and not yet sent */
};

static int fill_unix_addr(const char *path, struct sockaddr_un *addr)
{
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	strcpy(addr->sun_path, path);
	return 0;
}

/* Removes path if it is a socket nobody listens on. */
static int remove_stale_socket(const struct sockaddr_un *addr)
{
	struct stat st;
	int fd, rc;

	if (lstat(addr->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	rc = connect(fd, (const struct sockaddr *)addr, sizeof(*addr));
	close(fd);
	if (rc == 0)
		return -EADDRINUSE;
	if (unlink(addr->sun_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int ember_http_listen_unix(const char *path)
{
	struct sockaddr_un addr;
	int fd, rc;

	rc = fill_unix_addr(path, &addr);
	if (rc < 0)
		return rc;
	rc = remove_stale_socket(&addr);
	if (rc < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		goto err_close;
	if (listen(fd, 64) < 0)
		goto err_unlink;
	return fd;

err_unlink:
	rc = -errno;
	unlink(path);
	close(fd);
	return rc;
err_close:
	rc = -errno;
	close(fd);
	return rc;
}

void ember_http_reply_json(struct ember_http_response *resp, unsigned status,
			   json_t *body)
{
	free(resp->body);
	resp->status = status;
	resp->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
	resp->content_type = "application/json";
	json_decref(body);
}

void ember_http_reply_empty(struct ember_http_response *resp, unsigned status)
{
	free(resp->body);
	resp->status = status;
	resp->body = NULL;
}

void ember_http_reply_error(struct ember_http_response *resp, unsigned status,
			    const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ember_http_reply_json(resp, status,
			      json_pack("{s:s}", "fault_message", msg));
}

int ember_http_body_object(const struct ember_http_request *req, json_t **out,
			   char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *obj;

	if (req->body_len == 0) {
		snprintf(err, errlen, "The request needs a JSON body.");
		return -EINVAL;
	}
	obj =
	    json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj) {
		snprintf(err, errlen,
			 "Malformed JSON body at line %d, column %d: %s",
			 jerr.line, jerr.column, jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(obj)) {
		json_decref(obj);
		snprintf(err, errlen,
			 "The request body must be a JSON object.");
		return -EINVAL;
	}
	*out = obj;
	return 0;
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	}
	return "?";
}

/*
 * A request counts for ember_http_server_drain from its handler until its
 * response has been written (evhttp's on-complete callback) or its
 * connection is gone (the close callback; evhttp then frees the request
 * without the other). evhttp reads a connection's next request only after
 * the last response went out, so one tracker per connection is current.
 */
struct tracker {
	struct ember_http_server *srv;
	struct evhttp_connection *evcon;
};

static void on_sent(struct evhttp_request *req, void *arg)
{
	struct tracker *t = arg;

	(void)req;
	evhttp_connection_set_closecb(t->evcon, NULL, NULL);
	atomic_fetch_sub(&t->srv->in_flight, 1);
	free(t);
}

static void on_closed(struct evhttp_connection *evcon, void *arg)
{
	struct tracker *t = arg;

	(void)evcon;
	atomic_fetch_sub(&t->srv->in_flight, 1);
	free(t);
}

static void track(struct ember_http_server *srv, struct evhttp_request *r)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(r);
	struct tracker *t = calloc(1, sizeof(*t));

	if (!t || !evcon) { /* not counted: drain just waits less */
		free(t);
		return;
	}
	t->srv = srv;
	t->evcon = evcon;
	atomic_fetch_add(&srv->in_flight, 1);
	evhttp_request_set_on_complete_cb(r, on_sent, t);
	evhttp_connection_set_closecb(evcon, on_closed, t);
}

static void send_response(struct evhttp_request *r,
			  struct ember_http_response *resp)
{
	struct evkeyvalq *hdrs = evhttp_request_get_output_headers(r);
	struct evbuffer *body = NULL;
	size_t len = resp->body ? strlen(resp->body) : 0;

	/* A response to HEAD has no body (evhttp would send it anyway,
	 * without a length, and spoil the connection's next response). */
	if (evhttp_request_get_command(r) == EVHTTP_REQ_HEAD)
		len = 0;

	if (len) {
		body = evbuffer_new();
		if (body && evbuffer_add(body, resp->body, len) < 0) {
			evbuffer_free(body);
			body = NULL;
		}
		if (!body) {
			resp->status = 500;
		} else if (resp->content_type) {
			evhttp_add_header(hdrs, "Content-Type",
					  resp->content_type);
		}
	}
	if (resp->allow)
		evhttp_add_header(hdrs, "Allow", resp->allow);
	/* A NULL reason: evhttp uses the standard phrase of the status. */
	evhttp_send_reply(r, (int)resp->status, NULL, body);
	if (body)
		evbuffer_free(body);
	free(resp->body);
	resp->body = NULL;
}

static void on_request(struct evhttp_request *r, void *arg)
{
	struct ember_http_server *srv = arg;
	struct ember_http_response resp = {.status = 200};
	struct ember_http_request req;
	struct evbuffer *in = evhttp_request_get_input_buffer(r);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r);
	const char *raw = uri ? evhttp_uri_get_path(uri) : NULL;
	size_t body_len = in ? evbuffer_get_length(in) : 0;
	char *path, *body = NULL;
	size_t path_len = 0;

	track(srv, r);
	/* The path as the client meant it: percent escapes decoded, '+'
	 * kept, no query. */
	path = evhttp_uridecode(raw && raw[0] ? raw : "/", 0, &path_len);
	if (body_len) {
		body = malloc(body_len + 1);
		if (body) {
			evbuffer_remove(in, body, body_len);
			body[body_len] = '\0';
		}
	}
	if (!path || (body_len && !body)) {
		ember_http_reply_error(&resp, 500, "Out of memory.");
	} else if (strlen(path) != path_len) {
		ember_http_reply_error(&resp, 400,
				       "Malformed path: it holds a NUL byte.");
	} else {
		req.method = method_name(evhttp_request_get_command(r));
		req.path = path;
		req.body = body ? body : "";
		req.body_len = body ? body_len : 0;
		srv->handler(srv->ctx, &req, &resp);
	}
	send_response(r, &resp);
	free(path);
	free(body);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	struct ember_http_server *srv = arg;

	(void)fd;
	(void)what;
	event_base_loopbreak(srv->base);
}

static void *server_thread(void *arg)
{
	struct ember_http_server *srv = arg;

	event_base_dispatch(srv->base);
	return NULL;
}

static void server_free(struct ember_http_server *srv)
{
	if (srv->http)
		evhttp_free(srv->http); /* closes its connections and socket */
	if (srv->stop_ev)
		event_free(srv->stop_ev);
	if (srv->base)
		event_base_free(srv->base);
	if (srv->stop_fd >= 0)
		close(srv->stop_fd);
	free(srv);
}

int ember_http_server_start(int listen_fd, ember_http_handler handler,
			    void *ctx, struct ember_http_server **out)
{
	struct ember_http_server *srv = calloc(1, sizeof(*srv));
	int flags, rc;

	if (!srv) {
		close(listen_fd);
		return -ENOMEM;
	}
	srv->stop_fd = -1;
	srv->handler = handler;
	srv->ctx = ctx;
	flags = fcntl(listen_fd, F_GETFL);
	if (flags < 0 || fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		rc = -errno;
		close(listen_fd);
		free(srv);
		return rc;
	}
	srv->base = event_base_new();
	srv->http = srv->base ? evhttp_new(srv->base) : NULL;
	srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!srv->http || srv->stop_fd < 0) {
		close(listen_fd);
		server_free(srv);
		return -ENOMEM;
	}
	evhttp_set_allowed_methods(
	    srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
			   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
			   EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
			   EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_max_body_size(srv->http, EMBER_HTTP_MAX_BODY);
	evhttp_set_max_headers_size(srv->http, EMBER_HTTP_MAX_HEADERS);
	/* A client still sending a body that is too large reads the 413
	 * before its connection closes. */
	evhttp_set_flags(srv->http, EVHTTP_SERVER_LINGERING_CLOSE);
	/* A response without a body has no Content-Type. */
	evhttp_set_default_content_type(srv->http, NULL);
	evhttp_set_timeout(srv->http, 60);
	evhttp_set_gencb(srv->http, on_request, srv);
	/* From here evhttp owns listen_fd (closed by evhttp_free). On a
	 * failure here (out of memory) libevent may or may not have closed
	 * it already: it is left, rather than risk closing it twice. */
	if (!evhttp_accept_socket_with_handle(srv->http, listen_fd)) {
		server_free(srv);
		return -ENOMEM;
	}
	srv->stop_ev = event_new(srv->base, srv->stop_fd, EV_READ, on_stop,
				 srv);
	if (!srv->stop_ev || event_add(srv->stop_ev, NULL) < 0) {
		server_free(srv);
		return -ENOMEM;
	}
	rc = pthread_create(&srv->thread, NULL, server_thread, srv);
	if (rc) {
		server_free(srv);
		return -rc;
	}
	*out = srv;
	return 0;
}

void ember_http_server_drain(struct ember_http_server *srv, int timeout_ms)
{
	struct timespec step = { 0, 5 * 1000000L };

	for (int waited = 0; srv && waited < timeout_ms; waited += 5) {
		if (atomic_load(&srv->in_flight) == 0)
			return;
		nanosleep(&step, NULL);
	}
}

void ember_http_server_stop(struct ember_http_server *srv)
{
	uint64_t one = 1;

	if (!srv)
		return;
	/* The loop ends after the request in progress, if any. */
	if (write(srv->stop_fd, &one, sizeof(one)) != sizeof(one))
		abort(); /* an eventfd takes a write of 8 bytes */
	pthread_join(srv->thread, NULL);
	server_free(srv);
}
