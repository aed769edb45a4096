/*
 * manager.h - checkpoint roots and the managers opened on them: the step
 * state in memory, the save pipeline, restores, deletes, waits, retention.
 *
 * All functions run on the event-loop thread. Disk and LMDB work is done in
 * worker tasks (worker.h) whose done() callbacks update the in-memory state
 * back on the loop thread, so that state needs no locks.
 *
 * A root (one per canonical directory path and step naming) is shared by
 * every manager opened on it, from any connection: a step committed through
 * one manager is visible to all at once, and wait_for_step waiters of all
 * managers are woken.
 */
#ifndef CKPTD_MANAGER_H
#define CKPTD_MANAGER_H

#include <stdint.h>
#include <stddef.h>

#include "common.h"
#include "conn.h"
#include "index.h"

struct event_base;

struct manager_stats {
	unsigned managers;
	unsigned trainers;            /* open managers that have saved */
	unsigned roots;
	unsigned queued_saves;        /* accepted or waiting for memory, not running */
	unsigned inflight_saves;      /* being written */
	unsigned waiting_for_memory;
	uint64_t staging_bytes;       /* mapped staging memory held by saves */
	uint64_t memory_budget;
	uint64_t saves_committed, saves_failed, bytes_written;
	uint64_t saves_interrupted;     /* found after a crash, since start */
};

int manager_init(struct event_base *base, struct index *ix,
    uint64_t memory_budget, unsigned nworkers, ckd_err *e);
/* Handle every manager operation (open/close manager, save, wait_saves,
 * list_steps, should_save, restore, metadata, delete, reload,
 * wait_for_step, verify). Takes ownership of req and fds. */
void manager_handle(struct conn *c, Ckpt__Request *req, int *fds,
    size_t nfds);
/* The connection died: close its managers (accepted saves continue). */
void manager_conn_closed(struct conn *c);
void manager_stats(struct manager_stats *out);
/* Change the staging memory budget (reload): saves already accepted keep
 * their memory; waiting saves that now fit start. */
void manager_set_budget(uint64_t budget);
/* Number of saves accepted and not yet finished (committed or failed). */
unsigned manager_saves_pending(void);
/* Call cb once no save is pending (immediately if none); for SIGTERM. */
void manager_on_idle(void (*cb)(void *arg), void *arg);
void manager_shutdown(void);

#endif
