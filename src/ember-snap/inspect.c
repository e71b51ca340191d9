// SPDX-License-Identifier: Apache-2.0
/* ember-snap inspect: a header in words, or as JSON. */
#include "snap.h"

#include <ember/log.h>
#include <ember/util.h>

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
	"Usage: ember-snap inspect HEADER [--json]\n"
	"Prints the header's sizes, generation, ids, and per layer the bytes\n"
	"and ranges it maps; zero ranges are counted apart.\n";

struct layer_use {
	uint64_t bytes, ranges;
};

static void count_use(const struct ember_header *h, struct layer_use *use,
		      struct layer_use *zero)
{
	for (size_t i = 0; i < h->n_ranges; i++) {
		const struct ember_hdr_range *r = &h->ranges[i];
		struct layer_use *u =
			r->layer == EMBER_LAYER_ZERO ? zero : &use[r->layer];

		u->bytes += r->len;
		u->ranges++;
	}
}

static void print_words(const char *path, const struct ember_header *h,
			const struct layer_use *use,
			const struct layer_use *zero)
{
	char id[EMBER_LAYER_ID_STRLEN], base[EMBER_LAYER_ID_STRLEN];

	ember_layer_id_format(&h->id, id);
	ember_layer_id_format(&h->base_id, base);
	printf("header      %s\n", path);
	printf("version     %" PRIu32 "\n", h->version);
	printf("generation  %" PRIu32 "\n", h->generation);
	printf("layer id    %s\n", id);
	printf("base id     %s\n", base);
	printf("total size  %" PRIu64 " bytes (%.1f MiB)\n", h->total_size,
	       (double)h->total_size / (1 << 20));
	printf("block size  %" PRIu32 " bytes\n", h->block_size);
	printf("ranges      %zu\n", h->n_ranges);
	printf("layers      %" PRIu32 "\n", h->n_layers);
	for (uint32_t i = 0; i < h->n_layers; i++) {
		ember_layer_id_format(&h->layers[i].id, id);
		printf("  %s  generation %" PRIu32 ", file %" PRIu64
		       " bytes, maps %" PRIu64 " bytes in %" PRIu64
		       " ranges, xxh3 %016" PRIx64 "\n",
		       id, h->layers[i].generation, h->layers[i].size,
		       use[i].bytes, use[i].ranges, h->layers[i].checksum);
	}
	printf("zero        %" PRIu64 " bytes in %" PRIu64 " ranges\n",
	       zero->bytes, zero->ranges);
}

static int print_json(const struct ember_header *h,
		      const struct layer_use *use,
		      const struct layer_use *zero)
{
	char id[EMBER_LAYER_ID_STRLEN], base[EMBER_LAYER_ID_STRLEN], *s;
	json_t *layers = json_array(), *root;

	ember_layer_id_format(&h->id, id);
	ember_layer_id_format(&h->base_id, base);
	for (uint32_t i = 0; i < h->n_layers; i++) {
		char lid[EMBER_LAYER_ID_STRLEN], sum[17];

		ember_layer_id_format(&h->layers[i].id, lid);
		snprintf(sum, sizeof(sum), "%016" PRIx64,
			 h->layers[i].checksum);
		json_array_append_new(
			layers,
			json_pack("{s:s,s:I,s:I,s:s,s:I,s:I}", "id", lid,
				  "generation",
				  (json_int_t)h->layers[i].generation, "size",
				  (json_int_t)h->layers[i].size, "xxh3", sum,
				  "mapped_bytes", (json_int_t)use[i].bytes,
				  "ranges", (json_int_t)use[i].ranges));
	}
	root = json_pack("{s:I,s:I,s:s,s:s,s:I,s:I,s:I,s:o,s:{s:I,s:I}}",
			 "version", (json_int_t)h->version, "generation",
			 (json_int_t)h->generation, "id", id, "base_id", base,
			 "total_size", (json_int_t)h->total_size,
			 "block_size", (json_int_t)h->block_size, "ranges",
			 (json_int_t)h->n_ranges, "layers", layers, "zero",
			 "bytes", (json_int_t)zero->bytes, "ranges",
			 (json_int_t)zero->ranges);
	s = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
	json_decref(root);
	if (!s) {
		log_error("out of memory");
		return EMBER_EXIT_FAILURE;
	}
	puts(s);
	free(s);
	return EMBER_EXIT_OK;
}

int snap_inspect(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, 0, 'j'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	struct layer_use *use, zero = {0};
	struct ember_header h;
	bool json = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'j') {
			json = true;
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
	use = calloc(h.n_layers + 1, sizeof(*use));
	if (!use) {
		ember_header_free(&h);
		return EMBER_EXIT_FAILURE;
	}
	count_use(&h, use, &zero);
	if (json)
		rc = print_json(&h, use, &zero);
	else
		print_words(argv[optind], &h, use, &zero);
	free(use);
	ember_header_free(&h);
	return rc;
}
