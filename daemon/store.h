/*
 * store.h - the on-disk format of a checkpoint root (see README "On-disk
 * format"), one header for the callers. Pure file operations on directory
 * fds; no globals, no locks.
 *
 * Every function runs on a worker thread whose filesystem identity
 * (setfsuid/setfsgid/groups) is already the requesting peer's, so the
 * kernel enforces permissions. Names passed in are single path components
 * validated with store_valid_component(); every open uses O_NOFOLLOW and
 * O_CLOEXEC relative to a directory fd, so nothing escapes the root.
 *
 * The pieces, top-down (each includes only the ones below it):
 *   stepdir.h      the commit protocol: begin, commit, abort, delete,
 *                  leftovers
 *   stepmeta.h     _CHECKPOINT_METADATA
 *   treemeta.h     _METADATA of a tree item
 *   safetensors.h  data files: the two write engines, headers, verify
 *   smallfile.h    whole small files (JSON items, documents)
 *   syncbatch.h    batched fsync
 *   layout.h       names in a root, the scan of its steps
 *   dtype.h        dtype and handler tables
 *   backend.h      the file operations (backend_posix.c)
 */
#ifndef CKPTD_STORE_H
#define CKPTD_STORE_H

#include "layout.h"
#include "dtype.h"
#include "syncbatch.h"
#include "smallfile.h"
#include "safetensors.h"
#include "treemeta.h"
#include "stepmeta.h"
#include "stepdir.h"

#endif
