/*
 * test_backend_s3.c - the store (format and commit protocol, the same code
 * as on a filesystem) over the S3 backend (daemon/backend_s3.c), against a
 * real Ceph radosgw started for the suite by tests/ceph/rgw.sh: a step
 * written in place and committed by its _CHECKPOINT_METADATA, listed only
 * then, restored through memfds, verified, deleted; the leftovers of an
 * unfinished save collected; wrong credentials refused with S3's reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "s3.h"
#include "s3lease.h"
#include "store.h"
#include "cephbed.h"

#define BUCKET "ckpt-store"
#define ROOT "s3://" BUCKET "/runs/a"
#define BIG (72u << 20)         /* above the one-PUT limit: multipart */

static struct cephbed bed;
static struct s3_client *cli;   /* the test's own view of the bucket */

static int
group_setup(void **state)
{
	ckd_err e;

	(void)state;
	if (cephbed_start(&bed) != 0)
		return -1;
	if (s3_client_new(&cli, NULL, &e) != 0 ||
	    s3_bucket_create(cli, BUCKET, &e) != 0) {
		fprintf(stderr, "s3: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	s3_client_free(cli);
	cephbed_stop(&bed);
	return 0;
}

/* Keys under prefix (all of them but the lease of a root opened to be
 * written, s3lease.h), counted. */
static size_t
count_keys(const char *prefix)
{
	struct s3_list l;
	ckd_err e;
	size_t n = 0, i;

	memset(&l, 0, sizeof l);
	if (s3_list(cli, BUCKET, prefix, NULL, NULL, 1000, &l, &e) != 0)
		fail_msg("list %s: %s", prefix, e.msg);
	for (i = 0; i < l.nobjects; i++)
		n += strstr(l.objects[i].key, "/" S3LEASE_NAME) == NULL;
	s3_list_free(&l);
	return n;
}

static int
has_key(const char *key)
{
	struct s3_stat st;
	ckd_err e;

	return s3_head(cli, BUCKET, key, &st, &e) == 0;
}

/* Bytes radosgw has sent in GET answers so far. */
static uint64_t
get_bytes(void)
{
	uint64_t v;

	if (cephbed_rgw_counter(&bed, "get_b", &v) != 0)
		fail_msg("radosgw perf counter get_b not found");
	return v;
}

/* 1 when len bytes of fd at off are all zero (not fetched). */
static int
all_zero(int fd, uint64_t off, size_t len)
{
	unsigned char *p;
	size_t i;
	int z = 1;

	assert_non_null(p = malloc(len));
	assert_int_equal(pread(fd, p, len, (off_t)off), (ssize_t)len);
	for (i = 0; i < len && z; i++)
		z = p[i] == 0;
	free(p);
	return z;
}

/* Runs first, in a child with a wrong secret (the backend's client is
 * made once per process, at its first root). */
static void
test_wrong_credentials(void **state)
{
	int st, fds[2];
	pid_t pid;
	char msg[512] = "";
	ssize_t n;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	if ((pid = fork()) == 0) {
		const struct store_backend *be;
		ckd_err e;
		int fd, r;

		close(fds[0]);
		setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret", 1);
		r = store_open_root(ROOT, 1, 0755, &be, &fd, &e);
		if (r != 0 && write(fds[1], e.msg, strlen(e.msg)) < 0)
			_exit(3);
		_exit(r == CKPT_EACCES ? 0 : r == 0 ? 1 : 2);
	}
	close(fds[1]);
	n = read(fds[0], msg, sizeof msg - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	print_message("wrong secret: %s\n", msg);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_non_null(strstr(msg, "403"));
	assert_null(strstr(msg, "not-the-secret"));
}

static void
test_root(void **state)
{
	const struct store_backend *be = NULL;
	char name[300];
	struct stat st, st2;
	ckd_err e;
	int fd, fd2;

	(void)state;
	assert_int_equal(store_open_root(ROOT, 1, 0755, &be, &fd, &e), 0);
	assert_ptr_equal(be, &backend_s3);
	assert_int_equal(be->root_name(fd, name, sizeof name, &e), 0);
	assert_string_equal(name, ROOT);
	assert_int_equal(be->fstat(fd, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	/* the same root has the same identity, another one another */
	assert_int_equal(store_open_root(ROOT "/", 0, 0, &be, &fd2, &e), 0);
	assert_int_equal(be->fstat(fd2, &st2), 0);
	assert_true(st.st_ino == st2.st_ino && st.st_dev == st2.st_dev);
	be->close(fd2);
	assert_int_equal(store_open_root(ROOT "x", 0, 0, &be, &fd2, &e), 0);
	assert_int_equal(be->fstat(fd2, &st2), 0);
	assert_true(st.st_ino != st2.st_ino);
	be->close(fd2);
	be->close(fd);

	assert_int_equal(store_open_root("s3://no-such-bucket-here/x", 0, 0,
	    &be, &fd, &e), CKPT_ENOTFOUND);
	print_message("missing bucket: %s\n", e.msg);
	assert_true(store_open_root("s3://Bad_Bucket/x", 0, 0, &be, &fd,
	    &e) != 0);
	assert_non_null(strstr(e.msg, "Bad_Bucket"));
}

/* One step: a tree item (a small and a multipart tensor), a JSON item,
 * _CHECKPOINT_METADATA; committed, listed, restored, verified, deleted. */
static void
test_step(void **state)
{
	static const uint64_t shs[] = { 4 }, shb[] = { BIG / 4 };
	const struct store_backend *be;
	struct store_tensor t[2];
	struct store_step_meta m, back;
	struct store_entry *ents;
	struct store_sync b;
	Ckpt__Item it = CKPT__ITEM__INIT, *rd = NULL;
	Ckpt__Leaf lv[2], *lp[2];
	char *names[] = { "default", "extra" }, *buf;
	Ckpt__Handler hs[] = { CKPT__HANDLER__HANDLER_STANDARD,
	    CKPT__HANDLER__HANDLER_JSON };
	float small[4] = { 1, 2, 3, 4 };
	unsigned char *big;
	int rootfd, tmpfd, ifd, jfd, sfd, fds[4];
	size_t n, nfds = 0, i, len;
	struct store_range rg;
	struct store_fetch one;
	uint64_t got;
	ckd_err e;

	(void)state;
	assert_non_null(big = malloc(BIG));
	cephbed_fill(big, 0, BIG, 7);
	assert_int_equal(store_open_root(ROOT, 1, 0755, &be, &rootfd, &e), 0);

	assert_int_equal(store_begin(be, rootfd, "1", 0755, &tmpfd, &e), 0);
	assert_true(has_key("runs/a/1" CKPT_TMP_SUFFIX));
	/* in progress: listed as a leftover-to-be, not as a step */
	assert_int_equal(store_scan(be, rootfd, &(struct store_naming){ 0 },
	    &ents, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_true(ents[0].tmp);
	free(ents);
	/* a second save of the step is refused while this one runs */
	assert_int_equal(store_begin(be, rootfd, "1", 0755, &sfd, &e),
	    CKPT_EBUSY);

	store_sync_init(&b, be);
	assert_int_equal(store_mkdir_item(be, tmpfd, "default", 0755, &ifd,
	    &e), 0);
	memset(t, 0, sizeof t);
	t[0] = (struct store_tensor){ .name = "s", .dtype =
	    CKPT__DTYPE__DTYPE_F32, .ndim = 1, .shape = shs, .src = small,
	    .nbytes = sizeof small };
	t[1] = (struct store_tensor){ .name = "b", .dtype =
	    CKPT__DTYPE__DTYPE_F32, .ndim = 1, .shape = shb, .src = big,
	    .nbytes = BIG };
	if (store_write_safetensors_nosync(be, ifd, "data-00000.safetensors",
	    0644, t, 2, &b, &e) != 0)
		fail_msg("write: %s", e.msg);
	for (i = 0; i < 2; i++) {
		ckpt__leaf__init(&lv[i]);
		lv[i].has_kind = 1;
		lv[i].kind = CKPT__LEAF_KIND__LEAF_ARRAY;
		lv[i].has_dtype = 1;
		lv[i].dtype = CKPT__DTYPE__DTYPE_F32;
		lv[i].n_shape = 1;
		lv[i].shape = (uint64_t *)t[i].shape;
		lv[i].has_nbytes = 1;
		lv[i].nbytes = t[i].nbytes;
		lv[i].file = "data-00000.safetensors";
		lv[i].tensor = (char *)t[i].name;
		lv[i].has_xxh3 = 1;
		lv[i].xxh3 = t[i].xxh3;
		lp[i] = &lv[i];
	}
	it.n_leaves = 2;
	it.leaves = lp;
	assert_int_equal(store_write_tree_metadata_nosync(be, ifd, &it, 0644,
	    &b, &e), 0);
	assert_int_equal(store_mkdir_item(be, tmpfd, "extra", 0755, &jfd, &e),
	    0);
	assert_int_equal(store_write_file_nosync(be, jfd, STORE_JSON_FILE,
	    "{\"a\":1}", 7, 0644, &b, &e), 0);
	memset(&m, 0, sizeof m);
	m.init_ns = 1;
	m.commit_ns = 2;
	m.nitems = 2;
	m.item_names = names;
	m.handlers = hs;
	m.bytes = BIG + sizeof small;
	assert_int_equal(store_write_step_meta_nosync(be, tmpfd, &m, 0644, &b,
	    &e), 0);
	assert_int_equal(store_sync_add(&b, ifd, 1, &e), 0);
	assert_int_equal(store_sync_add(&b, jfd, 1, &e), 0);
	assert_int_equal(store_sync_add(&b, tmpfd, 0, &e), 0);
	if (store_sync_run(&b, &e) != 0)
		fail_msg("sync: %s", e.msg);
	/* every object is there but the commit: not a step yet */
	assert_true(has_key("runs/a/1/default/data-00000.safetensors"));
	assert_true(has_key("runs/a/1/extra/metadata"));
	assert_false(has_key("runs/a/1/" STORE_STEP_METADATA));
	assert_int_equal(store_commit_synced(be, rootfd, "1", &e), 0);
	be->close(tmpfd);
	store_sync_free(&b);
	assert_true(has_key("runs/a/1/" STORE_STEP_METADATA));
	assert_false(has_key("runs/a/1" CKPT_TMP_SUFFIX));

	assert_int_equal(store_scan(be, rootfd, &(struct store_naming){ 0 },
	    &ents, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_false(ents[0].tmp);
	assert_int_equal(ents[0].step, 1);
	free(ents);
	/* committed: a new save of it is refused */
	assert_int_equal(store_begin(be, rootfd, "1", 0755, &sfd, &e),
	    CKPT_EEXIST);

	/* restore, as restore.c does it */
	assert_true((sfd = be->open_dir(rootfd, "1")) >= 0);
	assert_int_equal(store_read_step_meta(be, sfd, &back, &e), 0);
	assert_int_equal(back.bytes, BIG + sizeof small);
	assert_int_equal(back.nitems, 2);
	store_step_meta_free(&back);
	assert_true((ifd = be->open_dir(sfd, "default")) >= 0);
	assert_int_equal(store_read_tree_metadata(be, ifd, &rd, &e), 0);
	assert_int_equal(rd->n_leaves, 2);
	if (store_open_item_files(be, ifd, rd, fds, &nfds, 4, &e) != 0)
		fail_msg("open files: %s", e.msg);
	assert_int_equal(nfds, 1);
	one.f = fds[0];
	one.r = &rg;
	one.n = 1;
	/* verify reads each tensor once, by ranges, not into the file */
	got = get_bytes();
	assert_int_equal(store_verify_item(be, rd, fds, NULL, NULL, &e), 0);
	got = get_bytes() - got;
	print_message("verify: %" PRIu64 " bytes of GET answers\n", got);
	assert_true(got > BIG - (64u << 10) && got < BIG + (1u << 20));
	assert_true(all_zero(fds[0], rd->leaves[1]->offset, 1u << 20));
	/* a restore asks for its tensors' ranges: the small one alone reads
	 * a few KiB, not the 72 MiB beside it in the same object */
	got = get_bytes();
	rg.off = rd->leaves[0]->offset;
	rg.len = t[0].nbytes;
	assert_int_equal(be->fetch(&one, 1, &e), 0);
	got = get_bytes() - got;
	print_message("one tensor of 16 bytes: %" PRIu64 " bytes\n", got);
	assert_true(got < (256u << 10));
	assert_true(all_zero(fds[0], rd->leaves[1]->offset, BIG));
	rg.off = rd->leaves[1]->offset;
	rg.len = t[1].nbytes;
	assert_int_equal(be->fetch(&one, 1, &e), 0);
	rg.len = BIG + 1;       /* past the end of the object */
	assert_int_equal(be->fetch(&one, 1, &e), CKPT_ECORRUPT);
	for (i = 0; i < 2; i++) {
		assert_non_null(buf = malloc(t[i].nbytes));
		assert_int_equal(pread(fds[0], buf, t[i].nbytes,
		    (off_t)rd->leaves[i]->offset), (ssize_t)t[i].nbytes);
		assert_memory_equal(buf, t[i].src, t[i].nbytes);
		free(buf);
	}
	be->close(fds[0]);
	store_item_free(rd);
	be->close(ifd);
	assert_true((jfd = be->open_dir(sfd, "extra")) >= 0);
	assert_int_equal(store_read_file(be, jfd, STORE_JSON_FILE, 100, &buf,
	    &len, &e), 0);
	assert_string_equal(buf, "{\"a\":1}");
	free(buf);
	be->close(jfd);
	be->close(sfd);
	/* a step that is not there */
	assert_int_equal(be->open_dir(rootfd, "2"), -1);
	assert_int_equal(errno, ENOENT);

	/* delete: _CHECKPOINT_METADATA goes first, then everything */
	assert_int_equal(store_delete_step(be, rootfd, "1", NULL, &e), 0);
	assert_int_equal(count_keys("runs/a/"), 0);
	assert_int_equal(store_scan(be, rootfd, &(struct store_naming){ 0 },
	    &ents, &n, &e), 0);
	assert_int_equal(n, 0);
	free(ents);
	assert_int_equal(store_delete_step(be, rootfd, "1", NULL, &e),
	    CKPT_ENOTFOUND);
	be->close(rootfd);
	for (i = 0; i < 2; i++)
		free(t[i].chunks);      /* the writer's chunk sums are ours */
	free(big);
}

/* A save that never committed: its marker and objects are a leftover once
 * no live save holds them, and are collected; one held is left alone. */
static void
test_leftovers(void **state)
{
	const struct store_backend *be;
	struct store_leftover *lo;
	int rootfd, tmpfd, tmp2, ifd;
	size_t n;
	ckd_err e;

	(void)state;
	assert_int_equal(store_open_root(ROOT, 1, 0755, &be, &rootfd, &e), 0);
	assert_int_equal(store_begin(be, rootfd, "5", 0755, &tmpfd, &e), 0);
	assert_int_equal(store_mkdir_item(be, tmpfd, "extra", 0755, &ifd, &e),
	    0);
	assert_int_equal(store_write_file(be, ifd, STORE_JSON_FILE, "{}", 2,
	    0644, &e), 0);
	be->close(ifd);
	assert_int_equal(store_begin(be, rootfd, "6", 0755, &tmp2, &e), 0);

	/* 6 is still being written (held): only 5 goes, once dropped */
	be->close(tmpfd);
	assert_int_equal(store_collect_leftovers(be, rootfd,
	    &(struct store_naming){ 0 }, 0, &lo, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_int_equal(lo[0].step, 5);
	/* when its marker was written (Last-Modified), not the epoch */
	assert_true(lo[0].mtime_ns / 1000000000 > (int64_t)time(NULL) - 600);
	free(lo);
	assert_int_equal(count_keys("runs/a/5"), 0);
	assert_true(has_key("runs/a/6" CKPT_TMP_SUFFIX));
	assert_int_equal(store_abort(be, rootfd, "6", &e), 0);
	be->close(tmp2);
	assert_int_equal(count_keys("runs/a/"), 0);
	/* the root was opened to be written: this process holds its lease */
	assert_true(has_key("runs/a/" S3LEASE_NAME));
	be->close(rootfd);
}

/* An upload that fails (a bucket quota refuses the parts) is an error of
 * the write, leaves no object, and the step aborts clean; a file closed
 * before its upload ended (parts already sent) leaves no object either. */
static void
test_upload_fails(void **state)
{
	const struct store_backend *be;
	struct store_tensor t;
	struct s3_stat st;
	uint64_t sh[1] = { BIG };
	unsigned char *big;
	int rootfd, tmpfd, ifd, fd, r;
	size_t off, n;
	ckd_err e;

	(void)state;
	assert_non_null(big = malloc(BIG));
	cephbed_fill(big, 0, BIG, 9);
	assert_int_equal(s3_bucket_create(cli, "ckpt-store-q", &e), 0);
	assert_int_equal(cephbed_quota(&bed, "ckpt-store-q", 20u << 20), 0);
	assert_int_equal(store_open_root("s3://ckpt-store-q/q", 1, 0755, &be,
	    &rootfd, &e), 0);
	assert_int_equal(store_begin(be, rootfd, "1", 0755, &tmpfd, &e), 0);
	assert_int_equal(store_mkdir_item(be, tmpfd, "default", 0755, &ifd,
	    &e), 0);
	t = (struct store_tensor){ .name = "b", .dtype = CKPT__DTYPE__DTYPE_U8,
	    .ndim = 1, .shape = sh, .src = big, .nbytes = BIG };
	r = store_write_safetensors(be, ifd, "data-00000.safetensors", 0644,
	    &t, 1, &e);
	print_message("over the quota: %s\n", r != 0 ? e.msg : "no error");
	assert_int_equal(r, CKPT_ENOSPC);
	assert_int_equal(s3_head(cli, "ckpt-store-q",
	    "q/1/default/data-00000.safetensors", &st, &e), CKPT_ENOTFOUND);
	be->close(ifd);
	assert_int_equal(store_abort(be, rootfd, "1", &e), 0);
	be->close(tmpfd);
	be->close(rootfd);

	/* closed unfinished, two parts up already */
	assert_int_equal(store_open_root(ROOT, 1, 0755, &be, &rootfd, &e), 0);
	assert_true((fd = be->create(rootfd, "unfinished", 0644)) >= 0);
	for (off = 0; off < BIG; off += n) {
		n = BIG - off > (4u << 20) ? 4u << 20 : BIG - off;
		assert_int_equal(be->write(fd, big + off, n), (ssize_t)n);
	}
	assert_int_equal(be->close(fd), 0);
	assert_false(has_key("runs/a/unfinished"));
	/* written out of order: refused */
	assert_true((fd = be->create(rootfd, "in-order", 0644)) >= 0);
	assert_int_equal(be->pwrite(fd, big, 10, 5), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(be->close(fd), 0);
	assert_false(has_key("runs/a/in-order"));
	be->close(rootfd);
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wrong_credentials),
		cmocka_unit_test(test_root),
		cmocka_unit_test(test_step),
		cmocka_unit_test(test_leftovers),
		cmocka_unit_test(test_upload_fails),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
