/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The boot timer: the guest's init writes the byte 123 to I/O port 0x3f0
 * once it is up; with --boot-timer the VMM logs the time since the vCPUs
 * started. Without it the write is ignored.
 */
#include "ember/log.h"
#include "ember/util.h"
#include "machine.h"

static void boot_timer_io(void *opaque, uint64_t off, uint8_t *data,
			  unsigned len, bool is_write)
{
	struct machine *m = opaque;
	uint64_t ns;

	if (!is_write || len != 1 || data[0] != BOOT_TIMER_MAGIC ||
	    !m->boot_timer)
		return;
	ns = ember_now_ns() - m->start_ns;
	olog_info(m->id[0] ? m->id : NULL, "guest boot completed in %llu ms",
		  (unsigned long long)(ns / 1000000));
}

int boot_timer_setup(struct machine *m)
{
	return machine_add_device(m, "boot-timer", MACHINE_BUS_PIO,
				  BOOT_TIMER_PORT, 1, boot_timer_io, NULL, m);
}
