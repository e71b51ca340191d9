/* SPDX-License-Identifier: Apache-2.0 */
/* bzImage setup-header parsing, good and bad files; the payload
 * decompressors (xz, zstd, gzip) on good, corrupt and unknown data. */
#include <errno.h>
#include <lzma.h>
#include <string.h>
#include <sys/mman.h>
#include <zlib.h>
#include <zstd.h>

#include "test.h"
#include "x86.h"

#define FILE_SIZE 8192

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A minimal bzImage: 3 setup sectors plus the boot sector, then kernel. */
static void make_image(uint8_t *buf, uint16_t version, uint16_t xloadflags)
{
	memset(buf, 0, FILE_SIZE);
	buf[0x1f1] = 3;			    /* setup_sects */
	put16(buf + 0x1fe, 0xaa55);	    /* boot_flag */
	buf[0x200] = 0xeb;		    /* jump */
	buf[0x201] = 0x66;		    /* header ends at 0x268 */
	memcpy(buf + 0x202, "HdrS", 4);
	put16(buf + 0x206, version);
	put32(buf + 0x22c, 0x7fffffff);	    /* initrd_addr_max */
	put32(buf + 0x230, 0x200000);	    /* kernel_alignment */
	put16(buf + 0x236, xloadflags);
	put32(buf + 0x238, 2047);	    /* cmdline_size */
	put32(buf + 0x260, 0x1000000);	    /* init_size */
}

#define PLAIN_SIZE (300 * 1024)
#define PACKED_MAX (PLAIN_SIZE + 4096)

/* Something like a kernel: compressible, not trivially. */
static void make_plain(uint8_t *p)
{
	uint32_t x = 12345;

	for (size_t i = 0; i < PLAIN_SIZE; i++) {
		x = x * 1103515245 + 12345;
		p[i] = (i % 7 == 0) ? (uint8_t)(x >> 24) : (uint8_t)(i / 64);
	}
}

/* Appends the plain size, as the kernel's build does (gzip's trailer
 * already ends with it). */
static size_t size_append(uint8_t *out, size_t n)
{
	put32(out + n, PLAIN_SIZE);
	return n + 4;
}

static size_t pack_xz(const uint8_t *in, uint8_t *out)
{
	size_t n = 0;

	/* As the kernel's xz_wrap.sh: x86 BCJ, LZMA2, CRC32. */
	lzma_options_lzma opt;
	lzma_filter f[3] = {
		{ .id = LZMA_FILTER_X86 },
		{ .id = LZMA_FILTER_LZMA2, .options = &opt },
		{ .id = LZMA_VLI_UNKNOWN },
	};

	lzma_lzma_preset(&opt, 6);
	if (lzma_stream_buffer_encode(f, LZMA_CHECK_CRC32, NULL, in,
				      PLAIN_SIZE, out, &n,
				      PACKED_MAX) != LZMA_OK)
		return 0;
	return size_append(out, n);
}

static size_t pack_zstd(const uint8_t *in, uint8_t *out)
{
	size_t n = ZSTD_compress(out, PACKED_MAX, in, PLAIN_SIZE, 19);

	return ZSTD_isError(n) ? 0 : size_append(out, n);
}

static size_t pack_gzip(const uint8_t *in, uint8_t *out)
{
	z_stream z = { 0 };
	size_t n;

	if (deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return 0;
	z.next_in = (Bytef *)in;
	z.avail_in = PLAIN_SIZE;
	z.next_out = out;
	z.avail_out = PACKED_MAX;
	n = deflate(&z, Z_FINISH) == Z_STREAM_END ? z.total_out : 0;
	deflateEnd(&z);
	return n;
}

static bool unpacks_to(const uint8_t *packed, size_t n, const uint8_t *plain)
{
	uint8_t *out;
	size_t len;
	bool ok;

	if (bzimage_decompress(packed, n, &out, &len) != 0)
		return false;
	ok = len == PLAIN_SIZE && memcmp(out, plain, len) == 0;
	munmap(out, len);
	return ok;
}

static int unpack_error(const uint8_t *packed, size_t n)
{
	uint8_t *out = (uint8_t *)1;
	size_t len = 1;
	int ret = bzimage_decompress(packed, n, &out, &len);

	if (ret == 0)
		munmap(out, len);
	else if (out != NULL || len != 0)
		return 1; /* outputs not cleared */
	return ret;
}

static void check_payloads(void)
{
	static uint8_t plain[PLAIN_SIZE], packed[PACKED_MAX + 8];
	size_t (*packers[])(const uint8_t *, uint8_t *) = { pack_xz, pack_zstd,
							     pack_gzip };
	static const uint8_t lz4[] = { 0x02, 0x21, 0x4c, 0x18, 0, 0, 0, 0,
				       0,    0,	   0,	 0,    0, 0, 0, 0 };

	make_plain(plain);
	for (unsigned i = 0; i < 3; i++) {
		size_t n = packers[i](plain, packed);

		CHECK(n > 16 && n < PLAIN_SIZE / 2);
		CHECK(unpacks_to(packed, n, plain));
		/* A size that does not match what comes out. */
		put32(packed + n - 4, PLAIN_SIZE + 1);
		CHECK(unpack_error(packed, n) == -EINVAL);
		put32(packed + n - 4, PLAIN_SIZE - 1);
		CHECK(unpack_error(packed, n) == -EINVAL);
		put32(packed + n - 4, 0);
		CHECK(unpack_error(packed, n) == -EINVAL);
		/* Corrupt data in the middle; cut short. */
		n = packers[i](plain, packed);
		packed[n / 2] ^= 0x55;
		CHECK(unpack_error(packed, n) == -EINVAL);
		n = packers[i](plain, packed);
		memmove(packed + n / 2, packed + n - 4, 4);
		CHECK(unpack_error(packed, n / 2 + 4) == -EINVAL);
		CHECK(unpack_error(packed, 8) == -EINVAL);
	}
	/* Formats left to the guest's decompressor. */
	CHECK(unpack_error(lz4, sizeof(lz4)) == -ENOTSUP);
	CHECK(unpack_error(plain, 64) == -ENOTSUP);
}

int main(void)
{
	static uint8_t buf[FILE_SIZE];
	struct bzimage_info bz;

	check_payloads();

	make_image(buf, 0x020f, XLF_KERNEL_64);
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == 0);
	CHECK(bz.setup_bytes == 4 * 512);
	CHECK(bz.kernel_offset == 4 * 512);
	CHECK(bz.kernel_size == FILE_SIZE - 4 * 512);
	CHECK(bz.version == 0x020f);
	CHECK(bz.initrd_addr_max == 0x7fffffff);
	CHECK(bz.cmdline_size == 2047);
	CHECK(bz.init_size == 0x1000000);
	CHECK(bz.header_end == 0x268);
	CHECK(bz.payload_offset == 0 && bz.payload_length == 0);

	/* The payload, inside the protected-mode part or not at all. */
	put32(buf + 0x248, 0x100);
	put32(buf + 0x24c, FILE_SIZE - 4 * 512 - 0x100);
	put32(buf + 0x258, 0x1000000);
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == 0);
	CHECK(bz.payload_offset == 0x100);
	CHECK(bz.payload_length == FILE_SIZE - 4 * 512 - 0x100);
	CHECK(bz.pref_address == 0x1000000);
	put32(buf + 0x24c, FILE_SIZE - 4 * 512 - 0xff);
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == 0);
	CHECK(bz.payload_offset == 0 && bz.payload_length == 0);
	put32(buf + 0x248, 0xffffffff);
	put32(buf + 0x24c, 2);
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == 0);
	CHECK(bz.payload_length == 0);
	make_image(buf, 0x020f, XLF_KERNEL_64);

	/* setup_sects 0 means 4. */
	buf[0x1f1] = 0;
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == 0);
	CHECK(bz.setup_bytes == 5 * 512);

	/* Truncated: shorter than the header, or no kernel after setup. */
	CHECK(bzimage_parse(buf, 0x200, &bz) == -EINVAL);
	CHECK(bzimage_parse(buf, 5 * 512, &bz) == -EINVAL);
	CHECK(bzimage_parse(buf, 0, &bz) == -EINVAL);

	/* Wrong magic. */
	make_image(buf, 0x020f, XLF_KERNEL_64);
	memcpy(buf + 0x202, "HdrX", 4);
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == -EINVAL);
	make_image(buf, 0x020f, XLF_KERNEL_64);
	put16(buf + 0x1fe, 0x1234);
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == -EINVAL);

	/* Too old a protocol, or no 64-bit entry point. */
	make_image(buf, 0x020b, XLF_KERNEL_64);
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == -ENOTSUP);
	make_image(buf, 0x020f, 0);
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == -ENOTSUP);

	/* A header that claims to run past the file. */
	make_image(buf, 0x020f, XLF_KERNEL_64);
	buf[0x201] = 0xff;
	CHECK(bzimage_parse(buf, FILE_SIZE, &bz) == -EINVAL);
	return test_summary("vmm-machine-bzimage");
}
