/* SPDX-License-Identifier: Apache-2.0 */
/* The i8042 answers its self-test and its reset command ends the VM with
 * the status of a reboot (0). */
#include "guest_run.h"
#include "test.h"

int main(int argc, char **argv)
{
	struct guest g;
	char *out;

	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-i8042", NULL);
	REQUIRE(guest_create(&g, argv[1], 1) == 0);
	CHECK(guest_run(&g) == MACHINE_END_RESET);
	out = guest_serial(&g);
	CHECK(strcmp(out, "self-test ok\n") == 0);
	free(out);
	/* Ctrl-Alt-Del after the end is harmless. */
	CHECK(i8042_ctrl_alt_del(g.m) == 0);
	guest_destroy(&g);
	return test_summary("vmm-machine-i8042");
}
