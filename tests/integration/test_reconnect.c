/*
 * test_reconnect.c - a trainer rides out ckptd restarts.
 *
 * A trainer thread saves steps (async, a few MiB each), waits for them
 * now and then, and a watcher thread sits in wait_for_step, while the
 * main thread restarts ckptd under them: SIGTERM (the daemon drains and
 * exits) and SIGKILL (saves die half-written), between calls and during
 * them. Neither thread reconnects or reopens anything itself; every call
 * must succeed, and at the end every step is listed and restores byte for
 * byte. Then: a save cut off by SIGKILL while the daemon writes it is
 * sent again from the staging buffer and commits; and when the daemon
 * stays away the client gives up after its limit with CKPT_ECONN and a
 * message that says so. And when only the connection breaks (the daemon
 * lives on and is still writing the save), the client waits for that save
 * instead of sending it again.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

#define STEPS 40
#define LEAF_BYTES (2u << 20)
#define LEAVES 2

static struct hx_daemon d;
static char root[HX_PATH];

struct trainer {
	ckpt_manager *m;
	int errors;
	char first_err[512];
	int done;                   /* atomic: the trainer finished */
	int64_t last_seen;          /* watcher: latest step seen */
	int watch_errors;
	char watch_err[512];
};

static void fill(void *buf, size_t n, uint64_t step, int leaf)
{
	hx_fill(buf, n, step * 1000 + (uint64_t)leaf);
}

static int save_step(ckpt_manager *m, uint64_t step, void **bufs,
    size_t bytes)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int64_t shape[1] = { (int64_t)(bytes / 4) };
	char name[32];
	int i, r, saved = 0;

	for (i = 0; i < LEAVES; i++) {
		fill(bufs[i], bytes, step, i);
		snprintf(name, sizeof name, "layer%d/w", i);
		ckpt_tree_add_array(t, name, CKPT_F32, 1, shape, bufs[i], bytes);
	}
	ckpt_tree_add_int(t, "step", (int64_t)step);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, step, a, &saved);
	if (r == 0 && !saved)
		r = CKPT_EINTERNAL;
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return r;
}

static int step_intact(ckpt_manager *m, uint64_t step, size_t bytes)
{
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	char name[32];
	void *want = malloc(bytes);
	int i, good = want != NULL;
	long k;

	if (!good || ckpt_restore(m, (int64_t)step, NULL, &res) != 0) {
		free(want);
		return 0;
	}
	t = ckpt_restored_item_tree(res, 0);
	for (i = 0; i < LEAVES && good; i++) {
		fill(want, bytes, step, i);
		snprintf(name, sizeof name, "layer%d/w", i);
		k = t ? ckpt_tree_find(t, name) : -1;
		good = k >= 0 && ckpt_tree_leaf(t, (size_t)k, &lf) == 0 &&
		    lf.nbytes == bytes && memcmp(lf.data, want, bytes) == 0;
	}
	ckpt_restored_free(res);
	free(want);
	return good;
}

static void note(struct trainer *tr, ckpt_manager *m, const char *what,
    uint64_t step, int r)
{
	if (r == 0)
		return;
	if (tr->errors++ == 0)
		snprintf(tr->first_err, sizeof tr->first_err, "%s %llu: %s: %s",
		    what, (unsigned long long)step, ckpt_strerror(r),
		    ckpt_manager_errmsg(m));
}

static void *trainer_main(void *arg)
{
	struct trainer *tr = arg;
	void *bufs[LEAVES];
	uint64_t step;
	int i;

	for (i = 0; i < LEAVES; i++)
		bufs[i] = malloc(LEAF_BYTES);
	for (step = 1; step <= STEPS; step++) {
		note(tr, tr->m, "save", step, save_step(tr->m, step, bufs,
		    LEAF_BYTES));
		if (step % 4 == 0)
			note(tr, tr->m, "wait_until_finished", step,
			    ckpt_wait_until_finished(tr->m));
		hx_sleep_ms(40);        /* "training" between saves */
	}
	note(tr, tr->m, "final wait_until_finished", STEPS,
	    ckpt_wait_until_finished(tr->m));
	for (i = 0; i < LEAVES; i++)
		free(bufs[i]);
	__atomic_store_n(&tr->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Another client blocks in wait_for_step across the restarts. */
static void *watcher_main(void *arg)
{
	struct trainer *tr = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int64_t after = 0, got;
	int r;

	if (ckpt_connect(d.sock, &c) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0) {
		tr->watch_errors++;
		snprintf(tr->watch_err, sizeof tr->watch_err, "connect: %s",
		    ckpt_connect_errmsg());
		ckpt_disconnect(c);
		return NULL;
	}
	while (after < STEPS) {
		r = ckpt_wait_for_step(m, after, 120000, &got);
		if (r != 0) {
			if (tr->watch_errors++ == 0)
				snprintf(tr->watch_err, sizeof tr->watch_err,
				    "wait_for_step(after %lld): %s: %s",
				    (long long)after, ckpt_strerror(r),
				    ckpt_manager_errmsg(m));
			break;
		}
		after = got;
		tr->last_seen = got;
	}
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return NULL;
}

static void restarts_under_a_trainer(void)
{
	struct trainer tr = { 0 };
	ckpt_client *c = NULL;
	pthread_t th, wh;
	uint64_t step;
	int round = 0, term = 0, kills = 0, bad = 0;
	ckpt_options *o = ckpt_options_new();

	hx_path(&d, root, "train");
	ckpt_options_set_create(o, 1);
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, root, o, &tr.m), c,
	    "trainer opens its manager"))
		bail_out("cannot open the root");
	ckpt_options_free(o);
	pthread_create(&th, NULL, trainer_main, &tr);
	pthread_create(&wh, NULL, watcher_main, &tr);

	/* Alternate SIGTERM and SIGKILL, at times that fall between calls
	 * and inside them (saves of a few MiB, waits, wait_for_step). */
	while (!__atomic_load_n(&tr.done, __ATOMIC_ACQUIRE) && round < 8) {
		hx_sleep_ms(150 + 90 * (round % 3));
		if (__atomic_load_n(&tr.done, __ATOMIC_ACQUIRE))
			break;
		if (round % 2 == 0) {
			if (hx_restart(&d) != 0)
				bail_out("ckptd did not restart after SIGTERM");
			term++;
		} else {
			if (hx_kill9_restart(&d) != 0)
				bail_out("ckptd did not restart after SIGKILL");
			kills++;
		}
		round++;
	}
	diag("restarted ckptd %d times with SIGTERM and %d with SIGKILL "
	    "under the trainer", term, kills);
	pthread_join(th, NULL);
	pthread_join(wh, NULL);
	ok(term >= 2 && kills >= 2, "ckptd was restarted both ways while the "
	    "trainer ran (%d SIGTERM, %d SIGKILL)", term, kills);
	is_int(tr.errors, 0, "every trainer call succeeded across the "
	    "restarts%s%s", tr.errors ? ": " : "", tr.first_err);
	is_int(tr.watch_errors, 0, "wait_for_step survived the restarts%s%s",
	    tr.watch_errors ? ": " : "", tr.watch_err);
	is_int(tr.last_seen, STEPS, "the watcher saw the last step");
	for (step = 1; step <= STEPS; step++)
		if (!step_intact(tr.m, step, LEAF_BYTES)) {
			if (bad++ == 0)
				diag("step %llu: %s", (unsigned long long)step,
				    ckpt_manager_errmsg(tr.m));
		}
	is_int(bad, 0, "all %d steps are listed and restore byte for byte",
	    STEPS);
	{
		ckpt_client_info ci;

		ok_call(ckpt_client_info_get(c, &ci), c, "client info");
		/* restarts closer together than the backoff count once */
		ok(ci.reconnects >= 1 && ci.reconnects <= (unsigned)(term +
		    kills), "the client reconnected (%u times for %d "
		    "restarts)", ci.reconnects, term + kills);
		is_int(ci.saves_failed, 0, "no save in flight was lost");
		diag("saves in flight at a restart: %u found committed, %u "
		    "sent again", ci.saves_found_committed, ci.saves_resent);
		ok(ci.protocol_version >= 1, "protocol version %u in use",
		    ci.protocol_version);
	}
	ok_call(ckpt_manager_close(tr.m), c, "close");
	ckpt_disconnect(c);
}

/* SIGKILL while the daemon writes a large save: the client sends it again
 * from its staging buffer and the step commits. */
static void resend_after_kill(void)
{
	char dir[HX_PATH], tmp[HX_PATH];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	size_t bytes = 64u << 20;
	void *bufs[LEAVES];
	int64_t t0;
	int i, seen = 0;

	hx_path(&d, dir, "resend");
	hx_path(&d, tmp, "resend/7.ckptd-tmp");
	for (i = 0; i < LEAVES; i++)
		bufs[i] = malloc(bytes);
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, dir, NULL, &m), c, "open"))
		bail_out("cannot open");
	ok_call(save_step(m, 7, bufs, bytes), c, "save of 128 MiB accepted");
	t0 = hx_now_ms();
	while (hx_now_ms() - t0 < 20000 && !(seen = hx_exists(tmp)))
		usleep(200);
	hx_kill9(&d);
	diag("killed with the step %s", seen ? "being written" : "not seen "
	    "in progress");
	if (hx_start(&d) != 0)
		bail_out("ckptd did not restart");
	ok_call(ckpt_wait_until_finished(m), c, "the save completes after "
	    "the restart");
	ok(step_intact(m, 7, bytes), "the step restores byte for byte");
	ok(!hx_exists(tmp), "no tmp dir of it is left");
	{
		ckpt_client_info ci;

		ok_call(ckpt_client_info_get(c, &ci), c, "client info");
		if (seen)
			is_int(ci.saves_resent, 1, "the client says it sent the "
			    "save again");
		else
			is_int(ci.saves_resent + ci.saves_found_committed, 1,
			    "the client says it sent the save again or found "
			    "it committed");
		is_int(ci.saves_failed, 0, "... and lost none");
	}
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	for (i = 0; i < LEAVES; i++)
		free(bufs[i]);
}

/*
 * The daemon commits a step but dies before the client hears SaveDone:
 * after the restart the client finds the step listed and reports it
 * committed, without sending it again. The daemon is stopped the moment
 * the step directory appears (the commit then still fsyncs the root and
 * sends SaveDone); a few tries catch that window.
 */
static void found_committed_after_kill(void)
{
	char dir[HX_PATH], fin[HX_PATH];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_client_info before, after;
	size_t bytes = 8u << 20;
	void *bufs[LEAVES];
	int i, tries, hit = 0, errors = 0;
	uint64_t step;
	int64_t t0;

	hx_path(&d, dir, "committed");
	for (i = 0; i < LEAVES; i++)
		bufs[i] = malloc(bytes);
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, dir, NULL, &m), c, "open"))
		bail_out("cannot open");
	for (tries = 0; tries < 30 && !hit; tries++) {
		step = 100 + (uint64_t)tries;
		hx_path(&d, fin, "committed/%llu", (unsigned long long)step);
		ckpt_client_info_get(c, &before);
		if (save_step(m, step, bufs, bytes) != 0) {
			errors++;
			break;
		}
		t0 = hx_now_ms();
		while (!hx_exists(fin) && hx_now_ms() - t0 < 20000)
			;
		kill(d.pid, SIGSTOP);
		hx_kill9(&d);
		if (hx_start(&d) != 0)
			bail_out("ckptd did not restart");
		if (ckpt_wait_until_finished(m) != 0 ||
		    !step_intact(m, step, bytes)) {
			errors++;
			diag("step %llu: %s", (unsigned long long)step,
			    ckpt_manager_errmsg(m));
		}
		ckpt_client_info_get(c, &after);
		if (after.saves_found_committed > before.saves_found_committed)
			hit = 1;
		if (after.saves_resent > before.saves_resent)
			diag("try %d: the step was sent again", tries);
	}
	diag("%d tries to kill ckptd between a commit and its SaveDone",
	    tries);
	is_int(errors, 0, "every step committed and restores byte for byte");
	ok(hit, "a step committed before the kill is reported committed");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	for (i = 0; i < LEAVES; i++)
		free(bufs[i]);
}

/* Shut down every connection of this process to the daemon's socket (as a
 * broken connection looks to the client): how many were cut. */
static int cut_connections(void)
{
	struct sockaddr_un sa;
	struct dirent *de;
	socklen_t len;
	DIR *dir;
	int fd, n = 0;

	if ((dir = opendir("/proc/self/fd")) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL) {
		fd = atoi(de->d_name);
		if (de->d_name[0] == '.' || fd == dirfd(dir))
			continue;
		len = sizeof sa;
		memset(&sa, 0, sizeof sa);
		if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0 ||
		    sa.sun_family != AF_UNIX || strcmp(sa.sun_path, d.sock) != 0)
			continue;
		if (shutdown(fd, SHUT_RDWR) == 0)
			n++;
	}
	closedir(dir);
	return n;
}

/*
 * The connection breaks while the same daemon writes a save: the daemon
 * lists the step as pending, and the client waits for it and finds it
 * committed. Sending it again would collide with the save in progress
 * (its tmp dir is locked) or with its commit ("already exists").
 */
static void connection_breaks_daemon_lives(void)
{
	char dir[HX_PATH], tmp[HX_PATH];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_client_info before, after;
	size_t bytes = 64u << 20;
	void *bufs[LEAVES];
	pid_t pid = d.pid;
	int64_t t0;
	int i, seen = 0, cut;

	hx_path(&d, dir, "cut");
	hx_path(&d, tmp, "cut/3.ckptd-tmp");
	for (i = 0; i < LEAVES; i++)
		bufs[i] = malloc(bytes);
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, dir, NULL, &m), c, "open"))
		bail_out("cannot open");
	ckpt_client_info_get(c, &before);
	ok_call(save_step(m, 3, bufs, bytes), c, "save of 128 MiB accepted");
	t0 = hx_now_ms();
	while (hx_now_ms() - t0 < 20000 && !(seen = hx_exists(tmp)))
		usleep(200);
	cut = cut_connections();
	is_int(cut, 1, "the client's connection is cut (the daemon lives)");
	diag("cut with the step %s", seen ? "being written" : "not seen in "
	    "progress");
	ok_call(ckpt_wait_until_finished(m), c, "the save completes");
	ok(step_intact(m, 3, bytes), "the step restores byte for byte");
	ok(!hx_exists(tmp), "no tmp dir of it is left");
	ckpt_client_info_get(c, &after);
	ok(after.reconnects > before.reconnects, "the client reconnected");
	is_int(after.saves_failed - before.saves_failed, 0, "no save lost");
	if (seen)
		is_int(after.saves_resent - before.saves_resent, 0, "the save "
		    "in progress was waited for, not sent again");
	else
		is_int(after.saves_resent + after.saves_found_committed -
		    before.saves_resent - before.saves_found_committed, 1,
		    "the save was sent again or found committed");
	is_int(d.pid, pid, "the daemon is the same one");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	for (i = 0; i < LEAVES; i++)
		free(bufs[i]);
}

/* A manager the new daemon cannot open again (its root moved away while
 * ckptd was down) fails with the reason, and works again once the root
 * is back: the client re-opens it on the next call. */
static void reopen_fails_then_recovers(void)
{
	char dir[HX_PATH], moved[HX_PATH];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o = ckpt_options_new();
	int64_t st = -1;
	int r;

	hx_path(&d, dir, "movable");
	hx_path(&d, moved, "movable.away");
	hx_mkdirs(dir);
	ckpt_options_set_create(o, 0);
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, dir, o, &m), c, "open an existing "
	    "root (create off)"))
		bail_out("cannot open");
	ckpt_options_free(o);
	hx_kill9(&d);
	if (rename(dir, moved) != 0)
		bail_out("rename: %s", strerror(errno));
	if (hx_start(&d) != 0)
		bail_out("ckptd did not restart");
	r = ckpt_latest_step(m, &st);
	ok(r != 0, "with its root gone, the manager's call fails (%s)",
	    ckpt_strerror(r));
	has(ckpt_manager_errmsg(m), "could not re-open", "... saying the "
	    "manager could not be re-opened (%s)", ckpt_manager_errmsg(m));
	if (rename(moved, dir) != 0)
		bail_out("rename back: %s", strerror(errno));
	r = ckpt_latest_step(m, &st);
	ok_call(r, c, "with the root back, the manager works again");
	is_int(st, -1, "... and lists the empty root");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* Something that accepts connections but never answers takes the
 * socket: the client does not hang on it, and gives up at the limit. */
static void silent_listener(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int64_t t0, el, st;
	int fd, r;

	setenv("CKPT_RECONNECT_TIMEOUT_MS", "1500", 1);
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, root, NULL, &m), c, "open"))
		bail_out("cannot open");
	unsetenv("CKPT_RECONNECT_TIMEOUT_MS");
	hx_kill9(&d);
	unlink(d.sock);
	if (strlen(d.sock) >= sizeof sa.sun_path)
		bail_out("socket path too long");
	memcpy(sa.sun_path, d.sock, strlen(d.sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    listen(fd, 16) != 0)
		bail_out("silent listener: %s", strerror(errno));
	t0 = hx_now_ms();
	r = ckpt_latest_step(m, &st);
	el = hx_now_ms() - t0;
	is_int(r, CKPT_ECONN, "a listener that never answers: CKPT_ECONN");
	has(ckpt_manager_errmsg(m), "did not answer", "... saying it did not "
	    "answer (%s)", ckpt_manager_errmsg(m));
	ok(el < 20000, "... without hanging (%lld ms)", (long long)el);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	close(fd);
	unlink(d.sock);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not restart");
}

/* Closing a manager and disconnecting while the client is reconnecting
 * (ckptd gone, the reader backing off) return at once: they do not wait
 * for the daemon to come back. */
static void disconnect_while_reconnecting(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int64_t t0, el;

	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, root, NULL, &m), c, "open"))
		bail_out("cannot open");
	hx_kill9(&d);
	hx_sleep_ms(300);               /* the reader is in its backoff */
	t0 = hx_now_ms();
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	el = hx_now_ms() - t0;
	ok(el < 5000, "close and disconnect while reconnecting return at once "
	    "(%lld ms)", (long long)el);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not restart");
}

/* The daemon stays away: calls fail after the limit, clearly. */
static void gives_up(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int64_t t0, el, st;
	int r;

	setenv("CKPT_RECONNECT_TIMEOUT_MS", "1500", 1);
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, root, NULL, &m), c, "open"))
		bail_out("cannot open");
	unsetenv("CKPT_RECONNECT_TIMEOUT_MS");
	is_int(hx_stop(&d), 0, "ckptd stops on SIGTERM");
	t0 = hx_now_ms();
	r = ckpt_latest_step(m, &st);
	el = hx_now_ms() - t0;
	is_int(r, CKPT_ECONN, "with no daemon, a call fails with CKPT_ECONN");
	has(ckpt_manager_errmsg(m), "gave up reconnecting", "... saying that "
	    "reconnecting gave up");
	ok(el >= 1000 && el < 20000, "... after about the limit (%lld ms)",
	    (long long)el);
	is_int(ckpt_latest_step(m, &st), CKPT_ECONN, "the client stays down");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not restart");
}

int main(void)
{
	hx_init(&d);
	if (d.external) {
		tap_skip("needs a private daemon to restart (CKPTD_TEST_SOCKET "
		    "set)");
		hx_cleanup(&d);
		return done_testing();
	}
	signal(SIGPIPE, SIG_IGN);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	restarts_under_a_trainer();
	resend_after_kill();
	found_committed_after_kill();
	connection_breaks_daemon_lives();
	reopen_fails_then_recovers();
	silent_listener();
	disconnect_while_reconnecting();
	gives_up();
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
