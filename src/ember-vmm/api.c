// SPDX-License-Identifier: Apache-2.0
/*
 * The Firecracker API of ember-vmm (api.h): routing, the state machine, and
 * InstanceStart. Bodies are validated by config.c.
 *
 * Status codes: 200 with JSON for GETs, 204 for accepted PUTs and PATCHes,
 * 400 with {"fault_message": ...} for a bad request or one the state does
 * not allow, 404 for an unknown path, 405 for a method a path does not
 * take.
 */
#include "api.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define ERR_MAX 1024

static const char msg_after_start[] =
    "The microVM has already been started: its configuration can only "
    "be changed before InstanceStart.";

const char *vmm_state_name(enum vmm_state state)
{
	switch (state) {
	case VMM_NOT_STARTED:
		return "Not started";
	case VMM_RUNNING:
		return "Running";
	case VMM_PAUSED:
		return "Paused";
	case VMM_EXITED:
		return "Exited";
	}
	return "Unknown";
}

int vmm_init(struct vmm *vmm, const char *id)
{
	memset(vmm, 0, sizeof(*vmm));
	pthread_mutex_init(&vmm->lock, NULL);
	config_init(&vmm->cfg, id);
	vmm->state = VMM_NOT_STARTED;
	vmm->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vmm->wake_fd < 0) {
		int rc = -errno;

		olog_error(id, "eventfd: %s", strerror(errno));
		pthread_mutex_destroy(&vmm->lock);
		return rc;
	}
	return 0;
}

void vmm_fini(struct vmm *vmm)
{
	/* First the API thread, so no request runs while the VM goes; the
	 * request in progress gets its answer. */
	ember_http_server_drain(vmm->http, 2000);
	ember_http_server_stop(vmm->http);
	vmm->http = NULL;
	if (vmm->sock_path[0] && unlink(vmm->sock_path) < 0 && errno != ENOENT)
		olog_warn(vmm->cfg.vm.id, "cannot remove %s: %s",
			  vmm->sock_path, strerror(errno));
	vmm->sock_path[0] = '\0';
	pthread_mutex_lock(&vmm->lock);
	vm_destroy(vmm->vm);
	vmm->vm = NULL;
	pthread_mutex_unlock(&vmm->lock);
	ember_close(&vmm->wake_fd);
	pthread_mutex_destroy(&vmm->lock);
}

static void wake_main(struct vmm *vmm)
{
	uint64_t one = 1;

	if (write(vmm->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		olog_warn(vmm->cfg.vm.id, "wake: %s", strerror(errno));
}

int vmm_boot(struct vmm *vmm, char *err, size_t errlen)
{
	const char *id = vmm->cfg.vm.id;
	struct vm *vm = NULL;
	int rc;

	pthread_mutex_lock(&vmm->lock);
	if (vmm->state != VMM_NOT_STARTED) {
		snprintf(err, errlen, "The microVM has already been started.");
		rc = -EALREADY;
		goto out;
	}
	rc = config_check_startable(&vmm->cfg, err, errlen);
	if (rc < 0)
		goto out;
	err[0] = '\0';
	rc = vm_create(&vmm->cfg.vm, &vm, err, errlen);
	if (rc < 0) {
		if (!err[0])
			snprintf(err, errlen, "Cannot create the microVM: %s",
				 strerror(-rc));
		goto out;
	}
	rc = vm_start(vm);
	if (rc < 0) {
		snprintf(err, errlen, "Cannot start the microVM: %s",
			 strerror(-rc));
		vm_destroy(vm);
		goto out;
	}
	vmm->vm = vm;
	vmm->state = VMM_RUNNING;
	olog_info(id, "microVM started: vcpu_count %u, mem_size_mib %llu, drives %u",
		  vmm->cfg.vm.vcpu_count,
		  (unsigned long long)vmm->cfg.vm.mem_size_mib,
		  vmm->cfg.vm.n_drives);
	wake_main(vmm);
out:
	pthread_mutex_unlock(&vmm->lock);
	return rc;
}

/* Applies PUT /logger to the process's log. On failure nothing changes. */
static int apply_logger(struct vmm *vmm, const struct vmm_logger *lg, char *err,
			size_t errlen)
{
	enum ember_log_level level;
	int rc;

	if (lg->log_path[0]) {
		rc = ember_log_set_file(lg->log_path);
		if (rc < 0) {
			snprintf(err, errlen, "logger: cannot open %.512s: %s",
				 lg->log_path, strerror(-rc));
			return rc;
		}
	}
	if (lg->level[0] && ember_log_parse_level(lg->level, &level) == 0)
		ember_log_set_level(level);
	return 0;
}

static void put_logger(struct vmm *vmm, json_t *body, char *err, size_t errlen,
		       int *rc)
{
	struct vmm_config next = vmm->cfg;

	*rc = config_set_logger(&next, body, err, errlen);
	if (*rc == 0)
		*rc = apply_logger(vmm, &next.logger, err, errlen);
	if (*rc == 0)
		vmm->cfg.logger = next.logger;
}

static void do_action(struct vmm *vmm, json_t *body,
		      struct ember_http_response *resp)
{
	static const char *const known[] = {"action_type"};
	char err[ERR_MAX];
	const char *key, *type;
	json_t *v;
	int rc;

	json_object_foreach (body, key, v) {
		if (strcmp(key, known[0]) != 0) {
			ember_http_reply_error(
			    resp, 400, "actions: unknown field \"%s\".", key);
			return;
		}
	}
	v = json_object_get(body, "action_type");
	if (!v) {
		ember_http_reply_error(
		    resp, 400,
		    "actions: missing required field \"action_type\".");
		return;
	}
	type = json_string_value(v);
	if (!type) {
		ember_http_reply_error(
		    resp, 400,
		    "actions: field \"action_type\" must be a string.");
		return;
	}
	if (strcmp(type, "InstanceStart") == 0) {
		rc = vmm_boot(vmm, err, sizeof(err));
		if (rc < 0)
			ember_http_reply_error(resp, 400, "%s", err);
		else
			ember_http_reply_empty(resp, 204);
	} else if (strcmp(type, "SendCtrlAltDel") == 0) {
		pthread_mutex_lock(&vmm->lock);
		if (vmm->state != VMM_RUNNING) {
			rc = -EINVAL;
			snprintf(
			    err, sizeof(err),
			    "SendCtrlAltDel needs a running microVM; it is %s.",
			    vmm_state_name(vmm->state));
		} else {
			rc = vm_send_ctrl_alt_del(vmm->vm);
			snprintf(err, sizeof(err), "SendCtrlAltDel failed: %s",
				 strerror(-rc));
		}
		pthread_mutex_unlock(&vmm->lock);
		if (rc < 0)
			ember_http_reply_error(resp, 400, "%s", err);
		else
			ember_http_reply_empty(resp, 204);
	} else if (strcmp(type, "FlushMetrics") == 0) {
		ember_http_reply_error(
		    resp, 400,
		    "FlushMetrics is not supported: ember-vmm keeps no metrics.");
	} else {
		ember_http_reply_error(
		    resp, 400,
		    "actions: unknown action_type \"%s\" (expected InstanceStart, SendCtrlAltDel or FlushMetrics).",
		    type);
	}
}

static void get_root(struct vmm *vmm, struct ember_http_response *resp)
{
	json_t *info;

	pthread_mutex_lock(&vmm->lock);
	info = json_pack("{s:s, s:s, s:s, s:s}", "id", vmm->cfg.vm.id, "state",
			 vmm_state_name(vmm->state), "vmm_version",
			 EMBER_VERSION, "app_name", "ember-vmm");
	pthread_mutex_unlock(&vmm->lock);
	ember_http_reply_json(resp, 200, info);
}

enum route_kind {
	R_ROOT,
	R_BOOT_SOURCE,
	R_MACHINE,
	R_DRIVE,
	R_NET,
	R_VSOCK,
	R_ENTROPY,
	R_LOGGER,
	R_ACTIONS,
	R_VM_CONFIG,
	R_VM,
	R_SNAPSHOT_CREATE,
	R_SNAPSHOT_LOAD,
};

struct route {
	const char *path; /* exact, or a prefix ending in '/' */
	enum route_kind kind;
	const char *methods; /* the Allow header */
};

static const struct route routes[] = {
    {"/", R_ROOT, "GET"},
    {"/boot-source", R_BOOT_SOURCE, "PUT"},
    {"/machine-config", R_MACHINE, "GET, PUT, PATCH"},
    {"/drives/", R_DRIVE, "PUT"},
    {"/network-interfaces/", R_NET, "PUT"},
    {"/vsock", R_VSOCK, "PUT"},
    {"/entropy", R_ENTROPY, "PUT"},
    {"/logger", R_LOGGER, "PUT"},
    {"/actions", R_ACTIONS, "PUT"},
    {"/vm/config", R_VM_CONFIG, "GET"},
    {"/vm", R_VM, "PATCH"},
    {"/snapshot/create", R_SNAPSHOT_CREATE, "PUT"},
    {"/snapshot/load", R_SNAPSHOT_LOAD, "PUT"},
};

/* Finds the route of path; *tail gets the {id} of prefix routes. */
static const struct route *find_route(const char *path, const char **tail)
{
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(routes); i++) {
		const char *p = routes[i].path;
		size_t len = strlen(p);

		if (len > 1 && p[len - 1] == '/') {
			if (strncmp(path, p, len) == 0 &&
			    !strchr(path + len, '/')) {
				*tail = path + len;
				return &routes[i];
			}
		} else if (strcmp(path, p) == 0) {
			*tail = "";
			return &routes[i];
		}
	}
	return NULL;
}

static bool method_allowed(const struct route *r, const char *method)
{
	const char *m = r->methods;
	size_t len = strlen(method);

	while ((m = strstr(m, method))) {
		if ((m == r->methods || m[-1] == ' ') &&
		    (m[len] == '\0' || m[len] == ','))
			return true;
		m += len;
	}
	return false;
}

/* Handles a configuration request (one with a body, NotStarted only).
 * Returns 0 or -errno with err set. */
static int configure(struct vmm *vmm, const struct route *r, const char *id,
		     const char *method, json_t *body, char *err, size_t errlen)
{
	struct vmm_config *cfg = &vmm->cfg;
	int rc = 0;

	if (vmm->state != VMM_NOT_STARTED) {
		snprintf(err, errlen, "%s", msg_after_start);
		return -EBUSY;
	}
	switch (r->kind) {
	case R_BOOT_SOURCE:
		return config_set_boot_source(cfg, body, err, errlen);
	case R_MACHINE:
		return config_set_machine(
		    cfg, body, strcmp(method, "PATCH") == 0, err, errlen);
	case R_DRIVE:
		return config_put_drive(cfg, id, body, err, errlen);
	case R_NET:
		return config_put_net(cfg, id, body, err, errlen);
	case R_VSOCK:
		return config_set_vsock(cfg, body, err, errlen);
	case R_ENTROPY:
		return config_set_entropy(cfg, body, err, errlen);
	case R_LOGGER:
		put_logger(vmm, body, err, errlen, &rc);
		return rc;
	default:
		snprintf(err, errlen, "internal error: no handler");
		return -EINVAL;
	}
}

/* ---- PATCH /vm, PUT /snapshot/create, PUT /snapshot/load ---- */

/* Refuses fields not in allowed (NULL-terminated), as Firecracker does. */
static int only_fields(json_t *obj, const char *const *allowed,
		       const char *what, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v) {
		bool ok = false;

		for (size_t i = 0; allowed[i]; i++)
			ok = ok || strcmp(key, allowed[i]) == 0;
		if (!ok) {
			snprintf(err, errlen, "Unknown field %s in %s.", key,
				 what);
			return -EINVAL;
		}
	}
	return 0;
}

/* A string field: required or not; *out is NULL when absent. */
static int string_field(json_t *obj, const char *name, bool required,
			const char **out, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, name);

	*out = NULL;
	if (!v) {
		if (!required)
			return 0;
		snprintf(err, errlen, "Missing field %s.", name);
		return -EINVAL;
	}
	if (!json_is_string(v) || !json_string_value(v)[0] ||
	    strlen(json_string_value(v)) >= PATH_MAX) {
		snprintf(err, errlen, "%s must be a non-empty string shorter than %d bytes.",
			 name, PATH_MAX);
		return -EINVAL;
	}
	*out = json_string_value(v);
	return 0;
}

static int bool_field(json_t *obj, const char *name, bool *out, char *err,
		      size_t errlen)
{
	json_t *v = json_object_get(obj, name);

	if (!v)
		return 0;
	if (!json_is_boolean(v)) {
		snprintf(err, errlen, "%s must be true or false.", name);
		return -EINVAL;
	}
	*out = json_is_true(v);
	return 0;
}

static int patch_vm(struct vmm *vmm, json_t *body, char *err, size_t errlen)
{
	static const char *const fields[] = { "state", NULL };
	const char *state;
	int rc = only_fields(body, fields, "PATCH /vm", err, errlen);

	if (!rc)
		rc = string_field(body, "state", true, &state, err, errlen);
	if (rc)
		return rc;
	if (strcmp(state, "Paused") && strcmp(state, "Resumed")) {
		snprintf(err, errlen,
			 "state must be \"Paused\" or \"Resumed\", not \"%s\".",
			 state);
		return -EINVAL;
	}
	pthread_mutex_lock(&vmm->lock);
	if (vmm->state != VMM_RUNNING && vmm->state != VMM_PAUSED) {
		snprintf(err, errlen, "The microVM is %s: only a running or paused microVM can be %s.",
			 vmm_state_name(vmm->state),
			 strcmp(state, "Paused") ? "resumed" : "paused");
		rc = -EINVAL;
	} else if (!strcmp(state, "Paused")) {
		rc = vm_pause(vmm->vm);
		if (rc)
			snprintf(err, errlen, "Cannot pause the microVM: %s",
				 strerror(-rc));
		else
			vmm->state = VMM_PAUSED;
	} else {
		rc = vm_resume(vmm->vm);
		if (rc)
			snprintf(err, errlen, "Cannot resume the microVM: %s",
				 strerror(-rc));
		else
			vmm->state = VMM_RUNNING;
	}
	if (!rc)
		olog_info(vmm->cfg.vm.id, "microVM %s",
			  vmm->state == VMM_PAUSED ? "paused" : "resumed");
	pthread_mutex_unlock(&vmm->lock);
	return rc;
}

static int snapshot_create(struct vmm *vmm, json_t *body, char *err,
			   size_t errlen)
{
	static const char *const fields[] = { "snapshot_type", "snapshot_path",
					      "mem_file_path", "version",
					      NULL };
	const char *type = NULL, *state_path, *mem_path;
	enum vm_snapshot_type t = VM_SNAPSHOT_FULL;
	int rc = only_fields(body, fields, "PUT /snapshot/create", err, errlen);

	if (!rc)
		rc = string_field(body, "snapshot_path", true, &state_path,
				  err, errlen);
	if (!rc)
		rc = string_field(body, "mem_file_path", true, &mem_path, err,
				  errlen);
	if (!rc)
		rc = string_field(body, "snapshot_type", false, &type, err,
				  errlen);
	if (rc)
		return rc;
	if (type && !strcmp(type, "Diff"))
		t = VM_SNAPSHOT_DIFF;
	else if (type && strcmp(type, "Full")) {
		snprintf(err, errlen,
			 "snapshot_type must be \"Full\" or \"Diff\", not \"%s\".",
			 type);
		return -EINVAL;
	}
	pthread_mutex_lock(&vmm->lock);
	if (vmm->state != VMM_PAUSED) {
		snprintf(err, errlen,
			 "The microVM is %s: pause it before creating a snapshot.",
			 vmm_state_name(vmm->state));
		rc = -EINVAL;
	} else {
		rc = vm_snapshot_create(vmm->vm, t, state_path, mem_path, err,
					errlen);
	}
	pthread_mutex_unlock(&vmm->lock);
	return rc;
}

/* Firecracker's network_overrides: [{"iface_id", "host_dev_name"}]. */
static int net_overrides(json_t *nets, struct vm_snapshot_load *load,
			 char *err, size_t errlen)
{
	static const char *const fields[] = { "iface_id", "host_dev_name",
					      NULL };
	size_t i;
	json_t *o;

	if (!json_is_array(nets)) {
		snprintf(err, errlen, "network_overrides must be an array.");
		return -EINVAL;
	}
	if (json_array_size(nets) > VM_MAX_NETS) {
		snprintf(err, errlen,
			 "network_overrides: a microVM has at most %d network interfaces.",
			 VM_MAX_NETS);
		return -EINVAL;
	}
	json_array_foreach(nets, i, o) {
		struct vm_net_override *ov = &load->net_overrides[i];
		const char *id = NULL, *dev = NULL;
		int rc;

		if (!json_is_object(o)) {
			snprintf(err, errlen,
				 "network_overrides[%zu] must be an object.", i);
			return -EINVAL;
		}
		rc = only_fields(o, fields, "network_overrides", err, errlen);
		if (!rc)
			rc = string_field(o, "iface_id", true, &id, err, errlen);
		if (!rc)
			rc = string_field(o, "host_dev_name", true, &dev, err,
					  errlen);
		if (rc)
			return rc;
		if (!id[0] || strlen(id) >= sizeof(ov->iface_id) || !dev[0] ||
		    strlen(dev) >= sizeof(ov->host_dev_name)) {
			snprintf(err, errlen,
				 "network_overrides[%zu]: iface_id must have 1 to %zu characters and host_dev_name 1 to 15.",
				 i, sizeof(ov->iface_id) - 1);
			return -EINVAL;
		}
		snprintf(ov->iface_id, sizeof(ov->iface_id), "%s", id);
		snprintf(ov->host_dev_name, sizeof(ov->host_dev_name), "%s",
			 dev);
		load->n_net_overrides++;
	}
	return 0;
}

static int snapshot_load(struct vmm *vmm, json_t *body, char *err,
			 size_t errlen)
{
	static const char *const fields[] = {
		"snapshot_path", "mem_file_path", "mem_backend",
		"enable_diff_snapshots", "track_dirty_pages", "resume_vm",
		"network_overrides", "vsock_override", NULL
	};
	static const char *const backend_fields[] = { "backend_type",
						      "backend_path", NULL };
	static const char *const vsock_fields[] = { "uds_path", NULL };
	static struct vm_snapshot_load load; /* requests are serialised */
	json_t *backend = json_object_get(body, "mem_backend");
	json_t *vsock = json_object_get(body, "vsock_override");
	json_t *nets = json_object_get(body, "network_overrides");
	const char *state_path, *mem_file = NULL, *type = NULL, *path = NULL;
	const char *uds = NULL;
	struct vm *vm = NULL;
	uint64_t request_ns = ember_now_ns();
	int rc = only_fields(body, fields, "PUT /snapshot/load", err, errlen);

	memset(&load, 0, sizeof(load));
	load.request_ns = request_ns;
	if (!rc)
		rc = string_field(body, "snapshot_path", true, &state_path,
				  err, errlen);
	if (!rc)
		rc = string_field(body, "mem_file_path", false, &mem_file, err,
				  errlen);
	if (!rc)
		rc = bool_field(body, "enable_diff_snapshots",
				&load.track_dirty_pages, err, errlen);
	if (!rc)
		rc = bool_field(body, "track_dirty_pages",
				&load.track_dirty_pages, err, errlen);
	if (!rc)
		rc = bool_field(body, "resume_vm", &load.resume_vm, err,
				errlen);
	if (rc)
		return rc;
	if (!!backend == !!mem_file) {
		snprintf(err, errlen,
			 "Give exactly one of mem_backend and mem_file_path.");
		return -EINVAL;
	}
	if (backend) {
		if (!json_is_object(backend)) {
			snprintf(err, errlen, "mem_backend must be an object.");
			return -EINVAL;
		}
		rc = only_fields(backend, backend_fields, "mem_backend", err,
				 errlen);
		if (!rc)
			rc = string_field(backend, "backend_type", true, &type,
					  err, errlen);
		if (!rc)
			rc = string_field(backend, "backend_path", true, &path,
					  err, errlen);
		if (rc)
			return rc;
		if (!strcmp(type, "File")) {
			load.backend = VM_MEM_FILE;
		} else if (!strcmp(type, "Uffd")) {
			load.backend = VM_MEM_UFFD;
		} else {
			snprintf(err, errlen,
				 "backend_type must be \"File\" or \"Uffd\", not \"%s\".",
				 type);
			return -EINVAL;
		}
	} else {
		load.backend = VM_MEM_FILE;
		path = mem_file;
	}
	if (vsock) {
		if (!json_is_object(vsock)) {
			snprintf(err, errlen, "vsock_override must be an object.");
			return -EINVAL;
		}
		rc = only_fields(vsock, vsock_fields, "vsock_override", err,
				 errlen);
		if (!rc)
			rc = string_field(vsock, "uds_path", true, &uds, err,
					  errlen);
		if (rc)
			return rc;
		snprintf(load.vsock_uds_path, sizeof(load.vsock_uds_path),
			 "%s", uds);
	}
	if (nets) {
		rc = net_overrides(nets, &load, err, errlen);
		if (rc)
			return rc;
	}
	snprintf(load.snapshot_path, sizeof(load.snapshot_path), "%s",
		 state_path);
	snprintf(load.backend_path, sizeof(load.backend_path), "%s", path);
	pthread_mutex_lock(&vmm->lock);
	snprintf(load.id, sizeof(load.id), "%s", vmm->cfg.vm.id);
	snprintf(load.serial_out_path, sizeof(load.serial_out_path), "%s",
		 vmm->cfg.vm.serial_out_path);
	if (vmm->state != VMM_NOT_STARTED) {
		snprintf(err, errlen,
			 "The microVM is %s: a snapshot can only be loaded into a new ember-vmm.",
			 vmm_state_name(vmm->state));
		rc = -EINVAL;
	} else if (vmm->configured) {
		snprintf(err, errlen,
			 "The microVM has been configured for a cold boot: a snapshot can no longer be loaded.");
		rc = -EINVAL;
	} else {
		rc = vm_snapshot_load(&load, &vm, err, errlen);
	}
	if (!rc) {
		config_show_loaded(&vmm->cfg, vm_get_config(vm));
		vmm->vm = vm;
		vmm->state = load.resume_vm ? VMM_RUNNING : VMM_PAUSED;
		wake_main(vmm);
	}
	pthread_mutex_unlock(&vmm->lock);
	return rc;
}

static void route(struct vmm *vmm, const struct ember_http_request *req,
		  struct ember_http_response *resp)
{
	const struct route *r;
	const char *id = "";
	char err[ERR_MAX];
	json_t *body = NULL;
	int rc;

	r = find_route(req->path, &id);
	if (!r) {
		ember_http_reply_error(resp, 404, "No such resource: %s",
				       req->path);
		return;
	}
	if (!method_allowed(r, req->method)) {
		ember_http_reply_error(
		    resp, 405, "Method %s is not allowed on %s (allowed: %s).",
		    req->method, req->path, r->methods);
		resp->allow = r->methods;
		return;
	}
	if ((r->kind == R_DRIVE || r->kind == R_NET) && id[0] == '\0') {
		ember_http_reply_error(
		    resp, 400, "Missing the %s id in the path.",
		    r->kind == R_DRIVE ? "drive" : "interface");
		return;
	}
	switch (r->kind) {
	case R_ROOT:
		get_root(vmm, resp);
		return;
	case R_VM_CONFIG:
		ember_http_reply_json(resp, 200, config_full_json(&vmm->cfg));
		return;
	case R_MACHINE:
		if (strcmp(req->method, "GET") == 0) {
			ember_http_reply_json(resp, 200,
					      config_machine_json(&vmm->cfg));
			return;
		}
		break;
	default:
		break;
	}

	rc = ember_http_body_object(req, &body, err, sizeof(err));
	if (rc < 0) {
		ember_http_reply_error(resp, 400, "%s", err);
		return;
	}
	if (r->kind == R_ACTIONS) {
		do_action(vmm, body, resp);
		json_decref(body);
		return;
	}
	if (r->kind == R_VM || r->kind == R_SNAPSHOT_CREATE ||
	    r->kind == R_SNAPSHOT_LOAD) {
		err[0] = '\0';
		rc = r->kind == R_VM		  ? patch_vm(vmm, body, err, sizeof(err))
		     : r->kind == R_SNAPSHOT_CREATE ? snapshot_create(vmm, body, err,
								     sizeof(err))
						  : snapshot_load(vmm, body, err,
								  sizeof(err));
		json_decref(body);
		if (rc < 0)
			ember_http_reply_error(resp, 400, "%s", err);
		else
			ember_http_reply_empty(resp, 204);
		return;
	}
	/* Requests are serialised on the API thread; the lock keeps the main
	 * thread's reads consistent. */
	pthread_mutex_lock(&vmm->lock);
	rc = configure(vmm, r, id, req->method, body, err, sizeof(err));
	if (rc == 0 && r->kind != R_LOGGER)
		vmm->configured = true;
	pthread_mutex_unlock(&vmm->lock);
	json_decref(body);
	if (rc < 0)
		ember_http_reply_error(resp, 400, "%s", err);
	else
		ember_http_reply_empty(resp, 204);
}

void api_handle(void *ctx, const struct ember_http_request *req,
		struct ember_http_response *resp)
{
	struct vmm *vmm = ctx;
	const char *fault = NULL;
	json_t *j;

	route(vmm, req, resp);
	if (resp->status >= 400 && resp->body) {
		j = json_loads(resp->body, 0, NULL);
		fault = json_string_value(json_object_get(j, "fault_message"));
		olog_warn(vmm->cfg.vm.id, "%s %s: %u %s", req->method,
			  req->path, resp->status, fault ? fault : "");
		json_decref(j);
	} else {
		olog_debug(vmm->cfg.vm.id, "%s %s: %u", req->method, req->path,
			   resp->status);
	}
}

int api_start(struct vmm *vmm, const char *sock_path)
{
	const char *id = vmm->cfg.vm.id;
	int fd, rc;

	if (strlen(sock_path) >= sizeof(vmm->sock_path)) {
		olog_error(id, "API socket path %s is too long", sock_path);
		return -ENAMETOOLONG;
	}
	fd = ember_http_listen_unix(sock_path);
	if (fd < 0) {
		olog_error(id, "cannot listen on %s: %s", sock_path,
			   strerror(-fd));
		return fd;
	}
	strcpy(vmm->sock_path, sock_path);
	rc = ember_http_server_start(fd, api_handle, vmm, &vmm->http);
	if (rc < 0) {
		olog_error(id, "cannot start the API server on %s: %s",
			   vmm->sock_path, strerror(-rc));
		unlink(sock_path);
		vmm->sock_path[0] = '\0';
		return rc;
	}
	olog_info(id, "API listening on %s", sock_path);
	return 0;
}
