/*
 * dtype.c - the dtype table and element-wise casts for restores.
 *
 * Casts go through double (to a float type) or through a 64-bit integer
 * (between integer types, wrapping like C conversions). Float to integer
 * truncates toward zero and saturates at the target's range (NaN -> 0),
 * so no conversion is undefined behaviour. F16 and BF16 round to nearest
 * even. F8 types are stored and restored as-is but not cast.
 */
#include <math.h>
#include <string.h>

#include "internal.h"

static const struct {
	const char *name;
	size_t size;
} dtypes[] = {
	[CKPT_DTYPE_INVALID] = { NULL, 0 },
	[CKPT_BOOL] = { "BOOL", 1 },
	[CKPT_U8] = { "U8", 1 },
	[CKPT_I8] = { "I8", 1 },
	[CKPT_U16] = { "U16", 2 },
	[CKPT_I16] = { "I16", 2 },
	[CKPT_F16] = { "F16", 2 },
	[CKPT_BF16] = { "BF16", 2 },
	[CKPT_U32] = { "U32", 4 },
	[CKPT_I32] = { "I32", 4 },
	[CKPT_F32] = { "F32", 4 },
	[CKPT_U64] = { "U64", 8 },
	[CKPT_I64] = { "I64", 8 },
	[CKPT_F64] = { "F64", 8 },
	[CKPT_F8_E4M3] = { "F8_E4M3", 1 },
	[CKPT_F8_E5M2] = { "F8_E5M2", 1 },
};
#define NDTYPES (sizeof dtypes / sizeof dtypes[0])

int
dtype_valid(int dt)
{
	return dt > 0 && (size_t)dt < NDTYPES;
}

CKPT_API size_t
ckpt_dtype_size(ckpt_dtype dt)
{
	return dtype_valid((int)dt) ? dtypes[dt].size : 0;
}

CKPT_API const char *
ckpt_dtype_name(ckpt_dtype dt)
{
	return dtype_valid((int)dt) ? dtypes[dt].name : NULL;
}

CKPT_API ckpt_dtype
ckpt_dtype_from_name(const char *name)
{
	size_t i;

	if (name == NULL)
		return CKPT_DTYPE_INVALID;
	for (i = 1; i < NDTYPES; i++)
		if (strcmp(dtypes[i].name, name) == 0)
			return (ckpt_dtype)i;
	return CKPT_DTYPE_INVALID;
}

int
dtype_is_float(ckpt_dtype dt)
{
	return dt == CKPT_F16 || dt == CKPT_BF16 || dt == CKPT_F32 ||
	    dt == CKPT_F64;
}

static int
is_f8(ckpt_dtype dt)
{
	return dt == CKPT_F8_E4M3 || dt == CKPT_F8_E5M2;
}

static int
is_unsigned(ckpt_dtype dt)
{
	return dt == CKPT_U8 || dt == CKPT_U16 || dt == CKPT_U32 ||
	    dt == CKPT_U64 || dt == CKPT_BOOL;
}

int
dtype_can_cast(ckpt_dtype from, ckpt_dtype to)
{
	if (!dtype_valid((int)from) || !dtype_valid((int)to))
		return 0;
	if (from == to)
		return 1;
	return !is_f8(from) && !is_f8(to);
}

/* ---- half precision ------------------------------------------------------ */

float
f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, x;
	float f;

	if (exp == 0) {
		if (mant == 0) {
			x = sign;
		} else {
			exp = 127 - 15 + 1;
			while ((mant & 0x400) == 0) {
				mant <<= 1;
				exp--;
			}
			mant &= 0x3ff;
			x = sign | (exp << 23) | (mant << 13);
		}
	} else if (exp == 0x1f) {
		x = sign | 0x7f800000u | (mant << 13);
	} else {
		x = sign | ((exp + 112) << 23) | (mant << 13);
	}
	memcpy(&f, &x, sizeof f);
	return f;
}

uint16_t
f32_to_f16(float f)
{
	uint32_t x, sign, exp, mant, h, rem;
	int e;

	memcpy(&x, &f, sizeof x);
	sign = (x >> 16) & 0x8000;
	exp = (x >> 23) & 0xff;
	mant = x & 0x7fffff;
	if (exp == 0xff)
		return (uint16_t)(sign | 0x7c00 |
		    (mant != 0 ? 0x200 | (mant >> 13) : 0));
	e = (int)exp - 127 + 15;
	if (e >= 0x1f)
		return (uint16_t)(sign | 0x7c00);
	if (e <= 0) {
		unsigned shift;
		uint32_t mid;

		if (e < -10)
			return (uint16_t)sign;
		mant |= 0x800000;
		shift = (unsigned)(14 - e);
		h = mant >> shift;
		rem = mant & ((1u << shift) - 1);
		mid = 1u << (shift - 1);
		if (rem > mid || (rem == mid && (h & 1)))
			h++;
		return (uint16_t)(sign | h);
	}
	h = sign | ((uint32_t)e << 10) | (mant >> 13);
	rem = mant & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++;
	return (uint16_t)h;
}

float
bf16_to_f32(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;
	float f;

	memcpy(&f, &x, sizeof f);
	return f;
}

uint16_t
f32_to_bf16(float f)
{
	uint32_t x;

	memcpy(&x, &f, sizeof x);
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40);
	x += 0x7fffu + ((x >> 16) & 1);
	return (uint16_t)(x >> 16);
}

/* ---- generic element access ----------------------------------------------- */

#define LD(type) do { type v_; memcpy(&v_, (const char *)p + i * sizeof v_, \
    sizeof v_); return v_; } while (0)

static double
load_f(ckpt_dtype dt, const void *p, size_t i)
{
	switch (dt) {
	case CKPT_BOOL: { uint8_t v; memcpy(&v, (const char *)p + i, 1); return v != 0; }
	case CKPT_U8: LD(uint8_t);
	case CKPT_I8: LD(int8_t);
	case CKPT_U16: LD(uint16_t);
	case CKPT_I16: LD(int16_t);
	case CKPT_U32: LD(uint32_t);
	case CKPT_I32: LD(int32_t);
	case CKPT_U64: LD(uint64_t);
	case CKPT_I64: LD(int64_t);
	case CKPT_F32: LD(float);
	case CKPT_F64: LD(double);
	case CKPT_F16: { uint16_t v; memcpy(&v, (const char *)p + 2 * i, 2); return f16_to_f32(v); }
	case CKPT_BF16: { uint16_t v; memcpy(&v, (const char *)p + 2 * i, 2); return bf16_to_f32(v); }
	default: return 0;
	}
}

/* Integer view: *u is the value as uint64 bits (two's complement). */
static uint64_t
load_u(ckpt_dtype dt, const void *p, size_t i)
{
	switch (dt) {
	case CKPT_BOOL: { uint8_t v; memcpy(&v, (const char *)p + i, 1); return v != 0; }
	case CKPT_U8: LD(uint8_t);
	case CKPT_I8: { int8_t v; memcpy(&v, (const char *)p + i, 1); return (uint64_t)(int64_t)v; }
	case CKPT_U16: LD(uint16_t);
	case CKPT_I16: { int16_t v; memcpy(&v, (const char *)p + 2 * i, 2); return (uint64_t)(int64_t)v; }
	case CKPT_U32: LD(uint32_t);
	case CKPT_I32: { int32_t v; memcpy(&v, (const char *)p + 4 * i, 4); return (uint64_t)(int64_t)v; }
	case CKPT_U64: LD(uint64_t);
	case CKPT_I64: LD(int64_t);
	default: return 0;
	}
}
#undef LD

#define ST(type, val) do { type v_ = (type)(val); memcpy((char *)p + i * sizeof v_, \
    &v_, sizeof v_); } while (0)

static void
store_f(ckpt_dtype dt, void *p, size_t i, double d)
{
	switch (dt) {
	case CKPT_F32: ST(float, d); break;
	case CKPT_F64: ST(double, d); break;
	case CKPT_F16: ST(uint16_t, f32_to_f16((float)d)); break;
	case CKPT_BF16: ST(uint16_t, f32_to_bf16((float)d)); break;
	default: break;
	}
}

static void
store_u(ckpt_dtype dt, void *p, size_t i, uint64_t u)
{
	switch (dt) {
	case CKPT_BOOL: ST(uint8_t, u != 0); break;
	case CKPT_U8: case CKPT_I8: ST(uint8_t, u); break;
	case CKPT_U16: case CKPT_I16: ST(uint16_t, u); break;
	case CKPT_U32: case CKPT_I32: ST(uint32_t, u); break;
	case CKPT_U64: case CKPT_I64: ST(uint64_t, u); break;
	default: break;
	}
}
#undef ST

/* Float to integer: truncate, saturate, NaN -> 0. */
static uint64_t
f_to_int(ckpt_dtype to, double d)
{
	unsigned bits = (unsigned)ckpt_dtype_size(to) * 8;

	if (isnan(d))
		return 0;
	if (to == CKPT_BOOL)
		return d != 0;
	if (is_unsigned(to)) {
		double max = ldexp(1.0, (int)bits);
		if (d <= 0)
			return 0;
		if (d >= max)
			return bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
		return (uint64_t)d;
	} else {
		double lim = ldexp(1.0, (int)bits - 1);
		if (d >= lim)
			return (uint64_t)(bits == 64 ? INT64_MAX :
			    (int64_t)((1ull << (bits - 1)) - 1));
		if (d < -lim)
			return (uint64_t)(bits == 64 ? INT64_MIN :
			    -(int64_t)(1ull << (bits - 1)));
		return (uint64_t)(int64_t)d;
	}
}

int
dtype_cast(ckpt_dtype from, const void *src, ckpt_dtype to, void *dst,
    size_t n)
{
	size_t i;

	if (!dtype_can_cast(from, to))
		return CKPT_EDTYPE;
	if (from == to) {
		if (n != 0)
			memcpy(dst, src, n * ckpt_dtype_size(from));
		return 0;
	}
	/* common fast paths */
	if (from == CKPT_F32 && to == CKPT_F16) {
		const float *s = src;
		uint16_t *d = dst;
		for (i = 0; i < n; i++)
			d[i] = f32_to_f16(s[i]);
		return 0;
	}
	if (from == CKPT_F16 && to == CKPT_F32) {
		const uint16_t *s = src;
		float *d = dst;
		for (i = 0; i < n; i++)
			d[i] = f16_to_f32(s[i]);
		return 0;
	}
	if (from == CKPT_F32 && to == CKPT_BF16) {
		const float *s = src;
		uint16_t *d = dst;
		for (i = 0; i < n; i++)
			d[i] = f32_to_bf16(s[i]);
		return 0;
	}
	if (from == CKPT_BF16 && to == CKPT_F32) {
		const uint16_t *s = src;
		float *d = dst;
		for (i = 0; i < n; i++)
			d[i] = bf16_to_f32(s[i]);
		return 0;
	}
	if (dtype_is_float(to)) {
		if (is_unsigned(from) || dtype_is_float(from)) {
			for (i = 0; i < n; i++)
				store_f(to, dst, i, load_f(from, src, i));
		} else {
			for (i = 0; i < n; i++)
				store_f(to, dst, i,
				    (double)(int64_t)load_u(from, src, i));
		}
	} else if (dtype_is_float(from)) {
		for (i = 0; i < n; i++)
			store_u(to, dst, i, f_to_int(to, load_f(from, src, i)));
	} else {
		for (i = 0; i < n; i++)
			store_u(to, dst, i, load_u(from, src, i));
	}
	return 0;
}
