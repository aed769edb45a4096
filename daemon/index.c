/*
 * index.c - the LMDB step index (contract: index.h).
 *
 * Environment <state_dir>/index, MDB_NOTLS (read transactions are not tied
 * to threads), MDB_NOSYNC | MDB_NOMETASYNC (see "Durability" below), map
 * size 1 GiB, two named databases:
 *
 *   "roots": key = root key, value = the root path (marker: "this root has
 *            been indexed").
 *   "steps": key = root key, NUL, step as 8 bytes big-endian; value = one
 *            JSON object (compact):
 *            {"state":0,"init_ns":N,"commit_ns":N,"bytes":N,"name":"..",
 *             "metrics":"<JSON object text>","error":".."}
 *            (metrics and error only when present; bytes is stored as the
 *            int64 with the same bits).
 *
 * The root key is the root path bytes. A path too long for an LMDB key
 * (maxkeysize 511 with the 9 bytes of suffix) is replaced by "\x01xxh128:"
 * and the 32 hex digits of its XXH3-128, which cannot clash with a path
 * (paths are absolute).
 *
 * The index is a cache: a record that does not decode makes its root look
 * unindexed (known = 0, no records) so that the caller rebuilds it from
 * disk; a database file that LMDB calls invalid or corrupted, that is
 * shorter than its meta pages claim, or that a machine crash may have left
 * with unsynced pages (the "running" marker, below) is moved aside
 * ("data.mdb.corrupt") before LMDB maps it, and a new one is created.
 *
 * Durability: commits do not fsync (MDB_NOSYNC | MDB_NOMETASYNC; the
 * environment is synced once at index_close()). A crash of the machine may
 * lose the last transactions, which is harmless because the disk is the
 * truth: loading a root (mgr_load_run in manager.c) always scans the root
 * directory with root_scan_disk() and rewrites the root's records from what
 * it found (index_replace_root): committed steps missing from the index are
 * read back from their _CHECKPOINT_METADATA, records of steps no longer on
 * disk are dropped. What a lost transaction can lose for good is only the
 * error text of a failed save. The step data itself is made durable by the
 * save path (stepdir.c and syncbatch.c fsync files, directories and the
 * root) before its index record is written.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <lmdb.h>
#include <xxhash.h>

#include "index.h"

#define INDEX_MAPSIZE ((size_t)1 << 30)
#define INDEX_KEYMAX 512

struct index {
	MDB_env *env;
	MDB_dbi steps, roots;
	size_t maxkey;
	char dir[PATH_MAX];
	char note[PATH_MAX + 256];      /* what index_open found, or "" */
};

static int
mdb_fail(ckd_err *e, int rc, const char *what)
{
	if (rc == MDB_MAP_FULL)
		return err_set(e, CKPT_ENOSPC, "index %s: the index is full "
		    "(map size %zu bytes)", what, INDEX_MAPSIZE);
	if (rc > 0)
		return err_errno(e, rc, "index %s", what);
	return err_set(e, CKPT_EIO, "index %s: %s", what, mdb_strerror(rc));
}

/* mkdir -p with mode for the missing components. */
static int
mkdirs(const char *path, mode_t mode, ckd_err *e)
{
	char *p, *s;
	int r = 0;

	if ((p = strdup(path)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (p[0] != '\0' && mkdir(p, mode) != 0 && errno != EEXIST) {
			r = err_errno(e, errno, "create %s", p);
			break;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	free(p);
	return r;
}

/* ---- checking the file before LMDB maps it -------------------------------------
 *
 * LMDB maps data.mdb and trusts its meta pages: a file shorter than the
 * last page a meta page claims (power loss with MDB_NOSYNC, a full disk, a
 * partial copy) makes the first access past its end SIGBUS the daemon. So
 * before opening, both meta pages are read with pread and checked against
 * the file size. The layout (lmdb's mdb.c, format version 1, 64-bit):
 * each meta page is a 16-byte page header, then the MDB_meta: magic (u32)
 * at 0, version (u32) at 4, the two MDB_db records from 24 (the first
 * one's 4-byte md_pad holds the page size), mm_last_pg (u64) at 120 and
 * mm_txnid (u64) at 128. Page 0 holds meta 0, page 1 meta 1. */
#define IX_PAGEHDR 16
#define IX_MAGIC 0xBEEFC0DEu
#define IX_META_LEN (IX_PAGEHDR + 136)

static uint32_t
ix_u32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof v);
	return v;
}

static uint64_t
ix_u64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof v);
	return v;
}

/* 0: data.mdb is absent or every page its meta pages claim is in the
 * file; 1: it is short or its meta pages are unreadable (*why says).
 * Only the lmdb build this file is compiled with (64-bit pgno_t) is
 * checked; anything else is left to LMDB. */
static int
ix_file_short(const char *path, char *why, size_t whylen)
{
	unsigned char m[2][IX_META_LEN];
	uint64_t psize = 0, last = 0, need;
	struct stat st;
	ssize_t n;
	int fd, i, r = 1;

	if (sizeof(size_t) != 8)
		return 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return 0;       /* absent: LMDB creates it */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "not a readable regular file");
		goto out;
	}
	if (st.st_size == 0) {
		r = 0;          /* a new file: LMDB initialises it */
		goto out;
	}
	for (i = 0; i < 2; i++) {
		n = pread(fd, m[i], IX_META_LEN, (off_t)(i * psize));
		if (n != IX_META_LEN || ix_u32(m[i] + IX_PAGEHDR) != IX_MAGIC) {
			snprintf(why, whylen, "meta page %d unreadable", i);
			goto out;
		}
		if (i == 0) {
			psize = ix_u32(m[0] + IX_PAGEHDR + 24);
			if (psize < 512 || psize > 65536 ||
			    (psize & (psize - 1)) != 0) {
				snprintf(why, whylen, "bad page size %" PRIu64,
				    psize);
				goto out;
			}
		}
		if (ix_u64(m[i] + IX_PAGEHDR + 120) > last)
			last = ix_u64(m[i] + IX_PAGEHDR + 120);
	}
	if (last > (UINT64_MAX / psize) - 1) {
		snprintf(why, whylen, "bad last page %" PRIu64, last);
		goto out;
	}
	need = (last + 1) * psize;
	if ((uint64_t)st.st_size < need || (uint64_t)st.st_size < 2 * psize) {
		snprintf(why, whylen, "%jd bytes, but its meta pages need %"
		    PRIu64, (intmax_t)st.st_size, need);
		goto out;
	}
	r = 0;
out:
	close(fd);
	return r;
}

/* ---- unclean shutdown ---------------------------------------------------------
 *
 * While the daemon runs, <index>/running holds the boot id of the machine
 * (made durable); index_close() removes it after syncing the environment.
 * Found at start with another boot id, it means the machine went down while
 * commits were not synced: the file may hold pages that never reached the
 * disk, so the index is rebuilt from the disk (it is a cache). With the
 * same boot id only the process died: the page cache kept every commit and
 * LMDB's copy-on-write pages are consistent, so the index is kept. */
#define IX_MARKER "running"

static void
ix_boot_id(char *buf, size_t len)
{
	ssize_t n = -1;
	int fd;

	buf[0] = '\0';
	if ((fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY |
	    O_CLOEXEC)) >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

/* 1 when the marker of an earlier run says the machine crashed. */
static int
ix_machine_crashed(const char *dir)
{
	char path[PATH_MAX + 32], old[64], now[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "%s/" IX_MARKER, dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return 0;
	n = read(fd, old, sizeof old - 1);
	close(fd);
	old[n > 0 ? n : 0] = '\0';
	old[strcspn(old, "\n")] = '\0';
	ix_boot_id(now, sizeof now);
	/* Same boot: only the process died (the caller says so). */
	return now[0] != '\0' && strcmp(old, now) == 0 ? 2 : 1;
}

/* Best effort: without the marker, a machine crash goes unnoticed and
 * only the size check above protects the next start. */
static void
ix_mark_running(const char *dir)
{
	char path[PATH_MAX + 32], id[64];
	int fd;

	snprintf(path, sizeof path, "%s/" IX_MARKER, dir);
	ix_boot_id(id, sizeof id);
	strcat(id, "\n");
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) < 0)
		return;
	if (write(fd, id, strlen(id)) == (ssize_t)strlen(id))
		(void)fsync(fd);
	close(fd);
}

/* Move the database aside (one earlier copy is kept) for a new one. */
static int
ix_move_aside(const char *dir, ckd_err *e)
{
	char path[PATH_MAX + 32], aside[PATH_MAX + 32];

	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	snprintf(aside, sizeof(aside), "%s/data.mdb.corrupt", dir);
	if (rename(path, aside) != 0 && errno != ENOENT)
		return err_errno(e, errno, "move aside %s", path);
	snprintf(path, sizeof(path), "%s/lock.mdb", dir);
	(void)unlink(path);
	return 0;
}

static int
env_open(const char *dir, MDB_env **out, ckd_err *e)
{
	MDB_env *env;
	int rc, dead;

	if ((rc = mdb_env_create(&env)) != 0)
		return mdb_fail(e, rc, "create");
	if ((rc = mdb_env_set_maxdbs(env, 4)) != 0 ||
	    (rc = mdb_env_set_mapsize(env, INDEX_MAPSIZE)) != 0 ||
	    (rc = mdb_env_open(env, dir, MDB_NOTLS | MDB_NOSYNC |
	    MDB_NOMETASYNC, 0600)) != 0) {
		mdb_env_close(env);
		return rc;
	}
	(void)mdb_reader_check(env, &dead);
	*out = env;
	return 0;
}

int
index_open(const char *state_dir, struct index **out, ckd_err *e)
{
	struct index *ix;
	char dir[PATH_MAX], path[PATH_MAX + 32], why[160];
	MDB_txn *txn;
	int rc, r, crashed;

	*out = NULL;
	if (state_dir == NULL || state_dir[0] == '\0')
		return err_set(e, CKPT_EINVAL, "no state directory");
	if ((size_t)snprintf(dir, sizeof(dir), "%s/index", state_dir) >=
	    sizeof(dir))
		return err_set(e, CKPT_EINVAL, "state directory path too long");
	if ((r = mkdirs(dir, 0700, e)) != 0)
		return r;
	if ((ix = calloc(1, sizeof(*ix))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	why[0] = '\0';
	crashed = ix_machine_crashed(dir);
	if (crashed == 1)
		snprintf(why, sizeof why, "the machine went down while ckptd "
		    "ran (commits were not synced)");
	if (why[0] != '\0' || ix_file_short(path, why, sizeof why)) {
		/* Never map it: rebuild from the disk (roots are rescanned
		 * when opened). */
		snprintf(ix->note, sizeof ix->note, "%s: %s; started a new "
		    "index (rebuilt from the checkpoint directories)", path,
		    why);
		if ((r = ix_move_aside(dir, e)) != 0) {
			free(ix);
			return r;
		}
	} else if (crashed == 2) {
		snprintf(ix->note, sizeof ix->note, "ckptd did not stop "
		    "cleanly last time; the index is kept (the machine did "
		    "not restart)");
	}
	rc = env_open(dir, &ix->env, e);
	if (rc == MDB_INVALID || rc == MDB_CORRUPTED ||
	    rc == MDB_VERSION_MISMATCH || rc == MDB_PANIC) {
		/* A cache that cannot be read: start a new one. */
		snprintf(ix->note, sizeof ix->note, "%s: %s; started a new "
		    "index", path, mdb_strerror(rc));
		if ((r = ix_move_aside(dir, e)) != 0) {
			free(ix);
			return r;
		}
		rc = env_open(dir, &ix->env, e);
	}
	if (rc != 0) {
		r = mdb_fail(e, rc, "open");
		free(ix);
		return r;
	}
	ix->maxkey = (size_t)mdb_env_get_maxkeysize(ix->env);
	if (ix->maxkey >= INDEX_KEYMAX)
		ix->maxkey = INDEX_KEYMAX - 1;
	if ((rc = mdb_txn_begin(ix->env, NULL, 0, &txn)) != 0)
		goto fail;
	if ((rc = mdb_dbi_open(txn, "steps", MDB_CREATE, &ix->steps)) != 0 ||
	    (rc = mdb_dbi_open(txn, "roots", MDB_CREATE, &ix->roots)) != 0) {
		mdb_txn_abort(txn);
		goto fail;
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto fail;
	snprintf(ix->dir, sizeof ix->dir, "%s", dir);
	ix_mark_running(dir);
	*out = ix;
	return 0;
fail:
	r = mdb_fail(e, rc, "open databases");
	mdb_env_close(ix->env);
	free(ix);
	return r;
}

const char *
index_open_note(const struct index *ix)
{
	return ix != NULL ? ix->note : "";
}

void
index_close(struct index *ix)
{
	char path[PATH_MAX + 32];

	if (ix == NULL)
		return;
	/* Clean shutdown: all on disk, then the marker goes. */
	if (mdb_env_sync(ix->env, 1) == 0) {
		snprintf(path, sizeof path, "%s/" IX_MARKER, ix->dir);
		(void)unlink(path);
	}
	mdb_env_close(ix->env);
	free(ix);
}

/* ---- keys and values ---------------------------------------------------------- */

/* Root key into buf (INDEX_KEYMAX bytes); returns its length. */
static size_t
root_key(const struct index *ix, const char *root, char *buf)
{
	size_t n = strlen(root);
	XXH128_hash_t h;

	if (n > 0 && n + 9 <= ix->maxkey) {
		memcpy(buf, root, n);
		return n;
	}
	h = XXH3_128bits(root, n);
	return (size_t)snprintf(buf, INDEX_KEYMAX, "\001xxh128:%016" PRIx64
	    "%016" PRIx64, h.high64, h.low64);
}

static size_t
step_key(const struct index *ix, const char *root, uint64_t step, char *buf)
{
	size_t n = root_key(ix, root, buf);
	int i;

	buf[n++] = '\0';
	for (i = 7; i >= 0; i--)
		buf[n++] = (char)(step >> (8 * i));
	return n;
}

static uint64_t
be64(const unsigned char *b)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static char *
encode_step(const struct index_step *s)
{
	json_t *o;
	char *text = NULL;

	o = json_pack("{s:i, s:I, s:I, s:I, s:s}", "state", s->state,
	    "init_ns", (json_int_t)s->init_ns,
	    "commit_ns", (json_int_t)s->commit_ns,
	    "bytes", (json_int_t)s->bytes, "name", s->name);
	if (o == NULL)
		return NULL;
	if (s->metrics_json != NULL && json_object_set_new(o, "metrics",
	    json_string(s->metrics_json)) != 0)
		goto out;
	if (s->error != NULL && json_object_set_new(o, "error",
	    json_string(s->error)) != 0)
		goto out;
	text = json_dumps(o, JSON_COMPACT);
out:
	json_decref(o);
	return text;
}

/* 0 ok, -1 malformed, CKPT_ENOMEM */
static int
decode_step(const MDB_val *v, uint64_t step, struct index_step *s)
{
	json_t *o, *x;
	const char *str;
	int r = -1;

	memset(s, 0, sizeof(*s));
	s->step = step;
	if ((o = json_loadb(v->mv_data, v->mv_size, JSON_REJECT_DUPLICATES,
	    NULL)) == NULL || !json_is_object(o))
		goto out;
	if (!json_is_integer(x = json_object_get(o, "state")))
		goto out;
	s->state = (int)json_integer_value(x);
	if (s->state != INDEX_COMMITTED && s->state != INDEX_FAILED &&
	    s->state != INDEX_INTERRUPTED)
		goto out;
	if (!json_is_integer(x = json_object_get(o, "init_ns")))
		goto out;
	s->init_ns = json_integer_value(x);
	if (!json_is_integer(x = json_object_get(o, "commit_ns")))
		goto out;
	s->commit_ns = json_integer_value(x);
	if (!json_is_integer(x = json_object_get(o, "bytes")))
		goto out;
	s->bytes = (uint64_t)json_integer_value(x);
	if (!json_is_string(x = json_object_get(o, "name")) ||
	    json_string_length(x) >= sizeof(s->name))
		goto out;
	memcpy(s->name, json_string_value(x), json_string_length(x) + 1);
	x = json_object_get(o, "metrics");
	if (x != NULL) {
		if (!json_is_string(x))
			goto out;
		str = json_string_value(x);
		if ((s->metrics_json = strdup(str)) == NULL) {
			r = CKPT_ENOMEM;
			goto out;
		}
	}
	x = json_object_get(o, "error");
	if (x != NULL) {
		if (!json_is_string(x))
			goto out;
		if ((s->error = strdup(json_string_value(x))) == NULL) {
			r = CKPT_ENOMEM;
			goto out;
		}
	}
	r = 0;
out:
	if (r != 0) {
		free(s->metrics_json);
		free(s->error);
		s->metrics_json = s->error = NULL;
	}
	json_decref(o);
	return r;
}

void
index_steps_free(struct index_step *steps, size_t n)
{
	size_t i;

	if (steps == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(steps[i].metrics_json);
		free(steps[i].error);
	}
	free(steps);
}

/* ---- operations ------------------------------------------------------------------- */

int
index_load_root(struct index *ix, const char *root,
    struct index_step **steps, size_t *n, int *known, ckd_err *e)
{
	struct index_step *v = NULL, *nv;
	size_t len = 0, cap = 0, klen;
	char key[INDEX_KEYMAX];
	MDB_cursor *cur = NULL;
	MDB_txn *txn = NULL;
	MDB_val k, d;
	int rc, r = 0, op, bad = 0;

	*steps = NULL;
	*n = 0;
	*known = 0;
	if ((rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn)) != 0)
		return mdb_fail(e, rc, "read");
	klen = root_key(ix, root, key);
	k.mv_size = klen;
	k.mv_data = key;
	rc = mdb_get(txn, ix->roots, &k, &d);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		r = mdb_fail(e, rc, "read root");
		goto out;
	}
	*known = rc == 0;
	if ((rc = mdb_cursor_open(txn, ix->steps, &cur)) != 0) {
		r = mdb_fail(e, rc, "cursor");
		goto out;
	}
	k.mv_size = step_key(ix, root, 0, key);
	k.mv_data = key;
	for (op = MDB_SET_RANGE;; op = MDB_NEXT) {
		rc = mdb_cursor_get(cur, &k, &d, op);
		if (rc == MDB_NOTFOUND)
			break;
		if (rc != 0) {
			r = mdb_fail(e, rc, "read steps");
			goto out;
		}
		if (k.mv_size != klen + 9 || memcmp(k.mv_data, key, klen + 1))
			break;
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				goto out;
			}
			v = nv;
		}
		r = decode_step(&d, be64((const unsigned char *)k.mv_data +
		    klen + 1), &v[len]);
		if (r == CKPT_ENOMEM) {
			r = err_set(e, CKPT_ENOMEM, "out of memory");
			goto out;
		}
		if (r != 0) {
			/* a cache that does not decode: rebuild from disk */
			r = 0;
			bad = 1;
			break;
		}
		len++;
	}
	if (bad) {
		*known = 0;
		index_steps_free(v, len);
		v = NULL;
		len = 0;
	}
	*steps = v;
	*n = len;
	v = NULL;
	len = 0;
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	index_steps_free(v, len);
	return r;
}

static int
put_marker(struct index *ix, MDB_txn *txn, const char *root, ckd_err *e)
{
	char key[INDEX_KEYMAX];
	MDB_val k, d;
	int rc;

	k.mv_size = root_key(ix, root, key);
	k.mv_data = key;
	d.mv_size = strlen(root);
	d.mv_data = (void *)root;
	if ((rc = mdb_put(txn, ix->roots, &k, &d, 0)) != 0)
		return mdb_fail(e, rc, "write root");
	return 0;
}

static int
put_step(struct index *ix, MDB_txn *txn, const char *root,
    const struct index_step *s, ckd_err *e)
{
	char key[INDEX_KEYMAX], *text;
	MDB_val k, d;
	int rc;

	if (memchr(s->name, '\0', sizeof(s->name)) == NULL)
		return err_set(e, CKPT_EINVAL, "index: step name too long");
	if (s->state != INDEX_COMMITTED && s->state != INDEX_FAILED &&
	    s->state != INDEX_INTERRUPTED)
		return err_set(e, CKPT_EINVAL, "index: bad step state %d",
		    s->state);
	if ((text = encode_step(s)) == NULL)
		return err_set(e, CKPT_EINVAL, "index: cannot encode step %"
		    PRIu64 " (strings not UTF-8?)", s->step);
	k.mv_size = step_key(ix, root, s->step, key);
	k.mv_data = key;
	d.mv_size = strlen(text);
	d.mv_data = text;
	rc = mdb_put(txn, ix->steps, &k, &d, 0);
	free(text);
	if (rc != 0)
		return mdb_fail(e, rc, "write step");
	return 0;
}

static int
commit(MDB_txn *txn, ckd_err *e)
{
	int rc;

	if ((rc = mdb_txn_commit(txn)) != 0)
		return mdb_fail(e, rc, "commit");
	return 0;
}

int
index_roots(struct index *ix, char ***roots, size_t *n, ckd_err *e)
{
	char **v = NULL, **nv;
	size_t len = 0, cap = 0;
	MDB_cursor *cur = NULL;
	MDB_txn *txn = NULL;
	MDB_val k, d;
	int rc, r = 0, op;

	*roots = NULL;
	*n = 0;
	if ((rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn)) != 0)
		return mdb_fail(e, rc, "read");
	if ((rc = mdb_cursor_open(txn, ix->roots, &cur)) != 0) {
		r = mdb_fail(e, rc, "cursor");
		goto out;
	}
	for (op = MDB_FIRST;; op = MDB_NEXT) {
		if ((rc = mdb_cursor_get(cur, &k, &d, op)) == MDB_NOTFOUND)
			break;
		if (rc != 0) {
			r = mdb_fail(e, rc, "read roots");
			goto out;
		}
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				goto out;
			}
			v = nv;
		}
		if ((v[len] = strndup(d.mv_data, d.mv_size)) == NULL) {
			r = err_set(e, CKPT_ENOMEM, "out of memory");
			goto out;
		}
		len++;
	}
	*roots = v;
	*n = len;
	v = NULL;
	len = 0;
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	while (len > 0)
		free(v[--len]);
	free(v);
	return r;
}

int
index_put_step(struct index *ix, const char *root,
    const struct index_step *s, ckd_err *e)
{
	MDB_txn *txn;
	int rc, r;

	if ((rc = mdb_txn_begin(ix->env, NULL, 0, &txn)) != 0)
		return mdb_fail(e, rc, "begin");
	if ((r = put_marker(ix, txn, root, e)) != 0 ||
	    (r = put_step(ix, txn, root, s, e)) != 0) {
		mdb_txn_abort(txn);
		return r;
	}
	return commit(txn, e);
}

int
index_put_committed(struct index *ix, const char *root, uint64_t step,
    const char *name, int64_t init_ns, int64_t commit_ns, uint64_t bytes,
    const char *metrics_json, ckd_err *e)
{
	struct index_step rec;

	memset(&rec, 0, sizeof rec);
	rec.step = step;
	rec.state = INDEX_COMMITTED;
	rec.init_ns = init_ns;
	rec.commit_ns = commit_ns;
	rec.bytes = bytes;
	snprintf(rec.name, sizeof rec.name, "%s", name);
	rec.metrics_json = (char *)metrics_json;
	return index_put_step(ix, root, &rec, e);
}

int
index_del_step(struct index *ix, const char *root, uint64_t step,
    ckd_err *e)
{
	char key[INDEX_KEYMAX];
	MDB_txn *txn;
	MDB_val k;
	int rc;

	if ((rc = mdb_txn_begin(ix->env, NULL, 0, &txn)) != 0)
		return mdb_fail(e, rc, "begin");
	k.mv_size = step_key(ix, root, step, key);
	k.mv_data = key;
	rc = mdb_del(txn, ix->steps, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return mdb_fail(e, rc, "delete step");
	}
	return commit(txn, e);
}

int
index_replace_root(struct index *ix, const char *root,
    const struct index_step *steps, size_t n, ckd_err *e)
{
	char key[INDEX_KEYMAX];
	MDB_cursor *cur = NULL;
	MDB_txn *txn;
	MDB_val k, d;
	size_t klen, i;
	int rc, r = 0;

	if ((rc = mdb_txn_begin(ix->env, NULL, 0, &txn)) != 0)
		return mdb_fail(e, rc, "begin");
	if ((rc = mdb_cursor_open(txn, ix->steps, &cur)) != 0) {
		r = mdb_fail(e, rc, "cursor");
		goto fail;
	}
	klen = root_key(ix, root, key);
	(void)step_key(ix, root, 0, key);
	for (;;) {
		/* seek afresh after every delete: simple and obviously right */
		k.mv_size = klen + 9;
		k.mv_data = key;
		if ((rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE)) != 0)
			break;
		if (k.mv_size != klen + 9 || memcmp(k.mv_data, key, klen + 1))
			break;
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	if (rc != 0 && rc != MDB_NOTFOUND) {
		r = mdb_fail(e, rc, "clear root");
		goto fail;
	}
	mdb_cursor_close(cur);
	cur = NULL;
	for (i = 0; i < n; i++)
		if ((r = put_step(ix, txn, root, &steps[i], e)) != 0)
			goto fail;
	if ((r = put_marker(ix, txn, root, e)) != 0)
		goto fail;
	return commit(txn, e);
fail:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return r;
}
