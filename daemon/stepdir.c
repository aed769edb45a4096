/*
 * stepdir.c - the commit protocol of step directories: begin, commit,
 * abort, delete, leftovers (contract: stepdir.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "backend.h"
#include "stepdir.h"
#include "syncbatch.h"

#define STORE_ORBAX_TMP ".orbax-checkpoint-tmp"

int
store_open_root(const char *path, int create, mode_t mode,
    const struct store_backend **be, int *fd, ckd_err *e)
{
	if ((*be = store_backend_for(path, e)) == NULL)
		return e != NULL ? e->code : CKPT_EINVAL;
	return (*be)->open_root(path, create, mode, fd, e);
}

int
store_remove_tree(const struct store_backend *be, int dirfd, const char *name,
    ckd_err *e)
{
	if (name == NULL || name[0] == '\0' || strchr(name, '/') != NULL ||
	    strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return err_set(e, CKPT_EINVAL, "bad name to remove: %s",
		    name != NULL ? name : "(null)");
	return be->remove_tree(dirfd, name, e);
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

/* Remove the leftover dirfd/name unless a live save owns it (locked):
 * 0 removed or absent, CKPT_EBUSY owned, other codes on errors. */
static int
remove_unowned(const struct store_backend *be, int dirfd, const char *name,
    ckd_err *e)
{
	int fd, r;

	if ((fd = be->open_dir(dirfd, name)) < 0) {
		if (errno == ENOENT)
			return 0;
		if (errno == ENOTDIR || errno == ELOOP)
			return store_remove_tree(be, dirfd, name, e);
		return err_errno(e, errno, "open %s", name);
	}
	if ((r = be->lock(fd)) <= 0) {
		r = r == 0 ? err_set(e, CKPT_EBUSY, "%s belongs to a save in "
		    "progress", name) : err_errno(e, errno, "lock %s", name);
		be->close(fd);
		return r;
	}
	/* Held: no save can own it now; remove it while holding the lock. */
	r = be->same(dirfd, name, fd) ? store_remove_tree(be, dirfd, name,
	    e) : 0;
	be->close(fd);
	return r;
}

/*
 * remove_unowned for the tmp dir a save is about to create. A collector of
 * leftovers (the start-up sweep, a root being loaded) holds the lock of a
 * crash's leftover only while it removes it, so a locked tmp dir is waited
 * for a little: after a restart, a client sending the interrupted step
 * again must not fail because the sweep is removing that step's leftover
 * at the same moment. A save of another live process holds it for longer
 * and still fails.
 */
#define STORE_BEGIN_WAIT_MS 3000
#define STORE_BEGIN_POLL_MS 10

static int
remove_tmp_leftover(const struct store_backend *be, int dirfd, const char *tmp,
    ckd_err *e)
{
	struct timespec ts = { 0, STORE_BEGIN_POLL_MS * 1000000L };
	ckd_err te;
	int r, waited;

	/* Each attempt reports into te: the error of an attempt that a
	 * later one overcame must not reach the save (it would fail a save
	 * that went on well, with a stale "belongs to a save" message). */
	for (waited = 0;; waited += STORE_BEGIN_POLL_MS) {
		memset(&te, 0, sizeof te);
		r = remove_unowned(be, dirfd, tmp, &te);
		if (r != CKPT_EBUSY || waited >= STORE_BEGIN_WAIT_MS)
			break;
		nanosleep(&ts, NULL);
	}
	if (r != 0 && e != NULL)
		*e = te;
	return r;
}

int
store_begin(const struct store_backend *be, int rootfd, const char *name,
    mode_t dirmode, int *tmpfd, ckd_err *e)
{
	char tmp[300];
	struct stat st;
	ckd_err te;
	int r, fd, tries;

	if ((r = tmp_name(name, tmp, sizeof(tmp), e)) != 0)
		return r;
	if (be->stat(rootfd, name, &st) == 0)
		return err_set(e, CKPT_EEXIST, "step directory %s already "
		    "exists", name);
	if (errno != ENOENT)
		return err_errno(e, errno, "stat %s", name);
	/* A leftover of a crash goes; the tmp dir of a save in progress
	 * (another process) stays and this save fails. A collector may take
	 * the new directory between mkdir and flock: then start again. */
	for (tries = 0; tries < 8; tries++) {
		if ((r = remove_tmp_leftover(be, rootfd, tmp, e)) != 0)
			return r;
		memset(&te, 0, sizeof te);
		if ((r = be->mkdir(rootfd, tmp, dirmode, &fd, &te)) != 0) {
			if (r == CKPT_EEXIST)
				continue;       /* taken meanwhile: not an error */
			if (e != NULL)
				*e = te;
			return r;
		}
		if (be->lock(fd) == 1 && be->same(rootfd, tmp, fd)) {
			*tmpfd = fd;
			return 0;
		}
		be->close(fd);
	}
	return err_set(e, CKPT_EBUSY, "cannot create %s: it keeps being "
	    "replaced", tmp);
}

int
store_mkdir_item(const struct store_backend *be, int tmpfd, const char *item,
    mode_t dirmode, int *itemfd, ckd_err *e)
{
	if (!store_valid_component(item))
		return err_set(e, CKPT_EINVAL, "invalid item name: %s",
		    item != NULL ? item : "(null)");
	return be->mkdir(tmpfd, item, dirmode, itemfd, e);
}

int
store_open_item(const struct store_backend *be, int tmpfd, const char *item,
    mode_t dirmode, int *itemfd, ckd_err *e)
{
	int r;

	r = store_mkdir_item(be, tmpfd, item, dirmode, itemfd, e);
	if (r != CKPT_EEXIST)
		return r;
	if ((*itemfd = be->open_dir(tmpfd, item)) < 0)
		return err_errno(e, errno, "item directory %s", item);
	memset(e, 0, sizeof *e);
	return 0;
}

int
store_commit_synced(const struct store_backend *be, int rootfd,
    const char *name, ckd_err *e)
{
	char tmp[300];
	int r;

	if ((r = tmp_name(name, tmp, sizeof(tmp), e)) != 0)
		return r;
	if (be->rename(rootfd, tmp, rootfd, name, 1) != 0) {
		if (errno == EEXIST || errno == ENOTEMPTY)
			return err_set(e, CKPT_EEXIST, "step directory %s "
			    "already exists", name);
		return err_errno(e, errno, "rename %s to %s", tmp, name);
	}
	if (be->fsync(rootfd) != 0)
		return err_errno(e, errno, "fsync root after committing %s",
		    name);
	return 0;
}

int
store_abort(const struct store_backend *be, int rootfd, const char *name,
    ckd_err *e)
{
	char tmp[300];
	int r;

	if ((r = tmp_name(name, tmp, sizeof(tmp), e)) != 0)
		return r;
	return store_remove_tree(be, rootfd, tmp, e);
}

/* When the removal after hiding fails, the step is already gone from
 * listings (the next collection of leftovers finishes the job) and the
 * error is returned. */
int
store_delete_step(const struct store_backend *be, int rootfd, const char *name,
    const char *subdir, ckd_err *e)
{
	char hidden[300];
	struct stat st;
	int sfd, r;

	if (!store_valid_component(name))
		return err_set(e, CKPT_EINVAL, "invalid step name: %s",
		    name != NULL ? name : "(null)");
	if (be->stat(rootfd, name, &st) != 0) {
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
		if (be->make_dir(rootfd, subdir, st.st_mode & 0777) != 0 &&
		    errno != EEXIST)
			return err_errno(e, errno, "mkdir %s", subdir);
		if ((sfd = be->open_dir(rootfd, subdir)) < 0)
			return err_errno(e, errno, "open %s", subdir);
		if (be->rename(rootfd, name, sfd, name, 1) != 0) {
			r = errno == EEXIST || errno == ENOTEMPTY ?
			    err_set(e, CKPT_EEXIST, "%s/%s already exists",
			    subdir, name) :
			    err_errno(e, errno, "move %s to %s", name, subdir);
			be->close(sfd);
			return r;
		}
		r = store_fsync_dir(be, sfd, e);
		be->close(sfd);
		if (r == 0)
			r = store_fsync_dir(be, rootfd, e);
		return r;
	}
	if ((size_t)snprintf(hidden, sizeof(hidden), ".%s%s", name,
	    STORE_DEL_SUFFIX) >= sizeof(hidden))
		return err_set(e, CKPT_EINVAL, "step name too long: %s", name);
	if ((r = remove_unowned(be, rootfd, hidden, e)) != 0)
		return r;
	/* Hold the step's lock while it is hidden and removed, so that a
	 * collector of leftovers leaves it to us. */
	sfd = be->open_dir(rootfd, name);
	if (sfd >= 0 && be->lock(sfd) != 1) {
		be->close(sfd);
		sfd = -1;
	}
	if (be->rename(rootfd, name, rootfd, hidden, 0) != 0) {
		r = errno == ENOENT ? err_set(e, CKPT_ENOTFOUND, "step %s not "
		    "found", name) : err_errno(e, errno, "rename %s", name);
		goto out;
	}
	if ((r = store_fsync_dir(be, rootfd, e)) != 0)
		goto out;
	r = store_remove_tree(be, rootfd, hidden, e);
out:
	if (sfd >= 0)
		be->close(sfd);
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
store_collect_leftovers(const struct store_backend *be, int rootfd,
    const struct store_naming *nm, int flags, struct store_leftover **out,
    size_t *nout, ckd_err *e)
{
	struct store_leftover *v = NULL, *nv;
	size_t len = 0, cap = 0, l;
	struct store_list *d;
	const char *dname;
	struct stat st;
	char base[256];
	uint64_t step;
	int r = 0, rr, removed = 0, ours, tmp, k;
	ckd_err re;

	if (out != NULL) {
		*out = NULL;
		*nout = 0;
	}
	if ((d = be->list_open(rootfd, e)) == NULL)
		return e != NULL ? e->code : CKPT_EIO;
	for (;;) {
		if ((k = be->list_next(d, &dname)) <= 0) {
			if (k < 0)
				r = err_errno(e, errno, "read root directory");
			break;
		}
		l = strlen(dname);
		tmp = store_ends_with(dname, CKPT_TMP_SUFFIX) &&
		    l > strlen(CKPT_TMP_SUFFIX) && l < sizeof(base);
		ours = 0;
		if (tmp) {
			memcpy(base, dname, l - strlen(CKPT_TMP_SUFFIX));
			base[l - strlen(CKPT_TMP_SUFFIX)] = '\0';
			ours = nm != NULL &&
			    store_parse_step_name(nm, base, &step) == 0;
			if (!ours && !(flags & STORE_LEFTOVER_ANY_NAMING))
				continue;
		} else if (!(dname[0] == '.' &&
		    store_ends_with(dname, STORE_DEL_SUFFIX) &&
		    l > 1 + strlen(STORE_DEL_SUFFIX)) &&
		    !((flags & STORE_LEFTOVER_ORBAX) &&
		    store_is_orbax_tmp(dname))) {
			continue;
		}
		if (be->stat(rootfd, dname, &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		rr = remove_unowned(be, rootfd, dname, &re);
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
	be->list_close(d);
	if (removed > 0 && (rr = store_fsync_dir(be, rootfd, &re)) != 0 &&
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
