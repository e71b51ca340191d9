/* SPDX-License-Identifier: Apache-2.0 */
/* ember-uffd internals: the page server's state (server.c), the working-set
 * file (ws.c) and the handshake (main.c). */
#ifndef EMBER_UFFD_SERVER_H
#define EMBER_UFFD_SERVER_H

#include <ember/header.h>
#include <ember/uffd.h>

#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct interval {
	uint64_t start, end; /* guest offsets, [start, end) */
};

struct queued_fault {
	struct uffd_msg msg;
	uint64_t read_ns; /* when it was read: latency starts here */
};

struct server {
	const char *id; /* log prefix */
	struct ember_header h;
	struct ember_chain chain;
	struct ember_uffd_region *regions; /* sorted by offset */
	size_t n_regions;
	uint64_t max_page;
	uint8_t *bounce; /* max_page bytes, for pages that span ranges */
	int uffd, sig_fd, pid_fd;
	pid_t peer;
	uint64_t start_ns;

	/* Guest ranges the VM gave back (UFFD_EVENT_REMOVE): read as zero. */
	struct interval *removed;
	size_t n_removed, cap_removed;

	struct queued_fault *queue;
	size_t q_head, q_len, q_cap;

	/* Working set: record and replay. */
	const char *record_path;
	uint64_t record_until_ns;
	bool recording;
	uint64_t *ws;
	size_t n_ws, cap_ws;
	uint64_t *prefetch; /* sorted guest offsets still to install */
	size_t n_prefetch, prefetch_pos;
	uint64_t prefetch_page;
	bool prefetch_announced;
	bool prefetch_all;	/* eager: every page of guest memory */
	uint64_t prefetch_start_ns, prefetch_ns;
	uint64_t record_tail_ns;	/* recording after SIGUSR2 */
	const char *mode;	/* "lazy", "record", "prefetch", "eager" */

	/* "ready" on stdout and ready_fd: after the handshake, or once the
	 * prefetch is done with ready_after_prefetch. */
	int ready_fd;
	bool ready_after_prefetch, ready_announced;

	/* Metrics. */
	const char *metrics_path;
	uint64_t faults, bytes_copied, zero_pages, prefetched_pages;
	uint64_t already_present, remove_events, eagain_retries;
	uint64_t *lat_ns;
	size_t n_lat, cap_lat;

	bool stop;
	int exit_status;
};

/* Serves until the VM goes away (0) or a fatal error (1). */
int server_run(struct server *s);
/* Writes metrics JSON to s->metrics_path (atomically) and logs a summary. */
void server_write_metrics(struct server *s, bool log_it);
/* Sorts the working set to install and drops duplicates. */
void server_sort_prefetch(struct server *s);
/* Writes the recorded working set, if recording. */
void server_finish_recording(struct server *s);
/* Prints "ready" and writes it to ready_fd (closed then), once. */
void server_announce_ready(struct server *s);

/* The working-set file (ws.c): "EMBERWS2", page size, the chain it was
 * recorded on, the guest offsets of faulted pages in fault order, XXH3. */
int ws_write(const char *path, const struct ember_header *h,
	     uint64_t page_size, const uint64_t *offs, size_t n);
/* Reads and checks a working set against the chain of h (same base layer
 * and memory size). why on -EINVAL (corrupt or stale). */
int ws_read(const char *path, const struct ember_header *h,
	    uint64_t *page_size, uint64_t **offs, size_t *n, char *why,
	    size_t why_size);

#endif
