/*
 * t_async.c - background failures on a full filesystem, two clients on
 * one root, wait_for_step, is_saving_in_progress, wait_until_finished
 * from many threads.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include "tests.h"

/* ---- wait_until_finished from many threads ---------------------------- */

struct waiter {
	ckpt_manager *m;
	pthread_barrier_t *bar;
	int rc;
	int64_t latest;      /* latest_step right after the wait returned */
	int64_t ms;          /* how long the wait took */
};

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	int64_t t0;

	pthread_barrier_wait(w->bar);
	t0 = hx_now_ms();
	w->rc = ckpt_wait_until_finished(w->m);
	w->ms = hx_now_ms() - t0;
	w->latest = -2;
	ckpt_latest_step(w->m, &w->latest);
	return NULL;
}

/* Run n waiters at once; they all start together. */
static void
run_waiters(ckpt_manager *m, struct waiter *w, int n)
{
	pthread_barrier_t bar;
	pthread_t th[16];
	int i;

	pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
	for (i = 0; i < n; i++) {
		w[i].m = m;
		w[i].bar = &bar;
		if (pthread_create(&th[i], NULL, waiter_main, &w[i]) != 0)
			bail_out("pthread_create");
	}
	pthread_barrier_wait(&bar);
	for (i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&bar);
}

/* ---- ENOSPC on a small tmpfs ------------------------------------------------- */

void
test_enospc(struct hx_daemon *d)
{
	char mnt[HX_PATH], root[HX_PATH], *all;
	ckpt_client *c;
	ckpt_options *o;
	ckpt_manager *m;
	ckpt_step_info *infos = NULL;
	struct waiter w[8];
	size_t n = 0, i;
	int r, saved, found = 0, nospc = 0;

	if (geteuid() != 0) {
		tap_skip("ENOSPC test: mounting a 4 MiB tmpfs needs root "
		    "(CI runs as root)");
		return;
	}
	hx_path(d, mnt, "tmpfs");
	hx_join(root, mnt, "run");
	if (hx_mkdirs(mnt) != 0 ||
	    mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m") != 0) {
		ok(0, "mount a 4 MiB tmpfs on %s: %s", mnt, strerror(errno));
		return;
	}
	ok(1, "4 MiB tmpfs mounted");
	snprintf(d->mnt, sizeof d->mnt, "%s", mnt);

	c = mgr_connect(d);
	o = ckpt_options_new();
	ckpt_options_set_max_to_keep(o, 1);
	m = mgr_open(c, root, o, 1);
	r = mgr_save_wait(m, 1, SV(.bytes = 256 << 10), &saved);
	ok(r == 0 && saved == 1, "step 1 (256 KiB) committed on the tmpfs "
	    "(rc=%d %s)", r, r ? ckpt_manager_errmsg(m) : "");

	/* 6 MiB cannot fit: accepted, then fails in the background. */
	r = mgr_save(m, 2, SV(.bytes = 6 << 20), &saved);
	is_rc(r, 0, m, "save(2) of 6 MiB on a 4 MiB fs is accepted (async)");
	is_int(saved, 1, "save(2) reports saved");

	/* Orbax's _FinalizeThread.join (checkpoint_manager.py): each thread
	 * raises the error once. */
	memset(w, 0, sizeof w);
	run_waiters(m, w, 8);
	for (i = 0; i < 8; i++)
		is_rc(w[i].rc, CKPT_ENOSPC, m,
		    "waiter %zu: wait_until_finished -> CKPT_ENOSPC", i);
	is_rc(ckpt_check_for_errors(m), CKPT_ENOSPC, m,
	    "this thread: check_for_errors reports CKPT_ENOSPC");
	has(ckpt_manager_errmsg(m), "space", "its message mentions space");
	is_rc(ckpt_check_for_errors(m), 0, m,
	    "check_for_errors again: told once per thread");
	is_rc(ckpt_wait_until_finished(m), 0, m,
	    "wait_until_finished after that: clean");
	memset(w, 0, sizeof w);
	run_waiters(m, w, 2);
	is_rc(w[0].rc, CKPT_ENOSPC, m,
	    "a thread that was not told yet still is");

	is_steps(m, "[1]", "the failed step 2 is not in all_steps; step 1 kept");
	all = mgr_disk_all(root);
	is_str(all, "[1]", "on the tmpfs: only step 1, no leftover tmp dir");
	free(all);
	ok_rc(mgr_check_restore(m, -1, 1, NULL), m, "latest is still 1 and restores");

	r = ckpt_list_steps(m, &infos, &n);
	ok_rc(r, m, "ckpt_list_steps");
	for (i = 0; i < n; i++) {
		if (infos[i].step == 2) {
			found = 1;
			is_int(infos[i].state, 2, "list_steps: step 2 has state 2 (failed)");
			has(infos[i].error, "space",
			    "list_steps: step 2's error mentions space");
		}
		if (infos[i].step == 1)
			is_int(infos[i].state, 0, "list_steps: step 1 committed");
	}
	ok(found, "list_steps shows the failed step 2");
	free(infos);

	/* Told once, this thread's next save proceeds (Orbax: the failed
	 * finalize thread is replaced by the new save's). */
	r = mgr_save_wait(m, 3, SV(.bytes = 1024), &saved);
	ok_rc(r, m, "the next save(3) proceeds after the error was raised");
	is_int(saved, 1, "step 3 saved");
	is_steps(m, "[3]", "max_to_keep=1 after step 3 commits: [3]");

	/* Not waited for: the next save raises it, once. */
	r = mgr_save(m, 4, SV(.bytes = 6 << 20), &saved);
	is_rc(r, 0, m, "save(4) of 6 MiB is accepted (async)");
	r = mgr_save(m, 5, SV(.bytes = 1024), &saved);
	is_rc(r, CKPT_ENOSPC, m, "save(5) returns the pending CKPT_ENOSPC");
	is_int(saved, 0, "save(5) was not taken");
	is_rc(ckpt_wait_until_finished(m), 0, m,
	    "wait_until_finished after save raised it: clean");
	r = mgr_save_wait(m, 5, SV(.bytes = 1024), &saved);
	ok_rc(r, m, "save(5) again proceeds");
	is_int(saved, 1, "step 5 saved");
	is_rc(ckpt_check_for_errors(m), 0, m, "no error after the new save");
	memset(w, 0, sizeof w);
	run_waiters(m, w, 2);
	is_rc(w[0].rc, 0, m, "the new save cleared it for other threads too");
	is_steps(m, "[5]", "max_to_keep=1 after step 5 commits: [5]");
	all = mgr_disk_all(root);
	is_str(all, "[5]", "on the tmpfs: only step 5");
	free(all);
	r = ckpt_list_steps(m, &infos, &n);
	for (i = 0; r == 0 && i < n; i++)
		if (infos[i].state == 2)
			nospc++;
	diag("failed records still listed after recovery: %d", nospc);
	free(infos);

	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
	if (umount2(mnt, 0) != 0) {
		diag("umount %s: %s (detaching)", mnt, strerror(errno));
		umount2(mnt, MNT_DETACH);
	}
	d->mnt[0] = '\0';
}

/* ---- two clients on one root ---------------------------------------------------- */

void
test_two_clients(struct hx_daemon *d)
{
	char root[HX_PATH], want[64];
	ckpt_client *c1 = mgr_connect(d), *c2 = mgr_connect(d);
	ckpt_manager *m1, *m2;
	int64_t latest;
	uint64_t s;
	int r, saved;

	snprintf(root, sizeof root, "%s", root_path(d, "shared"));
	m1 = mgr_open(c1, root, NULL, 1);
	m2 = mgr_open(c2, root, NULL, 1);
	is_steps(m2, "[]", "second client: no steps yet");
	for (s = 1; s <= 5; s++) {
		r = mgr_save(m1, s, NULL, &saved);
		ok(r == 0 && saved == 1, "client 1 saves step %llu",
		    (unsigned long long)s);
		ok_rc(ckpt_wait_until_finished(m1), m1, "client 1 waits");
		latest = -2;
		r = ckpt_latest_step(m2, &latest);
		ok_rc(r, m2, "client 2: latest_step");
		is_int(latest, (int64_t)s, "client 2 sees step %llu at once, "
		    "without reload", (unsigned long long)s);
	}
	is_steps(m2, "[1,2,3,4,5]", "client 2: all_steps");
	ok_rc(mgr_check_restore(m2, -1, 5, NULL), m2,
	    "client 2 restores client 1's latest step");
	ok_rc(ckpt_reload(m2), m2, "reload() still works");
	is_steps(m2, "[1,2,3,4,5]", "client 2 after reload");

	/* The other way round. */
	r = mgr_save_wait(m2, 6, NULL, &saved);
	ok(r == 0 && saved == 1, "client 2 saves step 6");
	latest = -2;
	ckpt_latest_step(m1, &latest);
	is_int(latest, 6, "client 1 sees client 2's step 6");
	r = mgr_save(m1, 6, NULL, &saved);
	ok(r == 0 && saved == 0, "client 1: should_save(6) is false now "
	    "(rc=%d saved=%d)", r, saved);
	snprintf(want, sizeof want, "[1,2,3,4,5,6]");
	is_steps(m1, want, "client 1: all_steps");
	ckpt_manager_close(m1);
	ckpt_manager_close(m2);
	ckpt_disconnect(c1);
	ckpt_disconnect(c2);
}

/* ---- wait_for_step ------------------------------------------------------------------ */

struct evaluator {
	ckpt_manager *m;
	int64_t after, timeout_ms;
	int rc;
	int64_t step;
	atomic_int done;
	int64_t done_ms;
};

static void *
evaluator_main(void *arg)
{
	struct evaluator *e = arg;

	e->step = -2;
	e->rc = ckpt_wait_for_step(e->m, e->after, e->timeout_ms, &e->step);
	e->done_ms = hx_now_ms();
	atomic_store(&e->done, 1);
	return NULL;
}

void
test_wait_for_step(struct hx_daemon *d)
{
	char root[HX_PATH];
	ckpt_client *tc = mgr_connect(d), *ec = mgr_connect(d);
	ckpt_manager *tm, *em;
	struct evaluator ev[3];
	pthread_t th[3];
	int64_t t0, el, step, save_ms;
	int r, saved, i;

	snprintf(root, sizeof root, "%s", root_path(d, "eval"));
	tm = mgr_open(tc, root, NULL, 1);
	em = mgr_open(ec, root, NULL, 1);

	/* An evaluator blocked on an empty root is woken by the first step. */
	memset(ev, 0, sizeof ev);
	ev[0].m = em;
	ev[0].after = -1;
	ev[0].timeout_ms = 30000;
	pthread_create(&th[0], NULL, evaluator_main, &ev[0]);
	hx_sleep_ms(300);
	ok(!atomic_load(&ev[0].done), "wait_for_step(after=-1) blocks on "
	    "an empty root");
	r = mgr_save_wait(tm, 10, NULL, &saved);
	ok(r == 0 && saved == 1, "trainer commits step 10");
	pthread_join(th[0], NULL);
	is_rc(ev[0].rc, 0, em, "evaluator woken");
	is_int(ev[0].step, 10, "evaluator got step 10");

	/* Three evaluators wait for a step > 10; the trainer commits 11. */
	memset(ev, 0, sizeof ev);
	for (i = 0; i < 3; i++) {
		ev[i].m = em;
		ev[i].after = 10;
		ev[i].timeout_ms = 30000;
		pthread_create(&th[i], NULL, evaluator_main, &ev[i]);
	}
	hx_sleep_ms(300);
	for (i = 0; i < 3; i++)
		ok(!atomic_load(&ev[i].done), "evaluator %d blocks until a "
		    "step > 10 commits", i);
	/* A pending wait must not block other requests on the connection. */
	t0 = hx_now_ms();
	is_steps(em, "[10]", "all_steps on the waiting connection");
	el = hx_now_ms() - t0;
	ok(el < 2000, "all_steps answered while waits are pending (%lld ms)",
	    (long long)el);
	save_ms = hx_now_ms();
	r = mgr_save(tm, 11, NULL, &saved);
	ok(r == 0 && saved == 1, "trainer saves step 11");
	ok_rc(ckpt_wait_until_finished(tm), tm, "step 11 committed");
	for (i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		is_rc(ev[i].rc, 0, em, "evaluator %d woken", i);
		is_int(ev[i].step, 11, "evaluator %d got step 11", i);
		ok(ev[i].done_ms >= save_ms, "evaluator %d woke after the "
		    "save started", i);
	}

	/* A step > after already exists: no wait. */
	t0 = hx_now_ms();
	step = -2;
	r = ckpt_wait_for_step(em, 5, 5000, &step);
	el = hx_now_ms() - t0;
	is_rc(r, 0, em, "wait_for_step(after=5) with 10 and 11 committed");
	ok(step > 5, "returns a committed step > 5 (%lld)", (long long)step);
	ok(el < 1000, "without waiting (%lld ms)", (long long)el);

	/* Timeout. */
	t0 = hx_now_ms();
	step = -2;
	r = ckpt_wait_for_step(em, 11, 300, &step);
	el = hx_now_ms() - t0;
	is_rc(r, CKPT_ETIMEDOUT, em, "wait_for_step(after=11, 300 ms) "
	    "times out with CKPT_ETIMEDOUT");
	ok(el >= 250 && el < 5000, "after about 300 ms (%lld ms)",
	    (long long)el);

	/* The connection is still usable after a timeout. */
	is_steps(em, "[10,11]", "all_steps after the timeout");
	ckpt_manager_close(tm);
	ckpt_manager_close(em);
	ckpt_disconnect(tc);
	ckpt_disconnect(ec);
}

/* ---- is_saving_in_progress ------------------------------------------------------------ */

/* The daemon's worker threads (named ckptd-w<N>), stopped with ptrace
 * while its event loop goes on: a save accepted meanwhile stays in flight,
 * however fast the disk, until workers_release(). */
struct held {
	pid_t tids[256];
	int n;
};

static int
workers_hold(pid_t pid, struct held *h)
{
	char path[64], comm[32];
	struct dirent *de;
	DIR *dir;
	int fd, status;
	ssize_t len;

	h->n = 0;
	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	if ((dir = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL && h->n < 256) {
		pid_t tid = (pid_t)atoi(de->d_name);

		if (tid <= 0)
			continue;
		snprintf(path, sizeof path, "/proc/%d/task/%d/comm", (int)pid,
		    (int)tid);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		len = read(fd, comm, sizeof comm - 1);
		close(fd);
		if (len <= 0 || strncmp(comm, "ckptd-w", 7) != 0)
			continue;
		if (ptrace(PTRACE_SEIZE, tid, 0, 0) != 0)
			break;
		h->tids[h->n++] = tid;
		if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0 ||
		    waitpid(tid, &status, __WALL) != tid)
			break;
	}
	closedir(dir);
	return h->n > 0 && de == NULL ? 0 : -1;
}

static void
workers_release(struct held *h)
{
	int i;

	for (i = 0; i < h->n; i++)
		ptrace(PTRACE_DETACH, h->tids[i], 0, 0);
	h->n = 0;
}

void
test_in_progress(struct hx_daemon *d)
{
	char root[HX_PATH];
	ckpt_client *c = mgr_connect(d);
	ckpt_step_info *infos = NULL;
	ckpt_manager *m;
	size_t n = 0;
	struct held held;
	int r, saved, p;
	int64_t t0;

	snprintf(root, sizeof root, "%s", root_path(d, "progress"));
	m = mgr_open(c, root, NULL, 1);
	is_int(ckpt_is_saving_in_progress(m), 0, "nothing in progress at first");
	r = workers_hold(d->pid, &held);
	ok(r == 0, "the daemon's %d workers held", held.n);
	t0 = hx_now_ms();
	r = mgr_save(m, 1, SV(.bytes = (size_t)256 << 20), &saved);
	ok(r == 0 && saved == 1, "save(1) of 256 MiB accepted (%lld ms)",
	    (long long)(hx_now_ms() - t0));
	p = ckpt_is_saving_in_progress(m);
	is_int(p, 1, "is_saving_in_progress is 1 while the save is in flight");
	is_steps(m, "[]", "step 1 is not among the steps while in flight");
	workers_release(&held);
	t0 = hx_now_ms();
	ok_rc(ckpt_wait_until_finished(m), m, "wait_until_finished");
	diag("wait took %lld ms", (long long)(hx_now_ms() - t0));
	is_int(ckpt_is_saving_in_progress(m), 0, "is_saving_in_progress is 0 after wait");
	is_steps(m, "[1]", "step 1 committed");
	r = ckpt_list_steps(m, &infos, &n);
	ok(r == 0 && n == 1 && infos[0].state == 0 &&
	    infos[0].bytes >= (uint64_t)256 << 20,
	    "list_steps: step 1 committed with its size (%llu bytes)",
	    n ? (unsigned long long)infos[0].bytes : 0ULL);
	free(infos);
	ckpt_manager_close(m);

	/* ContinuousCheckpointingPolicy: should_save is false while a save
	 * is in flight (Orbax evaluates it before waiting). */
	{
		ckpt_options *o = ckpt_options_new();
		int s = -1;
		int64_t latest = -2;

		is_int(ckpt_options_save_policy_add(o, CKPT_SAVE_CONTINUOUS, 0, NULL,
		    0, 0), 0, "Continuous(minimum_interval_secs=0) built");
		snprintf(root, sizeof root, "%s", root_path(d, "continuous"));
		m = mgr_open(c, root, o, 1);
		ok(workers_hold(d->pid, &held) == 0, "workers held");
		r = mgr_save(m, 1, SV(.bytes = (size_t)32 << 20), &saved);
		ok(r == 0 && saved == 1, "Continuous: save(1) of 32 MiB accepted");
		is_int(ckpt_is_saving_in_progress(m), 1, "step 1 in flight");
		r = ckpt_should_save(m, 2, &s);
		ok_rc(r, m, "should_save(2)");
		is_int(s, 0, "Continuous: should_save(2) is 0 while step 1 is in "
		    "flight");
		if (s != 0)     /* save(2) would wait for step 1: fail, not hang */
			workers_release(&held);
		r = mgr_save(m, 2, NULL, &saved);
		ok_rc(r, m, "Continuous: save(2) while step 1 is in flight");
		is_int(saved, 0, "Continuous: save(2) declined (saved=0) because "
		    "a save was in progress");
		is_int(ckpt_is_saving_in_progress(m), 1, "step 1 still in flight");
		workers_release(&held);
		ok_rc(ckpt_wait_until_finished(m), m, "wait");
		is_steps(m, "[1]", "Continuous: step 1 committed, step 2 not saved");
		s = -1;
		ckpt_should_save(m, 3, &s);
		is_int(s, 1, "Continuous: should_save(3) is 1 once idle");
		ckpt_manager_close(m);
		ckpt_options_free(o);

		/* enable_async_checkpointing=False: save returns committed. */
		o = ckpt_options_new();
		is_int(ckpt_options_set_async(o, 0), 0, "async off");
		snprintf(root, sizeof root, "%s", root_path(d, "sync"));
		m = mgr_open(c, root, o, 1);
		r = mgr_save(m, 5, SV(.bytes = (size_t)32 << 20), &saved);
		ok(r == 0 && saved == 1, "sync save(5) of 32 MiB");
		is_int(ckpt_is_saving_in_progress(m), 0,
		    "sync save: nothing in progress when save returns");
		ckpt_latest_step(m, &latest);
		is_int(latest, 5, "sync save: step 5 committed when save returns");
		ckpt_manager_close(m);
		ckpt_options_free(o);
	}
	ckpt_disconnect(c);
}

/* ---- wait_until_finished from 8 threads --------------------------------------------------- */

void
test_wait_threads(struct hx_daemon *d)
{
	char root[HX_PATH];
	ckpt_client *c = mgr_connect(d);
	ckpt_manager *m;
	struct waiter w[8];
	int r, saved, i;
	int64_t t0;

	snprintf(root, sizeof root, "%s", root_path(d, "waiters"));
	m = mgr_open(c, root, NULL, 1);
	r = mgr_save(m, 1, SV(.bytes = (size_t)128 << 20), &saved);
	ok(r == 0 && saved == 1, "save(1) of 128 MiB accepted");
	memset(w, 0, sizeof w);
	run_waiters(m, w, 8);
	for (i = 0; i < 8; i++) {
		is_rc(w[i].rc, 0, m, "thread %d: wait_until_finished -> 0", i);
		is_int(w[i].latest, 1, "thread %d: step 1 committed when its wait "
		    "returned", i);
	}
	is_int(ckpt_is_saving_in_progress(m), 0, "nothing in progress");

	/* Nothing pending: every waiter returns at once. */
	memset(w, 0, sizeof w);
	t0 = hx_now_ms();
	run_waiters(m, w, 8);
	for (i = 0; i < 8; i++)
		is_rc(w[i].rc, 0, m, "idle thread %d: wait_until_finished -> 0",
		    i);
	ok(hx_now_ms() - t0 < 2000, "idle waits return promptly");

	/* Saves and waits interleaved from several threads. */
	r = mgr_save(m, 2, SV(.bytes = (size_t)32 << 20), &saved);
	ok(r == 0 && saved == 1, "save(2) accepted");
	memset(w, 0, sizeof w);
	run_waiters(m, w, 8);
	for (i = 0; i < 8; i++)
		ok(w[i].rc == 0 && w[i].latest == 2, "thread %d: step 2 "
		    "committed (rc=%d latest=%lld)", i, w[i].rc,
		    (long long)w[i].latest);
	is_steps(m, "[1,2]", "[1,2]");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}
