/*
 * pieces.h - pieces of a global array (DESIGN "Distributed steps"): leaves
 * with global_shape and piece_offsets, checked against each other.
 *
 * Used within one rank's Save (savecheck.c: the rank's own pieces must
 * agree and not overlap) and at the commit of a step across every rank's
 * pieces (steptx.c: they must also cover the global array exactly). Pure
 * functions, no I/O; every sum and product is overflow-checked.
 */
#ifndef CKPTD_PIECES_H
#define CKPTD_PIECES_H

#include <stddef.h>

#include "common.h"
#include "ckpt.pb-c.h"

/* 1 when l is a piece of a global array. */
int pieces_is_piece(const Ckpt__Leaf *l);
/* One piece alone: as many offsets and global dimensions as its shape has
 * (at least one), each global dimension <= INT64_MAX, the piece inside.
 * CKPT_EINVAL (malformed) or CKPT_EMISMATCH (outside), naming `path`. */
int pieces_check_one(const Ckpt__Leaf *l, const char *path, ckd_err *e);
/* The n pieces p[] (each already valid alone) of the array `path`: same
 * dtype, same global shape, no two overlapping; with cover, together
 * exactly the global array. CKPT_EMISMATCH naming the array and what is
 * wrong. p[] is reordered. */
int pieces_check(const Ckpt__Leaf **p, size_t n, int cover,
    const char *path, ckd_err *e);

#endif
