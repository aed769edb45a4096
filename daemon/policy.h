/*
 * policy.h - Orbax's save decision and preservation (retention) policies,
 * as pure functions over a root's step list. No I/O, no globals: called
 * by the manager under its lock.
 *
 * Semantics follow orbax-checkpoint (checkpoint_manager.py and
 * _src/checkpoint_managers/{save_decision_policy,preservation_policy}.py):
 * see ORBAX.md. The default policies are derived from the plain options
 * exactly as Orbax derives them.
 */
#ifndef CKPTD_POLICY_H
#define CKPTD_POLICY_H

#include <stdint.h>
#include <stddef.h>

#include "common.h"
#include "ckpt.pb-c.h"

struct policy_set;

/* One committed step as the policies see it. */
struct policy_step {
	uint64_t step;
	int64_t time_ns;      /* the step's save time (init timestamp) */
	int has_metric;       /* best metric present in its metrics */
	double metric;
};

/* Validate options and build the policies. Errors (CKPT_EINVAL, with
 * Orbax's message where Orbax has one): negative max_to_keep, zero
 * save_interval_steps, preservation nodes together with max_to_keep /
 * keep_period / keep_time_interval, malformed node lists (bad child index,
 * cycles, unknown kind). best_mode without best_metric is accepted and
 * ignored, as in Orbax. */
int policy_compile(const Ckpt__ManagerOptions *o, struct policy_set **out,
    ckd_err *e);
void policy_free(struct policy_set *p);

/* Whether `step` should be saved now (force is handled by the caller).
 * latest: highest committed step or -1; last_save_ns: start time of the
 * most recent save (-1 none); saving: a save of the root is in flight;
 * preempted: the client reached preemption at this step. Returns 1/0.
 * read_only and "step <= latest" give 0. InitialSave is false while a save
 * is in flight. After a restart pass the latest step's time as
 * last_save_ns (Orbax measures Continuous from it). */
int policy_should_save(const struct policy_set *p, uint64_t step,
    int64_t latest, int64_t now_ns, int64_t last_save_ns, int saving,
    int preempted);

/* Retention. steps[0..n) are the committed steps in ascending order, the
 * last one being the step just committed. Sets keep[i] to 1 for steps to
 * keep, 0 for steps to delete. As in Orbax, the newest step itself may be
 * marked (max_to_keep == 0, BestN ranking it worse, CustomSteps...): the
 * caller must not assume the just-committed step survives. Every BestN
 * node uses best_metric. read_only keeps everything. */
void policy_preserve(const struct policy_set *p,
    const struct policy_step *steps, size_t n, int64_t now_ns, int *keep);

/* Index of the best step by the best metric, or -1 (no metric configured
 * or no step has it). */
long policy_best(const struct policy_set *p, const struct policy_step *steps,
    size_t n);

/* Extract the configured best metric from a step's metrics JSON object;
 * returns 1 and *out when present and numeric, else 0. */
int policy_metric(const struct policy_set *p, const char *metrics_json,
    double *out);

/* 1 when metrics must be written/kept (best_metric set, or any metric
 * policy), for prevent_write_metrics and "metrics are stored when best_fn
 * is set". */
int policy_wants_metrics(const struct policy_set *p);

#endif
