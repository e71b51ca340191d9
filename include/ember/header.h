/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Snapshot memory as a chain of generation layers, described by a header.
 *
 * Guest memory is a sequence of fixed-size blocks. A layer file holds the
 * blocks one generation stored, packed contiguously; a header maps every
 * block of guest memory to (layer, offset in that layer's file), or to
 * "zero". The on-disk layout and the invariants are documented at the top
 * of src/lib/header.c; the chain's files on disk in docs/snapshots.md.
 *
 * Everything here returns 0 or a negative errno and never logs. Functions
 * that reject a malformed file say why through an enum ember_hdr_error.
 */
#ifndef EMBER_HEADER_H
#define EMBER_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMBER_HDR_MAGIC "EMBERHDR"
#define EMBER_HDR_VERSION 1u
#define EMBER_HDR_MIN_BLOCK 4096u
#define EMBER_HDR_MAX_BLOCK (1u << 30)
/* A range's layer index that means "all zeros, stored nowhere". */
#define EMBER_LAYER_ZERO UINT32_MAX
/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" plus the NUL. */
#define EMBER_LAYER_ID_STRLEN 37
#define EMBER_LAYER_SUFFIX ".layer"
#define EMBER_HDR_SUFFIX ".hdr"

/* 128 random bits; printed in the UUID form. */
struct ember_layer_id {
	uint8_t b[16];
};

struct ember_hdr_layer {
	struct ember_layer_id id;
	uint64_t size;     /* bytes in the layer file */
	uint64_t checksum; /* XXH3_64bits of the whole layer file */
	uint32_t generation;
};

struct ember_hdr_range {
	uint64_t guest_off; /* bytes from the start of guest memory */
	uint64_t len;       /* bytes; a multiple of the block size, > 0 */
	uint32_t layer;     /* index into layers[], or EMBER_LAYER_ZERO */
	uint64_t layer_off; /* bytes into that layer's file; 0 for zero */
};

struct ember_header {
	uint32_t version;
	uint32_t block_size;
	uint32_t generation;
	uint64_t total_size;
	struct ember_layer_id id;      /* this generation's layer */
	struct ember_layer_id base_id; /* the chain's generation 0 */
	uint32_t n_layers;
	struct ember_hdr_layer *layers;
	size_t n_ranges;
	struct ember_hdr_range *ranges; /* sorted by guest_off */
};

enum ember_hdr_error {
	EMBER_HDR_OK = 0,
	EMBER_HDR_TRUNCATED,      /* shorter than its counts say */
	EMBER_HDR_TRAILING,       /* bytes after the checksum */
	EMBER_HDR_BAD_MAGIC,
	EMBER_HDR_BAD_VERSION,
	EMBER_HDR_BAD_CHECKSUM,
	EMBER_HDR_BAD_BLOCK_SIZE, /* not a power of two in [4 KiB, 1 GiB] */
	EMBER_HDR_BAD_TOTAL_SIZE, /* zero or not a multiple of the block */
	EMBER_HDR_BAD_RESERVED,   /* a reserved field is not zero */
	EMBER_HDR_BAD_LAYER,      /* duplicate layer id or a bad layer entry */
	EMBER_HDR_UNALIGNED,      /* a range not on block boundaries */
	EMBER_HDR_EMPTY_RANGE,
	EMBER_HDR_UNSORTED,       /* a range starts before the previous one */
	EMBER_HDR_OVERLAP,        /* a range starts inside the previous one */
	EMBER_HDR_GAP,            /* a block covered by no range */
	EMBER_HDR_PAST_END,       /* a range past the total size */
	EMBER_HDR_BAD_LAYER_INDEX,
	EMBER_HDR_PAST_LAYER_END, /* a range past its layer file's end */
	EMBER_HDR_TOO_LARGE,      /* counts beyond what a header may hold */
	EMBER_HDR_ERROR_COUNT,
};

/* A short English phrase for the error, e.g. "bad checksum". */
const char *ember_hdr_strerror(enum ember_hdr_error e);

/* Structural checks of an in-memory header (every invariant of header.c).
 * Returns 0, or -EINVAL with *err set. */
int ember_header_validate(const struct ember_header *h,
			  enum ember_hdr_error *err);

/* Encodes a valid header into a malloc'd buffer. -EINVAL if invalid. */
int ember_header_encode(const struct ember_header *h, void **buf,
			size_t *len);
/* Decodes and fully validates. Returns 0, -EINVAL with *err set, or
 * -ENOMEM. On failure *h is left empty (safe to free). */
int ember_header_decode(const void *buf, size_t len, struct ember_header *h,
			enum ember_hdr_error *err);
/* Reads and decodes a file: -errno for I/O, -EINVAL with *err set. */
int ember_header_load(const char *path, struct ember_header *h,
		      enum ember_hdr_error *err);
/* Validates, encodes and writes atomically (temporary name, fsync, rename). */
int ember_header_save(const char *path, const struct ember_header *h);
void ember_header_free(struct ember_header *h);

/* The range holding guest offset off, or NULL past the end. O(log n). */
const struct ember_hdr_range *
ember_header_lookup(const struct ember_header *h, uint64_t off);
/* Index of the layer with this id, or -1. */
int ember_header_find_layer(const struct ember_header *h,
			    const struct ember_layer_id *id);

/* Lays over (sorted, non-overlapping, block-aligned) over base (a sorted
 * mapping that covers [0, total)): parts of base under a range of over are
 * trimmed or split away, and adjacent ranges of one layer with contiguous
 * offsets (or both zero) are merged. Layer indices are taken as they are.
 * *out is malloc'd. 0, -EINVAL (over not sorted or past base), -ENOMEM. */
int ember_header_overlay(const struct ember_hdr_range *base, size_t n_base,
			 const struct ember_hdr_range *over, size_t n_over,
			 struct ember_hdr_range **out, size_t *n_out);

/* Layer ids. */
int ember_layer_id_random(struct ember_layer_id *id);
void ember_layer_id_format(const struct ember_layer_id *id,
			   char out[EMBER_LAYER_ID_STRLEN]);
/* Accepts the UUID form or 32 hex digits. 0 or -EINVAL. */
int ember_layer_id_parse(const char *s, struct ember_layer_id *id);
bool ember_layer_id_equal(const struct ember_layer_id *a,
			  const struct ember_layer_id *b);

/* "<dir>/<uuid>.layer" and "<dir>/<uuid>.hdr". -ENAMETOOLONG if it does not
 * fit. */
int ember_layer_path(const char *dir, const struct ember_layer_id *id,
		     char *out, size_t size);
int ember_header_path(const char *dir, const struct ember_layer_id *id,
		      char *out, size_t size);

/*
 * A chain opened for reading: every layer a header names, found in a list
 * of folders, mapped read-only and shared (so processes serving one template
 * share its page cache).
 */
struct ember_chain {
	const struct ember_header *h;
	const uint8_t **maps; /* per layer; NULL for an empty layer */
	char (*paths)[4096];
};

/* Finds, checks the size of, and maps each layer. With verify, also checks
 * each layer's checksum (reads every byte). On failure, why (optional)
 * describes the first problem, e.g. "layer <id>: missing in <dirs>".
 * -ENOENT missing layer, -EBADMSG size or checksum mismatch, -errno. */
int ember_chain_open(struct ember_chain *c, const struct ember_header *h,
		     const char *const *dirs, size_t n_dirs, bool verify,
		     char *why, size_t why_size);
void ember_chain_close(struct ember_chain *c);
/* Copies guest memory [off, off+len) out of the chain. 0 or -EINVAL. */
int ember_chain_read(const struct ember_chain *c, uint64_t off, void *buf,
		     size_t len);

/* How build reads the memory file. */
enum ember_mem_kind {
	/* Every byte is guest memory; holes read as zero. */
	EMBER_MEM_FULL,
	/* Full size, only dirtied pages present (written); holes mean
	 * "unchanged since the parent". */
	EMBER_MEM_DIFF,
};

struct ember_build_opts {
	const struct ember_header *parent; /* NULL: generation 0 */
	/* Folders holding the parent's layers (needed only when a dirtied
	 * region covers part of a block). */
	const char *const *layer_dirs;
	size_t n_layer_dirs;
	const char *mem_path;
	enum ember_mem_kind kind;
	const char *out_dir;
	uint32_t block_size; /* generation 0 only; 0 means 4096 */
};

/* Builds a generation: writes <out_dir>/<id>.layer (the dirtied non-zero
 * blocks, packed) and <out_dir>/<id>.hdr, both atomically. *out gets the
 * new header (free with ember_header_free). why as for ember_chain_open.
 * 0, -EINVAL (sizes disagree), -errno. */
int ember_layer_build(const struct ember_build_opts *o,
		      struct ember_header *out, char *why, size_t why_size);

/* Writes one full memory file of the chain (zero ranges left as holes),
 * atomically. */
int ember_chain_flatten(const struct ember_chain *c, const char *out_path);

#endif
