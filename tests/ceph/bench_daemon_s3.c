/*
 * bench_daemon_s3.c - a step saved to and restored from an s3:// root
 * through ckptd and libckpt, against curl(1) moving the same bytes to and
 * from the same radosgw (tests/ceph/rgw.sh). Not a test: it prints medians
 * and the ratios of the issue (upload and restore, >= 0.8 x curl).
 *
 *   bench_daemon_s3 [-s MiB] [-n runs] [-f files]
 *
 * Upload: ckpt_save of a step of -s MiB in -f arrays (the daemon writes
 * one safetensors file per array of 16 MiB or more), from the save to
 * ckpt_wait_until_finished, against `curl -T` of one file of the same size,
 * and against one curl moving the same bytes as -f objects (one after the
 * other, on one connection): the same bytes in as many objects as ckptd.
 * Restore: ckpt_restore of the step (every array in the client's memory),
 * against one `curl` GET of that file, and against GETs of the -f objects.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "s3peek.h"
#include "benchclock.h"
#include "cephbed.h"

#define BUCKET "ckpt-bench-daemon"

int
main(int argc, char **argv)
{
	uint64_t size_mib = 256;
	int runs = 5, files = 4, opt, i, f, r, saved;
	struct cephbed bed;
	struct hx_daemon d;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	char src[HX_PATH], dst[HX_PATH], url[1024], root[256];
	char glob[HX_PATH + 1024], dstglob[HX_PATH + 16], urlf[1024];
	double *tu, *tc, *ru, *rc, *tf, *rf;
	size_t gl;

	while ((opt = getopt(argc, argv, "s:n:f:")) != -1) {
		switch (opt) {
		case 's': size_mib = strtoull(optarg, NULL, 10); break;
		case 'n': runs = atoi(optarg); break;
		case 'f': files = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: bench_daemon_s3 [-s MiB] "
			    "[-n runs] [-f files]\n");
			return 2;
		}
	}
	if (runs < 1 || runs > 100 || files < 1 || files > 64 ||
	    size_mib < (uint64_t)files)
		return 2;
	const uint64_t size = size_mib << 20, per = size / (uint64_t)files;
	if (getenv("CEPH_OSD_BYTES") == NULL)
		setenv("CEPH_OSD_BYTES", "10737418240", 1);
	if (cephbed_start(&bed) != 0 || s3peek_init(BUCKET) != 0)
		bail_out("the Ceph test bed did not start");
	hx_init(&d);
	d.extra[0] = "--s3-allow";
	d.extra[1] = "0:s3://" BUCKET;
	d.extra[2] = NULL;
	if (hx_start(&d) != 0 || hx_connect(&d, &c) != 0)
		bail_out("ckptd did not start");
	if (cephbed_curl_config(d.dir) != 0)
		bail_out("curl config");

	/* The arrays, and the same bytes in a file for curl. */
	char *data = malloc(size);
	if (data == NULL)
		bail_out("out of memory");
	cephbed_fill(data, 0, size, 3);
	hx_path(&d, src, "src");
	hx_path(&d, dst, "dst");
	int fd = open(src, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size)
		bail_out("%s", src);
	close(fd);
	/* The same bytes as -f files f0 .. for curl's globs ({f0,f1,..}). */
	gl = (size_t)snprintf(glob, sizeof glob, "%s/{", d.dir);
	for (f = 0; f < files; f++) {
		char part[HX_PATH + 16];

		snprintf(part, sizeof part, "%s/f%d", d.dir, f);
		fd = open(part, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, data + (uint64_t)f * per, per) !=
		    (ssize_t)per)
			bail_out("%s", part);
		close(fd);
		gl += (size_t)snprintf(glob + gl, sizeof glob - gl, "%sf%d",
		    f ? "," : "", f);
	}
	snprintf(glob + gl, sizeof glob - gl, "}");
	snprintf(dstglob, sizeof dstglob, "%s/#1", dst);
	if (mkdir(dst, 0700) != 0)
		bail_out("%s", dst);
	snprintf(url, sizeof url, "%s/%s/curl", getenv("AWS_ENDPOINT_URL"),
	    BUCKET);
	snprintf(root, sizeof root, "s3://%s/run", BUCKET);
	/* GET side: {f0,..} after the prefix (the PUT side names the files,
	 * the URL ending in '/' takes each file's name). */
	snprintf(urlf, sizeof urlf, "%s/%s/many/%s",
	    getenv("AWS_ENDPOINT_URL"), BUCKET, strchr(glob, '{'));
	if ((r = ckpt_manager_open(c, root, NULL, &m)) != 0)
		bail_out("open %s: %s", root, ckpt_client_errmsg(c));

	tu = calloc((size_t)runs, sizeof *tu);
	tc = calloc((size_t)runs, sizeof *tc);
	ru = calloc((size_t)runs, sizeof *ru);
	rc = calloc((size_t)runs, sizeof *rc);
	tf = calloc((size_t)runs, sizeof *tf);
	rf = calloc((size_t)runs, sizeof *rf);
	for (i = 0; i < runs; i++) {
		ckpt_tree *t = ckpt_tree_new();
		ckpt_save_args *a = ckpt_save_args_new();
		ckpt_restored *res = NULL;
		char name[32];

		for (f = 0; f < files; f++) {
			int64_t n = (int64_t)per;

			snprintf(name, sizeof name, "a%d", f);
			ckpt_tree_add_array(t, name, CKPT_U8, 1, &n,
			    data + (uint64_t)f * per, per);
		}
		ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
		double t0 = benchclock_now();
		if ((r = ckpt_save(m, (uint64_t)i, a, &saved)) != 0 ||
		    (r = ckpt_wait_until_finished(m)) != 0)
			bail_out("save: %s", ckpt_manager_errmsg(m));
		double t1 = benchclock_now();
		const char *put[] = { "-X", "PUT", "-T", src, "-o", "/dev/null",
		    url, NULL };
		if (cephbed_curl(put) != 0)
			bail_out("curl PUT");
		double t2 = benchclock_now();
		if ((r = ckpt_restore(m, i, NULL, &res)) != 0)
			bail_out("restore: %s", ckpt_manager_errmsg(m));
		double t3 = benchclock_now();
		char one[HX_PATH + 8], many[1024];

		snprintf(one, sizeof one, "%s/one", dst);
		const char *get[] = { "-o", one, url, NULL };
		if (cephbed_curl(get) != 0)
			bail_out("curl GET");
		double t4 = benchclock_now();
		snprintf(many, sizeof many, "%s/%s/many/",
		    getenv("AWS_ENDPOINT_URL"), BUCKET);
		const char *putf[] = { "-T", glob, "-o", "/dev/null", many,
		    NULL };
		if (cephbed_curl(putf) != 0)
			bail_out("curl PUT of %d objects", files);
		double t5 = benchclock_now();
		const char *getf[] = { "-o", dstglob, urlf, NULL };
		if (cephbed_curl(getf) != 0)
			bail_out("curl GET of %d objects", files);
		double t6 = benchclock_now();
		ckpt_restored_free(res);
		ckpt_tree_free(t);
		ckpt_save_args_free(a);
		tu[i] = t1 - t0;
		tc[i] = t2 - t1;
		ru[i] = t3 - t2;
		rc[i] = t4 - t3;
		tf[i] = t5 - t4;
		rf[i] = t6 - t5;
		/* Keep the bucket (and the OSD's memory) small. */
		if (ckpt_delete(m, (uint64_t)i) != 0)
			bail_out("delete: %s", ckpt_manager_errmsg(m));
	}
	double mb = (double)size / (1 << 20);
	double u = mb / benchclock_median(tu, runs);
	double uc = mb / benchclock_median(tc, runs);
	double g = mb / benchclock_median(ru, runs);
	double gc = mb / benchclock_median(rc, runs);
	double uf = mb / benchclock_median(tf, runs);
	double gf = mb / benchclock_median(rf, runs);
	printf("step %" PRIu64 " MiB in %d arrays, %d runs (medians)\n",
	    size_mib, files, runs);
	printf("upload   ckptd save -> durable        %8.1f MiB/s  ratio to "
	    "curl %.2f (one object), %.2f (%d objects)\n", u, u / uc, u / uf,
	    files);
	printf("upload   curl -T (one PUT)            %8.1f MiB/s\n", uc);
	printf("upload   curl -T (%2d PUTs in turn)    %8.1f MiB/s\n", files,
	    uf);
	printf("restore  ckptd restore (in memory)    %8.1f MiB/s  ratio to "
	    "curl %.2f (one object), %.2f (%d objects)\n", g, g / gc, g / gf,
	    files);
	printf("restore  curl one GET (to a file)     %8.1f MiB/s\n", gc);
	printf("restore  curl %2d GETs in turn (files) %8.1f MiB/s\n", files,
	    gf);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	hx_cleanup(&d);
	s3peek_done();
	cephbed_stop(&bed);
	free(tu);
	free(tc);
	free(ru);
	free(rc);
	free(tf);
	free(rf);
	free(data);
	return 0;
}
