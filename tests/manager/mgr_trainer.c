/*
 * mgr_trainer.c - a tiny trainer for the CLI tests.
 *
 *   mgr_trainer [--bytes N] [--delay-ms MS] [--max-to-keep K] ROOT STEP...
 *
 * Connects to $CKPTD_SOCKET, opens ROOT and, for each STEP, sleeps MS,
 * saves {"w": F32[N/4], "step": STEP} with metrics {"loss": 1/(STEP+1)}
 * and waits until it is durable. Prints "committed STEP" or
 * "failed STEP: <error>" per step; exits 0 when every step committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ckpt/ckpt.h>

static int
save_one(ckpt_manager *m, uint64_t step, size_t bytes)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	size_t n = bytes / sizeof(float), i;
	float *w = calloc(n ? n : 1, sizeof(float));
	int64_t shape[1] = { (int64_t)n };
	char metrics[64];
	int r = CKPT_ENOMEM, saved = 0;

	if (t == NULL || a == NULL || w == NULL)
		goto out;
	for (i = 0; i < n && i < 1024; i++)
		w[i] = (float)step + (float)i;
	snprintf(metrics, sizeof metrics, "{\"loss\": %.6f}",
	    1.0 / ((double)step + 1.0));
	if ((r = ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, w,
	    n * sizeof(float))) != 0 ||
	    (r = ckpt_tree_add_int(t, "step", (int64_t)step)) != 0 ||
	    (r = ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t)) != 0 ||
	    (r = ckpt_save_args_set_metrics(a, metrics)) != 0 ||
	    (r = ckpt_save_args_set_force(a, 1)) != 0)
		goto out;
	if ((r = ckpt_save(m, step, a, &saved)) != 0)
		goto out;
	r = ckpt_wait_until_finished(m);
out:
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	free(w);
	return r;
}

int
main(int argc, char **argv)
{
	size_t bytes = 4096;
	long delay_ms = 0, keep = -1;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o;
	int i, r, failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (i + 1 >= argc)
			break;
		if (strcmp(argv[i], "--bytes") == 0)
			bytes = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--delay-ms") == 0)
			delay_ms = strtol(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--max-to-keep") == 0)
			keep = strtol(argv[i + 1], NULL, 10);
		else {
			fprintf(stderr, "mgr_trainer: unknown option %s\n",
			    argv[i]);
			return 2;
		}
	}
	if (i + 1 >= argc) {
		fprintf(stderr, "usage: mgr_trainer [--bytes N] [--delay-ms MS] "
		    "[--max-to-keep K] ROOT STEP...\n");
		return 2;
	}
	if ((r = ckpt_connect(NULL, &c)) != 0) {
		fprintf(stderr, "mgr_trainer: connect: %s\n", ckpt_strerror(r));
		return 1;
	}
	o = ckpt_options_new();
	if (keep >= 0)
		ckpt_options_set_max_to_keep(o, keep);
	if ((r = ckpt_manager_open(c, argv[i], o, &m)) != 0) {
		fprintf(stderr, "mgr_trainer: open %s: %s: %s\n", argv[i],
		    ckpt_strerror(r), ckpt_client_errmsg(c));
		ckpt_options_free(o);
		ckpt_disconnect(c);
		return 1;
	}
	ckpt_options_free(o);
	for (i++; i < argc; i++) {
		uint64_t step = strtoull(argv[i], NULL, 10);

		if (delay_ms > 0) {
			struct timespec ts = { delay_ms / 1000,
			    (delay_ms % 1000) * 1000000L };
			nanosleep(&ts, NULL);
		}
		if ((r = save_one(m, step, bytes)) == 0) {
			printf("committed %llu\n", (unsigned long long)step);
		} else {
			printf("failed %llu: %s: %s\n", (unsigned long long)step,
			    ckpt_strerror(r), ckpt_manager_errmsg(m));
			failed = 1;
			ckpt_check_for_errors(m);
		}
	}
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return failed;
}
