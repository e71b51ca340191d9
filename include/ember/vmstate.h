/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vmstate file: everything of a paused microVM except its memory (the
 * memory file, see docs/snapshots.md). ember-vmm writes it at
 * PUT /snapshot/create and reads it at PUT /snapshot/load.
 *
 * Layout (little-endian, x86-64; KVM's structures are stored as their
 * kernel ABI bytes, which are fixed for x86-64):
 *
 *   offset size  field
 *   0      8     magic "EMBRVMST"
 *   8      4     format version (VMSTATE_VERSION)
 *   12     4     number of sections
 *   16     8     length of the whole file in bytes
 *   24     8     XXH3-64 of the whole file with these 8 bytes as zero
 *   32     ...   sections, each: u32 type, u32 index, u64 payload length,
 *                payload
 *
 * Sections, in this order (decode refuses any other):
 *
 *   CONFIG   (1, index 0)   machine: vCPUs, memory size and slots (guest
 *                           physical address, size, offset in the memory
 *                           file), flags; front end: drives, entropy,
 *                           vsock, network interfaces (to rebuild the
 *                           same devices; the interfaces, u32 n and n x
 *                           {iface_id, host_dev_name, guest_mac}, only
 *                           when flag 16 is set)
 *   VCPU     (2, index i)   one per vCPU, i = 0..n-1: regs, sregs, FPU,
 *                           XSAVE, XCRs, LAPIC, MP state, vCPU events,
 *                           debug registers, then u32 n, u32 0 and n MSRs
 *                           (u32 index, u32 0, u64 value)
 *   CLOCK    (3, index 0)   struct kvm_clock_data (kvmclock)
 *   IRQCHIP  (4, index 0-2) struct kvm_irqchip: PIC master, PIC slave,
 *                           IOAPIC
 *   PIT      (5, index 0)   struct kvm_pit_state2
 *   DEVICE   (6, index d)   one per bus device in build order: u16 name
 *                           length, name, u64 bus base, u32 state length,
 *                           state (the device's own encoding)
 *
 * Invariants checked by vmstate_decode before anything is used: magic,
 * version, length equal to the buffer's, checksum, every section inside
 * the file with the size its type demands, as many VCPU sections as the
 * config has vCPUs, memory slots that add up to the memory size and tile
 * the memory file from offset 0.
 */
#ifndef EMBER_VMSTATE_H
#define EMBER_VMSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

#define VMSTATE_MAGIC "EMBRVMST"
#define VMSTATE_VERSION 1
#define VMSTATE_HEADER_SIZE 32
#define VMSTATE_MAX_VCPUS 32
#define VMSTATE_MAX_REGIONS 4
#define VMSTATE_MAX_DEVICES 32
#define VMSTATE_MAX_DRIVES 8
#define VMSTATE_MAX_NETS 4
#define VMSTATE_MAX_MSRS 1024
#define VMSTATE_MAX_DEVICE_STATE (1u << 20)
#define VMSTATE_NAME_MAX 32
#define VMSTATE_ID_MAX 64
#define VMSTATE_PATH_MAX 4096

enum vmstate_section {
	VMSTATE_SEC_CONFIG = 1,
	VMSTATE_SEC_VCPU = 2,
	VMSTATE_SEC_CLOCK = 3,
	VMSTATE_SEC_IRQCHIP = 4,
	VMSTATE_SEC_PIT = 5,
	VMSTATE_SEC_DEVICE = 6,
};

struct vmstate_region {
	uint64_t gpa, size, file_offset;
};

struct vmstate_drive {
	char drive_id[VMSTATE_ID_MAX];
	char path[VMSTATE_PATH_MAX];
	bool is_root_device, is_read_only;
};

struct vmstate_net {
	char iface_id[VMSTATE_ID_MAX];
	char host_dev_name[16];
	char guest_mac[18]; /* "" when the driver chose its own */
};

struct vmstate_config {
	uint32_t vcpu_count;
	uint64_t mem_size;
	bool smt, track_dirty_pages, entropy, vsock;
	uint32_t n_regions;
	struct vmstate_region regions[VMSTATE_MAX_REGIONS];
	uint32_t n_drives;
	struct vmstate_drive drives[VMSTATE_MAX_DRIVES];
	uint32_t vsock_cid;
	char vsock_uds_path[VMSTATE_PATH_MAX];
	uint32_t n_nets;
	struct vmstate_net nets[VMSTATE_MAX_NETS];
};

struct vmstate_vcpu {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;
	struct kvm_xsave xsave;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp_state;
	struct kvm_vcpu_events events;
	struct kvm_debugregs debugregs;
	uint32_t n_msrs;
	struct kvm_msr_entry *msrs; /* malloc'd */
};

struct vmstate_device {
	char name[VMSTATE_NAME_MAX];
	uint64_t base;
	uint32_t len;
	uint8_t *data; /* malloc'd; NULL when len is 0 */
};

struct vmstate {
	struct vmstate_config config;
	struct vmstate_vcpu vcpus[VMSTATE_MAX_VCPUS];
	struct kvm_clock_data clock;
	struct kvm_irqchip pic_master, pic_slave, ioapic;
	struct kvm_pit_state2 pit;
	uint32_t n_devices;
	struct vmstate_device devices[VMSTATE_MAX_DEVICES];
};

/* A zeroed vmstate, malloc'd (it is large). NULL if out of memory. */
struct vmstate *vmstate_new(void);
/* Frees the MSR lists, device states and the vmstate. NULL is ok. */
void vmstate_free(struct vmstate *s);

/* Serializes s (checksum included). *buf is malloc'd. 0, -EINVAL (counts
 * beyond the limits above), -ENOMEM. */
int vmstate_encode(const struct vmstate *s, uint8_t **buf, size_t *len);

/* Parses and validates a whole file's bytes into a new vmstate (*out).
 * On failure *out is NULL and why says what is wrong, e.g. "bad checksum"
 * or "truncated: 100 of 9000 bytes". 0, -EBADMSG, -ENOMEM. */
int vmstate_decode(const uint8_t *buf, size_t len, struct vmstate **out,
		   char *why, size_t why_size);

/* Writes the encoded state to path atomically: a temporary name in the
 * same folder, fsync, rename, fsync of the folder. A failed or killed
 * write leaves no file at path (an older file there stays as it was).
 * 0 or -errno. */
int vmstate_write_file(const char *path, const struct vmstate *s);

/* Reads and decodes path. why names the problem (the caller adds the
 * path). 0, -errno (cannot read), -EBADMSG (corrupt), -ENOMEM. */
int vmstate_read_file(const char *path, struct vmstate **out, char *why,
		      size_t why_size);

/* Copies a device state into d (name, base, bytes). 0 or -ENOMEM/-EINVAL. */
int vmstate_device_set(struct vmstate_device *d, const char *name,
		       uint64_t base, const void *data, size_t len);

#endif
