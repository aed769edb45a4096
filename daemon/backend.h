/*
 * backend.h - the file operations under the store: today's posix code
 * (openat and friends relative to directory fds, O_NOFOLLOW on every
 * name, O_NONBLOCK + S_ISREG before reading a named file, flock of tmp
 * dirs). Runs on workers under the peer's file identity (setfsuid), so
 * the kernel checks permissions.
 */
#ifndef CKPTD_BACKEND_H
#define CKPTD_BACKEND_H

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common.h"

#define O_DIRFLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

/* Open dirfd/name read-only as a regular file. The name is untrusted: a
 * FIFO, device or socket in its place must never block the worker.
 * Returns the fd, or a negative CKPT_E* code with e set (CKPT_ECORRUPT for
 * a file that is not regular). */
int posix_open_regular(int dirfd, const char *name, struct stat *st,
    ckd_err *e);
/* Give a freshly created file or directory exactly `mode`. */
void posix_set_mode(int fd, mode_t mode);
/* mkdirat + open without following symlinks; *fd is O_DIRECTORY. */
int posix_mkdir_open(int dirfd, const char *name, mode_t mode, int *fd,
    ckd_err *e);
/* Open (creating it and missing parents when create) absolute path. */
int posix_open_root(const char *path, int create, mode_t mode, int *fd,
    ckd_err *e);
int posix_is_dir_at(int dirfd, const struct dirent *de);
DIR *posix_opendir_at(int dirfd, const char *name, ckd_err *e);
int posix_remove_at(int dirfd, const char *name, int depth, ckd_err *e);
int posix_lock_dir(int fd);
int posix_same_dir(int dirfd, const char *name, int fd);
int posix_rename_noreplace(int ofd, const char *oname, int nfd,
    const char *nname);
int posix_pread_full(int fd, void *buf, size_t len, uint64_t off);

#endif
