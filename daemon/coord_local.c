/*
 * coord_local.c - the coordinator of one daemon (coord.h): every part of a
 * step is this daemon's, so there is nothing to tell anyone.
 */
#include <stdio.h>

#include "coord.h"
#include "root.h"
#include "steptx.h"

static void
local_tx_new(struct steptx *tx)
{
	(void)tx;
}

static int
local_begin(struct steptx *tx, int rootfd, mode_t dmode, int *tmpfd,
    ckd_err *e)
{
	return store_begin(tx->r->be, rootfd, tx->name, dmode, tmpfd, e);
}

static int
local_part_durable(struct steptx *tx, const struct steptx_part *p,
    uint32_t rank, mode_t fmode, ckd_err *e)
{
	(void)tx;
	(void)p;
	(void)rank;
	(void)fmode;
	(void)e;
	return 0;
}

static int
local_nothing(struct steptx *tx, ckd_err *e)
{
	(void)tx;
	(void)e;
	return 0;
}

static int
local_failed(struct steptx *tx, const ckd_err *why)
{
	(void)tx;
	(void)why;
	return 0;
}

static void
local_forget(struct steptx *tx)
{
	(void)tx;
}

static int
local_step_deleted(const char *path, uint64_t step, ckd_err *e)
{
	(void)path;
	(void)step;
	(void)e;
	return 0;
}

static void
local_status(char *buf, size_t len)
{
	snprintf(buf, len, "local (no --etcd)");
}

static void
local_shutdown(void)
{
}

const struct coord_ops coord_local_ops = {
	.name = "local",
	.tx_new = local_tx_new,
	.agree = NULL,          /* every rank asks this daemon */
	.begin = local_begin,
	.part_durable = local_part_durable,
	.gather = local_nothing,
	.decide = local_nothing,
	.failed = local_failed,
	.forget = local_forget,
	.step_deleted = local_step_deleted,
	.status = local_status,
	.shutdown = local_shutdown,
};
