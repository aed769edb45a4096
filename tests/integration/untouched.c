/*
 * untouched.c - a root that bad inputs must leave as it was, and the
 * check that they did (see untouched.h).
 */
#include <stdlib.h>
#include <string.h>

#include "untouched.h"

void
untouched_make(struct hx_daemon *d, struct untouched *u, const char *name)
{
	ckpt_client *c;
	ckpt_manager *m;
	ckpt_tree *t;
	ckpt_save_args *a;
	float w[4] = { 1, 2, 3, 4 };
	int64_t shape[1] = { 4 };

	hx_path(d, u->root, "%s", name);
	if (hx_connect(d, &c) != 0 ||
	    ckpt_manager_open(c, u->root, NULL, &m) != 0)
		bail_out("cannot open the root %s", u->root);
	t = ckpt_tree_new();
	ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, w, sizeof w);
	a = ckpt_save_args_new();
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	ok_call(ckpt_save(m, 0, a, NULL), c, "step 0 saved");
	ok_call(ckpt_wait_until_finished(m), c, "step 0 committed");
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	untouched_watch(u);
}

void
untouched_watch(struct untouched *u)
{
	if ((u->before = hx_snapshot(u->root)) == NULL)
		bail_out("cannot list %s", u->root);
}

void
untouched_probe(struct hx_daemon *d, const struct untouched *u,
    const char *what)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	uint64_t *steps = NULL;
	size_t n = 0;
	char *now;
	int r;

	ok(hx_alive(d), "%s: ckptd still running", what);
	r = hx_connect(d, &c);
	if (r == 0)
		r = ckpt_ping(c);
	if (r == 0)
		r = ckpt_manager_open(c, u->root, NULL, &m);
	if (r == 0)
		r = ckpt_all_steps(m, &steps, &n);
	is_int(r, 0, "%s: another client is served", what);
	ok(n == 1 && steps != NULL && steps[0] == 0, "%s: the root still lists "
	    "only step 0", what);
	free(steps);
	if (m != NULL)
		ckpt_manager_close(m);
	if (c != NULL)
		ckpt_disconnect(c);
	now = hx_snapshot(u->root);
	if (!ok(now != NULL && strcmp(now, u->before) == 0, "%s: nothing "
	    "changed on disk", what))
		diag("before:\n%s\nafter:\n%s", u->before,
		    now != NULL ? now : "(cannot list)");
	free(now);
}

void
untouched_free(struct untouched *u)
{
	free(u->before);
	u->before = NULL;
}
