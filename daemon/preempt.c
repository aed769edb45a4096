/*
 * preempt.c - the node is going down (see preempt.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "preempt.h"

static int preempting;

void
preempt_begin(const char *why)
{
	if (preempting)
		return;
	preempting = 1;
	log_info("preemption: %s; managers are told to save and stop", why);
}

int
preempt_active(void)
{
	return preempting;
}

void
preempt_handle(struct conn *c, const Ckpt__Request *req)
{
	const struct peer_cred *p = conn_peer(c);
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__Empty em = CKPT__EMPTY__INIT;
	char why[64];

	/* One user must not make every other user's trainers stop. */
	if (p->uid != 0 && p->uid != geteuid()) {
		conn_reply_error(c, req->id, CKPT_EACCES, "only root or the "
		    "daemon's user may announce a preemption");
		return;
	}
	snprintf(why, sizeof why, "announced by uid %u", (unsigned)p->uid);
	preempt_begin(why);
	resp.has_id = 1;
	resp.id = req->id;
	resp.body_case = CKPT__RESPONSE__BODY_EMPTY;
	resp.empty = &em;
	conn_reply(c, &resp, NULL, 0);
}
