/*
 * ckptctl - inspect and manage checkpoints through ckptd.
 *
 *   ckptctl [--socket PATH] [--json] [--step-prefix P] COMMAND ...
 *     status                 daemon state
 *     steps DIR              every step (committed, failed, interrupted)
 *     show DIR STEP          items and leaves of a step
 *     delete DIR STEP        delete a committed step
 *     verify DIR [STEP]      check stored checksums
 *     preempt                the node is going down: managers save and stop
 *     wait DIR [--after N] [--timeout SECS]
 *                            wait for a step after N (default: the latest)
 *     import ORBAX_ROOT DEST [--best-metric NAME] [--best-mode min|max] [-q]
 *                            copy the steps Orbax wrote into ckptd steps
 *                            (runs the ckpt package's migration in Python)
 *
 * The options may also follow the command (ckptctl steps DIR --json).
 * Tables by default; --json prints one JSON object. Exit status: 0 ok,
 * 1 error (message on stderr), 2 usage, 3 status: no daemon is running
 * (status never starts one).
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <ckpt/ckpt.h>

static const char *opt_socket;
static const char *opt_prefix;
static int opt_json;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: ckptctl [--socket PATH] [--json] [--step-prefix P] COMMAND\n"
	    "commands:\n"
	    "  status                                daemon state\n"
	    "  steps DIR                             list steps\n"
	    "  show DIR STEP                         items and leaves of a step\n"
	    "  delete DIR STEP                       delete a step\n"
	    "  verify DIR [STEP]                     check stored checksums\n"
	    "  wait DIR [--after N] [--timeout SECS] wait for a new step\n"
	    "  preempt                               tell every trainer the node "
	    "is going down\n"
	    "  import ORBAX_ROOT DEST [--best-metric NAME] [--best-mode min|max] "
	    "[-q]\n"
	    "                                        copy Orbax checkpoints into "
	    "ckptd steps\n"
	    "                                        (Python 3 with orbax-"
	    "checkpoint: $CKPT_PYTHON,\n"
	    "                                        else python3 on PATH)\n");
}

static int
fail(const char *fmt, ...)
{
	va_list ap;

	fputs("ckptctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int
usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("ckptctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage(stderr);
	return 2;
}

static void
human(char *buf, size_t len, uint64_t n)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)n;
	int u = 0;

	if (n < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", n);
		return;
	}
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, units[u]);
}

static void
iso_time(char *buf, size_t len, int64_t ns)
{
	struct tm tm;
	time_t t;

	if (ns <= 0) {
		snprintf(buf, len, "-");
		return;
	}
	t = (time_t)(ns / 1000000000);
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
json_print(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);

	if (s != NULL) {
		puts(s);
		free(s);
	}
	json_decref(j);
}

/* ---- tables ----------------------------------------------------------------------- */

struct table {
	size_t ncol, nrow;
	char ***rows;       /* rows[0] is the header */
	size_t *width;
};

static void
table_init(struct table *t, size_t ncol)
{
	memset(t, 0, sizeof *t);
	t->ncol = ncol;
	t->width = calloc(ncol, sizeof *t->width);
}

static void
table_add(struct table *t, ...)
{
	va_list ap;
	char **row;
	size_t i;

	row = calloc(t->ncol, sizeof *row);
	t->rows = realloc(t->rows, (t->nrow + 1) * sizeof *t->rows);
	if (row == NULL || t->rows == NULL || t->width == NULL) {
		fail("out of memory");
		exit(1);
	}
	va_start(ap, t);
	for (i = 0; i < t->ncol; i++) {
		const char *s = va_arg(ap, const char *);
		row[i] = strdup(s != NULL ? s : "");
		if (row[i] == NULL) {
			fail("out of memory");
			exit(1);
		}
		if (strlen(row[i]) > t->width[i])
			t->width[i] = strlen(row[i]);
	}
	va_end(ap);
	t->rows[t->nrow++] = row;
}

static void
table_print(struct table *t)
{
	size_t r, i;

	for (r = 0; r < t->nrow; r++) {
		for (i = 0; i < t->ncol; i++) {
			if (i + 1 == t->ncol)
				printf("%s", t->rows[r][i]);
			else
				printf("%-*s  ", (int)t->width[i], t->rows[r][i]);
		}
		putchar('\n');
		for (i = 0; i < t->ncol; i++)
			free(t->rows[r][i]);
		free(t->rows[r]);
	}
	free(t->rows);
	free(t->width);
}

/* ---- utilities ------------------------------------------------------------------------ */

/* "DIR: message", unless the message already names DIR. */
static int
fail_dir(const char *dir, const char *msg)
{
	if (strstr(msg, dir) != NULL)
		return fail("%s", msg);
	return fail("%s: %s", dir, msg);
}

static int
parse_i64(const char *s, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int
open_manager(ckpt_client *c, const char *dir, int read_only,
    ckpt_manager **m)
{
	ckpt_options *o = ckpt_options_new();
	int r;

	if (o == NULL)
		return fail("out of memory");
	ckpt_options_set_create(o, 0);
	if (read_only)
		ckpt_options_set_read_only(o, 1);
	if (opt_prefix != NULL && ckpt_options_set_step_prefix(o, opt_prefix) != 0) {
		ckpt_options_free(o);
		return fail("invalid step prefix '%s'", opt_prefix);
	}
	r = ckpt_manager_open(c, dir, o, m);
	ckpt_options_free(o);
	if (r != 0)
		return fail_dir(dir, ckpt_client_errmsg(c));
	return 0;
}

static const char *
handler_name(ckpt_handler h)
{
	switch (h) {
	case CKPT_HANDLER_STANDARD: return "standard";
	case CKPT_HANDLER_PYTREE: return "pytree";
	case CKPT_HANDLER_JSON: return "json";
	case CKPT_HANDLER_ARRAY: return "array";
	case CKPT_HANDLER_PROTO: return "proto";
	default: return "unspecified";
	}
}

static const char *
kind_name(ckpt_leaf_kind k)
{
	switch (k) {
	case CKPT_LEAF_ARRAY: return "array";
	case CKPT_LEAF_INT: return "int";
	case CKPT_LEAF_FLOAT: return "float";
	case CKPT_LEAF_BOOL: return "bool";
	case CKPT_LEAF_STR: return "str";
	case CKPT_LEAF_NONE: return "none";
	case CKPT_LEAF_EMPTY_DICT: return "empty dict";
	case CKPT_LEAF_EMPTY_LIST: return "empty list";
	case CKPT_LEAF_EMPTY_TUPLE: return "empty tuple";
	default: return "?";
	}
}

static const char *
state_name(int s)
{
	return s == 0 ? "committed" : s == 1 ? "pending" :
	    s == 3 ? "interrupted" : "failed";
}

/* ---- commands ---------------------------------------------------------------------- */

static int
cmd_status(ckpt_client *c)
{
	ckpt_status st;
	char a[32], b[32], w[32], line[96], coord[1024];
	struct table t;

	if (ckpt_status_get(c, &st) != 0 ||
	    ckpt_status_coordination(c, coord, sizeof coord) != 0)
		return fail("%s", ckpt_client_errmsg(c));
	if (opt_json) {
		json_print(json_pack("{s:s, s:f, s:I, s:I, s:I, s:I, s:I, s:I, "
		    "s:I, s:I, s:I, s:I, s:I, s:s}",
		    "version", st.version, "uptime_secs", st.uptime_secs,
		    "connections", (json_int_t)st.connections,
		    "managers", (json_int_t)st.managers,
		    "queued_saves", (json_int_t)st.queued_saves,
		    "inflight_saves", (json_int_t)st.inflight_saves,
		    "staging_bytes", (json_int_t)st.staging_bytes,
		    "memory_budget", (json_int_t)st.memory_budget,
		    "waiting_for_memory", (json_int_t)st.waiting_for_memory,
		    "workers", (json_int_t)st.workers,
		    "saves_committed", (json_int_t)st.saves_committed,
		    "saves_failed", (json_int_t)st.saves_failed,
		    "bytes_written", (json_int_t)st.bytes_written,
		    "coordination", coord));
		return 0;
	}
	table_init(&t, 2);
	table_add(&t, "version", st.version);
	{
		uint64_t s = (uint64_t)st.uptime_secs;
		snprintf(line, sizeof line, "%" PRIu64 "h %02" PRIu64 "m %02"
		    PRIu64 "s", s / 3600, s / 60 % 60, s % 60);
	}
	table_add(&t, "uptime", line);
#define NUM(label, v) do { snprintf(line, sizeof line, "%" PRIu64, \
	(uint64_t)(v)); table_add(&t, label, line); } while (0)
	NUM("connections", st.connections);
	NUM("managers", st.managers);
	NUM("workers", st.workers);
	NUM("queued saves", st.queued_saves);
	NUM("in-flight saves", st.inflight_saves);
	human(a, sizeof a, st.staging_bytes);
	human(b, sizeof b, st.memory_budget);
	snprintf(line, sizeof line, "%s / %s", a, b);
	table_add(&t, "staging / budget", line);
	NUM("waiting for memory", st.waiting_for_memory);
	NUM("saves committed", st.saves_committed);
	NUM("saves failed", st.saves_failed);
	human(w, sizeof w, st.bytes_written);
	table_add(&t, "bytes written", w);
	table_add(&t, "coordination", coord);
#undef NUM
	table_print(&t);
	return 0;
}

static int
cmd_steps(ckpt_client *c, const char *dir)
{
	ckpt_manager *m;
	ckpt_step_info *v;
	size_t n, i;
	int r;

	if ((r = open_manager(c, dir, 1, &m)) != 0)
		return r;
	if (ckpt_list_steps(m, &v, &n) != 0) {
		r = fail_dir(dir, ckpt_manager_errmsg(m));
		ckpt_manager_close(m);
		return r;
	}
	/* metrics per committed step */
	if (opt_json) {
		json_t *arr = json_array(), *o;
		for (i = 0; i < n; i++) {
			char tbuf[64], *mj = NULL;
			json_t *metrics = json_null();
			iso_time(tbuf, sizeof tbuf, v[i].state == 0 ?
			    v[i].commit_ns : v[i].init_ns);
			if (v[i].state == 0 && ckpt_metrics(m, v[i].step, &mj) == 0 &&
			    mj != NULL) {
				json_t *p = json_loads(mj, JSON_DECODE_ANY, NULL);
				if (p != NULL) {
					json_decref(metrics);
					metrics = p;
				}
			}
			free(mj);
			o = json_pack("{s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:o}",
			    "step", (json_int_t)v[i].step,
			    "state", state_name(v[i].state),
			    "name", v[i].name, "time", tbuf,
			    "init_ns", (json_int_t)v[i].init_ns,
			    "commit_ns", (json_int_t)v[i].commit_ns,
			    "bytes", (json_int_t)v[i].bytes,
			    "metrics", metrics);
			if (v[i].error[0] != '\0')
				json_object_set_new(o, "error",
				    json_string(v[i].error));
			if (v[i].upload[0] != '\0')
				json_object_set_new(o, "upload",
				    json_string(v[i].upload));
			if (v[i].upload_error[0] != '\0')
				json_object_set_new(o, "upload_error",
				    json_string(v[i].upload_error));
			json_array_append_new(arr, o);
		}
		json_print(json_pack("{s:s, s:o}", "directory",
		    ckpt_manager_directory(m), "steps", arr));
	} else {
		struct table t;
		int tiered = 0;

		for (i = 0; i < n; i++)
			tiered |= v[i].upload[0] != '\0';
		table_init(&t, tiered ? 7 : 6);
		if (tiered)
			table_add(&t, "STEP", "STATE", "TIME", "SIZE", "UPLOAD",
			    "METRICS", "ERROR");
		else
			table_add(&t, "STEP", "STATE", "TIME", "SIZE",
			    "METRICS", "ERROR");
		for (i = 0; i < n; i++) {
			char sbuf[32], tbuf[64], szbuf[32], *mj = NULL;
			snprintf(sbuf, sizeof sbuf, "%" PRIu64, v[i].step);
			iso_time(tbuf, sizeof tbuf, v[i].state == 0 ?
			    v[i].commit_ns : v[i].init_ns);
			if (v[i].state == 0)
				human(szbuf, sizeof szbuf, v[i].bytes);
			else
				snprintf(szbuf, sizeof szbuf, "-");
			if (v[i].state == 0)
				ckpt_metrics(m, v[i].step, &mj);
			if (tiered)
				table_add(&t, sbuf, state_name(v[i].state),
				    tbuf, szbuf, v[i].upload[0] != '\0' ?
				    v[i].upload : "-", mj != NULL ? mj : "-",
				    v[i].upload_error[0] != '\0' ?
				    v[i].upload_error : v[i].error[0] != '\0' ?
				    v[i].error : "-");
			else
				table_add(&t, sbuf, state_name(v[i].state),
				    tbuf, szbuf, mj != NULL ? mj : "-",
				    v[i].error[0] != '\0' ? v[i].error : "-");
			free(mj);
		}
		table_print(&t);
	}
	free(v);
	ckpt_manager_close(m);
	return 0;
}

static void
fmt_shape(char *buf, size_t len, const ckpt_leaf *l)
{
	size_t off;
	int i;

	off = (size_t)snprintf(buf, len, "(");
	for (i = 0; i < l->ndim && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%" PRId64,
		    i > 0 ? ", " : "", l->shape[i]);
	if (off < len)
		snprintf(buf + off, len - off, l->ndim == 1 ? ",)" : ")");
}

/* "(2, 0)": n values of v. */
static void
fmt_dims(char *buf, size_t len, int n, const int64_t *v)
{
	ckpt_leaf l;

	memset(&l, 0, sizeof l);
	l.ndim = n;
	l.shape = v;
	fmt_shape(buf, len, &l);
}

/* The pieces of the global array whose first piece is leaf j of t: their
 * number and total bytes (the other pieces share its path). */
static size_t
pieces_of(const ckpt_tree *t, size_t j, size_t *bytes)
{
	ckpt_leaf a, b;
	size_t k, n = 0;

	*bytes = 0;
	ckpt_tree_leaf(t, j, &a);
	for (k = j; k < ckpt_tree_nleaves(t); k++) {
		ckpt_tree_leaf(t, k, &b);
		if (b.global_shape != NULL && strcmp(a.path_str, b.path_str) == 0) {
			n++;
			*bytes += b.nbytes;
		}
	}
	return n;
}

/* Is leaf j a piece whose array was shown at an earlier piece? */
static int
piece_seen(const ckpt_tree *t, size_t j)
{
	ckpt_leaf l;

	ckpt_tree_leaf(t, j, &l);
	return l.global_shape != NULL &&
	    ckpt_tree_find(t, l.path_str) != (long)j;
}

static json_t *
json_dims(int n, const int64_t *v)
{
	json_t *a = json_array();
	int d;

	for (d = 0; d < n; d++)
		json_array_append_new(a, json_integer(v[d]));
	return a;
}

/* Leaf j of t in `show --json`: a global array lists its pieces. */
static json_t *
json_array_leaf(const ckpt_tree *t, size_t j, const ckpt_leaf *l)
{
	json_t *o = json_pack("{s:s, s:s}", "path", l->path_str,
	    "kind", kind_name(l->kind));
	size_t k, bytes;

	json_object_set_new(o, "dtype", json_string(
	    ckpt_dtype_name(l->dtype) != NULL ? ckpt_dtype_name(l->dtype) : "?"));
	if (l->global_shape == NULL) {
		json_object_set_new(o, "shape", json_dims(l->ndim, l->shape));
		json_object_set_new(o, "bytes", json_integer((json_int_t)l->nbytes));
		if (l->file != NULL)
			json_object_set_new(o, "file", json_string(l->file));
		return o;
	}
	json_t *pieces = json_array();
	pieces_of(t, j, &bytes);
	json_object_set_new(o, "shape", json_dims(l->ndim, l->global_shape));
	json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
	for (k = j; k < ckpt_tree_nleaves(t); k++) {
		ckpt_leaf p;
		json_t *po;

		ckpt_tree_leaf(t, k, &p);
		if (p.global_shape == NULL || strcmp(p.path_str, l->path_str) != 0)
			continue;
		po = json_pack("{s:o, s:o, s:I}", "offsets",
		    json_dims(p.ndim, p.offsets), "shape",
		    json_dims(p.ndim, p.shape), "bytes", (json_int_t)p.nbytes);
		if (p.file != NULL)
			json_object_set_new(po, "file", json_string(p.file));
		json_array_append_new(pieces, po);
	}
	json_object_set_new(o, "pieces", pieces);
	return o;
}

static void
scalar_value(char *buf, size_t len, const ckpt_leaf *l)
{
	switch (l->kind) {
	case CKPT_LEAF_INT: snprintf(buf, len, "%" PRId64, l->i); break;
	case CKPT_LEAF_FLOAT: snprintf(buf, len, "%.17g", l->f); break;
	case CKPT_LEAF_BOOL: snprintf(buf, len, "%s", l->b ? "true" : "false"); break;
	case CKPT_LEAF_STR: snprintf(buf, len, "\"%.60s\"", l->s != NULL ? l->s : ""); break;
	case CKPT_LEAF_NONE: snprintf(buf, len, "None"); break;
	case CKPT_LEAF_EMPTY_DICT: snprintf(buf, len, "{}"); break;
	case CKPT_LEAF_EMPTY_LIST: snprintf(buf, len, "[]"); break;
	case CKPT_LEAF_EMPTY_TUPLE: snprintf(buf, len, "()"); break;
	default: snprintf(buf, len, "-"); break;
	}
}

static int
cmd_show(ckpt_client *c, const char *dir, const char *stepstr)
{
	ckpt_manager *m;
	ckpt_restored *res;
	int64_t step;
	size_t i, j;
	int r;

	if (parse_i64(stepstr, &step) != 0 || step < 0)
		return usage_error("invalid step '%s'", stepstr);
	if ((r = open_manager(c, dir, 1, &m)) != 0)
		return r;
	if (ckpt_item_metadata(m, step, &res) != 0) {
		r = fail_dir(dir, ckpt_manager_errmsg(m));
		ckpt_manager_close(m);
		return r;
	}
	if (opt_json) {
		json_t *items = json_array();
		for (i = 0; i < ckpt_restored_nitems(res); i++) {
			const ckpt_tree *t = ckpt_restored_item_tree(res, i);
			json_t *leaves = json_array(), *it;
			for (j = 0; j < ckpt_tree_nleaves(t); j++) {
				ckpt_leaf l;
				json_t *o;
				ckpt_tree_leaf(t, j, &l);
				if (piece_seen(t, j))
					continue;
				if (l.kind == CKPT_LEAF_ARRAY) {
					o = json_array_leaf(t, j, &l);
				} else {
					char vbuf[128];
					o = json_pack("{s:s, s:s}", "path", l.path_str,
					    "kind", kind_name(l.kind));
					scalar_value(vbuf, sizeof vbuf, &l);
					json_object_set_new(o, "value", json_string(vbuf));
				}
				json_array_append_new(leaves, o);
			}
			it = json_pack("{s:s, s:s, s:o}",
			    "name", ckpt_restored_item_name(res, i),
			    "handler", handler_name(ckpt_restored_item_handler(res, i)),
			    "leaves", leaves);
			if (ckpt_restored_item_json(res, i) != NULL)
				json_object_set_new(it, "json",
				    json_string(ckpt_restored_item_json(res, i)));
			json_array_append_new(items, it);
		}
		json_print(json_pack("{s:I, s:s, s:o}", "step",
		    (json_int_t)ckpt_restored_step(res), "directory",
		    ckpt_restored_directory(res) != NULL ?
		    ckpt_restored_directory(res) : "", "items", items));
	} else {
		struct table t;
		printf("step %" PRIu64 "  %s\n\n", ckpt_restored_step(res),
		    ckpt_restored_directory(res) != NULL ?
		    ckpt_restored_directory(res) : "");
		table_init(&t, 3);
		table_add(&t, "ITEM", "HANDLER", "LEAVES");
		for (i = 0; i < ckpt_restored_nitems(res); i++) {
			char nbuf[32];
			snprintf(nbuf, sizeof nbuf, "%zu",
			    ckpt_tree_nleaves(ckpt_restored_item_tree(res, i)));
			table_add(&t, ckpt_restored_item_name(res, i),
			    handler_name(ckpt_restored_item_handler(res, i)),
			    ckpt_restored_item_tree(res, i) != NULL ? nbuf : "-");
		}
		table_print(&t);
		putchar('\n');
		table_init(&t, 6);
		table_add(&t, "ITEM", "PATH", "DTYPE", "SHAPE", "BYTES", "FILE");
		for (i = 0; i < ckpt_restored_nitems(res); i++) {
			const ckpt_tree *tr = ckpt_restored_item_tree(res, i);
			for (j = 0; j < ckpt_tree_nleaves(tr); j++) {
				ckpt_leaf l;
				char shp[256], nb[32];
				ckpt_tree_leaf(tr, j, &l);
				if (l.global_shape != NULL) {
					/* a global array, then its pieces */
					size_t bytes, np = pieces_of(tr, j, &bytes);
					char pb[300], off[256];
					if (!piece_seen(tr, j)) {
						fmt_dims(shp, sizeof shp, l.ndim,
						    l.global_shape);
						human(nb, sizeof nb, bytes);
						snprintf(pb, sizeof pb, "%zu pieces", np);
						table_add(&t, ckpt_restored_item_name(res,
						    i), l.path_str,
						    ckpt_dtype_name(l.dtype), shp, nb, pb);
					}
					fmt_dims(off, sizeof off, l.ndim, l.offsets);
					fmt_shape(shp, sizeof shp, &l);
					human(nb, sizeof nb, l.nbytes);
					snprintf(pb, sizeof pb, "  @%s", off);
					table_add(&t, "", pb, "", shp, nb,
					    l.file != NULL ? l.file : "-");
				} else if (l.kind == CKPT_LEAF_ARRAY) {
					fmt_shape(shp, sizeof shp, &l);
					human(nb, sizeof nb, l.nbytes);
					table_add(&t, ckpt_restored_item_name(res, i),
					    l.path_str, ckpt_dtype_name(l.dtype), shp,
					    nb, l.file != NULL ? l.file : "-");
				} else {
					scalar_value(shp, sizeof shp, &l);
					table_add(&t, ckpt_restored_item_name(res, i),
					    l.path_str, kind_name(l.kind), shp, "-", "-");
				}
			}
		}
		table_print(&t);
	}
	ckpt_restored_free(res);
	ckpt_manager_close(m);
	return 0;
}

static int
cmd_delete(ckpt_client *c, const char *dir, const char *stepstr)
{
	ckpt_manager *m;
	int64_t step;
	int r;

	if (parse_i64(stepstr, &step) != 0 || step < 0)
		return usage_error("invalid step '%s'", stepstr);
	if ((r = open_manager(c, dir, 0, &m)) != 0)
		return r;
	if (ckpt_delete(m, (uint64_t)step) != 0) {
		r = fail_dir(dir, ckpt_manager_errmsg(m));
		ckpt_manager_close(m);
		return r;
	}
	ckpt_manager_close(m);
	if (opt_json)
		json_print(json_pack("{s:s, s:I, s:b}", "directory", dir, "step",
		    (json_int_t)step, "deleted", 1));
	else
		printf("deleted step %" PRId64 " of %s\n", step, dir);
	return 0;
}

static int
cmd_verify(ckpt_client *c, const char *dir, const char *stepstr)
{
	ckpt_manager *m;
	int64_t step = -1;
	char *problems = NULL;
	int r, code;

	if (stepstr != NULL && (parse_i64(stepstr, &step) != 0 || step < 0))
		return usage_error("invalid step '%s'", stepstr);
	if ((r = open_manager(c, dir, 1, &m)) != 0)
		return r;
	code = ckpt_verify(m, step, &problems);
	if (code != 0 && (problems == NULL || *problems == '\0')) {
		r = fail_dir(dir, ckpt_manager_errmsg(m));
		free(problems);
		ckpt_manager_close(m);
		return r;
	}
	r = problems != NULL && *problems != '\0' ? 1 : 0;
	if (opt_json) {
		json_t *arr = json_array();
		char *p = problems, *nl;
		while (p != NULL && *p != '\0') {
			nl = strchr(p, '\n');
			if (nl != NULL)
				*nl = '\0';
			json_array_append_new(arr, json_string(p));
			p = nl != NULL ? nl + 1 : NULL;
		}
		json_t *o = json_pack("{s:s, s:b, s:o}", "directory",
		    ckpt_manager_directory(m), "ok", r == 0, "problems", arr);
		if (step >= 0)
			json_object_set_new(o, "step", json_integer(step));
		json_print(o);
	} else if (r != 0) {
		fputs(problems, stdout);
		fail("%s: checksum verification failed", dir);
	} else if (step >= 0) {
		printf("ok: step %" PRId64 " of %s verified\n", step, dir);
	} else {
		printf("ok: every step of %s verified\n", dir);
	}
	free(problems);
	ckpt_manager_close(m);
	return r;
}

static int
cmd_wait(ckpt_client *c, const char *dir, int argc, char **argv)
{
	ckpt_manager *m;
	int64_t after = -2, step, timeout_ms = 0;
	int i, r;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--after") == 0 && i + 1 < argc) {
			if (parse_i64(argv[++i], &after) != 0 || after < -1)
				return usage_error("invalid --after '%s'", argv[i]);
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			char *end;
			double s = strtod(argv[++i], &end);
			if (end == argv[i] || *end != '\0' || !(s > 0) || s > 1e9)
				return usage_error("invalid --timeout '%s'", argv[i]);
			timeout_ms = (int64_t)(s * 1000);
			if (timeout_ms == 0)
				timeout_ms = 1;
		} else {
			return usage_error("unexpected argument '%s'", argv[i]);
		}
	}
	if ((r = open_manager(c, dir, 1, &m)) != 0)
		return r;
	if (after == -2 && ckpt_latest_step(m, &after) != 0) {
		r = fail_dir(dir, ckpt_manager_errmsg(m));
		ckpt_manager_close(m);
		return r;
	}
	if (after >= 0)
		fprintf(stderr, "waiting for a step after %" PRId64 " in %s ...\n",
		    after, dir);
	else
		fprintf(stderr, "waiting for a first step in %s ...\n", dir);
	if (ckpt_wait_for_step(m, after, timeout_ms, &step) != 0) {
		r = fail_dir(dir, ckpt_manager_errmsg(m));
		ckpt_manager_close(m);
		return r;
	}
	ckpt_manager_close(m);
	if (opt_json)
		json_print(json_pack("{s:s, s:I}", "directory", dir, "step",
		    (json_int_t)step));
	else
		printf("%" PRId64 "\n", step);
	return 0;
}

/* ---- import ---------------------------------------------------------------- */

#ifndef CKPT_PYTHONDIR
#define CKPT_PYTHONDIR ""
#endif

/*
 * Run by the interpreter: find the ckpt package (as installed for it, else
 * where this ckptctl installed it), check for orbax, run the migration.
 * argv[1] is that directory, the migration's arguments follow.
 */
static const char import_boot[] =
    "import sys\n"
    "extra = sys.argv.pop(1)\n"
    "try:\n"
    "    import ckpt.migrate\n"
    "except ImportError as e:\n"
    "    first = e\n"
    "    if extra:\n"
    "        sys.path.append(extra)\n"
    "    try:\n"
    "        import ckpt.migrate\n"
    "    except ImportError:\n"
    "        sys.exit('ckptctl import: %s cannot import the ckpt package "
    "(%s); install it for that Python, or set PYTHONPATH, or CKPT_PYTHON "
    "to another interpreter' % (sys.executable, first))\n"
    "try:\n"
    "    import orbax.checkpoint\n"
    "except ImportError as e:\n"
    "    sys.exit('ckptctl import: %s has no orbax-checkpoint (%s); it reads "
    "the Orbax checkpoints: pip install orbax-checkpoint for it, or set "
    "CKPT_PYTHON to a Python that has it' % (sys.executable, e))\n"
    "sys.exit(ckpt.migrate.main(sys.argv[1:], prog='ckptctl import'))\n";

/*
 * import ORBAX_ROOT DEST [migration options]: Orbax reads its own formats,
 * so the migration is the Python package's (ckpt.migrate); exec it with
 * $CKPT_PYTHON or python3, pointed at this daemon socket and this libckpt.
 */
static int
cmd_import(int argc, char **argv)
{
	const char *py = getenv("CKPT_PYTHON");
	char **av;
	Dl_info info;
	int i, n = 0;

	if (py == NULL || *py == '\0')
		py = "python3";
	if (opt_socket != NULL && setenv("CKPTD_SOCKET", opt_socket, 1) != 0)
		return fail("setenv: %s", strerror(errno));
	/* the package loads the libckpt this ckptctl runs with */
	if (getenv("CKPT_LIBRARY") == NULL &&
	    dladdr((void *)ckpt_version, &info) != 0 && info.dli_fname != NULL &&
	    info.dli_fname[0] == '/')
		(void)setenv("CKPT_LIBRARY", info.dli_fname, 1);
	if ((av = calloc((size_t)argc + 8, sizeof *av)) == NULL)
		return fail("out of memory");
	av[n++] = (char *)py;
	av[n++] = (char *)"-c";
	av[n++] = (char *)import_boot;
	av[n++] = (char *)CKPT_PYTHONDIR;
	if (opt_prefix != NULL) {
		av[n++] = (char *)"--step-prefix";
		av[n++] = (char *)opt_prefix;
	}
	for (i = 0; i < argc; i++)
		av[n++] = argv[i];
	av[n] = NULL;
	fflush(NULL);
	execvp(py, av);
	i = errno;
	free(av);
	return fail("cannot run %s: %s (ckptctl import needs Python 3 with the "
	    "ckpt package and orbax-checkpoint; set CKPT_PYTHON to its path)",
	    py, strerror(i));
}

/*
 * Take the global options (--json, --socket PATH, --step-prefix P, --help,
 * --version) wherever they stand, before or after the command, so that
 * `ckptctl steps DIR --json` works; everything else keeps its order in
 * argv[1..*argc). Returns -1 to go on, else an exit status.
 */
static int
take_global_options(int *argc, char **argv)
{
	int i, n = 1;

	for (i = 1; i < *argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			opt_json = 1;
		} else if (strcmp(argv[i], "--socket") == 0 ||
		    strcmp(argv[i], "--step-prefix") == 0) {
			if (i + 1 >= *argc)
				return usage_error("%s needs a value", argv[i]);
			if (strcmp(argv[i], "--socket") == 0)
				opt_socket = argv[i + 1];
			else
				opt_prefix = argv[i + 1];
			i++;
		} else if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("ckptctl %s\n", ckpt_version());
			return 0;
		} else {
			argv[n++] = argv[i];
		}
	}
	*argc = n;
	return -1;
}

int
main(int argc, char **argv)
{
	ckpt_client *c;
	const char *cmd;
	int i = 1, r;

	if ((r = take_global_options(&argc, argv)) >= 0)
		return r;
	if (i < argc && argv[i][0] == '-' && argv[i][1] == '-')
		return usage_error("unknown option '%s'", argv[i]);
	if (i >= argc)
		return usage_error("no command given");
	cmd = argv[i++];
	argc -= i;
	argv += i;

	if (strcmp(cmd, "status") == 0) {
		if (argc != 0)
			return usage_error("status takes no arguments");
	} else if (strcmp(cmd, "steps") == 0) {
		if (argc != 1)
			return usage_error("usage: steps DIR");
	} else if (strcmp(cmd, "show") == 0 || strcmp(cmd, "delete") == 0) {
		if (argc != 2)
			return usage_error("usage: %s DIR STEP", cmd);
	} else if (strcmp(cmd, "verify") == 0) {
		if (argc != 1 && argc != 2)
			return usage_error("usage: verify DIR [STEP]");
	} else if (strcmp(cmd, "wait") == 0) {
		if (argc < 1)
			return usage_error("usage: wait DIR [--after N] "
			    "[--timeout SECS]");
	} else if (strcmp(cmd, "preempt") == 0) {
		if (argc != 0)
			return usage_error("preempt takes no arguments");
	} else if (strcmp(cmd, "import") == 0) {
		if (argc < 2)
			return usage_error("usage: import ORBAX_ROOT DEST "
			    "[--best-metric NAME] [--best-mode min|max] [-q]");
		if (opt_json)
			return usage_error("import has no --json output");
		return cmd_import(argc, argv);
	} else if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	} else {
		return usage_error("unknown command '%s'", cmd);
	}

	/* Printing the state of a daemon must not start one. */
	if (strcmp(cmd, "status") == 0)
		setenv("CKPTD_AUTOSTART", "0", 1);
	if ((r = ckpt_connect(opt_socket, &c)) != 0) {
		if (strcmp(cmd, "status") == 0 && r == CKPT_ECONN) {
			fail("ckptd is not running (%s)", ckpt_connect_errmsg());
			return 3;
		}
		return fail("%s", ckpt_connect_errmsg()[0] != '\0' ?
		    ckpt_connect_errmsg() : ckpt_strerror(r));
	}
	if (strcmp(cmd, "status") == 0)
		r = cmd_status(c);
	else if (strcmp(cmd, "steps") == 0)
		r = cmd_steps(c, argv[0]);
	else if (strcmp(cmd, "show") == 0)
		r = cmd_show(c, argv[0], argv[1]);
	else if (strcmp(cmd, "delete") == 0)
		r = cmd_delete(c, argv[0], argv[1]);
	else if (strcmp(cmd, "verify") == 0)
		r = cmd_verify(c, argv[0], argc > 1 ? argv[1] : NULL);
	else if (strcmp(cmd, "preempt") == 0)
		r = ckpt_preempt(c) != 0 ? fail("%s", ckpt_client_errmsg(c)) : 0;
	else
		r = cmd_wait(c, argv[0], argc - 1, argv + 1);
	ckpt_disconnect(c);
	return r;
}
