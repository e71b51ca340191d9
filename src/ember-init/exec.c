// SPDX-License-Identifier: Apache-2.0
/*
 * exec: runs a command in its own session and process group, streams its
 * stdout and stderr back as STDOUT/STDERR frames, feeds it the host's
 * DATA_IN frames as stdin, and ends the stream with a RESPONSE
 * {"exit_code", "signal", "timed_out", "pid"} once the process is reaped
 * and both pipes are at their end.
 *
 * The command is looked up in PATH (of its own environment) before the
 * fork, so a missing command is an ERROR, not a started process. Other
 * failures between fork and execve come back through a close-on-exec pipe
 * as {stage, errno} and are an ERROR too.
 */
#include "init.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_ARGS 4096

enum child_stage { STAGE_STDIO = 1, STAGE_USER, STAGE_CWD, STAGE_EXEC };

static const char *const stage_names[] = {
	[STAGE_STDIO] = "setting up stdio",
	[STAGE_USER] = "switching user",
	[STAGE_CWD] = "changing to the working directory",
	[STAGE_EXEC] = "executing",
};

struct exec_plan {
	char **argv;
	char **envp;
	size_t envc;
	char path[PATH_MAX];
	char cwd[PATH_MAX];
	char home[PATH_MAX];
	char user[64];
	bool set_user;
	uid_t uid;
	gid_t gid;
	bool want_stdin;
	uint64_t timeout_ms;
};

static void plan_free(struct exec_plan *p)
{
	for (size_t i = 0; p->argv && p->argv[i]; i++)
		free(p->argv[i]);
	for (size_t i = 0; i < p->envc; i++)
		free(p->envp[i]);
	free(p->argv);
	free(p->envp);
}

/* Sets KEY=VALUE in the plan's environment, replacing an earlier KEY. */
static int env_set(struct exec_plan *p, const char *key, const char *value)
{
	size_t klen = strlen(key);
	char *entry, **n;

	if (klen == 0 || strchr(key, '='))
		return -EINVAL;
	if (asprintf(&entry, "%s=%s", key, value) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < p->envc; i++) {
		if (strncmp(p->envp[i], key, klen) == 0 &&
		    p->envp[i][klen] == '=') {
			free(p->envp[i]);
			p->envp[i] = entry;
			return 0;
		}
	}
	n = realloc(p->envp, (p->envc + 2) * sizeof(*n));
	if (!n) {
		free(entry);
		return -ENOMEM;
	}
	p->envp = n;
	p->envp[p->envc++] = entry;
	p->envp[p->envc] = NULL;
	return 0;
}

static const char *env_get(const struct exec_plan *p, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = 0; i < p->envc; i++)
		if (strncmp(p->envp[i], key, klen) == 0 &&
		    p->envp[i][klen] == '=')
			return p->envp[i] + klen + 1;
	return NULL;
}

/* Finds argv[0] in PATH. 0 or -ENOENT / -EACCES. */
static int find_command(struct exec_plan *p)
{
	const char *cmd = p->argv[0], *path = env_get(p, "PATH");
	bool denied = false;

	if (strchr(cmd, '/')) {
		if (snprintf(p->path, sizeof(p->path), "%s", cmd) >=
		    (int)sizeof(p->path))
			return -ENAMETOOLONG;
		return access(p->path, F_OK) == 0 ? 0 : -errno;
	}
	if (!path)
		path = DEFAULT_PATH;
	while (*path) {
		const char *end = strchrnul(path, ':');
		int dlen = (int)(end - path);
		struct stat st;

		snprintf(p->path, sizeof(p->path), "%.*s/%s", dlen,
			 dlen ? path : ".", cmd);
		if (stat(p->path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (access(p->path, X_OK) == 0)
				return 0;
			denied = true;
		}
		path = *end ? end + 1 : end;
	}
	return denied ? -EACCES : -ENOENT;
}

/* Reads the request into a plan; on failure answers and returns <0. */
static int plan_build(struct conn *c, uint32_t id, json_t *req,
		      struct exec_plan *p)
{
	json_t *argv = json_object_get(req, "argv"), *env, *v;
	const char *user = json_string_value(json_object_get(req, "user"));
	const char *cwd = json_string_value(json_object_get(req, "cwd"));
	const char *key;
	size_t n = json_array_size(argv), i;
	int r;

	memset(p, 0, sizeof(*p));
	if (!json_is_array(argv) || n == 0 || n > MAX_ARGS) {
		conn_send_error(c, id, EINVAL, "exec: \"argv\" must be a "
			"non-empty array of strings");
		return -EINVAL;
	}
	p->argv = calloc(n + 1, sizeof(char *));
	if (!p->argv)
		goto nomem;
	json_array_foreach(argv, i, v) {
		if (!json_is_string(v)) {
			conn_send_error(c, id, EINVAL,
					"exec: argv[%zu] is not a string", i);
			return -EINVAL;
		}
		p->argv[i] = strdup(json_string_value(v));
		if (!p->argv[i])
			goto nomem;
	}
	p->uid = geteuid();
	p->gid = getegid();
	snprintf(p->home, sizeof(p->home), "/");
	if (user) {
		r = system_lookup_user(user, &p->uid, &p->gid, p->home,
				       sizeof(p->home), p->user,
				       sizeof(p->user));
		if (r < 0) {
			conn_send_error(c, id, -r, "exec: unknown user \"%s\"",
					user);
			return r;
		}
		p->set_user = p->uid != geteuid() || p->gid != getegid();
	} else {
		char spec[32];
		snprintf(spec, sizeof(spec), "%u", (unsigned)p->uid);
		system_lookup_user(spec, &p->uid, &p->gid, p->home,
				   sizeof(p->home), p->user, sizeof(p->user));
	}
	if (env_set(p, "PATH", DEFAULT_PATH) < 0 ||
	    env_set(p, "HOME", p->home) < 0)
		goto nomem;
	if (p->user[0] && (env_set(p, "USER", p->user) < 0 ||
			   env_set(p, "LOGNAME", p->user) < 0))
		goto nomem;
	env = json_object_get(req, "env");
	if (env && !json_is_object(env)) {
		conn_send_error(c, id, EINVAL, "exec: \"env\" must be an object");
		return -EINVAL;
	}
	json_object_foreach(env, key, v) {
		if (!json_is_string(v) || env_set(p, key, json_string_value(v))) {
			conn_send_error(c, id, EINVAL,
					"exec: bad environment entry \"%s\"", key);
			return -EINVAL;
		}
	}
	snprintf(p->cwd, sizeof(p->cwd), "%s", cwd ? cwd : p->home);
	p->want_stdin = json_is_true(json_object_get(req, "stdin"));
	v = json_object_get(req, "timeout_ms");
	if (v && (!json_is_integer(v) || json_integer_value(v) < 0)) {
		conn_send_error(c, id, EINVAL,
				"exec: \"timeout_ms\" must be a count");
		return -EINVAL;
	}
	p->timeout_ms = (uint64_t)json_integer_value(v);
	r = find_command(p);
	if (r < 0) {
		conn_send_error(c, id, -r, "exec: command not found: %s (%s)",
				p->argv[0], strerror(-r));
		return r;
	}
	return 0;
nomem:
	conn_send_error(c, id, ENOMEM, "exec: out of memory");
	return -ENOMEM;
}

static _Noreturn void child_fail(int err_fd, int stage)
{
	int msg[2] = { stage, errno };

	if (write(err_fd, msg, sizeof(msg)) < 0) {
		/* nothing left to tell */
	}
	_exit(127);
}

/* In the child, between fork and execve: only async-signal-safe calls. */
static _Noreturn void child_run(const struct exec_plan *p, int in_fd,
				int out_fd, int err_fd, int status_fd)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	setsid();
	if (in_fd < 0)
		in_fd = open("/dev/null", O_RDONLY);
	if (in_fd < 0 || dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 ||
	    dup2(err_fd, 2) < 0)
		child_fail(status_fd, STAGE_STDIO);
	if (p->set_user &&
	    (setgroups(1, &p->gid) < 0 || setgid(p->gid) < 0 ||
	     setuid(p->uid) < 0))
		child_fail(status_fd, STAGE_USER);
	if (chdir(p->cwd) < 0)
		child_fail(status_fd, STAGE_CWD);
	execve(p->path, p->argv, p->envp);
	child_fail(status_fd, STAGE_EXEC);
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

void exec_start(struct conn *c, uint32_t id, json_t *req)
{
	struct exec_plan p;
	int out[2] = { -1, -1 }, err[2] = { -1, -1 }, in[2] = { -1, -1 };
	int status[2] = { -1, -1 }, msg[2];
	struct stream *s;
	ssize_t n;
	pid_t pid;

	if (plan_build(c, id, req, &p) < 0)
		goto out;
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
	    (p.want_stdin && pipe2(in, O_CLOEXEC) < 0) ||
	    pipe2(status, O_CLOEXEC) < 0) {
		conn_send_error(c, id, errno, "exec: pipe: %s", strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		conn_send_error(c, id, errno, "exec: fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0)
		child_run(&p, in[0], out[1], err[1], status[1]);
	ember_close(&out[1]);
	ember_close(&err[1]);
	ember_close(&in[0]);
	ember_close(&status[1]);
	do {
		n = read(status[0], msg, sizeof(msg));
	} while (n < 0 && errno == EINTR);
	if (n == sizeof(msg)) {
		int st;
		waitpid(pid, &st, 0); /* it _exits at once */
		conn_send_error(c, id, msg[1], "exec: %s %s: %s",
				stage_names[msg[0] >= STAGE_STDIO &&
						    msg[0] <= STAGE_EXEC
					    ? msg[0] : STAGE_EXEC],
				msg[0] == STAGE_CWD ? p.cwd : p.argv[0],
				strerror(msg[1]));
		goto out;
	}
	s = stream_new(c, id, STREAM_EXEC);
	if (!s) {
		kill(-pid, SIGKILL);
		goto out; /* reaped by the loop, matched to nothing */
	}
	s->pid = pid;
	s->out_fd = out[0];
	s->err_fd = err[0];
	s->in_fd = in[1];
	out[0] = err[0] = in[1] = -1;
	set_nonblock(s->out_fd);
	set_nonblock(s->err_fd);
	if (s->in_fd >= 0)
		set_nonblock(s->in_fd);
	if (p.timeout_ms)
		s->deadline_ns = ember_now_ns() + p.timeout_ms * 1000000ull;
	olog_debug(c->name, "stream %u: started %s as pid %d", id, p.path,
		   (int)pid);
	conn_send_json(c, EMBER_AGENT_STARTED, id,
		       json_pack("{s:i}", "pid", (int)pid));
out:
	ember_close(&out[0]);
	ember_close(&out[1]);
	ember_close(&err[0]);
	ember_close(&err[1]);
	ember_close(&in[0]);
	ember_close(&in[1]);
	ember_close(&status[0]);
	ember_close(&status[1]);
	plan_free(&p);
}

/* Signals the command's process group; the command itself when it has not
 * yet made its group (between fork and setsid). */
static int signal_group(pid_t pid, int sig)
{
	if (kill(-pid, sig) == 0)
		return 0;
	if (errno == ESRCH && kill(pid, sig) == 0)
		return 0;
	return -errno;
}

static void stdin_drop(struct stream *s)
{
	for (struct outbuf *b = s->in_head, *n; b; b = n) {
		n = b->next;
		free(b);
	}
	s->in_head = s->in_tail = NULL;
	s->in_bytes = 0;
	ember_close(&s->in_fd);
}

/* Sends the result once the process is reaped and its pipes are drained. */
static void exec_maybe_finish(struct stream *s)
{
	json_t *res;

	if (!s->exited || s->out_fd >= 0 || s->err_fd >= 0 || s->done)
		return;
	stdin_drop(s);
	s->done = true;
	if (!s->conn)
		return;
	if (WIFEXITED(s->status))
		res = json_pack("{s:i, s:i, s:b, s:i}", "exit_code",
				WEXITSTATUS(s->status), "signal", 0,
				"timed_out", s->timed_out, "pid", (int)s->pid);
	else
		res = json_pack("{s:n, s:i, s:b, s:i}", "exit_code", "signal",
				WTERMSIG(s->status), "timed_out", s->timed_out,
				"pid", (int)s->pid);
	olog_debug(s->conn->name, "stream %u: pid %d ended (status %#x)",
		   s->id, (int)s->pid, s->status);
	conn_send_json(s->conn, EMBER_AGENT_RESPONSE, s->id, res);
}

void exec_on_output(struct stream *s, bool is_stderr)
{
	static uint8_t buf[EMBER_AGENT_CHUNK];
	int *fd = is_stderr ? &s->err_fd : &s->out_fd;
	ssize_t n;

	if (*fd < 0)
		return;
	do {
		n = read(*fd, buf, sizeof(buf));
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		ember_close(fd);
		exec_maybe_finish(s);
		return;
	}
	s->quiet_since_ns = ember_now_ns();
	conn_send(s->conn, is_stderr ? EMBER_AGENT_STDERR : EMBER_AGENT_STDOUT,
		  s->id, buf, (size_t)n);
}

void exec_on_stdin_writable(struct stream *s)
{
	while (s->in_head && s->in_fd >= 0) {
		struct outbuf *b = s->in_head;
		ssize_t w = write(s->in_fd, b->data + b->off, b->len - b->off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (w < 0) {
			/* EPIPE: the command closed its stdin; drop the rest. */
			stdin_drop(s);
			return;
		}
		b->off += (size_t)w;
		s->in_bytes -= (size_t)w;
		if (b->off == b->len) {
			s->in_head = b->next;
			if (!s->in_head)
				s->in_tail = NULL;
			free(b);
		}
	}
	if (!s->in_head && s->in_eof)
		ember_close(&s->in_fd);
}

void exec_stdin(struct stream *s, const uint8_t *p, size_t len, bool eof)
{
	struct outbuf *b;

	if (eof) {
		s->in_eof = true;
		if (!s->in_head)
			ember_close(&s->in_fd);
		return;
	}
	if (s->in_fd < 0 || s->in_eof || len == 0)
		return;
	b = malloc(sizeof(*b) + len);
	if (!b) {
		olog_error(s->conn->name, "stream %u: out of memory for stdin",
			   s->id);
		stdin_drop(s);
		return;
	}
	b->next = NULL;
	b->off = 0;
	b->len = len;
	memcpy(b->data, p, len);
	if (s->in_tail)
		s->in_tail->next = b;
	else
		s->in_head = b;
	s->in_tail = b;
	s->in_bytes += len;
	exec_on_stdin_writable(s);
}

void exec_reaped(pid_t pid, int status)
{
	for (struct stream *s = agent.streams; s; s = s->next) {
		if (s->kind != STREAM_EXEC || s->pid != pid || s->exited)
			continue;
		s->exited = true;
		s->status = status;
		s->quiet_since_ns = ember_now_ns();
		if (!s->conn)
			s->done = true;
		exec_maybe_finish(s);
		return;
	}
	/* An orphan the agent adopted (PID 1 or subreaper): nothing to do. */
}

void exec_tick(struct stream *s, uint64_t now)
{
	if (!s->exited && s->deadline_ns && now >= s->deadline_ns &&
	    !s->timed_out) {
		s->timed_out = true;
		olog_info(s->conn ? s->conn->name : NULL,
			  "stream %u: pid %d ran past its timeout; killing it",
			  s->id, (int)s->pid);
		signal_group(s->pid, SIGKILL);
	}
	if (!s->exited || !s->conn || (s->out_fd < 0 && s->err_fd < 0))
		return;
	/* Exited, pipes still open: held by a child it left behind. */
	if (conn_output_full(s->conn)) {
		s->quiet_since_ns = now;
		return;
	}
	if (now - s->quiet_since_ns >= EXIT_GRACE_NS) {
		ember_close(&s->out_fd);
		ember_close(&s->err_fd);
		exec_maybe_finish(s);
	}
}

void exec_detach(struct stream *s)
{
	if (!s->exited)
		signal_group(s->pid, SIGKILL);
	ember_close(&s->out_fd);
	ember_close(&s->err_fd);
	stdin_drop(s);
	s->conn = NULL;
	if (s->exited)
		s->done = true;
}

void exec_signal(struct conn *c, uint32_t id, json_t *req)
{
	json_t *target = json_object_get(req, "target");
	json_t *pidv = json_object_get(req, "pid");
	json_int_t sig = json_integer_value(json_object_get(req, "signal"));
	struct stream *found = NULL;

	if (sig <= 0 || sig >= 65) {
		conn_send_error(c, id, EINVAL, "signal: bad signal number");
		return;
	}
	for (struct stream *s = agent.streams; s; s = s->next) {
		if (s->kind != STREAM_EXEC || s->done || s->exited || !s->conn)
			continue;
		if ((json_is_integer(target) && s->conn == c &&
		     s->id == (uint32_t)json_integer_value(target)) ||
		    (json_is_integer(pidv) &&
		     s->pid == (pid_t)json_integer_value(pidv))) {
			found = s;
			break;
		}
	}
	if (!found) {
		conn_send_error(c, id, ESRCH, "signal: no such running command");
		return;
	}
	int r = signal_group(found->pid, (int)sig);
	if (r < 0) {
		conn_send_error(c, id, -r, "signal: %s", strerror(-r));
		return;
	}
	conn_send_json(c, EMBER_AGENT_RESPONSE, id, json_object());
}

unsigned exec_count(void)
{
	unsigned n = 0;

	for (struct stream *s = agent.streams; s; s = s->next)
		if (s->kind == STREAM_EXEC && !s->done)
			n++;
	return n;
}
