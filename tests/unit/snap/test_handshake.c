// SPDX-License-Identifier: Apache-2.0
/* Unit tests of Firecracker's UFFD handshake parser (uffd_handshake.c). */
#include <ember/uffd.h>

#include "../../test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int parse(const char *json, struct ember_uffd_region **r, size_t *n,
		 char *why)
{
	why[0] = '\0';
	return ember_uffd_parse_regions(json, strlen(json), r, n, why, 256);
}

/* The string must be rejected, and the reason must mention want. */
static void reject(const char *json, const char *want)
{
	struct ember_uffd_region *r = NULL;
	char why[256];
	size_t n;
	int rc = parse(json, &r, &n, why);

	if (rc != -EINVAL || !strstr(why, want))
		fprintf(stderr, "%s: rc %d, why '%s', want '%s'\n", json, rc,
			why, want);
	CHECK(rc == -EINVAL && strstr(why, want) != NULL);
	CHECK(r == NULL);
}

static void test_good(void)
{
	struct ember_uffd_region *r, in[2] = {
		{0x7f0000000000, 1 << 20, 0, 4096},
		{0x7f0000200000, 2 << 20, 2 << 20, 2 << 20},
	};
	char why[256], *json;
	size_t n;

	CHECK(parse("[{\"base_host_virt_addr\":4096,\"size\":8192,"
		    "\"offset\":0,\"page_size_kib\":4096,\"extra\":[1]}]",
		    &r, &n, why) == 0);
	CHECK(n == 1 && r[0].base_host_virt_addr == 4096 &&
	      r[0].size == 8192 && r[0].page_size == 4096);
	free(r);
	/* page_size wins over page_size_kib. */
	CHECK(parse("[{\"base_host_virt_addr\":0,\"size\":2097152,"
		    "\"offset\":0,\"page_size\":2097152,\"page_size_kib\":4}]",
		    &r, &n, why) == 0);
	CHECK(n == 1 && r[0].page_size == 2097152);
	free(r);
	/* What a VMM writes reads back the same. */
	r = NULL;
	json = ember_uffd_format_regions(in, 2);
	CHECK(json != NULL);
	CHECK(parse(json, &r, &n, why) == 0);
	CHECK(n == 2 && memcmp(r, in, sizeof(in)) == 0);
	CHECK(strstr(json, "\"page_size_kib\":4096") != NULL);
	free(r);
	free(json);
}

static void test_bad(void)
{
	reject("", "invalid JSON");
	reject("[{\"size\":1", "invalid JSON");
	reject("{\"base_host_virt_addr\":0}", "not a JSON array");
	reject("[]", "empty region list");
	reject("[1]", "region 0 is not an object");
	reject("[{\"size\":4096,\"offset\":0,\"page_size\":4096}]",
	       "no base_host_virt_addr");
	reject("[{\"base_host_virt_addr\":0,\"offset\":0,\"page_size\":4096}]",
	       "no size");
	reject("[{\"base_host_virt_addr\":0,\"size\":4096,\"page_size\":4096}]",
	       "no offset");
	reject("[{\"base_host_virt_addr\":0,\"size\":4096,\"offset\":0}]",
	       "neither page_size nor page_size_kib");
	reject("[{\"base_host_virt_addr\":\"0\",\"size\":4096,\"offset\":0,"
	       "\"page_size\":4096}]",
	       "base_host_virt_addr is not an integer");
	reject("[{\"base_host_virt_addr\":0,\"size\":4096.0,\"offset\":0,"
	       "\"page_size\":4096}]",
	       "size is not an integer");
	reject("[{\"base_host_virt_addr\":0,\"size\":4096,\"offset\":-4096,"
	       "\"page_size\":4096}]",
	       "offset is negative");
	reject("[{\"base_host_virt_addr\":0,\"size\":4096,\"offset\":0,"
	       "\"page_size\":null}]",
	       "page_size is not an integer");
	reject("[{\"base_host_virt_addr\":0,\"size\":4096,\"offset\":0,"
	       "\"page_size_kib\":4}]",
	       "page size 4 is not a power of two");
	reject("[{\"base_host_virt_addr\":0,\"size\":4096,\"offset\":0,"
	       "\"page_size\":6144}]",
	       "not a power of two");
	reject("[{\"base_host_virt_addr\":0,\"size\":6000,\"offset\":0,"
	       "\"page_size\":4096}]",
	       "not a positive multiple");
	reject("[{\"base_host_virt_addr\":0,\"size\":0,\"offset\":0,"
	       "\"page_size\":4096}]",
	       "not a positive multiple");
	reject("[{\"base_host_virt_addr\":100,\"size\":4096,\"offset\":0,"
	       "\"page_size\":4096}]",
	       "not page aligned");
	reject("[{\"base_host_virt_addr\":0,\"size\":99999999999999999999999,"
	       "\"offset\":0,\"page_size\":4096}]",
	       "invalid JSON");
	reject("[{\"base_host_virt_addr\":0,\"size\":4096,\"offset\":0,"
	       "\"page_size\":4096},{\"size\":1}]",
	       "region 1: no base_host_virt_addr");
	reject("[{\"size\":1,\"size\":2}]", "invalid JSON");
}

int main(void)
{
	test_good();
	test_bad();
	return test_summary("snap-handshake");
}
