/*
 * log.h - leveled logging on stderr.
 *
 * One line per message: "ckptd[pid]: LEVEL func: message". Under systemd
 * (JOURNAL_STREAM names our stderr) lines carry a "<N>" syslog priority
 * prefix instead, so journald records the right level. Safe to call from
 * any thread: a line is formatted on the stack and written with a single
 * write(2) under a mutex.
 */
#ifndef CKPTD_LOG_H
#define CKPTD_LOG_H

#include <stdarg.h>

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN = 1,
	LOG_LVL_INFO = 2,
	LOG_LVL_DEBUG = 3,
};

/* Detect the journal; set the level. Call once at start-up (before threads). */
void log_init(enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "error" | "warn" | "info" | "debug" -> level; -1 when unknown. */
int log_parse_level(const char *s);
/* Re-check whether stderr is the journal (after it was redirected). */
void log_reset_stream(void);

void log_msg(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like log_msg, appending ": strerror(errnum)". */
void log_msg_errno(enum log_level level, const char *func, int errnum,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __func__, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __func__, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __func__, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __func__, __VA_ARGS__)
/* errnum-appending variants: log_error_errno(errno, "open %s", path). */
#define log_error_errno(errnum, ...) \
	log_msg_errno(LOG_LVL_ERROR, __func__, (errnum), __VA_ARGS__)
#define log_warn_errno(errnum, ...) \
	log_msg_errno(LOG_LVL_WARN, __func__, (errnum), __VA_ARGS__)

#endif
