/*
 * fuzz.c - helpers of the fuzz targets (see fuzz.h).
 */
#include <stdio.h>

#include "fuzz.h"
#include "policy.h"
#include "wirecheck.h"

void
fuzz_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "%s:%d: invariant failed: %s\n", file, line, what);
	abort();
}

uint8_t
fz_u8(struct fz *f)
{
	if (f->n == 0)
		return 0;
	f->n--;
	return *f->p++;
}

static const uint64_t fz_edges[] = {
	0, 1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 4095, 4096, 65536,
	1ull << 20, (1ull << 20) + 1, 1ull << 24, 1ull << 31, 1ull << 32,
	1ull << 46, (1ull << 46) + 1, 1ull << 62, 1ull << 63, INT64_MAX,
	UINT64_MAX / 2, UINT64_MAX - 1, UINT64_MAX,
};
#define FZ_NEDGES (sizeof fz_edges / sizeof fz_edges[0])

uint64_t
fz_value(struct fz *f)
{
	uint8_t s = fz_u8(f);
	uint64_t v = 0;
	int i;

	if (s < FZ_NEDGES)
		return fz_edges[s];
	if (s < 200)
		return s - FZ_NEDGES;
	for (i = 0; i < 8; i++)
		v = v << 8 | fz_u8(f);
	return v;
}

static const size_t fz_counts[] = {
	0, 1, 2, 3, 8, 100, 1000, 4096, CKPT_MAX_LEAVES_PER_ITEM + 1,
	CKPT_MAX_LEAVES_PER_SAVE + 1,
};
#define FZ_NCOUNTS (sizeof fz_counts / sizeof fz_counts[0])

size_t
fz_count(struct fz *f)
{
	uint8_t s = fz_u8(f);

	if (s < FZ_NCOUNTS)
		return fz_counts[s];
	return s - FZ_NCOUNTS;
}

struct fspan {
	uint64_t off, len;
};

static int
fspan_cmp(const void *a, const void *b)
{
	const struct fspan *x = a, *y = b;

	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	return 0;
}

void
fuzz_check_layout(const Ckpt__Save *sv, uint64_t memsize)
{
	struct savecheck_counts c1, c16;
	struct fspan *sp;
	unsigned __int128 sum = 0;
	size_t i, k, j, n = 0, narrays = 0;

	for (i = 0; i < sv->n_items; i++)
		n += sv->items[i]->n_leaves;
	FUZZ_ASSERT(sv->n_items <= CKPT_MAX_ITEMS);
	FUZZ_ASSERT(n <= CKPT_MAX_LEAVES_PER_SAVE);
	sp = malloc((n ? n : 1) * sizeof *sp);
	FUZZ_ASSERT(sp != NULL);
	n = 0;
	for (i = 0; i < sv->n_items; i++) {
		const Ckpt__Item *it = sv->items[i];

		FUZZ_ASSERT(it->n_leaves <= CKPT_MAX_LEAVES_PER_ITEM);
		FUZZ_ASSERT(it->name != NULL && it->name[0] != '.');
		if (!savecheck_is_tree(it->handler))
			continue;
		for (k = 0; k < it->n_leaves; k++) {
			const Ckpt__Leaf *l = it->leaves[k];
			unsigned __int128 nb;

			/* Replicated elsewhere (another rank writes it): no
			 * bytes here, no file. */
			if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY ||
			    l->replicated_elsewhere)
				continue;
			narrays++;
			FUZZ_ASSERT(l->n_shape <= CKPT_WIRE_MAX_NDIM);
			nb = store_dtype_size(l->dtype);
			FUZZ_ASSERT(nb > 0);
			/* A zero dimension makes the array empty whatever the
			 * others (each at most INT64_MAX); else every partial
			 * product must fit. */
			for (j = 0; j < l->n_shape; j++) {
				FUZZ_ASSERT(l->shape[j] <= INT64_MAX);
				if (l->shape[j] == 0)
					nb = 0;
			}
			for (j = 0; j < l->n_shape && nb > 0; j++) {
				nb *= l->shape[j];
				FUZZ_ASSERT(nb <= UINT64_MAX);
			}
			FUZZ_ASSERT(nb == l->nbytes);
			FUZZ_ASSERT((unsigned __int128)l->offset + nb <= memsize);
			sum += nb;
			if (nb > 0) {
				sp[n].off = l->offset;
				sp[n++].len = l->nbytes;
			}
		}
	}
	FUZZ_ASSERT(sum <= memsize);
	qsort(sp, n, sizeof *sp, fspan_cmp);
	for (i = 0; i + 1 < n; i++)
		FUZZ_ASSERT(sp[i].off + sp[i].len <= sp[i + 1].off);
	free(sp);
	savecheck_count(sv, 1, &c1);
	savecheck_count(sv, 16u << 20, &c16);
	FUZZ_ASSERT(c1.narrays == narrays && c16.narrays == narrays);
	FUZZ_ASSERT(c1.bytes == (uint64_t)sum && c16.bytes == (uint64_t)sum);
	FUZZ_ASSERT(c16.nfiles <= c1.nfiles && c1.nfiles <= narrays);
	FUZZ_ASSERT(c16.nfiles <= (uint64_t)(sum / (16u << 20)) +
	    sv->n_items);
}

static const uint64_t memsizes[] = {
	0, 64, 4096, 1u << 20, 1ull << 46, UINT64_MAX / 2, UINT64_MAX,
};

uint64_t
fuzz_memsize(uint8_t sel)
{
	return memsizes[sel % (sizeof memsizes / sizeof memsizes[0])];
}

static void
fuzz_policy(const Ckpt__ManagerOptions *o)
{
	struct policy_set *p = NULL;
	struct policy_step steps[4];
	int keep[4];
	ckd_err e;
	size_t i;

	memset(&e, 0, sizeof e);
	if (policy_compile(o, &p, &e) != 0) {
		FUZZ_ASSERT(e.code < 0 && e.msg[0] != '\0');
		return;
	}
	memset(steps, 0, sizeof steps);
	for (i = 0; i < 4; i++) {
		steps[i].step = i * 10;
		steps[i].time_ns = (int64_t)i * 1000000000;
		keep[i] = 1;
	}
	(void)policy_should_save(p, 10, 0, 5000000000, 0, 0, 0);
	(void)policy_should_save(p, UINT64_MAX, -1, INT64_MAX, INT64_MIN, 1, 1);
	policy_preserve(p, steps, 4, 4000000000, keep);
	policy_free(p);
}

void
fuzz_decode(const uint8_t *data, size_t size, uint64_t memsize)
{
	Ckpt__Request *req;
	ckd_err e;
	size_t i;
	int r;

	if ((req = ckpt__request__unpack(NULL, size, data)) == NULL)
		return;
	memset(&e, 0, sizeof e);
	r = wirecheck_strings(&ckpt__request__descriptor, data, size, &e);
	/* What protobuf-c unpacked, the walk must parse too. */
	FUZZ_ASSERT(r != CKPT_EPROTO);
	if (r != 0) {
		FUZZ_ASSERT(r < 0 && e.msg[0] != '\0');
		goto out;
	}
	switch (req->op_case) {
	case CKPT__REQUEST__OP_SAVE:
		if (savecheck_request(req->save, memsize, &e) == 0)
			fuzz_check_layout(req->save, memsize);
		else
			FUZZ_ASSERT(e.code < 0 && e.msg[0] != '\0');
		break;
	case CKPT__REQUEST__OP_OPEN_MANAGER:
		if (req->open_manager->options != NULL)
			fuzz_policy(req->open_manager->options);
		break;
	case CKPT__REQUEST__OP_RESTORE:
		for (i = 0; i < req->restore->n_items; i++)
			(void)store_valid_component(req->restore->items[i]);
		break;
	default:
		break;
	}
out:
	ckpt__request__free_unpacked(req, NULL);
}
