/*
 * smallfile.h - whole small files of a step (JSON items, proto.pbtxt, the
 * metadata files, root metadata): written at once with O_EXCL and made
 * durable (fsync, or a sync batch), read back whole and bounded.
 */
#ifndef CKPTD_SMALLFILE_H
#define CKPTD_SMALLFILE_H

#include <stddef.h>
#include <sys/types.h>

#include "common.h"
#include "syncbatch.h"

/* Write a small file with O_EXCL and fsync. */
int store_write_file(const struct store_backend *be, int dirfd,
    const char *fname, const void *data, size_t len, mode_t filemode,
    ckd_err *e);
int store_write_file_nosync(const struct store_backend *be, int dirfd,
    const char *fname, const void *data, size_t len, mode_t filemode,
    struct store_sync *b, ckd_err *e);
/* Both of them: with b, hand the open fd to the batch instead of fsync +
 * close. On error the file is removed. */
int store_small_write(const struct store_backend *be, int dirfd,
    const char *fname, const void *data, size_t len, mode_t filemode,
    struct store_sync *b, ckd_err *e);
/* Read a whole small file (<= maxlen) into a NUL-terminated malloc'ed
 * buffer. CKPT_ENOTFOUND when absent, CKPT_ETOOBIG when larger. */
int store_read_file(const struct store_backend *be, int dirfd,
    const char *fname, size_t maxlen, char **buf, size_t *len, ckd_err *e);

#endif
