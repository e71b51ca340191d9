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
#include "virtio_vsock.h"
#include "ember/vmstate.h"
#include "x86.h"

struct vm {
	struct machine *m;
	struct vm_config *cfg; /* what built it, for a snapshot's config */
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

static int add_vsock(struct machine *m, const struct vm_config *cfg,
		     char *err, size_t errlen)
{
	int ret;

	if (!cfg->vsock.present)
		return 0;
	ret = virtio_vsock_setup(m, cfg->vsock.guest_cid, cfg->vsock.uds_path);
	if (ret == -EINVAL)
		snprintf(err, errlen, "vsock: guest_cid %u is not within 3..%u",
			 cfg->vsock.guest_cid, UINT32_MAX - 1);
	else if (ret)
		snprintf(err, errlen, "vsock: %s: %s", cfg->vsock.uds_path,
			 strerror(-ret));
	return ret;
}

/* "aa:bb:cc:dd:ee:ff" (config.c checked it) into 6 bytes. */
static bool parse_mac(const char *text, uint8_t mac[6])
{
	unsigned b[6];

	if (sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2],
		   &b[3], &b[4], &b[5]) != 6)
		return false;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return true;
}

static int add_nets(struct machine *m, const struct vm_config *cfg,
		    char *err, size_t errlen)
{
	for (unsigned i = 0; i < cfg->n_nets; i++) {
		const struct vm_net *n = &cfg->nets[i];
		uint8_t mac[6];
		bool has_mac = n->guest_mac[0] != '\0';
		int ret;

		if (has_mac && !parse_mac(n->guest_mac, mac)) {
			snprintf(err, errlen,
				 "network interface %s: guest_mac %s is not a MAC address",
				 n->iface_id, n->guest_mac);
			return -EINVAL;
		}
		ret = virtio_net_setup(m, n->host_dev_name,
				       has_mac ? mac : NULL);
		if (ret == -ENODEV)
			snprintf(err, errlen,
				 "network interface %s: there is no tap device %s in the VMM's network namespace (create it first, e.g. ip tuntap add %s mode tap)",
				 n->iface_id, n->host_dev_name,
				 n->host_dev_name);
		else if (ret)
			snprintf(err, errlen,
				 "network interface %s: tap device %s: %s",
				 n->iface_id, n->host_dev_name,
				 strerror(-ret));
		if (ret)
			return ret;
	}
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
	{ "virtio-vsock", add_vsock },
	{ "virtio-net", add_nets },
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
	if (vm)
		vm->cfg = malloc(sizeof(*vm->cfg));
	if (!vm || !cmdline || !vm->cfg) {
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
	*vm->cfg = *cfg;
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
	free(vm->cfg);
	free(vm);
}

/* The devices whose threads write guest memory on their own (frames from
 * a tap, data from host vsock sockets) hold it while the VM is paused. */
static void devices_quiesce(struct machine *m, bool on)
{
	virtio_net_quiesce(m, on);
	virtio_vsock_quiesce(m, on);
}

int vm_pause(struct vm *vm)
{
	int ret = machine_pause(vm->m);

	/* Stopped vCPUs alone would still let device threads write guest
	 * memory behind a snapshot's back. */
	if (!ret)
		devices_quiesce(vm->m, true);
	return ret;
}

int vm_resume(struct vm *vm)
{
	int ret = machine_resume(vm->m);

	/* Only a running VM takes device writes again (what waited is
	 * delivered now); a VM that stays paused stays quiet. */
	if (!ret)
		devices_quiesce(vm->m, false);
	return ret;
}

bool vm_is_paused(const struct vm *vm)
{
	return machine_is_paused(vm->m);
}

const struct vm_config *vm_get_config(const struct vm *vm)
{
	return vm->cfg;
}

struct machine *vm_machine(const struct vm *vm)
{
	return vm->m;
}

/* The front end's part of a snapshot's config: what rebuilds the same
 * devices. */
static void config_to_vmstate(const struct vm_config *cfg,
			      struct vmstate_config *c)
{
	c->entropy = cfg->entropy;
	c->n_drives = cfg->n_drives;
	for (unsigned i = 0; i < cfg->n_drives && i < VMSTATE_MAX_DRIVES; i++) {
		struct vmstate_drive *d = &c->drives[i];

		snprintf(d->drive_id, sizeof(d->drive_id), "%s",
			 cfg->drives[i].drive_id);
		snprintf(d->path, sizeof(d->path), "%s",
			 cfg->drives[i].path_on_host);
		d->is_root_device = cfg->drives[i].is_root_device;
		d->is_read_only = cfg->drives[i].is_read_only;
	}
	c->vsock = cfg->vsock.present;
	c->vsock_cid = cfg->vsock.guest_cid;
	snprintf(c->vsock_uds_path, sizeof(c->vsock_uds_path), "%s",
		 cfg->vsock.uds_path);
	c->n_nets = cfg->n_nets;
	for (unsigned i = 0; i < cfg->n_nets && i < VMSTATE_MAX_NETS; i++) {
		struct vmstate_net *n = &c->nets[i];

		snprintf(n->iface_id, sizeof(n->iface_id), "%s",
			 cfg->nets[i].iface_id);
		snprintf(n->host_dev_name, sizeof(n->host_dev_name), "%s",
			 cfg->nets[i].host_dev_name);
		snprintf(n->guest_mac, sizeof(n->guest_mac), "%s",
			 cfg->nets[i].guest_mac);
	}
}

static int config_from_vmstate(const struct vmstate_config *c,
			       const struct vm_snapshot_load *load,
			       struct vm_config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->id, sizeof(cfg->id), "%s", load->id);
	cfg->vcpu_count = c->vcpu_count;
	cfg->mem_size_mib = c->mem_size >> 20;
	cfg->smt = c->smt;
	cfg->track_dirty_pages = load->track_dirty_pages;
	cfg->entropy = c->entropy;
	cfg->n_drives = c->n_drives;
	for (unsigned i = 0; i < c->n_drives && i < VM_MAX_DRIVES; i++) {
		struct vm_drive *d = &cfg->drives[i];

		snprintf(d->drive_id, sizeof(d->drive_id), "%s",
			 c->drives[i].drive_id);
		snprintf(d->path_on_host, sizeof(d->path_on_host), "%s",
			 c->drives[i].path);
		d->is_root_device = c->drives[i].is_root_device;
		d->is_read_only = c->drives[i].is_read_only;
	}
	cfg->vsock.present = c->vsock;
	cfg->vsock.guest_cid = c->vsock_cid;
	snprintf(cfg->vsock.uds_path, sizeof(cfg->vsock.uds_path), "%s",
		 load->vsock_uds_path[0] ? load->vsock_uds_path
					 : c->vsock_uds_path);
	snprintf(cfg->serial_out_path, sizeof(cfg->serial_out_path), "%s",
		 load->serial_out_path);
	cfg->n_nets = c->n_nets;
	for (unsigned i = 0; i < c->n_nets && i < VM_MAX_NETS; i++) {
		struct vm_net *n = &cfg->nets[i];

		snprintf(n->iface_id, sizeof(n->iface_id), "%s",
			 c->nets[i].iface_id);
		snprintf(n->host_dev_name, sizeof(n->host_dev_name), "%s",
			 c->nets[i].host_dev_name);
		snprintf(n->guest_mac, sizeof(n->guest_mac), "%s",
			 c->nets[i].guest_mac);
	}
	/* network_overrides: another tap for an interface the guest
	 * knows (its MAC stays). */
	for (unsigned o = 0; o < load->n_net_overrides; o++) {
		const struct vm_net_override *ov = &load->net_overrides[o];
		unsigned i;

		for (i = 0; i < cfg->n_nets; i++)
			if (!strcmp(cfg->nets[i].iface_id, ov->iface_id))
				break;
		if (i == cfg->n_nets) {
			snprintf(err, errlen,
				 "network_overrides: the snapshot has no network interface %s",
				 ov->iface_id);
			return -EINVAL;
		}
		snprintf(cfg->nets[i].host_dev_name,
			 sizeof(cfg->nets[i].host_dev_name), "%s",
			 ov->host_dev_name);
	}
	return 0;
}

int vm_snapshot_create(struct vm *vm, enum vm_snapshot_type type,
		       const char *snapshot_path, const char *mem_file_path,
		       char *err, size_t errlen)
{
	struct vmstate *s;
	int ret;

	if (!machine_is_paused(vm->m)) {
		snprintf(err, errlen, "the VM must be paused to snapshot it");
		return -EBUSY;
	}
	s = vmstate_new();
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* The guest's vsock connections do not survive the move: it hears
	 * so before its state is taken (the event is in the snapshot, or,
	 * when the driver has no event buffer posted, in the device's saved
	 * state, delivered as soon as it posts one). */
	virtio_vsock_transport_reset(vm->m);
	ret = machine_save_state(vm->m, s, err, errlen);
	if (ret)
		goto out;
	config_to_vmstate(vm->cfg, &s->config);
	ret = machine_write_memory(vm->m, mem_file_path,
				   type == VM_SNAPSHOT_DIFF, err, errlen);
	if (ret)
		goto out;
	ret = vmstate_write_file(snapshot_path, s);
	if (ret) {
		snprintf(err, errlen, "snapshot file %s: %s", snapshot_path,
			 strerror(-ret));
		olog_error(vm->cfg->id, "writing %s: %s", snapshot_path,
			   strerror(-ret));
		goto out;
	}
	olog_info(vm->cfg->id, "%s snapshot written to %s (memory %s)",
		  type == VM_SNAPSHOT_DIFF ? "diff" : "full", snapshot_path,
		  mem_file_path);
out:
	vmstate_free(s);
	return ret;
}

int vm_snapshot_load(const struct vm_snapshot_load *load, struct vm **out,
		     char *err, size_t errlen)
{
	char why[256], msg[512];
	struct machine_config mc = { 0 };
	struct vmstate *s = NULL;
	struct vm *vm = NULL;
	uint64_t t[6]; /* phase times for the debug line */
	int ret;

	*out = NULL;
	t[0] = ember_now_ns();
	ret = vmstate_read_file(load->snapshot_path, &s, why, sizeof(why));
	if (ret) {
		snprintf(err, errlen, "snapshot file %s: %s",
			 load->snapshot_path, why);
		return ret == -EBADMSG ? -EINVAL : ret;
	}
	vm = calloc(1, sizeof(*vm));
	if (vm)
		vm->cfg = malloc(sizeof(*vm->cfg));
	if (!vm || !vm->cfg) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ret = config_from_vmstate(&s->config, load, vm->cfg, msg,
				  sizeof(msg));
	if (ret) {
		snprintf(err, errlen, "%s", msg);
		goto fail;
	}
	mc = (struct machine_config){
		.id = vm->cfg->id,
		.vcpu_count = s->config.vcpu_count,
		.mem_size = s->config.mem_size,
		.smt = s->config.smt,
		.track_dirty_pages = load->track_dirty_pages,
		.serial_out_path = vm->cfg->serial_out_path,
	};
	t[1] = ember_now_ns();
	ret = machine_create(&mc, &vm->m);
	if (ret) {
		snprintf(err, errlen, "cannot create the KVM machine: %s",
			 strerror(-ret));
		goto fail;
	}
	t[2] = ember_now_ns();
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(device_table); i++) {
		msg[0] = '\0';
		ret = device_table[i].add(vm->m, vm->cfg, msg, sizeof(msg));
		if (ret) {
			snprintf(err, errlen, "snapshot %s: %s",
				 load->snapshot_path,
				 msg[0] ? msg : strerror(-ret));
			goto fail;
		}
	}
	/* Paused until resumed: no frame or vsock packet reaches the guest
	 * before. */
	devices_quiesce(vm->m, true);
	ret = machine_check_state(vm->m, s, msg, sizeof(msg));
	if (ret) {
		snprintf(err, errlen, "snapshot file %s: %s",
			 load->snapshot_path, msg);
		goto fail;
	}
	t[3] = ember_now_ns();
	if (load->backend == VM_MEM_FILE)
		ret = machine_map_memory_file(vm->m, load->backend_path, msg,
					      sizeof(msg));
	else
		ret = machine_connect_uffd(vm->m, load->backend_path, msg,
					   sizeof(msg));
	if (ret) {
		snprintf(err, errlen, "%s", msg);
		goto fail;
	}
	t[4] = ember_now_ns();
	ret = machine_restore_state(vm->m, s, msg, sizeof(msg));
	if (ret) {
		snprintf(err, errlen, "snapshot file %s: %s",
			 load->snapshot_path, msg);
		goto fail;
	}
	t[5] = ember_now_ns();
	olog_debug(vm->cfg->id,
		   "snapshot load: vmstate %llu us, machine %llu us, devices %llu us, memory %llu us, state %llu us",
		   (unsigned long long)(t[1] - t[0]) / 1000,
		   (unsigned long long)(t[2] - t[1]) / 1000,
		   (unsigned long long)(t[3] - t[2]) / 1000,
		   (unsigned long long)(t[4] - t[3]) / 1000,
		   (unsigned long long)(t[5] - t[4]) / 1000);
	if (load->resume_vm)
		vm->m->first_run_since_ns = load->request_ns;
	ret = machine_pause(vm->m);
	if (!ret)
		ret = machine_start(vm->m);
	if (!ret && load->resume_vm)
		ret = vm_resume(vm);
	if (ret) {
		snprintf(err, errlen, "cannot start the vCPUs: %s",
			 strerror(-ret));
		goto fail;
	}
	olog_info(vm->cfg->id, "snapshot %s loaded (%s backend %s)%s",
		  load->snapshot_path,
		  load->backend == VM_MEM_FILE ? "File" : "Uffd",
		  load->backend_path, load->resume_vm ? ", running" : "");
	vmstate_free(s);
	*out = vm;
	return 0;
fail:
	vmstate_free(s);
	vm_destroy(vm);
	return ret;
}
