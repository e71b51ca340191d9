// SPDX-License-Identifier: Apache-2.0
/*
 * The client of Firecracker's API (and ember-vmm's, which is a subset of
 * it): HTTP/1.1 with JSON bodies over the VMM's Unix socket, "204 No
 * Content" for accepted PUT/PATCH, {"fault_message": "..."} with a 4xx for
 * refusals. Only what Firecracker documents is sent, so a real Firecracker
 * can be driven the same way (--vmm firecracker).
 */
#include "agent.h"

#include <ember/log.h>

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vmm_client {
	CURL *curl;
	char sock[108];
	char id[AGENT_ID_MAX + 1];
	long timeout_ms;
};

struct buf {
	char *p;
	size_t len;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	struct buf *b = ctx;
	size_t n = size * nmemb;
	char *q;

	if (b->len + n > (1u << 20))
		return 0; /* no answer of the API is this big */
	q = realloc(b->p, b->len + n + 1);
	if (!q)
		return 0;
	memcpy(q + b->len, ptr, n);
	b->p = q;
	b->len += n;
	b->p[b->len] = '\0';
	return n;
}

int vmm_client_new(const char *api_sock, const char *id, long timeout_ms,
		   struct vmm_client **out)
{
	struct vmm_client *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	if (strlen(api_sock) >= sizeof(c->sock)) {
		free(c);
		return -ENAMETOOLONG;
	}
	c->curl = curl_easy_init();
	if (!c->curl) {
		free(c);
		return -ENOMEM;
	}
	snprintf(c->sock, sizeof(c->sock), "%s", api_sock);
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->timeout_ms = timeout_ms;
	*out = c;
	return 0;
}

void vmm_client_free(struct vmm_client *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->curl);
	free(c);
}

int vmm_request(struct vmm_client *c, const char *method, const char *path,
		json_t *body, json_t **resp, struct agent_err *e)
{
	struct curl_slist *hdrs = NULL;
	struct buf in = { 0 };
	char url[256], *payload = NULL;
	long status = 0;
	CURLcode cr;
	int r;

	if (resp)
		*resp = NULL;
	snprintf(url, sizeof(url), "http://localhost%s", path);
	curl_easy_reset(c->curl);
	curl_easy_setopt(c->curl, CURLOPT_UNIX_SOCKET_PATH, c->sock);
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &in);
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	if (body) {
		payload = json_dumps(body, JSON_COMPACT);
		if (!payload) {
			curl_slist_free_all(hdrs);
			return -ENOMEM;
		}
		hdrs = curl_slist_append(hdrs,
					 "Content-Type: application/json");
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, payload);
	}
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
	cr = curl_easy_perform(c->curl);
	if (cr != CURLE_OK) {
		agent_err_set(e, "VMM API %s %s: %s", method, path,
			      curl_easy_strerror(cr));
		r = cr == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
		    : cr == CURLE_COULDNT_CONNECT ? -ECONNREFUSED
						  : -EIO;
		goto out;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 200 && status < 300) {
		r = (int)status;
		if (resp && in.len) {
			*resp = json_loadb(in.p, in.len, 0, NULL);
			if (!*resp) {
				agent_err_set(e, "VMM API %s %s: answer is not JSON",
					      method, path);
				r = -EPROTO;
			}
		}
		goto out;
	}
	json_t *j = in.len ? json_loadb(in.p, in.len, 0, NULL) : NULL;
	const char *fault = json_string_value(json_object_get(j, "fault_message"));
	agent_err_set(e, "VMM refused %s %s (%ld): %s", method, path, status,
		      fault ? fault : (in.p ? in.p : "no message"));
	json_decref(j);
	r = -EIO;
out:
	curl_slist_free_all(hdrs);
	free(payload);
	free(in.p);
	return r;
}

int vmm_wait_ready(struct vmm_client *c, int timeout_ms, pid_t pid,
		   struct agent_err *e)
{
	const struct timespec tick = { 0, 20 * 1000 * 1000 };
	long saved = c->timeout_ms;
	int r = -ETIMEDOUT;

	c->timeout_ms = 1000;
	for (int waited = 0; waited < timeout_ms; waited += 20) {
		if (pid > 0 && !ns_pid_alive(pid, true)) {
			agent_err_set(e, "the VMM exited before its API answered");
			r = -ECHILD;
			break;
		}
		r = vmm_request(c, "GET", "/", NULL, NULL, e);
		if (r >= 0) {
			r = 0;
			break;
		}
		nanosleep(&tick, NULL);
	}
	c->timeout_ms = saved;
	if (r == -ETIMEDOUT)
		agent_err_set(e, "the VMM API did not answer within %d ms",
			      timeout_ms);
	return r;
}
