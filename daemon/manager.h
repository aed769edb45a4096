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

#include <sys/types.h>
#include <stdint.h>
#include <stddef.h>

#include "common.h"
#include "conn.h"
#include "index.h"
#include "stats.h"

struct event_base;
struct policy_set;
struct root;

/* One OpenManager of a connection: its options and policies on a root
 * (root.h), its pending saves and deletes, its async error. Refcounted:
 * the connection's reference (dropped on close) plus one per save and
 * waiter; `closed` managers are unreachable by id. Loop thread only. */
struct manager {
	struct manager *next;
	uint64_t id;
	unsigned refs;
	int closed;
	struct conn *c;                 /* not referenced: closed with it */
	struct root *r;                 /* referenced */
	Ckpt__ManagerOptions *o;        /* owned copy */
	struct policy_set *pol;         /* owned */
	mode_t dmode, fmode;
	unsigned pending;               /* queued + running saves */
	unsigned deleting;              /* deletes submitted for it, running */
	struct conn *close_c;           /* CloseManager parked until deleting */
	uint64_t close_id;              /* drops to 0 (close_c referenced) */
	int preempt_saved;              /* a save was taken while preempting */
	int saved;                      /* it saved at least once: a trainer */
	int err_code;                   /* async error of a failed save */
	uint64_t err_step;
	char err_msg[CKPT_ERRLEN];
};

void mgr_ref(struct manager *m);
void mgr_unref(struct manager *m);
/* A delete counted in m->deleting finished. */
void mgr_delete_finished(struct manager *m);
/* Wake WAIT_SAVES waiters of m when it has no pending save. */
void mgr_wake_saves(struct manager *m);
/* Look up a manager of connection c; replies with an error and returns
 * NULL when unknown. */
struct manager *mgr_lookup(struct conn *c, uint64_t req_id, uint64_t id);
/* Reply helpers. */
void mgr_reply_empty(struct conn *c, uint64_t id);


int manager_init(struct event_base *base, struct index *ix,
    uint64_t memory_budget, unsigned nworkers, ckd_err *e);
/* Request handlers, routed by dispatch.c (save.h and restore.h hold the
 * others). Each answers req->id on c; req stays the caller's. */
void manager_handle_open(struct conn *c, const Ckpt__Request *req);
/* The manager id of c's request: the manager, or NULL after replying
 * CKPT_EINVAL (unknown manager). */
struct manager *manager_find(struct conn *c, uint64_t req_id, uint64_t id);
void manager_handle_close(struct conn *c, struct manager *m,
    Ckpt__Request *req);
void manager_handle_wait_saves(struct conn *c, struct manager *m,
    Ckpt__Request *req);
void manager_handle_list(struct conn *c, struct manager *m,
    Ckpt__Request *req);
void manager_handle_should_save(struct conn *c, struct manager *m,
    Ckpt__Request *req);
void manager_handle_delete(struct conn *c, struct manager *m,
    Ckpt__Request *req);
void manager_handle_reload(struct conn *c, struct manager *m,
    Ckpt__Request *req);
void manager_handle_wait_step(struct conn *c, struct manager *m,
    Ckpt__Request *req);
void manager_handle_set_metrics(struct conn *c, struct manager *m,
    Ckpt__Request *req);
/* The first manager of the list (follow ->next; closed ones included);
 * read-only walks on the loop thread. */
struct manager *manager_first(void);
/* 1 when c has a manager open (keeps an idle connection open). */
int manager_conn_busy(const struct conn *c);
/* The connection died: close its managers (accepted saves continue). */
void manager_conn_closed(struct conn *c);
/* Add the managers' and roots' figures to *out. */
void manager_stats(struct stats *out);
/* Number of saves accepted and not yet finished (committed or failed). */
unsigned manager_saves_pending(void);
/* Call cb once no save is pending (immediately if none); for SIGTERM. */
void manager_on_idle(void (*cb)(void *arg), void *arg);
void manager_shutdown(void);

#endif
