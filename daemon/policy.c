/*
 * policy.c - Orbax's save decision and preservation policies.
 *
 * Both policy kinds arrive as flat node lists (node 0 is the root, ANY nodes
 * name children with larger indices). ANY is a logical OR in both families,
 * so a compiled policy is just the set of leaves reachable from the root:
 * the decision is the OR of its leaves. Evaluation needs no recursion and,
 * apart from BestN's sort, no allocation.
 *
 * Without explicit nodes the policies are derived from the plain options
 * the way orbax-checkpoint derives them:
 *   save:     Any(FixedInterval(save_interval_steps), SpecificSteps(
 *             save_on_steps), Preemption, InitialSave)
 *   preserve: Any(EveryNSteps(keep_period), EveryNSeconds(int(
 *             keep_time_interval)), BestN(best_metric, mode, max_to_keep,
 *             keep_checkpoints_without_metrics) or LatestN(max_to_keep))
 * where an absent option leaves its sub-policy out (LatestN/BestN with no
 * max_to_keep keep everything).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "policy.h"

/* Bounds on what a client may send (ckpt_limits.h). Real policies have a
 * handful of nodes. */
#define POLICY_MAX_NODES CKPT_MAX_POLICY_NODES

enum save_kind {
	SAVE_FIXED_INTERVAL = CKPT__SAVE_POLICY_NODE__KIND__FIXED_INTERVAL,
	SAVE_SPECIFIC_STEPS = CKPT__SAVE_POLICY_NODE__KIND__SPECIFIC_STEPS,
	SAVE_CONTINUOUS = CKPT__SAVE_POLICY_NODE__KIND__CONTINUOUS,
	SAVE_INITIAL = CKPT__SAVE_POLICY_NODE__KIND__INITIAL,
	SAVE_PREEMPTION = CKPT__SAVE_POLICY_NODE__KIND__PREEMPTION,
	SAVE_ANY = CKPT__SAVE_POLICY_NODE__KIND__ANY,
};

enum keep_kind {
	KEEP_ALL = CKPT__PRESERVATION_NODE__KIND__PRESERVE_ALL,
	KEEP_LATEST_N = CKPT__PRESERVATION_NODE__KIND__LATEST_N,
	KEEP_EVERY_N_SECONDS = CKPT__PRESERVATION_NODE__KIND__EVERY_N_SECONDS,
	KEEP_EVERY_N_STEPS = CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS,
	KEEP_CUSTOM_STEPS = CKPT__PRESERVATION_NODE__KIND__CUSTOM_STEPS,
	KEEP_BEST_N = CKPT__PRESERVATION_NODE__KIND__BEST_N,
	KEEP_LATEST_DURATION = CKPT__PRESERVATION_NODE__KIND__LATEST_DURATION,
	KEEP_ANY = CKPT__PRESERVATION_NODE__KIND__ANY,
	KEEP_EVERY_N_STEPS_CLOSEST =
	    CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS_CLOSEST,
};

struct save_leaf {
	enum save_kind kind;
	uint64_t interval;          /* FIXED_INTERVAL, > 0 */
	uint64_t *steps;            /* SPECIFIC_STEPS, sorted */
	size_t nsteps;
	int has_min;                /* CONTINUOUS: minimum interval given */
	int64_t min_ns;
};

struct keep_leaf {
	enum keep_kind kind;
	int has_n;                  /* LATEST_N, BEST_N: absent = keep all */
	int64_t n;                  /* also EVERY_N_STEPS (> 0) */
	int64_t secs_ns;            /* EVERY_N_SECONDS, LATEST_DURATION */
	uint64_t *steps;            /* CUSTOM_STEPS, sorted */
	size_t nsteps;
	int mode_min;               /* BEST_N: lower is better */
	int keep_without;           /* BEST_N: keep steps without the metric */
	int inexact;                /* EVERY_N_STEPS(exact_interval=False) */
	int has_max;                /* EVERY_N_STEPS(_CLOSEST) max_to_keep */
	int64_t max_keep;
};

struct policy_set {
	int read_only;
	struct save_leaf *save;
	size_t nsave;
	struct keep_leaf *keep;
	size_t nkeep;
	char *metric;               /* the metric BestN / best_step rank by */
	int track_best;             /* best_metric option set (Orbax best_fn) */
	int best_mode_min;          /* best_mode == 'min' */
	int wants_metrics;
};

/* ---- helpers ---------------------------------------------------------------- */

static int
policy_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static int
policy_has_step(const uint64_t *steps, size_t n, uint64_t step)
{
	return n > 0 &&
	    bsearch(&step, steps, n, sizeof(*steps), policy_cmp_u64) != NULL;
}

/* Copy and sort a step list. *out stays NULL for an empty list. */
static int
policy_copy_steps(const uint64_t *steps, size_t n, uint64_t **out,
    size_t *nout, ckd_err *e)
{
	*out = NULL;
	*nout = 0;
	if (n == 0)
		return 0;
	if (n > CKPT_MAX_STEPS_LIST)
		return err_set(e, CKPT_ETOOBIG, "a step list has %zu steps (at "
		    "most %u)", n, CKPT_MAX_STEPS_LIST);
	if ((*out = malloc(n * sizeof(**out))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory for policy steps");
	memcpy(*out, steps, n * sizeof(**out));
	qsort(*out, n, sizeof(**out), policy_cmp_u64);
	*nout = n;
	return 0;
}

/* Seconds to nanoseconds, rounded and saturating; secs must be finite and
 * >= 0. (No libm: the daemon's core library does not link it.) */
static int64_t
policy_secs_to_ns(double secs)
{
	double ns = secs * 1e9 + 0.5;

	if (ns >= 9.2e18)
		return INT64_MAX;
	return (int64_t)ns;
}

/* Whole seconds, as Python's int() of a non-negative float. */
static double
policy_whole_secs(double secs)
{
	return secs < 9.2e18 ? (double)(int64_t)secs : secs;
}

static int
policy_check_secs(double secs, const char *what, ckd_err *e)
{
	if (!isfinite(secs) || secs < 0)
		return err_set(e, CKPT_EINVAL,
		    "%s must be a non-negative number of seconds.", what);
	return 0;
}

/* a - b >= limit, without overflow. */
static int
policy_elapsed_ge(int64_t a, int64_t b, int64_t limit)
{
	int64_t d;

	if (__builtin_sub_overflow(a, b, &d))
		return a > b;
	return d >= limit;
}

/* a - b <= limit, without overflow. */
static int
policy_elapsed_le(int64_t a, int64_t b, int64_t limit)
{
	int64_t d;

	if (__builtin_sub_overflow(a, b, &d))
		return a < b;
	return d <= limit;
}

/* Mark nodes reachable from node 0 through ANY children; children must
 * have a larger index than their parent (so one forward pass suffices and
 * there can be no cycle). */
static int
policy_reach(size_t n, size_t i, int is_any, const uint32_t *children,
    size_t nchildren, unsigned char *reach, const char *what, ckd_err *e)
{
	size_t c;

	if (!is_any && nchildren > 0)
		return err_set(e, CKPT_EINVAL,
		    "%s node %zu: only ANY nodes may have children", what, i);
	if (is_any && nchildren == 0)
		return err_set(e, CKPT_EINVAL,
		    "%s node %zu: ANY needs at least one child", what, i);
	for (c = 0; c < nchildren; c++) {
		if (children[c] <= i || children[c] >= n)
			return err_set(e, CKPT_EINVAL,
			    "%s node %zu: child %u must be a later node "
			    "(0 < child < %zu, larger than its parent)", what,
			    i, children[c], n);
		if (reach[i])
			reach[children[c]] = 1;
	}
	return 0;
}

/* ---- compile: save decision ---------------------------------------------------- */

static int
policy_add_save(struct policy_set *p, const Ckpt__SavePolicyNode *nd,
    size_t i, ckd_err *e)
{
	struct save_leaf *l = &p->save[p->nsave];
	int r;

	memset(l, 0, sizeof(*l));
	l->kind = (enum save_kind)nd->kind;
	switch (l->kind) {
	case SAVE_FIXED_INTERVAL:
		if (!nd->has_interval || nd->interval == 0)
			return err_set(e, CKPT_EINVAL, "save_policy node %zu: "
			    "FixedIntervalPolicy interval must be positive.",
			    i);
		l->interval = nd->interval;
		break;
	case SAVE_SPECIFIC_STEPS:
		if ((r = policy_copy_steps(nd->steps, nd->n_steps, &l->steps,
		    &l->nsteps, e)) != 0)
			return r;
		break;
	case SAVE_CONTINUOUS:
		if (nd->has_minimum_interval_secs) {
			if ((r = policy_check_secs(nd->minimum_interval_secs,
			    "ContinuousCheckpointingPolicy "
			    "minimum_interval_secs", e)) != 0)
				return r;
			l->has_min = 1;
			l->min_ns = policy_secs_to_ns(
			    nd->minimum_interval_secs);
		}
		break;
	case SAVE_INITIAL:
	case SAVE_PREEMPTION:
		break;
	default:
		return err_set(e, CKPT_EINVAL,
		    "save_policy node %zu: unknown kind %d", i, (int)nd->kind);
	}
	p->nsave++;
	return 0;
}

static int
policy_compile_save_nodes(struct policy_set *p, const Ckpt__ManagerOptions *o,
    ckd_err *e)
{
	size_t n = o->n_save_policy, i;
	unsigned char *reach = NULL;
	int r = 0;

	if (n > POLICY_MAX_NODES)
		return err_set(e, CKPT_EINVAL,
		    "save_policy has %zu nodes (at most %d)", n,
		    POLICY_MAX_NODES);
	if ((reach = calloc(n, 1)) == NULL ||
	    (p->save = calloc(n, sizeof(*p->save))) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory for save_policy");
		goto out;
	}
	reach[0] = 1;
	for (i = 0; i < n; i++) {
		const Ckpt__SavePolicyNode *nd = o->save_policy[i];

		if (nd == NULL) {
			r = err_set(e, CKPT_EINVAL,
			    "save_policy node %zu is missing", i);
			goto out;
		}
		if ((r = policy_reach(n, i, (int)nd->kind == SAVE_ANY,
		    nd->children, nd->n_children, reach, "save_policy",
		    e)) != 0)
			goto out;
		if (!reach[i]) {
			r = err_set(e, CKPT_EINVAL, "save_policy node %zu is "
			    "not reachable from node 0", i);
			goto out;
		}
		if ((int)nd->kind != SAVE_ANY &&
		    (r = policy_add_save(p, nd, i, e)) != 0)
			goto out;
	}
out:
	free(reach);
	return r;
}

static int
policy_default_save(struct policy_set *p, const Ckpt__ManagerOptions *o,
    ckd_err *e)
{
	uint64_t interval = o->has_save_interval_steps ?
	    o->save_interval_steps : 1;
	int r;

	if ((p->save = calloc(4, sizeof(*p->save))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory for policies");
	/* read_only: Orbax sets save_interval_steps=0 and never saves. */
	if (!p->read_only) {
		/* 0 (Orbax 0.12 read-only setups): no interval saves. */
		if (interval > 0) {
			p->save[p->nsave].kind = SAVE_FIXED_INTERVAL;
			p->save[p->nsave++].interval = interval;
		}
		if (o->n_save_on_steps > 0) {
			struct save_leaf *l = &p->save[p->nsave];

			l->kind = SAVE_SPECIFIC_STEPS;
			if ((r = policy_copy_steps(o->save_on_steps,
			    o->n_save_on_steps, &l->steps, &l->nsteps,
			    e)) != 0)
				return r;
			p->nsave++;
		}
	}
	p->save[p->nsave++].kind = SAVE_PREEMPTION;
	p->save[p->nsave++].kind = SAVE_INITIAL;
	return 0;
}

/* ---- compile: preservation ------------------------------------------------------- */

/* BestN nodes share the one metric each step carries (policy_step): the
 * node's metric, else best_metric; every BestN must name the same one. */
static int
policy_set_metric(struct policy_set *p, const char *name, size_t i,
    ckd_err *e)
{
	if (name == NULL || name[0] == '\0')
		name = p->metric;
	if (name == NULL)
		return err_set(e, CKPT_EINVAL, "preservation node %zu: BestN "
		    "needs a metric (or best_metric)", i);
	if (p->metric != NULL) {
		if (strcmp(p->metric, name) != 0)
			return err_set(e, CKPT_EINVAL, "preservation node "
			    "%zu: BestN metric '%s' differs from '%s'; all "
			    "BestN policies and best_metric must rank by the "
			    "same metric", i, name, p->metric);
		return 0;
	}
	if ((p->metric = strdup(name)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory for metric");
	return 0;
}

static int
policy_add_keep(struct policy_set *p, const Ckpt__PreservationNode *nd,
    size_t i, ckd_err *e)
{
	struct keep_leaf *l = &p->keep[p->nkeep];
	int r;

	memset(l, 0, sizeof(*l));
	l->kind = (enum keep_kind)nd->kind;
	switch (l->kind) {
	case KEEP_ALL:
		break;
	case KEEP_LATEST_N:
	case KEEP_BEST_N:
		if (nd->has_n && nd->n < 0)
			return err_set(e, CKPT_EINVAL, "preservation node %zu: "
			    "n must be None or non-negative.", i);
		l->has_n = nd->has_n;
		l->n = nd->n;
		if (l->kind == KEEP_BEST_N) {
			l->mode_min = nd->has_mode_min ? nd->mode_min : 0;
			l->keep_without = nd->has_keep_without_metrics ?
			    nd->keep_without_metrics : 1;
			if ((r = policy_set_metric(p, nd->metric, i, e)) != 0)
				return r;
			p->wants_metrics = 1;
		}
		break;
	case KEEP_EVERY_N_SECONDS:
	case KEEP_LATEST_DURATION:
		if (!nd->has_secs)
			return err_set(e, CKPT_EINVAL, "preservation node %zu: "
			    "secs is required", i);
		if ((r = policy_check_secs(nd->secs, l->kind ==
		    KEEP_EVERY_N_SECONDS ? "EveryNSeconds interval_secs" :
		    "LatestDuration duration", e)) != 0)
			return r;
		l->secs_ns = policy_secs_to_ns(nd->secs);
		break;
	case KEEP_EVERY_N_STEPS:
	case KEEP_EVERY_N_STEPS_CLOSEST:
		if (!nd->has_n || nd->n <= 0)
			return err_set(e, CKPT_EINVAL, "preservation node %zu: "
			    "interval_steps must not be 0.", i);
		if (nd->has_max_to_keep && nd->max_to_keep < 0)
			return err_set(e, CKPT_EINVAL, "preservation node %zu: "
			    "max_to_keep must be None or non-negative.", i);
		l->n = nd->n;
		l->inexact = nd->has_exact_interval && !nd->exact_interval;
		l->has_max = nd->has_max_to_keep;
		l->max_keep = nd->max_to_keep;
		break;
	case KEEP_CUSTOM_STEPS:
		if ((r = policy_copy_steps(nd->steps, nd->n_steps, &l->steps,
		    &l->nsteps, e)) != 0)
			return r;
		break;
	default:
		return err_set(e, CKPT_EINVAL,
		    "preservation node %zu: unknown kind %d", i, (int)nd->kind);
	}
	p->nkeep++;
	return 0;
}

static int
policy_compile_keep_nodes(struct policy_set *p, const Ckpt__ManagerOptions *o,
    ckd_err *e)
{
	size_t n = o->n_preservation, i;
	unsigned char *reach = NULL;
	int r = 0;

	if (n > POLICY_MAX_NODES)
		return err_set(e, CKPT_EINVAL,
		    "preservation has %zu nodes (at most %d)", n,
		    POLICY_MAX_NODES);
	if ((reach = calloc(n, 1)) == NULL ||
	    (p->keep = calloc(n, sizeof(*p->keep))) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory for preservation");
		goto out;
	}
	reach[0] = 1;
	for (i = 0; i < n; i++) {
		const Ckpt__PreservationNode *nd = o->preservation[i];

		if (nd == NULL) {
			r = err_set(e, CKPT_EINVAL,
			    "preservation node %zu is missing", i);
			goto out;
		}
		if ((r = policy_reach(n, i, (int)nd->kind == KEEP_ANY,
		    nd->children, nd->n_children, reach, "preservation",
		    e)) != 0)
			goto out;
		if (!reach[i]) {
			r = err_set(e, CKPT_EINVAL, "preservation node %zu is "
			    "not reachable from node 0", i);
			goto out;
		}
		if ((int)nd->kind != KEEP_ANY &&
		    (r = policy_add_keep(p, nd, i, e)) != 0)
			goto out;
	}
out:
	free(reach);
	return r;
}

static int
policy_default_keep(struct policy_set *p, const Ckpt__ManagerOptions *o,
    ckd_err *e)
{
	struct keep_leaf *l;
	int r;

	if ((p->keep = calloc(3, sizeof(*p->keep))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory for policies");
	/* read_only: Orbax resets max_to_keep, keep_period and
	 * keep_time_interval to None. */
	if (!p->read_only && o->has_keep_period) {
		if (o->keep_period == 0)
			return err_set(e, CKPT_EINVAL,
			    "interval_steps must not be 0.");
		if (o->keep_period > INT64_MAX)
			return err_set(e, CKPT_EINVAL,
			    "keep_period is too large");
		l = &p->keep[p->nkeep++];
		l->kind = KEEP_EVERY_N_STEPS;
		l->n = (int64_t)o->keep_period;
	}
	if (!p->read_only && o->has_keep_time_interval_secs) {
		if ((r = policy_check_secs(o->keep_time_interval_secs,
		    "Setting of `keep_time_interval`", e)) != 0)
			return r;
		/* Orbax: EveryNSeconds(int(keep_time_interval.total_seconds())) */
		l = &p->keep[p->nkeep++];
		l->kind = KEEP_EVERY_N_SECONDS;
		l->secs_ns = policy_secs_to_ns(
		    policy_whole_secs(o->keep_time_interval_secs));
	}
	l = &p->keep[p->nkeep++];
	l->has_n = !p->read_only && o->has_max_to_keep;
	l->n = l->has_n ? o->max_to_keep : 0;
	if (p->track_best) {
		l->kind = KEEP_BEST_N;
		l->mode_min = p->best_mode_min;
		l->keep_without = o->has_keep_checkpoints_without_metrics ?
		    o->keep_checkpoints_without_metrics : 1;
	} else {
		l->kind = KEEP_LATEST_N;
	}
	return 0;
}

/* ---- compile --------------------------------------------------------------------- */

int
policy_compile(const Ckpt__ManagerOptions *o, struct policy_set **out,
    ckd_err *e)
{
	struct policy_set *p;
	int has_keep_nodes, r;

	*out = NULL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory for policies");
	p->read_only = o->has_read_only && o->read_only;
	has_keep_nodes = o->n_preservation > 0;

	/* CheckpointManagerOptions.__post_init__ (before read_only resets). */
	if (!has_keep_nodes && o->has_max_to_keep && o->max_to_keep < 0) {
		r = err_set(e, CKPT_EINVAL, "Setting of `max_to_keep` must be "
		    "None or non-negative.");
		goto fail;
	}
	/* CheckpointManager.__init__: the options are tested for truth, after
	 * read_only has reset them to None. */
	if (has_keep_nodes && !p->read_only &&
	    ((o->has_keep_time_interval_secs &&
	    o->keep_time_interval_secs != 0) ||
	    (o->has_max_to_keep && o->max_to_keep != 0) ||
	    (o->has_keep_period && o->keep_period != 0))) {
		r = err_set(e, CKPT_EINVAL, "`preservation_policy` and `delete "
		    "options` are mutually exclusive - do not use together.");
		goto fail;
	}

	if (o->best_metric != NULL && o->best_metric[0] != '\0') {
		p->track_best = 1;
		p->wants_metrics = 1;
		if ((p->metric = strdup(o->best_metric)) == NULL) {
			r = err_set(e, CKPT_ENOMEM, "out of memory for metric");
			goto fail;
		}
	}
	p->best_mode_min = o->has_best_mode_min && o->best_mode_min;

	if ((r = o->n_save_policy > 0 ? policy_compile_save_nodes(p, o, e) :
	    policy_default_save(p, o, e)) != 0)
		goto fail;
	if ((r = has_keep_nodes ? policy_compile_keep_nodes(p, o, e) :
	    policy_default_keep(p, o, e)) != 0)
		goto fail;
	*out = p;
	return 0;
fail:
	policy_free(p);
	return r;
}

void
policy_free(struct policy_set *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nsave; i++)
		free(p->save[i].steps);
	for (i = 0; i < p->nkeep; i++)
		free(p->keep[i].steps);
	free(p->save);
	free(p->keep);
	free(p->metric);
	free(p);
}

/* ---- save decision --------------------------------------------------------------- */

static int
policy_save_leaf(const struct save_leaf *l, uint64_t step, int64_t latest,
    int64_t now_ns, int64_t last_save_ns, int saving, int preempted)
{
	switch (l->kind) {
	case SAVE_FIXED_INTERVAL:
		return step % l->interval == 0;
	case SAVE_SPECIFIC_STEPS:
		return policy_has_step(l->steps, l->nsteps, step);
	case SAVE_CONTINUOUS:
		if (saving)
			return 0;
		if (last_save_ns < 0 || !l->has_min)
			return 1;
		return policy_elapsed_ge(now_ns, last_save_ns, l->min_ns);
	case SAVE_INITIAL:
		/* Orbax: no checkpoint yet, counting one being saved. */
		return latest < 0 && !saving;
	case SAVE_PREEMPTION:
		return preempted != 0;
	default:
		return 0;
	}
}

int
policy_should_save(const struct policy_set *p, uint64_t step,
    int64_t latest, int64_t now_ns, int64_t last_save_ns, int saving,
    int preempted)
{
	size_t i;

	if (p->read_only)
		return 0;
	if (latest >= 0 && step <= (uint64_t)latest)
		return 0;
	for (i = 0; i < p->nsave; i++)
		if (policy_save_leaf(&p->save[i], step, latest, now_ns,
		    last_save_ns, saving, preempted))
			return 1;
	return 0;
}

/* ---- preservation ------------------------------------------------------------------ */

struct policy_ranked {
	double metric;
	size_t idx;
};

/* Ascending quality; equal metrics rank by index, so that, as with Python's
 * stable sorted(), the later of two equal steps counts as the better one. */
static int
policy_cmp_max(const void *a, const void *b)
{
	const struct policy_ranked *x = a, *y = b;

	if (x->metric != y->metric) {
		if (isnan(x->metric) || isnan(y->metric))
			return isnan(x->metric) ? -1 : 1;
		return x->metric < y->metric ? -1 : 1;
	}
	return (x->idx > y->idx) - (x->idx < y->idx);
}

static int
policy_cmp_min(const void *a, const void *b)
{
	const struct policy_ranked *x = a, *y = b;

	if (x->metric != y->metric) {
		if (isnan(x->metric) || isnan(y->metric))
			return isnan(x->metric) ? -1 : 1;
		return x->metric > y->metric ? -1 : 1;
	}
	return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sort the steps that have the metric by increasing quality; returns the
 * count, or -1 when out of memory. */
static long
policy_rank(const struct policy_step *steps, size_t n, int mode_min,
    struct policy_ranked **out)
{
	struct policy_ranked *r;
	size_t i, m = 0;

	*out = NULL;
	if (n == 0)
		return 0;
	if ((r = malloc(n * sizeof(*r))) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		if (!steps[i].has_metric)
			continue;
		r[m].metric = steps[i].metric;
		r[m++].idx = i;
	}
	qsort(r, m, sizeof(*r), mode_min ? policy_cmp_min : policy_cmp_max);
	*out = r;
	return (long)m;
}

static void
policy_keep_best(const struct keep_leaf *l, const struct policy_step *steps,
    size_t n, int *keep)
{
	struct policy_ranked *r;
	long m, j, from;
	size_t i;

	if (!l->has_n || (uint64_t)l->n >= n) {
		for (i = 0; i < n; i++)
			keep[i] = 1;
		return;
	}
	if (l->n == 0)
		return;
	if ((m = policy_rank(steps, n, l->mode_min, &r)) < 0) {
		/* Out of memory: deleting nothing is the safe answer. */
		for (i = 0; i < n; i++)
			keep[i] = 1;
		return;
	}
	from = m > l->n ? m - (long)l->n : 0;
	for (j = from; j < m; j++)
		keep[r[j].idx] = 1;
	if (l->keep_without)
		for (i = 0; i < n; i++)
			if (!steps[i].has_metric)
				keep[i] = 1;
	free(r);
}

/*
 * Orbax 0.12 EveryNSteps and EveryNStepsClosest: choose into mine[] (all
 * 0 on entry), then keep only the latest max_to_keep chosen.
 */
static void
policy_every_n(const struct keep_leaf *l, const struct policy_step *steps,
    size_t n, unsigned char *mine)
{
	uint64_t iv = (uint64_t)l->n, k, d, last = 0, prevk = 0, bestd = 0;
	size_t i, best = 0, chosen = 0;

	if (l->kind == KEEP_EVERY_N_STEPS && !l->inexact) {
		for (i = 0; i < n; i++)
			mine[i] = steps[i].step % iv == 0;
	} else if (l->kind == KEEP_EVERY_N_STEPS) {
		/* The first, then each at least n steps after the last kept. */
		for (i = 0; i < n; i++)
			if (i == 0 || steps[i].step - last >= iv) {
				mine[i] = 1;
				last = steps[i].step;
			}
	} else {
		/* Per grid point k*n (k = the nearest, halves to even as
		 * Python's round), the closest step, the later one on a tie;
		 * steps are ascending, so each k is one run. */
		for (i = 0; i < n; i++) {
			k = steps[i].step / iv;
			d = steps[i].step % iv;
			if (d * 2 > iv || (d * 2 == iv && k % 2 == 1)) {
				k++;
				d = iv - d;
			}
			if (i > 0 && k != prevk)
				mine[best] = 1;
			if (i == 0 || k != prevk || d <= bestd) {
				best = i;
				bestd = d;
			}
			prevk = k;
		}
		mine[best] = 1;
		mine[n - 1] = 1;        /* always the last one */
	}
	/* Orbax drops true_indices[:-max_to_keep]: 0 drops nothing. */
	if (!l->has_max || l->max_keep == 0)
		return;
	for (i = n; i-- > 0;)
		if (mine[i] && chosen++ >= (uint64_t)l->max_keep)
			mine[i] = 0;
}

/* OR the leaf's decision into keep[]. */
static void
policy_keep_leaf(const struct keep_leaf *l, const struct policy_step *steps,
    size_t n, int64_t now_ns, int *keep)
{
	unsigned char *mine;
	size_t i, last;

	switch (l->kind) {
	case KEEP_ALL:
		for (i = 0; i < n; i++)
			keep[i] = 1;
		break;
	case KEEP_LATEST_N:
		if (!l->has_n || (uint64_t)l->n >= n)
			i = 0;
		else
			i = n - (size_t)l->n;
		for (; i < n; i++)
			keep[i] = 1;
		break;
	case KEEP_EVERY_N_SECONDS:
		/* The first, then each one at least secs after the last kept. */
		keep[0] = 1;
		for (i = 1, last = 0; i < n; i++) {
			if (policy_elapsed_ge(steps[i].time_ns,
			    steps[last].time_ns, l->secs_ns)) {
				keep[i] = 1;
				last = i;
			}
		}
		break;
	case KEEP_EVERY_N_STEPS:
	case KEEP_EVERY_N_STEPS_CLOSEST:
		if (l->kind == KEEP_EVERY_N_STEPS && !l->inexact &&
		    !l->has_max) {
			for (i = 0; i < n; i++)
				if (steps[i].step % (uint64_t)l->n == 0)
					keep[i] = 1;
			break;
		}
		if ((mine = calloc(n, 1)) == NULL) {
			for (i = 0; i < n; i++)     /* never delete wrongly */
				keep[i] = 1;
			break;
		}
		policy_every_n(l, steps, n, mine);
		for (i = 0; i < n; i++)
			if (mine[i])
				keep[i] = 1;
		free(mine);
		break;
	case KEEP_CUSTOM_STEPS:
		for (i = 0; i < n; i++)
			if (policy_has_step(l->steps, l->nsteps, steps[i].step))
				keep[i] = 1;
		break;
	case KEEP_BEST_N:
		policy_keep_best(l, steps, n, keep);
		break;
	case KEEP_LATEST_DURATION:
		/* From the first step within the duration of now, all later
		 * ones too. */
		for (i = 0; i < n; i++)
			if (policy_elapsed_le(now_ns, steps[i].time_ns,
			    l->secs_ns))
				break;
		for (; i < n; i++)
			keep[i] = 1;
		break;
	default:
		break;
	}
}

void
policy_preserve(const struct policy_set *p,
    const struct policy_step *steps, size_t n, int64_t now_ns, int *keep)
{
	size_t i;

	if (n == 0)
		return;
	for (i = 0; i < n; i++)
		keep[i] = p->read_only;
	if (p->read_only)
		return;
	for (i = 0; i < p->nkeep; i++)
		policy_keep_leaf(&p->keep[i], steps, n, now_ns, keep);
}

long
policy_best(const struct policy_set *p, const struct policy_step *steps,
    size_t n)
{
	int (*cmp)(const void *, const void *) = p->best_mode_min ?
	    policy_cmp_min : policy_cmp_max;
	struct policy_ranked a, b = { 0, 0 };
	long best = -1;
	size_t i;

	if (!p->track_best)
		return -1;
	/* The last of the steps sorted by quality (see policy_cmp_max). */
	for (i = 0; i < n; i++) {
		if (!steps[i].has_metric)
			continue;
		a.metric = steps[i].metric;
		a.idx = i;
		if (best < 0 || cmp(&a, &b) > 0) {
			best = (long)i;
			b = a;
		}
	}
	return best;
}

int
policy_metric(const struct policy_set *p, const char *metrics_json,
    double *out)
{
	json_t *root, *v;
	int ok = 0;

	if (p->metric == NULL || metrics_json == NULL)
		return 0;
	if ((root = json_loads(metrics_json, 0, NULL)) == NULL)
		return 0;
	v = json_is_object(root) ? json_object_get(root, p->metric) : NULL;
	if (json_is_number(v)) {
		*out = json_number_value(v);
		ok = 1;
	}
	json_decref(root);
	return ok;
}

int
policy_wants_metrics(const struct policy_set *p)
{
	return p->wants_metrics;
}
