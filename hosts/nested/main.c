// SPDX-License-Identifier: Apache-2.0
/*
 * ember-nested: boots and drives the nested host, a QEMU (TCG, -cpu max
 * with AMD SVM) virtual machine whose KVM can run Linux guests where the
 * outer /dev/kvm cannot. See docs/foundation.md and ENVIRONMENT.md.
 */
#include "nested.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "Usage: ember-nested SUBCOMMAND [OPTIONS] [-- CMD [ARGS...]]\n"
    "\n"
    "  need                 print whether this machine needs the nested host\n"
    "                       (\"yes: why\" / \"no: why\"); EMBER_NESTED=0|1 overrides\n"
    "  start                boot a long-running nested host; returns when it answers\n"
    "  exec -- CMD ARGS...  run CMD in the running host, streaming its output;\n"
    "                       exits with its status (124 timeout, 255 channel\n"
    "                       failure); runs CMD here when no host is needed\n"
    "  run -- CMD ARGS...   start, exec, stop in one (a temporary state folder)\n"
    "  stop                 stop the host and delete its scratch disk\n"
    "  serve [--port N]     the command server (inside the nested host only)\n"
    "\n"
    "Options:\n"
    "  --state-dir DIR      host state (default $EMBER_NESTED_STATE, else\n"
    "                       " NESTED_DEFAULT_STATE ")\n"
    "  --forward HOST:GUEST forward 127.0.0.1:HOST to the host's port GUEST (repeatable)\n"
    "  --smp N              vCPUs (default 1: see docs/vmm-machine.md)\n"
    "  --memory MB          memory in MiB (default 4096)\n"
    "  --scratch SIZE       scratch disk size, sparse (default 8G)\n"
    "  --images DIR         kernel and initramfs (default $EMBER_NESTED_IMAGES,\n"
    "                       else <builddir>/artifacts/nested)\n"
    "  --boot-timeout S     how long start waits for the host (default 300)\n"
    "  --qemu-arg ARG       extra QEMU argument (repeatable)\n"
    "  --env K=V            environment of CMD (repeatable)\n"
    "  --cwd DIR            working directory of CMD (default /)\n"
    "  --timeout S          kill CMD after S seconds (exit 124)\n"
    "  -n                   do not forward standard input\n"
    "  -q, --quiet          fewer messages\n"
    "  --help, --version\n";

static const char *state_dir_of(const struct nested_args *a, char *buf)
{
	const char *d =
	    a->state_dir ? a->state_dir : getenv("EMBER_NESTED_STATE");
	char cwd[PATH_MAX];

	if (!d || !*d)
		d = NESTED_DEFAULT_STATE;
	if (d[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return d;
	if (snprintf(buf, PATH_MAX, "%s/%s", cwd, d) >= PATH_MAX)
		return d;
	return buf;
}

static int cmd_run(const struct nested_args *a)
{
	char tmpl[] = "/tmp/ember-nested-run.XXXXXX";
	char buf[PATH_MAX];
	const char *dir;
	int r;

	if (!nested_need_here().need)
		return nested_cmd_exec(a, "/nonexistent");
	dir = a->state_dir ? state_dir_of(a, buf) : mkdtemp(tmpl);
	if (!dir) {
		log_error("mkdtemp: %s", strerror(errno));
		return EMBER_EXIT_FAILURE;
	}
	r = nested_cmd_start(a, dir);
	if (r != EMBER_EXIT_OK)
		return 255;
	r = nested_cmd_exec(a, dir);
	nested_cmd_stop(dir, true);
	if (!a->state_dir) {
		snprintf(buf, sizeof(buf), "%s/console.log", dir);
		unlink(buf);
		snprintf(buf, sizeof(buf), "%s/qemu.log", dir);
		unlink(buf);
		rmdir(dir);
	}
	return r;
}

int main(int argc, char **argv)
{
	struct nested_args a;
	struct nested_need need;
	char err[256], buf[PATH_MAX];

	ember_log_init("ember-nested", NULL);
	if (nested_parse_args(argc, argv, &a, err, sizeof(err)) < 0) {
		fprintf(stderr, "ember-nested: %s\n\n%s", err, usage);
		return EMBER_EXIT_USAGE;
	}
	switch (a.cmd) {
	case NESTED_CMD_HELP:
		fputs(usage, stdout);
		return EMBER_EXIT_OK;
	case NESTED_CMD_VERSION:
		printf("ember-nested %s\n", EMBER_VERSION);
		return EMBER_EXIT_OK;
	case NESTED_CMD_NEED:
		need = nested_need_here();
		printf("%s: %s\n", need.need ? "yes" : "no", need.reason);
		return EMBER_EXIT_OK;
	case NESTED_CMD_START:
		return nested_cmd_start(&a, state_dir_of(&a, buf));
	case NESTED_CMD_EXEC:
		return nested_cmd_exec(&a, state_dir_of(&a, buf));
	case NESTED_CMD_RUN:
		return cmd_run(&a);
	case NESTED_CMD_STOP:
		return nested_cmd_stop(state_dir_of(&a, buf), a.quiet);
	case NESTED_CMD_SERVE:
		return nested_cmd_serve(&a);
	default:
		return EMBER_EXIT_USAGE;
	}
}
