/*
 * conn.h - client connections: framing, fd passing, peer identity, replies.
 *
 * A connection is owned by the event-loop thread. It reads frames (4-byte
 * big-endian length, checked against CKPT_MAX_FRAME before any allocation;
 * the buffer grows with the bytes actually received), collects SCM_RIGHTS
 * fds, unpacks one Ckpt__Request and hands it to dispatch(). Replies are
 * queued and written when the socket is writable. A protocol error closes
 * this connection only.
 *
 * Lifetime: objects that outlive a request (a save in progress, a waiter)
 * hold a reference (conn_ref/conn_unref). After the peer goes away the
 * conn is "dead": conn_reply() on it is a silent no-op, and the memory is
 * freed when the last reference is dropped.
 */
#ifndef CKPTD_CONN_H
#define CKPTD_CONN_H

#include <sys/types.h>
#include <stdint.h>
#include <stddef.h>

#include "common.h"
#include "ckpt.pb-c.h"

struct event_base;

/* Identity of the peer, from SO_PEERCRED and SO_PEERGROUPS. */
struct peer_cred {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int ngroups;
	gid_t groups[64];
};

struct conn;

/* Start accepting on listening socket fd (nonblocking, CLOEXEC). */
int conn_listen(struct event_base *base, int fd, ckd_err *e);
/* Stop accepting (drain on SIGTERM). */
void conn_stop_listening(void);
/* Number of live connections. */
unsigned conn_count(void);
/* Close every connection (shutdown). */
void conn_close_all(void);

void conn_ref(struct conn *c);
void conn_unref(struct conn *c);
int conn_alive(const struct conn *c);
const struct peer_cred *conn_peer(const struct conn *c);
uint64_t conn_id(const struct conn *c);

/* Queue a response. The Response is packed immediately (the caller keeps
 * ownership of resp). Ownership of fds[0..nfds) passes to the conn, which closes them after sending (or on error / dead
 * conn). Returns 0, or a negative code when packing failed (the conn then
 * sends an CKPT_EINTERNAL error reply for resp->id instead). */
int conn_reply(struct conn *c, const Ckpt__Response *resp, int *fds,
    size_t nfds);
/* Convenience: an error reply (id, code, printf message) with no body. */
void conn_reply_error(struct conn *c, uint64_t id, int code,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Convenience: an error reply from a ckd_err. */
void conn_reply_err(struct conn *c, uint64_t id, const ckd_err *e);

/* Implemented in dispatch.c: called by conn for every complete frame after
 * hello. Takes ownership of req (free with ckpt__request__free_unpacked)
 * and of fds (close the ones it does not keep). */
void dispatch(struct conn *c, Ckpt__Request *req, int *fds, size_t nfds);
/* Implemented in dispatch.c: called once when a conn dies (managers of
 * the conn are closed; their accepted saves continue). */
void dispatch_conn_closed(struct conn *c);
/* Implemented in dispatch.c: the cheap checks on a frame's wire bytes,
 * before it is unpacked. Sets *id to the request id (0 when the frame has
 * none). Returns 0; CKPT_EPROTO when the bytes are not a protobuf message
 * (the connection closes, as for a frame that does not unpack); or
 * CKPT_ELIMIT when the request breaks a per-request limit (a save with
 * more than --max-leaves leaves). Linear in len, allocates nothing. */
int dispatch_precheck(const uint8_t *buf, size_t len, uint64_t *id,
    ckd_err *e);
/* Implemented in dispatch.c: 1 when c holds state that keeps it open
 * while idle (an open manager). */
int dispatch_conn_busy(const struct conn *c);

#endif
