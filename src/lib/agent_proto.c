// SPDX-License-Identifier: Apache-2.0
/*
 * The guest agent protocol, version 1.
 *
 * One stream connection (vsock in a guest, a Unix socket in tests) carries
 * frames in both directions. Every frame is a 12-byte header and a payload:
 *
 *   offset size  field
 *   0      4     payload length, little-endian (at most 1 MiB)
 *   4      1     frame type (below)
 *   5      1     protocol version, 1
 *   6      2     flags, 0 (reserved)
 *   8      4     stream id, little-endian, chosen by the host per request
 *   12     len   payload: JSON (UTF-8) or raw bytes, by type
 *
 *   type              dir      payload  meaning
 *   1  REQUEST        h -> g   JSON     opens stream <id>: {"op", "token", ...}
 *   2  DATA_IN        h -> g   raw      stdin of an exec, content of a write
 *   3  EOF_IN         h -> g   empty    end of the host's data for <id>
 *   16 RESPONSE       g -> h   JSON     final answer, closes stream <id>
 *   17 ERROR          g -> h   JSON     {"error", "errno", "code"}, closes <id>
 *   18 STDOUT         g -> h   raw      exec output, as written
 *   19 STDERR         g -> h   raw      exec error output, as written
 *   20 DATA_OUT       g -> h   raw      content of a file being read
 *   21 STARTED        g -> h   JSON     {"pid"}: the exec runs; stdin may flow
 *
 * Invariants: a stream id is live from its REQUEST to its RESPONSE or
 * ERROR; ids are per connection and may be reused afterwards. Frames for
 * a stream that is not live are dropped. A frame with a wrong version or
 * flags, or a payload over the limit, gets an ERROR (with the frame's id)
 * and the connection is closed: the framing can no longer be trusted. An
 * unknown type, a malformed JSON request or an unknown op gets an ERROR
 * and the connection goes on. Every REQUEST carries the sandbox's access
 * token; DATA_IN and EOF_IN belong to a stream an authenticated request
 * opened. The request catalogue is in docs/guest-agent.md.
 */
#include <ember/agent_proto.h>
#include <ember/util.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

void ember_agent_hdr_encode(const struct ember_agent_hdr *h, uint8_t *out)
{
	put_le32(out, h->len);
	out[4] = h->type;
	out[5] = h->version;
	out[6] = (uint8_t)h->flags;
	out[7] = (uint8_t)(h->flags >> 8);
	put_le32(out + 8, h->id);
}

int ember_agent_hdr_decode(const uint8_t *in, uint32_t max_payload,
			   struct ember_agent_hdr *h)
{
	h->len = get_le32(in);
	h->type = in[4];
	h->version = in[5];
	h->flags = (uint16_t)(in[6] | in[7] << 8);
	h->id = get_le32(in + 8);
	if (h->version != EMBER_AGENT_PROTO_VERSION || h->flags != 0)
		return -EPROTO;
	if (h->len > max_payload)
		return -EMSGSIZE;
	return 0;
}

bool ember_agent_type_known(uint8_t type)
{
	return strcmp(ember_agent_type_name(type), "unknown") != 0;
}

const char *ember_agent_type_name(uint8_t type)
{
	switch (type) {
	case EMBER_AGENT_REQUEST: return "request";
	case EMBER_AGENT_DATA_IN: return "data-in";
	case EMBER_AGENT_EOF_IN: return "eof-in";
	case EMBER_AGENT_RESPONSE: return "response";
	case EMBER_AGENT_ERROR: return "error";
	case EMBER_AGENT_STDOUT: return "stdout";
	case EMBER_AGENT_STDERR: return "stderr";
	case EMBER_AGENT_DATA_OUT: return "data-out";
	case EMBER_AGENT_STARTED: return "started";
	default: return "unknown";
	}
}

int ember_agent_frame_build(uint8_t type, uint32_t id, const void *payload,
			    size_t len, uint8_t **out, size_t *out_len)
{
	struct ember_agent_hdr h = {
		.len = (uint32_t)len,
		.type = type,
		.version = EMBER_AGENT_PROTO_VERSION,
		.id = id,
	};
	uint8_t *buf;

	if (len > EMBER_AGENT_MAX_PAYLOAD)
		return -EMSGSIZE;
	buf = malloc(EMBER_AGENT_HDR_SIZE + len);
	if (!buf)
		return -ENOMEM;
	ember_agent_hdr_encode(&h, buf);
	if (len)
		memcpy(buf + EMBER_AGENT_HDR_SIZE, payload, len);
	*out = buf;
	*out_len = EMBER_AGENT_HDR_SIZE + len;
	return 0;
}

void ember_agent_reader_init(struct ember_agent_reader *r,
			     uint32_t max_payload)
{
	memset(r, 0, sizeof(*r));
	r->max_payload = max_payload;
}

void ember_agent_reader_free(struct ember_agent_reader *r)
{
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

/* Drops the frame last returned and makes room for want more bytes. */
static int reader_reserve(struct ember_agent_reader *r, size_t want)
{
	size_t used;

	if (r->have_frame) {
		r->start += r->frame_size;
		r->have_frame = false;
	}
	if (r->start == r->end)
		r->start = r->end = 0;
	if (r->cap - r->end >= want)
		return 0;
	used = r->end - r->start;
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, used);
		r->start = 0;
		r->end = used;
	}
	if (r->cap - r->end < want) {
		size_t cap = r->cap ? r->cap : 4096;
		uint8_t *nbuf;

		while (cap - used < want)
			cap *= 2;
		nbuf = realloc(r->buf, cap);
		if (!nbuf)
			return -ENOMEM;
		r->buf = nbuf;
		r->cap = cap;
	}
	return 0;
}

/* How many bytes the next frame still lacks (at least one read's worth). */
static size_t reader_want(const struct ember_agent_reader *r)
{
	size_t have = r->end - r->start, need = EMBER_AGENT_HDR_SIZE;

	if (r->have_frame)
		have -= r->frame_size;
	if (have >= EMBER_AGENT_HDR_SIZE) {
		uint32_t len = get_le32(r->buf + r->start +
					(r->have_frame ? r->frame_size : 0));
		if (len <= r->max_payload)
			need += len;
	}
	return need > have ? EMBER_MAX(need - have, (size_t)16384) : 16384;
}

ssize_t ember_agent_reader_fill(struct ember_agent_reader *r, int fd)
{
	ssize_t n;
	int err = reader_reserve(r, reader_want(r));

	if (err < 0)
		return err;
	do {
		n = read(fd, r->buf + r->end, r->cap - r->end);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	r->end += (size_t)n;
	return n;
}

int ember_agent_reader_push(struct ember_agent_reader *r, const void *data,
			    size_t len)
{
	int err = reader_reserve(r, len);

	if (err < 0)
		return err;
	memcpy(r->buf + r->end, data, len);
	r->end += len;
	return 0;
}

int ember_agent_reader_next(struct ember_agent_reader *r,
			    struct ember_agent_hdr *h, const uint8_t **payload)
{
	size_t have;
	int err;

	if (r->have_frame) {
		r->start += r->frame_size;
		r->have_frame = false;
	}
	have = r->end - r->start;
	if (have < EMBER_AGENT_HDR_SIZE)
		return 0;
	err = ember_agent_hdr_decode(r->buf + r->start, r->max_payload, h);
	if (err < 0)
		return err;
	if (have < EMBER_AGENT_HDR_SIZE + (size_t)h->len)
		return 0;
	*payload = r->buf + r->start + EMBER_AGENT_HDR_SIZE;
	r->have_frame = true;
	r->frame_size = EMBER_AGENT_HDR_SIZE + h->len;
	return 1;
}

size_t ember_agent_reader_pending(const struct ember_agent_reader *r)
{
	return r->end - r->start - (r->have_frame ? r->frame_size : 0);
}

bool ember_agent_token_equal(const char *expected, const char *given)
{
	size_t n, m;
	unsigned diff;

	if (!expected || !*expected || !given)
		return false;
	n = strlen(expected);
	m = strlen(given);
	diff = n != m;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)expected[i] ^
			(unsigned char)given[i < m ? i : 0];
	return diff == 0;
}

void ember_agent_hex_encode(const void *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = in;

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

ssize_t ember_agent_hex_decode(const char *in, void *out, size_t max)
{
	size_t len = strlen(in);
	uint8_t *p = out;

	if (len % 2 || len / 2 > max)
		return -EINVAL;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hex_digit(in[2 * i]), lo = hex_digit(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		p[i] = (uint8_t)(hi << 4 | lo);
	}
	return (ssize_t)(len / 2);
}
