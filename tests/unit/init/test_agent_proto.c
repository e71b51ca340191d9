// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the agent protocol's framing (src/lib/agent_proto.c). */
#include <ember/agent_proto.h>

#include "../../test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void test_header_round_trip(void)
{
	struct ember_agent_hdr h = { .len = 0x01020304 & 0xfffff, .type = 18,
				     .version = 1, .id = 0xdeadbeef }, g;
	uint8_t raw[EMBER_AGENT_HDR_SIZE];

	ember_agent_hdr_encode(&h, raw);
	CHECK(raw[0] == 0x04 && raw[1] == 0x03 && raw[2] == 0x02 &&
	      raw[3] == 0);
	CHECK(raw[4] == 18 && raw[5] == 1 && raw[6] == 0 && raw[7] == 0);
	CHECK(raw[8] == 0xef && raw[11] == 0xde);
	CHECK(ember_agent_hdr_decode(raw, EMBER_AGENT_MAX_PAYLOAD, &g) == 0);
	CHECK(g.len == h.len && g.type == 18 && g.id == 0xdeadbeef);

	raw[5] = 2; /* another protocol version */
	CHECK(ember_agent_hdr_decode(raw, EMBER_AGENT_MAX_PAYLOAD, &g) ==
	      -EPROTO);
	raw[5] = 1;
	raw[6] = 1; /* reserved flags */
	CHECK(ember_agent_hdr_decode(raw, EMBER_AGENT_MAX_PAYLOAD, &g) ==
	      -EPROTO);
	raw[6] = 0;
	CHECK(ember_agent_hdr_decode(raw, 1000, &g) == -EMSGSIZE);
	CHECK(g.id == 0xdeadbeef); /* still there to answer with */
	CHECK(ember_agent_type_known(EMBER_AGENT_REQUEST));
	CHECK(!ember_agent_type_known(99));
}

static void test_reader_byte_by_byte(void)
{
	struct ember_agent_reader r;
	struct ember_agent_hdr h;
	const uint8_t *p;
	uint8_t *f1, *f2;
	size_t l1, l2;
	int frames = 0;

	CHECK(ember_agent_frame_build(EMBER_AGENT_REQUEST, 7, "{\"op\":1}", 8,
				      &f1, &l1) == 0);
	CHECK(ember_agent_frame_build(EMBER_AGENT_EOF_IN, 7, NULL, 0, &f2,
				      &l2) == 0);
	CHECK(l1 == EMBER_AGENT_HDR_SIZE + 8 && l2 == EMBER_AGENT_HDR_SIZE);
	ember_agent_reader_init(&r, EMBER_AGENT_MAX_PAYLOAD);
	/* A truncated frame is not a frame yet. */
	for (size_t i = 0; i < l1; i++) {
		CHECK(ember_agent_reader_next(&r, &h, &p) == 0);
		CHECK(ember_agent_reader_push(&r, f1 + i, 1) == 0);
	}
	CHECK(ember_agent_reader_push(&r, f2, l2) == 0);
	while (ember_agent_reader_next(&r, &h, &p) == 1) {
		if (frames == 0)
			CHECK(h.type == EMBER_AGENT_REQUEST && h.len == 8 &&
			      memcmp(p, "{\"op\":1}", 8) == 0);
		else
			CHECK(h.type == EMBER_AGENT_EOF_IN && h.len == 0);
		frames++;
	}
	CHECK(frames == 2);
	CHECK(ember_agent_reader_pending(&r) == 0);
	ember_agent_reader_free(&r);
	free(f1);
	free(f2);
}

static void test_reader_large_and_bad(void)
{
	struct ember_agent_reader r;
	struct ember_agent_hdr h = { .len = EMBER_AGENT_MAX_PAYLOAD,
				     .type = EMBER_AGENT_DATA_IN,
				     .version = 1, .id = 3 };
	uint8_t raw[EMBER_AGENT_HDR_SIZE];
	uint8_t *big = malloc(EMBER_AGENT_MAX_PAYLOAD);
	const uint8_t *p;
	uint8_t *f;
	size_t l;

	memset(big, 0xab, EMBER_AGENT_MAX_PAYLOAD);
	/* The largest frame allowed goes through whole. */
	ember_agent_reader_init(&r, EMBER_AGENT_MAX_PAYLOAD);
	ember_agent_hdr_encode(&h, raw);
	CHECK(ember_agent_reader_push(&r, raw, sizeof(raw)) == 0);
	CHECK(ember_agent_reader_push(&r, big, EMBER_AGENT_MAX_PAYLOAD) == 0);
	CHECK(ember_agent_reader_next(&r, &h, &p) == 1);
	CHECK(h.len == EMBER_AGENT_MAX_PAYLOAD && p[12345] == 0xab);
	/* One byte more is refused from its header alone. */
	h.len = EMBER_AGENT_MAX_PAYLOAD + 1;
	ember_agent_hdr_encode(&h, raw);
	CHECK(ember_agent_reader_push(&r, raw, sizeof(raw)) == 0);
	CHECK(ember_agent_reader_next(&r, &h, &p) == -EMSGSIZE);
	CHECK(ember_agent_frame_build(1, 1, big, EMBER_AGENT_MAX_PAYLOAD + 1,
				      &f, &l) == -EMSGSIZE);
	ember_agent_reader_free(&r);

	/* Garbage is an error, not a frame. */
	ember_agent_reader_init(&r, EMBER_AGENT_MAX_PAYLOAD);
	CHECK(ember_agent_reader_push(&r, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
	CHECK(ember_agent_reader_next(&r, &h, &p) < 0);
	ember_agent_reader_free(&r);
	free(big);
}

static void test_token_and_hex(void)
{
	uint8_t bytes[4] = { 0, 0x7f, 0x80, 0xff }, back[8];
	char hex[9];

	CHECK(ember_agent_token_equal("secret", "secret"));
	CHECK(!ember_agent_token_equal("secret", "secreT"));
	CHECK(!ember_agent_token_equal("secret", "secret2"));
	CHECK(!ember_agent_token_equal("secret", "secre"));
	CHECK(!ember_agent_token_equal("secret", ""));
	CHECK(!ember_agent_token_equal("secret", NULL));
	CHECK(!ember_agent_token_equal("", ""));
	CHECK(!ember_agent_token_equal(NULL, "x"));
	ember_agent_hex_encode(bytes, 4, hex);
	CHECK(strcmp(hex, "007f80ff") == 0);
	CHECK(ember_agent_hex_decode(hex, back, sizeof(back)) == 4);
	CHECK(memcmp(back, bytes, 4) == 0);
	CHECK(ember_agent_hex_decode("abc", back, sizeof(back)) == -EINVAL);
	CHECK(ember_agent_hex_decode("zz", back, sizeof(back)) == -EINVAL);
	CHECK(ember_agent_hex_decode("00112233445566778899", back, 8) ==
	      -EINVAL);
}

int main(void)
{
	test_header_round_trip();
	test_reader_byte_by_byte();
	test_reader_large_and_bad();
	test_token_and_hex();
	return test_summary("agent-proto");
}
