/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk over a regular file: read, write (unless read-only, then
 * VIRTIO_BLK_F_RO), flush (VIRTIO_BLK_F_FLUSH, fsync of the file) and
 * GET_ID (the drive id). A request is a chain: a 16-byte header the driver
 * wrote, data buffers, and a status byte the device writes last.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>

#include "ember/log.h"
#include "ember/util.h"
#include "virtio_mmio.h"

#define SECTOR_SIZE 512ULL

struct virtio_blk {
	struct machine *m;
	int fd;
	bool read_only;
	uint64_t capacity; /* sectors */
	char path[256];
	char serial[VIRTIO_BLK_ID_BYTES];
};

static void blk_config_read(void *dev, uint64_t off, uint8_t *data,
			    unsigned len)
{
	struct virtio_blk *b = dev;
	struct virtio_blk_config cfg = { .capacity = b->capacity };

	if (off < sizeof(cfg) && len <= sizeof(cfg) - off)
		memcpy(data, (uint8_t *)&cfg + off, len);
}

/* Runs one request; returns the virtio status and adds the bytes written
 * into device-writable data buffers to *written. */
static uint8_t blk_request(struct virtio_blk *b,
			   const struct virtq_chain *c, unsigned first,
			   unsigned last, const struct virtio_blk_outhdr *h,
			   uint32_t *written)
{
	uint64_t off = h->sector * SECTOR_SIZE, total = 0;

	for (unsigned i = first; i < last; i++)
		total += c->bufs[i].len;
	switch (h->type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (h->sector > b->capacity ||
		    total > (b->capacity - h->sector) * SECTOR_SIZE)
			return VIRTIO_BLK_S_IOERR;
		if (h->type == VIRTIO_BLK_T_OUT && b->read_only)
			return VIRTIO_BLK_S_IOERR;
		for (unsigned i = first; i < last; i++) {
			const struct virtq_buf *buf = &c->bufs[i];
			ssize_t n;

			if (h->type == VIRTIO_BLK_T_IN) {
				if (!buf->device_writes)
					return VIRTIO_BLK_S_IOERR;
				n = ember_pread_full(b->fd, buf->hva, buf->len,
						     (off_t)off);
				if (n < 0)
					goto io_error;
				/* Past the end of a short file: zeros. */
				memset(buf->hva + n, 0, buf->len - (size_t)n);
				*written += buf->len;
			} else if (ember_pwrite_full(b->fd, buf->hva, buf->len,
						     (off_t)off) < 0) {
				goto io_error;
			}
			off += buf->len;
		}
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_FLUSH:
		if (fsync(b->fd) < 0)
			goto io_error;
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_GET_ID:
		if (first == last || !c->bufs[first].device_writes)
			return VIRTIO_BLK_S_IOERR;
		{
			uint32_t n = EMBER_MIN(c->bufs[first].len,
					       (uint32_t)VIRTIO_BLK_ID_BYTES);

			memcpy(c->bufs[first].hva, b->serial, n);
			*written += n;
		}
		return VIRTIO_BLK_S_OK;
	default:
		return VIRTIO_BLK_S_UNSUPP;
	}
io_error:
	olog_error(b->m->id, "drive %s: %s", b->path, strerror(errno));
	return VIRTIO_BLK_S_IOERR;
}

static void blk_notify(void *dev, struct virtio_mmio *t, unsigned qi)
{
	struct virtio_blk *b = dev;
	struct virtq *q = &t->queues[qi];
	struct virtq_chain c;
	bool used = false;

	while (virtq_pop(t, q, &c) == 1) {
		struct virtio_blk_outhdr h;
		struct virtq_buf *st = &c.bufs[c.n - 1];
		uint32_t written = 0;
		uint8_t status;

		if (c.n < 2 || c.bufs[0].len < sizeof(h) ||
		    c.bufs[0].device_writes || !st->device_writes ||
		    st->len < 1) {
			olog_debug(b->m->id, "drive %s: malformed request",
				   b->path);
			virtq_push(t, q, c.head, 0);
			used = true;
			continue;
		}
		memcpy(&h, c.bufs[0].hva, sizeof(h));
		/* The status byte is the last byte of the last buffer. */
		status = blk_request(b, &c, 1, c.n - 1, &h, &written);
		st->hva[st->len - 1] = status;
		virtq_push(t, q, c.head, written + 1);
		used = true;
	}
	if (used)
		virtio_mmio_signal_used(t);
}

static void blk_teardown(void *dev)
{
	struct virtio_blk *b = dev;

	ember_close(&b->fd);
	free(b);
}

static const struct virtio_dev_ops blk_ops_rw = {
	.name = "virtio-blk",
	.device_id = VIRTIO_ID_BLOCK,
	.features = 1ULL << VIRTIO_BLK_F_FLUSH,
	.num_queues = 1,
	.config_read = blk_config_read,
	.queue_notify = blk_notify,
	.teardown = blk_teardown,
};

static const struct virtio_dev_ops blk_ops_ro = {
	.name = "virtio-blk",
	.device_id = VIRTIO_ID_BLOCK,
	.features = (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_BLK_F_RO),
	.num_queues = 1,
	.config_read = blk_config_read,
	.queue_notify = blk_notify,
	.teardown = blk_teardown,
};

int virtio_blk_setup(struct machine *m, const char *path, bool read_only,
		     const char *drive_id)
{
	struct virtio_blk *b = calloc(1, sizeof(*b));
	struct stat st;
	int ret;

	if (!b)
		return -ENOMEM;
	b->m = m;
	b->read_only = read_only;
	snprintf(b->path, sizeof(b->path), "%s", path);
	strncpy(b->serial, drive_id ? drive_id : "", sizeof(b->serial));
	b->fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (b->fd < 0 || fstat(b->fd, &st) < 0) {
		ret = -errno; /* the caller names the drive to the user */
		blk_teardown(b);
		return ret;
	}
	b->capacity = (uint64_t)st.st_size / SECTOR_SIZE;
	return virtio_mmio_add(m, read_only ? &blk_ops_ro : &blk_ops_rw, b,
			       NULL);
}
