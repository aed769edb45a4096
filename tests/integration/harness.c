/*
 * harness.c - TAP output and a private ckptd per test program.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* ---- TAP ------------------------------------------------------------- */

static pthread_mutex_t tap_lock = PTHREAD_MUTEX_INITIALIZER;
static int tap_n, tap_failed;

static void tap_vline(int cond, const char *file, int line, const char *fmt,
    va_list ap)
{
	char msg[2048], *p;

	pthread_mutex_lock(&tap_lock);
	tap_n++;
	if (!cond)
		tap_failed++;
	vsnprintf(msg, sizeof msg, fmt, ap);
	for (p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	printf("%sok %d - %s\n", cond ? "" : "not ", tap_n, msg);
	if (!cond)
		printf("#   failed at %s:%d\n", file, line);
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
}

int tap_ok(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tap_vline(cond, file, line, fmt, ap);
	va_end(ap);
	return cond;
}

int tap_is_int(long long got, long long want, const char *file, int line,
    const char *fmt, ...)
{
	va_list ap;
	int cond = got == want;

	va_start(ap, fmt);
	tap_vline(cond, file, line, fmt, ap);
	va_end(ap);
	if (!cond)
		diag("  got %lld, want %lld", got, want);
	return cond;
}

/* One assertion about two strings; on failure both are shown, labelled. */
static int tap_vstr(int cond, const char *file, int line, const char *fmt,
    va_list ap, const char *la, const char *a, const char *lb, const char *b)
{
	tap_vline(cond, file, line, fmt, ap);
	if (!cond)
		diag("  %s %.900s\n  %s %.900s", la, a ? a : "(null)", lb,
		    b ? b : "(null)");
	return cond;
}

int tap_is_str(const char *got, const char *want, const char *file, int line,
    const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = tap_vstr(got && want && strcmp(got, want) == 0, file, line, fmt, ap,
	    "got: ", got, "want:", want);
	va_end(ap);
	return r;
}

int tap_has(const char *hay, const char *needle, const char *file, int line,
    const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = tap_vstr(hay && needle && strcasestr(hay, needle) != NULL, file,
	    line, fmt, ap, "text: ", hay, "lacks:", needle);
	va_end(ap);
	return r;
}

void tap_skip(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&tap_lock);
	tap_n++;
	printf("ok %d # SKIP ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
}

void diag(const char *fmt, ...)
{
	va_list ap;
	char buf[2048], *p, *nl;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&tap_lock);
	for (p = buf; p; p = nl) {
		nl = strchr(p, '\n');
		if (nl)
			*nl++ = '\0';
		if (nl && *nl == '\0')
			nl = NULL;
		printf("# %s\n", p);
	}
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
}

void bail_out(const char *fmt, ...)
{
	va_list ap;

	printf("Bail out! ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

int done_testing(void)
{
	pthread_mutex_lock(&tap_lock);
	printf("1..%d\n", tap_n);
	if (tap_failed)
		printf("# %d of %d assertions failed\n", tap_failed, tap_n);
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
	return tap_failed ? 1 : 0;
}

int tap_failures(void)
{
	int n;

	pthread_mutex_lock(&tap_lock);
	n = tap_failed;
	pthread_mutex_unlock(&tap_lock);
	return n;
}

/* ---- small helpers ---------------------------------------------------------- */

int64_t hx_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hx_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

const char *hx_srcdir(void)
{
	const char *s = getenv("CKPT_TEST_SRCDIR");

	return s && *s ? s : ".";
}

void hx_fill(void *buf, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
	unsigned char *p = buf;
	size_t i;

	for (i = 0; i + 8 <= n; i += 8) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		uint64_t v = x * 0x2545F4914F6CDD1Dull;
		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		p[i] = (unsigned char)((x * 0x2545F4914F6CDD1Dull) >> 56);
	}
}

char *hx_read_file(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	size_t got = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) != 0 || !(buf = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return NULL;
	}
	while (got < (size_t)st.st_size &&
	    (r = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
		got += (size_t)r;
	close(fd);
	buf[got] = '\0';
	if (len)
		*len = got;
	return buf;
}

int hx_write_file(const char *path, const char *text)
{
	size_t len = strlen(text);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int r;

	if (fd < 0)
		return -1;
	r = write(fd, text, len) == (ssize_t)len ? 0 : -1;
	if (close(fd) != 0)
		r = -1;
	return r;
}

int hx_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

int hx_mkdirs(const char *path)
{
	char buf[HX_PATH];
	char *p;

	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return -1;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

char *hx_join(char *buf, const char *dir, const char *name)
{
	if ((size_t)snprintf(buf, HX_PATH, "%s/%s", dir, name) >= HX_PATH)
		bail_out("path too long: %s/%s", dir, name);
	return buf;
}

static int hx_rm_cb(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

int hx_rmtree(const char *path)
{
	if (!hx_exists(path))
		return 0;
	return nftw(path, hx_rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

/* ---- snapshots --------------------------------------------------------------- */

struct snap {
	char **lines;
	size_t n, cap;
	size_t skip;         /* strlen of the top directory */
};

static struct snap *snap_cur;

static uint64_t hx_hash_file(const char *path)
{
	uint64_t h = 1469598103934665603ull;
	unsigned char buf[65536];
	ssize_t r, i;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return 0;
	while ((r = read(fd, buf, sizeof buf)) > 0)
		for (i = 0; i < r; i++)
			h = (h ^ buf[i]) * 1099511628211ull;
	close(fd);
	return h;
}

static int hx_snap_cb(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	struct snap *s = snap_cur;
	char line[HX_PATH + 128];
	char type = flag == FTW_D ? 'd' : S_ISLNK(st->st_mode) ? 'l' :
	    S_ISREG(st->st_mode) ? 'f' : S_ISSOCK(st->st_mode) ? 's' : '?';
	uint64_t h = type == 'f' ? hx_hash_file(path) : 0;

	(void)ftw;
	snprintf(line, sizeof line, "%s %c %04o %u %lld %016llx",
	    path + s->skip, type, (unsigned)(st->st_mode & 07777),
	    (unsigned)st->st_uid, type == 'd' ? 0LL : (long long)st->st_size,
	    (unsigned long long)h);
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->lines = realloc(s->lines, s->cap * sizeof *s->lines);
		if (!s->lines)
			bail_out("out of memory");
	}
	s->lines[s->n++] = strdup(line);
	return 0;
}

static int hx_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *hx_snapshot(const char *dir)
{
	struct snap s = { NULL, 0, 0, strlen(dir) };
	size_t i, len = 1;
	char *out;

	snap_cur = &s;
	nftw(dir, hx_snap_cb, 32, FTW_PHYS);
	snap_cur = NULL;
	qsort(s.lines, s.n, sizeof *s.lines, hx_cmp_str);
	for (i = 0; i < s.n; i++)
		len += strlen(s.lines[i]) + 1;
	out = malloc(len);
	if (!out)
		bail_out("out of memory");
	out[0] = '\0';
	for (i = 0; i < s.n; i++) {
		strcat(out, s.lines[i]);
		strcat(out, "\n");
		free(s.lines[i]);
	}
	free(s.lines);
	return out;
}

/* ---- processes ----------------------------------------------------------------- */

/* waitpid with a deadline; returns the status, or -1 on timeout. */
static int hx_wait_deadline(pid_t pid, int timeout_ms, int *status)
{
	int64_t end = hx_now_ms() + timeout_ms;
	pid_t r;

	for (;;) {
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
		if (hx_now_ms() >= end)
			return -1;
		hx_sleep_ms(10);
	}
}

int hx_run(char *const argv[], char *out, size_t outlen, int timeout_s)
{
	int p[2], status = 0;
	size_t used = 0;
	pid_t pid;
	int64_t end = hx_now_ms() + (int64_t)timeout_s * 1000;

	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(argv[0], argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		struct pollfd pf = { p[0], POLLIN, 0 };
		int64_t left = end - hx_now_ms();
		char buf[4096];
		ssize_t r;

		if (left <= 0) {
			kill(pid, SIGKILL);
			break;
		}
		if (poll(&pf, 1, (int)(left > 1000 ? 1000 : left)) <= 0)
			continue;
		r = read(p[0], buf, sizeof buf);
		if (r <= 0)
			break;
		if (out && used + 1 < outlen) {
			size_t k = (size_t)r < outlen - 1 - used ?
			    (size_t)r : outlen - 1 - used;
			memcpy(out + used, buf, k);
			used += k;
		}
	}
	close(p[0]);
	if (out && outlen)
		out[used] = '\0';
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

int hx_ensure_user(const char *name, uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam(name);

	if (!pw && geteuid() == 0) {
		char *argv[] = { "/usr/sbin/useradd", "--system", "--user-group",
		    "--no-create-home", "--home-dir", "/nonexistent", "--shell",
		    "/usr/sbin/nologin", (char *)name, NULL };
		char out[1024];
		int r = hx_run(argv, out, sizeof out, 30);

		if (r != 0)
			diag("useradd %s: exit %d: %s", name, r, out);
		pw = getpwnam(name);
	}
	if (!pw)
		return -1;
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

int hx_as_user(uid_t uid, gid_t gid, int (*fn)(void *arg, char *msg,
    size_t msglen), void *arg, char *msg, size_t msglen)
{
	int p[2], status, r = INT32_MIN;
	pid_t pid;

	if (msg && msglen)
		msg[0] = '\0';
	fflush(stdout);
	if (pipe2(p, O_CLOEXEC) != 0)
		return INT32_MIN;
	pid = fork();
	if (pid < 0)
		return INT32_MIN;
	if (pid == 0) {
		char m[1024] = "";
		int v;

		close(p[0]);
		if (setgroups(0, NULL) != 0 || setgid(gid) != 0 ||
		    setuid(uid) != 0) {
			snprintf(m, sizeof m, "cannot become %u:%u: %s",
			    (unsigned)uid, (unsigned)gid, strerror(errno));
			v = INT32_MIN;
		} else {
			v = fn(arg, m, sizeof m);
		}
		if (write(p[1], &v, sizeof v) != sizeof v ||
		    write(p[1], m, strlen(m) + 1) < 0)
			_exit(2);
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &r, sizeof r) != sizeof r) {
		r = INT32_MIN;
	} else if (msg && msglen) {
		ssize_t n = read(p[0], msg, msglen - 1);

		msg[n > 0 ? n : 0] = '\0';
	}
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return r;
}

/* ---- the daemon ------------------------------------------------------------------ */

#define HX_MAX_DAEMONS 8
static struct hx_daemon *hx_all[HX_MAX_DAEMONS];
static pid_t hx_owner;          /* the test process (not forked children) */

static int hx_keep(void)
{
	const char *keep = getenv("CKPTD_TEST_KEEP");

	return keep && strcmp(keep, "1") == 0;
}

static void hx_umount(struct hx_daemon *d)
{
	if (d->mnt[0] && umount2(d->mnt, 0) != 0 &&
	    umount2(d->mnt, MNT_DETACH) != 0)
		diag("umount %s: %s", d->mnt, strerror(errno));
	d->mnt[0] = '\0';
}

/* A test that bailed out: kill its daemons and clean up what it made. */
static void hx_atexit(void)
{
	int i;

	if (getpid() != hx_owner)
		return;
	for (i = 0; i < HX_MAX_DAEMONS; i++) {
		struct hx_daemon *d = hx_all[i];

		if (!d)
			continue;
		hx_kill9(d);
		hx_umount(d);
		if (!hx_keep())
			hx_rmtree(d->dir);
		hx_all[i] = NULL;
	}
}

char *hx_path(struct hx_daemon *d, char *buf, const char *fmt, ...)
{
	char rel[HX_PATH];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof rel, fmt, ap);
	va_end(ap);
	if ((size_t)snprintf(buf, HX_PATH, "%s/%s", d->dir, rel) >= HX_PATH)
		bail_out("path too long: %s/%s", d->dir, rel);
	return buf;
}

void hx_init(struct hx_daemon *d)
{
	static int registered;
	const char *bin = getenv("CKPTD_BIN");
	const char *ext = getenv("CKPTD_TEST_SOCKET");
	const char *tmp = getenv("TMPDIR");
	int i;

	memset(d, 0, sizeof *d);
	d->workers = 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	setenv("CKPTD_AUTOSTART", "0", 1);
	hx_owner = getpid();
	snprintf(d->dir, sizeof d->dir, "%s/ckpt-test.XXXXXX",
	    tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(d->dir))
		bail_out("mkdtemp %s: %s", d->dir, strerror(errno));
	hx_path(d, d->state, "state");
	hx_path(d, d->log, "ckptd.log");
	if (ext && *ext) {
		d->external = 1;
		snprintf(d->sock, sizeof d->sock, "%s", ext);
		diag("using the running daemon at %s", d->sock);
	} else {
		if (!bin || !*bin)
			bail_out("CKPTD_BIN is not set (run through meson test)");
		snprintf(d->bin, sizeof d->bin, "%s", bin);
		hx_path(d, d->sock, "s.sock");
	}
	setenv("CKPTD_SOCKET", d->sock, 1);
	if (!registered) {
		atexit(hx_atexit);
		registered = 1;
	}
	for (i = 0; i < HX_MAX_DAEMONS; i++)
		if (!hx_all[i]) {
			hx_all[i] = d;
			break;
		}
}

static int hx_try_connect(struct hx_daemon *d)
{
	ckpt_client *c = NULL;
	int r = ckpt_connect(d->sock, &c);

	if (r == 0)
		ckpt_disconnect(c);
	return r;
}

int hx_start(struct hx_daemon *d)
{
	char workers[16];
	char *argv[32];
	int n = 0, i, status, logfd, r = CKPT_ECONN;
	int64_t end;

	if (d->external)
		return hx_try_connect(d) == 0 ? 0 : -1;
	snprintf(workers, sizeof workers, "%d", d->workers);
	argv[n++] = d->bin;
	argv[n++] = "--socket";
	argv[n++] = d->sock;
	argv[n++] = "--state-dir";
	argv[n++] = d->state;
	argv[n++] = "--foreground";
	argv[n++] = "--workers";
	argv[n++] = workers;
	for (i = 0; i < 8 && d->extra[i]; i++)
		argv[n++] = (char *)d->extra[i];
	argv[n] = NULL;

	logfd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0)
		bail_out("open %s: %s", d->log, strerror(errno));
	fflush(stdout);
	d->pid = fork();
	if (d->pid < 0)
		bail_out("fork: %s", strerror(errno));
	if (d->pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		dup2(nul, 0);
		dup2(logfd, 1);
		dup2(logfd, 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(argv[0], argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(logfd);

	end = hx_now_ms() + 15000;
	while (hx_now_ms() < end) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			diag("ckptd exited during start-up (status 0x%x)", status);
			d->pid = 0;
			hx_dump_log(d, 30);
			return -1;
		}
		if (hx_exists(d->sock) && (r = hx_try_connect(d)) == 0)
			return 0;
		hx_sleep_ms(20);
	}
	diag("ckptd did not answer on %s within 15 s (last: %s)", d->sock,
	    ckpt_strerror(r));
	hx_dump_log(d, 30);
	return -1;
}

int hx_alive(struct hx_daemon *d)
{
	int status;

	if (d->external)
		return 1;
	if (d->pid <= 0)
		return 0;
	if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
		diag("ckptd (pid %d) has exited (status 0x%x)", (int)d->pid,
		    status);
		d->pid = 0;
		return 0;
	}
	return 1;
}

int hx_stop(struct hx_daemon *d)
{
	int status = 0;

	if (d->external || d->pid <= 0)
		return 0;
	kill(d->pid, SIGTERM);
	if (hx_wait_deadline(d->pid, 60000, &status) != 0) {
		diag("ckptd (pid %d) ignored SIGTERM for 60 s; killing it",
		    (int)d->pid);
		kill(d->pid, SIGKILL);
		waitpid(d->pid, &status, 0);
		d->pid = 0;
		return -1;
	}
	d->pid = 0;
	if (status != 0) {
		diag("ckptd exit status 0x%x", status);
		hx_dump_log(d, 40);
	}
	return status;
}

void hx_kill9(struct hx_daemon *d)
{
	if (d->external || d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	d->pid = 0;
}

int hx_restart(struct hx_daemon *d)
{
	if (d->external)
		return -1;
	hx_stop(d);
	return hx_start(d);
}

int hx_kill9_restart(struct hx_daemon *d)
{
	if (d->external)
		return -1;
	hx_kill9(d);
	return hx_start(d);
}

void hx_dump_log(struct hx_daemon *d, int lines)
{
	char buf[16384];
	FILE *f;
	size_t n;
	long size;
	char *p, *start;
	int count = 0;

	f = fopen(d->log, "re");
	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0,
	    SEEK_SET);
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	start = buf;
	for (p = buf + (n ? n - 1 : 0); p > buf; p--)
		if (*p == '\n' && p != buf + n - 1 && ++count >= lines) {
			start = p + 1;
			break;
		}
	diag("---- last lines of %s ----\n%s", d->log, start);
}

void hx_cleanup(struct hx_daemon *d)
{
	int i;

	hx_stop(d);
	if (tap_failures())
		hx_dump_log(d, 40);
	hx_umount(d);
	if (hx_keep())
		diag("kept %s", d->dir);
	else
		hx_rmtree(d->dir);
	for (i = 0; i < HX_MAX_DAEMONS; i++)
		if (hx_all[i] == d)
			hx_all[i] = NULL;
}

int hx_connect(struct hx_daemon *d, ckpt_client **c)
{
	int r = ckpt_connect(d->sock, c);

	if (r != 0)
		diag("connect %s: %s", d->sock, ckpt_strerror(r));
	return r;
}

int hx_free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	int fd, port;

	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
		bail_out("no free loopback port: %s", strerror(errno));
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}
