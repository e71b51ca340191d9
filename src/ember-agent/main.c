// SPDX-License-Identifier: Apache-2.0
/*
 * ember-agent: the host agent. Owns every VMM, disk and socket of the
 * sandboxes on this host and offers them over the Connect RPC of
 * proto/hostagent.proto. See docs/agent.md.
 */
#include "agent.h"

#include <ember/log.h>
#include <ember/util.h>

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ember-agent [OPTIONS]\n"
		"\n"
		"  --listen HOST:PORT   RPC and /metrics address (default 127.0.0.1:7070;\n"
		"                       port 0 picks a free one)\n"
		"  --port-file PATH     write the port listened on to PATH\n"
		"  --state-dir DIR      sandboxes' disks and records (default " AGENT_DEFAULT_STATE_DIR ")\n"
		"  --run-dir DIR        sockets (default " AGENT_DEFAULT_RUN_DIR ")\n"
		"  --vmm KIND           ember (default) or firecracker\n"
		"  --vmm-bin PATH       the VMM binary (default: ember-vmm of this build)\n"
		"  --uffd-bin PATH      the page server (default: ember-uffd of this build)\n"
		"  --kernel PATH        kernel of base templates that name none\n"
		"  --rootfs PATH        rootfs of base templates that name none\n"
		"  --boot-timeout SECS  how long a guest may take to answer (default 300)\n"
		"  --prefetch MODE      how restores bring memory back, unless a request\n"
		"                       says: on (default: install the recorded working\n"
		"                       set, or record one), off (lazy), record (lazy,\n"
		"                       record anew), eager (all memory first)\n"
		"  --log-level LEVEL    error, warn, info (default), debug\n"
		"  -h, --help, -V, --version\n"
		"\n"
		"Serves until SIGTERM or SIGINT (running sandboxes keep running and\n"
		"are adopted by the next agent on the same folders).\n"
		"Exit status: 0 after a signal, 1 on a runtime failure (the port or a\n"
		"folder cannot be used), 2 on a usage error.\n");
}

static int copy_opt(char *dst, size_t len, const char *v, const char *name)
{
	if (strlen(v) >= len) {
		fprintf(stderr, "ember-agent: %s is too long\n", name);
		return -ENAMETOOLONG;
	}
	snprintf(dst, len, "%s", v);
	return 0;
}

/* <dir of this program>/../<prog>/<prog> (the build tree) or
 * <dir of this program>/<prog> (installed side by side). */
static void sibling(const char *prog, char *out, size_t len)
{
	char self[PATH_MAX], cand[PATH_MAX + 64];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return;
	self[n] = '\0';
	char *dir = dirname(self);
	snprintf(cand, sizeof(cand), "%s/../%s/%s", dir, prog, prog);
	if (access(cand, X_OK) != 0)
		snprintf(cand, sizeof(cand), "%s/%s", dir, prog);
	if (access(cand, X_OK) == 0 && realpath(cand, self) &&
	    strlen(self) < len)
		memcpy(out, self, strlen(self) + 1);
}

static int parse_args(int argc, char **argv, struct agent_config *cfg,
		      const char **port_file)
{
	enum { O_LISTEN = 256, O_PORT_FILE, O_STATE, O_RUN, O_VMM, O_VMM_BIN,
	       O_UFFD_BIN, O_KERNEL, O_ROOTFS, O_BOOT_TIMEOUT, O_LEVEL,
	       O_PREFETCH };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "state-dir", required_argument, NULL, O_STATE },
		{ "run-dir", required_argument, NULL, O_RUN },
		{ "vmm", required_argument, NULL, O_VMM },
		{ "vmm-bin", required_argument, NULL, O_VMM_BIN },
		{ "uffd-bin", required_argument, NULL, O_UFFD_BIN },
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "rootfs", required_argument, NULL, O_ROOTFS },
		{ "boot-timeout", required_argument, NULL, O_BOOT_TIMEOUT },
		{ "log-level", required_argument, NULL, O_LEVEL },
		{ "prefetch", required_argument, NULL, O_PREFETCH },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	enum ember_log_level level;
	uint64_t v;
	int c, r = 0;

	snprintf(cfg->listen_host, sizeof(cfg->listen_host), "127.0.0.1");
	cfg->listen_port = 7070;
	snprintf(cfg->state_dir, sizeof(cfg->state_dir), AGENT_DEFAULT_STATE_DIR);
	snprintf(cfg->run_dir, sizeof(cfg->run_dir), AGENT_DEFAULT_RUN_DIR);
	cfg->boot_timeout_s = 300;
	cfg->prefetch = PREFETCH_ON;
	sibling("ember-vmm", cfg->vmm_bin, sizeof(cfg->vmm_bin));
	sibling("ember-uffd", cfg->uffd_bin, sizeof(cfg->uffd_bin));
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN: {
			const char *colon = strrchr(optarg, ':');
			if (!colon || ember_parse_u64(colon + 1, &v) < 0 ||
			    v > 65535 || (size_t)(colon - optarg) >= sizeof(cfg->listen_host)) {
				fprintf(stderr, "ember-agent: --listen takes HOST:PORT, not '%s'\n", optarg);
				return -EINVAL;
			}
			snprintf(cfg->listen_host, sizeof(cfg->listen_host), "%.*s",
				 (int)(colon - optarg), optarg);
			cfg->listen_port = (unsigned)v;
			break;
		}
		case O_PORT_FILE: *port_file = optarg; break;
		case O_STATE: r = copy_opt(cfg->state_dir, sizeof(cfg->state_dir), optarg, "--state-dir"); break;
		case O_RUN: r = copy_opt(cfg->run_dir, sizeof(cfg->run_dir), optarg, "--run-dir"); break;
		case O_VMM:
			if (strcmp(optarg, "ember") == 0) {
				cfg->vmm_kind = VMM_EMBER;
			} else if (strcmp(optarg, "firecracker") == 0) {
				cfg->vmm_kind = VMM_FIRECRACKER;
			} else {
				fprintf(stderr, "ember-agent: --vmm is ember or firecracker, not '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case O_VMM_BIN: r = copy_opt(cfg->vmm_bin, sizeof(cfg->vmm_bin), optarg, "--vmm-bin"); break;
		case O_UFFD_BIN: r = copy_opt(cfg->uffd_bin, sizeof(cfg->uffd_bin), optarg, "--uffd-bin"); break;
		case O_KERNEL: r = copy_opt(cfg->kernel, sizeof(cfg->kernel), optarg, "--kernel"); break;
		case O_ROOTFS: r = copy_opt(cfg->rootfs, sizeof(cfg->rootfs), optarg, "--rootfs"); break;
		case O_BOOT_TIMEOUT:
			if (ember_parse_u64(optarg, &v) < 0 || v == 0 || v > 86400) {
				fprintf(stderr, "ember-agent: --boot-timeout takes 1 to 86400 seconds\n");
				return -EINVAL;
			}
			cfg->boot_timeout_s = (unsigned)v;
			break;
		case O_PREFETCH:
			if (prefetch_mode_parse(optarg, &cfg->prefetch) < 0 ||
			    cfg->prefetch == PREFETCH_DEFAULT) {
				fprintf(stderr, "ember-agent: --prefetch is on, off, record or eager, not '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case O_LEVEL:
			if (ember_log_parse_level(optarg, &level) < 0) {
				fprintf(stderr, "ember-agent: unknown log level '%s'\n", optarg);
				return -EINVAL;
			}
			ember_log_set_level(level);
			break;
		case 'h': usage(stdout); exit(EMBER_EXIT_OK);
		case 'V': printf("ember-agent %s\n", EMBER_VERSION); exit(EMBER_EXIT_OK);
		default: usage(stderr); return -EINVAL;
		}
		if (r < 0)
			return r;
	}
	if (optind < argc) {
		fprintf(stderr, "ember-agent: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (cfg->state_dir[0] != '/' || cfg->run_dir[0] != '/') {
		fprintf(stderr, "ember-agent: --state-dir and --run-dir must be absolute\n");
		return -EINVAL;
	}
	if (!cfg->vmm_bin[0]) {
		fprintf(stderr, "ember-agent: no VMM found next to this program; give --vmm-bin\n");
		return -EINVAL;
	}
	if (cfg->vmm_bin[0] != '/') {
		fprintf(stderr, "ember-agent: --vmm-bin must be an absolute path\n");
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct agent a;
	struct rpc_server *srv = NULL;
	const char *port_file = NULL;
	sigset_t sigs;
	int sig, r;

	ember_log_init("ember-agent", NULL);
	if (parse_args(argc, argv, &a.cfg, &port_file) < 0)
		return EMBER_EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	if (agent_init(&a) < 0)
		return EMBER_EXIT_FAILURE;
	r = agent_load(&a);
	if (r < 0)
		log_warn("cannot read the sandboxes in %s: %s", a.cfg.state_dir,
			 strerror(-r));
	if (rpc_start(&a, &srv) < 0) {
		agent_fini(&a);
		return EMBER_EXIT_FAILURE;
	}
	if (port_file) {
		char buf[16];
		snprintf(buf, sizeof(buf), "%u\n", rpc_port(srv));
		r = ember_write_file_atomic(port_file, buf, strlen(buf), 0644);
		if (r < 0)
			log_error("cannot write %s: %s", port_file, strerror(-r));
	}
	log_info("listening on %s:%u (host %s, state %s, run %s, VMM %s: %s, prefetch %s)",
		 a.cfg.listen_host, rpc_port(srv), a.host_id, a.cfg.state_dir,
		 a.cfg.run_dir, a.cfg.vmm_bin, a.vmm_version,
		 prefetch_mode_name(a.cfg.prefetch));

	for (;;) {
		const struct timespec tick = { 1, 0 };
		sig = sigtimedwait(&sigs, NULL, &tick);
		if (sig == SIGINT || sig == SIGTERM)
			break;
		sandbox_monitor(&a);
	}
	log_info("signal %d: stopping (VMMs keep running)", sig);
	rpc_stop(srv);
	agent_fini(&a);
	curl_global_cleanup();
	return EMBER_EXIT_OK;
}
