/*
 * dispatch.c - route each request of a connection (after hello) to the
 * code that serves it: one routing table (dispatch_routes) from request
 * type to handler; ping and status are served here. The connection layer
 * knows none of this: main.c hands it dispatch_handler. Runs on the
 * event-loop thread.
 *
 * Before a frame is unpacked, dispatch_precheck() walks its protobuf wire
 * bytes once (no allocation) for the request id and the size of a save's
 * tree, so that a request over the per-request limits costs the loop a
 * scan of its bytes, never the allocation of millions of structs.
 */
#include <inttypes.h>
#include <unistd.h>

#include "dispatch.h"
#include "log.h"
#include "manager.h"
#include "user.h"
#include "preempt.h"
#include "restore.h"
#include "rootless.h"
#include "save.h"
#include "stats.h"
#include "worker.h"

/* Path elements plus shape dimensions allowed per leaf of the limit:
 * bounds what a save's tree unpacks to (each costs a struct or 8 bytes
 * for 1 or 2 bytes on the wire). */
#define DISPATCH_ELEMS_PER_LEAF 16

/* Field numbers in proto/ckpt.proto. */
enum {
	PB_REQUEST_ID = 1, PB_REQUEST_SAVE = 14, PB_SAVE_ITEMS = 3,
	PB_ITEM_LEAVES = 3, PB_LEAF_PATH = 1, PB_LEAF_SHAPE = 4,
};

/* ---- the wire walk --------------------------------------------------------- */

struct pbr {
	const uint8_t *p, *end;
};

static int
pbr_varint(struct pbr *b, uint64_t *v)
{
	unsigned shift = 0;

	*v = 0;
	while (b->p < b->end && shift < 64) {
		uint8_t x = *b->p++;

		*v |= (uint64_t)(x & 0x7f) << shift;
		if (!(x & 0x80))
			return 0;
		shift += 7;
	}
	return -1;
}

/* Next field: its number and wire type; *sub gets the bytes of a
 * length-delimited one, *v the value of a varint. 1 = a field, 0 = end,
 * -1 = malformed. */
static int
pbr_next(struct pbr *b, uint32_t *num, struct pbr *sub, uint64_t *v,
    int *wt)
{
	uint64_t tag;

	if (b->p >= b->end)
		return 0;
	if (pbr_varint(b, &tag) != 0 || (tag >> 3) == 0 ||
	    (tag >> 3) > UINT32_MAX)
		return -1;
	*num = (uint32_t)(tag >> 3);
	*wt = (int)(tag & 7);
	switch (*wt) {
	case 0:
		return pbr_varint(b, v) == 0 ? 1 : -1;
	case 1:
	case 5: {
		size_t n = *wt == 1 ? 8 : 4;

		if ((size_t)(b->end - b->p) < n)
			return -1;
		b->p += n;
		return 1;
	}
	case 2:
		if (pbr_varint(b, v) != 0 || *v > (uint64_t)(b->end - b->p))
			return -1;
		sub->p = b->p;
		sub->end = b->p + *v;
		b->p += *v;
		return 1;
	default:
		return -1;              /* groups: not in our protocol */
	}
}

struct tree_count {
	uint64_t leaves, elems;
};

/* Count the path elements and shape dimensions of one leaf. */
static int
dispatch_count_leaf(struct pbr b, struct tree_count *tc)
{
	struct pbr sub;
	uint32_t num;
	uint64_t v;
	int wt, r;

	while ((r = pbr_next(&b, &num, &sub, &v, &wt)) == 1) {
		if (num == PB_LEAF_PATH && wt == 2) {
			tc->elems++;
		} else if (num == PB_LEAF_SHAPE && wt == 0) {
			tc->elems++;
		} else if (num == PB_LEAF_SHAPE && wt == 2) {
			/* packed: one varint ends at each byte < 0x80 */
			for (; sub.p < sub.end; sub.p++)
				tc->elems += *sub.p < 0x80;
		}
	}
	return r;
}

/* Count the tree of a Save, stopping as soon as it is over the limits. */
static int
dispatch_count_save(struct pbr b, struct tree_count *tc, uint64_t maxl,
    uint64_t maxe)
{
	struct pbr item, leaf;
	uint32_t num, num2;
	uint64_t v;
	int wt, wt2, r, r2;

	while ((r = pbr_next(&b, &num, &item, &v, &wt)) == 1) {
		if (num != PB_SAVE_ITEMS || wt != 2)
			continue;
		while ((r2 = pbr_next(&item, &num2, &leaf, &v, &wt2)) == 1) {
			if (num2 != PB_ITEM_LEAVES || wt2 != 2)
				continue;
			if (++tc->leaves > maxl)
				return 0;
			if (dispatch_count_leaf(leaf, tc) < 0)
				return -1;
			if (tc->elems > maxe)
				return 0;
		}
		if (r2 < 0)
			return -1;
	}
	return r;
}

static int
dispatch_precheck(const uint8_t *buf, size_t len, uint64_t *id, ckd_err *e,
    void *arg)
{
	uint64_t maxl = user_limits.leaves_per_request;
	uint64_t maxe = maxl * DISPATCH_ELEMS_PER_LEAF;
	struct tree_count tc = { 0, 0 };
	struct pbr b = { buf, buf + len }, sub;
	uint32_t num;
	uint64_t v;
	int wt, r;

	*id = 0;
	while ((r = pbr_next(&b, &num, &sub, &v, &wt)) == 1) {
		if (num == PB_REQUEST_ID && wt == 0)
			*id = v;
		else if (num == PB_REQUEST_SAVE && wt == 2 &&
		    tc.leaves <= maxl && tc.elems <= maxe &&
		    dispatch_count_save(sub, &tc, maxl, maxe) < 0) {
			r = -1;
			break;
		}
	}
	if (r < 0) {
		*id = 0;
		return err_set(e, CKPT_EPROTO, "malformed request (%zu bytes)",
		    len);
	}
	if (tc.leaves > maxl)
		return err_set(e, CKPT_ETOOBIG, "too many leaves: the save has "
		    "more than %" PRIu64 " (the limit per request; ckptd "
		    "--max-leaves)",
		    maxl);
	if (tc.elems > maxe)
		return err_set(e, CKPT_ETOOBIG, "too many leaves: the save has "
		    "more than %" PRIu64 " path elements and shape dimensions in all (%d per leaf "
		    "of ckptd --max-leaves)", maxe, DISPATCH_ELEMS_PER_LEAF);
	return 0;
}

/* ---- routing ---------------------------------------------------------------- */

static void
dispatch_close_fds(int *fds, size_t nfds)
{
	size_t i;

	for (i = 0; i < nfds; i++)
		close(fds[i]);
}

static void
dispatch_ping(struct conn *c, const Ckpt__Request *req)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__Empty empty = CKPT__EMPTY__INIT;

	resp.id = req->id;
	resp.has_id = 1;
	resp.body_case = CKPT__RESPONSE__BODY_EMPTY;
	resp.empty = &empty;
	conn_reply(c, &resp, NULL, 0);
}

/* arg: conn_listen's, the struct stats_source main.c handed over. */
static void
dispatch_status(struct conn *c, const Ckpt__Request *req, void *arg)
{
	const struct stats_source *src = arg;
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__StatusReply st = CKPT__STATUS_REPLY__INIT;
	struct stats ms = { 0 };

	src->fill(&ms, src->arg);
	st.version = (char *)CKPTD_VERSION;
	st.uptime_secs = ms.uptime_secs;
	st.has_uptime_secs = 1;
	st.connections = conn_count();
	st.has_connections = 1;
	st.managers = ms.managers;
	st.has_managers = 1;
	st.queued_saves = ms.queued_saves;
	st.has_queued_saves = 1;
	st.inflight_saves = ms.inflight_saves;
	st.has_inflight_saves = 1;
	st.staging_bytes = ms.staging_bytes;
	st.has_staging_bytes = 1;
	st.memory_budget = ms.memory_budget;
	st.has_memory_budget = 1;
	st.waiting_for_memory = ms.waiting_for_memory;
	st.has_waiting_for_memory = 1;
	st.workers = worker_count();
	st.has_workers = 1;
	st.saves_committed = ms.saves_committed;
	st.has_saves_committed = 1;
	st.saves_failed = ms.saves_failed;
	st.has_saves_failed = 1;
	st.bytes_written = ms.bytes_written;
	st.has_bytes_written = 1;
	st.coordination = ms.coordination;

	resp.id = req->id;
	resp.has_id = 1;
	resp.body_case = CKPT__RESPONSE__BODY_STATUS;
	resp.status = &st;
	conn_reply(c, &resp, NULL, 0);
}

static void
dispatch_hello_again(struct conn *c, const Ckpt__Request *req)
{
	conn_reply_error(c, req->id, CKPT_EPROTO,
	    "hello was already exchanged on this connection");
}

/* The manager a request names, by request type. */
#define DISPATCH_MANAGER_OF(field) \
	static uint64_t \
	dispatch_manager_of_##field(const Ckpt__Request *req) \
	{ \
		return req->field->manager; \
	}
DISPATCH_MANAGER_OF(close_manager)
DISPATCH_MANAGER_OF(save)
DISPATCH_MANAGER_OF(wait_saves)
DISPATCH_MANAGER_OF(list_steps)
DISPATCH_MANAGER_OF(should_save)
DISPATCH_MANAGER_OF(restore)
DISPATCH_MANAGER_OF(metadata)
DISPATCH_MANAGER_OF(delete_)
DISPATCH_MANAGER_OF(reload)
DISPATCH_MANAGER_OF(wait_for_step)
DISPATCH_MANAGER_OF(verify)
DISPATCH_MANAGER_OF(set_step_metrics)
#undef DISPATCH_MANAGER_OF

/*
 * One route per request type. A request either needs no manager (plain)
 * or names one of the connection's managers (manager_of), which is looked
 * up first (unknown: CKPT_EINVAL). Only a save keeps the frame's fds (its
 * staging memfd); every other route's are closed before it runs. req is
 * freed after the handler unless the route says the handler owns it
 * (it answers later, from a worker task's done()).
 */
struct dispatch_route {
	void (*plain)(struct conn *c, const Ckpt__Request *req);
	/* A plain route that needs conn_listen's arg (the figures). */
	void (*plain_arg)(struct conn *c, const Ckpt__Request *req,
	    void *arg);
	void (*on_manager)(struct conn *c, struct manager *m,
	    Ckpt__Request *req);
	void (*save)(struct conn *c, struct manager *m, Ckpt__Request *req,
	    int *fds, size_t nfds);
	uint64_t (*manager_of)(const Ckpt__Request *req);
	int owns_req;
};

#define ROUTE_PLAIN(fn) { .plain = (fn) }
#define ROUTE_MANAGER(field, fn, owns) { .on_manager = (fn), \
	.manager_of = dispatch_manager_of_##field, .owns_req = (owns) }

static void dispatch_ping(struct conn *, const Ckpt__Request *);
static void dispatch_status(struct conn *, const Ckpt__Request *, void *);

static const struct dispatch_route dispatch_routes[] = {
	[CKPT__REQUEST__OP_HELLO] = ROUTE_PLAIN(dispatch_hello_again),
	[CKPT__REQUEST__OP_PING] = ROUTE_PLAIN(dispatch_ping),
	[CKPT__REQUEST__OP_STATUS] = { .plain_arg = dispatch_status },
	[CKPT__REQUEST__OP_PREEMPT] = ROUTE_PLAIN(preempt_handle),
	[CKPT__REQUEST__OP_OPEN_MANAGER] = ROUTE_PLAIN(manager_handle_open),
	[CKPT__REQUEST__OP_CLOSE_MANAGER] =
	    ROUTE_MANAGER(close_manager, manager_handle_close, 0),
	[CKPT__REQUEST__OP_SAVE] = { .save = save_handle,
	    .manager_of = dispatch_manager_of_save, .owns_req = 1 },
	[CKPT__REQUEST__OP_WAIT_SAVES] =
	    ROUTE_MANAGER(wait_saves, manager_handle_wait_saves, 0),
	[CKPT__REQUEST__OP_LIST_STEPS] =
	    ROUTE_MANAGER(list_steps, manager_handle_list, 0),
	[CKPT__REQUEST__OP_SHOULD_SAVE] =
	    ROUTE_MANAGER(should_save, manager_handle_should_save, 0),
	[CKPT__REQUEST__OP_RESTORE] =
	    ROUTE_MANAGER(restore, restore_handle, 1),
	[CKPT__REQUEST__OP_METADATA] =
	    ROUTE_MANAGER(metadata, restore_metadata_handle, 1),
	[CKPT__REQUEST__OP_DELETE] =
	    ROUTE_MANAGER(delete_, manager_handle_delete, 0),
	[CKPT__REQUEST__OP_RELOAD] =
	    ROUTE_MANAGER(reload, manager_handle_reload, 0),
	[CKPT__REQUEST__OP_WAIT_FOR_STEP] =
	    ROUTE_MANAGER(wait_for_step, manager_handle_wait_step, 0),
	[CKPT__REQUEST__OP_VERIFY] =
	    ROUTE_MANAGER(verify, restore_verify_handle, 1),
	[CKPT__REQUEST__OP_SET_STEP_METRICS] =
	    ROUTE_MANAGER(set_step_metrics, manager_handle_set_metrics, 0),
};

#undef ROUTE_PLAIN
#undef ROUTE_MANAGER

static void
dispatch(struct conn *c, Ckpt__Request *req, int *fds, size_t nfds,
    void *arg)
{
	const struct dispatch_route *rt = NULL;
	struct manager *m = NULL;
	size_t op = (size_t)req->op_case;

	if (op < sizeof dispatch_routes / sizeof dispatch_routes[0])
		rt = &dispatch_routes[op];
	if (rt == NULL || (rt->plain == NULL && rt->plain_arg == NULL &&
	    rt->manager_of == NULL)) {
		dispatch_close_fds(fds, nfds);
		log_debug("conn %llu: unknown operation %d",
		    (unsigned long long)conn_id(c), (int)req->op_case);
		conn_reply_error(c, req->id, CKPT_EUNSUPPORTED,
		    "unknown operation");
		goto out;
	}
	if (rt->save == NULL) {
		dispatch_close_fds(fds, nfds);
		fds = NULL;
		nfds = 0;
	}
	if (rt->plain != NULL) {
		rt->plain(c, req);
		goto out;
	}
	if (rt->plain_arg != NULL) {
		rt->plain_arg(c, req, arg);
		goto out;
	}
	if ((m = manager_find(c, req->id, rt->manager_of(req))) == NULL) {
		dispatch_close_fds(fds, nfds);
		goto out;
	}
	if (m->r == NULL && rootless_handle(c, m, req)) {
		dispatch_close_fds(fds, nfds);
		goto out;
	}
	if (rt->save != NULL)
		rt->save(c, m, req, fds, nfds);
	else
		rt->on_manager(c, m, req);
	if (rt->owns_req)
		return;
out:
	ckpt__request__free_unpacked(req, NULL);
}

/* Its waiters go, then its saves still waiting for memory (and the
 * steps of the ranks it served), then its managers. */
static void
dispatch_conn_closed(struct conn *c, void *arg)
{
	manager_conn_closing(c);
	save_conn_closed(c);
	manager_conn_closed(c);
}

static int
dispatch_conn_busy(const struct conn *c, void *arg)
{
	return manager_conn_busy(c);
}

const struct conn_handler dispatch_handler = {
	.precheck = dispatch_precheck,
	.dispatch = dispatch,
	.closed = dispatch_conn_closed,
	.busy = dispatch_conn_busy,
};
