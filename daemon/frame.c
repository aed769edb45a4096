/*
 * frame.c - reading and writing frames with attached fds (see frame.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "frame.h"

#define FRAME_MIN_BUF 4096
/* Buffers above this size are freed between frames. */
#define FRAME_KEEP_BUF (64 * 1024)

void
frame_in_init(struct frame_in *f)
{
	memset(f, 0, sizeof *f);
}

int
frame_in_started(const struct frame_in *f)
{
	return f->hdr_got > 0;
}

void
frame_in_reset(struct frame_in *f)
{
	size_t i;

	for (i = 0; i < f->nfds; i++)
		close(f->fds[i]);
	f->nfds = 0;
	f->fds_dropped = 0;
	f->hdr_got = 0;
	f->len = 0;
	f->got = 0;
	if (f->cap > FRAME_KEEP_BUF) {
		free(f->buf);
		f->buf = NULL;
		f->cap = 0;
	}
}

void
frame_in_free(struct frame_in *f)
{
	frame_in_reset(f);
	free(f->buf);
	f->buf = NULL;
	f->cap = 0;
}

/* Keep the fds of every SCM_RIGHTS message, up to CKPT_MAX_FDS per frame;
 * close the rest. */
static void
frame_collect_fds(struct frame_in *f, struct msghdr *msg)
{
	struct cmsghdr *cm;

	for (cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
		size_t n, i;
		int *p;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		p = (int *)(void *)CMSG_DATA(cm);
		for (i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, p + i, sizeof fd);
			if (f->nfds < CKPT_MAX_FDS) {
				f->fds[f->nfds++] = fd;
			} else {
				close(fd);
				f->fds_dropped++;
			}
		}
	}
}

int
frame_read(struct frame_in *f, int fd, ckd_err *e)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * CKPT_MAX_FDS)];
	} cbuf;

	for (;;) {
		struct iovec iov;
		struct msghdr msg;
		ssize_t n;

		if (f->hdr_got == 4 && f->got == f->len)
			return FRAME_DONE;
		if (f->hdr_got < 4) {
			iov.iov_base = f->hdr + f->hdr_got;
			iov.iov_len = 4 - f->hdr_got;
		} else {
			if (f->got == f->cap) {
				size_t ncap = f->cap < FRAME_MIN_BUF ?
				    FRAME_MIN_BUF : f->cap * 2;
				uint8_t *nb;

				if (ncap > f->len)
					ncap = f->len;
				if ((nb = realloc(f->buf, ncap)) == NULL)
					return err_set(e, CKPT_ENOMEM,
					    "no memory for a %zu byte frame "
					    "buffer", ncap);
				f->buf = nb;
				f->cap = ncap;
			}
			iov.iov_base = f->buf + f->got;
			iov.iov_len = (f->len < f->cap ? f->len : f->cap) -
			    f->got;
		}
		memset(&msg, 0, sizeof msg);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = sizeof cbuf.buf;

		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return FRAME_AGAIN;
			return err_errno(e, errno, "recvmsg");
		}
		if (msg.msg_controllen > 0)
			frame_collect_fds(f, &msg);
		if (msg.msg_flags & MSG_CTRUNC)
			return err_set(e, CKPT_EPROTO,
			    "too many file descriptors on one frame "
			    "(at most %d)", CKPT_MAX_FDS);
		if (n == 0) {
			if (!frame_in_started(f) && f->nfds == 0)
				return FRAME_EOF;
			return err_set(e, CKPT_ECONN,
			    "peer closed the connection in the middle of a "
			    "frame");
		}
		if (f->hdr_got < 4) {
			f->hdr_got += (size_t)n;
			if (f->hdr_got == 4) {
				f->len = (uint32_t)f->hdr[0] << 24 |
				    (uint32_t)f->hdr[1] << 16 |
				    (uint32_t)f->hdr[2] << 8 | f->hdr[3];
				if (f->len == 0)
					return err_set(e, CKPT_EPROTO,
					    "zero-length frame");
				if (f->len > CKPT_MAX_FRAME)
					return err_set(e, CKPT_ETOOBIG,
					    "frame of %u bytes exceeds the "
					    "maximum of %u", f->len,
					    CKPT_MAX_FRAME);
			}
		} else {
			f->got += (size_t)n;
		}
	}
}

int
frame_out_new(const ProtobufCMessage *msg, const int *fds, size_t nfds,
    struct frame_out **out, ckd_err *e)
{
	struct frame_out *o;
	size_t size, mem;

	*out = NULL;
	if (nfds > CKPT_MAX_FDS)
		return err_set(e, CKPT_ETOOBIG,
		    "%zu file descriptors in one reply (at most %d)", nfds,
		    CKPT_MAX_FDS);
	size = protobuf_c_message_get_packed_size(msg);
	if (size == 0 || size > CKPT_MAX_FRAME) {
		/* An empty Response cannot happen (id is always present);
		 * treat 0 like an oversized one: it cannot be framed. */
		return err_set(e, CKPT_ETOOBIG,
		    "reply of %zu bytes exceeds the frame maximum of %u",
		    size, CKPT_MAX_FRAME);
	}
	mem = sizeof *o + nfds * sizeof(int) + 4 + size;
	if ((o = malloc(mem)) == NULL)
		return err_set(e, CKPT_ENOMEM, "no memory for a %zu byte reply",
		    size);
	o->next = NULL;
	o->len = 4 + size;
	o->off = 0;
	o->nfds = nfds;
	o->mem = mem;
	o->data = (uint8_t *)(o->fds + nfds);
	if (nfds > 0)
		memcpy(o->fds, fds, nfds * sizeof(int));
	o->data[0] = (uint8_t)(size >> 24);
	o->data[1] = (uint8_t)(size >> 16);
	o->data[2] = (uint8_t)(size >> 8);
	o->data[3] = (uint8_t)size;
	protobuf_c_message_pack(msg, o->data + 4);
	*out = o;
	return 0;
}

int
frame_out_send(struct frame_out *o, int fd, ckd_err *e)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * CKPT_MAX_FDS)];
	} cbuf;

	while (o->off < o->len) {
		struct iovec iov = {
			.iov_base = o->data + o->off,
			.iov_len = o->len - o->off,
		};
		struct msghdr msg;
		ssize_t n;
		size_t i;

		memset(&msg, 0, sizeof msg);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		if (o->nfds > 0) {
			struct cmsghdr *cm;

			memset(cbuf.buf, 0, sizeof cbuf.buf);
			msg.msg_control = cbuf.buf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * o->nfds);
			cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * o->nfds);
			memcpy(CMSG_DATA(cm), o->fds, sizeof(int) * o->nfds);
		}
		n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return FRAME_AGAIN;
			return err_errno(e, errno, "sendmsg");
		}
		/* The fds went with the first byte: our copies are done. */
		for (i = 0; i < o->nfds; i++)
			close(o->fds[i]);
		o->nfds = 0;
		o->off += (size_t)n;
	}
	return 1;
}

void
frame_out_free(struct frame_out *o)
{
	size_t i;

	if (o == NULL)
		return;
	for (i = 0; i < o->nfds; i++)
		close(o->fds[i]);
	free(o);
}
