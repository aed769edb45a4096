/*
 * tier.c - the local tier: steps committed on the local disk, uploaded to
 * their store in the background (tier.h).
 *
 * Uploads: one at a time per root (older steps first), at most
 * TIER_MAX_INFLIGHT in all. An upload copies the local step directory
 * into the store through the store's backend with the commit protocol of
 * every save (store_begin, the files, store_commit_synced): the store
 * sees the step only when its _CHECKPOINT_METADATA, copied last, is
 * committed. A failed upload is retried with a growing delay (5 s,
 * doubling, at most 300 s) until its bounds (tier_set_limits): then it is
 * given up and stays so until tier_retry_failed. A refusal waiting does
 * not heal (CKPT_EACCES: credentials or grants; CKPT_ENOTFOUND: no
 * bucket; a name the store refuses) ends after TIER_HOPELESS_TRIES. A
 * daemon restarted with uploads pending (given up ones included) finds
 * them when the root is loaded (tier_merge: committed locally, absent
 * from the store).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "tier.h"
#include "backend.h"
#include "log.h"
#include "s3acl.h"
#include "store.h"
#include "worker.h"

#define TIER_MAX_INFLIGHT 2
#define TIER_RETRY_MIN_NS (5 * 1000000000LL)
#define TIER_RETRY_MAX_NS (300 * 1000000000LL)
#define TIER_DEFAULT_TRIES 10
#define TIER_DEFAULT_SECS 3600
#define TIER_HOPELESS_TRIES 2
#define TIER_COPY_CHUNK (4u << 20)
#define TIER_MAX_DEPTH 8

struct tier_step {
	struct tier_step *next;
	char *root;                     /* the store's name of the root */
	char name[256];                 /* step directory */
	uint64_t step, bytes;
	enum tier_state state;
	int deleted;                    /* deleted while uploading */
	unsigned tries;                 /* since queued (again) */
	int64_t first_ns;               /* the first of them began */
	int64_t retry_ns;               /* RETRY: not before (monotonic) */
	char err[CKPT_ERRLEN];
	struct peer_cred cred;
	uint64_t lane;
};

static struct {
	int on;
	char dir[PATH_MAX];
	struct event *timer;
	struct tier_step *steps;        /* in the order committed */
	unsigned inflight;
	uint64_t done, failures;
	unsigned max_tries;             /* tries of one upload */
	int64_t max_ns;                 /* since its first try */
} T = { .max_tries = TIER_DEFAULT_TRIES,
	.max_ns = TIER_DEFAULT_SECS * 1000000000LL };

/* ---- names ------------------------------------------------------------------ */

/* DIR/<root escaped>: bytes outside [A-Za-z0-9_-] (and a '.') as %XX, so
 * any name is one component, and two names never meet. */
static int
tier_local_path(const char *root, char *buf, size_t len, ckd_err *e)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t off, i, start;

	off = (size_t)snprintf(buf, len, "%s/", T.dir);
	start = off;
	for (i = 0; root[i] != '\0'; i++) {
		unsigned char c = (unsigned char)root[i];

		if (off + 4 >= len || off - start + 3 > 240)
			return err_set(e, CKPT_EINVAL, "checkpoint root name too "
			    "long for the local tier: %s", root);
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-') {
			buf[off++] = (char)c;
		} else {
			buf[off++] = '%';
			buf[off++] = hex[c >> 4];
			buf[off++] = hex[c & 15];
		}
	}
	buf[off] = '\0';
	return 0;
}

int
tier_wants(const char *root)
{
	return T.on && root != NULL && root[0] != '/' &&
	    strstr(root, "://") != NULL;
}

int
tier_open_local(const char *root, mode_t mode, uid_t uid, int *fd,
    ckd_err *e)
{
	char path[PATH_MAX];
	struct stat st;
	int r;

	if ((r = tier_local_path(root, path, sizeof path, e)) != 0)
		return r;
	if ((r = backend_posix.open_root(path, 1, mode, fd, e)) != 0)
		return r;
	if (backend_posix.fstat(*fd, &st) != 0) {
		r = err_errno(e, errno, "stat %s", path);
	} else if (st.st_uid != uid && st.st_uid != geteuid()) {
		r = err_set(e, CKPT_EACCES, "the local tier's directory of %s "
		    "belongs to uid %u", root, (unsigned)st.st_uid);
	}
	if (r != 0)
		backend_posix.close(*fd);
	return r;
}

/* The root a directory of the tier stands for: the inverse of
 * tier_local_path, and only a name it would give (else -1). */
static int
tier_root_of(const char *dname, char *root, size_t len)
{
	char again[PATH_MAX], *want;
	size_t i, o = 0;
	ckd_err e;

	for (i = 0; dname[i] != '\0'; i++) {
		unsigned v;

		if (o + 1 >= len)
			return -1;
		if (dname[i] != '%') {
			root[o++] = dname[i];
			continue;
		}
		if (sscanf(dname + i + 1, "%2x", &v) != 1 || v == 0)
			return -1;
		root[o++] = (char)v;
		i += 2;
	}
	root[o] = '\0';
	if (tier_local_path(root, again, sizeof again, &e) != 0)
		return -1;
	want = again + strlen(T.dir) + 1;
	return strcmp(want, dname) == 0 ? 0 : -1;
}

/* ---- the copy (worker) ------------------------------------------------------------- */

static int
tier_copy_file(int ldir, const struct store_backend *rbe, int rdir,
    const char *name, char *buf, ckd_err *e)
{
	const struct store_backend *lbe = &backend_posix;
	struct stat st;
	ssize_t n;
	int in, out, r = 0;

	if ((in = lbe->open_read(ldir, name, &st, e)) < 0)
		return e->code;
	if ((out = rbe->create(rdir, name, st.st_mode & 07777)) < 0) {
		r = err_errno(e, errno, "creating %s in the store", name);
		lbe->close(in);
		return r;
	}
	while ((n = lbe->read(in, buf, TIER_COPY_CHUNK)) > 0) {
		ssize_t w, off = 0;

		while (off < n) {
			if ((w = rbe->write(out, buf + off,
			    (size_t)(n - off))) < 0) {
				r = err_errno(e, errno, "writing %s to the store",
				    name);
				goto out;
			}
			off += w;
		}
	}
	if (n < 0)
		r = err_errno(e, errno, "reading %s of the local tier", name);
	else if (rbe->fsync(out) != 0)
		r = err_errno(e, errno, "uploading %s", name);
out:
	lbe->close(in);
	rbe->close(out);
	if (r != 0)
		(void)rbe->unlink(rdir, name);
	return r;
}

/* Copy the entries of ldir into rdir; at the top of a step, its
 * _CHECKPOINT_METADATA is left for the caller (the last object). */
static int
tier_copy_dir(int ldir, const struct store_backend *rbe, int rdir,
    int depth, char *buf, ckd_err *e)
{
	const struct store_backend *lbe = &backend_posix;
	struct store_list *l;
	const char *nm;
	char **names = NULL;
	int *isdir = NULL;
	size_t n = 0, cap = 0, i;
	int k, r = 0;

	if (depth > TIER_MAX_DEPTH)
		return err_set(e, CKPT_ECORRUPT, "local step nested too deep");
	if ((l = lbe->list_open(ldir, e)) == NULL)
		return e->code;
	while ((k = lbe->list_next(l, &nm)) > 0) {
		if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0 ||
		    (depth == 0 && strcmp(nm, STORE_STEP_METADATA) == 0))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			char **nn = realloc(names, nc * sizeof *nn);
			int *nd;

			if (nn == NULL) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				break;
			}
			names = nn;
			if ((nd = realloc(isdir, nc * sizeof *nd)) == NULL) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				break;
			}
			isdir = nd;
			cap = nc;
		}
		if ((names[n] = strdup(nm)) == NULL) {
			r = err_set(e, CKPT_ENOMEM, "out of memory");
			break;
		}
		isdir[n++] = lbe->list_is_dir(l);
	}
	if (k < 0 && r == 0)
		r = err_errno(e, errno, "listing the local step");
	lbe->list_close(l);
	for (i = 0; i < n && r == 0; i++) {
		int lsub, rsub;
		struct stat st;

		if (!isdir[i]) {
			r = tier_copy_file(ldir, rbe, rdir, names[i], buf, e);
			continue;
		}
		if ((lsub = lbe->open_dir(ldir, names[i])) < 0) {
			r = err_errno(e, errno, "opening %s of the local tier",
			    names[i]);
			break;
		}
		if (lbe->fstat(lsub, &st) != 0)
			st.st_mode = 0755;
		if ((r = store_open_item(rbe, rdir, names[i],
		    st.st_mode & 07777, &rsub, e)) == 0) {
			r = tier_copy_dir(lsub, rbe, rsub, depth + 1, buf, e);
			if (r == 0 && rbe->fsync(rsub) != 0)
				r = err_errno(e, errno, "syncing %s", names[i]);
			rbe->close(rsub);
		}
		lbe->close(lsub);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(isdir);
	return r;
}

/* Upload local step name of root into the store: 0 when it is committed
 * there (also when it already was). */
static int
tier_upload(const char *root, const char *name, uid_t uid, int *gone,
    ckd_err *e)
{
	const struct store_backend *lbe = &backend_posix, *rbe = NULL;
	int lroot = -1, lstep = -1, rroot = -1, tmp = -1, r;
	struct stat st;
	char *buf = NULL;

	if ((r = tier_open_local(root, 0700, uid, &lroot, e)) != 0)
		return r;
	if ((lstep = lbe->open_dir(lroot, name)) < 0) {
		*gone = errno == ENOENT;
		r = err_errno(e, errno, "opening %s of the local tier", name);
		goto out;
	}
	/* Opened to be written: the prefix's lease (s3lease.h). */
	if ((r = store_open_root(root, 1, 0, &rbe, &rroot, e)) != 0)
		goto out;
	if (lbe->fstat(lstep, &st) != 0)
		st.st_mode = 0755;
	r = store_begin(rbe, rroot, name, st.st_mode & 07777, &tmp, e);
	if (r == CKPT_EEXIST) {
		/* Committed in the store already (an upload that ended as
		 * its daemon died). */
		memset(e, 0, sizeof *e);
		r = 0;
		goto out;
	}
	if (r != 0)
		goto out;
	if ((buf = malloc(TIER_COPY_CHUNK)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto abort;
	}
	if ((r = tier_copy_dir(lstep, rbe, tmp, 0, buf, e)) != 0 ||
	    (r = tier_copy_file(lstep, rbe, tmp, STORE_STEP_METADATA, buf,
	    e)) != 0)
		goto abort;
	if (rbe->fsync(tmp) != 0) {
		r = err_errno(e, errno, "syncing %s", name);
		goto abort;
	}
	if ((r = store_commit_synced(rbe, rroot, name, e)) == 0)
		goto out;
abort:
	{
		ckd_err ae;

		rbe->close(tmp);
		tmp = -1;
		if (store_abort(rbe, rroot, name, &ae) != 0)
			log_warn("%s/%s: %s", root, name, ae.msg);
	}
out:
	free(buf);
	if (tmp >= 0)
		rbe->close(tmp);
	if (rroot >= 0)
		rbe->close(rroot);
	if (lstep >= 0)
		lbe->close(lstep);
	lbe->close(lroot);
	return r;
}

int
tier_delete_store(const char *root, const char *name, ckd_err *e)
{
	const struct store_backend *rbe;
	int rroot, r;

	if ((r = store_open_root(root, 1, 0, &rbe, &rroot, e)) != 0)
		return r;
	r = store_delete_step(rbe, rroot, name, NULL, e);
	rbe->close(rroot);
	return r;
}

/* ---- the uploads (loop) ---------------------------------------------------------- */

struct tier_task {
	struct task t;
	struct tier_step *ts;           /* kept while the task runs */
	char *root;
	char name[256];
	int64_t start_ns;
	int gone;                       /* the local step is no more */
};

static void tier_kick(void);
static void tier_failed(struct tier_step *ts, const ckd_err *e);

static void
tier_step_free(struct tier_step *ts)
{
	struct tier_step **pp;

	for (pp = &T.steps; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == ts) {
			*pp = ts->next;
			break;
		}
	}
	free(ts->root);
	free(ts);
}

static struct tier_step *
tier_find(const char *root, const char *name)
{
	struct tier_step *ts;

	for (ts = T.steps; ts != NULL; ts = ts->next)
		if (!ts->deleted && strcmp(ts->name, name) == 0 &&
		    strcmp(ts->root, root) == 0)
			return ts;
	return NULL;
}

static void
tier_upload_run(struct task *t)
{
	struct tier_task *tt = (struct tier_task *)t;

	(void)tier_upload(tt->root, tt->name, t->cred.uid, &tt->gone,
	    &t->err);
}

static void
tier_undo_run(struct task *t)
{
	struct tier_task *tt = (struct tier_task *)t;
	int r;

	r = tier_delete_store(tt->root, tt->name, &t->err);
	if (r == CKPT_ENOTFOUND)
		memset(&t->err, 0, sizeof t->err);
}

static void
tier_undo_done(struct task *t)
{
	struct tier_task *tt = (struct tier_task *)t;

	if (t->err.code != 0)
		log_warn("%s/%s deleted during its upload; removing the "
		    "store's copy: %s", tt->root, tt->name, t->err.msg);
	free(tt->root);
	free(tt);
}

static void
tier_upload_done(struct task *t)
{
	struct tier_task *tt = (struct tier_task *)t;
	struct tier_step *ts = tt->ts;
	double secs = (double)(now_mono_ns() - tt->start_ns) / 1e9;

	T.inflight--;
	if (ts->deleted) {
		/* Deleted meanwhile: the store may hold what was removed. */
		struct tier_task *u;

		if (t->err.code == 0 && (u = task_new(sizeof *u, tier_undo_run,
		    tier_undo_done, &ts->cred, ts->lane)) != NULL) {
			u->root = tt->root;
			tt->root = NULL;
			snprintf(u->name, sizeof u->name, "%s", ts->name);
			worker_submit(&u->t);
		}
		tier_step_free(ts);
	} else if (tt->gone) {
		/* Removed behind the daemon's back: nothing to upload. */
		log_warn("%s/%s: not uploaded: %s", ts->root, ts->name,
		    t->err.msg);
		tier_step_free(ts);
	} else if (t->err.code == 0) {
		ts->state = TIER_UPLOADED;
		ts->err[0] = '\0';
		T.done++;
		log_info("%s/%s uploaded: %" PRIu64 " bytes in %.2f s",
		    ts->root, ts->name, ts->bytes, secs);
	} else {
		tier_failed(ts, &t->err);
	}
	free(tt->root);
	free(tt);
	tier_kick();
}

/* A code waiting does not change: the store refused the credentials or
 * the grants, has no such bucket, or refuses the names. */
static int
tier_hopeless(int code)
{
	return code == CKPT_EACCES || code == CKPT_ENOTFOUND ||
	    code == CKPT_EINVAL || code == CKPT_EPATH;
}

/* The try of ts failed with e: tried again later, or given up when its
 * bounds are reached. */
static void
tier_failed(struct tier_step *ts, const ckd_err *e)
{
	int64_t now = now_mono_ns(), delay = TIER_RETRY_MIN_NS;
	unsigned i, limit = T.max_tries;

	if (tier_hopeless(e->code) && limit > TIER_HOPELESS_TRIES)
		limit = TIER_HOPELESS_TRIES;
	snprintf(ts->err, sizeof ts->err, "%s", e->msg);
	T.failures++;
	if (ts->tries >= limit || now - ts->first_ns >= T.max_ns) {
		ts->state = TIER_FAILED;
		log_error("%s/%s: upload given up after %u tr%s in %" PRId64
		    " s; the step stays in the local tier (SIGHUP tries it "
		    "again): %s", ts->root, ts->name, ts->tries,
		    ts->tries == 1 ? "y" : "ies",
		    (now - ts->first_ns) / 1000000000, e->msg);
		return;
	}
	for (i = 1; i < ts->tries && delay < TIER_RETRY_MAX_NS; i++)
		delay *= 2;
	if (delay > TIER_RETRY_MAX_NS)
		delay = TIER_RETRY_MAX_NS;
	/* The last try at the time bound, not past it. */
	if (now + delay > ts->first_ns + T.max_ns)
		delay = ts->first_ns + T.max_ns - now;
	ts->state = TIER_RETRY;
	ts->retry_ns = now + delay;
	log_warn("%s/%s: upload failed (try %u of %u, again in %" PRId64
	    " s): %s", ts->root, ts->name, ts->tries, limit,
	    delay / 1000000000, e->msg);
}

static int
tier_root_busy(const char *root)
{
	struct tier_step *ts;

	for (ts = T.steps; ts != NULL; ts = ts->next)
		if (ts->state == TIER_UPLOADING && strcmp(ts->root, root) == 0)
			return 1;
	return 0;
}

static void
tier_start(struct tier_step *ts)
{
	struct tier_task *tt;

	tt = task_new(sizeof *tt, tier_upload_run, tier_upload_done,
	    &ts->cred, ts->lane);
	if (tt == NULL || (tt->root = strdup(ts->root)) == NULL) {
		free(tt);
		ts->state = TIER_RETRY;
		ts->retry_ns = now_mono_ns() + TIER_RETRY_MIN_NS;
		snprintf(ts->err, sizeof ts->err, "out of memory");
		return;
	}
	tt->ts = ts;
	snprintf(tt->name, sizeof tt->name, "%s", ts->name);
	tt->start_ns = now_mono_ns();
	ts->state = TIER_UPLOADING;
	if (ts->tries++ == 0)
		ts->first_ns = tt->start_ns;
	T.inflight++;
	worker_submit(&tt->t);
}

/* Start what may start: per root the oldest step not uploaded, when no
 * upload of the root runs. */
static void
tier_kick(void)
{
	struct tier_step *ts;
	int64_t now = now_mono_ns();

	for (ts = T.steps; ts != NULL && T.inflight < TIER_MAX_INFLIGHT;
	    ts = ts->next) {
		struct tier_step *o;
		int older = 0;

		if (ts->deleted || !(ts->state == TIER_LOCAL ||
		    (ts->state == TIER_RETRY && ts->retry_ns <= now)))
			continue;
		if (tier_root_busy(ts->root))
			continue;
		/* An older step of the root waiting goes first (one whose
		 * upload failed waits for its retry, or was given up, and
		 * holds none back). */
		for (o = T.steps; o != ts; o = o->next)
			older |= !o->deleted && strcmp(o->root, ts->root) == 0 &&
			    o->state == TIER_LOCAL;
		if (older)
			continue;
		tier_start(ts);
	}
}

static void
tier_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	tier_kick();
}

static struct tier_step *
tier_add(const char *root, const struct index_step *rec,
    enum tier_state state, const struct peer_cred *cred, uint64_t lane)
{
	struct tier_step *ts, **pp;

	if ((ts = tier_find(root, rec->name)) != NULL)
		return ts;
	if ((ts = calloc(1, sizeof *ts)) == NULL ||
	    (ts->root = strdup(root)) == NULL) {
		free(ts);
		log_warn("%s/%s: out of memory; its upload waits for the next "
		    "load of the root", root, rec->name);
		return NULL;
	}
	snprintf(ts->name, sizeof ts->name, "%s", rec->name);
	ts->step = rec->step;
	ts->bytes = rec->bytes;
	ts->state = state;
	ts->cred = *cred;
	ts->lane = lane;
	for (pp = &T.steps; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = ts;
	return ts;
}

void
tier_committed(const char *root, const struct index_step *rec,
    const struct peer_cred *cred, uint64_t lane)
{
	struct tier_step *ts;

	if (!T.on)
		return;
	if ((ts = tier_find(root, rec->name)) != NULL &&
	    ts->state != TIER_UPLOADING) {
		/* The same name saved again (after a delete that failed). */
		ts->state = TIER_LOCAL;
		ts->tries = 0;
		ts->err[0] = '\0';
		ts->bytes = rec->bytes;
	}
	tier_add(root, rec, TIER_LOCAL, cred, lane);
	tier_kick();
}

void
tier_deleting(const char *root, const char *name)
{
	struct tier_step *ts;

	if ((ts = tier_find(root, name)) == NULL)
		return;
	if (ts->state == TIER_UPLOADING)
		ts->deleted = 1;
	else
		tier_step_free(ts);
}

/* ---- loading a root ----------------------------------------------------------- */

struct tier_pending {
	struct index_step *steps;       /* names, steps, bytes; no strings */
	size_t n;
	struct index_step *uploaded;
	size_t nuploaded;
};

void
tier_pending_free(struct tier_pending *p)
{
	if (p == NULL)
		return;
	free(p->steps);
	free(p->uploaded);
	free(p);
}

int
tier_merge(struct index_step **local, size_t *nlocal,
    struct index_step *remote, size_t nremote, struct tier_pending **pending,
    ckd_err *e)
{
	struct tier_pending *p;
	struct index_step *all;
	size_t i, k, n = *nlocal;

	*pending = NULL;
	if ((p = calloc(1, sizeof *p)) == NULL ||
	    (p->steps = calloc(*nlocal ? *nlocal : 1, sizeof *p->steps)) ==
	    NULL || (p->uploaded = calloc(*nlocal ? *nlocal : 1,
	    sizeof *p->uploaded)) == NULL ||
	    (all = calloc(*nlocal + nremote + 1, sizeof *all)) == NULL) {
		tier_pending_free(p);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	if (*nlocal > 0)
		memcpy(all, *local, *nlocal * sizeof *all);
	for (i = 0; i < *nlocal; i++) {
		int there = 0;
		struct index_step *s;

		for (k = 0; k < nremote && !there; k++)
			there = strcmp(remote[k].name, all[i].name) == 0;
		s = there ? &p->uploaded[p->nuploaded++] : &p->steps[p->n++];
		s->step = all[i].step;
		s->bytes = all[i].bytes;
		snprintf(s->name, sizeof s->name, "%s", all[i].name);
	}
	for (k = 0; k < nremote; k++) {
		int there = 0;

		for (i = 0; i < *nlocal && !there; i++)
			there = strcmp(remote[k].name, all[i].name) == 0;
		if (there) {
			free(remote[k].metrics_json);
			free(remote[k].error);
			continue;
		}
		all[n++] = remote[k];
	}
	free(*local);
	*local = all;
	*nlocal = n;
	*pending = p;
	return 0;
}

void
tier_resume(const char *root, struct tier_pending *p,
    const struct peer_cred *cred, uint64_t lane)
{
	struct tier_step *ts;
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nuploaded; i++) {
		if ((ts = tier_find(root, p->uploaded[i].name)) != NULL)
			continue;
		tier_add(root, &p->uploaded[i], TIER_UPLOADED, cred, lane);
	}
	for (i = 0; i < p->n; i++) {
		if ((ts = tier_find(root, p->steps[i].name)) != NULL &&
		    ts->state != TIER_UPLOADED)
			continue;
		if (ts != NULL) {
			ts->state = TIER_LOCAL;
			continue;
		}
		if (tier_add(root, &p->steps[i], TIER_LOCAL, cred, lane) != NULL)
			log_info("%s/%s: committed locally, not in the store: "
			    "uploading it", root, p->steps[i].name);
	}
	tier_pending_free(p);
	tier_kick();
}

/* ---- state ----------------------------------------------------------------------- */

enum tier_state
tier_state_of(const char *root, const char *name, const char **err)
{
	struct tier_step *ts = tier_find(root, name);

	*err = ts != NULL ? ts->err : "";
	return ts != NULL ? ts->state : TIER_NONE;
}

const char *
tier_state_name(enum tier_state s)
{
	switch (s) {
	case TIER_LOCAL:
		return "local";
	case TIER_UPLOADING:
		return "uploading";
	case TIER_UPLOADED:
		return "uploaded";
	case TIER_RETRY:
		return "upload retrying";
	case TIER_FAILED:
		return "upload failed";
	default:
		return "store";
	}
}

void
tier_stats(struct tier_stats *out)
{
	struct tier_step *ts;

	memset(out, 0, sizeof *out);
	for (ts = T.steps; ts != NULL; ts = ts->next) {
		if (ts->deleted)
			continue;
		if (ts->state == TIER_LOCAL || ts->state == TIER_UPLOADING ||
		    ts->state == TIER_RETRY || ts->state == TIER_FAILED)
			out->bytes_pending += ts->bytes;
		if (ts->state == TIER_LOCAL || ts->state == TIER_RETRY)
			out->uploads_queued++;
		if (ts->state == TIER_FAILED)
			out->uploads_given_up++;
	}
	out->uploads_inflight = T.inflight;
	out->uploads_done = T.done;
	out->upload_failures = T.failures;
}

/* ---- start-up: uploads a stopped daemon left ---------------------------------------
 *
 * Every directory of the tier that stands for a root (tier_root_of) is
 * looked at once, as the daemon: the steps committed in it and not in
 * the store are uploaded as the directory's owner, when that uid is
 * granted the root (--s3-allow). Steps of roots opened meanwhile are
 * found by their load as well (tier_add keeps one record). */

struct tier_found {
	char *root;
	char name[256];
	uint64_t step;
	uid_t uid;
	gid_t gid;
};

struct tier_sweep {
	struct task t;
	struct tier_found *f;
	size_t n, cap;
};

static int
tier_has_meta(const struct store_backend *be, int dir, const char *name)
{
	struct stat st;
	int sub, ok;

	if ((sub = be->open_dir(dir, name)) < 0)
		return 0;
	ok = be->stat(sub, STORE_STEP_METADATA, &st) == 0;
	be->close(sub);
	return ok;
}

static void
tier_sweep_root(struct tier_sweep *sw, const char *root, int lfd, uid_t uid,
    gid_t gid)
{
	const struct store_backend *lbe = &backend_posix, *rbe = NULL;
	struct store_list *l;
	const char *nm;
	int rfd = -1, k;
	ckd_err e;

	if ((l = lbe->list_open(lfd, &e)) == NULL)
		return;
	while ((k = lbe->list_next(l, &nm)) > 0) {
		struct tier_found *f;
		const char *p;

		if (nm[0] == '.' || !lbe->list_is_dir(l) ||
		    store_ends_with(nm, CKPT_TMP_SUFFIX) ||
		    !tier_has_meta(lbe, lfd, nm))
			continue;
		if (rfd < 0 && store_open_root(root, 0, 0, &rbe, &rfd,
		    &e) != 0) {
			log_warn("%s: pending uploads wait for the root's next "
			    "open: %s", root, e.msg);
			break;
		}
		if (tier_has_meta(rbe, rfd, nm))
			continue;
		if (sw->n == sw->cap) {
			size_t nc = sw->cap ? sw->cap * 2 : 8;
			struct tier_found *nf = realloc(sw->f, nc * sizeof *nf);

			if (nf == NULL)
				break;
			sw->f = nf;
			sw->cap = nc;
		}
		f = &sw->f[sw->n];
		memset(f, 0, sizeof *f);
		if ((f->root = strdup(root)) == NULL)
			break;
		snprintf(f->name, sizeof f->name, "%s", nm);
		for (p = nm + strlen(nm); p > nm && p[-1] >= '0' &&
		    p[-1] <= '9'; p--)
			;
		f->step = strtoull(p, NULL, 10);
		f->uid = uid;
		f->gid = gid;
		sw->n++;
	}
	lbe->list_close(l);
	if (rfd >= 0)
		rbe->close(rfd);
}

static void
tier_sweep_run(struct task *t)
{
	struct tier_sweep *sw = (struct tier_sweep *)t;
	const struct store_backend *be = &backend_posix;
	struct store_list *l;
	char root[PATH_MAX];
	const char *nm;
	int dfd, k;

	if (be->open_root(T.dir, 0, 0, &dfd, &t->err) != 0)
		return;
	if ((l = be->list_open(dfd, &t->err)) == NULL) {
		be->close(dfd);
		return;
	}
	while ((k = be->list_next(l, &nm)) > 0) {
		struct stat st;
		ckd_err e;
		int lfd;

		if (nm[0] == '.' || !be->list_is_dir(l) ||
		    tier_root_of(nm, root, sizeof root) != 0 ||
		    !tier_wants(root))
			continue;
		if ((lfd = be->open_dir(dfd, nm)) < 0)
			continue;
		if (be->fstat(lfd, &st) != 0) {
			be->close(lfd);
			continue;
		}
		if (s3acl_check(root, st.st_uid, &e) != 0)
			log_warn("%s/%s: not uploaded: %s", T.dir, nm, e.msg);
		else
			tier_sweep_root(sw, root, lfd, st.st_uid, st.st_gid);
		be->close(lfd);
	}
	be->list_close(l);
	be->close(dfd);
}

static void
tier_sweep_done(struct task *t)
{
	struct tier_sweep *sw = (struct tier_sweep *)t;
	size_t i;

	if (t->err.code != 0)
		log_warn("local tier %s: %s", T.dir, t->err.msg);
	for (i = 0; i < sw->n; i++) {
		struct tier_found *f = &sw->f[i];
		struct peer_cred cred;
		struct index_step rec;

		memset(&cred, 0, sizeof cred);
		cred.uid = f->uid;
		cred.gid = f->gid;
		memset(&rec, 0, sizeof rec);
		rec.step = f->step;
		snprintf(rec.name, sizeof rec.name, "%s", f->name);
		if (T.on && tier_find(f->root, f->name) == NULL &&
		    tier_add(f->root, &rec, TIER_LOCAL, &cred, 0) != NULL)
			log_info("%s/%s: committed locally, not in the store: "
			    "uploading it", f->root, f->name);
		free(f->root);
	}
	free(sw->f);
	free(sw);
	tier_kick();
}

/* ---- start-up ------------------------------------------------------------------- */

int
tier_init(struct event_base *base, const char *dir, ckd_err *e)
{
	struct timeval tv = { 5, 0 };
	struct tier_sweep *sw;
	int fd, r;

	if (dir == NULL || dir[0] == '\0')
		return 0;
	if (dir[0] != '/')
		return err_set(e, CKPT_EINVAL, "--local-tier must be an "
		    "absolute path: %s", dir);
	if (snprintf(T.dir, sizeof T.dir, "%s", dir) >= (int)sizeof T.dir - 256)
		return err_set(e, CKPT_EINVAL, "--local-tier: path too long");
	if ((r = backend_posix.open_root(T.dir, 1, 0755, &fd, e)) != 0) {
		char msg[CKPT_ERRLEN];

		snprintf(msg, sizeof msg, "%s", e->msg);
		return err_set(e, r, "--local-tier %s: %s", dir, msg);
	}
	backend_posix.close(fd);
	if ((T.timer = event_new(base, -1, EV_PERSIST, tier_timer_cb,
	    NULL)) == NULL || event_add(T.timer, &tv) != 0)
		return err_set(e, CKPT_ENOMEM, "tier timer");
	T.on = 1;
	log_info("local tier in %s", T.dir);
	if ((sw = task_new(sizeof *sw, tier_sweep_run, tier_sweep_done, NULL,
	    0)) != NULL)
		worker_submit(&sw->t);
	else
		log_warn("local tier: out of memory; pending uploads wait for "
		    "their root's next open");
	return 0;
}

void
tier_set_limits(unsigned attempts, uint64_t secs)
{
	T.max_tries = attempts != 0 ? attempts : TIER_DEFAULT_TRIES;
	if (secs == 0)
		secs = TIER_DEFAULT_SECS;
	T.max_ns = secs > INT64_MAX / 1000000000LL ? INT64_MAX :
	    (int64_t)secs * 1000000000LL;
}

unsigned
tier_retry_failed(void)
{
	struct tier_step *ts;
	unsigned n = 0;

	for (ts = T.steps; ts != NULL; ts = ts->next) {
		if (ts->deleted || ts->state != TIER_FAILED)
			continue;
		ts->state = TIER_LOCAL;
		ts->tries = 0;
		n++;
	}
	if (n > 0)
		tier_kick();
	return n;
}

void
tier_shutdown(void)
{
	if (T.timer != NULL)
		event_free(T.timer);
	T.timer = NULL;
	while (T.steps != NULL)
		tier_step_free(T.steps);
	T.on = 0;
}
