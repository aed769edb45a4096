/*
 * conn.c - client connections (see conn.h).
 *
 * Every connection is owned by the event-loop thread. Reading: frame_read()
 * delivers one frame at a time; the first must be a hello whose protocol
 * range meets ours (conn_hello_version), every later one goes to the
 * handler given to conn_listen (C.h). Writing: replies are packed at once into frames queued on the
 * connection and sent in order, with their fds, as the socket takes them.
 *
 * Reference counting: the connection list holds one reference, dropped
 * when the connection dies (conn_kill); callbacks hold one while they run;
 * managers hold one per outstanding operation. A dead connection keeps its
 * struct (conn_alive() == 0, conn_reply() closes fds and returns) until the
 * last reference goes.
 *
 * Limits: the per-user connection limits of user.h (a connection over
 * them is "refused": it is not counted, and its first request, normally
 * hello, gets a CKPT_ELIMIT error before it closes; at most
 * CONN_MAX_REFUSED wait for that at a time, for at most
 * CONN_REFUSE_TIMEOUT); a partial frame older than CONN_FRAME_TIMEOUT
 * closes the connection; so does --idle-timeout for a connection with no
 * manager and no request in flight (checked by a sweep every
 * CONN_SWEEP_SECS at most); a connection whose output queue exceeds
 * CONN_OUT_HIGH bytes (or CONN_OUT_HIGH_FDS fds) is not read until the
 * queue drains below the low marks. Requests in flight (waiting for their
 * reply) are counted per connection and per uid; past
 * --max-requests-per-user a request gets CKPT_ELIMIT without being
 * unpacked, as does a save with more than --max-leaves leaves
 * (the handler's precheck).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "conn.h"
#include "frame.h"
#include "log.h"
#include "wirecheck.h"
#include "user.h"

#define CONN_MAX_REFUSED 64
#define CONN_REFUSE_TIMEOUT 5            /* seconds */
#define CONN_SWEEP_SECS 30               /* idle check, at most this apart */
#define CONN_FRAME_TIMEOUT 30            /* seconds */
#define CONN_FLUSH_TIMEOUT 10            /* closing conns: seconds to flush */
#define CONN_OUT_HIGH (8u * 1024 * 1024)
#define CONN_OUT_LOW (1u * 1024 * 1024)
#define CONN_OUT_HIGH_FDS 1024
#define CONN_OUT_LOW_FDS 256
#define CONN_FRAMES_PER_READ 32          /* fairness between connections */
#define CONN_ACCEPTS_PER_CB 64

struct conn {
	uint64_t id;
	int fd;
	unsigned refs;
	unsigned dead : 1;
	unsigned hello_done : 1;
	unsigned closing : 1;        /* close once the output is flushed */
	unsigned broken : 1;         /* a send failed: kill from the write cb */
	unsigned paused : 1;         /* not reading: output queue too long */
	unsigned timer_on : 1;
	unsigned refused : 1;        /* over a limit: answer ELIMIT, close */
	struct peer_cred cred;
	struct user *user;           /* referenced; NULL when refused */
	unsigned inflight;           /* requests waiting for their reply */
	int64_t active_ns;           /* last request or reply */
	char refuse_msg[200];
	struct event *rev, *wev, *tev;
	struct frame_in in;
	struct frame_out *out_head, *out_tail;
	size_t out_bytes, out_fds;    /* queued: allocated bytes, fds */
	struct conn *prev, *next;    /* live connections */
};

static struct {
	struct event_base *base;
	const struct conn_handler *h;  /* the dispatcher */
	void *harg;
	int lfd;
	struct event *lev;           /* accept */
	struct event *resume_ev;     /* re-enable accept after EMFILE */
	const struct timeval *frame_tv;  /* common timeout */
	struct event *sweep_ev;      /* idle connections */
	struct conn *head;
	unsigned count;              /* admitted connections */
	unsigned nrefused;           /* refused, waiting for their request */
	uint64_t next_id;
	uid_t euid;
	int64_t last_full_log;
	int64_t last_limit_log;
} C = { .lfd = -1 };

static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_write_cb(evutil_socket_t fd, short what, void *arg);
static void conn_timeout_cb(evutil_socket_t fd, short what, void *arg);
static void conn_kill(struct conn *c);
static int conn_flush(struct conn *c);

static void
conn_close_fds(int *fds, size_t nfds)
{
	size_t i;

	for (i = 0; i < nfds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* ---- identity ---------------------------------------------------------- */

static int
conn_get_cred(int fd, struct peer_cred *pc)
{
	struct ucred uc;
	socklen_t len = sizeof uc;
	gid_t groups[1024];

	memset(pc, 0, sizeof *pc);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0)
		return -errno;
	pc->pid = uc.pid;
	pc->uid = uc.uid;
	pc->gid = uc.gid;
#ifdef SO_PEERGROUPS
	len = sizeof groups;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
		size_t n = len / sizeof(gid_t);

		/* More than fit only narrows what the peer may touch. */
		if (n > sizeof pc->groups / sizeof pc->groups[0])
			n = sizeof pc->groups / sizeof pc->groups[0];
		memcpy(pc->groups, groups, n * sizeof(gid_t));
		pc->ngroups = (int)n;
	} else {
		log_debug("SO_PEERGROUPS: %s; using the primary group only",
		    strerror(errno));
	}
#endif
	return 0;
}

/* ---- lifetime ------------------------------------------------------------ */

void
conn_ref(struct conn *c)
{
	c->refs++;
}

void
conn_unref(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->refs == 0) {
		log_error("conn %llu: reference count underflow",
		    (unsigned long long)c->id);
		return;
	}
	if (--c->refs == 0) {
		user_put(c->user);
		free(c);
	}
}

int
conn_alive(const struct conn *c)
{
	return c != NULL && !c->dead;
}

const struct peer_cred *
conn_peer(const struct conn *c)
{
	return &c->cred;
}

uint64_t
conn_id(const struct conn *c)
{
	return c->id;
}

unsigned
conn_count(void)
{
	return C.count;
}

static void
conn_kill(struct conn *c)
{
	struct frame_out *o;

	if (c->dead)
		return;
	c->dead = 1;
	log_debug("conn %llu: closed", (unsigned long long)c->id);
	event_free(c->rev);
	event_free(c->wev);
	event_free(c->tev);
	c->rev = c->wev = c->tev = NULL;
	frame_in_free(&c->in);
	while ((o = c->out_head) != NULL) {
		c->out_head = o->next;
		frame_out_free(o);
	}
	c->out_tail = NULL;
	c->out_bytes = c->out_fds = 0;
	close(c->fd);
	c->fd = -1;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		C.head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	if (c->refused) {
		C.nrefused--;
	} else {
		C.count--;
		c->user->conns--;
		c->user->inflight -= c->inflight;
		c->inflight = 0;
	}

	conn_ref(c);
	C.h->closed(c, C.harg);
	conn_unref(c);
	conn_unref(c);           /* the list's reference */
}

void
conn_close_all(void)
{
	while (C.head != NULL)
		conn_kill(C.head);
}

/* ---- accepting -------------------------------------------------------------- */

static void
conn_new(int fd)
{
	struct peer_cred pc;
	struct conn *c;
	struct user *u;
	char msg[200];
	int r, refuse;

	if ((r = conn_get_cred(fd, &pc)) != 0) {
		log_warn_errno(-r, "SO_PEERCRED");
		close(fd);
		return;
	}
	if (C.euid != 0 && pc.uid != C.euid && pc.uid != 0) {
		log_info("refusing connection from uid %u (pid %d): this "
		    "daemon serves uid %u only", (unsigned)pc.uid, (int)pc.pid,
		    (unsigned)C.euid);
		close(fd);
		return;
	}
	if ((u = user_get(pc.uid)) == NULL) {
		log_warn("no memory for a connection");
		close(fd);
		return;
	}
	refuse = user_conn_admit(u, C.count, msg, sizeof msg) != 0;
	if (refuse) {
		int64_t now = now_mono_ns();

		if (now - C.last_full_log > 1000000000LL) {
			log_warn("pid %d: %s", (int)pc.pid, msg);
			C.last_full_log = now;
		}
		if (C.nrefused >= CONN_MAX_REFUSED) {
			user_put(u);
			close(fd);
			return;
		}
	}
	if ((c = calloc(1, sizeof *c)) == NULL) {
		log_warn("no memory for a connection");
		user_put(u);
		close(fd);
		return;
	}
	c->fd = fd;
	c->refs = 1;
	c->cred = pc;
	c->id = ++C.next_id;
	c->active_ns = now_mono_ns();
	frame_in_init(&c->in);
	c->rev = event_new(C.base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	c->wev = event_new(C.base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
	c->tev = evtimer_new(C.base, conn_timeout_cb, c);
	if (c->rev == NULL || c->wev == NULL || c->tev == NULL ||
	    event_add(c->rev, NULL) != 0) {
		log_warn("no memory for connection events");
		if (c->rev)
			event_free(c->rev);
		if (c->wev)
			event_free(c->wev);
		if (c->tev)
			event_free(c->tev);
		user_put(u);
		close(fd);
		free(c);
		return;
	}
	c->next = C.head;
	if (C.head != NULL)
		C.head->prev = c;
	C.head = c;
	if (refuse) {
		struct timeval tv = { CONN_REFUSE_TIMEOUT, 0 };

		user_put(u);
		c->refused = 1;
		snprintf(c->refuse_msg, sizeof c->refuse_msg, "%s", msg);
		C.nrefused++;
		evtimer_add(c->tev, &tv);
		c->timer_on = 1;
		return;
	}
	c->user = u;
	u->conns++;
	C.count++;
	log_debug("conn %llu: pid %d uid %u gid %u", (unsigned long long)c->id,
	    (int)pc.pid, (unsigned)pc.uid, (unsigned)pc.gid);
}

static void
conn_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	if (C.lev != NULL)
		event_add(C.lev, NULL);
}

static void
conn_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	int i;

	for (i = 0; i < CONN_ACCEPTS_PER_CB; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				/* Out of fds: stop accepting for a second
				 * rather than spin on a ready listener. */
				struct timeval tv = { 1, 0 };

				log_warn_errno(errno, "accept (pausing 1 s)");
				event_del(C.lev);
				evtimer_add(C.resume_ev, &tv);
				return;
			}
			log_warn_errno(errno, "accept");
			return;
		}
		conn_new(fd);
	}
}

/* Close connections idle for --idle-timeout: nothing open (asked of the
 * handler's busy()), no request in flight, no frame under way, no reply queued. */
static void
conn_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	int64_t idle = (int64_t)user_limits.idle_secs * 1000000000LL;
	int64_t now = now_mono_ns();
	struct conn *c, *next;

	for (c = C.head; c != NULL; c = next) {
		next = c->next;
		if (c->refused || c->closing || c->inflight > 0 ||
		    c->out_head != NULL || frame_in_started(&c->in) ||
		    now - c->active_ns < idle || C.h->busy(c, C.harg))
			continue;
		log_info("conn %llu (pid %d uid %u): idle for %u s without a "
		    "manager; closing", (unsigned long long)c->id,
		    (int)c->cred.pid, (unsigned)c->cred.uid,
		    user_limits.idle_secs);
		/* next stays valid: conn_kill unlinks c only. */
		conn_kill(c);
	}
}

int
conn_listen(struct event_base *base, int fd, const struct conn_handler *h,
    void *arg, ckd_err *e)
{
	static const struct timeval frame_tv = { CONN_FRAME_TIMEOUT, 0 };
	int fl;

	C.base = base;
	C.h = h;
	C.harg = arg;
	C.euid = geteuid();
	C.frame_tv = event_base_init_common_timeout(base, &frame_tv);
	if (C.frame_tv == NULL)
		C.frame_tv = &frame_tv;
	if ((fl = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
		return err_errno(e, errno, "fcntl on the listening socket");
	C.lfd = fd;
	C.lev = event_new(base, fd, EV_READ | EV_PERSIST, conn_accept_cb, NULL);
	C.resume_ev = evtimer_new(base, conn_resume_cb, NULL);
	if (C.lev == NULL || C.resume_ev == NULL ||
	    event_add(C.lev, NULL) != 0)
		return err_set(e, CKPT_ENOMEM, "cannot create accept event");
	if (user_limits.idle_secs > 0) {
		unsigned secs = user_limits.idle_secs / 4;
		struct timeval tv;

		if (secs > CONN_SWEEP_SECS)
			secs = CONN_SWEEP_SECS;
		tv.tv_sec = secs;
		tv.tv_usec = secs == 0 ? 250000 : 0;
		C.sweep_ev = event_new(base, -1, EV_PERSIST, conn_sweep_cb,
		    NULL);
		if (C.sweep_ev == NULL || event_add(C.sweep_ev, &tv) != 0)
			return err_set(e, CKPT_ENOMEM, "cannot create the idle "
			    "timer");
	}
	return 0;
}

void
conn_stop_listening(void)
{
	if (C.lev != NULL) {
		event_free(C.lev);
		C.lev = NULL;
	}
	if (C.resume_ev != NULL) {
		event_free(C.resume_ev);
		C.resume_ev = NULL;
	}
	if (C.sweep_ev != NULL) {
		event_free(C.sweep_ev);
		C.sweep_ev = NULL;
	}
	if (C.lfd >= 0) {
		close(C.lfd);
		C.lfd = -1;
	}
}

/* ---- output -------------------------------------------------------------- */

static void
conn_pause(struct conn *c, int on)
{
	if (c->dead || c->paused == (unsigned)on)
		return;
	c->paused = on;
	if (on) {
		log_debug("conn %llu: %zu bytes / %zu fds unread by the peer; "
		    "pausing its requests", (unsigned long long)c->id,
		    c->out_bytes, c->out_fds);
		event_del(c->rev);
	} else if (!c->closing) {
		event_add(c->rev, NULL);
		/* Frames may already sit in the socket buffer. */
		event_active(c->rev, EV_READ, 0);
	}
}

/* Send queued frames. 0: all sent or the socket is full (write event armed);
 * negative: the connection is broken. */
static int
conn_flush(struct conn *c)
{
	struct frame_out *o;
	ckd_err e = { 0 };

	while ((o = c->out_head) != NULL) {
		size_t nfds = o->nfds;
		int r = frame_out_send(o, c->fd, &e);

		c->out_fds -= nfds - o->nfds;
		if (r == FRAME_AGAIN) {
			if (!event_pending(c->wev, EV_WRITE, NULL))
				event_add(c->wev, NULL);
			return 0;
		}
		if (r < 0) {
			log_debug("conn %llu: %s", (unsigned long long)c->id,
			    e.msg);
			return r;
		}
		c->out_head = o->next;
		if (c->out_head == NULL)
			c->out_tail = NULL;
		c->out_bytes -= o->mem;
		frame_out_free(o);
	}
	if (event_pending(c->wev, EV_WRITE, NULL))
		event_del(c->wev);
	if (c->paused && c->out_bytes < CONN_OUT_LOW &&
	    c->out_fds < CONN_OUT_LOW_FDS)
		conn_pause(c, 0);
	return 0;
}

static void
conn_enqueue(struct conn *c, struct frame_out *o)
{
	if (c->out_tail != NULL)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	c->out_bytes += o->mem;
	c->out_fds += o->nfds;
	if (c->broken)
		return;
	/* Try at once; never kill from here (callers still use c). */
	if (!event_pending(c->wev, EV_WRITE, NULL) && conn_flush(c) < 0) {
		c->broken = 1;
		event_active(c->wev, EV_WRITE, 0);
		return;
	}
	if (c->out_bytes > CONN_OUT_HIGH || c->out_fds > CONN_OUT_HIGH_FDS)
		conn_pause(c, 1);
}

int
conn_reply(struct conn *c, const Ckpt__Response *resp, int *fds,
    size_t nfds)
{
	struct frame_out *o;
	ckd_err e = { 0 };
	int r;

	if (c == NULL || c->dead) {
		conn_close_fds(fds, nfds);
		return 0;
	}
	/* A reply (id != 0) ends its request; events (id 0) do not. */
	if (resp->id != 0 && c->inflight > 0) {
		c->inflight--;
		c->user->inflight--;
		c->active_ns = now_mono_ns();
	}
	r = frame_out_new(&resp->base, fds, nfds, &o, &e);
	if (r != 0) {
		Ckpt__Response err = CKPT__RESPONSE__INIT;
		ckd_err e2;

		conn_close_fds(fds, nfds);
		log_error("conn %llu: reply to request %llu: %s",
		    (unsigned long long)c->id, (unsigned long long)resp->id,
		    e.msg);
		err.id = resp->id;
		err.has_id = 1;
		err.code = r == CKPT_ETOOBIG ? CKPT_ETOOBIG : CKPT_EINTERNAL;
		err.has_code = 1;
		err.message = e.msg;
		if (frame_out_new(&err.base, NULL, 0, &o, &e2) != 0) {
			/* The peer would wait forever for this reply. */
			c->broken = 1;
			event_active(c->wev, EV_WRITE, 0);
			return r;
		}
		conn_enqueue(c, o);
		return r;
	}
	conn_enqueue(c, o);
	return 0;
}

static void
conn_vreply_error(struct conn *c, uint64_t id, int code, const char *fmt,
    va_list ap)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	char msg[CKPT_ERRLEN];

	vsnprintf(msg, sizeof msg, fmt, ap);
	resp.id = id;
	resp.has_id = 1;
	resp.code = code;
	resp.has_code = 1;
	resp.message = msg;
	conn_reply(c, &resp, NULL, 0);
}

void
conn_reply_error(struct conn *c, uint64_t id, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conn_vreply_error(c, id, code, fmt, ap);
	va_end(ap);
}

void
conn_reply_err(struct conn *c, uint64_t id, const ckd_err *e)
{
	conn_reply_error(c, id, e->code != 0 ? e->code : CKPT_EINTERNAL, "%s",
	    e->msg[0] != '\0' ? e->msg : "internal error (no message)");
}

/* Stop reading; close once the queued replies are out (or after
 * CONN_FLUSH_TIMEOUT if the peer does not read them). */
static void
conn_close_after_flush(struct conn *c)
{
	struct timeval tv = { CONN_FLUSH_TIMEOUT, 0 };

	if (c->dead || c->closing)
		return;
	c->closing = 1;
	event_del(c->rev);
	evtimer_add(c->tev, &tv);
	c->timer_on = 1;
	/* Let the write callback close it once the queue is empty. */
	event_active(c->wev, EV_WRITE, 0);
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (c->dead)
		return;
	conn_ref(c);
	if (c->broken || conn_flush(c) < 0)
		conn_kill(c);
	else if (c->closing && c->out_head == NULL)
		conn_kill(c);
	conn_unref(c);
}

static void
conn_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	c->timer_on = 0;
	if (c->refused)
		log_debug("conn %llu: refused and silent; closing",
		    (unsigned long long)c->id);
	else if (c->closing)
		log_info("conn %llu: peer does not read its replies; closing",
		    (unsigned long long)c->id);
	else if (c->in.hdr_got < 4)
		log_info("conn %llu: frame incomplete after %d s (%zu of 4 "
		    "length bytes); closing", (unsigned long long)c->id,
		    CONN_FRAME_TIMEOUT, c->in.hdr_got);
	else
		log_info("conn %llu: frame incomplete after %d s (%zu of %u "
		    "bytes); closing", (unsigned long long)c->id,
		    CONN_FRAME_TIMEOUT, c->in.got, c->in.len);
	conn_kill(c);
}

/* ---- input -------------------------------------------------------------- */

/*
 * The version for a connection: the highest one in both the client's range
 * and ours. An old client sends only `version` (a range of one); a range
 * with only one end set takes the other end from `version`.
 */
static int
conn_hello_version(const Ckpt__Hello *h, uint32_t *out, char *msg,
    size_t len)
{
	uint32_t lo, hi, dlo = CKPT__VERSION__PROTOCOL_VERSION_MIN,
	    dhi = CKPT__VERSION__PROTOCOL_VERSION;

	lo = h->has_min_version ? h->min_version : h->version;
	hi = h->has_max_version ? h->max_version : h->version;
	if (!h->has_min_version && !h->has_max_version && !h->has_version) {
		snprintf(msg, len, "hello carries no protocol version; ckptd "
		    "speaks %u..%u", dlo, dhi);
		return -1;
	}
	if (lo > hi) {
		snprintf(msg, len, "hello offers an empty protocol range "
		    "%u..%u", lo, hi);
		return -1;
	}
	if (hi < dlo || lo > dhi) {
		snprintf(msg, len, "protocol versions do not meet: the client "
		    "speaks %u..%u, ckptd %s speaks %u..%u; %s", lo, hi,
		    CKPTD_VERSION, dlo, dhi, hi < dlo ? "upgrade the client "
		    "library" : "upgrade ckptd");
		return -1;
	}
	*out = hi < dhi ? hi : dhi;
	return 0;
}

static void
conn_hello(struct conn *c, Ckpt__Request *req, int *fds, size_t nfds)
{
	Ckpt__Response resp = CKPT__RESPONSE__INIT;
	Ckpt__HelloReply hr = CKPT__HELLO_REPLY__INIT;
	char msg[256];

	conn_close_fds(fds, nfds);
	resp.id = req->id;
	resp.has_id = 1;
	if (req->op_case != CKPT__REQUEST__OP_HELLO) {
		log_info("conn %llu: first request is not hello; closing",
		    (unsigned long long)c->id);
		conn_reply_error(c, req->id, CKPT_EPROTO,
		    "the first request on a connection must be hello");
		conn_close_after_flush(c);
		goto out;
	}
	hr.daemon = (char *)"ckptd " CKPTD_VERSION;
	hr.uid = (uint32_t)c->cred.uid;
	hr.has_uid = 1;
	hr.min_version = CKPT__VERSION__PROTOCOL_VERSION_MIN;
	hr.has_min_version = 1;
	hr.max_version = CKPT__VERSION__PROTOCOL_VERSION;
	hr.has_max_version = 1;
	resp.body_case = CKPT__RESPONSE__BODY_HELLO;
	resp.hello = &hr;
	if (conn_hello_version(req->hello, &hr.version, msg, sizeof msg) != 0) {
		log_info("conn %llu (pid %d): %s", (unsigned long long)c->id,
		    (int)c->cred.pid, msg);
		resp.code = CKPT_EVERSION;
		resp.has_code = 1;
		resp.message = msg;
		conn_reply(c, &resp, NULL, 0);
		conn_close_after_flush(c);
		goto out;
	}
	hr.has_version = 1;
	c->hello_done = 1;
	log_debug("conn %llu: hello from pid %d uid %u (%s), protocol %u",
	    (unsigned long long)c->id, (int)c->cred.pid,
	    (unsigned)c->cred.uid,
	    req->hello->client != NULL ? req->hello->client : "?", hr.version);
	conn_reply(c, &resp, NULL, 0);
out:
	ckpt__request__free_unpacked(req, NULL);
}

/* One complete frame is in c->in: unpack and route it. */
static void
conn_frame(struct conn *c)
{
	int fds[CKPT_MAX_FDS];
	size_t nfds = c->in.nfds;
	Ckpt__Request *req;
	uint64_t id = 0;
	ckd_err e = { 0 }, se;
	int r, bad;

	memcpy(fds, c->in.fds, nfds * sizeof(int));
	c->in.nfds = 0;
	if (c->in.fds_dropped > 0)
		log_info("conn %llu: closed %zu file descriptors beyond %d on "
		    "one frame", (unsigned long long)c->id, c->in.fds_dropped,
		    CKPT_MAX_FDS);
	/* Limits first, from the wire bytes: a refused request is never
	 * unpacked. */
	r = C.h->precheck(c->in.buf, c->in.len, &id, &e, C.harg);
	if (r == CKPT_EPROTO || (r != 0 && id == 0)) {
		/* Not a message, or over a limit with no id to answer. */
		log_info("conn %llu: %s; closing", (unsigned long long)c->id,
		    e.msg);
		frame_in_reset(&c->in);
		conn_close_fds(fds, nfds);
		conn_kill(c);
		return;
	}
	if (id != 0 && (c->refused || r != 0 || (c->hello_done &&
	    c->user->inflight + c->user->saves >=
	    user_limits.inflight_per_user))) {
		int64_t now = now_mono_ns();

		if (c->refused)
			err_set(&e, CKPT_ELIMIT, "%s", c->refuse_msg);
		else if (r == 0)
			err_set(&e, CKPT_ELIMIT, "uid %u has %u requests and "
			    "%u saves in flight (the limit per user; ckptd "
			    "--max-requests-per-user)", (unsigned)c->cred.uid,
			    c->user->inflight, c->user->saves);
		/* At most one line a second: refusals must not flood the
		 * log either. */
		if (now - C.last_limit_log > 1000000000LL) {
			log_info("conn %llu (uid %u): %s",
			    (unsigned long long)c->id, (unsigned)c->cred.uid,
			    e.msg);
			C.last_limit_log = now;
		}
		frame_in_reset(&c->in);
		conn_close_fds(fds, nfds);
		/* In flight for the reply's sake: the reply ends it, and must
		 * not end another request's count. */
		if (!c->refused) {
			c->inflight++;
			c->user->inflight++;
		}
		conn_reply_error(c, id, e.code, "%s", e.msg);
		/* Before hello, a refused request ends the connection. */
		if (c->refused || !c->hello_done)
			conn_close_after_flush(c);
		return;
	}
	req = ckpt__request__unpack(NULL, c->in.len, c->in.buf);
	if (req == NULL) {
		log_info("conn %llu: malformed request (%u bytes); closing",
		    (unsigned long long)c->id, c->in.len);
		frame_in_reset(&c->in);
		conn_close_fds(fds, nfds);
		conn_kill(c);
		return;
	}
	/* Strings as sent: no NUL inside, valid UTF-8 (wirecheck.h). */
	bad = wirecheck_strings(&ckpt__request__descriptor, c->in.buf,
	    c->in.len, &se);
	frame_in_reset(&c->in);
	if (!req->has_id || req->id == 0) {
		log_info("conn %llu: request without an id; closing",
		    (unsigned long long)c->id);
		ckpt__request__free_unpacked(req, NULL);
		conn_close_fds(fds, nfds);
		conn_kill(c);
		return;
	}
	if (bad != 0) {
		log_info("conn %llu: %s", (unsigned long long)c->id, se.msg);
		conn_close_fds(fds, nfds);
		/* In flight until its refusal is sent, as above. */
		c->inflight++;
		c->user->inflight++;
		conn_reply_error(c, req->id, se.code, "%s", se.msg);
		if (!c->hello_done)
			conn_close_after_flush(c);
		ckpt__request__free_unpacked(req, NULL);
		return;
	}
	if (c->refused) {               /* not reached: refused above */
		ckpt__request__free_unpacked(req, NULL);
		conn_close_fds(fds, nfds);
		conn_kill(c);
		return;
	}
	if (!c->hello_done) {
		conn_hello(c, req, fds, nfds);
		return;
	}
	c->inflight++;
	c->user->inflight++;
	c->active_ns = now_mono_ns();
	C.h->dispatch(c, req, fds, nfds, C.harg);
}

static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	int i, completed = 0;

	if (c->dead)
		return;
	conn_ref(c);
	for (i = 0; i < CONN_FRAMES_PER_READ; i++) {
		ckd_err e = { 0 };
		int r;

		if (c->dead || c->paused || c->closing)
			break;
		r = frame_read(&c->in, c->fd, &e);
		if (r == FRAME_AGAIN)
			break;
		if (r == FRAME_EOF) {
			conn_kill(c);
			break;
		}
		if (r < 0) {
			if (r == CKPT_ECONN)
				log_debug("conn %llu: %s",
				    (unsigned long long)c->id, e.msg);
			else
				log_info("conn %llu: %s; closing",
				    (unsigned long long)c->id, e.msg);
			conn_kill(c);
			break;
		}
		completed++;
		conn_frame(c);
	}
	/* The frame timer runs from the start of the frame under way. */
	if (!c->dead && !c->closing && !c->refused) {
		int started = frame_in_started(&c->in);

		if (started && (!c->timer_on || completed > 0)) {
			evtimer_add(c->tev, C.frame_tv);
			c->timer_on = 1;
		} else if (!started && c->timer_on) {
			evtimer_del(c->tev);
			c->timer_on = 0;
		}
	}
	conn_unref(c);
}
