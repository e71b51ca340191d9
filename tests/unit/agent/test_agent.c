// SPDX-License-Identifier: Apache-2.0
/* ember-agent: the state machine, the path layout, request decoding, and
 * snapshot templates' reference counting (no VM needed). */
#include "../../../src/ember-agent/rpc.c"

#include "../../test.h"

static int test_states(void)
{
	enum sbx_state s;

	CHECK(sbx_transition_allowed(SBX_STARTING, SBX_RUNNING));
	CHECK(sbx_transition_allowed(SBX_RUNNING, SBX_PAUSING));
	CHECK(sbx_transition_allowed(SBX_PAUSING, SBX_PAUSED));
	CHECK(sbx_transition_allowed(SBX_PAUSED, SBX_RESUMING));
	CHECK(sbx_transition_allowed(SBX_RESUMING, SBX_RUNNING));
	CHECK(sbx_transition_allowed(SBX_PAUSED, SBX_STOPPING));
	CHECK(!sbx_transition_allowed(SBX_RUNNING, SBX_PAUSED));
	CHECK(!sbx_transition_allowed(SBX_PAUSED, SBX_RUNNING));
	CHECK(!sbx_transition_allowed(SBX_PAUSING, SBX_STOPPING));
	CHECK(!sbx_transition_allowed(SBX_STOPPED, SBX_RUNNING));
	CHECK(sbx_state_listed(SBX_RUNNING) && !sbx_state_listed(SBX_PAUSED));
	CHECK(sbx_state_parse("paused", &s) == 0 && s == SBX_PAUSED);
	CHECK(sbx_state_parse("bogus", &s) == -EINVAL);
	return 0;
}

static int test_paths(void)
{
	struct agent_config cfg = { .state_dir = "/var/lib/ember",
				    .run_dir = "/run/ember" };
	char p[256];

	CHECK(sbx_path(&cfg, "sb-1", P_ROOTFS, p, sizeof(p)) == 0 &&
	      strcmp(p, "/var/lib/ember/sandboxes/sb-1/disk/rootfs.ext4") == 0);
	CHECK(sbx_path(&cfg, "sb-1", P_VSOCK_SOCK, p, sizeof(p)) == 0 &&
	      strcmp(p, "/run/ember/vms/sb-1/vsock.sock") == 0);
	CHECK(sbx_path(&cfg, "../x", P_DIR, p, sizeof(p)) == -EINVAL);
	CHECK(sbx_path(&cfg, "", P_DIR, p, sizeof(p)) == -EINVAL);
	snprintf(cfg.run_dir, sizeof(cfg.run_dir), "/run/%0100d", 0);
	CHECK(sbx_path(&cfg, "sb-1", P_API_SOCK, p, sizeof(p)) == -ENAMETOOLONG);
	CHECK(agent_valid_id("abc_DEF-09") && !agent_valid_id("a b"));
	return 0;
}

static int test_decode(void)
{
	const ProtobufCMessageDescriptor *d =
		&ember__hostagent__v1__destroy_sandbox_request__descriptor;
	EmberDestroySandboxRequest q = EMBER__HOSTAGENT__V1__DESTROY_SANDBOX_REQUEST__INIT;
	ProtobufCMessage *m;
	struct agent_err e = { "" };
	uint8_t buf[64], env[80];
	size_t n;

	CHECK(body_kind("application/json; charset=utf-8") == BODY_JSON);
	CHECK(body_kind("application/proto") == BODY_PROTO);
	CHECK(body_kind("application/connect+proto") == BODY_STREAM_PROTO);
	CHECK(body_kind("text/plain") == BODY_UNKNOWN);

	const char *j = "{\"sandboxId\":\"sb-1\"}";
	REQUIRE(decode_request(d, BODY_JSON, (const uint8_t *)j, strlen(j), &m, &e) == 0);
	CHECK(strcmp(((EmberDestroySandboxRequest *)m)->sandbox_id, "sb-1") == 0);
	protobuf_c_message_free_unpacked(m, NULL);

	j = "{\"sandbox\":1}";
	CHECK(decode_request(d, BODY_JSON, (const uint8_t *)j, strlen(j), &m, &e) == -EINVAL);
	CHECK(strstr(e.msg, "unknown field") != NULL);
	j = "{oops";
	CHECK(decode_request(d, BODY_JSON, (const uint8_t *)j, strlen(j), &m, &e) == -EINVAL);

	q.sandbox_id = "sb-2";
	n = protobuf_c_message_pack(&q.base, buf);
	REQUIRE(decode_request(d, BODY_PROTO, buf, n, &m, &e) == 0);
	CHECK(strcmp(((EmberDestroySandboxRequest *)m)->sandbox_id, "sb-2") == 0);
	protobuf_c_message_free_unpacked(m, NULL);

	ember_connect_envelope_header(env, 0, (uint32_t)n);
	memcpy(env + 5, buf, n);
	REQUIRE(decode_request(d, BODY_STREAM_PROTO, env, n + 5, &m, &e) == 0);
	protobuf_c_message_free_unpacked(m, NULL);
	CHECK(decode_request(d, BODY_STREAM_PROTO, env, n + 4, &m, &e) == -EINVAL);
	CHECK(decode_request(d, BODY_STREAM_PROTO, env, 3, &m, &e) == -EINVAL);
	CHECK(strcmp(code_of(-EAGAIN), "aborted") == 0);
	CHECK(strcmp(code_of(-ENOENT), "not_found") == 0);
	return 0;
}

/* A CreateSandbox naming a snapshot template: base_image shares its union
 * (the agent once read it as a pointer and crashed). */
static int test_decode_template_source(void)
{
	const ProtobufCMessageDescriptor *d =
		&ember__hostagent__v1__create_sandbox_request__descriptor;
	const char *j = "{\"sandboxId\":\"c1\",\"snapshotTemplate\":\"t1\"}";
	struct agent_err e = { "" };
	ProtobufCMessage *m;

	REQUIRE(decode_request(d, BODY_JSON, (const uint8_t *)j, strlen(j), &m, &e) == 0);
	EmberCreateSandboxRequest *q = (EmberCreateSandboxRequest *)m;
	CHECK(q->source_case ==
	      EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__SOURCE_SNAPSHOT_TEMPLATE);
	CHECK(strcmp(q->snapshot_template, "t1") == 0);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

static void make_template(const char *state, const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/templates/%s", state, name);
	ember_mkdir_p(path, 0700);
	strcat(path, "/template.json");
	const char *j = "{\"vcpus\":1,\"memory_mib\":128,\"header\":\"x.hdr\",\"token\":\"ab\"}";
	ember_write_file_atomic(path, j, strlen(j), 0600);
}

static bool template_exists(const char *state, const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/templates/%s", state, name);
	return access(path, F_OK) == 0;
}

/* DeleteSnapshot keeps a template's files while a sandbox names it and
 * removes them with the last one; a deleted template spawns nothing. */
static int test_template_refcount(void)
{
	char tmp[] = "/tmp/test-agent-XXXXXX";
	struct agent a;
	struct agent_err e = { "" };
	struct sandbox *s = calloc(1, sizeof(*s)), *out = NULL;
	bool kept = true;

	REQUIRE(mkdtemp(tmp) != NULL && s != NULL);
	memset(&a, 0, sizeof(a));
	snprintf(a.cfg.state_dir, sizeof(a.cfg.state_dir), "%s/state", tmp);
	snprintf(a.cfg.run_dir, sizeof(a.cfg.run_dir), "%s/run", tmp);
	pthread_mutex_init(&a.lock, NULL);
	make_template(a.cfg.state_dir, "t1");
	make_template(a.cfg.state_dir, "t2");

	/* A sandbox spawned from t1 (no VMM: only its record). */
	snprintf(s->id, sizeof(s->id), "c1");
	snprintf(s->snapshot_template, sizeof(s->snapshot_template), "t1");
	s->state = SBX_RUNNING;
	s->metadata = json_object();
	s->env = json_object();
	REQUIRE(sandbox_add(&a, s, &e) == 0);
	CHECK(sandbox_template_users(&a, "t1") == 1);
	CHECK(sandbox_template_users(&a, "t2") == 0);

	CHECK(snapshot_template_delete(&a, "t1", &kept, &e) == 0 && kept);
	CHECK(template_exists(a.cfg.state_dir, "t1"));
	CHECK(snapshot_template_delete(&a, "t1", &kept, &e) == -ENOENT);
	struct create_args ca = { .id = "c2" };
	CHECK(snapshot_spawn(&a, &ca, "t1", &out, NULL, &e) == -ENOENT);
	CHECK(strstr(e.msg, "not found") != NULL);
	CHECK(snapshot_spawn(&a, &ca, "nope", &out, NULL, &e) == -ENOENT);

	CHECK(snapshot_template_delete(&a, "t2", &kept, &e) == 0 && !kept);
	CHECK(!template_exists(a.cfg.state_dir, "t2"));
	CHECK(snapshot_template_delete(&a, "nope", &kept, &e) == -ENOENT);

	/* The last user goes: so do the files. */
	CHECK(sandbox_destroy(&a, "c1", &e) == 0);
	CHECK(!template_exists(a.cfg.state_dir, "t1"));
	CHECK(sandbox_destroy(&a, "c1", &e) == -ENOENT);

	ns_remove_tree(tmp);
	pthread_mutex_destroy(&a.lock);
	return 0;
}

/* PrefetchMode: names, the JSON mapping of a request, values out of range,
 * and RestoreStats in an answer. */
static int test_prefetch_modes(void)
{
	const ProtobufCMessageDescriptor *d =
		&ember__hostagent__v1__resume_sandbox_request__descriptor;
	const char *j = "{\"sandboxId\":\"sb-1\",\"prefetch\":\"PREFETCH_MODE_EAGER\"}";
	struct restore_stats st = { .mode = PREFETCH_ON, .known = true,
				    .faults = 12, .prefetched_pages = 700 };
	EmberResumeSandboxResponse r = EMBER__HOSTAGENT__V1__RESUME_SANDBOX_RESPONSE__INIT;
	EmberRestoreStats rm;
	struct agent_err e = { "" };
	struct call c = { 0 };
	enum prefetch_mode mode;
	ProtobufCMessage *m;
	char *text;
	json_t *o;

	CHECK(prefetch_mode_parse("eager", &mode) == 0 && mode == PREFETCH_EAGER);
	CHECK(prefetch_mode_parse("off", &mode) == 0 && mode == PREFETCH_OFF);
	CHECK(prefetch_mode_parse("lazy", &mode) == -EINVAL);
	CHECK(strcmp(prefetch_mode_name(PREFETCH_RECORD), "record") == 0);
	REQUIRE(decode_request(d, BODY_JSON, (const uint8_t *)j, strlen(j), &m, &e) == 0);
	CHECK(prefetch_from_msg(&c, (int)((EmberResumeSandboxRequest *)m)->prefetch,
				&mode) == 0 && mode == PREFETCH_EAGER);
	protobuf_c_message_free_unpacked(m, NULL);
	CHECK(prefetch_from_msg(&c, 9, &mode) == -EINVAL);
	CHECK(strstr(c.err.msg, "PrefetchMode") != NULL);

	restore_msg(&st, &rm);
	r.restore = &rm;
	o = ember_pb_to_json(&r.base);
	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	CHECK(text && strstr(text, "\"prefetch\":\"PREFETCH_MODE_ON\""));
	CHECK(text && strstr(text, "\"faultsUntilReady\":\"12\""));
	free(text);
	json_decref(o);
	return 0;
}

int main(void)
{
	test_states();
	test_prefetch_modes();
	test_paths();
	test_decode();
	test_decode_template_source();
	test_template_refcount();
	return test_summary("agent");
}
