// SPDX-License-Identifier: Apache-2.0
/*
 * ember: the command-line client of emberd's REST API. Tables for people,
 * --json for scripts; see `ember --help` for the exit statuses.
 */
#include <ember/util.h>

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Exit statuses scripts can trust (besides 0, 1 and 2 of every program). */
enum {
	EXIT_NOT_FOUND = 3,	/* 404: no such sandbox, snapshot, ... */
	EXIT_CONFLICT = 4,	/* 409: wrong state, name taken */
	EXIT_AUTH = 5,		/* 401: missing or wrong API key */
	EXIT_UNAVAILABLE = 6,	/* 503: no host has room or answers; emberd
				 * unreachable */
};

static struct {
	const char *url;
	const char *key;
	bool json;
	bool quiet;
} g;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ember [--json] [--api-url URL] [--api-key KEY] COMMAND ...\n"
		"\n"
		"  sandbox create [--template NAME] [--vcpus N] [--memory SIZE]\n"
		"                 [--timeout SECS] [--on-timeout pause|kill]\n"
		"                 [--meta K=V]... [--env K=V]... [--network]\n"
		"  sandbox list [--state STATE] [--meta K=V]...\n"
		"  sandbox get ID\n"
		"  sandbox exec ID [--env K=V]... [--cwd DIR] [--timeout SECS] -- CMD [ARG...]\n"
		"  sandbox pause ID | resume ID | kill ID\n"
		"  sandbox timeout ID SECS [--on-timeout pause|kill]\n"
		"  sandbox cp ID:PATH LOCAL | LOCAL ID:PATH   ('-' is stdin/stdout)\n"
		"  snapshot create ID NAME [--stop] | list | get NAME | delete NAME\n"
		"  template list\n"
		"  host list\n"
		"\n"
		"Options:\n"
		"  --json          print the API's JSON (one object) instead of tables\n"
		"  --api-url URL   emberd's address (default $EMBER_API_URL or http://127.0.0.1:8080)\n"
		"  --api-key KEY   API key (default $EMBER_API_KEY)\n"
		"  -q, --quiet     no progress messages\n"
		"  -h, --help      this help;  -V, --version  the version\n"
		"\n"
		"Exit status: 0 ok, 1 failure, 2 usage error, 3 not found, 4 conflict\n"
		"(wrong state, name taken), 5 unauthenticated, 6 unavailable (no host has\n"
		"room or answers, emberd unreachable). `sandbox exec` exits with the\n"
		"command's status (128+N when killed by signal N).\n");
}

static _Noreturn void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ember: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'ember --help'.\n");
	exit(EMBER_EXIT_USAGE);
}

static void progress(const char *fmt, ...)
{
	va_list ap;

	if (g.quiet)
		return;
	fprintf(stderr, "ember: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* --- HTTP ----------------------------------------------------------------- */

struct buf {
	char *data;
	size_t len;
};

static size_t collect(char *p, size_t size, size_t n, void *ctx)
{
	struct buf *b = ctx;
	char *d = realloc(b->data, b->len + size * n + 1);

	if (!d)
		return 0;
	memcpy(d + b->len, p, size * n);
	b->len += size * n;
	d[b->len] = '\0';
	b->data = d;
	return size * n;
}

struct call {
	const char *method;
	const char *path;		/* with the query */
	const void *body;
	size_t body_len;
	const char *content_type;
	curl_write_callback writer;	/* streaming; else collected */
	void *writer_ctx;
	struct buf *errbody;		/* streaming: where an error body went */
	long timeout_s;
};

/* The transfer in progress, for a streaming writer to ask its status. */
static CURL *current;

static CURL *setup(const struct call *c, struct curl_slist **hdrs,
		   struct buf *out)
{
	char url[4096], auth[512], ct[128];
	CURL *curl = curl_easy_init();

	if (!curl)
		return NULL;
	snprintf(url, sizeof(url), "%s%s", g.url, c->path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, c->method);
	if (g.key) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", g.key);
		*hdrs = curl_slist_append(*hdrs, auth);
	}
	if (c->body) {
		snprintf(ct, sizeof(ct), "Content-Type: %s",
			 c->content_type ? c->content_type
					 : "application/json");
		*hdrs = curl_slist_append(*hdrs, ct);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, c->body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)c->body_len);
	}
	*hdrs = curl_slist_append(*hdrs, "Expect:");
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, c->timeout_s);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION,
			 c->writer ? c->writer : collect);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA,
			 c->writer ? c->writer_ctx : (void *)out);
	return curl;
}

static int exit_for_status(long status)
{
	switch (status) {
	case 400: return EMBER_EXIT_USAGE;
	case 401: return EXIT_AUTH;
	case 404: return EXIT_NOT_FOUND;
	case 409: return EXIT_CONFLICT;
	case 503: return EXIT_UNAVAILABLE;
	default: return EMBER_EXIT_FAILURE;
	}
}

/* Prints the API's error and returns the exit status for it. */
static int report_error(long status, const struct buf *b)
{
	json_t *j = b->data ? json_loads(b->data, 0, NULL) : NULL;
	const char *msg = json_string_value(json_object_get(j, "message"));

	if (g.json && j)
		fprintf(stderr, "%s\n", b->data);
	else
		fprintf(stderr, "ember: %s (HTTP %ld)\n",
			msg ? msg : "request failed", status);
	if (status == 401 && !g.json && (!g.key || !*g.key))
		fprintf(stderr, "ember: no API key given: set EMBER_API_KEY or "
				"--api-key (emberd keys create makes one)\n");
	json_decref(j);
	return exit_for_status(status);
}

/* Runs a call; on 2xx returns 0 with the body in *out (JSON parsed when
 * out_json), else prints the error and returns an exit status. */
static int request(const struct call *c, struct buf *raw, json_t **out_json)
{
	struct curl_slist *hdrs = NULL;
	struct buf b = { 0 };
	long status = 0;
	CURLcode rc;
	CURL *curl = setup(c, &hdrs, &b);
	int r = 0;

	if (!curl) {
		fprintf(stderr, "ember: out of memory\n");
		return EMBER_EXIT_FAILURE;
	}
	current = curl;
	rc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	current = NULL;
	curl_easy_cleanup(curl);
	curl_slist_free_all(hdrs);
	if (rc != CURLE_OK && !(c->writer && rc == CURLE_WRITE_ERROR)) {
		fprintf(stderr, "ember: cannot reach emberd at %s: %s\n", g.url,
			curl_easy_strerror(rc));
		free(b.data);
		return EXIT_UNAVAILABLE;
	}
	if (status < 200 || status > 299) {
		r = report_error(status, c->errbody ? c->errbody : &b);
		free(b.data);
		return r;
	}
	if (out_json) {
		*out_json = b.len ? json_loads(b.data, 0, NULL) : json_object();
		if (!*out_json) {
			fprintf(stderr, "ember: emberd answered something that is not JSON\n");
			free(b.data);
			return EMBER_EXIT_FAILURE;
		}
	}
	if (raw)
		*raw = b;
	else
		free(b.data);
	return 0;
}

static int request_json(const char *method, const char *path, json_t *body,
			long timeout_s, json_t **out)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	struct call c = { .method = method, .path = path, .body = text,
			  .body_len = text ? strlen(text) : 0,
			  .timeout_s = timeout_s };
	int r = request(&c, NULL, out);

	free(text);
	json_decref(body);
	return r;
}

/* --- output --------------------------------------------------------------- */

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s)
		printf("%s\n", s);
	free(s);
}

static const char *str(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : "-";
}

static long long num(json_t *obj, const char *key)
{
	return (long long)json_integer_value(json_object_get(obj, key));
}

static void print_sandbox_row(json_t *s)
{
	printf("%-22s %-10s %-16s %5lld %8lld  %-14s %s\n", str(s, "id"),
	       str(s, "state"), str(s, "template"), num(s, "vcpus"),
	       num(s, "memory_mib"), str(s, "host"),
	       json_is_string(json_object_get(s, "error")) ? str(s, "error")
							    : "");
}

static void print_sandbox_header(void)
{
	printf("%-22s %-10s %-16s %5s %8s  %-14s %s\n", "ID", "STATE",
	       "TEMPLATE", "VCPUS", "MEM(MiB)", "HOST", "ERROR");
}

static void print_sandbox(json_t *s)
{
	json_t *ev = json_object_get(s, "events"), *e;
	size_t i;

	printf("id:          %s\nstate:       %s\ntemplate:    %s\n"
	       "vcpus:       %lld\nmemory:      %lld MiB\nhost:        %s\n"
	       "timeout:     %lld s (on timeout: %s)\n",
	       str(s, "id"), str(s, "state"), str(s, "template"),
	       num(s, "vcpus"), num(s, "memory_mib"), str(s, "host"),
	       num(s, "timeout"), str(s, "on_timeout"));
	if (json_is_string(json_object_get(s, "error")))
		printf("error:       %s\n", str(s, "error"));
	json_array_foreach(ev, i, e)
		printf("event:       %s -> %s  %s\n",
		       json_is_string(json_object_get(e, "from"))
			       ? str(e, "from")
			       : "(new)",
		       str(e, "to"),
		       json_is_string(json_object_get(e, "reason"))
			       ? str(e, "reason")
			       : "");
}

static void print_template_header(void)
{
	printf("%-24s %-9s %5s %8s  %-14s %s\n", "NAME", "KIND", "VCPUS",
	       "MEM(MiB)", "HOST", "SOURCE");
}

static void print_template_row(json_t *t)
{
	printf("%-24s %-9s %5lld %8lld  %-14s %s\n", str(t, "name"),
	       str(t, "kind"), num(t, "vcpus"), num(t, "memory_mib"),
	       str(t, "host"), str(t, "source_sandbox"));
}

/* --- arguments ------------------------------------------------------------ */

/* Adds K=V to an object. */
static void add_kv(json_t *obj, const char *opt, const char *kv)
{
	const char *eq = strchr(kv, '=');
	char key[256];

	if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof(key))
		usage_error("%s wants KEY=VALUE, not '%s'", opt, kv);
	snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
	json_object_set_new(obj, key, json_string(eq + 1));
}

static long long int_arg(const char *opt, const char *s)
{
	uint64_t v;

	if (ember_parse_u64(s, &v) < 0 || v > (1ull << 40))
		usage_error("%s wants a number, not '%s'", opt, s);
	return (long long)v;
}

static char *urlenc(const char *s)
{
	CURL *c = curl_easy_init();
	char *e = c ? curl_easy_escape(c, s, 0) : NULL;
	char *out = e ? strdup(e) : NULL;

	curl_free(e);
	if (c)
		curl_easy_cleanup(c);
	if (!out) {
		fprintf(stderr, "ember: out of memory\n");
		exit(EMBER_EXIT_FAILURE);
	}
	return out;
}

enum { O_TEMPLATE = 300, O_VCPUS, O_MEMORY, O_TIMEOUT, O_ON_TIMEOUT, O_META,
       O_ENV, O_NETWORK, O_STATE, O_CWD, O_STOP };

static const struct option sub_opts[] = {
	{ "template", required_argument, NULL, O_TEMPLATE },
	{ "vcpus", required_argument, NULL, O_VCPUS },
	{ "memory", required_argument, NULL, O_MEMORY },
	{ "timeout", required_argument, NULL, O_TIMEOUT },
	{ "on-timeout", required_argument, NULL, O_ON_TIMEOUT },
	{ "meta", required_argument, NULL, O_META },
	{ "env", required_argument, NULL, O_ENV },
	{ "network", no_argument, NULL, O_NETWORK },
	{ "state", required_argument, NULL, O_STATE },
	{ "cwd", required_argument, NULL, O_CWD },
	{ "stop", no_argument, NULL, O_STOP },
	{ "json", no_argument, NULL, 'j' },
	{ "quiet", no_argument, NULL, 'q' },
	{ 0 },
};

struct sub_args {
	json_t *body;		/* fields for the request */
	json_t *meta, *env;
	const char *state;
	bool stop;
	char **pos;		/* positional arguments */
	int npos;
};

/* Parses a subcommand's options; `allowed` lists the option ids. */
static void parse_sub(int argc, char **argv, const int *allowed,
		      struct sub_args *a)
{
	int c;

	memset(a, 0, sizeof(*a));
	a->body = json_object();
	a->meta = json_object();
	a->env = json_object();
	/* 0: glibc starts afresh (ordering and all), skipping argv[0]. */
	optind = 0;
	while ((c = getopt_long(argc, argv, "jq", sub_opts, NULL)) != -1) {
		bool ok = c == 'j' || c == 'q';

		for (int i = 0; allowed[i]; i++)
			ok = ok || allowed[i] == c;
		if (!ok || c == '?')
			usage_error("option not valid here: %s",
				    argv[optind - 1]);
		switch (c) {
		case 'j': g.json = true; break;
		case 'q': g.quiet = true; break;
		case O_TEMPLATE:
			json_object_set_new(a->body, "template",
					    json_string(optarg));
			break;
		case O_VCPUS:
			json_object_set_new(a->body, "vcpus",
					    json_integer(int_arg("--vcpus",
								 optarg)));
			break;
		case O_MEMORY: {
			uint64_t v;

			if (ember_parse_size(optarg, &v) < 0)
				usage_error("--memory wants a size like 512M, not '%s'",
					    optarg);
			/* A bare number is MiB. */
			if (strspn(optarg, "0123456789") == strlen(optarg))
				v <<= 20;
			json_object_set_new(a->body, "memory_mib",
					    json_integer((json_int_t)(v >> 20)));
			break;
		}
		case O_TIMEOUT:
			json_object_set_new(a->body, "timeout",
					    json_integer(int_arg("--timeout",
								 optarg)));
			break;
		case O_ON_TIMEOUT:
			if (strcmp(optarg, "pause") && strcmp(optarg, "kill"))
				usage_error("--on-timeout is pause or kill");
			json_object_set_new(a->body, "on_timeout",
					    json_string(optarg));
			break;
		case O_META: add_kv(a->meta, "--meta", optarg); break;
		case O_ENV: add_kv(a->env, "--env", optarg); break;
		case O_NETWORK:
			json_object_set_new(a->body, "network", json_true());
			break;
		case O_STATE: a->state = optarg; break;
		case O_CWD:
			json_object_set_new(a->body, "cwd", json_string(optarg));
			break;
		case O_STOP: a->stop = true; break;
		}
	}
	a->pos = argv + optind;
	a->npos = argc - optind;
}

static void sub_free(struct sub_args *a)
{
	json_decref(a->body);
	json_decref(a->meta);
	json_decref(a->env);
}

static void need(const struct sub_args *a, int n, const char *what)
{
	if (a->npos != n)
		usage_error("usage: %s", what);
}

/* --- sandbox -------------------------------------------------------------- */

static double elapsed(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) +
	       (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A slow call with progress on stderr. */
static int slow(const char *what, const char *method, const char *path,
		json_t *body, json_t **out)
{
	struct timespec t0;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	progress("%s...", what);
	r = request_json(method, path, body, 900, out);
	if (r == 0)
		progress("%s: done in %.1f s", what, elapsed(&t0));
	return r;
}

static int show_sandbox(json_t *j)
{
	if (g.json)
		print_json(j);
	else
		print_sandbox(j);
	json_decref(j);
	return 0;
}

static int sandbox_create(int argc, char **argv)
{
	static const int ok[] = { O_TEMPLATE, O_VCPUS, O_MEMORY, O_TIMEOUT,
				  O_ON_TIMEOUT, O_META, O_ENV, O_NETWORK, 0 };
	struct sub_args a;
	json_t *j;
	int r;

	parse_sub(argc, argv, ok, &a);
	need(&a, 0, "ember sandbox create [OPTIONS]");
	if (json_object_size(a.meta))
		json_object_set(a.body, "metadata", a.meta);
	if (json_object_size(a.env))
		json_object_set(a.body, "env", a.env);
	r = slow("creating a sandbox", "POST", "/v1/sandboxes",
		 json_incref(a.body), &j);
	sub_free(&a);
	if (r)
		return r;
	if (g.json)
		print_json(j);
	else
		printf("%s\n", str(j, "id"));
	json_decref(j);
	return 0;
}

static int sandbox_list(int argc, char **argv)
{
	static const int ok[] = { O_STATE, O_META, 0 };
	char path[4096];
	struct sub_args a;
	const char *k;
	json_t *j, *v, *s;
	size_t n = 0, i;
	int r;

	parse_sub(argc, argv, ok, &a);
	need(&a, 0, "ember sandbox list [--state STATE] [--meta K=V]...");
	n = (size_t)snprintf(path, sizeof(path), "/v1/sandboxes?");
	if (a.state) {
		char *e = urlenc(a.state);
		n += (size_t)snprintf(path + n, sizeof(path) - n, "state=%s&", e);
		free(e);
	}
	json_object_foreach(a.meta, k, v) {
		char *ek = urlenc(k), *ev = urlenc(json_string_value(v));

		n += (size_t)snprintf(path + n, sizeof(path) - n,
				      "metadata.%s=%s&", ek, ev);
		free(ek);
		free(ev);
	}
	if (n >= sizeof(path))
		usage_error("filters too long");
	sub_free(&a);
	r = request_json("GET", path, NULL, 60, &j);
	if (r)
		return r;
	if (g.json) {
		print_json(j);
	} else {
		print_sandbox_header();
		json_array_foreach(json_object_get(j, "sandboxes"), i, s)
			print_sandbox_row(s);
	}
	json_decref(j);
	return 0;
}

static int sandbox_simple(int argc, char **argv, const char *verb)
{
	static const int ok[] = { 0 };
	char path[512], what[128];
	struct sub_args a;
	json_t *j;
	int r;

	parse_sub(argc, argv, ok, &a);
	if (a.npos != 1)
		usage_error("usage: ember sandbox %s ID", verb);
	char *id = urlenc(a.pos[0]);
	sub_free(&a);
	if (strcmp(verb, "get") == 0) {
		snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
		r = request_json("GET", path, NULL, 60, &j);
	} else if (strcmp(verb, "kill") == 0) {
		snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
		snprintf(what, sizeof(what), "destroying %s", id);
		r = slow(what, "DELETE", path, NULL, &j);
	} else {
		bool pause = strcmp(verb, "pause") == 0;

		snprintf(path, sizeof(path), "/v1/sandboxes/%s/%s", id,
			 pause ? "pause" : "resume");
		snprintf(what, sizeof(what), "%s %s",
			 pause ? "pausing" : "resuming",
			 id);
		r = slow(what, "POST", path, json_object(), &j);
	}
	free(id);
	if (r)
		return r;
	if (strcmp(verb, "get") == 0 || g.json)
		return show_sandbox(j);
	printf("%s %s\n", str(j, "id"), str(j, "state"));
	json_decref(j);
	return 0;
}

static int sandbox_timeout(int argc, char **argv)
{
	static const int ok[] = { O_ON_TIMEOUT, 0 };
	struct sub_args a;
	char path[512];
	json_t *j;
	int r;

	parse_sub(argc, argv, ok, &a);
	need(&a, 2, "ember sandbox timeout ID SECS [--on-timeout pause|kill]");
	char *id = urlenc(a.pos[0]);
	json_object_set_new(a.body, "timeout",
			    json_integer(int_arg("SECS", a.pos[1])));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/timeout", id);
	free(id);
	r = request_json("POST", path, json_incref(a.body), 60, &j);
	sub_free(&a);
	if (r)
		return r;
	if (g.json)
		return show_sandbox(j);
	printf("%s timeout %lld s (%s)\n", str(j, "id"), num(j, "timeout"),
	       str(j, "on_timeout"));
	json_decref(j);
	return 0;
}

/* The exec stream: NDJSON events, possibly split across writes. */
struct exec_state {
	struct buf line;
	struct buf errbody;
	int status;		/* -1 until the exit event */
	bool failed;
};

static void exec_line(struct exec_state *s, const char *line)
{
	json_t *ev = json_loads(line, 0, NULL);
	const char *type = str(ev, "type");
	const char *data = json_string_value(json_object_get(ev, "data"));

	if (!ev) {
		fprintf(stderr, "ember: bad event from emberd: %s\n", line);
		s->failed = true;
		return;
	}
	if (g.json)
		printf("%s\n", line);
	if (strcmp(type, "exit") == 0) {
		long long sig = num(ev, "signal");

		s->status = sig ? 128 + (int)sig : (int)num(ev, "exit_code");
	} else if (strcmp(type, "error") == 0) {
		fprintf(stderr, "ember: exec failed: %s\n", str(ev, "message"));
		s->failed = true;
	} else if (!g.json && data) {
		FILE *f = strcmp(type, "stderr") == 0 ? stderr : stdout;

		fwrite(data, 1, json_string_length(json_object_get(ev, "data")),
		       f);
		fflush(f);
	} else if (!g.json) {
		fprintf(stderr, "ember: (%s: binary data not shown)\n", type);
	}
	json_decref(ev);
}

static size_t exec_write(char *p, size_t size, size_t n, void *ctx)
{
	struct exec_state *s = ctx;
	size_t total = size * n;
	long status = 0;
	char *nl;

	curl_easy_getinfo(current, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200)
		return collect(p, size, n, &s->errbody);
	if (!collect(p, size, n, &s->line))
		return 0;
	while (s->line.data && (nl = memchr(s->line.data, '\n', s->line.len))) {
		*nl = '\0';
		exec_line(s, s->line.data);
		s->line.len -= (size_t)(nl + 1 - s->line.data);
		memmove(s->line.data, nl + 1, s->line.len + 1);
	}
	return total;
}

static int sandbox_exec(int argc, char **argv)
{
	static const int ok[] = { O_ENV, O_CWD, O_TIMEOUT, 0 };
	struct exec_state st = { .status = -1 };
	struct sub_args a;
	char path[512];
	json_t *cmd;
	char *text;
	int r;

	parse_sub(argc, argv, ok, &a);
	if (a.npos < 2)
		usage_error("usage: ember sandbox exec ID [OPTIONS] -- CMD [ARG...]");
	char *id = urlenc(a.pos[0]);
	cmd = json_array();
	for (int i = 1; i < a.npos; i++)
		json_array_append_new(cmd, json_string(a.pos[i]));
	json_object_set_new(a.body, "cmd", cmd);
	json_object_set_new(a.body, "stream", json_true());
	if (json_object_size(a.env))
		json_object_set(a.body, "env", a.env);
	text = json_dumps(a.body, JSON_COMPACT);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/exec", id);
	free(id);
	struct call c = { .method = "POST", .path = path, .body = text,
			  .body_len = text ? strlen(text) : 0,
			  .writer = NULL, .timeout_s = 0 };
	/* An error answer (404, 409...) comes instead of the stream: the
	 * writer keeps it aside for the report. */
	c.writer = exec_write;
	c.writer_ctx = &st;
	c.errbody = &st.errbody;
	r = request(&c, NULL, NULL);
	free(text);
	sub_free(&a);
	free(st.line.data);
	free(st.errbody.data);
	if (r)
		return r;
	if (st.failed || st.status < 0) {
		if (!st.failed)
			fprintf(stderr, "ember: the stream ended without the command's exit status\n");
		return EMBER_EXIT_FAILURE;
	}
	return st.status;
}

static int sandbox_cp(int argc, char **argv)
{
	static const int ok[] = { 0 };
	struct sub_args a;
	const char *src, *dst, *colon;
	char path[8192];
	int r;

	parse_sub(argc, argv, ok, &a);
	need(&a, 2, "ember sandbox cp ID:PATH LOCAL | LOCAL ID:PATH");
	src = a.pos[0];
	dst = a.pos[1];
	colon = strchr(src, ':');
	if (colon && colon[1] == '/') {
		/* Download. */
		char id[128];
		struct buf b = { 0 };

		snprintf(id, sizeof(id), "%.*s", (int)(colon - src), src);
		char *eid = urlenc(id), *ep = urlenc(colon + 1);
		snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s",
			 eid, ep);
		free(eid);
		free(ep);
		struct call c = { .method = "GET", .path = path,
				  .timeout_s = 600 };
		r = request(&c, &b, NULL);
		if (r == 0) {
			FILE *f = strcmp(dst, "-") == 0 ? stdout
							: fopen(dst, "wbe");

			if (!f || fwrite(b.data ? b.data : "", 1, b.len, f) != b.len ||
			    (f != stdout && fclose(f) != 0)) {
				fprintf(stderr, "ember: cannot write %s: %s\n",
					dst, strerror(errno));
				r = EMBER_EXIT_FAILURE;
			}
		}
		free(b.data);
	} else if ((colon = strchr(dst, ':')) && colon[1] == '/') {
		/* Upload. */
		char id[128], *data = NULL;
		size_t len = 0;

		if (strcmp(src, "-") == 0) {
			struct buf b = { 0 };
			char chunk[65536];
			size_t n;

			while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
				collect(chunk, 1, n, &b);
			data = b.data;
			len = b.len;
		} else {
			int e = ember_read_file(src, 64u << 20, &data, &len);

			if (e < 0) {
				fprintf(stderr, "ember: cannot read %s: %s\n",
					src, strerror(-e));
				sub_free(&a);
				return EMBER_EXIT_FAILURE;
			}
		}
		snprintf(id, sizeof(id), "%.*s", (int)(colon - dst), dst);
		char *eid = urlenc(id), *ep = urlenc(colon + 1);
		snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s",
			 eid, ep);
		free(eid);
		free(ep);
		struct call c = { .method = "PUT", .path = path,
				  .body = data ? data : "", .body_len = len,
				  .content_type = "application/octet-stream",
				  .timeout_s = 600 };
		json_t *j = NULL;
		r = request(&c, NULL, &j);
		if (r == 0 && g.json)
			print_json(j);
		json_decref(j);
		free(data);
	} else {
		usage_error("one side of cp is ID:/absolute/path");
	}
	sub_free(&a);
	return r;
}

/* --- snapshots, templates, hosts ----------------------------------------- */

static int list_templates(const char *path, const char *key)
{
	json_t *j, *t;
	size_t i;
	int r = request_json("GET", path, NULL, 60, &j);

	if (r)
		return r;
	if (g.json) {
		print_json(j);
	} else {
		print_template_header();
		json_array_foreach(json_object_get(j, key), i, t)
			print_template_row(t);
	}
	json_decref(j);
	return 0;
}

static int snapshot_cmd(int argc, char **argv)
{
	static const int ok_create[] = { O_STOP, 0 }, none[] = { 0 };
	const char *verb = argc > 1 ? argv[1] : "";
	struct sub_args a;
	char path[512];
	json_t *j;
	int r;

	argc--;
	argv++;
	if (strcmp(verb, "create") == 0) {
		parse_sub(argc, argv, ok_create, &a);
		need(&a, 2, "ember snapshot create SANDBOX_ID NAME [--stop]");
		json_t *body = json_pack("{s:s, s:s, s:b}", "sandbox_id",
					 a.pos[0], "name", a.pos[1],
					 "stop_source", a.stop);
		char what[256];
		snprintf(what, sizeof(what), "snapshotting %s as %s", a.pos[0],
			 a.pos[1]);
		sub_free(&a);
		r = slow(what, "POST", "/v1/snapshots", body, &j);
		if (r)
			return r;
		if (g.json)
			print_json(j);
		else
			printf("%s\n", str(j, "name"));
		json_decref(j);
		return 0;
	}
	parse_sub(argc, argv, none, &a);
	if (strcmp(verb, "list") == 0) {
		need(&a, 0, "ember snapshot list");
		sub_free(&a);
		return list_templates("/v1/snapshots", "snapshots");
	}
	if (strcmp(verb, "get") != 0 && strcmp(verb, "delete") != 0)
		usage_error("usage: ember snapshot create|list|get|delete");
	need(&a, 1, "ember snapshot get|delete NAME");
	char *name = urlenc(a.pos[0]);
	sub_free(&a);
	snprintf(path, sizeof(path), "/v1/snapshots/%s", name);
	free(name);
	if (strcmp(verb, "delete") == 0)
		return request_json("DELETE", path, NULL, 300, NULL);
	r = request_json("GET", path, NULL, 60, &j);
	if (r)
		return r;
	if (g.json) {
		print_json(j);
	} else {
		print_template_header();
		print_template_row(j);
	}
	json_decref(j);
	return 0;
}

static int host_list(int argc, char **argv)
{
	static const int none[] = { 0 };
	struct sub_args a;
	json_t *j, *h;
	size_t i;
	int r;

	parse_sub(argc, argv, none, &a);
	need(&a, 0, "ember host list");
	sub_free(&a);
	r = request_json("GET", "/v1/hosts", NULL, 60, &j);
	if (r)
		return r;
	if (g.json) {
		print_json(j);
	} else {
		printf("%-14s %-6s %-28s %9s %12s  %s\n", "ID", "STATE", "URL",
		       "VCPUS", "FREE MiB", "ERROR");
		json_array_foreach(json_object_get(j, "hosts"), i, h)
			printf("%-14s %-6s %-28s %4lld/%-4lld %12lld  %s\n",
			       str(h, "id"), str(h, "state"), str(h, "url"),
			       num(h, "free_vcpus"), num(h, "total_vcpus"),
			       num(h, "free_memory_mib"),
			       json_is_string(json_object_get(h, "last_error"))
				       ? str(h, "last_error")
				       : "");
	}
	json_decref(j);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "api-url", required_argument, NULL, 'u' },
		{ "api-key", required_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *group, *verb;
	int c, r;

	g.url = getenv("EMBER_API_URL");
	g.key = getenv("EMBER_API_KEY");
	while ((c = getopt_long(argc, argv, "+jqhV", opts, NULL)) != -1) {
		switch (c) {
		case 'j': g.json = true; break;
		case 'u': g.url = optarg; break;
		case 'k': g.key = optarg; break;
		case 'q': g.quiet = true; break;
		case 'h': usage(stdout); return EMBER_EXIT_OK;
		case 'V': printf("ember %s\n", EMBER_VERSION); return EMBER_EXIT_OK;
		default: usage(stderr); return EMBER_EXIT_USAGE;
		}
	}
	if (!g.url || !*g.url)
		g.url = "http://127.0.0.1:8080";
	if (optind >= argc)
		usage_error("a command is needed");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	group = argv[optind];
	verb = optind + 1 < argc ? argv[optind + 1] : "";
	/* Subcommand argv: [verb, args...] so getopt starts after the verb. */
	int sargc = argc - optind - 1;
	char **sargv = argv + optind + 1;

	if (strcmp(group, "sandbox") == 0 || strcmp(group, "sandboxes") == 0) {
		if (strcmp(verb, "create") == 0)
			r = sandbox_create(sargc, sargv);
		else if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0)
			r = sandbox_list(sargc, sargv);
		else if (strcmp(verb, "get") == 0 || strcmp(verb, "pause") == 0 ||
			 strcmp(verb, "resume") == 0 || strcmp(verb, "kill") == 0)
			r = sandbox_simple(sargc, sargv, verb);
		else if (strcmp(verb, "exec") == 0)
			r = sandbox_exec(sargc, sargv);
		else if (strcmp(verb, "timeout") == 0)
			r = sandbox_timeout(sargc, sargv);
		else if (strcmp(verb, "cp") == 0)
			r = sandbox_cp(sargc, sargv);
		else
			usage_error("unknown sandbox command '%s'", verb);
	} else if (strcmp(group, "snapshot") == 0) {
		r = snapshot_cmd(argc - optind, argv + optind);
	} else if (strcmp(group, "template") == 0 && strcmp(verb, "list") == 0) {
		r = list_templates("/v1/templates", "templates");
	} else if (strcmp(group, "host") == 0 && strcmp(verb, "list") == 0) {
		r = host_list(sargc, sargv);
	} else {
		usage_error("unknown command '%s %s'", group, verb);
	}
	curl_global_cleanup();
	return r;
}
