/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs ember-init as a normal process on a Unix socket in a temporary
 * folder, for the tests of the guest agent. The tests get the path of
 * ember-init (and ember-initctl) as arguments from meson.
 */
#ifndef EMBER_TEST_INIT_HARNESS_H
#define EMBER_TEST_INIT_HARNESS_H

#include <ember/agent_client.h>
#include <ember/util.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_TOKEN "test-token-0123456789"

struct test_agent {
	pid_t pid;
	char dir[64];
	char sock[128];
};

/* Starts ember-init and waits (10 s at most) for its ready line. */
static int agent_start(struct test_agent *t, const char *init_path,
		       const char *sandbox_id)
{
	char buf[256];
	size_t got = 0;
	int out[2];
	uint64_t end = ember_now_ns() + 10000000000ull;

	snprintf(t->dir, sizeof(t->dir), "/tmp/ember-test-init.XXXXXX");
	if (!mkdtemp(t->dir) || pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	snprintf(t->sock, sizeof(t->sock), "%s/agent.sock", t->dir);
	t->pid = fork();
	if (t->pid < 0)
		return -errno;
	if (t->pid == 0) {
		char listen[160];
		snprintf(listen, sizeof(listen), "unix:%s", t->sock);
		dup2(out[1], 1);
		execl(init_path, init_path, "--no-pid1", "--listen", listen,
		      "--token", TEST_TOKEN, "--sandbox-id", sandbox_id,
		      (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	while (!memmem(buf, got, "ember-guest: ready\n", 19)) {
		struct pollfd p = { .fd = out[0], .events = POLLIN };
		int left = (int)((end - EMBER_MIN(end, ember_now_ns())) / 1000000);
		ssize_t n;

		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		n = read(out[0], buf + got, sizeof(buf) - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(out[0]);
	return memmem(buf, got, "ember-guest: ready\n", 19) ? 0 : -ETIMEDOUT;
}

static int agent_connect(struct test_agent *t, struct ember_agent **a)
{
	return ember_agent_connect_unix(t->sock, TEST_TOKEN, 20000, a);
}

/* Descriptors ember-init holds now. */
static int agent_fd_count(struct test_agent *t)
{
	char path[64];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)t->pid);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Reads a /proc file (whose size stat does not tell). */
static int read_proc(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = ember_read_full(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return (int)n;
	buf[n] = '\0';
	return 0;
}

/* Children of ember-init still alive or unreaped. */
static int agent_child_count(struct test_agent *t)
{
	char path[64], data[4096];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)t->pid,
		 (int)t->pid);
	if (read_proc(path, data, sizeof(data)) < 0)
		return -1;
	for (char *p = strtok(data, " \n"); p; p = strtok(NULL, " \n"))
		n++;
	return n;
}

/* Waits up to 5 s for the counts to settle to the given values. */
static bool agent_settles(struct test_agent *t, int fds, int children)
{
	for (int i = 0; i < 100; i++) {
		if (agent_fd_count(t) == fds && agent_child_count(t) == children)
			return true;
		usleep(50000);
	}
	fprintf(stderr, "agent holds %d fds (want %d), %d children (want %d)\n",
		agent_fd_count(t), fds, agent_child_count(t), children);
	return false;
}

/* SIGTERM, then the exit status (-1 when it did not stop in 10 s). */
static int agent_stop(struct test_agent *t)
{
	char cmd[128];
	int status = -1;

	kill(t->pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(t->pid, &status, WNOHANG) == t->pid)
			break;
		status = -1;
		usleep(50000);
	}
	if (status == -1) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", t->dir);
	return status;
}

#endif
