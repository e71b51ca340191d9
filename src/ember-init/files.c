// SPDX-License-Identifier: Apache-2.0
/*
 * File requests: write (streamed in DATA_IN frames into a temporary file
 * beside the target, renamed over it on EOF_IN), read (streamed out in
 * DATA_OUT frames as fast as the connection drains), stat, list, remove.
 * Paths must be absolute. No file is ever held whole in memory.
 */
#include "init.h"

#include <ember/log.h>
#include <ember/util.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Room left in a list answer for the JSON around the entries. */
#define LIST_SLACK 4096

static const char *req_path(struct conn *c, uint32_t id, json_t *req,
			    const char *op)
{
	const char *path = json_string_value(json_object_get(req, "path"));

	if (!path || path[0] != '/' || strlen(path) >= PATH_MAX - 64) {
		conn_send_error(c, id, EINVAL,
				"%s: \"path\" must be an absolute path", op);
		return NULL;
	}
	return path;
}

static int parent_dir(const char *path, char *dir, size_t size)
{
	char *slash;

	if (snprintf(dir, size, "%s", path) >= (int)size)
		return -ENAMETOOLONG;
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	return 0;
}

void file_write_start(struct conn *c, uint32_t id, json_t *req)
{
	static unsigned serial;
	const char *path = req_path(c, id, req, "write");
	json_t *mode = json_object_get(req, "mode");
	char dir[PATH_MAX];
	const char *base;
	struct stream *s;
	int r;

	if (!path)
		return;
	base = strrchr(path, '/') + 1;
	if (!*base) {
		conn_send_error(c, id, EISDIR, "write: %s names a folder", path);
		return;
	}
	parent_dir(path, dir, sizeof(dir));
	r = ember_mkdir_p(dir, 0755);
	if (r < 0) {
		conn_send_error(c, id, -r, "write: cannot create %s: %s", dir,
				strerror(-r));
		return;
	}
	s = stream_new(c, id, STREAM_WRITE);
	if (!s)
		return;
	s->mode = mode ? (unsigned)json_integer_value(mode) & 07777 : 0644;
	snprintf(s->path, sizeof(s->path), "%s", path);
	if (snprintf(s->tmp, sizeof(s->tmp), "%.3900s/.%.150s.ember-%d-%u",
		     strcmp(dir, "/") ? dir : "", base, (int)getpid(),
		     ++serial) >= (int)sizeof(s->tmp)) {
		conn_send_error(c, id, ENAMETOOLONG, "write: path too long");
		s->done = true;
		return;
	}
	s->fd = open(s->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (s->fd < 0) {
		conn_send_error(c, id, errno, "write: cannot create %s: %s",
				s->tmp, strerror(errno));
		s->done = true;
	}
}

void file_write_data(struct stream *s, const uint8_t *p, size_t len, bool eof)
{
	int r;

	if (!eof) {
		r = ember_write_full(s->fd, p, len);
		if (r < 0) {
			conn_send_error(s->conn, s->id, -r, "write: %s: %s",
					s->path, strerror(-r));
			file_detach(s);
			return;
		}
		s->size += len;
		return;
	}
	if (fchmod(s->fd, s->mode) < 0) {
		r = -errno;
		conn_send_error(s->conn, s->id, -r, "write: chmod %s: %s",
				s->path, strerror(-r));
		file_detach(s);
		return;
	}
	r = ember_atomic_commit(s->fd, s->tmp, s->path);
	s->fd = -1; /* closed by commit, tmp unlinked on failure */
	s->done = true;
	if (r < 0) {
		conn_send_error(s->conn, s->id, -r, "write: %s: %s", s->path,
				strerror(-r));
		return;
	}
	conn_send_json(s->conn, EMBER_AGENT_RESPONSE, s->id,
		       json_pack("{s:I}", "size", (json_int_t)s->size));
}

void file_read_start(struct conn *c, uint32_t id, json_t *req)
{
	const char *path = req_path(c, id, req, "read");
	struct stat st;
	struct stream *s;
	int fd;

	if (!path)
		return;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		conn_send_error(c, id, errno, "read: %s: %s", path,
				strerror(errno));
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int e = fstat(fd, &st) < 0 ? errno
			: S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		conn_send_error(c, id, e, "read: %s: not a regular file", path);
		close(fd);
		return;
	}
	s = stream_new(c, id, STREAM_READ);
	if (!s) {
		close(fd);
		return;
	}
	s->fd = fd;
	snprintf(s->path, sizeof(s->path), "%s", path);
}

void file_read_pump(struct stream *s)
{
	static uint8_t buf[EMBER_AGENT_CHUNK];
	ssize_t n;

	do {
		n = read(s->fd, buf, sizeof(buf));
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		conn_send_error(s->conn, s->id, errno, "read: %s: %s", s->path,
				strerror(errno));
		file_detach(s);
		return;
	}
	if (n == 0) {
		conn_send_json(s->conn, EMBER_AGENT_RESPONSE, s->id,
			       json_pack("{s:I}", "size", (json_int_t)s->size));
		file_detach(s);
		return;
	}
	s->size += (uint64_t)n;
	conn_send(s->conn, EMBER_AGENT_DATA_OUT, s->id, buf, (size_t)n);
}

void file_detach(struct stream *s)
{
	if (s->kind == STREAM_WRITE && s->fd >= 0)
		ember_atomic_abort(s->fd, s->tmp);
	else
		ember_close(&s->fd);
	s->fd = -1;
	s->done = true;
}

static const char *type_name(mode_t mode)
{
	if (S_ISREG(mode))
		return "file";
	if (S_ISDIR(mode))
		return "dir";
	if (S_ISLNK(mode))
		return "symlink";
	return "other";
}

static json_t *stat_json(const struct stat *st)
{
	return json_pack("{s:s, s:i, s:I, s:i, s:i, s:I}", "type",
			 type_name(st->st_mode), "mode",
			 (int)(st->st_mode & 07777), "size",
			 (json_int_t)st->st_size, "uid", (int)st->st_uid,
			 "gid", (int)st->st_gid, "mtime_ns",
			 (json_int_t)st->st_mtim.tv_sec * 1000000000 +
				 st->st_mtim.tv_nsec);
}

void file_stat(struct conn *c, uint32_t id, json_t *req)
{
	const char *path = req_path(c, id, req, "stat");
	struct stat st;
	json_t *j;

	if (!path)
		return;
	if (lstat(path, &st) < 0) {
		conn_send_error(c, id, errno, "stat: %s: %s", path,
				strerror(errno));
		return;
	}
	j = stat_json(&st);
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n >= 0) {
			target[n] = '\0';
			json_object_set_new(j, "target", json_string(target));
		}
	}
	conn_send_json(c, EMBER_AGENT_RESPONSE, id, j);
}

void file_list(struct conn *c, uint32_t id, json_t *req)
{
	const char *path = req_path(c, id, req, "list");
	json_t *entries, *e;
	struct dirent *de;
	size_t budget = EMBER_AGENT_MAX_PAYLOAD - LIST_SLACK;
	bool truncated = false;
	DIR *d;

	if (!path)
		return;
	d = opendir(path);
	if (!d) {
		conn_send_error(c, id, errno, "list: %s: %s", path,
				strerror(errno));
		return;
	}
	entries = json_array();
	while ((de = readdir(d))) {
		struct stat st;
		size_t cost;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* removed meanwhile */
		/* JSON escaping at most sextuples a byte; fields add ~120. */
		cost = strlen(de->d_name) * 6 + 128;
		if (cost > budget) {
			truncated = true;
			/* TODO(init): page large folders instead of cutting. */
			break;
		}
		budget -= cost;
		e = stat_json(&st);
		/* TODO(init): names that are not UTF-8 are left out. */
		if (json_object_set_new(e, "name", json_string(de->d_name))) {
			json_decref(e);
			continue;
		}
		json_array_append_new(entries, e);
	}
	closedir(d);
	conn_send_json(c, EMBER_AGENT_RESPONSE, id,
		       json_pack("{s:o, s:b}", "entries", entries, "truncated",
				 truncated));
}

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP || flag == FTW_D)
		return rmdir(path) < 0 ? errno : 0;
	return unlink(path) < 0 ? errno : 0;
}

void file_remove(struct conn *c, uint32_t id, json_t *req)
{
	const char *path = req_path(c, id, req, "remove");
	bool recursive = json_is_true(json_object_get(req, "recursive"));
	struct stat st;
	int r = 0;

	if (!path)
		return;
	if (strcmp(path, "/") == 0) {
		conn_send_error(c, id, EPERM, "remove: refusing to remove /");
		return;
	}
	if (lstat(path, &st) < 0) {
		r = errno;
	} else if (!S_ISDIR(st.st_mode)) {
		r = unlink(path) < 0 ? errno : 0;
	} else if (!recursive) {
		r = rmdir(path) < 0 ? errno : 0;
	} else {
		r = nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
		if (r < 0)
			r = errno;
	}
	if (r) {
		conn_send_error(c, id, r, "remove: %s: %s", path, strerror(r));
		return;
	}
	conn_send_json(c, EMBER_AGENT_RESPONSE, id, json_object());
}
