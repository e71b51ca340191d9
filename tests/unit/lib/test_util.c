// SPDX-License-Identifier: Apache-2.0
/* Unit tests of src/lib/util.c and src/lib/log.c. */
#include <ember/log.h>
#include <ember/util.h>

#include "../../test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/ember-test-util.XXXXXX";

static void test_parse_size(void)
{
	uint64_t v;

	CHECK(ember_parse_size("128", &v) == 0 && v == 128);
	CHECK(ember_parse_size("4K", &v) == 0 && v == 4096);
	CHECK(ember_parse_size("64M", &v) == 0 && v == 64ull << 20);
	CHECK(ember_parse_size("2g", &v) == 0 && v == 2ull << 30);
	CHECK(ember_parse_size("", &v) == -EINVAL);
	CHECK(ember_parse_size("-1", &v) == -EINVAL);
	CHECK(ember_parse_size("12x", &v) == -EINVAL);
	CHECK(ember_parse_size("99999999999999999999", &v) == -ERANGE);
	CHECK(ember_parse_size("17179869184G", &v) == -ERANGE);
}

static void test_atomic_write(void)
{
	char path[256], tmp[4096], *data;
	size_t len;
	int fd;

	snprintf(path, sizeof(path), "%s/a/b/file", tmpdir);
	CHECK(ember_write_file_atomic(path, "x", 1, 0644) == -ENOENT);
	snprintf(tmp, sizeof(tmp), "%s/a/b", tmpdir);
	CHECK(ember_mkdir_p(tmp, 0755) == 0);
	CHECK(ember_mkdir_p(tmp, 0755) == 0);
	CHECK(ember_write_file_atomic(path, "hello", 5, 0600) == 0);
	CHECK(ember_read_file(path, 100, &data, &len) == 0);
	CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
	free(data);
	CHECK(ember_read_file(path, 4, &data, &len) == -EFBIG);

	/* An aborted writer leaves the old contents and no temporary file. */
	fd = ember_atomic_open(path, tmp, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, "partial", 7) == 7);
	ember_atomic_abort(fd, tmp);
	CHECK(access(tmp, F_OK) < 0 && errno == ENOENT);
	CHECK(ember_read_file(path, 100, &data, &len) == 0);
	CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
	free(data);
}

static void test_log_levels(void)
{
	enum ember_log_level l;

	CHECK(ember_log_parse_level("Debug", &l) == 0 && l == EMBER_LOG_DEBUG);
	CHECK(ember_log_parse_level("Warning", &l) == 0 && l == EMBER_LOG_WARN);
	CHECK(ember_log_parse_level("Trace", &l) == 0 && l == EMBER_LOG_DEBUG);
	CHECK(ember_log_parse_level("loud", &l) == -EINVAL);
}

static void test_log_format(void)
{
	char path[256], *data;
	size_t len;

	snprintf(path, sizeof(path), "%s/log", tmpdir);
	ember_log_init("ember-test", "vm-1");
	CHECK(ember_log_set_file(path) == 0);
	log_info("booted in %d ms", 12);
	olog_warn("sbx-9", "paused");
	log_debug("not shown at info");
	CHECK(ember_read_file(path, 4096, &data, &len) == 0);
	CHECK(strstr(data, "INFO  ember-test[vm-1]: booted in 12 ms\n") != NULL);
	CHECK(strstr(data, "WARN  ember-test[sbx-9]: paused\n") != NULL);
	CHECK(strstr(data, "not shown") == NULL);
	CHECK(data[4] == '-' && data[10] == 'T' && data[23] == 'Z');
	free(data);
}

int main(void)
{
	CHECK(mkdtemp(tmpdir) != NULL);
	test_parse_size();
	test_atomic_write();
	test_log_levels();
	test_log_format();
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	CHECK(system(cmd) == 0);
	return test_summary("util");
}
