/*
 * pieces.c - pieces of a global array checked alone and against each
 * other (see pieces.h).
 *
 * Overlap: the pieces are sorted by their start in the first dimension,
 * and each is compared only with the following ones that start before it
 * ends there; pieces cut along the first dimension (the usual row or FSDP
 * sharding) thus cost a sort. Cover: with every piece inside the global
 * array and none overlapping, they cover it exactly when their element
 * counts add up to the global element count.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pieces.h"

int
pieces_is_piece(const Ckpt__Leaf *l)
{
	return l->n_global_shape > 0 || l->n_piece_offsets > 0;
}

int
pieces_check_one(const Ckpt__Leaf *l, const char *path, ckd_err *e)
{
	uint64_t end;
	size_t d;

	if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY)
		return err_set(e, CKPT_EINVAL, "leaf '%s': only arrays can be "
		    "pieces of a global array", path);
	if (l->replicated_elsewhere)
		return err_set(e, CKPT_EINVAL, "leaf '%s': a piece of a global "
		    "array cannot be replicated", path);
	if (l->n_shape == 0 || l->n_global_shape != l->n_shape ||
	    l->n_piece_offsets != l->n_shape)
		return err_set(e, CKPT_EINVAL, "leaf '%s': a piece needs one "
		    "global dimension and one offset per dimension of its "
		    "shape (%zu dimensions, %zu global, %zu offsets)", path,
		    l->n_shape, l->n_global_shape, l->n_piece_offsets);
	for (d = 0; d < l->n_shape; d++) {
		if (l->global_shape[d] > INT64_MAX)
			return err_set(e, CKPT_EINVAL, "leaf '%s': global "
			    "dimension %zu too large", path, d);
		if (__builtin_add_overflow(l->piece_offsets[d], l->shape[d],
		    &end) || end > l->global_shape[d])
			return err_set(e, CKPT_EMISMATCH, "array '%s': piece at "
			    "offset %" PRIu64 " of size %" PRIu64 " in dimension "
			    "%zu lies outside the global shape (%" PRIu64 ")",
			    path, l->piece_offsets[d], l->shape[d], d,
			    l->global_shape[d]);
	}
	return 0;
}

static int
pieces_cmp(const void *a, const void *b)
{
	const Ckpt__Leaf *x = *(const Ckpt__Leaf *const *)a;
	const Ckpt__Leaf *y = *(const Ckpt__Leaf *const *)b;

	if (x->piece_offsets[0] != y->piece_offsets[0])
		return x->piece_offsets[0] < y->piece_offsets[0] ? -1 : 1;
	return 0;
}

static uint64_t
pieces_count(const Ckpt__Leaf *l, int *over)
{
	uint64_t n = 1;
	size_t d;

	for (d = 0; d < l->n_shape; d++)
		if (__builtin_mul_overflow(n, l->shape[d], &n))
			*over = 1;
	return n;
}

/* "[0:4, 8:16]" of a piece, for messages. */
static void
pieces_box(const Ckpt__Leaf *l, char *buf, size_t len)
{
	size_t d, off = 0;
	int k;

	buf[0] = '\0';
	for (d = 0; d < l->n_shape && off + 1 < len; d++) {
		k = snprintf(buf + off, len - off, "%s%" PRIu64 ":%" PRIu64,
		    d ? ", " : "[", l->piece_offsets[d], l->piece_offsets[d] +
		    l->shape[d]);
		if (k < 0)
			break;
		off += (size_t)k;
	}
	if (off + 1 < len)
		snprintf(buf + off, len - off, "]");
}

int
pieces_check(const Ckpt__Leaf **p, size_t n, int cover, const char *path,
    ckd_err *e)
{
	uint64_t total = 0, global = 1, cnt;
	char a[128], b[128];
	size_t i, j, d;
	int over = 0;

	if (n == 0)
		return 0;
	for (i = 1; i < n; i++) {
		if (p[i]->dtype != p[0]->dtype)
			return err_set(e, CKPT_EMISMATCH, "array '%s': pieces "
			    "disagree on the dtype", path);
		if (p[i]->n_global_shape != p[0]->n_global_shape ||
		    memcmp(p[i]->global_shape, p[0]->global_shape,
		    p[0]->n_global_shape * sizeof(uint64_t)) != 0)
			return err_set(e, CKPT_EMISMATCH, "array '%s': pieces "
			    "disagree on the global shape", path);
	}
	qsort(p, n, sizeof *p, pieces_cmp);
	for (i = 0; i < n; i++) {
		uint64_t end0 = p[i]->piece_offsets[0] + p[i]->shape[0];

		cnt = pieces_count(p[i], &over);
		if (cnt == 0)
			continue;
		if (__builtin_add_overflow(total, cnt, &total))
			over = 1;
		for (j = i + 1; j < n && p[j]->piece_offsets[0] < end0; j++) {
			for (d = 0; d < p[i]->n_shape; d++)
				if (p[j]->piece_offsets[d] >=
				    p[i]->piece_offsets[d] + p[i]->shape[d] ||
				    p[i]->piece_offsets[d] >=
				    p[j]->piece_offsets[d] + p[j]->shape[d])
					break;
			if (d < p[i]->n_shape || pieces_count(p[j], &over) == 0)
				continue;
			pieces_box(p[i], a, sizeof a);
			pieces_box(p[j], b, sizeof b);
			return err_set(e, CKPT_EMISMATCH, "array '%s': pieces "
			    "%s and %s overlap", path, a, b);
		}
	}
	if (!cover)
		return 0;
	for (d = 0; d < p[0]->n_global_shape; d++)
		if (__builtin_mul_overflow(global, p[0]->global_shape[d],
		    &global))
			over = 1;
	if (over || total != global)
		return err_set(e, CKPT_EMISMATCH, "array '%s': the pieces of all "
		    "ranks cover %" PRIu64 " of its %" PRIu64 " elements "
		    "(missing pieces)", path, total, global);
	return 0;
}
