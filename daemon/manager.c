/*
 * manager.c - the managers opened on roots: OpenManager (root loading and
 * reconciling with the disk), CloseManager, ListSteps, ShouldSave,
 * WaitSaves, WaitForStep, Delete, Reload, and the manager object the
 * other handlers use (references, async error, waiters, deletes counted
 * against it). Saves (save.c) and restores (restore.c) sit above this
 * file and call into it; it calls down into steptx.c and root.c only,
 * and asks for the pending saves through struct manager_saves (main.c).
 *
 * Request path:
 *   conn -> dispatch (routing table) -> manager_handle_* / save_handle /
 *   restore_*_handle -> (loop checks) -> worker task(s)
 *   -> task done() on the loop -> state update -> conn_reply
 * Nothing here blocks: every file or LMDB operation runs in a worker task
 * with the requesting peer's identity (task.cred) on its lane (conn id).
 */
#include <sys/random.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "manager.h"
#include "steptx.h"
#include "root.h"
#include "preempt.h"
#include "s3acl.h"
#include "savecheck.h"
#include "tier.h"

/* An OpenManager waiting for its root to finish loading. */
struct opener {
	struct opener *next;
	struct conn *c;                 /* referenced */
	uint64_t id;
	Ckpt__ManagerOptions *o;        /* owned */
	struct policy_set *pol;         /* owned */
	mode_t dmode;
	int cleanup;
	struct manager *attach;         /* a rootless manager's reload, ref'd */
};

/* A WaitSaves or WaitForStep parked until its condition holds; owned by
 * the waiter list, holds a conn reference. */
enum waiter_kind {
	WAIT_SAVES = 1,
	WAIT_STEP = 2,
};

struct waiter {
	struct waiter *next;
	int kind;
	struct conn *c;                 /* referenced */
	uint64_t id;
	struct manager *m;              /* WAIT_SAVES, referenced */
	struct root *r;                 /* WAIT_STEP, referenced */
	int clear_error;
	int64_t after;
	struct event *timer;            /* NULL without timeout */
};

/* ---- replies -------------------------------------------------------------- */

void
mgr_reply_empty(struct conn *c, uint64_t id)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__Empty em = CKPT__EMPTY__INIT;

	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_EMPTY;
	resp.empty = &em;
	conn_reply(c, &resp, NULL, 0);
}

/* This file's own state (loop thread): the managers, the waiters, and
 * what they need. Roots are root.c's, saves save.c's. */
static struct {
	struct event_base *base;
	struct index *ix;
	struct manager *managers;
	struct waiter *waiters;
	struct manager_saves saves;     /* handed by main.c */
} mgr;

/* ---- small helpers ----------------------------------------------------- */

char *
mgr_strdup(const char *s)
{
	return s == NULL ? NULL : strdup(s);
}

Ckpt__ManagerOptions *
mgr_options_copy(const Ckpt__ManagerOptions *o)
{
	Ckpt__ManagerOptions def = CKPT__MANAGER_OPTIONS__INIT;
	Ckpt__ManagerOptions *out;
	uint8_t *buf;
	size_t len;

	if (o == NULL)
		o = &def;
	len = ckpt__manager_options__get_packed_size(o);
	if ((buf = malloc(len ? len : 1)) == NULL)
		return NULL;
	ckpt__manager_options__pack(o, buf);
	out = ckpt__manager_options__unpack(NULL, len, buf);
	free(buf);
	return out;
}

/* ---- managers ----------------------------------------------------------- */

void
mgr_ref(struct manager *m)
{
	m->refs++;
}

void
mgr_unref(struct manager *m)
{
	if (m == NULL || --m->refs > 0)
		return;
	policy_free(m->pol);
	if (m->o != NULL)
		ckpt__manager_options__free_unpacked(m->o, NULL);
	root_unref(m->r);
	free(m->rootless);
	free(m);
}

static int
mgr_id_used(uint64_t id)
{
	const struct manager *m;

	for (m = mgr.managers; m != NULL; m = m->next)
		if (m->id == id)
			return 1;
	return 0;
}

static uint64_t
mgr_new_id(void)
{
	static uint64_t counter;
	uint64_t id = 0;

	do {
		if (getrandom(&id, sizeof id, GRND_NONBLOCK) != sizeof id)
			id = (uint64_t)now_mono_ns() * 0x9e3779b97f4a7c15ull ^
			    ++counter;
	} while (id == 0 || mgr_id_used(id));
	return id;
}

/* Takes ownership of o and pol (also on failure). */
static struct manager *
mgr_create(struct conn *c, struct root *r, Ckpt__ManagerOptions *o,
    struct policy_set *pol, mode_t dmode)
{
	struct manager *m;

	if ((m = calloc(1, sizeof *m)) == NULL) {
		policy_free(pol);
		ckpt__manager_options__free_unpacked(o, NULL);
		return NULL;
	}
	m->id = mgr_new_id();
	m->refs = 1;
	m->c = c;
	m->r = r;
	if (r != NULL)
		root_ref(r);
	m->o = o;
	m->pol = pol;
	m->dmode = dmode & 07777;
	m->fmode = dmode & 0666;
	m->next = mgr.managers;
	mgr.managers = m;
	if (r != NULL && o->process_count > 1)
		steptx_rank_back(r, o->job != NULL ? o->job : "",
		    o->process_index);
	return m;
}

struct manager *
mgr_lookup(struct conn *c, uint64_t req_id, uint64_t id)
{
	struct manager *m;

	for (m = mgr.managers; m != NULL; m = m->next)
		if (m->id == id && m->c == c)
			return m;
	conn_reply_error(c, req_id, CKPT_EINVAL, "unknown manager %" PRIu64,
	    id);
	return NULL;
}

/* ---- waiters ------------------------------------------------------------- */

static void
waiter_free(struct waiter *w)
{
	if (w->timer != NULL)
		event_free(w->timer);
	conn_unref(w->c);
	mgr_unref(w->m);
	root_unref(w->r);
	free(w);
}

static void
waiter_unlink(struct waiter *w)
{
	struct waiter **pp;

	for (pp = &mgr.waiters; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			return;
		}
	}
}

static void
waiter_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct waiter *w = arg;

	waiter_unlink(w);
	conn_reply_error(w->c, w->id, CKPT_ETIMEDOUT, "%s",
	    w->kind == WAIT_SAVES ? "timed out waiting for saves to finish" :
	    "timed out waiting for a new step");
	waiter_free(w);
}

static struct waiter *
waiter_add(struct conn *c, uint64_t id, int kind, int64_t timeout_ms)
{
	struct waiter *w;

	if ((w = calloc(1, sizeof *w)) == NULL)
		return NULL;
	if (timeout_ms > 0) {
		struct timeval tv;

		if (timeout_ms > INT64_C(1) << 40)
			timeout_ms = INT64_C(1) << 40;
		tv.tv_sec = (time_t)(timeout_ms / 1000);
		tv.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
		w->timer = evtimer_new(mgr.base, waiter_timeout_cb, w);
		if (w->timer == NULL || evtimer_add(w->timer, &tv) != 0) {
			if (w->timer != NULL)
				event_free(w->timer);
			free(w);
			return NULL;
		}
	}
	w->kind = kind;
	w->c = c;
	conn_ref(c);
	w->id = id;
	w->next = mgr.waiters;
	mgr.waiters = w;
	return w;
}

static void
mgr_reply_wait_saves(struct conn *c, uint64_t id, const struct manager *m)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__WaitSavesReply wr = CKPT__WAIT_SAVES_REPLY__INIT;

	wr.has_code = 1;
	wr.code = m->err_code;
	if (m->err_code != 0) {
		wr.message = (char *)m->err_msg;
		wr.has_step = 1;
		wr.step = m->err_step;
	}
	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_WAIT_SAVES;
	resp.wait_saves = &wr;
	conn_reply(c, &resp, NULL, 0);
}

/* A delete counted in m->deleting finished. */
static void
mgr_delete_finished(struct manager *m)
{
	if (--m->deleting > 0 || m->close_c == NULL)
		return;
	mgr_reply_empty(m->close_c, m->close_id);
	conn_unref(m->close_c);
	m->close_c = NULL;
}

/* A delete of mgr_delete_step, running. */
struct mgr_deleting {
	struct manager *m;              /* referenced */
	struct mgr_delete how;          /* c referenced */
};

static void
mgr_delete_done(void *arg, const ckd_err *err)
{
	struct mgr_deleting *d = arg;

	if (d->how.c != NULL) {
		if (err != NULL)
			conn_reply_err(d->how.c, d->how.id, err);
		else
			mgr_reply_empty(d->how.c, d->how.id);
		conn_unref(d->how.c);
	}
	if (d->how.done != NULL)
		d->how.done(d->how.arg);
	mgr_delete_finished(d->m);
	mgr_unref(d->m);
	free(d);
}

void
mgr_delete_step(struct manager *m, struct root *r, size_t i,
    const struct mgr_delete *how)
{
	struct root_delete rd = {
		.subdir = m->o->todelete_subdir, .cred = how->cred,
		.lane = how->lane, .reported = how->c != NULL,
		.done = mgr_delete_done,
	};
	struct mgr_deleting *d;

	if ((d = calloc(1, sizeof *d)) == NULL) {
		if (how->c != NULL)
			conn_reply_error(how->c, how->id, CKPT_ENOMEM,
			    "out of memory");
		else
			log_warn("out of memory deleting step %llu",
			    (unsigned long long)r->steps[i].step);
		if (how->done != NULL)
			how->done(how->arg);
		return;
	}
	d->m = m;
	mgr_ref(m);
	m->deleting++;
	d->how = *how;
	if (how->c != NULL)
		conn_ref(how->c);
	rd.arg = d;
	root_delete_step(r, i, &rd);
}

void
mgr_wake_saves(struct manager *m)
{
	struct waiter **pp = &mgr.waiters, *w;
	int clear = 0;

	if (m->pending != 0)
		return;
	while ((w = *pp) != NULL) {
		if (w->kind != WAIT_SAVES || w->m != m) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		mgr_reply_wait_saves(w->c, w->id, m);
		clear |= w->clear_error;
		waiter_free(w);
	}
	/* Every waiter of this round saw the error; then it is cleared. */
	if (clear)
		m->err_code = 0;
}

static void
mgr_reply_step(struct conn *c, uint64_t id, int64_t step)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__WaitForStepReply wr = CKPT__WAIT_FOR_STEP_REPLY__INIT;

	wr.has_step = 1;
	wr.step = step;
	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_WAIT_FOR_STEP;
	resp.wait_for_step = &wr;
	conn_reply(c, &resp, NULL, 0);
}

void
mgr_wake_steps(struct root *r)
{
	struct waiter **pp = &mgr.waiters, *w;
	int64_t latest = root_latest(r);

	while ((w = *pp) != NULL) {
		if (w->kind != WAIT_STEP || w->r != r || latest <= w->after) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		mgr_reply_step(w->c, w->id, latest);
		waiter_free(w);
	}
}

/* How a manager ends: its client asked (Close), its connection was lost
 * (the process died or dropped it), or the daemon stops. */
enum mgr_end { MGR_END_ASKED, MGR_END_LOST, MGR_END_SHUTDOWN };

/* A distributed manager m closed: its rank is gone unless another open
 * manager serves it; the job's gone ranks are forgotten once none of its
 * managers is open and none of its steps is unfinished, except a rank
 * whose connection was lost (steptx.h). */
static void
mgr_rank_left(struct manager *m, enum mgr_end how)
{
	const char *job = m->o->job != NULL ? m->o->job : "";
	const struct manager *o;
	int others = 0;

	for (o = mgr.managers; o != NULL; o = o->next) {
		if (o->closed || o->r != m->r || o->o->process_count < 2 ||
		    strcmp(o->o->job != NULL ? o->o->job : "", job) != 0)
			continue;
		if (o->o->process_index == m->o->process_index)
			return;         /* a live replacement */
		others = 1;
	}
	if (others)
		steptx_rank_left(m->r, job, m->o->process_index);
	else if (how == MGR_END_LOST)
		steptx_job_lost(m->r, job, m->o->process_index,
		    m->o->async_timeout_secs);
	else
		steptx_job_left(m->r, job, m->o->process_index);
}

/* Close a manager: it becomes unreachable; accepted saves continue. */
static void
mgr_close(struct manager *m, enum mgr_end how)
{
	struct manager **mp;
	struct waiter **pp = &mgr.waiters, *w;

	for (mp = &mgr.managers; *mp != NULL; mp = &(*mp)->next) {
		if (*mp == m) {
			*mp = m->next;
			break;
		}
	}
	m->closed = 1;
	m->next = NULL;
	if (m->r != NULL && m->o->process_count > 1)
		mgr_rank_left(m, how);
	while ((w = *pp) != NULL) {
		if (w->kind != WAIT_SAVES || w->m != m) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		if (how == MGR_END_ASKED)
			conn_reply_error(w->c, w->id, CKPT_ECLOSED,
			    "manager closed");
		waiter_free(w);
	}
	mgr_unref(m);
}

/* ---- opening: root load ------------------------------------------------------ */

struct load_task {
	struct task t;
	struct root *r;
	int cleanup;
	struct index_step *steps;
	size_t nsteps;
	size_t ninterrupted;            /* found in this load */
	struct tier_pending *tier;      /* a tier's uploads to resume */
};

/* Records of the saves a crash interrupted (leftover tmp dirs of this
 * naming that no live save owned, just removed): listed as interrupted
 * with the time of their tmp dir, like failed saves, until the step is
 * saved again. Appended to *all (room for n more is the caller's). */
static size_t
mgr_interrupted_records(const struct root *r, const struct store_leftover *lo,
    size_t nlo, struct index_step *all, size_t n)
{
	struct index_step *s;
	size_t i, k, added = 0;

	for (i = 0; i < nlo; i++) {
		for (k = 0; k < n + added && all[k].step != lo[i].step; k++)
			;
		if (k < n + added && all[k].state == INDEX_COMMITTED)
			continue;
		s = &all[k];
		if (k < n + added) {
			/* replaces an older failed or interrupted record */
			free(s->metrics_json);
			free(s->error);
		} else {
			added++;
		}
		memset(s, 0, sizeof *s);
		s->step = lo[i].step;
		s->state = INDEX_INTERRUPTED;
		s->init_ns = s->commit_ns = lo[i].mtime_ns;
		snprintf(s->name, sizeof s->name, "%s", lo[i].name);
		s->error = mgr_strdup("interrupted: ckptd stopped before the "
		    "save committed; its partial files were removed");
		log_warn("%s: the save of step %" PRIu64 " was interrupted "
		    "(its files were last written %" PRId64 " s after the "
		    "epoch); removed %s" CKPT_TMP_SUFFIX, r->path, lo[i].step,
		    lo[i].mtime_ns / 1000000000, lo[i].name);
	}
	return added;
}

static int
mgr_step_cmp(const void *a, const void *b)
{
	const struct index_step *x = a, *y = b;

	return x->step < y->step ? -1 : x->step > y->step;
}

/* A root with a local tier (tier.h): its steps are the local ones and
 * the store's; the local ones the store lacks are uploads to resume. The
 * store out of reach leaves the local steps listed (logged). */
static int
mgr_load_store(struct root *r, const struct index_step *known, size_t nknown,
    struct index_step **found, size_t *nfound, struct tier_pending **p,
    ckd_err *e)
{
	const struct store_backend *rbe;
	struct index_step *rf = NULL;
	size_t nrf = 0;
	ckd_err se;
	int rfd;

	if (store_open_root(r->path, 0, 0, &rbe, &rfd, &se) != 0) {
		log_warn("%s: the store is out of reach, listing the local "
		    "tier only: %s", r->path, se.msg);
		return 0;
	}
	if (store_collect_leftovers(rbe, rfd, &r->nm, 0, NULL, NULL,
	    &se) != 0)
		log_warn("collecting leftovers in %s: %s", r->path, se.msg);
	if (root_scan_disk(rbe, rfd, &r->nm, known, nknown, &rf, &nrf, NULL,
	    &se) != 0) {
		log_warn("%s: listing the store: %s", r->path, se.msg);
		rbe->close(rfd);
		return 0;
	}
	rbe->close(rfd);
	if (tier_merge(found, nfound, rf, nrf, p, e) != 0) {
		index_steps_free(rf, nrf);
		return e->code;
	}
	free(rf);
	return 0;
}

static void
mgr_load_run(struct task *t)
{
	struct load_task *lt = (struct load_task *)t;
	struct root *r = lt->r;
	struct index_step *known = NULL, *found = NULL, *all;
	struct store_leftover *lo = NULL;
	size_t nknown = 0, nfound = 0, nlo = 0, i, n;
	int fd, isknown = 0;
	ckd_err ie;

	if (root_open_dir(r, &fd, &t->err) != 0)
		return;
	/* Leftovers of a crash first (tmp dirs no live save owns), so that
	 * the saves they stood for are listed as interrupted; then the
	 * index, which then holds what the start-up sweep recorded for the
	 * leftovers it collected itself. */
	if (store_collect_leftovers(r->be, fd, &r->nm, lt->cleanup ?
	    STORE_LEFTOVER_ANY_NAMING | STORE_LEFTOVER_ORBAX : 0, &lo, &nlo,
	    &ie) != 0)
		log_warn("collecting leftovers in %s: %s", r->path, ie.msg);
	if (index_load_root(mgr.ix, r->key, &known, &nknown, &isknown,
	    &ie) != 0) {
		log_warn("index: %s (rebuilding from disk)", ie.msg);
		known = NULL;
		nknown = 0;
	}
	if (root_scan_disk(r->be, fd, &r->nm, known, nknown, &found, &nfound,
	    NULL, &t->err) != 0)
		goto out;
	if (r->tiered && mgr_load_store(r, known, nknown, &found, &nfound,
	    &lt->tier, &t->err) != 0)
		goto out;
	/* A daemon killed between a commit's rename and its root fsync left
	 * a step whose name is not durable yet: make it so before the step
	 * is listed (a failure only costs that guarantee, e.g. read-only). */
	if (r->be->fsync(fd) != 0)
		log_warn("fsync %s: %s", r->path, strerror(errno));
	/* Disk is the truth: committed dirs as found; failed and
	 * interrupted records kept unless the step has since committed;
	 * vanished steps dropped. */
	n = nfound + nlo;
	for (i = 0; i < nknown; i++)
		n += known[i].state != INDEX_COMMITTED;
	if ((all = calloc(n ? n : 1, sizeof *all)) == NULL) {
		err_set(&t->err, CKPT_ENOMEM, "out of memory loading root");
		goto out;
	}
	if (nfound > 0)
		memcpy(all, found, nfound * sizeof *all);
	n = nfound;
	for (i = 0; i < nknown; i++) {
		size_t k;
		int dup = 0;

		if (known[i].state == INDEX_COMMITTED)
			continue;
		for (k = 0; k < nfound && !dup; k++)
			dup = found[k].step == known[i].step;
		if (dup)
			continue;
		all[n] = known[i];
		known[i].metrics_json = known[i].error = NULL;
		n++;
	}
	free(found);
	found = NULL;
	nfound = 0;
	n += mgr_interrupted_records(r, lo, nlo, all, n);
	lt->ninterrupted = nlo;
	qsort(all, n, sizeof *all, mgr_step_cmp);
	if (index_replace_root(mgr.ix, r->key, all, n, &ie) != 0)
		log_warn("index: %s", ie.msg);
	lt->steps = all;
	lt->nsteps = n;
out:
	free(lo);
	index_steps_free(known, nknown);
	index_steps_free(found, nfound);
	r->be->close(fd);
}

static void mgr_open_finish(struct root *r, struct opener *op);
static void mgr_handle_reload(struct conn *c, uint64_t id, struct manager *m);

static void
mgr_load_done(struct task *t)
{
	struct load_task *lt = (struct load_task *)t;
	struct root *r = lt->r;
	struct opener *op, *next;
	size_t i;

	if (r->tiered && t->err.code == 0)
		tier_resume(r->path, lt->tier, &t->cred, t->lane);
	else
		tier_pending_free(lt->tier);
	if (t->err.code == 0) {
		root_add_interrupted(lt->ninterrupted);
		for (i = 0; i < lt->nsteps; i++) {
			if (lt->steps[i].state == INDEX_COMMITTED &&
			    lt->steps[i].init_ns > r->last_save_ns)
				r->last_save_ns = lt->steps[i].init_ns;
			if (t->err.code == 0 &&
			    root_insert_step(r, &lt->steps[i]) == 0)
				continue;
			if (t->err.code == 0)
				err_set(&t->err, CKPT_ENOMEM, "out of memory");
			free(lt->steps[i].metrics_json);
			free(lt->steps[i].error);
		}
		free(lt->steps);
	}
	r->busy--;
	op = r->openers;
	r->openers = NULL;
	if (t->err.code == 0)
		r->state = ROOT_READY;
	for (; op != NULL; op = next) {
		next = op->next;
		if (t->err.code != 0) {
			conn_reply_err(op->c, op->id, &t->err);
			conn_unref(op->c);
			mgr_unref(op->attach);
			policy_free(op->pol);
			ckpt__manager_options__free_unpacked(op->o, NULL);
			free(op);
		} else {
			mgr_open_finish(r, op);
		}
	}
	if (t->err.code != 0) {
		/* Forget the failed root so the next open retries. */
		root_forget(r);
	}
	root_unref(r);
	free(lt);
}

/* ---- opening: the manager ------------------------------------------------------- */

struct open_task {
	struct task t;
	struct conn *c;
	uint64_t id;
	Ckpt__ManagerOptions *o;
	struct policy_set *pol;
	char *path;
	mode_t dmode;
	const struct store_backend *be; /* its backend */
	int fd;                         /* the directory opened, or -1 */
	struct stat st;                 /* its identity */
	char canon[PATH_MAX];
	int absent;                     /* read-only, no such directory */
	struct manager *attach;         /* a rootless manager's reload, ref'd */
	int tiered;                     /* fd is the root's local tier */
};

static mode_t
mgr_peer_umask(pid_t pid)
{
	char path[64], line[128];
	unsigned mask;
	FILE *f;
	mode_t um = 022;

	snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
	if ((f = fopen(path, "re")) == NULL)
		return um;
	while (fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "Umask: %o", &mask) == 1) {
			um = (mode_t)(mask & 0777);
			break;
		}
	}
	fclose(f);
	return um;
}

static void
mgr_open_run(struct task *t)
{
	struct open_task *ot = (struct open_task *)t;
	const Ckpt__ManagerOptions *o = ot->o;
	const struct store_backend *be;
	int fd, mfd, r;

	if (o->has_path_permission_mode)
		ot->dmode = (mode_t)(o->path_permission_mode & 07777);
	else
		ot->dmode = 0777 & ~mgr_peer_umask(t->cred.pid);
	if (store_open_root(ot->path, o->create && !o->read_only, ot->dmode,
	    &be, &fd, &t->err) != 0) {
		/* Orbax: a read-only manager on a directory not there yet
		 * is opened without a root (rootless.c). */
		if (o->read_only && t->err.code == CKPT_ENOTDIR) {
			memset(&t->err, 0, sizeof t->err);
			ot->absent = 1;
		}
		return;
	}
	ot->be = be;
	if (be->fstat(fd, &ot->st) != 0) {
		err_errno(&t->err, errno, "stat %s", ot->path);
		goto out;
	}
	if (be->root_name(fd, ot->canon, sizeof ot->canon, &t->err) != 0)
		goto out;
	/* A manager that may save must be able to write the root: refuse
	 * now rather than fail every save later (the check uses the fs
	 * identity of this thread, i.e. the peer's). */
	if (!o->read_only && be->writable(fd) != 0) {
		err_errno(&t->err, errno, "cannot write to the checkpoint "
		    "directory %s (open it read-only to restore)", ot->canon);
		goto out;
	}
	if (o->root_metadata_json != NULL && !o->read_only) {
		/* Written once; never overwritten. */
		if (be->make_dir(fd, STORE_ROOT_META_DIR, ot->dmode) != 0 &&
		    errno != EEXIST) {
			err_errno(&t->err, errno, "creating %s/%s", ot->canon,
			    STORE_ROOT_META_DIR);
			goto out;
		}
		if ((mfd = be->open_dir(fd, STORE_ROOT_META_DIR)) < 0) {
			err_errno(&t->err, errno, "opening %s/%s", ot->canon,
			    STORE_ROOT_META_DIR);
			goto out;
		}
		r = store_write_file(be, mfd, STORE_ROOT_META_FILE,
		    o->root_metadata_json, strlen(o->root_metadata_json),
		    ot->dmode & 0666, &t->err);
		if (r == CKPT_EEXIST) {
			memset(&t->err, 0, sizeof t->err);
			r = 0;
		}
		/* The file is fsynced; its entry and the directory's must
		 * survive a power loss too (also when an earlier open wrote
		 * the file and died before this point). */
		if (r == 0 && store_fsync_dir(be, mfd, &t->err) == 0)
			(void)store_fsync_dir(be, fd, &t->err);
		be->close(mfd);
	}
	/* A local tier keeps the root's steps (tier.h): the root's files are
	 * the tier's directory, the store is reached by name. Its identity
	 * stays the store's (ot->st). */
	if (tier_wants(ot->canon)) {
		int lfd;

		if (tier_open_local(ot->canon, ot->dmode, t->cred.uid, &lfd,
		    &t->err) != 0)
			goto out;
		if (!o->read_only && backend_posix.writable(lfd) != 0) {
			err_errno(&t->err, errno, "cannot write to the local "
			    "tier of %s", ot->canon);
			backend_posix.close(lfd);
			goto out;
		}
		be->close(fd);
		fd = lfd;
		be = ot->be = &backend_posix;
		ot->tiered = 1;
	}
out:
	/* On success the fd identifies the root (mgr_open_done). */
	if (t->err.code == 0)
		ot->fd = fd;
	else
		be->close(fd);
}

static void
mgr_reply_open(struct conn *c, uint64_t id, const struct manager *m)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__OpenManagerReply om = CKPT__OPEN_MANAGER_REPLY__INIT;

	om.has_manager = 1;
	om.manager = m->id;
	om.root = m->r != NULL ? m->r->path : m->rootless;
	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_OPEN_MANAGER;
	resp.open_manager = &om;
	conn_reply(c, &resp, NULL, 0);
}

struct cleanup_task {
	struct task t;
	struct root *r;
};

static void
mgr_cleanup_run(struct task *t)
{
	struct cleanup_task *ct = (struct cleanup_task *)t;
	ckd_err e;
	int fd;

	if (root_open_dir(ct->r, &fd, &t->err) != 0)
		return;
	if (store_collect_leftovers(ct->r->be, fd, NULL,
	    STORE_LEFTOVER_ANY_NAMING | STORE_LEFTOVER_ORBAX, NULL, NULL,
	    &e) != 0)
		log_warn("cleaning %s: %s", ct->r->path, e.msg);
	ct->r->be->close(fd);
}

static void
mgr_cleanup_done(struct task *t)
{
	struct cleanup_task *ct = (struct cleanup_task *)t;

	ct->r->busy--;
	root_unref(ct->r);
	free(ct);
}

/* Create the manager of a parked or immediate open on a ready root. Frees
 * op. */
static void
mgr_open_finish(struct root *r, struct opener *op)
{
	struct manager *m;

	if (!conn_alive(op->c)) {
		policy_free(op->pol);
		ckpt__manager_options__free_unpacked(op->o, NULL);
		mgr_unref(op->attach);
		goto out;
	}
	/* Leftover tmp dirs never block a save. The tmp dir of a save in
	 * progress (this root's, another naming's of the same directory, or
	 * another daemon's) is locked and stays (store_collect_leftovers). */
	if (op->cleanup) {
		struct cleanup_task *ct;

		ct = task_new(sizeof *ct, mgr_cleanup_run,
		    mgr_cleanup_done, conn_peer(op->c), conn_id(op->c));
		if (ct != NULL) {
			ct->r = r;
			root_ref(r);
			r->busy++;
			worker_submit(&ct->t);
		}
	}
	if (op->attach != NULL) {
		/* A rootless manager's reload found its directory: the root
		 * is its own now, rescanned as any reload is. */
		m = op->attach;
		policy_free(op->pol);
		ckpt__manager_options__free_unpacked(op->o, NULL);
		if (m->closed) {
			conn_reply_error(op->c, op->id, CKPT_ECLOSED,
			    "manager closed");
		} else {
			if (m->r == NULL) {
				m->r = r;
				root_ref(r);
				free(m->rootless);
				m->rootless = NULL;
			}
			mgr_handle_reload(op->c, op->id, m);
		}
		mgr_unref(m);
		goto out;
	}
	m = mgr_create(op->c, r, op->o, op->pol, op->dmode);
	if (m == NULL)
		conn_reply_error(op->c, op->id, CKPT_ENOMEM, "out of memory");
	else
		mgr_reply_open(op->c, op->id, m);
out:
	conn_unref(op->c);
	free(op);
}

/* The directory of a read-only open is absent: a new rootless manager,
 * or, for a rootless manager's reload, no change. */
static void
mgr_open_rootless(struct open_task *ot)
{
	struct manager *m;

	if (ot->attach != NULL) {
		if (ot->attach->closed)
			conn_reply_error(ot->c, ot->id, CKPT_ECLOSED,
			    "manager closed");
		else
			mgr_reply_empty(ot->c, ot->id);
		return;
	}
	m = mgr_create(ot->c, NULL, ot->o, ot->pol, ot->dmode);
	ot->o = NULL;
	ot->pol = NULL;
	if (m == NULL) {
		conn_reply_error(ot->c, ot->id, CKPT_ENOMEM, "out of memory");
		return;
	}
	m->rootless = ot->path;
	ot->path = NULL;
	mgr_reply_open(ot->c, ot->id, m);
}

static void
mgr_open_done(struct task *t)
{
	struct open_task *ot = (struct open_task *)t;
	const Ckpt__ManagerOptions *o = ot->o;
	struct store_naming nm;
	struct opener *op = NULL;
	struct root *r;

	if (t->err.code != 0 || !conn_alive(ot->c)) {
		if (t->err.code != 0)
			conn_reply_err(ot->c, ot->id, &t->err);
		goto fail;
	}
	if (ot->absent) {
		mgr_open_rootless(ot);
		goto fail;
	}
	memset(&nm, 0, sizeof nm);
	if (o->step_prefix != NULL)
		snprintf(nm.prefix, sizeof nm.prefix, "%s", o->step_prefix);
	nm.fixed_len = o->has_step_format_fixed_length ?
	    o->step_format_fixed_length : 0;
	if ((op = calloc(1, sizeof *op)) == NULL) {
		conn_reply_error(ot->c, ot->id, CKPT_ENOMEM, "out of memory");
		goto fail;
	}
	op->c = ot->c;
	op->id = ot->id;
	op->o = ot->o;
	op->pol = ot->pol;
	op->dmode = ot->dmode;
	op->cleanup = o->cleanup_tmp_directories && !o->read_only;
	op->attach = ot->attach;
	ot->attach = NULL;
	ot->c = NULL;
	ot->o = NULL;
	ot->pol = NULL;
	/* The directory just opened is the root, whatever its path: a path
	 * removed and re-created since is a new root (never the state loaded
	 * for the old directory, maybe for another user). */
	if ((r = root_find(ot->st.st_dev, ot->st.st_ino, &nm)) != NULL &&
	    r->state == ROOT_READY) {
		mgr_open_finish(r, op);
	} else if (r != NULL) {
		op->next = r->openers;
		r->openers = op;
	} else {
		struct load_task *lt;

		r = root_new(ot->canon, &nm, ot->be, ot->fd, &ot->st);
		ot->fd = -1;
		if (r != NULL)
			r->tiered = ot->tiered;
		if (r == NULL ||
		    (lt = task_new(sizeof *lt, mgr_load_run,
		    mgr_load_done, conn_peer(op->c), conn_id(op->c))) == NULL) {
			root_unref(r);
			conn_reply_error(op->c, op->id, CKPT_ENOMEM,
			    "out of memory");
			conn_unref(op->c);
			policy_free(op->pol);
			ckpt__manager_options__free_unpacked(op->o, NULL);
			free(op);
			goto fail;
		}
		/* The root's first reference belongs to the load task. */
		lt->r = r;
		lt->cleanup = op->cleanup;
		op->cleanup = 0;
		r->busy++;
		r->openers = op;
		worker_submit(&lt->t);
	}
fail:
	if (ot->fd >= 0)
		ot->be->close(ot->fd);
	if (ot->c != NULL)
		conn_unref(ot->c);
	mgr_unref(ot->attach);
	policy_free(ot->pol);
	if (ot->o != NULL)
		ckpt__manager_options__free_unpacked(ot->o, NULL);
	free(ot->path);
	free(ot);
}

static int
mgr_check_options(const Ckpt__OpenManager *om, const struct peer_cred *pc,
    ckd_err *e)
{
	const Ckpt__ManagerOptions *o = om->options;
	size_t i, k;

	if (store_backend_for(om->root, e) == NULL)
		return e->code;
	if (s3acl_check(om->root, pc->uid, e) != 0)
		return e->code;
	if (strlen(om->root) >= PATH_MAX)
		return err_set(e, CKPT_ETOOBIG, "checkpoint directory path too "
		    "long");
	if (o == NULL)
		return 0;
	if (o->step_prefix != NULL && (!store_valid_component(o->step_prefix)
	    || strlen(o->step_prefix) >= sizeof ((struct store_naming *)0)->prefix))
		return err_set(e, CKPT_EINVAL, "invalid step_prefix \"%s\"",
		    o->step_prefix);
	if (o->has_step_format_fixed_length && o->step_format_fixed_length > 20)
		return err_set(e, CKPT_EINVAL, "step_format_fixed_length must be "
		    "at most 20");
	if (o->todelete_subdir != NULL &&
	    !store_valid_component(o->todelete_subdir))
		return err_set(e, CKPT_EINVAL, "invalid todelete_subdir \"%s\"",
		    o->todelete_subdir);
	if (o->n_item_names > CKPT_MAX_ITEMS)
		return err_set(e, CKPT_ETOOBIG, "%zu item names (at most %d)",
		    o->n_item_names, CKPT_MAX_ITEMS);
	for (i = 0; i < o->n_item_names; i++) {
		if (savecheck_item_name(o->item_names[i], e) != 0)
			return e->code;
		/* At most CKPT_MAX_ITEMS: the quadratic scan is bounded. */
		for (k = 0; k < i; k++)
			if (strcmp(o->item_names[k], o->item_names[i]) == 0)
				return err_set(e, CKPT_EINVAL, "duplicate item "
				    "name \"%s\"", o->item_names[i]);
	}
	if (o->root_metadata_json != NULL &&
	    strlen(o->root_metadata_json) > CKPT_MAX_DOC)
		return err_set(e, CKPT_ETOOBIG, "root metadata is larger than "
		    "%u bytes", CKPT_MAX_DOC);
	if (o->root_metadata_json != NULL) {
		json_error_t je;
		json_t *j = json_loads(o->root_metadata_json, JSON_DECODE_ANY,
		    &je);

		if (j == NULL)
			return err_set(e, CKPT_EINVAL, "root metadata is not "
			    "valid JSON: %s", je.text);
		json_decref(j);
	}
	return 0;
}

/* The task that opens (or, for a manager without a root, attaches) the
 * root named path with options o for c's request id; NULL when it could
 * not be made, c then answered. */
static struct open_task *
mgr_open_task(struct conn *c, uint64_t id, const char *path,
    const Ckpt__ManagerOptions *o)
{
	struct open_task *ot;
	ckd_err e;

	memset(&e, 0, sizeof e);
	ot = task_new(sizeof *ot, mgr_open_run, mgr_open_done,
	    conn_peer(c), conn_id(c));
	if (ot != NULL)
		ot->fd = -1;
	if (ot == NULL || (ot->path = strdup(path)) == NULL ||
	    (ot->o = mgr_options_copy(o)) == NULL) {
		if (ot != NULL)
			free(ot->path);
		free(ot);
		conn_reply_error(c, id, CKPT_ENOMEM, "out of memory");
		return NULL;
	}
	if (policy_compile(ot->o, &ot->pol, &e) != 0) {
		conn_reply_err(c, id, &e);
		ckpt__manager_options__free_unpacked(ot->o, NULL);
		free(ot->path);
		free(ot);
		return NULL;
	}
	ot->c = c;
	conn_ref(c);
	ot->id = id;
	return ot;
}

static void
mgr_handle_open(struct conn *c, const Ckpt__Request *req)
{
	Ckpt__OpenManager *om = req->open_manager;
	struct open_task *ot;
	ckd_err e;

	memset(&e, 0, sizeof e);
	if (mgr_check_options(om, conn_peer(c), &e) != 0) {
		conn_reply_err(c, req->id, &e);
		return;
	}
	if ((ot = mgr_open_task(c, req->id, om->root, om->options)) != NULL)
		worker_submit(&ot->t);
}

/* ---- list, should_save --------------------------------------------------------- */

static void
mgr_handle_list(struct conn *c, uint64_t id, struct manager *m)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__ListStepsReply lr = CKPT__LIST_STEPS_REPLY__INIT;
	struct root *r = m->r;
	Ckpt__StepInfo *infos = NULL, **ptrs = NULL;
	struct policy_step *ps = NULL;
	uint64_t *pend = NULL;
	size_t i, k = 0, n = 0, np, cap;
	int pass;
	long best;

	/* Saves in flight too: a client that lost its connection (the
	 * daemon still running) waits for them instead of sending them
	 * again. */
	np = mgr.saves.pending_steps(r, NULL, 0);
	if (np > 0 && (pend = calloc(np, sizeof *pend)) == NULL) {
		conn_reply_error(c, id, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if (np > 0)
		np = mgr.saves.pending_steps(r, pend, np);
	cap = r->nsteps + np;
	if (cap > 0 &&
	    ((infos = calloc(cap, sizeof *infos)) == NULL ||
	    (ptrs = calloc(cap, sizeof *ptrs)) == NULL)) {
		conn_reply_error(c, id, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	/* Committed ascending, then failed ascending, then pending. */
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < r->nsteps; i++) {
			const struct index_step *s = &r->steps[i];
			Ckpt__StepInfo *si = &infos[k];

			if ((pass == 0) != (s->state == INDEX_COMMITTED))
				continue;
			ckpt__step_info__init(si);
			si->has_step = 1;
			si->step = s->step;
			si->has_state = 1;
			si->state = s->state == INDEX_COMMITTED ?
			    CKPT__STEP_STATE__STEP_COMMITTED :
			    s->state == INDEX_INTERRUPTED ?
			    CKPT__STEP_STATE__STEP_INTERRUPTED :
			    CKPT__STEP_STATE__STEP_FAILED;
			si->has_init_ns = 1;
			si->init_ns = s->init_ns;
			if (s->state == INDEX_COMMITTED) {
				si->has_commit_ns = 1;
				si->commit_ns = s->commit_ns;
				si->has_bytes = 1;
				si->bytes = s->bytes;
			}
			si->metrics_json = s->metrics_json;
			si->error = s->error;
			si->name = (char *)s->name;
			if (r->tiered && s->state == INDEX_COMMITTED) {
				const char *err;
				enum tier_state ts = tier_state_of(r->path,
				    s->name, &err);

				si->upload = (char *)tier_state_name(ts);
				if (ts == TIER_FAILED || ts == TIER_RETRY)
					si->upload_error = (char *)err;
			}
			ptrs[k] = si;
			k++;
		}
	}
	for (i = 0; i < np && k < cap; i++) {
		Ckpt__StepInfo *si = &infos[k];
		long at = root_find_step(r, pend[i]);

		if (at >= 0 && r->steps[at].state == INDEX_COMMITTED)
			continue;       /* committed, not yet off the list */
		ckpt__step_info__init(si);
		si->has_step = 1;
		si->step = pend[i];
		si->has_state = 1;
		si->state = CKPT__STEP_STATE__STEP_PENDING;
		ptrs[k] = si;
		k++;
	}
	lr.n_steps = k;
	lr.steps = ptrs;
	lr.has_latest = 1;
	lr.latest = root_latest(r);
	lr.has_best = 1;
	lr.best = lr.latest;
	if (policy_wants_metrics(m->pol)) {
		lr.best = -1;
		if (root_policy_steps(r, m->pol, &ps, NULL, &n) == 0 && n > 0 &&
		    (best = policy_best(m->pol, ps, n)) >= 0)
			lr.best = (int64_t)ps[best].step;
	}
	lr.has_saving = 1;
	lr.saving = r->saves > 0;
	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_LIST_STEPS;
	resp.list_steps = &lr;
	conn_reply(c, &resp, NULL, 0);
out:
	free(ps);
	free(pend);
	free(infos);
	free(ptrs);
}

static void
mgr_handle_should_save(struct conn *c, uint64_t id, struct manager *m,
    const Ckpt__ShouldSave *ss)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__ShouldSaveReply sr = CKPT__SHOULD_SAVE_REPLY__INIT;
	struct root *r = m->r;
	int64_t latest = root_latest(r), pend = mgr.saves.latest_pending(r);
	int64_t now = ss->has_timestamp_ns ? ss->timestamp_ns : now_wall_ns();

	if (pend > latest)
		latest = pend;
	sr.has_should = 1;
	sr.should = policy_should_save(m->pol, ss->step, latest, now,
	    r->last_save_ns, r->saves > 0, ss->preempted ||
	    (preempt_active() && !m->preempt_saved)) != 0;
	if (m->o->process_count > 1) {
		/* A step some rank already saves (or decided not to): the
		 * decision taken once for every rank. */
		const struct steptx *tx = steptx_find(r, m->o->job != NULL ?
		    m->o->job : "", ss->step);

		if (tx != NULL && !tx->closed)
			sr.should = tx->saved != 0;
	}
	sr.has_preempting = 1;
	sr.preempting = preempt_active() != 0;
	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_SHOULD_SAVE;
	resp.should_save = &sr;
	conn_reply(c, &resp, NULL, 0);
}

/* ---- waits ------------------------------------------------------------------- */

static void
mgr_handle_wait_saves(struct conn *c, uint64_t id, struct manager *m,
    const Ckpt__WaitSaves *ws)
{
	struct waiter *w;

	if (m->pending == 0) {
		mgr_reply_wait_saves(c, id, m);
		if (ws->clear_error)
			m->err_code = 0;
		return;
	}
	if ((w = waiter_add(c, id, WAIT_SAVES, ws->timeout_ms)) == NULL) {
		conn_reply_error(c, id, CKPT_ENOMEM, "out of memory");
		return;
	}
	w->m = m;
	mgr_ref(m);
	w->clear_error = ws->clear_error;
}

static void
mgr_handle_wait_step(struct conn *c, uint64_t id, struct manager *m,
    const Ckpt__WaitForStep *wf)
{
	int64_t latest = root_latest(m->r);
	int64_t after = wf->has_after ? wf->after : -1;
	struct waiter *w;

	if (latest > after) {
		mgr_reply_step(c, id, latest);
		return;
	}
	if ((w = waiter_add(c, id, WAIT_STEP, wf->timeout_ms)) == NULL) {
		conn_reply_error(c, id, CKPT_ENOMEM, "out of memory");
		return;
	}
	w->r = m->r;
	root_ref(m->r);
	w->after = after;
}

/* ---- metrics ------------------------------------------------------------------- */

/* Merge client-computed metrics into a committed step's (in memory). */
static void
mgr_handle_set_metrics(struct conn *c, uint64_t id, struct manager *m,
    const Ckpt__SetStepMetrics *sm)
{
	struct root *r = m->r;
	json_t *add = NULL, *cur = NULL;
	char *text;
	long i;

	i = root_find_step(r, sm->step);
	if (i < 0 || r->steps[i].state != INDEX_COMMITTED) {
		conn_reply_error(c, id, CKPT_ENOTFOUND, "no committed step %"
		    PRIu64, sm->step);
		goto out;
	}
	if (sm->metrics_json == NULL || strlen(sm->metrics_json) > (1 << 20) ||
	    (add = json_loads(sm->metrics_json, JSON_REJECT_DUPLICATES,
	    NULL)) == NULL || !json_is_object(add)) {
		conn_reply_error(c, id, CKPT_EINVAL, "metrics are not a JSON "
		    "object");
		goto out;
	}
	if (r->steps[i].metrics_json != NULL)
		cur = json_loads(r->steps[i].metrics_json, 0, NULL);
	if (cur == NULL || !json_is_object(cur)) {
		json_decref(cur);
		cur = json_object();
	}
	if (cur == NULL || json_object_update(cur, add) != 0 ||
	    (text = json_dumps(cur, JSON_COMPACT)) == NULL) {
		conn_reply_error(c, id, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	free(r->steps[i].metrics_json);
	r->steps[i].metrics_json = text;
	mgr_reply_empty(c, id);
out:
	json_decref(cur);
	json_decref(add);
}

/* ---- delete --------------------------------------------------------------------- */

static void
mgr_handle_delete(struct conn *c, uint64_t id, struct manager *m,
    const Ckpt__Delete *d)
{
	struct root *r = m->r;
	long i;

	if (m->o->read_only) {
		mgr_reply_empty(c, id);
		return;
	}
	i = root_find_step(r, d->step);
	if (i < 0 || r->steps[i].state != INDEX_COMMITTED) {
		conn_reply_error(c, id, CKPT_ENOTFOUND, "Requested deleting a "
		    "non-existent step: %" PRIu64 ".", d->step);
		return;
	}
	struct mgr_delete how = { .cred = conn_peer(c), .lane = conn_id(c) };

	if (m->o->enable_background_delete) {
		mgr_delete_step(m, r, (size_t)i, &how);
		mgr_reply_empty(c, id);
	} else {
		how.c = c;
		how.id = id;
		mgr_delete_step(m, r, (size_t)i, &how);
	}
}

/* ---- reload ----------------------------------------------------------------------- */

struct reload_task {
	struct task t;
	struct conn *c;
	uint64_t id;
	struct root *r;
	unsigned tries;
	uint64_t seq0;
	struct index_step *known;       /* shallow: step/state/name only */
	size_t nknown;
	struct index_step *found;
	size_t nfound;
};

static void
mgr_reload_run(struct task *t)
{
	struct reload_task *rt = (struct reload_task *)t;
	struct root *r = rt->r;
	ckd_err ie;
	size_t i, k;
	int fd;

	if (root_open_dir(r, &fd, &t->err) != 0)
		return;
	if (root_scan_disk(r->be, fd, &r->nm, rt->known, rt->nknown,
	    &rt->found, &rt->nfound, NULL, &t->err) != 0) {
		r->be->close(fd);
		return;
	}
	r->be->close(fd);
	/* Keep the index in step with what was found. */
	for (i = 0, k = 0; i < rt->nfound; i++) {
		int inmem = 0;

		while (k < rt->nknown && rt->known[k].step < rt->found[i].step)
			k++;
		inmem = k < rt->nknown && rt->known[k].step == rt->found[i].step
		    && rt->known[k].state == INDEX_COMMITTED;
		if (!inmem && index_put_step(mgr.ix, r->key, &rt->found[i],
		    &ie) != 0)
			log_warn("index: %s", ie.msg);
	}
	for (i = 0, k = 0; i < rt->nknown; i++) {
		if (rt->known[i].state != INDEX_COMMITTED)
			continue;
		while (k < rt->nfound && rt->found[k].step < rt->known[i].step)
			k++;
		if ((k >= rt->nfound || rt->found[k].step != rt->known[i].step)
		    && index_del_step(mgr.ix, r->key, rt->known[i].step,
		    &ie) != 0)
			log_warn("index: %s", ie.msg);
	}
}

static int mgr_reload_submit(struct reload_task *rt);

static void
mgr_reload_done(struct task *t)
{
	struct reload_task *rt = (struct reload_task *)t;
	struct root *r = rt->r;
	size_t i, k;

	if (t->err.code != 0) {
		conn_reply_err(rt->c, rt->id, &t->err);
		goto out;
	}
	if (r->mutations != rt->seq0 && rt->tries < 5) {
		/* The root changed during the scan: scan again. */
		index_steps_free(rt->found, rt->nfound);
		rt->found = NULL;
		rt->nfound = 0;
		free(rt->known);
		rt->known = NULL;
		rt->tries++;
		if (mgr_reload_submit(rt) == 0)
			return;
		conn_reply_error(rt->c, rt->id, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	/* Vanished committed steps that were there before the scan. */
	for (i = r->nsteps; i-- > 0;) {
		const struct index_step *s = &r->steps[i];
		int ondisk = 0;

		if (s->state != INDEX_COMMITTED || r->seq[i] > rt->seq0)
			continue;
		for (k = 0; k < rt->nfound && !ondisk; k++)
			ondisk = rt->found[k].step == s->step;
		if (!ondisk)
			root_remove_step(r, i);
	}
	/* New steps written by someone else. */
	for (k = 0; k < rt->nfound; k++) {
		long j = root_find_step(r, rt->found[k].step);

		if ((j >= 0 && r->steps[j].state == INDEX_COMMITTED) ||
		    root_is_deleting(r, rt->found[k].step) ||
		    mgr.saves.pending_step(r, rt->found[k].step))
			continue;
		if (root_insert_step(r, &rt->found[k]) == 0)
			rt->found[k].metrics_json = rt->found[k].error = NULL;
	}
	mgr_wake_steps(r);
	mgr_reply_empty(rt->c, rt->id);
out:
	index_steps_free(rt->found, rt->nfound);
	free(rt->known);
	conn_unref(rt->c);
	root_unref(r);
	free(rt);
}

static int
mgr_reload_submit(struct reload_task *rt)
{
	struct root *r = rt->r;
	size_t i;

	memset(&rt->t.err, 0, sizeof rt->t.err);
	rt->t.next = NULL;
	rt->seq0 = r->mutations;
	rt->nknown = 0;
	if (r->nsteps > 0 &&
	    (rt->known = calloc(r->nsteps, sizeof *rt->known)) == NULL)
		return CKPT_ENOMEM;
	for (i = 0; i < r->nsteps; i++) {
		rt->known[i] = r->steps[i];
		rt->known[i].metrics_json = NULL;
		rt->known[i].error = NULL;
	}
	rt->nknown = r->nsteps;
	worker_submit(&rt->t);
	return 0;
}

static void
mgr_handle_reload(struct conn *c, uint64_t id, struct manager *m)
{
	struct reload_task *rt;

	rt = task_new(sizeof *rt, mgr_reload_run, mgr_reload_done,
	    conn_peer(c), conn_id(c));
	if (rt == NULL) {
		conn_reply_error(c, id, CKPT_ENOMEM, "out of memory");
		return;
	}
	rt->c = c;
	conn_ref(c);
	rt->id = id;
	rt->r = m->r;
	root_ref(m->r);
	if (mgr_reload_submit(rt) != 0) {
		conn_reply_error(c, id, CKPT_ENOMEM, "out of memory");
		conn_unref(c);
		root_unref(m->r);
		free(rt);
	}
}

void
manager_attach_root(struct conn *c, uint64_t id, struct manager *m)
{
	struct open_task *ot;

	if ((ot = mgr_open_task(c, id, m->rootless, m->o)) == NULL)
		return;
	ot->attach = m;
	mgr_ref(m);
	worker_submit(&ot->t);
}

/* ---- manager.h ------------------------------------------------------------------ */

int
manager_init(struct event_base *base, struct index *ix,
    const struct manager_saves *saves, ckd_err *e)
{
	memset(&mgr, 0, sizeof mgr);
	mgr.base = base;
	mgr.ix = ix;
	mgr.saves = *saves;
	root_init(ix);
	steptx_init(base, ix);
	root_sweep_leftovers();
	return 0;
}

/* ---- request handlers (routed by dispatch.c) -------------------------------- */

void
manager_handle_open(struct conn *c, const Ckpt__Request *req)
{
	mgr_handle_open(c, req);
}

struct manager *
manager_find(struct conn *c, uint64_t req_id, uint64_t id)
{
	return mgr_lookup(c, req_id, id);
}

void
manager_handle_close(struct conn *c, struct manager *m, Ckpt__Request *req)
{
	/* As Orbax's close(): background deletes finish first. */
	if (m->deleting > 0 && m->close_c == NULL) {
		conn_ref(c);
		m->close_c = c;
		m->close_id = req->id;
		mgr_close(m, MGR_END_ASKED);
		return;
	}
	mgr_close(m, MGR_END_ASKED);
	mgr_reply_empty(c, req->id);
}

void
manager_handle_wait_saves(struct conn *c, struct manager *m,
    Ckpt__Request *req)
{
	mgr_handle_wait_saves(c, req->id, m, req->wait_saves);
}

void
manager_handle_list(struct conn *c, struct manager *m, Ckpt__Request *req)
{
	mgr_handle_list(c, req->id, m);
}

void
manager_handle_should_save(struct conn *c, struct manager *m,
    Ckpt__Request *req)
{
	mgr_handle_should_save(c, req->id, m, req->should_save);
}

void
manager_handle_delete(struct conn *c, struct manager *m, Ckpt__Request *req)
{
	mgr_handle_delete(c, req->id, m, req->delete_);
}

void
manager_handle_reload(struct conn *c, struct manager *m, Ckpt__Request *req)
{
	mgr_handle_reload(c, req->id, m);
}

void
manager_handle_wait_step(struct conn *c, struct manager *m,
    Ckpt__Request *req)
{
	mgr_handle_wait_step(c, req->id, m, req->wait_for_step);
}

void
manager_handle_set_metrics(struct conn *c, struct manager *m,
    Ckpt__Request *req)
{
	mgr_handle_set_metrics(c, req->id, m, req->set_step_metrics);
}

struct manager *
manager_first(void)
{
	return mgr.managers;
}

int
manager_conn_busy(const struct conn *c)
{
	const struct manager *m;

	for (m = mgr.managers; m != NULL; m = m->next)
		if (m->c == c && !m->closed)
			return 1;
	return 0;
}

void
manager_conn_closing(struct conn *c)
{
	struct waiter **pp = &mgr.waiters, *w;

	while ((w = *pp) != NULL) {
		if (w->c != c) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		waiter_free(w);
	}
}

void
manager_conn_closed(struct conn *c)
{
	struct manager *m, *next;

	for (m = mgr.managers; m != NULL; m = next) {
		next = m->next;
		if (m->c == c)
			mgr_close(m, MGR_END_LOST);
	}
}

void
manager_stats(struct stats *out)
{
	const struct manager *m;

	for (m = mgr.managers; m != NULL; m = m->next) {
		out->managers++;
		out->trainers += m->saved && !m->closed;
	}
	out->roots = root_count();
	out->saves_interrupted = root_interrupted();
}

void
manager_shutdown(void)
{
	struct waiter *w;

	while ((w = mgr.waiters) != NULL) {
		mgr.waiters = w->next;
		waiter_free(w);
	}
	while (mgr.managers != NULL)
		mgr_close(mgr.managers, MGR_END_SHUTDOWN);
}
