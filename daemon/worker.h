/*
 * worker.h - the pool of threads that does all disk work and LMDB writes.
 *
 * The loop thread submits tasks; a worker runs task->run() with the
 * filesystem identity of task->cred (setfsuid/setfsgid and the per-thread
 * setgroups syscall when the daemon runs as root; unchanged otherwise),
 * then queues the task for completion. The loop thread is woken through
 * an eventfd, takes the whole completion queue at once and calls
 * task->done() for each, in order. done() runs on the loop thread and is
 * the only place that may touch connection/manager state; it frees the
 * task.
 *
 * Queue discipline: tasks are kept in per-"lane" FIFOs, one lane per peer
 * uid (task->cred.uid), and workers take lanes round-robin, one task per
 * turn, so one user with a large save or many connections does not starve
 * another.
 */
#ifndef CKPTD_WORKER_H
#define CKPTD_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "cred.h"

struct event_base;

struct task {
	void (*run)(struct task *t);   /* worker thread */
	void (*done)(struct task *t);  /* loop thread; frees t */
	struct peer_cred cred;         /* identity for file operations */
	uint64_t lane;                 /* origin (conn id), for the caller;
	                                * the pool's lanes are per cred.uid */
	ckd_err err;                   /* set by run() */
	struct task *next;             /* queue link (owned by the pool) */
};

/* Allocate a zeroed task of `size` bytes whose first member is a struct
 * task, running as cred (NULL: no identity) on lane. NULL when out of
 * memory. */
void *task_new(size_t size, void (*run)(struct task *),
    void (*done)(struct task *), const struct peer_cred *cred,
    uint64_t lane);

int worker_init(struct event_base *base, unsigned nworkers, ckd_err *e);
/* Submit a task (loop thread only). Never fails. */
void worker_submit(struct task *t);
/* Tasks queued but not yet running / running now. */
unsigned worker_queued(void);
unsigned worker_running(void);
unsigned worker_count(void);
/* Tasks finished since start (progress, for health.c). */
uint64_t worker_completed(void);
/* Stop threads after the queue drains (joins them). */
void worker_shutdown(void);

#endif
