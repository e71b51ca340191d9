// SPDX-License-Identifier: Apache-2.0
/*
 * The ember-vmm binary's command line and Firecracker API, before any VM
 * exists: real HTTP requests on its Unix socket, every endpoint's good and
 * bad requests. Usage: test-vmm-api PATH-TO-EMBER-VMM
 */
#include "api_client.h"

#include "../../test.h"

#include <fcntl.h>
#include <sys/stat.h>

/* REQUIRE for the void test functions. */
#define REQUIRE_VOID(cond)                                                     \
	do {                                                                   \
		CHECK(cond);                                                   \
		if (!(cond))                                                   \
			return;                                                \
	} while (0)

static char tmpdir[] = "/tmp/ember-test-vmm-api.XXXXXX";
static const char *vmm_bin;
static char kernel[300], junk_kernel[300], disk[300], disk2[300];

static void write_file(char *path, const char *name, const void *data,
		       size_t len)
{
	int fd;

	snprintf(path, 300, "%s/%s", tmpdir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len)
		abort();
	close(fd);
}

/* Runs ember-vmm with the given arguments to its end; returns the exit
 * status. */
static int run_vmm(const char *a1, const char *a2, const char *a3,
		   const char *a4)
{
	char *argv[] = {(char *)vmm_bin, (char *)a1, (char *)a2,
			(char *)a3,	 (char *)a4, NULL};

	return vmm_wait_exit(vmm_spawn(argv), 20000);
}

static void test_command_line(void)
{
	char cfg[300], text[600];

	CHECK(run_vmm("--version", NULL, NULL, NULL) == 0);
	CHECK(run_vmm("--help", NULL, NULL, NULL) == 0);
	CHECK(run_vmm("--no-such-option", NULL, NULL, NULL) == 2);
	CHECK(run_vmm("--no-api", NULL, NULL, NULL) == 2);
	CHECK(run_vmm("--level", "Loud", NULL, NULL) == 2);
	CHECK(run_vmm("--id", "has space", NULL, NULL) == 2);
	CHECK(run_vmm("--api-sock", NULL, NULL, NULL) == 2);
	CHECK(run_vmm("stray-argument", NULL, NULL, NULL) == 2);

	/* A config file that cannot be used ends the process with 1. */
	snprintf(text, sizeof(text),
		 "{\"boot-source\": {\"kernel_image_path\": \"%s/none\"}}",
		 tmpdir);
	write_file(cfg, "bad-kernel.json", text, strlen(text));
	CHECK(run_vmm("--no-api", "--config-file", cfg, NULL) == 1);
	write_file(cfg, "malformed.json", "{", 1);
	CHECK(run_vmm("--no-api", "--config-file", cfg, NULL) == 1);
	snprintf(text, sizeof(text),
		 "{\"boot-source\": {\"kernel_image_path\": \"%s\"}}",
		 junk_kernel);
	write_file(cfg, "junk-kernel.json", text, strlen(text));
	CHECK(run_vmm("--no-api", "--config-file", cfg, NULL) == 1);
}

static void test_instance_info(void)
{
	CHECK(api_req("GET", "/", NULL) == 200);
	CHECK(strcmp(resp_field("id"), "api-test") == 0);
	CHECK(strcmp(resp_field("state"), "Not started") == 0);
	CHECK(strcmp(resp_field("app_name"), "ember-vmm") == 0);
	CHECK(resp_field("vmm_version")[0] != '\0');
	CHECK(api_req("PUT", "/", "{}") == 405);
	CHECK(fault_has("not allowed"));
	CHECK(api_req("GET", "/no/such/thing", NULL) == 404);
	CHECK(fault_has("/no/such/thing"));
	CHECK(api_req("GET", "/drives", NULL) == 404);
}

static void test_boot_source(void)
{
	char body[600];

	snprintf(body, sizeof(body),
		 "{\"kernel_image_path\": \"%s\", \"boot_args\": \"quiet\"}",
		 kernel);
	CHECK(api_req("PUT", "/boot-source", body) == 204);
	CHECK(api_req("GET", "/boot-source", NULL) == 405);
	CHECK(api_req("PUT", "/boot-source",
		      "{\"kernel_image_path\": \"/nonexistent/vmlinux\"}") ==
	      400);
	CHECK(fault_has("/nonexistent/vmlinux") &&
	      fault_has("No such file or directory"));
	CHECK(api_req("PUT", "/boot-source", "{\"kernel_image_path\": ") ==
	      400);
	CHECK(fault_has("Malformed JSON"));
	CHECK(api_req("PUT", "/boot-source", NULL) == 400);
	CHECK(fault_has("needs a JSON body"));
	CHECK(api_req("PUT", "/boot-source", "[]") == 400);
	CHECK(fault_has("JSON object"));
	CHECK(api_req("PUT", "/boot-source", "{\"boot_args\": \"x\"}") == 400);
	CHECK(fault_has("missing required field \"kernel_image_path\""));
	CHECK(api_req("PUT", "/boot-source", "{\"kernel_image_path\": 1}") ==
	      400);
	CHECK(fault_has("must be a string"));
	snprintf(body, sizeof(body),
		 "{\"kernel_image_path\": \"%s\", \"color\": \"red\"}", kernel);
	CHECK(api_req("PUT", "/boot-source", body) == 400);
	CHECK(fault_has("unknown field \"color\""));
}

static void test_machine_config(void)
{
	CHECK(api_req("GET", "/machine-config", NULL) == 200);
	CHECK(strstr(resp_body, "\"vcpu_count\":1") &&
	      strstr(resp_body, "\"mem_size_mib\":128"));
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 2, \"mem_size_mib\": 256}") == 204);
	CHECK(api_req("PATCH", "/machine-config",
		      "{\"track_dirty_pages\": true}") == 204);
	CHECK(api_req("GET", "/machine-config", NULL) == 200);
	CHECK(strstr(resp_body, "\"vcpu_count\":2") &&
	      strstr(resp_body, "\"mem_size_mib\":256") &&
	      strstr(resp_body, "\"track_dirty_pages\":true"));

	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 0, \"mem_size_mib\": 128}") == 400);
	CHECK(fault_has("vcpu_count must be between 1 and 32, not 0"));
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 100, \"mem_size_mib\": 128}") == 400);
	CHECK(fault_has("vcpu_count must be between 1 and 32, not 100"));
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 3, \"mem_size_mib\": 128, "
		      "\"smt\": true}") == 400);
	CHECK(fault_has("1 or even"));
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 1, \"mem_size_mib\": 0}") == 400);
	CHECK(fault_has("mem_size_mib must be between 1 and"));
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 1, \"mem_size_mib\": 1099511627776}") ==
	      400);
	CHECK(fault_has("host's memory"));
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 1, \"mem_size_mib\": 12.5}") == 400);
	CHECK(fault_has("non-negative integer"));
	CHECK(api_req("PUT", "/machine-config", "{\"vcpu_count\": 1}") == 400);
	CHECK(fault_has("missing required field \"mem_size_mib\""));
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": \"one\", \"mem_size_mib\": 128}") ==
	      400);
	CHECK(api_req("PATCH", "/machine-config", "{\"vcpu_count\": 33}") ==
	      400);
	CHECK(api_req("DELETE", "/machine-config", NULL) == 405);
	/* Nothing rejected changed the configuration. */
	CHECK(api_req("GET", "/machine-config", NULL) == 200);
	CHECK(strstr(resp_body, "\"vcpu_count\":2") &&
	      strstr(resp_body, "\"mem_size_mib\":256"));
}

static void test_drives(void)
{
	char body[600];

	snprintf(body, sizeof(body),
		 "{\"drive_id\": \"rootfs\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": true, \"is_read_only\": false}",
		 disk);
	CHECK(api_req("PUT", "/drives/rootfs", body) == 204);
	/* The same id replaces the drive. */
	CHECK(api_req("PUT", "/drives/rootfs", body) == 204);
	snprintf(body, sizeof(body),
		 "{\"drive_id\": \"scratch\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": false, \"is_read_only\": true}",
		 disk2);
	CHECK(api_req("PUT", "/drives/scratch", body) == 204);

	snprintf(body, sizeof(body),
		 "{\"drive_id\": \"second\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": true}",
		 disk2);
	CHECK(api_req("PUT", "/drives/second", body) == 400);
	CHECK(fault_has("rootfs is already the root device"));
	CHECK(api_req("PUT", "/drives/other", body) == 400);
	CHECK(fault_has("does not match"));
	CHECK(api_req(
		  "PUT", "/drives/x",
		  "{\"drive_id\": \"x\", \"path_on_host\": \"/nonexistent/d\","
		  " \"is_root_device\": false}") == 400);
	CHECK(fault_has("/nonexistent/d"));
	CHECK(api_req("PUT", "/drives/x",
		      "{\"drive_id\": \"x\", \"is_root_device\": false}") ==
	      400);
	CHECK(fault_has("missing required field \"path_on_host\""));
	CHECK(api_req("PUT", "/drives/x",
		      "{\"drive_id\": \"x\", \"path_on_host\": \"/d\", "
		      "\"is_root_device\": \"yes\"}") == 400);
	CHECK(fault_has("must be a boolean"));
	CHECK(api_req("PUT", "/drives/", "{}") == 400);
	CHECK(fault_has("Missing the drive id"));
	CHECK(api_req("GET", "/drives/rootfs", NULL) == 405);
}

static void test_devices(void)
{
	CHECK(api_req("PUT", "/network-interfaces/eth0",
		      "{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\", "
		      "\"guest_mac\": \"06:00:ac:10:00:02\"}") == 204);
	CHECK(
	    api_req("PUT", "/network-interfaces/eth1",
		    "{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap0\"}") ==
	    400);
	CHECK(fault_has("already used"));
	CHECK(api_req("PUT", "/network-interfaces/eth1",
		      "{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap1\", "
		      "\"guest_mac\": \"zz\"}") == 400);
	CHECK(fault_has("MAC address"));
	CHECK(api_req("PUT", "/network-interfaces/eth1",
		      "{\"iface_id\": \"eth1\"}") == 400);

	CHECK(api_req("PUT", "/vsock",
		      "{\"guest_cid\": 3, \"uds_path\": \"/tmp/v.sock\"}") ==
	      204);
	CHECK(api_req("PUT", "/vsock",
		      "{\"guest_cid\": 2, \"uds_path\": \"/tmp/v.sock\"}") ==
	      400);
	CHECK(fault_has("guest_cid must be between 3"));
	CHECK(api_req("PUT", "/vsock", "{\"uds_path\": \"/tmp/v\"}") == 400);

	CHECK(api_req("PUT", "/entropy", "{}") == 204);
	CHECK(api_req("PUT", "/entropy", "{\"rate_limiter\": {}}") == 400);
	CHECK(fault_has("not supported"));
}

static void test_logger(void)
{
	char body[600], path[300];
	struct stat st;

	snprintf(path, sizeof(path), "%s/api.log", tmpdir);
	snprintf(body, sizeof(body),
		 "{\"log_path\": \"%s\", \"level\": \"Info\", "
		 "\"show_level\": true}",
		 path);
	CHECK(api_req("PUT", "/logger", body) == 204);
	/* The next failure is logged into the new file. */
	CHECK(api_req("PUT", "/logger", "{\"level\": \"Loud\"}") == 400);
	CHECK(fault_has("Loud"));
	CHECK(stat(path, &st) == 0 && st.st_size > 0);
	/* A folder that does not exist (inside this test's own folder, so no
	 * other process can create it meanwhile). */
	snprintf(path, sizeof(path), "%s/missing/x.log", tmpdir);
	snprintf(body, sizeof(body), "{\"log_path\": \"%s\"}", path);
	CHECK(api_req("PUT", "/logger", body) == 400);
	CHECK(fault_has(path));
}

static void test_vm_config(void)
{
	json_t *j, *drives;

	CHECK(api_req("GET", "/vm/config", NULL) == 200);
	j = json_loads(resp_body ? resp_body : "", 0, NULL);
	REQUIRE_VOID(j);
	CHECK(
	    strcmp(json_string_value(json_object_get(
		       json_object_get(j, "boot-source"), "kernel_image_path"))
		       ?: "",
		   kernel) == 0);
	CHECK(json_integer_value(json_object_get(
		  json_object_get(j, "machine-config"), "vcpu_count")) == 2);
	drives = json_object_get(j, "drives");
	CHECK(json_array_size(drives) == 2);
	CHECK(strcmp(json_string_value(
			 json_object_get(json_array_get(drives, 0), "drive_id"))
			 ?: "",
		     "rootfs") == 0);
	CHECK(json_array_size(json_object_get(j, "network-interfaces")) == 1);
	CHECK(json_integer_value(json_object_get(json_object_get(j, "vsock"),
						 "guest_cid")) == 3);
	CHECK(json_is_object(json_object_get(j, "entropy")));
	CHECK(json_is_object(json_object_get(j, "logger")));
	json_decref(j);
	CHECK(api_req("PUT", "/vm/config", "{}") == 405);
}

static void test_actions(void)
{
	char body[600];

	CHECK(api_req("PUT", "/actions", "{}") == 400);
	CHECK(fault_has("missing required field \"action_type\""));
	CHECK(api_req("PUT", "/actions", "{\"action_type\": 1}") == 400);
	CHECK(api_req("PUT", "/actions", "{\"action_type\": \"Jump\"}") == 400);
	CHECK(fault_has("unknown action_type \"Jump\""));
	CHECK(api_req("PUT", "/actions",
		      "{\"action_type\": \"InstanceStart\", \"x\": 1}") == 400);
	CHECK(fault_has("unknown field"));
	CHECK(api_req("PUT", "/actions",
		      "{\"action_type\": \"FlushMetrics\"}") == 400);
	CHECK(fault_has("not supported"));
	CHECK(api_req("PUT", "/actions",
		      "{\"action_type\": \"SendCtrlAltDel\"}") == 400);
	CHECK(fault_has("running microVM"));

	/* A kernel file that is no kernel: a 400 naming the file, and the
	 * microVM stays configurable. */
	snprintf(body, sizeof(body), "{\"kernel_image_path\": \"%s\"}",
		 junk_kernel);
	CHECK(api_req("PUT", "/boot-source", body) == 204);
	CHECK(api_req("PUT", "/actions",
		      "{\"action_type\": \"InstanceStart\"}") == 400);
	CHECK(fault_has(junk_kernel));
	CHECK(api_req("GET", "/", NULL) == 200);
	CHECK(strcmp(resp_field("state"), "Not started") == 0);
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 1, \"mem_size_mib\": 64}") == 204);

	/* Pause, resume and snapshots need a started microVM (and a load
	 * an unconfigured one); see test_api_snapshot.c. */
	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Paused\"}") == 400);
	CHECK(fault_has("Not started"));
	CHECK(api_req("PUT", "/snapshot/create", "{}") == 400);
	CHECK(fault_has("Missing field snapshot_path"));
	CHECK(api_req("PUT", "/snapshot/load", "{}") == 400);
	CHECK(api_req("GET", "/vm", NULL) == 405);
}

static void test_without_boot_source(void)
{
	char *argv[] = {(char *)vmm_bin, "--api-sock", api_sock, NULL};
	pid_t pid = vmm_spawn(argv);

	REQUIRE_VOID(vmm_wait_api(pid, 20000));
	CHECK(strcmp(resp_field("id"), "anonymous-instance") == 0);
	CHECK(api_req("PUT", "/actions",
		      "{\"action_type\": \"InstanceStart\"}") == 400);
	CHECK(fault_has("boot source"));
	kill(pid, SIGINT);
	CHECK(vmm_wait_exit(pid, 20000) == 0);
	CHECK(access(api_sock, F_OK) < 0);
}

static void test_socket_files(void)
{
	char *argv[] = {(char *)vmm_bin, "--api-sock", api_sock,
			"--id",		 "sock-test",  NULL};
	pid_t pid = vmm_spawn(argv), pid2;

	REQUIRE_VOID(vmm_wait_api(pid, 20000));
	/* A live socket is not taken over. */
	pid2 = vmm_spawn(argv);
	CHECK(vmm_wait_exit(pid2, 20000) == 1);
	CHECK(api_req("GET", "/", NULL) == 200);
	/* A killed VMM leaves its socket; the next one replaces it. */
	kill(pid, SIGKILL);
	CHECK(vmm_wait_exit(pid, 20000) == 128 + SIGKILL);
	CHECK(access(api_sock, F_OK) == 0);
	pid = vmm_spawn(argv);
	CHECK(vmm_wait_api(pid, 20000));
	kill(pid, SIGTERM);
	CHECK(vmm_wait_exit(pid, 20000) == 0);
	CHECK(access(api_sock, F_OK) < 0);
}

int main(int argc, char **argv)
{
	char elf64[5] = {0x7f, 'E', 'L', 'F', 2}, cmd[400];
	pid_t pid;
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: %s PATH-TO-EMBER-VMM\n", argv[0]);
		return 2;
	}
	vmm_bin = argv[1];
	REQUIRE(mkdtemp(tmpdir));
	snprintf(api_sock, sizeof(api_sock), "%s/api.sock", tmpdir);
	write_file(kernel, "vmlinux", elf64, sizeof(elf64));
	write_file(junk_kernel, "junk-kernel", "not a kernel", 12);
	write_file(disk, "rootfs.ext4", "disk", 4);
	write_file(disk2, "scratch.ext4", "disk", 4);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	test_command_line();

	char *vargv[] = {(char *)vmm_bin, "--api-sock", api_sock, "--id",
			 "api-test",	  "--level",	"Debug",  NULL};
	pid = vmm_spawn(vargv);
	REQUIRE(vmm_wait_api(pid, 20000));
	test_instance_info();
	test_boot_source();
	test_machine_config();
	test_drives();
	test_devices();
	test_logger();
	test_vm_config();
	test_actions();
	kill(pid, SIGTERM);
	CHECK(vmm_wait_exit(pid, 20000) == 0);
	CHECK(access(api_sock, F_OK) < 0);

	test_without_boot_source();
	test_socket_files();

	free(resp_body);
	curl_global_cleanup();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	rc = system(cmd);
	(void)rc;
	return test_summary("vmm-api");
}
