/* SPDX-License-Identifier: Apache-2.0 */
/*
 * emberd's HTTP server on TCP: libmicrohttpd with a thread per connection
 * (an exec stream may last as long as its command), whole request bodies up
 * to SERVER_MAX_BODY, and responses that are a buffer or a stream. (The
 * shared src/lib/http_server.c serves Unix sockets one request at a time
 * for the VMM's API; emberd needs TCP, headers, queries and streaming.)
 */
#ifndef EMBERD_SERVER_H
#define EMBERD_SERVER_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#define SERVER_MAX_BODY (64u << 20)

struct request {
	struct MHD_Connection *conn;
	const char *method;
	const char *path;
	const char *body;	/* NUL-terminated */
	size_t body_len;
};

struct response {
	unsigned status;
	char *body;		/* malloc'd; freed by the server */
	size_t len;
	const char *content_type;
	/* A streamed body instead: read until it returns
	 * MHD_CONTENT_READER_END_OF_STREAM; free_cb runs at the end. */
	MHD_ContentReaderCallback reader;
	void *reader_ctx;
	MHD_ContentReaderFreeCallback reader_free;
};

typedef void (*request_handler)(void *ctx, const struct request *req,
				struct response *resp);

struct server;

/* Listens on addr ("127.0.0.1:8080", ":8080", "[::1]:8080"). */
int server_start(const char *addr, request_handler h, void *ctx,
		 struct server **out);
uint16_t server_port(const struct server *s);
void server_stop(struct server *s);

const char *request_query(const struct request *req, const char *key);
const char *request_header(const struct request *req, const char *key);

#endif
