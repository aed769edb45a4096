/*
 * test_trust.c - clients talk only to a daemon they can trust, and the
 * per-user socket lives in a directory nobody else controls.
 *
 * Two real users (created with useradd when missing) squat each other:
 *  - user A runs a ckptd and opens its socket to everyone: root's client
 *    and user B's client refuse it (SO_PEERCRED: neither root nor self),
 *    with CKPT_EACCES and a message naming the daemon's uid;
 *  - user A creates /tmp/ckptd-<uid of B> first: B's client and B's
 *    daemon refuse that directory (wrong owner), and a directory of B's
 *    own with mode 0755 too; with the squat gone B gets a fresh 0700
 *    directory of its own;
 *  - a daemon running as root is accepted by user B.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define USER_A "ckpttest"
#define USER_B "ckpttest2"

extern char **environ;

static struct hx_daemon d;
static char sock_a[HX_PATH], log_a[HX_PATH], state_a[HX_PATH];
static char tmp_b[64];

/* As user A: start ckptd in the background on sock_a (it exits by itself
 * when idle, should this test die first); returns its pid. */
static int start_a(void *arg, char *msg, size_t len)
{
	char *argv[] = { d.bin, "--socket", sock_a, "--state-dir", state_a,
	    "--foreground", "--idle-exit", "60", NULL };
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int r;

	(void)arg;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log_a, O_WRONLY | O_CREAT |
	    O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	r = posix_spawn(&pid, d.bin, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0) {
		snprintf(msg, len, "spawn: %s", strerror(r));
		return -1;
	}
	return (int)pid;
}

/* As user A: open A's socket to everybody (A owns it). */
static int open_socket_a(void *arg, char *msg, size_t len)
{
	(void)arg;
	if (chmod(sock_a, 0666) != 0) {
		snprintf(msg, len, "chmod: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Connect to path (NULL: the default) and report how it went. */
static int connect_cb(void *arg, char *msg, size_t len)
{
	const char *path = arg;
	ckpt_client *c = NULL;
	int r;

	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("CKPTD_SOCKET");
	setenv("CKPTD_AUTOSTART", "0", 1);
	r = ckpt_connect(path, &c);
	snprintf(msg, len, "%s", r != 0 ? ckpt_connect_errmsg() : "");
	if (r == 0)
		r = ckpt_ping(c);
	ckpt_disconnect(c);
	return r;
}

/* As user A: make B's fallback directory first (world-writable, as an
 * attacker would, so that B could even put a socket there). */
static int squat_cb(void *arg, char *msg, size_t len)
{
	(void)arg;
	if (mkdir(tmp_b, 0700) != 0 || chmod(tmp_b, 0777) != 0) {
		snprintf(msg, len, "mkdir %s: %s", tmp_b, strerror(errno));
		return -1;
	}
	return 0;
}

/* As user B: its own fallback directory, but readable by all. */
static int loose_dir_cb(void *arg, char *msg, size_t len)
{
	(void)arg;
	if (mkdir(tmp_b, 0700) != 0 || chmod(tmp_b, 0755) != 0) {
		snprintf(msg, len, "mkdir %s: %s", tmp_b, strerror(errno));
		return -1;
	}
	return 0;
}

/* waitpid with a deadline: 0 when it exited (*st set). */
static int wait_exit(pid_t pid, int timeout_ms, int *st)
{
	int64_t end = hx_now_ms() + timeout_ms;

	while (hx_now_ms() < end) {
		if (waitpid(pid, st, WNOHANG) == pid)
			return 0;
		hx_sleep_ms(10);
	}
	return -1;
}

/* As user B: ckptd with the default socket; its exit status, stderr in
 * msg. */
static int daemon_b_cb(void *arg, char *msg, size_t len)
{
	char *argv[] = { d.bin, "--foreground", "--state-dir", arg, NULL };
	char errf[HX_PATH], *text;
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int st, r;

	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("CKPTD_SOCKET");
	snprintf(errf, sizeof errf, "%s/err", (char *)arg);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 2, errf, O_WRONLY | O_CREAT |
	    O_TRUNC, 0644);
	r = posix_spawn(&pid, d.bin, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -1;
	if (wait_exit(pid, 10000, &st) != 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		snprintf(msg, len, "ckptd kept running");
		return -2;
	}
	text = hx_read_file(errf, NULL);
	snprintf(msg, len, "%s", text ? text : "");
	free(text);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Wait until something listens on path (bound is not enough). */
static int wait_for_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t end = hx_now_ms() + 15000;
	int fd, r;

	if (strlen(path) >= sizeof sa.sun_path)
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	while (hx_now_ms() < end) {
		if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
			return -1;
		r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
		close(fd);
		if (r == 0)
			return 0;
		hx_sleep_ms(20);
	}
	return -1;
}

int main(void)
{
	char msg[1024], want[HX_PATH], dir_b[HX_PATH];
	uid_t ua, ub;
	gid_t ga, gb;
	struct stat st;
	pid_t pid_a;
	int r;

	hx_init(&d);
	if (geteuid() != 0 || d.external) {
		tap_skip("needs root (to run as two users) and a private daemon");
		hx_cleanup(&d);
		return done_testing();
	}
	if (hx_ensure_user(USER_A, &ua, &ga) != 0 ||
	    hx_ensure_user(USER_B, &ub, &gb) != 0)
		bail_out("cannot create the test users");
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	chmod(d.dir, 0755);
	snprintf(tmp_b, sizeof tmp_b, "/tmp/ckptd-%u", (unsigned)ub);
	hx_rmtree(tmp_b);

	/* User A's daemon, its socket open to everybody. */
	hx_path(&d, dir_b, "a");
	mkdir(dir_b, 0755);
	if (chown(dir_b, ua, ga) != 0)
		bail_out("chown: %s", strerror(errno));
	hx_path(&d, sock_a, "a/s.sock");
	hx_path(&d, state_a, "a/state");
	hx_path(&d, log_a, "a/ckptd.log");
	pid_a = (pid_t)hx_as_user(ua, ga, start_a, NULL, msg, sizeof msg);
	if (pid_a <= 0 || wait_for_socket(sock_a) != 0)
		bail_out("user %s's ckptd did not start: %s", USER_A, msg);
	ok(hx_as_user(ua, ga, open_socket_a, NULL, msg, sizeof msg) == 0,
	    "%s runs a daemon and opens its socket to all (%s)", USER_A, msg);
	snprintf(want, sizeof want, "runs as uid %u", (unsigned)ua);

	r = connect_cb(sock_a, msg, sizeof msg);
	is_int(r, CKPT_EACCES, "root's client refuses %s's daemon", USER_A);
	has(msg, want, "... naming the daemon's uid (%s)", msg);
	r = hx_as_user(ub, gb, connect_cb, sock_a, msg, sizeof msg);
	is_int(r, CKPT_EACCES, "%s's client refuses %s's daemon", USER_B,
	    USER_A);
	has(msg, want, "... naming the daemon's uid (%s)", msg);
	r = hx_as_user(ua, ga, connect_cb, sock_a, msg, sizeof msg);
	is_int(r, 0, "%s's own client accepts it (%s)", USER_A, msg);

	/* A daemon running as root is accepted by another user. */
	chmod(d.sock, 0666);
	r = hx_as_user(ub, gb, connect_cb, d.sock, msg, sizeof msg);
	is_int(r, 0, "%s's client accepts the daemon running as root (%s)",
	    USER_B, msg);

	/* A squats B's fallback directory. */
	ok(hx_as_user(ua, ga, squat_cb, NULL, msg, sizeof msg) == 0,
	    "%s creates %s first (%s)", USER_A, tmp_b, msg);
	r = hx_as_user(ub, gb, connect_cb, NULL, msg, sizeof msg);
	is_int(r, CKPT_EACCES, "%s's client refuses the squatted %s", USER_B,
	    tmp_b);
	snprintf(want, sizeof want, "belongs to uid %u", (unsigned)ua);
	has(msg, want, "... saying whose it is (%s)", msg);
	hx_path(&d, dir_b, "b-state");
	mkdir(dir_b, 0755);
	if (chown(dir_b, ub, gb) != 0)
		bail_out("chown: %s", strerror(errno));
	r = hx_as_user(ub, gb, daemon_b_cb, dir_b, msg, sizeof msg);
	ok(r != 0 && r != -2, "%s's daemon refuses to listen there (exit %d)",
	    USER_B, r);
	has(msg, want, "... saying why (%s)", msg);
	snprintf(want, sizeof want, "%s/ckptd.sock", tmp_b);
	ok(!hx_exists(want), "... and put no socket in it");

	/* B's own directory, but mode 0755. */
	hx_rmtree(tmp_b);
	ok(hx_as_user(ub, gb, loose_dir_cb, NULL, msg, sizeof msg) == 0,
	    "%s has a 0755 %s (%s)", USER_B, tmp_b, msg);
	r = hx_as_user(ub, gb, connect_cb, NULL, msg, sizeof msg);
	is_int(r, CKPT_EACCES, "%s's client refuses a directory others can "
	    "read", USER_B);
	has(msg, "mode 0755", "... saying so (%s)", msg);

	/* With the squat gone: a fresh private directory. */
	hx_rmtree(tmp_b);
	r = hx_as_user(ub, gb, connect_cb, NULL, msg, sizeof msg);
	is_int(r, CKPT_ECONN, "%s's client finds no daemon (%s)", USER_B, msg);
	has(msg, tmp_b, "... at its own socket in %s", tmp_b);
	memset(&st, 0, sizeof st);
	r = lstat(tmp_b, &st);
	ok(r == 0 && S_ISDIR(st.st_mode) && st.st_uid == ub &&
	    (st.st_mode & 0777) == 0700, "%s now exists, %s's, mode 0700 "
	    "(mode %04o)", tmp_b, USER_B, (unsigned)(st.st_mode & 07777));

	hx_rmtree(tmp_b);
	kill(pid_a, SIGTERM);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
