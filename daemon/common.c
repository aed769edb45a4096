/*
 * common.c - error reporting and clocks shared by every module of ckptd.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "ckpt.pb-c.h"

/* enum Code of ckpt.proto is the same table as ckpt_codes.def. */
_Static_assert((int)CKPT__CODE__CKPT_OK == CKPT_OK, "Code CKPT_OK");
#define X(name, value, desc) \
	_Static_assert((int)CKPT__CODE__CKPT_##name == (value), \
	    "enum Code of ckpt.proto differs from ckpt_codes.def: CKPT_" #name);
#include "ckpt_codes.def"
#undef X

static const char *const err_code_names[] = {
#define X(name, value, desc) [-(value)] = #name,
#include "ckpt_codes.def"
#undef X
};

const char *
err_code_name(int code)
{
	if (code >= 0 || code < CKPT_ECODE_MIN)
		return NULL;
	return err_code_names[-code];
}

int
err_set(ckd_err *e, int code, const char *fmt, ...)
{
	va_list ap;

	if (e == NULL)
		return code;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return code;
}

int
err_code_from_errno(int errnum)
{
	switch (errnum) {
	case EACCES:
	case EPERM:
	case EROFS:
		return CKPT_EACCES;
	case ENOSPC:
	case EDQUOT:
		return CKPT_ENOSPC;
	case ENOENT:
		return CKPT_ENOTFOUND;
	case EEXIST:
		return CKPT_EEXIST;
	case ENOMEM:
		return CKPT_ENOMEM;
	case ELOOP:
	case EXDEV:
		return CKPT_EPATH;
	case ENOTDIR:
		return CKPT_ENOTDIR;
	default:
		return CKPT_EIO;
	}
}

int
err_errno(ckd_err *e, int errnum, const char *fmt, ...)
{
	int code = err_code_from_errno(errnum);
	char buf[256], what[384];
	const char *s;
	va_list ap;

	if (e == NULL)
		return code;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	/* GNU strerror_r: returns a pointer, possibly not into buf. */
	s = strerror_r(errnum, buf, sizeof(buf));
	if (errnum == EROFS)
		s = "read-only file system";
	e->code = code;
	snprintf(e->msg, sizeof(e->msg), "%s: %s", what, s);
	return code;
}

static int64_t
clock_ns(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
now_mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

int64_t
now_wall_ns(void)
{
	return clock_ns(CLOCK_REALTIME);
}
