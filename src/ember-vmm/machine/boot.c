/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Linux's 64-bit boot protocol (Documentation/arch/x86/boot.rst): the
 * kernel is entered in long mode at its 64-bit entry point with paging on,
 * an identity map covering the kernel, boot_params and command line, a GDT
 * with __BOOT_CS (0x10) and __BOOT_DS (0x18) flat segments, interrupts off
 * and RSI holding the address of boot_params (the "zero page").
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ember/log.h"
#include "ember/util.h"
#include "x86.h"

#define SETUP_HEADER_OFFSET 0x1f1
#define BOOT_FLAG 0xaa55
#define HDRS_MAGIC 0x53726448 /* "HdrS" */
#define MIN_BOOT_PROTOCOL 0x020c /* xloadflags, 64-bit entry */
#define BZIMAGE_LOAD_GPA HIGH_MEMORY_START
#define BZIMAGE_ENTRY_64 0x200
#define LOADER_TYPE_UNDEFINED 0xff
#define DEFAULT_INITRD_ADDR_MAX 0x37ffffffU
#define KERNEL_ALIGNMENT 0x1000000U
#define MAX_KERNEL_FILE (512ULL << 20)

#define CR0_PE (1ULL << 0)
#define CR0_ET (1ULL << 4)
#define CR0_PG (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
#define PTE_PRESENT 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_PS 0x80ULL

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

int bzimage_parse(const uint8_t *buf, size_t len, struct bzimage_info *out)
{
	const uint8_t *h = buf + SETUP_HEADER_OFFSET;
	unsigned setup_sects;

	memset(out, 0, sizeof(*out));
	/* The header runs to 0x268 for protocol 2.12; jump's second byte
	 * gives its real end (0x202 + byte at 0x201). */
	if (len < 0x268)
		return -EINVAL;
	if (le16(buf + 0x1fe) != BOOT_FLAG || le32(buf + 0x202) != HDRS_MAGIC)
		return -EINVAL;
	out->version = le16(buf + 0x206);
	if (out->version < MIN_BOOT_PROTOCOL)
		return -ENOTSUP;
	out->xloadflags = le16(buf + 0x236);
	if (!(out->xloadflags & XLF_KERNEL_64))
		return -ENOTSUP;
	setup_sects = h[0] ? h[0] : 4;
	out->setup_bytes = (setup_sects + 1) * 512;
	if (out->setup_bytes >= len)
		return -EINVAL;
	out->kernel_offset = out->setup_bytes;
	out->kernel_size = len - out->setup_bytes;
	out->initrd_addr_max = le32(buf + 0x22c);
	out->kernel_alignment = le32(buf + 0x230);
	out->cmdline_size = le32(buf + 0x238);
	out->init_size = le32(buf + 0x260);
	out->header_end = 0x202 + buf[0x201];
	if (out->header_end > 0x290 || out->header_end > len)
		return -EINVAL;
	return 0;
}

uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit)
{
	return ((uint64_t)(base & 0xff000000u) << 32) |
	       ((uint64_t)(flags & 0xf0ffu) << 40) |
	       ((uint64_t)(limit & 0xf0000u) << 32) |
	       ((uint64_t)(base & 0xffffffu) << 16) | (limit & 0xffffu);
}

static struct kvm_segment segment_from_gdt(uint64_t e, uint16_t selector)
{
	struct kvm_segment s = {
		.base = ((e >> 16) & 0xffffff) | (((e >> 56) & 0xff) << 24),
		.limit = (uint32_t)((e & 0xffff) | (((e >> 48) & 0xf) << 16)),
		.selector = selector,
		.type = (e >> 40) & 0xf,
		.present = (e >> 47) & 1,
		.dpl = (e >> 45) & 3,
		.db = (e >> 54) & 1,
		.s = (e >> 44) & 1,
		.l = (e >> 53) & 1,
		.g = (e >> 55) & 1,
		.avl = (e >> 52) & 1,
	};

	if (s.g)
		s.limit = (s.limit << 12) | 0xfff;
	s.unusable = !s.present;
	return s;
}

/* The boot GDT: null, null, code (0x10), data (0x18), TSS (0x20). */
static void boot_gdt(uint64_t gdt[5], enum machine_cpu_mode mode)
{
	gdt[0] = 0;
	gdt[1] = 0;
	gdt[2] = gdt_entry(mode == MACHINE_MODE_LONG ? 0xa09b : 0xc09b, 0,
			   0xfffff);
	gdt[3] = gdt_entry(0xc093, 0, 0xfffff);
	gdt[4] = gdt_entry(0x808b, 0, 0xfffff);
}

int boot_write_tables(struct machine *m)
{
	uint64_t gdt[5], idt = 0;
	uint64_t *pml4, *pdpt, *pd;

	boot_gdt(gdt, MACHINE_MODE_LONG);
	if (machine_write_guest(m, BOOT_GDT_GPA, gdt, sizeof(gdt)) ||
	    machine_write_guest(m, BOOT_IDT_GPA, &idt, sizeof(idt)))
		return -EFAULT;
	pml4 = machine_gpa_to_hva(m, BOOT_PML4_GPA, 4096);
	pdpt = machine_gpa_to_hva(m, BOOT_PDPT_GPA, 4096);
	pd = machine_gpa_to_hva(m, BOOT_PD_GPA, 4 * 4096);
	if (!pml4 || !pdpt || !pd)
		return -EFAULT;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = BOOT_PDPT_GPA | PTE_PRESENT | PTE_RW;
	for (unsigned i = 0; i < 4; i++)
		pdpt[i] = (BOOT_PD_GPA + i * 4096ULL) | PTE_PRESENT | PTE_RW;
	for (unsigned i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | PTE_PRESENT | PTE_RW | PTE_PS;
	return 0;
}

void boot_sregs(struct kvm_sregs *s, enum machine_cpu_mode mode)
{
	uint64_t gdt[5];
	struct kvm_segment code, data;

	if (mode == MACHINE_MODE_REAL) {
		s->cs.selector = 0;
		s->cs.base = 0;
		return;
	}
	boot_gdt(gdt, mode);
	code = segment_from_gdt(gdt[2], BOOT_CS_SELECTOR);
	data = segment_from_gdt(gdt[3], BOOT_DS_SELECTOR);
	s->cs = code;
	s->ds = s->es = s->fs = s->gs = s->ss = data;
	s->tr = segment_from_gdt(gdt[4], BOOT_TSS_SELECTOR);
	s->gdt.base = BOOT_GDT_GPA;
	s->gdt.limit = sizeof(gdt) - 1;
	/* An empty IDT: an exception before the guest loads its own is a
	 * triple fault, which the machine reports with the registers. */
	s->idt.base = BOOT_IDT_GPA;
	s->idt.limit = 0;
	s->cr0 = CR0_PE | CR0_ET;
	s->cr4 = 0;
	s->efer = 0;
	if (mode == MACHINE_MODE_LONG) {
		s->cr0 |= CR0_PG;
		s->cr3 = BOOT_PML4_GPA;
		s->cr4 |= CR4_PAE;
		s->efer |= EFER_LME | EFER_LMA;
	}
}

static int load_elf(struct machine *m, int fd, const char *path,
		    struct boot_kernel *k, char *err, size_t errlen)
{
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	ssize_t got;
	bool entry_found = false;

	got = ember_pread_full(fd, &eh, sizeof(eh), 0);
	if (got != (ssize_t)sizeof(eh) || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_machine != EM_X86_64 || eh.e_phentsize != sizeof(ph) ||
	    eh.e_phnum == 0 || eh.e_phnum > 64) {
		snprintf(err, errlen, "%s: not a 64-bit x86 ELF kernel", path);
		return -EINVAL;
	}
	k->entry = eh.e_entry;
	k->end = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		uint8_t *hva;

		got = ember_pread_full(fd, &ph, sizeof(ph),
				       (off_t)(eh.e_phoff + i * sizeof(ph)));
		if (got != (ssize_t)sizeof(ph)) {
			snprintf(err, errlen, "%s: truncated ELF header", path);
			return -EINVAL;
		}
		if (ph.p_type != PT_LOAD)
			continue;
		hva = machine_gpa_to_hva(m, ph.p_paddr, ph.p_memsz);
		if (!hva || ph.p_filesz > ph.p_memsz ||
		    ph.p_paddr < HIGH_MEMORY_START) {
			snprintf(err, errlen,
				 "%s: segment at 0x%llx (%llu bytes) does not fit in guest memory",
				 path, (unsigned long long)ph.p_paddr,
				 (unsigned long long)ph.p_memsz);
			return -EFBIG;
		}
		got = ember_pread_full(fd, hva, ph.p_filesz,
				       (off_t)ph.p_offset);
		if (got != (ssize_t)ph.p_filesz) {
			snprintf(err, errlen, "%s: truncated segment", path);
			return got < 0 ? (int)got : -EINVAL;
		}
		memset(hva + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
		k->end = EMBER_MAX(k->end, ph.p_paddr + ph.p_memsz);
		/* vmlinux's e_entry is physical; a virtual one is mapped
		 * through the segment that holds it. */
		if (eh.e_entry >= ph.p_vaddr &&
		    eh.e_entry - ph.p_vaddr < ph.p_memsz && !entry_found &&
		    ph.p_vaddr != ph.p_paddr) {
			k->entry = eh.e_entry - ph.p_vaddr + ph.p_paddr;
			entry_found = true;
		}
	}
	if (k->end == 0) {
		snprintf(err, errlen, "%s: no loadable segment", path);
		return -EINVAL;
	}
	k->is_bzimage = false;
	k->initrd_addr_max = DEFAULT_INITRD_ADDR_MAX;
	return 0;
}

static int load_bzimage(struct machine *m, const uint8_t *buf, size_t len,
			const char *path, struct boot_kernel *k, char *err,
			size_t errlen)
{
	struct bzimage_info bz;
	int ret = bzimage_parse(buf, len, &bz);

	if (ret == -ENOTSUP) {
		snprintf(err, errlen,
			 "%s: boot protocol %u.%02u without a 64-bit entry point (need 2.12 or later)",
			 path, bz.version >> 8, bz.version & 0xff);
		return ret;
	}
	if (ret < 0) {
		snprintf(err, errlen, "%s: not a bzImage or ELF kernel", path);
		return ret;
	}
	if (machine_write_guest(m, BZIMAGE_LOAD_GPA, buf + bz.kernel_offset,
				bz.kernel_size)) {
		snprintf(err, errlen, "%s: kernel does not fit in guest memory",
			 path);
		return -EFBIG;
	}
	k->is_bzimage = true;
	k->entry = BZIMAGE_LOAD_GPA + BZIMAGE_ENTRY_64;
	k->end = BZIMAGE_LOAD_GPA + EMBER_MAX(bz.kernel_size,
					      (uint64_t)bz.init_size);
	k->initrd_addr_max = bz.initrd_addr_max ? bz.initrd_addr_max
						 : DEFAULT_INITRD_ADDR_MAX;
	k->setup_header_len = bz.header_end - SETUP_HEADER_OFFSET;
	memcpy(k->setup_header, buf + SETUP_HEADER_OFFSET,
	       k->setup_header_len);
	return 0;
}

int boot_load_kernel(struct machine *m, const char *path,
		     struct boot_kernel *k, char *err, size_t errlen)
{
	uint8_t magic[4];
	char *buf;
	size_t len;
	int fd, ret;

	memset(k, 0, sizeof(*k));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	if (ember_pread_full(fd, magic, 4, 0) == 4 &&
	    memcmp(magic, ELFMAG, SELFMAG) == 0) {
		ret = load_elf(m, fd, path, k, err, errlen);
		close(fd);
		return ret;
	}
	close(fd);
	ret = ember_read_file(path, MAX_KERNEL_FILE, &buf, &len);
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	ret = load_bzimage(m, (uint8_t *)buf, len, path, k, err, errlen);
	free(buf);
	return ret;
}

int boot_load_initrd(struct machine *m, const char *path,
		     const struct boot_kernel *k, uint64_t *gpa,
		     uint64_t *size, char *err, size_t errlen)
{
	uint64_t top = EMBER_MIN((uint64_t)k->initrd_addr_max + 1,
				 EMBER_MIN(m->mem_size, MMIO_HOLE_START));
	struct stat st;
	int fd, ret = 0;
	void *hva;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	*size = (uint64_t)st.st_size;
	if (*size > top || ((top - *size) & ~4095ULL) < k->end) {
		snprintf(err, errlen,
			 "%s: initrd of %llu bytes does not fit in guest memory",
			 path, (unsigned long long)*size);
		ret = -EFBIG;
		goto out;
	}
	*gpa = (top - *size) & ~4095ULL;
	hva = machine_gpa_to_hva(m, *gpa, *size);
	if (!hva || ember_read_full(fd, hva, *size) != (ssize_t)*size) {
		snprintf(err, errlen, "%s: short read", path);
		ret = -EIO;
	}
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int boot_setup_linux(struct machine *m, const struct boot_kernel *k,
		     const char *cmdline, uint64_t initrd_gpa,
		     uint64_t initrd_size)
{
	struct boot_params *bp;
	size_t cmdline_len = strlen(cmdline) + 1;
	int ret;

	if (machine_write_guest(m, BOOT_CMDLINE_GPA, cmdline, cmdline_len))
		return -EFAULT;
	bp = machine_gpa_to_hva(m, BOOT_ZERO_PAGE_GPA, sizeof(*bp));
	if (!bp)
		return -EFAULT;
	memset(bp, 0, sizeof(*bp));
	if (k->is_bzimage)
		memcpy(&bp->hdr, k->setup_header, k->setup_header_len);
	bp->hdr.boot_flag = BOOT_FLAG;
	bp->hdr.header = HDRS_MAGIC;
	bp->hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
	if (!k->is_bzimage)
		bp->hdr.kernel_alignment = KERNEL_ALIGNMENT;
	bp->hdr.cmd_line_ptr = (uint32_t)BOOT_CMDLINE_GPA;
	bp->hdr.cmdline_size = (uint32_t)cmdline_len - 1;
	bp->hdr.ramdisk_image = (uint32_t)initrd_gpa;
	bp->hdr.ramdisk_size = (uint32_t)initrd_size;
	bp->e820_entries = (uint8_t)e820_build(m->mem_size, bp->e820_table,
					       E820_MAX_ENTRIES_ZEROPAGE);

	ret = boot_write_tables(m);
	if (ret < 0)
		return ret;
	ret = machine_set_entry(m, 0, MACHINE_MODE_LONG, k->entry,
				BOOT_STACK_GPA);
	if (ret < 0)
		return ret;
	return machine_set_rsi(m, 0, BOOT_ZERO_PAGE_GPA);
}
