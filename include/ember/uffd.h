/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Firecracker's userfaultfd handshake: after loading a snapshot with the
 * Uffd memory backend, the VMM connects to the page server's Unix socket
 * and sends, in one message, a JSON array of its guest memory regions with
 * the userfaultfd attached as SCM_RIGHTS:
 *
 *   [{"base_host_virt_addr": 140...,  host virtual address of the region
 *     "size": 134217728,              bytes
 *     "offset": 0,                    guest offset in the memory image
 *     "page_size": 4096,              bytes (newer Firecracker)
 *     "page_size_kib": 4096}]         bytes too, despite its name (older)
 *
 * page_size wins when both are present. Unknown fields are ignored.
 */
#ifndef EMBER_UFFD_H
#define EMBER_UFFD_H

#include <stddef.h>
#include <stdint.h>

struct ember_uffd_region {
	uint64_t base_host_virt_addr;
	uint64_t size;
	uint64_t offset;
	uint64_t page_size;
};

/* Parses and checks a region list: a non-empty array of objects with
 * non-negative integer fields, a power-of-two page size of at least 4 KiB,
 * sizes, addresses and offsets aligned to it, no overflow. *out is
 * malloc'd. 0, or -EINVAL with why (optional) saying what is wrong, or
 * -ENOMEM. */
int ember_uffd_parse_regions(const char *json, size_t len,
			     struct ember_uffd_region **out, size_t *n,
			     char *why, size_t why_size);

/* The JSON a VMM sends (both page size fields); malloc'd, NULL if out of
 * memory. */
char *ember_uffd_format_regions(const struct ember_uffd_region *r, size_t n);

#endif
