/*
 * test_leftovers.c - what a crash leaves behind never takes the service
 * down, never leaks space, and is visible:
 *
 *  - a short LMDB index (data.mdb truncated at ten sizes, 30000 among
 *    them: power loss with unsynced commits, a full disk, a partial copy)
 *    and the marker of a machine that went down while ckptd ran: ckptd
 *    starts, serves, and lists the steps on disk (the index is rebuilt);
 *  - kill -9 in the middle of a large save: at start-up the leftover
 *    <step>.ckptd-tmp is removed, the lost save is logged, listed by
 *    `ckptctl steps` as "interrupted" with its time (also after a clean
 *    restart) and counted in ckptd_saves_interrupted_total, until the
 *    step is saved again;
 *  - a hidden .<step>.ckptd-del of a delete cut short (made by hand, and
 *    by a real kill -9 during the delete of a 1000-item step) is removed
 *    at start too;
 *    Orbax's *.orbax-checkpoint-tmp-* only with cleanup_tmp_directories.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define BIG_LEAVES 4
#define BIG_LEAF (128u << 20)

static struct hx_daemon d;
static char root[HX_PATH];
static char metrics_addr[64];
static int metrics_port;

static int open_root(ckpt_client **c, ckpt_manager **m, int cleanup)
{
	ckpt_options *o = ckpt_options_new();
	int r;

	*c = NULL;
	*m = NULL;
	if (cleanup)
		ckpt_options_set_cleanup_tmp_directories(o, 1);
	r = hx_connect(&d, c);
	if (r == 0)
		r = ckpt_manager_open(*c, root, o, m);
	if (r != 0)
		diag("open %s: %s", root, *c ? ckpt_client_errmsg(*c) :
		    ckpt_connect_errmsg());
	ckpt_options_free(o);
	return r;
}

static void close_root(ckpt_client *c, ckpt_manager *m)
{
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* A small step with a large metrics object (so the index grows). */
static int save_small(ckpt_manager *m, uint64_t step)
{
	static char metrics[4096];
	ckpt_save_args *a = ckpt_save_args_new();
	ckpt_tree *t = ckpt_tree_new();
	int64_t shape[1] = { 4 };
	float w[4] = { 1, 2, 3, (float)step };
	size_t off;
	int r, i, saved = 0;

	off = (size_t)snprintf(metrics, sizeof metrics, "{\"loss\": %d",
	    (int)step);
	for (i = 0; i < 120 && off < sizeof metrics - 40; i++)
		off += (size_t)snprintf(metrics + off, sizeof metrics - off,
		    ", \"m%03d\": %d.25", i, i * (int)step);
	snprintf(metrics + off, sizeof metrics - off, "}");
	ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, w, sizeof w);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	ckpt_save_args_set_metrics(a, metrics);
	r = ckpt_save(m, step, a, &saved);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	if (r == 0 && !saved)
		r = -1;
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return r;
}

/* "1,2,3" of the committed steps; "!" on error. */
static void committed_list(char *buf, size_t len)
{
	ckpt_client *c;
	ckpt_manager *m;
	uint64_t *v = NULL;
	size_t n = 0, i, off = 0;

	buf[0] = '\0';
	if (open_root(&c, &m, 0) != 0 || ckpt_all_steps(m, &v, &n) != 0) {
		snprintf(buf, len, "!");
	} else {
		for (i = 0; i < n && off < len; i++)
			off += (size_t)snprintf(buf + off, len - off, "%s%llu",
			    i ? "," : "", (unsigned long long)v[i]);
	}
	free(v);
	close_root(c, m);
}

static char *read_log(void)
{
	char *s = hx_read_file(d.log, NULL);

	return s ? s : strdup("");
}

/* ---- a short index -------------------------------------------------------------- */

static void copy_file(const char *from, const char *to)
{
	size_t len = 0;
	char *buf = hx_read_file(from, &len);
	int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (!buf || fd < 0 || write(fd, buf, len) != (ssize_t)len)
		bail_out("copy %s: %s", from, strerror(errno));
	close(fd);
	free(buf);
}

static void short_index(void)
{
	char data[HX_PATH], orig[HX_PATH], lock[HX_PATH], marker[HX_PATH];
	char want[4096], got[4096], *log;
	ckpt_client *c;
	ckpt_manager *m;
	struct stat st;
	off_t sizes[10];
	uint64_t s, x = 0x9e3779b97f4a7c15ull;
	int i, r, started;

	if (open_root(&c, &m, 0) != 0)
		bail_out("cannot open %s", root);
	for (s = 1, r = 0; s <= 40 && r == 0; s++)
		r = save_small(m, s);
	is_int(r, 0, "index: 40 steps saved");
	close_root(c, m);
	committed_list(want, sizeof want);
	is_int(hx_stop(&d), 0, "index: clean stop");

	hx_path(&d, data, "state/index/data.mdb");
	hx_path(&d, lock, "state/index/lock.mdb");
	hx_path(&d, orig, "data.mdb.orig");
	hx_path(&d, marker, "state/index/running");
	ok(!hx_exists(marker), "index: a clean stop leaves no running marker");
	if (stat(data, &st) != 0)
		bail_out("stat %s: %s", data, strerror(errno));
	diag("data.mdb is %lld bytes", (long long)st.st_size);
	ok(st.st_size > 40000, "index: the index is larger than 40000 bytes");
	copy_file(data, orig);
	sizes[0] = 30000;
	for (i = 1; i < 10; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		sizes[i] = (off_t)(x % (uint64_t)st.st_size);
	}
	for (i = 0; i < 10; i++) {
		copy_file(orig, data);
		unlink(lock);
		if (truncate(data, sizes[i]) != 0)
			bail_out("truncate: %s", strerror(errno));
		started = hx_start(&d) == 0;
		ok(started, "index truncated to %lld bytes: ckptd starts",
		    (long long)sizes[i]);
		if (!started) {
			hx_dump_log(&d, 10);
			hx_kill9(&d);
			continue;
		}
		committed_list(got, sizeof got);
		is_str(got, want, "... serves and lists the steps on disk");
		if (open_root(&c, &m, 0) == 0) {
			is_int(save_small(m, 1000 + (uint64_t)i), 0,
			    "... and saves");
			ckpt_delete(m, 1000 + (uint64_t)i);
		} else {
			ok(0, "... and saves");
		}
		close_root(c, m);
		ok(hx_alive(&d), "... still running");
		is_int(hx_stop(&d), 0, "... stops cleanly");
	}
	log = read_log();
	has(log, "meta pages need", "index: the log names the short index");
	free(log);

	/* The marker of a run on a machine that went down. */
	copy_file(orig, data);
	hx_write_file(marker, "00000000-0000-0000-0000-000000000000\n");
	ok(hx_start(&d) == 0, "index: after a machine crash ckptd starts");
	committed_list(got, sizeof got);
	is_str(got, want, "... and lists the steps on disk");
	log = read_log();
	has(log, "machine went down", "... the log says the index was "
	    "rebuilt after a machine crash");
	free(log);
	/* kill -9 (same boot): the index is kept. */
	hx_kill9(&d);
	ok(hx_exists(marker), "index: kill -9 leaves the running marker");
	ok(hx_start(&d) == 0, "index: after kill -9 ckptd starts");
	log = read_log();
	has(log, "index is kept", "... and keeps its index (same boot)");
	free(log);
	committed_list(got, sizeof got);
	is_str(got, want, "... and lists the steps on disk");
	unlink(orig);
}

/* ---- leftovers and interrupted saves --------------------------------------------- */

static void *big[BIG_LEAVES];

static int start_big(ckpt_manager *m, uint64_t step)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int64_t shape[1] = { BIG_LEAF / 4 };
	char name[32];
	int i, r;

	for (i = 0; i < BIG_LEAVES; i++) {
		if (!big[i] && !(big[i] = malloc(BIG_LEAF)))
			bail_out("out of memory");
		hx_fill(big[i], BIG_LEAF, step * 10 + (uint64_t)i);
		snprintf(name, sizeof name, "layer%d/w", i);
		ckpt_tree_add_array(t, name, CKPT_F32, 1, shape, big[i],
		    BIG_LEAF);
	}
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, step, a, NULL);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return r;
}

/* The value of one Prometheus sample, or -1. */
static long long metric(const char *name)
{
	struct sockaddr_in sa;
	char buf[16384], *p;
	size_t used = 0;
	ssize_t n;
	int fd;
	long long v = -1;

	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		return -1;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)metrics_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return -1;
	}
	dprintf(fd, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
	while (used < sizeof buf - 1 &&
	    (n = read(fd, buf + used, sizeof buf - 1 - used)) > 0)
		used += (size_t)n;
	buf[used] = '\0';
	close(fd);
	for (p = buf; (p = strstr(p, name)) != NULL; p++)
		if ((p == buf || p[-1] == '\n') && p[strlen(name)] == ' ') {
			v = atoll(p + strlen(name) + 1);
			break;
		}
	return v;
}

static int ckptctl_steps(char *out, size_t len)
{
	const char *bin = getenv("CKPTCTL_BIN");
	char *argv[] = { (char *)bin, "--socket", d.sock, "steps", root, NULL };

	if (!bin)
		return -1;
	return hx_run(argv, out, len, 30);
}

static void leftovers(void)
{
	char tmp[HX_PATH], del[HX_PATH], orbax[HX_PATH], p[HX_PATH];
	char out[8192], got[256], *log;
	ckpt_client *c;
	ckpt_manager *m;
	ckpt_step_info *inf = NULL;
	size_t n = 0, i;
	int seen = 0, r, found;
	long long before;

	hx_path(&d, tmp, "leftover");
	snprintf(root, sizeof root, "%s", tmp);
	if (open_root(&c, &m, 0) != 0)
		bail_out("cannot open %s", root);
	is_int(save_small(m, 1), 0, "leftovers: step 1 saved");
	hx_path(&d, tmp, "leftover/2.ckptd-tmp");
	r = start_big(m, 2);
	is_int(r, 0, "leftovers: a 512 MiB save of step 2 accepted");
	for (i = 0; i < 20000 && !seen; i++) {
		seen = hx_exists(tmp);
		if (!seen)
			hx_sleep_ms(1);
	}
	ok(seen, "leftovers: step 2 is being written");
	hx_kill9(&d);
	close_root(c, m);
	ok(hx_exists(tmp), "leftovers: kill -9 left 2.ckptd-tmp");
	/* A delete cut short leaves its step hidden: make one as it would
	 * (the step renamed to .<name>.ckptd-del, half removed). */
	hx_path(&d, del, "leftover/.7.ckptd-del");
	hx_path(&d, p, "leftover/.7.ckptd-del/default");
	hx_mkdirs(p);
	hx_path(&d, p, "leftover/.7.ckptd-del/default/_METADATA");
	hx_write_file(p, "{}");
	hx_path(&d, orbax, "leftover/9.orbax-checkpoint-tmp-1712345678");
	hx_mkdirs(orbax);

	if (hx_start(&d) != 0)
		bail_out("cannot restart ckptd");
	/* At start, before anyone opens the root. */
	for (i = 0; i < 100 && (hx_exists(tmp) || hx_exists(del)); i++)
		hx_sleep_ms(100);
	ok(!hx_exists(tmp), "leftovers: at start ckptd removed 2.ckptd-tmp");
	ok(!hx_exists(del), "leftovers: ... and .7.ckptd-del");
	ok(hx_exists(orbax), "leftovers: ... but not Orbax's tmp dir "
	    "(cleanup_tmp_directories is off)");
	/* The sweep logs and counts right after it removed the dir. */
	for (i = 0; i < 100; i++) {
		before = metric("ckptd_saves_interrupted_total");
		log = read_log();
		found = before == 1 && strstr(log, "step 2 was interrupted");
		free(log);
		if (found)
			break;
		hx_sleep_ms(100);
	}
	is_int(before, 1, "leftovers: ckptd_saves_interrupted_total counts "
	    "the interrupted save");
	log = read_log();
	has(log, "step 2 was interrupted", "leftovers: the log at start "
	    "names the interrupted save");
	free(log);
	if (open_root(&c, &m, 0) != 0)
		bail_out("cannot open %s", root);
	r = ckpt_list_steps(m, &inf, &n);
	found = 0;
	for (i = 0; r == 0 && i < n; i++) {
		if (inf[i].step != 2)
			continue;
		found = 1;
		is_int(inf[i].state, 3, "leftovers: step 2 is listed as "
		    "interrupted");
		ok(inf[i].init_ns > 0, "... with its time");
		has(inf[i].error, "interrupted", "... and why (%s)",
		    inf[i].error);
	}
	ok(found, "leftovers: step 2 is listed");
	free(inf);
	committed_list(got, sizeof got);
	is_str(got, "1", "leftovers: only step 1 is committed");
	close_root(c, m);

	/* Still listed after a clean restart; ckptctl shows it. */
	is_int(hx_restart(&d), 0, "leftovers: clean restart");
	r = ckptctl_steps(out, sizeof out);
	is_int(r, 0, "leftovers: ckptctl steps runs");
	has(out, "interrupted", "leftovers: ckptctl steps lists step 2 as "
	    "interrupted:\n%s", out);

	/* With cleanup_tmp_directories, Orbax's tmp dirs go too. */
	if (open_root(&c, &m, 1) != 0)
		bail_out("cannot open %s", root);
	hx_sleep_ms(500);
	ok(!hx_exists(orbax), "leftovers: cleanup_tmp_directories removes "
	    "Orbax's tmp dir");
	/* Saving the step again replaces the record. */
	is_int(save_small(m, 2), 0, "leftovers: step 2 saved again");
	r = ckpt_list_steps(m, &inf, &n);
	for (i = 0; r == 0 && i < n; i++)
		if (inf[i].step == 2)
			is_int(inf[i].state, 0, "leftovers: step 2 is "
			    "committed now");
	free(inf);
	close_root(c, m);
	r = ckptctl_steps(out, sizeof out);
	ok(r == 0 && !strstr(out, "interrupted"), "leftovers: ckptctl steps "
	    "no longer lists an interrupted save");
	for (i = 0; i < BIG_LEAVES; i++)
		free(big[i]);
}

/* ---- kill -9 in the middle of a delete ------------------------------------------- */

#define DEL_ITEMS 1000

static int save_many_items(ckpt_manager *m, uint64_t step)
{
	ckpt_save_args *a = ckpt_save_args_new();
	ckpt_tree *t[DEL_ITEMS];
	int64_t shape[1] = { 4 };
	static float w[4] = { 1, 2, 3, 4 };
	char name[32];
	int i, r = 0, saved = 0;

	for (i = 0; i < DEL_ITEMS; i++) {
		t[i] = ckpt_tree_new();
		ckpt_tree_add_array(t[i], "w", CKPT_F32, 1, shape, w, sizeof w);
		snprintf(name, sizeof name, "item%04d", i);
		if (r == 0)
			r = ckpt_save_args_add_tree(a, name,
			    CKPT_HANDLER_STANDARD, t[i]);
	}
	if (r == 0)
		r = ckpt_save(m, step, a, &saved);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	if (r == 0 && !saved)
		r = -1;
	for (i = 0; i < DEL_ITEMS; i++)
		ckpt_tree_free(t[i]);
	ckpt_save_args_free(a);
	return r;
}

static void interrupted_delete(void)
{
	char hidden[HX_PATH], got[256];
	ckpt_client *c, *c2 = NULL;
	ckpt_manager *m, *m2 = NULL;
	int64_t t0;
	int r, seen = 0, round;
	pid_t pid;

	hx_path(&d, root, "deleting");
	for (round = 0; round < 3 && !seen; round++) {
		if (open_root(&c, &m, 0) != 0)
			bail_out("cannot open %s", root);
		r = save_many_items(m, 5);
		is_int(r, 0, "delete: step 5 with %d items saved", DEL_ITEMS);
		if (round == 0)
			is_int(save_small(m, 6), 0, "delete: step 6 saved");
		close_root(c, m);
		hx_path(&d, hidden, "deleting/.5.ckptd-del");
		fflush(stdout);
		if ((pid = fork()) == 0) {
			if (hx_connect(&d, &c2) == 0 &&
			    ckpt_manager_open(c2, root, NULL, &m2) == 0)
				ckpt_delete(m2, 5);
			_exit(0);
		}
		for (t0 = hx_now_ms(); hx_now_ms() - t0 < 20000; ) {
			if ((seen = hx_exists(hidden)) != 0) {
				hx_kill9(&d);
				break;
			}
			if (!hx_exists(root))
				break;
		}
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		if (seen)
			seen = hx_exists(hidden);
		if (!seen)
			diag("round %d: the delete finished before kill -9",
			    round);
		if (!hx_alive(&d) && hx_start(&d) != 0)
			bail_out("cannot restart ckptd");
	}
	if (!ok(seen, "delete: kill -9 cut a delete short (.5.ckptd-del "
	    "left)"))
		return;
	hx_kill9(&d);   /* already dead: reaped */
	if (hx_start(&d) != 0)
		bail_out("cannot restart ckptd");
	for (r = 0; r < 100 && hx_exists(hidden); r++)
		hx_sleep_ms(100);
	ok(!hx_exists(hidden), "delete: at start ckptd removed .5.ckptd-del");
	committed_list(got, sizeof got);
	is_str(got, "6", "delete: step 5 is gone, step 6 listed");
}

int main(void)
{
	hx_init(&d);
	metrics_port = hx_free_port();
	snprintf(metrics_addr, sizeof metrics_addr, "127.0.0.1:%d",
	    metrics_port);
	d.extra[0] = "--metrics-listen";
	d.extra[1] = metrics_addr;
	d.extra[2] = NULL;
	if (hx_start(&d) != 0)
		bail_out("cannot start ckptd");
	hx_path(&d, root, "run");
	short_index();
	leftovers();
	interrupted_delete();
	if (tap_failures())
		hx_dump_log(&d, 40);
	hx_cleanup(&d);
	return done_testing();
}
