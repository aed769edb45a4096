/*
 * restore.c - ckpt_restore / ckpt_item_metadata and ckpt_restored.
 *
 * The daemon resolves the step and answers with the items' leaves and the
 * data files as fds (Leaf.fd_index, absolute Leaf.offset). Each file is
 * mapped once, private (copy-on-write: whoever holds a view may write it
 * without changing the file or another view); the fds stay open until the
 * copies are done.
 * Each array is then copied into a target buffer or a new 64-byte aligned
 * allocation (cast when the target dtype differs), or handed out as a view
 * into the mapping (zero copy; the tree keeps the mapping alive). Plain
 * copies use pread() from the fd rather than the mapping: the page cache of
 * files the daemon wrote with O_DIRECT is filled by small folios, and
 * faulting them into a mapping page by page costs as much as the copy
 * itself, while pread() copies straight from the page cache. XXH3-64 of the
 * stored bytes is checked unless disabled (on the destination, just after
 * each chunk is read; views: only when verification was asked for).
 *
 * Copies, casts and checksums are not done while the trees are built: each
 * array becomes a job, and once every item is built the jobs run on a few
 * threads (restore_run). Work is split by the restore's total size: whole
 * arrays are units (the hash and the copy are fused in cache-sized chunks
 * so the source is read from memory once); an array larger than its
 * thread's share is split into a hash unit (streamed in order by one
 * thread) and copy chunks that any thread takes. Checksums are compared in
 * leaf order afterwards, so the first corrupt tensor is the one reported.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
#if defined(__x86_64__)
/* libxxhash picks the widest vector unit at run time (AVX2/AVX-512: about
 * 3-4x the SSE2 baseline here), which keeps checksums off the copy's path */
#include <xxh_x86dispatch.h>
#endif

#include "internal.h"

/* Hash-then-copy granularity: the source chunk stays in cache between. */
#define FUSE_CHUNK (256u << 10)
/* ... of streaming copies, whose next chunk is prefetched meanwhile: a
 * few pages, so that the chunk hashed stays in L1 (measured on 256 MiB:
 * hash and copy together take 1.2x the copy alone, against 1.45x in
 * 256 KiB chunks). */
#define FUSE_STREAM_CHUNK (4u << 10)
/* Source rows a piece stream hashes, then copies out of, at a time. */
#define PIECE_BLOCK (64u << 10)
/* Copy units of split arrays. */
#define SPLIT_CHUNK (8u << 20)
/* Restores moving at least this many bytes use several threads. */
#define RESTORE_PAR_MIN (4u << 20)

/* One array to copy (and/or hash). */
struct rjob {
	const char *src;
	char *dst;              /* NULL: hash only (a verified view) */
	int fd;                 /* >= 0: plain copies pread() from here */
	uint64_t foff;          /* file offset of src */
	int rerr;               /* errno of a failed pread */
	size_t n;               /* stored bytes */
	ckpt_dtype from, to;
	int verify;             /* hash and compare with lf->xxh3 */
	uint64_t hash;
	/* A piece stream (dst NULL): the piece is hashed in blocks of rows,
	 * and the piece copies it owns run on each block while it is in
	 * cache: w->pcord[pcfirst, pcfirst + pcnum) index them in w->pc. */
	size_t rowbytes;        /* bytes of one row of the piece (dim 0) */
	size_t pcfirst, pcnum;
	/* A piece read in part whose leaf has chunk sums: only the chunks
	 * holding [vlo, vhi) (chunk-aligned) are hashed, each compared with
	 * its own sum; badchunk is 1 + the first that differs (atomic). */
	int chunked;
	size_t vlo, vhi;
	size_t badchunk;
	const Ckpt__Leaf *lf;
	const char *ps;         /* path, owned by the restored tree */
	const char *item;
};

enum { RU_WHOLE, RU_HASH, RU_COPY, RU_CHUNKS };

struct runit {
	size_t job;
	size_t off, n;          /* RU_COPY: range of the stored bytes */
	int kind;
};

/* A part of a piece copy (pieces of global arrays): the region (roff,
 * rshape) from the box src into the box dst. */
struct pcopy {
	int nd;
	const char *src;
	void *dst;
	ckpt_dtype sdt, ddt;
	int64_t roff[CKPT_MAX_NDIM], rshape[CKPT_MAX_NDIM];
	int64_t soff[CKPT_MAX_NDIM], sshape[CKPT_MAX_NDIM];
	int64_t doff[CKPT_MAX_NDIM], dshape[CKPT_MAX_NDIM];
	long owner;             /* the job of its piece stream, or -1 */
};

struct rwork {
	struct rjob *jobs;
	size_t njobs, cap;
	struct runit *units;
	size_t nunits;
	size_t next;            /* next unit (atomic) */
	struct pcopy *pc;       /* piece copies, after the units */
	size_t npc, pccap, pcbytes;
	size_t pcnext;          /* next piece copy (atomic) */
	size_t *pcord;          /* piece copies by owner (restore_run) */
};

struct ritem_arg {
	char *name;
	const ckpt_tree *target;
	int partial;
};

struct ckpt_restore_args {
	struct ritem_arg *items;
	size_t n;
	char *dir;
	int zero_copy;
	int verify;
	int verify_set;         /* set_verify was called */
	int metadata_only;      /* like ckpt_item_metadata */
};

struct ritem {
	char *name;
	ckpt_handler handler;
	ckpt_tree *tree;
	char *json;
};

struct ckpt_restored {
	uint64_t step;
	struct ritem *items;
	size_t n;
	char *dir;
};

/* ---- restore args ---------------------------------------------------------------- */

CKPT_API ckpt_restore_args *
ckpt_restore_args_new(void)
{
	ckpt_restore_args *r = calloc(1, sizeof *r);

	if (r != NULL)
		r->verify = 1;
	return r;
}

CKPT_API void
ckpt_restore_args_free(ckpt_restore_args *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->n; i++)
		free(r->items[i].name);
	free(r->items);
	free(r->dir);
	free(r);
}

CKPT_API int
ckpt_restore_args_add_item(ckpt_restore_args *r, const char *name,
    const ckpt_tree *target, int partial)
{
	struct ritem_arg *ni;
	size_t i;

	if (r == NULL)
		return CKPT_EINVAL;
	if (name == NULL)
		name = "default";
	if (*name == '\0' || strlen(name) > 255 || strchr(name, '/') != NULL)
		return CKPT_EINVAL;
	for (i = 0; i < r->n; i++)
		if (strcmp(r->items[i].name, name) == 0)
			return CKPT_EINVAL;
	if ((ni = realloc(r->items, (r->n + 1) * sizeof *ni)) == NULL)
		return CKPT_ENOMEM;
	r->items = ni;
	if ((ni[r->n].name = strdup(name)) == NULL)
		return CKPT_ENOMEM;
	ni[r->n].target = target;
	ni[r->n].partial = partial != 0;
	r->n++;
	return 0;
}

CKPT_API int
ckpt_restore_args_set_directory(ckpt_restore_args *r, const char *dir)
{
	char *s = NULL;

	if (r == NULL || (dir != NULL && *dir == '\0'))
		return CKPT_EINVAL;
	if (dir != NULL) {
		/* As a manager's root: a "scheme://" name goes as it is. */
		if (dir[0] == '/' || strstr(dir, "://") != NULL) {
			s = strdup(dir);
		} else {
			char *cwd = getcwd(NULL, 0);
			if (cwd == NULL)
				return CKPT_EIO;
			if (asprintf(&s, "%s/%s", cwd, dir) < 0)
				s = NULL;
			free(cwd);
		}
		if (s == NULL)
			return CKPT_ENOMEM;
	}
	free(r->dir);
	r->dir = s;
	return 0;
}

CKPT_API int
ckpt_restore_args_set_zero_copy(ckpt_restore_args *r, int on)
{
	if (r == NULL)
		return CKPT_EINVAL;
	r->zero_copy = on != 0;
	return 0;
}

CKPT_API int
ckpt_restore_args_set_verify(ckpt_restore_args *r, int on)
{
	if (r == NULL)
		return CKPT_EINVAL;
	r->verify = on != 0;
	r->verify_set = 1;
	return 0;
}

CKPT_API int
ckpt_restore_args_set_metadata_only(ckpt_restore_args *r, int on)
{
	if (r == NULL)
		return CKPT_EINVAL;
	r->metadata_only = on != 0;
	return 0;
}

/* ---- restored ----------------------------------------------------------------------- */

CKPT_API void
ckpt_restored_free(ckpt_restored *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->n; i++) {
		free(r->items[i].name);
		ckpt_tree_free(r->items[i].tree);
		free(r->items[i].json);
	}
	free(r->items);
	free(r->dir);
	free(r);
}

CKPT_API uint64_t
ckpt_restored_step(const ckpt_restored *r)
{
	return r != NULL ? r->step : 0;
}

CKPT_API size_t
ckpt_restored_nitems(const ckpt_restored *r)
{
	return r != NULL ? r->n : 0;
}

CKPT_API const char *
ckpt_restored_item_name(const ckpt_restored *r, size_t i)
{
	return r != NULL && i < r->n ? r->items[i].name : NULL;
}

CKPT_API ckpt_handler
ckpt_restored_item_handler(const ckpt_restored *r, size_t i)
{
	return r != NULL && i < r->n ? r->items[i].handler :
	    CKPT_HANDLER_UNSPECIFIED;
}

CKPT_API const ckpt_tree *
ckpt_restored_item_tree(const ckpt_restored *r, size_t i)
{
	return r != NULL && i < r->n ? r->items[i].tree : NULL;
}

CKPT_API const char *
ckpt_restored_item_json(const ckpt_restored *r, size_t i)
{
	return r != NULL && i < r->n ? r->items[i].json : NULL;
}

CKPT_API long
ckpt_restored_find(const ckpt_restored *r, const char *name)
{
	size_t i;

	if (r == NULL)
		return -1;
	if (name == NULL)
		name = "default";
	for (i = 0; i < r->n; i++)
		if (strcmp(r->items[i].name, name) == 0)
			return (long)i;
	return -1;
}

CKPT_API const char *
ckpt_restored_directory(const ckpt_restored *r)
{
	return r != NULL ? r->dir : NULL;
}

/* ---- building trees ------------------------------------------------------------------ */

struct rctx {
	ckpt_client *c;
	struct ckpt_manager *m;
	struct mapping **maps;
	size_t nmaps;
	int metadata_only;
	int zero_copy;
	int verify;             /* copies */
	int verify_views;       /* zero-copy views */
	const char *step_dir;
	const char *item;
	struct rwork *w;
	const int *fds;         /* the reply's files, open during the copies */
	size_t nfds;
};

static void
fmt_shape(char *buf, size_t len, size_t ndim, const uint64_t *u,
    const int64_t *s)
{
	size_t i, off = 0;

	off += (size_t)snprintf(buf, len, "(");
	for (i = 0; i < ndim && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%" PRIu64,
		    i > 0 ? ", " : "", u != NULL ? u[i] : (uint64_t)s[i]);
	if (off < len)
		snprintf(buf + off, len - off, ndim == 1 ? ",)" : ")");
}

static void *
alloc_aligned(size_t n)
{
	void *p = NULL;

	if (n == 0)
		return NULL;
	if (posix_memalign(&p, CKPT_ALIGN,
	    (n + CKPT_ALIGN - 1) & ~(size_t)(CKPT_ALIGN - 1)) != 0)
		return NULL;
	return p;
}

static int
check_sum(struct rctx *x, const struct rjob *j)
{
	const Ckpt__Leaf *lf = j->lf;

	if (j->rerr != 0)
		return cl_fail(x->c, x->m, j->rerr == EIO ? CKPT_EIO :
		    CKPT_ECORRUPT, "reading tensor '%s' from %s/%s: %s",
		    j->ps != NULL ? j->ps : "?", j->item,
		    lf->file != NULL ? lf->file : "?", j->rerr == EIO ?
		    strerror(EIO) : "the file is shorter than its header says");
	if (j->verify && j->chunked) {
		if (j->badchunk == 0)
			return 0;
		return cl_fail(x->c, x->m, CKPT_ECORRUPT,
		    "checksum mismatch for tensor '%s' (bytes %" PRIu64 "..%"
		    PRIu64 " of %zu, chunk %zu) in %s%s%s%s%s",
		    j->ps != NULL ? j->ps : "?",
		    (uint64_t)(j->badchunk - 1) * lf->chunk_bytes,
		    (uint64_t)j->badchunk * lf->chunk_bytes < j->n ?
		    (uint64_t)j->badchunk * lf->chunk_bytes : (uint64_t)j->n,
		    j->n, j->badchunk - 1,
		    x->step_dir != NULL ? x->step_dir : "",
		    x->step_dir != NULL ? "/" : "", j->item,
		    lf->file != NULL ? "/" : "", lf->file != NULL ? lf->file : "");
	}
	if (!j->verify || j->hash == lf->xxh3)
		return 0;
	return cl_fail(x->c, x->m, CKPT_ECORRUPT,
	    "checksum mismatch for tensor '%s' in %s%s%s%s%s",
	    j->ps != NULL ? j->ps : "?",
	    x->step_dir != NULL ? x->step_dir : "",
	    x->step_dir != NULL ? "/" : "", j->item,
	    lf->file != NULL ? "/" : "", lf->file != NULL ? lf->file : "");
}

/* Queue an array: copy (cast when from != to) src into dst, hash src. */
static int
add_job(struct rctx *x, const Ckpt__Leaf *lf, const char *ps, const void *src,
    void *dst, size_t n, ckpt_dtype from, ckpt_dtype to, int verify)
{
	struct rwork *w = x->w;
	struct rjob *j;

	if (!dst && !(verify && lf->has_xxh3))
		return 0;
	if (w->njobs == w->cap) {
		size_t nc = w->cap > 0 ? w->cap * 2 : 64;
		struct rjob *nj = realloc(w->jobs, nc * sizeof *nj);
		if (nj == NULL)
			return cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
		w->jobs = nj;
		w->cap = nc;
	}
	j = &w->jobs[w->njobs++];
	j->src = src;
	j->dst = dst;
	j->fd = -1;
	j->foff = 0;
	j->rerr = 0;
	/* pread() only when the destination has the file offset's alignment
	 * within a cache line: the kernel's copy into a buffer a few bytes
	 * ahead of its source (e.g. numpy's data at 16 past a page) runs at
	 * a quarter of its speed, while the streaming copy from the mapping
	 * does not care. */
	if (dst != NULL && from == to && lf->has_fd_index &&
	    lf->fd_index < x->nfds &&
	    (((uintptr_t)dst - (uintptr_t)lf->offset) & 63) == 0) {
		j->fd = x->fds[lf->fd_index];
		j->foff = lf->offset;
	}
	j->n = n;
	j->from = from;
	j->to = to;
	j->verify = verify && lf->has_xxh3;
	j->hash = 0;
	j->rowbytes = 0;
	j->pcfirst = j->pcnum = 0;
	j->chunked = 0;
	j->vlo = 0;
	j->vhi = n;
	j->badchunk = 0;
	j->lf = lf;
	j->ps = ps;
	j->item = x->item;
	return 0;
}

/* Read stored bytes [off, off + n) of j from its file into dst. */
static void
job_pread(struct rjob *j, size_t off, size_t n)
{
	while (n > 0) {
		ssize_t k = pread(j->fd, j->dst + off, n, (off_t)(j->foff + off));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			j->rerr = k < 0 ? errno : ENODATA;
			return;
		}
		off += (size_t)k;
		n -= (size_t)k;
	}
}

/* Copy (or cast) stored bytes [off, off + n) of j; off, n whole elements. */
static void
job_copy(struct rjob *j, size_t off, size_t n)
{
	size_t fs, ts;

	if (j->dst == NULL || n == 0)
		return;
	if (j->fd >= 0) {
		job_pread(j, off, n);
		return;
	}
	if (j->from == j->to) {
		if (n >= FUSE_CHUNK) {
			copy_nt(j->dst + off, j->src + off, n);
			copy_nt_fence();
		} else {
			memcpy(j->dst + off, j->src + off, n);
		}
		return;
	}
	fs = ckpt_dtype_size(j->from);
	ts = ckpt_dtype_size(j->to);
	dtype_cast(j->from, j->src + off, j->to, j->dst + off / fs * ts, n / fs);
}

/* A chunk size near want holding whole elements of j's stored dtype. */
static size_t
job_chunk(const struct rjob *j, size_t want)
{
	size_t fs = ckpt_dtype_size(j->from);

	return fs > 1 && want >= fs ? want - want % fs : want;
}

static void
pcopy_run(const struct pcopy *p)
{
	piece_copy(p->nd, p->roff, p->rshape, p->src, p->sdt, p->soff,
	    p->sshape, p->dst, p->ddt, p->doff, p->dshape);
}

/* Note chunk i of j as bad, keeping the first. */
static void
job_bad_chunk(struct rjob *j, size_t i)
{
	size_t cur = __atomic_load_n(&j->badchunk, __ATOMIC_RELAXED);

	while ((cur == 0 || cur > i + 1) &&
	    !__atomic_compare_exchange_n(&j->badchunk, &cur, i + 1, 0,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

/* Hash the stored bytes [off, off + n) of a chunked job, in order (off
 * at a chunk boundary, or where the previous call ended), and compare
 * each chunk that ends here with its sum. */
static void
job_chunks(struct rjob *j, XXH3_state_t *st, size_t off, size_t n)
{
	size_t cb = (size_t)j->lf->chunk_bytes, at, k, clen, i;
	uint64_t h;

	while (n > 0) {
		i = off / cb;
		at = off - i * cb;
		clen = j->n - i * cb < cb ? j->n - i * cb : cb;
		k = clen - at < n ? clen - at : n;
		if (at == 0 && k == clen) {
			h = XXH3_64bits(j->src + off, k);
		} else {
			if (at == 0)
				XXH3_64bits_reset(st);
			XXH3_64bits_update(st, j->src + off, k);
			if (at + k < clen) {
				off += k;
				n -= k;
				continue;
			}
			h = XXH3_64bits_digest(st);
		}
		if (h != j->lf->chunk_xxh3[i])
			job_bad_chunk(j, i);
		off += k;
		n -= k;
	}
}

/* A piece read only in part: hash a block of its rows, then run the
 * parts of its copies that lie in those rows while the block is in
 * cache, so the piece is read from memory once. */
static void
job_piece_stream(const struct rwork *w, struct rjob *j)
{
	XXH3_state_t st;
	size_t rows = j->rowbytes > 0 ? j->n / j->rowbytes : 0, per, r0, r1, k;

	size_t rfirst = 0, b0, b1;

	per = j->rowbytes > 0 && j->rowbytes < PIECE_BLOCK ?
	    PIECE_BLOCK / j->rowbytes : 1;
	XXH3_64bits_reset(&st);
	if (j->chunked) {
		/* the rows of the chunks to verify, which hold the copies */
		rfirst = j->vlo / j->rowbytes;
		rows = (j->vhi + j->rowbytes - 1) / j->rowbytes;
	}
	for (r0 = rfirst; r0 < rows; r0 = r1) {
		r1 = rows - r0 > per ? r0 + per : rows;
		if (j->chunked) {
			b0 = r0 * j->rowbytes < j->vlo ? j->vlo :
			    r0 * j->rowbytes;
			b1 = r1 * j->rowbytes > j->vhi ? j->vhi :
			    r1 * j->rowbytes;
			job_chunks(j, &st, b0, b1 - b0);
		} else {
			XXH3_64bits_update(&st, j->src + r0 * j->rowbytes,
			    (r1 - r0) * j->rowbytes);
		}
		for (k = 0; k < j->pcnum; k++) {
			const struct pcopy *p = &w->pc[w->pcord[j->pcfirst + k]];
			int64_t lo = p->roff[0] - p->soff[0];
			int64_t hi = lo + p->rshape[0];
			struct pcopy c;

			if (hi <= (int64_t)r0 || lo >= (int64_t)r1)
				continue;
			c = *p;
			if (lo < (int64_t)r0)
				lo = (int64_t)r0;
			if (hi > (int64_t)r1)
				hi = (int64_t)r1;
			c.roff[0] = p->soff[0] + lo;
			c.rshape[0] = hi - lo;
			pcopy_run(&c);
		}
	}
	if (rows == 0)          /* no rows: the copies are empty too */
		for (k = 0; k < j->pcnum; k++)
			pcopy_run(&w->pc[w->pcord[j->pcfirst + k]]);
	j->hash = XXH3_64bits_digest(&st);
}

/* The whole array: hash each cache-sized chunk, then copy it. */
static void
job_whole(const struct rwork *w, struct rjob *j)
{
	XXH3_state_t st;
	size_t off, ch;
	int stream = j->from == j->to && j->n >= FUSE_CHUNK;

	if (!j->verify) {
		job_copy(j, 0, j->n);
		return;
	}
	if (j->dst == NULL) {
		if (j->pcnum > 0)
			job_piece_stream(w, j);
		else if (j->chunked)
			job_chunks(j, &st, j->vlo, j->vhi - j->vlo);
		else
			j->hash = XXH3_64bits(j->src, j->n);
		return;
	}
	ch = job_chunk(j, FUSE_CHUNK);
	XXH3_64bits_reset(&st);
	if (j->fd >= 0) {
		/* read a chunk into dst, hash it there while it is in cache */
		for (off = 0; off < j->n && j->rerr == 0; off += ch) {
			size_t k = j->n - off < ch ? j->n - off : ch;

			job_pread(j, off, k);
			XXH3_64bits_update(&st, j->dst + off, k);
		}
		j->hash = XXH3_64bits_digest(&st);
		return;
	}
	if (stream) {
		/* Hash a small chunk (loaded from memory into L1), then
		 * stream it out with stores that neither read nor keep the
		 * destination, prefetching the next chunk meanwhile: the
		 * hash then reads from cache, and the source is read from
		 * memory once while the stores go on. */
		for (off = 0; off < j->n; off += FUSE_STREAM_CHUNK) {
			size_t k = j->n - off < FUSE_STREAM_CHUNK ? j->n - off :
			    FUSE_STREAM_CHUNK;
			const char *next = j->n - off - k >= k ?
			    j->src + off + k : NULL;

			XXH3_64bits_update(&st, j->src + off, k);
			copy_nt_ahead(j->dst + off, j->src + off, k, next);
		}
		copy_nt_fence();
		j->hash = XXH3_64bits_digest(&st);
		return;
	}
	for (off = 0; off < j->n; off += ch) {
		size_t k = j->n - off < ch ? j->n - off : ch;
		XXH3_64bits_update(&st, j->src + off, k);
		/* the chunk was just read (it is in cache) */
		job_copy(j, off, k);
	}
	j->hash = XXH3_64bits_digest(&st);
}

static void *
restore_worker(void *arg)
{
	struct rwork *w = arg;
	size_t i;

	while ((i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED)) <
	    w->nunits) {
		const struct runit *u = &w->units[i];
		struct rjob *j = &w->jobs[u->job];

		switch (u->kind) {
		case RU_WHOLE:
			job_whole(w, j);
			break;
		case RU_HASH:
			j->hash = XXH3_64bits(j->src, j->n);
			break;
		case RU_CHUNKS: {
			XXH3_state_t st;

			job_chunks(j, &st, u->off, u->n);
			break;
		}
		default:
			job_copy(j, u->off, u->n);
			break;
		}
	}
	while ((i = __atomic_fetch_add(&w->pcnext, 1, __ATOMIC_RELAXED)) <
	    w->npc)
		if (w->pc[i].owner < 0)
			pcopy_run(&w->pc[i]);
	return NULL;
}

static int
add_unit(struct rwork *w, size_t *cap, size_t job, size_t off, size_t n,
    int kind)
{
	if (w->nunits == *cap) {
		size_t nc = *cap > 0 ? *cap * 2 : 128;
		struct runit *nu = realloc(w->units, nc * sizeof *nu);
		if (nu == NULL)
			return -1;
		w->units = nu;
		*cap = nc;
	}
	w->units[w->nunits].job = job;
	w->units[w->nunits].off = off;
	w->units[w->nunits].n = n;
	w->units[w->nunits].kind = kind;
	w->nunits++;
	return 0;
}

/*
 * The piece copies owned by a piece stream, in w->pcord by owner. Piece
 * streams run one per thread; when they and the whole arrays to copy (a
 * saved piece lying wholly in a target) are fewer than the threads, the
 * streams' copies go back to the shared queue (cut into parts any thread
 * takes) and the pieces are hashed alone, which reads them twice;
 * otherwise the other threads have the whole arrays meanwhile.
 */
static int
pieces_streams(struct rwork *w, size_t nt)
{
	size_t i, n = 0, other = 0, at = 0;

	for (i = 0; i < w->njobs; i++) {
		n += w->jobs[i].rowbytes > 0;
		other += w->jobs[i].rowbytes == 0 && w->jobs[i].dst != NULL;
	}
	if (n == 0)
		return 0;
	if (n + other < nt) {
		for (i = 0; i < w->npc; i++)
			w->pc[i].owner = -1;
		return 0;
	}
	if ((w->pcord = malloc((w->npc > 0 ? w->npc : 1) *
	    sizeof *w->pcord)) == NULL)
		return -1;
	for (i = 0; i < w->npc; i++)
		if (w->pc[i].owner >= 0)
			w->jobs[w->pc[i].owner].pcnum++;
	for (i = 0; i < w->njobs; i++) {
		w->jobs[i].pcfirst = at;
		at += w->jobs[i].pcnum;
		w->jobs[i].pcnum = 0;
	}
	for (i = 0; i < w->npc; i++)
		if (w->pc[i].owner >= 0) {
			struct rjob *j = &w->jobs[w->pc[i].owner];

			w->pcord[j->pcfirst + j->pcnum++] = i;
		}
	return 0;
}

/* Run every queued job, then compare checksums in order. */
static int
restore_run(struct rctx *x)
{
	struct rwork *w = x->w;
	pthread_t th[CKPT_PAR_COPY_THREADS];
	int started[CKPT_PAR_COPY_THREADS] = { 0 };
	size_t total = 0, nt = 1, cap = 0, i, pass;
	int r;

	if (w->njobs == 0 && w->npc == 0)
		return 0;
	for (i = 0; i < w->njobs; i++)
		total += w->jobs[i].n;
	total += w->pcbytes;
	if (total >= RESTORE_PAR_MIN) {
		int ncpu = get_nprocs();
		nt = CKPT_PAR_COPY_THREADS;
		if (ncpu > 0 && (size_t)ncpu < nt)
			nt = (size_t)ncpu;
	}
	if (pieces_streams(w, nt) != 0)
		goto nomem;
	if (nt <= 1) {
		for (i = 0; i < w->njobs; i++)
			job_whole(w, &w->jobs[i]);
		for (i = 0; i < w->npc; i++)
			if (w->pc[i].owner < 0)
				pcopy_run(&w->pc[i]);
		goto check;
	}
	/* pass 0: hash units of split arrays first (the longest units);
	 * pass 1: whole arrays and copy chunks */
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < w->njobs; i++) {
			struct rjob *j = &w->jobs[i];
			int split = j->pcnum == 0 && j->n >= 2 * SPLIT_CHUNK &&
			    (!j->verify || j->n > total / nt);
			size_t off, ch;

			if (j->chunked && j->pcnum == 0) {
				/* chunks hashed alone: runs of whole chunks,
				 * any thread takes one */
				ch = (size_t)j->lf->chunk_bytes;
				if (ch < SPLIT_CHUNK)
					ch = SPLIT_CHUNK / ch * ch;
				for (off = j->vlo; pass == 0 && off < j->vhi;
				    off += ch)
					if (add_unit(w, &cap, i, off, j->vhi -
					    off < ch ? j->vhi - off : ch,
					    RU_CHUNKS) != 0)
						goto nomem;
				continue;
			}
			if (pass == 0) {
				if (split && j->verify &&
				    add_unit(w, &cap, i, 0, j->n, RU_HASH) != 0)
					goto nomem;
				continue;
			}
			if (!split) {
				if (add_unit(w, &cap, i, 0, j->n, RU_WHOLE) != 0)
					goto nomem;
				continue;
			}
			if (j->dst == NULL)
				continue;
			ch = job_chunk(j, SPLIT_CHUNK);
			for (off = 0; off < j->n; off += ch)
				if (add_unit(w, &cap, i, off, j->n - off < ch ?
				    j->n - off : ch, RU_COPY) != 0)
					goto nomem;
		}
	}
	w->next = 0;
	w->pcnext = 0;
	for (i = 1; i < nt; i++)
		started[i] = pthread_create(&th[i], NULL, restore_worker, w) == 0;
	restore_worker(w);
	for (i = 1; i < nt; i++)
		if (started[i])
			pthread_join(th[i], NULL);
check:
	for (i = 0; i < w->njobs; i++)
		if ((r = check_sum(x, &w->jobs[i])) != 0)
			return r;
	return 0;
nomem:
	return cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
}

/* A stored scalar restored into a 0-d array target. */
static int
scalar_to_target(struct rctx *x, const Ckpt__Leaf *lf, const struct tleaf *tg,
    struct tleaf *l, const char *ps)
{
	ckpt_dtype from;
	int64_t iv;
	double fv;
	uint8_t bv;
	const void *src;
	void *dst;
	size_t sz = ckpt_dtype_size(tg->dtype);

	switch (lf->kind) {
	case CKPT__LEAF_KIND__LEAF_INT:
		iv = lf->int_value; src = &iv; from = CKPT_I64; break;
	case CKPT__LEAF_KIND__LEAF_FLOAT:
		fv = lf->float_value; src = &fv; from = CKPT_F64; break;
	case CKPT__LEAF_KIND__LEAF_BOOL:
		bv = lf->bool_value != 0; src = &bv; from = CKPT_BOOL; break;
	default:
		return cl_fail(x->c, x->m, CKPT_EMISMATCH, "leaf '%s' is not a "
		    "number in the checkpoint but the target is an array", ps);
	}
	if (tg->ndim != 0)
		return cl_fail(x->c, x->m, CKPT_EMISMATCH, "shape mismatch for "
		    "'%s': the checkpoint holds a scalar, the target has %d "
		    "dimensions", ps, tg->ndim);
	if (!dtype_can_cast(from, tg->dtype))
		return cl_fail(x->c, x->m, CKPT_EDTYPE, "cannot cast '%s' from "
		    "%s to %s", ps, ckpt_dtype_name(from),
		    ckpt_dtype_name(tg->dtype));
	if (tg->dst != NULL) {
		dst = tg->dst;
	} else {
		if ((dst = alloc_aligned(sz)) == NULL)
			return cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
		l->owned = dst;
	}
	dtype_cast(from, src, tg->dtype, dst, 1);
	l->kind = CKPT_LEAF_ARRAY;
	l->dtype = tg->dtype;
	l->ndim = 0;
	l->data = dst;
	l->nbytes = sz;
	return 0;
}

static int
restore_array(struct rctx *x, const Ckpt__Leaf *lf, const struct tleaf *tg,
    struct tleaf *l, const char *ps)
{
	ckpt_dtype dt = (ckpt_dtype)lf->dtype;
	size_t nel, esz, i;
	const char *src;
	struct mapping *mp;
	int ovf, r;

	if (!dtype_valid((int)dt))
		return cl_fail(x->c, x->m, CKPT_EDTYPE,
		    "leaf '%s' has an unknown dtype %d", ps, (int)lf->dtype);
	if (lf->n_shape > CKPT_MAX_NDIM)
		return cl_fail(x->c, x->m, CKPT_ECORRUPT,
		    "leaf '%s' has %zu dimensions", ps, lf->n_shape);
	l->dtype = dt;
	l->ndim = (int)lf->n_shape;
	for (i = 0; i < lf->n_shape; i++) {
		if (lf->shape[i] > (uint64_t)INT64_MAX)
			return cl_fail(x->c, x->m, CKPT_ECORRUPT,
			    "leaf '%s' has an invalid shape", ps);
		l->shape[i] = (int64_t)lf->shape[i];
	}
	nel = tree_nelems(l->ndim, l->shape, &ovf);
	esz = ckpt_dtype_size(dt);
	if (ovf || (nel != 0 && esz > SIZE_MAX / nel) ||
	    (lf->has_nbytes && lf->nbytes != nel * esz))
		return cl_fail(x->c, x->m, CKPT_ECORRUPT,
		    "leaf '%s': size does not match its shape", ps);
	l->nbytes = nel * esz;
	l->xxh3 = lf->xxh3;

	if (tg != NULL && tg->kind == CKPT_LEAF_TARGET) {
		char a[256], b[256];
		if (tg->ndim != l->ndim ||
		    memcmp(tg->shape, l->shape, (size_t)l->ndim * sizeof *l->shape) != 0) {
			fmt_shape(a, sizeof a, lf->n_shape, lf->shape, NULL);
			fmt_shape(b, sizeof b, (size_t)tg->ndim, NULL, tg->shape);
			return cl_fail(x->c, x->m, CKPT_EMISMATCH, "shape mismatch "
			    "for '%s': the checkpoint has %s, the target %s",
			    ps, a, b);
		}
		if (!dtype_can_cast(dt, tg->dtype))
			return cl_fail(x->c, x->m, CKPT_EDTYPE, "cannot cast '%s' "
			    "from %s to %s", ps, ckpt_dtype_name(dt),
			    ckpt_dtype_name(tg->dtype));
	}
	if (x->metadata_only) {
		l->data = NULL;
		return 0;
	}
	if (l->nbytes == 0) {
		l->data = NULL;
		if (tg != NULL && tg->kind == CKPT_LEAF_TARGET) {
			l->dtype = tg->dtype;
			l->data = tg->dst;
		}
		return 0;
	}
	if (!lf->has_fd_index || lf->fd_index >= x->nmaps ||
	    (mp = x->maps[lf->fd_index]) == NULL)
		return cl_fail(x->c, x->m, CKPT_EPROTO,
		    "no data file for leaf '%s'", ps);
	if (lf->offset > mp->len || l->nbytes > mp->len - lf->offset)
		return cl_fail(x->c, x->m, CKPT_ECORRUPT, "tensor '%s' lies "
		    "outside its file %s", ps, lf->file != NULL ? lf->file : "");
	src = (const char *)mp->addr + lf->offset;

	if (tg != NULL && tg->kind == CKPT_LEAF_TARGET) {
		size_t outsz = nel * ckpt_dtype_size(tg->dtype);
		void *dst = tg->dst;
		if (dst == NULL) {
			if ((dst = alloc_aligned(outsz)) == NULL)
				return cl_fail(x->c, x->m, CKPT_ENOMEM,
				    "out of memory (%zu bytes)", outsz);
			l->owned = dst;
		}
		if ((r = add_job(x, lf, l->path_str, src, dst, l->nbytes, dt,
		    tg->dtype, x->verify)) != 0)
			return r;
		l->dtype = tg->dtype;
		l->data = dst;
		l->nbytes = outsz;
		return 0;
	}
	if (x->zero_copy) {
		if (x->verify_views && (r = add_job(x, lf, l->path_str, src,
		    NULL, l->nbytes, dt, dt, 1)) != 0)
			return r;
		l->data = src;
		return 0;
	}
	if ((l->owned = alloc_aligned(l->nbytes)) == NULL)
		return cl_fail(x->c, x->m, CKPT_ENOMEM,
		    "out of memory (%zu bytes)", l->nbytes);
	if ((r = add_job(x, lf, l->path_str, src, l->owned, l->nbytes, dt, dt,
	    x->verify)) != 0)
		return r;
	l->data = l->owned;
	return 0;
}

/* Do two leaves of a reply have the same path? */
static int
leaf_same_path(const Ckpt__Leaf *a, const Ckpt__Leaf *b)
{
	size_t i;

	if (a->n_path != b->n_path)
		return 0;
	for (i = 0; i < a->n_path; i++) {
		const Ckpt__PathElem *p = a->path[i], *q = b->path[i];

		if (p->kind != q->kind || p->index != q->index)
			return 0;
		if ((p->key == NULL) != (q->key == NULL) ||
		    (p->key != NULL && strcmp(p->key, q->key) != 0))
			return 0;
	}
	return 1;
}

/* ---- pieces of global arrays ------------------------------------------------------- */

/* A saved piece (or a whole saved array seen as its only piece). */
struct spiece {
	const Ckpt__Leaf *lf;
	int64_t gshape[CKPT_MAX_NDIM], off[CKPT_MAX_NDIM], shape[CKPT_MAX_NDIM];
	int64_t vol;
	const char *src;        /* NULL when empty */
};

static int
u64s_to_i64s(const uint64_t *u, size_t n, int64_t *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (u[i] > (uint64_t)INT64_MAX)
			return -1;
		out[i] = (int64_t)u[i];
	}
	return 0;
}

/* Check a saved piece against the first one (dtype, ndim, global shape)
 * and find its bytes. */
static int
piece_load(struct rctx *x, const Ckpt__Leaf *lf, const struct spiece *first,
    struct spiece *p, const char *ps)
{
	size_t nd = lf->n_shape, nel, esz = ckpt_dtype_size((ckpt_dtype)lf->dtype);
	struct mapping *mp;
	int ovf;

	memset(p, 0, sizeof *p);
	p->lf = lf;
	if (!dtype_valid((int)lf->dtype))
		return cl_fail(x->c, x->m, CKPT_EDTYPE,
		    "leaf '%s' has an unknown dtype %d", ps, (int)lf->dtype);
	if (nd == 0 || nd > CKPT_MAX_NDIM || (lf->n_global_shape > 0 &&
	    (lf->n_global_shape != nd || lf->n_piece_offsets != nd)))
		return cl_fail(x->c, x->m, CKPT_ECORRUPT, "piece of '%s': "
		    "shape, global shape and offsets disagree", ps);
	if (u64s_to_i64s(lf->shape, nd, p->shape) != 0 ||
	    (lf->n_global_shape > 0 && (u64s_to_i64s(lf->global_shape, nd,
	    p->gshape) != 0 || u64s_to_i64s(lf->piece_offsets, nd,
	    p->off) != 0)))
		return cl_fail(x->c, x->m, CKPT_ECORRUPT,
		    "piece of '%s' has an invalid shape", ps);
	if (lf->n_global_shape == 0)
		memcpy(p->gshape, p->shape, nd * sizeof *p->shape);
	if (piece_check((int)nd, p->gshape, p->off, p->shape) != 0)
		return cl_fail(x->c, x->m, CKPT_ECORRUPT, "a piece of '%s' "
		    "lies outside its global shape", ps);
	if (first != NULL && (first->lf->dtype != lf->dtype ||
	    first->lf->n_shape != nd ||
	    memcmp(first->gshape, p->gshape, nd * sizeof *p->gshape) != 0))
		return cl_fail(x->c, x->m, CKPT_ECORRUPT, "the pieces of '%s' "
		    "disagree on dtype or global shape", ps);
	nel = tree_nelems((int)nd, p->shape, &ovf);
	if (ovf || (nel != 0 && esz > SIZE_MAX / nel) ||
	    (lf->has_nbytes && lf->nbytes != nel * esz))
		return cl_fail(x->c, x->m, CKPT_ECORRUPT,
		    "piece of '%s': size does not match its shape", ps);
	p->vol = (int64_t)nel;
	if (x->metadata_only || nel == 0)
		return 0;
	if (!lf->has_fd_index || lf->fd_index >= x->nmaps ||
	    (mp = x->maps[lf->fd_index]) == NULL)
		return cl_fail(x->c, x->m, CKPT_EPROTO,
		    "no data file for a piece of '%s'", ps);
	if (lf->offset > mp->len || nel * esz > mp->len - lf->offset)
		return cl_fail(x->c, x->m, CKPT_ECORRUPT, "a piece of '%s' lies "
		    "outside its file %s", ps, lf->file != NULL ? lf->file : "");
	p->src = (const char *)mp->addr + lf->offset;
	return 0;
}

/* The saved pieces must tile the global array: no overlap, and their
 * volumes add up to it. */
static int
pieces_tile(struct rctx *x, const struct spiece *sp, size_t n, const char *ps)
{
	int64_t roff[CKPT_MAX_NDIM], rshape[CKPT_MAX_NDIM];
	int nd = (int)sp[0].lf->n_shape, ovf;
	size_t i, j, total = 0, gvol = tree_nelems(nd, sp[0].gshape, &ovf);

	for (i = 0; i < n && !ovf; i++) {
		if ((size_t)sp[i].vol > gvol - total)
			break;          /* more than the global array */
		total += (size_t)sp[i].vol;
		for (j = 0; j < i; j++)
			if (piece_intersect(nd, sp[i].off, sp[i].shape,
			    sp[j].off, sp[j].shape, roff, rshape) > 0)
				return cl_fail(x->c, x->m, CKPT_ECORRUPT,
				    "the saved pieces of '%s' overlap", ps);
	}
	if (ovf || i < n || total != gvol)
		return cl_fail(x->c, x->m, CKPT_ECORRUPT, "the saved pieces of "
		    "'%s' do not cover its global shape", ps);
	return 0;
}

/* Queue the copy of region (roff, rshape) of piece p into the box (off,
 * shape) at dst, cut along the first dimension into parts of about
 * SPLIT_CHUNK bytes that the restore threads share. */
static int
pieces_queue(struct rctx *x, const struct spiece *p, int nd, void *dst,
    ckpt_dtype dt, const int64_t *off, const int64_t *shape,
    const int64_t *roff, const int64_t *rshape)
{
	struct rwork *w = x->w;
	size_t row = ckpt_dtype_size((ckpt_dtype)p->lf->dtype), step;
	int64_t r0;
	int d;

	for (d = 1; d < nd; d++)
		row *= (size_t)rshape[d];
	step = row >= SPLIT_CHUNK ? 1 : SPLIT_CHUNK / (row > 0 ? row : 1);
	for (r0 = 0; r0 < rshape[0]; r0 += (int64_t)step) {
		struct pcopy *c;

		if (w->npc == w->pccap) {
			size_t nc = w->pccap > 0 ? w->pccap * 2 : 16;
			struct pcopy *np = realloc(w->pc, nc * sizeof *np);
			if (np == NULL)
				return cl_fail(x->c, x->m, CKPT_ENOMEM,
				    "out of memory");
			w->pc = np;
			w->pccap = nc;
		}
		c = &w->pc[w->npc++];
		c->owner = -1;
		c->nd = nd;
		c->src = p->src;
		c->sdt = (ckpt_dtype)p->lf->dtype;
		c->dst = dst;
		c->ddt = dt;
		memcpy(c->roff, roff, (size_t)nd * sizeof *roff);
		memcpy(c->rshape, rshape, (size_t)nd * sizeof *rshape);
		memcpy(c->soff, p->off, (size_t)nd * sizeof *roff);
		memcpy(c->sshape, p->shape, (size_t)nd * sizeof *roff);
		memcpy(c->doff, off, (size_t)nd * sizeof *roff);
		memcpy(c->dshape, shape, (size_t)nd * sizeof *roff);
		c->roff[0] = roff[0] + r0;
		c->rshape[0] = rshape[0] - r0 < (int64_t)step ?
		    rshape[0] - r0 : (int64_t)step;
		w->pcbytes += (size_t)c->rshape[0] * row;
	}
	return 0;
}

/* Whether piece p lies wholly inside the box (off, shape) with its bytes
 * contiguous there (it spans the box in every dimension but the first);
 * *at: its first element's index in the box. */
static int
piece_direct(const struct spiece *p, int nd, const int64_t *off,
    const int64_t *shape, size_t *at)
{
	size_t row = 1;
	int d;

	for (d = 0; d < nd; d++)
		if (p->off[d] < off[d] ||
		    p->off[d] + p->shape[d] > off[d] + shape[d] ||
		    (d > 0 && p->shape[d] != shape[d]))
			return 0;
	for (d = 1; d < nd; d++)
		row *= (size_t)shape[d];
	*at = (size_t)(p->off[0] - off[0]) * row;
	return 1;
}

/*
 * Fill the box (off, shape) of dt at dst from the overlapping pieces (the
 * copies run with the restore's other copies, restore_run). A piece lying
 * wholly and contiguously in the box is an ordinary job: read from its
 * file straight into place (or cast from the mapping), its checksum
 * fused with the copy (checked[i] then set). used[i]: piece i is read.
 */
static int
pieces_fill(struct rctx *x, const struct spiece *sp, size_t n, int nd,
    void *dst, ckpt_dtype dt, const int64_t *off, const int64_t *shape,
    const char *ps, unsigned char *used, unsigned char *checked)
{
	int64_t roff[CKPT_MAX_NDIM], rshape[CKPT_MAX_NDIM];
	ckpt_dtype sdt;
	size_t i, at;
	int r;

	for (i = 0; i < n; i++) {
		if (sp[i].src == NULL || piece_intersect(nd, sp[i].off,
		    sp[i].shape, off, shape, roff, rshape) == 0)
			continue;
		used[i] = 1;
		sdt = (ckpt_dtype)sp[i].lf->dtype;
		if (piece_direct(&sp[i], nd, off, shape, &at)) {
			if ((r = add_job(x, sp[i].lf, ps, sp[i].src,
			    (char *)dst + at * ckpt_dtype_size(dt),
			    (size_t)sp[i].vol * ckpt_dtype_size(sdt), sdt, dt,
			    x->verify && !checked[i])) != 0)
				return r;
			checked[i] |= (unsigned char)(x->verify != 0);
			continue;
		}
		if ((r = pieces_queue(x, &sp[i], nd, dst, dt, off, shape, roff,
		    rshape)) != 0)
			return r;
	}
	return 0;
}

/* Allocate (or take the target's) buffer for nel elements of dt. */
static void *
pieces_dst(struct rctx *x, const struct tleaf *tg, struct tleaf *l,
    size_t nel, ckpt_dtype dt)
{
	size_t n = nel * ckpt_dtype_size(dt);
	void *dst;

	l->nbytes = n;
	if (tg != NULL && tg->dst != NULL)
		return tg->dst;
	if (n == 0)
		return NULL;
	if ((dst = alloc_aligned(n)) == NULL) {
		cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory (%zu bytes)", n);
		return NULL;
	}
	l->owned = dst;
	return dst;
}

/*
 * A piece read in part (job j, its copies queued from w->pc[pc0]) whose
 * leaf has chunk sums: verify only the chunks that hold the rows its
 * copies read (a row-major piece: the overlap's rows; a column-wise
 * overlap reads part of every row it touches, so all of their chunks).
 * Left whole-piece when those chunks are the whole piece. A daemon that
 * fetches files (s3://) fetches these same bytes out of the request's
 * regions (daemon/restore.c, rs_leaf_range): what is not verified here
 * may not have been fetched.
 */
static void
piece_chunk_range(const struct rwork *w, size_t pc0, struct rjob *j)
{
	const Ckpt__Leaf *lf = j->lf;
	size_t rlo = SIZE_MAX, rhi = 0, k, lo, hi, cb;

	if (j->rowbytes == 0 || !lf->has_chunk_bytes || lf->chunk_bytes == 0 ||
	    lf->chunk_bytes > SIZE_MAX || lf->n_chunk_xxh3 < 2 ||
	    lf->n_chunk_xxh3 != j->n / lf->chunk_bytes +
	    (j->n % lf->chunk_bytes != 0))
		return;
	for (k = pc0; k < w->npc; k++) {
		const struct pcopy *p = &w->pc[k];
		size_t r0 = (size_t)(p->roff[0] - p->soff[0]);

		if (p->src != j->src || p->rshape[0] <= 0)
			continue;
		if (r0 < rlo)
			rlo = r0;
		if (r0 + (size_t)p->rshape[0] > rhi)
			rhi = r0 + (size_t)p->rshape[0];
	}
	if (rlo >= rhi)
		return;
	cb = (size_t)lf->chunk_bytes;
	lo = rlo * j->rowbytes / cb * cb;
	hi = (rhi * j->rowbytes + cb - 1) / cb * cb;
	if (hi > j->n)
		hi = j->n;
	if (lo == 0 && hi == j->n)
		return;
	j->chunked = 1;
	j->vlo = lo;
	j->vhi = hi;
}

/*
 * Restore the saved leaves lfs[0..n) of one path (the pieces of a global
 * array, or one whole array restored into piece targets) into t: one leaf
 * per piece target in the chain from tg, else the whole array (into tg
 * when it is a plain target).
 */
static int
restore_pieces(struct rctx *x, const Ckpt__Leaf *const *lfs, size_t n,
    const ckpt_tree *target, long ti, ckpt_tree *t, const ckpt_key *keys,
    size_t depth, const char *ps)
{
	struct spiece *sp;
	unsigned char *used = NULL, *checked = NULL;
	const struct tleaf *tg = ti >= 0 ? &target->leaves[ti] : NULL;
	struct tleaf *l;
	ckpt_dtype sdt;
	size_t i, nel;
	int nd, r = 0, ovf;
	long li;
	char a[256], b[256];
	/* the jobs' name of the array: ps is the caller's, freed before the
	 * jobs run; the restored tree's copy lives on */
	const char *tps = NULL;
	size_t pc0 = x->w->npc;         /* the piece copies queued here */

	if ((sp = calloc(n, sizeof *sp)) == NULL ||
	    (used = calloc(n, 1)) == NULL || (checked = calloc(n, 1)) == NULL) {
		free(sp);
		free(used);
		return cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
	}
	for (i = 0; i < n && r == 0; i++)
		r = piece_load(x, lfs[i], i > 0 ? &sp[0] : NULL, &sp[i], ps);
	if (r == 0)
		r = pieces_tile(x, sp, n, ps);
	if (r != 0)
		goto out;
	nd = (int)sp[0].lf->n_shape;
	sdt = (ckpt_dtype)sp[0].lf->dtype;
	if (tg != NULL && tg->kind != CKPT_LEAF_TARGET)
		tg = NULL;
	if (tg != NULL && tg->piece == NULL) {
		/* a plain target: the whole array, of the global shape */
		if (tg->ndim != nd || memcmp(tg->shape, sp[0].gshape,
		    (size_t)nd * sizeof *tg->shape) != 0) {
			fmt_shape(a, sizeof a, (size_t)nd, NULL, sp[0].gshape);
			fmt_shape(b, sizeof b, (size_t)tg->ndim, NULL, tg->shape);
			r = cl_fail(x->c, x->m, CKPT_EMISMATCH, "shape mismatch "
			    "for '%s': the checkpoint has the global shape %s, "
			    "the target %s", ps, a, b);
			goto out;
		}
	}
	if (tg != NULL && !dtype_can_cast(sdt, tg->dtype)) {
		r = cl_fail(x->c, x->m, CKPT_EDTYPE, "cannot cast '%s' from %s "
		    "to %s", ps, ckpt_dtype_name(sdt), ckpt_dtype_name(tg->dtype));
		goto out;
	}
	if (tg == NULL || tg->piece == NULL) {
		ckpt_dtype dt = tg != NULL ? tg->dtype : sdt;
		int64_t zero[CKPT_MAX_NDIM] = { 0 };
		void *dst;

		if ((li = tree_append(t, keys, depth, CKPT_LEAF_ARRAY, &l)) < 0) {
			r = cl_fail(x->c, x->m, li == CKPT_ENOMEM ? CKPT_ENOMEM :
			    CKPT_ECORRUPT, "invalid or duplicate leaf '%s' in "
			    "the checkpoint", ps);
			goto out;
		}
		if (sp[0].lf->tag != NULL)
			snprintf(l->tag, sizeof l->tag, "%s", sp[0].lf->tag);
		l->dtype = dt;
		l->ndim = nd;
		memcpy(l->shape, sp[0].gshape, (size_t)nd * sizeof *l->shape);
		nel = tree_nelems(nd, l->shape, &ovf);
		if ((dst = pieces_dst(x, tg, l, nel, dt)) == NULL && l->nbytes > 0) {
			r = CKPT_ENOMEM;
			goto out;
		}
		l->data = dst;
		tps = l->path_str;
		if (dst != NULL)
			r = pieces_fill(x, sp, n, nd, dst, dt, zero, l->shape,
			    tps, used, checked);
		goto verify;
	}
	/* piece targets: each filled from the pieces overlapping it */
	for (; ti >= 0 && r == 0; ti = target->leaves[ti].piece_next) {
		const struct tleaf *pt = &target->leaves[ti];
		void *dst;

		if (pt->ndim != nd || memcmp(pt->piece, sp[0].gshape,
		    (size_t)nd * sizeof *pt->piece) != 0) {
			fmt_shape(a, sizeof a, (size_t)nd, NULL, sp[0].gshape);
			fmt_shape(b, sizeof b, (size_t)pt->ndim, NULL, pt->piece);
			r = cl_fail(x->c, x->m, CKPT_EMISMATCH, "global shape "
			    "mismatch for '%s': the checkpoint has %s, the "
			    "target %s", ps, a, b);
			break;
		}
		li = tree_append_piece(t, keys, depth, CKPT_LEAF_ARRAY,
		    pt->dtype, nd, pt->piece, pt->piece + nd, pt->shape, 1, &l);
		if (li < 0) {
			r = cl_fail(x->c, x->m, li == CKPT_ENOMEM ? CKPT_ENOMEM :
			    CKPT_EMISMATCH, "invalid target piece of '%s'", ps);
			break;
		}
		if (sp[0].lf->tag != NULL)
			snprintf(l->tag, sizeof l->tag, "%s", sp[0].lf->tag);
		nel = tree_nelems(nd, pt->shape, &ovf);
		if ((dst = pieces_dst(x, pt, l, nel, pt->dtype)) == NULL &&
		    l->nbytes > 0) {
			r = CKPT_ENOMEM;
			break;
		}
		l->data = dst;
		tps = l->path_str;
		if (dst != NULL)
			r = pieces_fill(x, sp, n, nd, dst, pt->dtype,
			    pt->piece + nd, pt->shape, tps, used, checked);
	}
verify:
	/* The pieces read but not hashed with their copy: hashed alone
	 * (the pieces this restore does not read are not checked). */
	for (i = 0; i < n && r == 0 && x->verify && !x->metadata_only; i++) {
		size_t nj = x->w->njobs, k;

		if (!used[i] || checked[i])
			continue;
		r = add_job(x, sp[i].lf, tps, sp[i].src, NULL,
		    (size_t)sp[i].vol * ckpt_dtype_size(sdt), sdt, sdt, 1);
		if (r != 0 || x->w->njobs == nj || sp[i].shape[0] <= 0)
			continue;
		/* its copies, queued above, run in its stream */
		x->w->jobs[nj].rowbytes = (size_t)sp[i].vol /
		    (size_t)sp[i].shape[0] * ckpt_dtype_size(sdt);
		for (k = pc0; k < x->w->npc && x->w->jobs[nj].rowbytes > 0; k++)
			if (x->w->pc[k].src == sp[i].src)
				x->w->pc[k].owner = (long)nj;
		piece_chunk_range(x->w, pc0, &x->w->jobs[nj]);
	}
out:
	free(sp);
	free(used);
	free(checked);
	return r;
}

/* item_metadata: one leaf per saved piece. */
static int
piece_metadata(struct rctx *x, const Ckpt__Leaf *lf, ckpt_tree *t,
    const ckpt_key *keys, size_t depth, const char *ps)
{
	struct spiece p;
	struct tleaf *l;
	long li;
	int r;

	if ((r = piece_load(x, lf, NULL, &p, ps)) != 0)
		return r;
	li = tree_append_piece(t, keys, depth, CKPT_LEAF_ARRAY,
	    (ckpt_dtype)lf->dtype, (int)lf->n_shape, p.gshape, p.off, p.shape,
	    0, &l);
	if (li < 0)
		return cl_fail(x->c, x->m, li == CKPT_ENOMEM ? CKPT_ENOMEM :
		    CKPT_ECORRUPT, "the saved pieces of '%s' overlap or "
		    "disagree", ps);
	if (lf->tag != NULL)
		snprintf(l->tag, sizeof l->tag, "%s", lf->tag);
	if (lf->file != NULL && (l->file = strdup(lf->file)) == NULL)
		return cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
	l->xxh3 = lf->xxh3;
	l->nbytes = (size_t)p.vol * ckpt_dtype_size((ckpt_dtype)lf->dtype);
	return 0;
}

/*
 * An array whose target is an empty list: this rank asks for no piece of
 * it. It comes back as an empty list, once for all its saved pieces
 * (seen), and none of its bytes is read.
 */
static int
restore_no_piece(struct rctx *x, struct strmap *seen, ckpt_tree *t,
    const ckpt_key *keys, size_t depth, const char *ps)
{
	struct tleaf *l;
	long li;

	if (strmap_get(seen, ps) >= 0)
		return 0;
	if (strmap_put(seen, ps, 1) != 0)
		return cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
	if ((li = tree_append(t, keys, depth, CKPT_LEAF_EMPTY_LIST, &l)) < 0)
		return cl_fail(x->c, x->m, li == CKPT_ENOMEM ? CKPT_ENOMEM :
		    CKPT_ECORRUPT, "invalid or duplicate leaf '%s' in the "
		    "checkpoint", ps);
	return 0;
}

static int
restore_tree(struct rctx *x, const Ckpt__Item *it, const ckpt_tree *target,
    int partial, ckpt_tree **out)
{
	ckpt_tree *t;
	ckpt_key keys[256];
	unsigned char *matched = NULL;
	const Ckpt__Leaf **group = NULL;
	struct strmap seen = { 0 };
	size_t i, k, ngroup;
	int r = 0;

	*out = NULL;
	if ((t = ckpt_tree_new()) == NULL)
		return cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
	if (target != NULL && target->n > 0 &&
	    (matched = calloc(target->n, 1)) == NULL) {
		ckpt_tree_free(t);
		return cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
	}
	for (i = 0; i < it->n_leaves && r == 0; i++) {
		const Ckpt__Leaf *lf = it->leaves[i];
		const struct tleaf *tg = NULL;
		struct tleaf *l;
		char *ps;
		long ti = -1, li;

		if (lf->n_path > sizeof keys / sizeof keys[0]) {
			r = cl_fail(x->c, x->m, CKPT_ECORRUPT, "leaf path too deep");
			break;
		}
		for (k = 0; k < lf->n_path; k++) {
			keys[k].kind = (ckpt_key_kind)lf->path[k]->kind;
			keys[k].key = lf->path[k]->key != NULL ? lf->path[k]->key : "";
			keys[k].index = lf->path[k]->index;
			if (keys[k].kind != CKPT_KEY_DICT && keys[k].kind !=
			    CKPT_KEY_LIST && keys[k].kind != CKPT_KEY_TUPLE)
				keys[k].kind = CKPT_KEY_DICT;
		}
		if ((ps = tree_path_str(keys, lf->n_path)) == NULL) {
			r = cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
			break;
		}
		if (target != NULL) {
			ti = ckpt_tree_find(target, ps);
			if (ti < 0) {
				if (!partial)
					r = cl_fail(x->c, x->m, CKPT_EMISMATCH,
					    "leaf '%s' of the checkpoint is not in "
					    "the target (a partial restore may "
					    "omit it)", ps);
				free(ps);
				continue;
			}
			matched[ti] = 1;
			tg = &target->leaves[ti];
			for (li = tg->piece_next; li >= 0;
			    li = target->leaves[li].piece_next)
				matched[li] = 1;
		}
		if (lf->kind == CKPT__LEAF_KIND__LEAF_ARRAY &&
		    x->metadata_only && lf->n_global_shape > 0) {
			r = piece_metadata(x, lf, t, keys, lf->n_path, ps);
			free(ps);
			continue;
		}
		if (lf->kind == CKPT__LEAF_KIND__LEAF_ARRAY && tg != NULL &&
		    tg->kind == CKPT_LEAF_EMPTY_LIST) {
			r = restore_no_piece(x, &seen, t, keys, lf->n_path, ps);
			free(ps);
			continue;
		}
		if (lf->kind == CKPT__LEAF_KIND__LEAF_ARRAY &&
		    (lf->n_global_shape > 0 || (tg != NULL && tg->piece != NULL))) {
			/* every saved piece of this path, at its first */
			if (strmap_get(&seen, ps) >= 0) {
				free(ps);
				continue;
			}
			if (strmap_put(&seen, ps, 1) != 0 || (group == NULL &&
			    (group = calloc(it->n_leaves, sizeof *group)) ==
			    NULL)) {
				r = cl_fail(x->c, x->m, CKPT_ENOMEM,
				    "out of memory");
				free(ps);
				break;
			}
			ngroup = 0;
			for (k = i; k < it->n_leaves; k++)
				if (leaf_same_path(it->leaves[k], lf))
					group[ngroup++] = it->leaves[k];
			r = restore_pieces(x, group, ngroup, target, ti, t, keys,
			    lf->n_path, ps);
			free(ps);
			continue;
		}
		li = tree_append(t, keys, lf->n_path,
		    (ckpt_leaf_kind)lf->kind, &l);
		if (li < 0) {
			r = cl_fail(x->c, x->m, li == CKPT_ENOMEM ? CKPT_ENOMEM :
			    CKPT_ECORRUPT, "invalid or duplicate leaf '%s' in "
			    "the checkpoint", ps);
			free(ps);
			break;
		}
		if (lf->tag != NULL)
			snprintf(l->tag, sizeof l->tag, "%s", lf->tag);
		if (lf->file != NULL && (l->file = strdup(lf->file)) == NULL)
			r = cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
		switch (lf->kind) {
		case CKPT__LEAF_KIND__LEAF_ARRAY:
			if (r == 0)
				r = restore_array(x, lf, tg, l, ps);
			if (r == 0 && x->zero_copy && l->data != NULL &&
			    l->owned == NULL && (tg == NULL || tg->dst == NULL))
				r = tree_hold_mapping(t, x->maps[lf->fd_index]);
			break;
		case CKPT__LEAF_KIND__LEAF_INT:
		case CKPT__LEAF_KIND__LEAF_FLOAT:
		case CKPT__LEAF_KIND__LEAF_BOOL:
			l->i = lf->int_value;
			l->f = lf->float_value;
			l->b = lf->bool_value != 0;
			if (r == 0 && tg != NULL && tg->kind == CKPT_LEAF_TARGET &&
			    !x->metadata_only)
				r = scalar_to_target(x, lf, tg, l, ps);
			break;
		case CKPT__LEAF_KIND__LEAF_STR:
			if (lf->str_value != NULL &&
			    (l->s = strdup(lf->str_value)) == NULL)
				r = cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
			else if (lf->str_value == NULL && (l->s = strdup("")) == NULL)
				r = cl_fail(x->c, x->m, CKPT_ENOMEM, "out of memory");
			break;
		case CKPT__LEAF_KIND__LEAF_NONE:
		case CKPT__LEAF_KIND__LEAF_EMPTY_DICT:
		case CKPT__LEAF_KIND__LEAF_EMPTY_LIST:
		case CKPT__LEAF_KIND__LEAF_EMPTY_TUPLE:
			break;
		default:
			r = cl_fail(x->c, x->m, CKPT_ECORRUPT,
			    "leaf '%s' has an unknown kind %d", ps, (int)lf->kind);
			break;
		}
		free(ps);
	}
	if (r == 0 && target != NULL) {
		for (i = 0; i < target->n; i++)
			if (!matched[i]) {
				r = cl_fail(x->c, x->m, CKPT_EMISMATCH, "target "
				    "leaf '%s' is not in the checkpoint",
				    target->leaves[i].path_str);
				break;
			}
	}
	free(matched);
	free(group);
	strmap_free(&seen);
	if (r != 0) {
		ckpt_tree_free(t);
		return r;
	}
	*out = t;
	return 0;
}

/* ---- restore ------------------------------------------------------------------------------- */

/* The regions of the piece targets in ra, for the request (a store whose
 * files the daemon fetches then fetches only what they need). */
struct regions {
	Ckpt__Region **p;
	Ckpt__Region *r;
	Ckpt__PathElem *pe;
	Ckpt__PathElem **pep;
	uint64_t *nums;
	size_t n;
};

static void
regions_free(struct regions *g)
{
	free(g->p);
	free(g->r);
	free(g->pe);
	free(g->pep);
	free(g->nums);
}

static int
regions_build(const ckpt_restore_args *ra, struct regions *g)
{
	size_t i, j, k, n = 0, ne = 0, nn = 0, e = 0, u = 0;

	memset(g, 0, sizeof *g);
	for (i = 0; ra != NULL && i < ra->n; i++) {
		const ckpt_tree *t = ra->items[i].target;

		for (j = 0; t != NULL && j < t->n; j++) {
			const struct tleaf *tl = &t->leaves[j];

			if (tl->kind != CKPT_LEAF_TARGET || tl->piece == NULL)
				continue;
			n++;
			ne += tl->depth;
			nn += 2 * (size_t)tl->ndim;
		}
	}
	if (n == 0)
		return 0;
	if ((g->p = calloc(n, sizeof *g->p)) == NULL ||
	    (g->r = calloc(n, sizeof *g->r)) == NULL ||
	    (ne > 0 && ((g->pe = calloc(ne, sizeof *g->pe)) == NULL ||
	    (g->pep = calloc(ne, sizeof *g->pep)) == NULL)) ||
	    (nn > 0 && (g->nums = calloc(nn, sizeof *g->nums)) == NULL)) {
		regions_free(g);
		return -1;
	}
	for (i = 0; i < ra->n; i++) {
		const ckpt_tree *t = ra->items[i].target;

		for (j = 0; t != NULL && j < t->n; j++) {
			const struct tleaf *tl = &t->leaves[j];
			Ckpt__Region *r;

			if (tl->kind != CKPT_LEAF_TARGET || tl->piece == NULL)
				continue;
			r = &g->r[g->n];
			g->p[g->n++] = r;
			ckpt__region__init(r);
			r->item = ra->items[i].name;
			r->path = &g->pep[e];
			r->n_path = tl->depth;
			for (k = 0; k < tl->depth; k++, e++) {
				Ckpt__PathElem *pe = &g->pe[e];

				ckpt__path_elem__init(pe);
				g->pep[e] = pe;
				pe->has_kind = 1;
				pe->kind = (Ckpt__KeyKind)tl->path[k].kind;
				if (tl->path[k].kind == CKPT_KEY_DICT) {
					pe->key = (char *)tl->path[k].key;
				} else {
					pe->has_index = 1;
					pe->index = tl->path[k].index;
				}
			}
			r->offsets = &g->nums[u];
			r->n_offsets = (size_t)tl->ndim;
			for (k = 0; k < (size_t)tl->ndim; k++)
				g->nums[u++] =
				    (uint64_t)tl->piece[tl->ndim + k];
			r->shape = &g->nums[u];
			r->n_shape = (size_t)tl->ndim;
			for (k = 0; k < (size_t)tl->ndim; k++)
				g->nums[u++] = (uint64_t)tl->shape[k];
		}
	}
	return 0;
}

static int
do_restore(ckpt_manager *m, int64_t step, const ckpt_restore_args *ra,
    int metadata_only, ckpt_restored **out)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Restore rs = CKPT__RESTORE__INIT;
	Ckpt__Response *resp = NULL;
	const Ckpt__RestoreReply *rr;
	ckpt_restored *res = NULL;
	struct rctx x = { 0 };
	struct rwork w = { 0 };
	struct mapping *maps[CKPT_MAX_FDS] = { 0 };
	char **names = NULL;
	struct regions rg = { 0 };
	int fds[CKPT_MAX_FDS];
	size_t nfds = 0, i, j;
	int r, code;

	if (out != NULL)
		*out = NULL;
	if (m == NULL)
		return CKPT_EINVAL;
	if (m->closed)
		return cl_fail(m->c, m, CKPT_ECLOSED, "manager is closed");
	if (out == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "out is NULL");
	mgr_wait_local(m);

	rs.has_manager = 1;
	rs.manager = m->id;
	rs.has_step = step >= 0;
	rs.step = step;
	if (ra != NULL && ra->metadata_only)
		metadata_only = 1;
	rs.has_metadata_only = 1;
	rs.metadata_only = metadata_only != 0;
	if (ra != NULL) {
		if (ra->n > 0 && (names = calloc(ra->n, sizeof *names)) == NULL)
			return cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
		for (i = 0; i < ra->n; i++)
			names[i] = ra->items[i].name;
		rs.items = names;
		rs.n_items = ra->n;
		rs.directory = ra->dir;
		if (!metadata_only && regions_build(ra, &rg) != 0) {
			free(names);
			return cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
		}
		rs.regions = rg.p;
		rs.n_regions = rg.n;
	}
	req.op_case = CKPT__REQUEST__OP_RESTORE;
	req.restore = &rs;
	r = cl_call(m->c, m, &req, NULL, 0, &resp, fds, &nfds);
	free(names);
	regions_free(&rg);
	if (r != 0)
		return r;
	if ((code = resp->code) != 0) {
		if (code > 0 || code < CKPT_ECODE_MIN)
			code = CKPT_EINTERNAL;
		r = cl_fail(m->c, m, code, "%s", resp->message != NULL &&
		    *resp->message != '\0' ? resp->message : ckpt_strerror(code));
		goto out;
	}
	if (resp->body_case != CKPT__RESPONSE__BODY_RESTORE) {
		r = cl_fail(m->c, m, CKPT_EPROTO, "unexpected reply to restore");
		goto out;
	}
	rr = resp->restore;

	/* map every file once, then close the fds */
	for (i = 0; i < nfds; i++) {
		struct stat st;
		if ((maps[i] = calloc(1, sizeof *maps[i])) == NULL) {
			r = cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
			goto out;
		}
		maps[i]->refs = 1;
		if (fstat(fds[i], &st) != 0) {
			r = cl_fail(m->c, m, CKPT_EIO, "fstat: %s", strerror(errno));
			goto out;
		}
		if (st.st_size > 0) {
			/* private and writable: a view handed on (a jax
			 * array may alias it, and a donated one is written)
			 * gets its own copy of a page it writes; the file
			 * and every other view never change */
			void *p = mmap(NULL, (size_t)st.st_size,
			    PROT_READ | PROT_WRITE, MAP_PRIVATE, fds[i], 0);
			if (p == MAP_FAILED) {
				r = cl_fail(m->c, m, CKPT_EIO, "cannot map a data "
				    "file: %s", strerror(errno));
				goto out;
			}
			maps[i]->addr = p;
			maps[i]->len = (size_t)st.st_size;
			/* copies read the whole file, soon: start the
			 * readahead of all of it now (cold page cache) */
			if (!(ra != NULL && ra->zero_copy)) {
				posix_fadvise(fds[i], 0, 0,
				    POSIX_FADV_SEQUENTIAL);
				posix_fadvise(fds[i], 0, 0, POSIX_FADV_WILLNEED);
			}
		}
	}
	if ((res = calloc(1, sizeof *res)) == NULL ||
	    (rr->n_items > 0 &&
	    (res->items = calloc(rr->n_items, sizeof *res->items)) == NULL)) {
		r = cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	res->step = rr->step;
	if (rr->step_dir != NULL && (res->dir = strdup(rr->step_dir)) == NULL) {
		r = cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	x.c = m->c;
	x.m = m;
	x.maps = maps;
	x.nmaps = sizeof maps / sizeof maps[0];
	x.metadata_only = metadata_only;
	x.zero_copy = ra != NULL && ra->zero_copy;
	x.verify = !metadata_only && (ra == NULL || ra->verify);
	x.verify_views = x.verify && ra != NULL && ra->verify_set;
	x.w = &w;
	x.fds = fds;
	x.nfds = nfds;
	x.step_dir = rr->step_dir;
	for (i = 0; i < rr->n_items; i++) {
		const Ckpt__Item *it = rr->items[i];
		struct ritem *ri = &res->items[res->n];
		const ckpt_tree *target = NULL;
		int partial = 0;

		ri->name = strdup(it->name != NULL ? it->name : "default");
		ri->handler = (ckpt_handler)it->handler;
		res->n++;
		if (ri->name == NULL) {
			r = cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
			goto out;
		}
		if (it->handler == CKPT__HANDLER__HANDLER_JSON ||
		    it->handler == CKPT__HANDLER__HANDLER_PROTO ||
		    (it->json != NULL && it->n_leaves == 0)) {
			if (it->json != NULL &&
			    (ri->json = strdup(it->json)) == NULL) {
				r = cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
				goto out;
			}
			continue;
		}
		if (ra != NULL)
			for (j = 0; j < ra->n; j++)
				if (strcmp(ra->items[j].name, ri->name) == 0) {
					target = ra->items[j].target;
					partial = ra->items[j].partial;
				}
		x.item = ri->name;
		if ((r = restore_tree(&x, it, target, partial, &ri->tree)) != 0)
			goto out;
	}
	if ((r = restore_run(&x)) != 0)
		goto out;
	*out = res;
	res = NULL;
	r = 0;
out:
	free(w.jobs);
	free(w.units);
	free(w.pc);
	free(w.pcord);
	for (i = 0; i < nfds; i++)
		close(fds[i]);
	for (i = 0; i < sizeof maps / sizeof maps[0]; i++)
		if (maps[i] != NULL)
			mapping_unref(maps[i]);
	ckpt_restored_free(res);
	if (resp != NULL)
		ckpt__response__free_unpacked(resp, NULL);
	return r;
}

CKPT_API int
ckpt_restore(ckpt_manager *m, int64_t step, const ckpt_restore_args *r,
    ckpt_restored **out)
{
	return do_restore(m, step, r, 0, out);
}

CKPT_API int
ckpt_item_metadata(ckpt_manager *m, int64_t step, ckpt_restored **out)
{
	return do_restore(m, step, NULL, 1, out);
}
