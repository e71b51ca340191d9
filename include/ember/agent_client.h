/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Host-side client of the guest agent (ember-init). One struct ember_agent
 * is one connection; calls on it are synchronous and one at a time (open
 * more connections for concurrency: the agent serves them all at once).
 * Every call returns 0 (or a count) or a negative errno; after an ERROR
 * answer of the agent the call returns the agent's -errno and
 * ember_agent_last_error() holds its message. The library does not log.
 * Every blocking wait is bounded by the connection's timeout (or, for
 * exec, by the command's timeout plus that).
 */
#ifndef EMBER_AGENT_CLIENT_H
#define EMBER_AGENT_CLIENT_H

#include <ember/agent_proto.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ember_agent;

/* Connects to a Unix socket the agent listens on (tests, or a guest
 * socket forwarded some other way). timeout_ms bounds every later wait
 * too (0: 30 s). */
int ember_agent_connect_unix(const char *path, const char *token,
			     int timeout_ms, struct ember_agent **out);
/* Connects through the VMM's vsock Unix socket with Firecracker's
 * handshake: "CONNECT <port>\n", answered "OK <host port>\n". */
int ember_agent_connect_vsock(const char *uds_path, uint32_t port,
			      const char *token, int timeout_ms,
			      struct ember_agent **out);
void ember_agent_close(struct ember_agent *a);

int ember_agent_set_token(struct ember_agent *a, const char *token);
void ember_agent_set_timeout(struct ember_agent *a, int timeout_ms);
/* Message of the agent's last ERROR answer (or of a local failure). */
const char *ember_agent_last_error(const struct ember_agent *a);

struct ember_agent_health {
	char version[32];
	unsigned proto;
	uint64_t uptime_ms;
	char sandbox_id[EMBER_AGENT_ID_MAX + 1];
	char hostname[EMBER_AGENT_HOSTNAME_MAX + 1];
	bool pid1;
	unsigned execs; /* commands running now */
};
int ember_agent_health(struct ember_agent *a, struct ember_agent_health *out);

/* Output callbacks return 0 to go on or a negative errno to stop (the
 * command is then killed and the call returns that error). */
typedef int (*ember_agent_output_fn)(void *ctx, const void *buf, size_t len);

struct ember_agent_exec_opts {
	const char *const *argv; /* NULL-terminated, argv[0] looked up in PATH */
	const char *const *env;	 /* "K=V" entries laid over the defaults */
	const char *cwd;	 /* NULL: the user's home, or / */
	const char *user;	 /* name or uid[:gid]; NULL: the agent's */
	int stdin_fd;		 /* -1: /dev/null; else streamed until EOF */
	uint32_t timeout_ms;	 /* 0: one hour; the process group is killed */
	ember_agent_output_fn on_stdout, on_stderr; /* NULL: discarded */
	/* Called once the command runs, with its pid. */
	void (*on_started)(void *ctx, struct ember_agent *a, int pid);
	void *ctx;
};

struct ember_agent_exec_result {
	int exit_code; /* -1 when killed by a signal */
	int signal;    /* 0 when it exited */
	bool timed_out;
	int pid;
};

/* Initialises opts with stdin_fd = -1 and everything else empty. */
void ember_agent_exec_opts_init(struct ember_agent_exec_opts *opts);
int ember_agent_exec(struct ember_agent *a,
		     const struct ember_agent_exec_opts *opts,
		     struct ember_agent_exec_result *res);
/* From inside an exec callback: sends sig to the running command's
 * process group. */
int ember_agent_exec_signal(struct ember_agent *a, int sig);
/* Sends sig to the process group of a command the agent runs for any
 * connection, by the pid its STARTED frame gave. */
int ember_agent_signal_pid(struct ember_agent *a, int pid, int sig);

/* Streams fd (until its end) into path: parents created, written under a
 * temporary name and renamed. *size (optional) gets the bytes written. */
int ember_agent_write_file(struct ember_agent *a, const char *path, int fd,
			   unsigned mode, uint64_t *size);
/* Streams path into fd. */
int ember_agent_read_file(struct ember_agent *a, const char *path, int fd,
			  uint64_t *size);

struct ember_agent_stat {
	char type; /* 'f' file, 'd' folder, 'l' symlink, 'o' other */
	unsigned mode; /* permission bits */
	uint64_t size;
	unsigned uid, gid;
	int64_t mtime_ns;
};
int ember_agent_stat(struct ember_agent *a, const char *path,
		     struct ember_agent_stat *st);

struct ember_agent_dirent {
	char name[256];
	struct ember_agent_stat st;
};
/* *entries is malloc'd (free it); *truncated is set when the folder had
 * more entries than one answer holds. */
int ember_agent_list(struct ember_agent *a, const char *path,
		     struct ember_agent_dirent **entries, size_t *count,
		     bool *truncated);
int ember_agent_remove(struct ember_agent *a, const char *path,
		       bool recursive);

/* After a restore. Fields left 0/NULL are not changed. On success the
 * connection uses new_token from then on. */
struct ember_agent_identity {
	uint64_t realtime_ns; /* guest clock is set to this */
	const void *entropy;  /* mixed into the kernel's pool */
	size_t entropy_len;
	const char *hostname;
	const char *sandbox_id;
	const char *new_token;
};
int ember_agent_reidentify(struct ember_agent *a,
			   const struct ember_agent_identity *id);

/* Low level, for tests and tools: the socket, a fresh stream id, one frame
 * out, one frame in (payload valid until the next receive; -ETIMEDOUT
 * after timeout_ms, -ECONNRESET at end of stream). */
int ember_agent_fd(const struct ember_agent *a);
uint32_t ember_agent_next_id(struct ember_agent *a);
int ember_agent_send_frame(struct ember_agent *a, uint8_t type, uint32_t id,
			   const void *payload, size_t len);
int ember_agent_recv_frame(struct ember_agent *a, struct ember_agent_hdr *h,
			   const uint8_t **payload, int timeout_ms);

#endif
