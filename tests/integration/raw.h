/*
 * raw.h - frames packed by hand on a raw connection to a test daemon:
 * a 4-byte big-endian length and a protobuf Request built with the
 * generated code, fds as SCM_RIGHTS on the first byte. For the tests that
 * play a broken or hostile peer, where libckpt would refuse to (or could
 * not) send what they send.
 *
 * Timeouts are in milliseconds. Replies with id 0 (events such as
 * SaveDone) are skipped by every reader but raw_next.
 */
#ifndef CKPT_TEST_RAW_H
#define CKPT_TEST_RAW_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.pb-c.h"

/* A connection to the Unix socket sock; -1 (errno set) on failure. */
int raw_connect(const char *sock);
/* Send len bytes of buf with nfds fds (up to 253) on the first byte.
 * 0, or -1 when sendmsg fails. */
int raw_send(int fd, const void *buf, size_t len, const int *fds, int nfds);
/* A header announcing len bytes followed by blen bytes of body (a frame
 * that lies about its length when len != blen). */
int raw_send_len(int fd, uint32_t len, const void *body, size_t blen);
/* req packed as one frame: malloc'ed, *len counts the header. */
unsigned char *raw_pack(const Ckpt__Request *req, size_t *len);
int raw_send_req(int fd, const Ckpt__Request *req, const int *fds,
    int nfds);
/* Read exactly n bytes: 1, 0 on EOF (or a reset), -1 on error or
 * timeout. */
int raw_read(int fd, void *buf, size_t n, int timeout_ms);
/* The next frame, an event (id 0) or a reply; NULL on EOF, timeout or a
 * frame that does not decode. */
Ckpt__Response *raw_next(int fd, int timeout_ms);
/* The next reply whose id is id (id 0: any nonzero id); NULL on EOF,
 * timeout or a frame that does not decode. */
Ckpt__Response *raw_recv(int fd, uint64_t id, int timeout_ms);
/* 1 when the daemon closes the connection within timeout_ms; replies
 * before the close are read, *code (when not NULL) gets the last one's. */
int raw_closed(int fd, int timeout_ms, int *code);
/* Send req and read its reply: the reply's code, or INT32_MIN when none
 * came. *out (when not NULL) gets the reply (NULL without one). */
int raw_call(int fd, const Ckpt__Request *req, const int *fds, int nfds,
    int timeout_ms, Ckpt__Response **out);
/* Send a hello offering version only, as request id (the reply is not
 * read). */
int raw_hello(int fd, uint32_t version, uint64_t id);
/* Connect to sock and exchange a good hello; -1 when refused (diag). */
int raw_greeted(const char *sock);
/* Ping with nfds fds attached: the reply's code, INT32_MIN without a
 * reply, INT32_MIN + 1 when a reply to another id came. */
int raw_ping(int fd, uint64_t id, const int *fds, int nfds);
/* OpenManager on path (prefix: step_prefix, or NULL): the manager id, or
 * 0 (diag); *code (when not NULL) gets the reply's code (INT32_MIN: no
 * reply). */
uint64_t raw_open(int fd, const char *path, const char *prefix, int *code);

#endif
