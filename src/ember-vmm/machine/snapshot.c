/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Snapshots of the machine: the vmstate (include/ember/vmstate.h) read from
 * and written to KVM and the devices, guest memory written to a memory file
 * (full, or only the pages dirtied since the last snapshot), and guest
 * memory brought back from a file (private mapping) or a page server
 * (userfaultfd, Firecracker's handshake).
 *
 * Restore order, per vCPU, and why:
 *
 *   sregs       first: EFER, CR0/CR4 and the APIC base (which enables the
 *               LAPIC the later steps fill)
 *   regs, FPU, XSAVE (supersedes the FPU), XCRs
 *   MSRs        all but IA32_TSC_DEADLINE, IA32_TSC first: every MSR and
 *               the LAPIC timer that depends on the TSC sees the guest's
 *               TSC, not the new VM's
 *   LAPIC       registers, LVT timer mode included
 *   TSC_DEADLINE  last of the MSRs: KVM drops a deadline written while the
 *               LVT timer is not in TSC-deadline mode, and it counts in
 *               the restored TSC (the wrong order left guest processes
 *               hung after restore in Firecracker)
 *   MP state, vCPU events (pending exceptions, NMIs, interrupt shadow),
 *   debug registers
 *
 * The VM before its vCPUs: PIT, PIC master and slave, IOAPIC; kvmclock
 * last, just before the vCPUs may run, so guest time continues from the
 * snapshot's.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "ember/log.h"
#include "ember/uffd.h"
#include "ember/util.h"
#include "ember/vmstate.h"
#include "machine.h"

#define MLOG_ID(m) ((m)->id[0] ? (m)->id : NULL)
#define PAGE 4096ULL
#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MAX_MSR_INDICES 1024

void machine_set_dev_state(struct machine *m,
			   int (*save)(void *opaque, uint8_t **buf,
				       size_t *len),
			   int (*restore)(void *opaque, const uint8_t *buf,
					  size_t len))
{
	if (!m->n_devs)
		return;
	m->devs[m->n_devs - 1]->save = save;
	m->devs[m->n_devs - 1]->restore = restore;
}

void machine_mark_dirty(struct machine *m, uint64_t gpa, uint64_t len)
{
	if (!m->track_dirty_pages || !len)
		return;
	for (unsigned i = 0; i < m->n_regions; i++) {
		const struct mem_region *r = &m->regions[i];
		uint64_t first, last;

		if (gpa + len <= r->gpa || gpa >= r->gpa + r->size)
			continue;
		first = (gpa > r->gpa ? gpa - r->gpa : 0) / PAGE;
		last = (gpa + len < r->gpa + r->size ? gpa + len - r->gpa
						       : r->size) - 1;
		last /= PAGE;
		for (uint64_t p = first; p <= last; p++)
			__atomic_fetch_or(&m->vmm_dirty[i][p / 64],
					  1ULL << (p % 64), __ATOMIC_RELAXED);
	}
}

/* ---- saving ---- */

/* The MSRs KVM reports that can be read on this vCPU, IA32_TSC first and
 * IA32_TSC_DEADLINE last (the restore order needs both there). */
static int read_msrs(struct machine *m, int vcpu_fd,
		     struct vmstate_vcpu *out)
{
	struct kvm_msr_list *list;
	struct kvm_msrs *msrs = NULL;
	unsigned n = 0;
	int ret = 0;

	list = calloc(1, sizeof(*list) + MAX_MSR_INDICES * sizeof(uint32_t));
	if (!list)
		return -ENOMEM;
	list->nmsrs = MAX_MSR_INDICES;
	if (ioctl(m->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		ret = -errno;
		olog_error(MLOG_ID(m), "KVM_GET_MSR_INDEX_LIST: %s",
			   strerror(errno));
		goto out;
	}
	msrs = calloc(1, sizeof(*msrs) +
				 (list->nmsrs + 1) * sizeof(msrs->entries[0]));
	out->msrs = calloc(list->nmsrs + 1, sizeof(*out->msrs));
	if (!msrs || !out->msrs) {
		ret = -ENOMEM;
		goto out;
	}
	/* The order: TSC, the others, TSC_DEADLINE. */
	msrs->entries[n++].index = MSR_IA32_TSC;
	for (unsigned i = 0; i < list->nmsrs; i++)
		if (list->indices[i] != MSR_IA32_TSC &&
		    list->indices[i] != MSR_IA32_TSC_DEADLINE)
			msrs->entries[n++].index = list->indices[i];
	for (unsigned i = 0; i < list->nmsrs; i++)
		if (list->indices[i] == MSR_IA32_TSC_DEADLINE)
			msrs->entries[n++].index = MSR_IA32_TSC_DEADLINE;
	/* KVM_GET_MSRS stops at the first MSR it cannot read: skip that
	 * one and go on with the rest. */
	for (unsigned i = 0; i < n;) {
		struct kvm_msrs *part = calloc(1, sizeof(*part) +
						 (n - i) * sizeof(part->entries[0]));
		int got;

		if (!part) {
			ret = -ENOMEM;
			goto out;
		}
		part->nmsrs = n - i;
		memcpy(part->entries, &msrs->entries[i],
		       (n - i) * sizeof(part->entries[0]));
		got = ioctl(vcpu_fd, KVM_GET_MSRS, part);
		if (got < 0) {
			ret = -errno;
			olog_error(MLOG_ID(m), "KVM_GET_MSRS: %s",
				   strerror(errno));
			free(part);
			goto out;
		}
		for (int k = 0; k < got; k++)
			out->msrs[out->n_msrs++] = part->entries[k];
		free(part);
		i += (unsigned)got;
		if (i < n) {
			olog_debug(MLOG_ID(m), "MSR 0x%x cannot be read; skipped",
				   msrs->entries[i].index);
			i++;
		}
	}
out:
	free(msrs);
	free(list);
	return ret;
}

static int save_vcpu(struct machine *m, unsigned index,
		     struct vmstate_vcpu *v)
{
	int fd = m->vcpus[index].fd;
	const char *what;

	if (ioctl(fd, KVM_GET_REGS, &v->regs) < 0) {
		what = "KVM_GET_REGS";
		goto fail;
	}
	if (ioctl(fd, KVM_GET_SREGS, &v->sregs) < 0) {
		what = "KVM_GET_SREGS";
		goto fail;
	}
	if (ioctl(fd, KVM_GET_FPU, &v->fpu) < 0) {
		what = "KVM_GET_FPU";
		goto fail;
	}
	if (ioctl(fd, KVM_GET_XSAVE, &v->xsave) < 0) {
		what = "KVM_GET_XSAVE";
		goto fail;
	}
	if (ioctl(fd, KVM_GET_XCRS, &v->xcrs) < 0) {
		what = "KVM_GET_XCRS";
		goto fail;
	}
	if (ioctl(fd, KVM_GET_LAPIC, &v->lapic) < 0) {
		what = "KVM_GET_LAPIC";
		goto fail;
	}
	if (ioctl(fd, KVM_GET_MP_STATE, &v->mp_state) < 0) {
		what = "KVM_GET_MP_STATE";
		goto fail;
	}
	if (ioctl(fd, KVM_GET_VCPU_EVENTS, &v->events) < 0) {
		what = "KVM_GET_VCPU_EVENTS";
		goto fail;
	}
	if (ioctl(fd, KVM_GET_DEBUGREGS, &v->debugregs) < 0) {
		what = "KVM_GET_DEBUGREGS";
		goto fail;
	}
	return read_msrs(m, fd, v);
fail:
	olog_error(MLOG_ID(m), "vCPU %u: %s: %s", index, what, strerror(errno));
	return -errno;
}

int machine_save_state(struct machine *m, struct vmstate *s, char *err,
		       size_t errlen)
{
	struct vmstate_config *c = &s->config;
	int ret;

	c->vcpu_count = m->vcpu_count;
	c->mem_size = m->mem_size;
	c->smt = m->smt;
	c->track_dirty_pages = m->track_dirty_pages;
	c->n_regions = m->n_regions;
	for (unsigned i = 0; i < m->n_regions; i++)
		c->regions[i] = (struct vmstate_region){
			m->regions[i].gpa, m->regions[i].size,
			m->regions[i].file_offset
		};
	for (unsigned i = 0; i < m->vcpu_count; i++) {
		ret = save_vcpu(m, i, &s->vcpus[i]);
		if (ret) {
			snprintf(err, errlen, "cannot read vCPU %u: %s", i,
				 strerror(-ret));
			return ret;
		}
	}
	s->pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
	s->pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
	s->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
	if (ioctl(m->vm_fd, KVM_GET_CLOCK, &s->clock) < 0 ||
	    ioctl(m->vm_fd, KVM_GET_IRQCHIP, &s->pic_master) < 0 ||
	    ioctl(m->vm_fd, KVM_GET_IRQCHIP, &s->pic_slave) < 0 ||
	    ioctl(m->vm_fd, KVM_GET_IRQCHIP, &s->ioapic) < 0 ||
	    ioctl(m->vm_fd, KVM_GET_PIT2, &s->pit) < 0) {
		ret = -errno;
		olog_error(MLOG_ID(m), "reading the clock, irqchip or PIT: %s",
			   strerror(errno));
		snprintf(err, errlen, "cannot read the VM's clock and interrupt controllers: %s",
			 strerror(-ret));
		return ret;
	}
	/* Only the clock value moves to the new VM. */
	s->clock.flags = 0;
	s->n_devices = m->n_devs;
	for (unsigned i = 0; i < m->n_devs; i++) {
		struct machine_dev *d = m->devs[i];
		uint8_t *buf = NULL;
		size_t len = 0;

		if (d->save) {
			pthread_mutex_lock(&d->lock);
			ret = d->save(d->opaque, &buf, &len);
			pthread_mutex_unlock(&d->lock);
			if (ret) {
				snprintf(err, errlen, "cannot save device %s: %s",
					 d->name, strerror(-ret));
				return ret;
			}
		}
		ret = vmstate_device_set(&s->devices[i], d->name, d->base, buf,
					 len);
		free(buf);
		if (ret) {
			snprintf(err, errlen, "cannot save device %s: %s",
				 d->name, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/* ---- memory ---- */

/* Reads and clears KVM's dirty log of region i into bitmap (one bit per
 * page), ORed with and clearing the VMM's own. */
static int take_dirty_log(struct machine *m, unsigned i, uint64_t *bitmap)
{
	const struct mem_region *r = &m->regions[i];
	size_t words = (r->size / PAGE + 63) / 64;
	struct kvm_dirty_log log = { .slot = r->slot, .dirty_bitmap = bitmap };

	memset(bitmap, 0, words * 8);
	if (ioctl(m->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
		olog_error(MLOG_ID(m), "KVM_GET_DIRTY_LOG slot %u: %s",
			   r->slot, strerror(errno));
		return -errno;
	}
	for (size_t w = 0; w < words; w++)
		bitmap[w] |= __atomic_exchange_n(&m->vmm_dirty[i][w], 0,
						 __ATOMIC_RELAXED);
	return 0;
}

int machine_reset_dirty_log(struct machine *m)
{
	int ret = 0;

	if (!m->track_dirty_pages)
		return 0;
	for (unsigned i = 0; i < m->n_regions && !ret; i++) {
		uint64_t *bm = malloc(((m->regions[i].size / PAGE + 63) / 64) *
				      8);

		if (!bm)
			return -ENOMEM;
		ret = take_dirty_log(m, i, bm);
		free(bm);
	}
	return ret;
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (size_t i = 0; i < PAGE / 8; i++)
		if (w[i])
			return false;
	return true;
}

/* Writes the pages of region r chosen by bitmap (all when NULL), skipping
 * all-zero ones in a full write (the file is sparse). Contiguous pages go
 * out in one write. */
/* TODO(snapshot): with the Uffd backend a full snapshot reads every page
 * through the page server; if it has died, this blocks (no timeout). */
static int write_region(int fd, const struct mem_region *r,
			const uint64_t *bitmap)
{
	uint64_t pages = r->size / PAGE, run_start = 0, run_len = 0;

	for (uint64_t p = 0; p <= pages; p++) {
		bool take = false;

		if (p < pages && bitmap)
			take = bitmap[p / 64] & (1ULL << (p % 64));
		else if (p < pages)
			take = !page_is_zero(r->hva + p * PAGE);
		if (take && !run_len++)
			run_start = p;
		if (!run_len || (take && run_len < 256 && p + 1 < pages))
			continue;
		if (ember_pwrite_full(fd, r->hva + run_start * PAGE,
				      run_len * PAGE,
				      (off_t)(r->file_offset +
					      run_start * PAGE)) < 0)
			return -errno;
		run_len = 0;
	}
	return 0;
}

int machine_write_memory(struct machine *m, const char *path, bool diff,
			 char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	uint64_t *bitmap = NULL;
	int fd, ret = 0;

	if (diff && !m->track_dirty_pages) {
		snprintf(err, errlen,
			 "a Diff snapshot needs track_dirty_pages in the machine configuration");
		return -EINVAL;
	}
	fd = ember_atomic_open(path, tmp, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "memory file %s: %s", path,
			 strerror(-fd));
		return fd;
	}
	if (ftruncate(fd, (off_t)m->mem_size) < 0) {
		ret = -errno;
		goto fail;
	}
	for (unsigned i = 0; i < m->n_regions && !ret; i++) {
		const struct mem_region *r = &m->regions[i];

		if (m->track_dirty_pages) {
			free(bitmap);
			bitmap = malloc(((r->size / PAGE + 63) / 64) * 8);
			if (!bitmap) {
				ret = -ENOMEM;
				break;
			}
			/* Taken for a full snapshot too: creating any
			 * snapshot starts a new dirty log. */
			ret = take_dirty_log(m, i, bitmap);
			if (ret)
				break;
		}
		ret = write_region(fd, r, diff ? bitmap : NULL);
	}
	free(bitmap);
	if (ret)
		goto fail;
	ret = ember_atomic_commit(fd, tmp, path);
	if (ret) {
		snprintf(err, errlen, "memory file %s: %s", path,
			 strerror(-ret));
		return ret;
	}
	return 0;
fail:
	ember_atomic_abort(fd, tmp);
	snprintf(err, errlen, "memory file %s: %s", path, strerror(-ret));
	olog_error(MLOG_ID(m), "writing the memory file %s: %s", path,
		   strerror(-ret));
	return ret;
}

/* ---- restoring ---- */

int machine_check_state(struct machine *m, const struct vmstate *s,
			char *err, size_t errlen)
{
	const struct vmstate_config *c = &s->config;

	if (c->vcpu_count != m->vcpu_count || c->mem_size != m->mem_size ||
	    c->n_regions != m->n_regions) {
		snprintf(err, errlen,
			 "the snapshot's machine (%u vCPUs, %llu bytes) is not this one (%u vCPUs, %llu bytes)",
			 c->vcpu_count, (unsigned long long)c->mem_size,
			 m->vcpu_count, (unsigned long long)m->mem_size);
		return -EINVAL;
	}
	for (unsigned i = 0; i < m->n_regions; i++) {
		const struct mem_region *r = &m->regions[i];

		if (c->regions[i].gpa != r->gpa ||
		    c->regions[i].size != r->size ||
		    c->regions[i].file_offset != r->file_offset) {
			snprintf(err, errlen,
				 "memory slot %u of the snapshot differs from this machine's",
				 i);
			return -EINVAL;
		}
	}
	if (s->n_devices != m->n_devs) {
		snprintf(err, errlen,
			 "the snapshot has %u devices, this machine %u",
			 s->n_devices, m->n_devs);
		return -EINVAL;
	}
	for (unsigned i = 0; i < m->n_devs; i++) {
		const struct vmstate_device *d = &s->devices[i];

		if (strcmp(d->name, m->devs[i]->name) ||
		    d->base != m->devs[i]->base ||
		    (d->len && !m->devs[i]->restore)) {
			snprintf(err, errlen,
				 "device %u of the snapshot (%s at 0x%llx) is not this machine's (%s at 0x%llx)",
				 i, d->name, (unsigned long long)d->base,
				 m->devs[i]->name,
				 (unsigned long long)m->devs[i]->base);
			return -EINVAL;
		}
	}
	return 0;
}

/* Sets MSRs [from, to) of v, skipping (with a debug line) any KVM
 * refuses. */
static int set_msrs(struct machine *m, unsigned index,
		    const struct vmstate_vcpu *v, unsigned from, unsigned to)
{
	struct kvm_msrs *msrs;
	int ret = 0;

	if (from >= to)
		return 0;
	msrs = calloc(1, sizeof(*msrs) + (to - from) * sizeof(msrs->entries[0]));
	if (!msrs)
		return -ENOMEM;
	while (from < to) {
		int n;

		msrs->nmsrs = to - from;
		memcpy(msrs->entries, &v->msrs[from],
		       (to - from) * sizeof(msrs->entries[0]));
		n = ioctl(m->vcpus[index].fd, KVM_SET_MSRS, msrs);
		if (n < 0) {
			ret = -errno;
			olog_error(MLOG_ID(m), "vCPU %u: KVM_SET_MSRS: %s",
				   index, strerror(errno));
			break;
		}
		if ((unsigned)n < to - from)
			olog_debug(MLOG_ID(m), "vCPU %u: MSR 0x%x refused",
				   index, msrs->entries[n].index);
		from += (unsigned)n + 1;
	}
	free(msrs);
	return ret;
}

static int restore_vcpu(struct machine *m, unsigned index,
			const struct vmstate_vcpu *v)
{
	int fd = m->vcpus[index].fd;
	unsigned deadline = v->n_msrs;
	const char *what;
	int ret;

	for (unsigned i = 0; i < v->n_msrs; i++)
		if (v->msrs[i].index == MSR_IA32_TSC_DEADLINE)
			deadline = i;
	if (ioctl(fd, KVM_SET_SREGS, &v->sregs) < 0) {
		what = "KVM_SET_SREGS";
		goto fail;
	}
	if (ioctl(fd, KVM_SET_REGS, &v->regs) < 0) {
		what = "KVM_SET_REGS";
		goto fail;
	}
	if (ioctl(fd, KVM_SET_FPU, &v->fpu) < 0) {
		what = "KVM_SET_FPU";
		goto fail;
	}
	if (ioctl(fd, KVM_SET_XSAVE, &v->xsave) < 0) {
		what = "KVM_SET_XSAVE";
		goto fail;
	}
	if (ioctl(fd, KVM_SET_XCRS, &v->xcrs) < 0) {
		what = "KVM_SET_XCRS";
		goto fail;
	}
	/* IA32_TSC is first in the list (read_msrs). */
	ret = set_msrs(m, index, v, 0, deadline);
	if (ret)
		return ret;
	ret = set_msrs(m, index, v, deadline + 1, v->n_msrs);
	if (ret)
		return ret;
	if (ioctl(fd, KVM_SET_LAPIC, &v->lapic) < 0) {
		what = "KVM_SET_LAPIC";
		goto fail;
	}
	ret = set_msrs(m, index, v, deadline,
		       deadline < v->n_msrs ? deadline + 1 : deadline);
	if (ret)
		return ret;
	if (ioctl(fd, KVM_SET_MP_STATE, &v->mp_state) < 0) {
		what = "KVM_SET_MP_STATE";
		goto fail;
	}
	if (ioctl(fd, KVM_SET_VCPU_EVENTS, &v->events) < 0) {
		what = "KVM_SET_VCPU_EVENTS";
		goto fail;
	}
	if (ioctl(fd, KVM_SET_DEBUGREGS, &v->debugregs) < 0) {
		what = "KVM_SET_DEBUGREGS";
		goto fail;
	}
	return 0;
fail:
	ret = -errno;
	olog_error(MLOG_ID(m), "vCPU %u: %s: %s", index, what, strerror(errno));
	return ret;
}

int machine_restore_state(struct machine *m, const struct vmstate *s,
			  char *err, size_t errlen)
{
	struct kvm_clock_data clock = { .clock = s->clock.clock };
	int ret = machine_check_state(m, s, err, errlen);

	if (ret)
		return ret;
	for (unsigned i = 0; i < m->n_devs; i++) {
		struct machine_dev *d = m->devs[i];

		if (!s->devices[i].len)
			continue;
		pthread_mutex_lock(&d->lock);
		ret = d->restore(d->opaque, s->devices[i].data,
				 s->devices[i].len);
		pthread_mutex_unlock(&d->lock);
		if (ret) {
			snprintf(err, errlen, "device %s: bad state: %s",
				 d->name, strerror(-ret));
			return ret;
		}
	}
	if (ioctl(m->vm_fd, KVM_SET_PIT2, &s->pit) < 0 ||
	    ioctl(m->vm_fd, KVM_SET_IRQCHIP, &s->pic_master) < 0 ||
	    ioctl(m->vm_fd, KVM_SET_IRQCHIP, &s->pic_slave) < 0 ||
	    ioctl(m->vm_fd, KVM_SET_IRQCHIP, &s->ioapic) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot restore the PIT or irqchip: %s",
			 strerror(errno));
		return ret;
	}
	for (unsigned i = 0; i < m->vcpu_count; i++) {
		ret = restore_vcpu(m, i, &s->vcpus[i]);
		if (ret) {
			snprintf(err, errlen, "cannot restore vCPU %u: %s", i,
				 strerror(-ret));
			return ret;
		}
	}
	if (ioctl(m->vm_fd, KVM_SET_CLOCK, &clock) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot restore kvmclock: %s",
			 strerror(errno));
		return ret;
	}
	return 0;
}

int machine_map_memory_file(struct machine *m, const char *path, char *err,
			    size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "memory file %s: %s", path,
			 strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != m->mem_size) {
		snprintf(err, errlen,
			 "memory file %s: %llu bytes, the snapshot's memory is %llu",
			 path, (unsigned long long)st.st_size,
			 (unsigned long long)m->mem_size);
		close(fd);
		return -EINVAL;
	}
	for (unsigned i = 0; i < m->n_regions; i++) {
		struct mem_region *r = &m->regions[i];
		/* Over the anonymous mapping KVM already knows: its slot
		 * follows the new pages (MMU notifiers). */
		void *p = mmap(r->hva, r->size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd,
			       (off_t)r->file_offset);

		if (p == MAP_FAILED) {
			ret = -errno;
			snprintf(err, errlen, "memory file %s: mmap: %s", path,
				 strerror(errno));
			break;
		}
	}
	close(fd);
	return ret;
}

static int open_userfaultfd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int dev;

	if (fd >= 0 || (errno != EPERM && errno != ENOSYS))
		return fd >= 0 ? fd : -errno;
	/* Where the syscall is restricted, /dev/userfaultfd may be open. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -errno;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	close(dev);
	return fd >= 0 ? fd : -errno;
}

static int send_handshake(int sock, const char *json, int uffd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)json, .iov_len = strlen(json) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &uffd, sizeof(int));
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == iov.iov_len ? 0 : -EIO;
}

int machine_connect_uffd(struct machine *m, const char *socket_path,
			 char *err, size_t errlen)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_EVENT_REMOVE };
	struct ember_uffd_region regions[MACHINE_MAX_REGIONS];
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char *json = NULL;
	int uffd, sock = -1, ret;

	if (strlen(socket_path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen, "backend_path %s is too long for a socket",
			 socket_path);
		return -ENAMETOOLONG;
	}
	/* KVM touches guest memory from the kernel (its page-table walks,
	 * kvmclock, the LAPIC page), so UFFD_USER_MODE_ONLY would not
	 * serve its faults: a plain userfaultfd. */
	uffd = open_userfaultfd();
	if (uffd < 0) {
		snprintf(err, errlen, "userfaultfd: %s", strerror(-uffd));
		return uffd;
	}
	if (ioctl(uffd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		snprintf(err, errlen, "UFFDIO_API: %s", strerror(errno));
		goto fail;
	}
	for (unsigned i = 0; i < m->n_regions; i++) {
		struct mem_region *r = &m->regions[i];
		struct uffdio_register reg = {
			.range = { .start = (uint64_t)(uintptr_t)r->hva,
				   .len = r->size },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
			ret = -errno;
			snprintf(err, errlen, "UFFDIO_REGISTER: %s",
				 strerror(errno));
			goto fail;
		}
		regions[i] = (struct ember_uffd_region){
			.base_host_virt_addr = (uint64_t)(uintptr_t)r->hva,
			.size = r->size,
			.offset = r->file_offset,
			.page_size = PAGE,
		};
	}
	json = ember_uffd_format_regions(regions, m->n_regions);
	if (!json) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0 ||
	    connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot connect to the page server at %s: %s",
			 socket_path, strerror(errno));
		goto fail;
	}
	ret = send_handshake(sock, json, uffd);
	if (ret) {
		snprintf(err, errlen, "sending the regions to %s: %s",
			 socket_path, strerror(-ret));
		goto fail;
	}
	close(sock);
	free(json);
	m->uffd = uffd;
	olog_info(MLOG_ID(m), "guest memory served by the page server at %s",
		  socket_path);
	return 0;
fail:
	if (sock >= 0)
		close(sock);
	free(json);
	close(uffd);
	return ret;
}
