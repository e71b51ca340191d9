/* SPDX-License-Identifier: Apache-2.0 */
/* ember-snap's subcommands: each returns the process exit status. */
#ifndef EMBER_SNAP_H
#define EMBER_SNAP_H

#include <ember/header.h>

#include <stddef.h>

#define SNAP_MAX_DIRS 16

int snap_inspect(int argc, char **argv);
int snap_verify(int argc, char **argv);
int snap_build(int argc, char **argv);
int snap_flatten(int argc, char **argv);

/* Loads a header, logging why it is rejected. Returns an exit status. */
int snap_load_header(const char *path, struct ember_header *h);
/* The folder that holds path (for the default --layers-dir). */
void snap_dirname(const char *path, char *out, size_t size);
/* Adds a --layers-dir; returns an exit status (2 when too many). */
int snap_add_dir(const char **dirs, size_t *n, const char *dir);

#endif
