/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vm.h on top of the machine: a Linux microVM. vm_create builds, in order:
 *
 *   1. the KVM VM, guest memory and vCPUs (machine_create)
 *   2. the devices, from the table below (each registers its bus range and
 *      its teardown; virtio devices take the next MMIO window and IRQ)
 *   3. the kernel and initrd in guest memory
 *   4. the command line (boot_args plus one virtio_mmio.device= per virtio
 *      device), the MP table, boot_params and the boot vCPU's registers
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember/log.h"
#include "ember/util.h"
#include "vm.h"
#include "x86.h"

struct vm {
	struct machine *m;
};

static int add_serial(struct machine *m, const struct vm_config *cfg,
			char *err, size_t errlen)
{
	int ret = serial_setup(m, cfg->serial_out_path);

	if (ret)
		snprintf(err, errlen, "serial output %s: %s",
			 cfg->serial_out_path, strerror(-ret));
	return ret;
}

static int add_i8042(struct machine *m, const struct vm_config *cfg,
			char *err, size_t errlen)
{
	(void)cfg;
	return i8042_setup(m);
}

static int add_boot_timer(struct machine *m, const struct vm_config *cfg,
			char *err, size_t errlen)
{
	(void)cfg;
	return boot_timer_setup(m);
}

/* The root device first, so the guest sees it as /dev/vda. */
static int add_drives(struct machine *m, const struct vm_config *cfg,
			char *err, size_t errlen)
{
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < cfg->n_drives; i++) {
			const struct vm_drive *d = &cfg->drives[i];
			int ret;

			if (d->is_root_device != (pass == 0))
				continue;
			ret = virtio_blk_setup(m, d->path_on_host,
					       d->is_read_only, d->drive_id);
			if (ret) {
				snprintf(err, errlen, "drive %s: %s: %s",
					 d->drive_id, d->path_on_host,
					 strerror(-ret));
				return ret;
			}
		}
	}
	return 0;
}

static int add_rng(struct machine *m, const struct vm_config *cfg,
			char *err, size_t errlen)
{
	return cfg->entropy ? virtio_rng_setup(m) : 0;
}

static int add_unsupported(struct machine *m, const struct vm_config *cfg,
			char *err, size_t errlen)
{
	/* TODO(vmm-machine): virtio-net (tap) and virtio-vsock are later
	 * issues; they get an entry in the table below. */
	if (cfg->n_nets)
		olog_warn(m->id, "network interfaces are not supported yet; "
				 "%u ignored", cfg->n_nets);
	if (cfg->vsock.present)
		olog_warn(m->id, "vsock is not supported yet; ignored");
	return 0;
}

/* Every device of the machine, in the order it is built. Teardown runs in
 * the reverse order (each device registers its own with the bus). */
static const struct {
	const char *name;
	int (*add)(struct machine *m, const struct vm_config *cfg, char *err,
		   size_t errlen);
} device_table[] = {
	{ "serial", add_serial },
	{ "i8042", add_i8042 },
	{ "boot-timer", add_boot_timer },
	{ "virtio-blk", add_drives },
	{ "virtio-rng", add_rng },
	{ "virtio-net, virtio-vsock", add_unsupported },
};

static int build_cmdline(const struct machine *m, const struct vm_config *cfg,
			 char *out, size_t len)
{
	size_t used;
	int n;

	if (cfg->boot_args[0])
		n = snprintf(out, len, "%s", cfg->boot_args);
	else
		n = snprintf(out, len, "%s console=ttyS0",
			     VM_DEFAULT_BOOT_ARGS);
	if (n < 0 || (size_t)n >= len)
		return -E2BIG;
	used = (size_t)n;
	/* As Firecracker: the root drive is the first virtio-blk device, so
	 * /dev/vda, unless the boot arguments name a root themselves. */
	for (unsigned i = 0; i < cfg->n_drives; i++) {
		const struct vm_drive *d = &cfg->drives[i];

		if (!d->is_root_device || strstr(out, "root="))
			continue;
		n = snprintf(out + used, len - used, " root=/dev/vda %s",
			     d->is_read_only ? "ro" : "rw");
		if (n < 0 || (size_t)n >= len - used)
			return -E2BIG;
		used += (size_t)n;
	}
	for (unsigned i = 0; i < m->n_virtio; i++) {
		n = snprintf(out + used, len - used,
			     " virtio_mmio.device=4K@0x%llx:%u",
			     (unsigned long long)m->virtio[i].gpa,
			     m->virtio[i].irq);
		if (n < 0 || (size_t)n >= len - used)
			return -E2BIG;
		used += (size_t)n;
	}
	return 0;
}

static int write_mptable(struct machine *m)
{
	unsigned irqs[MACHINE_MAX_DEVICES];
	size_t size = mptable_size(m->vcpu_count, m->n_virtio);
	uint8_t *buf = machine_gpa_to_hva(m, MPTABLE_GPA, size);

	if (!buf || MPTABLE_GPA + size > HIGH_MEMORY_START)
		return -ENOSPC;
	for (unsigned i = 0; i < m->n_virtio; i++)
		irqs[i] = m->virtio[i].irq;
	return mptable_build(buf, size, MPTABLE_GPA, m->vcpu_count, irqs,
			     m->n_virtio) < 0
		       ? -ENOSPC
		       : 0;
}

int vm_create(const struct vm_config *cfg, struct vm **out, char *err,
	      size_t errlen)
{
	struct machine_config mc = {
		.id = cfg->id,
		.vcpu_count = cfg->vcpu_count,
		.mem_size = cfg->mem_size_mib << 20,
		.smt = cfg->smt,
		.track_dirty_pages = cfg->track_dirty_pages,
		.serial_out_path = cfg->serial_out_path,
		.boot_timer = cfg->boot_timer,
	};
	struct boot_kernel k;
	uint64_t initrd_gpa = 0, initrd_size = 0;
	char *cmdline = NULL;
	struct vm *vm;
	int ret;

	*out = NULL;
	if (cfg->vcpu_count < 1 || cfg->vcpu_count > VM_MAX_VCPUS) {
		snprintf(err, errlen, "vcpu_count %u is not within 1..%d",
			 cfg->vcpu_count, VM_MAX_VCPUS);
		return -EINVAL;
	}
	if (cfg->mem_size_mib < 16 || cfg->mem_size_mib > (1ULL << 20)) {
		snprintf(err, errlen, "mem_size_mib %llu is not within 16..%llu",
			 (unsigned long long)cfg->mem_size_mib, 1ULL << 20);
		return -EINVAL;
	}
	vm = calloc(1, sizeof(*vm));
	cmdline = malloc(VM_CMDLINE_MAX);
	if (!vm || !cmdline) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ret = machine_create(&mc, &vm->m);
	if (ret) {
		snprintf(err, errlen, "cannot create the KVM machine: %s",
			 strerror(-ret));
		goto fail;
	}
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(device_table); i++) {
		err[0] = '\0';
		ret = device_table[i].add(vm->m, cfg, err, errlen);
		if (ret) {
			if (!err[0])
				snprintf(err, errlen, "cannot add %s: %s",
					 device_table[i].name, strerror(-ret));
			goto fail;
		}
	}
	ret = boot_load_kernel(vm->m, cfg->kernel_image_path, &k, err, errlen);
	if (ret)
		goto fail;
	if (cfg->initrd_path[0]) {
		ret = boot_load_initrd(vm->m, cfg->initrd_path, &k, &initrd_gpa,
				       &initrd_size, err, errlen);
		if (ret)
			goto fail;
	}
	ret = build_cmdline(vm->m, cfg, cmdline, VM_CMDLINE_MAX);
	if (ret) {
		snprintf(err, errlen,
			 "kernel command line longer than %d bytes",
			 VM_CMDLINE_MAX - 1);
		goto fail;
	}
	ret = write_mptable(vm->m);
	if (!ret)
		ret = boot_setup_linux(vm->m, &k, cmdline, initrd_gpa,
				       initrd_size);
	if (ret) {
		snprintf(err, errlen, "cannot set up the boot: %s",
			 strerror(-ret));
		goto fail;
	}
	olog_debug(cfg->id, "kernel command line: %s", cmdline);
	free(cmdline);
	*out = vm;
	return 0;
fail:
	free(cmdline);
	vm_destroy(vm);
	return ret;
}

int vm_start(struct vm *vm)
{
	return machine_start(vm->m);
}

int vm_send_ctrl_alt_del(struct vm *vm)
{
	return i8042_ctrl_alt_del(vm->m);
}

int vm_exit_fd(const struct vm *vm)
{
	return vm->m->exit_fd;
}

int vm_exit_status(const struct vm *vm)
{
	enum machine_end end = __atomic_load_n(&vm->m->end, __ATOMIC_ACQUIRE);

	return end == MACHINE_END_RESET || end == MACHINE_END_POWEROFF ? 0 : 1;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	machine_destroy(vm->m);
	free(vm);
}
