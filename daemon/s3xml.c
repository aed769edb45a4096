/*
 * s3xml.c - the bounded scanner of S3's XML answers (see s3xml.h).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3xml.h"

struct scan {
	const char *doc;
	size_t len, pos;
	char path[S3XML_MAX_DEPTH * (S3XML_MAX_NAME + 1) + 1];
	size_t plen[S3XML_MAX_DEPTH + 1];   /* path length at each depth */
	bool has_child[S3XML_MAX_DEPTH + 1];
	int depth;
	bool seen_root;
	char *text;                         /* len + 1 bytes */
	size_t tlen;
	ckd_err *e;
};

static bool
is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static bool
is_name_char(char ch)
{
	return ch != '\0' && !is_space(ch) && ch != '/' && ch != '>' &&
	    ch != '<' && ch != '=' && ch != '"' && ch != '\'' && ch != '&';
}

static bool
starts(const struct scan *s, const char *lit)
{
	size_t n = strlen(lit);
	return s->len - s->pos >= n && memcmp(s->doc + s->pos, lit, n) == 0;
}

/* Move past the next occurrence of lit. */
static int
skip_past(struct scan *s, const char *lit)
{
	size_t n = strlen(lit);
	for (; s->len - s->pos >= n; s->pos++) {
		if (memcmp(s->doc + s->pos, lit, n) == 0) {
			s->pos += n;
			return 0;
		}
	}
	return err_set(s->e, CKPT_EPROTO, "xml: unterminated '%s'", lit);
}

/* Read an element name at pos; *name points into doc, namespace prefix
 * dropped. */
static int
read_name(struct scan *s, const char **name, size_t *nlen)
{
	size_t start = s->pos;
	while (s->pos < s->len && is_name_char(s->doc[s->pos]))
		s->pos++;
	size_t n = s->pos - start;
	if (n == 0)
		return err_set(s->e, CKPT_EPROTO, "xml: missing element name at byte %zu", start);
	const char *p = s->doc + start;
	const char *colon = memchr(p, ':', n);
	if (colon != NULL) {
		n -= (size_t)(colon + 1 - p);
		p = colon + 1;
		if (n == 0)
			return err_set(s->e, CKPT_EPROTO, "xml: empty local name at byte %zu", start);
	}
	if (n > S3XML_MAX_NAME)
		return err_set(s->e, CKPT_ETOOBIG, "xml: element name longer than %d bytes",
		    S3XML_MAX_NAME);
	*name = p;
	*nlen = n;
	return 0;
}

static void
skip_space(struct scan *s)
{
	while (s->pos < s->len && is_space(s->doc[s->pos]))
		s->pos++;
}

static int
open_element(struct scan *s, const char *name, size_t nlen, s3xml_cb cb, void *arg)
{
	if (s->depth == 0 && s->seen_root)
		return err_set(s->e, CKPT_EPROTO, "xml: more than one root element");
	if (s->depth >= S3XML_MAX_DEPTH)
		return err_set(s->e, CKPT_ETOOBIG, "xml: nesting deeper than %d", S3XML_MAX_DEPTH);
	s->seen_root = true;
	s->has_child[s->depth] = true;
	size_t at = s->plen[s->depth];
	if (s->depth > 0)
		s->path[at++] = '/';
	memcpy(s->path + at, name, nlen);
	at += nlen;
	s->path[at] = '\0';
	s->depth++;
	s->plen[s->depth] = at;
	s->has_child[s->depth] = false;
	s->tlen = 0;
	return cb(S3XML_OPEN, s->path, NULL, 0, arg);
}

static int
close_element(struct scan *s, s3xml_cb cb, void *arg)
{
	int r;
	if (!s->has_child[s->depth]) {
		s->text[s->tlen] = '\0';
		if ((r = cb(S3XML_TEXT, s->path, s->text, s->tlen, arg)) != 0)
			return r;
	}
	if ((r = cb(S3XML_CLOSE, s->path, NULL, 0, arg)) != 0)
		return r;
	s->depth--;
	s->path[s->plen[s->depth]] = '\0';
	s->tlen = 0;
	return 0;
}

static int
start_tag(struct scan *s, s3xml_cb cb, void *arg)
{
	const char *name;
	size_t nlen;
	int r;

	s->pos++;   /* '<' */
	if ((r = read_name(s, &name, &nlen)) != 0)
		return r;
	for (;;) {
		skip_space(s);
		if (s->pos >= s->len)
			return err_set(s->e, CKPT_EPROTO, "xml: truncated start tag");
		char ch = s->doc[s->pos];
		if (ch == '>') {
			s->pos++;
			return open_element(s, name, nlen, cb, arg);
		}
		if (ch == '/') {
			if (!starts(s, "/>"))
				return err_set(s->e, CKPT_EPROTO, "xml: bad '/' in a start tag");
			s->pos += 2;
			if ((r = open_element(s, name, nlen, cb, arg)) != 0)
				return r;
			return close_element(s, cb, arg);
		}
		/* An attribute: name="value" or name='value', skipped. */
		const char *an;
		size_t alen;
		if ((r = read_name(s, &an, &alen)) != 0)
			return r;
		skip_space(s);
		if (s->pos >= s->len || s->doc[s->pos] != '=')
			return err_set(s->e, CKPT_EPROTO, "xml: attribute without value");
		s->pos++;
		skip_space(s);
		if (s->pos >= s->len || (s->doc[s->pos] != '"' && s->doc[s->pos] != '\''))
			return err_set(s->e, CKPT_EPROTO, "xml: unquoted attribute value");
		char q[2] = { s->doc[s->pos], '\0' };
		s->pos++;
		if ((r = skip_past(s, q)) != 0)
			return r;
	}
}

static int
end_tag(struct scan *s, s3xml_cb cb, void *arg)
{
	const char *name;
	size_t nlen;
	int r;

	s->pos += 2;   /* "</" */
	if ((r = read_name(s, &name, &nlen)) != 0)
		return r;
	skip_space(s);
	if (s->pos >= s->len || s->doc[s->pos] != '>')
		return err_set(s->e, CKPT_EPROTO, "xml: truncated end tag");
	s->pos++;
	if (s->depth == 0)
		return err_set(s->e, CKPT_EPROTO, "xml: end tag without start tag");
	size_t from = s->depth > 1 ? s->plen[s->depth - 1] + 1 : 0;
	size_t cur = s->plen[s->depth] - from;
	if (cur != nlen || memcmp(s->path + from, name, nlen) != 0)
		return err_set(s->e, CKPT_EPROTO, "xml: mismatched end tag </%.*s>",
		    (int)nlen, name);
	return close_element(s, cb, arg);
}

static void
put_utf8(struct scan *s, uint32_t cp)
{
	char *t = s->text + s->tlen;
	if (cp < 0x80) {
		t[0] = (char)cp;
		s->tlen += 1;
	} else if (cp < 0x800) {
		t[0] = (char)(0xc0 | (cp >> 6));
		t[1] = (char)(0x80 | (cp & 0x3f));
		s->tlen += 2;
	} else if (cp < 0x10000) {
		t[0] = (char)(0xe0 | (cp >> 12));
		t[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		t[2] = (char)(0x80 | (cp & 0x3f));
		s->tlen += 3;
	} else {
		t[0] = (char)(0xf0 | (cp >> 18));
		t[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		t[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		t[3] = (char)(0x80 | (cp & 0x3f));
		s->tlen += 4;
	}
}

/* An entity at pos ('&'). Its UTF-8 form is never longer than the
 * entity itself, so the text buffer (document size) cannot overflow. */
static int
entity(struct scan *s)
{
	static const struct {
		const char *name;
		char ch;
	} named[] = {
		{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
		{ "&quot;", '"' }, { "&apos;", '\'' },
	};
	for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
		if (starts(s, named[i].name)) {
			s->text[s->tlen++] = named[i].ch;
			s->pos += strlen(named[i].name);
			return 0;
		}
	}
	if (!starts(s, "&#"))
		return err_set(s->e, CKPT_EPROTO, "xml: unknown entity at byte %zu", s->pos);
	size_t p = s->pos + 2;
	bool hex = p < s->len && s->doc[p] == 'x';
	if (hex)
		p++;
	uint32_t cp = 0;
	size_t digits = 0;
	for (; p < s->len && s->doc[p] != ';'; p++, digits++) {
		char ch = s->doc[p];
		uint32_t d;
		if (ch >= '0' && ch <= '9')
			d = (uint32_t)(ch - '0');
		else if (hex && ch >= 'a' && ch <= 'f')
			d = (uint32_t)(ch - 'a' + 10);
		else if (hex && ch >= 'A' && ch <= 'F')
			d = (uint32_t)(ch - 'A' + 10);
		else
			return err_set(s->e, CKPT_EPROTO, "xml: bad character reference");
		if (digits >= 8)
			return err_set(s->e, CKPT_EPROTO, "xml: character reference too long");
		cp = cp * (hex ? 16 : 10) + d;
	}
	if (p >= s->len || digits == 0 || cp == 0 || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return err_set(s->e, CKPT_EPROTO, "xml: bad character reference");
	/* "&#N;" is at least 4 bytes; 4 bytes of UTF-8 need cp >= 0x10000,
	 * which takes at least 5 decimal or 5 hex digits. */
	put_utf8(s, cp);
	s->pos = p + 1;
	return 0;
}

int
s3xml_scan(const char *doc, size_t len, s3xml_cb cb, void *arg, ckd_err *e)
{
	struct scan *s = NULL;
	int r = 0;

	if (len > S3XML_MAX_DOC)
		return err_set(e, CKPT_ETOOBIG, "xml: document of %zu bytes (limit %u)",
		    len, S3XML_MAX_DOC);
	if ((s = calloc(1, sizeof(*s))) == NULL || (s->text = malloc(len + 1)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "xml: out of memory");
		goto out;
	}
	s->doc = doc;
	s->len = len;
	s->e = e;
	if (starts(s, "\xef\xbb\xbf"))
		s->pos = 3;
	while (s->pos < s->len) {
		char ch = s->doc[s->pos];
		if (ch == '<') {
			if (starts(s, "<?")) {
				r = skip_past(s, "?>");
			} else if (starts(s, "<!--")) {
				r = skip_past(s, "-->");
			} else if (starts(s, "<!")) {
				r = err_set(e, CKPT_EPROTO,
				    "xml: DTD, CDATA and declarations are not accepted");
			} else if (starts(s, "</")) {
				r = end_tag(s, cb, arg);
			} else {
				r = start_tag(s, cb, arg);
			}
		} else if (s->depth == 0) {
			if (!is_space(ch))
				r = err_set(e, CKPT_EPROTO, "xml: text outside the root element");
			s->pos++;
		} else if (ch == '&') {
			r = entity(s);
		} else if (ch == '\0') {
			r = err_set(e, CKPT_EPROTO, "xml: NUL byte in text");
		} else {
			s->text[s->tlen++] = ch;
			s->pos++;
		}
		if (r != 0)
			goto out;
	}
	if (!s->seen_root || s->depth != 0)
		r = err_set(e, CKPT_EPROTO, "xml: truncated document");
out:
	if (s != NULL)
		free(s->text);
	free(s);
	return r;
}
