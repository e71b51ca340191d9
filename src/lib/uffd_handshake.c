// SPDX-License-Identifier: Apache-2.0
/* Firecracker's UFFD handshake message: parser and writer (ember/uffd.h). */
#include <ember/uffd.h>

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad(char *why, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (why && size) {
		va_start(ap, fmt);
		vsnprintf(why, size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* 1: found, 0: absent, -EINVAL: present but not a non-negative integer. */
static int get_u64(json_t *obj, const char *key, size_t idx, uint64_t *v,
		   char *why, size_t why_size)
{
	json_t *j = json_object_get(obj, key);

	if (!j)
		return 0;
	if (!json_is_integer(j))
		return bad(why, why_size, "region %zu: %s is not an integer",
			   idx, key);
	if (json_integer_value(j) < 0)
		return bad(why, why_size, "region %zu: %s is negative", idx,
			   key);
	*v = (uint64_t)json_integer_value(j);
	return 1;
}

static int parse_region(json_t *obj, size_t i, struct ember_uffd_region *r,
			char *why, size_t why_size)
{
	static const char *const required[] = {"base_host_virt_addr", "size",
					       "offset"};
	uint64_t *fields[] = {&r->base_host_virt_addr, &r->size, &r->offset};
	uint64_t ps;
	int rc;

	if (!json_is_object(obj))
		return bad(why, why_size, "region %zu is not an object", i);
	for (size_t k = 0; k < 3; k++) {
		rc = get_u64(obj, required[k], i, fields[k], why, why_size);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return bad(why, why_size, "region %zu: no %s", i,
				   required[k]);
	}
	rc = get_u64(obj, "page_size", i, &r->page_size, why, why_size);
	if (rc == 0)
		rc = get_u64(obj, "page_size_kib", i, &r->page_size, why,
			     why_size);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return bad(why, why_size,
			   "region %zu: neither page_size nor page_size_kib",
			   i);
	ps = r->page_size;
	if (ps < 4096 || (ps & (ps - 1)))
		return bad(why, why_size,
			   "region %zu: page size %" PRIu64
			   " is not a power of two >= 4096",
			   i, ps);
	if (r->size == 0 || r->size % ps)
		return bad(why, why_size,
			   "region %zu: size %" PRIu64
			   " is not a positive multiple of the page size",
			   i, r->size);
	if (r->base_host_virt_addr % ps || r->offset % ps)
		return bad(why, why_size,
			   "region %zu: address or offset not page aligned",
			   i);
	if (r->base_host_virt_addr + r->size < r->base_host_virt_addr ||
	    r->offset + r->size < r->offset)
		return bad(why, why_size, "region %zu: size overflows", i);
	return 0;
}

int ember_uffd_parse_regions(const char *json, size_t len,
			     struct ember_uffd_region **out, size_t *n,
			     char *why, size_t why_size)
{
	struct ember_uffd_region *regions;
	json_error_t jerr;
	json_t *root;
	size_t count;
	int rc = 0;

	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return bad(why, why_size, "invalid JSON: %s", jerr.text);
	if (!json_is_array(root)) {
		rc = bad(why, why_size, "not a JSON array of regions");
		goto out;
	}
	count = json_array_size(root);
	if (count == 0) {
		rc = bad(why, why_size, "empty region list");
		goto out;
	}
	regions = calloc(count, sizeof(*regions));
	if (!regions) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < count && !rc; i++)
		rc = parse_region(json_array_get(root, i), i, &regions[i], why,
				  why_size);
	if (rc) {
		free(regions);
		goto out;
	}
	*out = regions;
	*n = count;
out:
	json_decref(root);
	return rc;
}

char *ember_uffd_format_regions(const struct ember_uffd_region *r, size_t n)
{
	json_t *arr = json_array();
	char *s = NULL;

	if (!arr)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_pack(
			"{s:I,s:I,s:I,s:I,s:I}", "base_host_virt_addr",
			(json_int_t)r[i].base_host_virt_addr, "size",
			(json_int_t)r[i].size, "offset",
			(json_int_t)r[i].offset, "page_size",
			(json_int_t)r[i].page_size, "page_size_kib",
			(json_int_t)r[i].page_size);

		if (!o || json_array_append_new(arr, o))
			goto out;
	}
	s = json_dumps(arr, JSON_COMPACT);
out:
	json_decref(arr);
	return s;
}
