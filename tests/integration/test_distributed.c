/*
 * test_distributed.c - distributed steps in the daemon: one step saved by
 * several ranks, each on its own connection with its own manager (raw
 * frames, as a rank's client would send them), committed once.
 *
 *   - a 4-rank step: not listed before the 4th part; _METADATA lists the
 *     global array's 4 pieces and the replicated leaf once (the primary's
 *     file); restore answers one leaf per piece with the right bytes;
 *   - a rank whose connection closes before its hand-off: CKPT_ERANK on
 *     the others naming it, no tmp dir left, the failure listed, the next
 *     step commits; a rank closing right after its hand-off does not hurt;
 *   - a rank gone between steps: the next step fails at once, is listed
 *     as failed, and is the async error of the ranks still to save;
 *   - a rank late for a step that failed: its Save is answered at once
 *     with the step's error (told before as a SaveDone of no save);
 *   - a rank that died (its connection lost) before the others of its
 *     job opened: their next step fails at once naming it; a rank that
 *     closed its manager is not remembered;
 *   - a rank that never sends its part: CKPT_ERANK after the timeout;
 *   - overlapping or missing pieces: CKPT_EMISMATCH on every rank naming
 *     the array; overlapping pieces in one Save are refused at once;
 *   - two jobs on one root do not mix.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ckpt.pb-c.h"
#include "harness.h"
#include "raw.h"

#define NR 4            /* ranks */
#define ROWS 8
#define COLS 4

static struct hx_daemon d;
static char root[HX_PATH];
static uint64_t next_id = 100;
static uint64_t g_rows = ROWS;  /* global rows: 2 per rank of the job */
static uint64_t g_interval;     /* save_interval_steps of new managers */
static int g_force;             /* the next Save is forced */

/* ---- raw wire (raw.h) ---------------------------------------------------------------- */

/* Send req as the next request id, with memfd (when >= 0) attached. */
static int send_req(int fd, Ckpt__Request *req, int memfd)
{
	req->has_id = 1;
	req->id = next_id++;
	return raw_send_req(fd, req, memfd >= 0 ? &memfd : NULL,
	    memfd >= 0 ? 1 : 0);
}

/* Next reply to a request (SaveDone events are skipped). */
static Ckpt__Response *recv_reply(int fd, int timeout_ms)
{
	return raw_recv(fd, 0, timeout_ms);
}

/* A SaveDone of no save (save_id 0) for manager mgr waiting on fd: its
 * code (0: none within timeout_ms), step and message. */
static int recv_nosave_done(int fd, uint64_t mgr, uint64_t *step, char *msg,
    size_t len, int timeout_ms)
{
	Ckpt__Response *resp = raw_next(fd, timeout_ms);
	int code = 0;

	msg[0] = '\0';
	if (resp == NULL)
		return 0;
	if (resp->id == 0 && resp->body_case ==
	    CKPT__RESPONSE__BODY_SAVE_DONE && resp->save_done->save_id == 0 &&
	    resp->save_done->manager == mgr) {
		code = resp->save_done->code;
		*step = resp->save_done->step;
		snprintf(msg, len, "%s", resp->save_done->message ?
		    resp->save_done->message : "");
	}
	ckpt__response__free_unpacked(resp, NULL);
	return code;
}

/* A connection that said hello. */
static int rank_connect(void)
{
	int fd = raw_greeted(d.sock);

	if (fd < 0)
		bail_out("hello refused: %s", strerror(errno));
	return fd;
}

/* A manager of rank `rank` of `count` in job `job`. */
static uint64_t open_rank(int fd, uint32_t rank, uint32_t count,
    const char *job, double timeout_secs)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__OpenManager om = CKPT__OPEN_MANAGER__INIT;
	Ckpt__ManagerOptions o = CKPT__MANAGER_OPTIONS__INIT;
	Ckpt__Response *resp;
	uint64_t id;

	o.has_process_index = 1;
	o.process_index = rank;
	o.has_process_count = 1;
	o.process_count = count;
	o.job = (char *)job;
	if (g_interval > 0) {
		o.has_save_interval_steps = 1;
		o.save_interval_steps = g_interval;
	}
	if (timeout_secs > 0) {
		o.has_async_timeout_secs = 1;
		o.async_timeout_secs = timeout_secs;
	}
	om.root = root;
	om.options = &o;
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = &om;
	if (send_req(fd, &req, -1) != 0 || (resp = recv_reply(fd, 5000)) ==
	    NULL || resp->code != 0 ||
	    resp->body_case != CKPT__RESPONSE__BODY_OPEN_MANAGER)
		bail_out("open_manager of rank %u failed", rank);
	id = resp->open_manager->manager;
	ckpt__response__free_unpacked(resp, NULL);
	return id;
}

/* ---- one rank's part ------------------------------------------------------------------ */

/* Value of element (row, col) of the global array "w" at step. */
static float wval(uint64_t step, uint64_t row, uint64_t col)
{
	return (float)(step * 1000 + row * COLS + col);
}

enum layout {
	ROWS_OK,        /* rank r: rows [2r, 2r+2) */
	ROWS_OVERLAP,   /* rank 1 takes rows [1, 3) */
	ROWS_MISSING,   /* rank 3 takes only row 6 */
	ROWS_TWICE,     /* rank 0 sends rows [0, 2) and [1, 2) */
};

struct part {
	Ckpt__PathElem pw, pb, pn, *pathw[1], *pathb[1], *pathn[1];
	Ckpt__Leaf lw[2], lb, ln, *leaves[4];
	uint64_t shw[2][2], gsh[2], offw[2][2], shb[1];
	Ckpt__Item item, *items[1];
	Ckpt__Save sv;
	int memfd;
};

/* Send rank's Save of step (no reply read). */
static void send_part(int fd, uint64_t mgr, uint32_t rank, uint64_t step,
    enum layout lay, struct part *p)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	uint64_t row0 = 2 * rank, nrows = 2, r, c;
	size_t nl = 0, npieces = 1, k;
	float buf[3 * COLS + COLS];
	size_t off = 0;

	memset(p, 0, sizeof *p);
	if (lay == ROWS_OVERLAP && rank == 1)
		row0 = 1;
	if (lay == ROWS_MISSING && rank == 3)
		nrows = 1;
	if (lay == ROWS_TWICE && rank == 0)
		npieces = 2;
	ckpt__path_elem__init(&p->pw);
	p->pw.has_kind = 1;
	p->pw.kind = CKPT__KEY_KIND__KEY_DICT;
	p->pw.key = "w";
	p->pb = p->pw;
	p->pb.key = "b";
	p->pn = p->pw;
	p->pn.key = "n";
	p->pathw[0] = &p->pw;
	p->pathb[0] = &p->pb;
	p->pathn[0] = &p->pn;
	p->gsh[0] = g_rows;
	p->gsh[1] = COLS;
	for (k = 0; k < npieces; k++) {
		Ckpt__Leaf *l = &p->lw[k];
		uint64_t first = row0 + k, n = k == 0 ? nrows : 1;

		ckpt__leaf__init(l);
		l->n_path = 1;
		l->path = p->pathw;
		l->has_kind = 1;
		l->kind = CKPT__LEAF_KIND__LEAF_ARRAY;
		l->has_dtype = 1;
		l->dtype = CKPT__DTYPE__DTYPE_F32;
		p->shw[k][0] = n;
		p->shw[k][1] = COLS;
		l->n_shape = 2;
		l->shape = p->shw[k];
		l->n_global_shape = 2;
		l->global_shape = p->gsh;
		p->offw[k][0] = first;
		p->offw[k][1] = 0;
		l->n_piece_offsets = 2;
		l->piece_offsets = p->offw[k];
		l->has_offset = 1;
		l->offset = off * sizeof(float);
		l->has_nbytes = 1;
		l->nbytes = n * COLS * sizeof(float);
		for (r = first; r < first + n; r++)
			for (c = 0; c < COLS; c++)
				buf[off++] = wval(step, r, c);
		p->leaves[nl++] = l;
	}
	/* "b": replicated, bytes from the primary only. */
	ckpt__leaf__init(&p->lb);
	p->lb.n_path = 1;
	p->lb.path = p->pathb;
	p->lb.has_kind = 1;
	p->lb.kind = CKPT__LEAF_KIND__LEAF_ARRAY;
	p->lb.has_dtype = 1;
	p->lb.dtype = CKPT__DTYPE__DTYPE_F32;
	p->shb[0] = COLS;
	p->lb.n_shape = 1;
	p->lb.shape = p->shb;
	if (rank == 0) {
		p->lb.has_offset = 1;
		p->lb.offset = off * sizeof(float);
		p->lb.has_nbytes = 1;
		p->lb.nbytes = COLS * sizeof(float);
		for (c = 0; c < COLS; c++)
			buf[off++] = (float)(step + c) / 8;
	} else {
		p->lb.has_replicated_elsewhere = 1;
		p->lb.replicated_elsewhere = 1;
	}
	p->leaves[nl++] = &p->lb;
	/* "n": a scalar every rank sends. */
	ckpt__leaf__init(&p->ln);
	p->ln.n_path = 1;
	p->ln.path = p->pathn;
	p->ln.has_kind = 1;
	p->ln.kind = CKPT__LEAF_KIND__LEAF_INT;
	p->ln.has_int_value = 1;
	p->ln.int_value = (int64_t)step;
	p->leaves[nl++] = &p->ln;
	ckpt__item__init(&p->item);
	p->item.name = "default";
	p->item.has_handler = 1;
	p->item.handler = CKPT__HANDLER__HANDLER_STANDARD;
	p->item.n_leaves = nl;
	p->item.leaves = p->leaves;
	p->items[0] = &p->item;
	ckpt__save__init(&p->sv);
	p->sv.has_manager = 1;
	p->sv.manager = mgr;
	p->sv.has_step = 1;
	p->sv.step = step;
	p->sv.n_items = 1;
	p->sv.items = p->items;
	if (g_force) {
		p->sv.has_force = 1;
		p->sv.force = 1;
		g_force = 0;
	}
	p->memfd = memfd_create("part", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (p->memfd < 0 || write(p->memfd, buf, off * sizeof(float)) !=
	    (ssize_t)(off * sizeof(float)) ||
	    fcntl(p->memfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
		bail_out("memfd: %s", strerror(errno));
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &p->sv;
	if (send_req(fd, &req, p->memfd) != 0)
		bail_out("send save: %s", strerror(errno));
	close(p->memfd);
}

/* The reply to a Save: 1 saved, 0 skipped, else the error code. */
static int save_reply(int fd, char *msg, size_t len)
{
	Ckpt__Response *resp = recv_reply(fd, 20000);
	int r;

	if (msg != NULL)
		msg[0] = '\0';
	if (resp == NULL)
		return INT32_MIN;
	if (resp->code != 0) {
		r = resp->code;
		if (msg != NULL)
			snprintf(msg, len, "%s", resp->message ?
			    resp->message : "");
	} else {
		r = resp->body_case == CKPT__RESPONSE__BODY_SAVE &&
		    resp->save->saved;
	}
	ckpt__response__free_unpacked(resp, NULL);
	return r;
}

static int save_part(int fd, uint64_t mgr, uint32_t rank, uint64_t step,
    enum layout lay, char *msg, size_t len)
{
	struct part p;

	send_part(fd, mgr, rank, step, lay, &p);
	return save_reply(fd, msg, len);
}

/* wait_until_finished: the async error (0 when none), its message;
 * INT32_MIN when no answer within timeout_ms. */
static int wait_saves_within(int fd, uint64_t mgr, char *msg, size_t len,
    int timeout_ms)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__WaitSaves ws = CKPT__WAIT_SAVES__INIT;
	Ckpt__Response *resp;
	int code;

	ws.has_manager = 1;
	ws.manager = mgr;
	ws.has_clear_error = 1;
	ws.clear_error = 1;
	req.op_case = CKPT__REQUEST__OP_WAIT_SAVES;
	req.wait_saves = &ws;
	if (send_req(fd, &req, -1) != 0 || (resp = recv_reply(fd,
	    timeout_ms)) == NULL)
		return INT32_MIN;
	code = resp->code;
	if (msg != NULL)
		snprintf(msg, len, "%s", resp->message ? resp->message : "");
	if (code == 0 && resp->body_case == CKPT__RESPONSE__BODY_WAIT_SAVES) {
		code = resp->wait_saves->code;
		if (msg != NULL)
			snprintf(msg, len, "%s", resp->wait_saves->message ?
			    resp->wait_saves->message : "");
	}
	ckpt__response__free_unpacked(resp, NULL);
	return code;
}

static int wait_saves(int fd, uint64_t mgr, char *msg, size_t len)
{
	return wait_saves_within(fd, mgr, msg, len, 60000);
}

/* State of step in the manager's list: STEP_* or -1 when not listed. */
static int step_state(int fd, uint64_t mgr, uint64_t step)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__ListSteps ls = CKPT__LIST_STEPS__INIT;
	Ckpt__Response *resp;
	int st = -1;
	size_t i;

	ls.has_manager = 1;
	ls.manager = mgr;
	req.op_case = CKPT__REQUEST__OP_LIST_STEPS;
	req.list_steps = &ls;
	if (send_req(fd, &req, -1) != 0 || (resp = recv_reply(fd, 10000)) ==
	    NULL)
		return -2;
	if (resp->body_case == CKPT__RESPONSE__BODY_LIST_STEPS)
		for (i = 0; i < resp->list_steps->n_steps; i++)
			if (resp->list_steps->steps[i]->step == step)
				st = resp->list_steps->steps[i]->state;
	ckpt__response__free_unpacked(resp, NULL);
	return st;
}

static char *step_file(char *buf, uint64_t step, const char *rest)
{
	if (snprintf(buf, HX_PATH, "%s/%llu%s", root,
	    (unsigned long long)step, rest) >= HX_PATH)
		bail_out("path too long");
	return buf;
}

/* A root of its own, name, for a test whose steps must not overtake the
 * other tests'; saved gets the root to go back to. */
static void own_root(char *saved, const char *name)
{
	memcpy(saved, root, HX_PATH);
	hx_path(&d, root, "%s", name);
	if (hx_mkdirs(root) != 0)
		bail_out("mkdir %s", root);
}

/* All ranks' connections and managers of one job. */
struct job {
	int fd[NR];
	uint64_t m[NR];
	unsigned n;
};

static void job_open(struct job *j, unsigned n, const char *name,
    double timeout_secs)
{
	unsigned i;

	j->n = n;
	g_rows = 2 * n;
	for (i = 0; i < n; i++) {
		j->fd[i] = rank_connect();
		j->m[i] = open_rank(j->fd[i], i, n, name, timeout_secs);
	}
}

/* Rank r, gone, comes back: a new connection and manager. */
static void job_reopen(struct job *j, unsigned r, const char *name,
    double timeout_secs)
{
	j->fd[r] = rank_connect();
	j->m[r] = open_rank(j->fd[r], r, j->n, name, timeout_secs);
}

/* Every rank hands its part of step, then waits (each within
 * timeout_ms): the parts handed plus the clean waits, 2 * n when all
 * went well. */
static unsigned job_save_all(struct job *j, uint64_t step, int timeout_ms)
{
	unsigned i, saved = 0;

	for (i = 0; i < j->n; i++)
		saved += save_part(j->fd[i], j->m[i], i, step, ROWS_OK, NULL,
		    0) == 1;
	for (i = 0; i < j->n; i++)
		saved += wait_saves_within(j->fd[i], j->m[i], NULL, 0,
		    timeout_ms) == 0;
	return saved;
}

static void job_close(struct job *j)
{
	unsigned i;

	for (i = 0; i < j->n; i++)
		if (j->fd[i] >= 0)
			close(j->fd[i]);
}

/* ---- restore: one leaf per piece -------------------------------------------------------- */

static void check_restore(int fd, uint64_t mgr, uint64_t step)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Restore rq = CKPT__RESTORE__INIT;
	Ckpt__Response *resp;
	const Ckpt__Item *it;
	unsigned pieces = 0, good = 0, b = 0;
	char path[HX_PATH * 2];
	size_t k;

	rq.has_manager = 1;
	rq.manager = mgr;
	rq.has_step = 1;
	rq.step = (int64_t)step;
	req.op_case = CKPT__REQUEST__OP_RESTORE;
	req.restore = &rq;
	if (send_req(fd, &req, -1) != 0 || (resp = recv_reply(fd, 10000)) ==
	    NULL || resp->code != 0 ||
	    resp->body_case != CKPT__RESPONSE__BODY_RESTORE ||
	    resp->restore->n_items != 1) {
		ok(0, "restore metadata of step %llu", (unsigned long long)step);
		return;
	}
	it = resp->restore->items[0];
	for (k = 0; k < it->n_leaves; k++) {
		const Ckpt__Leaf *l = it->leaves[k];
		float v[2 * COLS];
		uint64_t r, c, n;
		int f, same = 1;

		if (l->n_path != 1 || strcmp(l->path[0]->key, "w") != 0) {
			b += strcmp(l->path[0]->key, "b") == 0 &&
			    l->n_global_shape == 0;
			continue;
		}
		pieces++;
		if (l->n_global_shape != 2 || l->global_shape[0] != ROWS ||
		    l->n_piece_offsets != 2 || l->shape[0] > 2)
			continue;
		n = l->shape[0] * COLS;
		/* The piece's bytes, read where the reply says they are. */
		snprintf(path, sizeof path, "%s/%llu/default/%s", root,
		    (unsigned long long)step, l->file);
		if ((f = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		if (pread(f, v, n * sizeof(float), (off_t)l->offset) !=
		    (ssize_t)(n * sizeof(float)))
			same = 0;
		close(f);
		for (r = 0; same && r < l->shape[0]; r++)
			for (c = 0; c < COLS; c++)
				if (v[r * COLS + c] != wval(step,
				    l->piece_offsets[0] + r, c))
					same = 0;
		good += same;
	}
	is_int(pieces, NR, "restore of step %llu: one leaf per piece of 'w'",
	    (unsigned long long)step);
	is_int(good, NR, "every piece holds its rows of the global array");
	is_int(b, 1, "the replicated leaf 'b' comes back once");
	ckpt__response__free_unpacked(resp, NULL);
}

/* ckptctl verify checks every piece: clean, then with one byte of rank
 * 2's piece flipped. */
static void verify_step(uint64_t step)
{
	const char *bin = getenv("CKPTCTL_BIN");
	char out[8192], num[32], p[HX_PATH];
	char *argv[] = { (char *)bin, "verify", root, num, NULL };
	float v;
	int f, code;

	if (bin == NULL)
		bail_out("CKPTCTL_BIN is not set");
	snprintf(num, sizeof num, "%llu", (unsigned long long)step);
	code = hx_run(argv, out, sizeof out, 60);
	is_int(code, 0, "ckptctl verify: step %s is clean", num);
	if (code != 0)
		diag("%s", out);
	/* Rank 2's piece starts the data section of its own file. */
	f = open(step_file(p, step, "/default/data-p00002-00000.safetensors"),
	    O_RDWR | O_CLOEXEC);
	ok(f >= 0, "rank 2's data file opened");
	if (f < 0)
		return;
	if (pread(f, &v, sizeof v, 4096) != sizeof v)
		bail_out("pread: %s", strerror(errno));
	v += 1;
	if (pwrite(f, &v, sizeof v, 4096) != sizeof v)
		bail_out("pwrite: %s", strerror(errno));
	close(f);
	code = hx_run(argv, out, sizeof out, 60);
	ok(code != 0, "ckptctl verify fails once a piece is changed");
	has(out, "w", "... naming the array (%s)", out);
}

/* ---- scenarios ---------------------------------------------------------------------------- */

static void four_ranks(void)
{
	struct job j;
	char p[HX_PATH], msg[512];
	char *meta;
	unsigned i, saved = 0, clean = 0;

	job_open(&j, NR, "train", 0);
	for (i = 0; i < NR - 1; i++)
		saved += save_part(j.fd[i], j.m[i], i, 1, ROWS_OK, NULL, 0) == 1;
	is_int(saved, NR - 1, "ranks 0-2 handed their part of step 1");
	hx_sleep_ms(300);
	is_int(step_state(j.fd[0], j.m[0], 1), CKPT__STEP_STATE__STEP_PENDING,
	    "step 1 is listed only as pending before the 4th part");
	ok(!hx_exists(step_file(p, 1, "")), "no step directory yet");
	is_int(save_part(j.fd[3], j.m[3], 3, 1, ROWS_OK, msg, sizeof msg), 1,
	    "rank 3 handed its part");
	for (i = 0; i < NR; i++)
		clean += wait_saves(j.fd[i], j.m[i], NULL, 0) == 0;
	is_int(clean, NR, "wait_until_finished returns 0 on every rank");
	is_int(step_state(j.fd[2], j.m[2], 1), CKPT__STEP_STATE__STEP_COMMITTED,
	    "step 1 is committed once all parts are durable");
	for (i = 0; i < NR; i++) {
		char f[64];

		snprintf(f, sizeof f, "/default/data-p%05u-00000.safetensors",
		    i);
		ok(hx_exists(step_file(p, 1, f)), "rank %u's data file", i);
	}
	meta = hx_read_file(step_file(p, 1, "/default/_METADATA"), NULL);
	ok(meta != NULL, "_METADATA written");
	if (meta != NULL) {
		has(meta, "\"global_shape\":[8,4]", "the global shape listed");
		has(meta, "\"offsets\":[6,0]", "rank 3's piece listed");
		ok(strstr(meta, "\"pieces\"") != NULL &&
		    strstr(strstr(meta, "\"pieces\""), "\"offsets\":[0,0]") !=
		    NULL, "rank 0's piece listed");
		/* The replicated leaf is written once, by the primary. */
		has(meta, "\"shape\":[4],\"nbytes\":16,"
		    "\"file\":\"data-p00000-00000.safetensors\"",
		    "the replicated leaf 'b' in the primary's file");
	}
	free(meta);
	check_restore(j.fd[1], j.m[1], 1);
	verify_step(1);
	job_close(&j);
}

static void rank_dies_before(void)
{
	struct job j;
	char p[HX_PATH], msg[512];
	unsigned i, erank = 0, named = 0, saved = 0;

	job_open(&j, NR, "train", 0);
	for (i = 0; i < NR - 1; i++)
		saved += save_part(j.fd[i], j.m[i], i, 2, ROWS_OK, NULL, 0) == 1;
	is_int(saved, NR - 1, "ranks 0-2 handed their part of step 2");
	close(j.fd[3]);         /* rank 3 dies before its hand-off */
	j.fd[3] = -1;
	for (i = 0; i < NR - 1; i++) {
		int code = wait_saves(j.fd[i], j.m[i], msg, sizeof msg);

		erank += code == CKPT__CODE__CKPT_ERANK;
		named += strstr(msg, "ranks [3]") != NULL;
		if (i == 0)
			diag("rank 0 got: %d %s", code, msg);
	}
	is_int(erank, NR - 1, "CKPT_ERANK on every other rank");
	is_int(named, NR - 1, "the message names rank 3");
	ok(!hx_exists(step_file(p, 2, ".ckptd-tmp")), "the tmp dir is gone");
	ok(!hx_exists(step_file(p, 2, "")), "no step 2 directory");
	is_int(step_state(j.fd[0], j.m[0], 2), CKPT__STEP_STATE__STEP_FAILED,
	    "step 2 is listed as failed");
	/* Rank 3 comes back; the next step saves normally. */
	job_reopen(&j, 3, "train", 0);
	is_int(job_save_all(&j, 3, 60000), 2 * NR, "step 3 saved by all 4 ranks");
	is_int(step_state(j.fd[3], j.m[3], 3), CKPT__STEP_STATE__STEP_COMMITTED,
	    "step 3 committed");
	job_close(&j);
}

static void rank_dies_after(void)
{
	struct job j;
	unsigned i, saved = 0;

	job_open(&j, NR, "train", 0);
	for (i = 0; i < NR; i++)
		saved += save_part(j.fd[i], j.m[i], i, 4, ROWS_OK, NULL, 0) == 1;
	is_int(saved, NR, "4 parts of step 4 handed");
	close(j.fd[3]);         /* right after its hand-off */
	j.fd[3] = -1;
	saved = 0;
	for (i = 0; i < NR - 1; i++)
		saved += wait_saves(j.fd[i], j.m[i], NULL, 0) == 0;
	is_int(saved, NR - 1, "the others finish without error");
	is_int(step_state(j.fd[0], j.m[0], 4), CKPT__STEP_STATE__STEP_COMMITTED,
	    "step 4 committed although rank 3 is gone");
	check_restore(j.fd[0], j.m[0], 4);
	job_close(&j);
}

/* A rank gone between steps: the next step fails at once on the others
 * (not at its 600 s timeout); once the rank is back, steps save again. */
static void rank_gone_between(void)
{
	struct job j;
	char msg[512];
	unsigned i, erank = 0, named = 0;
	int64_t t0, ms;
	char saved_root[HX_PATH];

	own_root(saved_root, "dist-gone");
	job_open(&j, NR, "gone", 600);
	is_int(job_save_all(&j, 51, 60000), 2 * NR,
	    "step 51 saved by all 4 ranks");
	close(j.fd[3]);         /* rank 3 goes away between steps */
	j.fd[3] = -1;
	hx_sleep_ms(200);       /* the daemon sees the close first */
	t0 = hx_now_ms();
	/* Rank 0's Save finds rank 3 gone: answered with the error; ranks
	 * 1 and 2, which have not saved yet, get it as their async error
	 * (a SaveDone of no save, and wait_until_finished's answer). */
	{
		uint64_t step = 0;
		int code;

		code = save_part(j.fd[0], j.m[0], 0, 52, ROWS_OK, msg,
		    sizeof msg);
		is_int(code, CKPT__CODE__CKPT_ERANK, "rank 0's Save of step 52 "
		    "is answered CKPT_ERANK (%s)", msg);
		code = recv_nosave_done(j.fd[1], j.m[1], &step, msg,
		    sizeof msg, 5000);
		is_int(code, CKPT__CODE__CKPT_ERANK, "rank 1 is told step 52 "
		    "failed before it saves (%s)", msg);
		is_int((int)step, 52, "... naming step 52");
		has(msg, "ranks [3]", "... and rank 3");
		code = wait_saves_within(j.fd[2], j.m[2], msg, sizeof msg,
		    5000);
		is_int(code, CKPT__CODE__CKPT_ERANK, "rank 2's "
		    "wait_until_finished reports it (%s)", msg);
		is_int(step_state(j.fd[0], j.m[0], 52),
		    CKPT__STEP_STATE__STEP_FAILED, "step 52 is listed as "
		    "failed");
		code = wait_saves_within(j.fd[0], j.m[0], msg, sizeof msg,
		    5000);
		is_int(code, 0, "rank 0, told by its answer, has no async "
		    "error (%s)", msg);
	}
	for (i = 0; i < NR - 1; i++) {
		int code = save_part(j.fd[i], j.m[i], i, 52, ROWS_OK, msg,
		    sizeof msg);

		/* Accepted: the failure must come as the async error, soon
		 * (bounded: the step's own timeout is 600 s). */
		if (code == 1)
			code = wait_saves_within(j.fd[i], j.m[i], msg,
			    sizeof msg, 5000);
		erank += code == CKPT__CODE__CKPT_ERANK;
		named += strstr(msg, "ranks [3]") != NULL;
		if (i == 0)
			diag("rank 0 got: %d %s", code, msg);
	}
	ms = hx_now_ms() - t0;
	is_int(erank, NR - 1, "CKPT_ERANK on ranks 0-2 for step 52");
	is_int(named, NR - 1, "the message names rank 3");
	ok(ms < 5000, "at once, not at the timeout (%lld ms)", (long long)ms);
	/* Rank 3 restarts: a new manager; step 53 saves with all 4. */
	job_reopen(&j, 3, "gone", 600);
	is_int(job_save_all(&j, 53, 20000), 2 * NR, "step 53 saved by all 4 ranks");
	is_int(step_state(j.fd[0], j.m[0], 53),
	    CKPT__STEP_STATE__STEP_COMMITTED, "step 53 committed");
	job_close(&j);
	memcpy(root, saved_root, sizeof root);
}

/* A rank arriving after its step failed (another rank died before its
 * hand-off) is answered at once with that failure, not after the step's
 * timeout; it was told before, as its async error; a rank that comes back
 * with a new manager is not late, and the next step saves normally. */
static void rank_late_after_failure(void)
{
	struct job j;
	char msg[512], p[HX_PATH];
	unsigned i, saved = 0;
	uint64_t step = 0;
	int64_t t0;
	int code;
	char saved_root[HX_PATH];

	own_root(saved_root, "dist-late");
	job_open(&j, NR, "late", 600);
	for (i = 0; i < 2; i++)
		saved += save_part(j.fd[i], j.m[i], i, 61, ROWS_OK, NULL, 0) == 1;
	is_int(saved, 2, "ranks 0 and 1 handed their part of step 61");
	close(j.fd[2]);         /* rank 2 dies before its hand-off */
	j.fd[2] = -1;
	for (i = 0; i < 2; i++)
		is_int(wait_saves_within(j.fd[i], j.m[i], msg, sizeof msg,
		    20000), CKPT__CODE__CKPT_ERANK, "rank %u: step 61 failed "
		    "(%s)", i, msg);
	code = recv_nosave_done(j.fd[3], j.m[3], &step, msg, sizeof msg,
	    5000);
	is_int(code, CKPT__CODE__CKPT_ERANK, "rank 3, still computing, is "
	    "told step 61 failed (%s)", msg);
	has(msg, "ranks [2]", "... naming rank 2");
	t0 = hx_now_ms();
	code = save_part(j.fd[3], j.m[3], 3, 61, ROWS_OK, msg, sizeof msg);
	is_int(code, CKPT__CODE__CKPT_ERANK, "rank 3's late Save of step 61 "
	    "gets the step's error");
	has(msg, "ranks [2]", "... naming rank 2 (%s)", msg);
	ok(hx_now_ms() - t0 < 5000, "... at once (%lld ms), not after the "
	    "600 s timeout", (long long)(hx_now_ms() - t0));
	is_int(wait_saves_within(j.fd[3], j.m[3], msg, sizeof msg, 5000), 0,
	    "told by that answer, rank 3 has no async error left");
	ok(!hx_exists(step_file(p, 61, "")) &&
	    !hx_exists(step_file(p, 61, ".ckptd-tmp")), "nothing of step 61");
	is_int(step_state(j.fd[0], j.m[0], 61), CKPT__STEP_STATE__STEP_FAILED,
	    "step 61 is listed as failed");
	/* Rank 2 restarts; step 62 saves with all 4. */
	job_reopen(&j, 2, "late", 600);
	is_int(job_save_all(&j, 62, 20000), 2 * NR, "step 62 saved by all 4 ranks");
	job_close(&j);
	memcpy(root, saved_root, sizeof root);
}

/* A rank that hands its part of a step and dies before any other rank of
 * its job has opened its manager is remembered: the step it handed
 * commits with the others, and the next step fails at once naming it
 * (not at its timeout). Once it is back, steps save again. */
static void rank_left_alone(void)
{
	struct job j;
	char msg[512];
	unsigned i, saved = 0, clean = 0, named = 0;
	uint64_t step = 0;
	int64_t t0, ms;
	int code;
	char saved_root[HX_PATH];

	own_root(saved_root, "dist-alone");
	j.n = NR;
	g_rows = 2 * NR;
	j.fd[3] = rank_connect();
	j.m[3] = open_rank(j.fd[3], 3, NR, "alone", 20);
	is_int(save_part(j.fd[3], j.m[3], 3, 71, ROWS_OK, NULL, 0), 1,
	    "rank 3, alone, handed its part of step 71");
	close(j.fd[3]);         /* and dies before the others open */
	j.fd[3] = -1;
	hx_sleep_ms(200);       /* the daemon sees the close first */
	for (i = 0; i < NR - 1; i++) {
		j.fd[i] = rank_connect();
		j.m[i] = open_rank(j.fd[i], i, NR, "alone", 20);
	}
	for (i = 0; i < NR - 1; i++)
		saved += save_part(j.fd[i], j.m[i], i, 71, ROWS_OK, NULL, 0) == 1;
	for (i = 0; i < NR - 1; i++)
		clean += wait_saves_within(j.fd[i], j.m[i], msg, sizeof msg,
		    20000) == 0;
	is_int(saved + clean, 2 * (NR - 1), "ranks 0-2 saved step 71 (%s)",
	    msg);
	is_int(step_state(j.fd[0], j.m[0], 71),
	    CKPT__STEP_STATE__STEP_COMMITTED, "step 71 committed with rank "
	    "3's part");
	t0 = hx_now_ms();
	code = save_part(j.fd[0], j.m[0], 0, 72, ROWS_OK, msg, sizeof msg);
	is_int(code, CKPT__CODE__CKPT_ERANK, "rank 0's Save of step 72 is "
	    "answered CKPT_ERANK (%s)", msg);
	has(msg, "ranks [3]", "... naming rank 3");
	for (i = 1; i < NR - 1; i++) {
		code = recv_nosave_done(j.fd[i], j.m[i], &step, msg,
		    sizeof msg, 5000);
		named += code == CKPT__CODE__CKPT_ERANK && step == 72 &&
		    strstr(msg, "ranks [3]") != NULL;
	}
	ms = hx_now_ms() - t0;
	is_int(named, NR - 2, "ranks 1 and 2 are told step 72 failed, naming "
	    "rank 3");
	ok(ms < 5000, "at once (%lld ms), not at the 20 s timeout",
	    (long long)ms);
	for (i = 0; i < NR - 1; i++)
		wait_saves_within(j.fd[i], j.m[i], NULL, 0, 5000);
	job_reopen(&j, 3, "alone", 20);
	is_int(job_save_all(&j, 73, 20000), 2 * NR, "rank 3 back: step 73 "
	    "saved by all 4 ranks");
	job_close(&j);
	memcpy(root, saved_root, sizeof root);
}

/* ... but a rank that left alone is forgotten once its step is over with
 * no manager of the job opened meanwhile: that run of the job is over,
 * and the next run's ranks may open in any order. */
static void rank_left_alone_forgotten(void)
{
	struct job j;
	char msg[512];
	unsigned i, clean = 0;
	int code;
	char saved_root[HX_PATH];

	own_root(saved_root, "dist-alone2");
	j.n = NR;
	g_rows = 2 * NR;
	j.fd[3] = rank_connect();
	j.m[3] = open_rank(j.fd[3], 3, NR, "alone2", 1);
	is_int(save_part(j.fd[3], j.m[3], 3, 81, ROWS_OK, NULL, 0), 1,
	    "rank 3, alone, handed its part of step 81");
	close(j.fd[3]);
	j.fd[3] = -1;
	hx_sleep_ms(2500);      /* step 81 fails at its 1 s timeout */
	for (i = 0; i < NR - 1; i++) {
		j.fd[i] = rank_connect();
		j.m[i] = open_rank(j.fd[i], i, NR, "alone2", 20);
	}
	is_int(step_state(j.fd[0], j.m[0], 81), CKPT__STEP_STATE__STEP_FAILED,
	    "step 81 failed at its timeout");
	code = save_part(j.fd[0], j.m[0], 0, 82, ROWS_OK, msg, sizeof msg);
	is_int(code, 1, "a new run: rank 0 saves step 82 before rank 3 has "
	    "opened (%s)", msg);
	j.fd[3] = rank_connect();
	j.m[3] = open_rank(j.fd[3], 3, NR, "alone2", 20);
	for (i = 1; i < NR; i++)
		code = save_part(j.fd[i], j.m[i], i, 82, ROWS_OK, msg,
		    sizeof msg);
	for (i = 0; i < NR; i++)
		clean += wait_saves_within(j.fd[i], j.m[i], msg, sizeof msg,
		    20000) == 0;
	is_int(clean, NR, "step 82 saved by all 4 ranks (%s)", msg);
	is_int(step_state(j.fd[0], j.m[0], 82),
	    CKPT__STEP_STATE__STEP_COMMITTED, "step 82 committed");
	job_close(&j);
	memcpy(root, saved_root, sizeof root);
}

/* Close rank's manager as a client that ends cleanly does (CloseManager). */
static void close_rank(int fd, uint64_t mgr)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__CloseManager cm = CKPT__CLOSE_MANAGER__INIT;
	Ckpt__Response *resp;

	cm.has_manager = 1;
	cm.manager = mgr;
	req.op_case = CKPT__REQUEST__OP_CLOSE_MANAGER;
	req.close_manager = &cm;
	if (send_req(fd, &req, -1) != 0 || (resp = recv_reply(fd, 5000)) ==
	    NULL)
		bail_out("close_manager failed");
	ckpt__response__free_unpacked(resp, NULL);
}

/* A rank that opens its manager, hands nothing and dies before any other
 * rank of its job has opened (no step of the job unfinished): the job's
 * next step fails at once naming it, not at its timeout. A rank that
 * closes its manager instead is a job that ended: the next run's ranks
 * may open in any order. */
static void rank_lost_before_others(void)
{
	struct job j;
	char msg[512];
	unsigned i, named = 0, clean = 0;
	uint64_t step = 0;
	int64_t t0, ms;
	int code;
	char saved_root[HX_PATH];

	own_root(saved_root, "dist-lost");
	j.n = NR;
	g_rows = 2 * NR;
	j.fd[3] = rank_connect();
	j.m[3] = open_rank(j.fd[3], 3, NR, "lost", 20);
	close(j.fd[3]);         /* dies: no CloseManager, no part */
	j.fd[3] = -1;
	hx_sleep_ms(200);       /* the daemon sees the close first */
	for (i = 0; i < NR - 1; i++) {
		j.fd[i] = rank_connect();
		j.m[i] = open_rank(j.fd[i], i, NR, "lost", 20);
	}
	t0 = hx_now_ms();
	code = save_part(j.fd[0], j.m[0], 0, 91, ROWS_OK, msg, sizeof msg);
	is_int(code, CKPT__CODE__CKPT_ERANK, "rank 0's Save of step 91 is "
	    "answered CKPT_ERANK (%s)", msg);
	has(msg, "ranks [3]", "... naming rank 3, which died before the "
	    "others opened");
	for (i = 1; i < NR - 1; i++) {
		code = recv_nosave_done(j.fd[i], j.m[i], &step, msg,
		    sizeof msg, 5000);
		named += code == CKPT__CODE__CKPT_ERANK && step == 91 &&
		    strstr(msg, "ranks [3]") != NULL;
	}
	ms = hx_now_ms() - t0;
	is_int(named, NR - 2, "ranks 1 and 2 are told step 91 failed");
	ok(ms < 5000, "at once (%lld ms), not at the 20 s timeout",
	    (long long)ms);
	for (i = 0; i < NR - 1; i++)
		wait_saves_within(j.fd[i], j.m[i], NULL, 0, 5000);
	job_reopen(&j, 3, "lost", 20);
	is_int(job_save_all(&j, 92, 20000), 2 * NR, "rank 3 back: step 92 "
	    "saved by all 4 ranks");
	job_close(&j);

	/* The same with a clean close: nothing remembered. */
	j.fd[3] = rank_connect();
	j.m[3] = open_rank(j.fd[3], 3, NR, "lost2", 20);
	close_rank(j.fd[3], j.m[3]);
	close(j.fd[3]);
	hx_sleep_ms(200);
	for (i = 0; i < NR - 1; i++) {
		j.fd[i] = rank_connect();
		j.m[i] = open_rank(j.fd[i], i, NR, "lost2", 20);
	}
	code = save_part(j.fd[0], j.m[0], 0, 93, ROWS_OK, msg, sizeof msg);
	is_int(code, 1, "after a clean close, rank 0 saves step 93 before "
	    "rank 3 has opened again (%s)", msg);
	j.fd[3] = rank_connect();
	j.m[3] = open_rank(j.fd[3], 3, NR, "lost2", 20);
	for (i = 1; i < NR; i++)
		save_part(j.fd[i], j.m[i], i, 93, ROWS_OK, msg, sizeof msg);
	for (i = 0; i < NR; i++)
		clean += wait_saves_within(j.fd[i], j.m[i], msg, sizeof msg,
		    20000) == 0;
	is_int(clean, NR, "step 93 saved by all 4 ranks (%s)", msg);
	job_close(&j);
	memcpy(root, saved_root, sizeof root);
}

static void rank_never_comes(void)
{
	struct job j;
	char msg[512];
	unsigned i, erank = 0, saved = 0;
	int64_t t0;

	job_open(&j, NR, "slow", 2);
	t0 = hx_now_ms();
	for (i = 0; i < NR - 1; i++)
		saved += save_part(j.fd[i], j.m[i], i, 5, ROWS_OK, NULL, 0) == 1;
	is_int(saved, NR - 1, "ranks 0-2 handed step 5; rank 3 stays silent");
	for (i = 0; i < NR - 1; i++) {
		erank += wait_saves(j.fd[i], j.m[i], msg, sizeof msg) ==
		    CKPT__CODE__CKPT_ERANK;
	}
	is_int(erank, NR - 1, "CKPT_ERANK on the 3 ranks after the timeout");
	has(msg, "ranks [3] did not hand their part within 2 s",
	    "the message names the rank and the timeout");
	ok(hx_now_ms() - t0 >= 1500, "not before the timeout (%lld ms)",
	    (long long)(hx_now_ms() - t0));
	job_close(&j);
}

static void mismatched_pieces(void)
{
	struct job j;
	char p[HX_PATH], msg[512];
	unsigned i, mm = 0, named = 0;
	int code;

	job_open(&j, NR, "train", 0);
	for (i = 0; i < NR; i++)
		save_part(j.fd[i], j.m[i], i, 6, ROWS_OVERLAP, NULL, 0);
	for (i = 0; i < NR; i++) {
		mm += wait_saves(j.fd[i], j.m[i], msg, sizeof msg) ==
		    CKPT__CODE__CKPT_EMISMATCH;
		named += strstr(msg, "array 'w'") != NULL &&
		    strstr(msg, "overlap") != NULL;
	}
	diag("overlap: %s", msg);
	is_int(mm, NR, "overlapping pieces: CKPT_EMISMATCH on every rank");
	is_int(named, NR, "... naming the array and the overlap");
	ok(!hx_exists(step_file(p, 6, "")) &&
	    !hx_exists(step_file(p, 6, ".ckptd-tmp")), "nothing of step 6");

	mm = named = 0;
	for (i = 0; i < NR; i++)
		save_part(j.fd[i], j.m[i], i, 7, ROWS_MISSING, NULL, 0);
	for (i = 0; i < NR; i++) {
		mm += wait_saves(j.fd[i], j.m[i], msg, sizeof msg) ==
		    CKPT__CODE__CKPT_EMISMATCH;
		named += strstr(msg, "array 'w'") != NULL &&
		    strstr(msg, "missing pieces") != NULL;
	}
	diag("missing: %s", msg);
	is_int(mm, NR, "missing pieces: CKPT_EMISMATCH on every rank");
	is_int(named, NR, "... naming the array");
	is_int(step_state(j.fd[0], j.m[0], 7), CKPT__STEP_STATE__STEP_FAILED,
	    "step 7 listed as failed");

	/* Two overlapping pieces in one Save: refused at once. */
	code = save_part(j.fd[0], j.m[0], 0, 8, ROWS_TWICE, msg, sizeof msg);
	is_int(code, CKPT__CODE__CKPT_EMISMATCH,
	    "overlapping pieces within one Save are refused");
	has(msg, "overlap", "... saying so (%s)", msg);
	job_close(&j);
}

static void two_jobs(void)
{
	struct job a, b;
	char msg[512];
	unsigned i, ok_a = 0, ok_b = 0;
	int code;

	job_open(&a, 2, "job-a", 0);
	job_open(&b, 2, "job-b", 0);
	/* Interleaved: a's rank 0, b's rank 0, then the rank 1s. */
	save_part(a.fd[0], a.m[0], 0, 20, ROWS_OK, NULL, 0);
	code = save_part(b.fd[0], b.m[0], 0, 20, ROWS_OK, msg, sizeof msg);
	is_int(code, CKPT__CODE__CKPT_EEXIST,
	    "job b's part of job a's pending step does not join it");
	save_part(b.fd[0], b.m[0], 0, 21, ROWS_OK, NULL, 0);
	save_part(a.fd[1], a.m[1], 1, 20, ROWS_OK, NULL, 0);
	save_part(b.fd[1], b.m[1], 1, 21, ROWS_OK, NULL, 0);
	for (i = 0; i < 2; i++) {
		ok_a += wait_saves(a.fd[i], a.m[i], NULL, 0) == 0;
		ok_b += wait_saves(b.fd[i], b.m[i], NULL, 0) == 0;
	}
	is_int(ok_a, 2, "job a's step 20 committed on both ranks");
	is_int(ok_b, 2, "job b's step 21 committed on both ranks");
	is_int(step_state(a.fd[0], a.m[0], 20),
	    CKPT__STEP_STATE__STEP_COMMITTED, "step 20 listed");
	is_int(step_state(b.fd[1], b.m[1], 21),
	    CKPT__STEP_STATE__STEP_COMMITTED, "step 21 listed");
	{
		char p[HX_PATH];
		char *meta = hx_read_file(step_file(p, 20,
		    "/default/_METADATA"), NULL);

		ok(meta != NULL && strstr(meta, "\"global_shape\":[4,4]") &&
		    strstr(meta, "\"offsets\":[2,0]") &&
		    !strstr(meta, "\"offsets\":[4,0]"),
		    "step 20 holds job a's two pieces only");
		free(meta);
	}
	job_close(&a);
	job_close(&b);
}

static int should_save(int fd, uint64_t mgr, uint64_t step)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__ShouldSave ss = CKPT__SHOULD_SAVE__INIT;
	Ckpt__Response *resp;
	int r = -1;

	ss.has_manager = 1;
	ss.manager = mgr;
	ss.has_step = 1;
	ss.step = step;
	req.op_case = CKPT__REQUEST__OP_SHOULD_SAVE;
	req.should_save = &ss;
	if (send_req(fd, &req, -1) != 0 || (resp = recv_reply(fd, 10000)) ==
	    NULL)
		return -2;
	if (resp->body_case == CKPT__RESPONSE__BODY_SHOULD_SAVE)
		r = resp->should_save->should;
	ckpt__response__free_unpacked(resp, NULL);
	return r;
}

/* The policy decision is the first part's, for every rank. */
static void decision_once(void)
{
	struct job j;
	unsigned saved = 0;

	g_interval = 2;
	job_open(&j, 2, "decide", 0);
	g_interval = 0;
	is_int(should_save(j.fd[1], j.m[1], 31), 0,
	    "save_interval_steps 2: step 31 is not due");
	g_force = 1;
	is_int(save_part(j.fd[0], j.m[0], 0, 31, ROWS_OK, NULL, 0), 1,
	    "rank 0 forces step 31");
	is_int(should_save(j.fd[1], j.m[1], 31), 1,
	    "should_save on rank 1 answers the step's decision");
	is_int(save_part(j.fd[1], j.m[1], 1, 31, ROWS_OK, NULL, 0), 1,
	    "rank 1's part of step 31 joins it without force");
	saved += wait_saves(j.fd[0], j.m[0], NULL, 0) == 0;
	saved += wait_saves(j.fd[1], j.m[1], NULL, 0) == 0;
	is_int(saved, 2, "step 31 committed on both ranks");
	is_int(save_part(j.fd[0], j.m[0], 0, 33, ROWS_OK, NULL, 0) +
	    save_part(j.fd[1], j.m[1], 1, 33, ROWS_OK, NULL, 0), 0,
	    "step 33 is skipped by both ranks");
	is_int(step_state(j.fd[0], j.m[0], 33), -1, "nothing of step 33");
	job_close(&j);
}

/* Stopping ckptd does not wait for the timeout of a step missing parts:
 * the step fails at once (recorded, its tmp dir removed). */
static void stop_while_waiting(void)
{
	struct job j;
	char p[HX_PATH];
	int64_t t0;
	int fd;

	job_open(&j, NR, "stop", 0);
	is_int(save_part(j.fd[0], j.m[0], 0, 40, ROWS_OK, NULL, 0), 1,
	    "rank 0 handed its part of step 40; ranks 1-3 are late");
	t0 = hx_now_ms();
	is_int(hx_stop(&d), 0, "ckptd exits cleanly with a step missing "
	    "3 parts");
	ok(hx_now_ms() - t0 < 20000, "... at once (%lld ms), not after the "
	    "20-minute timeout", (long long)(hx_now_ms() - t0));
	job_close(&j);
	ok(!hx_exists(step_file(p, 40, ".ckptd-tmp")) &&
	    !hx_exists(step_file(p, 40, "")), "nothing of step 40 on disk");
	if (hx_start(&d) != 0)
		bail_out("ckptd did not restart");
	fd = rank_connect();
	is_int(step_state(fd, open_rank(fd, 0, NR, "stop", 0), 40),
	    CKPT__STEP_STATE__STEP_FAILED, "step 40 is listed as failed");
	close(fd);
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
}

int main(void)
{
	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	hx_path(&d, root, "dist");
	if (hx_mkdirs(root) != 0)
		bail_out("mkdir %s", root);

	four_ranks();
	rank_dies_before();
	rank_dies_after();
	rank_gone_between();
	rank_late_after_failure();
	rank_left_alone();
	rank_left_alone_forgotten();
	rank_lost_before_others();
	rank_never_comes();
	mismatched_pieces();
	two_jobs();
	decision_once();
	stop_while_waiting();
	hx_cleanup(&d);
	return done_testing();
}
