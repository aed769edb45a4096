/*
 * test_etcd_nodes.c - one distributed step over the daemons of two nodes,
 * committed through etcd.
 *
 * Two network namespaces (bed.c), an etcd member on node 0, one ckptd per
 * node started inside its namespace with --etcd/--node; the root is one
 * directory both daemons see (the filesystem every node mounts). Four
 * ranks (libckpt threads), ranks 0-1 talking to node 0's daemon and 2-3 to
 * node 1's, save pieces of a global array and a replicated leaf:
 *  - the step commits once; both daemons list it; it restores whole and
 *    into piece targets of another layout through either daemon;
 *  - node 1's daemon is SIGKILLed while its ranks' parts are in the step:
 *    the ranks of node 0 get CKPT_ERANK naming node 1 once its lease
 *    expires; nothing is listed and no tmp dir stays;
 *  - with node 1's daemon back, step 2 is saved again and commits (the
 *    failure etcd holds is of the earlier attempt), then step 3, which
 *    ckptctl status shows waiting on node 1 while only node 0's ranks
 *    are in;
 *  - a collector of leftovers holds and removes a leftover named as step
 *    4's tmp dir while the ranks begin step 4: the daemons wait for its
 *    lock and make the directory again; step 4 commits;
 *  - step 3 left as its tmp dir (as if its committer died before the
 *    rename, with every daemon stopped): a daemon started again renames
 *    it, since etcd holds its commit.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bed.h"
#include "harness.h"
#include "ranks.h"

#define NODES 2
#define RANKS 4

static struct bed b;
static struct hx_daemon d[NODES];
static const char *node_names[NODES] = { "n0", "n1" };
static char root[HX_PATH];

static int node_of(int rank)
{
	return rank * NODES / RANKS;
}

static void *rank_thread(void *arg)
{
	struct rank *k = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t = ckpt_tree_new();

	if (ranks_join(k, &d[node_of(k->index)], root, "multi/node job",
	    RANKS, &c, &m) != 0)
		goto out;
	ranks_add_pieces(t, k->index, RANKS);
	ranks_add_replicated(t, k->step);
	k->save_rc = ranks_save(m, k->step, t);
	if (k->save_rc != 0)
		snprintf(k->msg, sizeof k->msg, "%s", ckpt_manager_errmsg(m));
	if (k->hold_ms > 0) {
		/* this rank's daemon is killed meanwhile: the process goes
		 * away without a word to it */
		hx_sleep_ms(k->hold_ms);
		ckpt_disconnect(c);
		c = NULL;
		m = NULL;
		goto out;
	}
	k->wait_rc = ckpt_wait_until_finished(m);
	if (k->save_rc == 0)
		snprintf(k->msg, sizeof k->msg, "%s", ckpt_manager_errmsg(m));
out:
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return NULL;
}

/* Ranks of [first, last) save step; hold_ms as rank_thread. */
static void start_ranks(pthread_t *th, struct rank *k, int first, int last,
    uint64_t step, int hold_ms)
{
	int i;

	for (i = first; i < last; i++) {
		memset(&k[i], 0, sizeof k[i]);
		k[i].index = i;
		k[i].step = step;
		k[i].hold_ms = hold_ms;
		pthread_create(&th[i], NULL, rank_thread, &k[i]);
	}
}

static void join_ranks(pthread_t *th, int first, int last)
{
	int i;

	for (i = first; i < last; i++)
		pthread_join(th[i], NULL);
}

/* 1 when step is among the steps a manager of node's daemon lists. */
static int listed(int node, uint64_t step)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	uint64_t *v = NULL;
	size_t n = 0, i;
	int found = -1;

	if (hx_connect(&d[node], &c) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0 ||
	    ckpt_all_steps(m, &v, &n) != 0)
		goto out;
	for (found = 0, i = 0; i < n; i++)
		found |= v[i] == step;
	free(v);
out:
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return found;
}

/* Anything in the root but committed step directories. */
static int leftovers(void)
{
	DIR *dir = opendir(root);
	struct dirent *de;
	int n = 0;

	if (dir == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL)
		if (strchr(de->d_name, '.') != NULL && strcmp(de->d_name, ".") &&
		    strcmp(de->d_name, "..")) {
			diag("left in the root: %s", de->d_name);
			n++;
		}
	closedir(dir);
	return n;
}

static void check_restores(int node, uint64_t step)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	ckpt_restore_args *ra;
	ckpt_tree *tg;
	const ckpt_tree *t;
	double *cols[RANKS_NCOLBLOCKS];

	if (hx_connect(&d[node], &c) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0) {
		ok(0, "open the root through node %d's daemon", node);
		goto out;
	}
	if (!ok_call(ckpt_restore(m, (int64_t)step, NULL, &res), c,
	    "step %" PRIu64 " restores through node %d's daemon", step, node))
		goto out;
	t = ckpt_restored_item_tree(res, 0);
	ok(ranks_whole_ok(t), "node %d: the global array is assembled from "
	    "the pieces of both nodes, bit for bit", node);
	ok(ranks_replicated_ok(t), "node %d: the replicated array restores",
	    node);
	ckpt_restored_free(res);

	/* resharded: 3 column blocks (as 3 processes would ask), F64 */
	tg = ranks_column_targets(cols);
	ra = ckpt_restore_args_new();
	ckpt_restore_args_add_item(ra, "default", tg, 1);
	if (ok_call(ckpt_restore(m, (int64_t)step, ra, &res), c,
	    "node %d: restore into column piece targets", node)) {
		ok(ranks_columns_ok(cols), "node %d: each column block is "
		    "filled from the rows of both nodes' ranks", node);
		ckpt_restored_free(res);
	}
	ckpt_restore_args_free(ra);
	ckpt_tree_free(tg);
	ranks_columns_free(cols);
out:
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* Node 0's coordination line (ckpt_status_coordination) once it says
 * want, or the last one after 10 s. */
static void coordination_of(int node, const char *want, char *buf,
    size_t len)
{
	ckpt_client *c = NULL;
	int64_t end = hx_now_ms() + 10000;

	buf[0] = '\0';
	if (hx_connect(&d[node], &c) != 0)
		return;
	while (ckpt_status_coordination(c, buf, len) == 0 &&
	    strstr(buf, want) == NULL && hx_now_ms() < end)
		hx_sleep_ms(20);
	ckpt_disconnect(c);
}

/* ckptctl status of node 0 while ranks 0-1 have saved step 3 and the
 * ranks of node 1 have not: the endpoints, node, lease and the step
 * waiting with 2 of 4 parts durable. */
static void check_status_waiting(void)
{
	const char *bin = getenv("CKPTCTL_BIN");
	char line[1024], out[8192], want[600];
	char *argv[] = { (char *)bin, "--socket", d[0].sock, "status", NULL };
	int rc;

	coordination_of(0, "2 of 4 parts durable", line, sizeof line);
	diag("node 0: %s", line);
	snprintf(want, sizeof want, "etcd %s, node n0, lease ", b.endpoints);
	ok(strncmp(line, want, strlen(want)) == 0, "status: the endpoints, "
	    "the node's name and its lease");
	has(line, "(alive, ttl 2 s)", "status: the lease is alive");
	has(line, "waiting on other nodes: multi/node job step 3: 2 of 4 "
	    "parts durable", "status: step 3 waits on node 1 with 2 of 4 "
	    "parts durable");
	if (bin == NULL) {
		ok(0, "CKPTCTL_BIN is set");
		return;
	}
	rc = hx_run(argv, out, sizeof out, 20);
	is_int(rc, 0, "ckptctl status exits 0");
	has(out, "coordination", "ckptctl status has a coordination row");
	has(out, "waiting on other nodes: multi/node job step 3: 2 of 4 "
	    "parts durable", "ckptctl status shows step 3 waiting on node 1");
	if (tap_failures() > 0)
		diag("%s", out);
	coordination_of(1, "alive", line, sizeof line);
	has(line, "node n1, lease ", "node 1's daemon names its node");
}

/* Start (or restart) node's daemon inside its namespace. */
static int rm_entry(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

/* A collector of leftovers (a daemon opening the root: another node's,
 * at its start-up) holds the exclusive lock of a crash's leftover named
 * as step 4's tmp dir and removes it while the ranks begin step 4: their
 * daemons wait for the lock and make the directory again; the step
 * commits. */
static void collector_meets_step(struct rank *k, pthread_t *th)
{
	char tmp[HX_PATH + 32];
	int fd, i;

	snprintf(tmp, sizeof tmp, "%s/4.ckptd-tmp", root);
	if (mkdir(tmp, 0755) != 0 || (fd = open(tmp, O_RDONLY |
	    O_DIRECTORY)) < 0 || flock(fd, LOCK_EX) != 0)
		bail_out("cannot make the leftover %s", tmp);
	start_ranks(th, k, 0, RANKS, 4, 0);
	hx_sleep_ms(400);
	ok(nftw(tmp, rm_entry, 8, FTW_DEPTH | FTW_PHYS) == 0, "the collector "
	    "removed the leftover while holding its lock");
	close(fd);
	join_ranks(th, 0, RANKS);
	ok(ranks_all_ok(k, RANKS, "step 4"), "step 4, begun while a collector "
	    "held a leftover of its name, commits");
	for (i = 0; i < NODES; i++)
		is_int(listed(i, 4), 1, "node %d's daemon lists step 4", i);
	is_int(leftovers(), 0, "no tmp dir of step 4 stays in the root");
}

static int start_node(int node, int restart)
{
	int r;

	if (bed_enter(&b, node) != 0)
		return -1;
	r = restart ? hx_restart(&d[node]) : hx_start(&d[node]);
	if (bed_enter(&b, -1) != 0)
		return -1;
	return r;
}

int main(void)
{
	struct rank k[RANKS];
	pthread_t th[RANKS];
	char ttl[] = "2", line[1024];
	int i, all, named;

	ranks_fill(7);
	if (geteuid() != 0)
		bail_out("needs root (network namespaces)");
	if (bed_init(&b, NODES) != 0 || bed_etcd_start(&b, 1) != 0) {
		bed_fini(&b);
		bail_out("cannot make the test bed");
	}
	for (i = 0; i < NODES; i++) {
		hx_init(&d[i]);
		d[i].extra[0] = "--etcd";
		d[i].extra[1] = b.endpoints;
		d[i].extra[2] = "--node";
		d[i].extra[3] = node_names[i];
		d[i].extra[4] = "--etcd-lease-ttl";
		d[i].extra[5] = ttl;
		d[i].extra[6] = NULL;
		if (start_node(i, 0) != 0) {
			hx_dump_log(&d[i], 40);
			bed_fini(&b);
			bail_out("ckptd of node %d did not start", i);
		}
	}
	hx_path(&d[0], root, "shared-root");
	hx_mkdirs(root);

	start_ranks(th, k, 0, RANKS, 1, 0);
	join_ranks(th, 0, RANKS);
	ok(ranks_all_ok(k, RANKS, "step 1"), "4 ranks on 2 nodes save step 1 and each "
	    "waits for its commit");
	for (i = 0; i < NODES; i++)
		is_int(listed(i, 1), 1, "node %d's daemon lists step 1", i);
	check_restores(1, 1);
	check_restores(0, 1);

	/* Node 1's daemon dies with its part of step 2 not complete: rank 2
	 * handed its part, rank 3 had not yet. Then node 0's ranks save. */
	start_ranks(th, k, 2, 3, 2, 1500);
	hx_sleep_ms(500);
	hx_kill9(&d[1]);
	join_ranks(th, 2, 3);
	start_ranks(th, k, 0, 2, 2, 0);
	join_ranks(th, 0, 2);
	/* The first of node 0's ranks to learn it gets the node named; a
	 * rank arriving after its partner gave up on the failed step gets
	 * that partner named instead (the step fails all the same). */
	all = 1;
	named = 0;
	for (i = 0; i < 2; i++) {
		int rc = k[i].save_rc != 0 ? k[i].save_rc : k[i].wait_rc;

		all &= rc == CKPT_ERANK;
		named += strstr(k[i].msg, "node n1") != NULL;
		diag("rank %d: save %d wait %d: %s", i, k[i].save_rc,
		    k[i].wait_rc, k[i].msg);
	}
	ok(all && named > 0, "node 1's daemon killed mid-step: node 0's ranks "
	    "get CKPT_ERANK naming node n1");
	is_int(listed(0, 2), 0, "step 2 is not listed on node 0");
	is_int(leftovers(), 0, "no tmp dir of step 2 stays in the root");

	if (start_node(1, 1) != 0) {
		hx_dump_log(&d[1], 40);
		bail_out("ckptd of node 1 did not restart");
	}
	/* Step 2 again: its failure in etcd is of the earlier attempt. */
	start_ranks(th, k, 0, RANKS, 2, 0);
	join_ranks(th, 0, RANKS);
	ok(ranks_all_ok(k, RANKS, "step 2 again"), "step 2, failed before, is "
	    "saved again and commits");
	for (i = 0; i < NODES; i++)
		is_int(listed(i, 2), 1, "node %d's daemon lists step 2", i);

	/* Node 0's ranks first: its daemon waits on node 1, and says so. */
	start_ranks(th, k, 0, 2, 3, 0);
	check_status_waiting();
	start_ranks(th, k, 2, RANKS, 3, 0);
	join_ranks(th, 0, RANKS);
	ok(ranks_all_ok(k, RANKS, "step 3"), "with node 1's daemon back, step 3 commits");
	for (i = 0; i < NODES; i++)
		is_int(listed(i, 3), 1, "node %d's daemon lists step 3", i);
	check_restores(1, 3);

	collector_meets_step(k, th);

	/* The committer of step 3 died between the commit and the rename,
	 * and so did node 1's daemon: both stopped, step 3 back to its tmp
	 * dir. Node 1's daemon, started again, finishes the commit. */
	for (i = 0; i < NODES; i++)
		hx_stop(&d[i]);
	{
		char from[HX_PATH + 32], to[HX_PATH + 32];

		snprintf(to, sizeof to, "%s/3", root);
		snprintf(from, sizeof from, "%s/3.ckptd-tmp", root);
		ok(rename(to, from) == 0, "step 3 made a tmp dir again");
		if (start_node(1, 0) != 0)
			bail_out("ckptd of node 1 did not start");
		/* its socket answers before its start-up is over: a status
		 * call waits for it */
		coordination_of(1, "node n1", line, sizeof line);
		if (!ok(hx_exists(to) && !hx_exists(from), "node 1's daemon, "
		    "at start-up, renames the tmp dir of step 3 committed in "
		    "etcd"))
			hx_dump_log(&d[1], 12);
		is_int(listed(1, 3), 1, "node 1's daemon lists step 3");
		if (start_node(0, 0) != 0)
			bail_out("ckptd of node 0 did not start");
		is_int(listed(0, 3), 1, "node 0's daemon lists step 3");
		check_restores(0, 3);
	}

	for (i = 0; i < NODES; i++) {
		ok(hx_alive(&d[i]), "node %d's ckptd still running", i);
		is_int(hx_stop(&d[i]), 0, "node %d's ckptd exits cleanly", i);
	}
	for (i = 0; i < NODES; i++) {
		if (tap_failures() > 0)
			hx_dump_log(&d[i], 30);
		hx_cleanup(&d[i]);
	}
	bed_fini(&b);
	return done_testing();
}
