/*
 * cow.c - copy-on-write snapshots of the caller's buffers for background
 * saves (ckpt_save_args_set_cow).
 *
 * ckpt_save write-protects the page spans of the large source buffers
 * with a userfaultfd (UFFDIO_REGISTER_MODE_WP, UFFDIO_WRITEPROTECT) and
 * returns; a library thread then copies them into staging. A span is cut
 * into blocks (COW_BLOCK-aligned addresses, so that a transparent huge
 * page is unprotected whole), each with an atomic state:
 *
 *   COW_TODO   protected, not copied
 *   COW_BUSY   claimed by one thread (copier or fault handler), copying
 *   COW_DONE   copied into staging: its protection may go
 *
 * Whoever moves a block TODO -> BUSY copies it, marks it DONE, then
 * removes its protection (which wakes the threads waiting on a write to
 * it). A write to a block the copier has not reached stops in the kernel;
 * the client's handler thread reads the fault, copies the block first
 * (or waits while the copier finishes it) and unprotects it. No block is
 * unprotected before DONE, so none is copied after it was written; the
 * kernel wakes every writer of a range when its protection goes, so no
 * wake-up is lost.
 *
 * The handler must never fault itself: it touches only its stack, the
 * context and snapshots (their own mmap'ed pages, never a registered
 * span), the staging mapping and the sources (read). Whoever holds
 * ctx->lock obeys the same rule, since the handler takes it.
 *
 * Writes from inside the kernel (read(2) into a protected array) fault
 * too and must reach the handler, so the snapshot is used only when the
 * userfaultfd handles kernel faults: userfaultfd(2) without
 * UFFD_USER_MODE_ONLY (CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)
 * or /dev/userfaultfd. Otherwise (or without write-protect support,
 * under valgrind, or CKPT_COW_SAVE=0) ckpt_save copies before it
 * returns.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "internal.h"

#define COW_BLOCK (2u << 20)

enum { COW_TODO, COW_BUSY, COW_DONE };

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

struct cowblock {
	uintptr_t a, b;
	atomic_int state;
};

struct cowspan {
	uintptr_t a, b;                 /* page aligned */
	size_t seg0, nseg;              /* its segments in snap->segs */
	size_t blk0, nblk;              /* its blocks in snap->blocks */
	int registered;
};

struct cowsnap {
	struct cowctx *ctx;
	char *base;                     /* the staging mapping */
	struct copyseg *segs;           /* large segments, by source address */
	size_t nseg;
	struct cowspan *spans;
	size_t nspan;
	struct cowblock *blocks;
	size_t nblk;
	size_t bytes;                   /* of segments taken copy-on-write */
	atomic_size_t next;             /* the copiers' cursor */
	size_t maplen;
	struct cowsnap *next_snap;
};

struct cowctx {
	int uffd;
	int stopfd;
	pthread_t th;
	pthread_mutex_t lock;
	struct cowsnap *snaps;
	int wp_unpopulated;
};

static long page_size;

/* ---- probing ----------------------------------------------------------------------- */

/* The probe's result for the effective user it ran as (a process that
 * changes user probes again). */
static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static int probe_done, probe_ok;
static uid_t probe_euid;
static uint64_t probe_features;

/* A userfaultfd that also handles faults from inside the kernel, or -1. */
static int
uffd_open(void)
{
	int fd, dev;

#ifdef SYS_userfaultfd
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return fd;
#endif
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	close(dev);
	return fd;
}

static void
probe(void)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int fd;

	probe_ok = 0;
	page_size = sysconf(_SC_PAGESIZE);
	if (page_size <= 0 || COW_BLOCK % (size_t)page_size != 0)
		return;
	if ((fd = uffd_open()) < 0)
		return;
	if (ioctl(fd, UFFDIO_API, &api) == 0 &&
	    (api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) != 0 &&
	    (api.ioctls & (1ull << _UFFDIO_REGISTER)) != 0) {
		probe_ok = 1;
		probe_features = api.features;
	}
	close(fd);
}

int
cow_available(void)
{
	const char *v = getenv("CKPT_COW_SAVE");

	int ok;

	if (v != NULL && strcmp(v, "0") == 0)
		return 0;
	/* valgrind runs one thread at a time: a thread stopped on a
	 * protected page keeps the handler from running */
	v = getenv("LD_PRELOAD");
	if (v != NULL && strstr(v, "vgpreload_") != NULL)
		return 0;
	pthread_mutex_lock(&probe_lock);
	if (!probe_done || probe_euid != geteuid()) {
		probe_euid = geteuid();
		probe();
		probe_done = 1;
	}
	ok = probe_ok;
	pthread_mutex_unlock(&probe_lock);
	return ok;
}

/* ---- blocks ---------------------------------------------------------------------- */

/* Copy the parts of the span's segments in [a, b) into staging. */
static void
copy_range(const struct cowsnap *s, const struct cowspan *sp, uintptr_t a,
    uintptr_t b)
{
	size_t i;

	for (i = sp->seg0; i < sp->seg0 + sp->nseg; i++) {
		const struct copyseg *g = &s->segs[i];
		uintptr_t sa = (uintptr_t)g->src, sb = sa + g->n;

		if (sa >= b)
			break;          /* sorted by source */
		if (sb <= a)
			continue;
		if (sa < a)
			sa = a;
		if (sb > b)
			sb = b;
		copy_nt(s->base + g->off + (sa - (uintptr_t)g->src),
		    (const void *)sa, sb - sa);
	}
}

static void
unprotect(int uffd, uintptr_t a, uintptr_t b)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = a, .len = b - a }, .mode = 0 };

	/* also wakes the writers waiting on the range */
	(void)ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
}

/* Take block k when nobody did: copy it, mark it done, unprotect it.
 * wait: the caller needs it copied (a writer waits on it). */
static void
block_take(struct cowsnap *s, const struct cowspan *sp, size_t k, int wait)
{
	struct cowblock *bk = &s->blocks[k];
	int st = COW_TODO;

	if (atomic_compare_exchange_strong(&bk->state, &st, COW_BUSY)) {
		copy_range(s, sp, bk->a, bk->b);
		copy_nt_fence();
		atomic_store(&bk->state, COW_DONE);
	} else if (!wait) {
		return;         /* its taker unprotects it */
	} else {
		while (atomic_load(&bk->state) != COW_DONE)
			sched_yield();
	}
	unprotect(s->ctx->uffd, bk->a, bk->b);
}

/* ---- the fault handler --------------------------------------------------------- */

static void
on_fault(struct cowctx *x, uintptr_t addr)
{
	struct cowsnap *s;
	size_t i;
	int found = 0;

	pthread_mutex_lock(&x->lock);
	for (s = x->snaps; s != NULL && !found; s = s->next_snap)
		for (i = 0; i < s->nspan; i++) {
			const struct cowspan *sp = &s->spans[i];
			size_t k;

			if (!sp->registered || addr < sp->a || addr >= sp->b)
				continue;
			k = sp->blk0 + (addr / COW_BLOCK - sp->a / COW_BLOCK);
			block_take(s, sp, k, 1);
			found = 1;
			break;
		}
	pthread_mutex_unlock(&x->lock);
	if (!found) {
		/* a fault queued before its range was unprotected */
		struct uffdio_range r = {
			.start = addr & ~(uintptr_t)(page_size - 1),
			.len = (uint64_t)page_size };
		(void)ioctl(x->uffd, UFFDIO_WAKE, &r);
	}
}

static void *
handler_main(void *arg)
{
	struct cowctx *x = arg;
	struct uffd_msg msg[16];
	struct pollfd pf[2];
	ssize_t n, i;

	sigset_t all;

	/* a signal handler run here could write to a protected page */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pf[0].fd = x->uffd;
	pf[0].events = POLLIN;
	pf[1].fd = x->stopfd;
	pf[1].events = POLLIN;
	for (;;) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents != 0)
			break;
		if ((pf[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0)
			break;
		n = read(x->uffd, msg, sizeof msg);
		if (n < 0)
			continue;       /* EAGAIN: another wake-up */
		for (i = 0; i < n / (ssize_t)sizeof msg[0]; i++)
			if (msg[i].event == UFFD_EVENT_PAGEFAULT)
				on_fault(x, (uintptr_t)msg[i].arg.pagefault.address);
	}
	return NULL;
}

/* ---- the client's context ------------------------------------------------------ */

static struct cowctx *
ctx_create(void)
{
	struct cowctx *x;
	struct uffdio_api api = { .api = UFFD_API };

	x = mmap(NULL, sizeof *x, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (x == MAP_FAILED)
		return NULL;
	x->stopfd = -1;
	if ((x->uffd = uffd_open()) < 0)
		goto fail;
	api.features = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
	    (probe_features & UFFD_FEATURE_WP_UNPOPULATED);
	if (ioctl(x->uffd, UFFDIO_API, &api) != 0)
		goto fail;
	x->wp_unpopulated = (api.features & UFFD_FEATURE_WP_UNPOPULATED) != 0;
	if ((x->stopfd = eventfd(0, EFD_CLOEXEC)) < 0)
		goto fail;
	pthread_mutex_init(&x->lock, NULL);
	if (pthread_create(&x->th, NULL, handler_main, x) != 0) {
		pthread_mutex_destroy(&x->lock);
		goto fail;
	}
	return x;
fail:
	if (x->uffd >= 0)
		close(x->uffd);
	if (x->stopfd >= 0)
		close(x->stopfd);
	munmap(x, sizeof *x);
	return NULL;
}

void
cow_ctx_destroy(ckpt_client *c)
{
	struct cowctx *x = c->cow;
	uint64_t one = 1;

	if (x == NULL)
		return;
	/* every snapshot ended with its background save, joined before */
	while (write(x->stopfd, &one, sizeof one) < 0 && errno == EINTR)
		;
	pthread_join(x->th, NULL);
	pthread_mutex_destroy(&x->lock);
	close(x->uffd);
	close(x->stopfd);
	munmap(x, sizeof *x);
	c->cow = NULL;
}

/* ---- snapshots --------------------------------------------------------------------- */

static int
seg_cmp(const void *pa, const void *pb)
{
	const struct copyseg *a = pa, *b = pb;

	if ((uintptr_t)a->src != (uintptr_t)b->src)
		return (uintptr_t)a->src < (uintptr_t)b->src ? -1 : 1;
	return 0;
}

/* Pages of [a, b) never touched read as zero without a page table entry
 * to carry the protection (kernels before UFFD_FEATURE_WP_UNPOPULATED):
 * read them, which maps the zero page, so that a write faults. */
static void
populate(uintptr_t a, uintptr_t b)
{
	unsigned char vec[256];
	size_t np, i;
	uintptr_t p;

	for (p = a; p < b; p += sizeof vec * (size_t)page_size) {
		np = (b - p) / (size_t)page_size;
		if (np > sizeof vec)
			np = sizeof vec;
		if (mincore((void *)p, np * (size_t)page_size, vec) != 0)
			memset(vec, 0, np);
		for (i = 0; i < np; i++)
			if ((vec[i] & 1) == 0)
				(void)*(volatile const char *)(p + i *
				    (size_t)page_size);
	}
}

/* Does [a, b) meet a registered span of another snapshot? (x->lock) */
static int
span_busy(const struct cowctx *x, uintptr_t a, uintptr_t b)
{
	const struct cowsnap *s;
	size_t i;

	for (s = x->snaps; s != NULL; s = s->next_snap)
		for (i = 0; i < s->nspan; i++)
			if (s->spans[i].registered && a < s->spans[i].b &&
			    s->spans[i].a < b)
				return 1;
	return 0;
}

/* Register and protect span sp; 0, or -1 when its memory cannot be
 * (the caller copies it now). x->lock held. */
static int
span_protect(struct cowctx *x, struct cowspan *sp)
{
	struct uffdio_register reg = {
		.range = { .start = sp->a, .len = sp->b - sp->a },
		.mode = UFFDIO_REGISTER_MODE_WP };
	struct uffdio_writeprotect wp = {
		.range = { .start = sp->a, .len = sp->b - sp->a },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP };
	struct uffdio_range r = { .start = sp->a, .len = sp->b - sp->a };

	if (span_busy(x, sp->a, sp->b))
		return -1;
	if (ioctl(x->uffd, UFFDIO_REGISTER, &reg) != 0)
		return -1;
	if ((reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)) == 0 ||
	    ioctl(x->uffd, UFFDIO_WRITEPROTECT, &wp) != 0) {
		(void)ioctl(x->uffd, UFFDIO_UNREGISTER, &r);
		return -1;
	}
	sp->registered = 1;
	return 0;
}

int
cow_begin(ckpt_client *c, void *base, const struct copyseg *segs,
    size_t nseg, struct cowsnap **out, struct copyseg *rest, size_t *nrest)
{
	struct cowctx *x;
	struct cowsnap *s;
	struct copyseg *big;
	size_t i, j, nbig = 0, nspan = 0, nblk = 0, len, nr = 0;
	uintptr_t a, b, end = 0;
	char *p;

	*out = NULL;
	*nrest = 0;
	for (i = 0; i < nseg; i++)
		if (segs[i].n >= CKPT_COW_MIN)
			nbig++;
	if (nbig == 0 || !cow_available())
		goto all_now;
	pthread_mutex_lock(&c->lock);
	if (c->cow == NULL)
		c->cow = ctx_create();
	x = c->cow;
	pthread_mutex_unlock(&c->lock);
	if (x == NULL)
		goto all_now;
	if ((big = malloc(nbig * sizeof *big)) == NULL)
		goto all_now;
	for (i = 0, j = 0; i < nseg; i++)
		if (segs[i].n >= CKPT_COW_MIN)
			big[j++] = segs[i];
	qsort(big, nbig, sizeof *big, seg_cmp);
	/* spans: the page ranges of the segments, merged where they share
	 * pages; blocks: each span cut at COW_BLOCK boundaries */
	for (i = 0; i < nbig; i++) {
		a = (uintptr_t)big[i].src & ~(uintptr_t)(page_size - 1);
		b = ((uintptr_t)big[i].src + big[i].n + (size_t)page_size - 1) &
		    ~(uintptr_t)(page_size - 1);
		if (nspan == 0 || a >= end)
			nspan++;
		if (b > end)
			end = b;
	}
	/* blocks: a span of L bytes has at most L / COW_BLOCK + 2 */
	for (i = 0; i < nbig; i++)
		nblk += big[i].n / COW_BLOCK + 3;
	len = sizeof *s + nbig * sizeof *s->segs + nspan * sizeof *s->spans +
	    nblk * sizeof *s->blocks + 64 * 3;
	len = (len + (size_t)page_size - 1) & ~(size_t)(page_size - 1);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	    -1, 0);
	if (p == MAP_FAILED) {
		free(big);
		goto all_now;
	}
	s = (struct cowsnap *)p;
	s->maplen = len;
	s->ctx = x;
	s->base = base;
	p += (sizeof *s + 63) & ~(size_t)63;
	s->segs = (struct copyseg *)p;
	memcpy(s->segs, big, nbig * sizeof *big);
	s->nseg = nbig;
	free(big);
	p += (nbig * sizeof *s->segs + 63) & ~(size_t)63;
	s->spans = (struct cowspan *)p;
	p += (nspan * sizeof *s->spans + 63) & ~(size_t)63;
	s->blocks = (struct cowblock *)p;
	for (i = 0; i < nbig; i++) {
		struct cowspan *sp;

		a = (uintptr_t)s->segs[i].src & ~(uintptr_t)(page_size - 1);
		b = ((uintptr_t)s->segs[i].src + s->segs[i].n +
		    (size_t)page_size - 1) & ~(uintptr_t)(page_size - 1);
		if (s->nspan == 0 || a >= s->spans[s->nspan - 1].b) {
			sp = &s->spans[s->nspan++];
			sp->a = a;
			sp->b = b;
			sp->seg0 = i;
			sp->nseg = 0;
		}
		sp = &s->spans[s->nspan - 1];
		sp->nseg++;
		if (b > sp->b)
			sp->b = b;
	}
	for (i = 0; i < s->nspan; i++) {
		struct cowspan *sp = &s->spans[i];

		sp->blk0 = s->nblk;
		for (a = sp->a; a < sp->b; a = b) {
			b = (a / COW_BLOCK + 1) * COW_BLOCK;
			if (b > sp->b)
				b = sp->b;
			s->blocks[s->nblk].a = a;
			s->blocks[s->nblk].b = b;
			atomic_init(&s->blocks[s->nblk].state, COW_TODO);
			s->nblk++;
		}
		sp->nblk = s->nblk - sp->blk0;
		if (!x->wp_unpopulated)
			populate(sp->a, sp->b);
	}
	atomic_init(&s->next, 0);

	/* From the first protection on, until the unlock: no writes but to
	 * the stack, x and s (a write elsewhere may fault, and the handler
	 * needs the lock). */
	pthread_mutex_lock(&x->lock);
	s->next_snap = x->snaps;
	x->snaps = s;
	for (i = 0; i < s->nspan; i++)
		if (span_protect(x, &s->spans[i]) == 0)
			for (j = 0; j < s->spans[i].nseg; j++)
				s->bytes += s->segs[s->spans[i].seg0 + j].n;
	pthread_mutex_unlock(&x->lock);

	/* the rest is copied by the caller now */
	for (i = 0; i < nseg; i++)
		if (segs[i].n > 0 && segs[i].n < CKPT_COW_MIN)
			rest[nr++] = segs[i];
	for (i = 0; i < s->nspan; i++)
		if (!s->spans[i].registered)
			for (j = 0; j < s->spans[i].nseg; j++)
				rest[nr++] = s->segs[s->spans[i].seg0 + j];
	*nrest = nr;
	if (s->bytes == 0) {
		cow_finish(s);
		return 0;
	}
	*out = s;
	return 0;
all_now:
	for (i = 0; i < nseg; i++)
		rest[i] = segs[i];
	*nrest = nseg;
	return 0;
}

size_t
cow_bytes(const struct cowsnap *s)
{
	return s != NULL ? s->bytes : 0;
}

static void *
copier_main(void *arg)
{
	struct cowsnap *s = arg;
	sigset_t all, old;
	size_t i, k;

	/* a signal handler run here while this thread holds a block could
	 * write to it, and wait for itself */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (;;) {
		k = atomic_fetch_add(&s->next, 1);
		if (k >= s->nblk)
			break;
		/* the span of block k */
		for (i = 0; i < s->nspan; i++)
			if (k < s->spans[i].blk0 + s->spans[i].nblk)
				break;
		if (s->spans[i].registered)
			block_take(s, &s->spans[i], k, 0);
	}
	copy_nt_fence();
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return NULL;
}

void
cow_finish(struct cowsnap *s)
{
	pthread_t th[CKPT_PAR_COPY_THREADS];
	int started[CKPT_PAR_COPY_THREADS] = { 0 };
	struct cowctx *x = s->ctx;
	struct cowsnap **pp;
	size_t i, nt = 1;
	long ncpu;

	if (s->bytes >= CKPT_PAR_COPY_MIN) {
		nt = CKPT_PAR_COPY_THREADS;
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		if (ncpu > 0 && (size_t)ncpu < nt)
			nt = (size_t)ncpu;
	}
	for (i = 1; i < nt; i++)
		started[i] = pthread_create(&th[i], NULL, copier_main, s) == 0;
	copier_main(s);
	for (i = 1; i < nt; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	/* blocks the handler took may still be copying */
	for (i = 0; i < s->nblk; i++)
		while (atomic_load(&s->blocks[i].state) == COW_BUSY)
			sched_yield();
	pthread_mutex_lock(&x->lock);
	for (pp = &x->snaps; *pp != NULL; pp = &(*pp)->next_snap)
		if (*pp == s) {
			*pp = s->next_snap;
			break;
		}
	for (i = 0; i < s->nspan; i++)
		if (s->spans[i].registered) {
			struct uffdio_range r = { .start = s->spans[i].a,
			    .len = s->spans[i].b - s->spans[i].a };
			(void)ioctl(x->uffd, UFFDIO_UNREGISTER, &r);
			s->spans[i].registered = 0;
		}
	pthread_mutex_unlock(&x->lock);
	munmap(s, s->maplen);
}
