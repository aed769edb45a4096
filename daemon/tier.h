/*
 * tier.h - the local tier (--local-tier DIR): steps of a root kept in a
 * store far away (s3://) are committed on the local disk first and
 * uploaded in the background.
 *
 * A root with a tier is written and read through the posix backend in
 * DIR/<its name, escaped> (the same layout as a posix root): saves commit
 * there, and wait_until_finished returns when the local copy is durable.
 * Each step committed there is then copied, file by file through the
 * store's backend (format code unchanged, _CHECKPOINT_METADATA last), by
 * an upload task; its state (local, uploading, uploaded, upload
 * retrying, upload failed) is listed by ListSteps and counted in the
 * metrics. A failed upload is tried again with a growing delay, within
 * bounds: after so many tries, or so long since its first, it is given
 * up ("upload failed", logged once), the local copy kept, until
 * tier_retry_failed (SIGHUP) or the daemon's next start queues it again.
 * A refusal that waiting does not heal (credentials, no bucket) is
 * given up after its second try.
 *
 * This module knows roots by their name (the store's canonical name,
 * "s3://bucket/prefix"), not by struct root: what it keeps outlives the
 * roots loaded in memory, and the callers (save.c, root.c, manager.c,
 * restore.c) hand it names and records. Loop-side state; the tasks it
 * submits run on workers as the identity they are given.
 */
#ifndef CKPTD_TIER_H
#define CKPTD_TIER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"
#include "cred.h"
#include "index.h"

struct event_base;

enum tier_state {
	TIER_NONE = 0,          /* not a local step of the tier: the store's */
	TIER_LOCAL,             /* durable locally, waiting for its upload */
	TIER_UPLOADING,
	TIER_UPLOADED,
	TIER_RETRY,             /* last upload failed; retried later */
	TIER_FAILED,            /* given up (tier_set_limits); kept locally
	                         * until tier_retry_failed */
};

/* Start-up: keep tiers under dir (created 0755 with missing parents when
 * absent); "" or NULL: no tier. */
int tier_init(struct event_base *base, const char *dir, ckd_err *e);
void tier_shutdown(void);
/* Loop: the bounds of the tries of one upload: attempts (0: 10) and the
 * seconds since its first try (0: 3600). */
void tier_set_limits(unsigned attempts, uint64_t secs);
/* Loop: queue again every upload given up; how many. */
unsigned tier_retry_failed(void);
/* 1 when a root of this name is kept with a tier: a tier is configured and
 * the name is a store's (scheme://), not a local path. */
int tier_wants(const char *root);

/* Worker: open the local directory of root (DIR/<escaped root>), creating
 * it with mode when absent; *fd is a posix backend handle. A directory
 * another uid than uid (or the daemon's) owns is refused (CKPT_EACCES):
 * nobody plants steps to be uploaded in another's name. */
int tier_open_local(const char *root, mode_t mode, uid_t uid, int *fd,
    ckd_err *e);

/* Loop: step rec of root committed locally; queue its upload, run later
 * as cred on lane. */
void tier_committed(const char *root, const struct index_step *rec,
    const struct peer_cred *cred, uint64_t lane);
/* Loop: a delete of step `name` of root starts (its local copy is removed
 * by the caller's task, the store's by tier_delete_store): a queued upload
 * is dropped, a running one is undone when it ends. */
void tier_deleting(const char *root, const char *name);
/* Worker: remove the store's copy of step name (after the local one);
 * CKPT_ENOTFOUND when absent. */
int tier_delete_store(const char *root, const char *name, ckd_err *e);

/* Worker, when a root with a tier is loaded: *local (the steps committed
 * locally) gets the store's steps it lacks added; the local ones the store
 * lacks are returned in *pending (for tier_resume). Both arrays malloc'ed;
 * *local keeps its strings, remote's move into it (the rest are freed). */
struct tier_pending;
int tier_merge(struct index_step **local, size_t *nlocal,
    struct index_step *remote, size_t nremote, struct tier_pending **pending,
    ckd_err *e);
/* Loop: after the load, queue the pending uploads (and know the others as
 * uploaded); frees pending. */
void tier_resume(const char *root, struct tier_pending *pending,
    const struct peer_cred *cred, uint64_t lane);
void tier_pending_free(struct tier_pending *pending);

/* Loop: the state of step name of root, and the error of a failed upload
 * ("" when none). */
enum tier_state tier_state_of(const char *root, const char *name,
    const char **err);
const char *tier_state_name(enum tier_state s);

struct tier_stats {
	uint64_t bytes_pending;         /* committed locally, not uploaded */
	unsigned uploads_inflight;
	unsigned uploads_queued;        /* waiting or failed, to be retried */
	unsigned uploads_given_up;      /* failed for good, kept locally */
	uint64_t uploads_done, upload_failures;
};
void tier_stats(struct tier_stats *out);

#endif
