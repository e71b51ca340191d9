// SPDX-License-Identifier: Apache-2.0
/*
 * ember-vmm: one process per microVM, driven through Firecracker's API on a
 * Unix socket or by a Firecracker config file.
 *
 * Threads: main (this file) waits for SIGTERM/SIGINT, the guest's end and
 * state changes; the API server has its own thread (api.c); the machine runs
 * its vCPU and device threads (machine/). SIGTERM and SIGINT are blocked in
 * every thread and read here from a signalfd.
 */
#include "api.h"
#include "config.h"
#include "vm.h"

#include <ember/log.h>
#include <ember/util.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define DEFAULT_API_SOCK "/run/ember-vmm.socket"
#define DEFAULT_ID	 "anonymous-instance"

struct options {
	const char *api_sock;
	const char *config_file;
	const char *id;
	const char *log_path;
	const char *level;
	bool no_api;
	bool boot_timer;
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "Usage: ember-vmm [OPTIONS]\n"
	    "\n"
	    "A KVM virtual machine monitor for one microVM, driven through a\n"
	    "subset of Firecracker's HTTP API on a Unix socket.\n"
	    "\n"
	    "Options:\n"
	    "  --api-sock PATH     API socket (default " DEFAULT_API_SOCK ")\n"
	    "  --config-file PATH  Firecracker JSON config file; the microVM\n"
	    "                      boots at once\n"
	    "  --no-api            serve no API (needs --config-file)\n"
	    "  --id ID             microVM id, the log prefix (default\n"
	    "                      " DEFAULT_ID ")\n"
	    "  --log-path PATH     append the log to PATH instead of stderr\n"
	    "  --level LEVEL       Error, Warning, Info (default), Debug, Trace\n"
	    "  --boot-timer        log the time from InstanceStart to the\n"
	    "                      guest's write to the boot-timer port\n"
	    "  -V, --version       print the version and exit\n"
	    "  -h, --help          print this help and exit\n"
	    "\n"
	    "Exit status: 0 when the guest rebooted or powered off, or on\n"
	    "SIGTERM/SIGINT; 1 on a guest crash or a runtime failure; 2 on a\n"
	    "usage error. See docs/vmm-api.md for the API.\n");
}

_Noreturn static void usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "ember-vmm: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'ember-vmm --help'.\n");
	exit(EMBER_EXIT_USAGE);
}

static bool valid_id(const char *id)
{
	size_t len = strlen(id);

	if (len == 0 || len >= VM_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)id[i]) && id[i] != '-' &&
		    id[i] != '_')
			return false;
	return true;
}

static void parse_args(int argc, char **argv, struct options *o)
{
	enum {
		O_API_SOCK = 256,
		O_CONFIG,
		O_NO_API,
		O_ID,
		O_LOG_PATH,
		O_LEVEL,
		O_BOOT_TIMER,
	};
	static const struct option longopts[] = {
	    {"api-sock", required_argument, NULL, O_API_SOCK},
	    {"config-file", required_argument, NULL, O_CONFIG},
	    {"no-api", no_argument, NULL, O_NO_API},
	    {"id", required_argument, NULL, O_ID},
	    {"log-path", required_argument, NULL, O_LOG_PATH},
	    {"level", required_argument, NULL, O_LEVEL},
	    {"boot-timer", no_argument, NULL, O_BOOT_TIMER},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum ember_log_level level;
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hV", longopts, NULL)) != -1) {
		switch (c) {
		case O_API_SOCK:
			o->api_sock = optarg;
			break;
		case O_CONFIG:
			o->config_file = optarg;
			break;
		case O_NO_API:
			o->no_api = true;
			break;
		case O_ID:
			o->id = optarg;
			break;
		case O_LOG_PATH:
			o->log_path = optarg;
			break;
		case O_LEVEL:
			o->level = optarg;
			break;
		case O_BOOT_TIMER:
			o->boot_timer = true;
			break;
		case 'V':
			printf("ember-vmm %s\n", EMBER_VERSION);
			exit(EMBER_EXIT_OK);
		case 'h':
			usage(stdout);
			exit(EMBER_EXIT_OK);
		case ':':
			usage_error("option %s needs an argument",
				    argv[optind - 1]);
		default:
			usage_error("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument %s", argv[optind]);
	if (o->no_api && !o->config_file)
		usage_error("%s needs --config-file", "--no-api");
	if (o->no_api && o->api_sock)
		usage_error("%s and --api-sock exclude each other", "--no-api");
	if (!valid_id(o->id))
		usage_error("--id \"%s\" must have 1 to 63 letters, digits, "
			    "'-' or '_'",
			    o->id);
	if (o->level && ember_log_parse_level(o->level, &level) < 0)
		usage_error("--level %s is not one of Error, Warning, Info, "
			    "Debug, Trace",
			    o->level);
	if (o->api_sock && !o->api_sock[0])
		usage_error("%s must not be empty", "--api-sock");
	if (!o->api_sock)
		o->api_sock = DEFAULT_API_SOCK;
}

/* Waits until a signal or the guest's end. Returns the exit status. */
static int wait_for_end(struct vmm *vmm, int sig_fd)
{
	const char *id = vmm->cfg.vm.id;
	struct signalfd_siginfo si;
	struct pollfd p[3];
	struct vm *vm;
	uint64_t count;
	int n, status;

	for (;;) {
		pthread_mutex_lock(&vmm->lock);
		vm = vmm->vm;
		pthread_mutex_unlock(&vmm->lock);

		n = 0;
		p[n++] = (struct pollfd){.fd = sig_fd, .events = POLLIN};
		p[n++] = (struct pollfd){.fd = vmm->wake_fd, .events = POLLIN};
		if (vm)
			p[n++] = (struct pollfd){.fd = vm_exit_fd(vm),
						 .events = POLLIN};
		/* The timeout only bounds the wait; every event wakes it. */
		if (poll(p, n, 5000) < 0) {
			if (errno == EINTR)
				continue;
			olog_error(id, "poll: %s", strerror(errno));
			return EMBER_EXIT_FAILURE;
		}
		if (p[0].revents & POLLIN) {
			if (read(sig_fd, &si, sizeof(si)) == sizeof(si))
				olog_info(id, "%s: shutting down",
					  strsignal((int)si.ssi_signo));
			return EMBER_EXIT_OK;
		}
		if (p[1].revents & POLLIN)
			(void)!read(vmm->wake_fd, &count, sizeof(count));
		if (vm && (p[2].revents & POLLIN)) {
			status = vm_exit_status(vm);
			pthread_mutex_lock(&vmm->lock);
			vmm->state = VMM_EXITED;
			pthread_mutex_unlock(&vmm->lock);
			if (status == 0)
				olog_info(id, "the guest ended; exiting");
			else
				olog_error(id, "the guest crashed; exiting");
			return status == 0 ? EMBER_EXIT_OK : EMBER_EXIT_FAILURE;
		}
	}
}

static int setup_logger(const struct vmm_logger *lg, const char *id)
{
	enum ember_log_level level;
	int rc;

	if (lg->log_path[0]) {
		rc = ember_log_set_file(lg->log_path);
		if (rc < 0) {
			olog_error(id, "cannot open the log %s: %s",
				   lg->log_path, strerror(-rc));
			return rc;
		}
	}
	if (lg->level[0] && ember_log_parse_level(lg->level, &level) == 0)
		ember_log_set_level(level);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = {.id = DEFAULT_ID};
	enum ember_log_level level;
	char err[1024];
	struct vmm vmm;
	sigset_t mask;
	int sig_fd, rc, status = EMBER_EXIT_FAILURE;

	parse_args(argc, argv, &o);
	ember_log_init("ember-vmm", o.id);
	if (o.level && ember_log_parse_level(o.level, &level) == 0)
		ember_log_set_level(level);
	if (o.log_path) {
		rc = ember_log_set_file(o.log_path);
		if (rc < 0)
			ember_die(EMBER_EXIT_FAILURE,
				  "cannot open the log %s: %s", o.log_path,
				  strerror(-rc));
	}

	/* Blocked before any thread exists, so every thread inherits it. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sig_fd < 0)
		ember_die(EMBER_EXIT_FAILURE, "signalfd: %s", strerror(errno));

	if (vmm_init(&vmm, o.id) < 0)
		goto out_sig;
	vmm.cfg.vm.boot_timer = o.boot_timer;
	if (o.config_file) {
		if (config_load_file(&vmm.cfg, o.config_file, err,
				     sizeof(err)) < 0) {
			log_error("%s", err);
			goto out_vmm;
		}
		if (setup_logger(&vmm.cfg.logger, o.id) < 0)
			goto out_vmm;
	}
	if (!o.no_api && api_start(&vmm, o.api_sock) < 0)
		goto out_vmm;
	if (o.config_file && vmm_boot(&vmm, err, sizeof(err)) < 0) {
		log_error("InstanceStart: %s", err);
		goto out_vmm;
	}
	status = wait_for_end(&vmm, sig_fd);

out_vmm:
	vmm_fini(&vmm);
out_sig:
	close(sig_fd);
	return status;
}
