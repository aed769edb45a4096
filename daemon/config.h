/*
 * config.h - ckptd's settings: one table for the command line and the
 * configuration file.
 *
 * Every setting is one line of the table in config.c: its key (the file's
 * "key = value" and the long option "--key VALUE"), an optional short
 * option, its type and field in struct config, its bounds, and, when it
 * can change while the daemon runs, the function that applies it on a
 * reload (SIGHUP). Adding a setting is a field here and a line there.
 *
 * Precedence: built-in defaults < the file < the command line. The file
 * is --config FILE, else /etc/ckptd/ckptd.conf for root and
 * $XDG_CONFIG_HOME/ckptd/ckptd.conf (~/.config/...) for other users; a
 * missing default file is not an error, a missing --config FILE is.
 *
 * File syntax: one "key = value" per line; '#' starts a comment line;
 * blank lines are ignored; keys may use '-' or '_'; a value may be put in
 * double quotes (to keep leading or trailing blanks). Sizes take K/M/G/T
 * suffixes (binary), booleans yes/no, true/false, on/off, 1/0.
 */
#ifndef CKPTD_CONFIG_H
#define CKPTD_CONFIG_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/un.h>

#include "common.h"

#define CONFIG_SYSTEM_FILE "/etc/ckptd/ckptd.conf"

struct config {
	char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char state_dir[PATH_MAX];
	unsigned workers;               /* 0: max(2, CPUs) */
	uint64_t memory_budget;         /* 0: min(4G, RAM / 4) */
	char metrics_listen[256];       /* "": no metrics server */
	int log_level;                  /* enum log_level */
	int foreground;
	uint64_t stall_timeout;         /* seconds; 0: 300 */
	uint64_t preempt_grace;         /* seconds; 0: none */
	uint64_t idle_exit;             /* seconds; 0: never */
	int autostarted;                /* started by libckpt for one user */
	/* per-user limits (user.h) */
	unsigned max_connections;
	unsigned max_connections_per_user;
	unsigned connections_reserve;
	unsigned idle_timeout;          /* seconds; 0: never */
	unsigned max_requests_per_user;
	uint64_t max_leaves;
	/* multi-node coordination (coord.h) */
	char etcd[1024];                /* "": none */
	char node[64];
	unsigned etcd_lease_ttl;        /* seconds; 0: 10 */
	unsigned etcd_timeout;          /* ms; 0: 5000 */
	/* USER:s3://bucket[/prefix] grants, blank-separated (s3acl.h) */
	char s3_allow[PATH_MAX];
	char local_tier[PATH_MAX];      /* --local-tier DIR, "" none */
	unsigned tier_upload_attempts;  /* tries of an upload; 0: 10 */
	uint64_t tier_upload_timeout;   /* seconds of failed tries; 0: 3600 */
	uint64_t set;                   /* bit i: table entry i was given */
};

enum config_type {
	CONFIG_STRING,
	CONFIG_PATH,                    /* a string; absolute in the file */
	CONFIG_UINT,                    /* unsigned */
	CONFIG_U64,                     /* uint64_t, plain number */
	CONFIG_SIZE,                    /* uint64_t, K/M/G/T suffixes */
	CONFIG_LEVEL,                   /* int, log level name */
	CONFIG_BOOL,                    /* int; as a flag: takes no value */
	CONFIG_LIST,                    /* a string; each occurrence adds
	                                 * its blank-separated words */
};

/* What a reload applies outside config.c and the modules below it
 * (log.c, user.c): main.c hands these to config_reload. */
struct config_hooks {
	void (*memory_budget)(uint64_t bytes);  /* the staging memory budget */
	void (*stall_timeout)(uint64_t secs);   /* health.c's stall timeout */
	void (*s3_allow)(const char *list);     /* s3acl.c's grants */
};

struct config_def {
	const char *key;
	int short_opt;                  /* 0: long option only */
	enum config_type type;
	size_t off, size;               /* field in struct config */
	uint64_t min, max;              /* numbers: accepted range */
	/* Applies the new value while running; NULL: needs a restart. */
	void (*apply)(const struct config *c, const struct config_hooks *h);
	const char *arg;                /* value name in --help */
	const char *help;
};

extern const struct config_def config_defs[];
extern const size_t config_ndefs;

/* Outcome of config_parse_args. */
enum {
	CONFIG_RUN = 0,                 /* go on and start */
	CONFIG_EXIT_OK = 1,             /* --help / --version printed */
	CONFIG_EXIT_USAGE = 2,          /* bad command line (message printed) */
};

struct config_args {
	const char *file;               /* --config FILE, or NULL */
	int check;                      /* --check-config */
};

/* Parse argv into cli (zeroed first; cli->set marks what was given). */
int config_parse_args(int argc, char **argv, struct config *cli,
    struct config_args *args);
/* The default file for this user (see above) into buf; 0 or -1. */
int config_default_file(char *buf, size_t len);
/* Read path into out (zeroed first). Returns 0, CKPT_ENOTFOUND when the
 * file does not exist (e->msg names it), or another negative code with
 * "path:line: what" in e->msg. */
int config_read_file(const char *path, struct config *out, ckd_err *e);
/* out = defaults, then file, then cli (each only where set); then the
 * automatic workers and memory budget are resolved. Paths (socket, state
 * dir) left empty are resolved by main.c. */
void config_merge(struct config *out, const struct config *file,
    const struct config *cli);
/* Write "key = value" lines for every setting. */
void config_print(FILE *f, const struct config *c);
/* Help lines of every setting (for --help). */
void config_usage(FILE *f);
/* Reload: for every setting that differs in fresh, apply it (through h
 * where it lives above config.c) and copy it into running when it is
 * live; log the others as needing a restart (running keeps them). Loop
 * thread. Returns how many were applied. */
unsigned config_reload(struct config *running, const struct config *fresh,
    const struct config_hooks *h);

/* Set the per-user limits (user_limits) from c: at start-up, and on a
 * reload for the limits that changed. */
void config_apply_limits(const struct config *c);

/* Shared parsers (also for other modules' flags). */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_bool(const char *s, int *out);

#endif
