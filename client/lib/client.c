/*
 * client.c - the connection to ckptd.
 *
 * One Unix stream socket per ckpt_client. Callers send requests under
 * send_lock and sleep on their own condition variable; a reader thread
 * receives every frame and hands a Response to the pending request with
 * the same id, or handles it as an event (id 0: SaveDone). A request that
 * waits in the daemon (wait_for_step, wait_saves) therefore never blocks
 * other requests on the same client. When the connection breaks, every
 * waiter wakes with CKPT_ECONN.
 *
 * Autostart: when nothing answers on the socket and $CKPTD_AUTOSTART is
 * not "0", a per-user daemon is spawned (`ckptd --socket PATH`; it
 * daemonizes and its parent exits once it listens). An flock on
 * "<socket>.autostart" makes concurrent first users start only one daemon
 * (ckptd itself holds "<socket>.lock" while it binds, so the client must
 * not hold that one while waiting for the daemon).
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

static __thread char connect_err[CKPT_ERRLEN];

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

uint64_t
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

/* ---- reader thread ------------------------------------------------------------ */

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
			snprintf(m->err_msg, sizeof m->err_msg, "%s",
			    msg != NULL && *msg != '\0' ? msg : ckpt_strerror(code));
		}
	}
	if (s->buf != NULL) {
		staging_release(c, s->buf);
		s->buf = NULL;
	}
}

/* Unlink and free finished saves nobody holds (c->lock held). */
void
inflight_reap(ckpt_client *c)
{
	struct inflight **pp = &c->saves, *s;

	while ((s = *pp) != NULL) {
		if (s->done && !s->held) {
			*pp = s->next;
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
	for (s = c->saves; s != NULL; s = s->next)
		if (s->id == sd->save_id)
			break;
	if (s != NULL) {
		inflight_finish(c, s, sd->code, sd->message);
		inflight_reap(c);
		pthread_cond_broadcast(&c->save_cond);
	}
	pthread_mutex_unlock(&c->lock);
}

static void
client_break(ckpt_client *c, const char *msg)
{
	struct pending *p;
	struct inflight *s;

	pthread_mutex_lock(&c->lock);
	if (!c->broken) {
		c->broken = 1;
		snprintf(c->broken_msg, sizeof c->broken_msg, "%s", msg);
	}
	for (p = c->pending; p != NULL; p = p->next) {
		p->done = 1;
		pthread_cond_signal(&p->cond);
	}
	for (s = c->saves; s != NULL; s = s->next) {
		char m[CKPT_ERRLEN];
		snprintf(m, sizeof m, "%.400s (the save may still complete in ckptd)",
		    c->broken_msg);
		inflight_finish(c, s, CKPT_ECONN, m);
	}
	inflight_reap(c);
	pthread_cond_broadcast(&c->save_cond);
	pthread_mutex_unlock(&c->lock);
}

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
		if (wire_recv(c->fd, &resp, fds, &nfds, err, sizeof err) != 0) {
			client_break(c, err);
			return NULL;
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

int
cl_call(ckpt_client *c, struct ckpt_manager *m, Ckpt__Request *req,
    const int *fds, size_t nfds, Ckpt__Response **resp, int *rfds,
    size_t *nrfds)
{
	struct pending *p, **pp;
	char err[CKPT_ERRLEN];
	int r;

	*resp = NULL;
	if (nrfds != NULL)
		*nrfds = 0;
	if ((p = calloc(1, sizeof *p)) == NULL)
		return cl_fail(c, m, CKPT_ENOMEM, "out of memory");
	pthread_cond_init(&p->cond, NULL);
	pthread_mutex_lock(&c->lock);
	if (c->broken) {
		snprintf(err, sizeof err, "%s", c->broken_msg);
		pthread_mutex_unlock(&c->lock);
		pthread_cond_destroy(&p->cond);
		free(p);
		return cl_fail(c, m, CKPT_ECONN, "%s", err);
	}
	if (req->id == 0)
		req->id = ++c->next_id;
	req->has_id = 1;
	p->id = req->id;
	p->next = c->pending;
	c->pending = p;
	pthread_mutex_unlock(&c->lock);

	pthread_mutex_lock(&c->send_lock);
	r = wire_send(c->fd, &req->base, fds, nfds, err, sizeof err);
	pthread_mutex_unlock(&c->send_lock);

	pthread_mutex_lock(&c->lock);
	while (r == 0 && !p->done)
		pthread_cond_wait(&p->cond, &c->lock);
	for (pp = &c->pending; *pp != NULL; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	if (r == 0 && p->resp == NULL) {
		snprintf(err, sizeof err, "%s", c->broken_msg);
		r = CKPT_ECONN;
	}
	pthread_mutex_unlock(&c->lock);
	pthread_cond_destroy(&p->cond);

	if (r != 0) {
		if (p->resp != NULL)
			ckpt__response__free_unpacked(p->resp, NULL);
		close_fds(p->fds, p->nfds);
		free(p);
		return cl_fail(c, m, r, "%s", err);
	}
	*resp = p->resp;
	if (rfds != NULL && nrfds != NULL) {
		memcpy(rfds, p->fds, p->nfds * sizeof *rfds);
		*nrfds = p->nfds;
	} else {
		close_fds(p->fds, p->nfds);
	}
	free(p);
	return 0;
}

int
cl_rpc(ckpt_client *c, struct ckpt_manager *m, Ckpt__Request *req,
    Ckpt__Response **resp)
{
	int r, code;

	if ((r = cl_call(c, m, req, NULL, 0, resp, NULL, NULL)) != 0)
		return r;
	if ((*resp)->code != 0) {
		code = (*resp)->code;
		if (code > 0 || code < CKPT_ECODE_MIN)
			code = CKPT_EINTERNAL;
		cl_fail(c, m, code, "%s", (*resp)->message != NULL &&
		    *(*resp)->message != '\0' ? (*resp)->message :
		    ckpt_strerror(code));
		ckpt__response__free_unpacked(*resp, NULL);
		*resp = NULL;
		return code;
	}
	return 0;
}

/* ---- connecting -------------------------------------------------------------------- */

static int
user_socket_path(char *buf, size_t len)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (xdg != NULL && *xdg == '/')
		n = snprintf(buf, len, "%s/ckptd.sock", xdg);
	else
		n = snprintf(buf, len, "/tmp/ckptd-%u.sock", (unsigned)getuid());
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

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Start `ckptd --socket path` and wait until it answers. */
static int
autostart(const char *path, int *fdp)
{
	char lockpath[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
	const char *bin = getenv("CKPTD_BIN");
	char *argv[4];
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int lockfd, fd, r, st, waited = 0, e = 0;

	snprintf(lockpath, sizeof lockpath, "%s.autostart", path);
	lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd >= 0)
		while (flock(lockfd, LOCK_EX) != 0 && errno == EINTR)
			;
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
	argv[3] = NULL;
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
		snprintf(connect_err, sizeof connect_err,
		    "cannot start %s: %s", bin, strerror(r));
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
			snprintf(connect_err, sizeof connect_err, "%s --socket %s "
			    "exited with status %d", bin, path, WEXITSTATUS(st));
		else
			snprintf(connect_err, sizeof connect_err, "%s --socket %s "
			    "was killed by signal %d", bin, path, WTERMSIG(st));
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
	snprintf(connect_err, sizeof connect_err, "started %s but cannot "
	    "connect to %s: %s", bin, path, strerror(e));
	r = CKPT_ECONN;
out:
	if (lockfd >= 0)
		close(lockfd);
	return r;
}

static int
client_hello(ckpt_client *c)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Hello h = CKPT__HELLO__INIT;
	Ckpt__Response *resp;
	int r;

	h.has_version = 1;
	h.version = CKPT__VERSION__PROTOCOL_VERSION;
	h.client = (char *)"libckpt " CKPT_VERSION_STRING;
	req.op_case = CKPT__REQUEST__OP_HELLO;
	req.hello = &h;
	if ((r = cl_rpc(c, NULL, &req, &resp)) != 0)
		return r;
	if (resp->body_case == CKPT__RESPONSE__BODY_HELLO) {
		if (resp->hello->has_version &&
		    resp->hello->version != CKPT__VERSION__PROTOCOL_VERSION) {
			cl_fail(c, NULL, CKPT_EVERSION, "protocol version mismatch: "
			    "libckpt speaks %d, ckptd %u",
			    CKPT__VERSION__PROTOCOL_VERSION, resp->hello->version);
			ckpt__response__free_unpacked(resp, NULL);
			return CKPT_EVERSION;
		}
		if (resp->hello->daemon != NULL)
			snprintf(c->daemon, sizeof c->daemon, "%s",
			    resp->hello->daemon);
	}
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

static void client_free(ckpt_client *c);

CKPT_API int
ckpt_connect(const char *socket_path, ckpt_client **out)
{
	char path[256], userpath[256];
	const char *env, *auto_env;
	int fd, r, e, explicit_path = 1;
	ckpt_client *c;

	connect_err[0] = '\0';
	if (out == NULL) {
		snprintf(connect_err, sizeof connect_err, "out is NULL");
		return CKPT_EINVAL;
	}
	*out = NULL;
	if (user_socket_path(userpath, sizeof userpath) != 0) {
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
	if (strlen(env) >= sizeof path) {
		snprintf(connect_err, sizeof connect_err,
		    "socket path too long: %s", env);
		return CKPT_ECONN;
	}
	strcpy(path, env);

	fd = try_connect(path);
	e = errno;
	if (fd < 0 && !explicit_path && strcmp(path, userpath) != 0 &&
	    absent(e)) {
		/* the system socket exists but nothing answers: per-user */
		strcpy(path, userpath);
		fd = try_connect(path);
		e = errno;
	}
	auto_env = getenv("CKPTD_AUTOSTART");
	if (fd < 0 && absent(e) &&
	    !(auto_env != NULL && strcmp(auto_env, "0") == 0)) {
		if ((r = autostart(path, &fd)) != 0) {
			char why[CKPT_ERRLEN];
			snprintf(why, sizeof why, "%s", connect_err);
			snprintf(connect_err, sizeof connect_err, "cannot connect "
			    "to ckptd at %s (%s), and autostart failed: %.300s",
			    path, strerror(e), why);
			return r;
		}
	} else if (fd < 0) {
		snprintf(connect_err, sizeof connect_err,
		    "cannot connect to ckptd at %s: %s", path, strerror(e));
		return CKPT_ECONN;
	}

	if ((c = calloc(1, sizeof *c)) == NULL) {
		close(fd);
		snprintf(connect_err, sizeof connect_err, "out of memory");
		return CKPT_ENOMEM;
	}
	c->fd = fd;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_cond_init(&c->save_cond, NULL);
	errbox_init(&c->err);
	if ((r = pthread_create(&c->reader, NULL, reader_main, c)) != 0) {
		snprintf(connect_err, sizeof connect_err,
		    "cannot create a thread: %s", strerror(r));
		client_free(c);
		return CKPT_ENOMEM;
	}
	c->reader_started = 1;
	if ((r = client_hello(c)) != 0) {
		snprintf(connect_err, sizeof connect_err, "%s",
		    errbox_get(&c->err));
		client_free(c);
		return r;
	}
	*out = c;
	return 0;
}

static void
client_free(ckpt_client *c)
{
	struct inflight *s, *ns;
	struct ckpt_manager *m, *nm;

	if (c->reader_started) {
		shutdown(c->fd, SHUT_RDWR);
		pthread_join(c->reader, NULL);
	}
	close(c->fd);
	for (m = c->managers; m != NULL; m = nm) {
		nm = m->next;
		mgr_free_handle(m);
	}
	for (s = c->saves; s != NULL; s = ns) {
		ns = s->next;
		if (s->buf != NULL)
			staging_release(c, s->buf);
		free(s);
	}
	staging_destroy_all(c);
	errbox_destroy(&c->err);
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
