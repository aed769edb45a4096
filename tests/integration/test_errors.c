/*
 * test_errors.c - bad input through libckpt, each answered with a clear
 * error that changes nothing, while the daemon keeps serving others:
 * a step that already exists, unknown steps, an empty root, bad dtypes and
 * shapes, item names and step prefixes that are paths, wrong restore
 * targets, bad options, a corrupted tensor, a root the caller may not write
 * (a real second Unix user), and a full disk (an 8 MiB tmpfs).
 *
 * The last two need root (useradd, setuid, mount); without root they are
 * reported as skipped and everything else still runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "untouched.h"

#define TEST_USER "ckpttest"
/* One more item name than a manager may have (CKPT_MAX_ITEMS). */
#define CKPT_TEST_MANY_ITEMS 1025

static struct hx_daemon d;
static struct untouched watched;  /* the root bad inputs must not touch */

/* After a bad input: ckptd serves, the root is unchanged. */
static void probe(const char *what)
{
	untouched_probe(&d, &watched, what);
}

static ckpt_tree *small_tree(float base)
{
	static float w[4];
	int64_t shape[1] = { 4 };
	ckpt_tree *t = ckpt_tree_new();
	int i;

	for (i = 0; i < 4; i++)
		w[i] = base + (float)i;
	ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, w, sizeof w);
	ckpt_tree_add_int(t, "n", 3);
	return t;
}

/* Save (and wait): the first error from either. */
static int save_wait(ckpt_manager *m, uint64_t step, const char *item,
    const ckpt_tree *t)
{
	ckpt_save_args *a = ckpt_save_args_new();
	int r = ckpt_save_args_add_tree(a, item, CKPT_HANDLER_STANDARD, t);

	if (r == 0)
		r = ckpt_save(m, step, a, NULL);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	ckpt_save_args_free(a);
	return r;
}

/* ---- API-level errors --------------------------------------------------------- */

static void api_errors(ckpt_client *c, ckpt_manager *m)
{
	ckpt_tree *t = small_tree(10), *tg;
	ckpt_options *o;
	ckpt_manager *m2 = NULL;
	ckpt_restored *res = NULL;
	ckpt_restore_args *ra;
	char path[HX_PATH], *json = NULL;
	int64_t shape[2] = { 2, 2 }, big[40], s4[1] = { 4 };
	float buf[4] = { 0 };
	int r, i;

	/* A step that already exists: without force, Orbax's should_save()
	 * declines it (step <= latest); with force it is StepAlreadyExists. */
	{
		ckpt_save_args *a = ckpt_save_args_new();
		int saved = -1;

		ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
		r = ckpt_save(m, 0, a, &saved);
		ok(r == 0 && saved == 0, "save of existing step 0 without force: "
		    "declined (r %d, saved %d)", r, saved);
		ckpt_save_args_set_force(a, 1);
		r = ckpt_save(m, 0, a, &saved);
		if (r == 0)
			r = ckpt_wait_until_finished(m);
		is_int(r, CKPT_EEXIST, "save of existing step 0 with force: "
		    "CKPT_EEXIST");
		ok(strstr(ckpt_manager_errmsg(m), "already exists") != NULL,
		    "... message says it already exists (%s)",
		    ckpt_manager_errmsg(m));
		ckpt_save_args_free(a);
		ckpt_check_for_errors(m);
	}
	probe("existing step");

	/* Unknown steps. */
	r = ckpt_restore(m, 42, NULL, &res);
	is_int(r, CKPT_ENOTFOUND, "restore(42): CKPT_ENOTFOUND");
	r = ckpt_item_metadata(m, 42, &res);
	is_int(r, CKPT_ENOTFOUND, "item_metadata(42): CKPT_ENOTFOUND");
	r = ckpt_metadata(m, 42, &json);
	is_int(r, CKPT_ENOTFOUND, "metadata(42): CKPT_ENOTFOUND");
	r = ckpt_delete(m, 42);
	is_int(r, CKPT_ENOTFOUND, "delete(42): CKPT_ENOTFOUND");
	r = ckpt_metrics(m, 42, &json);
	is_int(r, CKPT_ENOTFOUND, "metrics(42): CKPT_ENOTFOUND");
	probe("unknown step");

	/* An empty root. */
	hx_path(&d, path, "empty-root");
	r = ckpt_manager_open(c, path, NULL, &m2);
	if (ok_call(r, c, "open an empty root")) {
		r = ckpt_restore(m2, -1, NULL, &res);
		is_int(r, CKPT_ENOSTEPS, "restore(latest) of an empty root: "
		    "CKPT_ENOSTEPS");
		ckpt_manager_close(m2);
	}
	hx_path(&d, path, "missing-root");
	o = ckpt_options_new();
	ckpt_options_set_create(o, 0);
	m2 = NULL;
	r = ckpt_manager_open(c, path, o, &m2);
	is_int(r, CKPT_ENOTDIR, "open a missing root with create=0: "
	    "CKPT_ENOTDIR");
	ok(!hx_exists(path), "... and it was not created");
	ckpt_options_free(o);
	if (r == 0)
		ckpt_manager_close(m2);

	/* Bad dtypes and shapes. */
	tg = ckpt_tree_new();
	is_int(ckpt_tree_add_array(tg, "x", (ckpt_dtype)99, 1, s4, buf,
	    sizeof buf), CKPT_EDTYPE, "dtype 99: CKPT_EDTYPE");
	is_int(ckpt_tree_add_array(tg, "x", CKPT_DTYPE_INVALID, 1, s4, buf,
	    sizeof buf), CKPT_EDTYPE, "dtype INVALID: CKPT_EDTYPE");
	is_int(ckpt_tree_add_array(tg, "x", CKPT_F32, 2, shape, buf, 8),
	    CKPT_EINVAL, "nbytes 8 for a 2x2 float32: CKPT_EINVAL");
	shape[0] = -1;
	is_int(ckpt_tree_add_array(tg, "x", CKPT_F32, 2, shape, buf,
	    sizeof buf), CKPT_EINVAL, "negative dimension: CKPT_EINVAL");
	for (i = 0; i < 40; i++)
		big[i] = 1;
	is_int(ckpt_tree_add_array(tg, "x", CKPT_U8, 40, big, buf, 1),
	    CKPT_EINVAL, "ndim 40: CKPT_EINVAL");
	is_int(ckpt_tree_nleaves(tg), 0, "none of them was added");
	ckpt_tree_free(tg);
	probe("bad dtype and shape");

	/* Item names and step prefixes that would be paths. */
	{
		const char *names[] = { "../x", "a/b", "..", ".", "" };
		ckpt_save_args *a;

		for (i = 0; i < 5; i++) {
			a = ckpt_save_args_new();
			r = ckpt_save_args_add_tree(a, names[i],
			    CKPT_HANDLER_STANDARD, t);
			if (r == 0) {
				ckpt_save_args_set_composite(a, 1);
				r = ckpt_save(m, 1, a, NULL);
				if (r == 0)
					r = ckpt_wait_until_finished(m);
			}
			ok(r == CKPT_EINVAL || r == CKPT_EPATH,
			    "item name '%s' refused (%s)", names[i],
			    ckpt_strerror(r));
			ckpt_save_args_free(a);
			ckpt_check_for_errors(m);
		}
		hx_path(&d, path, "x");
		ok(!hx_exists(path), "nothing written beside the root");
	}
	/* Item names are judged by the daemon alone (one rule for Save
	 * items, item_names and Restore items): libckpt passes them on and
	 * shows the daemon's message. */
	{
		static const struct {
			const char *a, *b, *want;
		} bad[] = {
			{ "p", "p", "duplicate item name \"p\"" },
			{ "p", ".hidden", "must not start with '.'" },
			{ "p", "a/b", "invalid item name \"a/b\"" },
		};
		ckpt_save_args *a;

		for (i = 0; i < 3; i++) {
			a = ckpt_save_args_new();
			r = ckpt_save_args_add_tree(a, bad[i].a,
			    CKPT_HANDLER_STANDARD, t);
			if (r == 0)
				r = ckpt_save_args_add_tree(a, bad[i].b,
				    CKPT_HANDLER_STANDARD, t);
			is_int(r, 0, "items '%s', '%s': libckpt passes them on",
			    bad[i].a, bad[i].b);
			ckpt_save_args_set_composite(a, 1);
			is_int(ckpt_save(m, 1, a, NULL), CKPT_EINVAL,
			    "items '%s', '%s': the daemon refuses the Save",
			    bad[i].a, bad[i].b);
			ok(strstr(ckpt_manager_errmsg(m), bad[i].want) != NULL,
			    "... with its message (%s)", ckpt_manager_errmsg(m));
			ckpt_save_args_free(a);
		}
		a = ckpt_save_args_new();
		ckpt_save_args_add_tree(a, "metrics", CKPT_HANDLER_STANDARD, t);
		ckpt_save_args_set_composite(a, 1);
		ckpt_save_args_set_metrics(a, "{\"loss\": 1}");
		is_int(ckpt_save(m, 1, a, NULL), CKPT_EINVAL,
		    "an item named metrics beside the step's metrics: refused");
		ok(strstr(ckpt_manager_errmsg(m), "Item name \"metrics\" is "
		    "reserved; please use a different name.") != NULL,
		    "... with Orbax's words (%s)", ckpt_manager_errmsg(m));
		ckpt_save_args_free(a);

		a = ckpt_save_args_new();
		ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
		is_int(ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD,
		    t), CKPT_EINVAL, "a second default item: this API's error");
		is_int(ckpt_save_args_add_tree(a, "p", CKPT_HANDLER_STANDARD,
		    t), CKPT_EINVAL, "a named item beside the default one: "
		    "this API's error");
		ckpt_save_args_free(a);

		ra = ckpt_restore_args_new();
		ckpt_restore_args_add_item(ra, ".hidden", NULL, 0);
		is_int(ckpt_restore(m, 0, ra, &res), CKPT_EINVAL,
		    "a restore of item '.hidden': refused");
		ok(strstr(ckpt_manager_errmsg(m), "must not start with '.'") !=
		    NULL, "... by the same rule (%s)", ckpt_manager_errmsg(m));
		ckpt_restore_args_free(ra);
		res = NULL;
	}
	{
		static const char *dup[] = { "params", "params" };
		static const char *path_name[] = { "params", "a/b" };
		const char **many = calloc(CKPT_TEST_MANY_ITEMS, sizeof *many);
		char (*nm)[16] = calloc(CKPT_TEST_MANY_ITEMS, sizeof *nm);

		o = ckpt_options_new();
		is_int(ckpt_options_set_item_names(o, dup, 2), 0,
		    "duplicate item_names: passed on");
		is_int(ckpt_manager_open(c, watched.root, o, &m2), CKPT_EINVAL,
		    "duplicate item_names: the daemon refuses the manager");
		ok(strstr(ckpt_client_errmsg(c), "duplicate item name "
		    "\"params\"") != NULL, "... with its message (%s)",
		    ckpt_client_errmsg(c));
		ckpt_options_set_item_names(o, path_name, 2);
		is_int(ckpt_manager_open(c, watched.root, o, &m2), CKPT_EINVAL,
		    "item_names with a path: refused");
		ok(strstr(ckpt_client_errmsg(c), "invalid item name \"a/b\"") !=
		    NULL, "... with its message (%s)", ckpt_client_errmsg(c));
		for (i = 0; i < CKPT_TEST_MANY_ITEMS; i++) {
			snprintf(nm[i], sizeof nm[i], "i%d", i);
			many[i] = nm[i];
		}
		ckpt_options_set_item_names(o, many, CKPT_TEST_MANY_ITEMS);
		is_int(ckpt_manager_open(c, watched.root, o, &m2), CKPT_ETOOBIG,
		    "%d item_names: over the daemon's limit",
		    CKPT_TEST_MANY_ITEMS);
		ok(strstr(ckpt_client_errmsg(c), "at most 1024") != NULL,
		    "... which it names (%s)", ckpt_client_errmsg(c));
		ckpt_options_free(o);
		free(many);
		free(nm);
		m2 = NULL;
	}
	probe("item names judged by the daemon");
	o = ckpt_options_new();
	is_int(ckpt_options_set_step_prefix(o, "a/b"), CKPT_EINVAL,
	    "step_prefix 'a/b': CKPT_EINVAL");
	is_int(ckpt_options_set_step_prefix(o, "../up"), CKPT_EINVAL,
	    "step_prefix '../up': CKPT_EINVAL");
	is_int(ckpt_options_set_max_to_keep(o, -1), CKPT_EINVAL,
	    "max_to_keep -1: CKPT_EINVAL");
	is_int(ckpt_options_set_save_interval_steps(o, 0), 0,
	    "save_interval_steps 0 (Orbax 0.12 read-only setups): accepted");
	ckpt_options_free(o);
	o = ckpt_options_new();
	ckpt_options_set_max_to_keep(o, 2);
	ckpt_options_preservation_add(o, CKPT_PRESERVE_LATEST_N, 3, 0, NULL, 0,
	    NULL, 0, 1);
	m2 = NULL;
	r = ckpt_manager_open(c, watched.root, o, &m2);
	is_int(r, CKPT_EINVAL, "preservation policy together with max_to_keep: "
	    "CKPT_EINVAL");
	if (r == 0)
		ckpt_manager_close(m2);
	ckpt_options_free(o);
	probe("path-like names and bad options");

	/* Restore targets that do not fit. */
	tg = ckpt_tree_new();
	shape[0] = 2;
	shape[1] = 2;
	ckpt_tree_add_target(tg, "w", CKPT_F32, 2, shape, NULL, 16);
	ra = ckpt_restore_args_new();
	ckpt_restore_args_add_item(ra, "default", tg, 1);
	r = ckpt_restore(m, 0, ra, &res);
	is_int(r, CKPT_EMISMATCH, "restore 'w' (4,) into a (2, 2) target: "
	    "CKPT_EMISMATCH");
	if (r == 0)
		ckpt_restored_free(res);
	ckpt_restore_args_free(ra);
	ckpt_tree_free(tg);
	ra = ckpt_restore_args_new();
	ckpt_restore_args_add_item(ra, "nosuchitem", NULL, 0);
	r = ckpt_restore(m, 0, ra, &res);
	is_int(r, CKPT_ENOITEM, "restore of an item not in the step: "
	    "CKPT_ENOITEM");
	if (r == 0)
		ckpt_restored_free(res);
	ckpt_restore_args_free(ra);
	probe("bad restore targets");

	ckpt_tree_free(t);
}

/* A flipped byte in a tensor is reported by name, not restored. */
static void corruption(ckpt_client *c)
{
	char croot[HX_PATH], file[HX_PATH], *problems = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	ckpt_tree *t = small_tree(5);
	unsigned char b;
	struct stat st;
	int fd, r;

	hx_path(&d, croot, "corrupt");
	if (!ok_call(ckpt_manager_open(c, croot, NULL, &m), c, "open root "
	    "'corrupt'"))
		return;
	ok_call(save_wait(m, 3, NULL, t), c, "save step 3");
	hx_path(&d, file, "corrupt/3/default/data-00000.safetensors");
	fd = open(file, O_RDWR | O_CLOEXEC);
	if (ok(fd >= 0 && fstat(fd, &st) == 0, "data-00000.safetensors exists")) {
		/* the last byte is the last byte of the last tensor's data */
		if (pread(fd, &b, 1, st.st_size - 1) == 1) {
			b ^= 0x5a;
			r = (int)pwrite(fd, &b, 1, st.st_size - 1);
			(void)r;
		}
		close(fd);
		r = ckpt_restore(m, 3, NULL, &res);
		is_int(r, CKPT_ECORRUPT, "restore of a corrupted step: "
		    "CKPT_ECORRUPT");
		ok(strstr(ckpt_manager_errmsg(m), "w") != NULL,
		    "... naming the tensor (%s)", ckpt_manager_errmsg(m));
		if (r == 0)
			ckpt_restored_free(res);
		r = ckpt_verify(m, 3, &problems);
		ok(problems && problems[0] != '\0', "verify reports it (%s: %s)",
		    ckpt_strerror(r), problems ? problems : "NULL");
		free(problems);
	}
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	probe("corrupted tensor");
}

/* ---- a second Unix user ------------------------------------------------------------- */

struct as_user {
	char sock[HX_PATH];
	char root[HX_PATH];
	int read_only;
	int save;           /* also try to save step 1 */
};

static int user_open_cb(void *arg, char *msg, size_t msglen)
{
	struct as_user *u = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o = ckpt_options_new();
	ckpt_restored *res = NULL;
	const char *stage = "connect";
	int r;

	ckpt_options_set_read_only(o, u->read_only);
	r = ckpt_connect(u->sock, &c);
	if (r == 0) {
		stage = "open";
		r = ckpt_manager_open(c, u->root, o, &m);
	}
	if (r == 0 && u->read_only) {
		stage = "restore";
		r = ckpt_restore(m, 0, NULL, &res);
	}
	if (r == 0 && u->save) {
		ckpt_tree *t = small_tree(1);

		stage = "save";
		r = save_wait(m, 1, NULL, t);
		ckpt_tree_free(t);
	}
	snprintf(msg, msglen, "%s: %s", stage, c ? ckpt_client_errmsg(c) :
	    ckpt_connect_errmsg());
	if (res)
		ckpt_restored_free(res);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ckpt_options_free(o);
	return r;
}

static void second_user(void)
{
	struct as_user u;
	char msg[1024], userdir[HX_PATH], file[HX_PATH];
	uid_t uid;
	gid_t gid;
	struct stat st;
	int r;

	if (geteuid() != 0) {
		tap_skip("a root the caller may not write: needs root to run a "
		    "client as a second user");
		return;
	}
	if (!ok(hx_ensure_user(TEST_USER, &uid, &gid) == 0, "user %s exists "
	    "(created with useradd if it was missing)", TEST_USER))
		return;
	/* The test directory is private (mkdtemp 0700): let the user reach
	 * the socket and the roots, as on a shared machine. */
	chmod(d.dir, 0755);
	chmod(d.sock, 0666);
	memset(&u, 0, sizeof u);
	snprintf(u.sock, sizeof u.sock, "%s", d.sock);

	/* Write access to root's root: refused. */
	snprintf(u.root, sizeof u.root, "%s", watched.root);
	u.save = 1;
	r = hx_as_user(uid, gid, user_open_cb, &u, msg, sizeof msg);
	is_int(r, CKPT_EACCES, "%s saving into root's checkpoint root: "
	    "CKPT_EACCES (%s)", TEST_USER, msg);
	ok(strncmp(msg, "open:", 5) == 0, "... refused when opening the "
	    "manager for writing, as ckpt_manager_open() documents (%s)", msg);
	probe("second user, root's root");

	/* Creating a root inside a directory the user may not write. */
	hx_path(&d, u.root, "raw-new");
	u.save = 0;
	r = hx_as_user(uid, gid, user_open_cb, &u, msg, sizeof msg);
	is_int(r, CKPT_EACCES, "%s creating a root in root's directory: "
	    "CKPT_EACCES (%s)", TEST_USER, msg);
	ok(!hx_exists(u.root), "... and nothing was created");

	/* A root inside a 0700 directory. */
	hx_path(&d, userdir, "private");
	mkdir(userdir, 0700);
	hx_path(&d, u.root, "private/ckpt");
	r = hx_as_user(uid, gid, user_open_cb, &u, msg, sizeof msg);
	is_int(r, CKPT_EACCES, "%s opening a root under a 0700 directory: "
	    "CKPT_EACCES (%s)", TEST_USER, msg);
	ok(!hx_exists(u.root), "... and nothing was created");

	/* Reading root's root read-only is allowed (files are 0644). */
	snprintf(u.root, sizeof u.root, "%s", watched.root);
	u.read_only = 1;
	r = hx_as_user(uid, gid, user_open_cb, &u, msg, sizeof msg);
	is_int(r, 0, "%s may restore from root's root read-only (%s)",
	    TEST_USER, msg);
	probe("second user, read-only");

	/* In its own directory the user's files belong to the user. */
	hx_path(&d, userdir, "home-" TEST_USER);
	mkdir(userdir, 0755);
	if (chown(userdir, uid, gid) != 0)
		diag("chown: %s", strerror(errno));
	hx_path(&d, u.root, "home-" TEST_USER "/ckpt");
	u.read_only = 0;
	u.save = 1;
	r = hx_as_user(uid, gid, user_open_cb, &u, msg, sizeof msg);
	is_int(r, 0, "%s saves into its own directory (%s)", TEST_USER, msg);
	hx_path(&d, file, "home-" TEST_USER "/ckpt/1/default/_METADATA");
	ok(stat(file, &st) == 0 && st.st_uid == uid,
	    "files of that step are owned by %s (uid %u, got %d)", TEST_USER,
	    (unsigned)uid, stat(file, &st) == 0 ? (int)st.st_uid : -1);
	hx_path(&d, file, "home-" TEST_USER "/ckpt/1");
	ok(stat(file, &st) == 0 && st.st_uid == uid,
	    "... and so is the step directory");
}

/* ---- a full disk ---------------------------------------------------------------------- */

static int enospc_ready;
static char small[HX_PATH];

/* Before the daemon starts: a private mount namespace (inherited by the
 * daemon) with an 8 MiB tmpfs. */
static void enospc_setup(void)
{
	if (geteuid() != 0)
		return;
	hx_path(&d, small, "small");
	if (mkdir(small, 0755) != 0 || unshare(CLONE_NEWNS) != 0 ||
	    mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0 ||
	    mount("tmpfs", small, "tmpfs", MS_NOSUID | MS_NODEV,
	    "size=8m,mode=0755") != 0) {
		diag("cannot mount a small tmpfs: %s", strerror(errno));
		return;
	}
	snprintf(d.mnt, sizeof d.mnt, "%s", small);  /* hx_cleanup unmounts */
	enospc_ready = 1;
}

static void enospc(ckpt_client *c)
{
	char sroot[HX_PATH], tmp[HX_PATH];
	ckpt_manager *m = NULL;
	ckpt_step_info *infos = NULL;
	size_t n = 0, i;
	uint64_t *steps = NULL;
	ckpt_tree *t;
	ckpt_save_args *a;
	void *buf = malloc(16 << 20);
	int64_t shape[1] = { 16 << 20 };
	int r, failed_listed = 0;

	if (!enospc_ready) {
		tap_skip("disk full: needs root to mount a small tmpfs");
		free(buf);
		return;
	}
	hx_path(&d, sroot, "small/ckpt");
	if (!ok_call(ckpt_manager_open(c, sroot, NULL, &m), c, "open a root on "
	    "an 8 MiB tmpfs")) {
		free(buf);
		return;
	}
	hx_fill(buf, 16 << 20, 1);
	t = ckpt_tree_new();
	ckpt_tree_add_array(t, "w", CKPT_U8, 1, shape, buf, 16 << 20);
	a = ckpt_save_args_new();
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, 1, a, NULL);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	is_int(r, CKPT_ENOSPC, "saving 16 MiB there: CKPT_ENOSPC");
	ok(strcasestr(ckpt_manager_errmsg(m), "space") != NULL,
	    "... with a clear message (%s)", ckpt_manager_errmsg(m));
	ckpt_save_args_free(a);
	ckpt_tree_free(t);

	ckpt_all_steps(m, &steps, &n);
	is_int(n, 0, "the failed step is not listed");
	free(steps);
	hx_path(&d, tmp, "small/ckpt/1.ckptd-tmp");
	ok(!hx_exists(tmp), "its tmp dir was removed");
	hx_path(&d, tmp, "small/ckpt/1");
	ok(!hx_exists(tmp), "no step dir 1");
	if (ckpt_list_steps(m, &infos, &n) == 0) {
		for (i = 0; i < n; i++)
			if (infos[i].step == 1 && infos[i].state == 2) {
				failed_listed = 1;
				diag("recorded failure: %s", infos[i].error);
			}
		free(infos);
	}
	ok(failed_listed, "the failure is recorded in the index");

	/* The daemon still serves, and the space came back. As in Orbax
	 * (_FinalizeThread.join raises once per thread), the failure was
	 * raised to this thread by wait_until_finished: the next save
	 * proceeds. */
	is_int(ckpt_check_for_errors(m), 0, "raised once: no longer pending");
	shape[0] = 1 << 20;
	t = ckpt_tree_new();
	ckpt_tree_add_array(t, "w", CKPT_U8, 1, shape, buf, 1 << 20);
	r = save_wait(m, 2, NULL, t);
	ok_call(r, c, "the next 1 MiB save to the same root succeeds");
	ckpt_all_steps(m, &steps, &n);
	ok(n == 1 && steps[0] == 2, "and step 2 is listed");
	free(steps);
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	free(buf);
	probe("disk full");
}

int main(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t;

	hx_init(&d);
	if (!d.external)
		enospc_setup();
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	if (hx_connect(&d, &c) != 0)
		bail_out("cannot connect");
	hx_path(&d, watched.root, "raw");
	if (!ok_call(ckpt_manager_open(c, watched.root, NULL, &m), c,
	    "open the root"))
		bail_out("no root");
	t = small_tree(0);
	ok_call(save_wait(m, 0, NULL, t), c, "step 0 committed");
	ckpt_tree_free(t);
	untouched_watch(&watched);

	api_errors(c, m);
	corruption(c);
	second_user();
	enospc(c);

	ckpt_manager_close(m);
	ckpt_disconnect(c);
	untouched_free(&watched);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
