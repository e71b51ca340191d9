/* SPDX-License-Identifier: Apache-2.0 */
/* The model-specific registers a Linux guest expects at reset. */
#include "x86.h"

enum {
	MSR_IA32_TSC = 0x10,
	MSR_IA32_SYSENTER_CS = 0x174,
	MSR_IA32_SYSENTER_ESP = 0x175,
	MSR_IA32_SYSENTER_EIP = 0x176,
	MSR_IA32_MISC_ENABLE = 0x1a0,
	MSR_MTRR_DEF_TYPE = 0x2ff,
	MSR_STAR = 0xc0000081,
	MSR_LSTAR = 0xc0000082,
	MSR_CSTAR = 0xc0000083,
	MSR_SYSCALL_MASK = 0xc0000084,
	MSR_KERNEL_GS_BASE = 0xc0000102,
};

#define MISC_ENABLE_FAST_STRING (1ULL << 0)
#define MTRR_ENABLE (1ULL << 11)
#define MTRR_TYPE_WRBACK 6ULL

unsigned msr_boot_entries(struct kvm_msr_entry *out, unsigned max)
{
	static const struct {
		uint32_t index;
		uint64_t data;
	} boot[] = {
		{ MSR_IA32_SYSENTER_CS, 0 },
		{ MSR_IA32_SYSENTER_ESP, 0 },
		{ MSR_IA32_SYSENTER_EIP, 0 },
		{ MSR_STAR, 0 },
		{ MSR_CSTAR, 0 },
		{ MSR_KERNEL_GS_BASE, 0 },
		{ MSR_SYSCALL_MASK, 0 },
		{ MSR_LSTAR, 0 },
		{ MSR_IA32_TSC, 0 },
		{ MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING },
		{ MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRBACK },
	};
	unsigned n = 0;

	for (unsigned i = 0; i < sizeof(boot) / sizeof(boot[0]) && n < max;
	     i++) {
		out[n] = (struct kvm_msr_entry){ .index = boot[i].index,
						 .data = boot[i].data };
		n++;
	}
	return n;
}
