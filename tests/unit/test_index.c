/*
 * test_index.c - the LMDB step index (daemon/index.c) in a private state
 * directory: records, ordering, isolation of roots, persistence, rebuild
 * after the files are lost, and concurrent writers.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "index.h"

struct fx {
	char dir[256];
	char state[300];
	struct index *ix;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");
	ckd_err e = { 0 };

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "%s/ckptd-index-XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	/* a state dir that does not exist yet, two levels deep */
	snprintf(f->state, sizeof(f->state), "%s/state/ckptd", f->dir);
	if (index_open(f->state, &f->ix, &e) != 0)
		fail_msg("index_open: %s", e.msg);
	*state = f;
	return 0;
}

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	index_close(f->ix);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void
reopen(struct fx *f)
{
	ckd_err e = { 0 };

	index_close(f->ix);
	f->ix = NULL;
	if (index_open(f->state, &f->ix, &e) != 0)
		fail_msg("index_open: %s", e.msg);
}

static struct index_step
mk(uint64_t step, const char *metrics)
{
	struct index_step s;

	memset(&s, 0, sizeof(s));
	s.step = step;
	s.state = INDEX_COMMITTED;
	s.init_ns = (int64_t)step * 1000 + 1;
	s.commit_ns = (int64_t)step * 1000 + 2;
	s.bytes = step * 10;
	snprintf(s.name, sizeof(s.name), "%" PRIu64, step);
	s.metrics_json = (char *)metrics;
	return s;
}

static void
put(struct fx *f, const char *root, const struct index_step *s)
{
	ckd_err e = { 0 };

	if (index_put_step(f->ix, root, s, &e) != 0)
		fail_msg("index_put_step: %s", e.msg);
}

static struct index_step *
load(struct fx *f, const char *root, size_t *n, int *known)
{
	struct index_step *v = (struct index_step *)1;
	ckd_err e = { 0 };

	if (index_load_root(f->ix, root, &v, n, known, &e) != 0)
		fail_msg("index_load_root: %s", e.msg);
	if (*n == 0)
		assert_null(v);
	return v;
}

static void
test_put_load(void **state)
{
	struct fx *f = *state;
	struct index_step s, *v;
	size_t n;
	int known;

	v = load(f, "/data/run", &n, &known);
	assert_int_equal(n, 0);
	assert_int_equal(known, 0);

	s = mk(3, "{\"loss\":0.25}");
	put(f, "/data/run", &s);
	s = mk(1, NULL);
	put(f, "/data/run", &s);
	s = mk(2, NULL);
	s.state = INDEX_FAILED;
	s.error = "no space left on device";
	s.bytes = UINT64_MAX;
	s.init_ns = INT64_MIN;
	put(f, "/data/run", &s);

	v = load(f, "/data/run", &n, &known);
	assert_int_equal(known, 1);
	assert_int_equal(n, 3);
	assert_int_equal(v[0].step, 1);
	assert_int_equal(v[1].step, 2);
	assert_int_equal(v[2].step, 3);
	assert_int_equal(v[0].state, INDEX_COMMITTED);
	assert_true(v[0].init_ns == 1001);
	assert_true(v[0].commit_ns == 1002);
	assert_int_equal(v[0].bytes, 10);
	assert_string_equal(v[0].name, "1");
	assert_null(v[0].metrics_json);
	assert_null(v[0].error);
	assert_int_equal(v[1].state, INDEX_FAILED);
	assert_string_equal(v[1].error, "no space left on device");
	assert_true(v[1].bytes == UINT64_MAX);
	assert_true(v[1].init_ns == INT64_MIN);
	assert_string_equal(v[2].metrics_json, "{\"loss\":0.25}");
	index_steps_free(v, n);

	/* put replaces */
	s = mk(3, "{\"loss\":0.125}");
	strcpy(s.name, "ckpt_00000003");
	put(f, "/data/run", &s);
	v = load(f, "/data/run", &n, &known);
	assert_int_equal(n, 3);
	assert_string_equal(v[2].metrics_json, "{\"loss\":0.125}");
	assert_string_equal(v[2].name, "ckpt_00000003");
	index_steps_free(v, n);
	index_steps_free(NULL, 0);
}

static void
test_step_order(void **state)
{
	struct fx *f = *state;
	static const uint64_t steps[] = { UINT64_MAX, 256, 1, 0,
	    UINT64_C(1) << 40, 255, 65536 };
	static const uint64_t sorted[] = { 0, 1, 255, 256, 65536,
	    UINT64_C(1) << 40, UINT64_MAX };
	struct index_step s, *v;
	size_t n, i;
	int known;

	for (i = 0; i < 7; i++) {
		s = mk(steps[i], NULL);
		put(f, "/r", &s);
	}
	v = load(f, "/r", &n, &known);
	assert_int_equal(n, 7);
	for (i = 0; i < 7; i++)
		assert_true(v[i].step == sorted[i]);
	index_steps_free(v, n);
}

static void
test_del(void **state)
{
	struct fx *f = *state;
	struct index_step s, *v;
	ckd_err e = { 0 };
	size_t n;
	int known;

	s = mk(1, NULL);
	put(f, "/r", &s);
	s = mk(2, NULL);
	put(f, "/r", &s);
	s = mk(3, NULL);
	put(f, "/r", &s);
	assert_int_equal(index_del_step(f->ix, "/r", 2, &e), 0);
	assert_int_equal(index_del_step(f->ix, "/r", 2, &e), 0);
	assert_int_equal(index_del_step(f->ix, "/r", 99, &e), 0);
	assert_int_equal(index_del_step(f->ix, "/unknown", 1, &e), 0);
	v = load(f, "/r", &n, &known);
	assert_int_equal(n, 2);
	assert_int_equal(v[0].step, 1);
	assert_int_equal(v[1].step, 3);
	index_steps_free(v, n);
	/* deleting every step keeps the root known */
	assert_int_equal(index_del_step(f->ix, "/r", 1, &e), 0);
	assert_int_equal(index_del_step(f->ix, "/r", 3, &e), 0);
	v = load(f, "/r", &n, &known);
	assert_int_equal(n, 0);
	assert_int_equal(known, 1);
}

static void
test_replace(void **state)
{
	struct fx *f = *state;
	struct index_step s[3], *v;
	ckd_err e = { 0 };
	size_t n, i;
	int known;

	for (i = 1; i <= 20; i++) {
		s[0] = mk(i, NULL);
		put(f, "/r", &s[0]);
	}
	s[0] = mk(2, NULL);
	put(f, "/r2", &s[0]);

	s[0] = mk(50, "{\"a\":1}");
	s[1] = mk(7, NULL);
	s[2] = mk(60, NULL);
	assert_int_equal(index_replace_root(f->ix, "/r", s, 3, &e), 0);
	v = load(f, "/r", &n, &known);
	assert_int_equal(known, 1);
	assert_int_equal(n, 3);
	assert_int_equal(v[0].step, 7);
	assert_int_equal(v[1].step, 50);
	assert_string_equal(v[1].metrics_json, "{\"a\":1}");
	assert_int_equal(v[2].step, 60);
	index_steps_free(v, n);
	/* the other root is untouched */
	v = load(f, "/r2", &n, &known);
	assert_int_equal(n, 1);
	index_steps_free(v, n);

	/* replacing with nothing: empty but known */
	assert_int_equal(index_replace_root(f->ix, "/r", NULL, 0, &e), 0);
	v = load(f, "/r", &n, &known);
	assert_int_equal(n, 0);
	assert_int_equal(known, 1);
	/* a never-seen root becomes known */
	assert_int_equal(index_replace_root(f->ix, "/new", NULL, 0, &e), 0);
	v = load(f, "/new", &n, &known);
	assert_int_equal(known, 1);

	/* a bad record fails the whole transaction */
	s[0] = mk(1, NULL);
	s[1] = mk(2, NULL);
	s[1].state = 7;
	assert_int_equal(index_replace_root(f->ix, "/r2", s, 2, &e),
	    CKPT_EINVAL);
	v = load(f, "/r2", &n, &known);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].step, 2);
	index_steps_free(v, n);
}

static void
test_roots_isolated(void **state)
{
	struct fx *f = *state;
	static const char *const roots[] = { "/a", "/a/b", "/ab", "/a b",
	    "/" };
	char longroot[2000];
	struct index_step s, *v;
	size_t n, i, j;
	int known;

	for (i = 0; i < 5; i++)
		for (j = 0; j <= i; j++) {
			s = mk(j + 10 * i, NULL);
			put(f, roots[i], &s);
		}
	/* roots longer than an LMDB key */
	memset(longroot, 'x', sizeof(longroot));
	longroot[0] = '/';
	longroot[sizeof(longroot) - 1] = '\0';
	s = mk(77, NULL);
	put(f, longroot, &s);
	longroot[1500] = 'y';
	s = mk(88, NULL);
	put(f, longroot, &s);

	for (i = 0; i < 5; i++) {
		v = load(f, roots[i], &n, &known);
		assert_int_equal(known, 1);
		assert_int_equal(n, i + 1);
		for (j = 0; j <= i; j++)
			assert_int_equal(v[j].step, j + 10 * i);
		index_steps_free(v, n);
	}
	v = load(f, longroot, &n, &known);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].step, 88);
	index_steps_free(v, n);
	longroot[1500] = 'x';
	v = load(f, longroot, &n, &known);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].step, 77);
	index_steps_free(v, n);
	v = load(f, "/a/", &n, &known);
	assert_int_equal(n, 0);
	assert_int_equal(known, 0);
}

static void
test_persistence(void **state)
{
	struct fx *f = *state;
	struct index_step s, *v;
	struct stat st;
	char path[400];
	size_t n;
	int known;

	s = mk(5, "{\"m\":[1,2,3]}");
	put(f, "/p", &s);
	reopen(f);
	v = load(f, "/p", &n, &known);
	assert_int_equal(known, 1);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].step, 5);
	assert_string_equal(v[0].metrics_json, "{\"m\":[1,2,3]}");
	index_steps_free(v, n);

	/* layout: <state>/index/{data,lock}.mdb, private */
	snprintf(path, sizeof(path), "%s/index/data.mdb", f->state);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(f->state, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
}

static void
test_lost_files(void **state)
{
	struct fx *f = *state;
	struct index_step s, *v;
	char path[400];
	size_t n;
	int known, fd;

	s = mk(5, NULL);
	put(f, "/p", &s);
	index_close(f->ix);
	f->ix = NULL;
	snprintf(path, sizeof(path), "%s/index/data.mdb", f->state);
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof(path), "%s/index/lock.mdb", f->state);
	assert_int_equal(unlink(path), 0);
	reopen(f);
	v = load(f, "/p", &n, &known);
	assert_int_equal(n, 0);
	assert_int_equal(known, 0);
	s = mk(6, NULL);
	put(f, "/p", &s);

	/* the whole index directory gone */
	index_close(f->ix);
	f->ix = NULL;
	{
		char cmd[600];

		snprintf(path, sizeof(path), "%s/index/data.mdb", f->state);
		assert_int_equal(unlink(path), 0);
		snprintf(path, sizeof(path), "%s/index/lock.mdb", f->state);
		assert_int_equal(unlink(path), 0);
		snprintf(cmd, sizeof(cmd), "%s/index", f->state);
		assert_int_equal(rmdir(cmd), 0);
	}
	reopen(f);
	v = load(f, "/p", &n, &known);
	assert_int_equal(n, 0);
	assert_int_equal(known, 0);

	/* garbage in place of the data file: moved aside, new index */
	index_close(f->ix);
	f->ix = NULL;
	snprintf(path, sizeof(path), "%s/index/data.mdb", f->state);
	fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	assert_true(fd >= 0);
	{
		char junk[8192];

		memset(junk, 0x5a, sizeof(junk));
		assert_int_equal(write(fd, junk, sizeof(junk)),
		    (ssize_t)sizeof(junk));
	}
	close(fd);
	reopen(f);
	snprintf(path, sizeof(path), "%s/index/data.mdb.corrupt", f->state);
	assert_int_equal(access(path, F_OK), 0);
	v = load(f, "/p", &n, &known);
	assert_int_equal(n, 0);
	assert_int_equal(known, 0);
	s = mk(7, NULL);
	put(f, "/p", &s);
	v = load(f, "/p", &n, &known);
	assert_int_equal(n, 1);
	index_steps_free(v, n);
}

static void
test_bad_input(void **state)
{
	struct fx *f = *state;
	struct index_step s;
	struct index *ix;
	ckd_err e = { 0 };
	char path[400];

	s = mk(1, NULL);
	memset(s.name, 'n', sizeof(s.name));   /* no terminator */
	assert_int_equal(index_put_step(f->ix, "/r", &s, &e), CKPT_EINVAL);
	s = mk(1, NULL);
	s.state = 1;
	assert_int_equal(index_put_step(f->ix, "/r", &s, &e), CKPT_EINVAL);
	s = mk(1, "\xff not utf-8");
	assert_int_equal(index_put_step(f->ix, "/r", &s, &e), CKPT_EINVAL);
	assert_true(strlen(e.msg) > 0);
	{
		struct index_step *v;
		size_t n;
		int known;

		v = load(f, "/r", &n, &known);
		assert_int_equal(n, 0);
		assert_int_equal(known, 0);
		(void)v;
	}
	/* a state dir that cannot be created */
	snprintf(path, sizeof(path), "%s/file", f->dir);
	assert_int_equal(close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC,
	    0644)), 0);
	snprintf(path, sizeof(path), "%s/file/state", f->dir);
	assert_true(index_open(path, &ix, &e) != 0);
	assert_null(ix);
	assert_int_equal(index_open("", &ix, &e), CKPT_EINVAL);
}

#define NTHREADS 4
#define PER_THREAD 40

struct targ {
	struct fx *f;
	int id;
	int failures;
};

static void *
writer(void *p)
{
	struct targ *a = p;
	struct index_step s, *v;
	char root[32];
	ckd_err e;
	size_t n;
	int i, known;

	snprintf(root, sizeof(root), "/thread/%d", a->id);
	for (i = 0; i < PER_THREAD; i++) {
		s = mk((uint64_t)i, NULL);
		if (index_put_step(a->f->ix, root, &s, &e) != 0)
			a->failures++;
		if (index_put_step(a->f->ix, "/shared", &s, &e) != 0)
			a->failures++;
		if (index_load_root(a->f->ix, root, &v, &n, &known, &e) != 0 ||
		    n != (size_t)i + 1)
			a->failures++;
		else
			index_steps_free(v, n);
	}
	return NULL;
}

static void
test_threads(void **state)
{
	struct fx *f = *state;
	struct targ a[NTHREADS];
	pthread_t t[NTHREADS];
	struct index_step *v;
	char root[32];
	size_t n;
	int i, known;

	for (i = 0; i < NTHREADS; i++) {
		a[i].f = f;
		a[i].id = i;
		a[i].failures = 0;
		assert_int_equal(pthread_create(&t[i], NULL, writer, &a[i]), 0);
	}
	for (i = 0; i < NTHREADS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(a[i].failures, 0);
	}
	for (i = 0; i < NTHREADS; i++) {
		snprintf(root, sizeof(root), "/thread/%d", i);
		v = load(f, root, &n, &known);
		assert_int_equal(n, PER_THREAD);
		index_steps_free(v, n);
	}
	v = load(f, "/shared", &n, &known);
	assert_int_equal(n, PER_THREAD);
	index_steps_free(v, n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_step_order, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_del, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roots_isolated, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_persistence, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_lost_files, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
