/*
 * manager.c - managers: open/close, saves and their async errors, waits,
 * step listing, metadata, delete, reload, verify.
 *
 * Save path: wait for this manager's previous save (Orbax keeps one in
 * flight per manager) and report its error; lay the array leaves out at
 * 64-byte aligned offsets; copy them into a staging memfd; register the
 * save (so its SaveDone, which may overtake our reading of the reply, is
 * matched); send Save with the fd; the daemon answers once it owns the
 * bytes. With async off, also wait for the SaveDone.
 *
 * Async errors (Orbax's _FinalizeThread.join): the SaveDone of a failed
 * save records code and message in the manager (m->err_code). Each thread
 * is told once, by whichever of ckpt_wait_until_finished,
 * ckpt_check_for_errors, ckpt_save or ckpt_manager_close it calls first
 * (m->err_seen lists the threads told). A save by a thread that was
 * already told proceeds, and clears the error here and in the daemon
 * (WaitSaves clear_error): the new save owns the manager's error slot.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "internal.h"

#define DAEMON_MSG(resp) ((resp)->message != NULL ? (resp)->message : "")

/* ---- save args ---------------------------------------------------------------- */

struct sitem {
	char *name;             /* NULL: the default item */
	ckpt_handler handler;
	const ckpt_tree *tree;
	char *text;             /* JSON / PROTO */
};

struct ckpt_save_args {
	struct sitem *items;
	size_t n;
	int composite;
	char *metrics;
	char *custom;
	int force;
	int64_t ts;
	int preempted;
	int background;
	int cow;
};

static int should_save_fn_at(struct ckpt_manager *, uint64_t, int *);
static int should_save_at(struct ckpt_manager *, uint64_t, int64_t, int,
    int *);
static void early_drop(struct ckpt_manager *);
static int save_decided(ckpt_manager *, uint64_t, const ckpt_save_args *,
    int *);

CKPT_API ckpt_save_args *
ckpt_save_args_new(void)
{
	return calloc(1, sizeof(ckpt_save_args));
}

CKPT_API void
ckpt_save_args_free(ckpt_save_args *a)
{
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < a->n; i++) {
		free(a->items[i].name);
		free(a->items[i].text);
	}
	free(a->items);
	free(a->metrics);
	free(a->custom);
	free(a);
}

static int
add_item(ckpt_save_args *a, const char *name, ckpt_handler h,
    const ckpt_tree *t, const char *text)
{
	struct sitem *ni, *it;
	size_t i;

	/* The name goes to the daemon as given: it alone judges names
	 * (validity, duplicates) and says why it refuses. Only the shape of
	 * this API is checked here: one unnamed (default) item, never mixed
	 * with named ones. */
	for (i = 0; i < a->n; i++) {
		const char *o = a->items[i].name;

		if (o == NULL || name == NULL)
			return CKPT_EINVAL;
	}
	ni = realloc(a->items, (a->n + 1) * sizeof *ni);
	if (ni == NULL)
		return CKPT_ENOMEM;
	a->items = ni;
	it = &a->items[a->n];
	memset(it, 0, sizeof *it);
	if (name != NULL && (it->name = strdup(name)) == NULL)
		return CKPT_ENOMEM;
	if (text != NULL && (it->text = strdup(text)) == NULL) {
		free(it->name);
		return CKPT_ENOMEM;
	}
	it->handler = h;
	it->tree = t;
	a->n++;
	return 0;
}

CKPT_API int
ckpt_save_args_add_tree(ckpt_save_args *a, const char *name,
    ckpt_handler handler, const ckpt_tree *t)
{
	size_t i;

	if (a == NULL || t == NULL || t->n == 0)
		return CKPT_EINVAL;
	if (handler != CKPT_HANDLER_STANDARD && handler != CKPT_HANDLER_PYTREE &&
	    handler != CKPT_HANDLER_ARRAY)
		return CKPT_EINVAL;
	for (i = 0; i < t->n; i++)
		if (t->leaves[i].kind == CKPT_LEAF_TARGET)
			return CKPT_EINVAL;
	return add_item(a, name, handler, t, NULL);
}

static int
valid_json(const char *s, int object)
{
	json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
	int ok = j != NULL && (!object || json_is_object(j));

	json_decref(j);
	return ok;
}

CKPT_API int
ckpt_save_args_add_json(ckpt_save_args *a, const char *name,
    const char *json)
{
	if (a == NULL || json == NULL || !valid_json(json, 0))
		return CKPT_EINVAL;
	return add_item(a, name, CKPT_HANDLER_JSON, NULL, json);
}

CKPT_API int
ckpt_save_args_add_proto(ckpt_save_args *a, const char *name,
    const char *text)
{
	if (a == NULL || text == NULL)
		return CKPT_EINVAL;
	return add_item(a, name, CKPT_HANDLER_PROTO, NULL, text);
}

CKPT_API int
ckpt_save_args_set_composite(ckpt_save_args *a, int on)
{
	if (a == NULL)
		return CKPT_EINVAL;
	a->composite = on != 0;
	return 0;
}

static int
set_json_field(char **field, const char *json)
{
	char *s = NULL;

	if (json != NULL) {
		if (!valid_json(json, 1))
			return CKPT_EINVAL;
		if ((s = strdup(json)) == NULL)
			return CKPT_ENOMEM;
	}
	free(*field);
	*field = s;
	return 0;
}

CKPT_API int
ckpt_save_args_set_metrics(ckpt_save_args *a, const char *json)
{
	return a == NULL ? CKPT_EINVAL : set_json_field(&a->metrics, json);
}

CKPT_API int
ckpt_save_args_set_custom_metadata(ckpt_save_args *a, const char *json)
{
	return a == NULL ? CKPT_EINVAL : set_json_field(&a->custom, json);
}

CKPT_API int
ckpt_save_args_set_force(ckpt_save_args *a, int on)
{
	if (a == NULL)
		return CKPT_EINVAL;
	a->force = on != 0;
	return 0;
}

CKPT_API int
ckpt_save_args_set_timestamp(ckpt_save_args *a, int64_t ns)
{
	if (a == NULL || ns < 0)
		return CKPT_EINVAL;
	a->ts = ns;
	return 0;
}

CKPT_API int
ckpt_save_args_set_background(ckpt_save_args *a, int on)
{
	if (a == NULL)
		return CKPT_EINVAL;
	a->background = on != 0;
	return 0;
}

CKPT_API int
ckpt_save_args_set_cow(ckpt_save_args *a, int on)
{
	if (a == NULL)
		return CKPT_EINVAL;
	a->cow = on != 0;
	return 0;
}

CKPT_API int
ckpt_cow_available(void)
{
	return cow_available();
}

CKPT_API size_t
ckpt_manager_cow_bytes(const ckpt_manager *m)
{
	return m != NULL ? m->cow_bytes : 0;
}

CKPT_API int
ckpt_save_args_set_preempted(ckpt_save_args *a, int on)
{
	if (a == NULL)
		return CKPT_EINVAL;
	a->preempted = on != 0;
	return 0;
}

/* ---- managers ------------------------------------------------------------------- */

#define MGR_CHECK(m) do {                                               \
	if ((m) == NULL)                                                \
		return CKPT_EINVAL;                                     \
	if ((m)->closed)                                                \
		return cl_fail((m)->c, (m), CKPT_ECLOSED,               \
		    "manager is closed");                               \
} while (0)

static int
unexpected(struct ckpt_manager *m, Ckpt__Response *resp, const char *what)
{
	ckpt__response__free_unpacked(resp, NULL);
	return cl_fail(m->c, m, CKPT_EPROTO, "unexpected reply to %s", what);
}

CKPT_API int
ckpt_manager_open(ckpt_client *c, const char *root, const ckpt_options *o,
    ckpt_manager **out)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__OpenManager om = CKPT__OPEN_MANAGER__INIT;
	Ckpt__ManagerOptions pb = CKPT__MANAGER_OPTIONS__INIT;
	Ckpt__Response *resp;
	struct ckpt_manager *m;
	char *abs = NULL, err[CKPT_ERRLEN];
	const char *job;
	int r;

	if (out != NULL)
		*out = NULL;
	if (c == NULL || out == NULL)
		return CKPT_EINVAL;
	if (root == NULL || *root == '\0')
		return cl_fail(c, NULL, CKPT_EINVAL, "no checkpoint directory given");
	if (o != NULL)
		pb = o->pb;     /* shallow: only the job may be filled in below */
	if (opts_check_processes(&pb, err, sizeof err) != 0)
		return cl_fail(c, NULL, CKPT_EINVAL, "%s", err);
	/* the parts of a distributed step are bound by (root, job, step):
	 * without an explicit job, the launcher's run id tells jobs apart */
	if (pb.job == NULL && pb.has_process_count && pb.process_count > 1) {
		if ((job = getenv("CKPT_JOB")) == NULL || *job == '\0')
			job = getenv("TORCHELASTIC_RUN_ID");
		if (job != NULL && *job != '\0' && strlen(job) <= CKPT_MAX_JOB)
			pb.job = (char *)job;
	}
	/* A path is made absolute here; a "scheme://" root goes as it is
	 * (the daemon keeps s3:// roots and names any scheme it does not). */
	if (root[0] == '/' || strstr(root, "://") != NULL) {
		abs = strdup(root);
	} else {
		char *cwd = getcwd(NULL, 0);
		if (cwd == NULL)
			return cl_fail(c, NULL, CKPT_EIO, "getcwd: %s",
			    strerror(errno));
		if (asprintf(&abs, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd,
		    root) < 0)
			abs = NULL;
		free(cwd);
	}
	if (abs == NULL)
		return cl_fail(c, NULL, CKPT_ENOMEM, "out of memory");
	om.root = abs;
	om.options = &pb;
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = &om;
	r = cl_rpc(c, NULL, &req, &resp);
	if (r != 0) {
		free(abs);
		return r;
	}
	if (resp->body_case != CKPT__RESPONSE__BODY_OPEN_MANAGER) {
		free(abs);
		ckpt__response__free_unpacked(resp, NULL);
		return cl_fail(c, NULL, CKPT_EPROTO, "unexpected reply to open");
	}
	if ((m = calloc(1, sizeof *m)) == NULL) {
		free(abs);
		ckpt__response__free_unpacked(resp, NULL);
		return cl_fail(c, NULL, CKPT_ENOMEM, "out of memory");
	}
	m->c = c;
	m->id = resp->open_manager->manager;
	if (resp->open_manager->root != NULL && *resp->open_manager->root != '\0') {
		m->root = strdup(resp->open_manager->root);
		free(abs);
	} else {
		m->root = abs;
	}
	ckpt__response__free_unpacked(resp, NULL);
	m->read_only = o != NULL && o->pb.has_read_only && o->pb.read_only;
	m->async = !(o != NULL && o->pb.has_enable_async && !o->pb.enable_async);
	if (o != NULL) {
		m->should_save_fn = o->should_save_fn;
		m->should_save_arg = o->should_save_arg;
	}
	m->rank = pb.has_process_index ? pb.process_index : 0;
	m->nproc = pb.has_process_count ? pb.process_count : 1;
	m->primary = pb.has_primary_host ? pb.primary_host : 0;
	errbox_init(&m->err);
	om.root = m->root;              /* re-opened as the daemon named it */
	if (m->root == NULL || cl_remember_open(m, &om) != 0) {
		cl_free_manager(m);
		return cl_fail(c, NULL, CKPT_ENOMEM, "out of memory");
	}
	pthread_mutex_lock(&c->lock);
	m->next = c->managers;
	c->managers = m;
	pthread_mutex_unlock(&c->lock);
	*out = m;
	return 0;
}

int
mgr_wait_local(struct ckpt_manager *m)
{
	ckpt_client *c = m->c;

	cl_join_bg(m);
	pthread_mutex_lock(&c->lock);
	while (m->saving > 0 && !c->broken)
		pthread_cond_wait(&c->save_cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* WaitSaves; *code/msg: the daemon's pending async error. */
static int
wait_saves(struct ckpt_manager *m, int clear, int *code, char *msg,
    size_t len)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__WaitSaves ws = CKPT__WAIT_SAVES__INIT;
	Ckpt__Response *resp;
	int r;

	ws.has_manager = 1;
	ws.manager = m->id;
	ws.has_clear_error = 1;
	ws.clear_error = clear != 0;
	req.op_case = CKPT__REQUEST__OP_WAIT_SAVES;
	req.wait_saves = &ws;
	if ((r = cl_rpc(m->c, m, &req, &resp)) != 0)
		return r;
	*code = 0;
	msg[0] = '\0';
	if (resp->body_case == CKPT__RESPONSE__BODY_WAIT_SAVES &&
	    resp->wait_saves->code != 0) {
		*code = resp->wait_saves->code;
		if (*code > 0 || *code < CKPT_ECODE_MIN)
			*code = CKPT_EINTERNAL;
		snprintf(msg, len, "%s", resp->wait_saves->message != NULL &&
		    *resp->wait_saves->message != '\0' ?
		    resp->wait_saves->message : ckpt_strerror(*code));
	}
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

/* A number naming the calling thread for its lifetime (pthread_t values
 * are reused by later threads; these never are). */
static uint64_t
thread_token(void)
{
	static _Atomic uint64_t next;
	static _Thread_local uint64_t mine;

	if (mine == 0)
		mine = ++next;
	return mine;
}

/*
 * The pending error for the calling thread (c->lock held): its code and
 * message when there is one this thread was not yet told, and the thread
 * is then recorded as told. 0 when none (or already told).
 */
static int
err_take_locked(struct ckpt_manager *m, char *msg, size_t len)
{
	uint64_t self = thread_token();
	size_t i;

	if (m->err_code == 0)
		return 0;
	for (i = 0; i < m->n_err_seen; i++)
		if (m->err_seen[i] == self)
			return 0;
	if (m->n_err_seen == m->cap_err_seen) {
		size_t cap = m->cap_err_seen ? m->cap_err_seen * 2 : 4;
		uint64_t *v = realloc(m->err_seen, cap * sizeof *v);

		if (v == NULL)          /* told again later: never lost */
			goto out;
		m->err_seen = v;
		m->cap_err_seen = cap;
	}
	m->err_seen[m->n_err_seen++] = self;
out:
	snprintf(msg, len, "%s", m->err_msg);
	return m->err_code;
}

static int
err_take(struct ckpt_manager *m, char *msg, size_t len)
{
	int code;

	pthread_mutex_lock(&m->c->lock);
	code = err_take_locked(m, msg, len);
	pthread_mutex_unlock(&m->c->lock);
	return code;
}

/* Forget the error (a new save starts), here and in the daemon. */
static int
err_clear(struct ckpt_manager *m)
{
	char msg[CKPT_ERRLEN];
	int code, r;

	if ((r = wait_saves(m, 1, &code, msg, sizeof msg)) != 0)
		return r;
	pthread_mutex_lock(&m->c->lock);
	m->err_code = 0;
	m->err_msg[0] = '\0';
	m->err_nosave = 0;
	m->n_err_seen = 0;
	pthread_mutex_unlock(&m->c->lock);
	return 0;
}

/*
 * Wait for the previous save. Its error, when this thread was not yet
 * told, fails this save; else a pending error is cleared and the save
 * proceeds.
 */
static int
take_previous_error(struct ckpt_manager *m)
{
	ckpt_client *c = m->c;
	char msg[CKPT_ERRLEN];
	int code, pending;

	mgr_wait_local(m);
	pthread_mutex_lock(&c->lock);
	code = err_take_locked(m, msg, sizeof msg);
	pending = m->err_code != 0;
	pthread_mutex_unlock(&c->lock);
	if (code != 0)
		return cl_fail(c, m, code, "%s", msg);
	return pending ? err_clear(m) : 0;
}

CKPT_API int
ckpt_manager_close(ckpt_manager *m)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__CloseManager cm = CKPT__CLOSE_MANAGER__INIT;
	Ckpt__Response *resp;
	struct ckpt_manager **pp;
	ckpt_client *c;
	char msg[CKPT_ERRLEN] = "";
	int code = 0;

	if (m == NULL)
		return 0;
	c = m->c;
	early_drop(m);
	mgr_wait_local(m);
	pthread_mutex_lock(&c->lock);
	code = err_take_locked(m, msg, sizeof msg);
	m->closed = 1;
	for (pp = &c->managers; *pp != NULL; pp = &(*pp)->next)
		if (*pp == m) {
			*pp = m->next;
			break;
		}
	pthread_mutex_unlock(&c->lock);
	cm.has_manager = 1;
	cm.manager = m->id;
	req.op_case = CKPT__REQUEST__OP_CLOSE_MANAGER;
	req.close_manager = &cm;
	if (cl_rpc(c, NULL, &req, &resp) == 0)
		ckpt__response__free_unpacked(resp, NULL);
	cl_free_manager(m);
	if (code != 0)
		return cl_fail(c, NULL, code, "%s", msg);
	return 0;
}

CKPT_API const char *
ckpt_manager_errmsg(const ckpt_manager *m)
{
	const char *s;

	if (m == NULL)
		return "no manager";
	s = errbox_get(&m->err);
	return s;
}

CKPT_API const char *
ckpt_manager_directory(const ckpt_manager *m)
{
	return m != NULL ? m->root : NULL;
}

/* ---- save ------------------------------------------------------------------------ */

struct savebuild {
	Ckpt__Item *items;
	Ckpt__Item **itemp;
	Ckpt__Leaf *leaves;
	Ckpt__Leaf **leafp;
	Ckpt__PathElem *elems;
	Ckpt__PathElem **elemp;
	uint64_t *shapes;
	struct copyseg *segs;
	size_t nseg;
	size_t total;
};

static void
savebuild_free(struct savebuild *b)
{
	free(b->items);
	free(b->itemp);
	free(b->leaves);
	free(b->leafp);
	free(b->elems);
	free(b->elemp);
	free(b->shapes);
	free(b->segs);
}

/*
 * replicated: the manager is one rank of a distributed job and not its
 * primary host, so whole array leaves (replicated on every rank) are sent
 * as dtype and shape only, marked replicated_elsewhere, with no bytes.
 */
static int
build_save(const ckpt_save_args *a, Ckpt__Save *sv, struct savebuild *b,
    int replicated)
{
	size_t i, j, k, nleaves = 0, nelems = 0, ndims = 0, li = 0, ei = 0,
	    di = 0, off = 0, nsegs = 0;

	for (i = 0; i < a->n; i++) {
		const ckpt_tree *t = a->items[i].tree;
		if (t == NULL)
			continue;
		nleaves += t->n;
		for (j = 0; j < t->n; j++) {
			nelems += t->leaves[j].depth;
			/* pieces: shape, global shape and offsets */
			ndims += (size_t)t->leaves[j].ndim *
			    (t->leaves[j].piece != NULL ? 3 : 1);
			if (t->leaves[j].npieces > 1)
				nsegs += t->leaves[j].npieces - 1;
		}
	}
	b->items = calloc(a->n, sizeof *b->items);
	b->itemp = calloc(a->n, sizeof *b->itemp);
	b->leaves = calloc(nleaves + 1, sizeof *b->leaves);
	b->leafp = calloc(nleaves + 1, sizeof *b->leafp);
	b->elems = calloc(nelems + 1, sizeof *b->elems);
	b->elemp = calloc(nelems + 1, sizeof *b->elemp);
	b->shapes = calloc(ndims + 1, sizeof *b->shapes);
	if (nsegs > SIZE_MAX - nleaves - 1)
		return CKPT_ENOMEM;
	b->segs = calloc(nleaves + nsegs + 1, sizeof *b->segs);
	if (b->items == NULL || b->itemp == NULL || b->leaves == NULL ||
	    b->leafp == NULL || b->elems == NULL || b->elemp == NULL ||
	    b->shapes == NULL || b->segs == NULL)
		return CKPT_ENOMEM;
	for (i = 0; i < a->n; i++) {
		const struct sitem *si = &a->items[i];
		Ckpt__Item *it = &b->items[i];
		const ckpt_tree *t = si->tree;

		ckpt__item__init(it);
		b->itemp[i] = it;
		it->name = si->name != NULL ? si->name : (char *)"default";
		it->has_handler = 1;
		it->handler = (Ckpt__Handler)si->handler;
		if (t == NULL) {
			it->json = si->text;
			continue;
		}
		it->leaves = &b->leafp[li];
		it->n_leaves = t->n;
		for (j = 0; j < t->n; j++, li++) {
			const struct tleaf *tl = &t->leaves[j];
			Ckpt__Leaf *lf = &b->leaves[li];

			ckpt__leaf__init(lf);
			b->leafp[li] = lf;
			lf->path = &b->elemp[ei];
			lf->n_path = tl->depth;
			for (k = 0; k < tl->depth; k++, ei++) {
				Ckpt__PathElem *pe = &b->elems[ei];
				ckpt__path_elem__init(pe);
				b->elemp[ei] = pe;
				pe->has_kind = 1;
				pe->kind = (Ckpt__KeyKind)tl->path[k].kind;
				if (tl->path[k].kind == CKPT_KEY_DICT) {
					pe->key = (char *)tl->path[k].key;
				} else {
					pe->has_index = 1;
					pe->index = tl->path[k].index;
				}
			}
			lf->has_kind = 1;
			lf->kind = (Ckpt__LeafKind)tl->kind;
			if (tl->tag[0] != '\0')
				lf->tag = (char *)tl->tag;
			switch (tl->kind) {
			case CKPT_LEAF_ARRAY:
				lf->has_dtype = 1;
				lf->dtype = (Ckpt__Dtype)tl->dtype;
				lf->shape = &b->shapes[di];
				lf->n_shape = (size_t)tl->ndim;
				for (k = 0; k < (size_t)tl->ndim; k++)
					b->shapes[di++] = (uint64_t)tl->shape[k];
				if (tl->piece != NULL) {
					lf->global_shape = &b->shapes[di];
					lf->n_global_shape = (size_t)tl->ndim;
					for (k = 0; k < 2 * (size_t)tl->ndim; k++)
						b->shapes[di++] =
						    (uint64_t)tl->piece[k];
					lf->piece_offsets =
					    lf->global_shape + tl->ndim;
					lf->n_piece_offsets = (size_t)tl->ndim;
				} else if (replicated) {
					lf->has_replicated_elsewhere = 1;
					lf->replicated_elsewhere = 1;
					break;
				}
				off = (off + CKPT_ALIGN - 1) & ~(size_t)(CKPT_ALIGN - 1);
				lf->has_offset = 1;
				lf->offset = off;
				lf->has_nbytes = 1;
				lf->nbytes = tl->nbytes;
				for (k = 0; k < tl->npieces; k++) {
					b->segs[b->nseg].off = off +
					    (size_t)tl->pieces[k].offset;
					b->segs[b->nseg].src = tl->pieces[k].data;
					b->segs[b->nseg].n = tl->pieces[k].nbytes;
					b->nseg++;
				}
				if (tl->pieces == NULL && tl->nbytes > 0) {
					b->segs[b->nseg].off = off;
					b->segs[b->nseg].src = tl->data;
					b->segs[b->nseg].n = tl->nbytes;
					b->nseg++;
				}
				off += tl->nbytes;
				break;
			case CKPT_LEAF_INT:
				lf->has_int_value = 1;
				lf->int_value = tl->i;
				break;
			case CKPT_LEAF_FLOAT:
				lf->has_float_value = 1;
				lf->float_value = tl->f;
				break;
			case CKPT_LEAF_BOOL:
				lf->has_bool_value = 1;
				lf->bool_value = tl->b != 0;
				break;
			case CKPT_LEAF_STR:
				lf->str_value = tl->s;
				break;
			default:
				break;
			}
		}
	}
	b->total = off;
	sv->items = b->itemp;
	sv->n_items = a->n;
	return 0;
}

static void
inflight_drop(ckpt_client *c, struct inflight *s, int release_buf)
{
	struct inflight **pp;

	/* c->lock held */
	if (!s->done) {
		s->done = 1;
		if (s->mgr->saving > 0)
			s->mgr->saving--;
		if (release_buf && s->buf != NULL) {
			staging_release(c, s->buf);
			s->buf = NULL;
		}
	}
	for (pp = &c->saves; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	free(s->save_pb);       /* kept by cl_call for a re-send */
	free(s);
	pthread_cond_broadcast(&c->save_cond);
}

/*
 * Send the Save of a filled staging buffer, which the save owns from here,
 * and settle the reply: 0 with *saved, or a code with the message set.
 */
static int
save_send(struct ckpt_manager *m, Ckpt__Save *sv, struct stagebuf *buf,
    int *saved)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Response *resp = NULL;
	ckpt_client *c = m->c;
	struct inflight *s;
	int r, accepted, fd;

	*saved = 0;
	if ((s = calloc(1, sizeof *s)) == NULL) {
		pthread_mutex_lock(&c->lock);
		staging_release(c, buf);
		pthread_mutex_unlock(&c->lock);
		return cl_fail(c, m, CKPT_ENOMEM, "out of memory");
	}
	s->mgr = m;
	s->buf = buf;
	s->held = 1;
	fd = buf->fd;
	pthread_mutex_lock(&c->lock);
	s->id = ++c->next_id;
	s->next = c->saves;
	c->saves = s;
	m->saving++;
	pthread_mutex_unlock(&c->lock);

	req.id = s->id;
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = sv;
	r = cl_call(c, m, &req, &fd, 1, &resp, NULL, NULL);
	accepted = r == 0 && resp->code == 0 &&
	    resp->body_case == CKPT__RESPONSE__BODY_SAVE &&
	    resp->save->saved;
	if (r == 0 && resp->code != 0) {
		r = resp->code;
		if (r > 0 || r < CKPT_ECODE_MIN)
			r = CKPT_EINTERNAL;
		/* The answer tells this step's failure that came before as
		 * the async error of a late rank: told once, here. */
		pthread_mutex_lock(&c->lock);
		if (m->err_nosave && m->err_code != 0 &&
		    m->err_nosave_step == sv->step) {
			m->err_code = 0;
			m->err_nosave = 0;
			m->n_err_seen = 0;
		}
		pthread_mutex_unlock(&c->lock);
		cl_fail(c, m, r, "%s", *DAEMON_MSG(resp) != '\0' ?
		    DAEMON_MSG(resp) : ckpt_strerror(r));
	}
	if (resp != NULL)
		ckpt__response__free_unpacked(resp, NULL);
	pthread_mutex_lock(&c->lock);
	if (!accepted) {
		/* no SaveDone will come (unless the connection broke,
		 * which finished the record already) */
		inflight_drop(c, s, 1);
		s = NULL;
	} else if (m->async) {
		s->held = 0;
		if (s->done)
			inflight_reap(c);
		s = NULL;
	} else {
		while (!s->done)
			pthread_cond_wait(&c->save_cond, &c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	if (r != 0)
		return r;
	*saved = accepted;
	if (s != NULL) {
		/* synchronous save: its outcome is the result */
		int code = s->code;
		char msg[CKPT_ERRLEN];

		snprintf(msg, sizeof msg, "%s", s->msg);
		pthread_mutex_lock(&c->lock);
		s->held = 0;
		inflight_reap(c);
		pthread_mutex_unlock(&c->lock);
		if (code != 0) {
			/* consumed here: clear it in the daemon and locally */
			(void)err_clear(m);
			*saved = 0;
			r = cl_fail(c, m, code, "%s", msg[0] != '\0' ? msg :
			    ckpt_strerror(code));
		}
	}
	return r;
}

/* ---- background saves ------------------------------------------------------------ */

/* What the thread of a background save needs once ckpt_save returned. */
struct bgsave {
	struct ckpt_manager *m;
	struct stagebuf *buf;
	struct copyseg *segs;   /* into the caller's buffers */
	size_t nseg;
	struct cowsnap *snap;   /* or a snapshot to finish */
	uint8_t *pb;            /* the packed Save */
	size_t len;
};

static void
bg_free(struct bgsave *j)
{
	free(j->segs);
	free(j->pb);
	free(j);
}

/* Copy, then hand the save to the daemon; a failure becomes the manager's
 * async error, reported once to each thread as a failed SaveDone is. */
static void *
bg_main(void *arg)
{
	struct bgsave *j = arg;
	struct ckpt_manager *m = j->m;
	ckpt_client *c = m->c;
	Ckpt__Save *sv;
	int r, saved;

	if (j->snap != NULL)
		cow_finish(j->snap);
	else
		staging_copy(j->buf->map, j->segs, j->nseg);
	if ((sv = ckpt__save__unpack(NULL, j->len, j->pb)) == NULL) {
		pthread_mutex_lock(&c->lock);
		staging_release(c, j->buf);
		pthread_mutex_unlock(&c->lock);
		r = cl_fail(c, m, CKPT_ENOMEM, "out of memory");
	} else {
		r = save_send(m, sv, j->buf, &saved);
		ckpt__save__free_unpacked(sv, NULL);
	}
	pthread_mutex_lock(&c->lock);
	if (r != 0) {
		m->err_code = r;
		m->err_nosave = 0;
		snprintf(m->err_msg, sizeof m->err_msg, "%s",
		    ckpt_manager_errmsg(m));
		m->n_err_seen = 0;
	}
	m->bg_done = 1;
	pthread_cond_broadcast(&c->save_cond);
	pthread_mutex_unlock(&c->lock);
	bg_free(j);
	return NULL;
}

/* Start the background copy of b into buf; on failure (nothing started)
 * the caller copies and sends itself. */
static int
bg_start(struct ckpt_manager *m, Ckpt__Save *sv, struct savebuild *b,
    struct stagebuf *buf, struct cowsnap *snap)
{
	ckpt_client *c = m->c;
	struct bgsave *j;
	int r;

	if ((j = calloc(1, sizeof *j)) == NULL)
		return CKPT_ENOMEM;
	j->m = m;
	j->buf = buf;
	j->len = ckpt__save__get_packed_size(sv);
	if ((j->pb = malloc(j->len > 0 ? j->len : 1)) == NULL) {
		bg_free(j);
		return CKPT_ENOMEM;
	}
	ckpt__save__pack(sv, j->pb);
	j->snap = snap;
	if (snap == NULL) {
		j->segs = b->segs;
		j->nseg = b->nseg;
	}
	pthread_mutex_lock(&c->lock);
	r = pthread_create(&m->bg_thread, NULL, bg_main, j);
	if (r == 0) {
		m->bg_live = 1;
		m->bg_done = 0;
		if (snap == NULL) {
			b->segs = NULL;         /* the thread's now */
			b->nseg = 0;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (r != 0) {
		j->segs = NULL;
		bg_free(j);
		return CKPT_ENOMEM;
	}
	return 0;
}

/* ---- the save decision, asked early ------------------------------------------------ */

static Ckpt__Request *
should_save_req(struct ckpt_manager *m, uint64_t step, int64_t ts,
    int preempted, Ckpt__Request *req, Ckpt__ShouldSave *ss)
{
	ss->has_manager = 1;
	ss->manager = m->id;
	ss->has_step = 1;
	ss->step = step;
	if (ts != 0) {
		ss->has_timestamp_ns = 1;
		ss->timestamp_ns = ts;
	}
	if (preempted) {
		ss->has_preempted = 1;
		ss->preempted = 1;
	}
	req->op_case = CKPT__REQUEST__OP_SHOULD_SAVE;
	req->should_save = ss;
	return req;
}

/* Wait for an early request's answer and drop it. */
static void
early_discard(struct ckpt_manager *m, struct pending *p)
{
	Ckpt__Response *resp;

	if (p != NULL && cl_answer(m->c, NULL, p, &resp) == 0)
		ckpt__response__free_unpacked(resp, NULL);
}

/* Take the early request and what it asked (under c->lock: a save and
 * close may race), or NULL. */
static struct pending *
early_take(struct ckpt_manager *m, uint64_t *step, int64_t *ts)
{
	struct pending *p;

	pthread_mutex_lock(&m->c->lock);
	p = m->early;
	m->early = NULL;
	*step = m->early_step;
	*ts = m->early_ts;
	pthread_mutex_unlock(&m->c->lock);
	return p;
}

CKPT_API int
ckpt_save_ask_early(ckpt_manager *m, uint64_t step, int64_t timestamp_ns)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__ShouldSave ss = CKPT__SHOULD_SAVE__INIT;
	struct pending *p, *old;

	MGR_CHECK(m);
	early_drop(m);
	if (m->should_save_fn != NULL || m->read_only || !m->async)
		return 0;
	/* the previous save reaches the daemon before anything is decided */
	cl_join_bg(m);
	p = cl_ask(m->c, m, should_save_req(m, step, timestamp_ns, 0, &req,
	    &ss));
	if (p == NULL)
		return 0;       /* the save asks */
	pthread_mutex_lock(&m->c->lock);
	old = m->early;
	m->early = p;
	m->early_step = step;
	m->early_ts = timestamp_ns;
	pthread_mutex_unlock(&m->c->lock);
	early_discard(m, old);
	return 0;
}

/* Forget the early decision, if any (its answer is read and dropped). */
static void
early_drop(struct ckpt_manager *m)
{
	uint64_t step;
	int64_t ts;

	early_discard(m, early_take(m, &step, &ts));
}

/* should_save_at, answered by the early request when it asked the same. */
static int
decide(struct ckpt_manager *m, uint64_t step, int64_t ts, int preempted,
    int *out)
{
	Ckpt__Response *resp;
	uint64_t estep;
	int64_t ets;
	struct pending *p = early_take(m, &estep, &ets);
	int r;

	if (p != NULL && estep == step && ets == ts && !preempted) {
		r = cl_answer(m->c, m, p, &resp);
		if (r == 0 && resp->body_case != CKPT__RESPONSE__BODY_SHOULD_SAVE)
			return unexpected(m, resp, "should_save");
		if (r == 0) {
			*out = resp->should_save->should != 0;
			ckpt__response__free_unpacked(resp, NULL);
			return 0;
		}
		if (r != CKPT_ECONN)
			return r;
		/* lost with the connection: ask on the new one */
	} else {
		early_discard(m, p);
	}
	return should_save_at(m, step, ts, preempted, out);
}

CKPT_API int
ckpt_save(ckpt_manager *m, uint64_t step, const ckpt_save_args *a,
    int *saved)
{
	int r;

	MGR_CHECK(m);
	r = save_decided(m, step, a, saved);
	early_drop(m);          /* a save that did not need it */
	return r;
}

static int
save_decided(ckpt_manager *m, uint64_t step, const ckpt_save_args *a,
    int *saved)
{
	Ckpt__Save sv = CKPT__SAVE__INIT;
	struct savebuild b = { 0 };
	struct stagebuf *buf = NULL;
	struct cowsnap *snap = NULL;
	struct copyseg *rest = NULL;
	size_t nrest = 0, cow_n;
	ckpt_client *c;
	char err[CKPT_ERRLEN];
	int r, composite = 0, force, bg, cow, accepted = 0;
	size_t i;

	if (saved != NULL)
		*saved = 0;
	MGR_CHECK(m);
	c = m->c;
	if (a == NULL || a->n == 0)
		return cl_fail(c, m, CKPT_EINVAL, "Must provide `args` for `save`.");
	for (i = 0; i < a->n; i++)
		if (a->items[i].name != NULL)
			composite = 1;
	if (a->composite && !composite)
		return cl_fail(c, m, CKPT_EINVAL, "Cannot provide `args` of type "
		    "`Composite` when dealing with a single, unnamed (default) "
		    "checkpointable object.");
	composite |= a->composite;
	/* An empty tree item is refused by the daemon ("Found empty item."). */
	/* a background save still copying is not yet known to the daemon:
	 * let it get there before anything is decided */
	cl_join_bg(m);
	/* a forced save keeps its "already exists" error synchronous */
	bg = a->background && m->async && !m->read_only && !a->force;
	/* a copy-on-write snapshot: copied in the background as well */
	cow = !bg && a->cow && m->async && !m->read_only && !a->force &&
	    cow_available();
	bg |= cow;
	m->cow_bytes = 0;

	/* Orbax decides first (should_save sees the save in flight, e.g.
	 * ContinuousCheckpointingPolicy), then waits for the previous save. */
	force = a->force;
	if (!force && m->should_save_fn != NULL) {
		int want;

		if ((r = should_save_fn_at(m, step, &want)) != 0)
			return r;
		if (!want)
			return 0;
		force = 1;      /* decided here: the daemon's policy is bypassed */
	}
	pthread_mutex_lock(&c->lock);
	r = m->err_code != 0;
	pthread_mutex_unlock(&c->lock);
	/* ... and a step the policy skips returns False before a pending
	 * error is raised (Orbax's save: should_save, then
	 * wait_until_finished). A background save needs the answer now. */
	if (!force && (bg || r || ckpt_is_saving_in_progress(m))) {
		int want = 1;

		if ((r = decide(m, step, a->ts, a->preempted, &want)) != 0)
			return r;
		if (!want)
			return 0;
		if (bg)
			force = 1;      /* decided: the Save follows later */
	}
	if ((r = take_previous_error(m)) != 0)
		return r;

	if ((r = build_save(a, &sv, &b, m->nproc > 1 &&
	    m->rank != m->primary)) != 0) {
		r = cl_fail(c, m, r, "out of memory");
		goto out;
	}
	sv.has_manager = 1;
	sv.manager = m->id;
	sv.has_step = 1;
	sv.step = step;
	sv.metrics_json = a->metrics;
	sv.custom_metadata_json = a->custom;
	sv.has_force = 1;
	sv.force = force != 0;
	sv.has_preempted = a->preempted != 0;
	sv.preempted = a->preempted != 0;
	sv.has_timestamp_ns = a->ts != 0;
	sv.timestamp_ns = a->ts;
	sv.has_composite = 1;
	sv.composite = composite != 0;
	pthread_mutex_lock(&c->lock);
	r = staging_acquire(c, b.total, &buf, err, sizeof err);
	pthread_mutex_unlock(&c->lock);
	if (r != 0) {
		r = cl_fail(c, m, r, "%s", err);
		goto out;
	}
	if (cow && (rest = malloc((b.nseg + 1) * sizeof *rest)) != NULL) {
		/* protect the large buffers, copy the others now */
		cow_begin(c, buf->map, b.segs, b.nseg, &snap, rest, &nrest);
		staging_copy(buf->map, rest, nrest);
		/* the snapshot is the thread's once started: it may end and
		 * unmap it before bg_start returns */
		cow_n = cow_bytes(snap);
		if (snap != NULL && bg_start(m, &sv, &b, buf, snap) == 0) {
			m->cow_bytes = cow_n;
			accepted = 1;
			goto out;
		}
		if (snap != NULL)
			cow_finish(snap);       /* copies the rest */
		r = save_send(m, &sv, buf, &accepted);
		goto out;
	}
	if (bg && !cow && bg_start(m, &sv, &b, buf, NULL) == 0) {
		accepted = 1;   /* the policy took it; errors come async */
		goto out;
	}
	staging_copy(buf->map, b.segs, b.nseg);
	r = save_send(m, &sv, buf, &accepted);
out:
	if (r == 0 && saved != NULL)
		*saved = accepted;
	free(rest);
	savebuild_free(&b);
	return r;
}

CKPT_API int
ckpt_wait_until_finished(ckpt_manager *m)
{
	char msg[CKPT_ERRLEN];
	int code, r;

	MGR_CHECK(m);
	cl_join_bg(m);
	if ((r = wait_saves(m, 0, &code, msg, sizeof msg)) != 0)
		return r;
	mgr_wait_local(m);
	if ((code = err_take(m, msg, sizeof msg)) != 0)
		return cl_fail(m->c, m, code, "%s", msg);
	return 0;
}

CKPT_API int
ckpt_check_for_errors(ckpt_manager *m)
{
	char msg[CKPT_ERRLEN];
	int code;

	MGR_CHECK(m);
	if ((code = err_take(m, msg, sizeof msg)) != 0)
		return cl_fail(m->c, m, code, "%s", msg);
	return 0;
}

CKPT_API int
ckpt_wait_pending(ckpt_manager *m)
{
	MGR_CHECK(m);
	mgr_wait_local(m);
	return 0;
}

CKPT_API int
ckpt_is_saving_in_progress(ckpt_manager *m)
{
	int r;

	if (m == NULL || m->closed)
		return 0;
	pthread_mutex_lock(&m->c->lock);
	r = m->saving > 0 || (m->bg_live && !m->bg_done);
	pthread_mutex_unlock(&m->c->lock);
	return r;
}

CKPT_API int
ckpt_reached_preemption(ckpt_manager *m, uint64_t step, int *out)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__ShouldSave ss = CKPT__SHOULD_SAVE__INIT;
	Ckpt__Response *resp;
	int r;

	MGR_CHECK(m);
	if (out == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "out is NULL");
	*out = 0;
	ss.has_manager = 1;
	ss.manager = m->id;
	ss.has_step = 1;
	ss.step = step;
	req.op_case = CKPT__REQUEST__OP_SHOULD_SAVE;
	req.should_save = &ss;
	if ((r = cl_rpc(m->c, m, &req, &resp)) != 0)
		return r;
	if (resp->body_case == CKPT__RESPONSE__BODY_SHOULD_SAVE)
		*out = resp->should_save->preempting != 0;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_should_save(ckpt_manager *m, uint64_t step, int *out)
{
	MGR_CHECK(m);
	if (out == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "out is NULL");
	if (m->should_save_fn != NULL)
		return should_save_fn_at(m, step, out);
	return should_save_at(m, step, 0, 0, out);
}

/* Orbax's decision for a manager with a should_save_fn, which runs here
 * (the daemon cannot call it), the same for ckpt_should_save and
 * ckpt_save: never on a read-only manager or at or below the latest
 * step; else Any(should_save_fn, preemption). */
static int
should_save_fn_at(struct ckpt_manager *m, uint64_t step, int *out)
{
	int64_t latest;
	int r;

	*out = 0;
	if (m->read_only)
		return 0;
	if ((r = ckpt_latest_step(m, &latest)) != 0)
		return r;
	if (step > INT64_MAX || (int64_t)step <= latest)
		return 0;
	if (m->should_save_fn(step, latest, m->should_save_arg)) {
		*out = 1;
		return 0;
	}
	return ckpt_reached_preemption(m, step, out);
}

/* ShouldSave with the save's test clock (ts, 0: now) and preemption. */
static int
should_save_at(struct ckpt_manager *m, uint64_t step, int64_t ts,
    int preempted, int *out)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__ShouldSave ss = CKPT__SHOULD_SAVE__INIT;
	Ckpt__Response *resp;
	int r;

	if ((r = cl_rpc(m->c, m, should_save_req(m, step, ts, preempted, &req,
	    &ss), &resp)) != 0)
		return r;
	if (resp->body_case != CKPT__RESPONSE__BODY_SHOULD_SAVE)
		return unexpected(m, resp, "should_save");
	*out = resp->should_save->should != 0;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

/* ---- steps ------------------------------------------------------------------------ */

static int
mgr_list_steps(struct ckpt_manager *m, Ckpt__Response **resp)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__ListSteps ls = CKPT__LIST_STEPS__INIT;
	int r;

	ls.has_manager = 1;
	ls.manager = m->id;
	req.op_case = CKPT__REQUEST__OP_LIST_STEPS;
	req.list_steps = &ls;
	if ((r = cl_rpc(m->c, m, &req, resp)) != 0)
		return r;
	if ((*resp)->body_case != CKPT__RESPONSE__BODY_LIST_STEPS)
		return unexpected(m, *resp, "list_steps");
	return 0;
}

CKPT_API int
ckpt_all_steps(ckpt_manager *m, uint64_t **steps, size_t *n)
{
	Ckpt__Response *resp;
	const Ckpt__ListStepsReply *ls;
	uint64_t *v = NULL;
	size_t i, k = 0;
	int r;

	MGR_CHECK(m);
	if (steps == NULL || n == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "steps/n is NULL");
	*steps = NULL;
	*n = 0;
	if ((r = mgr_list_steps(m, &resp)) != 0)
		return r;
	ls = resp->list_steps;
	if (ls->n_steps > 0 && (v = malloc(ls->n_steps * sizeof *v)) == NULL) {
		ckpt__response__free_unpacked(resp, NULL);
		return cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
	}
	for (i = 0; i < ls->n_steps; i++)
		if (ls->steps[i]->state == CKPT__STEP_STATE__STEP_COMMITTED)
			v[k++] = ls->steps[i]->step;
	ckpt__response__free_unpacked(resp, NULL);
	if (k == 0) {
		free(v);
		v = NULL;
	}
	*steps = v;
	*n = k;
	return 0;
}

static int
latest_or_best(ckpt_manager *m, int64_t *step, int best)
{
	Ckpt__Response *resp;
	int r;

	MGR_CHECK(m);
	if (step == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "step is NULL");
	if ((r = mgr_list_steps(m, &resp)) != 0)
		return r;
	*step = best ? resp->list_steps->best : resp->list_steps->latest;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_latest_step(ckpt_manager *m, int64_t *step)
{
	return latest_or_best(m, step, 0);
}

CKPT_API int
ckpt_best_step(ckpt_manager *m, int64_t *step)
{
	return latest_or_best(m, step, 1);
}

CKPT_API int
ckpt_metrics(ckpt_manager *m, uint64_t step, char **json)
{
	Ckpt__Response *resp;
	const Ckpt__ListStepsReply *ls;
	size_t i;
	int r;

	MGR_CHECK(m);
	if (json == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "json is NULL");
	*json = NULL;
	if ((r = mgr_list_steps(m, &resp)) != 0)
		return r;
	ls = resp->list_steps;
	for (i = 0; i < ls->n_steps; i++)
		if (ls->steps[i]->step == step &&
		    ls->steps[i]->state == CKPT__STEP_STATE__STEP_COMMITTED)
			break;
	if (i == ls->n_steps) {
		ckpt__response__free_unpacked(resp, NULL);
		return cl_fail(m->c, m, CKPT_ENOTFOUND,
		    "No checkpoint for step %" PRIu64 " in %s.", step, m->root);
	}
	if (ls->steps[i]->metrics_json != NULL &&
	    (*json = strdup(ls->steps[i]->metrics_json)) == NULL)
		r = cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
	ckpt__response__free_unpacked(resp, NULL);
	return r;
}

CKPT_API int
ckpt_list_steps(ckpt_manager *m, ckpt_step_info **infos, size_t *n)
{
	Ckpt__Response *resp;
	const Ckpt__ListStepsReply *ls;
	ckpt_step_info *v = NULL;
	size_t i;
	int r;

	MGR_CHECK(m);
	if (infos == NULL || n == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "infos/n is NULL");
	*infos = NULL;
	*n = 0;
	if ((r = mgr_list_steps(m, &resp)) != 0)
		return r;
	ls = resp->list_steps;
	if (ls->n_steps > 0 && (v = calloc(ls->n_steps, sizeof *v)) == NULL) {
		ckpt__response__free_unpacked(resp, NULL);
		return cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
	}
	for (i = 0; i < ls->n_steps; i++) {
		const Ckpt__StepInfo *si = ls->steps[i];
		v[i].step = si->step;
		v[i].state = (int)si->state;
		v[i].init_ns = si->init_ns;
		v[i].commit_ns = si->commit_ns;
		v[i].bytes = si->bytes;
		snprintf(v[i].name, sizeof v[i].name, "%s",
		    si->name != NULL ? si->name : "");
		snprintf(v[i].error, sizeof v[i].error, "%s",
		    si->error != NULL ? si->error : "");
		snprintf(v[i].upload, sizeof v[i].upload, "%s",
		    si->upload != NULL ? si->upload : "");
		snprintf(v[i].upload_error, sizeof v[i].upload_error, "%s",
		    si->upload_error != NULL ? si->upload_error : "");
	}
	*infos = v;
	*n = ls->n_steps;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_wait_for_step(ckpt_manager *m, int64_t after, int64_t timeout_ms,
    int64_t *step)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__WaitForStep ws = CKPT__WAIT_FOR_STEP__INIT;
	Ckpt__Response *resp;
	int r;

	MGR_CHECK(m);
	if (step == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "step is NULL");
	ws.has_manager = 1;
	ws.manager = m->id;
	ws.has_after = 1;
	ws.after = after;
	ws.has_timeout_ms = 1;
	ws.timeout_ms = timeout_ms;
	req.op_case = CKPT__REQUEST__OP_WAIT_FOR_STEP;
	req.wait_for_step = &ws;
	if ((r = cl_rpc(m->c, m, &req, &resp)) != 0)
		return r;
	if (resp->body_case != CKPT__RESPONSE__BODY_WAIT_FOR_STEP)
		return unexpected(m, resp, "wait_for_step");
	*step = resp->wait_for_step->step;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_metadata(ckpt_manager *m, int64_t step, char **json)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__StepMetadata sm = CKPT__STEP_METADATA__INIT;
	Ckpt__Response *resp;
	int r = 0;

	MGR_CHECK(m);
	if (json == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "json is NULL");
	*json = NULL;
	mgr_wait_local(m);      /* Orbax: a save in flight is waited for */
	sm.has_manager = 1;
	sm.manager = m->id;
	sm.has_step = step >= 0;
	sm.step = step;
	req.op_case = CKPT__REQUEST__OP_METADATA;
	req.metadata = &sm;
	if ((r = cl_rpc(m->c, m, &req, &resp)) != 0)
		return r;
	if (resp->body_case == CKPT__RESPONSE__BODY_METADATA &&
	    resp->metadata->json != NULL &&
	    (*json = strdup(resp->metadata->json)) == NULL)
		r = cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
	ckpt__response__free_unpacked(resp, NULL);
	return r;
}

CKPT_API int
ckpt_delete(ckpt_manager *m, uint64_t step)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Delete d = CKPT__DELETE__INIT;
	Ckpt__Response *resp;
	int r;

	MGR_CHECK(m);
	if (m->read_only)
		return 0;
	d.has_manager = 1;
	d.manager = m->id;
	d.has_step = 1;
	d.step = step;
	req.op_case = CKPT__REQUEST__OP_DELETE;
	req.delete_ = &d;
	if ((r = cl_rpc(m->c, m, &req, &resp)) != 0)
		return r;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_set_step_metrics(ckpt_manager *m, uint64_t step, const char *json)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__SetStepMetrics sm = CKPT__SET_STEP_METRICS__INIT;
	Ckpt__Response *resp;
	int r;

	MGR_CHECK(m);
	if (json == NULL || !valid_json(json, 1))
		return cl_fail(m->c, m, CKPT_EINVAL, "metrics must be a JSON "
		    "object");
	sm.has_manager = 1;
	sm.manager = m->id;
	sm.has_step = 1;
	sm.step = step;
	sm.metrics_json = (char *)json;
	req.op_case = CKPT__REQUEST__OP_SET_STEP_METRICS;
	req.set_step_metrics = &sm;
	if ((r = cl_rpc(m->c, m, &req, &resp)) != 0)
		return r;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_reload(ckpt_manager *m)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Reload rl = CKPT__RELOAD__INIT;
	Ckpt__Response *resp;
	int r;

	MGR_CHECK(m);
	rl.has_manager = 1;
	rl.manager = m->id;
	req.op_case = CKPT__REQUEST__OP_RELOAD;
	req.reload = &rl;
	if ((r = cl_rpc(m->c, m, &req, &resp)) != 0)
		return r;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_verify(ckpt_manager *m, int64_t step, char **problems)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Verify v = CKPT__VERIFY__INIT;
	Ckpt__Response *resp;
	char *out = NULL;
	size_t len = 0, i;
	FILE *f;
	int r, code;

	MGR_CHECK(m);
	if (problems == NULL)
		return cl_fail(m->c, m, CKPT_EINVAL, "problems is NULL");
	*problems = NULL;
	v.has_manager = 1;
	v.manager = m->id;
	v.has_step = step >= 0;
	v.step = step;
	req.op_case = CKPT__REQUEST__OP_VERIFY;
	req.verify = &v;
	if ((r = cl_call(m->c, m, &req, NULL, 0, &resp, NULL, NULL)) != 0)
		return r;
	code = resp->code;
	if (code != 0 && resp->body_case != CKPT__RESPONSE__BODY_VERIFY) {
		if (code > 0 || code < CKPT_ECODE_MIN)
			code = CKPT_EINTERNAL;
		r = cl_fail(m->c, m, code, "%s", *DAEMON_MSG(resp) != '\0' ?
		    DAEMON_MSG(resp) : ckpt_strerror(code));
		ckpt__response__free_unpacked(resp, NULL);
		return r;
	}
	if ((f = open_memstream(&out, &len)) == NULL) {
		ckpt__response__free_unpacked(resp, NULL);
		return cl_fail(m->c, m, CKPT_ENOMEM, "out of memory");
	}
	if (resp->body_case == CKPT__RESPONSE__BODY_VERIFY) {
		const Ckpt__VerifyReply *vr = resp->verify;
		for (i = 0; i < vr->n_problems; i++) {
			const Ckpt__VerifyProblem *p = vr->problems[i];
			fprintf(f, "step %" PRIu64, p->step);
			if (p->item != NULL && *p->item != '\0')
				fprintf(f, " item %s", p->item);
			if (p->leaf != NULL && *p->leaf != '\0')
				fprintf(f, " leaf %s", p->leaf);
			fprintf(f, ": %s\n", p->message != NULL ? p->message :
			    "problem");
		}
	}
	fclose(f);
	*problems = out;
	r = 0;
	if (code != 0) {
		if (code > 0 || code < CKPT_ECODE_MIN)
			code = CKPT_EINTERNAL;
		r = cl_fail(m->c, m, code, "%s", *DAEMON_MSG(resp) != '\0' ?
		    DAEMON_MSG(resp) : ckpt_strerror(code));
	} else if (len > 0) {
		size_t n = resp->verify->n_problems;

		r = cl_fail(m->c, m, CKPT_ECORRUPT, "%zu problem%s found: %.*s",
		    n, n == 1 ? "" : "s", (int)strcspn(out, "\n"), out);
	}
	ckpt__response__free_unpacked(resp, NULL);
	return r;
}
