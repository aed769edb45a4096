/*
 * bench_tier.c - save -> durable of a step to an s3:// root kept in the
 * daemon's local tier, against the same save to a directory root on the
 * same disk, run in turn by one daemon (tests/ceph/rgw.sh for the store).
 * Not a test: it prints medians and their ratio (the issue: the same as
 * the filesystem figure), and how long the upload then took.
 *
 *   bench_tier [-s MiB] [-n runs] [-f files] [-c]
 *
 * -c (a control): the second root is another directory root instead.
 *
 * Each run saves step i of -s MiB in -f arrays to the directory root and
 * to the tiered root, in turn, the first of the two alternating
 * (ckpt_save to ckpt_wait_until_finished), waits
 * for the upload to end (ckpt_list_steps says "uploaded"), and deletes
 * both steps.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "s3peek.h"
#include "benchclock.h"
#include "cephbed.h"

#define BUCKET "ckpt-bench-tier"

static double
save_durable(ckpt_manager *m, uint64_t step, const char *data, int files,
    uint64_t per)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	char name[32];
	int f, saved = 0;
	double t0, t1;

	for (f = 0; f < files; f++) {
		int64_t n = (int64_t)per;

		snprintf(name, sizeof name, "a%d", f);
		ckpt_tree_add_array(t, name, CKPT_U8, 1, &n,
		    data + (uint64_t)f * per, per);
	}
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	t0 = benchclock_now();
	if (ckpt_save(m, step, a, &saved) != 0 ||
	    ckpt_wait_until_finished(m) != 0)
		bail_out("save: %s", ckpt_manager_errmsg(m));
	t1 = benchclock_now();
	ckpt_tree_free(t);
	ckpt_save_args_free(a);
	return t1 - t0;
}

static int
uploaded(ckpt_manager *m, uint64_t step)
{
	ckpt_step_info *v = NULL;
	size_t n = 0, i;
	int up = 0;

	if (ckpt_list_steps(m, &v, &n) != 0)
		return 0;
	for (i = 0; i < n; i++)
		if (v[i].step == step)
			up = strcmp(v[i].upload, "uploaded") == 0;
	free(v);
	return up;
}

/* Seconds until step is uploaded (0 for the control). */
static double
wait_uploaded(ckpt_manager *m, uint64_t step, int control)
{
	double t0 = benchclock_now();

	while (!control && !uploaded(m, step)) {
		if (benchclock_now() - t0 > 600)
			bail_out("step %" PRIu64 " not uploaded", step);
		hx_sleep_ms(20);
	}
	return benchclock_now() - t0;
}

int
main(int argc, char **argv)
{
	uint64_t size_mib = 256;
	int runs = 5, files = 4, opt, i, control = 0;
	struct cephbed bed;
	struct hx_daemon d;
	ckpt_client *c = NULL;
	ckpt_manager *mt = NULL, *mp = NULL;
	char tier[HX_PATH], dir[HX_PATH], root[256];
	double *tt, *tp, *tu, *ratio;

	while ((opt = getopt(argc, argv, "s:n:f:c")) != -1) {
		switch (opt) {
		case 'c': control = 1; break;
		case 's': size_mib = strtoull(optarg, NULL, 10); break;
		case 'n': runs = atoi(optarg); break;
		case 'f': files = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: bench_tier [-s MiB] [-n runs] "
			    "[-f files] [-c]\n");
			return 2;
		}
	}
	if (runs < 1 || runs > 100 || files < 1 || files > 64 ||
	    size_mib < (uint64_t)files)
		return 2;
	const uint64_t size = size_mib << 20, per = size / (uint64_t)files;
	if (getenv("CEPH_OSD_BYTES") == NULL)
		setenv("CEPH_OSD_BYTES", "10737418240", 1);
	if (cephbed_start(&bed) != 0 || s3peek_init(BUCKET) != 0)
		bail_out("the Ceph test bed did not start");
	hx_init(&d);
	hx_path(&d, tier, "tier");
	hx_path(&d, dir, "posix");
	d.extra[0] = "--s3-allow";
	d.extra[1] = "0:s3://" BUCKET;
	d.extra[2] = "--local-tier";
	d.extra[3] = tier;
	d.extra[4] = NULL;
	if (hx_start(&d) != 0 || hx_connect(&d, &c) != 0)
		bail_out("ckptd did not start");
	if (control)            /* two directory roots: the bench's own spread */
		hx_path(&d, root, "posix2");
	else
		snprintf(root, sizeof root, "s3://%s/run", BUCKET);
	if (ckpt_manager_open(c, root, NULL, &mt) != 0)
		bail_out("open %s: %s", root, ckpt_client_errmsg(c));
	if (ckpt_manager_open(c, dir, NULL, &mp) != 0)
		bail_out("open %s: %s", dir, ckpt_client_errmsg(c));

	char *data = malloc(size);
	if (data == NULL)
		bail_out("out of memory");
	cephbed_fill(data, 0, size, 5);
	tt = calloc((size_t)runs, sizeof *tt);
	tp = calloc((size_t)runs, sizeof *tp);
	tu = calloc((size_t)runs, sizeof *tu);
	ratio = calloc((size_t)runs, sizeof *ratio);
	for (i = 0; i < runs; i++) {
		/* Which goes first alternates: neither gets the other's
		 * writeback or warm caches every time; the directory root's
		 * save never runs during the upload. */
		if (i % 2 == 0)
			tp[i] = save_durable(mp, (uint64_t)i, data, files, per);
		tt[i] = save_durable(mt, (uint64_t)i, data, files, per);
		tu[i] = wait_uploaded(mt, (uint64_t)i, control);
		if (i % 2 == 1)
			tp[i] = save_durable(mp, (uint64_t)i, data, files, per);
		ratio[i] = tt[i] / tp[i];
		if (ckpt_delete(mt, (uint64_t)i) != 0 ||
		    ckpt_delete(mp, (uint64_t)i) != 0)
			bail_out("delete");
		/* radosgw's and the disk's work after the deletes is no
		 * part of the next run. */
		hx_sleep_ms(1500);
	}
	double mb = (double)size / (1 << 20);
	double p = benchclock_median(tp, runs), t = benchclock_median(tt, runs);
	printf("step %" PRIu64 " MiB in %d arrays, %d runs (medians)\n",
	    size_mib, files, runs);
	printf("save -> durable, directory root          %8.1f ms  %8.1f MiB/s\n",
	    p * 1e3, mb / p);
	printf("save -> durable, %-24s %8.1f ms  %8.1f MiB/s\n",
	    control ? "a second directory root" : "s3:// with a local tier",
	    t * 1e3, mb / t);
	printf("ratio second / directory (median of the pairs) %.2f\n",
	    benchclock_median(ratio, runs));
	printf("then the upload, after durable           %8.1f ms\n",
	    benchclock_median(tu, runs) * 1e3);
	ckpt_manager_close(mt);
	ckpt_manager_close(mp);
	ckpt_disconnect(c);
	hx_cleanup(&d);
	s3peek_done();
	cephbed_stop(&bed);
	free(data);
	free(tt);
	free(tp);
	free(tu);
	free(ratio);
	return 0;
}
