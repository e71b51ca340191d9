/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Snapshots on /dev/kvm with a counting guest (guest_count.S) wrapped in
 * an ELF "kernel" and run through vm.h. A reference run goes to the end
 * uninterrupted; the tested run is paused at several points, snapshotted,
 * destroyed and loaded again, alternately with the File backend and with
 * the Uffd backend served by the real ember-uffd from a layer chain built
 * from the memory files. Both must end with the same registers, memory
 * and serial output.
 *
 *   test-snapshot full|diff|high|corrupt GUEST_BIN EMBER_UFFD
 *
 *   full     full snapshots only
 *   diff     a full snapshot, then diff snapshots, each a new generation
 *            over the previous one (File loads a flattened chain)
 *   high     diff, with 3.5 GiB of guest memory (a second memory slot
 *            above the 32-bit hole, touched by the guest)
 *   corrupt  every kind of bad vmstate file, a bad memory file, a missing
 *            page server: a clean error naming the file, no vm
 */
#include <elf.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "ember/header.h"
#include "ember/vmstate.h"
#include "guest_run.h"
#include "test.h"
#include "vm.h"

#define LOAD_GPA 0x1000000ULL
#define DONE_TIMEOUT_MS 30000

extern char **environ;

static const char *guest_bin, *uffd_bin;
static char dir[] = "/tmp/ember-snaptest-XXXXXX";
static char kernel[PATH_MAX];
static bool high;

static int make_elf(const char *image, const char *path)
{
	static uint8_t code[8192];
	Elf64_Ehdr eh = { 0 };
	Elf64_Phdr ph = { 0 };
	ssize_t n;
	int fd = open(image, O_RDONLY | O_CLOEXEC);

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
	ph.p_filesz = ph.p_memsz = (uint64_t)n;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
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

static void base_config(struct vm_config *cfg, const char *serial,
			bool track)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->id, sizeof(cfg->id), "snap-test");
	cfg->has_boot_source = true;
	snprintf(cfg->kernel_image_path, sizeof(cfg->kernel_image_path), "%s",
		 kernel);
	cfg->vcpu_count = 1;
	cfg->mem_size_mib = high ? 3584 : 64;
	cfg->track_dirty_pages = track;
	snprintf(cfg->serial_out_path, sizeof(cfg->serial_out_path), "%s",
		 serial);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool serial_has(const char *path, const char *text)
{
	char *buf = NULL;
	bool found;

	if (ember_read_file(path, 1 << 20, &buf, NULL) < 0)
		return false;
	found = strstr(buf, text) != NULL;
	free(buf);
	return found;
}

static bool wait_done(const char *serial)
{
	for (int waited = 0; waited < DONE_TIMEOUT_MS; waited += 10) {
		if (serial_has(serial, "done\n"))
			return true;
		sleep_ms(10);
	}
	return false;
}

struct result {
	struct kvm_regs regs;
	uint64_t mem_hash;
	char *serial;
};

/* Registers of vCPU 0 and a hash of the memory the guest uses, from a
 * paused vm. */
static int capture(struct vm *vm, const char *serial, struct result *r)
{
	struct machine *m = vm_machine(vm);
	XXH3_state_t st;
	const uint64_t ranges[][2] = { { 0, 32ULL << 20 },
				       { 1ULL << 32, 4ULL << 20 } };

	memset(r, 0, sizeof(*r));
	if (ioctl(m->vcpus[0].fd, KVM_GET_REGS, &r->regs) < 0)
		return -errno;
	XXH3_64bits_reset(&st);
	for (unsigned i = 0; i < (high ? 2u : 1u); i++) {
		void *p = machine_gpa_to_hva(m, ranges[i][0], ranges[i][1]);

		if (!p)
			return -EFAULT;
		XXH3_64bits_update(&st, p, ranges[i][1]);
	}
	r->mem_hash = XXH3_64bits_digest(&st);
	if (ember_read_file(serial, 1 << 20, &r->serial, NULL) < 0)
		r->serial = strdup("");
	return 0;
}

/* The uninterrupted run. */
static int reference(struct result *r)
{
	static struct vm_config cfg;
	char serial[PATH_MAX], err[512];
	struct vm *vm;
	int ret;

	snprintf(serial, sizeof(serial), "%s/serial-ref", dir);
	base_config(&cfg, serial, false);
	ret = vm_create(&cfg, &vm, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "vm_create: %s\n", err);
		return ret;
	}
	ret = vm_start(vm);
	if (!ret && !wait_done(serial))
		ret = -ETIMEDOUT;
	if (!ret)
		ret = vm_pause(vm);
	if (!ret)
		ret = capture(vm, serial, r);
	if (ret)
		fprintf(stderr, "reference run: %s\n", strerror(-ret));
	vm_destroy(vm);
	return ret;
}

/* Starts ember-uffd on a header; returns its pid once its socket is
 * there. */
static pid_t start_uffd(const char *hdr, const char *sock)
{
	char *argv[] = { (char *)uffd_bin, "--socket", (char *)sock,
			 "--header", (char *)hdr, "--accept-timeout", "30",
			 "--log-level", "warn", NULL };
	struct stat st;
	pid_t pid;

	unlink(sock);
	if (posix_spawn(&pid, uffd_bin, NULL, NULL, argv, environ) != 0)
		return -1;
	for (int waited = 0; waited < 20000; waited += 10) {
		if (stat(sock, &st) == 0)
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* Stops ember-uffd once the memory it served is gone (a real VMM exits;
 * this test process lives on, so SIGTERM, which it ends on with 0); its
 * exit status. */
static int reap_uffd(pid_t pid)
{
	int status;

	kill(pid, SIGTERM);
	for (int waited = 0; waited < 20000; waited += 10) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
		sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

/* Builds the next generation of the chain from a memory file. */
static int build_generation(struct ember_header *parent, const char *mem,
			    bool diff, struct ember_header *out,
			    char *hdr_path, size_t hdr_len)
{
	const char *dirs[] = { dir };
	struct ember_build_opts o = {
		.parent = parent,
		.layer_dirs = dirs,
		.n_layer_dirs = 1,
		.mem_path = mem,
		.kind = diff ? EMBER_MEM_DIFF : EMBER_MEM_FULL,
		.out_dir = dir,
	};
	char why[256] = "";
	int ret = ember_layer_build(&o, out, why, sizeof(why));

	if (ret) {
		fprintf(stderr, "ember_layer_build: %s\n", why);
		return ret;
	}
	return ember_header_path(dir, &out->id, hdr_path, hdr_len);
}

static int flatten(const struct ember_header *h, const char *out)
{
	const char *dirs[] = { dir };
	struct ember_chain c;
	char why[256] = "";
	int ret = ember_chain_open(&c, h, dirs, 1, false, why, sizeof(why));

	if (ret) {
		fprintf(stderr, "ember_chain_open: %s\n", why);
		return ret;
	}
	ret = ember_chain_flatten(&c, out);
	ember_chain_close(&c);
	return ret;
}

/* The tested run: cycles of run, pause, snapshot, destroy, load. */
static int interrupted(bool diff, unsigned cycles, struct result *r)
{
	static struct vm_config cfg;
	static struct vm_snapshot_load load;
	struct ember_header hdr = { 0 }, next;
	bool have_hdr = false;
	char serial[PATH_MAX], state[PATH_MAX], mem[PATH_MAX], sock[PATH_MAX];
	char hdr_path[PATH_MAX], flat[PATH_MAX], err[512];
	struct vm *vm;
	pid_t uffd_pid = -1;
	int ret;

	snprintf(serial, sizeof(serial), "%s/serial", dir);
	snprintf(sock, sizeof(sock), "%s/uffd.sock", dir);
	snprintf(flat, sizeof(flat), "%s/flat.mem", dir);
	base_config(&cfg, serial, diff);
	ret = vm_create(&cfg, &vm, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "vm_create: %s\n", err);
		return ret;
	}
	ret = vm_start(vm);
	/* The first snapshot comes after the guest's first step (its "a"),
	 * the rest wherever the pauses fall. */
	for (int waited = 0; !ret && !serial_has(serial, "a"); waited += 5) {
		if (waited > DONE_TIMEOUT_MS)
			ret = -ETIMEDOUT;
		sleep_ms(5);
	}
	for (unsigned c = 0; c < cycles && !ret; c++) {
		bool this_diff = diff && have_hdr;
		bool use_uffd = c % 2 == 1;

		sleep_ms(20 + 25 * c);
		ret = vm_pause(vm);
		if (ret)
			break;
		snprintf(state, sizeof(state), "%s/vmstate.%u", dir, c);
		snprintf(mem, sizeof(mem), "%s/mem.%u", dir, c);
		ret = vm_snapshot_create(vm,
					 this_diff ? VM_SNAPSHOT_DIFF
						   : VM_SNAPSHOT_FULL,
					 state, mem, err, sizeof(err));
		if (ret) {
			fprintf(stderr, "snapshot %u: %s\n", c, err);
			break;
		}
		vm_destroy(vm);
		vm = NULL;
		if (high) {
			/* The guest's pages at 4 GiB + 2 MiB belong at the
			 * second slot's file offset (the size of the slot
			 * below the hole), not at their guest address: the
			 * first data past the low slot is there. */
			uint64_t word = 0;
			struct stat st;
			int fd = open(mem, O_RDONLY | O_CLOEXEC);

			CHECK(fd >= 0 && fstat(fd, &st) == 0 &&
			      (uint64_t)st.st_size == (3584ULL << 20));
			off_t data = fd >= 0 ? lseek(fd, 0xd0000000LL,
						     SEEK_DATA)
					     : -1;

			/* Cycle 0 (full) follows the guest's first step,
			 * which wrote there; a diff may hold no such page. */
			CHECK(c > 0 || data >= 0);
			if (data >= 0) {
				CHECK(data >= 0xd0200000LL &&
				      data < 0xd0200000LL + 300 * 4096);
				CHECK(ember_pread_full(fd, &word, 8, data) ==
				      8);
				CHECK(word != 0);
			}
			if (fd >= 0)
				close(fd);
		}
		if (uffd_pid > 0) {
			CHECK(reap_uffd(uffd_pid) == 0);
			uffd_pid = -1;
		}
		/* The chain: generation 0 from a full file, then one per
		 * diff. */
		ret = build_generation(this_diff ? &hdr : NULL, mem, this_diff,
				       &next, hdr_path, sizeof(hdr_path));
		if (ret)
			break;
		if (have_hdr)
			ember_header_free(&hdr);
		hdr = next;
		have_hdr = true;
		fprintf(stderr, "cycle %u: %s snapshot, generation %u, load with %s\n",
			c, this_diff ? "diff" : "full", hdr.generation,
			use_uffd ? "Uffd" : "File");
		memset(&load, 0, sizeof(load));
		snprintf(load.snapshot_path, sizeof(load.snapshot_path), "%s",
			 state);
		snprintf(load.id, sizeof(load.id), "snap-test-%u", c);
		snprintf(load.serial_out_path, sizeof(load.serial_out_path),
			 "%s", serial);
		load.resume_vm = true;
		load.track_dirty_pages = diff;
		if (use_uffd) {
			uffd_pid = start_uffd(hdr_path, sock);
			if (uffd_pid < 0) {
				ret = -ECHILD;
				break;
			}
			load.backend = VM_MEM_UFFD;
			snprintf(load.backend_path, sizeof(load.backend_path),
				 "%s", sock);
		} else {
			/* A diff file alone is not guest memory: File loads
			 * the chain flattened. */
			ret = flatten(&hdr, flat);
			if (ret)
				break;
			load.backend = VM_MEM_FILE;
			snprintf(load.backend_path, sizeof(load.backend_path),
				 "%s", flat);
		}
		ret = vm_snapshot_load(&load, &vm, err, sizeof(err));
		if (ret)
			fprintf(stderr, "load %u: %s\n", c, err);
	}
	if (!ret && !wait_done(serial))
		ret = -ETIMEDOUT;
	if (!ret)
		ret = vm_pause(vm);
	if (!ret)
		ret = capture(vm, serial, r);
	if (ret) {
		char *out = NULL;

		fprintf(stderr, "interrupted run: %s\n", strerror(-ret));
		if (ember_read_file(serial, 1 << 20, &out, NULL) >= 0)
			fprintf(stderr, "serial so far: \"%s\"\n", out);
		free(out);
		if (vm)
			machine_dump_vcpu(vm_machine(vm), 0);
	}
	vm_destroy(vm);
	if (uffd_pid > 0)
		CHECK(reap_uffd(uffd_pid) == 0);
	if (have_hdr)
		ember_header_free(&hdr);
	return ret;
}

static void compare(const struct result *a, const struct result *b)
{
	CHECK(memcmp(&a->regs, &b->regs, sizeof(a->regs)) == 0);
	CHECK(a->regs.rbx == b->regs.rbx);
	CHECK(a->regs.rip == b->regs.rip);
	CHECK(a->mem_hash == b->mem_hash);
	CHECK(strcmp(a->serial, b->serial) == 0);
	if (strcmp(a->serial, b->serial))
		fprintf(stderr, "serial: \"%s\" vs \"%s\"\n", a->serial,
			b->serial);
}

/* Loads a bad snapshot: expects failure, no vm, and an error that names
 * the file and contains want. */
static void expect_refused(const char *state, const char *mem,
			   const char *want)
{
	static struct vm_snapshot_load load;
	struct vm *vm = (struct vm *)1;
	char err[512] = "";
	int ret;

	memset(&load, 0, sizeof(load));
	snprintf(load.snapshot_path, sizeof(load.snapshot_path), "%s", state);
	snprintf(load.backend_path, sizeof(load.backend_path), "%s", mem);
	snprintf(load.id, sizeof(load.id), "snap-corrupt");
	load.resume_vm = true;
	ret = vm_snapshot_load(&load, &vm, err, sizeof(err));
	CHECK(ret < 0);
	CHECK(vm == NULL);
	if (!strstr(err, want) || (!strstr(err, state) && !strstr(err, mem)))
		fprintf(stderr, "error \"%s\" lacks \"%s\" or the file\n", err,
			want);
	CHECK(strstr(err, want) != NULL);
	CHECK(strstr(err, state) != NULL || strstr(err, mem) != NULL);
}

static int write_bytes(const char *path, const void *buf, size_t len)
{
	return ember_write_file_atomic(path, buf, len, 0600);
}

static void reseal(uint8_t *buf, size_t len)
{
	static const uint8_t zero[8];
	uint64_t total = len, sum;
	XXH3_state_t st;

	memcpy(buf + 16, &total, 8);
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, buf, 24);
	XXH3_64bits_update(&st, zero, 8);
	XXH3_64bits_update(&st, buf + 32, len - 32);
	sum = XXH3_64bits_digest(&st);
	memcpy(buf + 24, &sum, 8);
}

static int corrupt_cases(void)
{
	static struct vm_config cfg;
	static struct vm_snapshot_load load;
	char serial[PATH_MAX], state[PATH_MAX], mem[PATH_MAX], bad[PATH_MAX];
	char err[512], *good = NULL;
	size_t len = 0;
	uint8_t *copy;
	struct vm *vm;
	struct stat st;

	snprintf(serial, sizeof(serial), "%s/serial", dir);
	snprintf(state, sizeof(state), "%s/vmstate", dir);
	snprintf(mem, sizeof(mem), "%s/mem", dir);
	snprintf(bad, sizeof(bad), "%s/bad-vmstate", dir);
	base_config(&cfg, serial, false);
	REQUIRE(vm_create(&cfg, &vm, err, sizeof(err)) == 0);
	REQUIRE(vm_start(vm) == 0);
	sleep_ms(30);
	/* Not paused: refused, nothing written. */
	CHECK(vm_snapshot_create(vm, VM_SNAPSHOT_FULL, state, mem, err,
				 sizeof(err)) == -EBUSY);
	CHECK(stat(state, &st) < 0);
	REQUIRE(vm_pause(vm) == 0);
	/* Diff without dirty tracking. */
	CHECK(vm_snapshot_create(vm, VM_SNAPSHOT_DIFF, state, mem, err,
				 sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "track_dirty_pages") != NULL);
	CHECK(stat(state, &st) < 0);
	/* A write that fails leaves no file. */
	snprintf(bad, sizeof(bad), "%s/missing/vmstate", dir);
	CHECK(vm_snapshot_create(vm, VM_SNAPSHOT_FULL, bad, mem, err,
				 sizeof(err)) < 0);
	CHECK(strstr(err, bad) != NULL);
	CHECK(stat(bad, &st) < 0);
	REQUIRE(vm_snapshot_create(vm, VM_SNAPSHOT_FULL, state, mem, err,
				   sizeof(err)) == 0);
	vm_destroy(vm);
	REQUIRE(ember_read_file(state, 1 << 24, &good, &len) == 0);
	copy = malloc(len);
	REQUIRE(copy != NULL);
	snprintf(bad, sizeof(bad), "%s/bad-vmstate", dir);

	memcpy(copy, good, len);
	copy[0] ^= 0xff;
	CHECK(write_bytes(bad, copy, len) == 0);
	expect_refused(bad, mem, "bad magic");
	memcpy(copy, good, len);
	copy[8] = 9;
	CHECK(write_bytes(bad, copy, len) == 0);
	expect_refused(bad, mem, "unsupported format version 9");
	memcpy(copy, good, len);
	copy[len - 3] ^= 0x10;
	CHECK(write_bytes(bad, copy, len) == 0);
	expect_refused(bad, mem, "bad checksum");
	for (size_t cut = 0; cut < len; cut += len / 7 + 1) {
		CHECK(write_bytes(bad, good, cut) == 0);
		expect_refused(bad, mem, "truncated");
	}
	/* The config says 2 vCPUs, the file holds one vCPU section. */
	memcpy(copy, good, len);
	copy[VMSTATE_HEADER_SIZE + 16] = 2;
	reseal(copy, len);
	CHECK(write_bytes(bad, copy, len) == 0);
	expect_refused(bad, mem, "the config has 2 vCPUs");
	expect_refused("/nonexistent/vmstate", mem, "No such file");
	/* A memory file of the wrong size. */
	CHECK(truncate(mem, 4096) == 0);
	expect_refused(state, mem, "bytes, the snapshot's memory is");
	/* No page server at the socket. */
	memset(&load, 0, sizeof(load));
	snprintf(load.snapshot_path, sizeof(load.snapshot_path), "%s", state);
	load.backend = VM_MEM_UFFD;
	snprintf(load.backend_path, sizeof(load.backend_path),
		 "%s/nobody.sock", dir);
	vm = (struct vm *)1;
	CHECK(vm_snapshot_load(&load, &vm, err, sizeof(err)) < 0);
	CHECK(vm == NULL && strstr(err, "nobody.sock") != NULL);
	free(copy);
	free(good);
	return 0;
}

static void cleanup(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
	struct result ref = { 0 }, got = { 0 };
	const char *mode;

	REQUIRE(argc == 4);
	mode = argv[1];
	guest_bin = argv[2];
	uffd_bin = argv[3];
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-snapshot", NULL);
	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(kernel, sizeof(kernel), "%s/kernel.elf", dir);
	REQUIRE(make_elf(guest_bin, kernel) == 0);
	high = strcmp(mode, "high") == 0;

	if (!strcmp(mode, "corrupt")) {
		CHECK(corrupt_cases() == 0);
	} else {
		bool diff = strcmp(mode, "full") != 0;

		CHECK(reference(&ref) == 0);
		CHECK(strstr(ref.serial, "done") != NULL);
		CHECK(interrupted(diff, high ? 3 : 5, &got) == 0);
		if (ref.serial && got.serial)
			compare(&ref, &got);
		free(ref.serial);
		free(got.serial);
	}
	if (!getenv("KEEP")) cleanup();
	return test_summary(mode);
}
