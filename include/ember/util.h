/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small helpers every program uses. All return 0 (or a count) on success and
 * a negative errno on failure; none of them logs.
 */
#ifndef EMBER_UTIL_H
#define EMBER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define EMBER_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define EMBER_ALIGN_UP(x, a) (((x) + (a) - 1) & ~((__typeof__(x))(a) - 1))
#define EMBER_MIN(a, b) ((a) < (b) ? (a) : (b))
#define EMBER_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Exit statuses shared by every program (DESIGN.md). */
enum { EMBER_EXIT_OK = 0, EMBER_EXIT_FAILURE = 1, EMBER_EXIT_USAGE = 2 };

/* Reads or writes exactly len bytes, retrying on EINTR and short transfers.
 * ember_read_full returns the number of bytes read (less than len only at
 * end of file). */
ssize_t ember_read_full(int fd, void *buf, size_t len);
int ember_write_full(int fd, const void *buf, size_t len);
ssize_t ember_pread_full(int fd, void *buf, size_t len, off_t off);
int ember_pwrite_full(int fd, const void *buf, size_t len, off_t off);

/* Reads a whole file (at most max bytes) into a NUL-terminated malloc'd
 * buffer. *len_out (optional) gets its length. */
int ember_read_file(const char *path, size_t max, char **out, size_t *len_out);

/* Writes a file atomically: a temporary name in the same folder, fsync,
 * rename over path, fsync of the folder. A crash leaves either the old file
 * or the new one, never a partial one. */
int ember_write_file_atomic(const char *path, const void *buf, size_t len,
			    mode_t mode);

/* Opens "<path>.tmp.<pid>" for writing (O_TRUNC, close-on-exec) and returns
 * the fd; ember_atomic_commit fsyncs, closes, renames onto path and fsyncs
 * the folder; ember_atomic_abort closes and unlinks. For writers that
 * stream large files. tmp must hold PATH_MAX bytes. */
int ember_atomic_open(const char *path, char *tmp, mode_t mode);
int ember_atomic_commit(int fd, const char *tmp, const char *path);
void ember_atomic_abort(int fd, const char *tmp);

/* fsyncs the folder that holds path. */
int ember_fsync_parent(const char *path);

/* mkdir -p with the given mode for every folder it creates. */
int ember_mkdir_p(const char *path, mode_t mode);

/* Parses a decimal unsigned integer that must fill the whole string. */
int ember_parse_u64(const char *s, uint64_t *out);

/* Parses a size such as "128", "128K", "64M", "2G" (binary units). */
int ember_parse_size(const char *s, uint64_t *out);

/* CLOCK_MONOTONIC and CLOCK_REALTIME in nanoseconds. */
uint64_t ember_now_ns(void);
uint64_t ember_realtime_ns(void);

/* close() that ignores a negative fd and keeps errno. Sets *fd to -1. */
void ember_close(int *fd);

#endif
