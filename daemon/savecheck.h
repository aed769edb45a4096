/*
 * savecheck.h - validation of a Save request before anything is allocated
 * for it or written (runs on the event loop; no I/O but fstat/fcntl of the
 * staging memfd).
 *
 * Every count, size and offset of the request is bounded (ckpt_limits.h)
 * with overflow-checked arithmetic: items, leaves per item and per save,
 * path depth, key and tag lengths, ndim and the product of the shape, and
 * the running sum of array bytes, which must fit the staging memfd; array
 * leaves must not overlap in the memfd. Item names must be restorable
 * directory names. A failure is CKPT_ETOOBIG (over a limit) or CKPT_EINVAL
 * (malformed) with a message naming the leaf or item.
 */
#ifndef CKPTD_SAVECHECK_H
#define CKPTD_SAVECHECK_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "ckpt.pb-c.h"

/* What a valid request holds, counted exactly. */
struct savecheck_counts {
	size_t narrays;         /* array leaves, over all tree items */
	size_t nfiles;          /* safetensors files for the file target */
	uint64_t bytes;         /* sum of the array leaves' nbytes */
};

/* The staging buffer: a regular file sealed against shrinking, so that a
 * client truncating it cannot make the daemon's reads fault. */
int savecheck_memfd(int fd, uint64_t *size, ckd_err *e);
/* Validate sv against a staging buffer of memsize bytes (0: none) and
 * normalize it: the default item name and handlers are filled in, fields
 * the daemon fills (file, tensor, xxh3, fd_index) are cleared. */
int savecheck_request(Ckpt__Save *sv, uint64_t memsize, ckd_err *e);
/* The one rule for item names, wherever a peer names an item (Save items,
 * ManagerOptions.item_names, Restore.items): not empty, at most
 * CKPT_MAX_ITEM_NAME bytes, no '/', not "." or "..", not starting with
 * '.', not the step's metadata file. 0, or CKPT_EINVAL with a message
 * naming the item. */
int savecheck_item_name(const char *name, ckd_err *e);
/* 1 for the handlers stored as a tree of leaves. */
int savecheck_is_tree(Ckpt__Handler h);
/* Count arrays, bytes and files of a validated request: the array leaves of
 * each tree item are packed in order into files that are closed once they
 * hold >= target bytes (target > 0). Exact: save_plan allocates from it. */
void savecheck_count(const Ckpt__Save *sv, uint64_t target,
    struct savecheck_counts *out);
/* "a/b/0" for messages (truncated to len). */
void savecheck_leaf_path(const Ckpt__Leaf *l, char *buf, size_t len);

#endif
