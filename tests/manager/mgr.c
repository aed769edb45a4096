/*
 * mgr.c - save/list helpers for the CheckpointManager tests (see mgr.h).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgr.h"

ckpt_options *
mgr_options(void)
{
	ckpt_options *o = ckpt_options_new();

	if (o == NULL)
		bail_out("ckpt_options_new");
	return o;
}

ckpt_client *
mgr_connect(struct hx_daemon *d)
{
	ckpt_client *c = NULL;

	if (hx_connect(d, &c) != 0) {
		hx_dump_log(d, 20);
		bail_out("cannot connect to ckptd at %s", d->sock);
	}
	return c;
}

ckpt_manager *
mgr_open(ckpt_client *c, const char *root, const ckpt_options *o, int must)
{
	ckpt_manager *m = NULL;
	int r;

	if ((r = ckpt_manager_open(c, root, o, &m)) != 0) {
		if (must)
			bail_out("ckpt_manager_open(%s): %s: %s", root,
			    ckpt_strerror(r), ckpt_client_errmsg(c));
		diag("ckpt_manager_open(%s): %s: %s", root, ckpt_strerror(r),
		    ckpt_client_errmsg(c));
		return NULL;
	}
	return m;
}

/* ---- saving ------------------------------------------------------------------ */

static float
payload_value(uint64_t step, size_t i)
{
	return (float)step * 1000.0f + (float)(i % 1000);
}

int
mgr_save(ckpt_manager *m, uint64_t step, const struct sv *o, int *saved)
{
	static const struct sv none;
	ckpt_tree *t = NULL;
	ckpt_save_args *a = NULL;
	float *w = NULL;
	size_t bytes, n, i;
	int64_t shape[1];
	int r;

	if (o == NULL)
		o = &none;
	bytes = o->bytes ? o->bytes : 64;
	n = bytes / sizeof(float);
	shape[0] = (int64_t)n;
	if (saved != NULL)
		*saved = -1;
	if ((w = malloc(n * sizeof(float))) == NULL)
		return CKPT_ENOMEM;
	if (n <= 4096) {
		for (i = 0; i < n; i++)
			w[i] = payload_value(step, i);
	} else {
		/* Large payloads: the head is checked, the rest is bulk. */
		memset(w, (int)(step & 0x7f), n * sizeof(float));
		for (i = 0; i < 16; i++)
			w[i] = payload_value(step, i);
	}
	r = CKPT_ENOMEM;
	if ((t = ckpt_tree_new()) == NULL || (a = ckpt_save_args_new()) == NULL)
		goto out;
	if ((r = ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, w,
	    n * sizeof(float))) != 0 ||
	    (r = ckpt_tree_add_int(t, "step", (int64_t)step)) != 0 ||
	    (r = ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t)) != 0)
		goto out;
	if (o->metrics != NULL &&
	    (r = ckpt_save_args_set_metrics(a, o->metrics)) != 0)
		goto out;
	if (o->custom != NULL &&
	    (r = ckpt_save_args_set_custom_metadata(a, o->custom)) != 0)
		goto out;
	if ((o->ts_ns != 0 &&
	    (r = ckpt_save_args_set_timestamp(a, o->ts_ns)) != 0) ||
	    (o->force && (r = ckpt_save_args_set_force(a, 1)) != 0) ||
	    (o->preempted && (r = ckpt_save_args_set_preempted(a, 1)) != 0))
		goto out;
	r = ckpt_save(m, step, a, saved);
out:
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	free(w);
	return r;
}

int
mgr_save_wait(ckpt_manager *m, uint64_t step, const struct sv *o, int *saved)
{
	int r = mgr_save(m, step, o, saved);

	if (r != 0)
		return r;
	return ckpt_wait_until_finished(m);
}

int
mgr_check_restore(ckpt_manager *m, int64_t step, int64_t want_step,
    const ckpt_restore_args *ra)
{
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	ckpt_leaf lf;
	long it, li;
	int r, bad = 0;
	size_t i;

	if ((r = ckpt_restore(m, step, ra, &res)) != 0)
		return r;
	if ((int64_t)ckpt_restored_step(res) != want_step) {
		diag("restored step %llu, expected %lld",
		    (unsigned long long)ckpt_restored_step(res),
		    (long long)want_step);
		bad = 1;
	}
	it = ckpt_restored_find(res, NULL);
	t = it >= 0 ? ckpt_restored_item_tree(res, (size_t)it) : NULL;
	if (t == NULL) {
		diag("restored step has no default tree item");
		bad = 1;
		goto out;
	}
	li = ckpt_tree_find(t, "step");
	if (li < 0 || ckpt_tree_leaf(t, (size_t)li, &lf) != 0 ||
	    lf.kind != CKPT_LEAF_INT || lf.i != want_step) {
		diag("leaf 'step' missing or not %lld", (long long)want_step);
		bad = 1;
	}
	li = ckpt_tree_find(t, "w");
	if (li < 0 || ckpt_tree_leaf(t, (size_t)li, &lf) != 0 ||
	    lf.kind != CKPT_LEAF_ARRAY || lf.dtype != CKPT_F32 ||
	    lf.data == NULL || lf.nbytes < 16 * sizeof(float)) {
		diag("leaf 'w' missing or malformed");
		bad = 1;
		goto out;
	}
	for (i = 0; i < 16; i++) {
		float v = ((const float *)lf.data)[i];
		if (v != payload_value((uint64_t)want_step, i)) {
			diag("w[%zu] = %g, expected %g", i, v,
			    payload_value((uint64_t)want_step, i));
			bad = 1;
			break;
		}
	}
out:
	ckpt_restored_free(res);
	return bad;
}

/* ---- steps ------------------------------------------------------------------- */

struct strbuf {
	char *s;
	size_t len, cap;
};

static void
sb_add(struct strbuf *b, const char *s)
{
	size_t n = strlen(s);

	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2 + 64;
		char *ns = realloc(b->s, cap);
		if (ns == NULL)
			abort();
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n + 1);
	b->len += n;
}

char *
mgr_steps(ckpt_manager *m)
{
	struct strbuf b = { 0 };
	uint64_t *steps = NULL;
	size_t n = 0, i;
	char num[64];
	int r;

	if ((r = ckpt_all_steps(m, &steps, &n)) != 0) {
		snprintf(num, sizeof num, "ERR %s: ", ckpt_strerror(r));
		sb_add(&b, num);
		sb_add(&b, ckpt_manager_errmsg(m));
		return b.s;
	}
	sb_add(&b, "[");
	for (i = 0; i < n; i++) {
		snprintf(num, sizeof num, "%s%llu", i ? "," : "",
		    (unsigned long long)steps[i]);
		sb_add(&b, num);
	}
	sb_add(&b, "]");
	free(steps);
	return b.s;
}

static int
cmp_ver(const void *a, const void *b)
{
	return strverscmp(*(char *const *)a, *(char *const *)b);
}

static char *
disk_list(const char *root, const char *skip, int all)
{
	struct strbuf b = { 0 };
	char **names = NULL;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	DIR *dir;

	if ((dir = opendir(root)) == NULL) {
		sb_add(&b, "ERR opendir: ");
		sb_add(&b, strerror(errno));
		return b.s;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (!all && (de->d_name[0] == '.' ||
		    strcmp(de->d_name, "metadata") == 0 ||
		    (skip != NULL && strcmp(de->d_name, skip) == 0)))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((names = realloc(names, cap * sizeof *names)) == NULL)
				abort();
		}
		names[n++] = strdup(de->d_name);
	}
	closedir(dir);
	if (n > 0)
		qsort(names, n, sizeof *names, cmp_ver);
	sb_add(&b, "[");
	for (i = 0; i < n; i++) {
		if (i)
			sb_add(&b, ",");
		sb_add(&b, names[i]);
		free(names[i]);
	}
	sb_add(&b, "]");
	free(names);
	return b.s;
}

char *
mgr_disk(const char *root, const char *skip)
{
	return disk_list(root, skip, 0);
}

char *
mgr_disk_all(const char *root)
{
	return disk_list(root, NULL, 1);
}
