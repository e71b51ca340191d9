/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.1 + JSON server on a Unix socket: ember-vmm's Firecracker API
 * (the agent and emberd serve TCP with libmicrohttpd in their own glue;
 * src/lib/http_server.c says why this one differs). Built on libevent's
 * evhttp with one event-loop thread: requests are handled one at a time,
 * in order, on that thread, so a handler needs no lock against other
 * requests.
 *
 * The glue collects the whole request body (at most EMBER_HTTP_MAX_BODY
 * bytes; a longer one is answered 413) and calls one handler per request;
 * the handler fills a response.
 * Errors follow Firecracker's shape: {"fault_message": "..."}, but for what
 * the HTTP layer refuses before a handler sees it (413 for a body or
 * headers too large, 400 for a request that is not HTTP, 501 for an
 * unknown method).
 *
 * Like the rest of libember, these functions do not log; they return 0 or a
 * negative errno.
 */
#ifndef EMBER_HTTP_H
#define EMBER_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define EMBER_HTTP_MAX_BODY (64 * 1024)
#define EMBER_HTTP_MAX_HEADERS (16 * 1024)

struct ember_http_request {
	const char *method; /* "GET", "PUT", "PATCH", ... */
	const char *path;   /* decoded URL path, without the query */
	const char *body;   /* NUL-terminated; "" when there is none */
	size_t body_len;
};

struct ember_http_response {
	unsigned status; /* 200 unless the handler sets another */
	char *body;	 /* malloc'd or NULL; freed by the glue */
	const char *content_type;
	const char *allow; /* "Allow" header for 405, or NULL */
};

typedef void (*ember_http_handler)(void *ctx,
				   const struct ember_http_request *req,
				   struct ember_http_response *resp);

struct ember_http_server;

/* Creates a listening AF_UNIX stream socket at path (close-on-exec). A stale
 * socket file left by a dead process (nobody accepts on it) is removed
 * first; a live one gives -EADDRINUSE, any other kind of file -EEXIST, a path
 * longer than sun_path -ENAMETOOLONG. Returns the fd or -errno. */
int ember_http_listen_unix(const char *path);

/* Serves HTTP on listen_fd (which it takes over, also on failure) from a
 * thread of its own, calling handler(ctx, ...) for each request. */
int ember_http_server_start(int listen_fd, ember_http_handler handler,
			    void *ctx, struct ember_http_server **out);

/* Waits up to timeout_ms until no request is in progress, so that the
 * response to a request that ended the program (InstanceStart of a guest
 * that stopped at once) still reaches its client. NULL is ok. */
void ember_http_server_drain(struct ember_http_server *srv, int timeout_ms);

/* Stops the thread, waits for the request in progress, closes every
 * connection and the listening socket. NULL is ok. */
void ember_http_server_stop(struct ember_http_server *srv);

/* Response helpers. reply_json takes over the reference to body. */
void ember_http_reply_json(struct ember_http_response *resp, unsigned status,
			   json_t *body);
void ember_http_reply_empty(struct ember_http_response *resp, unsigned status);
void ember_http_reply_error(struct ember_http_response *resp, unsigned status,
			    const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses the request body as one JSON object. On failure returns -EINVAL
 * and writes a message for the user (with the line and column of a syntax
 * error) into err. */
int ember_http_body_object(const struct ember_http_request *req, json_t **out,
			   char *err, size_t errlen);

#endif
