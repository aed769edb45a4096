/*
 * test_tier.c - ckptd --local-tier on a real Ceph radosgw (rgw.sh): a save
 * to an s3:// root is durable on the local disk (wait_until_finished
 * returns with radosgw down), then uploaded in the background (its state
 * in `ckptctl steps` and in /metrics); a restore with the local tier
 * wiped reads the store, bit for bit; a corrupted local file makes the
 * restore fall back to the store; a daemon SIGKILLed during an upload
 * resumes it after its restart (no manager opening the root); retention
 * removes both copies; a step of 4 ranks goes through the tier. An upload
 * is given up after its bounded tries (--tier-upload-attempts), stays so
 * with radosgw back, and SIGHUP queues it again; a bucket removed (404)
 * ends it after two tries whatever the bound.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <errno.h>
#include <signal.h>

#include "harness.h"
#include "s3peek.h"
#include "cephbed.h"

#define BUCKET "ckpt-tier"
#define ROOT "s3://" BUCKET "/run"
/* the tier's directory of ROOT: the name escaped into one component */
#define LOCAL_NAME "s3%3A%2F%2F" BUCKET "%2Frun"
#define NBIG (8u << 20)         /* floats: 32 MiB */
#define NHUGE (32u << 20)       /* floats: 128 MiB */

static struct cephbed bed;
static struct hx_daemon d;
static char tier[HX_PATH], local[HX_PATH], grant[64], mlisten[64];
static int mport;

/* ---- helpers ---------------------------------------------------------------- */

static char *
ctl(const char *a1, const char *a2, const char *a3, char *out, size_t len)
{
	char *argv[5] = { getenv("CKPTCTL_BIN"), (char *)a1, (char *)a2,
	    (char *)a3, NULL };

	out[0] = '\0';
	if (argv[0] == NULL)
		bail_out("CKPTCTL_BIN is not set");
	if (hx_run(argv, out, len, 120) != 0)
		diag("ckptctl %s %s %s: %s", a1, a2, a3 ? a3 : "", out);
	return out;
}

/* The upload state of step of root as `ckptctl --json steps` lists it. */
static int
upload_is(const char *root, uint64_t step, const char *state)
{
	char out[16384], want[128], *p, *next, *u;

	ctl("--json", "steps", root, out, sizeof out);
	snprintf(want, sizeof want, "{\"step\":%" PRIu64 ",", step);
	if ((p = strstr(out, want)) == NULL)
		return 0;
	/* this step's object only: up to the next one */
	if ((next = strstr(p + 1, "{\"step\":")) != NULL)
		*next = '\0';
	snprintf(want, sizeof want, "\"upload\":\"%s\"", state);
	u = strstr(p, want);
	return u != NULL;
}

/* Wait (<= secs) until pred holds. */
static int
wait_for(int (*pred)(const void *), const void *arg, int secs)
{
	int64_t end = hx_now_ms() + secs * 1000LL;

	while (hx_now_ms() < end) {
		if (pred(arg))
			return 1;
		hx_sleep_ms(200);
	}
	return pred(arg);
}

/* GET /metrics of the daemon into out. */
static char *
metrics(char *out, size_t len)
{
	struct sockaddr_in sa;
	size_t used = 0;
	ssize_t n;
	int fd;

	out[0] = '\0';
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		return out;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)mport);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		diag("metrics at %s: %s", mlisten, strerror(errno));
		close(fd);
		return out;
	}
	dprintf(fd, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
	while (used < len - 1 && (n = read(fd, out + used,
	    len - 1 - used)) > 0)
		used += (size_t)n;
	out[used] = '\0';
	close(fd);
	return out;
}

/* The value of metric name in text, or -1. */
static double
metric(const char *text, const char *name)
{
	char want[128];
	const char *p = text;

	snprintf(want, sizeof want, "\n%s ", name);
	if ((p = strstr(text, want)) == NULL)
		return -1;
	return strtod(p + strlen(want), NULL);
}

static void
fill(float *w, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		w[i] = (float)((i * 7 + seed) % 5003) * 0.25f;
}

static int
save_w(ckpt_client *c, ckpt_manager *m, uint64_t step, const float *w,
    size_t n)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int64_t sh[1] = { (int64_t)n };
	int saved = 0, r;

	ckpt_tree_add_array(t, "w", CKPT_F32, 1, sh, w, n * sizeof *w);
	ckpt_tree_add_int(t, "step", (int64_t)step);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, step, a, &saved);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	if (r != 0)
		diag("save %" PRIu64 ": %s", step, ckpt_client_errmsg(c));
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return r;
}

/* Restore step and compare "w" with w[0..n). */
static int
restored_same(ckpt_client *c, ckpt_manager *m, uint64_t step, const float *w,
    size_t n)
{
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	long k;
	int same;

	if (ckpt_restore(m, step, NULL, &res) != 0) {
		diag("restore %" PRIu64 ": %s", step, ckpt_client_errmsg(c));
		return 0;
	}
	rt = ckpt_restored_item_tree(res, 0);
	k = rt != NULL ? ckpt_tree_find(rt, "w") : -1;
	same = k >= 0 && ckpt_tree_leaf(rt, (size_t)k, &lf) == 0 &&
	    lf.nbytes == n * sizeof *w && memcmp(lf.data, w, lf.nbytes) == 0;
	ckpt_restored_free(res);
	return same;
}

static int
upload_failed(const void *arg)
{
	char mt[65536];

	(void)arg;
	metrics(mt, sizeof mt);
	return metric(mt, "ckptd_tier_upload_failures_total") >= 1;
}

static int
has_key(const void *key)
{
	return s3peek_has(key);
}

static char *
local_step(char *buf, const char *name, uint64_t step)
{
	if (snprintf(buf, HX_PATH, "%s/%s/%" PRIu64, tier, name, step) >=
	    HX_PATH)
		bail_out("path too long");
	return buf;
}

/* ---- the tests -------------------------------------------------------------- */

struct up {
	const char *root;
	uint64_t step;
};

static int
is_uploaded(const void *arg)
{
	const struct up *u = arg;

	return upload_is(u->root, u->step, "uploaded");
}

/* radosgw down: the save is durable locally, its upload waits; radosgw
 * back: the step goes up. */
static void
durable_locally_first(float *w)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char path[HX_PATH], dir[HX_PATH], out[16384], mt[65536];
	struct up u = { ROOT, 1 };
	ckpt_step_info *v = NULL;
	size_t n = 0;
	int64_t t0;
	int r;

	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, ROOT, NULL, &m);
	if (!ok_call(r, c, "open %s with a local tier", ROOT))
		bail_out("no manager");
	ok(hx_exists(local), "the root's directory in the tier: %s", local);
	ok(cephbed_rgw(&bed, "kill-rgw") == 0, "radosgw stopped");
	fill(w, NBIG, 1);
	t0 = hx_now_ms();
	r = save_w(c, m, 1, w, NBIG);
	ok_call(r, c, "save step 1 (32 MiB): durable with radosgw down");
	diag("save -> durable locally: %" PRId64 " ms", hx_now_ms() - t0);
	hx_join(path, local_step(dir, LOCAL_NAME, 1), "_CHECKPOINT_METADATA");
	ok(hx_exists(path), "committed in the local tier");
	/* The manager open lists it (a new open, e.g. ckptctl's, asks the
	 * store first). */
	ok_call(ckpt_list_steps(m, &v, &n), c, "list steps");
	ok(n == 1 && v[0].step == 1 && v[0].state == 0,
	    "step 1 listed committed");
	ok(n == 1 && (strcmp(v[0].upload, "local") == 0 ||
	    strcmp(v[0].upload, "uploading") == 0 ||
	    strcmp(v[0].upload, "upload retrying") == 0),
	    "its upload waits (%s)", n == 1 ? v[0].upload : "?");
	free(v);
	v = NULL;
	metrics(mt, sizeof mt);
	ok(metric(mt, "ckptd_tier_bytes_pending") >= NBIG * 4.0,
	    "ckptd_tier_bytes_pending counts it (%.0f)",
	    metric(mt, "ckptd_tier_bytes_pending"));
	/* the client's retries end: a failure, listed with its reason */
	ok(wait_for(upload_failed, NULL, 120), "the upload failed meanwhile");
	ok_call(ckpt_list_steps(m, &v, &n), c, "list steps");
	ok(n == 1 && strcmp(v[0].upload, "upload retrying") == 0 &&
	    strstr(v[0].upload_error, "127.0.0.1") != NULL,
	    "listed as retrying, with the reason: %s", n == 1 ?
	    v[0].upload_error : "?");
	free(v);
	metrics(mt, sizeof mt);
	ok(metric(mt, "ckptd_tier_bytes_pending") >= NBIG * 4.0,
	    "still pending");
	ok(cephbed_rgw(&bed, "start-rgw") == 0, "radosgw started again");
	ok(wait_for(is_uploaded, &u, 90), "step 1 uploaded after radosgw "
	    "came back");
	ok(s3peek_has("run/1/_CHECKPOINT_METADATA"),
	    "run/1/_CHECKPOINT_METADATA in the bucket");
	ok(s3peek_has("run/1/default/_METADATA"), "run/1/default/_METADATA");
	ok(!s3peek_has("run/1.ckptd-tmp"), "no marker left");
	metrics(mt, sizeof mt);
	is_int((long long)metric(mt, "ckptd_tier_bytes_pending"), 0,
	    "nothing pending");
	ok(metric(mt, "ckptd_tier_uploads_total") >= 1, "one upload counted");
	ctl("steps", ROOT, NULL, out, sizeof out);
	has(out, "UPLOAD", "ckptctl steps has an UPLOAD column: %s", out);
	has(out, "uploaded", "step 1 uploaded");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* Step 1 in the bucket: with the local copy gone (the tier wiped), the
 * restore reads the store. */
static void
restore_after_wipe(float *w)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char path[HX_PATH];
	int64_t latest = -2;

	ok(hx_rmtree(local_step(path, LOCAL_NAME, 1)) == 0,
	    "the local copy of step 1 removed");
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(c, ROOT, NULL, &m), c, "open again"))
		return;
	ckpt_latest_step(m, &latest);
	is_int(latest, 1, "step 1 listed (the store's)");
	fill(w, NBIG, 1);
	ok(restored_same(c, m, 1, w, NBIG),
	    "step 1 restored from the store bit for bit");
	ckpt_manager_close(m);
	/* The whole tier wiped: the daemon makes the root's directory again
	 * when the root is next loaded; the step is the store's. */
	ckpt_disconnect(c);
}

/* A local file corrupted behind the daemon's back: the restore takes the
 * store's copy. */
static void
corrupt_local_falls_back(float *w)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char path[HX_PATH], dir[HX_PATH], *log;
	struct up u = { ROOT, 2 };
	unsigned char b;
	struct stat st;
	int fd;

	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(c, ROOT, NULL, &m), c, "open"))
		return;
	fill(w, NBIG, 2);
	ok_call(save_w(c, m, 2, w, NBIG), c, "save step 2");
	ok(wait_for(is_uploaded, &u, 90), "step 2 uploaded");
	ok(restored_same(c, m, 2, w, NBIG), "step 2 restored");
	log = hx_read_file(d.log, NULL);
	ok(log != NULL && strstr(log, "step 2: restoring from the store") ==
	    NULL, "from its local copy");
	free(log);
	hx_join(path, local_step(dir, LOCAL_NAME, 2),
	    "default/data-00000.safetensors");
	fd = open(path, O_RDWR);
	ok(fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 8192,
	    "the local data file %s", path);
	if (fd >= 0) {
		off_t at = st.st_size - 4096;

		ok(pread(fd, &b, 1, at) == 1, "read a byte");
		b ^= 0x5a;
		ok(pwrite(fd, &b, 1, at) == 1, "flipped it");
		close(fd);
	}
	ok(restored_same(c, m, 2, w, NBIG),
	    "step 2 restored bit for bit all the same (from the store)");
	log = hx_read_file(d.log, NULL);
	ok(log != NULL && strstr(log, "step 2: restoring from the store") !=
	    NULL, "the daemon says why it read the store");
	free(log);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* SIGKILL while a 128 MiB step is being uploaded: the restarted daemon
 * finds it committed locally and not in the store, and uploads it. */
static void
kill_during_upload(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	float *w = malloc((size_t)NHUGE * sizeof *w);
	char path[HX_PATH], out[16384], *log;
	struct up u = { ROOT, 3 };

	if (w == NULL)
		bail_out("out of memory");
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(c, ROOT, NULL, &m), c, "open"))
		return;
	fill(w, NHUGE, 3);
	ok_call(save_w(c, m, 3, w, NHUGE), c, "save step 3 (128 MiB)");
	ctl("--json", "steps", ROOT, out, sizeof out);
	ok(strstr(out, "\"upload\":\"uploading\"") != NULL ||
	    strstr(out, "\"upload\":\"local\"") != NULL,
	    "being uploaded when killed: %s", out);
	ckpt_disconnect(c);
	c = NULL;
	ok(hx_kill9_restart(&d) == 0, "ckptd SIGKILLed and started again");
	ok(!s3peek_has("run/3/_CHECKPOINT_METADATA"),
	    "step 3 is not committed in the store");
	/* No manager opens the root: the daemon finds the upload at its
	 * start. */
	ok(wait_for(has_key, "run/3/_CHECKPOINT_METADATA", 120),
	    "the upload resumed after the restart and step 3 is in the "
	    "bucket");
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(c, ROOT, NULL, &m), c,
	    "open after the restart"))
		return;
	ok(wait_for(is_uploaded, &u, 60), "listed as uploaded");
	log = hx_read_file(d.log, NULL);
	ok(log != NULL && strstr(log, "not in the store: uploading it") !=
	    NULL, "the daemon says it resumed the upload");
	free(log);
	ok(hx_rmtree(local_step(path, LOCAL_NAME, 3)) == 0,
	    "the local copy of step 3 removed");
	ok(restored_same(c, m, 3, w, NHUGE),
	    "step 3 restored from the store bit for bit");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	free(w);
}

/* max_to_keep 1: the step dropped goes from the tier and the store. */
static void
retention_both(float *w)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o = ckpt_options_new();
	char path[HX_PATH];
	struct up u = { ROOT, 4 };

	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	ckpt_options_set_max_to_keep(o, 1);
	if (!ok_call(ckpt_manager_open(c, ROOT, o, &m), c,
	    "open with max_to_keep 1"))
		return;
	fill(w, 1024, 4);
	ok_call(save_w(c, m, 4, w, 1024), c, "save step 4");
	ok(wait_for(is_uploaded, &u, 90), "step 4 uploaded");
	ok(!hx_exists(local_step(path, LOCAL_NAME, 2)),
	    "step 2 left the local tier");
	ok(!s3peek_has("run/2/_CHECKPOINT_METADATA") &&
	    s3peek_count("run/2/") == 0, "and the bucket");
	ok(!s3peek_has("run/1/_CHECKPOINT_METADATA") &&
	    !s3peek_has("run/3/_CHECKPOINT_METADATA"),
	    "steps 1 and 3 (store only) too");
	ok(s3peek_has("run/4/_CHECKPOINT_METADATA") &&
	    hx_exists(local_step(path, LOCAL_NAME, 4)), "step 4 in both");
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* A directory of the tier another user made for a root: refused, named. */
static void
foreign_directory(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char path[HX_PATH];
	uid_t uid;
	gid_t gid;
	int r;

	if (getuid() != 0 || hx_ensure_user("ckpttest", &uid, &gid) != 0) {
		tap_skip("needs root and a second user");
		tap_skip("needs root and a second user");
		return;
	}
	if (snprintf(path, sizeof path, "%s/s3%%3A%%2F%%2F%s%%2Fother", tier,
	    BUCKET) >= (int)sizeof path || mkdir(path, 0777) != 0 ||
	    chown(path, uid, gid) != 0)
		bail_out("%s", path);
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, "s3://" BUCKET "/other", NULL, &m);
	is_int(r, CKPT_EACCES, "a tier directory of another uid is refused");
	has(ckpt_client_errmsg(c), "belongs to uid", "saying whose it is");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* ---- 4 ranks ---------------------------------------------------------------- */

#define RANKS 4
#define DROWS 1000
#define DCOLS 256
#define DROOT "s3://" BUCKET "/dist"
#define DLOCAL "s3%3A%2F%2F" BUCKET "%2Fdist"

static float dg[DROWS * DCOLS];

struct rank {
	int index, save_rc, wait_rc;
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
	ckpt_options_set_job(o, "tier-dist");
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
	ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, off, shp,
	    &dg[lo * DCOLS], (size_t)(shp[0] * DCOLS) * sizeof(float));
	ckpt_tree_add_array(t, "b", CKPT_F32, 1, &one, &b, sizeof b);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	k->save_rc = ckpt_save(m, 5, a, &saved);
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

static void
distributed_step(void)
{
	pthread_t th[RANKS];
	struct rank k[RANKS];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	char path[HX_PATH], dir[HX_PATH];
	struct up u = { DROOT, 5 };
	int i, good = 1;

	for (i = 0; i < DROWS * DCOLS; i++)
		dg[i] = (float)i * 0.25f;
	for (i = 0; i < RANKS; i++) {
		memset(&k[i], 0, sizeof k[i]);
		k[i].index = i;
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
	ok(good, "a step of %d ranks commits in the local tier", RANKS);
	hx_join(path, local_step(dir, DLOCAL, 5), "_CHECKPOINT_METADATA");
	ok(hx_exists(path), "its _CHECKPOINT_METADATA is local");
	ok(wait_for(is_uploaded, &u, 90), "and uploaded");
	ok(s3peek_has("dist/5/_CHECKPOINT_METADATA"),
	    "one _CHECKPOINT_METADATA in the bucket");
	ok(s3peek_count("dist/5/default/") >= RANKS + 1,
	    "each rank's data object and _METADATA");
	ok(hx_rmtree(local_step(path, DLOCAL, 5)) == 0, "local copy removed");
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(c, DROOT, NULL, &m), c,
	    "open %s in one process", DROOT))
		return;
	if (ok_call(ckpt_restore(m, 5, NULL, &res), c, "restore step 5")) {
		t = ckpt_restored_item_tree(res, 0);
		ok(t != NULL && ckpt_tree_leaf(t, (size_t)ckpt_tree_find(t,
		    "w"), &lf) == 0 && lf.nbytes == sizeof dg &&
		    memcmp(lf.data, dg, sizeof dg) == 0,
		    "the global array assembled from the store's pieces");
		ckpt_restored_free(res);
	}
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* ---- uploads given up -------------------------------------------------------- */

#define GROOT "s3://" BUCKET "/giveup"
#define GLOCAL "s3%3A%2F%2F" BUCKET "%2Fgiveup"

static struct hx_daemon d2, d3;
static char tier2[HX_PATH], tier3[HX_PATH], mlisten2[64];

/* The manager m lists its only step as given up (ckptctl cannot be
 * asked: its open needs the store, which may be down). */
static int
upload_given_up(const void *arg)
{
	ckpt_manager *m = (ckpt_manager *)arg;
	ckpt_step_info *v = NULL;
	size_t n = 0;
	int yes;

	if (ckpt_list_steps(m, &v, &n) != 0)
		return 0;
	yes = n == 1 && strcmp(v[0].upload, "upload failed") == 0;
	free(v);
	return yes;
}

/* Occurrences of needle in the log of x. */
static int
log_count(struct hx_daemon *x, const char *needle)
{
	char *log = hx_read_file(x->log, NULL), *p;
	int n = 0;

	for (p = log; p != NULL && (p = strstr(p, needle)) != NULL;
	    p += strlen(needle))
		n++;
	free(log);
	return n;
}

/* --tier-upload-attempts 2, radosgw down: the upload is given up after
 * two tries (listed "upload failed" with the reason, a gauge, one log
 * line), is not tried again when radosgw is back, and SIGHUP queues it
 * again. */
static void
give_up_then_sighup(float *w)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char out[16384], mt[65536], path[HX_PATH];
	struct up u = { GROOT, 7 };
	ckpt_step_info *v = NULL;
	size_t n = 0;
	int64_t t0;

	hx_init(&d2);
	if (snprintf(tier2, sizeof tier2, "%s/tier", d2.dir) >=
	    (int)sizeof tier2)
		bail_out("path too long");
	mport = hx_free_port();
	snprintf(mlisten2, sizeof mlisten2, "127.0.0.1:%d", mport);
	d2.extra[0] = "--s3-allow";
	d2.extra[1] = grant;
	d2.extra[2] = "--local-tier";
	d2.extra[3] = tier2;
	d2.extra[4] = "--metrics-listen";
	d2.extra[5] = mlisten2;
	d2.extra[6] = "--tier-upload-attempts=2";
	d2.extra[7] = NULL;
	if (hx_start(&d2) != 0)
		bail_out("ckptd with --tier-upload-attempts 2 did not start");
	setenv("CKPTD_SOCKET", d2.sock, 1);
	if (hx_connect(&d2, &c) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(c, GROOT, NULL, &m), c, "open %s",
	    GROOT))
		bail_out("no manager");
	ok(cephbed_rgw(&bed, "kill-rgw") == 0, "radosgw stopped");
	fill(w, 4096, 7);
	t0 = hx_now_ms();
	ok_call(save_w(c, m, 7, w, 4096), c, "save step 7, radosgw down");
	ok(wait_for(upload_given_up, m, 120), "the upload is given up");
	diag("given up after %" PRId64 " ms", hx_now_ms() - t0);
	ok_call(ckpt_list_steps(m, &v, &n), c, "list steps");
	ok(n == 1 && strcmp(v[0].upload, "upload failed") == 0 &&
	    strstr(v[0].upload_error, "127.0.0.1") != NULL,
	    "listed failed with the reason: %s", n == 1 ?
	    v[0].upload_error : "?");
	free(v);
	is_int(log_count(&d2, "upload failed (try 1 of 2"), 1,
	    "the first failure logged as a retry");
	is_int(log_count(&d2, "upload given up after 2 tries"), 1,
	    "giving up logged once");
	metrics(mt, sizeof mt);
	is_int((long long)metric(mt, "ckptd_tier_uploads_given_up"), 1,
	    "ckptd_tier_uploads_given_up 1");
	is_int((long long)metric(mt, "ckptd_tier_uploads_queued"), 0,
	    "nothing queued");
	ok(metric(mt, "ckptd_tier_bytes_pending") >= 4096 * 4.0,
	    "its bytes still pending");
	if (snprintf(out, sizeof out, "%s/%s/7", tier2, GLOCAL) >=
	    (int)sizeof out)
		bail_out("path too long");
	hx_join(path, out, "_CHECKPOINT_METADATA");
	ok(hx_exists(path), "the local copy kept");
	ok(cephbed_rgw(&bed, "start-rgw") == 0, "radosgw started again");
	/* longer than the first delay of a retry (5 s) */
	hx_sleep_ms(12000);
	ok(upload_given_up(m), "still given up with radosgw back");
	ok(!s3peek_has("giveup/7/_CHECKPOINT_METADATA"),
	    "and not in the bucket");
	is_int(log_count(&d2, "upload given up"), 1, "no more tries logged");
	ok(kill(d2.pid, SIGHUP) == 0, "SIGHUP");
	ok(wait_for(is_uploaded, &u, 90), "step 7 uploaded after SIGHUP");
	ok(s3peek_has("giveup/7/_CHECKPOINT_METADATA"), "in the bucket");
	ok(log_count(&d2, "1 upload of the local tier given up queued "
	    "again") == 1, "the daemon says it queued it again");
	metrics(mt, sizeof mt);
	is_int((long long)metric(mt, "ckptd_tier_uploads_given_up"), 0,
	    "ckptd_tier_uploads_given_up 0");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ok(hx_stop(&d2) == 0, "ckptd stopped cleanly");
}

/* The bucket removed under an open root: radosgw answers 404
 * NoSuchBucket, which waiting does not heal: given up after two tries
 * although 10 are allowed. */
#define GONE "ckpt-tier-gone"
#define NROOT "s3://" GONE "/run"
#define NLOCAL "s3%3A%2F%2F" GONE "%2Frun"

static void
no_bucket_gives_up(float *w)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char grant3[64], url[512], path[HX_PATH], dir[HX_PATH];
	const char *ep = getenv("AWS_ENDPOINT_URL");
	ckpt_step_info *v = NULL;
	size_t n = 0;
	int64_t t0;

	hx_init(&d3);
	if (snprintf(tier3, sizeof tier3, "%s/tier", d3.dir) >=
	    (int)sizeof tier3 || ep == NULL || snprintf(url, sizeof url,
	    "%s/%s", ep, GONE) >= (int)sizeof url)
		bail_out("path too long");
	snprintf(grant3, sizeof grant3, "%u:s3://%s", (unsigned)getuid(),
	    GONE);
	if (cephbed_curl_config(d3.dir) != 0)
		bail_out("curl config");
	{
		const char *mk[] = { "-X", "PUT", "-o", "/dev/null", url,
		    NULL };

		ok(cephbed_curl(mk) == 0, "bucket %s made", GONE);
	}
	d3.extra[0] = "--s3-allow";
	d3.extra[1] = grant3;
	d3.extra[2] = "--local-tier";
	d3.extra[3] = tier3;
	d3.extra[4] = NULL;
	if (hx_start(&d3) != 0)
		bail_out("ckptd did not start");
	setenv("CKPTD_SOCKET", d3.sock, 1);
	if (hx_connect(&d3, &c) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(c, NROOT, NULL, &m), c, "open %s",
	    NROOT))
		bail_out("no manager");
	{
		/* the daemon's lease of the prefix first (s3lease.h) */
		char lease[600];
		const char *rl[] = { "-X", "DELETE", "-o", "/dev/null", lease,
		    NULL };
		const char *rm[] = { "-X", "DELETE", "-o", "/dev/null", url,
		    NULL };

		snprintf(lease, sizeof lease, "%s/run/.ckptd-lease", url);
		ok(cephbed_curl(rl) == 0, "its lease object removed");
		ok(cephbed_curl(rm) == 0, "bucket %s removed", GONE);
	}
	fill(w, 4096, 8);
	t0 = hx_now_ms();
	ok_call(save_w(c, m, 8, w, 4096), c, "save step 8: durable locally");
	ok(wait_for(upload_given_up, m, 60), "the upload is given up");
	diag("given up after %" PRId64 " ms", hx_now_ms() - t0);
	ok_call(ckpt_list_steps(m, &v, &n), c, "list steps");
	ok(n == 1 && strstr(v[0].upload_error, "NoSuchBucket") != NULL,
	    "the reason names the refusal: %s", n == 1 ?
	    v[0].upload_error : "?");
	free(v);
	is_int(log_count(&d3, "upload given up after 2 tries"), 1,
	    "after two tries of the ten allowed");
	is_int(log_count(&d3, "upload failed (try 1 of 2"), 1,
	    "one retry logged");
	if (snprintf(dir, sizeof dir, "%s/%s/8", tier3, NLOCAL) >=
	    (int)sizeof dir)
		bail_out("path too long");
	hx_join(path, dir, "_CHECKPOINT_METADATA");
	ok(hx_exists(path), "the local copy kept");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ok(hx_stop(&d3) == 0, "ckptd stopped cleanly");
	setenv("CKPTD_SOCKET", d.sock, 1);
}

int
main(void)
{
	float *w = malloc((size_t)NBIG * sizeof *w);

	if (w == NULL)
		bail_out("out of memory");
	if (cephbed_start(&bed) != 0)
		bail_out("no radosgw");
	if (s3peek_init(BUCKET) != 0)
		bail_out("no bucket");
	hx_init(&d);
	if (snprintf(tier, sizeof tier, "%s/tier", d.dir) >=
	    (int)sizeof tier || snprintf(local, sizeof local, "%s/%s", tier,
	    LOCAL_NAME) >= (int)sizeof local)
		bail_out("path too long");
	snprintf(grant, sizeof grant, "%u:s3://%s", (unsigned)getuid(),
	    BUCKET);
	mport = hx_free_port();
	snprintf(mlisten, sizeof mlisten, "127.0.0.1:%d", mport);
	d.extra[0] = "--s3-allow";
	d.extra[1] = grant;
	d.extra[2] = "--local-tier";
	d.extra[3] = tier;
	d.extra[4] = "--metrics-listen";
	d.extra[5] = mlisten;
	d.extra[6] = NULL;
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	durable_locally_first(w);
	restore_after_wipe(w);
	corrupt_local_falls_back(w);
	kill_during_upload();
	retention_both(w);
	foreign_directory();
	distributed_step();
	give_up_then_sighup(w);
	no_bucket_gives_up(w);
	hx_cleanup(&d2);
	hx_cleanup(&d3);
	hx_cleanup(&d);
	s3peek_done();
	cephbed_stop(&bed);
	free(w);
	return done_testing();
}
