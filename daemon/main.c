/*
 * main.c - ckptd start-up, daemonization, signals and shutdown.
 *
 * Start-up (fatal errors allowed only here):
 *   parse options -> fork into the background unless --foreground or
 *   under systemd -> state dir -> listening socket (socket activation, or
 *   our own with stale-socket detection) -> index_open -> worker_init ->
 *   save_init -> manager_init -> conn_listen -> metrics_start -> signals ->
 *   health_start -> ready
 *   (sd_notify READY=1, and the parent of a forked daemon exits 0 only
 *   now, so a client that started us can connect at once).
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting, tell the open managers the
 * node is going down (preempt.c: reached_preemption becomes true); with
 * --preempt-grace, give them that long to take their preemption save and
 * close; then wait until no save is pending, leave the loop, close
 * connections, drain the workers, free everything, exit 0. A second
 * signal ends the grace period.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "common.h"
#include "config.h"
#include "conn.h"
#include "coord.h"
#include "dispatch.h"
#include "preempt.h"
#include "health.h"
#include "index.h"
#include "log.h"
#include "manager.h"
#include "metrics.h"
#include "s3acl.h"
#include "save.h"
#include "tier.h"
#include "stats.h"
#include "user.h"
#include "worker.h"

#define MAIN_LOCK_WAIT_MS 10000
#define MAIN_LOG_FILE "ckptd.log"

static struct {
	struct config cfg;              /* effective settings */
	struct config cli;              /* given on the command line */
	char cfg_file[PATH_MAX];        /* "" when none */
	int cfg_explicit;               /* --config: the file must exist */
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char state_dir[PATH_MAX];
	char log_path[PATH_MAX];
	uint64_t budget;
	const struct coord_ops *coord;  /* local, or etcd (--etcd) */
	int64_t start_ns;
	int64_t idle_since_ns;       /* 0: busy at the last look */
	char private_dir[64];        /* per-user socket dir to check, or "" */

	int lfd;
	int activated;               /* socket from systemd */
	int own_socket;              /* we created the path: unlink at exit */
	dev_t sock_dev;
	ino_t sock_ino;
	int ready_fd;                /* write end of the daemonize pipe */
	int daemonized;

	struct event_base *base;
	struct event *sig_ev[3];
	struct event *idle_ev;
	int stopping;
	int64_t grace_end_ns;
	struct event *grace_ev;      /* polls for the managers to close */
} M = { .lfd = -1, .ready_fd = -1 };

/* ---- the figures (stats.h), for status, /metrics and STATUS= -------------- */

static void
main_stats(struct stats *out, void *arg)
{
	struct save_counts sc;
	struct tier_stats ts;

	(void)arg;
	memset(out, 0, sizeof *out);
	manager_stats(out);
	save_stats(&sc);
	out->uptime_secs = (double)(now_mono_ns() - M.start_ns) / 1e9;
	out->queued_saves = sc.queued;
	out->inflight_saves = sc.inflight;
	out->waiting_for_memory = sc.queued;
	out->staging_bytes = sc.staging;
	out->memory_budget = sc.budget != 0 ? sc.budget : M.budget;
	out->saves_committed = sc.committed;
	out->saves_failed = sc.failed;
	out->bytes_written = sc.bytes_written;
	if (M.coord != NULL)
		M.coord->status(out->coordination, sizeof out->coordination);
	tier_stats(&ts);
	out->tier_bytes_pending = ts.bytes_pending;
	out->tier_uploads_inflight = ts.uploads_inflight;
	out->tier_uploads_queued = ts.uploads_queued;
	out->tier_uploads_given_up = ts.uploads_given_up;
	out->tier_uploads_done = ts.uploads_done;
	out->tier_upload_failures = ts.upload_failures;
}

static const struct stats_source main_stats_source = { main_stats, NULL };

/* Saves accepted and not yet finished (committed or failed). */
static unsigned
main_saves_pending(void)
{
	struct save_counts sc;

	save_stats(&sc);
	return sc.queued + sc.inflight;
}

/* ---- what a reload applies above config.c --------------------------------- */

static void
main_set_budget(uint64_t budget)
{
	M.budget = budget;
	save_set_budget(budget);
}

/* What the manager requests ask of the saves, above them. */
static const struct manager_saves main_manager_saves = {
	.pending_step = save_pending_step,
	.latest_pending = save_latest_pending,
	.pending_steps = save_pending_steps,
};

/* A reload changed the s3-allow grants: a list s3acl_set refuses (a user
 * that does not exist) leaves the grants held. */
static void
main_set_s3_allow(const char *list)
{
	ckd_err e = { 0 };

	if (s3acl_set(list, &e) != 0)
		log_error("reload: %s; the s3-allow grants held stay", e.msg);
	else
		log_info("s3-allow: %u grant%s", s3acl_count(),
		    s3acl_count() == 1 ? "" : "s");
}

static const struct config_hooks main_config_hooks = {
	.memory_budget = main_set_budget,
	.stall_timeout = health_set_stall_timeout,
	.s3_allow = main_set_s3_allow,
};

/* ---- options ------------------------------------------------------------- */

static int
main_set_path(char *dst, size_t size, const char *what, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

static int
main_set_path(char *dst, size_t size, const char *what, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(dst, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		fprintf(stderr, "ckptd: %s path too long\n", what);
		return -1;
	}
	return 0;
}

static const char *
main_env_abs(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && v[0] == '/' ? v : NULL;
}

/* Fill the socket and state dir of c that were not given; make relative
 * paths absolute (from the directory we were started in). */
static int
main_resolve(struct config *c)
{
	const char *sock = c->socket[0] ? c->socket : NULL;
	const char *state = c->state_dir[0] ? c->state_dir : NULL;
	char socket_path[sizeof c->socket], state_dir[sizeof c->state_dir];
	uid_t uid = geteuid();
	const char *v;
	int r;
	char cwd[PATH_MAX], abs_sock[PATH_MAX], abs_state[PATH_MAX];

	/* Relative paths are taken from where we were started (the daemon
	 * itself runs in "/"). */
	if ((sock != NULL && sock[0] != '/') ||
	    (state != NULL && state[0] != '/')) {
		if (getcwd(cwd, sizeof cwd) == NULL) {
			perror("ckptd: getcwd");
			return -1;
		}
		if (sock != NULL && sock[0] != '/') {
			if (main_set_path(abs_sock, sizeof abs_sock, "socket",
			    "%s/%s", cwd, sock) != 0)
				return -1;
			sock = abs_sock;
		}
		if (state != NULL && state[0] != '/') {
			if (main_set_path(abs_state, sizeof abs_state, "state",
			    "%s/%s", cwd, state) != 0)
				return -1;
			state = abs_state;
		}
	}
	if (sock != NULL)
		v = sock;
	else
		v = main_env_abs("CKPTD_SOCKET");
	if (v != NULL) {
		if (main_set_path(socket_path, sizeof socket_path,
		    "socket", "%s", v) != 0)
			return -1;
	} else if (uid == 0) {
		snprintf(socket_path, sizeof socket_path,
		    "/run/ckptd/ckptd.sock");
	} else if ((v = main_env_abs("XDG_RUNTIME_DIR")) != NULL) {
		if (main_set_path(socket_path, sizeof socket_path,
		    "socket", "%s/ckptd.sock", v) != 0)
			return -1;
	} else {
		snprintf(M.private_dir, sizeof M.private_dir, "/tmp/ckptd-%u",
		    (unsigned)uid);
		snprintf(socket_path, sizeof socket_path, "%s/ckptd.sock",
		    M.private_dir);
	}

	/* An autostarted daemon serves one user: never the system state. */
	if (state != NULL) {
		r = main_set_path(state_dir, sizeof state_dir, "state", "%s",
		    state);
	} else if (!c->autostarted &&
	    (v = main_env_abs("STATE_DIRECTORY")) != NULL) {
		/* systemd: a colon-separated list when several are set. */
		r = main_set_path(state_dir, sizeof state_dir, "state",
		    "%.*s", (int)strcspn(v, ":"), v);
	} else if (uid == 0 && !c->autostarted) {
		r = main_set_path(state_dir, sizeof state_dir, "state",
		    "/var/lib/ckptd");
	} else if ((v = main_env_abs("XDG_STATE_HOME")) != NULL) {
		r = main_set_path(state_dir, sizeof state_dir, "state",
		    "%s/ckptd", v);
	} else {
		if ((v = main_env_abs("HOME")) == NULL) {
			struct passwd *pw = getpwuid(uid);

			if (pw == NULL || pw->pw_dir == NULL ||
			    pw->pw_dir[0] != '/') {
				fprintf(stderr, "ckptd: no home directory for "
				    "the state dir; use --state-dir\n");
				return -1;
			}
			v = pw->pw_dir;
		}
		r = main_set_path(state_dir, sizeof state_dir, "state",
		    "%s/.local/state/ckptd", v);
	}
	if (r != 0)
		return -1;
	memcpy(c->socket, socket_path, sizeof socket_path);
	memcpy(c->state_dir, state_dir, sizeof state_dir);
	return 0;
}

/* ---- directories and the socket -------------------------------------------- */

/* mkdir -p with mode for the components we create. */
static int
main_mkdirs(const char *path, mode_t mode, ckd_err *e)
{
	char buf[PATH_MAX];
	size_t i, n = strlen(path);

	if (n == 0 || n >= sizeof buf)
		return err_set(e, CKPT_EINVAL, "bad directory '%s'", path);
	memcpy(buf, path, n + 1);
	for (i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return err_errno(e, errno, "mkdir %s", buf);
		buf[i] = i == n ? '\0' : '/';
	}
	return 0;
}

/* 1: something answers at path; 0: a stale socket (refused); -ENOENT:
 * nothing there; other negative errno: cannot tell. */
static int
main_probe(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
		r = 1;
	else if (errno == EAGAIN || errno == EINPROGRESS)
		r = 1;                  /* alive, backlog full */
	else if (errno == ECONNREFUSED)
		r = 0;
	else
		r = -errno;
	close(fd);
	return r;
}

/* Serialize start-up of daemons on the same socket path (clients may
 * autostart several at once): hold <path>.lock while probing and binding.
 * The holder removes the file when done (main_unlock), so a waiter checks
 * that the file it locked is still the one on disk. */
static int
main_lock(const char *path)
{
	char lpath[PATH_MAX];
	struct stat a, b;
	int fd, waited = 0;

	if (snprintf(lpath, sizeof lpath, "%s.lock", path) >=
	    (int)sizeof lpath)
		return -1;
again:
	fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		log_warn_errno(errno, "cannot open %s; starting without the "
		    "start-up lock", lpath);
		return -1;
	}
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };

		/* going on unlocked: the file is not ours to remove */
		if (errno != EWOULDBLOCK && errno != EINTR) {
			log_warn_errno(errno, "flock %s", lpath);
			close(fd);
			return -1;
		}
		if (waited >= MAIN_LOCK_WAIT_MS) {
			log_warn("%s still locked after %d ms; going on", lpath,
			    MAIN_LOCK_WAIT_MS);
			close(fd);
			return -1;
		}
		nanosleep(&ts, NULL);
		waited += 20;
	}
	if (fstat(fd, &a) != 0 || stat(lpath, &b) != 0 ||
	    a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		close(fd);              /* removed by its last holder */
		if (waited < MAIN_LOCK_WAIT_MS) {
			waited += 20;
			goto again;
		}
		return -1;
	}
	return fd;
}

/* Release main_lock and leave no lock file behind. */
static void
main_unlock(const char *path, int fd)
{
	char lpath[PATH_MAX];
	struct stat a, b;

	if (fd < 0)
		return;
	if (snprintf(lpath, sizeof lpath, "%s.lock", path) <
	    (int)sizeof lpath && fstat(fd, &a) == 0 &&
	    stat(lpath, &b) == 0 && a.st_dev == b.st_dev &&
	    a.st_ino == b.st_ino)
		unlink(lpath);
	close(fd);
}

/*
 * The per-user socket directory under /tmp: create it 0700 if missing,
 * and refuse one that is not a directory of ours closed to everyone else
 * (another user could have made it first to catch our clients).
 */
static int
main_private_dir(const char *dir, ckd_err *e)
{
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return err_errno(e, errno, "mkdir %s", dir);
	if (lstat(dir, &st) != 0)
		return err_errno(e, errno, "lstat %s", dir);
	if (!S_ISDIR(st.st_mode))
		return err_set(e, CKPT_EACCES, "%s is not a directory; refusing "
		    "to put the socket there", dir);
	if (st.st_uid != geteuid())
		return err_set(e, CKPT_EACCES, "%s belongs to uid %u, not to us "
		    "(uid %u); refusing to put the socket there (remove it, "
		    "set $XDG_RUNTIME_DIR or use --socket)", dir,
		    (unsigned)st.st_uid, (unsigned)geteuid());
	if ((st.st_mode & 077) != 0)
		return err_set(e, CKPT_EACCES, "%s has mode %04o; refusing to "
		    "put the socket there (it must be 0700)", dir,
		    (unsigned)(st.st_mode & 07777));
	return 0;
}

static int
main_bind(ckd_err *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = M.socket_path;
	mode_t mode = geteuid() == 0 ? 0666 : 0600, old;
	char dir[PATH_MAX];
	struct stat st;
	int fd = -1, lockfd, r;
	char *slash;

	if (strlen(path) >= sizeof sa.sun_path)
		return err_set(e, CKPT_EINVAL, "socket path too long: %s", path);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);

	/* The socket's directory: create it if missing (e.g. /run/ckptd). */
	snprintf(dir, sizeof dir, "%s", path);
	if (M.private_dir[0] != '\0') {
		if ((r = main_private_dir(M.private_dir, e)) != 0)
			return r;
	} else if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		if (access(dir, F_OK) != 0 &&
		    (r = main_mkdirs(dir, geteuid() == 0 ? 0755 : 0700, e)) != 0)
			return r;
	}

	if ((r = main_probe(path)) == 1)
		return err_set(e, CKPT_EBUSY, "ckptd is already running on %s",
		    path);
	lockfd = main_lock(path);
	r = main_probe(path);
	if (r == 1) {
		r = err_set(e, CKPT_EBUSY, "ckptd is already running on %s",
		    path);
		goto out;
	}
	if (r == 0) {
		if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			r = err_set(e, CKPT_EEXIST, "%s exists and is not a "
			    "socket", path);
			goto out;
		}
		log_info("removing stale socket %s", path);
		if (unlink(path) != 0 && errno != ENOENT) {
			r = err_errno(e, errno, "unlink %s", path);
			goto out;
		}
	} else if (r != -ENOENT) {
		if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			r = err_set(e, CKPT_EEXIST, "%s exists and is not a "
			    "socket", path);
			goto out;
		}
		r = err_errno(e, -r, "cannot probe %s", path);
		goto out;
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = err_errno(e, errno, "socket");
		goto out;
	}
	old = umask(0777 & ~mode);
	r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (r != 0) {
		r = err_errno(e, errno, "bind %s", path);
		goto out;
	}
	if (chmod(path, mode) != 0 || listen(fd, SOMAXCONN) != 0 ||
	    stat(path, &st) != 0) {
		r = err_errno(e, errno, "listen on %s", path);
		unlink(path);
		goto out;
	}
	M.own_socket = 1;
	M.sock_dev = st.st_dev;
	M.sock_ino = st.st_ino;
	M.lfd = fd;
	fd = -1;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	main_unlock(path, lockfd);
	return r;
}

static int
main_socket(ckd_err *e)
{
	int n = sd_listen_fds(1), i;

	if (n < 0)
		return err_errno(e, -n, "sd_listen_fds");
	if (n == 0)
		return main_bind(e);
	for (i = 1; i < n; i++) {
		log_warn("ignoring extra activation socket %d",
		    SD_LISTEN_FDS_START + i);
		close(SD_LISTEN_FDS_START + i);
	}
	if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0) <= 0)
		return err_set(e, CKPT_EINVAL, "the activation socket is not a "
		    "listening Unix stream socket");
	M.lfd = SD_LISTEN_FDS_START;
	M.activated = 1;
	{
		struct sockaddr_un sa;
		socklen_t len = sizeof sa;

		memset(&sa, 0, sizeof sa);
		if (getsockname(M.lfd, (struct sockaddr *)&sa, &len) == 0 &&
		    sa.sun_path[0] != '\0')
			snprintf(M.socket_path, sizeof M.socket_path, "%.*s",
			    (int)sizeof sa.sun_path, sa.sun_path);
	}
	return 0;
}

/* ---- background ------------------------------------------------------------ */

/* Close every fd >= lo except keep. */
static void
main_close_from(int lo, int keep)
{
	int fd;

	if (keep > lo && close_range((unsigned)lo, (unsigned)keep - 1, 0) == 0 &&
	    close_range((unsigned)keep + 1, ~0U, 0) == 0)
		return;
	if (keep == lo && close_range((unsigned)lo + 1, ~0U, 0) == 0)
		return;
	for (fd = lo; fd < 4096; fd++)
		if (fd != keep)
			close(fd);
}

/* Fork; the parent waits for the child's "ready" byte and exits 0, or 1
 * when the child fails before that. Only the child returns. */
static void
main_daemonize(void)
{
	int p[2], fd;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) != 0) {
		perror("ckptd: pipe");
		exit(1);
	}
	if ((pid = fork()) < 0) {
		perror("ckptd: fork");
		exit(1);
	}
	if (pid > 0) {
		char c;
		ssize_t n;

		close(p[1]);
		while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR)
			;
		if (n == 1 && c == 0)
			exit(0);
		/* The child said why on stderr; collect it. */
		waitpid(pid, NULL, 0);
		exit(1);
	}
	close(p[0]);
	M.ready_fd = p[1];
	M.daemonized = 1;
	/* Whatever the starting process had open (a client autostarting us
	 * may hold pipes and sockets) must not live on in the daemon. */
	main_close_from(3, M.ready_fd);
	setsid();
	if (chdir("/") != 0)
		log_warn_errno(errno, "chdir /");
	if ((fd = open("/dev/null", O_RDWR | O_CLOEXEC)) >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		close(fd);
	}
	/* stderr stays until ready so start-up errors reach the caller. */
}

static int
main_open_log(void)
{
	int fd = open(M.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC |
	    O_NOFOLLOW, 0600);

	if (fd < 0) {
		log_warn_errno(errno, "cannot open %s", M.log_path);
		return -1;
	}
	dup2(fd, STDERR_FILENO);
	close(fd);
	log_reset_stream();
	return 0;
}

static void
main_ready(void)
{
	char c = 0;

	/* A forked daemon logs to <state>/ckptd.log from now on. */
	if (M.ready_fd >= 0)
		main_open_log();
	log_info("ckptd %s ready: socket %s%s, state %s, %u workers, memory "
	    "budget %llu MiB", CKPTD_VERSION, M.socket_path,
	    M.activated ? " (activated)" : "", M.state_dir, worker_count(),
	    (unsigned long long)(M.budget >> 20));
	if (M.cfg.idle_exit > 0)
		log_info("exiting after %ld s idle (no connection, no pending "
		    "save)%s", (long)M.cfg.idle_exit,
		    M.cfg.autostarted ? "; autostarted" : "");
	sd_notifyf(0, "READY=1\nSTATUS=Listening on %s (%u workers)",
	    M.socket_path, worker_count());
	if (M.ready_fd >= 0) {
		if (write(M.ready_fd, &c, 1) != 1)
			log_warn_errno(errno, "telling the parent we are ready");
		close(M.ready_fd);
		M.ready_fd = -1;
	}
}

/* ---- idle exit ------------------------------------------------------------------ */

static void
main_idle_tick(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = now_mono_ns();

	if (M.stopping)
		return;
	if (conn_count() > 0 || main_saves_pending() > 0) {
		M.idle_since_ns = 0;
		return;
	}
	if (M.idle_since_ns == 0) {
		M.idle_since_ns = now;
		return;
	}
	if (now - M.idle_since_ns < (int64_t)M.cfg.idle_exit * 1000000000LL)
		return;
	log_info("idle for %ld s (no connection, no pending save); exiting",
	    (long)M.cfg.idle_exit);
	M.stopping = 1;
	sd_notify(0, "STOPPING=1\nSTATUS=Idle");
	conn_stop_listening();
	event_base_loopexit(M.base, NULL);
}

/* Look every few seconds; exits between idle-exit and idle-exit + tick. */
static int
main_idle_start(ckd_err *e)
{
	struct timeval tv = { 1, 0 };

	if (M.cfg.idle_exit == 0)
		return 0;
	if (M.cfg.idle_exit >= 8)
		tv.tv_sec = M.cfg.idle_exit / 4 < 30 ?
		    (time_t)(M.cfg.idle_exit / 4) : 30;
	M.idle_ev = event_new(M.base, -1, EV_PERSIST, main_idle_tick, NULL);
	if (M.idle_ev == NULL || event_add(M.idle_ev, &tv) != 0)
		return err_set(e, CKPT_EINTERNAL, "cannot start the idle timer");
	return 0;
}

/* ---- settings ----------------------------------------------------------- */

/* Read the settings file (file, or the default one), merge the command
 * line over it and resolve the defaults into out. */
static int
main_load_config(const char *file, struct config *out, ckd_err *e)
{
	struct config fc;
	int r;

	if (file != NULL) {
		if (main_set_path(M.cfg_file, sizeof M.cfg_file, "config", "%s",
		    file) != 0)
			return err_set(e, CKPT_EINVAL, "--config path too long");
		M.cfg_explicit = 1;
	} else if (M.cfg_file[0] == '\0' && !M.cfg_explicit &&
	    config_default_file(M.cfg_file, sizeof M.cfg_file) != 0) {
		M.cfg_file[0] = '\0';
	}
	memset(&fc, 0, sizeof fc);
	if (M.cfg_file[0] != '\0' &&
	    (r = config_read_file(M.cfg_file, &fc, e)) != 0) {
		if ((r != CKPT_ENOTFOUND && r != CKPT_EACCES) ||
		    M.cfg_explicit)
			return r;
		/* No default file, or one in a home we may not read (a
		 * daemon run as another user with this HOME): fine. */
		if (r == CKPT_EACCES)
			fprintf(stderr, "ckptd: ignoring %s\n", e->msg);
		M.cfg_file[0] = '\0';
		memset(&fc, 0, sizeof fc);
	}
	config_merge(out, &fc, &M.cli);
	if (main_resolve(out) != 0)
		return err_set(e, CKPT_EINVAL, "cannot resolve the socket or "
		    "state directory");
	return 0;
}

/* SIGHUP: read the file again and apply what may change live, and queue
 * again the uploads of the local tier given up. Saves in flight are not
 * touched: a smaller budget only holds back new ones. */
static void
main_reload(void)
{
	struct config fresh;
	ckd_err e = { 0 };
	unsigned n;

	sd_notify(0, "RELOADING=1\nSTATUS=Reloading the configuration");
	if (main_load_config(NULL, &fresh, &e) != 0) {
		log_error("reload: %s; keeping the current settings", e.msg);
	} else {
		n = config_reload(&M.cfg, &fresh, &main_config_hooks);
		log_info("reloaded %s: %u setting%s changed",
		    M.cfg_file[0] ? M.cfg_file : "(no file)", n,
		    n == 1 ? "" : "s");
		tier_set_limits(M.cfg.tier_upload_attempts,
		    M.cfg.tier_upload_timeout);
	}
	/* The uploads of the local tier given up are tried again. */
	if ((n = tier_retry_failed()) > 0)
		log_info("reload: %u upload%s of the local tier given up "
		    "queued again", n, n == 1 ? "" : "s");
	sd_notify(0, "READY=1");
}

/* ---- signals ------------------------------------------------------------------ */

static void
main_idle_cb(void *arg)
{
	log_info("no save pending; exiting");
	event_base_loopexit(M.base, NULL);
}

/* Finish: wait for the pending saves, then leave the loop. */
static void
main_stop(void)
{
	if (M.grace_ev != NULL) {
		event_free(M.grace_ev);
		M.grace_ev = NULL;
	}
	sd_notify(0, "STOPPING=1\nSTATUS=Finishing pending saves");
	save_on_idle(main_idle_cb, NULL);
}

static void
main_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval poll = { 0, 200000 };
	struct stats ms;

	main_stats(&ms, NULL);
	if (ms.trainers > 0 && now_mono_ns() < M.grace_end_ns) {
		evtimer_add(M.grace_ev, &poll);
		return;
	}
	log_info("preemption grace over (%u trainers' managers open)",
	    ms.trainers);
	main_stop();
}

static void
main_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct stats ms;

	if (sig == SIGHUP) {
		if (M.daemonized) {
			main_open_log();
			log_info("log file reopened");
		}
		main_reload();
		return;
	}
	if (M.stopping) {
		if (M.grace_ev != NULL) {
			log_info("%s: ending the preemption grace",
			    strsignal(sig));
			main_stop();
			return;
		}
		log_info("%s: still waiting for %u saves", strsignal(sig),
		    main_saves_pending());
		return;
	}
	M.stopping = 1;
	log_info("%s: stopping; %u saves pending", strsignal(sig),
	    main_saves_pending());
	conn_stop_listening();
	preempt_begin(strsignal(sig));
	main_stats(&ms, NULL);
	/* Only managers that saved (trainers) hold the grace: an evaluator
	 * waiting for steps would keep a restart waiting for nothing. */
	if (M.cfg.preempt_grace > 0 && ms.trainers > 0 &&
	    (M.grace_ev = evtimer_new(M.base, main_grace_cb, NULL)) != NULL) {
		M.grace_end_ns = now_mono_ns() +
		    (int64_t)M.cfg.preempt_grace * 1000000000;
		sd_notifyf(0, "STATUS=Preempted: %u trainers have %u s to save",
		    ms.trainers, (unsigned)M.cfg.preempt_grace);
		main_grace_cb(-1, 0, NULL);
		return;
	}
	main_stop();
}

/* The coordination of distributed steps: local, or etcd (--etcd). */
static int
main_coord(ckd_err *e)
{
	struct coord_conf cf;

	cf.etcd = M.cfg.etcd;
	cf.node = M.cfg.node;
	cf.lease_ttl = M.cfg.etcd_lease_ttl;
	cf.timeout_ms = M.cfg.etcd_timeout;
	if (cf.etcd[0] == '\0' && cf.node[0] != '\0')
		return err_set(e, CKPT_EINVAL, "--node is given without --etcd");
	M.coord = &coord_local_ops;
	if (cf.etcd[0] != '\0' &&
	    coord_etcd_init(M.base, &cf, &M.coord, e) != 0) {
		M.coord = &coord_local_ops;
		steptx_set_coord(M.coord);
		root_set_coord(M.coord);
		return e->code;
	}
	steptx_set_coord(M.coord);
	root_set_coord(M.coord);
	return 0;
}

static int
main_signals(ckd_err *e)
{
	static const int sigs[3] = { SIGTERM, SIGINT, SIGHUP };
	int i;

	for (i = 0; i < 3; i++) {
		M.sig_ev[i] = evsignal_new(M.base, sigs[i], main_signal_cb,
		    NULL);
		if (M.sig_ev[i] == NULL || event_add(M.sig_ev[i], NULL) != 0)
			return err_set(e, CKPT_EINTERNAL, "cannot watch signal "
			    "%d", sigs[i]);
	}
	return 0;
}

/* ---- main ----------------------------------------------------------------- */

int
main(int argc, char **argv)
{
	struct config_args args;
	struct index *ix = NULL;
	int c, r, i;
	struct rlimit rl;
	ckd_err e = { 0 };

	M.start_ns = now_mono_ns();
	if ((c = config_parse_args(argc, argv, &M.cli, &args)) != CONFIG_RUN)
		return c == CONFIG_EXIT_OK ? 0 : 2;
	if ((r = main_load_config(args.file, &M.cfg, &e)) != 0) {
		fprintf(stderr, "ckptd: %s\n", e.msg);
		return 2;
	}
	if (s3acl_set(M.cfg.s3_allow, &e) != 0) {
		fprintf(stderr, "ckptd: %s\n", e.msg);
		return 2;
	}
	if (args.check) {
		if (M.cfg_file[0] != '\0')
			printf("# %s\n", M.cfg_file);
		else
			printf("# no configuration file\n");
		config_print(stdout, &M.cfg);
		return 0;
	}
	/* A reload resolves the command line again: keep its paths as they
	 * were resolved now (relative to where we were started). */
	if (M.cli.socket[0] != '\0')
		memcpy(M.cli.socket, M.cfg.socket, sizeof M.cli.socket);
	if (M.cli.state_dir[0] != '\0')
		memcpy(M.cli.state_dir, M.cfg.state_dir, sizeof M.cli.state_dir);
	snprintf(M.socket_path, sizeof M.socket_path, "%s", M.cfg.socket);
	snprintf(M.state_dir, sizeof M.state_dir, "%s", M.cfg.state_dir);
	M.budget = M.cfg.memory_budget;
	config_apply_limits(&M.cfg);
	if (main_set_path(M.log_path, sizeof M.log_path, "log", "%s/%s",
	    M.state_dir, MAIN_LOG_FILE) != 0)
		return 1;

	log_init((enum log_level)M.cfg.log_level);
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	if (!M.cfg.foreground && getenv("LISTEN_FDS") == NULL &&
	    getenv("NOTIFY_SOCKET") == NULL)
		main_daemonize();

	if ((r = main_mkdirs(M.state_dir, 0700, &e)) != 0 ||
	    (r = main_socket(&e)) != 0)
		goto fail;
	if ((M.base = event_base_new()) == NULL) {
		r = err_set(&e, CKPT_ENOMEM, "event_base_new failed");
		goto fail;
	}
	if ((r = index_open(M.state_dir, &ix, &e)) != 0 ||
	    (r = worker_init(M.base, M.cfg.workers, &e)) != 0)
		goto fail;
	save_init(ix, worker_count(), M.budget);
	if ((r = tier_init(M.base, M.cfg.local_tier, &e)) != 0)
		goto fail;
	tier_set_limits(M.cfg.tier_upload_attempts, M.cfg.tier_upload_timeout);
	/* The coordination first: with etcd, it finishes the commits left
	 * half done before the roots' sweep takes their tmp dirs for
	 * interrupted saves. */
	if ((r = main_coord(&e)) != 0 ||
	    (r = manager_init(M.base, ix, &main_manager_saves, &e)) != 0 ||
	    (r = conn_listen(M.base, M.lfd, &dispatch_handler,
	    (void *)&main_stats_source, &e)) != 0 ||
	    (M.cfg.metrics_listen[0] != '\0' &&
	    (r = metrics_start(M.base, M.cfg.metrics_listen,
	    &main_stats_source, &e)) != 0) ||
	    (r = main_signals(&e)) != 0 ||
	    (r = health_start(M.base, M.cfg.stall_timeout, &main_stats_source,
	    &e)) != 0 ||
	    (r = main_idle_start(&e)) != 0)
		goto fail;

	if (index_open_note(ix)[0] != '\0')
		log_warn("index: %s", index_open_note(ix));
	main_ready();
	if (event_base_dispatch(M.base) < 0)
		log_error("event loop failed");

	health_stop();
	metrics_stop();
	conn_close_all();
	worker_shutdown();
	tier_shutdown();
	save_shutdown();
	manager_shutdown();
	M.coord->shutdown();
	M.coord = &coord_local_ops;
	steptx_set_coord(M.coord);
	index_close(ix);
	conn_stop_listening();
	for (i = 0; i < 3; i++)
		if (M.sig_ev[i] != NULL)
			event_free(M.sig_ev[i]);
	if (M.idle_ev != NULL)
		event_free(M.idle_ev);
	if (M.grace_ev != NULL)
		event_free(M.grace_ev);
	event_base_free(M.base);
	if (M.own_socket) {
		struct stat st;

		/* Only our own socket: another daemon may have taken the
		 * path while we drained. */
		if (stat(M.socket_path, &st) == 0 && st.st_dev == M.sock_dev &&
		    st.st_ino == M.sock_ino)
			unlink(M.socket_path);
	}
	log_info("stopped");
	return 0;

fail:
	log_error("%s", e.msg[0] != '\0' ? e.msg : "start-up failed");
	sd_notifyf(0, "STATUS=Failed to start: %s\nERRNO=%d", e.msg,
	    r == CKPT_EBUSY ? EADDRINUSE : EINVAL);
	if (M.own_socket)
		unlink(M.socket_path);
	return 1;
}
