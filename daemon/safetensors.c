/*
 * safetensors.c - the data files of a tree item (contract: safetensors.h).
 *
 * ---- safetensors files (data-NNNNN.safetensors) ----------------------------
 *   u64 LE N | N bytes JSON header, padded with spaces so that 8+N is a
 *   multiple of STORE_PAGE | data section.
 *   Header: {"__metadata__":{"format":"pt"},
 *            "<tensor>":{"dtype":"F32","shape":[2,3],"data_offsets":[b,e]},...}
 *   with offsets relative to the start of the data section. Every tensor
 *   begins at a multiple of STORE_TENSOR_ALIGN; a tensor of at least
 *   STORE_DIO_TENSOR bytes whose source is 64-byte aligned begins at the
 *   same offset within a page as its source (for O_DIRECT). The reference
 *   safetensors reader requires the tensors to cover the data section
 *   without holes, so each gap (1..4095 zero bytes) is itself declared as a
 *   U8 tensor
 *   named "__ckptd_pad_<k>__" (<k> = index of the tensor after the gap).
 *   Names starting with "__ckptd_pad_" and "__metadata__" are reserved.
 *
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>
#if defined(__x86_64__)
/* XXH3 through libxxhash's run-time dispatch (AVX2/AVX-512 when present) */
#include <xxh_x86dispatch.h>
#endif

#include "backend.h"
#include "dtype.h"
#include "layout.h"
#include "safetensors.h"
#include "treemeta.h"

/* Write/hash granularity: small enough that a chunk hashed is still in the
 * CPU cache when write() copies it. */
#define STORE_CHUNK (2u << 20)
/* Start writeback after this many bytes so the final fsync is short. */
#define STORE_KICK (64u << 20)
/* Safetensors files of at least this size are written with O_DIRECT
 * (smaller ones, and filesystems that refuse O_DIRECT, go through the page
 * cache). */
#define STORE_DIO_MIN (1u << 20)
/* O_DIRECT: hash this much of a tensor, then write it from the source. */
#define STORE_DIO_CHUNK (8u << 20)
/* O_DIRECT: the page-aligned bounce buffer for the header, padding, small
 * tensors, the unaligned edges of large ones and tensors whose source is
 * not congruent with their file offset modulo STORE_PAGE. */
#define STORE_BOUNCE (4u << 20)
/* Tensors at least this large are laid out at the file offset congruent to
 * their source address modulo STORE_PAGE (at most STORE_PAGE - 1 extra
 * padding bytes), so that O_DIRECT writes them straight from the source. */
#define STORE_DIO_TENSOR (256u << 10)
#define STORE_IOV 512
#define STORE_MAX_HEADER (100u << 20)

#define CORRUPT(...) do { r = err_set(e, CKPT_ECORRUPT, __VA_ARGS__); \
	goto out; } while (0)
#define NOMEM() do { r = err_set(e, CKPT_ENOMEM, "out of memory"); \
	goto out; } while (0)

/* Batched writer: queues iovecs and writes them with pwritev. */
struct wbuf {
	const struct store_backend *be;
	int fd;
	const char *fname;
	uint64_t woff;          /* file offset of iov[0] */
	uint64_t kicked;        /* bytes handed to writeback */
	struct iovec iov[STORE_IOV];
	int niov;
	size_t pending;
};

static int
wbuf_flush(struct wbuf *w, ckd_err *e)
{
	struct iovec *iov = w->iov;
	int cnt = w->niov;
	ssize_t r;

	while (cnt > 0) {
		r = w->be->pwritev(w->fd, iov, cnt, w->woff);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return err_errno(e, errno, "write %s", w->fname);
		}
		if (r == 0)
			return err_set(e, CKPT_EIO, "write %s: no progress",
			    w->fname);
		w->woff += (uint64_t)r;
		while (cnt > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0 && r > 0) {
			iov->iov_base = (char *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	w->niov = 0;
	w->pending = 0;
	if (w->woff - w->kicked >= STORE_KICK) {
		/* A hint: start writeback now so the final fsync is short. */
		w->be->writeback(w->fd, w->kicked, w->woff - w->kicked);
		w->kicked = w->woff;
	}
	return 0;
}

static int
wbuf_add(struct wbuf *w, const void *p, size_t len, ckd_err *e)
{
	int r;

	if (len == 0)
		return 0;
	if (w->niov == STORE_IOV && (r = wbuf_flush(w, e)) != 0)
		return r;
	w->iov[w->niov].iov_base = (void *)p;
	w->iov[w->niov].iov_len = len;
	w->niov++;
	w->pending += len;
	if (w->pending >= STORE_CHUNK)
		return wbuf_flush(w, e);
	return 0;
}

static json_t *
tensor_info_json(const char *dtype, json_t *shape, uint64_t b, uint64_t end)
{
	return json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype, "shape", shape,
	    "data_offsets", (json_int_t)b, (json_int_t)end);
}

/* Build the padded header; fills t[].offset. *hdr is malloc'ed. */
static int
st_header(struct store_tensor *t, size_t n, uint64_t *rel, char **hdr,
    size_t *hdrlen, ckd_err *e)
{
	json_t *root, *info;
	uint64_t cur = 0, begin, nb, N, total;
	char *js = NULL, padname[64], *buf;
	size_t jl, i;
	int r = 0;

	if ((root = json_pack("{s:{s:s}}", "__metadata__", "format", "pt"))
	    == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		const char *dn = store_dtype_name(t[i].dtype);

		if (!store_valid_tensor_name(t[i].name)) {
			r = err_set(e, CKPT_EINVAL, "invalid tensor name %s",
			    t[i].name != NULL ? t[i].name : "(null)");
			goto out;
		}
		if (store_array_nbytes(t[i].dtype, t[i].ndim, t[i].shape, &nb) != 0 ||
		    dn == NULL || nb != t[i].nbytes ||
		    (nb > 0 && t[i].src == NULL)) {
			r = err_set(e, CKPT_EINVAL, "tensor %s: bad dtype, shape "
			    "or size", t[i].name);
			goto out;
		}
		if (json_object_get(root, t[i].name) != NULL) {
			r = err_set(e, CKPT_EINVAL, "duplicate tensor name %s",
			    t[i].name);
			goto out;
		}
		begin = (cur + STORE_TENSOR_ALIGN - 1) &
		    ~(uint64_t)(STORE_TENSOR_ALIGN - 1);
		if (nb >= STORE_DIO_TENSOR && ((uintptr_t)t[i].src &
		    (STORE_TENSOR_ALIGN - 1)) == 0) {
			/* Same offset within a page as the source, so that
			 * O_DIRECT can write it straight from there (the data
			 * section starts on a page boundary). */
			uint64_t want = (uintptr_t)t[i].src & (STORE_PAGE - 1);

			begin = cur + ((want - cur) & (STORE_PAGE - 1));
		}
		if (begin < cur || nb > (uint64_t)INT64_MAX - begin) {
			r = err_set(e, CKPT_EINVAL, "tensors too large");
			goto out;
		}
		if (begin > cur) {
			snprintf(padname, sizeof(padname), STORE_PAD_PREFIX
			    "%zu__", i);
			info = tensor_info_json("U8", json_pack("[I]",
			    (json_int_t)(begin - cur)), cur, begin);
			if (info == NULL || json_object_set_new(root, padname,
			    info) != 0) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				goto out;
			}
		}
		info = NULL;
		json_t *sh = store_shape_json(t[i].ndim, t[i].shape);
		if (sh != NULL)
			info = tensor_info_json(dn, sh, begin, begin + nb);
		if (info == NULL || json_object_set_new(root, t[i].name,
		    info) != 0) {
			/* jansson refuses keys that are not UTF-8 */
			r = err_set(e, CKPT_EINVAL, "tensor %s: cannot encode "
			    "header entry (name not UTF-8?)", t[i].name);
			goto out;
		}
		rel[i] = begin;
		cur = begin + nb;
	}
	if ((js = json_dumps(root, JSON_COMPACT)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	jl = strlen(js);
	total = ((uint64_t)jl + 8 + STORE_PAGE - 1) & ~(uint64_t)(STORE_PAGE - 1);
	N = total - 8;
	if (N > STORE_MAX_HEADER) {
		r = err_set(e, CKPT_ETOOBIG, "safetensors header too large");
		goto out;
	}
	if ((buf = malloc(total)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < 8; i++)
		buf[i] = (char)(N >> (8 * i));
	memcpy(buf + 8, js, jl);
	memset(buf + 8 + jl, ' ', N - jl);
	for (i = 0; i < n; i++)
		t[i].offset = total + rel[i];
	*hdr = buf;
	*hdrlen = total;
out:
	free(js);
	json_decref(root);
	return r;
}


/* ---- sources with holes ---------------------------------------------------
 * A cursor over a tensor's source: a copy of the runs known so far, so
 * that most lookups take no lock and no system call. lseek on the shared
 * file description from several workers is safe here: only the returned
 * offsets are used. */
static const char st_zeros[64u << 10];

struct src_cur {
	struct store_src *s;
	struct store_runs k;
};

void
store_src_init(struct store_src *s, int fd, const void *base)
{
	memset(s, 0, sizeof *s);
	s->fd = fd;
	s->base = base;
	pthread_mutex_init(&s->lock, NULL);
}

void
store_src_destroy(struct store_src *s)
{
	if (s->base == NULL)
		return;
	pthread_mutex_destroy(&s->lock);
	s->base = NULL;
}

/* The run of k at off (at most len bytes); 0 when k does not know. */
static uint64_t
src_known(const struct store_runs *k, uint64_t off, uint64_t len, int *data)
{
	if (off >= k->data_lo && off < k->data_hi) {
		*data = 1;
		return len < k->data_hi - off ? len : k->data_hi - off;
	}
	if (off >= k->hole_lo && off < k->hole_hi) {
		*data = 0;
		return len < k->hole_hi - off ? len : k->hole_hi - off;
	}
	return 0;
}

/* Find the run at off with lseek into k (s->lock held). */
static void
src_seek(struct store_src *s, struct store_runs *k, uint64_t off)
{
	off_t d, h;

	d = lseek(s->fd, (off_t)off, SEEK_DATA);
	if (d < 0 && errno == ENXIO) {
		k->hole_lo = off;
		k->hole_hi = UINT64_MAX;        /* holes up to the end */
	} else if (d < 0) {
		k->data_lo = 0;                 /* unsupported: read it all */
		k->data_hi = UINT64_MAX;
	} else if ((uint64_t)d > off) {
		k->hole_lo = off;
		k->hole_hi = (uint64_t)d;
	} else {
		h = lseek(s->fd, (off_t)off, SEEK_HOLE);
		k->data_lo = off;
		k->data_hi = h > (off_t)off ? (uint64_t)h : UINT64_MAX;
	}
}

/* The run at p (at most len bytes): its length, *data 1 for data (read it
 * from p), 0 for a hole (zeros). */
static uint64_t
src_run(struct src_cur *c, const char *p, uint64_t len, int *data)
{
	uint64_t off, n;

	*data = 1;
	if (c->s == NULL || len == 0)
		return len;
	off = (uint64_t)(p - c->s->base);
	if ((n = src_known(&c->k, off, len, data)) > 0)
		return n;
	pthread_mutex_lock(&c->s->lock);
	if (src_known(&c->s->known, off, len, data) == 0)
		src_seek(c->s, &c->s->known, off);
	c->k = c->s->known;
	pthread_mutex_unlock(&c->s->lock);
	return src_known(&c->k, off, len, data);
}

/* 1 when the whole tensor is data (the fast paths apply). */
static int
src_all_data(struct src_cur *c, const struct store_tensor *t)
{
	int data;

	if (c->s == NULL || t->nbytes == 0)
		return 1;
	return src_run(c, t->src, t->nbytes, &data) == t->nbytes && data;
}

_Static_assert(STORE_CHUNK <= STORE_SUM_CHUNK,
    "a tensor written in one chunk has one checksum chunk");

/* The sums of t, once its bytes were fed to cs. */
static int
st_sum_end(struct chunksum *cs, struct store_tensor *t)
{
	t->xxh3 = chunksum_end(cs, &t->chunks, &t->nchunks);
	return 0;
}

/* A tensor with holes, run by run: data is hashed and handed to put from
 * the source, holes as zeros (put gets NULL). */
static int
st_tensor_runs(struct src_cur *c, struct store_tensor *t, struct chunksum *cs,
    int (*put)(void *arg, const char *p, uint64_t len, ckd_err *e),
    void *arg, ckd_err *e)
{
	const char *p = t->src;
	uint64_t left = t->nbytes, n;
	int data, r;

	if ((r = chunksum_begin(cs, t->nbytes, e)) != 0)
		return r;
	while (left > 0) {
		if ((n = src_run(c, p, left, &data)) == 0) {
			n = left;               /* cannot happen: read it */
			data = 1;
		}
		if (data && n > STORE_CHUNK)
			n = STORE_CHUNK;        /* hashed right before written */
		chunksum_update(cs, data ? p : NULL, n);
		if ((r = put(arg, data ? p : NULL, n, e)) != 0)
			return r;
		p += n;
		left -= n;
	}
	return st_sum_end(cs, t);
}

static int
wbuf_put(void *arg, const char *p, uint64_t len, ckd_err *e)
{
	struct wbuf *w = arg;
	size_t n;
	int r;

	if (p != NULL)
		return wbuf_add(w, p, (size_t)len, e);
	while (len > 0) {
		n = len > sizeof st_zeros ? sizeof st_zeros : (size_t)len;
		if ((r = wbuf_add(w, st_zeros, n, e)) != 0)
			return r;
		len -= n;
	}
	return 0;
}

/* Hash tensor i chunk by chunk and queue the chunks for writing. */
static int
st_put_tensor(struct wbuf *w, struct src_cur *c, struct store_tensor *t,
    struct chunksum *cs, ckd_err *e)
{
	const char *p = t->src;
	uint64_t left = t->nbytes;
	size_t len;
	int r;

	if (!src_all_data(c, t))
		return st_tensor_runs(c, t, cs, wbuf_put, w, e);
	if (left <= STORE_CHUNK) {
		t->xxh3 = XXH3_64bits(p, (size_t)left);
		return wbuf_add(w, p, (size_t)left, e);
	}
	if ((r = chunksum_begin(cs, t->nbytes, e)) != 0)
		return r;
	while (left > 0) {
		len = left > STORE_CHUNK ? STORE_CHUNK : (size_t)left;
		chunksum_update(cs, p, len);
		if ((r = wbuf_add(w, p, len, e)) != 0)
			return r;
		p += len;
		left -= len;
	}
	return st_sum_end(cs, t);
}

/* ---- O_DIRECT stream ----------------------------------------------------------
 * The file is written as one sequential stream. Bytes that cannot go
 * straight from their source (header, padding, small tensors, the edges of
 * large ones, sources not congruent with their file offset modulo
 * STORE_PAGE) are gathered in a page-aligned bounce buffer; the page-aligned
 * middle of a congruent tensor is written from the source itself. Every
 * O_DIRECT write then has an aligned address, offset and length; the last
 * page is padded with zeros and the file truncated to its size. When the
 * filesystem refuses O_DIRECT (EINVAL, e.g. tmpfs) the stream drops it and
 * continues through the page cache. */
struct dio {
	const struct store_backend *be;
	int fd;
	const char *fname;
	int direct;             /* O_DIRECT is on */
	uint64_t off;           /* file offset of buf[0] */
	char *buf;              /* STORE_BOUNCE bytes, page-aligned */
	size_t len;             /* bytes queued in buf */
};

static int
dio_pwrite(struct dio *d, const char *p, size_t len, uint64_t off,
    ckd_err *e)
{
	ssize_t r;

	while (len > 0) {
		r = d->be->pwrite(d->fd, p, len, off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EINVAL && d->direct) {
				/* Refused (or a short write left us unaligned):
				 * go on through the page cache. */
				d->direct = 0;
				if (d->be->direct(d->fd, 0) != 0)
					return err_errno(e, errno, "write %s",
					    d->fname);
				continue;
			}
			return err_errno(e, errno, "write %s", d->fname);
		}
		if (r == 0)
			return err_set(e, CKPT_EIO, "write %s: no progress",
			    d->fname);
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* Write the bounce buffer (its length is a multiple of STORE_PAGE unless
 * this is the end of the file or O_DIRECT is off). */
static int
dio_flush(struct dio *d, ckd_err *e)
{
	int r;

	if (d->len == 0)
		return 0;
	if ((r = dio_pwrite(d, d->buf, d->len, d->off, e)) != 0)
		return r;
	d->off += d->len;
	d->len = 0;
	return 0;
}

/* Append len bytes of p (or zeros when p is NULL) to the stream. */
static int
dio_put(struct dio *d, const char *p, uint64_t len, ckd_err *e)
{
	size_t n;
	int r;

	if (!d->direct && p != NULL && len >= (64u << 10)) {
		/* Page cache: no need to gather, write from the source. */
		if ((r = dio_flush(d, e)) != 0 ||
		    (r = dio_pwrite(d, p, (size_t)len, d->off, e)) != 0)
			return r;
		d->off += len;
		return 0;
	}
	while (len > 0) {
		n = STORE_BOUNCE - d->len;
		if (n > len)
			n = (size_t)len;
		if (p != NULL) {
			memcpy(d->buf + d->len, p, n);
			p += n;
		} else {
			memset(d->buf + d->len, 0, n);
		}
		d->len += n;
		len -= n;
		if (d->len == STORE_BOUNCE && (r = dio_flush(d, e)) != 0)
			return r;
	}
	return 0;
}

static int
dio_put_cb(void *arg, const char *p, uint64_t len, ckd_err *e)
{
	return dio_put(arg, p, len, e);
}

/* Hash tensor t chunk by chunk, each chunk right before it is written. */
static int
dio_tensor(struct dio *d, struct src_cur *c, struct store_tensor *t,
    struct chunksum *cs, ckd_err *e)
{
	const char *p = t->src;
	uint64_t left = t->nbytes, pos = d->off + d->len, head;
	size_t n;
	int r;

	if (!src_all_data(c, t))
		return st_tensor_runs(c, t, cs, dio_put_cb, d, e);
	if (left <= STORE_CHUNK) {
		t->xxh3 = XXH3_64bits(p, (size_t)left);
		return dio_put(d, p, left, e);
	}
	if ((r = chunksum_begin(cs, t->nbytes, e)) != 0)
		return r;
	if (d->direct && (((uintptr_t)p - pos) & (STORE_PAGE - 1)) == 0) {
		head = (STORE_PAGE - (pos & (STORE_PAGE - 1))) &
		    (STORE_PAGE - 1);
		chunksum_update(cs, p, head);
		if ((r = dio_put(d, p, head, e)) != 0 ||
		    (r = dio_flush(d, e)) != 0)
			return r;
		p += head;
		left -= head;
		while (left >= STORE_PAGE) {
			n = left > STORE_DIO_CHUNK ? STORE_DIO_CHUNK :
			    (size_t)(left & ~(uint64_t)(STORE_PAGE - 1));
			chunksum_update(cs, p, n);
			if ((r = dio_pwrite(d, p, n, d->off, e)) != 0)
				return r;
			d->off += n;
			p += n;
			left -= n;
		}
	}
	while (left > 0) {
		n = left > STORE_CHUNK ? STORE_CHUNK : (size_t)left;
		chunksum_update(cs, p, n);
		if ((r = dio_put(d, p, n, e)) != 0)
			return r;
		p += n;
		left -= n;
	}
	return st_sum_end(cs, t);
}

/* The data of a file of `size` bytes with O_DIRECT when the filesystem
 * takes it. */
static int
st_write_direct(const struct store_backend *be, int fd, const char *fname,
    const char *hdr, size_t hdrlen, struct store_tensor *t, const uint64_t *rel,
    size_t n, uint64_t size, struct chunksum *cs, ckd_err *e)
{
	struct dio d;
	struct src_cur c;
	uint64_t cur = 0, pad;
	size_t i;
	int r;

	memset(&c, 0, sizeof c);
	c.s = n > 0 ? t[0].hsrc : NULL;
	memset(&d, 0, sizeof d);
	d.be = be;
	d.fd = fd;
	d.fname = fname;
	/* mmap, not malloc: page-aligned, and returned to the system at
	 * once (malloc may keep it resident in a worker's arena). */
	d.buf = mmap(NULL, STORE_BOUNCE, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (d.buf == MAP_FAILED)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	d.direct = be->direct(fd, 1) == 0;
	if ((r = dio_put(&d, hdr, hdrlen, e)) != 0)
		goto out;
	for (i = 0; i < n; i++) {
		if ((r = dio_put(&d, NULL, rel[i] - cur, e)) != 0 ||
		    (r = dio_tensor(&d, &c, &t[i], cs, e)) != 0)
			goto out;
		cur = rel[i] + t[i].nbytes;
	}
	if (d.direct && (d.len & (STORE_PAGE - 1)) != 0) {
		pad = STORE_PAGE - (d.len & (STORE_PAGE - 1));
		memset(d.buf + d.len, 0, (size_t)pad);
		d.len += (size_t)pad;
	}
	if ((r = dio_flush(&d, e)) != 0)
		goto out;
	if (d.off != size && be->truncate(fd, size) != 0)
		r = err_errno(e, errno, "truncate %s", fname);
out:
	munmap(d.buf, STORE_BOUNCE);
	return r;
}

/* Write a safetensors file; with b, hand the open fd to the batch instead
 * of fsync + close. */
static int
st_write(const struct store_backend *be, int dirfd, const char *fname,
    mode_t filemode, struct store_tensor *t, size_t n, struct store_sync *b,
    ckd_err *e)
{
	static const char zeros[STORE_PAGE];
	uint64_t *rel = NULL, cur, size;
	struct chunksum cs;
	struct wbuf *w = NULL;
	struct src_cur c;
	char *hdr = NULL;
	size_t hdrlen = 0, i;
	int fd = -1, r;

	if (!store_valid_component(fname))
		return err_set(e, CKPT_EINVAL, "invalid file name: %s",
		    fname != NULL ? fname : "(null)");
	memset(&cs, 0, sizeof cs);
	for (i = 0; i < n; i++) {
		free(t[i].chunks);
		t[i].chunks = NULL;
		t[i].nchunks = 0;
	}
	if ((rel = calloc(n ? n : 1, sizeof(*rel))) == NULL ||
	    (w = malloc(sizeof(*w))) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if ((r = st_header(t, n, rel, &hdr, &hdrlen, e)) != 0)
		goto out;
	size = hdrlen + (n > 0 ? rel[n - 1] + t[n - 1].nbytes : 0);
	if ((fd = be->create(dirfd, fname, filemode)) < 0) {
		r = err_errno(e, errno, "create %s", fname);
		goto out;
	}
	if (size >= STORE_DIO_MIN && (be->caps & STORE_BE_DIRECT)) {
		if ((r = st_write_direct(be, fd, fname, hdr, hdrlen, t, rel, n,
		    size, &cs, e)) != 0)
			goto fail;
	} else {
		memset(&c, 0, sizeof c);
		c.s = n > 0 ? t[0].hsrc : NULL;
		memset(w, 0, sizeof(*w));
		w->be = be;
		w->fd = fd;
		w->fname = fname;
		if ((r = wbuf_add(w, hdr, hdrlen, e)) != 0)
			goto fail;
		cur = 0;
		for (i = 0; i < n; i++) {
			if ((r = wbuf_add(w, zeros, (size_t)(rel[i] - cur),
			    e)) != 0 ||
			    (r = st_put_tensor(w, &c, &t[i], &cs, e)) != 0)
				goto fail;
			cur = rel[i] + t[i].nbytes;
		}
		if ((r = wbuf_flush(w, e)) != 0)
			goto fail;
	}
	if (b != NULL) {
		/* The batch fsyncs (and closes) it before the commit. */
		if ((r = store_sync_add(b, fd, 1, e)) != 0) {
			fd = -1;        /* closed by store_sync_add */
			goto fail;
		}
		fd = -1;
		goto out;
	}
	/* Data and size: one fsync per file. */
	if (be->fsync(fd) != 0) {
		r = err_errno(e, errno, "fsync %s", fname);
		goto fail;
	}
	if (be->close(fd) != 0) {
		fd = -1;
		r = err_errno(e, errno, "close %s", fname);
		goto fail;
	}
	fd = -1;
	goto out;
fail:
	if (fd >= 0)
		be->close(fd);
	fd = -1;
	be->unlink(dirfd, fname);
	for (i = 0; i < n; i++) {
		free(t[i].chunks);
		t[i].chunks = NULL;
		t[i].nchunks = 0;
	}
out:
	chunksum_free(&cs);
	free(hdr);
	free(rel);
	free(w);
	return r;
}

int
store_write_safetensors(const struct store_backend *be, int dirfd,
    const char *fname, mode_t filemode, struct store_tensor *t, size_t n,
    ckd_err *e)
{
	return st_write(be, dirfd, fname, filemode, t, n, NULL, e);
}

int
store_write_safetensors_nosync(const struct store_backend *be, int dirfd,
    const char *fname, mode_t filemode, struct store_tensor *t, size_t n,
    struct store_sync *b, ckd_err *e)
{
	if (b == NULL)
		return err_set(e, CKPT_EINVAL, "no sync batch");
	return st_write(be, dirfd, fname, filemode, t, n, b, e);
}

/* ---- reading array files ------------------------------------------------------- */

struct st_file {
	const char *name;       /* borrowed from a leaf */
	int fd;
	uint64_t size;
	uint64_t data_start;
	json_t *hdr;
};

static uint64_t
le64(const unsigned char *b)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}



static int
st_open(const struct store_backend *be, int itemfd, struct st_file *f,
    ckd_err *e)
{
	unsigned char lenbuf[8];
	json_error_t jerr;
	struct stat st;
	char *buf = NULL;
	uint64_t N;
	int r = 0;

	if ((f->fd = be->open_read(itemfd, f->name, &st, e)) < 0) {
		r = f->fd;
		f->fd = -1;
		return r;
	}
	f->size = (uint64_t)st.st_size;
	if (f->size < 8)
		CORRUPT("%s: truncated safetensors file", f->name);
	if (be->read_range(f->fd, lenbuf, 8, 0) != 0) {
		r = errno ? err_errno(e, errno, "read %s", f->name) :
		    err_set(e, CKPT_ECORRUPT, "%s: truncated", f->name);
		goto out;
	}
	N = le64(lenbuf);
	if (N == 0 || N > STORE_MAX_HEADER)
		CORRUPT("%s: bad safetensors header length %" PRIu64, f->name,
		    N);
	if (N > f->size - 8)
		CORRUPT("%s: safetensors header beyond end of file", f->name);
	if ((buf = malloc((size_t)N)) == NULL)
		NOMEM();
	if (be->read_range(f->fd, buf, (size_t)N, 8) != 0) {
		r = errno ? err_errno(e, errno, "read %s", f->name) :
		    err_set(e, CKPT_ECORRUPT, "%s: truncated", f->name);
		goto out;
	}
	f->hdr = json_loadb(buf, (size_t)N, JSON_REJECT_DUPLICATES, &jerr);
	if (f->hdr == NULL)
		CORRUPT("%s: invalid safetensors header: %s", f->name,
		    jerr.text);
	if (!json_is_object(f->hdr))
		CORRUPT("%s: safetensors header is not an object", f->name);
	f->data_start = 8 + N;
out:
	free(buf);
	return r;
}

static int
st_match(const struct st_file *f, Ckpt__Leaf *l, ckd_err *e)
{
	json_t *t, *v, *shape, *offs;
	uint64_t b, end, nb;
	const char *dn;
	size_t i;
	int r = 0;

	t = json_object_get(f->hdr, l->tensor);
	if (!json_is_object(t))
		CORRUPT("%s: tensor %s not found", f->name, l->tensor);
	v = json_object_get(t, "dtype");
	dn = store_dtype_name(l->dtype);
	if (!json_is_string(v) || dn == NULL ||
	    strcmp(json_string_value(v), dn) != 0)
		CORRUPT("%s: tensor %s: dtype differs from the tree metadata",
		    f->name, l->tensor);
	shape = json_object_get(t, "shape");
	if (!json_is_array(shape) || json_array_size(shape) != l->n_shape)
		CORRUPT("%s: tensor %s: shape differs from the tree metadata",
		    f->name, l->tensor);
	json_array_foreach(shape, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    (uint64_t)json_integer_value(v) != l->shape[i])
			CORRUPT("%s: tensor %s: shape differs from the tree "
			    "metadata", f->name, l->tensor);
	}
	if (store_array_nbytes(l->dtype, l->n_shape, l->shape, &nb) != 0 ||
	    nb != l->nbytes)
		CORRUPT("%s: tensor %s: bad size", f->name, l->tensor);
	offs = json_object_get(t, "data_offsets");
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    !json_is_integer(json_array_get(offs, 0)) ||
	    !json_is_integer(json_array_get(offs, 1)) ||
	    json_integer_value(json_array_get(offs, 0)) < 0 ||
	    json_integer_value(json_array_get(offs, 1)) < 0)
		CORRUPT("%s: tensor %s: bad data_offsets", f->name, l->tensor);
	b = (uint64_t)json_integer_value(json_array_get(offs, 0));
	end = (uint64_t)json_integer_value(json_array_get(offs, 1));
	if (b > end || end - b != nb)
		CORRUPT("%s: tensor %s: data_offsets do not match the size",
		    f->name, l->tensor);
	if (end > f->size - f->data_start)
		CORRUPT("%s: tensor %s: data beyond end of file", f->name,
		    l->tensor);
	l->has_offset = 1;
	l->offset = f->data_start + b;
out:
	return r;
}

int
store_open_item_files(const struct store_backend *be, int itemfd,
    Ckpt__Item *item, int *fds, size_t *nfds, size_t maxfds, ckd_err *e)
{
	struct st_file *files = NULL;
	size_t nfiles = 0, i, j, base = *nfds;
	int r = 0;

	/* The handles become the fds of a RestoreReply. */
	if (!(be->caps & STORE_BE_FDS))
		return err_set(e, CKPT_EINTERNAL, "the %s backend cannot hand "
		    "out files", be->name);
	if (item->n_leaves > 0 && (files = calloc(item->n_leaves,
	    sizeof(*files))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (i = 0; i < item->n_leaves; i++) {
		Ckpt__Leaf *l = item->leaves[i];
		const char *why;

		if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY)
			continue;
		if ((why = store_leaf_problem(l)) != NULL)
			CORRUPT("leaf %zu: %s", i, why);
		for (j = 0; j < nfiles; j++)
			if (strcmp(files[j].name, l->file) == 0)
				break;
		if (j == nfiles) {
			if (base + nfiles >= maxfds) {
				r = err_set(e, CKPT_ETOOBIG, "item has more "
				    "than %zu data files", maxfds - base);
				goto out;
			}
			files[j].name = l->file;
			files[j].fd = -1;
			nfiles++;
			if ((r = st_open(be, itemfd, &files[j], e)) != 0)
				goto out;
		}
		if ((r = st_match(&files[j], l, e)) != 0)
			goto out;
		l->has_fd_index = 1;
		l->fd_index = (uint32_t)(base + j);
	}
	for (j = 0; j < nfiles; j++) {
		fds[base + j] = files[j].fd;
		files[j].fd = -1;
	}
	*nfds = base + nfiles;
out:
	for (j = 0; j < nfiles; j++) {
		if (files[j].fd >= 0)
			be->close(files[j].fd);
		json_decref(files[j].hdr);
	}
	free(files);
	return r;
}

/* Read and hash leaf l (its chunks too, when it has chunk sums) 2 MiB at
 * a time; report a mismatch through cb. 1: reported, 0: fine, < 0: read
 * error (errno). Both sums are checked, in one pass over the bytes: a
 * restore of the whole tensor checks the whole sum and one of part of it
 * the chunks it reads, so a step verify calls clean restores either way. */
static int
st_verify_leaf(const struct store_backend *be, int fd, const Ckpt__Leaf *l,
    char *buf, XXH3_state_t *st, XXH3_state_t *cst, store_problem_cb cb,
    void *arg)
{
	const char *tn = l->tensor != NULL ? l->tensor : "?";
	int chunked = chunksum_leaf_has(l);
	uint64_t off = l->offset, left = l->nbytes, at = 0, h, cpos = 0;
	size_t len, k, ci = 0, badc = 0, firstbad = 0;
	char msg[200];

	XXH3_64bits_reset(st);
	XXH3_64bits_reset(cst);
	be->readahead(fd, off, left);
	while (left > 0) {
		len = left > STORE_CHUNK ? STORE_CHUNK : (size_t)left;
		if (be->read_range(fd, buf, len, off) != 0) {
			if (errno != 0)
				return -1;
			if (cb != NULL)
				cb(arg, tn, "data truncated");
			return 1;
		}
		XXH3_64bits_update(st, buf, len);
		for (k = 0; chunked && k < len; ) {
			size_t n = l->chunk_bytes - cpos < len - k ?
			    (size_t)(l->chunk_bytes - cpos) : len - k;

			XXH3_64bits_update(cst, buf + k, n);
			k += n;
			cpos += n;
			if (cpos == l->chunk_bytes || at + k == l->nbytes) {
				if (XXH3_64bits_digest(cst) !=
				    l->chunk_xxh3[ci] && badc++ == 0)
					firstbad = ci;
				ci++;
				cpos = 0;
				XXH3_64bits_reset(cst);
			}
		}
		off += len;
		at += len;
		left -= len;
	}
	h = XXH3_64bits_digest(st);
	if (h == l->xxh3 && badc == 0)
		return 0;
	if (h != l->xxh3)
		snprintf(msg, sizeof(msg), "checksum mismatch: stored "
		    "%016" PRIx64 ", computed %016" PRIx64, l->xxh3, h);
	else
		msg[0] = '\0';
	if (badc > 0)
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
		    "%schunk checksum mismatch in %zu of %zu chunks of %" PRIu64
		    " bytes (first: chunk %zu)", msg[0] != '\0' ? "; " : "",
		    badc, l->n_chunk_xxh3, l->chunk_bytes, firstbad);
	if (cb != NULL)
		cb(arg, tn, msg);
	return 1;
}

int
store_verify_item(const struct store_backend *be, const Ckpt__Item *item,
    const int *fds, store_problem_cb cb, void *arg, ckd_err *e)
{
	XXH3_state_t *st = NULL, *cst = NULL;
	char *buf = NULL;
	size_t i;
	int r = 0, bad = 0, v;

	if ((st = XXH3_createState()) == NULL ||
	    (cst = XXH3_createState()) == NULL ||
	    (buf = malloc(STORE_CHUNK)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < item->n_leaves; i++) {
		const Ckpt__Leaf *l = item->leaves[i];
		const char *tn = l->tensor != NULL ? l->tensor : "?";

		if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY || !l->has_xxh3)
			continue;
		if (!l->has_fd_index || !l->has_offset) {
			r = err_set(e, CKPT_EINTERNAL, "verify: leaf %zu has no "
			    "file (store_open_item_files not called?)", i);
			goto out;
		}
		errno = 0;
		v = st_verify_leaf(be, fds[l->fd_index], l, buf, st, cst, cb,
		    arg);
		if (v < 0) {
			r = err_errno(e, errno, "read %s",
			    l->file != NULL ? l->file : tn);
			goto out;
		}
		bad += v;
	}
	if (bad > 0)
		r = err_set(e, CKPT_ECORRUPT, "%d tensor%s failed verification",
		    bad, bad == 1 ? "" : "s");
out:
	XXH3_freeState(st);
	XXH3_freeState(cst);
	free(buf);
	return r;
}
