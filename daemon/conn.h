/*
 * conn.h - client connections: framing, fd passing, peer identity, replies.
 *
 * A connection is owned by the event-loop thread. It reads frames (4-byte
 * big-endian length, checked against CKPT_MAX_FRAME before any allocation;
 * the buffer grows with the bytes actually received), collects SCM_RIGHTS
 * fds, unpacks one Ckpt__Request and hands it to the dispatcher it was
 * given at conn_listen() (struct conn_handler). Replies are
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
#include "cred.h"
#include "ckpt.pb-c.h"

struct event_base;


struct conn;

/* What the connection layer calls back into (the dispatcher, given to
 * conn_listen; conn knows no request type). All run on the loop thread;
 * arg is conn_listen's. */
struct conn_handler {
	/* The cheap checks on a frame's wire bytes, before it is unpacked.
	 * Sets *id to the request id (0 when the frame has none). Returns 0;
	 * CKPT_EPROTO when the bytes are not a protobuf message (the
	 * connection closes, as for a frame that does not unpack); or
	 * CKPT_ELIMIT / CKPT_ETOOBIG when the request breaks a per-request
	 * limit (answered without unpacking). */
	int (*precheck)(const uint8_t *buf, size_t len, uint64_t *id,
	    ckd_err *e, void *arg);
	/* Every complete frame after hello. Takes ownership of req (free
	 * with ckpt__request__free_unpacked) and of fds (close the ones it
	 * does not keep). */
	void (*dispatch)(struct conn *c, Ckpt__Request *req, int *fds,
	    size_t nfds, void *arg);
	/* Called once when a connection dies. */
	void (*closed)(struct conn *c, void *arg);
	/* 1 when c holds state that keeps it open while idle. */
	int (*busy)(const struct conn *c, void *arg);
};

/* Start accepting on listening socket fd (nonblocking, CLOEXEC); every
 * request goes to h (kept, not copied) with arg. */
int conn_listen(struct event_base *base, int fd, const struct conn_handler *h,
    void *arg, ckd_err *e);
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

#endif
