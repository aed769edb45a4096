/*
 * restore.c - the read side, all in worker tasks as the requesting peer:
 *   Restore       resolve the step, read _CHECKPOINT_METADATA and each
 *                 item's metadata, open the safetensors files and reply
 *                 with per-leaf (fd_index, offset, xxh3) and the fds;
 *   StepMetadata  the raw _CHECKPOINT_METADATA, or the root metadata;
 *   Verify        re-read every tensor and compare checksums.
 * Restores never wait for anything in the daemon: the client waits for its
 * own pending save first.
 */
#include <sys/stat.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunksum.h"
#include "metrics.h"
#include "restore.h"
#include "s3acl.h"
#include "savecheck.h"
#include "stepmetrics.h"

#define RESTORE_MAX_DOC CKPT_MAX_DOC            /* JSON items, metadata */
#define RESTORE_MAX_DIRENTS 4096
#define RESTORE_MAX_PROBLEMS 10000

enum rs_kind {
	RS_RESTORE = 1,
	RS_METADATA = 2,
	RS_VERIFY = 3,
};

struct rs_task {
	struct task t;
	int kind;
	int64_t recv_ns;                /* request read (monotonic), metrics */
	struct conn *c;                 /* referenced */
	uint64_t id;
	struct root *r;                 /* referenced */
	char *path;                     /* root directory (owned) */
	int elsewhere;                  /* path is not r's directory */
	/* r is kept in a local tier (tier.h): r's directory is the local
	 * copy, path names the store (opened as elsewhere when the local
	 * copy will not do). */
	int tiered;
	/* The backend of the root read: r's, or the one path calls for
	 * (set by rs_open_root on the worker). */
	const struct store_backend *be;
	struct store_naming nm;
	Ckpt__Request *req;             /* owned */
	int has_step;                   /* else: latest (restore) / root */
	uint64_t step;
	int find_latest;                /* another directory: scan it */
	int metadata_only;
	/* restore results */
	Ckpt__Item **items;
	int *mine;                      /* items[i] built here, not by store */
	size_t nitems;
	int fds[CKPT_MAX_FDS];
	size_t nfds;
	uint64_t fetched;               /* bytes asked of the backend's fetch */
	char *step_dir;
	char *meta_json;
	/* verify */
	uint64_t *steps;
	size_t nsteps;
	uint64_t *checked;
	size_t nchecked;
	Ckpt__VerifyProblem **probs;
	size_t nprobs, capprobs;
};

/* ---- helpers (worker) -------------------------------------------------------- */

/* The root's own directory (by identity), or the directory a restore
 * named. */
static int
rs_open_root(struct rs_task *rt, int *fd, ckd_err *e)
{
	if (rt->elsewhere)
		return store_open_root(rt->path, 0, 0, &rt->be, fd, e);
	return root_open_dir(rt->r, fd, e);
}

static int
rs_cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
rs_free_names(char **names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Sorted names of the item directories of a step (hidden ones skipped). */
static int
rs_list_items(const struct store_backend *be, int stepfd, char ***out,
    size_t *n, ckd_err *e)
{
	struct store_list *d;
	const char *name;
	char **names = NULL;
	size_t cnt = 0;
	int k;

	*out = NULL;
	*n = 0;
	if ((d = be->list_open(stepfd, e)) == NULL)
		return e->code;
	if ((names = calloc(RESTORE_MAX_DIRENTS, sizeof *names)) == NULL) {
		be->list_close(d);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	while (cnt < RESTORE_MAX_DIRENTS) {
		if ((k = be->list_next(d, &name)) <= 0) {
			if (k == 0)
				break;
			be->list_close(d);
			rs_free_names(names, cnt);
			return err_errno(e, errno, "listing step directory");
		}
		if (name[0] == '.' || !store_valid_component(name) ||
		    !be->list_is_dir(d))
			continue;
		if ((names[cnt] = strdup(name)) == NULL) {
			be->list_close(d);
			rs_free_names(names, cnt);
			return err_set(e, CKPT_ENOMEM, "out of memory");
		}
		cnt++;
	}
	be->list_close(d);
	qsort(names, cnt, sizeof *names, rs_cmpstr);
	*out = names;
	*n = cnt;
	return 0;
}

static int
rs_has_file(const struct store_backend *be, int dirfd, const char *name)
{
	struct stat st;

	return be->stat(dirfd, name, &st) == 0 && S_ISREG(st.st_mode);
}

/* The handler of an item: from _CHECKPOINT_METADATA, else by its files. */
static Ckpt__Handler
rs_item_handler(const struct store_backend *be,
    const struct store_step_meta *meta, const char *item, int itemfd)
{
	size_t i;

	for (i = 0; meta != NULL && i < meta->nitems; i++)
		if (meta->item_names[i] != NULL &&
		    strcmp(meta->item_names[i], item) == 0 &&
		    meta->handlers[i] != CKPT__HANDLER__HANDLER_UNSPECIFIED)
			return meta->handlers[i];
	if (rs_has_file(be, itemfd, STORE_TREE_METADATA))
		return CKPT__HANDLER__HANDLER_STANDARD;
	if (rs_has_file(be, itemfd, STORE_JSON_FILE))
		return CKPT__HANDLER__HANDLER_JSON;
	if (rs_has_file(be, itemfd, STORE_PROTO_FILE))
		return CKPT__HANDLER__HANDLER_PROTO;
	return CKPT__HANDLER__HANDLER_UNSPECIFIED;
}

static int
rs_is_tree(Ckpt__Handler h)
{
	return h == CKPT__HANDLER__HANDLER_STANDARD ||
	    h == CKPT__HANDLER__HANDLER_PYTREE ||
	    h == CKPT__HANDLER__HANDLER_ARRAY;
}

/* Open <root>/<step name>; Orbax's errors when it is missing. */
static int
rs_open_step(struct rs_task *rt, int rootfd, uint64_t step, char *name,
    size_t len, int *stepfd, ckd_err *e)
{
	char tmp[300];
	struct stat st;

	if (store_step_name(&rt->nm, step, name, len) != 0)
		return err_set(e, CKPT_EINVAL, "step name too long");
	if ((*stepfd = rt->be->open_dir(rootfd, name)) >= 0)
		return 0;
	if (errno != ENOENT)
		return err_errno(e, errno, "opening %s/%s", rt->path, name);
	snprintf(tmp, sizeof tmp, "%s%s", name, CKPT_TMP_SUFFIX);
	if (rt->be->stat(rootfd, tmp, &st) == 0)
		return err_set(e, CKPT_EINCOMPLETE, "Found incomplete "
		    "checkpoint at %s/%s.", rt->path, name);
	return err_set(e, CKPT_ENOTFOUND, "Checkpoint at %s/%s not found.",
	    rt->path, name);
}

static void
rs_items_free(struct rs_task *rt)
{
	size_t i;

	for (i = 0; i < rt->nitems; i++) {
		Ckpt__Item *it = rt->items[i];

		if (it == NULL)
			continue;
		free(it->name);
		it->name = NULL;
		if (rt->mine[i]) {
			free(it->json);
			free(it);
		} else {
			store_item_free(it);
		}
	}
	free(rt->items);
	free(rt->mine);
	rt->items = NULL;
	rt->mine = NULL;
	rt->nitems = 0;
}

static void
rs_task_free(struct rs_task *rt)
{
	size_t i;

	rs_items_free(rt);
	for (i = 0; i < rt->nfds; i++)
		rt->be->close(rt->fds[i]);
	for (i = 0; i < rt->nprobs; i++) {
		free(rt->probs[i]->item);
		free(rt->probs[i]->leaf);
		free(rt->probs[i]->message);
		free(rt->probs[i]);
	}
	free(rt->probs);
	free(rt->steps);
	free(rt->checked);
	free(rt->step_dir);
	free(rt->meta_json);
	free(rt->path);
	if (rt->req != NULL)
		ckpt__request__free_unpacked(rt->req, NULL);
	if (rt->c != NULL)
		conn_unref(rt->c);
	root_unref(rt->r);
	free(rt);
}

/* ---- restore (worker) --------------------------------------------------------------- */

static int
rs_cmp_range(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) :
	    x[1] < y[1] ? -1 : x[1] > y[1];
}

/* Whether region g is at item `item` and leaf l's path. */
static int
rs_region_at(const Ckpt__Region *g, const char *item, const Ckpt__Leaf *l)
{
	size_t i;

	if (g->item == NULL || strcmp(g->item, item) != 0 ||
	    g->n_path != l->n_path)
		return 0;
	for (i = 0; i < l->n_path; i++) {
		const Ckpt__PathElem *a = g->path[i], *b = l->path[i];

		if (a->kind != b->kind)
			return 0;
		if (a->kind == CKPT__KEY_KIND__KEY_DICT ?
		    (a->key == NULL || b->key == NULL ||
		    strcmp(a->key, b->key) != 0) : a->index != b->index)
			return 0;
	}
	return 1;
}

/*
 * The bytes [*lo, *hi) of array leaf l to fetch for the regions of the
 * request (rq) at its path: none of them, the whole array; else the rows
 * of l (a piece of a global array at its piece_offsets, or a whole
 * array) that the regions meet, widened to whole chunks with chunk
 * sums, to the whole array without (the client then verifies it whole),
 * and nothing when they meet none. libckpt reads and verifies the same
 * bytes (restore.c, piece_chunk_range), out of the same regions.
 */
static void
rs_leaf_range(const Ckpt__Restore *rq, const char *item, const Ckpt__Leaf *l,
    uint64_t *lo, uint64_t *hi)
{
	uint64_t rlo = UINT64_MAX, rhi = 0, r0 = 0, r1 = 0, rowbytes, cb;
	size_t i, d, nd = l->n_shape;
	int any = 0;

	*lo = 0;
	*hi = l->nbytes;
	if (rq == NULL || rq->n_regions == 0 || nd == 0 || l->shape[0] == 0 ||
	    (l->n_piece_offsets != 0 && l->n_piece_offsets != nd))
		return;
	for (i = 0; i < rq->n_regions; i++) {
		const Ckpt__Region *g = rq->regions[i];

		if (!rs_region_at(g, item, l))
			continue;
		any = 1;
		if (g->n_offsets != nd || g->n_shape != nd)
			return;         /* not this array's: all of it */
		for (d = 0; d < nd; d++) {
			uint64_t po = l->n_piece_offsets ? l->piece_offsets[d] :
			    0, a, b;

			if (g->offsets[d] > UINT64_MAX - g->shape[d])
				return;
			a = g->offsets[d] > po ? g->offsets[d] : po;
			b = g->offsets[d] + g->shape[d] < po + l->shape[d] ?
			    g->offsets[d] + g->shape[d] : po + l->shape[d];
			if (a >= b)
				break;  /* the region misses the array */
			if (d == 0) {
				r0 = a - po;
				r1 = b - po;
			}
		}
		if (d < nd)
			continue;
		rlo = r0 < rlo ? r0 : rlo;
		rhi = r1 > rhi ? r1 : rhi;
	}
	if (!any)
		return;
	if (rlo >= rhi) {
		*hi = 0;        /* met by none */
		return;
	}
	if (!chunksum_leaf_has(l))
		return;         /* verified whole */
	rowbytes = l->nbytes / l->shape[0];
	cb = l->chunk_bytes;
	*lo = rlo * rowbytes / cb * cb;
	*hi = (rhi * rowbytes + cb - 1) / cb * cb;
	if (*hi > l->nbytes)
		*hi = l->nbytes;
}

/* A backend whose files are fetched (fetch): the bytes of its tensors in
 * all of the item's files (fds[first..]) in one call, nothing else; of an
 * array restored in part (regions in the request), only what rs_leaf_range
 * says. Adds the bytes asked for to *fetched. */
static int
rs_fetch_leaves(const struct store_backend *be, const Ckpt__Restore *rq,
    const Ckpt__Item *it, const int *fds, size_t first, uint64_t *fetched,
    ckd_err *e)
{
	uint64_t lo, hi;
	struct store_range *rg;
	struct store_fetch *fs;
	uint64_t (*v)[3];       /* fd_index, offset, nbytes */
	size_t i, n = 0, nf = 0;
	int r = 0;

	if (be->fetch == NULL || it->n_leaves == 0)
		return 0;
	v = calloc(it->n_leaves, sizeof *v);
	rg = calloc(it->n_leaves, sizeof *rg);
	fs = calloc(it->n_leaves, sizeof *fs);
	if (v == NULL || rg == NULL || fs == NULL) {
		free(v);
		free(rg);
		free(fs);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	for (i = 0; i < it->n_leaves; i++) {
		const Ckpt__Leaf *l = it->leaves[i];

		if (l->kind == CKPT__LEAF_KIND__LEAF_ARRAY &&
		    l->has_fd_index && l->fd_index >= first && l->has_offset) {
			rs_leaf_range(rq, it->name != NULL ? it->name : "", l,
			    &lo, &hi);
			if (hi <= lo)
				continue;
			v[n][0] = l->fd_index;
			v[n][1] = l->offset + lo;
			v[n++][2] = hi - lo;
			*fetched += hi - lo;
		}
	}
	qsort(v, n, sizeof *v, rs_cmp_range);
	for (i = 0; i < n; i++) {
		rg[i].off = v[i][1];
		rg[i].len = v[i][2];
		if (i == 0 || v[i][0] != v[i - 1][0]) {
			fs[nf].f = fds[v[i][0]];
			fs[nf++].r = &rg[i];
		}
		fs[nf - 1].n++;
	}
	if (nf > 0)
		r = be->fetch(fs, nf, e);
	free(fs);
	free(rg);
	free(v);
	return r;
}

static int
rs_restore_item(struct rs_task *rt, int stepfd,
    const struct store_step_meta *meta, const char *name, ckd_err *e)
{
	const struct store_backend *be = rt->be;
	Ckpt__Handler h;
	Ckpt__Item *it = NULL;
	size_t i = rt->nitems, len, first;
	char *doc = NULL;
	int itemfd, r = 0;

	if ((itemfd = be->open_dir(stepfd, name)) < 0)
		return err_errno(e, errno, "opening item \"%s\"", name);
	h = rs_item_handler(be, meta, name, itemfd);
	if (rs_is_tree(h)) {
		if ((r = store_read_tree_metadata(be, itemfd, &it, e)) != 0)
			goto out;
		rt->items[i] = it;
		rt->mine[i] = 0;
		rt->nitems++;
		free(it->name);
		it->has_handler = 1;
		it->handler = h;
		if ((it->name = strdup(name)) == NULL) {
			r = err_set(e, CKPT_ENOMEM, "out of memory");
			goto out;
		}
		first = rt->nfds;
		if (!rt->metadata_only && (r = store_open_item_files(be,
		    itemfd, it, rt->fds, &rt->nfds, CKPT_MAX_FDS, e)) == 0)
			r = rs_fetch_leaves(be, rt->req->restore, it,
			    rt->fds, first, &rt->fetched, e);
	} else if (h == CKPT__HANDLER__HANDLER_JSON ||
	    h == CKPT__HANDLER__HANDLER_PROTO) {
		r = store_read_file(be, itemfd,
		    h == CKPT__HANDLER__HANDLER_JSON ?
		    STORE_JSON_FILE : STORE_PROTO_FILE, RESTORE_MAX_DOC, &doc,
		    &len, e);
		if (r != 0)
			goto out;
		if ((it = calloc(1, sizeof *it)) == NULL) {
			free(doc);
			r = err_set(e, CKPT_ENOMEM, "out of memory");
			goto out;
		}
		ckpt__item__init(it);
		rt->items[i] = it;
		rt->mine[i] = 1;
		rt->nitems++;
		it->json = doc;
		it->has_handler = 1;
		it->handler = h;
		if ((it->name = strdup(name)) == NULL)
			r = err_set(e, CKPT_ENOMEM, "out of memory");
	} else {
		r = err_set(e, CKPT_ECORRUPT, "item \"%s\" of %s has no "
		    "recognizable format", name, rt->step_dir);
	}
out:
	be->close(itemfd);
	return r;
}

static void
rs_restore_from(struct task *t)
{
	struct rs_task *rt = (struct rs_task *)t;
	Ckpt__Restore *rq = rt->req->restore;
	struct store_step_meta meta;
	char name[256], **avail = NULL, msg[CKPT_ERRLEN];
	size_t navail = 0, i, k, len, off;
	int rootfd = -1, stepfd = -1, have_meta = 0, r;

	memset(&meta, 0, sizeof meta);
	if ((r = rs_open_root(rt, &rootfd, &t->err)) != 0)
		return;
	if (rt->find_latest) {
		struct index_step *found = NULL;
		size_t nfound = 0;

		if (root_scan_disk(rt->be, rootfd, &rt->nm, NULL, 0, &found,
		    &nfound, NULL, &t->err) != 0)
			goto out;
		if (nfound == 0) {
			err_set(&t->err, CKPT_ENOSTEPS, "No steps found in %s.",
			    rt->path);
			goto out;
		}
		rt->step = found[nfound - 1].step;
		index_steps_free(found, nfound);
	}
	if (rs_open_step(rt, rootfd, rt->step, name, sizeof name, &stepfd,
	    &t->err) != 0)
		goto out;
	len = strlen(rt->path) + strlen(name) + 2;
	if ((rt->step_dir = malloc(len)) == NULL) {
		err_set(&t->err, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	snprintf(rt->step_dir, len, "%s/%s", rt->path, name);
	r = store_read_file(rt->be, stepfd, STORE_STEP_METADATA,
	    RESTORE_MAX_DOC, &rt->meta_json, &len, &t->err);
	if (r != 0 && r != CKPT_ENOTFOUND)
		goto out;
	memset(&t->err, 0, sizeof t->err);
	if (r == 0) {
		/* best effort, except a step a newer ckptd wrote */
		r = store_read_step_meta(rt->be, stepfd, &meta, &t->err);
		if (r == CKPT_EVERSION)
			goto out;
		have_meta = r == 0;
	}
	memset(&t->err, 0, sizeof t->err);
	if (rs_list_items(rt->be, stepfd, &avail, &navail, &t->err) != 0)
		goto out;
	k = rq->n_items > 0 ? rq->n_items : navail;
	if (k > 0 && ((rt->items = calloc(k, sizeof *rt->items)) == NULL ||
	    (rt->mine = calloc(k, sizeof *rt->mine)) == NULL)) {
		err_set(&t->err, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if (rq->n_items > 0) {
		for (i = 0; i < rq->n_items; i++) {
			const char *want = rq->items[i];

			if (want != NULL && bsearch(&want, avail, navail,
			    sizeof *avail, rs_cmpstr) != NULL)
				continue;
			/* Orbax's KeyError text, Python list repr. */
			off = (size_t)snprintf(msg, sizeof msg, "Item \"%s\" was "
			    "not found in the checkpoint. Available items: [",
			    want ? want : "");
			for (k = 0; k < navail && off < sizeof msg; k++)
				off += (size_t)snprintf(msg + off, sizeof msg -
				    off, "%s'%s'", k ? ", " : "", avail[k]);
			if (off < sizeof msg)
				snprintf(msg + off, sizeof msg - off, "]");
			err_set(&t->err, CKPT_ENOITEM, "%s", msg);
			goto out;
		}
		for (i = 0; i < rq->n_items; i++)
			if (rs_restore_item(rt, stepfd, have_meta ? &meta : NULL,
			    rq->items[i], &t->err) != 0)
				goto out;
	} else {
		for (i = 0; i < navail; i++) {
			int fd = rt->be->open_dir(stepfd, avail[i]);
			Ckpt__Handler h = CKPT__HANDLER__HANDLER_UNSPECIFIED;

			/* The step's metrics (Orbax lists them among
			 * item_handlers) are no item; an item of that name
			 * is known by its files. */
			if (fd >= 0) {
				h = rs_item_handler(rt->be, have_meta &&
				    strcmp(avail[i], STEPMETRICS_ITEM) != 0 ?
				    &meta : NULL, avail[i], fd);
				rt->be->close(fd);
			}
			if (h == CKPT__HANDLER__HANDLER_UNSPECIFIED)
				continue;       /* not an item we can read */
			if (rs_restore_item(rt, stepfd, have_meta ? &meta : NULL,
			    avail[i], &t->err) != 0)
				goto out;
		}
	}
out:
	if (t->err.code != 0) {
		rs_items_free(rt);
		for (i = 0; i < rt->nfds; i++)
			rt->be->close(rt->fds[i]);
		rt->nfds = 0;
	}
	if (have_meta)
		store_step_meta_free(&meta);
	rs_free_names(avail, navail);
	if (stepfd >= 0)
		rt->be->close(stepfd);
	rt->be->close(rootfd);
}

static void
rs_local_problem(void *arg, const char *tensor, const char *msg)
{
	char *why = arg;

	if (why[0] == '\0')
		snprintf(why, CKPT_ERRLEN, "tensor %s: %s", tensor, msg);
}

/* Every array of the items restored from the local tier matches its
 * checksum (why says which did not). */
static int
rs_local_verified(struct rs_task *rt, char *why)
{
	size_t i;
	ckd_err e;
	int r;

	for (i = 0; i < rt->nitems; i++) {
		if (rt->mine[i] || rt->metadata_only)
			continue;
		r = store_verify_item(rt->be, rt->items[i], rt->fds,
		    rs_local_problem, why, &e);
		if (r != 0 && why[0] == '\0')
			snprintf(why, CKPT_ERRLEN, "%s", e.msg);
		if (r != 0)
			return 0;
	}
	return 1;
}

static void
rs_restore_run(struct task *t)
{
	struct rs_task *rt = (struct rs_task *)t;
	char why[CKPT_ERRLEN] = "";
	size_t i;

	if (rt->tiered && !rt->elsewhere) {
		/* The local copy when it is there and every checksum
		 * matches; else the store's. */
		rs_restore_from(t);
		if (t->err.code == 0 && rs_local_verified(rt, why))
			return;
		log_info("%s step %" PRIu64 ": restoring from the store, the "
		    "local copy will not do: %s", rt->path, rt->step,
		    t->err.code != 0 ? t->err.msg : why);
		rs_items_free(rt);
		for (i = 0; i < rt->nfds; i++)
			rt->be->close(rt->fds[i]);
		rt->nfds = 0;
		free(rt->step_dir);
		free(rt->meta_json);
		rt->step_dir = rt->meta_json = NULL;
		memset(&t->err, 0, sizeof t->err);
		rt->elsewhere = 1;
	}
	rs_restore_from(t);
}

static void
rs_restore_done(struct task *t)
{
	struct rs_task *rt = (struct rs_task *)t;
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__RestoreReply rr = CKPT__RESTORE_REPLY__INIT;
	size_t i;

	if (t->err.code != 0) {
		conn_reply_err(rt->c, rt->id, &t->err);
		rs_task_free(rt);
		return;
	}
	rr.has_step = 1;
	rr.step = rt->step;
	rr.n_items = rt->nitems;
	rr.items = rt->items;
	rr.step_dir = rt->step_dir;
	rr.checkpoint_metadata_json = rt->meta_json;
	resp.has_id = 1;
	resp.id = rt->id;
	resp.body_case = CKPT__RESPONSE__BODY_RESTORE;
	resp.restore = &rr;
	for (i = 0; i < rt->nfds; i++) {
		struct stat st;

		if (rt->be->fstat(rt->fds[i], &st) == 0 && S_ISREG(st.st_mode))
			metrics_count_bytes_read((uint64_t)st.st_size);
	}
	metrics_count_bytes_fetched(rt->fetched);
	if (!rt->metadata_only)         /* structure lookups are not restores */
		metrics_observe_since(METRICS_RESTORE, rt->recv_ns);
	/* The fds now belong to the conn. */
	conn_reply(rt->c, &resp, rt->fds, rt->nfds);
	rt->nfds = 0;
	rs_task_free(rt);
}

/* ---- step / root metadata (worker) ------------------------------------------------- */

static void
rs_metadata_run(struct task *t)
{
	struct rs_task *rt = (struct rs_task *)t;
	char name[256];
	size_t len;
	int rootfd, fd = -1, r;

	if (rs_open_root(rt, &rootfd, &t->err) != 0)
		return;
	if (rt->tiered && !rt->elsewhere && (!rt->has_step ||
	    rs_open_step(rt, rootfd, rt->step, name, sizeof name, &fd,
	    &t->err) != 0)) {
		/* The root's metadata, or a step with no local copy: the
		 * store's. */
		rt->be->close(rootfd);
		memset(&t->err, 0, sizeof t->err);
		rt->elsewhere = 1;
		if (rs_open_root(rt, &rootfd, &t->err) != 0)
			return;
	}
	if (rt->has_step) {
		if (fd < 0 && rs_open_step(rt, rootfd, rt->step, name,
		    sizeof name, &fd, &t->err) != 0)
			goto out;
		r = store_read_file(rt->be, fd, STORE_STEP_METADATA,
		    RESTORE_MAX_DOC, &rt->meta_json, &len, &t->err);
	} else {
		if ((fd = rt->be->open_dir(rootfd, STORE_ROOT_META_DIR)) < 0) {
			if (errno != ENOENT)
				err_errno(&t->err, errno, "opening %s/%s",
				    rt->path, STORE_ROOT_META_DIR);
			goto out;
		}
		r = store_read_file(rt->be, fd, STORE_ROOT_META_FILE,
		    RESTORE_MAX_DOC, &rt->meta_json, &len, &t->err);
	}
	if (r == CKPT_ENOTFOUND)        /* no metadata: reply without json */
		memset(&t->err, 0, sizeof t->err);
out:
	if (fd >= 0)
		rt->be->close(fd);
	rt->be->close(rootfd);
}

static void
rs_metadata_done(struct task *t)
{
	struct rs_task *rt = (struct rs_task *)t;
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__StepMetadataReply mr = CKPT__STEP_METADATA_REPLY__INIT;

	if (t->err.code != 0) {
		conn_reply_err(rt->c, rt->id, &t->err);
	} else {
		mr.json = rt->meta_json;
		resp.has_id = 1;
		resp.id = rt->id;
		resp.body_case = CKPT__RESPONSE__BODY_METADATA;
		resp.metadata = &mr;
		conn_reply(rt->c, &resp, NULL, 0);
	}
	rs_task_free(rt);
}

/* ---- verify (worker) -------------------------------------------------------------- */

struct rs_verify_ctx {
	struct rs_task *rt;
	uint64_t step;
	const char *item;
};

static void
rs_add_problem(struct rs_task *rt, uint64_t step, const char *item,
    const char *leaf, const char *msg)
{
	Ckpt__VerifyProblem *p;

	if (rt->nprobs >= RESTORE_MAX_PROBLEMS)
		return;
	if (rt->nprobs == rt->capprobs) {
		size_t cap = rt->capprobs ? rt->capprobs * 2 : 16;
		Ckpt__VerifyProblem **np = realloc(rt->probs,
		    cap * sizeof *np);

		if (np == NULL)
			return;
		rt->probs = np;
		rt->capprobs = cap;
	}
	if ((p = calloc(1, sizeof *p)) == NULL)
		return;
	ckpt__verify_problem__init(p);
	p->has_step = 1;
	p->step = step;
	p->item = item ? strdup(item) : NULL;
	p->leaf = leaf ? strdup(leaf) : NULL;
	p->message = strdup(msg ? msg : "");
	rt->probs[rt->nprobs++] = p;
}

static void
rs_problem_cb(void *arg, const char *tensor, const char *msg)
{
	struct rs_verify_ctx *vc = arg;

	rs_add_problem(vc->rt, vc->step, vc->item, tensor, msg);
}

static void
rs_verify_item(struct rs_task *rt, uint64_t step, int stepfd,
    const char *item)
{
	struct rs_verify_ctx vc = { rt, step, item };
	const struct store_backend *be = rt->be;
	struct stat st;
	int fds[CKPT_MAX_FDS];
	size_t nfds = 0, i;
	Ckpt__Item *it = NULL;
	ckd_err e;
	int itemfd, r;

	if ((itemfd = be->open_dir(stepfd, item)) < 0) {
		err_errno(&e, errno, "opening item");
		rs_add_problem(rt, step, item, NULL, e.msg);
		return;
	}
	/* JSON / proto items: nothing to hash. A _METADATA that is there but
	 * not a regular file is a problem (store_read_tree_metadata says). */
	if (be->stat(itemfd, STORE_TREE_METADATA, &st) != 0)
		goto out;
	if ((r = store_read_tree_metadata(be, itemfd, &it, &e)) != 0 ||
	    (r = store_open_item_files(be, itemfd, it, fds, &nfds,
	    CKPT_MAX_FDS, &e)) != 0) {
		rs_add_problem(rt, step, item, NULL, e.msg);
		goto out;
	}
	r = store_verify_item(be, it, fds, rs_problem_cb, &vc, &e);
	if (r != 0 && r != CKPT_ECORRUPT)
		rs_add_problem(rt, step, item, NULL, e.msg);
out:
	for (i = 0; i < nfds; i++)
		be->close(fds[i]);
	if (it != NULL)
		store_item_free(it);
	be->close(itemfd);
}

static void
rs_verify_run(struct task *t)
{
	struct rs_task *rt = (struct rs_task *)t;
	char name[256], **items = NULL;
	size_t nitems = 0, i, k;
	int rootfd, stepfd, sfd = -1;
	const struct store_backend *lbe, *sbe = NULL;
	ckd_err e;

	if (rs_open_root(rt, &rootfd, &t->err) != 0)
		return;
	lbe = rt->be;
	if ((rt->checked = calloc(rt->nsteps ? rt->nsteps : 1,
	    sizeof *rt->checked)) == NULL) {
		err_set(&t->err, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < rt->nsteps; i++) {
		uint64_t step = rt->steps[i];
		int r;

		rt->be = lbe;
		r = rs_open_step(rt, rootfd, step, name, sizeof name, &stepfd,
		    &e);
		if (r == CKPT_ENOTFOUND && rt->tiered && !rt->elsewhere) {
			/* No local copy of the step: the store's. */
			if (sfd < 0 && store_open_root(rt->path, 0, 0, &sbe,
			    &sfd, &e) != 0)
				sfd = -1;
			if (sfd >= 0) {
				rt->be = sbe;
				r = rs_open_step(rt, sfd, step, name,
				    sizeof name, &stepfd, &e);
			}
		}
		if (r != 0) {
			rs_add_problem(rt, step, NULL, NULL, e.msg);
			continue;
		}
		if (rs_list_items(rt->be, stepfd, &items, &nitems, &e) != 0) {
			rs_add_problem(rt, step, NULL, NULL, e.msg);
		} else {
			for (k = 0; k < nitems; k++)
				rs_verify_item(rt, step, stepfd, items[k]);
			rs_free_names(items, nitems);
		}
		rt->be->close(stepfd);
		rt->checked[rt->nchecked++] = step;
	}
out:
	rt->be = lbe;
	if (sfd >= 0)
		sbe->close(sfd);
	rt->be->close(rootfd);
}

static void
rs_verify_done(struct task *t)
{
	struct rs_task *rt = (struct rs_task *)t;
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__VerifyReply vr = CKPT__VERIFY_REPLY__INIT;

	if (t->err.code != 0) {
		conn_reply_err(rt->c, rt->id, &t->err);
	} else {
		vr.n_checked = rt->nchecked;
		vr.checked = rt->checked;
		vr.n_problems = rt->nprobs;
		vr.problems = rt->probs;
		resp.has_id = 1;
		resp.id = rt->id;
		resp.body_case = CKPT__RESPONSE__BODY_VERIFY;
		resp.verify = &vr;
		conn_reply(rt->c, &resp, NULL, 0);
	}
	rs_task_free(rt);
}

/* ---- loop side ------------------------------------------------------------------- */

static struct rs_task *
rs_new(struct conn *c, struct manager *m, Ckpt__Request *req, int kind,
    void (*run)(struct task *), void (*done)(struct task *))
{
	struct rs_task *rt;

	rt = task_new(sizeof *rt, run, done, conn_peer(c), conn_id(c));
	if (rt == NULL)
		return NULL;
	rt->kind = kind;
	rt->recv_ns = now_mono_ns();
	rt->c = c;
	conn_ref(c);
	rt->id = req->id;
	rt->r = m->r;
	root_ref(m->r);
	rt->be = m->r->be;
	rt->tiered = m->r->tiered;
	rt->nm = m->r->nm;
	rt->req = req;
	return rt;
}

static void
rs_fail(struct conn *c, Ckpt__Request *req, struct rs_task *rt, int code,
    const char *msg)
{
	conn_reply_error(c, req->id, code, "%s", msg);
	if (rt != NULL)
		rs_task_free(rt);       /* frees req */
	else
		ckpt__request__free_unpacked(req, NULL);
}

void
restore_handle(struct conn *c, struct manager *m, Ckpt__Request *req)
{
	Ckpt__Restore *rq = req->restore;
	struct rs_task *rt;
	char msg[PATH_MAX + 64];
	ckd_err e = { 0 };
	size_t i;

	if (rq->n_items > CKPT_MAX_ITEMS) {
		rs_fail(c, req, NULL, CKPT_ETOOBIG, "too many items requested");
		return;
	}
	for (i = 0; i < rq->n_items; i++) {
		size_t k;

		if (savecheck_item_name(rq->items[i], &e) != 0) {
			rs_fail(c, req, NULL, e.code, e.msg);
			return;
		}
		/* At most CKPT_MAX_ITEMS: the quadratic scan is bounded. */
		for (k = 0; k < i; k++)
			if (strcmp(rq->items[k], rq->items[i]) == 0) {
				rs_fail(c, req, NULL, CKPT_EINVAL, "item "
				    "requested twice");
				return;
			}
	}
	if (rq->directory != NULL && (store_backend_for(rq->directory,
	    &e) == NULL || s3acl_check(rq->directory, conn_peer(c)->uid,
	    &e) != 0)) {
		rs_fail(c, req, NULL, e.code, e.msg);
		return;
	}
	if (rq->directory != NULL && strlen(rq->directory) >= PATH_MAX) {
		rs_fail(c, req, NULL, CKPT_EINVAL, "directory path too long");
		return;
	}
	rt = rs_new(c, m, req, RS_RESTORE, rs_restore_run, rs_restore_done);
	if (rt == NULL || (rt->path = strdup(rq->directory ? rq->directory :
	    m->r->path)) == NULL) {
		rs_fail(c, req, rt, CKPT_ENOMEM, "out of memory");
		return;
	}
	rt->elsewhere = rq->directory != NULL;
	rt->metadata_only = rq->metadata_only;
	if (rq->has_step && rq->step >= 0) {
		rt->has_step = 1;
		rt->step = (uint64_t)rq->step;
	} else if (rq->directory != NULL) {
		rt->find_latest = 1;
	} else {
		int64_t latest = root_latest(m->r);

		if (latest < 0) {
			snprintf(msg, sizeof msg, "No steps found in %s.",
			    m->r->path);
			rs_fail(c, req, rt, CKPT_ENOSTEPS, msg);
			return;
		}
		rt->has_step = 1;
		rt->step = (uint64_t)latest;
	}
	worker_submit(&rt->t);
}

void
restore_metadata_handle(struct conn *c, struct manager *m,
    Ckpt__Request *req)
{
	Ckpt__StepMetadata *sm = req->metadata;
	struct rs_task *rt;

	rt = rs_new(c, m, req, RS_METADATA, rs_metadata_run, rs_metadata_done);
	if (rt == NULL || (rt->path = strdup(m->r->path)) == NULL) {
		rs_fail(c, req, rt, CKPT_ENOMEM, "out of memory");
		return;
	}
	if (sm->has_step && sm->step >= 0) {
		rt->has_step = 1;
		rt->step = (uint64_t)sm->step;
	}
	worker_submit(&rt->t);
}

void
restore_verify_handle(struct conn *c, struct manager *m, Ckpt__Request *req)
{
	Ckpt__Verify *v = req->verify;
	struct root *r = m->r;
	struct rs_task *rt;
	char msg[PATH_MAX + 300], name[256];
	size_t i;

	rt = rs_new(c, m, req, RS_VERIFY, rs_verify_run, rs_verify_done);
	if (rt == NULL || (rt->path = strdup(r->path)) == NULL ||
	    (rt->steps = calloc(r->nsteps ? r->nsteps : 1,
	    sizeof *rt->steps)) == NULL) {
		rs_fail(c, req, rt, CKPT_ENOMEM, "out of memory");
		return;
	}
	if (v->has_step && v->step >= 0) {
		long i2 = root_find_step(r, (uint64_t)v->step);

		if (i2 < 0 || r->steps[i2].state != INDEX_COMMITTED) {
			if (store_step_name(&r->nm, (uint64_t)v->step, name,
			    sizeof name) != 0)
				snprintf(name, sizeof name, "%" PRId64, v->step);
			snprintf(msg, sizeof msg, "Checkpoint at %s/%s not found.",
			    r->path, name);
			rs_fail(c, req, rt, CKPT_ENOTFOUND, msg);
			return;
		}
		rt->steps[rt->nsteps++] = (uint64_t)v->step;
	} else {
		for (i = 0; i < r->nsteps; i++)
			if (r->steps[i].state == INDEX_COMMITTED)
				rt->steps[rt->nsteps++] = r->steps[i].step;
	}
	worker_submit(&rt->t);
}
