/*
 * log.h - leveled logging on stderr.
 *
 * One line per message: "ckptd[pid]: LEVEL func: message". Under systemd
 * (JOURNAL_STREAM names our stderr) lines carry a "<N>" syslog priority
 * prefix instead, so journald records the right level; events
 * (log_event) go to the journal with structured fields. Safe to call from
 * any thread: a line is formatted on the stack and written with a single
 * write(2) under a mutex.
 */
#ifndef CKPTD_LOG_H
#define CKPTD_LOG_H

#include <stdarg.h>
#include <stdint.h>

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN = 1,
	LOG_LVL_INFO = 2,
	LOG_LVL_DEBUG = 3,
};

/* Detect the journal; set the level. Call once at start-up (before threads). */
void log_init(enum log_level level);
void log_set_level(enum log_level level);
/* "error" | "warn" | "info" | "debug" -> level; -1 when unknown. */
int log_parse_level(const char *s);
/* Re-check whether stderr is the journal (after it was redirected). */
void log_reset_stream(void);

/* What a request-level event is about; fields that do not apply are
 * left at LOG_EVENT_INIT's values and omitted. */
struct log_event {
	uint64_t request_id;            /* 0: none */
	int64_t peer_uid, peer_pid;     /* -1: none */
	const char *root;               /* NULL: none */
	int64_t step;                   /* -1: none */
	double duration;                /* seconds; < 0: none */
	double blocking;                /* seconds the client waited; < 0: none */
	uint64_t bytes;                 /* 0: none */
	int code;                       /* 0, or the CKPT_E* code of error */
	const char *error;              /* NULL: none */
};
#define LOG_EVENT_INIT { 0, -1, -1, NULL, -1, -1.0, -1.0, 0, 0, NULL }

/* One event line. Under systemd (stderr is the journal) it is sent with
 * sd_journal_send and the fields CKPT_REQUEST_ID, CKPT_PEER_UID,
 * CKPT_PEER_PID, CKPT_ROOT, CKPT_STEP, CKPT_DURATION_SEC,
 * CKPT_BLOCKING_SEC, CKPT_BYTES, CKPT_ERROR_CODE, CKPT_ERROR (and
 * CODE_FUNC, SYSLOG_IDENTIFIER); otherwise the message is followed by
 * the same fields as "key=value" on one plain line. */
void log_msg_event(enum log_level level, const char *func,
    const struct log_event *ev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define log_event(level, ev, ...) \
	log_msg_event((level), __func__, (ev), __VA_ARGS__)

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
