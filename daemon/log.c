/*
 * log.c - leveled, thread-safe logging on stderr, structured events to
 * the journal (see log.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

/* Our own CODE_FUNC (the caller of log_event), not this file's. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

#include "log.h"

static int log_level_cur = LOG_LVL_INFO;
static int log_journal;              /* stderr is the journal: "<N>" prefixes */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_names[] = { "error", "warn", "info", "debug" };
/* syslog priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static const int log_prio[] = { 3, 4, 6, 7 };

void
log_reset_stream(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	log_journal = 0;
	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return;
	if (fstat(STDERR_FILENO, &st) != 0)
		return;
	log_journal = (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

void
log_init(enum log_level level)
{
	log_set_level(level);
	log_reset_stream();
}

void
log_set_level(enum log_level level)
{
	if ((int)level < LOG_LVL_ERROR)
		level = LOG_LVL_ERROR;
	if (level > LOG_LVL_DEBUG)
		level = LOG_LVL_DEBUG;
	__atomic_store_n(&log_level_cur, (int)level, __ATOMIC_RELAXED);
}

int
log_parse_level(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof log_names / sizeof log_names[0]; i++)
		if (strcmp(s, log_names[i]) == 0)
			return (int)i;
	if (strcmp(s, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

/* New length after snprintf returned n at offset len of a cap-byte buffer
 * (the result stays <= cap - 1: room for the terminating NUL). */
static size_t
log_clamp(size_t len, int n, size_t cap)
{
	if (n <= 0)
		return len;
	if ((size_t)n >= cap - len)
		return cap - 1;
	return len + (size_t)n;
}

static void
log_vwrite(enum log_level level, const char *func, int errnum,
    const char *suffix, const char *fmt, va_list ap)
{
	char line[2048];
	size_t len = 0, cap = sizeof line - 1;   /* room for '\n' */
	int n, saved = errno;

	if ((int)level > __atomic_load_n(&log_level_cur, __ATOMIC_RELAXED))
		return;

	if (log_journal) {
		n = snprintf(line, cap, "<%d>%s: ", log_prio[level], func);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = snprintf(line, cap,
		    "%04d-%02d-%02d %02d:%02d:%02d.%03ld ckptd[%d]: %s %s: ",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, (int)getpid(),
		    log_names[level], func);
	}
	len = log_clamp(len, n, cap);
	n = vsnprintf(line + len, cap - len, fmt, ap);
	len = log_clamp(len, n, cap);
	if (errnum != 0) {
		char ebuf[128];

		n = snprintf(line + len, cap - len, ": %s",
		    strerror_r(errnum, ebuf, sizeof ebuf));
		len = log_clamp(len, n, cap);
	}
	if (suffix != NULL && suffix[0] != '\0') {
		n = snprintf(line + len, cap - len, " %s", suffix);
		len = log_clamp(len, n, cap);
	}
	line[len++] = '\n';

	pthread_mutex_lock(&log_lock);
	{
		const char *p = line;

		while (len > 0) {
			ssize_t w = write(STDERR_FILENO, p, len);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			p += w;
			len -= (size_t)w;
		}
	}
	pthread_mutex_unlock(&log_lock);
	errno = saved;
}

static void
log_msg_suffix(enum log_level level, const char *func, const char *suffix,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
log_msg_suffix(enum log_level level, const char *func, const char *suffix,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, func, 0, suffix, fmt, ap);
	va_end(ap);
}

void
log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, func, 0, NULL, fmt, ap);
	va_end(ap);
}

void
log_msg_errno(enum log_level level, const char *func, int errnum,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, func, errnum, NULL, fmt, ap);
	va_end(ap);
}

/* "key=value" pairs of ev into buf (values with blanks quoted). */
static void
log_event_text(const struct log_event *ev, char *buf, size_t cap)
{
	size_t len = 0;
	int n;

	buf[0] = '\0';
#define LOG_ADD(...) do { \
		if (len + 1 < cap) { \
			n = snprintf(buf + len, cap - len, __VA_ARGS__); \
			len = log_clamp(len, n, cap); \
		} \
	} while (0)
	if (ev->request_id != 0)
		LOG_ADD("%sreq=%" PRIu64, len ? " " : "", ev->request_id);
	if (ev->peer_uid >= 0)
		LOG_ADD("%suid=%" PRId64, len ? " " : "", ev->peer_uid);
	if (ev->peer_pid >= 0)
		LOG_ADD("%spid=%" PRId64, len ? " " : "", ev->peer_pid);
	if (ev->root != NULL)
		LOG_ADD(strpbrk(ev->root, " \t\"") ? "%sroot=\"%s\"" :
		    "%sroot=%s", len ? " " : "", ev->root);
	if (ev->step >= 0)
		LOG_ADD("%sstep=%" PRId64, len ? " " : "", ev->step);
	if (ev->bytes != 0)
		LOG_ADD("%sbytes=%" PRIu64, len ? " " : "", ev->bytes);
	if (ev->blocking >= 0)
		LOG_ADD("%sblocking=%.6fs", len ? " " : "", ev->blocking);
	if (ev->duration >= 0)
		LOG_ADD("%sduration=%.6fs", len ? " " : "", ev->duration);
	if (ev->code != 0)
		LOG_ADD("%scode=%d", len ? " " : "", ev->code);
#undef LOG_ADD
}

/* Send one event with its fields to the journal; 0 or negative errno. */
static int
log_journal_event(enum log_level level, const char *func,
    const struct log_event *ev, const char *msg)
{
	char f[12][160], *mfield = NULL, *efield = NULL, *rfield = NULL;
	struct iovec iov[16];
	size_t k = 0, i;
	int r;

#define LOG_FIELD(...) do { \
		snprintf(f[k], sizeof f[k], __VA_ARGS__); \
		iov[k].iov_base = f[k]; \
		iov[k].iov_len = strlen(f[k]); \
		k++; \
	} while (0)
	LOG_FIELD("PRIORITY=%d", log_prio[level]);
	LOG_FIELD("SYSLOG_IDENTIFIER=ckptd");
	LOG_FIELD("CODE_FUNC=%s", func);
	if (ev->request_id != 0)
		LOG_FIELD("CKPT_REQUEST_ID=%" PRIu64, ev->request_id);
	if (ev->peer_uid >= 0)
		LOG_FIELD("CKPT_PEER_UID=%" PRId64, ev->peer_uid);
	if (ev->peer_pid >= 0)
		LOG_FIELD("CKPT_PEER_PID=%" PRId64, ev->peer_pid);
	if (ev->step >= 0)
		LOG_FIELD("CKPT_STEP=%" PRId64, ev->step);
	if (ev->bytes != 0)
		LOG_FIELD("CKPT_BYTES=%" PRIu64, ev->bytes);
	if (ev->blocking >= 0)
		LOG_FIELD("CKPT_BLOCKING_SEC=%.6f", ev->blocking);
	if (ev->duration >= 0)
		LOG_FIELD("CKPT_DURATION_SEC=%.6f", ev->duration);
	if (ev->code != 0)
		LOG_FIELD("CKPT_ERROR_CODE=%d", ev->code);
#undef LOG_FIELD
	/* Values of any length: allocated. */
	r = -ENOMEM;
	if (asprintf(&mfield, "MESSAGE=%s", msg) < 0) {
		mfield = NULL;
		goto out;
	}
	iov[k].iov_base = mfield;
	iov[k++].iov_len = strlen(mfield);
	if (ev->root != NULL) {
		if (asprintf(&rfield, "CKPT_ROOT=%s", ev->root) < 0) {
			rfield = NULL;
			goto out;
		}
		iov[k].iov_base = rfield;
		iov[k++].iov_len = strlen(rfield);
	}
	if (ev->error != NULL) {
		if (asprintf(&efield, "CKPT_ERROR=%s", ev->error) < 0) {
			efield = NULL;
			goto out;
		}
		iov[k].iov_base = efield;
		iov[k++].iov_len = strlen(efield);
	}
	for (i = 0; i < k; i++)         /* no newline inside a field */
		for (char *p = iov[i].iov_base, *e = p + iov[i].iov_len; p < e;
		    p++)
			if (*p == '\n')
				*p = ' ';
	r = sd_journal_sendv(iov, (int)k);
out:
	free(mfield);
	free(rfield);
	free(efield);
	return r;
}

void
log_msg_event(enum log_level level, const char *func,
    const struct log_event *ev, const char *fmt, ...)
{
	char msg[1024], fields[1024];
	va_list ap;
	int saved = errno;

	if ((int)level > __atomic_load_n(&log_level_cur, __ATOMIC_RELAXED))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (log_journal && log_journal_event(level, func, ev, msg) == 0) {
		errno = saved;
		return;
	}
	log_event_text(ev, fields, sizeof fields);
	log_msg_suffix(level, func, fields, "%s", msg);
	errno = saved;
}
