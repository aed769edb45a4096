/*
 * mgr.h - harness of the CheckpointManager tests: TAP output, a private
 * ckptd per test, and helpers that save, list and compare steps.
 *
 * Every test program owns its daemon. mgr_daemon_init() makes a fresh
 * mktemp -d directory; mgr_daemon_start() runs
 *     $CKPTD_BIN --socket DIR/s.sock --state-dir DIR/state --foreground
 *         --workers 2
 * (stderr to DIR/ckptd.log) and waits until the socket accepts a
 * connection. The daemon dies with the test (PR_SET_PDEATHSIG) and is
 * stopped by PID in mgr_daemon_cleanup(). CKPTD_AUTOSTART=0 is set so the
 * library never starts a daemon of its own. CKPTD_TEST_KEEP=1 keeps the
 * directory for inspection.
 *
 * TAP lines may be printed from several threads at once.
 */
#ifndef CKPT_TEST_MGR_H
#define CKPT_TEST_MGR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <ckpt/ckpt.h>

#define MGR_PATH 4096

/* ---- TAP ------------------------------------------------------------- */

int t_ok(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int t_is(long long got, long long want, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int t_is_str(const char *got, const char *want, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int t_has(const char *hay, const char *needle, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void t_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void t_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void t_bail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
/* Print the plan; returns the exit status (0 when all passed). */
int t_done(void);

#define ok(cond, ...) t_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is(got, want, ...) \
	t_is((long long)(got), (long long)(want), __FILE__, __LINE__, \
	    __VA_ARGS__)
#define is_str(got, want, ...) \
	t_is_str((got), (want), __FILE__, __LINE__, __VA_ARGS__)
#define has(hay, needle, ...) \
	t_has((hay), (needle), __FILE__, __LINE__, __VA_ARGS__)
/* A libckpt call on manager m returned `want`; on failure show code+msg. */
#define is_rc(r, want, m, ...) \
	(t_is((long long)(r), (long long)(want), __FILE__, __LINE__, \
	    __VA_ARGS__) || (t_diag("  got %s: %s", ckpt_strerror(r), \
	    (m) ? ckpt_manager_errmsg(m) : ""), 0))
#define ok_rc(r, m, ...) is_rc(r, 0, m, __VA_ARGS__)

/* ---- the daemon -------------------------------------------------------- */

struct mgr_daemon {
	char dir[MGR_PATH];
	char sock[MGR_PATH];
	char state[MGR_PATH];
	char log[MGR_PATH];
	const char *bin;
	pid_t pid;
	char mnt[MGR_PATH];     /* a tmpfs mounted by the test, or "" */
};

void mgr_daemon_init(struct mgr_daemon *d);
/* Start and wait (<= 20 s) for the socket to accept. 0 or -1. */
int mgr_daemon_start(struct mgr_daemon *d);
/* SIGTERM, wait <= 60 s (then SIGKILL). The wait status, -1 if killed. */
int mgr_daemon_stop(struct mgr_daemon *d);
void mgr_daemon_kill9(struct mgr_daemon *d);
int mgr_daemon_restart(struct mgr_daemon *d);
void mgr_daemon_cleanup(struct mgr_daemon *d);
void mgr_daemon_dump_log(const struct mgr_daemon *d, int lines);
/* Connect; bails out when the daemon does not answer. */
ckpt_client *mgr_connect(struct mgr_daemon *d);
/* DIR/<fmt> into a static rotating buffer. */
const char *mgr_path(const struct mgr_daemon *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

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
	t_is_str(got_, (want), __FILE__, __LINE__, __VA_ARGS__);         \
	free(got_);                                                       \
} while (0)
#define is_disk(root, skip, want, ...) do {                               \
	char *got_ = mgr_disk((root), (skip));                            \
	t_is_str(got_, (want), __FILE__, __LINE__, __VA_ARGS__);         \
	free(got_);                                                       \
} while (0)

/* ---- misc ----------------------------------------------------------------- */

/* buf (MGR_PATH bytes) = dir + "/" + name; bails out when too long. */
char *mgr_cat(char *buf, const char *dir, const char *name);

int64_t mgr_now_ms(void);
void mgr_sleep_ms(int ms);
int mgr_exists(const char *path);
int mgr_mkdirs(const char *path);
int mgr_rmtree(const char *path);
/* Whole file, NUL-terminated, malloc'ed; NULL on error. */
char *mgr_read_file(const char *path);
int mgr_write_file(const char *path, const char *text);
/* Open a manager with options (NULL: defaults); bails out on failure when
 * `must` is set, else returns NULL with a diag. */
ckpt_manager *mgr_open(ckpt_client *c, const char *root,
    const ckpt_options *o, int must);

/* A test: a name and a function taking the running daemon. */
struct mgr_test {
	const char *name;
	void (*fn)(struct mgr_daemon *d);
};

#endif
