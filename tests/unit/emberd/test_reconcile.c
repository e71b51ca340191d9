// SPDX-License-Identifier: Apache-2.0
/*
 * emberd's scheduler, operations and reconciler against two minimal fake
 * host agents served in this process (Connect over HTTP with the real
 * protobuf messages). The fake only keeps a list of sandbox ids; it exists
 * to check emberd's side of the contract. The real ember-agent is tested
 * end to end in tests/e2e.
 */
#include "api.h"
#include "emberd.h"
#include "server.h"

#include <ember/hostagent.h>
#include <ember/log.h>

#include "../../test.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct fake {
	struct MHD_Daemon *mhd;
	uint16_t port;
	char url[64];
	uint64_t free_mib;
	char running[16][SBX_ID_LEN];
	int nrunning;
	char destroyed[16][SBX_ID_LEN];
	int ndestroyed;
	unsigned last_vcpus;
	uint64_t last_memory;
	int last_source_case;
	int creates;
};

struct body {
	uint8_t *data;
	size_t len;
};

static void fake_add(struct fake *f, const char *id)
{
	snprintf(f->running[f->nrunning++], SBX_ID_LEN, "%s", id);
}

static bool fake_remove(struct fake *f, const char *id)
{
	for (int i = 0; i < f->nrunning; i++) {
		if (strcmp(f->running[i], id) == 0) {
			memmove(f->running[i], f->running[i + 1],
				(size_t)(f->nrunning - i - 1) * SBX_ID_LEN);
			f->nrunning--;
			return true;
		}
	}
	return false;
}

static enum MHD_Result send_msg(struct MHD_Connection *c,
				const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len + 1);
	struct MHD_Response *r;
	enum MHD_Result ret;

	protobuf_c_message_pack(m, buf);
	r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Content-Type", "application/proto");
	ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, const char *code,
				  const char *msg)
{
	char text[256];
	struct MHD_Response *r;
	enum MHD_Result ret;

	snprintf(text, sizeof(text), "{\"code\":\"%s\",\"message\":\"%s\"}",
		 code, msg);
	r = MHD_create_response_from_buffer(strlen(text), text,
					    MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, "Content-Type", "application/json");
	ret = MHD_queue_response(c, ember_connect_http_status(code), r);
	MHD_destroy_response(r);
	return ret;
}

static void envelope(struct body *out, uint8_t flags, const void *p,
		     size_t n)
{
	out->data = realloc(out->data, out->len + 5 + n);
	ember_connect_envelope_header(out->data + out->len, flags,
				      (uint32_t)n);
	memcpy(out->data + out->len + 5, p, n);
	out->len += 5 + n;
}

static enum MHD_Result fake_exec(struct MHD_Connection *c, struct body *b)
{
	EmberExecRequest *req;
	EmberExecResponse ev;
	EmberExecExit x = EMBER__HOSTAGENT__V1__EXEC_EXIT__INIT;
	struct body out = { 0 };
	uint8_t buf[256];
	size_t n;
	struct MHD_Response *r;
	enum MHD_Result ret;

	ember__hostagent__v1__exec_response__init(&ev);
	if (b->len < 5)
		return send_error(c, "invalid_argument", "no envelope");
	req = ember__hostagent__v1__exec_request__unpack(NULL, b->len - 5,
							  b->data + 5);
	if (!req)
		return send_error(c, "invalid_argument", "bad message");
	/* Echoes argv[1] to stdout in two pieces, then exits 7. */
	const char *msg = req->n_argv > 1 ? req->argv[1] : "";
	size_t half = strlen(msg) / 2;
	ev.event_case = EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_STDOUT_DATA;
	ev.stdout_data.data = (uint8_t *)msg;
	ev.stdout_data.len = half;
	n = ember__hostagent__v1__exec_response__pack(&ev, buf);
	envelope(&out, 0, buf, n);
	ev.stdout_data.data = (uint8_t *)msg + half;
	ev.stdout_data.len = strlen(msg) - half;
	n = ember__hostagent__v1__exec_response__pack(&ev, buf);
	envelope(&out, 0, buf, n);
	ev.event_case = EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_EXIT;
	ev.exit = &x;
	x.exit_code = 7;
	n = ember__hostagent__v1__exec_response__pack(&ev, buf);
	envelope(&out, 0, buf, n);
	envelope(&out, EMBER_CONNECT_FLAG_END_STREAM, "{}", 2);
	ember__hostagent__v1__exec_request__free_unpacked(req, NULL);
	r = MHD_create_response_from_buffer(out.len, out.data,
					    MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Content-Type", "application/connect+proto");
	ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result fake_dispatch(struct fake *f, struct MHD_Connection *c,
				     const char *method, struct body *b)
{
	if (strcmp(method, "GetHostInfo") == 0) {
		EmberGetHostInfoResponse m = EMBER__HOSTAGENT__V1__GET_HOST_INFO_RESPONSE__INIT;

		m.host_id = "fake";
		m.agent_version = "fake 0";
		m.total_vcpus = 4;
		m.free_vcpus = 4;
		m.total_memory_mib = 8192;
		m.free_memory_mib = f->free_mib;
		return send_msg(c, &m.base);
	}
	if (strcmp(method, "ListSandboxes") == 0) {
		EmberListSandboxesResponse m = EMBER__HOSTAGENT__V1__LIST_SANDBOXES_RESPONSE__INIT;
		EmberAgentSandbox sv[16], *ptrs[16];

		for (int i = 0; i < f->nrunning; i++) {
			ember__hostagent__v1__sandbox__init(&sv[i]);
			sv[i].sandbox_id = f->running[i];
			sv[i].state = EMBER__HOSTAGENT__V1__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
			ptrs[i] = &sv[i];
		}
		m.n_sandboxes = (size_t)f->nrunning;
		m.sandboxes = ptrs;
		return send_msg(c, &m.base);
	}
	if (strcmp(method, "Exec") == 0)
		return fake_exec(c, b);

	EmberDestroySandboxRequest *id_req =
		ember__hostagent__v1__destroy_sandbox_request__unpack(
			NULL, b->len, b->data);
	enum MHD_Result ret;

	if (strcmp(method, "CreateSandbox") == 0) {
		EmberCreateSandboxRequest *q =
			ember__hostagent__v1__create_sandbox_request__unpack(
				NULL, b->len, b->data);
		EmberCreateSandboxResponse m = EMBER__HOSTAGENT__V1__CREATE_SANDBOX_RESPONSE__INIT;

		f->creates++;
		f->last_vcpus = q->vcpus;
		f->last_memory = q->memory_mib;
		f->last_source_case = q->source_case;
		fake_add(f, q->sandbox_id);
		ember__hostagent__v1__create_sandbox_request__free_unpacked(
			q, NULL);
		ret = send_msg(c, &m.base);
	} else if (strcmp(method, "DestroySandbox") == 0) {
		EmberDestroySandboxResponse m = EMBER__HOSTAGENT__V1__DESTROY_SANDBOX_RESPONSE__INIT;

		fake_remove(f, id_req->sandbox_id);
		snprintf(f->destroyed[f->ndestroyed++], SBX_ID_LEN, "%s",
			 id_req->sandbox_id);
		ret = send_msg(c, &m.base);
	} else if (strcmp(method, "PauseSandbox") == 0) {
		EmberPauseSandboxResponse m = EMBER__HOSTAGENT__V1__PAUSE_SANDBOX_RESPONSE__INIT;

		if (!fake_remove(f, id_req->sandbox_id)) {
			ret = send_error(c, "not_found", "no such sandbox");
		} else {
			m.memory_bytes_written = 4096;
			ret = send_msg(c, &m.base);
		}
	} else if (strcmp(method, "ResumeSandbox") == 0) {
		EmberResumeSandboxResponse m = EMBER__HOSTAGENT__V1__RESUME_SANDBOX_RESPONSE__INIT;

		fake_add(f, id_req->sandbox_id);
		ret = send_msg(c, &m.base);
	} else if (strcmp(method, "CreateSnapshot") == 0) {
		EmberCreateSnapshotResponse m = EMBER__HOSTAGENT__V1__CREATE_SNAPSHOT_RESPONSE__INIT;
		EmberSnapshotTemplate t = EMBER__HOSTAGENT__V1__SNAPSHOT_TEMPLATE__INIT;

		/* Same field numbers as DestroySandboxRequest: sandbox_id is
		 * field 1 in both. */
		t.memory_bytes = 1 << 20;
		m.template_ = &t;
		ret = send_msg(c, &m.base);
	} else {
		ret = send_error(c, "unimplemented", "not in the fake");
	}
	ember__hostagent__v1__destroy_sandbox_request__free_unpacked(id_req,
								     NULL);
	return ret;
}

static enum MHD_Result fake_request(void *cls, struct MHD_Connection *c,
				    const char *url, const char *method,
				    const char *version, const char *data,
				    size_t *size, void **con_cls)
{
	struct body *b = *con_cls;
	const char *prefix = "/" EMBER_HOSTAGENT_SERVICE "/";
	enum MHD_Result ret;

	if (!b) {
		*con_cls = calloc(1, sizeof(*b));
		return MHD_YES;
	}
	if (*size) {
		b->data = realloc(b->data, b->len + *size);
		memcpy(b->data + b->len, data, *size);
		b->len += *size;
		*size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "POST") != 0 ||
	    strncmp(url, prefix, strlen(prefix)) != 0)
		ret = send_error(c, "unimplemented", "bad path");
	else
		ret = fake_dispatch(cls, c, url + strlen(prefix), b);
	return ret;
}

static void fake_done(void *cls, struct MHD_Connection *c, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	struct body *b = *con_cls;

	if (b) {
		free(b->data);
		free(b);
	}
}

static int fake_start(struct fake *f, uint64_t free_mib)
{
	const union MHD_DaemonInfo *info;

	memset(f, 0, sizeof(*f));
	f->free_mib = free_mib;
	f->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL,
				  NULL, fake_request, f,
				  MHD_OPTION_NOTIFY_COMPLETED, fake_done, f,
				  MHD_OPTION_SOCK_ADDR,
				  &(struct sockaddr_in){
					  .sin_family = AF_INET,
					  .sin_addr.s_addr = htonl(0x7f000001),
				  },
				  MHD_OPTION_END);
	if (!f->mhd)
		return -EIO;
	info = MHD_get_daemon_info(f->mhd, MHD_DAEMON_INFO_BIND_PORT);
	f->port = info->port;
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u", f->port);
	return 0;
}

static enum sbx_state state_of(struct emberd *d, const char *id)
{
	struct sandbox s = { 0 };
	enum sbx_state st = SBX_NSTATES;

	if (store_sandbox_get(d->db, id, &s) == 0)
		st = s.state;
	sandbox_clear(&s);
	return st;
}

static int exec_cb(void *ctx, const EmberExecResponse *ev)
{
	char *out = ctx;

	if (ev->event_case ==
	    EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_STDOUT_DATA)
		strncat(out, (const char *)ev->stdout_data.data,
			ev->stdout_data.len);
	else if (ev->event_case ==
		 EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_EXIT)
		sprintf(out + strlen(out), "|exit=%d", ev->exit->exit_code);
	return 0;
}

static size_t collect(char *p, size_t size, size_t n, void *ctx)
{
	char *out = ctx;
	size_t have = strlen(out), add = size * n;

	if (have + add >= 4096)
		return 0;
	memcpy(out + have, p, add);
	out[have + add] = '\0';
	return add;
}

/* POSTs body to emberd's API; returns the HTTP status, body in out. */
static long api_post(uint16_t port, const char *key, const char *path,
		     const char *body, char out[4096])
{
	char url[256], auth[128];
	struct curl_slist *h;
	long status = 0;
	CURL *c = curl_easy_init();

	out[0] = '\0';
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
	h = curl_slist_append(NULL, auth);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	return status;
}

/* Exec through emberd's REST API (and the CLI, when given): streamed as
 * NDJSON, buffered as one object, and `ember sandbox exec` exiting with
 * the command's status. */
static void test_rest_exec(struct emberd *d, const char *id,
			   const char *ember, const char *tmp)
{
	char key[API_KEY_LEN], path[128], out[4096], cmd[1024];
	struct server *srv;
	uint16_t port;

	if (store_key_create(d->db, "t", key) < 0 ||
	    server_start("127.0.0.1:0", api_handle, d, &srv) < 0) {
		CHECK(!"emberd's API started");
		return;
	}
	port = server_port(srv);
	CHECK(port != 0);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/exec", id);
	CHECK(api_post(port, key, path,
		       "{\"cmd\":[\"echo\",\"hello world\"],\"stream\":true}",
		       out) == 200);
	CHECK(strcmp(out, "{\"type\":\"stdout\",\"data\":\"hello\"}\n"
			  "{\"type\":\"stdout\",\"data\":\" world\"}\n"
			  "{\"type\":\"exit\",\"exit_code\":7,\"signal\":0,"
			  "\"duration_ms\":0,\"timed_out\":false}\n") == 0);
	CHECK(api_post(port, key, path,
		       "{\"cmd\":[\"echo\",\"hello world\"]}", out) == 200);
	CHECK(strstr(out, "\"exit_code\":7") &&
	      strstr(out, "\"stdout\":\"hello world\"") &&
	      strstr(out, "\"stderr\":\"\""));
	if (ember) {
		int st;

		snprintf(cmd, sizeof(cmd),
			 "EMBER_API_URL=http://127.0.0.1:%u EMBER_API_KEY=%s "
			 "%s sandbox exec %s -- echo 'hello world' >%s/out",
			 port, key, ember, id, tmp);
		st = system(cmd);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7);
		snprintf(path, sizeof(path), "%s/out", tmp);
		FILE *f = fopen(path, "re");
		char got[64] = "";
		if (f) {
			CHECK(fgets(got, sizeof(got), f) != NULL);
			fclose(f);
		}
		CHECK(strcmp(got, "hello world") == 0);
		if (strcmp(got, "hello world"))
			fprintf(stderr, "got [%s]\n", got);
	}
	server_stop(srv);
}

int main(int argc, char **argv)
{
	char dbpath[] = "/tmp/ember-test-reconcile.XXXXXX";
	char spec[256], big_id[64], small_id[64], out[256] = "";
	struct emberd d = { .default_vcpus = 1, .default_memory_mib = 128,
			    .default_timeout_s = 300,
			    .reconcile_interval_s = 1,
			    .agent_timeout_ms = 10000,
			    .agent_probe_timeout_ms = 2000 };
	struct create_args a = { .template_name = "base", .timeout_s = 60,
				 .on_timeout = "pause", .metadata = "{}",
				 .env = "{\"A\":\"1\"}" };
	struct fake big, small;
	struct sandbox s1 = { 0 }, s2 = { 0 }, s3 = { 0 }, got = { 0 };
	struct template t = { 0 };
	struct apierr e = { 0 };
	struct ember_hostagent_client *c;
	struct ember_hostagent_error ae = { 0 };

	ember_log_init("test-reconcile", NULL);
	REQUIRE(mkdtemp(dbpath) != NULL);
	snprintf(spec, sizeof(spec), "%s/emberd.db", dbpath);
	pthread_mutex_init(&d.lock, NULL);
	pthread_cond_init(&d.wake, NULL);
	REQUIRE(db_open(spec, &d.db) == 0);
	REQUIRE(db_migrate(d.db, NULL) == 0);
	REQUIRE(store_template_put_base(d.db, "base", "/k", "/r", 1, 128) == 0);
	REQUIRE(fake_start(&big, 4096) == 0);
	REQUIRE(fake_start(&small, 1024) == 0);
	REQUIRE(store_host_add(d.db, big.url, big_id) == 0);
	REQUIRE(store_host_add(d.db, small.url, small_id) == 0);

	/* Before any report, no host is up: 503. */
	CHECK(op_create(&d, &a, &s1, &e) == -EHOSTUNREACH && e.status == 503);

	/* A pass brings both up; the one with more free memory wins. */
	reconcile_once(&d);
	CHECK(op_create(&d, &a, &s1, &e) == 0);
	CHECK(s1.state == SBX_RUNNING && strcmp(s1.host_id, big_id) == 0);
	CHECK(s1.expires_at_ms > now_ms() && s1.timeout_s == 60);
	CHECK(big.creates == 1 && big.last_vcpus == 1 &&
	      big.last_memory == 128 &&
	      big.last_source_case ==
		      EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__SOURCE_BASE_IMAGE);
	/* Too big for any host: 503 saying so. */
	a.memory_mib = 100000;
	CHECK(op_create(&d, &a, &got, &e) == -ENOSPC && e.status == 503 &&
	      strstr(e.message, "no host has room"));
	a.memory_mib = 0;

	/* Exec streams through the client, in order, with the exit. */
	REQUIRE(ember_hostagent_client_new(big.url, 5000, &c) == 0);
	{
		EmberExecRequest q = EMBER__HOSTAGENT__V1__EXEC_REQUEST__INIT;
		char *args[] = { "echo", "hello world" };

		q.sandbox_id = s1.id;
		q.n_argv = 2;
		q.argv = args;
		CHECK(ember_hostagent_exec(c, &q, exec_cb, out, &ae) == 0);
		CHECK(strcmp(out, "hello world|exit=7") == 0);
	}
	/* A Connect error comes back as its code and errno. */
	{
		EmberReadFileRequest q = EMBER__HOSTAGENT__V1__READ_FILE_REQUEST__INIT;
		EmberReadFileResponse *rr = NULL;

		CHECK(ember_hostagent_read_file(c, &q, &rr, &ae) == -ENOSYS);
		CHECK(strcmp(ae.code, "unimplemented") == 0 &&
		      ae.http_status == 501);
	}
	ember_hostagent_client_free(c);

	/* Pause: paused, gone from the host, left alone by the reconciler. */
	CHECK(op_pause(&d, s1.id, NULL, &got, &e) == 0 &&
	      got.state == SBX_PAUSED && got.paused_memory_bytes == 4096);
	sandbox_clear(&got);
	CHECK(op_pause(&d, s1.id, NULL, &got, &e) == -EBUSY &&
	      e.status == 409);
	CHECK(big.nrunning == 0);
	reconcile_once(&d);
	CHECK(state_of(&d, s1.id) == SBX_PAUSED);
	/* The user's timeout survives: a new one while paused, then resume
	 * restores it rather than a default. */
	CHECK(op_set_timeout(&d, s1.id, 120, "kill", &got, &e) == 0);
	sandbox_clear(&got);
	CHECK(op_resume(&d, s1.id, &got, &e) == 0 && got.state == SBX_RUNNING);
	CHECK(got.timeout_s == 120 && strcmp(got.on_timeout, "kill") == 0 &&
	      got.expires_at_ms > now_ms() + 100 * 1000);
	sandbox_clear(&got);
	CHECK(big.nrunning == 1);
	test_rest_exec(&d, s1.id, argc > 1 ? argv[1] : NULL, dbpath);

	/* A VM gone behind emberd's back: error, with a reason. */
	fake_remove(&big, s1.id);
	reconcile_once(&d);
	CHECK(store_sandbox_get(d.db, s1.id, &got) == 0 &&
	      got.state == SBX_ERROR && got.error &&
	      strstr(got.error, "not running on its host"));
	sandbox_clear(&got);
	/* Its host runs it again (a restarted agent adopted the VMM): running,
	 * with a deadline again. */
	fake_add(&big, s1.id);
	reconcile_once(&d);
	CHECK(store_sandbox_get(d.db, s1.id, &got) == 0 &&
	      got.state == SBX_RUNNING && got.expires_at_ms > now_ms());
	sandbox_clear(&got);
	/* In error, a resume reaches its host (which may hold a paused
	 * snapshot of it: here it does). */
	fake_remove(&big, s1.id);
	reconcile_once(&d);
	CHECK(state_of(&d, s1.id) == SBX_ERROR);
	CHECK(op_resume(&d, s1.id, &got, &e) == 0 && got.state == SBX_RUNNING);
	sandbox_clear(&got);
	fake_remove(&big, s1.id);
	reconcile_once(&d);
	CHECK(state_of(&d, s1.id) == SBX_ERROR);

	/* An orphan on a host: destroyed. */
	fake_add(&small, "sbx-orphan");
	reconcile_once(&d);
	CHECK(small.ndestroyed == 1 &&
	      strcmp(small.destroyed[0], "sbx-orphan") == 0 &&
	      small.nrunning == 0);

	/* Timeouts: one pauses, one kills. */
	a.on_timeout = "pause";
	REQUIRE(op_create(&d, &a, &s2, &e) == 0);
	a.on_timeout = "kill";
	REQUIRE(op_create(&d, &a, &s3, &e) == 0);
	CHECK(store_sandbox_set_expiry(d.db, s2.id, now_ms() - 1, 60,
				       "pause") == 0);
	CHECK(store_sandbox_set_expiry(d.db, s3.id, now_ms() - 1, 60,
				       "kill") == 0);
	reconcile_once(&d);
	CHECK(state_of(&d, s2.id) == SBX_PAUSED);
	CHECK(state_of(&d, s3.id) == SBX_STOPPED);

	/* A snapshot template goes where its files are, with its sizes. */
	CHECK(op_resume(&d, s2.id, NULL, &e) == 0);
	CHECK(op_snapshot_create(&d, s2.id, "tpl", false, &t, &e) == 0);
	CHECK(strcmp(t.kind, "snapshot") == 0 && t.vcpus == 1 &&
	      t.memory_mib == 128 && strcmp(t.source_sandbox_id, s2.id) == 0);
	CHECK(state_of(&d, s2.id) == SBX_RUNNING);
	CHECK(op_snapshot_create(&d, s2.id, "tpl", false, NULL, &e) == -EEXIST &&
	      e.status == 409);
	a.template_name = "tpl";
	a.vcpus = 2;
	CHECK(op_create(&d, &a, &got, &e) == -EINVAL && e.status == 400);
	a.vcpus = 0;
	CHECK(op_create(&d, &a, &got, &e) == 0 &&
	      strcmp(got.host_id, t.host_id) == 0 && got.vcpus == 1 &&
	      big.last_source_case ==
		      EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__SOURCE_SNAPSHOT_TEMPLATE);
	sandbox_clear(&got);

	/* A host that stops answering: down, its running sandboxes error. */
	MHD_stop_daemon(big.mhd);
	reconcile_once(&d);
	CHECK(state_of(&d, s2.id) == SBX_ERROR);
	{
		struct host h = { 0 };

		CHECK(store_host_get(d.db, big_id, &h) == 0 &&
		      strcmp(h.state, "down") == 0);
		free(h.last_error);
	}
	CHECK(op_create(&d, &a, &got, &e) < 0 && e.status == 503);
	/* Errors are deleted without the agent when its host is down? No:
	 * the destroy must reach the host; it answers 503 and keeps the row. */
	CHECK(op_destroy(&d, s2.id, NULL, &got, &e) < 0 && e.status == 503);
	CHECK(state_of(&d, s2.id) == SBX_ERROR);

	MHD_stop_daemon(small.mhd);
	sandbox_clear(&s1);
	sandbox_clear(&s2);
	sandbox_clear(&s3);
	template_clear(&t);
	db_close(d.db);
	snprintf(spec, sizeof(spec), "rm -rf %s", dbpath);
	CHECK(system(spec) == 0);
	return test_summary("emberd-reconcile");
}
