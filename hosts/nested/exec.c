// SPDX-License-Identifier: Apache-2.0
/*
 * `ember-nested exec`: runs a command in the nested host and relays its
 * output as it comes (protocol in proto.c), or runs it right here when no
 * host runs in the state folder and this machine does not need one.
 *
 * Exit status: the command's own (128 + signal when killed), 124 when
 * --timeout expired, 255 when the channel failed.
 */
#include "nested.h"

#include <ember/log.h>
#include <ember/util.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_CHANNEL 255
#define EXIT_TIMEOUT 124

/* Same as launch.c's, kept local: the channel of a running host. */
static int open_channel(const char *dir, uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char path[PATH_MAX], *token;
	int fd, one = 1, r;

	snprintf(path, sizeof(path), "%s/token", dir);
	r = ember_read_file(path, 256, &token, NULL);
	if (r < 0)
		return r;
	token[strcspn(token, "\n")] = '\0';
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		free(token);
		return r;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	r = nested_frame_write(fd, FRAME_TOKEN, token, (uint32_t)strlen(token));
	free(token);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

static int send_request(int fd, const struct nested_args *a)
{
	int r = 0;

	for (int i = 0; r == 0 && i < a->argc; i++)
		r = nested_frame_write(fd, FRAME_ARG, a->argv[i],
				       (uint32_t)strlen(a->argv[i]));
	for (int i = 0; r == 0 && i < a->n_env; i++)
		r = nested_frame_write(fd, FRAME_ENV, a->env[i],
				       (uint32_t)strlen(a->env[i]));
	if (r == 0 && a->cwd)
		r = nested_frame_write(fd, FRAME_CWD, a->cwd,
				       (uint32_t)strlen(a->cwd));
	if (r == 0)
		r = nested_frame_write(fd, FRAME_START, NULL, 0);
	if (r == 0 && a->no_stdin)
		r = nested_frame_write(fd, FRAME_STDIN, NULL, 0);
	return r;
}

static int remaining_ms(uint64_t deadline)
{
	uint64_t now = ember_now_ns();

	if (!deadline)
		return -1;
	return now >= deadline ? 0 : (int)((deadline - now) / 1000000 + 1);
}

static int exec_remote(const struct nested_args *a, const char *dir,
		       uint16_t port)
{
	uint64_t deadline =
	    a->timeout_s ? ember_now_ns() + a->timeout_s * 1000000000ull : 0;
	bool stdin_open = !a->no_stdin;
	int fd, r;

	fd = open_channel(dir, port);
	if (fd < 0) {
		fprintf(
		    stderr,
		    "ember-nested: cannot reach the nested host in %s (port %u): %s\n",
		    dir, port, strerror(-fd));
		return EXIT_CHANNEL;
	}
	r = send_request(fd, a);
	if (r < 0)
		goto broken;
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
				      {.fd = 0, .events = POLLIN}};
		int n = poll(p, stdin_open ? 2 : 1, remaining_ms(deadline));

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0) {
			fprintf(stderr,
				"ember-nested: %s timed out after %u s\n",
				a->argv[0], a->timeout_s);
			close(fd); /* the server kills the command */
			return EXIT_TIMEOUT;
		}
		if (n < 0)
			goto broken;
		if (stdin_open && p[1].revents) {
			char buf[65536];
			ssize_t got = read(0, buf, sizeof(buf));

			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				stdin_open = false;
				got = 0;
			}
			if (nested_frame_write(fd, FRAME_STDIN, buf,
					       (uint32_t)got) < 0)
				goto broken;
		}
		if (!p[0].revents)
			continue;

		uint8_t type;
		uint32_t len;
		char *buf;

		r = nested_frame_read(fd, &type, &buf, &len, 30000);
		if (r < 0)
			goto broken;
		if (type == FRAME_STDOUT)
			ember_write_full(1, buf, len);
		else if (type == FRAME_STDERR)
			ember_write_full(2, buf, len);
		else if (type == FRAME_FAIL)
			fprintf(stderr, "%s\n", buf);
		else if (type == FRAME_EXIT && len == 4) {
			const uint8_t *b = (const uint8_t *)buf;
			int code = b[3] | b[2] << 8;

			free(buf);
			close(fd);
			return code > 255 ? 255 : code;
		}
		free(buf);
	}
broken:
	fprintf(
	    stderr,
	    "ember-nested: the channel to the nested host in %s broke: %s\n",
	    dir, strerror(r < 0 ? -r : errno));
	close(fd);
	return EXIT_CHANNEL;
}

/* No nested host needed: runs the command here, with the same options. */
static int exec_local(const struct nested_args *a)
{
	uint64_t deadline =
	    a->timeout_s ? ember_now_ns() + a->timeout_s * 1000000000ull : 0;
	int status;
	pid_t pid = fork();

	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		return EXIT_CHANNEL;
	}
	if (pid == 0) {
		for (int i = 0; i < a->n_env; i++)
			putenv((char *)a->env[i]);
		if (a->no_stdin) {
			int null = open("/dev/null", O_RDONLY);

			dup2(null, 0);
		}
		if (a->cwd && chdir(a->cwd) < 0) {
			fprintf(stderr, "ember-nested: cannot enter %s: %s\n",
				a->cwd, strerror(errno));
			_exit(126);
		}
		setpgid(0, 0);
		execvp(a->argv[0], a->argv);
		fprintf(stderr, "ember-nested: cannot run %s: %s\n", a->argv[0],
			strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	for (;;) {
		pid_t r = waitpid(pid, &status, deadline ? WNOHANG : 0);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return EXIT_CHANNEL;
		if (deadline && ember_now_ns() > deadline) {
			fprintf(stderr,
				"ember-nested: %s timed out after %u s\n",
				a->argv[0], a->timeout_s);
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			return EXIT_TIMEOUT;
		}
		if (deadline)
			usleep(20000);
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : EXIT_CHANNEL;
}

int nested_cmd_exec(const struct nested_args *a, const char *dir)
{
	struct nested_need need;
	uint16_t port;

	signal(SIGPIPE, SIG_IGN);
	if (nested_running(dir, &port))
		return exec_remote(a, dir, port);
	need = nested_need_here();
	if (!need.need)
		return exec_local(a);
	fprintf(
	    stderr,
	    "ember-nested: no nested host runs in %s, and this machine needs one (%s): start one with `ember-nested start --state-dir %s`, or use `ember-nested run`\n",
	    dir, need.reason, dir);
	return EXIT_CHANNEL;
}
