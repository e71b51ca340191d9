/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ember-vmm's configuration: Firecracker's request bodies and config file,
 * parsed and validated into a struct vm_config (vm.h). Pure functions over
 * jansson objects, shared by the API (api.c) and --config-file (main.c),
 * and testable without KVM.
 *
 * Every setter validates the whole request first and changes the
 * configuration only when all of it is good: a rejected request leaves the
 * configuration as it was. On failure a setter returns -EINVAL (or -errno of
 * a file check) and writes a message for the user into err.
 *
 * Rules beyond the field types:
 *   - unknown fields are rejected; Firecracker fields ember-vmm does not
 *     implement (rate limiters, partuuid, ...) are rejected by name, except
 *     where only their default value is given;
 *   - kernel, initrd and drive files must exist and be readable (and
 *     writable for a read-write drive) when the request is made;
 *   - at most one root device; it is always drives[0], so the guest sees it
 *     as /dev/vda, as Firecracker orders it;
 *   - vcpu_count 1..VM_MAX_VCPUS, 1 or even with smt; mem_size_mib from 1 to
 *     the host's physical memory.
 */
#ifndef EMBER_VMM_CONFIG_H
#define EMBER_VMM_CONFIG_H

#include "vm.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define VMM_DEFAULT_VCPUS   1
#define VMM_DEFAULT_MEM_MIB 128

/* PUT /logger: ember-vmm logs in its own format (include/ember/log.h);
 * show_level and show_log_origin are recorded and reported only. */
struct vmm_logger {
	bool present;
	char log_path[PATH_MAX];
	char level[16]; /* as given, e.g. "Info" */
	bool show_level;
	bool show_log_origin;
};

struct vmm_config {
	struct vm_config vm;
	struct vmm_logger logger;
};

/* Firecracker's defaults: 1 vCPU, 128 MiB, no devices. */
void config_init(struct vmm_config *cfg, const char *id);

int config_set_boot_source(struct vmm_config *cfg, json_t *body, char *err,
			   size_t errlen);
/* PUT replaces the whole machine configuration (vcpu_count and mem_size_mib
 * required); PATCH (patch = true) changes only the fields given. */
int config_set_machine(struct vmm_config *cfg, json_t *body, bool patch,
		       char *err, size_t errlen);
/* path_id: the {drive_id} of the URL; the body's drive_id must match. */
int config_put_drive(struct vmm_config *cfg, const char *path_id, json_t *body,
		     char *err, size_t errlen);
int config_put_net(struct vmm_config *cfg, const char *path_id, json_t *body,
		   char *err, size_t errlen);
int config_set_vsock(struct vmm_config *cfg, json_t *body, char *err,
		     size_t errlen);
int config_set_entropy(struct vmm_config *cfg, json_t *body, char *err,
		       size_t errlen);
int config_set_logger(struct vmm_config *cfg, json_t *body, char *err,
		      size_t errlen);

/* A whole Firecracker config file ("boot-source", "drives", ...) applied on
 * top of cfg. boot-source is required. */
int config_load_json(struct vmm_config *cfg, json_t *root, char *err,
		     size_t errlen);
int config_load_file(struct vmm_config *cfg, const char *path, char *err,
		     size_t errlen);

/* What InstanceStart needs beyond the individual requests: a boot source
 * whose kernel file looks like an ELF64 vmlinux or a bzImage. */
int config_check_startable(const struct vmm_config *cfg, char *err,
			   size_t errlen);

/* After a snapshot load: GET /machine-config and /vm/config show the
 * loaded machine (vCPUs, memory, drives, interfaces, vsock, entropy); the
 * boot source stays unset (a snapshot has none), the id and the command
 * line's settings stay as they are. */
void config_show_loaded(struct vmm_config *cfg, const struct vm_config *vm);

/* GET /machine-config and GET /vm/config (new references). */
json_t *config_machine_json(const struct vmm_config *cfg);
json_t *config_full_json(const struct vmm_config *cfg);

/* The host's physical memory in MiB (the upper bound of mem_size_mib). */
uint64_t config_host_mem_mib(void);

#endif
