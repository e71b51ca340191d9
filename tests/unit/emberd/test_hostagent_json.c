// SPDX-License-Identifier: Apache-2.0
/* The host agent RPC's JSON mapping (ember_pb_to_json/ember_pb_from_json)
 * and Connect helpers, in include/ember/hostagent.h. */
#include <ember/hostagent.h>

#include "../../test.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool same_wire(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
	size_t la = protobuf_c_message_get_packed_size(a);
	size_t lb = protobuf_c_message_get_packed_size(b);
	uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
	bool same;

	protobuf_c_message_pack(a, pa);
	protobuf_c_message_pack(b, pb);
	same = la == lb && memcmp(pa, pb, la) == 0;
	free(pa);
	free(pb);
	return same;
}

static void test_round_trip(void)
{
	EmberCreateSandboxRequest req = EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__INIT;
	EmberBaseImage base = EMBER__HOSTAGENT__V1__BASE_IMAGE__INIT;
	EmberKeyValue kv = EMBER__HOSTAGENT__V1__KEY_VALUE__INIT, *kvs[] = { &kv };
	ProtobufCMessage *back = NULL;
	char err[256] = "";
	json_t *j;

	req.sandbox_id = "sbx-1";
	req.template_name = "base";
	req.vcpus = 2;
	req.memory_mib = 512;
	kv.key = "A";
	kv.value = "1";
	req.n_env = 1;
	req.env = kvs;
	base.kernel_path = "/k";
	base.rootfs_path = "/r";
	req.source_case =
		EMBER__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__SOURCE_BASE_IMAGE;
	req.base_image = &base;
	j = ember_pb_to_json(&req.base);
	CHECK(strcmp(json_string_value(json_object_get(j, "sandboxId")),
		     "sbx-1") == 0);
	CHECK(json_integer_value(json_object_get(j, "vcpus")) == 2);
	/* 64-bit integers travel as strings. */
	CHECK(strcmp(json_string_value(json_object_get(j, "memoryMib")),
		     "512") == 0);
	CHECK(json_is_object(json_object_get(j, "baseImage")));
	CHECK(!json_object_get(j, "snapshotTemplate"));
	CHECK(!json_object_get(j, "network"));	/* default: left out */
	CHECK(json_array_size(json_object_get(j, "env")) == 1);
	CHECK(ember_pb_from_json(&ember__hostagent__v1__create_sandbox_request__descriptor,
				 j, &back, err, sizeof(err)) == 0);
	CHECK(back && same_wire(&req.base, back));
	if (back)
		protobuf_c_message_free_unpacked(back, NULL);
	json_decref(j);
}

static void test_input_forms(void)
{
	ProtobufCMessage *m = NULL;
	char err[256] = "";
	json_t *j;

	/* snake_case names, numbers for 64-bit, enum by name. */
	j = json_pack("{s:s, s:I, s:s}", "sandbox_id", "x", "memory_mib",
		      (json_int_t)64, "state", "SANDBOX_STATE_PAUSED");
	CHECK(ember_pb_from_json(&ember__hostagent__v1__sandbox__descriptor, j,
				 &m, err, sizeof(err)) == 0);
	if (m) {
		EmberAgentSandbox *s = (EmberAgentSandbox *)m;

		CHECK(strcmp(s->sandbox_id, "x") == 0 && s->memory_mib == 64 &&
		      s->state == EMBER__HOSTAGENT__V1__SANDBOX_STATE__SANDBOX_STATE_PAUSED);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	json_decref(j);

	/* Bytes in base64, a oneof member. */
	j = json_pack("{s:s}", "stdoutData", "aGVsbG8=");
	CHECK(ember_pb_from_json(&ember__hostagent__v1__exec_response__descriptor,
				 j, &m, err, sizeof(err)) == 0);
	if (m) {
		EmberExecResponse *e = (EmberExecResponse *)m;

		CHECK(e->event_case ==
			      EMBER__HOSTAGENT__V1__EXEC_RESPONSE__EVENT_STDOUT_DATA &&
		      e->stdout_data.len == 5 &&
		      memcmp(e->stdout_data.data, "hello", 5) == 0);
		json_t *back = ember_pb_to_json(m);
		CHECK(strcmp(json_string_value(json_object_get(back, "stdoutData")),
			     "aGVsbG8=") == 0);
		json_decref(back);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	json_decref(j);

	/* Refused: unknown field, wrong type, two members of a oneof. */
	j = json_pack("{s:s}", "nope", "x");
	CHECK(ember_pb_from_json(&ember__hostagent__v1__sandbox__descriptor, j,
				 &m, err, sizeof(err)) == -EINVAL &&
	      m == NULL && strstr(err, "nope"));
	json_decref(j);
	j = json_pack("{s:s}", "vcpus", "two");
	CHECK(ember_pb_from_json(&ember__hostagent__v1__sandbox__descriptor, j,
				 &m, err, sizeof(err)) == -EINVAL);
	json_decref(j);
	j = json_pack("{s:i}", "vcpus", -1);
	CHECK(ember_pb_from_json(&ember__hostagent__v1__sandbox__descriptor, j,
				 &m, err, sizeof(err)) == -EINVAL);
	json_decref(j);
	j = json_pack("{s:s, s:s}", "stdoutData", "", "stderrData", "");
	CHECK(ember_pb_from_json(&ember__hostagent__v1__exec_response__descriptor,
				 j, &m, err, sizeof(err)) == -EINVAL);
	json_decref(j);
	j = json_pack("{s:[s, i]}", "argv", "a", 1);
	CHECK(ember_pb_from_json(&ember__hostagent__v1__exec_request__descriptor,
				 j, &m, err, sizeof(err)) == -EINVAL);
	json_decref(j);
}

static void test_connect_codes(void)
{
	uint8_t h[EMBER_CONNECT_ENVELOPE_HDR];

	CHECK(ember_connect_http_status("not_found") == 404);
	CHECK(ember_connect_http_status("unavailable") == 503);
	CHECK(ember_connect_http_status("invalid_argument") == 400);
	CHECK(ember_connect_errno_from_code("not_found") == -ENOENT);
	CHECK(strcmp(ember_connect_code_from_errno(-ENOENT), "not_found") == 0);
	CHECK(strcmp(ember_connect_code_from_errno(-EINVAL),
		     "invalid_argument") == 0);
	CHECK(strcmp(ember_connect_code_from_http(503), "unavailable") == 0);
	ember_connect_envelope_header(h, EMBER_CONNECT_FLAG_END_STREAM,
				      0x01020304);
	CHECK(h[0] == 2 && h[1] == 1 && h[2] == 2 && h[3] == 3 && h[4] == 4);
}

int main(void)
{
	test_round_trip();
	test_input_forms();
	test_connect_codes();
	return test_summary("hostagent-json");
}
