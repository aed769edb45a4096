/*
 * raw.c - frames packed by hand on a raw connection (see raw.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ckpt_limits.h"
#include "harness.h"
#include "raw.h"

/* The most fds one sendmsg may carry (SCM_MAX_FD of Linux). */
#define RAW_MAX_FDS 253

int
raw_connect(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, saved;

	if (strlen(sock) >= sizeof sa.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int
raw_send(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * RAW_MAX_FDS)];
	} cm;
	struct iovec iov = { (void *)buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t r;

	if (nfds < 0 || nfds > RAW_MAX_FDS)
		bail_out("raw_send: %d fds", nfds);
	if (nfds > 0) {
		memset(&cm, 0, sizeof cm);
		msg.msg_control = cm.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm.h.cmsg_level = SOL_SOCKET;
		cm.h.cmsg_type = SCM_RIGHTS;
		cm.h.cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(&cm.h), fds, sizeof(int) * (size_t)nfds);
	}
	while (iov.iov_len > 0) {
		r = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		iov.iov_base = (char *)iov.iov_base + r;
		iov.iov_len -= (size_t)r;
		msg.msg_control = NULL;
		msg.msg_controllen = 0;
	}
	return 0;
}

static void
raw_put_len(unsigned char *hdr, uint32_t len)
{
	hdr[0] = (unsigned char)(len >> 24);
	hdr[1] = (unsigned char)(len >> 16);
	hdr[2] = (unsigned char)(len >> 8);
	hdr[3] = (unsigned char)len;
}

int
raw_send_len(int fd, uint32_t len, const void *body, size_t blen)
{
	unsigned char *buf;
	int r;

	if ((buf = malloc(4 + blen)) == NULL)
		bail_out("out of memory");
	raw_put_len(buf, len);
	if (blen > 0)
		memcpy(buf + 4, body, blen);
	r = raw_send(fd, buf, 4 + blen, NULL, 0);
	free(buf);
	return r;
}

unsigned char *
raw_pack(const Ckpt__Request *req, size_t *len)
{
	size_t n = ckpt__request__get_packed_size(req);
	unsigned char *buf;

	if (n > UINT32_MAX || (buf = malloc(4 + n)) == NULL)
		bail_out("raw_pack: %zu bytes", n);
	raw_put_len(buf, (uint32_t)n);
	ckpt__request__pack(req, buf + 4);
	*len = 4 + n;
	return buf;
}

int
raw_send_req(int fd, const Ckpt__Request *req, const int *fds, int nfds)
{
	unsigned char *buf;
	size_t len;
	int r;

	buf = raw_pack(req, &len);
	r = raw_send(fd, buf, len, fds, nfds);
	free(buf);
	return r;
}

int
raw_read(int fd, void *buf, size_t n, int timeout_ms)
{
	int64_t end = hx_now_ms() + timeout_ms;
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		struct pollfd p = { fd, POLLIN, 0 };
		int64_t left = end - hx_now_ms();

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -1;
		r = recv(fd, (char *)buf + got, n - got, MSG_CMSG_CLOEXEC);
		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno == ECONNRESET ? 0 : -1;
		}
		got += (size_t)r;
	}
	return 1;
}

/* One frame's body: 1 (*body malloc'ed, *len), 0 on EOF, -1 otherwise. */
static int
raw_frame(int fd, int timeout_ms, unsigned char **body, uint32_t *len)
{
	unsigned char hdr[4];
	int r;

	*body = NULL;
	if ((r = raw_read(fd, hdr, 4, timeout_ms)) != 1)
		return r;
	*len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
	    (uint32_t)hdr[2] << 8 | hdr[3];
	if (*len == 0 || *len > CKPT_MAX_FRAME ||
	    (*body = malloc(*len)) == NULL)
		return -1;
	if ((r = raw_read(fd, *body, *len, timeout_ms)) != 1) {
		free(*body);
		*body = NULL;
		return r;
	}
	return 1;
}

Ckpt__Response *
raw_next(int fd, int timeout_ms)
{
	Ckpt__Response *resp;
	unsigned char *body;
	uint32_t len;

	if (raw_frame(fd, timeout_ms, &body, &len) != 1)
		return NULL;
	resp = ckpt__response__unpack(NULL, len, body);
	free(body);
	return resp;
}

Ckpt__Response *
raw_recv(int fd, uint64_t id, int timeout_ms)
{
	int64_t end = hx_now_ms() + timeout_ms;
	Ckpt__Response *resp;

	for (;;) {
		if ((resp = raw_next(fd, (int)(end - hx_now_ms()))) == NULL)
			return NULL;
		if (id == 0 ? resp->id != 0 : resp->id == id)
			return resp;
		ckpt__response__free_unpacked(resp, NULL);
	}
}

int
raw_closed(int fd, int timeout_ms, int *code)
{
	int64_t end = hx_now_ms() + timeout_ms;
	Ckpt__Response *resp;
	unsigned char *body;
	uint32_t len;
	int r;

	while (hx_now_ms() < end) {
		r = raw_frame(fd, (int)(end - hx_now_ms()), &body, &len);
		if (r == 0)
			return 1;
		if (r < 0)
			return 0;
		if (code != NULL &&
		    (resp = ckpt__response__unpack(NULL, len, body)) != NULL) {
			*code = resp->code;
			ckpt__response__free_unpacked(resp, NULL);
		}
		free(body);
	}
	return 0;
}

int
raw_call(int fd, const Ckpt__Request *req, const int *fds, int nfds,
    int timeout_ms, Ckpt__Response **out)
{
	Ckpt__Response *resp = NULL;
	int code = INT32_MIN;

	if (raw_send_req(fd, req, fds, nfds) == 0 &&
	    (resp = raw_recv(fd, req->id, timeout_ms)) != NULL)
		code = resp->code;
	if (out != NULL)
		*out = resp;
	else if (resp != NULL)
		ckpt__response__free_unpacked(resp, NULL);
	return code;
}

int
raw_hello(int fd, uint32_t version, uint64_t id)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Hello h = CKPT__HELLO__INIT;

	h.has_version = 1;
	h.version = version;
	h.client = "raw-frame test";
	req.has_id = 1;
	req.id = id;
	req.op_case = CKPT__REQUEST__OP_HELLO;
	req.hello = &h;
	return raw_send_req(fd, &req, NULL, 0);
}

int
raw_greeted(const char *sock)
{
	Ckpt__Response *resp;
	int fd;

	if ((fd = raw_connect(sock)) < 0)
		return -1;
	if (raw_hello(fd, CKPT__VERSION__PROTOCOL_VERSION, 1) != 0 ||
	    (resp = raw_recv(fd, 1, 10000)) == NULL) {
		close(fd);
		return -1;
	}
	if (resp->code != 0) {
		diag("hello refused: %d %s", resp->code,
		    resp->message ? resp->message : "");
		ckpt__response__free_unpacked(resp, NULL);
		close(fd);
		return -1;
	}
	ckpt__response__free_unpacked(resp, NULL);
	return fd;
}

int
raw_ping(int fd, uint64_t id, const int *fds, int nfds)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Ping p = CKPT__PING__INIT;
	Ckpt__Response *resp;
	int code;

	req.has_id = 1;
	req.id = id;
	req.op_case = CKPT__REQUEST__OP_PING;
	req.ping = &p;
	if (raw_send_req(fd, &req, fds, nfds) != 0 ||
	    (resp = raw_recv(fd, 0, 10000)) == NULL)
		return INT32_MIN;
	code = resp->id == id ? resp->code : INT32_MIN + 1;
	ckpt__response__free_unpacked(resp, NULL);
	return code;
}

uint64_t
raw_open(int fd, const char *path, const char *prefix, int *code)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__OpenManager om = CKPT__OPEN_MANAGER__INIT;
	Ckpt__ManagerOptions o = CKPT__MANAGER_OPTIONS__INIT;
	Ckpt__Response *resp;
	uint64_t id = 0;
	int rc;

	om.root = (char *)path;
	if (prefix != NULL) {
		o.step_prefix = (char *)prefix;
		om.options = &o;
	}
	req.has_id = 1;
	req.id = 2;
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = &om;
	rc = raw_call(fd, &req, NULL, 0, 30000, &resp);
	if (code != NULL)
		*code = rc;
	if (rc == 0 &&
	    resp->body_case == CKPT__RESPONSE__BODY_OPEN_MANAGER)
		id = resp->open_manager->manager;
	else if (resp != NULL)
		diag("open_manager(%s): %d %s", path, resp->code,
		    resp->message ? resp->message : "");
	if (resp != NULL)
		ckpt__response__free_unpacked(resp, NULL);
	return id;
}
