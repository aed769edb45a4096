/*
 * internal.h - private structures of libckpt.
 *
 * Modules:
 *   errors.c   ckpt_strerror, per-handle (per-thread) error messages
 *   dtype.c    dtype table and element casts (F16/BF16 included)
 *   tree.c     ckpt_tree: leaves, path parsing, lookup
 *   options.c  ckpt_options: Orbax validation, policies
 *   wire.c     frames over the socket (length + protobuf, SCM_RIGHTS)
 *   client.c   connect/autostart, reader thread, request/response matching,
 *              reconnecting (re-open managers, settle saves in flight)
 *   staging.c  pool of staging memfds, parallel copies
 *   cow.c      copy-on-write snapshots of the caller's buffers (userfaultfd)
 *   manager.c  managers, saves, waits, step listing, delete, verify
 *   restore.c  restore / item_metadata and ckpt_restored
 *
 * Lock order: client->lock is the only lock held while touching the
 * pending-request table, the save table, the staging pool and manager
 * save state. client->send_lock serializes writes to the socket and is
 * never taken while holding client->lock (the reader takes send_lock, then
 * lock, to swap the socket after a reconnect: client->fd and client->gen
 * change only with both held). Error slots have their own small lock
 * (errbox.lock), always taken last.
 */
#ifndef CKPT_INTERNAL_H
#define CKPT_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <stdarg.h>

#include <ckpt/ckpt.h>
#include "ckpt.pb-c.h"

#define CKPT_API __attribute__((visibility("default")))

/* The wire's limits, shared with the daemon. */
#include "ckpt_limits.h"

/* Distributed steps: bounds the client checks before sending (the
 * daemon's own, when the wire's limits name them, take precedence). */
#ifndef CKPT_MAX_PROCESSES
#define CKPT_MAX_PROCESSES 65536
#endif
#ifndef CKPT_MAX_JOB
#define CKPT_MAX_JOB 255
#endif

_Static_assert(CKPT_WIRE_MAX_NDIM == CKPT_MAX_NDIM,
    "the wire's ndim limit is the public CKPT_MAX_NDIM");

#define CKPT_ERRLEN 512
#define CKPT_ALIGN 64
/* Copies of at least this many bytes use several threads. */
#define CKPT_PAR_COPY_MIN (64u << 20)
#define CKPT_PAR_COPY_THREADS 4
/* Buffers of at least this many bytes are snapshot copy-on-write. */
#define CKPT_COW_MIN (1u << 20)

/* ---- error slots (errors.c) -------------------------------------------- */

struct errslot {
	pthread_t thread;
	char msg[CKPT_ERRLEN];
	struct errslot *next;
};

struct errbox {
	pthread_mutex_t lock;
	struct errslot *slots;
};

void errbox_init(struct errbox *b);
void errbox_destroy(struct errbox *b);
void errbox_setv(struct errbox *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* The calling thread's message ("" when none). */
const char *errbox_get(const struct errbox *b);

/* ---- dtypes and casts (dtype.c) ------------------------------------------ */

int dtype_valid(int dt);
int dtype_is_float(ckpt_dtype dt);
/* 1 when cast from -> to is supported (equal dtypes always are). */
int dtype_can_cast(ckpt_dtype from, ckpt_dtype to);
/* Convert n elements; both buffers hold n elements of their dtype. */
int dtype_cast(ckpt_dtype from, const void *src, ckpt_dtype to, void *dst,
    size_t n);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

/* ---- trees (tree.c) ---------------------------------------------------------- */

struct mapping {
	void *addr;
	size_t len;
	int refs;
};
void mapping_unref(struct mapping *m);

struct tleaf {
	ckpt_leaf_kind kind;
	ckpt_key *path;         /* depth elements, key strings owned */
	size_t depth;
	char *path_str;
	char *enc;              /* unambiguous encoding of path (lookups) */
	ckpt_dtype dtype;
	int ndim;
	int64_t shape[CKPT_MAX_NDIM];
	const void *data;
	size_t nbytes;
	ckpt_piece *pieces;     /* instead of data: npieces buffers, sorted */
	size_t npieces;
	void *owned;            /* buffer to free with the tree */
	void *dst;              /* target: caller buffer */
	int64_t i;
	double f;
	int b;
	char *s;
	char tag[CKPT_MAX_TAG + 1];
	uint64_t xxh3;
	char *file;
	/* a piece of a global array: 2 * ndim elements, the global shape then
	 * the piece's offsets in it (NULL: a whole array) */
	int64_t *piece;
	long piece_next;        /* next piece of the same path, or -1 */
};

struct strmap {
	char **keys;
	long *vals;
	size_t cap, n;
};
void strmap_free(struct strmap *m);
int strmap_put(struct strmap *m, const char *key, long val);
long strmap_get(const struct strmap *m, const char *key);

struct ckpt_tree {
	struct tleaf *leaves;
	size_t n, cap;
	struct strmap byenc;    /* leaf enc -> index */
	struct strmap bystr;    /* path_str -> index (first) */
	struct strmap prefixes; /* container encodings -> 1 */
	struct mapping **maps;  /* mappings the leaves point into */
	size_t nmaps;
};

/* Append a leaf (path copied); returns its index or a negative code. */
long tree_append(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_leaf_kind kind, struct tleaf **out);
/* The same for one piece of a global array: a path may hold several pieces
 * (and nothing else); gshape and offsets (ndim each) are copied, and the
 * piece must agree with the path's other pieces on global shape (and
 * dtype, unless mixed_dtypes: targets) and not overlap them (CKPT_EINVAL /
 * CKPT_EMISMATCH otherwise). */
long tree_append_piece(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_leaf_kind kind, ckpt_dtype dtype, int ndim, const int64_t *gshape,
    const int64_t *offsets, const int64_t *shape, int mixed_dtypes,
    struct tleaf **out);
int tree_hold_mapping(ckpt_tree *t, struct mapping *m);
/* Parse "a/b/c" into keys (pointing into buf, a writable copy). */
int tree_parse_path(char *buf, ckpt_key *keys, size_t maxkeys, size_t *depth);
size_t tree_nelems(int ndim, const int64_t *shape, int *overflow);
/* "a/b/0" for a key path (malloc'ed), NULL when out of memory. */
char *tree_path_str(const ckpt_key *path, size_t depth);

/* ---- pieces of global arrays (pieces.c) ------------------------------------------ */

/* 0 when the box (off, shape) lies inside gshape (all ndim long), else
 * CKPT_EINVAL. */
int piece_check(int ndim, const int64_t *gshape, const int64_t *off,
    const int64_t *shape);
/* Intersection of boxes a and b: its volume in elements (0: disjoint; the
 * box is then not set), its offsets and shape in off/shape. */
int64_t piece_intersect(int ndim, const int64_t *aoff, const int64_t *ashape,
    const int64_t *boff, const int64_t *bshape, int64_t *off, int64_t *shape);
/* Copy the region (roff, rshape), inside both boxes, from src (a box at
 * soff of shape sshape, dtype sdt) into dst (doff, dshape, ddt), casting
 * when the dtypes differ (dtype_can_cast checked by the caller). */
void piece_copy(int ndim, const int64_t *roff, const int64_t *rshape,
    const void *src, ckpt_dtype sdt, const int64_t *soff,
    const int64_t *sshape, void *dst, ckpt_dtype ddt, const int64_t *doff,
    const int64_t *dshape);

/* ---- options (options.c) ------------------------------------------------------ */

struct ckpt_options {
	Ckpt__ManagerOptions pb;
	ckpt_should_save_fn should_save_fn;  /* client side, never sent */
	void *should_save_arg;
};

/* Check process index/count/primary/active of pb; 0 or CKPT_EINVAL with
 * a message in err. */
int opts_check_processes(const Ckpt__ManagerOptions *pb, char *err,
    size_t len);

/* ---- wire (wire.c) ----------------------------------------------------------------- */

int wire_send(int fd, const ProtobufCMessage *msg, const int *fds,
    size_t nfds, char *err, size_t errlen);
/* Read one frame: *resp unpacked, fds received with it (MSG_CMSG_CLOEXEC).
 * Returns 0, or a negative code (CKPT_ECONN on EOF). */
int wire_recv(int fd, Ckpt__Response **resp, int *fds, size_t *nfds,
    char *err, size_t errlen);

/* ---- staging (staging.c) --------------------------------------------------------- */

struct stagebuf {
	int fd;
	void *map;
	size_t size;
	int busy;
	struct stagebuf *next;
};

struct copyseg {
	size_t off;            /* in the destination */
	const void *src;
	size_t n;
};

/* Called with client->lock held. */
int staging_acquire(ckpt_client *c, size_t need, struct stagebuf **out,
    char *err, size_t errlen);
void staging_release(ckpt_client *c, struct stagebuf *b);
void staging_destroy_all(ckpt_client *c);
/* Copy segments into base (several threads for large totals). */
void staging_copy(void *base, const struct copyseg *segs, size_t nseg);

/* ---- copy-on-write snapshots (cow.c) ----------------------------------------------- */

struct cowctx;
struct cowsnap;

/* 1 when snapshots can be used: the kernel write-protects for a
 * userfaultfd that also handles faults in the kernel, and CKPT_COW_SAVE
 * is not "0". */
int cow_available(void);
/*
 * Write-protect the segments of at least CKPT_COW_MIN bytes for a copy
 * into base in the background (*out, NULL when none could be); the
 * segments left (small ones, memory that cannot be protected) are put in
 * rest (room for nseg) for the caller to copy now. Takes c->lock.
 */
int cow_begin(ckpt_client *c, void *base, const struct copyseg *segs,
    size_t nseg, struct cowsnap **out, struct copyseg *rest, size_t *nrest);
/* Bytes s takes copy-on-write. */
size_t cow_bytes(const struct cowsnap *s);
/* Copy what is left of s, unprotect and unregister it, free it. */
void cow_finish(struct cowsnap *s);
/* ckpt_disconnect, after every background save ended. */
void cow_ctx_destroy(ckpt_client *c);

/* ---- streaming copies (copy.c) ------------------------------------------------------- */

/* memcpy with streaming stores from COPY_NT_MIN bytes on (smaller: memcpy);
 * copy_nt_fence() before another thread reads what copy_nt wrote */
#define COPY_NT_MIN (256u << 10)
void copy_nt(void *dst, const void *src, size_t n);
/* copy_nt of any size, prefetching next[0, n) meanwhile (the range to be
 * read next, when next != NULL): small chunks of a long stream that is
 * read twice (hashed, then copied) load the next chunk from memory while
 * storing this one */
void copy_nt_ahead(void *dst, const void *src, size_t n, const void *next);
void copy_nt_fence(void);

/* ---- client (client.c) --------------------------------------------------------------- */

struct pending {
	uint64_t id;
	int done;
	Ckpt__Response *resp;
	int fds[CKPT_MAX_FDS];
	size_t nfds;
	pthread_cond_t cond;
	struct pending *next;
};

/* A save sent and not yet finished. */
struct inflight {
	uint64_t id;                /* the Save request id (changes on re-send) */
	struct ckpt_manager *mgr;
	struct stagebuf *buf;
	int done;                   /* SaveDone received */
	int held;                   /* ckpt_save still uses the record */
	int code;
	char msg[CKPT_ERRLEN];
	/* set by cl_call when the Save is sent: what a reconnect needs to
	 * re-send it (the packed Save, the staging fd stays in buf) */
	uint64_t step;
	uint8_t *save_pb;
	size_t save_len;
	unsigned resent;            /* times re-sent after a reconnect */
	struct inflight *next;
};

/*
 * Reconnect limits: after the connection breaks, the reader thread dials
 * again with backoff (CL_BACKOFF_MIN_MS doubling to CL_BACKOFF_MAX_MS) for
 * up to reconnect_ms (CKPT_RECONNECT_MS, or $CKPT_RECONNECT_TIMEOUT_MS;
 * 0 turns reconnecting off). A request interrupted by a break is sent
 * again at most CL_MAX_RETRIES times.
 */
#define CL_BACKOFF_MIN_MS 20
#define CL_BACKOFF_MAX_MS CKPT_RECONNECT_BACKOFF_MAX_MS
#define CL_MAX_RETRIES 4
/* A daemon that accepts a connection but does not answer hello. */
#define CL_HELLO_TIMEOUT_MS 30000

struct ckpt_client {
	int fd;                     /* changed by the reader under both locks */
	pthread_t reader;
	int reader_started;
	pthread_mutex_t lock;
	pthread_mutex_t send_lock;
	pthread_cond_t save_cond;   /* broadcast on every SaveDone / break */
	pthread_cond_t state_cond;  /* broadcast when a reconnect ends */
	uint64_t next_id;
	int broken;                 /* down for good (reconnect gave up) */
	int reconnecting;           /* the reader is dialing again */
	int restoring;              /* ... and re-opening managers on a socket */
	int closing;                /* ckpt_disconnect: stop reconnecting */
	int cand_fd;                /* the socket a reconnect is setting up */
	uint64_t gen;               /* connections made (1 after connect) */
	char broken_msg[CKPT_ERRLEN];
	struct pending *pending;
	struct inflight *saves;
	struct stagebuf *pool;
	struct cowctx *cow;         /* copy-on-write snapshots, once used */
	struct ckpt_manager *managers;
	struct errbox err;
	char daemon[64];
	/* how to dial again */
	char path[108];
	char pdir[64];              /* private directory to check, or "" */
	int may_autostart;
	long reconnect_ms;
	unsigned proto;             /* protocol version in use */
	unsigned reconnects;        /* successful reconnects */
	unsigned found_committed;   /* settled saves, by outcome */
	unsigned resent;
	unsigned resend_failed;
};

struct ckpt_manager {
	ckpt_client *c;
	uint64_t id;
	char *root;
	int read_only;
	int async;
	int closed;
	ckpt_should_save_fn should_save_fn;
	void *should_save_arg;
	/* distributed steps: this process's rank, the job's size (1: not
	 * distributed) and the rank that writes replicated leaves */
	uint32_t rank, nproc, primary;
	/* under c->lock */
	unsigned saving;            /* saves sent, SaveDone not yet received */
	int dirty;                  /* a save was sent since the daemon error was cleared */
	int err_code;               /* failure of the last save, until the
				       next save starts */
	char err_msg[CKPT_ERRLEN];
	int err_nosave;             /* err_code is a step's failure the daemon
				       told without a save of ours (a rank
				       late for a failed distributed step) */
	uint64_t err_nosave_step;
	uint64_t *err_seen;         /* threads it was reported to (once each) */
	size_t n_err_seen, cap_err_seen;
	struct errbox err;
	uint8_t *open_pb;           /* packed OpenManager, to re-open it */
	size_t open_len;
	uint64_t gen;               /* the connection id belongs to (c->lock) */
	/* a background save (ckpt_save_args_set_background), under c->lock:
	 * its thread copies into staging and sends the Save */
	int bg_live;                /* bg_thread not yet joined */
	int bg_joining;             /* a caller is joining it */
	int bg_done;                /* its thread has ended its work */
	pthread_t bg_thread;
	size_t cow_bytes;           /* of the last save, taken copy-on-write */
	/* ckpt_save_ask_early: the decision asked for step early_step at
	 * early_ts, answered in that save (taken under c->lock) */
	struct pending *early;
	uint64_t early_step;
	int64_t early_ts;
	struct ckpt_manager *next;
};

/* Set the calling thread's message on c (and m when not NULL); returns code. */
int cl_fail(ckpt_client *c, struct ckpt_manager *m, int code,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/*
 * Send req (req->id assigned when 0) with fds and wait for its Response.
 * On 0, *resp is the Response (code may be nonzero: the caller decides;
 * rfds/nrfds get the received fds when not NULL, else they are closed).
 * Returns a negative code only for transport failures (message set).
 */
int cl_call(ckpt_client *c, struct ckpt_manager *m, Ckpt__Request *req,
    const int *fds, size_t nfds, Ckpt__Response **resp, int *rfds,
    size_t *nrfds);
/*
 * A request sent now whose Response is taken later with cl_answer, so that
 * the caller's own work overlaps the daemon's (req->id is assigned). NULL
 * when it could not be sent (reconnecting, broken, out of memory): nothing
 * is retried, the caller asks with cl_rpc instead. Not for saves.
 */
struct pending *cl_ask(ckpt_client *c, struct ckpt_manager *m,
    Ckpt__Request *req);
/* Wait for the Response to cl_ask's request and free p: as cl_rpc, except
 * that a connection lost first is CKPT_ECONN with no message set (the
 * caller asks again). */
int cl_answer(ckpt_client *c, struct ckpt_manager *m, struct pending *p,
    Ckpt__Response **resp);
/* cl_call, then turn a nonzero Response.code into a failure with the
 * daemon's message; the Response is freed on failure. */
int cl_rpc(ckpt_client *c, struct ckpt_manager *m, Ckpt__Request *req,
    Ckpt__Response **resp);

/* client.c: remember how m was opened (a reconnect re-opens it). */
int cl_remember_open(struct ckpt_manager *m, const Ckpt__OpenManager *om);

/* manager.c: wait until the manager has no save in flight (takes c->lock). */
int mgr_wait_local(struct ckpt_manager *m);
/* client.c: end m's background save, if any: its copy is done and its
 * Save answered (takes c->lock). */
void cl_join_bg(struct ckpt_manager *m);
/* client.c: free a manager handle without talking to the daemon. */
void cl_free_manager(struct ckpt_manager *m);
/* client.c: unlink and free finished saves nobody holds (c->lock held). */
void inflight_reap(ckpt_client *c);

#endif
