/*
 * backend.h - the file operations under the store. The format (safetensors,
 * _METADATA, _CHECKPOINT_METADATA) and the commit protocol are written
 * once over this table; a backend says how a root's directories and files
 * are kept. backend_posix.c keeps them on a local filesystem; an object
 * store backend keeps them as objects (README "Storage backends").
 *
 * Handles: every directory and file is a small non-negative int the
 * backend hands out and takes back with close(); the format code never
 * looks inside one. posix's are file descriptors (openat relative to
 * them, O_NOFOLLOW on every name, so nothing escapes the root). Names are
 * single path components.
 *
 * Errors: the operations that take a ckd_err return 0 (or a handle) or a
 * negative CKPT_E* code with e set; the others follow the system call
 * convention (-1 with errno), so the format code names the failing
 * operation and file in its message (err_errno).
 *
 * Every operation runs on a worker under the requesting peer's file
 * identity (setfsuid/setfsgid/groups): posix lets the kernel check
 * permissions.
 */
#ifndef CKPTD_BACKEND_H
#define CKPTD_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common.h"

/* Capabilities a backend may have; the format code asks before use. */
#define STORE_BE_DIRECT 0x1     /* direct(): writes that bypass the page
                                 * cache (O_DIRECT) from aligned buffers */
#define STORE_BE_FDS 0x2        /* file handles are fds a client may be
                                 * handed (SCM_RIGHTS) and mmap */

struct store_list;              /* a listing of a directory, opaque */

/* Bytes [off, off + len) of a file. */
struct store_range {
	uint64_t off, len;
};

/* The ranges r[0..n) of the file open for reading f, for fetch. */
struct store_fetch {
	int f;
	const struct store_range *r;
	size_t n;
};

struct store_backend {
	const char *name;
	unsigned caps;                  /* STORE_BE_* */

	/* Open (creating it and missing parents with mode when create) the
	 * root named by path; the only operation that takes a path. */
	int (*open_root)(const char *path, int create, mode_t mode, int *dir,
	    ckd_err *e);
	/* The canonical name of the open root dir (posix: the absolute path
	 * it is found at now), into buf: 0, or a CKPT_E* code with e set. */
	int (*root_name)(int dir, char *buf, size_t len, ckd_err *e);
	/* 0 when the peer may create and remove entries in dir, -1 (errno)
	 * when not. */
	int (*writable)(int dir);

	/* ---- directories */
	/* Create dir/name with exactly mode and open it into *sub. */
	int (*mkdir)(int dir, const char *name, mode_t mode, int *sub,
	    ckd_err *e);
	/* Create dir/name without opening it: -1 (errno; EEXIST when it
	 * exists). */
	int (*make_dir)(int dir, const char *name, mode_t mode);
	/* Open directory dir/name: a handle, or -1 (errno; ENOTDIR/ELOOP
	 * when name is something else). */
	int (*open_dir)(int dir, const char *name);
	/* Status of dir/name without following it (-1, errno). */
	int (*stat)(int dir, const char *name, struct stat *st);
	/* Listing: next() gives one name at a time (1), 0 at the end, -1 on
	 * an error (errno); is_dir() says whether the last one is a
	 * directory. "." and ".." may be listed. */
	struct store_list *(*list_open)(int dir, ckd_err *e);
	int (*list_next)(struct store_list *l, const char **name);
	int (*list_is_dir)(struct store_list *l);
	void (*list_close)(struct store_list *l);
	/* Rename odir/oname to ndir/nname; with noreplace fail (EEXIST)
	 * when nname exists. -1, errno. */
	int (*rename)(int odir, const char *oname, int ndir,
	    const char *nname, int noreplace);
	/* Remove dir/name and everything below it, following nothing;
	 * absent is 0. */
	int (*remove_tree)(int dir, const char *name, ckd_err *e);
	/* Take the lock that marks a tmp dir as a live save's, held until
	 * the handle is closed and dropped when the process dies: 1 taken,
	 * 0 held by another, -1 error (errno). */
	int (*lock)(int dir);
	/* 1 when dir/name is still the object open as h. */
	int (*same)(int dir, const char *name, int h);
	/* Status of the directory or file open as h (-1, errno); a
	 * directory's st_dev/st_ino identify it while it is open. */
	int (*fstat)(int h, struct stat *st);

	/* ---- files */
	/* Create dir/name (exclusive) for writing with exactly mode. */
	int (*create)(int dir, const char *name, mode_t mode);
	/* Open dir/name for reading, refusing what is not a regular file
	 * (CKPT_ECORRUPT) without blocking on it; *st filled. */
	int (*open_read)(int dir, const char *name, struct stat *st,
	    ckd_err *e);
	int (*unlink)(int dir, const char *name);
	ssize_t (*read)(int f, void *buf, size_t len);
	/* Read exactly len bytes at off: 0, or -1 (errno; 0 at EOF). */
	int (*read_range)(int f, void *buf, size_t len, uint64_t off);
	ssize_t (*write)(int f, const void *buf, size_t len);
	ssize_t (*pwrite)(int f, const void *buf, size_t len, uint64_t off);
	ssize_t (*pwritev)(int f, const struct iovec *iov, int n,
	    uint64_t off);
	int (*truncate)(int f, uint64_t size);
	/* STORE_BE_DIRECT: turn direct writes on or off (-1, errno). */
	int (*direct)(int f, int on);
	/* Make the ranges of n files open for reading present in their
	 * handles, for a client that is handed them and maps them
	 * (STORE_BE_FDS): 0, or a CKPT_E* code with e set. A restore asks
	 * for the bytes of the tensors it hands out, nothing else, for all
	 * files of an item at once (the s3 backend keeps its GETs busy
	 * across them). NULL when a handle is the file itself (posix). The
	 * s3 backend reads only the size and the first 64 KiB at open_read;
	 * fetch, read and read_range GET the bytes asked for. */
	int (*fetch)(const struct store_fetch *files, size_t n, ckd_err *e);
	/* Hints: start writing back a range; a range will be read in order. */
	void (*writeback)(int f, uint64_t off, uint64_t len);
	void (*readahead)(int f, uint64_t off, uint64_t len);

	/* ---- both */
	int (*fsync)(int h);            /* durable: data, size, entries */
	int (*close)(int h);
};

extern const struct store_backend backend_posix;
/* Roots s3://bucket/prefix (backend_s3.c, in the ckptds3 library with the
 * S3 client; store_backend_for knows it only in a program linked with it). */
extern const struct store_backend backend_s3;

/* The names the commit protocol gives directories (stepdir.c): a step in
 * progress is <name>.ckptd-tmp (CKPT_TMP_SUFFIX), one being deleted
 * .<name>.ckptd-del. An object store reads them as markers (backend_s3.c). */
#define STORE_DEL_SUFFIX ".ckptd-del"

/* The backend of a root, decided from its name (backend.c): an absolute
 * path is posix's. NULL with e set (CKPT_EINVAL naming the scheme) for a
 * name no backend of this build keeps. Each root carries the result
 * (struct root.be) and every store_* function takes it from its caller:
 * nothing reads a process-wide backend. */
const struct store_backend *store_backend_for(const char *root, ckd_err *e);

#endif
