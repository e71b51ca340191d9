// SPDX-License-Identifier: Apache-2.0
/*
 * The reconciler: every few seconds it asks each host what it runs and
 * makes the database and the hosts agree, then enforces timeouts.
 *
 *   host does not answer          -> host down; its running sandboxes error
 *   DB running, host lacks it     -> error ("not running on its host")
 *   host runs it, DB does not     -> DestroySandbox (an orphan)
 *     know it (or has it stopped)
 *   DB error, its host runs it    -> running again (the host came back)
 *   DB paused                     -> left alone: a paused sandbox has no VMM
 *   starting, pausing, resuming,  -> left alone: an operation is in flight
 *   stopping
 */
#include "emberd.h"

#include <ember/hostagent.h>
#include <ember/log.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void mark_down(struct emberd *d, const struct host *h,
		      const char *why)
{
	struct sandbox *sv;
	char reason[600];
	size_t n;

	if (strcmp(h->state, "down") != 0)
		olog_warn(h->id, "host %s does not answer: %s", h->url, why);
	store_host_set_down(d->db, h->id, why);
	if (store_sandbox_list(d->db, "running", h->id, &sv, &n) < 0)
		return;
	snprintf(reason, sizeof(reason), "host %s does not answer: %s", h->id,
		 why);
	for (size_t i = 0; i < n; i++)
		store_sandbox_transition(d->db, sv[i].id, SBX_RUNNING,
					 SBX_ERROR, reason, NULL);
	sandboxes_free(sv, n);
}

static bool listed(const EmberListSandboxesResponse *ls, const char *id)
{
	for (size_t i = 0; i < ls->n_sandboxes; i++)
		if (ls->sandboxes[i]->sandbox_id &&
		    strcmp(ls->sandboxes[i]->sandbox_id, id) == 0)
			return true;
	return false;
}

static void destroy_orphan(struct emberd *d, struct ember_hostagent_client *c,
			   const struct host *h, const char *id)
{
	EmberDestroySandboxRequest req = EMBER__HOSTAGENT__V1__DESTROY_SANDBOX_REQUEST__INIT;
	EmberDestroySandboxResponse *resp = NULL;
	struct ember_hostagent_error ae = { 0 };
	int r;

	olog_warn(id, "host %s runs a sandbox the database does not: destroying it",
		  h->id);
	req.sandbox_id = (char *)id;
	r = ember_hostagent_destroy_sandbox(c, &req, &resp, &ae);
	if (r < 0)
		olog_error(id, "destroying the orphan on %s failed: %s", h->id,
			   ae.message);
	if (resp)
		ember__hostagent__v1__destroy_sandbox_response__free_unpacked(
			resp, NULL);
}

static void reconcile_host(struct emberd *d, const struct host *h)
{
	EmberGetHostInfoRequest ireq = EMBER__HOSTAGENT__V1__GET_HOST_INFO_REQUEST__INIT;
	EmberListSandboxesRequest lreq = EMBER__HOSTAGENT__V1__LIST_SANDBOXES_REQUEST__INIT;
	EmberGetHostInfoResponse *info = NULL;
	EmberListSandboxesResponse *ls = NULL;
	struct ember_hostagent_client *c = NULL;
	struct ember_hostagent_error ae = { 0 };
	struct sandbox *sv = NULL;
	struct host up = *h;
	size_t n = 0;
	int r;

	if (ember_hostagent_client_new(h->url, d->agent_probe_timeout_ms, &c) < 0) {
		mark_down(d, h, "bad URL");
		return;
	}
	/* What the database has running, read before the host's list: a
	 * sandbox that starts in between is not taken for a vanished one. */
	if (store_sandbox_list(d->db, "running", h->id, &sv, &n) < 0)
		goto out;
	r = ember_hostagent_get_host_info(c, &ireq, &info, &ae);
	if (r == 0)
		r = ember_hostagent_list_sandboxes(c, &lreq, &ls, &ae);
	if (r < 0) {
		mark_down(d, h, ae.message);
		goto out;
	}
	if (strcmp(h->state, "up") != 0)
		olog_info(h->id, "host %s is up: %u vCPUs, %llu MiB free",
			  h->url, info->free_vcpus,
			  (unsigned long long)info->free_memory_mib);
	snprintf(up.agent_host_id, sizeof(up.agent_host_id), "%s",
		 info->host_id ? info->host_id : "");
	snprintf(up.hostname, sizeof(up.hostname), "%s",
		 info->hostname ? info->hostname : "");
	snprintf(up.agent_version, sizeof(up.agent_version), "%s",
		 info->agent_version ? info->agent_version : "");
	snprintf(up.vmm_version, sizeof(up.vmm_version), "%s",
		 info->vmm_version ? info->vmm_version : "");
	up.total_vcpus = info->total_vcpus;
	up.free_vcpus = info->free_vcpus;
	up.total_memory_mib = info->total_memory_mib;
	up.free_memory_mib = info->free_memory_mib;
	up.last_error = NULL;
	store_host_set_up(d->db, &up);

	/* Running in the database, absent on the host: the VM is gone. (A
	 * sandbox paused or deleted since is no longer running: the
	 * transition from running then fails and changes nothing.) */
	for (size_t i = 0; i < n; i++) {
		char reason[300];

		if (listed(ls, sv[i].id))
			continue;
		snprintf(reason, sizeof(reason),
			 "not running on its host %s (its VM is gone)", h->id);
		if (store_sandbox_transition(d->db, sv[i].id, SBX_RUNNING,
					     SBX_ERROR, reason, NULL) == 0)
			olog_warn(sv[i].id, "%s", reason);
	}
	/* On the host, unknown to the database (or stopped there): an
	 * orphan. In error there but running on its own host (the host came
	 * back after it did not answer, or a restarted agent adopted the
	 * VMM): running again. */
	for (size_t i = 0; i < ls->n_sandboxes; i++) {
		const char *id = ls->sandboxes[i]->sandbox_id;
		struct sandbox s = { 0 };

		if (!id || !*id)
			continue;
		r = store_sandbox_get(d->db, id, &s);
		if (r == -ENOENT || (r == 0 && s.state == SBX_STOPPED))
			destroy_orphan(d, c, h, id);
		else if (r == 0 && s.state == SBX_ERROR &&
			 strcmp(s.host_id, h->id) == 0 &&
			 ls->sandboxes[i]->state ==
				 EMBER__HOSTAGENT__V1__SANDBOX_STATE__SANDBOX_STATE_RUNNING &&
			 store_sandbox_transition(d->db, id, SBX_ERROR,
						  SBX_RUNNING,
						  "running on its host again",
						  NULL) == 0) {
			olog_info(id, "running on its host %s again", h->id);
			store_sandbox_set_expiry(d->db, id,
						 now_ms() + s.timeout_s * 1000,
						 s.timeout_s, s.on_timeout);
		}
		sandbox_clear(&s);
	}
out:
	if (info)
		ember__hostagent__v1__get_host_info_response__free_unpacked(
			info, NULL);
	if (ls)
		ember__hostagent__v1__list_sandboxes_response__free_unpacked(
			ls, NULL);
	sandboxes_free(sv, n);
	ember_hostagent_client_free(c);
}

static void enforce_timeouts(struct emberd *d)
{
	struct sandbox *sv;
	int64_t now = now_ms();
	size_t n;

	if (store_sandbox_list(d->db, "running", NULL, &sv, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		struct apierr e = { 0 };

		if (!sv[i].expires_at_ms || sv[i].expires_at_ms > now)
			continue;
		olog_info(sv[i].id, "timeout of %llds reached: %s",
			  (long long)sv[i].timeout_s, sv[i].on_timeout);
		if (strcmp(sv[i].on_timeout, "pause") == 0)
			op_pause(d, sv[i].id, "timeout", NULL, &e);
		else
			op_destroy(d, sv[i].id, "timeout", NULL, &e);
	}
	sandboxes_free(sv, n);
}

void reconcile_once(struct emberd *d)
{
	struct host *hosts;
	size_t n;

	if (store_host_list(d->db, &hosts, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			reconcile_host(d, &hosts[i]);
		hosts_free(hosts, n);
	}
	enforce_timeouts(d);
	pthread_mutex_lock(&d->lock);
	d->reconcile_runs++;
	pthread_mutex_unlock(&d->lock);
}

static void *reconciler_main(void *arg)
{
	struct emberd *d = arg;

	pthread_mutex_lock(&d->lock);
	while (!d->stopping) {
		struct timespec until;

		pthread_mutex_unlock(&d->lock);
		reconcile_once(d);
		pthread_mutex_lock(&d->lock);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += d->reconcile_interval_s;
		while (!d->stopping &&
		       pthread_cond_timedwait(&d->wake, &d->lock, &until) == 0)
			;
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

int reconciler_start(struct emberd *d)
{
	int r = pthread_create(&d->reconciler, NULL, reconciler_main, d);

	if (r)
		return -r;
	d->reconciler_running = true;
	return 0;
}

void reconciler_stop(struct emberd *d)
{
	if (!d->reconciler_running)
		return;
	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	pthread_cond_broadcast(&d->wake);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->reconciler, NULL);
	d->reconciler_running = false;
}
