/*
 * test_ranged_s3.c - a resharded restore from an s3:// root fetches only
 * the chunks its targets need, on a real Ceph radosgw (tests/ceph/rgw.sh).
 * One process saves a global F32 array "w" of 4096 x 1024 (16 MiB) as
 * four pieces of 1024 rows (4 MiB, two 2 MiB chunks each).
 *  - a piece target of one quarter (rows 1024..2048, one piece) and one
 *    across two pieces (rows 1536..2560, a chunk of each) restore bit
 *    for bit, the daemon fetching 4 MiB for each (its metric
 *    ckptd_restore_fetched_bytes_total) and radosgw sending about that
 *    (its get_b counter), where the whole array takes 16 MiB;
 *  - a byte of the last chunk corrupted in the bucket: the quarter that
 *    does not read it still restores; rows inside it fail with
 *    CKPT_ECORRUPT naming the tensor.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "s3peek.h"
#include "cephbed.h"

#define BUCKET "ckpt-ranged"
#define ROOT "s3://" BUCKET "/r"
#define ROWS 4096
#define COLS 1024
#define PROWS 1024              /* rows of a saved piece */
#define MIB (1u << 20)

static struct cephbed bed;
static struct hx_daemon d;
static float *g;
static int mport;

/* The value of the daemon's metric name (GET /metrics), or -1. */
static double
metric(const char *name)
{
	struct sockaddr_in sa;
	char *buf = malloc(1u << 20), want[128], *p;
	size_t used = 0;
	ssize_t n;
	double v = -1;
	int fd;

	if (buf == NULL || (fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) {
		free(buf);
		return -1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)mport);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		dprintf(fd, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
		while (used < (1u << 20) - 1 && (n = read(fd, buf + used,
		    (1u << 20) - 1 - used)) > 0)
			used += (size_t)n;
	} else {
		diag("metrics: %s", strerror(errno));
	}
	buf[used] = '\0';
	close(fd);
	snprintf(want, sizeof want, "\n%s ", name);
	if ((p = strstr(buf, want)) != NULL)
		v = strtod(p + strlen(want), NULL);
	free(buf);
	return v;
}

static uint64_t
rgw_sent(void)
{
	uint64_t v = 0;

	if (cephbed_rgw_counter(&bed, "get_b", &v) != 0)
		bail_out("radosgw perf counter get_b not found");
	return v;
}

/* Restore the rows [lo, hi) of "w" into a piece target (lo < 0: the
 * whole array, no target): the code; *exact: the values are the saved
 * ones; *fetched, *sent: the daemon's and radosgw's bytes meanwhile. */
static int
restore_rows(ckpt_client *c, ckpt_manager *m, int64_t lo, int64_t hi,
    int *exact, double *fetched, uint64_t *sent, char *msg, size_t len)
{
	ckpt_tree *tg = NULL;
	ckpt_restore_args *ra = NULL;
	ckpt_restored *res = NULL;
	int64_t gs[2] = { ROWS, COLS }, off[2] = { lo, 0 }, shp[2] = {
	    hi - lo, COLS };
	float *buf = NULL;
	double f0 = metric("ckptd_restore_fetched_bytes_total");
	uint64_t s0 = rgw_sent();
	ckpt_leaf lf;
	int rc;

	if (lo >= 0) {
		buf = calloc((size_t)(shp[0] * COLS), sizeof(float));
		tg = ckpt_tree_new();
		ckpt_tree_add_piece_target(tg, "w", CKPT_F32, 2, gs, off, shp,
		    buf, (size_t)(shp[0] * COLS) * sizeof(float));
		ra = ckpt_restore_args_new();
		ckpt_restore_args_add_item(ra, "default", tg, 1);
	}
	rc = ckpt_restore(m, 1, ra, &res);
	snprintf(msg, len, "%s", rc != 0 ? ckpt_client_errmsg(c) : "");
	*fetched = metric("ckptd_restore_fetched_bytes_total") - f0;
	*sent = rgw_sent() - s0;
	*exact = 0;
	if (rc == 0 && lo >= 0)
		*exact = memcmp(buf, &g[lo * COLS], (size_t)(shp[0] * COLS) *
		    sizeof(float)) == 0;
	else if (rc == 0)
		*exact = ckpt_tree_leaf(ckpt_restored_item_tree(res, 0),
		    (size_t)ckpt_tree_find(ckpt_restored_item_tree(res, 0),
		    "w"), &lf) == 0 && lf.nbytes == (size_t)ROWS * COLS *
		    sizeof(float) && memcmp(lf.data, g, lf.nbytes) == 0;
	ckpt_restored_free(res);
	ckpt_restore_args_free(ra);
	ckpt_tree_free(tg);
	free(buf);
	return rc;
}

/* Flip a byte of the stored element (row, 3) of "w" in the bucket. */
static int
corrupt(int64_t row)
{
	char key[512];
	json_t *meta, *leaves, *l, *pc, *hdr;
	unsigned char *obj = NULL;
	char *text;
	size_t len, i, j, olen;
	uint64_t hl = 0, at;
	int rc = -1, k;

	if ((text = s3peek_get("r/1/default/_METADATA", &len)) == NULL)
		return -1;
	meta = json_loadb(text, len, 0, NULL);
	free(text);
	leaves = json_object_get(meta, "leaves");
	json_array_foreach(leaves, i, l) {
		json_array_foreach(json_object_get(l, "pieces"), j, pc) {
			int64_t r0 = json_integer_value(json_array_get(
			    json_object_get(pc, "offsets"), 0));

			if (row < r0 || row >= r0 + PROWS)
				continue;
			snprintf(key, sizeof key, "r/1/default/%s",
			    json_string_value(json_object_get(pc, "file")));
			if ((obj = s3peek_get(key, &olen)) == NULL || olen < 8)
				goto out;
			for (k = 7; k >= 0; k--)
				hl = hl << 8 | obj[k];
			hdr = json_loadb((char *)obj + 8, hl, 0, NULL);
			at = 8 + hl + (uint64_t)json_integer_value(
			    json_array_get(json_object_get(json_object_get(hdr,
			    json_string_value(json_object_get(pc, "tensor"))),
			    "data_offsets"), 0));
			json_decref(hdr);
			at += (uint64_t)((row - r0) * COLS + 3) * sizeof(float);
			if (at < olen) {
				obj[at] ^= 0x08;
				rc = s3peek_put(key, obj, olen);
			}
			goto out;
		}
	}
out:
	free(obj);
	json_decref(meta);
	return rc;
}

int
main(void)
{
	char grant[] = "0:s3://" BUCKET, mlisten[64], msg[1024];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_tree *t;
	ckpt_save_args *a;
	int64_t gs[2] = { ROWS, COLS }, off[2] = { 0, 0 }, shp[2] = { PROWS,
	    COLS };
	double fetched;
	uint64_t sent, q = (uint64_t)ROWS * COLS * sizeof(float) / 4;
	size_t i;
	int p, rc, exact, saved = 0;

	g = malloc((size_t)ROWS * COLS * sizeof(float));
	for (i = 0; i < (size_t)ROWS * COLS; i++)
		g[i] = (float)(i % 999983) * 0.5f - 3.0f;
	if (cephbed_start(&bed) != 0)
		bail_out("no radosgw");
	if (s3peek_init(BUCKET) != 0)
		bail_out("no bucket");
	hx_init(&d);
	mport = hx_free_port();
	snprintf(mlisten, sizeof mlisten, "127.0.0.1:%d", mport);
	d.extra[0] = "--s3-allow";
	d.extra[1] = grant;
	d.extra[2] = "--metrics-listen";
	d.extra[3] = mlisten;
	d.extra[4] = NULL;
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	if (hx_connect(&d, &c) != 0 ||
	    ckpt_manager_open(c, ROOT, NULL, &m) != 0)
		bail_out("cannot open %s: %s", ROOT, c != NULL ?
		    ckpt_client_errmsg(c) : "connect");

	t = ckpt_tree_new();
	for (p = 0; p < 4; p++) {
		off[0] = p * PROWS;
		ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, off, shp,
		    &g[(size_t)p * PROWS * COLS],
		    (size_t)PROWS * COLS * sizeof(float));
	}
	a = ckpt_save_args_new();
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	rc = ckpt_save(m, 1, a, &saved);
	if (rc == 0)
		rc = ckpt_wait_until_finished(m);
	ok_call(rc, c, "a global array of 4 pieces of 4 MiB is saved to %s",
	    ROOT);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);

	rc = restore_rows(c, m, -1, 0, &exact, &fetched, &sent, msg,
	    sizeof msg);
	ok(rc == 0 && exact, "the whole array restores bit for bit");
	is_int((long long)fetched, (long long)(4 * q), "... the daemon "
	    "fetching its 16 MiB");

	rc = restore_rows(c, m, PROWS, 2 * PROWS, &exact, &fetched, &sent,
	    msg, sizeof msg);
	if (rc != 0)
		diag("%s", msg);
	ok(rc == 0 && exact, "a quarter (rows %d..%d, one piece) restores "
	    "bit for bit", PROWS, 2 * PROWS);
	is_int((long long)fetched, (long long)q, "the daemon fetches a "
	    "quarter of the bytes (4 MiB)");
	ok(sent >= q && sent < q + MIB, "radosgw sends %" PRIu64 " bytes: "
	    "the quarter and the headers", sent);

	rc = restore_rows(c, m, PROWS + PROWS / 2, 2 * PROWS + PROWS / 2,
	    &exact, &fetched, &sent, msg, sizeof msg);
	ok(rc == 0 && exact, "a quarter across two pieces restores bit for "
	    "bit");
	is_int((long long)fetched, (long long)q, "... fetching the chunk "
	    "of each that holds it (4 MiB)");
	ok(sent >= q && sent < q + MIB, "radosgw sends %" PRIu64 " bytes",
	    sent);

	rc = restore_rows(c, m, 100, 300, &exact, &fetched, &sent, msg,
	    sizeof msg);
	ok(rc == 0 && exact, "200 rows of the first chunk restore");
	is_int((long long)fetched, 2 * MIB, "... fetching one 2 MiB chunk");

	ok(corrupt(4000) == 0, "a byte of row 4000 (the last chunk) is "
	    "corrupted in the bucket");
	rc = restore_rows(c, m, PROWS, 2 * PROWS, &exact, &fetched, &sent,
	    msg, sizeof msg);
	if (rc != 0)
		diag("%s", msg);
	ok(rc == 0 && exact, "the quarter that does not read it still "
	    "restores bit for bit");
	rc = restore_rows(c, m, 3900, 4096, &exact, &fetched, &sent, msg,
	    sizeof msg);
	is_int(rc, CKPT_ECORRUPT, "rows 3900..4096 read it: CKPT_ECORRUPT");
	has(msg, "checksum mismatch for tensor 'w'", "naming the tensor");
	has(msg, "chunk 1)", "... and the chunk");
	is_int((long long)fetched, 2 * MIB, "... having fetched only that "
	    "chunk");

	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ok(hx_alive(&d), "ckptd still running");
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	s3peek_done();
	cephbed_stop(&bed);
	free(g);
	return done_testing();
}
