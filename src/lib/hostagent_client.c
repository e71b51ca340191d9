// SPDX-License-Identifier: Apache-2.0
/*
 * Connect-protocol client of the host agent RPC (see ember/hostagent.h).
 * One curl easy handle per call, so one client may be used from several
 * threads at once.
 */
#include <ember/hostagent.h>

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ember_hostagent_client {
	char *base_url;		/* without a trailing slash */
	long timeout_ms;
};

/* Connect's codes with the HTTP status the protocol gives each and the
 * errno Ember uses for it inside a program. */
static const struct {
	const char *code;
	unsigned http;
	int err;
} connect_codes[] = {
	{ "canceled", 499, ECANCELED },
	{ "unknown", 500, EIO },
	{ "invalid_argument", 400, EINVAL },
	{ "deadline_exceeded", 504, ETIMEDOUT },
	{ "not_found", 404, ENOENT },
	{ "already_exists", 409, EEXIST },
	{ "permission_denied", 403, EPERM },
	{ "resource_exhausted", 429, ENOSPC },
	{ "failed_precondition", 400, EBUSY },
	{ "aborted", 409, EAGAIN },
	{ "out_of_range", 400, ERANGE },
	{ "unimplemented", 501, ENOSYS },
	{ "internal", 500, EFAULT },
	{ "unavailable", 503, EHOSTUNREACH },
	{ "data_loss", 500, EBADMSG },
	{ "unauthenticated", 401, EACCES },
};

const char *ember_connect_code_from_errno(int neg_errno)
{
	int e = neg_errno < 0 ? -neg_errno : neg_errno;

	for (size_t i = 0; i < sizeof(connect_codes) / sizeof(connect_codes[0]);
	     i++)
		if (connect_codes[i].err == e)
			return connect_codes[i].code;
	if (e == ENOMEM)
		return "resource_exhausted";
	if (e == ECONNREFUSED)
		return "unavailable";
	return "internal";
}

int ember_connect_errno_from_code(const char *code)
{
	for (size_t i = 0; i < sizeof(connect_codes) / sizeof(connect_codes[0]);
	     i++)
		if (code && strcmp(connect_codes[i].code, code) == 0)
			return -connect_codes[i].err;
	return -EIO;
}

unsigned ember_connect_http_status(const char *code)
{
	for (size_t i = 0; i < sizeof(connect_codes) / sizeof(connect_codes[0]);
	     i++)
		if (code && strcmp(connect_codes[i].code, code) == 0)
			return connect_codes[i].http;
	return 500;
}

const char *ember_connect_code_from_http(long status)
{
	switch (status) {
	case 400: return "internal";
	case 401: return "unauthenticated";
	case 403: return "permission_denied";
	case 404: return "unimplemented";
	case 429: case 502: case 503: case 504: return "unavailable";
	default: return "unknown";
	}
}

void ember_connect_envelope_header(uint8_t hdr[EMBER_CONNECT_ENVELOPE_HDR],
				  uint8_t flags, uint32_t len)
{
	hdr[0] = flags;
	hdr[1] = (uint8_t)(len >> 24);
	hdr[2] = (uint8_t)(len >> 16);
	hdr[3] = (uint8_t)(len >> 8);
	hdr[4] = (uint8_t)len;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int ember_hostagent_client_new(const char *base_url, long timeout_ms,
			   struct ember_hostagent_client **out)
{
	struct ember_hostagent_client *c;
	size_t len;

	if (!base_url || strncmp(base_url, "http://", 7) != 0)
		return -EINVAL;
	pthread_once(&curl_once, curl_init_once);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->base_url = strdup(base_url);
	if (!c->base_url) {
		free(c);
		return -ENOMEM;
	}
	len = strlen(c->base_url);
	while (len > 7 && c->base_url[len - 1] == '/')
		c->base_url[--len] = '\0';
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
	*out = c;
	return 0;
}

void ember_hostagent_client_free(struct ember_hostagent_client *c)
{
	if (!c)
		return;
	free(c->base_url);
	free(c);
}

const char *ember_hostagent_client_url(const struct ember_hostagent_client *c)
{
	return c->base_url;
}

void ember_hostagent_client_set_timeout(struct ember_hostagent_client *c,
				    long timeout_ms)
{
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
}

static void set_error(struct ember_hostagent_error *err, const char *code,
		      long http_status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void set_error(struct ember_hostagent_error *err, const char *code,
		      long http_status, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	snprintf(err->code, sizeof(err->code), "%s", code);
	err->http_status = http_status;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

/* Fills err from a Connect error JSON object ({"code", "message"}) and
 * returns the errno of its code. */
static int error_from_json(json_t *obj, long http_status,
			   struct ember_hostagent_error *err)
{
	const char *code = json_string_value(json_object_get(obj, "code"));
	const char *msg = json_string_value(json_object_get(obj, "message"));

	if (!code)
		code = ember_connect_code_from_http(http_status);
	set_error(err, code, http_status, "%s", msg ? msg : code);
	return ember_connect_errno_from_code(code);
}

struct buf {
	uint8_t *data;
	size_t len, cap;
};

static int buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > EMBER_HOSTAGENT_MAX_MESSAGE + 64)
		return -EFBIG;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		uint8_t *d;

		while (cap < b->len + n)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static size_t collect_cb(char *p, size_t size, size_t n, void *ctx)
{
	return buf_append(ctx, p, size * n) == 0 ? size * n : 0;
}

/* Maps a curl failure to an errno and err. */
static int transport_error(struct ember_hostagent_client *c, const char *method,
			   CURLcode rc, struct ember_hostagent_error *err)
{
	int e = rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;

	set_error(err, rc == CURLE_OPERATION_TIMEDOUT ? "deadline_exceeded"
						       : "unavailable",
		  0, "%s at %s: %s", method, c->base_url,
		  curl_easy_strerror(rc));
	return e;
}

static CURL *prepare(struct ember_hostagent_client *c, const char *method,
		     struct curl_slist **hdrs, const char *content_type)
{
	char url[1024], h[128];
	CURL *curl = curl_easy_init();

	if (!curl)
		return NULL;
	snprintf(url, sizeof(url), "%s/%s/%s", c->base_url,
		 EMBER_HOSTAGENT_SERVICE, method);
	snprintf(h, sizeof(h), "Content-Type: %s", content_type);
	*hdrs = curl_slist_append(NULL, h);
	*hdrs = curl_slist_append(*hdrs, "Connect-Protocol-Version: 1");
	snprintf(h, sizeof(h), "Connect-Timeout-Ms: %ld", c->timeout_ms);
	*hdrs = curl_slist_append(*hdrs, h);
	*hdrs = curl_slist_append(*hdrs, "Expect:");
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
			 c->timeout_ms < 5000 ? c->timeout_ms : 5000L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_POST, 1L);
	return curl;
}

/* An error answer: JSON {"code", "message"}, or anything else (a proxy's
 * page), in which case the HTTP status decides the code. */
static int http_error(struct buf *body, long status, const char *method,
		      struct ember_hostagent_error *err)
{
	json_t *j = body->len ? json_loadb((const char *)body->data, body->len,
					   0, NULL)
			      : NULL;
	int r;

	if (json_is_object(j)) {
		r = error_from_json(j, status, err);
	} else {
		const char *code = ember_connect_code_from_http(status);

		set_error(err, code, status, "%s: HTTP %ld", method, status);
		r = ember_connect_errno_from_code(code);
	}
	json_decref(j);
	return r;
}

int ember_hostagent_call(struct ember_hostagent_client *c, const char *method,
		     const ProtobufCMessage *req,
		     const ProtobufCMessageDescriptor *resp_desc,
		     ProtobufCMessage **resp, struct ember_hostagent_error *err)
{
	struct curl_slist *hdrs = NULL;
	struct buf body = { 0 };
	size_t len = protobuf_c_message_get_packed_size(req);
	uint8_t *packed = malloc(len ? len : 1);
	long status = 0;
	CURLcode rc;
	CURL *curl;
	int r;

	*resp = NULL;
	if (!packed)
		return -ENOMEM;
	protobuf_c_message_pack(req, packed);
	curl = prepare(c, method, &hdrs, "application/proto");
	if (!curl) {
		free(packed);
		return -ENOMEM;
	}
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, packed);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_cb);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
	rc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK) {
		r = transport_error(c, method, rc, err);
	} else if (status != 200) {
		r = http_error(&body, status, method, err);
	} else {
		*resp = protobuf_c_message_unpack(resp_desc, NULL, body.len,
						  body.data);
		r = 0;
		if (!*resp) {
			set_error(err, "internal", status,
				  "%s: the answer is not a %s message", method,
				  resp_desc->name);
			r = -EPROTO;
		}
	}
	curl_easy_cleanup(curl);
	curl_slist_free_all(hdrs);
	free(packed);
	free(body.data);
	return r;
}

#define EMBER_HOSTAGENT_DEFINE(fn, Method, Req, Resp, desc)                       \
	EMBER_HOSTAGENT_DECLARE(fn, Req, Resp)                                    \
	{                                                                     \
		return ember_hostagent_call(c, Method,                            \
					(const ProtobufCMessage *)req, &desc, \
					(ProtobufCMessage **)resp, err);      \
	}

EMBER_HOSTAGENT_DEFINE(get_host_info, "GetHostInfo", EmberGetHostInfoRequest,
		   EmberGetHostInfoResponse,
		   ember__hostagent__v1__get_host_info_response__descriptor)
EMBER_HOSTAGENT_DEFINE(create_sandbox, "CreateSandbox", EmberCreateSandboxRequest,
		   EmberCreateSandboxResponse,
		   ember__hostagent__v1__create_sandbox_response__descriptor)
EMBER_HOSTAGENT_DEFINE(list_sandboxes, "ListSandboxes", EmberListSandboxesRequest,
		   EmberListSandboxesResponse,
		   ember__hostagent__v1__list_sandboxes_response__descriptor)
EMBER_HOSTAGENT_DEFINE(destroy_sandbox, "DestroySandbox",
		   EmberDestroySandboxRequest, EmberDestroySandboxResponse,
		   ember__hostagent__v1__destroy_sandbox_response__descriptor)
EMBER_HOSTAGENT_DEFINE(pause_sandbox, "PauseSandbox", EmberPauseSandboxRequest,
		   EmberPauseSandboxResponse,
		   ember__hostagent__v1__pause_sandbox_response__descriptor)
EMBER_HOSTAGENT_DEFINE(resume_sandbox, "ResumeSandbox", EmberResumeSandboxRequest,
		   EmberResumeSandboxResponse,
		   ember__hostagent__v1__resume_sandbox_response__descriptor)
EMBER_HOSTAGENT_DEFINE(create_snapshot, "CreateSnapshot",
		   EmberCreateSnapshotRequest, EmberCreateSnapshotResponse,
		   ember__hostagent__v1__create_snapshot_response__descriptor)
EMBER_HOSTAGENT_DEFINE(delete_snapshot, "DeleteSnapshot",
		   EmberDeleteSnapshotRequest, EmberDeleteSnapshotResponse,
		   ember__hostagent__v1__delete_snapshot_response__descriptor)
EMBER_HOSTAGENT_DEFINE(read_file, "ReadFile", EmberReadFileRequest,
		   EmberReadFileResponse,
		   ember__hostagent__v1__read_file_response__descriptor)
EMBER_HOSTAGENT_DEFINE(write_file, "WriteFile", EmberWriteFileRequest,
		   EmberWriteFileResponse,
		   ember__hostagent__v1__write_file_response__descriptor)
EMBER_HOSTAGENT_DEFINE(list_files, "ListFiles", EmberListFilesRequest,
		   EmberListFilesResponse,
		   ember__hostagent__v1__list_files_response__descriptor)
EMBER_HOSTAGENT_DEFINE(delete_file, "DeleteFile", EmberDeleteFileRequest,
		   EmberDeleteFileResponse,
		   ember__hostagent__v1__delete_file_response__descriptor)

/* --- server streaming: Exec ------------------------------------------------ */

struct stream_ctx {
	struct buf pending;	/* bytes of an envelope not yet complete */
	struct buf raw;		/* the whole body when the status is not 200 */
	CURL *curl;
	long status;
	ember_hostagent_exec_cb cb;
	void *cb_ctx;
	bool ended;		/* end-of-stream envelope seen */
	int result;		/* from the end message, or a callback stop */
	struct ember_hostagent_error *err;
};

/* Handles one complete envelope. Returns 0, or -errno to stop. */
static int stream_envelope(struct stream_ctx *s, uint8_t flags,
			   const uint8_t *msg, size_t len)
{
	if (s->ended)
		return -EPROTO;
	if (flags & EMBER_CONNECT_FLAG_COMPRESSED) {
		set_error(s->err, "internal", s->status,
			  "Exec: compressed messages are not supported");
		return -EPROTO;
	}
	if (flags & EMBER_CONNECT_FLAG_END_STREAM) {
		json_t *j = json_loadb((const char *)msg, len, 0, NULL);
		json_t *e = json_object_get(j, "error");

		s->ended = true;
		if (!json_is_object(j)) {
			set_error(s->err, "internal", s->status,
				  "Exec: end of stream is not JSON");
			s->result = -EPROTO;
		} else if (json_is_object(e)) {
			s->result = error_from_json(e, s->status, s->err);
		}
		json_decref(j);
		return 0;
	}
	EmberExecResponse *ev = ember__hostagent__v1__exec_response__unpack(
		NULL, len, msg);
	if (!ev) {
		set_error(s->err, "internal", s->status,
			  "Exec: a message is not an ExecResponse");
		return -EPROTO;
	}
	int stop = s->cb(s->cb_ctx, ev);
	ember__hostagent__v1__exec_response__free_unpacked(ev, NULL);
	if (stop) {
		set_error(s->err, "canceled", s->status, "Exec: stopped");
		return -ECANCELED;
	}
	return 0;
}

static size_t stream_cb(char *p, size_t size, size_t n, void *ctx)
{
	struct stream_ctx *s = ctx;
	size_t total = size * n, off = 0;

	if (!s->status)
		curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
	if (s->status != 200)
		return buf_append(&s->raw, p, total) == 0 ? total : 0;
	if (buf_append(&s->pending, p, total) < 0) {
		s->result = -EFBIG;
		return 0;
	}
	while (s->pending.len - off >= EMBER_CONNECT_ENVELOPE_HDR) {
		const uint8_t *h = s->pending.data + off;
		uint32_t len = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 |
			       (uint32_t)h[3] << 8 | h[4];
		int r;

		if (len > EMBER_HOSTAGENT_MAX_MESSAGE) {
			set_error(s->err, "resource_exhausted", s->status,
				  "Exec: message of %u bytes", len);
			s->result = -EFBIG;
			return 0;
		}
		if (s->pending.len - off < EMBER_CONNECT_ENVELOPE_HDR + len)
			break;
		r = stream_envelope(s, h[0], h + EMBER_CONNECT_ENVELOPE_HDR,
				    len);
		if (r < 0) {
			s->result = r;
			return 0;
		}
		off += EMBER_CONNECT_ENVELOPE_HDR + len;
	}
	memmove(s->pending.data, s->pending.data + off, s->pending.len - off);
	s->pending.len -= off;
	return total;
}

int ember_hostagent_exec(struct ember_hostagent_client *c, const EmberExecRequest *req,
		     ember_hostagent_exec_cb cb, void *ctx,
		     struct ember_hostagent_error *err)
{
	struct stream_ctx s = { .cb = cb, .cb_ctx = ctx, .err = err };
	struct curl_slist *hdrs = NULL;
	size_t len = ember__hostagent__v1__exec_request__get_packed_size(req);
	uint8_t *body = malloc(EMBER_CONNECT_ENVELOPE_HDR + len);
	CURLcode rc;
	int r;

	if (!body)
		return -ENOMEM;
	ember_connect_envelope_header(body, 0, (uint32_t)len);
	ember__hostagent__v1__exec_request__pack(
		req, body + EMBER_CONNECT_ENVELOPE_HDR);
	s.curl = prepare(c, "Exec", &hdrs, "application/connect+proto");
	if (!s.curl) {
		free(body);
		return -ENOMEM;
	}
	/* An exec runs as long as its command: the request's own timeout
	 * bounds it, the client's only bounds connecting.
	 * TODO(emberd): no timeout_ms means no bound at all; a low-speed
	 * limit would catch a host that hangs without closing. */
	curl_easy_setopt(s.curl, CURLOPT_TIMEOUT_MS,
			 req->timeout_ms ? (long)req->timeout_ms + 30000L : 0L);
	curl_easy_setopt(s.curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(s.curl, CURLOPT_POSTFIELDSIZE_LARGE,
			 (curl_off_t)(EMBER_CONNECT_ENVELOPE_HDR + len));
	curl_easy_setopt(s.curl, CURLOPT_WRITEFUNCTION, stream_cb);
	curl_easy_setopt(s.curl, CURLOPT_WRITEDATA, &s);
	rc = curl_easy_perform(s.curl);
	curl_easy_getinfo(s.curl, CURLINFO_RESPONSE_CODE, &s.status);
	if (s.result < 0) {
		r = s.result;
	} else if (rc != CURLE_OK) {
		r = transport_error(c, "Exec", rc, err);
	} else if (s.status != 200) {
		r = http_error(&s.raw, s.status, "Exec", err);
	} else if (!s.ended || s.pending.len) {
		set_error(err, "internal", s.status,
			  "Exec: the stream ended without its end message");
		r = -EPROTO;
	} else {
		r = s.result;
	}
	curl_easy_cleanup(s.curl);
	curl_slist_free_all(hdrs);
	free(body);
	free(s.pending.data);
	free(s.raw.data);
	return r;
}

/* --- JSON mapping ---------------------------------------------------------- */

static void camel(const char *name, char *out, size_t len)
{
	size_t n = 0;
	bool up = false;

	for (const char *p = name; *p && n + 1 < len; p++) {
		if (*p == '_') {
			up = true;
			continue;
		}
		out[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 32) : *p;
		up = false;
	}
	out[n] = '\0';
}

static size_t elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default:
		return 4;	/* 32-bit ints, float, bool, enum */
	}
}

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *b64_encode(const uint8_t *p, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
	json_t *j;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 |
			     (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < n ? p[i + 2] : 0);

		*o++ = b64chars[v >> 18 & 63];
		*o++ = b64chars[v >> 12 & 63];
		*o++ = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? b64chars[v & 63] : '=';
	}
	*o = '\0';
	j = json_string(out);
	free(out);
	return j;
}

/* Standard or URL-safe base64, padding optional. */
static int b64_decode(const char *s, ProtobufCBinaryData *out)
{
	size_t len = strlen(s), n = 0;
	uint8_t *d = malloc(len * 3 / 4 + 3);
	uint32_t acc = 0;
	int bits = 0;

	if (!d)
		return -ENOMEM;
	for (const char *p = s; *p && *p != '='; p++) {
		const char *c = strchr(b64chars, *p == '-' ? '+'
						: *p == '_' ? '/'
							    : *p);

		if (!c || !*p) {
			free(d);
			return -EINVAL;
		}
		acc = acc << 6 | (uint32_t)(c - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			d[n++] = (uint8_t)(acc >> bits);
		}
	}
	out->data = d;
	out->len = n;
	return 0;
}

static json_t *value_to_json(const ProtobufCFieldDescriptor *f,
			     const void *p)
{
	char buf[32];

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return json_integer(*(const int32_t *)p);
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		return json_integer(*(const uint32_t *)p);
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		snprintf(buf, sizeof(buf), "%lld",
			 (long long)*(const int64_t *)p);
		return json_string(buf);
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		snprintf(buf, sizeof(buf), "%llu",
			 (unsigned long long)*(const uint64_t *)p);
		return json_string(buf);
	case PROTOBUF_C_TYPE_FLOAT:
		return json_real(*(const float *)p);
	case PROTOBUF_C_TYPE_DOUBLE:
		return json_real(*(const double *)p);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)p);
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
			f->descriptor, *(const int *)p);
		return v ? json_string(v->name) : json_integer(*(const int *)p);
	}
	case PROTOBUF_C_TYPE_STRING:
		return json_string(*(char *const *)p ? *(char *const *)p : "");
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;
		return b64_encode(b->data, b->len);
	}
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(ProtobufCMessage *const *)p
			       ? ember_pb_to_json(*(ProtobufCMessage *const *)p)
			       : json_null();
	}
	return json_null();
}

/* Whether a proto3 singular field holds its default (left out). */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		return !s || !*s;
	}
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)p)->len == 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(void *const *)p == NULL;
	default: {
		static const uint8_t zero[8];
		return memcmp(p, zero, elem_size(f->type)) == 0;
	}
	}
}

json_t *ember_pb_to_json(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	json_t *obj = json_object();

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *p = base + f->offset;
		char name[128];
		json_t *v;

		camel(f->name, name, sizeof(name));
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			const char *arr = *(char *const *)p;

			if (!n)
				continue;
			v = json_array();
			for (size_t k = 0; k < n; k++)
				json_array_append_new(
					v, value_to_json(f, arr + k * elem_size(f->type)));
		} else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (*(const uint32_t *)(base + f->quantifier_offset) !=
			    f->id)
				continue;
			v = value_to_json(f, p);
		} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
			   f->quantifier_offset &&
			   f->type != PROTOBUF_C_TYPE_STRING &&
			   f->type != PROTOBUF_C_TYPE_MESSAGE) {
			if (!*(const protobuf_c_boolean *)(base +
							   f->quantifier_offset))
				continue;
			v = value_to_json(f, p);
		} else {
			if (is_default(f, p))
				continue;
			v = value_to_json(f, p);
		}
		json_object_set_new(obj, name, v);
	}
	return obj;
}

static int int_from_json(const json_t *v, bool is_signed, int64_t *si,
			 uint64_t *ui)
{
	if (json_is_integer(v)) {
		*si = json_integer_value(v);
		*ui = (uint64_t)*si;
		return is_signed || *si >= 0 ? 0 : -ERANGE;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;

		errno = 0;
		if (is_signed)
			*si = strtoll(s, &end, 10);
		else if (*s == '-')
			return -ERANGE;
		else
			*ui = strtoull(s, &end, 10);
		if (!*s || *end || errno)
			return -EINVAL;
		if (is_signed)
			*ui = (uint64_t)*si;
		else
			*si = (int64_t)*ui;
		return 0;
	}
	return -EINVAL;
}

static int value_from_json(const ProtobufCFieldDescriptor *f, const json_t *v,
			   void *p, char *err, size_t errlen)
{
	int64_t si = 0;
	uint64_t ui = 0;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		if (int_from_json(v, true, &si, &ui) < 0 || si < INT32_MIN ||
		    si > INT32_MAX)
			goto bad;
		*(int32_t *)p = (int32_t)si;
		return 0;
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		if (int_from_json(v, false, &si, &ui) < 0 || ui > UINT32_MAX)
			goto bad;
		*(uint32_t *)p = (uint32_t)ui;
		return 0;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		if (int_from_json(v, true, &si, &ui) < 0)
			goto bad;
		*(int64_t *)p = si;
		return 0;
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		if (int_from_json(v, false, &si, &ui) < 0)
			goto bad;
		*(uint64_t *)p = ui;
		return 0;
	case PROTOBUF_C_TYPE_FLOAT:
		if (!json_is_number(v))
			goto bad;
		*(float *)p = (float)json_number_value(v);
		return 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		if (!json_is_number(v))
			goto bad;
		*(double *)p = json_number_value(v);
		return 0;
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(v))
			goto bad;
		*(protobuf_c_boolean *)p = json_is_true(v);
		return 0;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumValue *ev = NULL;

		if (json_is_string(v))
			ev = protobuf_c_enum_descriptor_get_value_by_name(
				f->descriptor, json_string_value(v));
		else if (json_is_integer(v))
			ev = protobuf_c_enum_descriptor_get_value(
				f->descriptor, (int)json_integer_value(v));
		if (!ev)
			goto bad;
		*(int *)p = ev->value;
		return 0;
	}
	case PROTOBUF_C_TYPE_STRING:
		if (!json_is_string(v))
			goto bad;
		*(char **)p = strdup(json_string_value(v));
		return *(char **)p ? 0 : -ENOMEM;
	case PROTOBUF_C_TYPE_BYTES:
		if (!json_is_string(v) ||
		    b64_decode(json_string_value(v), p) < 0)
			goto bad;
		return 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return ember_pb_from_json(f->descriptor, v,
					  (ProtobufCMessage **)p, err, errlen);
	}
bad:
	snprintf(err, errlen, "field %s: wrong type or value", f->name);
	return -EINVAL;
}

static const ProtobufCFieldDescriptor *
field_by_json_name(const ProtobufCMessageDescriptor *d, const char *key)
{
	for (unsigned i = 0; i < d->n_fields; i++) {
		char name[128];

		camel(d->fields[i].name, name, sizeof(name));
		if (strcmp(name, key) == 0 ||
		    strcmp(d->fields[i].name, key) == 0)
			return &d->fields[i];
	}
	return NULL;
}

int ember_pb_from_json(const ProtobufCMessageDescriptor *desc,
		       const json_t *j, ProtobufCMessage **out, char *err,
		       size_t errlen)
{
	ProtobufCMessage *m;
	const char *key;
	json_t *v;
	int r = 0;

	*out = NULL;
	if (!json_is_object(j)) {
		snprintf(err, errlen, "%s: not a JSON object", desc->name);
		return -EINVAL;
	}
	m = malloc(desc->sizeof_message);
	if (!m)
		return -ENOMEM;
	desc->message_init(m);
	json_object_foreach((json_t *)j, key, v) {
		const ProtobufCFieldDescriptor *f = field_by_json_name(desc, key);
		char *base = (char *)m;

		if (!f) {
			snprintf(err, errlen, "%s: unknown field \"%s\"",
				 desc->name, key);
			r = -EINVAL;
			break;
		}
		if (json_is_null(v))
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = json_array_size(v), sz = elem_size(f->type);
			size_t *count = (size_t *)(base + f->quantifier_offset);
			char *arr;

			if (!json_is_array(v) || *count) {
				snprintf(err, errlen, "field %s: wrong type",
					 f->name);
				r = -EINVAL;
				break;
			}
			arr = calloc(n ? n : 1, sz);
			if (!arr) {
				r = -ENOMEM;
				break;
			}
			*(char **)(base + f->offset) = arr;
			for (size_t k = 0; k < n && r == 0; k++) {
				r = value_from_json(f, json_array_get(v, k),
						    arr + k * sz, err, errlen);
				if (r == 0)
					*count = k + 1;
			}
			if (r < 0)
				break;
			continue;
		}
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t *c = (uint32_t *)(base + f->quantifier_offset);

			if (*c) {
				snprintf(err, errlen,
					 "field %s: another field of its oneof is set",
					 f->name);
				r = -EINVAL;
				break;
			}
			r = value_from_json(f, v, base + f->offset, err, errlen);
			if (r == 0)
				*c = f->id;
		} else {
			r = value_from_json(f, v, base + f->offset, err, errlen);
			if (r == 0 && f->label == PROTOBUF_C_LABEL_OPTIONAL &&
			    f->quantifier_offset &&
			    f->type != PROTOBUF_C_TYPE_STRING &&
			    f->type != PROTOBUF_C_TYPE_MESSAGE)
				*(protobuf_c_boolean *)(base +
							f->quantifier_offset) = 1;
		}
		if (r < 0)
			break;
	}
	if (r < 0) {
		protobuf_c_message_free_unpacked(m, NULL);
		return r;
	}
	*out = m;
	return 0;
}
