/*
 * test_seed.c - the examples of Orbax's "Using the Refactored
 * CheckpointManager API" page, in C against a real ckptd:
 *  - single item: save {'a': 0}, wait, restore; a new manager restores and
 *    reads item metadata;
 *  - multiple items: state {'a': 0} + extra_metadata {"version": 1.0}
 *    restored whole and as a subset; item metadata.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "harness.h"

static struct hx_daemon d;

/* Restored item `name` (NULL: default) -> its tree, or NULL. */
static const ckpt_tree *item_tree(const ckpt_restored *r, const char *name)
{
	long i = ckpt_restored_find(r, name);

	return i < 0 ? NULL : ckpt_restored_item_tree(r, (size_t)i);
}

/* Check that tree t is exactly {'a': 0} (an int leaf). */
static void check_a0(const ckpt_tree *t, const char *what)
{
	ckpt_leaf lf;
	long i;

	if (!ok(t != NULL, "%s: tree present", what))
		return;
	is_int(ckpt_tree_nleaves(t), 1, "%s: one leaf", what);
	i = ckpt_tree_find(t, "a");
	if (!ok(i >= 0, "%s: leaf 'a' present", what))
		return;
	ckpt_tree_leaf(t, (size_t)i, &lf);
	is_int(lf.kind, CKPT_LEAF_INT, "%s: 'a' is an int", what);
	is_int(lf.i, 0, "%s: 'a' == 0", what);
}

/* The JSON text equals {"version": 1.0}. */
static int json_is_version(const char *text)
{
	json_error_t err;
	json_t *j, *v;
	int r;

	if (!text)
		return 0;
	j = json_loads(text, 0, &err);
	if (!j)
		return 0;
	v = json_object_get(j, "version");
	r = json_object_size(j) == 1 && json_is_number(v) &&
	    json_number_value(v) == 1.0;
	json_decref(j);
	return r;
}

static void single_item(ckpt_client *c)
{
	char root[HX_PATH], path[HX_PATH];
	ckpt_manager *m = NULL, *m2 = NULL;
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	ckpt_restored *res = NULL;
	uint64_t *steps = NULL;
	size_t n = 0;
	int64_t latest = -2;
	int r, saved = -1;
	char *meta;
	json_t *j;

	hx_path(&d, root, "ckpt2");
	r = ckpt_manager_open(c, root, NULL, &m);
	if (!ok_call(r, c, "single: open manager on a new root"))
		return;
	ok(hx_exists(root), "single: root created");

	ckpt_tree_add_int(t, "a", 0);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, 0, a, &saved);
	ok_call(r, c, "single: save(0, StandardSave({'a': 0}))");
	is_int(saved, 1, "single: save returned True");
	r = ckpt_wait_until_finished(m);
	ok_call(r, c, "single: wait_until_finished");

	r = ckpt_all_steps(m, &steps, &n);
	ok_call(r, c, "single: all_steps");
	ok(n == 1 && steps && steps[0] == 0, "single: all_steps == [0]");
	free(steps);
	r = ckpt_latest_step(m, &latest);
	is_int(latest, 0, "single: latest_step == 0");

	ok(hx_exists(hx_path(&d, path, "ckpt2/0/_CHECKPOINT_METADATA")),
	    "single: 0/_CHECKPOINT_METADATA on disk");
	ok(hx_exists(hx_path(&d, path, "ckpt2/0/default/_METADATA")),
	    "single: 0/default/_METADATA on disk");
	ok(!hx_exists(hx_path(&d, path, "ckpt2/0.ckptd-tmp")),
	    "single: no tmp dir left");

	r = ckpt_restore(m, 0, NULL, &res);
	if (ok_call(r, c, "single: restore(0)")) {
		is_int(ckpt_restored_nitems(res), 1, "single: one item");
		is_int(ckpt_restored_step(res), 0, "single: restored step 0");
		check_a0(item_tree(res, NULL), "single restore");
		ok(strcmp(ckpt_restored_item_name(res, 0), "default") == 0,
		    "single: item is named 'default'");
		ckpt_restored_free(res);
	}

	/* A new manager on the same root, as the page's new_mngr. */
	r = ckpt_manager_open(c, root, NULL, &m2);
	if (ok_call(r, c, "single: second manager")) {
		res = NULL;
		r = ckpt_restore(m2, -1, NULL, &res);
		if (ok_call(r, c, "single: new manager restores latest")) {
			is_int(ckpt_restored_step(res), 0, "single: latest is 0");
			check_a0(item_tree(res, NULL), "single new manager");
			ckpt_restored_free(res);
		}
		res = NULL;
		r = ckpt_item_metadata(m2, 0, &res);
		if (ok_call(r, c, "single: item_metadata(0)")) {
			const ckpt_tree *mt = item_tree(res, NULL);
			long i = mt ? ckpt_tree_find(mt, "a") : -1;

			ok(i >= 0, "single: item_metadata names 'a'");
			ckpt_restored_free(res);
		}
		meta = NULL;
		r = ckpt_metadata(m2, 0, &meta);
		if (ok_call(r, c, "single: step metadata")) {
			j = meta ? json_loads(meta, 0, NULL) : NULL;
			ok(j && json_object_get(json_object_get(j,
			    "item_handlers"), "default"),
			    "single: item_handlers names 'default'");
			json_decref(j);
		}
		free(meta);
		ckpt_manager_close(m2);
	}

	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	is_int(ckpt_manager_close(m), 0, "single: close");
}

static void multi_item(ckpt_client *c)
{
	const char *names[] = { "state", "extra_metadata" };
	char root[HX_PATH], path[HX_PATH];
	ckpt_options *o = ckpt_options_new();
	ckpt_manager *m = NULL;
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	ckpt_restore_args *ra;
	ckpt_restored *res = NULL;
	int r, saved = -1;
	long i;
	char *text, *meta = NULL;
	json_t *j, *h;

	hx_path(&d, root, "ckpt4");
	ckpt_options_set_item_names(o, names, 2);
	r = ckpt_manager_open(c, root, o, &m);
	ckpt_options_free(o);
	if (!ok_call(r, c, "multi: open manager with item_names"))
		return;

	ckpt_tree_add_int(t, "a", 0);
	ckpt_save_args_add_tree(a, "state", CKPT_HANDLER_STANDARD, t);
	ckpt_save_args_add_json(a, "extra_metadata", "{\"version\": 1.0}");
	ckpt_save_args_set_composite(a, 1);
	r = ckpt_save(m, 0, a, &saved);
	ok_call(r, c, "multi: save(0, Composite(state, extra_metadata))");
	is_int(saved, 1, "multi: saved");
	ok_call(ckpt_wait_until_finished(m), c, "multi: wait_until_finished");

	ok(hx_exists(hx_path(&d, path, "ckpt4/0/state/_METADATA")),
	    "multi: 0/state/_METADATA on disk");
	text = hx_read_file(hx_path(&d, path, "ckpt4/0/extra_metadata/metadata"),
	    NULL);
	ok(json_is_version(text),
	    "multi: 0/extra_metadata/metadata is {\"version\": 1.0} (%s)",
	    text ? text : "missing");
	free(text);

	text = hx_read_file(hx_path(&d, path, "ckpt4/0/_CHECKPOINT_METADATA"),
	    NULL);
	j = text ? json_loads(text, 0, NULL) : NULL;
	h = json_object_get(j, "item_handlers");
	ok(json_is_string(json_object_get(h, "state")) &&
	    strstr(json_string_value(json_object_get(h, "state")),
	    "StandardCheckpointHandler"),
	    "multi: _CHECKPOINT_METADATA.item_handlers.state is Standard");
	ok(json_is_string(json_object_get(h, "extra_metadata")) &&
	    strstr(json_string_value(json_object_get(h, "extra_metadata")),
	    "JsonCheckpointHandler"),
	    "multi: _CHECKPOINT_METADATA.item_handlers.extra_metadata is Json");
	ok(json_is_integer(json_object_get(j, "commit_timestamp_nsecs")) &&
	    json_is_integer(json_object_get(j, "init_timestamp_nsecs")),
	    "multi: _CHECKPOINT_METADATA has init/commit timestamps");
	json_decref(j);
	free(text);

	/* Restore as saved. */
	r = ckpt_restore(m, 0, NULL, &res);
	if (ok_call(r, c, "multi: restore(0)")) {
		is_int(ckpt_restored_nitems(res), 2, "multi: two items");
		check_a0(item_tree(res, "state"), "multi restore state");
		i = ckpt_restored_find(res, "extra_metadata");
		ok(i >= 0 && ckpt_restored_item_handler(res, (size_t)i) ==
		    CKPT_HANDLER_JSON, "multi: extra_metadata is a JSON item");
		ok(i >= 0 && json_is_version(ckpt_restored_item_json(res,
		    (size_t)i)), "multi: extra_metadata == {'version': 1.0}");
		ckpt_restored_free(res);
	}

	/* Restore a subset of items. */
	ra = ckpt_restore_args_new();
	ckpt_restore_args_add_item(ra, "state", NULL, 0);
	res = NULL;
	r = ckpt_restore(m, 0, ra, &res);
	if (ok_call(r, c, "multi: restore(0, Composite(state=...))")) {
		is_int(ckpt_restored_nitems(res), 1, "multi: subset has one item");
		check_a0(item_tree(res, "state"), "multi subset state");
		ok(ckpt_restored_find(res, "extra_metadata") < 0,
		    "multi: subset has no extra_metadata");
		ckpt_restored_free(res);
	}
	ckpt_restore_args_free(ra);

	/* An item that is not in the step. */
	ra = ckpt_restore_args_new();
	ckpt_restore_args_add_item(ra, "optimizer", NULL, 0);
	res = NULL;
	r = ckpt_restore(m, 0, ra, &res);
	is_int(r, CKPT_ENOITEM, "multi: restoring a missing item is ENOITEM");
	if (r == 0)
		ckpt_restored_free(res);
	ckpt_restore_args_free(ra);

	res = NULL;
	r = ckpt_item_metadata(m, 0, &res);
	if (ok_call(r, c, "multi: item_metadata(0)")) {
		const ckpt_tree *mt = item_tree(res, "state");
		ckpt_leaf lf;

		i = mt ? ckpt_tree_find(mt, "a") : -1;
		ok(i >= 0, "multi: item_metadata(0).state names 'a'");
		if (i >= 0) {
			ckpt_tree_leaf(mt, (size_t)i, &lf);
			ok(lf.data == NULL || lf.kind != CKPT_LEAF_ARRAY,
			    "multi: metadata carries no array data");
		}
		ckpt_restored_free(res);
	}

	r = ckpt_metadata(m, 0, &meta);
	ok_call(r, c, "multi: metadata(0)");
	j = meta ? json_loads(meta, 0, NULL) : NULL;
	ok(json_object_size(json_object_get(j, "item_handlers")) == 2,
	    "multi: metadata(0) lists both item handlers");
	json_decref(j);
	free(meta);

	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	is_int(ckpt_manager_close(m), 0, "multi: close");
}

int main(void)
{
	ckpt_client *c = NULL;

	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	if (hx_connect(&d, &c) != 0)
		bail_out("cannot connect");
	single_item(c);
	multi_item(c);
	ckpt_disconnect(c);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly on SIGTERM");
	hx_cleanup(&d);
	return done_testing();
}
