// SPDX-License-Identifier: Apache-2.0
/*
 * Does this machine need the nested host? A pure function of /proc/cpuinfo,
 * whether /dev/kvm answered, and EMBER_NESTED; nested_need_here() gathers
 * those three on the running machine.
 */
#include "nested.h"

#include <ember/util.h>

#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static bool is_word_char(char c)
{
	return c && c != ' ' && c != '\t' && c != '\n';
}

bool nested_cpu_has_flag(const char *cpuinfo, const char *flag)
{
	size_t flen = strlen(flag);
	const char *line = cpuinfo;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);

		if (strncmp(line, "flags", 5) == 0) {
			const char *p = memchr(line, ':', len);

			while (p && p < line + len) {
				while (p < line + len && !is_word_char(*p))
					p++;
				if (p >= line + len)
					break;
				const char *w = p;

				while (p < line + len && is_word_char(*p))
					p++;
				if ((size_t)(p - w) == flen &&
				    memcmp(w, flag, flen) == 0)
					return true;
			}
		}
		line = end ? end + 1 : NULL;
	}
	return false;
}

struct nested_need nested_decide(const char *cpuinfo, bool kvm_usable,
				 const char *env)
{
	bool hw;

	if (env && strcmp(env, "1") == 0)
		return (struct nested_need){true, "EMBER_NESTED=1 asks for it"};
	if (env && strcmp(env, "0") == 0)
		return (struct nested_need){false,
					    "EMBER_NESTED=0 turns it off"};
	hw = cpuinfo && (nested_cpu_has_flag(cpuinfo, "vmx") ||
			 nested_cpu_has_flag(cpuinfo, "svm"));
	if (!hw)
		return (struct nested_need){
		    true, "the CPU shows neither vmx nor svm, so /dev/kvm "
			  "(if any) cannot run Linux guests at useful speed"};
	if (!kvm_usable)
		return (struct nested_need){
		    true, "the CPU has vmx/svm but /dev/kvm is missing or "
			  "unusable (load kvm_intel or kvm_amd to run guests "
			  "directly)"};
	return (struct nested_need){false,
				    "the CPU has vmx/svm and /dev/kvm answers"};
}

struct nested_need nested_need_here(void)
{
	struct nested_need n;
	char *cpuinfo = NULL;
	bool kvm_usable = false;
	int fd;

	if (ember_read_file("/proc/cpuinfo", 4u << 20, &cpuinfo, NULL) < 0)
		cpuinfo = NULL;
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		kvm_usable =
		    ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION;
		close(fd);
	}
	n = nested_decide(cpuinfo, kvm_usable, getenv("EMBER_NESTED"));
	free(cpuinfo);
	return n;
}
