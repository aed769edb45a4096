/*
 * test_daemon_s3.c - roots s3://bucket/prefix through ckptd and libckpt,
 * on a real Ceph radosgw (tests/ceph/rgw.sh): the daemon takes endpoint
 * and credentials from its own environment. A save, the listing, a
 * restore byte for byte, ckptctl verify, a delete, what is in the bucket
 * after each; the leftover of an unfinished save is not listed and is
 * collected; an object corrupted behind the daemon's back is named by
 * verify; radosgw restarted during a 256 MiB upload; a step of 4 ranks;
 * a daemon with a wrong secret refuses the root with S3's reason and
 * keeps serving; a second Unix user reaches only the prefix it is granted
 * (--s3-allow), not a sibling sharing a string prefix, not root's.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "harness.h"
#include "s3peek.h"
#include "cephbed.h"

#define BUCKET "ckpt-daemon"
#define ROOT "s3://" BUCKET "/train/run1"
#define NBIG (6u << 20)         /* floats: 24 MiB */
#define TEST_USER "ckpttest"
/* root may use the whole bucket; TEST_USER only acl/a. */
#define GRANT_ROOT "0:s3://" BUCKET
#define GRANT_USER TEST_USER ":s3://" BUCKET "/acl/a"

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
		argv[1] = "--json";
		argv[2] = "steps";
		argv[3] = ROOT;
		argv[4] = NULL;
		r = hx_run(argv, out, sizeof out, 120);
		is_int(r, 0, "ckptctl --json steps %s", ROOT);
		has(out, "\"step\":7,\"state\":\"committed\"",
		    "lists step 7 committed: %s", out);
		argv[1] = "verify";
		argv[2] = ROOT;
		argv[3] = NULL;
	}

	/* An object changed behind the daemon's back: verify names the
	 * tensor. */
	{
		const char *key = "train/run1/7/default/data-00000.safetensors";
		unsigned char *obj;
		size_t olen = 0;

		obj = s3peek_get(key, &olen);
		ok(obj != NULL && olen > (4u << 20), "the data object");
		if (obj != NULL) {
			obj[olen - (2u << 20)] ^= 0x10;   /* inside params/w */
			ok(s3peek_put(key, obj, olen) == 0, "one byte flipped");
			argv[3] = NULL;
			r = hx_run(argv, out, sizeof out, 120);
			ok(argv[0] == NULL || r != 0, "ckptctl verify fails");
			has(out, "params.w", "naming the tensor: %s", out);
			has(out, "checksum", "as a checksum mismatch");
			free(obj);
		}
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
	d2.extra[0] = "--s3-allow";
	d2.extra[1] = GRANT_ROOT;
	d2.extra[2] = NULL;
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

/* A step of 4 ranks (threads, each its own connection and manager), each
 * saving its rows of a global array and the replicated leaves: one commit
 * in the bucket, restored whole by a manager of one process. */
#define RANKS 4
#define DROWS 1000
#define DCOLS 256
#define DROOT "s3://" BUCKET "/dist"

static float dg[DROWS * DCOLS];

struct rank {
	int index, save_rc, wait_rc;
	uint64_t step;
	int scalars;            /* a tree of ints only: no data file */
	char msg[512];
};

static void *
rank_thread(void *arg)
{
	struct rank *k = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o = ckpt_options_new();
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int64_t gs[2] = { DROWS, DCOLS }, off[2], shp[2], one = 1;
	int64_t lo = k->index * (DROWS / RANKS), hi = lo + DROWS / RANKS;
	float b = 2.5f;
	int saved = 0;

	k->save_rc = k->wait_rc = CKPT_EINTERNAL;
	ckpt_options_set_process_index(o, (uint32_t)k->index);
	ckpt_options_set_process_count(o, RANKS);
	ckpt_options_set_job(o, "s3-dist");
	if (hx_connect(&d, &c) != 0 || ckpt_manager_open(c, DROOT, o,
	    &m) != 0) {
		snprintf(k->msg, sizeof k->msg, "open: %s",
		    c != NULL ? ckpt_client_errmsg(c) : "connect");
		goto out;
	}
	off[0] = lo;
	off[1] = 0;
	shp[0] = hi - lo;
	shp[1] = DCOLS;
	if (k->scalars) {
		ckpt_tree_add_int(t, "step", (int64_t)k->step);
	} else {
		ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, off, shp,
		    &dg[lo * DCOLS], (size_t)(shp[0] * DCOLS) * sizeof(float));
		ckpt_tree_add_array(t, "b", CKPT_F32, 1, &one, &b, sizeof b);
	}
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	k->save_rc = ckpt_save(m, k->step, a, &saved);
	k->wait_rc = ckpt_wait_until_finished(m);
	snprintf(k->msg, sizeof k->msg, "%s", ckpt_manager_errmsg(m));
out:
	ckpt_options_free(o);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return NULL;
}

/* Run the 4 ranks of one step; 1 when each of them saw it commit. */
static int
run_ranks(uint64_t step, int scalars)
{
	pthread_t th[RANKS];
	struct rank k[RANKS];
	int i, good = 1;

	for (i = 0; i < RANKS; i++) {
		memset(&k[i], 0, sizeof k[i]);
		k[i].index = i;
		k[i].step = step;
		k[i].scalars = scalars;
		pthread_create(&th[i], NULL, rank_thread, &k[i]);
	}
	for (i = 0; i < RANKS; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < RANKS; i++) {
		good &= k[i].save_rc == 0 && k[i].wait_rc == 0;
		if (k[i].save_rc != 0 || k[i].wait_rc != 0)
			diag("rank %d: %d %d %s", i, k[i].save_rc, k[i].wait_rc,
			    k[i].msg);
	}
	return good;
}

static void
distributed_step(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	int64_t latest = -2;
	int i;

	for (i = 0; i < DROWS * DCOLS; i++)
		dg[i] = (float)i * 0.25f;
	ok(run_ranks(3, 0), "a step of %d ranks commits in the bucket",
	    RANKS);
	ok(s3peek_has("dist/3/_CHECKPOINT_METADATA"),
	    "one _CHECKPOINT_METADATA");
	ok(s3peek_count("dist/3/default/") >= RANKS + 1,
	    "each rank's data object and _METADATA");
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(c, DROOT, NULL, &m), c,
	    "open %s in one process", DROOT))
		return;
	ckpt_latest_step(m, &latest);
	is_int(latest, 3, "step 3 is listed");
	if (ok_call(ckpt_restore(m, 3, NULL, &res), c, "restore step 3")) {
		t = ckpt_restored_item_tree(res, 0);
		ok(t != NULL && ckpt_tree_leaf(t, (size_t)ckpt_tree_find(t,
		    "w"), &lf) == 0 && lf.nbytes == sizeof dg &&
		    memcmp(lf.data, dg, sizeof dg) == 0,
		    "the global array is assembled from the %d pieces", RANKS);
		ckpt_restored_free(res);
	}
	/* Only scalars: the item has no object before its _METADATA. */
	ok(run_ranks(4, 1), "a step of %d ranks without arrays commits",
	    RANKS);
	ok(s3peek_has("dist/4/default/_METADATA"), "its _METADATA");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
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

/* ---- grants: a second user ------------------------------------------------ */

/* As TEST_USER: open root, expect code; on 0 save step 3 and restore it. */
struct acl_case {
	const char *root;
	int code;
};

static int
acl_open_as_user(void *arg, char *msg, size_t msglen)
{
	const struct acl_case *k = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t;
	ckpt_save_args *a;
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	float v[4] = { 1, 2, 3, 4 };
	int64_t sh[1] = { 4 };
	int r, saved = 0;
	long i;

	if (hx_connect(&d, &c) != 0) {
		snprintf(msg, msglen, "connect failed");
		return INT32_MIN;
	}
	r = ckpt_manager_open(c, k->root, NULL, &m);
	snprintf(msg, msglen, "%s", r != 0 ? ckpt_client_errmsg(c) : "");
	if (r != 0 || k->code != 0) {
		if (r == 0)
			ckpt_manager_close(m);
		ckpt_disconnect(c);
		return r;
	}
	t = ckpt_tree_new();
	a = ckpt_save_args_new();
	ckpt_tree_add_array(t, "w", CKPT_F32, 1, sh, v, sizeof v);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	if ((r = ckpt_save(m, 3, a, &saved)) == 0)
		r = ckpt_wait_until_finished(m);
	if (r == 0 && (r = ckpt_restore(m, 3, NULL, &res)) == 0) {
		rt = ckpt_restored_item_tree(res, 0);
		i = rt != NULL ? ckpt_tree_find(rt, "w") : -1;
		if (i < 0 || ckpt_tree_leaf(rt, (size_t)i, &lf) != 0 ||
		    lf.nbytes != sizeof v || memcmp(lf.data, v, sizeof v) != 0)
			r = CKPT_EIO;
		ckpt_restored_free(res);
	}
	snprintf(msg, msglen, "%s", r != 0 ? ckpt_client_errmsg(c) : "");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return r;
}

/* As TEST_USER: restore from directory k->root through a manager on its
 * own granted prefix. */
static int
acl_restore_elsewhere(void *arg, char *msg, size_t msglen)
{
	const struct acl_case *k = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restore_args *ra = ckpt_restore_args_new();
	ckpt_restored *res = NULL;
	int r;

	msg[0] = '\0';
	if (hx_connect(&d, &c) != 0) {
		snprintf(msg, msglen, "connect failed");
		return INT32_MIN;
	}
	r = ckpt_manager_open(c, "s3://" BUCKET "/acl/a", NULL, &m);
	if (r == 0) {
		ckpt_restore_args_set_directory(ra, k->root);
		r = ckpt_restore(m, 7, ra, &res);
		snprintf(msg, msglen, "%s", r != 0 ? ckpt_client_errmsg(c) :
		    "");
		if (r == 0)
			ckpt_restored_free(res);
		ckpt_manager_close(m);
	} else {
		snprintf(msg, msglen, "%s", ckpt_client_errmsg(c));
	}
	ckpt_restore_args_free(ra);
	ckpt_disconnect(c);
	return r;
}

static void
grants(void)
{
	static const struct acl_case cases[] = {
		{ "s3://" BUCKET "/acl/a", 0 },
		{ "s3://" BUCKET "/acl/a/", 0 },
		{ "s3://" BUCKET "/acl/a/sub/run", 0 },
		{ "s3://" BUCKET "/acl/ab", CKPT_EACCES },
		{ "s3://" BUCKET "/acl/b", CKPT_EACCES },
		{ "s3://" BUCKET "/acl", CKPT_EACCES },
		{ "s3://" BUCKET "/train/run1", CKPT_EACCES },
		{ "s3://" BUCKET "x/acl/a", CKPT_EACCES },
		{ "s3://" BUCKET "/acl/a/../b", CKPT_EINVAL },
		{ "s3://" BUCKET "/acl//a", CKPT_EINVAL },
		{ "s3://" BUCKET "/acl/a/./x", CKPT_EINVAL },
	};
	struct acl_case rc = { ROOT, CKPT_EACCES };
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char msg[1024];
	uid_t uid;
	gid_t gid;
	size_t i;
	int r;

	if (hx_ensure_user(TEST_USER, &uid, &gid) != 0)
		bail_out("cannot create user %s", TEST_USER);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		r = hx_as_user(uid, gid, acl_open_as_user,
		    (void *)&cases[i], msg, sizeof msg);
		is_int(r, cases[i].code, "%s as %s: %s", cases[i].root,
		    TEST_USER, cases[i].code == 0 ? "saves and restores" :
		    cases[i].code == CKPT_EACCES ? "refused" : "not normal");
		if (cases[i].code != 0)
			has(msg, cases[i].root, "the message names the root "
			    "(%s)", msg);
	}
	r = hx_as_user(uid, gid, acl_restore_elsewhere, &rc, msg, sizeof msg);
	is_int(r, CKPT_EACCES, "%s may not restore from %s", TEST_USER, ROOT);
	has(msg, ROOT, "naming it (%s)", msg);
	ok(s3peek_has("acl/a/3/default/_METADATA") &&
	    s3peek_has("acl/a/sub/run/3/default/_METADATA"),
	    "the granted prefixes hold the user's steps");
	ok(!s3peek_has("acl/ab/3/default/_METADATA"),
	    "nothing was written under acl/ab");

	/* root holds a grant of the bucket only; the daemon still serves. */
	ok(hx_alive(&d), "the daemon is alive");
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, "s3://another-bucket/x", NULL, &m);
	is_int(r, CKPT_EACCES, "root is refused a bucket it is not granted");
	has(ckpt_client_errmsg(c), "s3://another-bucket/x", "naming it");
	r = ckpt_manager_open(c, ROOT, NULL, &m);
	ok_call(r, c, "root still opens %s", ROOT);
	if (r == 0)
		ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* The Python package on an s3:// root (tests/ceph/s3_python.py), against
 * this daemon: the same root names work there as in C and ckptctl. */
static void
python_package(void)
{
	const char *py = getenv("CKPT_TEST_PYTHON");
	const char *script = getenv("CKPT_TEST_S3_PY");
	char *argv[4], out[8192];
	int r;

	if (py == NULL || py[0] == '\0' || script == NULL) {
		tap_skip("no python3 that loads this build's libckpt (none found, "
		    "or a sanitizer build)");
		return;
	}
	setenv("CKPTD_SOCKET", d.sock, 1);
	argv[0] = (char *)py;
	argv[1] = (char *)script;
	argv[2] = (char *)"s3://" BUCKET "/python/run";
	argv[3] = NULL;
	r = hx_run(argv, out, sizeof out, 300);
	is_int(r, 0, "the Python package saves, lists, restores and deletes "
	    "on an s3:// root");
	has(out, "python s3 ok", "... to the end");
	if (r != 0)
		diag("%s", out);
	unsetenv("CKPTD_SOCKET");
}

int
main(void)
{
	if (cephbed_start(&bed) != 0)
		bail_out("no radosgw");
	if (s3peek_init(BUCKET) != 0)
		bail_out("no bucket");
	hx_init(&d);
	d.extra[0] = "--s3-allow";
	d.extra[1] = GRANT_ROOT;
	d.extra[2] = "--s3-allow";
	d.extra[3] = GRANT_USER;
	d.extra[4] = NULL;
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	/* The second user reaches the socket. */
	chmod(d.dir, 0755);
	chmod(d.sock, 0666);
	save_list_restore_delete();
	rgw_restart_during_upload();
	distributed_step();
	unknown_scheme();
	python_package();
	wrong_credentials();
	grants();
	hx_cleanup(&d);
	s3peek_done();
	cephbed_stop(&bed);
	return done_testing();
}
