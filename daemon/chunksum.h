/*
 * chunksum.h - the checksums of one tensor's bytes: XXH3-64 of the whole
 * (_METADATA "xxh3") and of each chunk of STORE_SUM_CHUNK bytes, the last
 * one shorter (_METADATA "chunk" and "xxh3_chunks"; Leaf.chunk_bytes and
 * chunk_xxh3), so that a reader of part of a tensor verifies only the
 * chunks it reads. A tensor of at most one chunk has only the whole sum.
 *
 * The bytes are fed in order, in pieces of any length, one tensor after
 * the other (chunksum_begin .. chunksum_end); the states are kept for the
 * next tensor.
 */
#ifndef CKPTD_CHUNKSUM_H
#define CKPTD_CHUNKSUM_H

#include <stddef.h>
#include <stdint.h>

#include <xxhash.h>

#include "common.h"
#include "ckpt.pb-c.h"

/* Bytes of a chunk written by this ckptd (readers take the size recorded
 * with the sums). */
#define STORE_SUM_CHUNK (2u << 20)

struct chunksum {
	XXH3_state_t *all;      /* the whole tensor */
	XXH3_state_t *part;     /* the chunk being fed, when fed in parts */
	uint64_t chunk;         /* chunk size */
	uint64_t pos;           /* bytes fed so far */
	uint64_t *sums;         /* one per chunk, or NULL: one chunk */
	size_t n;               /* sums filled */
};

/* Start a tensor of nbytes bytes. CKPT_ENOMEM. */
int chunksum_begin(struct chunksum *c, uint64_t nbytes, ckd_err *e);
/* Feed len bytes of p (zeros when p is NULL). */
void chunksum_update(struct chunksum *c, const void *p, uint64_t len);
/* The whole sum; *sums (malloc'd, the caller's) and *n the chunk sums
 * (NULL and 0 for a tensor of one chunk). */
uint64_t chunksum_end(struct chunksum *c, uint64_t **sums, size_t *n);
/* Free the states (and the sums of a tensor not ended). */
void chunksum_free(struct chunksum *c);

/* Chunks of a tensor of nbytes bytes in chunks of `chunk` bytes. */
uint64_t chunksum_count(uint64_t nbytes, uint64_t chunk);
/* Whether leaf l carries usable chunk sums (chunk_bytes > 0 and one sum
 * per chunk of its nbytes). */
int chunksum_leaf_has(const Ckpt__Leaf *l);

#endif
