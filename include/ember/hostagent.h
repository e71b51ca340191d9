/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host agent RPC (proto/hostagent.proto) over HTTP/1.1 in the Connect
 * protocol: the client emberd uses, and the helpers a server shares with it
 * (error codes, their HTTP statuses and errnos, the streaming envelope).
 *
 *   unary     POST {base}/ember.hostagent.v1.HostAgent/{Method}
 *             Content-Type: application/proto, Connect-Protocol-Version: 1
 *             200 + message, or non-200 + {"code": ..., "message": ...}
 *   streaming Content-Type: application/connect+proto; each message in an
 *             envelope: flags (u8), length (u32 big-endian), bytes. The
 *             last envelope has EMBER_CONNECT_FLAG_END_STREAM and holds JSON
 *             {} or {"error": {"code": ..., "message": ...}}.
 *
 * Like the rest of libember these functions do not log; they return 0 or a
 * negative errno, and fill a struct ember_hostagent_error for the caller to log
 * or pass on.
 */
#ifndef EMBER_HOSTAGENT_H
#define EMBER_HOSTAGENT_H

#include <stddef.h>
#include <stdint.h>

#include "hostagent.pb-c.h"

#define EMBER_HOSTAGENT_SERVICE "ember.hostagent.v1.HostAgent"
#define EMBER_CONNECT_FLAG_COMPRESSED 0x01
#define EMBER_CONNECT_FLAG_END_STREAM 0x02
#define EMBER_CONNECT_ENVELOPE_HDR 5
/* Largest message either side accepts (a file of ReadFile/WriteFile). */
#define EMBER_HOSTAGENT_MAX_MESSAGE (128u << 20)

/* Short names for the generated types. */
typedef Ember__Hostagent__V1__KeyValue EmberKeyValue;
typedef Ember__Hostagent__V1__Sandbox EmberAgentSandbox;
typedef Ember__Hostagent__V1__GetHostInfoRequest EmberGetHostInfoRequest;
typedef Ember__Hostagent__V1__GetHostInfoResponse EmberGetHostInfoResponse;
typedef Ember__Hostagent__V1__BaseImage EmberBaseImage;
typedef Ember__Hostagent__V1__CreateSandboxRequest EmberCreateSandboxRequest;
typedef Ember__Hostagent__V1__CreateSandboxResponse EmberCreateSandboxResponse;
typedef Ember__Hostagent__V1__ListSandboxesRequest EmberListSandboxesRequest;
typedef Ember__Hostagent__V1__ListSandboxesResponse EmberListSandboxesResponse;
typedef Ember__Hostagent__V1__DestroySandboxRequest EmberDestroySandboxRequest;
typedef Ember__Hostagent__V1__DestroySandboxResponse
	EmberDestroySandboxResponse;
typedef Ember__Hostagent__V1__PauseSandboxRequest EmberPauseSandboxRequest;
typedef Ember__Hostagent__V1__PauseSandboxResponse EmberPauseSandboxResponse;
typedef Ember__Hostagent__V1__ResumeSandboxRequest EmberResumeSandboxRequest;
typedef Ember__Hostagent__V1__ResumeSandboxResponse EmberResumeSandboxResponse;
typedef Ember__Hostagent__V1__RestoreStats EmberRestoreStats;
typedef Ember__Hostagent__V1__SnapshotTemplate EmberSnapshotTemplate;
typedef Ember__Hostagent__V1__CreateSnapshotRequest EmberCreateSnapshotRequest;
typedef Ember__Hostagent__V1__CreateSnapshotResponse
	EmberCreateSnapshotResponse;
typedef Ember__Hostagent__V1__DeleteSnapshotRequest EmberDeleteSnapshotRequest;
typedef Ember__Hostagent__V1__DeleteSnapshotResponse
	EmberDeleteSnapshotResponse;
typedef Ember__Hostagent__V1__ExecRequest EmberExecRequest;
typedef Ember__Hostagent__V1__ExecResponse EmberExecResponse;
typedef Ember__Hostagent__V1__ExecExit EmberExecExit;
typedef Ember__Hostagent__V1__ReadFileRequest EmberReadFileRequest;
typedef Ember__Hostagent__V1__ReadFileResponse EmberReadFileResponse;
typedef Ember__Hostagent__V1__WriteFileRequest EmberWriteFileRequest;
typedef Ember__Hostagent__V1__WriteFileResponse EmberWriteFileResponse;
typedef Ember__Hostagent__V1__FileInfo EmberFileInfo;
typedef Ember__Hostagent__V1__ListFilesRequest EmberListFilesRequest;
typedef Ember__Hostagent__V1__ListFilesResponse EmberListFilesResponse;
typedef Ember__Hostagent__V1__DeleteFileRequest EmberDeleteFileRequest;
typedef Ember__Hostagent__V1__DeleteFileResponse EmberDeleteFileResponse;

/* --- shared by client and server ----------------------------------------- */

/* Connect error codes ("not_found", ...) and how they map. */
const char *ember_connect_code_from_errno(int neg_errno);
int ember_connect_errno_from_code(const char *code);
unsigned ember_connect_http_status(const char *code);
/* The code a non-Connect HTTP error status stands for (Connect's table). */
const char *ember_connect_code_from_http(long status);

/* Writes the 5-byte envelope header for a message of len bytes. */
void ember_connect_envelope_header(uint8_t hdr[EMBER_CONNECT_ENVELOPE_HDR],
				  uint8_t flags, uint32_t len);

/* Protobuf messages as JSON (proto3's JSON mapping), for the
 * application/json form of the protocol: field names in lowerCamelCase
 * (snake_case accepted on input), 64-bit integers as strings (numbers
 * accepted), bytes in base64, enums by name (numbers accepted), default
 * values left out. Unknown fields are refused with a message in err. */
#include <jansson.h>
json_t *ember_pb_to_json(const ProtobufCMessage *m);
int ember_pb_from_json(const ProtobufCMessageDescriptor *desc,
		       const json_t *j, ProtobufCMessage **out, char *err,
		       size_t errlen);

/* --- client ---------------------------------------------------------------- */

struct ember_hostagent_error {
	char code[32];		/* Connect code; "unavailable" for transport */
	char message[512];
	long http_status;	/* 0 when no HTTP answer came */
};

struct ember_hostagent_client;

/* base_url: "http://host:port" (a trailing slash is fine). Every call gives
 * up after timeout_ms (connect and transfer together). */
int ember_hostagent_client_new(const char *base_url, long timeout_ms,
			   struct ember_hostagent_client **out);
void ember_hostagent_client_free(struct ember_hostagent_client *c);
const char *ember_hostagent_client_url(const struct ember_hostagent_client *c);
void ember_hostagent_client_set_timeout(struct ember_hostagent_client *c,
				    long timeout_ms);

/* One unary call. On success *resp is an unpacked message of resp_desc
 * (free it with protobuf_c_message_free_unpacked(*resp, NULL)). Errors:
 * -EHOSTUNREACH when the agent did not answer (err->code "unavailable"),
 * -ETIMEDOUT, -EPROTO for an answer that is not the protocol, otherwise the
 * errno of the agent's Connect code (ember_connect_errno_from_code). */
int ember_hostagent_call(struct ember_hostagent_client *c, const char *method,
		     const ProtobufCMessage *req,
		     const ProtobufCMessageDescriptor *resp_desc,
		     ProtobufCMessage **resp, struct ember_hostagent_error *err);

#define EMBER_HOSTAGENT_DECLARE(fn, Req, Resp)                                    \
	int ember_hostagent_##fn(struct ember_hostagent_client *c, const Req *req,    \
			     Resp **resp, struct ember_hostagent_error *err)
EMBER_HOSTAGENT_DECLARE(get_host_info, EmberGetHostInfoRequest,
		    EmberGetHostInfoResponse);
EMBER_HOSTAGENT_DECLARE(create_sandbox, EmberCreateSandboxRequest,
		    EmberCreateSandboxResponse);
EMBER_HOSTAGENT_DECLARE(list_sandboxes, EmberListSandboxesRequest,
		    EmberListSandboxesResponse);
EMBER_HOSTAGENT_DECLARE(destroy_sandbox, EmberDestroySandboxRequest,
		    EmberDestroySandboxResponse);
EMBER_HOSTAGENT_DECLARE(pause_sandbox, EmberPauseSandboxRequest,
		    EmberPauseSandboxResponse);
EMBER_HOSTAGENT_DECLARE(resume_sandbox, EmberResumeSandboxRequest,
		    EmberResumeSandboxResponse);
EMBER_HOSTAGENT_DECLARE(create_snapshot, EmberCreateSnapshotRequest,
		    EmberCreateSnapshotResponse);
EMBER_HOSTAGENT_DECLARE(delete_snapshot, EmberDeleteSnapshotRequest,
		    EmberDeleteSnapshotResponse);
EMBER_HOSTAGENT_DECLARE(read_file, EmberReadFileRequest, EmberReadFileResponse);
EMBER_HOSTAGENT_DECLARE(write_file, EmberWriteFileRequest,
		    EmberWriteFileResponse);
EMBER_HOSTAGENT_DECLARE(list_files, EmberListFilesRequest,
		    EmberListFilesResponse);
EMBER_HOSTAGENT_DECLARE(delete_file, EmberDeleteFileRequest,
		    EmberDeleteFileResponse);

/* Called for each streamed exec event, in order; a nonzero return stops the
 * call (which then returns -ECANCELED). */
typedef int (*ember_hostagent_exec_cb)(void *ctx, const EmberExecResponse *ev);

/* Server-streaming Exec. Returns 0 when the stream ended without an error
 * (the last event carried the exit status), or an error as for
 * ember_hostagent_call; a stream cut off before its end message gives
 * -EPROTO. */
int ember_hostagent_exec(struct ember_hostagent_client *c, const EmberExecRequest *req,
		     ember_hostagent_exec_cb cb, void *ctx,
		     struct ember_hostagent_error *err);

#endif
