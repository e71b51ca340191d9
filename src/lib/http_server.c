// SPDX-License-Identifier: Apache-2.0
/*
 * HTTP/1.1 server glue on libmicrohttpd over a Unix socket (include/ember/
 * http.h). One internal polling thread handles every connection, so
 * requests reach the handler one at a time.
 *
 * A request goes through libmicrohttpd's access handler several times: the
 * first call only allocates the per-request buffer, the following ones hand
 * over body chunks, the last one (no more data) runs the handler and queues
 * the response. The buffer is freed when the request completes.
 *
 * libmicrohttpd is loaded by the first ember_http_server_start (dlopen),
 * not when the program starts: a program that serves no HTTP (ember-vmm
 * --no-api) maps neither it nor what Debian's build links with it (GnuTLS,
 * nettle, gmp, p11-kit, ...: about 2.5 MB of resident pages), and runs
 * none of their constructors.
 *
 * TODO(vmm-machine): with the API served the VMM still costs about 4.8 MB
 * resident beside its guest (target 3 MB), 2.4 MB of it GnuTLS and its
 * friends; a libmicrohttpd built without HTTPS (from Debian's source
 * package, cached like the guest kernel) would remove them
 * (docs/vmm-machine.md, "Boot time and memory").
 */
#include <ember/http.h>
#include <ember/log.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#if MHD_VERSION < 0x00097002
typedef int MHD_Result_t;
#else
typedef enum MHD_Result MHD_Result_t;
#endif

/* The soname of the library in Debian's package libmicrohttpd12. */
#define MHD_SONAME "libmicrohttpd.so.12"

/* The functions used, resolved from the library. */
static struct {
	__typeof__(MHD_start_daemon) *start_daemon;
	__typeof__(MHD_stop_daemon) *stop_daemon;
	__typeof__(MHD_create_response_from_buffer) *create_response;
	__typeof__(MHD_add_response_header) *add_header;
	__typeof__(MHD_queue_response) *queue_response;
	__typeof__(MHD_destroy_response) *destroy_response;
	int err; /* 0 once loaded */
} mhd;
static pthread_once_t mhd_once = PTHREAD_ONCE_INIT;

static void *mhd_sym(void *lib, const char *name)
{
	void *f = dlsym(lib, name);

	if (!f) {
		log_error("%s: no symbol %s", MHD_SONAME, name);
		mhd.err = -ELIBBAD;
	}
	return f;
}

static void mhd_load(void)
{
	/* Kept loaded for the program's life: no dlclose. */
	void *lib = dlopen(MHD_SONAME, RTLD_NOW | RTLD_LOCAL);

	if (!lib) {
		log_error("cannot load the HTTP library: %s", dlerror());
		mhd.err = -ELIBACC;
		return;
	}
	mhd.start_daemon = mhd_sym(lib, "MHD_start_daemon");
	mhd.stop_daemon = mhd_sym(lib, "MHD_stop_daemon");
	mhd.create_response = mhd_sym(lib, "MHD_create_response_from_buffer");
	mhd.add_header = mhd_sym(lib, "MHD_add_response_header");
	mhd.queue_response = mhd_sym(lib, "MHD_queue_response");
	mhd.destroy_response = mhd_sym(lib, "MHD_destroy_response");
}

struct ember_http_server {
	struct MHD_Daemon *daemon;
	int listen_fd;
	ember_http_handler handler;
	void *ctx;
	atomic_int in_flight; /* requests begun and not yet completed */
};

struct request_buf {
	char *data;
	size_t len;
	bool too_large;
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

static MHD_Result_t queue(struct MHD_Connection *conn,
			  struct ember_http_response *r)
{
	struct MHD_Response *mr;
	MHD_Result_t ret;
	size_t len = r->body ? strlen(r->body) : 0;

	mr = mhd.create_response(len, r->body, MHD_RESPMEM_MUST_FREE);
	if (!mr) {
		free(r->body);
		return MHD_NO;
	}
	r->body = NULL;
	if (len && r->content_type)
		mhd.add_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
			       r->content_type);
	if (r->allow)
		mhd.add_header(mr, MHD_HTTP_HEADER_ALLOW, r->allow);
	ret = mhd.queue_response(conn, r->status, mr);
	mhd.destroy_response(mr);
	return ret;
}

static MHD_Result_t on_request(void *cls, struct MHD_Connection *conn,
			       const char *url, const char *method,
			       const char *version, const char *upload_data,
			       size_t *upload_data_size, void **con_cls)
{
	struct ember_http_server *srv = cls;
	struct request_buf *buf = *con_cls;
	struct ember_http_response resp = {.status = 200};
	struct ember_http_request req;

	if (!buf) {
		buf = calloc(1, sizeof(*buf));
		if (!buf)
			return MHD_NO;
		*con_cls = buf;
		atomic_fetch_add(&srv->in_flight, 1);
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (buf->too_large || buf->len + n > EMBER_HTTP_MAX_BODY) {
			buf->too_large = true;
			return MHD_YES;
		}
		char *p = realloc(buf->data, buf->len + n + 1);

		if (!p)
			return MHD_NO;
		memcpy(p + buf->len, upload_data, n);
		buf->data = p;
		buf->len += n;
		buf->data[buf->len] = '\0';
		return MHD_YES;
	}

	if (buf->too_large) {
		ember_http_reply_error(
		    &resp, 413, "The request body is larger than %d bytes.",
		    EMBER_HTTP_MAX_BODY);
		return queue(conn, &resp);
	}
	req.method = method;
	req.path = url;
	req.body = buf->data ? buf->data : "";
	req.body_len = buf->len;
	srv->handler(srv->ctx, &req, &resp);
	return queue(conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct ember_http_server *srv = cls;
	struct request_buf *buf = *con_cls;

	if (buf) {
		free(buf->data);
		free(buf);
		*con_cls = NULL;
		atomic_fetch_sub(&srv->in_flight, 1);
	}
}

int ember_http_server_start(int listen_fd, ember_http_handler handler,
			    void *ctx, struct ember_http_server **out)
{
	struct ember_http_server *srv;

	pthread_once(&mhd_once, mhd_load);
	if (mhd.err) {
		close(listen_fd);
		return mhd.err;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv) {
		close(listen_fd);
		return -ENOMEM;
	}
	srv->listen_fd = listen_fd;
	srv->handler = handler;
	srv->ctx = ctx;
	/* An idle client connection is dropped after 60 s. */
	srv->daemon = mhd.start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL,
	    on_request, srv, MHD_OPTION_LISTEN_SOCKET, listen_fd,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60, MHD_OPTION_END);
	if (!srv->daemon) {
		close(listen_fd);
		free(srv);
		return -EIO;
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
	if (!srv)
		return;
	/* MHD_stop_daemon closes the listening socket it was given. */
	mhd.stop_daemon(srv->daemon);
	free(srv);
}
