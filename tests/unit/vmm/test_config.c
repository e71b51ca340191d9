// SPDX-License-Identifier: Apache-2.0
/* Unit tests of src/ember-vmm/config.c: every request body and config file
 * ember-vmm accepts or rejects, without KVM. */
#include "config.h"

#include <ember/util.h>

#include "../../test.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/ember-test-vmm-config.XXXXXX";
static char kernel[256], initrd[256], disk[256], disk2[256], rodisk[256];
static char err[1024];

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);

	if (!j) {
		fprintf(stderr, "bad test JSON: %s: %s\n", text, e.text);
		abort();
	}
	return j;
}

/* Formats JSON with the temp paths substituted for %s. */
static json_t *Jf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *Jf(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return J(buf);
}

/* Runs a setter on a JSON body and frees it; returns its result. */
#define RUN(call, body)                                                        \
	({                                                                     \
		json_t *b_ = (body);                                           \
		err[0] = '\0';                                                 \
		int r_ = call;                                                 \
		json_decref(b_);                                               \
		r_;                                                            \
	})

static bool err_has(const char *s)
{
	if (strstr(err, s))
		return true;
	fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", err, s);
	return false;
}

static void make_file(char *path, const char *name, const void *data,
		      size_t len, mode_t mode)
{
	snprintf(path, 256, "%s/%s", tmpdir, name);
	if (ember_write_file_atomic(path, data, len, mode) < 0)
		abort();
}

static void test_defaults(void)
{
	struct vmm_config c;

	config_init(&c, "vm-1");
	CHECK(strcmp(c.vm.id, "vm-1") == 0);
	CHECK(c.vm.vcpu_count == 1 && c.vm.mem_size_mib == 128);
	CHECK(!c.vm.has_boot_source && c.vm.n_drives == 0);
	CHECK(config_check_startable(&c, err, sizeof(err)) < 0);
	CHECK(err_has("boot source"));
}

static void test_boot_source(void)
{
	struct vmm_config c;

	config_init(&c, "t");
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  Jf("{\"kernel_image_path\": \"%s\", \"initrd_path\": \"%s\","
		     " \"boot_args\": \"console=ttyS0\"}",
		     kernel, initrd)) == 0);
	CHECK(c.vm.has_boot_source);
	CHECK(strcmp(c.vm.kernel_image_path, kernel) == 0);
	CHECK(strcmp(c.vm.initrd_path, initrd) == 0);
	CHECK(strcmp(c.vm.boot_args, "console=ttyS0") == 0);
	CHECK(config_check_startable(&c, err, sizeof(err)) == 0);

	/* A second PUT replaces the whole boot source. */
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  Jf("{\"kernel_image_path\": \"%s\"}", kernel)) == 0);
	CHECK(c.vm.initrd_path[0] == '\0' && c.vm.boot_args[0] == '\0');

	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  J("{\"kernel_image_path\": \"/nonexistent/vmlinux\"}")) ==
	      -ENOENT);
	CHECK(err_has("/nonexistent/vmlinux") &&
	      err_has("No such file or directory"));
	/* The failed request left the configuration as it was. */
	CHECK(strcmp(c.vm.kernel_image_path, kernel) == 0);

	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  Jf("{\"kernel_image_path\": \"%s\", \"initrd_path\": "
		     "\"%s/no-initrd\"}",
		     kernel, tmpdir)) < 0);
	CHECK(err_has("initrd_path") && err_has("no-initrd"));
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  Jf("{\"kernel_image_path\": \"%s\"}", tmpdir)) < 0);
	CHECK(err_has("not a regular file"));
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  J("{\"boot_args\": \"quiet\"}")) < 0);
	CHECK(err_has("missing required field \"kernel_image_path\""));
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  J("{\"kernel_image_path\": 7}")) < 0);
	CHECK(err_has("\"kernel_image_path\" must be a string"));
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  Jf("{\"kernel_image_path\": \"%s\", \"kernel\": 1}",
		     kernel)) < 0);
	CHECK(err_has("unknown field \"kernel\""));
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  J("[1, 2]")) < 0);
	CHECK(err_has("JSON object"));
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  J("{\"kernel_image_path\": \"\"}")) < 0);
	CHECK(err_has("must not be empty"));
}

static void test_kernel_format(void)
{
	static char elf32[256], bzimage[256], junk[256];
	unsigned char buf[0x400] = {0};
	struct vmm_config c;

	memcpy(buf,
	       "\x7f"
	       "ELF\x01",
	       5);
	make_file(elf32, "elf32", buf, sizeof(buf), 0644);
	memset(buf, 0, sizeof(buf));
	memcpy(buf + 0x202, "HdrS", 4);
	make_file(bzimage, "bzImage", buf, sizeof(buf), 0644);
	make_file(junk, "junk", "hello", 5, 0644);

	config_init(&c, "t");
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  Jf("{\"kernel_image_path\": \"%s\"}", bzimage)) == 0);
	CHECK(config_check_startable(&c, err, sizeof(err)) == 0);
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  Jf("{\"kernel_image_path\": \"%s\"}", elf32)) == 0);
	CHECK(config_check_startable(&c, err, sizeof(err)) < 0);
	CHECK(err_has(elf32) && err_has("32-bit"));
	CHECK(RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		  Jf("{\"kernel_image_path\": \"%s\"}", junk)) == 0);
	CHECK(config_check_startable(&c, err, sizeof(err)) < 0);
	CHECK(err_has(junk) && err_has("neither an ELF vmlinux nor a bzImage"));
}

static void test_machine(void)
{
	struct vmm_config c;
	char body[256];

	config_init(&c, "t");
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 4, \"mem_size_mib\": 512, "
		    "\"smt\": true, \"track_dirty_pages\": true}")) == 0);
	CHECK(c.vm.vcpu_count == 4 && c.vm.mem_size_mib == 512);
	CHECK(c.vm.smt && c.vm.track_dirty_pages);

	/* PUT resets the optional fields; PATCH keeps what it does not
	 * name. */
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 2, \"mem_size_mib\": 256}")) == 0);
	CHECK(!c.vm.smt && !c.vm.track_dirty_pages);
	CHECK(RUN(config_set_machine(&c, b_, true, err, sizeof(err)),
		  J("{\"mem_size_mib\": 1024}")) == 0);
	CHECK(c.vm.vcpu_count == 2 && c.vm.mem_size_mib == 1024);
	CHECK(RUN(config_set_machine(&c, b_, true, err, sizeof(err)),
		  J("{}")) == 0);
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1, \"mem_size_mib\": 128, "
		    "\"cpu_template\": \"None\", \"huge_pages\": \"None\"}")) ==
	      0);

	config_init(&c, "t");
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 0, \"mem_size_mib\": 128}")) < 0);
	CHECK(err_has("vcpu_count must be between 1 and 32, not 0"));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 100, \"mem_size_mib\": 128}")) < 0);
	CHECK(err_has("vcpu_count must be between 1 and 32, not 100"));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 33, \"mem_size_mib\": 128}")) < 0);
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 32, \"mem_size_mib\": 128}")) == 0);
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": -1, \"mem_size_mib\": 128}")) < 0);
	CHECK(err_has("non-negative integer"));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": \"2\", \"mem_size_mib\": 128}")) < 0);
	CHECK(err_has("\"vcpu_count\" must be a non-negative integer"));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1.5, \"mem_size_mib\": 128}")) < 0);
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 3, \"mem_size_mib\": 128, "
		    "\"smt\": true}")) < 0);
	CHECK(err_has("with smt, vcpu_count must be 1 or even"));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1, \"mem_size_mib\": 128, "
		    "\"smt\": true}")) == 0);
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1, \"mem_size_mib\": 0}")) < 0);
	CHECK(err_has("mem_size_mib must be between 1 and"));
	snprintf(body, sizeof(body),
		 "{\"vcpu_count\": 1, \"mem_size_mib\": %llu}",
		 (unsigned long long)config_host_mem_mib() + 1);
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J(body)) < 0);
	CHECK(err_has("host's memory"));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1, \"mem_size_mib\": 104857600}")) < 0);
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1}")) < 0);
	CHECK(err_has("missing required field \"mem_size_mib\""));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"mem_size_mib\": 128}")) < 0);
	CHECK(err_has("missing required field \"vcpu_count\""));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1, \"mem_size_mib\": 128, "
		    "\"smt\": 1}")) < 0);
	CHECK(err_has("\"smt\" must be a boolean"));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1, \"mem_size_mib\": 128, "
		    "\"vcpus\": 1}")) < 0);
	CHECK(err_has("unknown field \"vcpus\""));
	CHECK(RUN(config_set_machine(&c, b_, false, err, sizeof(err)),
		  J("{\"vcpu_count\": 1, \"mem_size_mib\": 128, "
		    "\"cpu_template\": \"T2\"}")) < 0);
	CHECK(err_has("cpu_template \"T2\" is not supported"));
	CHECK(RUN(config_set_machine(&c, b_, true, err, sizeof(err)),
		  J("{\"vcpu_count\": 0}")) < 0);
	/* None of the rejected requests changed anything. */
	CHECK(c.vm.vcpu_count == 1 && c.vm.mem_size_mib == 128 && c.vm.smt);
}

static json_t *drive(const char *id, const char *path, bool root, bool ro)
{
	return json_pack("{s:s, s:s, s:b, s:b}", "drive_id", id, "path_on_host",
			 path, "is_root_device", root, "is_read_only", ro);
}

static void test_drives(void)
{
	struct vmm_config c;
	json_t *b;

	config_init(&c, "t");
	CHECK(RUN(config_put_drive(&c, "data", b_, err, sizeof(err)),
		  drive("data", disk2, false, false)) == 0);
	CHECK(RUN(config_put_drive(&c, "rootfs", b_, err, sizeof(err)),
		  drive("rootfs", disk, true, false)) == 0);
	/* The root device comes first whatever the order of requests. */
	CHECK(c.vm.n_drives == 2);
	CHECK(strcmp(c.vm.drives[0].drive_id, "rootfs") == 0);
	CHECK(c.vm.drives[0].is_root_device);
	CHECK(strcmp(c.vm.drives[1].drive_id, "data") == 0);

	CHECK(RUN(config_put_drive(&c, "other", b_, err, sizeof(err)),
		  drive("other", disk2, true, false)) < 0);
	CHECK(err_has("rootfs is already the root device"));
	/* Replacing the root device itself is fine. */
	CHECK(RUN(config_put_drive(&c, "rootfs", b_, err, sizeof(err)),
		  drive("rootfs", rodisk, true, true)) == 0);
	CHECK(c.vm.n_drives == 2 && c.vm.drives[0].is_read_only);
	CHECK(strcmp(c.vm.drives[0].path_on_host, rodisk) == 0);

	CHECK(RUN(config_put_drive(&c, "a", b_, err, sizeof(err)),
		  drive("b", disk2, false, false)) < 0);
	CHECK(err_has("does not match"));
	CHECK(RUN(config_put_drive(&c, "bad id", b_, err, sizeof(err)),
		  drive("bad id", disk2, false, false)) < 0);
	CHECK(err_has("may contain only"));
	CHECK(RUN(config_put_drive(&c, "x", b_, err, sizeof(err)),
		  drive("x", "/nonexistent/disk.ext4", false, false)) < 0);
	CHECK(err_has("/nonexistent/disk.ext4"));
	CHECK(RUN(config_put_drive(&c, "x", b_, err, sizeof(err)),
		  drive("x", tmpdir, false, false)) < 0);
	CHECK(err_has("not a regular file or block device"));
	CHECK(RUN(config_put_drive(&c, "x", b_, err, sizeof(err)),
		  J("{\"drive_id\": \"x\", \"is_root_device\": false}")) < 0);
	CHECK(err_has("missing required field \"path_on_host\""));
	b = drive("x", disk2, false, false);
	json_object_set_new(b, "is_root_device", json_string("no"));
	CHECK(RUN(config_put_drive(&c, "x", b_, err, sizeof(err)), b) < 0);
	CHECK(err_has("\"is_root_device\" must be a boolean"));
	b = drive("x", disk2, false, false);
	json_object_set_new(b, "rate_limiter", json_object());
	CHECK(RUN(config_put_drive(&c, "x", b_, err, sizeof(err)), b) < 0);
	CHECK(err_has("\"rate_limiter\" is not supported"));
	b = drive("x", disk2, false, false);
	json_object_set_new(b, "cache_type", json_string("Writeback"));
	json_object_set_new(b, "io_engine", json_string("Sync"));
	json_object_set_new(b, "partuuid", json_null());
	CHECK(RUN(config_put_drive(&c, "x", b_, err, sizeof(err)), b) == 0);
	CHECK(c.vm.n_drives == 3);

	/* Up to VM_MAX_DRIVES drives. */
	for (int i = 0; c.vm.n_drives < VM_MAX_DRIVES; i++) {
		char id[16];

		snprintf(id, sizeof(id), "d%d", i);
		CHECK(RUN(config_put_drive(&c, id, b_, err, sizeof(err)),
			  drive(id, disk2, false, true)) == 0);
	}
	CHECK(RUN(config_put_drive(&c, "one-more", b_, err, sizeof(err)),
		  drive("one-more", disk2, false, true)) < 0);
	CHECK(err_has("at most 8 drives"));
}

static void test_readonly_file(void)
{
	struct vmm_config c;

	/* root may open anything; the writability check only shows as
	 * another user. */
	if (geteuid() == 0)
		return;
	config_init(&c, "t");
	chmod(rodisk, 0444);
	CHECK(RUN(config_put_drive(&c, "r", b_, err, sizeof(err)),
		  drive("r", rodisk, false, false)) < 0);
	CHECK(err_has("reading and writing"));
	CHECK(RUN(config_put_drive(&c, "r", b_, err, sizeof(err)),
		  drive("r", rodisk, false, true)) == 0);
}

static void test_net_vsock_entropy_logger(void)
{
	struct vmm_config c;

	config_init(&c, "t");
	CHECK(RUN(config_put_net(&c, "eth0", b_, err, sizeof(err)),
		  J("{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\", "
		    "\"guest_mac\": \"06:00:ac:10:00:02\"}")) == 0);
	CHECK(c.vm.n_nets == 1 &&
	      strcmp(c.vm.nets[0].host_dev_name, "tap0") == 0);
	CHECK(RUN(config_put_net(&c, "eth1", b_, err, sizeof(err)),
		  J("{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap0\"}")) <
	      0);
	CHECK(err_has("tap0 is already used by interface eth0"));
	CHECK(RUN(config_put_net(&c, "eth1", b_, err, sizeof(err)),
		  J("{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap1\", "
		    "\"guest_mac\": \"06:00:AC:10:00:02\"}")) < 0);
	CHECK(err_has("guest_mac"));
	CHECK(RUN(config_put_net(&c, "eth1", b_, err, sizeof(err)),
		  J("{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap1\", "
		    "\"guest_mac\": \"06:00:ac:10:00\"}")) < 0);
	CHECK(err_has("is not a MAC address"));
	CHECK(RUN(config_put_net(&c, "eth1", b_, err, sizeof(err)),
		  J("{\"iface_id\": \"eth1\", \"host_dev_name\": "
		    "\"a-very-long-tap-name\"}")) < 0);
	CHECK(err_has("1 to 15 characters"));
	CHECK(RUN(config_put_net(&c, "eth1", b_, err, sizeof(err)),
		  J("{\"iface_id\": \"eth1\"}")) < 0);
	CHECK(err_has("missing required field \"host_dev_name\""));
	CHECK(RUN(config_put_net(&c, "eth0", b_, err, sizeof(err)),
		  J("{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap9\"}")) ==
	      0);
	CHECK(c.vm.n_nets == 1 &&
	      strcmp(c.vm.nets[0].host_dev_name, "tap9") == 0);

	CHECK(RUN(config_set_vsock(&c, b_, err, sizeof(err)),
		  J("{\"guest_cid\": 3, \"uds_path\": \"/tmp/v.sock\"}")) == 0);
	CHECK(c.vm.vsock.present && c.vm.vsock.guest_cid == 3);
	CHECK(RUN(config_set_vsock(&c, b_, err, sizeof(err)),
		  J("{\"guest_cid\": 2, \"uds_path\": \"/tmp/v.sock\"}")) < 0);
	CHECK(err_has("guest_cid must be between 3 and"));
	CHECK(RUN(config_set_vsock(&c, b_, err, sizeof(err)),
		  J("{\"guest_cid\": 4294967295, \"uds_path\": \"/v\"}")) < 0);
	CHECK(RUN(config_set_vsock(&c, b_, err, sizeof(err)),
		  J("{\"guest_cid\": 5}")) < 0);
	CHECK(err_has("missing required field \"uds_path\""));
	CHECK(RUN(config_set_vsock(&c, b_, err, sizeof(err)),
		  J("{\"guest_cid\": 5, \"uds_path\": \"\"}")) < 0);
	CHECK(RUN(config_set_vsock(&c, b_, err, sizeof(err)),
		  J("{\"guest_cid\": 7, \"uds_path\": \"/v\", "
		    "\"vsock_id\": \"vsock0\"}")) == 0);
	CHECK(c.vm.vsock.guest_cid == 7);

	CHECK(RUN(config_set_entropy(&c, b_, err, sizeof(err)), J("{}")) == 0);
	CHECK(c.vm.entropy);
	CHECK(RUN(config_set_entropy(&c, b_, err, sizeof(err)),
		  J("{\"rate_limiter\": {\"ops\": {}}}")) < 0);
	CHECK(err_has("not supported"));
	CHECK(RUN(config_set_entropy(&c, b_, err, sizeof(err)),
		  J("{\"seed\": 1}")) < 0);
	CHECK(err_has("unknown field \"seed\""));

	CHECK(RUN(config_set_logger(&c, b_, err, sizeof(err)),
		  J("{\"log_path\": \"/tmp/x.log\", \"level\": \"Debug\", "
		    "\"show_level\": true}")) == 0);
	CHECK(c.logger.present && strcmp(c.logger.level, "Debug") == 0);
	CHECK(c.logger.show_level && !c.logger.show_log_origin);
	CHECK(RUN(config_set_logger(&c, b_, err, sizeof(err)),
		  J("{\"level\": \"Loud\"}")) < 0);
	CHECK(err_has("level \"Loud\" is not one of"));
	CHECK(RUN(config_set_logger(&c, b_, err, sizeof(err)),
		  J("{\"show_level\": \"yes\"}")) < 0);
}

static void test_full_json(void)
{
	struct vmm_config c, back;
	json_t *j;

	config_init(&c, "t");
	CHECK(
	    RUN(config_set_boot_source(&c, b_, err, sizeof(err)),
		Jf("{\"kernel_image_path\": \"%s\", \"boot_args\": \"quiet\"}",
		   kernel)) == 0);
	CHECK(RUN(config_put_drive(&c, "rootfs", b_, err, sizeof(err)),
		  drive("rootfs", disk, true, false)) == 0);
	CHECK(RUN(config_set_entropy(&c, b_, err, sizeof(err)), J("{}")) == 0);
	j = config_full_json(&c);
	CHECK(strcmp(json_string_value(json_object_get(
			 json_object_get(j, "boot-source"), "boot_args")),
		     "quiet") == 0);
	CHECK(json_is_null(
	    json_object_get(json_object_get(j, "boot-source"), "initrd_path")));
	CHECK(json_array_size(json_object_get(j, "drives")) == 1);
	CHECK(json_is_object(json_object_get(j, "entropy")));
	CHECK(json_is_null(json_object_get(j, "vsock")));
	CHECK(json_integer_value(json_object_get(
		  json_object_get(j, "machine-config"), "vcpu_count")) == 1);

	/* What GET /vm/config returns loads back as a config file. */
	config_init(&back, "t");
	CHECK(config_load_json(&back, j, err, sizeof(err)) == 0);
	CHECK(memcmp(&back.vm, &c.vm, sizeof(c.vm)) == 0);
	json_decref(j);
}

static void test_config_file(void)
{
	char path[256], text[2048];
	struct vmm_config c;

	snprintf(
	    text, sizeof(text),
	    "{\"boot-source\": {\"kernel_image_path\": \"%s\"},\n"
	    " \"drives\": [{\"drive_id\": \"rootfs\", \"path_on_host\": "
	    "\"%s\", \"is_root_device\": true, \"is_read_only\": false}],\n"
	    " \"machine-config\": {\"vcpu_count\": 2, \"mem_size_mib\": 256},\n"
	    " \"network-interfaces\": [], \"vsock\": null,\n"
	    " \"entropy\": {}, \"logger\": {\"level\": \"Info\"}}\n",
	    kernel, disk);
	make_file(path, "vm.json", text, strlen(text), 0644);
	config_init(&c, "t");
	CHECK(config_load_file(&c, path, err, sizeof(err)) == 0);
	CHECK(c.vm.vcpu_count == 2 && c.vm.mem_size_mib == 256);
	CHECK(c.vm.n_drives == 1 && c.vm.entropy && c.vm.has_boot_source);

	config_init(&c, "t");
	CHECK(RUN(config_load_json(&c, b_, err, sizeof(err)),
		  J("{\"drives\": []}")) < 0);
	CHECK(err_has("missing required key \"boot-source\""));
	CHECK(RUN(config_load_json(&c, b_, err, sizeof(err)),
		  Jf("{\"boot-source\": {\"kernel_image_path\": \"%s\"}, "
		     "\"balloon\": {\"amount_mib\": 1}}",
		     kernel)) < 0);
	CHECK(err_has("\"balloon\" is not supported"));
	CHECK(RUN(config_load_json(&c, b_, err, sizeof(err)),
		  Jf("{\"boot-source\": {\"kernel_image_path\": \"%s\"}, "
		     "\"disks\": []}",
		     kernel)) < 0);
	CHECK(err_has("unknown key \"disks\""));
	CHECK(RUN(config_load_json(&c, b_, err, sizeof(err)),
		  Jf("{\"boot-source\": {\"kernel_image_path\": \"%s\"}, "
		     "\"drives\": {}}",
		     kernel)) < 0);
	CHECK(err_has("\"drives\" must be an array"));
	CHECK(RUN(config_load_json(&c, b_, err, sizeof(err)),
		  Jf("{\"boot-source\": {\"kernel_image_path\": \"%s\"}, "
		     "\"drives\": [{\"path_on_host\": \"%s\"}]}",
		     kernel, disk)) < 0);
	CHECK(err_has("drives[0]") && err_has("drive_id"));
	CHECK(RUN(config_load_json(&c, b_, err, sizeof(err)),
		  Jf("{\"boot-source\": {\"kernel_image_path\": \"%s\"}, "
		     "\"drives\": [{\"drive_id\": \"a\", \"path_on_host\": "
		     "\"%s\", \"is_root_device\": true}, {\"drive_id\": \"b\", "
		     "\"path_on_host\": \"%s\", \"is_root_device\": true}]}",
		     kernel, disk, disk2)) < 0);
	CHECK(err_has("already the root device"));
	CHECK(RUN(config_load_json(&c, b_, err, sizeof(err)),
		  Jf("{\"boot-source\": {\"kernel_image_path\": \"%s\"}, "
		     "\"machine-config\": {\"vcpu_count\": 0, "
		     "\"mem_size_mib\": 128}}",
		     kernel)) < 0);
	CHECK(err_has("vcpu_count"));
	/* A failed file leaves nothing half-applied. */
	CHECK(!c.vm.has_boot_source && c.vm.n_drives == 0);

	make_file(path, "bad.json", "{\"boot-source\": ", 16, 0644);
	CHECK(config_load_file(&c, path, err, sizeof(err)) < 0);
	CHECK(err_has(path) && err_has("malformed JSON at line 1"));
	snprintf(path, sizeof(path), "%s/missing.json", tmpdir);
	CHECK(config_load_file(&c, path, err, sizeof(err)) < 0);
	CHECK(err_has(path));
}

int main(void)
{
	char cmd[300];
	int rc;

	if (!mkdtemp(tmpdir))
		return 1;
	make_file(kernel, "vmlinux",
		  "\x7f"
		  "ELF\x02",
		  5, 0644);
	make_file(initrd, "initrd", "initrd", 6, 0644);
	make_file(disk, "rootfs.ext4", "disk", 4, 0644);
	make_file(disk2, "data.ext4", "disk", 4, 0644);
	make_file(rodisk, "ro.ext4", "disk", 4, 0644);

	test_defaults();
	test_boot_source();
	test_kernel_format();
	test_machine();
	test_drives();
	test_readonly_file();
	test_net_vsock_entropy_logger();
	test_full_json();
	test_config_file();

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	rc = system(cmd);
	(void)rc;
	return test_summary("vmm-config");
}
