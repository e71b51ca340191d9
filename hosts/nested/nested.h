/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ember-nested: the nested host launcher. See docs/foundation.md.
 *
 * The pure parts (argument parsing, the need-decision, the frame codec) are
 * kept apart from the process and QEMU code so that unit tests can call them.
 */
#ifndef EMBER_NESTED_H
#define EMBER_NESTED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NESTED_MAX_FORWARDS  16
#define NESTED_MAX_ENV	     64
#define NESTED_MAX_QEMU_ARGS 32
#define NESTED_DEFAULT_STATE "/run/ember/nested"
/* TCP port of the command server inside the nested host. */
#define NESTED_SERVE_PORT 7022

enum nested_cmd {
	NESTED_CMD_NONE = 0,
	NESTED_CMD_HELP,
	NESTED_CMD_VERSION,
	NESTED_CMD_NEED,
	NESTED_CMD_START,
	NESTED_CMD_EXEC,
	NESTED_CMD_RUN,
	NESTED_CMD_STOP,
	NESTED_CMD_SERVE,
};

struct nested_forward {
	uint16_t host_port;
	uint16_t guest_port;
};

struct nested_args {
	enum nested_cmd cmd;
	const char *state_dir; /* NULL: $EMBER_NESTED_STATE or the default */
	const char
	    *images; /* NULL: $EMBER_NESTED_IMAGES or next to the binary */
	struct nested_forward forwards[NESTED_MAX_FORWARDS];
	int n_forwards;
	const char *env[NESTED_MAX_ENV]; /* "K=V" */
	int n_env;
	const char *cwd;
	const char *qemu_args[NESTED_MAX_QEMU_ARGS];
	int n_qemu_args;
	unsigned smp;
	unsigned memory_mb;
	uint64_t scratch_bytes;
	unsigned boot_timeout_s;
	unsigned timeout_s; /* exec: 0 means none */
	bool no_stdin;
	bool quiet;
	uint16_t port;	   /* serve */
	char *const *argv; /* the command (exec, run); NULL-terminated */
	int argc;
};

/*
 * Parses argv (argv[0] is the program name) into *a, filling defaults.
 * Returns 0, or -EINVAL with a one-line reason in err. Never prints.
 */
int nested_parse_args(int argc, char *const argv[], struct nested_args *a,
		      char *err, size_t err_len);

/* "HOST:GUEST", both 1..65535. 0 or -EINVAL. */
int nested_parse_forward(const char *s, struct nested_forward *out);

struct nested_need {
	bool need;
	const char *reason; /* static text */
};

/*
 * Whether this machine needs the nested host, from /proc/cpuinfo's text,
 * whether /dev/kvm opened and answered KVM_GET_API_VERSION, and the value
 * of EMBER_NESTED (NULL when unset; only "0" and "1" override).
 */
struct nested_need nested_decide(const char *cpuinfo, bool kvm_usable,
				 const char *env);

/* True when some "flags" line of cpuinfo holds the word flag. */
bool nested_cpu_has_flag(const char *cpuinfo, const char *flag);

/*
 * The command channel's frames (full description in proto.c):
 * type (1 byte) | payload length (u32, big-endian) | payload.
 */
#define NESTED_FRAME_MAX (1u << 20)
#define NESTED_FRAME_HDR 5

enum nested_frame_type {
	/* client to server */
	FRAME_TOKEN = 'T',
	FRAME_PING = 'P',
	FRAME_ARG = 'A',
	FRAME_ENV = 'V',
	FRAME_CWD = 'D',
	FRAME_START = 'S',
	FRAME_STDIN = 'I',
	/* server to client */
	FRAME_STDOUT = 'O',
	FRAME_STDERR = 'E',
	FRAME_FAIL = 'F',
	FRAME_EXIT = 'X',
};

/* Encodes a frame header into hdr. */
void nested_frame_header(uint8_t hdr[NESTED_FRAME_HDR], uint8_t type,
			 uint32_t len);
/* Decodes a header: 0, or -EPROTO for a length over NESTED_FRAME_MAX. */
int nested_frame_parse(const uint8_t hdr[NESTED_FRAME_HDR], uint8_t *type,
		       uint32_t *len);
/* Writes one frame. 0 or -errno. */
int nested_frame_write(int fd, uint8_t type, const void *buf, uint32_t len);
/*
 * Reads one frame, waiting at most timeout_ms for each part (-1: forever).
 * The payload is malloc'd and NUL-terminated (*buf, free it). 0, -EPIPE at
 * end of stream before a header, -ETIMEDOUT, -EPROTO or -errno.
 */
int nested_frame_read(int fd, uint8_t *type, char **buf, uint32_t *len,
		      int timeout_ms);

/* Subcommands (main.c dispatches; each returns the process exit status). */
int nested_cmd_start(const struct nested_args *a, const char *state_dir);
int nested_cmd_stop(const char *state_dir, bool quiet);
int nested_cmd_exec(const struct nested_args *a, const char *state_dir);
int nested_cmd_serve(const struct nested_args *a);
/* Whether state_dir holds a running host; fills its control port. */
bool nested_running(const char *state_dir, uint16_t *ctl_port);
/* Runs the decision on this machine. */
struct nested_need nested_need_here(void);

#endif
