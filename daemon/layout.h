/*
 * layout.h - the names in a checkpoint root (see README "On-disk format"):
 * step directories under a naming, the files of an item, and the scan of
 * a root's steps.
 *
 * Layout of one step:
 *   <root>/<name>/_CHECKPOINT_METADATA
 *   <root>/<name>/<item>/_METADATA + data-NNNNN.safetensors   (tree items)
 *   <root>/<name>/<item>/metadata                            (JSON items)
 *   <root>/<name>/<item>/proto.pbtxt                         (PROTO items)
 *   <root>/<name>.ckptd-tmp/ ...                              (in progress)
 *   <root>/metadata/_ROOT_METADATA
 */
#ifndef CKPTD_LAYOUT_H
#define CKPTD_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "common.h"

#define STORE_TREE_METADATA "_METADATA"
#define STORE_STEP_METADATA "_CHECKPOINT_METADATA"
#define STORE_JSON_FILE "metadata"
#define STORE_PROTO_FILE "proto.pbtxt"
#define STORE_ROOT_META_DIR "metadata"
#define STORE_ROOT_META_FILE "_ROOT_METADATA"
/* Version of the files ckptd writes ("version" in _METADATA and in the
 * "ckptd" section of _CHECKPOINT_METADATA). Readers refuse a newer one
 * with CKPT_EVERSION: it was written by a newer ckptd. */
#define STORE_FORMAT_VERSION 1

struct store_naming {
	char prefix[128];   /* "" for none; else "<prefix>_<step>" */
	unsigned fixed_len; /* zero-pad the step to this many digits (0: none) */
};

/* 1 when s is a usable single path component for an item/prefix/file:
 * non-empty, <= 255 bytes, no '/', no NUL, not "." or "..", does not end in
 * CKPT_TMP_SUFFIX. */
int store_valid_component(const char *s);
/* 1 when s ends with suffix. */
int store_ends_with(const char *s, const char *suffix);
/* Format a step directory name. Returns 0 or CKPT_EINVAL (buffer short). */
int store_step_name(const struct store_naming *nm, uint64_t step, char *buf,
    size_t len);
/* Parse a directory name under the naming; 0 and *step on match, -1 when
 * the name is not a step directory of this naming (tmp dirs included). */
int store_parse_step_name(const struct store_naming *nm, const char *name,
    uint64_t *step);

struct store_entry {
	uint64_t step;
	char name[256];
	int tmp;            /* 1: "<name>.ckptd-tmp" left from an unfinished save */
};
/* List the step directories (and leftover tmp dirs) of a root, sorted by
 * step (committed before tmp for equal steps). *out is malloc'ed. Entries
 * that are not directories, or do not parse under nm, are ignored. */
int store_scan(const struct store_backend *be, int rootfd,
    const struct store_naming *nm, struct store_entry **out, size_t *n,
    ckd_err *e);

#endif
