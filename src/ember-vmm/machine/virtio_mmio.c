/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-mmio, version 2 (virtio 1.x "modern" layout), and split
 * virtqueues. Register map (offsets in the device's 4 KiB window, all
 * 32-bit accesses):
 *
 *   0x000 MagicValue "virt"   0x030 QueueSel          0x070 Status
 *   0x004 Version (2)         0x034 QueueNumMax       0x080 QueueDescLow/High
 *   0x008 DeviceID            0x038 QueueNum          0x090 QueueDriverLow/High
 *   0x00c VendorID            0x044 QueueReady        0x0a0 QueueDeviceLow/High
 *   0x010 DeviceFeatures      0x050 QueueNotify       0x0fc ConfigGeneration
 *   0x014 DeviceFeaturesSel   0x060 InterruptStatus   0x100 device config
 *   0x020 DriverFeatures      0x064 InterruptACK
 *   0x024 DriverFeaturesSel
 *
 * TODO(vmm-machine): queue notifications are handled on the vCPU thread
 * that wrote QueueNotify; an ioeventfd per queue served by a device thread
 * would let the vCPU go on while the disk works.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>

#include "ember/log.h"
#include "virtio_mmio.h"

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
#define VIRTIO_VENDOR_ID 0x45424d52  /* "EMBR" */

static struct virtq *selected(struct virtio_mmio *t)
{
	if (t->queue_sel >= t->ops->num_queues)
		return NULL;
	return &t->queues[t->queue_sel];
}

static uint64_t offered_features(const struct virtio_mmio *t)
{
	return t->ops->features | (1ULL << VIRTIO_F_VERSION_1);
}

static void reset(struct virtio_mmio *t)
{
	t->status = 0;
	t->driver_features = 0;
	t->device_features_sel = t->driver_features_sel = 0;
	t->queue_sel = 0;
	t->interrupt_status = 0;
	memset(t->queues, 0, sizeof(t->queues));
	if (t->ops->reset)
		t->ops->reset(t->dev);
}

static void needs_reset(struct virtio_mmio *t, const char *why)
{
	olog_warn(t->m->id, "%s at 0x%llx: %s; the driver must reset it",
		  t->ops->name, (unsigned long long)t->gpa, why);
	t->status |= VIRTIO_CONFIG_S_NEEDS_RESET;
	t->interrupt_status |= VIRTIO_MMIO_INT_CONFIG;
	t->config_generation++;
	machine_pulse_irq(t->m, t->irq);
}

/* Resolves the rings of the selected queue when the driver enables it. */
static void queue_enable(struct virtio_mmio *t, struct virtq *q)
{
	unsigned n = q->num;

	if (n == 0 || n > VIRTQ_MAX_SIZE || (n & (n - 1))) {
		needs_reset(t, "bad queue size");
		return;
	}
	q->desc = machine_gpa_to_hva(t->m, q->desc_gpa,
				     n * sizeof(struct vring_desc));
	q->avail = machine_gpa_to_hva(t->m, q->avail_gpa,
				      sizeof(struct vring_avail) + 2 * n + 2);
	q->used = machine_gpa_to_hva(
		t->m, q->used_gpa,
		sizeof(struct vring_used) +
			n * sizeof(struct vring_used_elem) + 2);
	if (!q->desc || !q->avail || !q->used) {
		needs_reset(t, "queue outside guest memory");
		return;
	}
	q->last_avail = 0;
	q->ready = true;
}

static void set_addr(uint64_t *a, bool high, uint32_t v)
{
	if (high)
		*a = (*a & 0xffffffffULL) | ((uint64_t)v << 32);
	else
		*a = (*a & ~0xffffffffULL) | v;
}

static uint32_t reg_read(struct virtio_mmio *t, uint64_t off)
{
	struct virtq *q = selected(t);

	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		return VIRTIO_MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION:
		return 2;
	case VIRTIO_MMIO_DEVICE_ID:
		return t->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return VIRTIO_VENDOR_ID;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		if (t->device_features_sel > 1)
			return 0;
		return (uint32_t)(offered_features(t) >>
				  (32 * t->device_features_sel));
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return q ? VIRTQ_MAX_SIZE : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return q ? q->ready : 0;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return t->interrupt_status;
	case VIRTIO_MMIO_STATUS:
		return t->status;
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return t->config_generation;
	default:
		return 0;
	}
}

static void reg_write(struct virtio_mmio *t, uint64_t off, uint32_t v)
{
	struct virtq *q = selected(t);

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		t->device_features_sel = v;
		return;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		if (t->status & VIRTIO_CONFIG_S_FEATURES_OK)
			return;
		if (t->driver_features_sel == 0)
			set_addr(&t->driver_features, false, v);
		else if (t->driver_features_sel == 1)
			set_addr(&t->driver_features, true, v);
		return;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		t->driver_features_sel = v;
		return;
	case VIRTIO_MMIO_QUEUE_SEL:
		t->queue_sel = v;
		return;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		if (v < t->ops->num_queues && t->queues[v].ready &&
		    (t->status & VIRTIO_CONFIG_S_DRIVER_OK) &&
		    !(t->status & VIRTIO_CONFIG_S_NEEDS_RESET))
			t->ops->queue_notify(t->dev, t, v);
		return;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		t->interrupt_status &= ~v;
		return;
	case VIRTIO_MMIO_STATUS:
		if (v == 0) {
			reset(t);
			return;
		}
		/* FEATURES_OK only sticks when the driver took no feature
		 * we did not offer, and took VERSION_1. */
		if ((v & VIRTIO_CONFIG_S_FEATURES_OK) &&
		    !(t->status & VIRTIO_CONFIG_S_FEATURES_OK) &&
		    ((t->driver_features & ~offered_features(t)) ||
		     !(t->driver_features & (1ULL << VIRTIO_F_VERSION_1))))
			v &= ~VIRTIO_CONFIG_S_FEATURES_OK;
		t->status = v;
		return;
	default:
		break;
	}
	if (!q || q->ready)
		return; /* queue registers are fixed once it is ready */
	switch (off) {
	case VIRTIO_MMIO_QUEUE_NUM:
		q->num = (uint16_t)v;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (v == 1)
			queue_enable(t, q);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		set_addr(&q->desc_gpa, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
	case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
		set_addr(&q->avail_gpa, off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
			 v);
		break;
	case VIRTIO_MMIO_QUEUE_USED_LOW:
	case VIRTIO_MMIO_QUEUE_USED_HIGH:
		set_addr(&q->used_gpa, off == VIRTIO_MMIO_QUEUE_USED_HIGH, v);
		break;
	default:
		olog_debug(t->m->id, "%s: write of 0x%x to register 0x%llx ignored",
			   t->ops->name, v, (unsigned long long)off);
		break;
	}
}

static void virtio_mmio_io(void *opaque, uint64_t off, uint8_t *data,
			   unsigned len, bool is_write)
{
	struct virtio_mmio *t = opaque;
	uint32_t v;

	if (off >= VIRTIO_MMIO_CONFIG) {
		if (!is_write && t->ops->config_read) {
			memset(data, 0, len);
			t->ops->config_read(t->dev, off - VIRTIO_MMIO_CONFIG,
					    data, len);
		}
		return; /* configuration writes: none of ours is writable */
	}
	if (len != 4 || (off & 3))
		return;
	if (is_write) {
		memcpy(&v, data, 4);
		reg_write(t, off, v);
	} else {
		v = reg_read(t, off);
		memcpy(data, &v, 4);
	}
}

int virtq_pop(struct virtio_mmio *t, struct virtq *q, struct virtq_chain *c)
{
	uint16_t avail_idx, idx;
	unsigned n = 0;

	if (!q->ready)
		return 0;
	avail_idx = __atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE);
	if (avail_idx == q->last_avail)
		return 0;
	if ((uint16_t)(avail_idx - q->last_avail) > q->num) {
		needs_reset(t, "available index ran ahead of the ring");
		return -EFAULT;
	}
	c->head = q->avail->ring[q->last_avail % q->num];
	q->last_avail++;
	idx = c->head;
	for (;;) {
		struct vring_desc *d;

		if (idx >= q->num || n >= VIRTQ_MAX_CHAIN) {
			needs_reset(t, "bad descriptor chain");
			return -EFAULT;
		}
		d = &q->desc[idx];
		if (d->flags & VRING_DESC_F_INDIRECT) {
			needs_reset(t, "indirect descriptor not negotiated");
			return -EFAULT;
		}
		c->bufs[n].hva = machine_gpa_to_hva(t->m, d->addr, d->len);
		c->bufs[n].len = d->len;
		c->bufs[n].device_writes = d->flags & VRING_DESC_F_WRITE;
		if (c->bufs[n].device_writes)
			machine_mark_dirty(t->m, d->addr, d->len);
		if (!c->bufs[n].hva) {
			needs_reset(t, "descriptor outside guest memory");
			return -EFAULT;
		}
		n++;
		if (!(d->flags & VRING_DESC_F_NEXT))
			break;
		idx = d->next;
	}
	c->n = n;
	return 1;
}

void virtq_push(struct virtio_mmio *t, struct virtq *q, uint16_t head,
		uint32_t written)
{
	uint16_t used_idx = q->used->idx;
	struct vring_used_elem *e = &q->used->ring[used_idx % q->num];

	(void)t;
	e->id = head;
	e->len = written;
	__atomic_store_n(&q->used->idx, (uint16_t)(used_idx + 1),
			 __ATOMIC_RELEASE);
	machine_mark_dirty(t->m, q->used_gpa,
			   sizeof(struct vring_used) +
				   q->num * sizeof(struct vring_used_elem) + 2);
}

size_t virtq_chain_write(struct virtq_chain *ch, size_t off, const void *src,
			 size_t len)
{
	const uint8_t *s = src;
	size_t done = 0;

	for (unsigned i = 0; i < ch->n && done < len; i++) {
		struct virtq_buf *b = &ch->bufs[i];
		size_t n;

		if (!b->device_writes)
			continue;
		if (off >= b->len) {
			off -= b->len;
			continue;
		}
		n = b->len - off < len - done ? b->len - off : len - done;
		memcpy(b->hva + off, s + done, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t virtq_chain_writable(const struct virtq_chain *ch)
{
	size_t n = 0;

	for (unsigned i = 0; i < ch->n; i++)
		if (ch->bufs[i].device_writes)
			n += ch->bufs[i].len;
	return n;
}

void virtio_mmio_signal_used(struct virtio_mmio *t)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	t->interrupt_status |= VIRTIO_MMIO_INT_VRING;
	machine_pulse_irq(t->m, t->irq);
}

/*
 * Snapshot state of the transport, then the device's own:
 *
 *   u32 device_features_sel, driver_features_sel, queue_sel, status,
 *       interrupt_status, config_generation; u64 driver_features;
 *   VIRTIO_MAX_QUEUES x { u16 num, u16 last_avail, u32 ready,
 *                         u64 desc_gpa, avail_gpa, used_gpa }
 *   the device's bytes (ops->save), if any
 */
#define TRANSPORT_STATE_SIZE (32 + VIRTIO_MAX_QUEUES * 32)

static int virtio_mmio_save(void *opaque, uint8_t **buf, size_t *len)
{
	struct virtio_mmio *t = opaque;
	uint8_t *dev_buf = NULL, *b, *p;
	size_t dev_len = 0;
	uint32_t u32s[6] = { t->device_features_sel, t->driver_features_sel,
			     t->queue_sel, t->status, t->interrupt_status,
			     t->config_generation };
	int ret;

	if (t->ops->save) {
		ret = t->ops->save(t->dev, &dev_buf, &dev_len);
		if (ret)
			return ret;
	}
	b = malloc(TRANSPORT_STATE_SIZE + dev_len);
	if (!b) {
		free(dev_buf);
		return -ENOMEM;
	}
	memcpy(b, u32s, sizeof(u32s));
	memcpy(b + 24, &t->driver_features, 8);
	p = b + 32;
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++, p += 32) {
		const struct virtq *q = &t->queues[i];
		uint32_t ready = q->ready;

		memcpy(p, &q->num, 2);
		memcpy(p + 2, &q->last_avail, 2);
		memcpy(p + 4, &ready, 4);
		memcpy(p + 8, &q->desc_gpa, 8);
		memcpy(p + 16, &q->avail_gpa, 8);
		memcpy(p + 24, &q->used_gpa, 8);
	}
	if (dev_len)
		memcpy(b + TRANSPORT_STATE_SIZE, dev_buf, dev_len);
	free(dev_buf);
	*buf = b;
	*len = TRANSPORT_STATE_SIZE + dev_len;
	return 0;
}

static int virtio_mmio_restore(void *opaque, const uint8_t *b, size_t len)
{
	struct virtio_mmio *t = opaque;
	uint32_t u32s[6];
	const uint8_t *p = b + 32;
	int ret = 0;

	if (len < TRANSPORT_STATE_SIZE)
		return -EINVAL;
	memcpy(u32s, b, sizeof(u32s));
	t->device_features_sel = u32s[0];
	t->driver_features_sel = u32s[1];
	t->queue_sel = u32s[2];
	t->status = u32s[3];
	t->interrupt_status = u32s[4];
	t->config_generation = u32s[5];
	memcpy(&t->driver_features, b + 24, 8);
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++, p += 32) {
		struct virtq *q = &t->queues[i];
		uint16_t last_avail;
		uint32_t ready;

		memcpy(&q->num, p, 2);
		memcpy(&last_avail, p + 2, 2);
		memcpy(&ready, p + 4, 4);
		memcpy(&q->desc_gpa, p + 8, 8);
		memcpy(&q->avail_gpa, p + 16, 8);
		memcpy(&q->used_gpa, p + 24, 8);
		q->ready = false;
		if (!ready)
			continue;
		if (i >= t->ops->num_queues)
			return -EINVAL;
		/* Resolves the ring addresses again (nothing is read). */
		queue_enable(t, q);
		if (!q->ready)
			return -EINVAL;
		q->last_avail = last_avail;
	}
	if (len > TRANSPORT_STATE_SIZE) {
		if (!t->ops->restore)
			return -EINVAL;
		ret = t->ops->restore(t->dev, b + TRANSPORT_STATE_SIZE,
				      len - TRANSPORT_STATE_SIZE);
	}
	return ret;
}

static void virtio_mmio_teardown(void *opaque)
{
	struct virtio_mmio *t = opaque;

	t->ops->teardown(t->dev);
	free(t);
}

int virtio_mmio_add(struct machine *m, const struct virtio_dev_ops *ops,
		    void *dev, struct virtio_mmio **out)
{
	struct virtio_mmio *t = calloc(1, sizeof(*t));
	int ret;

	if (!t) {
		ops->teardown(dev);
		return -ENOMEM;
	}
	t->m = m;
	t->ops = ops;
	t->dev = dev;
	ret = machine_alloc_virtio_slot(m, &t->gpa, &t->irq);
	if (!ret)
		ret = machine_add_device(m, ops->name, MACHINE_BUS_MMIO, t->gpa,
					 VIRTIO_MMIO_SIZE, virtio_mmio_io,
					 virtio_mmio_teardown, t);
	if (ret) {
		olog_error(m->id, "%s: cannot add the device: %s", ops->name,
			   strerror(-ret));
		virtio_mmio_teardown(t);
		return ret;
	}
	machine_set_dev_state(m, virtio_mmio_save, virtio_mmio_restore);
	if (out)
		*out = t;
	return 0;
}
