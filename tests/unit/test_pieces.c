/*
 * test_pieces.c - libckpt's pieces of global arrays: the overlap copy
 * (every layout against every other, with casts), pieces in trees (overlap,
 * bounds, dtype and global shape checks), the process options; long rows
 * (the streaming-store copy) from and into boxes at unaligned addresses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define D0 7
#define D1 5
#define D2 6

/* A layout: the global array cut into boxes along dim `dim` at `cuts`. */
struct layout {
	int n;
	int64_t off[8][3], shape[8][3];
};

static void
cut(struct layout *l, int dim, const int64_t *cuts, int ncuts)
{
	const int64_t g[3] = { D0, D1, D2 };
	int64_t lo = 0;
	int i, d;

	l->n = 0;
	for (i = 0; i <= ncuts; i++) {
		int64_t hi = i < ncuts ? cuts[i] : g[dim];
		for (d = 0; d < 3; d++) {
			l->off[l->n][d] = d == dim ? lo : 0;
			l->shape[l->n][d] = d == dim ? hi - lo : g[d];
		}
		l->n++;
		lo = hi;
	}
}

/* Copy box (off, shape) out of the global array g. */
static float *
extract(const float *g, const int64_t *off, const int64_t *shape)
{
	float *p = malloc((size_t)(shape[0] * shape[1] * shape[2]) * sizeof *p);
	int64_t i, j, k;

	for (i = 0; i < shape[0]; i++)
		for (j = 0; j < shape[1]; j++)
			for (k = 0; k < shape[2]; k++)
				p[(i * shape[1] + j) * shape[2] + k] =
				    g[((off[0] + i) * D1 + off[1] + j) * D2 +
				    off[2] + k];
	return p;
}

static void
test_copy_layouts(void **state)
{
	const int64_t gshape[3] = { D0, D1, D2 }, zero[3] = { 0 };
	struct layout ls[4];
	float g[D0 * D1 * D2];
	double whole[D0 * D1 * D2];
	int a, b, i, j, k;
	int64_t c0[] = { 2, 3, 6 }, c1[] = { 1, 4 }, c2[] = { 3 };

	(void)state;
	for (i = 0; i < D0 * D1 * D2; i++)
		g[i] = (float)i * 0.5f - 17.0f;
	cut(&ls[0], 0, c0, 3);
	cut(&ls[1], 1, c1, 2);
	cut(&ls[2], 2, c2, 1);
	cut(&ls[3], 0, NULL, 0);        /* one piece: the whole array */
	for (a = 0; a < 4; a++) {
		float *src[8];

		for (i = 0; i < ls[a].n; i++)
			src[i] = extract(g, ls[a].off[i], ls[a].shape[i]);
		/* assemble the whole array, cast to f64 */
		memset(whole, 0, sizeof whole);
		for (i = 0; i < ls[a].n; i++) {
			int64_t ro[3], rs[3];
			assert_true(piece_intersect(3, ls[a].off[i],
			    ls[a].shape[i], zero, gshape, ro, rs) > 0);
			piece_copy(3, ro, rs, src[i], CKPT_F32, ls[a].off[i],
			    ls[a].shape[i], whole, CKPT_F64, zero, gshape);
		}
		for (i = 0; i < D0 * D1 * D2; i++)
			assert_true(whole[i] == (double)g[i]);
		/* fill every piece of every other layout */
		for (b = 0; b < 4; b++) {
			for (j = 0; j < ls[b].n; j++) {
				const int64_t *to = ls[b].off[j], *ts = ls[b].shape[j];
				size_t n = (size_t)(ts[0] * ts[1] * ts[2]);
				float *dst = calloc(n, sizeof *dst);
				float *want = extract(g, to, ts);
				int64_t covered = 0;

				for (k = 0; k < ls[a].n; k++) {
					int64_t ro[3], rs[3], v;
					v = piece_intersect(3, ls[a].off[k],
					    ls[a].shape[k], to, ts, ro, rs);
					if (v == 0)
						continue;
					covered += v;
					piece_copy(3, ro, rs, src[k], CKPT_F32,
					    ls[a].off[k], ls[a].shape[k], dst,
					    CKPT_F32, to, ts);
				}
				assert_int_equal(covered, (int64_t)n);
				assert_memory_equal(dst, want, n * sizeof *dst);
				free(dst);
				free(want);
			}
		}
		for (i = 0; i < ls[a].n; i++)
			free(src[i]);
	}
}

/* A 2-D global array whose rows are longer than the streaming copy's
 * threshold, cut along each dimension at uneven places: every target box
 * of one layout filled from the pieces of another (the copied rows start
 * and end inside cache lines, at a 4-byte offset from an aligned buffer),
 * checked element by element against the global array. */
#define L0 9
#define L1 3001

static void
test_copy_long_rows(void **state)
{
	const int64_t c1[] = { 1333, 2998 }, c0[] = { 4 };
	int64_t off[2][3][2], shape[2][3][2];
	int n[2] = { 3, 2 };
	float *g = malloc((size_t)L0 * L1 * sizeof *g);
	int a, b, i, k;
	int64_t x, y;

	(void)state;
	assert_non_null(g);
	for (x = 0; x < (int64_t)L0 * L1; x++)
		g[x] = (float)x * 0.25f + 3.0f;
	/* layout 0: cut along dim 1 (rows of 1333, 1665 and 3 elements);
	 * layout 1: cut along dim 0 (whole rows, merged) */
	for (i = 0; i < 3; i++) {
		int64_t lo = i > 0 ? c1[i - 1] : 0, hi = i < 2 ? c1[i] : L1;
		off[0][i][0] = 0;
		off[0][i][1] = lo;
		shape[0][i][0] = L0;
		shape[0][i][1] = hi - lo;
	}
	for (i = 0; i < 2; i++) {
		int64_t lo = i > 0 ? c0[0] : 0, hi = i < 1 ? c0[0] : L0;
		off[1][i][0] = lo;
		off[1][i][1] = 0;
		shape[1][i][0] = hi - lo;
		shape[1][i][1] = L1;
	}
	for (a = 0; a < 2; a++) {
		float *src[3];

		for (i = 0; i < n[a]; i++) {
			src[i] = malloc((size_t)(shape[a][i][0] *
			    shape[a][i][1]) * sizeof *src[i]);
			assert_non_null(src[i]);
			for (x = 0; x < shape[a][i][0]; x++)
				for (y = 0; y < shape[a][i][1]; y++)
					src[i][x * shape[a][i][1] + y] =
					    g[(off[a][i][0] + x) * L1 +
					    off[a][i][1] + y];
		}
		for (b = 0; b < 2; b++)
			for (k = 0; k < n[b]; k++) {
				const int64_t *to = off[b][k], *ts = shape[b][k];
				size_t cnt = (size_t)(ts[0] * ts[1]);
				/* one float past a 64-byte boundary */
				size_t bsz = ((cnt + 16) * sizeof(float) + 63) /
				    64 * 64;
				float *buf = aligned_alloc(64, bsz), *dst;
				int64_t covered = 0;

				assert_non_null(buf);
				dst = buf + 1;
				memset(buf, 0xab, bsz);
				for (i = 0; i < n[a]; i++) {
					int64_t ro[2], rs[2], v;

					v = piece_intersect(2, off[a][i],
					    shape[a][i], to, ts, ro, rs);
					if (v == 0)
						continue;
					covered += v;
					piece_copy(2, ro, rs, src[i], CKPT_F32,
					    off[a][i], shape[a][i], dst,
					    CKPT_F32, to, ts);
				}
				assert_int_equal(covered, (int64_t)cnt);
				for (x = 0; x < ts[0]; x++)
					for (y = 0; y < ts[1]; y++)
						assert_true(dst[x * ts[1] + y] ==
						    g[(to[0] + x) * L1 + to[1] + y]);
				/* nothing written around the box */
				assert_true(((unsigned char *)buf)[0] == 0xab);
				assert_true(((unsigned char *)(dst + cnt))[0] ==
				    0xab);
				free(buf);
			}
		for (i = 0; i < n[a]; i++)
			free(src[i]);
	}
	free(g);
}

static void
test_intersect(void **state)
{
	const int64_t ao[2] = { 0, 0 }, as[2] = { 4, 4 };
	const int64_t bo[2] = { 4, 0 }, bs[2] = { 2, 4 };
	const int64_t co[2] = { 3, 3 }, cs[2] = { 5, 5 };
	int64_t ro[2], rs[2];
	const int64_t g[2] = { 8, 8 };

	(void)state;
	assert_int_equal(piece_intersect(2, ao, as, bo, bs, ro, rs), 0);
	assert_int_equal(piece_intersect(2, ao, as, co, cs, ro, rs), 1);
	assert_int_equal(ro[0], 3);
	assert_int_equal(rs[1], 1);
	assert_int_equal(piece_check(2, g, co, cs), 0);
	assert_int_equal(piece_check(2, g, bo, cs), CKPT_EINVAL);
}

static void
test_tree_pieces(void **state)
{
	const int64_t gs[2] = { 4, 6 };
	const int64_t o0[2] = { 0, 0 }, s0[2] = { 2, 6 };
	const int64_t o1[2] = { 2, 0 }, s1[2] = { 2, 6 };
	const int64_t o2[2] = { 1, 0 }, s2[2] = { 2, 6 };   /* overlaps both */
	const int64_t o3[2] = { 3, 0 };                      /* sticks out */
	const int64_t gbad[2] = { 4, 7 };
	float buf[12] = { 0 };
	ckpt_tree *t = ckpt_tree_new();
	ckpt_leaf lf;
	int64_t one = 1;

	(void)state;
	assert_int_equal(ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, o0, s0,
	    buf, sizeof buf), 0);
	assert_int_equal(ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, o2, s2,
	    buf, sizeof buf), CKPT_EMISMATCH);
	assert_int_equal(ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, o3, s1,
	    buf, sizeof buf), CKPT_EINVAL);
	assert_int_equal(ckpt_tree_add_piece(t, "w", CKPT_F64, 2, gs, o1, s1,
	    buf, 96), CKPT_EMISMATCH);
	assert_int_equal(ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gbad, o1, s1,
	    buf, sizeof buf), CKPT_EMISMATCH);
	assert_int_equal(ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, o1, s1,
	    buf, 4), CKPT_EINVAL);                       /* nbytes */
	assert_int_equal(ckpt_tree_add_piece(t, "w", CKPT_F32, 0, gs, o1, s1,
	    buf, 4), CKPT_EINVAL);                       /* 0-d */
	assert_int_equal(ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, o1, s1,
	    buf, sizeof buf), 0);
	/* a whole array where pieces are, and the reverse */
	assert_int_equal(ckpt_tree_add_array(t, "w", CKPT_F32, 1, &one, buf, 4),
	    CKPT_EINVAL);
	assert_int_equal(ckpt_tree_add_array(t, "v", CKPT_F32, 1, &one, buf, 4),
	    0);
	assert_int_equal(ckpt_tree_add_piece(t, "v", CKPT_F32, 2, gs, o1, s1,
	    buf, sizeof buf), CKPT_EINVAL);
	assert_int_equal(ckpt_tree_nleaves(t), 3);
	assert_int_equal(ckpt_tree_find(t, "w"), 0);
	assert_int_equal(ckpt_tree_leaf(t, 1, &lf), 0);
	assert_string_equal(lf.path_str, "w");
	assert_non_null(lf.global_shape);
	assert_int_equal(lf.global_shape[1], 6);
	assert_int_equal(lf.offsets[0], 2);
	assert_int_equal(lf.shape[0], 2);
	assert_int_equal(ckpt_tree_leaf(t, 2, &lf), 0);
	assert_null(lf.global_shape);
	assert_null(lf.offsets);
	/* piece targets follow the same rules */
	assert_int_equal(ckpt_tree_add_piece_target(t, "x", CKPT_F32, 2, gs, o0,
	    s0, NULL, 0), 0);
	assert_int_equal(ckpt_tree_add_piece_target(t, "x", CKPT_F32, 2, gs, o2,
	    s2, NULL, 0), CKPT_EMISMATCH);
	ckpt_tree_free(t);
}

static void
test_process_options(void **state)
{
	ckpt_options *o = ckpt_options_new();
	uint32_t act[3] = { 4, 6, 9 }, dup[2] = { 1, 1 };
	char err[256];

	(void)state;
	assert_int_equal(opts_check_processes(&o->pb, err, sizeof err), 0);
	assert_int_equal(ckpt_options_set_process_count(o, 0), CKPT_EINVAL);
	assert_int_equal(ckpt_options_set_process_count(o, 4), 0);
	assert_int_equal(ckpt_options_set_process_index(o, 4), 0);
	assert_int_equal(opts_check_processes(&o->pb, err, sizeof err),
	    CKPT_EINVAL);
	assert_non_null(strstr(err, "process_index 4"));
	assert_int_equal(ckpt_options_set_process_index(o, 3), 0);
	assert_int_equal(opts_check_processes(&o->pb, err, sizeof err), 0);
	assert_int_equal(ckpt_options_set_primary_host(o, 7), 0);
	assert_int_equal(opts_check_processes(&o->pb, err, sizeof err),
	    CKPT_EINVAL);
	assert_non_null(strstr(err, "primary_host 7"));
	assert_int_equal(ckpt_options_set_active_processes(o, dup, 2),
	    CKPT_EINVAL);
	assert_int_equal(ckpt_options_set_active_processes(o, act, 3), 0);
	assert_int_equal(ckpt_options_set_process_count(o, 3), 0);
	assert_int_equal(ckpt_options_set_process_index(o, 6), 0);
	assert_int_equal(ckpt_options_set_primary_host(o, 4), 0);
	assert_int_equal(opts_check_processes(&o->pb, err, sizeof err), 0);
	assert_int_equal(ckpt_options_set_process_index(o, 5), 0);
	assert_int_equal(opts_check_processes(&o->pb, err, sizeof err),
	    CKPT_EINVAL);
	assert_int_equal(ckpt_options_set_job(o, "run-1"), 0);
	assert_string_equal(o->pb.job, "run-1");
	ckpt_options_free(o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copy_layouts),
		cmocka_unit_test(test_copy_long_rows),
		cmocka_unit_test(test_intersect),
		cmocka_unit_test(test_tree_pieces),
		cmocka_unit_test(test_process_options),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
