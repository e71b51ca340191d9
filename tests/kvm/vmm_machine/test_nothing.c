/* SPDX-License-Identifier: Apache-2.0 */
/* I/O-port and MMIO accesses to no device read all ones and do not stop
 * the VM. */
#include "guest_run.h"
#include "test.h"

int main(int argc, char **argv)
{
	struct guest g;
	char *out;

	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-nothing", NULL);
	ember_log_set_level(EMBER_LOG_DEBUG); /* the accesses are logged */
	REQUIRE(guest_create(&g, argv[1], 1) == 0);
	CHECK(guest_run(&g) == MACHINE_END_RESET);
	out = guest_serial(&g);
	CHECK(strcmp(out, "still running\n") == 0);
	free(out);
	guest_destroy(&g);
	return test_summary("vmm-machine-nothing");
}
