/*
 * fuzz_frame.c - libFuzzer target: a byte stream from a peer, read by the
 * daemon's frame reader (frame.c: length prefix, bounds, buffer growth)
 * over a real socketpair, and each complete frame decoded and validated
 * as in fuzz_request.
 *
 * Input: byte 0 picks the staging buffer size for saves, the rest is the
 * stream (at most 64 KiB, so that it fits in the socket buffer).
 */
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_in in;
	uint64_t memsize;
	int sv[2], frames = 0;
	ckd_err e;

	if (size < 1 || size > 65536)
		return 0;
	memsize = fuzz_memsize(data[0]);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	if (size > 1)
		FUZZ_ASSERT(write(sv[0], data + 1, size - 1) ==
		    (ssize_t)(size - 1));
	close(sv[0]);
	frame_in_init(&in);
	for (;;) {
		int r;

		memset(&e, 0, sizeof e);
		r = frame_read(&in, sv[1], &e);
		FUZZ_ASSERT(r != FRAME_AGAIN);  /* the writer is closed */
		if (r == FRAME_EOF)
			break;
		if (r < 0) {
			FUZZ_ASSERT(e.msg[0] != '\0');
			break;
		}
		FUZZ_ASSERT(r == FRAME_DONE && in.len >= 1 &&
		    in.len <= CKPT_MAX_FRAME && in.got == in.len);
		fuzz_decode(in.buf, in.len, memsize);
		frame_in_reset(&in);
		frames++;
	}
	frame_in_free(&in);
	close(sv[1]);
	return 0;
}
