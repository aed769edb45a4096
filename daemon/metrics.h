/*
 * metrics.h - Prometheus text exposition over HTTP (--metrics-listen).
 *
 * GET /metrics on ADDR:PORT answers the daemon's counters and gauges;
 * anything else is 404 (405 for methods other than GET/HEAD). Served by
 * evhttp on the event-loop thread.
 */
#ifndef CKPTD_METRICS_H
#define CKPTD_METRICS_H

#include "common.h"

struct event_base;

/* listen: "HOST:PORT", "[V6ADDR]:PORT", ":PORT" or "PORT" (the host then
 * defaults to 127.0.0.1). PORT 0 picks a free port (logged). */
int metrics_start(struct event_base *base, const char *listen, ckd_err *e);
void metrics_stop(void);

#endif
