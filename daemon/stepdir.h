/*
 * stepdir.h - the commit protocol of a step directory. A save writes
 * <root>/<name>.ckptd-tmp (its own through an exclusive flock on the
 * directory fd), makes every file and directory in it durable, then
 * renames it to <name> without replacing and fsyncs the root. Deletes
 * hide a step first (.<name>.ckptd-del), then remove it. Leftovers of a
 * crash are the tmp and hidden dirs no live save holds.
 */
#ifndef CKPTD_STEPDIR_H
#define CKPTD_STEPDIR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"
#include "layout.h"

/* Open (creating it and missing parents with `mode` when create) the
 * root named `path` with the backend its name calls for (*be, see
 * store_backend_for); *fd is its handle (posix: O_DIRECTORY|O_CLOEXEC).
 * Errors: CKPT_ENOTDIR (missing, !create), CKPT_EACCES, CKPT_EINVAL
 * (relative, or a scheme no backend keeps). */
int store_open_root(const char *path, int create, mode_t mode,
    const struct store_backend **be, int *fd, ckd_err *e);

/* Remove dirfd/name recursively, never following symlinks. ENOENT is 0. */
int store_remove_tree(const struct store_backend *be, int dirfd,
    const char *name, ckd_err *e);

/* Start writing step dir `name`: CKPT_EEXIST when <name> exists; removes a
 * leftover <name>.ckptd-tmp (CKPT_EBUSY when a live save holds it); creates
 * it with dirmode; *tmpfd opened and locked (flock) as the save's own until
 * it is closed. */
int store_begin(const struct store_backend *be, int rootfd, const char *name,
    mode_t dirmode, int *tmpfd, ckd_err *e);
/* Create and open an item directory inside the tmp dir. */
int store_mkdir_item(const struct store_backend *be, int tmpfd,
    const char *item, mode_t dirmode, int *itemfd, ckd_err *e);
/* The same, or open it when another part of the step created it first. */
int store_open_item(const struct store_backend *be, int tmpfd,
    const char *item, mode_t dirmode, int *itemfd, ckd_err *e);

/* Commit: rename <name>.ckptd-tmp -> <name> (RENAME_NOREPLACE), fsync
 * rootfd. The tmp dir, its item dirs and files must already be durable
 * (the last entries of the save's sync batch). */
int store_commit_synced(const struct store_backend *be, int rootfd,
    const char *name, ckd_err *e);
/* Remove <name>.ckptd-tmp (after a failed save). */
int store_abort(const struct store_backend *be, int rootfd, const char *name,
    ckd_err *e);

/* Delete committed step <name>: when subdir is non-NULL, rename it to
 * <root>/<subdir>/<name> (creating subdir), else remove it. The step is
 * first renamed to a hidden ".<name>.ckptd-del" so it vanishes atomically
 * from listings, then removed. Errors: CKPT_ENOTFOUND, CKPT_EACCES. */
int store_delete_step(const struct store_backend *be, int rootfd,
    const char *name, const char *subdir, ckd_err *e);
/* Leftovers of a crash. A save owns its <name>.ckptd-tmp through an
 * exclusive flock on the directory (store_begin takes it; it lasts until
 * the tmp fd is closed, and dies with the process), so a tmp dir that is
 * not locked belongs to no live save of any daemon. This removes:
 *  - the unlocked <name>.ckptd-tmp of steps of naming nm (returned in
 *    *out: the saves a crash interrupted, with the tmp dir's mtime);
 *  - with STORE_LEFTOVER_ANY_NAMING, those of every naming too;
 *  - every unlocked hidden .<name>.ckptd-del (a delete already decided);
 *  - with STORE_LEFTOVER_ORBAX, Orbax's <name>.orbax-checkpoint-tmp[-<N>]
 *    (Orbax's cleanup_tmp_directories: the caller says none is live).
 * out may be NULL; *out is malloc'ed. An entry that cannot be removed
 * (another user's) does not stop the others: the first error is
 * returned after the whole pass, with *out filled. */
#define STORE_LEFTOVER_ANY_NAMING 1
#define STORE_LEFTOVER_ORBAX 2
struct store_leftover {
	uint64_t step;
	char name[256];         /* the step directory's name */
	int64_t mtime_ns;       /* last change of the tmp dir */
};
int store_collect_leftovers(const struct store_backend *be, int rootfd,
    const struct store_naming *nm, int flags, struct store_leftover **out,
    size_t *nout, ckd_err *e);

#endif
