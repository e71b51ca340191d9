// SPDX-License-Identifier: Apache-2.0
/*
 * The working-set file: which pages a guest faulted, in order, during the
 * first seconds after a resume, and on which chain. Little-endian:
 *
 *   0   8    magic "EMBERWS2"
 *   8   4    page size in bytes
 *   12  4    generation of the header it was recorded on
 *   16  8    guest memory size (that header's total size)
 *   24  16   the chain's base layer id (generation 0)
 *   40  16   the layer id of the header it was recorded on
 *   56  8    count N
 *   64  8*N  guest offsets, page aligned, in fault order
 *   end 8    XXH3_64bits of every byte before it
 *
 * A working set only says which pages to install early; their contents
 * always come from the header being served. It is used with any header of
 * the same chain (same base layer, same memory size): a later generation
 * of a paused sandbox mostly faults the same pages. A file of another
 * chain or size is stale and refused; so is any file that fails a check.
 */
#include "server.h"

#include <ember/util.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define WS_MAGIC "EMBERWS2"
#define WS_HEAD 64
#define WS_MAX (1u << 26)

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

int ws_write(const char *path, const struct ember_header *h,
	     uint64_t page_size, const uint64_t *offs, size_t n)
{
	size_t len = WS_HEAD + 8 * n + 8;
	uint8_t *b = calloc(1, len);
	int rc;

	if (!b)
		return -ENOMEM;
	memcpy(b, WS_MAGIC, 8);
	put64(b + 8, page_size | (uint64_t)h->generation << 32);
	put64(b + 16, h->total_size);
	memcpy(b + 24, h->base_id.b, 16);
	memcpy(b + 40, h->id.b, 16);
	put64(b + 56, n);
	for (size_t i = 0; i < n; i++)
		put64(b + WS_HEAD + 8 * i, offs[i]);
	put64(b + len - 8, XXH3_64bits(b, len - 8));
	rc = ember_write_file_atomic(path, b, len, 0644);
	free(b);
	return rc;
}

int ws_read(const char *path, const struct ember_header *h,
	    uint64_t *page_size, uint64_t **offs, size_t *n, char *why,
	    size_t why_size)
{
	char id_str[EMBER_LAYER_ID_STRLEN];
	struct ember_layer_id base;
	uint64_t count, ps, total;
	size_t len;
	uint8_t *b;
	char *data;
	int rc;

	rc = ember_read_file(path, WS_HEAD + 8 + 8ull * WS_MAX, &data, &len);
	if (rc)
		return rc;
	b = (uint8_t *)data;
	rc = -EINVAL;
	if (len >= 8 && memcmp(b, "EMBERWS", 7) == 0 &&
	    memcmp(b, WS_MAGIC, 8) != 0) {
		snprintf(why, why_size, "working-set format %c, not %c",
			 b[7], WS_MAGIC[7]);
		goto out;
	}
	if (len < WS_HEAD + 8 || memcmp(b, WS_MAGIC, 8) != 0) {
		snprintf(why, why_size, "not a working-set file");
		goto out;
	}
	count = get64(b + 56);
	if (count > WS_MAX || len != WS_HEAD + 8 + 8 * count) {
		snprintf(why, why_size, "truncated or wrong length");
		goto out;
	}
	if (XXH3_64bits(b, len - 8) != get64(b + len - 8)) {
		snprintf(why, why_size, "bad checksum");
		goto out;
	}
	ps = get64(b + 8) & 0xffffffffu;
	if (ps < 4096 || (ps & (ps - 1)) || ps > (1u << 30)) {
		snprintf(why, why_size, "bad page size");
		goto out;
	}
	total = get64(b + 16);
	memcpy(base.b, b + 24, 16);
	if (total != h->total_size || !ember_layer_id_equal(&base, &h->base_id)) {
		ember_layer_id_format(&base, id_str);
		snprintf(why, why_size,
			 "stale: recorded on chain %s with %" PRIu64
			 " bytes of memory, not this one",
			 id_str, total);
		goto out;
	}
	*offs = malloc((count ? count : 1) * sizeof(**offs));
	if (!*offs) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		uint64_t off = get64(b + WS_HEAD + 8 * i);

		if (off % ps || off >= h->total_size) {
			snprintf(why, why_size,
				 "page %zu outside guest memory", i);
			free(*offs);
			*offs = NULL;
			goto out;
		}
		(*offs)[i] = off;
	}
	*page_size = ps;
	*n = count;
	rc = 0;
out:
	free(data);
	return rc;
}
