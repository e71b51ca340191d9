// SPDX-License-Identifier: Apache-2.0
#include "server.h"

#include <ember/log.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct server {
	struct MHD_Daemon *mhd;
	request_handler handler;
	void *ctx;
	uint16_t port;
};

struct conn_state {
	char *body;
	size_t len, cap;
	int too_big;
};

static enum MHD_Result queue(struct MHD_Connection *conn,
			     struct response *r)
{
	struct MHD_Response *mr;
	enum MHD_Result ret;

	if (r->reader)
		mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
						       r->reader, r->reader_ctx,
						       r->reader_free);
	else
		mr = MHD_create_response_from_buffer(
			r->len, r->body ? r->body : (char *)"",
			r->body ? MHD_RESPMEM_MUST_FREE
				: MHD_RESPMEM_PERSISTENT);
	if (!mr) {
		if (!r->reader)
			free(r->body);
		else if (r->reader_free)
			r->reader_free(r->reader_ctx);
		return MHD_NO;
	}
	if (r->content_type)
		MHD_add_response_header(mr, "Content-Type", r->content_type);
	ret = MHD_queue_response(conn, r->status ? r->status : 200, mr);
	MHD_destroy_response(mr);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *data,
				  size_t *size, void **con_cls)
{
	struct server *s = cls;
	struct conn_state *cs = *con_cls;
	struct request req = { 0 };
	struct response resp = { 0 };

	if (!cs) {
		cs = calloc(1, sizeof(*cs));
		if (!cs)
			return MHD_NO;
		*con_cls = cs;
		return MHD_YES;
	}
	if (*size) {
		if (cs->len + *size > SERVER_MAX_BODY) {
			cs->too_big = 1;
		} else {
			if (cs->len + *size + 1 > cs->cap) {
				size_t cap = cs->cap ? cs->cap : 4096;
				char *b;

				while (cap < cs->len + *size + 1)
					cap *= 2;
				b = realloc(cs->body, cap);
				if (!b)
					return MHD_NO;
				cs->body = b;
				cs->cap = cap;
			}
			memcpy(cs->body + cs->len, data, *size);
			cs->len += *size;
		}
		*size = 0;
		return MHD_YES;
	}
	if (cs->too_big) {
		static const char msg[] =
			"{\"code\":\"payload_too_large\",\"message\":\"request body over 64 MiB\"}";
		resp.status = 413;
		resp.body = strdup(msg);
		resp.len = resp.body ? strlen(msg) : 0;
		resp.content_type = "application/json";
		return queue(conn, &resp);
	}
	req.conn = conn;
	req.method = method;
	req.path = url;
	req.body = cs->body ? cs->body : "";
	if (cs->body)
		cs->body[cs->len] = '\0';
	req.body_len = cs->len;
	s->handler(s->ctx, &req, &resp);
	return queue(conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
			 void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct conn_state *cs = *con_cls;

	if (cs) {
		free(cs->body);
		free(cs);
		*con_cls = NULL;
	}
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	uint64_t port;
	char *end;

	if (!colon)
		return -EINVAL;
	port = strtoull(colon + 1, &end, 10);
	if (*end || port > 65535 || colon[1] == '\0')
		return -EINVAL;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[') {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
		size_t hl = strlen(host);

		if (hl < 2 || host[hl - 1] != ']')
			return -EINVAL;
		host[hl - 1] = '\0';
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
			return -EINVAL;
		*len = sizeof(*a6);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)ss;

		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		if (!host[0])
			a4->sin_addr.s_addr = htonl(INADDR_ANY);
		else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
			return -EINVAL;
		*len = sizeof(*a4);
	}
	return 0;
}

int server_start(const char *addr, request_handler h, void *ctx,
		 struct server **out)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct server *s;
	const union MHD_DaemonInfo *info;
	int fd, one = 1, r;

	r = parse_addr(addr, &ss, &len);
	if (r < 0)
		return r;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 128) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		return -ENOMEM;
	}
	s->handler = h;
	s->ctx = ctx;
	s->mhd = MHD_start_daemon(
		MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD,
		0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
		MHD_OPTION_END);
	if (!s->mhd) {
		close(fd);
		free(s);
		return -EIO;
	}
	info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : 0;
	*out = s;
	return 0;
}

uint16_t server_port(const struct server *s)
{
	return s->port;
}

void server_stop(struct server *s)
{
	if (!s)
		return;
	MHD_stop_daemon(s->mhd);
	free(s);
}

const char *request_query(const struct request *req, const char *key)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND,
					   key);
}

const char *request_header(const struct request *req, const char *key)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, key);
}
