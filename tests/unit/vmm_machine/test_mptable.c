/* SPDX-License-Identifier: Apache-2.0 */
/* The MP table: signatures, checksums and the entries Linux reads. */
#include <errno.h>
#include <string.h>

#include "test.h"
#include "x86.h"

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	for (size_t i = 0; i < len; i++)
		s += p[i];
	return s;
}

static void check_table(unsigned ncpus)
{
	static uint8_t buf[4096];
	const unsigned irqs[] = { 5, 6, 7 };
	const uint64_t gpa = 0x9fc00;
	int len = mptable_build(buf, sizeof(buf), gpa, ncpus, irqs, 3);
	const uint8_t *cfg = buf + 16, *p;
	unsigned cpus = 0, bsp = 0, ioapics = 0, intsrc = 0, lint = 0;
	uint16_t cfg_len, count;
	bool irq_seen[24] = { false };

	CHECK(len > 0 && (size_t)len == mptable_size(ncpus, 3));
	if (len <= 0)
		return;
	CHECK(memcmp(buf, "_MP_", 4) == 0);
	CHECK(sum(buf, 16) == 0);
	CHECK(buf[8] == 1 && buf[9] == 4);
	CHECK(*(const uint32_t *)(buf + 4) == gpa + 16);
	CHECK(memcmp(cfg, "PCMP", 4) == 0);
	cfg_len = *(const uint16_t *)(cfg + 4);
	count = *(const uint16_t *)(cfg + 34);
	CHECK(16 + cfg_len == len);
	CHECK(sum(cfg, cfg_len) == 0);
	CHECK(*(const uint32_t *)(cfg + 36) == 0xfee00000);

	p = cfg + 44;
	for (unsigned i = 0; i < count; i++) {
		switch (p[0]) {
		case 0:
			CHECK(p[1] == cpus); /* APIC ids 0..n-1 */
			CHECK(p[3] & 1);
			if (p[3] & 2)
				bsp++;
			cpus++;
			p += 20;
			break;
		case 1:
			CHECK(memcmp(p + 2, "ISA", 3) == 0);
			p += 8;
			break;
		case 2:
			CHECK(p[1] == ncpus);
			CHECK(*(const uint32_t *)(p + 4) == 0xfec00000);
			ioapics++;
			p += 8;
			break;
		case 3:
			CHECK(p[5] == p[7]); /* ISA IRQ n on IOAPIC pin n */
			CHECK(p[6] == ncpus);
			if (p[7] < 24)
				irq_seen[p[7]] = true;
			intsrc++;
			p += 8;
			break;
		case 4:
			lint++;
			p += 8;
			break;
		default:
			CHECK(!"unknown entry type");
			return;
		}
	}
	CHECK(p == cfg + cfg_len);
	CHECK(cpus == ncpus && bsp == 1 && ioapics == 1 && lint == 2);
	CHECK(intsrc == 16 + 3);
	for (unsigned i = 0; i < 16; i++)
		CHECK(irq_seen[i]);
	CHECK(irq_seen[5] && irq_seen[6] && irq_seen[7]);
}

int main(void)
{
	uint8_t small[64];

	check_table(1);
	check_table(2);
	check_table(4);
	check_table(32);
	CHECK(mptable_build(small, sizeof(small), 0x9fc00, 2, NULL, 0) ==
	      -ENOSPC);
	CHECK(mptable_build(small, sizeof(small), 0x9fc00, 0, NULL, 0) ==
	      -EINVAL);
	return test_summary("vmm-machine-mptable");
}
