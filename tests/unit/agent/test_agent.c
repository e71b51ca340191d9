// SPDX-License-Identifier: Apache-2.0
/* ember-agent: the state machine, the path layout and request decoding. */
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

int main(void)
{
	test_states();
	test_paths();
	test_decode();
	return test_summary("agent");
}
