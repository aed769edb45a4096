/*
 * common.h - definitions shared by every module of ckptd.
 *
 * Error model: functions return 0 or a negative CKPT_E* code (the table in
 * proto/ckpt_codes.def, which is also the wire's Response.code) and fill a
 * ckd_err with a human message. err_errno() maps errno values.
 */
#ifndef CKPTD_COMMON_H
#define CKPTD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

/* Error codes and limits of the wire (frame size, fds per frame, counts
 * and lengths): proto/ owns them. */
#include "ckpt_codes.h"
#include "ckpt_limits.h"
#include "ckpt_version.h"

/* The release (meson's project version). */
#define CKPTD_VERSION CKPT_VERSION
/* Suffix of a step directory being written. */
#define CKPT_TMP_SUFFIX ".ckptd-tmp"
#define CKPT_ERRLEN 512

typedef struct {
	int code;                 /* 0 or CKPT_E* */
	char msg[CKPT_ERRLEN];
} ckd_err;

/* Set e (may be NULL) and return code. */
int err_set(ckd_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Map errnum to a CKPT_E* code, set "<fmt>: strerror(errnum)", return it.
 * EACCES/EPERM/EROFS -> EACCES (EROFS: message says read-only fs),
 * ENOSPC/EDQUOT -> ENOSPC, ENOENT -> ENOTFOUND, EEXIST -> EEXIST,
 * ENOMEM -> ENOMEM, ELOOP/EXDEV -> EPATH, ENOTDIR -> ENOTDIR, else EIO. */
int err_errno(ckd_err *e, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int err_code_from_errno(int errnum);
/* "EINVAL" for CKPT_EINVAL, ...; NULL for 0 and unknown codes. */
const char *err_code_name(int code);

/* Monotonic and wall clocks in nanoseconds. */
int64_t now_mono_ns(void);
int64_t now_wall_ns(void);

/* xmalloc-style helpers are deliberately absent: allocation failures are
 * reported as CKPT_ENOMEM to the peer, never fatal at run time. */

#endif
