/*
 * dispatch.h - the request router: what main.c hands the connection layer
 * (conn_listen), so that conn.c calls no handler by name.
 */
#ifndef CKPTD_DISPATCH_H
#define CKPTD_DISPATCH_H

#include "conn.h"

/* conn_listen's arg with it: a const struct stats_source * (stats.h),
 * the figures of the status reply. */
extern const struct conn_handler dispatch_handler;

#endif
