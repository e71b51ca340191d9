/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-rng: the guest's buffers are filled from the host's getrandom. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <linux/virtio_ids.h>

#include "ember/log.h"
#include "virtio_mmio.h"

struct virtio_rng {
	struct machine *m;
};

static void rng_notify(void *dev, struct virtio_mmio *t, unsigned qi)
{
	struct virtio_rng *r = dev;
	struct virtq *q = &t->queues[qi];
	struct virtq_chain c;
	bool used = false;

	while (virtq_pop(t, q, &c) == 1) {
		uint32_t written = 0;

		for (unsigned i = 0; i < c.n; i++) {
			struct virtq_buf *b = &c.bufs[i];
			size_t done = 0;

			if (!b->device_writes)
				continue;
			while (done < b->len) {
				ssize_t n = getrandom(b->hva + done,
						      b->len - done, 0);

				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0) {
					olog_error(r->m->id, "getrandom: %s",
						   strerror(errno));
					break;
				}
				done += (size_t)n;
			}
			written += (uint32_t)done;
		}
		virtq_push(t, q, c.head, written);
		used = true;
	}
	if (used)
		virtio_mmio_signal_used(t);
}

static void rng_teardown(void *dev)
{
	free(dev);
}

static const struct virtio_dev_ops rng_ops = {
	.name = "virtio-rng",
	.device_id = VIRTIO_ID_RNG,
	.num_queues = 1,
	.queue_notify = rng_notify,
	.teardown = rng_teardown,
};

int virtio_rng_setup(struct machine *m)
{
	struct virtio_rng *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->m = m;
	return virtio_mmio_add(m, &rng_ops, r, NULL);
}
