/*
 * ckpt_codes.h - the wire's error codes as a C enum, for ckptd.
 *
 * The values come from ckpt_codes.def. Functions of ckptd return 0 or one
 * of these (negative); the same numbers travel in Response.code (enum
 * Code of ckpt.proto). libckpt's public <ckpt/ckpt.h> spells the same
 * enum out for its readers and checks it against the .def at build time,
 * so a translation unit includes one of the two headers, never both.
 */
#ifndef CKPT_CODES_H
#define CKPT_CODES_H

enum {
	CKPT_OK = 0,
#define X(name, value, desc) CKPT_##name = (value),
#include "ckpt_codes.def"
#undef X
	CKPT_ECODE_MIN = CKPT_ERANK   /* the most negative code */
};

/* Number of codes in the table (CKPT_OK not counted). */
enum {
	CKPT_NCODES = 0
#define X(name, value, desc) + 1
#include "ckpt_codes.def"
#undef X
};

_Static_assert(CKPT_NCODES == -CKPT_ECODE_MIN,
    "codes run from -1 to CKPT_ECODE_MIN without a gap");

#endif
