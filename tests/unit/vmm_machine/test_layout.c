/* SPDX-License-Identifier: Apache-2.0 */
/* Guest memory split around the MMIO hole and the e820 map Linux gets. */
#include "test.h"
#include "x86.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static void small_guest(void)
{
	struct mem_region r[MACHINE_MAX_REGIONS];
	struct boot_e820_entry e[8];
	unsigned n;

	CHECK(memory_layout(128 * MiB, r) == 1);
	CHECK(r[0].gpa == 0 && r[0].size == 128 * MiB && r[0].slot == 0);

	n = e820_build(128 * MiB, e, 8);
	CHECK(n == 3);
	CHECK(e[0].addr == 0 && e[0].size == 0x9fc00 && e[0].type == 1);
	CHECK(e[1].addr == 0x9fc00 && e[1].addr + e[1].size == 0x100000 &&
	      e[1].type == 2);
	CHECK(e[2].addr == 0x100000 && e[2].addr + e[2].size == 128 * MiB &&
	      e[2].type == 1);
}

static void large_guest(void)
{
	struct mem_region r[MACHINE_MAX_REGIONS];
	struct boot_e820_entry e[8];
	uint64_t ram = 0;
	unsigned n;

	CHECK(memory_layout(6 * GiB, r) == 2);
	CHECK(r[0].gpa == 0 && r[0].size == MMIO_HOLE_START);
	CHECK(r[1].gpa == 4 * GiB && r[1].size == 6 * GiB - MMIO_HOLE_START);
	CHECK(r[1].slot == 1 && r[1].file_offset == MMIO_HOLE_START);

	n = e820_build(6 * GiB, e, 8);
	CHECK(n == 4);
	CHECK(e[2].addr + e[2].size == MMIO_HOLE_START);
	CHECK(e[3].addr == 4 * GiB && e[3].type == 1);
	for (unsigned i = 0; i < n; i++) {
		if (e[i].type == 1)
			ram += e[i].size;
		/* Nothing overlaps the MMIO hole. */
		CHECK(e[i].addr + e[i].size <= MMIO_HOLE_START ||
		      e[i].addr >= MMIO_HOLE_END);
	}
	/* All RAM but the EBDA-to-1-MiB area is usable. */
	CHECK(ram == 6 * GiB - (0x100000 - 0x9fc00));
	/* A table too small keeps the first entries only. */
	CHECK(e820_build(6 * GiB, e, 2) == 2);
}

static void exactly_the_hole(void)
{
	struct mem_region r[MACHINE_MAX_REGIONS];

	CHECK(memory_layout(MMIO_HOLE_START, r) == 1);
	CHECK(memory_layout(MMIO_HOLE_START + 4096, r) == 2);
	CHECK(r[1].size == 4096);
}

int main(void)
{
	small_guest();
	large_guest();
	exactly_the_hole();
	return test_summary("vmm-machine-layout");
}
