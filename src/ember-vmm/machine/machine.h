/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ember-vmm's machine, the layer under vm.h: a KVM VM with guest memory,
 * vCPU threads and a bus of devices. vm.c builds a Linux machine on it; the
 * kvm tests use it directly to run tiny guest programs (load a flat image,
 * choose the CPU mode the vCPUs start in).
 *
 * Guest physical memory map (x86-64):
 *
 *   0x0000_0000  RAM (real-mode IVT, BDA)
 *   0x0000_0500  GDT                      BOOT_GDT_GPA
 *   0x0000_0520  IDT (empty)              BOOT_IDT_GPA
 *   0x0000_7000  boot_params (zero page)  BOOT_ZERO_PAGE_GPA
 *   0x0000_8ff0  boot stack top           BOOT_STACK_GPA
 *   0x0000_9000  PML4, 0xa000 PDPT, 0xb000-0xefff 4 page directories
 *   0x0002_0000  kernel command line      BOOT_CMDLINE_GPA
 *   0x0009_fc00  MP table (EBDA)          MPTABLE_GPA; e820 reserved to 1 MiB
 *   0x0010_0000  RAM: kernel, initrd high
 *   0xd000_0000  32-bit MMIO hole: virtio-mmio devices (4 KiB each), then
 *                IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000, KVM TSS/identity
 *   0x1_0000_0000 RAM above 4 GiB when the guest is larger than the hole
 *
 * Threads: one per vCPU, each in a KVM_RUN loop dispatching I/O-port and
 * MMIO exits to the device bus. Device handlers are called with their
 * device's lock held, so a handler sees one access at a time.
 *
 * The vCPU threads are kicked out of KVM_RUN with MACHINE_KICK_SIGNAL (a
 * real-time signal whose handler does nothing) plus kvm_run.immediate_exit.
 */
#ifndef EMBER_VMM_MACHINE_H
#define EMBER_VMM_MACHINE_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MACHINE_KICK_SIGNAL (SIGRTMIN + 1)

#define MACHINE_MAX_REGIONS 4
#define MACHINE_MAX_DEVICES 32
#define MACHINE_MAX_VCPUS 32
#define MACHINE_MAX_NETS 4

#define MMIO_HOLE_START 0xd0000000ULL /* 4 GiB - 768 MiB, as Firecracker */
#define MMIO_HOLE_END 0x100000000ULL
#define VIRTIO_MMIO_BASE MMIO_HOLE_START
#define VIRTIO_MMIO_SIZE 0x1000ULL
#define VIRTIO_IRQ_BASE 5
#define VIRTIO_IRQ_MAX 23 /* IOAPIC pins 0-23 */
#define IOAPIC_GPA 0xfec00000ULL
#define LAPIC_GPA 0xfee00000ULL
#define KVM_IDENTITY_MAP_GPA 0xfffbc000ULL
#define KVM_TSS_GPA 0xfffbd000ULL

#define BOOT_GDT_GPA 0x500ULL
#define BOOT_IDT_GPA 0x520ULL
#define BOOT_ZERO_PAGE_GPA 0x7000ULL
#define BOOT_STACK_GPA 0x8ff0ULL
#define BOOT_PML4_GPA 0x9000ULL
#define BOOT_PDPT_GPA 0xa000ULL
#define BOOT_PD_GPA 0xb000ULL /* 4 tables of 2 MiB pages: 0-4 GiB */
#define BOOT_CMDLINE_GPA 0x20000ULL
#define EBDA_START 0x9fc00ULL
#define MPTABLE_GPA EBDA_START
#define HIGH_MEMORY_START 0x100000ULL
/* Guest RAM's name in /proc/PID/smaps: [anon:ember-guest-memory]. */
#define GUEST_MEMORY_NAME "ember-guest-memory"

/* Selectors of the boot GDT (Linux's __BOOT_CS and __BOOT_DS). */
#define BOOT_CS_SELECTOR 0x10
#define BOOT_DS_SELECTOR 0x18
#define BOOT_TSS_SELECTOR 0x20

/* Legacy devices. */
#define SERIAL_PORT 0x3f8
#define SERIAL_IRQ 4
#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT 0x64
#define I8042_IRQ 1
#define BOOT_TIMER_PORT 0x3f0
#define BOOT_TIMER_MAGIC 123

/* One slot of guest memory: kept as a table so a snapshot can save it, map
 * it from a file (file_offset) or read its dirty log. */
struct mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
	uint64_t file_offset; /* offset of this region in a memory file */
	uint32_t slot;
	uint32_t kvm_flags; /* KVM_MEM_LOG_DIRTY_PAGES when tracking */
};

enum machine_bus { MACHINE_BUS_PIO, MACHINE_BUS_MMIO };

/* An access of len bytes (1, 2, 4 or 8) at offset from the device's base.
 * For reads the handler fills data; it is pre-filled with all ones. */
typedef void (*machine_io_fn)(void *opaque, uint64_t offset, uint8_t *data,
			      unsigned len, bool is_write);

struct machine_dev {
	char name[32];
	enum machine_bus bus;
	uint64_t base, len;
	machine_io_fn io;
	void (*teardown)(void *opaque);
	void *opaque;
	pthread_mutex_t lock;
	/* Snapshots (snapshot.c): the device's own state as bytes, and back.
	 * NULL for a device without state (it is then saved empty). */
	int (*save)(void *opaque, uint8_t **buf, size_t *len);
	int (*restore)(void *opaque, const uint8_t *buf, size_t len);
};

enum machine_cpu_mode {
	MACHINE_MODE_REAL,	/* CS base 0, 16-bit */
	MACHINE_MODE_PROTECTED, /* flat 32-bit, no paging */
	MACHINE_MODE_LONG,	/* 64-bit, identity-mapped 0-4 GiB */
};

struct machine_config {
	const char *id; /* log prefix; NULL is ok */
	unsigned vcpu_count;
	uint64_t mem_size; /* bytes, a multiple of 4 KiB */
	bool smt;
	bool track_dirty_pages;
	const char *serial_out_path; /* NULL or "" = stdout */
	bool boot_timer;
};

struct machine_vcpu {
	struct machine *m;
	unsigned index;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	bool thread_started;
};

/* Why the guest ended. */
enum machine_end {
	MACHINE_RUNNING = 0,
	MACHINE_END_RESET,    /* i8042 reset, KVM system event reset */
	MACHINE_END_POWEROFF, /* KVM system event shutdown */
	MACHINE_END_CRASH,    /* triple fault, internal error, failed entry */
	MACHINE_END_STOPPED,  /* machine_destroy */
};

struct virtio_mmio_slot {
	uint64_t gpa;
	unsigned irq;
};

struct machine {
	char id[64];
	int kvm_fd, vm_fd;
	unsigned vcpu_count;
	bool smt;
	uint64_t mem_size;
	struct mem_region regions[MACHINE_MAX_REGIONS];
	unsigned n_regions;
	struct kvm_cpuid2 *supported_cpuid;

	struct machine_vcpu vcpus[MACHINE_MAX_VCPUS];

	struct machine_dev *devs[MACHINE_MAX_DEVICES];
	unsigned n_devs;

	/* virtio-mmio slots handed out so far, in order (for the command
	 * line and the MP table). */
	struct virtio_mmio_slot virtio[MACHINE_MAX_DEVICES];
	unsigned n_virtio;

	int exit_fd;		/* eventfd: the guest ended */
	pthread_mutex_t end_lock;
	enum machine_end end;
	bool started;
	uint64_t start_ns;	/* machine_start time (boot timer) */
	/* Non-zero: vCPU 0 logs the time from this (ember_now_ns) to its next
	 * entry into KVM_RUN, once (set by a snapshot load with resume_vm). */
	uint64_t first_run_since_ns;

	/* Pause (kvm.c): vCPU threads park before KVM_RUN while
	 * pause_requested; machine_pause waits until all active ones have. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	bool pause_requested;
	unsigned n_active, n_parked;
	/* Dirty tracking for diff snapshots (snapshot.c): KVM's log covers
	 * the vCPUs' writes; this bitmap per region, one bit per 4 KiB page,
	 * covers what the VMM itself writes (virtio rings and buffers). */
	bool track_dirty_pages;
	uint64_t *vmm_dirty[MACHINE_MAX_REGIONS];
	int uffd; /* the userfaultfd of a snapshot loaded with Uffd, or -1 */

	/* Device state the vm.h calls reach. */
	void *i8042;
	void *vsock;		/* virtio_vsock.c, for the transport reset */
	void *nets[MACHINE_MAX_NETS]; /* virtio_net.c, for pause and resume */
	unsigned n_nets;
	int serial_out_fd;	/* owned by serial.c when not stdout */
	bool boot_timer;
};

/* Creates the KVM VM (irqchip, PIT, TSS), guest memory and vCPUs (CPUID,
 * MSRs, FPU, LAPIC set; registers at reset). No devices yet. */
int machine_create(const struct machine_config *mc, struct machine **out);
/* Stops the vCPU threads, tears down devices in reverse order, frees all. */
void machine_destroy(struct machine *m);

/* Host address of guest physical [gpa, gpa+len), or NULL when it is not all
 * inside one memory region. */
void *machine_gpa_to_hva(const struct machine *m, uint64_t gpa, uint64_t len);
/* Copies buf into guest memory at gpa. 0 or -EFAULT. */
int machine_write_guest(struct machine *m, uint64_t gpa, const void *buf,
			size_t len);
/* Loads a whole file into guest memory at gpa. Size in *len_out. */
int machine_load_file(struct machine *m, const char *path, uint64_t gpa,
		      size_t *len_out);

/* Sets the registers of vCPU index so it starts at rip in the given mode.
 * Long mode builds the boot GDT and identity page tables first. APs (index
 * > 0) made runnable this way skip INIT/SIPI. */
int machine_set_entry(struct machine *m, unsigned index,
		      enum machine_cpu_mode mode, uint64_t rip, uint64_t rsp);

/* Sets RSI of a vCPU (boot_params for Linux). */
int machine_set_rsi(struct machine *m, unsigned index, uint64_t rsi);

/* Adds a device on a bus range. teardown(opaque) runs on destroy (it may
 * be NULL). 0, -EBUSY when the range overlaps another device, -ENOSPC. */
int machine_add_device(struct machine *m, const char *name,
		       enum machine_bus bus, uint64_t base, uint64_t len,
		       machine_io_fn io, void (*teardown)(void *opaque),
		       void *opaque);
/* Hands out the next virtio-mmio window and IRQ. */
int machine_alloc_virtio_slot(struct machine *m, uint64_t *gpa, unsigned *irq);

/* Interrupt lines of the in-kernel PIC/IOAPIC. */
int machine_set_irq(struct machine *m, unsigned irq, bool level);
int machine_pulse_irq(struct machine *m, unsigned irq);

/* Starts the vCPU threads. */
int machine_start(struct machine *m);
/* Ends the guest (first call wins): records why, kicks every vCPU out of
 * KVM_RUN and makes exit_fd readable. Safe from any thread. */
void machine_end(struct machine *m, enum machine_end why);
/* Waits up to timeout_ms for the guest to end. Returns its end reason, or
 * -ETIMEDOUT. */
int machine_wait(struct machine *m, int timeout_ms);

/* Pause and resume (kvm.c). machine_pause kicks every vCPU out of KVM_RUN
 * (completing a pending I/O exit) and waits until each is parked; before
 * machine_start it makes the threads park before their first KVM_RUN.
 * 0, -ETIMEDOUT (a vCPU did not stop within 10 s), -ESHUTDOWN (ended). */
int machine_pause(struct machine *m);
int machine_resume(struct machine *m);
bool machine_is_paused(struct machine *m);
/* Sets the snapshot hooks of the device added last. */
void machine_set_dev_state(struct machine *m,
			   int (*save)(void *opaque, uint8_t **buf,
				       size_t *len),
			   int (*restore)(void *opaque, const uint8_t *buf,
					  size_t len));
/* Records that the VMM wrote guest memory [gpa, gpa+len) (for diff
 * snapshots; a no-op unless dirty pages are tracked). */
void machine_mark_dirty(struct machine *m, uint64_t gpa, uint64_t len);

/* Snapshots (snapshot.c). The machine must be paused. */
struct vmstate;
/* Fills s with the vCPUs, kvmclock, irqchips, PIT and every device. */
int machine_save_state(struct machine *m, struct vmstate *s, char *err,
		       size_t errlen);
/* Writes guest memory to path: full (every non-zero page, the file
 * sparse and full size) or diff (only pages dirtied since the last
 * snapshot, at their offsets). Either resets the dirty log. */
int machine_write_memory(struct machine *m, const char *path, bool diff,
			 char *err, size_t errlen);
/* Reads and clears the dirty log (KVM's and the VMM's). */
int machine_reset_dirty_log(struct machine *m);
/* Checks s against this machine (vCPUs, memory slots, devices by order,
 * name and base) without changing anything. */
int machine_check_state(struct machine *m, const struct vmstate *s,
			char *err, size_t errlen);
/* Applies s (checked first) to a machine built with its config and
 * devices, whose vCPUs never ran. */
int machine_restore_state(struct machine *m, const struct vmstate *s,
			  char *err, size_t errlen);
/* Guest memory from a memory file, mapped private (copy-on-write). */
int machine_map_memory_file(struct machine *m, const char *path, char *err,
			    size_t errlen);
/* Guest memory served by a page server: registers every region with a
 * new userfaultfd (missing mode, EVENT_REMOVE) and sends the regions and
 * the fd to the Unix socket at socket_path (Firecracker's handshake). */
int machine_connect_uffd(struct machine *m, const char *socket_path,
			 char *err, size_t errlen);

/* Logs a vCPU's registers and the bytes at RIP (after a crash). */
void machine_dump_vcpu(struct machine *m, unsigned index);

/* Linux boot (boot.c). */
struct boot_kernel {
	uint64_t entry;	      /* guest physical, 64-bit entry point */
	uint64_t end;	      /* end of what was loaded */
	bool is_bzimage;
	uint32_t initrd_addr_max;
	uint8_t setup_header[0x290 - 0x1f1]; /* bzImage: the file's header */
	size_t setup_header_len;
};
/* Loads an ELF vmlinux (PT_LOAD segments at their physical addresses) or a
 * bzImage (protected-mode part at 1 MiB, entry +0x200; the guest
 * decompresses itself: decompressing on the host measured slower, see
 * docs/vmm-machine.md). */
int boot_load_kernel(struct machine *m, const char *path,
		     struct boot_kernel *k, char *err, size_t errlen);
/* Places the initrd as high as it may go under the kernel's limit. */
int boot_load_initrd(struct machine *m, const char *path,
		     const struct boot_kernel *k, uint64_t *gpa,
		     uint64_t *size, char *err, size_t errlen);
/* Writes the command line and boot_params (e820, initrd) and points the
 * boot vCPU at the kernel in 64-bit mode with RSI = boot_params. */
int boot_setup_linux(struct machine *m, const struct boot_kernel *k,
		     const char *cmdline, uint64_t initrd_gpa,
		     uint64_t initrd_size);
/* The boot GDT and identity page tables (0-4 GiB, 2 MiB pages) in guest
 * memory, and the segment and control registers for a mode. */
int boot_write_tables(struct machine *m);
struct kvm_sregs;
void boot_sregs(struct kvm_sregs *s, enum machine_cpu_mode mode);

/* Devices (one file each). Each registers itself on the bus. */
int serial_setup(struct machine *m, const char *out_path);
int i8042_setup(struct machine *m);
int i8042_ctrl_alt_del(struct machine *m);
int boot_timer_setup(struct machine *m);
int virtio_blk_setup(struct machine *m, const char *path, bool read_only,
		     const char *drive_id);
int virtio_rng_setup(struct machine *m);
/* virtio-net on the existing tap device tap_name (of the calling thread's
 * network namespace); mac is 6 bytes, or NULL to let the driver choose.
 * -ENODEV when there is no such device. */
int virtio_net_setup(struct machine *m, const char *tap_name,
		     const uint8_t *mac);
/* While on, the network devices write nothing into guest memory (frames
 * wait in the tap); vm_pause turns it on, vm_resume off. */
void virtio_net_quiesce(struct machine *m, bool on);

#endif
