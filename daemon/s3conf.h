/*
 * s3conf.h - where an S3 client's endpoint, region and credentials come
 * from: its options, the daemon's environment, then the standard AWS files
 * (the rules are in s3.h, s3_client_new). Internal to s3.c.
 */
#ifndef CKPTD_S3CONF_H
#define CKPTD_S3CONF_H

#include <stdbool.h>

#include "common.h"
#include "s3.h"

struct s3_conf {
	char *scheme;               /* "http" or "https" */
	char *host;                 /* "host[:port]" */
	bool path_style;            /* custom endpoint: http://host/bucket/key */
	char *region;
	char *access_key;
	char *secret_key;           /* wiped on clear */
	char *session_token;        /* wiped on clear */
	char *profile;
	const char *key_source;     /* "environment", "credentials file", ... */
};

/* Fill *c (zeroed by the caller). CKPT_EINVAL, CKPT_EACCES (no keys),
 * CKPT_ENOMEM; on error *c is cleared. */
int s3conf_load(struct s3_conf *c, const struct s3_opts *o, ckd_err *e);
void s3conf_clear(struct s3_conf *c);

/* Value of key in [section] of an INI file (AWS style: "key = value", '#'
 * and ';' comments); *out is malloc'ed or NULL when absent (not an error;
 * neither is a missing file). Files over 1 MiB are refused (CKPT_ETOOBIG). */
int s3conf_ini_get(const char *path, const char *section, const char *key,
    char **out, ckd_err *e);

#endif
