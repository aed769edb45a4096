/*
 * harness.h - what every integration test needs: TAP output and a real
 * ckptd on a private socket.
 *
 * Each test program owns its daemon: hx_init() makes a fresh mktemp -d
 * directory, hx_start() runs `$CKPTD_BIN --socket DIR/s.sock --state-dir
 * DIR/state --foreground --workers 2` (stderr to DIR/ckptd.log) and waits
 * until it answers a hello. The daemon dies with the test (PDEATHSIG, and
 * hx_cleanup() stops it by PID).
 *
 * Setting CKPTD_TEST_SOCKET points the suite at an already-running daemon
 * (for debugging with gdb or strace): nothing is started, and the tests
 * that need to restart or kill the daemon report a skip.
 *
 * Output is TAP (meson `protocol : 'tap'`): ok()/is_int()/is_str()/has()
 * print one line per assertion; done_testing() prints the plan and returns
 * the exit code. The assertion functions may be called from several
 * threads.
 *
 * Used by the integration tests and by the CheckpointManager tests
 * (tests/manager).
 */
#ifndef CKPT_TEST_HARNESS_H
#define CKPT_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <ckpt/ckpt.h>

#define HX_PATH 4096

/* ---- TAP ------------------------------------------------------------- */

int tap_ok(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int tap_is_int(long long got, long long want, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* got and want equal strings (NULL never matches). */
int tap_is_str(const char *got, const char *want, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* hay contains needle, ignoring case (NULL never matches). */
int tap_has(const char *hay, const char *needle, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void tap_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A comment line ("# ..."), for context. */
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Give up now: "Bail out!" and exit 1 (the daemon is killed by PDEATHSIG). */
void bail_out(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
/* Print the plan; 0 when every assertion passed, else 1. */
int done_testing(void);
/* Number of failed assertions so far. */
int tap_failures(void);

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...) \
	tap_is_int((long long)(got), (long long)(want), __FILE__, __LINE__, \
	    __VA_ARGS__)
#define is_str(got, want, ...) \
	tap_is_str((got), (want), __FILE__, __LINE__, __VA_ARGS__)
#define has(hay, needle, ...) \
	tap_has((hay), (needle), __FILE__, __LINE__, __VA_ARGS__)
/* Assert a libckpt call returned 0; on failure show the code and message. */
#define ok_call(r, c, ...) \
	(tap_is_int((long long)(r), 0, __FILE__, __LINE__, __VA_ARGS__) || \
	    (diag("  %s: %s", ckpt_strerror(r), (c) ? ckpt_client_errmsg(c) : \
	    ""), 0))

/* ---- the daemon ---------------------------------------------------------- */

struct hx_daemon {
	char dir[HX_PATH];      /* private mktemp -d directory */
	char sock[HX_PATH];
	char state[HX_PATH];
	char log[HX_PATH];
	char bin[HX_PATH];
	pid_t pid;              /* 0 when not running */
	int external;           /* CKPTD_TEST_SOCKET: not ours to start/stop */
	int workers;            /* --workers (default 2) */
	const char *extra[8];   /* more daemon arguments, NULL-terminated */
	char mnt[HX_PATH];      /* a filesystem the test mounted, or "": */
	                        /* unmounted by hx_cleanup() and at exit */
};

/* Make the private directory and read CKPTD_BIN / CKPTD_TEST_SOCKET.
 * Also sets CKPTD_AUTOSTART=0 so the library never starts a daemon of its
 * own behind the test's back, and CKPTD_SOCKET to the daemon's socket for
 * child programs. Bails out when CKPTD_BIN is missing. If the test exits
 * without hx_cleanup() (bail_out), the daemon is killed, d->mnt unmounted
 * and the directory removed at exit. */
void hx_init(struct hx_daemon *d);
/* Start the daemon and wait (<= 15 s) until it answers. 0 or -1. */
int hx_start(struct hx_daemon *d);
/* SIGTERM and wait (<= 60 s, then SIGKILL). Returns the wait status (0 for
 * a clean exit), or -1 when it had to be killed. */
int hx_stop(struct hx_daemon *d);
/* SIGKILL and reap. */
void hx_kill9(struct hx_daemon *d);
/* hx_stop() + hx_start() with the same socket and state dir. */
int hx_restart(struct hx_daemon *d);
/* hx_kill9() + hx_start() with the same socket and state dir (a crash). */
int hx_kill9_restart(struct hx_daemon *d);
/* 1 if the daemon we started is still running (always 1 when external). */
int hx_alive(struct hx_daemon *d);
/* Stop the daemon if running, unmount d->mnt and remove the directory
 * (kept when CKPTD_TEST_KEEP=1). */
void hx_cleanup(struct hx_daemon *d);
/* Print the last lines of the daemon's log as TAP comments. */
void hx_dump_log(struct hx_daemon *d, int lines);
/* Connect a client to the daemon's socket. */
int hx_connect(struct hx_daemon *d, ckpt_client **c);
/* DIR/<fmt...> into buf (HX_PATH bytes). */
char *hx_path(struct hx_daemon *d, char *buf, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- tools ---------------------------------------------------------------- */

/* Deterministic pseudo-random bytes. */
void hx_fill(void *buf, size_t n, uint64_t seed);
/* Sorted listing of everything under dir ("path type mode uid size
 * hash" per line), malloc'ed; for "nothing changed on disk" checks. */
char *hx_snapshot(const char *dir);
/* Whole file, NUL-terminated, malloc'ed (NULL on error); *len if non-NULL. */
char *hx_read_file(const char *path, size_t *len);
/* Write text to path (created or truncated). 0 or -1. */
int hx_write_file(const char *path, const char *text);
/* 1 when path exists (lstat). */
int hx_exists(const char *path);
/* mkdir -p (mode 0755). 0 or -1. */
int hx_mkdirs(const char *path);
/* rm -rf (never follows symlinks). */
int hx_rmtree(const char *path);
/* dir + "/" + name into buf (HX_PATH bytes); bails out when too long. */
char *hx_join(char *buf, const char *dir, const char *name);
/* Run argv (argv[0] a path), capture stdout+stderr into out (NUL-
 * terminated, truncated to outlen), wait at most timeout_s. Returns the
 * exit code, 128+signal, or -1. */
int hx_run(char *const argv[], char *out, size_t outlen, int timeout_s);
/* Look up (and, as root, create with useradd) a system user. 0 or -1. */
int hx_ensure_user(const char *name, uid_t *uid, gid_t *gid);
/* Run fn in a child process with the given uid/gid (no supplementary
 * groups). fn's return value and message come back through a pipe.
 * Returns fn's value, or INT32_MIN when the child failed to run. */
int hx_as_user(uid_t uid, gid_t gid, int (*fn)(void *arg, char *msg,
    size_t msglen), void *arg, char *msg, size_t msglen);
/* Milliseconds on the monotonic clock. */
int64_t hx_now_ms(void);
/* Sleep ms milliseconds (restarted after signals). */
void hx_sleep_ms(int ms);
/* A loopback TCP port no socket holds now (the kernel's pick), for a
 * daemon to listen on; bails out when none can be had. */
int hx_free_port(void);
/* The directory holding the test sources (CKPT_TEST_SRCDIR). */
const char *hx_srcdir(void);

#endif
