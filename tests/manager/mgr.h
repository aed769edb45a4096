/*
 * mgr.h - helpers of the CheckpointManager tests: open a manager, save,
 * list and compare steps. TAP output, the private ckptd per test and the
 * file helpers come from the integration harness (harness.h).
 *
 * Every test owns its daemon: test_manager.c runs hx_init() + hx_start()
 * (see harness.h) before each test function and hx_cleanup() after it.
 */
#ifndef CKPT_TEST_MGR_H
#define CKPT_TEST_MGR_H

#include <stddef.h>
#include <stdint.h>

#include <ckpt/ckpt.h>

#include "harness.h"

/* A libckpt call on manager m returned `want`; on failure show code+msg. */
#define is_rc(r, want, m, ...) \
	(tap_is_int((long long)(r), (long long)(want), __FILE__, __LINE__, \
	    __VA_ARGS__) || (diag("  got %s: %s", ckpt_strerror(r), \
	    (m) ? ckpt_manager_errmsg(m) : ""), 0))
#define ok_rc(r, m, ...) is_rc(r, 0, m, __VA_ARGS__)

/* Connect to the test's daemon; bails out (with the daemon's log) when it
 * does not answer. */
/* New default options (bails out when out of memory). */
ckpt_options *mgr_options(void);
ckpt_client *mgr_connect(struct hx_daemon *d);
/* Open a manager with options (NULL: defaults); bails out on failure when
 * `must` is set, else returns NULL with a diag. */
ckpt_manager *mgr_open(ckpt_client *c, const char *root,
    const ckpt_options *o, int must);

/* ---- saving ---------------------------------------------------------------- */

/* What one save carries besides the default tree. */
struct sv {
	const char *metrics;    /* JSON object or NULL */
	const char *custom;     /* custom metadata JSON or NULL */
	int64_t ts_ns;          /* test clock (0: now) */
	int force;
	int preempted;
	size_t bytes;           /* size of array "w" (default 64 bytes) */
};

/* Save the default item: {"w": F32[bytes/4] filled from step, "step":
 * step}. Returns the ckpt_save() code; *saved as ckpt_save sets it. */
int mgr_save(ckpt_manager *m, uint64_t step, const struct sv *o, int *saved);
/* mgr_save + ckpt_wait_until_finished; returns the first error. */
int mgr_save_wait(ckpt_manager *m, uint64_t step, const struct sv *o,
    int *saved);
#define SV(...) (&(struct sv){ __VA_ARGS__ })

/* Restore `step` and check the payload mgr_save wrote for `want_step`
 * (step leaf and the first values of "w"). Returns 0 when it matches, the
 * restore code, or 1 on a content mismatch (with a diag). */
int mgr_check_restore(ckpt_manager *m, int64_t step, int64_t want_step,
    const ckpt_restore_args *ra);

/* ---- steps -------------------------------------------------------------- */

/* ckpt_all_steps as "[3,4]" (malloc'ed; "ERR <code> <msg>" on failure). */
char *mgr_steps(ckpt_manager *m);
/* Step directories on disk under root: every directory entry that does
 * not start with '.', is not "metadata" and not `skip`, sorted with
 * strverscmp, as "[a,b]" (malloc'ed). */
char *mgr_disk(const char *root, const char *skip);
/* The same for every entry (hidden ones too), for leftover checks. */
char *mgr_disk_all(const char *root);

#define is_steps(m, want, ...) do {                                       \
	char *got_ = mgr_steps(m);                                        \
	tap_is_str(got_, (want), __FILE__, __LINE__, __VA_ARGS__);       \
	free(got_);                                                       \
} while (0)
#define is_disk(root, skip, want, ...) do {                               \
	char *got_ = mgr_disk((root), (skip));                            \
	tap_is_str(got_, (want), __FILE__, __LINE__, __VA_ARGS__);       \
	free(got_);                                                       \
} while (0)

/* A test: a name and a function taking the running daemon. */
struct mgr_test {
	const char *name;
	void (*fn)(struct hx_daemon *d);
};

#endif
