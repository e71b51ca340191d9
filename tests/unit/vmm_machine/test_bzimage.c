/* SPDX-License-Identifier: Apache-2.0 */
/* bzImage setup-header parsing, good and bad files. */
#include <errno.h>
#include <string.h>

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

int main(void)
{
	static uint8_t buf[FILE_SIZE];
	struct bzimage_info bz;

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
