/*
 * chunksum.c - whole and per-chunk XXH3-64 of a tensor (contract:
 * chunksum.h).
 *
 * A chunk fed whole in one call is hashed in one shot; a chunk fed in
 * parts (the edges of O_DIRECT writes, runs of holes) goes through the
 * part state. Every byte is hashed twice, once for the whole sum and once
 * for its chunk, each pass over bytes the caller has just brought into
 * the cache.
 */
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
/* XXH3 through libxxhash's run-time dispatch (AVX2/AVX-512 when present) */
#include <xxh_x86dispatch.h>
#endif

#include "chunksum.h"

static const unsigned char cs_zeros[64u << 10];

uint64_t
chunksum_count(uint64_t nbytes, uint64_t chunk)
{
	if (chunk == 0)
		return 0;
	return nbytes / chunk + (nbytes % chunk != 0);
}

int
chunksum_leaf_has(const Ckpt__Leaf *l)
{
	return l->has_chunk_bytes && l->chunk_bytes > 0 &&
	    l->n_chunk_xxh3 > 1 &&
	    chunksum_count(l->nbytes, l->chunk_bytes) == l->n_chunk_xxh3;
}

int
chunksum_begin(struct chunksum *c, uint64_t nbytes, ckd_err *e)
{
	uint64_t n;

	free(c->sums);
	c->sums = NULL;
	c->n = 0;
	c->pos = 0;
	c->chunk = STORE_SUM_CHUNK;
	if ((c->all == NULL && (c->all = XXH3_createState()) == NULL) ||
	    (c->part == NULL && (c->part = XXH3_createState()) == NULL))
		return err_set(e, CKPT_ENOMEM, "out of memory");
	XXH3_64bits_reset(c->all);
	if (nbytes > c->chunk) {
		n = chunksum_count(nbytes, c->chunk);
		if ((c->sums = malloc((size_t)n * sizeof *c->sums)) == NULL)
			return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	return 0;
}

/* Feed len bytes of one chunk (within it) at c->pos. */
static void
cs_chunk(struct chunksum *c, const void *p, uint64_t len)
{
	uint64_t at = c->pos % c->chunk, n;
	const unsigned char *q = p;

	if (at == 0 && len == c->chunk && p != NULL) {
		c->sums[c->n++] = XXH3_64bits(p, (size_t)len);
		return;
	}
	if (at == 0)
		XXH3_64bits_reset(c->part);
	while (len > 0) {
		n = len > sizeof cs_zeros ? sizeof cs_zeros : len;
		XXH3_64bits_update(c->part, q != NULL ? (const void *)q :
		    cs_zeros, (size_t)n);
		if (q != NULL)
			q += n;
		len -= n;
		at += n;
	}
	if (at == c->chunk)
		c->sums[c->n++] = XXH3_64bits_digest(c->part);
}

void
chunksum_update(struct chunksum *c, const void *p, uint64_t len)
{
	const unsigned char *q = p;
	uint64_t n;

	if (p != NULL) {
		XXH3_64bits_update(c->all, p, (size_t)len);
	} else {
		for (n = len; n > 0; ) {
			uint64_t k = n > sizeof cs_zeros ? sizeof cs_zeros : n;

			XXH3_64bits_update(c->all, cs_zeros, (size_t)k);
			n -= k;
		}
	}
	if (c->sums == NULL) {
		c->pos += len;
		return;
	}
	while (len > 0) {
		n = c->chunk - c->pos % c->chunk;
		if (n > len)
			n = len;
		cs_chunk(c, q, n);
		if (q != NULL)
			q += n;
		c->pos += n;
		len -= n;
	}
}

uint64_t
chunksum_end(struct chunksum *c, uint64_t **sums, size_t *n)
{
	if (c->sums != NULL && c->pos % c->chunk != 0)
		c->sums[c->n++] = XXH3_64bits_digest(c->part);
	*sums = c->sums;
	*n = c->n;
	c->sums = NULL;
	c->n = 0;
	return XXH3_64bits_digest(c->all);
}

void
chunksum_free(struct chunksum *c)
{
	XXH3_freeState(c->all);
	XXH3_freeState(c->part);
	free(c->sums);
	memset(c, 0, sizeof *c);
}
