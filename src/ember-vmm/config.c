// SPDX-License-Identifier: Apache-2.0
/*
 * Validation of Firecracker's configuration objects (config.h). Each object
 * is first checked against a table of its fields (names, types, required,
 * unsupported), then its values are checked, then it is applied.
 */
#include "config.h"

#include <ember/log.h>
#include <ember/util.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum field_type {
	FT_STRING,
	FT_BOOL,
	FT_UINT,
	FT_UNSUPPORTED,	 /* Firecracker has it, ember-vmm does not */
	FT_DEFAULT_ONLY, /* a string: only the values in accepted */
};

struct field {
	const char *name;
	enum field_type type;
	bool required;
	const char *accepted[3];
};

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen,
						      const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const struct field *find_field(const struct field *fields, size_t n,
				      const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(fields[i].name, name) == 0)
			return &fields[i];
	return NULL;
}

static bool accepted_value(const struct field *f, const char *v)
{
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(f->accepted) && f->accepted[i];
	     i++)
		if (strcmp(f->accepted[i], v) == 0)
			return true;
	return false;
}

/* Checks names, types and presence of obj's fields. A JSON null counts as
 * an absent field, as serde's Option does in Firecracker. With
 * ignore_required (PATCH), required fields may be absent. */
static int check_fields(const char *what, json_t *obj,
			const struct field *fields, size_t n,
			bool ignore_required, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	if (!json_is_object(obj))
		return fail(err, errlen, "%s: expected a JSON object.", what);
	json_object_foreach (obj, key, v) {
		const struct field *f = find_field(fields, n, key);

		if (!f)
			return fail(err, errlen, "%s: unknown field \"%s\".",
				    what, key);
		if (json_is_null(v))
			continue;
		switch (f->type) {
		case FT_STRING:
			if (!json_is_string(v))
				return fail(
				    err, errlen,
				    "%s: field \"%s\" must be a string.", what,
				    key);
			break;
		case FT_BOOL:
			if (!json_is_boolean(v))
				return fail(
				    err, errlen,
				    "%s: field \"%s\" must be a boolean.", what,
				    key);
			break;
		case FT_UINT:
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return fail(
				    err, errlen,
				    "%s: field \"%s\" must be a non-negative integer.",
				    what, key);
			break;
		case FT_UNSUPPORTED:
			return fail(
			    err, errlen,
			    "%s: field \"%s\" is not supported by ember-vmm.",
			    what, key);
		case FT_DEFAULT_ONLY:
			if (!json_is_string(v))
				return fail(
				    err, errlen,
				    "%s: field \"%s\" must be a string.", what,
				    key);
			if (!accepted_value(f, json_string_value(v)))
				return fail(
				    err, errlen,
				    "%s: %s \"%s\" is not supported by ember-vmm (use \"%s\").",
				    what, key, json_string_value(v),
				    f->accepted[0]);
			break;
		}
	}
	for (size_t i = 0; i < n && !ignore_required; i++) {
		v = json_object_get(obj, fields[i].name);
		if (fields[i].required && (!v || json_is_null(v)))
			return fail(err, errlen,
				    "%s: missing required field \"%s\".", what,
				    fields[i].name);
	}
	return 0;
}

static const char *get_str(json_t *obj, const char *name)
{
	return json_string_value(json_object_get(obj, name));
}

static bool has(json_t *obj, const char *name)
{
	json_t *v = json_object_get(obj, name);

	return v && !json_is_null(v);
}

static bool get_bool(json_t *obj, const char *name, bool def)
{
	return has(obj, name) ? json_is_true(json_object_get(obj, name)) : def;
}

static uint64_t get_uint(json_t *obj, const char *name, uint64_t def)
{
	return has(obj, name)
		   ? (uint64_t)json_integer_value(json_object_get(obj, name))
		   : def;
}

static int copy_str(char *dst, size_t dstlen, const char *src, const char *what,
		    const char *field, char *err, size_t errlen)
{
	if (strlen(src) >= dstlen)
		return fail(err, errlen,
			    "%s: field \"%s\" is too long (at most %zu bytes).",
			    what, field, dstlen - 1);
	strcpy(dst, src);
	return 0;
}

/* Firecracker's rule for drive and interface ids, plus '-'. */
static int check_id(const char *what, const char *field, const char *id,
		    char *err, size_t errlen)
{
	size_t len = strlen(id);

	if (len == 0 || len >= VM_ID_MAX)
		return fail(err, errlen, "%s: %s must have 1 to %d characters.",
			    what, field, VM_ID_MAX - 1);
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)id[i]) && id[i] != '_' &&
		    id[i] != '-')
			return fail(
			    err, errlen,
			    "%s: %s \"%s\" may contain only letters, digits, '_' and '-'.",
			    what, field, id);
	return 0;
}

/* The file must exist, be a regular file (or a block device when
 * allow_blockdev) and open for reading, and for writing when writable. */
static int check_file(const char *what, const char *field, const char *path,
		      bool writable, bool allow_blockdev, char *err,
		      size_t errlen)
{
	struct stat st;
	int fd, rc;

	if (path[0] == '\0')
		return fail(err, errlen, "%s: %s must not be empty.", what,
			    field);
	if (stat(path, &st) < 0) {
		rc = -errno;
		fail(err, errlen, "%s: %s %s: %s", what, field, path,
		     strerror(errno));
		return rc;
	}
	if (!S_ISREG(st.st_mode) && !(allow_blockdev && S_ISBLK(st.st_mode)))
		return fail(err, errlen, "%s: %s %s is not a regular file%s.",
			    what, field, path,
			    allow_blockdev ? " or block device" : "");
	fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		fail(err, errlen, "%s: %s %s cannot be opened for %s: %s", what,
		     field, path, writable ? "reading and writing" : "reading",
		     strerror(errno));
		return rc;
	}
	close(fd);
	return 0;
}

void config_init(struct vmm_config *cfg, const char *id)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->vm.id, sizeof(cfg->vm.id), "%s", id ? id : "");
	cfg->vm.vcpu_count = VMM_DEFAULT_VCPUS;
	cfg->vm.mem_size_mib = VMM_DEFAULT_MEM_MIB;
}

uint64_t config_host_mem_mib(void)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	long page_size = sysconf(_SC_PAGESIZE);

	if (pages <= 0 || page_size <= 0)
		return UINT64_MAX >> 20;
	return ((uint64_t)pages * (uint64_t)page_size) >> 20;
}

int config_set_boot_source(struct vmm_config *cfg, json_t *body, char *err,
			   size_t errlen)
{
	static const struct field fields[] = {
	    {"kernel_image_path", FT_STRING, true, {NULL}},
	    {"initrd_path", FT_STRING, false, {NULL}},
	    {"boot_args", FT_STRING, false, {NULL}},
	};
	const char *what = "boot-source";
	struct vm_config next = cfg->vm;
	const char *s;
	int rc;

	rc = check_fields(what, body, fields, EMBER_ARRAY_SIZE(fields), false,
			  err, errlen);
	if (rc < 0)
		return rc;
	rc = copy_str(next.kernel_image_path, sizeof(next.kernel_image_path),
		      get_str(body, "kernel_image_path"), what,
		      "kernel_image_path", err, errlen);
	if (rc < 0)
		return rc;
	rc = check_file(what, "kernel_image_path", next.kernel_image_path,
			false, false, err, errlen);
	if (rc < 0)
		return rc;
	s = get_str(body, "initrd_path");
	next.initrd_path[0] = '\0';
	if (s) {
		rc = copy_str(next.initrd_path, sizeof(next.initrd_path), s,
			      what, "initrd_path", err, errlen);
		if (rc < 0)
			return rc;
		rc = check_file(what, "initrd_path", s, false, false, err,
				errlen);
		if (rc < 0)
			return rc;
	}
	s = get_str(body, "boot_args");
	rc = copy_str(next.boot_args, sizeof(next.boot_args), s ? s : "", what,
		      "boot_args", err, errlen);
	if (rc < 0)
		return rc;
	next.has_boot_source = true;
	cfg->vm = next;
	return 0;
}

int config_set_machine(struct vmm_config *cfg, json_t *body, bool patch,
		       char *err, size_t errlen)
{
	static const struct field fields[] = {
	    {"vcpu_count", FT_UINT, true, {NULL}},
	    {"mem_size_mib", FT_UINT, true, {NULL}},
	    {"smt", FT_BOOL, false, {NULL}},
	    {"track_dirty_pages", FT_BOOL, false, {NULL}},
	    {"cpu_template", FT_DEFAULT_ONLY, false, {"None"}},
	    {"huge_pages", FT_DEFAULT_ONLY, false, {"None"}},
	};
	const char *what = "machine-config";
	struct vm_config *vm = &cfg->vm;
	uint64_t vcpus, mem, host_mem;
	bool smt, dirty;
	int rc;

	rc = check_fields(what, body, fields, EMBER_ARRAY_SIZE(fields), patch,
			  err, errlen);
	if (rc < 0)
		return rc;
	vcpus = get_uint(body, "vcpu_count", vm->vcpu_count);
	mem = get_uint(body, "mem_size_mib", vm->mem_size_mib);
	smt = get_bool(body, "smt", patch ? vm->smt : false);
	dirty = get_bool(body, "track_dirty_pages",
			 patch ? vm->track_dirty_pages : false);

	if (vcpus < 1 || vcpus > VM_MAX_VCPUS)
		return fail(
		    err, errlen,
		    "%s: vcpu_count must be between 1 and %d, not %llu.", what,
		    VM_MAX_VCPUS, (unsigned long long)vcpus);
	if (smt && vcpus > 1 && vcpus % 2)
		return fail(
		    err, errlen,
		    "%s: with smt, vcpu_count must be 1 or even, not %llu.",
		    what, (unsigned long long)vcpus);
	host_mem = config_host_mem_mib();
	if (mem < 1 || mem > host_mem)
		return fail(
		    err, errlen,
		    "%s: mem_size_mib must be between 1 and the host's memory (%llu MiB), not %llu.",
		    what, (unsigned long long)host_mem,
		    (unsigned long long)mem);
	vm->vcpu_count = (unsigned)vcpus;
	vm->mem_size_mib = mem;
	vm->smt = smt;
	vm->track_dirty_pages = dirty;
	return 0;
}

static int find_drive(const struct vm_config *vm, const char *id)
{
	for (unsigned i = 0; i < vm->n_drives; i++)
		if (strcmp(vm->drives[i].drive_id, id) == 0)
			return (int)i;
	return -1;
}

/* Keeps the root device, if any, at drives[0]; the others keep their
 * order. */
static void root_first(struct vm_config *vm)
{
	for (unsigned i = 1; i < vm->n_drives; i++) {
		if (vm->drives[i].is_root_device) {
			struct vm_drive root = vm->drives[i];

			memmove(&vm->drives[1], &vm->drives[0],
				i * sizeof(vm->drives[0]));
			vm->drives[0] = root;
			return;
		}
	}
}

int config_put_drive(struct vmm_config *cfg, const char *path_id, json_t *body,
		     char *err, size_t errlen)
{
	static const struct field fields[] = {
	    {"drive_id", FT_STRING, true, {NULL}},
	    {"path_on_host", FT_STRING, true, {NULL}},
	    {"is_root_device", FT_BOOL, true, {NULL}},
	    {"is_read_only", FT_BOOL, false, {NULL}},
	    {"cache_type", FT_DEFAULT_ONLY, false, {"Unsafe", "Writeback"}},
	    {"io_engine", FT_DEFAULT_ONLY, false, {"Sync"}},
	    {"partuuid", FT_UNSUPPORTED, false, {NULL}},
	    {"rate_limiter", FT_UNSUPPORTED, false, {NULL}},
	    {"socket", FT_UNSUPPORTED, false, {NULL}},
	};
	struct vm_config *vm = &cfg->vm;
	struct vm_drive d = {0};
	char what[VM_ID_MAX + 16];
	const char *body_id;
	int rc, idx;

	snprintf(what, sizeof(what), "drive %s", path_id);
	rc = check_id(what, "drive_id", path_id, err, errlen);
	if (rc < 0)
		return rc;
	rc = check_fields(what, body, fields, EMBER_ARRAY_SIZE(fields), false,
			  err, errlen);
	if (rc < 0)
		return rc;
	body_id = get_str(body, "drive_id");
	if (strcmp(body_id, path_id) != 0)
		return fail(
		    err, errlen,
		    "%s: drive_id \"%s\" in the body does not match the drive id in the path.",
		    what, body_id);
	strcpy(d.drive_id, path_id);
	rc = copy_str(d.path_on_host, sizeof(d.path_on_host),
		      get_str(body, "path_on_host"), what, "path_on_host", err,
		      errlen);
	if (rc < 0)
		return rc;
	d.is_root_device = get_bool(body, "is_root_device", false);
	d.is_read_only = get_bool(body, "is_read_only", false);

	idx = find_drive(vm, path_id);
	if (d.is_root_device) {
		for (unsigned i = 0; i < vm->n_drives; i++)
			if (vm->drives[i].is_root_device && (int)i != idx)
				return fail(
				    err, errlen,
				    "%s: drive %s is already the root device; a microVM has only one.",
				    what, vm->drives[i].drive_id);
	}
	if (idx < 0 && vm->n_drives >= VM_MAX_DRIVES)
		return fail(err, errlen, "%s: a microVM has at most %d drives.",
			    what, VM_MAX_DRIVES);
	rc = check_file(what, "path_on_host", d.path_on_host, !d.is_read_only,
			true, err, errlen);
	if (rc < 0)
		return rc;

	if (idx < 0)
		idx = (int)vm->n_drives++;
	vm->drives[idx] = d;
	root_first(vm);
	return 0;
}

static bool valid_mac(const char *s)
{
	if (strlen(s) != 17)
		return false;
	for (int i = 0; i < 17; i++) {
		if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

int config_put_net(struct vmm_config *cfg, const char *path_id, json_t *body,
		   char *err, size_t errlen)
{
	static const struct field fields[] = {
	    {"iface_id", FT_STRING, true, {NULL}},
	    {"host_dev_name", FT_STRING, true, {NULL}},
	    {"guest_mac", FT_STRING, false, {NULL}},
	    {"mtu", FT_UNSUPPORTED, false, {NULL}},
	    {"rx_rate_limiter", FT_UNSUPPORTED, false, {NULL}},
	    {"tx_rate_limiter", FT_UNSUPPORTED, false, {NULL}},
	};
	struct vm_config *vm = &cfg->vm;
	struct vm_net n = {0};
	char what[VM_ID_MAX + 32];
	const char *s;
	int rc, idx = -1;

	snprintf(what, sizeof(what), "network interface %s", path_id);
	rc = check_id(what, "iface_id", path_id, err, errlen);
	if (rc < 0)
		return rc;
	rc = check_fields(what, body, fields, EMBER_ARRAY_SIZE(fields), false,
			  err, errlen);
	if (rc < 0)
		return rc;
	s = get_str(body, "iface_id");
	if (strcmp(s, path_id) != 0)
		return fail(
		    err, errlen,
		    "%s: iface_id \"%s\" in the body does not match the interface id in the path.",
		    what, s);
	strcpy(n.iface_id, path_id);
	s = get_str(body, "host_dev_name");
	if (s[0] == '\0' || strlen(s) >= 16)
		return fail(err, errlen,
			    "%s: host_dev_name must have 1 to 15 characters.",
			    what);
	strcpy(n.host_dev_name, s);
	s = get_str(body, "guest_mac");
	if (s) {
		if (!valid_mac(s))
			return fail(
			    err, errlen,
			    "%s: guest_mac \"%s\" is not a MAC address like 06:00:ac:10:00:02.",
			    what, s);
		strcpy(n.guest_mac, s);
	}
	for (unsigned i = 0; i < vm->n_nets; i++) {
		const struct vm_net *o = &vm->nets[i];

		if (strcmp(o->iface_id, path_id) == 0) {
			idx = (int)i;
			continue;
		}
		if (strcmp(o->host_dev_name, n.host_dev_name) == 0)
			return fail(
			    err, errlen,
			    "%s: host_dev_name %s is already used by interface %s.",
			    what, n.host_dev_name, o->iface_id);
		if (n.guest_mac[0] &&
		    strcasecmp(o->guest_mac, n.guest_mac) == 0)
			return fail(
			    err, errlen,
			    "%s: guest_mac %s is already used by interface %s.",
			    what, n.guest_mac, o->iface_id);
	}
	if (idx < 0 && vm->n_nets >= VM_MAX_NETS)
		return fail(err, errlen,
			    "%s: a microVM has at most %d network interfaces.",
			    what, VM_MAX_NETS);
	if (idx < 0)
		idx = (int)vm->n_nets++;
	vm->nets[idx] = n;
	return 0;
}

int config_set_vsock(struct vmm_config *cfg, json_t *body, char *err,
		     size_t errlen)
{
	static const struct field fields[] = {
	    {"guest_cid", FT_UINT, true, {NULL}},
	    {"uds_path", FT_STRING, true, {NULL}},
	    {"vsock_id", FT_STRING, false, {NULL}}, /* deprecated */
	};
	const char *what = "vsock";
	struct sockaddr_un addr;
	uint64_t cid;
	const char *path;
	int rc;

	rc = check_fields(what, body, fields, EMBER_ARRAY_SIZE(fields), false,
			  err, errlen);
	if (rc < 0)
		return rc;
	cid = get_uint(body, "guest_cid", 0);
	/* 0, 1 and 2 are the hypervisor, local and host; ~0 means any. */
	if (cid < 3 || cid >= UINT32_MAX)
		return fail(err, errlen,
			    "%s: guest_cid must be between 3 and %u, not %llu.",
			    what, UINT32_MAX - 1, (unsigned long long)cid);
	path = get_str(body, "uds_path");
	if (path[0] == '\0' || strlen(path) >= sizeof(addr.sun_path))
		return fail(err, errlen,
			    "%s: uds_path must have 1 to %zu characters.", what,
			    sizeof(addr.sun_path) - 1);
	cfg->vm.vsock.present = true;
	cfg->vm.vsock.guest_cid = (uint32_t)cid;
	strcpy(cfg->vm.vsock.uds_path, path);
	return 0;
}

int config_set_entropy(struct vmm_config *cfg, json_t *body, char *err,
		       size_t errlen)
{
	static const struct field fields[] = {
	    {"rate_limiter", FT_UNSUPPORTED, false, {NULL}},
	};
	int rc;

	rc = check_fields("entropy", body, fields, EMBER_ARRAY_SIZE(fields),
			  false, err, errlen);
	if (rc < 0)
		return rc;
	cfg->vm.entropy = true;
	return 0;
}

int config_set_logger(struct vmm_config *cfg, json_t *body, char *err,
		      size_t errlen)
{
	static const struct field fields[] = {
	    {"log_path", FT_STRING, false, {NULL}},
	    {"level", FT_STRING, false, {NULL}},
	    {"show_level", FT_BOOL, false, {NULL}},
	    {"show_log_origin", FT_BOOL, false, {NULL}},
	    {"module", FT_UNSUPPORTED, false, {NULL}},
	};
	const char *what = "logger";
	struct vmm_logger next = {.present = true};
	enum ember_log_level level;
	const char *s;
	int rc;

	rc = check_fields(what, body, fields, EMBER_ARRAY_SIZE(fields), false,
			  err, errlen);
	if (rc < 0)
		return rc;
	s = get_str(body, "log_path");
	if (s) {
		if (s[0] == '\0')
			return fail(err, errlen,
				    "%s: log_path must not be empty.", what);
		rc = copy_str(next.log_path, sizeof(next.log_path), s, what,
			      "log_path", err, errlen);
		if (rc < 0)
			return rc;
	}
	s = get_str(body, "level");
	if (s) {
		if (ember_log_parse_level(s, &level) < 0 ||
		    strlen(s) >= sizeof(next.level))
			return fail(
			    err, errlen,
			    "%s: level \"%s\" is not one of Error, Warning, Info, Debug, Trace.",
			    what, s);
		strcpy(next.level, s);
	}
	next.show_level = get_bool(body, "show_level", false);
	next.show_log_origin = get_bool(body, "show_log_origin", false);
	cfg->logger = next;
	return 0;
}

static int load_array(struct vmm_config *cfg, json_t *root, const char *key,
		      const char *id_field,
		      int (*put)(struct vmm_config *, const char *, json_t *,
				 char *, size_t),
		      char *err, size_t errlen)
{
	json_t *arr = json_object_get(root, key), *item;
	size_t i;
	int rc;

	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr))
		return fail(err, errlen, "\"%s\" must be an array.", key);
	json_array_foreach (arr, i, item) {
		const char *id = get_str(item, id_field);

		if (!json_is_object(item))
			return fail(err, errlen,
				    "%s[%zu]: expected a JSON object.", key, i);
		if (!id)
			return fail(
			    err, errlen,
			    "%s[%zu]: missing required field \"%s\" (a string).",
			    key, i, id_field);
		rc = put(cfg, id, item, err, errlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int config_load_json(struct vmm_config *cfg, json_t *root, char *err,
		     size_t errlen)
{
	static const char *const known[] = {
	    "boot-source", "drives",  "machine-config", "network-interfaces",
	    "vsock",	   "entropy", "logger",
	};
	static const char *const unsupported[] = {
	    "balloon",	  "metrics", "mmds-config",
	    "cpu-config", "pmem",    "memory-hotplug",
	};
	struct vmm_config next = *cfg;
	const char *key;
	json_t *v;
	int rc;

	if (!json_is_object(root))
		return fail(err, errlen, "expected a JSON object.");
	json_object_foreach (root, key, v) {
		bool ok = false;

		for (size_t i = 0; i < EMBER_ARRAY_SIZE(known); i++)
			ok = ok || strcmp(key, known[i]) == 0;
		for (size_t i = 0; !ok && i < EMBER_ARRAY_SIZE(unsupported);
		     i++) {
			if (strcmp(key, unsupported[i]) == 0) {
				if (!json_is_null(v))
					return fail(
					    err, errlen,
					    "\"%s\" is not supported by ember-vmm.",
					    key);
				ok = true;
			}
		}
		if (!ok)
			return fail(err, errlen, "unknown key \"%s\".", key);
	}
	v = json_object_get(root, "boot-source");
	if (!v || json_is_null(v))
		return fail(err, errlen,
			    "missing required key \"boot-source\".");
	rc = config_set_boot_source(&next, v, err, errlen);
	if (rc < 0)
		return rc;
	v = json_object_get(root, "machine-config");
	if (v && !json_is_null(v)) {
		rc = config_set_machine(&next, v, false, err, errlen);
		if (rc < 0)
			return rc;
	}
	rc = load_array(&next, root, "drives", "drive_id", config_put_drive,
			err, errlen);
	if (rc < 0)
		return rc;
	rc = load_array(&next, root, "network-interfaces", "iface_id",
			config_put_net, err, errlen);
	if (rc < 0)
		return rc;
	v = json_object_get(root, "vsock");
	if (v && !json_is_null(v)) {
		rc = config_set_vsock(&next, v, err, errlen);
		if (rc < 0)
			return rc;
	}
	v = json_object_get(root, "entropy");
	if (v && !json_is_null(v)) {
		rc = config_set_entropy(&next, v, err, errlen);
		if (rc < 0)
			return rc;
	}
	v = json_object_get(root, "logger");
	if (v && !json_is_null(v)) {
		rc = config_set_logger(&next, v, err, errlen);
		if (rc < 0)
			return rc;
	}
	*cfg = next;
	return 0;
}

int config_load_file(struct vmm_config *cfg, const char *path, char *err,
		     size_t errlen)
{
	char msg[1024];
	json_error_t jerr;
	json_t *root;
	int rc;

	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (jerr.line < 0 || access(path, R_OK) < 0)
			return fail(err, errlen, "config file %s: %s", path,
				    jerr.text);
		return fail(
		    err, errlen,
		    "config file %s: malformed JSON at line %d, column %d: %s",
		    path, jerr.line, jerr.column, jerr.text);
	}
	rc = config_load_json(cfg, root, msg, sizeof(msg));
	json_decref(root);
	if (rc < 0)
		return fail(err, errlen, "config file %s: %s", path, msg);
	return 0;
}

/* A first look at the kernel, so that a wrong file gets a clear message
 * before any machine is built: an ELF64 vmlinux starts with "\x7fELF" and
 * class 2; a bzImage has "HdrS" at 0x202 (Linux boot protocol). The
 * machine's loader checks the rest. */
static int check_kernel_format(const char *path, char *err, size_t errlen)
{
	unsigned char hdr[0x206];
	ssize_t n;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		fail(err, errlen, "Cannot open the kernel %s: %s", path,
		     strerror(errno));
		return rc;
	}
	n = ember_read_full(fd, hdr, sizeof(hdr));
	close(fd);
	if (n < 0) {
		fail(err, errlen, "Cannot read the kernel %s: %s", path,
		     strerror((int)-n));
		return (int)n;
	}
	if (n >= 5 && memcmp(hdr,
			     "\x7f"
			     "ELF",
			     4) == 0) {
		if (hdr[4] != 2)
			return fail(
			    err, errlen,
			    "The kernel %s is a 32-bit ELF file; ember-vmm boots 64-bit kernels only.",
			    path);
		return 0;
	}
	if (n == (ssize_t)sizeof(hdr) && memcmp(hdr + 0x202, "HdrS", 4) == 0)
		return 0;
	return fail(err, errlen,
		    "The kernel %s is neither an ELF vmlinux nor a bzImage.",
		    path);
}

int config_check_startable(const struct vmm_config *cfg, char *err,
			   size_t errlen)
{
	if (!cfg->vm.has_boot_source)
		return fail(
		    err, errlen,
		    "Cannot start the microVM without a boot source: PUT /boot-source first.");
	return check_kernel_format(cfg->vm.kernel_image_path, err, errlen);
}

static json_t *str_or_null(const char *s)
{
	return s[0] ? json_string(s) : json_null();
}

void config_show_loaded(struct vmm_config *cfg, const struct vm_config *vm)
{
	struct vm_config *c = &cfg->vm;

	c->vcpu_count = vm->vcpu_count;
	c->mem_size_mib = vm->mem_size_mib;
	c->smt = vm->smt;
	c->track_dirty_pages = vm->track_dirty_pages;
	memcpy(c->drives, vm->drives, sizeof(c->drives));
	c->n_drives = vm->n_drives;
	memcpy(c->nets, vm->nets, sizeof(c->nets));
	c->n_nets = vm->n_nets;
	c->vsock = vm->vsock;
	c->entropy = vm->entropy;
	c->has_boot_source = false;
}

json_t *config_machine_json(const struct vmm_config *cfg)
{
	return json_pack("{s:I, s:I, s:b, s:b}", "vcpu_count",
			 (json_int_t)cfg->vm.vcpu_count, "mem_size_mib",
			 (json_int_t)cfg->vm.mem_size_mib, "smt", cfg->vm.smt,
			 "track_dirty_pages", cfg->vm.track_dirty_pages);
}

json_t *config_full_json(const struct vmm_config *cfg)
{
	const struct vm_config *vm = &cfg->vm;
	json_t *root = json_object(), *drives = json_array(),
	       *nets = json_array();

	if (vm->has_boot_source)
		json_object_set_new(
		    root, "boot-source",
		    json_pack("{s:s, s:o, s:o}", "kernel_image_path",
			      vm->kernel_image_path, "initrd_path",
			      str_or_null(vm->initrd_path), "boot_args",
			      str_or_null(vm->boot_args)));
	else
		json_object_set_new(root, "boot-source", json_null());
	json_object_set_new(root, "machine-config", config_machine_json(cfg));
	for (unsigned i = 0; i < vm->n_drives; i++) {
		const struct vm_drive *d = &vm->drives[i];

		json_array_append_new(
		    drives,
		    json_pack("{s:s, s:s, s:b, s:b, s:s, s:s}", "drive_id",
			      d->drive_id, "path_on_host", d->path_on_host,
			      "is_root_device", d->is_root_device,
			      "is_read_only", d->is_read_only, "cache_type",
			      "Unsafe", "io_engine", "Sync"));
	}
	json_object_set_new(root, "drives", drives);
	for (unsigned i = 0; i < vm->n_nets; i++) {
		const struct vm_net *n = &vm->nets[i];

		json_array_append_new(
		    nets, json_pack("{s:s, s:s, s:o}", "iface_id", n->iface_id,
				    "host_dev_name", n->host_dev_name,
				    "guest_mac", str_or_null(n->guest_mac)));
	}
	json_object_set_new(root, "network-interfaces", nets);
	json_object_set_new(root, "vsock",
			    vm->vsock.present
				? json_pack("{s:I, s:s}", "guest_cid",
					    (json_int_t)vm->vsock.guest_cid,
					    "uds_path", vm->vsock.uds_path)
				: json_null());
	json_object_set_new(root, "entropy",
			    vm->entropy ? json_object() : json_null());
	if (cfg->logger.present)
		json_object_set_new(
		    root, "logger",
		    json_pack("{s:o, s:o, s:b, s:b}", "log_path",
			      str_or_null(cfg->logger.log_path), "level",
			      str_or_null(cfg->logger.level), "show_level",
			      cfg->logger.show_level, "show_log_origin",
			      cfg->logger.show_log_origin));
	else
		json_object_set_new(root, "logger", json_null());
	return root;
}
