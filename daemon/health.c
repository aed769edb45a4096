/*
 * health.c - progress tracking, the systemd watchdog and STATUS= (see
 * health.h). Everything here runs on the loop thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "health.h"
#include "log.h"
#include "worker.h"

#define HEALTH_TICK_MS 1000

static struct {
	struct event *tick_ev, *wd_ev;
	const struct stats_source *src; /* the saves for STATUS= */
	uint64_t stall_ns;
	uint64_t completed;             /* worker_completed() at the last tick */
	int64_t progress_ns;            /* last progress (or idle) seen */
	int healthy;
	char status[256];               /* last STATUS= sent */
} H = { .healthy = 1 };

/* Note progress: tasks finished since the last look, or nothing to do. */
static void
health_update(void)
{
	uint64_t done = worker_completed();
	int64_t now = now_mono_ns();

	if (done != H.completed || worker_queued() + worker_running() == 0)
		H.progress_ns = now;
	H.completed = done;
}

int
health_check(char *why, size_t len)
{
	int64_t stuck;

	health_update();
	stuck = now_mono_ns() - H.progress_ns;
	if (H.stall_ns == 0 || stuck < (int64_t)H.stall_ns)
		return 1;
	if (why != NULL)
		snprintf(why, len, "stalled: no worker task finished for %" PRId64
		    " s (%u queued, %u running)", stuck / 1000000000,
		    worker_queued(), worker_running());
	return 0;
}

static void
health_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stats st = { 0 };
	char why[256], status[256];
	int ok = health_check(why, sizeof why);

	if (ok != H.healthy) {
		if (ok)
			log_info("workers make progress again");
		else
			log_error("%s; the watchdog is no longer fed", why);
		H.healthy = ok;
	}
	H.src->fill(&st, H.src->arg);
	if (ok)
		snprintf(status, sizeof status, "%u saves writing, %u queued "
		    "(%u waiting for memory), %u worker tasks queued",
		    st.inflight_saves, st.queued_saves, st.waiting_for_memory,
		    worker_queued());
	else
		snprintf(status, sizeof status, "%s", why);
	if (strcmp(status, H.status) != 0) {
		sd_notifyf(0, "STATUS=%s", status);
		memcpy(H.status, status, sizeof status);
	}
}

static void
health_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	if (health_check(NULL, 0))
		sd_notify(0, "WATCHDOG=1");
}

void
health_set_stall_timeout(uint64_t secs)
{
	H.stall_ns = secs > UINT64_MAX / 1000000000ULL ? UINT64_MAX :
	    secs * 1000000000ULL;
}

int
health_start(struct event_base *base, uint64_t stall_timeout_secs,
    const struct stats_source *src, ckd_err *e)
{
	struct timeval tv = { HEALTH_TICK_MS / 1000, 0 };
	uint64_t usec = 0;
	int r;

	health_set_stall_timeout(stall_timeout_secs);
	H.src = src;
	H.progress_ns = now_mono_ns();
	H.completed = worker_completed();
	H.tick_ev = event_new(base, -1, EV_PERSIST, health_tick_cb, NULL);
	if (H.tick_ev == NULL || event_add(H.tick_ev, &tv) != 0)
		return err_set(e, CKPT_ENOMEM, "cannot start the health timer");
	if ((r = sd_watchdog_enabled(0, &usec)) < 0)
		log_warn_errno(-r, "WATCHDOG_USEC is invalid; no watchdog");
	if (r > 0 && usec > 0) {
		tv.tv_sec = (time_t)(usec / 2 / 1000000);
		tv.tv_usec = (suseconds_t)(usec / 2 % 1000000);
		H.wd_ev = event_new(base, -1, EV_PERSIST, health_watchdog_cb,
		    NULL);
		if (H.wd_ev == NULL || event_add(H.wd_ev, &tv) != 0)
			return err_set(e, CKPT_ENOMEM, "cannot start the "
			    "watchdog timer");
		log_info("systemd watchdog: %" PRIu64 " ms, pinged every %"
		    PRIu64 " ms while healthy", usec / 1000, usec / 2000);
		sd_notify(0, "WATCHDOG=1");
	}
	return 0;
}

void
health_stop(void)
{
	if (H.tick_ev != NULL)
		event_free(H.tick_ev);
	if (H.wd_ev != NULL)
		event_free(H.wd_ev);
	H.tick_ev = H.wd_ev = NULL;
}
