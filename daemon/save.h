/*
 * save.h - the save pipeline: validation on the loop, memory budget,
 * prepare / data / finish worker tasks, commit, retention, SaveDone.
 */
#ifndef CKPTD_SAVE_H
#define CKPTD_SAVE_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "root.h"

/* Start-up: the index commits are recorded in, the number of workers
 * (a save is cut into at least that many files) and the staging memory
 * budget (0: unlimited). */
void save_init(struct index *ix, unsigned nworkers, uint64_t budget);
/* Handle a Save request of manager m. Takes ownership of req and fds. */
void save_handle(struct conn *c, struct manager *m, Ckpt__Request *req,
    int *fds, size_t nfds);
/* Drop the saves of c still waiting for memory (never accepted). */
void save_conn_closed(struct conn *c);
/* Set the staging memory budget (0: unlimited; start-up and reload):
 * saves already accepted keep their memory; waiting saves that now fit
 * start. */
void save_set_budget(uint64_t budget);
/* The saves in the pipeline, the memory they hold, and the saves done. */
struct save_counts {
	unsigned queued;        /* waiting for memory */
	unsigned inflight;      /* accepted, being written */
	uint64_t staging;       /* bytes charged to in-flight saves */
	uint64_t budget;        /* 0: unlimited */
	uint64_t committed, failed, bytes_written;  /* saves since start */
};
void save_stats(struct save_counts *out);
/* 1 when step has a queued or running save on root r. */
int save_pending_step(const struct root *r, uint64_t step);
/* Highest pending step of r, or -1. */
int64_t save_latest_pending(const struct root *r);
/* Free the saves waiting for memory (shutdown). */
void save_shutdown(void);

#endif
