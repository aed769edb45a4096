/*
 * backend_s3.c - the store's file operations on an S3 object store
 * (contract: backend.h; the client is s3.c).
 *
 * A root is s3://bucket/prefix; a directory is a key prefix ending in '/'
 * (nothing is written to make one); a file is one object. The commit
 * protocol of stepdir.c is read the object-store way, so the format code
 * stays the same over both backends:
 *
 *   mkdir <root>/<n>.ckptd-tmp   PUT the marker object <prefix>/<n>.ckptd-tmp
 *                                (the step is in progress); its files are
 *                                written in place, under <prefix>/<n>/
 *   _CHECKPOINT_METADATA         created in that directory: held in memory
 *                                by the backend, not uploaded by fsync
 *   rename <n>.ckptd-tmp -> <n>  the commit: refuse when <n>/
 *                                _CHECKPOINT_METADATA exists, PUT it (last
 *                                object of the step), DELETE the marker
 *   rename <n> -> .<n>.ckptd-del PUT the marker .<n>.ckptd-del, then DELETE
 *                                <n>/_CHECKPOINT_METADATA first
 *   remove_tree                  the objects under <n>/ (the metadata
 *                                first), then the marker
 *
 * Listing a directory shows each marker as the directory it names and
 * hides the prefix it covers, so a step is listed as committed only when
 * no save or delete of it is in progress. A step's own files are only
 * ever created by a save, which ends by the commit above.
 *
 * Handles are real file descriptors: a file is a memfd holding its bytes
 * (written by the format code, uploaded by fsync; filled by a GET in
 * open_read, so a restore hands the client an fd it can mmap: STORE_BE_FDS),
 * a directory an empty memfd. What each one names is kept in a table keyed
 * by the descriptor, under a mutex held for a lookup only, never across a
 * request.
 *
 * The lock of a tmp dir (a live save's) is this process's: a marker whose
 * handle no live save holds is a leftover. Two daemons writing one prefix
 * would need a lease object (not done).
 *
 * Endpoint and credentials: the daemon's environment and AWS files
 * (s3conf.c), read once, at the first root; never logged.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend.h"
#include "layout.h"
#include "s3.h"

#define S3B_META STORE_STEP_METADATA
#define S3B_DEV ((dev_t)0x53330000)     /* st_dev of every s3 handle */
#define S3B_MAX_LIST (1u << 20)         /* entries of one directory */

enum s3b_kind {
	S3B_DIR = 1,
	S3B_FILE = 2,           /* being written */
};

struct s3b_handle {
	int kind;
	int root;               /* a root's own handle (its children may be
	                         * markers) */
	int held;               /* a tmp dir this handle holds (a live save) */
	int meta;               /* the _CHECKPOINT_METADATA of a step in
	                         * progress: kept for the commit */
	char *bucket;
	char *key;              /* dir: prefix ("" or ending in '/'); file:
	                         * the object */
	char *step;             /* meta: the step's prefix */
};

/* A directory made (make_dir) before any object is in it. */
struct s3b_made {
	struct s3b_made *next;
	char *bucket, *key;
};

/* A _CHECKPOINT_METADATA waiting for its commit. */
struct s3b_pending {
	struct s3b_pending *next;
	char *bucket, *step;
	char *data;
	size_t len;
};

static struct {
	pthread_mutex_t lock;
	struct s3_client *cli;
	struct s3b_handle **v;          /* by descriptor */
	size_t n;
	struct s3b_pending *pending;
	struct s3b_made *made;          /* a few names per root */
} S3B = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- helpers ------------------------------------------------------------ */

/* errno for a CKPT_E* code (operations without a ckd_err). */
static int
s3b_errno(int code)
{
	switch (code) {
	case CKPT_EACCES: return EACCES;
	case CKPT_ENOSPC: return ENOSPC;
	case CKPT_ENOTFOUND: return ENOENT;
	case CKPT_EEXIST: return EEXIST;
	case CKPT_EINVAL: return EINVAL;
	case CKPT_ENOMEM: return ENOMEM;
	case CKPT_ETIMEDOUT: return ETIMEDOUT;
	default: return EIO;
	}
}

static void
s3b_free(struct s3b_handle *h)
{
	if (h == NULL)
		return;
	free(h->bucket);
	free(h->key);
	free(h->step);
	free(h);
}

static struct s3_client *
s3b_client(void)
{
	struct s3_client *c;

	pthread_mutex_lock(&S3B.lock);
	c = S3B.cli;
	pthread_mutex_unlock(&S3B.lock);
	return c;
}

/* A copy of what fd names (the caller frees it), or NULL (EBADF). */
static struct s3b_handle *
s3b_get(int fd)
{
	struct s3b_handle *h = NULL, *c = NULL;

	pthread_mutex_lock(&S3B.lock);
	if (fd >= 0 && (size_t)fd < S3B.n)
		h = S3B.v[fd];
	if (h != NULL && (c = calloc(1, sizeof *c)) != NULL) {
		*c = *h;
		c->bucket = strdup(h->bucket);
		c->key = strdup(h->key);
		c->step = h->step != NULL ? strdup(h->step) : NULL;
		if (c->bucket == NULL || c->key == NULL ||
		    (h->step != NULL && c->step == NULL)) {
			s3b_free(c);
			c = NULL;
		}
	}
	pthread_mutex_unlock(&S3B.lock);
	if (c == NULL)
		errno = h == NULL ? EBADF : ENOMEM;
	return c;
}

/* A new handle: a memfd named for h (which it takes). -1, errno. */
static int
s3b_add(struct s3b_handle *h)
{
	struct s3b_handle **nv, *stale;
	size_t n;
	int fd;

	if ((fd = memfd_create("ckptd-s3", MFD_CLOEXEC)) < 0) {
		s3b_free(h);
		return -1;
	}
	pthread_mutex_lock(&S3B.lock);
	if ((size_t)fd >= S3B.n) {
		n = (size_t)fd + 64;
		if ((nv = realloc(S3B.v, n * sizeof *nv)) == NULL) {
			pthread_mutex_unlock(&S3B.lock);
			close(fd);
			s3b_free(h);
			errno = ENOMEM;
			return -1;
		}
		memset(nv + S3B.n, 0, (n - S3B.n) * sizeof *nv);
		S3B.v = nv;
		S3B.n = n;
	}
	/* An entry at a number the kernel hands out again was closed
	 * behind the table's back: free it rather than leak it. */
	stale = S3B.v[fd];
	S3B.v[fd] = h;
	pthread_mutex_unlock(&S3B.lock);
	s3b_free(stale);
	return fd;
}

static char *
s3b_cat(const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *s;

	if (la + lb + lc >= S3_MAX_KEY) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	if ((s = malloc(la + lb + lc + 1)) == NULL)
		return NULL;
	memcpy(s, a, la);
	memcpy(s + la, b, lb);
	memcpy(s + la + lb, c, lc + 1);
	return s;
}

/* What a name under a root's handle means: a marker (in progress: tmp;
 * being deleted: del) of the step directory base, or a plain name. */
enum { S3B_PLAIN = 0, S3B_TMP = 1, S3B_DEL = 2 };

static int
s3b_marker(const char *name, char *base, size_t len)
{
	size_t l = strlen(name), lt = strlen(CKPT_TMP_SUFFIX),
	    ld = strlen(STORE_DEL_SUFFIX);

	if (l > lt && store_ends_with(name, CKPT_TMP_SUFFIX) &&
	    l - lt < len) {
		memcpy(base, name, l - lt);
		base[l - lt] = '\0';
		return S3B_TMP;
	}
	if (l > ld + 1 && name[0] == '.' &&
	    store_ends_with(name, STORE_DEL_SUFFIX) && l - ld - 1 < len) {
		memcpy(base, name + 1, l - ld - 1);
		base[l - ld - 1] = '\0';
		return S3B_DEL;
	}
	return S3B_PLAIN;
}

/* 1 when the object exists, 0 when not, -1 (errno) on an error. */
static int
s3b_exists(const char *bucket, const char *key)
{
	struct s3_stat st;
	ckd_err e;
	int r;

	r = s3_head(s3b_client(), bucket, key, &st, &e);
	if (r == 0)
		return 1;
	if (r == CKPT_ENOTFOUND)
		return 0;
	errno = s3b_errno(r);
	return -1;
}

/* 1 when some object has this prefix. */
static int
s3b_prefix_used(const char *bucket, const char *prefix)
{
	struct s3_list l;
	ckd_err e;
	int r;

	memset(&l, 0, sizeof l);
	if ((r = s3_list(s3b_client(), bucket, prefix, NULL, NULL, 1, &l,
	    &e)) != 0) {
		errno = s3b_errno(r);
		return -1;
	}
	r = l.nobjects > 0;
	s3_list_free(&l);
	return r;
}

/* Delete the object prefix+first (when given), then every object under
 * prefix. */
static int
s3b_delete_prefix(const char *bucket, const char *prefix, const char *first,
    ckd_err *e)
{
	struct s3_list l;
	size_t i, n;
	char *k;
	int r;

	if (first != NULL) {
		if ((k = s3b_cat(prefix, first, "")) == NULL)
			return err_errno(e, errno, "remove %s", prefix);
		r = s3_delete(s3b_client(), bucket, k, e);
		free(k);
		if (r != 0)
			return r;
	}
	do {
		memset(&l, 0, sizeof l);
		/* From the start each time: the objects deleted are gone. */
		if ((r = s3_list(s3b_client(), bucket, prefix, NULL, NULL, 1000,
		    &l, e)) != 0)
			return r;
		n = l.nobjects;
		for (i = 0; i < n && r == 0; i++)
			r = s3_delete(s3b_client(), bucket, l.objects[i].key,
			    e);
		s3_list_free(&l);
	} while (r == 0 && n > 0);
	return r;
}

/* ---- roots and directories ---------------------------------------------- */

/* One PUT up to 64 MiB (a data file of the save pipeline is at most 16 MiB
 * unless one tensor is larger); above it, parallel parts of 16 MiB. */
static const struct s3_opts s3b_opts = {
	.multipart_threshold = 64ull << 20,
};

static int
s3b_open_root(const char *path, int create, mode_t mode, int *dir,
    ckd_err *e)
{
	struct s3b_handle *h;
	struct s3_client *c;
	struct s3_list l;
	char *bucket = NULL, *prefix = NULL;
	int r, fd;

	(void)create;   /* a prefix exists through its objects */
	(void)mode;
	if ((r = s3_url_parse(path, &bucket, &prefix, e)) != 0)
		return r;
	pthread_mutex_lock(&S3B.lock);
	if (S3B.cli == NULL && (r = s3_client_new(&c, &s3b_opts, e)) == 0)
		S3B.cli = c;
	pthread_mutex_unlock(&S3B.lock);
	if (r != 0)
		goto fail;
	if ((h = calloc(1, sizeof *h)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto fail;
	}
	h->kind = S3B_DIR;
	h->root = 1;
	h->bucket = bucket;
	h->key = prefix[0] != '\0' ? s3b_cat(prefix, "/", "") : strdup("");
	free(prefix);
	bucket = prefix = NULL;
	if (h->key == NULL) {
		s3b_free(h);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	/* The bucket must be there and ours: a LIST of one key says both
	 * (wrong credentials: CKPT_EACCES with S3's code). */
	memset(&l, 0, sizeof l);
	if ((r = s3_list(s3b_client(), h->bucket, h->key, "/", NULL, 1, &l,
	    e)) != 0) {
		s3b_free(h);
		return r;
	}
	s3_list_free(&l);
	if ((fd = s3b_add(h)) < 0)
		return err_errno(e, errno, "open %s", path);
	*dir = fd;
	return 0;
fail:
	free(bucket);
	free(prefix);
	return r;
}

static int
s3b_root_name(int dir, char *buf, size_t len, ckd_err *e)
{
	struct s3b_handle *h;
	size_t kl;

	if ((h = s3b_get(dir)) == NULL)
		return err_errno(e, errno, "root handle");
	kl = strlen(h->key);
	if ((size_t)snprintf(buf, len, "s3://%s%s%.*s", h->bucket,
	    kl > 0 ? "/" : "", (int)(kl > 0 ? kl - 1 : 0), h->key) >= len) {
		s3b_free(h);
		return err_set(e, CKPT_ETOOBIG, "root name too long");
	}
	s3b_free(h);
	return 0;
}

/* The credentials decide at the first write. */
static int
s3b_writable(int dir)
{
	(void)dir;
	return 0;
}

/* A new handle for h, named under its parent's p (freed): as s3b_add,
 * ENOMEM when h's bucket or key could not be made. */
static int
s3b_add_child(struct s3b_handle *p, struct s3b_handle *h)
{
	s3b_free(p);
	if (h->bucket == NULL || h->key == NULL) {
		s3b_free(h);
		errno = ENOMEM;
		return -1;
	}
	return s3b_add(h);
}

/* A new directory handle for dir/name (no request). */
static int
s3b_child(int dir, const char *name, int held)
{
	struct s3b_handle *p, *h;
	char base[256];

	if ((p = s3b_get(dir)) == NULL)
		return -1;
	if ((h = calloc(1, sizeof *h)) == NULL) {
		s3b_free(p);
		errno = ENOMEM;
		return -1;
	}
	h->kind = S3B_DIR;
	h->held = held;
	h->bucket = p->bucket;
	p->bucket = NULL;
	if (strcmp(name, ".") == 0) {
		h->root = p->root;
		h->key = p->key;
		p->key = NULL;
	} else {
		if (p->root && s3b_marker(name, base, sizeof base) != S3B_PLAIN)
			name = base;    /* the step's files are in place */
		h->key = s3b_cat(p->key, name, "/");
	}
	return s3b_add_child(p, h);
}

/* 1 when make_dir made bucket/key in this process. */
static int
s3b_was_made(const char *bucket, const char *key)
{
	struct s3b_made *m;
	int r = 0;

	pthread_mutex_lock(&S3B.lock);
	for (m = S3B.made; m != NULL && !r; m = m->next)
		r = strcmp(m->bucket, bucket) == 0 && strcmp(m->key, key) == 0;
	pthread_mutex_unlock(&S3B.lock);
	return r;
}

/* 1 when the marker <dir><name><suffix> (prefix "" or ".") exists. */
static int
s3b_marked(const struct s3b_handle *p, const char *dot, const char *name,
    const char *suffix)
{
	char *a, *k;
	int r;

	if ((a = s3b_cat(p->key, dot, name)) == NULL)
		return -1;
	k = s3b_cat(a, suffix, "");
	free(a);
	if (k == NULL)
		return -1;
	r = s3b_exists(p->bucket, k);
	free(k);
	return r;
}

/* Whether dir/name is a directory: 0, or -1 (errno; ENOENT when not). */
static int
s3b_dir_exists(int dir, const char *name)
{
	struct s3b_handle *p;
	char base[256], *k = NULL;
	int r;

	if (strcmp(name, ".") == 0)
		return 0;
	if ((p = s3b_get(dir)) == NULL)
		return -1;
	if (p->root && s3b_marker(name, base, sizeof base) != S3B_PLAIN) {
		r = s3b_marked(p, "", name, "");
	} else if (p->root && ((r = s3b_marked(p, "", name,
	    CKPT_TMP_SUFFIX)) != 0 || (r = s3b_marked(p, ".", name,
	    STORE_DEL_SUFFIX)) != 0)) {
		/* A step being written or deleted: only its marker is. */
		r = r == 1 ? 0 : r;
	} else if ((k = s3b_cat(p->key, name, "/")) == NULL) {
		r = -1;
	} else if ((r = s3b_was_made(p->bucket, k)) == 0) {
		r = s3b_prefix_used(p->bucket, k);
	}
	free(k);
	s3b_free(p);
	if (r == 0)
		errno = ENOENT;
	return r == 1 ? 0 : -1;
}

static int
s3b_mkdir(int dir, const char *name, mode_t mode, int *sub, ckd_err *e)
{
	struct s3b_handle *p;
	char base[256], *k;
	int r, fd, held = 0;
	size_t i;

	(void)mode;
	if ((p = s3b_get(dir)) == NULL)
		return err_errno(e, errno, "mkdir %s", name);
	if (p->root && s3b_marker(name, base, sizeof base) == S3B_TMP) {
		/* A step begins: its marker says so to every lister. */
		if ((k = s3b_cat(p->key, name, "")) == NULL) {
			s3b_free(p);
			return err_errno(e, errno, "mkdir %s", name);
		}
		r = s3b_exists(p->bucket, k);
		if (r == 0)
			r = s3_put(s3b_client(), p->bucket, k, "", 0, e);
		else if (r == 1)
			r = err_set(e, CKPT_EEXIST, "mkdir %s: exists", name);
		else
			r = err_errno(e, errno, "mkdir %s", name);
		free(k);
		if (r != 0) {
			s3b_free(p);
			return r;
		}
		held = 1;
	}
	s3b_free(p);
	if ((fd = s3b_child(dir, name, 0)) < 0)
		return err_errno(e, errno, "mkdir %s", name);
	if (held) {
		pthread_mutex_lock(&S3B.lock);
		/* No other live handle may hold the same step. */
		for (i = 0; i < S3B.n; i++)
			if (S3B.v[i] != NULL && S3B.v[i]->held &&
			    strcmp(S3B.v[i]->key, S3B.v[fd]->key) == 0 &&
			    strcmp(S3B.v[i]->bucket, S3B.v[fd]->bucket) == 0)
				break;
		if (i == S3B.n)
			S3B.v[fd]->held = 1;
		pthread_mutex_unlock(&S3B.lock);
	}
	*sub = fd;
	return 0;
}

/* Directories exist through their objects: an empty one only here, in
 * this process, so that it can be opened until its first file. */
static int
s3b_make_dir(int dir, const char *name, mode_t mode)
{
	struct s3b_handle *p;
	struct s3b_made *m;

	(void)mode;
	if ((p = s3b_get(dir)) == NULL)
		return -1;
	if ((m = calloc(1, sizeof *m)) == NULL ||
	    (m->key = s3b_cat(p->key, name, "/")) == NULL) {
		free(m);
		s3b_free(p);
		errno = ENOMEM;
		return -1;
	}
	m->bucket = p->bucket;
	p->bucket = NULL;
	s3b_free(p);
	if (s3b_was_made(m->bucket, m->key)) {
		free(m->bucket);
		free(m->key);
		free(m);
		return 0;
	}
	pthread_mutex_lock(&S3B.lock);
	m->next = S3B.made;
	S3B.made = m;
	pthread_mutex_unlock(&S3B.lock);
	return 0;
}

static int
s3b_open_dir(int dir, const char *name)
{
	struct s3b_handle *p;
	int root;

	if ((p = s3b_get(dir)) == NULL)
		return -1;
	root = p->root;
	s3b_free(p);
	/* Below a step, a directory is opened by a name its step's writer
	 * chose or a listing gave (an item of a distributed step may have
	 * no object yet when its _METADATA is written): no request. What a
	 * root holds (steps, markers) is checked. */
	if (root && s3b_dir_exists(dir, name) != 0)
		return -1;
	return s3b_child(dir, name, 0);
}

static int
s3b_stat(int dir, const char *name, struct stat *st)
{
	struct s3b_handle *p;
	struct s3_stat ss;
	ckd_err e;
	char *k;
	int r;

	memset(st, 0, sizeof *st);
	if ((p = s3b_get(dir)) == NULL)
		return -1;
	if ((k = s3b_cat(p->key, name, "")) == NULL) {
		s3b_free(p);
		return -1;
	}
	r = s3_head(s3b_client(), p->bucket, k, &ss, &e);
	free(k);
	if (r == 0) {
		char base[256];

		/* A marker stands for the directory it names. */
		if (p->root && s3b_marker(name, base, sizeof base) != S3B_PLAIN)
			st->st_mode = S_IFDIR | 0700;
		else
			st->st_mode = S_IFREG | 0600;
		st->st_size = (off_t)ss.size;
		st->st_dev = S3B_DEV;
		st->st_mtim.tv_sec = (time_t)ss.mtime;
		s3b_free(p);
		return 0;
	}
	s3b_free(p);
	if (r != CKPT_ENOTFOUND) {
		errno = s3b_errno(r);
		return -1;
	}
	if (s3b_dir_exists(dir, name) != 0)
		return -1;
	st->st_mode = S_IFDIR | 0700;
	st->st_dev = S3B_DEV;
	return 0;
}

struct store_list {
	char **names;
	int *dirs;
	size_t n, next;
	int last_dir;
};

static int
s3b_list_add(struct store_list *l, size_t *cap, const char *name, int dir)
{
	char **nn;
	int *nd;

	if (l->n >= S3B_MAX_LIST) {
		errno = EOVERFLOW;
		return -1;
	}
	if (l->n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		if ((nn = realloc(l->names, *cap * sizeof *nn)) == NULL)
			return -1;
		l->names = nn;
		if ((nd = realloc(l->dirs, *cap * sizeof *nd)) == NULL)
			return -1;
		l->dirs = nd;
	}
	if ((l->names[l->n] = strdup(name)) == NULL)
		return -1;
	l->dirs[l->n++] = dir;
	return 0;
}

static void
s3b_list_close(struct store_list *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
	free(l->dirs);
	free(l);
}

static int
s3b_has_name(const struct store_list *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->names[i], name) == 0)
			return 1;
	return 0;
}

static struct store_list *
s3b_list_open(int dir, ckd_err *e)
{
	struct store_list *l, *all;
	struct s3b_handle *p;
	struct s3_list pg;
	char *token = NULL, base[256], *m;
	size_t cap = 0, cap2 = 0, i, pl;
	int r = 0, kind;

	if ((p = s3b_get(dir)) == NULL) {
		err_errno(e, errno, "list");
		return NULL;
	}
	if ((l = calloc(1, sizeof *l)) == NULL ||
	    (all = calloc(1, sizeof *all)) == NULL) {
		free(l);
		s3b_free(p);
		err_set(e, CKPT_ENOMEM, "out of memory");
		return NULL;
	}
	pl = strlen(p->key);
	do {
		memset(&pg, 0, sizeof pg);
		if ((r = s3_list(s3b_client(), p->bucket, p->key, "/", token,
		    1000, &pg, e)) != 0)
			break;
		for (i = 0; i < pg.nobjects && r == 0; i++)
			if (strlen(pg.objects[i].key) > pl)
				r = s3b_list_add(all, &cap2,
				    pg.objects[i].key + pl, 0);
		for (i = 0; i < pg.nprefixes && r == 0; i++) {
			size_t n = strlen(pg.prefixes[i]);

			if (n <= pl + 1)
				continue;
			pg.prefixes[i][n - 1] = '\0';
			r = s3b_list_add(all, &cap2, pg.prefixes[i] + pl, 1);
		}
		free(token);
		token = pg.next_token != NULL ? strdup(pg.next_token) : NULL;
		if (r != 0)
			r = err_errno(e, errno, "list");
		else if (pg.next_token != NULL && token == NULL)
			r = err_set(e, CKPT_ENOMEM, "out of memory");
		s3_list_free(&pg);
	} while (r == 0 && token != NULL);
	free(token);
	/* Markers stand for their directories and hide what they cover. */
	for (i = 0; i < all->n && r == 0; i++) {
		kind = p->root ? s3b_marker(all->names[i], base, sizeof base) :
		    S3B_PLAIN;
		if (kind != S3B_PLAIN && !all->dirs[i]) {
			r = s3b_list_add(l, &cap, all->names[i], 1);
			continue;
		}
		if (all->dirs[i] && p->root) {
			if ((m = s3b_cat(all->names[i], CKPT_TMP_SUFFIX, "")) ==
			    NULL) {
				r = -1;
				break;
			}
			kind = s3b_has_name(all, m);
			free(m);
			if (!kind && (m = s3b_cat(".", all->names[i],
			    STORE_DEL_SUFFIX)) != NULL) {
				kind = s3b_has_name(all, m);
				free(m);
			}
			if (kind)
				continue;
		}
		r = s3b_list_add(l, &cap, all->names[i], all->dirs[i]);
	}
	if (r < 0)
		r = err_errno(e, errno, "list");
	s3b_list_close(all);
	s3b_free(p);
	if (r != 0) {
		s3b_list_close(l);
		return NULL;
	}
	return l;
}

static int
s3b_list_next(struct store_list *l, const char **name)
{
	if (l->next >= l->n)
		return 0;
	l->last_dir = l->dirs[l->next];
	*name = l->names[l->next++];
	return 1;
}

static int
s3b_list_is_dir(struct store_list *l)
{
	return l->last_dir;
}

/* The commit and the hiding of a step (see the top of the file); other
 * renames (a move to another directory) are not possible in place. */
static int
s3b_rename(int odir, const char *oname, int ndir, const char *nname,
    int noreplace)
{
	struct s3b_handle *p = NULL;
	struct s3b_pending *pd, **pp;
	char base[256], base2[256], *k = NULL, *mk = NULL, *step = NULL;
	int r = -1, ko, kn;
	ckd_err e;

	(void)noreplace;        /* the commit never replaces */
	if (odir != ndir || (p = s3b_get(odir)) == NULL || !p->root) {
		errno = EXDEV;
		goto out;
	}
	ko = s3b_marker(oname, base, sizeof base);
	kn = s3b_marker(nname, base2, sizeof base2);
	if (ko == S3B_TMP && kn == S3B_PLAIN && strcmp(base, nname) == 0) {
		/* Commit: _CHECKPOINT_METADATA last, never over one. */
		if ((step = s3b_cat(p->key, nname, "/")) == NULL ||
		    (k = s3b_cat(step, S3B_META, "")) == NULL ||
		    (mk = s3b_cat(p->key, oname, "")) == NULL)
			goto out;
		if ((r = s3b_exists(p->bucket, k)) != 0) {
			if (r == 1)
				errno = EEXIST;
			r = -1;
			goto out;
		}
		pthread_mutex_lock(&S3B.lock);
		for (pp = &S3B.pending; (pd = *pp) != NULL; pp = &pd->next)
			if (strcmp(pd->bucket, p->bucket) == 0 &&
			    strcmp(pd->step, step) == 0)
				break;
		if (pd != NULL)
			*pp = pd->next;
		pthread_mutex_unlock(&S3B.lock);
		if (pd == NULL) {
			errno = EINVAL;         /* nothing to commit */
			goto out;
		}
		r = s3_put(s3b_client(), p->bucket, k, pd->data, pd->len, &e);
		free(pd->bucket);
		free(pd->step);
		free(pd->data);
		free(pd);
		if (r == 0)
			r = s3_delete(s3b_client(), p->bucket, mk, &e);
		if (r != 0) {
			errno = s3b_errno(r);
			r = -1;
		}
		goto out;
	}
	if (ko == S3B_PLAIN && kn == S3B_DEL && strcmp(base2, oname) == 0) {
		/* Hide: the marker first, then the commit goes. */
		if ((mk = s3b_cat(p->key, nname, "")) == NULL ||
		    (step = s3b_cat(p->key, oname, "/")) == NULL ||
		    (k = s3b_cat(step, S3B_META, "")) == NULL)
			goto out;
		if ((r = s3b_prefix_used(p->bucket, step)) <= 0) {
			if (r == 0)
				errno = ENOENT;
			r = -1;
			goto out;
		}
		if ((r = s3_put(s3b_client(), p->bucket, mk, "", 0, &e)) ==
		    0)
			r = s3_delete(s3b_client(), p->bucket, k, &e);
		if (r != 0) {
			errno = s3b_errno(r);
			r = -1;
		}
		goto out;
	}
	errno = EXDEV;
out:
	free(k);
	free(mk);
	free(step);
	s3b_free(p);
	return r;
}

/* Forget the _CHECKPOINT_METADATA held for bucket/step (an abort). */
static void
s3b_drop_pending(const char *bucket, const char *step)
{
	struct s3b_pending *pd = NULL, **pp;

	pthread_mutex_lock(&S3B.lock);
	for (pp = &S3B.pending; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->bucket, bucket) == 0 &&
		    strcmp((*pp)->step, step) == 0) {
			pd = *pp;
			*pp = pd->next;
			break;
		}
	pthread_mutex_unlock(&S3B.lock);
	if (pd != NULL) {
		free(pd->bucket);
		free(pd->step);
		free(pd->data);
		free(pd);
	}
}

static int
s3b_remove_tree(int dir, const char *name, ckd_err *e)
{
	struct s3b_handle *p;
	char base[256], *pre = NULL, *mk = NULL;
	int r, kind;

	if ((p = s3b_get(dir)) == NULL)
		return err_errno(e, errno, "remove %s", name);
	kind = p->root ? s3b_marker(name, base, sizeof base) : S3B_PLAIN;
	if ((pre = s3b_cat(p->key, kind != S3B_PLAIN ? base : name,
	    "/")) == NULL) {
		r = err_errno(e, errno, "remove %s", name);
		goto out;
	}
	/* A single object of that name (a file). */
	if ((mk = s3b_cat(p->key, name, "")) == NULL) {
		r = err_errno(e, errno, "remove %s", name);
		goto out;
	}
	if (kind == S3B_PLAIN && (r = s3_delete(s3b_client(), p->bucket, mk,
	    e)) != 0)
		goto out;
	if (kind == S3B_TMP)
		s3b_drop_pending(p->bucket, pre);
	if ((r = s3b_delete_prefix(p->bucket, pre, S3B_META, e)) != 0)
		goto out;
	if (kind != S3B_PLAIN)
		r = s3_delete(s3b_client(), p->bucket, mk, e);
out:
	free(pre);
	free(mk);
	s3b_free(p);
	return r;
}

/* The lock of a tmp dir: this process's live save holds it. */
static int
s3b_lock(int dir)
{
	size_t i;
	int r = 1;

	pthread_mutex_lock(&S3B.lock);
	if ((size_t)dir >= S3B.n || S3B.v[dir] == NULL) {
		pthread_mutex_unlock(&S3B.lock);
		errno = EBADF;
		return -1;
	}
	if (!S3B.v[dir]->held) {
		for (i = 0; i < S3B.n && r == 1; i++)
			if (S3B.v[i] != NULL && S3B.v[i]->held &&
			    strcmp(S3B.v[i]->key, S3B.v[dir]->key) == 0 &&
			    strcmp(S3B.v[i]->bucket, S3B.v[dir]->bucket) == 0)
				r = 0;
		if (r == 1)
			S3B.v[dir]->held = 1;
	}
	pthread_mutex_unlock(&S3B.lock);
	return r;
}

static int
s3b_same(int dir, const char *name, int h)
{
	(void)dir;
	(void)name;
	(void)h;
	return 1;
}

static int
s3b_fstat(int h, struct stat *st)
{
	struct s3b_handle *p;
	uint64_t x = 1469598103934665603ull;
	const char *s;

	memset(st, 0, sizeof *st);
	if ((p = s3b_get(h)) == NULL) {
		if (errno != EBADF)
			return -1;
		/* a file read (open_read): the memfd is all there is */
		if (fstat(h, st) != 0)
			return -1;
		st->st_mode = S_IFREG | 0600;
		return 0;
	}
	if (p->kind == S3B_DIR) {
		/* Identity of a prefix: a hash of bucket and key. */
		for (s = p->bucket; *s != '\0'; s++)
			x = (x ^ (unsigned char)*s) * 1099511628211ull;
		x = (x ^ '/') * 1099511628211ull;
		for (s = p->key; *s != '\0'; s++)
			x = (x ^ (unsigned char)*s) * 1099511628211ull;
		st->st_mode = S_IFDIR | 0700;
		st->st_dev = S3B_DEV;
		st->st_ino = (ino_t)x;
		st->st_uid = getuid();
		s3b_free(p);
		return 0;
	}
	s3b_free(p);
	if (fstat(h, st) != 0)
		return -1;
	st->st_mode = S_IFREG | 0600;
	return 0;
}

/* ---- files -------------------------------------------------------------- */

static int
s3b_create(int dir, const char *name, mode_t mode)
{
	struct s3b_handle *p, *h;
	char *k;
	int r;

	(void)mode;
	if ((p = s3b_get(dir)) == NULL)
		return -1;
	/* Exclusive, as O_EXCL: a file is never written over. */
	if ((k = s3b_cat(p->key, name, "")) == NULL ||
	    (r = s3b_exists(p->bucket, k)) != 0) {
		if (k != NULL && r == 1)
			errno = EEXIST;
		free(k);
		s3b_free(p);
		return -1;
	}
	free(k);
	if ((h = calloc(1, sizeof *h)) == NULL) {
		s3b_free(p);
		errno = ENOMEM;
		return -1;
	}
	h->kind = S3B_FILE;
	h->bucket = p->bucket;
	p->bucket = NULL;
	h->key = s3b_cat(p->key, name, "");
	/* A step's own metadata waits for its commit. */
	if (p->held && strcmp(name, S3B_META) == 0) {
		h->meta = 1;
		h->step = p->key;
		p->key = NULL;
	}
	return s3b_add_child(p, h);
}

/* One range of an object into fd, on a thread of its own. */
struct s3b_range {
	pthread_t th;
	const char *bucket, *key;
	uint64_t off, len;
	int fd, r, started;
	ckd_err e;
};

static void *
s3b_range_run(void *arg)
{
	struct s3b_range *g = arg;

	g->r = s3_get_fd(s3b_client(), g->bucket, g->key, g->off, g->len,
	    g->fd, (off_t)g->off, &g->e);
	return NULL;
}

/* The object into fd by ranged GETs (each resumed after the bytes received
 * on a retry), up to S3B_GETS at once for a large one. */
#define S3B_GETS 4
#define S3B_GET_SPLIT (32u << 20)

static int
s3b_get_ranges(const char *bucket, const char *key, uint64_t size, int fd,
    ckd_err *e)
{
	struct s3b_range g[S3B_GETS];
	uint64_t per;
	int n, i, r = 0;

	n = size >= S3B_GET_SPLIT ? S3B_GETS : 1;
	per = (size + (uint64_t)n - 1) / (uint64_t)n;
	memset(g, 0, sizeof g);
	for (i = 0; i < n; i++) {
		g[i].bucket = bucket;
		g[i].key = key;
		g[i].fd = fd;
		g[i].off = per * (uint64_t)i;
		g[i].len = g[i].off >= size ? 0 : size - g[i].off < per ?
		    size - g[i].off : per;
		/* the first range on this thread, the others on their own */
		if (i > 0 && g[i].len > 0)
			g[i].started = pthread_create(&g[i].th, NULL,
			    s3b_range_run, &g[i]) == 0;
	}
	if (g[0].len > 0)
		s3b_range_run(&g[0]);
	for (i = 1; i < n; i++) {
		if (g[i].started)
			pthread_join(g[i].th, NULL);
		else if (g[i].len > 0)
			s3b_range_run(&g[i]);   /* no thread: here */
	}
	for (i = 0; i < n && r == 0; i++)
		if ((r = g[i].r) != 0 && e != NULL)
			*e = g[i].e;
	return r;
}

/* The whole object in a memfd of its own: a plain descriptor, not in the
 * table (it may be handed to a client, who closes it as any fd). */
static int
s3b_open_read(int dir, const char *name, struct stat *st, ckd_err *e)
{
	struct s3b_handle *p;
	struct s3_stat ss;
	char *k;
	int fd = -1, r;

	if ((p = s3b_get(dir)) == NULL)
		return err_errno(e, errno, "open %s", name);
	if ((k = s3b_cat(p->key, name, "")) == NULL) {
		r = err_errno(e, errno, "open %s", name);
		goto out;
	}
	if ((r = s3_head(s3b_client(), p->bucket, k, &ss, e)) != 0)
		goto out;
	if ((fd = memfd_create("ckptd-s3", MFD_CLOEXEC)) < 0 ||
	    ftruncate(fd, (off_t)ss.size) != 0) {
		r = err_errno(e, errno, "open %s", name);
		goto out;
	}
	if (ss.size > 0 && (r = s3b_get_ranges(p->bucket, k, ss.size, fd,
	    e)) != 0)
		goto out;
	memset(st, 0, sizeof *st);
	st->st_mode = S_IFREG | 0600;
	st->st_size = (off_t)ss.size;
	st->st_dev = S3B_DEV;
out:
	if (r != 0 && fd >= 0) {
		close(fd);
		fd = -1;
	}
	free(k);
	s3b_free(p);
	return r != 0 ? r : fd;
}

static int
s3b_unlink(int dir, const char *name)
{
	struct s3b_handle *p;
	ckd_err e;
	char *k;
	int r;

	if ((p = s3b_get(dir)) == NULL)
		return -1;
	if ((k = s3b_cat(p->key, name, "")) == NULL) {
		s3b_free(p);
		return -1;
	}
	r = s3_delete(s3b_client(), p->bucket, k, &e);
	free(k);
	s3b_free(p);
	if (r != 0) {
		errno = s3b_errno(r);
		return -1;
	}
	return 0;
}

static ssize_t
s3b_read(int f, void *buf, size_t len)
{
	return read(f, buf, len);
}

static int
s3b_read_range(int f, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	ssize_t n;

	while (len > 0) {
		if ((n = pread(f, p, len, (off_t)off)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = 0;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static ssize_t
s3b_write(int f, const void *buf, size_t len)
{
	return write(f, buf, len);
}

static ssize_t
s3b_pwrite(int f, const void *buf, size_t len, uint64_t off)
{
	return pwrite(f, buf, len, (off_t)off);
}

static ssize_t
s3b_pwritev(int f, const struct iovec *iov, int n, uint64_t off)
{
	return pwritev(f, iov, n, (off_t)off);
}

static int
s3b_truncate(int f, uint64_t size)
{
	return ftruncate(f, (off_t)size);
}

static int
s3b_direct(int f, int on)
{
	(void)f;
	(void)on;
	errno = EINVAL;
	return -1;
}

static void
s3b_hint(int f, uint64_t off, uint64_t len)
{
	(void)f;
	(void)off;
	(void)len;
}

/* A file written: upload it (a step's _CHECKPOINT_METADATA: keep it for
 * the commit). A directory: nothing. */
static int
s3b_fsync(int h)
{
	struct s3b_handle *p;
	struct s3b_pending *pd = NULL, **pp;
	struct stat st;
	ckd_err e;
	int r = 0;

	if ((p = s3b_get(h)) == NULL)
		return -1;
	if (p->kind != S3B_FILE)
		goto out;
	if (fstat(h, &st) != 0) {
		r = -1;
		goto out;
	}
	if (!p->meta) {
		if ((r = s3_put_fd(s3b_client(), p->bucket, p->key, h, 0,
		    (uint64_t)st.st_size, &e)) != 0) {
			errno = s3b_errno(r);
			r = -1;
		}
		goto out;
	}
	if ((pd = calloc(1, sizeof *pd)) == NULL ||
	    (pd->data = malloc((size_t)st.st_size + 1)) == NULL ||
	    s3b_read_range(h, pd->data, (size_t)st.st_size, 0) != 0) {
		if (errno == 0)
			errno = EIO;
		r = -1;
		goto out;
	}
	pd->len = (size_t)st.st_size;
	pd->bucket = p->bucket;
	pd->step = p->step;
	p->bucket = p->step = NULL;
	pthread_mutex_lock(&S3B.lock);
	for (pp = &S3B.pending; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->bucket, pd->bucket) == 0 &&
		    strcmp((*pp)->step, pd->step) == 0) {
			struct s3b_pending *old = *pp;

			*pp = old->next;        /* written again: the last */
			free(old->bucket);
			free(old->step);
			free(old->data);
			free(old);
			break;
		}
	pd->next = S3B.pending;
	S3B.pending = pd;
	pthread_mutex_unlock(&S3B.lock);
	pd = NULL;
out:
	if (pd != NULL) {
		free(pd->data);
		free(pd);
	}
	s3b_free(p);
	return r;
}

static int
s3b_close(int h)
{
	struct s3b_handle *p = NULL;

	pthread_mutex_lock(&S3B.lock);
	if (h >= 0 && (size_t)h < S3B.n) {
		p = S3B.v[h];
		S3B.v[h] = NULL;
	}
	pthread_mutex_unlock(&S3B.lock);
	s3b_free(p);            /* NULL: a file read (open_read) */
	return close(h);
}

const struct store_backend backend_s3 = {
	.name = "s3",
	.caps = STORE_BE_FDS,
	.open_root = s3b_open_root,
	.root_name = s3b_root_name,
	.writable = s3b_writable,
	.mkdir = s3b_mkdir,
	.make_dir = s3b_make_dir,
	.open_dir = s3b_open_dir,
	.stat = s3b_stat,
	.list_open = s3b_list_open,
	.list_next = s3b_list_next,
	.list_is_dir = s3b_list_is_dir,
	.list_close = s3b_list_close,
	.rename = s3b_rename,
	.remove_tree = s3b_remove_tree,
	.lock = s3b_lock,
	.same = s3b_same,
	.fstat = s3b_fstat,
	.create = s3b_create,
	.open_read = s3b_open_read,
	.unlink = s3b_unlink,
	.read = s3b_read,
	.read_range = s3b_read_range,
	.write = s3b_write,
	.pwrite = s3b_pwrite,
	.pwritev = s3b_pwritev,
	.truncate = s3b_truncate,
	.direct = s3b_direct,
	.writeback = s3b_hint,
	.readahead = s3b_hint,
	.fsync = s3b_fsync,
	.close = s3b_close,
};
