/*
 * s3xml.h - a small, bounded scanner for the XML documents S3 answers with
 * (ListBucketResult, InitiateMultipartUploadResult, CompleteMultipart-
 * UploadResult, Error).
 *
 * It is not a general XML parser: no DTD (a <!DOCTYPE is refused, so no
 * entity can expand), no CDATA, attributes are skipped, namespace prefixes
 * are dropped from element names. Depth, name length and the document size
 * are bounded; the scanner never allocates more than one text buffer of the
 * document's size. Element paths are the names from the root joined with
 * '/', e.g. "ListBucketResult/Contents/Key".
 */
#ifndef CKPTD_S3XML_H
#define CKPTD_S3XML_H

#include <stddef.h>

#include "common.h"

#define S3XML_MAX_DEPTH 16
#define S3XML_MAX_NAME 64
/* Documents larger than this are refused with CKPT_ETOOBIG. */
#define S3XML_MAX_DOC (16u << 20)

enum s3xml_event {
	S3XML_OPEN,     /* an element starts: path, no text */
	S3XML_TEXT,     /* an element without child elements ends: its
	                   decoded text (NUL-terminated, may be empty) */
	S3XML_CLOSE,    /* an element ends (after its TEXT, if any) */
};

/* Returns 0 to go on, or a negative CKPT_E* code to stop the scan (which
 * s3xml_scan then returns). */
typedef int (*s3xml_cb)(enum s3xml_event ev, const char *path,
    const char *text, size_t len, void *arg);

/* Scan doc[0..len) (it need not be NUL-terminated) and call cb for every
 * element. Returns 0, CKPT_EPROTO with a message for malformed or
 * unsupported XML (including an unbalanced or truncated document),
 * CKPT_ETOOBIG past the bounds, CKPT_ENOMEM, or cb's code. */
int s3xml_scan(const char *doc, size_t len, s3xml_cb cb, void *arg,
    ckd_err *e);

#endif
