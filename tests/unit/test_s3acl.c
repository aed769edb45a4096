/*
 * test_s3acl.c - grants of s3:// prefixes to local users (daemon/s3acl.c):
 * parsing the s3-allow list, containment on whole path components, names
 * that are not normal, and the default of no grant.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "s3acl.h"

static int
check(const char *root, uid_t uid)
{
	ckd_err e;

	memset(&e, 0, sizeof e);
	return s3acl_check(root, uid, &e);
}

static void
default_denies(void **state)
{
	(void)state;
	assert_int_equal(s3acl_set("", NULL), 0);
	assert_int_equal(s3acl_count(), 0);
	assert_int_equal(check("s3://b/a", 0), CKPT_EACCES);
	assert_int_equal(check("s3://b/a", 1000), CKPT_EACCES);
	/* Not s3://: not this module's business. */
	assert_int_equal(check("/data/ckpt", 1000), 0);
}

static void
components(void **state)
{
	ckd_err e;

	(void)state;
	assert_int_equal(s3acl_set("1000:s3://b/a  root:s3://c/\n"
	    "1001:s3://b", NULL), 0);
	assert_int_equal(s3acl_count(), 3);
	assert_int_equal(check("s3://b/a", 1000), 0);
	assert_int_equal(check("s3://b/a/", 1000), 0);
	assert_int_equal(check("s3://b/a/x/y", 1000), 0);
	assert_int_equal(check("s3://b/ab", 1000), CKPT_EACCES);
	assert_int_equal(check("s3://b/ab/x", 1000), CKPT_EACCES);
	assert_int_equal(check("s3://b", 1000), CKPT_EACCES);
	assert_int_equal(check("s3://bb/a", 1000), CKPT_EACCES);
	assert_int_equal(check("s3://b/a", 1002), CKPT_EACCES);
	assert_int_equal(check("s3://c/x", 0), 0);
	assert_int_equal(check("s3://c/x", 1000), CKPT_EACCES);
	assert_int_equal(check("s3://b/anything", 1001), 0);
	assert_int_equal(check("s3://b/a/../../c", 1000), CKPT_EINVAL);
	assert_int_equal(check("s3://b//a", 1000), CKPT_EINVAL);
	assert_int_equal(check("s3://b/./a", 1000), CKPT_EINVAL);
	assert_int_equal(check("s3://", 1000), CKPT_EINVAL);
	memset(&e, 0, sizeof e);
	assert_int_equal(s3acl_check("s3://b/ab", 1000, &e), CKPT_EACCES);
	assert_non_null(strstr(e.msg, "s3://b/ab"));
}

static void
bad_lists(void **state)
{
	ckd_err e;

	(void)state;
	assert_int_equal(s3acl_set("1000:s3://b/a", NULL), 0);
	memset(&e, 0, sizeof e);
	assert_int_equal(s3acl_set("*:s3://b", &e), CKPT_EINVAL);
	assert_non_null(strstr(e.msg, "'*'"));
	assert_int_equal(s3acl_set("no-such-user-here:s3://b", &e),
	    CKPT_EINVAL);
	assert_int_equal(s3acl_set("1000:/data", &e), CKPT_EINVAL);
	assert_int_equal(s3acl_set("1000:s3://b/../c", &e), CKPT_EINVAL);
	assert_int_equal(s3acl_set("s3://b", &e), CKPT_EINVAL);
	assert_int_equal(s3acl_set(":s3://b", &e), CKPT_EINVAL);
	assert_int_equal(s3acl_set("12x:s3://b", &e), CKPT_EINVAL);
	/* A refused list leaves the grants as they were. */
	assert_int_equal(s3acl_count(), 1);
	assert_int_equal(check("s3://b/a", 1000), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(default_denies),
		cmocka_unit_test(components),
		cmocka_unit_test(bad_lists),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
