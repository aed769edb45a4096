/*
 * metrics.c - the /metrics and /healthz endpoints, histograms and
 * counters (see metrics.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "conn.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#define METRICS_NBUCKETS 18

struct metrics_histogram {
	const char *name, *help;
	double bounds[METRICS_NBUCKETS];        /* upper bounds, ascending */
	size_t nbounds;
	uint64_t counts[METRICS_NBUCKETS + 1];  /* last: above every bound */
	uint64_t count;
	double sum;
};

#define METRICS_SECONDS { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, \
	0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900 }, 18

static struct metrics_histogram metrics_hists[METRICS_NHIST] = {
	[METRICS_SAVE_BLOCKING] = { "ckptd_save_blocking_seconds",
	    "Time from reading an accepted save request to replying (what "
	    "the trainer waits for).", METRICS_SECONDS },
	[METRICS_SAVE_DURABLE] = { "ckptd_save_durable_seconds",
	    "Time from reading a save request to its step being durable on "
	    "disk.", METRICS_SECONDS },
	[METRICS_RESTORE] = { "ckptd_restore_seconds",
	    "Time from reading a restore request (not metadata-only) to "
	    "replying with the files.",
	    METRICS_SECONDS },
	[METRICS_STEP_BYTES] = { "ckptd_step_bytes",
	    "Array bytes of each committed step.",
	    { 4096, 65536, 1048576, 4194304, 16777216, 67108864, 268435456,
	      1073741824, 4294967296.0, 17179869184.0, 68719476736.0,
	      274877906944.0, 1099511627776.0 }, 13 },
};

/* Failed saves by CKPT_E* code (index -code; 0: unknown codes). The
 * reason labels are the codes' names (err_code_name): stable, part of
 * the metrics. */
static uint64_t metrics_failed[1 + CKPT_NCODES];
static uint64_t metrics_read_bytes;
static uint64_t metrics_fetched_bytes;

/* Committed saves and bytes per uid; [METRICS_MAX_UIDS]: the others. */
static struct {
	uint32_t uid;
	uint64_t saves, bytes;
} metrics_users[METRICS_MAX_UIDS + 1];
static size_t metrics_nusers;

static struct evhttp *metrics_http;
static const struct stats_source *metrics_src;  /* the gauges and totals */

void
metrics_observe(enum metrics_hist h, double v)
{
	struct metrics_histogram *m;
	size_t i;

	if ((unsigned)h >= METRICS_NHIST || v != v)
		return;
	m = &metrics_hists[h];
	for (i = 0; i < m->nbounds && v > m->bounds[i]; i++)
		;
	m->counts[i]++;
	m->count++;
	m->sum += v;
}

void
metrics_observe_since(enum metrics_hist h, int64_t start_ns)
{
	int64_t d = now_mono_ns() - start_ns;

	metrics_observe(h, d > 0 ? (double)d / 1e9 : 0.0);
}

void
metrics_count_save_failed(int code)
{
	unsigned i = err_code_name(code) != NULL ? (unsigned)-code : 0;

	metrics_failed[i]++;
}

void
metrics_count_bytes_read(uint64_t n)
{
	metrics_read_bytes += n;
}

void
metrics_count_bytes_fetched(uint64_t n)
{
	metrics_fetched_bytes += n;
}

void
metrics_count_user_save(uint32_t uid, uint64_t bytes)
{
	size_t i;

	for (i = 0; i < metrics_nusers && metrics_users[i].uid != uid; i++)
		;
	if (i == metrics_nusers) {
		if (metrics_nusers < METRICS_MAX_UIDS)
			metrics_users[metrics_nusers++].uid = uid;
		else
			i = METRICS_MAX_UIDS;
	}
	metrics_users[i].saves++;
	metrics_users[i].bytes += bytes;
}

static void
metrics_put_users(struct evbuffer *b)
{
	static const char *const what[2][2] = {
		{ "ckptd_user_saves_total", "Saves committed, by the uid of the "
		  "client (at most 32 uids; the others as uid=\"other\")." },
		{ "ckptd_user_bytes_written_total", "Array bytes committed, by "
		  "the uid of the client (at most 32 uids; the others as "
		  "uid=\"other\")." },
	};
	size_t k, i;

	for (k = 0; k < 2; k++) {
		evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s counter\n",
		    what[k][0], what[k][1], what[k][0]);
		for (i = 0; i < metrics_nusers; i++)
			evbuffer_add_printf(b, "%s{uid=\"%u\"} %llu\n", what[k][0],
			    (unsigned)metrics_users[i].uid, (unsigned long long)
			    (k == 0 ? metrics_users[i].saves :
			    metrics_users[i].bytes));
		if (metrics_users[METRICS_MAX_UIDS].saves > 0)
			evbuffer_add_printf(b, "%s{uid=\"other\"} %llu\n",
			    what[k][0], (unsigned long long)(k == 0 ?
			    metrics_users[METRICS_MAX_UIDS].saves :
			    metrics_users[METRICS_MAX_UIDS].bytes));
	}
}

static void
metrics_put_histogram(struct evbuffer *b, const struct metrics_histogram *m)
{
	uint64_t cum = 0;
	size_t i;

	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", m->name,
	    m->help, m->name);
	for (i = 0; i < m->nbounds; i++) {
		cum += m->counts[i];
		evbuffer_add_printf(b, "%s_bucket{le=\"%.15g\"} %llu\n", m->name,
		    m->bounds[i], (unsigned long long)cum);
	}
	cum += m->counts[m->nbounds];
	evbuffer_add_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.15g\n"
	    "%s_count %llu\n", m->name, (unsigned long long)cum, m->name,
	    m->sum, m->name, (unsigned long long)m->count);
}

static void
metrics_put_failures(struct evbuffer *b)
{
	size_t i;

	evbuffer_add_printf(b, "# HELP ckptd_save_failures_total Saves that "
	    "failed, at acceptance or while writing, by error code.\n"
	    "# TYPE ckptd_save_failures_total counter\n");
	for (i = 1; i <= CKPT_NCODES; i++)
		evbuffer_add_printf(b, "ckptd_save_failures_total{reason=\"%s\"}"
		    " %llu\n", err_code_name(-(int)i),
		    (unsigned long long)metrics_failed[i]);
	evbuffer_add_printf(b, "ckptd_save_failures_total{reason=\"unknown\"}"
	    " %llu\n", (unsigned long long)metrics_failed[0]);
}

static void
metrics_put(struct evbuffer *b, const char *name, const char *type,
    const char *help, uint64_t v)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n",
	    name, help, name, type, name, (unsigned long long)v);
}

static void
metrics_request_cb(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	struct stats st = { 0 };
	struct evbuffer *b;
	size_t i;

	if (path == NULL || (strcmp(path, "/metrics") != 0 &&
	    strcmp(path, "/healthz") != 0)) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (strcmp(path, "/healthz") == 0) {
		char why[256];
		int ok = health_check(why, sizeof why);

		evbuffer_add_printf(b, "%s\n", ok ? "ok" : why);
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Content-Type", "text/plain; charset=utf-8");
		evhttp_send_reply(req, ok ? HTTP_OK : 503, ok ? "OK" :
		    "Service Unavailable", b);
		evbuffer_free(b);
		return;
	}
	metrics_src->fill(&st, metrics_src->arg);
	metrics_put(b, "ckptd_connections", "gauge",
	    "Open client connections.", conn_count());
	metrics_put(b, "ckptd_managers", "gauge",
	    "Open checkpoint managers.", st.managers);
	metrics_put(b, "ckptd_saves_committed_total", "counter",
	    "Saves committed to disk.", st.saves_committed);
	metrics_put(b, "ckptd_saves_failed_total", "counter",
	    "Saves that failed.", st.saves_failed);
	metrics_put(b, "ckptd_saves_interrupted_total", "counter",
	    "Saves a crash interrupted, found since start.",
	    st.saves_interrupted);
	metrics_put(b, "ckptd_bytes_written_total", "counter",
	    "Checkpoint bytes written.", st.bytes_written);
	metrics_put(b, "ckptd_tier_bytes_pending", "gauge",
	    "Bytes of steps committed in the local tier, not uploaded yet.",
	    st.tier_bytes_pending);
	metrics_put(b, "ckptd_tier_uploads_inflight", "gauge",
	    "Uploads of the local tier running.", st.tier_uploads_inflight);
	metrics_put(b, "ckptd_tier_uploads_queued", "gauge",
	    "Uploads of the local tier waiting (or failed, to be retried).",
	    st.tier_uploads_queued);
	metrics_put(b, "ckptd_tier_uploads_given_up", "gauge",
	    "Steps of the local tier whose upload was given up (kept "
	    "locally; SIGHUP queues them again).", st.tier_uploads_given_up);
	metrics_put(b, "ckptd_tier_uploads_total", "counter",
	    "Steps of the local tier uploaded.", st.tier_uploads_done);
	metrics_put(b, "ckptd_tier_upload_failures_total", "counter",
	    "Uploads of the local tier that failed (each try).",
	    st.tier_upload_failures);
	metrics_put(b, "ckptd_staging_bytes", "gauge",
	    "Staging memory held by accepted saves.", st.staging_bytes);
	metrics_put(b, "ckptd_memory_budget_bytes", "gauge",
	    "Staging memory budget.", st.memory_budget);
	metrics_put(b, "ckptd_queued_saves", "gauge",
	    "Saves accepted and not yet being written.", st.queued_saves);
	metrics_put(b, "ckptd_inflight_saves", "gauge",
	    "Saves being written.", st.inflight_saves);
	metrics_put(b, "ckptd_waiting_for_memory", "gauge",
	    "Saves waiting for staging memory.", st.waiting_for_memory);
	metrics_put(b, "ckptd_workers", "gauge",
	    "Worker threads.", worker_count());
	metrics_put(b, "ckptd_bytes_read_total", "counter",
	    "Bytes of step files handed to clients by restores.",
	    metrics_read_bytes);
	metrics_put(b, "ckptd_restore_fetched_bytes_total", "counter",
	    "Bytes restores asked of stores whose files are fetched (s3://).",
	    metrics_fetched_bytes);
	metrics_put(b, "ckptd_worker_tasks_queued", "gauge",
	    "Worker tasks waiting for a thread.", worker_queued());
	metrics_put(b, "ckptd_worker_tasks_running", "gauge",
	    "Worker tasks running.", worker_running());
	metrics_put_failures(b);
	metrics_put_users(b);
	for (i = 0; i < METRICS_NHIST; i++)
		metrics_put_histogram(b, &metrics_hists[i]);
	evbuffer_add_printf(b, "# HELP ckptd_up Whether the daemon is healthy "
	    "(1) or its workers are stalled (0).\n# TYPE ckptd_up gauge\n"
	    "ckptd_up %d\n", health_check(NULL, 0));
	evbuffer_add_printf(b, "# HELP ckptd_build_info Version of the daemon "
	    "and of its wire protocol.\n# TYPE ckptd_build_info gauge\n"
	    "ckptd_build_info{version=\"%s\",protocol=\"%d\"} 1\n",
	    CKPTD_VERSION, CKPT__VERSION__PROTOCOL_VERSION);
	evbuffer_add_printf(b, "# HELP ckptd_uptime_seconds Seconds since the "
	    "daemon started.\n# TYPE ckptd_uptime_seconds gauge\n"
	    "ckptd_uptime_seconds %.3f\n", st.uptime_secs);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

/* Split "HOST:PORT" / "[V6]:PORT" / ":PORT" / "PORT". */
static int
metrics_parse(const char *s, char *host, size_t hostlen, uint16_t *port,
    ckd_err *e)
{
	const char *p, *colon;
	char *end;
	unsigned long v;
	size_t n;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			goto bad;
		n = (size_t)(rb - s - 1);
		if (n == 0 || n >= hostlen)
			goto bad;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		p = rb + 2;
	} else if ((colon = strrchr(s, ':')) != NULL) {
		n = (size_t)(colon - s);
		if (n >= hostlen || memchr(s, ':', n) != NULL)
			goto bad;
		if (n == 0)
			snprintf(host, hostlen, "127.0.0.1");
		else {
			memcpy(host, s, n);
			host[n] = '\0';
		}
		p = colon + 1;
	} else {
		snprintf(host, hostlen, "127.0.0.1");
		p = s;
	}
	errno = 0;
	v = strtoul(p, &end, 10);
	if (*p == '\0' || *end != '\0' || errno != 0 || v > 65535)
		goto bad;
	*port = (uint16_t)v;
	return 0;
bad:
	return err_set(e, CKPT_EINVAL, "bad --metrics-listen '%s' (expected "
	    "ADDR:PORT, [ADDR6]:PORT or PORT)", s);
}

int
metrics_start(struct event_base *base, const char *listen,
    const struct stats_source *src, ckd_err *e)
{
	struct evhttp_bound_socket *bs;
	char host[256], shown[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	uint16_t port = 0;
	int r;

	if ((r = metrics_parse(listen, host, sizeof host, &port, e)) != 0)
		return r;
	metrics_src = src;
	if ((metrics_http = evhttp_new(base)) == NULL)
		return err_set(e, CKPT_ENOMEM, "evhttp_new failed");
	evhttp_set_allowed_methods(metrics_http,
	    EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(metrics_http, 10);
	evhttp_set_max_headers_size(metrics_http, 8192);
	evhttp_set_max_body_size(metrics_http, 4096);
	evhttp_set_gencb(metrics_http, metrics_request_cb, NULL);
	bs = evhttp_bind_socket_with_handle(metrics_http, host, port);
	if (bs == NULL) {
		int saved = errno;

		evhttp_free(metrics_http);
		metrics_http = NULL;
		return err_errno(e, saved, "cannot listen for metrics on %s",
		    listen);
	}
	shown[0] = '\0';
	if (getsockname(evhttp_bound_socket_get_fd(bs),
	    (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &a->sin_addr, shown, sizeof shown);
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &a->sin6_addr, shown, sizeof shown);
			port = ntohs(a->sin6_port);
		}
	}
	log_info("metrics on http://%s%s%s:%u/metrics",
	    strchr(shown, ':') ? "[" : "", shown[0] ? shown : host,
	    strchr(shown, ':') ? "]" : "", (unsigned)port);
	return 0;
}

void
metrics_stop(void)
{
	if (metrics_http != NULL)
		evhttp_free(metrics_http);
	metrics_http = NULL;
}
