/*
 * manager.h - the managers opened on checkpoint roots (root.h): their
 * requests, waits and deletes, and the manager object that save.c and
 * restore.c (above this file) use.
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
 * the connection's reference (dropped on close) plus one per save,
 * waiter and delete; `closed` managers are unreachable by id. save.c
 * counts its saves in `pending` and sets the async error. Loop thread
 * only. */
struct manager {
	struct manager *next;
	uint64_t id;
	unsigned refs;
	int closed;
	struct conn *c;                 /* not referenced: closed with it */
	struct root *r;                 /* referenced; NULL: rootless */
	char *rootless;                 /* with r NULL: the directory, absent
	                                 * when this read-only manager opened */
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

char *mgr_strdup(const char *s);
/* Copy a message by packing and unpacking it (NULL when out of memory). */
Ckpt__ManagerOptions *mgr_options_copy(const Ckpt__ManagerOptions *o);

void mgr_ref(struct manager *m);
void mgr_unref(struct manager *m);
/* A delete of committed step i of r (root_delete_step) counted against
 * m: its close waits for it. Run as cred on lane; with c, (c, id) is
 * answered when it is gone; done(arg), when not NULL, is called once it
 * finished (also when it could not start). */
struct mgr_delete {
	const struct peer_cred *cred;
	uint64_t lane;
	struct conn *c;
	uint64_t id;
	void (*done)(void *arg);
	void *arg;
};
void mgr_delete_step(struct manager *m, struct root *r, size_t i,
    const struct mgr_delete *how);
/* Wake WAIT_SAVES waiters of m when it has no pending save. */
void mgr_wake_saves(struct manager *m);
/* Wake WAIT_STEP waiters of r whose `after` is below the latest step. */
void mgr_wake_steps(struct root *r);
/* Look up a manager of connection c; replies with an error and returns
 * NULL when unknown. */
struct manager *mgr_lookup(struct conn *c, uint64_t req_id, uint64_t id);
/* Reply helpers. */
void mgr_reply_empty(struct conn *c, uint64_t id);
/* Reload of a rootless manager m: open its directory again; once it
 * exists m gets its root (loaded, then rescanned) and (c, id) is answered
 * as a reload; while absent, answered at once with no change. */
void manager_attach_root(struct conn *c, uint64_t id, struct manager *m);


/* What the manager requests ask of the saves (save.c, which is above
 * this file: a save uses its manager). main.c hands them over. */
struct manager_saves {
	/* 1 when step has a queued or running save on root r. */
	int (*pending_step)(const struct root *r, uint64_t step);
	/* Highest pending step of r, or -1. */
	int64_t (*latest_pending)(const struct root *r);
	/* The distinct pending steps of r, at most cap into v; returns how
	 * many there are. */
	size_t (*pending_steps)(const struct root *r, uint64_t *v, size_t cap);
};

/* Start-up: the roots (root_init), the step transactions (steptx_init),
 * the sweep of leftovers. saves is copied. */
int manager_init(struct event_base *base, struct index *ix,
    const struct manager_saves *saves, ckd_err *e);
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
/* The connection died. manager_conn_closing first drops its waiters;
 * then (after save_conn_closed) manager_conn_closed closes its managers
 * (accepted saves continue). */
void manager_conn_closing(struct conn *c);
void manager_conn_closed(struct conn *c);
/* Add the managers' and roots' figures to *out. */
void manager_stats(struct stats *out);
void manager_shutdown(void);

#endif
