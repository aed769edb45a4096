/*
 * rootless.c - a read-only manager whose checkpoint directory did not
 * exist when it was opened (Orbax: such a manager creates nothing and
 * has no steps). It holds no root (m->r NULL) and no root state; its
 * answers are those of an empty root, with the messages a missing step
 * gets, the step named by the manager's naming. Reload opens the
 * directory again and, once it exists, gives the manager its root
 * (manager_attach_root).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "layout.h"
#include "preempt.h"
#include "rootless.h"

static void
rootless_not_found(struct conn *c, uint64_t id, const struct manager *m,
    int has_step, int64_t step)
{
	struct store_naming nm;
	char name[256];

	if (!has_step || step < 0) {
		conn_reply_error(c, id, CKPT_ENOSTEPS, "No steps found in %s.",
		    m->rootless);
		return;
	}
	memset(&nm, 0, sizeof nm);
	if (m->o->step_prefix != NULL)
		snprintf(nm.prefix, sizeof nm.prefix, "%s", m->o->step_prefix);
	nm.fixed_len = m->o->has_step_format_fixed_length ?
	    m->o->step_format_fixed_length : 0;
	if (store_step_name(&nm, (uint64_t)step, name, sizeof name) != 0)
		snprintf(name, sizeof name, "%" PRId64, step);
	conn_reply_error(c, id, CKPT_ENOTFOUND, "Checkpoint at %s/%s not found.",
	    m->rootless, name);
}

static void
rootless_list(struct conn *c, uint64_t id)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__ListStepsReply lr = CKPT__LIST_STEPS_REPLY__INIT;

	lr.has_latest = 1;
	lr.latest = -1;
	lr.has_best = 1;
	lr.best = -1;
	lr.has_saving = 1;
	lr.saving = 0;
	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_LIST_STEPS;
	resp.list_steps = &lr;
	conn_reply(c, &resp, NULL, 0);
}

static void
rootless_should_save(struct conn *c, uint64_t id)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__ShouldSaveReply sr = CKPT__SHOULD_SAVE_REPLY__INIT;

	sr.has_should = 1;
	sr.should = 0;                  /* read-only */
	sr.has_preempting = 1;
	sr.preempting = preempt_active() != 0;
	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_SHOULD_SAVE;
	resp.should_save = &sr;
	conn_reply(c, &resp, NULL, 0);
}

static void
rootless_root_metadata(struct conn *c, uint64_t id)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__StepMetadataReply mr = CKPT__STEP_METADATA_REPLY__INIT;

	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_METADATA;
	resp.metadata = &mr;            /* none: no json */
	conn_reply(c, &resp, NULL, 0);
}

static void
rootless_verify_all(struct conn *c, uint64_t id)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__VerifyReply vr = CKPT__VERIFY_REPLY__INIT;

	resp.has_id = 1;
	resp.id = id;
	resp.body_case = CKPT__RESPONSE__BODY_VERIFY;
	resp.verify = &vr;              /* no step, no problem */
	conn_reply(c, &resp, NULL, 0);
}

int
rootless_handle(struct conn *c, struct manager *m, const Ckpt__Request *req)
{
	uint64_t id = req->id;

	switch (req->op_case) {
	case CKPT__REQUEST__OP_LIST_STEPS:
		rootless_list(c, id);
		return 1;
	case CKPT__REQUEST__OP_SHOULD_SAVE:
		rootless_should_save(c, id);
		return 1;
	case CKPT__REQUEST__OP_RESTORE:
		/* Also for a restore from another directory: as in Orbax, a
		 * manager without its directory restores nothing. */
		rootless_not_found(c, id, m, req->restore->has_step,
		    req->restore->step);
		return 1;
	case CKPT__REQUEST__OP_METADATA:
		if (!req->metadata->has_step || req->metadata->step < 0)
			rootless_root_metadata(c, id);
		else
			rootless_not_found(c, id, m, 1, req->metadata->step);
		return 1;
	case CKPT__REQUEST__OP_VERIFY:
		if (!req->verify->has_step || req->verify->step < 0)
			rootless_verify_all(c, id);
		else
			rootless_not_found(c, id, m, 1, req->verify->step);
		return 1;
	case CKPT__REQUEST__OP_SET_STEP_METRICS:
		rootless_not_found(c, id, m, 1,
		    (int64_t)req->set_step_metrics->step);
		return 1;
	case CKPT__REQUEST__OP_WAIT_FOR_STEP:
		/* No step can come before a reload finds the directory. */
		rootless_not_found(c, id, m, 0, -1);
		return 1;
	case CKPT__REQUEST__OP_RELOAD:
		manager_attach_root(c, id, m);
		return 1;
	default:
		return 0;
	}
}
