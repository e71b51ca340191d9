/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VMM's side of Firecracker's UFFD handshake, for tests and the
 * benchmark: make a userfaultfd, register anonymous memory with it, start
 * the real ember-uffd, connect and send the regions with the fd.
 */
#ifndef EMBER_TEST_FAKE_VMM_H
#define EMBER_TEST_FAKE_VMM_H

#include <ember/uffd.h>
#include <ember/util.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

/* A userfaultfd with the given features, or -errno. */
static inline int fv_userfaultfd(uint64_t features)
{
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);

	if (fd < 0) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		if (dev < 0)
			return -errno;
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
		close(dev);
		if (fd < 0)
			return -errno;
	}
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	return fd;
}

static inline int fv_register(int uffd, void *addr, uint64_t len)
{
	struct uffdio_register r = {
		.range = {.start = (uint64_t)(uintptr_t)addr, .len = len},
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};

	return ioctl(uffd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

/* Connects and sends the regions and the fd, as Firecracker does. */
static inline int fv_handshake(const char *socket_path, int uffd,
			       const struct ember_uffd_region *r, size_t n)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char *json = ember_uffd_format_regions(r, n);
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf)};
	struct cmsghdr *c;
	int fd, rc = 0;

	if (!json)
		return -ENOMEM;
	iov = (struct iovec){.iov_base = json, .iov_len = strlen(json)};
	memset(ctl.buf, 0, sizeof(ctl.buf));
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &uffd, sizeof(int));
	if (strlen(socket_path) >= sizeof(a.sun_path)) {
		free(json);
		return -ENAMETOOLONG;
	}
	memcpy(a.sun_path, socket_path, strlen(socket_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    sendmsg(fd, &mh, 0) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(json);
	return rc;
}

/* Starts ember-uffd with argv (NULL-terminated, argv[0] the binary);
 * *out_fd reads its stdout. */
static inline pid_t fv_spawn(char *const argv[], int *out_fd)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	*out_fd = p[0];
	return pid;
}

/* Reads stdout lines until one starts with prefix. 0, or -ETIMEDOUT /
 * -EPIPE (it ended first). */
static inline int fv_wait_line(int fd, const char *prefix, int timeout_ms)
{
	char line[256];
	size_t len = 0;
	uint64_t deadline = ember_now_ns() + (uint64_t)timeout_ms * 1000000;

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		uint64_t now = ember_now_ns();
		ssize_t n;
		char ch;

		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)((deadline - now) / 1000000) + 1) <= 0)
			continue;
		n = read(fd, &ch, 1);
		if (n <= 0)
			return -EPIPE;
		if (ch != '\n') {
			if (len < sizeof(line) - 1)
				line[len++] = ch;
			continue;
		}
		line[len] = '\0';
		len = 0;
		if (!strncmp(line, prefix, strlen(prefix)))
			return 0;
	}
}

/* waitpid with a timeout; on timeout kills the child. Returns the wait
 * status, or -1 on timeout. */
static inline int fv_wait(pid_t pid, int timeout_ms)
{
	uint64_t deadline = ember_now_ns() + (uint64_t)timeout_ms * 1000000;
	int status;

	while (ember_now_ns() < deadline) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		usleep(2000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

#endif
