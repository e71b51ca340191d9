// SPDX-License-Identifier: Apache-2.0
/*
 * The working-set file: which pages a guest faulted, in order, during the
 * first seconds after a resume. Little-endian:
 *
 *   0   8    magic "EMBERWS1"
 *   8   4    page size in bytes
 *   12  4    reserved, 0
 *   16  8    count N
 *   24  8*N  guest offsets, page aligned, in fault order
 *   end 8    XXH3_64bits of every byte before it
 */
#include "server.h"

#include <ember/util.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define WS_MAGIC "EMBERWS1"
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

int ws_write(const char *path, uint64_t page_size, const uint64_t *offs,
	     size_t n)
{
	size_t len = 24 + 8 * n + 8;
	uint8_t *b = calloc(1, len);
	int rc;

	if (!b)
		return -ENOMEM;
	memcpy(b, WS_MAGIC, 8);
	put64(b + 8, page_size); /* page size (4) and reserved (4) */
	put64(b + 16, n);
	for (size_t i = 0; i < n; i++)
		put64(b + 24 + 8 * i, offs[i]);
	put64(b + len - 8, XXH3_64bits(b, len - 8));
	rc = ember_write_file_atomic(path, b, len, 0644);
	free(b);
	return rc;
}

int ws_read(const char *path, uint64_t total_size, uint64_t *page_size,
	    uint64_t **offs, size_t *n, char *why, size_t why_size)
{
	size_t len;
	uint64_t count, ps;
	uint8_t *b;
	char *data;
	int rc;

	rc = ember_read_file(path, 32 + 8ull * WS_MAX, &data, &len);
	if (rc)
		return rc;
	b = (uint8_t *)data;
	rc = -EINVAL;
	if (len < 32 || memcmp(b, WS_MAGIC, 8) != 0) {
		snprintf(why, why_size, "not a working-set file");
		goto out;
	}
	count = get64(b + 16);
	if (count > WS_MAX || len != 32 + 8 * count) {
		snprintf(why, why_size, "truncated or wrong length");
		goto out;
	}
	if (XXH3_64bits(b, len - 8) != get64(b + len - 8)) {
		snprintf(why, why_size, "bad checksum");
		goto out;
	}
	ps = get64(b + 8);
	if (ps < 4096 || (ps & (ps - 1)) || ps > (1u << 30)) {
		snprintf(why, why_size, "bad page size");
		goto out;
	}
	*offs = malloc((count ? count : 1) * sizeof(**offs));
	if (!*offs) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		uint64_t off = get64(b + 24 + 8 * i);

		if (off % ps || off >= total_size) {
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
