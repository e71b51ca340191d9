// SPDX-License-Identifier: Apache-2.0
/*
 * The snapshot header: which layer holds each block of guest memory.
 *
 * File layout, version 1. Every integer is little-endian; offsets in bytes.
 *
 *   off  size  field
 *   0    8     magic "EMBERHDR"
 *   8    4     version (1)
 *   12   4     block_size: a power of two, 4 KiB .. 1 GiB
 *   16   8     total_size: guest memory bytes, a multiple of block_size
 *   24   4     generation: 0 for a full image, parent's + 1 after
 *   28   4     n_layers (L), at most 65536
 *   32   8     n_ranges (R), at most 2^28
 *   40   16    id: this generation's layer
 *   56   16    base_id: the chain's generation 0 layer
 *   72   8     reserved, 0
 *   80   40*L  layer table, one entry per layer the mapping names:
 *                +0 id (16), +16 file size (8), +24 XXH3_64bits of the
 *                layer file (8), +32 generation (4), +36 reserved 0 (4)
 *   80+40L 32*R range table, sorted by guest offset:
 *                +0 guest offset (8), +8 length (8), +16 offset in the
 *                layer file (8), +24 layer index (4; 0xffffffff = zero),
 *                +28 reserved 0 (4)
 *   end-8 8    XXH3_64bits of every byte before it
 *
 * Invariants (checked by ember_header_validate on every decode and encode):
 *   - the ranges are sorted, non-empty, block-aligned, and cover
 *     [0, total_size) exactly once: no gap, no overlap, nothing past the end;
 *   - a range's layer index is EMBER_LAYER_ZERO (then its layer offset is 0)
 *     or an index into the layer table, and [layer_off, layer_off + len)
 *     lies inside that layer's file;
 *   - layer ids are distinct and not all-zero, no layer is newer than the
 *     header's generation, and the header's own layer is in the table (it
 *     may be empty when the generation stored no block).
 *
 * The checks run in file order so that each malformed file is reported by
 * its first fault: length, magic, version, checksum, then the fields.
 */
#include <ember/header.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <xxhash.h>

#define FIXED_SIZE 80u
#define LAYER_ENTRY_SIZE 40u
#define RANGE_ENTRY_SIZE 32u
#define CHECKSUM_SIZE 8u
#define MAX_LAYERS 65536u
#define MAX_RANGES (1ull << 28)

static const char *const hdr_errors[EMBER_HDR_ERROR_COUNT] = {
	[EMBER_HDR_OK] = "ok",
	[EMBER_HDR_TRUNCATED] = "truncated",
	[EMBER_HDR_TRAILING] = "trailing bytes after the checksum",
	[EMBER_HDR_BAD_MAGIC] = "bad magic (not an Ember snapshot header)",
	[EMBER_HDR_BAD_VERSION] = "unknown version",
	[EMBER_HDR_BAD_CHECKSUM] = "bad checksum",
	[EMBER_HDR_BAD_BLOCK_SIZE] =
		"block size not a power of two in [4096, 1 GiB]",
	[EMBER_HDR_BAD_TOTAL_SIZE] =
		"total size zero or not a multiple of the block size",
	[EMBER_HDR_BAD_RESERVED] = "reserved field not zero",
	[EMBER_HDR_BAD_LAYER] = "bad layer table entry",
	[EMBER_HDR_UNALIGNED] = "range not aligned to the block size",
	[EMBER_HDR_EMPTY_RANGE] = "empty range",
	[EMBER_HDR_UNSORTED] = "ranges not sorted",
	[EMBER_HDR_OVERLAP] = "overlapping ranges",
	[EMBER_HDR_GAP] = "gap in coverage",
	[EMBER_HDR_PAST_END] = "range past the total size",
	[EMBER_HDR_BAD_LAYER_INDEX] = "range names no layer of the table",
	[EMBER_HDR_PAST_LAYER_END] = "range past the end of its layer file",
	[EMBER_HDR_TOO_LARGE] = "too many layers or ranges",
};

const char *ember_hdr_strerror(enum ember_hdr_error e)
{
	if ((unsigned)e >= EMBER_HDR_ERROR_COUNT)
		return "unknown error";
	return hdr_errors[e];
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static bool is_nil(const struct ember_layer_id *id)
{
	static const struct ember_layer_id nil;

	return memcmp(id, &nil, sizeof(nil)) == 0;
}

static int fail(enum ember_hdr_error *err, enum ember_hdr_error e)
{
	if (err)
		*err = e;
	return -EINVAL;
}

static int validate_layers(const struct ember_header *h,
			   enum ember_hdr_error *err)
{
	bool self = false;

	for (uint32_t i = 0; i < h->n_layers; i++) {
		const struct ember_hdr_layer *l = &h->layers[i];

		if (is_nil(&l->id) || l->generation > h->generation)
			return fail(err, EMBER_HDR_BAD_LAYER);
		for (uint32_t j = 0; j < i; j++)
			if (ember_layer_id_equal(&l->id, &h->layers[j].id))
				return fail(err, EMBER_HDR_BAD_LAYER);
		if (ember_layer_id_equal(&l->id, &h->id))
			self = true;
	}
	return self ? 0 : fail(err, EMBER_HDR_BAD_LAYER);
}

static int validate_ranges(const struct ember_header *h,
			   enum ember_hdr_error *err)
{
	uint64_t bs = h->block_size, end = 0;

	for (size_t i = 0; i < h->n_ranges; i++) {
		const struct ember_hdr_range *r = &h->ranges[i];

		if (r->guest_off % bs || r->len % bs || r->layer_off % bs)
			return fail(err, EMBER_HDR_UNALIGNED);
		if (r->len == 0)
			return fail(err, EMBER_HDR_EMPTY_RANGE);
		if (r->guest_off > h->total_size ||
		    r->len > h->total_size - r->guest_off)
			return fail(err, EMBER_HDR_PAST_END);
		if (i > 0 && r->guest_off < h->ranges[i - 1].guest_off)
			return fail(err, EMBER_HDR_UNSORTED);
		if (r->guest_off < end)
			return fail(err, EMBER_HDR_OVERLAP);
		if (r->guest_off > end)
			return fail(err, EMBER_HDR_GAP);
		if (r->layer == EMBER_LAYER_ZERO) {
			if (r->layer_off != 0)
				return fail(err, EMBER_HDR_BAD_RESERVED);
		} else if (r->layer >= h->n_layers) {
			return fail(err, EMBER_HDR_BAD_LAYER_INDEX);
		} else {
			uint64_t lsize = h->layers[r->layer].size;

			if (r->layer_off > lsize || r->len > lsize - r->layer_off)
				return fail(err, EMBER_HDR_PAST_LAYER_END);
		}
		end = r->guest_off + r->len;
	}
	return end == h->total_size ? 0 : fail(err, EMBER_HDR_GAP);
}

int ember_header_validate(const struct ember_header *h,
			  enum ember_hdr_error *err)
{
	int rc;

	if (h->version != EMBER_HDR_VERSION)
		return fail(err, EMBER_HDR_BAD_VERSION);
	if (h->block_size < EMBER_HDR_MIN_BLOCK ||
	    h->block_size > EMBER_HDR_MAX_BLOCK ||
	    (h->block_size & (h->block_size - 1)))
		return fail(err, EMBER_HDR_BAD_BLOCK_SIZE);
	if (h->total_size == 0 || h->total_size % h->block_size)
		return fail(err, EMBER_HDR_BAD_TOTAL_SIZE);
	if (h->n_layers > MAX_LAYERS || h->n_ranges > MAX_RANGES)
		return fail(err, EMBER_HDR_TOO_LARGE);
	rc = validate_layers(h, err);
	if (rc)
		return rc;
	rc = validate_ranges(h, err);
	if (rc)
		return rc;
	if (err)
		*err = EMBER_HDR_OK;
	return 0;
}

static size_t encoded_size(uint64_t n_layers, uint64_t n_ranges)
{
	return FIXED_SIZE + LAYER_ENTRY_SIZE * n_layers +
	       RANGE_ENTRY_SIZE * n_ranges + CHECKSUM_SIZE;
}

int ember_header_encode(const struct ember_header *h, void **buf,
			size_t *len)
{
	enum ember_hdr_error err;
	size_t size;
	uint8_t *b, *p;

	if (ember_header_validate(h, &err))
		return -EINVAL;
	size = encoded_size(h->n_layers, h->n_ranges);
	b = calloc(1, size);
	if (!b)
		return -ENOMEM;
	memcpy(b, EMBER_HDR_MAGIC, 8);
	put_le32(b + 8, h->version);
	put_le32(b + 12, h->block_size);
	put_le64(b + 16, h->total_size);
	put_le32(b + 24, h->generation);
	put_le32(b + 28, h->n_layers);
	put_le64(b + 32, h->n_ranges);
	memcpy(b + 40, h->id.b, 16);
	memcpy(b + 56, h->base_id.b, 16);
	p = b + FIXED_SIZE;
	for (uint32_t i = 0; i < h->n_layers; i++, p += LAYER_ENTRY_SIZE) {
		memcpy(p, h->layers[i].id.b, 16);
		put_le64(p + 16, h->layers[i].size);
		put_le64(p + 24, h->layers[i].checksum);
		put_le32(p + 32, h->layers[i].generation);
	}
	for (size_t i = 0; i < h->n_ranges; i++, p += RANGE_ENTRY_SIZE) {
		put_le64(p, h->ranges[i].guest_off);
		put_le64(p + 8, h->ranges[i].len);
		put_le64(p + 16, h->ranges[i].layer_off);
		put_le32(p + 24, h->ranges[i].layer);
	}
	put_le64(p, XXH3_64bits(b, size - CHECKSUM_SIZE));
	*buf = b;
	*len = size;
	return 0;
}

static int decode_tables(const uint8_t *b, struct ember_header *h,
			 enum ember_hdr_error *err)
{
	const uint8_t *p = b + FIXED_SIZE;

	h->layers = calloc(h->n_layers ? h->n_layers : 1, sizeof(*h->layers));
	h->ranges = calloc(h->n_ranges ? h->n_ranges : 1, sizeof(*h->ranges));
	if (!h->layers || !h->ranges)
		return -ENOMEM;
	for (uint32_t i = 0; i < h->n_layers; i++, p += LAYER_ENTRY_SIZE) {
		memcpy(h->layers[i].id.b, p, 16);
		h->layers[i].size = get_le64(p + 16);
		h->layers[i].checksum = get_le64(p + 24);
		h->layers[i].generation = get_le32(p + 32);
		if (get_le32(p + 36))
			return fail(err, EMBER_HDR_BAD_RESERVED);
	}
	for (size_t i = 0; i < h->n_ranges; i++, p += RANGE_ENTRY_SIZE) {
		h->ranges[i].guest_off = get_le64(p);
		h->ranges[i].len = get_le64(p + 8);
		h->ranges[i].layer_off = get_le64(p + 16);
		h->ranges[i].layer = get_le32(p + 24);
		if (get_le32(p + 28))
			return fail(err, EMBER_HDR_BAD_RESERVED);
	}
	return 0;
}

int ember_header_decode(const void *buf, size_t len, struct ember_header *h,
			enum ember_hdr_error *err)
{
	const uint8_t *b = buf;
	uint64_t n_ranges, n_layers;
	size_t want;
	int rc;

	memset(h, 0, sizeof(*h));
	if (len < 8)
		return fail(err, EMBER_HDR_TRUNCATED);
	if (memcmp(b, EMBER_HDR_MAGIC, 8) != 0)
		return fail(err, EMBER_HDR_BAD_MAGIC);
	if (len < FIXED_SIZE + CHECKSUM_SIZE)
		return fail(err, EMBER_HDR_TRUNCATED);
	h->version = get_le32(b + 8);
	if (h->version != EMBER_HDR_VERSION)
		return fail(err, EMBER_HDR_BAD_VERSION);
	n_layers = get_le32(b + 28);
	n_ranges = get_le64(b + 32);
	if (n_layers > MAX_LAYERS || n_ranges > MAX_RANGES)
		return fail(err, EMBER_HDR_TOO_LARGE);
	want = encoded_size(n_layers, n_ranges);
	if (len < want)
		return fail(err, EMBER_HDR_TRUNCATED);
	if (len > want)
		return fail(err, EMBER_HDR_TRAILING);
	if (XXH3_64bits(b, want - CHECKSUM_SIZE) !=
	    get_le64(b + want - CHECKSUM_SIZE))
		return fail(err, EMBER_HDR_BAD_CHECKSUM);
	h->block_size = get_le32(b + 12);
	h->total_size = get_le64(b + 16);
	h->generation = get_le32(b + 24);
	h->n_layers = (uint32_t)n_layers;
	h->n_ranges = (size_t)n_ranges;
	memcpy(h->id.b, b + 40, 16);
	memcpy(h->base_id.b, b + 56, 16);
	if (get_le64(b + 72)) {
		rc = fail(err, EMBER_HDR_BAD_RESERVED);
		goto out_free;
	}
	rc = decode_tables(b, h, err);
	if (rc)
		goto out_free;
	rc = ember_header_validate(h, err);
	if (rc)
		goto out_free;
	return 0;

out_free:
	ember_header_free(h);
	return rc;
}

int ember_header_load(const char *path, struct ember_header *h,
		      enum ember_hdr_error *err)
{
	size_t max = encoded_size(MAX_LAYERS, MAX_RANGES), len;
	char *buf;
	int rc;

	memset(h, 0, sizeof(*h));
	rc = ember_read_file(path, max, &buf, &len);
	if (rc == -EFBIG)
		return fail(err, EMBER_HDR_TOO_LARGE);
	if (rc)
		return rc;
	rc = ember_header_decode(buf, len, h, err);
	free(buf);
	return rc;
}

int ember_header_save(const char *path, const struct ember_header *h)
{
	size_t len;
	void *buf;
	int rc;

	rc = ember_header_encode(h, &buf, &len);
	if (rc)
		return rc;
	rc = ember_write_file_atomic(path, buf, len, 0644);
	free(buf);
	return rc;
}

void ember_header_free(struct ember_header *h)
{
	free(h->layers);
	free(h->ranges);
	h->layers = NULL;
	h->ranges = NULL;
	h->n_layers = 0;
	h->n_ranges = 0;
}

const struct ember_hdr_range *
ember_header_lookup(const struct ember_header *h, uint64_t off)
{
	size_t lo = 0, hi = h->n_ranges;

	if (off >= h->total_size)
		return NULL;
	/* The last range whose start is <= off. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (h->ranges[mid].guest_off <= off)
			lo = mid;
		else
			hi = mid;
	}
	if (lo >= h->n_ranges)
		return NULL;
	return &h->ranges[lo];
}

int ember_header_find_layer(const struct ember_header *h,
			    const struct ember_layer_id *id)
{
	for (uint32_t i = 0; i < h->n_layers; i++)
		if (ember_layer_id_equal(&h->layers[i].id, id))
			return (int)i;
	return -1;
}

/* Appends r to the result, merging it into the last range when both are
 * zero, or of one layer with contiguous offsets. */
static void push_range(struct ember_hdr_range *out, size_t *n,
		       const struct ember_hdr_range *r)
{
	struct ember_hdr_range *last = *n ? &out[*n - 1] : NULL;

	if (last && last->guest_off + last->len == r->guest_off &&
	    last->layer == r->layer &&
	    (r->layer == EMBER_LAYER_ZERO ||
	     last->layer_off + last->len == r->layer_off)) {
		last->len += r->len;
		return;
	}
	out[(*n)++] = *r;
}

/* Appends the part of base between [from, to), trimmed. *bi is the first
 * base range that may intersect it. */
static void push_base_part(const struct ember_hdr_range *base, size_t n_base,
			   size_t *bi, uint64_t from, uint64_t to,
			   struct ember_hdr_range *out, size_t *n)
{
	if (from >= to)
		return;
	while (*bi < n_base && base[*bi].guest_off + base[*bi].len <= from)
		(*bi)++;
	for (size_t i = *bi; i < n_base && base[i].guest_off < to; i++) {
		struct ember_hdr_range r = base[i];
		uint64_t s = EMBER_MAX(r.guest_off, from);
		uint64_t e = EMBER_MIN(r.guest_off + r.len, to);

		if (r.layer != EMBER_LAYER_ZERO)
			r.layer_off += s - r.guest_off;
		r.guest_off = s;
		r.len = e - s;
		push_range(out, n, &r);
	}
}

int ember_header_overlay(const struct ember_hdr_range *base, size_t n_base,
			 const struct ember_hdr_range *over, size_t n_over,
			 struct ember_hdr_range **out, size_t *n_out)
{
	uint64_t total = n_base ? base[n_base - 1].guest_off +
					  base[n_base - 1].len
				: 0;
	uint64_t pos = 0;
	size_t bi = 0, n = 0;
	struct ember_hdr_range *res;

	for (size_t i = 0; i < n_over; i++) {
		if (over[i].len == 0 || over[i].guest_off < pos ||
		    over[i].guest_off + over[i].len > total)
			return -EINVAL;
		pos = over[i].guest_off + over[i].len;
	}
	/* Each overlay range splits at most one base range in two. */
	res = malloc((n_base + 2 * n_over + 1) * sizeof(*res));
	if (!res)
		return -ENOMEM;
	pos = 0;
	for (size_t i = 0; i < n_over; i++) {
		push_base_part(base, n_base, &bi, pos, over[i].guest_off, res,
			       &n);
		push_range(res, &n, &over[i]);
		pos = over[i].guest_off + over[i].len;
	}
	push_base_part(base, n_base, &bi, pos, total, res, &n);
	*out = res;
	*n_out = n;
	return 0;
}

int ember_layer_id_random(struct ember_layer_id *id)
{
	ssize_t n;

	do {
		n = getrandom(id->b, sizeof(id->b), 0);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(id->b))
		return n < 0 ? -errno : -EIO;
	/* Mark it as a version 4 (random) UUID. */
	id->b[6] = (uint8_t)((id->b[6] & 0x0f) | 0x40);
	id->b[8] = (uint8_t)((id->b[8] & 0x3f) | 0x80);
	return 0;
}

void ember_layer_id_format(const struct ember_layer_id *id,
			   char out[EMBER_LAYER_ID_STRLEN])
{
	static const char hex[] = "0123456789abcdef";
	char *p = out;

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[id->b[i] >> 4];
		*p++ = hex[id->b[i] & 15];
	}
	*p = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ember_layer_id_parse(const char *s, struct ember_layer_id *id)
{
	size_t len = strlen(s);
	bool dashed = len == 36;
	int k = 0;

	if (len != 36 && len != 32)
		return -EINVAL;
	for (size_t i = 0; i < len;) {
		int hi, lo;

		if (dashed && (i == 8 || i == 13 || i == 18 || i == 23)) {
			if (s[i] != '-')
				return -EINVAL;
			i++;
			continue;
		}
		hi = hexval(s[i]);
		lo = hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		id->b[k++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	return k == 16 ? 0 : -EINVAL;
}

bool ember_layer_id_equal(const struct ember_layer_id *a,
			  const struct ember_layer_id *b)
{
	return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

static int id_path(const char *dir, const struct ember_layer_id *id,
		   const char *suffix, char *out, size_t size)
{
	char s[EMBER_LAYER_ID_STRLEN];
	int n;

	ember_layer_id_format(id, s);
	n = snprintf(out, size, "%s/%s%s", dir, s, suffix);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int ember_layer_path(const char *dir, const struct ember_layer_id *id,
		     char *out, size_t size)
{
	return id_path(dir, id, EMBER_LAYER_SUFFIX, out, size);
}

int ember_header_path(const char *dir, const struct ember_layer_id *id,
		      char *out, size_t size)
{
	return id_path(dir, id, EMBER_HDR_SUFFIX, out, size);
}
