/*
 * preempt.h - the node is going down: SIGTERM (systemd shutdown) or a
 * Preempt request (`ckptctl preempt`, e.g. from a cloud preemption
 * notice). From then on every manager's reached_preemption is true
 * (ShouldSaveReply.preempting) and its next save is taken as Orbax's
 * PreemptionCheckpointingPolicy does.
 */
#ifndef CKPTD_PREEMPT_H
#define CKPTD_PREEMPT_H

#include "ckpt.pb-c.h"

struct conn;

/* Mark the node as going down (idempotent); `why` is logged. */
void preempt_begin(const char *why);
int preempt_active(void);
/* Handle a Preempt request (takes nothing; replies). */
void preempt_handle(struct conn *c, const Ckpt__Request *req);

#endif
