/*
 * bench_s3.c - throughput of the S3 client (daemon/s3.c) against curl(1)
 * moving the same bytes to and from the same radosgw (tests/ceph/rgw.sh,
 * started here unless CKPT_CEPH_DIR names a running one). Not a test:
 * it prints medians and ratios.
 *
 *   bench_s3 [-s MiB] [-n runs] [-p part MiB] [-j parallel] [-r range MiB]
 *
 * Upload: s3_put_fd of a file (multipart, parallel parts) and s3_put_fd
 * as one PUT (one stream), against `curl -T` of the same file (one PUT).
 * Restore: the object read in ranges of -r MiB into a file with
 * s3_get_fd, against one `curl -r` per range into the same file; and the
 * whole object in one GET each way.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "s3.h"
#include "benchclock.h"
#include "cephbed.h"

#define BUCKET "ckpt-bench"

static char tmpdir[512], endpoint[256];

static void
die(const char *what, const ckd_err *e)
{
	fprintf(stderr, "bench_s3: %s: %s\n", what, e != NULL ? e->msg : strerror(errno));
	exit(1);
}

int
main(int argc, char **argv)
{
	uint64_t size_mib = 256, part_mib = 16, range_mib = 32;
	unsigned parallel = 4;
	int runs = 5, opt;
	struct cephbed bed;
	ckd_err e;

	while ((opt = getopt(argc, argv, "s:n:p:j:r:")) != -1) {
		switch (opt) {
		case 's': size_mib = strtoull(optarg, NULL, 10); break;
		case 'n': runs = atoi(optarg); break;
		case 'p': part_mib = strtoull(optarg, NULL, 10); break;
		case 'j': parallel = (unsigned)atoi(optarg); break;
		case 'r': range_mib = strtoull(optarg, NULL, 10); break;
		default:
			fprintf(stderr, "usage: bench_s3 [-s MiB] [-n runs] [-p part MiB] "
			    "[-j parallel] [-r range MiB]\n");
			return 2;
		}
	}
	if (runs < 1 || runs > 100 || size_mib == 0 || range_mib == 0 || part_mib < 5)
		return 2;
	const uint64_t size = size_mib << 20, range = range_mib << 20;
	const char *tmp = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/ckpt-bench-XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		die("mkdtemp", NULL);
	if (getenv("CEPH_OSD_BYTES") == NULL)
		setenv("CEPH_OSD_BYTES", "10737418240", 1);
	if (cephbed_start(&bed) != 0)
		die("the Ceph test bed did not start", NULL);
	snprintf(endpoint, sizeof(endpoint), "%s", getenv("AWS_ENDPOINT_URL"));

	/* curl's settings, with the keys, in a private file. */
	if (cephbed_curl_config(tmpdir) != 0)
		die("curl config", NULL);

	struct s3_opts mo = { .part_size = part_mib << 20, .parallel = parallel };
	struct s3_opts so = { .multipart_threshold = S3_MAX_PART };
	struct s3_client *multi, *single;
	if (s3_client_new(&multi, &mo, &e) != 0 || s3_client_new(&single, &so, &e) != 0)
		die("client", &e);
	if (s3_bucket_create(multi, BUCKET, &e) != 0)
		die("bucket", &e);

	/* The source file, in the page cache. */
	char src[700], dst[700], url[1024];
	snprintf(src, sizeof(src), "%s/src", tmpdir);
	snprintf(dst, sizeof(dst), "%s/dst", tmpdir);
	int fd = open(src, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die(src, NULL);
	char *buf = malloc(4u << 20);
	for (uint64_t off = 0; off < size; off += 4u << 20) {
		size_t n = size - off < (4u << 20) ? (size_t)(size - off) : (4u << 20);
		cephbed_fill(buf, off, n, 1);
		if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
			die("pwrite", NULL);
	}
	free(buf);

	double *t_multi = calloc((size_t)runs, sizeof(double));
	double *t_single = calloc((size_t)runs, sizeof(double));
	double *t_curl = calloc((size_t)runs, sizeof(double));
	double *g_s3 = calloc((size_t)runs, sizeof(double));
	double *g_curl = calloc((size_t)runs, sizeof(double));
	double *w_s3 = calloc((size_t)runs, sizeof(double));
	double *w_curl = calloc((size_t)runs, sizeof(double));
	snprintf(url, sizeof(url), "%s/%s/bench/curl", endpoint, BUCKET);
	for (int i = 0; i < runs; i++) {
		double t0 = benchclock_now();
		if (s3_put_fd(multi, BUCKET, "bench/multi", fd, 0, size, &e) != 0)
			die("multipart upload", &e);
		double t1 = benchclock_now();
		if (s3_put_fd(single, BUCKET, "bench/single", fd, 0, size, &e) != 0)
			die("single upload", &e);
		double t2 = benchclock_now();
		const char *put[] = { "-X", "PUT", "-T", src, "-o", "/dev/null", url, NULL };
		if (cephbed_curl(put) != 0)
			die("curl PUT", NULL);
		double t3 = benchclock_now();
		t_multi[i] = t1 - t0;
		t_single[i] = t2 - t1;
		t_curl[i] = t3 - t2;
	}

	/* Reads of the object curl wrote, into the same file each way. */
	int ofd = open(dst, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (ofd < 0)
		die(dst, NULL);
	for (int i = 0; i < runs; i++) {
		double t0 = benchclock_now();
		for (uint64_t off = 0; off < size; off += range) {
			uint64_t n = size - off < range ? size - off : range;
			if (s3_get_fd(multi, BUCKET, "bench/curl", off, n, ofd, (off_t)off, &e) != 0)
				die("ranged GET", &e);
		}
		double t1 = benchclock_now();
		for (uint64_t off = 0; off < size; off += range) {
			uint64_t n = size - off < range ? size - off : range;
			char r[64];
			snprintf(r, sizeof(r), "%" PRIu64 "-%" PRIu64, off, off + n - 1);
			/* curl writes the range to stdout, which is the file at
			 * the range's offset. */
			const char *get[] = { "-r", r, "-o", "-", url, NULL };
			pid_t pid = fork();
			if (pid == 0) {
				int wfd = open(dst, O_WRONLY | O_CLOEXEC);
				if (wfd < 0 || lseek(wfd, (off_t)off, SEEK_SET) < 0 ||
				    dup2(wfd, 1) < 0)
					_exit(1);
				_exit(cephbed_curl(get) == 0 ? 0 : 1);
			}
			int st;
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				die("curl ranged GET", NULL);
		}
		double t2 = benchclock_now();
		if (s3_get_fd(single, BUCKET, "bench/curl", 0, size, ofd, 0, &e) != 0)
			die("whole GET", &e);
		double t3 = benchclock_now();
		const char *whole[] = { "-o", dst, url, NULL };
		if (cephbed_curl(whole) != 0)
			die("curl GET", NULL);
		double t4 = benchclock_now();
		g_s3[i] = t1 - t0;
		g_curl[i] = t2 - t1;
		w_s3[i] = t3 - t2;
		w_curl[i] = t4 - t3;
	}
	close(ofd);
	close(fd);

	double mb = (double)size / (1 << 20);
	double um = mb / benchclock_median(t_multi, runs);
	double us = mb / benchclock_median(t_single, runs);
	double uc = mb / benchclock_median(t_curl, runs);
	double gs = mb / benchclock_median(g_s3, runs);
	double gc = mb / benchclock_median(g_curl, runs);
	double ws = mb / benchclock_median(w_s3, runs);
	double wc = mb / benchclock_median(w_curl, runs);
	printf("object %" PRIu64 " MiB, %d runs (medians), %s\n", size_mib, runs, endpoint);
	printf("upload   s3.c multipart (%" PRIu64 " MiB parts, %u parallel) %8.1f MiB/s  "
	    "ratio to curl %.2f\n", part_mib, parallel, um, um / uc);
	printf("upload   s3.c one PUT                              %8.1f MiB/s  "
	    "ratio to curl %.2f\n", us, us / uc);
	printf("upload   curl -T (one PUT)                          %8.1f MiB/s\n", uc);
	printf("restore  s3.c ranged GETs of %" PRIu64 " MiB               %8.1f MiB/s  "
	    "ratio to curl %.2f\n", range_mib, gs, gs / gc);
	printf("restore  curl -r, one process per range             %8.1f MiB/s\n", gc);
	printf("restore  s3.c one GET                               %8.1f MiB/s  "
	    "ratio to curl %.2f\n", ws, ws / wc);
	printf("restore  curl one GET                               %8.1f MiB/s\n", wc);

	s3_client_free(multi);
	s3_client_free(single);
	cephbed_stop(&bed);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : 1;
}
