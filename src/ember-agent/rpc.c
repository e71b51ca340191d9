// SPDX-License-Identifier: Apache-2.0
/*
 * The Connect server of proto/hostagent.proto, on libmicrohttpd with a
 * thread per connection (a slow CreateSandbox or a long Exec never holds up
 * other calls).
 *
 *   POST /ember.hostagent.v1.HostAgent/<Method>
 *        Content-Type application/proto | application/json (unary)
 *        200 + the response in the same encoding, or
 *        4xx/5xx + {"code": "<connect code>", "message": "..."}
 *   POST .../Exec  Content-Type application/connect+proto | +json
 *        the request in one envelope; 200 and a stream of envelopes
 *        (ExecResponse each), closed by an end-of-stream envelope (flag
 *        0x02) holding {} or {"error": {"code", "message"}}
 *   GET /metrics   Prometheus text
 *
 * Request bodies are read whole (up to a bound); a unary handler fills one
 * response message that is encoded as the request was.
 */
#include "agent.h"

#include <ember/agent_client.h>
#include <ember/hostagent.h>
#include <ember/log.h>
#include <ember/util.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#define PATH_PREFIX "/" EMBER_HOSTAGENT_SERVICE "/"
/* A WriteFile of the largest message, base64 in JSON, plus slack. */
#define MAX_BODY ((size_t)EMBER_HOSTAGENT_MAX_MESSAGE / 3 * 4 + (1u << 20))
#define GUEST_TIMEOUT_MS 30000

struct rpc_server {
	struct agent *a;
	struct MHD_Daemon *mhd;
	unsigned port;
};

/* One call in progress. */
struct call {
	struct agent *a;
	bool json;		/* application/json (else protobuf) */
	const char *method;
	char sandbox_id[AGENT_ID_MAX + 1];	/* for log lines */
	unsigned status;
	char *body;		/* response */
	size_t len;
	struct agent_err err;
};

static void call_id(struct call *c, const char *id)
{
	snprintf(c->sandbox_id, sizeof(c->sandbox_id), "%s", id ? id : "");
}

/* The id for log lines: NULL (the program's) when the call names none. */
static const char *log_id(const struct call *c)
{
	return c->sandbox_id[0] ? c->sandbox_id : NULL;
}

static const char *code_of(int r)
{
	const char *c = ember_connect_code_from_errno(r);

	return c ? c : "unknown";
}

/* Encodes m as the answer of the call. */
static int reply(struct call *c, const ProtobufCMessage *m)
{
	if (c->json) {
		json_t *j = ember_pb_to_json(m);

		c->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		if (!c->body)
			return -ENOMEM;
		c->len = strlen(c->body);
		return 0;
	}
	c->len = protobuf_c_message_get_packed_size(m);
	c->body = malloc(c->len ? c->len : 1);
	if (!c->body)
		return -ENOMEM;
	protobuf_c_message_pack(m, (uint8_t *)c->body);
	return 0;
}

/* --- messages from the table ------------------------------------------------ */

struct kvs {
	EmberKeyValue *items;
	EmberKeyValue **ptrs;
	size_t n;
};

static int kvs_from_object(json_t *o, struct kvs *k)
{
	const char *key;
	json_t *v;
	size_t i = 0, n = json_object_size(o);

	memset(k, 0, sizeof(*k));
	if (!n)
		return 0;
	k->items = calloc(n, sizeof(*k->items));
	k->ptrs = calloc(n, sizeof(*k->ptrs));
	if (!k->items || !k->ptrs) {
		free(k->items);
		free(k->ptrs);
		return -ENOMEM;
	}
	json_object_foreach(o, key, v) {
		ember__hostagent__v1__key_value__init(&k->items[i]);
		k->items[i].key = (char *)key;
		k->items[i].value = (char *)(json_string_value(v) ? json_string_value(v) : "");
		k->ptrs[i] = &k->items[i];
		i++;
	}
	k->n = i;
	return 0;
}

static void kvs_free(struct kvs *k)
{
	free(k->items);
	free(k->ptrs);
}

/* Fills m from s; the strings stay s's, the key-values k's. */
static int sandbox_msg(const struct sandbox *s, EmberAgentSandbox *m,
		       struct kvs *k)
{
	ember__hostagent__v1__sandbox__init(m);
	m->sandbox_id = (char *)s->id;
	m->template_name = (char *)s->template_name;
	m->state = (Ember__Hostagent__V1__SandboxState)s->state;
	m->vcpus = s->vcpus;
	m->memory_mib = s->memory_mib;
	m->created_at_ms = s->created_ms;
	m->vmm_pid = s->vmm_pid;
	m->error = (char *)s->error;
	if (kvs_from_object(s->metadata, k) < 0)
		return -ENOMEM;
	m->n_metadata = k->n;
	m->metadata = k->ptrs;
	return 0;
}

static json_t *object_from_kvs(EmberKeyValue **kv, size_t n)
{
	json_t *o = json_object();

	for (size_t i = 0; o && i < n; i++)
		json_object_set_new(o, kv[i]->key, json_string(kv[i]->value));
	return o;
}

/* --- unary methods ----------------------------------------------------------- */

static int m_get_host_info(struct call *c, const ProtobufCMessage *rq)
{
	EmberGetHostInfoResponse m = EMBER__HOSTAGENT__V1__GET_HOST_INFO_RESPONSE__INIT;
	struct agent *a = c->a;
	struct host_counts hc;
	struct utsname un;
	struct sysinfo si;
	struct statvfs sv;
	char hostname[256] = "", **names = NULL;
	size_t n_names = 0;
	int r;

	(void)rq;
	sandbox_counts(a, &hc);
	uname(&un);
	gethostname(hostname, sizeof(hostname) - 1);
	sysinfo(&si);
	uint64_t total_mib = (uint64_t)si.totalram * si.mem_unit >> 20;
	uint64_t avail_mib = ((uint64_t)si.freeram + si.bufferram) * si.mem_unit >> 20;
	uint64_t unclaimed = total_mib > hc.memory_used_mib
				     ? total_mib - hc.memory_used_mib : 0;
	unsigned cpus = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	char tdir[PATH_MAX];

	m.host_id = a->host_id;
	m.hostname = hostname;
	m.agent_version = "ember-agent " EMBER_VERSION;
	m.vmm_version = a->vmm_version;
	m.kernel_version = un.release;
	m.total_vcpus = cpus;
	m.free_vcpus = cpus > hc.vcpus_used ? cpus - hc.vcpus_used : 0;
	m.total_memory_mib = total_mib;
	/* Guest memory is claimed lazily: what sandboxes may still touch
	 * counts as used. */
	m.free_memory_mib = EMBER_MIN(avail_mib, unclaimed);
	m.disk_free_bytes = statvfs(a->cfg.state_dir, &sv) == 0
				    ? (uint64_t)sv.f_bavail * sv.f_frsize : 0;
	m.running_sandboxes = hc.running;
	m.paused_sandboxes = hc.paused;
	m.protocol_version = "1";
	snprintf(tdir, sizeof(tdir), "%s/templates", a->cfg.state_dir);
	/* Templates whose files are complete and not deleted. */
	DIR *d = opendir(tdir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char p1[PATH_MAX + 300], p2[PATH_MAX + 300], **nv;

		if (!agent_valid_id(de->d_name))
			continue;
		snprintf(p1, sizeof(p1), "%s/%s/template.json", tdir, de->d_name);
		snprintf(p2, sizeof(p2), "%s/%s/deleted", tdir, de->d_name);
		if (access(p1, F_OK) < 0 || access(p2, F_OK) == 0)
			continue;
		nv = realloc(names, (n_names + 1) * sizeof(*names));
		if (!nv)
			break;
		names = nv;
		if ((names[n_names] = strdup(de->d_name)))
			n_names++;
	}
	if (d)
		closedir(d);
	m.n_snapshot_templates = n_names;
	m.snapshot_templates = names;
	r = reply(c, &m.base);
	for (size_t i = 0; i < n_names; i++)
		free(names[i]);
	free(names);
	return r;
}

/* A request's PrefetchMode: -EINVAL for a value this agent does not know. */
static int prefetch_from_msg(struct call *c, int v, enum prefetch_mode *out)
{
	if (v < PREFETCH_DEFAULT || v > PREFETCH_EAGER) {
		agent_err_set(&c->err, "prefetch %d is not a PrefetchMode", v);
		return -EINVAL;
	}
	*out = (enum prefetch_mode)v;
	return 0;
}

static void restore_msg(const struct restore_stats *st, EmberRestoreStats *m)
{
	*m = (EmberRestoreStats)EMBER__HOSTAGENT__V1__RESTORE_STATS__INIT;
	m->prefetch = (Ember__Hostagent__V1__PrefetchMode)st->mode;
	m->faults_until_ready = st->faults;
	m->prefetched_pages = st->prefetched_pages;
	m->bytes_copied = st->bytes_copied;
	m->prefetch_ms = st->prefetch_ms;
}

static int m_create_sandbox(struct call *c, const ProtobufCMessage *rq)
{
	const EmberCreateSandboxRequest *q = (const void *)rq;
	EmberCreateSandboxResponse m = EMBER__HOSTAGENT__V1__CREATE_SANDBOX_RESPONSE__INIT;
	EmberAgentSandbox sm;
	EmberRestoreStats rm;
	struct restore_stats st = { 0 };
	struct create_args ca = { 0 };
	struct sandbox *s = NULL;
	struct kvs k = { 0 };
	uint64_t t0 = ember_now_ns();
	int r;

	call_id(c, q->sandbox_id);
	r = prefetch_from_msg(c, (int)q->prefetch, &ca.prefetch);
	if (r < 0)
		return r;
	ca.id = q->sandbox_id;
	ca.template_name = q->template_name;
	ca.kernel = c->a->cfg.kernel;
	ca.rootfs = c->a->cfg.rootfs;
	/* base_image and snapshot_template share a union (oneof). */
	if (q->source_case ==
		    EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__SOURCE_BASE_IMAGE &&
	    q->base_image) {
		if (q->base_image->kernel_path && *q->base_image->kernel_path)
			ca.kernel = q->base_image->kernel_path;
		if (q->base_image->rootfs_path && *q->base_image->rootfs_path)
			ca.rootfs = q->base_image->rootfs_path;
		ca.boot_args = q->base_image->boot_args;
	}
	ca.vcpus = q->vcpus;
	ca.memory_mib = q->memory_mib;
	ca.network = q->network;
	ca.env = object_from_kvs(q->env, q->n_env);
	ca.metadata = object_from_kvs(q->metadata, q->n_metadata);
	if (!ca.env || !ca.metadata) {
		r = -ENOMEM;
		goto out;
	}
	if (q->source_case ==
	    EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__SOURCE_SNAPSHOT_TEMPLATE)
		r = snapshot_spawn(c->a, &ca, q->snapshot_template, &s, &st,
				   &c->err);
	else
		r = sandbox_create(c->a, &ca, &s, &c->err);
	if (r < 0)
		goto out;
	r = sandbox_msg(s, &sm, &k);
	if (r < 0)
		goto out;
	m.sandbox = &sm;
	m.start_ms = (ember_now_ns() - t0) / 1000000;
	if (st.known) {
		restore_msg(&st, &rm);
		m.restore = &rm;
	}
	r = reply(c, &m.base);
out:
	kvs_free(&k);
	sandbox_free(s);
	json_decref(ca.env);
	json_decref(ca.metadata);
	return r;
}

static int m_list_sandboxes(struct call *c, const ProtobufCMessage *rq)
{
	EmberListSandboxesResponse m = EMBER__HOSTAGENT__V1__LIST_SANDBOXES_RESPONSE__INIT;
	struct sandbox **v = NULL;
	EmberAgentSandbox *msgs = NULL, **ptrs = NULL;
	struct kvs *ks = NULL;
	size_t n = 0, listed = 0;
	int r;

	(void)rq;
	r = sandbox_list(c->a, &v, &n);
	if (r < 0)
		return r;
	msgs = calloc(n + 1, sizeof(*msgs));
	ptrs = calloc(n + 1, sizeof(*ptrs));
	ks = calloc(n + 1, sizeof(*ks));
	if (!msgs || !ptrs || !ks) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!sbx_state_listed(v[i]->state))
			continue;
		r = sandbox_msg(v[i], &msgs[listed], &ks[listed]);
		if (r < 0)
			goto out;
		ptrs[listed] = &msgs[listed];
		listed++;
	}
	m.n_sandboxes = listed;
	m.sandboxes = ptrs;
	r = reply(c, &m.base);
out:
	for (size_t i = 0; ks && i < listed; i++)
		kvs_free(&ks[i]);
	for (size_t i = 0; i < n; i++)
		sandbox_free(v[i]);
	free(v);
	free(msgs);
	free(ptrs);
	free(ks);
	return r;
}

static int m_destroy_sandbox(struct call *c, const ProtobufCMessage *rq)
{
	const EmberDestroySandboxRequest *q = (const void *)rq;
	EmberDestroySandboxResponse m = EMBER__HOSTAGENT__V1__DESTROY_SANDBOX_RESPONSE__INIT;
	int r;

	call_id(c, q->sandbox_id);
	r = sandbox_destroy(c->a, q->sandbox_id, &c->err);
	return r < 0 ? r : reply(c, &m.base);
}

static int m_pause_sandbox(struct call *c, const ProtobufCMessage *rq)
{
	const EmberPauseSandboxRequest *q = (const void *)rq;
	EmberPauseSandboxResponse m = EMBER__HOSTAGENT__V1__PAUSE_SANDBOX_RESPONSE__INIT;
	struct pause_result pr = { 0 };
	uint64_t t0 = ember_now_ns();
	int r;

	call_id(c, q->sandbox_id);
	r = snapshot_pause(c->a, q->sandbox_id, &pr, &c->err);
	if (r < 0)
		return r;
	m.sandbox_id = q->sandbox_id;
	m.generation = pr.generation;
	m.memory_bytes_written = pr.memory_written;
	m.memory_bytes_total = pr.memory_total;
	m.disk_bytes = pr.disk_bytes;
	m.vmstate_bytes = pr.vmstate_bytes;
	m.pause_ms = (ember_now_ns() - t0) / 1000000;
	return reply(c, &m.base);
}

static int m_resume_sandbox(struct call *c, const ProtobufCMessage *rq)
{
	const EmberResumeSandboxRequest *q = (const void *)rq;
	EmberResumeSandboxResponse m = EMBER__HOSTAGENT__V1__RESUME_SANDBOX_RESPONSE__INIT;
	EmberAgentSandbox sm;
	EmberRestoreStats rm;
	struct restore_stats st = { 0 };
	enum prefetch_mode mode;
	struct sandbox *s = NULL;
	struct kvs k = { 0 };
	uint64_t t0 = ember_now_ns();
	int r;

	call_id(c, q->sandbox_id);
	r = prefetch_from_msg(c, (int)q->prefetch, &mode);
	if (r < 0)
		return r;
	r = snapshot_resume(c->a, q->sandbox_id, mode, &s, &st, &c->err);
	if (r < 0)
		return r;
	r = sandbox_msg(s, &sm, &k);
	if (r == 0) {
		m.sandbox = &sm;
		m.resume_ms = (ember_now_ns() - t0) / 1000000;
		if (st.known) {
			restore_msg(&st, &rm);
			m.restore = &rm;
		}
		r = reply(c, &m.base);
	}
	kvs_free(&k);
	sandbox_free(s);
	return r;
}

static int m_create_snapshot(struct call *c, const ProtobufCMessage *rq)
{
	const EmberCreateSnapshotRequest *q = (const void *)rq;
	EmberCreateSnapshotResponse m = EMBER__HOSTAGENT__V1__CREATE_SNAPSHOT_RESPONSE__INIT;
	EmberSnapshotTemplate tm = EMBER__HOSTAGENT__V1__SNAPSHOT_TEMPLATE__INIT;
	struct template_info t;
	uint64_t t0 = ember_now_ns();
	int r;

	call_id(c, q->sandbox_id);
	if (!agent_valid_id(q->name)) {
		agent_err_set(&c->err, "snapshot name '%s' is not 1 to 63 letters, digits, '-' or '_'",
			      q->name);
		return -EINVAL;
	}
	r = snapshot_template_create(c->a, q->sandbox_id, q->name,
				     q->stop_source, &t, &c->err);
	if (r < 0)
		return r;
	tm.name = t.name;
	tm.vcpus = t.vcpus;
	tm.memory_mib = t.memory_mib;
	tm.memory_bytes = t.memory_bytes;
	tm.disk_bytes = t.disk_bytes;
	tm.source_sandbox_id = t.source;
	tm.created_at_ms = t.created_ms;
	m.template_ = &tm;
	m.snapshot_ms = (ember_now_ns() - t0) / 1000000;
	return reply(c, &m.base);
}

static int m_delete_snapshot(struct call *c, const ProtobufCMessage *rq)
{
	const EmberDeleteSnapshotRequest *q = (const void *)rq;
	EmberDeleteSnapshotResponse m = EMBER__HOSTAGENT__V1__DELETE_SNAPSHOT_RESPONSE__INIT;
	bool kept = false;
	int r = snapshot_template_delete(c->a, q->name, &kept, &c->err);

	if (r < 0)
		return r;
	m.files_kept = kept;
	return reply(c, &m.base);
}

/* The guest agent's error as the call's. */
static int guest_failed(struct call *c, struct ember_agent *g, const char *what,
			int r)
{
	agent_err_set(&c->err, "%s: %s", what,
		      g && ember_agent_last_error(g) && *ember_agent_last_error(g)
			      ? ember_agent_last_error(g) : strerror(-r));
	olog_warn(log_id(c), "%s", c->err.msg);
	return r;
}

static int m_read_file(struct call *c, const ProtobufCMessage *rq)
{
	const EmberReadFileRequest *q = (const void *)rq;
	EmberReadFileResponse m = EMBER__HOSTAGENT__V1__READ_FILE_RESPONSE__INIT;
	uint64_t limit = q->max_bytes ? q->max_bytes : AGENT_READ_LIMIT;
	struct ember_agent *g = NULL;
	struct ember_agent_stat st;
	uint8_t *data = NULL;
	uint64_t size = 0;
	int fd = -1, r;

	call_id(c, q->sandbox_id);
	r = sandbox_guest(c->a, q->sandbox_id, GUEST_TIMEOUT_MS, &g, NULL, &c->err);
	if (r < 0)
		return r;
	r = ember_agent_stat(g, q->path, &st);
	if (r < 0) {
		guest_failed(c, g, q->path, r);
		goto out;
	}
	if (st.type == 'd') {
		agent_err_set(&c->err, "%s is a folder", q->path);
		r = -EINVAL;
		goto out;
	}
	if (st.size > limit || st.size > EMBER_HOSTAGENT_MAX_MESSAGE) {
		agent_err_set(&c->err, "%s has %" PRIu64 " bytes, over the limit of %" PRIu64,
			      q->path, st.size, EMBER_MIN(limit, (uint64_t)EMBER_HOSTAGENT_MAX_MESSAGE));
		r = -ERANGE;
		goto out;
	}
	fd = memfd_create("ember-read", MFD_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = ember_agent_read_file(g, q->path, fd, &size);
	if (r < 0) {
		guest_failed(c, g, q->path, r);
		goto out;
	}
	if (size > EMBER_MIN(limit, (uint64_t)EMBER_HOSTAGENT_MAX_MESSAGE)) {
		agent_err_set(&c->err, "%s grew over the limit while read", q->path);
		r = -ERANGE;
		goto out;
	}
	data = malloc(size ? size : 1);
	if (!data || ember_pread_full(fd, data, size, 0) != (ssize_t)size) {
		r = data ? -EIO : -ENOMEM;
		goto out;
	}
	m.content.data = data;
	m.content.len = size;
	m.mode = st.mode;
	r = reply(c, &m.base);
out:
	free(data);
	ember_close(&fd);
	ember_agent_close(g);
	return r;
}

static int m_write_file(struct call *c, const ProtobufCMessage *rq)
{
	const EmberWriteFileRequest *q = (const void *)rq;
	EmberWriteFileResponse m = EMBER__HOSTAGENT__V1__WRITE_FILE_RESPONSE__INIT;
	struct ember_agent *g = NULL;
	uint64_t size = 0;
	int fd = -1, r;

	call_id(c, q->sandbox_id);
	if (!q->path || q->path[0] != '/') {
		agent_err_set(&c->err, "path '%s' is not absolute", q->path);
		return -EINVAL;
	}
	r = sandbox_guest(c->a, q->sandbox_id, GUEST_TIMEOUT_MS, &g, NULL, &c->err);
	if (r < 0)
		return r;
	if (!q->make_parents) {
		/* The guest agent always makes parents; refuse first. */
		char parent[4096];
		struct ember_agent_stat st;

		snprintf(parent, sizeof(parent), "%s", q->path);
		char *slash = strrchr(parent, '/');
		if (slash == parent)
			slash[1] = '\0';
		else
			*slash = '\0';
		r = ember_agent_stat(g, parent, &st);
		if (r == 0 && st.type != 'd')
			r = -ENOTDIR;
		if (r < 0) {
			guest_failed(c, g, parent, r);
			goto out;
		}
	}
	fd = memfd_create("ember-write", MFD_CLOEXEC);
	if (fd < 0 || ember_write_full(fd, q->content.data, q->content.len) < 0 ||
	    lseek(fd, 0, SEEK_SET) < 0) {
		r = -errno;
		goto out;
	}
	r = ember_agent_write_file(g, q->path, fd, q->mode ? q->mode : 0644,
				   &size);
	if (r < 0) {
		guest_failed(c, g, q->path, r);
		goto out;
	}
	m.bytes_written = size;
	r = reply(c, &m.base);
out:
	ember_close(&fd);
	ember_agent_close(g);
	return r;
}

static int m_list_files(struct call *c, const ProtobufCMessage *rq)
{
	const EmberListFilesRequest *q = (const void *)rq;
	EmberListFilesResponse m = EMBER__HOSTAGENT__V1__LIST_FILES_RESPONSE__INIT;
	struct ember_agent_dirent *ents = NULL;
	struct ember_agent *g = NULL;
	EmberFileInfo *infos = NULL, **ptrs = NULL;
	char (*paths)[4096 + 256] = NULL;
	size_t n = 0;
	bool truncated = false;
	int r;

	call_id(c, q->sandbox_id);
	r = sandbox_guest(c->a, q->sandbox_id, GUEST_TIMEOUT_MS, &g, NULL, &c->err);
	if (r < 0)
		return r;
	r = ember_agent_list(g, q->path, &ents, &n, &truncated);
	if (r < 0) {
		guest_failed(c, g, q->path, r);
		goto out;
	}
	infos = calloc(n + 1, sizeof(*infos));
	ptrs = calloc(n + 1, sizeof(*ptrs));
	paths = calloc(n + 1, sizeof(*paths));
	if (!infos || !ptrs || !paths) {
		r = -ENOMEM;
		goto out;
	}
	size_t plen = strlen(q->path);
	bool slash = plen && q->path[plen - 1] == '/';
	for (size_t i = 0; i < n; i++) {
		ember__hostagent__v1__file_info__init(&infos[i]);
		snprintf(paths[i], sizeof(paths[i]), "%s%s%s", q->path,
			 slash ? "" : "/", ents[i].name);
		infos[i].name = ents[i].name;
		infos[i].path = paths[i];
		infos[i].size = ents[i].st.size;
		infos[i].mode = ents[i].st.mode;
		infos[i].is_dir = ents[i].st.type == 'd';
		infos[i].mtime_ms = ents[i].st.mtime_ns / 1000000;
		ptrs[i] = &infos[i];
	}
	m.n_entries = n;
	m.entries = ptrs;
	r = reply(c, &m.base);
out:
	free(ents);
	free(infos);
	free(ptrs);
	free(paths);
	ember_agent_close(g);
	return r;
}

static int m_delete_file(struct call *c, const ProtobufCMessage *rq)
{
	const EmberDeleteFileRequest *q = (const void *)rq;
	EmberDeleteFileResponse m = EMBER__HOSTAGENT__V1__DELETE_FILE_RESPONSE__INIT;
	struct ember_agent *g = NULL;
	int r;

	call_id(c, q->sandbox_id);
	r = sandbox_guest(c->a, q->sandbox_id, GUEST_TIMEOUT_MS, &g, NULL, &c->err);
	if (r < 0)
		return r;
	r = ember_agent_remove(g, q->path, q->recursive);
	if (r < 0)
		guest_failed(c, g, q->path, r);
	else
		r = reply(c, &m.base);
	ember_agent_close(g);
	return r;
}

typedef int (*unary_fn)(struct call *c, const ProtobufCMessage *req);

static const struct method {
	const char *name;
	const ProtobufCMessageDescriptor *req;
	unary_fn fn;	/* NULL: server streaming (Exec) */
} methods[] = {
	{ "GetHostInfo", &ember__hostagent__v1__get_host_info_request__descriptor, m_get_host_info },
	{ "CreateSandbox", &ember__hostagent__v1__create_sandbox_request__descriptor, m_create_sandbox },
	{ "ListSandboxes", &ember__hostagent__v1__list_sandboxes_request__descriptor, m_list_sandboxes },
	{ "DestroySandbox", &ember__hostagent__v1__destroy_sandbox_request__descriptor, m_destroy_sandbox },
	{ "PauseSandbox", &ember__hostagent__v1__pause_sandbox_request__descriptor, m_pause_sandbox },
	{ "ResumeSandbox", &ember__hostagent__v1__resume_sandbox_request__descriptor, m_resume_sandbox },
	{ "CreateSnapshot", &ember__hostagent__v1__create_snapshot_request__descriptor, m_create_snapshot },
	{ "DeleteSnapshot", &ember__hostagent__v1__delete_snapshot_request__descriptor, m_delete_snapshot },
	{ "Exec", &ember__hostagent__v1__exec_request__descriptor, NULL },
	{ "ReadFile", &ember__hostagent__v1__read_file_request__descriptor, m_read_file },
	{ "WriteFile", &ember__hostagent__v1__write_file_request__descriptor, m_write_file },
	{ "ListFiles", &ember__hostagent__v1__list_files_request__descriptor, m_list_files },
	{ "DeleteFile", &ember__hostagent__v1__delete_file_request__descriptor, m_delete_file },
};

/* --- request decoding (also used by the unit tests) ------------------------- */

enum body_kind { BODY_PROTO, BODY_JSON, BODY_STREAM_PROTO, BODY_STREAM_JSON,
		 BODY_UNKNOWN };

static enum body_kind body_kind(const char *content_type)
{
	static const struct {
		const char *type;
		enum body_kind kind;
	} types[] = {
		{ "application/proto", BODY_PROTO },
		{ "application/json", BODY_JSON },
		{ "application/connect+proto", BODY_STREAM_PROTO },
		{ "application/connect+json", BODY_STREAM_JSON },
	};
	size_t n;

	if (!content_type)
		return BODY_UNKNOWN;
	n = strcspn(content_type, "; ");
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(types); i++)
		if (strlen(types[i].type) == n &&
		    strncasecmp(content_type, types[i].type, n) == 0)
			return types[i].kind;
	return BODY_UNKNOWN;
}

/* Decodes a request body into a message of desc. Streaming bodies hold one
 * envelope. Errors: -EINVAL with a message in e. */
static int decode_request(const ProtobufCMessageDescriptor *desc,
			  enum body_kind kind, const uint8_t *body, size_t len,
			  ProtobufCMessage **out, struct agent_err *e)
{
	bool json = kind == BODY_JSON || kind == BODY_STREAM_JSON;

	*out = NULL;
	if (kind == BODY_STREAM_PROTO || kind == BODY_STREAM_JSON) {
		uint32_t n;

		if (len < EMBER_CONNECT_ENVELOPE_HDR) {
			agent_err_set(e, "streaming request without an envelope");
			return -EINVAL;
		}
		if (body[0] & EMBER_CONNECT_FLAG_COMPRESSED) {
			agent_err_set(e, "compressed envelopes are not supported");
			return -EINVAL;
		}
		n = (uint32_t)body[1] << 24 | (uint32_t)body[2] << 16 |
		    (uint32_t)body[3] << 8 | body[4];
		if (n != len - EMBER_CONNECT_ENVELOPE_HDR) {
			agent_err_set(e, "envelope says %u bytes, body holds %zu",
				      n, len - EMBER_CONNECT_ENVELOPE_HDR);
			return -EINVAL;
		}
		body += EMBER_CONNECT_ENVELOPE_HDR;
		len = n;
	}
	if (json) {
		json_error_t je;
		json_t *j = json_loadb((const char *)body, len, 0, &je);
		int r;

		if (!j) {
			agent_err_set(e, "request is not JSON: %s (line %d, column %d)",
				      je.text, je.line, je.column);
			return -EINVAL;
		}
		r = ember_pb_from_json(desc, j, out, e->msg, sizeof(e->msg));
		json_decref(j);
		return r;
	}
	*out = protobuf_c_message_unpack(desc, NULL, len, body);
	if (!*out) {
		agent_err_set(e, "request is not a valid %s", desc->name);
		return -EINVAL;
	}
	return 0;
}

/* --- Exec: a worker thread feeds envelopes into a pipe the response reads -- */

struct exec_job {
	struct agent *a;
	EmberExecRequest *req;
	bool json;
	int rd, wr;
	atomic_int refs;
	uint64_t t0;
};

static void job_put(struct exec_job *j)
{
	if (atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	ember_close(&j->rd);
	ember_close(&j->wr);
	protobuf_c_message_free_unpacked(&j->req->base, NULL);
	free(j);
}

static int send_envelope(struct exec_job *j, uint8_t flags, const void *p,
			 size_t len)
{
	uint8_t hdr[EMBER_CONNECT_ENVELOPE_HDR];
	int r;

	ember_connect_envelope_header(hdr, flags, (uint32_t)len);
	r = ember_write_full(j->wr, hdr, sizeof(hdr));
	if (r == 0 && len)
		r = ember_write_full(j->wr, p, len);
	return r;
}

static int send_event(struct exec_job *j, const EmberExecResponse *ev)
{
	char *buf;
	size_t len;
	int r;

	if (j->json) {
		json_t *o = ember_pb_to_json(&ev->base);
		buf = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
		if (!buf)
			return -ENOMEM;
		len = strlen(buf);
	} else {
		len = protobuf_c_message_get_packed_size(&ev->base);
		buf = malloc(len ? len : 1);
		if (!buf)
			return -ENOMEM;
		protobuf_c_message_pack(&ev->base, (uint8_t *)buf);
	}
	r = send_envelope(j, 0, buf, len);
	free(buf);
	return r;
}

static int on_out(struct exec_job *j, const void *buf, size_t len, bool err)
{
	EmberExecResponse ev = EMBER__HOSTAGENT__V1__EXEC_RESPONSE__INIT;
	ProtobufCBinaryData d = { len, (uint8_t *)buf };

	if (err) {
		ev.event_case = EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_STDERR_DATA;
		ev.stderr_data = d;
	} else {
		ev.event_case = EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_STDOUT_DATA;
		ev.stdout_data = d;
	}
	return send_event(j, &ev);
}

static int on_stdout(void *ctx, const void *buf, size_t len)
{
	return on_out(ctx, buf, len, false);
}

static int on_stderr(void *ctx, const void *buf, size_t len)
{
	return on_out(ctx, buf, len, true);
}

static void *exec_worker(void *arg)
{
	struct exec_job *j = arg;
	EmberExecRequest *q = j->req;
	struct ember_agent_exec_opts o;
	struct ember_agent_exec_result res = { 0 };
	struct ember_agent *g = NULL;
	struct agent_err e = { "" };
	json_t *env = NULL;
	const char **argv = NULL, **envp = NULL;
	char **envbuf = NULL;
	size_t n_env = 0;
	int in = -1, r;

	r = sandbox_guest(j->a, q->sandbox_id, GUEST_TIMEOUT_MS, &g, &env, &e);
	if (r < 0)
		goto end;
	if (q->n_argv == 0) {
		agent_err_set(&e, "argv is empty");
		r = -EINVAL;
		goto end;
	}
	/* The sandbox's env first, the request's over it. */
	size_t cap = json_object_size(env) + q->n_env + 1;
	argv = calloc(q->n_argv + 1, sizeof(*argv));
	envp = calloc(cap, sizeof(*envp));
	envbuf = calloc(cap, sizeof(*envbuf));
	if (!argv || !envp || !envbuf) {
		r = -ENOMEM;
		goto end;
	}
	for (size_t i = 0; i < q->n_argv; i++)
		argv[i] = q->argv[i];
	const char *key;
	json_t *v;
	json_object_foreach(env, key, v) {
		if (asprintf(&envbuf[n_env], "%s=%s", key,
			     json_string_value(v) ? json_string_value(v) : "") < 0) {
			envbuf[n_env] = NULL;
			r = -ENOMEM;
			goto end;
		}
		envp[n_env] = envbuf[n_env];
		n_env++;
	}
	for (size_t i = 0; i < q->n_env; i++) {
		if (asprintf(&envbuf[n_env], "%s=%s", q->env[i]->key,
			     q->env[i]->value) < 0) {
			envbuf[n_env] = NULL;
			r = -ENOMEM;
			goto end;
		}
		envp[n_env] = envbuf[n_env];
		n_env++;
	}
	if (q->stdin.len) {
		in = memfd_create("ember-stdin", MFD_CLOEXEC);
		if (in < 0 || ember_write_full(in, q->stdin.data, q->stdin.len) < 0 ||
		    lseek(in, 0, SEEK_SET) < 0) {
			r = -errno;
			goto end;
		}
	}
	ember_agent_exec_opts_init(&o);
	o.argv = argv;
	o.env = envp;
	o.cwd = q->cwd && *q->cwd ? q->cwd : NULL;
	o.stdin_fd = in;
	o.timeout_ms = q->timeout_ms;
	o.on_stdout = on_stdout;
	o.on_stderr = on_stderr;
	o.ctx = j;
	olog_info(q->sandbox_id, "exec %s", argv[0]);
	r = ember_agent_exec(g, &o, &res);
	if (r < 0) {
		agent_err_set(&e, "exec %s: %s", argv[0],
			      *ember_agent_last_error(g) ? ember_agent_last_error(g)
							 : strerror(-r));
		goto end;
	}
	EmberExecExit x = EMBER__HOSTAGENT__V1__EXEC_EXIT__INIT;
	EmberExecResponse ev = EMBER__HOSTAGENT__V1__EXEC_RESPONSE__INIT;
	x.exit_code = res.exit_code;
	x.signal = res.signal;
	x.timed_out = res.timed_out;
	x.duration_ms = (ember_now_ns() - j->t0) / 1000000;
	ev.event_case = EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_EXIT;
	ev.exit = &x;
	r = send_event(j, &ev);
end:
	if (r == -EPIPE) {
		olog_info(q->sandbox_id, "exec: the caller went away");
	} else if (r < 0) {
		const char *code = code_of(r);
		json_t *t = json_pack("{s:{s:s, s:s}}", "error", "code", code,
				      "message", e.msg[0] ? e.msg : strerror(-r));
		char *s = t ? json_dumps(t, JSON_COMPACT) : NULL;

		olog_warn(q->sandbox_id, "exec failed (%s): %s", code, e.msg);
		send_envelope(j, EMBER_CONNECT_FLAG_END_STREAM, s ? s : "{}",
			      s ? strlen(s) : 2);
		free(s);
		json_decref(t);
		metrics_rpc(j->a->metrics, "Exec", code, ember_now_ns() - j->t0);
	} else {
		send_envelope(j, EMBER_CONNECT_FLAG_END_STREAM, "{}", 2);
		metrics_rpc(j->a->metrics, "Exec", "ok", ember_now_ns() - j->t0);
	}
	ember_close(&in);
	ember_close(&j->wr); /* the reader sees the end */
	for (size_t i = 0; envbuf && i < n_env; i++)
		free(envbuf[i]);
	free(envbuf);
	free(envp);
	free(argv);
	json_decref(env);
	ember_agent_close(g);
	job_put(j);
	return NULL;
}

static ssize_t exec_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct exec_job *j = cls;
	ssize_t n;

	(void)pos;
	do
		n = read(j->rd, buf, max);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (n < 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	return n;
}

static void exec_free(void *cls)
{
	struct exec_job *j = cls;

	/* Closing our end makes the worker's next write fail with EPIPE,
	 * which stops the command. */
	ember_close(&j->rd);
	job_put(j);
}

static struct MHD_Response *start_exec(struct agent *a, ProtobufCMessage *req,
				       bool json)
{
	struct exec_job *j = calloc(1, sizeof(*j));
	struct MHD_Response *mr;
	pthread_t t;
	int p[2];

	if (!j)
		return NULL;
	if (pipe2(p, O_CLOEXEC) < 0) {
		free(j);
		return NULL;
	}
	j->a = a;
	j->req = (EmberExecRequest *)req;
	j->json = json;
	j->rd = p[0];
	j->wr = p[1];
	j->t0 = ember_now_ns();
	atomic_init(&j->refs, 2);
	mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
					       exec_read, j, exec_free);
	if (!mr) {
		j->req = NULL;
		close(p[0]);
		close(p[1]);
		free(j);
		return NULL;
	}
	if (pthread_create(&t, NULL, exec_worker, j) != 0) {
		/* The response ends at once with no end envelope: the
		 * client reports a cut stream. */
		ember_close(&j->wr);
		job_put(j);
		return mr;
	}
	pthread_detach(t);
	MHD_add_response_header(mr, "Content-Type",
				json ? "application/connect+json"
				     : "application/connect+proto");
	return mr;
}

/* --- HTTP glue ------------------------------------------------------------- */

struct conn {
	uint8_t *body;
	size_t len, cap;
	bool too_big;
};

static enum MHD_Result send_buf(struct MHD_Connection *conn, unsigned status,
				const char *type, char *body, size_t len)
{
	struct MHD_Response *mr = MHD_create_response_from_buffer(
		len, body ? body : (char *)"",
		body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!mr) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(mr, "Content-Type", type);
	ret = MHD_queue_response(conn, status, mr);
	MHD_destroy_response(mr);
	return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, int r,
				  const char *msg)
{
	const char *code = code_of(r);
	json_t *j = json_pack("{s:s, s:s}", "code", code, "message",
			      msg && *msg ? msg : strerror(-r));
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	return send_buf(conn, ember_connect_http_status(code),
			"application/json", s, s ? strlen(s) : 0);
}

static enum MHD_Result handle(struct rpc_server *srv,
			      struct MHD_Connection *conn, const char *url,
			      const char *method, struct conn *cs)
{
	const char *ctype = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							"Content-Type");
	const struct method *m = NULL;
	struct call c = { .a = srv->a };
	ProtobufCMessage *req = NULL;
	enum body_kind kind;
	uint64_t t0 = ember_now_ns();
	int r;

	if (strcmp(url, "/metrics") == 0 && strcmp(method, "GET") == 0) {
		char *text = metrics_render(srv->a);
		return send_buf(conn, text ? 200 : 500,
				"text/plain; version=0.0.4", text,
				text ? strlen(text) : 0);
	}
	if (strncmp(url, PATH_PREFIX, strlen(PATH_PREFIX)) == 0) {
		const char *name = url + strlen(PATH_PREFIX);
		for (size_t i = 0; i < EMBER_ARRAY_SIZE(methods); i++)
			if (strcmp(methods[i].name, name) == 0)
				m = &methods[i];
	}
	if (!m)
		return send_error(conn, -ENOENT, "no such method");
	if (strcmp(method, "POST") != 0)
		return send_error(conn, -EINVAL, "RPC methods take POST");
	if (cs->too_big)
		return send_error(conn, -ENOSPC, "request body too large");
	kind = body_kind(ctype);
	if (kind == BODY_UNKNOWN ||
	    (m->fn == NULL) != (kind == BODY_STREAM_PROTO || kind == BODY_STREAM_JSON)) {
		char msg[160];
		snprintf(msg, sizeof(msg), "%s takes Content-Type %s, not %s",
			 m->name,
			 m->fn ? "application/proto or application/json"
			       : "application/connect+proto or application/connect+json",
			 ctype ? ctype : "none");
		/* Connect answers a wrong content type with 415. */
		json_t *j = json_pack("{s:s, s:s}", "code", "unknown", "message", msg);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		return send_buf(conn, 415, "application/json", s, s ? strlen(s) : 0);
	}
	c.method = m->name;
	c.json = kind == BODY_JSON || kind == BODY_STREAM_JSON;
	r = decode_request(m->req, kind, cs->body, cs->len, &req, &c.err);
	if (r < 0)
		goto fail;
	if (!m->fn) {
		struct MHD_Response *mr = start_exec(srv->a, req, c.json);
		enum MHD_Result ret;

		if (!mr) {
			protobuf_c_message_free_unpacked(req, NULL);
			r = -ENOMEM;
			goto fail;
		}
		ret = MHD_queue_response(conn, 200, mr);
		MHD_destroy_response(mr);
		return ret;
	}
	r = m->fn(&c, req);
	protobuf_c_message_free_unpacked(req, NULL);
	if (r < 0)
		goto fail;
	metrics_rpc(srv->a->metrics, m->name, "ok", ember_now_ns() - t0);
	olog_debug(log_id(&c), "%s ok", m->name);
	return send_buf(conn, 200, c.json ? "application/json" : "application/proto",
			c.body, c.len);
fail:
	free(c.body);
	metrics_rpc(srv->a->metrics, m->name, code_of(r), ember_now_ns() - t0);
	olog_info(log_id(&c), "%s: %s: %s", m->name, code_of(r),
		  c.err.msg[0] ? c.err.msg : strerror(-r));
	return send_error(conn, r, c.err.msg);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *data,
				  size_t *size, void **con_cls)
{
	struct conn *cs = *con_cls;

	(void)version;
	if (!cs) {
		cs = calloc(1, sizeof(*cs));
		if (!cs)
			return MHD_NO;
		*con_cls = cs;
		return MHD_YES;
	}
	if (*size) {
		if (cs->too_big || cs->len + *size > MAX_BODY) {
			cs->too_big = true;
		} else {
			if (cs->len + *size > cs->cap) {
				size_t cap = cs->cap ? cs->cap : 4096;
				uint8_t *b;

				while (cap < cs->len + *size)
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
	return handle(cls, conn, url, method, cs);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
			 void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct conn *cs = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (cs) {
		free(cs->body);
		free(cs);
		*con_cls = NULL;
	}
}

static int listen_tcp(const char *host, unsigned port, int *fd_out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	char ps[16];
	int fd = -1, r, one = 1;

	snprintf(ps, sizeof(ps), "%u", port);
	r = getaddrinfo(*host ? host : NULL, ps, &hints, &res);
	if (r != 0) {
		log_error("cannot resolve %s: %s", host, gai_strerror(r));
		return -EINVAL;
	}
	r = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 128) == 0) {
			r = 0;
			break;
		}
		r = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (r < 0) {
		log_error("cannot listen on %s:%u: %s", host, port, strerror(-r));
		return r;
	}
	*fd_out = fd;
	return 0;
}

int rpc_start(struct agent *a, struct rpc_server **out)
{
	struct rpc_server *s = calloc(1, sizeof(*s));
	const union MHD_DaemonInfo *info;
	int fd, r;

	if (!s)
		return -ENOMEM;
	s->a = a;
	r = listen_tcp(a->cfg.listen_host, a->cfg.listen_port, &fd);
	if (r < 0) {
		free(s);
		return r;
	}
	s->mhd = MHD_start_daemon(
		MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD,
		0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
		/* Idle connections go after 10 minutes; a call in progress
		 * (a long Exec) is not idle. */
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600, MHD_OPTION_END);
	if (!s->mhd) {
		log_error("cannot start the HTTP server");
		close(fd);
		free(s);
		return -EIO;
	}
	info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : a->cfg.listen_port;
	*out = s;
	return 0;
}

unsigned rpc_port(const struct rpc_server *s)
{
	return s->port;
}

void rpc_stop(struct rpc_server *s)
{
	if (!s)
		return;
	MHD_stop_daemon(s->mhd);
	free(s);
}
