/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The x86 pieces of the machine that are pure logic over buffers, so the
 * unit tests can check them without KVM: memory layout, e820, MP table,
 * bzImage header, CPUID normalisation, the MSRs set at reset.
 */
#ifndef EMBER_VMM_X86_H
#define EMBER_VMM_X86_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <asm/bootparam.h>
#include <linux/kvm.h>

#include "machine.h"

/* Splits mem_size bytes of guest RAM around the 32-bit MMIO hole. Fills
 * gpa/size/slot/file_offset of up to 2 regions; returns how many. */
unsigned memory_layout(uint64_t mem_size, struct mem_region *out);

/* The e820 map for a guest of mem_size bytes: RAM below the EBDA,
 * reserved EBDA and BIOS area up to 1 MiB, RAM from 1 MiB to the hole, RAM
 * above 4 GiB. Returns the number of entries (at most max). */
unsigned e820_build(uint64_t mem_size, struct boot_e820_entry *out,
		    unsigned max);

/* Writes the MP floating pointer and configuration table for ncpus
 * processors (APIC ids 0..ncpus-1, IOAPIC id ncpus), the ISA bus and
 * interrupt entries for ISA IRQs 0-15 and each of the extra irqs into buf,
 * which sits at guest physical address gpa. Returns the bytes used, or
 * -ENOSPC when buf is too small, -EINVAL for a bad count. */
int mptable_build(uint8_t *buf, size_t len, uint64_t gpa, unsigned ncpus,
		  const unsigned *irqs, unsigned n_irqs);
/* Size mptable_build needs. */
size_t mptable_size(unsigned ncpus, unsigned n_irqs);

/* What the loader needs from a bzImage's setup header. */
struct bzimage_info {
	unsigned setup_bytes;	 /* boot sector + setup code */
	uint64_t kernel_offset;	 /* protected-mode kernel in the file */
	uint64_t kernel_size;
	uint16_t version;
	uint32_t initrd_addr_max;
	uint32_t cmdline_size;
	uint32_t kernel_alignment;
	uint32_t init_size;
	uint16_t xloadflags;
	size_t header_end;	 /* setup header bytes to copy from 0x1f1 */
};

/* Parses the setup header of a bzImage (file contents buf, len bytes).
 * -EINVAL for a file that is not a bzImage (too short, no 0xaa55 or
 * "HdrS"), -ENOTSUP for a boot protocol before 2.12 or a kernel without
 * the 64-bit entry point. */
int bzimage_parse(const uint8_t *buf, size_t len, struct bzimage_info *out);

/* Rewrites a copy of KVM's supported CPUID for one vCPU: APIC id, topology
 * (ncpus vCPUs, two threads per core when smt), hypervisor bit, KVM
 * signature, no VMX/SVM, no PMU. */
void cpuid_normalize(struct kvm_cpuid2 *c, unsigned apic_id, unsigned ncpus,
		     bool smt);
/* Leaf 1 ECX bit 24: the LAPIC's TSC-deadline mode. KVM emulates it
 * (KVM_CAP_TSC_DEADLINE_TIMER) but leaves it out of
 * KVM_GET_SUPPORTED_CPUID; the VMM sets it. */
void cpuid_set_tsc_deadline(struct kvm_cpuid2 *c);

/* Fills the MSRs a Linux guest expects at reset. Returns the count. */
unsigned msr_boot_entries(struct kvm_msr_entry *out, unsigned max);

/* Boot GDT entry for (flags, base, limit) as the CPU reads it. */
uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit);

#endif
