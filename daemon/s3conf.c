/*
 * s3conf.c - endpoint, region and credentials of an S3 client, from its
 * options, the environment and the AWS shared files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3conf.h"

#define INI_MAX (1u << 20)

static char *
env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v != NULL && v[0] != '\0' ? (char *)v : NULL;
}

static char *
trim(char *s, char *end)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	*end = '\0';
	return s;
}

int
s3conf_ini_get(const char *path, const char *section, const char *key,
    char **out, ckd_err *e)
{
	char *buf = NULL;
	size_t cap = 0;
	int fd = -1, r = 0;
	struct stat st;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return err_errno(e, errno, "%s", path);
	}
	if (fstat(fd, &st) != 0) {
		r = err_errno(e, errno, "%s", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = err_set(e, CKPT_EINVAL, "%s: not a regular file", path);
		goto out;
	}
	if (st.st_size > INI_MAX) {
		r = err_set(e, CKPT_ETOOBIG, "%s: larger than %u bytes", path, INI_MAX);
		goto out;
	}
	cap = (size_t)st.st_size + 1;
	if ((buf = malloc(cap)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	size_t n = 0;
	while (n < (size_t)st.st_size) {
		ssize_t k = read(fd, buf + n, (size_t)st.st_size - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = err_errno(e, errno, "%s", path);
			goto out;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	buf[n] = '\0';

	int in_section = 0;
	for (char *line = buf; line != NULL && *line != '\0';) {
		char *nl = strchr(line, '\n');
		char *end = nl != NULL ? nl : line + strlen(line);
		char *next = nl != NULL ? nl + 1 : NULL;
		char *l = trim(line, end);
		if (l[0] == '[') {
			char *close = strchr(l, ']');
			if (close != NULL) {
				char *name = trim(l + 1, close);
				in_section = strcmp(name, section) == 0;
			}
		} else if (in_section && l[0] != '#' && l[0] != ';') {
			char *eq = strchr(l, '=');
			if (eq != NULL) {
				char *v = trim(eq + 1, eq + 1 + strlen(eq + 1));
				char *k = trim(l, eq);
				if (strcmp(k, key) == 0) {
					free(*out);
					if ((*out = strdup(v)) == NULL) {
						r = err_set(e, CKPT_ENOMEM, "out of memory");
						goto out;
					}
				}
			}
		}
		line = next;
	}
out:
	/* The file may hold secrets. */
	if (buf != NULL)
		explicit_bzero(buf, cap);
	free(buf);
	if (fd >= 0)
		close(fd);
	return r;
}

/* Duplicate the first non-NULL of a, b. */
static int
pick(char **dst, const char *a, const char *b, ckd_err *e)
{
	const char *v = a != NULL ? a : b;
	if (v == NULL)
		return 0;
	if ((*dst = strdup(v)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	return 0;
}

static int
home_file(char **out, const char *env, const char *rel, ckd_err *e)
{
	const char *v = env_nonempty(env);
	if (v != NULL)
		return pick(out, v, NULL, e);
	const char *home = env_nonempty("HOME");
	if (home == NULL)
		return 0;
	if (asprintf(out, "%s/%s", home, rel) < 0) {
		*out = NULL;
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	return 0;
}

/* "scheme://host[:port][/]" only: no user info, path, query or fragment. */
static int
parse_endpoint(struct s3_conf *c, const char *url, ckd_err *e)
{
	const char *rest;
	if (strncmp(url, "http://", 7) == 0) {
		rest = url + 7;
		c->scheme = strdup("http");
	} else if (strncmp(url, "https://", 8) == 0) {
		rest = url + 8;
		c->scheme = strdup("https");
	} else {
		return err_set(e, CKPT_EINVAL,
		    "s3 endpoint '%s': must start with http:// or https://", url);
	}
	if (c->scheme == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	size_t n = strcspn(rest, "/?#");
	if (n == 0 || n > 255)
		return err_set(e, CKPT_EINVAL, "s3 endpoint '%s': bad host", url);
	if (rest[n] != '\0' && strcmp(rest + n, "/") != 0)
		return err_set(e, CKPT_EINVAL,
		    "s3 endpoint '%s': a path, query or fragment is not supported", url);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)rest[i];
		if (ch <= ' ' || ch >= 0x7f || ch == '@' || ch == '\\')
			return err_set(e, CKPT_EINVAL, "s3 endpoint '%s': bad host", url);
	}
	if ((c->host = strndup(rest, n)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	return 0;
}

static void
free_secret(char **p)
{
	if (*p != NULL) {
		explicit_bzero(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

void
s3conf_clear(struct s3_conf *c)
{
	free(c->scheme);
	free(c->host);
	free(c->region);
	free(c->access_key);
	free(c->profile);
	free_secret(&c->secret_key);
	free_secret(&c->session_token);
	memset(c, 0, sizeof(*c));
}

/* Keys from [profile] of an INI file, when it has both of them. */
static int
keys_from_file(struct s3_conf *c, const char *path, const char *section,
    const char *source, ckd_err *e)
{
	char *id = NULL, *secret = NULL, *token = NULL;
	int r;
	if ((r = s3conf_ini_get(path, section, "aws_access_key_id", &id, e)) != 0 ||
	    (r = s3conf_ini_get(path, section, "aws_secret_access_key", &secret, e)) != 0 ||
	    (r = s3conf_ini_get(path, section, "aws_session_token", &token, e)) != 0)
		goto out;
	if (id != NULL && secret != NULL) {
		c->access_key = id;
		c->secret_key = secret;
		c->session_token = token;
		c->key_source = source;
		id = secret = token = NULL;
	}
out:
	free(id);
	free_secret(&secret);
	free_secret(&token);
	return r;
}

int
s3conf_load(struct s3_conf *c, const struct s3_opts *o, ckd_err *e)
{
	static const struct s3_opts none;
	char *cred_path = NULL, *conf_path = NULL, *conf_section = NULL;
	char *f_region = NULL, *f_endpoint = NULL;
	int r;

	if (o == NULL)
		o = &none;
	if ((r = pick(&c->profile, o->profile, env_nonempty("AWS_PROFILE"), e)) != 0 ||
	    (c->profile == NULL && (r = pick(&c->profile, "default", NULL, e)) != 0) ||
	    (r = home_file(&cred_path, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials", e)) != 0 ||
	    (r = home_file(&conf_path, "AWS_CONFIG_FILE", ".aws/config", e)) != 0)
		goto out;
	if (strcmp(c->profile, "default") == 0)
		conf_section = strdup("default");
	else if (asprintf(&conf_section, "profile %s", c->profile) < 0)
		conf_section = NULL;
	if (conf_section == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if (conf_path != NULL &&
	    ((r = s3conf_ini_get(conf_path, conf_section, "region", &f_region, e)) != 0 ||
	     (r = s3conf_ini_get(conf_path, conf_section, "endpoint_url", &f_endpoint, e)) != 0))
		goto out;

	/* Region. */
	const char *region = o->region;
	if (region == NULL)
		region = env_nonempty("AWS_REGION");
	if (region == NULL)
		region = env_nonempty("AWS_DEFAULT_REGION");
	if (region == NULL)
		region = f_region;
	if (region == NULL)
		region = "us-east-1";
	for (const char *p = region; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
			r = err_set(e, CKPT_EINVAL, "s3 region '%s': not a region name", region);
			goto out;
		}
	}
	if (region[0] == '\0' || strlen(region) > 64) {
		r = err_set(e, CKPT_EINVAL, "s3 region: empty or too long");
		goto out;
	}
	if ((r = pick(&c->region, region, NULL, e)) != 0)
		goto out;

	/* Endpoint: a custom one is addressed path-style. */
	const char *endpoint = o->endpoint;
	if (endpoint == NULL)
		endpoint = env_nonempty("AWS_ENDPOINT_URL_S3");
	if (endpoint == NULL)
		endpoint = env_nonempty("AWS_ENDPOINT_URL");
	if (endpoint == NULL)
		endpoint = f_endpoint;
	if (endpoint != NULL) {
		if ((r = parse_endpoint(c, endpoint, e)) != 0)
			goto out;
		c->path_style = true;
	} else {
		if ((c->scheme = strdup("https")) == NULL ||
		    asprintf(&c->host, "s3.%s.amazonaws.com", c->region) < 0) {
			c->host = NULL;
			r = err_set(e, CKPT_ENOMEM, "out of memory");
			goto out;
		}
		c->path_style = false;
	}

	/* Credentials: options, environment, credentials file, config file. */
	if (o->access_key != NULL || o->secret_key != NULL) {
		if (o->access_key == NULL || o->secret_key == NULL) {
			r = err_set(e, CKPT_EINVAL, "s3: access key and secret key go together");
			goto out;
		}
		if ((r = pick(&c->access_key, o->access_key, NULL, e)) != 0 ||
		    (r = pick(&c->secret_key, o->secret_key, NULL, e)) != 0 ||
		    (r = pick(&c->session_token, o->session_token, NULL, e)) != 0)
			goto out;
		c->key_source = "options";
	} else if (env_nonempty("AWS_ACCESS_KEY_ID") != NULL &&
	    env_nonempty("AWS_SECRET_ACCESS_KEY") != NULL) {
		if ((r = pick(&c->access_key, getenv("AWS_ACCESS_KEY_ID"), NULL, e)) != 0 ||
		    (r = pick(&c->secret_key, getenv("AWS_SECRET_ACCESS_KEY"), NULL, e)) != 0 ||
		    (r = pick(&c->session_token, env_nonempty("AWS_SESSION_TOKEN"), NULL, e)) != 0)
			goto out;
		c->key_source = "environment";
	} else {
		if (cred_path != NULL &&
		    (r = keys_from_file(c, cred_path, c->profile, "credentials file", e)) != 0)
			goto out;
		if (c->access_key == NULL && conf_path != NULL &&
		    (r = keys_from_file(c, conf_path, conf_section, "config file", e)) != 0)
			goto out;
	}
	if (c->access_key == NULL) {
		r = err_set(e, CKPT_EACCES,
		    "s3: no credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
		    "or profile '%s' in %s)", c->profile,
		    cred_path != NULL ? cred_path : "~/.aws/credentials");
		goto out;
	}
	/* Keys go into HTTP headers: no control characters, no ':' in the id. */
	for (const char *p = c->access_key; *p != '\0'; p++) {
		if ((unsigned char)*p <= ' ' || *p == ':' || (unsigned char)*p >= 0x7f) {
			r = err_set(e, CKPT_EINVAL, "s3: the access key id has a bad character");
			goto out;
		}
	}
	const char *secrets[] = { c->secret_key, c->session_token };
	for (size_t i = 0; i < 2; i++) {
		for (const char *p = secrets[i]; p != NULL && *p != '\0'; p++) {
			if ((unsigned char)*p < ' ' || (unsigned char)*p == 0x7f) {
				r = err_set(e, CKPT_EINVAL, "s3: the %s has a control character",
				    i == 0 ? "secret key" : "session token");
				goto out;
			}
		}
	}
out:
	free(cred_path);
	free(conf_path);
	free(conf_section);
	free(f_region);
	free(f_endpoint);
	if (r != 0)
		s3conf_clear(c);
	return r;
}
