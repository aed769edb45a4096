/*
 * errors.c - error codes and per-handle messages.
 *
 * Each handle (client, manager) holds one message slot per thread that
 * failed a call on it, so a thread reads its own last failure even while
 * other threads use the same handle. Slots live as long as the handle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const errstr[] = {
	[0] = "success",
	[1] = "invalid argument",
	[2] = "protocol error",
	[3] = "protocol version mismatch",
	[4] = "not found",
	[5] = "step already exists",
	[6] = "permission denied",
	[7] = "no space left on device",
	[8] = "I/O error",
	[9] = "checksum mismatch or corrupt data",
	[10] = "out of memory",
	[11] = "cannot reach ckptd or connection lost",
	[12] = "timed out",
	[13] = "step is not committed",
	[14] = "no steps found",
	[15] = "item not found",
	[16] = "structure, shape or dtype mismatch",
	[17] = "unsupported dtype or cast",
	[18] = "manager is read-only",
	[19] = "resource busy",
	[20] = "handle already closed",
	[21] = "operation not supported",
	[22] = "too big",
	[23] = "internal error",
	[24] = "root directory does not exist",
	[25] = "path not allowed",
	[26] = "a per-user limit was reached",
};

CKPT_API const char *
ckpt_strerror(int code)
{
	if (code > 0 || code < CKPT_ECODE_MIN)
		return "unknown error";
	return errstr[-code];
}

CKPT_API const char *
ckpt_version(void)
{
	return CKPT_VERSION_STRING;
}

void
errbox_init(struct errbox *b)
{
	pthread_mutex_init(&b->lock, NULL);
	b->slots = NULL;
}

void
errbox_destroy(struct errbox *b)
{
	struct errslot *s, *n;

	for (s = b->slots; s != NULL; s = n) {
		n = s->next;
		free(s);
	}
	b->slots = NULL;
	pthread_mutex_destroy(&b->lock);
}

void
errbox_setv(struct errbox *b, const char *fmt, va_list ap)
{
	struct errslot *s;
	pthread_t self = pthread_self();

	pthread_mutex_lock(&b->lock);
	for (s = b->slots; s != NULL; s = s->next)
		if (pthread_equal(s->thread, self))
			break;
	if (s == NULL && (s = calloc(1, sizeof *s)) != NULL) {
		s->thread = self;
		s->next = b->slots;
		b->slots = s;
	}
	if (s != NULL)
		vsnprintf(s->msg, sizeof s->msg, fmt, ap);
	pthread_mutex_unlock(&b->lock);
}

void
errbox_set(struct errbox *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	errbox_setv(b, fmt, ap);
	va_end(ap);
}

const char *
errbox_get(const struct errbox *cb)
{
	struct errbox *b = (struct errbox *)cb;
	struct errslot *s;
	const char *r = "";
	pthread_t self = pthread_self();

	pthread_mutex_lock(&b->lock);
	for (s = b->slots; s != NULL; s = s->next)
		if (pthread_equal(s->thread, self)) {
			r = s->msg;
			break;
		}
	pthread_mutex_unlock(&b->lock);
	return r;
}
