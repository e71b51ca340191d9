/* SPDX-License-Identifier: Apache-2.0 */
/* A triple fault on vCPU 1 while vCPU 0 runs: the VM ends as a crash, and
 * the log shows vCPU 0's registers too, taken after it left KVM_RUN (on
 * AMD hosts the faulting vCPU's own registers are already reset when KVM
 * reports the fault, so the other vCPUs' are what is left to look at). */
#include <stdlib.h>
#include <unistd.h>

#include "guest_run.h"
#include "test.h"

int main(int argc, char **argv)
{
	char log_path[] = "/tmp/test-triple-ap-XXXXXX";
	struct guest g;
	char *out, *log = NULL, *line;
	int fd;

	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-triple-ap", NULL);
	fd = mkstemp(log_path);
	REQUIRE(fd >= 0);
	close(fd);
	REQUIRE(ember_log_set_file(log_path) == 0);
	REQUIRE(guest_create(&g, argv[1], 2) == 0);
	CHECK(guest_run(&g) == MACHINE_END_CRASH);
	out = guest_serial(&g);
	CHECK(strcmp(out, "vCPU 1 faults\n") == 0);
	free(out);
	guest_destroy(&g); /* joins the vCPU threads: their lines are out */
	REQUIRE(ember_read_file(log_path, 1 << 20, &log, NULL) >= 0);
	CHECK(strstr(log, "vCPU 1: triple fault") != NULL);
	CHECK(strstr(log, "vCPU 0 was running when the guest crashed") != NULL);
	/* vCPU 0 was on its `jmp spin` (eb fe). */
	line = strstr(log, "vCPU 0: bytes at RIP");
	CHECK(line && strstr(line, "): eb fe ") != NULL);
	if (!line || !strstr(line, "): eb fe "))
		fprintf(stderr, "log:\n%s\n", log);
	free(log);
	unlink(log_path);
	return test_summary("vmm-machine-triple-fault-ap");
}
