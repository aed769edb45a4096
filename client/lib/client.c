/*
 * client.c - the connection to ckptd.
 *
 * One Unix stream socket per ckpt_client. Callers send requests under
 * send_lock and sleep on their own condition variable; a reader thread
 * receives every frame and hands a Response to the pending request with
 * the same id, or handles it as an event (id 0: SaveDone). A request that
 * waits in the daemon (wait_for_step, wait_saves) therefore never blocks
 * other requests on the same client.
 *
 * Reconnecting: when the connection breaks (ckptd restarted, crashed,
 * upgraded), the reader thread dials again with backoff for up to
 * reconnect_ms. On the new connection it says hello, re-opens every open
 * manager with the options it was opened with, and settles each save in
 * flight: a step the new daemon lists as committed is reported committed,
 * one it lists in progress (the daemon lived, only the connection broke)
 * is waited for; otherwise the save is sent again from the staging memfd,
 * which the client keeps until SaveDone (forced: the policy already
 * decided); a save that cannot be sent again fails with the daemon's
 * reason.
 * Requests interrupted by the break wait for the reconnect and are sent
 * again (with the manager's new id); waits in progress thus survive. When
 * the limit passes, everything fails with CKPT_ECONN and a message that
 * says so, and the client stays down.
 *
 * Trust: the daemon's identity is checked with SO_PEERCRED on every
 * connect: root or the caller's own user, nobody else. The per-user
 * socket lives in $XDG_RUNTIME_DIR, else in /tmp/ckptd-$UID/, a directory
 * created 0700 and checked for owner and mode before use.
 *
 * Autostart: when nothing answers on the socket and $CKPTD_AUTOSTART is
 * not "0", a per-user daemon is spawned (`ckptd --socket PATH
 * --autostarted`: it exits when idle and keeps its state out of the
 * system directory; it daemonizes and its parent exits once it listens).
 * An flock on "<socket>.autostart" makes concurrent first users start
 * only one daemon (ckptd itself holds "<socket>.lock" while it binds, so
 * the client must not hold that one while waiting for the daemon); the
 * lock file is removed once the daemon answers.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "internal.h"

extern char **environ;

#define SYSTEM_SOCKET "/run/ckptd/ckptd.sock"
#define AUTOSTART_WAIT_MS 10000
#define CL_PROTO_MIN CKPT__VERSION__PROTOCOL_VERSION_MIN
#define CL_PROTO_MAX CKPT__VERSION__PROTOCOL_VERSION

static __thread char connect_err[CKPT_ERRLEN];
/* The connection (c->gen) the calling thread's last cl_call was answered
 * on: cl_remember_open ties a new manager's id to it. */
static __thread uint64_t last_call_gen;

CKPT_API const char *
ckpt_connect_errmsg(void)
{
	return connect_err;
}

int
cl_fail(ckpt_client *c, struct ckpt_manager *m, int code, const char *fmt,
    ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (m != NULL) {
		va_list ap2;
		va_copy(ap2, ap);
		errbox_setv(&m->err, fmt, ap2);
		va_end(ap2);
	}
	if (c != NULL)
		errbox_setv(&c->err, fmt, ap);
	va_end(ap);
	return code;
}

static uint64_t
cl_next_id(ckpt_client *c)
{
	uint64_t id;

	pthread_mutex_lock(&c->lock);
	id = ++c->next_id;
	pthread_mutex_unlock(&c->lock);
	return id;
}

static void
close_fds(const int *fds, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		close(fds[i]);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- saves in flight ----------------------------------------------------------- */

static void
inflight_finish(ckpt_client *c, struct inflight *s, int code, const char *msg)
{
	struct ckpt_manager *m = s->mgr;

	if (s->done)
		return;
	s->done = 1;
	s->code = code;
	snprintf(s->msg, sizeof s->msg, "%s", msg != NULL ? msg : "");
	if (m != NULL) {
		if (m->saving > 0)
			m->saving--;
		if (code != 0) {
			m->err_code = code;
			m->err_nosave = 0;
			snprintf(m->err_msg, sizeof m->err_msg, "%s",
			    msg != NULL && *msg != '\0' ? msg : ckpt_strerror(code));
		}
	}
	if (s->buf != NULL) {
		staging_release(c, s->buf);
		s->buf = NULL;
	}
	free(s->save_pb);
	s->save_pb = NULL;
}

/* Unlink and free finished saves nobody holds (c->lock held). */
void
inflight_reap(ckpt_client *c)
{
	struct inflight **pp = &c->saves, *s;

	while ((s = *pp) != NULL) {
		if (s->done && !s->held) {
			*pp = s->next;
			free(s->save_pb);
			free(s);
		} else {
			pp = &s->next;
		}
	}
}

static void
handle_event(ckpt_client *c, const Ckpt__Response *resp)
{
	const Ckpt__SaveDone *sd;
	struct inflight *s;

	if (resp->body_case != CKPT__RESPONSE__BODY_SAVE_DONE)
		return;
	sd = resp->save_done;
	pthread_mutex_lock(&c->lock);
	if (sd->save_id == 0) {
		/* A distributed step this rank had no part in failed: the
		 * manager's async error (unless it holds one already). */
		struct ckpt_manager *m;
		int code = sd->code;

		if (code > 0 || code < CKPT_ECODE_MIN)
			code = CKPT_EINTERNAL;
		for (m = c->managers; m != NULL; m = m->next)
			if (m->id == sd->manager && !m->closed)
				break;
		if (m != NULL && code != 0 && m->err_code == 0) {
			m->err_code = code;
			snprintf(m->err_msg, sizeof m->err_msg, "%s",
			    sd->message != NULL && *sd->message != '\0' ?
			    sd->message : ckpt_strerror(code));
			m->n_err_seen = 0;
			m->err_nosave = 1;
			m->err_nosave_step = sd->step;
		}
		pthread_mutex_unlock(&c->lock);
		return;
	}
	for (s = c->saves; s != NULL; s = s->next)
		if (s->id == sd->save_id && !s->done)
			break;
	if (s != NULL) {
		inflight_finish(c, s, sd->code, sd->message);
		inflight_reap(c);
		pthread_cond_broadcast(&c->save_cond);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Wake every request waiting for a reply (c->lock held). */
static void
wake_pending(ckpt_client *c)
{
	struct pending *p;

	for (p = c->pending; p != NULL; p = p->next) {
		p->done = 1;
		pthread_cond_signal(&p->cond);
	}
}

/* ---- the socket path and who serves it ------------------------------------------- */

/*
 * A directory only we may use: create it 0700 if missing, then insist it
 * is a real directory (not a symlink), ours, and closed to everyone else.
 */
static int
private_dir(const char *dir, char *err, size_t len)
{
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, len, "cannot create %s: %s", dir, strerror(errno));
		return CKPT_EACCES;
	}
	if (lstat(dir, &st) != 0) {
		snprintf(err, len, "cannot check %s: %s", dir, strerror(errno));
		return CKPT_EACCES;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, len, "%s is not a directory; refusing to use it "
		    "for the ckptd socket", dir);
		return CKPT_EACCES;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, len, "%s belongs to uid %u, not to you (uid %u); "
		    "refusing to use it for the ckptd socket (remove it, or "
		    "set $XDG_RUNTIME_DIR)", dir, (unsigned)st.st_uid,
		    (unsigned)geteuid());
		return CKPT_EACCES;
	}
	if ((st.st_mode & 077) != 0) {
		snprintf(err, len, "%s has mode %04o; refusing to use it for "
		    "the ckptd socket (it must be 0700)", dir,
		    (unsigned)(st.st_mode & 07777));
		return CKPT_EACCES;
	}
	return 0;
}

/* The per-user socket; *pdir gets the private directory to check before
 * each use ("" under $XDG_RUNTIME_DIR, which is private by definition). */
static int
user_socket_path(char *buf, size_t len, char *pdir, size_t pdirlen)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	pdir[0] = '\0';
	if (xdg != NULL && *xdg == '/') {
		n = snprintf(buf, len, "%s/ckptd.sock", xdg);
	} else {
		snprintf(pdir, pdirlen, "/tmp/ckptd-%u", (unsigned)geteuid());
		n = snprintf(buf, len, "%s/ckptd.sock", pdir);
	}
	return n < 0 || (size_t)n >= len ? CKPT_EINVAL : 0;
}

/* Returns the socket fd, or -1 with errno set. */
static int
try_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, e;

	if (strlen(path) >= sizeof sa.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		if (errno == EINTR)
			continue;
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int
absent(int e)
{
	return e == ENOENT || e == ECONNREFUSED;
}

/* Whoever listens on fd must be root or us. */
static int
peer_trusted(int fd, const char *path, char *err, size_t len)
{
	struct ucred cr;
	socklen_t sl = sizeof cr;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &sl) != 0) {
		snprintf(err, len, "cannot tell who serves %s: %s", path,
		    strerror(errno));
		return CKPT_ECONN;
	}
	if (cr.uid == 0 || cr.uid == geteuid())
		return 0;
	snprintf(err, len, "refusing the daemon at %s: it runs as uid %u "
	    "(pid %d), neither root nor you (uid %u); someone else may have "
	    "taken the socket", path, (unsigned)cr.uid, (int)cr.pid,
	    (unsigned)geteuid());
	return CKPT_EACCES;
}

/* Lock "<path>.autostart", making sure the file we hold is still the one
 * on disk (a previous holder unlinks it when done). -1 when it cannot. */
static int
autostart_lock(const char *lockpath)
{
	struct stat a, b;
	int fd, tries;

	for (tries = 0; tries < 100; tries++) {
		fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
		    0600);
		if (fd < 0)
			return -1;
		while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
			;
		if (fstat(fd, &a) == 0 && stat(lockpath, &b) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return fd;
		close(fd);
	}
	return -1;
}

/* Start `ckptd --socket path --autostarted` and wait until it answers. */
static int
autostart(const char *path, int *fdp, char *err, size_t len)
{
	char lockpath[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
	const char *bin = getenv("CKPTD_BIN");
	char *argv[5];
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int lockfd, fd, r, st, waited = 0, e = 0;

	snprintf(lockpath, sizeof lockpath, "%s.autostart", path);
	lockfd = autostart_lock(lockpath);
	/* someone may have started it while we waited for the lock */
	if ((fd = try_connect(path)) >= 0) {
		*fdp = fd;
		r = 0;
		goto out;
	}
	if (bin == NULL || *bin == '\0') {
		static const char installed[] = CKPTD_BINDIR "/ckptd";
		bin = access(installed, X_OK) == 0 ? installed : "ckptd";
	}
	argv[0] = (char *)bin;
	argv[1] = (char *)"--socket";
	argv[2] = (char *)path;
	argv[3] = (char *)"--autostarted";
	argv[4] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (strchr(bin, '/') != NULL)
		r = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
	else
		r = posix_spawnp(&pid, bin, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0) {
		snprintf(err, len, "cannot start %s: %s", bin, strerror(r));
		r = CKPT_ECONN;
		goto out;
	}
	while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
		;
	if (r == pid && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		/* another daemon may have won the race for the socket */
		if ((fd = try_connect(path)) >= 0) {
			*fdp = fd;
			r = 0;
			goto out;
		}
		if (WIFEXITED(st))
			snprintf(err, len, "%s --socket %s exited with status "
			    "%d", bin, path, WEXITSTATUS(st));
		else
			snprintf(err, len, "%s --socket %s was killed by "
			    "signal %d", bin, path, WTERMSIG(st));
		r = CKPT_ECONN;
		goto out;
	}
	for (;;) {
		if ((fd = try_connect(path)) >= 0) {
			*fdp = fd;
			r = 0;
			goto out;
		}
		e = errno;
		if (!absent(e) || waited >= AUTOSTART_WAIT_MS)
			break;
		sleep_ms(10);
		waited += 10;
	}
	snprintf(err, len, "started %s but cannot connect to %s: %s", bin,
	    path, strerror(e));
	r = CKPT_ECONN;
out:
	if (lockfd >= 0) {
		unlink(lockpath);       /* still ours: see autostart_lock */
		close(lockfd);
	}
	return r;
}

/*
 * Connect to path: check the private directory first (when pdir is set),
 * autostart a daemon when nothing answers and that is allowed, and check
 * who serves the socket. *fdp on success; else a code and err.
 */
static int
dial(const char *path, const char *pdir, int may_autostart, int *fdp,
    char *err, size_t len)
{
	char why[CKPT_ERRLEN];
	int fd, e, r;

	*fdp = -1;
	if (pdir[0] != '\0' && (r = private_dir(pdir, err, len)) != 0)
		return r;
	fd = try_connect(path);
	e = errno;
	if (fd < 0 && absent(e) && may_autostart) {
		if ((r = autostart(path, &fd, why, sizeof why)) != 0) {
			snprintf(err, len, "cannot connect to ckptd at %s (%s), "
			    "and autostart failed: %.300s", path, strerror(e),
			    why);
			return r;
		}
	} else if (fd < 0) {
		snprintf(err, len, "cannot connect to ckptd at %s: %s", path,
		    strerror(e));
		return CKPT_ECONN;
	}
	if ((r = peer_trusted(fd, path, err, len)) != 0) {
		close(fd);
		return r;
	}
	*fdp = fd;
	return 0;
}

/* ---- requests on a socket nobody else uses yet ----------------------------------- */

/* Bound each read and write on fd while it is set up (a daemon that
 * accepts but never answers must not hang the client); 0 ms clears it. */
static void
setup_timeout(int fd, long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/*
 * Send req on fd and read frames until its reply (events met on the way,
 * SaveDone of saves sent again, are handled). Used by hello and by the
 * reconnect before the socket is published. req->id is assigned when 0.
 * Returns a negative code only for transport failures.
 */
static int
sync_call(ckpt_client *c, int fd, Ckpt__Request *req, const int *fds,
    size_t nfds, Ckpt__Response **out, char *err, size_t len)
{
	Ckpt__Response *resp;
	int rfds[CKPT_MAX_FDS];
	size_t nr;
	int r;

	*out = NULL;
	if (req->id == 0)
		req->id = cl_next_id(c);
	req->has_id = 1;
	if ((r = wire_send(fd, &req->base, fds, nfds, err, len)) != 0)
		return r;
	for (;;) {
		if ((r = wire_recv(fd, &resp, rfds, &nr, err, len)) != 0)
			return r;
		close_fds(rfds, nr);
		if (resp->id == 0) {
			handle_event(c, resp);
		} else if (resp->id == req->id) {
			*out = resp;
			return 0;
		}
		ckpt__response__free_unpacked(resp, NULL);
	}
}

/* A nonzero Response code as a valid CKPT_E* code. */
static int
resp_code(const Ckpt__Response *resp)
{
	int code = resp->code;

	return code > 0 || code < CKPT_ECODE_MIN ? CKPT_EINTERNAL : code;
}

static const char *
resp_msg(const Ckpt__Response *resp)
{
	return resp->message != NULL && *resp->message != '\0' ?
	    resp->message : ckpt_strerror(resp_code(resp));
}

/* Hello on fd: offer our protocol range, take the daemon's choice. */
static int
hello_on(ckpt_client *c, int fd, char *err, size_t len)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Hello h = CKPT__HELLO__INIT;
	Ckpt__Response *resp;
	unsigned v;
	int r;

	/* An old daemon reads only `version` and wants it exact. */
	h.has_version = 1;
	h.version = CL_PROTO_MIN;
	h.has_min_version = 1;
	h.min_version = CL_PROTO_MIN;
	h.has_max_version = 1;
	h.max_version = CL_PROTO_MAX;
	h.client = (char *)"libckpt " CKPT_VERSION_STRING;
	req.op_case = CKPT__REQUEST__OP_HELLO;
	req.hello = &h;
	if ((r = sync_call(c, fd, &req, NULL, 0, &resp, err, len)) != 0)
		return r;
	if (resp->code != 0) {
		r = resp_code(resp);
		snprintf(err, len, "%s", resp_msg(resp));
		goto out;
	}
	if (resp->body_case != CKPT__RESPONSE__BODY_HELLO) {
		snprintf(err, len, "unexpected reply to hello");
		r = CKPT_EPROTO;
		goto out;
	}
	v = resp->hello->has_version ? resp->hello->version : CL_PROTO_MIN;
	if (v < CL_PROTO_MIN || v > CL_PROTO_MAX) {
		snprintf(err, len, "ckptd chose protocol version %u; libckpt %s "
		    "speaks %u..%u", v, CKPT_VERSION_STRING, CL_PROTO_MIN,
		    CL_PROTO_MAX);
		r = CKPT_EVERSION;
		goto out;
	}
	pthread_mutex_lock(&c->lock);
	c->proto = v;
	pthread_mutex_unlock(&c->lock);
	if (resp->hello->daemon != NULL)
		snprintf(c->daemon, sizeof c->daemon, "%s", resp->hello->daemon);
	r = 0;
out:
	ckpt__response__free_unpacked(resp, NULL);
	return r;
}

/* ---- reconnecting ------------------------------------------------------------------ */

/* Sleep ms unless ckpt_disconnect wakes us; 1 when closing. */
static int
backoff_sleep(ckpt_client *c, long ms)
{
	struct timespec ts;
	int closing;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->lock);
	while (!c->closing &&
	    pthread_cond_timedwait(&c->state_cond, &c->lock, &ts) == 0)
		;
	closing = c->closing;
	pthread_mutex_unlock(&c->lock);
	return closing;
}

/* The open managers (closed ones stay valid until the reconnect ends:
 * ckpt_manager_close waits for it in cl_call before freeing). */
static struct ckpt_manager **
managers_snapshot(ckpt_client *c, size_t *n)
{
	struct ckpt_manager *m, **v;
	size_t k = 0;

	pthread_mutex_lock(&c->lock);
	for (m = c->managers; m != NULL; m = m->next)
		k++;
	v = calloc(k + 1, sizeof *v);
	k = 0;
	if (v != NULL)
		for (m = c->managers; m != NULL; m = m->next)
			v[k++] = m;
	pthread_mutex_unlock(&c->lock);
	*n = k;
	return v;
}

/* Fail m's unsettled saves (c->lock held). */
static void
fail_saves_of(ckpt_client *c, struct ckpt_manager *m, int code,
    const char *msg)
{
	struct inflight *s;

	for (s = c->saves; s != NULL; s = s->next)
		if (s->mgr == m && !s->done) {
			c->resend_failed++;
			inflight_finish(c, s, code, msg);
		}
	inflight_reap(c);
	pthread_cond_broadcast(&c->save_cond);
}

/* Open m again on fd with its original options; m->id changes. */
static int
reopen_manager(ckpt_client *c, int fd, struct ckpt_manager *m, char *err,
    size_t len)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__OpenManager *om;
	Ckpt__Response *resp;
	char msg[CKPT_ERRLEN];
	int r;

	pthread_mutex_lock(&c->lock);
	r = m->open_pb == NULL || m->closed;
	pthread_mutex_unlock(&c->lock);
	if (r)
		return 0;
	om = ckpt__open_manager__unpack(NULL, m->open_len, m->open_pb);
	if (om == NULL) {
		snprintf(err, len, "out of memory");
		return CKPT_ENOMEM;
	}
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = om;
	r = sync_call(c, fd, &req, NULL, 0, &resp, err, len);
	ckpt__open_manager__free_unpacked(om, NULL);
	if (r != 0)
		return r;
	pthread_mutex_lock(&c->lock);
	if (resp->code == 0 &&
	    resp->body_case == CKPT__RESPONSE__BODY_OPEN_MANAGER) {
		m->id = resp->open_manager->manager;
		m->gen = c->gen + 1;    /* the connection being set up */
	} else {
		/* the manager stays unusable; its calls fail in the daemon */
		snprintf(msg, sizeof msg, "ckptd restarted and could not "
		    "re-open %s: %s", m->root, resp->code != 0 ?
		    resp_msg(resp) : "unexpected reply");
		m->id = 0;
		fail_saves_of(c, m, resp->code != 0 ? resp_code(resp) :
		    CKPT_EPROTO, msg);
	}
	pthread_mutex_unlock(&c->lock);
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

/* Send s again on fd from its staging buffer. */
static int
resend_save(ckpt_client *c, int fd, struct ckpt_manager *m,
    struct inflight *s, char *err, size_t len)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Response *resp;
	Ckpt__Save *sv;
	char msg[CKPT_ERRLEN];
	int r, sfd;

	if ((sv = ckpt__save__unpack(NULL, s->save_len, s->save_pb)) == NULL) {
		snprintf(err, len, "out of memory");
		return CKPT_ENOMEM;
	}
	sv->has_manager = 1;
	sv->manager = m->id;
	sv->has_force = 1;
	sv->force = 1;          /* the policy decided when it was first sent */
	pthread_mutex_lock(&c->lock);
	req.id = s->id = ++c->next_id;
	s->resent++;
	sfd = s->buf->fd;
	pthread_mutex_unlock(&c->lock);
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = sv;
	r = sync_call(c, fd, &req, &sfd, 1, &resp, err, len);
	ckpt__save__free_unpacked(sv, NULL);
	if (r != 0)
		return r;
	if (resp->code == 0 && resp->body_case == CKPT__RESPONSE__BODY_SAVE &&
	    resp->save->saved) {
		pthread_mutex_lock(&c->lock);
		c->resent++;
		pthread_mutex_unlock(&c->lock);
	}
	if (resp->code != 0 || resp->body_case != CKPT__RESPONSE__BODY_SAVE ||
	    !resp->save->saved) {
		snprintf(msg, sizeof msg, "the connection to ckptd broke "
		    "before step %llu was committed, and sending it again "
		    "failed: %s",
		    (unsigned long long)s->step, resp->code != 0 ?
		    resp_msg(resp) : "the daemon did not take it");
		pthread_mutex_lock(&c->lock);
		c->resend_failed++;
		inflight_finish(c, s, resp->code != 0 ? resp_code(resp) :
		    CKPT_EIO, msg);
		inflight_reap(c);
		pthread_cond_broadcast(&c->save_cond);
		pthread_mutex_unlock(&c->lock);
	}
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

/* The state of step in m's listing: a StepState, or -1 when absent
 * (committed wins over a failure recorded for the same number). */
static int
listed_state(const Ckpt__Response *resp, uint64_t step)
{
	int st = -1;
	size_t k;

	if (resp->code != 0 ||
	    resp->body_case != CKPT__RESPONSE__BODY_LIST_STEPS)
		return -1;
	for (k = 0; k < resp->list_steps->n_steps; k++) {
		const Ckpt__StepInfo *si = resp->list_steps->steps[k];

		if (si->step != step)
			continue;
		if (si->state == CKPT__STEP_STATE__STEP_COMMITTED)
			return CKPT__STEP_STATE__STEP_COMMITTED;
		if (si->state == CKPT__STEP_STATE__STEP_PENDING)
			st = CKPT__STEP_STATE__STEP_PENDING;
	}
	return st;
}

/*
 * Settle m's saves in flight on the new connection: committed when the
 * daemon lists the step; while it lists the step as in progress (the same
 * daemon, only the connection broke) wait for it, up to the reconnect
 * limit; otherwise send it again (a failure recorded for that step number
 * may be older, so only the new attempt tells).
 */
static int
settle_saves(ckpt_client *c, int fd, struct ckpt_manager *m, char *err,
    size_t len)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__ListSteps ls = CKPT__LIST_STEPS__INIT;
	Ckpt__Response *resp = NULL;
	struct inflight *s, **todo = NULL;
	int64_t deadline = now_ms() + c->reconnect_ms;
	size_t n = 0, i;
	int r = 0, pending;

	pthread_mutex_lock(&c->lock);
	for (s = c->saves; s != NULL; s = s->next)
		if (s->mgr == m && !s->done && s->save_pb != NULL)
			n++;
	if (n > 0 && m->id != 0 && (todo = calloc(n, sizeof *todo)) != NULL) {
		n = 0;
		for (s = c->saves; s != NULL; s = s->next)
			if (s->mgr == m && !s->done && s->save_pb != NULL)
				todo[n++] = s;
	}
	pthread_mutex_unlock(&c->lock);
	if (todo == NULL)
		return n > 0 && m->id != 0 ? (snprintf(err, len, "out of "
		    "memory"), CKPT_ENOMEM) : 0;

	ls.has_manager = 1;
	ls.manager = m->id;
	req.op_case = CKPT__REQUEST__OP_LIST_STEPS;
	req.list_steps = &ls;
	for (;;) {
		req.id = 0;
		if ((r = sync_call(c, fd, &req, NULL, 0, &resp, err, len)) != 0)
			goto out;
		for (i = 0, pending = 0; i < n; i++)
			if (listed_state(resp, todo[i]->step) ==
			    CKPT__STEP_STATE__STEP_PENDING)
				pending = 1;
		if (!pending || now_ms() >= deadline)
			break;
		ckpt__response__free_unpacked(resp, NULL);
		resp = NULL;
		if (backoff_sleep(c, 50)) {
			snprintf(err, len, "closing");
			r = CKPT_ECONN;
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		s = todo[i];
		if (listed_state(resp, s->step) ==
		    CKPT__STEP_STATE__STEP_COMMITTED) {
			pthread_mutex_lock(&c->lock);
			c->found_committed++;
			inflight_finish(c, s, 0, "");
			inflight_reap(c);
			pthread_cond_broadcast(&c->save_cond);
			pthread_mutex_unlock(&c->lock);
		} else if ((r = resend_save(c, fd, m, s, err, len)) != 0) {
			break;
		}
	}
out:
	if (resp != NULL)
		ckpt__response__free_unpacked(resp, NULL);
	free(todo);
	return r;
}

/* Hello, managers, saves: make fd a full replacement of the lost socket. */
static int
restore_session(ckpt_client *c, int fd, char *err, size_t len)
{
	struct ckpt_manager **v;
	size_t n, i;
	int r;

	if ((r = hello_on(c, fd, err, len)) != 0)
		return r;
	if ((v = managers_snapshot(c, &n)) == NULL) {
		snprintf(err, len, "out of memory");
		return CKPT_ENOMEM;
	}
	for (i = 0; i < n && r == 0; i++)
		r = reopen_manager(c, fd, v[i], err, len);
	for (i = 0; i < n && r == 0; i++)
		r = settle_saves(c, fd, v[i], err, len);
	free(v);
	return r;
}

/* Down for good: every wait and save ends with CKPT_ECONN. */
static void
client_down(ckpt_client *c, const char *msg)
{
	struct inflight *s;
	char m[CKPT_ERRLEN];

	pthread_mutex_lock(&c->lock);
	c->broken = 1;
	c->reconnecting = 0;
	snprintf(c->broken_msg, sizeof c->broken_msg, "%s", msg);
	wake_pending(c);
	for (s = c->saves; s != NULL; s = s->next) {
		snprintf(m, sizeof m, "%.400s (the save may still complete in "
		    "ckptd)", c->broken_msg);
		inflight_finish(c, s, CKPT_ECONN, m);
	}
	inflight_reap(c);
	pthread_cond_broadcast(&c->save_cond);
	pthread_cond_broadcast(&c->state_cond);
	pthread_mutex_unlock(&c->lock);
}

/*
 * The connection broke (why): dial again until the limit. 1 when a new
 * connection is in place, 0 when the client is down for good.
 */
static int
client_reconnect(ckpt_client *c, const char *why)
{
	char err[CKPT_ERRLEN] = "", msg[CKPT_ERRLEN];
	long backoff = CL_BACKOFF_MIN_MS;
	int64_t start = now_ms();
	unsigned tries = 0;
	int fd, r, stop;

	pthread_mutex_lock(&c->lock);
	c->reconnecting = 1;
	snprintf(c->broken_msg, sizeof c->broken_msg, "%s", why);
	wake_pending(c);
	stop = c->closing || c->reconnect_ms <= 0;
	pthread_mutex_unlock(&c->lock);

	pthread_mutex_lock(&c->send_lock);
	pthread_mutex_lock(&c->lock);
	close(c->fd);
	c->fd = -1;
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->send_lock);

	snprintf(err, sizeof err, "%s", why);
	while (!stop) {
		tries++;
		r = dial(c->path, c->pdir, c->may_autostart, &fd, err,
		    sizeof err);
		if (r == 0) {
			pthread_mutex_lock(&c->lock);
			c->cand_fd = fd;
			c->restoring = 1;
			stop = c->closing;
			pthread_mutex_unlock(&c->lock);
			if (!stop) {
				setup_timeout(fd, c->reconnect_ms);
				r = restore_session(c, fd, err, sizeof err);
				setup_timeout(fd, 0);
			}
			pthread_mutex_lock(&c->send_lock);
			pthread_mutex_lock(&c->lock);
			c->cand_fd = -1;
			c->restoring = 0;
			pthread_cond_broadcast(&c->state_cond);
			if (r == 0 && !c->closing) {
				c->fd = fd;
				c->gen++;
				c->reconnects++;
				c->reconnecting = 0;
				c->broken_msg[0] = '\0';
				pthread_cond_broadcast(&c->state_cond);
				pthread_cond_broadcast(&c->save_cond);
				pthread_mutex_unlock(&c->lock);
				pthread_mutex_unlock(&c->send_lock);
				return 1;
			}
			pthread_mutex_unlock(&c->lock);
			pthread_mutex_unlock(&c->send_lock);
			close(fd);
			if (stop)
				break;
		}
		/* a daemon we must not talk to does not go away by waiting */
		if (r == CKPT_EVERSION || r == CKPT_EACCES)
			break;
		if (now_ms() - start >= c->reconnect_ms)
			break;
		if (backoff_sleep(c, backoff))
			break;
		backoff = backoff * 2 > CL_BACKOFF_MAX_MS ? CL_BACKOFF_MAX_MS :
		    backoff * 2;
	}
	if (c->reconnect_ms <= 0)
		snprintf(msg, sizeof msg, "%s", why);
	else
		snprintf(msg, sizeof msg, "%.200s; gave up reconnecting after "
		    "%u attempts in %lld ms: %.250s", why, tries,
		    (long long)(now_ms() - start), err);
	client_down(c, msg);
	return 0;
}

/* ---- reader thread ------------------------------------------------------------ */

static void *
reader_main(void *arg)
{
	ckpt_client *c = arg;
	char err[CKPT_ERRLEN];
	int fds[CKPT_MAX_FDS];
	size_t nfds;
	Ckpt__Response *resp;
	struct pending *p;

	for (;;) {
		/* only this thread changes c->fd */
		if (wire_recv(c->fd, &resp, fds, &nfds, err, sizeof err) != 0) {
			if (!client_reconnect(c, err))
				return NULL;
			continue;
		}
		if (resp->id == 0) {
			handle_event(c, resp);
			close_fds(fds, nfds);
			ckpt__response__free_unpacked(resp, NULL);
			continue;
		}
		pthread_mutex_lock(&c->lock);
		for (p = c->pending; p != NULL; p = p->next)
			if (p->id == resp->id && !p->done)
				break;
		if (p != NULL) {
			p->resp = resp;
			memcpy(p->fds, fds, nfds * sizeof *fds);
			p->nfds = nfds;
			p->done = 1;
			pthread_cond_signal(&p->cond);
			resp = NULL;
			nfds = 0;
		}
		pthread_mutex_unlock(&c->lock);
		close_fds(fds, nfds);
		if (resp != NULL)
			ckpt__response__free_unpacked(resp, NULL);
	}
}

/* ---- requests ------------------------------------------------------------------- */

/* The op's sub-message field "manager" (by reflection: every request on a
 * manager names it so), or NULL. */
static uint64_t *
req_manager_field(Ckpt__Request *req, protobuf_c_boolean **has)
{
	const ProtobufCFieldDescriptor *of, *mf;
	ProtobufCMessage *sub;

	of = protobuf_c_message_descriptor_get_field(req->base.descriptor,
	    (unsigned)req->op_case);
	if (of == NULL || of->type != PROTOBUF_C_TYPE_MESSAGE)
		return NULL;
	sub = *(ProtobufCMessage **)(void *)((char *)req + of->offset);
	if (sub == NULL)
		return NULL;
	mf = protobuf_c_message_descriptor_get_field_by_name(sub->descriptor,
	    "manager");
	if (mf == NULL || mf->type != PROTOBUF_C_TYPE_UINT64 ||
	    mf->label == PROTOBUF_C_LABEL_REPEATED)
		return NULL;
	*has = mf->quantifier_offset != 0 ? (protobuf_c_boolean *)(void *)
	    ((char *)sub + mf->quantifier_offset) : NULL;
	return (uint64_t *)(void *)((char *)sub + mf->offset);
}

/* Attach what a reconnect needs to re-send the Save req (c->lock held). */
static struct inflight *
save_track(ckpt_client *c, Ckpt__Request *req)
{
	struct inflight *s;
	size_t len;

	for (s = c->saves; s != NULL; s = s->next)
		if (s->id == req->id)
			break;
	if (s == NULL || s->save_pb != NULL || req->save == NULL)
		return s;
	s->step = req->save->step;
	len = protobuf_c_message_get_packed_size(&req->save->base);
	if ((s->save_pb = malloc(len > 0 ? len : 1)) != NULL) {
		protobuf_c_message_pack(&req->save->base, s->save_pb);
		s->save_len = len;
	}
	return s;
}

/* The reply a Save gets when a reconnect settled it (packed and unpacked
 * so the caller frees it like any other). */
static Ckpt__Response *
save_settled_reply(const struct inflight *s, uint64_t id)
{
	Ckpt__Response r = CKPT__RESPONSE__INIT;
	Ckpt__SaveReply sr = CKPT__SAVE_REPLY__INIT;
	uint8_t *buf;
	size_t len;
	Ckpt__Response *out;

	r.id = id;
	r.has_id = 1;
	if (s->done && s->code != 0) {
		r.code = s->code;
		r.has_code = 1;
		r.message = (char *)s->msg;
	} else {
		sr.saved = 1;
		sr.has_saved = 1;
		r.body_case = CKPT__RESPONSE__BODY_SAVE;
		r.save = &sr;
	}
	len = protobuf_c_message_get_packed_size(&r.base);
	if ((buf = malloc(len > 0 ? len : 1)) == NULL)
		return NULL;
	protobuf_c_message_pack(&r.base, buf);
	out = ckpt__response__unpack(NULL, len, buf);
	free(buf);
	return out;
}

/* Open m again on the current connection (see cl_call). */
static int
reopen_live(ckpt_client *c, struct ckpt_manager *m, char *err, size_t len)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__OpenManager *om;
	Ckpt__Response *resp;
	int r;

	om = ckpt__open_manager__unpack(NULL, m->open_len, m->open_pb);
	if (om == NULL) {
		snprintf(err, len, "out of memory");
		return CKPT_ENOMEM;
	}
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = om;
	r = cl_call(c, NULL, &req, NULL, 0, &resp, NULL, NULL);
	ckpt__open_manager__free_unpacked(om, NULL);
	if (r != 0) {
		snprintf(err, len, "%s", errbox_get(&c->err));
		return r;
	}
	if (resp->code != 0 ||
	    resp->body_case != CKPT__RESPONSE__BODY_OPEN_MANAGER) {
		r = resp->code != 0 ? resp_code(resp) : CKPT_EPROTO;
		snprintf(err, len, "ckptd restarted and could not re-open %s: "
		    "%s", m->root, resp->code != 0 ? resp_msg(resp) :
		    "unexpected reply");
		ckpt__response__free_unpacked(resp, NULL);
		return r;
	}
	pthread_mutex_lock(&c->lock);
	m->id = resp->open_manager->manager;
	m->gen = last_call_gen;
	pthread_mutex_unlock(&c->lock);
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

/* Give req its id (a new one when fresh or it has none) and the manager's
 * id on the current connection; register p to receive its Response
 * (c->lock held). Returns the connection's generation. */
static uint64_t
pending_add(ckpt_client *c, struct ckpt_manager *m, Ckpt__Request *req,
    struct pending *p, int fresh)
{
	protobuf_c_boolean *has_mgr = NULL;
	uint64_t *mgr_field = req_manager_field(req, &has_mgr);

	if (fresh || req->id == 0)
		req->id = ++c->next_id;
	req->has_id = 1;
	if (m != NULL && mgr_field != NULL) {
		*mgr_field = m->id;     /* new after a reconnect */
		if (has_mgr != NULL)
			*has_mgr = 1;
	}
	p->id = req->id;
	p->done = 0;
	p->next = c->pending;
	c->pending = p;
	return c->gen;
}

/* Unlink p from the requests waiting for a Response (c->lock held). */
static void
pending_unlink(ckpt_client *c, struct pending *p)
{
	struct pending **pp;

	for (pp = &c->pending; *pp != NULL; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
}

/* Send req on the connection of generation gen, unless the reader has
 * replaced it since; a send that breaks the socket hands it to the
 * reader. */
static int
send_on(ckpt_client *c, uint64_t gen, Ckpt__Request *req, const int *fds,
    size_t nfds, char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&c->send_lock);
	if (c->gen == gen && c->fd >= 0) {
		r = wire_send(c->fd, &req->base, fds, nfds, err, errlen);
		if (r == CKPT_ECONN)
			shutdown(c->fd, SHUT_RDWR);     /* the reader takes over */
	} else {
		snprintf(err, errlen, "connection to ckptd lost");
		r = CKPT_ECONN;
	}
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

static void
pending_free(struct pending *p)
{
	if (p->resp != NULL)
		ckpt__response__free_unpacked(p->resp, NULL);
	close_fds(p->fds, p->nfds);
	pthread_cond_destroy(&p->cond);
	free(p);
}

/* A Response whose code is not 0 as the daemon's failure: its message
 * set on c (and m), the Response freed, the code returned. */
static int
resp_failed(ckpt_client *c, struct ckpt_manager *m, Ckpt__Response **resp)
{
	int code;

	if ((*resp)->code == 0)
		return 0;
	code = resp_code(*resp);
	cl_fail(c, m, code, "%s", resp_msg(*resp));
	ckpt__response__free_unpacked(*resp, NULL);
	*resp = NULL;
	return code;
}

struct pending *
cl_ask(ckpt_client *c, struct ckpt_manager *m, Ckpt__Request *req)
{
	struct pending *p;
	protobuf_c_boolean *has_mgr = NULL;
	char err[CKPT_ERRLEN];
	uint64_t gen;
	int named = m != NULL && req_manager_field(req, &has_mgr) != NULL;

	if ((p = calloc(1, sizeof *p)) == NULL)
		return NULL;
	pthread_cond_init(&p->cond, NULL);
	pthread_mutex_lock(&c->lock);
	if (c->reconnecting || c->broken ||
	    (named && m->open_pb != NULL && m->gen != c->gen)) {
		pthread_mutex_unlock(&c->lock);
		pending_free(p);
		return NULL;
	}
	gen = pending_add(c, m, req, p, 1);
	pthread_mutex_unlock(&c->lock);
	if (send_on(c, gen, req, NULL, 0, err, sizeof err) != 0) {
		pthread_mutex_lock(&c->lock);
		pending_unlink(c, p);
		pthread_mutex_unlock(&c->lock);
		pending_free(p);
		return NULL;
	}
	return p;
}

int
cl_answer(ckpt_client *c, struct ckpt_manager *m, struct pending *p,
    Ckpt__Response **resp)
{
	*resp = NULL;
	pthread_mutex_lock(&c->lock);
	while (!p->done)
		pthread_cond_wait(&p->cond, &c->lock);
	pending_unlink(c, p);
	pthread_mutex_unlock(&c->lock);
	if (p->resp == NULL) {
		pending_free(p);
		return CKPT_ECONN;
	}
	*resp = p->resp;
	p->resp = NULL;
	pending_free(p);
	return resp_failed(c, m, resp);
}

int
cl_call(ckpt_client *c, struct ckpt_manager *m, Ckpt__Request *req,
    const int *fds, size_t nfds, Ckpt__Response **resp, int *rfds,
    size_t *nrfds)
{
	struct pending *p;
	struct inflight *save = NULL;
	protobuf_c_boolean *has_mgr = NULL;
	uint64_t *mgr_field, gen = 0;
	char err[CKPT_ERRLEN];
	int r, tries = 0, is_save = req->op_case == CKPT__REQUEST__OP_SAVE;

	*resp = NULL;
	if (nrfds != NULL)
		*nrfds = 0;
	mgr_field = req_manager_field(req, &has_mgr);
	if ((p = calloc(1, sizeof *p)) == NULL)
		return cl_fail(c, m, CKPT_ENOMEM, "out of memory");
	pthread_cond_init(&p->cond, NULL);
again:
	pthread_mutex_lock(&c->lock);
	if (req->op_case == CKPT__REQUEST__OP_CLOSE_MANAGER && m == NULL) {
		/* ckpt_manager_close, its manager already unlinked: it need
		 * not wait for the daemon to come back, only for a re-open
		 * in progress (which may still use the handle) to end */
		while (c->restoring)
			pthread_cond_wait(&c->state_cond, &c->lock);
		if (c->reconnecting && !c->broken) {
			snprintf(err, sizeof err, "ckptd is away (reconnecting): "
			    "the manager was closed here only");
			r = CKPT_ECONN;
			pthread_mutex_unlock(&c->lock);
			goto fail;
		}
	}
	/* a retry waits until the reader has replaced the broken socket */
	while (c->reconnecting || (tries > 0 && c->gen == gen && !c->broken))
		pthread_cond_wait(&c->state_cond, &c->lock);
	if (c->broken) {
		snprintf(err, sizeof err, "%s", c->broken_msg);
		r = CKPT_ECONN;
		pthread_mutex_unlock(&c->lock);
		goto fail;
	}
	if (tries > 0 && is_save) {
		/* the reconnect settled this save: report how */
		if (save != NULL && !save->done && save->save_pb == NULL)
			inflight_finish(c, save, CKPT_ENOMEM, "connection to "
			    "ckptd lost while sending a save that could not be "
			    "kept for sending again (out of memory)");
		pthread_mutex_unlock(&c->lock);
		r = 0;
		goto settled;
	}
	if (m != NULL && mgr_field != NULL && m->open_pb != NULL &&
	    m->gen != c->gen) {
		/* opened on a connection that broke after the reconnect
		 * re-opened the others: open it on this one first */
		pthread_mutex_unlock(&c->lock);
		if ((r = reopen_live(c, m, err, sizeof err)) != 0)
			goto fail;
		goto again;
	}
	gen = pending_add(c, m, req, p, tries > 0);
	if (is_save)
		save = save_track(c, req);
	pthread_mutex_unlock(&c->lock);

	r = send_on(c, gen, req, fds, nfds, err, sizeof err);

	pthread_mutex_lock(&c->lock);
	while (r == 0 && !p->done)
		pthread_cond_wait(&p->cond, &c->lock);
	pending_unlink(c, p);
	if (r == 0 && p->resp == NULL) {
		snprintf(err, sizeof err, "%s", c->broken_msg);
		r = CKPT_ECONN;
	}
	pthread_mutex_unlock(&c->lock);

	/* Broken under us: wait for the reconnect and go again (a request
	 * on a manager we cannot name again is not repeated). */
	if (r == CKPT_ECONN && tries < CL_MAX_RETRIES &&
	    !(mgr_field != NULL && m == NULL)) {
		tries++;
		goto again;
	}
	if (r != 0)
		goto fail;
	last_call_gen = gen;
	pthread_cond_destroy(&p->cond);
	*resp = p->resp;
	if (rfds != NULL && nrfds != NULL) {
		memcpy(rfds, p->fds, p->nfds * sizeof *rfds);
		*nrfds = p->nfds;
	} else {
		close_fds(p->fds, p->nfds);
	}
	free(p);
	return 0;

settled:
	pthread_cond_destroy(&p->cond);
	free(p);
	pthread_mutex_lock(&c->lock);
	*resp = save != NULL ? save_settled_reply(save, req->id) : NULL;
	pthread_mutex_unlock(&c->lock);
	if (*resp == NULL)
		return cl_fail(c, m, save != NULL ? CKPT_ENOMEM : CKPT_ECONN,
		    "%s", save != NULL ? "out of memory" :
		    "connection to ckptd lost while sending a save");
	return 0;

fail:
	pending_free(p);
	return cl_fail(c, m, r, "%s", err);
}

int
cl_rpc(ckpt_client *c, struct ckpt_manager *m, Ckpt__Request *req,
    Ckpt__Response **resp)
{
	int r;

	if ((r = cl_call(c, m, req, NULL, 0, resp, NULL, NULL)) != 0)
		return r;
	return resp_failed(c, m, resp);
}

int
cl_remember_open(struct ckpt_manager *m, const Ckpt__OpenManager *om)
{
	size_t len = protobuf_c_message_get_packed_size(&om->base);

	if ((m->open_pb = malloc(len > 0 ? len : 1)) == NULL)
		return CKPT_ENOMEM;
	protobuf_c_message_pack(&om->base, m->open_pb);
	m->open_len = len;
	m->gen = last_call_gen;
	return 0;
}

/* ---- connecting -------------------------------------------------------------------- */

/* Free a manager handle without talking to the daemon. */
void
cl_free_manager(struct ckpt_manager *m)
{
	errbox_destroy(&m->err);
	free(m->open_pb);
	free(m->err_seen);
	free(m->root);
	free(m);
}

/* End m's background save, if any: its copy is done and its Save answered. */
void
cl_join_bg(struct ckpt_manager *m)
{
	ckpt_client *c = m->c;
	pthread_t th;

	pthread_mutex_lock(&c->lock);
	while (m->bg_joining)
		pthread_cond_wait(&c->save_cond, &c->lock);
	if (m->bg_live) {
		m->bg_joining = 1;
		th = m->bg_thread;
		pthread_mutex_unlock(&c->lock);
		pthread_join(th, NULL);
		pthread_mutex_lock(&c->lock);
		m->bg_live = 0;
		m->bg_joining = 0;
		pthread_cond_broadcast(&c->save_cond);
	}
	pthread_mutex_unlock(&c->lock);
}

static void client_free(ckpt_client *c);

static long
reconnect_limit(void)
{
	const char *v = getenv("CKPT_RECONNECT_TIMEOUT_MS");
	char *end;
	long ms;

	if (v == NULL || *v == '\0')
		return CKPT_RECONNECT_MS;
	errno = 0;
	ms = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || ms < 0)
		return CKPT_RECONNECT_MS;
	return ms;
}

CKPT_API int
ckpt_connect(const char *socket_path, ckpt_client **out)
{
	char path[256], userpath[256], pdir[64], err[CKPT_ERRLEN];
	const char *env, *auto_env;
	int fd, r, explicit_path = 1, may_autostart;
	ckpt_client *c;

	connect_err[0] = '\0';
	if (out == NULL) {
		snprintf(connect_err, sizeof connect_err, "out is NULL");
		return CKPT_EINVAL;
	}
	*out = NULL;
	if (user_socket_path(userpath, sizeof userpath, pdir,
	    sizeof pdir) != 0) {
		snprintf(connect_err, sizeof connect_err,
		    "$XDG_RUNTIME_DIR is too long");
		return CKPT_ECONN;
	}
	if (socket_path != NULL && *socket_path != '\0') {
		env = socket_path;
	} else if ((env = getenv("CKPTD_SOCKET")) != NULL && *env != '\0') {
		;
	} else if (access(SYSTEM_SOCKET, F_OK) == 0) {
		env = SYSTEM_SOCKET;
		explicit_path = 0;
	} else {
		env = userpath;
		explicit_path = 0;
	}
	if (strlen(env) >= sizeof ((ckpt_client *)0)->path) {
		snprintf(connect_err, sizeof connect_err,
		    "socket path too long: %s", env);
		return CKPT_ECONN;
	}
	strcpy(path, env);
	auto_env = getenv("CKPTD_AUTOSTART");
	may_autostart = !(auto_env != NULL && strcmp(auto_env, "0") == 0);

	if (!explicit_path && strcmp(path, userpath) != 0) {
		/* the system socket: when it exists but nothing answers,
		 * fall back to the per-user one */
		if ((fd = try_connect(path)) < 0 && absent(errno)) {
			strcpy(path, userpath);
		} else if (fd < 0) {
			snprintf(connect_err, sizeof connect_err, "cannot "
			    "connect to ckptd at %s: %s", path, strerror(errno));
			return CKPT_ECONN;
		} else if ((r = peer_trusted(fd, path, err, sizeof err)) != 0) {
			close(fd);
			snprintf(connect_err, sizeof connect_err, "%s", err);
			return r;
		}
	} else {
		fd = -1;
	}
	if (strcmp(path, userpath) != 0)
		pdir[0] = '\0';
	if (fd < 0 && (r = dial(path, pdir, may_autostart, &fd, err,
	    sizeof err)) != 0) {
		snprintf(connect_err, sizeof connect_err, "%s", err);
		return r;
	}

	if ((c = calloc(1, sizeof *c)) == NULL) {
		close(fd);
		snprintf(connect_err, sizeof connect_err, "out of memory");
		return CKPT_ENOMEM;
	}
	c->fd = fd;
	c->cand_fd = -1;
	c->gen = 1;
	snprintf(c->path, sizeof c->path, "%s", path);
	snprintf(c->pdir, sizeof c->pdir, "%s", pdir);
	c->may_autostart = may_autostart;
	c->reconnect_ms = reconnect_limit();
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_cond_init(&c->save_cond, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&c->state_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	errbox_init(&c->err);
	setup_timeout(fd, CL_HELLO_TIMEOUT_MS);
	r = hello_on(c, fd, err, sizeof err);
	setup_timeout(fd, 0);
	if (r != 0) {
		snprintf(connect_err, sizeof connect_err, "%s", err);
		client_free(c);
		/* The daemon's own refusals keep their code (a version
		 * mismatch, a per-user limit); the rest is "cannot reach". */
		return r == CKPT_EVERSION || r == CKPT_ENOMEM ||
		    r == CKPT_ELIMIT || r == CKPT_EACCES ? r : CKPT_ECONN;
	}
	if ((r = pthread_create(&c->reader, NULL, reader_main, c)) != 0) {
		snprintf(connect_err, sizeof connect_err,
		    "cannot create a thread: %s", strerror(r));
		client_free(c);
		return CKPT_ENOMEM;
	}
	c->reader_started = 1;
	*out = c;
	return 0;
}

static void
client_free(ckpt_client *c)
{
	struct inflight *s, *ns;
	struct ckpt_manager *m, *nm;

	/* background saves still copying or sending end first */
	for (m = c->managers; m != NULL; m = m->next)
		cl_join_bg(m);
	cow_ctx_destroy(c);
	if (c->reader_started) {
		/* stop a reconnect in progress, then the reader itself */
		pthread_mutex_lock(&c->lock);
		c->closing = 1;
		if (c->cand_fd >= 0)
			shutdown(c->cand_fd, SHUT_RDWR);
		if (c->fd >= 0)
			shutdown(c->fd, SHUT_RDWR);
		pthread_cond_broadcast(&c->state_cond);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->reader, NULL);
	}
	if (c->fd >= 0)
		close(c->fd);
	for (m = c->managers; m != NULL; m = nm) {
		nm = m->next;
		cl_free_manager(m);
	}
	for (s = c->saves; s != NULL; s = ns) {
		ns = s->next;
		if (s->buf != NULL)
			staging_release(c, s->buf);
		free(s->save_pb);
		free(s);
	}
	staging_destroy_all(c);
	errbox_destroy(&c->err);
	pthread_cond_destroy(&c->state_cond);
	pthread_cond_destroy(&c->save_cond);
	pthread_mutex_destroy(&c->send_lock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

CKPT_API void
ckpt_disconnect(ckpt_client *c)
{
	if (c != NULL)
		client_free(c);
}

CKPT_API const char *
ckpt_client_errmsg(const ckpt_client *c)
{
	if (c == NULL)
		return connect_err[0] != '\0' ? connect_err : "no client";
	return errbox_get(&c->err);
}

CKPT_API int
ckpt_ping(ckpt_client *c)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Ping ping = CKPT__PING__INIT;
	Ckpt__Response *resp;
	int r;

	if (c == NULL)
		return CKPT_EINVAL;
	req.op_case = CKPT__REQUEST__OP_PING;
	req.ping = &ping;
	if ((r = cl_rpc(c, NULL, &req, &resp)) != 0)
		return r;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_status_get(ckpt_client *c, ckpt_status *out)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Status st = CKPT__STATUS__INIT;
	Ckpt__Response *resp;
	const Ckpt__StatusReply *s;
	int r;

	if (c == NULL || out == NULL)
		return CKPT_EINVAL;
	req.op_case = CKPT__REQUEST__OP_STATUS;
	req.status = &st;
	if ((r = cl_rpc(c, NULL, &req, &resp)) != 0)
		return r;
	if (resp->body_case != CKPT__RESPONSE__BODY_STATUS) {
		ckpt__response__free_unpacked(resp, NULL);
		return cl_fail(c, NULL, CKPT_EPROTO, "unexpected reply to status");
	}
	s = resp->status;
	memset(out, 0, sizeof *out);
	snprintf(out->version, sizeof out->version, "%s",
	    s->version != NULL ? s->version : "");
	out->uptime_secs = s->uptime_secs;
	out->connections = s->connections;
	out->managers = s->managers;
	out->queued_saves = s->queued_saves;
	out->inflight_saves = s->inflight_saves;
	out->waiting_for_memory = s->waiting_for_memory;
	out->workers = s->workers;
	out->staging_bytes = s->staging_bytes;
	out->memory_budget = s->memory_budget;
	out->saves_committed = s->saves_committed;
	out->saves_failed = s->saves_failed;
	out->bytes_written = s->bytes_written;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_status_coordination(ckpt_client *c, char *buf, size_t len)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Status st = CKPT__STATUS__INIT;
	Ckpt__Response *resp;
	int r;

	if (c == NULL || buf == NULL || len == 0)
		return CKPT_EINVAL;
	buf[0] = '\0';
	req.op_case = CKPT__REQUEST__OP_STATUS;
	req.status = &st;
	if ((r = cl_rpc(c, NULL, &req, &resp)) != 0)
		return r;
	if (resp->body_case != CKPT__RESPONSE__BODY_STATUS) {
		ckpt__response__free_unpacked(resp, NULL);
		return cl_fail(c, NULL, CKPT_EPROTO, "unexpected reply to status");
	}
	snprintf(buf, len, "%s", resp->status->coordination != NULL ?
	    resp->status->coordination : "unknown");
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

CKPT_API int
ckpt_client_info_get(ckpt_client *c, ckpt_client_info *out)
{
	if (c == NULL || out == NULL)
		return CKPT_EINVAL;
	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&c->lock);
	out->protocol_version = c->proto;
	out->reconnects = c->reconnects;
	out->saves_found_committed = c->found_committed;
	out->saves_resent = c->resent;
	out->saves_failed = c->resend_failed;
	pthread_mutex_unlock(&c->lock);
	return 0;
}
