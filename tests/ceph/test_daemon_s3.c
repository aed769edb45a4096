/*
 * test_daemon_s3.c - roots s3://bucket/prefix through ckptd and libckpt,
 * on a real Ceph radosgw (tests/ceph/rgw.sh): the daemon takes endpoint
 * and credentials from its own environment. A save, the listing, a
 * restore byte for byte, ckptctl verify, a delete, what is in the bucket
 * after each; the leftover of an unfinished save is not listed and is
 * collected; radosgw restarted during a 256 MiB upload; a daemon with a
 * wrong secret refuses the root with S3's reason and keeps serving.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "s3peek.h"
#include "cephbed.h"

#define BUCKET "ckpt-daemon"
#define ROOT "s3://" BUCKET "/train/run1"
#define NBIG (6u << 20)         /* floats: 24 MiB, a multipart object */

static struct cephbed bed;
static struct hx_daemon d;

static void
save_list_restore_delete(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	float *w = malloc(NBIG * sizeof *w), small[3] = { 1, 2, 3 };
	int64_t shw[1] = { NBIG }, shs[1] = { 3 }, latest = -2;
	uint64_t *steps = NULL;
	size_t n = 0, i;
	char out[4096], *argv[6];
	int r, saved = 0;
	long k;

	if (w == NULL)
		bail_out("out of memory");
	for (i = 0; i < NBIG; i++)
		w[i] = (float)(i % 1000) * 0.5f;
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, ROOT, NULL, &m);
	if (!ok_call(r, c, "open a manager on %s", ROOT))
		bail_out("no manager");
	ckpt_tree_add_array(t, "params/w", CKPT_F32, 1, shw, w,
	    NBIG * sizeof *w);
	ckpt_tree_add_array(t, "params/b", CKPT_F32, 1, shs, small,
	    sizeof small);
	ckpt_tree_add_int(t, "step", 7);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, 7, a, &saved);
	ok_call(r, c, "save step 7");
	r = ckpt_wait_until_finished(m);
	ok_call(r, c, "step 7 durable");
	ok(s3peek_has("train/run1/7/_CHECKPOINT_METADATA"),
	    "7/_CHECKPOINT_METADATA is an object");
	ok(s3peek_has("train/run1/7/default/_METADATA"),
	    "7/default/_METADATA is an object");
	ok(!s3peek_has("train/run1/7.ckptd-tmp"), "no marker left");

	r = ckpt_all_steps(m, &steps, &n);
	ok_call(r, c, "all_steps");
	ok(n == 1 && steps != NULL && steps[0] == 7, "all_steps == [7]");
	free(steps);
	ckpt_latest_step(m, &latest);
	is_int(latest, 7, "latest_step == 7");

	r = ckpt_restore(m, 7, NULL, &res);
	if (ok_call(r, c, "restore step 7")) {
		rt = ckpt_restored_item_tree(res, 0);
		k = rt != NULL ? ckpt_tree_find(rt, "params/w") : -1;
		ok(k >= 0 && ckpt_tree_leaf(rt, (size_t)k, &lf) == 0 &&
		    lf.nbytes == NBIG * sizeof *w &&
		    memcmp(lf.data, w, lf.nbytes) == 0,
		    "params/w restored byte for byte (24 MiB)");
		k = rt != NULL ? ckpt_tree_find(rt, "params/b") : -1;
		ok(k >= 0 && ckpt_tree_leaf(rt, (size_t)k, &lf) == 0 &&
		    lf.nbytes == sizeof small &&
		    memcmp(lf.data, small, sizeof small) == 0,
		    "params/b restored");
		ckpt_restored_free(res);
	}

	/* A new manager (a restart of the job) finds the step in the bucket. */
	ckpt_manager_close(m);
	m = NULL;
	r = ckpt_manager_open(c, ROOT, NULL, &m);
	ok_call(r, c, "open again");
	latest = -2;
	ckpt_latest_step(m, &latest);
	is_int(latest, 7, "a new manager lists step 7");

	argv[0] = getenv("CKPTCTL_BIN");
	argv[1] = "verify";
	argv[2] = ROOT;
	argv[3] = NULL;
	if (argv[0] != NULL) {
		r = hx_run(argv, out, sizeof out, 120);
		is_int(r, 0, "ckptctl verify %s", ROOT);
		if (r != 0)
			diag("%s", out);
	}

	r = ckpt_delete(m, 7);
	ok_call(r, c, "delete step 7");
	is_int(s3peek_count("train/run1/7"), 0, "its objects are gone");
	steps = NULL;
	n = 9;
	ckpt_all_steps(m, &steps, &n);
	is_int(n, 0, "no step listed");
	free(steps);
	res = NULL;
	r = ckpt_restore(m, 7, NULL, &res);
	is_int(r, CKPT_ENOTFOUND, "restore of the deleted step: not found");
	ckpt_manager_close(m);

	/* Objects of a save that never committed (a daemon gone mid-save):
	 * not listed, and removed when the root is opened again. */
	ok(s3peek_put("train/run1/9.ckptd-tmp", "", 0) == 0 &&
	    s3peek_put("train/run1/9/default/_METADATA", "{}", 2) == 0,
	    "plant the leftover of step 9");
	r = ckpt_manager_open(c, "s3://" BUCKET "/train/run1/", NULL, &m);
	ok_call(r, c, "open the root again");
	steps = NULL;
	n = 9;
	ckpt_all_steps(m, &steps, &n);
	is_int(n, 0, "the unfinished step 9 is not listed");
	free(steps);
	is_int(s3peek_count("train/run1/9"), 0, "and its objects were removed");
	ckpt_manager_close(m);

	ckpt_tree_free(t);
	ckpt_save_args_free(a);
	ckpt_disconnect(c);
	free(w);
}

/* A daemon whose environment holds a wrong secret. */
static void
wrong_credentials(void)
{
	struct hx_daemon d2;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char *good = strdup(getenv("AWS_SECRET_ACCESS_KEY")), local[HX_PATH];
	const char *msg;
	int r;

	setenv("AWS_SECRET_ACCESS_KEY", "a-wrong-secret", 1);
	hx_init(&d2);
	r = hx_start(&d2);
	setenv("AWS_SECRET_ACCESS_KEY", good, 1);
	if (!ok(r == 0, "a daemon with a wrong secret starts"))
		return;
	if (hx_connect(&d2, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, ROOT, NULL, &m);
	is_int(r, CKPT_EACCES, "the root is refused: permission denied");
	msg = ckpt_client_errmsg(c);
	has(msg, "403", "the message has S3's answer (%s)", msg);
	ok(strstr(msg, "a-wrong-secret") == NULL, "and not the secret");
	r = ckpt_manager_open(c, hx_path(&d2, local, "local"), NULL, &m);
	ok_call(r, c, "the daemon still serves a local root");
	if (r == 0)
		ckpt_manager_close(m);
	ckpt_disconnect(c);
	hx_cleanup(&d2);
	free(good);
}

/* radosgw killed while a 256 MiB step is being uploaded and started again
 * a second later: the save retries and commits, or fails cleanly; either
 * way there is never a half step, and the daemon goes on saving. */
#define NHUGE (64u << 20)       /* floats: 256 MiB */

static void
rgw_restart_during_upload(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t = ckpt_tree_new(), *t2 = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new(), *a2 = ckpt_save_args_new();
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	float *w = malloc((size_t)NHUGE * sizeof *w);
	int64_t sh[1] = { NHUGE };
	uint64_t *steps = NULL;
	size_t n = 0, i;
	int r, saved = 0;
	long k;

	if (w == NULL)
		bail_out("out of memory");
	for (i = 0; i < NHUGE; i++)
		w[i] = (float)(i % 4093);
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, "s3://" BUCKET "/restart", NULL, &m);
	if (!ok_call(r, c, "open s3://%s/restart", BUCKET))
		return;
	ckpt_tree_add_array(t, "w", CKPT_F32, 1, sh, w,
	    (size_t)NHUGE * sizeof *w);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, 11, a, &saved);
	ok_call(r, c, "save step 11 (256 MiB)");
	hx_sleep_ms(300);
	/* Not committed yet: the kill lands in the upload. */
	ckpt_all_steps(m, &steps, &n);
	is_int(n, 0, "step 11 is still being uploaded");
	free(steps);
	steps = NULL;
	ok(cephbed_rgw(&bed, "kill-rgw") == 0, "radosgw killed mid-upload");
	hx_sleep_ms(1000);
	ok(cephbed_rgw(&bed, "start-rgw") == 0, "radosgw started again");
	r = ckpt_wait_until_finished(m);
	diag("the save after the restart: %s (%s)", ckpt_strerror(r),
	    r != 0 ? ckpt_manager_errmsg(m) : "committed");
	ckpt_all_steps(m, &steps, &n);
	if (r == 0) {
		ok(n == 1 && steps[0] == 11, "step 11 committed and listed");
		ok(s3peek_has("restart/11/_CHECKPOINT_METADATA"),
		    "its _CHECKPOINT_METADATA is there");
		res = NULL;
		r = ckpt_restore(m, 11, NULL, &res);
		if (ok_call(r, c, "restore step 11")) {
			rt = ckpt_restored_item_tree(res, 0);
			k = rt != NULL ? ckpt_tree_find(rt, "w") : -1;
			ok(k >= 0 && ckpt_tree_leaf(rt, (size_t)k, &lf) == 0 &&
			    lf.nbytes == (size_t)NHUGE * sizeof *w &&
			    memcmp(lf.data, w, lf.nbytes) == 0,
			    "step 11 restored byte for byte");
			ckpt_restored_free(res);
		}
	} else {
		is_int(n, 0, "the failed step is not listed");
		ok(!s3peek_has("restart/11/_CHECKPOINT_METADATA"),
		    "no _CHECKPOINT_METADATA: never a half step");
		ok(1, "(the restore check applies to a committed step)");
	}
	free(steps);
	ckpt_tree_add_int(t2, "x", 1);
	ckpt_save_args_add_tree(a2, NULL, CKPT_HANDLER_STANDARD, t2);
	r = ckpt_save(m, 12, a2, &saved);
	ok_call(r, c, "the next save");
	r = ckpt_wait_until_finished(m);
	ok_call(r, c, "commits");
	ckpt_manager_close(m);
	ckpt_tree_free(t);
	ckpt_tree_free(t2);
	ckpt_save_args_free(a);
	ckpt_save_args_free(a2);
	ckpt_disconnect(c);
	free(w);
}

static void
unknown_scheme(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int r;

	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, "gs://bucket/x", NULL, &m);
	is_int(r, CKPT_EINVAL, "gs:// is refused");
	has(ckpt_client_errmsg(c), "\"gs://\"", "naming the scheme");
	ckpt_disconnect(c);
}

int
main(void)
{
	if (cephbed_start(&bed) != 0)
		bail_out("no radosgw");
	if (s3peek_init(BUCKET) != 0)
		bail_out("no bucket");
	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	save_list_restore_delete();
	rgw_restart_during_upload();
	unknown_scheme();
	wrong_credentials();
	hx_cleanup(&d);
	s3peek_done();
	cephbed_stop(&bed);
	return done_testing();
}
