/*
 * s3peek.c - see s3peek.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3.h"
#include "s3peek.h"

static struct s3_client *peek_cli;
static char peek_bucket[64];

int
s3peek_init(const char *bucket)
{
	ckd_err e;

	snprintf(peek_bucket, sizeof peek_bucket, "%s", bucket);
	if (s3_client_new(&peek_cli, NULL, &e) != 0 ||
	    s3_bucket_create(peek_cli, peek_bucket, &e) != 0) {
		fprintf(stderr, "s3: %s\n", e.msg);
		return -1;
	}
	return 0;
}

void
s3peek_done(void)
{
	s3_client_free(peek_cli);
	peek_cli = NULL;
}

int
s3peek_has(const char *key)
{
	struct s3_stat st;
	ckd_err e;

	return s3_head(peek_cli, peek_bucket, key, &st, &e) == 0;
}

size_t
s3peek_count(const char *prefix)
{
	struct s3_list l;
	ckd_err e;
	size_t n = 0;

	memset(&l, 0, sizeof l);
	if (s3_list(peek_cli, peek_bucket, prefix, NULL, NULL, 1000, &l,
	    &e) == 0)
		n = l.nobjects;
	else
		fprintf(stderr, "list %s: %s\n", prefix, e.msg);
	s3_list_free(&l);
	return n;
}

int
s3peek_put(const char *key, const void *data, size_t len)
{
	ckd_err e;

	if (s3_put(peek_cli, peek_bucket, key, data, len, &e) != 0) {
		fprintf(stderr, "put %s: %s\n", key, e.msg);
		return -1;
	}
	return 0;
}

void *
s3peek_get(const char *key, size_t *len)
{
	struct s3_stat st;
	ckd_err e;
	void *buf;

	if (s3_head(peek_cli, peek_bucket, key, &st, &e) != 0 ||
	    (buf = malloc(st.size ? st.size : 1)) == NULL)
		return NULL;
	if (s3_get(peek_cli, peek_bucket, key, 0, st.size, buf, &e) != 0) {
		fprintf(stderr, "get %s: %s\n", key, e.msg);
		free(buf);
		return NULL;
	}
	*len = st.size;
	return buf;
}
