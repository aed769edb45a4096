/*
 * tests.h - the CheckpointManager test cases, one function per meson
 * test (test_manager.c runs the one named on its command line).
 */
#ifndef CKPT_TEST_MGR_TESTS_H
#define CKPT_TEST_MGR_TESTS_H

#include "mgr.h"

/* t_policy.c: retention and save decisions */
void test_max_to_keep(struct hx_daemon *d);
void test_interval(struct hx_daemon *d);
void test_should_save_fn(struct hx_daemon *d);
void test_keep_period(struct hx_daemon *d);
void test_best(struct hx_daemon *d);
void test_time(struct hx_daemon *d);
void test_save_policies(struct hx_daemon *d);
void test_preservation(struct hx_daemon *d);
void test_restart(struct hx_daemon *d);

/* t_api.c: naming, errors, read-only, delete, metadata, restore, tmp */
void test_naming(struct hx_daemon *d);
void test_exists(struct hx_daemon *d);
void test_read_only(struct hx_daemon *d);
void test_read_only_absent_root(struct hx_daemon *d);
void test_delete(struct hx_daemon *d);
void test_preempt(struct hx_daemon *d);
void test_metrics_item(struct hx_daemon *d);
void test_preempt_sigterm(struct hx_daemon *d);
void test_root_metadata(struct hx_daemon *d);
void test_restore(struct hx_daemon *d);
void test_tmp_dirs(struct hx_daemon *d);

/* t_async.c: background failures, several clients, waiting */
void test_enospc(struct hx_daemon *d);
void test_two_clients(struct hx_daemon *d);
void test_wait_for_step(struct hx_daemon *d);
void test_in_progress(struct hx_daemon *d);
void test_wait_threads(struct hx_daemon *d);

/* Helpers shared by the test files. */

/* Save steps from..to (inclusive) one by one, waiting for each; returns
 * the steps ckpt_save reported as saved, "[0,2]" (malloc'ed). Each save
 * uses *o (NULL: defaults) with ts_ns = ts0 + i * dt_ns when ts0 != 0 and
 * metrics from metrics[i - from] when metrics is non-NULL. */
char *save_range(ckpt_manager *m, uint64_t from, uint64_t to,
    const struct sv *o, int64_t ts0, int64_t dt_ns,
    const char *const *metrics);
/* A fresh root under the daemon's directory. */
const char *root_path(struct hx_daemon *d, const char *name);
/* Number in a JSON object (metrics), or NAN. */
double json_number(const char *json, const char *key);

#define NS_PER_S 1000000000LL
/* Test clock origin: 2023-11-14, far from the real clock on purpose. */
#define TEST_T0 (1700000000LL * NS_PER_S)

#endif
