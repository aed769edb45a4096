/*
 * restore.h - read-side operations run in worker tasks: Restore (and
 * item_metadata), StepMetadata and Verify.
 */
#ifndef CKPTD_RESTORE_H
#define CKPTD_RESTORE_H

#include "conn.h"
#include "manager.h"
#include "root.h"

/* Each takes ownership of req. */
void restore_handle(struct conn *c, struct manager *m, Ckpt__Request *req);
void restore_metadata_handle(struct conn *c, struct manager *m,
    Ckpt__Request *req);
void restore_verify_handle(struct conn *c, struct manager *m,
    Ckpt__Request *req);

#endif
