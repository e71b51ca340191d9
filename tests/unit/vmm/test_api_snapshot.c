// SPDX-License-Identifier: Apache-2.0
/*
 * The snapshot API of the ember-vmm binary (kvm tier: a started microVM):
 * PATCH /vm {"state": "Paused"|"Resumed"}, PUT /snapshot/create and
 * PUT /snapshot/load with Firecracker's request shapes, the states each is
 * allowed in, and a corrupt or missing vmstate file ending in a
 * fault_message that names the file. The guest is "hlt; jmp hlt".
 * Usage: test-vmm-api-snapshot PATH-TO-EMBER-VMM
 */
#include "api_client.h"

#include "../../test.h"

#include <elf.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/stat.h>

#define GUEST_LOAD_GPA 0x1000000ull /* 16 MiB */

static char tmpdir[] = "/tmp/ember-test-vmm-snapshot.XXXXXX";
static const char *vmm_bin;
static char kernel[300], state[300], mem[300], bad[300];

static void write_elf(char *path, const char *name, const void *code,
		      size_t len)
{
	struct elf_file {
		Elf64_Ehdr eh;
		Elf64_Phdr ph;
		unsigned char code[64];
	} f;
	int fd;

	memset(&f, 0, sizeof(f));
	memcpy(f.eh.e_ident, ELFMAG, SELFMAG);
	f.eh.e_ident[EI_CLASS] = ELFCLASS64;
	f.eh.e_ident[EI_DATA] = ELFDATA2LSB;
	f.eh.e_ident[EI_VERSION] = EV_CURRENT;
	f.eh.e_type = ET_EXEC;
	f.eh.e_machine = EM_X86_64;
	f.eh.e_version = EV_CURRENT;
	f.eh.e_entry = GUEST_LOAD_GPA;
	f.eh.e_phoff = offsetof(struct elf_file, ph);
	f.eh.e_ehsize = sizeof(Elf64_Ehdr);
	f.eh.e_phentsize = sizeof(Elf64_Phdr);
	f.eh.e_phnum = 1;
	f.ph.p_type = PT_LOAD;
	f.ph.p_flags = PF_R | PF_X;
	f.ph.p_offset = offsetof(struct elf_file, code);
	f.ph.p_vaddr = f.ph.p_paddr = GUEST_LOAD_GPA;
	f.ph.p_filesz = f.ph.p_memsz = len;
	f.ph.p_align = 16;
	memcpy(f.code, code, len);
	snprintf(path, 300, "%s/%s", tmpdir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, &f, sizeof(f)) != (ssize_t)sizeof(f))
		abort();
	close(fd);
}

static int read_whole(const char *path, char **out, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*out = malloc((size_t)st.st_size + 1);
	*len = (size_t)st.st_size;
	if (!*out || read(fd, *out, *len) != (ssize_t)*len) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int write_whole(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int rc = 0;

	if (fd < 0)
		return -1;
	if (write(fd, buf, len) != (ssize_t)len)
		rc = -1;
	close(fd);
	return rc;
}

/* log: the VMM's --log-path, or NULL for stderr. */
static pid_t start_vmm_log(const char *id, const char *log)
{
	char *argv[] = {(char *)vmm_bin, "--api-sock", api_sock, "--id",
			(char *)id, log ? "--log-path" : NULL, (char *)log,
			NULL};
	pid_t pid;

	unlink(api_sock);
	pid = vmm_spawn(argv);
	if (!vmm_wait_api(pid, 20000)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	return pid;
}

static pid_t start_vmm(const char *id)
{
	return start_vmm_log(id, NULL);
}

/* Whether the file at path holds needle now. */
static bool file_has(const char *path, const char *needle)
{
	char *text = NULL;
	size_t len = 0;
	bool found = false;

	if (read_whole(path, &text, &len) == 0) {
		text[len] = '\0';
		found = strstr(text, needle) != NULL;
	}
	free(text);
	return found;
}

/* Whether the file at path holds needle within timeout_ms. */
static bool file_shows(const char *path, const char *needle, long timeout_ms)
{
	for (long t = 0; t <= timeout_ms; t += 50) {
		if (file_has(path, needle))
			return true;
		sleep_ms(50);
	}
	fprintf(stderr, "  %s lacks \"%s\"\n", path, needle);
	return false;
}

/* Kills the VMM as the platform does after a pause snapshot. */
static void stop_vmm(pid_t pid)
{
	kill(pid, SIGKILL);
	CHECK(vmm_wait_exit(pid, 10000) == 128 + SIGKILL);
}

static bool state_is(const char *want)
{
	if (api_req("GET", "/", NULL) != 200)
		return false;
	if (strcmp(resp_field("state"), want) == 0)
		return true;
	fprintf(stderr, "  state \"%s\", expected \"%s\"\n",
		resp_field("state"), want);
	return false;
}

static long load(const char *state_path, const char *backend_type,
		 const char *backend_path, bool resume)
{
	char body[1200];

	snprintf(body, sizeof(body),
		 "{\"snapshot_path\": \"%s\", \"mem_backend\": "
		 "{\"backend_type\": \"%s\", \"backend_path\": \"%s\"}, "
		 "\"track_dirty_pages\": true, \"resume_vm\": %s}",
		 state_path, backend_type, backend_path,
		 resume ? "true" : "false");
	return api_req("PUT", "/snapshot/load", body);
}

static void test_pause_snapshot(void)
{
	char body[1200];
	struct stat st;
	pid_t pid = start_vmm("snap-a");

	if (pid < 0) {
		CHECK(0);
		return;
	}
	/* Not started: nothing to pause or snapshot. */
	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Paused\"}") == 400);
	CHECK(fault_has("Not started"));
	snprintf(body, sizeof(body),
		 "{\"kernel_image_path\": \"%s\"}", kernel);
	CHECK(api_req("PUT", "/boot-source", body) == 204);
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 2, \"mem_size_mib\": 64, "
		      "\"track_dirty_pages\": true}") == 204);
	CHECK(api_req("PUT", "/actions",
		      "{\"action_type\": \"InstanceStart\"}") == 204);
	CHECK(state_is("Running"));

	snprintf(body, sizeof(body),
		 "{\"snapshot_type\": \"Full\", \"snapshot_path\": \"%s\", "
		 "\"mem_file_path\": \"%s\"}", state, mem);
	CHECK(api_req("PUT", "/snapshot/create", body) == 400);
	CHECK(fault_has("pause it"));
	CHECK(stat(state, &st) < 0);

	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Frozen\"}") == 400);
	CHECK(fault_has("Paused"));
	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Paused\", \"x\": 1}") ==
	      400);
	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Paused\"}") == 204);
	CHECK(state_is("Paused"));
	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Resumed\"}") == 204);
	CHECK(state_is("Running"));
	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Paused\"}") == 204);

	CHECK(api_req("PUT", "/snapshot/create",
		      "{\"snapshot_type\": \"Weekly\", \"snapshot_path\": "
		      "\"/tmp/x\", \"mem_file_path\": \"/tmp/y\"}") == 400);
	CHECK(api_req("PUT", "/snapshot/create",
		      "{\"snapshot_path\": \"/tmp/x\"}") == 400);
	CHECK(fault_has("mem_file_path"));
	CHECK(api_req("PUT", "/snapshot/create", body) == 204);
	CHECK(stat(state, &st) == 0 && st.st_size > 0);
	CHECK(stat(mem, &st) == 0 && st.st_size == 64 << 20);
	snprintf(body, sizeof(body),
		 "{\"snapshot_type\": \"Diff\", \"snapshot_path\": \"%s.diff\", "
		 "\"mem_file_path\": \"%s.diff\", \"version\": \"1.0.0\"}",
		 state, mem);
	CHECK(api_req("PUT", "/snapshot/create", body) == 204);
	/* A snapshot cannot be loaded into a running ember-vmm. */
	CHECK(load(state, "File", mem, true) == 400);
	CHECK(fault_has("new ember-vmm"));
	stop_vmm(pid);
}

static void test_load(void)
{
	char log[320];
	pid_t pid;

	/* Loaded paused, then resumed: no load-to-KVM_RUN line (it is the
	 * figure of a load with resume_vm only). */
	snprintf(log, sizeof(log), "%s/vmm-b.log", tmpdir);
	pid = start_vmm_log("snap-b", log);

	if (pid < 0) {
		CHECK(0);
		return;
	}
	CHECK(api_req("PUT", "/snapshot/load",
		      "{\"snapshot_path\": \"/tmp/x\"}") == 400);
	CHECK(fault_has("mem_backend"));
	CHECK(load(state, "Tape", mem, true) == 400);
	CHECK(fault_has("backend_type"));
	CHECK(state_is("Not started"));
	CHECK(load(state, "File", mem, false) == 204);
	CHECK(state_is("Paused"));
	/* The machine is the snapshot's: 2 vCPUs, 64 MiB, dirty pages
	 * tracked as the load asked. */
	CHECK(api_req("GET", "/machine-config", NULL) == 200);
	CHECK(resp_int("vcpu_count") == 2);
	CHECK(resp_int("mem_size_mib") == 64);
	CHECK(resp_true("track_dirty_pages"));
	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Resumed\"}") == 204);
	CHECK(state_is("Running"));
	CHECK(api_req("PATCH", "/vm", "{\"state\": \"Paused\"}") == 204);
	CHECK(file_shows(log, "microVM paused", 5000));
	CHECK(!file_has(log, "entered KVM_RUN"));
	stop_vmm(pid);

	/* Firecracker's older shape: mem_file_path instead of mem_backend.
	 * With resume_vm, vCPU 0's first KVM_RUN logs its time since the
	 * request. */
	snprintf(log, sizeof(log), "%s/vmm-c.log", tmpdir);
	pid = start_vmm_log("snap-c", log);
	if (pid >= 0) {
		char body[900];

		snprintf(body, sizeof(body),
			 "{\"snapshot_path\": \"%s\", \"mem_file_path\": \"%s\", "
			 "\"enable_diff_snapshots\": false, \"resume_vm\": true}",
			 state, mem);
		CHECK(api_req("PUT", "/snapshot/load", body) == 204);
		CHECK(state_is("Running"));
		CHECK(file_shows(log, "snapshot load: vCPU 0 entered KVM_RUN ",
				 10000));
		CHECK(file_has(log, " us after the load request"));
		stop_vmm(pid);
	}
}

static void test_refused_loads(void)
{
	char *good = NULL;
	size_t len = 0;
	pid_t pid;

	/* Configured for a cold boot: a load is refused. */
	pid = start_vmm("snap-d");
	if (pid < 0) {
		CHECK(0);
		return;
	}
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 1, \"mem_size_mib\": 64}") == 204);
	CHECK(load(state, "File", mem, true) == 400);
	CHECK(fault_has("cold boot"));
	stop_vmm(pid);

	/* Corrupt and missing files: a fault naming the file, no VM. */
	if (read_whole(state, &good, &len) != 0) {
		CHECK(0);
		return;
	}
	pid = start_vmm("snap-e");
	if (pid < 0) {
		CHECK(0);
		free(good);
		return;
	}
	good[0] = 'X';
	CHECK(write_whole(bad, good, len) == 0);
	CHECK(load(bad, "File", mem, true) == 400);
	CHECK(fault_has(bad) && fault_has("bad magic"));
	good[0] = 'E';
	good[len / 2] ^= 1;
	CHECK(write_whole(bad, good, len) == 0);
	CHECK(load(bad, "File", mem, true) == 400);
	CHECK(fault_has("bad checksum"));
	CHECK(write_whole(bad, good, len / 3) == 0);
	CHECK(load(bad, "File", mem, true) == 400);
	CHECK(fault_has("truncated"));
	CHECK(load("/nonexistent/vmstate", "File", mem, true) == 400);
	CHECK(fault_has("/nonexistent/vmstate"));
	CHECK(load(state, "Uffd", "/nonexistent/uffd.sock", true) == 400);
	CHECK(fault_has("/nonexistent/uffd.sock"));
	/* network_overrides: Firecracker's shape; an interface the
	 * snapshot does not have is refused by name. */
	char body[1200];
	snprintf(body, sizeof(body),
		 "{\"snapshot_path\": \"%s\", \"mem_file_path\": \"%s\", "
		 "\"network_overrides\": [{\"iface_id\": \"eth7\", "
		 "\"host_dev_name\": \"tap7\"}]}", state, mem);
	CHECK(api_req("PUT", "/snapshot/load", body) == 400);
	CHECK(fault_has("no network interface eth7"));
	snprintf(body, sizeof(body),
		 "{\"snapshot_path\": \"%s\", \"mem_file_path\": \"%s\", "
		 "\"network_overrides\": [{\"iface_id\": \"eth0\"}]}",
		 state, mem);
	CHECK(api_req("PUT", "/snapshot/load", body) == 400);
	CHECK(fault_has("host_dev_name"));
	snprintf(body, sizeof(body),
		 "{\"snapshot_path\": \"%s\", \"mem_file_path\": \"%s\", "
		 "\"network_overrides\": {}}", state, mem);
	CHECK(api_req("PUT", "/snapshot/load", body) == 400);
	CHECK(fault_has("must be an array"));
	CHECK(state_is("Not started"));
	/* After every failure a good load still works. */
	CHECK(load(state, "File", mem, true) == 204);
	CHECK(state_is("Running"));
	stop_vmm(pid);
	free(good);
}

int main(int argc, char **argv)
{
	static const unsigned char hlt[] = {0xf4, 0xeb, 0xfd};
	char cmd[400];
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: %s PATH-TO-EMBER-VMM\n", argv[0]);
		return 2;
	}
	if (access("/dev/kvm", R_OK | W_OK) < 0) {
		fprintf(stderr, "no usable /dev/kvm: skipped\n");
		return 77;
	}
	vmm_bin = argv[1];
	REQUIRE(mkdtemp(tmpdir));
	snprintf(api_sock, sizeof(api_sock), "%s/api.sock", tmpdir);
	snprintf(state, sizeof(state), "%s/vmstate", tmpdir);
	snprintf(mem, sizeof(mem), "%s/mem", tmpdir);
	snprintf(bad, sizeof(bad), "%s/bad-vmstate", tmpdir);
	write_elf(kernel, "hlt.elf", hlt, sizeof(hlt));
	curl_global_init(CURL_GLOBAL_DEFAULT);

	test_pause_snapshot();
	test_load();
	test_refused_loads();

	free(resp_body);
	curl_global_cleanup();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	rc = system(cmd);
	(void)rc;
	return test_summary("vmm-api-snapshot");
}
