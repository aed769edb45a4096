/*
 * metrics.h - Prometheus text exposition over HTTP (--metrics-listen), and
 * the histograms and counters the other modules feed.
 *
 * GET /metrics on ADDR:PORT answers the daemon's counters, gauges and
 * histograms; GET /healthz answers 200 "ok" while the daemon is healthy
 * (health.h) and 503 with the reason otherwise; anything else is 404 (405
 * for methods other than GET/HEAD). Served by evhttp on the event-loop
 * thread. The metrics_observe_* / metrics_count_* functions are called on
 * the loop thread only (no locks) and work whether or not the server runs.
 */
#ifndef CKPTD_METRICS_H
#define CKPTD_METRICS_H

#include <stdint.h>

#include "common.h"
#include "stats.h"

struct event_base;

enum metrics_hist {
	METRICS_SAVE_BLOCKING = 0,      /* save request read -> reply, seconds */
	METRICS_SAVE_DURABLE,           /* save request read -> durable, seconds */
	METRICS_RESTORE,                /* restore request read -> reply, seconds */
	METRICS_STEP_BYTES,             /* array bytes of a committed step */
	METRICS_NHIST
};

/* listen: "HOST:PORT", "[V6ADDR]:PORT", ":PORT" or "PORT" (the host then
 * defaults to 127.0.0.1). PORT 0 picks a free port (logged). src (kept,
 * not copied) gives the gauges and totals of each answer. */
int metrics_start(struct event_base *base, const char *listen,
    const struct stats_source *src, ckd_err *e);
void metrics_stop(void);

/* Add one observation to a histogram. */
void metrics_observe(enum metrics_hist h, double v);
/* Seconds since start_ns (now_mono_ns() clock) into a histogram. */
void metrics_observe_since(enum metrics_hist h, int64_t start_ns);
/* A save failed with code (negative CKPT_E*), at acceptance or later. */
void metrics_count_save_failed(int code);
/* Bytes of step files handed to clients by restores. */
void metrics_count_bytes_read(uint64_t n);
/* Bytes a restore fetched from a store whose files are fetched (the
 * ranges asked of the backend's fetch). */
void metrics_count_bytes_fetched(uint64_t n);
/* A save of uid committed bytes. Per-uid series are kept for the first
 * METRICS_MAX_UIDS users seen; later ones are summed under uid="other"
 * (bounded cardinality). */
#define METRICS_MAX_UIDS 32
void metrics_count_user_save(uint32_t uid, uint64_t bytes);

#endif
