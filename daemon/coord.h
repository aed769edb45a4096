/*
 * coord.h - the coordination of distributed steps between daemons: the
 * seam between the step transaction (steptx.c) and where its parts live.
 *
 * One implementation is chosen at start-up (main.c):
 *   - local (coord_local.c): every rank of a job talks to this daemon; a
 *     step commits when all its parts here are durable. What ckptd does
 *     without --etcd.
 *   - etcd (coord_etcd.c): one daemon per node (ckptd --etcd URLS --node
 *     NAME); a step's parts are spread over the nodes' daemons, its files
 *     on a filesystem every node mounts. Each node publishes its durable
 *     parts in etcd under its lease, one etcd transaction commits the
 *     step once, and every daemon learns of commits and failures through
 *     a watch (keys: daemon/README.md, "Multi-node coordination").
 *
 * steptx.c calls these functions through the table main.c hands it and
 * knows nothing of an implementation. What
 * the coordinator learns from other nodes it hands to the transaction on
 * the loop thread: steptx_remote_part, steptx_remote_commit,
 * steptx_remote_fail (steptx.h).
 *
 * Threads: the functions marked (worker) run in a worker task of the
 * transaction and may block (at most the coordinator's timeout); the
 * others run on the loop and never block.
 */
#ifndef CKPTD_COORD_H
#define CKPTD_COORD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"

struct event_base;
struct steptx;
struct steptx_part;

struct coord_ops {
	const char *name;
	/* (loop) A transaction of several parts was made: what the
	 * coordinator already knows of its step is handed to it. */
	void (*tx_new)(struct steptx *tx);
	/* (worker) The policy decision for a step of several parts, taken
	 * here (local) when its first part came: *saved is the job's one
	 * decision, the same on every node (an error: the step fails).
	 * NULL: the local decision is the job's. */
	int (*agree)(struct steptx *tx, int local, int *saved, ckd_err *e);
	/* (worker) The step's tmp dir for this daemon's parts: *tmpfd (and
	 * tx->rootfd open). */
	int (*begin)(struct steptx *tx, int rootfd, mode_t dmode, int *tmpfd,
	    ckd_err *e);
	/* (worker) Part s is durable in the tmp dir: make it known. */
	int (*part_durable)(struct steptx *tx, const struct steptx_part *p,
	    uint32_t rank, mode_t fmode, ckd_err *e);
	/* (worker) Before the commit's checks: load the parts of the other
	 * nodes (steptx_set_remote_sv). */
	int (*gather)(struct steptx *tx, ckd_err *e);
	/* (worker) Everything is durable in the tmp dir: decide the commit,
	 * once for the job. 0: committed, rename it. */
	int (*decide)(struct steptx *tx, ckd_err *e);
	/* (worker) The step failed here (why): make it known. Returns 1 when
	 * the step had been committed already (the tmp dir must stay). */
	int (*failed)(struct steptx *tx, const ckd_err *why);
	/* (worker) The failed step's tmp dir is gone on the node holding its
	 * primary part, the only one that could commit it: what was kept
	 * of the step for its transaction is of no more use. */
	void (*forget)(struct steptx *tx);
	/* (worker) The committed step `step` of the root at path was
	 * deleted here (retention or a delete request): make it known, so
	 * that the other nodes drop it from their lists. */
	int (*step_deleted)(const char *path, uint64_t step, ckd_err *e);
	/* (loop) A line or more of status: endpoints, lease, node, steps
	 * waiting on other nodes. */
	void (*status)(char *buf, size_t len);
	void (*shutdown)(void);
};

/* Settings of the coordination (config.c). */
struct coord_conf {
	const char *etcd;               /* "": local */
	const char *node;
	unsigned lease_ttl;             /* seconds */
	unsigned timeout_ms;            /* one etcd call */
};

/* The implementations; main.c chooses one at start-up and hands it to
 * the step transactions (steptx_set_coord). coord_etcd_init connects,
 * takes the node's lease and starts its watch (an unreachable etcd is an
 * error) and sets *ops. */
extern const struct coord_ops coord_local_ops;
int coord_etcd_init(struct event_base *base, const struct coord_conf *cf,
    const struct coord_ops **ops, ckd_err *e);

#endif
