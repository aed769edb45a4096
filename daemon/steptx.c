/*
 * steptx.c - the step transaction (see steptx.h): lookup by (root, job,
 * step), the timeout of missing parts, and the commit of a step written by
 * several parts.
 */
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "coord.h"
#include "pieces.h"
#include "root.h"
#include "savecheck.h"
#include "stepmetrics.h"
#include "steptx.h"

static struct steptx *TX;       /* unfinished transactions */

/* A rank whose distributed manager went away (steptx_rank_left). */
struct gone {
	struct gone *next;
	struct root *r;                 /* referenced */
	char *job;
	uint32_t rank;
	int alone;                      /* left with no manager of the job
					 * open (steptx_job_left) */
	int64_t until_ns;               /* alone and lost with no step
					 * unfinished: forgotten then
					 * (monotonic; 0: no limit) */
};
static struct gone *GONE;

/* A failed distributed step, remembered for its late ranks. */
struct outcome {
	struct outcome *next;
	struct root *r;                 /* referenced */
	char *job;
	uint64_t step;
	ckd_err err;
	int64_t until_ns;               /* monotonic */
	unsigned nlate;
	uint32_t *late;                 /* ranks whose part never arrived */
};
static struct outcome *OUTCOMES;        /* newest first */
static struct event_base *TX_BASE;      /* for the timers of missing parts */
static struct index *TX_IX;             /* where commits and failures go */
static const struct coord_ops *COORD;   /* where the parts live (coord.h) */

void
steptx_init(struct event_base *base, struct index *ix)
{
	TX_BASE = base;
	TX_IX = ix;
}

void
steptx_set_coord(const struct coord_ops *c)
{
	COORD = c;
}

const struct coord_ops *
steptx_coord(void)
{
	return COORD;
}

struct steptx *
steptx_find(const struct root *r, const char *job, uint64_t step)
{
	struct steptx *tx;

	for (tx = TX; tx != NULL; tx = tx->next)
		if (tx->r == r && tx->step == step && strcmp(tx->job, job) == 0)
			return tx;
	return NULL;
}

int
steptx_slot(const struct steptx *tx, uint32_t rank)
{
	unsigned i;

	if (tx->ranks == NULL)
		return rank < tx->nparts ? (int)rank : -1;
	for (i = 0; i < tx->nparts; i++)
		if (tx->ranks[i] == rank)
			return (int)i;
	return -1;
}

static uint32_t
steptx_rank(const struct steptx *tx, unsigned slot)
{
	return tx->ranks != NULL ? tx->ranks[slot] : slot;
}

unsigned
steptx_missing(const struct steptx *tx, int started_too, char *buf,
    size_t len)
{
	size_t off = 0;
	unsigned i, n = 0;
	int k;

	if (len == 0)
		return 0;
	buf[0] = '\0';
	for (i = 0; i < tx->nparts; i++) {
		const struct steptx_part *p = tx->parts[i];

		if ((p != NULL && (!started_too || p->started)) ||
		    (tx->remote != NULL && tx->remote[i].durable))
			continue;
		n++;
		if (off + 1 >= len)
			continue;
		k = snprintf(buf + off, len - off, "%s%" PRIu32,
		    n == 1 ? "[" : ", ", steptx_rank(tx, i));
		if (k > 0)
			off += (size_t)k;
	}
	if (n > 0 && off + 1 < len)
		snprintf(buf + off, len - off, "]");
	return n;
}

void
steptx_fail(struct steptx *tx, const ckd_err *why)
{
	unsigned i;

	if (tx->err.code != 0)
		return;
	tx->err = *why;
	/* Who knows already: the parts that arrived (the others are told
	 * when they come; if this fails, nobody is remembered as late). */
	if (tx->nparts > 1 && tx->saved && tx->came == NULL &&
	    (tx->came = calloc(tx->nparts, 1)) != NULL)
		for (i = 0; i < tx->nparts; i++)
			tx->came[i] = tx->parts[i] != NULL;
}

void
steptx_told(struct steptx *tx, int slot)
{
	if (tx->came != NULL && slot >= 0 && (unsigned)slot < tx->nparts)
		tx->came[slot] = 1;
}

static void
gone_free(struct gone *g)
{
	root_unref(g->r);
	free(g->job);
	free(g);
}

/* A step of (r, job) is listed, saving and not failed. */
static int
job_busy(const struct root *r, const char *job)
{
	const struct steptx *tx;

	for (tx = TX; tx != NULL; tx = tx->next)
		if (tx->r == r && tx->nparts > 1 && tx->saved && !tx->closed &&
		    tx->err.code == 0 && strcmp(tx->job, job) == 0)
			return 1;
	return 0;
}

/* A step of (r, job) left the list: when none is unfinished any more,
 * the ranks that left while no manager of the job was open are
 * forgotten (no manager opened since: the job is over). */
static void
gone_alone_drop(const struct root *r, const char *job)
{
	struct gone **pp = &GONE, *g;

	if (job_busy(r, job))
		return;
	while ((g = *pp) != NULL) {
		if (!g->alone || g->r != r || strcmp(g->job, job) != 0) {
			pp = &g->next;
			continue;
		}
		*pp = g->next;
		gone_free(g);
	}
}

/* Forget the ranks lost alone whose time is over (steptx_job_lost). */
static void
gone_expire(int64_t now)
{
	struct gone **pp = &GONE, *g;

	while ((g = *pp) != NULL) {
		if (!g->alone || g->until_ns == 0 || g->until_ns > now) {
			pp = &g->next;
			continue;
		}
		*pp = g->next;
		gone_free(g);
	}
}

static void
outcome_free(struct outcome *o)
{
	root_unref(o->r);
	free(o->job);
	free(o->late);
	free(o);
}

/* Drop the expired outcomes, and those of (r, job) when job != NULL
 * (with step: only that step's). */
static void
outcome_drop(const struct root *r, const char *job, int one_step,
    uint64_t step)
{
	struct outcome **pp = &OUTCOMES, *o;
	int64_t now = now_mono_ns();

	while ((o = *pp) != NULL) {
		if (o->until_ns > now && (job == NULL || o->r != r ||
		    strcmp(o->job, job) != 0 || (one_step &&
		    o->step != step))) {
			pp = &o->next;
			continue;
		}
		*pp = o->next;
		outcome_free(o);
	}
}

/* tx failed and leaves the list: remember its late ranks. */
static void
outcome_add(const struct steptx *tx)
{
	struct outcome *o, **pp;
	unsigned i, n = 0;
	double secs = tx->timeout_secs;

	if (tx->err.code == 0 || tx->err.code == CKPT_EEXIST ||
	    !tx->saved || tx->nparts < 2 || tx->came == NULL)
		return;
	for (i = 0; i < tx->nparts; i++)
		n += !tx->came[i];
	outcome_drop(tx->r, tx->job, 1, tx->step);
	if (n == 0)
		return;
	if ((o = calloc(1, sizeof *o)) == NULL ||
	    (o->job = strdup(tx->job)) == NULL ||
	    (o->late = malloc(n * sizeof *o->late)) == NULL) {
		if (o != NULL)
			free(o->job);
		free(o);
		return;         /* then a late rank waits for its timeout */
	}
	for (i = 0; i < tx->nparts; i++)
		if (!tx->came[i])
			o->late[o->nlate++] = steptx_rank(tx, i);
	o->r = tx->r;
	root_ref(o->r);
	o->step = tx->step;
	o->err = tx->err;
	if (!(secs > 0) || secs > 1e6)
		secs = 1e6;
	o->until_ns = now_mono_ns() + (int64_t)(secs * 1e9);
	o->next = OUTCOMES;
	OUTCOMES = o;
	/* At most STEPTX_OUTCOMES of (r, job): the oldest go. */
	n = 0;
	for (pp = &OUTCOMES; (o = *pp) != NULL; ) {
		if (o->r == tx->r && strcmp(o->job, tx->job) == 0 &&
		    ++n > STEPTX_OUTCOMES) {
			*pp = o->next;
			outcome_free(o);
			continue;
		}
		pp = &o->next;
	}
}

int
steptx_failed_part(const struct root *r, const char *job, uint64_t step,
    uint32_t rank, ckd_err *e)
{
	struct outcome *o;
	unsigned i;

	outcome_drop(NULL, NULL, 0, 0);
	for (o = OUTCOMES; o != NULL; o = o->next)
		if (o->r == r && o->step == step && strcmp(o->job, job) == 0)
			break;
	if (o == NULL)
		return 0;
	for (i = 0; i < o->nlate; i++)
		if (o->late[i] == rank)
			break;
	if (i == o->nlate) {
		/* A rank that knows of the failure saves the step again: a
		 * new attempt, which the late ranks join. */
		outcome_drop(r, job, 1, step);
		return 0;
	}
	o->late[i] = o->late[--o->nlate];
	*e = o->err;
	if (o->nlate == 0)
		outcome_drop(r, job, 1, step);
	return e->code;
}

static void
steptx_expired(evutil_socket_t fd, short what, void *arg)
{
	struct steptx *tx = arg;
	char ranks[256];
	ckd_err e;

	(void)fd;
	(void)what;
	if (!tx->saved) {
		/* A decision not to save, kept for the ranks still to ask. */
		steptx_unlist(tx);
		return;
	}
	if (tx->closed || tx->err.code != 0 ||
	    steptx_missing(tx, 1, ranks, sizeof ranks) == 0)
		return;
	err_set(&e, CKPT_ERANK, "step %" PRIu64 ": ranks %s did not hand their "
	    "part within %.0f s of the first part", tx->step, ranks,
	    tx->timeout_secs);
	steptx_fail(tx, &e);
	if (tx->on_fail != NULL)
		tx->on_fail(tx);
}

struct steptx *
steptx_new(struct root *r, const char *job, uint64_t step, const char *name,
    unsigned nparts, const uint32_t *ranks, unsigned primary, int saved,
    double timeout_secs, int64_t init_ns)
{
	struct steptx *tx;

	if ((tx = calloc(1, sizeof *tx)) == NULL)
		return NULL;
	tx->rootfd = tx->tmpfd = -1;
	if ((tx->job = strdup(job)) == NULL ||
	    (tx->parts = calloc(nparts, sizeof *tx->parts)) == NULL ||
	    (ranks != NULL && (tx->ranks = malloc(nparts *
	    sizeof *tx->ranks)) == NULL))
		goto fail;
	if (ranks != NULL)
		memcpy(tx->ranks, ranks, nparts * sizeof *tx->ranks);
	if (nparts > 1) {
		struct timeval tv;

		if (!(timeout_secs > 0) || timeout_secs > 1e9)
			timeout_secs = 1e9;
		tv.tv_sec = (time_t)timeout_secs;
		tv.tv_usec = (suseconds_t)((timeout_secs - (double)tv.tv_sec) *
		    1e6);
		if ((tx->timer = evtimer_new(TX_BASE, steptx_expired, tx)) ==
		    NULL || evtimer_add(tx->timer, &tv) != 0)
			goto fail;
	}
	tx->r = r;
	root_ref(r);
	tx->step = step;
	snprintf(tx->name, sizeof tx->name, "%s", name);
	tx->nparts = nparts;
	tx->primary = primary;
	tx->saved = saved;
	tx->timeout_secs = timeout_secs;
	tx->init_ns = init_ns;
	tx->refs = 1;
	tx->next = TX;
	TX = tx;
	if (nparts > 1)
		COORD->tx_new(tx);
	return tx;
fail:
	if (tx->timer != NULL)
		event_free(tx->timer);
	free(tx->job);
	free(tx->parts);
	free(tx->ranks);
	free(tx);
	return NULL;
}

void
steptx_ref(struct steptx *tx)
{
	tx->refs++;
}

void
steptx_unlist(struct steptx *tx)
{
	struct steptx **pp;

	for (pp = &TX; *pp != NULL; pp = &(*pp)->next)
		if (*pp == tx) {
			*pp = tx->next;
			tx->next = NULL;
			if (tx->timer != NULL)
				evtimer_del(tx->timer);
			outcome_add(tx);
			gone_alone_drop(tx->r, tx->job);
			steptx_unref(tx);
			return;
		}
}

void
steptx_unref(struct steptx *tx)
{
	if (--tx->refs > 0)
		return;
	if (tx->timer != NULL)
		event_free(tx->timer);
	if (tx->tmpfd >= 0)
		tx->r->be->close(tx->tmpfd);
	if (tx->rootfd >= 0)
		tx->r->be->close(tx->rootfd);
	root_unref(tx->r);
	if (tx->remote != NULL) {
		unsigned i;

		for (i = 0; i < tx->nparts; i++)
			if (tx->remote[i].sv != NULL)
				ckpt__save__free_unpacked(tx->remote[i].sv, NULL);
		free(tx->remote);
	}
	free(tx->job);
	free(tx->parts);
	free(tx->ranks);
	free(tx->came);
	free(tx);
}

const Ckpt__Save *
steptx_part_sv(const struct steptx *tx, unsigned slot)
{
	if (tx->parts[slot] != NULL)
		return tx->parts[slot]->sv;
	return tx->remote != NULL ? tx->remote[slot].sv : NULL;
}

int
steptx_ready(const struct steptx *tx)
{
	unsigned i;

	for (i = 0; i < tx->nparts; i++)
		if ((tx->parts[i] == NULL || !tx->parts[i]->ended) &&
		    (tx->remote == NULL || !tx->remote[i].durable))
			return 0;
	return tx->parts[tx->primary] != NULL || tx->decided;
}

/* The unfinished transaction of (job, step) on the root at path root. */
static struct steptx *
steptx_find_job(const char *root, const char *job, uint64_t step)
{
	struct steptx *tx;

	for (tx = TX; tx != NULL; tx = tx->next)
		if (tx->step == step && tx->nparts > 1 && tx->saved &&
		    !tx->closed && strcmp(tx->job, job) == 0 &&
		    strcmp(tx->r->path, root) == 0)
			return tx;
	return NULL;
}

int
steptx_remote_part(const char *root, const char *job, uint64_t step,
    uint32_t rank, const char *node)
{
	struct steptx *tx = steptx_find_job(root, job, step);
	int slot;

	if (tx == NULL)
		return 1;
	if ((slot = steptx_slot(tx, rank)) < 0 || tx->parts[slot] != NULL ||
	    (tx->remote != NULL && tx->remote[slot].durable) ||
	    tx->committing)
		return 0;       /* not a rank of it, this daemon's, known */
	if (tx->remote == NULL &&
	    (tx->remote = calloc(tx->nparts, sizeof *tx->remote)) == NULL) {
		ckd_err e;

		err_set(&e, CKPT_ENOMEM, "out of memory");
		steptx_fail(tx, &e);
		if (tx->on_fail != NULL)
			tx->on_fail(tx);
		return 0;
	}
	tx->remote[slot].durable = 1;
	snprintf(tx->remote[slot].node, sizeof tx->remote[slot].node, "%s",
	    node);
	if (tx->on_progress != NULL)
		tx->on_progress(tx);
	return 0;
}

int
steptx_remote_commit(const char *root, const char *job, uint64_t step,
    uint64_t bytes)
{
	struct steptx *tx = steptx_find_job(root, job, step);

	if (tx == NULL)
		return 1;
	if (tx->parts[tx->primary] != NULL || tx->err.code != 0)
		return 0;       /* ours to commit, or failed here first */
	tx->decided = 1;
	tx->bytes = bytes;
	if (tx->on_progress != NULL)
		tx->on_progress(tx);
	return 0;
}

int
steptx_remote_fail(const char *root, const char *job, uint64_t step,
    const ckd_err *why)
{
	struct steptx *tx = steptx_find_job(root, job, step);

	if (tx == NULL)
		return 1;
	if (tx->decided || tx->err.code != 0)
		return 0;
	steptx_fail(tx, why);
	tx->err_remote = 1;
	if (tx->on_fail != NULL)
		tx->on_fail(tx);
	return 0;
}

void
steptx_waiting(char *buf, size_t len)
{
	const struct steptx *tx;
	size_t off = 0;
	unsigned i, n;
	int k;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (tx = TX; tx != NULL; tx = tx->next) {
		if (tx->nparts < 2 || !tx->saved || tx->closed)
			continue;
		for (i = n = 0; i < tx->nparts; i++)
			n += (tx->parts[i] != NULL && tx->parts[i]->ended) ||
			    (tx->remote != NULL && tx->remote[i].durable);
		k = snprintf(buf + off, len - off, "%s%s step %" PRIu64 ": %u "
		    "of %u parts durable%s", off > 0 ? "; " : "",
		    tx->job[0] != '\0' ? tx->job : "(no job)", tx->step, n,
		    tx->nparts, tx->err.code != 0 ? ", failed" : "");
		if (k < 0 || (size_t)k >= len - off)
			break;
		off += (size_t)k;
	}
}

void
steptx_rank_gone(const struct root *r, const char *job, uint32_t rank,
    void (*fail_cb)(struct steptx *tx))
{
	struct steptx *tx, *next;
	ckd_err e;
	int slot;

	for (tx = TX; tx != NULL; tx = next) {
		next = tx->next;
		if (tx->r != r || strcmp(tx->job, job) != 0 || !tx->saved ||
		    tx->nparts < 2 || tx->closed || tx->err.code != 0 ||
		    (slot = steptx_slot(tx, rank)) < 0 ||
		    (tx->parts[slot] != NULL && tx->parts[slot]->started))
			continue;
		err_set(&e, CKPT_ERANK, "step %" PRIu64 ": ranks [%" PRIu32 "] "
		    "did not hand their part (connection closed)", tx->step,
		    rank);
		steptx_fail(tx, &e);
		fail_cb(tx);
	}
}

/* Remember rank of (r, job) as gone (once). */
static struct gone *
gone_add(struct root *r, const char *job, uint32_t rank, int alone)
{
	struct gone *g;

	for (g = GONE; g != NULL; g = g->next)
		if (g->r == r && g->rank == rank && strcmp(g->job, job) == 0) {
			g->alone |= alone;
			return g;
		}
	if ((g = calloc(1, sizeof *g)) == NULL)
		return NULL;    /* then only the timeout notices it */
	if ((g->job = strdup(job)) == NULL) {
		free(g);
		return NULL;
	}
	g->r = r;
	root_ref(r);
	g->rank = rank;
	g->alone = alone;
	g->next = GONE;
	GONE = g;
	return g;
}

void
steptx_rank_left(struct root *r, const char *job, uint32_t rank)
{
	gone_add(r, job, rank, 0);
}

void
steptx_job_left(struct root *r, const char *job, uint32_t rank)
{
	struct gone *g;
	unsigned n = 0;

	if (!job_busy(r, job)) {
		steptx_job_ended(r, job);
		return;
	}
	/* A step of the job is unfinished: its other ranks may still be
	 * opening. Kept until that step leaves the list, unless a manager
	 * of the job opens meanwhile (then until the job ends). */
	for (g = GONE; g != NULL; g = g->next)
		if (g->r == r && strcmp(g->job, job) == 0) {
			g->alone = 1;
			n++;
		}
	if (n < STEPTX_GONE_ALONE)
		gone_add(r, job, rank, 1);
}

void
steptx_job_lost(struct root *r, const char *job, uint32_t rank,
    double timeout_secs)
{
	struct gone *g;

	if (job_busy(r, job)) {
		steptx_job_left(r, job, rank);
		return;
	}
	/* Nothing of the job is unfinished, so this run of it may be over;
	 * but a rank that died rather than closing may have died before the
	 * others opened: remembered for one timeout of its steps. */
	steptx_job_ended(r, job);
	if (!(timeout_secs > 0) || timeout_secs > 1e6)
		timeout_secs = 1e6;
	if ((g = gone_add(r, job, rank, 1)) != NULL)
		g->until_ns = now_mono_ns() + (int64_t)(timeout_secs * 1e9);
}

/* Drop the entries of (r, job) and, when all_ranks is 0, of rank only. */
static void
steptx_gone_drop(const struct root *r, const char *job, int all_ranks,
    uint32_t rank)
{
	struct gone **pp = &GONE, *g;

	while ((g = *pp) != NULL) {
		if (g->r != r || strcmp(g->job, job) != 0 ||
		    (!all_ranks && g->rank != rank)) {
			pp = &g->next;
			continue;
		}
		*pp = g->next;
		gone_free(g);
	}
}

void
steptx_rank_back(const struct root *r, const char *job, uint32_t rank)
{
	struct gone *g;
	struct outcome *o;
	unsigned i;

	gone_expire(now_mono_ns());
	steptx_gone_drop(r, job, 0, rank);
	/* The job has a manager open again: the ranks that left meanwhile
	 * stay gone until it ends. */
	for (g = GONE; g != NULL; g = g->next)
		if (g->r == r && strcmp(g->job, job) == 0) {
			g->alone = 0;
			g->until_ns = 0;
		}
	/* A new manager of the rank is not late for an earlier attempt. */
	for (o = OUTCOMES; o != NULL; o = o->next) {
		if (o->r != r || strcmp(o->job, job) != 0)
			continue;
		for (i = 0; i < o->nlate; i++)
			if (o->late[i] == rank) {
				o->late[i] = o->late[--o->nlate];
				break;
			}
	}
}

void
steptx_job_ended(const struct root *r, const char *job)
{
	steptx_gone_drop(r, job, 1, 0);
	outcome_drop(r, job, 0, 0);
}

unsigned
steptx_ranks_gone(const struct root *r, const char *job,
    const uint32_t *ranks, unsigned n, char *buf, size_t len)
{
	const struct gone *g;
	size_t off = 0;
	unsigned i, k = 0;
	int w;

	if (len == 0)
		return 0;
	buf[0] = '\0';
	gone_expire(now_mono_ns());
	for (i = 0; i < n; i++) {
		uint32_t rank = ranks != NULL ? ranks[i] : i;

		for (g = GONE; g != NULL; g = g->next)
			if (g->r == r && g->rank == rank &&
			    strcmp(g->job, job) == 0)
				break;
		if (g == NULL)
			continue;
		k++;
		if (off + 1 >= len)
			continue;
		w = snprintf(buf + off, len - off, "%s%" PRIu32,
		    k == 1 ? "[" : ", ", rank);
		if (w > 0)
			off += (size_t)w;
	}
	if (k > 0 && off + 1 < len)
		snprintf(buf + off, len - off, "]");
	return k;
}

void
steptx_fail_incomplete(void (*fail_cb)(struct steptx *tx))
{
	struct steptx *tx, *next;
	char ranks[256];
	ckd_err e;

	for (tx = TX; tx != NULL; tx = next) {
		next = tx->next;
		if (!tx->saved || tx->nparts < 2 || tx->closed ||
		    tx->err.code != 0 ||
		    steptx_missing(tx, 1, ranks, sizeof ranks) == 0)
			continue;
		err_set(&e, CKPT_ERANK, "step %" PRIu64 ": ranks %s did not hand "
		    "their part before ckptd stopped", tx->step, ranks);
		steptx_fail(tx, &e);
		fail_cb(tx);
	}
}

/* ---- the commit of several parts (worker) ---------------------------------------- */

/* One leaf of one part, for the cross-part checks. */
struct txleaf {
	const Ckpt__Leaf *l;
	unsigned slot;
	size_t idx;
};

static int
steptx_path_cmp(const Ckpt__Leaf *a, const Ckpt__Leaf *b)
{
	size_t i, n = a->n_path < b->n_path ? a->n_path : b->n_path;
	int c;

	for (i = 0; i < n; i++) {
		const Ckpt__PathElem *x = a->path[i], *y = b->path[i];

		if (x->kind != y->kind)
			return x->kind < y->kind ? -1 : 1;
		if (x->kind == CKPT__KEY_KIND__KEY_DICT) {
			if ((c = strcmp(x->key, y->key)) != 0)
				return c;
		} else if (x->index != y->index) {
			return x->index < y->index ? -1 : 1;
		}
	}
	return a->n_path < b->n_path ? -1 : a->n_path > b->n_path;
}

/* A rank's empty list (or tuple) where others have pieces: it holds no
 * piece of that global array. */
static int
steptx_no_piece(const Ckpt__Leaf *l)
{
	return l->kind == CKPT__LEAF_KIND__LEAF_EMPTY_LIST ||
	    l->kind == CKPT__LEAF_KIND__LEAF_EMPTY_TUPLE;
}

static int
steptx_leaf_cmp(const void *a, const void *b)
{
	const struct txleaf *x = a, *y = b;
	int c = steptx_path_cmp(x->l, y->l);

	if (c != 0)
		return c;
	if (x->slot != y->slot)
		return x->slot < y->slot ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * The leaves of item `it` of every part as one tree: the primary's order,
 * each global array's pieces of every rank where the primary has its
 * first. *out (malloc'ed, leaves borrowed). CKPT_EMISMATCH when the ranks
 * disagree.
 */
int
steptx_item_leaves(struct steptx *tx, size_t it, Ckpt__Leaf ***out,
    size_t *nout, ckd_err *e)
{
	const Ckpt__Item *pi = steptx_part_sv(tx, tx->primary)->items[it];
	struct txleaf *all = NULL;
	const Ckpt__Leaf **grp = NULL;
	size_t *gof = NULL, n = 0, i, j, k, m = 0, npl;
	unsigned slot, *seen = NULL;
	char path[256], prefix[64];
	uint64_t stamp = 0;
	Ckpt__Leaf **res = NULL;
	unsigned char *emitted = NULL, *global = NULL;
	int r = 0;

	snprintf(prefix, sizeof prefix, "step %" PRIu64, tx->step);
	for (slot = 0; slot < tx->nparts; slot++)
		n += steptx_part_sv(tx, slot)->items[it]->n_leaves;
	if ((all = malloc(n * sizeof *all)) == NULL ||
	    (grp = malloc(n * sizeof *grp)) == NULL ||
	    (res = malloc(n * sizeof *res)) == NULL ||
	    (gof = malloc(pi->n_leaves * sizeof *gof)) == NULL ||
	    (emitted = calloc(n, 1)) == NULL ||
	    (global = calloc(n, 1)) == NULL ||
	    (seen = calloc(tx->nparts, sizeof *seen)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	n = 0;
	for (slot = 0; slot < tx->nparts; slot++) {
		const Ckpt__Item *x = steptx_part_sv(tx, slot)->items[it];

		for (k = 0; k < x->n_leaves; k++) {
			all[n].l = x->leaves[k];
			all[n].slot = slot;
			all[n++].idx = k;
		}
	}
	qsort(all, n, sizeof *all, steptx_leaf_cmp);
	for (i = 0; i < n; i = j) {
		const Ckpt__Leaf *first = NULL;
		unsigned nslots = 0, npieces = 0;

		stamp++;
		for (j = i; j < n && steptx_path_cmp(all[i].l, all[j].l) == 0;
		    j++) {
			if (seen[all[j].slot] != stamp) {
				seen[all[j].slot] = (unsigned)stamp;
				nslots++;
			}
			if (all[j].slot == tx->primary) {
				if (first == NULL)
					first = all[j].l;
				gof[all[j].idx] = i;
			}
			npieces += pieces_is_piece(all[j].l);
		}
		savecheck_leaf_path(all[i].l, path, sizeof path);
		if (nslots != tx->nparts) {
			for (slot = 0; slot < tx->nparts; slot++)
				if (seen[slot] != stamp)
					break;
			r = err_set(e, CKPT_EMISMATCH, "%s: the ranks' trees "
			    "differ: leaf '%s' of item '%s' is missing on rank "
			    "%" PRIu32, prefix, path, pi->name,
			    steptx_rank(tx, slot));
			goto out;
		}
		if (npieces > 0) {
			/* Every leaf a piece, but a rank's empty list: that
			 * rank holds no piece (its others must cover). */
			for (k = i, npl = 0; k < j; k++) {
				if (pieces_is_piece(all[k].l)) {
					grp[npl++] = all[k].l;
					continue;
				}
				if (steptx_no_piece(all[k].l))
					continue;
				r = err_set(e, CKPT_EMISMATCH, "%s: array '%s' "
				    "of item '%s' is a global array on some "
				    "ranks and not on rank %" PRIu32, prefix,
				    path, pi->name, steptx_rank(tx,
				    all[k].slot));
				goto out;
			}
			global[i] = 1;
			if ((r = pieces_check(grp, npl, 1, path, e)) != 0) {
				char msg[CKPT_ERRLEN];

				snprintf(msg, sizeof msg, "%s", e->msg);
				err_set(e, r, "%s: %s", prefix, msg);
				goto out;
			}
			continue;
		}
		/* Replicated: one leaf per rank, equal to the primary's. */
		for (k = i; k < j; k++) {
			const Ckpt__Leaf *l = all[k].l;

			if (l->kind != first->kind || (l->kind ==
			    CKPT__LEAF_KIND__LEAF_ARRAY && (l->dtype !=
			    first->dtype || l->n_shape != first->n_shape ||
			    memcmp(l->shape, first->shape, l->n_shape *
			    sizeof(uint64_t)) != 0))) {
				r = err_set(e, CKPT_EMISMATCH, "%s: replicated "
				    "leaf '%s' of item '%s' differs between "
				    "rank %" PRIu32 " and the primary (kind, "
				    "dtype or shape)", prefix, path, pi->name,
				    steptx_rank(tx, all[k].slot));
				goto out;
			}
		}
		if (first->replicated_elsewhere) {
			r = err_set(e, CKPT_EMISMATCH, "%s: replicated leaf "
			    "'%s' of item '%s' has no bytes on the primary "
			    "host", prefix, path, pi->name);
			goto out;
		}
	}
	/* The primary's order; a global array's pieces together. */
	for (k = 0; k < pi->n_leaves; k++) {
		size_t g = gof[k];

		if (emitted[g])
			continue;
		emitted[g] = 1;
		if (!global[g]) {
			res[m++] = pi->leaves[k];
			continue;
		}
		for (i = g; i < n && steptx_path_cmp(all[g].l, all[i].l) == 0;
		    i++)
			if (pieces_is_piece(all[i].l))
				res[m++] = (Ckpt__Leaf *)all[i].l;
	}
	*out = res;
	*nout = m;
	res = NULL;
out:
	free(all);
	free(grp);
	free(res);
	free(gof);
	free(emitted);
	free(global);
	free(seen);
	return r;
}

/* Items: the same names and handlers, in the same order, on every rank. */
static int
steptx_check_items(struct steptx *tx, ckd_err *e)
{
	const Ckpt__Save *p = steptx_part_sv(tx, tx->primary);
	unsigned slot;
	size_t i;

	for (slot = 0; slot < tx->nparts; slot++) {
		const Ckpt__Save *x = steptx_part_sv(tx, slot);
		int same;

		if (x == NULL)
			return err_set(e, CKPT_EPROTO, "step %" PRIu64 ": the "
			    "part of rank %" PRIu32 " is not known here",
			    tx->step, steptx_rank(tx, slot));
		same = x->n_items == p->n_items;

		for (i = 0; same && i < p->n_items; i++)
			same = strcmp(x->items[i]->name, p->items[i]->name) == 0 &&
			    x->items[i]->handler == p->items[i]->handler;
		if (!same)
			return err_set(e, CKPT_EMISMATCH, "step %" PRIu64 ": "
			    "rank %" PRIu32 " saves other items than the "
			    "primary host (rank %" PRIu32 ")", tx->step,
			    steptx_rank(tx, slot), steptx_rank(tx, tx->primary));
	}
	return 0;
}

/* Record the committed step in the index; close the tx's fds. */
static void
steptx_committed(struct steptx *tx, const char *metrics_json)
{
	ckd_err ie;

	if (index_put_committed(TX_IX, tx->r->key, tx->step, tx->name,
	    tx->init_ns, tx->commit_ns, tx->bytes, metrics_json, &ie) != 0)
		log_warn("index: %s", ie.msg);
	if (tx->tmpfd >= 0)
		tx->r->be->close(tx->tmpfd);
	tx->tmpfd = -1;
	if (tx->rootfd >= 0)
		tx->r->be->close(tx->rootfd);
	tx->rootfd = -1;
}

/*
 * Another node committed the step (tx->decided): its tmp dir is complete
 * and durable. Whichever daemon comes first renames it; the others find
 * it renamed.
 */
static int
steptx_rename(struct steptx *tx, ckd_err *e)
{
	struct stat st;
	int r;

	if ((r = store_commit_synced(tx->r->be, tx->rootfd, tx->name, e)) == 0 ||
	    r == CKPT_EEXIST)
		return r;
	/* The tmp dir is gone: renamed by another node's daemon? */
	if (tx->r->be->stat(tx->rootfd, tx->name, &st) != 0)
		return r;
	memset(e, 0, sizeof *e);
	return 0;
}

static int
steptx_adopt(struct steptx *tx, ckd_err *e)
{
	int r;

	tx->commit_ns = now_wall_ns();
	if ((r = steptx_rename(tx, e)) != 0) {
		steptx_abort(tx, e);
		return r;
	}
	steptx_committed(tx, NULL);
	return 0;
}

int
steptx_commit(struct steptx *tx, const struct steptx_lead *lead, ckd_err *e)
{
	const Ckpt__Save *sv;
	struct store_step_meta meta;
	struct store_sync b;
	size_t i;
	unsigned slot;
	const struct store_backend *be = tx->r->be;
	int r, fd;

	if (lead == NULL || tx->parts[tx->primary] == NULL)
		return steptx_adopt(tx, e);     /* committed by another node */
	sv = tx->parts[tx->primary]->sv;
	store_sync_init(&b, be);
	if ((r = COORD->gather(tx, e)) != 0 ||
	    (r = steptx_check_items(tx, e)) != 0)
		goto fail;
	tx->bytes = 0;
	for (slot = 0; slot < tx->nparts; slot++)       /* each <= its memfd */
		tx->bytes += tx->parts[slot] != NULL ? tx->parts[slot]->bytes :
		    tx->remote[slot].bytes;
	for (i = 0; i < sv->n_items; i++) {
		Ckpt__Item merged = *sv->items[i];
		Ckpt__Leaf **leaves = NULL;
		size_t n = 0;

		if ((fd = be->open_dir(tx->tmpfd, sv->items[i]->name)) < 0) {
			r = err_errno(e, errno, "open %s", sv->items[i]->name);
			goto fail;
		}
		if (savecheck_is_tree(sv->items[i]->handler)) {
			if ((r = steptx_item_leaves(tx, i, &leaves, &n, e)) != 0) {
				be->close(fd);
				goto fail;
			}
			merged.leaves = leaves;
			merged.n_leaves = n;
			r = store_write_tree_metadata_nosync(be, fd, &merged,
			    lead->fmode, &b, e);
			free(leaves);
			if (r != 0) {
				be->close(fd);
				goto fail;
			}
		}
		if ((r = store_sync_add(&b, fd, 1, e)) != 0)
			goto fail;
	}
	tx->commit_ns = now_wall_ns();
	memset(&meta, 0, sizeof meta);
	meta.init_ns = tx->init_ns;
	meta.commit_ns = tx->commit_ns;
	meta.metrics_json = lead->write_metrics ? sv->metrics_json : NULL;
	if (meta.metrics_json != NULL && (r = stepmetrics_write_nosync(
	    be, tx->tmpfd, meta.metrics_json, lead->dmode, lead->fmode, &b,
	    e)) != 0)
		goto fail;
	meta.custom_json = sv->custom_metadata_json;
	meta.nitems = sv->n_items;
	meta.item_names = lead->names;
	meta.handlers = lead->handlers;
	meta.bytes = tx->bytes;
	if ((r = store_write_step_meta_nosync(be, tx->tmpfd, &meta,
	    lead->fmode, &b, e)) != 0 ||
	    (r = store_sync_add(&b, tx->tmpfd, 0, e)) != 0 ||
	    (r = store_sync_run(&b, e)) != 0 ||
	    (r = COORD->decide(tx, e)) != 0 ||
	    (r = steptx_rename(tx, e)) != 0)
		goto fail;
	steptx_committed(tx, meta.metrics_json);
	store_sync_free(&b);
	return 0;
fail:
	store_sync_free(&b);
	steptx_abort(tx, e);
	return r;
}

void
steptx_abort_step(const struct root *r, uint64_t step, const char *name,
    int64_t init_ns, int *rootfd, int *tmpfd, const ckd_err *why)
{
	struct index_step rec;
	ckd_err e;

	if (*tmpfd >= 0) {
		r->be->close(*tmpfd);
		*tmpfd = -1;
		if (*rootfd >= 0 && store_abort(r->be, *rootfd, name, &e) != 0)
			log_warn("removing %s/%s%s: %s", r->path, name,
			    CKPT_TMP_SUFFIX, e.msg);
	}
	if (*rootfd >= 0) {
		r->be->close(*rootfd);
		*rootfd = -1;
	}
	if (why->code == CKPT_EEXIST)
		return;         /* someone else's step: not ours to record */
	memset(&rec, 0, sizeof rec);
	rec.step = step;
	rec.state = INDEX_FAILED;
	rec.init_ns = init_ns;
	snprintf(rec.name, sizeof rec.name, "%s", name);
	rec.error = (char *)why->msg;
	if (index_put_step(TX_IX, r->key, &rec, &e) != 0)
		log_warn("index: %s", e.msg);
}

void
steptx_abort(struct steptx *tx, const ckd_err *why)
{
	int forget = 0;

	if (tx->nparts > 1 && why->code != CKPT_EEXIST) {
		/* Committed elsewhere after all, or unknown: the tmp dir
		 * stays. A failure another node told is recorded already
		 * (and excludes a commit), maybe forgotten since: not told
		 * again. Failed for good, on the node of the primary's part
		 * (the only one that may commit the step): the step's keys
		 * go once its tmp dir is gone. */
		if (!(tx->err_remote && why == &tx->err) &&
		    COORD->failed(tx, why)) {
			if (tx->tmpfd >= 0) {
				tx->r->be->close(tx->tmpfd);
				tx->tmpfd = -1;
			}
		} else {
			forget = tx->parts[tx->primary] != NULL;
		}
	}
	steptx_abort_step(tx->r, tx->step, tx->name, tx->init_ns, &tx->rootfd,
	    &tx->tmpfd, why);
	if (forget)
		COORD->forget(tx);
}

void
steptx_shutdown(void)
{
	struct gone *g;
	struct outcome *o;

	while (TX != NULL)
		steptx_unlist(TX);
	while ((g = GONE) != NULL) {
		GONE = g->next;
		gone_free(g);
	}
	while ((o = OUTCOMES) != NULL) {
		OUTCOMES = o->next;
		outcome_free(o);
	}
}
