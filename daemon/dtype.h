/*
 * dtype.h - the tables of the format: dtypes (safetensors names, sizes),
 * Orbax's handler type strings, tensor names and array sizes.
 */
#ifndef CKPTD_DTYPE_H
#define CKPTD_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ckpt.pb-c.h"

/* Names starting with this, and "__metadata__", are reserved in a
 * safetensors file (padding tensors of the writer). */
#define STORE_PAD_PREFIX "__ckptd_pad_"
#define STORE_MAX_TENSOR_NAME 1024

/* Orbax's handler type string for _CHECKPOINT_METADATA.item_handlers. */
const char *store_handler_typestr(Ckpt__Handler h);
/* Our short name ("STANDARD"); NULL for an unknown value. */
const char *store_handler_shortname(Ckpt__Handler h);
/* Parse either our short name ("STANDARD") or Orbax's type string. */
Ckpt__Handler store_handler_parse(const char *s);
/* Bytes per element of a dtype; 0 for invalid. safetensors name; parse. */
size_t store_dtype_size(Ckpt__Dtype d);
const char *store_dtype_name(Ckpt__Dtype d);
Ckpt__Dtype store_dtype_parse(const char *s);
/* 1 for tensor names safetensors or the writer keep for themselves
 * ("__metadata__", padding tensors). */
int store_tensor_name_reserved(const char *s);
/* 1 for a tensor name a leaf may use: 1..1024 bytes, not reserved. */
int store_valid_tensor_name(const char *s);
/* nbytes of dtype/shape, or -1 on overflow / bad dtype / ndim. */
int store_array_nbytes(Ckpt__Dtype dt, size_t ndim, const uint64_t *shape,
    uint64_t *out);
/* A shape as a JSON array of integers; NULL on ENOMEM or a dimension
 * above INT64_MAX. */
json_t *store_shape_json(size_t ndim, const uint64_t *shape);

#endif
