/* SPDX-License-Identifier: Apache-2.0 */
/*
 * boot-linux: boots a Linux kernel with ember-vmm's machine (vm.h) and no
 * API, for debugging the boot: the serial console goes to stdout (or
 * --serial), the VM's end becomes the exit status (0 reboot/power-off, 1
 * crash or timeout, 2 usage).
 *
 *   boot-linux --kernel vmlinux [--rootfs rootfs.ext4] [--initrd F]
 *              [--cmdline ARGS] [--vcpus N] [--mem MIB] [--timeout S]
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember/log.h"
#include "ember/util.h"
#include "vm.h"

static bool serial_has(const char *path, const char *text)
{
	char *buf = NULL;
	bool found;

	if (ember_read_file(path, 16 << 20, &buf, NULL) < 0)
		return false;
	found = strstr(buf, text) != NULL;
	free(buf);
	return found;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: boot-linux --kernel PATH [options]\n"
		"Boots a Linux guest on ember-vmm's machine without the API.\n\n"
		"  --kernel PATH    vmlinux (ELF) or bzImage\n"
		"  --initrd PATH    initial ramdisk\n"
		"  --rootfs PATH    root drive (virtio-blk, /dev/vda)\n"
		"  --read-only      attach the root drive read-only\n"
		"  --cmdline ARGS   kernel command line (default: Firecracker's)\n"
		"  --vcpus N        vCPUs (default 1)\n"
		"  --mem MIB        guest memory in MiB (default 128)\n"
		"  --serial PATH    serial console to a file (default stdout)\n"
		"  --entropy        add a virtio-rng device\n"
		"  --timeout S      give up after S seconds (default 120)\n"
		"  --ctrl-alt-del-on TEXT  press Ctrl-Alt-Del once the serial\n"
		"                   file (--serial) contains TEXT\n"
		"  --debug          debug logging\n"
		"  --help, --version\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "rootfs", required_argument, NULL, 'r' },
		{ "read-only", no_argument, NULL, 'R' },
		{ "cmdline", required_argument, NULL, 'c' },
		{ "vcpus", required_argument, NULL, 'n' },
		{ "mem", required_argument, NULL, 'm' },
		{ "serial", required_argument, NULL, 's' },
		{ "entropy", no_argument, NULL, 'e' },
		{ "timeout", required_argument, NULL, 't' },
		{ "debug", no_argument, NULL, 'd' },
		{ "ctrl-alt-del-on", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	static struct vm_config cfg;
	uint64_t v, timeout_s = 120, waited_ms = 0;
	const char *cad_text = NULL;
	char err[512];
	struct vm *vm;
	struct pollfd p;
	int opt, ret;

	ember_log_init("boot-linux", "vm");
	snprintf(cfg.id, sizeof(cfg.id), "vm");
	cfg.vcpu_count = 1;
	cfg.mem_size_mib = 128;
	cfg.boot_timer = true;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'k':
			snprintf(cfg.kernel_image_path,
				 sizeof(cfg.kernel_image_path), "%s", optarg);
			break;
		case 'i':
			snprintf(cfg.initrd_path, sizeof(cfg.initrd_path), "%s",
				 optarg);
			break;
		case 'r':
			cfg.n_drives = 1;
			snprintf(cfg.drives[0].drive_id,
				 sizeof(cfg.drives[0].drive_id), "rootfs");
			snprintf(cfg.drives[0].path_on_host,
				 sizeof(cfg.drives[0].path_on_host), "%s",
				 optarg);
			cfg.drives[0].is_root_device = true;
			break;
		case 'R':
			cfg.drives[0].is_read_only = true;
			break;
		case 'c':
			snprintf(cfg.boot_args, sizeof(cfg.boot_args), "%s",
				 optarg);
			break;
		case 'n':
		case 'm':
		case 't':
			if (ember_parse_u64(optarg, &v) < 0 || v == 0) {
				fprintf(stderr, "boot-linux: bad number %s\n",
					optarg);
				return EMBER_EXIT_USAGE;
			}
			if (opt == 'n')
				cfg.vcpu_count = (unsigned)EMBER_MIN(v, 1000);
			else if (opt == 'm')
				cfg.mem_size_mib = v;
			else
				timeout_s = v;
			break;
		case 's':
			snprintf(cfg.serial_out_path,
				 sizeof(cfg.serial_out_path), "%s", optarg);
			break;
		case 'e':
			cfg.entropy = true;
			break;
		case 'C':
			cad_text = optarg;
			break;
		case 'd':
			ember_log_set_level(EMBER_LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return EMBER_EXIT_OK;
		case 'V':
			printf("boot-linux %s\n", EMBER_VERSION);
			return EMBER_EXIT_OK;
		default:
			usage(stderr);
			return EMBER_EXIT_USAGE;
		}
	}
	if (!cfg.kernel_image_path[0] || optind != argc) {
		usage(stderr);
		return EMBER_EXIT_USAGE;
	}
	cfg.has_boot_source = true;
	ret = vm_create(&cfg, &vm, err, sizeof(err));
	if (ret) {
		log_error("%s", err);
		return EMBER_EXIT_FAILURE;
	}
	ret = vm_start(vm);
	if (ret) {
		log_error("cannot start the VM: %s", strerror(-ret));
		vm_destroy(vm);
		return EMBER_EXIT_FAILURE;
	}
	p = (struct pollfd){ .fd = vm_exit_fd(vm), .events = POLLIN };
	/* Polls in steps of 100 ms so --ctrl-alt-del-on can watch the
	 * serial file. */
	do {
		ret = poll(&p, 1, 100);
		if (ret == 0) {
			waited_ms += 100;
			if (cad_text && cfg.serial_out_path[0] &&
			    serial_has(cfg.serial_out_path, cad_text)) {
				log_info("pressing Ctrl-Alt-Del");
				vm_send_ctrl_alt_del(vm);
				cad_text = NULL;
			}
		}
	} while ((ret < 0 && errno == EINTR) ||
		 (ret == 0 && waited_ms < timeout_s * 1000));
	if (ret == 0) {
		log_error("the guest did not end within %llu s",
			  (unsigned long long)timeout_s);
		ret = EMBER_EXIT_FAILURE;
	} else {
		ret = vm_exit_status(vm);
		log_info("the guest ended with status %d", ret);
	}
	vm_destroy(vm);
	return ret;
}
