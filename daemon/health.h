/*
 * health.h - is the daemon making progress? The systemd watchdog and the
 * STATUS= line.
 *
 * Healthy means: the event loop runs (the checks run on it) and the worker
 * pool makes progress, i.e. when worker tasks are queued or running, one
 * of them finished less than stall-timeout seconds ago. Under systemd with
 * WatchdogSec= (sd_watchdog_enabled), a timer at half the interval sends
 * WATCHDOG=1 only while healthy, so systemd restarts a daemon whose loop
 * or workers are stuck. Once a second, STATUS= shows the queue depth.
 */
#ifndef CKPTD_HEALTH_H
#define CKPTD_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "stats.h"

struct event_base;

/* src (kept, not copied) gives the figures of the STATUS= line. */
int health_start(struct event_base *base, uint64_t stall_timeout_secs,
    const struct stats_source *src, ckd_err *e);
void health_set_stall_timeout(uint64_t secs);
/* 1 when healthy; else 0 and the reason in why (may be NULL). */
int health_check(char *why, size_t len);
void health_stop(void);

#endif
