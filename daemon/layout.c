/*
 * layout.c - names in a checkpoint root and the scan of its steps
 * (contract: layout.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "layout.h"

int
store_ends_with(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

int
store_valid_component(const char *s)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > 255)
		return 0;
	if (strchr(s, '/') != NULL)
		return 0;
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return 0;
	if (store_ends_with(s, CKPT_TMP_SUFFIX))
		return 0;
	return 1;
}

/* ---- names ---------------------------------------------------------------------- */

int
store_step_name(const struct store_naming *nm, uint64_t step, char *buf,
    size_t len)
{
	int r;

	if (nm->fixed_len > 255 || memchr(nm->prefix, '\0',
	    sizeof(nm->prefix)) == NULL)
		return CKPT_EINVAL;
	if (nm->prefix[0] != '\0')
		r = snprintf(buf, len, "%s_%0*" PRIu64, nm->prefix,
		    (int)nm->fixed_len, step);
	else
		r = snprintf(buf, len, "%0*" PRIu64, (int)nm->fixed_len, step);
	if (r < 0 || (size_t)r >= len)
		return CKPT_EINVAL;
	return 0;
}

/* Only the canonical spelling matches (the one store_step_name() makes),
 * so that a step number always names exactly one directory. */
int
store_parse_step_name(const struct store_naming *nm, const char *name,
    uint64_t *step)
{
	const char *p = name;
	size_t pl = strnlen(nm->prefix, sizeof(nm->prefix));
	uint64_t v = 0;
	char buf[512];

	if (pl > 0) {
		if (strncmp(name, nm->prefix, pl) != 0 || name[pl] != '_')
			return -1;
		p = name + pl + 1;
	}
	if (*p == '\0')
		return -1;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (store_step_name(nm, v, buf, sizeof(buf)) != 0 ||
	    strcmp(buf, name) != 0)
		return -1;
	*step = v;
	return 0;
}


static int
entry_cmp(const void *a, const void *b)
{
	const struct store_entry *x = a, *y = b;

	if (x->step != y->step)
		return x->step < y->step ? -1 : 1;
	return x->tmp - y->tmp;
}

int
store_scan(const struct store_backend *be, int rootfd,
    const struct store_naming *nm, struct store_entry **out, size_t *n,
    ckd_err *e)
{
	struct store_entry *v = NULL, *nv;
	size_t len = 0, cap = 0, l;
	struct store_list *d;
	const char *dname;
	char base[256];
	uint64_t step;
	int tmp, k, r = 0;

	*out = NULL;
	*n = 0;
	if ((d = be->list_open(rootfd, e)) == NULL)
		return e != NULL ? e->code : CKPT_EIO;
	for (;;) {
		if ((k = be->list_next(d, &dname)) <= 0) {
			if (k < 0)
				r = err_errno(e, errno, "read root directory");
			break;
		}
		l = strlen(dname);
		if (l >= sizeof(base))
			continue;
		memcpy(base, dname, l + 1);
		tmp = 0;
		if (store_ends_with(base, CKPT_TMP_SUFFIX)) {
			base[l - strlen(CKPT_TMP_SUFFIX)] = '\0';
			tmp = 1;
		}
		if (store_parse_step_name(nm, base, &step) != 0)
			continue;
		if (!be->list_is_dir(d))
			continue;
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				break;
			}
			v = nv;
		}
		v[len].step = step;
		v[len].tmp = tmp;
		memcpy(v[len].name, base, strlen(base) + 1);
		len++;
	}
	be->list_close(d);
	if (r != 0) {
		free(v);
		return r;
	}
	if (len > 0)
		qsort(v, len, sizeof(*v), entry_cmp);
	*out = v;
	*n = len;
	return 0;
}
