/*
 * backend_posix.c - the store's file operations on a local (posix)
 * filesystem (contract: backend.h).
 *
 * Everything here is a file operation relative to a directory fd, with
 * O_NOFOLLOW|O_CLOEXEC (or AT_SYMLINK_NOFOLLOW) on every name, so a symlink
 * planted under a root is never followed. Only posix_open_root() resolves
 * a user-given path, and it may follow symlinks in it (the user's choice).
 * Files and directories created here get exactly the mode asked for
 * (fchmod after creation, so the daemon's umask does not interfere).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"

#define O_DIRFLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

#define STORE_RM_DEPTH 64

/* Open dirfd/name read-only as a regular file. The name is untrusted: a
 * FIFO, device or socket in its place must never block the worker, so
 * the open is non-blocking and O_NONBLOCK is cleared only once fstat says
 * the file is regular. Returns the fd, or a negative CKPT_E* code with e
 * set (CKPT_ECORRUPT for a file that is not regular). */
static int
posix_open_regular(int dirfd, const char *name, struct stat *st,
    ckd_err *e)
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
posix_set_mode(int fd, mode_t mode)
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
posix_mkdir_open(int dirfd, const char *name, mode_t mode, int *fd,
    ckd_err *e)
{
	int dfd;

	if (mkdirat(dirfd, name, mode) != 0)
		return err_errno(e, errno, "mkdir %s", name);
	if ((dfd = openat(dirfd, name, O_DIRFLAGS)) < 0)
		return err_errno(e, errno, "open %s", name);
	posix_set_mode(dfd, mode);
	*fd = dfd;
	return 0;
}

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

static int
posix_open_root(const char *path, int create, mode_t mode, int *fd,
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
posix_root_name(int dirfd, char *buf, size_t len, ckd_err *e)
{
	char proc[64];
	ssize_t n;

	snprintf(proc, sizeof proc, "/proc/self/fd/%d", dirfd);
	n = readlink(proc, buf, len - 1);
	if (n <= 0 || (size_t)n >= len - 1 || buf[0] != '/')
		return err_errno(e, n < 0 ? errno : ENAMETOOLONG,
		    "resolving the root directory");
	buf[n] = '\0';
	return 0;
}

/* The peer's fs identity decides (this thread's fsuid/fsgid). */
static int
posix_writable(int dirfd)
{
	return faccessat(dirfd, ".", W_OK | X_OK, AT_EACCESS);
}

static int
posix_fstat(int fd, struct stat *st)
{
	return fstat(fd, st);
}

static int
posix_is_dir_at(int dirfd, const struct dirent *de)
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
posix_opendir_at(int dirfd, const char *name, ckd_err *e)
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
posix_remove_at(int dirfd, const char *name, int depth, ckd_err *e)
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
			r = posix_remove_at(fd, de->d_name, depth + 1, e);
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

/* Take the lock that marks a tmp dir as owned by a live save: an
 * exclusive flock on its directory fd, held until the fd is closed (the
 * kernel drops it when the process dies, so a leftover of a crashed
 * daemon is never locked). 1 when taken, 0 when another open holds it,
 * -1 on error (errno). */
static int
posix_lock_dir(int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 1;
	return errno == EWOULDBLOCK ? 0 : -1;
}

/* 1 when dirfd/name is still the directory open as fd. */
static int
posix_same_dir(int dirfd, const char *name, int fd)
{
	struct stat a, b;

	return fstatat(dirfd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
	    fstat(fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* rename without replacing; falls back to check-then-rename where the
 * filesystem lacks RENAME_NOREPLACE. */
static int
posix_rename_noreplace(int ofd, const char *oname, int nfd,
    const char *nname)
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

static int
posix_pread_full(int fd, void *buf, size_t len, uint64_t off)
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
posix_remove_tree(int dirfd, const char *name, ckd_err *e)
{
	return posix_remove_at(dirfd, name, 0, e);
}

static int
posix_make_dir(int dirfd, const char *name, mode_t mode)
{
	return mkdirat(dirfd, name, mode);
}

static int
posix_open_dir(int dirfd, const char *name)
{
	return openat(dirfd, name, O_DIRFLAGS);
}

static int
posix_stat(int dirfd, const char *name, struct stat *st)
{
	return fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW);
}

/* A listing is a DIR* over a new open of the directory (so the handle's
 * own offset is untouched) and its last entry. */
struct store_list {
	DIR *d;
	struct dirent *de;
};

static struct store_list *
posix_list_open(int dirfd, ckd_err *e)
{
	struct store_list *l;

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		err_set(e, CKPT_ENOMEM, "out of memory");
		return NULL;
	}
	if ((l->d = posix_opendir_at(dirfd, ".", e)) == NULL) {
		free(l);
		return NULL;
	}
	return l;
}

static int
posix_list_next(struct store_list *l, const char **name)
{
	errno = 0;
	if ((l->de = readdir(l->d)) == NULL)
		return errno != 0 ? -1 : 0;
	*name = l->de->d_name;
	return 1;
}

static int
posix_list_is_dir(struct store_list *l)
{
	return posix_is_dir_at(dirfd(l->d), l->de);
}

static void
posix_list_close(struct store_list *l)
{
	closedir(l->d);
	free(l);
}

static int
posix_rename(int ofd, const char *oname, int nfd, const char *nname,
    int noreplace)
{
	if (noreplace)
		return posix_rename_noreplace(ofd, oname, nfd, nname);
	return renameat(ofd, oname, nfd, nname);
}

static int
posix_create(int dirfd, const char *name, mode_t mode)
{
	int fd;

	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, mode);
	if (fd >= 0)
		posix_set_mode(fd, mode);
	return fd;
}

static int
posix_unlink(int dirfd, const char *name)
{
	return unlinkat(dirfd, name, 0);
}

static ssize_t
posix_read(int fd, void *buf, size_t len)
{
	return read(fd, buf, len);
}

static ssize_t
posix_write(int fd, const void *buf, size_t len)
{
	return write(fd, buf, len);
}

static ssize_t
posix_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	return pwrite(fd, buf, len, (off_t)off);
}

static ssize_t
posix_pwritev(int fd, const struct iovec *iov, int n, uint64_t off)
{
	return pwritev(fd, iov, n, (off_t)off);
}

static int
posix_truncate(int fd, uint64_t size)
{
	return ftruncate(fd, (off_t)size);
}

static int
posix_direct(int fd, int on)
{
	int fl;

	if ((fl = fcntl(fd, F_GETFL)) < 0)
		return -1;
	return fcntl(fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT);
}

static void
posix_writeback(int fd, uint64_t off, uint64_t len)
{
	(void)sync_file_range(fd, (off_t)off, (off_t)len,
	    SYNC_FILE_RANGE_WRITE);
}

static void
posix_readahead(int fd, uint64_t off, uint64_t len)
{
	(void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_SEQUENTIAL);
}

static int
posix_fsync(int fd)
{
	return fsync(fd);
}

static int
posix_close(int fd)
{
	return close(fd);
}

const struct store_backend backend_posix = {
	.name = "posix",
	.caps = STORE_BE_DIRECT | STORE_BE_FDS,
	.open_root = posix_open_root,
	.root_name = posix_root_name,
	.writable = posix_writable,
	.mkdir = posix_mkdir_open,
	.make_dir = posix_make_dir,
	.open_dir = posix_open_dir,
	.stat = posix_stat,
	.list_open = posix_list_open,
	.list_next = posix_list_next,
	.list_is_dir = posix_list_is_dir,
	.list_close = posix_list_close,
	.rename = posix_rename,
	.remove_tree = posix_remove_tree,
	.lock = posix_lock_dir,
	.same = posix_same_dir,
	.fstat = posix_fstat,
	.create = posix_create,
	.open_read = posix_open_regular,
	.unlink = posix_unlink,
	.read = posix_read,
	.read_range = posix_pread_full,
	.write = posix_write,
	.pwrite = posix_pwrite,
	.pwritev = posix_pwritev,
	.truncate = posix_truncate,
	.direct = posix_direct,
	.writeback = posix_writeback,
	.readahead = posix_readahead,
	.fsync = posix_fsync,
	.close = posix_close,
};
