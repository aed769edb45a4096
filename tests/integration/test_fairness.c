/*
 * test_fairness.c - one user cannot exhaust ckptd for another.
 *
 * A root ckptd (socket 0666) serves two real users, A and B (created with
 * useradd). B misbehaves; A must still be served:
 *  - B opens 4,200 connections: B gets at most its per-user share (its
 *    next client is refused with CKPT_ELIMIT), A connects and saves;
 *  - B's connections without a manager close after --idle-timeout, A's
 *    connection with a manager stays open;
 *  - a 16 MB save frame of 8,000,000 empty leaves is refused with
 *    CKPT_ETOOBIG, at once, and the connection stays usable;
 *  - B's requests in flight stop at --max-requests-per-user (CKPT_ELIMIT);
 *  - B's saves waiting for memory hold at most a quarter of the budget in
 *    unpacked requests (the next one gets CKPT_ELIMIT);
 *  - a save referencing 128 MiB of holes of a 2 GiB sparse memfd commits
 *    without growing the daemon's resident memory by B's holes (VmHWM),
 *    and buffers mixing data and holes restore byte for byte;
 *  - A's median save latency (save + wait until durable) while B does all
 *    of the above at once stays within 2x of its unloaded median.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.pb-c.h"
#include "ckpt_limits.h"
#include "harness.h"
#include "raw.h"

#define USER_A "ckptfaira"
#define USER_B "ckptfairb"
#define IDLE_SECS 3
#define IDLE_STR "3"
#define B_CONNS 4200
#define PER_USER 1024           /* ckptd's default --max-connections-per-user */
#define MAX_INFLIGHT 512        /* ckptd's default --max-requests-per-user */
#define SPARSE_SIZE (2ull << 30)
#define SPARSE_REF (128ull << 20)
#define A_SAVES 21
#define A_BYTES (64u << 10)

static struct hx_daemon d;
static uid_t ua, ub;
static gid_t ga, gb;
static char root_a[HX_PATH], root_b[HX_PATH];

/* A save frame of n empty leaves in one item, packed by hand (the
 * generated code would need n structs): Request{id, save{manager, step,
 * items{name, leaves x n}}}. *len gets the frame length with its header. */
static unsigned char *huge_tree_frame(uint64_t id, uint64_t mgr, size_t n,
    size_t *len)
{
	size_t item_len = 2 + 7 + 2 * n, hdr_max = 64;
	unsigned char *b = malloc(4 + hdr_max + item_len), *p, *q;
	size_t body;

#define VARINT(v) do { uint64_t v_ = (v); \
	while (v_ >= 0x80) { *p++ = (unsigned char)(v_ | 0x80); v_ >>= 7; } \
	*p++ = (unsigned char)v_; } while (0)
	p = b + 4;
	*p++ = 0x08;                    /* id */
	VARINT(id);
	*p++ = 0x72;                    /* save = 14, length-delimited */
	/* save body: manager (1), step (2), items (3) */
	{
		unsigned char sv[32], *s0 = p;
		size_t svhdr;

		p = sv;
		*p++ = 0x08;
		VARINT(mgr);
		*p++ = 0x10;
		VARINT(7);
		*p++ = 0x1a;            /* items */
		VARINT(item_len);
		svhdr = (size_t)(p - sv);
		p = s0;
		VARINT(svhdr + item_len);
		memcpy(p, sv, svhdr);
		p += svhdr;
	}
	*p++ = 0x0a;                    /* item name "default" */
	*p++ = 7;
	memcpy(p, "default", 7);
	p += 7;
	for (q = p + 2 * n; p < q; p += 2) {
		p[0] = 0x1a;            /* leaves = 3, empty */
		p[1] = 0x00;
	}
	body = (size_t)(p - b) - 4;
	b[0] = (unsigned char)(body >> 24);
	b[1] = (unsigned char)(body >> 16);
	b[2] = (unsigned char)(body >> 8);
	b[3] = (unsigned char)body;
	*len = body + 4;
#undef VARINT
	return b;
}

/* ---- the daemon's memory --------------------------------------------------------- */

/* A field of /proc/<daemon>/status in KiB, or -1. */
static long daemon_status_kib(const char *field)
{
	char path[64], text[4096], *p;
	long v = -1;
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "/proc/%d/status", (int)d.pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, text, sizeof text - 1);
	close(fd);
	if (n <= 0)
		return -1;
	text[n] = '\0';
	if ((p = strstr(text, field)) != NULL)
		v = strtol(p + strlen(field), NULL, 10);
	return v;
}

/* ---- user A: save latency ------------------------------------------------------------ */

struct a_run {
	int saves;
	uint64_t first_step;
	long median_us;
	int holdconn_secs;      /* hold an idle manager connection first */
};

static int cmp_long(const void *x, const void *y)
{
	long a = *(const long *)x, b = *(const long *)y;

	return a < b ? -1 : a > b;
}

/* As A: connect, open root_a, save `saves` steps (each save + wait until
 * durable is one latency sample), restore the last one byte for byte. */
static int a_saves(void *arg, char *msg, size_t msglen)
{
	struct a_run *run = arg;
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	int64_t shape[1] = { A_BYTES };
	unsigned char *buf = malloc(A_BYTES);
	long lat[64];
	int i, r;

	if ((r = ckpt_connect(d.sock, &c)) != 0) {
		snprintf(msg, msglen, "connect: %s", ckpt_connect_errmsg());
		return r;
	}
	if ((r = ckpt_manager_open(c, root_a, NULL, &m)) != 0) {
		snprintf(msg, msglen, "open: %s", ckpt_client_errmsg(c));
		goto out;
	}
	if (run->holdconn_secs > 0)
		hx_sleep_ms(run->holdconn_secs * 1000);
	for (i = 0; i < run->saves; i++) {
		ckpt_tree *t = ckpt_tree_new();
		ckpt_save_args *a = ckpt_save_args_new();
		struct timespec ts;
		int64_t t0;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		t0 = ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
		hx_fill(buf, A_BYTES, run->first_step + (uint64_t)i);
		ckpt_tree_add_array(t, "w", CKPT_U8, 1, shape, buf, A_BYTES);
		ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
		r = ckpt_save(m, run->first_step + (uint64_t)i, a, NULL);
		if (r == 0)
			r = ckpt_wait_until_finished(m);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		lat[i] = ts.tv_sec * 1000000LL + ts.tv_nsec / 1000 - t0;
		ckpt_save_args_free(a);
		ckpt_tree_free(t);
		if (r != 0) {
			snprintf(msg, msglen, "save %d: %s", i,
			    ckpt_manager_errmsg(m));
			goto out;
		}
	}
	qsort(lat, (size_t)run->saves, sizeof lat[0], cmp_long);
	run->median_us = run->saves > 0 ? lat[run->saves / 2] : 0;
	if (run->saves > 0) {
		const ckpt_tree *t;
		ckpt_leaf lf;
		long k;

		r = ckpt_restore(m, (int64_t)(run->first_step +
		    (uint64_t)run->saves - 1), NULL, &res);
		hx_fill(buf, A_BYTES, run->first_step + (uint64_t)run->saves -
		    1);
		if (r == 0 && ((t = ckpt_restored_item_tree(res, 0)) == NULL ||
		    (k = ckpt_tree_find(t, "w")) < 0 ||
		    ckpt_tree_leaf(t, (size_t)k, &lf) != 0 ||
		    lf.nbytes != A_BYTES || memcmp(lf.data, buf, A_BYTES) != 0))
			r = CKPT_ECORRUPT;
		if (r != 0) {
			snprintf(msg, msglen, "restore: %s", ckpt_strerror(r));
			goto out;
		}
	}
	snprintf(msg, msglen, "median %ld us", run->median_us);
out:
	ckpt_restored_free(res);
	if (m != NULL)
		ckpt_manager_close(m);
	ckpt_disconnect(c);
	free(buf);
	return r;
}

/* Run a_saves as A in a child; the median comes back in the message. */
static int a_measure(int saves, uint64_t first, long *median_us, char *msg,
    size_t msglen)
{
	struct a_run run = { saves, first, 0, 0 };
	int r = hx_as_user(ua, ga, a_saves, &run, msg, msglen);

	*median_us = r == 0 ? strtol(msg + strlen("median "), NULL, 10) : -1;
	return r;
}

/* ---- user B: misbehaviour ---------------------------------------------------------- */

static void b_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 8192) {
		rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* 1 when the daemon closed fd (EOF) within timeout_ms. */
static int closed_by_peer(int fd, int timeout_ms)
{
	unsigned char b[256];
	int64_t end = hx_now_ms() + timeout_ms;

	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		int64_t left = end - hx_now_ms();
		ssize_t r;

		if (poll(&p, 1, left > 0 ? (int)left : 0) <= 0)
			return 0;
		r = recv(fd, b, sizeof b, MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return 1;
	}
}

struct b_conns {
	int fds[B_CONNS];
	int want;
	int n;
	int open_after;         /* still open after the refusals settled */
	int limit_code;         /* what B's next client got */
};

/* As B: open B_CONNS connections; count how many the daemon keeps; try a
 * real client on top. Keeps the fds open (the caller's child exits). */
static int b_open_many(void *arg, char *msg, size_t msglen)
{
	struct b_conns *bc = arg;
	ckpt_client *c = NULL;
	int i;

	b_raise_nofile();
	for (i = 0; i < bc->want; i++)
		if ((bc->fds[bc->n] = raw_connect(d.sock)) >= 0)
			bc->n++;
	/* Refused ones are closed (at most 5 s later when silent). */
	hx_sleep_ms(6000);
	for (i = 0; i < bc->n; i++)
		if (!closed_by_peer(bc->fds[i], 0))
			bc->open_after++;
	bc->limit_code = ckpt_connect(d.sock, &c);
	if (c != NULL)
		ckpt_disconnect(c);
	snprintf(msg, msglen, "%d %d %d", bc->n, bc->open_after,
	    bc->limit_code);
	return 0;
}

/* Fork a child as B that opens `want` connections and holds them until
 * killed; its report comes back in msg. */
static pid_t b_hold(int want, char *msg, size_t msglen)
{
	static struct b_conns bc;       /* large: not on the stack */
	pid_t pid;
	int p[2];
	ssize_t r;

	if (pipe(p) != 0)
		bail_out("pipe: %s", strerror(errno));
	fflush(stdout);
	if ((pid = fork()) == 0) {
		char m[128];

		close(p[0]);
		if (setgroups(0, NULL) != 0 || setgid(gb) != 0 ||
		    setuid(ub) != 0)
			_exit(1);
		memset(&bc, 0, sizeof bc);
		bc.want = want;
		b_open_many(&bc, m, sizeof m);
		if (write(p[1], m, strlen(m) + 1) < 0)
			_exit(1);
		pause();                /* killed by the parent */
		_exit(0);
	}
	close(p[1]);
	memset(msg, 0, msglen);
	r = read(p[0], msg, msglen - 1);
	close(p[0]);
	if (r <= 0)
		snprintf(msg, msglen, "no report");
	return pid;
}

static void restart_with(const char *idle)
{
	d.extra[1] = idle;
	if (hx_restart(&d) != 0)
		bail_out("ckptd did not restart");
	chmod(d.sock, 0666);
}

static void test_connections(void)
{
	char msg[1024];
	long med;
	int r, n, open_after, code;
	pid_t pid;

	/* Without the idle timeout: the connection limits alone. */
	restart_with("0");
	pid = b_hold(B_CONNS, msg, sizeof msg);
	n = open_after = code = 0;
	ok(sscanf(msg, "%d %d %d", &n, &open_after, &code) == 3,
	    "B opened its connections (%s)", msg);
	diag("B: %d connected, %d kept by ckptd, next client: %s", n,
	    open_after, ckpt_strerror(code));
	is_int(open_after, PER_USER, "ckptd keeps %d connections of B's %d",
	    PER_USER, B_CONNS);
	is_int(code, CKPT_ELIMIT, "B's next client is refused with "
	    "CKPT_ELIMIT");
	r = a_measure(3, 1000, &med, msg, sizeof msg);
	is_int(r, 0, "A connects and saves while B holds %d connections (%s)",
	    open_after, msg);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);

	/* With it: B's connections have no manager and are closed. */
	restart_with(IDLE_STR);
	pid = b_hold(200, msg, sizeof msg);
	{
		ckpt_client *c = NULL;
		ckpt_status st;
		int64_t end = hx_now_ms() + (IDLE_SECS + 5) * 1000;
		unsigned conns = 0;

		do {
			hx_sleep_ms(500);
			if (hx_connect(&d, &c) != 0)
				break;
			memset(&st, 0, sizeof st);
			if (ckpt_status_get(c, &st) == 0)
				conns = (unsigned)st.connections;
			ckpt_disconnect(c);
			c = NULL;
		} while (conns > 1 && hx_now_ms() < end);
		is_int(conns, 1, "B's 200 idle connections are closed after the "
		    "%d s idle timeout (ckptd reports %u connections, ours "
		    "included)", IDLE_SECS, conns);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);

	/* A connection with a manager is not idle. */
	{
		struct a_run run = { 2, 1100, 0, IDLE_SECS + 2 };

		r = hx_as_user(ua, ga, a_saves, &run, msg, sizeof msg);
		is_int(r, 0, "A's connection with an open manager survives %d s "
		    "without requests (%s)", IDLE_SECS + 2, msg);
	}
}

/* ---- huge trees and requests in flight ----------------------------------------- */

static int b_huge_tree(void *arg, char *msg, size_t msglen)
{
	size_t len, n = (CKPT_MAX_FRAME - 64) / 2;
	unsigned char *f;
	Ckpt__Response *resp;
	int64_t t0, ms;
	int fd = raw_greeted(d.sock), code = INT32_MIN;
	uint64_t mgr;

	(void)arg;
	if (fd < 0 || (mgr = raw_open(fd, root_b, NULL, NULL)) == 0) {
		snprintf(msg, msglen, "cannot open %s", root_b);
		return INT32_MIN;
	}
	f = huge_tree_frame(77, mgr, n, &len);
	t0 = hx_now_ms();
	if (raw_send(fd, f, len, NULL, 0) == 0 &&
	    (resp = raw_recv(fd, 0, 60000)) != NULL) {
		code = resp->id == 77 ? resp->code : INT32_MIN + 1;
		snprintf(msg, msglen, "%zu leaves in %zu bytes: %s after %lld ms"
		    " (%s); ", n, len, ckpt_strerror(code),
		    (long long)(hx_now_ms() - t0),
		    resp->message ? resp->message : "");
		ckpt__response__free_unpacked(resp, NULL);
	}
	ms = hx_now_ms() - t0;
	free(f);
	if (code == CKPT_ETOOBIG && ms > 2000)
		code = CKPT_ETIMEDOUT;          /* refused, but too slowly */
	if (code == CKPT_ETOOBIG && raw_ping(fd, 78, NULL, 0) != 0)
		code = CKPT_ECONN;              /* the connection must survive */
	close(fd);
	return code;
}

/* The same frame as the first one on a connection, before hello (arg
 * NULL), or with id 0 after hello (arg non-NULL: no reply can carry the
 * refusal, the connection must close at once). */
static int b_huge_before_hello(void *arg, char *msg, size_t msglen)
{
	size_t len, n = (CKPT_MAX_FRAME - 64) / 2;
	unsigned char *f = huge_tree_frame(arg != NULL ? 0 : 5, 1, n, &len);
	Ckpt__Response *resp;
	int64_t t0 = hx_now_ms();
	int fd = arg != NULL ? raw_greeted(d.sock) : raw_connect(d.sock), code = INT32_MIN;

	if (arg != NULL) {
		if (fd >= 0 && raw_send(fd, f, len, NULL, 0) == 0 &&
		    closed_by_peer(fd, 60000))
			code = hx_now_ms() - t0 <= 2000 ? 0 : CKPT_ETIMEDOUT;
		snprintf(msg, msglen, "closed after %lld ms",
		    (long long)(hx_now_ms() - t0));
		free(f);
		if (fd >= 0)
			close(fd);
		return code;
	}
	if (fd >= 0 && raw_send(fd, f, len, NULL, 0) == 0 &&
	    (resp = raw_recv(fd, 0, 60000)) != NULL) {
		code = resp->code;
		ckpt__response__free_unpacked(resp, NULL);
	}
	snprintf(msg, msglen, "%s after %lld ms", ckpt_strerror(code),
	    (long long)(hx_now_ms() - t0));
	if (code == CKPT_ETOOBIG && (hx_now_ms() - t0 > 2000 ||
	    !closed_by_peer(fd, 5000)))
		code = CKPT_ETIMEDOUT;  /* too slow, or left open */
	free(f);
	if (fd >= 0)
		close(fd);
	return code;
}

static int b_inflight(void *arg, char *msg, size_t msglen)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__WaitForStep w = CKPT__WAIT_FOR_STEP__INIT;
	Ckpt__Response *resp;
	int fd = raw_greeted(d.sock), i, code = INT32_MIN;
	uint64_t mgr;

	(void)arg;
	if (fd < 0 || (mgr = raw_open(fd, root_b, NULL, NULL)) == 0)
		return INT32_MIN;
	/* Waits that never end: each stays in flight. */
	w.has_manager = 1;
	w.manager = mgr;
	w.has_after = 1;
	w.after = 1000000000;
	req.has_id = 1;
	req.op_case = CKPT__REQUEST__OP_WAIT_FOR_STEP;
	req.wait_for_step = &w;
	for (i = 0; i < MAX_INFLIGHT + 1; i++) {
		req.id = 1000 + (uint64_t)i;
		if (raw_send_req(fd, &req, NULL, 0) != 0)
			break;
	}
	/* Only the one past the limit is answered; and a refusal frees no
	 * room: the next one is refused too. */
	for (i = 0; i < 2; i++) {
		if (i == 1) {
			req.id = 1000 + MAX_INFLIGHT + 1;
			raw_send_req(fd, &req, NULL, 0);
		}
		if ((resp = raw_recv(fd, 0, 10000)) == NULL) {
			snprintf(msg, msglen, "request %d: no reply",
			    1000 + MAX_INFLIGHT + i);
			code = INT32_MIN + 2;
			break;
		}
		code = resp->id == (uint64_t)(1000 + MAX_INFLIGHT + i) ?
		    resp->code : INT32_MIN + 1;
		snprintf(msg, msglen, "request %llu: %s (%s)",
		    (unsigned long long)resp->id, ckpt_strerror(resp->code),
		    resp->message ? resp->message : "");
		ckpt__response__free_unpacked(resp, NULL);
		if (code != CKPT_ELIMIT)
			break;
	}
	close(fd);
	return code;
}

static void test_requests(void)
{
	char msg[1024];
	int r;

	r = hx_as_user(ub, gb, b_huge_tree, NULL, msg, sizeof msg);
	is_int(r, CKPT_ETOOBIG, "a 16 MB save of 8 M empty leaves is refused "
	    "with CKPT_ETOOBIG within 2 s, the connection stays usable (%s)",
	    msg);
	r = hx_as_user(ub, gb, b_huge_before_hello, NULL, msg, sizeof msg);
	is_int(r, CKPT_ETOOBIG, "... also as the first frame, before hello: "
	    "refused within 2 s, then the connection closes (%s)", msg);
	r = hx_as_user(ub, gb, b_huge_before_hello, "id 0", msg, sizeof msg);
	is_int(r, 0, "... and with id 0 (nothing to answer) the connection "
	    "closes within 2 s, unpacked never (%s)", msg);
	r = hx_as_user(ub, gb, b_inflight, NULL, msg, sizeof msg);
	is_int(r, CKPT_ELIMIT, "requests %d and %d in flight of B are refused "
	    "with CKPT_ELIMIT (%s)", MAX_INFLIGHT + 1, MAX_INFLIGHT + 2, msg);
}

/* ---- sparse staging buffers ------------------------------------------------------- */

/* As B: save one leaf referencing `ref` bytes of holes of a sparse memfd
 * of SPARSE_SIZE bytes, as step `step`; wait until durable. */
struct b_sparse {
	uint64_t step;
	int loops;              /* 0: forever (killed) */
	uint64_t ref;           /* bytes referenced (0: SPARSE_REF) */
};

static int b_sparse_save(void *arg, char *msg, size_t msglen)
{
	struct b_sparse *bs = arg;
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Save sv = CKPT__SAVE__INIT;
	Ckpt__Item item = CKPT__ITEM__INIT, *items[1] = { &item };
	Ckpt__Leaf leaf = CKPT__LEAF__INIT, *leaves[1] = { &leaf };
	Ckpt__PathElem pe = CKPT__PATH_ELEM__INIT, *pes[1] = { &pe };
	Ckpt__WaitSaves ws = CKPT__WAIT_SAVES__INIT;
	Ckpt__Request wreq = CKPT__REQUEST__INIT;
	Ckpt__Response *resp = NULL;
	uint64_t ref = bs->ref ? bs->ref : SPARSE_REF;
	uint64_t shape[1] = { ref }, mgr;
	int fd = raw_greeted(d.sock), mfd, code = 0, i;

	if (fd < 0 || (mgr = raw_open(fd, root_b, NULL, NULL)) == 0)
		return INT32_MIN;
	mfd = memfd_create("sparse", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0 || ftruncate(mfd, (off_t)SPARSE_SIZE) != 0 ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
		return INT32_MIN;
	/* One page of data at the start, the rest holes. */
	if (pwrite(mfd, "data", 4, 0) != 4)
		return INT32_MIN;
	pe.has_kind = 1;
	pe.kind = CKPT__KEY_KIND__KEY_DICT;
	pe.key = "w";
	leaf.n_path = 1;
	leaf.path = pes;
	leaf.has_kind = 1;
	leaf.kind = CKPT__LEAF_KIND__LEAF_ARRAY;
	leaf.has_dtype = 1;
	leaf.dtype = CKPT__DTYPE__DTYPE_U8;
	leaf.n_shape = 1;
	leaf.shape = shape;
	leaf.has_offset = 1;
	leaf.offset = SPARSE_SIZE / 2;
	leaf.has_nbytes = 1;
	leaf.nbytes = ref;
	item.name = "default";
	item.has_handler = 1;
	item.handler = CKPT__HANDLER__HANDLER_STANDARD;
	item.n_leaves = 1;
	item.leaves = leaves;
	sv.has_manager = 1;
	sv.manager = mgr;
	sv.has_step = 1;
	sv.n_items = 1;
	sv.items = items;
	sv.has_force = 1;
	sv.force = 1;
	req.has_id = 1;
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &sv;
	ws.has_manager = 1;
	ws.manager = mgr;
	wreq.has_id = 1;
	wreq.op_case = CKPT__REQUEST__OP_WAIT_SAVES;
	wreq.wait_saves = &ws;
	for (i = 0; bs->loops == 0 || i < bs->loops; i++) {
		sv.step = bs->step + (uint64_t)i;
		req.id = 100 + 2 * (uint64_t)i;
		if ((code = raw_call(fd, &req, &mfd, 1, 60000, &resp)) != 0)
			break;
		ckpt__response__free_unpacked(resp, NULL);
		resp = NULL;
		wreq.id = req.id + 1;
		if ((code = raw_call(fd, &wreq, NULL, 0, 120000, &resp)) == 0 &&
		    resp->body_case == CKPT__RESPONSE__BODY_WAIT_SAVES)
			code = resp->wait_saves->code;
		if (code != 0)
			break;
		ckpt__response__free_unpacked(resp, NULL);
		resp = NULL;
	}
	snprintf(msg, msglen, "%s%s", ckpt_strerror(code),
	    resp != NULL && resp->message ? resp->message : "");
	if (resp != NULL)
		ckpt__response__free_unpacked(resp, NULL);
	close(mfd);
	close(fd);
	return code;
}

/* As B: while a sparse save over the budget runs, send two saves of
 * SCALARS int leaves each (about 10 MB unpacked, more than a quarter of
 * the 32 MiB budget): the first waits for memory, the second is refused
 * (requests waiting for memory hold daemon memory too). */
#define SCALARS 50000

static Ckpt__Request *scalar_save(uint64_t id, uint64_t mgr, uint64_t step)
{
	static Ckpt__Leaf lv[SCALARS], *leaves[SCALARS];
	static Ckpt__PathElem pe[SCALARS], *pes[SCALARS];
	static char keys[SCALARS][12];
	static Ckpt__Item item, *items[1];
	static Ckpt__Save sv;
	static Ckpt__Request req;
	size_t i;

	for (i = 0; i < SCALARS; i++) {
		ckpt__path_elem__init(&pe[i]);
		pe[i].has_kind = 1;
		pe[i].kind = CKPT__KEY_KIND__KEY_DICT;
		snprintf(keys[i], sizeof keys[i], "k%zu", i);
		pe[i].key = keys[i];
		pes[i] = &pe[i];
		ckpt__leaf__init(&lv[i]);
		lv[i].n_path = 1;
		lv[i].path = &pes[i];
		lv[i].has_kind = 1;
		lv[i].kind = CKPT__LEAF_KIND__LEAF_INT;
		lv[i].has_int_value = 1;
		lv[i].int_value = (int64_t)i;
		leaves[i] = &lv[i];
	}
	ckpt__item__init(&item);
	item.name = "default";
	item.has_handler = 1;
	item.handler = CKPT__HANDLER__HANDLER_STANDARD;
	item.n_leaves = SCALARS;
	item.leaves = leaves;
	items[0] = &item;
	ckpt__save__init(&sv);
	sv.has_manager = 1;
	sv.manager = mgr;
	sv.has_step = 1;
	sv.step = step;
	sv.n_items = 1;
	sv.items = items;
	sv.has_force = 1;
	sv.force = 1;
	ckpt__request__init(&req);
	req.has_id = 1;
	req.id = id;
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &sv;
	return &req;
}

static int b_queued(void *arg, char *msg, size_t msglen)
{
	Ckpt__Response *resp;
	int fd = raw_greeted(d.sock), sfd = raw_greeted(d.sock), code = INT32_MIN;
	int got1 = 0, code2 = INT32_MIN;
	struct b_sparse bs = { 300, 1, SPARSE_SIZE / 2 };
	uint64_t mgr;
	pid_t pid;

	(void)arg;
	if (fd < 0 || sfd < 0 || (mgr = raw_open(fd, root_b, NULL, NULL)) == 0)
		return INT32_MIN;
	close(sfd);
	/* The sparse save runs in a child (it blocks until durable). */
	fflush(stdout);
	if ((pid = fork()) == 0) {
		char m[256];

		_exit(b_sparse_save(&bs, m, sizeof m) == 0 ? 0 : 1);
	}
	hx_sleep_ms(50);                /* accepted, writing 1 GiB */
	raw_send_req(fd, scalar_save(501, mgr, 501), NULL, 0);
	raw_send_req(fd, scalar_save(502, mgr, 502), NULL, 0);
	/* 502 is answered at once; 501 when it has started. */
	while ((resp = raw_recv(fd, 0, 60000)) != NULL) {
		if (resp->id == 502) {
			code2 = resp->code;
			snprintf(msg, msglen, "%s (%s)", ckpt_strerror(code2),
			    resp->message ? resp->message : "");
		} else if (resp->id == 501) {
			got1 = 1;
			code = resp->code;
		}
		ckpt__response__free_unpacked(resp, NULL);
		if (got1 && code2 != INT32_MIN)
			break;
	}
	waitpid(pid, NULL, 0);
	close(fd);
	if (!got1 || code != 0) {
		snprintf(msg, msglen, "the first waiting save: %s",
		    got1 ? ckpt_strerror(code) : "no reply");
		return INT32_MIN + 1;
	}
	return code2;
}

static void test_sparse(void)
{
	struct b_sparse bs = { 1, 1, 0 };
	char msg[1024];
	long hwm0, hwm1;
	char path[64];
	int r;

	/* Peak RSS from now on ("5" resets VmHWM to the current RSS). */
	snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)d.pid);
	{
		int fd = open(path, O_WRONLY | O_CLOEXEC);

		if (fd < 0 || write(fd, "5", 1) != 1)
			diag("cannot reset VmHWM: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	hwm0 = daemon_status_kib("VmHWM:");
	r = hx_as_user(ub, gb, b_sparse_save, &bs, msg, sizeof msg);
	hwm1 = daemon_status_kib("VmHWM:");
	is_int(r, 0, "B's save of %llu MiB of holes of a %llu GiB sparse "
	    "memfd commits (%s)", SPARSE_REF >> 20, SPARSE_SIZE >> 30, msg);
	diag("daemon VmHWM %ld KiB -> %ld KiB", hwm0, hwm1);
	ok(hwm0 > 0 && hwm1 - hwm0 < (long)(SPARSE_REF >> 10) / 4,
	    "the daemon's peak RSS grew by %ld KiB, not by B's %llu MiB of "
	    "holes", hwm1 - hwm0, SPARSE_REF >> 20);
	r = hx_as_user(ub, gb, b_queued, NULL, msg, sizeof msg);
	is_int(r, CKPT_ELIMIT, "a second save of %d scalar leaves waiting for "
	    "memory is refused with CKPT_ELIMIT, the first one waits and "
	    "starts (%s)", SCALARS, msg);
}

/*
 * A staging buffer mixing data and holes, saved by raw frames (libckpt
 * never sends holes) and restored through libckpt, which checks every
 * tensor's xxh3: the bytes written for holes are zeros and the hashes
 * agree, on both writers (O_DIRECT for large files, page cache for small).
 */
#define MIX_SIZE (64u << 20)
static const struct mix_leaf {
	const char *key;
	uint64_t offset, nbytes;
} mix[] = {
	{ "a", 0, 16u << 20 },                  /* data, hole, data, hole */
	{ "b", (39u << 20), 2u << 20 },         /* hole, data, hole */
	{ "c", (30u << 20) + 100, 100 },        /* data */
	{ "d", 20u << 20, 300 },                /* hole */
	{ "e", (5u << 20) - 4096, 20000 },      /* hole, data, hole */
};
static const struct { uint64_t off, len; } mix_data[] = {
	{ 0, 1u << 20 }, { 5u << 20, 12345 }, { 30u << 20, 4096 },
	{ (40u << 20) - 4096, 4096 },
};

static void mix_expected(unsigned char *buf)
{
	size_t i;

	memset(buf, 0, MIX_SIZE);
	for (i = 0; i < sizeof mix_data / sizeof mix_data[0]; i++)
		hx_fill(buf + mix_data[i].off, mix_data[i].len, 500 + i);
}

/* As B: save leaves[first..first+n) of mix as `step` (raw), then restore
 * through libckpt and compare. */
struct mix_run {
	uint64_t step;
	size_t first, n;
};

static int b_mixed(void *arg, char *msg, size_t msglen)
{
	struct mix_run *mr = arg;
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Save sv = CKPT__SAVE__INIT;
	Ckpt__Item item = CKPT__ITEM__INIT, *items[1] = { &item };
	Ckpt__Leaf lv[8], *leaves[8];
	Ckpt__PathElem pe[8], *pes[8];
	Ckpt__Request wreq = CKPT__REQUEST__INIT;
	Ckpt__WaitSaves ws = CKPT__WAIT_SAVES__INIT;
	Ckpt__Response *resp = NULL;
	uint64_t shape[8], mgr;
	unsigned char *want = malloc(MIX_SIZE);
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	const ckpt_tree *t;
	int fd = raw_greeted(d.sock), mfd, code;
	size_t i;

	if (fd < 0 || (mgr = raw_open(fd, root_b, NULL, NULL)) == 0)
		return INT32_MIN;
	mix_expected(want);
	mfd = memfd_create("mixed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0 || ftruncate(mfd, MIX_SIZE) != 0 ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
		return INT32_MIN;
	for (i = 0; i < sizeof mix_data / sizeof mix_data[0]; i++)
		if (pwrite(mfd, want + mix_data[i].off, mix_data[i].len,
		    (off_t)mix_data[i].off) != (ssize_t)mix_data[i].len)
			return INT32_MIN;
	for (i = 0; i < mr->n; i++) {
		const struct mix_leaf *x = &mix[mr->first + i];

		ckpt__path_elem__init(&pe[i]);
		pe[i].has_kind = 1;
		pe[i].kind = CKPT__KEY_KIND__KEY_DICT;
		pe[i].key = (char *)x->key;
		pes[i] = &pe[i];
		ckpt__leaf__init(&lv[i]);
		lv[i].n_path = 1;
		lv[i].path = &pes[i];
		lv[i].has_kind = 1;
		lv[i].kind = CKPT__LEAF_KIND__LEAF_ARRAY;
		lv[i].has_dtype = 1;
		lv[i].dtype = CKPT__DTYPE__DTYPE_U8;
		shape[i] = x->nbytes;
		lv[i].n_shape = 1;
		lv[i].shape = &shape[i];
		lv[i].has_offset = 1;
		lv[i].offset = x->offset;
		lv[i].has_nbytes = 1;
		lv[i].nbytes = x->nbytes;
		leaves[i] = &lv[i];
	}
	item.name = "default";
	item.has_handler = 1;
	item.handler = CKPT__HANDLER__HANDLER_STANDARD;
	item.n_leaves = mr->n;
	item.leaves = leaves;
	sv.has_manager = 1;
	sv.manager = mgr;
	sv.has_step = 1;
	sv.step = mr->step;
	sv.n_items = 1;
	sv.items = items;
	sv.has_force = 1;
	sv.force = 1;
	req.has_id = 1;
	req.id = 10;
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &sv;
	ws.has_manager = 1;
	ws.manager = mgr;
	wreq.has_id = 1;
	wreq.id = 11;
	wreq.op_case = CKPT__REQUEST__OP_WAIT_SAVES;
	wreq.wait_saves = &ws;
	code = raw_call(fd, &req, &mfd, 1, 60000, NULL);
	if (code == 0 && (code = raw_call(fd, &wreq, NULL, 0, 60000, &resp)) == 0 &&
	    resp->body_case == CKPT__RESPONSE__BODY_WAIT_SAVES)
		code = resp->wait_saves->code;
	if (resp != NULL)
		ckpt__response__free_unpacked(resp, NULL);
	close(mfd);
	close(fd);
	if (code != 0) {
		snprintf(msg, msglen, "save: %s", ckpt_strerror(code));
		goto out;
	}
	if ((code = ckpt_connect(d.sock, &c)) != 0 ||
	    (code = ckpt_manager_open(c, root_b, NULL, &m)) != 0 ||
	    (code = ckpt_restore(m, (int64_t)mr->step, NULL, &res)) != 0) {
		snprintf(msg, msglen, "restore: %s", ckpt_strerror(code));
		goto out;
	}
	t = ckpt_restored_item_tree(res, 0);
	for (i = 0; i < mr->n && code == 0; i++) {
		const struct mix_leaf *x = &mix[mr->first + i];
		ckpt_leaf lf;
		long k;

		if (t == NULL || (k = ckpt_tree_find(t, x->key)) < 0 ||
		    ckpt_tree_leaf(t, (size_t)k, &lf) != 0 ||
		    lf.nbytes != x->nbytes ||
		    memcmp(lf.data, want + x->offset, x->nbytes) != 0) {
			snprintf(msg, msglen, "leaf %s differs", x->key);
			code = CKPT_ECORRUPT;
		}
	}
	if (code == 0)
		snprintf(msg, msglen, "%zu leaves byte for byte", mr->n);
out:
	ckpt_restored_free(res);
	if (m != NULL)
		ckpt_manager_close(m);
	ckpt_disconnect(c);
	free(want);
	return code;
}

static void test_mixed(void)
{
	struct mix_run big = { 50, 0, 4 }, small = { 51, 2, 3 };
	char msg[1024];
	int r;

	r = hx_as_user(ub, gb, b_mixed, &big, msg, sizeof msg);
	is_int(r, 0, "a staging buffer of data and holes (18 MiB in 4 leaves, "
	    "O_DIRECT writer) restores byte for byte (%s)", msg);
	r = hx_as_user(ub, gb, b_mixed, &small, msg, sizeof msg);
	is_int(r, 0, "... and through the page-cache writer (20 KiB in 3 "
	    "leaves) (%s)", msg);
}

/* ---- A's latency while B misbehaves ------------------------------------------------ */

/* Huge trees: the 16 MB frame of 8 M leaves again and again (built once,
 * so that B's own CPU does not count against the daemon), one every
 * 20 ms at most. */
static int b_loop_huge(void *arg, char *msg, size_t msglen)
{
	size_t len;
	unsigned char *f = huge_tree_frame(77, 1, (CKPT_MAX_FRAME - 64) / 2, &len);
	Ckpt__Response *resp;
	int fd = -1;

	(void)arg;
	(void)msg;
	(void)msglen;
	for (;;) {
		if (fd < 0 && (fd = raw_greeted(d.sock)) < 0) {
			hx_sleep_ms(100);
			continue;
		}
		if (raw_send(fd, f, len, NULL, 0) != 0 ||
		    (resp = raw_recv(fd, 0, 60000)) == NULL) {
			close(fd);
			fd = -1;
			continue;
		}
		ckpt__response__free_unpacked(resp, NULL);
		hx_sleep_ms(20);
	}
	return 0;
}

/* Slow frames: announce 16 MB on 32 connections and send a byte each
 * 100 ms; reconnect when closed. */
static int b_loop_slow(void *arg, char *msg, size_t msglen)
{
	int fds[32], i;
	unsigned char hdr[4] = { 0, 0xff, 0, 0 };

	(void)arg;
	(void)msg;
	(void)msglen;
	for (i = 0; i < 32; i++)
		fds[i] = -1;
	for (;;) {
		for (i = 0; i < 32; i++) {
			if (fds[i] < 0 && (fds[i] = raw_greeted(d.sock)) >= 0 &&
			    raw_send(fds[i], hdr, 4, NULL, 0) != 0) {
				close(fds[i]);
				fds[i] = -1;
			}
			if (fds[i] >= 0 && raw_send(fds[i], "x", 1, NULL, 0) != 0) {
				close(fds[i]);
				fds[i] = -1;
			}
		}
		hx_sleep_ms(100);
	}
	return 0;
}

/* Many connections: keep 2,000 open, reopening the ones closed. */
static int b_loop_conns(void *arg, char *msg, size_t msglen)
{
	static int fds[2000];
	int i;

	(void)arg;
	(void)msg;
	(void)msglen;
	b_raise_nofile();
	for (i = 0; i < 2000; i++)
		fds[i] = -1;
	for (;;) {
		for (i = 0; i < 2000; i++) {
			if (fds[i] >= 0 && closed_by_peer(fds[i], 0)) {
				close(fds[i]);
				fds[i] = -1;
			}
			if (fds[i] < 0)
				fds[i] = raw_connect(d.sock);
		}
		hx_sleep_ms(200);
	}
	return 0;
}

static int b_loop_sparse(void *arg, char *msg, size_t msglen)
{
	struct b_sparse bs = { 100, 0, 48u << 20 };      /* > budget */

	(void)arg;
	return b_sparse_save(&bs, msg, msglen);
}

static pid_t b_spawn(int (*fn)(void *, char *, size_t))
{
	pid_t pid;

	fflush(stdout);
	if ((pid = fork()) == 0) {
		char m[512];

		if (setgroups(0, NULL) != 0 || setgid(gb) != 0 ||
		    setuid(ub) != 0)
			_exit(1);
		fn(NULL, m, sizeof m);
		_exit(0);
	}
	return pid;
}

static void test_latency(void)
{
	int (*const bad[])(void *, char *, size_t) = { b_loop_huge,
	    b_loop_slow, b_loop_conns, b_loop_sparse };
	pid_t pids[4];
	char msg[1024];
	long unloaded, after, loaded;
	size_t i;
	int r;

	/* Warm up, then A alone (again after B's load, below: the machine
	 * is shared, and the slower of the two is the baseline). */
	a_measure(3, 2000, &unloaded, msg, sizeof msg);
	r = a_measure(A_SAVES, 2100, &unloaded, msg, sizeof msg);
	is_int(r, 0, "A saves %d steps alone (%s)", A_SAVES, msg);

	for (i = 0; i < 4; i++)
		pids[i] = b_spawn(bad[i]);
	hx_sleep_ms(2000);              /* let B's load build up */
	r = a_measure(A_SAVES, 2200, &loaded, msg, sizeof msg);
	is_int(r, 0, "A saves %d steps while B sends huge trees, slow frames, "
	    "thousands of connections and sparse saves over the budget (%s)",
	    A_SAVES, msg);
	for (i = 0; i < 4; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGKILL);
	for (i = 0; i < 4; i++)
		if (pids[i] > 0)
			waitpid(pids[i], NULL, 0);
	hx_sleep_ms(1000);
	r = a_measure(A_SAVES, 2300, &after, msg, sizeof msg);
	is_int(r, 0, "A saves %d steps alone again (%s)", A_SAVES, msg);
	diag("A's median save latency: %ld us alone (%ld us after), %ld us "
	    "while B misbehaves", unloaded, after, loaded);
	if (after > unloaded)
		unloaded = after;
	/* 2x, plus 50 ms: B's own processes share the machine's cores and
	 * disk with A and the daemon, and a worker finishes the task it has
	 * (up to 16 MiB written) before it takes A's. Unfair scheduling
	 * costs seconds here (4.7 s before per-user limits). */
	ok(unloaded > 0 && loaded > 0 && loaded <= 2 * unloaded + 50000,
	    "A's median save latency under B's load is within 2x of unloaded "
	    "(+50 ms): %ld us vs %ld us", loaded, unloaded);
	ok(hx_alive(&d), "ckptd is still running");
}

int main(void)
{
	hx_init(&d);
	if (geteuid() != 0 || getenv("CKPTD_TEST_SOCKET") != NULL) {
		tap_skip("needs root to run two users against its own daemon");
		return done_testing();
	}
	if (hx_ensure_user(USER_A, &ua, &ga) != 0 ||
	    hx_ensure_user(USER_B, &ub, &gb) != 0)
		bail_out("cannot create users %s and %s", USER_A, USER_B);
	d.extra[0] = "--idle-timeout";
	d.extra[1] = IDLE_STR;
	d.extra[2] = "--memory-budget";
	d.extra[3] = "32M";
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	chmod(d.dir, 0755);
	chmod(d.sock, 0666);
	hx_path(&d, root_a, "a");
	hx_path(&d, root_b, "b");
	if (mkdir(root_a, 0755) != 0 || chown(root_a, ua, ga) != 0 ||
	    mkdir(root_b, 0755) != 0 || chown(root_b, ub, gb) != 0)
		bail_out("roots: %s", strerror(errno));

	test_connections();
	test_requests();
	test_sparse();
	test_mixed();
	test_latency();

	if (!ok(hx_alive(&d), "ckptd survived"))
		hx_dump_log(&d, 30);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
