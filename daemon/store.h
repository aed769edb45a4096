/*
 * store.h - the on-disk format of a checkpoint root (see README "On-disk
 * format"). Pure file operations on directory fds; no globals, no locks.
 *
 * Every function runs on a worker thread whose filesystem identity
 * (setfsuid/setfsgid/groups) is already the requesting peer's, so the
 * kernel enforces permissions. Names passed in are single path components
 * validated with store_valid_component(); every open uses O_NOFOLLOW and
 * O_CLOEXEC relative to a directory fd, so nothing escapes the root.
 *
 * Layout of one step:
 *   <root>/<name>/_CHECKPOINT_METADATA
 *   <root>/<name>/<item>/_METADATA + data-NNNNN.safetensors   (tree items)
 *   <root>/<name>/<item>/metadata                            (JSON items)
 *   <root>/<name>/<item>/proto.pbtxt                         (PROTO items)
 *   <root>/<name>.ckptd-tmp/ ...                              (in progress)
 *   <root>/metadata/_ROOT_METADATA
 */
#ifndef CKPTD_STORE_H
#define CKPTD_STORE_H

#include <pthread.h>
#include <sys/types.h>
#include <stdint.h>
#include <stddef.h>

#include "common.h"
#include "ckpt.pb-c.h"

#define STORE_TREE_METADATA "_METADATA"
#define STORE_STEP_METADATA "_CHECKPOINT_METADATA"
#define STORE_JSON_FILE "metadata"
#define STORE_PROTO_FILE "proto.pbtxt"
#define STORE_ROOT_META_DIR "metadata"
#define STORE_ROOT_META_FILE "_ROOT_METADATA"
/* Version of the files ckptd writes ("version" in _METADATA and in the
 * "ckptd" section of _CHECKPOINT_METADATA). Readers refuse a newer one
 * with CKPT_EVERSION: it was written by a newer ckptd. */
#define STORE_FORMAT_VERSION 1
/* Data of every tensor starts at a multiple of this within the file; the
 * header is padded so the data section starts on a page boundary. */
#define STORE_TENSOR_ALIGN 64
#define STORE_PAGE 4096

/* ---- names ---------------------------------------------------------------- */

struct store_naming {
	char prefix[128];   /* "" for none; else "<prefix>_<step>" */
	unsigned fixed_len; /* zero-pad the step to this many digits (0: none) */
};

/* 1 when s is a usable single path component for an item/prefix/file:
 * non-empty, <= 255 bytes, no '/', no NUL, not "." or "..", does not end in
 * CKPT_TMP_SUFFIX. */
int store_valid_component(const char *s);
/* Format a step directory name. Returns 0 or CKPT_EINVAL (buffer short). */
int store_step_name(const struct store_naming *nm, uint64_t step, char *buf,
    size_t len);
/* Parse a directory name under the naming; 0 and *step on match, -1 when
 * the name is not a step directory of this naming (tmp dirs included). */
int store_parse_step_name(const struct store_naming *nm, const char *name,
    uint64_t *step);

/* ---- roots ------------------------------------------------------------------ */

/* Open (creating it and missing parents with `mode` when create) the
 * absolute directory `path`; *fd is O_DIRECTORY|O_CLOEXEC. Errors:
 * CKPT_ENOTDIR (missing, !create), CKPT_EACCES, CKPT_EINVAL (relative). */
int store_open_root(const char *path, int create, mode_t mode, int *fd,
    ckd_err *e);

struct store_entry {
	uint64_t step;
	char name[256];
	int tmp;            /* 1: "<name>.ckptd-tmp" left from an unfinished save */
};
/* List the step directories (and leftover tmp dirs) of a root, sorted by
 * step (committed before tmp for equal steps). *out is malloc'ed. Entries
 * that are not directories, or do not parse under nm, are ignored. */
int store_scan(int rootfd, const struct store_naming *nm,
    struct store_entry **out, size_t *n, ckd_err *e);

/* Remove dirfd/name recursively, never following symlinks. ENOENT is 0. */
int store_remove_tree(int dirfd, const char *name, ckd_err *e);

/* ---- writing a step ------------------------------------------------------------ */

/* Start writing step dir `name`: CKPT_EEXIST when <name> exists; removes a
 * leftover <name>.ckptd-tmp (CKPT_EBUSY when a live save holds it); creates
 * it with dirmode; *tmpfd opened and locked (flock) as the save's own until
 * it is closed. */
int store_begin(int rootfd, const char *name, mode_t dirmode, int *tmpfd,
    ckd_err *e);
/* Create and open an item directory inside the tmp dir. */
int store_mkdir_item(int tmpfd, const char *item, mode_t dirmode,
    int *itemfd, ckd_err *e);

/* A source mapping of a file (a client's staging memfd) whose holes must
 * not be read through the mapping: reading a hole of a shmem mapping
 * allocates a page, so a client's sparse buffer would grow the daemon.
 * The writers find holes with lseek(SEEK_DATA / SEEK_HOLE) on fd and
 * write (and hash) zeros for them without touching the mapping. The runs
 * found are shared by every writer of the source (under lock): a
 * SEEK_HOLE walks the page cache up to the next hole, so a fully
 * populated buffer is walked once per save, not once per file. */
struct store_runs {
	uint64_t data_lo, data_hi;      /* a run known to hold data */
	uint64_t hole_lo, hole_hi;      /* a run known to be a hole */
};
struct store_src {
	int fd;
	const char *base;       /* mapping of fd from offset 0; NULL: unused */
	pthread_mutex_t lock;   /* known */
	struct store_runs known;
};
void store_src_init(struct store_src *s, int fd, const void *base);
void store_src_destroy(struct store_src *s);

struct store_tensor {
	const char *name;       /* safetensors tensor name (unique in the file) */
	Ckpt__Dtype dtype;
	size_t ndim;
	const uint64_t *shape;
	const void *src;        /* nbytes bytes to write (may be NULL if 0) */
	uint64_t nbytes;
	uint64_t offset;        /* out: absolute offset of the data in the file */
	uint64_t xxh3;          /* out: XXH3-64 of the bytes */
	struct store_src *hsrc;         /* src lies in this mapping (the same
	                                 * for every tensor of a call), or NULL */
};

/* Write the complete safetensors file dirfd/fname (O_EXCL, mode filemode):
 * 8-byte LE header length, JSON header {"__metadata__":{"format":"pt"},
 * name: {dtype, shape, data_offsets}} padded with spaces so the data section
 * starts at a multiple of STORE_PAGE, each tensor at a multiple of
 * STORE_TENSOR_ALIGN (zero padding), then fsync. Fills offset and xxh3.
 * On error the partial file is unlinked. Errors: CKPT_ENOSPC, CKPT_EIO,
 * CKPT_EACCES. */
int store_write_safetensors(int dirfd, const char *fname, mode_t filemode,
    struct store_tensor *t, size_t n, ckd_err *e);

/* Write <itemfd>/_METADATA for a tree item. Each leaf of `item` carries
 * path, kind, scalar value, tag, and for arrays dtype, shape, nbytes, file,
 * tensor and xxh3 (already filled by the caller). fsyncs. */
int store_write_tree_metadata(int itemfd, const Ckpt__Item *item,
    mode_t filemode, ckd_err *e);
/* Write a small file (JSON item "metadata", "proto.pbtxt", root
 * metadata...) with O_EXCL and fsync. */
int store_write_file(int dirfd, const char *fname, const void *data,
    size_t len, mode_t filemode, ckd_err *e);

struct store_step_meta {
	int64_t init_ns, commit_ns;
	char *metrics_json;     /* JSON object text, or NULL */
	char *custom_json;      /* JSON object text, or NULL */
	size_t nitems;
	char **item_names;
	Ckpt__Handler *handlers;
	uint64_t bytes;         /* total bytes of array data */
	const char *metrics_item; /* write: the item holding the step's
				   metrics, which Orbax lists among
				   item_handlers (a Json item), or NULL */
};
/* Write <stepfd>/_CHECKPOINT_METADATA:
 * {"item_handlers": {"<item>": "<orbax handler type string>", ...},
 *  "metrics": {...}, "performance_metrics": {}, "init_timestamp_nsecs": N,
 *  "commit_timestamp_nsecs": N, "custom_metadata": {...},
 *  "ckptd": {"version": 1, "bytes": N, "handlers": {"<item>": "STANDARD"}}}
 * and fsync. With metrics_item, that item is in item_handlers too (not in
 * ckptd.handlers: it is no item of the save). */
int store_write_step_meta(int stepfd, const struct store_step_meta *m,
    mode_t filemode, ckd_err *e);
/* Parse it back (strictly: wrong types are CKPT_ECORRUPT). */
int store_read_step_meta(int stepfd, struct store_step_meta *m, ckd_err *e);
void store_step_meta_free(struct store_step_meta *m);

/* fsync a directory fd. */
int store_fsync_dir(int dirfd, ckd_err *e);
/* Commit: fsync tmpfd, rename <name>.ckptd-tmp -> <name> (RENAME_NOREPLACE),
 * fsync rootfd. Item dirs and files must already be fsynced. */
int store_commit(int rootfd, const char *name, int tmpfd, ckd_err *e);
/* ---- batched durability ---------------------------------------------------------
 * The *_nosync writers below behave like their namesakes but, instead of
 * fsync + close, append the open fd to a batch. store_sync_run() then starts
 * writeback of every entry, fsyncs every entry in the order added (files
 * first, then the directories holding them) and closes the fds the batch
 * owns. Every entry is fsynced: a step is as durable as with the unbatched
 * calls, but the journal commits of one save are shared. A batch is used by
 * one thread at a time. */
#define STORE_SYNC_MAX 65536
struct store_sync_ent {
	int fd;
	int own;                /* 1: the batch closes it */
};
struct store_sync {
	struct store_sync_ent *v;
	size_t n, cap;
};
void store_sync_init(struct store_sync *b);
/* Append fd; own: close it after the sync (and on store_sync_free). On
 * failure (CKPT_ENOMEM, or more than STORE_SYNC_MAX entries) an owned fd
 * is closed. */
int store_sync_add(struct store_sync *b, int fd, int own, ckd_err *e);
/* Sync every entry as above and close the owned ones; the batch is empty
 * afterwards (even on error) and may be reused. Returns the first error. */
int store_sync_run(struct store_sync *b, ckd_err *e);
/* Close the owned fds without syncing (after a failure) and free. */
void store_sync_free(struct store_sync *b);

int store_write_file_nosync(int dirfd, const char *fname, const void *data,
    size_t len, mode_t filemode, struct store_sync *b, ckd_err *e);
int store_write_safetensors_nosync(int dirfd, const char *fname,
    mode_t filemode, struct store_tensor *t, size_t n, struct store_sync *b,
    ckd_err *e);
int store_write_tree_metadata_nosync(int itemfd, const Ckpt__Item *item,
    mode_t filemode, struct store_sync *b, ckd_err *e);
int store_write_step_meta_nosync(int stepfd, const struct store_step_meta *m,
    mode_t filemode, struct store_sync *b, ckd_err *e);
/* store_commit without the fsync of the tmp dir, which the caller has
 * already fsynced (e.g. as the last entry of a batch, after every file
 * and item directory in it): rename (RENAME_NOREPLACE), fsync rootfd. */
int store_commit_synced(int rootfd, const char *name, ckd_err *e);
/* Remove <name>.ckptd-tmp (after a failed save). */
int store_abort(int rootfd, const char *name, ckd_err *e);

/* Delete committed step <name>: when subdir is non-NULL, rename it to
 * <root>/<subdir>/<name> (creating subdir), else remove it. The step is
 * first renamed to a hidden ".<name>.ckptd-del" so it vanishes atomically
 * from listings, then removed. Errors: CKPT_ENOTFOUND, CKPT_EACCES. */
int store_delete_step(int rootfd, const char *name, const char *subdir,
    ckd_err *e);
/* Remove every leftover *.ckptd-tmp and .*.ckptd-del directory (of any
 * naming) that no live save owns, and the *.orbax-checkpoint-tmp[-<digits>]
 * ones an interrupted Orbax save left (cleanup_tmp_directories). */
int store_cleanup_tmp(int rootfd, ckd_err *e);

/* Leftovers of a crash. A save owns its <name>.ckptd-tmp through an
 * exclusive flock on the directory (store_begin takes it; it lasts until
 * the tmp fd is closed, and dies with the process), so a tmp dir that is
 * not locked belongs to no live save of any daemon. This removes:
 *  - the unlocked <name>.ckptd-tmp of steps of naming nm (returned in
 *    *out: the saves a crash interrupted, with the tmp dir's mtime);
 *  - with STORE_LEFTOVER_ANY_NAMING, those of every naming too;
 *  - every unlocked hidden .<name>.ckptd-del (a delete already decided);
 *  - with STORE_LEFTOVER_ORBAX, Orbax's <name>.orbax-checkpoint-tmp[-<N>]
 *    (Orbax's cleanup_tmp_directories: the caller says none is live).
 * out may be NULL; *out is malloc'ed. An entry that cannot be removed
 * (another user's) does not stop the others: the first error is
 * returned after the whole pass, with *out filled. */
#define STORE_LEFTOVER_ANY_NAMING 1
#define STORE_LEFTOVER_ORBAX 2
struct store_leftover {
	uint64_t step;
	char name[256];         /* the step directory's name */
	int64_t mtime_ns;       /* last change of the tmp dir */
};
int store_collect_leftovers(int rootfd, const struct store_naming *nm,
    int flags, struct store_leftover **out, size_t *nout, ckd_err *e);

/* ---- reading a step ------------------------------------------------------------ */

/* Read and validate <itemfd>/_METADATA into a malloc'ed Ckpt__Item whose
 * leaves carry everything written above (offset 0, fd_index 0). The file
 * is untrusted: dtype, ndim, nbytes overflow, file and tensor names are
 * checked; problems are CKPT_ECORRUPT naming the file. Free with
 * store_item_free(). name/handler are set by the caller. */
int store_read_tree_metadata(int itemfd, Ckpt__Item **out, ckd_err *e);
/* Read a whole small file (<= maxlen) into a NUL-terminated malloc'ed
 * buffer. CKPT_ENOTFOUND when absent, CKPT_ETOOBIG when larger. */
int store_read_file(int dirfd, const char *fname, size_t maxlen,
    char **buf, size_t *len, ckd_err *e);
/* Free an item built by store_read_tree_metadata (or by hand with malloc:
 * every string and array of every leaf, then the leaves, then the item). */
void store_item_free(Ckpt__Item *item);

/* For every array leaf of item: open its file (once per distinct file,
 * O_RDONLY|O_NOFOLLOW|O_CLOEXEC relative to itemfd), parse the safetensors
 * header (bounded: header <= 100 MiB, data within file size), find the
 * leaf's tensor, check dtype/shape/nbytes agree with the leaf, and set
 * leaf->offset (absolute) and leaf->fd_index = fd_base + index in fds[].
 * Appends opened fds to fds[*nfds..maxfds). Errors: CKPT_ECORRUPT,
 * CKPT_ETOOBIG (more files than maxfds), CKPT_EACCES, CKPT_EIO. On error
 * the fds it opened are closed and *nfds is unchanged. */
int store_open_item_files(int itemfd, Ckpt__Item *item, int *fds,
    size_t *nfds, size_t maxfds, ckd_err *e);

/* Read every array of item (after store_open_item_files) and compare its
 * XXH3 with the stored one. Problems are reported through cb (one call per
 * bad leaf, with the leaf's tensor name); returns 0 when all match,
 * CKPT_ECORRUPT when any did not, another code on I/O errors. */
typedef void (*store_problem_cb)(void *arg, const char *tensor,
    const char *msg);
int store_verify_item(const Ckpt__Item *item, const int *fds,
    store_problem_cb cb, void *arg, ckd_err *e);

/* Orbax's handler type string for _CHECKPOINT_METADATA.item_handlers. */
const char *store_handler_typestr(Ckpt__Handler h);
/* Parse either our short name ("STANDARD") or Orbax's type string. */
Ckpt__Handler store_handler_parse(const char *s);
/* Bytes per element of a dtype; 0 for invalid. safetensors name; parse. */
size_t store_dtype_size(Ckpt__Dtype d);
/* 1 for tensor names safetensors or the writer keep for themselves
 * ("__metadata__", padding tensors). */
int store_tensor_name_reserved(const char *s);
const char *store_dtype_name(Ckpt__Dtype d);
Ckpt__Dtype store_dtype_parse(const char *s);

#endif
