// SPDX-License-Identifier: Apache-2.0
/*
 * boot-ready: tells the monitor that the guest has booted, the way
 * Firecracker's guests do: the byte 123 written to I/O port 0x3f0 (its
 * "boot timer" device). On a machine with nothing at that port (QEMU
 * microvm) the write goes nowhere, so it is always safe to call.
 *
 * Linked statically: the base image has no C library.
 * Exit status: 0 written, 1 the port could not be opened (reported on
 * stderr; /init carries on without it).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/io.h>

#define BOOT_TIMER_PORT	 0x3f0
#define BOOT_TIMER_MAGIC 123

int main(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "--help") == 0 ||
			 strcmp(argv[1], "--version") == 0)) {
		printf("boot-ready " EMBER_VERSION ": writes %d to I/O port "
		       "0x%x (Firecracker's boot timer)\n",
		       BOOT_TIMER_MAGIC, BOOT_TIMER_PORT);
		return 0;
	}
	if (ioperm(BOOT_TIMER_PORT, 1, 1) < 0) {
		fprintf(stderr, "boot-ready: ioperm(0x%x): %s\n",
			BOOT_TIMER_PORT, strerror(errno));
		return 1;
	}
	outb(BOOT_TIMER_MAGIC, BOOT_TIMER_PORT);
	return 0;
}
