/*
 * wirecheck.h - checks of a request's strings on its packed bytes.
 *
 * protobuf-c unpacks a `string` field into a NUL-terminated char *, so a
 * string with a NUL inside ("ab\0cd") silently becomes "ab", and it does
 * not check UTF-8. The wire length is only known in the packed bytes: this
 * walks them with the message descriptors (the schema), recursing into
 * sub-messages, and checks every string field, whatever the request:
 *   - no NUL byte (its C length equals its wire length);
 *   - valid UTF-8 (no overlong forms, surrogates or code points above
 *     U+10FFFF);
 *   - at most CKPT_MAX_DOC bytes.
 * Run it on every frame that unpacked successfully, before the request is
 * used (conn.c). Unknown fields are skipped; nesting is bounded by
 * CKPT_MAX_NESTING.
 */
#ifndef CKPTD_WIRECHECK_H
#define CKPTD_WIRECHECK_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common.h"

/* 0, or CKPT_EINVAL (a bad string: the message names the field),
 * CKPT_ETOOBIG (a string over CKPT_MAX_DOC) or CKPT_EPROTO (bytes that do
 * not parse). */
int wirecheck_strings(const ProtobufCMessageDescriptor *d, const uint8_t *buf,
    size_t len, ckd_err *e);
/* 1 when s[0..len) is valid UTF-8 without NUL bytes. */
int wirecheck_utf8(const uint8_t *s, size_t len);

#endif
