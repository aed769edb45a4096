/*
 * cephbed.c - start and stop tests/ceph/rgw.sh from C (see cephbed.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cephbed.h"

static const char *
script(void)
{
	const char *s = getenv("CKPT_RGW_SH");
	return s != NULL && s[0] != '\0' ? s : "tests/ceph/rgw.sh";
}

/* Read DIR/env ("NAME=value" lines) into the environment. */
static int
load_env(struct cephbed *b)
{
	char path[600], line[1024];
	snprintf(path, sizeof(path), "%s/env", b->dir);
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		perror(path);
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		char *eq = strchr(line, '=');
		if (eq == NULL)
			continue;
		*eq = '\0';
		setenv(line, eq + 1, 1);
	}
	fclose(f);
	/* Nothing of the caller's own AWS setup may leak in. */
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_PROFILE");
	unsetenv("AWS_ENDPOINT_URL_S3");
	return 0;
}

static int
run_args(const char *verb, const char *dir, const char *a, const char *b)
{
	/* The child's freopen would flush our buffers a second time. */
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* The script prints the environment on stdout: it is read from
		 * DIR/env instead. */
		if (freopen("/dev/null", "w", stdout) == NULL)
			_exit(127);
		execl(script(), script(), verb, dir, a, b, (char *)NULL);
		perror(script());
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int
run(const char *verb, const char *dir)
{
	return run_args(verb, dir, NULL, NULL);
}

int
cephbed_start(struct cephbed *b)
{
	const char *reuse = getenv("CKPT_CEPH_DIR");
	memset(b, 0, sizeof(*b));
	if (reuse != NULL && reuse[0] != '\0') {
		snprintf(b->dir, sizeof(b->dir), "%s", reuse);
		return load_env(b);
	}
	const char *tmp = getenv("TMPDIR");
	snprintf(b->dir, sizeof(b->dir), "%s/ckpt-ceph-XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(b->dir) == NULL) {
		perror("mkdtemp");
		return -1;
	}
	b->owned = 1;
	if (run("start", b->dir) != 0) {
		fprintf(stderr, "cephbed: %s start %s failed\n", script(), b->dir);
		(void)run("stop", b->dir);      /* what did start */
		b->owned = 0;
		return -1;
	}
	return load_env(b);
}

void
cephbed_stop(struct cephbed *b)
{
	if (b->owned && b->dir[0] != '\0')
		(void)run("stop", b->dir);
	b->owned = 0;
}

int
cephbed_rgw(struct cephbed *b, const char *verb)
{
	return run(verb, b->dir);
}

static uint64_t
mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

void
cephbed_fill(void *buf, uint64_t off, size_t len, uint64_t seed)
{
	unsigned char *p = buf;
	size_t i = 0;
	/* Byte o is byte (o % 8) of mix(seed ^ (o / 8)). */
	while (i < len) {
		uint64_t o = off + i;
		uint64_t w = mix(seed ^ (o / 8));
		size_t k = o % 8;
		if (k == 0 && len - i >= 8) {
			memcpy(p + i, &w, 8);
			i += 8;
			continue;
		}
		p[i++] = ((unsigned char *)&w)[k];
	}
}

int
cephbed_quota(struct cephbed *b, const char *bucket, uint64_t bytes)
{
	char n[32];
	snprintf(n, sizeof(n), "%llu", (unsigned long long)bytes);
	return run_args("quota", b->dir, bucket, n);
}

extern char **environ;

static char curlcfg[600];

int
cephbed_curl_config(const char *dir)
{
	snprintf(curlcfg, sizeof(curlcfg), "%s/curl.cfg", dir);
	int cfd = open(curlcfg, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *cf = cfd >= 0 ? fdopen(cfd, "w") : NULL;
	if (cf == NULL) {
		perror(curlcfg);
		return -1;
	}
	fprintf(cf, "user = \"%s:%s\"\naws-sigv4 = \"aws:amz:%s:s3\"\n"
	    "header = \"x-amz-content-sha256: UNSIGNED-PAYLOAD\"\n",
	    getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"),
	    getenv("AWS_REGION"));
	return fclose(cf) == 0 ? 0 : -1;
}

int
cephbed_curl(const char *const extra[])
{
	const char *argv[32];
	int n = 0;
	argv[n++] = "curl";
	argv[n++] = "-sSf";
	argv[n++] = "-K";
	argv[n++] = curlcfg;
	for (int i = 0; extra[i] != NULL && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t pid;
	if (posix_spawnp(&pid, "curl", NULL, NULL, (char *const *)argv, environ) != 0)
		return -1;
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int
cephbed_rgw_counter(struct cephbed *b, const char *name, uint64_t *v)
{
	char sock[600], key[64], buf[1 << 16];
	size_t len = 0;
	ssize_t n;
	int fds[2], st, found = 0;
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/run/client.rgw.a.asok", b->dir);
	snprintf(key, sizeof(key), "\"%s\":", name);
	if (pipe(fds) != 0)
		return -1;
	fflush(NULL);
	if ((pid = fork()) < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execlp("ceph", "ceph", "--admin-daemon", sock, "perf", "dump",
		    (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	close(fds[0]);
	buf[len] = '\0';
	while (waitpid(pid, &st, 0) < 0)
		;
	char *p = strstr(buf, key);
	if (p != NULL && WIFEXITED(st) && WEXITSTATUS(st) == 0)
		found = sscanf(p + strlen(key), " %lu", (unsigned long *)v) == 1;
	return found ? 0 : -1;
}
