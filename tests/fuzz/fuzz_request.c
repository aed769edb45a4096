/*
 * fuzz_request.c - libFuzzer target: one request frame body as the daemon
 * decodes it (conn.c): protobuf unpack, the string check on the packed
 * bytes (wirecheck), then what validates each operation without I/O: a
 * Save against a staging buffer size (savecheck; an accepted layout is
 * re-checked independently), an OpenManager's policies (policy_compile,
 * then a few decisions), Restore's item list (fuzz_decode in fuzz.c).
 *
 * Input: byte 0 picks the staging buffer size, the rest is the body.
 */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size - 1 > CKPT_MAX_FRAME)
		return 0;
	fuzz_decode(data + 1, size - 1, fuzz_memsize(data[0]));
	return 0;
}
