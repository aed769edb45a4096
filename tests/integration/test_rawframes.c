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
#include "harness.h"

#define MAX_FRAME (16u * 1024 * 1024)

static struct hx_daemon d;
static char root[HX_PATH];

/* ---- raw wire tools ---------------------------------------------------------- */

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(d.sock) >= sizeof sa.sun_path)
		bail_out("socket path too long: %s", d.sock);
	memcpy(sa.sun_path, d.sock, strlen(d.sock) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		diag("raw connect: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Send bytes, with fds attached to the first byte. */
static int raw_send(int fd, const void *buf, size_t len, const int *fds,
    int nfds)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * 253)];
	} cm;
	struct iovec iov = { (void *)buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t r;

	if (nfds > 0) {
		memset(&cm, 0, sizeof cm);
		msg.msg_control = cm.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm.h.cmsg_level = SOL_SOCKET;
		cm.h.cmsg_type = SCM_RIGHTS;
		cm.h.cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(&cm.h), fds, sizeof(int) * (size_t)nfds);
	}
	while (len > 0) {
		r = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		iov.iov_base = (char *)iov.iov_base + r;
		iov.iov_len -= (size_t)r;
		len -= (size_t)r;
		msg.msg_control = NULL;
		msg.msg_controllen = 0;
	}
	return 0;
}

static int raw_send_len(int fd, uint32_t len, const void *body, size_t blen)
{
	unsigned char *buf = malloc(4 + blen);
	int r;

	buf[0] = (unsigned char)(len >> 24);
	buf[1] = (unsigned char)(len >> 16);
	buf[2] = (unsigned char)(len >> 8);
	buf[3] = (unsigned char)len;
	if (blen)
		memcpy(buf + 4, body, blen);
	r = raw_send(fd, buf, 4 + blen, NULL, 0);
	free(buf);
	return r;
}

static int raw_send_req(int fd, const Ckpt__Request *req, const int *fds,
    int nfds)
{
	size_t n = ckpt__request__get_packed_size(req);
	unsigned char *buf = malloc(4 + n);
	int r;

	buf[0] = (unsigned char)(n >> 24);
	buf[1] = (unsigned char)(n >> 16);
	buf[2] = (unsigned char)(n >> 8);
	buf[3] = (unsigned char)n;
	ckpt__request__pack(req, buf + 4);
	r = raw_send(fd, buf, 4 + n, fds, nfds);
	free(buf);
	return r;
}

/* Read exactly n bytes within timeout_ms. 1 ok, 0 EOF, -1 error/timeout. */
static int raw_read(int fd, void *buf, size_t n, int timeout_ms)
{
	int64_t end = hx_now_ms() + timeout_ms;
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		struct pollfd p = { fd, POLLIN, 0 };
		int64_t left = end - hx_now_ms();

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -1;
		r = recv(fd, (char *)buf + got, n - got, MSG_CMSG_CLOEXEC);
		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno == ECONNRESET ? 0 : -1;
		}
		got += (size_t)r;
	}
	return 1;
}

/* Next response (events with id 0 skipped unless want_event). NULL on EOF
 * or timeout. */
static Ckpt__Response *raw_recv(int fd, int timeout_ms)
{
	unsigned char hdr[4], *body;
	Ckpt__Response *resp;
	uint32_t len;

	for (;;) {
		if (raw_read(fd, hdr, 4, timeout_ms) != 1)
			return NULL;
		len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		    (uint32_t)hdr[2] << 8 | hdr[3];
		if (len == 0 || len > MAX_FRAME)
			return NULL;
		body = malloc(len);
		if (raw_read(fd, body, len, timeout_ms) != 1) {
			free(body);
			return NULL;
		}
		resp = ckpt__response__unpack(NULL, len, body);
		free(body);
		if (!resp || resp->id != 0)
			return resp;
		ckpt__response__free_unpacked(resp, NULL);
	}
}

/* 1 when the daemon closes the connection within timeout_ms (responses
 * before the close are allowed; *code gets the last one's code). */
static int raw_closed(int fd, int timeout_ms, int *code)
{
	int64_t end = hx_now_ms() + timeout_ms;
	Ckpt__Response *resp;
	unsigned char hdr[4];

	while (hx_now_ms() < end) {
		int r = raw_read(fd, hdr, 4, (int)(end - hx_now_ms()));
		uint32_t len;
		unsigned char *body;

		if (r == 0)
			return 1;
		if (r < 0)
			return 0;
		len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		    (uint32_t)hdr[2] << 8 | hdr[3];
		if (len == 0 || len > MAX_FRAME)
			return 0;
		body = malloc(len);
		r = raw_read(fd, body, len, (int)(end - hx_now_ms()));
		if (r == 1 && code &&
		    (resp = ckpt__response__unpack(NULL, len, body)) != NULL) {
			*code = resp->code;
			ckpt__response__free_unpacked(resp, NULL);
		}
		free(body);
		if (r == 0)
			return 1;
	}
	return 0;
}

static int raw_hello(int fd, uint32_t version, uint64_t id)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Hello h = CKPT__HELLO__INIT;

	h.has_version = 1;
	h.version = version;
	h.client = "raw-frame test";
	req.has_id = 1;
	req.id = id;
	req.op_case = CKPT__REQUEST__OP_HELLO;
	req.hello = &h;
	return raw_send_req(fd, &req, NULL, 0);
}

/* Connect and exchange a good hello. -1 on failure. */
static int raw_greeted(void)
{
	Ckpt__Response *resp;
	int fd = raw_connect();

	if (fd < 0)
		return -1;
	if (raw_hello(fd, CKPT__VERSION__PROTOCOL_VERSION, 1) != 0 ||
	    !(resp = raw_recv(fd, 5000))) {
		close(fd);
		return -1;
	}
	if (resp->code != 0) {
		diag("hello refused: %d %s", resp->code,
		    resp->message ? resp->message : "");
		ckpt__response__free_unpacked(resp, NULL);
		close(fd);
		return -1;
	}
	ckpt__response__free_unpacked(resp, NULL);
	return fd;
}

static int raw_ping(int fd, uint64_t id, const int *fds, int nfds)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Ping p = CKPT__PING__INIT;
	Ckpt__Response *resp;
	int code;

	req.has_id = 1;
	req.id = id;
	req.op_case = CKPT__REQUEST__OP_PING;
	req.ping = &p;
	if (raw_send_req(fd, &req, fds, nfds) != 0)
		return INT32_MIN;
	resp = raw_recv(fd, 5000);
	if (!resp)
		return INT32_MIN;
	code = resp->id == id ? resp->code : INT32_MIN + 1;
	ckpt__response__free_unpacked(resp, NULL);
	return code;
}

/* ---- after every bad input: the daemon serves others, disk unchanged ---- */

static char *disk_before;

static void probe(const char *what)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_status st;
	uint64_t *steps = NULL;
	size_t n = 0;
	char *now;
	int r;

	ok(hx_alive(&d), "%s: ckptd still running", what);
	r = hx_connect(&d, &c);
	if (r == 0)
		r = ckpt_status_get(c, &st);
	if (r == 0)
		r = ckpt_manager_open(c, root, NULL, &m);
	if (r == 0)
		r = ckpt_all_steps(m, &steps, &n);
	is_int(r, 0, "%s: another client is served", what);
	ok(n == 1 && steps && steps[0] == 0, "%s: root still lists [0]", what);
	free(steps);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	now = hx_snapshot(root);
	ok(strcmp(now, disk_before) == 0, "%s: nothing changed on disk", what);
	if (strcmp(now, disk_before) != 0)
		diag("before:\n%s\nafter:\n%s", disk_before, now);
	free(now);
}

/* ---- framing and handshake errors ---------------------------------------------- */

static void bad_frames(void)
{
	unsigned char junk[64];
	int fd, code;

	/* Garbage instead of a protobuf, as the first frame. */
	memset(junk, 0xff, sizeof junk);
	fd = raw_connect();
	raw_send_len(fd, sizeof junk, junk, sizeof junk);
	code = 0;
	ok(raw_closed(fd, 5000, &code), "malformed first frame: connection "
	    "closed (last code %d)", code);
	close(fd);
	probe("malformed first frame");

	/* Garbage after a good hello. */
	fd = raw_greeted();
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
	fd = raw_greeted();
	raw_send_len(fd, 0xffffffffu, NULL, 0);
	ok(raw_closed(fd, 5000, NULL), "length 0xffffffff: closed at once");
	close(fd);
	fd = raw_greeted();
	raw_send_len(fd, MAX_FRAME + 1, NULL, 0);
	ok(raw_closed(fd, 5000, NULL), "length 16 MiB + 1: closed at once");
	close(fd);
	fd = raw_greeted();
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
	fd = raw_connect();
	raw_hello(fd, 99, 1);
	resp = raw_recv(fd, 5000);
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
	fd = raw_connect();
	code = raw_ping(fd, 3, NULL, 0);
	ok(code != 0, "ping before hello is refused (code %d)", code);
	close(fd);
	probe("no hello");

	/* A request with no operation. */
	fd = raw_greeted();
	req.has_id = 1;
	req.id = 7;
	raw_send_req(fd, &req, NULL, 0);
	resp = raw_recv(fd, 5000);
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

/* 1 when the daemon closed the connection fd within timeout_ms. */
static int peer_closed(int fd, int timeout_ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char c;
	ssize_t n;

	if (poll(&p, 1, timeout_ms) <= 0)
		return 0;
	n = recv(fd, &c, 1, MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

static void unexpected_fds(void)
{
	int p[2], fd, i, all, code;
	int rds[100], wrs[100];

	fd = raw_greeted();
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
	ok(peer_closed(fd, 5000), "... and the daemon closed the connection");
	all = 1;
	for (i = 0; i < 100; i++)
		if (!pipe_hup(rds[i], i == 0 ? 5000 : 1000))
			all = 0;
	ok(all, "every one of the 100 fds was closed by the daemon");
	for (i = 0; i < 100; i++)
		close(rds[i]);
	close(fd);

	/* An fd on the hello itself. */
	fd = raw_connect();
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
		resp = raw_recv(fd, 5000);
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

static uint64_t raw_open(int fd, const char *path, const char *prefix,
    int *code)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__OpenManager om = CKPT__OPEN_MANAGER__INIT;
	Ckpt__ManagerOptions o = CKPT__MANAGER_OPTIONS__INIT;
	Ckpt__Response *resp;
	uint64_t id = 0;

	om.root = (char *)path;
	if (prefix) {
		o.step_prefix = (char *)prefix;
		om.options = &o;
	}
	req.has_id = 1;
	req.id = 20;
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = &om;
	raw_send_req(fd, &req, NULL, 0);
	resp = raw_recv(fd, 5000);
	*code = resp ? resp->code : INT32_MIN;
	if (resp && resp->code == 0 && resp->body_case ==
	    CKPT__RESPONSE__BODY_OPEN_MANAGER)
		id = resp->open_manager->manager;
	if (resp && resp->code != 0)
		diag("open_manager(%s): %s", path,
		    resp->message ? resp->message : "");
	if (resp)
		ckpt__response__free_unpacked(resp, NULL);
	return id;
}

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
	resp = raw_recv(fd, 10000);
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
		resp = raw_recv(fd, 10000);
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

	fd = raw_greeted();
	mgr = raw_open(fd, root, NULL, &code);
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
	mgr = raw_open(fd, root, "../evil", &code);
	ok(mgr == 0 && (code == CKPT_EINVAL || code == CKPT_EPATH),
	    "step_prefix '../evil' refused (code %d)", code);
	mgr = raw_open(fd, root, "a/b", &code);
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
		if ((idle[nidle] = raw_connect()) >= 0)
			nidle++;
	for (i = 0; i < 100; i++) {
		int fd = raw_connect();

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
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t;
	ckpt_save_args *a;
	float w[4] = { 1, 2, 3, 4 };
	int64_t shape[1] = { 4 };

	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");

	/* A root with one committed step, watched for changes. */
	hx_path(&d, root, "raw");
	if (hx_connect(&d, &c) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0)
		bail_out("cannot open the root");
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
	disk_before = hx_snapshot(root);

	bad_frames();
	bad_handshakes();
	unexpected_fds();
	bad_saves();
	flood();

	free(disk_before);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
