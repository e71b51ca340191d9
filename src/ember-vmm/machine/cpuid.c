/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPUID for one vCPU, from KVM's supported list (which already leaves out
 * what the host or KVM lacks): the vCPU's APIC id and the topology the MP
 * table announces, the hypervisor bit and KVM's signature leaf, and no
 * nested virtualisation or PMU, which the machine does not offer.
 */
#include <string.h>

#include "x86.h"

/* Leaf 1 bits. */
#define CPUID1_ECX_VMX (1u << 5)
#define CPUID1_ECX_HYPERVISOR (1u << 31)
#define CPUID1_ECX_TSC_DEADLINE (1u << 24)
#define CPUID1_EDX_HTT (1u << 28)
/* Leaf 0x80000001 ECX. */
#define CPUID81_ECX_SVM (1u << 2)
#define CPUID81_ECX_CMP_LEGACY (1u << 1)
/* Leaf 0xb / 0x1f level types. */
#define LEVEL_SMT 1u
#define LEVEL_CORE 2u

static unsigned order_of(unsigned n)
{
	unsigned bits = 0;

	while ((1u << bits) < n)
		bits++;
	return bits;
}

static void topology_leaf(struct kvm_cpuid_entry2 *e, unsigned apic_id,
			  unsigned ncpus, unsigned threads)
{
	e->edx = apic_id;
	switch (e->index) {
	case 0:
		e->eax = order_of(threads);
		e->ebx = threads;
		e->ecx = (LEVEL_SMT << 8) | e->index;
		break;
	case 1:
		e->eax = order_of(ncpus);
		e->ebx = ncpus;
		e->ecx = (LEVEL_CORE << 8) | e->index;
		break;
	default:
		e->eax = 0;
		e->ebx = 0;
		e->ecx = e->index; /* level type 0: invalid */
		break;
	}
}

void cpuid_normalize(struct kvm_cpuid2 *c, unsigned apic_id, unsigned ncpus,
		     bool smt)
{
	unsigned threads = smt && ncpus > 1 ? 2 : 1;
	unsigned cores = (ncpus + threads - 1) / threads;
	unsigned logical_bits = order_of(ncpus);

	for (unsigned i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0xffffu) | (apic_id << 24) |
				 ((1u << logical_bits) << 16);
			if ((e->ebx & 0xff00u) == 0)
				e->ebx |= 8u << 8; /* CLFLUSH line: 64 bytes */
			e->ecx |= CPUID1_ECX_HYPERVISOR;
			e->ecx &= ~CPUID1_ECX_VMX;
			if (ncpus > 1)
				e->edx |= CPUID1_EDX_HTT;
			else
				e->edx &= ~CPUID1_EDX_HTT;
			break;
		case 4: {
			/* Deterministic cache parameters (Intel). */
			unsigned level = (e->eax >> 5) & 7;
			unsigned sharing = level >= 3 ? ncpus : threads;

			if ((e->eax & 0x1f) == 0)
				break; /* no more caches */
			e->eax &= 0x3fffu;
			e->eax |= (sharing - 1) << 14;
			e->eax |= ((1u << order_of(cores)) - 1) << 26;
			break;
		}
		case 0xa:
			/* No PMU. */
			e->eax = e->ebx = e->ecx = e->edx = 0;
			break;
		case 0xb:
		case 0x1f:
			topology_leaf(e, apic_id, ncpus, threads);
			break;
		case 0x40000000:
			e->eax = 0x40000001u;
			memcpy(&e->ebx, "KVMK", 4);
			memcpy(&e->ecx, "VMKV", 4);
			memcpy(&e->edx, "M\0\0\0", 4);
			break;
		case 0x80000001:
			e->ecx &= ~CPUID81_ECX_SVM;
			if (ncpus > 1)
				e->ecx |= CPUID81_ECX_CMP_LEGACY;
			else
				e->ecx &= ~CPUID81_ECX_CMP_LEGACY;
			break;
		case 0x80000008:
			/* AMD: NC (cores - 1) and the APIC id bits. */
			e->ecx &= ~0xf0ffu;
			e->ecx |= (ncpus - 1) | (logical_bits << 12);
			break;
		case 0x8000001e:
			/* AMD: extended APIC id, core id, threads per core. */
			e->eax = apic_id;
			e->ebx = ((threads - 1) << 8) | (apic_id / threads);
			e->ecx = 0;
			break;
		default:
			break;
		}
	}
}

void cpuid_set_tsc_deadline(struct kvm_cpuid2 *c)
{
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == 1)
			c->entries[i].ecx |= CPUID1_ECX_TSC_DEADLINE;
}
