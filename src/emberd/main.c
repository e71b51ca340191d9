// SPDX-License-Identifier: Apache-2.0
/*
 * emberd: Ember's control plane. See docs/control-plane.md.
 */
#include "api.h"
#include "emberd.h"
#include "server.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_DB "/var/lib/ember/emberd.db"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: emberd [serve] [OPTIONS]      run the control plane\n"
		"       emberd keys create [--name NAME] [--db DB]\n"
		"       emberd hosts add URL [--db DB]\n"
		"       emberd migrate [--db DB]\n"
		"\n"
		"Options:\n"
		"  --db DB                 SQLite file, or postgres://... (default " DEFAULT_DB ")\n"
		"  --listen ADDR:PORT      REST API address (default 127.0.0.1:8080)\n"
		"  --agent URL             a host agent, http://HOST:PORT (repeatable)\n"
		"  --kernel PATH           the base template's kernel\n"
		"  --rootfs PATH           the base template's root filesystem\n"
		"  --default-vcpus N       the base template's vCPUs (default 1)\n"
		"  --default-memory SIZE   the base template's memory (default 256M)\n"
		"  --default-timeout SECS  a sandbox's timeout when none is asked (default 300)\n"
		"  --reconcile-interval S  seconds between reconciler passes (default 5)\n"
		"  --agent-timeout SECS    limit of slow agent calls (default 300)\n"
		"  --log-level LEVEL       error, warn, info, debug (default info)\n"
		"  --name NAME             (keys create) a name for the key\n"
		"  -h, --help              this help\n"
		"  -V, --version           the version\n"
		"\n"
		"Exit status: 0 ok, 1 runtime failure, 2 usage error.\n");
}

struct opts {
	const char *db;
	const char *listen;
	const char *kernel, *rootfs, *name;
	const char **agents;
	size_t nagents;
	uint64_t vcpus, memory, timeout, interval, agent_timeout;
};

static _Noreturn void bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "emberd: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'emberd --help'.\n");
	exit(EMBER_EXIT_USAGE);
}

static uint64_t number(const char *opt, const char *s, bool size)
{
	uint64_t v;
	int r = size ? ember_parse_size(s, &v) : ember_parse_u64(s, &v);

	if (r < 0)
		bad_usage("bad value for %s", opt);
	return v;
}

static int parse(int argc, char **argv, struct opts *o)
{
	enum { O_DB = 256, O_LISTEN, O_AGENT, O_KERNEL, O_ROOTFS, O_VCPUS,
	       O_MEMORY, O_TIMEOUT, O_INTERVAL, O_LOGLEVEL, O_NAME,
	       O_AGENT_TIMEOUT };
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, O_DB },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "agent", required_argument, NULL, O_AGENT },
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "rootfs", required_argument, NULL, O_ROOTFS },
		{ "default-vcpus", required_argument, NULL, O_VCPUS },
		{ "default-memory", required_argument, NULL, O_MEMORY },
		{ "default-timeout", required_argument, NULL, O_TIMEOUT },
		{ "reconcile-interval", required_argument, NULL, O_INTERVAL },
		{ "agent-timeout", required_argument, NULL, O_AGENT_TIMEOUT },
		{ "log-level", required_argument, NULL, O_LOGLEVEL },
		{ "name", required_argument, NULL, O_NAME },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	enum ember_log_level level;
	int c;

	while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
		switch (c) {
		case O_DB: o->db = optarg; break;
		case O_LISTEN: o->listen = optarg; break;
		case O_AGENT: {
			const char **a = realloc(o->agents, (o->nagents + 1) *
							    sizeof(*a));
			if (!a)
				ember_die(EMBER_EXIT_FAILURE, "out of memory");
			a[o->nagents++] = optarg;
			o->agents = a;
			break;
		}
		case O_KERNEL: o->kernel = optarg; break;
		case O_ROOTFS: o->rootfs = optarg; break;
		case O_VCPUS: o->vcpus = number("--default-vcpus", optarg, false); break;
		case O_MEMORY: o->memory = number("--default-memory", optarg, true); break;
		case O_TIMEOUT: o->timeout = number("--default-timeout", optarg, false); break;
		case O_INTERVAL: o->interval = number("--reconcile-interval", optarg, false); break;
		case O_AGENT_TIMEOUT: o->agent_timeout = number("--agent-timeout", optarg, false); break;
		case O_LOGLEVEL:
			if (ember_log_parse_level(optarg, &level) < 0)
				bad_usage("unknown log level %s", optarg);
			ember_log_set_level(level);
			break;
		case O_NAME: o->name = optarg; break;
		case 'h': usage(stdout); exit(EMBER_EXIT_OK);
		case 'V': printf("emberd %s\n", EMBER_VERSION); exit(EMBER_EXIT_OK);
		default: usage(stderr); exit(EMBER_EXIT_USAGE);
		}
	}
	if (o->vcpus == 0 || o->vcpus > 64)
		bad_usage("%s must be 1 to 64", "--default-vcpus");
	if (o->memory < (16u << 20))
		bad_usage("%s must be at least 16M", "--default-memory");
	if (o->interval == 0)
		bad_usage("%s must be at least 1", "--reconcile-interval");
	if (o->timeout == 0)
		bad_usage("%s must be at least 1", "--default-timeout");
	for (size_t i = 0; i < o->nagents; i++)
		if (strncmp(o->agents[i], "http://", 7) != 0)
			bad_usage("agent URL must start with http://: %s",
				  o->agents[i]);
	return optind;
}

static struct db *open_db(const char *spec)
{
	struct db *db;
	int r;

	if (!strstr(spec, "://")) {
		char dir[4096];
		char *slash;

		snprintf(dir, sizeof(dir), "%s", spec);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			ember_mkdir_p(dir, 0700);
		}
	}
	r = db_open(spec, &db);
	if (r < 0)
		ember_die(EMBER_EXIT_FAILURE, "cannot open the database");
	r = db_migrate(db, NULL);
	if (r < 0)
		ember_die(EMBER_EXIT_FAILURE, "cannot migrate the database");
	return db;
}

static int cmd_keys_create(struct opts *o)
{
	struct db *db = open_db(o->db);
	char key[API_KEY_LEN];
	int r = store_key_create(db, o->name ? o->name : "", key);

	db_close(db);
	if (r < 0) {
		log_error("cannot create a key: %s", strerror(-r));
		return EMBER_EXIT_FAILURE;
	}
	/* Shown this once: only its hash is kept. */
	printf("%s\n", key);
	return EMBER_EXIT_OK;
}

static int cmd_hosts_add(struct opts *o, const char *url)
{
	struct db *db;
	char id[64];
	int r;

	if (strncmp(url, "http://", 7) != 0)
		bad_usage("agent URL must start with http://: %s", url);
	db = open_db(o->db);
	r = store_host_add(db, url, id);
	db_close(db);
	if (r < 0) {
		log_error("cannot add host %s: %s", url, strerror(-r));
		return EMBER_EXIT_FAILURE;
	}
	printf("%s\n", id);
	return EMBER_EXIT_OK;
}

static int serve(struct opts *o)
{
	struct emberd d = { 0 };
	struct server *srv;
	sigset_t set;
	int r, sig;

	if ((o->kernel == NULL) != (o->rootfs == NULL))
		bad_usage("%s and --rootfs go together", "--kernel");
	d.db = open_db(o->db);
	d.default_vcpus = (unsigned)o->vcpus;
	d.default_memory_mib = o->memory >> 20;
	d.default_timeout_s = (int64_t)o->timeout;
	d.reconcile_interval_s = (unsigned)o->interval;
	d.agent_timeout_ms = (long)o->agent_timeout * 1000;
	d.agent_probe_timeout_ms = 5000;
	pthread_mutex_init(&d.lock, NULL);
	pthread_cond_init(&d.wake, NULL);

	/* The base template, from the flags (kept from an earlier run if
	 * none are given). */
	if (o->kernel) {
		r = store_template_put_base(d.db, "base", o->kernel, o->rootfs,
					    d.default_vcpus,
					    d.default_memory_mib);
		if (r < 0)
			ember_die(EMBER_EXIT_FAILURE,
				  "cannot register the base template");
	}
	for (size_t i = 0; i < o->nagents; i++)
		if (store_host_add(d.db, o->agents[i], NULL) < 0)
			ember_die(EMBER_EXIT_FAILURE, "cannot add host %s",
				  o->agents[i]);

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	r = server_start(o->listen, api_handle, &d, &srv);
	if (r < 0)
		ember_die(EMBER_EXIT_FAILURE, "cannot listen on %s: %s",
			  o->listen, strerror(-r));
	r = reconciler_start(&d);
	if (r < 0)
		ember_die(EMBER_EXIT_FAILURE, "cannot start the reconciler: %s",
			  strerror(-r));
	log_info("listening on %s (port %u), database %s, %zu agent(s)",
		 o->listen, server_port(srv),
		 db_kind(d.db) == DB_SQLITE ? "SQLite" : "PostgreSQL",
		 o->nagents);
	for (;;) {
		struct timespec ts = { .tv_sec = 60 };

		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGINT || sig == SIGTERM)
			break;
	}
	log_info("stopping (signal %d)", sig);
	server_stop(srv);
	reconciler_stop(&d);
	db_close(d.db);
	pthread_cond_destroy(&d.wake);
	pthread_mutex_destroy(&d.lock);
	return EMBER_EXIT_OK;
}

int main(int argc, char **argv)
{
	struct opts o = { .db = DEFAULT_DB, .listen = "127.0.0.1:8080",
			  .vcpus = 1, .memory = 256u << 20, .timeout = 300,
			  .interval = 5, .agent_timeout = 300 };
	const char *cmd = NULL, *sub = NULL, *arg = NULL;
	int first, rest, rc;

	ember_log_init("emberd", NULL);
	/* The subcommand words come first; options may follow. */
	first = 1;
	if (argc > 1 && argv[1][0] != '-') {
		cmd = argv[1];
		first = 2;
		if (strcmp(cmd, "keys") == 0 || strcmp(cmd, "hosts") == 0) {
			if (argc < 3)
				bad_usage("%s needs a subcommand", cmd);
			sub = argv[2];
			first = 3;
		}
	}
	argv[first - 1] = argv[0];
	rest = parse(argc - first + 1, argv + first - 1, &o);
	rest += first - 1;
	if (!cmd || strcmp(cmd, "serve") == 0) {
		if (rest < argc)
			bad_usage("unexpected argument %s", argv[rest]);
		rc = serve(&o);
	} else if (strcmp(cmd, "migrate") == 0) {
		db_close(open_db(o.db));
		rc = EMBER_EXIT_OK;
	} else if (strcmp(cmd, "keys") == 0 && strcmp(sub, "create") == 0) {
		rc = cmd_keys_create(&o);
	} else if (strcmp(cmd, "hosts") == 0 && strcmp(sub, "add") == 0) {
		arg = rest < argc ? argv[rest] : NULL;
		if (!arg || rest + 1 < argc)
			bad_usage("%s", "usage: emberd hosts add URL");
		rc = cmd_hosts_add(&o, arg);
	} else {
		bad_usage("unknown command %s", cmd);
	}
	free(o.agents);
	return rc;
}
