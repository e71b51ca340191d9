// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of building generations from real files (src/lib/layer.c):
 * a full image with holes and zero blocks, then sparse diff files with
 * dirtied 4 KiB pages (some of them zeroed) over random block sizes; the
 * chain read back and flattened must equal a plain byte-array model. Also
 * corrupt, truncated and missing layers, and a diff of the wrong size.
 */
#include <ember/header.h>
#include <ember/util.h>

#include "../../test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096u

static char tmpdir[] = "/tmp/ember-test-build.XXXXXX";
static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(rnd() >> 24);
	p[0] |= 1; /* never all zero by chance */
}

static bool file_equals(const char *path, const uint8_t *want, size_t len)
{
	char *data;
	size_t n;
	bool eq;

	if (ember_read_file(path, len + 1, &data, &n))
		return false;
	eq = n == len && memcmp(data, want, len) == 0;
	free(data);
	return eq;
}

static bool chain_equals(const struct ember_header *h, const uint8_t *model,
			 const char *dir)
{
	const char *dirs[] = {dir};
	struct ember_chain c;
	char why[256], path[PATH_MAX];
	uint8_t *buf = malloc(h->total_size);
	bool ok;

	if (ember_chain_open(&c, h, dirs, 1, true, why, sizeof(why))) {
		fprintf(stderr, "chain_open: %s\n", why);
		free(buf);
		return false;
	}
	ok = ember_chain_read(&c, 0, buf, h->total_size) == 0 &&
	     memcmp(buf, model, h->total_size) == 0;
	snprintf(path, sizeof(path), "%s/flat.mem", dir);
	ok = ok && ember_chain_flatten(&c, path) == 0 &&
	     file_equals(path, model, h->total_size);
	unlink(path);
	ember_chain_close(&c);
	free(buf);
	return ok;
}

/* Generation 0 from a full image: random blocks, zero blocks, holes. */
static int full_image(const char *path, uint8_t *model, size_t n_blocks,
		      uint32_t bs)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0 || ftruncate(fd, (off_t)n_blocks * bs) < 0)
		return -1;
	memset(model, 0, n_blocks * bs);
	for (size_t b = 0; b < n_blocks; b++) {
		uint8_t *p = model + b * bs;
		unsigned kind = (unsigned)(rnd() % 4);

		if (kind == 0)
			continue; /* hole */
		if (kind != 1)
			fill_random(p, bs);
		if (ember_pwrite_full(fd, p, bs, (off_t)(b * bs)))
			return -1;
	}
	close(fd);
	return 0;
}

/* A diff: full size, only dirtied pages written (some of them zeros). */
static int diff_image(const char *path, uint8_t *model, size_t total)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	unsigned density = 1 + (unsigned)(rnd() % 40);
	uint8_t page[PAGE];

	if (fd < 0 || ftruncate(fd, (off_t)total) < 0)
		return -1;
	for (size_t off = 0; off < total; off += PAGE) {
		if (rnd() % 100 >= density)
			continue;
		if (rnd() % 5 == 0)
			memset(page, 0, PAGE);
		else
			fill_random(page, PAGE);
		memcpy(model + off, page, PAGE);
		if (ember_pwrite_full(fd, page, PAGE, (off_t)off))
			return -1;
	}
	close(fd);
	return 0;
}

static uint64_t stored_bytes(const struct ember_header *h)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < h->n_layers; i++)
		n += h->layers[i].size;
	return n;
}

static void random_chain(int round)
{
	uint32_t bs = PAGE << (rnd() % 5);
	size_t n_blocks = 4 + rnd() % 40, total = n_blocks * bs;
	uint8_t *model = malloc(total);
	char mem[PATH_MAX], hdr_path[PATH_MAX], why[256] = "";
	const char *dirs[] = {tmpdir};
	struct ember_header h, next, loaded;
	struct ember_build_opts o = {
		.layer_dirs = dirs, .n_layer_dirs = 1, .mem_path = mem,
		.kind = EMBER_MEM_FULL, .out_dir = tmpdir, .block_size = bs,
	};
	enum ember_hdr_error err;
	int gens = 1 + (int)(rnd() % 6);

	snprintf(mem, sizeof(mem), "%s/mem", tmpdir);
	CHECK(full_image(mem, model, n_blocks, bs) == 0);
	if (ember_layer_build(&o, &h, why, sizeof(why))) {
		fprintf(stderr, "round %d: build gen 0: %s\n", round, why);
		CHECK(0);
		free(model);
		return;
	}
	CHECK(h.generation == 0 && ember_layer_id_equal(&h.id, &h.base_id));
	CHECK(chain_equals(&h, model, tmpdir));
	/* Stored bytes: exactly the non-zero blocks. */
	{
		uint64_t nz = 0;

		for (size_t b = 0; b < n_blocks; b++)
			for (size_t i = 0; i < bs; i++)
				if (model[b * bs + i]) {
					nz += bs;
					break;
				}
		CHECK(stored_bytes(&h) == nz);
	}

	for (int g = 1; g < gens; g++) {
		o.parent = &h;
		o.kind = EMBER_MEM_DIFF;
		CHECK(diff_image(mem, model, total) == 0);
		if (ember_layer_build(&o, &next, why, sizeof(why))) {
			fprintf(stderr, "round %d: build gen %d: %s\n", round, g,
				why);
			CHECK(0);
			break;
		}
		CHECK(next.generation == (uint32_t)g);
		CHECK(ember_layer_id_equal(&next.base_id, &h.base_id));
		CHECK(chain_equals(&next, model, tmpdir));
		/* The header on disk is the one returned. */
		ember_header_path(tmpdir, &next.id, hdr_path, sizeof(hdr_path));
		CHECK(ember_header_load(hdr_path, &loaded, &err) == 0);
		CHECK(loaded.n_ranges == next.n_ranges &&
		      loaded.n_layers == next.n_layers);
		ember_header_free(&loaded);
		ember_header_free(&h);
		h = next;
	}
	unlink(mem);
	ember_header_free(&h);
	free(model);
}

static void test_bad_layers(void)
{
	char mem[PATH_MAX], layer[PATH_MAX], why[256];
	const char *dirs[] = {tmpdir};
	uint8_t *model = malloc(64 * PAGE);
	struct ember_build_opts o = {
		.layer_dirs = dirs, .n_layer_dirs = 1, .mem_path = mem,
		.kind = EMBER_MEM_FULL, .out_dir = tmpdir,
	};
	struct ember_header h, next;
	struct ember_chain c;
	int fd;

	snprintf(mem, sizeof(mem), "%s/mem", tmpdir);
	CHECK(full_image(mem, model, 64, PAGE) == 0);
	fill_random(model, PAGE);
	fd = open(mem, O_WRONLY | O_CLOEXEC);
	CHECK(ember_pwrite_full(fd, model, PAGE, 0) == 0);
	close(fd);
	if (ember_layer_build(&o, &h, why, sizeof(why))) {
		CHECK(0);
		free(model);
		return;
	}
	ember_layer_path(tmpdir, &h.id, layer, sizeof(layer));

	/* A flipped byte: found by the checksum, not by the size. */
	fd = open(layer, O_RDWR | O_CLOEXEC);
	CHECK(pwrite(fd, "\x55", 1, 10) == 1);
	CHECK(ember_chain_open(&c, &h, dirs, 1, false, why, sizeof(why)) == 0);
	ember_chain_close(&c);
	CHECK(ember_chain_open(&c, &h, dirs, 1, true, why, sizeof(why)) ==
	      -EBADMSG);
	CHECK(strstr(why, "bad checksum") != NULL);
	/* A short layer. */
	CHECK(ftruncate(fd, PAGE) == 0);
	close(fd);
	CHECK(ember_chain_open(&c, &h, dirs, 1, false, why, sizeof(why)) ==
	      -EBADMSG);
	CHECK(strstr(why, "the header says") != NULL);
	/* A missing layer. */
	CHECK(unlink(layer) == 0);
	CHECK(ember_chain_open(&c, &h, dirs, 1, false, why, sizeof(why)) ==
	      -ENOENT);
	CHECK(strstr(why, "missing") != NULL);

	/* A diff whose size is not the parent's. */
	fd = open(mem, O_WRONLY | O_TRUNC | O_CLOEXEC);
	CHECK(ftruncate(fd, 63 * PAGE) == 0);
	close(fd);
	o.parent = &h;
	o.kind = EMBER_MEM_DIFF;
	CHECK(ember_layer_build(&o, &next, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "parent header says") != NULL);
	/* A block size that is not a power of two. */
	o.parent = NULL;
	o.block_size = 12288;
	CHECK(ember_layer_build(&o, &next, why, sizeof(why)) == -EINVAL);
	unlink(mem);
	ember_header_free(&h);
	free(model);
}

int main(void)
{
	char cmd[PATH_MAX + 16];

	if (!mkdtemp(tmpdir))
		return 1;
	for (int round = 0; round < 40; round++)
		random_chain(round);
	test_bad_layers();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return test_summary("snap-build");
}
