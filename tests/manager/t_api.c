/*
 * t_api.c - step naming, StepAlreadyExists, read-only managers, delete
 * (plain, todelete_subdir, background), root metadata, restore /
 * metrics / metadata, leftover tmp directories.
 */
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <jansson.h>

#include "tests.h"

static int
is_dir(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- step_prefix / step_format_fixed_length -------------------------- */

void
test_naming(struct hx_daemon *d)
{
	char root[HX_PATH], p[HX_PATH];
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_step_info *infos = NULL;
	ckpt_manager *m;
	char *saved;
	size_t n = 0;
	int r;

	snprintf(root, sizeof root, "%s", root_path(d, "named"));
	is_int(ckpt_options_set_step_prefix(o, "bad/prefix"), CKPT_EINVAL,
	    "a step_prefix with '/' is rejected");
	ok(ckpt_options_set_step_prefix(o, "ckpt") == 0 &&
	    ckpt_options_set_step_format_fixed_length(o, 8) == 0,
	    "step_prefix='ckpt', step_format_fixed_length=8");
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 5, 5, NULL, 0, 0, NULL);
	free(saved);
	saved = save_range(m, 12, 12, NULL, 0, 0, NULL);
	free(saved);
	is_disk(root, NULL, "[ckpt_00000005,ckpt_00000012]",
	    "directory names on disk are <prefix>_<zero-padded step>");
	hx_join(p, root, "ckpt_00000005/_CHECKPOINT_METADATA");
	ok(hx_exists(p), "ckpt_00000005/_CHECKPOINT_METADATA exists");
	hx_join(p, root, "ckpt_00000005/default");
	ok(is_dir(p), "ckpt_00000005/default is the default item's folder");
	is_steps(m, "[5,12]", "all_steps lists the named steps");
	r = ckpt_list_steps(m, &infos, &n);
	ok_rc(r, m, "ckpt_list_steps");
	ok(n == 2 && strcmp(infos[0].name, "ckpt_00000005") == 0 &&
	    strcmp(infos[1].name, "ckpt_00000012") == 0,
	    "ckpt_list_steps names the directories (%s, %s)",
	    n > 0 ? infos[0].name : "-", n > 1 ? infos[1].name : "-");
	free(infos);
	ok_rc(mgr_check_restore(m, 5, 5, NULL), m, "restore step 5 by number");
	ckpt_manager_close(m);

	/* Reopen on a new connection, then after a daemon restart. */
	ckpt_disconnect(c);
	c = mgr_connect(d);
	m = mgr_open(c, root, o, 1);
	is_steps(m, "[5,12]", "reopening finds the named steps");
	ckpt_disconnect(c);
	if (hx_restart(d) != 0)
		bail_out("ckptd did not come back");
	c = mgr_connect(d);
	m = mgr_open(c, root, o, 1);
	is_steps(m, "[5,12]", "after a daemon restart the named steps are found");
	ok_rc(mgr_check_restore(m, -1, 12, NULL), m, "restore latest (12)");
	saved = save_range(m, 13, 13, NULL, 0, 0, NULL);
	is_str(saved, "[13]", "saving continues");
	free(saved);
	hx_join(p, root, "ckpt_00000013");
	ok(is_dir(p), "ckpt_00000013 on disk");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* Prefix only: "<prefix>_<step>" without padding. */
	o = mgr_options();
	ckpt_options_set_step_prefix(o, "step");
	snprintf(root, sizeof root, "%s", root_path(d, "prefix-only"));
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 7, 7, NULL, 0, 0, NULL);
	free(saved);
	is_disk(root, NULL, "[step_7]", "step_prefix only: step_7");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* Fixed length only. */
	o = mgr_options();
	ckpt_options_set_step_format_fixed_length(o, 4);
	snprintf(root, sizeof root, "%s", root_path(d, "pad-only"));
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 7, 7, NULL, 0, 0, NULL);
	free(saved);
	is_disk(root, NULL, "[0007]", "step_format_fixed_length only: 0007");
	is_steps(m, "[7]", "listed as step 7");
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- StepAlreadyExists -------------------------------------------------------- */

void
test_exists(struct hx_daemon *d)
{
	char root[HX_PATH];
	ckpt_client *c = mgr_connect(d);
	ckpt_manager *m;
	int saved, r;

	snprintf(root, sizeof root, "%s", root_path(d, "exists"));
	m = mgr_open(c, root, NULL, 1);
	r = mgr_save_wait(m, 3, NULL, &saved);
	ok(r == 0 && saved == 1, "step 3 saved");

	/* Orbax: without force, should_save(3) is False (3 <= latest). */
	r = mgr_save(m, 3, NULL, &saved);
	ok_rc(r, m, "save(3) again without force: no error");
	is_int(saved, 0, "save(3) again without force: saved=0 (should_save False)");

	/* With force: StepAlreadyExistsError. */
	r = mgr_save(m, 3, SV(.force = 1), &saved);
	is_rc(r, CKPT_EEXIST, m, "forced save of existing step 3: CKPT_EEXIST");
	is_str(ckpt_manager_errmsg(m), "Checkpoint for step 3 already exists.",
	    "message is Orbax's");
	ok_rc(ckpt_wait_until_finished(m), m, "nothing pending after EEXIST");
	ok_rc(ckpt_check_for_errors(m), m, "EEXIST is not an async error");
	is_steps(m, "[3]", "still [3]");
	ok_rc(mgr_check_restore(m, 3, 3, NULL), m,
	    "step 3's content is untouched");

	/* An older step that does not exist may be forced. */
	r = mgr_save_wait(m, 1, SV(.force = 1), &saved);
	ok_rc(r, m, "forced save of step 1 (< latest, absent)");
	is_int(saved, 1, "step 1 saved");
	is_steps(m, "[1,3]", "[1,3]");
	r = mgr_save(m, 1, SV(.force = 1), &saved);
	is_rc(r, CKPT_EEXIST, m, "forced save of existing step 1: CKPT_EEXIST");
	is_str(ckpt_manager_errmsg(m), "Checkpoint for step 1 already exists.",
	    "message names step 1");

	/* A second manager on the same root sees the step too. */
	{
		ckpt_client *c2 = mgr_connect(d);
		ckpt_manager *m2 = mgr_open(c2, root, NULL, 1);

		r = mgr_save(m2, 3, SV(.force = 1), &saved);
		is_rc(r, CKPT_EEXIST, m2,
		    "another connection: forced save of step 3: CKPT_EEXIST");
		is_str(ckpt_manager_errmsg(m2),
		    "Checkpoint for step 3 already exists.", "Orbax's message");
		ckpt_disconnect(c2);
	}
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

/* ---- read_only ---------------------------------------------------------------- */

void
test_read_only(struct hx_daemon *d)
{
	char root[HX_PATH], *before, *after, *saved;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_manager *m, *ro;
	int should, r, x;

	snprintf(root, sizeof root, "%s", root_path(d, "ro"));
	m = mgr_open(c, root, NULL, 1);
	saved = save_range(m, 1, 2, NULL, 0, 0, NULL);
	is_str(saved, "[1,2]", "steps 1,2 saved by a writable manager");
	free(saved);
	ckpt_manager_close(m);

	before = mgr_disk_all(root);
	ckpt_options_set_read_only(o, 1);
	ro = mgr_open(c, root, o, 1);
	is_steps(ro, "[1,2]", "read-only manager lists [1,2]");
	should = -1;
	r = ckpt_should_save(ro, 3, &should);
	ok_rc(r, ro, "should_save(3) on a read-only manager");
	is_int(should, 0, "should_save is false when read_only");
	x = -1;
	r = mgr_save(ro, 3, NULL, &x);
	/* ckpt.h: saved=0 when the policy declines; CKPT_EREADONLY is
	 * listed among save's errors. Either way nothing is written. */
	ok((r == 0 && x == 0) || r == CKPT_EREADONLY,
	    "read-only save: saved=0 or CKPT_EREADONLY (rc=%d saved=%d)", r, x);
	ok_rc(ckpt_wait_until_finished(ro), ro, "wait on a read-only manager");
	r = ckpt_delete(ro, 1);
	is_rc(r, 0, ro, "read-only delete(1) is a no-op returning 0");
	is_steps(ro, "[1,2]", "still [1,2] after the read-only delete");
	ok_rc(mgr_check_restore(ro, -1, 2, NULL), ro,
	    "a read-only manager restores the latest step");
	after = mgr_disk_all(root);
	is_str(after, before, "nothing changed on disk");
	free(before);
	free(after);
	ckpt_manager_close(ro);

	/* read_only + create on a missing root creates nothing. */
	snprintf(root, sizeof root, "%s", root_path(d, "ro-missing"));
	ro = NULL;
	r = ckpt_manager_open(c, root, o, &ro);
	ok(!hx_exists(root), "read-only open does not create the root "
	    "(rc=%d)", r);
	if (ro != NULL)
		ckpt_manager_close(ro);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* A read-only manager on a root that does not exist: the daemon opens it
 * without a root and answers as for an empty root, with Orbax's messages
 * and its own step names; a reload finds the root once it is there. */
void
test_read_only_absent_root(struct hx_daemon *d)
{
	char root[HX_PATH], want[HX_PATH + 64], *json = (char *)1, *saved;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_restored *res = NULL;
	ckpt_manager *ro = NULL, *w;
	int64_t latest = 0;
	int r, should = -1;

	snprintf(root, sizeof root, "%s", root_path(d, "ro-absent"));
	ckpt_options_set_read_only(o, 1);
	ckpt_options_set_step_prefix(o, "ck");
	ckpt_options_set_step_format_fixed_length(o, 4);
	r = ckpt_manager_open(c, root, o, &ro);
	is_int(r, 0, "read-only open of a missing root succeeds");
	if (ro == NULL) {
		ckpt_options_free(o);
		ckpt_disconnect(c);
		return;
	}
	ok(!hx_exists(root), "the root is not created");
	is_steps(ro, "[]", "no steps");
	ok_rc(ckpt_latest_step(ro, &latest), ro, "latest_step");
	is_int(latest, -1, "no latest step");
	ok_rc(ckpt_should_save(ro, 1, &should), ro, "should_save");
	is_int(should, 0, "should_save is false");

	r = ckpt_restore(ro, -1, NULL, &res);
	is_rc(r, CKPT_ENOSTEPS, ro, "restore(latest): CKPT_ENOSTEPS");
	snprintf(want, sizeof want, "No steps found in %s.", root);
	is_str(ckpt_manager_errmsg(ro), want, "its message, from the daemon");
	r = ckpt_restore(ro, 7, NULL, &res);
	is_rc(r, CKPT_ENOTFOUND, ro, "restore(7): CKPT_ENOTFOUND");
	snprintf(want, sizeof want, "Checkpoint at %s/ck_0007 not found.",
	    root);
	is_str(ckpt_manager_errmsg(ro), want,
	    "its message names the step by the manager's naming");
	r = ckpt_item_metadata(ro, 8, &res);
	is_rc(r, CKPT_ENOTFOUND, ro, "item_metadata(8): CKPT_ENOTFOUND");
	snprintf(want, sizeof want, "Checkpoint at %s/ck_0008 not found.",
	    root);
	is_str(ckpt_manager_errmsg(ro), want, "item_metadata's message");
	r = ckpt_metadata(ro, 9, &json);
	is_rc(r, CKPT_ENOTFOUND, ro, "metadata(9): CKPT_ENOTFOUND");
	snprintf(want, sizeof want, "Checkpoint at %s/ck_0009 not found.",
	    root);
	is_str(ckpt_manager_errmsg(ro), want, "metadata's message");
	json = (char *)1;
	ok_rc(ckpt_metadata(ro, -1, &json), ro, "root metadata");
	ok(json == NULL, "no root metadata");
	r = mgr_save(ro, 1, NULL, &should);
	ok(r == CKPT_EREADONLY || (r == 0 && should == 0),
	    "save refused as read-only (rc=%d)", r);
	ok_rc(ckpt_wait_until_finished(ro), ro, "wait_until_finished");
	ok_rc(ckpt_reload(ro), ro, "reload while the root is missing");
	is_steps(ro, "[]", "still no steps");
	ok(!hx_exists(root), "still not created");

	/* The root appears: reload reads it. */
	ckpt_options_set_read_only(o, 0);
	w = mgr_open(c, root, o, 1);
	saved = save_range(w, 3, 3, NULL, 0, 0, NULL);
	is_str(saved, "[3]", "step 3 saved by a writable manager");
	free(saved);
	ckpt_manager_close(w);
	ok_rc(ckpt_reload(ro), ro, "reload once the root exists");
	is_steps(ro, "[3]", "the reloaded manager lists [3]");
	ok_rc(mgr_check_restore(ro, -1, 3, NULL), ro, "and restores it");
	r = ckpt_restore(ro, 7, NULL, &res);
	is_rc(r, CKPT_ENOTFOUND, ro, "restore(7) on the root: CKPT_ENOTFOUND");
	snprintf(want, sizeof want, "Checkpoint at %s/ck_0007 not found.",
	    root);
	is_str(ckpt_manager_errmsg(ro), want, "the same message as before");
	ok_rc(ckpt_manager_close(ro), NULL, "close");
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- delete ----------------------------------------------------------------------- */

void
test_delete(struct hx_daemon *d)
{
	char root[HX_PATH], p[HX_PATH], *saved;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o;
	ckpt_manager *m;
	int64_t t0;
	int r;

	/* Plain delete. */
	snprintf(root, sizeof root, "%s", root_path(d, "del"));
	m = mgr_open(c, root, NULL, 1);
	saved = save_range(m, 1, 4, NULL, 0, 0, NULL);
	free(saved);
	ok_rc(ckpt_delete(m, 2), m, "delete(2)");
	is_steps(m, "[1,3,4]", "[1,3,4] after delete(2)");
	is_disk(root, NULL, "[1,3,4]", "step 2's directory is gone");
	r = ckpt_delete(m, 9);
	is_rc(r, CKPT_ENOTFOUND, m, "delete(9): CKPT_ENOTFOUND");
	is_str(ckpt_manager_errmsg(m),
	    "Requested deleting a non-existent step: 9.", "Orbax's message");
	r = ckpt_delete(m, 2);
	is_rc(r, CKPT_ENOTFOUND, m, "delete(2) again: CKPT_ENOTFOUND");
	is_str(ckpt_manager_errmsg(m),
	    "Requested deleting a non-existent step: 2.", "Orbax's message");
	ok_rc(ckpt_delete(m, 4), m, "delete(4), the latest");
	is_steps(m, "[1,3]", "[1,3]");
	{
		int64_t latest = -2;
		ckpt_latest_step(m, &latest);
		is_int(latest, 3, "latest_step follows the delete");
	}
	saved = save_range(m, 4, 4, NULL, 0, 0, NULL);
	is_str(saved, "[4]", "step 4 can be saved again after its delete");
	free(saved);
	ckpt_manager_close(m);

	/* todelete_subdir. */
	o = mgr_options();
	ckpt_options_set_todelete_subdir(o, "trash");
	snprintf(root, sizeof root, "%s", root_path(d, "trash"));
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 1, 3, NULL, 0, 0, NULL);
	free(saved);
	ok_rc(ckpt_delete(m, 2), m, "delete(2) with todelete_subdir='trash'");
	is_steps(m, "[1,3]", "[1,3]");
	is_disk(root, "trash", "[1,3]", "step 2 left the root");
	hx_join(p, root, "trash/2/_CHECKPOINT_METADATA");
	ok(hx_exists(p), "moved to <root>/trash/2 (complete)");
	hx_join(p, root, "trash");
	is_disk(p, NULL, "[2]", "trash holds exactly [2]");
	ckpt_manager_close(m);
	/* Retention moves into the subdir too. */
	ckpt_options_set_max_to_keep(o, 1);
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 4, 4, NULL, 0, 0, NULL);
	free(saved);
	is_steps(m, "[4]", "max_to_keep=1 with todelete_subdir -> [4]");
	is_disk(p, NULL, "[1,2,3]", "retention moved 1 and 3 into trash");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* Background delete. */
	o = mgr_options();
	ckpt_options_set_enable_background_delete(o, 1);
	ckpt_options_set_max_to_keep(o, 1);
	snprintf(root, sizeof root, "%s", root_path(d, "bg"));
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 1, 3, SV(.bytes = 4 << 20), 0, 0, NULL);
	is_str(saved, "[1,2,3]", "background delete: 1..3 saved");
	free(saved);
	is_steps(m, "[3]", "background delete: all_steps [3] at once");
	t0 = hx_now_ms();
	for (;;) {
		char *got = mgr_disk_all(root);
		int done = strcmp(got, "[3]") == 0;

		free(got);
		if (done || hx_now_ms() - t0 > 10000)
			break;
		hx_sleep_ms(20);
	}
	{
		char *got = mgr_disk_all(root);
		is_str(got, "[3]", "background delete: 1 and 2 removed from "
		    "disk within 10 s, nothing left over");
		free(got);
	}
	ok_rc(ckpt_delete(m, 3), m, "explicit background delete(3)");
	is_steps(m, "[]", "[] at once");
	ckpt_manager_close(m);

	/* Orbax: close() finishes the background deletes. */
	snprintf(root, sizeof root, "%s", root_path(d, "bg-close"));
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 1, 3, SV(.bytes = 4 << 20), 0, 0, NULL);
	free(saved);
	ok_rc(ckpt_manager_close(m), NULL, "close with background deletes");
	{
		char *got = mgr_disk_all(root);
		is_str(got, "[3]", "background delete: after close() only step 3 "
		    "is on disk");
		free(got);
	}
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- root metadata ------------------------------------------------------------------ */

void
test_root_metadata(struct hx_daemon *d)
{
	char root[HX_PATH], p[HX_PATH], *first, *second, *json = NULL;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_manager *m;
	int r;

	snprintf(root, sizeof root, "%s", root_path(d, "rootmeta"));
	hx_join(p, root, "metadata/_ROOT_METADATA");
	is_int(ckpt_options_set_root_metadata(o, "{\"run\": \"first\", \"lr\": 0.1}"),
	    0, "root metadata set");
	m = mgr_open(c, root, o, 1);
	free(save_range(m, 1, 1, NULL, 0, 0, NULL));
	first = hx_read_file(p, NULL);
	ok(first != NULL, "metadata/_ROOT_METADATA written");
	has(first, "first", "it holds the first manager's metadata");
	r = ckpt_metadata(m, -1, &json);
	ok_rc(r, m, "ckpt_metadata(-1): root metadata");
	has(json, "first", "root metadata via the API");
	free(json);
	ckpt_manager_close(m);
	ckpt_options_free(o);

	o = mgr_options();
	ckpt_options_set_root_metadata(o, "{\"run\": \"second\"}");
	m = mgr_open(c, root, o, 1);
	free(save_range(m, 2, 2, NULL, 0, 0, NULL));
	ckpt_manager_close(m);
	second = hx_read_file(p, NULL);
	is_str(second, first, "a second manager with other metadata leaves "
	    "the file unchanged");
	free(second);
	m = mgr_open(c, root, NULL, 1);
	json = NULL;
	r = ckpt_metadata(m, -1, &json);
	ok_rc(r, m, "ckpt_metadata(-1)");
	has(json, "first", "root metadata still the first");
	free(json);
	ckpt_manager_close(m);

	/* No root metadata: none written, NULL returned. */
	snprintf(root, sizeof root, "%s", root_path(d, "rootmeta-none"));
	m = mgr_open(c, root, NULL, 1);
	free(save_range(m, 1, 1, NULL, 0, 0, NULL));
	hx_join(p, root, "metadata/_ROOT_METADATA");
	ok(!hx_exists(p), "no root metadata file without the option");
	json = (char *)"x";
	r = ckpt_metadata(m, -1, &json);
	ok(r == 0 && json == NULL, "ckpt_metadata(-1) gives NULL when none "
	    "(rc=%d)", r);
	if (r == 0 && json != NULL)
		free(json);
	ckpt_manager_close(m);
	free(first);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- restore, metrics, metadata ----------------------------------------------------- */

void
test_restore(struct hx_daemon *d)
{
	static const char *const m3[] = {
		"{\"loss\": 0.75, \"acc\": 0.5}", "{\"loss\": 0.5, \"acc\": 0.6}",
		"{\"loss\": 0.625, \"acc\": 0.7}",
	};
	char root[HX_PATH], other[HX_PATH], *json = NULL, *saved;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_restore_args *ra;
	ckpt_restored *res = NULL;
	ckpt_manager *m, *m2;
	int64_t best = -2;
	json_t *j, *v;
	int r, saved1;

	snprintf(root, sizeof root, "%s", root_path(d, "restore"));
	snprintf(other, sizeof other, "%s", root_path(d, "restore-other"));

	/* Empty root. */
	m = mgr_open(c, root, NULL, 1);
	r = ckpt_restore(m, -1, NULL, &res);
	is_rc(r, CKPT_ENOSTEPS, m, "restore(-1) on an empty root: CKPT_ENOSTEPS");
	has(ckpt_manager_errmsg(m), "No steps found in", "Orbax's message");
	ckpt_manager_close(m);

	ckpt_options_set_best(o, "loss", 1);
	m = mgr_open(c, root, o, 1);
	{
		struct sv s = { .custom = "{\"note\": \"hello\"}" };
		saved = save_range(m, 1, 3, &s, 0, 0, m3);
	}
	is_str(saved, "[1,2,3]", "steps 1..3 saved with metrics");
	free(saved);
	ok_rc(mgr_check_restore(m, -1, 3, NULL), m, "restore(-1) = latest (3)");
	ok_rc(mgr_check_restore(m, 2, 2, NULL), m, "restore(2)");
	ok_rc(mgr_check_restore(m, 1, 1, NULL), m, "restore(1)");
	r = ckpt_restore(m, 7, NULL, &res);
	is_rc(r, CKPT_ENOTFOUND, m, "restore(7): CKPT_ENOTFOUND");
	has(ckpt_manager_errmsg(m), "not found", "message says not found");

	/* metrics(step), best_step. */
	r = ckpt_metrics(m, 2, &json);
	ok_rc(r, m, "metrics(2)");
	ok(json_number(json, "loss") == 0.5 && json_number(json, "acc") == 0.6,
	    "metrics(2) = {loss 0.5, acc 0.6}: %s", json ? json : "NULL");
	free(json);
	json = NULL;
	r = ckpt_metrics(m, 9, &json);
	is_rc(r, CKPT_ENOTFOUND, m, "metrics(9): CKPT_ENOTFOUND");
	r = ckpt_best_step(m, &best);
	ok_rc(r, m, "best_step");
	is_int(best, 2, "best_step by min loss = 2");

	/* metadata(step). */
	json = NULL;
	r = ckpt_metadata(m, 2, &json);
	ok_rc(r, m, "metadata(2)");
	j = json ? json_loads(json, 0, NULL) : NULL;
	ok(j != NULL && json_is_object(j), "metadata(2) is a JSON object");
	v = j ? json_object_get(j, "item_handlers") : NULL;
	ok(v != NULL && json_is_object(v) &&
	    json_object_get(v, "default") != NULL,
	    "item_handlers names the default item");
	v = j ? json_object_get(j, "metrics") : NULL;
	ok(v != NULL && json_is_object(v) &&
	    json_number_value(json_object_get(v, "loss")) == 0.5,
	    "metrics.loss = 0.5");
	v = j ? json_object_get(j, "custom_metadata") : NULL;
	ok(v != NULL && json_is_object(v) &&
	    json_string_value(json_object_get(v, "note")) != NULL &&
	    strcmp(json_string_value(json_object_get(v, "note")), "hello") == 0,
	    "custom_metadata.note = hello");
	v = j ? json_object_get(j, "init_timestamp_nsecs") : NULL;
	ok(v != NULL && json_is_integer(v) && json_integer_value(v) > 0,
	    "init_timestamp_nsecs");
	{
		json_t *cv = j ? json_object_get(j, "commit_timestamp_nsecs") :
		    NULL;
		ok(cv != NULL && json_is_integer(cv) && v != NULL &&
		    json_integer_value(cv) >= json_integer_value(v),
		    "commit_timestamp_nsecs >= init_timestamp_nsecs");
	}
	if (j == NULL)
		diag("metadata: %s", json ? json : "NULL");
	json_decref(j);
	free(json);
	json = NULL;
	r = ckpt_metadata(m, 9, &json);
	is_rc(r, CKPT_ENOTFOUND, m, "metadata(9): CKPT_ENOTFOUND");

	/* Restore from another directory. */
	m2 = mgr_open(c, other, NULL, 1);
	r = mgr_save_wait(m2, 7, NULL, &saved1);
	ok(r == 0 && saved1 == 1, "step 7 saved in another root");
	ckpt_manager_close(m2);
	ra = ckpt_restore_args_new();
	is_int(ckpt_restore_args_set_directory(ra, other), 0,
	    "restore args: directory");
	ok_rc(mgr_check_restore(m, 7, 7, ra), m,
	    "restore(7, directory=other root)");
	r = ckpt_restore(m, 2, ra, &res);
	is_rc(r, CKPT_ENOTFOUND, m,
	    "restore(2, directory=other root): not there, CKPT_ENOTFOUND");
	ckpt_restore_args_free(ra);
	is_steps(m, "[1,2,3]", "the manager's own steps are unchanged");
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- leftover tmp directories ---------------------------------------------------------- */

void
test_tmp_dirs(struct hx_daemon *d)
{
	char root[HX_PATH], p[HX_PATH], *saved;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_manager *m;
	int r, x;

	/* cleanup_tmp_directories removes a planted leftover on open. */
	snprintf(root, sizeof root, "%s", root_path(d, "cleanup"));
	m = mgr_open(c, root, NULL, 1);
	free(save_range(m, 1, 1, NULL, 0, 0, NULL));
	ckpt_manager_close(m);
	hx_join(p, root, "5.ckptd-tmp/default");
	ok(hx_mkdirs(p) == 0, "planted %s", p);
	hx_join(p, root, "5.ckptd-tmp/default/junk");
	hx_write_file(p, "partial");
	ckpt_options_set_cleanup_tmp_directories(o, 1);
	m = mgr_open(c, root, o, 1);
	is_steps(m, "[1]", "a tmp dir is never listed");
	hx_join(p, root, "5.ckptd-tmp");
	ok(!hx_exists(p), "cleanup_tmp_directories removed 5.ckptd-tmp on open");
	{
		char *all = mgr_disk_all(root);
		ok(strstr(all, "ckptd-tmp") == NULL, "no tmp dir left: %s", all);
		free(all);
	}
	ckpt_manager_close(m);

	/* Without cleanup: a leftover tmp dir never blocks saving the step. */
	snprintf(root, sizeof root, "%s", root_path(d, "leftover"));
	m = mgr_open(c, root, NULL, 1);
	free(save_range(m, 1, 1, NULL, 0, 0, NULL));
	ckpt_manager_close(m);
	hx_join(p, root, "7.ckptd-tmp/default");
	hx_mkdirs(p);
	hx_join(p, root, "7.ckptd-tmp/_CHECKPOINT_METADATA");
	hx_write_file(p, "{\"truncated");
	m = mgr_open(c, root, NULL, 1);
	is_steps(m, "[1]", "leftover 7.ckptd-tmp is not listed");
	r = mgr_save_wait(m, 7, NULL, &x);
	ok_rc(r, m, "save(7) despite the leftover 7.ckptd-tmp");
	is_int(x, 1, "step 7 saved");
	is_steps(m, "[1,7]", "[1,7]");
	ok_rc(mgr_check_restore(m, 7, 7, NULL), m, "step 7 restores (fresh data)");
	{
		char *all = mgr_disk_all(root);
		is_str(all, "[1,7]", "no tmp dir left after the save");
		free(all);
	}
	ckpt_manager_close(m);

	/* Leftover discovered after a daemon restart (crash simulation). */
	hx_join(p, root, "9.ckptd-tmp/default");
	hx_mkdirs(p);
	ckpt_disconnect(c);
	if (hx_restart(d) != 0)
		bail_out("ckptd did not come back");
	c = mgr_connect(d);
	m = mgr_open(c, root, NULL, 1);
	is_steps(m, "[1,7]", "after restart: tmp dir of 9 not listed");
	saved = save_range(m, 9, 9, NULL, 0, 0, NULL);
	is_str(saved, "[9]", "step 9 saved over its leftover tmp dir");
	free(saved);
	is_steps(m, "[1,7,9]", "[1,7,9]");
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- preemption ------------------------------------------------------------ */

/* Orbax checkpoint_manager_test.py test_save_on_preemption: once the
 * preemption point is reached, the save at that step is taken whatever
 * the interval says. Here the notice is ckpt_preempt (`ckptctl preempt`). */
void
test_preempt(struct hx_daemon *d)
{
	char root[HX_PATH], *saved;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_manager *m;
	int out = -1, should = -1, r, s = -1;

	snprintf(root, sizeof root, "%s", root_path(d, "preempt"));
	ckpt_options_set_save_interval_steps(o, 100);
	m = mgr_open(c, root, o, 1);
	saved = save_range(m, 0, 0, NULL, 0, 0, NULL);
	is_str(saved, "[0]", "step 0 saved (initial save)");
	free(saved);
	ok_rc(ckpt_reached_preemption(m, 5, &out), m, "reached_preemption(5)");
	is_int(out, 0, "not preempted yet");
	ckpt_should_save(m, 5, &should);
	is_int(should, 0, "should_save(5) false: interval 100");
	is_int(ckpt_preempt(c), 0, "ckpt_preempt");
	ok_rc(ckpt_reached_preemption(m, 5, &out), m, "reached_preemption(5)");
	is_int(out, 1, "reached_preemption(5) is true");
	ckpt_should_save(m, 5, &should);
	is_int(should, 1, "should_save(5) true once preempted");
	r = mgr_save_wait(m, 5, NULL, &s);
	ok_rc(r, m, "save(5)");
	is_int(s, 1, "step 5 taken");
	ckpt_should_save(m, 6, &should);
	is_int(should, 0, "should_save(6) false: the preemption save was taken");
	ckpt_reached_preemption(m, 6, &out);
	is_int(out, 1, "reached_preemption stays true (the loop stops)");
	is_steps(m, "[0,5]", "steps [0,5]");
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* ---- Orbax's metrics item ---------------------------------------------------- */

/* Orbax checkpoint_manager.py: metrics are the `metrics` item,
 * <step>/metrics/metrics, read back for best_fn (test_save_best). ckptd
 * writes it, and ranks the steps Orbax wrote by it. */
void
test_metrics_item(struct hx_daemon *d)
{
	static const char *const losses[] = { "{\"loss\":0.4}",
	    "{\"loss\":0.1}", "{\"loss\":0.3}" };
	char a[HX_PATH], b[HX_PATH], p[2 * HX_PATH], q[2 * HX_PATH], out[256];
	char *text, *saved, *mj = NULL;
	ckpt_client *c = mgr_connect(d);
	ckpt_options *o = mgr_options();
	ckpt_manager *m;
	struct sv s = { 0 };
	int64_t best = -2;
	int saved1 = 0;
	uint64_t i;

	/* ckptd -> Orbax: the file, reserved keys left out. */
	snprintf(a, sizeof a, "%s", root_path(d, "mwrite"));
	ckpt_options_set_best(o, "loss", 1);
	m = mgr_open(c, a, o, 1);
	s.metrics = "{\"loss\":0.5,\"__ckpt_best__\":0.5}";
	ok_rc(mgr_save_wait(m, 0, &s, &saved1), m, "save(0) with metrics");
	snprintf(p, sizeof p, "%s/0/metrics/metrics", a);
	text = hx_read_file(p, NULL);
	is_str(text, "{\"loss\":0.5}", "0/metrics/metrics holds the metrics");
	free(text);
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* Orbax -> ckptd: steps whose metrics only are in metrics/metrics. */
	snprintf(a, sizeof a, "%s", root_path(d, "orbax_src"));
	m = mgr_open(c, a, NULL, 1);
	saved = save_range(m, 0, 2, NULL, 0, 0, NULL);
	is_str(saved, "[0,1,2]", "steps 0..2 saved without metrics");
	free(saved);
	ckpt_manager_close(m);
	snprintf(b, sizeof b, "%s", root_path(d, "orbax"));
	hx_mkdirs(b);
	for (i = 0; i < 3; i++) {
		char *argv[] = { "/bin/cp", "-a", p, q, NULL };

		snprintf(p, sizeof p, "%s/%" PRIu64, a, i);
		snprintf(q, sizeof q, "%s/%" PRIu64, b, i);
		hx_run(argv, out, sizeof out, 30);
		snprintf(q, sizeof q, "%s/%" PRIu64 "/metrics", b, i);
		hx_mkdirs(q);
		snprintf(q, sizeof q, "%s/%" PRIu64 "/metrics/metrics", b, i);
		hx_write_file(q, losses[i]);
	}
	o = mgr_options();
	ckpt_options_set_best(o, "loss", 1);
	m = mgr_open(c, b, o, 1);
	ok_rc(ckpt_metrics(m, 1, &mj), m, "metrics(1)");
	ok(mj != NULL && json_number(mj, "loss") == 0.1, "metrics(1) read "
	    "from 1/metrics/metrics (%s)", mj ? mj : "null");
	free(mj);
	ckpt_best_step(m, &best);
	is_int(best, 1, "best_step (min loss) is 1");
	ckpt_manager_close(m);
	ckpt_options_free(o);

	/* A metric computed by the client (best_fn) for those steps. */
	o = mgr_options();
	ckpt_options_set_best(o, "__ckpt_best__", 0);
	m = mgr_open(c, b, o, 1);
	ckpt_best_step(m, &best);
	is_int(best, -1, "no step has the client's metric yet");
	ok_rc(ckpt_set_step_metrics(m, 2, "{\"__ckpt_best__\":7}"), m,
	    "set_step_metrics(2)");
	ok_rc(ckpt_set_step_metrics(m, 0, "{\"__ckpt_best__\":3}"), m,
	    "set_step_metrics(0)");
	ckpt_best_step(m, &best);
	is_int(best, 2, "best_step (max) ranks by it: 2");
	is_rc(ckpt_set_step_metrics(m, 9, "{\"x\":1}"), CKPT_ENOTFOUND, m,
	    "set_step_metrics on an unknown step: CKPT_ENOTFOUND");
	is_rc(ckpt_set_step_metrics(m, 1, "[1]"), CKPT_EINVAL, m,
	    "set_step_metrics with a non-object: CKPT_EINVAL");
	mj = NULL;
	ckpt_metrics(m, 2, &mj);
	ok(mj != NULL && json_number(mj, "loss") == 0.3 &&
	    json_number(mj, "__ckpt_best__") == 7, "merged with the stored "
	    "metrics (%s)", mj ? mj : "null");
	free(mj);
	snprintf(q, sizeof q, "%s/2/metrics/metrics", b);
	text = hx_read_file(q, NULL);
	is_str(text, losses[2], "nothing is written into the step");
	free(text);
	ckpt_manager_close(m);
	ckpt_options_free(o);
	ckpt_disconnect(c);
}

/* SIGTERM (systemd shutdown) with --preempt-grace: the open manager is
 * told, takes its preemption save, and the daemon exits once it closed. */
void
test_preempt_sigterm(struct hx_daemon *d)
{
	char root[HX_PATH];
	ckpt_client *c;
	ckpt_options *o;
	ckpt_manager *m;
	int64_t t0, waited;
	int out = 0, should = 0, s = 0, st = -1, i;
	pid_t pid;

	if (d->external) {
		tap_skip("needs its own daemon");
		return;
	}
	hx_stop(d);
	d->extra[0] = "--preempt-grace";
	d->extra[1] = "30";
	d->extra[2] = NULL;
	if (!ok(hx_start(d) == 0, "ckptd restarted with --preempt-grace 30"))
		return;
	c = mgr_connect(d);
	o = mgr_options();
	ckpt_options_set_save_interval_steps(o, 100);
	snprintf(root, sizeof root, "%s", root_path(d, "sigterm"));
	m = mgr_open(c, root, o, 1);
	ok_rc(mgr_save_wait(m, 0, NULL, &s), m, "save(0)");
	pid = d->pid;
	kill(pid, SIGTERM);
	for (i = 0; i < 200 && !out; i++) {
		ckpt_reached_preemption(m, 5, &out);
		if (!out)
			hx_sleep_ms(50);
	}
	is_int(out, 1, "after SIGTERM: reached_preemption(5)");
	ckpt_should_save(m, 5, &should);
	is_int(should, 1, "should_save(5) during the grace period");
	ok_rc(mgr_save_wait(m, 5, NULL, &s), m, "save(5) is taken");
	is_int(s, 1, "step 5 saved");
	is_steps(m, "[0,5]", "steps [0,5]");
	t0 = hx_now_ms();
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	while (waitpid(pid, &st, WNOHANG) == 0 && hx_now_ms() - t0 < 20000)
		hx_sleep_ms(20);
	waited = hx_now_ms() - t0;
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "ckptd exited 0 by itself "
	    "(status 0x%x)", st);
	ok(waited < 10000, "within 10 s of the last manager closing (%lld ms; "
	    "grace 30 s)", (long long)waited);
	d->pid = 0;
	ckpt_options_free(o);
}
