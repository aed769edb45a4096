/*
 * s3lease.c - the lease of an s3:// prefix: one daemon writes it at a time
 * (s3lease.h).
 *
 * The object holds two lines, "owner HOST pid PID id NONCE" and "expires
 * SECONDS" (since the epoch). The leases this process knows are a list
 * under one mutex, never held across a request; a thread of its own,
 * started with the first lease taken, renews and releases them.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "s3lease.h"
#include "log.h"
#include "s3.h"

/* The daemon logs through log.c; a program without it (a test of the
 * backend) on stderr. */
#pragma weak log_msg

#define S3LEASE_BODY 512
#define S3LEASE_TRIES 4
#define S3LEASE_EXIT_MS 1000        /* a request of the release at exit */

struct s3lease {
	struct s3lease *next;
	char *bucket, *prefix;
	int mine;                       /* else another daemon's, seen */
	char etag[80];                  /* mine: the one written last */
	char owner[256];                /* foreign: who */
	int64_t expires;                /* wall clock, seconds */
	unsigned holds;                 /* mine: root handles holding it */
	int64_t idle_since;             /* mine, holds 0: monotonic ns */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct s3lease *all;
	struct s3_client *cli;
	char self[256];
	pthread_t th;
	int started, stop;
} L = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
};

static void *s3lease_thread(void *arg);
static void s3lease_at_exit(void);

/* ---- helpers ------------------------------------------------------------ */

static void
s3lease_log(int warn, const char *fmt, ...)
{
	char msg[CKPT_ERRLEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (&log_msg != NULL)
		log_msg(warn ? LOG_LVL_ERROR : LOG_LVL_INFO, "s3lease", "%s",
		    msg);
	else
		fprintf(stderr, "s3lease: %s\n", msg);
}

static int64_t
s3lease_now(void)
{
	return now_wall_ns() / 1000000000LL;
}

/* This process's owner id: host, pid and a nonce (a pid used again on
 * the host is another owner). Under L.lock. */
static const char *
s3lease_self(void)
{
	char host[128];
	uint64_t nonce;
	FILE *f;

	if (L.self[0] != '\0')
		return L.self;
	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "unknown");
	host[sizeof host - 1] = '\0';
	for (char *p = host; *p != '\0'; p++)
		if (*p <= ' ' || *p > '~')
			*p = '_';
	nonce = (uint64_t)now_wall_ns() ^ ((uint64_t)getpid() << 32);
	if ((f = fopen("/dev/urandom", "re")) != NULL) {
		if (fread(&nonce, sizeof nonce, 1, f) != 1)
			nonce ^= (uint64_t)now_mono_ns();
		fclose(f);
	}
	snprintf(L.self, sizeof L.self, "%s pid %ld id %016" PRIx64, host,
	    (long)getpid(), nonce);
	return L.self;
}

static struct s3lease *
s3lease_find(const char *bucket, const char *prefix)
{
	struct s3lease *l;

	for (l = L.all; l != NULL; l = l->next)
		if (strcmp(l->bucket, bucket) == 0 &&
		    strcmp(l->prefix, prefix) == 0)
			return l;
	return NULL;
}

static void
s3lease_unlink(struct s3lease *l)
{
	struct s3lease **pp;

	for (pp = &L.all; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	free(l->bucket);
	free(l->prefix);
	free(l);
}

/* Under L.lock: the record of bucket/prefix, made when absent. */
static struct s3lease *
s3lease_record(const char *bucket, const char *prefix)
{
	struct s3lease *l;

	if ((l = s3lease_find(bucket, prefix)) != NULL)
		return l;
	if ((l = calloc(1, sizeof *l)) == NULL ||
	    (l->bucket = strdup(bucket)) == NULL ||
	    (l->prefix = strdup(prefix)) == NULL) {
		if (l != NULL)
			free(l->bucket);
		free(l);
		return NULL;
	}
	l->next = L.all;
	L.all = l;
	return l;
}

static char *
s3lease_key(const char *prefix)
{
	size_t n = strlen(prefix) + sizeof S3LEASE_NAME;
	char *k = malloc(n);

	if (k != NULL)
		snprintf(k, n, "%s%s", prefix, S3LEASE_NAME);
	return k;
}

/* What a lease object says: 0, or -1 when it is not one. */
static int
s3lease_parse(const char *body, char *owner, size_t olen, int64_t *expires)
{
	const char *o = strstr(body, "owner "), *x = strstr(body, "expires ");
	size_t n;

	if (o == NULL || x == NULL)
		return -1;
	o += 6;
	n = strcspn(o, "\n");
	if (n == 0 || n >= olen)
		return -1;
	memcpy(owner, o, n);
	owner[n] = '\0';
	*expires = strtoll(x + 8, NULL, 10);
	return 0;
}

/* 1 when owner is a process of this host that is gone. */
static int
s3lease_dead_here(const char *owner)
{
	char host[128], mine[128];
	long pid;

	if (sscanf(owner, "%127s pid %ld", host, &pid) != 2 || pid <= 0 ||
	    sscanf(L.self, "%127s", mine) != 1 || strcmp(host, mine) != 0)
		return 0;
	return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* The lease object's text for an expiry now + S3LEASE_TTL. */
static size_t
s3lease_body(char *buf, size_t len, const char *self)
{
	int n = snprintf(buf, len, "owner %s\nexpires %" PRId64 "\n", self,
	    s3lease_now() + S3LEASE_TTL);

	return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

/* GET the lease: 0 with what it says, CKPT_ENOTFOUND, or an error. */
static int
s3lease_read(struct s3_client *c, const char *bucket, const char *key,
    char *owner, size_t olen, int64_t *expires, char *etag, ckd_err *e)
{
	char body[S3LEASE_BODY];
	struct s3_stat st;
	uint64_t got = 0;
	int r;

	if ((r = s3_get_first(c, bucket, key, body, sizeof body - 1, &got,
	    &st, e)) != 0)
		return r;
	body[got] = '\0';
	if (s3lease_parse(body, owner, olen, expires) != 0)
		return err_set(e, CKPT_ECORRUPT, "s3://%s/%s is not a lease of "
		    "ckptd", bucket, key);
	snprintf(etag, 80, "%s", st.etag);
	return 0;
}

/* ---- taking ------------------------------------------------------------- */

/* Under L.lock: the lease of bucket/prefix is this process's now. */
static int
s3lease_mine(const char *bucket, const char *prefix, const char *etag,
    ckd_err *e)
{
	struct s3lease *l;

	if ((l = s3lease_record(bucket, prefix)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	l->mine = 1;
	snprintf(l->etag, sizeof l->etag, "%s", etag);
	l->expires = s3lease_now() + S3LEASE_TTL;
	l->holds++;
	if (!L.started) {
		if (pthread_create(&L.th, NULL, s3lease_thread, NULL) != 0) {
			l->holds--;
			return err_set(e, CKPT_ENOMEM, "cannot start the "
			    "thread renewing s3 leases");
		}
		L.started = 1;
		atexit(s3lease_at_exit);
	}
	return 0;
}

/* Under L.lock: another daemon holds bucket/prefix. */
static void
s3lease_seen(const char *bucket, const char *prefix, const char *owner,
    int64_t expires)
{
	struct s3lease *l;

	if ((l = s3lease_record(bucket, prefix)) == NULL || l->mine)
		return;
	snprintf(l->owner, sizeof l->owner, "%s", owner);
	l->expires = expires;
}

static int
s3lease_busy(const char *bucket, const char *prefix, const char *owner,
    int64_t expires, ckd_err *e)
{
	char when[32];
	time_t t = (time_t)expires;
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(when, sizeof when, "%" PRId64, expires);
	return err_set(e, CKPT_EBUSY, "s3://%s/%s is being written by "
	    "another ckptd (%s; its lease runs to %s unless renewed): one "
	    "daemon writes a prefix at a time", bucket, prefix, owner, when);
}

int
s3lease_take(struct s3_client *c, const char *bucket, const char *prefix,
    int write, ckd_err *e)
{
	char body[S3LEASE_BODY], owner[256], etag[80], self[256], *key;
	struct s3lease *l;
	int64_t expires;
	size_t len;
	int r = 0, tries;

	pthread_mutex_lock(&L.lock);
	L.cli = c;
	snprintf(self, sizeof self, "%s", s3lease_self());
	if ((l = s3lease_find(bucket, prefix)) != NULL && l->mine) {
		if (write)
			l->holds++;
		pthread_mutex_unlock(&L.lock);
		return 0;
	}
	pthread_mutex_unlock(&L.lock);
	if ((key = s3lease_key(prefix)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	if (!write) {
		/* A reader: remember a live writer elsewhere. */
		if (s3lease_read(c, bucket, key, owner, sizeof owner, &expires,
		    etag, e) == 0 && strcmp(owner, self) != 0 &&
		    expires >= s3lease_now() && !s3lease_dead_here(owner)) {
			pthread_mutex_lock(&L.lock);
			s3lease_seen(bucket, prefix, owner, expires);
			pthread_mutex_unlock(&L.lock);
		}
		memset(e, 0, sizeof *e);
		free(key);
		return 0;
	}
	for (tries = 0; tries < S3LEASE_TRIES; tries++) {
		if ((len = s3lease_body(body, sizeof body, self)) == 0) {
			r = err_set(e, CKPT_EINTERNAL, "lease text too long");
			break;
		}
		r = s3_put_cond(c, bucket, key, body, len, NULL, etag, e);
		if (r != CKPT_EEXIST)
			break;
		/* Held: by whom? */
		r = s3lease_read(c, bucket, key, owner, sizeof owner, &expires,
		    etag, e);
		if (r == CKPT_ENOTFOUND)
			continue;               /* released meanwhile */
		if (r != 0)
			break;
		if (strcmp(owner, self) == 0)
			break;                  /* ours: a retried PUT */
		if (expires >= s3lease_now() && !s3lease_dead_here(owner)) {
			pthread_mutex_lock(&L.lock);
			s3lease_seen(bucket, prefix, owner, expires);
			pthread_mutex_unlock(&L.lock);
			r = s3lease_busy(bucket, prefix, owner, expires, e);
			break;
		}
		/* Stale: take it over, unless another taker was first. */
		if ((len = s3lease_body(body, sizeof body, self)) == 0) {
			r = err_set(e, CKPT_EINTERNAL, "lease text too long");
			break;
		}
		r = s3_put_cond(c, bucket, key, body, len, etag, etag, e);
		if (r == 0) {
			s3lease_log(0, "s3://%s/%s: took over the lease of %s "
			    "(%s)", bucket, prefix, owner,
			    expires < s3lease_now() ? "expired" :
			    "its process is gone");
			break;
		}
		if (r != CKPT_EEXIST)
			break;
	}
	if (r == CKPT_EEXIST)
		r = err_set(e, CKPT_EBUSY, "s3://%s/%s: its lease keeps "
		    "changing hands; another ckptd is writing it", bucket,
		    prefix);
	if (r == 0) {
		/* The 412s on the way are no error of the caller's. */
		memset(e, 0, sizeof *e);
		pthread_mutex_lock(&L.lock);
		r = s3lease_mine(bucket, prefix, etag, e);
		pthread_mutex_unlock(&L.lock);
	}
	free(key);
	return r;
}

void
s3lease_drop(const char *bucket, const char *prefix)
{
	struct s3lease *l;

	pthread_mutex_lock(&L.lock);
	if ((l = s3lease_find(bucket, prefix)) != NULL && l->mine &&
	    l->holds > 0 && --l->holds == 0)
		l->idle_since = now_mono_ns();
	pthread_mutex_unlock(&L.lock);
}

int
s3lease_foreign(const char *bucket, const char *key)
{
	struct s3lease *l;
	int64_t now = s3lease_now();
	int r = 0;

	pthread_mutex_lock(&L.lock);
	for (l = L.all; l != NULL && !r; l = l->next)
		r = !l->mine && l->expires >= now &&
		    strcmp(l->bucket, bucket) == 0 &&
		    strncmp(l->prefix, key, strlen(l->prefix)) == 0;
	pthread_mutex_unlock(&L.lock);
	return r;
}

/* ---- keeping and releasing ---------------------------------------------- */

/* DELETE the lease of bucket/prefix when it is still the one written
 * (etag). */
static void
s3lease_release(struct s3_client *c, const char *bucket, const char *prefix,
    const char *etag)
{
	char owner[256], now_etag[80], *key;
	int64_t expires;
	ckd_err e;

	if ((key = s3lease_key(prefix)) == NULL)
		return;
	if (s3lease_read(c, bucket, key, owner, sizeof owner, &expires,
	    now_etag, &e) == 0 && strcmp(now_etag, etag) == 0 &&
	    s3_delete(c, bucket, key, &e) != 0)
		s3lease_log(1, "s3://%s/%s: releasing its lease: %s", bucket,
		    prefix, e.msg);
	free(key);
}

/* One round: renew the leases held, release the idle ones, forget the
 * foreign ones past their expiry. The requests go without the lock, on
 * a copy of what they need. */
struct s3lease_job {
	char bucket[64], prefix[1024], etag[80];
	int idle;
};

static void
s3lease_round(void)
{
	struct s3lease_job *jobs = NULL;
	struct s3lease *l, *next;
	size_t n = 0, i;

	pthread_mutex_lock(&L.lock);
	for (l = L.all; l != NULL; l = l->next)
		n++;
	if (n > 0 && (jobs = calloc(n, sizeof *jobs)) == NULL)
		n = 0;
	for (i = 0, l = L.all; l != NULL && i < n; l = next) {
		next = l->next;
		if (!l->mine) {
			if (l->expires < s3lease_now())
				s3lease_unlink(l);
			continue;
		}
		snprintf(jobs[i].bucket, sizeof jobs[i].bucket, "%s",
		    l->bucket);
		snprintf(jobs[i].prefix, sizeof jobs[i].prefix, "%s",
		    l->prefix);
		snprintf(jobs[i].etag, sizeof jobs[i].etag, "%s", l->etag);
		jobs[i].idle = l->holds == 0 && now_mono_ns() -
		    l->idle_since >= S3LEASE_IDLE * 1000000000LL;
		if (jobs[i].idle)
			s3lease_unlink(l);
		i++;
	}
	n = i;
	pthread_mutex_unlock(&L.lock);
	for (i = 0; i < n; i++) {
		struct s3lease_job *j = &jobs[i];
		char body[S3LEASE_BODY], etag[80], *key;
		size_t len;
		ckd_err e;
		int r;

		if (j->idle) {
			s3lease_release(L.cli, j->bucket, j->prefix, j->etag);
			continue;
		}
		pthread_mutex_lock(&L.lock);
		len = s3lease_body(body, sizeof body, L.self);
		pthread_mutex_unlock(&L.lock);
		if ((key = s3lease_key(j->prefix)) == NULL || len == 0)
			r = err_set(&e, CKPT_ENOMEM, "out of memory");
		else
			r = s3_put_cond(L.cli, j->bucket, key, body, len,
			    j->etag, etag, &e);
		free(key);
		pthread_mutex_lock(&L.lock);
		l = s3lease_find(j->bucket, j->prefix);
		if (l != NULL && l->mine && strcmp(l->etag, j->etag) == 0) {
			if (r == 0) {
				snprintf(l->etag, sizeof l->etag, "%s", etag);
				l->expires = s3lease_now() + S3LEASE_TTL;
			} else if (r == CKPT_EEXIST) {
				s3lease_unlink(l);
			}
		}
		pthread_mutex_unlock(&L.lock);
		if (r == CKPT_EEXIST)
			s3lease_log(1, "s3://%s/%s: its lease was taken by "
			    "another ckptd (this one could not renew it in "
			    "time); saves of both may clash", j->bucket,
			    j->prefix);
		else if (r != 0)
			s3lease_log(1, "s3://%s/%s: renewing its lease: %s",
			    j->bucket, j->prefix, e.msg);
	}
	free(jobs);
}

static void *
s3lease_thread(void *arg)
{
	sigset_t all;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_mutex_lock(&L.lock);
	while (!L.stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += S3LEASE_RENEW;
		pthread_cond_timedwait(&L.wake, &L.lock, &ts);
		if (L.stop)
			break;
		pthread_mutex_unlock(&L.lock);
		s3lease_round();
		pthread_mutex_lock(&L.lock);
	}
	pthread_mutex_unlock(&L.lock);
	return NULL;
}

/* At exit: stop the thread, release every lease held, each with one
 * try of at most S3LEASE_EXIT_MS a request: a store that is down or hung
 * does not hold the exit up (a lease left expires, or this host's next
 * daemon takes it over). */
static void
s3lease_at_exit(void)
{
	pthread_mutex_lock(&L.lock);
	L.stop = 1;
	pthread_cond_signal(&L.wake);
	pthread_mutex_unlock(&L.lock);
	pthread_join(L.th, NULL);
	s3_thread_limits(0, S3LEASE_EXIT_MS);
	while (L.all != NULL) {
		struct s3lease *l = L.all;

		if (l->mine)
			s3lease_release(L.cli, l->bucket, l->prefix, l->etag);
		s3lease_unlink(l);
	}
	s3_thread_limits(-1, 0);
}
