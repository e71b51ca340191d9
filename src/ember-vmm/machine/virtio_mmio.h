/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtio-mmio transport (virtio 1.x, version 2 register layout) and
 * split virtqueues, shared by the virtio devices. A device supplies its
 * ops; the transport owns the registers, feature negotiation, queues and
 * the interrupt. Each device sits in a 4 KiB window of the MMIO hole with
 * its own IRQ, announced on the kernel command line as
 * virtio_mmio.device=4K@0xADDR:IRQ.
 */
#ifndef EMBER_VMM_VIRTIO_MMIO_H
#define EMBER_VMM_VIRTIO_MMIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "machine.h"

#define VIRTIO_MAX_QUEUES 4
#define VIRTQ_MAX_SIZE 256
#define VIRTQ_MAX_CHAIN 64

struct virtio_mmio;

struct virtio_dev_ops {
	const char *name;
	uint32_t device_id;
	uint64_t features; /* device features; VERSION_1 is added */
	unsigned num_queues;
	/* Device-specific configuration space (offset 0x100 onwards). */
	void (*config_read)(void *dev, uint64_t off, uint8_t *data,
			    unsigned len);
	/* The driver made buffers available on queue q. */
	void (*queue_notify)(void *dev, struct virtio_mmio *t, unsigned q);
	void (*reset)(void *dev); /* may be NULL */
	void (*teardown)(void *dev);
	/* Snapshots: the device's own state beyond the transport's (which
	 * saves features, status and queues itself). Both may be NULL. */
	int (*save)(void *dev, uint8_t **buf, size_t *len);
	int (*restore)(void *dev, const uint8_t *buf, size_t len);
};

struct virtq {
	uint16_t num;
	bool ready;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t last_avail;
};

struct virtq_buf {
	uint8_t *hva;
	uint32_t len;
	bool device_writes;
};

struct virtq_chain {
	uint16_t head;
	unsigned n;
	struct virtq_buf bufs[VIRTQ_MAX_CHAIN];
};

struct virtio_mmio {
	struct machine *m;
	const struct virtio_dev_ops *ops;
	void *dev;
	uint64_t gpa;
	unsigned irq;
	uint32_t device_features_sel, driver_features_sel;
	uint64_t driver_features;
	uint32_t queue_sel;
	uint32_t status;
	uint32_t interrupt_status;
	uint32_t config_generation;
	struct virtq queues[VIRTIO_MAX_QUEUES];
};

/* Registers a device: takes a window and an IRQ, adds it to the bus. On
 * failure ops->teardown(dev) has run. */
int virtio_mmio_add(struct machine *m, const struct virtio_dev_ops *ops,
		    void *dev, struct virtio_mmio **out);

/* Takes the next available descriptor chain of q: 1 when one was taken,
 * 0 when the queue is empty, -EFAULT for a malformed chain (the device is
 * then marked as needing a reset). */
int virtq_pop(struct virtio_mmio *t, struct virtq *q, struct virtq_chain *c);
/* Returns a chain to the driver with the bytes written into it. */
void virtq_push(struct virtio_mmio *t, struct virtq *q, uint16_t head,
		uint32_t written);
/* Copies len bytes into the device-writable buffers of a chain from
 * offset off (counted in those buffers only). Returns the bytes copied. */
size_t virtq_chain_write(struct virtq_chain *c, size_t off, const void *src,
			 size_t len);
/* The total length of a chain's device-writable buffers. */
size_t virtq_chain_writable(const struct virtq_chain *c);
/* Gives back the chain virtq_pop took last, unused. */
static inline void virtq_unpop(struct virtq *q)
{
	q->last_avail--;
}
/* Tells the driver about used buffers (interrupt status bit 0, IRQ). */
void virtio_mmio_signal_used(struct virtio_mmio *t);

#endif
