/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest agent protocol (ember-init <-> host): framing and small
 * helpers shared by the agent and the host-side client. The frame layout
 * and the request catalogue are described at the top of
 * src/lib/agent_proto.c and in docs/guest-agent.md.
 */
#ifndef EMBER_AGENT_PROTO_H
#define EMBER_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define EMBER_AGENT_PROTO_VERSION 1
#define EMBER_AGENT_HDR_SIZE 12
/* Hard limit on a frame's payload; a larger frame closes the connection. */
#define EMBER_AGENT_MAX_PAYLOAD (1u << 20)
/* Size of the raw data chunks both sides send (stdout, files, stdin). */
#define EMBER_AGENT_CHUNK (64u * 1024)
/* The vsock port ember-init listens on unless told otherwise. */
#define EMBER_AGENT_VSOCK_PORT 1024
/* Longest access token, sandbox id and hostname accepted. */
#define EMBER_AGENT_TOKEN_MAX 256
#define EMBER_AGENT_ID_MAX 128
#define EMBER_AGENT_HOSTNAME_MAX 64

enum ember_agent_frame_type {
	/* host -> guest */
	EMBER_AGENT_REQUEST = 1, /* JSON request, opens a stream id */
	EMBER_AGENT_DATA_IN = 2, /* raw bytes: exec stdin, file content */
	EMBER_AGENT_EOF_IN = 3,	 /* end of the host's data for a stream */
	/* guest -> host */
	EMBER_AGENT_RESPONSE = 16, /* JSON final answer; ends the stream */
	EMBER_AGENT_ERROR = 17,	   /* JSON error answer; ends the stream */
	EMBER_AGENT_STDOUT = 18,   /* raw bytes of an exec's stdout */
	EMBER_AGENT_STDERR = 19,   /* raw bytes of an exec's stderr */
	EMBER_AGENT_DATA_OUT = 20, /* raw bytes of a file being read */
	EMBER_AGENT_STARTED = 21,  /* JSON {"pid": N}: the exec is running */
};

struct ember_agent_hdr {
	uint32_t len; /* payload bytes after the header */
	uint8_t type;
	uint8_t version;
	uint16_t flags; /* reserved, 0 */
	uint32_t id;	/* stream (request) id chosen by the host; 0: none */
};

/* Writes the 12-byte little-endian header. */
void ember_agent_hdr_encode(const struct ember_agent_hdr *h, uint8_t *out);

/* Parses a header. Returns 0, -EPROTO for a wrong version or nonzero
 * flags, -EMSGSIZE for a payload over max_payload. *h is filled in every
 * case so that the caller can answer with the frame's id. */
int ember_agent_hdr_decode(const uint8_t *in, uint32_t max_payload,
			   struct ember_agent_hdr *h);

bool ember_agent_type_known(uint8_t type);
const char *ember_agent_type_name(uint8_t type);

/* Builds a whole frame (header and payload) in a malloc'd buffer. */
int ember_agent_frame_build(uint8_t type, uint32_t id, const void *payload,
			    size_t len, uint8_t **out, size_t *out_len);

/*
 * Incremental frame reader over a byte stream. Feed it with
 * ember_agent_reader_fill (one read(2) of what is available) or
 * ember_agent_reader_push (bytes from elsewhere), then take frames with
 * ember_agent_reader_next until it returns 0.
 */
struct ember_agent_reader {
	uint8_t *buf;
	size_t start, end, cap;
	uint32_t max_payload;
	bool have_frame; /* a frame returned by _next is still in buf */
	size_t frame_size;
};

void ember_agent_reader_init(struct ember_agent_reader *r,
			     uint32_t max_payload);
void ember_agent_reader_free(struct ember_agent_reader *r);
/* Reads once from fd. Returns bytes read, 0 at end of stream, -EAGAIN
 * when nothing is there, or -errno. */
ssize_t ember_agent_reader_fill(struct ember_agent_reader *r, int fd);
int ember_agent_reader_push(struct ember_agent_reader *r, const void *data,
			    size_t len);
/* Returns 1 with a frame (payload valid until the next call), 0 when more
 * bytes are needed, or the error of ember_agent_hdr_decode (the stream is
 * then unusable; *h holds the bad header). */
int ember_agent_reader_next(struct ember_agent_reader *r,
			    struct ember_agent_hdr *h, const uint8_t **payload);
/* Bytes buffered and not yet returned as frames. */
size_t ember_agent_reader_pending(const struct ember_agent_reader *r);

/* Compares tokens in time that depends only on the expected token's
 * length. A NULL or empty expected token matches nothing. */
bool ember_agent_token_equal(const char *expected, const char *given);

/* Hex encoding for binary fields of JSON payloads (entropy). out of
 * ember_agent_hex_encode holds 2*len+1 bytes. ember_agent_hex_decode
 * returns the number of bytes or -EINVAL. */
void ember_agent_hex_encode(const void *in, size_t len, char *out);
ssize_t ember_agent_hex_decode(const char *in, void *out, size_t max);

#endif
