/*
 * wire.c - frames on the client side.
 *
 * frame = uint32 length (big-endian) + one packed Request/Response.
 * File descriptors ride as SCM_RIGHTS on the first byte of the frame.
 * The reader consumes exactly one frame's bytes at a time, so every fd it
 * receives belongs to the frame being read.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

int
wire_send(int fd, const ProtobufCMessage *msg, const int *fds, size_t nfds,
    char *err, size_t errlen)
{
	size_t len = protobuf_c_message_get_packed_size(msg), off = 0;
	uint8_t *buf;
	uint32_t be;
	int first = 1, r = 0;

	if (len == 0 || len > CKPT_MAX_FRAME) {
		snprintf(err, errlen, "request of %zu bytes exceeds the frame "
		    "limit of %u bytes", len, CKPT_MAX_FRAME);
		return CKPT_ETOOBIG;
	}
	if (nfds > CKPT_MAX_FDS) {
		snprintf(err, errlen, "too many file descriptors in one frame");
		return CKPT_EINVAL;
	}
	if ((buf = malloc(len + 4)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return CKPT_ENOMEM;
	}
	be = htonl((uint32_t)len);
	memcpy(buf, &be, 4);
	protobuf_c_message_pack(msg, buf + 4);
	len += 4;
	while (off < len) {
		struct msghdr mh = { 0 };
		struct iovec iov = { buf + off, len - off };
		union {
			char b[CMSG_SPACE(sizeof(int) * CKPT_MAX_FDS)];
			struct cmsghdr align;
		} cm;
		ssize_t n;

		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (first && nfds > 0) {
			struct cmsghdr *ch;
			memset(&cm, 0, sizeof cm);
			mh.msg_control = cm.b;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			ch = CMSG_FIRSTHDR(&mh);
			ch->cmsg_level = SOL_SOCKET;
			ch->cmsg_type = SCM_RIGHTS;
			ch->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(ch), fds, sizeof(int) * nfds);
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				snprintf(err, errlen, "ckptd did not take the "
				    "request in time");
				r = CKPT_ECONN;
				break;
			}
			snprintf(err, errlen, "cannot send to ckptd: %s",
			    strerror(errno));
			r = CKPT_ECONN;
			break;
		}
		first = 0;
		off += (size_t)n;
	}
	free(buf);
	return r;
}

static void
close_fds(int *fds, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		close(fds[i]);
}

/* Read exactly len bytes, collecting fds. */
static int
read_full(int fd, void *p, size_t len, int *fds, size_t *nfds, int *lost,
    char *err, size_t errlen)
{
	size_t off = 0;

	while (off < len) {
		struct msghdr mh = { 0 };
		struct iovec iov = { (char *)p + off, len - off };
		union {
			char b[CMSG_SPACE(sizeof(int) * CKPT_MAX_FDS)];
			struct cmsghdr align;
		} cm;
		struct cmsghdr *ch;
		ssize_t n;

		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cm.b;
		mh.msg_controllen = sizeof cm.b;
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* a timeout set while the connection is set up */
				snprintf(err, errlen, "ckptd did not answer in time");
				return CKPT_ECONN;
			}
			snprintf(err, errlen, "connection to ckptd lost: %s",
			    strerror(errno));
			return CKPT_ECONN;
		}
		for (ch = CMSG_FIRSTHDR(&mh); ch != NULL; ch = CMSG_NXTHDR(&mh, ch)) {
			size_t k, cnt;
			int *in;
			if (ch->cmsg_level != SOL_SOCKET || ch->cmsg_type != SCM_RIGHTS)
				continue;
			cnt = (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			in = (int *)CMSG_DATA(ch);
			for (k = 0; k < cnt; k++) {
				int v;
				memcpy(&v, in + k, sizeof v);
				if (*nfds < CKPT_MAX_FDS) {
					fds[(*nfds)++] = v;
				} else {
					close(v);
					*lost = 1;
				}
			}
		}
		if (mh.msg_flags & MSG_CTRUNC)
			*lost = 1;
		if (n == 0) {
			snprintf(err, errlen, "connection to ckptd closed");
			return CKPT_ECONN;
		}
		off += (size_t)n;
	}
	return 0;
}

int
wire_recv(int fd, Ckpt__Response **resp, int *fds, size_t *nfds, char *err,
    size_t errlen)
{
	uint8_t hdr[4], *buf;
	uint32_t len;
	int lost = 0, r;

	*resp = NULL;
	*nfds = 0;
	if ((r = read_full(fd, hdr, 4, fds, nfds, &lost, err, errlen)) != 0)
		goto fail;
	memcpy(&len, hdr, 4);
	len = ntohl(len);
	if (len == 0 || len > CKPT_MAX_FRAME) {
		snprintf(err, errlen, "ckptd sent a frame of invalid length %u", len);
		r = CKPT_EPROTO;
		goto fail;
	}
	if ((buf = malloc(len)) == NULL) {
		snprintf(err, errlen, "out of memory");
		r = CKPT_ENOMEM;
		goto fail;
	}
	r = read_full(fd, buf, len, fds, nfds, &lost, err, errlen);
	if (r == 0) {
		*resp = ckpt__response__unpack(NULL, len, buf);
		if (*resp == NULL) {
			snprintf(err, errlen, "ckptd sent a malformed response");
			r = CKPT_EPROTO;
		}
	}
	free(buf);
	if (r != 0)
		goto fail;
	if (lost) {
		/* fds were dropped (limit reached): fail this response only */
		char *m = strdup("file descriptors of the response were lost "
		    "(too many open files?)");
		close_fds(fds, *nfds);
		*nfds = 0;
		if (m != NULL) {
			free((*resp)->message);
			(*resp)->message = m;
		}
		(*resp)->has_code = 1;
		(*resp)->code = CKPT_EIO;
	}
	return 0;
fail:
	close_fds(fds, *nfds);
	*nfds = 0;
	return r;
}
