/*
 * tree.c - ckpt_tree: an ordered list of leaves addressed by key paths.
 *
 * Each leaf has a display path ("a/b/0") and an unambiguous encoding of
 * its key path (kind + length-prefixed key per element) used to reject
 * duplicates and paths that are both a leaf and a container.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define MAX_PATH_LEN 65536

/* ---- string map (open addressing, FNV-1a) ---------------------------------- */

static uint64_t
strhash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s != '\0') {
		h ^= (unsigned char)*s++;
		h *= 1099511628211ull;
	}
	return h;
}

void
strmap_free(struct strmap *m)
{
	size_t i;

	for (i = 0; i < m->cap; i++)
		free(m->keys[i]);
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof *m);
}

static int
strmap_grow(struct strmap *m)
{
	struct strmap nm = { 0 };
	size_t i, j;

	nm.cap = m->cap == 0 ? 16 : m->cap * 2;
	nm.keys = calloc(nm.cap, sizeof *nm.keys);
	nm.vals = calloc(nm.cap, sizeof *nm.vals);
	if (nm.keys == NULL || nm.vals == NULL) {
		free(nm.keys);
		free(nm.vals);
		return CKPT_ENOMEM;
	}
	for (i = 0; i < m->cap; i++) {
		if (m->keys[i] == NULL)
			continue;
		j = strhash(m->keys[i]) & (nm.cap - 1);
		while (nm.keys[j] != NULL)
			j = (j + 1) & (nm.cap - 1);
		nm.keys[j] = m->keys[i];
		nm.vals[j] = m->vals[i];
	}
	nm.n = m->n;
	free(m->keys);
	free(m->vals);
	*m = nm;
	return 0;
}

/* Insert key (copied) unless present; an existing value is kept. */
int
strmap_put(struct strmap *m, const char *key, long val)
{
	size_t j;

	if ((m->n + 1) * 2 > m->cap && strmap_grow(m) != 0)
		return CKPT_ENOMEM;
	j = strhash(key) & (m->cap - 1);
	while (m->keys[j] != NULL) {
		if (strcmp(m->keys[j], key) == 0)
			return 0;
		j = (j + 1) & (m->cap - 1);
	}
	if ((m->keys[j] = strdup(key)) == NULL)
		return CKPT_ENOMEM;
	m->vals[j] = val;
	m->n++;
	return 0;
}

long
strmap_get(const struct strmap *m, const char *key)
{
	size_t j;

	if (m->cap == 0)
		return -1;
	j = strhash(key) & (m->cap - 1);
	while (m->keys[j] != NULL) {
		if (strcmp(m->keys[j], key) == 0)
			return m->vals[j];
		j = (j + 1) & (m->cap - 1);
	}
	return -1;
}

/* ---- mappings ----------------------------------------------------------------- */

void
mapping_unref(struct mapping *m)
{
	if (m == NULL || --m->refs > 0)
		return;
	if (m->addr != NULL)
		munmap(m->addr, m->len);
	free(m);
}

int
tree_hold_mapping(ckpt_tree *t, struct mapping *m)
{
	struct mapping **nm;
	size_t i;

	for (i = 0; i < t->nmaps; i++)
		if (t->maps[i] == m)
			return 0;
	nm = realloc(t->maps, (t->nmaps + 1) * sizeof *nm);
	if (nm == NULL)
		return CKPT_ENOMEM;
	t->maps = nm;
	t->maps[t->nmaps++] = m;
	m->refs++;
	return 0;
}

/* ---- paths ---------------------------------------------------------------------- */

int
tree_parse_path(char *buf, ckpt_key *keys, size_t maxkeys, size_t *depth)
{
	size_t d = 0;
	char *p = buf, *slash;

	*depth = 0;
	if (*p == '\0')
		return 0;
	for (;;) {
		slash = strchr(p, '/');
		if (slash != NULL)
			*slash = '\0';
		if (*p == '\0' || d == maxkeys)
			return CKPT_EINVAL;
		keys[d].kind = CKPT_KEY_DICT;
		keys[d].key = p;
		keys[d].index = 0;
		d++;
		if (slash == NULL)
			break;
		p = slash + 1;
	}
	*depth = d;
	return 0;
}

/* Append to a growable string; returns 0 or CKPT_ENOMEM. */
struct sbuf {
	char *s;
	size_t len, cap;
};

static int
sbuf_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap == 0 ? 64 : b->cap;
		char *ns;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		if ((ns = realloc(b->s, ncap)) == NULL)
			return CKPT_ENOMEM;
		b->s = ns;
		b->cap = ncap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

static int
enc_elem(struct sbuf *b, const ckpt_key *k)
{
	char tmp[48];
	int n;

	if (k->kind == CKPT_KEY_DICT) {
		size_t kl = strlen(k->key);
		n = snprintf(tmp, sizeof tmp, "d%zu:", kl);
		if (sbuf_add(b, tmp, (size_t)n) != 0 || sbuf_add(b, k->key, kl) != 0)
			return CKPT_ENOMEM;
		return 0;
	}
	n = snprintf(tmp, sizeof tmp, "%c%" PRIu64 ";",
	    k->kind == CKPT_KEY_LIST ? 'l' : 't', k->index);
	return sbuf_add(b, tmp, (size_t)n);
}

static int
check_keys(const ckpt_key *path, size_t depth)
{
	size_t i, total = 0;

	if (depth > CKPT_MAX_DEPTH || (depth > 0 && path == NULL))
		return CKPT_EINVAL;
	for (i = 0; i < depth; i++) {
		if (path[i].kind == CKPT_KEY_DICT) {
			if (path[i].key == NULL)
				return CKPT_EINVAL;
			total += strlen(path[i].key) + 1;
		} else if (path[i].kind != CKPT_KEY_LIST &&
		    path[i].kind != CKPT_KEY_TUPLE) {
			return CKPT_EINVAL;
		} else {
			total += 21;
		}
	}
	return total > MAX_PATH_LEN ? CKPT_EINVAL : 0;
}

static void
leaf_clear(struct tleaf *l)
{
	size_t i;

	for (i = 0; i < l->depth; i++)
		free((char *)l->path[i].key);
	free(l->path);
	free(l->path_str);
	free(l->enc);
	free(l->owned);
	free(l->pieces);
	free(l->s);
	free(l->file);
	free(l->piece);
	memset(l, 0, sizeof *l);
}

/* A new piece (pi) against the pieces already at its path (first). */
struct newpiece {
	ckpt_leaf_kind kind;
	int mixed_dtypes;       /* targets: each piece has its own dtype */
	ckpt_dtype dtype;
	int ndim;
	const int64_t *gshape, *off, *shape;
};

static int
piece_fits(const ckpt_tree *t, long first, const struct newpiece *pi,
    long *last)
{
	int64_t roff[CKPT_MAX_NDIM], rshape[CKPT_MAX_NDIM];
	long i;

	for (i = first; i >= 0; i = t->leaves[i].piece_next) {
		const struct tleaf *o = &t->leaves[i];

		*last = i;
		if (o->piece == NULL || o->kind != pi->kind)
			return CKPT_EINVAL;     /* a whole leaf at that path */
		if ((o->dtype != pi->dtype && !pi->mixed_dtypes) ||
		    o->ndim != pi->ndim ||
		    memcmp(o->piece, pi->gshape,
		    (size_t)pi->ndim * sizeof *pi->gshape) != 0)
			return CKPT_EMISMATCH;
		if (piece_intersect(pi->ndim, o->piece + o->ndim, o->shape,
		    pi->off, pi->shape, roff, rshape) > 0)
			return CKPT_EMISMATCH;
	}
	return 0;
}

static long
append_leaf(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_leaf_kind kind, const struct newpiece *pi, struct tleaf **out)
{
	struct sbuf enc = { 0 }, str = { 0 };
	struct tleaf *l;
	size_t i, prefix_lens[CKPT_MAX_DEPTH + 1];
	long first = -1, last = -1;
	int64_t *pv = NULL;
	int r;

	if ((r = check_keys(path, depth)) != 0)
		return r;
	if (sbuf_add(&enc, "", 0) != 0 || sbuf_add(&str, "", 0) != 0) {
		r = CKPT_ENOMEM;
		goto fail;
	}
	for (i = 0; i < depth; i++) {
		char tmp[24];
		prefix_lens[i] = enc.len;
		if ((r = enc_elem(&enc, &path[i])) != 0)
			goto fail;
		if (i > 0 && (r = sbuf_add(&str, "/", 1)) != 0)
			goto fail;
		if (path[i].kind == CKPT_KEY_DICT) {
			r = sbuf_add(&str, path[i].key, strlen(path[i].key));
		} else {
			int n = snprintf(tmp, sizeof tmp, "%" PRIu64, path[i].index);
			r = sbuf_add(&str, tmp, (size_t)n);
		}
		if (r != 0)
			goto fail;
	}
	/* duplicate (but for pieces of one array), or leaf/container
	 * conflicts */
	r = CKPT_EINVAL;
	first = strmap_get(&t->byenc, enc.s);
	if (first >= 0 && (pi == NULL || (r = piece_fits(t, first, pi,
	    &last)) != 0))
		goto fail;
	r = CKPT_EINVAL;
	if (strmap_get(&t->prefixes, enc.s) >= 0)
		goto fail;
	if (pi != NULL) {
		if ((pv = malloc(2 * (size_t)(pi->ndim > 0 ? pi->ndim : 1) *
		    sizeof *pv)) == NULL) {
			r = CKPT_ENOMEM;
			goto fail;
		}
		memcpy(pv, pi->gshape, (size_t)pi->ndim * sizeof *pv);
		memcpy(pv + pi->ndim, pi->off, (size_t)pi->ndim * sizeof *pv);
	}
	for (i = 0; i < depth; i++) {
		char save = enc.s[prefix_lens[i]];
		long hit;
		enc.s[prefix_lens[i]] = '\0';
		hit = strmap_get(&t->byenc, enc.s);
		enc.s[prefix_lens[i]] = save;
		if (hit >= 0)
			goto fail;
	}
	if (t->n == t->cap) {
		size_t ncap = t->cap == 0 ? 8 : t->cap * 2;
		struct tleaf *nl = realloc(t->leaves, ncap * sizeof *nl);
		if (nl == NULL) {
			r = CKPT_ENOMEM;
			goto fail;
		}
		t->leaves = nl;
		t->cap = ncap;
	}
	for (i = 0; i < depth; i++) {
		char save = enc.s[prefix_lens[i]];
		enc.s[prefix_lens[i]] = '\0';
		r = strmap_put(&t->prefixes, enc.s, 1);
		enc.s[prefix_lens[i]] = save;
		if (r != 0)
			goto fail;
	}
	/* strmap_put keeps the first piece's index */
	if ((r = strmap_put(&t->byenc, enc.s, (long)t->n)) != 0 ||
	    (r = strmap_put(&t->bystr, str.s, (long)t->n)) != 0)
		goto fail;

	l = &t->leaves[t->n];
	memset(l, 0, sizeof *l);
	l->kind = kind;
	l->enc = enc.s;
	l->path_str = str.s;
	l->piece = pv;
	l->piece_next = -1;
	if (depth > 0 && (l->path = calloc(depth, sizeof *l->path)) == NULL) {
		l->enc = l->path_str = NULL;
		l->piece = NULL;
		r = CKPT_ENOMEM;
		goto fail;
	}
	for (i = 0; i < depth; i++) {
		l->path[i] = path[i];
		if (path[i].kind == CKPT_KEY_DICT) {
			if ((l->path[i].key = strdup(path[i].key)) == NULL) {
				l->depth = i;
				leaf_clear(l);
				return CKPT_ENOMEM;
			}
		} else {
			l->path[i].key = NULL;
		}
	}
	l->depth = depth;
	if (pi != NULL) {
		l->dtype = pi->dtype;
		l->ndim = pi->ndim;
		if (pi->ndim > 0)
			memcpy(l->shape, pi->shape,
			    (size_t)pi->ndim * sizeof *l->shape);
		if (last >= 0)
			t->leaves[last].piece_next = (long)t->n;
	}
	*out = l;
	return (long)t->n++;
fail:
	free(pv);
	free(enc.s);
	free(str.s);
	return r;
}

long
tree_append(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_leaf_kind kind, struct tleaf **out)
{
	return append_leaf(t, path, depth, kind, NULL, out);
}

long
tree_append_piece(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_leaf_kind kind, ckpt_dtype dtype, int ndim, const int64_t *gshape,
    const int64_t *offsets, const int64_t *shape, int mixed_dtypes,
    struct tleaf **out)
{
	struct newpiece pi;

	pi.kind = kind;
	pi.mixed_dtypes = mixed_dtypes;
	pi.dtype = dtype;
	pi.ndim = ndim;
	pi.gshape = gshape;
	pi.off = offsets;
	pi.shape = shape;
	return append_leaf(t, path, depth, kind, &pi, out);
}

size_t
tree_nelems(int ndim, const int64_t *shape, int *overflow)
{
	size_t n = 1;
	int i;

	*overflow = 0;
	for (i = 0; i < ndim; i++) {
		if (shape[i] < 0) {
			*overflow = 1;
			return 0;
		}
		if (shape[i] != 0 && n > SIZE_MAX / (size_t)shape[i]) {
			*overflow = 1;
			return 0;
		}
		n *= (size_t)shape[i];
	}
	return n;
}

/* ---- public API ------------------------------------------------------------------- */

CKPT_API ckpt_tree *
ckpt_tree_new(void)
{
	return calloc(1, sizeof(ckpt_tree));
}

CKPT_API void
ckpt_tree_free(ckpt_tree *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->n; i++)
		leaf_clear(&t->leaves[i]);
	free(t->leaves);
	strmap_free(&t->byenc);
	strmap_free(&t->bystr);
	strmap_free(&t->prefixes);
	for (i = 0; i < t->nmaps; i++)
		mapping_unref(t->maps[i]);
	free(t->maps);
	free(t);
}

/* Run fn with the parsed string path. */
#define WITH_PATH(t, path, keys, depth, body) do {                       \
	ckpt_key keys[CKPT_MAX_DEPTH];                                      \
	size_t depth;                                                       \
	char *buf_;                                                         \
	int r_;                                                             \
	if ((t) == NULL || (path) == NULL || strlen(path) > MAX_PATH_LEN)   \
		return CKPT_EINVAL;                                         \
	if ((buf_ = strdup(path)) == NULL)                                  \
		return CKPT_ENOMEM;                                         \
	if ((r_ = tree_parse_path(buf_, keys, CKPT_MAX_DEPTH, &depth)) != 0) { \
		free(buf_);                                                 \
		return r_;                                                  \
	}                                                                   \
	r_ = (body);                                                        \
	free(buf_);                                                         \
	return r_;                                                          \
} while (0)

static int
check_array(ckpt_dtype dtype, int ndim, const int64_t *shape, size_t nbytes)
{
	size_t n, sz;
	int ovf;

	if (!dtype_valid((int)dtype))
		return CKPT_EDTYPE;
	if (ndim < 0 || ndim > CKPT_MAX_NDIM || (ndim > 0 && shape == NULL))
		return CKPT_EINVAL;
	n = tree_nelems(ndim, shape, &ovf);
	sz = ckpt_dtype_size(dtype);
	if (ovf || (n != 0 && sz > SIZE_MAX / n) || n * sz != nbytes)
		return CKPT_EINVAL;
	return 0;
}

CKPT_API int
ckpt_tree_add_array_k(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_dtype dtype, int ndim, const int64_t *shape, const void *data,
    size_t nbytes)
{
	struct tleaf *l;
	long r;

	if (t == NULL)
		return CKPT_EINVAL;
	if ((r = check_array(dtype, ndim, shape, nbytes)) != 0)
		return (int)r;
	if (nbytes > 0 && data == NULL)
		return CKPT_EINVAL;
	if ((r = tree_append(t, path, depth, CKPT_LEAF_ARRAY, &l)) < 0)
		return (int)r;
	l->dtype = dtype;
	l->ndim = ndim;
	if (ndim > 0)
		memcpy(l->shape, shape, (size_t)ndim * sizeof *shape);
	l->data = data;
	l->nbytes = nbytes;
	return 0;
}

static int
piece_cmp(const void *a, const void *b)
{
	const ckpt_piece *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

CKPT_API int
ckpt_tree_add_array_pieces_k(ckpt_tree *t, const ckpt_key *path,
    size_t depth, ckpt_dtype dtype, int ndim, const int64_t *shape,
    const ckpt_piece *pieces, size_t npieces)
{
	struct tleaf *l;
	ckpt_piece *v = NULL;
	size_t i, n = 0, nbytes, sz;
	uint64_t end = 0;
	int ovf;
	long r;

	if (t == NULL || (npieces > 0 && pieces == NULL))
		return CKPT_EINVAL;
	if (!dtype_valid((int)dtype) || ndim < 0 || ndim > CKPT_MAX_NDIM ||
	    (ndim > 0 && shape == NULL))
		return dtype_valid((int)dtype) ? CKPT_EINVAL : CKPT_EDTYPE;
	nbytes = tree_nelems(ndim, shape, &ovf);
	sz = ckpt_dtype_size(dtype);
	if (ovf || (nbytes != 0 && sz > SIZE_MAX / nbytes))
		return CKPT_EINVAL;
	nbytes *= sz;
	if (npieces > SIZE_MAX / sizeof *v)
		return CKPT_ENOMEM;
	if (npieces > 0 && (v = malloc(npieces * sizeof *v)) == NULL)
		return CKPT_ENOMEM;
	for (i = 0; i < npieces; i++) {
		if (pieces[i].nbytes == 0)
			continue;
		if (pieces[i].data == NULL)
			goto inval;
		v[n++] = pieces[i];
	}
	qsort(v, n, sizeof *v, piece_cmp);
	for (i = 0; i < n; i++) {
		/* exactly adjacent: no gap, no overlap, no overrun */
		if (v[i].offset != end || v[i].nbytes > nbytes - end)
			goto inval;
		end += v[i].nbytes;
	}
	if (end != nbytes)
		goto inval;
	if ((r = check_array(dtype, ndim, shape, nbytes)) != 0 ||
	    (r = tree_append(t, path, depth, CKPT_LEAF_ARRAY, &l)) < 0) {
		free(v);
		return (int)r;
	}
	l->dtype = dtype;
	l->ndim = ndim;
	if (ndim > 0)
		memcpy(l->shape, shape, (size_t)ndim * sizeof *shape);
	l->nbytes = nbytes;
	l->pieces = v;
	l->npieces = n;
	return 0;
inval:
	free(v);
	return CKPT_EINVAL;
}

CKPT_API int
ckpt_tree_add_arrays_pieces_k(ckpt_tree *t, const ckpt_array_spec *specs,
    size_t n, const ckpt_piece *pieces, size_t *failed)
{
	const ckpt_array_spec *sp;
	size_t i;
	int r;

	if (failed != NULL)
		*failed = 0;
	if (t == NULL || (n > 0 && specs == NULL))
		return CKPT_EINVAL;
	for (i = 0; i < n; i++) {
		sp = &specs[i];
		r = ckpt_tree_add_array_pieces_k(t, sp->path, sp->depth,
		    (ckpt_dtype)sp->dtype, sp->ndim, sp->shape,
		    sp->npieces > 0 && pieces != NULL ? pieces + sp->first : NULL,
		    sp->npieces);
		if (r == 0 && sp->tag != NULL)
			r = ckpt_tree_set_tag(t, sp->tag);
		if (r != 0) {
			if (failed != NULL)
				*failed = i;
			return r;
		}
	}
	return 0;
}

CKPT_API int
ckpt_tree_add_array(ckpt_tree *t, const char *path, ckpt_dtype dtype,
    int ndim, const int64_t *shape, const void *data, size_t nbytes)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_array_k(t, keys, depth,
	    dtype, ndim, shape, data, nbytes));
}

/* The arguments of a piece: global shape, offsets and shape agree. */
static int
check_piece(ckpt_dtype dtype, int ndim, const int64_t *gshape,
    const int64_t *offsets, const int64_t *shape)
{
	size_t n;
	int ovf;

	if (!dtype_valid((int)dtype))
		return CKPT_EDTYPE;
	if (ndim < 1 || ndim > CKPT_MAX_NDIM || gshape == NULL ||
	    offsets == NULL || shape == NULL)
		return CKPT_EINVAL;
	n = tree_nelems(ndim, gshape, &ovf);
	if (ovf || (n != 0 && ckpt_dtype_size(dtype) > SIZE_MAX / n))
		return CKPT_EINVAL;
	return piece_check(ndim, gshape, offsets, shape);
}

CKPT_API int
ckpt_tree_add_piece_k(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_dtype dtype, int ndim, const int64_t *global_shape,
    const int64_t *offsets, const int64_t *shape, const void *data,
    size_t nbytes)
{
	struct tleaf *l;
	long r;

	if (t == NULL)
		return CKPT_EINVAL;
	if ((r = check_piece(dtype, ndim, global_shape, offsets, shape)) != 0 ||
	    (r = check_array(dtype, ndim, shape, nbytes)) != 0)
		return (int)r;
	if (nbytes > 0 && data == NULL)
		return CKPT_EINVAL;
	if ((r = tree_append_piece(t, path, depth, CKPT_LEAF_ARRAY, dtype, ndim,
	    global_shape, offsets, shape, 0, &l)) < 0)
		return (int)r;
	l->data = data;
	l->nbytes = nbytes;
	return 0;
}

CKPT_API int
ckpt_tree_add_piece(ckpt_tree *t, const char *path, ckpt_dtype dtype,
    int ndim, const int64_t *global_shape, const int64_t *offsets,
    const int64_t *shape, const void *data, size_t nbytes)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_piece_k(t, keys, depth,
	    dtype, ndim, global_shape, offsets, shape, data, nbytes));
}

CKPT_API int
ckpt_tree_add_piece_target_k(ckpt_tree *t, const ckpt_key *path,
    size_t depth, ckpt_dtype dtype, int ndim, const int64_t *global_shape,
    const int64_t *offsets, const int64_t *shape, void *dst, size_t nbytes)
{
	struct tleaf *l;
	size_t n;
	int ovf;
	long r;

	if (t == NULL)
		return CKPT_EINVAL;
	if ((r = check_piece(dtype, ndim, global_shape, offsets, shape)) != 0)
		return (int)r;
	n = tree_nelems(ndim, shape, &ovf);
	if (dst != NULL && (r = check_array(dtype, ndim, shape, nbytes)) != 0)
		return (int)r;
	if ((r = tree_append_piece(t, path, depth, CKPT_LEAF_TARGET, dtype,
	    ndim, global_shape, offsets, shape, 1, &l)) < 0)
		return (int)r;
	l->dst = dst;
	l->data = dst;
	l->nbytes = n * ckpt_dtype_size(dtype);
	return 0;
}

CKPT_API int
ckpt_tree_add_piece_target(ckpt_tree *t, const char *path, ckpt_dtype dtype,
    int ndim, const int64_t *global_shape, const int64_t *offsets,
    const int64_t *shape, void *dst, size_t nbytes)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_piece_target_k(t, keys,
	    depth, dtype, ndim, global_shape, offsets, shape, dst, nbytes));
}

CKPT_API int
ckpt_tree_add_scalar_k(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_leaf_kind kind, int64_t i, double f, int b, const char *s)
{
	struct tleaf *l;
	char *sc = NULL;
	long r;

	if (t == NULL)
		return CKPT_EINVAL;
	switch (kind) {
	case CKPT_LEAF_INT: case CKPT_LEAF_FLOAT: case CKPT_LEAF_BOOL:
	case CKPT_LEAF_NONE: case CKPT_LEAF_EMPTY_DICT:
	case CKPT_LEAF_EMPTY_LIST: case CKPT_LEAF_EMPTY_TUPLE:
		break;
	case CKPT_LEAF_STR:
		if (s == NULL)
			return CKPT_EINVAL;
		if ((sc = strdup(s)) == NULL)
			return CKPT_ENOMEM;
		break;
	default:
		return CKPT_EINVAL;
	}
	if ((r = tree_append(t, path, depth, kind, &l)) < 0) {
		free(sc);
		return (int)r;
	}
	l->i = kind == CKPT_LEAF_INT ? i : 0;
	l->f = kind == CKPT_LEAF_FLOAT ? f : 0;
	l->b = kind == CKPT_LEAF_BOOL ? (b != 0) : 0;
	l->s = sc;
	return 0;
}

CKPT_API int
ckpt_tree_add_int(ckpt_tree *t, const char *path, int64_t v)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_scalar_k(t, keys, depth,
	    CKPT_LEAF_INT, v, 0, 0, NULL));
}

CKPT_API int
ckpt_tree_add_float(ckpt_tree *t, const char *path, double v)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_scalar_k(t, keys, depth,
	    CKPT_LEAF_FLOAT, 0, v, 0, NULL));
}

CKPT_API int
ckpt_tree_add_bool(ckpt_tree *t, const char *path, int v)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_scalar_k(t, keys, depth,
	    CKPT_LEAF_BOOL, 0, 0, v, NULL));
}

CKPT_API int
ckpt_tree_add_str(ckpt_tree *t, const char *path, const char *v)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_scalar_k(t, keys, depth,
	    CKPT_LEAF_STR, 0, 0, 0, v));
}

CKPT_API int
ckpt_tree_add_none(ckpt_tree *t, const char *path)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_scalar_k(t, keys, depth,
	    CKPT_LEAF_NONE, 0, 0, 0, NULL));
}

CKPT_API int
ckpt_tree_set_tag(ckpt_tree *t, const char *tag)
{
	if (t == NULL || t->n == 0 || tag == NULL || strlen(tag) > CKPT_MAX_TAG)
		return CKPT_EINVAL;
	strcpy(t->leaves[t->n - 1].tag, tag);
	return 0;
}

CKPT_API int
ckpt_tree_add_target_k(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_dtype dtype, int ndim, const int64_t *shape, void *dst,
    size_t nbytes)
{
	struct tleaf *l;
	size_t n;
	int ovf;
	long r;

	if (t == NULL)
		return CKPT_EINVAL;
	if (!dtype_valid((int)dtype))
		return CKPT_EDTYPE;
	if (ndim < 0 || ndim > CKPT_MAX_NDIM || (ndim > 0 && shape == NULL))
		return CKPT_EINVAL;
	n = tree_nelems(ndim, shape, &ovf);
	if (ovf)
		return CKPT_EINVAL;
	if (dst != NULL && (r = check_array(dtype, ndim, shape, nbytes)) != 0)
		return (int)r;
	if ((r = tree_append(t, path, depth, CKPT_LEAF_TARGET, &l)) < 0)
		return (int)r;
	l->dtype = dtype;
	l->ndim = ndim;
	if (ndim > 0)
		memcpy(l->shape, shape, (size_t)ndim * sizeof *shape);
	l->dst = dst;
	l->data = dst;
	l->nbytes = n * ckpt_dtype_size(dtype);
	return 0;
}

CKPT_API int
ckpt_tree_add_target(ckpt_tree *t, const char *path, ckpt_dtype dtype,
    int ndim, const int64_t *shape, void *dst, size_t nbytes)
{
	WITH_PATH(t, path, keys, depth, ckpt_tree_add_target_k(t, keys, depth,
	    dtype, ndim, shape, dst, nbytes));
}

CKPT_API size_t
ckpt_tree_nleaves(const ckpt_tree *t)
{
	return t == NULL ? 0 : t->n;
}

CKPT_API int
ckpt_tree_leaf(const ckpt_tree *t, size_t i, ckpt_leaf *out)
{
	const struct tleaf *l;

	if (t == NULL || out == NULL || i >= t->n)
		return CKPT_EINVAL;
	l = &t->leaves[i];
	memset(out, 0, sizeof *out);
	out->kind = l->kind;
	out->path = l->path;
	out->depth = l->depth;
	out->path_str = l->path_str;
	out->dtype = l->dtype;
	out->ndim = l->ndim;
	out->shape = l->shape;
	out->data = l->data;
	out->nbytes = l->nbytes;
	out->i = l->i;
	out->f = l->f;
	out->b = l->b;
	out->s = l->s;
	out->tag = l->tag;
	out->xxh3 = l->xxh3;
	out->file = l->file;
	if (l->piece != NULL) {
		out->global_shape = l->piece;
		out->offsets = l->piece + l->ndim;
	}
	return 0;
}

CKPT_API long
ckpt_tree_find(const ckpt_tree *t, const char *path)
{
	if (t == NULL || path == NULL)
		return -1;
	return strmap_get(&t->bystr, path);
}

char *
tree_path_str(const ckpt_key *path, size_t depth)
{
	struct sbuf str = { 0 };
	size_t i;
	int r = sbuf_add(&str, "", 0);

	for (i = 0; r == 0 && i < depth; i++) {
		char tmp[24];
		if (i > 0 && (r = sbuf_add(&str, "/", 1)) != 0)
			break;
		if (path[i].kind == CKPT_KEY_DICT) {
			r = sbuf_add(&str, path[i].key != NULL ? path[i].key : "",
			    path[i].key != NULL ? strlen(path[i].key) : 0);
		} else {
			int n = snprintf(tmp, sizeof tmp, "%" PRIu64, path[i].index);
			r = sbuf_add(&str, tmp, (size_t)n);
		}
	}
	if (r != 0) {
		free(str.s);
		return NULL;
	}
	return str.s;
}
