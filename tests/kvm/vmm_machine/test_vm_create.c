/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vm.h end to end on /dev/kvm with a tiny "kernel": an ELF file whose one
 * PT_LOAD segment is the serial guest program at 16 MiB. vm_create loads
 * it like a vmlinux (devices, MP table, boot_params, long mode), the guest
 * prints and resets, the exit fd fires with status 0. Bad kernels and
 * drives fail with a message naming the file.
 */
#include <elf.h>
#include <poll.h>

#include "guest_run.h"
#include "test.h"
#include "vm.h"

#define LOAD_GPA 0x1000000ULL

static int make_elf(const char *image, char *path)
{
	uint8_t code[4096];
	ssize_t n;
	int fd = open(image, O_RDONLY | O_CLOEXEC);
	Elf64_Ehdr eh = { 0 };
	Elf64_Phdr ph = { 0 };

	if (fd < 0)
		return -errno;
	n = ember_read_full(fd, code, sizeof(code));
	close(fd);
	if (n <= 0)
		return -EIO;
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = LOAD_GPA;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(ph);
	eh.e_phnum = 1;
	ph.p_type = PT_LOAD;
	ph.p_offset = 4096;
	ph.p_vaddr = ph.p_paddr = LOAD_GPA;
	ph.p_filesz = (uint64_t)n;
	ph.p_memsz = (uint64_t)n + 4096; /* some bss */
	fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	if (ember_pwrite_full(fd, &eh, sizeof(eh), 0) < 0 ||
	    ember_pwrite_full(fd, &ph, sizeof(ph), sizeof(eh)) < 0 ||
	    ember_pwrite_full(fd, code, (size_t)n, 4096) < 0) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

static void base_config(struct vm_config *cfg, const char *kernel,
			const char *serial)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->id, sizeof(cfg->id), "vm-test");
	cfg->has_boot_source = true;
	snprintf(cfg->kernel_image_path, sizeof(cfg->kernel_image_path), "%s",
		 kernel);
	cfg->vcpu_count = 2;
	cfg->mem_size_mib = 64;
	cfg->entropy = true;
	snprintf(cfg->serial_out_path, sizeof(cfg->serial_out_path), "%s",
		 serial);
}

int main(int argc, char **argv)
{
	static struct vm_config cfg;
	char kernel[] = "/tmp/ember-kernel-XXXXXX";
	char serial[] = "/tmp/ember-serial-XXXXXX";
	char err[512];
	struct vm *vm = NULL;
	struct pollfd p;
	char *out = NULL;
	int fd;

	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-vm-create", NULL);
	REQUIRE(make_elf(argv[1], kernel) == 0);
	fd = mkstemp(serial);
	REQUIRE(fd >= 0);
	close(fd);

	base_config(&cfg, kernel, serial);
	REQUIRE(vm_create(&cfg, &vm, err, sizeof(err)) == 0);
	CHECK(vm_start(vm) == 0);
	p = (struct pollfd){ .fd = vm_exit_fd(vm), .events = POLLIN };
	CHECK(poll(&p, 1, GUEST_TIMEOUT_MS) == 1);
	CHECK(vm_exit_status(vm) == 0);
	vm_destroy(vm);
	CHECK(ember_read_file(serial, 1 << 20, &out, NULL) >= 0);
	CHECK(out && strcmp(out, "hello from the guest\n") == 0);
	free(out);

	/* A kernel file that is missing, or not a kernel. */
	base_config(&cfg, "/nonexistent/vmlinux", serial);
	CHECK(vm_create(&cfg, &vm, err, sizeof(err)) == -ENOENT);
	CHECK(vm == NULL && strstr(err, "/nonexistent/vmlinux"));
	base_config(&cfg, serial, serial);
	CHECK(vm_create(&cfg, &vm, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "not a bzImage or ELF kernel") != NULL);

	/* A drive that does not exist. */
	base_config(&cfg, kernel, serial);
	cfg.n_drives = 1;
	snprintf(cfg.drives[0].drive_id, sizeof(cfg.drives[0].drive_id),
		 "rootfs");
	snprintf(cfg.drives[0].path_on_host,
		 sizeof(cfg.drives[0].path_on_host), "/nonexistent/disk");
	cfg.drives[0].is_root_device = true;
	CHECK(vm_create(&cfg, &vm, err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, "/nonexistent/disk") != NULL);

	/* Out-of-range machine sizes. */
	base_config(&cfg, kernel, serial);
	cfg.vcpu_count = 0;
	CHECK(vm_create(&cfg, &vm, err, sizeof(err)) == -EINVAL);
	base_config(&cfg, kernel, serial);
	cfg.mem_size_mib = 1;
	CHECK(vm_create(&cfg, &vm, err, sizeof(err)) == -EINVAL);
	vm_destroy(NULL);

	unlink(kernel);
	unlink(serial);
	return test_summary("vmm-machine-vm-create");
}
