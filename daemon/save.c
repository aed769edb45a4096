/*
 * save.c - the save pipeline.
 *
 *   loop:    validate the request and the staging memfd, apply should_save
 *            and the "already exists" check, then wait for memory (FIFO
 *            under --memory-budget) and map the memfd read-only. The reply
 *            SaveReply{saved} is sent at that point: from then on the step
 *            no longer depends on the client.
 *   prepare: (worker) open the root, create <name>.ckptd-tmp and the item
 *            directories, write JSON / proto items.
 *   data:    (workers, in parallel) one task per safetensors file (about
 *            16 MiB each, see SAVE_MIN_FILE).
 *   finish:  (worker) tree _METADATA, fsync item dirs, _CHECKPOINT_METADATA,
 *            rename to the final name, index record.
 *   A save with less than SAVE_SMALL bytes of arrays runs prepare, data and
 *   finish as one worker task instead.
 *   loop:    insert the step, retention (background deletes), SaveDone to
 *            the client, release memory, start queued saves, wake waiters.
 *
 * A failure anywhere removes the tmp directory, records the failure in the
 * index and in the manager (reported by WaitSaves) and in SaveDone.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "manager.h"
#include "metrics.h"
#include "save.h"
#include "savecheck.h"
#include "user.h"
#include "stepmetrics.h"
#include "preempt.h"
#include "pieces.h"
#include "steptx.h"
#include "coord.h"
#include "tier.h"

/* Array data is split into files of about total / workers bytes, but of
 * SAVE_MIN_FILE to SAVE_MAX_FILE: each file is one worker task, and small
 * tasks let the workers' round-robin over connections interleave
 * concurrent saves fairly. */
#define SAVE_MIN_FILE (16ull * 1024 * 1024)
#define SAVE_MAX_FILE (16ull * 1024 * 1024)
/* Saves with less array data than this run as one worker task. */
#define SAVE_SMALL (4ull * 1024 * 1024)

/* Every save of the daemon and the staging memory budget they share,
 * owned by this file (loop thread). A save waits in the FIFO memory queue
 * until its charge fits under the budget. */
static struct {
	struct save *saves;             /* every queued or running save */
	struct save *qhead, *qtail;     /* waiting for memory, FIFO */
	unsigned nqueued, ninflight;
	uint64_t staging;               /* charged to running saves */
	uint64_t budget;                /* 0: unlimited */
	uint64_t committed, failed, bytes_written;  /* since start */
	struct index *ix;               /* where commits and failures go */
	unsigned nworkers;              /* the pool's size: files per save */
	void (*idle_cb)(void *arg);     /* save_on_idle */
	void *idle_arg;
	struct save_agree *agreeing;    /* steps whose decision is asked */
} SQ;

struct save_task {
	struct task t;
	struct save *s;
	size_t file;
};

static void save_finalize(struct save *s);
static void save_tx_failed(struct steptx *tx);
static void save_queue_remove(struct save *s);
static void save_admit(void);
static void save_tx_progress(struct steptx *tx);
static void save_check_idle(void);

/* The save of a transaction's part (NULL for none). */
static struct save *
save_of(struct steptx_part *p)
{
	return p == NULL ? NULL :
	    (struct save *)(void *)((char *)p - offsetof(struct save, part));
}

/* 1 when s is a part of a step written by several processes. */
static int
save_multi(const struct save *s)
{
	return s->tx != NULL && s->tx->nparts > 1;
}

/* ---- small helpers ---------------------------------------------------------- */

/* Tensor name: path elements joined with '.' (malloc'ed). */
static char *
save_tensor_name(const Ckpt__Leaf *l)
{
	size_t i, len = 1;
	char *s, *p;

	if (l->n_path == 0)
		return strdup("value");
	for (i = 0; i < l->n_path; i++)
		len += (l->path[i]->kind == CKPT__KEY_KIND__KEY_DICT ?
		    strlen(l->path[i]->key) : 20) + 1;
	if ((s = malloc(len)) == NULL)
		return NULL;
	p = s;
	for (i = 0; i < l->n_path; i++) {
		const Ckpt__PathElem *e = l->path[i];

		if (i)
			*p++ = '.';
		if (e->kind == CKPT__KEY_KIND__KEY_DICT)
			p += sprintf(p, "%s", e->key);
		else
			p += sprintf(p, "%" PRIu64, e->index);
	}
	*p = '\0';
	return s;
}

/* A tiny open-addressing set of strings (borrowed), for unique names. */
struct strset {
	const char **slot;
	size_t cap;
};

static uint64_t
strset_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	return h;
}

static int
strset_init(struct strset *ss, size_t n)
{
	ss->cap = 16;
	while (ss->cap < n * 2)
		ss->cap *= 2;
	ss->slot = calloc(ss->cap, sizeof *ss->slot);
	return ss->slot == NULL ? CKPT_ENOMEM : 0;
}

/* 1 when inserted, 0 when already present. */
static int
strset_add(struct strset *ss, const char *s)
{
	size_t i = strset_hash(s) & (ss->cap - 1);

	while (ss->slot[i] != NULL) {
		if (strcmp(ss->slot[i], s) == 0)
			return 0;
		i = (i + 1) & (ss->cap - 1);
	}
	ss->slot[i] = s;
	return 1;
}

/* ---- memory charge ----------------------------------------------------------- */

static uint64_t
save_add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t
save_strmem(const char *s)
{
	return s != NULL ? strlen(s) + 1 : 0;
}

/*
 * What a save is charged against --memory-budget while it runs (and is
 * counted against its uid's share): the bytes its array leaves reference
 * in the staging buffer (not the buffer's size: a sparse buffer is never
 * read where no leaf points, holes are never faulted in), plus the request
 * as unpacked (structs, paths, strings) and what the plan adds per array
 * leaf. A save without a staging buffer is charged its request.
 */
static uint64_t
save_charge(const Ckpt__Save *sv, uint64_t *reqmem)
{
	uint64_t n = sizeof(Ckpt__Request) + sizeof *sv, data = 0;
	size_t i, k, j;

	n += save_strmem(sv->metrics_json) +
	    save_strmem(sv->custom_metadata_json);
	for (i = 0; i < sv->n_items; i++) {
		const Ckpt__Item *it = sv->items[i];

		n += sizeof(void *) + sizeof *it + save_strmem(it->name) +
		    save_strmem(it->json);
		for (k = 0; k < it->n_leaves; k++) {
			const Ckpt__Leaf *l = it->leaves[k];

			n += sizeof(void *) + sizeof *l +
			    l->n_shape * sizeof(uint64_t) +
			    save_strmem(l->str_value) + save_strmem(l->tag);
			for (j = 0; j < l->n_path; j++)
				n += sizeof(void *) + sizeof *l->path[j] +
				    save_strmem(l->path[j]->key);
			if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY ||
			    l->replicated_elsewhere)
				continue;
			/* plan: tensor, leaf pointer, names */
			n += sizeof(struct store_tensor) + sizeof(void *) + 64;
			data = save_add_sat(data, l->nbytes);
		}
	}
	*reqmem = n;
	return save_add_sat(n, data);
}

/* ---- the save list --------------------------------------------------------- */

int
save_pending_step(const struct root *r, uint64_t step)
{
	const struct save *s;

	for (s = SQ.saves; s != NULL; s = s->next)
		if (s->r == r && s->step == step)
			return 1;
	return 0;
}

int64_t
save_latest_pending(const struct root *r)
{
	const struct save *s;
	int64_t best = -1;

	for (s = SQ.saves; s != NULL; s = s->next)
		if (s->r == r && (int64_t)s->step > best)
			best = (int64_t)s->step;
	return best;
}

size_t
save_pending_steps(const struct root *r, uint64_t *v, size_t cap)
{
	const struct save *s, *t;
	size_t n = 0;

	for (s = SQ.saves; s != NULL; s = s->next) {
		if (s->r != r)
			continue;
		/* the parts of one distributed step count once */
		for (t = SQ.saves; t != s; t = t->next)
			if (t->r == r && t->step == s->step)
				break;
		if (t != s)
			continue;
		if (n < cap)
			v[n] = s->step;
		n++;
	}
	return n;
}

static void
save_free(struct save *s)
{
	size_t i;

	if (s->memfd >= 0)
		close(s->memfd);
	if (s->map != NULL)
		munmap(s->map, s->size);
	store_src_destroy(&s->src);
	if (s->itemfds != NULL) {
		for (i = 0; i < s->part.sv->n_items; i++)
			if (s->itemfds[i] >= 0)
				s->r->be->close(s->itemfds[i]);
		free(s->itemfds);
	}
	store_sync_free(&s->sync);
	if (s->tmpfd >= 0)
		s->r->be->close(s->tmpfd);
	if (s->rootfd >= 0)
		s->r->be->close(s->rootfd);
	free(s->handlers);
	free(s->names);
	free(s->tens);
	free(s->leaves);
	free(s->files);
	if (s->req != NULL)
		ckpt__request__free_unpacked(s->req, NULL);
	if (s->c != NULL)
		conn_unref(s->c);
	if (s->user != NULL) {
		s->user->saves--;
		user_put(s->user);
	}
	if (s->m != NULL)
		mgr_unref(s->m);
	if (s->r != NULL)
		root_unref(s->r);
	if (s->tx != NULL)
		steptx_unref(s->tx);
	free(s);
}

static void
save_unlink(struct save *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		SQ.saves = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
	s->r->saves--;
	s->m->pending--;
}

/* ---- planning files (loop) --------------------------------------------------- */

static int
save_plan(struct save *s, ckd_err *e)
{
	Ckpt__Save *sv = s->part.sv;
	struct savecheck_counts cnt;
	uint64_t target, cur_bytes = 0;
	struct save_file *cur = NULL;
	size_t i, k, n, maxfiles;
	unsigned nw = SQ.nworkers ? SQ.nworkers : 1;

	if ((s->itemfds = malloc(sv->n_items * sizeof *s->itemfds)) == NULL ||
	    (s->handlers = calloc(sv->n_items, sizeof *s->handlers)) == NULL ||
	    (s->names = calloc(sv->n_items, sizeof *s->names)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (i = 0; i < sv->n_items; i++) {
		s->itemfds[i] = -1;
		s->handlers[i] = sv->items[i]->handler;
		s->names[i] = sv->items[i]->name;
	}
	/* The total is at most the memfd size (savecheck_request). */
	savecheck_count(sv, SAVE_MIN_FILE, &cnt);
	target = cnt.bytes / nw;
	if (target < SAVE_MIN_FILE)
		target = SAVE_MIN_FILE;
	if (target > SAVE_MAX_FILE)
		target = SAVE_MAX_FILE;
	/* Exact number of files for this target: the table below is filled
	 * by the same rule. */
	savecheck_count(sv, target, &cnt);
	s->part.bytes = cnt.bytes;
	if (cnt.narrays == 0)
		return 0;
	n = cnt.narrays;
	maxfiles = cnt.nfiles;
	if ((s->tens = calloc(n, sizeof *s->tens)) == NULL ||
	    (s->leaves = calloc(n, sizeof *s->leaves)) == NULL ||
	    (s->files = calloc(maxfiles, sizeof *s->files)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (i = 0; i < sv->n_items; i++) {
		Ckpt__Item *it = sv->items[i];
		struct strset names;
		unsigned fileno = 0, dups = 0;

		if (!savecheck_is_tree(it->handler))
			continue;
		if (strset_init(&names, it->n_leaves) != 0)
			return err_set(e, CKPT_ENOMEM, "out of memory");
		cur = NULL;
		for (k = 0; k < it->n_leaves; k++) {
			Ckpt__Leaf *l = it->leaves[k];
			struct store_tensor *t;
			char *nm;

			if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY ||
			    l->replicated_elsewhere)
				continue;
			if ((nm = save_tensor_name(l)) == NULL)
				goto nomem;
			if (store_tensor_name_reserved(nm)) {
				/* "~__metadata__": the path is in _METADATA,
				 * the tensor name only has to be unique. */
				char *n2 = malloc(strlen(nm) + 2);

				if (n2 == NULL) {
					free(nm);
					goto nomem;
				}
				n2[0] = '~';
				memcpy(n2 + 1, nm, strlen(nm) + 1);
				free(nm);
				nm = n2;
			}
			if (!strset_add(&names, nm)) {
				/* Taken: "<name>~<n>", n counting up over the
				 * item, so that colliding names cost linear
				 * time in all (a dict key "a.b" and the path
				 * a/b share a name). */
				char *base = nm;
				size_t len = strlen(base) + 16;

				for (;;) {
					if ((nm = malloc(len)) == NULL) {
						free(base);
						goto nomem;
					}
					snprintf(nm, len, "%s~%u", base, ++dups);
					if (strset_add(&names, nm))
						break;
					free(nm);
				}
				free(base);
			}
			l->tensor = nm;
			if (s->ntens == n || (cur == NULL &&
			    s->nfiles == maxfiles)) {
				/* Cannot happen: counted by the same rule. */
				free(names.slot);
				return err_set(e, CKPT_EINVAL, "save layout "
				    "does not match its count");
			}
			if (cur == NULL) {
				cur = &s->files[s->nfiles++];
				cur->item = i;
				cur->first = s->ntens;
				if (save_multi(s))
					snprintf(cur->fname, sizeof cur->fname,
					    "data-p%05u-%05u.safetensors",
					    (unsigned)s->rank, fileno++);
				else
					snprintf(cur->fname, sizeof cur->fname,
					    "data-%05u.safetensors", fileno++);
				cur_bytes = 0;
			}
			if ((l->file = strdup(cur->fname)) == NULL)
				goto nomem;
			t = &s->tens[s->ntens];
			t->name = l->tensor;
			t->dtype = l->dtype;
			t->ndim = l->n_shape;
			t->shape = l->shape;
			t->src = s->map == NULL ? NULL :
			    (const uint8_t *)s->map + l->offset;
			t->hsrc = s->map == NULL ? NULL : &s->src;
			t->nbytes = l->nbytes;
			s->leaves[s->ntens++] = l;
			cur->n++;
			cur_bytes += l->nbytes;
			if (cur_bytes >= target)
				cur = NULL;
		}
		free(names.slot);
		continue;
nomem:
		free(names.slot);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	return 0;
}

/* ---- worker tasks -------------------------------------------------------------- */

/* Failure cleanup on a worker: remove the tmp dir, record the failure. */
static void
save_abort_files(struct save *s, const ckd_err *why)
{
	size_t i;

	store_sync_free(&s->sync);
	if (s->itemfds != NULL)
		for (i = 0; i < s->part.sv->n_items; i++)
			if (s->itemfds[i] >= 0) {
				s->r->be->close(s->itemfds[i]);
				s->itemfds[i] = -1;
			}
	if (save_multi(s))
		return;         /* the tmp dir is the transaction's */
	steptx_abort_step(s->r, s->step, s->name, s->init_ns, &s->rootfd,
	    &s->tmpfd, why);
}

/*
 * fsyncs of one save, each needed for the step to survive a crash once it
 * is renamed into place (nothing else is synced; the index does not sync):
 *   - one per file: JSON / proto items, each safetensors file, each tree
 *     _METADATA, and _CHECKPOINT_METADATA: their data and size;
 *   - one per item directory: the entries of the files in it;
 *   - the tmp step directory: the item directories and
 *     _CHECKPOINT_METADATA entries;
 *   - the root after the rename (store_commit_synced): the rename itself.
 * The tiny case (one tree item + one JSON item) thus costs 4 + 2 + 1 + 1.
 *
 * All but the last are batched (s->sync, store_sync_run): files are written
 * without fsync and kept open, then, right before the rename, writeback of
 * all of them starts at once and each file, then each item directory, then
 * the tmp directory is fsynced. The first fsync's journal commit carries
 * the metadata of everything created so far, so the batch costs about one
 * journal commit instead of one per entry. Safetensors files of a large
 * save are the exception: each data task fsyncs its own file (they run in
 * parallel on several workers, and a batch belongs to one thread).
 */
/* A part of a distributed step: its item directories in the
 * transaction's tmp dir (the first part to get there creates each), the
 * JSON and proto items from the primary only. */
static int
save_prepare_part(struct save *s, ckd_err *e)
{
	Ckpt__Save *sv = s->part.sv;
	size_t i;
	int r = 0;

	for (i = 0; i < sv->n_items && r == 0; i++) {
		const Ckpt__Item *it = sv->items[i];

		if ((r = store_open_item(s->r->be, s->tx->tmpfd, it->name,
		    s->dmode, &s->itemfds[i], e)) != 0)
			break;
		if (!s->primary)
			continue;
		if (it->handler == CKPT__HANDLER__HANDLER_JSON)
			r = store_write_file_nosync(s->r->be, s->itemfds[i],
			    STORE_JSON_FILE, it->json, strlen(it->json),
			    s->fmode, &s->sync, e);
		else if (it->handler == CKPT__HANDLER__HANDLER_PROTO)
			r = store_write_file_nosync(s->r->be, s->itemfds[i],
			    STORE_PROTO_FILE, it->json, strlen(it->json),
			    s->fmode, &s->sync, e);
	}
	if (r != 0)
		save_abort_files(s, e);
	return r;
}

static int
save_prepare(struct save *s, ckd_err *e)
{
	Ckpt__Save *sv = s->part.sv;
	size_t i;
	int r;

	if (save_multi(s))
		return save_prepare_part(s, e);
	if ((r = root_open_dir(s->r, &s->rootfd, e)) != 0)
		goto fail;
	if ((r = store_begin(s->r->be, s->rootfd, s->name, s->dmode, &s->tmpfd,
	    e)) != 0)
		goto fail;
	for (i = 0; i < sv->n_items; i++) {
		const Ckpt__Item *it = sv->items[i];

		if ((r = store_mkdir_item(s->r->be, s->tmpfd, it->name,
		    s->dmode, &s->itemfds[i], e)) != 0)
			goto fail;
		if (it->handler == CKPT__HANDLER__HANDLER_JSON)
			r = store_write_file_nosync(s->r->be, s->itemfds[i],
			    STORE_JSON_FILE, it->json, strlen(it->json),
			    s->fmode, &s->sync, e);
		else if (it->handler == CKPT__HANDLER__HANDLER_PROTO)
			r = store_write_file_nosync(s->r->be, s->itemfds[i],
			    STORE_PROTO_FILE, it->json, strlen(it->json),
			    s->fmode, &s->sync, e);
		if (r != 0)
			goto fail;
	}
	return 0;
fail:
	save_abort_files(s, e);
	return r;
}

static void
save_prepare_run(struct task *t)
{
	(void)save_prepare(((struct save_task *)t)->s, &t->err);
}

/* Write file `file`; no cleanup on failure (the caller aborts). batch: add
 * it to s->sync unsynced (only when one thread runs the whole save), else
 * fsync it now. */
static int
save_data(struct save *s, size_t file, int batch, ckd_err *e)
{
	const struct save_file *f = &s->files[file];
	size_t k;
	int r;

	if (batch)
		r = store_write_safetensors_nosync(s->r->be,
		    s->itemfds[f->item], f->fname, s->fmode, &s->tens[f->first],
		    f->n, &s->sync, e);
	else
		r = store_write_safetensors(s->r->be, s->itemfds[f->item],
		    f->fname, s->fmode, &s->tens[f->first], f->n, e);
	if (r != 0)
		return r;
	for (k = f->first; k < f->first + f->n; k++) {
		s->leaves[k]->has_offset = 1;
		s->leaves[k]->offset = s->tens[k].offset;
		s->leaves[k]->has_xxh3 = 1;
		s->leaves[k]->xxh3 = s->tens[k].xxh3;
		if (s->tens[k].chunks != NULL) {
			/* the leaf's now: freed with the request */
			s->leaves[k]->has_chunk_bytes = 1;
			s->leaves[k]->chunk_bytes = STORE_SUM_CHUNK;
			s->leaves[k]->chunk_xxh3 = s->tens[k].chunks;
			s->leaves[k]->n_chunk_xxh3 = s->tens[k].nchunks;
			s->tens[k].chunks = NULL;
		}
	}
	return 0;
}

static void
save_data_run(struct task *t)
{
	struct save_task *st = (struct save_task *)t;

	(void)save_data(st->s, st->file, 0, &t->err);
}

static int
save_finish(struct save *s, ckd_err *e)
{
	Ckpt__Save *sv = s->part.sv;
	struct store_step_meta meta;
	ckd_err ie;
	size_t i;
	int r = 0;

	if (save_multi(s)) {
		/* A part: its files are durable; the commit is the
		 * transaction's, once every part is. */
		if ((r = store_sync_run(&s->sync, e)) != 0 ||
		    (r = steptx_coord()->part_durable(s->tx, &s->part, s->rank,
		    s->fmode, e)) != 0)
			goto fail;
		for (i = 0; i < sv->n_items; i++) {
			s->r->be->close(s->itemfds[i]);
			s->itemfds[i] = -1;
		}
		return 0;
	}
	for (i = 0; i < sv->n_items && r == 0; i++) {
		Ckpt__Item merged;
		Ckpt__Leaf **leaves = NULL;
		size_t n = 0;

		if (!savecheck_is_tree(sv->items[i]->handler))
			continue;
		if (!s->pieces) {
			r = store_write_tree_metadata_nosync(s->r->be,
			    s->itemfds[i], sv->items[i], s->fmode, &s->sync, e);
			continue;
		}
		/* Pieces of global arrays: they must cover each array; its
		 * pieces are listed together. */
		if ((r = steptx_item_leaves(s->tx, i, &leaves, &n, e)) != 0)
			break;
		merged = *sv->items[i];
		merged.leaves = leaves;
		merged.n_leaves = n;
		r = store_write_tree_metadata_nosync(s->r->be, s->itemfds[i],
		    &merged, s->fmode, &s->sync, e);
		free(leaves);
	}
	if (r != 0)
		goto fail;
	s->commit_ns = now_wall_ns();
	memset(&meta, 0, sizeof meta);
	meta.init_ns = s->init_ns;
	meta.commit_ns = s->commit_ns;
	meta.metrics_json = s->m->o->prevent_write_metrics ? NULL :
	    sv->metrics_json;
	if (meta.metrics_json != NULL && (r = stepmetrics_write_nosync(
	    s->r->be, s->tmpfd, meta.metrics_json, s->dmode, s->fmode, &s->sync,
	    e)) != 0)
		goto fail;
	if (meta.metrics_json != NULL)
		meta.metrics_item = STEPMETRICS_ITEM;
	meta.custom_json = sv->custom_metadata_json;
	meta.nitems = sv->n_items;
	meta.item_names = s->names;
	meta.handlers = s->handlers;
	meta.bytes = s->part.bytes;
	if ((r = store_write_step_meta_nosync(s->r->be, s->tmpfd, &meta,
	    s->fmode, &s->sync, e)) != 0)
		goto fail;
	/* Files first (above), then the directories holding them. */
	for (i = 0; i < sv->n_items && r == 0; i++)
		r = store_sync_add(&s->sync, s->itemfds[i], 0, e);
	if (r == 0)
		r = store_sync_add(&s->sync, s->tmpfd, 0, e);
	if (r != 0 || (r = store_sync_run(&s->sync, e)) != 0)
		goto fail;
	if ((r = store_commit_synced(s->r->be, s->rootfd, s->name, e)) != 0)
		goto fail;
	/* The step is durable; the index is only a cache of the disk. */
	if (index_put_committed(SQ.ix, s->r->key, s->step, s->name,
	    s->init_ns, s->commit_ns, s->part.bytes, meta.metrics_json,
	    &ie) != 0)
		log_warn("index: %s", ie.msg);
	for (i = 0; i < sv->n_items; i++) {
		s->r->be->close(s->itemfds[i]);
		s->itemfds[i] = -1;
	}
	s->r->be->close(s->tmpfd);
	s->tmpfd = -1;
	s->r->be->close(s->rootfd);
	s->rootfd = -1;
	return 0;
fail:
	save_abort_files(s, e);
	return r;
}

static void
save_finish_run(struct task *t)
{
	(void)save_finish(((struct save_task *)t)->s, &t->err);
}

/* A small save as one task: prepare, every file, finish (no trips through
 * the loop in between). */
static void
save_small_run(struct task *t)
{
	struct save *s = ((struct save_task *)t)->s;
	size_t i;

	if (save_prepare(s, &t->err) != 0)
		return;                 /* cleaned up already */
	for (i = 0; i < s->nfiles; i++)
		if (save_data(s, i, 1, &t->err) != 0) {
			save_abort_files(s, &t->err);
			return;
		}
	(void)save_finish(s, &t->err);
}

/* A task that only cleans up after a failed data task. */
static void
save_abort_run(struct task *t)
{
	struct save *s = ((struct save_task *)t)->s;

	save_abort_files(s, &s->err);
}

static int
save_submit(struct save *s, void (*run)(struct task *),
    void (*done)(struct task *), size_t file)
{
	struct save_task *st;

	st = task_new(sizeof *st, run, done, &s->cred, s->lane);
	if (st == NULL)
		return CKPT_ENOMEM;
	st->s = s;
	st->file = file;
	worker_submit(&st->t);
	return 0;
}

static void
save_abort_done(struct task *t)
{
	struct save *s = ((struct save_task *)t)->s;

	free(t);
	save_finalize(s);
}

static void
save_finish_done(struct task *t)
{
	struct save *s = ((struct save_task *)t)->s;

	if (t->err.code != 0)
		s->err = t->err;
	free(t);
	save_finalize(s);
}

/* Start the finish task, or the abort task when something failed. */
static void
save_after_data(struct save *s)
{
	int r;

	if (s->err.code != 0)
		r = save_submit(s, save_abort_run, save_abort_done, 0);
	else
		r = save_submit(s, save_finish_run, save_finish_done, 0);
	if (r != 0) {
		/* Out of memory for a task: finish inline is impossible on
		 * the loop; leave the tmp dir (ignored, removed on retry). */
		if (s->err.code == 0)
			err_set(&s->err, CKPT_ENOMEM, "out of memory");
		save_finalize(s);
	}
}

static void
save_data_done(struct task *t)
{
	struct save *s = ((struct save_task *)t)->s;

	if (t->err.code != 0 && s->err.code == 0)
		s->err = t->err;
	free(t);
	if (--s->left == 0)
		save_after_data(s);
}

static void
save_prepare_done(struct task *t)
{
	struct save *s = ((struct save_task *)t)->s;
	size_t i;

	if (t->err.code != 0) {
		s->err = t->err;
		free(t);
		save_finalize(s);       /* prepare cleaned up already */
		return;
	}
	free(t);
	if (s->nfiles == 0) {
		save_after_data(s);
		return;
	}
	s->left = (unsigned)s->nfiles;
	for (i = 0; i < s->nfiles; i++) {
		if (save_submit(s, save_data_run, save_data_done, i) != 0) {
			if (s->err.code == 0)
				err_set(&s->err, CKPT_ENOMEM, "out of memory");
			s->left -= (unsigned)(s->nfiles - i);
			if (s->left == 0)
				save_after_data(s);
			return;
		}
	}
}

/* ---- completion (loop) --------------------------------------------------------- */

static void save_complete(struct save *s);

/* A retention delete of s finished: once all did, the save is complete. */
static void
save_retention_done(void *arg)
{
	struct save *s = arg;

	if (--s->deleting == 0)
		save_complete(s);
}

/*
 * Apply the preservation policy after s committed. As in Orbax, the steps
 * it drops are deleted before the save counts as finished (SaveDone and
 * wait_until_finished come after them), unless enable_background_delete:
 * then they are only counted against the manager, whose close() waits.
 */
static void
save_retention(struct save *s)
{
	struct root *r = s->r;
	struct manager *m = s->m;
	struct policy_step *ps = NULL;
	size_t *idx = NULL, n = 0, k;
	int *keep = NULL;
	int64_t now = s->part.sv->has_timestamp_ns ?
	    s->part.sv->timestamp_ns : now_wall_ns();

	if (root_policy_steps(r, m->pol, &ps, &idx, &n) != 0 || n == 0)
		goto out;
	if ((keep = calloc(n, sizeof *keep)) == NULL)
		goto out;
	for (k = 0; k < n; k++)
		keep[k] = 1;
	policy_preserve(m->pol, ps, n, now, keep);
	/* From the highest index down, so earlier indices stay valid. */
	for (k = n; k-- > 0;) {
		struct mgr_delete how = { .cred = &s->cred, .lane = s->lane };

		if (keep[k])
			continue;
		if (!m->o->enable_background_delete) {
			how.done = save_retention_done;
			how.arg = s;
			s->deleting++;
		}
		mgr_delete_step(m, r, idx[k], &how);
	}
out:
	free(ps);
	free(idx);
	free(keep);
}

static void
save_send_done(struct save *s)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__SaveDone sd = CKPT__SAVE_DONE__INIT;

	if (!conn_alive(s->c))
		return;
	sd.has_save_id = 1;
	sd.save_id = s->id;
	sd.has_manager = 1;
	sd.manager = s->m->id;
	sd.has_step = 1;
	sd.step = s->step;
	sd.has_code = 1;
	sd.code = s->err.code;
	if (s->err.code != 0)
		sd.message = s->err.msg;
	resp.has_id = 1;
	resp.id = 0;
	resp.body_case = CKPT__RESPONSE__BODY_SAVE_DONE;
	resp.save_done = &sd;
	conn_reply(s->c, &resp, NULL, 0);
}

static void save_admit(void);

/* The fields of the one log line per save. */
static void
save_log_fields(const struct save *s, struct log_event *ev)
{
	int64_t now = now_mono_ns();

	ev->request_id = s->id;
	ev->peer_uid = (int64_t)s->cred.uid;
	ev->peer_pid = (int64_t)s->cred.pid;
	ev->root = s->r->path;
	ev->step = (int64_t)s->step;
	ev->bytes = s->part.bytes;
	if (s->reply_ns != 0)
		ev->blocking = (double)(s->reply_ns - s->recv_ns) / 1e9;
	ev->duration = (double)(now - s->recv_ns) / 1e9;
	ev->code = s->err.code;
	ev->error = s->err.code != 0 ? s->err.msg : NULL;
}

/* The staging memory is free as soon as the part is durable. */
static void
save_release(struct save *s)
{
	int was;

	if (s->released || !s->part.started)
		return;
	s->released = 1;
	SQ.ninflight--;
	SQ.staging -= s->charge;
	was = user_is_active(s->user);
	s->user->staging -= s->charge;
	user_activity(s->user, was);
	if (s->map != NULL) {
		munmap(s->map, s->size);
		s->map = NULL;
	}
	store_src_destroy(&s->src);
	if (s->memfd >= 0) {
		close(s->memfd);
		s->memfd = -1;
	}
}

static void
save_finalize(struct save *s)
{
	struct root *r = s->r;
	struct manager *m = s->m;
	struct index_step rec;
	struct log_event ev = LOG_EVENT_INIT;
	int ok = s->err.code == 0;

	if (save_multi(s) && !s->tx->closed) {
		/* A part's pipeline ended: the transaction goes on. */
		s->ended = 1;
		s->part.ended = 1;
		s->tx->nended++;
		if (s->err.code != 0) {
			ckd_err e;

			err_set(&e, s->err.code, "rank %" PRIu32 ": %s",
			    s->rank, s->err.msg);
			steptx_fail(s->tx, &e);
		}
		save_release(s);
		save_admit();
		if (s->tx->err.code != 0)
			save_tx_failed(s->tx);
		else
			save_tx_progress(s->tx);
		return;
	}
	s->deleting = 1;        /* held until the end of this function */
	memset(&rec, 0, sizeof rec);
	rec.step = s->step;
	rec.init_ns = s->init_ns;
	snprintf(rec.name, sizeof rec.name, "%s", s->name);
	if (ok) {
		rec.state = INDEX_COMMITTED;
		rec.commit_ns = s->commit_ns;
		rec.bytes = s->part.bytes;
		/* prevent_write_metrics: ranked in memory all the same */
		rec.metrics_json = mgr_strdup(s->part.sv->metrics_json);
		if (r->tiered)          /* durable locally: upload it */
			tier_committed(r->path, &rec, &s->cred, s->lane);
		root_insert_step(r, &rec);
		SQ.committed++;
		SQ.bytes_written += s->part.bytes;
		metrics_observe_since(METRICS_SAVE_DURABLE, s->recv_ns);
		metrics_observe(METRICS_STEP_BYTES, (double)s->part.bytes);
		metrics_count_user_save((uint32_t)s->cred.uid, s->part.bytes);
		save_log_fields(s, &ev);
		log_event(LOG_LVL_INFO, &ev, "%s/%s saved: %" PRIu64 " bytes, "
		    "client blocked %.1f ms, durable after %.1f ms", r->path,
		    s->name, s->part.bytes, ev.blocking * 1e3,
		    ev.duration * 1e3);
		/* Retention once per step: a distributed step's by the
		 * daemon holding its primary part (the committer); the
		 * other nodes learn of the deletes (root_drop_step). */
		if (!save_multi(s) || s->primary)
			save_retention(s);
	} else {
		char msg[CKPT_ERRLEN + 64];
		size_t len;

		snprintf(msg, sizeof msg, "Saving step %" PRIu64 " failed: %s",
		    s->step, s->err.msg);
		len = strlen(msg);
		if (len >= sizeof s->err.msg)
			len = sizeof s->err.msg - 1;
		memcpy(s->err.msg, msg, len);
		s->err.msg[len] = '\0';
		save_log_fields(s, &ev);
		log_event(LOG_LVL_WARN, &ev, "%s/%s: %s", r->path, s->name,
		    s->err.msg);
		if (s->err.code != CKPT_EEXIST) {
			long i = root_find_step(r, s->step);

			rec.state = INDEX_FAILED;
			rec.error = strdup(s->err.msg);
			if (i < 0 || r->steps[i].state != INDEX_COMMITTED)
				root_insert_step(r, &rec);
			else
				free(rec.error);
		}
		m->err_code = s->err.code;
		m->err_step = s->step;
		snprintf(m->err_msg, sizeof m->err_msg, "%s", s->err.msg);
		SQ.failed++;
		metrics_count_save_failed(s->err.code);
	}
	save_release(s);
	if (ok)
		mgr_wake_steps(r);
	save_admit();
	if (--s->deleting == 0)
		save_complete(s);
}

/* Committed (or failed) and its retention deletes done: tell the client,
 * wake wait_until_finished, forget the save. */
static void
save_complete(struct save *s)
{
	struct manager *m = s->m;
	struct steptx *tx = s->tx;
	unsigned i;

	if (save_multi(s)) {
		/* Every part: SaveDone with the step's outcome (s, the
		 * lead, is one of them). */
		ckd_err err = s->err;

		steptx_ref(tx);
		for (i = 0; i < tx->nparts; i++) {
			struct save *p = save_of(tx->parts[i]);

			if (p == NULL)
				continue;
			tx->parts[i] = NULL;
			p->err = err;
			save_send_done(p);
			p->r->busy--;
			save_unlink(p);
			mgr_wake_saves(p->m);
			save_free(p);
		}
		steptx_unlist(tx);
		steptx_unref(tx);
		save_check_idle();
		return;
	}
	if (tx != NULL)
		steptx_unlist(tx);
	save_send_done(s);
	s->r->busy--;
	save_unlink(s);
	mgr_wake_saves(m);
	save_free(s);
	save_check_idle();
}

/* ---- the step transaction of several parts (loop) ------------------------------ */

/* The first task of a started part: its whole pipeline when small. */
static void
save_part_submit(struct save *s)
{
	s->submitted = 1;
	if (save_submit(s, s->part.bytes < SAVE_SMALL ? save_small_run :
	    save_prepare_run, s->part.bytes < SAVE_SMALL ? save_finish_done :
	    save_prepare_done, 0) != 0) {
		err_set(&s->err, CKPT_ENOMEM, "out of memory");
		save_finalize(s);
	}
}

/* A task of the transaction itself (begin, commit, abort), run as the
 * identity of part s. */
struct save_tx_task {
	struct task t;
	struct steptx *tx;              /* referenced */
};

static int
save_tx_submit_as(struct steptx *tx, const struct peer_cred *cred,
    uint64_t lane, void (*run)(struct task *), void (*done)(struct task *))
{
	struct save_tx_task *tt;

	tt = task_new(sizeof *tt, run, done, cred, lane);
	if (tt == NULL)
		return CKPT_ENOMEM;
	tt->tx = tx;
	steptx_ref(tx);
	worker_submit(&tt->t);
	return 0;
}

static int
save_tx_submit(struct steptx *tx, const struct save *s,
    void (*run)(struct task *), void (*done)(struct task *))
{
	return save_tx_submit_as(tx, &s->cred, s->lane, run, done);
}

static void
save_tx_begin_run(struct task *t)
{
	struct save_tx_task *tt = (struct save_tx_task *)t;
	struct steptx *tx = tt->tx;
	const struct save *s = tx->owner;

	if (root_open_dir(tx->r, &tx->rootfd, &t->err) != 0)
		return;
	if (steptx_coord()->begin(tx, tx->rootfd, s->dmode, &tx->tmpfd,
	    &t->err) != 0) {
		tx->r->be->close(tx->rootfd);
		tx->rootfd = -1;
	}
}

static void
save_tx_begin_done(struct task *t)
{
	struct save_tx_task *tt = (struct save_tx_task *)t;
	struct steptx *tx = tt->tx;
	unsigned i;

	tx->begin = STEPTX_BEGUN;
	tx->owner = NULL;
	if (t->err.code != 0)
		steptx_fail(tx, &t->err);
	free(t);
	for (i = 0; i < tx->nparts && !tx->closed; i++) {
		struct save *p = save_of(tx->parts[i]);

		if (p == NULL || !p->part.started || p->submitted)
			continue;
		if (tx->err.code == 0) {
			save_part_submit(p);
			continue;
		}
		p->submitted = 1;
		save_finalize(p);       /* ends at once: nothing written */
	}
	if (tx->err.code != 0)
		save_tx_failed(tx);
	steptx_unref(tx);
}

/* Create the step's tmp dir for every part (as s's identity). */
static int
save_tx_begin(struct save *s)
{
	s->tx->owner = s;
	if (save_tx_submit(s->tx, s, save_tx_begin_run,
	    save_tx_begin_done) != 0) {
		s->tx->owner = NULL;
		return CKPT_ENOMEM;
	}
	s->tx->begin = STEPTX_BEGINNING;
	return 0;
}

/* The part whose manager and identity finish the step: the primary's
 * when it started, else the first started. */
static struct save *
save_tx_lead(const struct steptx *tx)
{
	unsigned i;

	if (tx->parts[tx->primary] != NULL &&
	    tx->parts[tx->primary]->started)
		return save_of(tx->parts[tx->primary]);
	for (i = 0; i < tx->nparts; i++)
		if (tx->parts[i] != NULL && tx->parts[i]->started)
			return save_of(tx->parts[i]);
	return NULL;
}

static void save_tx_tell_managers(struct steptx *tx);

static void
save_tx_record_run(struct task *t)
{
	struct steptx *tx = ((struct save_tx_task *)t)->tx;

	steptx_abort(tx, &tx->err);     /* nothing on disk: the record */
}

static void
save_tx_record_done(struct task *t)
{
	struct steptx *tx = ((struct save_tx_task *)t)->tx;

	free(t);
	steptx_unref(tx);
}

/*
 * A distributed step that failed before any part started writing (a rank
 * gone, a part refused): listed as failed like any other failure, in
 * memory now and in the index by a task (as the identity of one of the
 * job's managers).
 */
static void
save_tx_record_failed(struct steptx *tx)
{
	struct index_step rec;
	struct manager *m;
	long i;

	if (!tx->saved || tx->nparts < 2 || tx->err.code == CKPT_EEXIST)
		return;
	i = root_find_step(tx->r, tx->step);
	if (i >= 0 && tx->r->steps[i].state == INDEX_COMMITTED)
		return;
	memset(&rec, 0, sizeof rec);
	rec.step = tx->step;
	rec.state = INDEX_FAILED;
	rec.init_ns = tx->init_ns;
	snprintf(rec.name, sizeof rec.name, "%s", tx->name);
	rec.error = mgr_strdup(tx->err.msg);
	root_insert_step(tx->r, &rec);
	SQ.failed++;
	metrics_count_save_failed(tx->err.code);
	for (m = manager_first(); m != NULL; m = m->next)
		if (m->r == tx->r && !m->closed && m->o->process_count > 1 &&
		    strcmp(m->o->job != NULL ? m->o->job : "", tx->job) == 0 &&
		    conn_alive(m->c))
			break;
	if (m == NULL || save_tx_submit_as(tx, conn_peer(m->c), conn_id(m->c),
	    save_tx_record_run, save_tx_record_done) != 0)
		log_warn("%s: step %" PRIu64 " failed (%s); not recorded in "
		    "the index", tx->r->path, tx->step, tx->err.msg);
}

/* Committed or failed: the lead part finalizes the step once (record,
 * retention, counters), then every part is answered (save_complete). */
static void
save_tx_close(struct steptx *tx)
{
	struct save *lead = save_tx_lead(tx);
	unsigned i;

	tx->closed = 1;
	if (tx->err.code != 0)
		save_tx_tell_managers(tx);
	if (lead == NULL) {
		if (tx->err.code != 0)
			save_tx_record_failed(tx);
		steptx_unlist(tx);
		return;
	}
	for (i = 0; i < tx->nparts; i++)
		if (tx->parts[i] != NULL)
			save_release(save_of(tx->parts[i]));
	lead->err = tx->err;
	lead->commit_ns = tx->commit_ns;
	lead->part.bytes = tx->bytes;
	save_finalize(lead);
}

static void
save_tx_commit_run(struct task *t)
{
	struct steptx *tx = ((struct save_tx_task *)t)->tx;
	const struct save *p;
	struct steptx_lead lead;

	if (tx->parts[tx->primary] == NULL) {
		/* Another node's daemon committed it (multi-node). */
		(void)steptx_commit(tx, NULL, &t->err);
		return;
	}
	p = save_of(tx->parts[tx->primary]);
	memset(&lead, 0, sizeof lead);
	lead.dmode = p->dmode;
	lead.fmode = p->fmode;
	lead.write_metrics = !p->m->o->prevent_write_metrics;
	lead.names = p->names;
	lead.handlers = p->handlers;
	(void)steptx_commit(tx, &lead, &t->err);
}

static void
save_tx_abort_run(struct task *t)
{
	struct steptx *tx = ((struct save_tx_task *)t)->tx;

	steptx_abort(tx, &tx->err);
}

static void
save_tx_end_done(struct task *t)
{
	struct steptx *tx = ((struct save_tx_task *)t)->tx;

	if (t->err.code != 0)
		steptx_fail(tx, &t->err);
	free(t);
	save_tx_close(tx);
	steptx_unref(tx);
}

/* Every part arrived and is durable: commit. */
static void
save_tx_progress(struct steptx *tx)
{
	struct save *lead;

	if (tx->committing || tx->closed || tx->err.code != 0 ||
	    !steptx_ready(tx))
		return;
	lead = save_tx_lead(tx);
	if (lead == NULL || tx->begin != STEPTX_BEGUN)
		return;         /* no part of this daemon's has started yet */
	tx->committing = 1;
	if (save_tx_submit(tx, lead, save_tx_commit_run,
	    save_tx_end_done) != 0) {
		ckd_err e;

		tx->committing = 0;
		err_set(&e, CKPT_ENOMEM, "out of memory");
		steptx_fail(tx, &e);
		save_tx_failed(tx);
	}
}

/* Every open distributed manager of the job gets the step's error. */
static void
save_tx_tell_managers(struct steptx *tx)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__SaveDone sd = CKPT__SAVE_DONE__INIT;
	struct manager *m;
	int slot;

	for (m = manager_first(); m != NULL; m = m->next) {
		if (m->r != tx->r || m->closed || m->o->process_count < 2 ||
		    strcmp(m->o->job != NULL ? m->o->job : "", tx->job) != 0)
			continue;
		m->err_code = tx->err.code;
		m->err_step = tx->step;
		snprintf(m->err_msg, sizeof m->err_msg, "Saving step %" PRIu64
		    " failed: %.*s", tx->step, CKPT_ERRLEN - 64, tx->err.msg);
		slot = steptx_slot(tx, m->o->process_index);
		if (tx->nosave_sent || slot < 0 || tx->came == NULL ||
		    tx->came[slot] || !conn_alive(m->c))
			continue;
		/* A rank that has no part and was not answered: its async
		 * error comes as a SaveDone of no save (save_id 0). */
		sd.has_manager = 1;
		sd.manager = m->id;
		sd.has_step = 1;
		sd.step = tx->step;
		sd.has_code = 1;
		sd.code = m->err_code;
		sd.message = m->err_msg;
		resp.has_id = 1;
		resp.id = 0;
		resp.body_case = CKPT__RESPONSE__BODY_SAVE_DONE;
		resp.save_done = &sd;
		conn_reply(m->c, &resp, NULL, 0);
	}
	tx->nosave_sent = 1;
}

/*
 * The transaction failed (tx->err): parts still waiting for memory are
 * answered and dropped, every rank's manager gets the error, and once no
 * part's task runs any more the tmp dir is removed (abort task), after
 * which every started part gets SaveDone with the error.
 */
static void
save_tx_failed(struct steptx *tx)
{
	struct save *lead;
	unsigned i;

	if (tx->closed || tx->committing)
		return;
	steptx_ref(tx);
	for (i = 0; i < tx->nparts; i++) {
		struct save *p = save_of(tx->parts[i]);

		if (p == NULL || p->part.started)
			continue;
		/* Waiting for memory: never accepted. */
		save_queue_remove(p);
		tx->parts[i] = NULL;
		conn_reply_err(p->c, p->id, &tx->err);
		save_unlink(p);
		mgr_wake_saves(p->m);
		save_free(p);
	}
	save_tx_tell_managers(tx);
	if (tx->begin == STEPTX_BEGINNING || tx->nended < tx->nstarted)
		goto out;       /* again when the last of them ends */
	lead = save_tx_lead(tx);
	if (lead == NULL || tx->begin == STEPTX_NOT_BEGUN) {
		save_tx_close(tx);
		goto out;
	}
	tx->committing = 1;
	if (save_tx_submit(tx, lead, save_tx_abort_run,
	    save_tx_end_done) != 0)
		save_tx_close(tx);      /* the tmp dir stays: a leftover */
out:
	steptx_unref(tx);
}

/* ---- acceptance (loop) ---------------------------------------------------------- */

static void
save_reply_saved(struct conn *c, uint64_t id, int saved)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__SaveReply sr = CKPT__SAVE_REPLY__INIT;

	sr.has_saved = 1;
	sr.saved = saved;
	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_SAVE;
	resp.save = &sr;
	conn_reply(c, &resp, NULL, 0);
}

/* Map the staging buffer, reply "accepted", start the pipeline. */
static void
save_start(struct save *s)
{
	ckd_err e;

	s->running = 1;
	if (s->size > 0) {
		s->map = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->memfd, 0);
		if (s->map == MAP_FAILED) {
			s->map = NULL;
			err_errno(&e, errno, "mapping the staging buffer");
			goto fail;
		}
	}
	/* The fd stays open: the writers find the buffer's holes with it
	 * instead of faulting them in through the mapping. */
	if (s->map != NULL)
		store_src_init(&s->src, s->memfd, s->map);
	if (save_plan(s, &e) != 0)
		goto fail;
	if (save_multi(s)) {
		if (s->tx->err.code != 0) {
			e = s->tx->err;
			goto fail;
		}
		/* Its tasks start once the step's tmp dir exists. */
		if (s->tx->begin == STEPTX_NOT_BEGUN &&
		    save_tx_begin(s) != 0) {
			err_set(&e, CKPT_ENOMEM, "out of memory");
			goto fail;
		}
	} else if (save_submit(s, s->part.bytes < SAVE_SMALL ? save_small_run :
	    save_prepare_run, s->part.bytes < SAVE_SMALL ? save_finish_done :
	    save_prepare_done, 0) != 0) {
		err_set(&e, CKPT_ENOMEM, "out of memory");
		goto fail;
	}
	s->part.started = 1;
	SQ.ninflight++;
	SQ.staging += s->charge;
	{
		int was = user_is_active(s->user);

		s->user->staging += s->charge;
		user_activity(s->user, was);
	}
	s->r->busy++;
	s->r->last_save_ns = s->init_ns;
	log_debug("step %" PRIu64 " of %s accepted (%" PRIu64 " bytes "
	    "charged, %zu files)", s->step, s->r->path, s->charge, s->nfiles);
	save_reply_saved(s->c, s->id, 1);
	s->reply_ns = now_mono_ns();
	metrics_observe_since(METRICS_SAVE_BLOCKING, s->recv_ns);
	if (save_multi(s)) {
		/* Handed: from now on the rank may go away. */
		s->tx->nstarted++;
		if (s->tx->begin == STEPTX_BEGUN)
			save_part_submit(s);
	}
	return;
fail:
	metrics_count_save_failed(e.code);
	conn_reply_err(s->c, s->id, &e);
	if (save_multi(s)) {
		struct steptx *tx = s->tx;

		/* A part that could not start fails the step. */
		tx->parts[s->slot] = NULL;
		steptx_ref(tx);
		if (tx->err.code == 0) {
			ckd_err why;

			err_set(&why, e.code, "rank %" PRIu32 ": %s", s->rank,
			    e.msg);
			steptx_fail(tx, &why);
		}
		save_unlink(s);
		mgr_wake_saves(s->m);
		save_free(s);
		save_tx_failed(tx);
		steptx_unref(tx);
		return;
	}
	save_unlink(s);
	mgr_wake_saves(s->m);
	save_free(s);
}

/*
 * Admission under --memory-budget, fair between users. With the budget
 * shared by the n uids that have saves running or waiting, a uid's fair
 * share is budget / n:
 *   - a uid with nothing running may always start one save of at most
 *     its share, even past the budget, so another uid's huge save never
 *     makes a small one wait (each active uid may so exceed the budget by
 *     at most half of it: another uid is active, n >= 2);
 *   - otherwise a save starts when it fits in the budget, and, while other
 *     uids wait, when its uid stays within its share;
 *   - a save larger than the budget starts when nothing else runs.
 */
static int
save_fits(const struct save *s)
{
	const struct user *u = s->user;
	uint64_t budget = SQ.budget, share;
	unsigned n;

	if (budget == 0 || SQ.ninflight == 0)
		return 1;
	n = user_active() + !user_is_active(u);
	share = budget / n;
	if (u->staging == 0 && s->charge <= share)
		return 1;
	if (SQ.staging > budget || s->charge > budget - SQ.staging)
		return 0;
	if (SQ.nqueued > u->queued && s->charge > share - (u->staging <
	    share ? u->staging : share))
		return 0;
	return 1;
}

static void
save_dequeued(struct save *s)
{
	int was = user_is_active(s->user);

	s->qnext = NULL;
	SQ.nqueued--;
	s->user->queued--;
	s->user->queued_mem -= s->reqmem;
	user_activity(s->user, was);
}

/* Take s out of the memory queue (it never started). */
static void
save_queue_remove(struct save *s)
{
	struct save **pp = &SQ.qhead, *prev = NULL;

	while (*pp != NULL && *pp != s) {
		prev = *pp;
		pp = &(*pp)->qnext;
	}
	if (*pp == NULL)
		return;
	*pp = s->qnext;
	if (SQ.qtail == s)
		SQ.qtail = prev;
	save_dequeued(s);
}

/* Start the waiting saves that fit, oldest first; a uid's saves start in
 * their order (once one of them waits, its later ones wait too). */
static void
save_admit(void)
{
	static uint64_t pass;
	struct save **pp = &SQ.qhead, *s, *prev = NULL;

	pass++;
	while ((s = *pp) != NULL) {
		if (s->user->pass == pass || !save_fits(s)) {
			s->user->pass = pass;
			prev = s;
			pp = &s->qnext;
			continue;
		}
		*pp = s->qnext;
		if (SQ.qtail == s)
			SQ.qtail = prev;
		save_dequeued(s);
		save_start(s);
	}
	save_check_idle();
}

/* A transaction nobody joined after all: forget it. */
static void
save_tx_drop(struct steptx *tx)
{
	if (tx->narrived == 0 && !tx->closed)
		steptx_unlist(tx);
}

/* CKPT_EINVAL when a leaf of sv is replicated_elsewhere (only non-primary
 * ranks of a distributed manager may send those). */
static int
save_has_replicated(const Ckpt__Save *sv, ckd_err *e)
{
	char path[256];
	size_t i, k;

	for (i = 0; i < sv->n_items; i++)
		for (k = 0; k < sv->items[i]->n_leaves; k++) {
			const Ckpt__Leaf *l = sv->items[i]->leaves[k];

			if (!l->replicated_elsewhere)
				continue;
			savecheck_leaf_path(l, path, sizeof path);
			return err_set(e, CKPT_EINVAL, "leaf '%s' of item '%s' "
			    "is replicated elsewhere, but this process writes "
			    "the replicated leaves (the primary host)", path,
			    sv->items[i]->name);
		}
	return 0;
}

static int
save_has_pieces(const Ckpt__Save *sv)
{
	size_t i, k;

	for (i = 0; i < sv->n_items; i++)
		for (k = 0; k < sv->items[i]->n_leaves; k++)
			if (pieces_is_piece(sv->items[i]->leaves[k]))
				return 1;
	return 0;
}

/* Slot of rank among ranks[n] (NULL: 0..n-1), or -1. */
static int
save_slot_of(const uint32_t *ranks, unsigned n, uint32_t rank)
{
	unsigned i;

	if (ranks == NULL)
		return rank < n ? (int)rank : -1;
	for (i = 0; i < n; i++)
		if (ranks[i] == rank)
			return (int)i;
	return -1;
}

/* ---- the job's decision (coord_ops.agree) -------------------------------------- */

/* A Save waiting for the decision of its step. */
struct save_parked {
	struct save_parked *next;
	struct conn *c;                 /* referenced */
	struct manager *m;              /* referenced */
	Ckpt__Request *req;
	int memfd;
};

/* The task asking the coordinator for the job's decision of tx's step,
 * and the Saves of the step waiting for it (in the order they came). */
struct save_agree {
	struct task t;
	struct save_agree *next;        /* SQ.agreeing */
	struct steptx *tx;              /* referenced */
	int local;                      /* this node's decision */
	int saved;                      /* the job's */
	struct save_parked *parked, **ptail;
};

static struct save_agree *
save_agreeing(const struct steptx *tx)
{
	struct save_agree *a;

	for (a = SQ.agreeing; a != NULL; a = a->next)
		if (a->tx == tx)
			return a;
	return NULL;
}

static void
save_parked_free(struct save_parked *p)
{
	if (p->memfd >= 0)
		close(p->memfd);
	if (p->req != NULL)
		ckpt__request__free_unpacked(p->req, NULL);
	mgr_unref(p->m);
	conn_unref(p->c);
	free(p);
}

/* The Save req of c (memfd: its staging buffer) waits for the decision
 * of tx's step; it is handled again once the decision is known. */
static void
save_park(struct steptx *tx, struct conn *c, struct manager *m,
    Ckpt__Request *req, int memfd)
{
	struct save_agree *a = save_agreeing(tx);
	struct save_parked *p;
	ckd_err e;

	if (a == NULL || (p = calloc(1, sizeof *p)) == NULL) {
		if (memfd >= 0)
			close(memfd);
		err_set(&e, CKPT_ENOMEM, "out of memory");
		conn_reply_err(c, req->id, &e);
		ckpt__request__free_unpacked(req, NULL);
		return;
	}
	p->c = c;
	conn_ref(c);
	p->m = m;
	mgr_ref(m);
	p->req = req;
	p->memfd = memfd;
	*a->ptail = p;
	a->ptail = &p->next;
}

static void
save_agree_run(struct task *t)
{
	struct save_agree *a = (struct save_agree *)t;

	a->saved = a->local;
	(void)steptx_coord()->agree(a->tx, a->local, &a->saved, &t->err);
}

static void
save_agree_done(struct task *t)
{
	struct save_agree *a = (struct save_agree *)t, **pp;
	struct steptx *tx = a->tx;
	struct save_parked *p;

	for (pp = &SQ.agreeing; *pp != a; pp = &(*pp)->next)
		;
	*pp = a->next;
	if (t->err.code != 0) {
		if (tx->err.code == 0) {
			steptx_fail(tx, &t->err);
			save_tx_failed(tx);
		}
	} else {
		tx->saved = a->saved;
		if (a->saved != a->local)
			log_info("step %" PRIu64 " of %s (job %s): %s, as "
			    "another node decided for the job", tx->step,
			    tx->r->path, tx->job, a->saved ? "saved" :
			    "not saved");
	}
	/* The waiting Saves, as if they came now. */
	while ((p = a->parked) != NULL) {
		a->parked = p->next;
		if (steptx_find(tx->r, tx->job, tx->step) != tx ||
		    p->m->closed || !conn_alive(p->c)) {
			ckd_err e = tx->err;

			if (e.code == 0)
				err_set(&e, CKPT_ECLOSED, "step %" PRIu64
				    ": the manager was closed", tx->step);
			conn_reply_err(p->c, p->req->id, &e);
		} else {
			save_handle(p->c, p->m, p->req, &p->memfd,
			    p->memfd >= 0 ? 1 : 0);
			p->req = NULL;
			p->memfd = -1;
		}
		save_parked_free(p);
	}
	steptx_unref(tx);
	free(a);
}

/* Ask the coordinator for the job's decision of tx's step, this node's
 * being local (as m's policy says). */
static int
save_agree_start(struct steptx *tx, struct manager *m, int local)
{
	struct save_agree *a;

	a = task_new(sizeof *a, save_agree_run, save_agree_done,
	    conn_peer(m->c), conn_id(m->c));
	if (a == NULL)
		return CKPT_ENOMEM;
	a->tx = tx;
	steptx_ref(tx);
	a->local = local;
	a->ptail = &a->parked;
	a->next = SQ.agreeing;
	SQ.agreeing = a;
	worker_submit(&a->t);
	return 0;
}

/* The Saves of c waiting for a decision: dropped (their ranks did not
 * hand their part). */
static void
save_agree_conn_closed(struct conn *c)
{
	struct save_agree *a;
	struct save_parked *p, **pp;

	for (a = SQ.agreeing; a != NULL; a = a->next) {
		for (pp = &a->parked; (p = *pp) != NULL;) {
			if (p->c != c) {
				pp = &p->next;
				continue;
			}
			*pp = p->next;
			save_parked_free(p);
		}
		a->ptail = pp;
	}
}

/*
 * The Save of one rank of a distributed manager: join the transaction of
 * (root, job, step), or start it with the policy decision taken here once
 * for every rank. Returns 0 (*txp, *slotp: the part's place), 1 (the
 * decision is not to save), 2 (the Save waits for the job's decision
 * on *txp: save_park) or an error code (e set).
 */
static int
save_join(struct manager *m, const Ckpt__Save *sv, const char *name,
    int64_t now, struct steptx **txp, int *slotp, ckd_err *e)
{
	const Ckpt__ManagerOptions *o = m->o;
	struct root *r = m->r;
	const char *job = o->job != NULL ? o->job : "";
	const uint32_t *ranks = o->n_active_processes > 0 ?
	    o->active_processes : NULL;
	unsigned nparts = o->n_active_processes > 0 ?
	    (unsigned)o->n_active_processes : o->process_count;
	struct steptx *tx;
	int slot, prim, saved, agree, gone_now = 0;
	long i;

	if (nparts > STEPTX_MAX_PARTS)
		return err_set(e, CKPT_EINVAL, "process_count %u is over %u",
		    nparts, STEPTX_MAX_PARTS);
	if ((tx = steptx_find(r, job, sv->step)) != NULL) {
		if (tx->closed)
			return err_set(e, CKPT_EEXIST, "Checkpoint for step %"
			    PRIu64 " already exists.", sv->step);
		if (tx->nparts != nparts)
			return err_set(e, tx->nparts == 1 ? CKPT_EEXIST :
			    CKPT_EINVAL, "step %" PRIu64 ": %u processes, but "
			    "the step's other ranks have %u", sv->step, nparts,
			    tx->nparts);
		if ((slot = steptx_slot(tx, o->process_index)) < 0)
			return err_set(e, CKPT_EINVAL, "step %" PRIu64 ": "
			    "process_index %" PRIu32 " is not a rank of the "
			    "step", sv->step, o->process_index);
		if (tx->err.code != 0) {
			steptx_told(tx, slot);
			*e = tx->err;
			return e->code;
		}
		if (save_agreeing(tx) != NULL) {
			*txp = tx;
			return 2;       /* the job's decision is not known yet */
		}
		if (!tx->saved) {
			if (++tx->narrived >= tx->nparts)
				steptx_unlist(tx);
			return 1;
		}
		if (tx->parts[slot] != NULL)
			return err_set(e, CKPT_EEXIST, "step %" PRIu64 ": rank %"
			    PRIu32 " already handed its part", sv->step,
			    o->process_index);
		*txp = tx;
		*slotp = slot;
		return 0;
	}
	if ((slot = save_slot_of(ranks, nparts, o->process_index)) < 0)
		return err_set(e, CKPT_EINVAL, "process_index %" PRIu32 " is "
		    "not below process_count %u (or among active_processes)",
		    o->process_index, nparts);
	if ((prim = save_slot_of(ranks, nparts, o->primary_host)) < 0)
		return err_set(e, CKPT_EINVAL, "primary_host %" PRIu32 " is not "
		    "a rank of the job", o->primary_host);
	/* A rank late for a step that failed already: its error at once. */
	if (steptx_failed_part(r, job, sv->step, o->process_index, e) != 0) {
		if (m->err_code != 0 && m->err_step == sv->step)
			m->err_code = 0;        /* told by this answer */
		return e->code;
	}
	i = root_find_step(r, sv->step);
	if ((i >= 0 && r->steps[i].state == INDEX_COMMITTED) ||
	    save_pending_step(r, sv->step))
		return err_set(e, CKPT_EEXIST, "Checkpoint for step %" PRIu64
		    " already exists.", sv->step);
	saved = sv->force;
	if (!saved) {
		int64_t latest = root_latest(r), pend = save_latest_pending(r);

		if (pend > latest)
			latest = pend;
		saved = policy_should_save(m->pol, sv->step, latest, now,
		    r->last_save_ns, r->saves > 0, sv->preempted ||
		    (preempt_active() && !m->preempt_saved)) != 0;
	}
	if (saved) {
		char gone[256];

		/* A rank that went away since the last step cannot hand its
		 * part: fail now rather than at the timeout. Every rank
		 * arriving finds the same. */
		if (steptx_ranks_gone(r, job, ranks, nparts, gone,
		    sizeof gone) > 0)
			gone_now = err_set(e, CKPT_ERANK, "step %" PRIu64 ": "
			    "ranks %s are gone (connection closed)", sv->step,
			    gone);
	}
	/* Nodes of a job decide once for all of them (coord_ops.agree):
	 * until then the step is taken as saved (its timer fails it if
	 * parts are missing) and its Saves wait. A forced save is saved on
	 * every rank. */
	agree = !sv->force && gone_now == 0 && steptx_coord() != NULL &&
	    steptx_coord()->agree != NULL;
	tx = steptx_new(r, job, sv->step, name, nparts, ranks, (unsigned)prim,
	    agree ? 1 : saved, o->async_timeout_secs, now);
	if (tx == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	tx->on_fail = save_tx_failed;
	tx->on_progress = save_tx_progress;
	if (agree) {
		if (save_agree_start(tx, m, saved) != 0) {
			err_set(e, CKPT_ENOMEM, "out of memory");
			steptx_fail(tx, e);
			steptx_told(tx, slot);
			save_tx_failed(tx);
			return e->code;
		}
		*txp = tx;
		return 2;
	}
	if (gone_now != 0) {
		/* Failed at once: answered here, listed as failed, the
		 * async error of the job's other managers, and the answer
		 * of the ranks still to come. */
		steptx_fail(tx, e);
		steptx_told(tx, slot);
		save_tx_failed(tx);
		if (m->err_step == sv->step)
			m->err_code = 0;        /* told by this answer */
		return e->code;
	}
	if (!saved) {
		tx->narrived = 1;
		return 1;
	}
	*txp = tx;
	*slotp = slot;
	return 0;
}

void
save_handle(struct conn *c, struct manager *m, Ckpt__Request *req,
    int *fds, size_t nfds)
{
	Ckpt__Save *sv = req->save;
	struct root *r = m->r;
	struct save *s = NULL;
	struct steptx *tx = NULL;
	int slot = 0;
	uint64_t size = 0;
	int64_t now, latest, pend;
	char name[256];
	ckd_err e;
	size_t i;
	int memfd = -1;
	int64_t recv_ns;

	memset(&e, 0, sizeof e);
	recv_ns = now_mono_ns();
	if (m->o->read_only) {
		err_set(&e, CKPT_EREADONLY, "Checkpoint manager is read-only.");
		goto fail;
	}
	if (nfds > 1) {
		err_set(&e, CKPT_EINVAL, "a save carries exactly one staging "
		    "buffer (got %zu fds)", nfds);
		goto fail;
	}
	if (nfds == 1) {
		memfd = fds[0];
		nfds = 0;
		if (savecheck_memfd(memfd, &size, &e) != 0)
			goto fail;
	}
	if (savecheck_request(sv, size, &e) != 0)
		goto fail;
	if (store_step_name(&r->nm, sv->step, name, sizeof name) != 0) {
		err_set(&e, CKPT_EINVAL, "step name too long");
		goto fail;
	}
	now = sv->has_timestamp_ns ? sv->timestamp_ns : now_wall_ns();
	if (save_has_replicated(sv, &e) != 0 && (m->o->process_count < 2 ||
	    m->o->process_index == m->o->primary_host))
		goto fail;
	if (m->o->process_count > 1) {
		/* A part of a distributed step. */
		switch (save_join(m, sv, name, now, &tx, &slot, &e)) {
		case 0:
			break;
		case 2:
			save_park(tx, c, m, req, memfd);
			return;
		case 1:
			if (memfd >= 0)
				close(memfd);
			save_reply_saved(c, req->id, 0);
			ckpt__request__free_unpacked(req, NULL);
			return;
		default:
			goto fail;
		}
		goto accepted;
	}
	if (!sv->force) {
		latest = root_latest(r);
		pend = save_latest_pending(r);
		if (pend > latest)
			latest = pend;
		if (!policy_should_save(m->pol, sv->step, latest, now,
		    r->last_save_ns, r->saves > 0, sv->preempted ||
		    (preempt_active() && !m->preempt_saved))) {
			if (memfd >= 0)
				close(memfd);
			save_reply_saved(c, req->id, 0);
			ckpt__request__free_unpacked(req, NULL);
			return;
		}
	}
	{
		long i2 = root_find_step(r, sv->step);

		if ((i2 >= 0 && r->steps[i2].state == INDEX_COMMITTED) ||
		    save_pending_step(r, sv->step)) {
			err_set(&e, CKPT_EEXIST, "Checkpoint for step %" PRIu64
			    " already exists.", sv->step);
			goto fail;
		}
	}
	/* One process: a transaction of one part. */
	if ((tx = steptx_new(r, "", sv->step, name, 1, NULL, 0, 1, 0,
	    now)) == NULL) {
		err_set(&e, CKPT_ENOMEM, "out of memory");
		goto fail;
	}
accepted:
	if ((s = calloc(1, sizeof *s)) == NULL) {
		save_tx_drop(tx);
		err_set(&e, CKPT_ENOMEM, "out of memory");
		goto fail;
	}
	s->tx = tx;
	steptx_ref(tx);
	s->slot = (unsigned)slot;
	s->rank = m->o->process_index;
	s->primary = (unsigned)slot == tx->primary;
	s->pieces = save_has_pieces(sv);
	tx->parts[slot] = &s->part;
	tx->narrived++;
	if (preempt_active())
		m->preempt_saved = 1;   /* its preemption save is taken */
	m->saved = 1;
	s->memfd = memfd;
	s->rootfd = s->tmpfd = -1;
	s->c = c;
	conn_ref(c);
	s->id = req->id;
	s->cred = *conn_peer(c);
	s->lane = conn_id(c);
	if ((s->user = user_get(s->cred.uid)) == NULL) {
		tx->parts[slot] = NULL;
		tx->narrived--;
		steptx_unref(tx);
		save_tx_drop(tx);
		free(s);
		s = NULL;
		conn_unref(c);
		err_set(&e, CKPT_ENOMEM, "out of memory");
		goto fail;
	}
	s->user->saves++;
	s->charge = save_charge(sv, &s->reqmem);
	s->m = m;
	mgr_ref(m);
	s->r = r;
	root_ref(r);
	store_sync_init(&s->sync, r->be);
	s->req = req;
	s->part.sv = sv;
	s->step = sv->step;
	snprintf(s->name, sizeof s->name, "%s", name);
	s->size = size;
	s->init_ns = now;
	s->recv_ns = recv_ns;
	s->dmode = m->dmode;
	s->fmode = m->fmode;
	s->next = SQ.saves;
	if (SQ.saves != NULL)
		SQ.saves->prev = s;
	SQ.saves = s;
	r->saves++;
	m->pending++;
	if (s->user->queued == 0 && save_fits(s)) {
		save_start(s);
		return;
	}
	/* Waiting saves hold their unpacked requests: a uid's may take a
	 * quarter of the budget (one may always wait). */
	if (s->user->queued > 0 && SQ.budget != 0 &&
	    s->reqmem > SQ.budget / 4 - (s->user->queued_mem <
	    SQ.budget / 4 ? s->user->queued_mem : SQ.budget / 4)) {
		err_set(&e, CKPT_ELIMIT, "uid %u has %u saves waiting for "
		    "memory, holding %" PRIu64 " bytes of requests (a quarter "
		    "of ckptd --memory-budget)", (unsigned)s->cred.uid,
		    s->user->queued, s->user->queued_mem);
		conn_reply_err(c, req->id, &e);
		tx->parts[slot] = NULL;
		tx->narrived--;
		save_unlink(s);
		mgr_wake_saves(s->m);
		save_free(s);
		save_tx_drop(tx);
		return;
	}
	log_debug("step %" PRIu64 " of %s waits for memory (%" PRIu64
	    " bytes; %" PRIu64 " of %" PRIu64 " in use, %" PRIu64 " by uid "
	    "%u)", s->step, r->path, s->charge, SQ.staging, SQ.budget,
	    s->user->staging, (unsigned)s->cred.uid);
	if (SQ.qtail != NULL)
		SQ.qtail->qnext = s;
	else
		SQ.qhead = s;
	SQ.qtail = s;
	SQ.nqueued++;
	{
		int was = user_is_active(s->user);

		s->user->queued++;
		s->user->queued_mem += s->reqmem;
		user_activity(s->user, was);
	}
	return;
fail:
	if (memfd >= 0)
		close(memfd);
	for (i = 0; i < nfds; i++)
		close(fds[i]);
	metrics_count_save_failed(e.code);
	conn_reply_err(c, req->id, &e);
	ckpt__request__free_unpacked(req, NULL);
}

void
save_init(struct index *ix, unsigned nworkers, uint64_t budget)
{
	SQ.ix = ix;
	SQ.nworkers = nworkers ? nworkers : 1;
	SQ.budget = budget;
}

void
save_set_budget(uint64_t budget)
{
	SQ.budget = budget;
	save_admit();
}

void
save_stats(struct save_counts *out)
{
	out->queued = SQ.nqueued;
	out->inflight = SQ.ninflight;
	out->staging = SQ.staging;
	out->budget = SQ.budget;
	out->committed = SQ.committed;
	out->failed = SQ.failed;
	out->bytes_written = SQ.bytes_written;
}

void
save_conn_closed(struct conn *c)
{
	struct save **pp = &SQ.qhead, *s;

	SQ.qtail = NULL;
	while ((s = *pp) != NULL) {
		if (s->c != c) {
			SQ.qtail = s;
			pp = &s->qnext;
			continue;
		}
		*pp = s->qnext;
		save_dequeued(s);
		if (save_multi(s)) {
			/* A rank that had not handed its part. */
			struct steptx *tx = s->tx;
			ckd_err e;

			tx->parts[s->slot] = NULL;
			err_set(&e, CKPT_ERANK, "step %" PRIu64 ": ranks [%"
			    PRIu32 "] did not hand their part (connection "
			    "closed)", tx->step, s->rank);
			steptx_fail(tx, &e);
			steptx_ref(tx);
			save_unlink(s);
			mgr_wake_saves(s->m);
			save_free(s);
			save_tx_failed(tx);
			steptx_unref(tx);
			/* The queue may have changed: from its head. */
			pp = &SQ.qhead;
			SQ.qtail = NULL;
			continue;
		}
		save_unlink(s);
		mgr_wake_saves(s->m);
		save_free(s);
	}
	save_agree_conn_closed(c);
	/* Ranks of c that have not handed their part of a step. Failing a
	 * step may free other managers' parts (and closed managers with
	 * them): the managers of c (still open, c holds them) first. */
	{
		struct manager *m, **v = NULL;
		size_t n = 0, i;

		for (m = manager_first(); m != NULL; m = m->next)
			n += m->c == c && !m->closed && m->o->process_count > 1;
		if (n > 0 && (v = calloc(n, sizeof *v)) != NULL) {
			n = 0;
			for (m = manager_first(); m != NULL; m = m->next)
				if (m->c == c && !m->closed &&
				    m->o->process_count > 1) {
					mgr_ref(m);
					v[n++] = m;
				}
			for (i = 0; i < n; i++) {
				steptx_rank_gone(v[i]->r, v[i]->o->job != NULL ?
				    v[i]->o->job : "", v[i]->o->process_index,
				    save_tx_failed);
				mgr_unref(v[i]);
			}
			free(v);
		}
	}
	save_admit();
}

/* Call the idle callback when no save is pending. */
static void
save_check_idle(void)
{
	void (*cb)(void *);

	if (SQ.idle_cb == NULL || SQ.nqueued + SQ.ninflight != 0)
		return;
	cb = SQ.idle_cb;
	SQ.idle_cb = NULL;
	cb(SQ.idle_arg);
}

void
save_on_idle(void (*cb)(void *arg), void *arg)
{
	SQ.idle_cb = cb;
	SQ.idle_arg = arg;
	steptx_fail_incomplete(save_tx_failed);
	save_check_idle();
}

void
save_shutdown(void)
{
	struct save *s;

	while ((s = SQ.qhead) != NULL) {
		SQ.qhead = s->qnext;
		save_dequeued(s);
		save_unlink(s);
		save_free(s);
	}
	SQ.qtail = NULL;
	SQ.idle_cb = NULL;
	steptx_shutdown();
}
