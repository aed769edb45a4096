/*
 * bench_ckpt.c - ckptd against the limits of the machine, one JSON line per
 * sample on stdout.
 *
 *   bench_ckpt --socket PATH --root DIR [--gib G] [--arrays N] [--runs R]
 *       [--daemon-pid PID] [--budget-socket PATH] [--drop-caches]
 *       [--pings N] [--tiny-ops N] [--tput-ms MS] [--clients N]
 *       [--share-mib MIB] [--mem-saves N] [--mem-mib MIB] [--only LIST]
 *
 * Every sample is {"case": ..., "run": r, "value": v, "unit": u}; values are
 * in base units (s, B, B/s, req/s). tests/bench/report.py takes the median
 * over the runs and prints the table; tests/bench/run.sh drives everything.
 *
 * The data is `arrays` float32 arrays of gib/arrays GiB each, filled with a
 * pseudo-random (incompressible) pattern. Baselines are measured in this
 * process on the same arrays: a memcpy into a prefaulted buffer, and a
 * copy into freshly allocated memory. Large allocations always come from
 * mmap (M_MMAP_THRESHOLD fixed at 1 MiB), for libckpt and for the
 * baseline alike, so "newly allocated" means fresh pages on both sides.
 *
 * Groups (--only takes a comma list): base, save, restore, cold, small,
 * tput, tiny, share, mem, budget.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ckpt/ckpt.h>

#define MAX_CLIENTS 64

static struct {
	const char *sock, *root, *budget_sock, *only;
	double gib;
	int arrays, runs, clients, tiny_ops, mem_saves, drop_caches;
	long pings, tput_ms;
	double share_mib, mem_mib;
	pid_t daemon_pid;
} B = {
	.gib = 1, .arrays = 64, .runs = 5, .clients = 8, .tiny_ops = 20,
	.mem_saves = 100, .pings = 20000, .tput_ms = 1000, .share_mib = 128,
	.mem_mib = 4,
};

/* ---- small helpers ------------------------------------------------------ */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "bench_ckpt: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

static void ck(int r, const char *what, ckpt_client *c, ckpt_manager *m)
{
	if (r == 0)
		return;
	die("%s: %s (%s)", what, ckpt_strerror(r),
	    m ? ckpt_manager_errmsg(m) : c ? ckpt_client_errmsg(c) : "");
}

static void emit(const char *name, int run, double value, const char *unit)
{
	printf("{\"case\": \"%s\", \"run\": %d, \"value\": %.9g, "
	    "\"unit\": \"%s\"}\n", name, run, value, unit);
	fflush(stdout);
}

static void note(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "bench_ckpt: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

static int want(const char *group)
{
	const char *p;
	size_t n = strlen(group);

	if (!B.only || !*B.only)
		return 1;
	for (p = B.only; (p = strstr(p, group)) != NULL; p += n)
		if ((p == B.only || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return 1;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

/* Incompressible bytes (xorshift64*), touching every page. */
static void fill(void *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1, *w = p;
	size_t i;

	for (i = 0; i < n / 8; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		w[i] = x * 0x2545F4914F6CDD1Dull;
	}
	memset((char *)p + n / 8 * 8, 0x5a, n % 8);
}

static int64_t rss_of(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t n = strlen(field);
	long long kb = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, field, n) == 0 && line[n] == ':') {
			kb = strtoll(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

static void drop_caches(void)
{
	int fd;

	sync();
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "3\n", 2) != 2)
		die("cannot drop caches: %s", strerror(errno));
	close(fd);
}

static void mkdir_p(const char *path)
{
	char buf[4096], *p;

	snprintf(buf, sizeof buf, "%s", path);
	for (p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0755);
			*p = '/';
		}
	if (mkdir(buf, 0755) != 0 && errno != EEXIST)
		die("mkdir %s: %s", buf, strerror(errno));
}

/* ---- the data set -------------------------------------------------------- */

struct dataset {
	int n;
	size_t each, total;
	void **arr;
	int64_t shape[1];
};

static void dataset_init(struct dataset *d, int n, size_t total, uint64_t seed)
{
	int i;

	d->n = n;
	d->each = total / (size_t)n / 4096 * 4096;
	if (d->each == 0)
		d->each = 4096;
	d->total = d->each * (size_t)n;
	d->shape[0] = (int64_t)(d->each / 4);
	d->arr = xmalloc(sizeof *d->arr * (size_t)n);
	for (i = 0; i < n; i++) {
		d->arr[i] = xmalloc(d->each);
		fill(d->arr[i], d->each, seed + (uint64_t)i);
	}
}

static ckpt_tree *dataset_tree(const struct dataset *d)
{
	ckpt_tree *t = ckpt_tree_new();
	char path[32];
	int i;

	if (!t)
		die("out of memory");
	for (i = 0; i < d->n; i++) {
		snprintf(path, sizeof path, "layer%02d/w", i);
		ck(ckpt_tree_add_array(t, path, CKPT_F32, 1, d->shape,
		    d->arr[i], d->each), "ckpt_tree_add_array", NULL, NULL);
	}
	return t;
}

static ckpt_save_args *dataset_args(const ckpt_tree *t)
{
	ckpt_save_args *a = ckpt_save_args_new();

	if (!a)
		die("out of memory");
	ck(ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t),
	    "ckpt_save_args_add_tree", NULL, NULL);
	return a;
}

static ckpt_manager *open_mgr(ckpt_client *c, const char *root)
{
	ckpt_manager *m;

	mkdir_p(root);
	ck(ckpt_manager_open(c, root, NULL, &m), "ckpt_manager_open", c, NULL);
	return m;
}

static ckpt_client *connect_or_die(const char *sock)
{
	ckpt_client *c;
	int r = ckpt_connect(sock, &c);

	if (r != 0)
		die("cannot connect to %s: %s", sock, ckpt_strerror(r));
	return c;
}

/* ---- baselines ------------------------------------------------------------ */

/* One copy of the data set into a prefaulted buffer of d->total bytes. */
static double copy_prefaulted(const struct dataset *d, char *dst)
{
	double t0 = now();
	int i;

	for (i = 0; i < d->n; i++)
		memcpy(dst + (size_t)i * d->each, d->arr[i], d->each);
	return now() - t0;
}

/* One copy of the data set into newly allocated arrays (freed untimed). */
static double copy_fresh(const struct dataset *d)
{
	void **fresh = xmalloc(sizeof *fresh * (size_t)d->n);
	double t0, t;
	int i;

	t0 = now();
	for (i = 0; i < d->n; i++) {
		fresh[i] = xmalloc(d->each);
		memcpy(fresh[i], d->arr[i], d->each);
	}
	t = now() - t0;
	for (i = 0; i < d->n; i++)
		free(fresh[i]);
	free(fresh);
	return t;
}

static void bench_baselines(const struct dataset *d)
{
	char *dst = xmalloc(d->total);
	int r;

	memset(dst, 0, d->total);
	copy_prefaulted(d, dst);        /* warm */
	for (r = 0; r < B.runs; r++) {
		emit("memcpy_prefaulted", r, copy_prefaulted(d, dst), "s");
		emit("memcpy_fresh", r, copy_fresh(d), "s");
	}
	free(dst);
}

/* ---- save: blocking and persistence ------------------------------------ */

static uint64_t next_step = 1;

static void bench_save(ckpt_manager *m, const struct dataset *d)
{
	ckpt_tree *t = dataset_tree(d);
	ckpt_save_args *a = dataset_args(t);
	char *dst = xmalloc(d->total);
	double t0, t1, t2;
	int r, saved;

	memset(dst, 0, d->total);
	copy_prefaulted(d, dst);

	/* warm-up: the staging buffer is created and touched once */
	t0 = now();
	ck(ckpt_save(m, next_step++, a, &saved), "warm-up save", NULL, m);
	t1 = now();
	ck(ckpt_wait_until_finished(m), "wait", NULL, m);
	t2 = now();
	emit("save_blocking_cold_staging", 0, t1 - t0, "s");
	emit("persist_first", 0, (double)d->total / (t2 - t0), "B/s");
	for (r = 0; r < B.runs; r++) {
		/* the baseline right before, under the same conditions */
		emit("memcpy_prefaulted", r, copy_prefaulted(d, dst), "s");
		sync();
		t0 = now();
		ck(ckpt_save(m, next_step++, a, &saved), "ckpt_save", NULL, m);
		t1 = now();
		ck(ckpt_wait_until_finished(m), "wait", NULL, m);
		t2 = now();
		emit("save_blocking", r, t1 - t0, "s");
		emit("persist", r, (double)d->total / (t2 - t0), "B/s");
		emit("persist_time", r, t2 - t0, "s");
	}
	free(dst);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
}

/* ---- restore ---------------------------------------------------------- */

/* Restore the latest step; dst NULL: new arrays. Returns the elapsed time
 * and checks the first bytes of every leaf. */
static double restore_once(ckpt_manager *m, const struct dataset *d,
    void **dst, int zero_copy, int verify)
{
	ckpt_restore_args *ra = ckpt_restore_args_new();
	ckpt_tree *target = NULL;
	ckpt_restored *out = NULL;
	const ckpt_tree *tr;
	ckpt_leaf leaf;
	double t0, t;
	char path[32];
	size_t i;
	int rc;

	if (!ra)
		die("out of memory");
	if (dst) {
		target = ckpt_tree_new();
		for (i = 0; i < (size_t)d->n; i++) {
			snprintf(path, sizeof path, "layer%02zu/w", i);
			ck(ckpt_tree_add_target(target, path, CKPT_F32, 1,
			    d->shape, dst[i], d->each), "add_target", NULL,
			    NULL);
		}
		rc = ckpt_restore_args_add_item(ra, NULL, target, 0);
		if (rc == CKPT_EINVAL)
			rc = ckpt_restore_args_add_item(ra, "default", target, 0);
		ck(rc, "ckpt_restore_args_add_item", NULL, NULL);
	}
	if (zero_copy)
		ck(ckpt_restore_args_set_zero_copy(ra, 1), "set_zero_copy",
		    NULL, NULL);
	if (verify >= 0)
		ck(ckpt_restore_args_set_verify(ra, verify), "set_verify",
		    NULL, NULL);
	t0 = now();
	ck(ckpt_restore(m, -1, ra, &out), "ckpt_restore", NULL, m);
	t = now() - t0;

	tr = ckpt_restored_item_tree(out, 0);
	if (!tr || ckpt_tree_nleaves(tr) != (size_t)d->n)
		die("restore returned %zu leaves, want %d",
		    tr ? ckpt_tree_nleaves(tr) : 0, d->n);
	for (i = 0; i < (size_t)d->n; i++) {
		long k;

		snprintf(path, sizeof path, "layer%02zu/w", i);
		k = ckpt_tree_find(tr, path);
		if (k < 0 || ckpt_tree_leaf(tr, (size_t)k, &leaf) != 0 ||
		    leaf.nbytes != d->each || !leaf.data ||
		    memcmp(leaf.data, d->arr[i], 64) != 0 ||
		    memcmp((const char *)leaf.data + d->each - 64,
		    (const char *)d->arr[i] + d->each - 64, 64) != 0)
			die("restored leaf %s differs from what was saved",
			    path);
		if (dst && leaf.data != dst[i])
			die("leaf %s was not restored into the caller buffer",
			    path);
	}
	ckpt_restored_free(out);
	ckpt_tree_free(target);
	ckpt_restore_args_free(ra);
	return t;
}

static void bench_restore(ckpt_manager *m, const struct dataset *d, int cold)
{
	void **dst = xmalloc(sizeof *dst * (size_t)d->n);
	double B_ = (double)d->total;
	int r, i;

	for (i = 0; i < d->n; i++) {
		dst[i] = xmalloc(d->each);
		memset(dst[i], 0, d->each);
	}
	if (!cold) {
		restore_once(m, d, dst, 0, -1);     /* warm the page cache */
		for (r = 0; r < B.runs; r++) {
			/* baselines interleaved: same memory conditions */
			emit("memcpy_fresh", r, copy_fresh(d), "s");
			emit("restore_caller", r,
			    B_ / restore_once(m, d, dst, 0, -1), "B/s");
			emit("restore_new", r,
			    B_ / restore_once(m, d, NULL, 0, -1), "B/s");
			emit("restore_zero_copy", r,
			    restore_once(m, d, NULL, 1, -1), "s");
			emit("restore_zero_copy_noverify", r,
			    restore_once(m, d, NULL, 1, 0), "s");
			emit("restore_caller_noverify", r,
			    B_ / restore_once(m, d, dst, 0, 0), "B/s");
			emit("restore_new_noverify", r,
			    B_ / restore_once(m, d, NULL, 0, 0), "B/s");
		}
	} else {
		for (r = 0; r < B.runs; r++) {
			drop_caches();
			emit("restore_cold", r, B_ / restore_once(m, d, dst, 0, -1),
			    "B/s");
		}
	}
	for (i = 0; i < d->n; i++)
		free(dst[i]);
	free(dst);
}

/* ---- small operations --------------------------------------------------- */

static void bench_small(ckpt_client *c, ckpt_manager *m)
{
	double t0, ping, lat, all;
	uint64_t *steps;
	int64_t s;
	size_t n;
	long i;
	int r;

	for (i = 0; i < 1000; i++)           /* warm */
		ck(ckpt_ping(c), "ckpt_ping", c, NULL);
	for (r = 0; r < B.runs; r++) {
		t0 = now();
		for (i = 0; i < B.pings; i++)
			ck(ckpt_ping(c), "ckpt_ping", c, NULL);
		ping = (now() - t0) / (double)B.pings;
		t0 = now();
		for (i = 0; i < B.pings; i++)
			ck(ckpt_latest_step(m, &s), "ckpt_latest_step", NULL, m);
		lat = (now() - t0) / (double)B.pings;
		t0 = now();
		for (i = 0; i < B.pings; i++) {
			ck(ckpt_all_steps(m, &steps, &n), "ckpt_all_steps",
			    NULL, m);
			free(steps);
		}
		all = (now() - t0) / (double)B.pings;
		emit("rtt_ping", r, ping, "s");
		emit("rtt_latest_step", r, lat, "s");
		emit("rtt_all_steps", r, all, "s");
	}
}

struct tput_arg {
	pthread_barrier_t *bar;
	ckpt_manager *m;
	ckpt_client *c;
	volatile int *stop;
	long count;
	int ping;
};

static void *tput_thread(void *p)
{
	struct tput_arg *a = p;
	int64_t s;

	pthread_barrier_wait(a->bar);
	while (!*a->stop) {
		if (a->ping)
			ck(ckpt_ping(a->c), "ckpt_ping", a->c, NULL);
		else
			ck(ckpt_latest_step(a->m, &s), "ckpt_latest_step", NULL,
			    a->m);
		a->count++;
	}
	return NULL;
}

static void bench_tput(const char *root)
{
	struct tput_arg args[MAX_CLIENTS];
	pthread_t th[MAX_CLIENTS];
	pthread_barrier_t bar;
	volatile int stop;
	double t0, t;
	long total;
	int r, i, ping;

	for (i = 0; i < B.clients; i++) {
		args[i].c = connect_or_die(B.sock);
		args[i].m = open_mgr(args[i].c, root);
	}
	for (ping = 0; ping < 2; ping++)
		for (r = 0; r < B.runs; r++) {
			stop = 0;
			pthread_barrier_init(&bar, NULL, (unsigned)B.clients + 1);
			for (i = 0; i < B.clients; i++) {
				args[i].bar = &bar;
				args[i].stop = &stop;
				args[i].count = 0;
				args[i].ping = ping;
				pthread_create(&th[i], NULL, tput_thread, &args[i]);
			}
			pthread_barrier_wait(&bar);
			t0 = now();
			usleep((useconds_t)B.tput_ms * 1000);
			stop = 1;
			total = 0;
			for (i = 0; i < B.clients; i++) {
				pthread_join(th[i], NULL);
				total += args[i].count;
			}
			t = now() - t0;
			pthread_barrier_destroy(&bar);
			emit(ping ? "tput_ping" : "tput_latest_step", r,
			    (double)total / t, "req/s");
		}
	for (i = 0; i < B.clients; i++) {
		ckpt_manager_close(args[i].m);
		ckpt_disconnect(args[i].c);
	}
}

/* ---- tiny checkpoints --------------------------------------------------- */

static double tiny_baseline_op(const char *dir, const void *buf, size_t n,
    int k)
{
	char tmp[4200], fin[4200];
	double t0 = now();
	int fd, dfd;

	snprintf(tmp, sizeof tmp, "%s/ckpt.%d.tmp", dir, k);
	snprintf(fin, sizeof fin, "%s/ckpt.%d", dir, k);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, n) != (ssize_t)n || fsync(fd) != 0)
		die("baseline write %s: %s", tmp, strerror(errno));
	close(fd);
	if (rename(tmp, fin) != 0)
		die("rename: %s", strerror(errno));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0)
		die("fsync %s: %s", dir, strerror(errno));
	close(dfd);
	return now() - t0;
}

static void bench_tiny(ckpt_client *c, const char *root)
{
	char dir[4096], json[1100];
	unsigned char payload[1024];
	int64_t shape[1] = { 256 };
	double *v = xmalloc(sizeof *v * (size_t)B.tiny_ops);
	ckpt_manager *m;
	ckpt_tree *t;
	ckpt_save_args *a;
	uint64_t step = 1;
	double t0;
	int r, k, saved;

	fill(payload, sizeof payload, 77);
	snprintf(json, sizeof json, "{\"lr\": 0.001, \"epoch\": 3, "
	    "\"note\": \"tiny checkpoint benchmark\", \"dataset\": "
	    "{\"name\": \"bench\", \"offset\": 123456789}}");
	snprintf(dir, sizeof dir, "%s/tiny-baseline", root);
	mkdir_p(dir);
	snprintf(dir, sizeof dir, "%s/tiny", root);
	m = open_mgr(c, dir);
	t = ckpt_tree_new();
	ck(ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, payload,
	    sizeof payload), "add_array", NULL, NULL);
	a = ckpt_save_args_new();
	ck(ckpt_save_args_add_tree(a, "state", CKPT_HANDLER_STANDARD, t),
	    "add_tree", NULL, NULL);
	ck(ckpt_save_args_add_json(a, "meta", json), "add_json", NULL, NULL);
	ck(ckpt_save_args_set_composite(a, 1), "set_composite", NULL, NULL);
	ck(ckpt_save(m, step++, a, &saved), "tiny warm-up", NULL, m);
	ck(ckpt_wait_until_finished(m), "wait", NULL, m);

	snprintf(dir, sizeof dir, "%s/tiny-baseline", root);
	for (r = 0; r < B.runs; r++) {
		for (k = 0; k < B.tiny_ops; k++)
			v[k] = tiny_baseline_op(dir, payload, sizeof payload, k);
		emit("tiny_baseline", r, median(v, B.tiny_ops), "s");
		for (k = 0; k < B.tiny_ops; k++) {
			t0 = now();
			ck(ckpt_save(m, step++, a, &saved), "tiny save", NULL, m);
			ck(ckpt_wait_until_finished(m), "wait", NULL, m);
			v[k] = now() - t0;
		}
		emit("tiny_save_commit", r, median(v, B.tiny_ops), "s");
	}
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	free(v);
}

/* ---- sharing: N processes, each its own connection ---------------------- */

struct share_shm {
	pthread_barrier_t bar;
	double start[MAX_CLIENTS], end[MAX_CLIENTS], blocking[MAX_CLIENTS];
	int failed;
};

static void share_child(struct share_shm *sh, int id)
{
	struct dataset d;
	char root[4096];
	ckpt_client *c;
	ckpt_manager *m;
	ckpt_tree *t;
	ckpt_save_args *a;
	double t0;
	int r, saved, rc;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	pthread_barrier_wait(&sh->bar);          /* 1: go */
	dataset_init(&d, 8, (size_t)(B.share_mib * 1048576.0),
	    1000 + (uint64_t)id);
	snprintf(root, sizeof root, "%s/share/c%d", B.root, id);
	c = connect_or_die(B.sock);
	m = open_mgr(c, root);
	t = dataset_tree(&d);
	a = dataset_args(t);
	rc = ckpt_save(m, 0, a, &saved);         /* warm staging */
	if (rc == 0)
		rc = ckpt_wait_until_finished(m);
	if (rc != 0) {
		note("share client %d: %s", id, ckpt_manager_errmsg(m));
		sh->failed = 1;
	}
	pthread_barrier_wait(&sh->bar);          /* 2: warm */
	for (r = 0; r < B.runs; r++) {
		pthread_barrier_wait(&sh->bar);  /* start */
		t0 = now();
		sh->start[id] = t0;
		rc = ckpt_save(m, (uint64_t)r + 1, a, &saved);
		sh->blocking[id] = now() - t0;
		if (rc == 0)
			rc = ckpt_wait_until_finished(m);
		sh->end[id] = now();
		if (rc != 0) {
			note("share client %d: %s", id,
			    ckpt_manager_errmsg(m));
			sh->failed = 1;
		}
		pthread_barrier_wait(&sh->bar);  /* end */
	}
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	_exit(0);
}

static struct share_shm *share_sh;
static pid_t share_pids[MAX_CLIENTS];

/* Fork before any client exists in this process (threads + fork). */
static void share_fork(void)
{
	pthread_barrierattr_t at;
	int i;

	share_sh = mmap(NULL, sizeof *share_sh, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (share_sh == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	pthread_barrierattr_init(&at);
	pthread_barrierattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(&share_sh->bar, &at, (unsigned)B.clients + 1);
	fflush(stdout);
	for (i = 0; i < B.clients; i++) {
		share_pids[i] = fork();
		if (share_pids[i] < 0)
			die("fork: %s", strerror(errno));
		if (share_pids[i] == 0)
			share_child(share_sh, i);
	}
}

static void bench_share(void)
{
	size_t each = (size_t)(B.share_mib * 1048576.0) / 8 / 4096 * 4096;
	double total = (double)(each ? each : 4096) * 8 * B.clients;
	double lo, hi, dmin, dmax, dur;
	int r, i, status;

	/* a client that dies would leave us in the barrier forever */
	alarm((unsigned)(300 + 120 * B.runs));
	pthread_barrier_wait(&share_sh->bar);    /* 1: go */
	pthread_barrier_wait(&share_sh->bar);    /* 2: warm */
	for (r = 0; r < B.runs; r++) {
		sync();
		pthread_barrier_wait(&share_sh->bar);
		pthread_barrier_wait(&share_sh->bar);
		lo = 1e300, hi = 0, dmin = 1e300, dmax = 0;
		for (i = 0; i < B.clients; i++) {
			dur = share_sh->end[i] - share_sh->start[i];
			if (share_sh->start[i] < lo)
				lo = share_sh->start[i];
			if (share_sh->end[i] > hi)
				hi = share_sh->end[i];
			if (dur < dmin)
				dmin = dur;
			if (dur > dmax)
				dmax = dur;
		}
		emit("share_aggregate", r, total / (hi - lo), "B/s");
		emit("share_slowest_over_fastest", r, dmax / dmin, "x");
		emit("share_slowest", r, dmax, "s");
		emit("share_fastest", r, dmin, "s");
		for (i = 0; i < B.clients; i++)
			emit("share_client_time", r,
			    share_sh->end[i] - share_sh->start[i], "s");
	}
	for (i = 0; i < B.clients; i++)
		waitpid(share_pids[i], &status, 0);
	alarm(0);
	if (share_sh->failed)
		die("a sharing client failed");
}

/* ---- memory ------------------------------------------------------------- */

static void bench_mem(ckpt_client *c, const char *root)
{
	struct dataset d;
	ckpt_options *o = ckpt_options_new();
	ckpt_manager *m;
	ckpt_tree *t;
	ckpt_save_args *a;
	int64_t rss10 = -1, rss100, rss1 = -1;
	int k, saved;

	if (B.daemon_pid <= 0) {
		note("no --daemon-pid: memory growth not measured");
		return;
	}
	dataset_init(&d, 8, (size_t)(B.mem_mib * 1048576.0), 4242);
	mkdir_p(root);
	ck(ckpt_options_set_max_to_keep(o, 3), "max_to_keep", NULL, NULL);
	ck(ckpt_manager_open(c, root, o, &m), "manager_open", c, NULL);
	ckpt_options_free(o);
	t = dataset_tree(&d);
	a = dataset_args(t);
	for (k = 1; k <= B.mem_saves; k++) {
		ck(ckpt_save(m, (uint64_t)k, a, &saved), "mem save", NULL, m);
		ck(ckpt_wait_until_finished(m), "wait", NULL, m);
		if (k == 1) {
			usleep(100000);
			rss1 = rss_of(B.daemon_pid, "VmRSS");
		}
		if (k == 10 || (B.mem_saves < 10 && k == B.mem_saves)) {
			usleep(100000);
			rss10 = rss_of(B.daemon_pid, "VmRSS");
		}
	}
	usleep(200000);
	rss100 = rss_of(B.daemon_pid, "VmRSS");
	emit("mem_rss_after_1_save", 0, (double)rss1, "B");
	emit("mem_rss_after_10_saves", 0, (double)rss10, "B");
	emit("mem_rss_after_all_saves", 0, (double)rss100, "B");
	emit("mem_rss_growth", 0, (double)(rss100 - rss10), "B");
	emit("mem_saves", 0, B.mem_saves, "count");
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	ckpt_manager_close(m);
}

static int budget_done;

struct budget_arg {
	const char *root;
	const struct dataset *d;
	pthread_barrier_t *bar;
	int id, err;
};

static void *budget_thread(void *p)
{
	struct budget_arg *a = p;
	char root[4096];
	ckpt_client *c = connect_or_die(B.budget_sock);
	ckpt_manager *m;
	ckpt_tree *t = dataset_tree(a->d);
	ckpt_save_args *s = dataset_args(t);
	int k, saved;

	snprintf(root, sizeof root, "%s/c%d", a->root, a->id);
	m = open_mgr(c, root);
	pthread_barrier_wait(a->bar);
	for (k = 1; k <= 2 && !a->err; k++) {
		a->err = ckpt_save(m, (uint64_t)k, s, &saved);
		if (a->err)
			note("budget client %d: %s", a->id,
			    ckpt_manager_errmsg(m));
	}
	if (!a->err)
		a->err = ckpt_wait_until_finished(m);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ckpt_save_args_free(s);
	ckpt_tree_free(t);
	__atomic_add_fetch(&budget_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void bench_budget(const char *root)
{
	struct budget_arg args[MAX_CLIENTS];
	pthread_t th[MAX_CLIENTS];
	pthread_barrier_t bar;
	struct dataset d;
	ckpt_client *mon;
	ckpt_status st;
	uint64_t peak = 0, budget = 0;
	uint32_t waiting = 0;
	int i, n = 4, polls = 0;

	if (!B.budget_sock)
		return;
	mon = connect_or_die(B.budget_sock);
	ck(ckpt_status_get(mon, &st), "ckpt_status_get", mon, NULL);
	budget = st.memory_budget;
	/* n clients, each saving half the budget twice: 2x over budget */
	dataset_init(&d, 4, budget / 2, 999);
	pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
	for (i = 0; i < n; i++) {
		args[i] = (struct budget_arg){ .root = root, .d = &d,
		    .bar = &bar, .id = i };
		pthread_create(&th[i], NULL, budget_thread, &args[i]);
	}
	pthread_barrier_wait(&bar);
	do {
		ck(ckpt_status_get(mon, &st), "ckpt_status_get", mon, NULL);
		polls++;
		if (st.staging_bytes > peak)
			peak = st.staging_bytes;
		if (st.waiting_for_memory > waiting)
			waiting = st.waiting_for_memory;
		usleep(1000);
	} while (__atomic_load_n(&budget_done, __ATOMIC_SEQ_CST) < n);
	for (i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		if (args[i].err)
			die("budget client %d failed: %s", i,
			    ckpt_strerror(args[i].err));
	}
	emit("budget_bytes", 0, (double)budget, "B");
	emit("budget_peak_staging", 0, (double)peak, "B");
	emit("budget_max_waiting", 0, waiting, "count");
	emit("budget_offered", 0, (double)d.total * n, "B");
	ckpt_disconnect(mon);
}

/* ---- main ---------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: bench_ckpt --socket PATH --root DIR [--gib G] "
	    "[--arrays N] [--runs R] [--daemon-pid PID] [--budget-socket "
	    "PATH] [--drop-caches] [--pings N] [--tiny-ops N] [--tput-ms MS] "
	    "[--clients N] [--share-mib MIB] [--mem-saves N] [--mem-mib MIB] "
	    "[--only base,save,restore,cold,small,tput,tiny,share,mem,"
	    "budget]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct dataset d;
	char path[4096];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	int i;

	for (i = 1; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(k, "--drop-caches") == 0) {
			B.drop_caches = 1;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (strcmp(k, "--socket") == 0) B.sock = v;
		else if (strcmp(k, "--root") == 0) B.root = v;
		else if (strcmp(k, "--budget-socket") == 0) B.budget_sock = v;
		else if (strcmp(k, "--only") == 0) B.only = v;
		else if (strcmp(k, "--gib") == 0) B.gib = atof(v);
		else if (strcmp(k, "--arrays") == 0) B.arrays = atoi(v);
		else if (strcmp(k, "--runs") == 0) B.runs = atoi(v);
		else if (strcmp(k, "--clients") == 0) B.clients = atoi(v);
		else if (strcmp(k, "--tiny-ops") == 0) B.tiny_ops = atoi(v);
		else if (strcmp(k, "--mem-saves") == 0) B.mem_saves = atoi(v);
		else if (strcmp(k, "--pings") == 0) B.pings = atol(v);
		else if (strcmp(k, "--tput-ms") == 0) B.tput_ms = atol(v);
		else if (strcmp(k, "--share-mib") == 0) B.share_mib = atof(v);
		else if (strcmp(k, "--mem-mib") == 0) B.mem_mib = atof(v);
		else if (strcmp(k, "--daemon-pid") == 0) B.daemon_pid = atoi(v);
		else usage();
	}
	if (!B.sock || !B.root || B.gib <= 0 || B.arrays < 1 || B.runs < 1 ||
	    B.clients < 1 || B.clients > MAX_CLIENTS || B.tiny_ops < 1 ||
	    B.pings < 1 || B.mem_saves < 1)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	setenv("CKPTD_AUTOSTART", "0", 1);
	/* every large allocation is fresh pages from mmap, ours and libckpt's */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);

	if (want("share"))
		share_fork();

	c = connect_or_die(B.sock);
	if (B.daemon_pid > 0)
		emit("mem_rss_idle", 0, (double)rss_of(B.daemon_pid, "VmRSS"),
		    "B");
	snprintf(path, sizeof path, "%s/main", B.root);
	m = open_mgr(c, path);

	if (want("base") || want("save") || want("restore") || want("cold")) {
		note("filling %.2f GiB in %d arrays", B.gib, B.arrays);
		dataset_init(&d, B.arrays, (size_t)(B.gib * 1073741824.0), 1);
		emit("bytes", 0, (double)d.total, "B");
		if (want("base")) {
			note("memcpy baselines");
			bench_baselines(&d);
		}
		if (want("save") || want("restore") || want("cold")) {
			note("save");
			bench_save(m, &d);
		}
		if (want("restore")) {
			note("restore (warm)");
			bench_restore(m, &d, 0);
		}
		if (want("cold") && B.drop_caches) {
			note("restore (cold)");
			bench_restore(m, &d, 1);
		}
		for (i = 0; i < d.n; i++)
			free(d.arr[i]);
		free(d.arr);
	}
	if (want("small")) {
		note("small operations");
		bench_small(c, m);
	}
	if (want("tput")) {
		note("throughput, %d clients", B.clients);
		bench_tput(path);
	}
	if (want("tiny")) {
		note("tiny checkpoints");
		bench_tiny(c, B.root);
	}
	if (want("share")) {
		note("sharing, %d processes", B.clients);
		bench_share();
	}
	if (want("mem")) {
		note("memory growth over %d saves", B.mem_saves);
		snprintf(path, sizeof path, "%s/mem", B.root);
		bench_mem(c, path);
	}
	if (want("budget") && B.budget_sock) {
		note("memory budget");
		snprintf(path, sizeof path, "%s/budget", B.root);
		bench_budget(path);
	}
	if (B.daemon_pid > 0)
		emit("mem_rss_after_bench", 0, (double)rss_of(B.daemon_pid, "VmRSS"),
		    "B");
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return 0;
}
