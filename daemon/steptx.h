/*
 * steptx.h - the step transaction: one step of a root, written by one or
 * many parts (one Save per rank of a job), committed once.
 *
 * A transaction is found by (root, job, step). It holds the policy
 * decision taken at its first part (every rank gets the same answer), the
 * parts by slot (the rank, or its position in active_processes), the
 * step's tmp directory while it is written (created once, by the first
 * part started, locked by the transaction), and the first failure. A
 * single-process save is a transaction of one part whose finish task is
 * also the commit (save.c); a distributed one commits in a task of its own
 * once every part is durable (steptx_commit_run), after checking the
 * parts against each other: same items and tree structure, pieces of each
 * global array covering it exactly, replicated leaves equal to the
 * primary's.
 *
 * Failures: a part that fails, a rank whose connection closes before its
 * part was handed, or parts missing async_timeout_secs after the first
 * fail the step on every rank (CKPT_ERANK naming the missing ranks); the
 * tmp dir is removed once every started part has stopped writing.
 *
 * Loop thread only, but for steptx_commit_run / steptx_abort_run (worker,
 * while no part of the transaction runs).
 */
#ifndef CKPTD_STEPTX_H
#define CKPTD_STEPTX_H

struct event_base;
struct index;

#include <sys/types.h>
#include <stdint.h>
#include <stddef.h>

#include "common.h"
#include "store.h"

struct root;
struct event;
struct coord_ops;

/* Parts of one step at most (process_count). */
#define STEPTX_MAX_PARTS 65536

enum steptx_begin {
	STEPTX_NOT_BEGUN = 0,
	STEPTX_BEGINNING = 1,   /* the task creating the tmp dir runs */
	STEPTX_BEGUN = 2,       /* tmpfd is the step's tmp dir */
};

/* A part as the transaction sees it: save.c's struct save embeds one
 * (its request, its bytes, whether it was handed). */
struct steptx_part {
	Ckpt__Save *sv;                 /* the part's request (owned by it) */
	uint64_t bytes;                 /* array bytes of its files */
	int started;                    /* handed: "saved" was replied */
	int ended;                      /* its files are durable (tasks done) */
};

struct steptx {
	struct steptx *next;            /* TX list */
	struct root *r;                 /* referenced */
	char *job;                      /* "" for single-process managers */
	uint64_t step;
	char name[256];                 /* the step directory's name */
	unsigned nparts;                /* process_count */
	unsigned primary;               /* slot writing replicated leaves */
	uint32_t *ranks;                /* rank of each slot */
	struct steptx_part **parts;     /* by slot, NULL until it arrives */
	unsigned narrived, nstarted, nended;
	int saved;                      /* the policy decision */
	int committing;                 /* commit or abort task submitted */
	int closed;                     /* finished: parts answered */
	ckd_err err;                    /* first failure */
	int err_remote;                 /* err came from another node */
	struct event *timer;            /* parts missing after the timeout */
	double timeout_secs;
	int begin;                      /* enum steptx_begin */
	int rootfd, tmpfd;              /* while begun (the tx's own) */
	int64_t init_ns, commit_ns;
	uint64_t bytes;
	unsigned char *came;            /* by slot, from the first failure:
					 * the rank arrived or was told */
	int nosave_sent;                /* the failure's SaveDone of no save
					 * went to the ranks without a part */
	unsigned refs;                  /* parts + pending tasks + the list */
	/* Parts held by other nodes' daemons (coord.h), by slot; NULL
	 * while the coordinator told of none. */
	struct steptx_remote *remote;
	int decided;                    /* another node committed the step */
	/* save.c: called when the timer fails the transaction, and when the
	 * coordinator tells of a failure (on_fail) or of a part or commit
	 * elsewhere (on_progress). */
	void (*on_fail)(struct steptx *tx);
	void (*on_progress)(struct steptx *tx);
	void *owner;                    /* save.c's, e.g. parts waiting */
};

/* A part of another node: durable there, its metadata loaded by the
 * coordinator before the commit (sv, unpacked, owned). */
struct steptx_remote {
	int durable;
	char node[64];
	uint64_t bytes;
	Ckpt__Save *sv;
};

/* The transaction of (r, job, step) that has not finished, or NULL. */
struct steptx *steptx_find(const struct root *r, const char *job,
    uint64_t step);
/* A new transaction of nparts parts (ranks[] copied, NULL: slot == rank)
 * with decision `saved`, in the list, one reference (the list's). The
 * timer starts when nparts > 1. NULL when out of memory. */
struct steptx *steptx_new(struct root *r, const char *job, uint64_t step,
    const char *name, unsigned nparts, const uint32_t *ranks,
    unsigned primary, int saved, double timeout_secs, int64_t init_ns);
void steptx_ref(struct steptx *tx);
void steptx_unref(struct steptx *tx);
/* Take tx out of the list (finished): a later Save of the step is new. */
void steptx_unlist(struct steptx *tx);
/* Slot of rank, or -1 when the rank takes no part. */
int steptx_slot(const struct steptx *tx, uint32_t rank);
/* "[2, 3]": the ranks whose part is missing (not arrived, or not started
 * when started_too), into buf. Returns the number of them. */
unsigned steptx_missing(const struct steptx *tx, int started_too,
    char *buf, size_t len);
/* The part of slot: this daemon's or, loaded by the coordinator, another
 * node's (NULL when neither). */
const Ckpt__Save *steptx_part_sv(const struct steptx *tx, unsigned slot);
/* Every part is durable (here or elsewhere) and the step may be committed
 * here: this daemon holds the primary's part, or another node committed
 * it (tx->decided). */
int steptx_ready(const struct steptx *tx);
/* (loop) What the coordinator learned of other nodes, for the unfinished
 * transaction of (job, step) of the root at path root (canonical), if
 * there is one (0), else 1: rank's part is durable on node; the step was
 * committed elsewhere (bytes: the step's); the step failed (why). */
int steptx_remote_part(const char *root, const char *job, uint64_t step,
    uint32_t rank, const char *node);
int steptx_remote_commit(const char *root, const char *job, uint64_t step,
    uint64_t bytes);
int steptx_remote_fail(const char *root, const char *job, uint64_t step,
    const ckd_err *why);
/* (loop) "job/step: n of m parts\n" of each transaction still waiting for
 * parts of other nodes, into buf. */
void steptx_waiting(char *buf, size_t len);

/* Record the first failure (later ones are ignored). */
void steptx_fail(struct steptx *tx, const ckd_err *why);
/* The rank of slot was answered with the transaction's failure. */
void steptx_told(struct steptx *tx, int slot);

/*
 * Failed steps remembered (distributed transactions only): when a failed
 * transaction leaves the list, the ranks whose part never arrived are
 * late; the first Save of (r, job, step) by a late rank is answered at
 * once with the step's error (instead of starting a new transaction that
 * waits out its timeout). Kept for the step's timeout_secs, at most
 * STEPTX_OUTCOMES per (root, job), forgotten when the job ends; a rank's
 * manager opened again is no longer late; a Save by a rank that was not
 * late starts a new attempt (the outcome is forgotten).
 */
#define STEPTX_OUTCOMES 8
/* CKPT_* (e set to the step's error) when rank is late for a failed step
 * of (r, job): it is then told (no longer late). 0 otherwise. */
int steptx_failed_part(const struct root *r, const char *job,
    uint64_t step, uint32_t rank, ckd_err *e);

/* (worker) The leaves of tree item `it` of every part as the one tree
 * _METADATA lists: the primary's order, each global array's pieces of
 * every rank together where the primary has its first. The ranks must
 * agree (CKPT_EMISMATCH naming the leaf): same paths, the pieces of each
 * global array cover it exactly, replicated leaves alike. *out is
 * malloc'ed; its leaves are the parts'. */
int steptx_item_leaves(struct steptx *tx, size_t it, Ckpt__Leaf ***out,
    size_t *nout, ckd_err *e);
/* What a commit takes of the primary's part beyond its request. */
struct steptx_lead {
	mode_t dmode, fmode;            /* its manager's modes */
	int write_metrics;              /* 0: prevent_write_metrics */
	char **names;                   /* item names, as in its request */
	Ckpt__Handler *handlers;
};
/* Worker side of a distributed commit: check the parts against each
 * other, write the merged _METADATA of each tree item and the step's
 * _CHECKPOINT_METADATA, sync, rename, index record. On failure the tmp
 * dir is removed and the failure recorded. */
int steptx_commit(struct steptx *tx, const struct steptx_lead *lead,
    ckd_err *e);
/* Worker: remove the step's tmp dir <name>.ckptd-tmp under *rootfd
 * (closing *tmpfd and *rootfd, -1 when not open) and record in the index
 * why step failed, unless why is CKPT_EEXIST (someone else's step). The
 * one abort of a step: of a transaction (steptx_abort) and of a
 * single-process save (save.c). */
void steptx_abort_step(const struct root *r, uint64_t step,
    const char *name, int64_t init_ns, int *rootfd, int *tmpfd,
    const ckd_err *why);
/* Worker: steptx_abort_step of the transaction's tmp dir. */
void steptx_abort(struct steptx *tx, const ckd_err *why);

/* Every unfinished transaction of r and job missing rank `rank`'s part
 * (not yet handed) fails: its connection closed. Calls back fail_cb for
 * each (save.c drives what follows). */
void steptx_rank_gone(const struct root *r, const char *job, uint32_t rank,
    void (*fail_cb)(struct steptx *tx));
/* Ranks gone between steps: a distributed manager of (r, job) for rank
 * `rank` closed (or its connection did) with no other open manager of
 * that rank. A later step of (r, job) that counts the rank fails at its
 * first part. steptx_rank_back: a manager of the rank opened again;
 * steptx_job_ended: no manager of (r, job) is open any more (forget).
 * steptx_job_left: the last open manager of (r, job), of rank `rank`,
 * closed. With no step of the job unfinished, the job ended. Otherwise
 * its other ranks may not have opened yet (the rank handed a step and
 * died first): the rank is remembered as gone, at most
 * STEPTX_GONE_ALONE ranks per (r, job), until the job's unfinished steps
 * leave the list, or, once a manager of the job opens, until the job
 * ends. */
#define STEPTX_GONE_ALONE 1024
void steptx_rank_left(struct root *r, const char *job, uint32_t rank);
void steptx_job_left(struct root *r, const char *job, uint32_t rank);
/* As steptx_job_left, for a manager whose connection was lost rather
 * than closed (the process died). With no step of the job unfinished,
 * the job's other entries are forgotten as when it ends, but this rank
 * stays gone for timeout_secs (its steps' timeout): it may have died
 * before the job's other ranks opened, and their next step then fails
 * at once instead of at the timeout. A job whose ranks close their
 * managers before exiting is not affected. */
void steptx_job_lost(struct root *r, const char *job, uint32_t rank,
    double timeout_secs);
void steptx_rank_back(const struct root *r, const char *job, uint32_t rank);
void steptx_job_ended(const struct root *r, const char *job);
/* "[3]": the ranks of the given ones (NULL: 0 .. n-1) that are gone, into
 * buf. Returns the number of them. */
unsigned steptx_ranks_gone(const struct root *r, const char *job,
    const uint32_t *ranks, unsigned n, char *buf, size_t len);
/* ckptd stops: every unfinished transaction still missing parts fails
 * (fail_cb as above), so that stopping does not wait for its timeout. */
void steptx_fail_incomplete(void (*fail_cb)(struct steptx *tx));
/* Free everything at shutdown. */
void steptx_shutdown(void);

/* Start-up: the event base of the timeouts and the index of records. */
void steptx_init(struct event_base *base, struct index *ix);
/* The coordinator of the parts (coord.h), chosen by main.c at start-up
 * (coord_local_ops, or the etcd one) before any save; and read back by
 * the save pipeline. */
void steptx_set_coord(const struct coord_ops *c);
const struct coord_ops *steptx_coord(void);

#endif
