/*
 * s3acl.h - which local users may use which s3:// prefixes.
 *
 * The daemon signs S3 requests with its own credentials, so an s3:// root
 * is reachable only by a peer whose uid holds a grant (--s3-allow
 * USER:s3://bucket[/prefix], repeatable) for a prefix containing the root.
 * Containment is on whole path components after the name is normalised
 * (trailing '/' dropped; no empty, "." or ".." component), so a grant of
 * s3://b/a covers s3://b/a and s3://b/a/x but not s3://b/ab. Without a
 * grant nobody, root included, may use an s3:// root.
 *
 * s3acl_set runs at start-up and again on a reload (SIGHUP, loop
 * thread); s3acl_check may run on any thread meanwhile (a lock). The
 * grants are checked where a root is opened or named: a manager opened
 * before a grant was withdrawn keeps its root.
 */
#ifndef CKPTD_S3ACL_H
#define CKPTD_S3ACL_H

#include <sys/types.h>

#include "common.h"

/* Most grants the daemon holds. */
#define S3ACL_MAX 256

/* Replace the grants with those of list: blank-separated
 * "USER:s3://bucket[/prefix]" entries, USER a name or a numeric uid.
 * On an error (e->msg names the entry) the grants are left unchanged. */
int s3acl_set(const char *list, ckd_err *e);
/* 0 when root is not an s3:// name or uid holds a grant containing it;
 * CKPT_EINVAL for an s3:// name that is not normal; CKPT_EACCES when no
 * grant of uid contains it. e->msg names the root. */
int s3acl_check(const char *root, uid_t uid, ckd_err *e);
/* How many grants are held. */
unsigned s3acl_count(void);

#endif
