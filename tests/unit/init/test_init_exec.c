// SPDX-License-Identifier: Apache-2.0
/*
 * exec through ember-init, run as a normal process on a Unix socket, with
 * the host-side client library: exit codes, signals, streaming, stdin,
 * timeouts, back-pressure, concurrency, and no leaked fds or processes.
 */
#include "harness.h"

#include "../../test.h"

#include <pthread.h>
#include <signal.h>

struct capture {
	char out[4096];
	size_t out_len, err_len, total;
	int slow_frames; /* frames to read slowly first */
	struct ember_agent *a;
	int signal_on_output; /* sent once the first output arrives */
};

static int cap_out(void *ctx, const void *buf, size_t len)
{
	struct capture *c = ctx;

	if (c->out_len + len < sizeof(c->out)) {
		memcpy(c->out + c->out_len, buf, len);
		c->out_len += len;
		c->out[c->out_len] = '\0';
	}
	c->total += len;
	if (c->slow_frames > 0) {
		c->slow_frames--;
		usleep(20000);
	}
	if (c->signal_on_output) {
		ember_agent_exec_signal(c->a, c->signal_on_output);
		c->signal_on_output = 0;
	}
	return 0;
}

static int cap_err(void *ctx, const void *buf, size_t len)
{
	struct capture *c = ctx;

	(void)buf;
	c->err_len += len;
	return 0;
}

static int run(struct ember_agent *a, const char *const *argv,
	       struct capture *cap, struct ember_agent_exec_result *res,
	       uint32_t timeout_ms)
{
	struct ember_agent_exec_opts o;

	ember_agent_exec_opts_init(&o);
	o.argv = argv;
	o.on_stdout = cap_out;
	o.on_stderr = cap_err;
	o.ctx = cap;
	o.timeout_ms = timeout_ms;
	cap->a = a;
	return ember_agent_exec(a, &o, res);
}

static void test_exit_codes(struct ember_agent *a)
{
	static const char *const echo[] = { "echo", "hello", "world", NULL };
	static const char *const f[] = { "false", NULL };
	static const char *const seven[] = { "sh", "-c", "echo e >&2; exit 7",
					     NULL };
	static const char *const killed[] = { "sh", "-c", "kill -KILL $$",
					      NULL };
	static const char *const missing[] = { "no-such-command-ember", NULL };
	struct ember_agent_exec_result res;
	struct capture cap = { 0 };

	CHECK(run(a, echo, &cap, &res, 0) == 0);
	CHECK(strcmp(cap.out, "hello world\n") == 0);
	CHECK(res.exit_code == 0 && res.signal == 0 && !res.timed_out);
	CHECK(res.pid > 0);

	memset(&cap, 0, sizeof(cap));
	CHECK(run(a, f, &cap, &res, 0) == 0 && res.exit_code == 1);

	memset(&cap, 0, sizeof(cap));
	CHECK(run(a, seven, &cap, &res, 0) == 0 && res.exit_code == 7);
	CHECK(cap.err_len == 2 && cap.out_len == 0);

	memset(&cap, 0, sizeof(cap));
	CHECK(run(a, killed, &cap, &res, 0) == 0);
	CHECK(res.signal == SIGKILL && res.exit_code == -1);

	memset(&cap, 0, sizeof(cap));
	CHECK(run(a, missing, &cap, &res, 0) == -ENOENT);
	CHECK(strstr(ember_agent_last_error(a), "not found") != NULL);
}

static void test_env_cwd_user(struct ember_agent *a)
{
	static const char *const argv[] = { "sh", "-c", "echo $FOO; pwd; id -u",
					    NULL };
	static const char *const env[] = { "FOO=bar baz", NULL };
	struct ember_agent_exec_opts o;
	struct ember_agent_exec_result res;
	struct capture cap = { 0 };
	char user[32], want[128];

	snprintf(user, sizeof(user), "%u:%u", (unsigned)geteuid(),
		 (unsigned)getegid());
	ember_agent_exec_opts_init(&o);
	o.argv = argv;
	o.env = env;
	o.cwd = "/tmp";
	o.user = user;
	o.on_stdout = cap_out;
	o.ctx = &cap;
	CHECK(ember_agent_exec(a, &o, &res) == 0 && res.exit_code == 0);
	snprintf(want, sizeof(want), "bar baz\n/tmp\n%u\n", (unsigned)geteuid());
	CHECK(strcmp(cap.out, want) == 0);

	o.cwd = "/no/such/folder";
	CHECK(ember_agent_exec(a, &o, &res) == -ENOENT);
	o.cwd = NULL;
	o.user = "no-such-user-ember";
	CHECK(ember_agent_exec(a, &o, &res) == -ENOENT);
}

static void test_signals_and_timeout(struct ember_agent *a)
{
	static const char *const waiter[] = { "sh", "-c",
					      "echo ready; exec sleep 30", NULL };
	static const char *const sleeper[] = { "sleep", "30", NULL };
	struct ember_agent_exec_result res;
	struct capture cap = { 0 };

	cap.signal_on_output = SIGTERM;
	CHECK(run(a, waiter, &cap, &res, 0) == 0);
	CHECK(res.signal == SIGTERM && !res.timed_out);

	memset(&cap, 0, sizeof(cap));
	CHECK(run(a, sleeper, &cap, &res, 300) == 0);
	CHECK(res.timed_out && res.signal == SIGKILL);
}

static void test_big_output(struct ember_agent *a, struct test_agent *t)
{
	static const char *const argv[] = { "head", "-c", "52428800",
					    "/dev/zero", NULL };
	struct ember_agent_exec_result res;
	struct capture cap = { 0 };

	/* The first frames are read slowly: the agent must stop reading the
	 * pipe rather than buffer 50 MiB. */
	cap.slow_frames = 40;
	CHECK(run(a, argv, &cap, &res, 0) == 0);
	CHECK(res.exit_code == 0);
	CHECK(cap.total == 52428800);
	(void)t;
}

/* The agent's resident memory while a host does not read its output. */
static long rss_kib(pid_t pid)
{
	char path[64], data[8192], *p;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (read_proc(path, data, sizeof(data)) < 0)
		return -1;
	p = strstr(data, "VmRSS:");
	return p ? strtol(p + 6, NULL, 10) : -1;
}

static int stall_out(void *ctx, const void *buf, size_t len)
{
	struct capture *c = ctx;

	(void)buf;
	c->total += len;
	if (c->slow_frames > 0) {
		c->slow_frames = 0;
		sleep(1); /* the command writes on; the agent must hold off */
		c->err_len = (size_t)rss_kib(*(pid_t *)c->out);
	}
	return 0;
}

static void test_back_pressure(struct ember_agent *a, struct test_agent *t)
{
	static const char *const argv[] = { "head", "-c", "104857600",
					    "/dev/zero", NULL };
	struct ember_agent_exec_opts o;
	struct ember_agent_exec_result res;
	struct capture cap = { 0 };
	long before = rss_kib(t->pid);

	memcpy(cap.out, &t->pid, sizeof(t->pid));
	cap.slow_frames = 1;
	ember_agent_exec_opts_init(&o);
	o.argv = argv;
	o.on_stdout = stall_out;
	o.ctx = &cap;
	CHECK(ember_agent_exec(a, &o, &res) == 0 && res.exit_code == 0);
	CHECK(cap.total == 104857600);
	/* Bounded queue: far less than the 100 MiB the command wrote. */
	if ((long)cap.err_len - before >= 32 * 1024)
		fprintf(stderr, "agent RSS %ld KiB before, %zu KiB stalled\n",
			before, cap.err_len);
	CHECK(before > 0 && (long)cap.err_len - before < 32 * 1024);
}

static void test_stdin(struct ember_agent *a, struct test_agent *t)
{
	static const char *const argv[] = { "sh", "-c", "wc -c; cat >/dev/null",
					    NULL };
	struct ember_agent_exec_opts o;
	struct ember_agent_exec_result res;
	struct capture cap = { 0 };
	char path[128];
	uint8_t block[65536];
	int fd;

	snprintf(path, sizeof(path), "%s/stdin", t->dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		CHECK(fd >= 0);
		return;
	}
	memset(block, 'x', sizeof(block));
	for (int i = 0; i < 48; i++) /* 3 MiB, more than the pipe holds */
		CHECK(ember_write_full(fd, block, sizeof(block)) == 0);
	lseek(fd, 0, SEEK_SET);
	ember_agent_exec_opts_init(&o);
	o.argv = argv;
	o.stdin_fd = fd;
	o.on_stdout = cap_out;
	o.ctx = &cap;
	CHECK(ember_agent_exec(a, &o, &res) == 0 && res.exit_code == 0);
	CHECK(atol(cap.out) == 48 * 65536);
	close(fd);
}

struct par {
	struct test_agent *t;
	int n;
	int ok;
};

static void *par_run(void *arg)
{
	struct par *p = arg;
	struct ember_agent *a;
	char script[64], want[16];
	const char *argv[] = { "sh", "-c", script, NULL };
	struct ember_agent_exec_result res;
	struct capture cap = { 0 };

	snprintf(script, sizeof(script), "sleep 0.5; echo %d", p->n);
	snprintf(want, sizeof(want), "%d\n", p->n);
	if (agent_connect(p->t, &a) < 0)
		return NULL;
	p->ok = run(a, argv, &cap, &res, 10000) == 0 && res.exit_code == 0 &&
		strcmp(cap.out, want) == 0;
	ember_agent_close(a);
	return NULL;
}

static void test_ten_at_once(struct test_agent *t)
{
	pthread_t th[10];
	struct par p[10];
	int ok = 0;

	for (int i = 0; i < 10; i++) {
		p[i] = (struct par){ .t = t, .n = i };
		pthread_create(&th[i], NULL, par_run, &p[i]);
	}
	for (int i = 0; i < 10; i++) {
		pthread_join(th[i], NULL);
		ok += p[i].ok;
	}
	CHECK(ok == 10);
}

/* Ten execs multiplexed on one connection, with raw frames. */
static void test_ten_on_one_connection(struct ember_agent *a)
{
	struct ember_agent_hdr h;
	const uint8_t *p;
	int done = 0, out_ok = 0;

	for (uint32_t id = 1000; id < 1010; id++) {
		char req[256];
		int n = snprintf(req, sizeof(req),
				 "{\"op\":\"exec\",\"token\":\"%s\",\"argv\":"
				 "[\"sh\",\"-c\",\"sleep 0.3; echo %u\"]}",
				 TEST_TOKEN, id);
		CHECK(ember_agent_send_frame(a, EMBER_AGENT_REQUEST, id, req,
					     (size_t)n) == 0);
	}
	while (done < 10 && ember_agent_recv_frame(a, &h, &p, 20000) == 0) {
		if (h.type == EMBER_AGENT_STDOUT) {
			char want[16];
			snprintf(want, sizeof(want), "%u\n", h.id);
			out_ok += h.len == strlen(want) &&
				  memcmp(p, want, h.len) == 0;
		}
		if (h.type == EMBER_AGENT_RESPONSE &&
		    memmem(p, h.len, "\"exit_code\":0", 13))
			done++;
		if (h.type == EMBER_AGENT_ERROR)
			break;
	}
	CHECK(done == 10 && out_ok == 10);
}

int main(int argc, char **argv)
{
	struct test_agent t;
	struct ember_agent *a, *b;
	struct ember_agent_health hl;
	int fds;

	REQUIRE(argc >= 2);
	signal(SIGPIPE, SIG_IGN);
	REQUIRE(agent_start(&t, argv[1], "sbx-exec") == 0);
	fds = agent_fd_count(&t);
	CHECK(fds > 0);
	REQUIRE(agent_connect(&t, &a) == 0);
	test_exit_codes(a);
	test_env_cwd_user(a);
	test_signals_and_timeout(a);
	test_big_output(a, &t);
	test_back_pressure(a, &t);
	test_stdin(a, &t);
	test_ten_at_once(&t);
	test_ten_on_one_connection(a);
	CHECK(ember_agent_health(a, &hl) == 0 && hl.execs == 0);

	/* A connection that goes away kills what it started. */
	REQUIRE(agent_connect(&t, &b) == 0);
	{
		static const char *const s[] = { "sleep", "60", NULL };
		char req[256];
		int n = snprintf(req, sizeof(req),
				 "{\"op\":\"exec\",\"token\":\"%s\",\"argv\":"
				 "[\"sh\",\"-c\",\"sleep 60 & sleep 60\"]}",
				 TEST_TOKEN);
		struct ember_agent_hdr h;
		const uint8_t *p;
		(void)s;
		CHECK(ember_agent_send_frame(b, EMBER_AGENT_REQUEST, 1, req,
					     (size_t)n) == 0);
		CHECK(ember_agent_recv_frame(b, &h, &p, 10000) == 0 &&
		      h.type == EMBER_AGENT_STARTED);
		usleep(100000);
		CHECK(agent_child_count(&t) == 1);
	}
	ember_agent_close(b);
	ember_agent_close(a);
	CHECK(agent_settles(&t, fds, 0));
	CHECK(agent_stop(&t) == 0);
	return test_summary("init-exec");
}
