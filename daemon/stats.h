/*
 * stats.h - the daemon's figures, as the status reply, /metrics and the
 * STATUS= line show them.
 *
 * The modules that serve them (dispatch.c, metrics.c, health.c) sit
 * below the ones that own the numbers (manager.c, save.c, root.c,
 * main.c), so they are handed a struct stats_source at start-up: main.c
 * fills a struct stats from every owner when asked. Loop thread only.
 */
#ifndef CKPTD_STATS_H
#define CKPTD_STATS_H

#include <stdint.h>

struct stats {
	double uptime_secs;
	unsigned managers;
	unsigned trainers;            /* open managers that have saved */
	unsigned roots;
	unsigned queued_saves;        /* waiting for memory, not running */
	unsigned inflight_saves;      /* being written */
	unsigned waiting_for_memory;
	uint64_t staging_bytes;       /* mapped staging memory held by saves */
	uint64_t memory_budget;
	uint64_t saves_committed, saves_failed, bytes_written;
	uint64_t saves_interrupted;     /* found after a crash, since start */
	char coordination[1024];        /* coord.h status(): local or etcd */
	/* the local tier (tier.c) */
	uint64_t tier_bytes_pending;    /* committed locally, not uploaded */
	unsigned tier_uploads_inflight;
	unsigned tier_uploads_queued;
	unsigned tier_uploads_given_up; /* failed for good, kept locally */
	uint64_t tier_uploads_done, tier_upload_failures;
};

struct stats_source {
	/* Fill *out (zeroed first) with the figures of now. */
	void (*fill)(struct stats *out, void *arg);
	void *arg;
};

#endif
