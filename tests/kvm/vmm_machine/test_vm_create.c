/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vm.h end to end on /dev/kvm with a tiny "kernel": an ELF file whose one
 * PT_LOAD segment is the serial guest program at 16 MiB. vm_create loads
 * it like a vmlinux (devices, MP table, boot_params, long mode), the guest
 * prints and resets, the exit fd fires with status 0. The same ELF as the
 * xz payload of a bzImage, which the machine decompresses itself (the
 * bzImage has no decompressor to run). Bad kernels and drives fail with a
 * message naming the file.
 */
#include <elf.h>
#include <lzma.h>
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

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A bzImage around the ELF file at elf_path: boot sector and 3 setup
 * sectors, then a protected-mode part that is only the payload (xz of the
 * ELF, then its size): nothing at +0x200 a guest could run. */
static int make_bzimage(const char *elf_path, char *path, bool corrupt)
{
	enum { SETUP = 4 * 512, PAYLOAD_AT = 0x400 };
	static uint8_t img[1 << 20];
	char *elf = NULL;
	size_t elf_len, n = 0;
	int fd, ret;

	ret = ember_read_file(elf_path, 1 << 20, &elf, &elf_len);
	if (ret < 0)
		return ret;
	memset(img, 0, SETUP + PAYLOAD_AT);
	img[0x1f1] = 3;
	img[0x1fe] = 0x55;
	img[0x1ff] = 0xaa;
	img[0x200] = 0xeb;
	img[0x201] = 0x66;
	memcpy(img + 0x202, "HdrS", 4);
	img[0x206] = 0x0f; /* protocol 2.15 */
	img[0x207] = 0x02;
	put32(img + 0x22c, 0x7fffffff);
	put32(img + 0x230, 0x200000);
	img[0x236] = 1; /* XLF_KERNEL_64 */
	put32(img + 0x238, 2047);
	put32(img + 0x258, (uint32_t)LOAD_GPA);
	put32(img + 0x260, 0x10000); /* init_size */
	if (lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL,
				    (uint8_t *)elf, elf_len,
				    img + SETUP + PAYLOAD_AT, &n,
				    sizeof(img) - SETUP - PAYLOAD_AT - 4) !=
	    LZMA_OK) {
		free(elf);
		return -EIO;
	}
	put32(img + SETUP + PAYLOAD_AT + n, (uint32_t)elf_len);
	n += 4;
	free(elf);
	put32(img + 0x248, PAYLOAD_AT);
	put32(img + 0x24c, (uint32_t)n);
	if (corrupt)
		img[SETUP + PAYLOAD_AT + n / 2] ^= 0xff;
	fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	ret = ember_pwrite_full(fd, img, SETUP + PAYLOAD_AT + n, 0) < 0
		      ? -EIO
		      : 0;
	close(fd);
	return ret;
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
	char bzimage[] = "/tmp/ember-bzimage-XXXXXX";
	char bad_bzimage[] = "/tmp/ember-bzimage-XXXXXX";
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
	out = NULL;

	/* The same kernel as a bzImage with an xz payload. */
	REQUIRE(make_bzimage(kernel, bzimage, false) == 0);
	REQUIRE(truncate(serial, 0) == 0);
	base_config(&cfg, bzimage, serial);
	REQUIRE(vm_create(&cfg, &vm, err, sizeof(err)) == 0);
	CHECK(vm_start(vm) == 0);
	p = (struct pollfd){ .fd = vm_exit_fd(vm), .events = POLLIN };
	CHECK(poll(&p, 1, GUEST_TIMEOUT_MS) == 1);
	CHECK(vm_exit_status(vm) == 0);
	vm_destroy(vm);
	CHECK(ember_read_file(serial, 1 << 20, &out, NULL) >= 0);
	CHECK(out && strcmp(out, "hello from the guest\n") == 0);
	free(out);

	/* A corrupt payload: an error naming the file, no VM. */
	REQUIRE(make_bzimage(kernel, bad_bzimage, true) == 0);
	base_config(&cfg, bad_bzimage, serial);
	vm = NULL;
	CHECK(vm_create(&cfg, &vm, err, sizeof(err)) == -EINVAL);
	CHECK(vm == NULL && strstr(err, bad_bzimage) &&
	      strstr(err, "compressed kernel"));

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
	unlink(bzimage);
	unlink(bad_bzimage);
	unlink(serial);
	return test_summary("vmm-machine-vm-create");
}
