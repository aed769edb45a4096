/*
 * rootless.h - the requests of a manager with no root yet: a read-only
 * manager opened on a checkpoint directory that does not exist (Orbax:
 * it has no steps until reload() finds the directory).
 */
#ifndef CKPTD_ROOTLESS_H
#define CKPTD_ROOTLESS_H

#include "ckpt.pb-c.h"
#include "conn.h"
#include "manager.h"

/* Answer req for m (m->r NULL): 1 when answered here (req stays the
 * caller's), 0 when the manager's usual handler applies (close, waits,
 * save and delete, which refuse or no-op as read-only). */
int rootless_handle(struct conn *c, struct manager *m,
    const Ckpt__Request *req);

#endif
