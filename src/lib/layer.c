// SPDX-License-Identifier: Apache-2.0
/*
 * Snapshot layer files: opening a chain, building a generation, flattening.
 *
 * A chain lives in folders of files named by layer id (docs/snapshots.md):
 *   <dir>/<uuid>.layer  the blocks one generation stored, packed in the
 *                       order of their guest offsets
 *   <dir>/<uuid>.hdr    the header of that generation (header.c)
 * A header names every layer its mapping uses; the layers may sit in
 * several folders (a template's and a sandbox's), searched in order.
 *
 * Building writes the layer first and the header second, each atomically,
 * so a crash leaves at worst an unreferenced layer file, never a header
 * that names a partial layer.
 */
#include <ember/header.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define WRITE_BUF_SIZE (1u << 20)

static void say(char *why, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (!why || !size)
		return;
	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
}

void ember_chain_close(struct ember_chain *c)
{
	if (c->maps && c->h) {
		for (uint32_t i = 0; i < c->h->n_layers; i++)
			if (c->maps[i])
				munmap((void *)c->maps[i], c->h->layers[i].size);
	}
	free(c->maps);
	free(c->paths);
	c->maps = NULL;
	c->paths = NULL;
	c->h = NULL;
}

static int open_layer(const struct ember_hdr_layer *l, const char *const *dirs,
		      size_t n_dirs, char *path, size_t path_size, char *why,
		      size_t why_size)
{
	char id[EMBER_LAYER_ID_STRLEN];
	int fd, rc;

	ember_layer_id_format(&l->id, id);
	for (size_t d = 0; d < n_dirs; d++) {
		rc = ember_layer_path(dirs[d], &l->id, path, path_size);
		if (rc)
			return rc;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			return fd;
		if (errno != ENOENT) {
			rc = -errno;
			say(why, why_size, "layer %s: %s: %s", id, path,
			    strerror(-rc));
			return rc;
		}
	}
	say(why, why_size, "layer %s: missing (searched %zu folder%s%s%s)",
	    id, n_dirs, n_dirs == 1 ? "" : "s", n_dirs ? ", first " : "",
	    n_dirs ? dirs[0] : "");
	return -ENOENT;
}

static int map_layer(struct ember_chain *c, uint32_t i, int fd, bool verify,
		     char *why, size_t why_size)
{
	const struct ember_hdr_layer *l = &c->h->layers[i];
	char id[EMBER_LAYER_ID_STRLEN];
	struct stat st;
	void *m;

	ember_layer_id_format(&l->id, id);
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != l->size) {
		say(why, why_size,
		    "layer %s: %s is %lld bytes, the header says %llu", id,
		    c->paths[i], (long long)st.st_size,
		    (unsigned long long)l->size);
		return -EBADMSG;
	}
	if (l->size == 0) {
		m = NULL;
	} else {
		m = mmap(NULL, l->size, PROT_READ, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED) {
			int rc = -errno;

			say(why, why_size, "layer %s: mmap: %s", id,
			    strerror(-rc));
			return rc;
		}
	}
	c->maps[i] = m;
	if (verify && XXH3_64bits(m ? m : "", l->size) != l->checksum) {
		say(why, why_size, "layer %s: %s: bad checksum", id,
		    c->paths[i]);
		return -EBADMSG;
	}
	return 0;
}

int ember_chain_open(struct ember_chain *c, const struct ember_header *h,
		     const char *const *dirs, size_t n_dirs, bool verify,
		     char *why, size_t why_size)
{
	uint32_t n = h->n_layers ? h->n_layers : 1;
	int rc = 0;

	memset(c, 0, sizeof(*c));
	c->h = h;
	c->maps = calloc(n, sizeof(*c->maps));
	c->paths = calloc(n, sizeof(*c->paths));
	if (!c->maps || !c->paths) {
		rc = -ENOMEM;
		goto out_close;
	}
	for (uint32_t i = 0; i < h->n_layers; i++) {
		int fd = open_layer(&h->layers[i], dirs, n_dirs, c->paths[i],
				    sizeof(c->paths[i]), why, why_size);

		if (fd < 0) {
			rc = fd;
			goto out_close;
		}
		rc = map_layer(c, i, fd, verify, why, why_size);
		close(fd);
		if (rc)
			goto out_close;
	}
	return 0;

out_close:
	ember_chain_close(c);
	return rc;
}

int ember_chain_read(const struct ember_chain *c, uint64_t off, void *buf,
		     size_t len)
{
	uint8_t *p = buf;

	if (off > c->h->total_size || len > c->h->total_size - off)
		return -EINVAL;
	while (len) {
		const struct ember_hdr_range *r = ember_header_lookup(c->h, off);
		uint64_t in = off - r->guest_off;
		size_t n = (size_t)EMBER_MIN((uint64_t)len, r->len - in);

		if (r->layer == EMBER_LAYER_ZERO)
			memset(p, 0, n);
		else
			memcpy(p, c->maps[r->layer] + r->layer_off + in, n);
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

int ember_chain_flatten(const struct ember_chain *c, const char *out_path)
{
	char tmp[PATH_MAX];
	int fd, rc;

	fd = ember_atomic_open(out_path, tmp, 0644);
	if (fd < 0)
		return fd;
	if (ftruncate(fd, (off_t)c->h->total_size) < 0) {
		rc = -errno;
		goto out_abort;
	}
	for (size_t i = 0; i < c->h->n_ranges; i++) {
		const struct ember_hdr_range *r = &c->h->ranges[i];

		if (r->layer == EMBER_LAYER_ZERO)
			continue;
		rc = ember_pwrite_full(fd, c->maps[r->layer] + r->layer_off,
				       r->len, (off_t)r->guest_off);
		if (rc)
			goto out_abort;
	}
	return ember_atomic_commit(fd, tmp, out_path);

out_abort:
	ember_atomic_abort(fd, tmp);
	return rc;
}

/* ---- building a generation ---------------------------------------------- */

struct extent {
	uint64_t start, end;
};

struct build {
	const struct ember_build_opts *o;
	uint32_t bs;
	uint64_t total;
	int mem_fd;
	struct extent *ext;
	size_t n_ext;
	struct ember_hdr_range *over;
	size_t n_over, cap_over;
	uint32_t new_idx;
	int layer_fd;
	uint64_t layer_size;
	XXH3_state_t *xxh;
	uint8_t *wbuf;
	size_t wlen;
	struct ember_chain parent_chain;
	bool parent_open;
	char *why;
	size_t why_size;
};

/* The memory file's data extents, via SEEK_DATA/SEEK_HOLE. A filesystem that
 * cannot report holes reports one extent for the whole file.
 * TODO(snap): a diff on such a filesystem reads as wholly dirtied, and its
 * unwritten pages as zero; the VMM should write diffs only where holes are
 * reported (ext4, xfs, btrfs, tmpfs), and nothing here can detect it. */
static int find_extents(struct build *b)
{
	size_t cap = 0;
	off_t pos = 0;

	while ((uint64_t)pos < b->total) {
		off_t data = lseek(b->mem_fd, pos, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break;
		if (data < 0)
			return -errno;
		hole = lseek(b->mem_fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		if (b->n_ext == cap) {
			struct extent *e;

			cap = cap ? cap * 2 : 64;
			e = realloc(b->ext, cap * sizeof(*e));
			if (!e)
				return -ENOMEM;
			b->ext = e;
		}
		b->ext[b->n_ext].start = (uint64_t)data;
		b->ext[b->n_ext].end = EMBER_MIN((uint64_t)hole, b->total);
		b->n_ext++;
		pos = hole;
	}
	return 0;
}

static int push_over(struct build *b, uint64_t off, uint32_t layer,
		     uint64_t layer_off)
{
	struct ember_hdr_range *last = b->n_over ? &b->over[b->n_over - 1] : 0;

	if (last && last->guest_off + last->len == off &&
	    last->layer == layer &&
	    (layer == EMBER_LAYER_ZERO ||
	     last->layer_off + last->len == layer_off)) {
		last->len += b->bs;
		return 0;
	}
	if (b->n_over == b->cap_over) {
		size_t cap = b->cap_over ? b->cap_over * 2 : 256;
		struct ember_hdr_range *r = realloc(b->over, cap * sizeof(*r));

		if (!r)
			return -ENOMEM;
		b->over = r;
		b->cap_over = cap;
	}
	b->over[b->n_over++] = (struct ember_hdr_range){
		.guest_off = off,
		.len = b->bs,
		.layer = layer,
		.layer_off = layer_off,
	};
	return 0;
}

static int flush_layer(struct build *b)
{
	int rc;

	if (!b->wlen)
		return 0;
	rc = ember_write_full(b->layer_fd, b->wbuf, b->wlen);
	b->wlen = 0;
	return rc;
}

static int append_block(struct build *b, const uint8_t *blk)
{
	int rc;

	if (b->wlen + b->bs > WRITE_BUF_SIZE) {
		rc = flush_layer(b);
		if (rc)
			return rc;
	}
	if (b->bs > WRITE_BUF_SIZE) {
		rc = ember_write_full(b->layer_fd, blk, b->bs);
	} else {
		memcpy(b->wbuf + b->wlen, blk, b->bs);
		b->wlen += b->bs;
		rc = 0;
	}
	if (rc)
		return rc;
	XXH3_64bits_update(b->xxh, blk, b->bs);
	b->layer_size += b->bs;
	return 0;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

/* Reads block [off, off + bs). A diff block that is only partly written
 * takes its other bytes from the parent chain. */
static int read_block(struct build *b, uint64_t off, size_t first_ext,
		      bool full, uint8_t *blk)
{
	uint64_t end = off + b->bs;
	ssize_t n;
	int rc;

	if (full || b->o->kind == EMBER_MEM_FULL || !b->o->parent) {
		n = ember_pread_full(b->mem_fd, blk, b->bs, (off_t)off);
		if (n < 0)
			return (int)n;
		if ((size_t)n < b->bs)
			memset(blk + n, 0, b->bs - (size_t)n);
		return 0;
	}
	if (!b->parent_open) {
		rc = ember_chain_open(&b->parent_chain, b->o->parent,
				      b->o->layer_dirs, b->o->n_layer_dirs,
				      false, b->why, b->why_size);
		if (rc)
			return rc;
		b->parent_open = true;
	}
	rc = ember_chain_read(&b->parent_chain, off, blk, b->bs);
	if (rc)
		return rc;
	for (size_t j = first_ext; j < b->n_ext && b->ext[j].start < end; j++) {
		uint64_t s = EMBER_MAX(b->ext[j].start, off);
		uint64_t e = EMBER_MIN(b->ext[j].end, end);

		if (e <= s)
			continue;
		n = ember_pread_full(b->mem_fd, blk + (s - off), e - s,
				     (off_t)s);
		if (n < 0)
			return (int)n;
	}
	return 0;
}

static int scan_blocks(struct build *b)
{
	uint8_t *blk = malloc(b->bs);
	size_t ei = 0;
	uint64_t off = 0;
	int rc = 0;

	if (!blk)
		return -ENOMEM;
	while (ei < b->n_ext) {
		uint64_t covered = 0, end;

		off = EMBER_MAX(off, b->ext[ei].start / b->bs * b->bs);
		end = off + b->bs;
		for (size_t j = ei; j < b->n_ext && b->ext[j].start < end; j++)
			covered += EMBER_MIN(b->ext[j].end, end) -
				   EMBER_MAX(b->ext[j].start, off);
		rc = read_block(b, off, ei, covered == b->bs, blk);
		if (rc)
			break;
		if (all_zero(blk, b->bs)) {
			rc = push_over(b, off, EMBER_LAYER_ZERO, 0);
		} else {
			rc = push_over(b, off, b->new_idx, b->layer_size);
			if (!rc)
				rc = append_block(b, blk);
		}
		if (rc)
			break;
		off = end;
		while (ei < b->n_ext && b->ext[ei].end <= off)
			ei++;
	}
	free(blk);
	return rc ? rc : flush_layer(b);
}

/* Fills h's layer table with the new layer and every parent layer the
 * ranges still use, renumbering the ranges. */
static int compact_layers(struct ember_header *h,
			  const struct ember_hdr_layer *all, uint32_t n_all)
{
	uint32_t *map = malloc((size_t)n_all * sizeof(*map)), n = 0;
	bool *used = calloc(n_all, sizeof(*used));
	int rc = -ENOMEM;

	if (!map || !used)
		goto out;
	h->layers = calloc(n_all, sizeof(*h->layers));
	if (!h->layers)
		goto out;
	used[n_all - 1] = true; /* the new layer, even when empty */
	for (size_t i = 0; i < h->n_ranges; i++)
		if (h->ranges[i].layer != EMBER_LAYER_ZERO)
			used[h->ranges[i].layer] = true;
	for (uint32_t i = 0; i < n_all; i++) {
		if (!used[i])
			continue;
		map[i] = n;
		h->layers[n++] = all[i];
	}
	h->n_layers = n;
	for (size_t i = 0; i < h->n_ranges; i++)
		if (h->ranges[i].layer != EMBER_LAYER_ZERO)
			h->ranges[i].layer = map[h->ranges[i].layer];
	rc = 0;
out:
	free(map);
	free(used);
	return rc;
}

static int check_sizes(struct build *b)
{
	const struct ember_header *p = b->o->parent;
	struct stat st;

	if (fstat(b->mem_fd, &st) < 0)
		return -errno;
	b->total = (uint64_t)st.st_size;
	if (p && b->total != p->total_size) {
		say(b->why, b->why_size,
		    "%s is %llu bytes, the parent header says %llu",
		    b->o->mem_path, (unsigned long long)b->total,
		    (unsigned long long)p->total_size);
		return -EINVAL;
	}
	if (b->total == 0 || b->total % b->bs) {
		say(b->why, b->why_size,
		    "%s is %llu bytes, not a positive multiple of the block "
		    "size %u",
		    b->o->mem_path, (unsigned long long)b->total, b->bs);
		return -EINVAL;
	}
	return 0;
}

/* Writes the layer file from the memory file; fills b->over. */
static int write_layer(struct build *b, const struct ember_layer_id *id)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	int rc;

	rc = ember_layer_path(b->o->out_dir, id, path, sizeof(path));
	if (rc)
		return rc;
	b->layer_fd = ember_atomic_open(path, tmp, 0644);
	if (b->layer_fd < 0) {
		say(b->why, b->why_size, "%s: %s", path,
		    strerror(-b->layer_fd));
		return b->layer_fd;
	}
	rc = find_extents(b);
	if (!rc)
		rc = scan_blocks(b);
	if (rc) {
		ember_atomic_abort(b->layer_fd, tmp);
		return rc;
	}
	return ember_atomic_commit(b->layer_fd, tmp, path);
}

/* Builds the new header's mapping: the parent's (or all zero) with the new
 * ranges over it. */
static int make_header(struct build *b, const struct ember_layer_id *id,
		       struct ember_header *h)
{
	const struct ember_header *p = b->o->parent;
	bool keep_parent = p && b->o->kind == EMBER_MEM_DIFF;
	struct ember_hdr_range zero = {
		.guest_off = 0, .len = b->total, .layer = EMBER_LAYER_ZERO,
	};
	struct ember_hdr_layer *all;
	uint32_t n_all = keep_parent ? p->n_layers + 1 : 1;
	enum ember_hdr_error err;
	int rc;

	all = calloc(n_all, sizeof(*all));
	if (!all)
		return -ENOMEM;
	if (keep_parent)
		memcpy(all, p->layers, p->n_layers * sizeof(*all));
	all[n_all - 1] = (struct ember_hdr_layer){
		.id = *id,
		.size = b->layer_size,
		.checksum = XXH3_64bits_digest(b->xxh),
		.generation = p ? p->generation + 1 : 0,
	};
	/* Overlay indices: the new layer is last in "all". */
	for (size_t i = 0; i < b->n_over; i++)
		if (b->over[i].layer != EMBER_LAYER_ZERO)
			b->over[i].layer = n_all - 1;
	if (keep_parent)
		rc = ember_header_overlay(p->ranges, p->n_ranges, b->over,
					  b->n_over, &h->ranges, &h->n_ranges);
	else
		rc = ember_header_overlay(&zero, 1, b->over, b->n_over,
					  &h->ranges, &h->n_ranges);
	if (!rc)
		rc = compact_layers(h, all, n_all);
	free(all);
	if (rc)
		return rc;
	h->version = EMBER_HDR_VERSION;
	h->block_size = b->bs;
	h->total_size = b->total;
	h->generation = p ? p->generation + 1 : 0;
	h->id = *id;
	h->base_id = p ? p->base_id : *id;
	if (ember_header_validate(h, &err)) {
		say(b->why, b->why_size, "new header fails validation: %s",
		    ember_hdr_strerror(err));
		return -EINVAL;
	}
	return 0;
}

int ember_layer_build(const struct ember_build_opts *o,
		      struct ember_header *out, char *why, size_t why_size)
{
	struct build b = {
		.o = o, .mem_fd = -1, .layer_fd = -1, .why = why,
		.why_size = why_size,
	};
	struct ember_layer_id id;
	char path[PATH_MAX];
	int rc;

	memset(out, 0, sizeof(*out));
	b.bs = o->parent ? o->parent->block_size
			 : (o->block_size ? o->block_size : 4096);
	if (b.bs < EMBER_HDR_MIN_BLOCK || b.bs > EMBER_HDR_MAX_BLOCK ||
	    (b.bs & (b.bs - 1))) {
		say(why, why_size, "block size %u: %s", b.bs,
		    ember_hdr_strerror(EMBER_HDR_BAD_BLOCK_SIZE));
		return -EINVAL;
	}
	b.new_idx = 0; /* renumbered in make_header */
	b.mem_fd = open(o->mem_path, O_RDONLY | O_CLOEXEC);
	if (b.mem_fd < 0) {
		rc = -errno;
		say(why, why_size, "%s: %s", o->mem_path, strerror(-rc));
		return rc;
	}
	b.xxh = XXH3_createState();
	b.wbuf = malloc(WRITE_BUF_SIZE);
	rc = -ENOMEM;
	if (!b.xxh || !b.wbuf)
		goto out;
	XXH3_64bits_reset(b.xxh);
	rc = check_sizes(&b);
	if (!rc)
		rc = ember_layer_id_random(&id);
	if (!rc) {
		rc = ember_mkdir_p(o->out_dir, 0755);
		if (rc)
			say(why, why_size, "%s: %s", o->out_dir,
			    strerror(-rc));
	}
	if (!rc)
		rc = write_layer(&b, &id);
	if (!rc)
		rc = make_header(&b, &id, out);
	if (!rc)
		rc = ember_header_path(o->out_dir, &id, path, sizeof(path));
	if (!rc) {
		rc = ember_header_save(path, out);
		if (rc)
			say(why, why_size, "%s: %s", path, strerror(-rc));
	}
	if (rc)
		ember_header_free(out);
out:
	if (b.parent_open)
		ember_chain_close(&b.parent_chain);
	XXH3_freeState(b.xxh);
	free(b.wbuf);
	free(b.ext);
	free(b.over);
	close(b.mem_fd);
	return rc;
}
