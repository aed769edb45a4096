/*
 * demo.c - save a few training steps through ckptd and restore the latest.
 *
 *     ckpt-demo ROOT            (socket: $CKPTD_SOCKET or the default)
 *
 * Keeps the 3 most recent steps (max_to_keep=3) and records a "loss"
 * metric per step.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ckpt/ckpt.h>

#define IN 4
#define OUT 8

static int fail(const char *what, int r, const char *msg)
{
	fprintf(stderr, "ckpt-demo: %s: %s: %s\n", what, ckpt_strerror(r), msg);
	return 1;
}

int main(int argc, char **argv)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o;
	float kernel[IN * OUT], bias[OUT];
	int64_t kshape[2] = { IN, OUT }, bshape[1] = { OUT };
	uint64_t *steps = NULL, step;
	size_t n = 0, i;
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	int64_t latest;
	char metrics[64];
	int r, saved;

	if (argc != 2) {
		fprintf(stderr, "usage: ckpt-demo ROOT\n");
		return 2;
	}
	if ((r = ckpt_connect(NULL, &c)) != 0)
		return fail("connect", r, "is ckptd running? (CKPTD_SOCKET)");
	o = ckpt_options_new();
	ckpt_options_set_max_to_keep(o, 3);
	ckpt_options_set_best(o, "loss", 1);
	r = ckpt_manager_open(c, argv[1], o, &m);
	ckpt_options_free(o);
	if (r != 0)
		return fail("open", r, ckpt_client_errmsg(c));
	printf("checkpoint root: %s\n", ckpt_manager_directory(m));

	for (step = 0; step < 5; step++) {
		ckpt_tree *tr = ckpt_tree_new();
		ckpt_save_args *a = ckpt_save_args_new();

		/* "training": the weights drift a little every step */
		for (i = 0; i < IN * OUT; i++)
			kernel[i] = (float)sin((double)(i + 1) * 0.1) + 0.01f *
			    (float)step;
		for (i = 0; i < OUT; i++)
			bias[i] = 0.5f * (float)step;
		ckpt_tree_add_array(tr, "params/dense/kernel", CKPT_F32, 2, kshape,
		    kernel, sizeof kernel);
		ckpt_tree_add_array(tr, "params/dense/bias", CKPT_F32, 1, bshape,
		    bias, sizeof bias);
		ckpt_tree_add_int(tr, "step", (int64_t)step);
		ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, tr);
		snprintf(metrics, sizeof metrics, "{\"loss\": %.3f}",
		    1.0 / (double)(step + 1));
		ckpt_save_args_set_metrics(a, metrics);
		r = ckpt_save(m, step, a, &saved);
		ckpt_save_args_free(a);
		ckpt_tree_free(tr);
		if (r != 0)
			return fail("save", r, ckpt_manager_errmsg(m));
		printf("step %llu: handed to ckptd (%s)\n",
		    (unsigned long long)step, saved ? "saved" : "skipped");
	}
	if ((r = ckpt_wait_until_finished(m)) != 0)
		return fail("wait", r, ckpt_manager_errmsg(m));

	if ((r = ckpt_all_steps(m, &steps, &n)) != 0)
		return fail("all_steps", r, ckpt_manager_errmsg(m));
	printf("steps kept (max_to_keep=3):");
	for (i = 0; i < n; i++)
		printf(" %llu", (unsigned long long)steps[i]);
	printf("\n");
	free(steps);
	ckpt_latest_step(m, &latest);
	printf("latest step: %lld\n", (long long)latest);
	ckpt_best_step(m, &latest);
	printf("best step (min loss): %lld\n", (long long)latest);

	if ((r = ckpt_restore(m, -1, NULL, &res)) != 0)
		return fail("restore", r, ckpt_manager_errmsg(m));
	t = ckpt_restored_item_tree(res, 0);
	printf("restored step %llu from %s:\n",
	    (unsigned long long)ckpt_restored_step(res),
	    ckpt_restored_directory(res));
	for (i = 0; t && i < ckpt_tree_nleaves(t); i++) {
		ckpt_tree_leaf(t, i, &lf);
		if (lf.kind == CKPT_LEAF_ARRAY) {
			const float *f = lf.data;
			char shape[64] = "";
			double sum = 0;
			size_t k, len = 0;
			int dim;

			for (k = 0; k < lf.nbytes / sizeof(float); k++)
				sum += f[k];
			for (dim = 0; dim < lf.ndim && len < sizeof shape; dim++)
				len += (size_t)snprintf(shape + len, sizeof shape - len,
				    "%s%lld", dim ? ", " : "", (long long)lf.shape[dim]);
			printf("  %-22s %s (%s) sum %.4f\n", lf.path_str,
			    ckpt_dtype_name(lf.dtype), shape, sum);
		} else if (lf.kind == CKPT_LEAF_INT) {
			printf("  %-22s int %lld\n", lf.path_str, (long long)lf.i);
		}
	}
	ckpt_restored_free(res);
	r = ckpt_manager_close(m);
	ckpt_disconnect(c);
	return r == 0 ? 0 : 1;
}
