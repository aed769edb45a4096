/*
 * test_powerloss.c - power loss at every durability boundary of a save, a
 * retention delete and an index update.
 *
 * The checkpoint root and the daemon's state directory (the LMDB index)
 * both live on crashfs (crashfs.c), which keeps only what was made durable
 * by fsync. The manager has max_to_keep=2. Two scenarios:
 *
 *   A. a save of step 1 (small: one worker task) into a root that does not
 *      exist yet (the daemon creates it);
 *   B. starting from a seed made once (step 1 saved, then the daemon
 *      stopped cleanly so that its index is on disk and lists step 1): a
 *      save of step 2 (20 MiB: separate prepare/data/finish tasks, O_DIRECT
 *      writes) and of step 3 (small), whose commit deletes step 1. The
 *      index on disk is stale from the first save on;
 *   C. B without root metadata, where at boundary k ckptd is killed (kill
 *      -9 right after that fsync or rename, the filesystem goes on), a new
 *      ckptd is started and lists the steps, and only then the power is
 *      cut: every step it listed must survive.
 *
 * Each save is followed by wait_until_finished. For each scenario (C: with
 * "power cut" read as "kill -9, restart, list, power cut"):
 * 1. a run without a crash counts the boundaries N (fsync, fdatasync,
 *    directory fsync, rename) and checks that every save succeeds;
 * 2. for every k in 1..N, on a fresh filesystem: run the scenario with the
 *    power cut right after boundary k (from then on the filesystem fails
 *    every operation, as a dead disk would), kill -9 the daemon, remount
 *    the durable state, start a new daemon on it and check:
 *    - every step whose wait_until_finished returned 0 is listed, restores
 *      byte for byte and passes ckpt_verify() (step 1 may be gone only
 *      when step 3, whose commit deletes it, is listed);
 *    - every listed step restores and verifies (no partial step is listed);
 *    - the listed steps are exactly the committed step directories on disk
 *      (the index was rebuilt to match the disk);
 *    - the root metadata (written when the manager opens) is on disk when
 *      a step was reported durable;
 *    - the manager still works: a new step saves, waits and verifies.
 *
 * Needs root (FUSE mounts; skipped without it). The number of crash points explored is printed
 * as a TAP comment; crashfs.log in the test directory names each boundary
 * (CKPTD_TEST_KEEP=1 keeps it).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define NSTEPS 3                        /* steps 1..3; 4 after a crash */
#define SMALL_ELEMS 4096                /* 16 KiB of float32 */
#define LARGE_ELEMS (10u << 18)         /* 10 MiB of float32 per leaf */
#define ROOT_META "{\"run\":\"powerloss\"}" /* written by manager open */

static struct hx_daemon d;
static char fsbin[HX_PATH];
static char mnt[HX_PATH], root[HX_PATH], backing[HX_PATH], image[HX_PATH];
static char statefile[HX_PATH], fslog[HX_PATH], seed[HX_PATH];
static pid_t fs_pid;
static int trial_ok;

/* ---- crashfs --------------------------------------------------------- */

static int
mounted(void)
{
	struct stat a, b;

	return stat(mnt, &a) == 0 && stat(d.dir, &b) == 0 &&
	    a.st_dev != b.st_dev;
}

/* Mount crashfs over `from` at mnt: power cut after boundary crash_at,
 * kill -9 of the caller of boundary kill_at (0: never). */
static int
fs_mount(const char *from, unsigned long crash_at, unsigned long kill_at)
{
	char opts[3 * HX_PATH + 64];
	int64_t end;
	int fd, st;

	snprintf(opts, sizeof(opts), "backing=%s,state=%s,crash_at=%lu,"
	    "kill_at=%lu,image=%s", from, statefile, crash_at, kill_at, image);
	if ((fs_pid = fork()) < 0)
		return -1;
	if (fs_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if ((fd = open(fslog, O_WRONLY | O_CREAT | O_APPEND, 0644)) >= 0)
			dup2(fd, 2);
		execl(fsbin, fsbin, mnt, "-f", "-o", opts, (char *)NULL);
		_exit(127);
	}
	for (end = hx_now_ms() + 10000; hx_now_ms() < end; hx_sleep_ms(5)) {
		if (mounted()) {
			snprintf(d.mnt, sizeof(d.mnt), "%s", mnt);
			return 0;
		}
		if (waitpid(fs_pid, &st, WNOHANG) == fs_pid) {
			fs_pid = 0;
			return -1;
		}
	}
	return -1;
}

static int
fs_unmount(void)
{
	int64_t end;
	int st, r = 0;

	if (umount2(mnt, 0) != 0) {
		diag("umount %s: %s", mnt, strerror(errno));
		r = -1;
		(void)umount2(mnt, MNT_DETACH);
	}
	d.mnt[0] = '\0';
	for (end = hx_now_ms() + 10000; fs_pid > 0 && hx_now_ms() < end;
	    hx_sleep_ms(5))
		if (waitpid(fs_pid, &st, WNOHANG) == fs_pid) {
			fs_pid = 0;
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				diag("crashfs exited with status 0x%x (see %s)",
				    (unsigned)st, fslog);
				r = -1;
			}
		}
	if (fs_pid > 0) {
		diag("crashfs did not exit after umount");
		kill(fs_pid, SIGKILL);
		waitpid(fs_pid, &st, 0);
		fs_pid = 0;
		r = -1;
	}
	return r;
}

/* "<boundaries> <crashed>" from the state file. */
static int
fs_state(unsigned long *boundaries, int *crashed)
{
	char *s = hx_read_file(statefile, NULL);
	int n;

	if (s == NULL)
		return -1;
	n = sscanf(s, "%lu %d", boundaries, crashed);
	free(s);
	return n == 2 ? 0 : -1;
}

/* ---- the scenario ---------------------------------------------------- */

static float *bufa, *bufb;

static size_t
step_elems(uint64_t step)
{
	return step == 2 ? LARGE_ELEMS : SMALL_ELEMS;
}

static void
fill_step(uint64_t step)
{
	size_t n = step_elems(step);

	hx_fill(bufa, n * sizeof(float), step * 10 + 1);
	hx_fill(bufb, n * sizeof(float), step * 10 + 2);
}

static int
save_step(ckpt_manager *m, uint64_t step)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int64_t shape[1] = { (int64_t)step_elems(step) };
	size_t bytes = step_elems(step) * sizeof(float);
	char json[64];
	int r;

	fill_step(step);
	ckpt_tree_add_array(t, "layer/a", CKPT_F32, 1, shape, bufa, bytes);
	ckpt_tree_add_array(t, "layer/b", CKPT_F32, 1, shape, bufb, bytes);
	ckpt_tree_add_int(t, "step", (int64_t)step);
	snprintf(json, sizeof(json), "{\"step\":%llu}",
	    (unsigned long long)step);
	ckpt_save_args_add_tree(a, "state", CKPT_HANDLER_STANDARD, t);
	ckpt_save_args_add_json(a, "meta", json);
	r = ckpt_save(m, step, a, NULL);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return r;
}

/* The scenarios. */
struct phase {
	const char *what;
	int seeded;             /* start from a copy of the seed */
	uint64_t first, last;   /* steps saved */
	int root_meta;          /* managers open with root metadata */
	int kill;               /* kill -9 at boundary k, restart, list the
	                         * steps, then cut the power */
};

static const struct phase phases[] = {
	{ "a save into a new root (the daemon creates it)", 0, 1, 1, 1, 0 },
	{ "two saves, a retention delete, a stale index", 1, 2, 3, 1, 0 },
	{ "kill -9, restart, list, then power loss", 1, 2, 3, 0, 1 },
};
static const struct phase *ph = &phases[0];

static int
open_manager(ckpt_client **c, ckpt_manager **m)
{
	ckpt_options *o;
	int r;

	*m = NULL;
	if ((r = hx_connect(&d, c)) != 0)
		return r;
	o = ckpt_options_new();
	ckpt_options_set_create(o, 1);
	ckpt_options_set_max_to_keep(o, 2);
	if (ph->root_meta)
		ckpt_options_set_root_metadata(o, ROOT_META);
	r = ckpt_manager_open(*c, root, o, m);
	ckpt_options_free(o);
	if (r != 0) {
		ckpt_disconnect(*c);
		*c = NULL;
	}
	return r;
}


/* Save steps ph->first..ph->last, each waited for; told[s] = 1 when the
 * client was told step s is durable (step 1 when it is in the seed).
 * Returns how many saves were. */
static int
scenario(int told[NSTEPS + 2])
{
	ckpt_client *c;
	ckpt_manager *m;
	uint64_t s;
	int r, n = 0;

	memset(told, 0, sizeof(int) * (NSTEPS + 2));
	told[1] = ph->seeded;
	if (open_manager(&c, &m) != 0)
		return 0;
	for (s = ph->first; s <= ph->last; s++) {
		if ((r = save_step(m, s)) == 0)
			r = ckpt_wait_until_finished(m);
		if (r != 0)
			break;
		told[s] = 1;
		n++;
	}
	(void)ckpt_manager_close(m);
	ckpt_disconnect(c);
	return n;
}

/* ---- checks after the crash ------------------------------------------ */

static void
fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
fail(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	diag("  %s", msg);
	trial_ok = 0;
}

/* Committed step directories on disk: names of digits only. */
static size_t
disk_steps(uint64_t *out, size_t max)
{
	struct dirent *de;
	struct stat st;
	char path[HX_PATH];
	size_t n = 0;
	DIR *dir;

	if ((dir = opendir(root)) == NULL)
		return 0;
	while ((de = readdir(dir)) != NULL && n < max) {
		if (de->d_name[0] == '\0' ||
		    strspn(de->d_name, "0123456789") != strlen(de->d_name))
			continue;
		if (stat(hx_join(path, root, de->d_name), &st) != 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		out[n++] = strtoull(de->d_name, NULL, 10);
	}
	closedir(dir);
	return n;
}

static int
contains(const uint64_t *v, size_t n, uint64_t x)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (v[i] == x)
			return 1;
	return 0;
}

/* Remove blanks so that JSON texts compare regardless of formatting. */
static void
squeeze(char *s)
{
	char *w = s;

	for (; *s; s++)
		if (*s != ' ' && *s != '\n' && *s != '\t')
			*w++ = *s;
	*w = '\0';
}

/* Step `step` restores byte for byte and its checksums verify. */
static void
check_step(ckpt_manager *m, uint64_t step)
{
	size_t bytes = step_elems(step) * sizeof(float);
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	char *problems = NULL, want[64], got[256];
	const char *json;
	ckpt_leaf la, lb;
	long ia, ib, k;
	int r;

	if ((r = ckpt_restore(m, (int64_t)step, NULL, &res)) != 0) {
		fail("step %llu does not restore: %s: %s",
		    (unsigned long long)step, ckpt_strerror(r),
		    ckpt_manager_errmsg(m));
		return;
	}
	fill_step(step);
	k = ckpt_restored_find(res, "state");
	t = k >= 0 ? ckpt_restored_item_tree(res, (size_t)k) : NULL;
	ia = t ? ckpt_tree_find(t, "layer/a") : -1;
	ib = t ? ckpt_tree_find(t, "layer/b") : -1;
	if (ia < 0 || ib < 0 || ckpt_tree_leaf(t, (size_t)ia, &la) != 0 ||
	    ckpt_tree_leaf(t, (size_t)ib, &lb) != 0 || la.nbytes != bytes ||
	    lb.nbytes != bytes || memcmp(la.data, bufa, bytes) != 0 ||
	    memcmp(lb.data, bufb, bytes) != 0)
		fail("step %llu: arrays differ from what was saved",
		    (unsigned long long)step);
	k = ckpt_restored_find(res, "meta");
	json = k >= 0 ? ckpt_restored_item_json(res, (size_t)k) : NULL;
	snprintf(want, sizeof(want), "{\"step\":%llu}",
	    (unsigned long long)step);
	snprintf(got, sizeof(got), "%s", json ? json : "(none)");
	squeeze(got);
	if (strcmp(got, want) != 0)
		fail("step %llu: JSON item is %s, want %s",
		    (unsigned long long)step, got, want);
	ckpt_restored_free(res);
	if ((r = ckpt_verify(m, (int64_t)step, &problems)) != 0 ||
	    problems == NULL || problems[0] != '\0')
		fail("step %llu: verify: %s %s", (unsigned long long)step,
		    ckpt_strerror(r), problems ? problems : "");
	free(problems);
}

static void
check_recovered(const int told[NSTEPS + 2])
{
	uint64_t *listed = NULL, ondisk[64];
	size_t nl = 0, nd, i;
	ckpt_client *c;
	ckpt_manager *m;
	uint64_t s;
	int r;

	if ((r = open_manager(&c, &m)) != 0) {
		fail("manager open after the crash: %s", ckpt_strerror(r));
		return;
	}
	if ((r = ckpt_all_steps(m, &listed, &nl)) != 0)
		fail("all_steps: %s", ckpt_strerror(r));
	/* Step 3's commit starts the deletion of step 1 (max_to_keep 2):
	 * step 1 may be gone only once step 3 is committed. */
	for (s = 1; s <= NSTEPS; s++)
		if (told[s] && !contains(listed, nl, s) &&
		    !(s == 1 && contains(listed, nl, 3)))
			fail("step %llu was reported durable (or listed "
			    "after a restart) but is gone",
			    (unsigned long long)s);
	for (i = 0; i < nl; i++)
		check_step(m, listed[i]);
	nd = disk_steps(ondisk, 64);
	for (i = 0; i < nd; i++)
		if (!contains(listed, nl, ondisk[i]))
			fail("step %llu is on disk but not listed",
			    (unsigned long long)ondisk[i]);
	for (i = 0; i < nl; i++)
		if (!contains(ondisk, nd, listed[i]))
			fail("step %llu is listed but not on disk",
			    (unsigned long long)listed[i]);
	free(listed);
	/* The manager works on the recovered root. */
	if ((r = save_step(m, NSTEPS + 1)) == 0)
		r = ckpt_wait_until_finished(m);
	if (r != 0)
		fail("save of step %d after the crash: %s: %s", NSTEPS + 1,
		    ckpt_strerror(r), ckpt_manager_errmsg(m));
	else
		check_step(m, NSTEPS + 1);
	if ((r = ckpt_manager_close(m)) != 0)
		fail("manager close: %s", ckpt_strerror(r));
	ckpt_disconnect(c);
}

/* ---- one crash point ------------------------------------------------- */

/* A fresh backing directory holding a copy of the seed. */
static void
fresh_dirs(void)
{
	char *argv[] = { "/bin/cp", "-a", NULL, NULL, NULL };
	char src[HX_PATH + 8], out[512];

	hx_rmtree(backing);
	hx_rmtree(image);
	if (hx_mkdirs(backing) != 0 || hx_mkdirs(image) != 0)
		bail_out("cannot make %s and %s", backing, image);
	if (!ph->seeded)
		return;
	snprintf(src, sizeof(src), "%s/.", seed);
	argv[2] = src;
	argv[3] = backing;
	if (hx_run(argv, out, sizeof(out), 60) != 0)
		bail_out("cp -a %s %s: %s", src, backing, out);
}

/* The seed: step 1 saved and the daemon stopped cleanly (its index synced
 * by index_close), on crashfs so that paths are the same as in the trials.
 * Everything in it is durable when a trial mounts a copy. */
static void
make_seed(void)
{
	ckpt_client *c;
	ckpt_manager *m;
	int r;

	ph = &phases[0];        /* root metadata on */
	if (hx_mkdirs(seed) != 0)
		bail_out("cannot make %s", seed);
	if (fs_mount(seed, 0, 0) != 0)
		bail_out("cannot mount crashfs (see %s)", fslog);
	if (hx_start(&d) != 0) {
		hx_dump_log(&d, 20);
		bail_out("ckptd does not start on crashfs");
	}
	if ((r = open_manager(&c, &m)) == 0) {
		if ((r = save_step(m, 1)) == 0)
			r = ckpt_wait_until_finished(m);
		if (ckpt_manager_close(m) != 0 && r == 0)
			r = CKPT_EIO;
		ckpt_disconnect(c);
	}
	ok_call(r, NULL, "seed: step 1 saved on crashfs");
	is_int(hx_stop(&d), 0, "seed: ckptd stops cleanly (index synced)");
	if (fs_unmount() != 0)
		bail_out("cannot unmount crashfs");
}

/* Steps listed by a daemon restarted after the kill (they must survive
 * the power loss that follows): seen[s] = 1. */
static void
list_after_kill(int seen[NSTEPS + 2])
{
	uint64_t *steps = NULL;
	ckpt_client *c;
	ckpt_manager *m;
	size_t n = 0, i;

	if (hx_start(&d) != 0) {
		hx_dump_log(&d, 20);
		bail_out("ckptd does not restart after the kill");
	}
	if (open_manager(&c, &m) != 0 || ckpt_all_steps(m, &steps, &n) != 0)
		bail_out("cannot list the steps after the kill");
	for (i = 0; i < n; i++)
		if (steps[i] <= NSTEPS)
			seen[steps[i]] = 1;
	free(steps);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* Run the scenario with the power cut at boundary k (0: never; ph->kill:
 * kill -9 at k, restart, list, power cut). Returns the number of
 * boundaries the run passed; *crashed when the power was cut. */
static unsigned long
trial(unsigned long k, int told[NSTEPS + 2], int *ntold, int *crashed)
{
	unsigned long nb = 0;
	struct stat st;
	int64_t end;

	fresh_dirs();
	if (fs_mount(backing, ph->kill ? 0 : k, ph->kill ? k : 0) != 0)
		bail_out("cannot mount crashfs (see %s)", fslog);
	if (hx_start(&d) != 0) {
		/* Boundary k may be one of ckptd's own start-up (the index's
		 * running marker): killed there, nothing was told durable
		 * but the seed; restart, list, cut the power as below. */
		if (!ph->kill || k == 0 || fs_state(&nb, crashed) != 0 ||
		    nb < k) {
			hx_dump_log(&d, 20);
			bail_out("ckptd does not start on crashfs");
		}
		memset(told, 0, sizeof(int) * (NSTEPS + 2));
		told[1] = ph->seeded;
		*ntold = 0;
	} else {
		*ntold = scenario(told);
	}
	hx_kill9(&d);
	if (ph->kill && k > 0) {
		if (fs_state(&nb, crashed) != 0 || nb < k) {
			*crashed = 0;
			fs_unmount();
			return nb;
		}
		list_after_kill(told);
		/* Power loss now: the next operation cuts it. */
		kill(fs_pid, SIGUSR1);
		for (end = hx_now_ms() + 5000; hx_now_ms() < end;
		    hx_sleep_ms(5))
			if (stat(root, &st) != 0 && errno == EIO)
				break;
		hx_kill9(&d);
	}
	if (fs_state(&nb, crashed) != 0)
		bail_out("no crashfs state in %s", statefile);
	if (fs_unmount() != 0)
		bail_out("cannot unmount crashfs");
	return nb;
}

static void
after_crash(unsigned long k, unsigned long n, const int told[NSTEPS + 2],
    int ntold)
{
	char path[HX_PATH], *meta;
	int s, any = 0;

	trial_ok = 1;
	/* The durable state, mounted again (no crash this time). */
	if (fs_mount(image, 0, 0) != 0)
		bail_out("cannot mount the durable image");
	/* Root metadata written by the open that preceded a durable step
	 * is durable too (read before a new open could write it again). */
	for (s = 1; s <= NSTEPS; s++)
		any |= told[s];
	hx_path(&d, path, "mnt/ckpt/metadata/_ROOT_METADATA");
	meta = hx_read_file(path, NULL);
	if (any && (meta == NULL || strstr(meta, "powerloss") == NULL))
		fail("root metadata lost: %s", meta ? meta : "(no file)");
	free(meta);
	if (hx_start(&d) != 0) {
		hx_dump_log(&d, 20);
		fail("ckptd does not start on the durable state");
	} else {
		check_recovered(told);
		if (hx_stop(&d) != 0)
			fail("ckptd did not stop cleanly");
	}
	if (fs_unmount() != 0)
		fail("cannot unmount the durable image");
	ok(trial_ok, "%s: %s at boundary %lu of %lu (%d of %d saves "
	    "reported durable): recovered", ph->what,
	    ph->kill ? "kill -9" : "power cut", k, n, ntold,
	    (int)(ph->last - ph->first + 1));
	if (!trial_ok)
		hx_dump_log(&d, 10);
}

int
main(void)
{
	int told[NSTEPS + 2], ntold, crashed, explored = 0;
	unsigned long n, k, nb, total = 0;
	size_t p;
	const char *bin;
	int64_t t0;

	if (geteuid() != 0) {
		/* As the other tests that need root: a skip (CI runs as root). */
		printf("1..0 # SKIP needs root (FUSE mounts)\n");
		return 0;
	}
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		bail_out("/dev/fuse: %s (the fuse module, or the device in the "
		    "container, is needed)", strerror(errno));
	if ((bin = getenv("CRASHFS_BIN")) == NULL)
		bail_out("CRASHFS_BIN is not set");
	snprintf(fsbin, sizeof(fsbin), "%s", bin);
	/* A killed daemon is the point here: the client reports the loss at
	 * once instead of waiting to reconnect (libckpt's default). */
	setenv("CKPT_RECONNECT_TIMEOUT_MS", "0", 1);
	hx_init(&d);
	hx_path(&d, mnt, "mnt");
	hx_path(&d, root, "mnt/ckpt");
	hx_path(&d, backing, "backing");
	hx_path(&d, image, "image");
	hx_path(&d, seed, "seed");
	hx_path(&d, statefile, "crashfs.state");
	hx_path(&d, fslog, "crashfs.log");
	hx_path(&d, d.state, "mnt/state");
	if (hx_mkdirs(mnt) != 0)
		bail_out("cannot make %s", mnt);
	bufa = malloc(LARGE_ELEMS * sizeof(float));
	bufb = malloc(LARGE_ELEMS * sizeof(float));
	if (bufa == NULL || bufb == NULL)
		bail_out("out of memory");

	t0 = hx_now_ms();
	make_seed();
	for (p = 0; p < sizeof(phases) / sizeof(phases[0]); p++) {
		ph = &phases[p];
		diag("scenario: %s", ph->what);
		/* Count the boundaries. */
		n = trial(0, told, &ntold, &crashed);
		is_int(ntold, ph->last - ph->first + 1, "%s: without a crash "
		    "every save succeeds", ph->what);
		ok(n > 0 && !crashed, "%s: %lu durability boundaries",
		    ph->what, n);
		for (k = 1; k <= n; k++) {
			nb = trial(k, told, &ntold, &crashed);
			if (!crashed) {
				/* This run passed fewer boundaries. */
				ok(0, "%s: boundary %lu: the run passed only "
				    "%lu", ph->what, k, nb);
				continue;
			}
			after_crash(k, n, told, ntold);
			explored++;
		}
		total += n;
	}
	diag("crash points explored: %d (a save into a new root; saves, a "
	    "retention delete and an index update; the same killed, restarted "
	    "and listed before the power loss) in %.1f s", explored,
	    (double)(hx_now_ms() - t0) / 1000.0);
	is_int(explored, (long long)total, "every boundary was a crash point");

	free(bufa);
	free(bufb);
	hx_cleanup(&d);
	return done_testing();
}
