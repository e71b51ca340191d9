/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers for tests that drive a real ember-vmm process: start it, send
 * HTTP requests on its API socket with libcurl, stop it and collect its
 * exit status. Every wait is bounded.
 */
#ifndef EMBER_TEST_VMM_API_CLIENT_H
#define EMBER_TEST_VMM_API_CLIENT_H

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char api_sock[300];
static char *resp_body;	      /* body of the last response */
static char resp_fault[1024]; /* its fault_message, or "" */

static size_t api_on_data(char *data, size_t size, size_t n, void *ctx)
{
	size_t old = resp_body ? strlen(resp_body) : 0;
	char *p = realloc(resp_body, old + size * n + 1);

	if (!p)
		return 0;
	memcpy(p + old, data, size * n);
	p[old + size * n] = '\0';
	resp_body = p;
	return size * n;
}

/* Sends one request; returns the HTTP status, or -1 when the connection
 * failed. body may be NULL. */
static long api_req(const char *method, const char *path, const char *body)
{
	struct curl_slist *hdrs = NULL;
	char url[512];
	long status = -1;
	json_t *j;
	CURL *c;

	free(resp_body);
	resp_body = NULL;
	resp_fault[0] = '\0';
	c = curl_easy_init();
	if (!c)
		return -1;
	snprintf(url, sizeof(url), "http://localhost%s", path);
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, api_sock);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, api_on_data);
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	if (resp_body) {
		j = json_loads(resp_body, 0, NULL);
		snprintf(resp_fault, sizeof(resp_fault), "%s",
			 json_string_value(json_object_get(j, "fault_message"))
			     ?: "");
		json_decref(j);
	}
	return status;
}

/* Checks that the last response's fault_message contains s. */
static bool fault_has(const char *s)
{
	if (strstr(resp_fault, s))
		return true;
	fprintf(stderr, "  fault_message \"%s\" lacks \"%s\"\n", resp_fault, s);
	return false;
}

/* A field of the last response's JSON body (a new reference), or NULL. */
static json_t *resp_get(const char *name)
{
	json_t *j = resp_body ? json_loads(resp_body, 0, NULL) : NULL;
	json_t *v = json_incref(json_object_get(j, name));

	json_decref(j);
	return v;
}

/* The value of a string field of the last response's JSON body. */
static const char *resp_field(const char *name)
{
	static char value[4096];
	json_t *v = resp_get(name);

	snprintf(value, sizeof(value), "%s", json_string_value(v) ?: "");
	json_decref(v);
	return value;
}

/* The value of an integer field of the last response's JSON body, or -1. */
static inline long long resp_int(const char *name)
{
	json_t *v = resp_get(name);
	long long n = json_is_integer(v) ? json_integer_value(v) : -1;

	json_decref(v);
	return n;
}

/* Whether a field of the last response's JSON body is true. */
static inline bool resp_true(const char *name)
{
	json_t *v = resp_get(name);
	bool t = json_is_true(v);

	json_decref(v);
	return t;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Starts ember-vmm with argv (NULL-terminated, argv[0] the binary). */
static pid_t vmm_spawn(char *const argv[])
{
	pid_t pid = fork();

	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* Waits up to timeout_ms for the API to answer GET /. */
static bool vmm_wait_api(pid_t pid, long timeout_ms)
{
	for (long t = 0; t < timeout_ms; t += 50) {
		if (api_req("GET", "/", NULL) == 200)
			return true;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return false;
		sleep_ms(50);
	}
	return false;
}

/* Waits up to timeout_ms for pid to end; returns its exit status, 128+sig
 * for a signal, or -1 on timeout (then it is killed). */
static int vmm_wait_exit(pid_t pid, long timeout_ms)
{
	int st;

	for (long t = 0; t < timeout_ms; t += 20) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st)
					     : 128 + WTERMSIG(st);
		sleep_ms(20);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

#endif
