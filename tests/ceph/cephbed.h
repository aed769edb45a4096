/*
 * cephbed.h - the throwaway Ceph + radosgw of tests/ceph/rgw.sh, for C
 * tests and the benchmark: start it (or reuse the one CKPT_CEPH_DIR names,
 * for debugging), put its S3 settings into the environment, stop it.
 */
#ifndef CKPT_TESTS_CEPHBED_H
#define CKPT_TESTS_CEPHBED_H

#include <stdint.h>
#include <stddef.h>

struct cephbed {
	char dir[512];
	int owned;          /* started here: stop it at the end */
};

/* Start the test bed (rgw.sh from $CKPT_RGW_SH) and export its
 * AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
 * 0 or -1 (message on stderr). */
int cephbed_start(struct cephbed *b);
void cephbed_stop(struct cephbed *b);
/* rgw.sh kill-rgw / start-rgw: 0 or -1. */
int cephbed_rgw(struct cephbed *b, const char *verb);
/* rgw.sh quota: limit bucket to bytes. 0 or -1. */
int cephbed_quota(struct cephbed *b, const char *bucket, uint64_t bytes);

/* A counter of radosgw's "rgw" perf counters (its admin socket), e.g.
 * "get_b": the bytes it has sent in GET answers. 0 or -1. */
int cephbed_rgw_counter(struct cephbed *b, const char *name, uint64_t *v);

/* curl(1) against the test bed: cephbed_curl_config writes DIR/curl.cfg
 * with the keys (so they are in no argv) once the environment is set;
 * cephbed_curl runs `curl -sSf -K DIR/curl.cfg ARGS...` (NULL-terminated)
 * and returns 0 when it succeeded. */
int cephbed_curl_config(const char *dir);
int cephbed_curl(const char *const args[]);

/* Deterministic bytes: the content of a test object at any offset, so
 * that a ranged read can be checked without keeping the object. */
void cephbed_fill(void *buf, uint64_t off, size_t len, uint64_t seed);

#endif
