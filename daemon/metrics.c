/*
 * metrics.c - the /metrics endpoint (see metrics.h).
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

#include "ckptd.h"
#include "conn.h"
#include "log.h"
#include "manager.h"
#include "metrics.h"
#include "worker.h"

static struct evhttp *metrics_http;

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
	struct manager_stats ms = { 0 };
	struct evbuffer *b;

	if (path == NULL || strcmp(path, "/metrics") != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	manager_stats(&ms);
	metrics_put(b, "ckptd_connections", "gauge",
	    "Open client connections.", conn_count());
	metrics_put(b, "ckptd_managers", "gauge",
	    "Open checkpoint managers.", ms.managers);
	metrics_put(b, "ckptd_saves_committed_total", "counter",
	    "Saves committed to disk.", ms.saves_committed);
	metrics_put(b, "ckptd_saves_failed_total", "counter",
	    "Saves that failed.", ms.saves_failed);
	metrics_put(b, "ckptd_saves_interrupted_total", "counter",
	    "Saves a crash interrupted, found since start.",
	    ms.saves_interrupted);
	metrics_put(b, "ckptd_bytes_written_total", "counter",
	    "Checkpoint bytes written.", ms.bytes_written);
	metrics_put(b, "ckptd_staging_bytes", "gauge",
	    "Staging memory held by accepted saves.", ms.staging_bytes);
	metrics_put(b, "ckptd_memory_budget_bytes", "gauge",
	    "Staging memory budget.", ms.memory_budget != 0 ?
	    ms.memory_budget : ckptd_memory_budget());
	metrics_put(b, "ckptd_queued_saves", "gauge",
	    "Saves accepted and not yet being written.", ms.queued_saves);
	metrics_put(b, "ckptd_inflight_saves", "gauge",
	    "Saves being written.", ms.inflight_saves);
	metrics_put(b, "ckptd_waiting_for_memory", "gauge",
	    "Saves waiting for staging memory.", ms.waiting_for_memory);
	metrics_put(b, "ckptd_workers", "gauge",
	    "Worker threads.", worker_count());
	evbuffer_add_printf(b, "# HELP ckptd_uptime_seconds Seconds since the "
	    "daemon started.\n# TYPE ckptd_uptime_seconds gauge\n"
	    "ckptd_uptime_seconds %.3f\n", ckptd_uptime_secs());
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
metrics_start(struct event_base *base, const char *listen, ckd_err *e)
{
	struct evhttp_bound_socket *bs;
	char host[256], shown[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	uint16_t port = 0;
	int r;

	if ((r = metrics_parse(listen, host, sizeof host, &port, e)) != 0)
		return r;
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
