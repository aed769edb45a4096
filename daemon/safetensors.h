/*
 * safetensors.h - the data files of a tree item (data-NNNNN.safetensors):
 * writing them (two engines: buffered pwritev and O_DIRECT from the
 * staging mapping; holes of the source written as zeros), reading and
 * validating their headers for restore, verifying their checksums.
 * Format in safetensors.c.
 */
#ifndef CKPTD_SAFETENSORS_H
#define CKPTD_SAFETENSORS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"
#include "ckpt.pb-c.h"
#include "chunksum.h"
#include "syncbatch.h"

/* Data of every tensor starts at a multiple of this within the file; the
 * header is padded so the data section starts on a page boundary. */
#define STORE_TENSOR_ALIGN 64
#define STORE_PAGE 4096

/* A source mapping of a file (a client's staging memfd) whose holes must
 * not be read through the mapping: reading a hole of a shmem mapping
 * allocates a page, so a client's sparse buffer would grow the daemon.
 * The writers find holes with lseek(SEEK_DATA / SEEK_HOLE) on fd and
 * write (and hash) zeros for them without touching the mapping. The runs
 * found are shared by every writer of the source (under lock): a
 * SEEK_HOLE walks the page cache up to the next hole, so a fully
 * populated buffer is walked once per save, not once per file. */
struct store_runs {
	uint64_t data_lo, data_hi;      /* a run known to hold data */
	uint64_t hole_lo, hole_hi;      /* a run known to be a hole */
};
struct store_src {
	int fd;
	const char *base;       /* mapping of fd from offset 0; NULL: unused */
	pthread_mutex_t lock;   /* known */
	struct store_runs known;
};
void store_src_init(struct store_src *s, int fd, const void *base);
void store_src_destroy(struct store_src *s);

struct store_tensor {
	const char *name;       /* safetensors tensor name (unique in the file) */
	Ckpt__Dtype dtype;
	size_t ndim;
	const uint64_t *shape;
	const void *src;        /* nbytes bytes to write (may be NULL if 0) */
	uint64_t nbytes;
	uint64_t offset;        /* out: absolute offset of the data in the file */
	uint64_t xxh3;          /* out: XXH3-64 of the bytes */
	struct store_src *hsrc;         /* src lies in this mapping (the same
	                                 * for every tensor of a call), or NULL */
	uint64_t *chunks;       /* out: XXH3-64 of each STORE_SUM_CHUNK chunk
	                         * (malloc'd, the caller's; freed and replaced
	                         * by a write), NULL for a tensor of one chunk
	                         * (chunksum.h); NULL or malloc'd on entry */
	size_t nchunks;
};

/* Write the complete safetensors file dirfd/fname (O_EXCL, mode filemode):
 * 8-byte LE header length, JSON header {"__metadata__":{"format":"pt"},
 * name: {dtype, shape, data_offsets}} padded with spaces so the data section
 * starts at a multiple of STORE_PAGE, each tensor at a multiple of
 * STORE_TENSOR_ALIGN (zero padding), then fsync. Fills offset, xxh3 and
 * the chunk sums. On error the partial file is unlinked and no chunk sums
 * are left allocated. Errors: CKPT_ENOSPC, CKPT_EIO,
 * CKPT_EACCES. */
int store_write_safetensors(const struct store_backend *be, int dirfd,
    const char *fname, mode_t filemode, struct store_tensor *t, size_t n,
    ckd_err *e);
int store_write_safetensors_nosync(const struct store_backend *be, int dirfd,
    const char *fname, mode_t filemode, struct store_tensor *t, size_t n,
    struct store_sync *b, ckd_err *e);

/* For every array leaf of item: open its file (once per distinct file,
 * O_RDONLY|O_NOFOLLOW|O_CLOEXEC relative to itemfd), parse the safetensors
 * header (bounded: header <= 100 MiB, data within file size), find the
 * leaf's tensor, check dtype/shape/nbytes agree with the leaf, and set
 * leaf->offset (absolute) and leaf->fd_index = fd_base + index in fds[].
 * Appends opened fds to fds[*nfds..maxfds). Errors: CKPT_ECORRUPT,
 * CKPT_ETOOBIG (more files than maxfds), CKPT_EACCES, CKPT_EIO. On error
 * the fds it opened are closed and *nfds is unchanged. */
int store_open_item_files(const struct store_backend *be, int itemfd,
    Ckpt__Item *item, int *fds, size_t *nfds, size_t maxfds, ckd_err *e);

/* Read every array of item (after store_open_item_files) and compare its
 * XXH3 with the stored one. Problems are reported through cb (one call per
 * bad leaf, with the leaf's tensor name); returns 0 when all match,
 * CKPT_ECORRUPT when any did not, another code on I/O errors. */
typedef void (*store_problem_cb)(void *arg, const char *tensor,
    const char *msg);
int store_verify_item(const struct store_backend *be, const Ckpt__Item *item,
    const int *fds, store_problem_cb cb, void *arg, ckd_err *e);

#endif
