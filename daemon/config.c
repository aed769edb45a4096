/*
 * config.c - the settings table, the command line and the configuration
 * file (see config.h).
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.pb-c.h"
#include "config.h"
#include "log.h"
#include "user.h"

#define CONFIG_MAX_LINE 4096

/* ---- live appliers ------------------------------------------------------- */

static void
config_apply_log_level(const struct config *c, const struct config_hooks *h)
{
	(void)h;
	log_set_level((enum log_level)c->log_level);
}

static void
config_apply_budget(const struct config *c, const struct config_hooks *h)
{
	h->memory_budget(c->memory_budget);
}

static void
config_apply_stall(const struct config *c, const struct config_hooks *h)
{
	h->stall_timeout(c->stall_timeout);
}

static void
config_apply_s3_allow(const struct config *c, const struct config_hooks *h)
{
	h->s3_allow(c->s3_allow);
}

static void
config_apply_users(const struct config *c, const struct config_hooks *h)
{
	(void)h;
	config_apply_limits(c);
}

void
config_apply_limits(const struct config *c)
{
	user_limits.conns = c->max_connections;
	user_limits.conns_per_user = c->max_connections_per_user;
	user_limits.conns_reserve = c->connections_reserve;
	user_limits.idle_secs = c->idle_timeout;
	user_limits.inflight_per_user = c->max_requests_per_user;
	user_limits.leaves_per_request = c->max_leaves;
}

/* Settings read where they are used (main.c reads preempt-grace when the
 * signal comes): live without more ado. */
static void
config_apply_at_use(const struct config *c, const struct config_hooks *h)
{
	(void)c;
	(void)h;
}

/* --autostarted without --idle-exit: exit after this long idle. */
#define CONFIG_AUTOSTART_IDLE_SECS 300

/* ---- the table ------------------------------------------------------------- */

#define CFG_FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

const struct config_def config_defs[] = {
	{ "socket", 's', CONFIG_PATH, CFG_FIELD(socket), 0, 0, NULL, "PATH",
	  "Unix socket to listen on (default: $CKPTD_SOCKET, else "
	  "$XDG_RUNTIME_DIR/ckptd.sock, else /tmp/ckptd-$UID/ckptd.sock in a "
	  "private 0700 directory; root: "
	  "/run/ckptd/ckptd.sock)" },
	{ "state-dir", 'd', CONFIG_PATH, CFG_FIELD(state_dir), 0, 0, NULL,
	  "DIR", "index and log directory (default: $STATE_DIRECTORY, else "
	  "$XDG_STATE_HOME/ckptd, else ~/.local/state/ckptd; root: "
	  "/var/lib/ckptd)" },
	{ "workers", 'w', CONFIG_UINT, CFG_FIELD(workers), 1, 256, NULL, "N",
	  "I/O worker threads (default: max(2, CPUs))" },
	{ "memory-budget", 'm', CONFIG_SIZE, CFG_FIELD(memory_budget), 1,
	  UINT64_MAX, config_apply_budget, "BYTES",
	  "staging memory budget, K/M/G/T suffixes (default: min(4G, "
	  "physical memory / 4)); live" },
	{ "metrics-listen", 0, CONFIG_STRING, CFG_FIELD(metrics_listen), 0, 0,
	  NULL, "ADDR:PORT", "serve Prometheus metrics at /metrics and "
	  "/healthz (ADDR defaults to 127.0.0.1)" },
	{ "log-level", 'l', CONFIG_LEVEL, CFG_FIELD(log_level), 0, 0,
	  config_apply_log_level, "LEVEL",
	  "error, warn, info (default) or debug; live" },
	{ "foreground", 'f', CONFIG_BOOL, CFG_FIELD(foreground), 0, 1, NULL,
	  NULL, "do not fork into the background" },
	{ "stall-timeout", 0, CONFIG_U64, CFG_FIELD(stall_timeout), 1, 86400,
	  config_apply_stall, "SECS", "unhealthy (/healthz 503, no systemd "
	  "watchdog ping) when worker tasks are pending and none finished for "
	  "this long (default: 300); live" },
	{ "preempt-grace", 0, CONFIG_U64, CFG_FIELD(preempt_grace), 0, 86400,
	  config_apply_at_use, "SECS", "on SIGTERM, give open managers up to "
	  "SECS to take their preemption save and close (default 0); live" },
	{ "idle-exit", 0, CONFIG_U64, CFG_FIELD(idle_exit), 0, 86400 * 365,
	  NULL, "SECS", "exit after SECS with no connection and no pending "
	  "save (default: never; 300 with --autostarted; 0: never)" },
	{ "autostarted", 0, CONFIG_BOOL, CFG_FIELD(autostarted), 0, 1, NULL,
	  NULL, "started by libckpt for one user: exits when idle and never "
	  "uses the system state directory" },
	{ "max-connections", 0, CONFIG_UINT, CFG_FIELD(max_connections), 1,
	  1000000, config_apply_users, "N", "connections in all (default "
	  "4096); live" },
	{ "max-connections-per-user", 0, CONFIG_UINT,
	  CFG_FIELD(max_connections_per_user), 1, 1000000, config_apply_users,
	  "N", "connections of one uid (default 1024); live" },
	{ "connections-reserve", 0, CONFIG_UINT, CFG_FIELD(connections_reserve),
	  0, 1000000, config_apply_users, "N", "the last N connection slots go "
	  "only to uids holding fewer than 8 (default 256); live" },
	{ "idle-timeout", 0, CONFIG_UINT, CFG_FIELD(idle_timeout), 0,
	  86400 * 365, config_apply_users, "SECS", "close connections without "
	  "a manager or a request in flight after SECS (default 600; 0: "
	  "never); live" },
	{ "max-requests-per-user", 0, CONFIG_UINT,
	  CFG_FIELD(max_requests_per_user), 1, 1000000, config_apply_users,
	  "N", "requests awaiting a reply plus unfinished saves of one uid "
	  "(default 512); live" },
	{ "max-leaves", 0, CONFIG_U64, CFG_FIELD(max_leaves), 1, 100000000,
	  config_apply_users, "N", "leaves in one save request (default "
	  "200000; over it: CKPT_ETOOBIG); live" },
	{ "etcd", 0, CONFIG_STRING, CFG_FIELD(etcd), 0, 0, NULL, "URL[,URL...]",
	  "coordinate distributed steps with the daemons of other nodes "
	  "through these etcd endpoints (needs --node; default: none)" },
	{ "node", 0, CONFIG_STRING, CFG_FIELD(node), 0, 0, NULL, "NAME",
	  "this node's name in the coordination (with --etcd)" },
	{ "etcd-lease-ttl", 0, CONFIG_UINT, CFG_FIELD(etcd_lease_ttl), 1, 3600,
	  NULL, "SECS", "the node's etcd lease: its steps fail on every node "
	  "this long after its daemon dies (default 10)" },
	{ "etcd-timeout", 0, CONFIG_UINT, CFG_FIELD(etcd_timeout), 100,
	  600000, NULL, "MS", "bound of one etcd request (default 5000)" },
	{ "local-tier", 0, CONFIG_PATH, CFG_FIELD(local_tier), 0, 0, NULL,
	  "DIR", "commit saves to s3:// roots in DIR first (one directory "
	  "per root) and upload them in the background; restores prefer "
	  "the verified local copy (default: none)" },
	{ "tier-upload-attempts", 0, CONFIG_UINT,
	  CFG_FIELD(tier_upload_attempts), 1, 1000000, config_apply_at_use,
	  "N", "give an upload of the local tier up after N failed tries "
	  "(2 when the store refuses it: credentials, no bucket); the step "
	  "stays local, listed 'upload failed', until SIGHUP re-queues it "
	  "(default 10); live" },
	{ "tier-upload-timeout", 0, CONFIG_U64,
	  CFG_FIELD(tier_upload_timeout), 1, 86400 * 365, config_apply_at_use,
	  "SECS", "give an upload of the local tier up when it has failed "
	  "for SECS since its first try (default 3600); live" },
	{ "s3-allow", 0, CONFIG_LIST, CFG_FIELD(s3_allow), 0, 0,
	  config_apply_s3_allow, "USER:s3://BUCKET[/PREFIX]", "let USER (a "
	  "name or uid) use s3:// roots inside this prefix (whole path "
	  "components); repeatable; without a grant nobody, root included, "
	  "may use an s3:// root; live (checked when a manager opens)" },
};
const size_t config_ndefs = sizeof config_defs / sizeof config_defs[0];

/* Long options that are not settings. */
enum {
	CONFIG_OPT_CONFIG = 1000,
	CONFIG_OPT_CHECK,
	CONFIG_OPT_BASE = 2000,         /* + table index: long-only settings */
};

/* ---- values ------------------------------------------------------------------ */

/* "123", "64K", "512M", "4G", "1T" (binary multiples; "KiB"/"KB" accepted). */
int
config_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	uint64_t mult = 1;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	case 't': case 'T': mult = 1ULL << 40; end++; break;
	default:
		return -1;
	}
	if (mult > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
		end += strlen(end);
	if (*end != '\0' || (v != 0 && (uint64_t)v > UINT64_MAX / mult))
		return -1;
	*out = (uint64_t)v * mult;
	return 0;
}

int
config_parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/* Store text as setting d of c; a message in e on error. */
static int
config_set(struct config *c, size_t i, const char *text, ckd_err *e)
{
	const struct config_def *d = &config_defs[i];
	char *field = (char *)c + d->off, *end;
	unsigned long long v;
	uint64_t u;
	int b;

	switch (d->type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
		if (strlen(text) >= d->size)
			return err_set(e, CKPT_EINVAL, "%s: value too long (at "
			    "most %zu bytes)", d->key, d->size - 1);
		memcpy(field, text, strlen(text) + 1);
		break;
	case CONFIG_LIST:
		if (strlen(field) + 1 + strlen(text) >= d->size)
			return err_set(e, CKPT_EINVAL, "%s: values too long (at "
			    "most %zu bytes in all)", d->key, d->size - 1);
		if (field[0] != '\0')
			strcat(field, " ");
		strcat(field, text);
		break;
	case CONFIG_UINT:
	case CONFIG_U64:
		errno = 0;
		v = strtoull(text, &end, 10);
		if (text[0] < '0' || text[0] > '9' || *end != '\0' ||
		    errno != 0 || v < d->min || v > d->max)
			return err_set(e, CKPT_EINVAL, "%s must be a number in "
			    "%llu..%llu, not '%s'", d->key,
			    (unsigned long long)d->min,
			    (unsigned long long)d->max, text);
		if (d->type == CONFIG_UINT)
			*(unsigned *)(void *)field = (unsigned)v;
		else
			*(uint64_t *)(void *)field = v;
		break;
	case CONFIG_SIZE:
		if (config_parse_size(text, &u) != 0 || u < d->min ||
		    u > d->max)
			return err_set(e, CKPT_EINVAL, "%s: bad size '%s' (e.g. "
			    "512M, 4G)", d->key, text);
		*(uint64_t *)(void *)field = u;
		break;
	case CONFIG_LEVEL:
		if ((b = log_parse_level(text)) < 0)
			return err_set(e, CKPT_EINVAL, "%s: bad level '%s' "
			    "(error, warn, info, debug)", d->key, text);
		*(int *)(void *)field = b;
		break;
	case CONFIG_BOOL:
		if (config_parse_bool(text, &b) != 0)
			return err_set(e, CKPT_EINVAL, "%s: expected yes or no, "
			    "not '%s'", d->key, text);
		*(int *)(void *)field = b;
		break;
	}
	c->set |= 1ULL << i;
	return 0;
}

static void
config_format(const struct config *c, size_t i, char *buf, size_t len)
{
	static const char *const levels[] = { "error", "warn", "info",
	    "debug" };
	const struct config_def *d = &config_defs[i];
	const char *field = (const char *)c + d->off;
	int lv;

	switch (d->type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
	case CONFIG_LIST:
		snprintf(buf, len, "%s", field);
		break;
	case CONFIG_UINT:
		snprintf(buf, len, "%u", *(const unsigned *)(const void *)field);
		break;
	case CONFIG_U64:
	case CONFIG_SIZE:
		snprintf(buf, len, "%llu", (unsigned long long)
		    *(const uint64_t *)(const void *)field);
		break;
	case CONFIG_LEVEL:
		lv = *(const int *)(const void *)field;
		snprintf(buf, len, "%s", lv >= 0 && lv <= 3 ? levels[lv] : "?");
		break;
	case CONFIG_BOOL:
		snprintf(buf, len, "%s", *(const int *)(const void *)field ?
		    "yes" : "no");
		break;
	}
}

/* Index of key in the table ('_' and '-' alike), or -1. */
static long
config_find(const char *key)
{
	size_t i, j;

	for (i = 0; i < config_ndefs; i++) {
		const char *k = config_defs[i].key;

		for (j = 0; k[j] != '\0' && key[j] != '\0'; j++) {
			char a = k[j], b = key[j] == '_' ? '-' : key[j];

			if (a != b)
				break;
		}
		if (k[j] == '\0' && key[j] == '\0')
			return (long)i;
	}
	return -1;
}

/* ---- the command line ------------------------------------------------------------ */

/* "  OPT  help..." with the help wrapped at 79 columns, from column 29. */
static void
config_wrap(FILE *f, const char *opt, const char *help)
{
	const int col = 29, width = 79;
	const char *p = help;
	int pos;

	pos = fprintf(f, "  %s", opt);
	if (pos >= col - 1) {
		fputc('\n', f);
		pos = 0;
	}
	while (*p != '\0') {
		size_t w = strcspn(p, " ");

		if (pos > col && pos + 1 + (int)w > width) {
			fputc('\n', f);
			pos = 0;
		}
		if (pos < col) {
			fprintf(f, "%*s", col - pos, "");
			pos = col;
		} else {
			fputc(' ', f);
			pos++;
		}
		pos += fprintf(f, "%.*s", (int)w, p);
		p += w;
		while (*p == ' ')
			p++;
	}
	fputc('\n', f);
}

void
config_usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: ckptd [options]\n\n");
	for (i = 0; i < config_ndefs; i++) {
		const struct config_def *d = &config_defs[i];
		char opt[64];

		snprintf(opt, sizeof opt, "%c%c%s--%s%s%s",
		    d->short_opt ? '-' : ' ', d->short_opt ? d->short_opt : ' ',
		    d->short_opt ? ", " : "  ", d->key, d->arg ? " " : "",
		    d->arg ? d->arg : "");
		config_wrap(f, opt, d->help);
	}
	fprintf(f,
"      --config FILE          settings file (default: " CONFIG_SYSTEM_FILE "\n"
"                             for root, else $XDG_CONFIG_HOME/ckptd/ckptd.conf);\n"
"                             options given here override it\n"
"      --check-config         print the effective settings and exit\n"
"  -V, --version              print the version and exit\n"
"  -h, --help                 print this help and exit\n"
"\n"
"Settings marked \"live\" are re-read from the file on SIGHUP\n"
"(systemctl reload ckptd). Under systemd (LISTEN_FDS or NOTIFY_SOCKET\n"
"set) ckptd stays in the foreground, takes its socket from socket\n"
"activation and reports readiness with sd_notify. See ckptd(8) and\n"
"ckptd.conf(5).\n");
}

int
config_parse_args(int argc, char **argv, struct config *cli,
    struct config_args *args)
{
	struct option opts[64];
	char shorts[128];
	size_t i, n = 0, sn = 0;
	ckd_err e;
	int c, idx;

	memset(cli, 0, sizeof *cli);
	memset(args, 0, sizeof *args);
	shorts[sn++] = ':';     /* missing argument: ':' instead of '?' */
	for (i = 0; i < config_ndefs && n < 58; i++) {
		const struct config_def *d = &config_defs[i];
		int flag = d->type == CONFIG_BOOL;

		opts[n++] = (struct option){ d->key, flag ? no_argument :
		    required_argument, NULL, d->short_opt ? d->short_opt :
		    CONFIG_OPT_BASE + (int)i };
		if (d->short_opt) {
			shorts[sn++] = (char)d->short_opt;
			if (!flag)
				shorts[sn++] = ':';
		}
	}
	opts[n++] = (struct option){ "config", required_argument, NULL,
	    CONFIG_OPT_CONFIG };
	opts[n++] = (struct option){ "check-config", no_argument, NULL,
	    CONFIG_OPT_CHECK };
	opts[n++] = (struct option){ "version", no_argument, NULL, 'V' };
	opts[n++] = (struct option){ "help", no_argument, NULL, 'h' };
	opts[n] = (struct option){ NULL, 0, NULL, 0 };
	memcpy(shorts + sn, "Vh", 3);

	while ((c = getopt_long(argc, argv, shorts, opts, &idx)) != -1) {
		long di = -1;

		switch (c) {
		case CONFIG_OPT_CONFIG:
			args->file = optarg;
			continue;
		case CONFIG_OPT_CHECK:
			args->check = 1;
			continue;
		case 'V':
			printf("ckptd %s (protocol %d)\n", CKPTD_VERSION,
			    CKPT__VERSION__PROTOCOL_VERSION);
			return CONFIG_EXIT_OK;
		case 'h':
			config_usage(stdout);
			return CONFIG_EXIT_OK;
		case ':':
			fprintf(stderr, "ckptd: option '%s' needs a value\n",
			    argv[optind - 1]);
			return CONFIG_EXIT_USAGE;
		case '?':
			if (optopt != 0)
				fprintf(stderr, "ckptd: unknown option '-%c'\n",
				    optopt);
			else
				fprintf(stderr, "ckptd: unknown option '%s'\n",
				    argv[optind - 1]);
			config_usage(stderr);
			return CONFIG_EXIT_USAGE;
		}
		if (c >= CONFIG_OPT_BASE)
			di = c - CONFIG_OPT_BASE;
		else
			for (i = 0; i < config_ndefs; i++)
				if (config_defs[i].short_opt == c)
					di = (long)i;
		if (di < 0 || (size_t)di >= config_ndefs) {
			config_usage(stderr);
			return CONFIG_EXIT_USAGE;
		}
		if (config_set(cli, (size_t)di, config_defs[di].type ==
		    CONFIG_BOOL ? "yes" : optarg, &e) != 0) {
			fprintf(stderr, "ckptd: --%s\n", e.msg);
			return CONFIG_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ckptd: unexpected argument '%s'\n",
		    argv[optind]);
		config_usage(stderr);
		return CONFIG_EXIT_USAGE;
	}
	return CONFIG_RUN;
}

/* ---- the file ----------------------------------------------------------------------- */

int
config_default_file(char *buf, size_t len)
{
	const char *v;
	int n;

	if (geteuid() == 0)
		n = snprintf(buf, len, "%s", CONFIG_SYSTEM_FILE);
	else if ((v = getenv("XDG_CONFIG_HOME")) != NULL && v[0] == '/')
		n = snprintf(buf, len, "%s/ckptd/ckptd.conf", v);
	else if ((v = getenv("HOME")) != NULL && v[0] == '/')
		n = snprintf(buf, len, "%s/.config/ckptd/ckptd.conf", v);
	else
		return -1;
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static char *
config_trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* One line: blank, comment, or key = value. */
static int
config_line(struct config *out, char *line, ckd_err *e)
{
	char *key, *val, *eq;
	size_t vlen;
	long i;

	key = config_trim(line);
	if (*key == '\0' || *key == '#')
		return 0;
	if ((eq = strchr(key, '=')) == NULL)
		return err_set(e, CKPT_EINVAL, "expected 'key = value'");
	*eq = '\0';
	key = config_trim(key);
	val = config_trim(eq + 1);
	if ((i = config_find(key)) < 0)
		return err_set(e, CKPT_EINVAL, "unknown setting '%s'", key);
	vlen = strlen(val);
	if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
		val[vlen - 1] = '\0';
		val++;
	} else if (memchr(val, '"', vlen) != NULL) {
		return err_set(e, CKPT_EINVAL, "%s: unbalanced quote", key);
	}
	if ((out->set & (1ULL << i)) && config_defs[i].type != CONFIG_LIST)
		return err_set(e, CKPT_EINVAL, "%s given twice",
		    config_defs[i].key);
	/* The daemon's working directory is "/": a relative path would
	 * change meaning between start-up and a reload. */
	if (config_defs[i].type == CONFIG_PATH && val[0] != '/')
		return err_set(e, CKPT_EINVAL, "%s must be an absolute path",
		    config_defs[i].key);
	return config_set(out, (size_t)i, val, e);
}

int
config_read_file(const char *path, struct config *out, ckd_err *e)
{
	char line[CONFIG_MAX_LINE];
	unsigned lineno = 0;
	FILE *f;
	int r = 0;

	memset(out, 0, sizeof *out);
	if ((f = fopen(path, "re")) == NULL) {
		if (errno == ENOENT)
			return err_set(e, CKPT_ENOTFOUND, "%s: no such file",
			    path);
		return err_errno(e, errno, "%s", path);
	}
	while (fgets(line, sizeof line, f) != NULL) {
		size_t n = strlen(line);
		ckd_err le;

		lineno++;
		if (n == sizeof line - 1 && line[n - 1] != '\n' && !feof(f)) {
			r = err_set(e, CKPT_ETOOBIG, "%s:%u: line longer than "
			    "%d bytes", path, lineno, CONFIG_MAX_LINE - 2);
			goto out;
		}
		if (memchr(line, '\0', n) != NULL && strlen(line) != n) {
			r = err_set(e, CKPT_EINVAL, "%s:%u: NUL byte", path,
			    lineno);
			goto out;
		}
		if ((r = config_line(out, line, &le)) != 0) {
			r = err_set(e, r, "%s:%u: %s", path, lineno, le.msg);
			goto out;
		}
	}
	if (ferror(f))
		r = err_errno(e, EIO, "reading %s", path);
out:
	fclose(f);
	return r;
}

/* ---- merging, defaults, printing ------------------------------------------------- */

static unsigned
config_default_workers(void)
{
	cpu_set_t set;
	long n = 0;

	if (sched_getaffinity(0, sizeof set, &set) == 0)
		n = CPU_COUNT(&set);
	if (n <= 0)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 2)
		n = 2;
	if (n > 64)
		n = 64;
	return (unsigned)n;
}

static uint64_t
config_default_budget(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t cap = 4ULL << 30, quarter;

	if (pages <= 0 || psize <= 0)
		return 1ULL << 30;
	quarter = (uint64_t)pages * (uint64_t)psize / 4;
	return quarter < cap ? quarter : cap;
}

static void
config_copy(struct config *dst, const struct config *src, size_t i)
{
	const struct config_def *d = &config_defs[i];

	memcpy((char *)dst + d->off, (const char *)src + d->off, d->size);
	dst->set |= 1ULL << i;
}

/* Was the setting key given (in the file or on the command line)? */
static int
config_given(const struct config *c, const char *key)
{
	size_t i;

	for (i = 0; i < config_ndefs; i++)
		if (strcmp(config_defs[i].key, key) == 0)
			return (c->set & (1ULL << i)) != 0;
	return 0;
}

void
config_merge(struct config *out, const struct config *file,
    const struct config *cli)
{
	size_t i;

	memset(out, 0, sizeof *out);
	out->log_level = LOG_LVL_INFO;
	out->max_connections = USER_DEFAULT_CONNS;
	out->max_connections_per_user = USER_DEFAULT_CONNS_PER_USER;
	out->connections_reserve = USER_DEFAULT_CONNS_RESERVE;
	out->idle_timeout = USER_DEFAULT_IDLE_SECS;
	out->max_requests_per_user = USER_DEFAULT_INFLIGHT_PER_USER;
	out->max_leaves = USER_DEFAULT_LEAVES_PER_REQUEST;
	for (i = 0; i < config_ndefs; i++) {
		if (file != NULL && (file->set & (1ULL << i)))
			config_copy(out, file, i);
		if (cli != NULL && (cli->set & (1ULL << i)))
			config_copy(out, cli, i);
	}
	if (out->workers == 0)
		out->workers = config_default_workers();
	if (out->memory_budget == 0)
		out->memory_budget = config_default_budget();
	if (out->stall_timeout == 0)
		out->stall_timeout = 300;
	if (out->autostarted && !config_given(out, "idle-exit"))
		out->idle_exit = CONFIG_AUTOSTART_IDLE_SECS;
}

void
config_print(FILE *f, const struct config *c)
{
	char val[PATH_MAX];
	size_t i;

	for (i = 0; i < config_ndefs; i++) {
		config_format(c, i, val, sizeof val);
		fprintf(f, "%s = %s%s%s\n", config_defs[i].key,
		    val[0] == '\0' || val[0] == ' ' ? "\"" : "", val,
		    val[0] == '\0' || val[0] == ' ' ? "\"" : "");
	}
}

unsigned
config_reload(struct config *running, const struct config *fresh,
    const struct config_hooks *h)
{
	char a[PATH_MAX], b[PATH_MAX];
	unsigned applied = 0;
	size_t i;

	for (i = 0; i < config_ndefs; i++) {
		const struct config_def *d = &config_defs[i];

		config_format(running, i, a, sizeof a);
		config_format(fresh, i, b, sizeof b);
		if (strcmp(a, b) == 0)
			continue;
		if (d->apply == NULL) {
			log_warn("%s changed from '%s' to '%s': takes effect "
			    "after a restart", d->key, a, b);
			continue;
		}
		memcpy((char *)running + d->off, (const char *)fresh + d->off,
		    d->size);
		d->apply(running, h);
		applied++;
		log_info("%s: '%s' -> '%s'", d->key, a, b);
	}
	return applied;
}
