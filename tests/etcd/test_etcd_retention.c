/*
 * test_etcd_retention.c - the retention of a distributed job, once for
 * the cluster, and the etcd keys of deleted steps.
 *
 * Two nodes (namespaces), one etcd member, four ranks, two per node's
 * daemon; rank 0, the primary, is on node 0, whose daemon commits. The
 * ranks' managers keep 2 steps (max_to_keep). A manager held open on each
 * node lists the steps: its root stays loaded, so what it lists is what
 * the daemon learned, not a fresh scan of the directory.
 *  - steps 1..STEPS: after each, both nodes list exactly the last two
 *    within 1 s; each dropped step was deleted exactly once (one
 *    "deleted" line in the two daemons' logs, on node 0) and told to
 *    node 1 (its "deleted by another node" line); its directory is gone,
 *    and etcd holds no key of it (nor its entry in the index of the
 *    root's steps by job, through which a delete finds exactly its
 *    keys), nor any rank key;
 *  - a delete through node 1 (not the committer) shows on node 0 within
 *    1 s, and the step's keys go;
 *  - a step that fails (a rank never saves it) leaves no key in etcd
 *    once the primary's node has aborted it; one whose primary never
 *    saves it (no daemon holds its primary part) none once the node
 *    that recorded its failure has waited out the step's timeout;
 *  - node 1's daemon, stopped while node 0 deletes a step, lists the
 *    right steps once started again;
 *  - step 3, deleted by retention, is saved again and commits;
 *  - the delay from a delete on one node to the step dropped on the
 *    other, from the daemons' log stamps: median and worst.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nodes.h"

#define NODES 2
#define RANKS 4
#define STEPS 8
#define KEEP 2

static struct nodes s;
static ckpt_client *lc[NODES];
static ckpt_manager *lm[NODES];

static int
open_lister(int node)
{
	if (hx_connect(&s.d[node], &lc[node]) != 0 ||
	    ckpt_manager_open(lc[node], s.root, NULL, &lm[node]) != 0) {
		diag("open on node %d: %s", node, lc[node] != NULL ?
		    ckpt_client_errmsg(lc[node]) : "connect");
		return -1;
	}
	return 0;
}

static void
close_lister(int node)
{
	ckpt_manager_close(lm[node]);
	ckpt_disconnect(lc[node]);
	lm[node] = NULL;
	lc[node] = NULL;
}

/* 1 when node lists exactly steps lo..hi except skip (0: none). */
static int
lists(int node, uint64_t lo, uint64_t hi, uint64_t skip, char *got,
    size_t len)
{
	uint64_t *v = NULL, want;
	size_t n = 0, i, off = 0;
	int same;

	got[0] = '\0';
	if (ckpt_all_steps(lm[node], &v, &n) != 0) {
		snprintf(got, len, "error: %s", ckpt_manager_errmsg(lm[node]));
		return 0;
	}
	for (i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(got + off, len - off, " %" PRIu64,
		    v[i]);
	for (same = 1, i = 0, want = lo; want <= hi; want++) {
		if (want == skip)
			continue;
		same &= i < n && v[i] == want;
		i++;
	}
	same &= i == n;
	free(v);
	return same;
}

/* Both nodes list lo..hi (but skip) within timeout_ms; the time taken. */
static int64_t
both_list(uint64_t lo, uint64_t hi, uint64_t skip, int timeout_ms,
    const char *what)
{
	int64_t t0 = hx_now_ms(), end = t0 + timeout_ms;
	char got[NODES][256];
	int node, all;

	for (;;) {
		for (all = 1, node = 0; node < NODES; node++)
			all &= lists(node, lo, hi, skip, got[node],
			    sizeof got[node]);
		if (all || hx_now_ms() >= end)
			break;
		hx_sleep_ms(5);
	}
	for (node = 0; node < NODES; node++)
		ok(lists(node, lo, hi, skip, got[node], sizeof got[node]),
		    "%s: node %d lists steps %" PRIu64 "..%" PRIu64
		    " within %d ms (lists%s)", what, node, lo, hi, timeout_ms,
		    got[node]);
	return hx_now_ms() - t0;
}

/* Lines of node's log holding needle; *ms the stamp of the first. */
static int
log_count(int node, const char *needle, int64_t *ms)
{
	char *text = hx_read_file(s.d[node].log, NULL), *p, *bol;
	struct tm tm;
	int n = 0, msec;

	if (text == NULL)
		return -1;
	for (p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
		if (n++ > 0 || ms == NULL)
			continue;
		for (bol = p; bol > text && bol[-1] != '\n'; bol--)
			;
		memset(&tm, 0, sizeof tm);
		msec = 0;
		if (sscanf(bol, "%d-%d-%d %d:%d:%d.%d", &tm.tm_year,
		    &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
		    &tm.tm_sec, &msec) != 7) {
			*ms = -1;
			continue;
		}
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		*ms = (int64_t)timegm(&tm) * 1000 + msec;
	}
	free(text);
	return n;
}

/* Deleted once (on node from, the only "deleted" line of both logs),
 * dropped on the other node; *delay_ms from the one to the other. */
static void
deleted_once(uint64_t step, int from, int64_t *delay_ms)
{
	char del[HX_PATH + 64], drop[HX_PATH + 64];
	int64_t t_del = -1, t_drop = -1;
	int n[NODES], d, node, other = 1 - from;

	snprintf(del, sizeof del, "step %s/%" PRIu64 " deleted", s.root, step);
	snprintf(drop, sizeof drop, "step %s/%" PRIu64 " was deleted by "
	    "another node", s.root, step);
	for (node = 0; node < NODES; node++)
		n[node] = log_count(node, del, node == from ? &t_del : NULL);
	is_int(n[0] + n[1], 1, "step %" PRIu64 " deleted once in the cluster "
	    "(node 0: %d, node 1: %d)", step, n[0], n[1]);
	is_int(n[from], 1, "by node %d", from);
	d = log_count(other, drop, &t_drop);
	is_int(d, 1, "node %d dropped step %" PRIu64 " from its list once, "
	    "told by etcd", other, step);
	*delay_ms = t_del >= 0 && t_drop >= 0 ? t_drop - t_del : -1;
	diag("step %" PRIu64 ": deleted on node %d, dropped on node %d %"
	    PRId64 " ms later", step, from, other, *delay_ms);
}

struct keys {
	const char *needle;
	int show;
	int n;
};

static void
count_key(void *arg, const char *key)
{
	struct keys *k = arg;

	if (strstr(key, k->needle) == NULL)
		return;
	if (k->show)
		diag("  key %s", key);
	k->n++;
}

/* Keys under prefix holding needle ("" for all), told; -1 on error. */
static int
keys_under(const char *prefix, const char *needle, int show)
{
	struct keys k = { needle, show, 0 };

	if (bed_keys(&s.b, 0, prefix, count_key, &k) < 0)
		return -1;
	return k.n;
}

/* Keys of the jobs' steps (/ckpt/v1/job/) holding needle. */
static int
etcd_keys(const char *needle, int show)
{
	return keys_under("/ckpt/v1/job/", needle, show);
}

/* Entries of the index of a root's steps by job (/ckpt/v1/root/) of
 * step. */
static int
index_keys(uint64_t step, int show)
{
	char needle[64];

	snprintf(needle, sizeof needle, "/step/%020" PRIu64 "/job/", step);
	return keys_under("/ckpt/v1/root/", needle, show);
}

static int
step_keys(uint64_t step, int show)
{
	char needle[64];

	snprintf(needle, sizeof needle, "/step/%020" PRIu64 "/", step);
	return etcd_keys(needle, show);
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

int main(void)
{
	int64_t delays[STEPS + 2], ms;
	uint64_t step, lo;
	int nd = 0, gone, i, failed;

	ranks_fill(9);
	nodes_init(&s, NODES, 1, RANKS, 5, 2000);
	s.max_to_keep = KEEP;
	ok(open_lister(0) == 0 && open_lister(1) == 0, "a manager is open "
	    "on each node to list the steps");

	for (step = 1; step <= STEPS; step++) {
		char what[32];

		snprintf(what, sizeof what, "step %" PRIu64, step);
		ok(nodes_step(&s, step), "step %" PRIu64 " commits on both "
		    "nodes", step);
		lo = step > KEEP ? step - KEEP + 1 : 1;
		ms = both_list(lo, step, 0, 1000, what);
		diag("step %" PRIu64 ": both nodes list %" PRIu64 "..%" PRIu64
		    " %" PRId64 " ms after the ranks were answered", step, lo,
		    step, ms);
		if (step <= KEEP)
			continue;
		deleted_once(step - KEEP, 0, &delays[nd]);
		nd += delays[nd] >= 0;
		ok(!nodes_step_dir(&s, step - KEEP), "step %" PRIu64 "'s "
		    "directory is gone", step - KEEP);
	}
	for (step = 1, gone = 0; step <= STEPS - KEEP; step++)
		gone += step_keys(step, 1);
	is_int(gone, 0, "etcd holds no key of the deleted steps 1..%d",
	    STEPS - KEEP);
	for (step = 1, gone = 0; step <= STEPS - KEEP; step++)
		gone += index_keys(step, 1);
	is_int(gone, 0, "nor any entry of them in the index of the root's "
	    "steps by job");
	is_int(index_keys(STEPS, 1), 1, "the committed step %d has its entry "
	    "in the index (its job)", STEPS);
	is_int(etcd_keys("/rank/", 1), 0, "etcd holds no rank key");
	ok(step_keys(STEPS, 1) > 0, "etcd keeps the keys of the committed step "
	    "%d (its commit)", STEPS);

	/* A delete through the node that does not commit. */
	step = STEPS - 1;
	ok_call(ckpt_delete(lm[1], step), lc[1], "step %" PRIu64 " deleted "
	    "through node 1", step);
	ms = both_list(STEPS - 1, STEPS, step, 1000, "delete on node 1");
	diag("node 0 dropped it %" PRId64 " ms after the delete returned", ms);
	deleted_once(step, 1, &delays[nd]);
	nd += delays[nd] >= 0;
	is_int(step_keys(step, 1), 0, "etcd holds no key of step %" PRIu64, step);
	is_int(index_keys(step, 1), 0, "nor its entry in the index");

	/* A step that fails (rank 3 never saves it): once the primary's
	 * node aborted it, etcd holds no key of it. */
	step = STEPS + 1;
	s.async_timeout = 2;
	nodes_save(&s, 0, RANKS - 1, step);
	nodes_join(&s, 0, RANKS - 1);
	for (i = 0, failed = 0; i < RANKS - 1; i++)
		failed += nodes_rc(&s, i) != 0;
	is_int(failed, RANKS - 1, "step %" PRIu64 ", which rank 3 does not "
	    "save, fails on the other ranks at their timeout", step);
	s.async_timeout = 0;
	ms = hx_now_ms();
	while (step_keys(step, 0) != 0 && hx_now_ms() - ms < 2000)
		hx_sleep_ms(10);
	is_int(step_keys(step, 1), 0, "etcd holds no key of the failed step "
	    "%" PRIu64 " (after %" PRId64 " ms)", step, hx_now_ms() - ms);
	is_int(index_keys(step, 1), 0, "nor its entry in the index");
	both_list(STEPS, STEPS, 0, 1000, "failed step");

	/* A step whose primary part reaches no daemon (ranks 0 and 1 never
	 * save it): node 1's ranks fail at their timeout; node 1, which
	 * recorded the failure, removes the step's keys a timeout later. */
	step = STEPS + 2;
	s.async_timeout = 2;
	nodes_save(&s, 2, RANKS, step);
	nodes_join(&s, 2, RANKS);
	for (i = 2, failed = 0; i < RANKS; i++)
		failed += nodes_rc(&s, i) != 0;
	is_int(failed, 2, "step %" PRIu64 ", which the primary never saves, "
	    "fails on node 1's ranks at their timeout", step);
	s.async_timeout = 0;
	ok(etcd_keys("/failed", 1) == 1, "its failure is recorded in etcd");
	ms = hx_now_ms();
	while ((step_keys(step, 0) != 0 || index_keys(step, 0) != 0) &&
	    hx_now_ms() - ms < 6000)
		hx_sleep_ms(50);
	is_int(step_keys(step, 1) + index_keys(step, 1), 0, "etcd holds no key "
	    "of step %" PRIu64 " nor its entry in the index (after %" PRId64
	    " ms)", step, hx_now_ms() - ms);
	both_list(STEPS, STEPS, 0, 1000, "failed step without its primary");

	/* Node 1 misses a delete: it lists the truth once started again. */
	close_lister(1);
	ok(hx_stop(&s.d[1]) == 0, "node 1's daemon stops");
	ok_call(ckpt_delete(lm[0], STEPS), lc[0], "step %d deleted through "
	    "node 0 while node 1 is down", STEPS);
	ok(nodes_start(&s, 1, 0) == 0, "node 1's daemon starts again");
	ok(open_lister(1) == 0, "a manager is open on node 1 again");
	{
		char got[256];

		ok(lists(1, 1, 0, 0, got, sizeof got), "node 1 lists no step "
		    "after its restart (lists%s)", got);
		ok(lists(0, 1, 0, 0, got, sizeof got), "node 0 lists no step "
		    "(lists%s)", got);
	}
	is_int(etcd_keys("", 1), 0, "etcd holds no key of any step");
	is_int(keys_under("/ckpt/v1/root/", "", 1), 0, "nor any entry in the "
	    "index of a root's steps");

	/* A step deleted by retention is saved again: nothing any daemon
	 * kept of it (the join keys removed with it are no node gone)
	 * fails the new attempt. */
	s.async_timeout = 5;
	ok(nodes_step(&s, 3), "step 3, deleted by retention, is saved again "
	    "and commits on both nodes");
	s.async_timeout = 0;
	both_list(3, 3, 0, 1000, "step 3 again");

	qsort(delays, (size_t)nd, sizeof *delays, cmp64);
	if (nd > 0)
		diag("delete on one node -> dropped on the other: median %"
		    PRId64 " ms, worst %" PRId64 " ms (%d deletes)",
		    delays[nd / 2], delays[nd - 1], nd);
	ok(nd > 0 && delays[nd - 1] <= 1000, "every drop within 1 s of its "
	    "delete");

	close_lister(0);
	close_lister(1);
	nodes_fini(&s);
	return done_testing();
}
