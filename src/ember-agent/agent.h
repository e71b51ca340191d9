/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ember-agent: the host agent. Internal interfaces between its files:
 *
 *   main.c        options, start-up, signals
 *   rpc.c         the Connect server (HTTP/1.1, libmicrohttpd), /metrics
 *   sandbox.c     the sandbox table, its state machine, persistence
 *   vmm_client.c  the Firecracker API client (libcurl over a Unix socket)
 *   disk.c        the private rootfs copy (reflink, else sparse copy)
 *   ns.c          path layout; starting the VMM in its own mount namespace
 *   net.c         a sandbox's network namespace, tap, veth and NAT rules
 *   snapshot.c    pause, resume, snapshot templates
 *   metrics.c     counters for GET /metrics
 *
 * Every function returns 0 or a negative errno unless its comment says
 * otherwise; a message for the RPC caller goes in `err` (struct agent_err).
 */
#ifndef EMBER_AGENT_AGENT_H
#define EMBER_AGENT_AGENT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_ID_MAX 63
#define AGENT_TOKEN_LEN 32
#define AGENT_DEFAULT_STATE_DIR "/var/lib/ember"
#define AGENT_DEFAULT_RUN_DIR "/run/ember"
#define AGENT_DEFAULT_BOOT_ARGS                                               \
	"console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw quiet"
/* Largest file ReadFile returns when the request gives no max_bytes. */
#define AGENT_READ_LIMIT (64u << 20)

enum vmm_kind { VMM_EMBER, VMM_FIRECRACKER };

/* How a restore brings memory back (snapshot.c); values of proto's
 * PrefetchMode. PREFETCH_DEFAULT: the agent's --prefetch. */
enum prefetch_mode {
	PREFETCH_DEFAULT = 0,
	PREFETCH_OFF = 1,	/* lazy */
	PREFETCH_RECORD = 2,	/* lazy, recording the working set anew */
	PREFETCH_ON = 3,	/* the working set, or record one */
	PREFETCH_EAGER = 4,	/* all memory before the vCPUs run */
};
/* "off", "record", "on", "eager"; parse: -EINVAL for anything else. */
const char *prefetch_mode_name(enum prefetch_mode m);
int prefetch_mode_parse(const char *name, enum prefetch_mode *out);

/* What the page server did for one restore until the guest answered. */
struct restore_stats {
	enum prefetch_mode mode;	/* what happened: OFF, RECORD, ON, EAGER */
	bool known;			/* the page server's metrics were read */
	uint64_t faults, prefetched_pages, bytes_copied;
	double prefetch_ms;
};

struct agent_config {
	char listen_host[64];
	unsigned listen_port;
	char state_dir[256];
	char run_dir[128];
	char vmm_bin[256];
	enum vmm_kind vmm_kind;
	char uffd_bin[256];
	char kernel[256];   /* default kernel of base templates */
	char rootfs[256];   /* default rootfs of base templates */
	unsigned boot_timeout_s;
	enum prefetch_mode prefetch;	/* restores' default (never DEFAULT) */
};

/* A message for the RPC caller, next to the -errno a function returns. */
struct agent_err {
	char msg[512];
};
void agent_err_set(struct agent_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* --- the sandbox state machine (sandbox.c) ---------------------------------
 * Values are those of proto's SandboxState. */
enum sbx_state {
	SBX_STARTING = 1,
	SBX_RUNNING = 2,
	SBX_PAUSING = 3,
	SBX_PAUSED = 4,
	SBX_RESUMING = 5,
	SBX_STOPPING = 6,
	SBX_STOPPED = 7,
	SBX_ERROR = 8,
};
const char *sbx_state_name(enum sbx_state s);
int sbx_state_parse(const char *name, enum sbx_state *out);
bool sbx_transition_allowed(enum sbx_state from, enum sbx_state to);
/* Whether ListSandboxes reports a sandbox in this state. */
bool sbx_state_listed(enum sbx_state s);

struct sandbox {
	char id[AGENT_ID_MAX + 1];
	char template_name[128];
	enum sbx_state state;
	unsigned vcpus;
	uint64_t memory_mib;
	char token[AGENT_TOKEN_LEN + 1];
	pid_t vmm_pid;
	bool vmm_child;		/* forked by this agent (else adopted) */
	pid_t uffd_pid;		/* page server of a resumed sandbox, or 0 */
	/* The pause chain in <snap>/: generations written so far and the
	 * newest header's file name ("" before the first pause). */
	unsigned snap_generations;
	char snap_header[64];
	/* The snapshot template it was spawned from ("" for a base image);
	 * a deleted template's files stay until no sandbox names it. */
	char snapshot_template[AGENT_ID_MAX + 1];
	int64_t created_ms;
	char error[256];
	/* Networking (net.c): the slot picks the veth's /30 in the pool. */
	bool network;
	unsigned net_slot;
	json_t *metadata;	/* object of strings */
	json_t *env;		/* object of strings, laid under each exec's */
	struct sandbox *next;
};

struct agent {
	struct agent_config cfg;
	char host_id[64];
	char vmm_version[64];
	pthread_mutex_t lock;	/* the table and every sandbox's state */
	struct sandbox *sandboxes;
	struct agent_metrics *metrics;
};

/* Checks an id: 1 to 63 of [A-Za-z0-9_-]. */
bool agent_valid_id(const char *id);

int agent_init(struct agent *a);
void agent_fini(struct agent *a);
/* Reads every sandbox's state file; adopts running VMMs. */
int agent_load(struct agent *a);

struct create_args {
	const char *id;
	const char *template_name;
	const char *kernel, *rootfs, *boot_args;
	unsigned vcpus;
	uint64_t memory_mib;
	json_t *env, *metadata;	/* borrowed */
	bool network;
	enum prefetch_mode prefetch;	/* snapshot templates */
};
/* On success *out is a copy of the sandbox (free with sandbox_free). */
int sandbox_create(struct agent *a, const struct create_args *c,
		   struct sandbox **out, struct agent_err *e);
int sandbox_destroy(struct agent *a, const char *id, struct agent_err *e);
/* A snapshot of the table, in creation order (free with sandbox_free). */
int sandbox_list(struct agent *a, struct sandbox ***out, size_t *n);
void sandbox_free(struct sandbox *s);
struct host_counts {
	unsigned running, paused, vcpus_used;
	uint64_t memory_used_mib;
};
void sandbox_counts(struct agent *a, struct host_counts *c);

/* Opens a guest agent connection of a running sandbox (its token, the
 * agent's timeout). The struct ember_agent is from ember/agent_client.h. */
struct ember_agent;
int sandbox_guest(struct agent *a, const char *id, int timeout_ms,
		  struct ember_agent **out, json_t **env, struct agent_err *e);
/* Takes the sandbox for a pause/resume/snapshot: fails with -EAGAIN when
 * another one is in flight, -EBUSY when the state does not allow it. */
int sandbox_begin(struct agent *a, const char *id, enum sbx_state from,
		  enum sbx_state during, struct agent_err *e);
/* Marks running sandboxes whose VMM has gone as ERROR (and reaps them). */
void sandbox_monitor(struct agent *a);
/* Ends what sandbox_begin started: moves the sandbox to state `to`. */
void sandbox_end(struct agent *a, const char *id, enum sbx_state to);
/* Runs fn on the sandbox under the lock, then writes its record; -ENOENT
 * when it is gone. A copy out: pass a fn that copies (sandbox_copy_fn,
 * arg a struct sandbox * whose metadata/env are left NULL). */
int sandbox_apply(struct agent *a, const char *id,
		  void (*fn)(struct sandbox *s, void *arg), void *arg);
void sandbox_copy_fn(struct sandbox *s, void *arg);
/* The same with metadata and env copied (free with sandbox_free). */
void sandbox_dup_fn(struct sandbox *s, void *arg);
/* For snapshot.c's CreateSandbox from a template: puts s (STARTING) in the
 * table (-EEXIST when the id is taken) and makes its folders; on a later
 * failure sandbox_discard stops s's processes, removes its files, takes it
 * out of the table and frees it. */
int sandbox_add(struct agent *a, struct sandbox *s, struct agent_err *e);
void sandbox_discard(struct agent *a, struct sandbox *s);
/* Sandboxes that name template `name`. */
unsigned sandbox_template_users(struct agent *a, const char *name);
/* Waits for a resumed guest's agent (new token already recorded). */
int sandbox_wait_guest(struct agent *a, const char *id, int timeout_ms,
		       struct agent_err *e);

/* --- paths (ns.c) ----------------------------------------------------------
 * Host side:
 *   <state>/sandboxes/<id>/state.json     the sandbox's record
 *   <state>/sandboxes/<id>/disk/rootfs.ext4
 *   <state>/sandboxes/<id>/snap/          pause snapshots, layers
 *   <state>/sandboxes/<id>/console.log, vmm.log
 *   <run>/vms/<id>/api.sock, vsock.sock   sockets
 * Inside the VMM's mount namespace (the same for every sandbox):
 *   /run/ember-vm/run/    = <run>/vms/<id>/
 *   /run/ember-vm/disk/   = <state>/sandboxes/<id>/disk/
 *   /run/ember-vm/snap/   = <state>/sandboxes/<id>/snap/
 *   /run/ember-vm/kernel  = the kernel file
 */
#define NS_ROOT "/run/ember-vm"
#define NS_RUN NS_ROOT "/run"
#define NS_DISK NS_ROOT "/disk"
#define NS_SNAP NS_ROOT "/snap"
#define NS_KERNEL NS_ROOT "/kernel"
#define NS_API_SOCK NS_RUN "/api.sock"
#define NS_VSOCK_SOCK NS_RUN "/vsock.sock"
#define NS_ROOTFS NS_DISK "/rootfs.ext4"
#define NS_UFFD_SOCK NS_RUN "/uffd.sock"
#define NS_VMSTATE NS_SNAP "/vmstate"
#define NS_MEM NS_SNAP "/mem"

enum sbx_path {
	P_DIR,		/* <state>/sandboxes/<id> */
	P_STATE,
	P_DISK_DIR,
	P_ROOTFS,
	P_SNAP_DIR,
	P_CONSOLE,
	P_VMM_LOG,
	P_RUN_DIR,	/* <run>/vms/<id> */
	P_API_SOCK,
	P_VSOCK_SOCK,
	P_UFFD_SOCK,	/* <run>/vms/<id>/uffd.sock */
};
/* Writes the host path of kind for sandbox id; -ENAMETOOLONG when it does
 * not fit (sockets: when it does not fit sun_path). */
int sbx_path(const struct agent_config *cfg, const char *id,
	     enum sbx_path kind, char *buf, size_t len);

struct vmm_spawn {
	const char *id;
	const char *vmm_bin;
	const char *run_dir;	/* bound on NS_RUN */
	const char *disk_dir;	/* bound on NS_DISK */
	const char *snap_dir;	/* bound on NS_SNAP */
	const char *kernel;	/* bound on NS_KERNEL; may be NULL */
	const char *console_path, *log_path;
};
/* Forks the VMM in a new session and mount namespace; *pid is its pid. */
int ns_spawn_vmm(const struct vmm_spawn *v, pid_t *pid);
/* Stops a VMM: SIGTERM, then SIGKILL after timeout_ms; reaps a child. */
void ns_stop_vmm(pid_t pid, bool child, int timeout_ms);
/* Whether pid is alive (a zombie child is reaped and counts as dead). */
bool ns_pid_alive(pid_t pid, bool child);
/* rm -rf; a missing path is fine. */
int ns_remove_tree(const char *path);

/* --- net.c ----------------------------------------------------------------
 * The same inside every sandbox's namespace, so snapshots restore anywhere.
 */
#define NET_TAP "tap0"
#define NET_TAP_CIDR "172.31.0.1/30"
#define NET_GUEST_IP "172.31.0.2"
#define NET_GUEST_MAC "06:00:ac:1f:00:02"
/* The tap's own MAC, fixed too: a restored guest's ARP cache names it. */
#define NET_TAP_MAC "06:00:ac:1f:00:01"
/* The guest kernel's IP autoconfiguration (CONFIG_IP_PNP): static.
 * TODO(agent): no DNS server is given to the guest (a resolver address
 * here and an /etc/resolv.conf from ember-init). */
#define NET_GUEST_BOOT_ARG                                                    \
	"ip=" NET_GUEST_IP "::172.31.0.1:255.255.255.252::eth0:off"
/* /run/netns/ember-<id>: where ns.c finds the namespace the VMM joins. */
int net_netns_path(const char *id, char *buf, size_t len);
/* Makes sandbox id's namespace, tap, veth, addresses and rules, and
 * records its slot (sandbox->network); on failure nothing is left. */
int net_setup(struct agent *a, const char *id, struct agent_err *e);
/* Removes all of it (a missing piece is fine). No-op without network. */
void net_teardown(const struct sandbox *s);
/* Whether the sandbox's namespace exists. */
bool net_present(const struct sandbox *s);

/* --- disk.c ---------------------------------------------------------------- */
/* Copies src to dst (created, 0600): FICLONE when the filesystem can, else a
 * sparse copy (SEEK_DATA/SEEK_HOLE). *reflinked says which. */
int disk_copy(const char *src, const char *dst, bool *reflinked);
/* Bytes allocated to path (st_blocks * 512). */
uint64_t disk_allocated(const char *path);

/* --- vmm_client.c: Firecracker's API --------------------------------------- */
struct vmm_client;
int vmm_client_new(const char *api_sock, const char *id, long timeout_ms,
		   struct vmm_client **out);
void vmm_client_free(struct vmm_client *c);
/* One request; body may be NULL. Returns the HTTP status (2xx) or -EIO for
 * a 4xx/5xx answer (fault_message in e), -errno for transport failures.
 * *resp (optional) gets the parsed JSON answer of a GET. */
int vmm_request(struct vmm_client *c, const char *method, const char *path,
		json_t *body, json_t **resp, struct agent_err *e);
/* Waits until the socket answers GET / (up to timeout_ms). */
int vmm_wait_ready(struct vmm_client *c, int timeout_ms, pid_t pid,
		   struct agent_err *e);

/* --- metrics.c ------------------------------------------------------------- */
struct agent_metrics;
int metrics_new(struct agent_metrics **out);
void metrics_free(struct agent_metrics *m);
void metrics_rpc(struct agent_metrics *m, const char *method,
		 const char *code, uint64_t ns);
/* One restore's page-server figures, by the mode that happened. */
void metrics_restore(struct agent_metrics *m, const struct restore_stats *r);
/* Prometheus text; malloc'd. */
char *metrics_render(struct agent *a);

/* --- rpc.c ----------------------------------------------------------------- */
struct rpc_server;
int rpc_start(struct agent *a, struct rpc_server **out);
unsigned rpc_port(const struct rpc_server *s);
void rpc_stop(struct rpc_server *s);

/* --- snapshot.c ------------------------------------------------------------ */
struct pause_result {
	unsigned generation;
	uint64_t memory_written, memory_total, disk_bytes, vmstate_bytes;
	uint64_t memory_guest;	/* the guest's memory size */
};
int snapshot_pause(struct agent *a, const char *id, struct pause_result *r,
		   struct agent_err *e);
/* Working sets: <snap>/working-set.ws of a paused sandbox, and
 * <templates>/<name>/working-set.ws of a template (ember-uffd's file,
 * docs/snapshots.md). *st (may be NULL) gets the page server's figures. */
#define WORKING_SET_FILE "working-set.ws"
int snapshot_resume(struct agent *a, const char *id, enum prefetch_mode mode,
		    struct sandbox **out, struct restore_stats *st,
		    struct agent_err *e);

/* Snapshot templates: <state>/templates/<name>/ holds template.json, the
 * header, hard links to its layers, vmstate and rootfs.ext4. */
struct template_info {
	char name[AGENT_ID_MAX + 1];
	char source[AGENT_ID_MAX + 1];
	unsigned vcpus;
	uint64_t memory_mib, memory_bytes, disk_bytes;
	int64_t created_ms;
};
int snapshot_template_create(struct agent *a, const char *id,
			     const char *name, bool stop_source,
			     struct template_info *t, struct agent_err *e);
/* CreateSandbox from a template: vCPUs and memory from the template. */
int snapshot_spawn(struct agent *a, const struct create_args *c,
		   const char *name, struct sandbox **out,
		   struct restore_stats *st, struct agent_err *e);
/* *files_kept: sandboxes spawned from it still exist. */
int snapshot_template_delete(struct agent *a, const char *name,
			     bool *files_kept, struct agent_err *e);
/* After a sandbox spawned from name is gone: removes a deleted template's
 * files once no sandbox names it. */
void snapshot_template_release(struct agent *a, const char *name);

#endif
