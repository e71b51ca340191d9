// SPDX-License-Identifier: Apache-2.0
/*
 * Counters for GET /metrics, in Prometheus' text format: RPC calls by
 * method and Connect code with their total time, and gauges read from the
 * sandbox table when scraped.
 */
#include "agent.h"

#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES 128

struct series {
	char method[32];
	char code[24];
	uint64_t count;
	uint64_t ns;
};

/* Restores by the prefetch mode that happened (index: enum value). */
struct restore_series {
	uint64_t count, faults, prefetched, bytes;
};

struct agent_metrics {
	pthread_mutex_t lock;
	struct series s[MAX_SERIES];
	size_t n;
	struct restore_series restores[PREFETCH_EAGER + 1];
};

int metrics_new(struct agent_metrics **out)
{
	struct agent_metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	*out = m;
	return 0;
}

void metrics_free(struct agent_metrics *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void metrics_rpc(struct agent_metrics *m, const char *method,
		 const char *code, uint64_t ns)
{
	struct series *s = NULL;

	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n; i++) {
		if (strcmp(m->s[i].method, method) == 0 &&
		    strcmp(m->s[i].code, code) == 0) {
			s = &m->s[i];
			break;
		}
	}
	if (!s && m->n < MAX_SERIES) {
		s = &m->s[m->n++];
		snprintf(s->method, sizeof(s->method), "%s", method);
		snprintf(s->code, sizeof(s->code), "%s", code);
	}
	if (s) {
		s->count++;
		s->ns += ns;
	}
	pthread_mutex_unlock(&m->lock);
}

void metrics_restore(struct agent_metrics *m, const struct restore_stats *r)
{
	if (!r->known || r->mode <= PREFETCH_DEFAULT || r->mode > PREFETCH_EAGER)
		return;
	pthread_mutex_lock(&m->lock);
	m->restores[r->mode].count++;
	m->restores[r->mode].faults += r->faults;
	m->restores[r->mode].prefetched += r->prefetched_pages;
	m->restores[r->mode].bytes += r->bytes_copied;
	pthread_mutex_unlock(&m->lock);
}

static void render_restores(FILE *f, struct agent_metrics *m)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} k[] = {
		{ "ember_agent_restores_total", "Restores (resume, spawn from a template) by prefetch mode.",
		  offsetof(struct restore_series, count) },
		{ "ember_agent_restore_faults_total", "Page faults served until the guest agent answered.",
		  offsetof(struct restore_series, faults) },
		{ "ember_agent_restore_prefetched_pages_total", "Pages installed by prefetch.",
		  offsetof(struct restore_series, prefetched) },
		{ "ember_agent_restore_copied_bytes_total", "Bytes copied from layers until the guest agent answered.",
		  offsetof(struct restore_series, bytes) },
	};

	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", k[i].name,
			k[i].help, k[i].name);
		for (int mode = PREFETCH_OFF; mode <= PREFETCH_EAGER; mode++) {
			const char *p = (const char *)&m->restores[mode];
			uint64_t v;

			memcpy(&v, p + k[i].off, sizeof(v));
			fprintf(f, "%s{prefetch=\"%s\"} %" PRIu64 "\n", k[i].name,
				prefetch_mode_name((enum prefetch_mode)mode), v);
		}
	}
}

char *metrics_render(struct agent *a)
{
	struct agent_metrics *m = a->metrics;
	struct host_counts c;
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	if (!f)
		return NULL;
	sandbox_counts(a, &c);
	fprintf(f, "# HELP ember_agent_sandboxes Sandboxes on this host.\n"
		   "# TYPE ember_agent_sandboxes gauge\n"
		   "ember_agent_sandboxes{state=\"running\"} %u\n"
		   "ember_agent_sandboxes{state=\"paused\"} %u\n",
		c.running, c.paused);
	fprintf(f, "# HELP ember_agent_vcpus_allocated vCPUs of sandboxes holding a VMM.\n"
		   "# TYPE ember_agent_vcpus_allocated gauge\n"
		   "ember_agent_vcpus_allocated %u\n", c.vcpus_used);
	fprintf(f, "# HELP ember_agent_memory_allocated_bytes Memory of sandboxes holding a VMM.\n"
		   "# TYPE ember_agent_memory_allocated_bytes gauge\n"
		   "ember_agent_memory_allocated_bytes %" PRIu64 "\n",
		c.memory_used_mib << 20);
	fprintf(f, "# HELP ember_agent_rpc_requests_total RPC calls by method and Connect code.\n"
		   "# TYPE ember_agent_rpc_requests_total counter\n");
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n; i++)
		fprintf(f, "ember_agent_rpc_requests_total{method=\"%s\",code=\"%s\"} %" PRIu64 "\n",
			m->s[i].method, m->s[i].code, m->s[i].count);
	fprintf(f, "# HELP ember_agent_rpc_seconds_total Time spent in RPC calls.\n"
		   "# TYPE ember_agent_rpc_seconds_total counter\n");
	for (size_t i = 0; i < m->n; i++)
		fprintf(f, "ember_agent_rpc_seconds_total{method=\"%s\",code=\"%s\"} %.6f\n",
			m->s[i].method, m->s[i].code, (double)m->s[i].ns / 1e9);
	render_restores(f, m);
	pthread_mutex_unlock(&m->lock);
	if (fclose(f) != 0) {
		free(out);
		return NULL;
	}
	return out;
}
