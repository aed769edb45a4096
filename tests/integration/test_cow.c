/*
 * test_cow.c - copy-on-write snapshot saves (ckpt_save_args_set_cow):
 *
 *   - ckpt_save returns with the large buffers write-protected; writes
 *     right after it (this thread, another thread, read(2) from inside the
 *     kernel; first and last pages, a page two buffers share, a buffer on
 *     transparent huge pages) do not reach the step, which holds the
 *     bytes as they were when ckpt_save was called;
 *   - memory that cannot be write-protected (a file mapping) is copied
 *     before ckpt_save returns, in the same save;
 *   - disconnecting right after a snapshot save ends it properly;
 *   - CKPT_COW_SAVE=0, and a second (unprivileged) user: no snapshot,
 *     same results.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define MIB (1u << 20)
#define TEST_USER "ckpttest"
#define NBUF 6

static struct hx_daemon d;

/* The buffers of a save and a copy of each taken before it. */
struct bufs {
	char *raw;              /* malloc'ed: big, then shared */
	char *shared;           /* left and right share a page */
	char *thp;              /* 2 MiB aligned, MADV_HUGEPAGE */
	char *thp_map;
	size_t thp_len;
	char *file;             /* a shared file mapping */
	char *small;
	const char *name[NBUF];
	char *p[NBUF];
	size_t n[NBUF];
	char *orig[NBUF];
};

static void bufs_make(struct bufs *b, uint64_t seed, int with_file)
{
	char path[HX_PATH];
	size_t i, cut = 2 * MIB + 1000;
	int fd;

	memset(b, 0, sizeof *b);
	b->raw = malloc(8 * MIB + 16);
	b->shared = malloc(5 * MIB);
	b->small = malloc(3000);
	b->thp_len = 8 * MIB;
	b->thp_map = mmap(NULL, b->thp_len + 2 * MIB, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b->raw == NULL || b->shared == NULL || b->small == NULL ||
	    b->thp_map == MAP_FAILED)
		bail_out("out of memory");
	b->thp = b->thp_map +
	    (2 * MIB - (uintptr_t)b->thp_map % (2 * MIB)) % (2 * MIB);
	madvise(b->thp, b->thp_len, MADV_HUGEPAGE);
	b->name[0] = "big";
	b->p[0] = b->raw + 16;  /* not page aligned */
	b->n[0] = 8 * MIB;
	b->name[1] = "left";
	b->p[1] = b->shared;
	b->n[1] = cut;
	b->name[2] = "right";
	b->p[2] = b->shared + cut;
	b->n[2] = 5 * MIB - cut;
	b->name[3] = "thp";
	b->p[3] = b->thp;
	b->n[3] = b->thp_len;
	b->name[4] = "small";
	b->p[4] = b->small;
	b->n[4] = 3000;
	b->name[5] = "file";
	b->n[5] = 2 * MIB;
	if (with_file) {
		hx_path(&d, path, "mapped-%llu", (unsigned long long)seed);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)b->n[5]) != 0)
			bail_out("cannot make %s", path);
		b->file = mmap(NULL, b->n[5], PROT_READ | PROT_WRITE,
		    MAP_SHARED, fd, 0);
		close(fd);
		if (b->file == MAP_FAILED)
			bail_out("cannot map %s", path);
		b->p[5] = b->file;
	}
	for (i = 0; i < NBUF; i++) {
		if (b->p[i] == NULL)
			continue;
		hx_fill(b->p[i], b->n[i], seed + i);
		if ((b->orig[i] = malloc(b->n[i])) == NULL)
			bail_out("out of memory");
		memcpy(b->orig[i], b->p[i], b->n[i]);
	}
}

static void bufs_free(struct bufs *b)
{
	size_t i;

	for (i = 0; i < NBUF; i++)
		free(b->orig[i]);
	free(b->raw);
	free(b->shared);
	free(b->small);
	munmap(b->thp_map, b->thp_len + 2 * MIB);
	if (b->file != NULL)
		munmap(b->file, b->n[5]);
}

static size_t bufs_big(const struct bufs *b)
{
	return b->n[0] + b->n[1] + b->n[2] + b->n[3];
}

static ckpt_tree *bufs_tree(const struct bufs *b)
{
	ckpt_tree *t = ckpt_tree_new();
	size_t i;

	for (i = 0; i < NBUF; i++) {
		int64_t shape[1] = { (int64_t)b->n[i] };

		if (b->p[i] != NULL && ckpt_tree_add_array(t, b->name[i],
		    CKPT_U8, 1, shape, b->p[i], b->n[i]) != 0)
			bail_out("cannot build the tree");
	}
	ckpt_tree_add_int(t, "n", 7);
	return t;
}

static int cow_save(ckpt_manager *m, uint64_t step, const ckpt_tree *t,
    int *saved)
{
	ckpt_save_args *a = ckpt_save_args_new();
	int r = ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);

	if (r == 0)
		r = ckpt_save_args_set_cow(a, 1);
	if (r == 0)
		r = ckpt_save(m, step, a, saved);
	ckpt_save_args_free(a);
	return r;
}

/* Step `step` holds b's bytes as copied in orig: the number of buffers
 * that differ (-1: cannot restore). */
static int restored_diff(ckpt_manager *m, int64_t step, const struct bufs *b)
{
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	long li;
	int diff = 0;
	size_t i;

	if (ckpt_restore(m, step, NULL, &res) != 0)
		return -1;
	rt = ckpt_restored_item_tree(res, 0);
	for (i = 0; i < NBUF; i++) {
		if (b->p[i] == NULL)
			continue;
		li = rt != NULL ? ckpt_tree_find(rt, b->name[i]) : -1;
		if (li < 0 || ckpt_tree_leaf(rt, (size_t)li, &lf) != 0 ||
		    lf.nbytes != b->n[i] ||
		    memcmp(lf.data, b->orig[i], b->n[i]) != 0) {
			diag("buffer %s differs", b->name[i]);
			diff++;
		}
	}
	ckpt_restored_free(res);
	return diff;
}

/* Writes everywhere a snapshot must stop: returns 1 when every byte
 * written reads back. */
static int scribble(struct bufs *b, char v)
{
	size_t i;
	int good = 1;

	for (i = 0; i < NBUF; i++) {
		if (b->p[i] == NULL)
			continue;
		b->p[i][0] = v;
		b->p[i][b->n[i] - 1] = v;
		b->p[i][b->n[i] / 2] = v;
		good &= b->p[i][0] == v && b->p[i][b->n[i] - 1] == v;
	}
	/* the page left and right share */
	memset(b->p[2] - 8, v, 16);
	/* the second huge page, whole */
	memset(b->thp + 2 * MIB, v, 2 * MIB);
	good &= b->thp[3 * MIB] == v && b->p[1][b->n[1] - 1] == v;
	return good;
}

struct writer {
	char *p;
	size_t n;
	char v;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	size_t i;

	/* from the end backwards, one byte per page */
	for (i = w->n; i >= 4096; i -= 4096)
		w->p[i - 1] = w->v;
	return NULL;
}

static void test_snapshot(ckpt_client *c, const char *root)
{
	ckpt_manager *m = NULL;
	struct bufs b;
	struct writer w;
	pthread_t th;
	ckpt_tree *t;
	char path[HX_PATH];
	int saved = 0, fd, avail = ckpt_cow_available();
	size_t i;
	ssize_t got;

	diag("copy-on-write snapshots available: %d", avail);
	bufs_make(&b, 1, 1);
	t = bufs_tree(&b);
	is_int(ckpt_manager_open(c, root, NULL, &m), 0, "open %s", root);

	/* a file to read(2) into the big buffer */
	hx_path(&d, path, "readme");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		bail_out("cannot make %s", path);
	{
		char *junk = malloc(MIB);

		memset(junk, 0x5a, MIB);
		if (write(fd, junk, MIB) != (ssize_t)MIB)
			bail_out("cannot write %s", path);
		free(junk);
	}

	is_int(cow_save(m, 0, t, &saved), 0, "snapshot save of step 0");
	ok(saved == 1, "... taken");
	if (avail)
		is_int((long long)ckpt_manager_cow_bytes(m),
		    (long long)bufs_big(&b), "... the anonymous buffers of "
		    ">= 1 MiB copy-on-write (not the file mapping, the "
		    "small one)");
	else
		is_int((long long)ckpt_manager_cow_bytes(m), 0,
		    "... copied before returning (no snapshot here)");
	w.p = b.p[2];
	w.n = b.n[2];
	w.v = 0x11;
	if (pthread_create(&th, NULL, writer_main, &w) != 0)
		bail_out("pthread_create");
	ok(scribble(&b, 0x22), "writes right after save go through");
	got = pread(fd, b.p[0] + 4096, MIB, 0);
	is_int(got, MIB, "read(2) into a saved buffer right after save");
	ok(b.p[0][4096] == 0x5a && b.p[0][4096 + MIB - 1] == 0x5a,
	    "... and its bytes are there");
	pthread_join(th, NULL);
	ok(b.p[2][b.n[2] - 4097] == 0x11, "the other thread's writes went "
	    "through");
	is_int(ckpt_wait_until_finished(m), 0, "wait_until_finished");
	is_int(restored_diff(m, 0, &b), 0, "step 0 holds every buffer as it "
	    "was when ckpt_save was called");

	/* the written buffers saved again, then the process leaves at once */
	for (i = 0; i < NBUF; i++)
		if (b.p[i] != NULL)
			memcpy(b.orig[i], b.p[i], b.n[i]);
	is_int(cow_save(m, 1, t, &saved), 0, "snapshot save of step 1");
	scribble(&b, 0x33);
	is_int(ckpt_manager_close(m), 0, "close right after: waits for it");
	is_int(ckpt_manager_open(c, root, NULL, &m), 0, "open again");
	is_int(restored_diff(m, 1, &b), 0, "step 1 holds the bytes of its "
	    "save");
	ckpt_manager_close(m);
	close(fd);
	ckpt_tree_free(t);
	bufs_free(&b);
}

static void test_disconnect_right_after(const char *root)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	struct bufs b;
	ckpt_tree *t;
	int64_t step = -1;
	int saved = 0;

	bufs_make(&b, 2, 0);
	t = bufs_tree(&b);
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	is_int(ckpt_manager_open(c, root, NULL, &m), 0, "open %s", root);
	is_int(cow_save(m, 5, t, &saved), 0, "snapshot save of step 5");
	scribble(&b, 0x44);
	ckpt_disconnect(c);
	ok(scribble(&b, 0x45), "after disconnect the buffers are plain "
	    "memory again");
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	is_int(ckpt_manager_open(c, root, NULL, &m), 0, "open %s again", root);
	is_int(ckpt_wait_for_step(m, 4, 30000, &step), 0, "step 5 commits");
	is_int(step, 5, "... step 5");
	is_int(restored_diff(m, 5, &b), 0, "step 5 holds the bytes of its "
	    "save");
	ckpt_disconnect(c);
	ckpt_tree_free(t);
	bufs_free(&b);
}

static void test_off(ckpt_client *c, const char *root)
{
	ckpt_manager *m = NULL;
	struct bufs b;
	ckpt_tree *t;
	int saved = 0;

	setenv("CKPT_COW_SAVE", "0", 1);
	is_int(ckpt_cow_available(), 0, "CKPT_COW_SAVE=0: no snapshots");
	bufs_make(&b, 3, 0);
	t = bufs_tree(&b);
	is_int(ckpt_manager_open(c, root, NULL, &m), 0, "open %s", root);
	is_int(cow_save(m, 0, t, &saved), 0, "save asking for a snapshot");
	is_int((long long)ckpt_manager_cow_bytes(m), 0, "... copied before "
	    "returning");
	scribble(&b, 0x55);
	is_int(ckpt_wait_until_finished(m), 0, "wait_until_finished");
	is_int(restored_diff(m, 0, &b), 0, "the step holds the bytes of the "
	    "save");
	ckpt_manager_close(m);
	ckpt_tree_free(t);
	bufs_free(&b);
	unsetenv("CKPT_COW_SAVE");
}

/*
 * Many small snapshot saves in a row: a snapshot of one buffer is copied
 * and unmapped by the background thread at once, often before ckpt_save
 * returns, so ckpt_save must not read it once it handed it over. Each
 * step holds the value written just before its save, never the one
 * written right after.
 */
static void test_many_small(ckpt_client *c, const char *root)
{
	enum { NSAVE = 200 };
	size_t n = 2u << 20;
	unsigned char *p = malloc(n);
	ckpt_options *o = ckpt_options_new();
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	const ckpt_tree *rt;
	ckpt_leaf lf;
	long li;
	int64_t shape[1] = { (int64_t)n };
	int i, saved, fails = 0, taken = 0;

	if (p == NULL || o == NULL)
		bail_out("out of memory");
	ckpt_options_set_max_to_keep(o, 2);
	is_int(ckpt_manager_open(c, root, o, &m), 0, "open %s", root);
	for (i = 0; i < NSAVE; i++) {
		ckpt_tree *t = ckpt_tree_new();

		memset(p, i & 0xff, n);
		ckpt_tree_add_array(t, "a", CKPT_U8, 1, shape, p, n);
		saved = 0;
		if (cow_save(m, (uint64_t)i, t, &saved) != 0 || !saved)
			fails++;
		taken += ckpt_manager_cow_bytes(m) == n;
		memset(p, 0xee, n);     /* after the save: not in the step */
		ckpt_tree_free(t);
	}
	is_int(fails, 0, "%d snapshot saves in a row, each taken", NSAVE);
	if (ckpt_cow_available())
		ok(taken > NSAVE / 2, "... copy-on-write (%d of %d)", taken,
		    NSAVE);
	else
		is_int(taken, 0, "... copied before returning (no snapshots "
		    "here)");
	is_int(ckpt_wait_until_finished(m), 0, "wait_until_finished");
	is_int(ckpt_restore(m, NSAVE - 1, NULL, &res), 0, "restore the last");
	rt = res != NULL ? ckpt_restored_item_tree(res, 0) : NULL;
	li = rt != NULL ? ckpt_tree_find(rt, "a") : -1;
	ok(li >= 0 && ckpt_tree_leaf(rt, (size_t)li, &lf) == 0 &&
	    lf.nbytes == n && memchr(lf.data, 0xee, n) == NULL &&
	    ((const unsigned char *)lf.data)[0] == ((NSAVE - 1) & 0xff) &&
	    ((const unsigned char *)lf.data)[n - 1] == ((NSAVE - 1) & 0xff),
	    "... it holds the bytes at its save");
	ckpt_restored_free(res);
	ckpt_manager_close(m);
	ckpt_options_free(o);
	free(p);
}

struct as_user {
	char sock[HX_PATH];
	char root[HX_PATH];
};

/* Snapshots for a process without CAP_SYS_PTRACE: when the system lets
 * it handle kernel faults. */
static int unprivileged_may(void)
{
	FILE *f;
	int unpriv = 0;

	if ((f = fopen("/proc/sys/vm/unprivileged_userfaultfd", "r")) != NULL) {
		unpriv = fgetc(f) == '1';
		fclose(f);
	}
	return unpriv || access("/dev/userfaultfd", R_OK | W_OK) == 0;
}

/* In the second user's process: whether snapshots are available must
 * follow the system's setting, and a save asking for one must hold the
 * bytes of the save either way. */
static int user_cb(void *arg, char *msg, size_t msglen)
{
	struct as_user *u = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	struct bufs b;
	ckpt_tree *t;
	int want = unprivileged_may(), saved = 0, r;

	if (ckpt_cow_available() != want) {
		snprintf(msg, msglen, "available %d, want %d",
		    ckpt_cow_available(), want);
		return -100;
	}
	bufs_make(&b, 4, 0);
	t = bufs_tree(&b);
	r = ckpt_connect(u->sock, &c);
	if (r == 0)
		r = ckpt_manager_open(c, u->root, NULL, &m);
	if (r == 0)
		r = cow_save(m, 0, t, &saved);
	if (r == 0 && (ckpt_manager_cow_bytes(m) != 0) != want) {
		snprintf(msg, msglen, "cow bytes %zu",
		    ckpt_manager_cow_bytes(m));
		r = -101;
	}
	if (r == 0) {
		scribble(&b, 0x66);
		r = ckpt_wait_until_finished(m);
	}
	if (r == 0 && restored_diff(m, 0, &b) != 0) {
		snprintf(msg, msglen, "the step differs");
		r = -102;
	}
	if (r < 0 && msg[0] == '\0' && c != NULL)
		snprintf(msg, msglen, "%s", ckpt_client_errmsg(c));
	if (c != NULL)
		ckpt_disconnect(c);
	ckpt_tree_free(t);
	bufs_free(&b);
	return r;
}

static void test_second_user(void)
{
	struct as_user u;
	char msg[1024];
	uid_t uid;
	gid_t gid;
	int r;

	if (geteuid() != 0) {
		/* already a second user */
		is_int(ckpt_cow_available(), unprivileged_may(), "unprivileged: "
		    "availability follows the system");
		return;
	}
	if (!ok(hx_ensure_user(TEST_USER, &uid, &gid) == 0, "user %s exists",
	    TEST_USER))
		return;
	chmod(d.dir, 0755);
	chmod(d.sock, 0666);
	memset(&u, 0, sizeof u);
	snprintf(u.sock, sizeof u.sock, "%s", d.sock);
	hx_path(&d, u.root, "user");
	mkdir(u.root, 0700);
	if (chown(u.root, uid, gid) != 0)
		bail_out("chown %s: %s", u.root, strerror(errno));
	hx_path(&d, u.root, "user/ckpt");
	r = hx_as_user(uid, gid, user_cb, &u, msg, sizeof msg);
	is_int(r, 0, "%s: availability follows the system, and a save "
	    "asking for a snapshot holds the bytes of the save (%s)",
	    TEST_USER, msg);
}

int main(void)
{
	ckpt_client *c = NULL;
	char root[HX_PATH];

	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	if (hx_connect(&d, &c) != 0)
		bail_out("connect");
	test_snapshot(c, hx_path(&d, root, "snap"));
	test_disconnect_right_after(hx_path(&d, root, "disc"));
	test_many_small(c, hx_path(&d, root, "many"));
	test_off(c, hx_path(&d, root, "off"));
	ckpt_disconnect(c);
	test_second_user();
	hx_cleanup(&d);
	return done_testing();
}
