/*
 * test_policy.c - save decision and preservation policies against the
 * behaviour of orbax-checkpoint's CheckpointManager and policy tests.
 *
 * The simulator below plays a manager: should_save -> commit -> preserve ->
 * delete what the policy releases, with a clock the test controls, and the
 * tests assert the exact step lists Orbax's own tests expect.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <inttypes.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "policy.h"

#define SEC INT64_C(1000000000)
#define HOUR (3600 * SEC)
#define MAXN 16
#define NSTEPS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- options builder ------------------------------------------------------------ */

struct opts {
	Ckpt__ManagerOptions o;
	Ckpt__SavePolicyNode sn[MAXN];
	Ckpt__SavePolicyNode *sp[MAXN];
	Ckpt__PreservationNode pn[MAXN];
	Ckpt__PreservationNode *pp[MAXN];
};

static void
opts_init(struct opts *t)
{
	memset(t, 0, sizeof(*t));
	t->o = (Ckpt__ManagerOptions)CKPT__MANAGER_OPTIONS__INIT;
}

static Ckpt__SavePolicyNode *
save_node(struct opts *t, Ckpt__SavePolicyNode__Kind kind)
{
	size_t i = t->o.n_save_policy++;

	assert_true(i < MAXN);
	t->sn[i] = (Ckpt__SavePolicyNode)CKPT__SAVE_POLICY_NODE__INIT;
	t->sn[i].has_kind = 1;
	t->sn[i].kind = kind;
	t->sp[i] = &t->sn[i];
	t->o.save_policy = t->sp;
	return &t->sn[i];
}

static Ckpt__PreservationNode *
keep_node(struct opts *t, Ckpt__PreservationNode__Kind kind)
{
	size_t i = t->o.n_preservation++;

	assert_true(i < MAXN);
	t->pn[i] = (Ckpt__PreservationNode)CKPT__PRESERVATION_NODE__INIT;
	t->pn[i].has_kind = 1;
	t->pn[i].kind = kind;
	t->pp[i] = &t->pn[i];
	t->o.preservation = t->pp;
	return &t->pn[i];
}

#define SET_CHILDREN(node, ...) do {                                    \
	static uint32_t ch_[] = { __VA_ARGS__ };                        \
	(node)->children = ch_;                                         \
	(node)->n_children = NSTEPS(ch_);                               \
} while (0)

#define SET_STEPS(node, ...) do {                                       \
	static uint64_t st_[] = { __VA_ARGS__ };                        \
	(node)->steps = st_;                                            \
	(node)->n_steps = NSTEPS(st_);                                  \
} while (0)

static struct policy_set *
compile_ok(struct opts *t)
{
	struct policy_set *p = NULL;
	ckd_err e = { 0 };
	int r = policy_compile(&t->o, &p, &e);

	if (r != 0)
		fail_msg("policy_compile: %d %s", r, e.msg);
	assert_non_null(p);
	return p;
}

static void
compile_fails(struct opts *t, const char *msg)
{
	struct policy_set *p = (struct policy_set *)&p;
	ckd_err e = { 0 };
	int r = policy_compile(&t->o, &p, &e);

	assert_int_equal(r, CKPT_EINVAL);
	assert_int_equal(e.code, CKPT_EINVAL);
	assert_null(p);
	if (strstr(e.msg, msg) == NULL)
		fail_msg("message '%s' does not contain '%s'", e.msg, msg);
}

/* ---- manager simulator ---------------------------------------------------------- */

struct sim {
	struct policy_set *p;
	struct policy_step s[256];
	size_t n;
	int64_t now;            /* the test's clock */
	int64_t last_save_ns;
	int saving;             /* a save is in flight (async) */
};

static void
sim_init(struct sim *m, struct policy_set *p)
{
	memset(m, 0, sizeof(*m));
	m->p = p;
	m->now = 1700000000 * SEC;
	m->last_save_ns = -1;
}

static int64_t
sim_latest(const struct sim *m)
{
	return m->n ? (int64_t)m->s[m->n - 1].step : -1;
}

static int
sim_should_save(struct sim *m, uint64_t step, int preempted)
{
	return policy_should_save(m->p, step, sim_latest(m), m->now,
	    m->last_save_ns, m->saving, preempted);
}

/* Orbax's save(): skip unless forced or should_save; commit; apply the
 * preservation policy to every step including the new one; delete. */
static int
sim_save_full(struct sim *m, uint64_t step, const char *metrics, int force,
    int preempted)
{
	int keep[256];
	size_t i, j;

	if (!force && !sim_should_save(m, step, preempted))
		return 0;
	assert_true(m->n < 256);
	assert_true(sim_latest(m) < (int64_t)step);
	m->s[m->n].step = step;
	m->s[m->n].time_ns = m->now;
	m->s[m->n].has_metric = policy_metric(m->p, metrics,
	    &m->s[m->n].metric);
	m->n++;
	m->last_save_ns = m->now;
	memset(keep, 0xff, sizeof(keep));
	policy_preserve(m->p, m->s, m->n, m->now, keep);
	for (i = j = 0; i < m->n; i++) {
		assert_true(keep[i] == 0 || keep[i] == 1);
		if (keep[i])
			m->s[j++] = m->s[i];
	}
	m->n = j;
	return 1;
}

static int
sim_save(struct sim *m, uint64_t step)
{
	return sim_save_full(m, step, NULL, 0, 0);
}

static void
assert_steps_(const struct sim *m, const uint64_t *want, size_t nwant,
    const char *file, int line)
{
	char got[1024], exp[1024];
	size_t i, a = 0, b = 0;
	int same = m->n == nwant;

	for (i = 0; same && i < nwant; i++)
		same = m->s[i].step == want[i];
	if (same)
		return;
	got[0] = exp[0] = '\0';
	for (i = 0; i < m->n && a < sizeof(got) - 24; i++)
		a += (size_t)snprintf(got + a, sizeof(got) - a, "%s%llu",
		    i ? "," : "", (unsigned long long)m->s[i].step);
	for (i = 0; i < nwant && b < sizeof(exp) - 24; i++)
		b += (size_t)snprintf(exp + b, sizeof(exp) - b, "%s%llu",
		    i ? "," : "", (unsigned long long)want[i]);
	fail_msg("%s:%d: steps [%s], expected [%s]", file, line, got, exp);
}

#define ASSERT_STEPS(m, ...) do {                                       \
	static const uint64_t want_[] = { __VA_ARGS__ };                \
	assert_steps_((m), want_, NSTEPS(want_), __FILE__, __LINE__);   \
} while (0)
#define ASSERT_NO_STEPS(m) assert_steps_((m), NULL, 0, __FILE__, __LINE__)

/* Run a policy over a fixed list, as Orbax's preservation_policy_test does. */
struct run {
	struct policy_step s[32];
	size_t n;
	int keep[32];
};

static void
run_steps(struct run *r, const uint64_t *steps, size_t n)
{
	size_t i;

	memset(r, 0, sizeof(*r));
	for (i = 0; i < n; i++) {
		r->s[i].step = steps[i];
		r->s[i].time_ns = 1700000000 * SEC + (int64_t)i * SEC;
	}
	r->n = n;
}

static void
run_preserved_(struct run *r, struct policy_set *p, int64_t now,
    const uint64_t *want, size_t nwant, const char *file, int line)
{
	struct sim m;
	size_t i;

	policy_preserve(p, r->s, r->n, now, r->keep);
	memset(&m, 0, sizeof(m));
	for (i = 0; i < r->n; i++)
		if (r->keep[i])
			m.s[m.n++] = r->s[i];
	assert_steps_(&m, want, nwant, file, line);
}

#define ASSERT_PRESERVED(r, p, now, ...) do {                           \
	static const uint64_t want_[] = { __VA_ARGS__ };                \
	run_preserved_((r), (p), (now), want_ + 1, NSTEPS(want_) - 1,   \
	    __FILE__, __LINE__);                                        \
} while (0)
/* ASSERT_PRESERVED(r, p, now, 0, steps...): the leading 0 is a placeholder
 * so that an empty expectation can be written. */

/* ---- CheckpointManager tests (default policies from options) ------------------- */

static void
test_max_to_keep_two(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 2;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 5; s++)
		assert_true(sim_save(&m, s));
	ASSERT_STEPS(&m, 3, 4);
	policy_free(m.p);
}

static void
test_max_to_keep_zero(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 0;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 5; s++) {
		assert_true(sim_save(&m, s));
		ASSERT_NO_STEPS(&m);
	}
	policy_free(m.p);
}

static void
test_max_to_keep_zero_other_conditions(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 0;
	t.o.has_keep_period = 1;
	t.o.keep_period = 3;
	t.o.has_keep_time_interval_secs = 1;
	t.o.keep_time_interval_secs = 5 * 3600;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 9; s++) {
		assert_true(sim_save(&m, s));
		m.now += HOUR;
	}
	ASSERT_STEPS(&m, 0, 3, 5, 6);
	policy_free(m.p);
}

static void
test_keep_all_by_default(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	sim_init(&m, compile_ok(&t));
	assert_int_equal(policy_wants_metrics(m.p), 0);
	for (s = 0; s < 6; s++)
		assert_true(sim_save(&m, s));
	ASSERT_STEPS(&m, 0, 1, 2, 3, 4, 5);
	policy_free(m.p);
}

static void
test_save_interval_and_force(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 2;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 6; s++)
		assert_int_equal(sim_save(&m, s), s % 2 == 0);
	ASSERT_STEPS(&m, 0, 2, 4);
	assert_int_equal(sim_latest(&m), 4);
	assert_true(sim_save_full(&m, 5, NULL, 1, 0));
	ASSERT_STEPS(&m, 0, 2, 4, 5);
	/* test_latest_step: 6 is a multiple again */
	assert_true(sim_save(&m, 6));
	assert_int_equal(sim_latest(&m), 6);
	policy_free(m.p);
}

static void
test_step_not_after_latest(void **state)
{
	struct opts t;
	struct sim m;

	opts_init(&t);
	sim_init(&m, compile_ok(&t));
	assert_true(sim_save(&m, 5));
	assert_false(sim_should_save(&m, 5, 1));
	assert_false(sim_should_save(&m, 3, 1));
	assert_true(sim_should_save(&m, 6, 0));
	/* steps beyond INT64_MAX still count as after latest */
	assert_true(sim_should_save(&m, UINT64_MAX - 1, 0));
	policy_free(m.p);
}

static void
test_keep_period(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 2;
	t.o.has_keep_period = 1;
	t.o.keep_period = 4;
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 2;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 12; s++)
		assert_int_equal(sim_save(&m, s), s % 2 == 0);
	ASSERT_STEPS(&m, 0, 4, 8, 10);
	policy_free(m.p);
}

static void
test_keep_time_interval(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;
	int64_t now;

	opts_init(&t);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 2;
	t.o.has_keep_time_interval_secs = 1;
	t.o.keep_time_interval_secs = 3 * 3600;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 10; s++) {
		assert_true(sim_save(&m, s));
		m.now += HOUR;
	}
	ASSERT_STEPS(&m, 0, 3, 6, 8, 9);

	/* restart: a new policy over the same steps and their times */
	policy_free(m.p);
	m.p = compile_ok(&t);
	now = m.now;
	for (s = 10; s < 20; s++) {
		m.now = now;
		assert_true(sim_save(&m, s));
		now += HOUR;
	}
	ASSERT_STEPS(&m, 0, 3, 6, 9, 12, 15, 18, 19);
	policy_free(m.p);
}

static void
test_keep_time_interval_metrics(void **state)
{
	struct opts t;
	struct sim m;
	char js[64];
	uint64_t s;

	opts_init(&t);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 3;
	t.o.best_metric = "loss";
	t.o.has_best_mode_min = 1;
	t.o.best_mode_min = 1;
	t.o.has_keep_time_interval_secs = 1;
	t.o.keep_time_interval_secs = 3 * 3600;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 10; s++) {
		snprintf(js, sizeof(js), "{\"loss\": %llu}",
		    (unsigned long long)s);
		assert_true(sim_save_full(&m, s, js, 0, 0));
		m.now += HOUR;
	}
	/* the first three are the best, the rest kept by the interval */
	ASSERT_STEPS(&m, 0, 1, 2, 3, 6, 9);
	policy_free(m.p);
}

/* Orbax keeps int(keep_time_interval.total_seconds()). */
static void
test_keep_time_interval_whole_seconds(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 0;
	t.o.has_keep_time_interval_secs = 1;
	t.o.keep_time_interval_secs = 1.9;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 4; s++) {
		assert_true(sim_save(&m, s));
		m.now += SEC;
	}
	ASSERT_STEPS(&m, 0, 1, 2, 3);
	policy_free(m.p);
}

static void
run_save_best(int mode_min)
{
	static const int loss[] = { 5, 2, 4, 3, 7, 1, 10, 9, 7, 4 };
	static const int acc[] = { 30, 85, 70, 80, 60, 100, 40, 45, 75, 75 };
	struct opts t;
	struct sim m;
	char js[96];
	uint64_t s;

	opts_init(&t);
	t.o.best_metric = mode_min ? "loss" : "accuracy";
	t.o.has_best_mode_min = 1;
	t.o.best_mode_min = mode_min;
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 2;
	sim_init(&m, compile_ok(&t));
	assert_int_equal(policy_wants_metrics(m.p), 1);
	for (s = 0; s < 10; s++) {
		if (s == 5) {   /* a new manager reloads the metrics */
			policy_free(m.p);
			m.p = compile_ok(&t);
		}
		snprintf(js, sizeof(js), "{\"loss\": %d, \"accuracy\": %d}",
		    loss[s], acc[s]);
		assert_true(sim_save_full(&m, s, js, 0, 0));
	}
	ASSERT_STEPS(&m, 1, 5);
	assert_int_equal(policy_best(m.p, m.s, m.n), 1);   /* step 5 */
	policy_free(m.p);
}

static void
test_save_best_min(void **state)
{
	run_save_best(1);
}

static void
test_save_best_max(void **state)
{
	run_save_best(0);
}

static void
test_save_best_no_metrics(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.best_metric = "loss";
	t.o.has_best_mode_min = 1;
	t.o.best_mode_min = 1;
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 2;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 5; s++)
		assert_true(sim_save(&m, s));
	/* kept although beyond max_to_keep: they have no metrics */
	ASSERT_STEPS(&m, 0, 1, 2, 3, 4);
	assert_int_equal(policy_best(m.p, m.s, m.n), -1);
	assert_int_equal(sim_latest(&m), 4);
	policy_free(m.p);
}

static void
test_save_best_no_metrics_deleted(void **state)
{
	struct opts t;
	struct sim m;

	opts_init(&t);
	t.o.best_metric = "loss";
	t.o.has_best_mode_min = 1;
	t.o.best_mode_min = 1;
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 1;
	t.o.has_keep_checkpoints_without_metrics = 1;
	t.o.keep_checkpoints_without_metrics = 0;
	sim_init(&m, compile_ok(&t));
	assert_true(sim_save_full(&m, 0, "{\"loss\": 3}", 0, 0));
	assert_true(sim_save_full(&m, 1, NULL, 0, 0));
	ASSERT_STEPS(&m, 0);
	assert_true(sim_save_full(&m, 2, "{\"loss\": 1}", 0, 0));
	ASSERT_STEPS(&m, 2);
	assert_true(sim_save_full(&m, 3, "{\"loss\": 9}", 0, 0));
	ASSERT_STEPS(&m, 2);   /* the newest is the worst: Orbax deletes it */
	policy_free(m.p);
}

static void
test_save_best_some_metrics(void **state)
{
	static const char *metrics[] = { "{\"loss\": 3}", NULL,
	    "{\"loss\": 4}", NULL, "{\"loss\": 7}", NULL };
	struct opts t;
	struct sim m;
	uint64_t s, i;

	opts_init(&t);
	t.o.best_metric = "loss";
	t.o.has_best_mode_min = 1;
	t.o.best_mode_min = 1;
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 3;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 6; s++) {
		assert_true(sim_save_full(&m, s, metrics[s], 0, 0));
		assert_int_equal(m.n, s + 1);
		for (i = 0; i <= s; i++)
			assert_int_equal(m.s[i].step, i);
	}
	assert_int_equal(m.s[policy_best(m.p, m.s, m.n)].step, 0);
	policy_free(m.p);
}

static void
test_save_on_steps(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 10000;
	t.o.save_on_steps = (uint64_t[]){ 5, 1, 3 };
	t.o.n_save_on_steps = 3;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 6; s++)
		assert_int_equal(sim_save(&m, s),
		    s == 0 || s == 1 || s == 3 || s == 5);
	ASSERT_STEPS(&m, 0, 1, 3, 5);
	policy_free(m.p);
}

static void
test_initial_save(void **state)
{
	struct opts t;
	struct sim m;

	opts_init(&t);
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 7;
	sim_init(&m, compile_ok(&t));
	/* nothing saved yet: any step, but not while the first is in flight */
	m.saving = 1;
	assert_false(sim_should_save(&m, 3, 0));
	m.saving = 0;
	assert_true(sim_save(&m, 3));
	assert_false(sim_save(&m, 4));
	assert_true(sim_save(&m, 7));
	ASSERT_STEPS(&m, 3, 7);
	/* test_initial_save: step 10 first */
	policy_free(m.p);
	sim_init(&m, compile_ok(&t));
	assert_true(sim_save(&m, 10));
	policy_free(m.p);
}

static void
test_preemption(void **state)
{
	struct opts t;
	struct sim m;

	opts_init(&t);
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 100;
	sim_init(&m, compile_ok(&t));
	assert_true(sim_save(&m, 0));
	assert_false(sim_save(&m, 5));
	assert_true(sim_save_full(&m, 5, NULL, 0, 1));
	assert_false(sim_should_save(&m, 5, 1));   /* not after latest */
	ASSERT_STEPS(&m, 0, 5);
	policy_free(m.p);
}

static void
test_read_only(void **state)
{
	struct opts t;
	struct sim m;
	int keep[3] = { 7, 7, 7 };
	struct policy_step s[3] = { { 1, 0, 0, 0 }, { 2, 0, 0, 0 },
	    { 3, 0, 0, 0 } };

	opts_init(&t);
	t.o.has_read_only = 1;
	t.o.read_only = 1;
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 1;
	t.o.has_keep_period = 1;
	t.o.keep_period = 0;   /* reset to None by read_only: no error */
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 0;
	sim_init(&m, compile_ok(&t));
	assert_false(sim_should_save(&m, 0, 1));
	assert_false(sim_should_save(&m, 100, 0));
	policy_preserve(m.p, s, 3, 0, keep);
	assert_true(keep[0] && keep[1] && keep[2]);
	policy_free(m.p);

	/* read_only resets the delete options before the exclusivity test */
	keep_node(&t, CKPT__PRESERVATION_NODE__KIND__LATEST_N);
	policy_free(compile_ok(&t));
}

/* test_save_decision_policy: Any(FixedInterval(3), SpecificSteps([4]),
 * FixedInterval(5)[, InitialSave]) over steps 1..10. */
static void
run_save_decision_policy(int with_initial)
{
	struct opts t;
	struct sim m;
	Ckpt__SavePolicyNode *n;
	uint64_t s;

	opts_init(&t);
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 1;   /* ignored */
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	if (with_initial)
		SET_CHILDREN(n, 1, 2, 3, 4);
	else
		SET_CHILDREN(n, 1, 2, 3);
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__FIXED_INTERVAL);
	n->has_interval = 1;
	n->interval = 3;
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__SPECIFIC_STEPS);
	SET_STEPS(n, 4);
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__FIXED_INTERVAL);
	n->has_interval = 1;
	n->interval = 5;
	if (with_initial)
		save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__INITIAL);
	sim_init(&m, compile_ok(&t));
	for (s = 1; s <= 10; s++)
		assert_int_equal(sim_save(&m, s), s == 3 || s == 4 ||
		    s == 5 || s == 6 || s == 9 || s == 10 ||
		    (with_initial && s == 1));
	policy_free(m.p);
}

static void
test_save_decision_policy(void **state)
{
	run_save_decision_policy(0);
}

static void
test_save_decision_policy_initial(void **state)
{
	run_save_decision_policy(1);
}

static void
test_continuous_sync(void **state)
{
	struct opts t;
	struct sim m;
	uint64_t s;

	opts_init(&t);
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 5;   /* ignored */
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__CONTINUOUS);
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 10; s++)
		assert_true(sim_save(&m, s));
	policy_free(m.p);
}

static void
test_continuous_async(void **state)
{
	struct opts t;
	struct sim m;

	opts_init(&t);
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__CONTINUOUS);
	sim_init(&m, compile_ok(&t));
	assert_true(sim_save(&m, 0));
	m.saving = 1;
	assert_false(sim_save(&m, 1));
	assert_false(sim_save(&m, 2));
	m.saving = 0;
	assert_true(sim_save(&m, 3));
	m.saving = 1;
	assert_false(sim_save(&m, 4));
	m.saving = 0;
	assert_true(sim_save(&m, 5));
	m.saving = 1;
	assert_false(sim_save(&m, 6));
	policy_free(m.p);
}

static void
test_continuous_minimum_interval(void **state)
{
	struct opts t;
	struct sim m;
	Ckpt__SavePolicyNode *n;

	opts_init(&t);
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__CONTINUOUS);
	n->has_minimum_interval_secs = 1;
	n->minimum_interval_secs = 2;
	sim_init(&m, compile_ok(&t));
	assert_true(sim_save(&m, 0));          /* no save yet */
	m.now += SEC;
	assert_false(sim_save(&m, 1));
	m.now += SEC - 1;
	assert_false(sim_save(&m, 2));
	m.now += 1;                            /* exactly 2 s after */
	assert_true(sim_save(&m, 2));
	m.now += 5 * SEC;
	m.saving = 1;                          /* in flight wins */
	assert_false(sim_save(&m, 3));
	policy_free(m.p);
}

static void
test_preemption_policy_alone(void **state)
{
	struct opts t;
	struct sim m;

	opts_init(&t);
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__PREEMPTION);
	sim_init(&m, compile_ok(&t));
	assert_false(sim_save(&m, 0));         /* no InitialSave here */
	assert_true(sim_save_full(&m, 1, NULL, 0, 1));
	assert_false(sim_save(&m, 2));
	ASSERT_STEPS(&m, 1);
	policy_free(m.p);
}

static void
test_nested_any_save(void **state)
{
	struct opts t;
	struct sim m;
	Ckpt__SavePolicyNode *n;
	uint64_t s;

	/* Any(Any(FixedInterval(4)), Any(SpecificSteps([7, 9]),
	 *     Any(Preemption))) */
	opts_init(&t);
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	SET_CHILDREN(n, 1, 3);
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	SET_CHILDREN(n, 2);
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__FIXED_INTERVAL);
	n->has_interval = 1;
	n->interval = 4;
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	SET_CHILDREN(n, 4, 5);
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__SPECIFIC_STEPS);
	SET_STEPS(n, 9, 7);
	n = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	SET_CHILDREN(n, 6);
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__PREEMPTION);
	sim_init(&m, compile_ok(&t));
	for (s = 1; s <= 12; s++)
		sim_save_full(&m, s, NULL, 0, s == 11);
	ASSERT_STEPS(&m, 4, 7, 8, 9, 11, 12);
	policy_free(m.p);
}

/* test_preservation_joint_policy: Any(BestN(loss, reverse=True, n=2),
 * EveryNSteps(4), CustomSteps([0, 3])) over 12 saves. */
static void
test_preservation_joint_policy(void **state)
{
	static const int loss[] = { 5, 2, 4, 3, 7, 10, 11, 9, 8, 6, 12, 1 };
	struct opts t;
	struct sim m;
	Ckpt__PreservationNode *n;
	char js[64];
	uint64_t s;

	opts_init(&t);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	SET_CHILDREN(n, 1, 2, 3);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__BEST_N);
	n->metric = "loss";
	n->has_mode_min = 1;
	n->mode_min = 1;
	n->has_n = 1;
	n->n = 2;
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS);
	n->has_n = 1;
	n->n = 4;
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__CUSTOM_STEPS);
	SET_STEPS(n, 0, 3);
	sim_init(&m, compile_ok(&t));
	assert_int_equal(policy_wants_metrics(m.p), 1);
	for (s = 0; s < 12; s++) {
		snprintf(js, sizeof(js), "{\"loss\": %d}", loss[s]);
		assert_true(sim_save_full(&m, s, js, 0, 0));
	}
	ASSERT_STEPS(&m, 0, 1, 3, 4, 8, 11);
	/* best_step follows best_fn, which is not set here (Orbax: latest) */
	assert_int_equal(policy_best(m.p, m.s, m.n), -1);
	policy_free(m.p);
}

static void
test_nested_any_preservation(void **state)
{
	struct opts t;
	struct sim m;
	Ckpt__PreservationNode *n;
	uint64_t s;

	/* Any(Any(LatestN(1), Any(CustomSteps([2, 5]))), EveryNSteps(4)) */
	opts_init(&t);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	SET_CHILDREN(n, 1, 5);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	SET_CHILDREN(n, 2, 3);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__LATEST_N);
	n->has_n = 1;
	n->n = 1;
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	SET_CHILDREN(n, 4);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__CUSTOM_STEPS);
	SET_STEPS(n, 5, 2);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS);
	n->has_n = 1;
	n->n = 4;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 11; s++)
		assert_true(sim_save(&m, s));
	ASSERT_STEPS(&m, 0, 2, 4, 5, 8, 10);
	policy_free(m.p);
}

static void
test_custom_steps_only(void **state)
{
	struct opts t;
	struct sim m;
	Ckpt__PreservationNode *n;
	uint64_t s;

	opts_init(&t);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__CUSTOM_STEPS);
	SET_STEPS(n, 1, 4);
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 6; s++)
		assert_true(sim_save(&m, s));
	/* the newest step is not in the list: Orbax deletes it too */
	ASSERT_STEPS(&m, 1, 4);
	policy_free(m.p);
}

static void
test_latest_duration_saves(void **state)
{
	struct opts t;
	struct sim m;
	Ckpt__PreservationNode *n;
	uint64_t s;

	opts_init(&t);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__LATEST_DURATION);
	n->has_secs = 1;
	n->secs = 2.5 * 3600;
	sim_init(&m, compile_ok(&t));
	for (s = 0; s < 6; s++) {
		assert_true(sim_save(&m, s));
		m.now += HOUR;
	}
	/* at the last save (5 h) steps from 2.5 h on are kept */
	ASSERT_STEPS(&m, 3, 4, 5);
	policy_free(m.p);
}

/* ---- preservation policies on fixed lists (preservation_policy_test) ------- */

static struct policy_set *
one_keep(Ckpt__PreservationNode__Kind kind, int has_n, int64_t nval,
    double secs)
{
	struct opts t;
	Ckpt__PreservationNode *n;

	opts_init(&t);
	n = keep_node(&t, kind);
	n->has_n = has_n;
	n->n = nval;
	n->has_secs = secs >= 0;
	n->secs = secs;
	return compile_ok(&t);
}

static void
test_latest_n(void **state)
{
	static const uint64_t st[] = { 0, 1, 2, 3, 4 };
	struct policy_set *p;
	struct run r;

	run_steps(&r, st, 5);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__LATEST_N, 0, 0, -1);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 1, 2, 3, 4);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__LATEST_N, 1, 3, -1);
	ASSERT_PRESERVED(&r, p, 0, 0, 2, 3, 4);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__LATEST_N, 1, 15, -1);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 1, 2, 3, 4);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__LATEST_N, 1, 0, -1);
	ASSERT_PRESERVED(&r, p, 0, 0);
	policy_free(p);
}

static void
test_every_n_seconds(void **state)
{
	static const uint64_t st[] = { 0, 1, 2, 3, 4 };
	struct policy_set *p;
	struct run r;

	run_steps(&r, st, 5);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__EVERY_N_SECONDS, 0, 0, 1);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 1, 2, 3, 4);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__EVERY_N_SECONDS, 0, 0, 3);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 3);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__EVERY_N_SECONDS, 0, 0, 6);
	ASSERT_PRESERVED(&r, p, 0, 0, 0);
	policy_free(p);
	/* an explicit node keeps fractional seconds */
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__EVERY_N_SECONDS, 0, 0,
	    1.5);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 2, 4);
	policy_free(p);
}

static void
test_every_n_steps(void **state)
{
	static const uint64_t a[] = { 0, 1, 2, 3, 4 }, b[] = { 0, 1, 2, 4 };
	struct policy_set *p;
	struct run r;

	run_steps(&r, a, 5);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS, 1, 1, -1);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 1, 2, 3, 4);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS, 1, 6, -1);
	ASSERT_PRESERVED(&r, p, 0, 0, 0);
	policy_free(p);
	run_steps(&r, b, 4);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS, 1, 3, -1);
	ASSERT_PRESERVED(&r, p, 0, 0, 0);
	policy_free(p);
}

static void
test_custom_steps(void **state)
{
	static const uint64_t st[] = { 0, 1, 2, 3, 4 };
	struct opts t;
	Ckpt__PreservationNode *n;
	struct policy_set *p;
	struct run r;

	run_steps(&r, st, 5);
	opts_init(&t);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__CUSTOM_STEPS);
	SET_STEPS(n, 0, 2, 3);
	p = compile_ok(&t);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 2, 3);
	policy_free(p);
	SET_STEPS(n, 14, 13);
	p = compile_ok(&t);
	ASSERT_PRESERVED(&r, p, 0, 0);
	policy_free(p);
	n->n_steps = 0;
	p = compile_ok(&t);
	ASSERT_PRESERVED(&r, p, 0, 0);
	policy_free(p);
}

/* test_best_n_policy: reverse=True (min mode), metric 'loss'. */
static struct policy_set *
best_n(int has_n, int64_t nval, int keep_without)
{
	struct opts t;
	Ckpt__PreservationNode *n;

	opts_init(&t);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__BEST_N);
	n->metric = "loss";
	n->has_mode_min = 1;
	n->mode_min = 1;
	n->has_n = has_n;
	n->n = nval;
	n->has_keep_without_metrics = 1;
	n->keep_without_metrics = keep_without;
	return compile_ok(&t);
}

static void
set_loss(struct run *r, const int *loss)
{
	size_t i;

	for (i = 0; i < r->n; i++) {
		r->s[i].has_metric = loss[i] >= 0;
		r->s[i].metric = loss[i];
	}
}

static void
test_best_n(void **state)
{
	static const uint64_t st[] = { 0, 1, 2, 3, 4 };
	struct policy_set *p;
	struct run r;

	run_steps(&r, st, 5);
	set_loss(&r, (const int[]){ 5, -1, 3, -1, 7 });
	p = best_n(0, 0, 1);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 1, 2, 3, 4);
	policy_free(p);

	set_loss(&r, (const int[]){ 7, -1, 4, -1, 5 });
	p = best_n(1, 1, 1);
	ASSERT_PRESERVED(&r, p, 0, 0, 1, 2, 3);
	policy_free(p);

	set_loss(&r, (const int[]){ 5, -1, 4, -1, 7 });
	p = best_n(1, 4, 1);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 1, 2, 3, 4);
	policy_free(p);
	p = best_n(1, 4, 0);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 2, 4);
	policy_free(p);
	/* n = 0 keeps nothing, not even steps without metrics */
	p = best_n(1, 0, 1);
	ASSERT_PRESERVED(&r, p, 0, 0);
	policy_free(p);
}

static void
test_best_n_ties(void **state)
{
	static const uint64_t st[] = { 0, 1, 2, 3 };
	struct policy_set *p;
	struct opts t;
	struct run r;

	/* Equal metrics: Python's stable sort puts the later step last, so
	 * it is the one kept, in either mode. */
	run_steps(&r, st, 4);
	set_loss(&r, (const int[]){ 1, 1, 1, 1 });
	p = best_n(1, 1, 1);
	ASSERT_PRESERVED(&r, p, 0, 0, 3);
	policy_free(p);
	set_loss(&r, (const int[]){ 2, 1, 2, 1 });
	p = best_n(1, 2, 1);
	ASSERT_PRESERVED(&r, p, 0, 0, 1, 3);
	policy_free(p);

	opts_init(&t);
	t.o.best_metric = "loss";
	p = compile_ok(&t);            /* mode max */
	set_loss(&r, (const int[]){ 2, 5, 5, 1 });
	assert_int_equal(policy_best(p, r.s, r.n), 2);
	policy_free(p);
	t.o.has_best_mode_min = 1;
	t.o.best_mode_min = 1;
	p = compile_ok(&t);
	assert_int_equal(policy_best(p, r.s, r.n), 3);
	set_loss(&r, (const int[]){ 2, 1, 1, -1 });
	assert_int_equal(policy_best(p, r.s, r.n), 2);
	set_loss(&r, (const int[]){ -1, -1, -1, -1 });
	assert_int_equal(policy_best(p, r.s, r.n), -1);
	assert_int_equal(policy_best(p, r.s, 0), -1);
	policy_free(p);
}

static void
test_joint_preservation(void **state)
{
	static const uint64_t st[] = { 0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11 };
	struct opts t;
	Ckpt__PreservationNode *n;
	struct policy_set *p;
	struct run r;

	opts_init(&t);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	SET_CHILDREN(n, 1, 2, 3, 4, 5);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__LATEST_N);
	n->has_n = 1;
	n->n = 3;
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__EVERY_N_SECONDS);
	n->has_secs = 1;
	n->secs = 3;
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__CUSTOM_STEPS);
	SET_STEPS(n, 0, 3);
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__BEST_N);
	n->metric = "loss";
	n->has_mode_min = 1;
	n->mode_min = 1;
	n->has_n = 1;
	n->n = 2;
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS);
	n->has_n = 1;
	n->n = 6;
	p = compile_ok(&t);
	run_steps(&r, st, NSTEPS(st));
	set_loss(&r, (const int[]){ 5, -1, 4, -1, 3, -1, 11, -1, 8, -1, 12 });
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11);
	policy_free(p);

	/* PreserveAll */
	opts_init(&t);
	keep_node(&t, CKPT__PRESERVATION_NODE__KIND__PRESERVE_ALL);
	p = compile_ok(&t);
	ASSERT_PRESERVED(&r, p, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11);
	policy_free(p);
}

static void
test_latest_duration(void **state)
{
	static const uint64_t st[] = { 0, 1, 2, 3 };
	const int64_t now = 1780000000 * SEC;
	struct policy_set *p;
	struct run r;

	run_steps(&r, st, 4);
	r.s[0].time_ns = now - 30 * HOUR;
	r.s[1].time_ns = now - 25 * HOUR;
	r.s[2].time_ns = now - 23 * HOUR;
	r.s[3].time_ns = now - 10 * HOUR;
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__LATEST_DURATION, 0, 0,
	    24 * 3600);
	ASSERT_PRESERVED(&r, p, now, 0, 2, 3);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__LATEST_DURATION, 0, 0,
	    28 * 3600);
	ASSERT_PRESERVED(&r, p, now, 0, 1, 2, 3);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__LATEST_DURATION, 0, 0,
	    5 * 3600);
	ASSERT_PRESERVED(&r, p, now, 0);
	policy_free(p);
	p = one_keep(CKPT__PRESERVATION_NODE__KIND__LATEST_DURATION, 0, 0,
	    100 * 3600);
	ASSERT_PRESERVED(&r, p, now, 0, 0, 1, 2, 3);
	/* boundary: exactly the duration old is still kept */
	ASSERT_PRESERVED(&r, p, r.s[0].time_ns + 100 * HOUR, 0, 0, 1, 2, 3);
	ASSERT_PRESERVED(&r, p, r.s[0].time_ns + 100 * HOUR + 1, 0, 1, 2, 3);
	/* extreme clocks do not overflow */
	ASSERT_PRESERVED(&r, p, INT64_MAX, 0);
	ASSERT_PRESERVED(&r, p, INT64_MIN, 0, 0, 1, 2, 3);
	policy_free(p);
}

/* ---- metrics ------------------------------------------------------------------ */

static void
test_metric_json(void **state)
{
	struct opts t;
	struct policy_set *p;
	double v = -1;

	opts_init(&t);
	p = compile_ok(&t);
	assert_int_equal(policy_metric(p, "{\"loss\": 1}", &v), 0);
	policy_free(p);

	t.o.best_metric = "loss";
	p = compile_ok(&t);
	assert_int_equal(policy_metric(p, "{\"loss\": 1.25}", &v), 1);
	assert_true(v == 1.25);
	assert_int_equal(policy_metric(p, "{\"loss\": -3, \"x\": true}", &v),
	    1);
	assert_true(v == -3);
	assert_int_equal(policy_metric(p, "{\"loss\": 1e300}", &v), 1);
	assert_true(v == 1e300);
	v = 42;
	assert_int_equal(policy_metric(p, "{\"loss\": true}", &v), 0);
	assert_int_equal(policy_metric(p, "{\"loss\": false}", &v), 0);
	assert_int_equal(policy_metric(p, "{\"loss\": null}", &v), 0);
	assert_int_equal(policy_metric(p, "{\"loss\": \"1\"}", &v), 0);
	assert_int_equal(policy_metric(p, "{\"loss\": [1]}", &v), 0);
	assert_int_equal(policy_metric(p, "{\"acc\": 1}", &v), 0);
	assert_int_equal(policy_metric(p, "{\"loss\": 1", &v), 0);
	assert_int_equal(policy_metric(p, "[1]", &v), 0);
	assert_int_equal(policy_metric(p, "1", &v), 0);
	assert_int_equal(policy_metric(p, "", &v), 0);
	assert_int_equal(policy_metric(p, NULL, &v), 0);
	assert_true(v == 42);
	policy_free(p);
}

static void
test_wants_metrics(void **state)
{
	struct opts t;
	struct policy_set *p;
	Ckpt__PreservationNode *n;

	opts_init(&t);
	p = compile_ok(&t);
	assert_int_equal(policy_wants_metrics(p), 0);
	assert_int_equal(policy_best(p, NULL, 0), -1);
	policy_free(p);

	/* an empty name is no metric */
	t.o.best_metric = "";
	p = compile_ok(&t);
	assert_int_equal(policy_wants_metrics(p), 0);
	policy_free(p);

	/* best_mode without best_fn is valid in Orbax (and ignored) */
	t.o.best_metric = NULL;
	t.o.has_best_mode_min = 1;
	t.o.best_mode_min = 1;
	p = compile_ok(&t);
	assert_int_equal(policy_wants_metrics(p), 0);
	policy_free(p);

	/* a BestN node takes best_metric when it names none */
	t.o.best_metric = "acc";
	n = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__BEST_N);
	p = compile_ok(&t);
	assert_int_equal(policy_wants_metrics(p), 1);
	policy_free(p);
	n->metric = "acc";
	p = compile_ok(&t);
	assert_int_equal(policy_wants_metrics(p), 1);
	policy_free(p);
}

/*
 * Orbax 0.12 preservation_policy_test.py test_every_n_steps_policy and
 * test_every_n_steps_closest_policy: the steps each keeps of a given set.
 */
static void
check_every_n(Ckpt__PreservationNode__Kind kind, int64_t n, int exact,
    int64_t max_keep, const uint64_t *steps, size_t ns, const char *want)
{
	struct opts t;
	struct policy_set *p;
	Ckpt__PreservationNode *nd;
	struct policy_step s[16];
	int keep[16];
	char got[256] = "";
	size_t i;

	assert_true(ns <= 16);
	opts_init(&t);
	nd = keep_node(&t, kind);
	nd->has_n = 1;
	nd->n = n;
	nd->has_exact_interval = 1;
	nd->exact_interval = exact != 0;
	nd->has_max_to_keep = max_keep >= 0;
	nd->max_to_keep = max_keep;
	p = compile_ok(&t);
	for (i = 0; i < ns; i++) {
		memset(&s[i], 0, sizeof s[i]);
		s[i].step = steps[i];
	}
	policy_preserve(p, s, ns, 0, keep);
	for (i = 0; i < ns; i++)
		if (keep[i])
			snprintf(got + strlen(got), sizeof got - strlen(got),
			    "%s%" PRIu64, *got ? "," : "", steps[i]);
	assert_string_equal(got, want);
	policy_free(p);
}

static void
test_every_n_steps_012(void **state)
{
	static const uint64_t a[] = { 0, 1, 2, 3, 4 };
	static const uint64_t b[] = { 0, 1, 2, 4 };
	static const uint64_t c[] = { 0, 1, 2, 4, 5, 8, 9, 13, 14, 25 };
	const Ckpt__PreservationNode__Kind ev =
	    CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS;
	const Ckpt__PreservationNode__Kind cl =
	    CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS_CLOSEST;
	struct opts t;
	Ckpt__PreservationNode *nd;

	(void)state;
	check_every_n(ev, 3, 0, -1, b, 4, "0,4");
	check_every_n(ev, 6, 1, -1, a, 5, "0");
	check_every_n(ev, 3, 0, -1, c, 10, "0,4,8,13,25");
	check_every_n(ev, 1, 1, 3, a, 5, "2,3,4");
	check_every_n(ev, 3, 0, 3, c, 10, "8,13,25");
	check_every_n(ev, 1, 1, 0, a, 5, "0,1,2,3,4");  /* Orbax: [:-0] */
	check_every_n(cl, 1, 1, -1, a, 5, "0,1,2,3,4");
	check_every_n(cl, 3, 1, -1, b, 4, "0,4");
	check_every_n(cl, 3, 1, -1, c, 10, "0,4,5,9,13,14,25");
	check_every_n(cl, 1, 1, 3, a, 5, "2,3,4");
	check_every_n(cl, 3, 1, 3, c, 10, "13,14,25");

	opts_init(&t);                  /* interval_steps=0 */
	nd = keep_node(&t, cl);
	nd->has_n = 1;
	nd->n = 0;
	compile_fails(&t, "interval_steps must not be 0.");
}

/* ---- validation --------------------------------------------------------------- */

static void
test_validation_options(void **state)
{
	struct opts t;
	struct sim m;

	opts_init(&t);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = -1;
	compile_fails(&t, "Setting of `max_to_keep` must be None or "
	    "non-negative.");
	t.o.has_read_only = 1;   /* checked before read_only resets it */
	t.o.read_only = 1;
	compile_fails(&t, "Setting of `max_to_keep` must be None or "
	    "non-negative.");

	opts_init(&t);
	t.o.has_save_interval_steps = 1;
	t.o.save_interval_steps = 0;    /* Orbax 0.12: no interval saves */
	sim_init(&m, compile_ok(&t));
	assert_int_equal(sim_save(&m, 0), 1);       /* InitialSavePolicy */
	assert_false(sim_should_save(&m, 1, 0));
	assert_false(sim_should_save(&m, 100, 0));
	policy_free(m.p);

	opts_init(&t);
	t.o.has_keep_period = 1;
	t.o.keep_period = 0;
	compile_fails(&t, "interval_steps must not be 0.");

	opts_init(&t);
	t.o.has_keep_time_interval_secs = 1;
	t.o.keep_time_interval_secs = -1;
	compile_fails(&t, "keep_time_interval");
	t.o.keep_time_interval_secs = NAN;
	compile_fails(&t, "keep_time_interval");
	t.o.keep_time_interval_secs = INFINITY;
	compile_fails(&t, "keep_time_interval");
	t.o.keep_time_interval_secs = 1e300;   /* huge but valid */
	policy_free(compile_ok(&t));
}

static void
test_validation_exclusive(void **state)
{
	static const char *msg = "`preservation_policy` and `delete options` "
	    "are mutually exclusive - do not use together.";
	struct opts t;

	opts_init(&t);
	keep_node(&t, CKPT__PRESERVATION_NODE__KIND__PRESERVE_ALL);
	t.o.has_max_to_keep = 1;
	t.o.max_to_keep = 3;
	compile_fails(&t, msg);
	t.o.max_to_keep = -1;    /* no negative check with a policy */
	compile_fails(&t, msg);
	/* Orbax tests the options for truth: zero values pass */
	t.o.max_to_keep = 0;
	t.o.has_keep_period = 1;
	t.o.keep_period = 0;
	t.o.has_keep_time_interval_secs = 1;
	t.o.keep_time_interval_secs = 0;
	policy_free(compile_ok(&t));
	t.o.keep_period = 2;
	compile_fails(&t, msg);
	t.o.keep_period = 0;
	t.o.keep_time_interval_secs = 0.5;
	compile_fails(&t, msg);
	t.o.keep_time_interval_secs = 0;
	/* best_fn is not a delete option */
	t.o.best_metric = "loss";
	policy_free(compile_ok(&t));
}

static void
test_validation_nodes(void **state)
{
	struct opts t;
	Ckpt__SavePolicyNode *s;
	Ckpt__PreservationNode *k;
	int i;

	/* child index out of range, pointing back, or to itself */
	opts_init(&t);
	s = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	SET_CHILDREN(s, 1);
	compile_fails(&t, "child 1 must be a later node");
	opts_init(&t);
	s = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	SET_CHILDREN(s, 1);
	s = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	SET_CHILDREN(s, 0);      /* a cycle */
	compile_fails(&t, "child 0 must be a later node");
	t.sn[1].children = (uint32_t[]){ 1 };
	compile_fails(&t, "child 1 must be a later node");

	/* unreachable node, children on a leaf, empty ANY */
	opts_init(&t);
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__INITIAL);
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__PREEMPTION);
	compile_fails(&t, "node 1 is not reachable");
	opts_init(&t);
	s = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__INITIAL);
	SET_CHILDREN(s, 1);
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__PREEMPTION);
	compile_fails(&t, "only ANY nodes may have children");
	opts_init(&t);
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__ANY);
	compile_fails(&t, "ANY needs at least one child");
	opts_init(&t);
	keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	compile_fails(&t, "ANY needs at least one child");

	/* unknown kinds */
	opts_init(&t);
	s = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__INITIAL);
	s->kind = (Ckpt__SavePolicyNode__Kind)42;
	compile_fails(&t, "unknown kind 42");
	opts_init(&t);
	k = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	SET_CHILDREN(k, 1);
	k = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	k->kind = (Ckpt__PreservationNode__Kind)-5;
	compile_fails(&t, "unknown kind -5");

	/* leaf parameters */
	opts_init(&t);
	s = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__FIXED_INTERVAL);
	compile_fails(&t, "interval must be positive");
	s->has_interval = 1;
	compile_fails(&t, "interval must be positive");
	s->interval = 3;
	policy_free(compile_ok(&t));
	opts_init(&t);
	s = save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__CONTINUOUS);
	s->has_minimum_interval_secs = 1;
	s->minimum_interval_secs = -2;
	compile_fails(&t, "minimum_interval_secs");
	opts_init(&t);
	k = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__LATEST_N);
	k->has_n = 1;
	k->n = -1;
	compile_fails(&t, "n must be None or non-negative.");
	k->kind = CKPT__PRESERVATION_NODE__KIND__BEST_N;
	k->metric = "loss";
	compile_fails(&t, "n must be None or non-negative.");
	k->kind = CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS;
	k->n = 0;
	compile_fails(&t, "interval_steps must not be 0.");
	k->kind = CKPT__PRESERVATION_NODE__KIND__EVERY_N_SECONDS;
	compile_fails(&t, "secs is required");
	k->has_secs = 1;
	k->secs = NAN;
	compile_fails(&t, "interval_secs");
	k->kind = CKPT__PRESERVATION_NODE__KIND__LATEST_DURATION;
	k->secs = -1;
	compile_fails(&t, "duration");

	/* BestN metric: needed, and one metric for all */
	opts_init(&t);
	k = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__BEST_N);
	compile_fails(&t, "BestN needs a metric");
	k->metric = "";
	compile_fails(&t, "BestN needs a metric");
	k->metric = "loss";
	t.o.best_metric = "acc";
	compile_fails(&t, "differs from 'acc'");
	opts_init(&t);
	k = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__ANY);
	SET_CHILDREN(k, 1, 2);
	k = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__BEST_N);
	k->metric = "loss";
	k = keep_node(&t, CKPT__PRESERVATION_NODE__KIND__BEST_N);
	k->metric = "acc";
	compile_fails(&t, "differs from 'loss'");
	k->metric = "loss";
	policy_free(compile_ok(&t));

	/* a NULL entry and too many nodes */
	opts_init(&t);
	save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__INITIAL);
	t.sp[0] = NULL;
	compile_fails(&t, "node 0 is missing");
	opts_init(&t);
	for (i = 0; i < 2; i++)
		save_node(&t, CKPT__SAVE_POLICY_NODE__KIND__INITIAL);
	t.o.n_save_policy = 5000;
	compile_fails(&t, "at most");
	t.o.n_save_policy = 0;
	t.o.n_preservation = 5000;
	compile_fails(&t, "at most");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_max_to_keep_two),
		cmocka_unit_test(test_max_to_keep_zero),
		cmocka_unit_test(test_max_to_keep_zero_other_conditions),
		cmocka_unit_test(test_keep_all_by_default),
		cmocka_unit_test(test_save_interval_and_force),
		cmocka_unit_test(test_step_not_after_latest),
		cmocka_unit_test(test_keep_period),
		cmocka_unit_test(test_keep_time_interval),
		cmocka_unit_test(test_keep_time_interval_metrics),
		cmocka_unit_test(test_keep_time_interval_whole_seconds),
		cmocka_unit_test(test_save_best_min),
		cmocka_unit_test(test_save_best_max),
		cmocka_unit_test(test_save_best_no_metrics),
		cmocka_unit_test(test_save_best_no_metrics_deleted),
		cmocka_unit_test(test_save_best_some_metrics),
		cmocka_unit_test(test_save_on_steps),
		cmocka_unit_test(test_initial_save),
		cmocka_unit_test(test_preemption),
		cmocka_unit_test(test_read_only),
		cmocka_unit_test(test_save_decision_policy),
		cmocka_unit_test(test_save_decision_policy_initial),
		cmocka_unit_test(test_continuous_sync),
		cmocka_unit_test(test_continuous_async),
		cmocka_unit_test(test_continuous_minimum_interval),
		cmocka_unit_test(test_preemption_policy_alone),
		cmocka_unit_test(test_nested_any_save),
		cmocka_unit_test(test_preservation_joint_policy),
		cmocka_unit_test(test_nested_any_preservation),
		cmocka_unit_test(test_custom_steps_only),
		cmocka_unit_test(test_latest_duration_saves),
		cmocka_unit_test(test_latest_n),
		cmocka_unit_test(test_every_n_seconds),
		cmocka_unit_test(test_every_n_steps),
		cmocka_unit_test(test_custom_steps),
		cmocka_unit_test(test_best_n),
		cmocka_unit_test(test_best_n_ties),
		cmocka_unit_test(test_joint_preservation),
		cmocka_unit_test(test_latest_duration),
		cmocka_unit_test(test_metric_json),
		cmocka_unit_test(test_wants_metrics),
		cmocka_unit_test(test_every_n_steps_012),
		cmocka_unit_test(test_validation_options),
		cmocka_unit_test(test_validation_exclusive),
		cmocka_unit_test(test_validation_nodes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
