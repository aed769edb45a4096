/*
 * store.c - the on-disk format of a checkpoint root (contract: store.h).
 *
 * Everything here is a file operation relative to a directory fd, with
 * O_NOFOLLOW|O_CLOEXEC (or AT_SYMLINK_NOFOLLOW) on every name, so a symlink
 * planted under a root is never followed. Only store_open_root() resolves a
 * user-given path, and it may follow symlinks in it (the user's choice).
 * Files and directories created here get exactly the mode asked for
 * (fchmod after creation, so the daemon's umask does not interfere).
 *
 * ---- safetensors files (data-NNNNN.safetensors) ----------------------------
 *   u64 LE N | N bytes JSON header, padded with spaces so that 8+N is a
 *   multiple of STORE_PAGE | data section.
 *   Header: {"__metadata__":{"format":"pt"},
 *            "<tensor>":{"dtype":"F32","shape":[2,3],"data_offsets":[b,e]},...}
 *   with offsets relative to the start of the data section. Every tensor
 *   begins at a multiple of STORE_TENSOR_ALIGN; a tensor of at least
 *   STORE_DIO_TENSOR bytes whose source is 64-byte aligned begins at the
 *   same offset within a page as its source (for O_DIRECT). The reference
 *   safetensors reader requires the tensors to cover the data section
 *   without holes, so each gap (1..4095 zero bytes) is itself declared as a
 *   U8 tensor
 *   named "__ckptd_pad_<k>__" (<k> = index of the tensor after the gap).
 *   Names starting with "__ckptd_pad_" and "__metadata__" are reserved.
 *
 * ---- _METADATA (one tree item) ------------------------------------------------
 *   {"format": "ckptd-tree", "version": 1, "leaves": [LEAF, ...]}
 *   LEAF is an object with
 *     "path": [ELEM, ...]    from the root of the tree; [] for a bare leaf
 *        ELEM: {"kind": "dict", "key": "<string>"}
 *            | {"kind": "list", "index": N} | {"kind": "tuple", "index": N}
 *     "kind": "array" | "int" | "float" | "bool" | "str" | "none"
 *           | "empty_dict" | "empty_list" | "empty_tuple"
 *     "tag": "<string, <= 64 bytes>"            optional, any kind
 *   and, by kind:
 *     array: "dtype": "F32" (safetensors name), "shape": [2, 3],
 *            "nbytes": 24 (= product(shape) * itemsize),
 *            "file": "data-00000.safetensors", "tensor": "<name in file>",
 *            "xxh3": "<16 lowercase hex digits, XXH3-64 of the bytes>"
 *     int:   "value": integer (full int64 range)
 *     float: "value": number (printed with 17 significant digits, so it
 *            reads back bit-exact) or one of the strings "inf", "-inf",
 *            "nan", "-nan" (JSON has no literal for them)
 *     bool:  "value": true | false
 *     str:   "value": "<string>"
 *   Unknown members are ignored (forward compatibility); members listed
 *   above must have the stated types. Limits checked on read and on write:
 *   ndim <= CKPT_WIRE_MAX_NDIM, path depth <= STORE_MAX_DEPTH, file is a valid
 *   component, tensor name 1..1024 bytes and not reserved, file <= 256 MiB.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>
#if defined(__x86_64__)
/* XXH3 through libxxhash's run-time dispatch (AVX2/AVX-512 when present) */
#include <xxh_x86dispatch.h>
#endif

#include "store.h"

/* Write/hash granularity: small enough that a chunk hashed is still in the
 * CPU cache when write() copies it. */
#define STORE_CHUNK (2u << 20)
/* Start writeback after this many bytes so the final fsync is short. */
#define STORE_KICK (64u << 20)
/* Safetensors files of at least this size are written with O_DIRECT
 * (smaller ones, and filesystems that refuse O_DIRECT, go through the page
 * cache). */
#define STORE_DIO_MIN (1u << 20)
/* O_DIRECT: hash this much of a tensor, then write it from the source. */
#define STORE_DIO_CHUNK (8u << 20)
/* O_DIRECT: the page-aligned bounce buffer for the header, padding, small
 * tensors, the unaligned edges of large ones and tensors whose source is
 * not congruent with their file offset modulo STORE_PAGE. */
#define STORE_BOUNCE (4u << 20)
/* Tensors at least this large are laid out at the file offset congruent to
 * their source address modulo STORE_PAGE (at most STORE_PAGE - 1 extra
 * padding bytes), so that O_DIRECT writes them straight from the source. */
#define STORE_DIO_TENSOR (256u << 10)
#define STORE_IOV 512
#define STORE_MAX_HEADER (100u << 20)
#define STORE_MAX_TREE_META (256u << 20)
#define STORE_MAX_STEP_META (64u << 20)
#define STORE_MAX_DEPTH 1024
#define STORE_MAX_TAG CKPT_MAX_TAG   /* ckpt_limits.h */
#define STORE_MAX_TENSOR_NAME 1024
#define STORE_MAX_ITEMS 4096
#define STORE_RM_DEPTH 64
#define STORE_DEL_SUFFIX ".ckptd-del"
#define STORE_ORBAX_TMP ".orbax-checkpoint-tmp"
#define STORE_PAD_PREFIX "__ckptd_pad_"

#define O_DIRFLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

/* ---- small helpers ---------------------------------------------------------- */

static int
ends_with(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

/* Open dirfd/name read-only as a regular file. The name is untrusted: a
 * FIFO, device or socket in its place must never block the worker, so
 * the open is non-blocking and O_NONBLOCK is cleared only once fstat says
 * the file is regular. Returns the fd, or a negative CKPT_E* code with e
 * set (CKPT_ECORRUPT for a file that is not regular). */
static int
open_regular(int dirfd, const char *name, struct stat *st, ckd_err *e)
{
	int fd, r;

	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC |
	    O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return err_errno(e, errno, "open %s", name);
	if (fstat(fd, st) != 0) {
		r = err_errno(e, errno, "stat %s", name);
		goto fail;
	}
	if (!S_ISREG(st->st_mode)) {
		r = err_set(e, CKPT_ECORRUPT, "%s: not a regular file", name);
		goto fail;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
		r = err_errno(e, errno, "fcntl %s", name);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return r;
}

/* Give a freshly created file or directory exactly `mode` (keeping a
 * setgid bit inherited from the parent directory). Best effort. */
static void
set_mode(int fd, mode_t mode)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return;
	mode &= 0777;
	if ((st.st_mode & 0777) != mode)
		(void)fchmod(fd, mode | (st.st_mode & S_ISGID));
}

/* mkdirat + open without following symlinks; *fd is O_DIRECTORY. */
static int
mkdir_open(int dirfd, const char *name, mode_t mode, int *fd, ckd_err *e)
{
	int dfd;

	if (mkdirat(dirfd, name, mode) != 0)
		return err_errno(e, errno, "mkdir %s", name);
	if ((dfd = openat(dirfd, name, O_DIRFLAGS)) < 0)
		return err_errno(e, errno, "open %s", name);
	set_mode(dfd, mode);
	*fd = dfd;
	return 0;
}

int
store_valid_component(const char *s)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > 255)
		return 0;
	if (strchr(s, '/') != NULL)
		return 0;
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return 0;
	if (ends_with(s, CKPT_TMP_SUFFIX))
		return 0;
	return 1;
}

int
store_tensor_name_reserved(const char *s)
{
	return strcmp(s, "__metadata__") == 0 ||
	    strncmp(s, STORE_PAD_PREFIX, strlen(STORE_PAD_PREFIX)) == 0;
}

static int
valid_tensor_name(const char *s)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > STORE_MAX_TENSOR_NAME)
		return 0;
	return !store_tensor_name_reserved(s);
}

/* ---- dtypes and handlers -------------------------------------------------------- */

static const struct {
	const char *name;
	size_t size;
} dtypes[] = {
	[CKPT__DTYPE__DTYPE_BOOL] = { "BOOL", 1 },
	[CKPT__DTYPE__DTYPE_U8] = { "U8", 1 },
	[CKPT__DTYPE__DTYPE_I8] = { "I8", 1 },
	[CKPT__DTYPE__DTYPE_U16] = { "U16", 2 },
	[CKPT__DTYPE__DTYPE_I16] = { "I16", 2 },
	[CKPT__DTYPE__DTYPE_F16] = { "F16", 2 },
	[CKPT__DTYPE__DTYPE_BF16] = { "BF16", 2 },
	[CKPT__DTYPE__DTYPE_U32] = { "U32", 4 },
	[CKPT__DTYPE__DTYPE_I32] = { "I32", 4 },
	[CKPT__DTYPE__DTYPE_F32] = { "F32", 4 },
	[CKPT__DTYPE__DTYPE_U64] = { "U64", 8 },
	[CKPT__DTYPE__DTYPE_I64] = { "I64", 8 },
	[CKPT__DTYPE__DTYPE_F64] = { "F64", 8 },
	[CKPT__DTYPE__DTYPE_F8_E4M3] = { "F8_E4M3", 1 },
	[CKPT__DTYPE__DTYPE_F8_E5M2] = { "F8_E5M2", 1 },
};
#define NDTYPES (sizeof(dtypes) / sizeof(dtypes[0]))

size_t
store_dtype_size(Ckpt__Dtype d)
{
	if ((unsigned)d >= NDTYPES || dtypes[d].name == NULL)
		return 0;
	return dtypes[d].size;
}

const char *
store_dtype_name(Ckpt__Dtype d)
{
	if ((unsigned)d >= NDTYPES)
		return NULL;
	return dtypes[d].name;
}

Ckpt__Dtype
store_dtype_parse(const char *s)
{
	size_t i;

	if (s == NULL)
		return CKPT__DTYPE__DTYPE_INVALID;
	for (i = 1; i < NDTYPES; i++)
		if (dtypes[i].name != NULL && strcmp(dtypes[i].name, s) == 0)
			return (Ckpt__Dtype)i;
	return CKPT__DTYPE__DTYPE_INVALID;
}

#define ORBAX_HANDLERS "orbax.checkpoint._src.handlers."
static const struct {
	Ckpt__Handler h;
	const char *shortname;
	const char *typestr;
} handlers[] = {
	{ CKPT__HANDLER__HANDLER_STANDARD, "STANDARD", ORBAX_HANDLERS
	  "standard_checkpoint_handler.StandardCheckpointHandler" },
	{ CKPT__HANDLER__HANDLER_PYTREE, "PYTREE", ORBAX_HANDLERS
	  "pytree_checkpoint_handler.PyTreeCheckpointHandler" },
	{ CKPT__HANDLER__HANDLER_JSON, "JSON", ORBAX_HANDLERS
	  "json_checkpoint_handler.JsonCheckpointHandler" },
	{ CKPT__HANDLER__HANDLER_ARRAY, "ARRAY", ORBAX_HANDLERS
	  "array_checkpoint_handler.ArrayCheckpointHandler" },
	{ CKPT__HANDLER__HANDLER_PROTO, "PROTO", ORBAX_HANDLERS
	  "proto_checkpoint_handler.ProtoCheckpointHandler" },
};
#define NHANDLERS (sizeof(handlers) / sizeof(handlers[0]))

/* NULL for HANDLER_UNSPECIFIED or an unknown value. */
const char *
store_handler_typestr(Ckpt__Handler h)
{
	size_t i;

	for (i = 0; i < NHANDLERS; i++)
		if (handlers[i].h == h)
			return handlers[i].typestr;
	return NULL;
}

static const char *
handler_shortname(Ckpt__Handler h)
{
	size_t i;

	for (i = 0; i < NHANDLERS; i++)
		if (handlers[i].h == h)
			return handlers[i].shortname;
	return NULL;
}

/* Accepts the short name (any case), the full Orbax type string, or any
 * dotted path ending in the Orbax class name (older module layouts).
 * HANDLER_UNSPECIFIED when unknown. */
Ckpt__Handler
store_handler_parse(const char *s)
{
	const char *cls, *dot;
	size_t i;

	if (s == NULL)
		return CKPT__HANDLER__HANDLER_UNSPECIFIED;
	for (i = 0; i < NHANDLERS; i++)
		if (strcasecmp(s, handlers[i].shortname) == 0 ||
		    strcmp(s, handlers[i].typestr) == 0)
			return handlers[i].h;
	cls = (dot = strrchr(s, '.')) != NULL ? dot + 1 : s;
	for (i = 0; i < NHANDLERS; i++) {
		dot = strrchr(handlers[i].typestr, '.');
		if (strcmp(cls, dot + 1) == 0)
			return handlers[i].h;
	}
	return CKPT__HANDLER__HANDLER_UNSPECIFIED;
}

/* ---- names ---------------------------------------------------------------------- */

int
store_step_name(const struct store_naming *nm, uint64_t step, char *buf,
    size_t len)
{
	int r;

	if (nm->fixed_len > 255 || memchr(nm->prefix, '\0',
	    sizeof(nm->prefix)) == NULL)
		return CKPT_EINVAL;
	if (nm->prefix[0] != '\0')
		r = snprintf(buf, len, "%s_%0*" PRIu64, nm->prefix,
		    (int)nm->fixed_len, step);
	else
		r = snprintf(buf, len, "%0*" PRIu64, (int)nm->fixed_len, step);
	if (r < 0 || (size_t)r >= len)
		return CKPT_EINVAL;
	return 0;
}

/* Only the canonical spelling matches (the one store_step_name() makes),
 * so that a step number always names exactly one directory. */
int
store_parse_step_name(const struct store_naming *nm, const char *name,
    uint64_t *step)
{
	const char *p = name;
	size_t pl = strnlen(nm->prefix, sizeof(nm->prefix));
	uint64_t v = 0;
	char buf[512];

	if (pl > 0) {
		if (strncmp(name, nm->prefix, pl) != 0 || name[pl] != '_')
			return -1;
		p = name + pl + 1;
	}
	if (*p == '\0')
		return -1;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (store_step_name(nm, v, buf, sizeof(buf)) != 0 ||
	    strcmp(buf, name) != 0)
		return -1;
	*step = v;
	return 0;
}

/* ---- roots --------------------------------------------------------------------- */

/* fsync the directory holding absolute path p (made by mkdir just now). */
static int
fsync_parent(char *p, ckd_err *e)
{
	char *slash = strrchr(p, '/'), c;
	int fd, r = 0;

	c = slash[1];
	slash[1] = '\0';
	if ((fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    fsync(fd) != 0)
		r = err_errno(e, errno, "fsync %s", p);
	if (fd >= 0)
		close(fd);
	slash[1] = c;
	return r;
}

int
store_open_root(const char *path, int create, mode_t mode, int *fd,
    ckd_err *e)
{
	char *p = NULL, *s;
	int dfd, r = 0;

	if (path == NULL || path[0] != '/')
		return err_set(e, CKPT_EINVAL, "root must be an absolute path: "
		    "%s", path != NULL ? path : "(null)");
	if (strlen(path) >= PATH_MAX)
		return err_set(e, CKPT_EINVAL, "root path too long");
	if (create) {
		if ((p = strdup(path)) == NULL)
			return err_set(e, CKPT_ENOMEM, "out of memory");
		/* mkdir -p: every prefix, then the path itself. */
		for (s = p + 1;; s++) {
			if (*s != '/' && *s != '\0')
				continue;
			char c = *s;
			*s = '\0';
			if (mkdir(p, mode) == 0) {
				/* The new entry must survive a power loss
				 * before any step in it is called durable. */
				if ((r = fsync_parent(p, e)) != 0) {
					free(p);
					return r;
				}
			} else if (errno != EEXIST) {
				r = err_errno(e, errno, "create %s", p);
				if (r == CKPT_ENOTFOUND)
					r = err_set(e, CKPT_ENOTDIR,
					    "cannot create %s", p);
				free(p);
				return r;
			}
			*s = c;
			if (c == '\0')
				break;
			while (s[1] == '/')
				s++;
		}
		free(p);
	}
	if ((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return err_set(e, CKPT_ENOTDIR, "%s: %s", path,
			    errno == ENOENT ? "no such directory" :
			    "not a directory");
		return err_errno(e, errno, "open %s", path);
	}
	*fd = dfd;
	return 0;
}

static int
is_dir_at(int dirfd, const struct dirent *de)
{
	struct stat st;

	if (de->d_type == DT_DIR)
		return 1;
	if (de->d_type != DT_UNKNOWN)
		return 0;
	if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return 0;
	return S_ISDIR(st.st_mode);
}

/* A DIR* over a new open of dirfd (so dirfd's own offset is untouched). */
static DIR *
opendir_at(int dirfd, const char *name, ckd_err *e)
{
	int fd;
	DIR *d;

	if ((fd = openat(dirfd, name, O_DIRFLAGS)) < 0) {
		err_errno(e, errno, "open %s", name);
		return NULL;
	}
	if ((d = fdopendir(fd)) == NULL) {
		err_errno(e, errno, "opendir %s", name);
		close(fd);
	}
	return d;
}

static int
entry_cmp(const void *a, const void *b)
{
	const struct store_entry *x = a, *y = b;

	if (x->step != y->step)
		return x->step < y->step ? -1 : 1;
	return x->tmp - y->tmp;
}

int
store_scan(int rootfd, const struct store_naming *nm,
    struct store_entry **out, size_t *n, ckd_err *e)
{
	struct store_entry *v = NULL, *nv;
	size_t len = 0, cap = 0, l;
	struct dirent *de;
	char base[256];
	uint64_t step;
	int tmp, r = 0;
	DIR *d;

	*out = NULL;
	*n = 0;
	if ((d = opendir_at(rootfd, ".", e)) == NULL)
		return e != NULL ? e->code : CKPT_EIO;
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL) {
			if (errno != 0)
				r = err_errno(e, errno, "read root directory");
			break;
		}
		l = strlen(de->d_name);
		if (l >= sizeof(base))
			continue;
		memcpy(base, de->d_name, l + 1);
		tmp = 0;
		if (ends_with(base, CKPT_TMP_SUFFIX)) {
			base[l - strlen(CKPT_TMP_SUFFIX)] = '\0';
			tmp = 1;
		}
		if (store_parse_step_name(nm, base, &step) != 0)
			continue;
		if (!is_dir_at(dirfd(d), de))
			continue;
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				break;
			}
			v = nv;
		}
		v[len].step = step;
		v[len].tmp = tmp;
		memcpy(v[len].name, base, strlen(base) + 1);
		len++;
	}
	closedir(d);
	if (r != 0) {
		free(v);
		return r;
	}
	if (len > 0)
		qsort(v, len, sizeof(*v), entry_cmp);
	*out = v;
	*n = len;
	return 0;
}

static int
remove_at(int dirfd, const char *name, int depth, ckd_err *e)
{
	struct dirent *de;
	struct stat st;
	int fd, r = 0, pass, removed;
	DIR *d;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno == ENOENT)
			return 0;
		return err_errno(e, errno, "stat %s", name);
	}
	if (!S_ISDIR(st.st_mode)) {
unlink_it:
		if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT)
			return err_errno(e, errno, "unlink %s", name);
		return 0;
	}
	if (depth >= STORE_RM_DEPTH)
		return err_set(e, CKPT_EIO, "remove %s: directories nested "
		    "too deeply", name);
	if ((fd = openat(dirfd, name, O_DIRFLAGS)) < 0) {
		if (errno == ENOENT)
			return 0;
		if (errno == ELOOP || errno == ENOTDIR)
			goto unlink_it;   /* replaced by a non-directory */
		return err_errno(e, errno, "open %s", name);
	}
	if ((d = fdopendir(fd)) == NULL) {
		r = err_errno(e, errno, "opendir %s", name);
		close(fd);
		return r;
	}
	/* Removing while reading may make readdir skip entries on some
	 * filesystems: repeat until a pass finds nothing. */
	for (pass = 0; pass < 8; pass++) {
		removed = 0;
		rewinddir(d);
		while (r == 0) {
			errno = 0;
			if ((de = readdir(d)) == NULL) {
				if (errno != 0)
					r = err_errno(e, errno, "read %s", name);
				break;
			}
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			r = remove_at(fd, de->d_name, depth + 1, e);
			removed++;
		}
		if (r != 0 || removed == 0)
			break;
	}
	closedir(d);
	if (r != 0)
		return r;
	if (unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
		return err_errno(e, errno, "rmdir %s", name);
	return 0;
}

int
store_remove_tree(int dirfd, const char *name, ckd_err *e)
{
	if (name == NULL || name[0] == '\0' || strchr(name, '/') != NULL ||
	    strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return err_set(e, CKPT_EINVAL, "bad name to remove: %s",
		    name != NULL ? name : "(null)");
	return remove_at(dirfd, name, 0, e);
}

/* ---- writing a step ------------------------------------------------------------- */

static int
tmp_name(const char *name, char *buf, size_t len, ckd_err *e)
{
	if (!store_valid_component(name))
		return err_set(e, CKPT_EINVAL, "invalid step name: %s",
		    name != NULL ? name : "(null)");
	if ((size_t)snprintf(buf, len, "%s%s", name, CKPT_TMP_SUFFIX) >= len)
		return err_set(e, CKPT_EINVAL, "step name too long: %s", name);
	return 0;
}

/* Take the lock that marks a tmp dir as owned by a live save: an
 * exclusive flock on its directory fd, held until the fd is closed (the
 * kernel drops it when the process dies, so a leftover of a crashed
 * daemon is never locked). 1 when taken, 0 when another open holds it,
 * -1 on error (errno). */
static int
lock_dir(int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 1;
	return errno == EWOULDBLOCK ? 0 : -1;
}

/* 1 when dirfd/name is still the directory open as fd. */
static int
same_dir(int dirfd, const char *name, int fd)
{
	struct stat a, b;

	return fstatat(dirfd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
	    fstat(fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Remove the leftover dirfd/name unless a live save owns it (locked):
 * 0 removed or absent, CKPT_EBUSY owned, other codes on errors. */
static int
remove_unowned(int dirfd, const char *name, ckd_err *e)
{
	int fd, r;

	if ((fd = openat(dirfd, name, O_DIRFLAGS)) < 0) {
		if (errno == ENOENT)
			return 0;
		if (errno == ENOTDIR || errno == ELOOP)
			return store_remove_tree(dirfd, name, e);
		return err_errno(e, errno, "open %s", name);
	}
	if ((r = lock_dir(fd)) <= 0) {
		r = r == 0 ? err_set(e, CKPT_EBUSY, "%s belongs to a save in "
		    "progress", name) : err_errno(e, errno, "lock %s", name);
		close(fd);
		return r;
	}
	/* Held: no save can own it now; remove it while holding the lock. */
	r = same_dir(dirfd, name, fd) ? store_remove_tree(dirfd, name, e) : 0;
	close(fd);
	return r;
}

int
store_begin(int rootfd, const char *name, mode_t dirmode, int *tmpfd,
    ckd_err *e)
{
	char tmp[300];
	struct stat st;
	int r, fd, tries;

	if ((r = tmp_name(name, tmp, sizeof(tmp), e)) != 0)
		return r;
	if (fstatat(rootfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return err_set(e, CKPT_EEXIST, "step directory %s already "
		    "exists", name);
	if (errno != ENOENT)
		return err_errno(e, errno, "stat %s", name);
	/* A leftover of a crash goes; the tmp dir of a save in progress
	 * (another process) stays and this save fails. A collector may take
	 * the new directory between mkdir and flock: then start again. */
	for (tries = 0; tries < 8; tries++) {
		if ((r = remove_unowned(rootfd, tmp, e)) != 0)
			return r;
		if ((r = mkdir_open(rootfd, tmp, dirmode, &fd, e)) != 0) {
			if (r == CKPT_EEXIST)
				continue;
			return r;
		}
		if (lock_dir(fd) == 1 && same_dir(rootfd, tmp, fd)) {
			*tmpfd = fd;
			return 0;
		}
		close(fd);
	}
	return err_set(e, CKPT_EBUSY, "cannot create %s: it keeps being "
	    "replaced", tmp);
}

int
store_mkdir_item(int tmpfd, const char *item, mode_t dirmode, int *itemfd,
    ckd_err *e)
{
	if (!store_valid_component(item))
		return err_set(e, CKPT_EINVAL, "invalid item name: %s",
		    item != NULL ? item : "(null)");
	return mkdir_open(tmpfd, item, dirmode, itemfd, e);
}

/* Batched writer: queues iovecs and writes them with pwritev. */
struct wbuf {
	int fd;
	const char *fname;
	uint64_t woff;          /* file offset of iov[0] */
	uint64_t kicked;        /* bytes handed to writeback */
	struct iovec iov[STORE_IOV];
	int niov;
	size_t pending;
};

static int
wbuf_flush(struct wbuf *w, ckd_err *e)
{
	struct iovec *iov = w->iov;
	int cnt = w->niov;
	ssize_t r;

	while (cnt > 0) {
		r = pwritev(w->fd, iov, cnt, (off_t)w->woff);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return err_errno(e, errno, "write %s", w->fname);
		}
		if (r == 0)
			return err_set(e, CKPT_EIO, "write %s: no progress",
			    w->fname);
		w->woff += (uint64_t)r;
		while (cnt > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0 && r > 0) {
			iov->iov_base = (char *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	w->niov = 0;
	w->pending = 0;
	if (w->woff - w->kicked >= STORE_KICK) {
		/* A hint: start writeback now so the final fsync is short. */
		(void)sync_file_range(w->fd, (off_t)w->kicked,
		    (off_t)(w->woff - w->kicked), SYNC_FILE_RANGE_WRITE);
		w->kicked = w->woff;
	}
	return 0;
}

static int
wbuf_add(struct wbuf *w, const void *p, size_t len, ckd_err *e)
{
	int r;

	if (len == 0)
		return 0;
	if (w->niov == STORE_IOV && (r = wbuf_flush(w, e)) != 0)
		return r;
	w->iov[w->niov].iov_base = (void *)p;
	w->iov[w->niov].iov_len = len;
	w->niov++;
	w->pending += len;
	if (w->pending >= STORE_CHUNK)
		return wbuf_flush(w, e);
	return 0;
}

/* nbytes of dtype/shape, or -1 on overflow / bad dtype / ndim. */
static int
array_nbytes(Ckpt__Dtype dt, size_t ndim, const uint64_t *shape,
    uint64_t *out)
{
	uint64_t n;
	size_t i;

	if ((n = store_dtype_size(dt)) == 0 || ndim > CKPT_WIRE_MAX_NDIM)
		return -1;
	for (i = 0; i < ndim; i++) {
		if (shape[i] != 0 && n > UINT64_MAX / shape[i])
			return -1;
		n *= shape[i];
	}
	*out = n;
	return 0;
}

static json_t *
shape_json(size_t ndim, const uint64_t *shape)
{
	json_t *a = json_array();
	size_t i;

	if (a == NULL)
		return NULL;
	for (i = 0; i < ndim; i++) {
		if (shape[i] > INT64_MAX ||
		    json_array_append_new(a, json_integer((json_int_t)shape[i]))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static json_t *
tensor_info_json(const char *dtype, json_t *shape, uint64_t b, uint64_t end)
{
	return json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype, "shape", shape,
	    "data_offsets", (json_int_t)b, (json_int_t)end);
}

/* Build the padded header; fills t[].offset. *hdr is malloc'ed. */
static int
st_header(struct store_tensor *t, size_t n, uint64_t *rel, char **hdr,
    size_t *hdrlen, ckd_err *e)
{
	json_t *root, *info;
	uint64_t cur = 0, begin, nb, N, total;
	char *js = NULL, padname[64], *buf;
	size_t jl, i;
	int r = 0;

	if ((root = json_pack("{s:{s:s}}", "__metadata__", "format", "pt"))
	    == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		const char *dn = store_dtype_name(t[i].dtype);

		if (!valid_tensor_name(t[i].name)) {
			r = err_set(e, CKPT_EINVAL, "invalid tensor name %s",
			    t[i].name != NULL ? t[i].name : "(null)");
			goto out;
		}
		if (array_nbytes(t[i].dtype, t[i].ndim, t[i].shape, &nb) != 0 ||
		    dn == NULL || nb != t[i].nbytes ||
		    (nb > 0 && t[i].src == NULL)) {
			r = err_set(e, CKPT_EINVAL, "tensor %s: bad dtype, shape "
			    "or size", t[i].name);
			goto out;
		}
		if (json_object_get(root, t[i].name) != NULL) {
			r = err_set(e, CKPT_EINVAL, "duplicate tensor name %s",
			    t[i].name);
			goto out;
		}
		begin = (cur + STORE_TENSOR_ALIGN - 1) &
		    ~(uint64_t)(STORE_TENSOR_ALIGN - 1);
		if (nb >= STORE_DIO_TENSOR && ((uintptr_t)t[i].src &
		    (STORE_TENSOR_ALIGN - 1)) == 0) {
			/* Same offset within a page as the source, so that
			 * O_DIRECT can write it straight from there (the data
			 * section starts on a page boundary). */
			uint64_t want = (uintptr_t)t[i].src & (STORE_PAGE - 1);

			begin = cur + ((want - cur) & (STORE_PAGE - 1));
		}
		if (begin < cur || nb > (uint64_t)INT64_MAX - begin) {
			r = err_set(e, CKPT_EINVAL, "tensors too large");
			goto out;
		}
		if (begin > cur) {
			snprintf(padname, sizeof(padname), STORE_PAD_PREFIX
			    "%zu__", i);
			info = tensor_info_json("U8", json_pack("[I]",
			    (json_int_t)(begin - cur)), cur, begin);
			if (info == NULL || json_object_set_new(root, padname,
			    info) != 0) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				goto out;
			}
		}
		info = NULL;
		json_t *sh = shape_json(t[i].ndim, t[i].shape);
		if (sh != NULL)
			info = tensor_info_json(dn, sh, begin, begin + nb);
		if (info == NULL || json_object_set_new(root, t[i].name,
		    info) != 0) {
			/* jansson refuses keys that are not UTF-8 */
			r = err_set(e, CKPT_EINVAL, "tensor %s: cannot encode "
			    "header entry (name not UTF-8?)", t[i].name);
			goto out;
		}
		rel[i] = begin;
		cur = begin + nb;
	}
	if ((js = json_dumps(root, JSON_COMPACT)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	jl = strlen(js);
	total = ((uint64_t)jl + 8 + STORE_PAGE - 1) & ~(uint64_t)(STORE_PAGE - 1);
	N = total - 8;
	if (N > STORE_MAX_HEADER) {
		r = err_set(e, CKPT_ETOOBIG, "safetensors header too large");
		goto out;
	}
	if ((buf = malloc(total)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < 8; i++)
		buf[i] = (char)(N >> (8 * i));
	memcpy(buf + 8, js, jl);
	memset(buf + 8 + jl, ' ', N - jl);
	for (i = 0; i < n; i++)
		t[i].offset = total + rel[i];
	*hdr = buf;
	*hdrlen = total;
out:
	free(js);
	json_decref(root);
	return r;
}

/* ---- sources with holes ---------------------------------------------------
 * A cursor over a tensor's source: a copy of the runs known so far, so
 * that most lookups take no lock and no system call. lseek on the shared
 * file description from several workers is safe here: only the returned
 * offsets are used. */
static const char st_zeros[64u << 10];

struct src_cur {
	struct store_src *s;
	struct store_runs k;
};

void
store_src_init(struct store_src *s, int fd, const void *base)
{
	memset(s, 0, sizeof *s);
	s->fd = fd;
	s->base = base;
	pthread_mutex_init(&s->lock, NULL);
}

void
store_src_destroy(struct store_src *s)
{
	if (s->base == NULL)
		return;
	pthread_mutex_destroy(&s->lock);
	s->base = NULL;
}

/* The run of k at off (at most len bytes); 0 when k does not know. */
static uint64_t
src_known(const struct store_runs *k, uint64_t off, uint64_t len, int *data)
{
	if (off >= k->data_lo && off < k->data_hi) {
		*data = 1;
		return len < k->data_hi - off ? len : k->data_hi - off;
	}
	if (off >= k->hole_lo && off < k->hole_hi) {
		*data = 0;
		return len < k->hole_hi - off ? len : k->hole_hi - off;
	}
	return 0;
}

/* Find the run at off with lseek into k (s->lock held). */
static void
src_seek(struct store_src *s, struct store_runs *k, uint64_t off)
{
	off_t d, h;

	d = lseek(s->fd, (off_t)off, SEEK_DATA);
	if (d < 0 && errno == ENXIO) {
		k->hole_lo = off;
		k->hole_hi = UINT64_MAX;        /* holes up to the end */
	} else if (d < 0) {
		k->data_lo = 0;                 /* unsupported: read it all */
		k->data_hi = UINT64_MAX;
	} else if ((uint64_t)d > off) {
		k->hole_lo = off;
		k->hole_hi = (uint64_t)d;
	} else {
		h = lseek(s->fd, (off_t)off, SEEK_HOLE);
		k->data_lo = off;
		k->data_hi = h > (off_t)off ? (uint64_t)h : UINT64_MAX;
	}
}

/* The run at p (at most len bytes): its length, *data 1 for data (read it
 * from p), 0 for a hole (zeros). */
static uint64_t
src_run(struct src_cur *c, const char *p, uint64_t len, int *data)
{
	uint64_t off, n;

	*data = 1;
	if (c->s == NULL || len == 0)
		return len;
	off = (uint64_t)(p - c->s->base);
	if ((n = src_known(&c->k, off, len, data)) > 0)
		return n;
	pthread_mutex_lock(&c->s->lock);
	if (src_known(&c->s->known, off, len, data) == 0)
		src_seek(c->s, &c->s->known, off);
	c->k = c->s->known;
	pthread_mutex_unlock(&c->s->lock);
	return src_known(&c->k, off, len, data);
}

/* 1 when the whole tensor is data (the fast paths apply). */
static int
src_all_data(struct src_cur *c, const struct store_tensor *t)
{
	int data;

	if (c->s == NULL || t->nbytes == 0)
		return 1;
	return src_run(c, t->src, t->nbytes, &data) == t->nbytes && data;
}

/* Hash len zero bytes into st. */
static void
st_hash_zeros(XXH3_state_t *st, uint64_t len)
{
	while (len > 0) {
		size_t n = len > sizeof st_zeros ? sizeof st_zeros : (size_t)len;

		XXH3_64bits_update(st, st_zeros, n);
		len -= n;
	}
}

/* A tensor with holes, run by run: data is hashed and handed to put from
 * the source, holes as zeros (put gets NULL). */
static int
st_tensor_runs(struct src_cur *c, struct store_tensor *t, XXH3_state_t **st,
    int (*put)(void *arg, const char *p, uint64_t len, ckd_err *e),
    void *arg, ckd_err *e)
{
	const char *p = t->src;
	uint64_t left = t->nbytes, n;
	int data, r;

	if (*st == NULL && (*st = XXH3_createState()) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	XXH3_64bits_reset(*st);
	while (left > 0) {
		if ((n = src_run(c, p, left, &data)) == 0) {
			n = left;               /* cannot happen: read it */
			data = 1;
		}
		if (data && n > STORE_CHUNK)
			n = STORE_CHUNK;        /* hashed right before written */
		if (data)
			XXH3_64bits_update(*st, p, (size_t)n);
		else
			st_hash_zeros(*st, n);
		if ((r = put(arg, data ? p : NULL, n, e)) != 0)
			return r;
		p += n;
		left -= n;
	}
	t->xxh3 = XXH3_64bits_digest(*st);
	return 0;
}

static int
wbuf_put(void *arg, const char *p, uint64_t len, ckd_err *e)
{
	struct wbuf *w = arg;
	size_t n;
	int r;

	if (p != NULL)
		return wbuf_add(w, p, (size_t)len, e);
	while (len > 0) {
		n = len > sizeof st_zeros ? sizeof st_zeros : (size_t)len;
		if ((r = wbuf_add(w, st_zeros, n, e)) != 0)
			return r;
		len -= n;
	}
	return 0;
}

/* Hash tensor i chunk by chunk and queue the chunks for writing. */
static int
st_put_tensor(struct wbuf *w, struct src_cur *c, struct store_tensor *t,
    XXH3_state_t **st, ckd_err *e)
{
	const char *p = t->src;
	uint64_t left = t->nbytes;
	size_t len;
	int r;

	if (!src_all_data(c, t))
		return st_tensor_runs(c, t, st, wbuf_put, w, e);
	if (left <= STORE_CHUNK) {
		t->xxh3 = XXH3_64bits(p, (size_t)left);
		return wbuf_add(w, p, (size_t)left, e);
	}
	if (*st == NULL && (*st = XXH3_createState()) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	XXH3_64bits_reset(*st);
	while (left > 0) {
		len = left > STORE_CHUNK ? STORE_CHUNK : (size_t)left;
		XXH3_64bits_update(*st, p, len);
		if ((r = wbuf_add(w, p, len, e)) != 0)
			return r;
		p += len;
		left -= len;
	}
	t->xxh3 = XXH3_64bits_digest(*st);
	return 0;
}

/* ---- O_DIRECT stream ----------------------------------------------------------
 * The file is written as one sequential stream. Bytes that cannot go
 * straight from their source (header, padding, small tensors, the edges of
 * large ones, sources not congruent with their file offset modulo
 * STORE_PAGE) are gathered in a page-aligned bounce buffer; the page-aligned
 * middle of a congruent tensor is written from the source itself. Every
 * O_DIRECT write then has an aligned address, offset and length; the last
 * page is padded with zeros and the file truncated to its size. When the
 * filesystem refuses O_DIRECT (EINVAL, e.g. tmpfs) the stream drops it and
 * continues through the page cache. */
struct dio {
	int fd;
	const char *fname;
	int direct;             /* O_DIRECT is on */
	uint64_t off;           /* file offset of buf[0] */
	char *buf;              /* STORE_BOUNCE bytes, page-aligned */
	size_t len;             /* bytes queued in buf */
};

static int
dio_pwrite(struct dio *d, const char *p, size_t len, uint64_t off,
    ckd_err *e)
{
	ssize_t r;
	int fl;

	while (len > 0) {
		r = pwrite(d->fd, p, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EINVAL && d->direct) {
				/* Refused (or a short write left us unaligned):
				 * go on through the page cache. */
				d->direct = 0;
				if ((fl = fcntl(d->fd, F_GETFL)) < 0 ||
				    fcntl(d->fd, F_SETFL, fl & ~O_DIRECT) != 0)
					return err_errno(e, errno, "write %s",
					    d->fname);
				continue;
			}
			return err_errno(e, errno, "write %s", d->fname);
		}
		if (r == 0)
			return err_set(e, CKPT_EIO, "write %s: no progress",
			    d->fname);
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* Write the bounce buffer (its length is a multiple of STORE_PAGE unless
 * this is the end of the file or O_DIRECT is off). */
static int
dio_flush(struct dio *d, ckd_err *e)
{
	int r;

	if (d->len == 0)
		return 0;
	if ((r = dio_pwrite(d, d->buf, d->len, d->off, e)) != 0)
		return r;
	d->off += d->len;
	d->len = 0;
	return 0;
}

/* Append len bytes of p (or zeros when p is NULL) to the stream. */
static int
dio_put(struct dio *d, const char *p, uint64_t len, ckd_err *e)
{
	size_t n;
	int r;

	if (!d->direct && p != NULL && len >= (64u << 10)) {
		/* Page cache: no need to gather, write from the source. */
		if ((r = dio_flush(d, e)) != 0 ||
		    (r = dio_pwrite(d, p, (size_t)len, d->off, e)) != 0)
			return r;
		d->off += len;
		return 0;
	}
	while (len > 0) {
		n = STORE_BOUNCE - d->len;
		if (n > len)
			n = (size_t)len;
		if (p != NULL) {
			memcpy(d->buf + d->len, p, n);
			p += n;
		} else {
			memset(d->buf + d->len, 0, n);
		}
		d->len += n;
		len -= n;
		if (d->len == STORE_BOUNCE && (r = dio_flush(d, e)) != 0)
			return r;
	}
	return 0;
}

static int
dio_put_cb(void *arg, const char *p, uint64_t len, ckd_err *e)
{
	return dio_put(arg, p, len, e);
}

/* Hash tensor t chunk by chunk, each chunk right before it is written. */
static int
dio_tensor(struct dio *d, struct src_cur *c, struct store_tensor *t,
    XXH3_state_t **st, ckd_err *e)
{
	const char *p = t->src;
	uint64_t left = t->nbytes, pos = d->off + d->len, head;
	size_t n;
	int r;

	if (!src_all_data(c, t))
		return st_tensor_runs(c, t, st, dio_put_cb, d, e);
	if (left <= STORE_CHUNK) {
		t->xxh3 = XXH3_64bits(p, (size_t)left);
		return dio_put(d, p, left, e);
	}
	if (*st == NULL && (*st = XXH3_createState()) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	XXH3_64bits_reset(*st);
	if (d->direct && (((uintptr_t)p - pos) & (STORE_PAGE - 1)) == 0) {
		head = (STORE_PAGE - (pos & (STORE_PAGE - 1))) &
		    (STORE_PAGE - 1);
		XXH3_64bits_update(*st, p, (size_t)head);
		if ((r = dio_put(d, p, head, e)) != 0 ||
		    (r = dio_flush(d, e)) != 0)
			return r;
		p += head;
		left -= head;
		while (left >= STORE_PAGE) {
			n = left > STORE_DIO_CHUNK ? STORE_DIO_CHUNK :
			    (size_t)(left & ~(uint64_t)(STORE_PAGE - 1));
			XXH3_64bits_update(*st, p, n);
			if ((r = dio_pwrite(d, p, n, d->off, e)) != 0)
				return r;
			d->off += n;
			p += n;
			left -= n;
		}
	}
	while (left > 0) {
		n = left > STORE_CHUNK ? STORE_CHUNK : (size_t)left;
		XXH3_64bits_update(*st, p, n);
		if ((r = dio_put(d, p, n, e)) != 0)
			return r;
		p += n;
		left -= n;
	}
	t->xxh3 = XXH3_64bits_digest(*st);
	return 0;
}

/* The data of a file of `size` bytes with O_DIRECT when the filesystem
 * takes it. */
static int
st_write_direct(int fd, const char *fname, const char *hdr, size_t hdrlen,
    struct store_tensor *t, const uint64_t *rel, size_t n, uint64_t size,
    XXH3_state_t **st, ckd_err *e)
{
	struct dio d;
	struct src_cur c;
	uint64_t cur = 0, pad;
	size_t i;
	int fl, r;

	memset(&c, 0, sizeof c);
	c.s = n > 0 ? t[0].hsrc : NULL;
	memset(&d, 0, sizeof d);
	d.fd = fd;
	d.fname = fname;
	/* mmap, not malloc: page-aligned, and returned to the system at
	 * once (malloc may keep it resident in a worker's arena). */
	d.buf = mmap(NULL, STORE_BOUNCE, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (d.buf == MAP_FAILED)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	d.direct = (fl = fcntl(fd, F_GETFL)) >= 0 &&
	    fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
	if ((r = dio_put(&d, hdr, hdrlen, e)) != 0)
		goto out;
	for (i = 0; i < n; i++) {
		if ((r = dio_put(&d, NULL, rel[i] - cur, e)) != 0 ||
		    (r = dio_tensor(&d, &c, &t[i], st, e)) != 0)
			goto out;
		cur = rel[i] + t[i].nbytes;
	}
	if (d.direct && (d.len & (STORE_PAGE - 1)) != 0) {
		pad = STORE_PAGE - (d.len & (STORE_PAGE - 1));
		memset(d.buf + d.len, 0, (size_t)pad);
		d.len += (size_t)pad;
	}
	if ((r = dio_flush(&d, e)) != 0)
		goto out;
	if (d.off != size && ftruncate(fd, (off_t)size) != 0)
		r = err_errno(e, errno, "truncate %s", fname);
out:
	munmap(d.buf, STORE_BOUNCE);
	return r;
}

/* Write a safetensors file; with b, hand the open fd to the batch instead
 * of fsync + close. */
static int
st_write(int dirfd, const char *fname, mode_t filemode,
    struct store_tensor *t, size_t n, struct store_sync *b, ckd_err *e)
{
	static const char zeros[STORE_PAGE];
	uint64_t *rel = NULL, cur, size;
	XXH3_state_t *st = NULL;
	struct wbuf *w = NULL;
	struct src_cur c;
	char *hdr = NULL;
	size_t hdrlen = 0, i;
	int fd = -1, r;

	if (!store_valid_component(fname))
		return err_set(e, CKPT_EINVAL, "invalid file name: %s",
		    fname != NULL ? fname : "(null)");
	if ((rel = calloc(n ? n : 1, sizeof(*rel))) == NULL ||
	    (w = malloc(sizeof(*w))) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if ((r = st_header(t, n, rel, &hdr, &hdrlen, e)) != 0)
		goto out;
	size = hdrlen + (n > 0 ? rel[n - 1] + t[n - 1].nbytes : 0);
	fd = openat(dirfd, fname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, filemode);
	if (fd < 0) {
		r = err_errno(e, errno, "create %s", fname);
		goto out;
	}
	set_mode(fd, filemode);
	if (size >= STORE_DIO_MIN) {
		if ((r = st_write_direct(fd, fname, hdr, hdrlen, t, rel, n,
		    size, &st, e)) != 0)
			goto fail;
	} else {
		memset(&c, 0, sizeof c);
		c.s = n > 0 ? t[0].hsrc : NULL;
		memset(w, 0, sizeof(*w));
		w->fd = fd;
		w->fname = fname;
		if ((r = wbuf_add(w, hdr, hdrlen, e)) != 0)
			goto fail;
		cur = 0;
		for (i = 0; i < n; i++) {
			if ((r = wbuf_add(w, zeros, (size_t)(rel[i] - cur),
			    e)) != 0 ||
			    (r = st_put_tensor(w, &c, &t[i], &st, e)) != 0)
				goto fail;
			cur = rel[i] + t[i].nbytes;
		}
		if ((r = wbuf_flush(w, e)) != 0)
			goto fail;
	}
	if (b != NULL) {
		/* The batch fsyncs (and closes) it before the commit. */
		if ((r = store_sync_add(b, fd, 1, e)) != 0) {
			fd = -1;        /* closed by store_sync_add */
			goto fail;
		}
		fd = -1;
		goto out;
	}
	/* Data and size: one fsync per file. */
	if (fsync(fd) != 0) {
		r = err_errno(e, errno, "fsync %s", fname);
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		r = err_errno(e, errno, "close %s", fname);
		goto fail;
	}
	fd = -1;
	goto out;
fail:
	if (fd >= 0)
		close(fd);
	fd = -1;
	unlinkat(dirfd, fname, 0);
out:
	XXH3_freeState(st);
	free(hdr);
	free(rel);
	free(w);
	return r;
}

int
store_write_safetensors(int dirfd, const char *fname, mode_t filemode,
    struct store_tensor *t, size_t n, ckd_err *e)
{
	return st_write(dirfd, fname, filemode, t, n, NULL, e);
}

int
store_write_safetensors_nosync(int dirfd, const char *fname,
    mode_t filemode, struct store_tensor *t, size_t n, struct store_sync *b,
    ckd_err *e)
{
	if (b == NULL)
		return err_set(e, CKPT_EINVAL, "no sync batch");
	return st_write(dirfd, fname, filemode, t, n, b, e);
}

/* Write a small file; with b, hand the open fd to the batch instead of
 * fsync + close. */
static int
small_write(int dirfd, const char *fname, const void *data, size_t len,
    mode_t filemode, struct store_sync *b, ckd_err *e)
{
	const char *p = data;
	ssize_t w;
	int fd, r = 0;

	if (!store_valid_component(fname))
		return err_set(e, CKPT_EINVAL, "invalid file name: %s",
		    fname != NULL ? fname : "(null)");
	fd = openat(dirfd, fname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, filemode);
	if (fd < 0)
		return err_errno(e, errno, "create %s", fname);
	set_mode(fd, filemode);
	while (len > 0) {
		if ((w = write(fd, p, len)) < 0) {
			if (errno == EINTR)
				continue;
			r = err_errno(e, errno, "write %s", fname);
			break;
		}
		if (w == 0) {
			r = err_set(e, CKPT_EIO, "write %s: no progress", fname);
			break;
		}
		p += w;
		len -= (size_t)w;
	}
	if (r == 0 && b != NULL) {
		/* The batch fsyncs (and closes) it before the commit. */
		if ((r = store_sync_add(b, fd, 1, e)) != 0)
			unlinkat(dirfd, fname, 0);
		return r;
	}
	if (r == 0 && fsync(fd) != 0)
		r = err_errno(e, errno, "fsync %s", fname);
	if (close(fd) != 0 && r == 0)
		r = err_errno(e, errno, "close %s", fname);
	if (r != 0)
		unlinkat(dirfd, fname, 0);
	return r;
}

int
store_write_file(int dirfd, const char *fname, const void *data, size_t len,
    mode_t filemode, ckd_err *e)
{
	return small_write(dirfd, fname, data, len, filemode, NULL, e);
}

int
store_write_file_nosync(int dirfd, const char *fname, const void *data,
    size_t len, mode_t filemode, struct store_sync *b, ckd_err *e)
{
	if (b == NULL)
		return err_set(e, CKPT_EINVAL, "no sync batch");
	return small_write(dirfd, fname, data, len, filemode, b, e);
}

/* ---- tree metadata -------------------------------------------------------------- */

static const char *const leaf_kinds[] = {
	[CKPT__LEAF_KIND__LEAF_ARRAY] = "array",
	[CKPT__LEAF_KIND__LEAF_INT] = "int",
	[CKPT__LEAF_KIND__LEAF_FLOAT] = "float",
	[CKPT__LEAF_KIND__LEAF_BOOL] = "bool",
	[CKPT__LEAF_KIND__LEAF_STR] = "str",
	[CKPT__LEAF_KIND__LEAF_NONE] = "none",
	[CKPT__LEAF_KIND__LEAF_EMPTY_DICT] = "empty_dict",
	[CKPT__LEAF_KIND__LEAF_EMPTY_LIST] = "empty_list",
	[CKPT__LEAF_KIND__LEAF_EMPTY_TUPLE] = "empty_tuple",
};
#define NLEAFKINDS (sizeof(leaf_kinds) / sizeof(leaf_kinds[0]))

static const char *const key_kinds[] = {
	[CKPT__KEY_KIND__KEY_DICT] = "dict",
	[CKPT__KEY_KIND__KEY_LIST] = "list",
	[CKPT__KEY_KIND__KEY_TUPLE] = "tuple",
};
#define NKEYKINDS (sizeof(key_kinds) / sizeof(key_kinds[0]))

static int
name_index(const char *const *names, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (names[i] != NULL && strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

/* The rules shared by the writer (CKPT_EINVAL) and the reader
 * (CKPT_ECORRUPT). Returns NULL when the leaf is fine, else why not. */
static const char *
leaf_problem(const Ckpt__Leaf *l)
{
	uint64_t nb;
	size_t i;

	if ((unsigned)l->kind >= NLEAFKINDS)
		return "unknown leaf kind";
	if (l->n_path > STORE_MAX_DEPTH)
		return "path too deep";
	if (l->n_path > 0 && l->path == NULL)
		return "missing path";
	for (i = 0; i < l->n_path; i++) {
		const Ckpt__PathElem *pe = l->path[i];

		if (pe == NULL || (unsigned)pe->kind >= NKEYKINDS)
			return "bad path element";
		if (pe->kind == CKPT__KEY_KIND__KEY_DICT && pe->key == NULL)
			return "dict path element without key";
		if (pe->kind != CKPT__KEY_KIND__KEY_DICT &&
		    pe->index > INT64_MAX)
			return "path index out of range";
	}
	if (l->tag != NULL && strlen(l->tag) > STORE_MAX_TAG)
		return "tag longer than 64 bytes";
	if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY)
		return NULL;
	if (store_dtype_size(l->dtype) == 0)
		return "unknown dtype";
	if (l->n_shape > CKPT_WIRE_MAX_NDIM)
		return "too many dimensions";
	if (l->n_shape > 0 && l->shape == NULL)
		return "missing shape";
	if (array_nbytes(l->dtype, l->n_shape, l->shape, &nb) != 0)
		return "shape overflows";
	if (nb != l->nbytes)
		return "nbytes does not match dtype and shape";
	if (nb > INT64_MAX)
		return "array too large";
	for (i = 0; i < l->n_shape; i++)
		if (l->shape[i] > INT64_MAX)
			return "dimension too large";
	if (!store_valid_component(l->file))
		return "invalid file name";
	if (!valid_tensor_name(l->tensor))
		return "invalid tensor name";
	return NULL;
}

static json_t *
leaf_to_json(const Ckpt__Leaf *l)
{
	json_t *o, *path, *v = NULL;
	char hex[17];
	size_t i;

	if ((o = json_object()) == NULL)
		return NULL;
	if ((path = json_array()) == NULL || json_object_set_new(o, "path",
	    path) != 0)
		goto fail;
	for (i = 0; i < l->n_path; i++) {
		const Ckpt__PathElem *pe = l->path[i];
		json_t *el;

		if (pe->kind == CKPT__KEY_KIND__KEY_DICT)
			el = json_pack("{s:s, s:s}", "kind", "dict", "key",
			    pe->key);
		else
			el = json_pack("{s:s, s:I}", "kind",
			    key_kinds[pe->kind], "index",
			    (json_int_t)pe->index);
		if (el == NULL || json_array_append_new(path, el) != 0)
			goto fail;
	}
	if (json_object_set_new(o, "kind", json_string(leaf_kinds[l->kind])))
		goto fail;
	switch (l->kind) {
	case CKPT__LEAF_KIND__LEAF_ARRAY:
		snprintf(hex, sizeof(hex), "%016" PRIx64, l->xxh3);
		if (json_object_set_new(o, "dtype",
		    json_string(store_dtype_name(l->dtype))) ||
		    json_object_set_new(o, "shape",
		    shape_json(l->n_shape, l->shape)) ||
		    json_object_set_new(o, "nbytes",
		    json_integer((json_int_t)l->nbytes)) ||
		    json_object_set_new(o, "file", json_string(l->file)) ||
		    json_object_set_new(o, "tensor", json_string(l->tensor)) ||
		    json_object_set_new(o, "xxh3", json_string(hex)))
			goto fail;
		break;
	case CKPT__LEAF_KIND__LEAF_INT:
		v = json_integer((json_int_t)l->int_value);
		break;
	case CKPT__LEAF_KIND__LEAF_FLOAT:
		if (isnan(l->float_value))
			v = json_string(signbit(l->float_value) ? "-nan" : "nan");
		else if (isinf(l->float_value))
			v = json_string(l->float_value < 0 ? "-inf" : "inf");
		else
			v = json_real(l->float_value);
		break;
	case CKPT__LEAF_KIND__LEAF_BOOL:
		v = json_boolean(l->bool_value);
		break;
	case CKPT__LEAF_KIND__LEAF_STR:
		v = json_string(l->str_value != NULL ? l->str_value : "");
		break;
	default:
		break;
	}
	if (v != NULL && json_object_set_new(o, "value", v) != 0)
		goto fail;
	if (v == NULL && l->kind >= CKPT__LEAF_KIND__LEAF_INT &&
	    l->kind <= CKPT__LEAF_KIND__LEAF_STR)
		goto fail;
	if (l->tag != NULL && json_object_set_new(o, "tag",
	    json_string(l->tag)) != 0)
		goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

static int
tree_meta_write(int itemfd, const Ckpt__Item *item, mode_t filemode,
    struct store_sync *b, ckd_err *e)
{
	json_t *root, *leaves, *lj;
	const char *why;
	char *text = NULL;
	size_t i;
	int r = 0;

	root = json_pack("{s:s, s:i, s:[]}", "format", "ckptd-tree",
	    "version", STORE_FORMAT_VERSION, "leaves");
	if (root == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	leaves = json_object_get(root, "leaves");
	for (i = 0; i < item->n_leaves; i++) {
		if (item->leaves[i] == NULL) {
			r = err_set(e, CKPT_EINVAL, "leaf %zu missing", i);
			goto out;
		}
		if ((why = leaf_problem(item->leaves[i])) != NULL) {
			r = err_set(e, CKPT_EINVAL, "leaf %zu: %s", i, why);
			goto out;
		}
		if ((lj = leaf_to_json(item->leaves[i])) == NULL ||
		    json_array_append_new(leaves, lj) != 0) {
			/* jansson refuses strings that are not UTF-8 */
			r = err_set(e, CKPT_EINVAL, "leaf %zu: cannot encode "
			    "(string not UTF-8?)", i);
			goto out;
		}
	}
	if ((text = json_dumps(root, JSON_COMPACT)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if (strlen(text) > STORE_MAX_TREE_META) {
		r = err_set(e, CKPT_ETOOBIG, "tree metadata larger than "
		    "256 MiB");
		goto out;
	}
	r = small_write(itemfd, STORE_TREE_METADATA, text, strlen(text),
	    filemode, b, e);
out:
	free(text);
	json_decref(root);
	return r;
}

int
store_write_tree_metadata(int itemfd, const Ckpt__Item *item,
    mode_t filemode, ckd_err *e)
{
	return tree_meta_write(itemfd, item, filemode, NULL, e);
}

int
store_write_tree_metadata_nosync(int itemfd, const Ckpt__Item *item,
    mode_t filemode, struct store_sync *b, ckd_err *e)
{
	if (b == NULL)
		return err_set(e, CKPT_EINVAL, "no sync batch");
	return tree_meta_write(itemfd, item, filemode, b, e);
}

/* ---- reading tree metadata ----------------------------------------------------- */

static void
leaf_free(Ckpt__Leaf *l)
{
	size_t j;

	if (l == NULL)
		return;
	for (j = 0; j < l->n_path && l->path != NULL; j++) {
		if (l->path[j] != NULL)
			free(l->path[j]->key);
		free(l->path[j]);
	}
	free(l->path);
	free(l->shape);
	free(l->str_value);
	free(l->file);
	free(l->tag);
	free(l->tensor);
	free(l);
}

/*
 * Ownership: an item from store_read_tree_metadata() owns, all allocated
 * with malloc: item->leaves (array) and item->name/json when the caller
 * sets them (they must then be malloc'ed too); per leaf: the Ckpt__Leaf,
 * its path array, every Ckpt__PathElem and its key, shape, str_value, file,
 * tag and tensor. NULL members are skipped; store_item_free(NULL) is a
 * no-op. Items unpacked by protobuf-c are freed with
 * ckpt__item__free_unpacked() instead.
 */
void
store_item_free(Ckpt__Item *item)
{
	size_t i;

	if (item == NULL)
		return;
	for (i = 0; i < item->n_leaves && item->leaves != NULL; i++)
		leaf_free(item->leaves[i]);
	free(item->leaves);
	free(item->name);
	free(item->json);
	free(item);
}

/* String member `k` of o: NULL (and *bad set) when present with another
 * type; NULL when absent. */
static const char *
jstr(json_t *o, const char *k, int *bad)
{
	json_t *v = json_object_get(o, k);

	if (v == NULL)
		return NULL;
	if (!json_is_string(v) ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		*bad = 1;
		return NULL;
	}
	return json_string_value(v);
}

/* Non-negative integer member. 0 ok, -1 absent/bad type/negative. */
static int
juint(json_t *o, const char *k, uint64_t *out)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int
parse_hex64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	int i, c;

	if (s == NULL || strlen(s) != 16)
		return -1;
	for (i = 0; i < 16; i++) {
		c = s[i];
		if (c >= '0' && c <= '9')
			c -= '0';
		else if (c >= 'a' && c <= 'f')
			c = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			c = c - 'A' + 10;
		else
			return -1;
		v = v << 4 | (uint64_t)c;
	}
	*out = v;
	return 0;
}

/* Duplicate s into *dst (ENOMEM check by the caller through the return). */
static int
dupto(char **dst, const char *s)
{
	if (s == NULL)
		return 0;
	return (*dst = strdup(s)) != NULL ? 0 : -1;
}

#define CORRUPT(...) do { r = err_set(e, CKPT_ECORRUPT, __VA_ARGS__); \
	goto out; } while (0)
#define NOMEM() do { r = err_set(e, CKPT_ENOMEM, "out of memory"); \
	goto out; } while (0)

static int
leaf_from_json(json_t *o, size_t idx, Ckpt__Leaf **out, ckd_err *e)
{
	Ckpt__Leaf *l;
	json_t *path, *v, *shape;
	const char *s, *why;
	int bad = 0, k, r = 0;
	size_t i;

	if ((l = malloc(sizeof(*l))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	ckpt__leaf__init(l);
	if (!json_is_object(o))
		CORRUPT("_METADATA: leaf %zu is not an object", idx);
	s = jstr(o, "kind", &bad);
	if (s == NULL || (k = name_index(leaf_kinds, NLEAFKINDS, s)) < 0)
		CORRUPT("_METADATA: leaf %zu: bad kind", idx);
	l->has_kind = 1;
	l->kind = (Ckpt__LeafKind)k;

	path = json_object_get(o, "path");
	if (!json_is_array(path) || json_array_size(path) > STORE_MAX_DEPTH)
		CORRUPT("_METADATA: leaf %zu: bad path", idx);
	if (json_array_size(path) > 0) {
		l->path = calloc(json_array_size(path), sizeof(*l->path));
		if (l->path == NULL)
			NOMEM();
	}
	json_array_foreach(path, i, v) {
		Ckpt__PathElem *pe;

		if ((pe = malloc(sizeof(*pe))) == NULL)
			NOMEM();
		ckpt__path_elem__init(pe);
		l->path[l->n_path++] = pe;
		if (!json_is_object(v) || (s = jstr(v, "kind", &bad)) == NULL ||
		    (k = name_index(key_kinds, NKEYKINDS, s)) < 0)
			CORRUPT("_METADATA: leaf %zu: bad path element", idx);
		pe->has_kind = 1;
		pe->kind = (Ckpt__KeyKind)k;
		if (pe->kind == CKPT__KEY_KIND__KEY_DICT) {
			if ((s = jstr(v, "key", &bad)) == NULL)
				CORRUPT("_METADATA: leaf %zu: dict path element "
				    "without key", idx);
			if (dupto(&pe->key, s) != 0)
				NOMEM();
		} else {
			if (juint(v, "index", &pe->index) != 0)
				CORRUPT("_METADATA: leaf %zu: bad path index",
				    idx);
			pe->has_index = 1;
		}
	}

	s = jstr(o, "tag", &bad);
	if (bad)
		CORRUPT("_METADATA: leaf %zu: bad tag", idx);
	if (dupto(&l->tag, s) != 0)
		NOMEM();

	v = json_object_get(o, "value");
	switch (l->kind) {
	case CKPT__LEAF_KIND__LEAF_ARRAY:
		s = jstr(o, "dtype", &bad);
		l->dtype = store_dtype_parse(s);
		l->has_dtype = 1;
		if (l->dtype == CKPT__DTYPE__DTYPE_INVALID)
			CORRUPT("_METADATA: leaf %zu: bad dtype", idx);
		shape = json_object_get(o, "shape");
		if (!json_is_array(shape) ||
		    json_array_size(shape) > CKPT_WIRE_MAX_NDIM)
			CORRUPT("_METADATA: leaf %zu: bad shape", idx);
		if (json_array_size(shape) > 0 && (l->shape = calloc(
		    json_array_size(shape), sizeof(*l->shape))) == NULL)
			NOMEM();
		json_array_foreach(shape, i, v) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				CORRUPT("_METADATA: leaf %zu: bad shape", idx);
			l->shape[l->n_shape++] = (uint64_t)json_integer_value(v);
		}
		if (juint(o, "nbytes", &l->nbytes) != 0)
			CORRUPT("_METADATA: leaf %zu: bad nbytes", idx);
		l->has_nbytes = 1;
		s = jstr(o, "file", &bad);
		if (s == NULL || dupto(&l->file, s) != 0)
			goto strfail;
		s = jstr(o, "tensor", &bad);
		if (s == NULL || dupto(&l->tensor, s) != 0)
			goto strfail;
		if (parse_hex64(jstr(o, "xxh3", &bad), &l->xxh3) != 0)
			CORRUPT("_METADATA: leaf %zu: bad xxh3", idx);
		l->has_xxh3 = 1;
		l->has_offset = 1;
		l->offset = 0;
		l->has_fd_index = 1;
		l->fd_index = 0;
		break;
	case CKPT__LEAF_KIND__LEAF_INT:
		if (!json_is_integer(v))
			CORRUPT("_METADATA: leaf %zu: int value expected", idx);
		l->has_int_value = 1;
		l->int_value = json_integer_value(v);
		break;
	case CKPT__LEAF_KIND__LEAF_FLOAT:
		l->has_float_value = 1;
		if (json_is_number(v))
			l->float_value = json_number_value(v);
		else if (json_is_string(v) && strcmp(json_string_value(v),
		    "inf") == 0)
			l->float_value = INFINITY;
		else if (json_is_string(v) && strcmp(json_string_value(v),
		    "-inf") == 0)
			l->float_value = -INFINITY;
		else if (json_is_string(v) && strcmp(json_string_value(v),
		    "nan") == 0)
			l->float_value = NAN;
		else if (json_is_string(v) && strcmp(json_string_value(v),
		    "-nan") == 0)
			l->float_value = -NAN;
		else
			CORRUPT("_METADATA: leaf %zu: float value expected",
			    idx);
		break;
	case CKPT__LEAF_KIND__LEAF_BOOL:
		if (!json_is_boolean(v))
			CORRUPT("_METADATA: leaf %zu: bool value expected",
			    idx);
		l->has_bool_value = 1;
		l->bool_value = json_is_true(v);
		break;
	case CKPT__LEAF_KIND__LEAF_STR:
		if ((s = jstr(o, "value", &bad)) == NULL)
			CORRUPT("_METADATA: leaf %zu: str value expected", idx);
		if (dupto(&l->str_value, s) != 0)
			NOMEM();
		break;
	default:
		break;
	}
	if ((why = leaf_problem(l)) != NULL)
		CORRUPT("_METADATA: leaf %zu: %s", idx, why);
	*out = l;
	return 0;
strfail:
	if (s != NULL)
		NOMEM();
	CORRUPT("_METADATA: leaf %zu: missing file or tensor name", idx);
out:
	leaf_free(l);
	return r;
}

int
store_read_tree_metadata(int itemfd, Ckpt__Item **out, ckd_err *e)
{
	json_t *root = NULL, *leaves, *v;
	Ckpt__Item *item = NULL;
	json_error_t jerr;
	char *buf = NULL;
	const char *s;
	size_t len, i;
	int r, bad = 0;

	*out = NULL;
	r = store_read_file(itemfd, STORE_TREE_METADATA, STORE_MAX_TREE_META,
	    &buf, &len, e);
	if (r == CKPT_ENOTFOUND || r == CKPT_ETOOBIG)
		return err_set(e, CKPT_ECORRUPT, "_METADATA: %s",
		    r == CKPT_ENOTFOUND ? "missing" : "larger than 256 MiB");
	if (r != 0)
		return r;
	if ((root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL)
		CORRUPT("_METADATA: invalid JSON at line %d: %s", jerr.line,
		    jerr.text);
	if (!json_is_object(root) || (s = jstr(root, "format", &bad)) == NULL ||
	    strcmp(s, "ckptd-tree") != 0)
		CORRUPT("_METADATA: not a ckptd tree metadata file");
	v = json_object_get(root, "version");
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		CORRUPT("_METADATA: bad format version");
	if (json_integer_value(v) > STORE_FORMAT_VERSION) {
		r = err_set(e, CKPT_EVERSION, "_METADATA: format version %lld "
		    "was written by a newer ckptd (this one reads up to %d); "
		    "upgrade ckptd", (long long)json_integer_value(v),
		    STORE_FORMAT_VERSION);
		goto out;
	}
	leaves = json_object_get(root, "leaves");
	if (!json_is_array(leaves))
		CORRUPT("_METADATA: leaves is not an array");
	if ((item = malloc(sizeof(*item))) == NULL)
		NOMEM();
	ckpt__item__init(item);
	if (json_array_size(leaves) > 0 && (item->leaves = calloc(
	    json_array_size(leaves), sizeof(*item->leaves))) == NULL)
		NOMEM();
	json_array_foreach(leaves, i, v) {
		if ((r = leaf_from_json(v, i, &item->leaves[i], e)) != 0)
			goto out;
		item->n_leaves++;
	}
	*out = item;
	item = NULL;
out:
	store_item_free(item);
	json_decref(root);
	free(buf);
	return r;
}

int
store_read_file(int dirfd, const char *fname, size_t maxlen, char **bufp,
    size_t *lenp, ckd_err *e)
{
	struct stat st;
	size_t len = 0, cap;
	char *buf = NULL, *nb;
	ssize_t n;
	int fd, r = 0;

	*bufp = NULL;
	*lenp = 0;
	if ((fd = open_regular(dirfd, fname, &st, e)) < 0)
		return fd;
	if ((uint64_t)st.st_size > maxlen) {
		r = err_set(e, CKPT_ETOOBIG, "%s: larger than %zu bytes",
		    fname, maxlen);
		goto out;
	}
	if (maxlen > SIZE_MAX / 4)
		maxlen = SIZE_MAX / 4;
	/* One spare byte shows whether the file grew past its stat size. */
	cap = (size_t)st.st_size + 2;
	if ((buf = malloc(cap)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		if (len > maxlen) {
			r = err_set(e, CKPT_ETOOBIG, "%s: larger than %zu bytes",
			    fname, maxlen);
			goto out;
		}
		if (len == cap - 1) {
			cap = cap * 2 > maxlen + 2 ? maxlen + 2 : cap * 2;
			if ((nb = realloc(buf, cap)) == NULL) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				goto out;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - 1 - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = err_errno(e, errno, "read %s", fname);
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*bufp = buf;
	*lenp = len;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return r;
}

/* ---- step metadata ------------------------------------------------------------- */

static json_t *
object_from_text(const char *text)
{
	json_t *o;

	if (text == NULL)
		return json_object();
	o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	if (o != NULL && !json_is_object(o)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

static int
step_meta_write(int stepfd, const struct store_step_meta *m,
    mode_t filemode, struct store_sync *b, ckd_err *e)
{
	json_t *root = NULL, *ih, *sh, *metrics, *custom;
	const char *ts, *sn;
	char *text = NULL;
	size_t i;
	int r = 0;

	if ((metrics = object_from_text(m->metrics_json)) == NULL)
		return err_set(e, CKPT_EINVAL, "metrics are not a JSON object");
	if ((custom = object_from_text(m->custom_json)) == NULL) {
		json_decref(metrics);
		return err_set(e, CKPT_EINVAL,
		    "custom metadata is not a JSON object");
	}
	root = json_pack("{s:{}, s:o, s:{}, s:I, s:I, s:o, "
	    "s:{s:i, s:I, s:{}}}",
	    "item_handlers", "metrics", metrics, "performance_metrics",
	    "init_timestamp_nsecs", (json_int_t)m->init_ns,
	    "commit_timestamp_nsecs", (json_int_t)m->commit_ns,
	    "custom_metadata", custom,
	    "ckptd", "version", STORE_FORMAT_VERSION, "bytes",
	    (json_int_t)m->bytes, "handlers");
	if (root == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	ih = json_object_get(root, "item_handlers");
	sh = json_object_get(json_object_get(root, "ckptd"), "handlers");
	for (i = 0; i < m->nitems; i++) {
		const char *name = m->item_names[i];

		if (!store_valid_component(name)) {
			r = err_set(e, CKPT_EINVAL, "invalid item name %s",
			    name != NULL ? name : "(null)");
			goto out;
		}
		ts = store_handler_typestr(m->handlers[i]);
		sn = handler_shortname(m->handlers[i]);
		if (ts == NULL || sn == NULL) {
			r = err_set(e, CKPT_EINVAL, "item %s: no handler", name);
			goto out;
		}
		if (json_object_get(ih, name) != NULL) {
			r = err_set(e, CKPT_EINVAL, "duplicate item %s", name);
			goto out;
		}
		if (json_object_set_new(ih, name, json_string(ts)) != 0 ||
		    json_object_set_new(sh, name, json_string(sn)) != 0) {
			r = err_set(e, CKPT_EINVAL, "item %s: cannot encode "
			    "name", name);
			goto out;
		}
	}
	if (m->metrics_item != NULL) {
		if (json_object_get(ih, m->metrics_item) != NULL) {
			r = err_set(e, CKPT_EINVAL, "an item named %s and "
			    "metrics", m->metrics_item);
			goto out;
		}
		if (json_object_set_new(ih, m->metrics_item, json_string(
		    store_handler_typestr(CKPT__HANDLER__HANDLER_JSON))) != 0) {
			r = err_set(e, CKPT_ENOMEM, "out of memory");
			goto out;
		}
	}
	if ((text = json_dumps(root, JSON_COMPACT)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	/* Restore reads it back whole, up to CKPT_MAX_DOC. */
	if (strlen(text) > CKPT_MAX_DOC) {
		r = err_set(e, CKPT_ETOOBIG, "%s would be %zu bytes, more than "
		    "the %u a restore reads (metrics and custom metadata too "
		    "large)", STORE_STEP_METADATA, strlen(text), CKPT_MAX_DOC);
		goto out;
	}
	r = small_write(stepfd, STORE_STEP_METADATA, text, strlen(text),
	    filemode, b, e);
out:
	free(text);
	json_decref(root);
	return r;
}

int
store_write_step_meta(int stepfd, const struct store_step_meta *m,
    mode_t filemode, ckd_err *e)
{
	return step_meta_write(stepfd, m, filemode, NULL, e);
}

int
store_write_step_meta_nosync(int stepfd, const struct store_step_meta *m,
    mode_t filemode, struct store_sync *b, ckd_err *e)
{
	if (b == NULL)
		return err_set(e, CKPT_EINVAL, "no sync batch");
	return step_meta_write(stepfd, m, filemode, b, e);
}

void
store_step_meta_free(struct store_step_meta *m)
{
	size_t i;

	if (m == NULL)
		return;
	free(m->metrics_json);
	free(m->custom_json);
	for (i = 0; i < m->nitems && m->item_names != NULL; i++)
		free(m->item_names[i]);
	free(m->item_names);
	free(m->handlers);
	memset(m, 0, sizeof(*m));
}

/* Optional JSON object member as compact text (NULL when absent/null). */
static int
object_text(json_t *root, const char *k, char **out)
{
	json_t *v = json_object_get(root, k);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return -1;
	if ((*out = json_dumps(v, JSON_COMPACT)) == NULL)
		return -2;
	return 0;
}

static int
opt_int(json_t *root, const char *k, int64_t *out)
{
	json_t *v = json_object_get(root, k);

	*out = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v))
		return -1;
	*out = json_integer_value(v);
	return 0;
}

int
store_read_step_meta(int stepfd, struct store_step_meta *m, ckd_err *e)
{
	json_t *root = NULL, *ih, *ck, *sh = NULL, *v;
	json_error_t jerr;
	const char *key;
	char *buf = NULL;
	int64_t bytes = 0;
	size_t len, i, n;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = store_read_file(stepfd, STORE_STEP_METADATA,
	    STORE_MAX_STEP_META, &buf, &len, e)) != 0) {
		if (r == CKPT_ETOOBIG)
			r = err_set(e, CKPT_ECORRUPT, "%s: too large",
			    STORE_STEP_METADATA);
		return r;
	}
	if ((root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL)
		CORRUPT("%s: invalid JSON at line %d: %s", STORE_STEP_METADATA,
		    jerr.line, jerr.text);
	if (!json_is_object(root))
		CORRUPT("%s: not a JSON object", STORE_STEP_METADATA);
	if ((r = object_text(root, "metrics", &m->metrics_json)) != 0 ||
	    (r = object_text(root, "custom_metadata", &m->custom_json)) != 0) {
		if (r == -2)
			NOMEM();
		CORRUPT("%s: metrics/custom_metadata not an object",
		    STORE_STEP_METADATA);
	}
	if (opt_int(root, "init_timestamp_nsecs", &m->init_ns) != 0 ||
	    opt_int(root, "commit_timestamp_nsecs", &m->commit_ns) != 0)
		CORRUPT("%s: bad timestamps", STORE_STEP_METADATA);
	ck = json_object_get(root, "ckptd");
	if (ck != NULL) {
		int64_t fv;

		if (!json_is_object(ck) || opt_int(ck, "bytes", &bytes) != 0 ||
		    opt_int(ck, "version", &fv) != 0)
			CORRUPT("%s: bad ckptd section", STORE_STEP_METADATA);
		if (fv > STORE_FORMAT_VERSION) {
			r = err_set(e, CKPT_EVERSION, "%s: format version "
			    "%lld was written by a newer ckptd (this one reads "
			    "up to %d); upgrade ckptd", STORE_STEP_METADATA,
			    (long long)fv, STORE_FORMAT_VERSION);
			goto out;
		}
		sh = json_object_get(ck, "handlers");
		if (sh != NULL && !json_is_object(sh))
			CORRUPT("%s: bad ckptd handlers", STORE_STEP_METADATA);
		m->bytes = (uint64_t)bytes;
	}
	ih = json_object_get(root, "item_handlers");
	if (ih == NULL || json_is_null(ih))
		n = 0;
	else if (json_is_string(ih))
		n = 1;   /* Orbax single-item form: the handler of "default" */
	else if (json_is_object(ih))
		n = json_object_size(ih);
	else
		CORRUPT("%s: bad item_handlers", STORE_STEP_METADATA);
	if (n > STORE_MAX_ITEMS)
		CORRUPT("%s: too many items", STORE_STEP_METADATA);
	if (n > 0 && ((m->item_names = calloc(n, sizeof(char *))) == NULL ||
	    (m->handlers = calloc(n, sizeof(Ckpt__Handler))) == NULL))
		NOMEM();
	if (json_is_string(ih)) {
		if ((m->item_names[0] = strdup("default")) == NULL)
			NOMEM();
		m->nitems = 1;
		m->handlers[0] = store_handler_parse(json_string_value(ih));
	} else if (n > 0) {
		json_object_foreach(ih, key, v) {
			json_t *shv = sh != NULL ? json_object_get(sh, key) : NULL;

			if (!json_is_string(v) || !store_valid_component(key) ||
			    (shv != NULL && !json_is_string(shv)))
				CORRUPT("%s: bad item_handlers entry",
				    STORE_STEP_METADATA);
			i = m->nitems;
			if ((m->item_names[i] = strdup(key)) == NULL)
				NOMEM();
			m->nitems++;
			m->handlers[i] = CKPT__HANDLER__HANDLER_UNSPECIFIED;
			if (shv != NULL)
				m->handlers[i] = store_handler_parse(
				    json_string_value(shv));
			if (m->handlers[i] == CKPT__HANDLER__HANDLER_UNSPECIFIED)
				m->handlers[i] = store_handler_parse(
				    json_string_value(v));
		}
	}
	r = 0;
out:
	if (r != 0)
		store_step_meta_free(m);
	json_decref(root);
	free(buf);
	return r;
}

/* ---- commit, abort, delete ------------------------------------------------------- */

int
store_fsync_dir(int dirfd, ckd_err *e)
{
	if (fsync(dirfd) != 0)
		return err_errno(e, errno, "fsync directory");
	return 0;
}

/* ---- batched durability ----------------------------------------------------------- */

void
store_sync_init(struct store_sync *b)
{
	b->v = NULL;
	b->n = 0;
	b->cap = 0;
}

int
store_sync_add(struct store_sync *b, int fd, int own, ckd_err *e)
{
	struct store_sync_ent *v;
	size_t cap;

	if (b->n == b->cap) {
		cap = b->cap ? b->cap * 2 : 16;
		if (b->n >= STORE_SYNC_MAX ||
		    (v = realloc(b->v, cap * sizeof(*v))) == NULL) {
			if (own)
				close(fd);
			return err_set(e, CKPT_ENOMEM, "out of memory");
		}
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n].fd = fd;
	b->v[b->n].own = own;
	b->n++;
	return 0;
}

/*
 * Start writeback of every entry first, so that block allocation of all
 * files joins one journal transaction; the first fsync then commits the
 * metadata of every file and directory at once, and the following ones
 * only wait for data already in flight (on ext4 and xfs). Every entry is
 * still fsynced: nothing depends on that filesystem behaviour for
 * correctness.
 */
int
store_sync_run(struct store_sync *b, ckd_err *e)
{
	size_t i;
	int r = 0;

	for (i = 0; i < b->n; i++)
		(void)sync_file_range(b->v[i].fd, 0, 0,
		    SYNC_FILE_RANGE_WRITE);
	for (i = 0; i < b->n; i++)
		if (fsync(b->v[i].fd) != 0 && r == 0)
			r = err_errno(e, errno, "fsync (batch entry %zu)", i);
	for (i = 0; i < b->n; i++)
		if (b->v[i].own && close(b->v[i].fd) != 0 && r == 0)
			r = err_errno(e, errno, "close (batch entry %zu)", i);
	b->n = 0;
	return r;
}

void
store_sync_free(struct store_sync *b)
{
	size_t i;

	for (i = 0; i < b->n; i++)
		if (b->v[i].own)
			close(b->v[i].fd);
	free(b->v);
	store_sync_init(b);
}

/* rename without replacing; falls back to check-then-rename where the
 * filesystem lacks RENAME_NOREPLACE. */
static int
rename_noreplace(int ofd, const char *oname, int nfd, const char *nname)
{
	struct stat st;

	if (renameat2(ofd, oname, nfd, nname, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (fstatat(nfd, nname, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		errno = EEXIST;
		return -1;
	}
	return renameat(ofd, oname, nfd, nname);
}

int
store_commit(int rootfd, const char *name, int tmpfd, ckd_err *e)
{
	char tmp[300];
	int r;

	if ((r = tmp_name(name, tmp, sizeof(tmp), e)) != 0)
		return r;
	if (fsync(tmpfd) != 0)
		return err_errno(e, errno, "fsync %s", tmp);
	return store_commit_synced(rootfd, name, e);
}

int
store_commit_synced(int rootfd, const char *name, ckd_err *e)
{
	char tmp[300];
	int r;

	if ((r = tmp_name(name, tmp, sizeof(tmp), e)) != 0)
		return r;
	if (rename_noreplace(rootfd, tmp, rootfd, name) != 0) {
		if (errno == EEXIST || errno == ENOTEMPTY)
			return err_set(e, CKPT_EEXIST, "step directory %s "
			    "already exists", name);
		return err_errno(e, errno, "rename %s to %s", tmp, name);
	}
	if (fsync(rootfd) != 0)
		return err_errno(e, errno, "fsync root after committing %s",
		    name);
	return 0;
}

int
store_abort(int rootfd, const char *name, ckd_err *e)
{
	char tmp[300];
	int r;

	if ((r = tmp_name(name, tmp, sizeof(tmp), e)) != 0)
		return r;
	return store_remove_tree(rootfd, tmp, e);
}

/* When the removal after hiding fails, the step is already gone from
 * listings (store_cleanup_tmp() finishes the job later) and the error is
 * returned. */
int
store_delete_step(int rootfd, const char *name, const char *subdir,
    ckd_err *e)
{
	char hidden[300];
	struct stat st;
	int sfd, r;

	if (!store_valid_component(name))
		return err_set(e, CKPT_EINVAL, "invalid step name: %s",
		    name != NULL ? name : "(null)");
	if (fstatat(rootfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno == ENOENT)
			return err_set(e, CKPT_ENOTFOUND, "step %s not found",
			    name);
		return err_errno(e, errno, "stat %s", name);
	}
	if (!S_ISDIR(st.st_mode))
		return err_set(e, CKPT_ENOTFOUND, "step %s is not a directory",
		    name);
	if (subdir != NULL) {
		if (!store_valid_component(subdir))
			return err_set(e, CKPT_EINVAL, "invalid todelete "
			    "subdir: %s", subdir);
		if (mkdirat(rootfd, subdir, st.st_mode & 0777) != 0 &&
		    errno != EEXIST)
			return err_errno(e, errno, "mkdir %s", subdir);
		if ((sfd = openat(rootfd, subdir, O_DIRFLAGS)) < 0)
			return err_errno(e, errno, "open %s", subdir);
		if (rename_noreplace(rootfd, name, sfd, name) != 0) {
			r = errno == EEXIST || errno == ENOTEMPTY ?
			    err_set(e, CKPT_EEXIST, "%s/%s already exists",
			    subdir, name) :
			    err_errno(e, errno, "move %s to %s", name, subdir);
			close(sfd);
			return r;
		}
		r = store_fsync_dir(sfd, e);
		close(sfd);
		if (r == 0)
			r = store_fsync_dir(rootfd, e);
		return r;
	}
	if ((size_t)snprintf(hidden, sizeof(hidden), ".%s%s", name,
	    STORE_DEL_SUFFIX) >= sizeof(hidden))
		return err_set(e, CKPT_EINVAL, "step name too long: %s", name);
	if ((r = remove_unowned(rootfd, hidden, e)) != 0)
		return r;
	/* Hold the step's lock while it is hidden and removed, so that a
	 * collector of leftovers leaves it to us. */
	sfd = openat(rootfd, name, O_DIRFLAGS);
	if (sfd >= 0 && lock_dir(sfd) != 1) {
		close(sfd);
		sfd = -1;
	}
	if (renameat(rootfd, name, rootfd, hidden) != 0) {
		r = errno == ENOENT ? err_set(e, CKPT_ENOTFOUND, "step %s not "
		    "found", name) : err_errno(e, errno, "rename %s", name);
		goto out;
	}
	if ((r = store_fsync_dir(rootfd, e)) != 0)
		goto out;
	r = store_remove_tree(rootfd, hidden, e);
out:
	if (sfd >= 0)
		close(sfd);
	return r;
}

/* "<step>.orbax-checkpoint-tmp" or "<step>.orbax-checkpoint-tmp-<digits>":
 * what an interrupted Orbax save leaves in a root, which Orbax's own
 * cleanup_tmp_directories removes too. */
static int
store_is_orbax_tmp(const char *name)
{
	const char *p = strstr(name, STORE_ORBAX_TMP);

	if (p == NULL || p == name)
		return 0;
	p += strlen(STORE_ORBAX_TMP);
	if (*p == '\0')
		return 1;
	if (*p++ != '-' || *p == '\0')
		return 0;
	for (; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return 1;
}

int
store_collect_leftovers(int rootfd, const struct store_naming *nm, int flags,
    struct store_leftover **out, size_t *nout, ckd_err *e)
{
	struct store_leftover *v = NULL, *nv;
	size_t len = 0, cap = 0, l;
	struct dirent *de;
	struct stat st;
	char base[256];
	uint64_t step;
	int r = 0, rr, removed = 0, ours, tmp;
	ckd_err re;
	DIR *d;

	if (out != NULL) {
		*out = NULL;
		*nout = 0;
	}
	if ((d = opendir_at(rootfd, ".", e)) == NULL)
		return e != NULL ? e->code : CKPT_EIO;
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL) {
			if (errno != 0)
				r = err_errno(e, errno, "read root directory");
			break;
		}
		l = strlen(de->d_name);
		tmp = ends_with(de->d_name, CKPT_TMP_SUFFIX) &&
		    l > strlen(CKPT_TMP_SUFFIX) && l < sizeof(base);
		ours = 0;
		if (tmp) {
			memcpy(base, de->d_name, l - strlen(CKPT_TMP_SUFFIX));
			base[l - strlen(CKPT_TMP_SUFFIX)] = '\0';
			ours = nm != NULL &&
			    store_parse_step_name(nm, base, &step) == 0;
			if (!ours && !(flags & STORE_LEFTOVER_ANY_NAMING))
				continue;
		} else if (!(de->d_name[0] == '.' &&
		    ends_with(de->d_name, STORE_DEL_SUFFIX) &&
		    l > 1 + strlen(STORE_DEL_SUFFIX)) &&
		    !((flags & STORE_LEFTOVER_ORBAX) &&
		    store_is_orbax_tmp(de->d_name))) {
			continue;
		}
		if (fstatat(dirfd(d), de->d_name, &st,
		    AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
			continue;
		rr = remove_unowned(dirfd(d), de->d_name, &re);
		if (rr == CKPT_EBUSY)
			continue;       /* a live save's: not a leftover */
		if (rr != 0) {
			/* e.g. another user's: go on with the others */
			if (r == 0 && e != NULL)
				*e = re;
			if (r == 0)
				r = rr;
			continue;
		}
		removed++;
		if (!ours || out == NULL)
			continue;
		if (len == cap) {
			cap = cap ? cap * 2 : 8;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				break;
			}
			v = nv;
		}
		v[len].step = step;
		memcpy(v[len].name, base, strlen(base) + 1);
		v[len].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 +
		    st.st_mtim.tv_nsec;
		len++;
	}
	closedir(d);
	if (removed > 0 && (rr = store_fsync_dir(rootfd, &re)) != 0 &&
	    r == 0) {
		if (e != NULL)
			*e = re;
		r = rr;
	}
	if (out != NULL) {
		*out = v;
		*nout = len;
	} else {
		free(v);
	}
	return r;
}

int
store_cleanup_tmp(int rootfd, ckd_err *e)
{
	return store_collect_leftovers(rootfd, NULL, STORE_LEFTOVER_ANY_NAMING |
	    STORE_LEFTOVER_ORBAX, NULL, NULL, e);
}

/* ---- reading array files ------------------------------------------------------- */

struct st_file {
	const char *name;       /* borrowed from a leaf */
	int fd;
	uint64_t size;
	uint64_t data_start;
	json_t *hdr;
};

static uint64_t
le64(const unsigned char *b)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

static int
pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = 0;   /* EOF */
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int
st_open(int itemfd, struct st_file *f, ckd_err *e)
{
	unsigned char lenbuf[8];
	json_error_t jerr;
	struct stat st;
	char *buf = NULL;
	uint64_t N;
	int r = 0;

	if ((f->fd = open_regular(itemfd, f->name, &st, e)) < 0) {
		r = f->fd;
		f->fd = -1;
		return r;
	}
	f->size = (uint64_t)st.st_size;
	if (f->size < 8)
		CORRUPT("%s: truncated safetensors file", f->name);
	if (pread_full(f->fd, lenbuf, 8, 0) != 0) {
		r = errno ? err_errno(e, errno, "read %s", f->name) :
		    err_set(e, CKPT_ECORRUPT, "%s: truncated", f->name);
		goto out;
	}
	N = le64(lenbuf);
	if (N == 0 || N > STORE_MAX_HEADER)
		CORRUPT("%s: bad safetensors header length %" PRIu64, f->name,
		    N);
	if (N > f->size - 8)
		CORRUPT("%s: safetensors header beyond end of file", f->name);
	if ((buf = malloc((size_t)N)) == NULL)
		NOMEM();
	if (pread_full(f->fd, buf, (size_t)N, 8) != 0) {
		r = errno ? err_errno(e, errno, "read %s", f->name) :
		    err_set(e, CKPT_ECORRUPT, "%s: truncated", f->name);
		goto out;
	}
	f->hdr = json_loadb(buf, (size_t)N, JSON_REJECT_DUPLICATES, &jerr);
	if (f->hdr == NULL)
		CORRUPT("%s: invalid safetensors header: %s", f->name,
		    jerr.text);
	if (!json_is_object(f->hdr))
		CORRUPT("%s: safetensors header is not an object", f->name);
	f->data_start = 8 + N;
out:
	free(buf);
	return r;
}

static int
st_match(const struct st_file *f, Ckpt__Leaf *l, ckd_err *e)
{
	json_t *t, *v, *shape, *offs;
	uint64_t b, end, nb;
	const char *dn;
	size_t i;
	int r = 0;

	t = json_object_get(f->hdr, l->tensor);
	if (!json_is_object(t))
		CORRUPT("%s: tensor %s not found", f->name, l->tensor);
	v = json_object_get(t, "dtype");
	dn = store_dtype_name(l->dtype);
	if (!json_is_string(v) || dn == NULL ||
	    strcmp(json_string_value(v), dn) != 0)
		CORRUPT("%s: tensor %s: dtype differs from the tree metadata",
		    f->name, l->tensor);
	shape = json_object_get(t, "shape");
	if (!json_is_array(shape) || json_array_size(shape) != l->n_shape)
		CORRUPT("%s: tensor %s: shape differs from the tree metadata",
		    f->name, l->tensor);
	json_array_foreach(shape, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    (uint64_t)json_integer_value(v) != l->shape[i])
			CORRUPT("%s: tensor %s: shape differs from the tree "
			    "metadata", f->name, l->tensor);
	}
	if (array_nbytes(l->dtype, l->n_shape, l->shape, &nb) != 0 ||
	    nb != l->nbytes)
		CORRUPT("%s: tensor %s: bad size", f->name, l->tensor);
	offs = json_object_get(t, "data_offsets");
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    !json_is_integer(json_array_get(offs, 0)) ||
	    !json_is_integer(json_array_get(offs, 1)) ||
	    json_integer_value(json_array_get(offs, 0)) < 0 ||
	    json_integer_value(json_array_get(offs, 1)) < 0)
		CORRUPT("%s: tensor %s: bad data_offsets", f->name, l->tensor);
	b = (uint64_t)json_integer_value(json_array_get(offs, 0));
	end = (uint64_t)json_integer_value(json_array_get(offs, 1));
	if (b > end || end - b != nb)
		CORRUPT("%s: tensor %s: data_offsets do not match the size",
		    f->name, l->tensor);
	if (end > f->size - f->data_start)
		CORRUPT("%s: tensor %s: data beyond end of file", f->name,
		    l->tensor);
	l->has_offset = 1;
	l->offset = f->data_start + b;
out:
	return r;
}

int
store_open_item_files(int itemfd, Ckpt__Item *item, int *fds, size_t *nfds,
    size_t maxfds, ckd_err *e)
{
	struct st_file *files = NULL;
	size_t nfiles = 0, i, j, base = *nfds;
	int r = 0;

	if (item->n_leaves > 0 && (files = calloc(item->n_leaves,
	    sizeof(*files))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (i = 0; i < item->n_leaves; i++) {
		Ckpt__Leaf *l = item->leaves[i];
		const char *why;

		if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY)
			continue;
		if ((why = leaf_problem(l)) != NULL)
			CORRUPT("leaf %zu: %s", i, why);
		for (j = 0; j < nfiles; j++)
			if (strcmp(files[j].name, l->file) == 0)
				break;
		if (j == nfiles) {
			if (base + nfiles >= maxfds) {
				r = err_set(e, CKPT_ETOOBIG, "item has more "
				    "than %zu data files", maxfds - base);
				goto out;
			}
			files[j].name = l->file;
			files[j].fd = -1;
			nfiles++;
			if ((r = st_open(itemfd, &files[j], e)) != 0)
				goto out;
		}
		if ((r = st_match(&files[j], l, e)) != 0)
			goto out;
		l->has_fd_index = 1;
		l->fd_index = (uint32_t)(base + j);
	}
	for (j = 0; j < nfiles; j++) {
		fds[base + j] = files[j].fd;
		files[j].fd = -1;
	}
	*nfds = base + nfiles;
out:
	for (j = 0; j < nfiles; j++) {
		if (files[j].fd >= 0)
			close(files[j].fd);
		json_decref(files[j].hdr);
	}
	free(files);
	return r;
}

int
store_verify_item(const Ckpt__Item *item, const int *fds,
    store_problem_cb cb, void *arg, ckd_err *e)
{
	XXH3_state_t *st = NULL;
	char *buf = NULL, msg[160];
	uint64_t off, left, h;
	size_t i, len;
	int r = 0, bad = 0;

	if ((st = XXH3_createState()) == NULL ||
	    (buf = malloc(STORE_CHUNK)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < item->n_leaves; i++) {
		const Ckpt__Leaf *l = item->leaves[i];
		const char *tn = l->tensor != NULL ? l->tensor : "?";

		if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY || !l->has_xxh3)
			continue;
		if (!l->has_fd_index || !l->has_offset) {
			r = err_set(e, CKPT_EINTERNAL, "verify: leaf %zu has no "
			    "file (store_open_item_files not called?)", i);
			goto out;
		}
		int fd = fds[l->fd_index];

		XXH3_64bits_reset(st);
		off = l->offset;
		left = l->nbytes;
		(void)posix_fadvise(fd, (off_t)off, (off_t)left,
		    POSIX_FADV_SEQUENTIAL);
		while (left > 0) {
			len = left > STORE_CHUNK ? STORE_CHUNK : (size_t)left;
			if (pread_full(fd, buf, len, off) != 0)
				break;
			XXH3_64bits_update(st, buf, len);
			off += len;
			left -= len;
		}
		if (left > 0) {
			if (errno != 0) {
				r = err_errno(e, errno, "read %s",
				    l->file != NULL ? l->file : tn);
				goto out;
			}
			bad++;
			if (cb != NULL)
				cb(arg, tn, "data truncated");
			continue;
		}
		h = XXH3_64bits_digest(st);
		if (h != l->xxh3) {
			bad++;
			snprintf(msg, sizeof(msg), "checksum mismatch: stored "
			    "%016" PRIx64 ", computed %016" PRIx64, l->xxh3, h);
			if (cb != NULL)
				cb(arg, tn, msg);
		}
	}
	if (bad > 0)
		r = err_set(e, CKPT_ECORRUPT, "%d tensor%s failed verification",
		    bad, bad == 1 ? "" : "s");
out:
	XXH3_freeState(st);
	free(buf);
	return r;
}
