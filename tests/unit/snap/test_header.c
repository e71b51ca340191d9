// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of the snapshot header (src/lib/header.c): overlay and lookup
 * on random chains against a plain per-block array model, encode/decode
 * round trips, and every malformed-file case, each rejected with its own
 * error.
 */
#include <ember/header.h>
#include <ember/util.h>

#include "../../test.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* The model: for each block, the layer index (or ZERO) and the offset. */
struct model_block {
	uint32_t layer;
	uint64_t layer_off;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static bool check_against_model(const struct ember_header *h,
				const struct model_block *m, size_t n_blocks)
{
	uint64_t bs = h->block_size;

	for (size_t b = 0; b < n_blocks; b++) {
		uint64_t off = b * bs + rnd() % bs;
		const struct ember_hdr_range *r = ember_header_lookup(h, off);

		if (!r || off < r->guest_off || off >= r->guest_off + r->len)
			return false;
		if (r->layer != m[b].layer)
			return false;
		if (r->layer != EMBER_LAYER_ZERO &&
		    r->layer_off + (b * bs - r->guest_off) != m[b].layer_off)
			return false;
	}
	return ember_header_lookup(h, n_blocks * bs) == NULL;
}

/* Adjacent ranges that could have been merged are a bug of the overlay. */
static bool fully_merged(const struct ember_header *h)
{
	for (size_t i = 1; i < h->n_ranges; i++) {
		const struct ember_hdr_range *a = &h->ranges[i - 1];
		const struct ember_hdr_range *b = &h->ranges[i];

		if (a->layer == b->layer &&
		    (a->layer == EMBER_LAYER_ZERO ||
		     a->layer_off + a->len == b->layer_off))
			return false;
	}
	return true;
}

static void random_chain(int round)
{
	uint32_t bs = 4096u << (rnd() % 5);
	size_t n_blocks = 1 + rnd() % 400;
	int gens = 1 + (int)(rnd() % 40);
	struct model_block *m = calloc(n_blocks, sizeof(*m));
	struct ember_header h = {
		.version = EMBER_HDR_VERSION,
		.block_size = bs,
		.total_size = (uint64_t)n_blocks * bs,
	};
	bool ok = true;

	h.layers = calloc((size_t)gens, sizeof(*h.layers));
	h.ranges = malloc(sizeof(*h.ranges));
	h.ranges[0] = (struct ember_hdr_range){
		.len = h.total_size, .layer = EMBER_LAYER_ZERO,
	};
	h.n_ranges = 1;
	for (size_t b = 0; b < n_blocks; b++)
		m[b].layer = EMBER_LAYER_ZERO;

	for (int g = 0; g < gens && ok; g++) {
		struct ember_hdr_range *over = calloc(n_blocks, sizeof(*over));
		struct ember_hdr_range *res;
		size_t n_over = 0, n_res;
		uint64_t packed = 0;
		unsigned density = 1 + (unsigned)(rnd() % 100);
		enum ember_hdr_error err;

		/* A generation stores some blocks, zeroes a few, keeps the
		 * rest; packed in guest-offset order like the builder. */
		for (size_t b = 0; b < n_blocks; b++) {
			struct ember_hdr_range r = {.guest_off = b * bs,
						    .len = bs};

			if (g > 0 && rnd() % 100 >= density)
				continue;
			if (rnd() % 8 == 0) {
				r.layer = EMBER_LAYER_ZERO;
			} else {
				r.layer = (uint32_t)g;
				r.layer_off = packed;
				packed += bs;
			}
			m[b].layer = r.layer;
			m[b].layer_off = r.layer_off;
			over[n_over++] = r;
		}
		CHECK(ember_header_overlay(h.ranges, h.n_ranges, over, n_over,
					   &res, &n_res) == 0);
		free(h.ranges);
		h.ranges = res;
		h.n_ranges = n_res;
		ember_layer_id_random(&h.layers[g].id);
		h.layers[g].size = packed;
		h.layers[g].generation = (uint32_t)g;
		h.n_layers = (uint32_t)g + 1;
		h.generation = (uint32_t)g;
		h.id = h.layers[g].id;
		if (g == 0)
			h.base_id = h.id;
		ok = ember_header_validate(&h, &err) == 0;
		if (!ok)
			fprintf(stderr, "round %d gen %d: %s\n", round, g,
				ember_hdr_strerror(err));
		ok = ok && check_against_model(&h, m, n_blocks) &&
		     fully_merged(&h);
		free(over);
	}
	CHECK(ok);

	/* A round trip through the file format keeps every field. */
	{
		struct ember_header d;
		enum ember_hdr_error err;
		void *buf;
		size_t len;

		CHECK(ember_header_encode(&h, &buf, &len) == 0);
		CHECK(ember_header_decode(buf, len, &d, &err) == 0);
		CHECK(d.n_ranges == h.n_ranges && d.n_layers == h.n_layers);
		CHECK(d.total_size == h.total_size && d.block_size == bs);
		CHECK(d.generation == h.generation);
		CHECK(ember_layer_id_equal(&d.id, &h.id));
		/* Field by field: memcmp would compare the padding after
		 * `layer`, which neither side initialises. */
		{
			bool same = true;

			for (size_t i = 0; i < h.n_ranges; i++)
				same = same &&
				       d.ranges[i].guest_off == h.ranges[i].guest_off &&
				       d.ranges[i].len == h.ranges[i].len &&
				       d.ranges[i].layer == h.ranges[i].layer &&
				       d.ranges[i].layer_off == h.ranges[i].layer_off;
			CHECK(same);
		}
		for (uint32_t i = 0; i < h.n_layers; i++) {
			CHECK(ember_layer_id_equal(&d.layers[i].id,
						   &h.layers[i].id));
			CHECK(d.layers[i].size == h.layers[i].size);
			CHECK(d.layers[i].checksum == h.layers[i].checksum);
			CHECK(d.layers[i].generation == h.layers[i].generation);
		}
		CHECK(check_against_model(&d, m, n_blocks));
		ember_header_free(&d);
		free(buf);
	}
	ember_header_free(&h);
	free(m);
}

static void test_overlay_rejects(void)
{
	struct ember_hdr_range base = {.len = 8192,
				       .layer = EMBER_LAYER_ZERO};
	struct ember_hdr_range over[2] = {
		{.guest_off = 4096, .len = 4096, .layer = 0},
		{.guest_off = 0, .len = 4096, .layer = 0},
	};
	struct ember_hdr_range *out;
	size_t n;

	CHECK(ember_header_overlay(&base, 1, over, 2, &out, &n) == -EINVAL);
	over[1].guest_off = 8192;
	CHECK(ember_header_overlay(&base, 1, over, 2, &out, &n) == -EINVAL);
	CHECK(ember_header_overlay(&base, 1, over, 1, &out, &n) == 0);
	CHECK(n == 2 && out[1].guest_off == 4096 && out[1].layer == 0);
	free(out);
}

/* A small valid header: 3 layers, 5 ranges over 8 blocks of 4 KiB. */
static void sample_header(struct ember_header *h)
{
	static struct ember_hdr_layer layers[3];
	static struct ember_hdr_range ranges[5] = {
		{.guest_off = 0, .len = 8192, .layer = 0, .layer_off = 0},
		{.guest_off = 8192, .len = 4096, .layer = EMBER_LAYER_ZERO},
		{.guest_off = 12288, .len = 8192, .layer = 1, .layer_off = 4096},
		{.guest_off = 20480, .len = 4096, .layer = 2, .layer_off = 0},
		{.guest_off = 24576, .len = 8192, .layer = 0, .layer_off = 16384},
	};

	for (int i = 0; i < 3; i++) {
		ember_layer_id_random(&layers[i].id);
		layers[i].generation = (uint32_t)i;
		layers[i].size = 32768;
		layers[i].checksum = 42 + (uint64_t)i;
	}
	*h = (struct ember_header){
		.version = EMBER_HDR_VERSION,
		.block_size = 4096,
		.generation = 2,
		.total_size = 32768,
		.id = layers[2].id,
		.base_id = layers[0].id,
		.n_layers = 3,
		.layers = layers,
		.n_ranges = 5,
		.ranges = ranges,
	};
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void reseal(uint8_t *b, size_t len)
{
	put64(b + len - 8, XXH3_64bits(b, len - 8));
}

/* Offsets from the layout table at the top of header.c. */
#define LAYER(i) (80 + 40 * (i))
#define RANGE(i) (80 + 40 * 3 + 32 * (i))

enum mut_kind { RAW, SEALED };

struct mutation {
	const char *name;
	enum ember_hdr_error want;
	enum mut_kind kind;
	size_t off;
	int width; /* 1, 4 or 8 bytes */
	uint64_t value;
	long len_delta;
};

static const struct mutation mutations[] = {
	{"magic", EMBER_HDR_BAD_MAGIC, RAW, 0, 1, 'X', 0},
	{"version", EMBER_HDR_BAD_VERSION, SEALED, 8, 4, 2, 0},
	{"checksum", EMBER_HDR_BAD_CHECKSUM, RAW, 100, 1, 0xff, 0},
	{"truncated", EMBER_HDR_TRUNCATED, RAW, 0, 0, 0, -1},
	{"truncated fixed part", EMBER_HDR_TRUNCATED, RAW, 0, 0, 0, -300},
	{"trailing", EMBER_HDR_TRAILING, RAW, 0, 0, 0, 1},
	{"block size small", EMBER_HDR_BAD_BLOCK_SIZE, SEALED, 12, 4, 2048, 0},
	{"block size not pow2", EMBER_HDR_BAD_BLOCK_SIZE, SEALED, 12, 4, 12288,
	 0},
	{"total size zero", EMBER_HDR_BAD_TOTAL_SIZE, SEALED, 16, 8, 0, 0},
	{"total size odd", EMBER_HDR_BAD_TOTAL_SIZE, SEALED, 16, 8, 32769, 0},
	{"range past total", EMBER_HDR_PAST_END, SEALED, 16, 8, 28672, 0},
	{"gap at the end", EMBER_HDR_GAP, SEALED, 16, 8, 65536, 0},
	{"reserved", EMBER_HDR_BAD_RESERVED, SEALED, 72, 1, 1, 0},
	{"layer reserved", EMBER_HDR_BAD_RESERVED, SEALED, LAYER(1) + 36, 4, 1,
	 0},
	{"range reserved", EMBER_HDR_BAD_RESERVED, SEALED, RANGE(2) + 28, 4, 1,
	 0},
	{"layer newer than header", EMBER_HDR_BAD_LAYER, SEALED, LAYER(1) + 32,
	 4, 7, 0},
	{"too many ranges", EMBER_HDR_TOO_LARGE, SEALED, 32, 8, 1ull << 40, 0},
	{"unaligned range", EMBER_HDR_UNALIGNED, SEALED, RANGE(1), 8, 8193, 0},
	{"unaligned layer offset", EMBER_HDR_UNALIGNED, SEALED, RANGE(2) + 16,
	 8, 100, 0},
	{"empty range", EMBER_HDR_EMPTY_RANGE, SEALED, RANGE(1) + 8, 8, 0, 0},
	{"unsorted", EMBER_HDR_UNSORTED, SEALED, RANGE(2), 8, 4096, 0},
	{"overlap", EMBER_HDR_OVERLAP, SEALED, RANGE(1) + 8, 8, 8192, 0},
	{"gap", EMBER_HDR_GAP, SEALED, RANGE(0) + 8, 8, 4096, 0},
	{"gap at the start", EMBER_HDR_GAP, SEALED, RANGE(0), 8, 4096, 0},
	{"range past end", EMBER_HDR_PAST_END, SEALED, RANGE(4) + 8, 8, 12288,
	 0},
	{"bad layer index", EMBER_HDR_BAD_LAYER_INDEX, SEALED, RANGE(3) + 24, 4,
	 3, 0},
	{"past layer end", EMBER_HDR_PAST_LAYER_END, SEALED, RANGE(4) + 16, 8,
	 28672, 0},
	{"layer file too small", EMBER_HDR_PAST_LAYER_END, SEALED,
	 LAYER(0) + 16, 8, 4096, 0},
	{"zero range with offset", EMBER_HDR_BAD_RESERVED, SEALED,
	 RANGE(1) + 16, 8, 4096, 0},
};

static void test_bad_files(void)
{
	struct ember_header h, d;
	enum ember_hdr_error err;
	uint8_t *good, *b;
	size_t len;

	sample_header(&h);
	if (ember_header_encode(&h, (void **)&good, &len) != 0) {
		CHECK(!"sample header encodes");
		return;
	}
	CHECK(len == 80 + 3 * 40 + 5 * 32 + 8);
	CHECK(ember_header_decode(good, len, &d, &err) == 0 &&
	      err == EMBER_HDR_OK);
	ember_header_free(&d);

	for (size_t i = 0; i < EMBER_ARRAY_SIZE(mutations); i++) {
		const struct mutation *m = &mutations[i];
		size_t mlen = (size_t)((long)len + m->len_delta);
		int rc;

		b = calloc(1, len + 8);
		memcpy(b, good, len);
		if (m->width == 1)
			b[m->off] ^= (uint8_t)m->value;
		else if (m->width == 4)
			put32(b + m->off, (uint32_t)m->value);
		else if (m->width == 8)
			put64(b + m->off, m->value);
		if (m->kind == SEALED)
			reseal(b, len);
		err = EMBER_HDR_OK;
		rc = ember_header_decode(b, mlen, &d, &err);
		if (rc != -EINVAL || err != m->want)
			fprintf(stderr, "mutation '%s': rc %d, error '%s', "
					"want '%s'\n",
				m->name, rc, ember_hdr_strerror(err),
				ember_hdr_strerror(m->want));
		CHECK(rc == -EINVAL && err == m->want);
		CHECK(d.ranges == NULL && d.layers == NULL);
		free(b);
	}

	/* Duplicate layer ids and a header whose own layer is missing. */
	b = malloc(len);
	memcpy(b, good, len);
	memcpy(b + LAYER(1), b + LAYER(0), 16);
	reseal(b, len);
	CHECK(ember_header_decode(b, len, &d, &err) == -EINVAL &&
	      err == EMBER_HDR_BAD_LAYER);
	memcpy(b, good, len);
	memset(b + 40, 0x5a, 16);
	reseal(b, len);
	CHECK(ember_header_decode(b, len, &d, &err) == -EINVAL &&
	      err == EMBER_HDR_BAD_LAYER);
	free(b);

	/* Every error has its own message. */
	for (int i = 0; i < EMBER_HDR_ERROR_COUNT; i++)
		for (int j = 0; j < i; j++)
			CHECK(strcmp(ember_hdr_strerror(i),
				     ember_hdr_strerror(j)) != 0);
	free(good);
}

static void test_ids(void)
{
	struct ember_layer_id a, b;
	char s[EMBER_LAYER_ID_STRLEN], path[64];

	CHECK(ember_layer_id_random(&a) == 0);
	ember_layer_id_format(&a, s);
	CHECK(strlen(s) == 36 && s[8] == '-' && s[14] == '4');
	CHECK(ember_layer_id_parse(s, &b) == 0 && ember_layer_id_equal(&a, &b));
	CHECK(ember_layer_id_parse("00112233445566778899aabbccddeeff", &b) ==
	      0);
	CHECK(b.b[0] == 0x00 && b.b[15] == 0xff);
	CHECK(ember_layer_id_parse("0011223344556677-899aabbccddeeff", &b) ==
	      -EINVAL);
	CHECK(ember_layer_id_parse("xyz", &b) == -EINVAL);
	CHECK(ember_layer_path("/d", &a, path, sizeof(path)) == 0);
	CHECK(strlen(path) == 3 + 36 + 6);
	CHECK(ember_header_path("/d", &a, path, 10) == -ENAMETOOLONG);
}

int main(void)
{
	for (int round = 0; round < 200; round++)
		random_chain(round);
	test_overlay_rejects();
	test_bad_files();
	test_ids();
	return test_summary("snap-header");
}
