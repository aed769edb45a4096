/*
 * test_daemon_s3_big.c - a 1 GiB step of an s3:// root through ckptd, on a
 * real Ceph radosgw (tests/ceph/rgw.sh): saved (a multipart upload of one
 * 1 GiB tensor), restored byte for byte, verified; the memory the daemon
 * holds meanwhile stays bounded; a restore of one item of four, and a
 * restore of the structure only, GET only what they need (radosgw's own
 * count of the bytes it sent).
 *
 * The daemon's memory is sampled from /proc every few milliseconds: its
 * anonymous resident memory (RssAnon) plus the bytes of the memfds of its
 * s3 backend ("ckptd-s3"). VmRSS/VmHWM alone would not see a file staged
 * in a memfd (written, never mapped), and they do count the client's
 * staging buffer the daemon maps to hash and send (the client's memory,
 * whatever the backend): both are shown in the diagnostics.
 */
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "harness.h"
#include "s3peek.h"
#include "cephbed.h"

#define BUCKET "ckpt-big"
#define ROOT "s3://" BUCKET "/big"
#define GIB (1ull << 30)
#define QUARTER (64ull << 20)
/* The daemon may hold this much above its idle state. */
#define MEM_BOUND (256ull << 20)

static struct cephbed bed;
static struct hx_daemon d;

/* ---- the daemon's memory ------------------------------------------------ */

/* A line "Name:   N kB" of /proc/PID/status, in bytes (0 when absent). */
static uint64_t
status_kb(pid_t pid, const char *name)
{
	char path[64], line[256];
	size_t nl = strlen(name);
	uint64_t v = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, name, nl) == 0 && line[nl] == ':') {
			v = strtoull(line + nl + 1, NULL, 10) << 10;
			break;
		}
	fclose(f);
	return v;
}

/* Bytes held in the memfds of the daemon's s3 backend. */
static uint64_t
memfd_bytes(pid_t pid)
{
	char dir[64], path[320], link[256];
	struct dirent *de;
	struct stat st;
	uint64_t sum = 0;
	ssize_t n;
	DIR *dp;

	snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
	if ((dp = opendir(dir)) == NULL)
		return 0;
	while ((de = readdir(dp)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if ((n = readlink(path, link, sizeof link - 1)) <= 0)
			continue;
		link[n] = '\0';
		if (strncmp(link, "/memfd:ckptd-s3", 15) == 0 &&
		    stat(path, &st) == 0)
			sum += (uint64_t)st.st_blocks * 512;
	}
	closedir(dp);
	return sum;
}

static uint64_t
daemon_mem(pid_t pid)
{
	return status_kb(pid, "RssAnon") + memfd_bytes(pid);
}

struct sampler {
	pthread_t th;
	pid_t pid;
	int stop;               /* atomic */
	uint64_t peak;
};

static void *
sampler_run(void *arg)
{
	struct sampler *s = arg;
	struct timespec ts = { 0, 5 * 1000 * 1000 };
	uint64_t v;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		if ((v = daemon_mem(s->pid)) > s->peak)
			s->peak = v;
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void
sampler_start(struct sampler *s)
{
	memset(s, 0, sizeof *s);
	s->pid = d.pid;
	if (pthread_create(&s->th, NULL, sampler_run, s) != 0)
		bail_out("no sampler thread");
}

static uint64_t
sampler_stop(struct sampler *s)
{
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(s->th, NULL);
	return s->peak;
}

static uint64_t
rgw_sent(void)
{
	uint64_t v = 0;

	if (cephbed_rgw_counter(&bed, "get_b", &v) != 0)
		bail_out("radosgw perf counter get_b not found");
	return v;
}

/* ---- tests -------------------------------------------------------------- */

static int
same_as_pattern(const unsigned char *p, uint64_t len, uint64_t seed)
{
	unsigned char *buf = malloc(16u << 20);
	uint64_t off;
	size_t n;
	int same = 1;

	if (buf == NULL)
		bail_out("out of memory");
	for (off = 0; off < len && same; off += n) {
		n = len - off > (16u << 20) ? 16u << 20 : (size_t)(len - off);
		cephbed_fill(buf, off, n, seed);
		same = memcmp(p + off, buf, n) == 0;
	}
	free(buf);
	return same;
}

static void
one_gib_step(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	struct sampler s;
	ckpt_leaf lf;
	unsigned char *w;
	int64_t shw[1] = { (int64_t)GIB };
	uint64_t idle, peak, hwm0, sent;
	int64_t t0;
	char out[4096], *argv[5];
	int r, saved = 0;
	long k;

	if ((w = malloc(GIB)) == NULL)
		bail_out("out of memory");
	cephbed_fill(w, 0, GIB, 11);
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, ROOT, NULL, &m);
	if (!ok_call(r, c, "open a manager on %s", ROOT))
		bail_out("no manager");
	ckpt_tree_add_array(t, "w", CKPT_U8, 1, shw, w, GIB);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);

	idle = daemon_mem(d.pid);
	hwm0 = status_kb(d.pid, "VmHWM");
	sampler_start(&s);
	t0 = hx_now_ms();
	r = ckpt_save(m, 1, a, &saved);
	ok_call(r, c, "save a step of one 1 GiB tensor");
	r = ckpt_wait_until_finished(m);
	peak = sampler_stop(&s);
	ok_call(r, c, "the 1 GiB step is durable");
	free(w);
	ckpt_tree_free(t);
	ckpt_save_args_free(a);
	diag("save: %" PRId64 " ms; daemon memory idle %" PRIu64 " MiB, peak %"
	    PRIu64 " MiB (RssAnon + its memfds); VmHWM %" PRIu64 " -> %" PRIu64
	    " MiB (with the client's staging buffer it maps)", hx_now_ms() - t0,
	    idle >> 20, peak >> 20, hwm0 >> 20,
	    status_kb(d.pid, "VmHWM") >> 20);
	ok(peak < idle + MEM_BOUND, "save: the daemon held less than %llu "
	    "MiB more than idle (%" PRIu64 " MiB)", MEM_BOUND >> 20,
	    (peak - idle) >> 20);
	ok(s3peek_has("big/1/default/data-00000.safetensors") &&
	    s3peek_has("big/1/_CHECKPOINT_METADATA"),
	    "the data object and the commit are there");

	sent = rgw_sent();
	t0 = hx_now_ms();
	r = ckpt_restore(m, 1, NULL, &res);
	t0 = hx_now_ms() - t0;
	sent = rgw_sent() - sent;
	if (ok_call(r, c, "restore the 1 GiB step")) {
		rt = ckpt_restored_item_tree(res, 0);
		k = rt != NULL ? ckpt_tree_find(rt, "w") : -1;
		ok(k >= 0 && ckpt_tree_leaf(rt, (size_t)k, &lf) == 0 &&
		    lf.nbytes == GIB && same_as_pattern(lf.data, GIB, 11),
		    "the 1 GiB tensor restored byte for byte");
		ckpt_restored_free(res);
	}
	diag("restore: %" PRId64 " ms, radosgw sent %" PRIu64 " MiB", t0,
	    sent >> 20);
	ok(sent >= GIB - (1u << 20) && sent < GIB + (4u << 20),
	    "restore: each byte GET once (%" PRIu64 " bytes)", sent);

	argv[0] = getenv("CKPTCTL_BIN");
	argv[1] = "verify";
	argv[2] = ROOT;
	argv[3] = NULL;
	if (argv[0] == NULL)
		bail_out("CKPTCTL_BIN not set");
	idle = daemon_mem(d.pid);
	sent = rgw_sent();
	sampler_start(&s);
	t0 = hx_now_ms();
	r = hx_run(argv, out, sizeof out, 300);
	t0 = hx_now_ms() - t0;
	peak = sampler_stop(&s);
	sent = rgw_sent() - sent;
	is_int(r, 0, "ckptctl verify of the 1 GiB step");
	if (r != 0)
		diag("%s", out);
	diag("verify: %" PRId64 " ms; daemon memory idle %" PRIu64 " MiB, "
	    "peak %" PRIu64 " MiB; radosgw sent %" PRIu64 " MiB", t0,
	    idle >> 20, peak >> 20, sent >> 20);
	ok(peak < idle + MEM_BOUND, "verify: the daemon held less than %llu "
	    "MiB more than idle (%" PRIu64 " MiB)", MEM_BOUND >> 20,
	    (peak - idle) >> 20);
	ok(sent >= GIB - (1u << 20) && sent < GIB + (4u << 20),
	    "verify: each byte GET once (%" PRIu64 " bytes)", sent);

	r = ckpt_delete(m, 1);
	ok_call(r, c, "delete the 1 GiB step");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* Four items of 64 MiB: one of them restored GETs about a quarter of the
 * step; the structure alone, nearly nothing. */
static void
quarter_of_a_step(void)
{
	static const char *names[4] = { "a", "b", "c", "d" };
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t[4];
	ckpt_save_args *a = ckpt_save_args_new();
	ckpt_restore_args *ra;
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	unsigned char *w[4];
	int64_t sh[1] = { (int64_t)QUARTER };
	uint64_t sent;
	int r, i, saved = 0;
	long k;

	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	r = ckpt_manager_open(c, ROOT, NULL, &m);
	if (!ok_call(r, c, "open %s again", ROOT))
		bail_out("no manager");
	for (i = 0; i < 4; i++) {
		if ((w[i] = malloc(QUARTER)) == NULL)
			bail_out("out of memory");
		cephbed_fill(w[i], 0, QUARTER, 20 + (uint64_t)i);
		t[i] = ckpt_tree_new();
		ckpt_tree_add_array(t[i], "x", CKPT_U8, 1, sh, w[i], QUARTER);
		ckpt_save_args_add_tree(a, names[i], CKPT_HANDLER_STANDARD,
		    t[i]);
	}
	r = ckpt_save(m, 2, a, &saved);
	ok_call(r, c, "save a step of four 64 MiB items");
	r = ckpt_wait_until_finished(m);
	ok_call(r, c, "durable");
	for (i = 0; i < 4; i++) {
		free(w[i]);
		ckpt_tree_free(t[i]);
	}
	ckpt_save_args_free(a);

	ra = ckpt_restore_args_new();
	ckpt_restore_args_add_item(ra, "c", NULL, 0);
	sent = rgw_sent();
	r = ckpt_restore(m, 2, ra, &res);
	sent = rgw_sent() - sent;
	if (ok_call(r, c, "restore item c alone")) {
		rt = ckpt_restored_item_tree(res, 0);
		k = rt != NULL ? ckpt_tree_find(rt, "x") : -1;
		ok(k >= 0 && ckpt_tree_leaf(rt, (size_t)k, &lf) == 0 &&
		    lf.nbytes == QUARTER &&
		    same_as_pattern(lf.data, QUARTER, 22),
		    "item c restored byte for byte");
		ckpt_restored_free(res);
	}
	ckpt_restore_args_free(ra);
	diag("one item of four: radosgw sent %" PRIu64 " bytes of a %llu "
	    "byte step", sent, 4 * QUARTER);
	ok(sent >= QUARTER - (1u << 20) && sent < QUARTER + (1u << 20),
	    "one item of four GETs a quarter of the step (%" PRIu64 ")",
	    sent);

	sent = rgw_sent();
	r = ckpt_item_metadata(m, 2, &res);
	sent = rgw_sent() - sent;
	if (ok_call(r, c, "the step's structure"))
		ckpt_restored_free(res);
	ok(sent < (1u << 20), "the structure alone GETs no tensor (%" PRIu64
	    " bytes)", sent);
	r = ckpt_delete(m, 2);
	ok_call(r, c, "delete it");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* A bail out stops radosgw too. */
static void
stop_bed(void)
{
	hx_cleanup(&d);
	cephbed_stop(&bed);
}

int
main(void)
{
	if (cephbed_start(&bed) != 0)
		bail_out("no radosgw");
	if (s3peek_init(BUCKET) != 0)
		bail_out("no bucket");
	hx_init(&d);
	atexit(stop_bed);
	d.extra[0] = "--s3-allow";
	d.extra[1] = "0:s3://" BUCKET;
	d.extra[2] = NULL;
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	one_gib_step();
	quarter_of_a_step();
	ok(hx_alive(&d), "the daemon is alive");
	s3peek_done();
	return done_testing();
}
