// SPDX-License-Identifier: Apache-2.0
/*
 * A sandbox's private rootfs: a reflink (FICLONE) of its template's image
 * where the filesystem shares extents (XFS, Btrfs), else a sparse copy that
 * moves only the data extents (SEEK_DATA/SEEK_HOLE), so an ext4 image of
 * 1 GiB with 100 MiB used costs about 100 MiB.
 */
#include "agent.h"

#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (1u << 20)

/* Copies [off, end) of in to out at the same offsets. */
static int copy_range(int in, int out, off_t off, off_t end, char *buf)
{
	while (off < end) {
		size_t n = (size_t)EMBER_MIN((off_t)COPY_CHUNK, end - off);
		ssize_t got = ember_pread_full(in, buf, n, off);

		if (got < 0)
			return (int)got;
		if (got == 0)
			return -EIO; /* the file shrank under us */
		int r = ember_pwrite_full(out, buf, (size_t)got, off);
		if (r < 0)
			return r;
		off += got;
	}
	return 0;
}

static int sparse_copy(int in, int out, off_t size)
{
	char *buf = malloc(COPY_CHUNK);
	off_t data = 0, hole;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	if (ftruncate(out, size) < 0) {
		r = -errno;
		goto out;
	}
	while (data < size) {
		data = lseek(in, data, SEEK_DATA);
		if (data < 0) {
			r = errno == ENXIO ? 0 : -errno; /* ENXIO: only holes left */
			break;
		}
		hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0) {
			r = -errno;
			break;
		}
		r = copy_range(in, out, data, hole, buf);
		if (r < 0)
			break;
		data = hole;
	}
out:
	free(buf);
	return r;
}

int disk_copy(const char *src, const char *dst, bool *reflinked)
{
	struct stat st;
	char tmp[PATH_MAX];
	int in, out, r;

	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = S_ISREG(st.st_mode) ? -errno : -EINVAL;
		close(in);
		return r;
	}
	out = ember_atomic_open(dst, tmp, 0600);
	if (out < 0) {
		close(in);
		return out;
	}
	*reflinked = ioctl(out, FICLONE, in) == 0;
	r = *reflinked ? 0 : sparse_copy(in, out, st.st_size);
	close(in);
	if (r < 0) {
		ember_atomic_abort(out, tmp);
		return r;
	}
	return ember_atomic_commit(out, tmp, dst);
}

uint64_t disk_allocated(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return 0;
	return (uint64_t)st.st_blocks * 512;
}
