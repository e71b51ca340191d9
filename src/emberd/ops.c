// SPDX-License-Identifier: Apache-2.0
/*
 * The operations on sandboxes and snapshot templates: each moves the
 * sandbox through the state machine (store.h), calls the host agent, and
 * records the outcome. The API and the reconciler both come here.
 */
#include "emberd.h"

#include <ember/hostagent.h>
#include <ember/log.h>

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

void apierr_set(struct apierr *e, unsigned status, const char *code,
		const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	e->status = status;
	snprintf(e->code, sizeof(e->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
}

static void db_error(struct apierr *e, int r)
{
	apierr_set(e, 500, "internal", "database error: %s", strerror(-r));
}

/* Turns an agent's error into the API's. */
static int agent_error(struct apierr *e, const struct host *h, int r,
		       const struct ember_hostagent_error *ae)
{
	const char *code = ae->code;

	if (r == -EHOSTUNREACH || r == -ETIMEDOUT)
		apierr_set(e, 503, "unavailable", "host %s does not answer: %s",
			   h->id, ae->message);
	else if (strcmp(code, "invalid_argument") == 0)
		apierr_set(e, 400, "invalid_argument", "%s", ae->message);
	else if (strcmp(code, "resource_exhausted") == 0)
		apierr_set(e, 503, "unavailable", "host %s: %s", h->id,
			   ae->message);
	else if (strcmp(code, "failed_precondition") == 0 ||
		 strcmp(code, "aborted") == 0 ||
		 strcmp(code, "already_exists") == 0)
		apierr_set(e, 409, "conflict", "host %s: %s", h->id,
			   ae->message);
	else
		apierr_set(e, 502, "agent_error", "host %s: %s: %s", h->id,
			   code, ae->message);
	return r;
}

/* The client of a sandbox's or template's host; 503 when it is down. */
static int host_client(struct emberd *d, const char *host_id, long timeout_ms,
		       struct host *h, struct ember_hostagent_client **c,
		       struct apierr *e)
{
	int r;

	if (!host_id || !*host_id) {
		apierr_set(e, 503, "unavailable", "no host holds it");
		return -EHOSTUNREACH;
	}
	r = store_host_get(d->db, host_id, h);
	if (r == -ENOENT) {
		apierr_set(e, 503, "unavailable", "host %s is not known",
			   host_id);
		return -EHOSTUNREACH;
	}
	if (r < 0) {
		db_error(e, r);
		return r;
	}
	if (strcmp(h->state, "down") == 0) {
		apierr_set(e, 503, "unavailable", "host %s is down: %s",
			   host_id, h->last_error ? h->last_error : "");
		free(h->last_error);
		h->last_error = NULL;
		return -EHOSTUNREACH;
	}
	free(h->last_error);
	h->last_error = NULL;
	r = ember_hostagent_client_new(h->url, timeout_ms, c);
	if (r < 0)
		apierr_set(e, 500, "internal", "host %s: bad URL %s", h->id,
			   h->url);
	return r;
}

int sched_pick_host(struct emberd *d, uint64_t memory_mib, unsigned vcpus,
		    char host_id[64])
{
	struct host *hosts;
	size_t n;
	int best = -1, up = 0, r;

	r = store_host_list(d->db, &hosts, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		const struct host *h = &hosts[i];

		if (strcmp(h->state, "up") != 0)
			continue;
		up++;
		if (h->free_memory_mib < memory_mib || h->total_vcpus < vcpus)
			continue;
		if (best < 0 || h->free_memory_mib > hosts[best].free_memory_mib)
			best = (int)i;
	}
	if (best >= 0)
		snprintf(host_id, 64, "%s", hosts[best].id);
	hosts_free(hosts, n);
	if (best < 0)
		return up ? -ENOSPC : -EHOSTUNREACH;
	return store_host_reserve(d->db, host_id, memory_mib, vcpus);
}

/* Builds KeyValue messages from a JSON object of strings. */
struct kvs {
	EmberKeyValue *items;
	EmberKeyValue **ptrs;
	size_t n;
	json_t *json;
};

static int kvs_from_json(const char *text, struct kvs *kv)
{
	const char *key;
	json_t *val;
	size_t i = 0;

	memset(kv, 0, sizeof(*kv));
	kv->json = json_loads(text ? text : "{}", 0, NULL);
	if (!json_is_object(kv->json)) {
		json_decref(kv->json);
		kv->json = NULL;
		return 0;
	}
	kv->n = json_object_size(kv->json);
	kv->items = calloc(kv->n + 1, sizeof(*kv->items));
	kv->ptrs = calloc(kv->n + 1, sizeof(*kv->ptrs));
	if (!kv->items || !kv->ptrs)
		return -ENOMEM;
	json_object_foreach(kv->json, key, val) {
		ember__hostagent__v1__key_value__init(&kv->items[i]);
		kv->items[i].key = (char *)key;
		kv->items[i].value = (char *)(json_string_value(val)
						      ? json_string_value(val)
						      : "");
		kv->ptrs[i] = &kv->items[i];
		i++;
	}
	return 0;
}

static void kvs_free(struct kvs *kv)
{
	free(kv->items);
	free(kv->ptrs);
	json_decref(kv->json);
}

static void new_sandbox_id(char id[SBX_ID_LEN])
{
	uint8_t rnd[8] = { 0 };

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	snprintf(id, SBX_ID_LEN, "sbx-%02x%02x%02x%02x%02x%02x%02x%02x",
		 rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6],
		 rnd[7]);
}

static int reload(struct emberd *d, const char *id, struct sandbox *out)
{
	return out ? store_sandbox_get(d->db, id, out) : 0;
}

int op_create(struct emberd *d, const struct create_args *a,
	      struct sandbox *out, struct apierr *e)
{
	EmberCreateSandboxRequest req = EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__INIT;
	EmberBaseImage base = EMBER__HOSTAGENT__V1__BASE_IMAGE__INIT;
	EmberCreateSandboxResponse *resp = NULL;
	struct ember_hostagent_client *client = NULL;
	struct ember_hostagent_error ae = { 0 };
	struct kvs env = { 0 }, meta = { 0 };
	struct template t = { 0 };
	struct sandbox s = { 0 };
	struct host h = { 0 };
	int r;

	r = store_template_get(d->db, a->template_name, &t);
	if (r == -ENOENT) {
		apierr_set(e, 404, "not_found", "template %s not found",
			   a->template_name);
		return r;
	}
	if (r < 0) {
		db_error(e, r);
		return r;
	}
	if (strcmp(t.kind, "snapshot") == 0 &&
	    ((a->vcpus && a->vcpus != t.vcpus) ||
	     (a->memory_mib && a->memory_mib != t.memory_mib))) {
		apierr_set(e, 400, "invalid_argument",
			   "template %s is a snapshot of %u vCPUs and %llu MiB; a sandbox from a snapshot template has the template's vCPUs and memory",
			   t.name, t.vcpus, (unsigned long long)t.memory_mib);
		r = -EINVAL;
		goto out;
	}
	new_sandbox_id(s.id);
	snprintf(s.template_name, sizeof(s.template_name), "%s", t.name);
	s.vcpus = a->vcpus ? a->vcpus : t.vcpus;
	s.memory_mib = a->memory_mib ? a->memory_mib : t.memory_mib;
	s.timeout_s = a->timeout_s;
	snprintf(s.on_timeout, sizeof(s.on_timeout), "%s", a->on_timeout);
	s.metadata = (char *)a->metadata;
	s.env = (char *)a->env;

	if (strcmp(t.kind, "snapshot") == 0) {
		struct host th = { 0 };

		/* A snapshot template's files are on one host: go there. */
		r = store_host_get(d->db, t.host_id, &th);
		if (r < 0 || strcmp(th.state, "up") != 0 ||
		    th.free_memory_mib < s.memory_mib) {
			apierr_set(e, 503, "unavailable",
				   "host %s, which holds template %s, %s",
				   t.host_id, t.name,
				   r < 0 ? "is not known"
				   : strcmp(th.state, "up") != 0
					   ? "does not answer"
					   : "has no room");
			free(th.last_error);
			r = -EHOSTUNREACH;
			goto out;
		}
		free(th.last_error);
		snprintf(s.host_id, sizeof(s.host_id), "%s", t.host_id);
		store_host_reserve(d->db, s.host_id, s.memory_mib, s.vcpus);
	} else {
		r = sched_pick_host(d, s.memory_mib, s.vcpus, s.host_id);
		if (r == -ENOSPC || r == -EHOSTUNREACH) {
			apierr_set(e, 503, "unavailable",
				   r == -ENOSPC
					   ? "no host has room for %u vCPUs and %llu MiB"
					   : "no host answers (asked for %u vCPUs and %llu MiB)",
				   s.vcpus, (unsigned long long)s.memory_mib);
			goto out;
		}
		if (r < 0) {
			db_error(e, r);
			goto out;
		}
	}
	r = store_sandbox_insert(d->db, &s);
	if (r < 0) {
		db_error(e, r);
		goto out;
	}
	olog_info(s.id, "creating from %s on %s (%u vCPUs, %llu MiB)", t.name,
		  s.host_id, s.vcpus, (unsigned long long)s.memory_mib);

	r = host_client(d, s.host_id, d->agent_timeout_ms, &h, &client, e);
	if (r < 0)
		goto fail;
	if ((r = kvs_from_json(a->env, &env)) < 0 ||
	    (r = kvs_from_json(a->metadata, &meta)) < 0) {
		apierr_set(e, 500, "internal", "out of memory");
		goto fail;
	}
	req.sandbox_id = s.id;
	req.template_name = t.name;
	req.vcpus = s.vcpus;
	req.memory_mib = s.memory_mib;
	req.n_env = env.n;
	req.env = env.ptrs;
	req.n_metadata = meta.n;
	req.metadata = meta.ptrs;
	req.network = a->network;
	if (strcmp(t.kind, "snapshot") == 0) {
		req.source_case =
			EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__SOURCE_SNAPSHOT_TEMPLATE;
		req.snapshot_template = t.name;
	} else {
		base.kernel_path = t.kernel_path ? t.kernel_path : "";
		base.rootfs_path = t.rootfs_path ? t.rootfs_path : "";
		req.source_case =
			EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__SOURCE_BASE_IMAGE;
		req.base_image = &base;
	}
	r = ember_hostagent_create_sandbox(client, &req, &resp, &ae);
	if (r < 0) {
		agent_error(e, &h, r, &ae);
		olog_error(s.id, "create on %s failed: %s", h.id, ae.message);
		goto fail;
	}
	r = store_sandbox_transition(d->db, s.id, SBX_STARTING, SBX_RUNNING,
				     "started", NULL);
	if (r == 0)
		r = store_sandbox_set_expiry(d->db, s.id,
					     now_ms() + s.timeout_s * 1000,
					     s.timeout_s, s.on_timeout);
	if (r < 0) {
		/* Deleted while starting: the reconciler destroys the VM. */
		apierr_set(e, 409, "conflict",
			   "sandbox %s changed state while starting", s.id);
		goto out;
	}
	r = reload(d, s.id, out);
	goto out;
fail:
	store_sandbox_transition(d->db, s.id, SBX_STARTING, SBX_ERROR,
				 e->message, NULL);
out:
	if (resp)
		ember__hostagent__v1__create_sandbox_response__free_unpacked(
			resp, NULL);
	kvs_free(&env);
	kvs_free(&meta);
	ember_hostagent_client_free(client);
	free(h.last_error);
	template_clear(&t);
	return r;
}

/* A state conflict, said the way a user reads it. */
static int conflict(struct apierr *e, const char *id, enum sbx_state cur,
		    const char *what)
{
	apierr_set(e, 409, "conflict", "sandbox %s is %s; cannot %s", id,
		   sbx_state_name(cur), what);
	return -EBUSY;
}

/* Moves id from its current state to `to`, reporting why not in e. */
static int begin_transition(struct emberd *d, const char *id,
			    enum sbx_state to, const char *what,
			    const char *reason, struct sandbox *s,
			    struct apierr *e)
{
	int r = store_sandbox_get(d->db, id, s);

	if (r == -ENOENT) {
		apierr_set(e, 404, "not_found", "sandbox %s not found", id);
		return r;
	}
	if (r < 0) {
		db_error(e, r);
		return r;
	}
	if (!sbx_transition_allowed(s->state, to))
		return conflict(e, id, s->state, what);
	r = store_sandbox_transition(d->db, id, s->state, to, reason, NULL);
	if (r == -EBUSY || r == -EPERM) {
		enum sbx_state now = s->state;
		struct sandbox again = { 0 };

		if (store_sandbox_get(d->db, id, &again) == 0)
			now = again.state;
		sandbox_clear(&again);
		return conflict(e, id, now, what);
	}
	if (r < 0)
		db_error(e, r);
	return r;
}

int op_destroy(struct emberd *d, const char *id, const char *reason,
	       struct sandbox *out, struct apierr *e)
{
	EmberDestroySandboxRequest req = EMBER__HOSTAGENT__V1__DESTROY_SANDBOX_REQUEST__INIT;
	EmberDestroySandboxResponse *resp = NULL;
	struct ember_hostagent_client *client = NULL;
	struct ember_hostagent_error ae = { 0 };
	struct sandbox s = { 0 };
	struct host h = { 0 };
	int r;

	r = begin_transition(d, id, SBX_STOPPING, "delete it",
			     reason ? reason : "delete", &s, e);
	if (r < 0)
		goto out;
	if (s.host_id[0]) {
		r = host_client(d, s.host_id, d->agent_timeout_ms, &h, &client,
				e);
		if (r == 0) {
			req.sandbox_id = (char *)id;
			r = ember_hostagent_destroy_sandbox(client, &req, &resp,
							&ae);
			/* Already gone from its host is what we wanted. */
			if (r == -ENOENT)
				r = 0;
			if (r < 0)
				agent_error(e, &h, r, &ae);
		}
		if (r < 0) {
			olog_error(id, "destroy failed: %s", e->message);
			store_sandbox_transition(d->db, id, SBX_STOPPING,
						 SBX_ERROR, e->message, NULL);
			goto out;
		}
	}
	r = store_sandbox_transition(d->db, id, SBX_STOPPING, SBX_STOPPED,
				     reason ? reason : "deleted", NULL);
	if (r < 0)
		db_error(e, r);
	else
		r = reload(d, id, out);
out:
	if (resp)
		ember__hostagent__v1__destroy_sandbox_response__free_unpacked(
			resp, NULL);
	ember_hostagent_client_free(client);
	free(h.last_error);
	sandbox_clear(&s);
	return r;
}

int op_pause(struct emberd *d, const char *id, const char *reason,
	     struct sandbox *out, struct apierr *e)
{
	EmberPauseSandboxRequest req = EMBER__HOSTAGENT__V1__PAUSE_SANDBOX_REQUEST__INIT;
	EmberPauseSandboxResponse *resp = NULL;
	struct ember_hostagent_client *client = NULL;
	struct ember_hostagent_error ae = { 0 };
	struct sandbox s = { 0 };
	struct host h = { 0 };
	int r;

	r = begin_transition(d, id, SBX_PAUSING, "pause it",
			     reason ? reason : "pause", &s, e);
	if (r < 0)
		goto out;
	r = host_client(d, s.host_id, d->agent_timeout_ms, &h, &client, e);
	if (r == 0) {
		req.sandbox_id = (char *)id;
		r = ember_hostagent_pause_sandbox(client, &req, &resp, &ae);
		if (r < 0)
			agent_error(e, &h, r, &ae);
	}
	if (r < 0) {
		/* The agent leaves a failed pause running (issue: never
		 * lost); a protocol failure leaves us unsure. */
		enum sbx_state to = r == -EPROTO || r == -EFAULT ? SBX_ERROR
								 : SBX_RUNNING;

		olog_error(id, "pause failed: %s", e->message);
		store_sandbox_transition(d->db, id, SBX_PAUSING, to, e->message,
					 NULL);
		goto out;
	}
	store_sandbox_set_paused(d->db, id, (int)resp->generation,
				 resp->memory_bytes_written, resp->disk_bytes);
	r = store_sandbox_transition(d->db, id, SBX_PAUSING, SBX_PAUSED,
				     reason ? reason : "paused", NULL);
	if (r < 0)
		db_error(e, r);
	else
		r = reload(d, id, out);
out:
	if (resp)
		ember__hostagent__v1__pause_sandbox_response__free_unpacked(
			resp, NULL);
	ember_hostagent_client_free(client);
	free(h.last_error);
	sandbox_clear(&s);
	return r;
}

int op_resume(struct emberd *d, const char *id, struct sandbox *out,
	      struct apierr *e)
{
	EmberResumeSandboxRequest req = EMBER__HOSTAGENT__V1__RESUME_SANDBOX_REQUEST__INIT;
	EmberResumeSandboxResponse *resp = NULL;
	struct ember_hostagent_client *client = NULL;
	struct ember_hostagent_error ae = { 0 };
	struct sandbox s = { 0 };
	struct host h = { 0 };
	int r;

	/* A paused sandbox resumes on the host that holds its files. So may
	 * one in error: its host may have paused it when emberd lost the
	 * answer (an agent killed during a pause). */
	r = begin_transition(d, id, SBX_RESUMING, "resume it", "resume", &s, e);
	if (r < 0)
		goto out;
	r = host_client(d, s.host_id, d->agent_timeout_ms, &h, &client, e);
	if (r == 0) {
		req.sandbox_id = (char *)id;
		r = ember_hostagent_resume_sandbox(client, &req, &resp, &ae);
		if (r < 0)
			agent_error(e, &h, r, &ae);
	}
	if (r < 0) {
		/* A failed resume keeps the snapshot: paused again, or error
		 * again when it was one (its host may hold no snapshot). */
		enum sbx_state to = r == -EPROTO || s.state == SBX_ERROR
					    ? SBX_ERROR
					    : SBX_PAUSED;

		olog_error(id, "resume failed: %s", e->message);
		store_sandbox_transition(d->db, id, SBX_RESUMING, to,
					 e->message, NULL);
		goto out;
	}
	r = store_sandbox_transition(d->db, id, SBX_RESUMING, SBX_RUNNING,
				     "resumed", NULL);
	/* The user's timeout, counted again from now. */
	if (r == 0)
		r = store_sandbox_set_expiry(d->db, id,
					     now_ms() + s.timeout_s * 1000,
					     s.timeout_s, s.on_timeout);
	if (r < 0)
		db_error(e, r);
	else
		r = reload(d, id, out);
out:
	if (resp)
		ember__hostagent__v1__resume_sandbox_response__free_unpacked(
			resp, NULL);
	ember_hostagent_client_free(client);
	free(h.last_error);
	sandbox_clear(&s);
	return r;
}

int op_set_timeout(struct emberd *d, const char *id, int64_t timeout_s,
		   const char *on_timeout, struct sandbox *out,
		   struct apierr *e)
{
	struct sandbox s = { 0 };
	int64_t expires;
	int r;

	r = store_sandbox_get(d->db, id, &s);
	if (r == -ENOENT) {
		apierr_set(e, 404, "not_found", "sandbox %s not found", id);
		return r;
	}
	if (r < 0) {
		db_error(e, r);
		return r;
	}
	if (s.state == SBX_STOPPED || s.state == SBX_STOPPING ||
	    s.state == SBX_ERROR) {
		r = conflict(e, id, s.state, "set its timeout");
		goto out;
	}
	/* A running sandbox's clock restarts now; any other keeps the
	 * timeout for when it runs again. */
	expires = s.state == SBX_RUNNING ? now_ms() + timeout_s * 1000 : 0;
	r = store_sandbox_set_expiry(d->db, id, expires, timeout_s,
				     on_timeout ? on_timeout : s.on_timeout);
	if (r < 0)
		db_error(e, r);
	else
		r = reload(d, id, out);
out:
	sandbox_clear(&s);
	return r;
}

int op_snapshot_create(struct emberd *d, const char *sandbox_id,
		       const char *name, bool stop_source,
		       struct template *out, struct apierr *e)
{
	EmberCreateSnapshotRequest req = EMBER__HOSTAGENT__V1__CREATE_SNAPSHOT_REQUEST__INIT;
	EmberCreateSnapshotResponse *resp = NULL;
	struct ember_hostagent_client *client = NULL;
	struct ember_hostagent_error ae = { 0 };
	struct template t = { 0 };
	struct sandbox s = { 0 };
	struct host h = { 0 };
	char reason[200];
	int r;

	r = store_template_get(d->db, name, &t);
	template_clear(&t);
	if (r == 0) {
		apierr_set(e, 409, "already_exists",
			   "a template named %s exists", name);
		return -EEXIST;
	}
	snprintf(reason, sizeof(reason), "snapshot %s", name);
	/* While the agent snapshots, the sandbox is paused: pausing. */
	r = begin_transition(d, sandbox_id, SBX_PAUSING, "snapshot it", reason,
			     &s, e);
	if (r < 0)
		goto out;
	r = host_client(d, s.host_id, d->agent_timeout_ms, &h, &client, e);
	if (r == 0) {
		req.sandbox_id = (char *)sandbox_id;
		req.name = (char *)name;
		req.stop_source = stop_source;
		r = ember_hostagent_create_snapshot(client, &req, &resp, &ae);
		if (r < 0)
			agent_error(e, &h, r, &ae);
	}
	if (r < 0) {
		olog_error(sandbox_id, "snapshot %s failed: %s", name,
			   e->message);
		store_sandbox_transition(d->db, sandbox_id, SBX_PAUSING,
					 r == -EPROTO ? SBX_ERROR : SBX_RUNNING,
					 e->message, NULL);
		goto out;
	}
	snprintf(t.name, sizeof(t.name), "%s", name);
	snprintf(t.kind, sizeof(t.kind), "snapshot");
	snprintf(t.host_id, sizeof(t.host_id), "%s", s.host_id);
	snprintf(t.source_sandbox_id, sizeof(t.source_sandbox_id), "%s",
		 sandbox_id);
	/* The snapshot's sizes are the source's; the agent's answer wins if
	 * it says otherwise. */
	t.vcpus = resp->template_ && resp->template_->vcpus
			  ? resp->template_->vcpus
			  : s.vcpus;
	t.memory_mib = resp->template_ && resp->template_->memory_mib
			       ? resp->template_->memory_mib
			       : s.memory_mib;
	t.memory_bytes = resp->template_ ? resp->template_->memory_bytes : 0;
	t.disk_bytes = resp->template_ ? resp->template_->disk_bytes : 0;
	r = store_template_insert_snapshot(d->db, &t);
	if (r < 0) {
		db_error(e, r);
		goto out;
	}
	if (stop_source) {
		store_sandbox_transition(d->db, sandbox_id, SBX_PAUSING,
					 SBX_STOPPING, reason, NULL);
		store_sandbox_transition(d->db, sandbox_id, SBX_STOPPING,
					 SBX_STOPPED, "stopped after snapshot",
					 NULL);
	} else {
		store_sandbox_transition(d->db, sandbox_id, SBX_PAUSING,
					 SBX_RUNNING, reason, NULL);
		/* Back to running: its clock goes on where it was. */
		store_sandbox_set_expiry(d->db, sandbox_id, s.expires_at_ms,
					 s.timeout_s, s.on_timeout);
	}
	log_info("template %s: snapshot of %s on %s", name, sandbox_id,
		 s.host_id);
	if (out)
		r = store_template_get(d->db, name, out);
out:
	if (resp)
		ember__hostagent__v1__create_snapshot_response__free_unpacked(
			resp, NULL);
	ember_hostagent_client_free(client);
	free(h.last_error);
	sandbox_clear(&s);
	return r;
}

int op_snapshot_delete(struct emberd *d, const char *name, struct apierr *e)
{
	EmberDeleteSnapshotRequest req = EMBER__HOSTAGENT__V1__DELETE_SNAPSHOT_REQUEST__INIT;
	EmberDeleteSnapshotResponse *resp = NULL;
	struct ember_hostagent_client *client = NULL;
	struct ember_hostagent_error ae = { 0 };
	struct template t = { 0 };
	struct host h = { 0 };
	int r;

	r = store_template_get(d->db, name, &t);
	if (r == 0 && strcmp(t.kind, "snapshot") != 0)
		r = -ENOENT;
	if (r == -ENOENT) {
		apierr_set(e, 404, "not_found", "snapshot %s not found", name);
		goto out;
	}
	if (r < 0) {
		db_error(e, r);
		goto out;
	}
	r = host_client(d, t.host_id, d->agent_timeout_ms, &h, &client, e);
	if (r == 0) {
		req.name = (char *)name;
		r = ember_hostagent_delete_snapshot(client, &req, &resp, &ae);
		if (r == -ENOENT)
			r = 0;
		if (r < 0)
			agent_error(e, &h, r, &ae);
	}
	if (r < 0)
		goto out;
	/* Sandboxes spawned from it keep running: the agent keeps the files
	 * they use until the last is gone. */
	r = store_template_delete(d->db, name);
	if (r < 0)
		db_error(e, r);
	else
		log_info("template %s deleted", name);
out:
	if (resp)
		ember__hostagent__v1__delete_snapshot_response__free_unpacked(
			resp, NULL);
	ember_hostagent_client_free(client);
	free(h.last_error);
	template_clear(&t);
	return r;
}
