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

/*
 * The table is proto/ckpt_codes.def; the public enum of <ckpt/ckpt.h>
 * spells it out for readers of the manual, and must not drift from it.
 */
#define X(name, value, desc) \
	_Static_assert(CKPT_##name == (value), \
	    "ckpt.h differs from proto/ckpt_codes.def: CKPT_" #name);
#include "ckpt_codes.def"
#undef X

static const char *const errstr[] = {
	[0] = "success",
#define X(name, value, desc) [-(value)] = desc,
#include "ckpt_codes.def"
#undef X
};

_Static_assert(sizeof errstr / sizeof errstr[0] == 1 - CKPT_ECODE_MIN,
    "CKPT_ECODE_MIN of ckpt.h is the last code of proto/ckpt_codes.def");

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
