// SPDX-License-Identifier: Apache-2.0
/*
 * ember-uffd against a process that plays the VMM, no VM needed: a
 * three-generation chain is built in a temporary folder; a child maps
 * anonymous memory in two regions, registers it with a userfaultfd, hands
 * it to the real ember-uffd as Firecracker would, and touches every page
 * from several threads, checking every byte against the model. Also: a
 * range given back with MADV_DONTNEED reads as zero; a recorded working
 * set replayed saves the faults; a corrupt or stale working set is refused
 * and recorded anew; eager prefetch leaves no fault; the VMM killed makes ember-uffd exit 0;
 * regions that disagree with the header, a bad header and a missing layer
 * make it exit 1, and the VMM is killed rather than left running.
 *
 * Usage: test-uffd PATH-TO-ember-uffd
 */
#include <ember/header.h>

#include "../../test.h"
#include "fake_vmm.h"
/* ws_read/ws_write, tested directly. */
#include "../../../src/ember-uffd/ws.c"

#include <jansson.h>
#include <limits.h>
#include <pthread.h>

#define PAGE 4096u
#define N_PAGES 2048u /* 8 MiB */
#define TOTAL ((uint64_t)N_PAGES * PAGE)
#define THREADS 4

static const char *uffd_bin;
static char tmpdir[] = "/tmp/ember-test-uffd.XXXXXX";
static char hdr_path[PATH_MAX], sock_path[PATH_MAX];
static uint8_t *model;
static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Writes pages of a memory file and the model; full = every page. */
static int write_mem(const char *path, bool full, unsigned density)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	uint8_t page[PAGE];

	if (fd < 0 || ftruncate(fd, (off_t)TOTAL) < 0)
		return -1;
	for (uint64_t p = 0; p < N_PAGES; p++) {
		unsigned kind = (unsigned)(rnd() % 100);

		if (!full && kind >= density)
			continue;
		if (kind % 7 == 0) {
			memset(page, 0, PAGE);
		} else {
			for (size_t i = 0; i < PAGE; i += 8) {
				uint64_t v = rnd();

				memcpy(page + i, &v, 8);
			}
		}
		memcpy(model + p * PAGE, page, PAGE);
		if (ember_pwrite_full(fd, page, PAGE, (off_t)(p * PAGE)))
			return -1;
	}
	close(fd);
	return 0;
}

static int build_chain(void)
{
	char mem[PATH_MAX], why[256];
	const char *dirs[] = {tmpdir};
	struct ember_header h[3];
	struct ember_build_opts o = {
		.layer_dirs = dirs, .n_layer_dirs = 1, .mem_path = mem,
		.out_dir = tmpdir, .block_size = 8192,
	};

	snprintf(mem, sizeof(mem), "%s/mem", tmpdir);
	for (int g = 0; g < 3; g++) {
		if (write_mem(mem, g == 0, 30))
			return -1;
		o.kind = g ? EMBER_MEM_DIFF : EMBER_MEM_FULL;
		o.parent = g ? &h[g - 1] : NULL;
		if (ember_layer_build(&o, &h[g], why, sizeof(why))) {
			fprintf(stderr, "build gen %d: %s\n", g, why);
			return -1;
		}
	}
	ember_header_path(tmpdir, &h[2].id, hdr_path, sizeof(hdr_path));
	for (int g = 0; g < 3; g++)
		ember_header_free(&h[g]);
	unlink(mem);
	return 0;
}

/* ---- the child that plays the VMM -------------------------------------- */

struct vm {
	uint8_t *region[2];
	int uffd;
	int go_fd; /* read one byte before touching, when >= 0 */
};

struct toucher {
	struct vm *vm;
	int idx;
	unsigned stride; /* touch pages p with p % stride == 0 only */
	bool parity;     /* threads split pages by parity */
	unsigned long bad;
};

static uint8_t *page_addr(struct vm *vm, uint64_t p)
{
	uint64_t half = N_PAGES / 2;

	return p < half ? vm->region[0] + p * PAGE
			: vm->region[1] + (p - half) * PAGE;
}

static void *touch_pages(void *arg)
{
	struct toucher *t = arg;

	for (uint64_t i = 0; i < N_PAGES; i++) {
		uint64_t p = t->idx >= 2 ? N_PAGES - 1 - i : i;

		/* Two threads per page: one from each end. */
		if (t->parity && p % 2 != (uint64_t)t->idx % 2)
			continue;
		if (p % t->stride)
			continue;
		if (memcmp(page_addr(t->vm, p), model + p * PAGE, PAGE))
			t->bad++;
	}
	return NULL;
}

static unsigned long touch_all(struct vm *vm, unsigned stride, int threads)
{
	pthread_t th[THREADS];
	struct toucher t[THREADS];
	unsigned long bad = 0;

	for (int i = 0; i < threads; i++) {
		t[i] = (struct toucher){vm, i, stride, threads > 1, 0};
		pthread_create(&th[i], NULL, touch_pages, &t[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		bad += t[i].bad;
	}
	return bad;
}

enum scenario { FULL, SUBSET, IDLE, BAD_REGIONS };

/* The child's exit status: 0 when every byte was right. */
static int vmm_child(enum scenario sc, int go_fd)
{
	struct vm vm = {.go_fd = go_fd};
	struct ember_uffd_region r[2];
	uint64_t half = TOTAL / 2;

	vm.uffd = fv_userfaultfd(UFFD_FEATURE_EVENT_REMOVE);
	if (vm.uffd < 0)
		return 10;
	for (int i = 0; i < 2; i++) {
		vm.region[i] = mmap(NULL, half, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (vm.region[i] == MAP_FAILED ||
		    fv_register(vm.uffd, vm.region[i], half))
			return 11;
		r[i] = (struct ember_uffd_region){
			.base_host_virt_addr = (uintptr_t)vm.region[i],
			.size = half, .offset = i * half, .page_size = PAGE,
		};
	}
	if (sc == BAD_REGIONS)
		r[1].size -= PAGE;
	if (fv_handshake(sock_path, vm.uffd, r, 2))
		return 12;
	if (sc == BAD_REGIONS || sc == IDLE) {
		pause(); /* to be killed */
		return 13;
	}
	if (go_fd >= 0) {
		char c;

		if (read(go_fd, &c, 1) != 1)
			return 14;
	}
	if (sc == SUBSET)
		return touch_all(&vm, 3, 1) ? 15 : 0;
	if (touch_all(&vm, 1, THREADS))
		return 16;
	/* Give back 16 pages that were served: they must read as zero, and
	 * their neighbours keep their contents. */
	{
		uint64_t first = 100, n = 16;
		uint8_t *a = page_addr(&vm, first);

		if (madvise(a, n * PAGE, MADV_DONTNEED))
			return 17;
		for (uint64_t i = 0; i < n * PAGE; i++)
			if (a[i])
				return 18;
		if (memcmp(page_addr(&vm, first - 1),
			   model + (first - 1) * PAGE, PAGE) ||
		    memcmp(page_addr(&vm, first + n),
			   model + (first + n) * PAGE, PAGE))
			return 19;
		/* Written after the REMOVE, it keeps what was written. */
		memset(a, 0xab, PAGE);
		if (a[PAGE - 1] != 0xab)
			return 20;
	}
	return 0;
}

/* ---- the parent ---------------------------------------------------------- */

struct run {
	pid_t uffd_pid, vmm_pid;
	int out_fd, go_w;
};

/* extra: up to 8 more arguments, NULL-terminated. */
static int start_server_v(struct run *run, const char *const *extra)
{
	char *argv[16] = {(char *)uffd_bin, "--socket", sock_path, "--header",
			  hdr_path, "--accept-timeout", "20"};
	int n = 7;

	for (size_t i = 0; extra[i] && i < 8; i++)
		argv[n++] = (char *)extra[i];
	argv[n] = NULL;
	run->uffd_pid = fv_spawn(argv, &run->out_fd);
	if (run->uffd_pid < 0)
		return -1;
	return fv_wait_line(run->out_fd, "listening", 10000);
}

static int start_server(struct run *run, const char *extra1,
			const char *extra2, const char *extra3,
			const char *extra4)
{
	const char *extra[] = {extra1, extra2, extra3, extra4, NULL};

	return start_server_v(run, extra);
}

static void start_vmm(struct run *run, enum scenario sc, bool gated)
{
	int p[2] = {-1, -1};

	if (gated && pipe2(p, O_CLOEXEC) < 0)
		return;
	run->vmm_pid = fork();
	if (run->vmm_pid == 0) {
		if (p[1] >= 0)
			close(p[1]);
		_exit(vmm_child(sc, p[0]));
	}
	if (p[0] >= 0)
		close(p[0]);
	run->go_w = p[1];
}

static json_t *read_metrics(const char *path)
{
	json_error_t e;

	return json_load_file(path, 0, &e);
}

static uint64_t metric(json_t *m, const char *key)
{
	return (uint64_t)json_integer_value(json_object_get(m, key));
}

static void test_full(void)
{
	char mpath[PATH_MAX];
	struct run run;
	json_t *m;
	int st;

	snprintf(mpath, sizeof(mpath), "%s/metrics-full.json", tmpdir);
	CHECK(start_server(&run, "--metrics-path", mpath, NULL, NULL) == 0);
	start_vmm(&run, FULL, false);
	CHECK(fv_wait_line(run.out_fd, "ready", 10000) == 0);
	st = fv_wait(run.vmm_pid, 60000);
	if (st != 0)
		fprintf(stderr, "full: VMM child status 0x%x\n", st);
	CHECK(st == 0);
	st = fv_wait(run.uffd_pid, 10000);
	CHECK(st == 0);
	close(run.out_fd);
	m = read_metrics(mpath);
	CHECK(m != NULL);
	if (m) {
		/* Every page faulted once; 16 again after the REMOVE, and
		 * one more written after it. */
		CHECK(metric(m, "faults") >= N_PAGES + 16);
		CHECK(metric(m, "remove_events") >= 1);
		CHECK(metric(m, "zero_pages") >= 16);
		json_decref(m);
	}
}

static void test_prefetch(void)
{
	char ws[PATH_MAX], m1[PATH_MAX], m2[PATH_MAX];
	struct run run;
	json_t *a, *b;

	snprintf(ws, sizeof(ws), "%s/template.ws", tmpdir);
	snprintf(m1, sizeof(m1), "%s/metrics-record.json", tmpdir);
	snprintf(m2, sizeof(m2), "%s/metrics-prefetch.json", tmpdir);

	/* Record: touch a third of the pages. */
	CHECK(start_server(&run, "--metrics-path", m1, "--record-ws", ws) ==
	      0);
	start_vmm(&run, SUBSET, false);
	CHECK(fv_wait(run.vmm_pid, 60000) == 0);
	CHECK(fv_wait(run.uffd_pid, 10000) == 0);
	close(run.out_fd);
	CHECK(access(ws, F_OK) == 0);

	/* Replay: the child touches the same pages after the prefetch. */
	CHECK(start_server(&run, "--metrics-path", m2, "--prefetch", ws) ==
	      0);
	start_vmm(&run, SUBSET, true);
	CHECK(fv_wait_line(run.out_fd, "prefetched", 10000) == 0);
	CHECK(write(run.go_w, "g", 1) == 1);
	close(run.go_w);
	CHECK(fv_wait(run.vmm_pid, 60000) == 0);
	CHECK(fv_wait(run.uffd_pid, 10000) == 0);
	close(run.out_fd);

	a = read_metrics(m1);
	b = read_metrics(m2);
	CHECK(a && b);
	if (a && b) {
		uint64_t recorded = metric(a, "faults");

		fprintf(stderr, "prefetch: %llu faults recorded, %llu with "
				"prefetch (%llu pages prefetched)\n",
			(unsigned long long)recorded,
			(unsigned long long)metric(b, "faults"),
			(unsigned long long)metric(b, "prefetched_pages"));
		CHECK(recorded >= (N_PAGES + 2) / 3);
		CHECK(metric(b, "faults") < recorded);
		CHECK(metric(b, "faults") * 10 <= recorded);
		CHECK(metric(b, "prefetched_pages") == recorded);
	}
	json_decref(a);
	json_decref(b);
}

/* The working-set file itself: a good one reads back; corrupt, short,
 * old-format and stale (another chain, another memory size) ones are
 * refused with a reason. */
static void test_ws_file(void)
{
	char ws[PATH_MAX], why[256] = "";
	uint64_t offs[3] = {0, 5 * PAGE, 2 * PAGE}, *back = NULL, ps = 0;
	struct ember_header h, other;
	enum ember_hdr_error err;
	size_t n = 0, len;
	char *data;

	snprintf(ws, sizeof(ws), "%s/file.ws", tmpdir);
	CHECK(ember_header_load(hdr_path, &h, &err) == 0);
	if (test_failures)
		return;
	CHECK(ws_write(ws, &h, PAGE, offs, 3) == 0);
	CHECK(ws_read(ws, &h, &ps, &back, &n, why, sizeof(why)) == 0);
	CHECK(n == 3 && ps == PAGE && back && back[1] == 5 * PAGE);
	free(back);
	back = NULL;

	other = h;
	other.base_id.b[0] ^= 1;
	CHECK(ws_write(ws, &other, PAGE, offs, 3) == 0);
	CHECK(ws_read(ws, &h, &ps, &back, &n, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "stale") != NULL);
	other = h;
	other.total_size += PAGE;
	CHECK(ws_write(ws, &other, PAGE, offs, 3) == 0);
	CHECK(ws_read(ws, &h, &ps, &back, &n, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "stale") != NULL);

	CHECK(ws_write(ws, &h, PAGE, offs, 3) == 0);
	CHECK(ember_read_file(ws, 1 << 20, &data, &len) == 0);
	if (test_failures) {
		ember_header_free(&h);
		return;
	}
	data[70] ^= 0x10; /* an offset */
	CHECK(ember_write_file_atomic(ws, data, len, 0644) == 0);
	CHECK(ws_read(ws, &h, &ps, &back, &n, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "checksum") != NULL);
	data[70] ^= 0x10;
	CHECK(ember_write_file_atomic(ws, data, len - 9, 0644) == 0);
	CHECK(ws_read(ws, &h, &ps, &back, &n, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "length") != NULL);
	data[7] = '1';
	CHECK(ember_write_file_atomic(ws, data, len, 0644) == 0);
	CHECK(ws_read(ws, &h, &ps, &back, &n, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "format 1") != NULL);
	free(data);
	ember_header_free(&h);
}

/* A stale working set (another chain) is ignored with a warning, never
 * used: the server runs lazily, records a new one in its place, and every
 * byte the VMM reads is right. */
static void test_ws_stale(void)
{
	char ws[PATH_MAX], m[PATH_MAX], why[256] = "";
	uint64_t offs[2] = {0, PAGE}, *back = NULL, ps;
	struct ember_header h, other;
	enum ember_hdr_error err;
	struct run run;
	size_t n = 0;
	json_t *j;

	snprintf(ws, sizeof(ws), "%s/stale.ws", tmpdir);
	snprintf(m, sizeof(m), "%s/metrics-stale.json", tmpdir);
	CHECK(ember_header_load(hdr_path, &h, &err) == 0);
	if (test_failures)
		return;
	other = h;
	other.base_id.b[3] ^= 0x40;
	CHECK(ws_write(ws, &other, PAGE, offs, 2) == 0);
	{
		const char *extra[] = {"--metrics-path", m, "--prefetch", ws,
				       "--record-ws", ws,
				       "--ready-after-prefetch", NULL};

		CHECK(start_server_v(&run, extra) == 0);
	}
	start_vmm(&run, SUBSET, false);
	CHECK(fv_wait_line(run.out_fd, "ready", 10000) == 0);
	CHECK(fv_wait(run.vmm_pid, 60000) == 0);
	CHECK(fv_wait(run.uffd_pid, 10000) == 0);
	close(run.out_fd);
	j = read_metrics(m);
	CHECK(j && metric(j, "prefetched_pages") == 0);
	CHECK(j && strcmp(json_string_value(json_object_get(j, "mode")),
			  "record") == 0);
	CHECK(j && metric(j, "faults") >= N_PAGES / 3);
	CHECK(ws_read(ws, &h, &ps, &back, &n, why, sizeof(why)) == 0);
	CHECK(j && n == metric(j, "faults"));
	json_decref(j);
	free(back);
	ember_header_free(&h);
}

/* Eager: every page installed before "ready"; the VMM then faults none. */
static void test_eager(void)
{
	char m[PATH_MAX];
	struct run run;
	json_t *j;

	snprintf(m, sizeof(m), "%s/metrics-eager.json", tmpdir);
	CHECK(start_server(&run, "--metrics-path", m, "--prefetch-all",
			   "--ready-after-prefetch") == 0);
	start_vmm(&run, SUBSET, true);
	CHECK(fv_wait_line(run.out_fd, "prefetched", 10000) == 0);
	CHECK(fv_wait_line(run.out_fd, "ready", 10000) == 0);
	CHECK(write(run.go_w, "g", 1) == 1);
	close(run.go_w);
	CHECK(fv_wait(run.vmm_pid, 60000) == 0);
	CHECK(fv_wait(run.uffd_pid, 10000) == 0);
	close(run.out_fd);
	j = read_metrics(m);
	CHECK(j && metric(j, "faults") == 0);
	CHECK(j && metric(j, "prefetched_pages") == N_PAGES);
	CHECK(j && strcmp(json_string_value(json_object_get(j, "mode")),
			  "eager") == 0);
	json_decref(j);
}

static void test_vmm_killed(void)
{
	struct run run;

	CHECK(start_server(&run, NULL, NULL, NULL, NULL) == 0);
	start_vmm(&run, IDLE, false);
	CHECK(fv_wait_line(run.out_fd, "ready", 10000) == 0);
	kill(run.vmm_pid, SIGKILL);
	waitpid(run.vmm_pid, NULL, 0);
	CHECK(fv_wait(run.uffd_pid, 10000) == 0);
	close(run.out_fd);

	/* SIGTERM before any VMM connected: a clean exit too. */
	CHECK(start_server(&run, NULL, NULL, NULL, NULL) == 0);
	kill(run.uffd_pid, SIGTERM);
	CHECK(fv_wait(run.uffd_pid, 10000) == 0);
	close(run.out_fd);
	CHECK(access(sock_path, F_OK) < 0);
}

static void test_bad_regions(void)
{
	struct run run;
	int st;

	CHECK(start_server(&run, NULL, NULL, NULL, NULL) == 0);
	start_vmm(&run, BAD_REGIONS, false);
	st = fv_wait(run.uffd_pid, 10000);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	st = fv_wait(run.vmm_pid, 10000);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	close(run.out_fd);
}

static void expect_startup_failure(const char *header)
{
	char *argv[] = {(char *)uffd_bin, "--socket", sock_path, "--header",
			(char *)header, NULL};
	int fd, st;
	pid_t pid = fv_spawn(argv, &fd);

	st = fv_wait(pid, 10000);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	CHECK(access(sock_path, F_OK) < 0);
	close(fd);
}

static void test_bad_files(void)
{
	char bad[PATH_MAX], layer[PATH_MAX], moved[PATH_MAX + 8];
	struct ember_header h;
	enum ember_hdr_error err;
	char *argv[] = {(char *)uffd_bin, "--bogus", NULL};
	int fd;

	snprintf(bad, sizeof(bad), "%s/garbage.hdr", tmpdir);
	CHECK(ember_write_file_atomic(bad, "EMBERHDR nonsense", 17, 0644) ==
	      0);
	expect_startup_failure(bad);
	/* A missing layer. */
	CHECK(ember_header_load(hdr_path, &h, &err) == 0);
	ember_layer_path(tmpdir, &h.layers[0].id, layer, sizeof(layer));
	snprintf(moved, sizeof(moved), "%s.moved", layer);
	CHECK(rename(layer, moved) == 0);
	expect_startup_failure(hdr_path);
	CHECK(rename(moved, layer) == 0);
	ember_header_free(&h);
	/* A usage error. */
	{
		pid_t pid = fv_spawn(argv, &fd);
		int st = fv_wait(pid, 10000);

		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
		close(fd);
	}
}

int main(int argc, char **argv)
{
	char cmd[PATH_MAX + 16];

	if (argc != 2) {
		fprintf(stderr, "usage: test-uffd PATH-TO-ember-uffd\n");
		return 2;
	}
	uffd_bin = argv[1];
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(tmpdir))
		return 1;
	snprintf(sock_path, sizeof(sock_path), "%s/uffd.sock", tmpdir);
	model = malloc(TOTAL);
	REQUIRE(model && build_chain() == 0);

	test_full();
	test_prefetch();
	test_ws_file();
	test_ws_stale();
	test_eager();
	test_vmm_killed();
	test_bad_regions();
	test_bad_files();

	free(model);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return test_summary("uffd");
}
