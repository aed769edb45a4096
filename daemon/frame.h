/*
 * frame.h - the wire framing shared by every connection.
 *
 *   frame = uint32 length (big-endian) + `length` bytes of one protobuf
 *           message; 1 <= length <= CKPT_MAX_FRAME.
 *
 * File descriptors travel as SCM_RIGHTS on the first byte of the frame that
 * names them. The reader never asks the kernel for more than the rest of the
 * current frame (first the 4-byte header, then the body), so one recvmsg()
 * never spans two frames and every fd received belongs to the frame being
 * read. The body buffer grows with the bytes actually received (doubling,
 * starting at 4 KiB), never to the announced length up front.
 *
 * frame_read() returns FRAME_AGAIN ("need more"), FRAME_DONE ("one frame is
 * complete in buf[0..len) with fds[0..nfds)"), FRAME_EOF (orderly close
 * between frames) or a negative CKPT_E* code (the connection must close).
 */
#ifndef CKPTD_FRAME_H
#define CKPTD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common.h"

enum {
	FRAME_AGAIN = 0,
	FRAME_DONE = 1,
	FRAME_EOF = 2,
};

struct frame_in {
	uint8_t hdr[4];
	size_t hdr_got;
	uint32_t len;                /* body length, valid once hdr_got == 4 */
	uint8_t *buf;
	size_t cap, got;
	int fds[CKPT_MAX_FDS];
	size_t nfds;
	size_t fds_dropped;          /* extra fds closed on receipt */
};

void frame_in_init(struct frame_in *f);
int frame_read(struct frame_in *f, int fd, ckd_err *e);
/* 1 when part of a frame has been received. */
int frame_in_started(const struct frame_in *f);
/* Forget the completed frame (its fds must have been taken: nfds = 0). The
 * buffer is kept for the next frame when small. */
void frame_in_reset(struct frame_in *f);
/* Release everything, closing fds not taken. */
void frame_in_free(struct frame_in *f);

/* One packed outgoing frame and the fds that go with it. */
struct frame_out {
	struct frame_out *next;
	size_t len, off;             /* bytes in data (header included), sent */
	size_t nfds;                 /* fds still owned (closed once sent) */
	size_t mem;                  /* bytes allocated for this frame */
	uint8_t *data;               /* after fds[], in the same allocation */
	int fds[];
};

/* Pack msg into a new frame. On success the frame owns fds[0..nfds) (the
 * numbers are copied); on failure nothing is taken. Errors: CKPT_ETOOBIG
 * (packed size > CKPT_MAX_FRAME or nfds > CKPT_MAX_FDS), CKPT_ENOMEM. */
int frame_out_new(const ProtobufCMessage *msg, const int *fds, size_t nfds,
    struct frame_out **out, ckd_err *e);
/* Send as much as the socket takes: 1 when the frame is fully sent,
 * FRAME_AGAIN when the socket is full, negative CKPT_E* on error. */
int frame_out_send(struct frame_out *o, int fd, ckd_err *e);
/* Free, closing fds not yet sent. */
void frame_out_free(struct frame_out *o);

#endif
