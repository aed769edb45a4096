/*
 * smallfile.c - whole small files (contract: smallfile.h).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "backend.h"
#include "layout.h"
#include "smallfile.h"

/* Write a small file; with b, hand the open fd to the batch instead of
 * fsync + close. */
int
store_small_write(const struct store_backend *be, int dirfd, const char *fname,
    const void *data, size_t len, mode_t filemode, struct store_sync *b,
    ckd_err *e)
{
	const char *p = data;
	ssize_t w;
	int fd, r = 0;

	if (!store_valid_component(fname))
		return err_set(e, CKPT_EINVAL, "invalid file name: %s",
		    fname != NULL ? fname : "(null)");
	if ((fd = be->create(dirfd, fname, filemode)) < 0)
		return err_errno(e, errno, "create %s", fname);
	while (len > 0) {
		if ((w = be->write(fd, p, len)) < 0) {
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
			be->unlink(dirfd, fname);
		return r;
	}
	if (r == 0 && be->fsync(fd) != 0)
		r = err_errno(e, errno, "fsync %s", fname);
	if (be->close(fd) != 0 && r == 0)
		r = err_errno(e, errno, "close %s", fname);
	if (r != 0)
		be->unlink(dirfd, fname);
	return r;
}

int
store_write_file(const struct store_backend *be, int dirfd, const char *fname,
    const void *data, size_t len, mode_t filemode, ckd_err *e)
{
	return store_small_write(be, dirfd, fname, data, len, filemode, NULL,
	    e);
}

int
store_write_file_nosync(const struct store_backend *be, int dirfd,
    const char *fname, const void *data, size_t len, mode_t filemode,
    struct store_sync *b, ckd_err *e)
{
	if (b == NULL)
		return err_set(e, CKPT_EINVAL, "no sync batch");
	return store_small_write(be, dirfd, fname, data, len, filemode, b, e);
}

int
store_read_file(const struct store_backend *be, int dirfd, const char *fname,
    size_t maxlen, char **bufp, size_t *lenp, ckd_err *e)
{
	struct stat st;
	size_t len = 0, cap;
	char *buf = NULL, *nb;
	ssize_t n;
	int fd, r = 0;

	*bufp = NULL;
	*lenp = 0;
	if ((fd = be->open_read(dirfd, fname, &st, e)) < 0)
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
		n = be->read(fd, buf + len, cap - 1 - len);
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
	be->close(fd);
	return r;
}
