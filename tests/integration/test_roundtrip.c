/*
 * test_roundtrip.c - every dtype, a 0-d array, empty arrays, scalar
 * leaves and a 256 MiB array survive save -> restore byte for byte; the
 * step is then read by an independent reader (read_step.py: numpy only,
 * no ckptd code) and checked against the same expected arrays.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "harness.h"

#define BIG_ROWS 64
#define BIG_COLS (1024 * 1024)    /* 64 x 1Mi float32 = 256 MiB */

struct arr {
	char path[64];
	ckpt_dtype dt;
	int ndim;
	int64_t shape[4];
	void *data;
	size_t nbytes;
};

static struct hx_daemon d;
static struct arr arrs[32];
static size_t narrs;

static struct arr *arr_add(const char *path, ckpt_dtype dt, int ndim,
    const int64_t *shape, uint64_t seed)
{
	struct arr *a = &arrs[narrs++];
	size_t n = ckpt_dtype_size(dt), i;
	int k;

	snprintf(a->path, sizeof a->path, "%s", path);
	a->dt = dt;
	a->ndim = ndim;
	for (k = 0; k < ndim; k++) {
		a->shape[k] = shape[k];
		n *= (size_t)shape[k];
	}
	a->nbytes = n;
	a->data = n ? malloc(n) : NULL;
	if (n && !a->data)
		bail_out("out of memory");
	if (n)
		hx_fill(a->data, n, seed);
	if (dt == CKPT_BOOL)
		for (i = 0; i < n; i++)
			((unsigned char *)a->data)[i] &= 1;
	return a;
}

static void build(void)
{
	static const ckpt_dtype all[] = { CKPT_BOOL, CKPT_U8, CKPT_I8,
	    CKPT_U16, CKPT_I16, CKPT_F16, CKPT_BF16, CKPT_U32, CKPT_I32,
	    CKPT_F32, CKPT_U64, CKPT_I64, CKPT_F64, CKPT_F8_E4M3,
	    CKPT_F8_E5M2 };
	int64_t s35[2] = { 3, 5 }, s0[1] = { 0 }, s302[3] = { 3, 0, 2 };
	int64_t sbig[2] = { BIG_ROWS, BIG_COLS }, s7[1] = { 7 };
	char path[64];
	size_t i;

	for (i = 0; i < sizeof all / sizeof all[0]; i++) {
		snprintf(path, sizeof path, "dtypes/%s",
		    ckpt_dtype_name(all[i]));
		arr_add(path, all[i], 2, s35, 100 + i);
	}
	arr_add("zero_d", CKPT_F64, 0, NULL, 7);
	arr_add("empty/a", CKPT_F32, 1, s0, 0);
	arr_add("empty/b", CKPT_I64, 3, s302, 0);
	arr_add("odd", CKPT_U8, 1, s7, 9);        /* forces padding after it */
	arr_add("big", CKPT_F32, 2, sbig, 42);
}

static int leaf_matches(const ckpt_tree *t, const struct arr *a)
{
	ckpt_leaf lf;
	long i = ckpt_tree_find(t, a->path);
	int k;

	if (i < 0) {
		diag("  %s: missing", a->path);
		return 0;
	}
	ckpt_tree_leaf(t, (size_t)i, &lf);
	if (lf.kind != CKPT_LEAF_ARRAY || lf.dtype != a->dt ||
	    lf.ndim != a->ndim || lf.nbytes != a->nbytes) {
		diag("  %s: kind %d dtype %d ndim %d nbytes %zu", a->path,
		    lf.kind, lf.dtype, lf.ndim, lf.nbytes);
		return 0;
	}
	for (k = 0; k < a->ndim; k++)
		if (lf.shape[k] != a->shape[k]) {
			diag("  %s: dim %d is %lld", a->path, k,
			    (long long)lf.shape[k]);
			return 0;
		}
	if (a->nbytes && memcmp(lf.data, a->data, a->nbytes) != 0) {
		diag("  %s: bytes differ", a->path);
		return 0;
	}
	return 1;
}

/* Write the expected arrays as raw files + manifest.json for read_step.py. */
static int write_expected(const char *dir)
{
	json_t *man = json_array(), *e, *shape;
	char path[HX_PATH + 32];
	size_t i;
	int k, r;
	FILE *f;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -1;
	for (i = 0; i < narrs; i++) {
		shape = json_array();
		for (k = 0; k < arrs[i].ndim; k++)
			json_array_append_new(shape,
			    json_integer(arrs[i].shape[k]));
		snprintf(path, sizeof path, "%s/%zu.bin", dir, i);
		f = fopen(path, "we");
		if (!f)
			return -1;
		if (arrs[i].nbytes &&
		    fwrite(arrs[i].data, 1, arrs[i].nbytes, f) != arrs[i].nbytes) {
			fclose(f);
			return -1;
		}
		fclose(f);
		e = json_pack("{s:s, s:s, s:o, s:s}", "path", arrs[i].path,
		    "dtype", ckpt_dtype_name(arrs[i].dt), "shape", shape,
		    "bin", path);
		json_array_append_new(man, e);
	}
	json_array_append_new(man, json_pack("{s:s, s:I}", "path",
	    "scalars/i", "int", (json_int_t)-7));
	json_array_append_new(man, json_pack("{s:s, s:f}", "path",
	    "scalars/f", "float", 2.5));
	json_array_append_new(man, json_pack("{s:s, s:b}", "path",
	    "scalars/b", "bool", 1));
	json_array_append_new(man, json_pack("{s:s, s:s}", "path",
	    "scalars/s", "str", "h\xc3\xa9llo"));
	json_array_append_new(man, json_pack("{s:s, s:n}", "path",
	    "scalars/none", "none"));
	snprintf(path, sizeof path, "%s/manifest.json", dir);
	r = json_dump_file(man, path, JSON_INDENT(1));
	json_decref(man);
	return r;
}

int main(void)
{
	char root[HX_PATH], step_dir[HX_PATH], exp_dir[HX_PATH];
	char script[HX_PATH], out[16384], *problems = NULL;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t;
	ckpt_save_args *sa;
	ckpt_restore_args *ra;
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	size_t i;
	long li;
	int r, saved = 0, all;
	int64_t t0;

	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	if (hx_connect(&d, &c) != 0)
		bail_out("cannot connect");
	build();

	hx_path(&d, root, "rt");
	r = ckpt_manager_open(c, root, NULL, &m);
	if (!ok_call(r, c, "open manager"))
		bail_out("no manager");

	t = ckpt_tree_new();
	for (i = 0; i < narrs; i++) {
		r = ckpt_tree_add_array(t, arrs[i].path, arrs[i].dt,
		    arrs[i].ndim, arrs[i].shape, arrs[i].data, arrs[i].nbytes);
		if (r != 0)
			is_int(r, 0, "add %s", arrs[i].path);
	}
	ok(ckpt_tree_add_int(t, "scalars/i", -7) == 0 &&
	    ckpt_tree_add_float(t, "scalars/f", 2.5) == 0 &&
	    ckpt_tree_add_bool(t, "scalars/b", 1) == 0 &&
	    ckpt_tree_add_str(t, "scalars/s", "h\xc3\xa9llo") == 0 &&
	    ckpt_tree_add_none(t, "scalars/none") == 0,
	    "tree of %zu arrays and 5 scalars built", narrs);

	sa = ckpt_save_args_new();
	ckpt_save_args_add_tree(sa, NULL, CKPT_HANDLER_STANDARD, t);
	t0 = hx_now_ms();
	r = ckpt_save(m, 1, sa, &saved);
	ok_call(r, c, "save step 1 (%zu MiB)", arrs[narrs - 1].nbytes >> 20);
	diag("save returned after %lld ms", (long long)(hx_now_ms() - t0));
	ok_call(ckpt_wait_until_finished(m), c, "wait_until_finished");
	diag("durable after %lld ms", (long long)(hx_now_ms() - t0));
	ckpt_save_args_free(sa);

	/* Restore into library-allocated buffers. */
	r = ckpt_restore(m, 1, NULL, &res);
	if (ok_call(r, c, "restore step 1")) {
		rt = ckpt_restored_item_tree(res, 0);
		all = rt != NULL;
		for (i = 0; rt && i < narrs; i++)
			if (!ok(leaf_matches(rt, &arrs[i]), "%s %s round-trips",
			    arrs[i].path, ckpt_dtype_name(arrs[i].dt)))
				all = 0;
		ok(all, "every array identical after restore");
		if (rt) {
			li = ckpt_tree_find(rt, "scalars/i");
			ok(li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
			    lf.kind == CKPT_LEAF_INT && lf.i == -7, "int scalar");
			li = ckpt_tree_find(rt, "scalars/f");
			ok(li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
			    lf.kind == CKPT_LEAF_FLOAT && lf.f == 2.5,
			    "float scalar");
			li = ckpt_tree_find(rt, "scalars/b");
			ok(li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
			    lf.kind == CKPT_LEAF_BOOL && lf.b == 1, "bool scalar");
			li = ckpt_tree_find(rt, "scalars/s");
			ok(li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
			    lf.kind == CKPT_LEAF_STR && lf.s &&
			    strcmp(lf.s, "h\xc3\xa9llo") == 0, "str scalar");
			li = ckpt_tree_find(rt, "scalars/none");
			ok(li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
			    lf.kind == CKPT_LEAF_NONE, "None leaf");
		}
		snprintf(step_dir, sizeof step_dir, "%s",
		    ckpt_restored_directory(res));
		ckpt_restored_free(res);
	} else {
		hx_path(&d, step_dir, "rt/1");
	}

	/* Zero-copy restore of the big array into views. */
	ra = ckpt_restore_args_new();
	ckpt_restore_args_set_zero_copy(ra, 1);
	res = NULL;
	r = ckpt_restore(m, 1, ra, &res);
	if (ok_call(r, c, "zero-copy restore")) {
		rt = ckpt_restored_item_tree(res, 0);
		ok(rt && leaf_matches(rt, &arrs[narrs - 1]),
		    "big array identical through a zero-copy view");
		ckpt_restored_free(res);
	}
	ckpt_restore_args_free(ra);

	/* Restore into a caller buffer through a target tree. */
	{
		struct arr *a = &arrs[narrs - 1];
		void *buf = malloc(a->nbytes);
		ckpt_tree *tg = ckpt_tree_new();

		ckpt_tree_add_target(tg, "big", CKPT_F32, 2, a->shape, buf,
		    a->nbytes);
		ra = ckpt_restore_args_new();
		ckpt_restore_args_add_item(ra, "default", tg, 1);
		res = NULL;
		r = ckpt_restore(m, 1, ra, &res);
		if (ok_call(r, c, "partial restore of 'big' into a caller buffer")) {
			ok(buf && memcmp(buf, a->data, a->nbytes) == 0,
			    "caller buffer holds the big array");
			ckpt_restored_free(res);
		}
		ckpt_restore_args_free(ra);
		ckpt_tree_free(tg);
		free(buf);
	}

	r = ckpt_verify(m, 1, &problems);
	ok_call(r, c, "verify step 1");
	ok(problems && problems[0] == '\0', "verify reports no problem (%s)",
	    problems ? problems : "NULL");
	free(problems);

	/* The independent reader. */
	hx_path(&d, exp_dir, "expected");
	if (ok(write_expected(exp_dir) == 0, "expected arrays written")) {
		char item_dir[HX_PATH + 16];
		char *argv[] = { "/usr/bin/python3", script, item_dir, exp_dir,
		    NULL };

		snprintf(script, sizeof script, "%s/read_step.py", hx_srcdir());
		snprintf(item_dir, sizeof item_dir, "%s/default", step_dir);
		r = hx_run(argv, out, sizeof out, 300);
		is_int(r, 0, "read_step.py (numpy only) reads the step and "
		    "finds every array and scalar");
		diag("%s", out);
	}

	ckpt_tree_free(t);
	is_int(ckpt_manager_close(m), 0, "close manager");
	ckpt_disconnect(c);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	for (i = 0; i < narrs; i++)
		free(arrs[i].data);
	return done_testing();
}
