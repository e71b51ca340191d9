// SPDX-License-Identifier: Apache-2.0
/*
 * The page server's loop: one thread polls the userfaultfd, a signalfd and
 * a pidfd of the VMM.
 *
 *   handshake done ──▶ SERVING ◀──────────────┐
 *                        │ uffd readable:      │
 *                        │  read events; REMOVE/UNMAP go into the removed
 *                        │  set at once, faults into a FIFO queue
 *                        │ queue: serve each fault (UFFDIO_COPY from the
 *                        │  layer the header names, UFFDIO_ZEROPAGE for
 *                        │  zero and removed ranges); EEXIST = served
 *                        │  already (wake the waiter); EAGAIN = read
 *                        │  events, retry
 *                        │ prefetch pending: install one run, loop ─┘
 *                        ▼
 *   ESRCH, pidfd readable (VMM exited), POLLHUP/POLLERR: exit 0
 *   SIGTERM/SIGINT: exit 0; SIGUSR1: write metrics, go on; SIGUSR2: the
 *   guest is ready: write metrics, end the recording a tail later
 *
 * Invariants:
 *   - a page is filled only from the layer the header maps it to, or with
 *     zeros (a zero range, or a range the VM removed);
 *   - a REMOVE is applied when it is read, before any fault read after it
 *     is served, and before any queued fault is retried: once the kernel
 *     has told us a range is gone, nothing but zeros goes there;
 *   - faults are served in the order they were read (vCPUs fault
 *     concurrently; the kernel queues them).
 */
#include "server.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define READ_BATCH 64
#define PREFETCH_RUN_MAX (2u << 20) /* bytes per UFFDIO_COPY */
#define EAGAIN_LIMIT_NS (10ull * 1000 * 1000 * 1000)

enum served { SERVED_COPY, SERVED_ZERO, SERVED_EXISTED };

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t n;
	void *q;

	if (need <= *cap)
		return true;
	n = *cap ? *cap * 2 : 64;
	while (n < need)
		n *= 2;
	q = realloc(*p, n * elem);
	if (!q)
		return false;
	*p = q;
	*cap = n;
	return true;
}

/* ---- the removed set ---------------------------------------------------- */

/* Adds [start, end), merging with neighbours; the set stays sorted. */
static int removed_add(struct server *s, uint64_t start, uint64_t end)
{
	size_t i = 0, j;

	while (i < s->n_removed && s->removed[i].end < start)
		i++;
	j = i;
	while (j < s->n_removed && s->removed[j].start <= end) {
		start = EMBER_MIN(start, s->removed[j].start);
		end = EMBER_MAX(end, s->removed[j].end);
		j++;
	}
	if (i == j) {
		if (!grow((void **)&s->removed, &s->cap_removed,
			  s->n_removed + 1, sizeof(*s->removed)))
			return -ENOMEM;
		memmove(&s->removed[i + 1], &s->removed[i],
			(s->n_removed - i) * sizeof(*s->removed));
		s->n_removed++;
	} else if (j > i + 1) {
		memmove(&s->removed[i + 1], &s->removed[j],
			(s->n_removed - j) * sizeof(*s->removed));
		s->n_removed -= j - i - 1;
	}
	s->removed[i] = (struct interval){start, end};
	return 0;
}

/* The removed interval that holds off, or NULL. O(log n). */
static const struct interval *removed_find(const struct server *s,
					   uint64_t off)
{
	size_t lo = 0, hi = s->n_removed;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->removed[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < s->n_removed && s->removed[lo].start <= off)
		return &s->removed[lo];
	return NULL;
}

/* ---- address translation ------------------------------------------------ */

static const struct ember_uffd_region *region_of_addr(const struct server *s,
						      uint64_t addr)
{
	for (size_t i = 0; i < s->n_regions; i++) {
		const struct ember_uffd_region *r = &s->regions[i];

		if (addr >= r->base_host_virt_addr &&
		    addr - r->base_host_virt_addr < r->size)
			return r;
	}
	return NULL;
}

static const struct ember_uffd_region *region_of_off(const struct server *s,
						     uint64_t off)
{
	for (size_t i = 0; i < s->n_regions; i++) {
		const struct ember_uffd_region *r = &s->regions[i];

		if (off >= r->offset && off - r->offset < r->size)
			return r;
	}
	return NULL;
}

/* ---- ioctls --------------------------------------------------------------
 * Each returns 0, or -errno with *done the bytes installed before it. */

static int uffd_copy(struct server *s, uint64_t dst, const void *src,
		     uint64_t len, uint64_t *done)
{
	struct uffdio_copy c = {
		.dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len,
	};

	*done = 0;
	if (ioctl(s->uffd, UFFDIO_COPY, &c) == 0) {
		*done = len;
		return 0;
	}
	if (c.copy > 0)
		*done = (uint64_t)c.copy;
	return -errno;
}

static int uffd_zero(struct server *s, uint64_t dst, uint64_t len,
		     uint64_t *done)
{
	struct uffdio_zeropage z = {.range = {.start = dst, .len = len}};
	int rc;

	*done = 0;
	if (ioctl(s->uffd, UFFDIO_ZEROPAGE, &z) == 0) {
		*done = len;
		return 0;
	}
	rc = -errno;
	if (z.zeropage > 0)
		*done = (uint64_t)z.zeropage;
	if (rc != -EINVAL)
		return rc;
	/* hugetlbfs has no zero page: copy zeros page by page. */
	memset(s->bounce, 0, s->max_page);
	while (*done < len) {
		uint64_t n = EMBER_MIN(len - *done, s->max_page), d;

		rc = uffd_copy(s, dst + *done, s->bounce, n, &d);
		*done += d;
		if (rc)
			return rc;
	}
	return 0;
}

static void uffd_wake(struct server *s, uint64_t addr, uint64_t len)
{
	struct uffdio_range r = {.start = addr, .len = len};

	if (ioctl(s->uffd, UFFDIO_WAKE, &r) < 0 && errno != ESRCH)
		olog_warn(s->id, "UFFDIO_WAKE at 0x%" PRIx64 ": %s", addr,
			  strerror(errno));
}

/* ---- serving one page ----------------------------------------------------
 * Installs the page at guest offset off (host address addr, ps bytes).
 * 0 with *how, or -errno (-EAGAIN: retry after reading events; -ESRCH:
 * the VM is gone). */
static int serve_page(struct server *s, uint64_t addr, uint64_t off,
		      uint64_t ps, enum served *how)
{
	const struct ember_hdr_range *r = ember_header_lookup(&s->h, off);
	const struct interval *rm = removed_find(s, off);
	uint64_t done;
	int rc;

	if (rm && rm->end >= off + ps) {
		*how = SERVED_ZERO;
		rc = uffd_zero(s, addr, ps, &done);
	} else if (!rm && r->guest_off + r->len >= off + ps) {
		if (r->layer == EMBER_LAYER_ZERO) {
			*how = SERVED_ZERO;
			rc = uffd_zero(s, addr, ps, &done);
		} else {
			const uint8_t *src = s->chain.maps[r->layer] +
					     r->layer_off + (off - r->guest_off);

			*how = SERVED_COPY;
			rc = uffd_copy(s, addr, src, ps, &done);
		}
	} else {
		/* A page larger than a block, or partly removed. */
		ember_chain_read(&s->chain, off, s->bounce, ps);
		for (uint64_t o = off; o < off + ps;) {
			const struct interval *iv = removed_find(s, o);

			if (iv) {
				uint64_t e = EMBER_MIN(iv->end, off + ps);

				memset(s->bounce + (o - off), 0, e - o);
				o = e;
			} else {
				o += EMBER_MIN(s->h.block_size, off + ps - o);
			}
		}
		*how = SERVED_COPY;
		rc = uffd_copy(s, addr, s->bounce, ps, &done);
	}
	if (rc == -EEXIST) {
		*how = SERVED_EXISTED;
		uffd_wake(s, addr, ps);
		return 0;
	}
	return rc;
}

/* ---- events ------------------------------------------------------------- */

static void note_gone(struct server *s, const char *why)
{
	if (!s->stop)
		olog_info(s->id, "VM gone (%s): stopping", why);
	s->stop = true;
	s->exit_status = EMBER_EXIT_OK;
}

static void handle_remove(struct server *s, uint64_t start, uint64_t end)
{
	/* The event names host addresses; the set holds guest offsets. */
	for (size_t i = 0; i < s->n_regions; i++) {
		const struct ember_uffd_region *r = &s->regions[i];
		uint64_t rs = r->base_host_virt_addr, re = rs + r->size;
		uint64_t a = EMBER_MAX(start, rs), b = EMBER_MIN(end, re);

		if (a >= b)
			continue;
		if (removed_add(s, r->offset + (a - rs), r->offset + (b - rs)))
			olog_error(s->id, "out of memory for removed ranges");
	}
	s->remove_events++;
}

/* Reads every pending event without blocking. REMOVE and UNMAP are
 * applied now; faults are queued. Returns the number of messages read. */
static int read_events(struct server *s)
{
	struct uffd_msg msgs[READ_BATCH];
	int total = 0;

	for (;;) {
		ssize_t n = read(s->uffd, msgs, sizeof(msgs));
		uint64_t now = ember_now_ns();

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				olog_error(s->id, "read userfaultfd: %s",
					   strerror(errno));
			return total;
		}
		if (n == 0)
			return total;
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			struct uffd_msg *m = &msgs[i];

			total++;
			switch (m->event) {
			case UFFD_EVENT_PAGEFAULT:
				if (!grow((void **)&s->queue, &s->q_cap,
					  s->q_head + s->q_len + 1,
					  sizeof(*s->queue))) {
					olog_error(s->id, "out of memory");
					continue;
				}
				s->queue[s->q_head + s->q_len++] =
					(struct queued_fault){*m, now};
				break;
			case UFFD_EVENT_REMOVE:
				handle_remove(s, m->arg.remove.start,
					      m->arg.remove.end);
				break;
			case UFFD_EVENT_UNMAP:
				handle_remove(s, m->arg.remove.start,
					      m->arg.remove.end);
				break;
			default:
				olog_debug(s->id, "ignored event 0x%x",
					   m->event);
				break;
			}
		}
		if ((size_t)n < sizeof(msgs))
			return total;
	}
}

static void record_fault(struct server *s, uint64_t off)
{
	if (!s->recording)
		return;
	if (ember_now_ns() >= s->record_until_ns) {
		server_finish_recording(s);
		return;
	}
	if (grow((void **)&s->ws, &s->cap_ws, s->n_ws + 1, sizeof(*s->ws)))
		s->ws[s->n_ws++] = off;
}

static void serve_fault(struct server *s, const struct queued_fault *q)
{
	uint64_t addr = q->msg.arg.pagefault.address, start;
	const struct ember_uffd_region *r = region_of_addr(s, addr);
	enum served how;
	uint64_t page, off;
	int rc;

	if (!r) {
		olog_error(s->id, "fault at 0x%" PRIx64
				  " outside every region: not served",
			   addr);
		return;
	}
	page = addr & ~(r->page_size - 1);
	off = r->offset + (page - r->base_host_virt_addr);
	start = ember_now_ns();
	for (;;) {
		rc = serve_page(s, page, off, r->page_size, &how);
		if (rc != -EAGAIN)
			break;
		/* The VM's memory map is changing: take in the events
		 * (a REMOVE may concern this very page) and try again. */
		s->eagain_retries++;
		if (read_events(s) == 0)
			usleep(20);
		if (ember_now_ns() - start > EAGAIN_LIMIT_NS) {
			olog_error(s->id, "fault at 0x%" PRIx64
					  ": EAGAIN for 10 s, dropped",
				   addr);
			return;
		}
	}
	if (rc == -ESRCH) {
		note_gone(s, "ESRCH");
		return;
	}
	if (rc) {
		olog_error(s->id, "fault at 0x%" PRIx64 " (guest 0x%" PRIx64
				  "): %s",
			   addr, off, strerror(-rc));
		return;
	}
	s->faults++;
	if (how == SERVED_COPY)
		s->bytes_copied += r->page_size;
	else if (how == SERVED_ZERO)
		s->zero_pages++;
	else
		s->already_present++;
	if (grow((void **)&s->lat_ns, &s->cap_lat, s->n_lat + 1,
		 sizeof(*s->lat_ns)))
		s->lat_ns[s->n_lat++] = ember_now_ns() - q->read_ns;
	record_fault(s, off);
}

static void serve_queue(struct server *s)
{
	while (s->q_len && !s->stop) {
		struct queued_fault q = s->queue[s->q_head];

		s->q_head++;
		s->q_len--;
		serve_fault(s, &q);
	}
	s->q_head = 0;
}

/* ---- prefetch ------------------------------------------------------------
 * One step installs the next run: pages contiguous in guest memory, in one
 * region, one header range, and on one side of the removed set. */
static void prefetch_step(struct server *s)
{
	uint64_t off = s->prefetch[s->prefetch_pos], ps = s->prefetch_page;
	const struct ember_uffd_region *reg = region_of_off(s, off);
	const struct ember_hdr_range *r = ember_header_lookup(&s->h, off);
	const struct interval *rm = removed_find(s, off);
	uint64_t len = ps, addr, done;
	size_t n = 1;
	int rc;

	if (!reg || ps < reg->page_size || ps % reg->page_size ||
	    r->guest_off + r->len < off + ps) {
		s->prefetch_pos++; /* left to the fault path */
		return;
	}
	while (s->prefetch_pos + n < s->n_prefetch &&
	       s->prefetch[s->prefetch_pos + n] == off + len &&
	       len + ps <= PREFETCH_RUN_MAX &&
	       off + len + ps <= reg->offset + reg->size &&
	       off + len + ps <= r->guest_off + r->len &&
	       (removed_find(s, off + len) != NULL) == (rm != NULL)) {
		len += ps;
		n++;
	}
	addr = reg->base_host_virt_addr + (off - reg->offset);
	if (rm || r->layer == EMBER_LAYER_ZERO)
		rc = uffd_zero(s, addr, len, &done);
	else
		rc = uffd_copy(s, addr,
			       s->chain.maps[r->layer] + r->layer_off +
				       (off - r->guest_off),
			       len, &done);
	s->prefetched_pages += done / ps;
	if (rc == 0 || rc == -EEXIST) {
		/* EEXIST: a page of the run was there; go on after it. */
		s->prefetch_pos += rc ? done / ps + 1 : n;
		if (!rm && r->layer != EMBER_LAYER_ZERO)
			s->bytes_copied += done;
		return;
	}
	if (rc == -EAGAIN) {
		s->prefetch_pos += done / ps;
		read_events(s);
		return;
	}
	if (rc == -ESRCH) {
		note_gone(s, "ESRCH");
		return;
	}
	olog_warn(s->id, "prefetch at guest 0x%" PRIx64 ": %s; stopped", off,
		  strerror(-rc));
	s->prefetch_pos = s->n_prefetch;
}

static void prefetch_done_check(struct server *s)
{
	if (s->prefetch_announced || s->prefetch_pos < s->n_prefetch)
		return;
	s->prefetch_announced = true;
	if (s->prefetch) {
		s->prefetch_ns = ember_now_ns() - s->prefetch_start_ns;
		olog_info(s->id, "prefetched %" PRIu64 " pages in %.1f ms",
			  s->prefetched_pages, (double)s->prefetch_ns / 1e6);
		printf("prefetched %" PRIu64 "\n", s->prefetched_pages);
		fflush(stdout);
	}
	if (s->ready_after_prefetch)
		server_announce_ready(s);
}

void server_announce_ready(struct server *s)
{
	if (s->ready_announced)
		return;
	s->ready_announced = true;
	olog_info(s->id, "ready: %zu regions, %" PRIu64 " bytes, page %" PRIu64
			 " bytes, generation %u, %s",
		  s->n_regions, s->h.total_size, s->max_page, s->h.generation,
		  s->mode);
	printf("ready\n");
	fflush(stdout);
	if (s->ready_fd >= 0) {
		if (ember_write_full(s->ready_fd, "ready\n", 6))
			olog_warn(s->id, "--ready-fd %d: %s", s->ready_fd,
				  strerror(errno));
		close(s->ready_fd);
		s->ready_fd = -1;
	}
}

/* ---- metrics and the working set --------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *sorted, size_t n, double p)
{
	size_t i;

	if (!n)
		return 0;
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)sorted[i] / 1000.0;
}

void server_sort_prefetch(struct server *s)
{
	size_t n = 0;

	if (!s->n_prefetch)
		return;
	qsort(s->prefetch, s->n_prefetch, sizeof(*s->prefetch), cmp_u64);
	for (size_t i = 0; i < s->n_prefetch; i++)
		if (!n || s->prefetch[i] != s->prefetch[n - 1])
			s->prefetch[n++] = s->prefetch[i];
	s->n_prefetch = n;
}

void server_write_metrics(struct server *s, bool log_it)
{
	uint64_t *sorted = NULL;
	double p50 = 0, p90 = 0, p99 = 0;
	json_t *o;
	char *text;

	if (s->n_lat) {
		sorted = malloc(s->n_lat * sizeof(*sorted));
		if (sorted) {
			memcpy(sorted, s->lat_ns, s->n_lat * sizeof(*sorted));
			qsort(sorted, s->n_lat, sizeof(*sorted), cmp_u64);
			p50 = pct_us(sorted, s->n_lat, 50);
			p90 = pct_us(sorted, s->n_lat, 90);
			p99 = pct_us(sorted, s->n_lat, 99);
		}
	}
	free(sorted);
	if (log_it)
		olog_info(s->id, "faults %" PRIu64 ", bytes copied %" PRIu64
				 ", zero pages %" PRIu64
				 ", prefetched pages %" PRIu64
				 ", latency p50 %.1f us p90 %.1f us p99 %.1f us",
			  s->faults, s->bytes_copied, s->zero_pages,
			  s->prefetched_pages, p50, p90, p99);
	if (!s->metrics_path)
		return;
	o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,"
		      "s:s,s:I,s:f}",
		      "faults", (json_int_t)s->faults, "bytes_copied",
		      (json_int_t)s->bytes_copied, "zero_pages",
		      (json_int_t)s->zero_pages, "prefetched_pages",
		      (json_int_t)s->prefetched_pages, "already_present",
		      (json_int_t)s->already_present, "remove_events",
		      (json_int_t)s->remove_events, "eagain_retries",
		      (json_int_t)s->eagain_retries, "peer_pid",
		      (json_int_t)s->peer, "fault_p50_us", p50, "fault_p90_us",
		      p90, "fault_p99_us", p99, "uptime_s",
		      (double)(ember_now_ns() - s->start_ns) / 1e9, "mode",
		      s->mode, "prefetch_planned", (json_int_t)s->n_prefetch,
		      "prefetch_ms", (double)s->prefetch_ns / 1e6);
	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!text ||
	    ember_write_file_atomic(s->metrics_path, text, strlen(text),
				    0644))
		olog_warn(s->id, "could not write metrics to %s",
			  s->metrics_path);
	free(text);
}

void server_finish_recording(struct server *s)
{
	int rc;

	if (!s->recording)
		return;
	s->recording = false;
	rc = ws_write(s->record_path, &s->h, s->regions[0].page_size, s->ws,
		      s->n_ws);
	if (rc)
		olog_error(s->id, "write working set %s: %s", s->record_path,
			   strerror(-rc));
	else
		olog_info(s->id, "recorded %zu pages to %s", s->n_ws,
			  s->record_path);
}

/* ---- the loop ----------------------------------------------------------- */

static void handle_signal(struct server *s)
{
	struct signalfd_siginfo si;

	while (read(s->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGUSR1) {
			server_write_metrics(s, true);
		} else if (si.ssi_signo == SIGUSR2) {
			/* The guest is ready: the working set is what it
			 * faulted until now and a short while after. */
			uint64_t end = ember_now_ns() + s->record_tail_ns;

			if (s->recording && end < s->record_until_ns)
				s->record_until_ns = end;
			server_write_metrics(s, true);
		} else {
			olog_info(s->id, "signal %u: stopping", si.ssi_signo);
			s->stop = true;
			s->exit_status = EMBER_EXIT_OK;
		}
	}
}

int server_run(struct server *s)
{
	while (!s->stop) {
		struct pollfd p[3] = {
			{.fd = s->uffd, .events = POLLIN},
			{.fd = s->sig_fd, .events = POLLIN},
			{.fd = s->pid_fd, .events = POLLIN},
		};
		bool prefetching = s->prefetch_pos < s->n_prefetch;
		int timeout = prefetching ? 0 : 1000, n;

		if (s->recording) {
			uint64_t now = ember_now_ns();

			if (now >= s->record_until_ns) {
				server_finish_recording(s);
			} else {
				uint64_t ms = (s->record_until_ns - now) /
						      1000000 + 1;

				timeout = (int)EMBER_MIN((uint64_t)timeout,
							 ms);
			}
		}
		n = poll(p, s->pid_fd >= 0 ? 3 : 2, timeout);
		if (n < 0 && errno != EINTR) {
			olog_error(s->id, "poll: %s", strerror(errno));
			s->exit_status = EMBER_EXIT_FAILURE;
			break;
		}
		if (n > 0 && (p[1].revents & POLLIN))
			handle_signal(s);
		if (n > 0 && (p[0].revents & POLLIN))
			read_events(s);
		serve_queue(s);
		if (n > 0 && (p[0].revents & (POLLHUP | POLLERR)))
			note_gone(s, "userfaultfd hung up");
		if (n > 0 && (p[2].revents & POLLIN))
			note_gone(s, "VMM process exited");
		if (!s->stop && prefetching)
			prefetch_step(s);
		prefetch_done_check(s);
	}
	return s->exit_status;
}
