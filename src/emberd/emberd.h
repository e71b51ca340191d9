/* SPDX-License-Identifier: Apache-2.0 */
/*
 * emberd, the control plane: shared state of the process and the
 * operations the REST API and the reconciler both run (ops.c).
 */
#ifndef EMBERD_H
#define EMBERD_H

#include "store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct emberd {
	struct db *db;
	unsigned default_vcpus;
	uint64_t default_memory_mib;
	int64_t default_timeout_s;
	unsigned reconcile_interval_s;
	long agent_timeout_ms;		/* slow calls: create, pause, resume */
	long agent_probe_timeout_ms;	/* GetHostInfo, ListSandboxes */

	pthread_t reconciler;
	bool reconciler_running;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping;

	/* Counters for /metrics. */
	uint64_t requests_total, requests_failed, reconcile_runs;
};

/* An error on its way to the API: HTTP status, code and message. */
struct apierr {
	unsigned status;
	char code[32];
	char message[512];
};

void apierr_set(struct apierr *e, unsigned status, const char *code,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* What a create asks for; the strings are borrowed. */
struct create_args {
	const char *template_name;
	unsigned vcpus;			/* 0: the template's */
	uint64_t memory_mib;		/* 0: the template's */
	int64_t timeout_s;
	const char *on_timeout;
	const char *metadata;		/* JSON object text */
	const char *env;
	bool network;
};

/* Each returns 0 or -errno, with e filled on failure; *out (where given)
 * gets the sandbox as it is afterwards (sandbox_clear it). */
int op_create(struct emberd *d, const struct create_args *a,
	      struct sandbox *out, struct apierr *e);
int op_destroy(struct emberd *d, const char *id, const char *reason,
	       struct sandbox *out, struct apierr *e);
int op_pause(struct emberd *d, const char *id, const char *reason,
	     struct sandbox *out, struct apierr *e);
int op_resume(struct emberd *d, const char *id, struct sandbox *out,
	      struct apierr *e);
int op_set_timeout(struct emberd *d, const char *id, int64_t timeout_s,
		   const char *on_timeout, struct sandbox *out,
		   struct apierr *e);
int op_snapshot_create(struct emberd *d, const char *sandbox_id,
		       const char *name, bool stop_source,
		       struct template *out, struct apierr *e);
int op_snapshot_delete(struct emberd *d, const char *name, struct apierr *e);

/* Picks the host for a sandbox of this size (store.h's hosts): the one up
 * with the most free memory that can hold it. -ENOSPC when none has room,
 * -EHOSTUNREACH when none is up. */
int sched_pick_host(struct emberd *d, uint64_t memory_mib, unsigned vcpus,
		    char host_id[64]);

/* The reconciler (reconcile.c). */
int reconciler_start(struct emberd *d);
void reconciler_stop(struct emberd *d);
/* One pass over every host and every timeout; the thread calls it. */
void reconcile_once(struct emberd *d);

#endif
