/*
 * pieces.c - pieces of global arrays (distributed steps): boxes in the
 * global index space, their intersections, and the copy of an overlap from
 * one piece into another (with a dtype cast).
 *
 * A piece is a box: its offsets (where it starts in the global array) and
 * its shape, both of ndim elements, in C order. The copy walks the overlap
 * row by row: a row is the overlap's extent along the last dimension, which
 * is contiguous in both pieces; consecutive dimensions that the overlap
 * spans fully in both pieces are merged into longer rows first. Rows of
 * PIECE_NT_MIN bytes or more are copied with streaming stores (copy.c):
 * the destination lines are not read first, which saves a third of the
 * memory traffic of a copy far larger than the cache (a restore's piece
 * targets); the stores are fenced before piece_copy returns.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* Rows from this size on are copied with streaming stores: their partial
 * first and last cache lines (ordinary stores) are a small part of them. */
#define PIECE_NT_MIN (4u << 10)

int
piece_check(int ndim, const int64_t *gshape, const int64_t *off,
    const int64_t *shape)
{
	int i;

	for (i = 0; i < ndim; i++) {
		if (gshape[i] < 0 || off[i] < 0 || shape[i] < 0)
			return CKPT_EINVAL;
		if (off[i] > gshape[i] || shape[i] > gshape[i] - off[i])
			return CKPT_EINVAL;
	}
	return 0;
}

int64_t
piece_intersect(int ndim, const int64_t *aoff, const int64_t *ashape,
    const int64_t *boff, const int64_t *bshape, int64_t *off, int64_t *shape)
{
	int64_t vol = 1;
	int i;

	for (i = 0; i < ndim; i++) {
		int64_t lo = aoff[i] > boff[i] ? aoff[i] : boff[i];
		int64_t ahi = aoff[i] + ashape[i], bhi = boff[i] + bshape[i];
		int64_t hi = ahi < bhi ? ahi : bhi;

		if (hi <= lo)
			return 0;
		off[i] = lo;
		shape[i] = hi - lo;
		/* a box inside a checked global shape: the product of its
		 * extents is at most that of the global shape's */
		if (vol > INT64_MAX / shape[i])
			return INT64_MAX;
		vol *= shape[i];
	}
	return vol;
}

/* Row-major stride (in elements) of dimension i of a box of shape s. */
static void
strides(int ndim, const int64_t *s, size_t *st)
{
	int i;

	if (ndim == 0)
		return;
	st[ndim - 1] = 1;
	for (i = ndim - 2; i >= 0; i--)
		st[i] = st[i + 1] * (size_t)s[i + 1];
}

void
piece_copy(int ndim, const int64_t *roff, const int64_t *rshape,
    const void *src, ckpt_dtype sdt, const int64_t *soff,
    const int64_t *sshape, void *dst, ckpt_dtype ddt, const int64_t *doff,
    const int64_t *dshape)
{
	size_t sst[CKPT_MAX_NDIM], dst_st[CKPT_MAX_NDIM], idx[CKPT_MAX_NDIM];
	size_t ssz = ckpt_dtype_size(sdt), dsz = ckpt_dtype_size(ddt);
	size_t row, sbase = 0, dbase = 0;
	int inner, i, nt;

	if (ndim == 0) {
		if (sdt == ddt)
			memcpy(dst, src, ssz);
		else
			dtype_cast(sdt, src, ddt, dst, 1);
		return;
	}
	strides(ndim, sshape, sst);
	strides(ndim, dshape, dst_st);
	/* merge trailing dimensions the region covers fully in both boxes */
	inner = ndim - 1;
	row = (size_t)rshape[ndim - 1];
	while (inner > 0 && rshape[inner] == sshape[inner] &&
	    rshape[inner] == dshape[inner]) {
		inner--;
		row *= (size_t)rshape[inner];
	}
	nt = sdt == ddt && row * ssz >= PIECE_NT_MIN;
	for (i = 0; i < ndim; i++) {
		sbase += (size_t)(roff[i] - soff[i]) * sst[i];
		dbase += (size_t)(roff[i] - doff[i]) * dst_st[i];
		idx[i] = 0;
	}
	for (;;) {
		size_t so = sbase, d = dbase;
		const char *sp;
		char *dp;

		for (i = 0; i < inner; i++) {
			so += idx[i] * sst[i];
			d += idx[i] * dst_st[i];
		}
		sp = (const char *)src + so * ssz;
		dp = (char *)dst + d * dsz;
		if (nt)
			copy_nt_ahead(dp, sp, row * ssz, NULL);
		else if (sdt == ddt)
			memcpy(dp, sp, row * ssz);
		else
			dtype_cast(sdt, sp, ddt, dp, row);
		/* next row: odometer over dimensions [0, inner) */
		for (i = inner - 1; i >= 0; i--) {
			if (++idx[i] < (size_t)rshape[i])
				break;
			idx[i] = 0;
		}
		if (i < 0)
			break;
	}
	if (nt)
		copy_nt_fence();
}
