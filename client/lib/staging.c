/*
 * staging.c - the per-client pool of staging memfds, and parallel copies
 * with streaming stores.
 *
 * A staging buffer is a memfd sealed with F_SEAL_SHRINK (the daemon maps
 * it and requires that it can never shrink under its mapping), mapped
 * read-write here. A buffer is busy from the Save that carries it until
 * its SaveDone. Free buffers are reused: the first touch of fresh pages
 * costs far more than a warm copy. Too-small free buffers grow (ftruncate
 * + mremap); at most STAGING_IDLE_MAX idle buffers are kept. ckptd
 * charges a buffer's full size to its memory budget, so a small save does
 * not borrow a buffer many times its size.
 *
 * All pool functions run with client->lock held.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define STAGING_IDLE_MAX 2
#define STAGING_MIN (64u << 10)

static size_t
round_size(size_t need)
{
	size_t g = need > (2u << 20) ? (2u << 20) : STAGING_MIN;

	if (need < STAGING_MIN)
		return STAGING_MIN;
	if (need > SIZE_MAX - g)
		return need;
	return (need + g - 1) / g * g;
}

static void
buf_destroy(struct stagebuf *b)
{
	if (b->map != NULL && b->map != MAP_FAILED)
		munmap(b->map, b->size);
	if (b->fd >= 0)
		close(b->fd);
	free(b);
}

static int
buf_create(size_t size, struct stagebuf **out, char *err, size_t errlen)
{
	struct stagebuf *b = calloc(1, sizeof *b);

	if (b == NULL) {
		snprintf(err, errlen, "out of memory");
		return CKPT_ENOMEM;
	}
	b->fd = memfd_create("ckpt-staging", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (b->fd < 0) {
		snprintf(err, errlen, "memfd_create: %s", strerror(errno));
		goto fail;
	}
	if (ftruncate(b->fd, (off_t)size) != 0) {
		snprintf(err, errlen, "cannot size a staging buffer of %zu "
		    "bytes: %s", size, strerror(errno));
		goto fail;
	}
	if (fcntl(b->fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
		snprintf(err, errlen, "cannot seal the staging buffer: %s",
		    strerror(errno));
		goto fail;
	}
	b->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	if (b->map == MAP_FAILED) {
		snprintf(err, errlen, "cannot map a staging buffer of %zu "
		    "bytes: %s", size, strerror(errno));
		goto fail;
	}
	b->size = size;
	*out = b;
	return 0;
fail:
	buf_destroy(b);
	return CKPT_ENOMEM;
}

static int
buf_grow(struct stagebuf *b, size_t size, char *err, size_t errlen)
{
	void *m;

	if (ftruncate(b->fd, (off_t)size) != 0) {
		snprintf(err, errlen, "cannot grow a staging buffer to %zu "
		    "bytes: %s", size, strerror(errno));
		return CKPT_ENOMEM;
	}
	m = mremap(b->map, b->size, size, MREMAP_MAYMOVE);
	if (m == MAP_FAILED) {
		snprintf(err, errlen, "cannot map a staging buffer of %zu "
		    "bytes: %s", size, strerror(errno));
		/* the file grew; the old mapping is still valid */
		return CKPT_ENOMEM;
	}
	b->map = m;
	b->size = size;
	return 0;
}

int
staging_acquire(ckpt_client *c, size_t need, struct stagebuf **out,
    char *err, size_t errlen)
{
	struct stagebuf *b, *fit = NULL, *largest = NULL;
	size_t size = round_size(need);
	int r;

	for (b = c->pool; b != NULL; b = b->next) {
		if (b->busy)
			continue;
		if (b->size >= need && (fit == NULL || b->size < fit->size))
			fit = b;
		if (largest == NULL || b->size > largest->size)
			largest = b;
	}
	/* ckptd charges the whole buffer to its memory budget: do not
	 * hand a small save a much larger buffer */
	if (fit != NULL && fit->size > 4 * size && fit->size - size > (64u << 20))
		fit = NULL;
	else if (fit == NULL && largest != NULL) {
		if (buf_grow(largest, size, err, errlen) == 0)
			fit = largest;
	}
	if (fit == NULL) {
		if ((r = buf_create(size, &fit, err, errlen)) != 0)
			return r;
		fit->next = c->pool;
		c->pool = fit;
	}
	fit->busy = 1;
	*out = fit;
	return 0;
}

void
staging_release(ckpt_client *c, struct stagebuf *rel)
{
	struct stagebuf *b, **pp, **smallest;
	unsigned idle;

	rel->busy = 0;
	for (;;) {
		idle = 0;
		smallest = NULL;
		for (pp = &c->pool; (b = *pp) != NULL; pp = &b->next) {
			if (b->busy)
				continue;
			idle++;
			if (smallest == NULL || b->size < (*smallest)->size)
				smallest = pp;
		}
		if (idle <= STAGING_IDLE_MAX)
			break;
		b = *smallest;
		*smallest = b->next;
		buf_destroy(b);
	}
}

void
staging_destroy_all(ckpt_client *c)
{
	struct stagebuf *b, *n;

	for (b = c->pool; b != NULL; b = n) {
		n = b->next;
		buf_destroy(b);
	}
	c->pool = NULL;
}

/* ---- copies ----------------------------------------------------------------- */

struct copyjob {
	char *base;
	const struct copyseg *segs;
	size_t nseg;
	size_t start, end;      /* byte range in the concatenation */
};

static void *
copy_range(void *arg)
{
	struct copyjob *j = arg;
	size_t i, pos = 0;

	for (i = 0; i < j->nseg && pos < j->end; i++) {
		size_t s = pos, e = pos + j->segs[i].n;
		pos = e;
		if (e <= j->start)
			continue;
		if (s < j->start)
			s = j->start;
		if (e > j->end)
			e = j->end;
		copy_nt(j->base + j->segs[i].off + (s - (pos - j->segs[i].n)),
		    (const char *)j->segs[i].src + (s - (pos - j->segs[i].n)),
		    e - s);
	}
	copy_nt_fence();
	return NULL;
}

void
staging_copy(void *base, const struct copyseg *segs, size_t nseg)
{
	struct copyjob jobs[CKPT_PAR_COPY_THREADS];
	pthread_t th[CKPT_PAR_COPY_THREADS];
	int started[CKPT_PAR_COPY_THREADS] = { 0 };
	size_t total = 0, i, nt, chunk;

	for (i = 0; i < nseg; i++)
		total += segs[i].n;
	if (total < CKPT_PAR_COPY_MIN) {
		for (i = 0; i < nseg; i++)
			if (segs[i].n > 0)
				copy_nt((char *)base + segs[i].off, segs[i].src,
				    segs[i].n);
		copy_nt_fence();
		return;
	}
	nt = CKPT_PAR_COPY_THREADS;
	{
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		if (ncpu > 0 && (size_t)ncpu < nt)
			nt = (size_t)ncpu;
	}
	/* ranges on 4 KiB boundaries */
	chunk = (total / nt + 4095) & ~(size_t)4095;
	for (i = 0; i < nt; i++) {
		jobs[i].base = base;
		jobs[i].segs = segs;
		jobs[i].nseg = nseg;
		jobs[i].start = i * chunk < total ? i * chunk : total;
		jobs[i].end = (i + 1) * chunk < total ? (i + 1) * chunk : total;
		if (i == nt - 1)
			jobs[i].end = total;
	}
	for (i = 1; i < nt; i++)
		started[i] = pthread_create(&th[i], NULL, copy_range, &jobs[i]) == 0;
	copy_range(&jobs[0]);
	for (i = 1; i < nt; i++) {
		if (started[i])
			pthread_join(th[i], NULL);
		else
			copy_range(&jobs[i]);
	}
}
