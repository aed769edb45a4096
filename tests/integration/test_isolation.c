/*
 * test_isolation.c - a root is one directory, whoever names it and however:
 *
 *  - FIFOs in place of a step's files (_CHECKPOINT_METADATA, _METADATA, a
 *    safetensors file) never block a worker: the owner gets a clear error,
 *    another user's open/save/restore proceed promptly, and SIGTERM still
 *    exits promptly;
 *  - a root removed and re-created at the same path is a new root: the
 *    same user's new manager sees it empty and saves into it; in a sticky
 *    shared directory, user A re-creating user B's deleted path (0700)
 *    sees none of B's steps, metrics or timestamps, and A's saves are
 *    written;
 *  - cleanup_tmp_directories from a manager with another step_prefix never
 *    removes the tmp dir of a save in flight on the same directory.
 *
 * Two real Unix users: root ("A") and a second user created with useradd
 * ("B"); needs root.
 */
#include <errno.h>
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include "harness.h"

#define TEST_USER "ckpttest"
#define TIMED_OUT (-100000)

static struct hx_daemon d;
static uid_t buid;
static gid_t bgid;
static char shared[HX_PATH];

/* ---- running clients in children, with a deadline ------------------------ */

struct child {
	pid_t pid;
	int fd;
};

/* Fork; the child becomes uid/gid (unless uid is 0) and sends fn's value
 * and message through a pipe. */
static struct child spawn(uid_t uid, gid_t gid, int (*fn)(void *, char *,
    size_t), void *arg)
{
	struct child ch = { -1, -1 };
	int p[2];

	fflush(stdout);
	if (pipe(p) != 0)
		return ch;
	if ((ch.pid = fork()) < 0) {
		close(p[0]);
		close(p[1]);
		return ch;
	}
	if (ch.pid == 0) {
		char m[1024] = "";
		int v;

		close(p[0]);
		if (uid != 0 && (setgroups(0, NULL) != 0 || setgid(gid) != 0 ||
		    setuid(uid) != 0)) {
			snprintf(m, sizeof m, "cannot become %u: %s",
			    (unsigned)uid, strerror(errno));
			v = INT32_MIN;
		} else {
			v = fn(arg, m, sizeof m);
		}
		if (write(p[1], &v, sizeof v) != sizeof v ||
		    write(p[1], m, strlen(m) + 1) < 0)
			_exit(2);
		_exit(0);
	}
	close(p[1]);
	ch.fd = p[0];
	return ch;
}

/* Wait until deadline_ms (hx_now_ms clock) for the child's value; kill it
 * and return TIMED_OUT past the deadline. */
static int collect(struct child *ch, int64_t deadline_ms, char *msg,
    size_t msglen)
{
	struct pollfd pf;
	int v = INT32_MIN, st;
	ssize_t n;

	msg[0] = '\0';
	if (ch->pid < 0)
		return INT32_MIN;
	pf.fd = ch->fd;
	pf.events = POLLIN;
	for (;;) {
		int64_t left = deadline_ms - hx_now_ms();

		if (left <= 0) {
			kill(ch->pid, SIGKILL);
			v = TIMED_OUT;
			snprintf(msg, msglen, "timed out");
			break;
		}
		if (poll(&pf, 1, (int)(left > 1000 ? 1000 : left)) > 0) {
			if (read(ch->fd, &v, sizeof v) != sizeof v)
				v = INT32_MIN;
			else if ((n = read(ch->fd, msg, msglen - 1)) >= 0)
				msg[n] = '\0';
			break;
		}
	}
	close(ch->fd);
	while (waitpid(ch->pid, &st, 0) < 0 && errno == EINTR)
		;
	ch->pid = -1;
	return v;
}

/* 1 once the child has sent its value (collect() then returns at once). */
static int finished(struct child *ch)
{
	struct pollfd pf = { ch->fd, POLLIN, 0 };

	return ch->pid < 0 || poll(&pf, 1, 0) > 0;
}

static int run_as(uid_t uid, gid_t gid, int (*fn)(void *, char *, size_t),
    void *arg, int secs, char *msg, size_t msglen)
{
	struct child ch = spawn(uid, gid, fn, arg);

	return collect(&ch, hx_now_ms() + secs * 1000, msg, msglen);
}

/* ---- client operations (run in children) ------------------------------------ */

struct op {
	char root[HX_PATH];
	const char *prefix;
	int cleanup;
	int64_t step;           /* save/restore this step */
	int nsteps;             /* save steps 1..nsteps */
	int verify;
	size_t bytes;           /* array bytes per save */
	int create;
	int hold_s;             /* op_hold: keep the manager this long */
};

static ckpt_options *op_options(const struct op *o)
{
	ckpt_options *opt = ckpt_options_new();

	if (o->prefix)
		ckpt_options_set_step_prefix(opt, o->prefix);
	if (o->cleanup)
		ckpt_options_set_cleanup_tmp_directories(opt, 1);
	ckpt_options_set_create(opt, o->create);
	return opt;
}

static int open_mgr(const struct op *o, ckpt_client **c, ckpt_manager **m,
    char *msg, size_t msglen)
{
	ckpt_options *opt = op_options(o);
	int r;

	*c = NULL;
	*m = NULL;
	r = ckpt_connect(d.sock, c);
	if (r == 0)
		r = ckpt_manager_open(*c, o->root, opt, m);
	if (r != 0)
		snprintf(msg, msglen, "open %s: %s", o->root, *c ?
		    ckpt_client_errmsg(*c) : ckpt_connect_errmsg());
	ckpt_options_free(opt);
	return r;
}

static int save_one(ckpt_manager *m, uint64_t step, size_t bytes, int *saved)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int64_t shape[1] = { (int64_t)(bytes / 4) };
	char metrics[64];
	void *buf = calloc(1, bytes ? bytes : 4);
	int r;

	hx_fill(buf, bytes, step);
	ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, buf, bytes);
	ckpt_tree_add_int(t, "n", (int64_t)step);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	snprintf(metrics, sizeof metrics, "{\"loss\": %d.5}", (int)step);
	ckpt_save_args_set_metrics(a, metrics);
	r = ckpt_save(m, step, a, saved);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	free(buf);
	return r;
}

/* Save steps 1..nsteps (or `step` alone) and wait. */
static int op_save(void *arg, char *msg, size_t msglen)
{
	struct op *o = arg;
	ckpt_client *c;
	ckpt_manager *m;
	int r, saved = 1, s, first = o->nsteps ? 1 : (int)o->step;
	int last = o->nsteps ? o->nsteps : (int)o->step;

	if ((r = open_mgr(o, &c, &m, msg, msglen)) != 0)
		goto out;
	for (s = first; s <= last && r == 0 && saved; s++)
		r = save_one(m, (uint64_t)s, o->bytes, &saved);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	if (r == 0 && !saved)
		r = 1;
	snprintf(msg, msglen, "save: %s%s", r ? ckpt_manager_errmsg(m) : "",
	    r == 1 ? "declined" : "");
	ckpt_manager_close(m);
out:
	ckpt_disconnect(c);
	return r;
}

/* Restore (or verify) o->step. */
static int op_restore(void *arg, char *msg, size_t msglen)
{
	struct op *o = arg;
	ckpt_restored *res = NULL;
	ckpt_client *c;
	ckpt_manager *m;
	char *problems = NULL;
	int r;

	if ((r = open_mgr(o, &c, &m, msg, msglen)) != 0)
		goto out;
	if (o->verify)
		r = ckpt_verify(m, o->step, &problems);
	else
		r = ckpt_restore(m, o->step, NULL, &res);
	snprintf(msg, msglen, "%s", r ? ckpt_manager_errmsg(m) :
	    problems ? problems : "");
	free(problems);
	if (res)
		ckpt_restored_free(res);
	ckpt_manager_close(m);
out:
	ckpt_disconnect(c);
	return r;
}

/* What a manager lists: "step:state:has_metrics:init>0," per step. */
static int op_list(void *arg, char *msg, size_t msglen)
{
	struct op *o = arg;
	ckpt_step_info *inf = NULL;
	ckpt_client *c;
	ckpt_manager *m;
	size_t n = 0, i, off = 0;
	int64_t latest = -2;
	int r;

	if ((r = open_mgr(o, &c, &m, msg, msglen)) != 0)
		goto out;
	if ((r = ckpt_list_steps(m, &inf, &n)) == 0)
		r = ckpt_latest_step(m, &latest);
	off += (size_t)snprintf(msg, msglen, "latest=%lld;",
	    (long long)latest);
	for (i = 0; i < n && off < msglen; i++) {
		char *mj = NULL;

		ckpt_metrics(m, inf[i].step, &mj);
		off += (size_t)snprintf(msg + off, msglen - off, "%llu:%d:%s%s,",
		    (unsigned long long)inf[i].step, inf[i].state,
		    mj ? "metrics" : "", inf[i].init_ns > 0 ? ":time" : "");
		free(mj);
	}
	free(inf);
	ckpt_manager_close(m);
out:
	ckpt_disconnect(c);
	return r;
}

/* Open a manager, list, keep it open hold_s seconds. */
static int op_hold(void *arg, char *msg, size_t msglen)
{
	struct op *o = arg;
	ckpt_client *c;
	ckpt_manager *m;
	int64_t latest = -2;
	int r;

	if ((r = open_mgr(o, &c, &m, msg, msglen)) != 0)
		goto out;
	r = ckpt_latest_step(m, &latest);
	sleep((unsigned)o->hold_s);
	if (r == 0)
		r = ckpt_latest_step(m, &latest);
	snprintf(msg, msglen, "latest=%lld", (long long)latest);
	ckpt_manager_close(m);
out:
	ckpt_disconnect(c);
	return r;
}

/* ---- FIFOs in place of step files ------------------------------------------------ */

/* As B: replace the files of steps 1..4 with FIFOs. */
static int b_make_fifos(void *arg, char *msg, size_t msglen)
{
	struct op *o = arg;
	char p[HX_PATH + 400], dir[HX_PATH + 64];
	struct dirent *de;
	DIR *dd;
	int s;

	for (s = 1; s <= 4; s++) {
		p[0] = '\0';
		if (s == 1 || s == 4)
			snprintf(p, sizeof p, "%s/%d/_CHECKPOINT_METADATA",
			    o->root, s);
		else if (s == 2)
			snprintf(p, sizeof p, "%s/%d/default/_METADATA",
			    o->root, s);
		else {
			snprintf(dir, sizeof dir, "%s/%d/default", o->root, s);
			if ((dd = opendir(dir)) == NULL)
				break;
			while ((de = readdir(dd)) != NULL)
				if (strstr(de->d_name, ".safetensors"))
					snprintf(p, sizeof p, "%s/%s", dir,
					    de->d_name);
			closedir(dd);
		}
		if (p[0] == '\0' || unlink(p) != 0 || mkfifo(p, 0644) != 0) {
			snprintf(msg, msglen, "fifo %s: %s", p, strerror(errno));
			return -1;
		}
	}
	return 0;
}

static void fifo_files(void)
{
	struct op b, a;
	struct child kids[6];
	char msg[1024];
	int64_t t0, dl;
	int r, i, status;

	memset(&b, 0, sizeof b);
	hx_join(b.root, shared, "b-fifo");
	b.nsteps = 4;
	b.bytes = 4096;
	b.create = 1;
	r = run_as(buid, bgid, op_save, &b, 60, msg, sizeof msg);
	is_int(r, 0, "fifo: B saves steps 1-4 (%s)", msg);
	r = run_as(buid, bgid, b_make_fifos, &b, 10, msg, sizeof msg);
	is_int(r, 0, "fifo: B replaces files of steps 1-4 with FIFOs (%s)",
	    msg);

	/* Six requests of B at once: more than the workers. */
	for (i = 0; i < 6; i++) {
		static struct op bo[6];

		bo[i] = b;
		bo[i].step = i < 4 ? 1 + i : 2 + (i - 4);
		bo[i].verify = i >= 4;
		kids[i] = spawn(buid, bgid, op_restore, &bo[i]);
	}
	hx_sleep_ms(500);

	/* A is served meanwhile, promptly. */
	memset(&a, 0, sizeof a);
	hx_path(&d, a.root, "a-fifo");
	a.step = 7;
	a.bytes = 1 << 16;
	a.create = 1;
	t0 = hx_now_ms();
	r = run_as(0, 0, op_save, &a, 20, msg, sizeof msg);
	is_int(r, 0, "fifo: A opens and saves while B's requests hit FIFOs "
	    "(%s, %lld ms)", msg, (long long)(hx_now_ms() - t0));
	r = run_as(0, 0, op_restore, &a, 20, msg, sizeof msg);
	is_int(r, 0, "fifo: A restores meanwhile (%s)", msg);

	dl = hx_now_ms() + 20000;
	for (i = 0; i < 6; i++) {
		r = collect(&kids[i], dl, msg, sizeof msg);
		ok(r != TIMED_OUT && r != INT32_MIN && (r != 0 || i >= 4),
		    "fifo: B's %s of step %d returns promptly (%d: %s)",
		    i >= 4 ? "verify" : "restore", i < 4 ? 1 + i : i - 2, r,
		    msg);
		has(msg, "not a regular file", "... naming the FIFO as not a "
		    "regular file");
	}
	r = run_as(buid, bgid, op_list, &b, 20, msg, sizeof msg);
	is_int(r, 0, "fifo: B still lists its steps (%s)", msg);

	t0 = hx_now_ms();
	status = hx_stop(&d);
	ok(status == 0 && hx_now_ms() - t0 < 20000, "fifo: SIGTERM exits "
	    "promptly and cleanly (status %d, %lld ms)", status,
	    (long long)(hx_now_ms() - t0));
	if (hx_start(&d) != 0)
		bail_out("cannot restart ckptd");
	/* Rebuilding from the disk meets the FIFOs too: the index is gone. */
	{
		char ix[HX_PATH];

		hx_stop(&d);
		hx_path(&d, ix, "state/index");
		hx_rmtree(ix);
		if (hx_start(&d) != 0)
			bail_out("cannot restart ckptd");
		chmod(d.sock, 0666);
	}
	r = run_as(buid, bgid, op_list, &b, 20, msg, sizeof msg);
	is_int(r, 0, "fifo: B's root is rebuilt from the disk despite the "
	    "FIFOs (%s)", msg);
	r = run_as(0, 0, op_restore, &a, 20, msg, sizeof msg);
	is_int(r, 0, "fifo: A restores after the rebuild (%s)", msg);
}

/* ---- a root removed and re-created ---------------------------------------------------- */

static void recreate_same_user(void)
{
	struct op o;
	ckpt_client *c = NULL;
	ckpt_manager *keep = NULL, *m2 = NULL;
	int64_t latest = -2;
	int r, saved = -1;
	char msg[1024];
	ckpt_options *opt = ckpt_options_new();

	memset(&o, 0, sizeof o);
	hx_path(&d, o.root, "run1");
	o.nsteps = 3;
	o.bytes = 4096;
	o.create = 1;
	/* An evaluator keeps a manager on the root. */
	r = hx_connect(&d, &c);
	if (r == 0)
		r = ckpt_manager_open(c, o.root, opt, &keep);
	is_int(r, 0, "recreate: an evaluator keeps a manager open");
	r = run_as(0, 0, op_save, &o, 60, msg, sizeof msg);
	is_int(r, 0, "recreate: steps 1-3 saved (%s)", msg);
	is_int(hx_rmtree(o.root), 0, "recreate: rm -rf the root");
	r = ckpt_manager_open(c, o.root, opt, &m2);
	is_int(r, 0, "recreate: a new manager on the same path");
	if (r == 0)
		r = ckpt_latest_step(m2, &latest);
	is_int(latest, -1, "recreate: ... sees an empty root");
	if (m2) {
		r = save_one(m2, 1, 4096, &saved);
		if (r == 0)
			r = ckpt_wait_until_finished(m2);
		ok(r == 0 && saved == 1, "recreate: ... and save(1) is written "
		    "(r %d, saved %d)", r, saved);
		hx_path(&d, msg, "run1/1/_CHECKPOINT_METADATA");
		ok(hx_exists(msg), "recreate: ... step 1 is on disk");
	}
	ckpt_manager_close(m2);
	ckpt_manager_close(keep);
	ckpt_disconnect(c);
	ckpt_options_free(opt);
}

static int b_rmtree(void *arg, char *msg, size_t msglen)
{
	(void)msg;
	(void)msglen;
	return hx_rmtree(((struct op *)arg)->root);
}

static int a_mkdir0700(void *arg, char *msg, size_t msglen)
{
	if (mkdir(((struct op *)arg)->root, 0700) != 0) {
		snprintf(msg, msglen, "mkdir: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static void recreate_other_user(void)
{
	static struct op hold;
	struct op b, a;
	struct child keep;
	char msg[1024], p[HX_PATH + 64];
	struct stat st;
	int r;

	memset(&b, 0, sizeof b);
	hx_join(b.root, shared, "run2");
	b.nsteps = 3;
	b.bytes = 4096;
	b.create = 1;
	r = run_as(buid, bgid, op_save, &b, 60, msg, sizeof msg);
	is_int(r, 0, "users: B saves steps 1-3 in the shared directory (%s)",
	    msg);
	/* B's steps stay loaded: B lists them (a manager of B's keeps the
	 * root in memory while A re-creates the path). */
	r = run_as(buid, bgid, op_list, &b, 20, msg, sizeof msg);
	has(msg, "3:0:metrics", "users: B lists its steps with metrics (%s)",
	    msg);
	/* A long-lived manager of B keeps the old root loaded. */
	hold = b;
	hold.hold_s = 10;
	keep = spawn(buid, bgid, op_hold, &hold);
	hx_sleep_ms(1000);
	r = run_as(buid, bgid, b_rmtree, &b, 20, msg, sizeof msg);
	is_int(r, 0, "users: B removes its root");

	memset(&a, 0, sizeof a);
	snprintf(a.root, sizeof a.root, "%s", b.root);
	a.create = 0;
	r = run_as(0, 0, a_mkdir0700, &a, 10, msg, sizeof msg);
	is_int(r, 0, "users: A re-creates the path with mode 0700 (%s)", msg);
	if (chown(a.root, 0, 0) != 0)
		diag("chown: %s", strerror(errno));
	r = run_as(0, 0, op_list, &a, 20, msg, sizeof msg);
	is_int(r, 0, "users: A opens it");
	is_str(msg, "latest=-1;", "users: A sees none of B's steps, metrics "
	    "or timestamps");
	a.step = 2;
	a.bytes = 4096;
	r = run_as(0, 0, op_save, &a, 20, msg, sizeof msg);
	is_int(r, 0, "users: A's save(2) is not skipped (%s)", msg);
	snprintf(p, sizeof p, "%s/2/_CHECKPOINT_METADATA", a.root);
	ok(stat(p, &st) == 0 && st.st_uid == 0, "users: ... it is written, "
	    "owned by A");
	r = run_as(0, 0, op_list, &a, 20, msg, sizeof msg);
	is_str(msg, "latest=2;2:0:metrics:time,", "users: A lists only its "
	    "own step");
	r = collect(&keep, hx_now_ms() + 30000, msg, sizeof msg);
	is_int(r, 0, "users: B's long-lived manager was served (%s)", msg);
}

/* ---- cleanup_tmp_directories from a manager with another prefix ------------------------- */

static void prefix_cleanup(void)
{
	struct op big, other;
	struct child saver;
	char msg[1024], tmp[HX_PATH + 64];
	int r, i, seen = 0, opens;

	memset(&big, 0, sizeof big);
	hx_path(&d, big.root, "prefix");
	big.step = 1;
	big.bytes = (size_t)768 << 20;
	big.create = 1;
	saver = spawn(0, 0, op_save, &big);
	snprintf(tmp, sizeof tmp, "%s/1.ckptd-tmp", big.root);
	for (i = 0; i < 2000 && !seen; i++) {
		seen = hx_exists(tmp);
		if (!seen)
			hx_sleep_ms(5);
	}
	ok(seen, "prefix: manager 1's save of step 1 is in flight");

	memset(&other, 0, sizeof other);
	snprintf(other.root, sizeof other.root, "%s", big.root);
	other.prefix = "other";
	other.cleanup = 1;
	other.create = 1;
	/* Managers 2 open and close again and again while the save runs:
	 * the first open loads the "other" root, the next ones find it
	 * ready; each asks for cleanup. */
	opens = 0;
	do {
		r = run_as(0, 0, op_list, &other, 30, msg, sizeof msg);
		opens++;
	} while (r == 0 && opens < 500 && !finished(&saver));
	is_int(r, 0, "prefix: manager 2 (step_prefix \"other\", "
	    "cleanup_tmp_directories) opens the same directory (%d times "
	    "during the save; %s)", opens, msg);
	r = collect(&saver, hx_now_ms() + 120000, msg, sizeof msg);
	is_int(r, 0, "prefix: manager 1's save commits (%s)", msg);
	snprintf(tmp, sizeof tmp, "%s/1/_CHECKPOINT_METADATA", big.root);
	ok(hx_exists(tmp), "prefix: step 1 is on disk");
	big.nsteps = 0;
	r = run_as(0, 0, op_list, &big, 20, msg, sizeof msg);
	has(msg, "latest=1;", "prefix: manager 1 lists step 1 (%s)", msg);
	/* Every file of it survived (a partial removal would leave a step
	 * that lists but does not verify). */
	big.verify = 1;
	r = run_as(0, 0, op_restore, &big, 120, msg, sizeof msg);
	ok(r == 0 && msg[0] == '\0', "prefix: step 1 verifies (%d: %s)", r,
	    msg);
}

static int only(const char *section)
{
	const char *o = getenv("CKPT_TEST_ONLY");

	return o == NULL || o[0] == '\0' || strcmp(o, section) == 0;
}

int main(void)
{
	hx_init(&d);
	if (geteuid() != 0) {
		tap_skip("needs root: two real Unix users");
		return done_testing();
	}
	if (hx_ensure_user(TEST_USER, &buid, &bgid) != 0)
		bail_out("cannot create user %s", TEST_USER);
	if (hx_start(&d) != 0)
		bail_out("cannot start ckptd");
	chmod(d.dir, 0755);
	chmod(d.sock, 0666);
	hx_path(&d, shared, "shared");
	mkdir(shared, 0777);
	chmod(shared, 01777);

	/* CKPT_TEST_ONLY=<section> runs one section (for debugging). */
	if (only("fifo"))
		fifo_files();
	if (only("recreate"))
		recreate_same_user();
	if (only("users"))
		recreate_other_user();
	if (only("prefix"))
		prefix_cleanup();

	if (tap_failures())
		hx_dump_log(&d, 40);
	hx_cleanup(&d);
	return done_testing();
}
