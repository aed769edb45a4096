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
#include "steptx.h"

/* One client's Save: its staging memfd, items and tasks; a part of a step
 * transaction (steptx.h). Loop thread, but for its tasks while they run. */
struct save_file {
	char fname[40];
	size_t item;            /* index into the request's items */
	size_t first, n;        /* range of s->tens / s->leaves */
};

struct save {
	struct save *next, *prev;       /* SQ.saves */
	struct save *qnext;             /* memory queue */
	int running;
	struct conn *c;                 /* referenced */
	uint64_t id;
	struct peer_cred cred;
	uint64_t lane;
	struct user *user;              /* referenced; counts s in saves */
	uint64_t charge;                /* memory budget: see save_charge */
	uint64_t reqmem;                /* of which the unpacked request */
	struct manager *m;              /* referenced */
	struct root *r;                 /* referenced */
	Ckpt__Request *req;             /* owned; leaves get file/tensor/xxh3 */
	uint64_t step;
	char name[256];
	int memfd;                      /* open while mapped: holes */
	uint64_t size;
	void *map;
	struct store_src src;           /* memfd + map, for the writers */
	int64_t init_ns, commit_ns;
	int64_t recv_ns;                /* request read (monotonic), metrics */
	int64_t reply_ns;               /* "accepted" sent (monotonic) */
	mode_t dmode, fmode;
	int rootfd, tmpfd;
	int *itemfds;
	struct store_sync sync;         /* unsynced files (zeroed: empty) */
	Ckpt__Handler *handlers;
	char **names;
	struct store_tensor *tens;
	Ckpt__Leaf **leaves;
	size_t ntens;
	struct save_file *files;
	size_t nfiles;
	unsigned left;                  /* data tasks not done */
	unsigned deleting;              /* retention deletes it waits for */
	ckd_err err;                    /* first failure */
	/* The step transaction (steptx.h) this save is a part of, and what
	 * it sees of the save: part.sv (the request's Save), part.bytes
	 * (array bytes), part.started (accepted: "saved" replied). */
	struct steptx *tx;              /* referenced */
	struct steptx_part part;        /* tx->parts[slot] points at it */
	unsigned slot;                  /* in tx->parts */
	uint32_t rank;                  /* process_index */
	int primary;                    /* writes JSON items, replicated */
	int submitted;                  /* its first task submitted */
	int ended;                      /* its tasks are done */
	int released;                   /* staging memory given back */
	int pieces;                     /* it holds pieces of global arrays */
};


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
/* The distinct steps with a queued or running save on r, at most cap of
 * them into v; returns how many there are (may exceed cap). */
size_t save_pending_steps(const struct root *r, uint64_t *v, size_t cap);
/* ckptd stops: distributed steps still missing parts fail now; cb is
 * called once no save is pending (at once if none). */
void save_on_idle(void (*cb)(void *arg), void *arg);
/* Free the saves waiting for memory (shutdown). */
void save_shutdown(void);

#endif
