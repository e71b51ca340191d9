/* SPDX-License-Identifier: Apache-2.0 */
/* The i8042 reset done by vCPU 1 while vCPU 0 is stopped with interrupts
 * off (Linux rebooting after a panic on its second CPU, reboot=k) ends the
 * VM as a reboot (status 0), not as the crash of the triple fault the
 * guest would fall through to if the reset did not take. */
#include "guest_run.h"
#include "test.h"

int main(int argc, char **argv)
{
	struct guest g;
	char *out;

	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-i8042-ap", NULL);
	for (int i = 0; i < 5; i++) {
		REQUIRE(guest_create(&g, argv[1], 2) == 0);
		CHECK(guest_run(&g) == MACHINE_END_RESET);
		out = guest_serial(&g);
		CHECK(strcmp(out, "vCPU 1 resets\n") == 0);
		free(out);
		guest_destroy(&g);
	}
	return test_summary("vmm-machine-i8042-ap");
}
