/*
 * fuzz_store.c - libFuzzer target: the readers of on-disk data that
 * restore and verify run on files a user controls.
 *
 * Input: byte 0 picks the reader, the rest is the file's content.
 *   0: <item>/_METADATA          store_read_tree_metadata
 *   1: <step>/_CHECKPOINT_METADATA  store_read_step_meta
 *   2: a safetensors file, read through a one-leaf item whose dtype and
 *      shape come from bytes 1..3 (store_open_item_files, then
 *      store_verify_item over the data); the file content starts at 4.
 *   3: _METADATA, then, when it parses, each of its files is the rest of
 *      the input (the same bytes), opened and verified.
 * The files live in a private directory under $TMPDIR, rewritten per run.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "fuzz.h"

/* Every store call here is on a local filesystem. */
static const struct store_backend *const be = &backend_posix;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int dirfd_ = -1;

static void
fuzz_dir(void)
{
	char tmpl[4096];
	const char *t = getenv("TMPDIR");

	if (dirfd_ >= 0)
		return;
	snprintf(tmpl, sizeof tmpl, "%s/ckpt-fuzz-store.XXXXXX",
	    t != NULL && t[0] != '\0' ? t : "/tmp");
	if (mkdtemp(tmpl) == NULL ||
	    (dirfd_ = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "fuzz_store: %s: %s\n", tmpl, strerror(errno));
		abort();
	}
}

static void
put(const char *name, const uint8_t *p, size_t n)
{
	int fd = openat(dirfd_, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600);

	FUZZ_ASSERT(fd >= 0);
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		FUZZ_ASSERT(w > 0);
		p += w;
		n -= (size_t)w;
	}
	close(fd);
}

static void
problem(void *arg, const char *tensor, const char *msg)
{
	(void)arg;
	FUZZ_ASSERT(tensor != NULL && msg != NULL);
}

/* Open and verify the files of a tree item; every fd is closed again. */
static void
open_and_verify(Ckpt__Item *it)
{
	int fds[CKPT_MAX_FDS];
	size_t nfds = 0, i;
	ckd_err e;

	memset(&e, 0, sizeof e);
	if (store_open_item_files(be, dirfd_, it, fds, &nfds, CKPT_MAX_FDS,
	    &e) != 0) {
		FUZZ_ASSERT(nfds == 0 && e.msg[0] != '\0');
		return;
	}
	(void)store_verify_item(be, it, fds, problem, NULL, &e);
	for (i = 0; i < nfds; i++)
		close(fds[i]);
}

static void
fuzz_safetensors(const uint8_t *data, size_t size)
{
	Ckpt__Item it = CKPT__ITEM__INIT;
	Ckpt__Leaf leaf = CKPT__LEAF__INIT, *leafp = &leaf;
	Ckpt__PathElem pe = CKPT__PATH_ELEM__INIT, *pep = &pe;
	uint64_t shape[2];
	uint64_t n;

	if (size < 3)
		return;
	shape[0] = data[1];
	shape[1] = data[2];
	pe.has_kind = 1;
	pe.kind = CKPT__KEY_KIND__KEY_DICT;
	pe.key = (char *)"w";
	leaf.n_path = 1;
	leaf.path = &pep;
	leaf.has_kind = 1;
	leaf.kind = CKPT__LEAF_KIND__LEAF_ARRAY;
	leaf.has_dtype = 1;
	leaf.dtype = (Ckpt__Dtype)(1 + data[0] % 15);
	leaf.n_shape = data[0] & 0x80 ? 1 : 2;
	leaf.shape = shape;
	n = store_dtype_size(leaf.dtype) * shape[0] *
	    (leaf.n_shape == 2 ? shape[1] : 1);
	leaf.has_nbytes = 1;
	leaf.nbytes = n;
	leaf.file = (char *)"data-00000.safetensors";
	leaf.tensor = (char *)"w";
	it.name = (char *)"default";
	it.n_leaves = 1;
	it.leaves = &leafp;
	put("data-00000.safetensors", data + 3, size - 3);
	open_and_verify(&it);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Ckpt__Item *it = NULL;
	struct store_step_meta m;
	ckd_err e;
	size_t i;

	if (size < 1)
		return 0;
	fuzz_dir();
	memset(&e, 0, sizeof e);
	switch (data[0] % 4) {
	case 0:
	case 3:
		put(STORE_TREE_METADATA, data + 1, size - 1);
		if (store_read_tree_metadata(be, dirfd_, &it, &e) != 0) {
			FUZZ_ASSERT(e.code < 0 && e.msg[0] != '\0');
			break;
		}
		if (data[0] % 4 == 3) {
			for (i = 0; i < it->n_leaves; i++)
				if (it->leaves[i]->file != NULL &&
				    store_valid_component(it->leaves[i]->file))
					put(it->leaves[i]->file, data + 1,
					    size - 1);
			open_and_verify(it);
		}
		store_item_free(it);
		break;
	case 1:
		put(STORE_STEP_METADATA, data + 1, size - 1);
		memset(&m, 0, sizeof m);
		if (store_read_step_meta(be, dirfd_, &m, &e) == 0)
			store_step_meta_free(&m);
		else
			FUZZ_ASSERT(e.code < 0 && e.msg[0] != '\0');
		break;
	case 2:
		fuzz_safetensors(data + 1, size - 1);
		break;
	}
	return 0;
}
