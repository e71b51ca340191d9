// SPDX-License-Identifier: Apache-2.0
/*
 * emberd's database layer (src/emberd/db.c, store.c) against SQLite, or,
 * with --postgres, against a PostgreSQL server this test starts for itself
 * (Debian's postgresql package; exit 77, skipped, when it is absent).
 */
#include "db.h"
#include "store.h"

#include <ember/log.h>

#include "../../test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PG_BIN "/usr/lib/postgresql/15/bin"

static char tmpdir[] = "/tmp/ember-test-db.XXXXXX";

static void test_state_table(void)
{
	/* The transitions store.h documents, and some it refuses. */
	CHECK(sbx_transition_allowed(SBX_STARTING, SBX_RUNNING));
	CHECK(sbx_transition_allowed(SBX_RUNNING, SBX_PAUSING));
	CHECK(sbx_transition_allowed(SBX_PAUSING, SBX_PAUSED));
	CHECK(sbx_transition_allowed(SBX_PAUSED, SBX_RESUMING));
	CHECK(sbx_transition_allowed(SBX_RESUMING, SBX_RUNNING));
	CHECK(sbx_transition_allowed(SBX_RUNNING, SBX_ERROR));
	CHECK(sbx_transition_allowed(SBX_ERROR, SBX_STOPPING));
	CHECK(sbx_transition_allowed(SBX_ERROR, SBX_RUNNING));
	CHECK(sbx_transition_allowed(SBX_ERROR, SBX_RESUMING));
	CHECK(!sbx_transition_allowed(SBX_ERROR, SBX_PAUSED));
	CHECK(sbx_transition_allowed(SBX_STOPPING, SBX_STOPPED));
	CHECK(!sbx_transition_allowed(SBX_RUNNING, SBX_PAUSED));
	CHECK(!sbx_transition_allowed(SBX_PAUSED, SBX_RUNNING));
	CHECK(!sbx_transition_allowed(SBX_PAUSED, SBX_PAUSING));
	CHECK(!sbx_transition_allowed(SBX_PAUSED, SBX_ERROR));
	CHECK(!sbx_transition_allowed(SBX_STOPPED, SBX_RUNNING));
	CHECK(!sbx_transition_allowed(SBX_STOPPED, SBX_STOPPING));
	for (int s = 0; s < SBX_NSTATES; s++) {
		enum sbx_state back;

		CHECK(sbx_state_parse(sbx_state_name(s), &back) == 0 &&
		      back == (enum sbx_state)s);
	}
	CHECK(sbx_state_parse("frozen", &(enum sbx_state){ 0 }) == -EINVAL);
}

static int run_suite(const char *spec)
{
	struct db *db;
	struct sandbox s = { 0 }, got = { 0 }, *sv;
	struct template t = { 0 }, gt = { 0 }, *tv;
	struct event *ev;
	struct host *hv;
	char key[API_KEY_LEN], hid[64], hid2[64];
	enum sbx_state was;
	size_t n;
	int applied = -1;

	REQUIRE(db_open(spec, &db) == 0);
	/* Migrations: the first run applies them, the second nothing. */
	CHECK(db_migrate(db, &applied) == 0 && applied == 1);
	CHECK(db_migrate(db, &applied) == 0 && applied == 0);
	CHECK(db_schema_version(db) == 1);

	/* A sandbox through its state machine. */
	snprintf(s.id, sizeof(s.id), "sbx-test1");
	snprintf(s.template_name, sizeof(s.template_name), "base");
	snprintf(s.on_timeout, sizeof(s.on_timeout), "pause");
	s.vcpus = 2;
	s.memory_mib = 512;
	s.timeout_s = 60;
	s.metadata = "{\"team\":\"a\"}";
	REQUIRE(store_sandbox_insert(db, &s) == 0);
	CHECK(store_sandbox_insert(db, &s) == -EEXIST);
	REQUIRE(store_sandbox_get(db, "sbx-test1", &got) == 0);
	CHECK(got.state == SBX_STARTING && got.vcpus == 2 &&
	      got.memory_mib == 512 && got.timeout_s == 60);
	CHECK(strcmp(got.metadata, "{\"team\":\"a\"}") == 0);
	CHECK(strcmp(got.on_timeout, "pause") == 0 && got.generation == -1);
	sandbox_clear(&got);
	CHECK(store_sandbox_get(db, "sbx-none", &got) == -ENOENT);

	CHECK(store_sandbox_transition(db, "sbx-test1", SBX_STARTING,
				       SBX_RUNNING, "started", NULL) == 0);
	CHECK(store_sandbox_set_expiry(db, "sbx-test1", 12345, 60, "pause") ==
	      0);
	/* Refused: running -> paused skips pausing. */
	CHECK(store_sandbox_transition(db, "sbx-test1", SBX_NSTATES,
				       SBX_PAUSED, NULL, &was) == -EPERM);
	CHECK(was == SBX_RUNNING);
	/* Conflict: the caller thought it was paused. */
	CHECK(store_sandbox_transition(db, "sbx-test1", SBX_PAUSED,
				       SBX_RESUMING, NULL, NULL) == -EBUSY);
	CHECK(store_sandbox_transition(db, "sbx-none", SBX_NSTATES,
				       SBX_RUNNING, NULL, NULL) == -ENOENT);
	REQUIRE(store_sandbox_get(db, "sbx-test1", &got) == 0);
	CHECK(got.state == SBX_RUNNING && got.expires_at_ms == 12345);
	sandbox_clear(&got);
	CHECK(store_sandbox_transition(db, "sbx-test1", SBX_RUNNING,
				       SBX_PAUSING, "pause", NULL) == 0);
	CHECK(store_sandbox_set_paused(db, "sbx-test1", 0, 1 << 20, 4096) == 0);
	CHECK(store_sandbox_transition(db, "sbx-test1", SBX_PAUSING,
				       SBX_PAUSED, "paused", NULL) == 0);
	REQUIRE(store_sandbox_get(db, "sbx-test1", &got) == 0);
	/* A paused sandbox has no deadline running, but keeps its timeout. */
	CHECK(got.state == SBX_PAUSED && got.expires_at_ms == 0 &&
	      got.timeout_s == 60 && got.generation == 0 &&
	      got.paused_memory_bytes == 1 << 20);
	sandbox_clear(&got);
	CHECK(store_sandbox_transition(db, "sbx-test1", SBX_PAUSED,
				       SBX_PAUSING, NULL, NULL) == -EPERM);
	CHECK(store_sandbox_transition(db, "sbx-test1", SBX_PAUSED,
				       SBX_STOPPING, "delete", NULL) == 0);
	CHECK(store_sandbox_transition(db, "sbx-test1", SBX_STOPPING,
				       SBX_ERROR, "agent gone", NULL) == 0);
	REQUIRE(store_sandbox_get(db, "sbx-test1", &got) == 0);
	CHECK(got.state == SBX_ERROR && got.error &&
	      strcmp(got.error, "agent gone") == 0);
	sandbox_clear(&got);

	/* Every change is in the event log, in order. */
	REQUIRE(store_events_list(db, "sbx-test1", &ev, &n) == 0);
	CHECK(n == 6);
	if (n == 6) {
		CHECK(ev[0].from_state[0] == '\0' &&
		      strcmp(ev[0].to_state, "starting") == 0);
		CHECK(strcmp(ev[1].to_state, "running") == 0);
		CHECK(strcmp(ev[3].from_state, "pausing") == 0 &&
		      strcmp(ev[3].to_state, "paused") == 0);
		CHECK(strcmp(ev[5].to_state, "error") == 0 && ev[5].reason &&
		      strcmp(ev[5].reason, "agent gone") == 0);
		CHECK(ev[0].id < ev[5].id && ev[0].at_ms <= ev[5].at_ms);
	}
	events_free(ev, n);

	/* Lists: by state, and every state but stopped by default. */
	snprintf(s.id, sizeof(s.id), "sbx-test2");
	s.metadata = NULL;
	REQUIRE(store_sandbox_insert(db, &s) == 0);
	CHECK(store_sandbox_list(db, NULL, NULL, &sv, &n) == 0 && n == 2);
	sandboxes_free(sv, n);
	CHECK(store_sandbox_list(db, "error", NULL, &sv, &n) == 0 && n == 1 &&
	      strcmp(sv[0].id, "sbx-test1") == 0);
	sandboxes_free(sv, n);
	CHECK(store_sandbox_transition(db, "sbx-test2", SBX_STARTING,
				       SBX_STOPPING, NULL, NULL) == 0);
	CHECK(store_sandbox_transition(db, "sbx-test2", SBX_STOPPING,
				       SBX_STOPPED, NULL, NULL) == 0);
	CHECK(store_sandbox_list(db, NULL, NULL, &sv, &n) == 0 && n == 1);
	sandboxes_free(sv, n);
	CHECK(store_sandbox_list(db, "stopped", NULL, &sv, &n) == 0 && n == 1);
	sandboxes_free(sv, n);

	/* Templates: base upserts, snapshot names are unique. */
	CHECK(store_template_put_base(db, "base", "/k1", "/r1", 1, 256) == 0);
	CHECK(store_template_put_base(db, "base", "/k2", "/r2", 2, 512) == 0);
	REQUIRE(store_template_get(db, "base", &gt) == 0);
	CHECK(strcmp(gt.kind, "base") == 0 && gt.vcpus == 2 &&
	      gt.memory_mib == 512 && strcmp(gt.kernel_path, "/k2") == 0);
	template_clear(&gt);
	snprintf(t.name, sizeof(t.name), "snap1");
	snprintf(t.host_id, sizeof(t.host_id), "host-1");
	snprintf(t.source_sandbox_id, sizeof(t.source_sandbox_id), "sbx-test1");
	t.vcpus = 2;
	t.memory_mib = 512;
	t.memory_bytes = 1000;
	CHECK(store_template_insert_snapshot(db, &t) == 0);
	CHECK(store_template_insert_snapshot(db, &t) == -EEXIST);
	CHECK(store_template_list(db, "snapshot", &tv, &n) == 0 && n == 1 &&
	      strcmp(tv[0].host_id, "host-1") == 0 &&
	      tv[0].memory_bytes == 1000);
	templates_free(tv, n);
	CHECK(store_template_list(db, NULL, &tv, &n) == 0 && n == 2);
	templates_free(tv, n);
	CHECK(store_template_delete(db, "snap1") == 0);
	CHECK(store_template_delete(db, "snap1") == -ENOENT);

	/* Hosts: adding a URL twice finds the same host. */
	CHECK(store_host_add(db, "http://h1:7000", hid) == 0);
	CHECK(store_host_add(db, "http://h1:7000", hid2) == 0);
	CHECK(strcmp(hid, hid2) == 0);
	CHECK(store_host_list(db, &hv, &n) == 0 && n == 1 &&
	      strcmp(hv[0].state, "unknown") == 0);
	hosts_free(hv, n);
	CHECK(store_host_set_down(db, hid, "no answer") == 0);
	CHECK(store_host_list(db, &hv, &n) == 0 && n == 1 &&
	      strcmp(hv[0].state, "down") == 0 && hv[0].last_error &&
	      strcmp(hv[0].last_error, "no answer") == 0);
	hosts_free(hv, n);

	/* Keys: only the one created passes; the table holds no key. */
	CHECK(store_key_create(db, "ci", key) == 0);
	CHECK(strncmp(key, "ember_", 6) == 0 && strlen(key) == 46);
	CHECK(store_key_check(db, key) == 0);
	key[10] ^= 1;
	CHECK(store_key_check(db, key) == -EACCES);
	CHECK(store_key_check(db, "") == -EACCES);
	key[10] ^= 1;
	{
		struct db_rows *rows;
		const char *k = key;

		CHECK(db_query(db, "SELECT COUNT(*) FROM api_keys WHERE key_hash = ? OR prefix = ?",
			       2, (const char *[]){ k, k }, &rows) == 0);
		CHECK(rows && strcmp(db_cell(rows, 0, 0), "0") == 0);
		db_rows_free(rows);
	}
	db_close(db);

	/* Reopened, the data and schema are there and nothing migrates. */
	REQUIRE(db_open(spec, &db) == 0);
	CHECK(db_migrate(db, &applied) == 0 && applied == 0);
	CHECK(store_key_check(db, key) == 0);
	db_close(db);
	return 0;
}

static int sh(const char *fmt, const char *a, const char *b)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), fmt, a, b);
	return system(cmd);
}

/* Starts a private PostgreSQL server in tmpdir; fills spec. */
static int pg_start(char *spec, size_t len)
{
	char data[512], sock[512], cmd[2048];
	const char *as = getuid() == 0 ? "runuser -u postgres -- " : "";
	int port = 20000 + (int)(getpid() % 20000);

	snprintf(data, sizeof(data), "%s/pgdata", tmpdir);
	snprintf(sock, sizeof(sock), "%s/pgsock", tmpdir);
	mkdir(sock, 0700);
	if (getuid() == 0 && sh("chown -R postgres: %s%s", tmpdir, "") != 0)
		return -1;
	chmod(tmpdir, 0755);
	snprintf(cmd, sizeof(cmd),
		 "%s" PG_BIN "/initdb -D %s -A trust -U postgres >%s/initdb.log 2>&1",
		 as, data, tmpdir);
	if (system(cmd) != 0)
		return -1;
	snprintf(cmd, sizeof(cmd),
		 "%s" PG_BIN "/pg_ctl -D %s -l %s/pg.log -w -t 60 "
		 "-o \"-k %s -p %d -c listen_addresses=''\" start >/dev/null",
		 as, data, tmpdir, sock, port);
	if (system(cmd) != 0)
		return -1;
	snprintf(spec, len,
		 "postgresql:///postgres?host=%s&port=%d&user=postgres", sock,
		 port);
	return 0;
}

static void pg_stop(void)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
		 "%s" PG_BIN "/pg_ctl -D %s/pgdata -w -t 60 -m fast stop >/dev/null",
		 getuid() == 0 ? "runuser -u postgres -- " : "", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "pg_ctl stop failed\n");
}

int main(int argc, char **argv)
{
	bool pg = argc > 1 && strcmp(argv[1], "--postgres") == 0;
	char spec[1024];
	int r;

	ember_log_init("test-db", NULL);
	if (pg && (access(PG_BIN "/initdb", X_OK) != 0 ||
		   access(PG_BIN "/pg_ctl", X_OK) != 0)) {
		fprintf(stderr, "PostgreSQL binaries absent: skipped\n");
		return 77;
	}
	REQUIRE(mkdtemp(tmpdir) != NULL);
	test_state_table();
	if (pg) {
		r = pg_start(spec, sizeof(spec));
		CHECK(r == 0);
		if (r == 0)
			run_suite(spec);
		pg_stop();
	} else {
		snprintf(spec, sizeof(spec), "%s/emberd.db", tmpdir);
		run_suite(spec);
		/* WAL mode: the write-ahead log sits next to the file. */
		struct db *db;
		if (db_open(spec, &db) == 0) {
			struct db_rows *rows;

			CHECK(db_query(db, "PRAGMA journal_mode", 0, NULL,
				       &rows) == 0 &&
			      strcmp(db_cell(rows, 0, 0), "wal") == 0);
			db_rows_free(rows);
			db_close(db);
		}
	}
	sh("rm -rf %s%s", tmpdir, "");
	return test_summary(pg ? "emberd-db-postgres" : "emberd-db-sqlite");
}
