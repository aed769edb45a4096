/*
 * index.h - the LMDB step index in the daemon's state directory.
 *
 * The index is a cache of what is on disk (disk is the truth): it keeps,
 * per checkpoint root, one record per step with its state, timestamps,
 * size, metrics and (for failed saves) the error. Deleting the LMDB files
 * loses nothing: the manager rebuilds a root's records from disk on open.
 *
 * Threading: one MDB_env shared by all threads; every call opens and ends
 * its own transaction (no long-lived read transactions). Write calls run
 * on worker threads only, never on the event-loop thread.
 *
 * Keys of the "steps" database: root key bytes, NUL, step as 8 bytes
 * big-endian, so a cursor range walks one root in step order. The root
 * key is made by root.c: the path, the directory's identity and owner, and
 * the naming.
 */
#ifndef CKPTD_INDEX_H
#define CKPTD_INDEX_H

#include <stdint.h>
#include <stddef.h>

#include "common.h"

struct index;

enum index_state {
	INDEX_COMMITTED = 0,
	INDEX_FAILED = 2,
	INDEX_INTERRUPTED = 3,  /* the daemon stopped before it committed */
};

struct index_step {
	uint64_t step;
	int state;               /* enum index_state */
	int64_t init_ns;         /* when the save started (policy clock) */
	int64_t commit_ns;
	uint64_t bytes;
	char name[256];          /* directory name */
	char *metrics_json;      /* malloc'ed JSON object text or NULL */
	char *error;             /* malloc'ed, not committed only, or NULL */
};

/* Open (creating state_dir with 0700 if needed) the env at
 * <state_dir>/index (data.mdb/lock.mdb). map size 1 GiB. */
int index_open(const char *state_dir, struct index **out, ckd_err *e);
/* What index_open had to do, for the log ("" when nothing): a database
 * file shorter than its meta pages claim, or left by a machine that went
 * down while ckptd ran (a marker the clean shutdown removes says so), is
 * never mapped: it is moved aside and the index rebuilt from the disk. */
const char *index_open_note(const struct index *ix);
/* Sync the environment, remove the running marker, close. */
void index_close(struct index *ix);

/* All records of `root` in step order (*steps malloc'ed, may be NULL when
 * n == 0). *known is 1 when the root has been indexed before (a
 * root marker exists), 0 otherwise. */
int index_load_root(struct index *ix, const char *root,
    struct index_step **steps, size_t *n, int *known, ckd_err *e);
/* Every root key the index has records for (*roots and its strings
 * malloc'ed). */
int index_roots(struct index *ix, char ***roots, size_t *n, ckd_err *e);
/* Insert or replace one record (and set the root marker). */
int index_put_step(struct index *ix, const char *root,
    const struct index_step *s, ckd_err *e);
/* The record of a step just committed (directory `name`, its save begun
 * at init_ns, committed at commit_ns, bytes written, its metrics or
 * NULL): what the single-process save and the step transaction both
 * record. */
int index_put_committed(struct index *ix, const char *root, uint64_t step,
    const char *name, int64_t init_ns, int64_t commit_ns, uint64_t bytes,
    const char *metrics_json, ckd_err *e);
/* Remove one record; absent is not an error. */
int index_del_step(struct index *ix, const char *root, uint64_t step,
    ckd_err *e);
/* Replace every record of root by steps[0..n) in one transaction and set
 * the root marker (used after rebuilding from disk). */
int index_replace_root(struct index *ix, const char *root,
    const struct index_step *steps, size_t n, ckd_err *e);
/* Free records returned by index_load_root. */
void index_steps_free(struct index_step *steps, size_t n);

#endif
