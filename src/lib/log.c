// SPDX-License-Identifier: Apache-2.0
#include <ember/log.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_component[32] = "ember";
static char log_default_id[64];
static enum ember_log_level log_level = EMBER_LOG_INFO;
static int log_fd = STDERR_FILENO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
	[EMBER_LOG_ERROR] = "ERROR",
	[EMBER_LOG_WARN] = "WARN ",
	[EMBER_LOG_INFO] = "INFO ",
	[EMBER_LOG_DEBUG] = "DEBUG",
};

void ember_log_init(const char *component, const char *default_id)
{
	const char *env = getenv("EMBER_LOG_LEVEL");

	snprintf(log_component, sizeof(log_component), "%s", component);
	ember_log_set_id(default_id);
	if (env)
		ember_log_parse_level(env, &log_level);
}

void ember_log_set_id(const char *default_id)
{
	snprintf(log_default_id, sizeof(log_default_id), "%s",
		 default_id ? default_id : "");
}

void ember_log_set_level(enum ember_log_level level)
{
	log_level = level;
}

enum ember_log_level ember_log_get_level(void)
{
	return log_level;
}

bool ember_log_enabled(enum ember_log_level level)
{
	return level <= log_level;
}

int ember_log_parse_level(const char *s, enum ember_log_level *out)
{
	static const struct {
		const char *name;
		enum ember_log_level level;
	} names[] = {
		{ "error", EMBER_LOG_ERROR }, { "warn", EMBER_LOG_WARN },
		{ "warning", EMBER_LOG_WARN }, { "info", EMBER_LOG_INFO },
		{ "debug", EMBER_LOG_DEBUG },  { "trace", EMBER_LOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

int ember_log_set_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&log_lock);
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

void ember_logv(enum ember_log_level level, const char *id, const char *fmt,
		va_list ap)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	int saved_errno = errno;
	size_t n;
	int r;

	if (!ember_log_enabled(level))
		return;
	if (!id || !*id)
		id = log_default_id;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s%s%s%s: ",
		     ts.tv_nsec / 1000000L, level_names[level], log_component,
		     *id ? "[" : "", id, *id ? "]" : "");
	if (r > 0)
		n += (size_t)r;
	if (n < sizeof(line)) {
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (r > 0)
			n += (size_t)r;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	while (n > 0 && line[n - 1] == '\n')
		n--;
	line[n++] = '\n';
	pthread_mutex_lock(&log_lock);
	for (size_t off = 0; off < n;) {
		ssize_t w = write(log_fd, line + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	pthread_mutex_unlock(&log_lock);
	errno = saved_errno;
}

void ember_log(enum ember_log_level level, const char *id, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ember_logv(level, id, fmt, ap);
	va_end(ap);
}

void ember_die(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ember_logv(EMBER_LOG_ERROR, NULL, fmt, ap);
	va_end(ap);
	exit(status);
}
