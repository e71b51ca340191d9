/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ember-init internals: the event loop (main.c), connections and streams,
 * command execution (exec.c), file requests (files.c) and the guest
 * system duties (system.c).
 *
 * Ownership: every stream belongs to one connection while that connection
 * lives. When a connection goes, its streams are detached (conn = NULL):
 * writes are aborted, reads closed, running commands killed; an exec
 * stream then waits for its reap. Objects are only freed by the sweep at
 * the end of a loop iteration, so handlers never see freed memory: they
 * check the done and dead flags instead.
 */
#ifndef EMBER_INIT_H
#define EMBER_INIT_H

#include <ember/agent_proto.h>

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Output queued for one connection: above OUT_HIGH the agent stops
 * reading the pipes and files that feed it (back-pressure); above
 * OUT_HARD it stops reading requests from the host as well. */
#define OUT_HIGH (512u * 1024)
#define OUT_HARD (4u * 1024 * 1024)
/* stdin queued for one command before the agent stops reading the
 * connection that feeds it. */
#define STDIN_HIGH (1024u * 1024)
/* After a command exits, output pipes that stay silent this long (held
 * open by a background child) are closed and the result is sent. */
#define EXIT_GRACE_NS (2000ull * 1000 * 1000)

struct outbuf {
	struct outbuf *next;
	size_t len, off;
	uint8_t data[];
};

struct conn {
	struct conn *next;
	int fd;
	char name[32]; /* log id, "conn-N" */
	struct ember_agent_reader rd;
	struct outbuf *out_head, *out_tail;
	size_t out_bytes;
	bool closing; /* no more requests; closed once the answers are out */
	uint64_t close_deadline_ns;
	bool failed; /* a write failed: to be torn down by the loop */
	bool dead;   /* torn down; freed by the sweep */
};

enum stream_kind { STREAM_EXEC, STREAM_WRITE, STREAM_READ };

struct stream {
	struct stream *next;
	struct conn *conn; /* NULL once the connection is gone */
	uint32_t id;
	enum stream_kind kind;
	bool done; /* answered or abandoned; freed by the sweep */

	/* exec */
	pid_t pid;
	int out_fd, err_fd, in_fd;
	struct outbuf *in_head, *in_tail;
	size_t in_bytes;
	bool in_eof, exited, timed_out;
	int status;
	uint64_t deadline_ns, quiet_since_ns;

	/* write and read */
	int fd;
	unsigned mode;
	uint64_t size;
	char path[PATH_MAX];
	char tmp[PATH_MAX];
};

struct agent {
	bool guest;	  /* PID 1 duties: mounts, hostname, boot timer */
	bool allow_clock; /* set the clock on reidentify outside a guest */
	char token[EMBER_AGENT_TOKEN_MAX + 1];
	char sandbox_id[EMBER_AGENT_ID_MAX + 1];
	char hostname[EMBER_AGENT_HOSTNAME_MAX + 1];
	uint64_t start_ns;
	struct conn *conns;
	struct stream *streams;
	unsigned conn_serial;
};

extern struct agent agent;

/* main.c */
int conn_send(struct conn *c, uint8_t type, uint32_t id, const void *p,
	      size_t len);
/* Sends a JSON payload; steals j. */
int conn_send_json(struct conn *c, uint8_t type, uint32_t id, json_t *j);
/* Sends an ERROR {"error", "errno", "code"}; err is a positive errno. */
void conn_send_error(struct conn *c, uint32_t id, int err, const char *fmt,
		     ...) __attribute__((format(printf, 4, 5)));
struct stream *stream_new(struct conn *c, uint32_t id,
			  enum stream_kind kind);
bool conn_output_full(const struct conn *c);

/* exec.c */
void exec_start(struct conn *c, uint32_t id, json_t *req);
void exec_signal(struct conn *c, uint32_t id, json_t *req);
void exec_stdin(struct stream *s, const uint8_t *p, size_t len, bool eof);
void exec_on_output(struct stream *s, bool is_stderr);
void exec_on_stdin_writable(struct stream *s);
void exec_reaped(pid_t pid, int status);
void exec_tick(struct stream *s, uint64_t now_ns);
void exec_detach(struct stream *s);
unsigned exec_count(void);

/* files.c */
void file_write_start(struct conn *c, uint32_t id, json_t *req);
void file_write_data(struct stream *s, const uint8_t *p, size_t len,
		     bool eof);
void file_read_start(struct conn *c, uint32_t id, json_t *req);
void file_read_pump(struct stream *s);
void file_detach(struct stream *s);
void file_stat(struct conn *c, uint32_t id, json_t *req);
void file_list(struct conn *c, uint32_t id, json_t *req);
void file_remove(struct conn *c, uint32_t id, json_t *req);

/* system.c */
void system_guest_setup(void);
void system_read_cmdline(char *token, size_t token_size, char *sandbox_id,
			 size_t id_size, char *hostname, size_t host_size,
			 uint32_t *port);
void system_boot_signal(void);
int system_set_hostname(const char *name);
/* Resolves "name", "uid" or "uid:gid" from /etc/passwd (no NSS). */
int system_lookup_user(const char *spec, uid_t *uid, gid_t *gid, char *home,
		       size_t home_size, char *name, size_t name_size);
void system_reidentify(struct conn *c, uint32_t id, json_t *req);

#endif
