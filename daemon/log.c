/*
 * log.c - leveled, thread-safe logging on stderr (see log.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

enum log_level
log_get_level(void)
{
	return (enum log_level)__atomic_load_n(&log_level_cur, __ATOMIC_RELAXED);
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
    const char *fmt, va_list ap)
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

void
log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, func, 0, fmt, ap);
	va_end(ap);
}

void
log_msg_errno(enum log_level level, const char *func, int errnum,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, func, errnum, fmt, ap);
	va_end(ap);
}
