/*
 * mgr.c - TAP output, a private ckptd, and save/list helpers for the
 * CheckpointManager tests (see mgr.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mgr.h"

/* ---- TAP ------------------------------------------------------------- */

static pthread_mutex_t tap_lock = PTHREAD_MUTEX_INITIALIZER;
static int tap_n, tap_failed;

static int
tap_line(int cond, const char *file, int line, const char *extra,
    const char *fmt, va_list ap)
{
	pthread_mutex_lock(&tap_lock);
	tap_n++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	vprintf(fmt, ap);
	printf("\n");
	if (!cond) {
		printf("#   at %s:%d\n", file, line);
		if (extra != NULL)
			printf("%s", extra);
	}
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
	return cond;
}

int
t_ok(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = tap_line(cond, file, line, NULL, fmt, ap);
	va_end(ap);
	return r;
}

int
t_is(long long got, long long want, const char *file, int line,
    const char *fmt, ...)
{
	char extra[128];
	va_list ap;
	int r;

	snprintf(extra, sizeof extra, "#   got:  %lld\n#   want: %lld\n", got,
	    want);
	va_start(ap, fmt);
	r = tap_line(got == want, file, line, extra, fmt, ap);
	va_end(ap);
	return r;
}

int
t_is_str(const char *got, const char *want, const char *file, int line,
    const char *fmt, ...)
{
	char extra[2048];
	va_list ap;
	int r, cond;

	cond = got != NULL && want != NULL && strcmp(got, want) == 0;
	snprintf(extra, sizeof extra, "#   got:  %.900s\n#   want: %.900s\n",
	    got ? got : "(null)", want ? want : "(null)");
	va_start(ap, fmt);
	r = tap_line(cond, file, line, extra, fmt, ap);
	va_end(ap);
	return r;
}

int
t_has(const char *hay, const char *needle, const char *file, int line,
    const char *fmt, ...)
{
	char extra[2048];
	va_list ap;
	int r, cond;

	cond = hay != NULL && needle != NULL && strcasestr(hay, needle) != NULL;
	snprintf(extra, sizeof extra, "#   text: %.900s\n#   lacks: %.900s\n",
	    hay ? hay : "(null)", needle ? needle : "(null)");
	va_start(ap, fmt);
	r = tap_line(cond, file, line, extra, fmt, ap);
	va_end(ap);
	return r;
}

void
t_skip(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&tap_lock);
	tap_n++;
	printf("ok %d # skip ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
}

void
t_diag(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&tap_lock);
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
}

void
t_bail(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&tap_lock);
	printf("Bail out! ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
	exit(1);
}

int
t_done(void)
{
	pthread_mutex_lock(&tap_lock);
	printf("1..%d\n", tap_n);
	if (tap_failed > 0)
		printf("# %d of %d failed\n", tap_failed, tap_n);
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
	return tap_failed > 0 ? 1 : 0;
}

/* ---- misc ------------------------------------------------------------- */

int64_t
mgr_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
mgr_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

char *
mgr_cat(char *buf, const char *dir, const char *name)
{
	if (snprintf(buf, MGR_PATH, "%s/%s", dir, name) >= MGR_PATH)
		t_bail("path too long: %s/%s", dir, name);
	return buf;
}

int
mgr_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

int
mgr_mkdirs(const char *path)
{
	char buf[MGR_PATH];
	char *p;

	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return -1;
	for (p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int
mgr_rmtree(const char *path)
{
	if (!mgr_exists(path))
		return 0;
	return nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

char *
mgr_read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (f == NULL)
		return NULL;
	for (;;) {
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap + 65536);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
			cap += 65536;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	buf[len] = '\0';
	return buf;
}

int
mgr_write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t len = strlen(text);
	int r;

	if (fd < 0)
		return -1;
	r = write(fd, text, len) == (ssize_t)len ? 0 : -1;
	close(fd);
	return r;
}

/* ---- the daemon ----------------------------------------------------------- */

static struct mgr_daemon *cleanup_daemon;

static void
atexit_cleanup(void)
{
	if (cleanup_daemon != NULL)
		mgr_daemon_cleanup(cleanup_daemon);
}

void
mgr_daemon_init(struct mgr_daemon *d)
{
	char tmpl[] = "/tmp/ckpt-mgrtest.XXXXXX";

	memset(d, 0, sizeof *d);
	if ((d->bin = getenv("CKPTD_BIN")) == NULL || d->bin[0] == '\0')
		t_bail("CKPTD_BIN is not set (the build passes the daemon's path)");
	if (mkdtemp(tmpl) == NULL)
		t_bail("mkdtemp: %s", strerror(errno));
	snprintf(d->dir, sizeof d->dir, "%s", tmpl);
	mgr_cat(d->sock, d->dir, "s.sock");
	mgr_cat(d->state, d->dir, "state");
	mgr_cat(d->log, d->dir, "ckptd.log");
	setenv("CKPTD_AUTOSTART", "0", 1);
	setenv("CKPTD_SOCKET", d->sock, 1);
	cleanup_daemon = d;
	atexit(atexit_cleanup);
}

static int
sock_answers(const char *path)
{
	struct sockaddr_un sa;
	int fd, r;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path) >=
	    (int)sizeof sa.sun_path)
		return 0;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return 0;
	r = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return r;
}

int
mgr_daemon_start(struct mgr_daemon *d)
{
	pid_t ppid = getpid(), pid;
	int64_t deadline;
	int st;

	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != ppid)
			_exit(127);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
		execl(d->bin, d->bin, "--socket", d->sock, "--state-dir",
		    d->state, "--foreground", "--workers", "2", (char *)NULL);
		_exit(127);
	}
	d->pid = pid;
	deadline = mgr_now_ms() + 20000;
	while (mgr_now_ms() < deadline) {
		if (waitpid(pid, &st, WNOHANG) == pid) {
			d->pid = 0;
			t_diag("ckptd exited during start-up (status 0x%x)", st);
			mgr_daemon_dump_log(d, 30);
			return -1;
		}
		if (sock_answers(d->sock))
			return 0;
		mgr_sleep_ms(20);
	}
	t_diag("ckptd did not answer on %s within 20 s", d->sock);
	mgr_daemon_dump_log(d, 30);
	return -1;
}

int
mgr_daemon_stop(struct mgr_daemon *d)
{
	int64_t deadline;
	int st;

	if (d->pid <= 0)
		return 0;
	kill(d->pid, SIGTERM);
	deadline = mgr_now_ms() + 60000;
	while (mgr_now_ms() < deadline) {
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			return st;
		}
		mgr_sleep_ms(10);
	}
	t_diag("ckptd did not exit within 60 s of SIGTERM; killing it");
	mgr_daemon_kill9(d);
	return -1;
}

void
mgr_daemon_kill9(struct mgr_daemon *d)
{
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	d->pid = 0;
}

int
mgr_daemon_restart(struct mgr_daemon *d)
{
	int st = mgr_daemon_stop(d);

	if (st != 0)
		t_diag("ckptd stop status 0x%x", st);
	return mgr_daemon_start(d);
}

void
mgr_daemon_dump_log(const struct mgr_daemon *d, int lines)
{
	char *text = mgr_read_file(d->log), *p, *start;
	int n = 0;

	if (text == NULL)
		return;
	start = text;
	for (p = text + strlen(text); p > text; p--) {
		if (p[-1] == '\n' && ++n > lines) {
			start = p;
			break;
		}
	}
	for (p = strtok(start, "\n"); p != NULL; p = strtok(NULL, "\n"))
		t_diag("ckptd| %s", p);
	free(text);
}

void
mgr_daemon_cleanup(struct mgr_daemon *d)
{
	const char *keep = getenv("CKPTD_TEST_KEEP");

	if (d->pid > 0 && mgr_daemon_stop(d) != 0)
		mgr_daemon_dump_log(d, 40);
	if (d->mnt[0] != '\0' && umount2(d->mnt, 0) != 0 &&
	    umount2(d->mnt, MNT_DETACH) != 0)
		t_diag("umount %s: %s", d->mnt, strerror(errno));
	d->mnt[0] = '\0';
	if (d->dir[0] != '\0') {
		if (keep != NULL && strcmp(keep, "1") == 0)
			t_diag("kept %s", d->dir);
		else
			mgr_rmtree(d->dir);
	}
	d->dir[0] = '\0';
	cleanup_daemon = NULL;
}

ckpt_client *
mgr_connect(struct mgr_daemon *d)
{
	ckpt_client *c = NULL;
	int r;

	if ((r = ckpt_connect(d->sock, &c)) != 0) {
		mgr_daemon_dump_log(d, 20);
		t_bail("ckpt_connect(%s): %s", d->sock, ckpt_strerror(r));
	}
	return c;
}

const char *
mgr_path(const struct mgr_daemon *d, const char *fmt, ...)
{
	static __thread char bufs[4][MGR_PATH];
	static __thread int next;
	char *b = bufs[next++ & 3];
	int n;
	va_list ap;

	n = snprintf(b, MGR_PATH, "%s/", d->dir);
	va_start(ap, fmt);
	vsnprintf(b + n, MGR_PATH - n, fmt, ap);
	va_end(ap);
	return b;
}

ckpt_manager *
mgr_open(ckpt_client *c, const char *root, const ckpt_options *o, int must)
{
	ckpt_manager *m = NULL;
	int r;

	if ((r = ckpt_manager_open(c, root, o, &m)) != 0) {
		if (must)
			t_bail("ckpt_manager_open(%s): %s: %s", root,
			    ckpt_strerror(r), ckpt_client_errmsg(c));
		t_diag("ckpt_manager_open(%s): %s: %s", root, ckpt_strerror(r),
		    ckpt_client_errmsg(c));
		return NULL;
	}
	return m;
}

/* ---- saving ------------------------------------------------------------------ */

static float
payload_value(uint64_t step, size_t i)
{
	return (float)step * 1000.0f + (float)(i % 1000);
}

int
mgr_save(ckpt_manager *m, uint64_t step, const struct sv *o, int *saved)
{
	static const struct sv none;
	ckpt_tree *t = NULL;
	ckpt_save_args *a = NULL;
	float *w = NULL;
	size_t bytes, n, i;
	int64_t shape[1];
	int r;

	if (o == NULL)
		o = &none;
	bytes = o->bytes ? o->bytes : 64;
	n = bytes / sizeof(float);
	shape[0] = (int64_t)n;
	if (saved != NULL)
		*saved = -1;
	if ((w = malloc(n * sizeof(float))) == NULL)
		return CKPT_ENOMEM;
	if (n <= 4096) {
		for (i = 0; i < n; i++)
			w[i] = payload_value(step, i);
	} else {
		/* Large payloads: the head is checked, the rest is bulk. */
		memset(w, (int)(step & 0x7f), n * sizeof(float));
		for (i = 0; i < 16; i++)
			w[i] = payload_value(step, i);
	}
	r = CKPT_ENOMEM;
	if ((t = ckpt_tree_new()) == NULL || (a = ckpt_save_args_new()) == NULL)
		goto out;
	if ((r = ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, w,
	    n * sizeof(float))) != 0 ||
	    (r = ckpt_tree_add_int(t, "step", (int64_t)step)) != 0 ||
	    (r = ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t)) != 0)
		goto out;
	if (o->metrics != NULL &&
	    (r = ckpt_save_args_set_metrics(a, o->metrics)) != 0)
		goto out;
	if (o->custom != NULL &&
	    (r = ckpt_save_args_set_custom_metadata(a, o->custom)) != 0)
		goto out;
	if ((o->ts_ns != 0 &&
	    (r = ckpt_save_args_set_timestamp(a, o->ts_ns)) != 0) ||
	    (o->force && (r = ckpt_save_args_set_force(a, 1)) != 0) ||
	    (o->preempted && (r = ckpt_save_args_set_preempted(a, 1)) != 0))
		goto out;
	r = ckpt_save(m, step, a, saved);
out:
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	free(w);
	return r;
}

int
mgr_save_wait(ckpt_manager *m, uint64_t step, const struct sv *o, int *saved)
{
	int r = mgr_save(m, step, o, saved);

	if (r != 0)
		return r;
	return ckpt_wait_until_finished(m);
}

int
mgr_check_restore(ckpt_manager *m, int64_t step, int64_t want_step,
    const ckpt_restore_args *ra)
{
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	long it, li;
	int r, bad = 0;
	size_t i;

	if ((r = ckpt_restore(m, step, ra, &res)) != 0)
		return r;
	if ((int64_t)ckpt_restored_step(res) != want_step) {
		t_diag("restored step %llu, expected %lld",
		    (unsigned long long)ckpt_restored_step(res),
		    (long long)want_step);
		bad = 1;
	}
	it = ckpt_restored_find(res, NULL);
	t = it >= 0 ? ckpt_restored_item_tree(res, (size_t)it) : NULL;
	if (t == NULL) {
		t_diag("restored step has no default tree item");
		bad = 1;
		goto out;
	}
	li = ckpt_tree_find(t, "step");
	if (li < 0 || ckpt_tree_leaf(t, (size_t)li, &lf) != 0 ||
	    lf.kind != CKPT_LEAF_INT || lf.i != want_step) {
		t_diag("leaf 'step' missing or not %lld", (long long)want_step);
		bad = 1;
	}
	li = ckpt_tree_find(t, "w");
	if (li < 0 || ckpt_tree_leaf(t, (size_t)li, &lf) != 0 ||
	    lf.kind != CKPT_LEAF_ARRAY || lf.dtype != CKPT_F32 ||
	    lf.data == NULL || lf.nbytes < 16 * sizeof(float)) {
		t_diag("leaf 'w' missing or malformed");
		bad = 1;
		goto out;
	}
	for (i = 0; i < 16; i++) {
		float v = ((const float *)lf.data)[i];
		if (v != payload_value((uint64_t)want_step, i)) {
			t_diag("w[%zu] = %g, expected %g", i, v,
			    payload_value((uint64_t)want_step, i));
			bad = 1;
			break;
		}
	}
out:
	ckpt_restored_free(res);
	return bad;
}

/* ---- steps ------------------------------------------------------------------- */

struct strbuf {
	char *s;
	size_t len, cap;
};

static void
sb_add(struct strbuf *b, const char *s)
{
	size_t n = strlen(s);

	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2 + 64;
		char *ns = realloc(b->s, cap);
		if (ns == NULL)
			abort();
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n + 1);
	b->len += n;
}

char *
mgr_steps(ckpt_manager *m)
{
	struct strbuf b = { 0 };
	uint64_t *steps = NULL;
	size_t n = 0, i;
	char num[64];
	int r;

	if ((r = ckpt_all_steps(m, &steps, &n)) != 0) {
		snprintf(num, sizeof num, "ERR %s: ", ckpt_strerror(r));
		sb_add(&b, num);
		sb_add(&b, ckpt_manager_errmsg(m));
		return b.s;
	}
	sb_add(&b, "[");
	for (i = 0; i < n; i++) {
		snprintf(num, sizeof num, "%s%llu", i ? "," : "",
		    (unsigned long long)steps[i]);
		sb_add(&b, num);
	}
	sb_add(&b, "]");
	free(steps);
	return b.s;
}

static int
cmp_ver(const void *a, const void *b)
{
	return strverscmp(*(char *const *)a, *(char *const *)b);
}

static char *
disk_list(const char *root, const char *skip, int all)
{
	struct strbuf b = { 0 };
	char **names = NULL;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	DIR *dir;

	if ((dir = opendir(root)) == NULL) {
		sb_add(&b, "ERR opendir: ");
		sb_add(&b, strerror(errno));
		return b.s;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (!all && (de->d_name[0] == '.' ||
		    strcmp(de->d_name, "metadata") == 0 ||
		    (skip != NULL && strcmp(de->d_name, skip) == 0)))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((names = realloc(names, cap * sizeof *names)) == NULL)
				abort();
		}
		names[n++] = strdup(de->d_name);
	}
	closedir(dir);
	if (n > 0)
		qsort(names, n, sizeof *names, cmp_ver);
	sb_add(&b, "[");
	for (i = 0; i < n; i++) {
		if (i)
			sb_add(&b, ",");
		sb_add(&b, names[i]);
		free(names[i]);
	}
	sb_add(&b, "]");
	free(names);
	return b.s;
}

char *
mgr_disk(const char *root, const char *skip)
{
	return disk_list(root, skip, 0);
}

char *
mgr_disk_all(const char *root)
{
	return disk_list(root, NULL, 1);
}
