/*
 * dispatch.h - the request router: what main.c hands the connection layer
 * (conn_listen), so that conn.c calls no handler by name.
 */
#ifndef CKPTD_DISPATCH_H
#define CKPTD_DISPATCH_H

#include "conn.h"

extern const struct conn_handler dispatch_handler;

#endif
