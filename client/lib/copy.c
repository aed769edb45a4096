/*
 * copy.c - copies with streaming (non-temporal) stores: the destination
 * lines are neither read for ownership nor kept in cache. For copies far
 * larger than the cache (a save's arrays into staging, which the daemon
 * reads from another core; a restore's arrays out of a file mapping) this
 * moves about twice the bytes per second of memcpy on the machines
 * measured, whose ordinary stores first read each destination line. The
 * caller orders the stores (copy_nt_fence) before another thread may read
 * the destination.
 *
 * The destination is first brought to a cache line boundary, so that the
 * streaming stores of each line combine (about 10% faster than from 16
 * bytes, measured from a file mapping into a buffer 16 bytes past a page,
 * as numpy's are); with AVX2 the stores are 32 bytes wide (another 5-10%).
 */
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define COPY_NT_AVX2 1
#endif
#endif

#include "internal.h"

#ifdef COPY_NT_AVX2
/* The whole 128-byte blocks of copy_nt_lines; returns the bytes copied. */
__attribute__((target("avx2"))) static size_t
copy_nt_avx2(char *dst, const char *src, size_t n, const char *pf)
{
	size_t i;

	for (i = 0; i + 128 <= n; i += 128) {
		__m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
		__m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
		__m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
		__m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));

		if (pf != NULL) {
			_mm_prefetch(pf + i, _MM_HINT_T0);
			_mm_prefetch(pf + i + 64, _MM_HINT_T0);
		}
		_mm256_stream_si256((__m256i *)(dst + i), a);
		_mm256_stream_si256((__m256i *)(dst + i + 32), b);
		_mm256_stream_si256((__m256i *)(dst + i + 64), c);
		_mm256_stream_si256((__m256i *)(dst + i + 96), d);
	}
	return i;
}
#endif

#ifdef __SSE2__
/* Copy n bytes; with pf, also prefetch pf[0, n) into cache (a range read
 * next, so that its loads overlap these stores). */
static void
copy_nt_lines(char *dst, const char *src, size_t n, const char *pf)
{
	size_t i = 0, head = (64 - ((uintptr_t)dst & 63)) & 63;

	if (head > n)
		head = n;
	if (head > 0) {
		memcpy(dst, src, head);
		i = head;
	}
#ifdef COPY_NT_AVX2
	if (__builtin_cpu_supports("avx2"))
		i += copy_nt_avx2(dst + i, src + i, n - i, pf != NULL ?
		    pf + i : NULL);
#endif
	for (; i + 64 <= n; i += 64) {
		__m128i a = _mm_loadu_si128((const __m128i *)(src + i));
		__m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
		__m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
		__m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));

		if (pf != NULL)
			_mm_prefetch(pf + i, _MM_HINT_T0);
		_mm_stream_si128((__m128i *)(dst + i), a);
		_mm_stream_si128((__m128i *)(dst + i + 16), b);
		_mm_stream_si128((__m128i *)(dst + i + 32), c);
		_mm_stream_si128((__m128i *)(dst + i + 48), d);
	}
	if (i < n)
		memcpy(dst + i, src + i, n - i);
}
#endif

void
copy_nt(void *dst, const void *src, size_t n)
{
#ifdef __SSE2__
	if (n >= COPY_NT_MIN) {
		copy_nt_lines(dst, src, n, NULL);
		return;
	}
#endif
	memcpy(dst, src, n);
}

void
copy_nt_ahead(void *dst, const void *src, size_t n, const void *next)
{
#ifdef __SSE2__
	copy_nt_lines(dst, src, n, next);
#else
	(void)next;
	memcpy(dst, src, n);
#endif
}

void
copy_nt_fence(void)
{
#ifdef __SSE2__
	_mm_sfence();
#endif
}
