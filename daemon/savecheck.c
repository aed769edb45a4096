/*
 * savecheck.c - validation of a Save request (see savecheck.h).
 *
 * Order: the request's shape first (items, leaves, names, documents), each
 * count checked before it is used to size anything; then, per leaf, path,
 * dtype, shape and byte range; then across leaves: the sum of array bytes
 * against the memfd size, no two arrays overlapping, unique paths.
 */
#include <sys/stat.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pieces.h"
#include "savecheck.h"
#include "stepmetrics.h"
#include "store.h"

/* "a/b/0" for messages (truncated to len). */
void
savecheck_leaf_path(const Ckpt__Leaf *l, char *buf, size_t len)
{
	size_t i, off = 0;
	int n;

	buf[0] = '\0';
	for (i = 0; i < l->n_path && off < len; i++) {
		const Ckpt__PathElem *p = l->path[i];

		if (p->kind == CKPT__KEY_KIND__KEY_DICT)
			n = snprintf(buf + off, len - off, "%s%s",
			    i ? "/" : "", p->key ? p->key : "");
		else
			n = snprintf(buf + off, len - off, "%s%" PRIu64,
			    i ? "/" : "", p->index);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

/* Self-delimiting binary encoding of a leaf path, so that sorting puts a
 * path right before the paths it prefixes. */
struct enc_path {
	uint8_t *b;
	size_t len;
	size_t leaf;
};

static int
savecheck_encode_path(const Ckpt__Leaf *l, struct enc_path *ep)
{
	size_t i, len = 0, off = 0;

	for (i = 0; i < l->n_path; i++)
		len += 1 + 8 + (l->path[i]->kind == CKPT__KEY_KIND__KEY_DICT ?
		    strlen(l->path[i]->key) : 0);
	if ((ep->b = malloc(len ? len : 1)) == NULL)
		return CKPT_ENOMEM;
	for (i = 0; i < l->n_path; i++) {
		const Ckpt__PathElem *p = l->path[i];
		uint64_t v;
		int k;

		ep->b[off++] = (uint8_t)('0' + p->kind);
		v = p->kind == CKPT__KEY_KIND__KEY_DICT ?
		    (uint64_t)strlen(p->key) : p->index;
		for (k = 7; k >= 0; k--)
			ep->b[off++] = (uint8_t)(v >> (k * 8));
		if (p->kind == CKPT__KEY_KIND__KEY_DICT) {
			memcpy(ep->b + off, p->key, strlen(p->key));
			off += strlen(p->key);
		}
	}
	ep->len = off;
	return 0;
}

static int
savecheck_enc_cmp(const void *a, const void *b)
{
	const struct enc_path *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->b, y->b, n);

	if (c != 0)
		return c;
	return x->len < y->len ? -1 : x->len > y->len;
}

/* The run of pieces with the path of ep[i]. */
static int
savecheck_piece_run(const Ckpt__Item *it, const struct enc_path *ep,
    size_t n, size_t i, const char *path, ckd_err *e)
{
	const Ckpt__Leaf **p;
	size_t k, m = 0;
	int r;

	for (k = i; k < n && ep[k].len == ep[i].len &&
	    memcmp(ep[k].b, ep[i].b, ep[i].len) == 0; k++)
		if (!pieces_is_piece(it->leaves[ep[k].leaf]))
			return err_set(e, CKPT_EINVAL, "duplicate leaf path "
			    "'%s' in item '%s'", path, it->name);
	if ((p = malloc((k - i) * sizeof *p)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (k = i; k < n && ep[k].len == ep[i].len &&
	    memcmp(ep[k].b, ep[i].b, ep[i].len) == 0; k++)
		p[m++] = it->leaves[ep[k].leaf];
	r = pieces_check(p, m, 0, path, e);
	free(p);
	return r;
}

/* No duplicate paths (but pieces of one global array), and no leaf that
 * is also a container. */
static int
savecheck_paths(const Ckpt__Item *it, ckd_err *e)
{
	struct enc_path *ep;
	char path[256];
	size_t i, n = it->n_leaves;
	int r = 0;

	if (n < 2)
		return 0;
	if ((ep = calloc(n, sizeof *ep)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (i = 0; i < n && r == 0; i++) {
		ep[i].leaf = i;
		if (savecheck_encode_path(it->leaves[i], &ep[i]) != 0)
			r = err_set(e, CKPT_ENOMEM, "out of memory");
	}
	if (r == 0) {
		qsort(ep, n, sizeof *ep, savecheck_enc_cmp);
		for (i = 0; i + 1 < n && r == 0; i++) {
			if (ep[i].len > ep[i + 1].len ||
			    memcmp(ep[i].b, ep[i + 1].b, ep[i].len) != 0)
				continue;
			savecheck_leaf_path(it->leaves[ep[i].leaf], path,
			    sizeof path);
			if (ep[i].len == ep[i + 1].len &&
			    pieces_is_piece(it->leaves[ep[i].leaf]) &&
			    pieces_is_piece(it->leaves[ep[i + 1].leaf])) {
				/* Pieces of one global array: agree, no
				 * overlap (the run of them checked once). */
				if (i == 0 || ep[i - 1].len != ep[i].len ||
				    memcmp(ep[i - 1].b, ep[i].b, ep[i].len) != 0)
					r = savecheck_piece_run(it, ep, n, i,
					    path, e);
				continue;
			}
			if (ep[i].len == ep[i + 1].len)
				r = err_set(e, CKPT_EINVAL, "duplicate leaf "
				    "path '%s' in item '%s'", path, it->name);
			else
				r = err_set(e, CKPT_EINVAL, "leaf '%s' of item "
				    "'%s' is also a container", path, it->name);
			break;
		}
	}
	for (i = 0; i < n; i++)
		free(ep[i].b);
	free(ep);
	return r;
}


int
savecheck_is_tree(Ckpt__Handler h)
{
	return h == CKPT__HANDLER__HANDLER_STANDARD ||
	    h == CKPT__HANDLER__HANDLER_PYTREE ||
	    h == CKPT__HANDLER__HANDLER_ARRAY;
}

/* An item name is a directory of the step: restorable, so not hidden
 * (restore skips dot names), not a path, not the step metadata file. */
int
savecheck_item_name(const char *name, ckd_err *e)
{
	if (name == NULL || name[0] == '\0')
		return err_set(e, CKPT_EINVAL, "item name is empty");
	if (strlen(name) > CKPT_MAX_ITEM_NAME)
		return err_set(e, CKPT_EINVAL, "item name longer than %d bytes",
		    CKPT_MAX_ITEM_NAME);
	if (name[0] == '.')
		return err_set(e, CKPT_EINVAL, "invalid item name \"%s\": item "
		    "names must not start with '.'", name);
	if (!store_valid_component(name) ||
	    strcmp(name, STORE_STEP_METADATA) == 0)
		return err_set(e, CKPT_EINVAL, "invalid item name \"%s\"", name);
	return 0;
}

static size_t
savecheck_digits(uint64_t v)
{
	size_t n = 1;

	while (v >= 10) {
		v /= 10;
		n++;
	}
	return n;
}

static int
savecheck_leaf(const Ckpt__Item *it, Ckpt__Leaf *l, uint64_t memsize,
    ckd_err *e)
{
	char path[256];
	uint64_t count = 1, nbytes;
	size_t i, isz, joined = 0;
	int r;

	if (l->n_path > CKPT_MAX_DEPTH)
		return err_set(e, CKPT_ETOOBIG, "leaf path deeper than %d in "
		    "item '%s'", CKPT_MAX_DEPTH, it->name);
	if (l->n_path == 0 && it->n_leaves != 1)
		return err_set(e, CKPT_EINVAL, "leaf with an empty path in "
		    "item '%s'", it->name);
	for (i = 0; i < l->n_path; i++) {
		const Ckpt__PathElem *p = l->path[i];

		if (p->kind != CKPT__KEY_KIND__KEY_DICT &&
		    p->kind != CKPT__KEY_KIND__KEY_LIST &&
		    p->kind != CKPT__KEY_KIND__KEY_TUPLE)
			return err_set(e, CKPT_EINVAL, "unknown key kind %d "
			    "in item '%s'", (int)p->kind, it->name);
		if (p->kind == CKPT__KEY_KIND__KEY_DICT && (p->key == NULL ||
		    strlen(p->key) > CKPT_MAX_KEY))
			return err_set(e, CKPT_EINVAL, "dict key missing or "
			    "longer than %d bytes in item '%s'", CKPT_MAX_KEY,
			    it->name);
		if (p->kind != CKPT__KEY_KIND__KEY_DICT &&
		    p->index > INT64_MAX)
			return err_set(e, CKPT_EINVAL, "list index %" PRIu64
			    " out of range in item '%s'", p->index, it->name);
		/* Joined with '.', the path names the tensor. */
		joined += (i > 0) + (p->kind == CKPT__KEY_KIND__KEY_DICT ?
		    strlen(p->key) : savecheck_digits(p->index));
	}
	if (joined > CKPT_MAX_JOINED_PATH)
		return err_set(e, CKPT_ETOOBIG, "a leaf path of item '%s' is "
		    "longer than %d bytes when joined", it->name,
		    CKPT_MAX_JOINED_PATH);
	savecheck_leaf_path(l, path, sizeof path);
	if (l->tag != NULL && strlen(l->tag) > CKPT_MAX_TAG)
		return err_set(e, CKPT_EINVAL, "tag of leaf '%s' longer than "
		    "%d bytes", path, CKPT_MAX_TAG);
	/* Fields the daemon fills in. */
	free(l->file);
	free(l->tensor);
	l->file = l->tensor = NULL;
	l->has_xxh3 = l->has_fd_index = 0;
	free(l->chunk_xxh3);
	l->chunk_xxh3 = NULL;
	l->n_chunk_xxh3 = 0;
	l->has_chunk_bytes = 0;
	if (pieces_is_piece(l) && (r = pieces_check_one(l, path, e)) != 0)
		return r;
	if (l->replicated_elsewhere && l->kind != CKPT__LEAF_KIND__LEAF_ARRAY)
		return err_set(e, CKPT_EINVAL, "leaf '%s': only arrays are "
		    "replicated elsewhere", path);
	switch (l->kind) {
	case CKPT__LEAF_KIND__LEAF_ARRAY:
		break;
	case CKPT__LEAF_KIND__LEAF_STR:
		if (l->str_value == NULL)
			return err_set(e, CKPT_EINVAL, "string leaf '%s' has no "
			    "value", path);
		return 0;
	case CKPT__LEAF_KIND__LEAF_INT:
	case CKPT__LEAF_KIND__LEAF_FLOAT:
	case CKPT__LEAF_KIND__LEAF_BOOL:
	case CKPT__LEAF_KIND__LEAF_NONE:
	case CKPT__LEAF_KIND__LEAF_EMPTY_DICT:
	case CKPT__LEAF_KIND__LEAF_EMPTY_LIST:
	case CKPT__LEAF_KIND__LEAF_EMPTY_TUPLE:
		return 0;
	default:
		return err_set(e, CKPT_EINVAL, "unknown leaf kind %d for leaf "
		    "'%s'", (int)l->kind, path);
	}
	if ((isz = store_dtype_size(l->dtype)) == 0)
		return err_set(e, CKPT_EDTYPE, "unknown dtype %d for leaf '%s'",
		    (int)l->dtype, path);
	if (l->n_shape > CKPT_WIRE_MAX_NDIM)
		return err_set(e, CKPT_EINVAL, "leaf '%s' has %zu dimensions "
		    "(at most %d)", path, l->n_shape, CKPT_WIRE_MAX_NDIM);
	for (i = 0; i < l->n_shape; i++)
		if (l->shape[i] > INT64_MAX ||
		    __builtin_mul_overflow(count, l->shape[i], &count))
			return err_set(e, CKPT_ETOOBIG, "shape of leaf '%s' "
			    "overflows", path);
	if (__builtin_mul_overflow(count, (uint64_t)isz, &nbytes))
		return err_set(e, CKPT_ETOOBIG, "shape of leaf '%s' overflows",
		    path);
	if (l->replicated_elsewhere) {
		/* The primary writes it: no bytes here. */
		if (l->nbytes != 0 && l->nbytes != nbytes)
			return err_set(e, CKPT_EINVAL, "leaf '%s': nbytes %"
			    PRIu64 " does not match its shape and dtype (%"
			    PRIu64 ")", path, l->nbytes, nbytes);
		l->nbytes = nbytes;
		l->offset = 0;
		return 0;
	}
	if (l->nbytes != nbytes)
		return err_set(e, CKPT_EINVAL, "leaf '%s': nbytes %" PRIu64
		    " does not match its shape and dtype (%" PRIu64 ")", path,
		    l->nbytes, nbytes);
	if (l->offset > memsize || nbytes > memsize - l->offset)
		return err_set(e, CKPT_EINVAL, "leaf '%s' (%" PRIu64 " bytes at "
		    "offset %" PRIu64 ") lies outside the staging buffer of %"
		    PRIu64 " bytes", path, nbytes, l->offset, memsize);
	return 0;
}

static int
savecheck_json(const char *what, const char *text, int object, ckd_err *e)
{
	json_error_t je;
	json_t *j;
	int r = 0;

	if (strlen(text) > CKPT_MAX_DOC)
		return err_set(e, CKPT_ETOOBIG, "%s is larger than %u bytes",
		    what, CKPT_MAX_DOC);
	if ((j = json_loads(text, JSON_DECODE_ANY, &je)) == NULL)
		return err_set(e, CKPT_EINVAL, "%s is not valid JSON: %s "
		    "(line %d)", what, je.text, je.line);
	if (object && !json_is_object(j))
		r = err_set(e, CKPT_EINVAL, "%s must be a JSON object", what);
	json_decref(j);
	return r;
}

/* One array's byte range in the memfd. */
struct span {
	uint64_t off, len;
	const Ckpt__Leaf *l;
};

static int
savecheck_span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	return x->len < y->len ? -1 : x->len > y->len;
}

/* Arrays (each inside the memfd already) add up to at most memsize bytes
 * and no two share a byte. The sum is checked as it runs: with it bounded,
 * the sort of the ranges then only has to compare neighbours. */
static int
savecheck_arrays(const Ckpt__Save *sv, uint64_t memsize, ckd_err *e)
{
	struct span *sp = NULL;
	uint64_t total = 0;
	size_t i, k, n = 0;
	char a[256], b[256];
	int r = 0;

	for (i = 0; i < sv->n_items; i++) {
		const Ckpt__Item *it = sv->items[i];

		if (!savecheck_is_tree(it->handler))
			continue;
		for (k = 0; k < it->n_leaves; k++) {
			const Ckpt__Leaf *l = it->leaves[k];

			if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY ||
			    l->replicated_elsewhere)
				continue;
			if (__builtin_add_overflow(total, l->nbytes, &total) ||
			    total > memsize)
				return err_set(e, CKPT_ETOOBIG, "the arrays of "
				    "this save add up to more than the %" PRIu64
				    " bytes of its staging buffer", memsize);
			if (l->nbytes > 0)
				n++;
		}
	}
	if (n < 2)
		return 0;
	if ((sp = malloc(n * sizeof *sp)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	n = 0;
	for (i = 0; i < sv->n_items; i++) {
		const Ckpt__Item *it = sv->items[i];

		if (!savecheck_is_tree(it->handler))
			continue;
		for (k = 0; k < it->n_leaves; k++) {
			const Ckpt__Leaf *l = it->leaves[k];

			if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY ||
			    l->nbytes == 0 || l->replicated_elsewhere)
				continue;
			sp[n].off = l->offset;
			sp[n].len = l->nbytes;
			sp[n++].l = l;
		}
	}
	qsort(sp, n, sizeof *sp, savecheck_span_cmp);
	for (i = 0; i + 1 < n; i++) {
		/* off + len <= memsize: checked per leaf. */
		if (sp[i].off + sp[i].len <= sp[i + 1].off)
			continue;
		savecheck_leaf_path(sp[i].l, a, sizeof a);
		savecheck_leaf_path(sp[i + 1].l, b, sizeof b);
		r = err_set(e, CKPT_EINVAL, "array leaves '%s' and '%s' overlap "
		    "in the staging buffer (bytes %" PRIu64 "..%" PRIu64 " and "
		    "%" PRIu64 "..%" PRIu64 ")", a, b, sp[i].off,
		    sp[i].off + sp[i].len, sp[i + 1].off,
		    sp[i + 1].off + sp[i + 1].len);
		break;
	}
	free(sp);
	return r;
}

/* Counts and names of the items, before any per-leaf work. */
static int
savecheck_shape(Ckpt__Save *sv, ckd_err *e)
{
	size_t i, k, leaves = 0;
	int r;

	if (sv->n_items == 0)
		return err_set(e, CKPT_EINVAL, "Found empty item.");
	if (sv->n_items > CKPT_MAX_ITEMS)
		return err_set(e, CKPT_ETOOBIG, "too many items (%zu, at most "
		    "%d)", sv->n_items, CKPT_MAX_ITEMS);
	if (!sv->composite) {
		Ckpt__Item *it = sv->items[0];

		if (sv->n_items != 1)
			return err_set(e, CKPT_EINVAL, "Must provide `args` of "
			    "type `Composite` when dealing with multiple "
			    "checkpointable objects.");
		if (it->name == NULL) {
			if ((it->name = strdup("default")) == NULL)
				return err_set(e, CKPT_ENOMEM, "out of memory");
		} else if (strcmp(it->name, "default") != 0) {
			return err_set(e, CKPT_EINVAL, "the single unnamed item "
			    "must be called \"default\", not \"%s\"", it->name);
		}
	}
	for (i = 0; i < sv->n_items; i++) {
		const Ckpt__Item *it = sv->items[i];

		if ((r = savecheck_item_name(it->name, e)) != 0)
			return r;
		if (it->n_leaves > CKPT_MAX_LEAVES_PER_ITEM)
			return err_set(e, CKPT_ETOOBIG, "item \"%s\" has too many "
			    "leaves (%zu, at most %u)", it->name, it->n_leaves,
			    CKPT_MAX_LEAVES_PER_ITEM);
		leaves += it->n_leaves;         /* <= 1024 * 2^19: no wrap */
		if (leaves > CKPT_MAX_LEAVES_PER_SAVE)
			return err_set(e, CKPT_ETOOBIG, "this save has too many "
			    "leaves (more than %u)", CKPT_MAX_LEAVES_PER_SAVE);
	}
	/* Names are unique (at most 1024 items: the quadratic scan is
	 * bounded). */
	for (i = 0; i < sv->n_items; i++)
		for (k = 0; k < i; k++)
			if (strcmp(sv->items[k]->name, sv->items[i]->name) == 0)
				return err_set(e, CKPT_EINVAL, "duplicate item "
				    "name \"%s\"", sv->items[i]->name);
	/* Orbax's metrics item (<step>/metrics/metrics) is written with the
	 * step's metrics: no item of the caller's may take its name. */
	for (i = 0; sv->metrics_json != NULL && i < sv->n_items; i++)
		if (strcmp(sv->items[i]->name, STEPMETRICS_ITEM) == 0)
			return err_set(e, CKPT_EINVAL, "Item name \"%s\" is "
			    "reserved; please use a different name.",
			    sv->items[i]->name);
	return 0;
}

int
savecheck_request(Ckpt__Save *sv, uint64_t memsize, ckd_err *e)
{
	size_t i, k;
	int r;

	if ((r = savecheck_shape(sv, e)) != 0)
		return r;
	for (i = 0; i < sv->n_items; i++) {
		Ckpt__Item *it = sv->items[i];

		if (!it->has_handler ||
		    it->handler == CKPT__HANDLER__HANDLER_UNSPECIFIED) {
			it->has_handler = 1;
			it->handler = it->json != NULL && it->n_leaves == 0 ?
			    CKPT__HANDLER__HANDLER_JSON :
			    CKPT__HANDLER__HANDLER_STANDARD;
		}
		switch (it->handler) {
		case CKPT__HANDLER__HANDLER_STANDARD:
		case CKPT__HANDLER__HANDLER_PYTREE:
		case CKPT__HANDLER__HANDLER_ARRAY:
			if (it->n_leaves == 0)
				return err_set(e, CKPT_EINVAL,
				    "Found empty item.");
			if (it->json != NULL)
				return err_set(e, CKPT_EINVAL, "tree item \"%s\" "
				    "must not carry a JSON document", it->name);
			for (k = 0; k < it->n_leaves; k++)
				if ((r = savecheck_leaf(it, it->leaves[k],
				    memsize, e)) != 0)
					return r;
			break;
		case CKPT__HANDLER__HANDLER_JSON:
		case CKPT__HANDLER__HANDLER_PROTO:
			if (it->json == NULL)
				return err_set(e, CKPT_EINVAL, "item \"%s\" has no "
				    "document", it->name);
			if (it->n_leaves != 0)
				return err_set(e, CKPT_EINVAL, "item \"%s\" must "
				    "not carry leaves", it->name);
			if (strlen(it->json) > CKPT_MAX_DOC)
				return err_set(e, CKPT_ETOOBIG, "item \"%s\" is "
				    "larger than %u bytes", it->name,
				    CKPT_MAX_DOC);
			if (it->handler == CKPT__HANDLER__HANDLER_JSON &&
			    (r = savecheck_json("JSON item", it->json, 0, e))
			    != 0)
				return r;
			break;
		default:
			return err_set(e, CKPT_EINVAL, "unknown handler %d for "
			    "item \"%s\"", (int)it->handler, it->name);
		}
	}
	/* Byte ranges (a running sum, then one sort of offsets) before
	 * paths (an encoding per leaf, then a sort): a request whose sizes
	 * add up past the memfd is refused after one linear pass. */
	if ((r = savecheck_arrays(sv, memsize, e)) != 0)
		return r;
	for (i = 0; i < sv->n_items; i++)
		if (savecheck_is_tree(sv->items[i]->handler) &&
		    (r = savecheck_paths(sv->items[i], e)) != 0)
			return r;
	if (sv->metrics_json != NULL &&
	    (r = savecheck_json("metrics", sv->metrics_json, 1, e)) != 0)
		return r;
	if (sv->custom_metadata_json != NULL &&
	    (r = savecheck_json("custom metadata", sv->custom_metadata_json,
	    1, e)) != 0)
		return r;
	return 0;
}

void
savecheck_count(const Ckpt__Save *sv, uint64_t target,
    struct savecheck_counts *out)
{
	uint64_t cur;
	size_t i, k;
	int open;

	memset(out, 0, sizeof *out);
	for (i = 0; i < sv->n_items; i++) {
		const Ckpt__Item *it = sv->items[i];

		if (!savecheck_is_tree(it->handler))
			continue;
		open = 0;
		cur = 0;
		for (k = 0; k < it->n_leaves; k++) {
			const Ckpt__Leaf *l = it->leaves[k];

			if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY ||
			    l->replicated_elsewhere)
				continue;
			if (!open) {
				out->nfiles++;
				open = 1;
				cur = 0;
			}
			out->narrays++;
			/* Both sums are bounded by the memfd size (validated). */
			out->bytes += l->nbytes;
			cur += l->nbytes;
			if (cur >= target)
				open = 0;
		}
	}
}

int
savecheck_memfd(int fd, uint64_t *size, ckd_err *e)
{
	struct stat st;
	int seals;

	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    (seals = fcntl(fd, F_GET_SEALS)) < 0 || !(seals & F_SEAL_SHRINK))
		return err_set(e, CKPT_EINVAL, "staging buffer must be a memfd "
		    "sealed against shrinking");
	*size = (uint64_t)st.st_size;
	return 0;
}
