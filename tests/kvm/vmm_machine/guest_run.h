/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The harness of the machine's kvm tests: builds a small machine (serial
 * to a file, i8042, boot timer), loads a flat guest program at GUEST_LOAD
 * and starts every vCPU in long mode there.
 */
#ifndef EMBER_TEST_GUEST_RUN_H
#define EMBER_TEST_GUEST_RUN_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ember/log.h"
#include "ember/util.h"
#include "machine.h"

#define GUEST_LOAD 0x10000ULL
#define GUEST_DATA 0x30000ULL
#define GUEST_MEM (16ULL << 20)
#define GUEST_TIMEOUT_MS 60000
#define TEST_SKIP 77

struct guest {
	struct machine *m;
	char serial_path[64];
};

/* 77 (meson's "skipped") when this host has no usable /dev/kvm. */
static inline int guest_kvm_missing(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "no /dev/kvm: %s; skipped\n", strerror(errno));
		return 1;
	}
	close(fd);
	return 0;
}

static inline int guest_create(struct guest *g, const char *image,
			       unsigned vcpus)
{
	struct machine_config mc = {
		.id = "test",
		.vcpu_count = vcpus,
		.mem_size = GUEST_MEM,
		.boot_timer = true,
	};
	int fd, ret;

	memset(g, 0, sizeof(*g));
	snprintf(g->serial_path, sizeof(g->serial_path),
		 "/tmp/ember-serial-XXXXXX");
	fd = mkstemp(g->serial_path);
	if (fd < 0)
		return -errno;
	close(fd);
	mc.serial_out_path = g->serial_path;
	ret = machine_create(&mc, &g->m);
	if (ret)
		return ret;
	if ((ret = serial_setup(g->m, g->serial_path)) ||
	    (ret = i8042_setup(g->m)) || (ret = boot_timer_setup(g->m)))
		return ret;
	ret = machine_load_file(g->m, image, GUEST_LOAD, NULL);
	if (ret)
		return ret;
	for (unsigned i = 0; i < vcpus; i++) {
		ret = machine_set_entry(g->m, i, MACHINE_MODE_LONG, GUEST_LOAD,
					0x8000 - 0x100 * i);
		if (ret)
			return ret;
	}
	return 0;
}

/* Runs the guest to its end; returns the end reason or -ETIMEDOUT. */
static inline int guest_run(struct guest *g)
{
	int ret = machine_start(g->m);

	if (ret)
		return ret;
	return machine_wait(g->m, GUEST_TIMEOUT_MS);
}

/* The serial output so far (malloc'd, NUL-terminated; "" on error). */
static inline char *guest_serial(struct guest *g)
{
	char *buf = NULL;

	if (ember_read_file(g->serial_path, 1 << 20, &buf, NULL) < 0)
		return strdup("");
	return buf;
}

static inline void guest_destroy(struct guest *g)
{
	machine_destroy(g->m);
	g->m = NULL;
	if (g->serial_path[0])
		unlink(g->serial_path);
}

#endif
