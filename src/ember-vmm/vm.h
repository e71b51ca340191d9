/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The contract between ember-vmm's front end (command line, Firecracker API,
 * config file: main.c, api.c, config.c) and its machine (KVM, memory, vCPUs,
 * boot, devices: vm.c and the device files).
 *
 * The front end collects a struct vm_config from API requests or a config
 * file, validates what can be validated without KVM (config.c), then calls
 * vm_create() and vm_start(). The machine runs its own vCPU threads and
 * device event thread; the front end learns that the guest has ended from
 * vm_exit_fd().
 *
 * Lifecycle (the front end's state machine, api.c):
 *
 *   NotStarted --InstanceStart--> Running <--PATCH /vm--> Paused
 *        |                          |                        |
 *        |                          +--reboot/crash--> Exited <+
 *        +--PUT /snapshot/load--> Paused or Running
 *
 * Configuration requests are accepted only in NotStarted; a snapshot load
 * only before any configuration for a cold boot.
 */
#ifndef EMBER_VMM_VM_H
#define EMBER_VMM_VM_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VM_MAX_VCPUS 32
#define VM_MAX_DRIVES 8
#define VM_MAX_NETS 4
#define VM_ID_MAX 64
#define VM_CMDLINE_MAX 4096

struct vm_drive {
	char drive_id[VM_ID_MAX];
	char path_on_host[PATH_MAX];
	bool is_root_device;
	bool is_read_only;
};

struct vm_net {
	char iface_id[VM_ID_MAX];
	char host_dev_name[32];
	char guest_mac[18]; /* "aa:bb:cc:dd:ee:ff" or "" */
};

struct vm_vsock {
	bool present;
	uint32_t guest_cid;
	char uds_path[PATH_MAX];
};

struct vm_config {
	char id[VM_ID_MAX];	/* the VMM's --id, used as log prefix */

	/* PUT /boot-source */
	bool has_boot_source;
	char kernel_image_path[PATH_MAX];
	char initrd_path[PATH_MAX];	/* "" when none */
	char boot_args[VM_CMDLINE_MAX];	/* "" means the default below */

	/* PUT /machine-config */
	unsigned vcpu_count;		/* 1..VM_MAX_VCPUS */
	uint64_t mem_size_mib;
	bool smt;
	bool track_dirty_pages;

	/* PUT /drives/{id}, /network-interfaces/{id}, /vsock, /entropy */
	struct vm_drive drives[VM_MAX_DRIVES];
	unsigned n_drives;
	struct vm_net nets[VM_MAX_NETS];
	unsigned n_nets;
	struct vm_vsock vsock;
	bool entropy;

	/* Where the serial console goes: "" means the VMM's stdout. */
	char serial_out_path[PATH_MAX];
	/* --boot-timer: log the time from InstanceStart to the guest's write
	 * to the boot-timer I/O port. */
	bool boot_timer;
};

/* Firecracker's default kernel command line when boot_args is empty. */
#define VM_DEFAULT_BOOT_ARGS                                                  \
	"reboot=k panic=1 pci=off nomodules 8250.nr_uarts=1 i8042.noaux "    \
	"i8042.nomux i8042.dumbkbd"

struct vm;

/* Builds the machine: KVM VM, guest memory, kernel and initrd loaded, boot
 * parameters, vCPUs, devices. Nothing runs yet. On failure returns a
 * negative errno and writes a message for the user (naming the file or the
 * value at fault) into err. */
int vm_create(const struct vm_config *cfg, struct vm **out, char *err,
	      size_t errlen);

/* Starts the vCPU threads and the device thread. 0 or -errno. */
int vm_start(struct vm *vm);

/* Presses Ctrl-Alt-Del through the i8042 controller. */
int vm_send_ctrl_alt_del(struct vm *vm);

/* An eventfd that becomes readable once the guest has ended (reboot,
 * power-off, crash). Owned by the vm. */
int vm_exit_fd(const struct vm *vm);

/* After the exit fd fired: 0 for a reboot or power-off, 1 for a crash
 * (triple fault, KVM internal error; the registers are already logged). */
int vm_exit_status(const struct vm *vm);

/* Stops every thread, releases every fd and all guest memory. NULL is ok. */
void vm_destroy(struct vm *vm);

/* ---- Pause, resume and snapshots (machine/snapshot.c, docs/vmm-snapshots.md) ---- */

/* PATCH /vm: stops every vCPU between two instructions (a pending I/O
 * exit is completed first) / lets them run again. 0, -ETIMEDOUT (a vCPU
 * did not stop), -ESHUTDOWN (the guest has ended). */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
bool vm_is_paused(const struct vm *vm);

enum vm_snapshot_type { VM_SNAPSHOT_FULL, VM_SNAPSHOT_DIFF };

/* PUT /snapshot/create, on a paused vm: the guest's vsock transport is
 * reset, then the memory file (full: every non-zero page of a sparse
 * full-size file; diff: only the pages dirtied since the last snapshot,
 * at their offsets, which needs track_dirty_pages) and the vmstate file
 * are written, each atomically, the vmstate last. Either kind starts a
 * new dirty log. On failure err says why; no file a load would accept is
 * left at snapshot_path. */
int vm_snapshot_create(struct vm *vm, enum vm_snapshot_type type,
		       const char *snapshot_path, const char *mem_file_path,
		       char *err, size_t errlen);

enum vm_mem_backend { VM_MEM_FILE, VM_MEM_UFFD };

/* network_overrides: another host tap for one of the snapshot's
 * interfaces. */
struct vm_net_override {
	char iface_id[VM_ID_MAX];
	char host_dev_name[16];
};

/* PUT /snapshot/load. */
struct vm_snapshot_load {
	char snapshot_path[PATH_MAX];
	enum vm_mem_backend backend;
	/* File: the memory file, mapped private (copy-on-write). Uffd: the
	 * page server's Unix socket (Firecracker's handshake). */
	char backend_path[PATH_MAX];
	bool resume_vm;
	bool track_dirty_pages;
	/* vsock_override: a new uds_path for the snapshot's vsock. */
	char vsock_uds_path[PATH_MAX]; /* "" keeps the snapshot's */
	struct vm_net_override net_overrides[VM_MAX_NETS];
	unsigned n_net_overrides;
	/* From the new VMM, not the snapshot. */
	char id[VM_ID_MAX];
	char serial_out_path[PATH_MAX];
	/* When the request arrived (ember_now_ns), or 0. With resume_vm, vCPU
	 * 0's first entry into KVM_RUN logs the time since (an info line: the
	 * load-to-first-guest-instruction figure of bench/snapshot.py). */
	uint64_t request_ns;
};

/* Builds a vm from a snapshot: the vmstate is read and validated in full
 * first, then a machine with the snapshot's vCPUs, memory and devices is
 * built, its memory attached to the backend and the state applied; the
 * vm is left paused, or running with resume_vm. On failure nothing is
 * left of it and err names the file and the problem. */
int vm_snapshot_load(const struct vm_snapshot_load *load, struct vm **out,
		     char *err, size_t errlen);

/* The configuration the VM runs with; after a snapshot load, the one the
 * snapshot recorded with the load's overrides (no boot source). */
const struct vm_config *vm_get_config(const struct vm *vm);

/* The machine under a vm (the kvm tests read registers and memory). */
struct machine;
struct machine *vm_machine(const struct vm *vm);

#endif
