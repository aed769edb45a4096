/*
 * fuzz.h - what the libFuzzer targets share: a reader of fuzz bytes as
 * parameters (counts, sizes and offsets drawn from boundary values or
 * raw), and an independent check of an accepted Save request's layout.
 */
#ifndef CKPT_FUZZ_H
#define CKPT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "savecheck.h"
#include "store.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fuzz_fail(#c, __FILE__, __LINE__); } } while (0)

void fuzz_fail(const char *what, const char *file, int line)
    __attribute__((noreturn));

/* Fuzz bytes consumed front to back; zeros once exhausted. */
struct fz {
	const uint8_t *p;
	size_t n;
};

uint8_t fz_u8(struct fz *f);
/* A size, offset or dimension: one of the boundary values (0, 1, 2^46,
 * 2^63, UINT64_MAX...), a small number or 8 raw bytes. */
uint64_t fz_value(struct fz *f);
/* A count: boundary counts around the wire's limits, or a small number. */
size_t fz_count(struct fz *f);

/* sv was accepted by savecheck_request against memsize: recompute, without
 * the daemon's code, that every array fits, that they add up to at most
 * memsize, that none overlap, and that savecheck_count agrees. Aborts
 * otherwise. */
void fuzz_check_layout(const Ckpt__Save *sv, uint64_t memsize);

/* The staging buffer size a selector byte stands for (0, 64 ... 2^46,
 * UINT64_MAX). */
uint64_t fuzz_memsize(uint8_t sel);
/* One frame body through the daemon's decoding and validation (unpack,
 * wirecheck, savecheck or policy_compile); aborts on a broken invariant. */
void fuzz_decode(const uint8_t *body, size_t len, uint64_t memsize);

#endif
