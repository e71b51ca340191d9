// SPDX-License-Identifier: Apache-2.0
/*
 * Fault service latency for 4 KiB pages through ember-uffd, against a floor
 * measured in the same run: an in-process handler thread doing memcpy plus
 * UFFDIO_COPY. Latency is what the faulting thread sees: the time of its
 * first read of each page. Prints one JSON line:
 *
 *   {"fault_p50_us":..,"fault_p99_us":..,"fault_floor_us":..,
 *    "fault_floor_p99_us":..,"pages":..}
 *
 * Usage: bench-uffd PATH-TO-ember-uffd [PAGES]
 */
#include <ember/header.h>

#include "../../tests/unit/uffd/fake_vmm.h"

#include <limits.h>
#include <pthread.h>

#define PAGE 4096u

static char tmpdir[] = "/tmp/ember-bench-uffd.XXXXXX";

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return (double)v[(size_t)(p / 100.0 * (double)(n - 1) + 0.5)] / 1000.0;
}

/* Touches each page once; lat[i] gets the first read's time. */
static uint64_t touch(volatile uint8_t *mem, size_t pages, uint64_t *lat)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < pages; i++) {
		uint64_t t0 = ember_now_ns();

		sum += mem[i * PAGE];
		lat[i] = ember_now_ns() - t0;
	}
	return sum;
}

struct floor_handler {
	int uffd;
	const uint8_t *src;
	uint64_t base;
	size_t pages;
};

static void *floor_thread(void *arg)
{
	struct floor_handler *f = arg;
	uint8_t *bounce = aligned_alloc(PAGE, PAGE);
	size_t served = 0;

	while (served < f->pages) {
		struct pollfd p = {.fd = f->uffd, .events = POLLIN};
		struct uffd_msg m;
		struct uffdio_copy c;
		uint64_t page;

		if (poll(&p, 1, 10000) <= 0)
			break;
		if (read(f->uffd, &m, sizeof(m)) != sizeof(m) ||
		    m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		page = m.arg.pagefault.address & ~(uint64_t)(PAGE - 1);
		memcpy(bounce, f->src + (page - f->base), PAGE);
		c = (struct uffdio_copy){.dst = page,
					 .src = (uintptr_t)bounce,
					 .len = PAGE};
		if (ioctl(f->uffd, UFFDIO_COPY, &c) == 0 || errno == EEXIST)
			served++;
	}
	free(bounce);
	return NULL;
}

static int run_floor(const uint8_t *src, size_t pages, uint64_t *lat)
{
	size_t len = pages * PAGE;
	uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct floor_handler f = {.src = src, .pages = pages};
	pthread_t th;

	f.uffd = fv_userfaultfd(0);
	if (mem == MAP_FAILED || f.uffd < 0 || fv_register(f.uffd, mem, len))
		return -1;
	f.base = (uintptr_t)mem;
	pthread_create(&th, NULL, floor_thread, &f);
	touch(mem, pages, lat);
	pthread_join(th, NULL);
	munmap(mem, len);
	close(f.uffd);
	return 0;
}

static int run_server(const char *bin, const char *hdr, size_t pages,
		      uint64_t *lat)
{
	char sock[PATH_MAX];
	char *argv[] = {(char *)bin, "--socket", sock, "--header", (char *)hdr,
			"--log-level", "warn", NULL};
	size_t len = pages * PAGE;
	uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ember_uffd_region r = {.size = len, .page_size = PAGE};
	int uffd = fv_userfaultfd(0), out, st;
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/uffd.sock", tmpdir);
	if (mem == MAP_FAILED || uffd < 0 || fv_register(uffd, mem, len))
		return -1;
	r.base_host_virt_addr = (uintptr_t)mem;
	pid = fv_spawn(argv, &out);
	if (pid < 0 || fv_wait_line(out, "listening", 10000) ||
	    fv_handshake(sock, uffd, &r, 1) ||
	    fv_wait_line(out, "ready", 10000)) {
		fprintf(stderr, "bench-uffd: ember-uffd did not start\n");
		return -1;
	}
	touch(mem, pages, lat);
	kill(pid, SIGTERM);
	st = fv_wait(pid, 10000);
	close(out);
	munmap(mem, len);
	close(uffd);
	return st == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	size_t pages = 16384, len;
	char mem_path[PATH_MAX], hdr[PATH_MAX], why[256], cmd[PATH_MAX + 16];
	const char *dirs[] = {tmpdir};
	struct ember_build_opts o = {.mem_path = mem_path, .out_dir = tmpdir,
				     .kind = EMBER_MEM_FULL};
	struct ember_header h;
	struct ember_chain c;
	uint64_t *lat, *flat;
	uint8_t *src;
	int rc = 1;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: bench-uffd PATH-TO-ember-uffd "
				"[PAGES]\n");
		return 2;
	}
	if (argc == 3)
		pages = strtoul(argv[2], NULL, 10);
	if (pages < 16 || !mkdtemp(tmpdir))
		return 2;
	len = pages * PAGE;
	src = malloc(len);
	lat = malloc(pages * sizeof(*lat));
	flat = malloc(pages * sizeof(*flat));
	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 2654435761u >> 13) | 1;
	snprintf(mem_path, sizeof(mem_path), "%s/mem", tmpdir);
	if (ember_write_file_atomic(mem_path, src, len, 0644) ||
	    ember_layer_build(&o, &h, why, sizeof(why))) {
		fprintf(stderr, "bench-uffd: build: %s\n", why);
		goto out;
	}
	ember_header_path(tmpdir, &h.id, hdr, sizeof(hdr));
	/* Warm the page cache of the layer, as for a template in use. */
	if (ember_chain_open(&c, &h, dirs, 1, true, why, sizeof(why)) == 0)
		ember_chain_close(&c);
	if (run_floor(src, pages, flat) || run_server(argv[1], hdr, pages, lat))
		goto out;
	printf("{\"fault_p50_us\":%.2f,\"fault_p99_us\":%.2f,"
	       "\"fault_floor_us\":%.2f,\"fault_floor_p99_us\":%.2f,"
	       "\"pages\":%zu}\n",
	       pct_us(lat, pages, 50), pct_us(lat, pages, 99),
	       pct_us(flat, pages, 50), pct_us(flat, pages, 99), pages);
	rc = 0;
	ember_header_free(&h);
out:
	free(src);
	free(lat);
	free(flat);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return rc;
}
