/* SPDX-License-Identifier: Apache-2.0 */
/* Several vCPUs run at once, each sees its own APIC id in CPUID and
 * writes it; the first waits for all of them. Each also sees the LAPIC's
 * TSC-deadline mode in CPUID where KVM has it (without it, Linux in the
 * nested host fell back to the PIT with broadcast ticks). */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "guest_run.h"
#include "test.h"

static bool kvm_has_tsc_deadline(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	bool has;

	if (fd < 0)
		return false;
	has = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	close(fd);
	return has;
}

static void run(const char *image, unsigned n)
{
	struct guest g;
	uint8_t count = (uint8_t)n, *data;
	char *out;

	if (guest_create(&g, image, n) != 0) {
		CHECK(!"guest created");
		guest_destroy(&g);
		return;
	}
	CHECK(machine_write_guest(g.m, GUEST_DATA + 0x100, &count, 1) == 0);
	CHECK(guest_run(&g) == MACHINE_END_RESET);
	data = machine_gpa_to_hva(g.m, GUEST_DATA, 0x200 + 4 * n);
	for (unsigned i = 0; i < n; i++)
		CHECK(data[i] == i + 1);
	for (unsigned i = 0; i < n; i++) {
		uint32_t ecx;

		memcpy(&ecx, data + 0x200 + 4 * i, 4);
		CHECK(!!(ecx & (1u << 24)) == kvm_has_tsc_deadline());
	}
	out = guest_serial(&g);
	CHECK(strcmp(out, "all vCPUs checked in\n") == 0);
	free(out);
	guest_destroy(&g);
}

int main(int argc, char **argv)
{
	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-smp", NULL);
	run(argv[1], 2);
	run(argv[1], 4);
	return test_summary("vmm-machine-smp");
}
