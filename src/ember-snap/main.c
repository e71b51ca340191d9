// SPDX-License-Identifier: Apache-2.0
/*
 * ember-snap: inspect, verify, build and flatten snapshot layers and
 * headers (docs/snapshots.md). One file per subcommand.
 */
#include "snap.h"

#include <ember/log.h>
#include <ember/util.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
	"Usage: ember-snap COMMAND [OPTIONS]\n"
	"\n"
	"Snapshot memory is a chain of generation layers described by a\n"
	"header: <dir>/<layer-id>.layer and <dir>/<layer-id>.hdr.\n"
	"\n"
	"Commands:\n"
	"  inspect HEADER [--json]           print a header in words\n"
	"  verify HEADER [--layers-dir DIR]  check the header and every layer\n"
	"                                    (present, size, checksum)\n"
	"  build (--base | --parent HDR) --mem FILE --out-dir DIR\n"
	"        [--block-size N] [--full] [--layers-dir DIR]\n"
	"                                    make a generation from a memory\n"
	"                                    file; prints the new header's path\n"
	"  flatten HEADER --out FILE [--layers-dir DIR]\n"
	"                                    write one full memory file\n"
	"\n"
	"--layers-dir may be given several times; the default is the folder\n"
	"of the header. Each command takes --help.\n"
	"\n"
	"Options: --help, --version. Exit status: 0 ok, 1 failure (a bad\n"
	"file included), 2 usage error.\n";

int snap_load_header(const char *path, struct ember_header *h)
{
	enum ember_hdr_error err = EMBER_HDR_OK;
	int rc = ember_header_load(path, h, &err);

	if (rc == -EINVAL) {
		log_error("%s: invalid header: %s", path,
			  ember_hdr_strerror(err));
		return EMBER_EXIT_FAILURE;
	}
	if (rc) {
		log_error("%s: %s", path, strerror(-rc));
		return EMBER_EXIT_FAILURE;
	}
	return EMBER_EXIT_OK;
}

void snap_dirname(const char *path, char *out, size_t size)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(out, size, ".");
	else if (slash == path)
		snprintf(out, size, "/");
	else
		snprintf(out, size, "%.*s", (int)(slash - path), path);
}

int snap_add_dir(const char **dirs, size_t *n, const char *dir)
{
	if (*n == SNAP_MAX_DIRS) {
		log_error("at most %d --layers-dir", SNAP_MAX_DIRS);
		return EMBER_EXIT_USAGE;
	}
	dirs[(*n)++] = dir;
	return EMBER_EXIT_OK;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{"inspect", snap_inspect},
		{"verify", snap_verify},
		{"build", snap_build},
		{"flatten", snap_flatten},
	};

	ember_log_init("ember-snap", NULL);
	if (argc < 2) {
		fputs(usage, stderr);
		return EMBER_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(usage, stdout);
		return EMBER_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("ember-snap %s\n", EMBER_VERSION);
		return EMBER_EXIT_OK;
	}
	for (size_t i = 0; i < EMBER_ARRAY_SIZE(cmds); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "ember-snap: unknown command '%s'\n\n%s", argv[1],
		usage);
	return EMBER_EXIT_USAGE;
}
