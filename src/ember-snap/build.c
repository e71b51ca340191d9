// SPDX-License-Identifier: Apache-2.0
/* ember-snap build: a new generation from a memory file. */
#include "snap.h"

#include <ember/log.h>
#include <ember/util.h>

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
	"Usage: ember-snap build (--base | --parent HDR) --mem FILE\n"
	"                        --out-dir DIR [--block-size N] [--full]\n"
	"                        [--layers-dir DIR]...\n"
	"Writes DIR/<id>.layer (the stored non-zero blocks, packed) and\n"
	"DIR/<id>.hdr, and prints the header's path.\n"
	"  --base          generation 0: FILE is a full memory image\n"
	"  --parent HDR    FILE is a diff: full size, only dirtied pages\n"
	"                  present; holes mean unchanged (SEEK_DATA/SEEK_HOLE)\n"
	"  --full          with --parent: FILE is a full image all the same\n"
	"  --block-size N  with --base: bytes per block, a power of two\n"
	"                  >= 4096 (default 4096; K, M suffixes)\n"
	"  --layers-dir    where the parent's layers are (default: the\n"
	"                  parent header's folder)\n";

int snap_build(int argc, char **argv)
{
	static const struct option opts[] = {
		{"base", no_argument, 0, 'b'},
		{"parent", required_argument, 0, 'p'},
		{"mem", required_argument, 0, 'm'},
		{"out-dir", required_argument, 0, 'o'},
		{"block-size", required_argument, 0, 's'},
		{"full", no_argument, 0, 'f'},
		{"layers-dir", required_argument, 0, 'l'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *dirs[SNAP_MAX_DIRS], *parent_path = NULL;
	char own[PATH_MAX], path[PATH_MAX], why[512] = "";
	struct ember_build_opts o = {.kind = EMBER_MEM_DIFF};
	struct ember_header parent, h;
	bool base = false;
	uint64_t bs = 0;
	size_t n_dirs = 0;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'b': base = true; break;
		case 'p': parent_path = optarg; break;
		case 'm': o.mem_path = optarg; break;
		case 'o': o.out_dir = optarg; break;
		case 'f': o.kind = EMBER_MEM_FULL; break;
		case 's':
			if (ember_parse_size(optarg, &bs) || bs > UINT32_MAX) {
				log_error("--block-size %s: not a size", optarg);
				return EMBER_EXIT_USAGE;
			}
			break;
		case 'l':
			rc = snap_add_dir(dirs, &n_dirs, optarg);
			if (rc)
				return rc;
			break;
		case 'h': fputs(usage, stdout); return EMBER_EXIT_OK;
		default: fputs(usage, stderr); return EMBER_EXIT_USAGE;
		}
	}
	{
		const char *bad = optind != argc ? "unexpected arguments"
			: base == !!parent_path ? "give one of --base and --parent"
			: !o.mem_path ? "--mem is missing"
			: !o.out_dir ? "--out-dir is missing"
			: bs && !base ? "--block-size goes with --base only"
			: NULL;

		if (bad) {
			fprintf(stderr, "ember-snap build: %s\n\n%s", bad, usage);
			return EMBER_EXIT_USAGE;
		}
	}
	o.block_size = (uint32_t)bs;
	if (base) {
		o.kind = EMBER_MEM_FULL;
	} else {
		rc = snap_load_header(parent_path, &parent);
		if (rc)
			return rc;
		o.parent = &parent;
		if (!n_dirs) {
			snap_dirname(parent_path, own, sizeof(own));
			dirs[n_dirs++] = own;
		}
	}
	o.layer_dirs = dirs;
	o.n_layer_dirs = n_dirs;
	rc = ember_layer_build(&o, &h, why, sizeof(why));
	if (o.parent)
		ember_header_free(&parent);
	if (rc) {
		log_error("build from %s: %s", o.mem_path,
			  why[0] ? why : strerror(-rc));
		return EMBER_EXIT_FAILURE;
	}
	ember_header_path(o.out_dir, &h.id, path, sizeof(path));
	puts(path);
	ember_header_free(&h);
	return EMBER_EXIT_OK;
}
