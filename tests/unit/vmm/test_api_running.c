// SPDX-License-Identifier: Apache-2.0
/*
 * The ember-vmm binary's API and exit paths with a started microVM (kvm
 * tier: needs /dev/kvm, any speed). The "kernels" are tiny 64-bit ELF files
 * written by this test, a few instructions each:
 *   hlt:    hlt; jmp hlt          - runs until told to stop
 *   reset:  out 0x64, 0xfe        - resets through the i8042: exit 0
 *   crash:  ud2 with no IDT       - triple fault: exit 1
 * Usage: test-vmm-api-running PATH-TO-EMBER-VMM
 */
#include "api_client.h"

#include "../../test.h"

#include <elf.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/stat.h>

#define REQUIRE_VOID(cond)                                                     \
	do {                                                                   \
		CHECK(cond);                                                   \
		if (!(cond))                                                   \
			return;                                                \
	} while (0)

#define GUEST_LOAD_GPA 0x1000000ull /* 16 MiB */

static char tmpdir[] = "/tmp/ember-test-vmm-running.XXXXXX";
static const char *vmm_bin;
static char k_hlt[300], k_reset[300], k_crash[300], disk[300];

/* Writes a 64-bit ELF with one PT_LOAD segment holding code, loaded and
 * entered at GUEST_LOAD_GPA. */
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

static pid_t start_vmm(const char *id)
{
	char *argv[] = {(char *)vmm_bin, "--api-sock", api_sock,
			"--id",		 (char *)id,   NULL};
	pid_t pid = vmm_spawn(argv);

	if (!vmm_wait_api(pid, 20000)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	return pid;
}

static bool boot(const char *kernel, unsigned vcpus)
{
	char body[600];

	snprintf(body, sizeof(body), "{\"kernel_image_path\": \"%s\"}", kernel);
	if (api_req("PUT", "/boot-source", body) != 204)
		return false;
	snprintf(body, sizeof(body),
		 "{\"vcpu_count\": %u, \"mem_size_mib\": 64}", vcpus);
	if (api_req("PUT", "/machine-config", body) != 204)
		return false;
	if (api_req("PUT", "/actions",
		    "{\"action_type\": \"InstanceStart\"}") != 204) {
		fprintf(stderr, "InstanceStart: %s\n", resp_fault);
		return false;
	}
	return true;
}

static void test_running(void)
{
	char body[600];
	pid_t pid = start_vmm("running");

	REQUIRE_VOID(pid > 0);
	snprintf(body, sizeof(body),
		 "{\"drive_id\": \"rootfs\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": true, \"is_read_only\": true}",
		 disk);
	CHECK(api_req("PUT", "/drives/rootfs", body) == 204);
	CHECK(boot(k_hlt, 2));
	CHECK(api_req("GET", "/", NULL) == 200);
	CHECK(strcmp(resp_field("state"), "Running") == 0);

	/* No configuration after the start, no second start. */
	CHECK(api_req("PUT", "/machine-config",
		      "{\"vcpu_count\": 1, \"mem_size_mib\": 64}") == 400);
	CHECK(fault_has("already been started"));
	CHECK(api_req("PATCH", "/machine-config", "{\"vcpu_count\": 1}") ==
	      400);
	CHECK(api_req("PUT", "/drives/rootfs", body) == 400);
	CHECK(fault_has("already been started"));
	CHECK(api_req("PUT", "/entropy", "{}") == 400);
	CHECK(api_req("PUT", "/actions",
		      "{\"action_type\": \"InstanceStart\"}") == 400);
	CHECK(fault_has("already been started"));
	/* The configuration still reads, unchanged. */
	CHECK(api_req("GET", "/machine-config", NULL) == 200);
	CHECK(strstr(resp_body, "\"vcpu_count\":2") != NULL);
	CHECK(api_req("GET", "/vm/config", NULL) == 200);
	/* The guest ignores the key press; the VMM takes it. */
	CHECK(api_req("PUT", "/actions",
		      "{\"action_type\": \"SendCtrlAltDel\"}") == 204);
	CHECK(api_req("GET", "/", NULL) == 200);
	CHECK(strcmp(resp_field("state"), "Running") == 0);

	/* SIGTERM stops the running guest cleanly. */
	kill(pid, SIGTERM);
	CHECK(vmm_wait_exit(pid, 30000) == 0);
	CHECK(access(api_sock, F_OK) < 0);
}

static void test_guest_reset(void)
{
	pid_t pid = start_vmm("reset");

	REQUIRE_VOID(pid > 0);
	CHECK(boot(k_reset, 1));
	/* The guest resets at once; the VMM ends with 0 on its own. */
	CHECK(vmm_wait_exit(pid, 60000) == 0);
	CHECK(access(api_sock, F_OK) < 0);
}

static void test_guest_crash(void)
{
	pid_t pid = start_vmm("crash");

	REQUIRE_VOID(pid > 0);
	CHECK(boot(k_crash, 1));
	CHECK(vmm_wait_exit(pid, 60000) == 1);
	CHECK(access(api_sock, F_OK) < 0);
}

static void test_config_file_boot(void)
{
	char cfg[300], text[600];
	int fd;

	snprintf(
	    text, sizeof(text),
	    "{\"boot-source\": {\"kernel_image_path\": \"%s\"}, "
	    "\"machine-config\": {\"vcpu_count\": 1, \"mem_size_mib\": 64}}",
	    k_reset);
	snprintf(cfg, sizeof(cfg), "%s/reset.json", tmpdir);
	fd = open(cfg, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	REQUIRE_VOID(fd >= 0);
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);

	char *argv[] = {
	    (char *)vmm_bin, "--no-api", "--config-file", cfg, "--id",
	    "from-file",     NULL};
	CHECK(vmm_wait_exit(vmm_spawn(argv), 60000) == 0);
}

int main(int argc, char **argv)
{
	/* hlt; jmp back to the hlt */
	static const unsigned char hlt[] = {0xf4, 0xeb, 0xfd};
	/* mov al, 0xfe; out 0x64, al; hlt; jmp back to the hlt */
	static const unsigned char reset[] = {0xb0, 0xfe, 0xe6, 0x64,
					      0xf4, 0xeb, 0xfd};
	/* lidt of an empty table, then ud2: #UD, #GP, triple fault */
	static const unsigned char crash[] = {
	    0x6a, 0x00, 0x6a, 0x00, /* push 0; push 0 */
	    0x0f, 0x01, 0x1c, 0x24, /* lidt [rsp] */
	    0x0f, 0x0b,		    /* ud2 */
	};
	char cmd[400];
	int fd, rc;

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
	write_elf(k_hlt, "hlt.elf", hlt, sizeof(hlt));
	write_elf(k_reset, "reset.elf", reset, sizeof(reset));
	write_elf(k_crash, "crash.elf", crash, sizeof(crash));
	snprintf(disk, sizeof(disk), "%s/disk.img", tmpdir);
	fd = open(disk, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	REQUIRE(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	close(fd);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	test_running();
	test_guest_reset();
	test_guest_crash();
	test_config_file_boot();

	free(resp_body);
	curl_global_cleanup();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	rc = system(cmd);
	(void)rc;
	return test_summary("vmm-api-running");
}
