/*
 * worker.c - the pool of threads that runs disk and LMDB work (see
 * worker.h).
 *
 * Submission: the loop thread appends a task to its lane's FIFO under
 * W.lock (one lane per peer uid, so a user with many connections or a
 * huge save gets the same turns as a user with one small save); lanes
 * with work form a ring, and a worker takes one task from the
 * lane at the head of the ring, then moves that lane to the tail, so lanes
 * are served round-robin. Tasks of one lane start in FIFO order but may run
 * at the same time on different workers.
 *
 * Completion: a worker appends the finished task to the completion queue
 * under W.done_lock and writes the eventfd when the queue was empty; the
 * loop thread reads the eventfd first, then takes the whole queue at once
 * and calls done() for each task unlocked, in completion order.
 *
 * Identity: when the daemon runs as root, a worker switches its filesystem
 * identity (fsuid, fsgid, supplementary groups) to the task's peer before
 * run() and back to root after. setgroups goes through the raw syscall:
 * it is per-thread in the kernel, while glibc's wrapper changes every
 * thread of the process.
 *
 * Locks: W.lock and W.done_lock are never held together.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "worker.h"

#define WORKER_MAX 256
#define LANE_BUCKETS 256

struct lane {
	uint64_t key;
	struct task *head, *tail;
	struct lane *hnext;          /* hash chain */
	struct lane *rnext;          /* ring of lanes with work */
	int fallback;                /* the static lane (never freed) */
};

static struct {
	pthread_mutex_t lock;        /* lanes, ring, counters, stop */
	pthread_cond_t cond;         /* work arrived or stop */
	struct lane *buckets[LANE_BUCKETS];
	struct lane *ring_head, *ring_tail;
	struct lane fallback;        /* used when a lane cannot be allocated */
	int fallback_in_ring;
	unsigned queued, running;
	uint64_t completed;          /* tasks finished since start */
	int stop;

	pthread_mutex_t done_lock;   /* completion queue */
	struct task *done_head, *done_tail;

	pthread_t *threads;
	unsigned nthreads;
	int efd;
	struct event *ev;
	int as_root;
} W = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.done_lock = PTHREAD_MUTEX_INITIALIZER,
	.fallback = { .fallback = 1 },
	.efd = -1,
};

#ifdef SYS_setgroups32
#define WORKER_SYS_SETGROUPS SYS_setgroups32
#else
#define WORKER_SYS_SETGROUPS SYS_setgroups
#endif

/* ---- identity -------------------------------------------------------------- */

static int
worker_become(const struct peer_cred *pc, ckd_err *e)
{
	int ngroups = pc->ngroups;

	if (ngroups < 0 || ngroups > (int)(sizeof pc->groups /
	    sizeof pc->groups[0]))
		ngroups = 0;
	if (syscall(WORKER_SYS_SETGROUPS, (size_t)ngroups, pc->groups) != 0)
		return err_set(e, CKPT_EACCES, "cannot take the groups of uid "
		    "%u: %s", (unsigned)pc->uid, strerror(errno));
	setfsgid(pc->gid);
	if ((gid_t)setfsgid((gid_t)-1) != pc->gid)
		return err_set(e, CKPT_EACCES, "cannot take gid %u for file "
		    "access", (unsigned)pc->gid);
	setfsuid(pc->uid);
	if ((uid_t)setfsuid((uid_t)-1) != pc->uid)
		return err_set(e, CKPT_EACCES, "cannot take uid %u for file "
		    "access", (unsigned)pc->uid);
	return 0;
}

static void
worker_restore(void)
{
	setfsuid(0);
	setfsgid(0);
	if (syscall(WORKER_SYS_SETGROUPS, (size_t)0, NULL) != 0)
		log_error_errno(errno, "setgroups(0) after a task");
	if (setfsuid((uid_t)-1) != 0 || setfsgid((gid_t)-1) != 0)
		log_error("cannot return to root's file identity");
}

/* ---- lanes (W.lock held) ------------------------------------------------- */

static struct lane **
worker_bucket(uint64_t key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdULL;
	key ^= key >> 33;
	return &W.buckets[key % LANE_BUCKETS];
}

static void
worker_ring_push(struct lane *l)
{
	l->rnext = NULL;
	if (W.ring_tail != NULL)
		W.ring_tail->rnext = l;
	else
		W.ring_head = l;
	W.ring_tail = l;
}

/* Lane of key with work to add, creating it (and putting it in the ring)
 * when it has none. */
static struct lane *
worker_lane_get(uint64_t key)
{
	struct lane **b = worker_bucket(key), *l;

	for (l = *b; l != NULL; l = l->hnext)
		if (l->key == key)
			return l;
	if ((l = calloc(1, sizeof *l)) == NULL) {
		if (!W.fallback_in_ring) {
			W.fallback_in_ring = 1;
			worker_ring_push(&W.fallback);
		}
		return &W.fallback;
	}
	l->key = key;
	l->hnext = *b;
	*b = l;
	worker_ring_push(l);
	return l;
}

/* Take the next task, round-robin over lanes; NULL when none. */
static struct task *
worker_take(void)
{
	struct lane *l = W.ring_head;
	struct task *t;

	if (l == NULL)
		return NULL;
	W.ring_head = l->rnext;
	if (W.ring_head == NULL)
		W.ring_tail = NULL;
	t = l->head;
	l->head = t->next;
	if (l->head == NULL)
		l->tail = NULL;
	t->next = NULL;
	if (l->head != NULL) {
		worker_ring_push(l);
	} else if (l->fallback) {
		W.fallback_in_ring = 0;
	} else {
		struct lane **p = worker_bucket(l->key);

		while (*p != l)
			p = &(*p)->hnext;
		*p = l->hnext;
		free(l);
	}
	return t;
}

/* ---- threads -------------------------------------------------------------- */

static void
worker_complete(struct task *t)
{
	int was_empty;

	pthread_mutex_lock(&W.done_lock);
	was_empty = W.done_head == NULL;
	if (W.done_tail != NULL)
		W.done_tail->next = t;
	else
		W.done_head = t;
	W.done_tail = t;
	pthread_mutex_unlock(&W.done_lock);
	if (was_empty) {
		uint64_t one = 1;

		while (write(W.efd, &one, sizeof one) < 0 && errno == EINTR)
			;
	}
}

static void *
worker_main(void *arg)
{
	for (;;) {
		struct task *t;

		pthread_mutex_lock(&W.lock);
		while ((t = worker_take()) == NULL && !W.stop)
			pthread_cond_wait(&W.cond, &W.lock);
		if (t == NULL) {
			pthread_mutex_unlock(&W.lock);
			break;
		}
		W.queued--;
		W.running++;
		pthread_mutex_unlock(&W.lock);

		if (!W.as_root || worker_become(&t->cred, &t->err) == 0)
			t->run(t);
		else
			log_warn("task for uid %u not run: %s",
			    (unsigned)t->cred.uid, t->err.msg);
		if (W.as_root)
			worker_restore();

		/* running drops after the completion is queued, so
		 * worker_shutdown() sees either one or the other. */
		worker_complete(t);
		pthread_mutex_lock(&W.lock);
		W.running--;
		W.completed++;
		pthread_mutex_unlock(&W.lock);
	}
	return NULL;
}

/* Loop thread: run done() of every completed task. */
static void
worker_drain(void)
{
	struct task *t;
	uint64_t v;

	while (read(W.efd, &v, sizeof v) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&W.done_lock);
	t = W.done_head;
	W.done_head = W.done_tail = NULL;
	pthread_mutex_unlock(&W.done_lock);
	while (t != NULL) {
		struct task *next = t->next;

		t->next = NULL;
		t->done(t);
		t = next;
	}
}

static void
worker_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	worker_drain();
}

void *
task_new(size_t size, void (*run)(struct task *),
    void (*done)(struct task *), const struct peer_cred *cred, uint64_t lane)
{
	struct task *t;

	if ((t = calloc(1, size)) == NULL)
		return NULL;
	t->run = run;
	t->done = done;
	if (cred != NULL)
		t->cred = *cred;
	t->lane = lane;
	return t;
}

int
worker_init(struct event_base *base, unsigned nworkers, ckd_err *e)
{
	sigset_t all, old;
	unsigned i;
	int r;

	if (nworkers == 0)
		nworkers = 1;
	if (nworkers > WORKER_MAX)
		nworkers = WORKER_MAX;
	W.as_root = geteuid() == 0;
	if ((W.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		return err_errno(e, errno, "eventfd");
	W.ev = event_new(base, W.efd, EV_READ | EV_PERSIST, worker_wake_cb,
	    NULL);
	if (W.ev == NULL || event_add(W.ev, NULL) != 0)
		return err_set(e, CKPT_ENOMEM, "cannot create the worker event");
	if ((W.threads = calloc(nworkers, sizeof *W.threads)) == NULL)
		return err_set(e, CKPT_ENOMEM, "no memory for %u workers",
		    nworkers);
	/* Workers never take signals: they all go to the loop thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < nworkers; i++) {
		char name[16];

		if ((r = pthread_create(&W.threads[i], NULL, worker_main,
		    NULL)) != 0)
			break;
		snprintf(name, sizeof name, "ckptd-w%u", i);
		pthread_setname_np(W.threads[i], name);
		W.nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (W.nthreads < nworkers) {
		if (W.nthreads == 0)
			return err_errno(e, r, "pthread_create");
		log_warn_errno(r, "started only %u of %u workers", W.nthreads,
		    nworkers);
	}
	log_debug("%u workers%s", W.nthreads,
	    W.as_root ? " (taking each peer's identity)" : "");
	return 0;
}

void
worker_submit(struct task *t)
{
	struct lane *l;

	t->next = NULL;
	t->err.code = 0;
	t->err.msg[0] = '\0';
	pthread_mutex_lock(&W.lock);
	l = worker_lane_get((uint64_t)t->cred.uid);
	if (l->tail != NULL)
		l->tail->next = t;
	else
		l->head = t;
	l->tail = t;
	W.queued++;
	pthread_cond_signal(&W.cond);
	pthread_mutex_unlock(&W.lock);
}

unsigned
worker_queued(void)
{
	unsigned n;

	pthread_mutex_lock(&W.lock);
	n = W.queued;
	pthread_mutex_unlock(&W.lock);
	return n;
}

unsigned
worker_running(void)
{
	unsigned n;

	pthread_mutex_lock(&W.lock);
	n = W.running;
	pthread_mutex_unlock(&W.lock);
	return n;
}

uint64_t
worker_completed(void)
{
	uint64_t n;

	pthread_mutex_lock(&W.lock);
	n = W.completed;
	pthread_mutex_unlock(&W.lock);
	return n;
}

unsigned
worker_count(void)
{
	return W.nthreads;
}

void
worker_shutdown(void)
{
	unsigned i;

	if (W.threads == NULL)
		return;
	/* Finish queued work, running done() here: it may submit more. */
	for (;;) {
		int idle, empty;

		worker_drain();
		pthread_mutex_lock(&W.lock);
		idle = W.queued == 0 && W.running == 0;
		pthread_mutex_unlock(&W.lock);
		pthread_mutex_lock(&W.done_lock);
		empty = W.done_head == NULL;
		pthread_mutex_unlock(&W.done_lock);
		if (idle && empty)
			break;
		{
			struct pollfd p = { .fd = W.efd, .events = POLLIN };

			poll(&p, 1, 10);
		}
	}
	pthread_mutex_lock(&W.lock);
	W.stop = 1;
	pthread_cond_broadcast(&W.cond);
	pthread_mutex_unlock(&W.lock);
	for (i = 0; i < W.nthreads; i++)
		pthread_join(W.threads[i], NULL);
	free(W.threads);
	W.threads = NULL;
	W.nthreads = 0;
	if (W.ev != NULL)
		event_free(W.ev);
	W.ev = NULL;
	close(W.efd);
	W.efd = -1;
}
