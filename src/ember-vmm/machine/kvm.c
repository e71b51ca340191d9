/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KVM VM: creation (irqchip, PIT, memory slots, vCPUs with CPUID, MSRs,
 * FPU and LAPIC), the vCPU threads' KVM_RUN loop, the device bus, the end
 * of the guest and teardown.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "ember/log.h"
#include "ember/util.h"
#include "x86.h"

#define KVM_API_VERSION_EXPECTED 12
#define MAX_CPUID_ENTRIES 256
#define MAX_BOOT_MSRS 32

#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_MODE_NMI 0x4
#define APIC_MODE_EXTINT 0x7

#define MLOG_ID(m) ((m)->id[0] ? (m)->id : NULL)

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;

static void kick_handler(int sig)
{
	(void)sig;
}

static void install_kick_handler(void)
{
	struct sigaction sa = { .sa_handler = kick_handler };

	/* No SA_RESTART: KVM_RUN must return EINTR. */
	sigemptyset(&sa.sa_mask);
	sigaction(MACHINE_KICK_SIGNAL, &sa, NULL);
}

static enum machine_end end_of(struct machine *m)
{
	return __atomic_load_n(&m->end, __ATOMIC_ACQUIRE);
}

static int get_supported_cpuid(struct machine *m)
{
	struct kvm_cpuid2 *c;

	c = calloc(1, sizeof(*c) +
			      MAX_CPUID_ENTRIES * sizeof(c->entries[0]));
	if (!c)
		return -ENOMEM;
	c->nent = MAX_CPUID_ENTRIES;
	if (ioctl(m->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
		int ret = -errno;

		olog_error(MLOG_ID(m), "KVM_GET_SUPPORTED_CPUID: %s",
			   strerror(errno));
		free(c);
		return ret;
	}
	/* Without TSC-deadline mode Linux calibrates the LAPIC timer against
	 * the PIT; where time is uneven (the nested host) that check fails,
	 * the LAPIC timer is disabled and every CPU but the first gets its
	 * ticks as IPIs from the PIT's (periodic, no NOHZ). */
	if (ioctl(m->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0)
		cpuid_set_tsc_deadline(c);
	m->supported_cpuid = c;
	return 0;
}

static int setup_cpuid(struct machine *m, struct machine_vcpu *v)
{
	size_t size = sizeof(struct kvm_cpuid2) +
		      m->supported_cpuid->nent *
			      sizeof(m->supported_cpuid->entries[0]);
	struct kvm_cpuid2 *c = malloc(size);
	int ret = 0;

	if (!c)
		return -ENOMEM;
	memcpy(c, m->supported_cpuid, size);
	cpuid_normalize(c, v->index, m->vcpu_count, m->smt);
	if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0) {
		ret = -errno;
		olog_error(MLOG_ID(m), "vCPU %u: KVM_SET_CPUID2: %s", v->index,
			   strerror(errno));
	}
	free(c);
	return ret;
}

static int setup_msrs(struct machine *m, struct machine_vcpu *v)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry entries[MAX_BOOT_MSRS];
	} msrs = { 0 };
	int n;

	msrs.hdr.nmsrs = msr_boot_entries(msrs.entries, MAX_BOOT_MSRS);
	n = ioctl(v->fd, KVM_SET_MSRS, &msrs);
	if (n < 0) {
		n = -errno;
		olog_error(MLOG_ID(m), "vCPU %u: KVM_SET_MSRS: %s", v->index,
			   strerror(errno));
		return n;
	}
	/* KVM stops at the first MSR it refuses; the rest are optional. */
	if ((unsigned)n < msrs.hdr.nmsrs)
		olog_debug(MLOG_ID(m), "vCPU %u: KVM refused MSR 0x%x",
			   v->index, msrs.entries[n].index);
	return 0;
}

static int setup_fpu_lapic(struct machine *m, struct machine_vcpu *v)
{
	struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
	struct kvm_lapic_state lapic;
	uint32_t *lint0 = (uint32_t *)&lapic.regs[APIC_LVT_LINT0];
	uint32_t *lint1 = (uint32_t *)&lapic.regs[APIC_LVT_LINT1];

	if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0) {
		olog_error(MLOG_ID(m), "vCPU %u: KVM_SET_FPU: %s", v->index,
			   strerror(errno));
		return -errno;
	}
	if (ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0) {
		olog_error(MLOG_ID(m), "vCPU %u: KVM_GET_LAPIC: %s", v->index,
			   strerror(errno));
		return -errno;
	}
	*lint0 = (*lint0 & ~0x700u) | (APIC_MODE_EXTINT << 8);
	*lint1 = (*lint1 & ~0x700u) | (APIC_MODE_NMI << 8);
	if (ioctl(v->fd, KVM_SET_LAPIC, &lapic) < 0) {
		olog_error(MLOG_ID(m), "vCPU %u: KVM_SET_LAPIC: %s", v->index,
			   strerror(errno));
		return -errno;
	}
	return 0;
}

static int create_vcpu(struct machine *m, unsigned index)
{
	struct machine_vcpu *v = &m->vcpus[index];
	int mmap_size, ret;

	v->m = m;
	v->index = index;
	v->fd = ioctl(m->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (v->fd < 0) {
		ret = -errno;
		olog_error(MLOG_ID(m), "vCPU %u: KVM_CREATE_VCPU: %s", index,
			   strerror(errno));
		return ret;
	}
	mmap_size = ioctl(m->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < (int)sizeof(struct kvm_run))
		return -EINVAL;
	v->run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE,
		      MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		return -errno;
	}
	v->run_size = (size_t)mmap_size;
	ret = setup_cpuid(m, v);
	if (!ret)
		ret = setup_msrs(m, v);
	if (!ret)
		ret = setup_fpu_lapic(m, v);
	return ret;
}

static int setup_memory(struct machine *m, bool track_dirty)
{
	m->n_regions = memory_layout(m->mem_size, m->regions);
	for (unsigned i = 0; i < m->n_regions; i++) {
		struct mem_region *r = &m->regions[i];
		struct kvm_userspace_memory_region kr;

		r->hva = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
			      0);
		if (r->hva == MAP_FAILED) {
			r->hva = NULL;
			olog_error(MLOG_ID(m), "guest memory of %llu bytes: %s",
				   (unsigned long long)r->size,
				   strerror(errno));
			return -ENOMEM;
		}
		/* Out of core dumps (it is the guest's, and large). VM_DONTDUMP
		 * also keeps the kernel from merging it with a neighbouring
		 * anonymous mapping (malloc's arenas are MAP_NORESERVE too), so
		 * /proc/PID/smaps shows it on its own, named where the kernel
		 * has CONFIG_ANON_VMA_NAME (the memory benchmark reads it). */
		(void)madvise(r->hva, r->size, MADV_DONTDUMP);
		(void)prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, r->hva, r->size,
			    GUEST_MEMORY_NAME);
		r->kvm_flags = track_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0;
		kr = (struct kvm_userspace_memory_region){
			.slot = r->slot,
			.flags = r->kvm_flags,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uint64_t)(uintptr_t)r->hva,
		};
		if (ioctl(m->vm_fd, KVM_SET_USER_MEMORY_REGION, &kr) < 0) {
			olog_error(MLOG_ID(m), "KVM_SET_USER_MEMORY_REGION: %s",
				   strerror(errno));
			return -errno;
		}
	}
	return 0;
}

static int setup_vm(struct machine *m)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	int v;

	m->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (m->kvm_fd < 0) {
		olog_error(MLOG_ID(m), "/dev/kvm: %s", strerror(errno));
		return -errno;
	}
	v = ioctl(m->kvm_fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION_EXPECTED) {
		olog_error(MLOG_ID(m), "KVM API version %d, expected %d", v,
			   KVM_API_VERSION_EXPECTED);
		return -ENOTSUP;
	}
	m->vm_fd = ioctl(m->kvm_fd, KVM_CREATE_VM, 0);
	if (m->vm_fd < 0) {
		olog_error(MLOG_ID(m), "KVM_CREATE_VM: %s", strerror(errno));
		return -errno;
	}
	if (ioctl(m->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_GPA) < 0 ||
	    ioctl(m->vm_fd, KVM_SET_IDENTITY_MAP_ADDR,
		  &(uint64_t){ KVM_IDENTITY_MAP_GPA }) < 0) {
		olog_error(MLOG_ID(m), "KVM TSS/identity map: %s",
			   strerror(errno));
		return -errno;
	}
	if (ioctl(m->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		olog_error(MLOG_ID(m), "KVM_CREATE_IRQCHIP: %s",
			   strerror(errno));
		return -errno;
	}
	if (ioctl(m->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
		olog_error(MLOG_ID(m), "KVM_CREATE_PIT2: %s", strerror(errno));
		return -errno;
	}
	return 0;
}

int machine_create(const struct machine_config *mc, struct machine **out)
{
	struct machine *m;
	int ret;

	*out = NULL;
	if (mc->vcpu_count == 0 || mc->vcpu_count > MACHINE_MAX_VCPUS ||
	    mc->mem_size < (2ULL << 20) || (mc->mem_size & 4095))
		return -EINVAL;
	pthread_once(&kick_once, install_kick_handler);
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	snprintf(m->id, sizeof(m->id), "%s", mc->id ? mc->id : "");
	m->kvm_fd = m->vm_fd = m->exit_fd = m->serial_out_fd = -1;
	m->uffd = -1;
	pthread_mutex_init(&m->pause_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&m->pause_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	for (unsigned i = 0; i < MACHINE_MAX_VCPUS; i++)
		m->vcpus[i].fd = -1;
	m->vcpu_count = mc->vcpu_count;
	m->smt = mc->smt;
	m->mem_size = mc->mem_size;
	m->boot_timer = mc->boot_timer;
	pthread_mutex_init(&m->end_lock, NULL);

	m->exit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->exit_fd < 0) {
		ret = -errno;
		goto fail;
	}
	ret = setup_vm(m);
	if (ret)
		goto fail;
	ret = setup_memory(m, mc->track_dirty_pages);
	if (ret)
		goto fail;
	m->track_dirty_pages = mc->track_dirty_pages;
	for (unsigned i = 0; mc->track_dirty_pages && i < m->n_regions; i++) {
		m->vmm_dirty[i] = calloc((m->regions[i].size / 4096 + 63) / 64,
					 sizeof(uint64_t));
		if (!m->vmm_dirty[i]) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	ret = get_supported_cpuid(m);
	if (ret)
		goto fail;
	for (unsigned i = 0; i < m->vcpu_count; i++) {
		ret = create_vcpu(m, i);
		if (ret)
			goto fail;
	}
	*out = m;
	return 0;
fail:
	machine_destroy(m);
	return ret;
}

int machine_add_device(struct machine *m, const char *name,
		       enum machine_bus bus, uint64_t base, uint64_t len,
		       machine_io_fn io, void (*teardown)(void *opaque),
		       void *opaque)
{
	struct machine_dev *d;

	if (m->n_devs >= MACHINE_MAX_DEVICES)
		return -ENOSPC;
	for (unsigned i = 0; i < m->n_devs; i++) {
		struct machine_dev *o = m->devs[i];

		if (o->bus == bus && base < o->base + o->len &&
		    o->base < base + len) {
			olog_error(MLOG_ID(m), "device %s overlaps %s", name,
				   o->name);
			return -EBUSY;
		}
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->bus = bus;
	d->base = base;
	d->len = len;
	d->io = io;
	d->teardown = teardown;
	d->opaque = opaque;
	pthread_mutex_init(&d->lock, NULL);
	m->devs[m->n_devs++] = d;
	return 0;
}

int machine_alloc_virtio_slot(struct machine *m, uint64_t *gpa, unsigned *irq)
{
	unsigned n = m->n_virtio;

	if (n >= MACHINE_MAX_DEVICES || VIRTIO_IRQ_BASE + n > VIRTIO_IRQ_MAX)
		return -ENOSPC;
	m->virtio[n].gpa = VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_SIZE;
	m->virtio[n].irq = VIRTIO_IRQ_BASE + n;
	m->n_virtio++;
	*gpa = m->virtio[n].gpa;
	*irq = m->virtio[n].irq;
	return 0;
}

int machine_set_irq(struct machine *m, unsigned irq, bool level)
{
	struct kvm_irq_level l = { .irq = irq, .level = level ? 1 : 0 };

	if (ioctl(m->vm_fd, KVM_IRQ_LINE, &l) < 0)
		return -errno;
	return 0;
}

int machine_pulse_irq(struct machine *m, unsigned irq)
{
	int ret = machine_set_irq(m, irq, true);

	if (!ret)
		ret = machine_set_irq(m, irq, false);
	return ret;
}

int machine_set_entry(struct machine *m, unsigned index,
		      enum machine_cpu_mode mode, uint64_t rip, uint64_t rsp)
{
	struct machine_vcpu *v = &m->vcpus[index];
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rflags = 2, .rip = rip, .rsp = rsp,
				 .rbp = rsp };
	int ret;

	if (index >= m->vcpu_count)
		return -EINVAL;
	if (mode == MACHINE_MODE_LONG) {
		ret = boot_write_tables(m);
		if (ret)
			return ret;
	}
	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	boot_sregs(&sregs, mode);
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0 ||
	    ioctl(v->fd, KVM_SET_REGS, &regs) < 0) {
		olog_error(MLOG_ID(m), "vCPU %u: setting registers: %s", index,
			   strerror(errno));
		return -errno;
	}
	if (index > 0) {
		struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };

		if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
			return -errno;
	}
	return 0;
}

int machine_set_rsi(struct machine *m, unsigned index, uint64_t rsi)
{
	struct kvm_regs regs;
	int fd = m->vcpus[index].fd;

	if (ioctl(fd, KVM_GET_REGS, &regs) < 0)
		return -errno;
	regs.rsi = rsi;
	if (ioctl(fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}

static void bus_access(struct machine *m, enum machine_bus bus,
		       uint64_t addr, uint8_t *data, unsigned len,
		       bool is_write)
{
	if (!is_write)
		memset(data, 0xff, len);
	for (unsigned i = 0; i < m->n_devs; i++) {
		struct machine_dev *d = m->devs[i];

		if (d->bus != bus || addr < d->base || addr - d->base >= d->len)
			continue;
		pthread_mutex_lock(&d->lock);
		d->io(d->opaque, addr - d->base, data, len, is_write);
		pthread_mutex_unlock(&d->lock);
		return;
	}
	olog_debug(MLOG_ID(m), "%s %s of %u bytes at 0x%llx: no device",
		   bus == MACHINE_BUS_PIO ? "port" : "MMIO",
		   is_write ? "write" : "read", len, (unsigned long long)addr);
}

/* Guest physical address of a guest virtual one, through the guest's
 * 4-level page tables (for the crash dump only). */
static bool translate(struct machine *m, const struct kvm_sregs *s,
		      uint64_t va, uint64_t *pa)
{
	uint64_t table = s->cr3 & ~0xfffULL;

	if (!(s->cr0 & (1ULL << 31))) {
		*pa = va;
		return true;
	}
	if (!(s->efer & (1ULL << 10)))
		return false; /* 32-bit paging: not needed for a dump */
	for (int level = 3; level >= 0; level--) {
		unsigned idx = (va >> (12 + 9 * level)) & 511;
		uint64_t *e = machine_gpa_to_hva(m, table + idx * 8, 8);

		if (!e || !(*e & 1))
			return false;
		if (level > 0 && level < 3 && (*e & 0x80)) {
			uint64_t size = 1ULL << (12 + 9 * level);

			*pa = (*e & 0x000ffffffffff000ULL & ~(size - 1)) |
			      (va & (size - 1));
			return true;
		}
		table = *e & 0x000ffffffffff000ULL;
	}
	*pa = table | (va & 0xfff);
	return true;
}

/*
 * Logs a vCPU's registers and the bytes at RIP. On AMD hosts KVM resets the
 * vCPU to its power-on state before reporting a triple fault
 * (KVM_EXIT_SHUTDOWN), so a dump after one shows RIP=0xfff0 and CS base
 * 0xffff0000: that is not a sign that the guest asked for a reboot.
 */
void machine_dump_vcpu(struct machine *m, unsigned index)
{
	struct machine_vcpu *v = &m->vcpus[index];
	struct kvm_regs r;
	struct kvm_sregs s;
	char bytes[16 * 3 + 1] = "";
	uint64_t pa;
	uint8_t *code;

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 ||
	    ioctl(v->fd, KVM_GET_SREGS, &s) < 0) {
		olog_error(MLOG_ID(m), "vCPU %u: cannot read registers: %s",
			   index, strerror(errno));
		return;
	}
	olog_error(MLOG_ID(m),
		   "vCPU %u: RIP=0x%llx RSP=0x%llx RFLAGS=0x%llx RAX=0x%llx RBX=0x%llx RCX=0x%llx RDX=0x%llx RSI=0x%llx RDI=0x%llx RBP=0x%llx",
		   index, r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx,
		   r.rsi, r.rdi, r.rbp);
	olog_error(MLOG_ID(m),
		   "vCPU %u: CR0=0x%llx CR2=0x%llx CR3=0x%llx CR4=0x%llx EFER=0x%llx CS=0x%x base 0x%llx DS base 0x%llx SS base 0x%llx FS base 0x%llx GS base 0x%llx GDT 0x%llx/%u IDT 0x%llx/%u",
		   index, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector,
		   s.cs.base, s.ds.base, s.ss.base, s.fs.base, s.gs.base,
		   s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
	if (translate(m, &s, s.cs.base + r.rip, &pa) &&
	    (code = machine_gpa_to_hva(m, pa, 16)) != NULL) {
		for (int i = 0; i < 16; i++)
			snprintf(bytes + i * 3, 4, "%02x ", code[i]);
		olog_error(MLOG_ID(m), "vCPU %u: bytes at RIP (0x%llx): %s",
			   index, (unsigned long long)pa, bytes);
	} else {
		olog_error(MLOG_ID(m), "vCPU %u: RIP is not in guest memory",
			   index);
	}
}

/* Handles one exit. Returns false when the vCPU must stop. */
static bool handle_exit(struct machine_vcpu *v)
{
	struct machine *m = v->m;
	struct kvm_run *run = v->run;

	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		uint8_t *data = (uint8_t *)run + run->io.data_offset;

		for (uint32_t i = 0; i < run->io.count; i++) {
			bus_access(m, MACHINE_BUS_PIO, run->io.port, data,
				   run->io.size,
				   run->io.direction == KVM_EXIT_IO_OUT);
			data += run->io.size;
		}
		return true;
	}
	case KVM_EXIT_MMIO:
		bus_access(m, MACHINE_BUS_MMIO, run->mmio.phys_addr,
			   run->mmio.data, run->mmio.len, run->mmio.is_write);
		return true;
	case KVM_EXIT_HLT:
		/* Only without an in-kernel LAPIC; not our case. */
		return true;
	case KVM_EXIT_SHUTDOWN:
		olog_error(MLOG_ID(m), "vCPU %u: triple fault (shutdown)",
			   v->index);
		machine_dump_vcpu(m, v->index);
		machine_end(m, MACHINE_END_CRASH);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		olog_error(MLOG_ID(m),
			   "vCPU %u: entry failed, hardware reason 0x%llx",
			   v->index,
			   (unsigned long long)run->fail_entry
				   .hardware_entry_failure_reason);
		machine_dump_vcpu(m, v->index);
		machine_end(m, MACHINE_END_CRASH);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		olog_error(MLOG_ID(m), "vCPU %u: KVM internal error, suberror %u",
			   v->index, run->internal.suberror);
		machine_dump_vcpu(m, v->index);
		machine_end(m, MACHINE_END_CRASH);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_RESET:
			olog_info(MLOG_ID(m), "guest reset");
			machine_end(m, MACHINE_END_RESET);
			return false;
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			olog_info(MLOG_ID(m), "guest powered off");
			machine_end(m, MACHINE_END_POWEROFF);
			return false;
		default:
			olog_error(MLOG_ID(m), "vCPU %u: system event %u",
				   v->index, run->system_event.type);
			machine_dump_vcpu(m, v->index);
			machine_end(m, MACHINE_END_CRASH);
			return false;
		}
	default:
		olog_error(MLOG_ID(m), "vCPU %u: unexpected exit reason %u",
			   v->index, run->exit_reason);
		machine_dump_vcpu(m, v->index);
		machine_end(m, MACHINE_END_CRASH);
		return false;
	}
}

/* Parks a vCPU while a pause is requested. A KVM_RUN with immediate_exit
 * set first completes an I/O or MMIO exit the vCPU was in (KVM finishes
 * the instruction without running the guest), so the state a snapshot
 * reads is between two instructions. */
static void vcpu_park(struct machine_vcpu *v)
{
	struct machine *m = v->m;

	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELEASE);
	while (ioctl(v->fd, KVM_RUN, 0) == 0)
		if (!handle_exit(v)) /* not expected: EINTR comes first */
			break;
	pthread_mutex_lock(&m->pause_lock);
	m->n_parked++;
	pthread_cond_broadcast(&m->pause_cond);
	while (m->pause_requested && end_of(m) == MACHINE_RUNNING)
		pthread_cond_wait(&m->pause_cond, &m->pause_lock);
	m->n_parked--;
	pthread_mutex_unlock(&m->pause_lock);
	/* machine_end sets immediate_exit under end_lock: keep its mark. */
	pthread_mutex_lock(&m->end_lock);
	if (end_of(m) == MACHINE_RUNNING)
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&m->end_lock);
}

static bool pause_requested(struct machine *m)
{
	return __atomic_load_n(&m->pause_requested, __ATOMIC_ACQUIRE);
}

/* After an EINTR: a pause kick that a resume overtook before this vCPU
 * parked leaves immediate_exit set; clear it unless a pause or the end
 * still wants the vCPU out. */
static void vcpu_clear_stale_kick(struct machine_vcpu *v)
{
	struct machine *m = v->m;
	int saved = errno;

	pthread_mutex_lock(&m->pause_lock);
	if (!m->pause_requested) {
		pthread_mutex_lock(&m->end_lock);
		if (end_of(m) == MACHINE_RUNNING)
			__atomic_store_n(&v->run->immediate_exit, 0,
					 __ATOMIC_RELEASE);
		pthread_mutex_unlock(&m->end_lock);
	}
	pthread_mutex_unlock(&m->pause_lock);
	errno = saved;
}

/* The time from a snapshot load request to vCPU 0's first KVM_RUN after
 * it: taken here, right before the ioctl; the guest's next instruction
 * runs inside it. */
static void log_first_run(struct machine *m)
{
	uint64_t now = ember_now_ns();
	uint64_t since = __atomic_exchange_n(&m->first_run_since_ns, 0,
					     __ATOMIC_RELAXED);

	if (since && now >= since)
		olog_info(MLOG_ID(m),
			  "snapshot load: vCPU 0 entered KVM_RUN %llu us after the load request",
			  (unsigned long long)((now - since) / 1000));
}

static void *vcpu_thread(void *arg)
{
	struct machine_vcpu *v = arg;
	struct machine *m = v->m;
	bool stopped_itself = false;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, MACHINE_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	while (end_of(m) == MACHINE_RUNNING) {
		if (pause_requested(m)) {
			vcpu_park(v);
			continue;
		}
		if (v->index == 0 &&
		    __atomic_load_n(&m->first_run_since_ns, __ATOMIC_RELAXED))
			log_first_run(m);
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				vcpu_clear_stale_kick(v);
			if (errno == EINTR || errno == EAGAIN)
				continue;
			olog_error(MLOG_ID(m), "vCPU %u: KVM_RUN: %s", v->index,
				   strerror(errno));
			machine_dump_vcpu(m, v->index);
			machine_end(m, MACHINE_END_CRASH);
			stopped_itself = true;
			break;
		}
		if (!handle_exit(v)) {
			stopped_itself = true;
			break;
		}
	}
	/* Another vCPU crashed: where this one was is evidence too (on AMD
	 * the crashed one's registers are already reset, see
	 * machine_dump_vcpu); it left KVM_RUN through the kick, between two
	 * guest instructions. */
	if (!stopped_itself && end_of(m) == MACHINE_END_CRASH) {
		olog_error(MLOG_ID(m), "vCPU %u was running when the guest crashed:",
			   v->index);
		machine_dump_vcpu(m, v->index);
	}
	pthread_mutex_lock(&m->pause_lock);
	m->n_active--;
	pthread_cond_broadcast(&m->pause_cond);
	pthread_mutex_unlock(&m->pause_lock);
	return NULL;
}

int machine_start(struct machine *m)
{
	sigset_t block, old;
	int ret = 0;

	if (m->started)
		return -EALREADY;
	m->started = true;
	m->start_ns = ember_now_ns();
	/* The threads start with the kick signal blocked and unblock it
	 * themselves, so it never reaches another thread of the process. */
	sigemptyset(&block);
	sigaddset(&block, MACHINE_KICK_SIGNAL);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (unsigned i = 0; i < m->vcpu_count; i++) {
		struct machine_vcpu *v = &m->vcpus[i];

		pthread_mutex_lock(&m->pause_lock);
		m->n_active++;
		pthread_mutex_unlock(&m->pause_lock);
		ret = -pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (ret) {
			pthread_mutex_lock(&m->pause_lock);
			m->n_active--;
			pthread_mutex_unlock(&m->pause_lock);
			olog_error(MLOG_ID(m), "vCPU %u: thread: %s", i,
				   strerror(-ret));
			break;
		}
		v->thread_started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		machine_end(m, MACHINE_END_CRASH);
	return ret;
}

static void kick_vcpus(struct machine *m)
{
	for (unsigned i = 0; i < m->vcpu_count; i++) {
		struct machine_vcpu *v = &m->vcpus[i];

		if (v->run)
			__atomic_store_n(&v->run->immediate_exit, 1,
					 __ATOMIC_RELEASE);
		if (v->thread_started)
			pthread_kill(v->thread, MACHINE_KICK_SIGNAL);
	}
}

void machine_end(struct machine *m, enum machine_end why)
{
	bool first = false;

	pthread_mutex_lock(&m->end_lock);
	if (m->end == MACHINE_RUNNING) {
		__atomic_store_n(&m->end, why, __ATOMIC_RELEASE);
		first = true;
		kick_vcpus(m);
	}
	pthread_mutex_unlock(&m->end_lock);
	if (first) {
		/* Parked vCPUs wake up and leave. */
		pthread_mutex_lock(&m->pause_lock);
		pthread_cond_broadcast(&m->pause_cond);
		pthread_mutex_unlock(&m->pause_lock);
	}
	if (first && m->exit_fd >= 0)
		(void)!eventfd_write(m->exit_fd, 1);
}

int machine_pause(struct machine *m)
{
	struct timespec deadline;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += 10;
	pthread_mutex_lock(&m->pause_lock);
	if (end_of(m) != MACHINE_RUNNING) {
		pthread_mutex_unlock(&m->pause_lock);
		return -ESHUTDOWN;
	}
	__atomic_store_n(&m->pause_requested, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&m->pause_lock);
	kick_vcpus(m);
	pthread_mutex_lock(&m->pause_lock);
	while (m->n_parked < m->n_active && end_of(m) == MACHINE_RUNNING &&
	       ret == 0)
		ret = -pthread_cond_timedwait(&m->pause_cond, &m->pause_lock,
					      &deadline);
	if (end_of(m) != MACHINE_RUNNING)
		ret = -ESHUTDOWN;
	pthread_mutex_unlock(&m->pause_lock);
	if (ret == -ETIMEDOUT)
		olog_error(MLOG_ID(m), "pause: a vCPU did not stop in 10 s");
	if (ret)
		machine_resume(m);
	return ret;
}

int machine_resume(struct machine *m)
{
	pthread_mutex_lock(&m->pause_lock);
	__atomic_store_n(&m->pause_requested, false, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&m->pause_cond);
	pthread_mutex_unlock(&m->pause_lock);
	return end_of(m) == MACHINE_RUNNING ? 0 : -ESHUTDOWN;
}

bool machine_is_paused(struct machine *m)
{
	return pause_requested(m);
}

int machine_wait(struct machine *m, int timeout_ms)
{
	struct pollfd p = { .fd = m->exit_fd, .events = POLLIN };
	int n;

	do {
		n = poll(&p, 1, timeout_ms);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ETIMEDOUT;
	return (int)end_of(m);
}

void machine_destroy(struct machine *m)
{
	if (!m)
		return;
	machine_end(m, MACHINE_END_STOPPED);
	for (unsigned i = 0; i < m->vcpu_count; i++) {
		struct machine_vcpu *v = &m->vcpus[i];

		if (v->thread_started) {
			/* A vCPU between its end check and KVM_RUN when
			 * kicked still stops: immediate_exit makes that
			 * KVM_RUN return at once. */
			pthread_join(v->thread, NULL);
			v->thread_started = false;
		}
	}
	for (unsigned i = m->n_devs; i-- > 0;) {
		struct machine_dev *d = m->devs[i];

		if (d->teardown)
			d->teardown(d->opaque);
		pthread_mutex_destroy(&d->lock);
		free(d);
	}
	for (unsigned i = 0; i < MACHINE_MAX_VCPUS; i++) {
		struct machine_vcpu *v = &m->vcpus[i];

		if (v->run)
			munmap(v->run, v->run_size);
		ember_close(&v->fd);
	}
	for (unsigned i = 0; i < m->n_regions; i++)
		if (m->regions[i].hva)
			munmap(m->regions[i].hva, m->regions[i].size);
	free(m->supported_cpuid);
	for (unsigned i = 0; i < MACHINE_MAX_REGIONS; i++)
		free(m->vmm_dirty[i]);
	ember_close(&m->uffd);
	ember_close(&m->vm_fd);
	ember_close(&m->kvm_fd);
	ember_close(&m->exit_fd);
	pthread_mutex_destroy(&m->end_lock);
	pthread_mutex_destroy(&m->pause_lock);
	pthread_cond_destroy(&m->pause_cond);
	free(m);
}
