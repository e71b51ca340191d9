// SPDX-License-Identifier: Apache-2.0
/*
 * Pause and resume (snapshot templates: TODO below).
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
 * sandbox_begin gives a second pause or resume in flight -EAGAIN.
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
#define UFFD_READY_TIMEOUT_MS 60000
#define GUEST_RESUME_TIMEOUT_MS 60000

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
};

static void mark_paused(struct sandbox *s, void *arg)
{
	const struct pause_done *d = arg;

	s->snap_generations = d->generations;
	snprintf(s->snap_header, sizeof(s->snap_header), "%s", d->header);
	s->vmm_pid = 0;
	s->uffd_pid = 0;
}

int snapshot_pause(struct agent *a, const char *id, struct pause_result *r,
		   struct agent_err *e)
{
	char snap[PATH_MAX], mem[PATH_MAX], vmstate[PATH_MAX], rootfs[PATH_MAX];
	char parent_path[PATH_MAX], why[256] = "", hdr_name[64];
	char id_str[EMBER_LAYER_ID_STRLEN];
	struct ember_header parent = { 0 }, next = { 0 };
	struct vmm_client *vc = NULL;
	struct sandbox s;
	bool paused = false, have_parent = false;
	uint64_t t0 = ember_now_ns();
	enum ember_hdr_error herr;
	int rc;

	memset(r, 0, sizeof(*r));
	rc = sandbox_begin(a, id, SBX_RUNNING, SBX_PAUSING, e);
	if (rc < 0)
		return rc;
	sandbox_apply(a, id, sandbox_copy_fn, &s);
	if ((rc = sbx_path(&a->cfg, id, P_SNAP_DIR, snap, sizeof(snap))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_ROOTFS, rootfs, sizeof(rootfs))) < 0 ||
	    (rc = join(mem, sizeof(mem), snap, "mem")) < 0 ||
	    (rc = join(vmstate, sizeof(vmstate), snap, "vmstate")) < 0 ||
	    (rc = join(parent_path, sizeof(parent_path), snap,
		       s.snap_header)) < 0) {
		agent_err_set(e, "sandbox paths: %s", strerror(-rc));
		goto fail;
	}
	if (s.snap_header[0]) {
		rc = ember_header_load(parent_path, &parent, &herr);
		if (rc < 0) {
			agent_err_set(e, "cannot load %s: %s", parent_path,
				      rc == -EINVAL ? ember_hdr_strerror(herr)
						    : strerror(-rc));
			goto fail;
		}
		have_parent = true;
	}
	/* A diff needs a fresh file: only dirtied pages are written. */
	unlink(mem);

	if ((rc = api_client(a, id, &vc, e)) < 0)
		goto fail;
	if ((rc = vm_state(vc, "Paused", e)) < 0)
		goto fail;
	paused = true;
	json_t *body = json_pack("{s:s, s:s, s:s}", "snapshot_type",
				 have_parent ? "Diff" : "Full", "snapshot_path",
				 NS_VMSTATE, "mem_file_path", NS_MEM);
	rc = body ? vmm_request(vc, "PUT", "/snapshot/create", body, NULL, e)
		  : -ENOMEM;
	json_decref(body);
	if (rc < 0)
		goto fail;

	r->memory_written = file_size(mem);
	{
		struct stat st;
		if (stat(mem, &st) == 0)
			r->memory_written = (uint64_t)st.st_blocks * 512;
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
		agent_err_set(e, "building generation %u: %s%s%s",
			      s.snap_generations, strerror(-rc),
			      why[0] ? ": " : "", why);
		goto fail;
	}
	ember_layer_id_format(&next.id, id_str);
	snprintf(hdr_name, sizeof(hdr_name), "%s%s", id_str, EMBER_HDR_SUFFIX);
	r->generation = next.generation;
	/* Bytes on disk: this generation's layer, and all of the chain. */
	for (uint32_t i = 0; i < next.n_layers; i++) {
		r->memory_total += next.layers[i].size;
		if (ember_layer_id_equal(&next.layers[i].id, &next.id))
			r->memory_written = next.layers[i].size;
	}
	unlink(mem);
	/* Only the newest header is needed to read the chain. */
	if (have_parent && unlink(parent_path) < 0)
		olog_warn(id, "cannot remove %s: %s", parent_path,
			  strerror(errno));

	if ((rc = fsync_path(rootfs)) < 0)
		olog_warn(id, "fsync %s: %s", rootfs, strerror(-rc));
	r->disk_bytes = disk_allocated(rootfs);
	vmm_client_free(vc);
	vc = NULL;
	ns_stop_vmm(s.vmm_pid, s.vmm_child, 3000);
	if (s.uffd_pid > 0)
		ns_stop_vmm(s.uffd_pid, s.vmm_child, 2000);
	remove_sockets(a, id);

	struct pause_done d = { s.snap_generations + 1, hdr_name };
	sandbox_apply(a, id, mark_paused, &d);
	sandbox_end(a, id, SBX_PAUSED);
	olog_info(id, "paused in %" PRIu64 " ms: generation %u, %" PRIu64
		  " of %" PRIu64 " memory bytes written, vmstate %" PRIu64
		  ", disk %" PRIu64,
		  (ember_now_ns() - t0) / 1000000, r->generation,
		  r->memory_written, r->memory_total, r->vmstate_bytes,
		  r->disk_bytes);
	ember_header_free(&parent);
	ember_header_free(&next);
	return 0;

fail:
	olog_error(id, "pause failed: %s", e->msg);
	if (paused) {
		struct agent_err e2 = { "" };
		if (vm_state(vc, "Resumed", &e2) < 0)
			olog_error(id, "cannot resume after the failed pause: %s",
				   e2.msg);
	}
	unlink(mem);
	vmm_client_free(vc);
	ember_header_free(&parent);
	ember_header_free(&next);
	sandbox_end(a, id, SBX_RUNNING);
	return rc;
}

/* Starts ember-uffd on the chain; *ready_fd is the read end of its ready
 * pipe. The socket appears once it listens. */
static int spawn_uffd(struct agent *a, const char *id, const char *header,
		      const char *snap, const char *sock, pid_t *pid,
		      int *ready_fd)
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
		char *argv[] = { a->cfg.uffd_bin, "--socket", (char *)sock,
				 "--header", (char *)header, "--layers-dir",
				 (char *)snap, "--ready-fd", fdnum, "--id",
				 (char *)id, NULL };
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
static int reidentify(struct agent *a, const struct sandbox *s,
		      const char *new_token, struct agent_err *e)
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
	do {
		struct ember_agent_health h;
		const char *tokens[] = { s->token, new_token };
		size_t i;

		for (i = 0; i < 2; i++) {
			r = ember_agent_connect_vsock(vsock, EMBER_AGENT_VSOCK_PORT,
						      tokens[i], 5000, &g);
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

int snapshot_resume(struct agent *a, const char *id, struct sandbox **out,
		    struct agent_err *e)
{
	char snap[PATH_MAX], header[PATH_MAX], usock[PATH_MAX], run[PATH_MAX];
	char disk[PATH_MAX], console[PATH_MAX], vlog[PATH_MAX];
	char token[AGENT_TOKEN_LEN + 1];
	struct vmm_client *vc = NULL;
	struct sandbox s;
	pid_t vmm = 0, uffd = 0;
	int ready = -1, rc;
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
	    (rc = sbx_path(&a->cfg, id, P_UFFD_SOCK, usock, sizeof(usock))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_RUN_DIR, run, sizeof(run))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_DISK_DIR, disk, sizeof(disk))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_CONSOLE, console, sizeof(console))) < 0 ||
	    (rc = sbx_path(&a->cfg, id, P_VMM_LOG, vlog, sizeof(vlog))) < 0 ||
	    (rc = join(header, sizeof(header), snap, s.snap_header)) < 0) {
		agent_err_set(e, "sandbox paths: %s", strerror(-rc));
		goto fail;
	}
	remove_sockets(a, id);

	rc = spawn_uffd(a, id, header, snap, usock, &uffd, &ready);
	if (rc < 0) {
		agent_err_set(e, "cannot start %s: %s", a->cfg.uffd_bin,
			      strerror(-rc));
		goto fail;
	}
	rc = wait_path(usock, uffd, UFFD_LISTEN_TIMEOUT_MS);
	if (rc < 0) {
		agent_err_set(e, "the page server did not listen on %s: %s (see uffd.log)",
			      usock, rc == -ECHILD ? "it exited" : strerror(-rc));
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
	rc = poll(&pfd, 1, UFFD_READY_TIMEOUT_MS);
	if (rc <= 0 || read(ready, buf, sizeof(buf) - 1) <= 0 ||
	    strncmp(buf, "ready", 5) != 0) {
		agent_err_set(e, "the page server did not get ready (see uffd.log)");
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
	random_token(token);
	rc = reidentify(a, &s, token, e);
	if (rc < 0)
		goto fail;
	p.token = token;
	sandbox_apply(a, id, mark_resumed, &p);
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
	sandbox_end(a, id, SBX_PAUSED);
	return rc;
}

/* TODO(agent): snapshot templates (CreateSnapshot, CreateSandbox from a
 * template, DeleteSnapshot with reference counts) are not written: they
 * wait on the VMM's snapshot endpoints, like pause and resume. */
