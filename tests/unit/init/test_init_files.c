// SPDX-License-Identifier: Apache-2.0
/*
 * Files, health, tokens, reidentify and bad input through ember-init, run
 * as a normal process on a Unix socket; ember-initctl end to end; no
 * leaked fds afterwards.
 */
#include "harness.h"

#include "../../test.h"

#include <pthread.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

/* Like REQUIRE, for test functions that return nothing. */
#define REQUIRE_V(cond)                                                       \
	do {                                                                  \
		if (!(cond)) {                                                \
			CHECK(cond);                                          \
			return;                                               \
		}                                                             \
	} while (0)

static const char *initctl;

static int make_random_file(const char *path, size_t size)
{
	uint8_t buf[65536];
	uint64_t x = 0x243f6a8885a308d3ull;
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	for (size_t off = 0; off < size; off += sizeof(buf)) {
		for (size_t i = 0; i < sizeof(buf); i += 8) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			memcpy(buf + i, &x, 8);
		}
		if (ember_write_full(fd, buf, EMBER_MIN(sizeof(buf), size - off)))
			break;
	}
	lseek(fd, 0, SEEK_SET);
	return fd;
}

static bool same_files(int a, int b)
{
	static uint8_t x[65536], y[65536];
	ssize_t n, m;

	lseek(a, 0, SEEK_SET);
	lseek(b, 0, SEEK_SET);
	do {
		n = ember_read_full(a, x, sizeof(x));
		m = ember_read_full(b, y, sizeof(y));
		if (n != m || (n > 0 && memcmp(x, y, (size_t)n) != 0))
			return false;
	} while (n > 0);
	return true;
}

static void test_files(struct ember_agent *a, struct test_agent *t)
{
	char src[256], dst[256], remote[256], dir[128];
	struct ember_agent_stat st;
	struct ember_agent_dirent *e;
	size_t n;
	bool trunc, seen = false;
	uint64_t size = 0;
	int in, out;

	snprintf(src, sizeof(src), "%s/src", t->dir);
	snprintf(dst, sizeof(dst), "%s/dst", t->dir);
	snprintf(dir, sizeof(dir), "%s/tree", t->dir);
	snprintf(remote, sizeof(remote), "%s/a/b/big.bin", dir);
	in = make_random_file(src, 20u << 20);
	out = open(dst, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (in < 0 || out < 0) {
		CHECK(!"cannot create local files");
		return;
	}
	CHECK(ember_agent_write_file(a, remote, in, 0640, &size) == 0);
	CHECK(size == 20u << 20);
	size = 0;
	CHECK(ember_agent_read_file(a, remote, out, &size) == 0);
	CHECK(size == 20u << 20);
	CHECK(same_files(in, out));
	close(in);
	close(out);

	CHECK(ember_agent_stat(a, remote, &st) == 0);
	CHECK(st.type == 'f' && st.size == 20u << 20 && st.mode == 0640);
	snprintf(src, sizeof(src), "%s/a/b", dir);
	CHECK(ember_agent_stat(a, src, &st) == 0 && st.type == 'd');
	CHECK(ember_agent_list(a, src, &e, &n, &trunc) == 0);
	for (size_t i = 0; i < n; i++)
		seen = seen || (strcmp(e[i].name, "big.bin") == 0 &&
				e[i].st.size == 20u << 20);
	CHECK(n == 1 && seen && !trunc); /* no temporary file left */
	free(e);

	/* Empty and binary files. */
	in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	snprintf(src, sizeof(src), "%s/empty", dir);
	CHECK(ember_agent_write_file(a, src, in, 0600, &size) == 0 && size == 0);
	CHECK(ember_agent_stat(a, src, &st) == 0 && st.size == 0);
	close(in);

	/* Errors: each answered, nothing crashes. */
	CHECK(ember_agent_stat(a, "/no/such/path/ember", &st) == -ENOENT);
	CHECK(ember_agent_read_file(a, "/no/such/path/ember", 1, &size) ==
	      -ENOENT);
	CHECK(ember_agent_read_file(a, dir, 1, &size) == -EISDIR);
	CHECK(ember_agent_list(a, "/no/such/path/ember", &e, &n, &trunc) ==
	      -ENOENT);
	CHECK(ember_agent_list(a, remote, &e, &n, &trunc) == -ENOTDIR);
	CHECK(ember_agent_remove(a, "/no/such/path/ember", false) == -ENOENT);
	CHECK(ember_agent_stat(a, "relative/path", &st) == -EINVAL);
	CHECK(ember_agent_remove(a, dir, false) == -ENOTEMPTY);

	/* Remove a file, then the tree. */
	CHECK(ember_agent_remove(a, remote, false) == 0);
	CHECK(ember_agent_stat(a, remote, &st) == -ENOENT);
	CHECK(ember_agent_remove(a, dir, true) == 0);
	CHECK(access(dir, F_OK) < 0 && errno == ENOENT);
}

static void test_health_and_token(struct test_agent *t, struct ember_agent *a)
{
	struct ember_agent_health h;
	struct ember_agent *bad;

	CHECK(ember_agent_health(a, &h) == 0);
	CHECK(h.proto == EMBER_AGENT_PROTO_VERSION && !h.pid1);
	CHECK(strcmp(h.sandbox_id, "sbx-files") == 0);
	CHECK(strcmp(h.version, EMBER_VERSION) == 0);

	REQUIRE_V(ember_agent_connect_unix(t->sock, "wrong", 5000, &bad) == 0);
	CHECK(ember_agent_health(bad, &h) == -EACCES);
	CHECK(strstr(ember_agent_last_error(bad), "token") != NULL);
	/* Refused, and still connected: the right token works after. */
	CHECK(ember_agent_set_token(bad, TEST_TOKEN) == 0);
	CHECK(ember_agent_health(bad, &h) == 0);
	ember_agent_close(bad);
}

/* Sends raw bytes on a fresh connection and returns the first answer's
 * type and errno (0 when none came); *closed tells whether the agent
 * hung up afterwards. */
static int raw_exchange(struct test_agent *t, const void *bytes, size_t len,
			uint8_t *type, bool *closed)
{
	struct ember_agent *a;
	struct ember_agent_hdr h;
	const uint8_t *p;
	int e = 0;

	*type = 0;
	if (agent_connect(t, &a) < 0)
		return -1;
	if (send(ember_agent_fd(a), bytes, len, MSG_NOSIGNAL) != (ssize_t)len) {
		ember_agent_close(a);
		return -1;
	}
	if (ember_agent_recv_frame(a, &h, &p, 5000) == 0) {
		const char *en = memmem(p, h.len, "\"errno\":", 8);
		*type = h.type;
		e = en ? atoi(en + 8) : 0;
	}
	*closed = ember_agent_recv_frame(a, &h, &p, 300) == -ECONNRESET;
	ember_agent_close(a);
	return e;
}

static void test_bad_input(struct test_agent *t)
{
	struct ember_agent_hdr h = { .version = 1, .type = EMBER_AGENT_REQUEST,
				     .id = 5 };
	uint8_t frame[EMBER_AGENT_HDR_SIZE + 64];
	struct ember_agent *a;
	struct ember_agent_health hl;
	uint8_t type;
	bool closed;
	int e;

	/* Garbage: an error answer, then the connection is closed. */
	e = raw_exchange(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, &type,
			 &closed);
	CHECK(type == EMBER_AGENT_ERROR && e > 0 && closed);

	/* Oversized frame. */
	h.len = EMBER_AGENT_MAX_PAYLOAD + 1;
	ember_agent_hdr_encode(&h, frame);
	e = raw_exchange(t, frame, EMBER_AGENT_HDR_SIZE, &type, &closed);
	CHECK(type == EMBER_AGENT_ERROR && e == EMSGSIZE && closed);

	/* Malformed JSON: an error, the connection lives on. */
	h.len = 9;
	ember_agent_hdr_encode(&h, frame);
	memcpy(frame + EMBER_AGENT_HDR_SIZE, "{\"op\":tru", 9);
	e = raw_exchange(t, frame, EMBER_AGENT_HDR_SIZE + 9, &type, &closed);
	CHECK(type == EMBER_AGENT_ERROR && e == EBADMSG && !closed);

	/* Unknown frame type. */
	h.len = 0;
	h.type = 99;
	ember_agent_hdr_encode(&h, frame);
	e = raw_exchange(t, frame, EMBER_AGENT_HDR_SIZE, &type, &closed);
	CHECK(type == EMBER_AGENT_ERROR && e == EBADMSG && !closed);

	/* Truncated frame, then hang up. */
	h.type = EMBER_AGENT_REQUEST;
	h.len = 40;
	ember_agent_hdr_encode(&h, frame);
	raw_exchange(t, frame, EMBER_AGENT_HDR_SIZE + 3, &type, &closed);
	CHECK(type == 0);

	/* Unknown request and a request without an id. */
	REQUIRE_V(agent_connect(t, &a) == 0);
	{
		char req[128];
		const uint8_t *p;
		int n = snprintf(req, sizeof(req),
				 "{\"op\":\"fly\",\"token\":\"%s\"}", TEST_TOKEN);
		CHECK(ember_agent_send_frame(a, EMBER_AGENT_REQUEST, 9, req,
					     (size_t)n) == 0);
		CHECK(ember_agent_recv_frame(a, &h, &p, 5000) == 0);
		CHECK(h.type == EMBER_AGENT_ERROR && h.id == 9 &&
		      memmem(p, h.len, "EOPNOTSUPP", 10));
		CHECK(ember_agent_send_frame(a, EMBER_AGENT_REQUEST, 0, req,
					     (size_t)n) == 0);
		CHECK(ember_agent_recv_frame(a, &h, &p, 5000) == 0);
		CHECK(h.type == EMBER_AGENT_ERROR && memmem(p, h.len, "EINVAL", 6));
		/* Data for a stream that does not exist is dropped. */
		CHECK(ember_agent_send_frame(a, EMBER_AGENT_DATA_IN, 77, "x", 1) ==
		      0);
	}
	/* After all that, the agent still answers. */
	CHECK(ember_agent_health(a, &hl) == 0);
	ember_agent_close(a);
}

static void test_reidentify(struct test_agent *t, struct ember_agent *a)
{
	struct ember_agent_identity id = { 0 };
	struct ember_agent_health h;
	struct ember_agent *old;
	uint8_t seed[64] = { 1, 2, 3 };
	int r;

	/* Outside a guest the clock is not touched: a clear refusal. */
	id.realtime_ns = ember_realtime_ns();
	CHECK(ember_agent_reidentify(a, &id) == -EPERM);
	CHECK(strstr(ember_agent_last_error(a), "clock") != NULL);

	/* Entropy needs CAP_SYS_ADMIN: done as root, refused otherwise. */
	memset(&id, 0, sizeof(id));
	id.entropy = seed;
	id.entropy_len = sizeof(seed);
	r = ember_agent_reidentify(a, &id);
	CHECK(geteuid() == 0 ? r == 0 : r == -EPERM);

	memset(&id, 0, sizeof(id));
	id.hostname = "bad host name!";
	CHECK(ember_agent_reidentify(a, &id) == -EINVAL);

	memset(&id, 0, sizeof(id));
	id.hostname = "clone-2";
	id.sandbox_id = "sbx-clone-2";
	id.new_token = "new-token-abcdef";
	REQUIRE_V(agent_connect(t, &old) == 0);
	CHECK(ember_agent_reidentify(a, &id) == 0);
	/* The old token stops working, on any connection. */
	CHECK(ember_agent_health(old, &h) == -EACCES);
	ember_agent_close(old);
	CHECK(ember_agent_health(a, &h) == 0);
	CHECK(strcmp(h.sandbox_id, "sbx-clone-2") == 0);
	CHECK(strcmp(h.hostname, "clone-2") == 0);
	id.new_token = TEST_TOKEN; /* back, for the tests that follow */
	id.hostname = id.sandbox_id = NULL;
	CHECK(ember_agent_reidentify(a, &id) == 0);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_initctl(struct test_agent *t)
{
	char c[512];

	snprintf(c, sizeof(c), "%s --socket %s --token %s", initctl, t->sock,
		 TEST_TOKEN);
	CHECK(sh("%s exec sh -c 'exit 3' ", c) == 3);
	CHECK(sh("%s exec -- sh -c 'kill -TERM $$'", c) == 128 + 15);
	CHECK(sh("%s exec --timeout-ms 200 sleep 10", c) == 124);
	CHECK(sh("%s exec no-such-command-ember 2>/dev/null", c) == 1);
	CHECK(sh("%s --json health | grep -q '\"proto\":1'", c) == 0);
	CHECK(sh("echo hi | %s exec --stdin cat | grep -qx hi", c) == 0);
	CHECK(sh("printf 'abc' | %s write --mode 600 %s/ctl/x", c, t->dir) == 0);
	CHECK(sh("%s read %s/ctl/x | grep -qx abc", c, t->dir) == 0);
	CHECK(sh("%s ls %s/ctl | grep -q ' x$'", c, t->dir) == 0);
	CHECK(sh("%s --json stat %s/ctl/x | grep -q '\"size\":3'", c,
		 t->dir) == 0);
	CHECK(sh("%s rm -r %s/ctl", c, t->dir) == 0);
	CHECK(sh("%s stat %s/ctl 2>/dev/null", c, t->dir) == 1);
	CHECK(sh("%s --token wrong health 2>/dev/null", initctl) == 2);
	CHECK(sh("%s --socket %s --token wrong health 2>/dev/null", initctl,
		 t->sock) == 1);
	CHECK(sh("%s --help >/dev/null", initctl) == 0);
	CHECK(sh("%s frobnicate 2>/dev/null", c) == 2);
}

/* A stand-in for the VMM's vsock socket: takes Firecracker's
 * "CONNECT <port>" line, answers "OK <host port>", then relays bytes to
 * the agent's Unix socket. */
struct fake_vmm {
	int lfd;
	const char *agent_sock;
	char line[64];
};

static void *fake_vmm_run(void *arg)
{
	struct fake_vmm *v = arg;
	struct pollfd p[2] = { { .fd = v->lfd, .events = POLLIN } };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int c, g;
	size_t n = 0;
	char buf[65536];

	if (poll(p, 1, 10000) <= 0 || (c = accept(v->lfd, NULL, NULL)) < 0)
		return NULL;
	while (n < sizeof(v->line) - 1 && read(c, v->line + n, 1) == 1)
		if (v->line[n++] == '\n')
			break;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", v->agent_sock);
	g = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (g < 0 || connect(g, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    write(c, "OK 1073741824\n", 14) != 14)
		goto out;
	p[0] = (struct pollfd){ .fd = c, .events = POLLIN };
	p[1] = (struct pollfd){ .fd = g, .events = POLLIN };
	while (poll(p, 2, 10000) > 0) {
		int from = p[0].revents ? 0 : 1;
		ssize_t r = read(p[from].fd, buf, sizeof(buf));
		if (r <= 0 || ember_write_full(p[1 - from].fd, buf, (size_t)r))
			break;
	}
out:
	if (g >= 0)
		close(g);
	close(c);
	return NULL;
}

static void test_vsock_handshake(struct test_agent *t)
{
	struct fake_vmm v = { .agent_sock = t->sock };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct ember_agent *a = NULL;
	struct ember_agent_health h;
	pthread_t th;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/vsock.sock", t->dir);
	v.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	REQUIRE_V(v.lfd >= 0 &&
		  bind(v.lfd, (struct sockaddr *)&sun, sizeof(sun)) == 0 &&
		  listen(v.lfd, 1) == 0);
	pthread_create(&th, NULL, fake_vmm_run, &v);
	CHECK(ember_agent_connect_vsock(sun.sun_path, 1024, TEST_TOKEN, 5000,
					&a) == 0);
	if (a) {
		CHECK(ember_agent_health(a, &h) == 0);
		ember_agent_close(a);
	}
	pthread_join(th, NULL);
	CHECK(strcmp(v.line, "CONNECT 1024\n") == 0);
	close(v.lfd);
}

int main(int argc, char **argv)
{
	struct test_agent t;
	struct ember_agent *a;
	int fds;

	REQUIRE(argc >= 3);
	initctl = argv[2];
	signal(SIGPIPE, SIG_IGN);
	REQUIRE(agent_start(&t, argv[1], "sbx-files") == 0);
	fds = agent_fd_count(&t);
	REQUIRE(agent_connect(&t, &a) == 0);
	test_files(a, &t);
	test_health_and_token(&t, a);
	test_bad_input(&t);
	test_reidentify(&t, a);
	test_initctl(&t);
	test_vsock_handshake(&t);
	ember_agent_close(a);
	CHECK(agent_settles(&t, fds, 0));
	CHECK(agent_stop(&t) == 0);
	return test_summary("init-files");
}
