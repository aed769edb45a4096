/*
 * root.c - checkpoint roots in memory: the sorted step list, the steps
 * being deleted, reconciling with a scan of the directory, and background
 * deletes. See root.h for ownership rules.
 *
 * A root's path, key, naming and identity (dirfd, dev, ino, uid) never
 * change after root_new(), so worker tasks holding a reference may read
 * them; everything else is touched on the loop thread only.
 */
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coord.h"
#include "root.h"
#include "stepmetrics.h"
#include "tier.h"

/* This file's own state (loop thread): the roots loaded or loading, the
 * index their steps are recorded in, the interrupted saves found, and
 * the coordinator told of deletes (set once at start-up, before any task
 * runs, and read by delete tasks). */
static struct root *roots;
static struct index *root_ix;
static uint64_t root_ninterrupted;
static const struct coord_ops *root_coord;

void
root_set_coord(const struct coord_ops *ops)
{
	root_coord = ops;
}

void
root_init(struct index *ix)
{
	roots = NULL;
	root_ix = ix;
	root_ninterrupted = 0;
}

unsigned
root_count(void)
{
	const struct root *r;
	unsigned n = 0;

	for (r = roots; r != NULL; r = r->next)
		n++;
	return n;
}

void
root_add_interrupted(uint64_t n)
{
	root_ninterrupted += n;
}

uint64_t
root_interrupted(void)
{
	return root_ninterrupted;
}

int
root_open_dir(const struct root *r, int *fd, ckd_err *e)
{
	/* "." through the pinned fd: the kernel checks the peer's search and
	 * read permission on the directory itself. */
	if ((*fd = r->be->open_dir(r->dirfd, ".")) < 0)
		return err_errno(e, errno, "opening %s", r->path);
	return 0;
}

/* ---- roots --------------------------------------------------------------- */

/* The index key names the directory, not only its path: a directory
 * re-created at the same path (by anyone) never meets the records of the
 * old one. */
static char *
root_make_key(const struct root *r)
{
	size_t len;
	char *k;

	/* A canonical path never contains "//", so this cannot collide. */
	len = strlen(r->path) + strlen(r->nm.prefix) + 120;
	if ((k = malloc(len)) == NULL)
		return NULL;
	snprintf(k, len, "%s//dev=%ju,ino=%ju,uid=%ju", r->path,
	    (uintmax_t)r->dev, (uintmax_t)r->ino, (uintmax_t)r->uid);
	if (r->nm.prefix[0] != '\0' || r->nm.fixed_len != 0)
		snprintf(k + strlen(k), len - strlen(k), ",prefix=%s,len=%u",
		    r->nm.prefix, r->nm.fixed_len);
	return k;
}

/* Parse a key made by root_make_key. 0, or -1 for anything else (keys of
 * older versions carry no identity). */
static int
root_parse_key(const char *key, char *path, size_t pathlen, dev_t *dev,
    ino_t *ino, uid_t *uid, struct store_naming *nm)
{
	uintmax_t d, i, u, len;
	const char *sep, *rest, *lp;
	char *end;
	int used = -1;

	memset(nm, 0, sizeof *nm);
	if ((sep = strstr(key, "//")) == NULL || key[0] != '/' ||
	    (size_t)(sep - key) >= pathlen)
		return -1;
	memcpy(path, key, (size_t)(sep - key));
	path[sep - key] = '\0';
	if (sscanf(sep, "//dev=%ju,ino=%ju,uid=%ju%n", &d, &i, &u,
	    &used) != 3 || used < 0)
		return -1;
	*dev = (dev_t)d;
	*ino = (ino_t)i;
	*uid = (uid_t)u;
	rest = sep + used;
	if (*rest == '\0')
		return 0;
	/* ",prefix=<P>,len=<L>": P may hold anything but '/'. */
	if (strncmp(rest, ",prefix=", 8) != 0 ||
	    (lp = strrchr(rest, ',')) == NULL || lp < rest + 8 ||
	    strncmp(lp, ",len=", 5) != 0 ||
	    (size_t)(lp - rest - 8) >= sizeof nm->prefix)
		return -1;
	memcpy(nm->prefix, rest + 8, (size_t)(lp - rest - 8));
	nm->prefix[lp - rest - 8] = '\0';
	errno = 0;
	len = strtoumax(lp + 5, &end, 10);
	if (errno != 0 || *end != '\0' || end == lp + 5 || len > 20)
		return -1;
	nm->fixed_len = (unsigned)len;
	return 0;
}

struct root *
root_new(const char *path, const struct store_naming *nm,
    const struct store_backend *be, int dirfd, const struct stat *st)
{
	struct root *r;

	if ((r = calloc(1, sizeof *r)) == NULL) {
		be->close(dirfd);
		return NULL;
	}
	r->refs = 1;
	r->state = ROOT_LOADING;
	r->nm = *nm;
	r->last_save_ns = -1;
	r->be = be;
	r->dirfd = dirfd;
	r->dev = st->st_dev;
	r->ino = st->st_ino;
	r->uid = st->st_uid;
	if ((r->path = strdup(path)) == NULL ||
	    (r->key = root_make_key(r)) == NULL) {
		free(r->path);
		be->close(dirfd);
		free(r);
		return NULL;
	}
	r->next = roots;
	roots = r;
	return r;
}

struct root *
root_find(dev_t dev, ino_t ino, const struct store_naming *nm)
{
	struct root *r;

	for (r = roots; r != NULL; r = r->next) {
		if (r->dev == dev && r->ino == ino &&
		    strcmp(r->nm.prefix, nm->prefix) == 0 &&
		    r->nm.fixed_len == nm->fixed_len)
			return r;
	}
	return NULL;
}

void
root_ref(struct root *r)
{
	r->refs++;
}

void
root_forget(struct root *r)
{
	struct root **pp;

	for (pp = &roots; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			r->next = NULL;
			break;
		}
	}
}

static void
root_free(struct root *r)
{
	size_t i;

	root_forget(r);
	for (i = 0; i < r->nsteps; i++) {
		free(r->steps[i].metrics_json);
		free(r->steps[i].error);
	}
	free(r->steps);
	free(r->seq);
	free(r->deleting);
	free(r->path);
	free(r->key);
	r->be->close(r->dirfd);
	free(r);
}

void
root_unref(struct root *r)
{
	if (r == NULL)
		return;
	if (--r->refs == 0)
		root_free(r);
}

/* ---- the step list ----------------------------------------------------- */

/* First index whose step is >= step. */
static size_t
root_lower_bound(const struct root *r, uint64_t step)
{
	size_t lo = 0, hi = r->nsteps, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (r->steps[mid].step < step)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

long
root_find_step(const struct root *r, uint64_t step)
{
	size_t i = root_lower_bound(r, step);

	if (i < r->nsteps && r->steps[i].step == step)
		return (long)i;
	return -1;
}

int
root_insert_step(struct root *r, struct index_step *s)
{
	size_t i = root_lower_bound(r, s->step);

	if (i < r->nsteps && r->steps[i].step == s->step) {
		free(r->steps[i].metrics_json);
		free(r->steps[i].error);
		r->steps[i] = *s;
		r->seq[i] = ++r->mutations;
		return 0;
	}
	if (r->nsteps == r->capsteps) {
		size_t cap = r->capsteps ? r->capsteps * 2 : 16;
		struct index_step *ns;
		uint64_t *nq;

		if ((ns = realloc(r->steps, cap * sizeof *ns)) == NULL)
			goto nomem;
		r->steps = ns;
		if ((nq = realloc(r->seq, cap * sizeof *nq)) == NULL)
			goto nomem;
		r->seq = nq;
		r->capsteps = cap;
	}
	memmove(&r->steps[i + 1], &r->steps[i],
	    (r->nsteps - i) * sizeof *r->steps);
	memmove(&r->seq[i + 1], &r->seq[i], (r->nsteps - i) * sizeof *r->seq);
	r->steps[i] = *s;
	r->seq[i] = ++r->mutations;
	r->nsteps++;
	return 0;
nomem:
	free(s->metrics_json);
	free(s->error);
	s->metrics_json = s->error = NULL;
	return CKPT_ENOMEM;
}

void
root_remove_step(struct root *r, size_t i)
{
	if (i >= r->nsteps)
		return;
	free(r->steps[i].metrics_json);
	free(r->steps[i].error);
	memmove(&r->steps[i], &r->steps[i + 1],
	    (r->nsteps - i - 1) * sizeof *r->steps);
	memmove(&r->seq[i], &r->seq[i + 1],
	    (r->nsteps - i - 1) * sizeof *r->seq);
	r->nsteps--;
	r->mutations++;
}

int64_t
root_latest(const struct root *r)
{
	size_t i;

	for (i = r->nsteps; i > 0; i--) {
		if (r->steps[i - 1].state == INDEX_COMMITTED)
			return (int64_t)r->steps[i - 1].step;
	}
	return -1;
}

size_t
root_ncommitted(const struct root *r)
{
	size_t i, n = 0;

	for (i = 0; i < r->nsteps; i++)
		n += r->steps[i].state == INDEX_COMMITTED;
	return n;
}

int
root_policy_steps(const struct root *r, const struct policy_set *pol,
    struct policy_step **out, size_t **idx, size_t *n)
{
	struct policy_step *ps;
	size_t i, k = 0, cnt = root_ncommitted(r);
	size_t *ix = NULL;

	*out = NULL;
	*n = 0;
	if (idx != NULL)
		*idx = NULL;
	if (cnt == 0)
		return 0;
	if ((ps = calloc(cnt, sizeof *ps)) == NULL)
		return CKPT_ENOMEM;
	if (idx != NULL && (ix = calloc(cnt, sizeof *ix)) == NULL) {
		free(ps);
		return CKPT_ENOMEM;
	}
	for (i = 0; i < r->nsteps; i++) {
		const struct index_step *s = &r->steps[i];

		if (s->state != INDEX_COMMITTED)
			continue;
		ps[k].step = s->step;
		ps[k].time_ns = s->init_ns;
		ps[k].has_metric = s->metrics_json != NULL &&
		    policy_metric(pol, s->metrics_json, &ps[k].metric);
		if (ix != NULL)
			ix[k] = i;
		k++;
	}
	*out = ps;
	if (idx != NULL)
		*idx = ix;
	*n = k;
	return 0;
}

/* ---- steps being deleted ------------------------------------------------- */

int
root_is_deleting(const struct root *r, uint64_t step)
{
	size_t i;

	for (i = 0; i < r->ndeleting; i++)
		if (r->deleting[i] == step)
			return 1;
	return 0;
}

int
root_add_deleting(struct root *r, uint64_t step)
{
	if (r->ndeleting == r->capdeleting) {
		size_t cap = r->capdeleting ? r->capdeleting * 2 : 8;
		uint64_t *nd = realloc(r->deleting, cap * sizeof *nd);

		if (nd == NULL)
			return CKPT_ENOMEM;
		r->deleting = nd;
		r->capdeleting = cap;
	}
	r->deleting[r->ndeleting++] = step;
	return 0;
}

void
root_del_deleting(struct root *r, uint64_t step)
{
	size_t i;

	for (i = 0; i < r->ndeleting; i++) {
		if (r->deleting[i] == step) {
			r->deleting[i] = r->deleting[--r->ndeleting];
			return;
		}
	}
}

/* ---- reconciling with the disk (worker thread) ------------------------------ */

static const struct index_step *
root_known_find(const struct index_step *known, size_t n, uint64_t step)
{
	size_t lo = 0, hi = n, mid;

	/* known[] is in step order (index order or the in-memory list). */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (known[mid].step < step)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < n && known[lo].step == step; lo++)
		if (known[lo].state == INDEX_COMMITTED)
			return &known[lo];
	return NULL;
}

/* Fill s from <rootfd>/<name>/_CHECKPOINT_METADATA, or from the directory's
 * mtime when the metadata is missing or unreadable (a step directory
 * without the tmp suffix is complete whatever its metadata says). */
static void
root_read_step_record(const struct store_backend *be, int rootfd,
    const char *name, struct index_step *s)
{
	struct store_step_meta meta;
	struct stat st;
	ckd_err e;
	int fd;

	if ((fd = be->open_dir(rootfd, name)) < 0)
		return;
	memset(&meta, 0, sizeof meta);
	if (store_read_step_meta(be, fd, &meta, &e) == 0) {
		s->init_ns = meta.init_ns;
		s->commit_ns = meta.commit_ns;
		s->bytes = meta.bytes;
		s->metrics_json = meta.metrics_json;
		meta.metrics_json = NULL;
		store_step_meta_free(&meta);
		stepmetrics_fill(be, fd, &s->metrics_json);  /* Orbax's */
	} else if (be->fstat(fd, &st) == 0) {
		s->init_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 +
		    st.st_mtim.tv_nsec;
		s->commit_ns = s->init_ns;
	}
	be->close(fd);
}

int
root_scan_disk(const struct store_backend *be, int rootfd,
    const struct store_naming *nm,
    const struct index_step *known, size_t nknown,
    struct index_step **out, size_t *nout, int *tmp_left, ckd_err *e)
{
	struct store_entry *ents = NULL;
	struct index_step *res = NULL;
	size_t ne = 0, i, k = 0;
	int r;

	*out = NULL;
	*nout = 0;
	if (tmp_left != NULL)
		*tmp_left = 0;
	if ((r = store_scan(be, rootfd, nm, &ents, &ne, e)) != 0)
		return r;
	if (ne > 0 && (res = calloc(ne, sizeof *res)) == NULL) {
		free(ents);
		return err_set(e, CKPT_ENOMEM, "out of memory scanning root");
	}
	for (i = 0; i < ne; i++) {
		const struct index_step *kn;
		struct index_step *s;

		if (ents[i].tmp) {
			if (tmp_left != NULL)
				(*tmp_left)++;
			continue;
		}
		if (k > 0 && res[k - 1].step == ents[i].step)
			continue;       /* same step under two spellings */
		s = &res[k++];
		s->step = ents[i].step;
		s->state = INDEX_COMMITTED;
		snprintf(s->name, sizeof s->name, "%s", ents[i].name);
		kn = root_known_find(known, nknown, s->step);
		if (kn != NULL) {
			s->init_ns = kn->init_ns;
			s->commit_ns = kn->commit_ns;
			s->bytes = kn->bytes;
			s->metrics_json = kn->metrics_json == NULL ? NULL :
			    strdup(kn->metrics_json);
		} else {
			root_read_step_record(be, rootfd, s->name, s);
		}
	}
	free(ents);
	*out = res;
	*nout = k;
	return 0;
}

/* ---- deleting steps ----------------------------------------------------------- */

struct del_task {
	struct task t;
	struct root *r;
	struct index_step rec;          /* the record removed from the list */
	char *subdir;
	int reported;                   /* done() reports a failure */
	void (*done)(void *arg, const ckd_err *err);
	void *arg;
};

static void
root_delete_run(struct task *t)
{
	struct del_task *d = (struct del_task *)t;
	ckd_err ie;
	int fd, r;

	if ((r = root_open_dir(d->r, &fd, &t->err)) != 0)
		return;
	r = store_delete_step(d->r->be, fd, d->rec.name, d->subdir, &t->err);
	d->r->be->close(fd);
	if (d->r->tiered && (r == 0 || r == CKPT_ENOTFOUND)) {
		/* The local copy first (a restart uploads what is local and
		 * not in the store), then the store's; either may be gone. */
		ckd_err se;
		int rr = tier_delete_store(d->r->path, d->rec.name, &se);

		if (rr == 0) {
			memset(&t->err, 0, sizeof t->err);
			r = 0;
		} else if (rr != CKPT_ENOTFOUND) {
			t->err = se;
			r = rr;
		}
	}
	if (r == 0 || r == CKPT_ENOTFOUND) {
		log_info("step %s/%s deleted%s", d->r->path, d->rec.name,
		    r == CKPT_ENOTFOUND ? " (it was gone already)" : "");
		if (index_del_step(root_ix, d->r->key, d->rec.step, &ie) != 0)
			log_warn("index: %s", ie.msg);
		/* Gone from the shared root: the other nodes drop it. */
		if (root_coord != NULL && !d->r->tiered &&
		    root_coord->step_deleted(d->r->path, d->rec.step,
		    &ie) != 0)
			log_warn("%s/%s deleted, but the other nodes may list "
			    "it until they load the root again: %s",
			    d->r->path, d->rec.name, ie.msg);
	}
}

static void
root_delete_done(struct task *t)
{
	struct del_task *d = (struct del_task *)t;
	struct root *r = d->r;
	int code = t->err.code;

	root_del_deleting(r, d->rec.step);
	r->busy--;
	if (code != 0 && code != CKPT_ENOTFOUND) {
		/* Still on disk: list it again (disk is the truth). */
		if (root_find_step(r, d->rec.step) < 0) {
			root_insert_step(r, &d->rec);
			d->rec.metrics_json = d->rec.error = NULL;
		}
		if (!d->reported)
			log_warn("deleting %s/%s: %s", r->path, d->rec.name,
			    t->err.msg);
	}
	if (d->done != NULL)
		d->done(d->arg, code != 0 && code != CKPT_ENOTFOUND ? &t->err :
		    NULL);
	free(d->rec.metrics_json);
	free(d->rec.error);
	free(d->subdir);
	root_unref(r);
	free(d);
}

void
root_delete_step(struct root *r, size_t i, const struct root_delete *how)
{
	struct del_task *d;

	d = task_new(sizeof *d, root_delete_run, root_delete_done,
	    how->cred, how->lane);
	if (d == NULL || (how->subdir != NULL && (d->subdir =
	    strdup(how->subdir)) == NULL) ||
	    root_add_deleting(r, r->steps[i].step) != 0) {
		ckd_err e;

		if (d != NULL)
			free(d->subdir);
		free(d);
		err_set(&e, CKPT_ENOMEM, "out of memory");
		if (!how->reported)
			log_warn("out of memory deleting step %llu",
			    (unsigned long long)r->steps[i].step);
		if (how->done != NULL)
			how->done(how->arg, &e);
		return;
	}
	d->rec = r->steps[i];
	if (r->tiered)
		tier_deleting(r->path, d->rec.name);
	/* Move the strings out of the list before removing the record. */
	r->steps[i].metrics_json = r->steps[i].error = NULL;
	root_remove_step(r, i);
	d->r = r;
	root_ref(r);
	r->busy++;
	d->reported = how->reported;
	d->done = how->done;
	d->arg = how->arg;
	worker_submit(&d->t);
}

/* A step another node deleted: its record goes from this daemon's list
 * and index; the files were the other node's to remove. */
struct drop_task {
	struct task t;
	struct root *r;
	uint64_t step;
};

static void
root_drop_run(struct task *t)
{
	struct drop_task *d = (struct drop_task *)t;

	if (index_del_step(root_ix, d->r->key, d->step, &t->err) != 0)
		log_warn("index: %s", t->err.msg);
}

static void
root_drop_done(struct task *t)
{
	struct drop_task *d = (struct drop_task *)t;

	root_unref(d->r);
	free(d);
}

unsigned
root_drop_step(const char *path, uint64_t step)
{
	struct root *r;
	struct drop_task *d;
	unsigned n = 0;
	long i;

	for (r = roots; r != NULL; r = r->next) {
		if (r->state != ROOT_READY || r->tiered ||
		    strcmp(r->path, path) != 0 ||
		    (i = root_find_step(r, step)) < 0 ||
		    r->steps[i].state != INDEX_COMMITTED ||
		    root_is_deleting(r, step))
			continue;
		log_info("step %s/%s was deleted by another node: no longer "
		    "listed", r->path, r->steps[i].name);
		root_remove_step(r, (size_t)i);
		n++;
		if ((d = task_new(sizeof *d, root_drop_run, root_drop_done,
		    NULL, 0)) == NULL) {
			log_warn("index: out of memory dropping step %" PRIu64,
			    step);
			continue;
		}
		d->r = r;
		d->step = step;
		root_ref(r);
		worker_submit(&d->t);
	}
	return n;
}

/* The steps of one root to look for on disk (root_recheck_steps). */
struct recheck_task {
	struct task t;
	struct root *r;
	size_t n;
	uint64_t *steps;
	char (*names)[256];
	unsigned char *gone;
};

static void
root_recheck_run(struct task *t)
{
	struct recheck_task *k = (struct recheck_task *)t;
	struct stat st;
	size_t i;

	for (i = 0; i < k->n; i++)
		k->gone[i] = k->r->be->stat(k->r->dirfd, k->names[i], &st) != 0 &&
		    errno == ENOENT;
}

static void
root_recheck_done(struct task *t)
{
	struct recheck_task *k = (struct recheck_task *)t;
	size_t i;

	for (i = 0; i < k->n; i++)
		if (k->gone[i])
			(void)root_drop_step(k->r->path, k->steps[i]);
	root_unref(k->r);
	free(k->steps);
	free(k->names);
	free(k->gone);
	free(k);
}

unsigned
root_recheck_steps(int (*known)(void *arg, const char *path, uint64_t step),
    void *arg)
{
	struct root *r;
	struct recheck_task *k;
	unsigned total = 0;
	size_t i, n;

	for (r = roots; r != NULL; r = r->next) {
		if (r->state != ROOT_READY || r->tiered || r->path[0] != '/')
			continue;
		for (i = n = 0; i < r->nsteps; i++)
			n += r->steps[i].state == INDEX_COMMITTED &&
			    !root_is_deleting(r, r->steps[i].step) &&
			    !known(arg, r->path, r->steps[i].step);
		if (n == 0)
			continue;
		if ((k = task_new(sizeof *k, root_recheck_run,
		    root_recheck_done, NULL, 0)) == NULL ||
		    (k->steps = calloc(n, sizeof *k->steps)) == NULL ||
		    (k->names = calloc(n, sizeof *k->names)) == NULL ||
		    (k->gone = calloc(n, 1)) == NULL) {
			if (k != NULL) {
				free(k->steps);
				free(k->names);
				free(k);
			}
			log_warn("%s: out of memory looking for deleted steps",
			    r->path);
			continue;
		}
		for (i = 0; i < r->nsteps && k->n < n; i++) {
			if (r->steps[i].state != INDEX_COMMITTED ||
			    root_is_deleting(r, r->steps[i].step) ||
			    known(arg, r->path, r->steps[i].step))
				continue;
			k->steps[k->n] = r->steps[i].step;
			snprintf(k->names[k->n], sizeof k->names[k->n], "%s",
			    r->steps[i].name);
			k->n++;
		}
		k->r = r;
		root_ref(r);
		total += (unsigned)k->n;
		worker_submit(&k->t);
	}
	return total;
}

/* ---- leftovers at start-up ---------------------------------------------------------
 *
 * Every root the index knows is swept once at start: the leftovers of the
 * crash (tmp dirs no live save owns, hidden deletes) are removed, and each
 * interrupted save is logged and recorded in the index, so that it is
 * listed as interrupted when the root is opened. The sweep runs as the
 * owner recorded in the key (with the owner's primary group only), opens
 * the path and goes on only when it is still the same directory (device,
 * inode, owner); anything else waits until the root is opened. */

struct sweep_task {
	struct task t;
	char *key;
	size_t found;                   /* interrupted saves recorded */
};

static void
root_sweep_run(struct task *t)
{
	struct sweep_task *sw = (struct sweep_task *)t;
	const struct store_backend *be;
	struct store_leftover *lo = NULL;
	struct store_naming nm;
	struct index_step rec;
	char path[PATH_MAX];
	struct stat st, cst;
	size_t nlo = 0, i;
	dev_t dev;
	ino_t ino;
	uid_t uid;
	ckd_err e;
	int fd;

	if (root_parse_key(sw->key, path, sizeof path, &dev, &ino, &uid,
	    &nm) != 0)
		return;
	if (store_open_root(path, 0, 0, &be, &fd, &e) != 0)
		return;         /* gone, or not ours to reach any more */
	if (be->fstat(fd, &st) != 0 || st.st_dev != dev || st.st_ino != ino ||
	    st.st_uid != uid)
		goto out;
	if (store_collect_leftovers(be, fd, &nm, 0, &lo, &nlo, &e) != 0)
		log_warn("collecting leftovers in %s: %s", path, e.msg);
	for (i = 0; i < nlo; i++) {
		if (be->stat(fd, lo[i].name, &cst) == 0)
			continue;       /* the step committed after all */
		memset(&rec, 0, sizeof rec);
		rec.step = lo[i].step;
		rec.state = INDEX_INTERRUPTED;
		rec.init_ns = rec.commit_ns = lo[i].mtime_ns;
		snprintf(rec.name, sizeof rec.name, "%s", lo[i].name);
		rec.error = (char *)"interrupted: ckptd stopped before the "
		    "save committed; its partial files were removed";
		log_warn("%s: the save of step %" PRIu64 " was interrupted "
		    "(its files were last written %" PRId64 " s after the "
		    "epoch); removed %s" CKPT_TMP_SUFFIX, path, lo[i].step,
		    lo[i].mtime_ns / 1000000000, lo[i].name);
		if (index_put_step(root_ix, sw->key, &rec, &e) != 0)
			log_warn("index: %s", e.msg);
		sw->found++;
	}
	free(lo);
out:
	be->close(fd);
}

static void
root_sweep_done(struct task *t)
{
	struct sweep_task *sw = (struct sweep_task *)t;

	root_ninterrupted += sw->found;
	free(sw->key);
	free(sw);
}

void
root_sweep_leftovers(void)
{
	struct store_naming nm;
	struct peer_cred pc;
	struct sweep_task *sw;
	struct passwd pw, *pwp;
	char path[PATH_MAX], pwbuf[4096];
	char **keys = NULL;
	size_t n = 0, i;
	dev_t dev;
	ino_t ino;
	uid_t uid;
	ckd_err e;

	if (index_roots(root_ix, &keys, &n, &e) != 0) {
		log_warn("index: %s", e.msg);
		return;
	}
	for (i = 0; i < n; i++) {
		if (root_parse_key(keys[i], path, sizeof path, &dev, &ino,
		    &uid, &nm) != 0)
			continue;
		/* Start-up: the owner's primary group (a look-up that may
		 * block, before the loop serves anyone). */
		memset(&pc, 0, sizeof pc);
		pc.uid = uid;
		if (getpwuid_r(uid, &pw, pwbuf, sizeof pwbuf, &pwp) != 0 ||
		    pwp == NULL)
			continue;
		pc.gid = pw.pw_gid;
		sw = task_new(sizeof *sw, root_sweep_run, root_sweep_done,
		    &pc, 0);
		if (sw == NULL)
			break;
		sw->key = keys[i];
		keys[i] = NULL;
		worker_submit(&sw->t);
	}
	for (i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}
