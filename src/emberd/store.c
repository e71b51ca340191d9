// SPDX-License-Identifier: Apache-2.0
#include "store.h"

#include <ember/log.h>

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char *const state_names[SBX_NSTATES] = {
	[SBX_STARTING] = "starting", [SBX_RUNNING] = "running",
	[SBX_PAUSING] = "pausing",   [SBX_PAUSED] = "paused",
	[SBX_RESUMING] = "resuming", [SBX_STOPPING] = "stopping",
	[SBX_STOPPED] = "stopped",   [SBX_ERROR] = "error",
};

#define BIT(s) (1u << (s))
/* allowed[from] is the set of states `from` may move to (store.h). */
static const unsigned allowed[SBX_NSTATES] = {
	[SBX_STARTING] = BIT(SBX_RUNNING) | BIT(SBX_ERROR) | BIT(SBX_STOPPING),
	[SBX_RUNNING] = BIT(SBX_PAUSING) | BIT(SBX_STOPPING) | BIT(SBX_ERROR),
	[SBX_PAUSING] = BIT(SBX_PAUSED) | BIT(SBX_RUNNING) | BIT(SBX_ERROR),
	[SBX_PAUSED] = BIT(SBX_RESUMING) | BIT(SBX_STOPPING),
	[SBX_RESUMING] = BIT(SBX_RUNNING) | BIT(SBX_PAUSED) | BIT(SBX_ERROR),
	[SBX_STOPPING] = BIT(SBX_STOPPED) | BIT(SBX_ERROR),
	[SBX_STOPPED] = 0,
	[SBX_ERROR] = BIT(SBX_STOPPING) | BIT(SBX_RUNNING) | BIT(SBX_RESUMING),
};

const char *sbx_state_name(enum sbx_state s)
{
	return (unsigned)s < SBX_NSTATES ? state_names[s] : "unknown";
}

int sbx_state_parse(const char *name, enum sbx_state *out)
{
	for (int i = 0; i < SBX_NSTATES; i++) {
		if (name && strcmp(name, state_names[i]) == 0) {
			*out = (enum sbx_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

bool sbx_transition_allowed(enum sbx_state from, enum sbx_state to)
{
	if ((unsigned)from >= SBX_NSTATES || (unsigned)to >= SBX_NSTATES)
		return false;
	return allowed[from] & BIT(to);
}

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Small helpers to read cells. */
static int64_t cell_i64(const struct db_rows *r, int row, int col)
{
	const char *v = db_cell(r, row, col);
	return v ? strtoll(v, NULL, 10) : 0;
}

static void cell_copy(char *dst, size_t len, const struct db_rows *r, int row,
		      int col)
{
	const char *v = db_cell(r, row, col);
	snprintf(dst, len, "%s", v ? v : "");
}

static char *cell_dup(const struct db_rows *r, int row, int col)
{
	const char *v = db_cell(r, row, col);
	return v ? strdup(v) : NULL;
}

#define I64(buf, v) (snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)(v)), buf)

/* --- sandboxes ------------------------------------------------------------ */

#define SBX_COLUMNS                                                           \
	"id, template_name, host_id, state, vcpus, memory_mib, timeout_s,"    \
	" on_timeout, expires_at_ms, metadata, env, error, generation,"       \
	" paused_memory_bytes, paused_disk_bytes, created_at_ms,"             \
	" updated_at_ms"

void sandbox_clear(struct sandbox *s)
{
	free(s->metadata);
	free(s->env);
	free(s->error);
	memset(s, 0, sizeof(*s));
}

void sandboxes_free(struct sandbox *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sandbox_clear(&v[i]);
	free(v);
}

static void sandbox_from_row(const struct db_rows *r, int i,
			     struct sandbox *s)
{
	memset(s, 0, sizeof(*s));
	cell_copy(s->id, sizeof(s->id), r, i, 0);
	cell_copy(s->template_name, sizeof(s->template_name), r, i, 1);
	cell_copy(s->host_id, sizeof(s->host_id), r, i, 2);
	if (sbx_state_parse(db_cell(r, i, 3), &s->state) < 0)
		s->state = SBX_ERROR;
	s->vcpus = (unsigned)cell_i64(r, i, 4);
	s->memory_mib = (uint64_t)cell_i64(r, i, 5);
	s->timeout_s = cell_i64(r, i, 6);
	cell_copy(s->on_timeout, sizeof(s->on_timeout), r, i, 7);
	s->expires_at_ms = cell_i64(r, i, 8);
	s->metadata = cell_dup(r, i, 9);
	s->env = cell_dup(r, i, 10);
	s->error = cell_dup(r, i, 11);
	s->generation = (int)cell_i64(r, i, 12);
	s->paused_memory_bytes = (uint64_t)cell_i64(r, i, 13);
	s->paused_disk_bytes = (uint64_t)cell_i64(r, i, 14);
	s->created_at_ms = cell_i64(r, i, 15);
	s->updated_at_ms = cell_i64(r, i, 16);
}

static int event_insert(struct db *db, const char *id, const char *from,
			const char *to, const char *reason)
{
	char at[24];

	return db_exec(db,
		       "INSERT INTO events (sandbox_id, from_state, to_state, reason, at_ms) VALUES (?, ?, ?, ?, ?)",
		       5, (const char *[]){ id, from, to, reason, I64(at, now_ms()) },
		       NULL);
}

int store_sandbox_insert(struct db *db, const struct sandbox *s)
{
	char vcpus[24], mem[24], timeout[24], now[24];
	int r;

	I64(now, now_ms());
	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_exec(db,
		    "INSERT INTO sandboxes (id, template_name, host_id, state,"
		    " vcpus, memory_mib, timeout_s, on_timeout, metadata, env,"
		    " created_at_ms, updated_at_ms)"
		    " VALUES (?, ?, ?, 'starting', ?, ?, ?, ?, ?, ?, ?, ?)",
		    11,
		    (const char *[]){ s->id, s->template_name,
				      s->host_id[0] ? s->host_id : NULL,
				      I64(vcpus, s->vcpus),
				      I64(mem, s->memory_mib),
				      I64(timeout, s->timeout_s), s->on_timeout,
				      s->metadata ? s->metadata : "{}",
				      s->env ? s->env : "{}", now, now },
		    NULL);
	if (r == 0)
		r = event_insert(db, s->id, NULL, "starting", "created");
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	return db_commit(db);
}

int store_sandbox_get(struct db *db, const char *id, struct sandbox *out)
{
	struct db_rows *rows;
	int r;

	r = db_query(db, "SELECT " SBX_COLUMNS " FROM sandboxes WHERE id = ?",
		     1, &id, &rows);
	if (r < 0)
		return r;
	if (rows->nrows == 0) {
		db_rows_free(rows);
		return -ENOENT;
	}
	sandbox_from_row(rows, 0, out);
	db_rows_free(rows);
	return 0;
}

int store_sandbox_list(struct db *db, const char *state, const char *host_id,
		       struct sandbox **out, size_t *n)
{
	struct db_rows *rows;
	int r;

	r = db_query(db,
		     "SELECT " SBX_COLUMNS " FROM sandboxes"
		     " WHERE ((CAST(? AS TEXT) IS NULL AND state <> 'stopped') OR state = ?)"
		     " AND (CAST(? AS TEXT) IS NULL OR host_id = ?)"
		     " ORDER BY created_at_ms, id",
		     4, (const char *[]){ state, state, host_id, host_id },
		     &rows);
	if (r < 0)
		return r;
	*n = (size_t)rows->nrows;
	*out = calloc(*n + 1, sizeof(**out));
	if (!*out) {
		db_rows_free(rows);
		return -ENOMEM;
	}
	for (int i = 0; i < rows->nrows; i++)
		sandbox_from_row(rows, i, &(*out)[i]);
	db_rows_free(rows);
	return 0;
}

int store_sandbox_transition(struct db *db, const char *id,
			     enum sbx_state from, enum sbx_state to,
			     const char *reason, enum sbx_state *was)
{
	struct db_rows *rows = NULL;
	enum sbx_state cur;
	char now[24];
	long changes = 0;
	int r;

	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_query(db, "SELECT state FROM sandboxes WHERE id = ?", 1, &id,
		     &rows);
	if (r < 0)
		goto fail;
	if (rows->nrows == 0) {
		r = -ENOENT;
		goto fail;
	}
	if (sbx_state_parse(db_cell(rows, 0, 0), &cur) < 0)
		cur = SBX_ERROR;
	if (was)
		*was = cur;
	if (from != SBX_NSTATES && cur != from) {
		r = -EBUSY;
		goto fail;
	}
	if (!sbx_transition_allowed(cur, to)) {
		r = -EPERM;
		goto fail;
	}
	r = db_exec(db,
		    "UPDATE sandboxes SET state = ?, error = ?, updated_at_ms = ?,"
		    " expires_at_ms = CASE WHEN CAST(? AS TEXT) = 'running' THEN expires_at_ms ELSE 0 END"
		    " WHERE id = ? AND state = ?",
		    6,
		    (const char *[]){ sbx_state_name(to),
				      to == SBX_ERROR ? reason : NULL,
				      I64(now, now_ms()), sbx_state_name(to),
				      id, sbx_state_name(cur) },
		    &changes);
	if (r == 0 && changes != 1)
		r = -EBUSY;
	if (r == 0)
		r = event_insert(db, id, sbx_state_name(cur),
				 sbx_state_name(to), reason);
	if (r < 0)
		goto fail;
	db_rows_free(rows);
	r = db_commit(db);
	if (r == 0)
		olog_info(id, "%s -> %s%s%s", sbx_state_name(cur),
			  sbx_state_name(to), reason ? ": " : "",
			  reason ? reason : "");
	return r;
fail:
	db_rows_free(rows);
	db_rollback(db);
	return r;
}

static int update_one(struct db *db, const char *sql, int n,
		      const char *const *params)
{
	long changes = 0;
	int r = db_exec(db, sql, n, params, &changes);

	if (r < 0)
		return r;
	return changes == 1 ? 0 : -ENOENT;
}

int store_sandbox_set_expiry(struct db *db, const char *id,
			     int64_t expires_at_ms, int64_t timeout_s,
			     const char *on_timeout)
{
	char e[24], t[24];

	return update_one(db,
			  "UPDATE sandboxes SET expires_at_ms = ?, timeout_s = ?,"
			  " on_timeout = ? WHERE id = ?",
			  4,
			  (const char *[]){ I64(e, expires_at_ms),
					    I64(t, timeout_s), on_timeout, id });
}

int store_sandbox_set_paused(struct db *db, const char *id, int generation,
			     uint64_t memory_bytes, uint64_t disk_bytes)
{
	char g[24], m[24], d[24];

	return update_one(db,
			  "UPDATE sandboxes SET generation = ?,"
			  " paused_memory_bytes = ?, paused_disk_bytes = ?"
			  " WHERE id = ?",
			  4,
			  (const char *[]){ I64(g, generation),
					    I64(m, memory_bytes),
					    I64(d, disk_bytes), id });
}

int store_sandbox_set_host(struct db *db, const char *id, const char *host_id)
{
	return update_one(db, "UPDATE sandboxes SET host_id = ? WHERE id = ?",
			  2, (const char *[]){ host_id, id });
}

void events_free(struct event *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].reason);
	free(v);
}

int store_events_list(struct db *db, const char *sandbox_id,
		      struct event **out, size_t *n)
{
	struct db_rows *rows;
	int r;

	r = db_query(db,
		     "SELECT id, sandbox_id, from_state, to_state, reason, at_ms"
		     " FROM events WHERE sandbox_id = ? ORDER BY id",
		     1, &sandbox_id, &rows);
	if (r < 0)
		return r;
	*n = (size_t)rows->nrows;
	*out = calloc(*n + 1, sizeof(**out));
	if (!*out) {
		db_rows_free(rows);
		return -ENOMEM;
	}
	for (int i = 0; i < rows->nrows; i++) {
		struct event *e = &(*out)[i];

		e->id = cell_i64(rows, i, 0);
		cell_copy(e->sandbox_id, sizeof(e->sandbox_id), rows, i, 1);
		cell_copy(e->from_state, sizeof(e->from_state), rows, i, 2);
		cell_copy(e->to_state, sizeof(e->to_state), rows, i, 3);
		e->reason = cell_dup(rows, i, 4);
		e->at_ms = cell_i64(rows, i, 5);
	}
	db_rows_free(rows);
	return 0;
}

/* --- templates ------------------------------------------------------------ */

#define TPL_COLUMNS                                                           \
	"name, kind, vcpus, memory_mib, kernel_path, rootfs_path, host_id,"   \
	" source_sandbox_id, memory_bytes, disk_bytes, created_at_ms"

void template_clear(struct template *t)
{
	free(t->kernel_path);
	free(t->rootfs_path);
	memset(t, 0, sizeof(*t));
}

void templates_free(struct template *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		template_clear(&v[i]);
	free(v);
}

static void template_from_row(const struct db_rows *r, int i,
			      struct template *t)
{
	memset(t, 0, sizeof(*t));
	cell_copy(t->name, sizeof(t->name), r, i, 0);
	cell_copy(t->kind, sizeof(t->kind), r, i, 1);
	t->vcpus = (unsigned)cell_i64(r, i, 2);
	t->memory_mib = (uint64_t)cell_i64(r, i, 3);
	t->kernel_path = cell_dup(r, i, 4);
	t->rootfs_path = cell_dup(r, i, 5);
	cell_copy(t->host_id, sizeof(t->host_id), r, i, 6);
	cell_copy(t->source_sandbox_id, sizeof(t->source_sandbox_id), r, i, 7);
	t->memory_bytes = (uint64_t)cell_i64(r, i, 8);
	t->disk_bytes = (uint64_t)cell_i64(r, i, 9);
	t->created_at_ms = cell_i64(r, i, 10);
}

int store_template_put_base(struct db *db, const char *name,
			    const char *kernel, const char *rootfs,
			    unsigned vcpus, uint64_t memory_mib)
{
	char v[24], m[24], now[24];

	return db_exec(db,
		       "INSERT INTO templates (name, kind, vcpus, memory_mib,"
		       " kernel_path, rootfs_path, created_at_ms)"
		       " VALUES (?, 'base', ?, ?, ?, ?, ?)"
		       " ON CONFLICT (name) DO UPDATE SET vcpus = excluded.vcpus,"
		       " memory_mib = excluded.memory_mib,"
		       " kernel_path = excluded.kernel_path,"
		       " rootfs_path = excluded.rootfs_path"
		       " WHERE templates.kind = 'base'",
		       6,
		       (const char *[]){ name, I64(v, vcpus), I64(m, memory_mib),
					 kernel, rootfs, I64(now, now_ms()) },
		       NULL);
}

int store_template_insert_snapshot(struct db *db, const struct template *t)
{
	char v[24], m[24], mb[24], db_[24], now[24];

	return db_exec(db,
		       "INSERT INTO templates (name, kind, vcpus, memory_mib,"
		       " host_id, source_sandbox_id, memory_bytes, disk_bytes,"
		       " created_at_ms)"
		       " VALUES (?, 'snapshot', ?, ?, ?, ?, ?, ?, ?)",
		       8,
		       (const char *[]){ t->name, I64(v, t->vcpus),
					 I64(m, t->memory_mib), t->host_id,
					 t->source_sandbox_id,
					 I64(mb, t->memory_bytes),
					 I64(db_, t->disk_bytes),
					 I64(now, now_ms()) },
		       NULL);
}

int store_template_get(struct db *db, const char *name, struct template *out)
{
	struct db_rows *rows;
	int r;

	r = db_query(db, "SELECT " TPL_COLUMNS " FROM templates WHERE name = ?",
		     1, &name, &rows);
	if (r < 0)
		return r;
	if (rows->nrows == 0) {
		db_rows_free(rows);
		return -ENOENT;
	}
	template_from_row(rows, 0, out);
	db_rows_free(rows);
	return 0;
}

int store_template_list(struct db *db, const char *kind, struct template **out,
			size_t *n)
{
	struct db_rows *rows;
	int r;

	r = db_query(db,
		     "SELECT " TPL_COLUMNS " FROM templates"
		     " WHERE (CAST(? AS TEXT) IS NULL OR kind = ?) ORDER BY kind, name",
		     2, (const char *[]){ kind, kind }, &rows);
	if (r < 0)
		return r;
	*n = (size_t)rows->nrows;
	*out = calloc(*n + 1, sizeof(**out));
	if (!*out) {
		db_rows_free(rows);
		return -ENOMEM;
	}
	for (int i = 0; i < rows->nrows; i++)
		template_from_row(rows, i, &(*out)[i]);
	db_rows_free(rows);
	return 0;
}

int store_template_delete(struct db *db, const char *name)
{
	return update_one(db, "DELETE FROM templates WHERE name = ?", 1, &name);
}

/* --- hosts ---------------------------------------------------------------- */

#define HOST_COLUMNS                                                          \
	"id, url, state, agent_host_id, hostname, agent_version, vmm_version," \
	" total_vcpus, free_vcpus, total_memory_mib, free_memory_mib,"        \
	" last_seen_ms, last_error, created_at_ms"

void hosts_free(struct host *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].last_error);
	free(v);
}

static void host_from_row(const struct db_rows *r, int i, struct host *h)
{
	memset(h, 0, sizeof(*h));
	cell_copy(h->id, sizeof(h->id), r, i, 0);
	cell_copy(h->url, sizeof(h->url), r, i, 1);
	cell_copy(h->state, sizeof(h->state), r, i, 2);
	cell_copy(h->agent_host_id, sizeof(h->agent_host_id), r, i, 3);
	cell_copy(h->hostname, sizeof(h->hostname), r, i, 4);
	cell_copy(h->agent_version, sizeof(h->agent_version), r, i, 5);
	cell_copy(h->vmm_version, sizeof(h->vmm_version), r, i, 6);
	h->total_vcpus = (unsigned)cell_i64(r, i, 7);
	h->free_vcpus = (unsigned)cell_i64(r, i, 8);
	h->total_memory_mib = (uint64_t)cell_i64(r, i, 9);
	h->free_memory_mib = (uint64_t)cell_i64(r, i, 10);
	h->last_seen_ms = cell_i64(r, i, 11);
	h->last_error = cell_dup(r, i, 12);
	h->created_at_ms = cell_i64(r, i, 13);
}

int store_host_add(struct db *db, const char *url, char *id_out)
{
	struct db_rows *rows;
	uint8_t rnd[4];
	char id[64], now[24];
	int r;

	r = db_query(db, "SELECT id FROM hosts WHERE url = ?", 1, &url, &rows);
	if (r < 0)
		return r;
	if (rows->nrows == 1) {
		if (id_out)
			cell_copy(id_out, 64, rows, 0, 0);
		db_rows_free(rows);
		return 0;
	}
	db_rows_free(rows);
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return -EIO;
	snprintf(id, sizeof(id), "host-%02x%02x%02x%02x", rnd[0], rnd[1],
		 rnd[2], rnd[3]);
	r = db_exec(db,
		    "INSERT INTO hosts (id, url, state, created_at_ms)"
		    " VALUES (?, ?, 'unknown', ?)",
		    3, (const char *[]){ id, url, I64(now, now_ms()) }, NULL);
	if (r == 0 && id_out)
		snprintf(id_out, 64, "%s", id);
	return r;
}

int store_host_get(struct db *db, const char *id, struct host *out)
{
	struct db_rows *rows;
	int r;

	r = db_query(db, "SELECT " HOST_COLUMNS " FROM hosts WHERE id = ?", 1,
		     &id, &rows);
	if (r < 0)
		return r;
	if (rows->nrows == 0) {
		db_rows_free(rows);
		return -ENOENT;
	}
	host_from_row(rows, 0, out);
	db_rows_free(rows);
	return 0;
}

int store_host_list(struct db *db, struct host **out, size_t *n)
{
	struct db_rows *rows;
	int r;

	r = db_query(db, "SELECT " HOST_COLUMNS " FROM hosts ORDER BY url", 0,
		     NULL, &rows);
	if (r < 0)
		return r;
	*n = (size_t)rows->nrows;
	*out = calloc(*n + 1, sizeof(**out));
	if (!*out) {
		db_rows_free(rows);
		return -ENOMEM;
	}
	for (int i = 0; i < rows->nrows; i++)
		host_from_row(rows, i, &(*out)[i]);
	db_rows_free(rows);
	return 0;
}

int store_host_set_up(struct db *db, const struct host *h)
{
	char tv[24], fv[24], tm[24], fm[24], now[24];

	return update_one(db,
			  "UPDATE hosts SET state = 'up', agent_host_id = ?,"
			  " hostname = ?, agent_version = ?, vmm_version = ?,"
			  " total_vcpus = ?, free_vcpus = ?,"
			  " total_memory_mib = ?, free_memory_mib = ?,"
			  " last_seen_ms = ?, last_error = NULL WHERE id = ?",
			  10,
			  (const char *[]){ h->agent_host_id, h->hostname,
					    h->agent_version, h->vmm_version,
					    I64(tv, h->total_vcpus),
					    I64(fv, h->free_vcpus),
					    I64(tm, h->total_memory_mib),
					    I64(fm, h->free_memory_mib),
					    I64(now, now_ms()), h->id });
}

int store_host_set_down(struct db *db, const char *id, const char *reason)
{
	return update_one(db,
			  "UPDATE hosts SET state = 'down', last_error = ?"
			  " WHERE id = ?",
			  2, (const char *[]){ reason, id });
}

int store_host_reserve(struct db *db, const char *id, uint64_t memory_mib,
		       unsigned vcpus)
{
	char m[24], v[24];

	return update_one(db,
			  "UPDATE hosts SET"
			  " free_memory_mib = CASE WHEN free_memory_mib > ? THEN free_memory_mib - ? ELSE 0 END,"
			  " free_vcpus = CASE WHEN free_vcpus > ? THEN free_vcpus - ? ELSE 0 END"
			  " WHERE id = ?",
			  5,
			  (const char *[]){ I64(m, memory_mib), m,
					    I64(v, vcpus), v, id });
}

/* --- API keys ------------------------------------------------------------- */

static int sha256_hex(const char *s, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (!EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL) ||
	    len != 32)
		return -EIO;
	for (unsigned i = 0; i < len; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
	return 0;
}

int store_key_create(struct db *db, const char *name,
		     char key_out[API_KEY_LEN])
{
	uint8_t rnd[20], id_rnd[4];
	char key[API_KEY_LEN], hash[65], id[24], prefix[16], now[24];
	int n, r;

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd) ||
	    getrandom(id_rnd, sizeof(id_rnd), 0) != sizeof(id_rnd))
		return -EIO;
	n = snprintf(key, sizeof(key), "ember_");
	for (size_t i = 0; i < sizeof(rnd); i++)
		n += snprintf(key + n, sizeof(key) - (size_t)n, "%02x", rnd[i]);
	snprintf(id, sizeof(id), "key-%02x%02x%02x%02x", id_rnd[0], id_rnd[1],
		 id_rnd[2], id_rnd[3]);
	snprintf(prefix, sizeof(prefix), "%.10s", key);
	r = sha256_hex(key, hash);
	if (r < 0)
		return r;
	r = db_exec(db,
		    "INSERT INTO api_keys (id, name, key_hash, prefix, created_at_ms)"
		    " VALUES (?, ?, ?, ?, ?)",
		    5,
		    (const char *[]){ id, name ? name : "", hash, prefix,
				      I64(now, now_ms()) },
		    NULL);
	if (r == 0)
		memcpy(key_out, key, sizeof(key));
	return r;
}

int store_key_check(struct db *db, const char *key)
{
	struct db_rows *rows;
	char hash[65];
	const char *h = hash;
	int r;

	if (!key || !*key || strlen(key) > 256)
		return -EACCES;
	r = sha256_hex(key, hash);
	if (r < 0)
		return r;
	/* The lookup is by hash, so its timing says nothing about the key. */
	r = db_query(db, "SELECT id FROM api_keys WHERE key_hash = ?", 1, &h,
		     &rows);
	if (r < 0)
		return r;
	r = rows->nrows == 1 ? 0 : -EACCES;
	db_rows_free(rows);
	return r;
}
