/*
 * nodes.h - ckptd on several nodes of a test bed (bed.h), coordinating
 * through etcd, and the ranks of one job (ranks.h) saving through them.
 *
 * nodes_init() makes the bed (nnodes namespaces, nmembers etcd members
 * on nodes 0..), starts one ckptd per node inside its namespace with
 * --etcd (every member) --node n<i> and the given lease TTL and request
 * timeout, and a root every daemon sees. Rank r talks to the daemon of
 * node rank_node[r] (by default r * nnodes / nranks); each rank runs in
 * a thread of the test, as its own client. Every function bails out (TAP)
 * when the bed cannot be made.
 */
#ifndef CKPT_TEST_NODES_H
#define CKPT_TEST_NODES_H

#include <pthread.h>
#include <stdint.h>

#include "bed.h"
#include "harness.h"
#include "ranks.h"

#define NODES_MAX 4
#define NODES_MAX_RANKS 16

struct nodes {
	struct bed b;
	int n, nranks;
	struct hx_daemon d[NODES_MAX];
	char name[NODES_MAX][8];
	char ttl[16], timeout[16];
	char root[HX_PATH];
	const char *job;
	double async_timeout;           /* of the ranks' managers; 0: default */
	int max_to_keep;                /* of the ranks' managers; 0: none */
	int rank_node[NODES_MAX_RANKS];
	struct rank k[NODES_MAX_RANKS];
	pthread_t th[NODES_MAX_RANKS];
};

void nodes_init(struct nodes *s, int nnodes, int nmembers, int nranks,
    unsigned ttl_s, unsigned timeout_ms);
/* (Re)start node's daemon inside its namespace: 0 or -1. */
int nodes_start(struct nodes *s, int node, int restart);
/* Ranks [first, last) save step (threads; each waits for the commit). */
void nodes_save(struct nodes *s, int first, int last, uint64_t step);
void nodes_join(struct nodes *s, int first, int last);
/* Both at once, for every rank; 1 when every rank saved and committed. */
int nodes_step(struct nodes *s, uint64_t step);
/* Save or wait result of rank i (0, or the first error). */
int nodes_rc(const struct nodes *s, int i);
/* 1 when node's daemon lists step, 0 when not, -1 when it cannot say. */
int nodes_listed(struct nodes *s, int node, uint64_t step);
/* 1 when a directory of the committed step is in the root. */
int nodes_step_dir(struct nodes *s, uint64_t step);
/* Entries of the root that are not committed steps (told by diag). */
int nodes_leftovers(struct nodes *s);
/* Node's coordination line (ckpt_status_coordination) once it holds
 * want, or the last one read after timeout_ms. */
void nodes_coordination(struct nodes *s, int node, const char *want,
    int timeout_ms, char *buf, size_t len);
/* Stop the daemons (TAP checks that they were alive and exit cleanly),
 * dump their logs when a check failed, remove the bed. */
void nodes_fini(struct nodes *s);

#endif
