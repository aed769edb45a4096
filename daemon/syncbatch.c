/*
 * syncbatch.c - batched durability (contract: syncbatch.h).
 */
#include <errno.h>
#include <stdlib.h>

#include "backend.h"
#include "syncbatch.h"

int
store_fsync_dir(const struct store_backend *be, int dirfd, ckd_err *e)
{
	if (be->fsync(dirfd) != 0)
		return err_errno(e, errno, "fsync directory");
	return 0;
}

/* ---- batched durability ----------------------------------------------------------- */

void
store_sync_init(struct store_sync *b, const struct store_backend *be)
{
	b->be = be;
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
				b->be->close(fd);
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
	const struct store_backend *be = b->be;
	size_t i;
	int r = 0;

	for (i = 0; i < b->n; i++)
		be->writeback(b->v[i].fd, 0, 0);
	for (i = 0; i < b->n; i++)
		if (be->fsync(b->v[i].fd) != 0 && r == 0)
			r = err_errno(e, errno, "fsync (batch entry %zu)", i);
	for (i = 0; i < b->n; i++)
		if (b->v[i].own && be->close(b->v[i].fd) != 0 && r == 0)
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
			b->be->close(b->v[i].fd);
	free(b->v);
	store_sync_init(b, b->be);
}
