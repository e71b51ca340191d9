// SPDX-License-Identifier: Apache-2.0
/* ember-snap flatten: one full memory file from a chain. */
#include "snap.h"

#include <ember/log.h>
#include <ember/util.h>

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
	"Usage: ember-snap flatten HEADER --out FILE [--layers-dir DIR]...\n"
	"Writes guest memory as one plain file (zero ranges as holes),\n"
	"atomically. Layers are checked against their checksums first.\n";

int snap_flatten(int argc, char **argv)
{
	static const struct option opts[] = {
		{"out", required_argument, 0, 'o'},
		{"layers-dir", required_argument, 0, 'l'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *dirs[SNAP_MAX_DIRS], *out = NULL;
	char own[PATH_MAX], why[512] = "";
	struct ember_header h;
	struct ember_chain chain;
	size_t n_dirs = 0;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'o') {
			out = optarg;
		} else if (c == 'l') {
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
	if (optind != argc - 1 || !out) {
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
	rc = ember_chain_flatten(&chain, out);
	if (rc)
		log_error("%s: %s", out, strerror(-rc));
	ember_chain_close(&chain);
	ember_header_free(&h);
	return rc ? EMBER_EXIT_FAILURE : EMBER_EXIT_OK;
}
