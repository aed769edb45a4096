/*
 * treemeta.c - _METADATA of a tree item (contract: treemeta.h).
 *
 * ---- _METADATA (one tree item) ------------------------------------------------
 *   {"format": "ckptd-tree", "version": 1, "leaves": [LEAF, ...]}
 *   LEAF is an object with
 *     "path": [ELEM, ...]    from the root of the tree; [] for a bare leaf
 *        ELEM: {"kind": "dict", "key": "<string>"}
 *            | {"kind": "list", "index": N} | {"kind": "tuple", "index": N}
 *     "kind": "array" | "int" | "float" | "bool" | "str" | "none"
 *           | "empty_dict" | "empty_list" | "empty_tuple"
 *     "tag": "<string, <= 64 bytes>"            optional, any kind
 *   and, by kind:
 *     array: "dtype": "F32" (safetensors name), "shape": [2, 3],
 *            "nbytes": 24 (= product(shape) * itemsize),
 *            "file": "data-00000.safetensors", "tensor": "<name in file>",
 *            "xxh3": "<16 lowercase hex digits, XXH3-64 of the bytes>",
 *            and for an array of more than one chunk (chunksum.h):
 *            "chunk": 2097152 (bytes of a chunk),
 *            "xxh3_chunks": "<16 hex digits per chunk, in order: XXH3-64 of
 *            each chunk of the bytes, the last one shorter>"
 *     int:   "value": integer (full int64 range)
 *     float: "value": number (printed with 17 significant digits, so it
 *            reads back bit-exact) or one of the strings "inf", "-inf",
 *            "nan", "-nan" (JSON has no literal for them)
 *     bool:  "value": true | false
 *     str:   "value": "<string>"
 *   Unknown members are ignored (forward compatibility); members listed
 *   above must have the stated types. Limits checked on read and on write:
 *   ndim <= CKPT_WIRE_MAX_NDIM, path depth <= STORE_MAX_DEPTH, file is a valid
 *   component, tensor name 1..1024 bytes and not reserved, file <= 256 MiB.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "chunksum.h"
#include "dtype.h"
#include "layout.h"
#include "smallfile.h"
#include "treemeta.h"

#define STORE_MAX_TREE_META (256u << 20)
#define STORE_MAX_DEPTH 1024
#define STORE_MAX_TAG CKPT_MAX_TAG   /* ckpt_limits.h */
/* Leaves of one item once its global arrays' pieces are expanded. */
#define STORE_MAX_PIECES (1u << 22)

/* ---- tree metadata -------------------------------------------------------------- */

static const char *const leaf_kinds[] = {
	[CKPT__LEAF_KIND__LEAF_ARRAY] = "array",
	[CKPT__LEAF_KIND__LEAF_INT] = "int",
	[CKPT__LEAF_KIND__LEAF_FLOAT] = "float",
	[CKPT__LEAF_KIND__LEAF_BOOL] = "bool",
	[CKPT__LEAF_KIND__LEAF_STR] = "str",
	[CKPT__LEAF_KIND__LEAF_NONE] = "none",
	[CKPT__LEAF_KIND__LEAF_EMPTY_DICT] = "empty_dict",
	[CKPT__LEAF_KIND__LEAF_EMPTY_LIST] = "empty_list",
	[CKPT__LEAF_KIND__LEAF_EMPTY_TUPLE] = "empty_tuple",
};
#define NLEAFKINDS (sizeof(leaf_kinds) / sizeof(leaf_kinds[0]))

static const char *const key_kinds[] = {
	[CKPT__KEY_KIND__KEY_DICT] = "dict",
	[CKPT__KEY_KIND__KEY_LIST] = "list",
	[CKPT__KEY_KIND__KEY_TUPLE] = "tuple",
};
#define NKEYKINDS (sizeof(key_kinds) / sizeof(key_kinds[0]))

static int
name_index(const char *const *names, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (names[i] != NULL && strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

/* The rules shared by the writer (CKPT_EINVAL) and the reader
 * (CKPT_ECORRUPT). Returns NULL when the leaf is fine, else why not. */
const char *
store_leaf_problem(const Ckpt__Leaf *l)
{
	uint64_t nb;
	size_t i;

	if ((unsigned)l->kind >= NLEAFKINDS)
		return "unknown leaf kind";
	if (l->n_path > STORE_MAX_DEPTH)
		return "path too deep";
	if (l->n_path > 0 && l->path == NULL)
		return "missing path";
	for (i = 0; i < l->n_path; i++) {
		const Ckpt__PathElem *pe = l->path[i];

		if (pe == NULL || (unsigned)pe->kind >= NKEYKINDS)
			return "bad path element";
		if (pe->kind == CKPT__KEY_KIND__KEY_DICT && pe->key == NULL)
			return "dict path element without key";
		if (pe->kind != CKPT__KEY_KIND__KEY_DICT &&
		    pe->index > INT64_MAX)
			return "path index out of range";
	}
	if (l->tag != NULL && strlen(l->tag) > STORE_MAX_TAG)
		return "tag longer than 64 bytes";
	if (l->kind != CKPT__LEAF_KIND__LEAF_ARRAY)
		return NULL;
	if (store_dtype_size(l->dtype) == 0)
		return "unknown dtype";
	if (l->n_shape > CKPT_WIRE_MAX_NDIM)
		return "too many dimensions";
	if (l->n_shape > 0 && l->shape == NULL)
		return "missing shape";
	if (store_array_nbytes(l->dtype, l->n_shape, l->shape, &nb) != 0)
		return "shape overflows";
	if (nb != l->nbytes)
		return "nbytes does not match dtype and shape";
	if (nb > INT64_MAX)
		return "array too large";
	for (i = 0; i < l->n_shape; i++)
		if (l->shape[i] > INT64_MAX)
			return "dimension too large";
	if (!store_valid_component(l->file))
		return "invalid file name";
	if (!store_valid_tensor_name(l->tensor))
		return "invalid tensor name";
	if (l->n_global_shape == 0 && l->n_piece_offsets == 0)
		return NULL;
	/* A piece of a global array: inside it. */
	if (l->n_global_shape != l->n_shape ||
	    l->n_piece_offsets != l->n_shape)
		return "piece offsets or global shape do not match its shape";
	for (i = 0; i < l->n_shape; i++) {
		uint64_t end;

		if (l->global_shape[i] > INT64_MAX ||
		    __builtin_add_overflow(l->piece_offsets[i], l->shape[i],
		    &end) || end > l->global_shape[i])
			return "piece outside its global shape";
	}
	return NULL;
}

/* The chunk sums of l, if any, as "chunk" and "xxh3_chunks" of o. */
static int
chunks_to_json(json_t *o, const Ckpt__Leaf *l)
{
	char *hex;
	size_t i;
	int r;

	if (!chunksum_leaf_has(l))
		return 0;
	if ((hex = malloc(l->n_chunk_xxh3 * 16 + 1)) == NULL)
		return -1;
	for (i = 0; i < l->n_chunk_xxh3; i++)
		snprintf(hex + i * 16, 17, "%016" PRIx64, l->chunk_xxh3[i]);
	hex[l->n_chunk_xxh3 * 16] = '\0';
	r = json_object_set_new(o, "chunk",
	    json_integer((json_int_t)l->chunk_bytes)) ||
	    json_object_set_new(o, "xxh3_chunks", json_string(hex));
	free(hex);
	return r ? -1 : 0;
}

static json_t *
leaf_to_json(const Ckpt__Leaf *l)
{
	json_t *o, *path, *v = NULL;
	char hex[17];
	size_t i;

	if ((o = json_object()) == NULL)
		return NULL;
	if ((path = json_array()) == NULL || json_object_set_new(o, "path",
	    path) != 0)
		goto fail;
	for (i = 0; i < l->n_path; i++) {
		const Ckpt__PathElem *pe = l->path[i];
		json_t *el;

		if (pe->kind == CKPT__KEY_KIND__KEY_DICT)
			el = json_pack("{s:s, s:s}", "kind", "dict", "key",
			    pe->key);
		else
			el = json_pack("{s:s, s:I}", "kind",
			    key_kinds[pe->kind], "index",
			    (json_int_t)pe->index);
		if (el == NULL || json_array_append_new(path, el) != 0)
			goto fail;
	}
	if (json_object_set_new(o, "kind", json_string(leaf_kinds[l->kind])))
		goto fail;
	switch (l->kind) {
	case CKPT__LEAF_KIND__LEAF_ARRAY:
		snprintf(hex, sizeof(hex), "%016" PRIx64, l->xxh3);
		if (l->n_global_shape > 0) {
			/* A piece of a global array: "pieces" (the writer
			 * appends the array's other pieces to this entry). */
			json_t *pc = json_pack("{s:s, s:s, s:o, s:o, s:I, "
			    "s:s}", "file", l->file, "tensor", l->tensor,
			    "offsets", store_shape_json(l->n_piece_offsets,
			    l->piece_offsets), "shape", store_shape_json(l->n_shape,
			    l->shape), "nbytes", (json_int_t)l->nbytes,
			    "xxh3", hex);

			if (pc == NULL || chunks_to_json(pc, l) != 0 ||
			    json_object_set_new(o, "dtype",
			    json_string(store_dtype_name(l->dtype))) ||
			    json_object_set_new(o, "global_shape",
			    store_shape_json(l->n_global_shape, l->global_shape)) ||
			    json_object_set_new(o, "pieces", json_pack("[o]",
			    pc)))
				goto fail;
			break;
		}
		if (json_object_set_new(o, "dtype",
		    json_string(store_dtype_name(l->dtype))) ||
		    json_object_set_new(o, "shape",
		    store_shape_json(l->n_shape, l->shape)) ||
		    json_object_set_new(o, "nbytes",
		    json_integer((json_int_t)l->nbytes)) ||
		    json_object_set_new(o, "file", json_string(l->file)) ||
		    json_object_set_new(o, "tensor", json_string(l->tensor)) ||
		    json_object_set_new(o, "xxh3", json_string(hex)) ||
		    chunks_to_json(o, l) != 0)
			goto fail;
		break;
	case CKPT__LEAF_KIND__LEAF_INT:
		v = json_integer((json_int_t)l->int_value);
		break;
	case CKPT__LEAF_KIND__LEAF_FLOAT:
		if (isnan(l->float_value))
			v = json_string(signbit(l->float_value) ? "-nan" : "nan");
		else if (isinf(l->float_value))
			v = json_string(l->float_value < 0 ? "-inf" : "inf");
		else
			v = json_real(l->float_value);
		break;
	case CKPT__LEAF_KIND__LEAF_BOOL:
		v = json_boolean(l->bool_value);
		break;
	case CKPT__LEAF_KIND__LEAF_STR:
		v = json_string(l->str_value != NULL ? l->str_value : "");
		break;
	default:
		break;
	}
	if (v != NULL && json_object_set_new(o, "value", v) != 0)
		goto fail;
	if (v == NULL && l->kind >= CKPT__LEAF_KIND__LEAF_INT &&
	    l->kind <= CKPT__LEAF_KIND__LEAF_STR)
		goto fail;
	if (l->tag != NULL && json_object_set_new(o, "tag",
	    json_string(l->tag)) != 0)
		goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

static int
same_path(const Ckpt__Leaf *a, const Ckpt__Leaf *b)
{
	size_t i;

	if (a->n_path != b->n_path)
		return 0;
	for (i = 0; i < a->n_path; i++) {
		const Ckpt__PathElem *x = a->path[i], *y = b->path[i];

		if (x->kind != y->kind || (x->kind == CKPT__KEY_KIND__KEY_DICT ?
		    strcmp(x->key, y->key) != 0 : x->index != y->index))
			return 0;
	}
	return 1;
}

static int
tree_meta_write(const struct store_backend *be, int itemfd,
    const Ckpt__Item *item, mode_t filemode, struct store_sync *b, ckd_err *e)
{
	json_t *root, *leaves, *lj;
	const char *why;
	char *text = NULL;
	size_t i;
	int r = 0;

	root = json_pack("{s:s, s:i, s:[]}", "format", "ckptd-tree",
	    "version", STORE_FORMAT_VERSION, "leaves");
	if (root == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	leaves = json_object_get(root, "leaves");
	for (i = 0; i < item->n_leaves; i++) {
		if (item->leaves[i] == NULL) {
			r = err_set(e, CKPT_EINVAL, "leaf %zu missing", i);
			goto out;
		}
		if ((why = store_leaf_problem(item->leaves[i])) != NULL) {
			r = err_set(e, CKPT_EINVAL, "leaf %zu: %s", i, why);
			goto out;
		}
		if (i > 0 && item->leaves[i]->n_global_shape > 0 &&
		    item->leaves[i - 1]->n_global_shape > 0 &&
		    same_path(item->leaves[i], item->leaves[i - 1])) {
			/* Another piece of the same global array. */
			json_t *prev = json_array_get(leaves,
			    json_array_size(leaves) - 1);

			if ((lj = leaf_to_json(item->leaves[i])) == NULL ||
			    json_array_append(json_object_get(prev, "pieces"),
			    json_array_get(json_object_get(lj, "pieces"),
			    0)) != 0) {
				json_decref(lj);
				r = err_set(e, CKPT_ENOMEM, "out of memory");
				goto out;
			}
			json_decref(lj);
			continue;
		}
		if ((lj = leaf_to_json(item->leaves[i])) == NULL ||
		    json_array_append_new(leaves, lj) != 0) {
			/* jansson refuses strings that are not UTF-8 */
			r = err_set(e, CKPT_EINVAL, "leaf %zu: cannot encode "
			    "(string not UTF-8?)", i);
			goto out;
		}
	}
	if ((text = json_dumps(root, JSON_COMPACT)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if (strlen(text) > STORE_MAX_TREE_META) {
		r = err_set(e, CKPT_ETOOBIG, "tree metadata larger than "
		    "256 MiB");
		goto out;
	}
	r = store_small_write(be, itemfd, STORE_TREE_METADATA, text,
	    strlen(text), filemode, b, e);
out:
	free(text);
	json_decref(root);
	return r;
}

int
store_write_tree_metadata(const struct store_backend *be, int itemfd,
    const Ckpt__Item *item, mode_t filemode, ckd_err *e)
{
	return tree_meta_write(be, itemfd, item, filemode, NULL, e);
}

int
store_write_tree_metadata_nosync(const struct store_backend *be, int itemfd,
    const Ckpt__Item *item, mode_t filemode, struct store_sync *b, ckd_err *e)
{
	if (b == NULL)
		return err_set(e, CKPT_EINVAL, "no sync batch");
	return tree_meta_write(be, itemfd, item, filemode, b, e);
}

/* ---- reading tree metadata ----------------------------------------------------- */

static void
leaf_free(Ckpt__Leaf *l)
{
	size_t j;

	if (l == NULL)
		return;
	for (j = 0; j < l->n_path && l->path != NULL; j++) {
		if (l->path[j] != NULL)
			free(l->path[j]->key);
		free(l->path[j]);
	}
	free(l->path);
	free(l->shape);
	free(l->global_shape);
	free(l->piece_offsets);
	free(l->str_value);
	free(l->file);
	free(l->tag);
	free(l->tensor);
	free(l->chunk_xxh3);
	free(l);
}

/*
 * Ownership: an item from store_read_tree_metadata() owns, all allocated
 * with malloc: item->leaves (array) and item->name/json when the caller
 * sets them (they must then be malloc'ed too); per leaf: the Ckpt__Leaf,
 * its path array, every Ckpt__PathElem and its key, shape, str_value, file,
 * tag and tensor. NULL members are skipped; store_item_free(NULL) is a
 * no-op. Items unpacked by protobuf-c are freed with
 * ckpt__item__free_unpacked() instead.
 */
void
store_item_free(Ckpt__Item *item)
{
	size_t i;

	if (item == NULL)
		return;
	for (i = 0; i < item->n_leaves && item->leaves != NULL; i++)
		leaf_free(item->leaves[i]);
	free(item->leaves);
	free(item->name);
	free(item->json);
	free(item);
}

/* String member `k` of o: NULL (and *bad set) when present with another
 * type; NULL when absent. */
static const char *
jstr(json_t *o, const char *k, int *bad)
{
	json_t *v = json_object_get(o, k);

	if (v == NULL)
		return NULL;
	if (!json_is_string(v) ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		*bad = 1;
		return NULL;
	}
	return json_string_value(v);
}

/* Non-negative integer member. 0 ok, -1 absent/bad type/negative. */
static int
juint(json_t *o, const char *k, uint64_t *out)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* 16 hex digits at s. */
static int
hex64_at(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	int i, c;

	for (i = 0; i < 16; i++) {
		c = s[i];
		if (c >= '0' && c <= '9')
			c -= '0';
		else if (c >= 'a' && c <= 'f')
			c = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			c = c - 'A' + 10;
		else
			return -1;
		v = v << 4 | (uint64_t)c;
	}
	*out = v;
	return 0;
}

static int
parse_hex64(const char *s, uint64_t *out)
{
	if (s == NULL || strlen(s) != 16)
		return -1;
	return hex64_at(s, out);
}

/* The optional "chunk" and "xxh3_chunks" of an array leaf o (nbytes
 * known): both or neither, one sum of 16 hex digits per chunk. */
static int
chunks_from_json(json_t *o, Ckpt__Leaf *l)
{
	json_t *c = json_object_get(o, "chunk"), *h = json_object_get(o,
	    "xxh3_chunks");
	const char *s;
	uint64_t n;
	size_t i;

	if (c == NULL && h == NULL)
		return 0;
	if (!json_is_integer(c) || json_integer_value(c) <= 0 ||
	    !json_is_string(h))
		return -1;
	l->chunk_bytes = (uint64_t)json_integer_value(c);
	n = chunksum_count(l->nbytes, l->chunk_bytes);
	s = json_string_value(h);
	if (n < 2 || json_string_length(h) % 16 != 0 ||
	    json_string_length(h) / 16 != n)
		return -1;
	if ((l->chunk_xxh3 = malloc((size_t)n * sizeof *l->chunk_xxh3)) ==
	    NULL)
		return -2;
	for (i = 0; i < n; i++)
		if (hex64_at(s + i * 16, &l->chunk_xxh3[i]) != 0)
			return -1;
	l->n_chunk_xxh3 = (size_t)n;
	l->has_chunk_bytes = 1;
	return 0;
}

/* Duplicate s into *dst (ENOMEM check by the caller through the return). */
static int
dupto(char **dst, const char *s)
{
	if (s == NULL)
		return 0;
	return (*dst = strdup(s)) != NULL ? 0 : -1;
}

#define CORRUPT(...) do { r = err_set(e, CKPT_ECORRUPT, __VA_ARGS__); \
	goto out; } while (0)
#define NOMEM() do { r = err_set(e, CKPT_ENOMEM, "out of memory"); \
	goto out; } while (0)

static int
leaf_from_json(json_t *o, size_t idx, Ckpt__Leaf **out, ckd_err *e)
{
	Ckpt__Leaf *l;
	json_t *path, *v, *shape;
	const char *s, *why;
	int bad = 0, k, r = 0;
	size_t i;

	if ((l = malloc(sizeof(*l))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	ckpt__leaf__init(l);
	if (!json_is_object(o))
		CORRUPT("_METADATA: leaf %zu is not an object", idx);
	s = jstr(o, "kind", &bad);
	if (s == NULL || (k = name_index(leaf_kinds, NLEAFKINDS, s)) < 0)
		CORRUPT("_METADATA: leaf %zu: bad kind", idx);
	l->has_kind = 1;
	l->kind = (Ckpt__LeafKind)k;

	path = json_object_get(o, "path");
	if (!json_is_array(path) || json_array_size(path) > STORE_MAX_DEPTH)
		CORRUPT("_METADATA: leaf %zu: bad path", idx);
	if (json_array_size(path) > 0) {
		l->path = calloc(json_array_size(path), sizeof(*l->path));
		if (l->path == NULL)
			NOMEM();
	}
	json_array_foreach(path, i, v) {
		Ckpt__PathElem *pe;

		if ((pe = malloc(sizeof(*pe))) == NULL)
			NOMEM();
		ckpt__path_elem__init(pe);
		l->path[l->n_path++] = pe;
		if (!json_is_object(v) || (s = jstr(v, "kind", &bad)) == NULL ||
		    (k = name_index(key_kinds, NKEYKINDS, s)) < 0)
			CORRUPT("_METADATA: leaf %zu: bad path element", idx);
		pe->has_kind = 1;
		pe->kind = (Ckpt__KeyKind)k;
		if (pe->kind == CKPT__KEY_KIND__KEY_DICT) {
			if ((s = jstr(v, "key", &bad)) == NULL)
				CORRUPT("_METADATA: leaf %zu: dict path element "
				    "without key", idx);
			if (dupto(&pe->key, s) != 0)
				NOMEM();
		} else {
			if (juint(v, "index", &pe->index) != 0)
				CORRUPT("_METADATA: leaf %zu: bad path index",
				    idx);
			pe->has_index = 1;
		}
	}

	s = jstr(o, "tag", &bad);
	if (bad)
		CORRUPT("_METADATA: leaf %zu: bad tag", idx);
	if (dupto(&l->tag, s) != 0)
		NOMEM();

	v = json_object_get(o, "value");
	switch (l->kind) {
	case CKPT__LEAF_KIND__LEAF_ARRAY:
		s = jstr(o, "dtype", &bad);
		l->dtype = store_dtype_parse(s);
		l->has_dtype = 1;
		if (l->dtype == CKPT__DTYPE__DTYPE_INVALID)
			CORRUPT("_METADATA: leaf %zu: bad dtype", idx);
		shape = json_object_get(o, "shape");
		if (!json_is_array(shape) ||
		    json_array_size(shape) > CKPT_WIRE_MAX_NDIM)
			CORRUPT("_METADATA: leaf %zu: bad shape", idx);
		if (json_array_size(shape) > 0 && (l->shape = calloc(
		    json_array_size(shape), sizeof(*l->shape))) == NULL)
			NOMEM();
		json_array_foreach(shape, i, v) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				CORRUPT("_METADATA: leaf %zu: bad shape", idx);
			l->shape[l->n_shape++] = (uint64_t)json_integer_value(v);
		}
		if (juint(o, "nbytes", &l->nbytes) != 0)
			CORRUPT("_METADATA: leaf %zu: bad nbytes", idx);
		l->has_nbytes = 1;
		s = jstr(o, "file", &bad);
		if (s == NULL || dupto(&l->file, s) != 0)
			goto strfail;
		s = jstr(o, "tensor", &bad);
		if (s == NULL || dupto(&l->tensor, s) != 0)
			goto strfail;
		if (parse_hex64(jstr(o, "xxh3", &bad), &l->xxh3) != 0)
			CORRUPT("_METADATA: leaf %zu: bad xxh3", idx);
		l->has_xxh3 = 1;
		if ((r = chunks_from_json(o, l)) == -2)
			NOMEM();
		if (r != 0)
			CORRUPT("_METADATA: leaf %zu: bad chunk sums", idx);
		l->has_offset = 1;
		l->offset = 0;
		l->has_fd_index = 1;
		l->fd_index = 0;
		break;
	case CKPT__LEAF_KIND__LEAF_INT:
		if (!json_is_integer(v))
			CORRUPT("_METADATA: leaf %zu: int value expected", idx);
		l->has_int_value = 1;
		l->int_value = json_integer_value(v);
		break;
	case CKPT__LEAF_KIND__LEAF_FLOAT:
		l->has_float_value = 1;
		if (json_is_number(v))
			l->float_value = json_number_value(v);
		else if (json_is_string(v) && strcmp(json_string_value(v),
		    "inf") == 0)
			l->float_value = INFINITY;
		else if (json_is_string(v) && strcmp(json_string_value(v),
		    "-inf") == 0)
			l->float_value = -INFINITY;
		else if (json_is_string(v) && strcmp(json_string_value(v),
		    "nan") == 0)
			l->float_value = NAN;
		else if (json_is_string(v) && strcmp(json_string_value(v),
		    "-nan") == 0)
			l->float_value = -NAN;
		else
			CORRUPT("_METADATA: leaf %zu: float value expected",
			    idx);
		break;
	case CKPT__LEAF_KIND__LEAF_BOOL:
		if (!json_is_boolean(v))
			CORRUPT("_METADATA: leaf %zu: bool value expected",
			    idx);
		l->has_bool_value = 1;
		l->bool_value = json_is_true(v);
		break;
	case CKPT__LEAF_KIND__LEAF_STR:
		if ((s = jstr(o, "value", &bad)) == NULL)
			CORRUPT("_METADATA: leaf %zu: str value expected", idx);
		if (dupto(&l->str_value, s) != 0)
			NOMEM();
		break;
	default:
		break;
	}
	if ((why = store_leaf_problem(l)) != NULL)
		CORRUPT("_METADATA: leaf %zu: %s", idx, why);
	*out = l;
	return 0;
strfail:
	if (s != NULL)
		NOMEM();
	CORRUPT("_METADATA: leaf %zu: missing file or tensor name", idx);
out:
	leaf_free(l);
	return r;
}

/* A list of non-negative integers of at most CKPT_WIRE_MAX_NDIM. */
static int
juints(json_t *a, uint64_t **out, size_t *n)
{
	json_t *v;
	size_t i;

	if (!json_is_array(a) || json_array_size(a) > CKPT_WIRE_MAX_NDIM)
		return -1;
	if (json_array_size(a) > 0 && (*out = calloc(json_array_size(a),
	    sizeof(**out))) == NULL)
		return -1;
	json_array_foreach(a, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return -1;
		(*out)[(*n)++] = (uint64_t)json_integer_value(v);
	}
	return 0;
}

/*
 * A global array's entry: {"path", "kind", "dtype", "global_shape",
 * "pieces": [{"file", "tensor", "offsets", "shape", "nbytes", "xxh3"}]}
 * becomes one leaf per piece (appended to item->leaves, of capacity *cap).
 */
static int
pieces_from_json(json_t *o, size_t idx, size_t rest, Ckpt__Item *item,
    size_t *cap, ckd_err *e)
{
	json_t *pieces = json_object_get(o, "pieces"), *pc, *one = NULL;
	Ckpt__Leaf *l;
	size_t i, k;
	int r = 0;

	if (!json_is_array(pieces) || json_array_size(pieces) == 0 ||
	    json_array_size(pieces) > STORE_MAX_PIECES)
		return err_set(e, CKPT_ECORRUPT, "_METADATA: leaf %zu: bad "
		    "pieces", idx);
	/* Room for these pieces and one leaf per entry after this one. */
	if (item->n_leaves + json_array_size(pieces) + rest > *cap) {
		size_t ncap = item->n_leaves + json_array_size(pieces) + rest;
		Ckpt__Leaf **nl;

		if (ncap > STORE_MAX_PIECES)
			return err_set(e, CKPT_ECORRUPT, "_METADATA: more than "
			    "%u leaves", STORE_MAX_PIECES);
		if ((nl = realloc(item->leaves, ncap * sizeof(*nl))) == NULL)
			return err_set(e, CKPT_ENOMEM, "out of memory");
		item->leaves = nl;
		*cap = ncap;
	}
	json_array_foreach(pieces, i, pc) {
		const char *key;
		json_t *v;

		/* The piece as a plain array leaf, then its place. */
		if (!json_is_object(pc) || (one = json_copy(o)) == NULL)
			return err_set(e, CKPT_ECORRUPT, "_METADATA: leaf %zu: "
			    "bad piece %zu", idx, i);
		json_object_del(one, "pieces");
		json_object_del(one, "global_shape");
		json_object_foreach(pc, key, v)
			if (strcmp(key, "offsets") != 0 &&
			    json_object_set(one, key, v) != 0) {
				json_decref(one);
				return err_set(e, CKPT_ENOMEM, "out of memory");
			}
		r = leaf_from_json(one, idx, &l, e);
		json_decref(one);
		if (r != 0)
			return r;
		if (juints(json_object_get(o, "global_shape"), &l->global_shape,
		    &l->n_global_shape) != 0 || juints(json_object_get(pc,
		    "offsets"), &l->piece_offsets, &l->n_piece_offsets) != 0 ||
		    l->n_shape == 0) {
			leaf_free(l);
			return err_set(e, CKPT_ECORRUPT, "_METADATA: leaf %zu: "
			    "bad global shape or offsets of piece %zu", idx, i);
		}
		for (k = 0; k < l->n_shape; k++)
			if (l->global_shape[k] > INT64_MAX)
				break;
		if (k < l->n_shape || store_leaf_problem(l) != NULL) {
			leaf_free(l);
			return err_set(e, CKPT_ECORRUPT, "_METADATA: leaf %zu: "
			    "piece %zu outside its global shape", idx, i);
		}
		item->leaves[item->n_leaves++] = l;
	}
	return 0;
}

int
store_read_tree_metadata(const struct store_backend *be, int itemfd,
    Ckpt__Item **out, ckd_err *e)
{
	json_t *root = NULL, *leaves, *v;
	Ckpt__Item *item = NULL;
	json_error_t jerr;
	char *buf = NULL;
	const char *s;
	size_t len, i, cap;
	int r, bad = 0;

	*out = NULL;
	r = store_read_file(be, itemfd, STORE_TREE_METADATA,
	    STORE_MAX_TREE_META, &buf, &len, e);
	if (r == CKPT_ENOTFOUND || r == CKPT_ETOOBIG)
		return err_set(e, CKPT_ECORRUPT, "_METADATA: %s",
		    r == CKPT_ENOTFOUND ? "missing" : "larger than 256 MiB");
	if (r != 0)
		return r;
	if ((root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL)
		CORRUPT("_METADATA: invalid JSON at line %d: %s", jerr.line,
		    jerr.text);
	if (!json_is_object(root) || (s = jstr(root, "format", &bad)) == NULL ||
	    strcmp(s, "ckptd-tree") != 0)
		CORRUPT("_METADATA: not a ckptd tree metadata file");
	v = json_object_get(root, "version");
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		CORRUPT("_METADATA: bad format version");
	if (json_integer_value(v) > STORE_FORMAT_VERSION) {
		r = err_set(e, CKPT_EVERSION, "_METADATA: format version %lld "
		    "was written by a newer ckptd (this one reads up to %d); "
		    "upgrade ckptd", (long long)json_integer_value(v),
		    STORE_FORMAT_VERSION);
		goto out;
	}
	leaves = json_object_get(root, "leaves");
	if (!json_is_array(leaves))
		CORRUPT("_METADATA: leaves is not an array");
	if ((item = malloc(sizeof(*item))) == NULL)
		NOMEM();
	ckpt__item__init(item);
	if (json_array_size(leaves) > 0 && (item->leaves = calloc(
	    json_array_size(leaves), sizeof(*item->leaves))) == NULL)
		NOMEM();
	cap = json_array_size(leaves);
	json_array_foreach(leaves, i, v) {
		if (json_is_object(v) && json_object_get(v, "pieces") != NULL) {
			if ((r = pieces_from_json(v, i,
			    json_array_size(leaves) - i - 1, item, &cap,
			    e)) != 0)
				goto out;
			continue;
		}
		if ((r = leaf_from_json(v, i, &item->leaves[item->n_leaves],
		    e)) != 0)
			goto out;
		item->n_leaves++;
	}
	*out = item;
	item = NULL;
out:
	store_item_free(item);
	json_decref(root);
	free(buf);
	return r;
}
