// SPDX-License-Identifier: Apache-2.0
/* Unit tests of ember-nested's argument parsing, need-decision and frames. */
#include "nested.h"

#include "../../test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PARSE(a, err, ...)                                                     \
	({                                                                     \
		static char *const v_[] = {"ember-nested", __VA_ARGS__, NULL}; \
		nested_parse_args((int)(sizeof(v_) / sizeof(v_[0])) - 1, v_,   \
				  (a), (err), sizeof(err));                    \
	})

static void test_args(void)
{
	struct nested_args a;
	char err[256];

	CHECK(PARSE(&a, err, "need") == 0 && a.cmd == NESTED_CMD_NEED);
	CHECK(PARSE(&a, err, "--help") == 0 && a.cmd == NESTED_CMD_HELP);
	CHECK(PARSE(&a, err, "--version") == 0 && a.cmd == NESTED_CMD_VERSION);
	CHECK(PARSE(&a, err, "bogus") == -EINVAL && strstr(err, "bogus"));

	CHECK(PARSE(&a, err, "start", "--state-dir", "/s", "--forward",
		    "8080:80", "--forward=9000:9001", "--smp", "4",
		    "--memory=2048", "--scratch", "1G", "--qemu-arg",
		    "-d") == 0);
	CHECK(a.cmd == NESTED_CMD_START && strcmp(a.state_dir, "/s") == 0);
	CHECK(a.n_forwards == 2 && a.forwards[0].host_port == 8080 &&
	      a.forwards[0].guest_port == 80 &&
	      a.forwards[1].host_port == 9000 &&
	      a.forwards[1].guest_port == 9001);
	CHECK(a.smp == 4 && a.memory_mb == 2048 &&
	      a.scratch_bytes == 1ull << 30);
	CHECK(a.n_qemu_args == 1 && strcmp(a.qemu_args[0], "-d") == 0);

	/* Defaults. */
	CHECK(PARSE(&a, err, "start") == 0 && a.smp == 1 &&
	      a.memory_mb == 4096 && a.scratch_bytes == 8ull << 30 &&
	      a.state_dir == NULL && a.n_forwards == 0);

	CHECK(PARSE(&a, err, "start", "--forward", "80") == -EINVAL);
	CHECK(PARSE(&a, err, "start", "--forward", "0:80") == -EINVAL);
	CHECK(PARSE(&a, err, "start", "--forward", "70000:80") == -EINVAL);
	CHECK(PARSE(&a, err, "start", "--smp") == -EINVAL &&
	      strstr(err, "needs a value"));
	CHECK(PARSE(&a, err, "start", "--smp", "x") == -EINVAL);
	CHECK(PARSE(&a, err, "start", "--env", "A=1") == -EINVAL);
	CHECK(PARSE(&a, err, "stop", "--forward", "1:2") == -EINVAL);
	CHECK(PARSE(&a, err, "start", "echo") == -EINVAL);

	CHECK(PARSE(&a, err, "exec", "--env", "A=1", "--env=B=x=y", "--cwd",
		    "/tmp", "-n", "--timeout", "5", "--", "sh", "-c",
		    "echo --env") == 0);
	CHECK(a.cmd == NESTED_CMD_EXEC && a.n_env == 2 &&
	      strcmp(a.env[1], "B=x=y") == 0 && strcmp(a.cwd, "/tmp") == 0 &&
	      a.no_stdin && a.timeout_s == 5);
	CHECK(a.argc == 3 && strcmp(a.argv[0], "sh") == 0 &&
	      strcmp(a.argv[2], "echo --env") == 0 && a.argv[3] == NULL);
	/* The command may follow without "--"; its options stay its own. */
	CHECK(PARSE(&a, err, "exec", "ls", "-l") == 0 && a.argc == 2 &&
	      strcmp(a.argv[1], "-l") == 0);
	CHECK(PARSE(&a, err, "exec") == -EINVAL && strstr(err, "command"));
	CHECK(PARSE(&a, err, "exec", "--") == -EINVAL);
	CHECK(PARSE(&a, err, "exec", "--env", "=1", "--", "x") == -EINVAL);
	CHECK(PARSE(&a, err, "exec", "--smp", "2", "--", "x") == -EINVAL);

	CHECK(PARSE(&a, err, "run", "--forward", "1:2", "--env", "A=B", "--",
		    "true") == 0 &&
	      a.cmd == NESTED_CMD_RUN && a.n_forwards == 1 && a.n_env == 1 &&
	      a.argc == 1);
	CHECK(PARSE(&a, err, "serve", "--port", "7022") == 0 && a.port == 7022);
	CHECK(PARSE(&a, err, "serve", "--port", "0") == -EINVAL);
}

static const char cpu_plain[] =
    "processor\t: 0\nvendor_id\t: AuthenticAMD\n"
    "flags\t\t: fpu vme de pse tsc msr hypervisor lahf_lm svm_lock\n"
    "bugs\t\t: sysret_ss_attrs\n";
static const char cpu_svm[] =
    "processor\t: 0\nflags\t\t: fpu vme svm npt\n\nprocessor\t: 1\n"
    "flags\t\t: fpu vme svm npt\n";
static const char cpu_vmx[] = "flags\t\t: fpu vmx ept\n";

static void test_decide(void)
{
	struct nested_need n;

	CHECK(nested_cpu_has_flag(cpu_svm, "svm"));
	CHECK(nested_cpu_has_flag(cpu_vmx, "vmx"));
	/* Whole words only: svm_lock is not svm. */
	CHECK(!nested_cpu_has_flag(cpu_plain, "svm"));
	CHECK(!nested_cpu_has_flag("model name : vmx svm\n", "vmx"));

	n = nested_decide(cpu_plain, true, NULL);
	CHECK(n.need && strstr(n.reason, "neither vmx nor svm"));
	n = nested_decide(cpu_svm, true, NULL);
	CHECK(!n.need);
	n = nested_decide(cpu_vmx, true, "");
	CHECK(!n.need);
	n = nested_decide(cpu_vmx, false, NULL);
	CHECK(n.need && strstr(n.reason, "/dev/kvm"));
	n = nested_decide(NULL, false, NULL);
	CHECK(n.need);

	/* EMBER_NESTED overrides both ways; other values are no override. */
	CHECK(nested_decide(cpu_svm, true, "1").need);
	CHECK(!nested_decide(cpu_plain, false, "0").need);
	CHECK(nested_decide(cpu_plain, true, "/path/ember-nested").need);
	CHECK(!nested_decide(cpu_svm, true, "yes").need);
}

static int test_frames(void)
{
	uint8_t hdr[NESTED_FRAME_HDR], type;
	uint32_t len;
	char *buf;
	int fds[2];

	nested_frame_header(hdr, FRAME_STDOUT, 0x01020304);
	CHECK(hdr[0] == 'O' && hdr[1] == 1 && hdr[2] == 2 && hdr[3] == 3 &&
	      hdr[4] == 4);
	CHECK(nested_frame_parse(hdr, &type, &len) == -EPROTO);
	nested_frame_header(hdr, FRAME_EXIT, 4);
	CHECK(nested_frame_parse(hdr, &type, &len) == 0 && type == 'X' &&
	      len == 4);

	REQUIRE(pipe(fds) == 0);
	CHECK(nested_frame_write(fds[1], FRAME_ARG, "hello", 5) == 0);
	CHECK(nested_frame_write(fds[1], FRAME_START, NULL, 0) == 0);
	CHECK(nested_frame_read(fds[0], &type, &buf, &len, 1000) == 0 &&
	      type == FRAME_ARG && len == 5 && strcmp(buf, "hello") == 0);
	free(buf);
	CHECK(nested_frame_read(fds[0], &type, &buf, &len, 1000) == 0 &&
	      type == FRAME_START && len == 0);
	free(buf);
	/* Nothing more: a timeout; then end of stream. */
	CHECK(nested_frame_read(fds[0], &type, &buf, &len, 10) == -ETIMEDOUT);
	close(fds[1]);
	CHECK(nested_frame_read(fds[0], &type, &buf, &len, 1000) == -EPIPE);
	close(fds[0]);

	/* A header cut short is a protocol error, not an end of stream. */
	REQUIRE(pipe(fds) == 0);
	CHECK(write(fds[1], "O\0\0", 3) == 3);
	close(fds[1]);
	CHECK(nested_frame_read(fds[0], &type, &buf, &len, 1000) == -EPROTO);
	close(fds[0]);
	return 0;
}

int main(void)
{
	test_args();
	test_decide();
	if (test_frames())
		return 1;
	return test_summary("nested");
}
