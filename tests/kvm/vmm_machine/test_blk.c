/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A guest builds virtio-blk requests by hand (see guest_blk.S): it reads
 * sector 0 of a test disk, writes sector 1, asks the drive id and flushes.
 * Then the same guest against the disk attached read-only: the write must
 * fail with VIRTIO_BLK_S_IOERR and leave the disk as it was.
 */
#include <linux/virtio_blk.h>

#include "guest_run.h"
#include "test.h"

#define SECTOR 512

static int make_disk(char *path, uint8_t *sector0)
{
	uint8_t disk[4 * SECTOR];
	int fd;

	for (unsigned i = 0; i < sizeof(disk); i++)
		disk[i] = (uint8_t)(i * 7 + 3);
	memcpy(sector0, disk, SECTOR);
	fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	if (ember_write_full(fd, disk, sizeof(disk)) < 0) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

static void run(const char *image, bool read_only)
{
	char disk[] = "/tmp/ember-disk-XXXXXX";
	uint8_t sector0[SECTOR], pattern[SECTOR], got[SECTOR];
	uint8_t status_init[4] = { 0xff, 0xff, 0xff, 0xff };
	uint8_t *p;
	struct guest g;
	char *out;
	int fd;

	memset(pattern, 'W', sizeof(pattern));
	if (make_disk(disk, sector0) != 0) {
		CHECK(!"test disk created");
		return;
	}
	if (guest_create(&g, image, 1) != 0 ||
	    virtio_blk_setup(g.m, disk, read_only, "test-drive") != 0) {
		CHECK(!"guest created");
		guest_destroy(&g);
		unlink(disk);
		return;
	}
	CHECK(machine_write_guest(g.m, 0x46000, pattern, SECTOR) == 0);
	CHECK(machine_write_guest(g.m, 0x45000, status_init, 4) == 0);
	CHECK(guest_run(&g) == MACHINE_END_RESET);
	out = guest_serial(&g);
	CHECK(strcmp(out, "requests done\n") == 0);
	free(out);

	p = machine_gpa_to_hva(g.m, 0x44000, SECTOR);
	CHECK(memcmp(p, sector0, SECTOR) == 0);
	p = machine_gpa_to_hva(g.m, 0x45000, 4);
	CHECK(p[0] == VIRTIO_BLK_S_OK);
	CHECK(p[1] == (read_only ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK));
	CHECK(p[2] == VIRTIO_BLK_S_OK);
	CHECK(p[3] == VIRTIO_BLK_S_OK);
	p = machine_gpa_to_hva(g.m, 0x47000, 20);
	CHECK(memcmp(p, "test-drive", 11) == 0);
	/* The used ring: 4 entries, the IN one with 512 + 1 bytes. */
	p = machine_gpa_to_hva(g.m, 0x42000, 4 + 8 * 4);
	CHECK(p[2] == 4);
	CHECK(p[4] == 0 && p[8] == 0x01 && p[9] == 0x02);
	guest_destroy(&g);

	fd = open(disk, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(ember_pread_full(fd, got, SECTOR, SECTOR) == SECTOR);
	if (read_only) {
		uint8_t before[SECTOR];

		for (unsigned i = 0; i < SECTOR; i++)
			before[i] = (uint8_t)((i + SECTOR) * 7 + 3);
		CHECK(memcmp(got, before, SECTOR) == 0);
	} else {
		CHECK(memcmp(got, pattern, SECTOR) == 0);
	}
	close(fd);
	unlink(disk);
}

int main(int argc, char **argv)
{
	REQUIRE(argc == 2);
	if (guest_kvm_missing())
		return TEST_SKIP;
	ember_log_init("test-blk", NULL);
	run(argv[1], false);
	run(argv[1], true);
	return test_summary("vmm-machine-virtio-blk");
}
