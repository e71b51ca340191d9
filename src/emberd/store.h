/* SPDX-License-Identifier: Apache-2.0 */
/*
 * emberd's records: sandboxes and their state machine, templates, hosts,
 * API keys and the event log, on top of db.h.
 *
 * The sandbox state machine. Every change goes through
 * store_sandbox_transition(), which checks it against this table, applies
 * it only if the row is still in the state the caller saw, and logs an
 * event in the same transaction.
 *
 *   starting --> running | error | stopping
 *   running  --> pausing | stopping | error
 *   pausing  --> paused | running (pause failed, VM still up) | error
 *   paused   --> resuming | stopping
 *   resuming --> running | paused (resume failed, snapshot intact) | error
 *   stopping --> stopped | error
 *   error    --> stopping | running (its host lists it running again)
 *            |   resuming (its host may hold a paused snapshot of it)
 *   stopped  --> (none: final)
 *
 * Invariants: a sandbox is never running and paused at once; a paused
 * sandbox has no VMM (its host agent does not list it) but its host keeps
 * its files, so it resumes there; a sandbox in error keeps its row (and
 * whatever its host still has) until it is deleted.
 */
#ifndef EMBERD_STORE_H
#define EMBERD_STORE_H

#include "db.h"

#include <stdbool.h>
#include <stdint.h>

enum sbx_state {
	SBX_STARTING,
	SBX_RUNNING,
	SBX_PAUSING,
	SBX_PAUSED,
	SBX_RESUMING,
	SBX_STOPPING,
	SBX_STOPPED,
	SBX_ERROR,
	SBX_NSTATES,
};

const char *sbx_state_name(enum sbx_state s);
int sbx_state_parse(const char *name, enum sbx_state *out);
bool sbx_transition_allowed(enum sbx_state from, enum sbx_state to);

#define SBX_ID_LEN 40
#define NAME_LEN 128

struct sandbox {
	char id[SBX_ID_LEN];
	char template_name[NAME_LEN];
	char host_id[64];
	enum sbx_state state;
	unsigned vcpus;
	uint64_t memory_mib;
	int64_t timeout_s;
	char on_timeout[8];		/* "pause" or "kill" */
	int64_t expires_at_ms;		/* 0: no deadline (not running) */
	char *metadata;			/* JSON object text */
	char *env;			/* JSON object text */
	char *error;			/* why, in state error; else NULL */
	int generation;			/* last pause's generation, -1 none */
	uint64_t paused_memory_bytes, paused_disk_bytes;
	int64_t created_at_ms, updated_at_ms;
};

void sandbox_clear(struct sandbox *s);
void sandboxes_free(struct sandbox *v, size_t n);

/* Inserts a new sandbox in state starting, with its first event. */
int store_sandbox_insert(struct db *db, const struct sandbox *s);
/* 0, or -ENOENT. Clear *out with sandbox_clear. */
int store_sandbox_get(struct db *db, const char *id, struct sandbox *out);
/* Sandboxes in state (or every state but stopped when state is NULL) on
 * host_id (any host when NULL), oldest first. */
int store_sandbox_list(struct db *db, const char *state, const char *host_id,
		       struct sandbox **out, size_t *n);
/*
 * Moves a sandbox to state `to`, if it is in `from` (any state when from is
 * SBX_NSTATES) and the table above allows it; logs an event with reason.
 * Sets error to reason when `to` is error, and clears it otherwise.
 * Returns 0, -ENOENT (no such sandbox), -EBUSY (it is in another state
 * than from: someone else moved it), -EPERM (the move is not allowed).
 * *was (optional) gets the state it was in.
 */
int store_sandbox_transition(struct db *db, const char *id,
			     enum sbx_state from, enum sbx_state to,
			     const char *reason, enum sbx_state *was);
int store_sandbox_set_expiry(struct db *db, const char *id,
			     int64_t expires_at_ms, int64_t timeout_s,
			     const char *on_timeout);
int store_sandbox_set_paused(struct db *db, const char *id, int generation,
			     uint64_t memory_bytes, uint64_t disk_bytes);
int store_sandbox_set_host(struct db *db, const char *id, const char *host_id);

struct event {
	int64_t id;
	char sandbox_id[SBX_ID_LEN];
	char from_state[16], to_state[16];
	char *reason;
	int64_t at_ms;
};
int store_events_list(struct db *db, const char *sandbox_id,
		      struct event **out, size_t *n);
void events_free(struct event *v, size_t n);

struct template {
	char name[NAME_LEN];
	char kind[12];			/* "base" or "snapshot" */
	unsigned vcpus;
	uint64_t memory_mib;
	char *kernel_path, *rootfs_path;	/* base only */
	char host_id[64];			/* snapshot: host with the files */
	char source_sandbox_id[SBX_ID_LEN];
	uint64_t memory_bytes, disk_bytes;
	int64_t created_at_ms;
};
void template_clear(struct template *t);
void templates_free(struct template *v, size_t n);
/* Registers or updates a base template. */
int store_template_put_base(struct db *db, const char *name,
			    const char *kernel, const char *rootfs,
			    unsigned vcpus, uint64_t memory_mib);
/* -EEXIST when the name is taken. */
int store_template_insert_snapshot(struct db *db, const struct template *t);
int store_template_get(struct db *db, const char *name, struct template *out);
int store_template_list(struct db *db, const char *kind, struct template **out,
			size_t *n);
int store_template_delete(struct db *db, const char *name);

struct host {
	char id[64];
	char url[256];
	char state[12];			/* "unknown", "up", "down" */
	char agent_host_id[64], hostname[128];
	char agent_version[64], vmm_version[64];
	unsigned total_vcpus, free_vcpus;
	uint64_t total_memory_mib, free_memory_mib;
	int64_t last_seen_ms;
	char *last_error;
	int64_t created_at_ms;
};
void hosts_free(struct host *v, size_t n);
/* Adds a host by URL (or finds it); *id_out (optional, 64 bytes) gets its
 * id. */
int store_host_add(struct db *db, const char *url, char *id_out);
int store_host_get(struct db *db, const char *id, struct host *out);
int store_host_list(struct db *db, struct host **out, size_t *n);
int store_host_set_up(struct db *db, const struct host *h);
int store_host_set_down(struct db *db, const char *id, const char *reason);
/* Takes memory and vCPUs off a host's free counts until its next report,
 * so that creates racing each other do not all pick the same host. */
int store_host_reserve(struct db *db, const char *id, uint64_t memory_mib,
		       unsigned vcpus);

/* API keys: the key is shown once; the table keeps its SHA-256. */
#define API_KEY_LEN 48
int store_key_create(struct db *db, const char *name,
		     char key_out[API_KEY_LEN]);
/* 0 when the key is known, -EACCES otherwise. */
int store_key_check(struct db *db, const char *key);

int64_t now_ms(void);

#endif
