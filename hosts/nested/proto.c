// SPDX-License-Identifier: Apache-2.0
/*
 * The command channel between `ember-nested exec` (outside) and
 * `ember-nested serve` (inside the nested host), over one TCP connection
 * that QEMU's user networking forwards from 127.0.0.1:<ctl-port> outside to
 * 10.0.2.15:7022 inside.
 *
 * Every message is a frame:
 *
 *   offset  size  field
 *   0       1     type (an ASCII letter, below)
 *   1       4     payload length, unsigned, big-endian, at most 1 MiB
 *   5       len   payload
 *
 * Client to server, in this order:
 *   T  token: the hex secret from the state folder (kernel command line
 *      inside); the server closes the connection on a wrong one
 *   then either
 *   P  ping (empty): the server answers P and closes (start's readiness
 *      check)
 *   or
 *   A  one argument of the command (argv[0] first; at least one)
 *   V  one environment entry "K=V", laid over the server's defaults
 *   D  working directory (optional; default /)
 *   S  start (empty)
 *   I  standard input data; an empty I is end of input
 *
 * Server to client, after S:
 *   O  standard output data, E  standard error data, as they come
 *   F  the command could not be started: a message (then X 126 or 127)
 *   X  exit status, 4 bytes big-endian: the exit code, or 128 + signal
 *
 * The connection closes after X. A client that goes away before X gets its
 * command's process group killed (SIGKILL).
 */
#include "nested.h"

#include <ember/util.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

void nested_frame_header(uint8_t hdr[NESTED_FRAME_HDR], uint8_t type,
			 uint32_t len)
{
	hdr[0] = type;
	hdr[1] = (uint8_t)(len >> 24);
	hdr[2] = (uint8_t)(len >> 16);
	hdr[3] = (uint8_t)(len >> 8);
	hdr[4] = (uint8_t)len;
}

int nested_frame_parse(const uint8_t hdr[NESTED_FRAME_HDR], uint8_t *type,
		       uint32_t *len)
{
	*type = hdr[0];
	*len = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 |
	       (uint32_t)hdr[3] << 8 | hdr[4];
	return *len > NESTED_FRAME_MAX ? -EPROTO : 0;
}

int nested_frame_write(int fd, uint8_t type, const void *buf, uint32_t len)
{
	uint8_t hdr[NESTED_FRAME_HDR];
	int r;

	if (len > NESTED_FRAME_MAX)
		return -EMSGSIZE;
	nested_frame_header(hdr, type, len);
	r = ember_write_full(fd, hdr, sizeof(hdr));
	if (r == 0 && len)
		r = ember_write_full(fd, buf, len);
	return r;
}

/* Reads exactly len bytes, waiting at most timeout_ms for each chunk. */
static int read_timed(int fd, void *buf, size_t len, int timeout_ms)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, timeout_ms);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return got ? -EPROTO : -EPIPE;
		got += (size_t)n;
	}
	return 0;
}

int nested_frame_read(int fd, uint8_t *type, char **buf, uint32_t *len,
		      int timeout_ms)
{
	uint8_t hdr[NESTED_FRAME_HDR];
	char *p;
	int r;

	*buf = NULL;
	r = read_timed(fd, hdr, sizeof(hdr), timeout_ms);
	if (r < 0)
		return r;
	r = nested_frame_parse(hdr, type, len);
	if (r < 0)
		return r;
	p = malloc(*len + 1);
	if (!p)
		return -ENOMEM;
	r = read_timed(fd, p, *len, timeout_ms);
	if (r < 0) {
		free(p);
		return r == -EPIPE ? -EPROTO : r;
	}
	p[*len] = '\0';
	*buf = p;
	return 0;
}
