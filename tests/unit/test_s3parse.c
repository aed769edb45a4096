/*
 * test_s3parse.c - what the S3 client parses without a server: s3://
 * URLs, the XML scanner on good, hostile and truncated documents, the AWS
 * INI files and where settings come from (daemon/s3.c, s3xml.c, s3conf.c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "s3.h"
#include "s3conf.h"
#include "s3xml.h"

static void
url_ok(const char *url, const char *bucket, const char *prefix)
{
	char *b, *p;
	ckd_err e;
	int rc = s3_url_parse(url, &b, &p, &e);
	if (rc != 0)
		fail_msg("%s: %s", url, e.msg);
	assert_string_equal(b, bucket);
	assert_string_equal(p, prefix);
	free(b);
	free(p);
}

static void
url_bad(const char *url, int code)
{
	char *b, *p;
	ckd_err e;
	assert_int_equal(s3_url_parse(url, &b, &p, &e), code);
	assert_null(b);
	assert_null(p);
	assert_true(strlen(e.msg) > 0);
}

static void
test_url(void **state)
{
	url_ok("s3://bucket", "bucket", "");
	url_ok("s3://bucket/", "bucket", "");
	url_ok("s3://my.bucket-1/run/ckpt", "my.bucket-1", "run/ckpt");
	url_ok("s3://bkt/run/ckpt/", "bkt", "run/ckpt");
	assert_true(s3_url_is("s3://x"));
	assert_false(s3_url_is("/tmp/s3://x"));
	assert_false(s3_url_is(NULL));
	url_bad("/local/dir", CKPT_EINVAL);
	url_bad("s3://", CKPT_EINVAL);
	url_bad("s3://ab", CKPT_EINVAL);
	url_bad("s3://Upper", CKPT_EINVAL);
	url_bad("s3://-bucket", CKPT_EINVAL);
	url_bad("s3://bucket-", CKPT_EINVAL);
	url_bad("s3://a..b", CKPT_EINVAL);
	url_bad("s3://under_score", CKPT_EINVAL);
	url_bad("s3://bkt//x", CKPT_EPATH);
	url_bad("s3://bkt/a//b", CKPT_EPATH);
	url_bad("s3://bkt/a/../b", CKPT_EPATH);
	url_bad("s3://bkt/./b", CKPT_EPATH);
	url_bad("s3://bkt/a\nb", CKPT_EPATH);
	char longp[700];
	memset(longp, 'a', sizeof(longp));
	memcpy(longp, "s3://bkt/", 9);
	longp[sizeof(longp) - 1] = '\0';
	url_bad(longp, CKPT_EPATH);
}

/* Records the events as "O:path", "T:path=text", "C:path". */
struct rec {
	char log[4096];
};

static int
rec_cb(enum s3xml_event ev, const char *path, const char *text, size_t len, void *arg)
{
	struct rec *r = arg;
	size_t n = strlen(r->log);
	if (ev == S3XML_OPEN)
		snprintf(r->log + n, sizeof(r->log) - n, "O:%s|", path);
	else if (ev == S3XML_TEXT)
		snprintf(r->log + n, sizeof(r->log) - n, "T:%s=%.*s|", path, (int)len, text);
	else
		snprintf(r->log + n, sizeof(r->log) - n, "C:%s|", path);
	return 0;
}

static int
scan(const char *doc, struct rec *r, ckd_err *e)
{
	memset(r, 0, sizeof(*r));
	return s3xml_scan(doc, strlen(doc), rec_cb, r, e);
}

static void
test_xml(void **state)
{
	struct rec r;
	ckd_err e;

	assert_int_equal(scan("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	    "<Name>b</Name><Contents><Key>a&amp;b &lt;&gt; &quot;&apos; &#233;&#x41;</Key>"
	    "<Size>12</Size></Contents><Empty/><!-- note --></ListBucketResult>\n", &r, &e), 0);
	assert_string_equal(r.log,
	    "O:ListBucketResult|O:ListBucketResult/Name|T:ListBucketResult/Name=b|"
	    "C:ListBucketResult/Name|O:ListBucketResult/Contents|"
	    "O:ListBucketResult/Contents/Key|"
	    "T:ListBucketResult/Contents/Key=a&b <> \"' \xc3\xa9" "A|"
	    "C:ListBucketResult/Contents/Key|O:ListBucketResult/Contents/Size|"
	    "T:ListBucketResult/Contents/Size=12|C:ListBucketResult/Contents/Size|"
	    "C:ListBucketResult/Contents|O:ListBucketResult/Empty|"
	    "T:ListBucketResult/Empty=|C:ListBucketResult/Empty|C:ListBucketResult|");
	/* Namespace prefixes are dropped; attributes with '>' inside quotes. */
	assert_int_equal(scan("<s3:Error a='x>y' b=\"1\"><s3:Code>NoSuchKey</s3:Code></s3:Error>",
	    &r, &e), 0);
	assert_non_null(strstr(r.log, "T:Error/Code=NoSuchKey|"));

	/* Refused: DTDs (no entity can expand), CDATA, unknown entities,
	 * mismatched or missing tags, text outside the root, two roots. */
	const char *bad[] = {
		"<!DOCTYPE x [<!ENTITY a \"aaaa\">]><x>&a;</x>",
		"<x><![CDATA[y]]></x>",
		"<x>&nbsp;</x>",
		"<x>&#0;</x>",
		"<x>&#xD800;</x>",
		"<x>&#x110000;</x>",
		"<x>&#123456789;</x>",
		"<x></y>",
		"<x><y></x></y>",
		"<x>",
		"<x",
		"<x a=1></x>",
		"</x>",
		"text<x/>",
		"<x/>tail",
		"<x/><y/>",
		"",
		"<x a='unterminated></x>",
		"<!-- open",
		"<x></x:>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = scan(bad[i], &r, &e);
		if (rc != CKPT_EPROTO)
			fail_msg("accepted or wrong code %d: %s", rc, bad[i]);
	}
	/* A NUL inside is refused (the length is explicit). */
	assert_int_equal(s3xml_scan("<x>a\0b</x>", 10, rec_cb, &r, &e), CKPT_EPROTO);

	/* Depth and name bounds. */
	char deep[1024] = "";
	for (int i = 0; i < S3XML_MAX_DEPTH + 1; i++)
		strcat(deep, "<a>");
	assert_int_equal(scan(deep, &r, &e), CKPT_ETOOBIG);
	char name[200] = "<";
	memset(name + 1, 'n', S3XML_MAX_NAME + 1);
	strcat(name, "/>");
	assert_int_equal(scan(name, &r, &e), CKPT_ETOOBIG);
	/* Size bound, checked before anything is read. */
	assert_int_equal(s3xml_scan("<x/>", (size_t)S3XML_MAX_DOC + 1, rec_cb, &r, &e),
	    CKPT_ETOOBIG);
}

/* A callback's error stops the scan and is returned. */
static int
stop_cb(enum s3xml_event ev, const char *path, const char *text, size_t len, void *arg)
{
	int *n = arg;
	return ++*n == 2 ? CKPT_EINTERNAL : 0;
}

static void
test_xml_stop(void **state)
{
	int n = 0;
	ckd_err e;
	assert_int_equal(s3xml_scan("<a><b/><c/></a>", 15, stop_cb, &n, &e), CKPT_EINTERNAL);
	assert_int_equal(n, 2);
}

static char tmpdir[256];

static void
write_file(const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
clear_env(void)
{
	const char *names[] = {
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unsetenv(names[i]);
	setenv("HOME", tmpdir, 1);
}

static void
test_ini(void **state)
{
	char *v;
	ckd_err e;
	char path[512];

	write_file("ini", "# comment\n[default]\nkey = one\n; other\n[ profile x ]\r\n"
	    "key=two\r\n  spaced =  three words  \nnoequals\n[default]\nlater = yes\n");
	snprintf(path, sizeof(path), "%s/ini", tmpdir);
	assert_int_equal(s3conf_ini_get(path, "default", "key", &v, &e), 0);
	assert_string_equal(v, "one");
	free(v);
	assert_int_equal(s3conf_ini_get(path, "profile x", "key", &v, &e), 0);
	assert_string_equal(v, "two");
	free(v);
	assert_int_equal(s3conf_ini_get(path, "profile x", "spaced", &v, &e), 0);
	assert_string_equal(v, "three words");
	free(v);
	assert_int_equal(s3conf_ini_get(path, "default", "later", &v, &e), 0);
	assert_string_equal(v, "yes");
	free(v);
	assert_int_equal(s3conf_ini_get(path, "default", "absent", &v, &e), 0);
	assert_null(v);
	assert_int_equal(s3conf_ini_get(path, "nosection", "key", &v, &e), 0);
	assert_null(v);
	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	assert_int_equal(s3conf_ini_get(path, "default", "key", &v, &e), 0);
	assert_null(v);
	/* A directory is not a settings file. */
	assert_int_equal(s3conf_ini_get(tmpdir, "default", "key", &v, &e), CKPT_EINVAL);
}

static int
mkdir_aws(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/.aws", tmpdir);
	return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

static void
test_conf_sources(void **state)
{
	struct s3_conf c;
	ckd_err e;

	/* Nothing anywhere: no credentials. */
	clear_env();
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), CKPT_EACCES);
	assert_non_null(strstr(e.msg, "no credentials"));

	/* Environment: AWS's default endpoint, virtual-hosted. */
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secret-env", 1);
	setenv("AWS_DEFAULT_REGION", "eu-west-3", 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), 0);
	assert_string_equal(c.access_key, "AKIDENV");
	assert_string_equal(c.region, "eu-west-3");
	assert_string_equal(c.host, "s3.eu-west-3.amazonaws.com");
	assert_string_equal(c.scheme, "https");
	assert_false(c.path_style);
	s3conf_clear(&c);
	/* AWS_REGION wins over AWS_DEFAULT_REGION; a custom endpoint is
	 * path-style. */
	setenv("AWS_REGION", "us-west-2", 1);
	setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/", 1);
	setenv("AWS_SESSION_TOKEN", "tok", 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), 0);
	assert_string_equal(c.region, "us-west-2");
	assert_string_equal(c.host, "127.0.0.1:9000");
	assert_string_equal(c.scheme, "http");
	assert_true(c.path_style);
	assert_string_equal(c.session_token, "tok");
	s3conf_clear(&c);
	/* AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL. */
	setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.net", 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), 0);
	assert_string_equal(c.host, "s3.example.net");
	s3conf_clear(&c);

	/* Bad endpoints and regions. */
	const char *bad_ep[] = {
		"ftp://x", "http://", "http://user@host", "http://h/path", "http://h?q",
		"127.0.0.1:9000", "http://h h",
	};
	for (size_t i = 0; i < sizeof(bad_ep) / sizeof(bad_ep[0]); i++) {
		setenv("AWS_ENDPOINT_URL_S3", bad_ep[i], 1);
		memset(&c, 0, sizeof(c));
		if (s3conf_load(&c, NULL, &e) != CKPT_EINVAL)
			fail_msg("endpoint accepted: %s", bad_ep[i]);
	}
	unsetenv("AWS_ENDPOINT_URL_S3");
	setenv("AWS_REGION", "us-west-2/../x", 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), CKPT_EINVAL);

	/* Files under HOME: the profile's keys, region and endpoint; the
	 * environment's keys are gone. */
	clear_env();
	assert_int_equal(mkdir_aws(), 0);
	write_file(".aws/credentials", "[default]\naws_access_key_id = AKIDDEF\n"
	    "aws_secret_access_key = sdef\n[work]\naws_access_key_id = AKIDWORK\n"
	    "aws_secret_access_key = swork\naws_session_token = twork\n");
	write_file(".aws/config", "[default]\nregion = ap-south-1\n[profile work]\n"
	    "region = ca-central-1\nendpoint_url = http://rgw.local:7480\n"
	    "[profile cfgkeys]\naws_access_key_id = AKIDCFG\naws_secret_access_key = scfg\n");
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), 0);
	assert_string_equal(c.access_key, "AKIDDEF");
	assert_string_equal(c.region, "ap-south-1");
	assert_false(c.path_style);
	s3conf_clear(&c);
	setenv("AWS_PROFILE", "work", 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), 0);
	assert_string_equal(c.access_key, "AKIDWORK");
	assert_string_equal(c.secret_key, "swork");
	assert_string_equal(c.session_token, "twork");
	assert_string_equal(c.region, "ca-central-1");
	assert_string_equal(c.host, "rgw.local:7480");
	assert_true(c.path_style);
	assert_string_equal(c.key_source, "credentials file");
	s3conf_clear(&c);
	/* Keys in the config file only. */
	setenv("AWS_PROFILE", "cfgkeys", 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), 0);
	assert_string_equal(c.access_key, "AKIDCFG");
	assert_string_equal(c.key_source, "config file");
	s3conf_clear(&c);
	/* A profile nobody defines. */
	setenv("AWS_PROFILE", "nobody", 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, NULL, &e), CKPT_EACCES);
	assert_non_null(strstr(e.msg, "nobody"));
	/* Options win over everything; half a key pair is refused. */
	struct s3_opts o = { .access_key = "AKIDOPT", .secret_key = "sopt", .region = "x-1",
	    .endpoint = "http://h:1" };
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, &o, &e), 0);
	assert_string_equal(c.access_key, "AKIDOPT");
	assert_string_equal(c.region, "x-1");
	s3conf_clear(&c);
	struct s3_opts half = { .access_key = "AKIDOPT" };
	memset(&c, 0, sizeof(c));
	assert_int_equal(s3conf_load(&c, &half, &e), CKPT_EINVAL);
	clear_env();
}

/* The client refuses bad tuning and describes itself without secrets. */
static void
test_client_opts(void **state)
{
	struct s3_client *c;
	ckd_err e;
	struct s3_opts o = { .access_key = "AKIDX", .secret_key = "TOPSECRET",
	    .session_token = "TOKENSECRET", .endpoint = "http://127.0.0.1:1" };

	clear_env();
	assert_int_equal(s3_client_new(&c, &o, &e), 0);
	assert_null(strstr(s3_client_describe(c), "TOPSECRET"));
	assert_null(strstr(s3_client_describe(c), "TOKENSECRET"));
	assert_non_null(strstr(s3_client_describe(c), "AKIDX"));
	/* Nothing listens on port 1: a connection error, retried, then EIO
	 * naming the endpoint and not the secret. */
	struct s3_opts quick = o;
	quick.retries = 2;
	quick.backoff_ms = 10;
	s3_client_free(c);
	assert_int_equal(s3_client_new(&c, &quick, &e), 0);
	char buf[4];
	assert_int_equal(s3_get(c, "bkt", "k", 0, 4, buf, &e), CKPT_EIO);
	assert_non_null(strstr(e.msg, "127.0.0.1:1"));
	assert_non_null(strstr(e.msg, "3 tries"));
	assert_null(strstr(e.msg, "TOPSECRET"));
	struct s3_counters n;
	s3_counters(c, &n);
	assert_int_equal(n.requests, 3);
	assert_int_equal(n.retries, 2);
	/* Bad keys and ranges are refused before any request. */
	assert_int_equal(s3_put(c, "bkt", "", "x", 1, &e), CKPT_EINVAL);
	assert_int_equal(s3_put(c, "bkt", "a\nb", "x", 1, &e), CKPT_EINVAL);
	assert_int_equal(s3_get(c, "bkt", "k", UINT64_MAX - 1, 4, buf, &e), CKPT_EINVAL);
	assert_int_equal(s3_get(c, "bkt", "k", 0, 0, buf, &e), 0);
	s3_counters(c, &n);
	assert_int_equal(n.requests, 3);
	s3_client_free(c);

	struct s3_opts bad = o;
	bad.part_size = 1u << 20;
	assert_int_equal(s3_client_new(&c, &bad, &e), CKPT_EINVAL);
	bad = o;
	bad.parallel = 1000;
	assert_int_equal(s3_client_new(&c, &bad, &e), CKPT_EINVAL);
	clear_env();
}

static int
setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/ckptd-s3parse-XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url),
		cmocka_unit_test(test_xml),
		cmocka_unit_test(test_xml_stop),
		cmocka_unit_test(test_ini),
		cmocka_unit_test(test_conf_sources),
		cmocka_unit_test(test_client_opts),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
