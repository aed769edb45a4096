/*
 * test_manager.c - CheckpointManager semantics (Orbax's) against a real
 * ckptd. Usage: test_manager NAME... (no name: every test, one daemon
 * each, in sequence). Output is TAP.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tests.h"

static const struct mgr_test tests[] = {
	{ "max_to_keep", test_max_to_keep },
	{ "interval", test_interval },
	{ "should_save_fn", test_should_save_fn },
	{ "keep_period", test_keep_period },
	{ "best", test_best },
	{ "time", test_time },
	{ "save_policies", test_save_policies },
	{ "preservation", test_preservation },
	{ "restart", test_restart },
	{ "naming", test_naming },
	{ "exists", test_exists },
	{ "read_only", test_read_only },
	{ "read_only_absent_root", test_read_only_absent_root },
	{ "delete", test_delete },
	{ "root_metadata", test_root_metadata },
	{ "restore", test_restore },
	{ "tmp_dirs", test_tmp_dirs },
	{ "enospc", test_enospc },
	{ "two_clients", test_two_clients },
	{ "wait_for_step", test_wait_for_step },
	{ "in_progress", test_in_progress },
	{ "wait_threads", test_wait_threads },
	{ "preempt", test_preempt },
	{ "metrics_item", test_metrics_item },
	{ "preempt_sigterm", test_preempt_sigterm },
};
#define NTESTS (sizeof tests / sizeof tests[0])

char *
save_range(ckpt_manager *m, uint64_t from, uint64_t to, const struct sv *o,
    int64_t ts0, int64_t dt_ns, const char *const *metrics)
{
	char *out = malloc(16 * (to - from + 2) + 2), *p = out;
	struct sv s = { 0 };
	uint64_t i;
	int saved, r, first = 1;

	if (out == NULL)
		abort();
	if (o != NULL)
		s = *o;
	p += sprintf(p, "[");
	for (i = from; i <= to; i++) {
		if (ts0 != 0)
			s.ts_ns = ts0 + (int64_t)(i - from) * dt_ns;
		if (metrics != NULL)
			s.metrics = metrics[i - from];
		r = mgr_save_wait(m, i, &s, &saved);
		if (r != 0) {
			diag("save of step %llu: %s: %s",
			    (unsigned long long)i, ckpt_strerror(r),
			    ckpt_manager_errmsg(m));
			p += sprintf(p, "%sERR%d", first ? "" : ",", r);
			first = 0;
			continue;
		}
		if (saved == 1) {
			p += sprintf(p, "%s%llu", first ? "" : ",",
			    (unsigned long long)i);
			first = 0;
		}
	}
	sprintf(p, "]");
	return out;
}

const char *
root_path(struct hx_daemon *d, const char *name)
{
	static __thread char bufs[4][HX_PATH];
	static __thread unsigned next;

	return hx_path(d, bufs[next++ & 3], "roots/%s", name);
}

double
json_number(const char *json, const char *key)
{
	json_t *root, *v;
	double r = NAN;

	if (json == NULL || (root = json_loads(json, 0, NULL)) == NULL)
		return NAN;
	if ((v = json_object_get(root, key)) != NULL && json_is_number(v))
		r = json_number_value(v);
	json_decref(root);
	return r;
}

static void
run(const struct mgr_test *t)
{
	struct hx_daemon d;
	char path[HX_PATH];

	diag("=== %s", t->name);
	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("cannot start ckptd (%s)", d.bin);
	if (hx_mkdirs(hx_path(&d, path, "roots")) != 0)
		bail_out("mkdir roots");
	t->fn(&d);
	/* A failed stop shows the log (hx_stop, then hx_cleanup). */
	if (d.pid > 0 && hx_stop(&d) != 0)
		ok(0, "%s: ckptd exits cleanly on SIGTERM", t->name);
	hx_cleanup(&d);
}

int
main(int argc, char **argv)
{
	size_t i;
	int a;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		for (i = 0; i < NTESTS; i++)
			run(&tests[i]);
		return done_testing();
	}
	for (a = 1; a < argc; a++) {
		for (i = 0; i < NTESTS; i++)
			if (strcmp(argv[a], tests[i].name) == 0)
				break;
		if (i == NTESTS)
			bail_out("unknown test '%s'", argv[a]);
		run(&tests[i]);
	}
	return done_testing();
}
