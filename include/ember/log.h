/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging for every Ember program: one line per message on stderr (or a
 * file), in one format:
 *
 *   2026-12-03T16:40:01.123Z INFO  ember-vmm[vm-7]: guest rebooted
 *   ^ UTC time, ms            ^level ^component ^object id  ^message
 *
 * The component is set once per process; the object id (a VM, sandbox or
 * page server) is given per call, or set as the process default when a
 * process serves one object (ember-vmm --id).
 */
#ifndef EMBER_LOG_H
#define EMBER_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum ember_log_level {
	EMBER_LOG_ERROR = 0,
	EMBER_LOG_WARN,
	EMBER_LOG_INFO,
	EMBER_LOG_DEBUG,
};

/* Sets the component name and the default object id (may be NULL). */
void ember_log_init(const char *component, const char *default_id);
void ember_log_set_id(const char *default_id);
void ember_log_set_level(enum ember_log_level level);
enum ember_log_level ember_log_get_level(void);
/* Parses "error", "warn"/"warning", "info", "debug" (any case; Firecracker's
 * "Trace" maps to debug). Returns 0 or -EINVAL. */
int ember_log_parse_level(const char *s, enum ember_log_level *out);
/* Sends log lines to a file (appended) instead of stderr. 0 or -errno. */
int ember_log_set_file(const char *path);
bool ember_log_enabled(enum ember_log_level level);

void ember_logv(enum ember_log_level level, const char *id, const char *fmt,
		va_list ap);
void ember_log(enum ember_log_level level, const char *id, const char *fmt,
	       ...) __attribute__((format(printf, 3, 4)));

#define log_error(...) ember_log(EMBER_LOG_ERROR, NULL, __VA_ARGS__)
#define log_warn(...) ember_log(EMBER_LOG_WARN, NULL, __VA_ARGS__)
#define log_info(...) ember_log(EMBER_LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...)                                                        \
	do {                                                                  \
		if (ember_log_enabled(EMBER_LOG_DEBUG))                       \
			ember_log(EMBER_LOG_DEBUG, NULL, __VA_ARGS__);        \
	} while (0)

/* Per-object variants: the first argument is the object's id. */
#define olog_error(id, ...) ember_log(EMBER_LOG_ERROR, (id), __VA_ARGS__)
#define olog_warn(id, ...) ember_log(EMBER_LOG_WARN, (id), __VA_ARGS__)
#define olog_info(id, ...) ember_log(EMBER_LOG_INFO, (id), __VA_ARGS__)
#define olog_debug(id, ...)                                                   \
	do {                                                                  \
		if (ember_log_enabled(EMBER_LOG_DEBUG))                       \
			ember_log(EMBER_LOG_DEBUG, (id), __VA_ARGS__);        \
	} while (0)

/* Start-up only: logs and exits with the given status. */
_Noreturn void ember_die(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
