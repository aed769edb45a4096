/*
 * root.h - the roots: one per directory and step naming, shared by every
 * manager opened on it; their steps in memory, retention deletes, the
 * sweep of leftovers at start-up. Used by manager.c, save.c, steptx.c
 * and restore.c; root.c calls none of them (what a delete's caller
 * needs back comes through its done callback).
 *
 * Everything declared here lives on the event-loop thread. Worker tasks get
 * copies of what they need (paths, naming, step names) and hand results back
 * through their done() callback; they never touch a root or a manager.
 *
 * Ownership: a root is refcounted: one reference per manager,
 * accepted/queued save, step transaction, waiter and task that points at
 * it. Freed at zero.
 */
#ifndef CKPTD_ROOT_H
#define CKPTD_ROOT_H

#include <sys/stat.h>
#include <sys/types.h>
#include <stdint.h>
#include <stddef.h>

#include "common.h"
#include "log.h"
#include "worker.h"
#include "index.h"
#include "store.h"
#include "policy.h"

struct event_base;
struct event;
struct opener;
struct coord_ops;


enum root_state {
	ROOT_LOADING = 0,
	ROOT_READY = 1,
};

struct root {
	struct root *next;
	unsigned refs;
	int state;                      /* enum root_state */
	char *path;                     /* canonical absolute path */
	/* The backend keeping it, decided from its name when it was opened
	 * (store_backend_for); every file operation on it goes through. */
	const struct store_backend *be;
	/* Kept in the local tier (tier.h): be and dirfd are the tier's
	 * directory (posix), path names the store. */
	int tiered;
	/* Identity: the directory opened at load, kept open so that its
	 * inode cannot be reused while the root lives. A directory removed
	 * and re-created at the same path is another root. */
	int dirfd;
	dev_t dev;
	ino_t ino;
	uid_t uid;                      /* owner when opened */
	char *key;                      /* index key: path, identity, naming */
	struct store_naming nm;
	/* Steps ascending by step; committed and failed records, one per
	 * step. seq[i] is the mutation counter when record i was inserted. */
	struct index_step *steps;
	uint64_t *seq;
	size_t nsteps, capsteps;
	uint64_t mutations;
	/* Steps whose delete task has not finished yet. */
	uint64_t *deleting;
	size_t ndeleting, capdeleting;
	struct opener *openers;         /* while ROOT_LOADING (manager.c's) */
	unsigned saves;                 /* queued + running saves */
	unsigned busy;                  /* tasks writing to the root */
	int64_t last_save_ns;           /* start of the last save, -1 none */
};


/* Open r's own directory (the one it was loaded from, found
 * through its pinned fd, never through the path) as the task's peer. */
int root_open_dir(const struct root *r, int *fd, ckd_err *e);

/* Start-up: the index the roots' steps are recorded in. */
void root_init(struct index *ix);
/* Number of roots loaded or loading. */
unsigned root_count(void);
/* Interrupted saves found (at start-up or when a root loads), counted. */
void root_add_interrupted(uint64_t n);
uint64_t root_interrupted(void);
/* Unlink a root that failed to load, so that the next open retries;
 * its references stay valid. */
void root_forget(struct root *r);
void root_ref(struct root *r);
void root_unref(struct root *r);
/* Find a loaded or loading root of directory (dev, ino) under naming nm;
 * NULL when none. */
struct root *root_find(dev_t dev, ino_t ino, const struct store_naming *nm);
/* New root in ROOT_LOADING state with one reference; takes ownership of
 * dirfd (the handle of the directory under backend be, st its status),
 * also on failure. */
struct root *root_new(const char *path, const struct store_naming *nm,
    const struct store_backend *be, int dirfd, const struct stat *st);
/* Index of the record of step, or -1. */
long root_find_step(const struct root *r, uint64_t step);
/* Insert (or replace) a record; takes ownership of its strings.
 * Returns 0 or CKPT_ENOMEM (strings freed). */
int root_insert_step(struct root *r, struct index_step *s);
void root_remove_step(struct root *r, size_t i);
/* Highest committed step, or -1. */
int64_t root_latest(const struct root *r);
size_t root_ncommitted(const struct root *r);
/* Committed steps as policy steps, ascending (*out malloc'ed; idx[i] is the
 * record index of out[i] when idx is not NULL). */
int root_policy_steps(const struct root *r, const struct policy_set *pol,
    struct policy_step **out, size_t **idx, size_t *n);
int root_is_deleting(const struct root *r, uint64_t step);
int root_add_deleting(struct root *r, uint64_t step);
void root_del_deleting(struct root *r, uint64_t step);
/* Reconcile a root's records with a scan of its directory (worker thread):
 * committed dirs missing from known[] get their _CHECKPOINT_METADATA read.
 * Returns the records of every committed dir (*out malloc'ed). */
int root_scan_disk(const struct store_backend *be, int rootfd,
    const struct store_naming *nm,
    const struct index_step *known, size_t nknown,
    struct index_step **out, size_t *nout, int *tmp_left, ckd_err *e);
/* A delete of committed step i (removed from the list now), run in a
 * worker with cred/lane's identity; subdir may be NULL. */
struct root_delete {
	const char *subdir;
	const struct peer_cred *cred;
	uint64_t lane;
	int reported;                   /* done() reports failures: no log */
	/* Non-NULL: called when finished (also when it could not start),
	 * err NULL when the step is gone. */
	void (*done)(void *arg, const ckd_err *err);
	void *arg;
};
void root_delete_step(struct root *r, size_t i, const struct root_delete *how);

/* Start-up: the coordinator told of every step a delete removed
 * (step_deleted, run in the delete's task), for the other nodes. */
void root_set_coord(const struct coord_ops *ops);
/* A committed step of the root at path was deleted by another node:
 * dropped from every loaded root of that path (the list now, the index
 * in a task), its files left alone. Returns how many roots listed it. */
unsigned root_drop_step(const char *path, uint64_t step);
/* (loop) The committed steps of the loaded roots on a shared filesystem
 * (absolute paths) that known(arg, path, step) does not know of are
 * looked for on disk (a task per root); each whose directory is gone is
 * dropped as by root_drop_step. For a coordinator that may have missed
 * deletes made elsewhere (a gap in its watch). Returns how many steps
 * are looked for. */
unsigned root_recheck_steps(int (*known)(void *arg, const char *path,
    uint64_t step), void *arg);

/* Start-up: collect the leftovers of every root the index knows, as its
 * owner, and record the saves they stood for as interrupted. */
void root_sweep_leftovers(void);

#endif
