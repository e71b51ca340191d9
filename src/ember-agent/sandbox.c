// SPDX-License-Identifier: Apache-2.0
/*
 * The sandbox table and its state machine.
 *
 *   CreateSandbox
 *        |
 *        v            boot failed
 *    STARTING -----------------------> (removed, error to the caller)
 *        | guest agent answers health
 *        v
 *     RUNNING ----PauseSandbox----> PAUSING --ok--> PAUSED
 *      ^  |  ^                        | failed         |
 *      |  |  +------------------------+                | ResumeSandbox
 *      |  |                                            v
 *      |  +-- VMM died --> ERROR        RUNNING <--ok-- RESUMING
 *      |                     |                  failed: PAUSED
 *      +---------------------+--- any state but STOPPING
 *                                  --DestroySandbox--> STOPPING --> (removed)
 *
 * Invariants:
 * - A state with "-ING" means an operation owns the sandbox; a second
 *   pause, resume, snapshot or destroy meanwhile gets -EAGAIN (Connect
 *   "aborted", HTTP 409). A request the state does not allow (resume of a
 *   running sandbox) gets -EBUSY ("failed_precondition").
 * - RUNNING, STARTING, PAUSING, RESUMING and STOPPING hold a VMM; PAUSED
 *   holds none, only files. A sandbox is never both running and paused.
 * - The record on disk (<state>/sandboxes/<id>/state.json) is written
 *   atomically at every transition, so an agent restarted after a crash
 *   finds each sandbox in the last state it reached, and adopts the VMMs
 *   that still run (checked by pid and process start time).
 * - a->lock guards the table and every field of every sandbox; the slow
 *   parts (disk copy, boot, guest calls) run without it.
 */
#include "agent.h"

#include <ember/agent_client.h>
#include <ember/log.h>
#include <ember/util.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GUEST_CID 3
#define HEALTH_POLL_MS 200

void agent_err_set(struct agent_err *e, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

bool agent_valid_id(const char *id)
{
	size_t n = id ? strlen(id) : 0;

	if (n == 0 || n > AGENT_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* --- the state machine ---------------------------------------------------- */

static const char *const state_names[] = {
	[SBX_STARTING] = "starting", [SBX_RUNNING] = "running",
	[SBX_PAUSING] = "pausing",   [SBX_PAUSED] = "paused",
	[SBX_RESUMING] = "resuming", [SBX_STOPPING] = "stopping",
	[SBX_STOPPED] = "stopped",   [SBX_ERROR] = "error",
};

const char *sbx_state_name(enum sbx_state s)
{
	if (s < SBX_STARTING || s > SBX_ERROR)
		return "unknown";
	return state_names[s];
}

int sbx_state_parse(const char *name, enum sbx_state *out)
{
	for (int s = SBX_STARTING; s <= SBX_ERROR; s++) {
		if (name && strcmp(name, state_names[s]) == 0) {
			*out = (enum sbx_state)s;
			return 0;
		}
	}
	return -EINVAL;
}

bool sbx_transition_allowed(enum sbx_state from, enum sbx_state to)
{
	switch (to) {
	case SBX_RUNNING:
		return from == SBX_STARTING || from == SBX_PAUSING ||
		       from == SBX_RESUMING;
	case SBX_PAUSING:
		return from == SBX_RUNNING;
	case SBX_PAUSED:
		return from == SBX_PAUSING || from == SBX_RESUMING;
	case SBX_RESUMING:
		return from == SBX_PAUSED;
	case SBX_STOPPING:
		return from == SBX_RUNNING || from == SBX_PAUSED ||
		       from == SBX_ERROR;
	case SBX_STOPPED:
		return from == SBX_STOPPING;
	case SBX_ERROR:
		return from == SBX_STARTING || from == SBX_RUNNING ||
		       from == SBX_PAUSING || from == SBX_RESUMING ||
		       from == SBX_STOPPING;
	default:
		return false;
	}
}

bool sbx_state_listed(enum sbx_state s)
{
	return s == SBX_STARTING || s == SBX_RUNNING || s == SBX_PAUSING ||
	       s == SBX_RESUMING || s == SBX_STOPPING;
}

/* --- records -------------------------------------------------------------- */

void sandbox_free(struct sandbox *s)
{
	if (!s)
		return;
	json_decref(s->metadata);
	json_decref(s->env);
	free(s);
}

/* A copy for a caller outside the lock. Called with a->lock held. */
static struct sandbox *sandbox_dup(const struct sandbox *s)
{
	struct sandbox *c = malloc(sizeof(*c));

	if (!c)
		return NULL;
	*c = *s;
	c->next = NULL;
	c->metadata = s->metadata ? json_deep_copy(s->metadata) : NULL;
	c->env = s->env ? json_deep_copy(s->env) : NULL;
	return c;
}

static struct sandbox *find(struct agent *a, const char *id)
{
	for (struct sandbox *s = a->sandboxes; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

static void unlink_sandbox(struct agent *a, struct sandbox *gone)
{
	for (struct sandbox **p = &a->sandboxes; *p; p = &(*p)->next) {
		if (*p == gone) {
			*p = gone->next;
			return;
		}
	}
}

static int64_t now_ms(void)
{
	return (int64_t)(ember_realtime_ns() / 1000000);
}

/* Field 22 of /proc/PID/stat: the start time, which tells a VMM from a
 * later process that got its pid. 0 when unknown. */
static uint64_t proc_start_time(pid_t pid)
{
	char path[64], *buf = NULL, *p;
	unsigned long long t = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (ember_read_file(path, 4096, &buf, NULL) < 0)
		return 0;
	p = strrchr(buf, ')');
	/* After ")": state is field 3, start time field 22. */
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (p)
		t = strtoull(p + 1, NULL, 10);
	free(buf);
	return t;
}

/* Writes s's record atomically. Called with a->lock held. */
static int save(struct agent *a, const struct sandbox *s)
{
	char path[PATH_MAX], *text;
	json_t *j;
	int r;

	r = sbx_path(&a->cfg, s->id, P_STATE, path, sizeof(path));
	if (r < 0)
		return r;
	j = json_pack("{s:s, s:s, s:s, s:i, s:I, s:s, s:i, s:I, s:I, s:s, s:O?, s:O?,"
		      " s:i, s:I, s:i, s:s, s:s, s:b, s:i}",
		      "sandbox_id", s->id, "template_name", s->template_name,
		      "state", sbx_state_name(s->state), "vcpus", (int)s->vcpus,
		      "memory_mib", (json_int_t)s->memory_mib, "token", s->token,
		      "vmm_pid", (int)s->vmm_pid, "vmm_start_time",
		      (json_int_t)(s->vmm_pid > 0 ? proc_start_time(s->vmm_pid) : 0),
		      "created_ms", (json_int_t)s->created_ms, "error", s->error,
		      "metadata", s->metadata, "env", s->env,
		      "uffd_pid", (int)s->uffd_pid, "uffd_start_time",
		      (json_int_t)(s->uffd_pid > 0 ? proc_start_time(s->uffd_pid) : 0),
		      "snap_generations",
		      (int)s->snap_generations, "snap_header", s->snap_header,
		      "snapshot_template", s->snapshot_template,
		      "network", s->network, "net_slot", (int)s->net_slot);
	if (!j)
		return -ENOMEM;
	text = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	r = ember_write_file_atomic(path, text, strlen(text), 0600);
	free(text);
	if (r < 0)
		olog_error(s->id, "cannot write %s: %s", path, strerror(-r));
	return r;
}

/* Moves s to state `to` and records it. Called with a->lock held. */
static void set_state(struct agent *a, struct sandbox *s, enum sbx_state to)
{
	if (!sbx_transition_allowed(s->state, to))
		olog_warn(s->id, "unexpected transition %s -> %s",
			  sbx_state_name(s->state), sbx_state_name(to));
	olog_debug(s->id, "%s -> %s", sbx_state_name(s->state),
		   sbx_state_name(to));
	s->state = to;
	save(a, s);
}

/* --- host identity -------------------------------------------------------- */

static void random_hex(char *out, size_t nbytes)
{
	unsigned char b[64];

	if (nbytes > sizeof(b))
		nbytes = sizeof(b);
	if (getrandom(b, nbytes, 0) != (ssize_t)nbytes) {
		/* getrandom does not fail for small sizes once the pool is
		 * up; fall back to something unique rather than abort. */
		uint64_t t = ember_now_ns() ^ (uint64_t)getpid();
		for (size_t i = 0; i < nbytes; i++)
			b[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)i;
	}
	for (size_t i = 0; i < nbytes; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static void read_vmm_version(struct agent *a)
{
	char cmd[PATH_MAX + 32], line[64] = "";
	FILE *f;

	snprintf(a->vmm_version, sizeof(a->vmm_version), "unknown");
	snprintf(cmd, sizeof(cmd), "'%s' --version 2>/dev/null", a->cfg.vmm_bin);
	if (strchr(a->cfg.vmm_bin, '\''))
		return;
	f = popen(cmd, "re");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		snprintf(a->vmm_version, sizeof(a->vmm_version), "%s", line);
	}
	pclose(f);
}

int agent_init(struct agent *a)
{
	char path[PATH_MAX], *id = NULL;
	int r;

	pthread_mutex_init(&a->lock, NULL);
	snprintf(path, sizeof(path), "%s/sandboxes", a->cfg.state_dir);
	if ((r = ember_mkdir_p(path, 0700)) < 0) {
		log_error("cannot make %s: %s", path, strerror(-r));
		return r;
	}
	snprintf(path, sizeof(path), "%s/templates", a->cfg.state_dir);
	if ((r = ember_mkdir_p(path, 0700)) < 0) {
		log_error("cannot make %s: %s", path, strerror(-r));
		return r;
	}
	snprintf(path, sizeof(path), "%s/vms", a->cfg.run_dir);
	if ((r = ember_mkdir_p(path, 0700)) < 0) {
		log_error("cannot make %s: %s", path, strerror(-r));
		return r;
	}
	snprintf(path, sizeof(path), "%s/host-id", a->cfg.state_dir);
	if (ember_read_file(path, 64, &id, NULL) == 0 && agent_valid_id(id)) {
		snprintf(a->host_id, sizeof(a->host_id), "%s", id);
	} else {
		random_hex(a->host_id, 8);
		r = ember_write_file_atomic(path, a->host_id,
					    strlen(a->host_id), 0600);
		if (r < 0) {
			log_error("cannot write %s: %s", path, strerror(-r));
			free(id);
			return r;
		}
	}
	free(id);
	read_vmm_version(a);
	return metrics_new(&a->metrics);
}

void agent_fini(struct agent *a)
{
	struct sandbox *s = a->sandboxes, *next;

	/* VMMs keep running: a restarted agent adopts them. */
	for (; s; s = next) {
		next = s->next;
		sandbox_free(s);
	}
	a->sandboxes = NULL;
	metrics_free(a->metrics);
	pthread_mutex_destroy(&a->lock);
}

/* --- the guest agent ------------------------------------------------------- */

static int guest_connect(struct agent *a, const struct sandbox *s,
			 int timeout_ms, struct ember_agent **out)
{
	char vsock[PATH_MAX];
	int r = sbx_path(&a->cfg, s->id, P_VSOCK_SOCK, vsock, sizeof(vsock));

	if (r < 0)
		return r;
	return ember_agent_connect_vsock(vsock, EMBER_AGENT_VSOCK_PORT,
					 s->token, timeout_ms, out);
}

/* Polls the guest agent's health until it answers, the VMM dies or
 * timeout_ms passes. Called without the lock on a sandbox the caller owns. */
static int wait_guest(struct agent *a, struct sandbox *s, int timeout_ms,
		      struct agent_err *e)
{
	const struct timespec tick = { 0, HEALTH_POLL_MS * 1000 * 1000 };
	uint64_t end = ember_now_ns() + (uint64_t)timeout_ms * 1000000;
	int r = -ETIMEDOUT;

	while (ember_now_ns() < end) {
		struct ember_agent *g = NULL;
		struct ember_agent_health h;

		if (!ns_pid_alive(s->vmm_pid, s->vmm_child)) {
			agent_err_set(e, "the VMM exited while the guest booted (see %s/sandboxes/%s/console.log)",
				      a->cfg.state_dir, s->id);
			return -ECHILD;
		}
		r = guest_connect(a, s, 2000, &g);
		if (r == 0) {
			r = ember_agent_health(g, &h);
			if (r < 0)
				agent_err_set(e, "guest agent health: %s",
					      ember_agent_last_error(g));
			ember_agent_close(g);
			if (r == 0)
				return 0;
		}
		nanosleep(&tick, NULL);
	}
	agent_err_set(e, "the guest agent did not answer within %d s (last: %s)",
		      timeout_ms / 1000, strerror(-r));
	return -ETIMEDOUT;
}

int sandbox_guest(struct agent *a, const char *id, int timeout_ms,
		  struct ember_agent **out, json_t **env, struct agent_err *e)
{
	struct sandbox copy;
	struct sandbox *s;
	int r;

	pthread_mutex_lock(&a->lock);
	s = find(a, id);
	if (!s) {
		pthread_mutex_unlock(&a->lock);
		agent_err_set(e, "sandbox %s not found", id);
		return -ENOENT;
	}
	if (s->state != SBX_RUNNING) {
		agent_err_set(e, "sandbox %s is %s, not running", id,
			      sbx_state_name(s->state));
		pthread_mutex_unlock(&a->lock);
		return -EBUSY;
	}
	copy = *s;
	if (env)
		*env = s->env ? json_deep_copy(s->env) : NULL;
	pthread_mutex_unlock(&a->lock);
	r = guest_connect(a, &copy, timeout_ms, out);
	if (r < 0) {
		olog_error(id, "cannot reach the guest agent: %s", strerror(-r));
		agent_err_set(e, "cannot reach the guest agent of %s: %s", id,
			      strerror(-r));
		if (env) {
			json_decref(*env);
			*env = NULL;
		}
	}
	return r;
}

/* --- create and destroy ----------------------------------------------------- */

static int make_dirs(struct agent *a, const char *id, struct agent_err *e)
{
	static const enum sbx_path dirs[] = { P_DIR, P_DISK_DIR, P_SNAP_DIR,
					      P_RUN_DIR };
	char path[PATH_MAX];

	for (size_t i = 0; i < EMBER_ARRAY_SIZE(dirs); i++) {
		int r = sbx_path(&a->cfg, id, dirs[i], path, sizeof(path));
		if (r == 0)
			r = ember_mkdir_p(path, 0700);
		if (r < 0) {
			agent_err_set(e, "cannot make %s: %s", path, strerror(-r));
			return r;
		}
	}
	return 0;
}

/* Removes every file of sandbox id: its state folder and sockets. */
static void remove_files(struct agent *a, const char *id)
{
	char path[PATH_MAX];
	int r;

	if (sbx_path(&a->cfg, id, P_RUN_DIR, path, sizeof(path)) == 0 &&
	    (r = ns_remove_tree(path)) < 0)
		olog_warn(id, "cannot remove %s: %s", path, strerror(-r));
	if (sbx_path(&a->cfg, id, P_DIR, path, sizeof(path)) == 0 &&
	    (r = ns_remove_tree(path)) < 0)
		olog_warn(id, "cannot remove %s: %s", path, strerror(-r));
}

static json_t *jbool(bool v)
{
	return v ? json_true() : json_false();
}

/* Configures and starts a cold-booting VMM through its API. */
static int configure_boot(struct agent *a, struct sandbox *s,
			  const struct create_args *c, struct agent_err *e)
{
	struct vmm_client *vc = NULL;
	char sock[PATH_MAX], args[2048];
	int r;

	r = sbx_path(&a->cfg, s->id, P_API_SOCK, sock, sizeof(sock));
	if (r == 0)
		r = vmm_client_new(sock, s->id, 30000, &vc);
	if (r < 0) {
		agent_err_set(e, "VMM API client: %s", strerror(-r));
		return r;
	}
	r = vmm_wait_ready(vc, 10000, s->vmm_pid, e);
	if (r < 0)
		goto out;
	snprintf(args, sizeof(args),
		 "%s ember.token=%s ember.sandbox_id=%s ember.hostname=%s%s%s%s",
		 AGENT_DEFAULT_BOOT_ARGS, s->token, s->id, s->id,
		 c->network ? " " NET_GUEST_BOOT_ARG : "",
		 c->boot_args && *c->boot_args ? " " : "",
		 c->boot_args ? c->boot_args : "");
	struct {
		const char *path;
		json_t *body;
	} steps[] = {
		{ "/boot-source",
		  json_pack("{s:s, s:s}", "kernel_image_path", NS_KERNEL,
			    "boot_args", args) },
		{ "/machine-config",
		  json_pack("{s:i, s:I, s:o}", "vcpu_count", (int)s->vcpus,
			    "mem_size_mib", (json_int_t)s->memory_mib,
			    "track_dirty_pages", jbool(true)) },
		{ "/drives/rootfs",
		  json_pack("{s:s, s:s, s:o, s:o}", "drive_id", "rootfs",
			    "path_on_host", NS_ROOTFS, "is_root_device",
			    jbool(true), "is_read_only", jbool(false)) },
		{ "/vsock", json_pack("{s:i, s:s}", "guest_cid", GUEST_CID,
				      "uds_path", NS_VSOCK_SOCK) },
		/* The tap of the sandbox's namespace, where the VMM runs. */
		{ c->network ? "/network-interfaces/eth0" : NULL,
		  c->network ? json_pack("{s:s, s:s, s:s}", "iface_id", "eth0",
					 "host_dev_name", NET_TAP,
					 "guest_mac", NET_GUEST_MAC)
			     : NULL },
		{ "/actions", json_pack("{s:s}", "action_type",
					"InstanceStart") },
	};
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(steps); i++) {
		if (!steps[i].path)
			continue;
		if (r >= 0 && !steps[i].body)
			r = -ENOMEM;
		if (r >= 0)
			r = vmm_request(vc, "PUT", steps[i].path, steps[i].body,
					NULL, e);
		json_decref(steps[i].body);
	}
out:
	if (r < 0)
		olog_error(s->id, "%s", e->msg);
	vmm_client_free(vc);
	return r < 0 ? r : 0;
}

/* Logs the end of a file the failed sandbox leaves (its files go). */
static void log_tail(const char *id, const char *path, const char *what)
{
	char buf[2048];
	ssize_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	if (end > 0)
		n = ember_pread_full(fd, buf, sizeof(buf) - 1,
				     end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		olog_error(id, "end of its %s:\n%s", what, buf);
	}
}

int sandbox_create(struct agent *a, const struct create_args *c,
		   struct sandbox **out, struct agent_err *e)
{
	char rootfs[PATH_MAX], console[PATH_MAX] = "", vlog[PATH_MAX] = "";
	char run_dir[PATH_MAX], disk_dir[PATH_MAX], snap_dir[PATH_MAX];
	struct sandbox *s;
	bool reflinked;
	uint64_t t0 = ember_now_ns();
	int r;

	if (!agent_valid_id(c->id)) {
		agent_err_set(e, "sandbox_id '%s' is not 1 to 63 letters, digits, '-' or '_'",
			      c->id ? c->id : "");
		return -EINVAL;
	}
	if (!c->kernel || !*c->kernel || !c->rootfs || !*c->rootfs) {
		agent_err_set(e, "no kernel or rootfs: give base_image paths or start the agent with --kernel and --rootfs");
		return -EINVAL;
	}
	if (access(c->kernel, R_OK) < 0 || access(c->rootfs, R_OK) < 0) {
		r = -errno;
		agent_err_set(e, "cannot read %s: %s",
			      access(c->kernel, R_OK) < 0 ? c->kernel : c->rootfs,
			      strerror(-r));
		return r;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	snprintf(s->id, sizeof(s->id), "%s", c->id);
	snprintf(s->template_name, sizeof(s->template_name), "%s",
		 c->template_name ? c->template_name : "");
	s->state = SBX_STARTING;
	s->vcpus = c->vcpus ? c->vcpus : 1;
	s->memory_mib = c->memory_mib ? c->memory_mib : 256;
	s->created_ms = now_ms();
	s->metadata = c->metadata ? json_deep_copy(c->metadata) : json_object();
	s->env = c->env ? json_deep_copy(c->env) : json_object();
	random_hex(s->token, AGENT_TOKEN_LEN / 2);

	pthread_mutex_lock(&a->lock);
	if (find(a, s->id)) {
		pthread_mutex_unlock(&a->lock);
		agent_err_set(e, "sandbox %s already exists", s->id);
		sandbox_free(s);
		return -EEXIST;
	}
	s->next = a->sandboxes;
	a->sandboxes = s;
	pthread_mutex_unlock(&a->lock);

	olog_info(s->id, "creating from %s (%u vCPUs, %" PRIu64 " MiB)",
		  c->rootfs, s->vcpus, s->memory_mib);
	if ((r = make_dirs(a, s->id, e)) < 0 ||
	    (r = sbx_path(&a->cfg, s->id, P_ROOTFS, rootfs, sizeof(rootfs))) < 0 ||
	    (r = sbx_path(&a->cfg, s->id, P_CONSOLE, console, sizeof(console))) < 0 ||
	    (r = sbx_path(&a->cfg, s->id, P_VMM_LOG, vlog, sizeof(vlog))) < 0 ||
	    (r = sbx_path(&a->cfg, s->id, P_RUN_DIR, run_dir, sizeof(run_dir))) < 0 ||
	    (r = sbx_path(&a->cfg, s->id, P_DISK_DIR, disk_dir, sizeof(disk_dir))) < 0 ||
	    (r = sbx_path(&a->cfg, s->id, P_SNAP_DIR, snap_dir, sizeof(snap_dir))) < 0) {
		if (!e->msg[0])
			agent_err_set(e, "sandbox paths: %s", strerror(-r));
		goto fail;
	}
	pthread_mutex_lock(&a->lock);
	save(a, s);
	pthread_mutex_unlock(&a->lock);

	r = disk_copy(c->rootfs, rootfs, &reflinked);
	if (r < 0) {
		agent_err_set(e, "cannot copy %s to %s: %s", c->rootfs, rootfs,
			      strerror(-r));
		goto fail;
	}
	olog_info(s->id, "rootfs %s (%" PRIu64 " bytes allocated)",
		  reflinked ? "reflinked" : "sparse-copied",
		  disk_allocated(rootfs));
	if (c->network && (r = net_setup(a, s->id, e)) < 0)
		goto fail;

	struct vmm_spawn v = {
		.id = s->id, .vmm_bin = a->cfg.vmm_bin, .run_dir = run_dir,
		.disk_dir = disk_dir, .snap_dir = snap_dir, .kernel = c->kernel,
		.console_path = console, .log_path = vlog,
	};
	pid_t pid;
	r = ns_spawn_vmm(&v, &pid);
	if (r < 0) {
		agent_err_set(e, "cannot start %s: %s", a->cfg.vmm_bin,
			      strerror(-r));
		goto fail;
	}
	pthread_mutex_lock(&a->lock);
	s->vmm_pid = pid;
	s->vmm_child = true;
	save(a, s);
	pthread_mutex_unlock(&a->lock);
	olog_info(s->id, "VMM started, pid %d", (int)pid);

	r = configure_boot(a, s, c, e);
	if (r < 0)
		goto fail;
	r = wait_guest(a, s, (int)a->cfg.boot_timeout_s * 1000, e);
	if (r < 0)
		goto fail;

	pthread_mutex_lock(&a->lock);
	set_state(a, s, SBX_RUNNING);
	*out = sandbox_dup(s);
	pthread_mutex_unlock(&a->lock);
	olog_info(s->id, "running after %" PRIu64 " ms",
		  (ember_now_ns() - t0) / 1000000);
	return *out ? 0 : -ENOMEM;

fail:
	olog_error(s->id, "create failed: %s", e->msg);
	if (s->vmm_pid > 0)
		ns_stop_vmm(s->vmm_pid, s->vmm_child, 2000);
	log_tail(s->id, console, "console");
	log_tail(s->id, vlog, "VMM log");
	net_teardown(s);
	remove_files(a, s->id);
	pthread_mutex_lock(&a->lock);
	unlink_sandbox(a, s);
	pthread_mutex_unlock(&a->lock);
	sandbox_free(s);
	return r;
}

int sandbox_destroy(struct agent *a, const char *id, struct agent_err *e)
{
	struct sandbox *s;
	pid_t pid, uffd;
	bool child;

	pthread_mutex_lock(&a->lock);
	s = find(a, id);
	if (!s) {
		pthread_mutex_unlock(&a->lock);
		agent_err_set(e, "sandbox %s not found", id);
		return -ENOENT;
	}
	if (!sbx_transition_allowed(s->state, SBX_STOPPING)) {
		agent_err_set(e, "sandbox %s is %s; try again when it is done",
			      id, sbx_state_name(s->state));
		pthread_mutex_unlock(&a->lock);
		return -EAGAIN;
	}
	set_state(a, s, SBX_STOPPING);
	pid = s->vmm_pid;
	child = s->vmm_child;
	uffd = s->uffd_pid;
	pthread_mutex_unlock(&a->lock);

	olog_info(id, "destroying (VMM pid %d)", (int)pid);
	if (pid > 0)
		ns_stop_vmm(pid, child, 3000);
	/* The page server exits with its VMM; make sure. */
	if (uffd > 0)
		ns_stop_vmm(uffd, child, 2000);
	net_teardown(s);
	remove_files(a, id);

	pthread_mutex_lock(&a->lock);
	unlink_sandbox(a, s);
	pthread_mutex_unlock(&a->lock);
	if (s->snapshot_template[0])
		snapshot_template_release(a, s->snapshot_template);
	sandbox_free(s);
	olog_info(id, "destroyed");
	return 0;
}

int sandbox_list(struct agent *a, struct sandbox ***out, size_t *n)
{
	struct sandbox **v = NULL, **nv;
	size_t count = 0;
	int r = 0;

	pthread_mutex_lock(&a->lock);
	for (struct sandbox *s = a->sandboxes; s; s = s->next) {
		nv = realloc(v, (count + 1) * sizeof(*v));
		if (!nv || !(nv[count] = sandbox_dup(s))) {
			v = nv ? nv : v;
			r = -ENOMEM;
			break;
		}
		v = nv;
		count++;
	}
	pthread_mutex_unlock(&a->lock);
	if (r < 0) {
		for (size_t i = 0; i < count; i++)
			sandbox_free(v[i]);
		free(v);
		return r;
	}
	/* The table is newest first; callers want creation order. */
	for (size_t i = 0; i < count / 2; i++) {
		struct sandbox *t = v[i];
		v[i] = v[count - 1 - i];
		v[count - 1 - i] = t;
	}
	*out = v;
	*n = count;
	return 0;
}

void sandbox_counts(struct agent *a, struct host_counts *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_lock(&a->lock);
	for (struct sandbox *s = a->sandboxes; s; s = s->next) {
		if (s->state == SBX_PAUSED) {
			c->paused++;
			continue;
		}
		if (s->state == SBX_ERROR)
			continue;
		c->running++;
		c->vcpus_used += s->vcpus;
		c->memory_used_mib += s->memory_mib;
	}
	pthread_mutex_unlock(&a->lock);
}

int sandbox_begin(struct agent *a, const char *id, enum sbx_state from,
		  enum sbx_state during, struct agent_err *e)
{
	struct sandbox *s;
	int r = 0;

	pthread_mutex_lock(&a->lock);
	s = find(a, id);
	if (!s) {
		agent_err_set(e, "sandbox %s not found", id);
		r = -ENOENT;
	} else if (s->state == SBX_PAUSING || s->state == SBX_RESUMING ||
		   s->state == SBX_STARTING || s->state == SBX_STOPPING) {
		agent_err_set(e, "sandbox %s is %s: another operation is in flight",
			      id, sbx_state_name(s->state));
		r = -EAGAIN;
	} else if (s->state != from) {
		agent_err_set(e, "sandbox %s is %s, not %s", id,
			      sbx_state_name(s->state), sbx_state_name(from));
		r = -EBUSY;
	} else {
		set_state(a, s, during);
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

void sandbox_end(struct agent *a, const char *id, enum sbx_state to)
{
	struct sandbox *s;

	pthread_mutex_lock(&a->lock);
	s = find(a, id);
	if (s)
		set_state(a, s, to);
	pthread_mutex_unlock(&a->lock);
}

int sandbox_add(struct agent *a, struct sandbox *s, struct agent_err *e)
{
	int r;

	pthread_mutex_lock(&a->lock);
	if (find(a, s->id)) {
		pthread_mutex_unlock(&a->lock);
		agent_err_set(e, "sandbox %s already exists", s->id);
		return -EEXIST;
	}
	s->next = a->sandboxes;
	a->sandboxes = s;
	pthread_mutex_unlock(&a->lock);
	r = make_dirs(a, s->id, e);
	pthread_mutex_lock(&a->lock);
	if (r == 0)
		save(a, s);
	pthread_mutex_unlock(&a->lock);
	return r;
}

void sandbox_discard(struct agent *a, struct sandbox *s)
{
	char path[PATH_MAX];

	if (s->vmm_pid > 0)
		ns_stop_vmm(s->vmm_pid, s->vmm_child, 2000);
	if (s->uffd_pid > 0)
		ns_stop_vmm(s->uffd_pid, true, 2000);
	if (sbx_path(&a->cfg, s->id, P_CONSOLE, path, sizeof(path)) == 0)
		log_tail(s->id, path, "console");
	if (sbx_path(&a->cfg, s->id, P_VMM_LOG, path, sizeof(path)) == 0)
		log_tail(s->id, path, "VMM log");
	net_teardown(s);
	remove_files(a, s->id);
	pthread_mutex_lock(&a->lock);
	unlink_sandbox(a, s);
	pthread_mutex_unlock(&a->lock);
	if (s->snapshot_template[0])
		snapshot_template_release(a, s->snapshot_template);
	sandbox_free(s);
}

unsigned sandbox_template_users(struct agent *a, const char *name)
{
	unsigned n = 0;

	pthread_mutex_lock(&a->lock);
	for (struct sandbox *s = a->sandboxes; s; s = s->next)
		n += strcmp(s->snapshot_template, name) == 0;
	pthread_mutex_unlock(&a->lock);
	return n;
}

int sandbox_apply(struct agent *a, const char *id,
		  void (*fn)(struct sandbox *s, void *arg), void *arg)
{
	struct sandbox *s;

	pthread_mutex_lock(&a->lock);
	s = find(a, id);
	if (s) {
		fn(s, arg);
		save(a, s);
	}
	pthread_mutex_unlock(&a->lock);
	return s ? 0 : -ENOENT;
}

void sandbox_copy_fn(struct sandbox *s, void *arg)
{
	struct sandbox *out = arg;

	*out = *s;
	out->next = NULL;
	out->metadata = NULL;
	out->env = NULL;
}

void sandbox_dup_fn(struct sandbox *s, void *arg)
{
	struct sandbox *out = arg;

	sandbox_copy_fn(s, arg);
	out->metadata = s->metadata ? json_deep_copy(s->metadata) : NULL;
	out->env = s->env ? json_deep_copy(s->env) : NULL;
}

int sandbox_wait_guest(struct agent *a, const char *id, int timeout_ms,
		       struct agent_err *e)
{
	struct sandbox copy;

	if (sandbox_apply(a, id, sandbox_copy_fn, &copy) < 0)
		return -ENOENT;
	return wait_guest(a, &copy, timeout_ms, e);
}

/* Once a second: a running sandbox whose VMM exited is in error; so is one
 * whose page server exited while its guest still needs it (a resumed or
 * spawned guest faults on pages not yet served, and with no one to serve
 * them its vCPUs would hang for good): its VMM is killed. ember-uffd exits
 * by itself only once the VM is gone. */
void sandbox_monitor(struct agent *a)
{
	pthread_mutex_lock(&a->lock);
	for (struct sandbox *s = a->sandboxes; s; s = s->next) {
		if (s->state != SBX_RUNNING)
			continue;
		if (!ns_pid_alive(s->vmm_pid, s->vmm_child)) {
			snprintf(s->error, sizeof(s->error),
				 "the VMM (pid %d) exited", (int)s->vmm_pid);
			olog_warn(s->id, "%s; see its console.log and vmm.log",
				  s->error);
		} else if (s->uffd_pid > 0 &&
			   !ns_pid_alive(s->uffd_pid, s->vmm_child)) {
			snprintf(s->error, sizeof(s->error),
				 "the page server (pid %d) exited while the "
				 "guest ran; its memory since the last pause "
				 "is lost, the VMM was stopped",
				 (int)s->uffd_pid);
			olog_warn(s->id, "%s; see its uffd.log", s->error);
			/* SIGKILL does not block; the VMM is reaped by the
			 * destroy that follows (or by init if adopted). */
			kill(s->vmm_pid, SIGKILL);
			s->uffd_pid = 0;
		} else {
			continue;
		}
		set_state(a, s, SBX_ERROR);
	}
	pthread_mutex_unlock(&a->lock);
}

/* --- restart: load the records, adopt the VMMs ------------------------------ */

/* PATCH /vm Resumed to an adopted VMM; failures are only logged. */
static void resume_vm(struct agent *a, const char *id)
{
	struct agent_err e = { "" };
	struct vmm_client *vc = NULL;
	char sock[PATH_MAX];
	json_t *b = json_pack("{s:s}", "state", "Resumed");

	if (b && sbx_path(&a->cfg, id, P_API_SOCK, sock, sizeof(sock)) == 0 &&
	    vmm_client_new(sock, id, 10000, &vc) == 0 &&
	    vmm_request(vc, "PATCH", "/vm", b, NULL, &e) < 0)
		olog_warn(id, "cannot resume the VM: %s", e.msg);
	vmm_client_free(vc);
	json_decref(b);
}

/* Whether the record names a header and a vmstate that are on disk. */
static bool pause_complete(struct agent *a, const struct sandbox *s)
{
	char dir[PATH_MAX], path[PATH_MAX + 80];

	if (!s->snap_header[0] ||
	    sbx_path(&a->cfg, s->id, P_SNAP_DIR, dir, sizeof(dir)) < 0)
		return false;
	snprintf(path, sizeof(path), "%s/%s", dir, s->snap_header);
	if (access(path, F_OK) < 0)
		return false;
	snprintf(path, sizeof(path), "%s/vmstate", dir);
	return access(path, F_OK) == 0;
}

static struct sandbox *load_one(struct agent *a, const char *id)
{
	char path[PATH_MAX], *text = NULL;
	struct sandbox *s = NULL;
	json_t *j = NULL;
	const char *state = NULL, *tmpl = "", *token = "", *err = "";
	const char *hdr = "", *tmpl_src = "";
	json_int_t mem = 0, created = 0, start_time = 0, uffd_start = 0;
	int vcpus = 0, pid = 0, uffd = 0, gens = 0, network = 0, slot = 0;

	if (sbx_path(&a->cfg, id, P_STATE, path, sizeof(path)) < 0 ||
	    ember_read_file(path, 1 << 20, &text, NULL) < 0)
		return NULL;
	j = json_loads(text, 0, NULL);
	free(text);
	s = calloc(1, sizeof(*s));
	if (!j || !s ||
	    json_unpack(j, "{s:s, s?s, s:s, s:i, s:I, s?s, s?i, s?I, s?I, s?s,"
			" s?i, s?I, s?i, s?s, s?s, s?b, s?i}",
			"sandbox_id", &id, "template_name", &tmpl, "state",
			&state, "vcpus", &vcpus, "memory_mib", &mem, "token",
			&token, "vmm_pid", &pid, "vmm_start_time", &start_time,
			"created_ms", &created, "error", &err, "uffd_pid",
			&uffd, "uffd_start_time", &uffd_start,
			"snap_generations", &gens, "snap_header", &hdr,
			"snapshot_template", &tmpl_src, "network", &network,
			"net_slot", &slot) < 0 ||
	    sbx_state_parse(state, &s->state) < 0) {
		olog_warn(id, "state file %s is not readable; left alone", path);
		json_decref(j);
		free(s);
		return NULL;
	}
	snprintf(s->id, sizeof(s->id), "%s", id);
	snprintf(s->template_name, sizeof(s->template_name), "%s", tmpl);
	snprintf(s->token, sizeof(s->token), "%s", token);
	snprintf(s->error, sizeof(s->error), "%s", err);
	s->vcpus = (unsigned)vcpus;
	s->memory_mib = (uint64_t)mem;
	s->created_ms = created;
	s->vmm_pid = pid;
	s->uffd_pid = uffd;
	s->snap_generations = (unsigned)gens;
	s->network = network;
	s->net_slot = (unsigned)slot;
	snprintf(s->snap_header, sizeof(s->snap_header), "%s", hdr);
	snprintf(s->snapshot_template, sizeof(s->snapshot_template), "%s",
		 tmpl_src);
	s->metadata = json_incref(json_object_get(j, "metadata"));
	s->env = json_incref(json_object_get(j, "env"));
	if (!s->metadata)
		s->metadata = json_object();
	if (!s->env)
		s->env = json_object();
	json_decref(j);

	bool alive = pid > 0 && ns_pid_alive(pid, false) &&
		     (uint64_t)start_time == proc_start_time(pid);
	/* The page server the same way: a later process that got its pid
	 * is not ours to stop. */
	if (s->uffd_pid > 0 &&
	    (!ns_pid_alive(s->uffd_pid, false) ||
	     (uint64_t)uffd_start != proc_start_time(s->uffd_pid)))
		s->uffd_pid = 0;
	if (s->network && !net_present(s))
		olog_warn(s->id, "its network namespace is gone: the guest has no network until it is destroyed and made again");
	if (s->state == SBX_PAUSED) {
		/* A paused sandbox holds no VMM. */
	} else if (alive && (s->state == SBX_RUNNING ||
			     s->state == SBX_STARTING ||
			     s->state == SBX_RESUMING)) {
		olog_info(s->id, "adopting the running VMM, pid %d", pid);
		s->state = SBX_RUNNING;
	} else if (alive && s->state == SBX_PAUSING) {
		/* The VM may be paused inside its VMM, and the VMM's dirty log
		 * may have restarted: let it run, and start the chain over
		 * (the next pause writes a full snapshot). */
		olog_info(s->id, "pause was interrupted; keeping it running");
		resume_vm(a, s->id);
		s->state = SBX_RUNNING;
		s->snap_header[0] = '\0';
		s->snap_generations = 0;
	} else if (s->state == SBX_PAUSING && pause_complete(a, s)) {
		/* The VMM was stopped after the snapshot was recorded. */
		olog_info(s->id, "pause was interrupted after its snapshot; paused");
		s->state = SBX_PAUSED;
		s->vmm_pid = 0;
		s->uffd_pid = 0;
	} else if (s->state == SBX_STOPPING) {
		olog_info(s->id, "finishing an interrupted destroy");
		if (alive)
			ns_stop_vmm(pid, false, 3000);
		net_teardown(s);
		remove_files(a, s->id);
		sandbox_free(s);
		return NULL;
	} else {
		if (s->state != SBX_ERROR)
			snprintf(s->error, sizeof(s->error),
				 "the VMM exited while the agent was down");
		olog_warn(s->id, "%s", s->error);
		s->state = SBX_ERROR;
		s->vmm_pid = 0;
	}
	save(a, s);
	return s;
}

int agent_load(struct agent *a)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/sandboxes", a->cfg.state_dir);
	d = opendir(path);
	if (!d)
		return -errno;
	pthread_mutex_lock(&a->lock);
	while ((de = readdir(d))) {
		struct sandbox *s;

		if (!agent_valid_id(de->d_name) || find(a, de->d_name))
			continue;
		s = load_one(a, de->d_name);
		if (s) {
			s->next = a->sandboxes;
			a->sandboxes = s;
		}
	}
	pthread_mutex_unlock(&a->lock);
	closedir(d);
	return 0;
}
