/*
 * s3.h - an S3 client on libcurl (requests signed by CURLOPT_AWS_SIGV4).
 *
 * One struct s3_client per process holds the endpoint, region, credentials
 * and a pool of curl handles (so connections are reused); every function
 * is safe to call from many threads at once on the same client. Nothing
 * here logs, and no message ever contains a secret.
 *
 *     struct s3_client *c;
 *     ckd_err e;
 *     if (s3_client_new(&c, NULL, &e) != 0)      // environment, ~/.aws
 *             fail(e.msg);
 *     s3_put_fd(c, "bucket", "step/a.safetensors", fd, 0, size, &e);
 *     s3_get(c, "bucket", "step/a.safetensors", off, len, buf, &e);
 *     s3_client_free(c);
 *
 * Errors: 0 or a negative CKPT_E* code with the message in *e, e.g.
 * CKPT_EACCES "s3 PUT bkt/key: HTTP 403 InvalidAccessKeyId ...",
 * CKPT_ENOTFOUND for a missing key or bucket (404), CKPT_EINVAL for a bad
 * name or range, CKPT_ENOSPC for a quota, CKPT_ETIMEDOUT or CKPT_EIO when
 * retries are spent. 5xx answers, timeouts and connection errors are
 * retried with exponential backoff; 4xx answers are not.
 *
 * Multipart uploads are never visible until completed: a failed upload is
 * aborted and leaves no object behind.
 */
#ifndef CKPTD_S3_H
#define CKPTD_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"

/* S3's own limits. */
#define S3_MAX_KEY 1024
#define S3_MIN_PART (5ull << 20)
#define S3_MAX_PART (5ull << 30)
#define S3_MAX_PARTS 10000
/* Answers we parse (lists, errors) are refused past this size. */
#define S3_MAX_XML (8u << 20)

struct s3_opts {
	/* Each NULL: from the environment and the AWS files (s3conf.c). */
	const char *endpoint;       /* "http[s]://host[:port]" */
	const char *region;
	const char *access_key, *secret_key, *session_token;
	const char *profile;
	/* 0: defaults. */
	uint64_t part_size;         /* multipart part size (default 16 MiB) */
	uint64_t multipart_threshold; /* single PUT up to this (default part_size) */
	unsigned parallel;          /* parts in flight per upload (default 4) */
	unsigned retries;           /* retries after the first try (default 6) */
	unsigned backoff_ms;        /* first backoff (default 100, doubles,
	                               capped at 5 s, with jitter) */
	unsigned connect_timeout_ms; /* default 10 s */
	unsigned stall_timeout_ms;  /* no byte moved for this long: timeout
	                               (default 30 s) */
};

struct s3_client;

/* Make a client. opts may be NULL. Settings not given in opts come from:
 *   endpoint  AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, endpoint_url of the
 *             profile in the config file; else https://s3.REGION.amazonaws.com
 *             (virtual-hosted). A custom endpoint uses path-style URLs.
 *   region    AWS_REGION, AWS_DEFAULT_REGION, region of the profile; else
 *             us-east-1.
 *   keys      AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN),
 *             else the profile in AWS_SHARED_CREDENTIALS_FILE or
 *             ~/.aws/credentials, else the config file
 *             (AWS_CONFIG_FILE or ~/.aws/config).
 *   profile   AWS_PROFILE, else "default".
 * Returns CKPT_EINVAL for a bad endpoint or setting, CKPT_EACCES when no
 * credentials are found, CKPT_ENOMEM. */
int s3_client_new(struct s3_client **out, const struct s3_opts *opts, ckd_err *e);
void s3_client_free(struct s3_client *c);
/* Limits of the requests the calling thread sends from now on, on any
 * client: retries (-1: each client's own) and the whole time of one
 * request (0: none but the stall timeout). For a caller that would rather
 * give up soon than wait out a store that is down or hung, e.g. releasing
 * leases at exit. */
void s3_thread_limits(int retries, unsigned timeout_ms);
/* "http://127.0.0.1:8000 (path-style), region us-east-1, key AKIA...": for
 * logs; the access key id is shown, never the secret. */
const char *s3_client_describe(const struct s3_client *c);

/* Parse "s3://bucket[/prefix]": bucket must be a valid S3 bucket name
 * (3..63 of a-z 0-9 . -, starting and ending with a letter or digit);
 * prefix has no empty, "." or ".." component and no control character; a
 * trailing '/' is dropped. *bucket and *prefix (maybe "") are malloc'ed.
 * CKPT_EINVAL / CKPT_EPATH with a message, CKPT_ENOMEM. */
int s3_url_parse(const char *url, char **bucket, char **prefix, ckd_err *e);
/* Whether path names an object store ("s3://..."). */
bool s3_url_is(const char *path);

/* PUT an object from memory or from len bytes of fd at off (pread; the fd
 * is not moved). Above the multipart threshold the upload is multipart with
 * parallel parts read straight from the source (no buffer); a failed one
 * is aborted. */
int s3_put(struct s3_client *c, const char *bucket, const char *key,
    const void *buf, size_t len, ckd_err *e);
int s3_put_fd(struct s3_client *c, const char *bucket, const char *key,
    int fd, off_t off, uint64_t len, ckd_err *e);

/* PUT a small object (one request) only when a condition holds: when
 * if_match is NULL, that no object has the key (If-None-Match: *); else
 * that the object's ETag is if_match (If-Match; the ETag without quotes,
 * as s3_stat has it, which radosgw compares as sent). CKPT_EEXIST (HTTP
 * 412) when it does not hold. The new object's ETag in etag (80 bytes).
 * A retry after a lost answer may meet the object it wrote: 412. */
int s3_put_cond(struct s3_client *c, const char *bucket, const char *key,
    const void *buf, size_t len, const char *if_match, char *etag,
    ckd_err *e);

/* GET bytes [off, off + len) of an object into buf, or into fd at fd_off
 * (pwrite). Exactly len bytes or an error (CKPT_EINVAL when the range is
 * past the end, CKPT_ENOTFOUND when there is no such key). len 0 is a
 * no-op after checking nothing. A retry resumes after the bytes received. */
int s3_get(struct s3_client *c, const char *bucket, const char *key,
    uint64_t off, uint64_t len, void *buf, ckd_err *e);
int s3_get_fd(struct s3_client *c, const char *bucket, const char *key,
    uint64_t off, uint64_t len, int fd, off_t fd_off, ckd_err *e);

struct s3_stat {
	uint64_t size;
	char etag[80];              /* without quotes */
	int64_t mtime;              /* Last-Modified, seconds since the
	                               epoch; 0 when not given */
};
/* The first bytes of an object and its size in one request (a HEAD and a
 * GET otherwise): up to cap bytes into buf, *got of them (fewer when the
 * object is shorter), st filled. CKPT_ENOTFOUND when missing. */
int s3_get_first(struct s3_client *c, const char *bucket, const char *key,
    void *buf, uint64_t cap, uint64_t *got, struct s3_stat *st, ckd_err *e);
/* HEAD: CKPT_ENOTFOUND when missing. */
int s3_head(struct s3_client *c, const char *bucket, const char *key,
    struct s3_stat *st, ckd_err *e);
/* DELETE: a missing key is not an error (S3 semantics). */
int s3_delete(struct s3_client *c, const char *bucket, const char *key, ckd_err *e);

struct s3_object {
	char *key;
	uint64_t size;
};
struct s3_list {
	struct s3_object *objects;
	size_t nobjects;
	char **prefixes;            /* CommonPrefixes (with a delimiter) */
	size_t nprefixes;
	char *next_token;           /* NULL: this was the last page */
};
/* One page of ListObjectsV2: prefix and delimiter may be NULL, token is
 * NULL or the next_token of the previous page, max_keys 0 means the
 * server's default (1000). Fills *out (free with s3_list_free). */
int s3_list(struct s3_client *c, const char *bucket, const char *prefix,
    const char *delimiter, const char *token, unsigned max_keys,
    struct s3_list *out, ckd_err *e);
void s3_list_free(struct s3_list *l);

/* Multipart upload by parts, for callers that produce the parts
 * themselves. s3_mpu_part may run from several threads at once for
 * different part numbers (1..nparts); complete needs every part. nparts 0
 * begins an open-ended upload (a stream of unknown length): parts 1..
 * S3_MAX_PARTS, and complete joins 1..the highest one uploaded; abort
 * frees the server-side parts (a missing upload is not an error). Both
 * consume mpu. */
struct s3_mpu;
int s3_mpu_begin(struct s3_client *c, const char *bucket, const char *key,
    unsigned nparts, struct s3_mpu **out, ckd_err *e);
int s3_mpu_part(struct s3_client *c, struct s3_mpu *m, unsigned partno,
    const void *buf, int fd, off_t off, uint64_t len, ckd_err *e);
int s3_mpu_complete(struct s3_client *c, struct s3_mpu *m, ckd_err *e);
int s3_mpu_abort(struct s3_client *c, struct s3_mpu *m, ckd_err *e);

/* Create or remove a bucket (tests and tools; the daemon never does). An
 * existing bucket of ours is not an error. */
int s3_bucket_create(struct s3_client *c, const char *bucket, ckd_err *e);
int s3_bucket_delete(struct s3_client *c, const char *bucket, ckd_err *e);

/* Counters of the client since it was made (for metrics and tests). */
struct s3_counters {
	uint64_t requests, retries, bytes_up, bytes_down;
};
void s3_counters(struct s3_client *c, struct s3_counters *out);

#endif
