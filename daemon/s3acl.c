/*
 * s3acl.c - grants of s3:// prefixes to local users (contract: s3acl.h).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "s3acl.h"

#define S3ACL_SCHEME "s3://"
#define S3ACL_NAME_MAX 1024

struct s3acl_grant {
	uid_t uid;
	char path[S3ACL_NAME_MAX];      /* "bucket" or "bucket/a/b" */
};

static struct s3acl_grant grants[S3ACL_MAX];
static unsigned ngrants;
static pthread_rwlock_t grants_lock = PTHREAD_RWLOCK_INITIALIZER;

/* The normal form of an s3:// name into out (no scheme, no trailing '/'):
 * 0, or -1 when it is not s3://, too long, or has an empty, "." or ".."
 * component. */
static int
s3acl_normal(const char *name, char *out, size_t len)
{
	const char *p, *s;
	size_t n;

	if (strncmp(name, S3ACL_SCHEME, strlen(S3ACL_SCHEME)) != 0)
		return -1;
	p = name + strlen(S3ACL_SCHEME);
	n = strlen(p);
	while (n > 0 && p[n - 1] == '/')
		n--;
	if (n == 0 || n >= len)
		return -1;
	memcpy(out, p, n);
	out[n] = '\0';
	for (s = out;; ) {
		const char *slash = strchr(s, '/');
		size_t c = slash != NULL ? (size_t)(slash - s) : strlen(s);

		if (c == 0 || (c == 1 && s[0] == '.') ||
		    (c == 2 && s[0] == '.' && s[1] == '.'))
			return -1;
		if (slash == NULL)
			return 0;
		s = slash + 1;
	}
}

/* USER (a name or a uid) into *uid: 0 or -1. */
static int
s3acl_user(const char *user, uid_t *uid)
{
	struct passwd *pw;
	unsigned long v;
	char *end;

	if (user[0] >= '0' && user[0] <= '9') {
		errno = 0;
		v = strtoul(user, &end, 10);
		if (*end != '\0' || errno != 0 || v >= (unsigned long)
		    (uid_t)-1)
			return -1;
		*uid = (uid_t)v;
		return 0;
	}
	if ((pw = getpwnam(user)) == NULL)
		return -1;
	*uid = pw->pw_uid;
	return 0;
}

int
s3acl_set(const char *list, ckd_err *e)
{
	static struct s3acl_grant fresh[S3ACL_MAX];
	char entry[S3ACL_NAME_MAX + 64];
	const char *p = list != NULL ? list : "";
	unsigned n = 0;

	for (;;) {
		char *colon;
		size_t len;

		p += strspn(p, " \t\n");
		if (*p == '\0')
			break;
		len = strcspn(p, " \t\n");
		if (len >= sizeof entry)
			return err_set(e, CKPT_EINVAL, "s3-allow: entry too "
			    "long: %.64s...", p);
		memcpy(entry, p, len);
		entry[len] = '\0';
		p += len;
		if (n == S3ACL_MAX)
			return err_set(e, CKPT_EINVAL, "s3-allow: more than %d "
			    "grants", S3ACL_MAX);
		colon = strchr(entry, ':');
		if (colon == NULL || colon == entry)
			return err_set(e, CKPT_EINVAL, "s3-allow: '%s' is not "
			    "USER:s3://bucket[/prefix]", entry);
		*colon = '\0';
		if (s3acl_user(entry, &fresh[n].uid) != 0)
			return err_set(e, CKPT_EINVAL, "s3-allow: no user "
			    "'%s' (a user name or a numeric uid; '*' is not "
			    "accepted)", entry);
		if (s3acl_normal(colon + 1, fresh[n].path,
		    sizeof fresh[n].path) != 0)
			return err_set(e, CKPT_EINVAL, "s3-allow: '%s' is not "
			    "a normal s3://bucket[/prefix] (no empty, '.' or "
			    "'..' component)", colon + 1);
		n++;
	}
	pthread_rwlock_wrlock(&grants_lock);
	memcpy(grants, fresh, n * sizeof grants[0]);
	ngrants = n;
	pthread_rwlock_unlock(&grants_lock);
	return 0;
}

int
s3acl_check(const char *root, uid_t uid, ckd_err *e)
{
	char norm[S3ACL_NAME_MAX];
	unsigned i;
	int held;

	if (root == NULL || strncmp(root, S3ACL_SCHEME,
	    strlen(S3ACL_SCHEME)) != 0)
		return 0;
	if (s3acl_normal(root, norm, sizeof norm) != 0)
		return err_set(e, CKPT_EINVAL, "checkpoint root \"%.256s\": "
		    "not a normal s3://bucket/prefix (no empty, '.' or '..' "
		    "component)", root);
	pthread_rwlock_rdlock(&grants_lock);
	for (i = 0; i < ngrants; i++) {
		size_t n = strlen(grants[i].path);

		if (grants[i].uid == uid &&
		    strncmp(norm, grants[i].path, n) == 0 &&
		    (norm[n] == '\0' || norm[n] == '/'))
			break;
	}
	held = i < ngrants;
	pthread_rwlock_unlock(&grants_lock);
	if (held)
		return 0;
	return err_set(e, CKPT_EACCES, "checkpoint root \"%.256s\": uid %u "
	    "holds no s3-allow grant of a prefix containing it", root,
	    (unsigned)uid);
}

unsigned
s3acl_count(void)
{
	unsigned n;

	pthread_rwlock_rdlock(&grants_lock);
	n = ngrants;
	pthread_rwlock_unlock(&grants_lock);
	return n;
}
