/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest memory: the layout of RAM around the 32-bit MMIO hole, the e820
 * map that describes it to Linux, and guest-physical to host-virtual
 * translation.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ember/util.h"
#include "x86.h"

unsigned memory_layout(uint64_t mem_size, struct mem_region *out)
{
	uint64_t low = EMBER_MIN(mem_size, MMIO_HOLE_START);
	unsigned n = 0;

	out[n] = (struct mem_region){ .gpa = 0, .size = low, .slot = 0,
				      .file_offset = 0 };
	n++;
	if (mem_size > MMIO_HOLE_START) {
		out[n] = (struct mem_region){ .gpa = MMIO_HOLE_END,
					      .size = mem_size - low,
					      .slot = 1,
					      .file_offset = low };
		n++;
	}
	return n;
}

static unsigned e820_add(struct boot_e820_entry *out, unsigned n,
			 unsigned max, uint64_t addr, uint64_t size,
			 uint32_t type)
{
	if (n >= max || size == 0)
		return n;
	out[n].addr = addr;
	out[n].size = size;
	out[n].type = type;
	return n + 1;
}

/* e820 types (Linux's E820_TYPE_RAM and E820_TYPE_RESERVED). */
enum { E820_RAM = 1, E820_RESERVED = 2 };

unsigned e820_build(uint64_t mem_size, struct boot_e820_entry *out,
		    unsigned max)
{
	uint64_t low_end = EMBER_MIN(mem_size, MMIO_HOLE_START);
	unsigned n = 0;

	n = e820_add(out, n, max, 0, EMBER_MIN(mem_size, EBDA_START),
		     E820_RAM);
	if (mem_size > EBDA_START)
		n = e820_add(out, n, max, EBDA_START,
			     HIGH_MEMORY_START - EBDA_START, E820_RESERVED);
	if (low_end > HIGH_MEMORY_START)
		n = e820_add(out, n, max, HIGH_MEMORY_START,
			     low_end - HIGH_MEMORY_START, E820_RAM);
	if (mem_size > MMIO_HOLE_START)
		n = e820_add(out, n, max, MMIO_HOLE_END,
			     mem_size - MMIO_HOLE_START, E820_RAM);
	return n;
}

void *machine_gpa_to_hva(const struct machine *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->n_regions; i++) {
		const struct mem_region *r = &m->regions[i];

		if (gpa >= r->gpa && gpa - r->gpa <= r->size &&
		    len <= r->size - (gpa - r->gpa))
			return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

int machine_write_guest(struct machine *m, uint64_t gpa, const void *buf,
			size_t len)
{
	void *hva = machine_gpa_to_hva(m, gpa, len);

	if (!hva)
		return -EFAULT;
	memcpy(hva, buf, len);
	return 0;
}

int machine_load_file(struct machine *m, const char *path, uint64_t gpa,
		      size_t *len_out)
{
	struct stat st;
	void *hva;
	ssize_t got;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	hva = machine_gpa_to_hva(m, gpa, (uint64_t)st.st_size);
	if (!hva) {
		ret = -EFBIG;
		goto out;
	}
	got = ember_read_full(fd, hva, (size_t)st.st_size);
	if (got < 0) {
		ret = (int)got;
		goto out;
	}
	if (len_out)
		*len_out = (size_t)got;
	ret = 0;
out:
	close(fd);
	return ret;
}
