// SPDX-License-Identifier: Apache-2.0
/*
 * Pause, resume and snapshot templates.
 *
 * Pause (RUNNING -> PAUSING -> PAUSED):
 *   PATCH /vm {"state":"Paused"}; PUT /snapshot/create with snapshot_type
 *   "Full" the first time, then "Diff" (the VM runs with track_dirty_pages),
 *   vmstate at NS_VMSTATE and memory at NS_MEM (both in <snap>/); the memory
 *   file becomes the chain's next generation through the layer library
 *   (ember/header.h: <snap>/<layer>.layer and .hdr); the memory file is
 *   removed, the disk fsynced, the VMM (and a page server) stopped, which
 *   frees the guest's memory; the sockets are removed. Any failure before
 *   the VMM is stopped resumes the VM and leaves it RUNNING.
 * Resume (PAUSED -> RESUMING -> RUNNING):
 *   ember-uffd on the newest header with its socket at <run>/vms/<id>/
 *   uffd.sock (NS_UFFD_SOCK inside the VMM's namespace) and a ready pipe;
 *   the VMM in its namespace; PUT /snapshot/load {"mem_backend":
 *   {"backend_type":"Uffd"}, "track_dirty_pages": true, "resume_vm":
 *   false}; the page server's "ready"; PATCH /vm Resumed; then the guest
 *   agent is re-identified with the old token: new token, clock, entropy,
 *   hostname. Any failure stops both processes and leaves it PAUSED.
 * Working sets (prefetch modes, see prefetch_args): the page server records
 *   the pages the guest faults until its agent answers (SIGUSR2 then) plus
 *   a tail into <snap>/working-set.ws, or <template>/working-set.ws for a
 *   spawn; a later restore of that chain installs them before the vCPUs
 *   run. The file is a hint checked by ember-uffd (checksum, chain id,
 *   memory size): a bad or stale one is ignored and recorded anew; page
 *   contents always come from the header.
 * sandbox_begin gives a second pause or resume in flight -EAGAIN.
 *
 * Templates (<state>/templates/<name>/): CreateSnapshot writes the next
 * generation of the source's own chain (so the source's next pause is a
 * diff on it) and hard-links that header, its layers and the vmstate into
 * the template with a copy of the disk; template.json last. A sandbox from
 * a template hard-links them into its own snap/ and is restored like a
 * resume, with the template's token. Hard links make every sandbox's chain
 * independent of the template's folder; DeleteSnapshot still keeps the
 * folder (marker "deleted") until no sandbox names the template.
 */
#include "agent.h"

#include <ember/agent_client.h>
#include <ember/header.h>
#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define VMM_API_TIMEOUT_MS 120000
#define UFFD_LISTEN_TIMEOUT_MS 10000
#define UFFD_READY_TIMEOUT_MS 120000
/* The longest a working set is recorded, and how long after the guest
 * agent answered. */
#define WS_RECORD_MAX_S "60"
#define WS_RECORD_TAIL_MS "1000"
#define UFFD_METRICS_FILE "uffd-metrics.json"
#define UFFD_METRICS_TIMEOUT_MS 3000
#define GUEST_RESUME_TIMEOUT_MS 60000
/* One connection try to a restored guest: the first may be lost to the
 * guest's transport reset, so a short one, then another. */
#define CONNECT_TRY_MS 1500

static void sleep_ms(int ms)
{
	const struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&t, NULL);
}

static int api_client(struct agent *a, const char *id, struct vmm_client **vc,
		      struct agent_err *e)
{
	char sock[PATH_MAX];
	int r = sbx_path(&a->cfg, id, P_API_SOCK, sock, sizeof(sock));

	if (r == 0)
		r = vmm_client_new(sock, id, VMM_API_TIMEOUT_MS, vc);
	if (r < 0)
		agent_err_set(e, "VMM API client: %s", strerror(-r));
	return r;
}

static int vm_state(struct vmm_client *vc, const char *state,
		    struct agent_err *e)
{
	json_t *b = json_pack("{s:s}", "state", state);
	int r = b ? vmm_request(vc, "PATCH", "/vm", b, NULL, e) : -ENOMEM;

	json_decref(b);
	return r < 0 ? r : 0;
}

/* dir/leaf into out; -ENAMETOOLONG when it does not fit. */
static int join(char *out, size_t size, const char *dir, const char *leaf)
{
	size_t d = strlen(dir), l = strlen(leaf);

	if (d + 1 + l + 1 > size)
		return -ENAMETOOLONG;
	memcpy(out, dir, d);
	out[d] = '/';
	memcpy(out + d + 1, leaf, l + 1);
	return 0;
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* Removes the VMM's sockets (a new VMM binds them again). */
static void remove_sockets(struct agent *a, const char *id)
{
	static const enum sbx_path socks[] = { P_API_SOCK, P_VSOCK_SOCK,
					       P_UFFD_SOCK };
	char path[PATH_MAX];

	for (size_t i = 0; i < EMBER_ARRAY_SIZE(socks); i++)
		if (sbx_path(&a->cfg, id, socks[i], path, sizeof(path)) == 0 &&
		    unlink(path) < 0 && errno != ENOENT)
			olog_warn(id, "cannot remove %s: %s", path,
				  strerror(errno));
}

struct pause_done {
	unsigned generations;
	const char *header;
	bool stopped;
};

static void mark_snapshot(struct sandbox *s, void *arg)
{
	const struct pause_done *d = arg;

	s->snap_generations = d->generations;
	snprintf(s->snap_header, sizeof(s->snap_header), "%s", d->header);
	if (d->stopped) {
		s->vmm_pid = 0;
		s->uffd_pid = 0;
	}
}

/*
 * On a paused VM: the next generation of s's chain in its <snap>/ (a full
 * snapshot when it has none, else a diff against the newest header). On
 * success hdr_name is the new header's file name and r says the sizes.
 * After a failure past the VMM's snapshot the dirty log has restarted:
 * the chain must start over with a full snapshot (*chain_broken).
 */
static int snap_generation(struct agent *a, const struct sandbox *s,
			   struct vmm_client *vc, char hdr_name[64],
			   struct pause_result *r, bool *chain_broken,
			   struct agent_err *e)
{
	char snap[PATH_MAX], mem[PATH_MAX], vmstate[PATH_MAX];
	char parent_path[PATH_MAX], why[256] = "";
	char id_str[EMBER_LAYER_ID_STRLEN];
	struct ember_header parent = { 0 }, next = { 0 };
	bool have_parent = false;
	enum ember_hdr_error herr;
	int rc;

	*chain_broken = false;
	if ((rc = sbx_path(&a->cfg, s->id, P_SNAP_DIR, snap, sizeof(snap))) < 0 ||
	    (rc = join(mem, sizeof(mem), snap, "mem")) < 0 ||
	    (rc = join(vmstate, sizeof(vmstate), snap, "vmstate")) < 0 ||
	    (rc = join(parent_path, sizeof(parent_path), snap,
		       s->snap_header)) < 0) {
		agent_err_set(e, "sandbox paths: %s", strerror(-rc));
		return rc;
	}
	if (s->snap_header[0]) {
		rc = ember_header_load(parent_path, &parent, &herr);
		if (rc < 0) {
			agent_err_set(e, "cannot load %s: %s", parent_path,
				      rc == -EINVAL ? ember_hdr_strerror(herr)
						    : strerror(-rc));
			return rc;
		}
		have_parent = true;
	}
	/* A diff needs a fresh file: only dirtied pages are written. The
	 * vmstate may be hard-linked into a template: never write over it. */
	unlink(mem);
	unlink(vmstate);
	json_t *body = json_pack("{s:s, s:s, s:s}", "snapshot_type",
				 have_parent ? "Diff" : "Full", "snapshot_path",
				 NS_VMSTATE, "mem_file_path", NS_MEM);
	rc = body ? vmm_request(vc, "PUT", "/snapshot/create", body, NULL, e)
		  : -ENOMEM;
	json_decref(body);
	if (rc < 0) {
		*chain_broken = true;
		goto out;
	}
	r->vmstate_bytes = file_size(vmstate);
	const char *dirs[] = { snap };
	struct ember_build_opts o = {
		.parent = have_parent ? &parent : NULL,
		.layer_dirs = dirs,
		.n_layer_dirs = 1,
		.mem_path = mem,
		.kind = have_parent ? EMBER_MEM_DIFF : EMBER_MEM_FULL,
		.out_dir = snap,
	};
	rc = ember_layer_build(&o, &next, why, sizeof(why));
	if (rc < 0) {
		*chain_broken = true;
		agent_err_set(e, "building generation %u: %s%s%s",
			      s->snap_generations, strerror(-rc),
			      why[0] ? ": " : "", why);
		goto out;
	}
	ember_layer_id_format(&next.id, id_str);
	snprintf(hdr_name, 64, "%s%s", id_str, EMBER_HDR_SUFFIX);
	r->generation = next.generation;
	r->memory_written = 0;
	r->memory_total = 0;
	/* Bytes on disk: this generation's layer, and all of the chain. */
	for (uint32_t i = 0; i < next.n_layers; i++) {
		r->memory_total += next.layers[i].size;
		if (ember_layer_id_equal(&next.layers[i].id, &next.id))
			r->memory_written = next.layers[i].size;
	}
	r->memory_guest = next.total_size;
	/* Only the newest header is needed to read the chain. */
	if (have_parent && unlink(parent_path) < 0)
		olog_warn(s->id, "cannot remove %s: %s", parent_path,
			  strerror(errno));
out:
	unlink(mem);
	ember_header_free(&parent);
	ember_header_free(&next);
	return rc < 0 ? rc : 0;
}

int snapshot_pause(struct agent *a, const char *id, struct pause_result *r,
		   struct agent_err *e)
{
	char rootfs[PATH_MAX], hdr_name[64] = "";
	struct vmm_client *vc = NULL;
	struct sandbox s;
	bool paused = false, broken = false;
	uint64_t t0 = ember_now_ns();
	int rc;

	memset(r, 0, sizeof(*r));
	rc = sandbox_begin(a, id, SBX_RUNNING, SBX_PAUSING, e);
	if (rc < 0)
		return rc;
	sandbox_apply(a, id, sandbox_copy_fn, &s);
	if ((rc = sbx_path(&a->cfg, id, P_ROOTFS, rootfs, sizeof(rootfs))) < 0) {
		agent_err_set(e, "sandbox paths: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = api_client(a, id, &vc, e)) < 0)
		goto fail;
	if ((rc = vm_state(vc, "Paused", e)) < 0)
		goto fail;
	paused = true;
	if ((rc = snap_generation(a, &s, vc, hdr_name, r, &broken, e)) < 0)
		goto fail;
	if ((rc = fsync_path(rootfs)) < 0)
		olog_warn(id, "fsync %s: %s", rootfs, strerror(-rc));
	r->disk_bytes = disk_allocated(rootfs);
	/* Recorded before the VMM goes: an agent restarted after a crash
	 * from here on finds the sandbox paused (sandbox.c, load_one). */
	struct pause_done d = { s.snap_generations + 1, hdr_name, false };
	sandbox_apply(a, id, mark_snapshot, &d);
	vmm_client_free(vc);
	vc = NULL;
	ns_stop_vmm(s.vmm_pid, s.vmm_child, 3000);
	if (s.uffd_pid > 0)
		ns_stop_vmm(s.uffd_pid, true, 2000);
	remove_sockets(a, id);
	d.stopped = true;
	sandbox_apply(a, id, mark_snapshot, &d);
	sandbox_end(a, id, SBX_PAUSED);
	olog_info(id, "paused in %" PRIu64 " ms: generation %u, %" PRIu64
		  " memory bytes written (%" PRIu64 " in the chain, of %" PRIu64
		  " guest bytes), vmstate %" PRIu64 ", disk %" PRIu64,
		  (ember_now_ns() - t0) / 1000000, r->generation,
		  r->memory_written, r->memory_total, r->memory_guest,
		  r->vmstate_bytes, r->disk_bytes);
	return 0;

fail:
	olog_error(id, "pause failed: %s", e->msg);
	if (broken) {
		struct pause_done reset = { 0, "", false };
		sandbox_apply(a, id, mark_snapshot, &reset);
	}
	if (paused) {
		struct agent_err e2 = { "" };
		if (vm_state(vc, "Resumed", &e2) < 0)
			olog_error(id, "cannot resume after the failed pause: %s",
				   e2.msg);
	}
	vmm_client_free(vc);
	sandbox_end(a, id, SBX_RUNNING);
	return rc;
}

static const char *const prefetch_names[] = {
	[PREFETCH_DEFAULT] = "default", [PREFETCH_OFF] = "off",
	[PREFETCH_RECORD] = "record", [PREFETCH_ON] = "on",
	[PREFETCH_EAGER] = "eager",
};

const char *prefetch_mode_name(enum prefetch_mode m)
{
	return (unsigned)m < EMBER_ARRAY_SIZE(prefetch_names)
		       ? prefetch_names[m] : "unknown";
}

int prefetch_mode_parse(const char *name, enum prefetch_mode *out)
{
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(prefetch_names); i++) {
		if (strcmp(name, prefetch_names[i]) == 0) {
			*out = (enum prefetch_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* A request's mode, or the agent's default. */
static enum prefetch_mode prefetch_effective(const struct agent *a,
					     enum prefetch_mode m)
{
	if (m > PREFETCH_DEFAULT && m <= PREFETCH_EAGER)
		return m;
	return a->cfg.prefetch > PREFETCH_DEFAULT ? a->cfg.prefetch
						  : PREFETCH_ON;
}

/* ember-uffd's options for a mode, appended to argv at *n (room for 6):
 *   off     none: lazy
 *   record  --record-ws WS
 *   on      --prefetch WS --record-ws WS --ready-after-prefetch when WS
 *           exists (ember-uffd records only when WS cannot be used),
 *           else --record-ws WS
 *   eager   --prefetch-all --ready-after-prefetch
 * TODO(agent): a usable working set is never recorded again, so one that
 * no longer matches what the guest does (its faults after the prefetch
 * grow) stays until `record` is asked for; refresh it past some share. */
static void prefetch_args(enum prefetch_mode mode, const char *ws,
			  char **argv, size_t *n)
{
	if (mode == PREFETCH_EAGER) {
		argv[(*n)++] = "--prefetch-all";
		argv[(*n)++] = "--ready-after-prefetch";
		return;
	}
	if (mode == PREFETCH_OFF || !ws)
		return;
	if (mode == PREFETCH_ON && access(ws, F_OK) == 0) {
		argv[(*n)++] = "--prefetch";
		argv[(*n)++] = (char *)ws;
		argv[(*n)++] = "--ready-after-prefetch";
	}
	argv[(*n)++] = "--record-ws";
	argv[(*n)++] = (char *)ws;
}

/* Starts ember-uffd on the chain; *ready_fd is the read end of its ready
 * pipe. The socket appears once it listens. ws: the working-set file of
 * the chain (NULL: none); metrics: its metrics file; *log_from: where this
 * page server's lines start in uffd.log (earlier ones logged there too). */
static int spawn_uffd(struct agent *a, const char *id, const char *header,
		      const char *snap, const char *sock, enum prefetch_mode mode,
		      const char *ws, const char *metrics, pid_t *pid,
		      int *ready_fd, off_t *log_from)
{
	char log_path[PATH_MAX], fdnum[16];
	int p[2], log, r;
	pid_t c;

	char dir[PATH_MAX];

	if (sbx_path(&a->cfg, id, P_DIR, dir, sizeof(dir)) < 0 ||
	    join(log_path, sizeof(log_path), dir, "uffd.log") < 0)
		return -ENAMETOOLONG;
	log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log < 0)
		return -errno;
	*log_from = lseek(log, 0, SEEK_END);
	if (*log_from < 0)
		*log_from = 0;
	if (pipe2(p, O_CLOEXEC) < 0) {
		r = -errno;
		close(log);
		return r;
	}
	c = fork();
	if (c == 0) {
		/* The child's ready fd is p[1] without O_CLOEXEC, as fd 3. */
		if (dup2(p[1], 3) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
			_exit(127);
		int nul = open("/dev/null", O_RDONLY);
		if (nul >= 0 && nul != 0) {
			dup2(nul, 0);
			close(nul);
		}
		setsid();
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		snprintf(fdnum, sizeof(fdnum), "3");
		/* TODO(agent): a layer cut short is refused here, a layer
		 * with flipped bytes is not (--verify-layers reads every
		 * layer, which lazy loading is there to avoid). */
		char *argv[32] = { a->cfg.uffd_bin, "--socket", (char *)sock,
				   "--header", (char *)header, "--layers-dir",
				   (char *)snap, "--ready-fd", fdnum, "--id",
				   (char *)id, "--metrics-path", (char *)metrics,
				   "--record-seconds", WS_RECORD_MAX_S,
				   "--record-tail-ms", WS_RECORD_TAIL_MS };
		size_t n = 17;

		prefetch_args(mode, ws, argv, &n);
		argv[n] = NULL;
		execv(argv[0], argv);
		_exit(127);
	}
	r = c < 0 ? -errno : 0;
	close(p[1]);
	close(log);
	if (r < 0) {
		close(p[0]);
		return r;
	}
	*pid = c;
	*ready_fd = p[0];
	return 0;
}

/* Waits until path exists, pid staying alive. */
static int wait_path(const char *path, pid_t pid, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 20) {
		if (access(path, F_OK) == 0)
			return 0;
		if (!ns_pid_alive(pid, true))
			return -ECHILD;
		sleep_ms(20);
	}
	return -ETIMEDOUT;
}

/* The last ERROR line in <dir>/uffd.log from offset FROM on (the page
 * server just started: not an earlier one's), without its time, level and
 * component, into why ("" when there is none). */
static void uffd_why(struct agent *a, const char *id, off_t from, char *why,
		     size_t len)
{
	char path[PATH_MAX], buf[4096], *line = NULL, *p;
	ssize_t n = 0;
	int fd;

	why[0] = '\0';
	if (sbx_path(&a->cfg, id, P_DIR, path, sizeof(path)) < 0 ||
	    join(path, sizeof(path), path, "uffd.log") < 0 ||
	    (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	if (end - (off_t)sizeof(buf) + 1 > from)
		from = end - (off_t)sizeof(buf) + 1;
	if (end > from)
		n = ember_pread_full(fd, buf, (size_t)(end - from), from);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (p = strstr(buf, " ERROR "); p; p = strstr(p + 1, " ERROR "))
		line = p;
	if (!line || !(p = strstr(line, "]: ")))
		return;
	line = p + 3;
	line[strcspn(line, "\n")] = '\0';
	snprintf(why, len, ": %s", line);
}

struct resume_pids {
	pid_t vmm, uffd;
	const char *token;
};

static void mark_resumed(struct sandbox *s, void *arg)
{
	const struct resume_pids *p = arg;

	s->vmm_pid = p->vmm;
	s->vmm_child = true;
	s->uffd_pid = p->uffd;
	if (p->token)
		snprintf(s->token, sizeof(s->token), "%s", p->token);
}

static void random_token(char out[AGENT_TOKEN_LEN + 1])
{
	unsigned char b[AGENT_TOKEN_LEN / 2];

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		uint64_t t = ember_now_ns() ^ ((uint64_t)getpid() << 32);
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)(i * 37);
	}
	for (size_t i = 0; i < sizeof(b); i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* Gives the restored guest a new token, the host's clock and fresh
 * entropy, with the old token. */
static int reidentify(struct agent *a, const struct sandbox *s, pid_t vmm,
		      pid_t uffd, const char *new_token, struct agent_err *e)
{
	char vsock[PATH_MAX];
	unsigned char seed[64];
	struct ember_agent *g = NULL;
	int r = sbx_path(&a->cfg, s->id, P_VSOCK_SOCK, vsock, sizeof(vsock));
	uint64_t end = ember_now_ns() + (uint64_t)GUEST_RESUME_TIMEOUT_MS * 1000000;

	if (r < 0)
		return r;
	if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
		agent_err_set(e, "getrandom: %s", strerror(errno));
		return -EIO;
	}
	struct ember_agent_identity ident = {
		.entropy = seed,
		.entropy_len = sizeof(seed),
		.hostname = s->id,
		.sandbox_id = s->id,
		.new_token = new_token,
	};
	/* The snapshot reset the guest's vsock transport; the guest handles
	 * that event once it runs, which may cut a connection made just
	 * before. So: connect, check health, re-identify; on a cut
	 * connection try again. If an earlier try got through but its answer
	 * was lost, the new token is the one that works. */
	e->msg[0] = '\0';
	do {
		struct ember_agent_health h;
		const char *tokens[] = { s->token, new_token };

		if (!ns_pid_alive(vmm, true)) {
			agent_err_set(e, "the VMM exited after the restore (see vmm.log and console.log)");
			return -ECHILD;
		}
		/* Without its page server the guest waits on its next
		 * fault for ever (after the resume sandbox_monitor()
		 * watches for that). */
		if (uffd > 0 && !ns_pid_alive(uffd, true)) {
			agent_err_set(e, "the page server exited during the resume (see uffd.log)");
			return -ECHILD;
		}
		size_t i;

		for (i = 0; i < 2; i++) {
			r = ember_agent_connect_vsock(vsock, EMBER_AGENT_VSOCK_PORT,
						      tokens[i], CONNECT_TRY_MS, &g);
			if (r < 0)
				break;
			r = ember_agent_health(g, &h);
			if (r == 0)
				break;
			agent_err_set(e, "guest agent: %s",
				      ember_agent_last_error(g));
			ember_agent_close(g);
			g = NULL;
		}
		if (g && r == 0) {
			/* i == 1: an earlier try got through. */
			if (i == 0) {
				ident.realtime_ns = ember_realtime_ns();
				r = ember_agent_reidentify(g, &ident);
				if (r < 0)
					agent_err_set(e, "re-identifying the guest: %s",
						      ember_agent_last_error(g));
			}
			ember_agent_close(g);
			g = NULL;
			if (r == 0)
				return 0;
		}
		sleep_ms(200);
	} while (ember_now_ns() < end);
	if (!e->msg[0])
		agent_err_set(e, "cannot reach the restored guest agent: %s",
			      strerror(-r));
	return r < 0 ? r : -ETIMEDOUT;
}

/* Asks the page server for its figures now that the guest answered
 * (SIGUSR2: it writes its metrics file and ends the working-set recording
 * a tail later) and reads them into *st. A failure only costs the figures. */
static void uffd_stats(const char *id, pid_t uffd, const char *path,
		       struct restore_stats *st)
{
	static const struct { const char *name; enum prefetch_mode m; } modes[] = {
		{ "lazy", PREFETCH_OFF }, { "record", PREFETCH_RECORD },
		{ "prefetch", PREFETCH_ON }, { "eager", PREFETCH_EAGER },
	};
	json_int_t faults = 0, prefetched = 0, bytes = 0;
	const char *mode = "";
	double pms = 0;
	json_error_t je;
	json_t *j = NULL;
	int waited;

	if (kill(uffd, SIGUSR2) < 0) {
		olog_warn(id, "cannot ask the page server for metrics: %s",
			  strerror(errno));
		return;
	}
	for (waited = 0; waited < UFFD_METRICS_TIMEOUT_MS; waited += 5) {
		if (access(path, F_OK) == 0)
			break;
		sleep_ms(5);
	}
	j = json_load_file(path, 0, &je);
	if (!j || json_unpack(j, "{s:I, s:I, s:I, s:s, s:F}", "faults", &faults,
			      "prefetched_pages", &prefetched, "bytes_copied",
			      &bytes, "mode", &mode, "prefetch_ms", &pms) < 0) {
		olog_warn(id, "no page server metrics in %s after %d ms", path,
			  waited);
		json_decref(j);
		return;
	}
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(modes); i++)
		if (strcmp(mode, modes[i].name) == 0)
			st->mode = modes[i].m;
	st->known = true;
	st->faults = (uint64_t)faults;
	st->prefetched_pages = (uint64_t)prefetched;
	st->bytes_copied = (uint64_t)bytes;
	st->prefetch_ms = pms;
	olog_info(id, "memory: %s (prefetch %s), %" PRIu64 " faults until the guest answered, %"
		  PRIu64 " pages prefetched in %.1f ms, %" PRIu64 " bytes copied",
		  mode, prefetch_mode_name(st->mode), st->faults,
		  st->prefetched_pages, st->prefetch_ms, st->bytes_copied);
	json_decref(j);	/* mode points into j */
}

/*
 * Brings s back from the newest header of its <snap>/ chain: page server,
 * VMM, load, ready, resume, re-identify (s->token is the guest's current
 * token; new_token its next). ws is the chain's working-set file, used as
 * mode says. On success *vmm and *uffd are the new processes and the
 * record names them, *st the page server's figures; on failure both are
 * stopped.
 */
static int restore(struct agent *a, const struct sandbox *s,
		   const char *new_token, const char *ws,
		   enum prefetch_mode mode, pid_t *vmm_out, pid_t *uffd_out,
		   struct restore_stats *st, struct agent_err *e)
{
	char snap[PATH_MAX], header[PATH_MAX], usock[PATH_MAX], run[PATH_MAX];
	char disk[PATH_MAX], console[PATH_MAX], vlog[PATH_MAX];
	char dir[PATH_MAX], metrics[PATH_MAX];
	const char *id = s->id;
	struct vmm_client *vc = NULL;
	pid_t vmm = 0, uffd = 0;
	off_t log_from = 0;
	int ready = -1, rc;

	if ((rc = sbx_path(&a->cfg, id, P_SNAP_DIR, snap, sizeof(snap))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_UFFD_SOCK, usock, sizeof(usock))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_RUN_DIR, run, sizeof(run))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_DISK_DIR, disk, sizeof(disk))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_CONSOLE, console, sizeof(console))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_VMM_LOG, vlog, sizeof(vlog))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_DIR, dir, sizeof(dir))) < 0 ||
	    (rc = join(metrics, sizeof(metrics), dir, UFFD_METRICS_FILE)) < 0 ||
	    (rc = join(header, sizeof(header), snap, s->snap_header)) < 0) {
		agent_err_set(e, "sandbox paths: %s", strerror(-rc));
		return rc;
	}
	remove_sockets(a, id);
	unlink(metrics);
	memset(st, 0, sizeof(*st));
	st->mode = mode;
	rc = spawn_uffd(a, id, header, snap, usock, mode, ws, metrics, &uffd,
			&ready, &log_from);
	if (rc < 0) {
		agent_err_set(e, "cannot start %s: %s", a->cfg.uffd_bin,
			      strerror(-rc));
		goto fail;
	}
	rc = wait_path(usock, uffd, UFFD_LISTEN_TIMEOUT_MS);
	if (rc < 0) {
		char why[600];

		uffd_why(a, id, log_from, why, sizeof(why));
		agent_err_set(e, "the page server did not listen on %s: %s%s (see uffd.log)",
			      usock, rc == -ECHILD ? "it exited" : strerror(-rc),
			      why);
		goto fail;
	}
	struct vmm_spawn v = {
		.id = id, .vmm_bin = a->cfg.vmm_bin, .run_dir = run,
		.disk_dir = disk, .snap_dir = snap, .kernel = NULL,
		.console_path = console, .log_path = vlog,
	};
	rc = ns_spawn_vmm(&v, &vmm);
	if (rc < 0) {
		agent_err_set(e, "cannot start %s: %s", a->cfg.vmm_bin,
			      strerror(-rc));
		goto fail;
	}
	if ((rc = api_client(a, id, &vc, e)) < 0 ||
	    (rc = vmm_wait_ready(vc, 10000, vmm, e)) < 0)
		goto fail;
	json_t *body = json_pack("{s:s, s:{s:s, s:s}, s:b, s:b}",
				 "snapshot_path", NS_VMSTATE, "mem_backend",
				 "backend_type", "Uffd", "backend_path",
				 NS_UFFD_SOCK, "track_dirty_pages", 1,
				 "resume_vm", 0);
	rc = body ? vmm_request(vc, "PUT", "/snapshot/load", body, NULL, e)
		  : -ENOMEM;
	json_decref(body);
	if (rc < 0)
		goto fail;
	/* The page server says "ready" once it has the VMM's handshake. */
	struct pollfd pfd = { .fd = ready, .events = POLLIN };
	char buf[16] = "";
	ssize_t got = -1;

	rc = poll(&pfd, 1, UFFD_READY_TIMEOUT_MS);
	if (rc > 0)
		got = read(ready, buf, sizeof(buf) - 1);
	if (got <= 0 || strncmp(buf, "ready", 5) != 0) {
		char why[600];

		/* End of file: the page server is gone (nothing else holds
		 * the pipe's write end). */
		uffd_why(a, id, log_from, why, sizeof(why));
		agent_err_set(e, "the page server did not get ready%s%s (see uffd.log)",
			      got == 0 ? ": it exited" : "", why);
		rc = rc == 0 ? -ETIMEDOUT : -EIO;
		goto fail;
	}
	close(ready);
	ready = -1;
	if ((rc = vm_state(vc, "Resumed", e)) < 0)
		goto fail;
	vmm_client_free(vc);
	vc = NULL;

	struct resume_pids p = { vmm, uffd, NULL };
	sandbox_apply(a, id, mark_resumed, &p);
	rc = reidentify(a, s, vmm, uffd, new_token, e);
	if (rc < 0)
		goto fail;
	p.token = new_token;
	sandbox_apply(a, id, mark_resumed, &p);
	uffd_stats(id, uffd, metrics, st);
	metrics_restore(a->metrics, st);
	*vmm_out = vmm;
	*uffd_out = uffd;
	return 0;

fail:
	vmm_client_free(vc);
	if (ready >= 0)
		close(ready);
	if (vmm > 0)
		ns_stop_vmm(vmm, true, 3000);
	if (uffd > 0)
		ns_stop_vmm(uffd, true, 2000);
	remove_sockets(a, id);
	struct resume_pids none = { 0, 0, NULL };
	sandbox_apply(a, id, mark_resumed, &none);
	return rc;
}

int snapshot_resume(struct agent *a, const char *id, enum prefetch_mode mode,
		    struct sandbox **out, struct restore_stats *st,
		    struct agent_err *e)
{
	char token[AGENT_TOKEN_LEN + 1], snap[PATH_MAX], ws[PATH_MAX];
	struct restore_stats own;
	struct sandbox s;
	pid_t vmm = 0, uffd = 0;
	int rc;
	uint64_t t0 = ember_now_ns();

	rc = sandbox_begin(a, id, SBX_PAUSED, SBX_RESUMING, e);
	if (rc < 0)
		return rc;
	sandbox_apply(a, id, sandbox_copy_fn, &s);
	if (!s.snap_header[0]) {
		agent_err_set(e, "sandbox %s has no pause snapshot", id);
		rc = -ENOENT;
		goto fail;
	}
	if ((rc = sbx_path(&a->cfg, id, P_SNAP_DIR, snap, sizeof(snap))) < 0 ||
	    (rc = join(ws, sizeof(ws), snap, WORKING_SET_FILE)) < 0) {
		agent_err_set(e, "sandbox paths: %s", strerror(-rc));
		goto fail;
	}
	random_token(token);
	rc = restore(a, &s, token, ws, prefetch_effective(a, mode), &vmm, &uffd,
		     st ? st : &own, e);
	if (rc < 0)
		goto fail;
	sandbox_end(a, id, SBX_RUNNING);
	olog_info(id, "resumed in %" PRIu64 " ms (VMM pid %d, page server pid %d)",
		  (ember_now_ns() - t0) / 1000000, (int)vmm, (int)uffd);
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	sandbox_apply(a, id, sandbox_dup_fn, *out);
	return 0;

fail:
	olog_error(id, "resume failed: %s", e->msg);
	sandbox_end(a, id, SBX_PAUSED);
	return rc;
}

/* --- snapshot templates ----------------------------------------------------- */

#define TEMPLATE_JSON "template.json"
#define TEMPLATE_DELETED "deleted"

static int template_dir(struct agent *a, const char *name, char *out,
			size_t size)
{
	int n = snprintf(out, size, "%s/templates/%s", a->cfg.state_dir, name);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Hard-links every file of the chain whose newest header is hdr_name (in
 * from/) and the vmstate into to/. */
static int link_chain(const char *from, const char *to, const char *hdr_name,
		      struct agent_err *e)
{
	char src[PATH_MAX], dst[PATH_MAX], name[64];
	char id_str[EMBER_LAYER_ID_STRLEN];
	struct ember_header h = { 0 };
	enum ember_hdr_error herr;
	int rc;

	if ((rc = join(src, sizeof(src), from, hdr_name)) < 0)
		return rc;
	rc = ember_header_load(src, &h, &herr);
	if (rc < 0) {
		agent_err_set(e, "cannot load %s: %s", src,
			      rc == -EINVAL ? ember_hdr_strerror(herr) : strerror(-rc));
		return rc;
	}
	for (uint32_t i = 0; i <= h.n_layers && rc == 0; i++) {
		if (i < h.n_layers) {
			ember_layer_id_format(&h.layers[i].id, id_str);
			snprintf(name, sizeof(name), "%s%s", id_str,
				 EMBER_LAYER_SUFFIX);
		} else {
			snprintf(name, sizeof(name), "%s", hdr_name);
		}
		if ((rc = join(src, sizeof(src), from, name)) < 0 ||
		    (rc = join(dst, sizeof(dst), to, name)) < 0)
			break;
		if (link(src, dst) < 0 && errno != EEXIST) {
			rc = -errno;
			agent_err_set(e, "cannot link %s to %s: %s", src, dst,
				      strerror(errno));
		}
	}
	if (rc == 0 && (rc = join(src, sizeof(src), from, "vmstate")) == 0 &&
	    (rc = join(dst, sizeof(dst), to, "vmstate")) == 0 &&
	    link(src, dst) < 0) {
		rc = -errno;
		agent_err_set(e, "cannot link %s to %s: %s", src, dst,
			      strerror(errno));
	}
	ember_header_free(&h);
	return rc;
}

int snapshot_template_create(struct agent *a, const char *id,
			     const char *name, bool stop_source,
			     struct template_info *t, struct agent_err *e)
{
	char dir[PATH_MAX], tmp[PATH_MAX], snap[PATH_MAX], rootfs[PATH_MAX];
	char path[PATH_MAX], hdr_name[64] = "";
	struct vmm_client *vc = NULL;
	struct pause_result r = { 0 };
	struct sandbox s;
	bool paused = false, broken = false, dup;
	int rc;

	memset(t, 0, sizeof(*t));
	if ((rc = template_dir(a, name, dir, sizeof(dir))) < 0 ||
	    snprintf(tmp, sizeof(tmp), "%s.tmp", dir) >= (int)sizeof(tmp)) {
		agent_err_set(e, "template path too long");
		return -ENAMETOOLONG;
	}
	dup = access(dir, F_OK) == 0;
	rc = sandbox_begin(a, id, SBX_RUNNING, SBX_PAUSING, e);
	if (rc < 0)
		return rc;
	if (dup) {
		agent_err_set(e, "snapshot template %s already exists", name);
		rc = -EEXIST;
		goto fail;
	}
	sandbox_apply(a, id, sandbox_copy_fn, &s);
	if ((rc = sbx_path(&a->cfg, id, P_SNAP_DIR, snap, sizeof(snap))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_ROOTFS, rootfs, sizeof(rootfs))) < 0) {
		agent_err_set(e, "sandbox paths: %s", strerror(-rc));
		goto fail;
	}
	ns_remove_tree(tmp);
	if ((rc = ember_mkdir_p(tmp, 0700)) < 0) {
		agent_err_set(e, "cannot make %s: %s", tmp, strerror(-rc));
		goto fail;
	}
	if ((rc = api_client(a, id, &vc, e)) < 0 ||
	    (rc = vm_state(vc, "Paused", e)) < 0)
		goto fail;
	paused = true;
	/* The template is the next generation of the source's own chain,
	 * shared by hard links: the source's next pause is a diff on it. */
	if ((rc = snap_generation(a, &s, vc, hdr_name, &r, &broken, e)) < 0)
		goto fail;
	struct pause_done d = { s.snap_generations + 1, hdr_name, false };
	sandbox_apply(a, id, mark_snapshot, &d);
	if ((rc = link_chain(snap, tmp, hdr_name, e)) < 0)
		goto fail;
	bool reflinked;
	if ((rc = fsync_path(rootfs)) < 0 ||
	    (rc = join(path, sizeof(path), tmp, "rootfs.ext4")) < 0 ||
	    (rc = disk_copy(rootfs, path, &reflinked)) < 0) {
		agent_err_set(e, "cannot copy the disk to %s: %s", path,
			      strerror(-rc));
		goto fail;
	}
	if (!stop_source) {
		rc = vm_state(vc, "Resumed", e);
		if (rc < 0)
			goto fail;
		paused = false;
	}
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(t->source, sizeof(t->source), "%s", id);
	t->vcpus = s.vcpus;
	t->memory_mib = s.memory_mib;
	t->memory_bytes = r.memory_total;
	t->disk_bytes = disk_allocated(path);
	t->created_ms = (int64_t)(ember_realtime_ns() / 1000000);
	json_t *j = json_pack("{s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:s, s:s}",
			      "name", name, "source", id, "vcpus", (int)s.vcpus,
			      "memory_mib", (json_int_t)s.memory_mib,
			      "memory_bytes", (json_int_t)t->memory_bytes,
			      "disk_bytes", (json_int_t)t->disk_bytes,
			      "created_ms", (json_int_t)t->created_ms,
			      "header", hdr_name, "token", s.token);
	char *text = j ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	rc = text && join(path, sizeof(path), tmp, TEMPLATE_JSON) == 0
		     ? ember_write_file_atomic(path, text, strlen(text), 0600)
		     : -ENOMEM;
	free(text);
	if (rc == 0 && rename(tmp, dir) < 0)
		rc = -errno;
	if (rc < 0) {
		agent_err_set(e, "cannot write the template %s: %s", dir,
			      strerror(-rc));
		goto fail;
	}
	ember_fsync_parent(dir);
	vmm_client_free(vc);
	sandbox_end(a, id, SBX_RUNNING);
	olog_info(id, "snapshot template %s: generation %u, %" PRIu64
		  " memory bytes in its layers, disk %" PRIu64,
		  name, r.generation, t->memory_bytes, t->disk_bytes);
	if (stop_source) {
		struct agent_err e2 = { "" };
		if (sandbox_destroy(a, id, &e2) < 0)
			olog_warn(id, "cannot stop the source: %s", e2.msg);
	}
	return 0;

fail:
	olog_error(id, "snapshot template %s failed: %s", name, e->msg);
	if (broken) {
		struct pause_done reset = { 0, "", false };
		sandbox_apply(a, id, mark_snapshot, &reset);
	}
	if (paused) {
		struct agent_err e2 = { "" };
		if (vm_state(vc, "Resumed", &e2) < 0)
			olog_error(id, "cannot resume after the failed snapshot: %s",
				   e2.msg);
	}
	vmm_client_free(vc);
	if (!dup)
		ns_remove_tree(tmp);
	sandbox_end(a, id, SBX_RUNNING);
	return rc;
}

int snapshot_spawn(struct agent *a, const struct create_args *c,
		   const char *name, struct sandbox **out,
		   struct restore_stats *st, struct agent_err *e)
{
	char dir[PATH_MAX], path[PATH_MAX], snap[PATH_MAX], rootfs[PATH_MAX];
	char ws[PATH_MAX];
	struct restore_stats own;
	char old_token[AGENT_TOKEN_LEN + 1];
	const char *hdr = "", *token = "";
	int vcpus = 0, rc;
	json_int_t mem = 0;
	char *text = NULL;
	json_t *j = NULL;
	struct sandbox *s;
	pid_t vmm, uffd;
	bool reflinked;
	uint64_t t0 = ember_now_ns();

	if (!agent_valid_id(c->id)) {
		agent_err_set(e, "sandbox_id '%s' is not 1 to 63 letters, digits, '-' or '_'",
			      c->id ? c->id : "");
		return -EINVAL;
	}
	if (!agent_valid_id(name) || template_dir(a, name, dir, sizeof(dir)) < 0 ||
	    join(path, sizeof(path), dir, TEMPLATE_DELETED) < 0 ||
	    access(path, F_OK) == 0 ||
	    join(path, sizeof(path), dir, TEMPLATE_JSON) < 0 ||
	    ember_read_file(path, 1 << 16, &text, NULL) < 0 ||
	    !(j = json_loads(text, 0, NULL)) ||
	    json_unpack(j, "{s:i, s:I, s:s, s:s}", "vcpus", &vcpus,
			"memory_mib", &mem, "header", &hdr, "token", &token) < 0) {
		free(text);
		json_decref(j);
		agent_err_set(e, "snapshot template %s not found", name);
		return -ENOENT;
	}
	free(text);
	s = calloc(1, sizeof(*s));
	if (!s) {
		json_decref(j);
		return -ENOMEM;
	}
	snprintf(s->id, sizeof(s->id), "%s", c->id);
	snprintf(s->template_name, sizeof(s->template_name), "%s",
		 c->template_name && *c->template_name ? c->template_name : name);
	snprintf(s->snapshot_template, sizeof(s->snapshot_template), "%s", name);
	snprintf(s->snap_header, sizeof(s->snap_header), "%s", hdr);
	snprintf(old_token, sizeof(old_token), "%s", token);
	json_decref(j);
	s->state = SBX_STARTING;
	s->vcpus = (unsigned)vcpus;
	s->memory_mib = (uint64_t)mem;
	s->snap_generations = 1;
	s->created_ms = (int64_t)(ember_realtime_ns() / 1000000);
	s->metadata = c->metadata ? json_deep_copy(c->metadata) : json_object();
	s->env = c->env ? json_deep_copy(c->env) : json_object();
	snprintf(s->token, sizeof(s->token), "%s", old_token);

	rc = sandbox_add(a, s, e);
	if (rc == -EEXIST) {
		sandbox_free(s);
		return rc;
	}
	if (rc < 0)
		goto fail;
	olog_info(s->id, "creating from snapshot template %s (%u vCPUs, %" PRIu64 " MiB)",
		  name, s->vcpus, s->memory_mib);
	/* A template of a networked sandbox needs a network to load into
	 * (its snapshot names the tap); without one the VMM says so. */
	if (c->network && (rc = net_setup(a, s->id, e)) < 0)
		goto fail;
	if ((rc = sbx_path(&a->cfg, s->id, P_SNAP_DIR, snap, sizeof(snap))) < 0 ||
	    (rc = sbx_path(&a->cfg, s->id, P_ROOTFS, rootfs, sizeof(rootfs))) < 0 ||
	    (rc = join(path, sizeof(path), dir, "rootfs.ext4")) < 0 ||
	    (rc = join(ws, sizeof(ws), dir, WORKING_SET_FILE)) < 0) {
		agent_err_set(e, "sandbox paths: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = link_chain(dir, snap, s->snap_header, e)) < 0)
		goto fail;
	if ((rc = disk_copy(path, rootfs, &reflinked)) < 0) {
		agent_err_set(e, "cannot copy %s to %s: %s", path, rootfs,
			      strerror(-rc));
		goto fail;
	}
	struct sandbox copy;
	char token_new[AGENT_TOKEN_LEN + 1];
	sandbox_apply(a, s->id, sandbox_copy_fn, &copy);
	random_token(token_new);
	/* Every clone of the template faults much the same pages: the
	 * working set is the template's. */
	rc = restore(a, &copy, token_new, ws, prefetch_effective(a, c->prefetch),
		     &vmm, &uffd, st ? st : &own, e);
	if (rc < 0)
		goto fail;
	sandbox_end(a, s->id, SBX_RUNNING);
	olog_info(s->id, "running after %" PRIu64 " ms (from %s; VMM pid %d, page server pid %d)",
		  (ember_now_ns() - t0) / 1000000, name, (int)vmm, (int)uffd);
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	sandbox_apply(a, c->id, sandbox_dup_fn, *out);
	return 0;

fail:
	olog_error(s->id, "create from %s failed: %s", name, e->msg);
	sandbox_discard(a, s);
	return rc;
}

int snapshot_template_delete(struct agent *a, const char *name,
			     bool *files_kept, struct agent_err *e)
{
	char dir[PATH_MAX], path[PATH_MAX];
	int rc;

	*files_kept = false;
	if (!agent_valid_id(name) || template_dir(a, name, dir, sizeof(dir)) < 0 ||
	    join(path, sizeof(path), dir, TEMPLATE_DELETED) < 0 ||
	    access(dir, F_OK) < 0 || access(path, F_OK) == 0) {
		agent_err_set(e, "snapshot template %s not found", name);
		return -ENOENT;
	}
	/* The marker first: no new sandbox starts from it from now on. */
	rc = ember_write_file_atomic(path, "", 0, 0600);
	if (rc < 0) {
		agent_err_set(e, "cannot write %s: %s", path, strerror(-rc));
		return rc;
	}
	if (sandbox_template_users(a, name) > 0) {
		*files_kept = true;
		olog_info(name, "template deleted; its files stay while sandboxes use it");
		return 0;
	}
	snapshot_template_release(a, name);
	return 0;
}

void snapshot_template_release(struct agent *a, const char *name)
{
	char dir[PATH_MAX], path[PATH_MAX];
	int rc;

	if (template_dir(a, name, dir, sizeof(dir)) < 0 ||
	    join(path, sizeof(path), dir, TEMPLATE_DELETED) < 0 ||
	    access(path, F_OK) < 0 || sandbox_template_users(a, name) > 0)
		return;
	rc = ns_remove_tree(dir);
	if (rc < 0)
		olog_warn(name, "cannot remove %s: %s", dir, strerror(-rc));
	else
		olog_info(name, "template files removed");
}

