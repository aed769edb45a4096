/*
 * test_rawframes.c - hostile and broken peers on the wire, with frames
 * packed by hand (4-byte big-endian length + protobuf built with the
 * generated code): malformed frames, oversized and zero lengths, wrong
 * protocol version, no hello, a request with no operation, fds nobody
 * asked for, bad save requests (unknown dtype, nbytes that disagree with the
 * shape, data outside the staging buffer, item names that escape the root,
 * step prefixes with '/'), and 300 idle + 100 half-sent connections.
 * After each, a normal client still works and nothing changed on disk.
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

static struct hx_daemon d;
/* ---- after every bad input: the daemon serves others, disk unchanged ---- */

static struct untouched watched;  /* the root bad inputs must not touch */

/* After a bad input: ckptd serves, the root is unchanged. */
static void probe(const char *what)
{
	untouched_probe(&d, &watched, what);
}

/* ---- framing and handshake errors ---------------------------------------------- */

static void bad_frames(void)
{
	unsigned char junk[64];
	int fd, code;

	/* Garbage instead of a protobuf, as the first frame. */
	memset(junk, 0xff, sizeof junk);
	fd = raw_connect(d.sock);
	raw_send_len(fd, sizeof junk, junk, sizeof junk);
	code = 0;
	ok(raw_closed(fd, 5000, &code), "malformed first frame: connection "
	    "closed (last code %d)", code);
	close(fd);
	probe("malformed first frame");

	/* Garbage after a good hello. */
	fd = raw_greeted(d.sock);
	ok(fd >= 0, "hello accepted");
	raw_send_len(fd, 10, "\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff", 10);
	code = 0;
	ok(raw_closed(fd, 5000, &code), "malformed frame after hello: closed");
	ok(code == 0 || code == CKPT_EPROTO, "... with CKPT_EPROTO if anything "
	    "(got %d)", code);
	close(fd);
	probe("malformed frame after hello");

	/* Lengths out of bounds: the daemon must not wait for or allocate
	 * the body. */
	fd = raw_greeted(d.sock);
	raw_send_len(fd, 0xffffffffu, NULL, 0);
	ok(raw_closed(fd, 5000, NULL), "length 0xffffffff: closed at once");
	close(fd);
	fd = raw_greeted(d.sock);
	raw_send_len(fd, CKPT_MAX_FRAME + 1, NULL, 0);
	ok(raw_closed(fd, 5000, NULL), "length 16 MiB + 1: closed at once");
	close(fd);
	fd = raw_greeted(d.sock);
	raw_send_len(fd, 0, NULL, 0);
	ok(raw_closed(fd, 5000, NULL), "length 0: closed");
	close(fd);
	probe("oversized and zero lengths");
}

static void bad_handshakes(void)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Response *resp;
	int fd, code;

	/* Wrong protocol version. */
	fd = raw_connect(d.sock);
	raw_hello(fd, 99, 1);
	resp = raw_recv(fd, 0, 5000);
	ok(resp != NULL, "hello version 99: answered");
	if (resp) {
		is_int(resp->code, CKPT_EVERSION, "... with CKPT_EVERSION");
		ok(resp->message && strlen(resp->message) > 0,
		    "... and a message (%s)", resp->message ? resp->message : "");
		ckpt__response__free_unpacked(resp, NULL);
	}
	ok(raw_closed(fd, 5000, NULL), "... then closed");
	close(fd);
	probe("wrong protocol version");

	/* No hello first. */
	fd = raw_connect(d.sock);
	code = raw_ping(fd, 3, NULL, 0);
	ok(code != 0, "ping before hello is refused (code %d)", code);
	close(fd);
	probe("no hello");

	/* A request with no operation. */
	fd = raw_greeted(d.sock);
	req.has_id = 1;
	req.id = 7;
	raw_send_req(fd, &req, NULL, 0);
	resp = raw_recv(fd, 0, 5000);
	ok(resp != NULL && resp->id == 7, "request without op: answered");
	if (resp) {
		is_int(resp->code, CKPT_EUNSUPPORTED, "... with CKPT_EUNSUPPORTED");
		ckpt__response__free_unpacked(resp, NULL);
	}
	is_int(raw_ping(fd, 8, NULL, 0), 0, "... and the connection still works");
	close(fd);
	probe("unknown operation");
}

/* ---- fds nobody asked for --------------------------------------------------------- */

static int pipe_hup(int rd, int timeout_ms)
{
	struct pollfd p = { rd, POLLIN, 0 };
	char c;

	if (poll(&p, 1, timeout_ms) <= 0)
		return 0;
	return read(rd, &c, 1) == 0;
}

static void unexpected_fds(void)
{
	int p[2], fd, i, all, code;
	int rds[100], wrs[100];

	fd = raw_greeted(d.sock);
	if (pipe2(p, O_CLOEXEC) != 0)
		bail_out("pipe");
	code = raw_ping(fd, 11, &p[1], 1);
	close(p[1]);
	is_int(code, 0, "ping with an fd attached is answered");
	ok(pipe_hup(p[0], 5000), "... and the daemon closed the fd");
	close(p[0]);

	/* 100 fds on one frame: more than any request may carry. */
	for (i = 0; i < 100; i++) {
		int q[2];

		if (pipe2(q, O_CLOEXEC) != 0)
			bail_out("pipe");
		rds[i] = q[0];
		wrs[i] = q[1];
	}
	/* More than CKPT_MAX_FDS truncates the control message: the frame
	 * cannot be trusted, so the daemon closes the connection without
	 * answering it (ckpt_limits.h). */
	code = raw_ping(fd, 12, wrs, 100);
	for (i = 0; i < 100; i++)
		close(wrs[i]);
	is_int(code, INT32_MIN, "ping carrying 100 fds is not answered "
	    "(code %d)", code);
	ok(raw_closed(fd, 5000, NULL), "... and the daemon closed the connection");
	all = 1;
	for (i = 0; i < 100; i++)
		if (!pipe_hup(rds[i], i == 0 ? 5000 : 1000))
			all = 0;
	ok(all, "every one of the 100 fds was closed by the daemon");
	for (i = 0; i < 100; i++)
		close(rds[i]);
	close(fd);

	/* An fd on the hello itself. */
	fd = raw_connect(d.sock);
	if (pipe2(p, O_CLOEXEC) != 0)
		bail_out("pipe");
	{
		Ckpt__Request req = CKPT__REQUEST__INIT;
		Ckpt__Hello h = CKPT__HELLO__INIT;
		Ckpt__Response *resp;

		h.has_version = 1;
		h.version = CKPT__VERSION__PROTOCOL_VERSION;
		req.has_id = 1;
		req.id = 1;
		req.op_case = CKPT__REQUEST__OP_HELLO;
		req.hello = &h;
		raw_send_req(fd, &req, &p[1], 1);
		close(p[1]);
		resp = raw_recv(fd, 0, 5000);
		ok(resp != NULL, "hello carrying an fd: answered (code %d)",
		    resp ? resp->code : 0);
		if (resp)
			ckpt__response__free_unpacked(resp, NULL);
	}
	ok(pipe_hup(p[0], 5000), "... and that fd was closed");
	close(p[0]);
	close(fd);
	probe("unexpected fds");
}

/* ---- bad save requests --------------------------------------------------------------- */

struct bad_leaf {
	const char *what;
	const char *item;
	int dtype;
	uint64_t shape;
	uint64_t offset, nbytes;
	int attach_memfd;      /* 1: sealed against shrinking, 2: unsealed */
	int want1, want2;      /* acceptable codes */
};

/* Send one Save (step 1) with a single array leaf; return the code of the
 * reply, or of the failure the daemon reports for that step. */
static int raw_bad_save(int fd, uint64_t mgr, const struct bad_leaf *b,
    uint64_t id)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Save sv = CKPT__SAVE__INIT;
	Ckpt__Item item = CKPT__ITEM__INIT, *items[1] = { &item };
	Ckpt__Leaf leaf = CKPT__LEAF__INIT, *leaves[1] = { &leaf };
	Ckpt__PathElem pe = CKPT__PATH_ELEM__INIT, *pes[1] = { &pe };
	Ckpt__Response *resp;
	uint64_t shape[1] = { b->shape };
	int mfd = -1, code;

	pe.has_kind = 1;
	pe.kind = CKPT__KEY_KIND__KEY_DICT;
	pe.key = "w";
	leaf.n_path = 1;
	leaf.path = pes;
	leaf.has_kind = 1;
	leaf.kind = CKPT__LEAF_KIND__LEAF_ARRAY;
	leaf.has_dtype = 1;
	leaf.dtype = (Ckpt__Dtype)b->dtype;
	leaf.n_shape = 1;
	leaf.shape = shape;
	leaf.has_offset = 1;
	leaf.offset = b->offset;
	leaf.has_nbytes = 1;
	leaf.nbytes = b->nbytes;
	item.name = (char *)b->item;
	item.has_handler = 1;
	item.handler = CKPT__HANDLER__HANDLER_STANDARD;
	item.n_leaves = 1;
	item.leaves = leaves;
	sv.has_manager = 1;
	sv.manager = mgr;
	sv.has_step = 1;
	sv.step = 1;
	sv.n_items = 1;
	sv.items = items;
	/* Another name than "default": a Composite, so the name is checked. */
	sv.has_composite = 1;
	sv.composite = strcmp(b->item, "default") != 0;
	req.has_id = 1;
	req.id = id;
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &sv;
	if (b->attach_memfd) {
		/* Sealed as libckpt seals it, so that the check under test is
		 * the one that answers (an unsealed buffer is its own case). */
		mfd = memfd_create("raw-save", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (mfd < 0 || ftruncate(mfd, 4096) != 0 ||
		    (b->attach_memfd == 1 &&
		    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0))
			bail_out("memfd: %s", strerror(errno));
	}
	raw_send_req(fd, &req, mfd >= 0 ? &mfd : NULL, mfd >= 0);
	if (mfd >= 0)
		close(mfd);
	resp = raw_recv(fd, 0, 10000);
	if (!resp)
		return INT32_MIN;
	code = resp->code;
	if (code != 0)
		diag("%s: %s (%s)", b->what, ckpt_strerror(code),
		    resp->message ? resp->message : "");
	ckpt__response__free_unpacked(resp, NULL);
	if (code == 0) {
		/* Accepted: the failure must then come from the save itself. */
		Ckpt__Request w = CKPT__REQUEST__INIT;
		Ckpt__WaitSaves ws = CKPT__WAIT_SAVES__INIT;

		ws.has_manager = 1;
		ws.manager = mgr;
		ws.has_clear_error = 1;
		ws.clear_error = 1;
		w.has_id = 1;
		w.id = id + 1;
		w.op_case = CKPT__REQUEST__OP_WAIT_SAVES;
		w.wait_saves = &ws;
		raw_send_req(fd, &w, NULL, 0);
		resp = raw_recv(fd, 0, 10000);
		if (!resp)
			return INT32_MIN;
		code = resp->code;
		if (code == 0 && resp->body_case ==
		    CKPT__RESPONSE__BODY_WAIT_SAVES)
			code = resp->wait_saves->code;
		ckpt__response__free_unpacked(resp, NULL);
		diag("%s: accepted, then %s", b->what, ckpt_strerror(code));
	}
	return code;
}

static void bad_saves(void)
{
	static const struct bad_leaf cases[] = {
		{ "unknown dtype 99", "default", 99, 4, 0, 16, 1,
		  CKPT_EDTYPE, CKPT_EINVAL },
		{ "dtype 0 (invalid)", "default", 0, 4, 0, 16, 1,
		  CKPT_EDTYPE, CKPT_EINVAL },
		{ "nbytes disagrees with shape", "default", CKPT_F32, 4, 0, 8, 1,
		  CKPT_EINVAL, CKPT_EMISMATCH },
		{ "data beyond the staging memfd", "default", CKPT_F32, 1024,
		  4096, 4096, 1, CKPT_EINVAL, CKPT_ETOOBIG },
		{ "offset + nbytes overflows", "default", CKPT_U8, 16,
		  UINT64_MAX - 7, 16, 1, CKPT_EINVAL, CKPT_ETOOBIG },
		{ "array leaf without a memfd", "default", CKPT_F32, 4, 0, 16, 0,
		  CKPT_EINVAL, CKPT_EPROTO },
		{ "shape product overflows", "default", CKPT_F64,
		  UINT64_MAX / 2, 0, 16, 1, CKPT_EINVAL, CKPT_ETOOBIG },
		{ "item name ../x", "../x", CKPT_U8, 16, 0, 16, 1,
		  CKPT_EPATH, CKPT_EINVAL },
		{ "item name a/b", "a/b", CKPT_U8, 16, 0, 16, 1,
		  CKPT_EPATH, CKPT_EINVAL },
		{ "item name ..", "..", CKPT_U8, 16, 0, 16, 1,
		  CKPT_EPATH, CKPT_EINVAL },
		{ "a staging memfd not sealed against shrinking", "default",
		  CKPT_U8, 16, 0, 16, 2, CKPT_EINVAL, CKPT_EINVAL },
	};
	char evil[HX_PATH];
	uint64_t mgr;
	size_t i;
	int fd, code;

	fd = raw_greeted(d.sock);
	mgr = raw_open(fd, watched.root, NULL, &code);
	if (!ok(mgr != 0, "raw open_manager on the root (code %d)", code))
		return;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		code = raw_bad_save(fd, mgr, &cases[i], 100 + 10 * i);
		ok(code == cases[i].want1 || code == cases[i].want2,
		    "save with %s: %s or %s (got %d %s)", cases[i].what,
		    ckpt_strerror(cases[i].want1), ckpt_strerror(cases[i].want2),
		    code, code > INT32_MIN ? ckpt_strerror(code) : "no answer");
		probe(cases[i].what);
	}
	hx_path(&d, evil, "x");
	ok(!hx_exists(evil), "nothing was written next to the root");

	/* Step prefixes that are paths. */
	mgr = raw_open(fd, watched.root, "../evil", &code);
	ok(mgr == 0 && (code == CKPT_EINVAL || code == CKPT_EPATH),
	    "step_prefix '../evil' refused (code %d)", code);
	mgr = raw_open(fd, watched.root, "a/b", &code);
	ok(mgr == 0 && (code == CKPT_EINVAL || code == CKPT_EPATH),
	    "step_prefix 'a/b' refused (code %d)", code);
	mgr = raw_open(fd, "relative/root", NULL, &code);
	ok(mgr == 0 && code != 0, "a relative root is refused (code %d)", code);
	close(fd);
	probe("bad save requests");
}

/* ---- many idle and half-sent connections ------------------------------------------- */

static void flood(void)
{
	int idle[300], half[100], i, nidle = 0, nhalf = 0, r;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t;
	ckpt_save_args *a;
	ckpt_restored *res = NULL;
	char froot[HX_PATH];
	int64_t shape[1] = { 1 << 20 }, t0;
	unsigned char *buf = malloc(1 << 20);

	for (i = 0; i < 300; i++)
		if ((idle[nidle] = raw_connect(d.sock)) >= 0)
			nidle++;
	for (i = 0; i < 100; i++) {
		int fd = raw_connect(d.sock);

		if (fd < 0)
			continue;
		/* A frame header announcing 1000 bytes, then only 10. */
		raw_send_len(fd, 1000, "\x08\x01\x52\x05\x08\x01\x12\x01\x61\x00",
		    10);
		half[nhalf++] = fd;
	}
	is_int(nidle + nhalf, 400, "400 connections open (300 idle, 100 "
	    "half-sent)");

	t0 = hx_now_ms();
	hx_path(&d, froot, "flood");
	r = hx_connect(&d, &c);
	if (r == 0)
		r = ckpt_manager_open(c, froot, NULL, &m);
	ok_call(r, c, "a normal client connects and opens a root");
	hx_fill(buf, 1 << 20, 77);
	t = ckpt_tree_new();
	ckpt_tree_add_array(t, "w", CKPT_U8, 1, shape, buf, 1 << 20);
	a = ckpt_save_args_new();
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	if (r == 0)
		r = ckpt_save(m, 0, a, NULL);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	ok_call(r, c, "... saves a step");
	if (r == 0)
		r = ckpt_restore(m, 0, NULL, &res);
	if (ok_call(r, c, "... and restores it")) {
		const ckpt_tree *rt = ckpt_restored_item_tree(res, 0);
		ckpt_leaf lf;

		ok(rt && ckpt_tree_leaf(rt, 0, &lf) == 0 && lf.nbytes == 1 << 20 &&
		    memcmp(lf.data, buf, 1 << 20) == 0, "... intact");
		ckpt_restored_free(res);
	}
	ok(hx_now_ms() - t0 < 20000, "... within 20 s (%lld ms)",
	    (long long)(hx_now_ms() - t0));
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	free(buf);
	for (i = 0; i < nidle; i++)
		close(idle[i]);
	for (i = 0; i < nhalf; i++)
		close(half[i]);
	usleep(200 * 1000);
	probe("400 idle/half-sent connections");
}

int main(void)
{
	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");

	/* A root with one committed step, watched for changes. */
	untouched_make(&d, &watched, "raw");

	bad_frames();
	bad_handshakes();
	unexpected_fds();
	bad_saves();
	flood();

	untouched_free(&watched);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
