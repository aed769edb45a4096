/*
 * test_s3.c - the S3 client (daemon/s3.c) against a real Ceph radosgw
 * started for the suite by tests/ceph/rgw.sh: objects, ranges, lists with
 * pagination, multipart uploads of 256 MiB in parallel parts, errors
 * (missing keys, wrong credentials), small GETs on a kept connection
 * answered without a delayed-ACK wait, and radosgw killed and restarted in
 * the middle of an upload.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "s3.h"
#include "cephbed.h"

#define BUCKET "ckpt-test"

static struct cephbed bed;
static struct s3_client *cli;
static char tmpdir[512];

static int
group_setup(void **state)
{
	ckd_err e;
	const char *tmp = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/ckpt-s3test-XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	if (cephbed_start(&bed) != 0)
		return -1;
	if (s3_client_new(&cli, NULL, &e) != 0) {
		fprintf(stderr, "s3_client_new: %s\n", e.msg);
		return -1;
	}
	if (s3_bucket_create(cli, BUCKET, &e) != 0) {
		fprintf(stderr, "bucket: %s\n", e.msg);
		return -1;
	}
	fprintf(stderr, "# client: %s\n", s3_client_describe(cli));
	return 0;
}

static int
group_teardown(void **state)
{
	char cmd[600];
	s3_client_free(cli);
	cephbed_stop(&bed);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A file of len deterministic bytes (seed), opened for reading. */
static int
make_file(const char *name, uint64_t len, uint64_t seed)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	size_t chunk = 4u << 20;
	char *buf = malloc(chunk);
	assert_non_null(buf);
	for (uint64_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? (size_t)(len - off) : chunk;
		cephbed_fill(buf, off, n, seed);
		assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
	}
	free(buf);
	return fd;
}

/* Ranged GETs of [off, off + len) match the generator. */
static void
check_range(const char *key, uint64_t off, size_t len, uint64_t seed)
{
	ckd_err e;
	char *got = malloc(len), *want = malloc(len);
	assert_non_null(got);
	int rc = s3_get(cli, BUCKET, key, off, len, got, &e);
	if (rc != 0)
		fail_msg("get %s [%" PRIu64 ", +%zu): %s", key, off, len, e.msg);
	cephbed_fill(want, off, len, seed);
	assert_memory_equal(got, want, len);
	free(got);
	free(want);
}

/* The whole object, read with s3_get_fd into a file, matches. */
static void
check_whole(const char *key, uint64_t size, uint64_t seed)
{
	ckd_err e;
	char path[700];
	snprintf(path, sizeof(path), "%s/download", tmpdir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	/* Into the file at an offset, to check that fd_off is honoured. */
	int rc = s3_get_fd(cli, BUCKET, key, 0, size, fd, 4096, &e);
	if (rc != 0)
		fail_msg("get_fd %s: %s", key, e.msg);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal((uint64_t)st.st_size, size + 4096);
	size_t chunk = 4u << 20;
	char *a = malloc(chunk), *b = malloc(chunk);
	for (uint64_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
		assert_int_equal(pread(fd, a, n, (off_t)(off + 4096)), (ssize_t)n);
		cephbed_fill(b, off, n, seed);
		if (memcmp(a, b, n) != 0)
			fail_msg("%s differs in [%" PRIu64 ", +%zu)", key, off, n);
	}
	free(a);
	free(b);
	close(fd);
	unlink(path);
}

static void
test_object_roundtrip(void **state)
{
	ckd_err e;
	struct s3_stat st;
	char buf[64];
	const char *text = "hello, object store";

	assert_int_equal(s3_put(cli, BUCKET, "rt/hello.txt", text, strlen(text), &e), 0);
	assert_int_equal(s3_head(cli, BUCKET, "rt/hello.txt", &st, &e), 0);
	assert_int_equal(st.size, strlen(text));
	assert_true(strlen(st.etag) == 32);   /* MD5 of a single PUT */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(s3_get(cli, BUCKET, "rt/hello.txt", 0, strlen(text), buf, &e), 0);
	assert_string_equal(buf, text);
	/* A range in the middle. */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(s3_get(cli, BUCKET, "rt/hello.txt", 7, 6, buf, &e), 0);
	assert_string_equal(buf, "object");
	/* Past the end: refused, not a short read. */
	assert_int_equal(s3_get(cli, BUCKET, "rt/hello.txt", 10, 30, buf, &e), CKPT_EINVAL);
	assert_int_equal(s3_get(cli, BUCKET, "rt/hello.txt", 100, 1, buf, &e), CKPT_EINVAL);
	/* An empty object. */
	assert_int_equal(s3_put(cli, BUCKET, "rt/empty", "", 0, &e), 0);
	assert_int_equal(s3_head(cli, BUCKET, "rt/empty", &st, &e), 0);
	assert_int_equal(st.size, 0);
	/* Keys with characters that need encoding. */
	const char *odd = "rt/odd key+=&?%#~.,;'é";
	assert_int_equal(s3_put(cli, BUCKET, odd, "x", 1, &e), 0);
	assert_int_equal(s3_get(cli, BUCKET, odd, 0, 1, buf, &e), 0);
	assert_int_equal(buf[0], 'x');
	/* Overwrite, then delete. */
	assert_int_equal(s3_put(cli, BUCKET, "rt/hello.txt", "bye", 3, &e), 0);
	assert_int_equal(s3_head(cli, BUCKET, "rt/hello.txt", &st, &e), 0);
	assert_int_equal(st.size, 3);
	assert_int_equal(s3_delete(cli, BUCKET, "rt/hello.txt", &e), 0);
	assert_int_equal(s3_head(cli, BUCKET, "rt/hello.txt", &st, &e), CKPT_ENOTFOUND);
	assert_int_equal(s3_delete(cli, BUCKET, odd, &e), 0);
	assert_int_equal(s3_delete(cli, BUCKET, "rt/empty", &e), 0);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/*
 * Small GETs one after another on the client's kept connection: each
 * answers in about a millisecond. RGW sends a short body after its headers
 * only once they are acknowledged; the kernel delays that ACK on a kept
 * connection by at least 40 ms unless the client acknowledges at once
 * (s3.c's quickack). The median of 15 is taken, so one slow round of a
 * loaded machine does not decide.
 */
static void
test_small_gets_kept(void **state)
{
	enum { N = 15 };
	ckd_err e;
	char body[3000], buf[sizeof(body)];
	double t[N];
	struct timespec a, b;

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 26);
	assert_int_equal(s3_put(cli, BUCKET, "small/obj", body, sizeof(body), &e), 0);
	/* the connection is open and kept */
	assert_int_equal(s3_get(cli, BUCKET, "small/obj", 0, sizeof(buf), buf, &e), 0);
	for (int i = 0; i < N; i++) {
		memset(buf, 0, sizeof(buf));
		clock_gettime(CLOCK_MONOTONIC, &a);
		assert_int_equal(s3_get(cli, BUCKET, "small/obj", 0, sizeof(buf), buf, &e), 0);
		clock_gettime(CLOCK_MONOTONIC, &b);
		assert_memory_equal(buf, body, sizeof(body));
		t[i] = (double)(b.tv_sec - a.tv_sec) * 1e3 +
		    (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	}
	qsort(t, N, sizeof(t[0]), cmp_double);
	fprintf(stderr, "# small GET on a kept connection: median %.2f ms, "
	    "max %.2f ms\n", t[N / 2], t[N - 1]);
	if (t[N / 2] >= 20.0)
		fail_msg("small GETs wait for a delayed ACK: median %.2f ms",
		    t[N / 2]);
	assert_int_equal(s3_delete(cli, BUCKET, "small/obj", &e), 0);
}

static void
test_missing(void **state)
{
	ckd_err e;
	struct s3_stat st;
	char buf[8];

	assert_int_equal(s3_get(cli, BUCKET, "missing/key", 0, 4, buf, &e), CKPT_ENOTFOUND);
	assert_non_null(strstr(e.msg, "NoSuchKey"));
	assert_non_null(strstr(e.msg, "missing/key"));
	assert_int_equal(s3_head(cli, BUCKET, "missing/key", &st, &e), CKPT_ENOTFOUND);
	assert_int_equal(s3_get(cli, "no-such-bucket-x", "k", 0, 4, buf, &e), CKPT_ENOTFOUND);
	assert_non_null(strstr(e.msg, "NoSuchBucket"));
	/* Deleting what is not there is not an error (S3 semantics). */
	assert_int_equal(s3_delete(cli, BUCKET, "missing/key", &e), 0);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_list_pages(void **state)
{
	ckd_err e;
	char key[64];
	enum { N = 25 };

	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "ls/k%03d", i);
		assert_int_equal(s3_put(cli, BUCKET, key, key, strlen(key), &e), 0);
	}
	assert_int_equal(s3_put(cli, BUCKET, "ls/sub/a", "a", 1, &e), 0);
	assert_int_equal(s3_put(cli, BUCKET, "ls/sub/b", "b", 1, &e), 0);
	assert_int_equal(s3_put(cli, BUCKET, "lsx", "x", 1, &e), 0);

	/* Pages of 7, with a delimiter: 25 keys and one common prefix. */
	char *seen[N + 4];
	size_t nseen = 0, pages = 0, nprefixes = 0;
	char *token = NULL;
	do {
		struct s3_list l;
		int rc = s3_list(cli, BUCKET, "ls/", "/", token, 7, &l, &e);
		if (rc != 0)
			fail_msg("list: %s", e.msg);
		pages++;
		assert_true(l.nobjects + l.nprefixes <= 7);
		for (size_t i = 0; i < l.nobjects; i++) {
			assert_true(nseen < N + 4);
			seen[nseen++] = strdup(l.objects[i].key);
			assert_int_equal(l.objects[i].size, strlen(l.objects[i].key));
		}
		for (size_t i = 0; i < l.nprefixes; i++) {
			assert_string_equal(l.prefixes[i], "ls/sub/");
			nprefixes++;
		}
		free(token);
		token = l.next_token != NULL ? strdup(l.next_token) : NULL;
		s3_list_free(&l);
	} while (token != NULL && pages < 20);
	assert_null(token);
	assert_int_equal(nseen, N);
	assert_int_equal(nprefixes, 1);
	assert_true(pages >= 4);
	qsort(seen, nseen, sizeof(seen[0]), cmp_str);
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "ls/k%03d", i);
		assert_string_equal(seen[i], key);
		free(seen[i]);
	}

	/* Without a delimiter every key under the prefix is listed. */
	struct s3_list l;
	assert_int_equal(s3_list(cli, BUCKET, "ls/sub", NULL, NULL, 0, &l, &e), 0);
	assert_int_equal(l.nobjects, 2);
	assert_int_equal(l.nprefixes, 0);
	assert_null(l.next_token);
	s3_list_free(&l);
	/* An empty prefix. */
	assert_int_equal(s3_list(cli, BUCKET, "nothing-here/", NULL, NULL, 0, &l, &e), 0);
	assert_int_equal(l.nobjects, 0);
	s3_list_free(&l);
	/* A bucket that does not exist. */
	assert_int_equal(s3_list(cli, "no-such-bucket-x", NULL, NULL, NULL, 0, &l, &e),
	    CKPT_ENOTFOUND);
}

/* 256 MiB and an odd tail, in parts of 16 MiB, four in flight. */
static void
test_multipart_256m(void **state)
{
	ckd_err e;
	struct s3_client *c;
	struct s3_opts o = { .part_size = 16u << 20, .parallel = 4 };
	const uint64_t size = (256ull << 20) + 12345;
	const uint64_t seed = 256;
	struct s3_stat st;
	struct s3_counters n0, n1;

	assert_int_equal(s3_client_new(&c, &o, &e), 0);
	int fd = make_file("mp256", size, seed);
	s3_counters(c, &n0);
	int rc = s3_put_fd(c, BUCKET, "mp/big", fd, 0, size, &e);
	if (rc != 0)
		fail_msg("multipart: %s", e.msg);
	s3_counters(c, &n1);
	/* 17 parts + initiate + complete. */
	assert_true(n1.requests - n0.requests >= 19);
	assert_true(n1.bytes_up - n0.bytes_up >= size);
	close(fd);

	assert_int_equal(s3_head(cli, BUCKET, "mp/big", &st, &e), 0);
	assert_int_equal(st.size, size);
	assert_non_null(strstr(st.etag, "-17"));
	/* Ranged reads: the start, across each part boundary, the tail. */
	check_range("mp/big", 0, 4096, seed);
	for (uint64_t b = 16u << 20; b < size; b += 16u << 20)
		check_range("mp/big", b - 1000, 5000, seed);
	check_range("mp/big", size - 12345, 12345, seed);
	check_range("mp/big", 100u << 20, 3u << 20, seed);
	check_whole("mp/big", size, seed);
	s3_client_free(c);
	assert_int_equal(s3_delete(cli, BUCKET, "mp/big", &e), 0);
}

/* The first bytes and the size in one GET: a short object whole, a long
 * one's first cap bytes, an empty one, a missing one. */
static void
test_get_first(void **state)
{
	const size_t big = 100u << 10;
	char *buf = malloc(big), *out = malloc(64u << 10);
	struct s3_stat st;
	uint64_t got;
	ckd_err e;

	(void)state;
	assert_non_null(buf);
	assert_non_null(out);
	cephbed_fill(buf, 0, big, 31);
	assert_int_equal(s3_put(cli, BUCKET, "first/short", buf, 10, &e), 0);
	assert_int_equal(s3_put(cli, BUCKET, "first/long", buf, big, &e), 0);
	assert_int_equal(s3_put(cli, BUCKET, "first/empty", buf, 0, &e), 0);
	assert_int_equal(s3_get_first(cli, BUCKET, "first/short", out,
	    64u << 10, &got, &st, &e), 0);
	assert_int_equal(got, 10);
	assert_int_equal(st.size, 10);
	assert_memory_equal(out, buf, 10);
	assert_int_equal(s3_get_first(cli, BUCKET, "first/long", out,
	    64u << 10, &got, &st, &e), 0);
	assert_int_equal(got, 64u << 10);
	assert_int_equal(st.size, big);
	assert_memory_equal(out, buf, 64u << 10);
	assert_int_equal(s3_get_first(cli, BUCKET, "first/empty", out,
	    64u << 10, &got, &st, &e), 0);
	assert_int_equal(got, 0);
	assert_int_equal(st.size, 0);
	assert_int_equal(s3_get_first(cli, BUCKET, "first/none", out,
	    64u << 10, &got, &st, &e), CKPT_ENOTFOUND);
	free(buf);
	free(out);
}

/* A buffer upload above the threshold is multipart too. */
static void
test_multipart_buffer(void **state)
{
	ckd_err e;
	struct s3_client *c;
	struct s3_opts o = { .part_size = 5u << 20, .parallel = 3 };
	const size_t size = (12u << 20) + 7;
	struct s3_stat st;
	char *buf = malloc(size);

	assert_non_null(buf);
	cephbed_fill(buf, 0, size, 12);
	assert_int_equal(s3_client_new(&c, &o, &e), 0);
	assert_int_equal(s3_put(c, BUCKET, "mp/buf", buf, size, &e), 0);
	assert_int_equal(s3_head(c, BUCKET, "mp/buf", &st, &e), 0);
	assert_int_equal(st.size, size);
	assert_non_null(strstr(st.etag, "-3"));
	check_whole("mp/buf", size, 12);
	s3_client_free(c);
	free(buf);
}

static void
test_wrong_credentials(void **state)
{
	ckd_err e;
	struct s3_client *c;
	char buf[4];
	struct s3_opts bad_id = { .access_key = "NOSUCHKEYID0000000", .secret_key = "x" };
	struct s3_opts bad_secret = {
		.access_key = getenv("AWS_ACCESS_KEY_ID"), .secret_key = "wrong-secret",
	};

	assert_int_equal(s3_client_new(&c, &bad_id, &e), 0);
	assert_int_equal(s3_put(c, BUCKET, "cred/x", "x", 1, &e), CKPT_EACCES);
	assert_non_null(strstr(e.msg, "InvalidAccessKeyId"));
	assert_int_equal(s3_get(c, BUCKET, "cred/x", 0, 1, buf, &e), CKPT_EACCES);
	s3_client_free(c);

	assert_int_equal(s3_client_new(&c, &bad_secret, &e), 0);
	assert_int_equal(s3_put(c, BUCKET, "cred/x", "x", 1, &e), CKPT_EACCES);
	assert_non_null(strstr(e.msg, "SignatureDoesNotMatch"));
	assert_null(strstr(e.msg, "wrong-secret"));
	assert_null(strstr(s3_client_describe(c), "wrong-secret"));
	struct s3_counters n;
	s3_counters(c, &n);
	assert_int_equal(n.retries, 0);    /* 4xx: not retried */
	s3_client_free(c);

	/* A multipart upload with bad keys fails at once, cleanly. */
	struct s3_opts bad_mp = bad_secret;
	bad_mp.part_size = 5u << 20;
	int fd = make_file("cred", 11u << 20, 3);
	assert_int_equal(s3_client_new(&c, &bad_mp, &e), 0);
	assert_int_equal(s3_put_fd(c, BUCKET, "cred/big", fd, 0, 11u << 20, &e), CKPT_EACCES);
	s3_client_free(c);
	close(fd);
	struct s3_stat st;
	assert_int_equal(s3_head(cli, BUCKET, "cred/big", &st, &e), CKPT_ENOTFOUND);
}

/* A bucket quota: CKPT_ENOSPC, for one PUT and for a multipart upload
 * (aborted, nothing visible). */
static void
test_quota(void **state)
{
	ckd_err e;
	struct s3_client *c;
	struct s3_opts o = { .part_size = 5u << 20, .parallel = 2 };
	struct s3_stat st;
	char *buf = calloc(1, 3u << 20);

	assert_non_null(buf);
	assert_int_equal(s3_bucket_create(cli, "ckpt-quota", &e), 0);
	assert_int_equal(cephbed_quota(&bed, "ckpt-quota", 1u << 20), 0);
	assert_int_equal(s3_put(cli, "ckpt-quota", "small", buf, 1000, &e), 0);
	assert_int_equal(s3_put(cli, "ckpt-quota", "big", buf, 3u << 20, &e), CKPT_ENOSPC);
	assert_non_null(strstr(e.msg, "QuotaExceeded"));
	assert_int_equal(s3_head(cli, "ckpt-quota", "big", &st, &e), CKPT_ENOTFOUND);
	int fd = make_file("quota", 12u << 20, 5);
	assert_int_equal(s3_client_new(&c, &o, &e), 0);
	assert_int_equal(s3_put_fd(c, "ckpt-quota", "mp", fd, 0, 12u << 20, &e), CKPT_ENOSPC);
	assert_int_equal(s3_head(cli, "ckpt-quota", "mp", &st, &e), CKPT_ENOTFOUND);
	s3_client_free(c);
	close(fd);
	free(buf);
}

/* Keys, region and endpoint from the AWS files of a profile. */
static void
test_aws_files(void **state)
{
	ckd_err e;
	struct s3_client *c;
	char path[700], *saved[4];
	const char *names[] = {
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION",
	};

	for (int i = 0; i < 4; i++)
		saved[i] = strdup(getenv(names[i]));
	snprintf(path, sizeof(path), "%s/credentials", tmpdir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "[default]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n\n"
	    "# the one we use\n[ckpt]\naws_access_key_id = %s\naws_secret_access_key=%s\n",
	    saved[0], saved[1]);
	fclose(f);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	snprintf(path, sizeof(path), "%s/config", tmpdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "[default]\nregion = eu-west-9\n[profile ckpt]\nregion = %s\n"
	    "endpoint_url = %s\n", saved[3], saved[2]);
	fclose(f);
	setenv("AWS_CONFIG_FILE", path, 1);
	for (int i = 0; i < 4; i++)
		unsetenv(names[i]);
	unsetenv("AWS_DEFAULT_REGION");
	setenv("AWS_PROFILE", "ckpt", 1);

	int rc = s3_client_new(&c, NULL, &e);
	for (int i = 0; i < 4; i++) {
		setenv(names[i], saved[i], 1);
		free(saved[i]);
	}
	unsetenv("AWS_PROFILE");
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	unsetenv("AWS_CONFIG_FILE");
	if (rc != 0)
		fail_msg("client from files: %s", e.msg);
	assert_non_null(strstr(s3_client_describe(c), "credentials file"));
	assert_non_null(strstr(s3_client_describe(c), "path-style"));
	assert_int_equal(s3_put(c, BUCKET, "files/x", "files", 5, &e), 0);
	char buf[5];
	assert_int_equal(s3_get(c, BUCKET, "files/x", 0, 5, buf, &e), 0);
	assert_memory_equal(buf, "files", 5);
	assert_int_equal(s3_delete(c, BUCKET, "files/x", &e), 0);
	s3_client_free(c);
}

struct bg_upload {
	struct s3_client *c;
	int fd;
	uint64_t size;
	int rc;
	ckd_err e;
};

static void *
bg_upload_run(void *arg)
{
	struct bg_upload *u = arg;
	u->rc = s3_put_fd(u->c, BUCKET, "restart/big", u->fd, 0, u->size, &u->e);
	return NULL;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* radosgw is killed (SIGKILL) while parts are in flight, and started
 * again: the upload either completes (retries) with the right bytes, or
 * fails cleanly with no object visible. */
static void
test_rgw_restart(void **state)
{
	ckd_err e;
	struct s3_opts o = {
		.part_size = 8u << 20, .parallel = 2, .retries = 12, .backoff_ms = 200,
		.connect_timeout_ms = 3000, .stall_timeout_ms = 10000,
	};
	const uint64_t size = 192ull << 20;
	struct bg_upload u = { .size = size };
	struct s3_counters n;
	struct s3_stat st;
	pthread_t t;

	assert_int_equal(s3_client_new(&u.c, &o, &e), 0);
	u.fd = make_file("restart", size, 77);
	assert_int_equal(pthread_create(&t, NULL, bg_upload_run, &u), 0);
	/* Wait for parts to be moving. */
	for (int i = 0; i < 3000; i++) {
		s3_counters(u.c, &n);
		if (n.bytes_up >= (24u << 20))
			break;
		sleep_ms(5);
	}
	assert_int_equal(cephbed_rgw(&bed, "kill-rgw"), 0);
	sleep_ms(1000);
	assert_int_equal(cephbed_rgw(&bed, "start-rgw"), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	s3_counters(u.c, &n);
	fprintf(stderr, "# upload after restart: rc %d, %" PRIu64 " requests, %" PRIu64
	    " retries%s%s\n", u.rc, n.requests, n.retries, u.rc != 0 ? ": " : "",
	    u.rc != 0 ? u.e.msg : "");
	/* The kill hit requests in flight. */
	assert_true(n.retries > 0);
	if (u.rc == 0) {
		assert_int_equal(s3_head(cli, BUCKET, "restart/big", &st, &e), 0);
		assert_int_equal(st.size, size);
		check_range("restart/big", (8u << 20) - 10, 20, 77);
		check_whole("restart/big", size, 77);
		assert_int_equal(s3_delete(cli, BUCKET, "restart/big", &e), 0);
	} else {
		/* A clean failure: nothing half-made is visible. */
		assert_true(u.rc == CKPT_EIO || u.rc == CKPT_ETIMEDOUT);
		assert_int_equal(s3_head(cli, BUCKET, "restart/big", &st, &e), CKPT_ENOTFOUND);
	}
	close(u.fd);
	s3_client_free(u.c);
	/* The shared client reconnects too. */
	assert_int_equal(s3_put(cli, BUCKET, "restart/after", "ok", 2, &e), 0);
	assert_int_equal(s3_delete(cli, BUCKET, "restart/after", &e), 0);
}

/* radosgw goes down for longer than the retries last: the upload fails
 * with a clear error, and once radosgw is back no object is visible. */
static void
test_rgw_down(void **state)
{
	ckd_err e;
	struct s3_opts o = {
		.part_size = 8u << 20, .parallel = 2, .retries = 2, .backoff_ms = 50,
		.connect_timeout_ms = 2000, .stall_timeout_ms = 5000,
	};
	const uint64_t size = 192ull << 20;
	struct bg_upload u = { .size = size };
	struct s3_counters n;
	struct s3_stat st;
	pthread_t t;

	assert_int_equal(s3_client_new(&u.c, &o, &e), 0);
	u.fd = make_file("down", size, 78);
	assert_int_equal(pthread_create(&t, NULL, bg_upload_run, &u), 0);
	for (int i = 0; i < 3000; i++) {
		s3_counters(u.c, &n);
		if (n.bytes_up >= (24u << 20))
			break;
		sleep_ms(5);
	}
	assert_int_equal(cephbed_rgw(&bed, "kill-rgw"), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	fprintf(stderr, "# upload with radosgw down: rc %d: %s\n", u.rc, u.e.msg);
	assert_int_equal(u.rc, CKPT_EIO);
	assert_non_null(strstr(u.e.msg, "restart/big"));
	assert_non_null(strstr(u.e.msg, "3 tries"));
	assert_int_equal(cephbed_rgw(&bed, "start-rgw"), 0);
	assert_int_equal(s3_head(cli, BUCKET, "restart/big", &st, &e), CKPT_ENOTFOUND);
	struct s3_list l;
	assert_int_equal(s3_list(cli, BUCKET, "restart/", NULL, NULL, 0, &l, &e), 0);
	assert_int_equal(l.nobjects, 0);
	s3_list_free(&l);
	close(u.fd);
	s3_client_free(u.c);
}

/* Many threads on one client at once. */
struct conc {
	int id;
	int rc;
	ckd_err e;
};

static void *
conc_run(void *arg)
{
	struct conc *k = arg;
	char key[32], body[64], back[64];
	for (int i = 0; i < 20 && k->rc == 0; i++) {
		snprintf(key, sizeof(key), "conc/%d/%d", k->id, i);
		int n = snprintf(body, sizeof(body), "thread %d object %d", k->id, i);
		if ((k->rc = s3_put(cli, BUCKET, key, body, (size_t)n, &k->e)) != 0 ||
		    (k->rc = s3_get(cli, BUCKET, key, 0, (uint64_t)n, back, &k->e)) != 0)
			break;
		if (memcmp(body, back, (size_t)n) != 0)
			k->rc = -1;
		else
			k->rc = s3_delete(cli, BUCKET, key, &k->e);
	}
	return NULL;
}

static void
test_concurrent(void **state)
{
	enum { T = 8 };
	pthread_t t[T];
	struct conc k[T];
	for (int i = 0; i < T; i++) {
		k[i] = (struct conc){ .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, conc_run, &k[i]), 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(t[i], NULL);
		if (k[i].rc != 0)
			fail_msg("thread %d: %d %s", i, k[i].rc, k[i].e.msg);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_object_roundtrip),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_small_gets_kept),
		cmocka_unit_test(test_get_first),
		cmocka_unit_test(test_list_pages),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_wrong_credentials),
		cmocka_unit_test(test_aws_files),
		cmocka_unit_test(test_quota),
		cmocka_unit_test(test_multipart_buffer),
		cmocka_unit_test(test_multipart_256m),
		cmocka_unit_test(test_rgw_restart),
		cmocka_unit_test(test_rgw_down),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
