/* SPDX-License-Identifier: Apache-2.0 */
/* A triple fault ends the VM as a crash (status 1 for the front end),
 * after the serial output that came before it. */
#include "guest_run.h"
#include "test.h"

int main(int argc, char **argv)
{
	struct guest g;
	char *out;

	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-triple", NULL);
	REQUIRE(guest_create(&g, argv[1], 1) == 0);
	CHECK(guest_run(&g) == MACHINE_END_CRASH);
	out = guest_serial(&g);
	CHECK(strcmp(out, "about to fault\n") == 0);
	free(out);
	guest_destroy(&g);
	return test_summary("vmm-machine-triple-fault");
}
