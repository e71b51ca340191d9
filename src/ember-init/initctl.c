// SPDX-License-Identifier: Apache-2.0
/*
 * ember-initctl: speaks the guest agent protocol from the command line,
 * through a Unix socket the agent listens on, or through the VMM's vsock
 * socket (--vsock-port: Firecracker's CONNECT handshake). For debugging,
 * scripts and the benchmark (the bench subcommand).
 */
#include <ember/agent_client.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static bool json_out;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ember-initctl --socket PATH [--vsock-port N] --token T\n"
		"                     [--timeout SEC] [--json] COMMAND [ARGS]\n"
		"Talks to ember-init, the guest agent (docs/guest-agent.md).\n"
		"\n"
		"  --socket PATH     the agent's Unix socket, or with --vsock-port\n"
		"                    the VMM's vsock socket (uds_path)\n"
		"  --vsock-port N    guest port to CONNECT to (default: none)\n"
		"  --token T         access token (default: $EMBER_AGENT_TOKEN)\n"
		"  --timeout SEC     bound on every wait (default 30)\n"
		"  --json            machine-readable output\n"
		"\n"
		"Commands:\n"
		"  health\n"
		"  exec [--cwd DIR] [--user U] [--env K=V]... [--timeout-ms MS]\n"
		"       [--stdin] [--] ARGV...   exits with the command's status\n"
		"       (128+signal when killed, 124 when it timed out)\n"
		"  read PATH                     file to stdout\n"
		"  write [--mode OCTAL] PATH     stdin to file\n"
		"  stat PATH | ls PATH | rm [-r] PATH\n"
		"  signal PID SIGNUM\n"
		"  reidentify [--clock] [--entropy BYTES] [--hostname H]\n"
		"             [--sandbox-id ID] [--new-token T]\n"
		"  bench [--count N] [--size-mib M] [--dir DIR]\n"
		"Exit status: 0 ok, 1 failure, 2 usage error (exec: the command's).\n");
}

static int fail(struct ember_agent *a, const char *what, int r)
{
	const char *msg = a ? ember_agent_last_error(a) : "";

	fprintf(stderr, "ember-initctl: %s: %s%s%s\n", what, strerror(-r),
		*msg ? ": " : "", msg);
	return EMBER_EXIT_FAILURE;
}

static int write_out(void *ctx, const void *buf, size_t len)
{
	return ember_write_full((int)(intptr_t)ctx, buf, len);
}

static int write_err(void *ctx, const void *buf, size_t len)
{
	(void)ctx;
	return ember_write_full(STDERR_FILENO, buf, len);
}

static int cmd_exec(struct ember_agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cwd", required_argument, NULL, 'c' },
		{ "user", required_argument, NULL, 'u' },
		{ "env", required_argument, NULL, 'e' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "stdin", no_argument, NULL, 'i' },
		{ 0 },
	};
	const char **env = calloc((size_t)argc + 1, sizeof(char *));
	struct ember_agent_exec_opts o;
	struct ember_agent_exec_result res;
	size_t nenv = 0;
	uint64_t v;
	int opt, r;

	ember_agent_exec_opts_init(&o);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+c:u:e:t:i", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': o.cwd = optarg; break;
		case 'u': o.user = optarg; break;
		case 'e': env[nenv++] = optarg; break;
		case 'i': o.stdin_fd = STDIN_FILENO; break;
		case 't':
			if (ember_parse_u64(optarg, &v) < 0 || v > UINT32_MAX) {
				free(env);
				return EMBER_EXIT_USAGE;
			}
			o.timeout_ms = (uint32_t)v;
			break;
		default: free(env); return EMBER_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "ember-initctl: exec needs a command\n");
		free(env);
		return EMBER_EXIT_USAGE;
	}
	o.argv = (const char *const *)argv + optind;
	o.env = env;
	o.on_stdout = write_out;
	o.on_stderr = write_err;
	o.ctx = (void *)(intptr_t)STDOUT_FILENO;
	r = ember_agent_exec(a, &o, &res);
	free(env);
	if (r < 0)
		return fail(a, "exec", r);
	if (json_out) {
		json_t *j = json_pack("{s:i, s:i, s:b, s:i}", "exit_code",
				      res.exit_code, "signal", res.signal,
				      "timed_out", res.timed_out, "pid", res.pid);
		char *s = json_dumps(j, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
		json_decref(j);
	}
	if (res.timed_out)
		return 124;
	return res.signal ? 128 + res.signal : res.exit_code;
}

static void print_stat(const char *name, const struct ember_agent_stat *st)
{
	if (json_out) {
		json_t *j = json_pack("{s:s, s:s#, s:i, s:I, s:i, s:i, s:I}",
				      "name", name, "type", &st->type, 1,
				      "mode", st->mode, "size",
				      (json_int_t)st->size, "uid", st->uid,
				      "gid", st->gid, "mtime_ns",
				      (json_int_t)st->mtime_ns);
		char *s = json_dumps(j, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
		json_decref(j);
		return;
	}
	printf("%c %04o %5u %5u %12llu %s\n", st->type, st->mode, st->uid,
	       st->gid, (unsigned long long)st->size, name);
}

static int cmp_dirent(const void *x, const void *y)
{
	return strcmp(((const struct ember_agent_dirent *)x)->name,
		      ((const struct ember_agent_dirent *)y)->name);
}

static int cmd_files(struct ember_agent *a, const char *cmd, int argc,
		     char **argv)
{
	bool recursive = false;
	unsigned mode = 0644;
	uint64_t size;
	int opt, r;

	static const struct option opts[] = {
		{ "recursive", no_argument, NULL, 'r' },
		{ "mode", required_argument, NULL, 'm' },
		{ 0 },
	};

	optind = 1;
	while ((opt = getopt_long(argc, argv, "+rm:", opts, NULL)) != -1) {
		if (opt == 'r')
			recursive = true;
		else if (opt == 'm')
			mode = (unsigned)strtoul(optarg, NULL, 8);
		else
			return EMBER_EXIT_USAGE;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "ember-initctl: %s needs one PATH\n", cmd);
		return EMBER_EXIT_USAGE;
	}
	const char *path = argv[optind];
	if (strcmp(cmd, "read") == 0) {
		r = ember_agent_read_file(a, path, STDOUT_FILENO, &size);
	} else if (strcmp(cmd, "write") == 0) {
		r = ember_agent_write_file(a, path, STDIN_FILENO, mode, &size);
		if (r == 0 && json_out)
			printf("{\"size\":%llu}\n", (unsigned long long)size);
	} else if (strcmp(cmd, "rm") == 0) {
		r = ember_agent_remove(a, path, recursive);
	} else if (strcmp(cmd, "stat") == 0) {
		struct ember_agent_stat st;
		r = ember_agent_stat(a, path, &st);
		if (r == 0)
			print_stat(path, &st);
	} else {
		struct ember_agent_dirent *e;
		size_t n;
		bool trunc;
		r = ember_agent_list(a, path, &e, &n, &trunc);
		if (r == 0) {
			qsort(e, n, sizeof(*e), cmp_dirent);
			for (size_t i = 0; i < n; i++)
				print_stat(e[i].name, &e[i].st);
			if (trunc)
				fprintf(stderr, "ember-initctl: list cut short\n");
			free(e);
		}
	}
	return r < 0 ? fail(a, cmd, r) : EMBER_EXIT_OK;
}

static int cmd_health(struct ember_agent *a)
{
	struct ember_agent_health h;
	int r = ember_agent_health(a, &h);

	if (r < 0)
		return fail(a, "health", r);
	if (json_out)
		printf("{\"version\":\"%s\",\"proto\":%u,\"uptime_ms\":%llu,"
		       "\"sandbox_id\":\"%s\",\"hostname\":\"%s\",\"pid1\":%s,"
		       "\"execs\":%u}\n",
		       h.version, h.proto, (unsigned long long)h.uptime_ms,
		       h.sandbox_id, h.hostname, h.pid1 ? "true" : "false",
		       h.execs);
	else
		printf("ember-init %s, protocol %u, up %llu ms, sandbox %s, "
		       "host %s, %u running\n",
		       h.version, h.proto, (unsigned long long)h.uptime_ms,
		       h.sandbox_id, h.hostname, h.execs);
	return EMBER_EXIT_OK;
}

/* getentropy() gives at most 256 bytes a call. */
static int getentropy_all(uint8_t *buf, size_t len)
{
	for (size_t off = 0; off < len; off += 256)
		if (getentropy(buf + off, EMBER_MIN(len - off, (size_t)256)) < 0)
			return -errno;
	return 0;
}

static int cmd_reidentify(struct ember_agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "clock", no_argument, NULL, 'c' },
		{ "entropy", required_argument, NULL, 'e' },
		{ "hostname", required_argument, NULL, 'h' },
		{ "sandbox-id", required_argument, NULL, 's' },
		{ "new-token", required_argument, NULL, 't' },
		{ 0 },
	};
	struct ember_agent_identity id = { 0 };
	uint8_t entropy[4096];
	uint64_t n;
	int opt, r;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': id.realtime_ns = ember_realtime_ns(); break;
		case 'e':
			if (ember_parse_u64(optarg, &n) < 0 ||
			    n > sizeof(entropy) ||
			    getentropy_all(entropy, (size_t)n) < 0)
				return EMBER_EXIT_USAGE;
			id.entropy = entropy;
			id.entropy_len = (size_t)n;
			break;
		case 'h': id.hostname = optarg; break;
		case 's': id.sandbox_id = optarg; break;
		case 't': id.new_token = optarg; break;
		default: return EMBER_EXIT_USAGE;
		}
	}
	r = ember_agent_reidentify(a, &id);
	return r < 0 ? fail(a, "reidentify", r) : EMBER_EXIT_OK;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static int discard(void *ctx, const void *buf, size_t len)
{
	(void)ctx;
	(void)buf;
	(void)len;
	return 0;
}

/* Exec round trip of `true` and file throughput both ways, as JSON. */
static int cmd_bench(struct ember_agent *a, int argc, char **argv)
{
	static const char *const true_argv[] = { "true", NULL };
	const char *dir = "/tmp";
	uint64_t count = 50, size_mib = 64, *lat, t0, w_ns, r_ns, got;
	struct ember_agent_exec_opts o;
	struct ember_agent_exec_result res;
	char path[4096];
	uint8_t *chunk;
	int opt, fd, nul, r = 0;
	double mean = 0;

	static const struct option opts[] = {
		{ "count", required_argument, NULL, 'n' },
		{ "size-mib", required_argument, NULL, 's' },
		{ "dir", required_argument, NULL, 'd' },
		{ 0 },
	};

	optind = 1;
	while ((opt = getopt_long(argc, argv, "+n:s:d:", opts, NULL)) != -1) {
		if (opt == 'n' && ember_parse_u64(optarg, &count) == 0 && count)
			continue;
		if (opt == 's' && ember_parse_u64(optarg, &size_mib) == 0 &&
		    size_mib)
			continue;
		if (opt == 'd') {
			dir = optarg;
			continue;
		}
		return EMBER_EXIT_USAGE;
	}
	lat = calloc(count, sizeof(*lat));
	chunk = malloc(1 << 20);
	fd = memfd_create("ember-bench", MFD_CLOEXEC);
	nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (!lat || !chunk || fd < 0 || nul < 0) {
		fprintf(stderr, "ember-initctl: bench: cannot set up\n");
		return EMBER_EXIT_FAILURE;
	}
	ember_agent_exec_opts_init(&o);
	o.argv = true_argv;
	o.on_stdout = o.on_stderr = discard;
	for (uint64_t i = 0; i < count && r == 0; i++) {
		t0 = ember_now_ns();
		r = ember_agent_exec(a, &o, &res);
		lat[i] = ember_now_ns() - t0;
		mean += (double)lat[i] / (double)count;
	}
	if (r < 0)
		goto out;
	qsort(lat, count, sizeof(*lat), cmp_u64);
	for (uint64_t i = 0; i < size_mib && r == 0; i++) {
		for (size_t j = 0; j < (1u << 20); j += 8) {
			uint64_t x = (i << 20 | j) * 0x9e3779b97f4a7c15ull;
			memcpy(chunk + j, &x, 8);
		}
		r = ember_write_full(fd, chunk, 1 << 20);
	}
	if (r < 0 || lseek(fd, 0, SEEK_SET) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/ember-bench.%d", dir, (int)getpid());
	t0 = ember_now_ns();
	r = ember_agent_write_file(a, path, fd, 0600, &got);
	w_ns = ember_now_ns() - t0;
	if (r < 0)
		goto out;
	t0 = ember_now_ns();
	r = ember_agent_read_file(a, path, nul, &got);
	r_ns = ember_now_ns() - t0;
	ember_agent_remove(a, path, false);
	if (r < 0)
		goto out;
	printf("{\"exec_true_us\":{\"count\":%llu,\"median\":%.1f,"
	       "\"p90\":%.1f,\"mean\":%.1f},\"file_mib\":%llu,"
	       "\"write_mib_s\":%.1f,\"read_mib_s\":%.1f}\n",
	       (unsigned long long)count, (double)lat[count / 2] / 1e3,
	       (double)lat[count * 9 / 10] / 1e3, mean / 1e3,
	       (unsigned long long)size_mib,
	       (double)size_mib / ((double)w_ns / 1e9),
	       (double)size_mib / ((double)r_ns / 1e9));
out:
	free(lat);
	free(chunk);
	close(fd);
	close(nul);
	return r < 0 ? fail(a, "bench", r) : EMBER_EXIT_OK;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "vsock-port", required_argument, NULL, 'p' },
		{ "token", required_argument, NULL, 't' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *sock = NULL, *token = getenv("EMBER_AGENT_TOKEN"), *cmd;
	uint64_t port = 0, timeout_s = 30;
	bool vsock = false;
	struct ember_agent *a;
	int opt, r;

	while ((opt = getopt_long(argc, argv, "+s:p:t:T:jhV", opts, NULL)) !=
	       -1) {
		switch (opt) {
		case 's': sock = optarg; break;
		case 'p':
			if (ember_parse_u64(optarg, &port) < 0 ||
			    port > UINT32_MAX) {
				usage(stderr);
				return EMBER_EXIT_USAGE;
			}
			vsock = true;
			break;
		case 't': token = optarg; break;
		case 'T':
			if (ember_parse_u64(optarg, &timeout_s) < 0 ||
			    timeout_s == 0 || timeout_s > 86400) {
				usage(stderr);
				return EMBER_EXIT_USAGE;
			}
			break;
		case 'j': json_out = true; break;
		case 'h': usage(stdout); return EMBER_EXIT_OK;
		case 'V':
			printf("ember-initctl %s (protocol %d)\n", EMBER_VERSION,
			       EMBER_AGENT_PROTO_VERSION);
			return EMBER_EXIT_OK;
		default: usage(stderr); return EMBER_EXIT_USAGE;
		}
	}
	if (!sock || optind >= argc) {
		usage(stderr);
		return EMBER_EXIT_USAGE;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	static const char *const cmds[] = { "health", "exec", "read",
		"write", "stat", "ls", "rm", "signal", "reidentify", "bench" };
	bool known = false;
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(cmds); i++)
		known = known || strcmp(cmd, cmds[i]) == 0;
	if (!known) {
		fprintf(stderr, "ember-initctl: unknown command %s\n", cmd);
		return EMBER_EXIT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	if (vsock)
		r = ember_agent_connect_vsock(sock, (uint32_t)port, token,
					      (int)timeout_s * 1000, &a);
	else
		r = ember_agent_connect_unix(sock, token, (int)timeout_s * 1000,
					     &a);
	if (r < 0)
		return fail(NULL, sock, r);
	if (strcmp(cmd, "health") == 0) {
		r = cmd_health(a);
	} else if (strcmp(cmd, "exec") == 0) {
		r = cmd_exec(a, argc, argv);
	} else if (strcmp(cmd, "reidentify") == 0) {
		r = cmd_reidentify(a, argc, argv);
	} else if (strcmp(cmd, "bench") == 0) {
		r = cmd_bench(a, argc, argv);
	} else if (strcmp(cmd, "signal") == 0) {
		uint64_t pid, sig;
		if (argc != 3 || ember_parse_u64(argv[1], &pid) < 0 ||
		    ember_parse_u64(argv[2], &sig) < 0 || pid > INT32_MAX ||
		    sig > 64) {
			r = EMBER_EXIT_USAGE;
		} else {
			r = ember_agent_signal_pid(a, (int)pid, (int)sig);
			r = r < 0 ? fail(a, "signal", r) : EMBER_EXIT_OK;
		}
	} else {
		r = cmd_files(a, cmd, argc, argv);
	}
	ember_agent_close(a);
	return r;
}
