/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal assertion helper for Ember's C tests: CHECK() records a failure
 * with its file and line and goes on; test_summary() prints the count and
 * returns the process exit status (0 when nothing failed). Meson runs each
 * test file as one process with a timeout.
 */
#ifndef EMBER_TEST_H
#define EMBER_TEST_H

#include <stdio.h>

static int test_checks, test_failures;

#define CHECK(cond)                                                           \
	do {                                                                  \
		test_checks++;                                                \
		if (!(cond)) {                                                \
			test_failures++;                                      \
			fprintf(stderr, "%s:%d: check failed: %s\n",          \
				__FILE__, __LINE__, #cond);                   \
		}                                                             \
	} while (0)

/* Like CHECK, but stops the test: for conditions the rest depends on. */
#define REQUIRE(cond)                                                         \
	do {                                                                  \
		test_checks++;                                                \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: required check failed: %s\n", \
				__FILE__, __LINE__, #cond);                   \
			return 1;                                             \
		}                                                             \
	} while (0)

static inline int test_summary(const char *name)
{
	fprintf(stderr, "%s: %d checks, %d failed\n", name, test_checks,
		test_failures);
	return test_failures ? 1 : 0;
}

#endif
