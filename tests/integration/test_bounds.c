/*
 * test_bounds.c - Save frames that are well formed but hostile in their
 * counts, sizes, offsets and strings, sent by hand to a real ckptd:
 *
 *   - the frame of the heap overflow: a sparse 2^46-byte memfd sealed
 *     against shrinking and 2^18 overlapping U8 leaves of shape [2^46] at
 *     offset 0, with force (their sizes add up to 2^64);
 *   - leaves whose sizes add up past the memfd, overlapping leaves, too
 *     many leaves in one item and in one save;
 *   - item names that could never be restored (".hidden");
 *   - strings with a NUL inside or invalid UTF-8 (item name, root path);
 *   - a restore naming an item twice, a step list over its limit, a list
 *     index past INT64_MAX, a leaf path too long to name its tensor.
 *
 * Each must get a clear error on the same connection, the daemon must go
 * on serving another client, and nothing may change on disk.
 *
 * The daemon runs with --max-leaves at the wire's own limit, so that the
 * checks behind the per-user leaf limit (which would refuse the 2^18 leaves
 * first, see test_fairness) are the ones exercised here.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ckpt.pb-c.h"
#include "ckpt_limits.h"
#include "harness.h"
#include "raw.h"
#include "untouched.h"

/* --max-leaves at the wire's limit of leaves per save. */
#define BOUNDS_MAX_LEAVES "1048576"
_Static_assert(CKPT_MAX_LEAVES_PER_SAVE == 1048576, "BOUNDS_MAX_LEAVES");

static struct hx_daemon d;
static struct untouched watched;  /* the root bad inputs must not touch */

/* ---- raw wire (raw.h) ---------------------------------------------------- */

/* The code of the reply to id (INT32_MIN: none came), its message into
 * msg. */
static int wire_reply(int fd, uint64_t id, char *msg, size_t msglen)
{
	Ckpt__Response *resp;
	int code;

	msg[0] = '\0';
	if ((resp = raw_recv(fd, id, 60000)) == NULL)
		return INT32_MIN;
	code = resp->code;
	snprintf(msg, msglen, "%s", resp->message ? resp->message : "");
	ckpt__response__free_unpacked(resp, NULL);
	return code;
}

/* Send req (with the fd attach unless it is -1); return the reply's code
 * (INT32_MIN: no reply), its message into msg. */
static int wire_call(int fd, const Ckpt__Request *req, int attach,
    char *msg, size_t msglen)
{
	if (raw_send_req(fd, req, &attach, attach >= 0) != 0)
		diag("sendmsg: %s", strerror(errno));
	return wire_reply(fd, req->id, msg, msglen);
}

/* Same, with the byte `from` in the packed frame replaced by `to` (once,
 * the first occurrence after the header): a string the generated packer
 * would never produce (a NUL inside, invalid UTF-8). */
static int wire_call_patched(int fd, const Ckpt__Request *req, char from,
    uint8_t to, char *msg, size_t msglen)
{
	uint8_t *buf, *p;
	size_t len;

	buf = raw_pack(req, &len);
	if ((p = memchr(buf + 4, from, len - 4)) == NULL)
		bail_out("marker '%c' not in the frame", from);
	*p = to;
	if (raw_send(fd, buf, len, NULL, 0) != 0)
		diag("sendmsg: %s", strerror(errno));
	free(buf);
	return wire_reply(fd, req->id, msg, msglen);
}

/* A staging memfd of size bytes (sparse), sealed against shrinking. */
static int staging(uint64_t size)
{
	int fd = memfd_create("bounds", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, (off_t)size) != 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
		bail_out("memfd of %llu bytes: %s", (unsigned long long)size,
		    strerror(errno));
	return fd;
}

/* ---- building saves --------------------------------------------------------- */

struct tree {
	Ckpt__Leaf *leaves, **leafp;
	Ckpt__PathElem *elems, **elemp;
	uint64_t *shapes;
	size_t n;
};

/* n U8 leaves at paths [i], each of shape [dim] at offset off + i*stride. */
static void tree_arrays(struct tree *t, size_t n, uint64_t dim, uint64_t off,
    uint64_t stride)
{
	size_t i;

	t->n = n;
	t->leaves = calloc(n, sizeof *t->leaves);
	t->leafp = calloc(n, sizeof *t->leafp);
	t->elems = calloc(n, sizeof *t->elems);
	t->elemp = calloc(n, sizeof *t->elemp);
	t->shapes = calloc(n, sizeof *t->shapes);
	if (!t->leaves || !t->leafp || !t->elems || !t->elemp || !t->shapes)
		bail_out("out of memory");
	for (i = 0; i < n; i++) {
		Ckpt__Leaf *l = &t->leaves[i];
		Ckpt__PathElem *p = &t->elems[i];

		ckpt__path_elem__init(p);
		p->has_kind = 1;
		p->kind = CKPT__KEY_KIND__KEY_LIST;
		p->has_index = 1;
		p->index = i;
		t->elemp[i] = p;
		ckpt__leaf__init(l);
		l->n_path = 1;
		l->path = &t->elemp[i];
		l->has_kind = 1;
		l->kind = CKPT__LEAF_KIND__LEAF_ARRAY;
		l->has_dtype = 1;
		l->dtype = CKPT__DTYPE__DTYPE_U8;
		t->shapes[i] = dim;
		l->n_shape = 1;
		l->shape = &t->shapes[i];
		l->has_offset = 1;
		l->offset = off + i * stride;
		l->has_nbytes = 1;
		l->nbytes = dim;
		t->leafp[i] = l;
	}
}

/* n empty leaves (only the count matters to the check they hit). */
static void tree_empty(struct tree *t, size_t n)
{
	size_t i;

	memset(t, 0, sizeof *t);
	t->n = n;
	t->leaves = calloc(n, sizeof *t->leaves);
	t->leafp = calloc(n, sizeof *t->leafp);
	if (!t->leaves || !t->leafp)
		bail_out("out of memory");
	for (i = 0; i < n; i++) {
		ckpt__leaf__init(&t->leaves[i]);
		t->leafp[i] = &t->leaves[i];
	}
}

static void tree_free(struct tree *t)
{
	free(t->leaves);
	free(t->leafp);
	free(t->elems);
	free(t->elemp);
	free(t->shapes);
	memset(t, 0, sizeof *t);
}

/* A Save of step `step` with one item per tree (names[i]). */
static int save_call(int fd, uint64_t mgr, uint64_t step, struct tree *trees,
    const char *const *names, size_t nitems, int memfd, char *msg,
    size_t msglen)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Save sv = CKPT__SAVE__INIT;
	Ckpt__Item items[4], *itemp[4];
	size_t i;

	for (i = 0; i < nitems; i++) {
		ckpt__item__init(&items[i]);
		items[i].name = (char *)names[i];
		items[i].has_handler = 1;
		items[i].handler = CKPT__HANDLER__HANDLER_STANDARD;
		items[i].n_leaves = trees[i].n;
		items[i].leaves = trees[i].leafp;
		itemp[i] = &items[i];
	}
	sv.has_manager = 1;
	sv.manager = mgr;
	sv.has_step = 1;
	sv.step = step;
	sv.has_force = 1;
	sv.force = 1;
	sv.has_composite = 1;
	sv.composite = nitems > 1 || strcmp(names[0], "default") != 0;
	sv.n_items = nitems;
	sv.items = itemp;
	req.has_id = 1;
	req.id = 100 + step;
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &sv;
	return wire_call(fd, &req, memfd, msg, msglen);
}

/* ---- after each: served, unchanged ------------------------------------------ */

/* After a bad input: ckptd serves, the root is unchanged. */
static void probe(const char *what)
{
	untouched_probe(&d, &watched, what);
}

static void expect(int code, const char *msg, int want1, int want2,
    const char *needle, const char *what)
{
	ok(code == want1 || code == want2, "%s: %s or %s (got %d %s: %s)", what,
	    ckpt_strerror(want1), ckpt_strerror(want2), code,
	    code > INT32_MIN ? ckpt_strerror(code) : "no answer", msg);
	has(msg, needle, "%s: the message says why", what);
}

/* ---- the cases ------------------------------------------------------------- */

static void overflow_frame(int fd, uint64_t mgr)
{
	const char *names[1] = { "default" };
	struct tree t;
	char msg[512];
	int mfd, code;
	int64_t t0;

	/* Issue 16, exactly: 2^18 leaves of 2^46 bytes at offset 0 of a sparse
	 * 2^46-byte memfd; each fits, their sum is 2^64. */
	mfd = staging(1ull << 46);
	tree_arrays(&t, 1u << 18, 1ull << 46, 0, 0);
	t0 = hx_now_ms();
	code = save_call(fd, mgr, 1, &t, names, 1, mfd, msg, sizeof msg);
	diag("the %zu-leaf frame was answered in %lld ms", t.n,
	    (long long)(hx_now_ms() - t0));
	close(mfd);
	tree_free(&t);
	expect(code, msg, CKPT_ETOOBIG, CKPT_EINVAL, "staging buffer",
	    "2^18 overlapping leaves of 2^46 bytes");
	probe("2^18 overlapping leaves of 2^46 bytes");
}

static void bad_layouts(int fd, uint64_t mgr)
{
	const char *one[1] = { "default" };
	const char *three[3] = { "a", "b", "c" };
	struct tree t, ts[3];
	char msg[512];
	int mfd, code;

	/* Three leaves of 2048 bytes at offset 0 of 4096: 6144 > 4096. */
	mfd = staging(4096);
	tree_arrays(&t, 3, 2048, 0, 0);
	code = save_call(fd, mgr, 2, &t, one, 1, mfd, msg, sizeof msg);
	tree_free(&t);
	expect(code, msg, CKPT_ETOOBIG, CKPT_ETOOBIG, "add up to more than",
	    "leaves summing past the memfd");
	probe("leaves summing past the memfd");

	/* Two leaves of 16 bytes at 0 and 8: within the sum, overlapping. */
	tree_arrays(&t, 2, 16, 0, 8);
	code = save_call(fd, mgr, 3, &t, one, 1, mfd, msg, sizeof msg);
	tree_free(&t);
	expect(code, msg, CKPT_EINVAL, CKPT_EINVAL, "overlap",
	    "overlapping leaves");
	probe("overlapping leaves");

	/* Adjacent leaves are fine: the same save with stride 16 commits. */
	tree_arrays(&t, 2, 16, 0, 16);
	code = save_call(fd, mgr, 4, &t, one, 1, mfd, msg, sizeof msg);
	tree_free(&t);
	is_int(code, 0, "adjacent leaves are accepted (%s)", msg);
	close(mfd);
	{
		Ckpt__Request req = CKPT__REQUEST__INIT;
		Ckpt__WaitSaves ws = CKPT__WAIT_SAVES__INIT;
		ckpt_client *c = NULL;
		ckpt_manager *m = NULL;

		ws.has_manager = 1;
		ws.manager = mgr;
		req.has_id = 1;
		req.id = 50;
		req.op_case = CKPT__REQUEST__OP_WAIT_SAVES;
		req.wait_saves = &ws;
		is_int(wire_call(fd, &req, -1, msg, sizeof msg), 0,
		    "... and committed (%s)", msg);
		/* Remove it again so that the disk is as before. */
		if (hx_connect(&d, &c) == 0 &&
		    ckpt_manager_open(c, watched.root, NULL, &m) == 0) {
			ok_call(ckpt_delete(m, 4), c, "step 4 deleted again");
			ckpt_manager_close(m);
		}
		if (c != NULL)
			ckpt_disconnect(c);
	}
	probe("adjacent leaves");

	/* One item with 2^19 + 1 leaves. */
	tree_empty(&t, (1u << 19) + 1);
	code = save_call(fd, mgr, 5, &t, one, 1, -1, msg, sizeof msg);
	tree_free(&t);
	expect(code, msg, CKPT_ETOOBIG, CKPT_ETOOBIG, "too many leaves",
	    "2^19 + 1 leaves in one item");
	probe("too many leaves in one item");

	/* Three items of 350,000 leaves: 1,050,000 > 2^20 in one save. */
	tree_empty(&ts[0], 350000);
	tree_empty(&ts[1], 350000);
	tree_empty(&ts[2], 350000);
	code = save_call(fd, mgr, 6, ts, three, 3, -1, msg, sizeof msg);
	tree_free(&ts[0]);
	tree_free(&ts[1]);
	tree_free(&ts[2]);
	expect(code, msg, CKPT_ETOOBIG, CKPT_ETOOBIG, "too many leaves",
	    "1,050,000 leaves in one save");
	probe("too many leaves in one save");
}

static void bad_names(int fd, uint64_t mgr)
{
	const char *dot[1] = { ".hidden" };
	const char *marked[1] = { "abXcd" };
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__OpenManager om = CKPT__OPEN_MANAGER__INIT;
	struct tree t;
	char msg[512], path[HX_PATH], marked_root[HX_PATH + 8];
	int mfd, code;

	mfd = staging(4096);
	tree_arrays(&t, 1, 16, 0, 0);
	code = save_call(fd, mgr, 7, &t, dot, 1, mfd, msg, sizeof msg);
	expect(code, msg, CKPT_EINVAL, CKPT_EINVAL, "start with '.'",
	    "item named .hidden");
	probe("item named .hidden");

	/* "abXcd" with X turned into NUL or 0xff on the wire. */
	{
		Ckpt__Request sreq = CKPT__REQUEST__INIT;
		Ckpt__Save sv = CKPT__SAVE__INIT;
		Ckpt__Item item = CKPT__ITEM__INIT, *itemp[1] = { &item };

		item.name = (char *)marked[0];
		item.has_handler = 1;
		item.handler = CKPT__HANDLER__HANDLER_JSON;
		item.json = "{}";
		sv.has_manager = 1;
		sv.manager = mgr;
		sv.has_step = 1;
		sv.step = 8;
		sv.has_force = 1;
		sv.force = 1;
		sv.has_composite = 1;
		sv.composite = 1;
		sv.n_items = 1;
		sv.items = itemp;
		sreq.has_id = 1;
		sreq.id = 108;
		sreq.op_case = CKPT__REQUEST__OP_SAVE;
		sreq.save = &sv;
		code = wire_call_patched(fd, &sreq, 'X', 0, msg, sizeof msg);
		expect(code, msg, CKPT_EINVAL, CKPT_EINVAL, "NUL",
		    "item name with a NUL inside");
		probe("item name with a NUL inside");
		sreq.id = 109;
		code = wire_call_patched(fd, &sreq, 'X', 0xff, msg, sizeof msg);
		expect(code, msg, CKPT_EINVAL, CKPT_EINVAL, "UTF-8",
		    "item name with invalid UTF-8");
		probe("item name with invalid UTF-8");
	}

	/* A root path "<root>X/evil" that a NUL would cut to <root>. */
	snprintf(marked_root, sizeof marked_root, "%sX/evil", watched.root);
	om.root = marked_root;
	req.has_id = 1;
	req.id = 110;
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = &om;
	code = wire_call_patched(fd, &req, 'X', 0, msg, sizeof msg);
	expect(code, msg, CKPT_EINVAL, CKPT_EINVAL, "NUL",
	    "root path with a NUL inside");
	/* The same connection still works. */
	tree_free(&t);
	tree_arrays(&t, 1, 16, 0, 0);
	code = save_call(fd, mgr, 0, &t, dot, 1, mfd, msg, sizeof msg);
	ok(code == CKPT_EINVAL, "the connection still answers after bad "
	    "strings (%d %s)", code, msg);
	tree_free(&t);
	close(mfd);
	hx_path(&d, path, "raw/abcd");
	ok(!hx_exists(path), "no item directory was made from a cut name");
	probe("root path with a NUL inside");
}

/* Audit of the other lists and values from the wire. */
static void bad_lists(int fd, uint64_t mgr)
{
	const char *one[1] = { "default" };
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Restore rs = CKPT__RESTORE__INIT;
	Ckpt__OpenManager om = CKPT__OPEN_MANAGER__INIT;
	Ckpt__ManagerOptions o = CKPT__MANAGER_OPTIONS__INIT;
	char *twice[2] = { "default", "default" }, msg[512];
	Ckpt__PathElem deep[60], *deepp[60];
	struct tree t;
	uint64_t *steps;
	size_t i, n = (1u << 20) + 1;
	int mfd, code;

	/* Restore naming the same item twice. */
	rs.has_manager = 1;
	rs.manager = mgr;
	rs.has_step = 1;
	rs.step = 0;
	rs.n_items = 2;
	rs.items = twice;
	req.has_id = 1;
	req.id = 200;
	req.op_case = CKPT__REQUEST__OP_RESTORE;
	req.restore = &rs;
	code = wire_call(fd, &req, -1, msg, sizeof msg);
	expect(code, msg, CKPT_EINVAL, CKPT_EINVAL, "twice",
	    "restore of the same item twice");

	/* save_on_steps with 2^20 + 1 steps. */
	if ((steps = calloc(n, sizeof *steps)) == NULL)
		bail_out("out of memory");
	for (i = 0; i < n; i++)
		steps[i] = i;
	o.n_save_on_steps = n;
	o.save_on_steps = steps;
	om.root = watched.root;
	om.options = &o;
	req.id = 201;
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = &om;
	code = wire_call(fd, &req, -1, msg, sizeof msg);
	free(steps);
	expect(code, msg, CKPT_ETOOBIG, CKPT_ETOOBIG, "at most",
	    "save_on_steps with 2^20 + 1 steps");
	probe("restore twice / long step list");

	/* A list index past INT64_MAX (the metadata could not store it). */
	mfd = staging(4096);
	tree_arrays(&t, 1, 16, 0, 0);
	t.elems[0].index = 1ull << 63;
	code = save_call(fd, mgr, 9, &t, one, 1, mfd, msg, sizeof msg);
	tree_free(&t);
	expect(code, msg, CKPT_EINVAL, CKPT_EINVAL, "out of range",
	    "list index 2^63");

	/* 60 keys of 20 bytes: 1259 bytes joined, over the tensor name. */
	tree_arrays(&t, 1, 16, 0, 0);
	for (i = 0; i < 60; i++) {
		ckpt__path_elem__init(&deep[i]);
		deep[i].has_kind = 1;
		deep[i].kind = CKPT__KEY_KIND__KEY_DICT;
		deep[i].key = "abcdefghijklmnopqrst";
		deepp[i] = &deep[i];
	}
	t.leaves[0].n_path = 60;
	t.leaves[0].path = deepp;
	code = save_call(fd, mgr, 10, &t, one, 1, mfd, msg, sizeof msg);
	tree_free(&t);
	close(mfd);
	expect(code, msg, CKPT_ETOOBIG, CKPT_ETOOBIG, "joined",
	    "a path of 1259 bytes joined");
	probe("index and path length");
}

/* Paths whose joined name is reserved in safetensors ("__metadata__") or
 * by the writer's padding tensors: saved and restored like any other. */
static void reserved_names(void)
{
	static const char *const paths[] = {
		"__metadata__", "__ckptd_pad_0", "~__ckptd_pad_0", "a/b", "a.b",
	};
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	ckpt_restored *res = NULL;
	char rroot[HX_PATH];
	uint8_t v[5][8];
	int64_t shape[1] = { 8 };
	size_t i;
	int r;

	hx_path(&d, rroot, "reserved");
	for (i = 0; i < 5; i++) {
		memset(v[i], (int)(i + 1), sizeof v[i]);
		if (ckpt_tree_add_array(t, paths[i], CKPT_U8, 1, shape, v[i],
		    sizeof v[i]) != 0)
			bail_out("adding %s", paths[i]);
	}
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	r = hx_connect(&d, &c);
	if (r == 0)
		r = ckpt_manager_open(c, rroot, NULL, &m);
	if (r == 0)
		r = ckpt_save(m, 1, a, NULL);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	ok_call(r, c, "a tree with leaves named __metadata__ and "
	    "__ckptd_pad_0 is saved");
	if (r == 0)
		r = ckpt_restore(m, 1, NULL, &res);
	if (ok_call(r, c, "... and restored")) {
		const ckpt_tree *rt = ckpt_restored_item_tree(res, 0);

		for (i = 0; i < 5; i++) {
			long k = rt ? ckpt_tree_find(rt, paths[i]) : -1;
			ckpt_leaf lf;

			ok(k >= 0 && ckpt_tree_leaf(rt, (size_t)k, &lf) == 0 &&
			    lf.nbytes == 8 && memcmp(lf.data, v[i], 8) == 0,
			    "... leaf '%s' intact", paths[i]);
		}
		ckpt_restored_free(res);
	}
	if (m != NULL)
		ckpt_manager_close(m);
	if (c != NULL)
		ckpt_disconnect(c);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
}

/* Metrics and custom metadata of 5 MiB each: each fits a document, but
 * the step metadata holding both would be more than a restore reads. The
 * save must fail with a clear error, and nothing be listed. */
static void big_step_metadata(void)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	char mroot[HX_PATH], *doc;
	uint64_t *steps = NULL;
	size_t n = 0, len = 5u << 20;
	float w[4] = { 1, 2, 3, 4 };
	int64_t shape[1] = { 4 };
	int r;

	if ((doc = malloc(len + 16)) == NULL)
		bail_out("out of memory");
	memcpy(doc, "{\"x\": \"", 7);
	memset(doc + 7, 'a', len);
	memcpy(doc + 7 + len, "\"}", 3);
	hx_path(&d, mroot, "bigmeta");
	ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, w, sizeof w);
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	ckpt_save_args_set_metrics(a, doc);
	ckpt_save_args_set_custom_metadata(a, doc);
	r = hx_connect(&d, &c);
	if (r == 0)
		r = ckpt_manager_open(c, mroot, NULL, &m);
	if (r == 0 && (r = ckpt_save(m, 1, a, NULL)) == 0)
		r = ckpt_wait_until_finished(m);
	is_int(r, CKPT_ETOOBIG, "5 MiB metrics + 5 MiB custom metadata: the "
	    "save fails with CKPT_ETOOBIG");
	has(c != NULL ? ckpt_client_errmsg(c) : NULL, "restore reads",
	    "... saying why (%s)", c != NULL ? ckpt_client_errmsg(c) : "");
	if (m != NULL && ckpt_all_steps(m, &steps, &n) == 0)
		is_int(n, 0, "... and no step is listed");
	free(steps);
	if (m != NULL)
		ckpt_manager_close(m);
	if (c != NULL)
		ckpt_disconnect(c);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	free(doc);
}

int main(void)
{
	uint64_t mgr;
	int fd, code;

	hx_init(&d);
	d.extra[0] = "--max-leaves";
	d.extra[1] = BOUNDS_MAX_LEAVES;
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	untouched_make(&d, &watched, "raw");

	if ((fd = raw_greeted(d.sock)) < 0)
		bail_out("no raw connection to %s", d.sock);
	if ((mgr = raw_open(fd, watched.root, NULL, &code)) == 0)
		bail_out("raw open_manager(%s) failed", watched.root);
	overflow_frame(fd, mgr);
	bad_layouts(fd, mgr);
	bad_names(fd, mgr);
	bad_lists(fd, mgr);
	close(fd);
	reserved_names();
	big_step_metadata();

	untouched_free(&watched);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
