/*
 * wirecheck.c - string checks on packed protobuf bytes (see wirecheck.h).
 *
 * Wire format: a message is a sequence of (key, value); key = varint
 * (field number << 3 | wire type); wire type 0 varint, 1 eight bytes,
 * 2 varint length + bytes (strings, bytes, sub-messages, packed repeated
 * scalars), 5 four bytes. Groups (3, 4) are not used by ckpt.proto and are
 * refused.
 */
#include <stdio.h>
#include <string.h>

#include "wirecheck.h"

static int
wirecheck_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	unsigned shift = 0;

	*v = 0;
	while (*p < end && shift < 64) {
		uint8_t b = *(*p)++;

		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return 0;
		shift += 7;
	}
	return -1;
}

int
wirecheck_utf8(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		uint32_t cp;
		size_t n, k;

		if (c == 0)
			return 0;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;       /* continuation byte, 0xc0/0xc1, > 0xf4 */
		}
		if (len - i - 1 < n)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		/* Shortest form, no surrogates, at most U+10FFFF. */
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return 0;
		i += n + 1;
	}
	return 1;
}

static int
wirecheck_message(const ProtobufCMessageDescriptor *d, const uint8_t *p,
    const uint8_t *end, unsigned depth, ckd_err *e)
{
	if (depth > CKPT_MAX_NESTING)
		return err_set(e, CKPT_EPROTO, "messages nested deeper than %d",
		    CKPT_MAX_NESTING);
	while (p < end) {
		const ProtobufCFieldDescriptor *f;
		uint64_t key, len;
		int r;

		if (wirecheck_varint(&p, end, &key) != 0)
			return err_set(e, CKPT_EPROTO, "truncated field key");
		switch (key & 7) {
		case 0:
			if (wirecheck_varint(&p, end, &len) != 0)
				return err_set(e, CKPT_EPROTO,
				    "truncated varint");
			continue;
		case 1:
			if (end - p < 8)
				return err_set(e, CKPT_EPROTO,
				    "truncated fixed64");
			p += 8;
			continue;
		case 5:
			if (end - p < 4)
				return err_set(e, CKPT_EPROTO,
				    "truncated fixed32");
			p += 4;
			continue;
		case 2:
			break;
		default:
			return err_set(e, CKPT_EPROTO, "unsupported wire type "
			    "%u", (unsigned)(key & 7));
		}
		if (wirecheck_varint(&p, end, &len) != 0 ||
		    len > (uint64_t)(end - p))
			return err_set(e, CKPT_EPROTO, "truncated field");
		/* Field numbers protobuf-c took as unknown (0, huge) are
		 * none of ours: skipped like any unknown field. */
		f = key >> 3 > UINT32_MAX ? NULL :
		    protobuf_c_message_descriptor_get_field(d,
		    (unsigned)(key >> 3));
		if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING) {
			if (len > CKPT_MAX_DOC)
				return err_set(e, CKPT_ETOOBIG, "string field "
				    "%s.%s is longer than %u bytes", d->name,
				    f->name, CKPT_MAX_DOC);
			if (memchr(p, '\0', len) != NULL)
				return err_set(e, CKPT_EINVAL, "string field "
				    "%s.%s contains a NUL byte", d->name,
				    f->name);
			if (!wirecheck_utf8(p, len))
				return err_set(e, CKPT_EINVAL, "string field "
				    "%s.%s is not valid UTF-8", d->name,
				    f->name);
		} else if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
			if ((r = wirecheck_message(
			    (const ProtobufCMessageDescriptor *)f->descriptor, p, p + len,
			    depth + 1, e)) != 0)
				return r;
		}
		p += len;
	}
	return 0;
}

int
wirecheck_strings(const ProtobufCMessageDescriptor *d, const uint8_t *buf,
    size_t len, ckd_err *e)
{
	return wirecheck_message(d, buf, buf + len, 1, e);
}
