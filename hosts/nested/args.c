// SPDX-License-Identifier: Apache-2.0
/*
 * Command-line parsing of ember-nested (no I/O: unit-tested).
 *
 *   ember-nested need
 *   ember-nested start [--state-dir D] [--forward H:G]... [--smp N]
 *                      [--memory MB] [--scratch SIZE] [--images DIR]
 *                      [--boot-timeout S] [--qemu-arg ARG]...
 *   ember-nested exec  [--state-dir D] [--env K=V]... [--cwd DIR]
 *                      [--timeout S] [-n] -- CMD [ARGS...]
 *   ember-nested run   [start options] [exec options] -- CMD [ARGS...]
 *   ember-nested stop  [--state-dir D]
 *   ember-nested serve [--port N]      (inside the nested host)
 */
#include "nested.h"

#include <ember/util.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int parse_port(const char *s, uint16_t *out)
{
	uint64_t v;

	if (ember_parse_u64(s, &v) < 0 || v == 0 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

int nested_parse_forward(const char *s, struct nested_forward *out)
{
	const char *colon = strchr(s, ':');
	char host[8];
	size_t hl;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (parse_port(host, &out->host_port) < 0 ||
	    parse_port(colon + 1, &out->guest_port) < 0)
		return -EINVAL;
	return 0;
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	uint64_t v;

	if (ember_parse_u64(s, &v) < 0 || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static const struct {
	const char *name;
	enum nested_cmd cmd;
} commands[] = {
    {"need", NESTED_CMD_NEED}, {"start", NESTED_CMD_START},
    {"exec", NESTED_CMD_EXEC}, {"run", NESTED_CMD_RUN},
    {"stop", NESTED_CMD_STOP}, {"serve", NESTED_CMD_SERVE},
    {"help", NESTED_CMD_HELP},
};

/* Which options each subcommand takes. */
#define OPT_STATE (1u << 0)
#define OPT_START (1u << 1)
#define OPT_EXEC  (1u << 2)
#define OPT_SERVE (1u << 3)

static unsigned allowed(enum nested_cmd c)
{
	switch (c) {
	case NESTED_CMD_START:
		return OPT_STATE | OPT_START;
	case NESTED_CMD_EXEC:
		return OPT_STATE | OPT_EXEC;
	case NESTED_CMD_RUN:
		return OPT_STATE | OPT_START | OPT_EXEC;
	case NESTED_CMD_STOP:
		return OPT_STATE;
	case NESTED_CMD_SERVE:
		return OPT_SERVE;
	default:
		return 0;
	}
}

int nested_parse_args(int argc, char *const argv[], struct nested_args *a,
		      char *err, size_t err_len)
{
	int i;

	memset(a, 0, sizeof(*a));
	/* One CPU: with two, QEMU 7.2's emulated SVM now and then corrupts a
	 * CPU that is in guest mode while the other interrupts it (guests
	 * triple-fault, or the host's own kernel dies in KVM_RUN): 4 of 8
	 * init-agent runs failed with two CPUs, none of 8 with every process
	 * pinned to one CPU, none of 10 with one (docs/vmm-machine.md). */
	a->smp = 1;
	a->memory_mb = 4096;
	a->scratch_bytes = 8ull << 30;
	a->boot_timeout_s = 300;
	a->port = NESTED_SERVE_PORT;
	err[0] = '\0';

	if (argc < 2)
		return fail(err, err_len, "no subcommand (try --help)");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		a->cmd = NESTED_CMD_HELP;
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		a->cmd = NESTED_CMD_VERSION;
		return 0;
	}
	for (size_t k = 0; k < EMBER_ARRAY_SIZE(commands); k++)
		if (strcmp(argv[1], commands[k].name) == 0)
			a->cmd = commands[k].cmd;
	if (a->cmd == NESTED_CMD_NONE)
		return fail(err, err_len, "unknown subcommand '%s'", argv[1]);

	unsigned ok = allowed(a->cmd);

	for (i = 2; i < argc; i++) {
		const char *opt = argv[i], *val = NULL;
		char name[32];
		const char *eq;

		if (strcmp(opt, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
			a->cmd = NESTED_CMD_HELP;
			return 0;
		}
		if (opt[0] != '-') {
			if (ok & OPT_EXEC)
				break; /* the command, without "--" */
			return fail(err, err_len, "unexpected argument '%s'",
				    opt);
		}
		if ((ok & OPT_EXEC) && strcmp(opt, "-n") == 0) {
			a->no_stdin = true;
			continue;
		}
		if (strcmp(opt, "-q") == 0 || strcmp(opt, "--quiet") == 0) {
			a->quiet = true;
			continue;
		}
		eq = strchr(opt, '=');
		if (eq && (size_t)(eq - opt) < sizeof(name)) {
			memcpy(name, opt, (size_t)(eq - opt));
			name[eq - opt] = '\0';
			val = eq + 1;
			opt = name;
		} else if (i + 1 < argc) {
			val = argv[i + 1];
		}
#define TAKES(o, group) (strcmp(opt, (o)) == 0 && (ok & (group)))
#define NEED_VALUE()                                                           \
	do {                                                                   \
		if (!val)                                                      \
			return fail(err, err_len, "%s needs a value", opt);    \
		if (!eq)                                                       \
			i++;                                                   \
	} while (0)
		if (TAKES("--state-dir", OPT_STATE)) {
			NEED_VALUE();
			a->state_dir = val;
		} else if (TAKES("--forward", OPT_START)) {
			NEED_VALUE();
			if (a->n_forwards >= NESTED_MAX_FORWARDS)
				return fail(err, err_len,
					    "too many --forward (at most %d)",
					    NESTED_MAX_FORWARDS);
			if (nested_parse_forward(
				val, &a->forwards[a->n_forwards]) < 0)
				return fail(
				    err, err_len,
				    "--forward wants HOST:GUEST ports, not '%s'",
				    val);
			a->n_forwards++;
		} else if (TAKES("--smp", OPT_START)) {
			NEED_VALUE();
			if (parse_uint(val, 1, 64, &a->smp) < 0)
				return fail(err, err_len,
					    "--smp wants 1..64, not '%s'", val);
		} else if (TAKES("--memory", OPT_START)) {
			NEED_VALUE();
			if (parse_uint(val, 256, 1u << 20, &a->memory_mb) < 0)
				return fail(
				    err, err_len,
				    "--memory wants MiB (256 or more), not '%s'",
				    val);
		} else if (TAKES("--scratch", OPT_START)) {
			NEED_VALUE();
			if (ember_parse_size(val, &a->scratch_bytes) < 0 ||
			    a->scratch_bytes < (64u << 20))
				return fail(
				    err, err_len,
				    "--scratch wants a size of 64M or more, not '%s'",
				    val);
		} else if (TAKES("--images", OPT_START)) {
			NEED_VALUE();
			a->images = val;
		} else if (TAKES("--boot-timeout", OPT_START)) {
			NEED_VALUE();
			if (parse_uint(val, 1, 3600, &a->boot_timeout_s) < 0)
				return fail(
				    err, err_len,
				    "--boot-timeout wants seconds, not '%s'",
				    val);
		} else if (TAKES("--qemu-arg", OPT_START)) {
			NEED_VALUE();
			if (a->n_qemu_args >= NESTED_MAX_QEMU_ARGS)
				return fail(err, err_len,
					    "too many --qemu-arg");
			a->qemu_args[a->n_qemu_args++] = val;
		} else if (TAKES("--env", OPT_EXEC)) {
			NEED_VALUE();
			if (!strchr(val, '=') || val[0] == '=')
				return fail(err, err_len,
					    "--env wants K=V, not '%s'", val);
			if (a->n_env >= NESTED_MAX_ENV)
				return fail(err, err_len, "too many --env");
			a->env[a->n_env++] = val;
		} else if (TAKES("--cwd", OPT_EXEC)) {
			NEED_VALUE();
			a->cwd = val;
		} else if (TAKES("--timeout", OPT_EXEC)) {
			NEED_VALUE();
			if (parse_uint(val, 1, 86400, &a->timeout_s) < 0)
				return fail(err, err_len,
					    "--timeout wants seconds, not '%s'",
					    val);
		} else if (TAKES("--port", OPT_SERVE)) {
			NEED_VALUE();
			if (parse_port(val, &a->port) < 0)
				return fail(err, err_len,
					    "--port wants 1..65535, not '%s'",
					    val);
		} else {
			return fail(err, err_len, "'%s' is not an option of %s",
				    opt, argv[1]);
		}
#undef TAKES
#undef NEED_VALUE
	}
	if (ok & OPT_EXEC) {
		if (i >= argc)
			return fail(err, err_len,
				    "%s needs a command (after --)", argv[1]);
		a->argv = &argv[i];
		a->argc = argc - i;
	} else if (i < argc) {
		return fail(err, err_len, "%s takes no command", argv[1]);
	}
	return 0;
}
