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
 * Handles are real file descriptors (memfds), so that a file read can be
 * handed to a client who maps it (STORE_BE_FDS). What each one names is
 * kept in a table keyed by the descriptor, under a mutex held for a lookup
 * only, never across a request. Memory stays bounded whatever the size of
 * a file:
 *   - a file written goes up as it is written: its bytes fill a part of
 *     S3B_PART, a full part is uploaded on a thread of its own (at most
 *     S3B_INFLIGHT of the process at once, a writer waits for a slot),
 *     fsync sends the last part and completes the upload; a file that ends
 *     within its first part is one PUT. An upload that fails or is closed
 *     unfinished is aborted: no object appears;
 *   - a file read is an empty memfd of the object's size: open_read GETs
 *     only the size and the first 64 KiB (kept); read and read_range GET
 *     the range asked for into the caller's buffer; fetch GETs the ranges
 *     a restore hands out (its tensors) into the memfd, which the client
 *     maps.
 *
 * The lock of a tmp dir (a live save's) is this process's: a marker whose
 * handle no live save holds is a leftover. So one daemon writes a prefix
 * at a time (s3lease.h): a root opened to be written (create, or
 * writable asked) takes the prefix's lease, held while a root handle
 * holding it is open (and a while after); a second daemon's writer is
 * refused, naming the holder; a reader that saw another daemon's live
 * lease takes no tmp dir under that prefix for a leftover.
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
#include "s3lease.h"

#define S3B_META STORE_STEP_METADATA
#define S3B_DEV ((dev_t)0x53330000)     /* st_dev of every s3 handle */
#define S3B_MAX_LIST (1u << 20)         /* entries of one directory */

enum s3b_kind {
	S3B_DIR = 1,
	S3B_FILE = 2,           /* being written */
	S3B_READ = 3,           /* open for reading */
};

/* Writing: a file goes up as it is written, in parts of S3B_PART bytes
 * (one PUT when it ends within the first), at most S3B_INFLIGHT parts of
 * the whole process in flight at once. Memory: one part being filled per
 * file being written, plus the parts in flight. */
#define S3B_PART (24u << 20)
#define S3B_INFLIGHT 4

/* One part on its way (a thread of its own). */
struct s3b_part {
	pthread_t th;
	int started;
	struct s3_mpu *mpu;
	unsigned no;
	char *buf;              /* S3B_PART bytes mapped, len used */
	size_t len;
	int r;
	ckd_err e;
};

/* The upload of a file being written; the table entry owns it. */
struct s3b_up {
	char *buf;              /* the part being filled, or NULL */
	size_t len;
	uint64_t size;          /* bytes written so far */
	struct s3_mpu *mpu;     /* once a first part went */
	unsigned parts;         /* parts handed out */
	struct s3b_part run[S3B_INFLIGHT];      /* a ring, oldest at head */
	unsigned head, n;
	int r;                  /* the first failure, with e */
	ckd_err e;
	int synced;             /* the object is written */
};

struct s3b_handle {
	int kind;
	int root;               /* a root's own handle (its children may be
	                         * markers) */
	int held;               /* a tmp dir this handle holds (a live save) */
	int leased;             /* a root handle holding the prefix's lease */
	int meta;               /* the _CHECKPOINT_METADATA of a step in
	                         * progress: kept for the commit */
	char *bucket;
	char *key;              /* dir: prefix ("" or ending in '/'); file:
	                         * the object */
	char *step;             /* meta: the step's prefix */
	struct s3b_up *up;      /* file: its upload (owned by the table
	                         * entry; a copy borrows it) */
	uint64_t size;          /* read: the object's size */
	char *head;             /* read: its first headlen bytes (owned by
	                         * the table entry; a copy borrows them) */
	size_t headlen;
	uint64_t pos;           /* read: read()'s position (table entry) */
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
	pthread_cond_t slot;            /* a part in flight ended */
	unsigned inflight;              /* parts in flight (S3B_INFLIGHT) */
	struct s3_client *cli;
	struct s3b_handle **v;          /* by descriptor */
	size_t n;
	struct s3b_pending *pending;
	struct s3b_made *made;          /* a few names per root */
} S3B = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.slot = PTHREAD_COND_INITIALIZER,
};

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

/* ---- uploads as files are written ---------------------------------------- */

static char *
s3b_buf_new(void)
{
	/* mmap, not malloc: given back to the system when the part is up */
	void *p = mmap(NULL, S3B_PART, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void
s3b_buf_free(char *p)
{
	if (p != NULL)
		munmap(p, S3B_PART);
}

static void *
s3b_part_run(void *arg)
{
	struct s3b_part *pt = arg;

	pt->r = s3_mpu_part(s3b_client(), pt->mpu, pt->no, pt->buf, -1, 0,
	    pt->len, &pt->e);
	s3b_buf_free(pt->buf);
	pt->buf = NULL;
	pthread_mutex_lock(&S3B.lock);
	S3B.inflight--;
	pthread_cond_broadcast(&S3B.slot);
	pthread_mutex_unlock(&S3B.lock);
	return NULL;
}

/* Wait for the oldest part in flight; its failure becomes the upload's. */
static void
s3b_part_join(struct s3b_up *u)
{
	struct s3b_part *pt = &u->run[u->head];

	if (pt->started)
		pthread_join(pt->th, NULL);
	if (pt->r != 0 && u->r == 0) {
		u->r = pt->r;
		u->e = pt->e;
	}
	u->head = (u->head + 1) % S3B_INFLIGHT;
	u->n--;
}

/* Every part in flight is done: 0, or the first failure (*e). */
static int
s3b_up_drain(struct s3b_up *u, ckd_err *e)
{
	while (u->n > 0)
		s3b_part_join(u);
	if (u->r != 0 && e != NULL)
		*e = u->e;
	return u->r;
}

/* Send the part being filled (the upload begins at the first). */
static int
s3b_part_send(struct s3b_up *u, const char *bucket, const char *key,
    ckd_err *e)
{
	struct s3b_part *pt;
	int r;

	if (u->mpu == NULL && (r = s3_mpu_begin(s3b_client(), bucket, key, 0,
	    &u->mpu, e)) != 0)
		return r;
	if (u->parts >= S3_MAX_PARTS)
		return err_set(e, CKPT_ETOOBIG, "s3 PUT %s/%s: more than %d "
		    "parts of %u MiB", bucket, key, S3_MAX_PARTS,
		    S3B_PART >> 20);
	if (u->n == S3B_INFLIGHT)
		s3b_part_join(u);
	if (u->r != 0) {
		*e = u->e;
		return u->r;
	}
	pthread_mutex_lock(&S3B.lock);
	while (S3B.inflight >= S3B_INFLIGHT)
		pthread_cond_wait(&S3B.slot, &S3B.lock);
	S3B.inflight++;
	pthread_mutex_unlock(&S3B.lock);
	pt = &u->run[(u->head + u->n) % S3B_INFLIGHT];
	memset(pt, 0, sizeof *pt);
	pt->mpu = u->mpu;
	pt->no = ++u->parts;
	pt->buf = u->buf;
	pt->len = u->len;
	u->buf = NULL;
	u->len = 0;
	u->n++;
	pt->started = pthread_create(&pt->th, NULL, s3b_part_run, pt) == 0;
	if (!pt->started)
		s3b_part_run(pt);       /* no thread: here */
	return 0;
}

/* An upload that ends unwritten: its parts are dropped (abort), so no
 * object appears. */
static void
s3b_up_discard(struct s3b_up *u)
{
	if (u == NULL)
		return;
	(void)s3b_up_drain(u, NULL);
	if (u->mpu != NULL)
		(void)s3_mpu_abort(s3b_client(), u->mpu, NULL);
	s3b_buf_free(u->buf);
	free(u);
}

/* A table entry goes (its upload, when unfinished, is aborted). */
static void
s3b_entry_free(struct s3b_handle *h)
{
	if (h == NULL)
		return;
	s3b_up_discard(h->up);
	free(h->head);
	s3b_free(h);
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
	s3b_entry_free(stale);
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

/* The files this backend PUTs whole (one that ended within its first
 * part, a _CHECKPOINT_METADATA) are below S3B_PART: one PUT each. */
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

	/* A prefix exists through its objects: create only says the root
	 * is to be written. */
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
	if ((r = s3lease_take(s3b_client(), h->bucket, h->key, create != 0,
	    e)) != 0) {
		s3b_free(h);
		return r;
	}
	h->leased = create != 0;
	if (h->leased && (bucket = strdup(h->bucket)) != NULL &&
	    (prefix = strdup(h->key)) == NULL) {
		free(bucket);
		bucket = NULL;
	}
	if ((fd = s3b_add(h)) < 0) {
		r = err_errno(e, errno, "open %s", path);
		if (bucket != NULL)
			s3lease_drop(bucket, prefix);
		goto fail;
	}
	free(bucket);
	free(prefix);
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
	struct s3b_handle *p;
	ckd_err e;
	int r = 0;

	if ((p = s3b_get(dir)) == NULL)
		return -1;
	/* A root opened without create, to be written: its lease now. */
	if (p->root && !p->leased) {
		if ((r = s3lease_take(s3b_client(), p->bucket, p->key, 1,
		    &e)) != 0) {
			errno = r == CKPT_EBUSY ? EBUSY : s3b_errno(r);
		} else {
			pthread_mutex_lock(&S3B.lock);
			if ((size_t)dir < S3B.n && S3B.v[dir] != NULL &&
			    !S3B.v[dir]->leased) {
				S3B.v[dir]->leased = 1;
				r = -2;
			}
			pthread_mutex_unlock(&S3B.lock);
			/* Closed meanwhile: not held by it. */
			if (r != -2)
				s3lease_drop(p->bucket, p->key);
			r = 0;
		}
	}
	s3b_free(p);
	return r != 0 ? -1 : 0;
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
	/* Under a prefix another daemon writes: its save's, maybe. */
	if (!S3B.v[dir]->held && s3lease_foreign(S3B.v[dir]->bucket,
	    S3B.v[dir]->key))
		r = 0;
	if (!S3B.v[dir]->held && r == 1) {
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
		/* not in the table: a descriptor is all there is */
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
	st->st_mode = S_IFREG | 0600;
	st->st_dev = S3B_DEV;
	st->st_size = (off_t)(p->kind == S3B_READ ? p->size :
	    p->up != NULL ? p->up->size : 0);
	s3b_free(p);
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
	if ((h = calloc(1, sizeof *h)) == NULL ||
	    (h->up = calloc(1, sizeof *h->up)) == NULL) {
		free(h);
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
	if (h->bucket == NULL || h->key == NULL) {
		s3b_entry_free(h);
		s3b_free(p);
		errno = ENOMEM;
		return -1;
	}
	return s3b_add_child(p, h);
}

static int s3b_close(int h);

/* Ranged GETs, up to S3B_GETS at once: each piece [off, off + len) of
 * its object into its handle's fd at the same offset, or into buf (all
 * pieces of one object; buf[0] is its offset base). */
#define S3B_GETS 4
#define S3B_GET_SPLIT (8u << 20)        /* a range this large is split */
#define S3B_GET_PIECE (16u << 20)       /* at most this much per GET */
#define S3B_GET_MIN (2u << 20)          /* at least this much (but the
                                         * last piece of a range) */
#define S3B_GAP (64u << 10)             /* ranges this close: one GET */
#define S3B_HEAD (64u << 10)            /* open_read keeps the first bytes */

struct s3b_piece {
	uint64_t off, len;
	const struct s3b_handle *h;     /* its object */
	int fd;                         /* its handle (not with buf) */
};

struct s3b_fetch {
	char *buf;
	uint64_t base;                  /* buf: the object offset of buf[0] */
	const struct s3b_piece *pc;
	size_t n;
	size_t next;                    /* atomic: the next piece */
	int r;                          /* atomic: the first failure wins */
	ckd_err e;
};

static void *
s3b_fetch_run(void *arg)
{
	struct s3b_fetch *f = arg;
	const struct s3b_piece *pc;
	ckd_err e;
	size_t i;
	int r, zero;

	for (;;) {
		if (__atomic_load_n(&f->r, __ATOMIC_ACQUIRE) != 0)
			break;
		if ((i = __atomic_fetch_add(&f->next, 1, __ATOMIC_RELAXED)) >=
		    f->n)
			break;
		pc = &f->pc[i];
		if (f->buf != NULL)
			r = s3_get(s3b_client(), pc->h->bucket, pc->h->key,
			    pc->off, pc->len, f->buf + (pc->off - f->base), &e);
		else
			r = s3_get_fd(s3b_client(), pc->h->bucket, pc->h->key,
			    pc->off, pc->len, pc->fd, (off_t)pc->off, &e);
		zero = 0;
		if (r != 0 && __atomic_compare_exchange_n(&f->r, &zero, r, 0,
		    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			f->e = e;
	}
	return NULL;
}

static int
s3b_fetch(struct s3b_fetch *f, ckd_err *e)
{
	pthread_t th[S3B_GETS];
	size_t i, nth, started = 0;

	nth = f->n < S3B_GETS ? f->n : S3B_GETS;
	for (i = 1; i < nth; i++)
		if (pthread_create(&th[started], NULL, s3b_fetch_run, f) == 0)
			started++;
	s3b_fetch_run(f);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (f->r != 0 && e != NULL)
		*e = f->e;
	return f->r;
}

/* A file to read: its size and first S3B_HEAD bytes (one GET: the header
 * of a safetensors file, a small file whole), kept with the handle; the
 * rest only when asked for (read_range, read, fetch). The handle is an
 * empty memfd of the object's size, which fetch fills where asked, so
 * that a client given it maps the ranges it was told about. */
static int
s3b_open_read(int dir, const char *name, struct stat *st, ckd_err *e)
{
	struct s3b_handle *p, *h = NULL;
	struct s3_stat ss;
	uint64_t got;
	char *nh;
	int fd = -1, r;

	if ((p = s3b_get(dir)) == NULL)
		return err_errno(e, errno, "open %s", name);
	if ((h = calloc(1, sizeof *h)) == NULL ||
	    (h->key = s3b_cat(p->key, name, "")) == NULL ||
	    (h->bucket = strdup(p->bucket)) == NULL) {
		r = err_errno(e, errno ? errno : ENOMEM, "open %s", name);
		goto out;
	}
	/* The size and the first bytes (a safetensors header, a small file
	 * whole) in one request. */
	if ((h->head = malloc(S3B_HEAD)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if ((r = s3_get_first(s3b_client(), p->bucket, h->key, h->head,
	    S3B_HEAD, &got, &ss, e)) != 0)
		goto out;
	h->headlen = (size_t)got;
	if (got < S3B_HEAD && (nh = realloc(h->head, got ? got : 1)) != NULL)
		h->head = nh;
	h->kind = S3B_READ;
	h->size = ss.size;
	if ((fd = s3b_add(h)) < 0) {
		h = NULL;
		r = err_errno(e, errno, "open %s", name);
		goto out;
	}
	h = NULL;
	if (ftruncate(fd, (off_t)ss.size) != 0) {
		r = err_errno(e, errno, "open %s", name);
		goto out;
	}
	memset(st, 0, sizeof *st);
	st->st_mode = S_IFREG | 0600;
	st->st_size = (off_t)ss.size;
	st->st_dev = S3B_DEV;
out:
	if (r != 0 && fd >= 0) {
		s3b_close(fd);
		fd = -1;
	}
	if (h != NULL)
		free(h->head);
	s3b_free(h);
	s3b_free(p);
	return r != 0 ? r : fd;
}

static int
s3b_pwrite_all(int fd, const char *p, size_t len, uint64_t off)
{
	ssize_t k;

	while (len > 0) {
		if ((k = pwrite(fd, p, len, (off_t)off)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += k;
		len -= (size_t)k;
		off += (uint64_t)k;
	}
	return 0;
}

static int
s3b_cmp_piece(const void *a, const void *b)
{
	const struct s3b_piece *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* The ranges r[0..n) of the file open for reading p (its fd f) as they
 * are to be fetched, into m (n entries), their number in *nm: what
 * open_read got already copied into the memfd and left out, the rest
 * sorted, those within S3B_GAP of each other joined. 0, or a CKPT_E*
 * code with e set. */
static int
s3b_merge(const struct s3b_handle *p, int f, const struct store_range *rg,
    size_t n, struct s3b_piece *m, size_t *nm, ckd_err *e)
{
	uint64_t end, len;
	size_t i, k = 0;

	*nm = 0;
	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		if (rg[i].off > p->size || rg[i].len > p->size - rg[i].off)
			return err_set(e, CKPT_ECORRUPT, "%s: range beyond the "
			    "end of the object", p->key);
		m[i].off = rg[i].off;
		m[i].len = rg[i].len;
		m[i].h = p;
		m[i].fd = f;
		/* what open_read got already: no request */
		if (m[i].off < p->headlen && m[i].len > 0) {
			len = p->headlen - m[i].off;
			if (len > m[i].len)
				len = m[i].len;
			if (s3b_pwrite_all(f, p->head + m[i].off, (size_t)len,
			    m[i].off) != 0)
				return err_errno(e, errno, "%s: into memory",
				    p->key);
			m[i].off += len;
			m[i].len -= len;
		}
	}
	qsort(m, n, sizeof *m, s3b_cmp_piece);
	for (i = 1; i < n; i++) {
		if (m[i].len == 0)
			continue;
		if (m[k].len == 0 || m[i].off > m[k].off + m[k].len + S3B_GAP) {
			m[++k] = m[i];
			continue;
		}
		end = m[i].off + m[i].len;
		if (end > m[k].off + m[k].len)
			m[k].len = end - m[k].off;
	}
	*nm = m[k].len > 0 ? k + 1 : k;
	return 0;
}

/* The ranges of several files open for reading into their memfds: each
 * file's ranges merged (s3b_merge), then all of them cut into pieces that
 * S3B_GETS GETs share (S3B_GET_MIN to S3B_GET_PIECE each), taken in
 * order across the files so that no GET waits for a file's last one.
 * Nothing else of the objects is read. */
static int
s3b_fetch_ranges(const struct store_fetch *files, size_t nf, ckd_err *e)
{
	struct s3b_handle **hs = NULL;
	struct s3b_piece *m = NULL, *pc = NULL;
	struct s3b_fetch ft;
	uint64_t end, len, piece, total = 0;
	size_t i, j, nm = 0, np = 0, cap = 0, got;
	int r = 0;

	if (nf == 0)
		return 0;
	for (i = 0; i < nf; i++)
		cap += files[i].n;
	hs = calloc(nf, sizeof *hs);
	m = calloc(cap > 0 ? cap : 1, sizeof *m);
	if (hs == NULL || m == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < nf; i++) {
		if ((hs[i] = s3b_get(files[i].f)) == NULL ||
		    hs[i]->kind != S3B_READ) {
			r = err_set(e, CKPT_EINTERNAL, "fetch: not a file open "
			    "for reading");
			goto out;
		}
		if ((r = s3b_merge(hs[i], files[i].f, files[i].r,
		    files[i].n, m + nm, &got, e)) != 0)
			goto out;
		nm += got;
	}
	for (i = 0; i < nm; i++)
		total += m[i].len;
	piece = (total + S3B_GETS - 1) / S3B_GETS;
	piece = piece < S3B_GET_MIN ? S3B_GET_MIN : piece > S3B_GET_PIECE ?
	    S3B_GET_PIECE : (piece + 0xfffff) & ~(uint64_t)0xfffff;
	for (i = 0, cap = 0; i < nm; i++)
		cap += (size_t)((m[i].len + piece - 1) / piece);
	if (cap > 0 && (pc = calloc(cap, sizeof *pc)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < nm; i++)
		for (end = m[i].off + m[i].len; m[i].off < end;
		    m[i].off += len) {
			len = end - m[i].off;
			if (len > piece)
				len = piece;
			pc[np] = m[i];
			pc[np++].len = len;
		}
	memset(&ft, 0, sizeof ft);
	ft.pc = pc;
	ft.n = np;
	r = s3b_fetch(&ft, e);
out:
	free(pc);
	free(m);
	if (hs != NULL)
		for (j = 0; j < nf; j++)
			s3b_free(hs[j]);
	free(hs);
	return r;
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

/* Exactly len bytes at off of a file open for reading, by ranged GETs
 * (a large range split among S3B_GETS at once): 0, or -1 (errno; 0 when
 * the range passes the end). */
static int
s3b_get_range(const struct s3b_handle *p, void *buf, size_t len,
    uint64_t off)
{
	struct s3b_piece pc[S3B_GETS];
	struct s3b_fetch ft;
	uint64_t per;
	size_t i, n;
	int r;

	if (off > p->size || len > p->size - off) {
		errno = 0;
		return -1;
	}
	if (len == 0)
		return 0;
	if (off < p->headlen && len <= p->headlen - off) {
		memcpy(buf, p->head + off, len);
		return 0;
	}
	n = len >= S3B_GET_SPLIT ? S3B_GETS : 1;
	per = (len + n - 1) / n;
	for (i = 0; i < n; i++) {
		pc[i].off = off + per * i;
		pc[i].len = i + 1 < n ? per : len - per * i;
		pc[i].h = p;
		pc[i].fd = -1;
	}
	memset(&ft, 0, sizeof ft);
	ft.buf = buf;
	ft.base = off;
	ft.pc = pc;
	ft.n = n;
	if ((r = s3b_fetch(&ft, NULL)) != 0) {
		errno = s3b_errno(r);
		return -1;
	}
	return 0;
}

static ssize_t
s3b_read(int f, void *buf, size_t len)
{
	struct s3b_handle *p;
	uint64_t pos;
	int r;

	if ((p = s3b_get(f)) == NULL || p->kind != S3B_READ) {
		s3b_free(p);
		errno = EBADF;
		return -1;
	}
	pthread_mutex_lock(&S3B.lock);
	pos = (size_t)f < S3B.n && S3B.v[f] != NULL ? S3B.v[f]->pos : 0;
	pthread_mutex_unlock(&S3B.lock);
	if (pos >= p->size)
		len = 0;
	else if (len > p->size - pos)
		len = (size_t)(p->size - pos);
	r = s3b_get_range(p, buf, len, pos);
	s3b_free(p);
	if (r != 0)
		return -1;
	pthread_mutex_lock(&S3B.lock);
	if ((size_t)f < S3B.n && S3B.v[f] != NULL)
		S3B.v[f]->pos = pos + len;
	pthread_mutex_unlock(&S3B.lock);
	return (ssize_t)len;
}

static int
s3b_read_range(int f, void *buf, size_t len, uint64_t off)
{
	struct s3b_handle *p;
	int r;

	if ((p = s3b_get(f)) == NULL || p->kind != S3B_READ) {
		s3b_free(p);
		errno = EBADF;
		return -1;
	}
	r = s3b_get_range(p, buf, len, off);
	s3b_free(p);
	return r;
}

/* Append (files of an object store are written in order, each byte
 * once): into the part being filled; a full part goes up. */
static ssize_t
s3b_pwritev(int f, const struct iovec *iov, int n, uint64_t off)
{
	struct s3b_handle *p;
	struct s3b_up *u;
	const char *src;
	size_t left, k, total = 0;
	ssize_t ret = -1;
	ckd_err e;
	int i, r;

	if ((p = s3b_get(f)) == NULL)
		return -1;
	if (p->kind != S3B_FILE || (u = p->up) == NULL) {
		errno = EBADF;
		goto out;
	}
	if (u->synced || off != u->size) {
		errno = EINVAL;
		goto out;
	}
	if (u->r != 0) {
		errno = s3b_errno(u->r);
		goto out;
	}
	for (i = 0; i < n; i++) {
		src = iov[i].iov_base;
		for (left = iov[i].iov_len; left > 0; left -= k) {
			if (u->buf == NULL && (u->buf = s3b_buf_new()) == NULL)
				goto out;       /* ENOMEM */
			k = S3B_PART - u->len;
			if (k > left)
				k = left;
			memcpy(u->buf + u->len, src, k);
			u->len += k;
			u->size += k;
			total += k;
			src += k;
			if (u->len < S3B_PART)
				continue;
			if (p->meta) {
				/* kept in memory for the commit */
				errno = EFBIG;
				goto out;
			}
			if ((r = s3b_part_send(u, p->bucket, p->key, &e)) != 0) {
				if (u->r == 0) {
					u->r = r;
					u->e = e;
				}
				errno = s3b_errno(r);
				goto out;
			}
		}
	}
	ret = (ssize_t)total;
out:
	s3b_free(p);
	return ret;
}

static ssize_t
s3b_write(int f, const void *buf, size_t len)
{
	struct s3b_handle *p;
	struct iovec v = { (void *)buf, len };
	uint64_t at;

	if ((p = s3b_get(f)) == NULL)
		return -1;
	at = p->up != NULL ? p->up->size : 0;
	s3b_free(p);
	return s3b_pwritev(f, &v, 1, at);
}

static ssize_t
s3b_pwrite(int f, const void *buf, size_t len, uint64_t off)
{
	struct iovec v = { (void *)buf, len };

	return s3b_pwritev(f, &v, 1, off);
}

/* Only to the size written (no holes, nothing cut). */
static int
s3b_truncate(int f, uint64_t size)
{
	struct s3b_handle *p;
	int r = -1;

	if ((p = s3b_get(f)) == NULL)
		return -1;
	if (p->up != NULL && p->up->size == size)
		r = 0;
	else
		errno = EINVAL;
	s3b_free(p);
	return r;
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

/* Keep the _CHECKPOINT_METADATA of bucket/step (data, len) for the
 * commit; one written again replaces the last. */
static int
s3b_keep_meta(char **bucket, char **step, const char *data, size_t len)
{
	struct s3b_pending *pd, **pp;

	if ((pd = calloc(1, sizeof *pd)) == NULL ||
	    (pd->data = malloc(len + 1)) == NULL) {
		free(pd);
		errno = ENOMEM;
		return -1;
	}
	if (len > 0)
		memcpy(pd->data, data, len);
	pd->len = len;
	pd->bucket = *bucket;
	pd->step = *step;
	*bucket = *step = NULL;
	pthread_mutex_lock(&S3B.lock);
	for (pp = &S3B.pending; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->bucket, pd->bucket) == 0 &&
		    strcmp((*pp)->step, pd->step) == 0) {
			struct s3b_pending *old = *pp;

			*pp = old->next;
			free(old->bucket);
			free(old->step);
			free(old->data);
			free(old);
			break;
		}
	pd->next = S3B.pending;
	S3B.pending = pd;
	pthread_mutex_unlock(&S3B.lock);
	return 0;
}

/* A file written: the rest of its upload (one PUT when it fits in one
 * part, else the last part and the completion); a step's
 * _CHECKPOINT_METADATA is kept for the commit instead. A directory:
 * nothing. */
static int
s3b_fsync(int h)
{
	struct s3b_handle *p;
	struct s3b_up *u;
	struct s3_mpu *m;
	ckd_err e;
	int r = 0;

	if ((p = s3b_get(h)) == NULL)
		return -1;
	if (p->kind != S3B_FILE || (u = p->up) == NULL || u->synced)
		goto out;
	if (p->meta) {
		if ((r = s3b_keep_meta(&p->bucket, &p->step, u->buf,
		    u->len)) != 0)
			goto out;       /* errno set */
	} else if (u->r != 0) {
		r = u->r;
	} else if (u->mpu == NULL) {
		r = s3_put(s3b_client(), p->bucket, p->key,
		    u->buf != NULL ? u->buf : "", u->len, &e);
	} else if ((u->len == 0 || (r = s3b_part_send(u, p->bucket, p->key,
	    &e)) == 0) && (r = s3b_up_drain(u, &e)) == 0) {
		m = u->mpu;
		u->mpu = NULL;          /* complete frees it */
		r = s3_mpu_complete(s3b_client(), m, &e);
	}
	if (r != 0) {
		if (u->r == 0) {
			u->r = r;
			u->e = e;
		}
		errno = s3b_errno(r);
		r = -1;
	} else {
		u->synced = 1;
		s3b_buf_free(u->buf);
		u->buf = NULL;
		u->len = 0;
	}
out:
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
	if (p != NULL && p->leased)
		s3lease_drop(p->bucket, p->key);
	s3b_entry_free(p);      /* NULL: not in the table */
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
	.fetch = s3b_fetch_ranges,
	.fsync = s3b_fsync,
	.close = s3b_close,
};
