/*
 * t_policy.c - retention (max_to_keep, keep_period, best_fn,
 * keep_time_interval, preservation policies) and save decisions
 * (save_interval_steps, save_on_steps, save decision policies), with the
 * step lists Orbax's own tests expect, across daemon restarts.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests.h"

static void
is_latest(ckpt_manager *m, int64_t want, const char *what)
{
	int64_t got = -2;
	int r = ckpt_latest_step(m, &got);

	ok_rc(r, m, "%s: ckpt_latest_step", what);
	is_int(got, want, "%s: latest_step", what);
}

static void
is_best(ckpt_manager *m, int64_t want, const char *what)
{
	int64_t got = -2;
	int r = ckpt_best_step(m, &got);

	ok_rc(r, m, "%s: ckpt_best_step", what);
	is_int(got, want, "%s: best_step", what);
}

/* ---- max_to_keep ---------------------------------------------------- */

void
test_max_to_keep(struct hx_daemon *d)
{
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	const char *root = root_path(d, "keep2"), *root0;
	ckpt_manager *m;
	uint64_t s;
	int saved, r;

	is_int(ckpt_options_set_max_to_keep(o, -1), CKPT_EINVAL,
	    "negative max_to_keep is rejected with CKPT_EINVAL");
	is_int(ckpt_options_set_max_to_keep(o, 0), 0, "max_to_keep=0 accepted");
	is_int(ckpt_options_set_max_to_keep(o, 2), 0, "max_to_keep=2 accepted");

	m = mgr_open(c, root, o, 1);
	for (s = 0; s <= 4; s++) {
		r = mgr_save_wait(m, s, NULL, &saved);
		ok_rc(r, m, "max_to_keep=2: save+wait step %llu",
		    (unsigned long long)s);
		is_int(saved, 1, "max_to_keep=2: step %llu saved",
		    (unsigned long long)s);
		if (s == 1)
			is_steps(m, "[0,1]", "max_to_keep=2 after step 1");
		if (s == 2)
			is_steps(m, "[1,2]", "max_to_keep=2 after step 2");
	}
	is_steps(m, "[3,4]", "max_to_keep=2 over steps 0..4 keeps [3,4]");
	is_disk(root, NULL, "[3,4]", "max_to_keep=2: only 3 and 4 on disk");
	is_latest(m, 4, "max_to_keep=2");
	ok_rc(ckpt_manager_close(m), NULL, "close");

	root0 = root_path(d, "keep0");
	ckpt_options_set_max_to_keep(o, 0);
	m = mgr_open(c, root0, o, 1);
	for (s = 0; s <= 4; s++) {
		char *got;

		r = mgr_save_wait(m, s, NULL, &saved);
		ok_rc(r, m, "max_to_keep=0: save+wait step %llu",
		    (unsigned long long)s);
		is_int(saved, 1, "max_to_keep=0: step %llu saved",
		    (unsigned long long)s);
		got = mgr_steps(m);
		is_str(got, "[]", "max_to_keep=0: [] after saving step %llu",
		    (unsigned long long)s);
		free(got);
		got = mgr_disk(root0, NULL);
		is_str(got, "[]", "max_to_keep=0: no step dir on disk after %llu",
		    (unsigned long long)s);
		free(got);
	}
	is_latest(m, -1, "max_to_keep=0");
	ok_rc(ckpt_manager_close(m), NULL, "close");
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- save_interval_steps ----------------------------------------------- */

void
test_interval(struct hx_daemon *d)
{
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	const char *root = root_path(d, "interval");
	ckpt_manager *m;
	uint64_t s;
	int saved, should, r;

	is_int(ckpt_options_set_save_interval_steps(o, 0), 0,
	    "save_interval_steps=0 is accepted (Orbax 0.12)");
	is_int(ckpt_options_set_save_interval_steps(o, 2), 0,
	    "save_interval_steps=2 accepted");
	m = mgr_open(c, root, o, 1);
	for (s = 0; s <= 5; s++) {
		should = -1;
		r = ckpt_should_save(m, s, &should);
		ok_rc(r, m, "should_save(%llu)", (unsigned long long)s);
		is_int(should, s % 2 == 0, "should_save(%llu) is %d",
		    (unsigned long long)s, (int)(s % 2 == 0));
		r = mgr_save_wait(m, s, NULL, &saved);
		ok_rc(r, m, "save(%llu) returns 0", (unsigned long long)s);
		is_int(saved, s % 2 == 0, "save(%llu) reports saved=%d",
		    (unsigned long long)s, (int)(s % 2 == 0));
	}
	is_steps(m, "[0,2,4]", "save_interval_steps=2 over 0..5 saved 0,2,4");
	r = mgr_save_wait(m, 5, SV(.force = 1), &saved);
	ok_rc(r, m, "forced save of step 5");
	is_int(saved, 1, "forced save of step 5 reports saved");
	is_steps(m, "[0,2,4,5]", "force at 5 -> [0,2,4,5]");
	is_disk(root, NULL, "[0,2,4,5]", "on disk: 0,2,4,5");
	/* Orbax: should_save is False for step <= latest. */
	should = -1;
	ckpt_should_save(m, 4, &should);
	is_int(should, 0, "should_save(4) is 0 once 5 exists");
	ok_rc(ckpt_manager_close(m), NULL, "close");
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* should_save_fn: save when step is a multiple of 3 after the latest. */
static int
every_third(uint64_t step, int64_t latest, void *arg)
{
	int *calls = arg;

	(*calls)++;
	return latest < 0 || step >= (uint64_t)latest + 3;
}

void
test_should_save_fn(struct hx_daemon *d)
{
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	const char *root = root_path(d, "should_save_fn");
	ckpt_manager *m;
	char *got;
	int calls = 0, saved, r;

	/* It replaces the interval policy (save_interval_steps=2 would
	 * save 0,2,4,6,8). */
	is_int(ckpt_options_set_save_interval_steps(o, 2), 0, "interval 2");
	is_int(ckpt_options_set_should_save_fn(o, every_third, &calls), 0,
	    "should_save_fn set");
	m = mgr_open(c, root, o, 1);
	got = save_range(m, 0, 9, NULL, 0, 0, NULL);
	is_str(got, "[0,3,6,9]", "should_save_fn decides: saved 0,3,6,9");
	free(got);
	is_int(calls, 10, "the predicate ran once per save");
	is_steps(m, "[0,3,6,9]", "all_steps [0,3,6,9]");
	/* step <= latest declines before the predicate runs */
	r = mgr_save_wait(m, 9, NULL, &saved);
	ok_rc(r, m, "save(9) again returns 0");
	is_int(saved, 0, "save(9) again is declined");
	is_int(calls, 10, "predicate not asked for step <= latest");
	/* ckpt_should_save answers by the same rule as ckpt_save */
	{
		int want = -1;

		ok_rc(ckpt_should_save(m, 10, &want), m, "should_save(10)");
		is_int(want, 0, "should_save(10) is 0: the predicate says no "
		    "(the interval policy would say yes)");
		ok_rc(ckpt_should_save(m, 13, &want), m, "should_save(13)");
		is_int(want, 1, "should_save(13) is 1: the predicate says yes "
		    "(the interval policy would say no)");
		ok_rc(ckpt_should_save(m, 9, &want), m, "should_save(9)");
		is_int(want, 0, "should_save(9) is 0: not after the latest");
		is_int(calls, 12, "the predicate ran for 10 and 13, not for 9");
	}
	/* force bypasses it */
	r = mgr_save_wait(m, 10, SV(.force = 1), &saved);
	ok_rc(r, m, "forced save(10)");
	is_int(saved, 1, "forced save(10) saved");
	is_int(calls, 12, "predicate not asked for a forced save");
	ok_rc(ckpt_manager_close(m), NULL, "close");
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- keep_period --------------------------------------------------------- */

void
test_keep_period(struct hx_daemon *d)
{
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	const char *root = root_path(d, "period");
	ckpt_manager *m;
	char *saved;

	ok(ckpt_options_set_max_to_keep(o, 2) == 0 &&
	    ckpt_options_set_keep_period(o, 4) == 0 &&
	    ckpt_options_set_save_interval_steps(o, 2) == 0,
	    "max_to_keep=2 keep_period=4 save_interval_steps=2");
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 0, 11, NULL, 0, 0, NULL);
	is_str(saved, "[0,2,4,6,8,10]", "saves over 0..11");
	free(saved);
	is_steps(m, "[0,4,8,10]", "keep_period=4 + max_to_keep=2 -> [0,4,8,10]");
	is_disk(root, NULL, "[0,4,8,10]", "on disk: 0,4,8,10");
	ok_rc(ckpt_manager_close(m), NULL, "close");
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- best_fn ---------------------------------------------------------------- */

static const char *const losses[] = {
	"{\"loss\": 5.0}", "{\"loss\": 3.0}", "{\"loss\": 4.0}",
	"{\"loss\": 1.0}", "{\"loss\": 2.0}", "{\"loss\": 6.0}",
	"{\"loss\": 0.5}",
};

static void
check_metric(ckpt_manager *m, uint64_t step, const char *key, double want,
    const char *what)
{
	char *json = NULL;
	int r = ckpt_metrics(m, step, &json);

	ok_rc(r, m, "%s: ckpt_metrics(%llu)", what, (unsigned long long)step);
	ok(json_number(json, key) == want, "%s: metrics(%llu).%s == %g (%s)",
	    what, (unsigned long long)step, key, want, json ? json : "NULL");
	free(json);
}

void
test_best(struct hx_daemon *d)
{
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	const char *root = root_path(d, "best");
	char rootbuf[HX_PATH], pathbuf[HX_PATH], *saved;
	ckpt_manager *m;

	snprintf(rootbuf, sizeof rootbuf, "%s", root);
	ok(ckpt_options_set_best(o, "loss", 1) == 0 &&
	    ckpt_options_set_max_to_keep(o, 2) == 0,
	    "best metric 'loss', mode min, max_to_keep=2");
	m = mgr_open(c, rootbuf, o, 1);
	saved = save_range(m, 0, 2, NULL, 0, 0, losses);
	is_str(saved, "[0,1,2]", "steps 0..2 saved");
	free(saved);
	is_steps(m, "[1,2]", "losses 5,3,4 -> keeps the two best [1,2]");
	is_best(m, 1, "before restart");

	/* Restart the daemon in the middle of the run. */
	ckpt_disconnect(c);
	if (hx_restart(d) != 0)
		bail_out("ckptd did not come back after SIGTERM");
	c = mgr_connect(d);
	m = mgr_open(c, rootbuf, o, 1);
	is_steps(m, "[1,2]", "after restart: [1,2]");
	is_best(m, 1, "after restart");
	check_metric(m, 1, "loss", 3.0, "after restart");
	saved = save_range(m, 3, 5, NULL, 0, 0, losses + 3);
	is_str(saved, "[3,4,5]", "steps 3..5 saved after the restart");
	free(saved);
	is_steps(m, "[3,4]", "losses 5,3,4,1,2,6 across a restart -> [3,4]");
	is_disk(rootbuf, NULL, "[3,4]", "on disk: 3,4");
	is_best(m, 3, "after steps 3..5");
	check_metric(m, 4, "loss", 2.0, "after steps 3..5");
	ckpt_disconnect(c);

	/* Stop, delete the LMDB index, start: rebuilt from disk. */
	is_int(hx_stop(d), 0, "ckptd exits cleanly on SIGTERM");
	ok(hx_exists(hx_path(d, pathbuf, "state/index/data.mdb")),
	    "the index lives in STATE/index/data.mdb");
	hx_rmtree(hx_path(d, pathbuf, "state/index"));
	ok(!hx_exists(pathbuf), "index files deleted");
	if (hx_start(d) != 0)
		bail_out("ckptd did not start without its index");
	c = mgr_connect(d);
	m = mgr_open(c, rootbuf, o, 1);
	is_steps(m, "[3,4]", "index rebuilt from disk: [3,4]");
	is_best(m, 3, "index rebuilt from disk");
	check_metric(m, 3, "loss", 1.0, "index rebuilt from disk");
	check_metric(m, 4, "loss", 2.0, "index rebuilt from disk");
	saved = save_range(m, 6, 6, NULL, 0, 0, losses + 6);
	is_str(saved, "[6]", "step 6 saved");
	free(saved);
	is_steps(m, "[3,6]", "loss 0.5 at step 6 (metrics from disk) -> [3,6]");
	is_best(m, 6, "after step 6");
	ok_rc(ckpt_manager_close(m), NULL, "close");

	/* Mode max. */
	ckpt_options_free(o);
	o = mgr_options();
	ok(ckpt_options_set_best(o, "loss", 0) == 0 &&
	    ckpt_options_set_max_to_keep(o, 2) == 0, "mode max, max_to_keep=2");
	m = mgr_open(c, root_path(d, "best-max"), o, 1);
	saved = save_range(m, 0, 5, NULL, 0, 0, losses);
	free(saved);
	is_steps(m, "[0,5]", "mode max over 5,3,4,1,2,6 -> [0,5]");
	is_best(m, 5, "mode max");
	ok_rc(ckpt_manager_close(m), NULL, "close");
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- time-based policies (test clock) --------------------------------------- */

static void
time_run(ckpt_client *c, const char *root, ckpt_options *o, const char *want,
    const char *what)
{
	ckpt_manager *m = mgr_open(c, root, o, 0);
	char *saved;

	ok(m != NULL, "%s: manager opens", what);
	if (m == NULL)
		return;
	saved = save_range(m, 0, 9, NULL, TEST_T0, 30 * NS_PER_S, NULL);
	is_str(saved, "[0,1,2,3,4,5,6,7,8,9]", "%s: every step saved", what);
	free(saved);
	is_steps(m, want, "%s", what);
	is_disk(root, NULL, want, "%s: on disk", what);
	ckpt_manager_close(m);
}

void
test_time(struct hx_daemon *d)
{
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o;
	ckpt_manager *m;
	ckpt_step_info *infos = NULL;
	char *saved;
	size_t n = 0, i;
	int a, b, r;

	/* keep_time_interval=100 s + max_to_keep=1, a save every 30 s:
	 * EveryNSeconds keeps 0 (t=0), 4 (t=120), 8 (t=240); LatestN 9. */
	o = mgr_options();
	ok(ckpt_options_set_keep_time_interval(o, 100) == 0 &&
	    ckpt_options_set_max_to_keep(o, 1) == 0,
	    "keep_time_interval=100 s, max_to_keep=1");
	time_run(c, root_path(d, "kti"), o,
	    "[0,4,8,9]", "keep_time_interval=100 s, saves every 30 s");
	ckpt_options_free(o);

	/* The same as explicit preservation nodes. */
	o = mgr_options();
	a = ckpt_options_preservation_add(o, CKPT_PRESERVE_ANY, 0, 0, NULL, 0,
	    NULL, 0, 1);
	b = ckpt_options_preservation_add(o, CKPT_PRESERVE_EVERY_N_SECONDS, 0,
	    100, NULL, 0, NULL, 0, 1);
	r = ckpt_options_preservation_add(o, CKPT_PRESERVE_LATEST_N, 1, 0,
	    NULL, 0, NULL, 0, 1);
	ok(a == 0 && b == 1 && r == 2 &&
	    ckpt_options_preservation_child(o, a, b) == 0 &&
	    ckpt_options_preservation_child(o, a, r) == 0,
	    "Any(EveryNSeconds(100), LatestN(1)) built");
	time_run(c, root_path(d, "ens"), o, "[0,4,8,9]",
	    "Any(EveryNSeconds(100), LatestN(1))");
	ckpt_options_free(o);

	/* LatestDuration(100 s): now is the newest step's time (t=270):
	 * keeps t >= 170, steps 6..9. */
	o = mgr_options();
	is_int(ckpt_options_preservation_add(o, CKPT_PRESERVE_LATEST_DURATION, 0,
	    100, NULL, 0, NULL, 0, 1), 0, "LatestDuration(100) built");
	time_run(c, root_path(d, "ld"), o, "[6,7,8,9]",
	    "LatestDuration(100 s), saves every 30 s");
	ckpt_options_free(o);

	/* Continuous(minimum_interval_secs=60) with a save every 25 s of the
	 * test clock: 0 (t=0), 3 (t=75), 6 (t=150), 9 (t=225). */
	o = mgr_options();
	is_int(ckpt_options_save_policy_add(o, CKPT_SAVE_CONTINUOUS, 0, NULL, 0,
	    60), 0, "ContinuousCheckpointingPolicy(60) built");
	m = mgr_open(c, root_path(d, "cont"), o, 1);
	saved = save_range(m, 0, 9, NULL, TEST_T0, 25 * NS_PER_S, NULL);
	is_str(saved, "[0,3,6,9]", "Continuous(60 s), a step every 25 s");
	free(saved);
	is_steps(m, "[0,3,6,9]", "Continuous(60 s): steps");
	/* The supplied timestamp is the step's time. */
	r = ckpt_list_steps(m, &infos, &n);
	ok_rc(r, m, "ckpt_list_steps");
	for (i = 0; i < n; i++)
		if (infos[i].step == 3)
			is_int(infos[i].init_ns, TEST_T0 + 75 * NS_PER_S,
			    "step 3's init time is its test-clock timestamp");
	free(infos);
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- save decision policies -------------------------------------------------- */

void
test_save_policies(struct hx_daemon *d)
{
	ckpt_client *c = mgr_connect(d);
	static const uint64_t on[] = { 3, 7 }, spec[] = { 2, 5 };
	ckpt_options *o;
	ckpt_manager *m;
	char *saved;
	int a, b, x, r;

	/* save_on_steps with save_interval_steps. */
	o = mgr_options();
	ok(ckpt_options_set_save_interval_steps(o, 5) == 0 &&
	    ckpt_options_set_save_on_steps(o, on, 2) == 0,
	    "save_interval_steps=5, save_on_steps=[3,7]");
	m = mgr_open(c, root_path(d, "onsteps"), o, 1);
	saved = save_range(m, 0, 10, NULL, 0, 0, NULL);
	is_str(saved, "[0,3,5,7,10]", "save_on_steps [3,7] + interval 5 over 0..10");
	free(saved);
	is_steps(m, "[0,3,5,7,10]", "steps");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* Default policy includes InitialSavePolicy. */
	o = mgr_options();
	ckpt_options_set_save_interval_steps(o, 5);
	m = mgr_open(c, root_path(d, "initial-default"), o, 1);
	saved = save_range(m, 1, 6, NULL, 0, 0, NULL);
	is_str(saved, "[1,5]", "interval 5 from step 1: the initial save + 5");
	free(saved);
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* SpecificStepsPolicy alone. */
	o = mgr_options();
	is_int(ckpt_options_save_policy_add(o, CKPT_SAVE_SPECIFIC_STEPS, 0, spec, 2,
	    0), 0, "SpecificStepsPolicy([2,5]) built");
	m = mgr_open(c, root_path(d, "specific"), o, 1);
	saved = save_range(m, 0, 6, NULL, 0, 0, NULL);
	is_str(saved, "[2,5]", "SpecificSteps([2,5]) over 0..6");
	free(saved);
	is_steps(m, "[2,5]", "steps");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* Any(InitialSave, FixedInterval(4)). */
	o = mgr_options();
	a = ckpt_options_save_policy_add(o, CKPT_SAVE_ANY, 0, NULL, 0, 0);
	b = ckpt_options_save_policy_add(o, CKPT_SAVE_INITIAL, 0, NULL, 0, 0);
	x = ckpt_options_save_policy_add(o, CKPT_SAVE_FIXED_INTERVAL, 4, NULL,
	    0, 0);
	ok(a == 0 && b == 1 && x == 2 &&
	    ckpt_options_save_policy_child(o, a, b) == 0 &&
	    ckpt_options_save_policy_child(o, a, x) == 0,
	    "Any(InitialSave, FixedInterval(4)) built");
	m = mgr_open(c, root_path(d, "initial"), o, 1);
	saved = save_range(m, 1, 9, NULL, 0, 0, NULL);
	is_str(saved, "[1,4,8]", "Any(Initial, FixedInterval(4)) over 1..9");
	free(saved);
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* Preemption in the default policy. */
	o = mgr_options();
	ckpt_options_set_save_interval_steps(o, 10);
	m = mgr_open(c, root_path(d, "preempt"), o, 1);
	saved = save_range(m, 0, 2, NULL, 0, 0, NULL);
	is_str(saved, "[0]", "interval 10 over 0..2");
	free(saved);
	r = mgr_save_wait(m, 3, SV(.preempted = 1), &x);
	ok_rc(r, m, "save(3, preempted)");
	is_int(x, 1, "reached_preemption(3): saved despite the interval");
	r = mgr_save_wait(m, 4, NULL, &x);
	ok_rc(r, m, "save(4)");
	is_int(x, 0, "step 4 without preemption: not saved");
	is_steps(m, "[0,3]", "default policy + preemption -> [0,3]");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* PreemptionCheckpointingPolicy alone. */
	o = mgr_options();
	is_int(ckpt_options_save_policy_add(o, CKPT_SAVE_PREEMPTION, 0, NULL, 0, 0),
	    0, "PreemptionCheckpointingPolicy built");
	m = mgr_open(c, root_path(d, "preempt-only"), o, 1);
	r = mgr_save_wait(m, 1, NULL, &x);
	ok_rc(r, m, "save(1)");
	is_int(x, 0, "Preemption policy: step 1 not preempted, not saved");
	r = mgr_save_wait(m, 2, SV(.preempted = 1), &x);
	ok_rc(r, m, "save(2, preempted)");
	is_int(x, 1, "Preemption policy: step 2 preempted, saved");
	is_steps(m, "[2]", "Preemption policy -> [2]");
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- preservation policies ---------------------------------------------------- */

void
test_preservation(struct hx_daemon *d)
{
	static const uint64_t custom[] = { 5, 7 };
	static const char *const nometric_losses[] = {
		"{\"loss\": 2.0}", NULL, "{\"loss\": 1.0}",
	};
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o;
	ckpt_manager *m = NULL;
	char *saved;
	int a, x, y, z, r;

	/* Any(EveryNSteps(4), CustomSteps([5,7]), LatestN(2)). */
	o = mgr_options();
	a = ckpt_options_preservation_add(o, CKPT_PRESERVE_ANY, 0, 0, NULL, 0,
	    NULL, 0, 1);
	x = ckpt_options_preservation_add(o, CKPT_PRESERVE_EVERY_N_STEPS, 4, 0,
	    NULL, 0, NULL, 0, 1);
	y = ckpt_options_preservation_add(o, CKPT_PRESERVE_CUSTOM_STEPS, 0, 0,
	    custom, 2, NULL, 0, 1);
	z = ckpt_options_preservation_add(o, CKPT_PRESERVE_LATEST_N, 2, 0,
	    NULL, 0, NULL, 0, 1);
	ok(a == 0 && x == 1 && y == 2 && z == 3 &&
	    ckpt_options_preservation_child(o, a, x) == 0 &&
	    ckpt_options_preservation_child(o, a, y) == 0 &&
	    ckpt_options_preservation_child(o, a, z) == 0,
	    "Any(EveryNSteps(4), CustomSteps([5,7]), LatestN(2)) built");
	m = mgr_open(c, root_path(d, "any"), o, 1);
	saved = save_range(m, 0, 11, NULL, 0, 0, NULL);
	free(saved);
	is_steps(m, "[0,4,5,7,8,10,11]", "Any(EveryNSteps(4), CustomSteps, LatestN(2))");
	is_disk(root_path(d, "any"), NULL, "[0,4,5,7,8,10,11]", "on disk");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* Any(BestN(loss, min, 1), LatestN(1)). */
	o = mgr_options();
	a = ckpt_options_preservation_add(o, CKPT_PRESERVE_ANY, 0, 0, NULL, 0,
	    NULL, 0, 1);
	x = ckpt_options_preservation_add(o, CKPT_PRESERVE_BEST_N, 1, 0, NULL,
	    0, "loss", 1, 1);
	y = ckpt_options_preservation_add(o, CKPT_PRESERVE_LATEST_N, 1, 0,
	    NULL, 0, NULL, 0, 1);
	ok(a == 0 && x == 1 && y == 2 &&
	    ckpt_options_preservation_child(o, a, x) == 0 &&
	    ckpt_options_preservation_child(o, a, y) == 0,
	    "Any(BestN(loss, min, 1), LatestN(1)) built");
	m = mgr_open(c, root_path(d, "bestn"), o, 1);
	{
		static const char *const l[] = {
			"{\"loss\": 5.0}", "{\"loss\": 3.0}", "{\"loss\": 4.0}",
			"{\"loss\": 1.0}", "{\"loss\": 2.0}", "{\"loss\": 6.0}",
		};
		saved = save_range(m, 0, 5, NULL, 0, 0, l);
		free(saved);
	}
	is_steps(m, "[3,5]", "Any(BestN(loss,min,1), LatestN(1)) -> [3,5]");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* PreserveAll. */
	o = mgr_options();
	is_int(ckpt_options_preservation_add(o, CKPT_PRESERVE_ALL, 0, 0, NULL, 0,
	    NULL, 0, 1), 0, "PreserveAll built");
	m = mgr_open(c, root_path(d, "all"), o, 1);
	saved = save_range(m, 0, 3, NULL, 0, 0, NULL);
	free(saved);
	is_steps(m, "[0,1,2,3]", "PreserveAll keeps everything");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* BestN keep_checkpoints_without_metrics false / true. */
	for (r = 0; r <= 1; r++) {
		o = mgr_options();
		ckpt_options_preservation_add(o, CKPT_PRESERVE_BEST_N, 1, 0,
		    NULL, 0, "loss", 1, r);
		m = mgr_open(c, root_path(d, r ? "bestn-keep" : "bestn-drop"),
		    o, 1);
		saved = save_range(m, 0, 2, NULL, 0, 0, nometric_losses);
		is_str(saved, "[0,1,2]", "BestN(1) keep_without_metrics=%d: saved", r);
		free(saved);
		is_steps(m, r ? "[1,2]" : "[2]",
		    "BestN(loss,min,1), step 1 without metrics, "
		    "keep_checkpoints_without_metrics=%d", r);
		ckpt_manager_close(m);
		ckpt_options_free(o);
	}

	/* A preservation policy together with a delete option. */
	for (r = 0; r < 3; r++) {
		static const char *const which[] = { "max_to_keep",
			"keep_period", "keep_time_interval" };
		const char *msg;

		o = mgr_options();
		ckpt_options_preservation_add(o, CKPT_PRESERVE_LATEST_N, 2, 0,
		    NULL, 0, NULL, 0, 1);
		if (r == 0)
			ckpt_options_set_max_to_keep(o, 3);
		else if (r == 1)
			ckpt_options_set_keep_period(o, 4);
		else
			ckpt_options_set_keep_time_interval(o, 60);
		m = NULL;
		x = ckpt_manager_open(c, root_path(d, "exclusive"), o, &m);
		is_int(x, CKPT_EINVAL, "preservation policy + %s: "
		    "ckpt_manager_open fails with CKPT_EINVAL", which[r]);
		ok(m == NULL, "no manager handle on failure");
		msg = ckpt_client_errmsg(c);
		has(msg, "`preservation_policy` and `delete options` are "
		    "mutually exclusive - do not use together.",
		    "preservation + %s: Orbax's message", which[r]);
		if (m != NULL)
			ckpt_manager_close(m);
		ckpt_options_free(o);
	}
	ckpt_disconnect(c);
}

/* ---- max_to_keep across daemon restarts --------------------------------------- */

void
test_restart(struct hx_daemon *d)
{
	char root[HX_PATH], *saved;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_manager *m;
	int x, r;

	snprintf(root, sizeof root, "%s", root_path(d, "restart"));
	ckpt_options_set_max_to_keep(o, 3);
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 0, 4, NULL, 0, 0, NULL);
	is_str(saved, "[0,1,2,3,4]", "steps 0..4 saved");
	free(saved);
	is_steps(m, "[2,3,4]", "max_to_keep=3 before the restart");
	ckpt_disconnect(c);

	if (hx_restart(d) != 0)
		bail_out("ckptd did not come back after SIGTERM");
	c = mgr_connect(d);
	m = mgr_open(c, root, o, 1);
	is_steps(m, "[2,3,4]", "after restart: [2,3,4]");
	r = mgr_save_wait(m, 4, NULL, &x);
	ok(r == 0 && x == 0, "after restart: step 4 is not saved again "
	    "(latest is 4) rc=%d saved=%d", r, x);
	saved = save_range(m, 5, 7, NULL, 0, 0, NULL);
	is_str(saved, "[5,6,7]", "steps 5..7 saved after the restart");
	free(saved);
	is_steps(m, "[5,6,7]", "max_to_keep=3 continues across the restart");
	is_disk(root, NULL, "[5,6,7]", "on disk: 5,6,7");
	r = mgr_check_restore(m, -1, 7, NULL);
	ok_rc(r, m, "restore latest (7) after the restart");
	ckpt_disconnect(c);

	/* kill -9 the daemon; everything committed is still there. */
	if (hx_kill9_restart(d) != 0)
		bail_out("ckptd did not start after kill -9");
	c = mgr_connect(d);
	m = mgr_open(c, root, o, 1);
	is_steps(m, "[5,6,7]", "after kill -9: [5,6,7]");
	saved = save_range(m, 8, 9, NULL, 0, 0, NULL);
	is_str(saved, "[8,9]", "steps 8..9 saved after kill -9");
	free(saved);
	is_steps(m, "[7,8,9]", "max_to_keep=3 continues after kill -9");
	is_disk(root, NULL, "[7,8,9]", "on disk: 7,8,9");
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}
