/*
 * treemeta.h - _METADATA, the tree of one item: its leaves (path, kind,
 * value, tag; for arrays dtype, shape, nbytes, file, tensor, xxh3).
 * Format in treemeta.c.
 */
#ifndef CKPTD_TREEMETA_H
#define CKPTD_TREEMETA_H

#include <sys/types.h>

#include "common.h"
#include "ckpt.pb-c.h"
#include "syncbatch.h"

/* Write <itemfd>/_METADATA for a tree item. Each leaf of `item` carries
 * path, kind, scalar value, tag, and for arrays dtype, shape, nbytes, file,
 * tensor and xxh3 (already filled by the caller). fsyncs. */
int store_write_tree_metadata(const struct store_backend *be, int itemfd,
    const Ckpt__Item *item, mode_t filemode, ckd_err *e);
int store_write_tree_metadata_nosync(const struct store_backend *be, int itemfd,
    const Ckpt__Item *item, mode_t filemode, struct store_sync *b, ckd_err *e);

/* Read and validate <itemfd>/_METADATA into a malloc'ed Ckpt__Item whose
 * leaves carry everything written above (offset 0, fd_index 0). The file
 * is untrusted: dtype, ndim, nbytes overflow, file and tensor names are
 * checked; problems are CKPT_ECORRUPT naming the file. Free with
 * store_item_free(). name/handler are set by the caller. */
int store_read_tree_metadata(const struct store_backend *be, int itemfd,
    Ckpt__Item **out, ckd_err *e);
/* Free an item built by store_read_tree_metadata (or by hand with malloc:
 * every string and array of every leaf, then the leaves, then the item). */
void store_item_free(Ckpt__Item *item);

/* The rules of a leaf shared by the writer (CKPT_EINVAL) and the readers
 * (CKPT_ECORRUPT). Returns NULL when the leaf is fine, else why not. */
const char *store_leaf_problem(const Ckpt__Leaf *l);

#endif
