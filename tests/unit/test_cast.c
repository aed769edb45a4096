/*
 * test_cast.c - libckpt's pure parts: dtype casts (F16/BF16 exhaustive
 * round trips, saturation, wrapping), tree paths, options validation.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static void
test_f16_roundtrip(void **state)
{
	unsigned h;

	(void)state;
	for (h = 0; h < 65536; h++) {
		float f = f16_to_f32((uint16_t)h);
		uint16_t back = f32_to_f16(f);
		if (isnan(f)) {
			assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
			continue;
		}
		assert_int_equal(back, h);
	}
	assert_int_equal(f32_to_f16(65504.0f), 0x7bff);
	assert_int_equal(f32_to_f16(65520.0f), 0x7c00);        /* rounds to inf */
	assert_int_equal(f32_to_f16(5.9604645e-8f), 1);         /* min subnormal */
	assert_int_equal(f32_to_f16(2.9802322e-8f), 0);         /* tie -> even */
	assert_int_equal(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie -> even */
	assert_int_equal(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
	assert_int_equal(f32_to_f16(-2.0f), 0xc000);
}

static void
test_bf16_roundtrip(void **state)
{
	unsigned h;

	(void)state;
	for (h = 0; h < 65536; h++) {
		float f = bf16_to_f32((uint16_t)h);
		uint16_t back = f32_to_bf16(f);
		if (isnan(f)) {
			assert_true(isnan(bf16_to_f32(back)));
			continue;
		}
		assert_int_equal(back, h);
	}
	assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
	assert_true(bf16_to_f32(0x4049) == 3.140625f);
	/* 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1) */
	assert_int_equal(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
}

static void
test_casts(void **state)
{
	float fs[5] = { 1.5f, -2.25f, 3e9f, NAN, -7.9f }, back[2];
	int32_t is[5];
	uint8_t us[5], bo[2], e4 = 0x38;
	double ds[5];
	uint16_t hs[5];
	int64_t big[2] = { -1, 1LL << 40 };
	uint64_t ub[2], u64max = UINT64_MAX;
	int16_t sh[2];

	(void)state;
	assert_int_equal(dtype_cast(CKPT_F32, fs, CKPT_I32, is, 5), 0);
	assert_int_equal(is[0], 1);
	assert_int_equal(is[1], -2);
	assert_int_equal(is[2], INT32_MAX);    /* saturates */
	assert_int_equal(is[3], 0);            /* NaN */
	assert_int_equal(is[4], -7);           /* truncates */
	assert_int_equal(dtype_cast(CKPT_F32, fs, CKPT_U8, us, 5), 0);
	assert_int_equal(us[1], 0);
	assert_int_equal(us[2], 255);
	assert_int_equal(dtype_cast(CKPT_F32, fs, CKPT_F64, ds, 2), 0);
	assert_true(ds[1] == -2.25);
	assert_int_equal(dtype_cast(CKPT_F64, ds, CKPT_F16, hs, 2), 0);
	assert_int_equal(dtype_cast(CKPT_F16, hs, CKPT_F32, back, 2), 0);
	assert_true(back[0] == 1.5f && back[1] == -2.25f);
	assert_int_equal(dtype_cast(CKPT_F32, fs, CKPT_BF16, hs, 2), 0);
	assert_int_equal(dtype_cast(CKPT_BF16, hs, CKPT_F64, ds, 2), 0);
	assert_true(ds[0] == 1.5 && ds[1] == -2.25);
	assert_int_equal(dtype_cast(CKPT_I64, big, CKPT_U64, ub, 2), 0);
	assert_true(ub[0] == UINT64_MAX);
	assert_int_equal(dtype_cast(CKPT_I64, big, CKPT_I16, sh, 2), 0);
	assert_int_equal(sh[0], -1);
	assert_int_equal(sh[1], 0);            /* wraps like C */
	assert_int_equal(dtype_cast(CKPT_I64, big, CKPT_BOOL, bo, 2), 0);
	assert_true(bo[0] == 1 && bo[1] == 1);
	assert_int_equal(dtype_cast(CKPT_U64, &u64max, CKPT_F64, ds, 1), 0);
	assert_true(ds[0] == 18446744073709551616.0);
	assert_int_equal(dtype_cast(CKPT_F8_E4M3, &e4, CKPT_F32, back, 1),
	    CKPT_EDTYPE);
	assert_int_equal(dtype_cast(CKPT_F8_E4M3, &e4, CKPT_F8_E4M3, us, 1), 0);
	assert_int_equal(us[0], 0x38);
	assert_int_equal(ckpt_dtype_from_name("BF16"), CKPT_BF16);
	assert_int_equal(ckpt_dtype_from_name("nope"), CKPT_DTYPE_INVALID);
	assert_null(ckpt_dtype_name((ckpt_dtype)99));
	assert_int_equal(ckpt_dtype_size(CKPT_F64), 8);
}

static void
test_tree_paths(void **state)
{
	ckpt_tree *t = ckpt_tree_new();
	float w[6] = { 0 };
	int64_t shape[2] = { 2, 3 }, zero[1] = { 0 };
	ckpt_key k[3] = { { CKPT_KEY_DICT, "opt", 0 }, { CKPT_KEY_LIST, NULL, 0 },
	    { CKPT_KEY_TUPLE, NULL, 1 } };
	ckpt_leaf l;

	(void)state;
	assert_int_equal(ckpt_tree_add_array(t, "params/w", CKPT_F32, 2, shape,
	    w, sizeof w), 0);
	assert_int_equal(ckpt_tree_add_array(t, "params/w", CKPT_F32, 2, shape,
	    w, sizeof w), CKPT_EINVAL);                      /* duplicate */
	assert_int_equal(ckpt_tree_add_int(t, "params", 1), CKPT_EINVAL);
	assert_int_equal(ckpt_tree_add_int(t, "params/w/x", 1), CKPT_EINVAL);
	assert_int_equal(ckpt_tree_add_int(t, "/a", 1), CKPT_EINVAL);
	assert_int_equal(ckpt_tree_add_int(t, "a//b", 1), CKPT_EINVAL);
	assert_int_equal(ckpt_tree_add_int(t, "a/", 1), CKPT_EINVAL);
	assert_int_equal(ckpt_tree_add_array(t, "b", CKPT_F32, 2, shape, w, 20),
	    CKPT_EINVAL);                                    /* nbytes */
	assert_int_equal(ckpt_tree_add_array(t, "b", (ckpt_dtype)99, 2, shape,
	    w, 24), CKPT_EDTYPE);
	assert_int_equal(ckpt_tree_add_int(t, "step", 100), 0);
	assert_int_equal(ckpt_tree_set_tag(t, "np.int64"), 0);
	assert_int_equal(ckpt_tree_add_scalar_k(t, k, 3, CKPT_LEAF_FLOAT, 0, 2.5,
	    0, NULL), 0);
	assert_int_equal(ckpt_tree_add_scalar_k(t, k, 2, CKPT_LEAF_INT, 0, 0, 0,
	    NULL), CKPT_EINVAL);
	assert_int_equal(ckpt_tree_add_array(t, "empty", CKPT_F32, 1, zero, NULL,
	    0), 0);
	assert_int_equal(ckpt_tree_nleaves(t), 4);
	assert_int_equal(ckpt_tree_find(t, "opt/0/1"), 2);
	assert_int_equal(ckpt_tree_find(t, "nope"), -1);
	assert_int_equal(ckpt_tree_leaf(t, 1, &l), 0);
	assert_string_equal(l.tag, "np.int64");
	assert_int_equal(ckpt_tree_leaf(t, 2, &l), 0);
	assert_int_equal(l.depth, 3);
	assert_int_equal(l.path[1].kind, CKPT_KEY_LIST);
	assert_string_equal(l.path_str, "opt/0/1");
	assert_int_equal(ckpt_tree_leaf(t, 9, &l), CKPT_EINVAL);
	ckpt_tree_free(t);
}

static void
test_options(void **state)
{
	ckpt_options *o = ckpt_options_new();
	const char *names[] = { "params", "params" };
	const char *nonames[] = { "params", NULL };
	int root, child;

	(void)state;
	assert_int_equal(ckpt_options_set_max_to_keep(o, -1), CKPT_EINVAL);
	assert_int_equal(ckpt_options_set_max_to_keep(o, 0), 0);
	assert_int_equal(ckpt_options_set_save_interval_steps(o, 0), 0);
	assert_int_equal(ckpt_options_set_step_prefix(o, "a/b"), CKPT_EINVAL);
	assert_int_equal(ckpt_options_set_step_prefix(o, "ckpt"), 0);
	assert_int_equal(ckpt_options_set_root_metadata(o, "{bad"), CKPT_EINVAL);
	/* Names go to the daemon as given (it refuses the duplicate when the
	 * manager opens); only a NULL name is this API's own error. */
	assert_int_equal(ckpt_options_set_item_names(o, names, 2), 0);
	assert_int_equal(ckpt_options_set_item_names(o, names, 1), 0);
	assert_int_equal(ckpt_options_set_item_names(o, nonames, 2),
	    CKPT_EINVAL);
	root = ckpt_options_preservation_add(o, CKPT_PRESERVE_ANY, 0, 0, NULL, 0,
	    NULL, 0, 1);
	child = ckpt_options_preservation_add(o, CKPT_PRESERVE_LATEST_N, 2, 0,
	    NULL, 0, NULL, 0, 1);
	assert_int_equal(root, 0);
	assert_int_equal(child, 1);
	assert_int_equal(ckpt_options_preservation_child(o, root, child), 0);
	assert_int_equal(ckpt_options_preservation_child(o, child, root),
	    CKPT_EINVAL);
	ckpt_options_free(o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_f16_roundtrip),
		cmocka_unit_test(test_bf16_roundtrip),
		cmocka_unit_test(test_casts),
		cmocka_unit_test(test_tree_paths),
		cmocka_unit_test(test_options),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
