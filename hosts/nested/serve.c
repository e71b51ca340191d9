// SPDX-License-Identifier: Apache-2.0
/*
 * `ember-nested serve`: the command server inside the nested host (PID 1
 * there; see init.sh). One forked child per connection runs one command and
 * relays its output; protocol in proto.c. As PID 1 it also reaps orphans:
 * SIGCHLD is ignored, so the kernel reaps every child that is not waited for.
 */
#include "nested.h"

#include <ember/log.h>
#include <ember/util.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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

#define HEADER_TIMEOUT_MS 10000
/* After the command exits, output still in flight is relayed until its
 * pipes close or stay quiet this long (a daemon it started may hold them). */
#define DRAIN_QUIET_MS 500

struct request {
	char **argv;
	int argc;
	char **env;
	int n_env;
	char *cwd;
};

static void request_free(struct request *r)
{
	for (int i = 0; i < r->argc; i++)
		free(r->argv[i]);
	for (int i = 0; i < r->n_env; i++)
		free(r->env[i]);
	free(r->argv);
	free(r->env);
	free(r->cwd);
}

static int push(char ***list, int *n, char *s)
{
	char **l = realloc(*list, sizeof(char *) * (size_t)(*n + 2));

	if (!l)
		return -ENOMEM;
	l[(*n)++] = s;
	l[*n] = NULL;
	*list = l;
	return 0;
}

static bool token_ok(const char *want, const char *got)
{
	size_t wl = strlen(want), gl = strlen(got);
	unsigned diff = wl != gl;

	for (size_t i = 0; i < wl && i < gl; i++)
		diff |= (unsigned char)(want[i] ^ got[i]);
	return diff == 0;
}

/* Reads the request up to S. 1: it was a ping (answered), 0: a command,
 * negative: a bad or broken request. */
static int read_request(int conn, const char *token, struct request *req)
{
	bool authed = false;

	for (;;) {
		uint8_t type;
		uint32_t len;
		char *buf;
		int r = nested_frame_read(conn, &type, &buf, &len,
					  HEADER_TIMEOUT_MS);

		if (r < 0)
			return r;
		if (!authed) {
			bool ok = type == FRAME_TOKEN && token_ok(token, buf);

			free(buf);
			if (!ok) {
				log_warn("rejected a connection: bad token");
				return -EACCES;
			}
			authed = true;
			continue;
		}
		switch (type) {
		case FRAME_PING:
			free(buf);
			nested_frame_write(conn, FRAME_PING, NULL, 0);
			return 1;
		case FRAME_ARG:
			r = push(&req->argv, &req->argc, buf);
			break;
		case FRAME_ENV:
			r = push(&req->env, &req->n_env, buf);
			break;
		case FRAME_CWD:
			free(req->cwd);
			req->cwd = buf;
			break;
		case FRAME_START:
			free(buf);
			return req->argc > 0 ? 0 : -EPROTO;
		default:
			free(buf);
			return -EPROTO;
		}
		if (r < 0) {
			free(buf);
			return r;
		}
	}
}

static _Noreturn void run_child(struct request *req, int in, int out, int err)
{
	setsid();
	dup2(in, 0);
	dup2(out, 1);
	dup2(err, 2);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	clearenv();
	setenv("PATH",
	       "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	       1);
	setenv("HOME", "/tmp", 1);
	setenv("LANG", "C.UTF-8", 1);
	setenv("EMBER_IN_NESTED", "1", 1);
	for (int i = 0; i < req->n_env; i++)
		putenv(req->env[i]);
	if (chdir(req->cwd ? req->cwd : "/") < 0) {
		dprintf(2, "ember-nested: cannot enter %s: %s\n", req->cwd,
			strerror(errno));
		_exit(126);
	}
	execvp(req->argv[0], req->argv);
	dprintf(2, "ember-nested: cannot run %s: %s\n", req->argv[0],
		strerror(errno));
	_exit(errno == ENOENT ? 127 : 126);
}

/* Relays one pipe's data as frames of type; -EPIPE on end of file. */
static int relay(int from, int conn, uint8_t type)
{
	char buf[65536];
	ssize_t n = read(from, buf, sizeof(buf));

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (n == 0)
		return -EPIPE;
	return nested_frame_write(conn, type, buf, (uint32_t)n);
}

static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}

static void handle(int conn, const char *token)
{
	struct request req = {0};
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
	int status = 0, r;
	bool exited = false;
	pid_t pid;

	r = read_request(conn, token, &req);
	if (r != 0)
		goto out;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
	    pipe2(err, O_CLOEXEC) < 0) {
		r = -errno;
		goto fail;
	}
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto fail;
	}
	if (pid == 0)
		run_child(&req, in[0], out[1], err[1]);
	ember_close(&in[0]);
	ember_close(&out[1]);
	ember_close(&err[1]);

	uint64_t quiet_since = 0;

	while (out[0] >= 0 || err[0] >= 0) {
		struct pollfd p[3] = {
		    {.fd = conn, .events = POLLIN},
		    {.fd = out[0], .events = POLLIN},
		    {.fd = err[0], .events = POLLIN},
		};
		int n = poll(p, 3, 200);

		if (n < 0 && errno != EINTR)
			break;
		if (n > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
			uint8_t type;
			uint32_t len;
			char *buf;

			if (nested_frame_read(conn, &type, &buf, &len,
					      HEADER_TIMEOUT_MS) < 0) {
				/* The client went away: end the command. */
				kill(-pid, SIGKILL);
				waitpid(pid, NULL, 0);
				goto out;
			}
			if (type == FRAME_STDIN && in[1] >= 0) {
				if (len == 0 ||
				    ember_write_full(in[1], buf, len) < 0)
					ember_close(&in[1]);
			}
			free(buf);
		}
		if (n > 0 && p[1].revents &&
		    relay(out[0], conn, FRAME_STDOUT) < 0)
			ember_close(&out[0]);
		if (n > 0 && p[2].revents &&
		    relay(err[0], conn, FRAME_STDERR) < 0)
			ember_close(&err[0]);
		if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
			exited = true;
			quiet_since = ember_now_ns();
		}
		if (exited) {
			if (n > 0 && (p[1].revents || p[2].revents))
				quiet_since = ember_now_ns();
			else if (ember_now_ns() - quiet_since >
				 DRAIN_QUIET_MS * 1000000ull)
				break;
		}
	}
	if (!exited && waitpid(pid, &status, 0) < 0)
		status = 255 << 8;

	uint32_t code = (uint32_t)status_code(status);
	uint8_t be[4] = {(uint8_t)(code >> 24), (uint8_t)(code >> 16),
			 (uint8_t)(code >> 8), (uint8_t)code};

	nested_frame_write(conn, FRAME_EXIT, be, 4);
	goto out;
fail : {
	char msg[160];
	uint8_t code126[4] = {0, 0, 0, 126};

	snprintf(msg, sizeof(msg), "ember-nested: cannot start %s: %s",
		 req.argv[0], strerror(-r));
	nested_frame_write(conn, FRAME_FAIL, msg, (uint32_t)strlen(msg));
	nested_frame_write(conn, FRAME_EXIT, code126, 4);
}
out:
	ember_close(&in[0]);
	ember_close(&in[1]);
	ember_close(&out[0]);
	ember_close(&out[1]);
	ember_close(&err[0]);
	ember_close(&err[1]);
	request_free(&req);
}

int nested_cmd_serve(const struct nested_args *a)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(a->port),
				 .sin_addr.s_addr = htonl(INADDR_ANY)};
	const char *t = getenv("EMBER_NESTED_TOKEN");
	char *token = strdup(t ? t : "");
	int one = 1, lfd;

	unsetenv("EMBER_NESTED_TOKEN");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || !token) {
		log_error("socket: %s", strerror(errno));
		return EMBER_EXIT_FAILURE;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 16) < 0) {
		log_error("cannot listen on port %u: %s", a->port,
			  strerror(errno));
		return EMBER_EXIT_FAILURE;
	}
	log_info("serving commands on port %u", a->port);
	for (;;) {
		int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (conn < 0) {
			if (errno != EINTR && errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			continue;
		}
		pid_t pid = fork();

		if (pid == 0) {
			close(lfd);
			signal(SIGCHLD, SIG_DFL);
			setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one,
				   sizeof(one));
			handle(conn, token);
			close(conn);
			_exit(0);
		}
		if (pid < 0)
			log_warn("fork: %s", strerror(errno));
		close(conn);
	}
}
