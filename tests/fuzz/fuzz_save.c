/*
 * fuzz_save.c - libFuzzer target, structured: the fuzz bytes are the
 * parameters of a well-formed Save request (byte mutation of a packed
 * frame rarely yields one), with adversarial counts, sizes, offsets and
 * shapes: the staging buffer size, items and their handlers, and per item
 * a leaf count and up to four leaf templates repeated over the leaves
 * (kind, dtype, ndim and dimensions, base offset and stride between
 * consecutive leaves, path style). A stride of 0 with large dimensions
 * gives the overlapping leaves whose sizes wrap around 2^64 of the heap
 * overflow (two leaves of 2^63 bytes do it as well as 2^18 of 2^46).
 *
 * Counts over FUZZ_REAL_LEAVES are only what the validator must refuse
 * (over the per-item limit): such an item gets n_leaves = count but a
 * one-element leaf array, so a validator that read leaves before checking
 * the count would be caught by AddressSanitizer, and runs stay fast.
 *
 * The request is validated as the daemon does (savecheck_request); an
 * accepted one is re-checked independently (fuzz_check_layout). Small
 * requests are also packed, walked by wirecheck and unpacked again, and
 * must get the same verdict.
 *
 * Byte layout: memsize(value) flags(u8) nitems(u8) then per item:
 * handler(u8) nleaves(count) ntemplates(u8) and per template: kind(u8)
 * dtype(u8) ndim(u8) dims(value x ndim, at most 34) offset(value)
 * stride(value) pathstyle(u8). See fuzz.c for value and count.
 */
#include <stdio.h>

#include "fuzz.h"
#include "wirecheck.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NTPL 4
#define MAXDIM 34
#define MAXITEMS 4
#define FUZZ_REAL_LEAVES 4096

struct tpl {
	Ckpt__LeafKind kind;
	Ckpt__Dtype dtype;
	size_t ndim;
	uint64_t dims[MAXDIM];
	uint64_t nbytes;
	uint64_t off, stride;
	uint8_t style;
};

struct built {
	Ckpt__Item items[MAXITEMS], *itemp[MAXITEMS];
	Ckpt__Leaf *leaves[MAXITEMS];
	size_t nreal[MAXITEMS];         /* leaves allocated */
	int fake;                       /* an item claims more leaves */
	Ckpt__Leaf **leafp[MAXITEMS];
	Ckpt__PathElem *elems[MAXITEMS];
	Ckpt__PathElem **elemp[MAXITEMS];
	char *keys[MAXITEMS];
	struct tpl tpls[MAXITEMS][NTPL];
};

static const char *const names[MAXITEMS] = { "default", "b", "c", "d" };

static uint64_t
tpl_nbytes(const struct tpl *t, uint8_t lie)
{
	uint64_t n = store_dtype_size(t->dtype);
	size_t i;

	for (i = 0; i < t->ndim; i++)
		n *= t->dims[i];        /* may wrap: the check must notice */
	return lie ? n + lie : n;
}

static int
build_item(struct fz *f, struct built *b, size_t i, Ckpt__Item *it)
{
	size_t n = fz_count(f), ntpl = 1 + fz_u8(f) % NTPL, k, d;
	static const char *const dotted = "a.b";

	ckpt__item__init(it);
	it->name = (char *)names[i];
	it->has_handler = 1;
	it->handler = (Ckpt__Handler)(fz_u8(f) % 7);
	if (it->handler == CKPT__HANDLER__HANDLER_JSON ||
	    it->handler == CKPT__HANDLER__HANDLER_PROTO) {
		it->json = (char *)"{}";
		n = 0;
	}
	for (k = 0; k < ntpl; k++) {
		struct tpl *t = &b->tpls[i][k];
		uint8_t kind = fz_u8(f);

		t->kind = kind < 200 ? CKPT__LEAF_KIND__LEAF_ARRAY :
		    (Ckpt__LeafKind)(kind % 10);
		t->dtype = (Ckpt__Dtype)(fz_u8(f) % 17);
		t->ndim = fz_u8(f) % (MAXDIM + 1);
		for (d = 0; d < t->ndim; d++)
			t->dims[d] = fz_value(f);
		t->off = fz_value(f);
		t->stride = fz_value(f);
		t->style = fz_u8(f);
		t->nbytes = tpl_nbytes(t, (uint8_t)(t->style >> 6 == 3));
	}
	if (n == 0)
		return 0;
	it->n_leaves = n;
	if (n > FUZZ_REAL_LEAVES) {
		FUZZ_ASSERT(n > CKPT_MAX_LEAVES_PER_ITEM);
		b->fake = 1;
		n = 1;
	}
	b->nreal[i] = n;
	b->leaves[i] = calloc(n, sizeof *b->leaves[i]);
	b->leafp[i] = calloc(n, sizeof *b->leafp[i]);
	b->elems[i] = calloc(n, sizeof *b->elems[i]);
	b->elemp[i] = calloc(n, sizeof *b->elemp[i]);
	b->keys[i] = calloc(n, 12);
	if (!b->leaves[i] || !b->leafp[i] || !b->elems[i] || !b->elemp[i] ||
	    !b->keys[i])
		return -1;
	for (k = 0; k < n; k++) {
		const struct tpl *t = &b->tpls[i][k % ntpl];
		Ckpt__Leaf *l = &b->leaves[i][k];
		Ckpt__PathElem *pe = &b->elems[i][k];

		ckpt__path_elem__init(pe);
		pe->has_kind = 1;
		switch (t->style & 3) {
		case 0:         /* list index k */
			pe->kind = CKPT__KEY_KIND__KEY_LIST;
			pe->has_index = 1;
			pe->index = k;
			break;
		case 1:         /* dict key "k<k>" */
			pe->kind = CKPT__KEY_KIND__KEY_DICT;
			pe->key = b->keys[i] + 12 * k;
			snprintf(pe->key, 12, "k%zu", k);
			break;
		case 2:         /* the same key for every leaf */
			pe->kind = CKPT__KEY_KIND__KEY_DICT;
			pe->key = (char *)dotted;
			break;
		default:        /* index from the stride: huge, repeated */
			pe->kind = CKPT__KEY_KIND__KEY_TUPLE;
			pe->has_index = 1;
			pe->index = t->stride * k;
			break;
		}
		b->elemp[i][k] = pe;
		ckpt__leaf__init(l);
		l->n_path = (t->style & 4) && n == 1 ? 0 : 1;
		l->path = &b->elemp[i][k];
		l->has_kind = 1;
		l->kind = t->kind;
		l->has_dtype = 1;
		l->dtype = t->dtype;
		l->n_shape = t->ndim;
		l->shape = (uint64_t *)t->dims;
		l->has_offset = 1;
		l->offset = t->off + t->stride * k;     /* may wrap */
		l->has_nbytes = 1;
		l->nbytes = t->nbytes;
		if (t->kind == CKPT__LEAF_KIND__LEAF_STR)
			l->str_value = (char *)"s";
		b->leafp[i][k] = l;
	}
	it->leaves = b->leafp[i];
	return 0;
}

/* The same request packed, walked and unpacked again must get the same
 * verdict (the daemon sees the packed form). */
static void
roundtrip(const Ckpt__Request *req, uint64_t memsize, int want)
{
	Ckpt__Request *back;
	size_t len = ckpt__request__get_packed_size(req);
	uint8_t *buf;
	ckd_err e;
	int r;

	if (len > (1u << 20) || (buf = malloc(len ? len : 1)) == NULL)
		return;
	ckpt__request__pack(req, buf);
	memset(&e, 0, sizeof e);
	FUZZ_ASSERT(wirecheck_strings(&ckpt__request__descriptor, buf, len,
	    &e) == 0);
	back = ckpt__request__unpack(NULL, len, buf);
	FUZZ_ASSERT(back != NULL && back->op_case == CKPT__REQUEST__OP_SAVE);
	r = savecheck_request(back->save, memsize, &e);
	FUZZ_ASSERT((r == 0) == (want == 0));
	ckpt__request__free_unpacked(back, NULL);
	free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Save sv = CKPT__SAVE__INIT;
	struct built *b;
	uint64_t memsize;
	uint8_t flags;
	size_t i, n;
	ckd_err e;
	int r;

	if ((b = calloc(1, sizeof *b)) == NULL)
		return 0;
	memsize = fz_value(&f);
	flags = fz_u8(&f);
	n = 1 + fz_u8(&f) % MAXITEMS;
	for (i = 0; i < n; i++) {
		if (build_item(&f, b, i, &b->items[i]) != 0)
			goto out;
		b->itemp[i] = &b->items[i];
	}
	sv.has_step = 1;
	sv.step = 1;
	sv.has_composite = 1;
	sv.composite = n > 1 || (flags & 1);
	sv.n_items = n;
	sv.items = b->itemp;
	req.has_id = 1;
	req.id = 1;
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &sv;
	memset(&e, 0, sizeof e);
	r = savecheck_request(&sv, memsize, &e);
	if (r == 0)
		fuzz_check_layout(&sv, memsize);
	else
		FUZZ_ASSERT(r < 0 && e.msg[0] != '\0');
	if (!b->fake)
		roundtrip(&req, memsize, r);
out:
	for (i = 0; i < MAXITEMS; i++) {
		size_t k;

		/* savecheck clears file/tensor (NULL here) but may set none:
		 * nothing of the leaves is owned but the arrays. */
		for (k = 0; k < b->nreal[i]; k++) {
			free(b->leaves[i][k].file);
			free(b->leaves[i][k].tensor);
		}
		free(b->leaves[i]);
		free(b->leafp[i]);
		free(b->elems[i]);
		free(b->elemp[i]);
		free(b->keys[i]);
	}
	free(b);
	return 0;
}
