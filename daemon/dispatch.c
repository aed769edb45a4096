/*
 * dispatch.c - route each request of a connection (after hello) to the
 * code that serves it: ping and status here, every checkpoint operation to
 * the manager. Runs on the event-loop thread.
 */
#include <unistd.h>

#include "ckptd.h"
#include "conn.h"
#include "log.h"
#include "manager.h"
#include "preempt.h"
#include "worker.h"

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

static void
dispatch_status(struct conn *c, const Ckpt__Request *req)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__StatusReply st = CKPT__STATUS_REPLY__INIT;
	struct manager_stats ms = { 0 };

	manager_stats(&ms);
	st.version = (char *)CKPTD_VERSION;
	st.uptime_secs = ckptd_uptime_secs();
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
	st.memory_budget = ms.memory_budget != 0 ? ms.memory_budget :
	    ckptd_memory_budget();
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

	resp.id = req->id;
	resp.has_id = 1;
	resp.body_case = CKPT__RESPONSE__BODY_STATUS;
	resp.status = &st;
	conn_reply(c, &resp, NULL, 0);
}

void
dispatch(struct conn *c, Ckpt__Request *req, int *fds, size_t nfds)
{
	switch (req->op_case) {
	case CKPT__REQUEST__OP_PING:
		dispatch_close_fds(fds, nfds);
		dispatch_ping(c, req);
		break;
	case CKPT__REQUEST__OP_STATUS:
		dispatch_close_fds(fds, nfds);
		dispatch_status(c, req);
		break;
	case CKPT__REQUEST__OP_PREEMPT:
		dispatch_close_fds(fds, nfds);
		preempt_handle(c, req);
		break;
	case CKPT__REQUEST__OP_HELLO:
		dispatch_close_fds(fds, nfds);
		conn_reply_error(c, req->id, CKPT_EPROTO,
		    "hello was already exchanged on this connection");
		break;
	case CKPT__REQUEST__OP_OPEN_MANAGER:
	case CKPT__REQUEST__OP_CLOSE_MANAGER:
	case CKPT__REQUEST__OP_SAVE:
	case CKPT__REQUEST__OP_WAIT_SAVES:
	case CKPT__REQUEST__OP_LIST_STEPS:
	case CKPT__REQUEST__OP_SHOULD_SAVE:
	case CKPT__REQUEST__OP_RESTORE:
	case CKPT__REQUEST__OP_METADATA:
	case CKPT__REQUEST__OP_DELETE:
	case CKPT__REQUEST__OP_RELOAD:
	case CKPT__REQUEST__OP_WAIT_FOR_STEP:
	case CKPT__REQUEST__OP_VERIFY:
	case CKPT__REQUEST__OP_SET_STEP_METRICS:
		/* The manager owns req and fds from here. */
		manager_handle(c, req, fds, nfds);
		return;
	default:
		dispatch_close_fds(fds, nfds);
		log_debug("conn %llu: unknown operation %d",
		    (unsigned long long)conn_id(c), (int)req->op_case);
		conn_reply_error(c, req->id, CKPT_EUNSUPPORTED,
		    "unknown operation");
		break;
	}
	ckpt__request__free_unpacked(req, NULL);
}

void
dispatch_conn_closed(struct conn *c)
{
	manager_conn_closed(c);
}
