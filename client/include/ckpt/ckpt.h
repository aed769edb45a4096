/*
 * ckpt.h - client library for ckptd, the checkpoint daemon.
 *
 * libckpt talks to a local ckptd over a Unix socket. Array bytes are copied
 * into a staging memfd that is handed to the daemon with the save request;
 * the daemon writes, fsyncs and commits the step in the background, so a
 * step survives the caller crashing as soon as ckpt_save() has returned.
 * Restores map the step's safetensors files read-only.
 *
 * Example (error handling shortened):
 *
 *     ckpt_client *c;
 *     ckpt_manager *m;
 *     ckpt_tree *t, *out;
 *     float w[6] = {0};
 *     int64_t shape[2] = {2, 3};
 *
 *     if (ckpt_connect(NULL, &c) != 0) ...            // $CKPTD_SOCKET or default
 *     ckpt_options *o = ckpt_options_new();
 *     ckpt_options_set_max_to_keep(o, 3);
 *     if (ckpt_manager_open(c, "/data/run1", o, &m) != 0)
 *         fprintf(stderr, "%s\n", ckpt_client_errmsg(c));
 *     ckpt_options_free(o);
 *
 *     t = ckpt_tree_new();
 *     ckpt_tree_add_array(t, "params/w", CKPT_F32, 2, shape, w, sizeof w);
 *     ckpt_tree_add_int(t, "step", 100);
 *     ckpt_save_args *a = ckpt_save_args_new();
 *     ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);  // default item
 *     int saved;
 *     ckpt_save(m, 100, a, &saved);          // returns once the daemon has the bytes
 *     ckpt_wait_until_finished(m);           // returns once step 100 is durable
 *
 *     ckpt_restore(m, -1, NULL, &out);       // -1: latest step
 *     ... ckpt_tree_nleaves(out), ckpt_tree_leaf(out, i, &leaf) ...
 *     ckpt_tree_free(out); ckpt_tree_free(t); ckpt_save_args_free(a);
 *     ckpt_manager_close(m);
 *     ckpt_disconnect(c);
 *
 * Conventions
 *  - Every function returning int returns 0 on success or a negative CKPT_E*
 *    code. ckpt_strerror() names a code; ckpt_client_errmsg() /
 *    ckpt_manager_errmsg() give the message of the last failed call on that
 *    handle (for the calling thread's last failure on the handle).
 *  - Handles are opaque. A ckpt_client and the managers opened on it may be
 *    used from several threads at once; a ckpt_tree / ckpt_options /
 *    ckpt_save_args is used by one thread at a time.
 *  - Ownership: "borrowed" pointers stay owned by the library and are valid
 *    until the owning handle is freed; every *_new/_open result is freed by
 *    its matching *_free/_close/_disconnect.
 *  - Paths inside a tree are strings of '/'-separated dict keys, or built
 *    from ckpt_key arrays for lists and tuples (ckpt_tree_add_*_k).
 *  - After fork(), a child must not use handles created by the parent.
 */
#ifndef CKPT_CKPT_H
#define CKPT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_VERSION_MAJOR 0
#define CKPT_VERSION_MINOR 1
#define CKPT_VERSION_PATCH 0
#define CKPT_VERSION_STRING "0.1.0"

/* ---- errors ------------------------------------------------------------ */

enum {
	CKPT_OK = 0,
	CKPT_EINVAL = -1,      /* invalid argument or option */
	CKPT_EPROTO = -2,      /* malformed frame or message */
	CKPT_EVERSION = -3,    /* protocol version mismatch */
	CKPT_ENOTFOUND = -4,   /* step (or checkpoint path) not found */
	CKPT_EEXIST = -5,      /* step already exists */
	CKPT_EACCES = -6,      /* permission denied */
	CKPT_ENOSPC = -7,      /* no space left on device (or quota) */
	CKPT_EIO = -8,         /* I/O error */
	CKPT_ECORRUPT = -9,    /* checksum mismatch or unreadable format */
	CKPT_ENOMEM = -10,     /* out of memory */
	CKPT_ECONN = -11,      /* cannot reach ckptd, or the connection broke */
	CKPT_ETIMEDOUT = -12,  /* a wait ran out of time */
	CKPT_EINCOMPLETE = -13,/* step exists but is not committed */
	CKPT_ENOSTEPS = -14,   /* the root holds no steps */
	CKPT_ENOITEM = -15,    /* item not present in the step */
	CKPT_EMISMATCH = -16,  /* target structure, shape or dtype mismatch */
	CKPT_EDTYPE = -17,     /* unknown or unsupported dtype / cast */
	CKPT_EREADONLY = -18,  /* manager is read-only */
	CKPT_EBUSY = -19,      /* resource busy */
	CKPT_ECLOSED = -20,    /* handle already closed */
	CKPT_EUNSUPPORTED = -21,/* operation not supported (unknown request) */
	CKPT_ETOOBIG = -22,    /* frame or value larger than allowed */
	CKPT_EINTERNAL = -23,  /* bug: please report */
	CKPT_ENOTDIR = -24,    /* root does not exist (and create is off) */
	CKPT_EPATH = -25,      /* path escapes the root or is not allowed */
	CKPT_ELIMIT = -26,     /* a per-user limit was reached */
	CKPT_ERANK = -27,      /* a rank of a distributed step failed */
	CKPT_ECODE_MIN = -27
};

/* Static string naming the code, e.g. "step already exists". Never NULL. */
const char *ckpt_strerror(int code);

/* Library version, "0.1.0". */
const char *ckpt_version(void);

/* ---- dtypes (values equal the wire values) ------------------------------ */

typedef enum {
	CKPT_DTYPE_INVALID = 0,
	CKPT_BOOL = 1, CKPT_U8 = 2, CKPT_I8 = 3, CKPT_U16 = 4, CKPT_I16 = 5,
	CKPT_F16 = 6, CKPT_BF16 = 7, CKPT_U32 = 8, CKPT_I32 = 9, CKPT_F32 = 10,
	CKPT_U64 = 11, CKPT_I64 = 12, CKPT_F64 = 13, CKPT_F8_E4M3 = 14,
	CKPT_F8_E5M2 = 15
} ckpt_dtype;

/* Bytes per element (0 for CKPT_DTYPE_INVALID or an unknown value). */
size_t ckpt_dtype_size(ckpt_dtype dt);
/* safetensors name ("F32"), or NULL when unknown. */
const char *ckpt_dtype_name(ckpt_dtype dt);
/* Parse a safetensors name; CKPT_DTYPE_INVALID when unknown. */
ckpt_dtype ckpt_dtype_from_name(const char *name);

/* ---- trees --------------------------------------------------------------- */

typedef enum {
	CKPT_KEY_DICT = 0, CKPT_KEY_LIST = 1, CKPT_KEY_TUPLE = 2
} ckpt_key_kind;

typedef struct {
	ckpt_key_kind kind;
	const char *key;    /* CKPT_KEY_DICT */
	uint64_t index;     /* CKPT_KEY_LIST / CKPT_KEY_TUPLE */
} ckpt_key;

typedef enum {
	CKPT_LEAF_ARRAY = 0, CKPT_LEAF_INT = 1, CKPT_LEAF_FLOAT = 2,
	CKPT_LEAF_BOOL = 3, CKPT_LEAF_STR = 4, CKPT_LEAF_NONE = 5,
	CKPT_LEAF_EMPTY_DICT = 6, CKPT_LEAF_EMPTY_LIST = 7,
	CKPT_LEAF_EMPTY_TUPLE = 8,
	CKPT_LEAF_TARGET = 9   /* restore target: dtype/shape (and buffer) only */
} ckpt_leaf_kind;

#define CKPT_MAX_NDIM 32

/* A leaf as returned by ckpt_tree_leaf(). All pointers are borrowed from the
 * tree and valid until it is freed. */
typedef struct {
	ckpt_leaf_kind kind;
	const ckpt_key *path;     /* depth elements */
	size_t depth;
	const char *path_str;     /* "a/b/0": keys and indices joined by '/' */
	ckpt_dtype dtype;         /* arrays and targets */
	int ndim;
	const int64_t *shape;     /* ndim elements */
	const void *data;         /* arrays: nbytes bytes (read-only if a view) */
	size_t nbytes;
	int64_t i;                /* CKPT_LEAF_INT */
	double f;                 /* CKPT_LEAF_FLOAT */
	int b;                    /* CKPT_LEAF_BOOL */
	const char *s;            /* CKPT_LEAF_STR (NUL-terminated) */
	const char *tag;          /* client-defined tag, "" when none */
	uint64_t xxh3;            /* restored arrays: the stored checksum */
	const char *file;         /* restored/metadata: safetensors file name */
	/* A piece of a global array (ckpt_tree_add_piece, a piece target, the
	 * pieces item metadata lists): the global array's shape and where the
	 * piece starts in it, ndim elements each; shape is the piece's. NULL
	 * for whole arrays and other leaves. */
	const int64_t *global_shape;
	const int64_t *offsets;
} ckpt_leaf;

typedef struct ckpt_tree ckpt_tree;

/* New empty tree. Returns NULL only when out of memory. */
ckpt_tree *ckpt_tree_new(void);
/* Free a tree and everything it owns (including restored buffers and
 * mappings). NULL is allowed. */
void ckpt_tree_free(ckpt_tree *t);

/*
 * Add leaves. `path` is '/'-separated dict keys ("params/dense/kernel");
 * the *_k variants take an explicit key path for lists and tuples.
 * Arrays: `data` points at nbytes bytes in C order, little-endian; nbytes
 * must equal product(shape) * ckpt_dtype_size(dtype). The bytes are NOT
 * copied here: they are read by ckpt_save(), so they must stay valid until
 * ckpt_save() returns. ndim 0 is a scalar array; a zero dim is an empty
 * array (data may be NULL). Errors: CKPT_EINVAL (bad path, duplicate path,
 * a path that is both a leaf and a container, ndim > CKPT_MAX_NDIM,
 * nbytes mismatch), CKPT_EDTYPE (unknown dtype), CKPT_ENOMEM.
 */
int ckpt_tree_add_array(ckpt_tree *t, const char *path, ckpt_dtype dtype,
    int ndim, const int64_t *shape, const void *data, size_t nbytes);
int ckpt_tree_add_int(ckpt_tree *t, const char *path, int64_t v);
int ckpt_tree_add_float(ckpt_tree *t, const char *path, double v);
int ckpt_tree_add_bool(ckpt_tree *t, const char *path, int v);
int ckpt_tree_add_str(ckpt_tree *t, const char *path, const char *v);
int ckpt_tree_add_none(ckpt_tree *t, const char *path);

int ckpt_tree_add_array_k(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_dtype dtype, int ndim, const int64_t *shape, const void *data,
    size_t nbytes);
/*
 * An array leaf whose bytes lie in several buffers (e.g. the shards of a
 * device array): piece i holds bytes [offset, offset + nbytes) of the
 * leaf's C-order layout. The pieces must cover the leaf's bytes exactly
 * once (any order); like data above they are not copied until the save,
 * and are copied straight into the staging buffer. The pieces array itself
 * is copied. Errors: as ckpt_tree_add_array_k, CKPT_EINVAL for pieces that
 * overlap, leave a gap or overrun.
 */
typedef struct ckpt_piece {
	uint64_t offset;
	const void *data;
	size_t nbytes;
} ckpt_piece;

int ckpt_tree_add_array_pieces_k(ckpt_tree *t, const ckpt_key *path,
    size_t depth, ckpt_dtype dtype, int ndim, const int64_t *shape,
    const ckpt_piece *pieces, size_t npieces);
/*
 * Many such leaves in one call, for bindings that hand a whole tree of
 * device arrays at every save: spec i is added as ckpt_tree_add_array_
 * pieces_k(t, path, depth, dtype, ndim, shape, pieces + first, npieces)
 * followed by ckpt_tree_set_tag(t, tag) when tag is not NULL, in order.
 * On an error the leaves of the specs before stay added, *failed (when
 * not NULL) is the index of the spec that failed, and the error is that
 * call's. Every field is 8 bytes wide (dtype and ndim share one), so
 * that a binding can lay the specs out as a table of 64-bit words.
 */
typedef struct ckpt_array_spec {
	const ckpt_key *path;
	size_t depth;
	int32_t dtype;            /* a ckpt_dtype */
	int32_t ndim;
	const int64_t *shape;     /* ndim elements */
	size_t first;             /* index of its first piece in `pieces` */
	size_t npieces;
	const char *tag;          /* NULL: no tag */
} ckpt_array_spec;

int ckpt_tree_add_arrays_pieces_k(ckpt_tree *t, const ckpt_array_spec *specs,
    size_t n, const ckpt_piece *pieces, size_t *failed);
/* Scalars and empty containers by key path: kind is one of CKPT_LEAF_INT,
 * _FLOAT, _BOOL, _STR, _NONE, _EMPTY_DICT, _EMPTY_LIST, _EMPTY_TUPLE; the
 * value is taken from i, f, b or s accordingly (s is copied). */
int ckpt_tree_add_scalar_k(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_leaf_kind kind, int64_t i, double f, int b, const char *s);
/* Set the tag of the most recently added leaf (copied, <= 64 bytes). */
int ckpt_tree_set_tag(ckpt_tree *t, const char *tag);

/*
 * Restore targets: a leaf of the wanted dtype and shape. `dst`, when not
 * NULL, is a caller buffer of nbytes bytes the restored data is written to
 * (ckpt_leaf.data then points at it); otherwise the library allocates.
 * A stored leaf is cast to the target dtype (numeric casts, with float
 * rounding as C conversions); a shape that differs is CKPT_EMISMATCH.
 */
int ckpt_tree_add_target(ckpt_tree *t, const char *path, ckpt_dtype dtype,
    int ndim, const int64_t *shape, void *dst, size_t nbytes);
int ckpt_tree_add_target_k(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_dtype dtype, int ndim, const int64_t *shape, void *dst,
    size_t nbytes);

/*
 * Pieces of global arrays (distributed steps, see ckpt_options_set_
 * process_count). A piece is the part of a global array of shape
 * global_shape that starts at `offsets` and has shape `shape` (ndim
 * elements each, ndim >= 1, as the global array); `data` holds its
 * nbytes bytes in C order, borrowed as for ckpt_tree_add_array. Several
 * pieces of one array share its path: they must agree on dtype and
 * global shape and must not overlap (CKPT_EMISMATCH), and lie inside
 * the global shape (CKPT_EINVAL); a path holding pieces holds nothing
 * else. The pieces every rank of the job saves must cover the global
 * array exactly, which the daemon checks when the step commits. A rank
 * holding no piece of a global array adds an empty list at its path
 * (ckpt_tree_add_scalar_k, CKPT_LEAF_EMPTY_LIST), as Python's empty list
 * of Shards.
 *
 * Array leaves added with ckpt_tree_add_array are replicated: every rank
 * holds the same value; the primary host writes it, other ranks send only
 * its dtype and shape (no bytes are copied).
 */
int ckpt_tree_add_piece(ckpt_tree *t, const char *path, ckpt_dtype dtype,
    int ndim, const int64_t *global_shape, const int64_t *offsets,
    const int64_t *shape, const void *data, size_t nbytes);
int ckpt_tree_add_piece_k(ckpt_tree *t, const ckpt_key *path, size_t depth,
    ckpt_dtype dtype, int ndim, const int64_t *global_shape,
    const int64_t *offsets, const int64_t *shape, const void *data,
    size_t nbytes);
/*
 * Restore target for a piece: the part (offsets, shape) of the global
 * array at `path` is assembled from whichever saved pieces overlap it
 * (any layout: the step may have been saved by another number of
 * processes, or by one process as a whole array), cast to dtype as for
 * ckpt_tree_add_target. A different global shape is CKPT_EMISMATCH, a
 * part of the target no saved piece covers CKPT_ECORRUPT. dst as for
 * ckpt_tree_add_target. Several piece targets may share a path (each
 * comes back as its own leaf, a piece).
 *
 * A plain target (ckpt_tree_add_target) of the global shape, or no
 * target, gets the whole global array assembled from its pieces.
 *
 * A rank asking for no piece of an array (saved whole or as pieces) puts
 * an empty list at its path (ckpt_tree_add_scalar_k, CKPT_LEAF_EMPTY_LIST),
 * as Python's empty list of Shard targets: the restored tree holds an
 * empty list there and none of the array's bytes is read.
 */
int ckpt_tree_add_piece_target(ckpt_tree *t, const char *path,
    ckpt_dtype dtype, int ndim, const int64_t *global_shape,
    const int64_t *offsets, const int64_t *shape, void *dst, size_t nbytes);
int ckpt_tree_add_piece_target_k(ckpt_tree *t, const ckpt_key *path,
    size_t depth, ckpt_dtype dtype, int ndim, const int64_t *global_shape,
    const int64_t *offsets, const int64_t *shape, void *dst, size_t nbytes);

/* Number of leaves, in insertion order (restored trees: the saved order). */
size_t ckpt_tree_nleaves(const ckpt_tree *t);
/* Describe leaf i. Errors: CKPT_EINVAL when i is out of range. */
int ckpt_tree_leaf(const ckpt_tree *t, size_t i, ckpt_leaf *out);
/* Find a leaf by path string; returns its index or -1. */
long ckpt_tree_find(const ckpt_tree *t, const char *path);

/* ---- options --------------------------------------------------------------- */

typedef struct ckpt_options ckpt_options;

/* Options with Orbax's defaults (create=1, save_interval_steps=1, async on,
 * keep everything). NULL only when out of memory. */
ckpt_options *ckpt_options_new(void);
void ckpt_options_free(ckpt_options *o);

/* Setters return CKPT_EINVAL for values Orbax rejects (negative
 * max_to_keep, a prefix with '/' ...). */
int ckpt_options_set_create(ckpt_options *o, int on);
int ckpt_options_set_read_only(ckpt_options *o, int on);
int ckpt_options_set_max_to_keep(ckpt_options *o, int64_t n); /* n >= 0 */
int ckpt_options_set_keep_period(ckpt_options *o, uint64_t n);
int ckpt_options_set_keep_time_interval(ckpt_options *o, double secs);
/* best_fn as a metric name: the step's metrics[name] (a number). */
int ckpt_options_set_best(ckpt_options *o, const char *metric, int mode_min);
int ckpt_options_set_keep_checkpoints_without_metrics(ckpt_options *o, int on);
int ckpt_options_set_step_prefix(ckpt_options *o, const char *prefix);
int ckpt_options_set_step_format_fixed_length(ckpt_options *o, unsigned n);
int ckpt_options_set_cleanup_tmp_directories(ckpt_options *o, int on);
/* 0: no interval saves (the other save policies still apply). */
int ckpt_options_set_save_interval_steps(ckpt_options *o, uint64_t n);
int ckpt_options_set_save_on_steps(ckpt_options *o, const uint64_t *steps,
    size_t n);
int ckpt_options_set_todelete_subdir(ckpt_options *o, const char *subdir);
int ckpt_options_set_enable_background_delete(ckpt_options *o, int on);
int ckpt_options_set_async(ckpt_options *o, int on);
int ckpt_options_set_async_timeout(ckpt_options *o, double secs);
int ckpt_options_set_prevent_write_metrics(ckpt_options *o, int on);
int ckpt_options_set_path_permission_mode(ckpt_options *o, unsigned mode);
int ckpt_options_set_root_metadata(ckpt_options *o, const char *json);
/*
 * should_save_fn (Orbax): a predicate run by ckpt_should_save() and
 * ckpt_save() in the caller's process. When set, it replaces the save
 * decision policy: a non-forced save of `step` happens iff fn(step,
 * latest, arg) returns nonzero, where latest is the latest committed step
 * or -1, or the daemon's node is being preempted (ckpt_reached_preemption)
 * (read_only and step <= latest still decline first). NULL clears it.
 */
typedef int (*ckpt_should_save_fn)(uint64_t step, int64_t latest, void *arg);
int ckpt_options_set_should_save_fn(ckpt_options *o, ckpt_should_save_fn fn,
    void *arg);
/*
 * Distributed steps (Orbax's multi-process manager). A job of
 * process_count processes (ranks) saves each step together: every rank
 * opens the root with its own process_index and calls ckpt_save(step)
 * with its part (pieces of global arrays, ckpt_tree_add_piece; replicated
 * leaves are written by primary_host only). The step commits once, when
 * every rank's part is durable; until then it is not listed, and a rank
 * that disconnects before handing its part, or has not handed it within
 * the async timeout of the first part, fails the step on every rank with
 * CKPT_ERANK (the message names the ranks). Save-policy and retention
 * decisions are taken once for the job. With process_count 1 (default)
 * nothing changes.
 *   index: this process's rank (default 0); count: ranks in the job (>= 1;
 *   with active_processes, their number); primary: the rank writing
 *   replicated leaves (default 0); active: the ranks taking part, when
 *   not 0..count-1 (copied); job: what tells jobs sharing a root apart
 *   (Orbax's barrier_sync_key_prefix; default $CKPT_JOB, else
 *   $TORCHELASTIC_RUN_ID, else ""; copied, <= 255 bytes).
 * ckpt_manager_open() fails with CKPT_EINVAL when the index or the primary
 * is not one of the job's ranks.
 */
int ckpt_options_set_process_index(ckpt_options *o, uint32_t index);
int ckpt_options_set_process_count(ckpt_options *o, uint32_t count);
int ckpt_options_set_primary_host(ckpt_options *o, uint32_t rank);
int ckpt_options_set_active_processes(ckpt_options *o, const uint32_t *ranks,
    size_t n);
int ckpt_options_set_job(ckpt_options *o, const char *job);
/* Item names for multi-item mode (copied). The daemon judges them when the
 * manager opens (ckpt_manager_open fails with its message: a bad or
 * duplicate name, too many names). */
int ckpt_options_set_item_names(ckpt_options *o, const char *const *names,
    size_t n);

/*
 * Policies. A policy is built as a flat list of nodes; node 0 is the root.
 * ckpt_options_*_policy_add() appends a node and returns its index (>= 0)
 * or a negative error; ANY nodes name their children with *_child().
 * Setting any preservation node together with max_to_keep, keep_period or
 * keep_time_interval makes ckpt_manager_open() fail with CKPT_EINVAL.
 */
typedef enum {
	CKPT_SAVE_FIXED_INTERVAL = 0, CKPT_SAVE_SPECIFIC_STEPS = 1,
	CKPT_SAVE_CONTINUOUS = 2, CKPT_SAVE_INITIAL = 3,
	CKPT_SAVE_PREEMPTION = 4, CKPT_SAVE_ANY = 5
} ckpt_save_policy_kind;

typedef enum {
	CKPT_PRESERVE_ALL = 0, CKPT_PRESERVE_LATEST_N = 1,
	CKPT_PRESERVE_EVERY_N_SECONDS = 2, CKPT_PRESERVE_EVERY_N_STEPS = 3,
	CKPT_PRESERVE_CUSTOM_STEPS = 4, CKPT_PRESERVE_BEST_N = 5,
	CKPT_PRESERVE_LATEST_DURATION = 6, CKPT_PRESERVE_ANY = 7,
	CKPT_PRESERVE_EVERY_N_STEPS_CLOSEST = 8
} ckpt_preserve_kind;

/* interval: FIXED_INTERVAL; steps/nsteps: SPECIFIC_STEPS; secs: CONTINUOUS. */
int ckpt_options_save_policy_add(ckpt_options *o, ckpt_save_policy_kind kind,
    uint64_t interval, const uint64_t *steps, size_t nsteps, double secs);
int ckpt_options_save_policy_child(ckpt_options *o, int parent, int child);
/* n: LATEST_N, EVERY_N_STEPS(_CLOSEST), BEST_N; secs: EVERY_N_SECONDS,
 * LATEST_DURATION; steps: CUSTOM_STEPS; metric/mode_min/keep_without:
 * BEST_N. Returns the node's index. */
int ckpt_options_preservation_add(ckpt_options *o, ckpt_preserve_kind kind,
    int64_t n, double secs, const uint64_t *steps, size_t nsteps,
    const char *metric, int mode_min, int keep_without_metrics);
/* Orbax 0.12 EveryNSteps(exact_interval, max_to_keep) and
 * EveryNStepsClosest(max_to_keep) of node `node`: exact 0 keeps the first
 * step, then each at least n steps after the last kept; max_to_keep >= 0
 * keeps only the latest that many of the steps chosen (-1: all). */
int ckpt_options_preservation_every_n(ckpt_options *o, int node, int exact,
    int64_t max_to_keep);
int ckpt_options_preservation_child(ckpt_options *o, int parent, int child);

/* ---- connection --------------------------------------------------------------- */

typedef struct ckpt_client ckpt_client;

/* How long a client keeps trying to reconnect after its connection to
 * ckptd broke (daemon restarted, upgraded or crashed), in milliseconds.
 * $CKPT_RECONNECT_TIMEOUT_MS overrides it per process; 0 turns
 * reconnecting off. */
#define CKPT_RECONNECT_MS 60000
/* Attempts back off from 20 ms, doubling, to at most 1 s apart. */
#define CKPT_RECONNECT_BACKOFF_MAX_MS 1000

/*
 * Connect to ckptd at `socket_path`, or when NULL: $CKPTD_SOCKET, else
 * /run/ckptd/ckptd.sock if it exists, else $XDG_RUNTIME_DIR/ckptd.sock,
 * else /tmp/ckptd-$UID/ckptd.sock (the directory is created 0700, and
 * refused when it is not a directory owned by the caller with mode 0700).
 * When nothing answers and $CKPTD_AUTOSTART is not "0", a private
 * per-user daemon ($CKPTD_BIN, else the installed ckptd, else `ckptd` on
 * $PATH) is started with --autostarted (it exits after a few idle
 * minutes) and waited for: on the given socket (socket_path or
 * $CKPTD_SOCKET), else on the per-user socket (also when
 * /run/ckptd/ckptd.sock exists but nothing answers there). Concurrent
 * first users start a single daemon (flock on "<socket>.autostart").
 *
 * Trust: the daemon must run as root or as the caller's user (checked
 * with SO_PEERCRED on every connect); anyone else is refused with
 * CKPT_EACCES. Protocol: the client offers the range of protocol versions
 * it speaks and the daemon picks one; CKPT_EVERSION when they do not meet.
 *
 * Reconnect: when the connection breaks, the client dials the same socket
 * again with backoff for up to CKPT_RECONNECT_MS (never across a daemon
 * it must not trust or a protocol it does not speak), re-opens its
 * managers with their options, and settles every save in flight: a step
 * the new daemon lists as committed is reported committed, one it lists
 * as in progress (the daemon lived, only the connection broke) is waited
 * for; otherwise the save is sent again from the client's staging buffer
 * (forced: the save policy already decided), and fails with the daemon's
 * reason when that is refused. A connect or reconnect whose daemon
 * accepts but does not answer hello gives up after 30 s (the first
 * connect) or the reconnect limit. Calls interrupted by the break are sent again on the new
 * connection, so waits survive (a wait_for_step timeout starts over; a
 * delete the old daemon had already done reports CKPT_ENOTFOUND).
 * ckpt_manager_close() and ckpt_disconnect() do not wait for the daemon
 * to come back. ckpt_client_info_get() counts what happened.
 * After the limit every call fails with CKPT_ECONN, with a message that
 * says reconnecting gave up.
 *
 * On success *out is a connected client (hello exchanged). On failure *out
 * is NULL and ckpt_connect_errmsg() says why. Errors: CKPT_ECONN,
 * CKPT_EVERSION (with the daemon's message), CKPT_EACCES (untrusted daemon
 * or socket directory), CKPT_ENOMEM.
 */
int ckpt_connect(const char *socket_path, ckpt_client **out);
/* Message of the calling thread's last failed ckpt_connect() ("" when
 * none): there is no handle to ask when connecting fails. */
const char *ckpt_connect_errmsg(void);
/* Close the connection. Saves already accepted still complete in the
 * daemon. NULL is allowed. Open managers are closed. */
void ckpt_disconnect(ckpt_client *c);
/* Message of the last failed call on c (or on a manager of c when the
 * manager had no handle-level message). Never NULL. With c == NULL: the
 * calling thread's last ckpt_connect() failure. */
const char *ckpt_client_errmsg(const ckpt_client *c);
/* Empty request, for latency measurements. */
int ckpt_ping(ckpt_client *c);

typedef struct {
	char version[32];
	double uptime_secs;
	uint32_t connections, managers, queued_saves, inflight_saves;
	uint32_t waiting_for_memory, workers;
	uint64_t staging_bytes, memory_budget;
	uint64_t saves_committed, saves_failed, bytes_written;
} ckpt_status;
int ckpt_status_get(ckpt_client *c, ckpt_status *out);
/* How the daemon coordinates distributed steps, one line into buf (at
 * most len bytes, always terminated): "local (no --etcd)", or "etcd
 * <endpoints>, node <name>, lease <id> (<alive|lost|etcd unreachable>,
 * ttl <s> s), waiting on other nodes: <none | job step N: k of m parts
 * durable; ...>". A daemon too old to tell gives "unknown". Kept out of
 * ckpt_status so that struct's size does not change. Errors as
 * ckpt_status_get(); CKPT_EINVAL when buf is NULL or len is 0. */
int ckpt_status_coordination(ckpt_client *c, char *buf, size_t len);

/* What the connection went through (client side, no request sent). */
typedef struct {
	uint32_t protocol_version;     /* negotiated with the daemon */
	uint32_t reconnects;           /* connections re-established */
	/* saves in flight when the connection broke, by what became of them */
	uint32_t saves_found_committed;/* the new daemon listed the step */
	uint32_t saves_resent;         /* sent again from the staging buffer */
	uint32_t saves_failed;         /* could not be sent again (reason in
	                                * the manager's error) */
} ckpt_client_info;
int ckpt_client_info_get(ckpt_client *c, ckpt_client_info *out);

/* ---- managers ---------------------------------------------------------- */

typedef struct ckpt_manager ckpt_manager;

/*
 * Open (and with create, make) the checkpoint root `root` with options `o`
 * (NULL: defaults; the options are copied). Relative paths are resolved
 * against the caller's working directory. The daemon checks that the
 * caller may read the root (and write it unless read_only) and indexes the
 * steps already on disk. Errors: CKPT_EINVAL (bad options), CKPT_EACCES,
 * CKPT_ENOTDIR (missing and create off), CKPT_ECONN, CKPT_ENOMEM.
 * A read_only manager on a missing root is opened all the same (Orbax):
 * nothing is created; it has no steps; restores and step metadata fail
 * with CKPT_ENOSTEPS / CKPT_ENOTFOUND (the messages of an empty root);
 * ckpt_reload() reads the root once it exists.
 */
int ckpt_manager_open(ckpt_client *c, const char *root,
    const ckpt_options *o, ckpt_manager **out);
/* Wait for pending saves, then close. Returns the pending async error, if
 * any (the manager is closed either way). NULL is allowed (returns 0). */
int ckpt_manager_close(ckpt_manager *m);
const char *ckpt_manager_errmsg(const ckpt_manager *m);
/* Canonical root directory (borrowed). */
const char *ckpt_manager_directory(const ckpt_manager *m);

typedef enum {
	CKPT_HANDLER_UNSPECIFIED = 0, CKPT_HANDLER_STANDARD = 1,
	CKPT_HANDLER_PYTREE = 2, CKPT_HANDLER_JSON = 3, CKPT_HANDLER_ARRAY = 4,
	CKPT_HANDLER_PROTO = 5
} ckpt_handler;

typedef struct ckpt_save_args ckpt_save_args;

ckpt_save_args *ckpt_save_args_new(void);
void ckpt_save_args_free(ckpt_save_args *a);
/* Add a tree item. name NULL: the default item (single-item mode); the tree
 * is borrowed until ckpt_save() returns. handler: STANDARD, PYTREE or
 * ARRAY. Errors: CKPT_EINVAL (a second default item, a default item mixed
 * with named ones, empty tree). Names are judged by the daemon: ckpt_save()
 * fails with its message (a bad or duplicate name). */
int ckpt_save_args_add_tree(ckpt_save_args *a, const char *name,
    ckpt_handler handler, const ckpt_tree *t);
/* Add a JSON item (document copied; must be valid JSON). */
int ckpt_save_args_add_json(ckpt_save_args *a, const char *name,
    const char *json);
/* Add a text item stored as <item>/proto.pbtxt (HANDLER_PROTO). */
int ckpt_save_args_add_proto(ckpt_save_args *a, const char *name,
    const char *text);
/* Multi-item (Composite) mode even with a single named item. */
int ckpt_save_args_set_composite(ckpt_save_args *a, int on);
/* JSON object of metrics, custom metadata (copied). */
int ckpt_save_args_set_metrics(ckpt_save_args *a, const char *json);
int ckpt_save_args_set_custom_metadata(ckpt_save_args *a, const char *json);
int ckpt_save_args_set_force(ckpt_save_args *a, int on);
/* Test clock: the step's save time in ns since the epoch (0: now). */
int ckpt_save_args_set_timestamp(ckpt_save_args *a, int64_t ns);
/* reached_preemption(step) was true for this save. */
int ckpt_save_args_set_preempted(ckpt_save_args *a, int on);
/*
 * Copy in the background (async managers): the caller promises that the
 * array bytes of the trees stay valid and unchanged until the copy ended,
 * which every later ckpt_save, ckpt_wait_until_finished, ckpt_wait_pending,
 * ckpt_manager_close and ckpt_disconnect of the manager waits for (e.g. the
 * buffers of immutable arrays the caller keeps referenced until then).
 * ckpt_save then returns once the policy has decided and the staging
 * buffer is reserved; the copy and the hand-over to the daemon follow in a
 * libckpt thread, and their errors are reported as the save's async error
 * (by ckpt_wait_until_finished, ckpt_check_for_errors or the next save).
 * Ignored with async off, and when the save is forced (force: its
 * "already exists" error stays synchronous).
 */
int ckpt_save_args_set_background(ckpt_save_args *a, int on);
/*
 * Copy-on-write snapshot (async managers): ckpt_save write-protects the
 * buffers of at least 1 MiB (with a userfaultfd), copies the smaller ones
 * and returns; a libckpt thread copies the large ones in the background,
 * and a write to a page not yet copied (by any thread, or by the kernel:
 * read(2) into the buffer) waits until its block is copied first. The
 * step holds the bytes as they were when ckpt_save was called, and the
 * caller may change them right after. The buffers must stay mapped until
 * the copy ended (as for ckpt_save_args_set_background). Used only when
 * the userfaultfd handles faults from inside the kernel (CAP_SYS_PTRACE,
 * vm.unprivileged_userfaultfd=1 or a usable /dev/userfaultfd) with
 * write-protect support, and CKPT_COW_SAVE is not "0"; otherwise (and
 * with async off, a forced save, or memory that cannot be protected)
 * ckpt_save copies before it returns, as without this option.
 */
int ckpt_save_args_set_cow(ckpt_save_args *a, int on);
/* 1 when copy-on-write snapshots can be used in this process. */
int ckpt_cow_available(void);
/* Bytes the manager's last ckpt_save took copy-on-write (0: none). */
size_t ckpt_manager_cow_bytes(const ckpt_manager *m);

/*
 * Save `step`. Waits for this manager's previous save (one in flight) and
 * returns its error if it failed (clearing it). Copies array bytes into a
 * staging buffer and returns once the daemon has accepted the step (async)
 * or, with async off, once it is committed. *saved (may be NULL) is 1, or 0
 * when the save policy declined the step (not an error).
 * Errors: CKPT_EEXIST, CKPT_EINVAL, CKPT_EREADONLY, CKPT_EACCES,
 * CKPT_ENOSPC, CKPT_EIO, CKPT_ECONN, CKPT_ENOMEM, or a previous save's code.
 */
int ckpt_save(ckpt_manager *m, uint64_t step, const ckpt_save_args *a,
    int *saved);
/*
 * Ask ckptd now whether `step` is to be saved, for the ckpt_save of that
 * step that follows with timestamp_ns as its ckpt_save_args_set_timestamp
 * (0: none): that save takes the answer instead of asking then, so the
 * daemon decides while the caller builds the save's tree. Only a save
 * copied after it returns asks (background and copy-on-write saves); for
 * any other save, or another step, the answer is dropped. Waits for the
 * manager's background save first, as ckpt_save does. Does nothing for a
 * manager with a should_save_fn (decided here), read-only or with async
 * off. A request that cannot be sent is not an error: the save asks.
 */
int ckpt_save_ask_early(ckpt_manager *m, uint64_t step, int64_t timestamp_ns);
/* Block until every save of this manager is durable; returns the error of a
 * failed one. Thread-safe. As Orbax, each thread is told of a failed save
 * once (by this, ckpt_check_for_errors, ckpt_save or ckpt_manager_close);
 * a thread's save after that proceeds and clears the error. */
int ckpt_wait_until_finished(ckpt_manager *m);
/* Return the pending async error without waiting (once per thread, as
 * above): the outcome of the last finished save as already reported to
 * this client; no round trip to the daemon. */
int ckpt_check_for_errors(ckpt_manager *m);
/* Block until no save of this manager is in flight, leaving a failure for
 * the calls above (restore, item metadata and step metadata do this). */
int ckpt_wait_pending(ckpt_manager *m);
/* Merge `json` (an object) into the metrics of committed step `step`, in
 * the daemon's memory only, for ranking (e.g. best_fn values computed from
 * metrics another program wrote). CKPT_ENOTFOUND for an unknown step. */
int ckpt_set_step_metrics(ckpt_manager *m, uint64_t step, const char *json);
/* Orbax's reached_preemption(step): *out = 1 once ckptd knows its node is
 * going down (SIGTERM, or ckpt_preempt/`ckptctl preempt`); the manager's
 * next save is then taken whatever the save policy says. */
int ckpt_reached_preemption(ckpt_manager *m, uint64_t step, int *out);
/* Announce that the node is going down (root or the daemon's user only:
 * else CKPT_EACCES). */
int ckpt_preempt(ckpt_client *c);
/* 1 while a save of this manager is in flight, else 0. */
int ckpt_is_saving_in_progress(ckpt_manager *m);
/* *out = 1 when the save policy would save `step` now. */
int ckpt_should_save(ckpt_manager *m, uint64_t step, int *out);

/*
 * Committed steps in ascending order: *steps is malloc'ed (free() it) and
 * *n its length; both may be 0/NULL when there are none.
 */
int ckpt_all_steps(ckpt_manager *m, uint64_t **steps, size_t *n);
/* *step = latest committed step, or -1 when none. */
int ckpt_latest_step(ckpt_manager *m, int64_t *step);
/* *step = best step by the best metric, or -1 (falls back to latest when no
 * best metric is configured). */
int ckpt_best_step(ckpt_manager *m, int64_t *step);
/* Metrics JSON of a step (malloc'ed, free()); NULL in *json when none.
 * Errors: CKPT_ENOTFOUND. */
int ckpt_metrics(ckpt_manager *m, uint64_t step, char **json);

typedef struct {
	uint64_t step;
	int state;            /* 0 committed, 1 pending, 2 failed, 3 interrupted
	                       * (lost in a crash of ckptd) */
	int64_t init_ns, commit_ns;
	uint64_t bytes;
	char name[256];       /* directory name */
	char error[256];      /* failed and interrupted saves: why */
	/* A root kept in the daemon's local tier (--local-tier): "local"
	 * (durable on the node, upload waiting), "uploading", "uploaded",
	 * "upload retrying" (the last try failed; upload_error says why),
	 * "upload failed" (given up; upload_error says why) or "store" (no
	 * local copy); "" for other roots. */
	char upload[16];
	char upload_error[256];
} ckpt_step_info;
/* Every step the index knows, failed ones included (malloc'ed array). */
int ckpt_list_steps(ckpt_manager *m, ckpt_step_info **infos, size_t *n);

/* Block until a step > after commits (timeout_ms <= 0: forever);
 * *step = that step. Errors: CKPT_ETIMEDOUT. */
int ckpt_wait_for_step(ckpt_manager *m, int64_t after, int64_t timeout_ms,
    int64_t *step);

/* Restore options: which items, targets, another directory. */
typedef struct ckpt_restore_args ckpt_restore_args;
ckpt_restore_args *ckpt_restore_args_new(void);
void ckpt_restore_args_free(ckpt_restore_args *r);
/* Restore only item `name` (repeat for several); with a target tree (may
 * be NULL: the saved structure) that is borrowed until ckpt_restore()
 * returns. partial: target may omit leaves. */
int ckpt_restore_args_add_item(ckpt_restore_args *r, const char *name,
    const ckpt_tree *target, int partial);
/* Restore from another root directory. */
int ckpt_restore_args_set_directory(ckpt_restore_args *r, const char *dir);
/* Arrays are read-only views of the mapped files instead of copies.
 * Views are not checksummed at restore time (that would read every byte)
 * unless ckpt_restore_args_set_verify(r, 1) was called explicitly; arrays
 * still copied (targets) are verified as usual. ckpt_verify() (and
 * `ckptctl verify`) checks a step's checksums on demand. */
int ckpt_restore_args_set_zero_copy(ckpt_restore_args *r, int on);
/* Checksum verification of restored arrays (XXH3-64 of the stored bytes,
 * mismatch: CKPT_ECORRUPT naming the tensor). Default: on for copies, off
 * for zero-copy views; on = 0 skips it, on = 1 also verifies views. */
int ckpt_restore_args_set_verify(ckpt_restore_args *r, int on);
/* Read the step's structure only, as ckpt_item_metadata() does (here with
 * the items and directory of r): the step the daemon chose (the latest
 * when step < 0), its directory and its items, leaves without data. */
int ckpt_restore_args_set_metadata_only(ckpt_restore_args *r, int on);

typedef struct ckpt_restored ckpt_restored;
/*
 * Restore `step` (-1: latest). Waits for this manager's pending save first.
 * On success *out holds one tree or JSON document per item; free with
 * ckpt_restored_free(). Errors: CKPT_ENOSTEPS, CKPT_ENOTFOUND,
 * CKPT_EINCOMPLETE, CKPT_ENOITEM, CKPT_EMISMATCH, CKPT_EDTYPE,
 * CKPT_ECORRUPT (the message names the tensor), CKPT_EACCES, CKPT_EIO.
 */
int ckpt_restore(ckpt_manager *m, int64_t step, const ckpt_restore_args *r,
    ckpt_restored **out);
/* Like ckpt_restore with metadata only: leaves carry dtype/shape/file but
 * no data (no array bytes are read). */
int ckpt_item_metadata(ckpt_manager *m, int64_t step, ckpt_restored **out);
void ckpt_restored_free(ckpt_restored *r);
uint64_t ckpt_restored_step(const ckpt_restored *r);
size_t ckpt_restored_nitems(const ckpt_restored *r);
/* Item i: name, handler, tree (tree items) or json (JSON/PROTO items);
 * borrowed from r. */
const char *ckpt_restored_item_name(const ckpt_restored *r, size_t i);
ckpt_handler ckpt_restored_item_handler(const ckpt_restored *r, size_t i);
const ckpt_tree *ckpt_restored_item_tree(const ckpt_restored *r, size_t i);
const char *ckpt_restored_item_json(const ckpt_restored *r, size_t i);
/* Find an item by name (NULL: "default"); -1 when absent. */
long ckpt_restored_find(const ckpt_restored *r, const char *name);
/* Absolute path of the restored step directory (borrowed). */
const char *ckpt_restored_directory(const ckpt_restored *r);

/* Step metadata (_CHECKPOINT_METADATA) as JSON, or root metadata when
 * step < 0 (NULL when none). malloc'ed; free(). */
int ckpt_metadata(ckpt_manager *m, int64_t step, char **json);
/* Delete a committed step (or move it under todelete_subdir).
 * Errors: CKPT_ENOTFOUND, CKPT_EREADONLY (read-only managers: no-op, 0). */
int ckpt_delete(ckpt_manager *m, uint64_t step);
/* Re-read the root from disk (a read_only manager opened on a missing
 * root: open it now if it exists). */
int ckpt_reload(ckpt_manager *m);

/* Check stored checksums of `step` (-1: every step). *problems is a
 * malloc'ed string with one line per problem ("" when clean; free()).
 * Returns 0 when clean, CKPT_ECORRUPT when problems were found (the
 * error message counts them and gives the first; *problems has all),
 * or another error when the check could not run. */
int ckpt_verify(ckpt_manager *m, int64_t step, char **problems);

#ifdef __cplusplus
}
#endif
#endif /* CKPT_CKPT_H */
