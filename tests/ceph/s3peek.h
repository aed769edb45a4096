/*
 * s3peek.h - a look into the bucket from tests that include libckpt's
 * ckpt.h (which cannot meet the daemon's headers in one file): the S3
 * client of daemon/s3.c behind plain functions.
 */
#ifndef CKPT_TESTS_S3PEEK_H
#define CKPT_TESTS_S3PEEK_H

#include <stddef.h>

/* A client from the environment, and bucket made. 0, or -1 with the
 * message on stderr. */
int s3peek_init(const char *bucket);
void s3peek_done(void);
/* 1 when the key exists. */
int s3peek_has(const char *key);
/* Number of keys under prefix (up to 1000). */
size_t s3peek_count(const char *prefix);
/* GET the whole object into a malloc'ed buffer: NULL when missing. */
void *s3peek_get(const char *key, size_t *len);
/* PUT len bytes: 0 or -1. */
int s3peek_put(const char *key, const void *data, size_t len);

#endif
