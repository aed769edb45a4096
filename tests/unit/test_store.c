/*
 * test_store.c - the on-disk format (daemon/store.h and the files it includes) on real files in a
 * private temporary directory: safetensors layout and its reader, tree and
 * step metadata, the commit protocol, deletes, scans and symlink safety.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <xxhash.h>

#include "store.h"

/* Every store call here is on a local filesystem. */
static const struct store_backend *const be = &backend_posix;

/* ---- fixture: a fresh directory per test ------------------------------------------ */

struct fx {
	char dir[256];
	int dfd;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "%s/ckptd-store-XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	f->dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->dfd >= 0);
	*state = f;
	return 0;
}

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	close(f->dfd);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static int
exists_at(int dfd, const char *name)
{
	struct stat st;

	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void
write_raw(int dfd, const char *name, const void *p, size_t n)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	close(fd);
}

static void
write_str(int dfd, const char *name, const char *s)
{
	write_raw(dfd, name, s, strlen(s));
}

static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static char *
read_all(int dfd, const char *name, size_t *len)
{
	char *buf;
	size_t n;
	int r;

	r = store_read_file(be, dfd, name, 1u << 30, &buf, &n, NULL);
	assert_int_equal(r, 0);
	if (len != NULL)
		*len = n;
	return buf;
}

/* ---- building items by hand ------------------------------------------------------- */

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	assert_non_null(p);
	return p;
}

static Ckpt__Item *
item_new(void)
{
	Ckpt__Item *it = malloc(sizeof(*it));

	assert_non_null(it);
	ckpt__item__init(it);
	return it;
}

static Ckpt__Leaf *
item_add(Ckpt__Item *it, Ckpt__LeafKind kind)
{
	Ckpt__Leaf *l = malloc(sizeof(*l));

	assert_non_null(l);
	ckpt__leaf__init(l);
	l->has_kind = 1;
	l->kind = kind;
	it->leaves = realloc(it->leaves, (it->n_leaves + 1) *
	    sizeof(*it->leaves));
	assert_non_null(it->leaves);
	it->leaves[it->n_leaves++] = l;
	return l;
}

static void
leaf_key(Ckpt__Leaf *l, const char *key)
{
	Ckpt__PathElem *pe = malloc(sizeof(*pe));

	assert_non_null(pe);
	ckpt__path_elem__init(pe);
	pe->has_kind = 1;
	pe->kind = CKPT__KEY_KIND__KEY_DICT;
	pe->key = xstrdup(key);
	l->path = realloc(l->path, (l->n_path + 1) * sizeof(*l->path));
	assert_non_null(l->path);
	l->path[l->n_path++] = pe;
}

static void
leaf_idx(Ckpt__Leaf *l, Ckpt__KeyKind kind, uint64_t idx)
{
	Ckpt__PathElem *pe = malloc(sizeof(*pe));

	assert_non_null(pe);
	ckpt__path_elem__init(pe);
	pe->has_kind = 1;
	pe->kind = kind;
	pe->has_index = 1;
	pe->index = idx;
	l->path = realloc(l->path, (l->n_path + 1) * sizeof(*l->path));
	assert_non_null(l->path);
	l->path[l->n_path++] = pe;
}

static void
leaf_array(Ckpt__Leaf *l, Ckpt__Dtype dt, size_t ndim, const uint64_t *shape,
    const char *file, const char *tensor, uint64_t xxh3)
{
	uint64_t n = store_dtype_size(dt);
	size_t i;

	l->has_dtype = 1;
	l->dtype = dt;
	l->n_shape = ndim;
	if (ndim > 0) {
		l->shape = malloc(ndim * sizeof(*l->shape));
		assert_non_null(l->shape);
		memcpy(l->shape, shape, ndim * sizeof(*shape));
	}
	for (i = 0; i < ndim; i++)
		n *= shape[i];
	l->has_nbytes = 1;
	l->nbytes = n;
	l->file = xstrdup(file);
	l->tensor = xstrdup(tensor);
	l->has_xxh3 = 1;
	l->xxh3 = xxh3;
}

/* Chunk sums of chunk bytes on l: k-th is base + k. */
static void
leaf_chunks(Ckpt__Leaf *l, uint64_t chunk, uint64_t base)
{
	size_t k, n = (size_t)((l->nbytes + chunk - 1) / chunk);

	l->has_chunk_bytes = 1;
	l->chunk_bytes = chunk;
	l->n_chunk_xxh3 = n;
	l->chunk_xxh3 = malloc(n * sizeof *l->chunk_xxh3);
	assert_non_null(l->chunk_xxh3);
	for (k = 0; k < n; k++)
		l->chunk_xxh3[k] = base + k;
}

/* ---- dtypes, handlers, names ----------------------------------------------------- */

static void
test_dtypes(void **state)
{
	static const struct { Ckpt__Dtype d; const char *n; size_t s; } t[] = {
		{ CKPT__DTYPE__DTYPE_BOOL, "BOOL", 1 },
		{ CKPT__DTYPE__DTYPE_U8, "U8", 1 },
		{ CKPT__DTYPE__DTYPE_I8, "I8", 1 },
		{ CKPT__DTYPE__DTYPE_U16, "U16", 2 },
		{ CKPT__DTYPE__DTYPE_I16, "I16", 2 },
		{ CKPT__DTYPE__DTYPE_F16, "F16", 2 },
		{ CKPT__DTYPE__DTYPE_BF16, "BF16", 2 },
		{ CKPT__DTYPE__DTYPE_U32, "U32", 4 },
		{ CKPT__DTYPE__DTYPE_I32, "I32", 4 },
		{ CKPT__DTYPE__DTYPE_F32, "F32", 4 },
		{ CKPT__DTYPE__DTYPE_U64, "U64", 8 },
		{ CKPT__DTYPE__DTYPE_I64, "I64", 8 },
		{ CKPT__DTYPE__DTYPE_F64, "F64", 8 },
		{ CKPT__DTYPE__DTYPE_F8_E4M3, "F8_E4M3", 1 },
		{ CKPT__DTYPE__DTYPE_F8_E5M2, "F8_E5M2", 1 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		assert_int_equal(store_dtype_size(t[i].d), t[i].s);
		assert_string_equal(store_dtype_name(t[i].d), t[i].n);
		assert_int_equal(store_dtype_parse(t[i].n), t[i].d);
	}
	assert_int_equal(store_dtype_size(CKPT__DTYPE__DTYPE_INVALID), 0);
	assert_int_equal(store_dtype_size((Ckpt__Dtype)99), 0);
	assert_null(store_dtype_name((Ckpt__Dtype)99));
	assert_int_equal(store_dtype_parse("f32"), CKPT__DTYPE__DTYPE_INVALID);
	assert_int_equal(store_dtype_parse(""), CKPT__DTYPE__DTYPE_INVALID);
	assert_int_equal(store_dtype_parse(NULL), CKPT__DTYPE__DTYPE_INVALID);
}

static void
test_handlers(void **state)
{
	const char *p = "orbax.checkpoint._src.handlers.";
	char buf[256];

	(void)state;
	snprintf(buf, sizeof(buf), "%s%s", p,
	    "standard_checkpoint_handler.StandardCheckpointHandler");
	assert_string_equal(store_handler_typestr(
	    CKPT__HANDLER__HANDLER_STANDARD), buf);
	assert_int_equal(store_handler_parse(buf),
	    CKPT__HANDLER__HANDLER_STANDARD);
	snprintf(buf, sizeof(buf), "%s%s", p,
	    "pytree_checkpoint_handler.PyTreeCheckpointHandler");
	assert_string_equal(store_handler_typestr(
	    CKPT__HANDLER__HANDLER_PYTREE), buf);
	snprintf(buf, sizeof(buf), "%s%s", p,
	    "json_checkpoint_handler.JsonCheckpointHandler");
	assert_string_equal(store_handler_typestr(
	    CKPT__HANDLER__HANDLER_JSON), buf);
	snprintf(buf, sizeof(buf), "%s%s", p,
	    "array_checkpoint_handler.ArrayCheckpointHandler");
	assert_string_equal(store_handler_typestr(
	    CKPT__HANDLER__HANDLER_ARRAY), buf);
	snprintf(buf, sizeof(buf), "%s%s", p,
	    "proto_checkpoint_handler.ProtoCheckpointHandler");
	assert_string_equal(store_handler_typestr(
	    CKPT__HANDLER__HANDLER_PROTO), buf);
	assert_int_equal(store_handler_parse(buf), CKPT__HANDLER__HANDLER_PROTO);
	assert_null(store_handler_typestr(CKPT__HANDLER__HANDLER_UNSPECIFIED));

	assert_int_equal(store_handler_parse("STANDARD"),
	    CKPT__HANDLER__HANDLER_STANDARD);
	assert_int_equal(store_handler_parse("PYTREE"),
	    CKPT__HANDLER__HANDLER_PYTREE);
	assert_int_equal(store_handler_parse("JSON"),
	    CKPT__HANDLER__HANDLER_JSON);
	assert_int_equal(store_handler_parse("ARRAY"),
	    CKPT__HANDLER__HANDLER_ARRAY);
	assert_int_equal(store_handler_parse("PROTO"),
	    CKPT__HANDLER__HANDLER_PROTO);
	/* older Orbax module layout */
	assert_int_equal(store_handler_parse(
	    "orbax.checkpoint.json_checkpoint_handler.JsonCheckpointHandler"),
	    CKPT__HANDLER__HANDLER_JSON);
	assert_int_equal(store_handler_parse("something.Else"),
	    CKPT__HANDLER__HANDLER_UNSPECIFIED);
	assert_int_equal(store_handler_parse(NULL),
	    CKPT__HANDLER__HANDLER_UNSPECIFIED);
}

static void
test_valid_component(void **state)
{
	char longname[300];

	(void)state;
	assert_true(store_valid_component("default"));
	assert_true(store_valid_component("data-00000.safetensors"));
	assert_true(store_valid_component(".hidden"));
	assert_false(store_valid_component(""));
	assert_false(store_valid_component(NULL));
	assert_false(store_valid_component("."));
	assert_false(store_valid_component(".."));
	assert_false(store_valid_component("a/b"));
	assert_false(store_valid_component("/"));
	assert_false(store_valid_component("5" CKPT_TMP_SUFFIX));
	memset(longname, 'a', sizeof(longname));
	longname[255] = '\0';
	assert_true(store_valid_component(longname));
	longname[255] = 'a';
	longname[256] = '\0';
	assert_false(store_valid_component(longname));
}

static void
test_step_names(void **state)
{
	struct store_naming nm;
	char buf[64];
	uint64_t s;

	(void)state;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_step_name(&nm, 0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "0");
	assert_int_equal(store_step_name(&nm, 42, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "42");
	assert_int_equal(store_step_name(&nm, UINT64_MAX, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "18446744073709551615");
	assert_int_equal(store_step_name(&nm, 12345, buf, 5), CKPT_EINVAL);
	assert_int_equal(store_step_name(&nm, 1234, buf, 5), 0);

	assert_int_equal(store_parse_step_name(&nm, "42", &s), 0);
	assert_int_equal(s, 42);
	assert_int_equal(store_parse_step_name(&nm, "0", &s), 0);
	assert_int_equal(s, 0);
	assert_int_equal(store_parse_step_name(&nm, "18446744073709551615",
	    &s), 0);
	assert_true(s == UINT64_MAX);
	assert_int_equal(store_parse_step_name(&nm, "18446744073709551616",
	    &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "042", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "4a", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "-1", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "42" CKPT_TMP_SUFFIX, &s),
	    -1);
	assert_int_equal(store_parse_step_name(&nm, "ckpt_42", &s), -1);

	strcpy(nm.prefix, "ckpt");
	assert_int_equal(store_step_name(&nm, 7, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "ckpt_7");
	assert_int_equal(store_parse_step_name(&nm, "ckpt_7", &s), 0);
	assert_int_equal(s, 7);
	assert_int_equal(store_parse_step_name(&nm, "7", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "ckpt_", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "ckpt7", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "ckp_7", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "ckpt_x", &s), -1);

	nm.fixed_len = 8;
	assert_int_equal(store_step_name(&nm, 42, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "ckpt_00000042");
	assert_int_equal(store_parse_step_name(&nm, "ckpt_00000042", &s), 0);
	assert_int_equal(s, 42);
	assert_int_equal(store_parse_step_name(&nm, "ckpt_42", &s), -1);
	assert_int_equal(store_parse_step_name(&nm, "ckpt_000000042", &s), -1);
	assert_int_equal(store_step_name(&nm, 123456789, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "ckpt_123456789");
	assert_int_equal(store_parse_step_name(&nm, "ckpt_123456789", &s), 0);
	assert_int_equal(s, 123456789);

	nm.prefix[0] = '\0';
	nm.fixed_len = 3;
	assert_int_equal(store_step_name(&nm, 5, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "005");
	assert_int_equal(store_parse_step_name(&nm, "005", &s), 0);
	assert_int_equal(s, 5);
	assert_int_equal(store_parse_step_name(&nm, "5", &s), -1);
}

/* ---- roots ----------------------------------------------------------------------- */

static void
test_open_root(void **state)
{
	struct fx *f = *state;
	char path[512];
	ckd_err e = { 0 };
	const struct store_backend *rbe = NULL;
	struct stat st;
	int fd = -1;

	assert_int_equal(store_open_root("relative/dir", 1, 0755, &rbe, &fd,
	    &e), CKPT_EINVAL);
	assert_int_equal(e.code, CKPT_EINVAL);
	assert_true(strlen(e.msg) > 0);
	assert_null(rbe);

	/* a scheme no backend keeps: refused, the scheme named */
	memset(&e, 0, sizeof e);
	assert_int_equal(store_open_root("gs://bucket/ckpt", 1, 0755, &rbe,
	    &fd, &e), CKPT_EINVAL);
	assert_non_null(strstr(e.msg, "\"gs://\""));
	assert_null(rbe);
	assert_null(store_backend_for("", &e));
	assert_null(store_backend_for(NULL, &e));
	assert_ptr_equal(store_backend_for("/x", &e), &backend_posix);
	/* this program is not linked with the S3 backend (ckptds3) */
	assert_null(store_backend_for("s3://bucket/x", &e));
	assert_non_null(strstr(e.msg, "\"s3://\""));

	snprintf(path, sizeof(path), "%s/missing", f->dir);
	assert_int_equal(store_open_root(path, 0, 0755, &rbe, &fd, &e),
	    CKPT_ENOTDIR);

	snprintf(path, sizeof(path), "%s/a//b/c/", f->dir);
	assert_int_equal(store_open_root(path, 1, 0755, &rbe, &fd, &e), 0);
	assert_ptr_equal(rbe, &backend_posix);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	/* existing: fine with and without create */
	assert_int_equal(store_open_root(path, 1, 0755, &rbe, &fd, &e), 0);
	close(fd);
	assert_int_equal(store_open_root(path, 0, 0755, &rbe, &fd, &e), 0);
	close(fd);

	/* a regular file is not a root */
	write_str(f->dfd, "file", "x");
	snprintf(path, sizeof(path), "%s/file", f->dir);
	assert_int_equal(store_open_root(path, 0, 0755, &rbe, &fd, &e),
	    CKPT_ENOTDIR);
	snprintf(path, sizeof(path), "%s/file/sub", f->dir);
	assert_int_equal(store_open_root(path, 1, 0755, &rbe, &fd, &e),
	    CKPT_ENOTDIR);

	/* a symlink in the user's own path is followed */
	assert_int_equal(symlinkat("a/b", f->dfd, "link"), 0);
	snprintf(path, sizeof(path), "%s/link/c", f->dir);
	assert_int_equal(store_open_root(path, 0, 0755, &rbe, &fd, &e), 0);
	close(fd);
}

static void
test_read_file(void **state)
{
	struct fx *f = *state;
	ckd_err e = { 0 };
	char *buf = (char *)1;
	size_t len = 99;

	assert_int_equal(store_read_file(be, f->dfd, "nope", 100, &buf, &len,
	    &e), CKPT_ENOTFOUND);
	assert_null(buf);
	write_str(f->dfd, "small", "hello");
	assert_int_equal(store_read_file(be, f->dfd, "small", 5, &buf, &len,
	    &e), 0);
	assert_int_equal(len, 5);
	assert_string_equal(buf, "hello");
	free(buf);
	assert_int_equal(store_read_file(be, f->dfd, "small", 4, &buf, &len,
	    &e), CKPT_ETOOBIG);
	assert_null(buf);
	write_str(f->dfd, "empty", "");
	assert_int_equal(store_read_file(be, f->dfd, "empty", 4, &buf, &len,
	    &e), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);
	assert_int_equal(mkdirat(f->dfd, "dir", 0755), 0);
	assert_int_equal(store_read_file(be, f->dfd, "dir", 4, &buf, &len, &e),
	    CKPT_ECORRUPT);
	/* symlinks are not followed */
	assert_int_equal(symlinkat("small", f->dfd, "link"), 0);
	assert_true(store_read_file(be, f->dfd, "link", 100, &buf, &len,
	    &e) != 0);
	assert_null(buf);
}

/* ---- safetensors --------------------------------------------------------------- */

#define BIG (5u * 1024 * 1024 + 3)

struct tset {
	struct store_tensor t[8];
	uint64_t shapes[8][4];
	void *bufs[8];
	size_t n;
};

static void
tset_add(struct tset *s, const char *name, Ckpt__Dtype dt, size_t ndim,
    const uint64_t *shape)
{
	struct store_tensor *t = &s->t[s->n];
	uint64_t nb = store_dtype_size(dt);
	unsigned char *p;
	size_t i;

	for (i = 0; i < ndim; i++) {
		s->shapes[s->n][i] = shape[i];
		nb *= shape[i];
	}
	p = nb > 0 ? malloc(nb) : NULL;
	for (i = 0; i < nb; i++)
		p[i] = (unsigned char)(i * 131 + s->n * 7 + 1);
	t->name = name;
	t->dtype = dt;
	t->ndim = ndim;
	t->shape = s->shapes[s->n];
	t->src = p;
	t->nbytes = nb;
	s->bufs[s->n] = p;
	s->n++;
}

static void
tset_free(struct tset *s)
{
	size_t i;

	for (i = 0; i < s->n; i++) {
		free(s->bufs[i]);
		free(s->t[i].chunks);
	}
}

/* t's chunk sums: one per STORE_SUM_CHUNK of its bytes (the last one
 * shorter), none for a tensor of one chunk. */
static void
assert_chunk_sums(const struct store_tensor *t)
{
	const char *p = t->src;
	uint64_t at, n;
	size_t k;

	if (t->nbytes <= STORE_SUM_CHUNK) {
		assert_null(t->chunks);
		assert_int_equal(t->nchunks, 0);
		return;
	}
	assert_int_equal(t->nchunks, (t->nbytes + STORE_SUM_CHUNK - 1) /
	    STORE_SUM_CHUNK);
	for (k = 0, at = 0; k < t->nchunks; k++, at += n) {
		n = t->nbytes - at < STORE_SUM_CHUNK ? t->nbytes - at :
		    STORE_SUM_CHUNK;
		assert_true(t->chunks[k] == XXH3_64bits(p + at, (size_t)n));
	}
}

static void
make_tensors(struct tset *s)
{
	static const uint64_t s23[] = { 2, 3 }, s3[] = { 3 },
	    s0[] = { 0 }, sbig[] = { BIG }, s5[] = { 5 }, s703[] = { 7, 0, 3 },
	    s4x[] = { 3, 5 };

	memset(s, 0, sizeof(*s));
	tset_add(s, "a.w", CKPT__DTYPE__DTYPE_F32, 2, s23);
	tset_add(s, "scalar", CKPT__DTYPE__DTYPE_I64, 0, NULL);
	tset_add(s, "odd", CKPT__DTYPE__DTYPE_U8, 1, s3);
	tset_add(s, "empty", CKPT__DTYPE__DTYPE_BF16, 1, s0);
	tset_add(s, "big", CKPT__DTYPE__DTYPE_U8, 1, sbig);
	tset_add(s, "flags", CKPT__DTYPE__DTYPE_BOOL, 1, s5);
	tset_add(s, "empty3", CKPT__DTYPE__DTYPE_F16, 3, s703);
	tset_add(s, "d", CKPT__DTYPE__DTYPE_F64, 2, s4x);
}

struct span { uint64_t b, e; };

static int
span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	if (x->b != y->b)
		return x->b < y->b ? -1 : 1;
	return x->e < y->e ? -1 : x->e > y->e;
}

static void
test_safetensors_layout(void **state)
{
	struct fx *f = *state;
	struct tset s;
	ckd_err e = { 0 };
	struct span spans[32];
	size_t len, i, nsp = 0, N;
	unsigned char *file;
	json_t *hdr, *v;
	const char *key;
	uint64_t prev;
	struct stat st;
	int fd;

	make_tensors(&s);
	assert_int_equal(store_write_safetensors(be, f->dfd,
	    "data-00000.safetensors", 0640, s.t, s.n, &e), 0);
	assert_int_equal(fstatat(f->dfd, "data-00000.safetensors", &st, 0), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	file = (unsigned char *)read_all(f->dfd, "data-00000.safetensors",
	    &len);
	assert_true(len > 8);
	N = 0;
	for (i = 0; i < 8; i++)
		N |= (size_t)file[i] << (8 * i);
	assert_int_equal((8 + N) % STORE_PAGE, 0);
	assert_int_equal(file[8], '{');
	hdr = json_loadb((const char *)file + 8, N, 0, NULL);
	assert_non_null(hdr);
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    hdr, "__metadata__"), "format")), "pt");

	for (i = 0; i < s.n; i++) {
		struct store_tensor *t = &s.t[i];
		json_t *info = json_object_get(hdr, t->name), *sh;
		size_t d;

		assert_non_null(info);
		assert_string_equal(json_string_value(json_object_get(info,
		    "dtype")), store_dtype_name(t->dtype));
		sh = json_object_get(info, "shape");
		assert_int_equal(json_array_size(sh), t->ndim);
		for (d = 0; d < t->ndim; d++)
			assert_int_equal(json_integer_value(json_array_get(sh,
			    d)), t->shape[d]);
		v = json_object_get(info, "data_offsets");
		assert_int_equal(t->offset % STORE_TENSOR_ALIGN, 0);
		assert_int_equal(8 + N + json_integer_value(json_array_get(v,
		    0)), t->offset);
		assert_int_equal(json_integer_value(json_array_get(v, 1)) -
		    json_integer_value(json_array_get(v, 0)), t->nbytes);
		assert_true(t->offset + t->nbytes <= len);
		if (t->nbytes > 0)
			assert_memory_equal(file + t->offset, t->src, t->nbytes);
		assert_true(t->xxh3 == XXH3_64bits(t->src, t->nbytes));
		assert_chunk_sums(t);
	}
	assert_int_equal(s.t[4].nbytes, BIG);
	assert_int_equal(s.t[4].nchunks, 3);

	/* The reference reader's rule: entries sorted by offsets cover the
	 * data section without holes up to the end of the file, and the
	 * alignment gaps are zero bytes. */
	json_object_foreach(hdr, key, v) {
		json_t *o;

		if (strcmp(key, "__metadata__") == 0)
			continue;
		o = json_object_get(v, "data_offsets");
		assert_true(nsp < 32);
		spans[nsp].b = (uint64_t)json_integer_value(json_array_get(o, 0));
		spans[nsp].e = (uint64_t)json_integer_value(json_array_get(o, 1));
		if (strncmp(key, "__ckptd_pad_", 12) == 0) {
			uint64_t k;

			assert_string_equal(json_string_value(json_object_get(v,
			    "dtype")), "U8");
			for (k = spans[nsp].b; k < spans[nsp].e; k++)
				assert_int_equal(file[8 + N + k], 0);
		}
		nsp++;
	}
	assert_true(nsp > s.n);   /* some gaps were needed */
	qsort(spans, nsp, sizeof(spans[0]), span_cmp);
	prev = 0;
	for (i = 0; i < nsp; i++) {
		assert_int_equal(spans[i].b, prev);
		prev = spans[i].e;
	}
	assert_int_equal(8 + N + prev, len);
	json_decref(hdr);
	free(file);

	/* O_EXCL: never overwrites */
	assert_int_equal(store_write_safetensors(be, f->dfd,
	    "data-00000.safetensors", 0640, s.t, s.n, &e), CKPT_EEXIST);
	fd = openat(f->dfd, "data-00000.safetensors", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	close(fd);
	tset_free(&s);
}

static void
test_safetensors_empty_file(void **state)
{
	struct fx *f = *state;
	ckd_err e = { 0 };
	size_t len;
	char *file;

	assert_int_equal(store_write_safetensors(be, f->dfd, "none.safetensors",
	    0644, NULL, 0, &e), 0);
	file = read_all(f->dfd, "none.safetensors", &len);
	assert_int_equal(len, STORE_PAGE);
	free(file);
}

static void
test_safetensors_bad_input(void **state)
{
	struct fx *f = *state;
	static const uint64_t s2[] = { 2 }, huge[] = { UINT64_MAX / 2, 4 };
	unsigned char data[8] = { 0 };
	struct store_tensor t[2];
	ckd_err e = { 0 };

	memset(t, 0, sizeof(t));
	t[0] = (struct store_tensor){ "x", CKPT__DTYPE__DTYPE_F32, 1, s2, data,
	    8, 0, 0 };
	t[1] = t[0];
	/* duplicate names */
	assert_int_equal(store_write_safetensors(be, f->dfd, "f", 0644, t, 2,
	    &e), CKPT_EINVAL);
	assert_false(exists_at(f->dfd, "f"));
	/* reserved names */
	t[1].name = "__metadata__";
	assert_int_equal(store_write_safetensors(be, f->dfd, "f", 0644, t, 2,
	    &e), CKPT_EINVAL);
	t[1].name = "__ckptd_pad_0__";
	assert_int_equal(store_write_safetensors(be, f->dfd, "f", 0644, t, 2,
	    &e), CKPT_EINVAL);
	/* wrong size, bad dtype, overflow, NULL data */
	t[0].nbytes = 7;
	assert_int_equal(store_write_safetensors(be, f->dfd, "f", 0644, t, 1,
	    &e), CKPT_EINVAL);
	t[0].nbytes = 8;
	t[0].dtype = (Ckpt__Dtype)77;
	assert_int_equal(store_write_safetensors(be, f->dfd, "f", 0644, t, 1,
	    &e), CKPT_EINVAL);
	t[0].dtype = CKPT__DTYPE__DTYPE_F64;
	t[0].shape = huge;
	t[0].ndim = 2;
	assert_int_equal(store_write_safetensors(be, f->dfd, "f", 0644, t, 1,
	    &e), CKPT_EINVAL);
	t[0].dtype = CKPT__DTYPE__DTYPE_F32;
	t[0].shape = s2;
	t[0].ndim = 1;
	t[0].src = NULL;
	assert_int_equal(store_write_safetensors(be, f->dfd, "f", 0644, t, 1,
	    &e), CKPT_EINVAL);
	t[0].src = data;
	/* bad file names */
	assert_int_equal(store_write_safetensors(be, f->dfd, "../f", 0644, t, 1,
	    &e), CKPT_EINVAL);
	assert_false(exists_at(f->dfd, "f"));
	/* and a good one still works */
	assert_int_equal(store_write_safetensors(be, f->dfd, "f", 0644, t, 1,
	    &e), 0);
	/* a symlink in the way is not followed or replaced */
	assert_int_equal(symlinkat("target", f->dfd, "g"), 0);
	assert_int_equal(store_write_safetensors(be, f->dfd, "g", 0644, t, 1,
	    &e), CKPT_EEXIST);
	assert_false(exists_at(f->dfd, "target"));
}

struct problems {
	int n;
	char tensor[64];
	char msg[256];
};

static void
problem_cb(void *arg, const char *tensor, const char *msg)
{
	struct problems *p = arg;

	assert_non_null(msg);
	p->n++;
	snprintf(p->tensor, sizeof(p->tensor), "%s", tensor);
	snprintf(p->msg, sizeof(p->msg), "%s", msg);
}

static Ckpt__Item *
item_for(const struct tset *s, const char *file)
{
	Ckpt__Item *it = item_new();
	size_t i;

	for (i = 0; i < s->n; i++) {
		Ckpt__Leaf *l = item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY);

		leaf_key(l, s->t[i].name);
		leaf_array(l, s->t[i].dtype, s->t[i].ndim, s->t[i].shape, file,
		    s->t[i].name, s->t[i].xxh3);
		if (s->t[i].chunks != NULL) {
			l->has_chunk_bytes = 1;
			l->chunk_bytes = STORE_SUM_CHUNK;
			l->n_chunk_xxh3 = s->t[i].nchunks;
			l->chunk_xxh3 = malloc(s->t[i].nchunks *
			    sizeof(uint64_t));
			assert_non_null(l->chunk_xxh3);
			memcpy(l->chunk_xxh3, s->t[i].chunks,
			    s->t[i].nchunks * sizeof(uint64_t));
		}
	}
	return it;
}

static void
test_open_item_files_and_verify(void **state)
{
	struct fx *f = *state;
	struct problems pr = { 0 };
	struct tset s, s2;
	Ckpt__Item *it;
	Ckpt__Leaf *l;
	ckd_err e = { 0 };
	int fds[4] = { -1, -1, -1, -1 }, fd;
	size_t nfds = 1, i;
	unsigned char c;

	make_tensors(&s);
	assert_int_equal(store_write_safetensors(be, f->dfd, "d0.safetensors",
	    0644, s.t, s.n, &e), 0);
	it = item_for(&s, "d0.safetensors");
	/* one more leaf in a second file */
	memset(&s2, 0, sizeof(s2));
	{
		static const uint64_t sh[] = { 4 };

		tset_add(&s2, "other", CKPT__DTYPE__DTYPE_I32, 1, sh);
	}
	assert_int_equal(store_write_safetensors(be, f->dfd, "d1.safetensors",
	    0644, s2.t, 1, &e), 0);
	l = item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY);
	leaf_array(l, CKPT__DTYPE__DTYPE_I32, 1, s2.t[0].shape,
	    "d1.safetensors", "other", s2.t[0].xxh3);
	l = item_add(it, CKPT__LEAF_KIND__LEAF_INT);
	l->has_int_value = 1;
	l->int_value = 3;

	fds[0] = 99;   /* pretend slot 0 is taken by someone else */
	assert_int_equal(store_open_item_files(be, f->dfd, it, fds, &nfds, 4,
	    &e), 0);
	assert_int_equal(nfds, 3);
	assert_int_equal(fds[0], 99);
	for (i = 0; i < s.n; i++) {
		assert_true(it->leaves[i]->has_offset);
		assert_int_equal(it->leaves[i]->offset, s.t[i].offset);
		assert_true(it->leaves[i]->has_fd_index);
		assert_int_equal(it->leaves[i]->fd_index, 1);
	}
	assert_int_equal(it->leaves[s.n]->fd_index, 2);
	assert_int_equal(it->leaves[s.n]->offset, s2.t[0].offset);
	assert_true(fcntl(fds[1], F_GETFD) & FD_CLOEXEC);

	/* the bytes at (fd, offset) are the tensor's */
	for (i = 0; i < s.n; i++) {
		unsigned char *buf;

		if (s.t[i].nbytes == 0)
			continue;
		buf = malloc(s.t[i].nbytes);
		assert_int_equal(pread(fds[1], buf, s.t[i].nbytes,
		    (off_t)s.t[i].offset), (ssize_t)s.t[i].nbytes);
		assert_memory_equal(buf, s.t[i].src, s.t[i].nbytes);
		free(buf);
	}

	assert_int_equal(store_verify_item(be, it, fds, problem_cb, &pr, &e),
	    0);
	assert_int_equal(pr.n, 0);

	/* flip one byte in the middle of the big tensor */
	fd = openat(f->dfd, "d0.safetensors", O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, (off_t)(s.t[4].offset + BIG / 2)), 1);
	c ^= 0x40;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)(s.t[4].offset + BIG / 2)),
	    1);
	close(fd);
	assert_int_equal(store_verify_item(be, it, fds, problem_cb, &pr, &e),
	    CKPT_ECORRUPT);
	assert_int_equal(pr.n, 1);
	assert_string_equal(pr.tensor, "big");
	/* the chunks say where: byte BIG / 2 is in chunk 1 of 3 */
	assert_non_null(strstr(pr.msg, "checksum mismatch: stored"));
	assert_non_null(strstr(pr.msg, "in 1 of 3 chunks"));
	assert_non_null(strstr(pr.msg, "first: chunk 1)"));

	/* a chunk sum alone wrong (the whole one right): still a problem */
	c ^= 0x40;
	fd = openat(f->dfd, "d0.safetensors", O_RDWR | O_CLOEXEC);
	assert_int_equal(pwrite(fd, &c, 1, (off_t)(s.t[4].offset + BIG / 2)),
	    1);
	close(fd);
	pr.n = 0;
	it->leaves[4]->chunk_xxh3[2] ^= 1;
	assert_int_equal(store_verify_item(be, it, fds, problem_cb, &pr, &e),
	    CKPT_ECORRUPT);
	assert_int_equal(pr.n, 1);
	assert_null(strstr(pr.msg, "stored"));
	assert_non_null(strstr(pr.msg, "first: chunk 2)"));
	it->leaves[4]->chunk_xxh3[2] ^= 1;
	pr.n = 0;
	assert_int_equal(store_verify_item(be, it, fds, problem_cb, &pr, &e),
	    0);

	/* truncation is a problem, not a crash */
	pr.n = 0;
	fd = openat(f->dfd, "d1.safetensors", O_RDWR | O_CLOEXEC);
	assert_int_equal(ftruncate(fd, (off_t)s2.t[0].offset + 2), 0);
	close(fd);
	assert_int_equal(store_verify_item(be, it, fds, problem_cb, &pr, &e),
	    CKPT_ECORRUPT);
	assert_int_equal(pr.n, 1);      /* "big" was mended above */
	assert_string_equal(pr.tensor, "other");
	assert_string_equal(pr.msg, "data truncated");

	close(fds[1]);
	close(fds[2]);

	/* too many files for the room left */
	nfds = 3;
	assert_int_equal(store_open_item_files(be, f->dfd, it, fds, &nfds, 4,
	    &e), CKPT_ETOOBIG);
	assert_int_equal(nfds, 3);
	store_item_free(it);
	tset_free(&s);
	tset_free(&s2);
}

/* Write `hdr` as a safetensors header (length N = strlen(hdr) unless
 * forced) followed by `data` bytes of zeros. */
static void
write_st(int dfd, const char *name, const char *hdr, uint64_t forced_n,
    size_t data)
{
	size_t hl = strlen(hdr);
	uint64_t N = forced_n ? forced_n : hl;
	unsigned char *buf = calloc(1, 8 + hl + data);
	int i;

	assert_non_null(buf);
	for (i = 0; i < 8; i++)
		buf[i] = (unsigned char)(N >> (8 * i));
	memcpy(buf + 8, hdr, hl);
	write_raw(dfd, name, buf, 8 + hl + data);
	free(buf);
}

static int
open_one(int dfd, Ckpt__Dtype dt, size_t ndim, const uint64_t *shape,
    const char *file)
{
	Ckpt__Item *it = item_new();
	Ckpt__Leaf *l = item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY);
	int fds[2] = { -1, -1 }, before = count_fds(), r;
	size_t nfds = 0;
	ckd_err e = { 0 };

	leaf_array(l, dt, ndim, shape, file, "t", 0);
	r = store_open_item_files(be, dfd, it, fds, &nfds, 2, &e);
	if (r == 0) {
		close(fds[0]);
	} else {
		assert_int_equal(nfds, 0);
		assert_int_equal(count_fds(), before);
		assert_true(strlen(e.msg) > 0);
	}
	store_item_free(it);
	return r;
}

static void
test_safetensors_malformed(void **state)
{
	struct fx *f = *state;
	static const uint64_t s2[] = { 2 }, s3[] = { 3 }, s12[] = { 1, 2 };
	const Ckpt__Dtype F32 = CKPT__DTYPE__DTYPE_F32;
	const char *good =
	    "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

	/* the control: a correct file opens */
	write_st(f->dfd, "ok", good, 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "ok"), 0);
	/* too short for a header length */
	write_raw(f->dfd, "short", "\x05\x00\x00", 3);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "short"), CKPT_ECORRUPT);
	/* huge header length */
	write_st(f->dfd, "huge", good, (uint64_t)1 << 40, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "huge"), CKPT_ECORRUPT);
	write_st(f->dfd, "huge2", good, UINT64_MAX, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "huge2"), CKPT_ECORRUPT);
	/* header length past the end of the file (but < 100 MiB) */
	write_st(f->dfd, "past", good, 4096, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "past"), CKPT_ECORRUPT);
	/* zero header length */
	write_st(f->dfd, "zero", "", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "zero"), CKPT_ECORRUPT);
	/* not JSON / not an object / truncated JSON */
	write_st(f->dfd, "nojson", "{\"t\":", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "nojson"), CKPT_ECORRUPT);
	write_st(f->dfd, "array", "[1,2]", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "array"), CKPT_ECORRUPT);
	/* data offsets beyond the file */
	write_st(f->dfd, "beyond", good, 0, 4);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "beyond"), CKPT_ECORRUPT);
	write_st(f->dfd, "beyond2", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[9223372036854775800,9223372036854775807]}}", 0,
	    8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "beyond2"),
	    CKPT_ECORRUPT);
	/* offsets inverted, negative, wrong type, size mismatch */
	write_st(f->dfd, "inv", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[8,0]}}", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "inv"), CKPT_ECORRUPT);
	write_st(f->dfd, "neg", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[-8,0]}}", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "neg"), CKPT_ECORRUPT);
	write_st(f->dfd, "str", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[\"0\",8]}}", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "str"), CKPT_ECORRUPT);
	write_st(f->dfd, "size", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[0,12]}}", 0, 12);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "size"), CKPT_ECORRUPT);
	/* dtype or shape different from the leaf */
	assert_int_equal(open_one(f->dfd, CKPT__DTYPE__DTYPE_I32, 1, s2, "ok"),
	    CKPT_ECORRUPT);
	assert_int_equal(open_one(f->dfd, F32, 2, s12, "ok"), CKPT_ECORRUPT);
	write_st(f->dfd, "shape3", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],"
	    "\"data_offsets\":[0,8]}}", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "shape3"), CKPT_ECORRUPT);
	assert_int_equal(open_one(f->dfd, F32, 1, s3, "ok"), CKPT_ECORRUPT);
	write_st(f->dfd, "baddt", "{\"t\":{\"dtype\":7,\"shape\":[2],"
	    "\"data_offsets\":[0,8]}}", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "baddt"), CKPT_ECORRUPT);
	/* the tensor is missing / not an object */
	write_st(f->dfd, "missing", "{\"u\":{\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[0,8]}}", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "missing"),
	    CKPT_ECORRUPT);
	write_st(f->dfd, "notobj", "{\"t\":[]}", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "notobj"), CKPT_ECORRUPT);
	/* duplicate keys */
	write_st(f->dfd, "dup", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[0,8]},\"t\":{}}", 0, 8);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "dup"), CKPT_ECORRUPT);
	/* the file is absent, or a directory, or a bad name */
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "absent"),
	    CKPT_ENOTFOUND);
	assert_int_equal(mkdirat(f->dfd, "adir", 0755), 0);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "adir"), CKPT_ECORRUPT);
	assert_int_equal(open_one(f->dfd, F32, 1, s2, "../ok"), CKPT_ECORRUPT);
	/* a symlink to a good file is not followed */
	assert_int_equal(symlinkat("ok", f->dfd, "link"), 0);
	assert_true(open_one(f->dfd, F32, 1, s2, "link") != 0);
}

/* ---- tree metadata ---------------------------------------------------------------- */

static Ckpt__Leaf *
add_float(Ckpt__Item *it, const char *key, double v)
{
	Ckpt__Leaf *l = item_add(it, CKPT__LEAF_KIND__LEAF_FLOAT);

	leaf_key(l, key);
	l->has_float_value = 1;
	l->float_value = v;
	return l;
}

static Ckpt__Item *
full_item(void)
{
	static const uint64_t s23[] = { 2, 3 };
	Ckpt__Item *it = item_new();
	Ckpt__Leaf *l;

	l = item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY);
	leaf_key(l, "params");
	leaf_idx(l, CKPT__KEY_KIND__KEY_LIST, 0);
	leaf_idx(l, CKPT__KEY_KIND__KEY_TUPLE, 3);
	leaf_key(l, "w");
	leaf_array(l, CKPT__DTYPE__DTYPE_F32, 2, s23, "data-00000.safetensors",
	    "params.0.3.w", UINT64_C(0xfedcba9876543210));
	leaf_chunks(l, 10, UINT64_C(0xa0000000000000f0));
	l->tag = xstrdup("torch");
	l = item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY);
	leaf_key(l, "scalar");
	leaf_array(l, CKPT__DTYPE__DTYPE_BF16, 0, NULL, "data-00000.safetensors",
	    "scalar", 0);
	l->tag = xstrdup("np.scalar");
	l = item_add(it, CKPT__LEAF_KIND__LEAF_INT);
	leaf_key(l, "min");
	l->has_int_value = 1;
	l->int_value = INT64_MIN;
	l = item_add(it, CKPT__LEAF_KIND__LEAF_INT);
	leaf_key(l, "max");
	l->has_int_value = 1;
	l->int_value = INT64_MAX;
	add_float(it, "f1", 1.5);
	add_float(it, "f2", 0.1);
	add_float(it, "f3", -0.0);
	add_float(it, "f4", DBL_MAX);
	add_float(it, "f5", 5e-324);
	add_float(it, "f6", 1.0 / 3.0);
	add_float(it, "f7", INFINITY);
	add_float(it, "f8", -INFINITY);
	add_float(it, "f9", NAN);
	add_float(it, "f10", 1e300 * 1e10 / 1e10);
	add_float(it, "f11", 123456789.0);
	l = item_add(it, CKPT__LEAF_KIND__LEAF_BOOL);
	leaf_key(l, "yes");
	l->has_bool_value = 1;
	l->bool_value = 1;
	l = item_add(it, CKPT__LEAF_KIND__LEAF_BOOL);
	leaf_key(l, "no");
	l->has_bool_value = 1;
	l->bool_value = 0;
	l = item_add(it, CKPT__LEAF_KIND__LEAF_STR);
	leaf_key(l, "s");
	l->str_value = xstrdup("h\xc3\xa9llo \"q\"\n\t\\ /");
	l = item_add(it, CKPT__LEAF_KIND__LEAF_STR);
	leaf_key(l, "");
	l->str_value = xstrdup("");
	l = item_add(it, CKPT__LEAF_KIND__LEAF_NONE);
	leaf_key(l, "none");
	l = item_add(it, CKPT__LEAF_KIND__LEAF_EMPTY_DICT);
	leaf_key(l, "ed");
	l = item_add(it, CKPT__LEAF_KIND__LEAF_EMPTY_LIST);
	leaf_key(l, "el");
	leaf_idx(l, CKPT__KEY_KIND__KEY_LIST, UINT64_C(9007199254740993));
	l = item_add(it, CKPT__LEAF_KIND__LEAF_EMPTY_TUPLE);
	leaf_key(l, "et");
	l->tag = xstrdup("");
	/* a bare leaf (ArrayCheckpointHandler): empty path */
	l = item_add(it, CKPT__LEAF_KIND__LEAF_INT);
	l->has_int_value = 1;
	l->int_value = -1;
	return it;
}

static void
assert_str_eq_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void
assert_leaf_equal(const Ckpt__Leaf *a, const Ckpt__Leaf *b)
{
	size_t i;

	assert_int_equal(a->kind, b->kind);
	assert_true(b->has_kind);
	assert_int_equal(a->n_path, b->n_path);
	for (i = 0; i < a->n_path; i++) {
		assert_int_equal(a->path[i]->kind, b->path[i]->kind);
		assert_true(b->path[i]->has_kind);
		if (a->path[i]->kind == CKPT__KEY_KIND__KEY_DICT) {
			assert_string_equal(a->path[i]->key, b->path[i]->key);
			assert_false(b->path[i]->has_index);
		} else {
			assert_true(a->path[i]->index == b->path[i]->index);
			assert_true(b->path[i]->has_index);
			assert_null(b->path[i]->key);
		}
	}
	assert_str_eq_null(a->tag, b->tag);
	switch (a->kind) {
	case CKPT__LEAF_KIND__LEAF_ARRAY:
		assert_true(b->has_dtype && b->has_nbytes && b->has_xxh3);
		assert_int_equal(a->dtype, b->dtype);
		assert_int_equal(a->n_shape, b->n_shape);
		for (i = 0; i < a->n_shape; i++)
			assert_true(a->shape[i] == b->shape[i]);
		assert_true(a->nbytes == b->nbytes);
		assert_string_equal(a->file, b->file);
		assert_string_equal(a->tensor, b->tensor);
		assert_true(a->xxh3 == b->xxh3);
		assert_int_equal(a->n_chunk_xxh3, b->n_chunk_xxh3);
		assert_true(a->chunk_bytes == b->chunk_bytes);
		for (i = 0; i < a->n_chunk_xxh3; i++)
			assert_true(a->chunk_xxh3[i] == b->chunk_xxh3[i]);
		assert_true(b->has_offset && b->offset == 0);
		assert_true(b->has_fd_index && b->fd_index == 0);
		break;
	case CKPT__LEAF_KIND__LEAF_INT:
		assert_true(b->has_int_value);
		assert_true(a->int_value == b->int_value);
		break;
	case CKPT__LEAF_KIND__LEAF_FLOAT:
		assert_true(b->has_float_value);
		if (isnan(a->float_value))
			assert_true(isnan(b->float_value));
		else
			assert_memory_equal(&a->float_value, &b->float_value,
			    sizeof(double));
		break;
	case CKPT__LEAF_KIND__LEAF_BOOL:
		assert_true(b->has_bool_value);
		assert_int_equal(!!a->bool_value, !!b->bool_value);
		break;
	case CKPT__LEAF_KIND__LEAF_STR:
		assert_string_equal(a->str_value, b->str_value);
		break;
	default:
		assert_false(b->has_int_value || b->has_float_value ||
		    b->has_bool_value || b->has_dtype);
		assert_null(b->str_value);
		break;
	}
}

static void
test_tree_metadata_roundtrip(void **state)
{
	struct fx *f = *state;
	Ckpt__Item *it = full_item(), *back = NULL, *un;
	ckd_err e = { 0 };
	struct stat st;
	uint8_t *wire;
	size_t i, n;
	char *text;
	json_t *j;

	assert_int_equal(store_write_tree_metadata(be, f->dfd, it, 0600, &e),
	    0);
	assert_int_equal(fstatat(f->dfd, STORE_TREE_METADATA, &st, 0), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* the format promised at the top of treemeta.c */
	text = read_all(f->dfd, STORE_TREE_METADATA, NULL);
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "format")),
	    "ckptd-tree");
	assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(
	    json_object_get(j, "leaves"), 0), "xxh3")), "fedcba9876543210");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(
	    json_object_get(j, "leaves"), 0), "chunk")), 10);
	assert_string_equal(json_string_value(json_object_get(json_array_get(
	    json_object_get(j, "leaves"), 0), "xxh3_chunks")),
	    "a0000000000000f0a0000000000000f1a0000000000000f2");
	assert_null(json_object_get(json_array_get(json_object_get(j,
	    "leaves"), 1), "chunk"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(
	    json_object_get(j, "leaves"), 10), "value")), "inf");
	json_decref(j);
	free(text);

	assert_int_equal(store_read_tree_metadata(be, f->dfd, &back, &e), 0);
	assert_non_null(back);
	assert_int_equal(back->n_leaves, it->n_leaves);
	for (i = 0; i < it->n_leaves; i++)
		assert_leaf_equal(it->leaves[i], back->leaves[i]);
	assert_true(signbit(back->leaves[6]->float_value));   /* -0.0 */

	/* a valid protobuf-c message: packs and unpacks to the same */
	back->name = xstrdup("default");
	back->has_handler = 1;
	back->handler = CKPT__HANDLER__HANDLER_STANDARD;
	n = ckpt__item__get_packed_size(back);
	wire = malloc(n);
	assert_non_null(wire);
	assert_int_equal(ckpt__item__pack(back, wire), n);
	un = ckpt__item__unpack(NULL, n, wire);
	assert_non_null(un);
	assert_string_equal(un->name, "default");
	assert_int_equal(un->n_leaves, it->n_leaves);
	for (i = 0; i < it->n_leaves; i++)
		assert_leaf_equal(it->leaves[i], un->leaves[i]);
	ckpt__item__free_unpacked(un, NULL);
	free(wire);

	/* O_EXCL */
	assert_int_equal(store_write_tree_metadata(be, f->dfd, it, 0600, &e),
	    CKPT_EEXIST);
	store_item_free(back);
	store_item_free(it);
	store_item_free(NULL);
}

/* Pieces of a global array: written as one leaf with "pieces" (the
 * consecutive leaves of one path), read back as one leaf per piece. */
static void
test_tree_metadata_pieces(void **state)
{
	static const uint64_t g[] = { 4, 3 }, s0[] = { 1, 3 }, s1[] = { 3, 3 },
	    o0[] = { 0, 0 }, o1[] = { 1, 0 }, out[] = { 2, 0 };
	struct fx *f = *state;
	Ckpt__Item *it = item_new(), *back = NULL;
	Ckpt__Leaf *l, *p[2];
	ckd_err e = { 0 };
	char *text;
	json_t *j, *lj;
	int k;

	for (k = 0; k < 2; k++) {
		p[k] = l = item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY);
		leaf_key(l, "w");
		leaf_array(l, CKPT__DTYPE__DTYPE_F32, 2, k ? s1 : s0,
		    k ? "data-p00001-00000.safetensors" :
		    "data-p00000-00000.safetensors", "w", 7 + (uint64_t)k);
		l->n_global_shape = 2;
		l->global_shape = malloc(sizeof g);
		memcpy(l->global_shape, g, sizeof g);
		l->n_piece_offsets = 2;
		l->piece_offsets = malloc(sizeof o0);
		memcpy(l->piece_offsets, k ? o1 : o0, sizeof o0);
		if (k == 1)
			leaf_chunks(l, 12, 100);
	}
	add_float(it, "lr", 0.5);
	assert_int_equal(store_write_tree_metadata(be, f->dfd, it, 0600, &e),
	    0);
	text = read_all(f->dfd, STORE_TREE_METADATA, NULL);
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "leaves")), 2);
	lj = json_array_get(json_object_get(j, "leaves"), 0);
	assert_int_equal(json_array_size(json_object_get(lj, "pieces")), 2);
	assert_null(json_object_get(lj, "file"));
	assert_int_equal(json_integer_value(json_array_get(json_object_get(
	    json_array_get(json_object_get(lj, "pieces"), 1), "offsets"), 0)),
	    1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(
	    json_object_get(lj, "pieces"), 1), "chunk")), 12);
	assert_null(json_object_get(json_array_get(json_object_get(lj,
	    "pieces"), 0), "chunk"));
	json_decref(j);
	free(text);

	assert_int_equal(store_read_tree_metadata(be, f->dfd, &back, &e), 0);
	assert_int_equal(back->n_leaves, 3);
	for (k = 0; k < 2; k++) {
		assert_leaf_equal(p[k], back->leaves[k]);
		assert_int_equal(back->leaves[k]->n_global_shape, 2);
		assert_true(back->leaves[k]->global_shape[0] == 4);
		assert_int_equal(back->leaves[k]->n_piece_offsets, 2);
		assert_true(back->leaves[k]->piece_offsets[0] ==
		    p[k]->piece_offsets[0]);
	}
	assert_true(back->leaves[2]->float_value == 0.5);
	store_item_free(back);

	/* A piece outside its global shape is not written. */
	memcpy(p[1]->piece_offsets, out, sizeof out);
	assert_int_equal(unlinkat(f->dfd, STORE_TREE_METADATA, 0), 0);
	assert_int_equal(store_write_tree_metadata(be, f->dfd, it, 0600, &e),
	    CKPT_EINVAL);
	assert_non_null(strstr(e.msg, "outside"));
	store_item_free(it);
}

static void
test_tree_metadata_empty(void **state)
{
	struct fx *f = *state;
	Ckpt__Item *it = item_new(), *back = NULL;
	ckd_err e = { 0 };

	assert_int_equal(store_write_tree_metadata(be, f->dfd, it, 0644, &e),
	    0);
	assert_int_equal(store_read_tree_metadata(be, f->dfd, &back, &e), 0);
	assert_int_equal(back->n_leaves, 0);
	store_item_free(back);
	store_item_free(it);
}

static void
test_tree_metadata_bad_write(void **state)
{
	struct fx *f = *state;
	static const uint64_t s2[] = { 2 };
	Ckpt__Item *it;
	Ckpt__Leaf *l;
	ckd_err e = { 0 };
	char tag[80];
	int i;

	for (i = 0; i < 9; i++) {
		it = item_new();
		l = item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY);
		leaf_key(l, "x");
		leaf_array(l, CKPT__DTYPE__DTYPE_F32, 1, s2, "f.safetensors",
		    "x", 0);
		switch (i) {
		case 0: l->nbytes = 7; break;
		case 1: l->dtype = (Ckpt__Dtype)40; break;
		case 2: free(l->file); l->file = xstrdup("../f"); break;
		case 3: free(l->tensor); l->tensor = xstrdup(""); break;
		case 4:
			memset(tag, 'x', sizeof(tag));
			tag[65] = '\0';
			l->tag = xstrdup(tag);
			break;
		case 5: l->kind = (Ckpt__LeafKind)30; break;
		case 6: free(l->path[0]->key); l->path[0]->key = NULL; break;
		case 7:
			l->kind = CKPT__LEAF_KIND__LEAF_STR;
			l->str_value = xstrdup("\xff\xfe not utf-8");
			break;
		case 8: l->path[0]->kind = (Ckpt__KeyKind)9; break;
		}
		assert_int_equal(store_write_tree_metadata(be, f->dfd, it, 0644,
		    &e), CKPT_EINVAL);
		assert_false(exists_at(f->dfd, STORE_TREE_METADATA));
		store_item_free(it);
	}
}

static void
test_tree_metadata_malformed(void **state)
{
	struct fx *f = *state;
	static const char *const bad[] = {
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"array\",\"dtype\":\"F32\","
		    "\"global_shape\":[4],\"pieces\":[{\"file\":\"f\",\"tensor\":\"t\",\"offsets\":[3],\"shape\":[2],\"nbytes\":8,\"xxh3\":\"0000000000000000\"}]}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"array\",\"dtype\":\"F32\","
		    "\"global_shape\":[4,1],\"pieces\":[{\"file\":\"f\",\"tensor\":\"t\",\"offsets\":[0],\"shape\":[2],\"nbytes\":8,\"xxh3\":\"0000000000000000\"}]}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"array\",\"dtype\":\"F32\","
		    "\"global_shape\":[4],\"pieces\":[{\"file\":\"f\",\"tensor\":\"t\",\"offsets\":[0,0],\"shape\":[2],\"nbytes\":8,\"xxh3\":\"0000000000000000\"}]}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"array\",\"dtype\":\"F32\","
		    "\"global_shape\":\"x\",\"pieces\":[{\"file\":\"f\",\"tensor\":\"t\",\"offsets\":[0],\"shape\":[2],\"nbytes\":8,\"xxh3\":\"0000000000000000\"}]}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"array\",\"dtype\":\"F32\","
		    "\"global_shape\":[4],\"pieces\":[{\"file\":\"f\",\"tensor\":\"t\",\"offsets\":[-1],\"shape\":[2],\"nbytes\":8,\"xxh3\":\"0000000000000000\"}]}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"array\",\"dtype\":\"F32\","
		    "\"global_shape\":[4],\"pieces\":[]}]}",
		"",
		"not json",
		"[]",
		"{\"format\":\"other\",\"version\":1,\"leaves\":[]}",
		"{\"version\":1,\"leaves\":[]}",
		"{\"format\":\"ckptd-tree\",\"version\":0,\"leaves\":[]}",
		"{\"format\":\"ckptd-tree\",\"version\":\"1\",\"leaves\":[]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":{}}",
		"{\"format\":\"ckptd-tree\",\"version\":1}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[1]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"weird\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":{},\"kind\":\"none\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"kind\":\"none\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[{\"kind\":\"set\",\"key\":\"a\"}],\"kind\":\"none\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[{\"kind\":\"dict\"}],\"kind\":\"none\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[{\"kind\":\"dict\",\"key\":3}],\"kind\":\"none\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[{\"kind\":\"list\",\"index\":-1}],\"kind\":\"none\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[{\"kind\":\"tuple\",\"index\":\"0\"}],\"kind\":\"none\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[7],\"kind\":\"none\"}]}",
		/* chunk sums: a count that is not one per chunk, a bad
		 * digit, a chunk size of 0, one member without the other */
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[4],\"nbytes\":16,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\","
		    "\"chunk\":8,\"xxh3_chunks\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[4],\"nbytes\":16,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\","
		    "\"chunk\":8,\"xxh3_chunks\":\"000000000000000000000000000000g0\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[4],\"nbytes\":16,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\","
		    "\"chunk\":0,\"xxh3_chunks\":\"\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[4],\"nbytes\":16,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\","
		    "\"chunk\":8}]}",
		/* arrays */
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F33\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[-2],\"nbytes\":8,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":9,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F64\",\"shape\":[4611686018427387904,"
		    "8],\"nbytes\":0,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,"
		    "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],\"nbytes\":1,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":2,\"nbytes\":8,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"../f\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"a/b\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"..\",\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"tensor\":\"t\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"f\",\"tensor\":\"\",\"xxh3\":\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"f\",\"tensor\":\"__metadata__\",\"xxh3\":"
		    "\"0000000000000000\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"f\",\"tensor\":\"t\",\"xxh3\":\"xyz\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"f\",\"tensor\":\"t\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":[{\"path\":[],"
		    "\"kind\":\"array\",\"dtype\":\"F32\",\"shape\":[2],\"nbytes\":8,"
		    "\"file\":\"f.ckptd-tmp\",\"tensor\":\"t\",\"xxh3\":"
		    "\"0000000000000000\"}]}",
		/* scalars */
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"int\",\"value\":\"1\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"int\",\"value\":1.5}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"int\",\"value\":100000000000000000000}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"int\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"float\",\"value\":\"infinity\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"float\",\"value\":1e999}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"bool\",\"value\":1}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"str\",\"value\":3}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"str\",\"value\":\"a\\u0000b\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"none\",\"tag\":5}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"none\",\"tag\":\"xxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"none\",\"kind\":\"int\",\"value\":1}]}",
		"{\"format\":\"ckptd-tree\",\"version\":1,\"leaves\":"
		    "[{\"path\":[],\"kind\":\"none\"},5]}",
	};
	char name[32];
	Ckpt__Item *it;
	ckd_err e;
	size_t i;
	int dfd;

	/* the control: a minimal correct file reads */
	assert_int_equal(mkdirat(f->dfd, "ok", 0755), 0);
	dfd = openat(f->dfd, "ok", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	write_str(dfd, STORE_TREE_METADATA, "{\"format\":\"ckptd-tree\","
	    "\"version\":1,\"extra\":true,\"leaves\":[{\"path\":[{\"kind\":"
	    "\"list\",\"index\":2}],\"kind\":\"float\",\"value\":3,"
	    "\"future\":[1]}]}");
	assert_int_equal(store_read_tree_metadata(be, dfd, &it, NULL), 0);
	assert_true(it->leaves[0]->float_value == 3.0);
	store_item_free(it);
	close(dfd);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(name, sizeof(name), "case%zu", i);
		assert_int_equal(mkdirat(f->dfd, name, 0755), 0);
		dfd = openat(f->dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_true(dfd >= 0);
		write_str(dfd, STORE_TREE_METADATA, bad[i]);
		it = (Ckpt__Item *)1;
		memset(&e, 0, sizeof(e));
		if (store_read_tree_metadata(be, dfd, &it, &e) != CKPT_ECORRUPT)
			fail_msg("case %zu (%s) was accepted", i, bad[i]);
		assert_null(it);
		assert_int_equal(e.code, CKPT_ECORRUPT);
		assert_non_null(strstr(e.msg, "_METADATA"));
		close(dfd);
	}

	/* a newer format is not corrupt: a newer ckptd wrote it */
	assert_int_equal(mkdirat(f->dfd, "newer", 0755), 0);
	dfd = openat(f->dfd, "newer", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	write_str(dfd, STORE_TREE_METADATA, "{\"format\":\"ckptd-tree\","
	    "\"version\":2,\"leaves\":[]}");
	it = (Ckpt__Item *)1;
	memset(&e, 0, sizeof(e));
	assert_int_equal(store_read_tree_metadata(be, dfd, &it, &e),
	    CKPT_EVERSION);
	assert_null(it);
	assert_non_null(strstr(e.msg, "newer ckptd"));
	close(dfd);

	/* absent, oversized, symlinked */
	assert_int_equal(mkdirat(f->dfd, "x", 0755), 0);
	dfd = openat(f->dfd, "x", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(store_read_tree_metadata(be, dfd, &it, &e),
	    CKPT_ECORRUPT);
	{
		int fd = openat(dfd, STORE_TREE_METADATA, O_WRONLY | O_CREAT |
		    O_CLOEXEC, 0644);

		assert_int_equal(ftruncate(fd, (off_t)(256u << 20) + 1), 0);
		close(fd);
	}
	assert_int_equal(store_read_tree_metadata(be, dfd, &it, &e),
	    CKPT_ECORRUPT);
	assert_int_equal(unlinkat(dfd, STORE_TREE_METADATA, 0), 0);
	assert_int_equal(symlinkat("../ok/_METADATA", dfd, STORE_TREE_METADATA),
	    0);
	assert_true(store_read_tree_metadata(be, dfd, &it, &e) != 0);
	assert_null(it);
	close(dfd);
}

/* ---- step metadata ------------------------------------------------------------------ */

static void
test_step_meta(void **state)
{
	struct fx *f = *state;
	char *names[] = { "default", "extra" };
	Ckpt__Handler hs[] = { CKPT__HANDLER__HANDLER_STANDARD,
	    CKPT__HANDLER__HANDLER_JSON };
	struct store_step_meta m = { 0 }, back;
	ckd_err e = { 0 };
	json_t *j, *v;
	char *text;

	m.init_ns = INT64_C(1700000000123456789);
	m.commit_ns = INT64_C(1700000001987654321);
	m.metrics_json = "{\"loss\":0.5,\"acc\":[1,2]}";
	m.custom_json = "{\"note\":\"x\"}";
	m.nitems = 2;
	m.item_names = names;
	m.handlers = hs;
	m.bytes = 12345;
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e), 0);

	text = read_all(f->dfd, STORE_STEP_METADATA, NULL);
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	v = json_object_get(j, "item_handlers");
	assert_string_equal(json_string_value(json_object_get(v, "default")),
	    store_handler_typestr(CKPT__HANDLER__HANDLER_STANDARD));
	assert_string_equal(json_string_value(json_object_get(v, "extra")),
	    store_handler_typestr(CKPT__HANDLER__HANDLER_JSON));
	assert_true(json_real_value(json_object_get(json_object_get(j,
	    "metrics"), "loss")) == 0.5);
	assert_true(json_is_object(json_object_get(j, "performance_metrics")));
	assert_int_equal(json_object_size(json_object_get(j,
	    "performance_metrics")), 0);
	assert_true(json_integer_value(json_object_get(j,
	    "init_timestamp_nsecs")) == m.init_ns);
	assert_true(json_integer_value(json_object_get(j,
	    "commit_timestamp_nsecs")) == m.commit_ns);
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    j, "custom_metadata"), "note")), "x");
	v = json_object_get(j, "ckptd");
	assert_int_equal(json_integer_value(json_object_get(v, "version")), 1);
	assert_int_equal(json_integer_value(json_object_get(v, "bytes")), 12345);
	assert_string_equal(json_string_value(json_object_get(json_object_get(v,
	    "handlers"), "extra")), "JSON");
	json_decref(j);
	free(text);

	assert_int_equal(store_read_step_meta(be, f->dfd, &back, &e), 0);
	assert_true(back.init_ns == m.init_ns);
	assert_true(back.commit_ns == m.commit_ns);
	assert_int_equal(back.bytes, 12345);
	assert_int_equal(back.nitems, 2);
	assert_string_equal(back.item_names[0], "default");
	assert_string_equal(back.item_names[1], "extra");
	assert_int_equal(back.handlers[0], CKPT__HANDLER__HANDLER_STANDARD);
	assert_int_equal(back.handlers[1], CKPT__HANDLER__HANDLER_JSON);
	j = json_loads(back.metrics_json, 0, NULL);
	assert_true(json_real_value(json_object_get(j, "loss")) == 0.5);
	json_decref(j);
	assert_string_equal(back.custom_json, "{\"note\":\"x\"}");
	store_step_meta_free(&back);
	store_step_meta_free(&back);   /* idempotent after free */

	/* O_EXCL */
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e),
	    CKPT_EEXIST);
}

/* The metrics of a step are listed among item_handlers, as Orbax does. */
static void
test_step_meta_metrics_item(void **state)
{
	struct fx *f = *state;
	char *names[] = { "state" }, *clash[] = { "metrics" };
	Ckpt__Handler hs[] = { CKPT__HANDLER__HANDLER_STANDARD };
	struct store_step_meta m = { 0 }, back;
	ckd_err e = { 0 };
	json_t *j;
	char *text;

	m.metrics_json = "{\"loss\":0.5}";
	m.metrics_item = "metrics";
	m.nitems = 1;
	m.item_names = clash;
	m.handlers = hs;
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e),
	    CKPT_EINVAL);
	m.item_names = names;
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e), 0);
	text = read_all(f->dfd, STORE_STEP_METADATA, NULL);
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    j, "item_handlers"), "metrics")),
	    store_handler_typestr(CKPT__HANDLER__HANDLER_JSON));
	assert_null(json_object_get(json_object_get(json_object_get(j,
	    "ckptd"), "handlers"), "metrics"));
	json_decref(j);
	free(text);
	assert_int_equal(store_read_step_meta(be, f->dfd, &back, &e), 0);
	assert_int_equal(back.nitems, 2);
	store_step_meta_free(&back);
}

static void
test_step_meta_bad(void **state)
{
	struct fx *f = *state;
	char *names[] = { "default", "default" }, *badname[] = { "a/b" };
	Ckpt__Handler hs[] = { CKPT__HANDLER__HANDLER_STANDARD,
	    CKPT__HANDLER__HANDLER_UNSPECIFIED };
	static const char *const bad[] = {
		"",
		"[]",
		"{\"metrics\":[]}",
		"{\"custom_metadata\":\"x\"}",
		"{\"item_handlers\":5}",
		"{\"item_handlers\":{\"a\":5}}",
		"{\"item_handlers\":{\"..\":\"x\"}}",
		"{\"init_timestamp_nsecs\":\"1\"}",
		"{\"commit_timestamp_nsecs\":1.5}",
		"{\"ckptd\":[]}",
		"{\"ckptd\":{\"bytes\":\"1\"}}",
		"{\"ckptd\":{\"handlers\":[]}}",
		("{\"item_handlers\":{\"a\":\"JSON\"},\"ckptd\":{\"handlers\":"
		    "{\"a\":1}}}"),
		"{\"metrics\":{},\"metrics\":{}}",
	};
	struct store_step_meta m = { 0 }, back;
	ckd_err e = { 0 };
	char name[32];
	size_t i;
	int dfd;

	/* writer: bad JSON texts, duplicate or bad names, no handler */
	m.nitems = 1;
	m.item_names = names;
	m.handlers = hs;
	m.metrics_json = "[1]";
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e),
	    CKPT_EINVAL);
	m.metrics_json = "{bad";
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e),
	    CKPT_EINVAL);
	m.metrics_json = NULL;
	m.custom_json = "3";
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e),
	    CKPT_EINVAL);
	m.custom_json = NULL;
	m.nitems = 2;
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e),
	    CKPT_EINVAL);
	hs[1] = CKPT__HANDLER__HANDLER_JSON;
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e),
	    CKPT_EINVAL);   /* duplicate */
	m.nitems = 1;
	m.item_names = badname;
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e),
	    CKPT_EINVAL);
	assert_false(exists_at(f->dfd, STORE_STEP_METADATA));

	/* defaults: no metrics, no items */
	m.nitems = 0;
	assert_int_equal(store_write_step_meta(be, f->dfd, &m, 0644, &e), 0);
	assert_int_equal(store_read_step_meta(be, f->dfd, &back, &e), 0);
	assert_string_equal(back.metrics_json, "{}");
	assert_int_equal(back.nitems, 0);
	store_step_meta_free(&back);

	/* reader: absent */
	assert_int_equal(mkdirat(f->dfd, "none", 0755), 0);
	dfd = openat(f->dfd, "none", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(store_read_step_meta(be, dfd, &back, &e),
	    CKPT_ENOTFOUND);
	/* Orbax's own minimal forms */
	write_str(dfd, STORE_STEP_METADATA, "{\"item_handlers\":\"orbax."
	    "checkpoint._src.handlers.standard_checkpoint_handler."
	    "StandardCheckpointHandler\",\"metrics\":null,"
	    "\"commit_timestamp_nsecs\":null}");
	assert_int_equal(store_read_step_meta(be, dfd, &back, &e), 0);
	assert_int_equal(back.nitems, 1);
	assert_string_equal(back.item_names[0], "default");
	assert_int_equal(back.handlers[0], CKPT__HANDLER__HANDLER_STANDARD);
	assert_null(back.metrics_json);
	store_step_meta_free(&back);
	close(dfd);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(name, sizeof(name), "case%zu", i);
		assert_int_equal(mkdirat(f->dfd, name, 0755), 0);
		dfd = openat(f->dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		write_str(dfd, STORE_STEP_METADATA, bad[i]);
		if (store_read_step_meta(be, dfd, &back, &e) != CKPT_ECORRUPT)
			fail_msg("case %zu (%s) was accepted", i, bad[i]);
		assert_null(back.item_names);
		assert_null(back.metrics_json);
		close(dfd);
	}
}

/* ---- commit protocol --------------------------------------------------------------- */

static void
test_begin_commit_abort(void **state)
{
	struct fx *f = *state;
	ckd_err e = { 0 };
	int tfd, ifd, tfd2, sfd;
	struct stat st;
	mode_t old = umask(077);

	assert_int_equal(store_begin(be, f->dfd, "5", 0750, &tfd, &e), 0);
	assert_true(exists_at(f->dfd, "5" CKPT_TMP_SUFFIX));
	assert_false(exists_at(f->dfd, "5"));
	assert_int_equal(fstat(tfd, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0750);   /* exact, despite umask */
	assert_true(fcntl(tfd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(store_mkdir_item(be, tfd, "default", 0750, &ifd, &e),
	    0);
	assert_int_equal(store_mkdir_item(be, tfd, "default", 0750, &sfd, &e),
	    CKPT_EEXIST);
	assert_int_equal(store_mkdir_item(be, tfd, "..", 0750, &sfd, &e),
	    CKPT_EINVAL);
	assert_int_equal(store_write_file(be, ifd, STORE_JSON_FILE, "{}", 2,
	    0640, &e), 0);
	assert_int_equal(store_fsync_dir(be, ifd, &e), 0);
	close(ifd);
	assert_int_equal(store_commit_synced(be, f->dfd, "5", &e), 0);
	close(tfd);
	assert_true(exists_at(f->dfd, "5"));
	assert_false(exists_at(f->dfd, "5" CKPT_TMP_SUFFIX));
	sfd = openat(f->dfd, "5/default", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(sfd >= 0);
	assert_int_equal(fstatat(sfd, STORE_JSON_FILE, &st, 0), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	close(sfd);

	/* an existing step */
	memset(&e, 0, sizeof(e));
	assert_int_equal(store_begin(be, f->dfd, "5", 0750, &tfd, &e),
	    CKPT_EEXIST);
	assert_int_equal(e.code, CKPT_EEXIST);
	assert_false(exists_at(f->dfd, "5" CKPT_TMP_SUFFIX));

	/* abort */
	assert_int_equal(store_begin(be, f->dfd, "6", 0755, &tfd, &e), 0);
	assert_int_equal(store_mkdir_item(be, tfd, "default", 0755, &ifd, &e),
	    0);
	assert_int_equal(store_write_file(be, ifd, "x", "1", 1, 0644, &e), 0);
	close(ifd);
	close(tfd);
	assert_int_equal(store_abort(be, f->dfd, "6", &e), 0);
	assert_false(exists_at(f->dfd, "6" CKPT_TMP_SUFFIX));
	assert_false(exists_at(f->dfd, "6"));
	assert_int_equal(store_abort(be, f->dfd, "6", &e),
	    0);   /* absent: fine */

	/* a leftover tmp dir from a crash never blocks the step */
	assert_int_equal(mkdirat(f->dfd, "7" CKPT_TMP_SUFFIX, 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "7" CKPT_TMP_SUFFIX "/default", 0755),
	    0);
	sfd = openat(f->dfd, "7" CKPT_TMP_SUFFIX "/default", O_RDONLY |
	    O_DIRECTORY | O_CLOEXEC);
	write_str(sfd, "junk", "junk");
	close(sfd);
	assert_int_equal(store_begin(be, f->dfd, "7", 0755, &tfd, &e), 0);
	assert_false(exists_at(tfd, "default"));
	/* someone created the final name meanwhile: commit refuses */
	assert_int_equal(mkdirat(f->dfd, "7", 0755), 0);
	assert_int_equal(store_commit_synced(be, f->dfd, "7", &e), CKPT_EEXIST);
	assert_true(exists_at(f->dfd, "7" CKPT_TMP_SUFFIX));
	close(tfd);

	/* two begins of the same step: the tmp dir of a live save (locked)
	 * is never taken over; once it is closed (the save is gone), the
	 * second begin replaces the leftover */
	assert_int_equal(store_begin(be, f->dfd, "8", 0755, &tfd, &e), 0);
	assert_int_equal(store_begin(be, f->dfd, "8", 0755, &tfd2, &e),
	    CKPT_EBUSY);
	assert_int_equal(store_collect_leftovers(be, f->dfd, NULL,
	    STORE_LEFTOVER_ANY_NAMING | STORE_LEFTOVER_ORBAX, NULL, NULL, &e), 0);
	assert_true(exists_at(f->dfd, "8" CKPT_TMP_SUFFIX));
	close(tfd);
	assert_int_equal(store_begin(be, f->dfd, "8", 0755, &tfd2, &e), 0);
	close(tfd2);

	/* a collector holding a crash's leftover while it removes it (the
	 * start-up sweep racing a client that sends the interrupted step
	 * again): the begin waits, then succeeds, and the busy attempts
	 * leave no error behind (a task's error is what fails a save) */
	{
		struct timespec ms50 = { 0, 50 * 1000000L };
		int pfd[2], lfd, status;
		pid_t pid;
		char c;

		assert_int_equal(mkdirat(f->dfd, "10" CKPT_TMP_SUFFIX, 0755),
		    0);
		assert_int_equal(pipe(pfd), 0);
		if ((pid = fork()) == 0) {
			lfd = openat(f->dfd, "10" CKPT_TMP_SUFFIX, O_RDONLY |
			    O_DIRECTORY);
			if (lfd < 0 || flock(lfd, LOCK_EX) != 0 ||
			    write(pfd[1], "x", 1) != 1)
				_exit(1);
			nanosleep(&ms50, NULL);
			_exit(unlinkat(f->dfd, "10" CKPT_TMP_SUFFIX,
			    AT_REMOVEDIR) == 0 ? 0 : 1);
		}
		assert_true(pid > 0);
		close(pfd[1]);
		assert_int_equal(read(pfd[0], &c, 1), 1);   /* it holds it */
		close(pfd[0]);
		memset(&e, 0, sizeof(e));
		assert_int_equal(store_begin(be, f->dfd, "10", 0755, &tfd, &e),
		    0);
		assert_int_equal(e.code, 0);
		assert_string_equal(e.msg, "");
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		assert_true(exists_at(f->dfd, "10" CKPT_TMP_SUFFIX));
		close(tfd);
	}

	/* bad names */
	assert_int_equal(store_begin(be, f->dfd, "a/b", 0755, &tfd, &e),
	    CKPT_EINVAL);
	assert_int_equal(store_begin(be, f->dfd, "9" CKPT_TMP_SUFFIX, 0755,
	    &tfd, &e), CKPT_EINVAL);
	assert_int_equal(store_commit_synced(be, f->dfd, "..", &e),
	    CKPT_EINVAL);
	umask(old);
}

static void
test_delete_and_cleanup(void **state)
{
	struct fx *f = *state;
	ckd_err e = { 0 };
	int tfd, ifd, i;
	char name[8];
	struct stat st;

	for (i = 1; i <= 4; i++) {
		snprintf(name, sizeof(name), "%d", i);
		assert_int_equal(store_begin(be, f->dfd, name, 0755, &tfd, &e),
		    0);
		assert_int_equal(store_mkdir_item(be, tfd, "default", 0755,
		    &ifd, &e), 0);
		assert_int_equal(store_write_file(be, ifd, "metadata", "{}", 2,
		    0644, &e), 0);
		close(ifd);
		assert_int_equal(store_commit_synced(be, f->dfd, name, &e), 0);
		close(tfd);
	}
	assert_int_equal(store_delete_step(be, f->dfd, "1", NULL, &e), 0);
	assert_false(exists_at(f->dfd, "1"));
	assert_false(exists_at(f->dfd, ".1.ckptd-del"));

	assert_int_equal(store_delete_step(be, f->dfd, "2", "todelete", &e), 0);
	assert_false(exists_at(f->dfd, "2"));
	assert_int_equal(fstatat(f->dfd, "todelete/2/default/metadata", &st,
	    0), 0);
	/* into an existing todelete dir */
	assert_int_equal(store_delete_step(be, f->dfd, "3", "todelete", &e), 0);
	assert_true(exists_at(f->dfd, "todelete/3"));

	memset(&e, 0, sizeof(e));
	assert_int_equal(store_delete_step(be, f->dfd, "1", NULL, &e),
	    CKPT_ENOTFOUND);
	assert_int_equal(e.code, CKPT_ENOTFOUND);
	assert_int_equal(store_delete_step(be, f->dfd, "99", "todelete", &e),
	    CKPT_ENOTFOUND);
	assert_int_equal(store_delete_step(be, f->dfd, "../x", NULL, &e),
	    CKPT_EINVAL);
	assert_int_equal(store_delete_step(be, f->dfd, "4", "a/b", &e),
	    CKPT_EINVAL);
	assert_true(exists_at(f->dfd, "4"));
	/* a todelete subdir that is a symlink is not followed */
	assert_int_equal(mkdirat(f->dfd, "elsewhere", 0755), 0);
	assert_int_equal(symlinkat("elsewhere", f->dfd, "td"), 0);
	assert_true(store_delete_step(be, f->dfd, "4", "td", &e) != 0);
	assert_true(exists_at(f->dfd, "4"));
	assert_false(exists_at(f->dfd, "elsewhere/4"));
	write_str(f->dfd, "notadir", "x");
	assert_int_equal(store_delete_step(be, f->dfd, "notadir", NULL, &e),
	    CKPT_ENOTFOUND);

	/* leftovers: tmp and hidden delete dirs go, everything else stays */
	assert_int_equal(mkdirat(f->dfd, "10" CKPT_TMP_SUFFIX, 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "10" CKPT_TMP_SUFFIX "/sub", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, ".11.ckptd-del", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, ".ckptd-del", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "keep", 0755), 0);
	/* and what an interrupted Orbax save leaves, as Orbax's cleanup */
	assert_int_equal(mkdirat(f->dfd, "12.orbax-checkpoint-tmp-1701", 0755),
	    0);
	assert_int_equal(mkdirat(f->dfd, "12.orbax-checkpoint-tmp-1701/d",
	    0755), 0);
	assert_int_equal(mkdirat(f->dfd, "13.orbax-checkpoint-tmp", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, ".orbax-checkpoint-tmp", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "14.orbax-checkpoint-tmp-x", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "15.orbax-checkpoint-tmp-", 0755), 0);
	assert_int_equal(store_collect_leftovers(be, f->dfd, NULL,
	    STORE_LEFTOVER_ANY_NAMING | STORE_LEFTOVER_ORBAX, NULL, NULL, &e), 0);
	assert_false(exists_at(f->dfd, "12.orbax-checkpoint-tmp-1701"));
	assert_false(exists_at(f->dfd, "13.orbax-checkpoint-tmp"));
	assert_true(exists_at(f->dfd, ".orbax-checkpoint-tmp"));
	assert_true(exists_at(f->dfd, "14.orbax-checkpoint-tmp-x"));
	assert_true(exists_at(f->dfd, "15.orbax-checkpoint-tmp-"));
	assert_false(exists_at(f->dfd, "10" CKPT_TMP_SUFFIX));
	assert_false(exists_at(f->dfd, ".11.ckptd-del"));
	assert_true(exists_at(f->dfd, ".ckptd-del"));
	assert_true(exists_at(f->dfd, "keep"));
	assert_true(exists_at(f->dfd, "4"));
	assert_true(exists_at(f->dfd, "todelete/2"));
	assert_true(exists_at(f->dfd, "notadir"));
	assert_int_equal(store_collect_leftovers(be, f->dfd, NULL,
	    STORE_LEFTOVER_ANY_NAMING | STORE_LEFTOVER_ORBAX, NULL, NULL, &e), 0);
}

/* Leftovers: only unlocked tmp dirs go; those of the naming asked for are
 * reported; other namings and Orbax's tmp dirs only when asked. */
static void
test_collect_leftovers(void **state)
{
	struct fx *f = *state;
	struct store_naming nm = { "ck", 0 }, none = { "", 0 };
	struct store_leftover *lo = NULL;
	size_t n = 0;
	ckd_err e;
	int live, fd;

	assert_int_equal(store_begin(be, f->dfd, "ck_3", 0755, &live, &e), 0);
	assert_int_equal(mkdirat(f->dfd, "ck_4" CKPT_TMP_SUFFIX, 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "ck_4" CKPT_TMP_SUFFIX "/x", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "5" CKPT_TMP_SUFFIX, 0755), 0);
	assert_int_equal(mkdirat(f->dfd, ".6.ckptd-del", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "7.orbax-checkpoint-tmp-123", 0755),
	    0);
	assert_int_equal(mkdirat(f->dfd, "7.orbax-checkpoint-tmp-", 0755), 0);
	write_str(f->dfd, "8" CKPT_TMP_SUFFIX, "a file, not ours");

	assert_int_equal(store_collect_leftovers(be, f->dfd, &nm, 0, &lo, &n,
	    &e), 0);
	assert_int_equal(n, 1);
	assert_int_equal(lo[0].step, 4);
	assert_string_equal(lo[0].name, "ck_4");
	assert_true(lo[0].mtime_ns > 0);
	free(lo);
	assert_true(exists_at(f->dfd, "ck_3" CKPT_TMP_SUFFIX));  /* live */
	assert_false(exists_at(f->dfd, "ck_4" CKPT_TMP_SUFFIX));
	assert_true(exists_at(f->dfd, "5" CKPT_TMP_SUFFIX));     /* naming */
	assert_false(exists_at(f->dfd, ".6.ckptd-del"));
	assert_true(exists_at(f->dfd, "7.orbax-checkpoint-tmp-123"));

	/* every naming and Orbax's: still never the live one */
	assert_int_equal(store_collect_leftovers(be, f->dfd, &none,
	    STORE_LEFTOVER_ANY_NAMING | STORE_LEFTOVER_ORBAX, &lo, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_int_equal(lo[0].step, 5);
	free(lo);
	assert_true(exists_at(f->dfd, "ck_3" CKPT_TMP_SUFFIX));
	assert_false(exists_at(f->dfd, "5" CKPT_TMP_SUFFIX));
	assert_false(exists_at(f->dfd, "7.orbax-checkpoint-tmp-123"));
	assert_true(exists_at(f->dfd, "7.orbax-checkpoint-tmp-"));
	assert_true(exists_at(f->dfd, "8" CKPT_TMP_SUFFIX));

	/* the save ends without committing (its process dies): a leftover */
	close(live);
	assert_int_equal(store_collect_leftovers(be, f->dfd, &nm, 0, NULL, NULL,
	    &e), 0);
	assert_false(exists_at(f->dfd, "ck_3" CKPT_TMP_SUFFIX));

	/* a delete in progress holds its step: its hidden dir stays */
	assert_int_equal(mkdirat(f->dfd, ".9.ckptd-del", 0755), 0);
	fd = openat(f->dfd, ".9.ckptd-del", O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	assert_int_equal(store_collect_leftovers(be, f->dfd, NULL,
	    STORE_LEFTOVER_ANY_NAMING | STORE_LEFTOVER_ORBAX, NULL, NULL, &e), 0);
	assert_true(exists_at(f->dfd, ".9.ckptd-del"));
	close(fd);
	assert_int_equal(store_collect_leftovers(be, f->dfd, NULL,
	    STORE_LEFTOVER_ANY_NAMING | STORE_LEFTOVER_ORBAX, NULL, NULL, &e), 0);
	assert_false(exists_at(f->dfd, ".9.ckptd-del"));
}

static void
test_scan(void **state)
{
	struct fx *f = *state;
	struct store_naming nm;
	struct store_entry *v;
	ckd_err e = { 0 };
	size_t n;

	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_scan(be, f->dfd, &nm, &v, &n, &e), 0);
	assert_int_equal(n, 0);
	free(v);

	assert_int_equal(mkdirat(f->dfd, "10", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "2", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "2" CKPT_TMP_SUFFIX, 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "1", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "12" CKPT_TMP_SUFFIX, 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "ckpt_5", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "ckpt_6" CKPT_TMP_SUFFIX, 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "007", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, ".3.ckptd-del", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "junk", 0755), 0);
	assert_int_equal(mkdirat(f->dfd, "metadata", 0755), 0);
	write_str(f->dfd, "3", "a file is not a step");
	assert_int_equal(symlinkat("10", f->dfd, "4"), 0);
	assert_int_equal(symlinkat("/", f->dfd, "5"), 0);

	assert_int_equal(store_scan(be, f->dfd, &nm, &v, &n, &e), 0);
	assert_int_equal(n, 5);
	assert_int_equal(v[0].step, 1);
	assert_string_equal(v[0].name, "1");
	assert_int_equal(v[0].tmp, 0);
	assert_int_equal(v[1].step, 2);
	assert_int_equal(v[1].tmp, 0);
	assert_int_equal(v[2].step, 2);
	assert_int_equal(v[2].tmp, 1);
	assert_string_equal(v[2].name, "2");
	assert_int_equal(v[3].step, 10);
	assert_int_equal(v[4].step, 12);
	assert_int_equal(v[4].tmp, 1);
	free(v);

	strcpy(nm.prefix, "ckpt");
	assert_int_equal(store_scan(be, f->dfd, &nm, &v, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_int_equal(v[0].step, 5);
	assert_string_equal(v[0].name, "ckpt_5");
	assert_int_equal(v[1].step, 6);
	assert_int_equal(v[1].tmp, 1);
	free(v);

	nm.prefix[0] = '\0';
	nm.fixed_len = 3;
	assert_int_equal(store_scan(be, f->dfd, &nm, &v, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].step, 7);
	assert_string_equal(v[0].name, "007");
	free(v);
}

/* ---- batched durability (store_sync, *_nosync, store_commit_synced) ------------ */

static void
test_batched_save(void **state)
{
	struct fx *f = *state;
	static const uint64_t s4[] = { 4 };
	static const float data[4] = { 1, 2, 3, 4 };
	struct store_tensor t = { "w", CKPT__DTYPE__DTYPE_F32, 1, s4, data,
	    sizeof(data), 0, 0 };
	struct store_step_meta m, back;
	struct store_sync b;
	Ckpt__Handler hs[2] = { CKPT__HANDLER__HANDLER_STANDARD,
	    CKPT__HANDLER__HANDLER_JSON };
	char *names[2] = { "state", "meta" };
	ckd_err e = { 0 };
	int tfd, ifd, jfd, kept, fds[4], sfd;
	Ckpt__Item *it, *rd;
	Ckpt__Leaf *l;
	size_t nfds = 0, len;
	char *buf;

	store_sync_init(&b, be);
	assert_int_equal(store_begin(be, f->dfd, "9", 0755, &tfd, &e), 0);
	assert_int_equal(store_mkdir_item(be, tfd, "state", 0755, &ifd, &e), 0);
	assert_int_equal(store_mkdir_item(be, tfd, "meta", 0755, &jfd, &e), 0);

	/* no batch: refused, nothing written */
	assert_int_equal(store_write_file_nosync(be, jfd, STORE_JSON_FILE, "{}",
	    2, 0644, NULL, &e), CKPT_EINVAL);
	assert_false(exists_at(jfd, STORE_JSON_FILE));

	assert_int_equal(store_write_file_nosync(be, jfd, STORE_JSON_FILE,
	    "{\"a\": 1}", 8, 0640, &b, &e), 0);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.v[0].own, 1);
	kept = b.v[0].fd;
	assert_true(fcntl(kept, F_GETFD) & FD_CLOEXEC);    /* still open */
	/* O_EXCL: a second write fails, leaves the batch and file as is */
	assert_int_equal(store_write_file_nosync(be, jfd, STORE_JSON_FILE, "{}",
	    2, 0644, &b, &e), CKPT_EEXIST);
	assert_int_equal(b.n, 1);

	assert_int_equal(store_write_safetensors_nosync(be, ifd,
	    "data-00000.safetensors", 0644, &t, 1, &b, &e), 0);
	assert_int_equal(b.n, 2);
	assert_int_equal(t.offset, STORE_PAGE);
	assert_true(t.xxh3 == XXH3_64bits(data, sizeof(data)));

	it = item_new();
	l = item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY);
	leaf_key(l, "w");
	leaf_array(l, CKPT__DTYPE__DTYPE_F32, 1, s4, "data-00000.safetensors",
	    "w", t.xxh3);
	assert_int_equal(store_write_tree_metadata_nosync(be, ifd, it, 0644, &b,
	    &e), 0);
	memset(&m, 0, sizeof(m));
	m.init_ns = 1;
	m.commit_ns = 2;
	m.nitems = 2;
	m.item_names = names;
	m.handlers = hs;
	m.bytes = sizeof(data);
	assert_int_equal(store_write_step_meta_nosync(be, tfd, &m, 0644, &b,
	    &e), 0);
	assert_int_equal(b.n, 4);
	assert_int_equal(store_sync_add(&b, ifd, 0, &e), 0);
	assert_int_equal(store_sync_add(&b, jfd, 0, &e), 0);
	assert_int_equal(store_sync_add(&b, tfd, 0, &e), 0);
	assert_int_equal(store_sync_run(&b, &e), 0);
	assert_int_equal(b.n, 0);
	/* owned fds closed, borrowed ones not */
	assert_int_equal(fcntl(kept, F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	assert_true(fcntl(ifd, F_GETFD) >= 0);
	assert_true(fcntl(tfd, F_GETFD) >= 0);
	/* empty batch: a no-op */
	assert_int_equal(store_sync_run(&b, &e), 0);
	close(ifd);
	close(jfd);
	assert_int_equal(store_commit_synced(be, f->dfd, "9", &e), 0);
	close(tfd);
	assert_false(exists_at(f->dfd, "9" CKPT_TMP_SUFFIX));

	/* the committed step reads back like an unbatched one */
	sfd = openat(f->dfd, "9", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(sfd >= 0);
	memset(&back, 0, sizeof(back));
	assert_int_equal(store_read_step_meta(be, sfd, &back, &e), 0);
	assert_int_equal(back.nitems, 2);
	assert_int_equal(back.bytes, sizeof(data));
	store_step_meta_free(&back);
	close(sfd);
	ifd = openat(f->dfd, "9/state", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(ifd >= 0);
	assert_int_equal(store_read_tree_metadata(be, ifd, &rd, &e), 0);
	assert_int_equal(store_open_item_files(be, ifd, rd, fds, &nfds, 4, &e),
	    0);
	assert_int_equal(nfds, 1);
	assert_int_equal(store_verify_item(be, rd, fds, NULL, NULL, &e), 0);
	close(fds[0]);
	store_item_free(rd);
	close(ifd);
	jfd = openat(f->dfd, "9/meta", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(jfd >= 0);
	assert_int_equal(store_read_file(be, jfd, STORE_JSON_FILE, 100, &buf,
	    &len, &e), 0);
	assert_string_equal(buf, "{\"a\": 1}");
	free(buf);
	close(jfd);

	/* committing again: the step exists */
	assert_int_equal(store_begin(be, f->dfd, "10", 0755, &tfd, &e), 0);
	assert_int_equal(mkdirat(f->dfd, "9" CKPT_TMP_SUFFIX, 0755), 0);
	assert_int_equal(store_commit_synced(be, f->dfd, "9", &e), CKPT_EEXIST);
	assert_true(exists_at(f->dfd, "9" CKPT_TMP_SUFFIX));

	/* a failed save: store_sync_free closes the owned fds unsynced */
	assert_int_equal(store_mkdir_item(be, tfd, "x", 0755, &ifd, &e), 0);
	assert_int_equal(store_write_file_nosync(be, ifd, "f", "1", 1, 0644, &b,
	    &e), 0);
	kept = b.v[0].fd;
	assert_int_equal(store_sync_add(&b, ifd, 0, &e), 0);
	store_sync_free(&b);
	assert_int_equal(b.n, 0);
	assert_null(b.v);
	assert_int_equal(fcntl(kept, F_GETFD), -1);
	assert_true(fcntl(ifd, F_GETFD) >= 0);
	close(ifd);
	close(tfd);
	assert_int_equal(store_abort(be, f->dfd, "10", &e), 0);
	assert_false(exists_at(f->dfd, "10" CKPT_TMP_SUFFIX));
	store_item_free(it);
}

/* ---- symlinks planted under a root are never followed --------------------------- */

static void
test_symlinks_not_followed(void **state)
{
	struct fx *f = *state;
	static const uint64_t s2[] = { 2 };
	struct store_tensor t = { "t", CKPT__DTYPE__DTYPE_F32, 1, s2, "abcdefgh",
	    8, 0, 0 };
	ckd_err e = { 0 };
	int tfd, ifd, outfd, r;
	Ckpt__Item *it;
	struct stat st;

	/* outside the root: a directory with a valid item */
	assert_int_equal(mkdirat(f->dfd, "outside", 0755), 0);
	outfd = openat(f->dfd, "outside", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(store_write_safetensors(be, outfd, "d.safetensors",
	    0644, &t, 1, &e), 0);
	it = item_new();
	leaf_array(item_add(it, CKPT__LEAF_KIND__LEAF_ARRAY),
	    CKPT__DTYPE__DTYPE_F32, 1, s2, "d.safetensors", "t", t.xxh3);
	assert_int_equal(store_write_tree_metadata(be, outfd, it, 0644, &e), 0);
	write_str(outfd, "precious", "keep me");
	assert_int_equal(mkdirat(f->dfd, "root", 0755), 0);
	int rootfd = openat(f->dfd, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	/* a step whose item dir is a symlink to the outside */
	assert_int_equal(store_begin(be, rootfd, "1", 0755, &tfd, &e), 0);
	assert_int_equal(symlinkat("../../outside", tfd, "default"), 0);
	/* mkdir_item does not reuse it */
	assert_int_equal(store_mkdir_item(be, tfd, "default", 0755, &ifd, &e),
	    CKPT_EEXIST);
	assert_int_equal(store_commit_synced(be, rootfd, "1", &e), 0);
	close(tfd);
	/* an item fd opened the way the daemon must (O_NOFOLLOW) fails */
	assert_true(openat(rootfd, "1/default", O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC) < 0);
	/* deleting the step removes the link, not the target */
	assert_int_equal(store_delete_step(be, rootfd, "1", NULL, &e), 0);
	assert_int_equal(fstatat(outfd, "precious", &st, 0), 0);
	assert_int_equal(fstatat(outfd, STORE_TREE_METADATA, &st, 0), 0);

	/* a step dir that is a symlink is not listed and not deleted through */
	assert_int_equal(symlinkat("../outside", rootfd, "2"), 0);
	{
		struct store_naming nm;
		struct store_entry *v;
		size_t n;

		memset(&nm, 0, sizeof(nm));
		assert_int_equal(store_scan(be, rootfd, &nm, &v, &n, &e), 0);
		assert_int_equal(n, 0);
		free(v);
	}
	assert_int_equal(store_delete_step(be, rootfd, "2", NULL, &e),
	    CKPT_ENOTFOUND);
	assert_int_equal(fstatat(outfd, "precious", &st, 0), 0);
	/* a leftover tmp that is a symlink: begin removes the link only */
	assert_int_equal(symlinkat("../outside", rootfd, "3" CKPT_TMP_SUFFIX),
	    0);
	assert_int_equal(store_begin(be, rootfd, "3", 0755, &tfd, &e), 0);
	assert_int_equal(fstatat(tfd, ".", &st, 0), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(fstatat(outfd, "precious", &st, 0), 0);

	/* files inside a real item dir that are symlinks to the outside */
	assert_int_equal(store_mkdir_item(be, tfd, "default", 0755, &ifd, &e),
	    0);
	assert_int_equal(symlinkat("../../../outside/_METADATA", ifd,
	    STORE_TREE_METADATA), 0);
	assert_int_equal(symlinkat("../../../outside/d.safetensors", ifd,
	    "d.safetensors"), 0);
	{
		Ckpt__Item *back = (Ckpt__Item *)1;

		r = store_read_tree_metadata(be, ifd, &back, &e);
		assert_true(r != 0);
		assert_null(back);
	}
	{
		int fds[2];
		size_t nfds = 0;

		r = store_open_item_files(be, ifd, it, fds, &nfds, 2, &e);
		assert_true(r != 0);
		assert_int_equal(nfds, 0);
	}
	/* writers refuse to write through a planted link */
	assert_int_equal(store_write_file(be, ifd, STORE_TREE_METADATA, "x", 1,
	    0644, &e), CKPT_EEXIST);
	assert_int_equal(store_write_tree_metadata(be, ifd, it, 0644, &e),
	    CKPT_EEXIST);
	close(ifd);
	/* abort removes the links, not the targets */
	assert_int_equal(store_abort(be, rootfd, "3", &e), 0);
	close(tfd);
	assert_int_equal(fstatat(outfd, STORE_TREE_METADATA, &st, 0), 0);
	assert_int_equal(fstatat(outfd, "d.safetensors", &st, 0), 0);
	assert_int_equal(fstatat(outfd, "precious", &st, 0), 0);

	store_item_free(it);
	close(rootfd);
	close(outfd);
}

static void
test_remove_tree(void **state)
{
	struct fx *f = *state;
	ckd_err e = { 0 };
	struct stat st;
	char path[64];
	int i, dfd;

	assert_int_equal(mkdirat(f->dfd, "keep", 0755), 0);
	write_str(f->dfd, "keep/file", "x");
	strcpy(path, "t");
	assert_int_equal(mkdirat(f->dfd, path, 0755), 0);
	for (i = 0; i < 10; i++) {
		strcat(path, "/d");
		assert_int_equal(mkdirat(f->dfd, path, 0700), 0);
		dfd = openat(f->dfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		write_str(dfd, "a", "1");
		write_str(dfd, "b", "2");
		assert_int_equal(symlinkat("../../../../../../../../../../../keep",
		    dfd, "l"), 0);
		close(dfd);
	}
	assert_int_equal(store_remove_tree(be, f->dfd, "t", &e), 0);
	assert_false(exists_at(f->dfd, "t"));
	assert_int_equal(fstatat(f->dfd, "keep/file", &st, 0), 0);
	assert_int_equal(store_remove_tree(be, f->dfd, "t", &e), 0);
	assert_int_equal(store_remove_tree(be, f->dfd, "..", &e), CKPT_EINVAL);
	assert_int_equal(store_remove_tree(be, f->dfd, "keep/file", &e),
	    CKPT_EINVAL);
	/* a plain file */
	assert_int_equal(store_remove_tree(be, f->dfd, "keep", &e), 0);
	assert_false(exists_at(f->dfd, "keep"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dtypes),
		cmocka_unit_test(test_handlers),
		cmocka_unit_test(test_valid_component),
		cmocka_unit_test(test_step_names),
		cmocka_unit_test_setup_teardown(test_open_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_safetensors_layout, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_safetensors_empty_file,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_safetensors_bad_input,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_item_files_and_verify,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_safetensors_malformed,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_tree_metadata_roundtrip,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_tree_metadata_empty, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tree_metadata_bad_write,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_tree_metadata_malformed,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_step_meta, setup, teardown),
		cmocka_unit_test_setup_teardown(test_step_meta_metrics_item,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_step_meta_bad, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_batched_save, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_begin_commit_abort, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_delete_and_cleanup, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_collect_leftovers, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tree_metadata_pieces, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_symlinks_not_followed, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_remove_tree, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
