/* SPDX-License-Identifier: Apache-2.0 */
/* CPUID normalisation per vCPU on a synthetic supported list. */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "x86.h"

static struct kvm_cpuid2 *supported(void)
{
	const struct kvm_cpuid_entry2 entries[] = {
		{ .function = 0, .eax = 0x1f },
		{ .function = 1, .eax = 0x806f8, .ebx = 0x00000800,
		  .ecx = (1u << 5) | (1u << 0), .edx = 1u << 0 },
		{ .function = 0xa, .eax = 0x07300805, .ebx = 0x7f },
		{ .function = 0xb, .index = 0,
		  .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX },
		{ .function = 0xb, .index = 1,
		  .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX },
		{ .function = 0xb, .index = 2,
		  .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX },
		{ .function = 0x40000000, .eax = 0x40000001 },
		{ .function = 0x40000001, .eax = 0x01000089 },
		{ .function = 0x80000001, .ecx = 1u << 2 },
	};
	size_t n = sizeof(entries) / sizeof(entries[0]);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + sizeof(entries));

	c->nent = (uint32_t)n;
	memcpy(c->entries, entries, sizeof(entries));
	return c;
}

static struct kvm_cpuid_entry2 *leaf(struct kvm_cpuid2 *c, uint32_t fn,
				     uint32_t index)
{
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn &&
		    c->entries[i].index == index)
			return &c->entries[i];
	return NULL;
}

int main(void)
{
	struct kvm_cpuid2 *c = supported();
	struct kvm_cpuid_entry2 *e;

	cpuid_normalize(c, 3, 4, false);
	e = leaf(c, 1, 0);
	CHECK(e->ebx >> 24 == 3);	     /* initial APIC id */
	CHECK(((e->ebx >> 16) & 0xff) == 4); /* logical processors */
	CHECK(((e->ebx >> 8) & 0xff) == 8);  /* CLFLUSH size kept */
	CHECK(e->ecx & (1u << 31));	     /* hypervisor */
	CHECK(!(e->ecx & (1u << 5)));	     /* no VMX */
	CHECK(e->ecx & 1u);		     /* host feature kept */
	CHECK(e->edx & (1u << 28));	     /* HTT: several logical */
	CHECK(!(e->ecx & (1u << 24)));	     /* TSC deadline: not by itself */
	cpuid_set_tsc_deadline(c);
	CHECK(leaf(c, 1, 0)->ecx & (1u << 24));
	CHECK(!(leaf(c, 0xb, 0)->ecx & (1u << 24))); /* leaf 1 only */
	e = leaf(c, 0xa, 0);
	CHECK(e->eax == 0 && e->ebx == 0);   /* no PMU */
	e = leaf(c, 0xb, 0);
	CHECK(e->edx == 3 && e->ebx == 1 && e->eax == 0);
	CHECK(((e->ecx >> 8) & 0xff) == 1); /* SMT level */
	e = leaf(c, 0xb, 1);
	CHECK(e->edx == 3 && e->ebx == 4 && e->eax == 2);
	CHECK(((e->ecx >> 8) & 0xff) == 2); /* core level */
	e = leaf(c, 0xb, 2);
	CHECK(e->edx == 3 && ((e->ecx >> 8) & 0xff) == 0);
	e = leaf(c, 0x40000000, 0);
	CHECK(memcmp(&e->ebx, "KVMK", 4) == 0 &&
	      memcmp(&e->ecx, "VMKV", 4) == 0 && memcmp(&e->edx, "M", 2) == 0);
	CHECK(leaf(c, 0x40000001, 0)->eax == 0x01000089); /* kvmclock kept */
	CHECK(!(leaf(c, 0x80000001, 0)->ecx & (1u << 2))); /* no SVM */
	free(c);

	/* One vCPU: no HTT; two threads per core with smt. */
	c = supported();
	cpuid_normalize(c, 0, 1, false);
	CHECK(!(leaf(c, 1, 0)->edx & (1u << 28)));
	CHECK(leaf(c, 1, 0)->ebx >> 24 == 0);
	free(c);
	c = supported();
	cpuid_normalize(c, 1, 2, true);
	e = leaf(c, 0xb, 0);
	CHECK(e->ebx == 2 && e->eax == 1 && e->edx == 1);
	free(c);
	return test_summary("vmm-machine-cpuid");
}
