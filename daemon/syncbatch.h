/*
 * syncbatch.h - batched durability. The *_nosync writers behave like their
 * namesakes but, instead of fsync + close, append the open fd to a batch.
 * store_sync_run() then starts writeback of every entry, fsyncs every
 * entry in the order added (files first, then the directories holding
 * them) and closes the fds the batch owns. Every entry is fsynced: a step
 * is as durable as with the unbatched calls, but the journal commits of
 * one save are shared. A batch is used by one thread at a time.
 */
#ifndef CKPTD_SYNCBATCH_H
#define CKPTD_SYNCBATCH_H

#include <stddef.h>

#include "backend.h"
#include "common.h"

#define STORE_SYNC_MAX 65536
struct store_sync_ent {
	int fd;
	int own;                /* 1: the batch closes it */
};
struct store_sync {
	const struct store_backend *be;  /* of every entry */
	struct store_sync_ent *v;
	size_t n, cap;
};
/* An empty batch of handles of backend be. */
void store_sync_init(struct store_sync *b, const struct store_backend *be);
/* Append fd; own: close it after the sync (and on store_sync_free). On
 * failure (CKPT_ENOMEM, or more than STORE_SYNC_MAX entries) an owned fd
 * is closed. */
int store_sync_add(struct store_sync *b, int fd, int own, ckd_err *e);
/* Sync every entry as above and close the owned ones; the batch is empty
 * afterwards (even on error) and may be reused. Returns the first error. */
int store_sync_run(struct store_sync *b, ckd_err *e);
/* Close the owned fds without syncing (after a failure) and free. */
void store_sync_free(struct store_sync *b);

/* fsync a directory handle. */
int store_fsync_dir(const struct store_backend *be, int dirfd, ckd_err *e);

#endif
