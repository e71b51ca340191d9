/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ember-vmm's front end: the microVM's state machine and the Firecracker
 * HTTP API that drives it.
 *
 *   NOT_STARTED --InstanceStart--> RUNNING <--PATCH /vm--> PAUSED
 *        |                            |                      |
 *        |                            +--guest ended--> EXITED <--+
 *        +--PUT /snapshot/load--> PAUSED or RUNNING
 *
 * Invariants: the configuration changes only in NOT_STARTED; vm is NULL
 * exactly in NOT_STARTED; EXITED is final (the process then exits). A
 * snapshot is created only in PAUSED, and loaded only in NOT_STARTED
 * before any configuration for a cold boot (configured stays false).
 *
 * Requests run one at a time on the HTTP server's thread; the main thread
 * waits for signals, the guest's end and wake_fd (written whenever the
 * state changes), and reads state and vm under lock.
 */
#ifndef EMBER_VMM_API_H
#define EMBER_VMM_API_H

#include "config.h"
#include "vm.h"

#include <ember/http.h>

#include <pthread.h>

enum vmm_state {
	VMM_NOT_STARTED,
	VMM_RUNNING,
	VMM_PAUSED,
	VMM_EXITED,
};

struct vmm {
	pthread_mutex_t lock;
	enum vmm_state state;
	struct vmm_config cfg;
	struct vm *vm;
	bool configured; /* a cold-boot configuration request succeeded */
	int wake_fd; /* eventfd */
	struct ember_http_server *http;
	char sock_path[108]; /* "" when there is no API socket */
};

/* Firecracker's name of the state, as in GET /. */
const char *vmm_state_name(enum vmm_state state);

/* 0 or -errno. */
int vmm_init(struct vmm *vmm, const char *id);
/* Stops the API, destroys the VM, removes the socket, closes the fds. */
void vmm_fini(struct vmm *vmm);

/* InstanceStart: builds and starts the VM from vmm->cfg. Returns 0, or
 * -errno with a message for the user in err, which the caller logs. Takes
 * the lock. */
int vmm_boot(struct vmm *vmm, char *err, size_t errlen);

/* Creates the socket and starts serving the API on it. 0 or -errno
 * (logged). */
int api_start(struct vmm *vmm, const char *sock_path);

/* The request handler (ember_http_handler), exposed for tests. */
void api_handle(void *ctx, const struct ember_http_request *req,
		struct ember_http_response *resp);

#endif
