// SPDX-License-Identifier: Apache-2.0
/* ember-snap verify: the header decodes and validates (checksum, coverage),
 * and every layer it names is present, of the right size and checksum. */
#include "snap.h"

#include <ember/log.h>
#include <ember/util.h>

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
	"Usage: ember-snap verify HEADER [--layers-dir DIR]...\n"
	"Checks the header (checksum, version, full coverage) and reads every\n"
	"layer it names (present, size, XXH3 checksum). Layers are searched\n"
	"in each --layers-dir in order; by default the header's folder.\n"
	"Exit status 0 when all is right, 1 otherwise.\n";

int snap_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{"layers-dir", required_argument, 0, 'l'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *dirs[SNAP_MAX_DIRS];
	char own[PATH_MAX], why[512] = "";
	struct ember_header h;
	struct ember_chain chain;
	size_t n_dirs = 0;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'l') {
			rc = snap_add_dir(dirs, &n_dirs, optarg);
			if (rc)
				return rc;
		} else if (c == 'h') {
			fputs(usage, stdout);
			return EMBER_EXIT_OK;
		} else {
			fputs(usage, stderr);
			return EMBER_EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fputs(usage, stderr);
		return EMBER_EXIT_USAGE;
	}
	rc = snap_load_header(argv[optind], &h);
	if (rc)
		return rc;
	if (!n_dirs) {
		snap_dirname(argv[optind], own, sizeof(own));
		dirs[n_dirs++] = own;
	}
	rc = ember_chain_open(&chain, &h, dirs, n_dirs, true, why,
			      sizeof(why));
	if (rc) {
		log_error("%s: %s", argv[optind], why[0] ? why : strerror(-rc));
		ember_header_free(&h);
		return EMBER_EXIT_FAILURE;
	}
	printf("ok: generation %u, %u layers, %zu ranges cover %llu bytes\n",
	       h.generation, h.n_layers, h.n_ranges,
	       (unsigned long long)h.total_size);
	ember_chain_close(&chain);
	ember_header_free(&h);
	return EMBER_EXIT_OK;
}
