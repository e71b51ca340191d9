// SPDX-License-Identifier: Apache-2.0
#include "db.h"

#include <ember/log.h>

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct db {
	enum db_kind kind;
	sqlite3 *lite;
	PGconn *pg;
	pthread_mutex_t lock;	/* recursive: held across a transaction */
};

/*
 * The schema, as an ordered list of migrations; version N is the N-th
 * entry. Never edit an entry that has shipped: append a new one. `@ID@`
 * stands for an auto-numbered primary key, the one thing the two dialects
 * spell differently.
 */
static const char *const migrations[] = {
	/* 1: the first schema. */
	"CREATE TABLE hosts ("
	" id TEXT PRIMARY KEY,"
	" url TEXT NOT NULL UNIQUE,"
	" state TEXT NOT NULL DEFAULT 'unknown',"
	" agent_host_id TEXT,"
	" hostname TEXT,"
	" agent_version TEXT,"
	" vmm_version TEXT,"
	" total_vcpus INTEGER NOT NULL DEFAULT 0,"
	" free_vcpus INTEGER NOT NULL DEFAULT 0,"
	" total_memory_mib BIGINT NOT NULL DEFAULT 0,"
	" free_memory_mib BIGINT NOT NULL DEFAULT 0,"
	" last_seen_ms BIGINT NOT NULL DEFAULT 0,"
	" last_error TEXT,"
	" created_at_ms BIGINT NOT NULL);"
	"CREATE TABLE templates ("
	" name TEXT PRIMARY KEY,"
	" kind TEXT NOT NULL,"
	" vcpus INTEGER NOT NULL,"
	" memory_mib BIGINT NOT NULL,"
	" kernel_path TEXT,"
	" rootfs_path TEXT,"
	" host_id TEXT,"
	" source_sandbox_id TEXT,"
	" memory_bytes BIGINT NOT NULL DEFAULT 0,"
	" disk_bytes BIGINT NOT NULL DEFAULT 0,"
	" created_at_ms BIGINT NOT NULL);"
	"CREATE TABLE sandboxes ("
	" id TEXT PRIMARY KEY,"
	" template_name TEXT NOT NULL,"
	" host_id TEXT,"
	" state TEXT NOT NULL,"
	" vcpus INTEGER NOT NULL,"
	" memory_mib BIGINT NOT NULL,"
	" timeout_s BIGINT NOT NULL,"
	" on_timeout TEXT NOT NULL,"
	" expires_at_ms BIGINT NOT NULL DEFAULT 0,"
	" metadata TEXT NOT NULL DEFAULT '{}',"
	" env TEXT NOT NULL DEFAULT '{}',"
	" error TEXT,"
	" generation INTEGER NOT NULL DEFAULT -1,"
	" paused_memory_bytes BIGINT NOT NULL DEFAULT 0,"
	" paused_disk_bytes BIGINT NOT NULL DEFAULT 0,"
	" created_at_ms BIGINT NOT NULL,"
	" updated_at_ms BIGINT NOT NULL);"
	"CREATE INDEX sandboxes_state ON sandboxes (state);"
	"CREATE INDEX sandboxes_host ON sandboxes (host_id);"
	"CREATE TABLE api_keys ("
	" id TEXT PRIMARY KEY,"
	" name TEXT NOT NULL,"
	" key_hash TEXT NOT NULL UNIQUE,"
	" prefix TEXT NOT NULL,"
	" created_at_ms BIGINT NOT NULL,"
	" last_used_ms BIGINT NOT NULL DEFAULT 0);"
	"CREATE TABLE events ("
	" id @ID@,"
	" sandbox_id TEXT NOT NULL,"
	" from_state TEXT,"
	" to_state TEXT NOT NULL,"
	" reason TEXT,"
	" at_ms BIGINT NOT NULL);"
	"CREATE INDEX events_sandbox ON events (sandbox_id, id);",
};

static pthread_mutexattr_t recursive_attr;
static pthread_once_t attr_once = PTHREAD_ONCE_INIT;

static void attr_init(void)
{
	pthread_mutexattr_init(&recursive_attr);
	pthread_mutexattr_settype(&recursive_attr, PTHREAD_MUTEX_RECURSIVE);
}

enum db_kind db_kind(const struct db *db)
{
	return db->kind;
}

static bool is_postgres(const char *spec)
{
	return strncmp(spec, "postgres://", 11) == 0 ||
	       strncmp(spec, "postgresql://", 13) == 0;
}

int db_open(const char *spec, struct db **out)
{
	struct db *db = calloc(1, sizeof(*db));
	int r;

	if (!db)
		return -ENOMEM;
	pthread_once(&attr_once, attr_init);
	pthread_mutex_init(&db->lock, &recursive_attr);
	if (is_postgres(spec)) {
		db->kind = DB_POSTGRES;
		db->pg = PQconnectdb(spec);
		if (PQstatus(db->pg) != CONNECTION_OK) {
			log_error("database: cannot connect to PostgreSQL: %s",
				  PQerrorMessage(db->pg));
			r = -ECONNREFUSED;
			goto err;
		}
		/* Quiet NOTICEs ("relation exists, skipping"). */
		PQclear(PQexec(db->pg, "SET client_min_messages = warning"));
	} else {
		db->kind = DB_SQLITE;
		r = sqlite3_open_v2(spec, &db->lite,
				    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
					    SQLITE_OPEN_FULLMUTEX,
				    NULL);
		if (r != SQLITE_OK) {
			log_error("database: cannot open %s: %s", spec,
				  db->lite ? sqlite3_errmsg(db->lite)
					   : sqlite3_errstr(r));
			r = -EIO;
			goto err;
		}
		sqlite3_busy_timeout(db->lite, 5000);
		r = db_exec(db, "PRAGMA journal_mode=WAL", 0, NULL, NULL);
		if (r == 0)
			r = db_exec(db, "PRAGMA synchronous=NORMAL", 0, NULL,
				    NULL);
		if (r < 0)
			goto err;
	}
	*out = db;
	return 0;
err:
	db_close(db);
	return r;
}

void db_close(struct db *db)
{
	if (!db)
		return;
	if (db->lite)
		sqlite3_close_v2(db->lite);
	if (db->pg)
		PQfinish(db->pg);
	pthread_mutex_destroy(&db->lock);
	free(db);
}

/* Rewrites `?` placeholders as $1, $2... outside quoted strings. */
static char *pg_sql(const char *sql)
{
	size_t len = strlen(sql), n = 0;
	char *out = malloc(len * 4 + 1);
	bool quoted = false;
	int param = 0;

	if (!out)
		return NULL;
	for (const char *p = sql; *p; p++) {
		if (*p == '\'')
			quoted = !quoted;
		if (*p == '?' && !quoted)
			n += (size_t)sprintf(out + n, "$%d", ++param);
		else
			out[n++] = *p;
	}
	out[n] = '\0';
	return out;
}

static int lite_run(struct db *db, const char *sql, int nparams,
		    const char *const *params, struct db_rows **rows,
		    long *changes)
{
	sqlite3_stmt *st = NULL;
	size_t cap = 0;
	int r, n = 0;

	r = sqlite3_prepare_v2(db->lite, sql, -1, &st, NULL);
	if (r != SQLITE_OK) {
		log_error("database: %s: %s", sqlite3_errmsg(db->lite), sql);
		return -EIO;
	}
	for (int i = 0; i < nparams; i++) {
		if (params[i])
			sqlite3_bind_text(st, i + 1, params[i], -1,
					  SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(st, i + 1);
	}
	if (rows) {
		*rows = calloc(1, sizeof(**rows));
		if (!*rows) {
			sqlite3_finalize(st);
			return -ENOMEM;
		}
		(*rows)->ncols = sqlite3_column_count(st);
	}
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct db_rows *rs = rows ? *rows : NULL;

		if (!rs)
			continue;
		if ((size_t)(n + 1) * (size_t)rs->ncols > cap) {
			size_t ncap = cap ? cap * 2 : (size_t)rs->ncols * 16;
			char **c = realloc(rs->cells, ncap * sizeof(char *));

			if (!c) {
				r = SQLITE_NOMEM;
				break;
			}
			rs->cells = c;
			cap = ncap;
		}
		for (int col = 0; col < rs->ncols; col++) {
			const unsigned char *t = sqlite3_column_text(st, col);

			rs->cells[n * rs->ncols + col] =
				t ? strdup((const char *)t) : NULL;
		}
		rs->nrows = ++n;
	}
	if (r != SQLITE_DONE) {
		log_error("database: %s: %s", sqlite3_errmsg(db->lite), sql);
		sqlite3_finalize(st);
		if (rows) {
			db_rows_free(*rows);
			*rows = NULL;
		}
		return r == SQLITE_CONSTRAINT ? -EEXIST : -EIO;
	}
	if (changes)
		*changes = sqlite3_changes(db->lite);
	sqlite3_finalize(st);
	return 0;
}

static int pg_run(struct db *db, const char *sql, int nparams,
		  const char *const *params, struct db_rows **rows,
		  long *changes)
{
	char *q = pg_sql(sql);
	PGresult *res;
	ExecStatusType st;
	int r = 0;

	if (!q)
		return -ENOMEM;
	res = PQexecParams(db->pg, q, nparams, NULL, params, NULL, NULL, 0);
	st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		log_error("database: %s: %s", PQresultErrorMessage(res), q);
		/* 23xxx: integrity constraint violation. */
		r = state && strncmp(state, "23", 2) == 0 ? -EEXIST : -EIO;
		if (PQstatus(db->pg) == CONNECTION_BAD) {
			log_warn("database: connection lost, reconnecting");
			PQreset(db->pg);
		}
		goto out;
	}
	if (changes) {
		const char *t = PQcmdTuples(res);
		*changes = t && *t ? atol(t) : 0;
	}
	if (rows) {
		struct db_rows *rs = calloc(1, sizeof(*rs));
		int nr = PQntuples(res), nc = PQnfields(res);

		if (!rs) {
			r = -ENOMEM;
			goto out;
		}
		rs->nrows = nr;
		rs->ncols = nc;
		rs->cells = calloc((size_t)nr * (size_t)nc + 1,
				   sizeof(char *));
		if (!rs->cells) {
			free(rs);
			r = -ENOMEM;
			goto out;
		}
		for (int i = 0; i < nr; i++)
			for (int c = 0; c < nc; c++)
				rs->cells[i * nc + c] =
					PQgetisnull(res, i, c)
						? NULL
						: strdup(PQgetvalue(res, i, c));
		*rows = rs;
	}
out:
	PQclear(res);
	free(q);
	return r;
}

static int run(struct db *db, const char *sql, int nparams,
	       const char *const *params, struct db_rows **rows,
	       long *changes)
{
	int r;

	pthread_mutex_lock(&db->lock);
	if (db->kind == DB_SQLITE)
		r = lite_run(db, sql, nparams, params, rows, changes);
	else
		r = pg_run(db, sql, nparams, params, rows, changes);
	pthread_mutex_unlock(&db->lock);
	return r;
}

int db_exec(struct db *db, const char *sql, int nparams,
	    const char *const *params, long *changes)
{
	return run(db, sql, nparams, params, NULL, changes);
}

int db_query(struct db *db, const char *sql, int nparams,
	     const char *const *params, struct db_rows **out)
{
	*out = NULL;
	return run(db, sql, nparams, params, out, NULL);
}

void db_rows_free(struct db_rows *rows)
{
	if (!rows)
		return;
	for (int i = 0; i < rows->nrows * rows->ncols; i++)
		free(rows->cells[i]);
	free(rows->cells);
	free(rows);
}

const char *db_cell(const struct db_rows *rows, int row, int col)
{
	if (!rows || row < 0 || row >= rows->nrows || col < 0 ||
	    col >= rows->ncols)
		return NULL;
	return rows->cells[row * rows->ncols + col];
}

int db_begin(struct db *db)
{
	int r;

	pthread_mutex_lock(&db->lock);
	r = run(db, "BEGIN", 0, NULL, NULL, NULL);
	if (r < 0)
		pthread_mutex_unlock(&db->lock);
	return r;
}

int db_commit(struct db *db)
{
	int r = run(db, "COMMIT", 0, NULL, NULL, NULL);

	if (r < 0)
		run(db, "ROLLBACK", 0, NULL, NULL, NULL);
	pthread_mutex_unlock(&db->lock);
	return r;
}

void db_rollback(struct db *db)
{
	run(db, "ROLLBACK", 0, NULL, NULL, NULL);
	pthread_mutex_unlock(&db->lock);
}

/* Runs a script of ;-separated statements (none holds a ';' in a string). */
static int exec_script(struct db *db, const char *script)
{
	const char *id = db->kind == DB_SQLITE
				 ? "INTEGER PRIMARY KEY AUTOINCREMENT"
				 : "BIGSERIAL PRIMARY KEY";
	char *copy = strdup(script), *save = NULL;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	for (char *stmt = strtok_r(copy, ";", &save); stmt && r == 0;
	     stmt = strtok_r(NULL, ";", &save)) {
		char *tok = strstr(stmt, "@ID@");
		char buf[4096];

		while (*stmt == ' ' || *stmt == '\n')
			stmt++;
		if (!*stmt)
			continue;
		if (tok) {
			*tok = '\0';
			snprintf(buf, sizeof(buf), "%s%s%s", stmt, id, tok + 4);
			stmt = buf;
		}
		r = db_exec(db, stmt, 0, NULL, NULL);
	}
	free(copy);
	return r;
}

int db_schema_version(struct db *db)
{
	struct db_rows *rows;
	const char *v;
	int r;

	r = db_query(db, "SELECT MAX(version) FROM schema_version", 0, NULL,
		     &rows);
	if (r < 0)
		return r;
	v = db_cell(rows, 0, 0);
	r = v ? atoi(v) : 0;
	db_rows_free(rows);
	return r;
}

int db_migrate(struct db *db, int *applied)
{
	int n = (int)(sizeof(migrations) / sizeof(migrations[0]));
	int done = 0, r, version;

	r = db_exec(db,
		    "CREATE TABLE IF NOT EXISTS schema_version ("
		    " version INTEGER PRIMARY KEY,"
		    " applied_at_ms BIGINT NOT NULL)",
		    0, NULL, NULL);
	if (r < 0)
		return r;
	for (;;) {
		char vbuf[16], tbuf[24];
		struct timespec ts;

		r = db_begin(db);
		if (r < 0)
			return r;
		version = db_schema_version(db);
		if (version < 0 || version >= n) {
			db_rollback(db);
			if (version > n) {
				log_error("database: schema version %d is newer than this emberd knows (%d)",
					  version, n);
				return -EPROTO;
			}
			break;
		}
		r = exec_script(db, migrations[version]);
		clock_gettime(CLOCK_REALTIME, &ts);
		snprintf(vbuf, sizeof(vbuf), "%d", version + 1);
		snprintf(tbuf, sizeof(tbuf), "%lld",
			 (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
		if (r == 0)
			r = db_exec(db,
				    "INSERT INTO schema_version (version, applied_at_ms) VALUES (?, ?)",
				    2, (const char *[]){ vbuf, tbuf }, NULL);
		if (r < 0) {
			db_rollback(db);
			log_error("database: migration %d failed", version + 1);
			return r;
		}
		r = db_commit(db);
		if (r < 0)
			return r;
		log_info("database: migrated to schema version %d",
			 version + 1);
		done++;
	}
	if (applied)
		*applied = done;
	return 0;
}
