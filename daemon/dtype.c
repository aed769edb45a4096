/*
 * dtype.c - dtypes, handlers, tensor names and array sizes (contract:
 * dtype.h).
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "dtype.h"

int
store_tensor_name_reserved(const char *s)
{
	return strcmp(s, "__metadata__") == 0 ||
	    strncmp(s, STORE_PAD_PREFIX, strlen(STORE_PAD_PREFIX)) == 0;
}

int
store_valid_tensor_name(const char *s)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > STORE_MAX_TENSOR_NAME)
		return 0;
	return !store_tensor_name_reserved(s);
}

/* ---- dtypes and handlers -------------------------------------------------------- */

static const struct {
	const char *name;
	size_t size;
} dtypes[] = {
	[CKPT__DTYPE__DTYPE_BOOL] = { "BOOL", 1 },
	[CKPT__DTYPE__DTYPE_U8] = { "U8", 1 },
	[CKPT__DTYPE__DTYPE_I8] = { "I8", 1 },
	[CKPT__DTYPE__DTYPE_U16] = { "U16", 2 },
	[CKPT__DTYPE__DTYPE_I16] = { "I16", 2 },
	[CKPT__DTYPE__DTYPE_F16] = { "F16", 2 },
	[CKPT__DTYPE__DTYPE_BF16] = { "BF16", 2 },
	[CKPT__DTYPE__DTYPE_U32] = { "U32", 4 },
	[CKPT__DTYPE__DTYPE_I32] = { "I32", 4 },
	[CKPT__DTYPE__DTYPE_F32] = { "F32", 4 },
	[CKPT__DTYPE__DTYPE_U64] = { "U64", 8 },
	[CKPT__DTYPE__DTYPE_I64] = { "I64", 8 },
	[CKPT__DTYPE__DTYPE_F64] = { "F64", 8 },
	[CKPT__DTYPE__DTYPE_F8_E4M3] = { "F8_E4M3", 1 },
	[CKPT__DTYPE__DTYPE_F8_E5M2] = { "F8_E5M2", 1 },
};
#define NDTYPES (sizeof(dtypes) / sizeof(dtypes[0]))

size_t
store_dtype_size(Ckpt__Dtype d)
{
	if ((unsigned)d >= NDTYPES || dtypes[d].name == NULL)
		return 0;
	return dtypes[d].size;
}

const char *
store_dtype_name(Ckpt__Dtype d)
{
	if ((unsigned)d >= NDTYPES)
		return NULL;
	return dtypes[d].name;
}

Ckpt__Dtype
store_dtype_parse(const char *s)
{
	size_t i;

	if (s == NULL)
		return CKPT__DTYPE__DTYPE_INVALID;
	for (i = 1; i < NDTYPES; i++)
		if (dtypes[i].name != NULL && strcmp(dtypes[i].name, s) == 0)
			return (Ckpt__Dtype)i;
	return CKPT__DTYPE__DTYPE_INVALID;
}

#define ORBAX_HANDLERS "orbax.checkpoint._src.handlers."
static const struct {
	Ckpt__Handler h;
	const char *shortname;
	const char *typestr;
} handlers[] = {
	{ CKPT__HANDLER__HANDLER_STANDARD, "STANDARD", ORBAX_HANDLERS
	  "standard_checkpoint_handler.StandardCheckpointHandler" },
	{ CKPT__HANDLER__HANDLER_PYTREE, "PYTREE", ORBAX_HANDLERS
	  "pytree_checkpoint_handler.PyTreeCheckpointHandler" },
	{ CKPT__HANDLER__HANDLER_JSON, "JSON", ORBAX_HANDLERS
	  "json_checkpoint_handler.JsonCheckpointHandler" },
	{ CKPT__HANDLER__HANDLER_ARRAY, "ARRAY", ORBAX_HANDLERS
	  "array_checkpoint_handler.ArrayCheckpointHandler" },
	{ CKPT__HANDLER__HANDLER_PROTO, "PROTO", ORBAX_HANDLERS
	  "proto_checkpoint_handler.ProtoCheckpointHandler" },
};
#define NHANDLERS (sizeof(handlers) / sizeof(handlers[0]))

/* NULL for HANDLER_UNSPECIFIED or an unknown value. */
const char *
store_handler_typestr(Ckpt__Handler h)
{
	size_t i;

	for (i = 0; i < NHANDLERS; i++)
		if (handlers[i].h == h)
			return handlers[i].typestr;
	return NULL;
}

const char *
store_handler_shortname(Ckpt__Handler h)
{
	size_t i;

	for (i = 0; i < NHANDLERS; i++)
		if (handlers[i].h == h)
			return handlers[i].shortname;
	return NULL;
}

/* Accepts the short name (any case), the full Orbax type string, or any
 * dotted path ending in the Orbax class name (older module layouts).
 * HANDLER_UNSPECIFIED when unknown. */
Ckpt__Handler
store_handler_parse(const char *s)
{
	const char *cls, *dot;
	size_t i;

	if (s == NULL)
		return CKPT__HANDLER__HANDLER_UNSPECIFIED;
	for (i = 0; i < NHANDLERS; i++)
		if (strcasecmp(s, handlers[i].shortname) == 0 ||
		    strcmp(s, handlers[i].typestr) == 0)
			return handlers[i].h;
	cls = (dot = strrchr(s, '.')) != NULL ? dot + 1 : s;
	for (i = 0; i < NHANDLERS; i++) {
		dot = strrchr(handlers[i].typestr, '.');
		if (strcmp(cls, dot + 1) == 0)
			return handlers[i].h;
	}
	return CKPT__HANDLER__HANDLER_UNSPECIFIED;
}

/* nbytes of dtype/shape, or -1 on overflow / bad dtype / ndim. */
int
store_array_nbytes(Ckpt__Dtype dt, size_t ndim, const uint64_t *shape,
    uint64_t *out)
{
	uint64_t n;
	size_t i;

	if ((n = store_dtype_size(dt)) == 0 || ndim > CKPT_WIRE_MAX_NDIM)
		return -1;
	for (i = 0; i < ndim; i++) {
		if (shape[i] != 0 && n > UINT64_MAX / shape[i])
			return -1;
		n *= shape[i];
	}
	*out = n;
	return 0;
}

json_t *
store_shape_json(size_t ndim, const uint64_t *shape)
{
	json_t *a = json_array();
	size_t i;

	if (a == NULL)
		return NULL;
	for (i = 0; i < ndim; i++) {
		if (shape[i] > INT64_MAX ||
		    json_array_append_new(a, json_integer((json_int_t)shape[i]))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}
