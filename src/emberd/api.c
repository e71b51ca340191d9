// SPDX-License-Identifier: Apache-2.0
/*
 * The REST API (api/openapi.yaml): routing, authentication, JSON in and
 * out. Every error answers {"code": "...", "message": "..."}.
 */
#include "api.h"

#include "emberd.h"
#include "server.h"

#include <ember/hostagent.h>
#include <ember/log.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- responses ------------------------------------------------------------ */

static void reply_json(struct response *resp, unsigned status, json_t *j)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = json_dumps(j, JSON_COMPACT);
	if (resp->body) {
		size_t n = strlen(resp->body);
		char *b = realloc(resp->body, n + 2);

		if (b) {
			b[n] = '\n';
			b[n + 1] = '\0';
			resp->body = b;
			n++;
		}
		resp->len = n;
	}
	json_decref(j);
}

static void reply_error(struct response *resp, unsigned status,
			const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reply_error(struct response *resp, unsigned status,
			const char *code, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	reply_json(resp, status,
		   json_pack("{s:s, s:s}", "code", code, "message", msg));
}

static void reply_apierr(struct response *resp, const struct apierr *e)
{
	reply_error(resp, e->status ? e->status : 500,
		    e->code[0] ? e->code : "internal", "%s", e->message);
}

/* --- JSON of records ------------------------------------------------------ */

static json_t *parse_object_text(const char *text)
{
	json_t *j = json_loads(text ? text : "{}", 0, NULL);

	if (!json_is_object(j)) {
		json_decref(j);
		j = json_object();
	}
	return j;
}

static json_t *sandbox_json(const struct sandbox *s)
{
	json_t *j = json_pack(
		"{s:s, s:s, s:s, s:i, s:I, s:I, s:s, s:o, s:o, s:I, s:I}", "id",
		s->id, "template", s->template_name, "state",
		sbx_state_name(s->state), "vcpus", (int)s->vcpus, "memory_mib",
		(json_int_t)s->memory_mib, "timeout", (json_int_t)s->timeout_s,
		"on_timeout", s->on_timeout, "metadata",
		parse_object_text(s->metadata), "env",
		parse_object_text(s->env), "created_at_ms",
		(json_int_t)s->created_at_ms, "updated_at_ms",
		(json_int_t)s->updated_at_ms);

	json_object_set_new(j, "host",
			    s->host_id[0] ? json_string(s->host_id)
					  : json_null());
	json_object_set_new(j, "expires_at_ms",
			    s->expires_at_ms
				    ? json_integer(s->expires_at_ms)
				    : json_null());
	json_object_set_new(j, "error",
			    s->error ? json_string(s->error) : json_null());
	if (s->generation >= 0)
		json_object_set_new(
			j, "pause",
			json_pack("{s:i, s:I, s:I}", "generation",
				  s->generation, "memory_bytes_written",
				  (json_int_t)s->paused_memory_bytes,
				  "disk_bytes",
				  (json_int_t)s->paused_disk_bytes));
	return j;
}

static json_t *template_json(const struct template *t)
{
	json_t *j = json_pack("{s:s, s:s, s:i, s:I, s:I}", "name", t->name,
			      "kind", t->kind, "vcpus", (int)t->vcpus,
			      "memory_mib", (json_int_t)t->memory_mib,
			      "created_at_ms", (json_int_t)t->created_at_ms);

	if (strcmp(t->kind, "base") == 0) {
		json_object_set_new(j, "kernel",
				    json_string(t->kernel_path ? t->kernel_path
							       : ""));
		json_object_set_new(j, "rootfs",
				    json_string(t->rootfs_path ? t->rootfs_path
							       : ""));
	} else {
		json_object_set_new(j, "host", json_string(t->host_id));
		json_object_set_new(j, "source_sandbox",
				    json_string(t->source_sandbox_id));
		json_object_set_new(j, "memory_bytes",
				    json_integer((json_int_t)t->memory_bytes));
		json_object_set_new(j, "disk_bytes",
				    json_integer((json_int_t)t->disk_bytes));
	}
	return j;
}

static json_t *host_json(const struct host *h)
{
	json_t *j = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:I, s:I, s:I}", "id",
		h->id, "url", h->url, "state", h->state, "hostname",
		h->hostname, "agent_version", h->agent_version, "total_vcpus",
		(int)h->total_vcpus, "free_vcpus", (int)h->free_vcpus,
		"total_memory_mib", (json_int_t)h->total_memory_mib,
		"free_memory_mib", (json_int_t)h->free_memory_mib,
		"last_seen_ms", (json_int_t)h->last_seen_ms);

	json_object_set_new(j, "last_error",
			    h->last_error ? json_string(h->last_error)
					  : json_null());
	return j;
}

/* --- request bodies ------------------------------------------------------- */

/* Parses the body as a JSON object whose keys are all in `allowed`
 * (NULL-terminated). On failure answers 400 and returns NULL. */
static json_t *body_object(const struct request *req, struct response *resp,
			   const char *const *allowed)
{
	json_error_t jerr;
	const char *key;
	json_t *j, *val;

	if (req->body_len == 0) {
		reply_error(resp, 400, "invalid_argument",
			    "the request needs a JSON object body");
		return NULL;
	}
	j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES,
		       &jerr);
	if (!j) {
		reply_error(resp, 400, "invalid_argument",
			    "bad JSON at line %d column %d: %s", jerr.line,
			    jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		reply_error(resp, 400, "invalid_argument",
			    "the body must be a JSON object");
		return NULL;
	}
	json_object_foreach(j, key, val) {
		bool ok = false;

		for (size_t i = 0; allowed[i]; i++)
			ok = ok || strcmp(allowed[i], key) == 0;
		if (!ok) {
			reply_error(resp, 400, "invalid_argument",
				    "unknown field \"%s\"", key);
			json_decref(j);
			return NULL;
		}
	}
	return j;
}

/* Field readers: absent is fine (the default stays) unless required;
 * a wrong type answers 400 and returns -EINVAL. */
static int get_string(json_t *obj, const char *key, const char **out,
		      bool required, struct response *resp)
{
	json_t *v = json_object_get(obj, key);

	if (!v || json_is_null(v)) {
		if (!required)
			return 0;
		reply_error(resp, 400, "invalid_argument",
			    "field \"%s\" is required", key);
		return -EINVAL;
	}
	if (!json_is_string(v)) {
		reply_error(resp, 400, "invalid_argument",
			    "field \"%s\" must be a string", key);
		return -EINVAL;
	}
	*out = json_string_value(v);
	return 0;
}

static int get_int(json_t *obj, const char *key, int64_t *out, int64_t min,
		   int64_t max, struct response *resp)
{
	json_t *v = json_object_get(obj, key);

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v)) {
		reply_error(resp, 400, "invalid_argument",
			    "field \"%s\" must be an integer", key);
		return -EINVAL;
	}
	if (json_integer_value(v) < min || json_integer_value(v) > max) {
		reply_error(resp, 400, "invalid_argument",
			    "field \"%s\" must be between %" PRId64
			    " and %" PRId64,
			    key, min, max);
		return -EINVAL;
	}
	*out = json_integer_value(v);
	return 0;
}

static int get_bool(json_t *obj, const char *key, bool *out,
		    struct response *resp)
{
	json_t *v = json_object_get(obj, key);

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v)) {
		reply_error(resp, 400, "invalid_argument",
			    "field \"%s\" must be true or false", key);
		return -EINVAL;
	}
	*out = json_is_true(v);
	return 0;
}

/* An object of string values, returned as its JSON text (malloc'd). */
static int get_string_map(json_t *obj, const char *key, char **out,
			  struct response *resp)
{
	json_t *v = json_object_get(obj, key), *val;
	const char *k;

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v)) {
		reply_error(resp, 400, "invalid_argument",
			    "field \"%s\" must be an object of strings", key);
		return -EINVAL;
	}
	json_object_foreach(v, k, val) {
		if (!json_is_string(val)) {
			reply_error(resp, 400, "invalid_argument",
				    "field \"%s\": value of \"%s\" must be a string",
				    key, k);
			return -EINVAL;
		}
	}
	*out = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
	return *out ? 0 : -ENOMEM;
}

static int get_on_timeout(json_t *obj, const char **out,
			  struct response *resp)
{
	int r = get_string(obj, "on_timeout", out, false, resp);

	if (r == 0 && *out && strcmp(*out, "pause") != 0 &&
	    strcmp(*out, "kill") != 0) {
		reply_error(resp, 400, "invalid_argument",
			    "field \"on_timeout\" must be \"pause\" or \"kill\"");
		return -EINVAL;
	}
	return r;
}

/* --- sandboxes ------------------------------------------------------------ */

#define MAX_TIMEOUT_S (30LL * 24 * 3600)

static void sandbox_create(struct emberd *d, const struct request *req,
			   struct response *resp)
{
	static const char *const fields[] = { "template", "vcpus",
					      "memory_mib", "timeout",
					      "on_timeout", "metadata", "env",
					      "network", NULL };
	struct create_args a = { .template_name = "base",
				 .timeout_s = d->default_timeout_s,
				 .on_timeout = "kill" };
	char *metadata = NULL, *env = NULL;
	int64_t vcpus = 0, mem = 0;
	struct sandbox s = { 0 };
	struct apierr e = { 0 };
	json_t *j = body_object(req, resp, fields);

	if (!j)
		return;
	if (get_string(j, "template", &a.template_name, false, resp) < 0 ||
	    get_int(j, "vcpus", &vcpus, 1, 64, resp) < 0 ||
	    get_int(j, "memory_mib", &mem, 16, 1 << 20, resp) < 0 ||
	    get_int(j, "timeout", &a.timeout_s, 1, MAX_TIMEOUT_S, resp) < 0 ||
	    get_on_timeout(j, &a.on_timeout, resp) < 0 ||
	    get_string_map(j, "metadata", &metadata, resp) < 0 ||
	    get_string_map(j, "env", &env, resp) < 0 ||
	    get_bool(j, "network", &a.network, resp) < 0)
		goto out;
	a.vcpus = (unsigned)vcpus;
	a.memory_mib = (uint64_t)mem;
	a.metadata = metadata ? metadata : "{}";
	a.env = env ? env : "{}";
	if (op_create(d, &a, &s, &e) < 0)
		reply_apierr(resp, &e);
	else
		reply_json(resp, 201, sandbox_json(&s));
	sandbox_clear(&s);
out:
	free(metadata);
	free(env);
	json_decref(j);
}

struct meta_filter {
	json_t *want;		/* metadata.KEY=VALUE from the query */
};

static enum MHD_Result collect_meta(void *cls, enum MHD_ValueKind kind,
				    const char *key, const char *value)
{
	struct meta_filter *f = cls;

	if (strncmp(key, "metadata.", 9) == 0 && key[9])
		json_object_set_new(f->want, key + 9,
				    json_string(value ? value : ""));
	return MHD_YES;
}

static bool meta_matches(const struct sandbox *s, json_t *want)
{
	json_t *have = parse_object_text(s->metadata), *v;
	const char *k;
	bool ok = true;

	json_object_foreach(want, k, v) {
		const char *h = json_string_value(json_object_get(have, k));

		if (!h || strcmp(h, json_string_value(v)) != 0)
			ok = false;
	}
	json_decref(have);
	return ok;
}

static void sandbox_list(struct emberd *d, const struct request *req,
			 struct response *resp)
{
	const char *state = request_query(req, "state");
	struct meta_filter f = { .want = json_object() };
	enum sbx_state st;
	struct sandbox *sv;
	json_t *arr;
	size_t n;
	int r;

	if (state && sbx_state_parse(state, &st) < 0) {
		json_decref(f.want);
		reply_error(resp, 400, "invalid_argument",
			    "unknown state \"%s\"", state);
		return;
	}
	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND,
				  collect_meta, &f);
	r = store_sandbox_list(d->db, state, NULL, &sv, &n);
	if (r < 0) {
		json_decref(f.want);
		reply_error(resp, 500, "internal", "database error");
		return;
	}
	arr = json_array();
	for (size_t i = 0; i < n; i++)
		if (meta_matches(&sv[i], f.want))
			json_array_append_new(arr, sandbox_json(&sv[i]));
	sandboxes_free(sv, n);
	json_decref(f.want);
	reply_json(resp, 200, json_pack("{s:o}", "sandboxes", arr));
}

static void sandbox_get(struct emberd *d, const char *id,
			struct response *resp)
{
	struct sandbox s = { 0 };
	struct event *ev;
	size_t n;
	json_t *j, *arr;
	int r = store_sandbox_get(d->db, id, &s);

	if (r == -ENOENT) {
		reply_error(resp, 404, "not_found", "sandbox %s not found", id);
		return;
	}
	if (r < 0) {
		reply_error(resp, 500, "internal", "database error");
		return;
	}
	j = sandbox_json(&s);
	sandbox_clear(&s);
	arr = json_array();
	if (store_events_list(d->db, id, &ev, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			json_t *e = json_pack("{s:s, s:I}", "to",
					      ev[i].to_state, "at_ms",
					      (json_int_t)ev[i].at_ms);

			json_object_set_new(e, "from",
					    ev[i].from_state[0]
						    ? json_string(ev[i].from_state)
						    : json_null());
			json_object_set_new(e, "reason",
					    ev[i].reason
						    ? json_string(ev[i].reason)
						    : json_null());
			json_array_append_new(arr, e);
		}
		events_free(ev, n);
	}
	json_object_set_new(j, "events", arr);
	reply_json(resp, 200, j);
}

typedef int (*sandbox_op)(struct emberd *d, const char *id,
			  struct sandbox *out, struct apierr *e);

static int do_pause(struct emberd *d, const char *id, struct sandbox *out,
		    struct apierr *e)
{
	return op_pause(d, id, NULL, out, e);
}

static int do_destroy(struct emberd *d, const char *id, struct sandbox *out,
		      struct apierr *e)
{
	return op_destroy(d, id, NULL, out, e);
}

static void sandbox_op_reply(struct emberd *d, const char *id, sandbox_op op,
			     struct response *resp)
{
	struct sandbox s = { 0 };
	struct apierr e = { 0 };

	if (op(d, id, &s, &e) < 0)
		reply_apierr(resp, &e);
	else
		reply_json(resp, 200, sandbox_json(&s));
	sandbox_clear(&s);
}

static void sandbox_timeout(struct emberd *d, const char *id,
			    const struct request *req, struct response *resp)
{
	static const char *const fields[] = { "timeout", "on_timeout", NULL };
	const char *on_timeout = NULL;
	struct sandbox s = { 0 };
	struct apierr e = { 0 };
	int64_t timeout = -1;
	json_t *j = body_object(req, resp, fields);

	if (!j)
		return;
	if (get_int(j, "timeout", &timeout, 1, MAX_TIMEOUT_S, resp) < 0 ||
	    get_on_timeout(j, &on_timeout, resp) < 0)
		goto out;
	if (timeout < 0) {
		reply_error(resp, 400, "invalid_argument",
			    "field \"timeout\" is required");
		goto out;
	}
	if (op_set_timeout(d, id, timeout, on_timeout, &s, &e) < 0)
		reply_apierr(resp, &e);
	else
		reply_json(resp, 200, sandbox_json(&s));
	sandbox_clear(&s);
out:
	json_decref(j);
}

/* The running sandbox's host client, or an error answered. */
static struct ember_hostagent_client *running_client(struct emberd *d,
						 const char *id,
						 struct response *resp)
{
	struct ember_hostagent_client *c = NULL;
	struct sandbox s = { 0 };
	struct host h = { 0 };
	int r = store_sandbox_get(d->db, id, &s);

	if (r == -ENOENT) {
		reply_error(resp, 404, "not_found", "sandbox %s not found", id);
		return NULL;
	}
	if (r < 0) {
		reply_error(resp, 500, "internal", "database error");
		return NULL;
	}
	if (s.state != SBX_RUNNING) {
		reply_error(resp, 409, "conflict",
			    "sandbox %s is %s; it must be running", id,
			    sbx_state_name(s.state));
		goto out;
	}
	r = store_host_get(d->db, s.host_id, &h);
	if (r < 0 || strcmp(h.state, "down") == 0) {
		reply_error(resp, 503, "unavailable",
			    "host %s of sandbox %s does not answer", s.host_id,
			    id);
		goto out;
	}
	if (ember_hostagent_client_new(h.url, d->agent_timeout_ms, &c) < 0)
		reply_error(resp, 500, "internal", "bad host URL %s", h.url);
out:
	free(h.last_error);
	sandbox_clear(&s);
	return c;
}

static void agent_reply_error(struct response *resp, int r,
			      const struct ember_hostagent_error *ae)
{
	if (r == -EHOSTUNREACH || r == -ETIMEDOUT)
		reply_error(resp, 503, "unavailable", "%s", ae->message);
	else if (r == -ENOENT)
		reply_error(resp, 404, "not_found", "%s", ae->message);
	else if (r == -EINVAL || r == -EBUSY || r == -ERANGE)
		reply_error(resp, 400, "invalid_argument", "%s", ae->message);
	else
		reply_error(resp, 502, "agent_error", "%s: %s", ae->code,
			    ae->message);
}

/* --- exec ----------------------------------------------------------------- */

/* A JSON value for bytes: a string when they are UTF-8, else base64. */
static void set_bytes(json_t *obj, const char *key, const uint8_t *p,
		      size_t n)
{
	json_t *s = json_stringn((const char *)p, n);
	char b64key[64];

	if (s) {
		json_object_set_new(obj, key, s);
		return;
	}
	char *b64 = malloc(4 * ((n + 2) / 3) + 1);
	if (!b64)
		return;
	EVP_EncodeBlock((unsigned char *)b64, p, (int)n);
	snprintf(b64key, sizeof(b64key), "%s_base64", key);
	json_object_set_new(obj, b64key, json_string(b64));
	free(b64);
}

struct exec_job {
	struct ember_hostagent_client *client;
	EmberExecRequest req;
	char *sandbox_id, *cwd;
	char **argv;
	size_t argc;
	struct kv_store {
		EmberKeyValue *items;
		EmberKeyValue **ptrs;
	} env;
	json_t *env_json;
	uint8_t *stdin_data;
	/* Streamed: NDJSON lines go to wfd. Buffered: collected here. */
	int wfd;
	struct {
		char *data;
		size_t len;
	} out, err;
	json_t *exit;
};

static void exec_job_free(struct exec_job *j)
{
	if (!j)
		return;
	ember_hostagent_client_free(j->client);
	free(j->sandbox_id);
	free(j->cwd);
	for (size_t i = 0; i < j->argc; i++)
		free(j->argv[i]);
	free(j->argv);
	free(j->env.items);
	free(j->env.ptrs);
	json_decref(j->env_json);
	free(j->stdin_data);
	free(j->out.data);
	free(j->err.data);
	json_decref(j->exit);
	if (j->wfd >= 0)
		close(j->wfd);
	free(j);
}

static int write_line(int fd, json_t *ev)
{
	char *s = json_dumps(ev, JSON_COMPACT);
	int r = -ENOMEM;

	json_decref(ev);
	if (!s)
		return r;
	size_t n = strlen(s);
	r = 0;
	for (size_t off = 0; off < n + 1 && r == 0;) {
		const char *p = off < n ? s + off : "\n";
		size_t len = off < n ? n - off : 1;
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			r = -EPIPE;
		else
			off += (size_t)w;
	}
	free(s);
	return r;
}

static json_t *exit_json(const EmberExecExit *x)
{
	return json_pack("{s:s, s:i, s:i, s:I, s:b}", "type", "exit",
			 "exit_code", x->exit_code, "signal", x->signal,
			 "duration_ms", (json_int_t)x->duration_ms,
			 "timed_out", x->timed_out);
}

static int append(char **data, size_t *len, const uint8_t *p, size_t n)
{
	char *d = realloc(*data, *len + n + 1);

	if (!d)
		return -ENOMEM;
	memcpy(d + *len, p, n);
	*len += n;
	d[*len] = '\0';
	*data = d;
	return 0;
}

static int exec_event(void *ctx, const EmberExecResponse *ev)
{
	struct exec_job *j = ctx;
	const ProtobufCBinaryData *b = NULL;
	const char *type = NULL;

	switch (ev->event_case) {
	case EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_STDOUT_DATA:
		b = &ev->stdout_data;
		type = "stdout";
		break;
	case EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_STDERR_DATA:
		b = &ev->stderr_data;
		type = "stderr";
		break;
	case EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_EXIT:
		json_decref(j->exit);
		j->exit = exit_json(ev->exit);
		return j->wfd >= 0 ? write_line(j->wfd, json_deep_copy(j->exit))
				   : 0;
	default:
		return 0;
	}
	if (j->wfd < 0)
		return strcmp(type, "stdout") == 0
			       ? append(&j->out.data, &j->out.len, b->data,
					b->len)
			       : append(&j->err.data, &j->err.len, b->data,
					b->len);
	json_t *line = json_pack("{s:s}", "type", type);
	set_bytes(line, "data", b->data, b->len);
	return write_line(j->wfd, line);
}

static void *exec_stream_main(void *arg)
{
	struct exec_job *j = arg;
	struct ember_hostagent_error ae = { 0 };
	int r = ember_hostagent_exec(j->client, &j->req, exec_event, j, &ae);

	if (r < 0 && r != -ECANCELED)
		write_line(j->wfd, json_pack("{s:s, s:s, s:s}", "type", "error",
					     "code", ae.code, "message",
					     ae.message));
	else if (r == 0 && !j->exit)
		write_line(j->wfd,
			   json_pack("{s:s, s:s, s:s}", "type", "error", "code",
				     "internal", "message",
				     "the command's exit status never came"));
	exec_job_free(j);
	return NULL;
}

/* The HTTP side of a stream: reads NDJSON lines from the job's pipe. */
struct exec_reader {
	int rfd;
};

static ssize_t exec_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct exec_reader *er = cls;
	struct pollfd p = { .fd = er->rfd, .events = POLLIN };

	for (;;) {
		/* The job's own deadline bounds the wait; poll wakes up every
		 * minute only to retry.
		 * TODO(emberd): an exec without a timeout streams for as long
		 * as its command runs, and emberd's shutdown waits for it. */
		int n = poll(&p, 1, 60000);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (n == 0)
			continue;
		ssize_t r = read(er->rfd, buf, max);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (r == 0)
			return MHD_CONTENT_READER_END_OF_STREAM;
		return r;
	}
}

static void exec_reader_free(void *cls)
{
	struct exec_reader *er = cls;

	close(er->rfd);
	free(er);
}

static void sandbox_exec(struct emberd *d, const char *id,
			 const struct request *req, struct response *resp)
{
	static const char *const fields[] = { "cmd", "command", "env", "cwd",
					      "stdin", "timeout", "stream",
					      NULL };
	const char *command = NULL, *cwd = NULL, *stdin_s = NULL;
	struct exec_job *job = NULL;
	int64_t timeout = 0;
	bool stream = false;
	char *env = NULL;
	json_t *cmd, *j = body_object(req, resp, fields);

	if (!j)
		return;
	if (get_string(j, "command", &command, false, resp) < 0 ||
	    get_string(j, "cwd", &cwd, false, resp) < 0 ||
	    get_string(j, "stdin", &stdin_s, false, resp) < 0 ||
	    get_int(j, "timeout", &timeout, 0, 24 * 3600, resp) < 0 ||
	    get_bool(j, "stream", &stream, resp) < 0 ||
	    get_string_map(j, "env", &env, resp) < 0)
		goto out;
	cmd = json_object_get(j, "cmd");
	if ((cmd && command) || (!cmd && !command)) {
		reply_error(resp, 400, "invalid_argument",
			    "give either \"cmd\" (an array of strings) or \"command\" (a shell command line)");
		goto out;
	}
	if (cmd && (!json_is_array(cmd) || json_array_size(cmd) == 0)) {
		reply_error(resp, 400, "invalid_argument",
			    "field \"cmd\" must be a non-empty array of strings");
		goto out;
	}
	for (size_t i = 0; cmd && i < json_array_size(cmd); i++) {
		if (!json_is_string(json_array_get(cmd, i))) {
			reply_error(resp, 400, "invalid_argument",
				    "field \"cmd\" must be a non-empty array of strings");
			goto out;
		}
	}
	job = calloc(1, sizeof(*job));
	if (!job)
		goto nomem;
	job->wfd = -1;
	job->client = running_client(d, id, resp);
	if (!job->client)
		goto out;
	ember__hostagent__v1__exec_request__init(&job->req);
	job->argc = cmd ? json_array_size(cmd) : 3;
	job->argv = calloc(job->argc + 1, sizeof(char *));
	job->sandbox_id = strdup(id);
	job->cwd = strdup(cwd ? cwd : "");
	if (!job->argv || !job->sandbox_id || !job->cwd)
		goto nomem;
	for (size_t i = 0; i < job->argc; i++) {
		const char *a = cmd ? json_string_value(json_array_get(cmd, i))
			      : i == 0 ? "/bin/sh"
			      : i == 1 ? "-c"
				       : command;

		job->argv[i] = strdup(a);
		if (!job->argv[i])
			goto nomem;
	}
	job->env_json = parse_object_text(env);
	size_t ne = json_object_size(job->env_json), k = 0;
	const char *key;
	json_t *val;
	job->env.items = calloc(ne + 1, sizeof(EmberKeyValue));
	job->env.ptrs = calloc(ne + 1, sizeof(EmberKeyValue *));
	if (!job->env.items || !job->env.ptrs)
		goto nomem;
	json_object_foreach(job->env_json, key, val) {
		ember__hostagent__v1__key_value__init(&job->env.items[k]);
		job->env.items[k].key = (char *)key;
		job->env.items[k].value = (char *)json_string_value(val);
		job->env.ptrs[k] = &job->env.items[k];
		k++;
	}
	if (stdin_s) {
		job->stdin_data = (uint8_t *)strdup(stdin_s);
		if (!job->stdin_data)
			goto nomem;
		job->req.stdin.data = job->stdin_data;
		job->req.stdin.len = strlen(stdin_s);
	}
	job->req.sandbox_id = job->sandbox_id;
	job->req.n_argv = job->argc;
	job->req.argv = job->argv;
	job->req.n_env = ne;
	job->req.env = job->env.ptrs;
	job->req.cwd = job->cwd;
	job->req.timeout_ms = (uint32_t)(timeout * 1000);

	if (stream) {
		struct exec_reader *er = calloc(1, sizeof(*er));
		int fds[2];
		pthread_t th;

		if (!er || pipe2(fds, O_CLOEXEC) < 0) {
			free(er);
			goto nomem;
		}
		er->rfd = fds[0];
		job->wfd = fds[1];
		if (pthread_create(&th, NULL, exec_stream_main, job) != 0) {
			close(fds[0]);
			free(er);
			goto nomem;
		}
		pthread_detach(th);
		job = NULL;	/* the thread owns it */
		resp->status = 200;
		resp->content_type = "application/x-ndjson";
		resp->reader = exec_read;
		resp->reader_ctx = er;
		resp->reader_free = exec_reader_free;
		goto out;
	}

	struct ember_hostagent_error ae = { 0 };
	int r = ember_hostagent_exec(job->client, &job->req, exec_event, job, &ae);
	if (r < 0) {
		agent_reply_error(resp, r, &ae);
		goto out;
	}
	if (!job->exit) {
		reply_error(resp, 502, "agent_error",
			    "the command's exit status never came");
		goto out;
	}
	json_t *res = json_deep_copy(job->exit);
	json_object_del(res, "type");
	set_bytes(res, "stdout", (const uint8_t *)(job->out.data ? job->out.data : ""),
		  job->out.len);
	set_bytes(res, "stderr", (const uint8_t *)(job->err.data ? job->err.data : ""),
		  job->err.len);
	reply_json(resp, 200, res);
	goto out;
nomem:
	reply_error(resp, 500, "internal", "out of memory");
out:
	exec_job_free(job);
	free(env);
	json_decref(j);
}

/* --- files ---------------------------------------------------------------- */

static void sandbox_files(struct emberd *d, const char *id,
			  const struct request *req, struct response *resp)
{
	const char *path = request_query(req, "path");
	const char *list = request_query(req, "list");
	struct ember_hostagent_client *c;
	struct ember_hostagent_error ae = { 0 };
	int r;

	if (!path || path[0] != '/') {
		reply_error(resp, 400, "invalid_argument",
			    "query parameter \"path\" must be an absolute path");
		return;
	}
	c = running_client(d, id, resp);
	if (!c)
		return;
	if (strcmp(req->method, "GET") == 0 && list &&
	    strcmp(list, "true") == 0) {
		EmberListFilesRequest q = EMBER__HOSTAGENT__V1__LIST_FILES_REQUEST__INIT;
		EmberListFilesResponse *a = NULL;

		q.sandbox_id = (char *)id;
		q.path = (char *)path;
		r = ember_hostagent_list_files(c, &q, &a, &ae);
		if (r == 0) {
			json_t *arr = json_array();

			for (size_t i = 0; i < a->n_entries; i++) {
				const EmberFileInfo *f = a->entries[i];

				json_array_append_new(
					arr,
					json_pack("{s:s, s:s, s:I, s:i, s:b, s:I}",
						  "name", f->name, "path",
						  f->path, "size",
						  (json_int_t)f->size, "mode",
						  (int)f->mode, "is_dir",
						  f->is_dir, "mtime_ms",
						  (json_int_t)f->mtime_ms));
			}
			reply_json(resp, 200, json_pack("{s:o}", "entries", arr));
			ember__hostagent__v1__list_files_response__free_unpacked(
				a, NULL);
		}
	} else if (strcmp(req->method, "GET") == 0) {
		EmberReadFileRequest q = EMBER__HOSTAGENT__V1__READ_FILE_REQUEST__INIT;
		EmberReadFileResponse *a = NULL;

		q.sandbox_id = (char *)id;
		q.path = (char *)path;
		r = ember_hostagent_read_file(c, &q, &a, &ae);
		if (r == 0) {
			resp->status = 200;
			resp->content_type = "application/octet-stream";
			resp->body = malloc(a->content.len + 1);
			if (resp->body) {
				memcpy(resp->body, a->content.data,
				       a->content.len);
				resp->len = a->content.len;
			}
			ember__hostagent__v1__read_file_response__free_unpacked(
				a, NULL);
		}
	} else if (strcmp(req->method, "PUT") == 0) {
		EmberWriteFileRequest q = EMBER__HOSTAGENT__V1__WRITE_FILE_REQUEST__INIT;
		EmberWriteFileResponse *a = NULL;
		const char *mode = request_query(req, "mode");

		q.sandbox_id = (char *)id;
		q.path = (char *)path;
		q.content.data = (uint8_t *)req->body;
		q.content.len = req->body_len;
		q.mode = mode ? (uint32_t)strtoul(mode, NULL, 8) : 0644;
		q.make_parents = true;
		r = ember_hostagent_write_file(c, &q, &a, &ae);
		if (r == 0) {
			reply_json(resp, 200,
				   json_pack("{s:s, s:I}", "path", path,
					     "bytes_written",
					     (json_int_t)a->bytes_written));
			ember__hostagent__v1__write_file_response__free_unpacked(
				a, NULL);
		}
	} else {
		EmberDeleteFileRequest q = EMBER__HOSTAGENT__V1__DELETE_FILE_REQUEST__INIT;
		EmberDeleteFileResponse *a = NULL;
		const char *rec = request_query(req, "recursive");

		q.sandbox_id = (char *)id;
		q.path = (char *)path;
		q.recursive = rec && strcmp(rec, "true") == 0;
		r = ember_hostagent_delete_file(c, &q, &a, &ae);
		if (r == 0) {
			resp->status = 204;
			ember__hostagent__v1__delete_file_response__free_unpacked(
				a, NULL);
		}
	}
	if (r < 0)
		agent_reply_error(resp, r, &ae);
	ember_hostagent_client_free(c);
}

/* --- snapshots, templates, hosts ----------------------------------------- */

static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.'))
			return false;
	}
	return s[0] != '.';
}

static void snapshot_create(struct emberd *d, const struct request *req,
			    struct response *resp)
{
	static const char *const fields[] = { "sandbox_id", "name",
					      "stop_source", NULL };
	const char *sid = NULL, *name = NULL;
	bool stop = false;
	struct template t = { 0 };
	struct apierr e = { 0 };
	json_t *j = body_object(req, resp, fields);

	if (!j)
		return;
	if (get_string(j, "sandbox_id", &sid, true, resp) < 0 ||
	    get_string(j, "name", &name, true, resp) < 0 ||
	    get_bool(j, "stop_source", &stop, resp) < 0)
		goto out;
	if (!valid_name(name)) {
		reply_error(resp, 400, "invalid_argument",
			    "a snapshot name has 1 to 64 of a-z A-Z 0-9 . _ - and does not start with a dot");
		goto out;
	}
	if (op_snapshot_create(d, sid, name, stop, &t, &e) < 0)
		reply_apierr(resp, &e);
	else
		reply_json(resp, 201, template_json(&t));
	template_clear(&t);
out:
	json_decref(j);
}

static void templates_reply(struct emberd *d, const char *kind,
			    const char *key, struct response *resp)
{
	struct template *tv;
	size_t n;
	json_t *arr;

	if (store_template_list(d->db, kind, &tv, &n) < 0) {
		reply_error(resp, 500, "internal", "database error");
		return;
	}
	arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, template_json(&tv[i]));
	templates_free(tv, n);
	reply_json(resp, 200, json_pack("{s:o}", key, arr));
}

static void snapshot_get(struct emberd *d, const char *name,
			 struct response *resp)
{
	struct template t = { 0 };
	int r = store_template_get(d->db, name, &t);

	if (r == 0 && strcmp(t.kind, "snapshot") != 0)
		r = -ENOENT;
	if (r == -ENOENT)
		reply_error(resp, 404, "not_found", "snapshot %s not found",
			    name);
	else if (r < 0)
		reply_error(resp, 500, "internal", "database error");
	else
		reply_json(resp, 200, template_json(&t));
	template_clear(&t);
}

static void hosts_reply(struct emberd *d, struct response *resp)
{
	struct host *hv;
	size_t n;
	json_t *arr;

	if (store_host_list(d->db, &hv, &n) < 0) {
		reply_error(resp, 500, "internal", "database error");
		return;
	}
	arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, host_json(&hv[i]));
	hosts_free(hv, n);
	reply_json(resp, 200, json_pack("{s:o}", "hosts", arr));
}

static void metrics_reply(struct emberd *d, struct response *resp)
{
	static const char *const states[] = { "starting", "running", "pausing",
					      "paused", "resuming", "stopping",
					      "stopped", "error" };
	struct db_rows *rows = NULL;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f) {
		reply_error(resp, 500, "internal", "out of memory");
		return;
	}
	fprintf(f, "# HELP emberd_sandboxes Sandboxes by state.\n"
		   "# TYPE emberd_sandboxes gauge\n");
	db_query(d->db, "SELECT state, COUNT(*) FROM sandboxes GROUP BY state",
		 0, NULL, &rows);
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		long count = 0;

		for (int k = 0; rows && k < rows->nrows; k++)
			if (strcmp(db_cell(rows, k, 0), states[i]) == 0)
				count = atol(db_cell(rows, k, 1));
		fprintf(f, "emberd_sandboxes{state=\"%s\"} %ld\n", states[i],
			count);
	}
	db_rows_free(rows);
	rows = NULL;
	fprintf(f, "# HELP emberd_hosts Hosts by state.\n"
		   "# TYPE emberd_hosts gauge\n");
	db_query(d->db, "SELECT state, COUNT(*) FROM hosts GROUP BY state", 0,
		 NULL, &rows);
	for (int k = 0; rows && k < rows->nrows; k++)
		fprintf(f, "emberd_hosts{state=\"%s\"} %s\n",
			db_cell(rows, k, 0), db_cell(rows, k, 1));
	db_rows_free(rows);
	pthread_mutex_lock(&d->lock);
	fprintf(f,
		"# HELP emberd_requests_total API requests answered.\n"
		"# TYPE emberd_requests_total counter\n"
		"emberd_requests_total %" PRIu64 "\n"
		"# HELP emberd_requests_failed_total API requests answered with an error status.\n"
		"# TYPE emberd_requests_failed_total counter\n"
		"emberd_requests_failed_total %" PRIu64 "\n"
		"# HELP emberd_reconcile_runs_total Reconciler passes.\n"
		"# TYPE emberd_reconcile_runs_total counter\n"
		"emberd_reconcile_runs_total %" PRIu64 "\n",
		d->requests_total, d->requests_failed, d->reconcile_runs);
	pthread_mutex_unlock(&d->lock);
	fclose(f);
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	resp->body = buf;
	resp->len = len;
}

/* --- routing -------------------------------------------------------------- */

static bool authorized(struct emberd *d, const struct request *req)
{
	const char *h = request_header(req, "Authorization");

	if (!h || strncmp(h, "Bearer ", 7) != 0)
		return false;
	return store_key_check(d->db, h + 7) == 0;
}

/* Splits "/v1/a/b/c" into at most 4 segments after /v1. */
static int split(const char *path, char seg[4][160])
{
	int n = 0;

	if (strncmp(path, "/v1/", 4) != 0)
		return -1;
	path += 4;
	while (*path && n < 4) {
		const char *slash = strchr(path, '/');
		size_t len = slash ? (size_t)(slash - path) : strlen(path);

		if (len == 0 || len >= 160)
			return -1;
		memcpy(seg[n], path, len);
		seg[n][len] = '\0';
		n++;
		path += len;
		if (*path == '/')
			path++;
	}
	return *path ? -1 : n;
}

static void method_not_allowed(struct response *resp, const char *method,
			       const char *path)
{
	reply_error(resp, 405, "method_not_allowed", "%s is not allowed on %s",
		    method, path);
}

static void route(struct emberd *d, const struct request *req,
		  struct response *resp)
{
	const char *m = req->method;
	char seg[4][160];
	int n;

	if (strcmp(req->path, "/healthz") == 0) {
		if (strcmp(m, "GET") != 0)
			return method_not_allowed(resp, m, req->path);
		reply_json(resp, 200, json_pack("{s:s}", "status", "ok"));
		return;
	}
	if (!authorized(d, req)) {
		reply_error(resp, 401, "unauthenticated",
			    "a valid API key is required (Authorization: Bearer <key>)");
		return;
	}
	if (strcmp(req->path, "/metrics") == 0) {
		if (strcmp(m, "GET") != 0)
			return method_not_allowed(resp, m, req->path);
		return metrics_reply(d, resp);
	}
	n = split(req->path, seg);
	if (n <= 0)
		goto not_found;
	if (strcmp(seg[0], "sandboxes") == 0) {
		if (n == 1) {
			if (strcmp(m, "POST") == 0)
				return sandbox_create(d, req, resp);
			if (strcmp(m, "GET") == 0)
				return sandbox_list(d, req, resp);
			return method_not_allowed(resp, m, req->path);
		}
		if (n == 2) {
			if (strcmp(m, "GET") == 0)
				return sandbox_get(d, seg[1], resp);
			if (strcmp(m, "DELETE") == 0)
				return sandbox_op_reply(d, seg[1], do_destroy,
							resp);
			return method_not_allowed(resp, m, req->path);
		}
		if (n == 3 && strcmp(seg[2], "files") == 0) {
			if (strcmp(m, "GET") && strcmp(m, "PUT") &&
			    strcmp(m, "DELETE"))
				return method_not_allowed(resp, m, req->path);
			return sandbox_files(d, seg[1], req, resp);
		}
		if (n == 3 && strcmp(m, "POST") != 0 &&
		    (strcmp(seg[2], "pause") == 0 ||
		     strcmp(seg[2], "resume") == 0 ||
		     strcmp(seg[2], "timeout") == 0 ||
		     strcmp(seg[2], "exec") == 0))
			return method_not_allowed(resp, m, req->path);
		if (n == 3 && strcmp(seg[2], "pause") == 0)
			return sandbox_op_reply(d, seg[1], do_pause, resp);
		if (n == 3 && strcmp(seg[2], "resume") == 0)
			return sandbox_op_reply(d, seg[1], op_resume, resp);
		if (n == 3 && strcmp(seg[2], "timeout") == 0)
			return sandbox_timeout(d, seg[1], req, resp);
		if (n == 3 && strcmp(seg[2], "exec") == 0)
			return sandbox_exec(d, seg[1], req, resp);
		goto not_found;
	}
	if (strcmp(seg[0], "snapshots") == 0) {
		if (n == 1 && strcmp(m, "POST") == 0)
			return snapshot_create(d, req, resp);
		if (n == 1 && strcmp(m, "GET") == 0)
			return templates_reply(d, "snapshot", "snapshots", resp);
		if (n == 2 && strcmp(m, "GET") == 0)
			return snapshot_get(d, seg[1], resp);
		if (n == 2 && strcmp(m, "DELETE") == 0) {
			struct apierr e = { 0 };

			if (op_snapshot_delete(d, seg[1], &e) < 0)
				reply_apierr(resp, &e);
			else
				resp->status = 204;
			return;
		}
		if (n <= 2)
			return method_not_allowed(resp, m, req->path);
		goto not_found;
	}
	if (n == 1 && strcmp(seg[0], "templates") == 0) {
		if (strcmp(m, "GET") != 0)
			return method_not_allowed(resp, m, req->path);
		return templates_reply(d, NULL, "templates", resp);
	}
	if (n == 1 && strcmp(seg[0], "hosts") == 0) {
		if (strcmp(m, "GET") != 0)
			return method_not_allowed(resp, m, req->path);
		return hosts_reply(d, resp);
	}
not_found:
	reply_error(resp, 404, "not_found", "no such endpoint: %s %s", m,
		    req->path);
}

void api_handle(void *ctx, const struct request *req, struct response *resp)
{
	struct emberd *d = ctx;

	route(d, req, resp);
	if (!resp->status)
		resp->status = 200;
	pthread_mutex_lock(&d->lock);
	d->requests_total++;
	if (resp->status >= 400)
		d->requests_failed++;
	pthread_mutex_unlock(&d->lock);
	log_debug("%s %s -> %u", req->method, req->path, resp->status);
}
