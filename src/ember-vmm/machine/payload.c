/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The compressed vmlinux inside a bzImage, decompressed on the host: the
 * machine then loads the ELF and enters the kernel at its 64-bit entry, as
 * for a vmlinux, and the guest skips its own decompressor (which runs with
 * the guest's page tables and the cost of every first touch of guest
 * memory; seconds in the nested host here).
 *
 * Formats by their magic: xz (liblzma), zstd (libzstd), gzip (zlib). The
 * payload's last 4 bytes are the uncompressed size, little endian (the
 * kernel's build appends it; gzip's trailer ends with it); the result must
 * have exactly that size. Other formats (lz4, lzo, bzip2, lzma) are left
 * to the guest's decompressor.
 */
#include <errno.h>
#include <lzma.h>
#include <string.h>
#include <sys/mman.h>
#include <zlib.h>
#include <zstd.h>

#include "x86.h"

/* A vmlinux larger than this is not one. */
#define MAX_PAYLOAD_OUT (512U << 20)

static const uint8_t XZ_MAGIC[] = { 0xfd, '7', 'z', 'X', 'Z', 0x00 };
static const uint8_t ZSTD_MAGIC[] = { 0x28, 0xb5, 0x2f, 0xfd };
static const uint8_t GZIP_MAGIC[] = { 0x1f, 0x8b };

static bool has_magic(const uint8_t *p, size_t len, const uint8_t *magic,
		      size_t mlen)
{
	return len >= mlen && memcmp(p, magic, mlen) == 0;
}

static int unxz(const uint8_t *in, size_t len, uint8_t *out, size_t out_len)
{
	lzma_stream s = LZMA_STREAM_INIT;
	lzma_ret r;

	if (lzma_stream_decoder(&s, UINT64_MAX, 0) != LZMA_OK)
		return -ENOMEM;
	s.next_in = in;
	s.avail_in = len;
	s.next_out = out;
	s.avail_out = out_len;
	/* One .xz stream; the size the build appended follows it. */
	r = lzma_code(&s, LZMA_FINISH);
	lzma_end(&s);
	if (r == LZMA_MEM_ERROR)
		return -ENOMEM;
	if (r != LZMA_STREAM_END || s.avail_out != 0)
		return -EINVAL;
	return 0;
}

static int unzstd(const uint8_t *in, size_t len, uint8_t *out, size_t out_len)
{
	size_t frame = ZSTD_findFrameCompressedSize(in, len);
	size_t n;

	if (ZSTD_isError(frame))
		return -EINVAL;
	n = ZSTD_decompress(out, out_len, in, frame);
	if (ZSTD_isError(n) || n != out_len)
		return -EINVAL;
	return 0;
}

static int gunzip(const uint8_t *in, size_t len, uint8_t *out, size_t out_len)
{
	z_stream z = { 0 };
	int r;

	/* 16 + window bits: a gzip header and trailer, not a zlib one. Both
	 * sizes are under 4 GiB (MAX_PAYLOAD_OUT, the caller's file limit). */
	if (len > UINT32_MAX)
		return -EINVAL;
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)out_len;
	r = inflate(&z, Z_FINISH);
	inflateEnd(&z);
	if (r == Z_MEM_ERROR)
		return -ENOMEM;
	if (r != Z_STREAM_END || z.avail_out != 0)
		return -EINVAL;
	return 0;
}

int bzimage_decompress(const uint8_t *payload, size_t len, uint8_t **out,
		       size_t *out_len)
{
	int (*fn)(const uint8_t *, size_t, uint8_t *, size_t);
	const uint8_t *t = payload + len - 4;
	size_t size;
	void *buf;
	int ret;

	*out = NULL;
	*out_len = 0;
	if (has_magic(payload, len, XZ_MAGIC, sizeof(XZ_MAGIC)))
		fn = unxz;
	else if (has_magic(payload, len, ZSTD_MAGIC, sizeof(ZSTD_MAGIC)))
		fn = unzstd;
	else if (has_magic(payload, len, GZIP_MAGIC, sizeof(GZIP_MAGIC)))
		fn = gunzip;
	else
		return -ENOTSUP;
	if (len < 16)
		return -EINVAL;
	size = (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 |
	       (size_t)t[3] << 24;
	if (size == 0 || size > MAX_PAYLOAD_OUT)
		return -EINVAL;
	/* Its own mapping, unmapped after the load: no heap left behind. */
	buf = mmap(NULL, size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return -ENOMEM;
	/* Whole: gzip's own trailer ends in the size; xz and zstd stop at
	 * the end of their stream. */
	ret = fn(payload, len, buf, size);
	if (ret) {
		munmap(buf, size);
		return ret;
	}
	*out = buf;
	*out_len = size;
	return 0;
}
