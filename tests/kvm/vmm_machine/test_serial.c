/* SPDX-License-Identifier: Apache-2.0 */
/* A guest writes a line to the 8250 UART; it lands in serial_out_path. */
#include "guest_run.h"
#include "test.h"

int main(int argc, char **argv)
{
	struct guest g;
	char log_path[] = "/tmp/ember-log-XXXXXX";
	char *out, *log = NULL;
	int fd;

	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-serial", NULL);
	fd = mkstemp(log_path);
	REQUIRE(fd >= 0);
	close(fd);
	REQUIRE(ember_log_set_file(log_path) == 0);
	REQUIRE(guest_create(&g, argv[1], 1) == 0);
	CHECK(guest_run(&g) == MACHINE_END_RESET);
	out = guest_serial(&g);
	CHECK(strcmp(out, "hello from the guest\n") == 0);
	free(out);
	/* The guest's write of 123 to port 0x3f0 is the boot timer. */
	CHECK(ember_read_file(log_path, 1 << 20, &log, NULL) >= 0);
	CHECK(log && strstr(log, "guest boot completed in "));
	free(log);
	unlink(log_path);
	guest_destroy(&g);
	return test_summary("vmm-machine-serial");
}
