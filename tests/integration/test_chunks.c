/*
 * test_chunks.c - per-chunk checksums, end to end through a real ckptd:
 * one process saves a global F32 array "w" of 4096 x 512 as two pieces
 * of 2048 rows (4 MiB each: two 2 MiB chunks of 1024 rows).
 *  - _METADATA lists each piece's chunk size and chunk sums, equal to
 *    XXH3-64 of the piece's bytes 2 MiB at a time;
 *  - a byte of the last chunk is corrupted on disk; restores of piece
 *    targets that read only other chunks succeed, bit for bit (through
 *    the hash units of one piece and the streams of two); one whose rows
 *    reach the bad chunk, and a column block (every row), fail with
 *    CKPT_ECORRUPT naming the tensor and the chunk; ckpt_verify names it;
 *  - a step without chunk sums (the members removed from _METADATA, as an
 *    older ckptd wrote it) is read whole piece by piece: the same restore
 *    that ignored the bad chunk fails, and passes once the byte is back.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "harness.h"

#define ROWS 4096
#define COLS 512
#define PROWS 2048              /* rows of a saved piece */
#define CHUNK (2u << 20)
#define CROWS (CHUNK / (COLS * sizeof(float)))  /* rows of a chunk: 1024 */
#define BADROW 3500             /* in piece 1, its chunk 1 */

static struct hx_daemon d;
static float *g;
static char stepdir[HX_PATH];

static int
save_step(ckpt_manager *m, uint64_t step)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *a = ckpt_save_args_new();
	int64_t gs[2] = { ROWS, COLS }, off[2] = { 0, 0 }, shp[2] = { PROWS,
	    COLS };
	int p, rc, saved = 0;

	for (p = 0; p < 2; p++) {
		off[0] = p * PROWS;
		ckpt_tree_add_piece(t, "w", CKPT_F32, 2, gs, off, shp,
		    &g[(size_t)p * PROWS * COLS],
		    (size_t)PROWS * COLS * sizeof(float));
	}
	ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
	rc = ckpt_save(m, step, a, &saved);
	if (rc == 0)
		rc = ckpt_wait_until_finished(m);
	ckpt_save_args_free(a);
	ckpt_tree_free(t);
	return rc == 0 && saved ? 0 : -1;
}

/* The pieces of "w" in _METADATA (borrowed from root). */
static json_t *
pieces_of(json_t *root)
{
	json_t *leaves = json_object_get(root, "leaves"), *l;
	size_t i;

	json_array_foreach(leaves, i, l)
		if (json_object_get(l, "pieces") != NULL)
			return json_object_get(l, "pieces");
	return NULL;
}

/* The file offset of the data of tensor `name` in the safetensors file
 * at path, or -1. */
static long long
tensor_offset(const char *path, const char *name)
{
	unsigned char lenb[8];
	uint64_t n = 0;
	char *hdr;
	json_t *h;
	long long at = -1;
	int fd = open(path, O_RDONLY), i;

	if (fd < 0 || pread(fd, lenb, 8, 0) != 8) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (i = 7; i >= 0; i--)
		n = n << 8 | lenb[i];
	hdr = malloc(n);
	if (hdr != NULL && pread(fd, hdr, n, 8) == (ssize_t)n &&
	    (h = json_loadb(hdr, n, 0, NULL)) != NULL) {
		json_t *o = json_object_get(json_object_get(h, name),
		    "data_offsets");

		if (json_is_array(o))
			at = 8 + (long long)n +
			    json_integer_value(json_array_get(o, 0));
		json_decref(h);
	}
	free(hdr);
	close(fd);
	return at;
}

/* Flip a bit of the stored element (row, col) of piece 1. */
static int
flip(json_t *pc1, int64_t row, int64_t col)
{
	char path[HX_PATH * 2];
	long long at;
	unsigned char b;
	int fd, rc = -1;

	snprintf(path, sizeof path, "%s/default/%s", stepdir,
	    json_string_value(json_object_get(pc1, "file")));
	at = tensor_offset(path, json_string_value(json_object_get(pc1,
	    "tensor")));
	if (at < 0)
		return -1;
	at += (long long)(((row - PROWS) * COLS + col) * sizeof(float));
	if ((fd = open(path, O_RDWR)) < 0)
		return -1;
	if (pread(fd, &b, 1, at) == 1) {
		b ^= 0x10;
		rc = pwrite(fd, &b, 1, at) == 1 ? 0 : -1;
	}
	close(fd);
	return rc;
}

/* Restore targets: the row blocks [lo[i], hi[i]) (or, with cols > 0, the
 * column block [0, cols) of every row, one target). Returns the code;
 * *exact: the values are the saved ones. */
static int
restore_rows(ckpt_client *c, ckpt_manager *m, int n, const int64_t *lo,
    const int64_t *hi, int64_t cols, int *exact, char *msg, size_t msglen)
{
	ckpt_tree *tg = ckpt_tree_new();
	ckpt_restore_args *ra = ckpt_restore_args_new();
	ckpt_restored *res = NULL;
	int64_t gs[2] = { ROWS, COLS }, off[2], shp[2], r, k;
	float *buf[4];
	int i, rc;

	for (i = 0; i < n; i++) {
		off[0] = cols > 0 ? 0 : lo[i];
		off[1] = 0;
		shp[0] = cols > 0 ? ROWS : hi[i] - lo[i];
		shp[1] = cols > 0 ? cols : COLS;
		buf[i] = calloc((size_t)(shp[0] * shp[1]), sizeof(float));
		ckpt_tree_add_piece_target(tg, "w", CKPT_F32, 2, gs, off, shp,
		    buf[i], (size_t)(shp[0] * shp[1]) * sizeof(float));
	}
	ckpt_restore_args_add_item(ra, "default", tg, 1);
	rc = ckpt_restore(m, 1, ra, &res);
	snprintf(msg, msglen, "%s", rc != 0 ? ckpt_client_errmsg(c) : "");
	*exact = rc == 0;
	for (i = 0; i < n && rc == 0; i++) {
		int64_t r0 = cols > 0 ? 0 : lo[i], r1 = cols > 0 ? ROWS : hi[i];
		int64_t w = cols > 0 ? cols : COLS;

		for (r = r0; r < r1; r++)
			for (k = 0; k < w; k++)
				*exact &= memcmp(&buf[i][(r - r0) * w + k],
				    &g[r * COLS + k], sizeof(float)) == 0;
	}
	for (i = 0; i < n; i++)
		free(buf[i]);
	ckpt_restored_free(res);
	ckpt_restore_args_free(ra);
	ckpt_tree_free(tg);
	return rc;
}

/* _METADATA without the chunk members: a step of an older ckptd. */
static int
strip_chunks(const char *meta)
{
	json_t *root = json_load_file(meta, 0, NULL), *pc;
	size_t i;
	int rc;

	if (root == NULL)
		return -1;
	json_array_foreach(pieces_of(root), i, pc) {
		json_object_del(pc, "chunk");
		json_object_del(pc, "xxh3_chunks");
	}
	rc = json_dump_file(root, meta, JSON_COMPACT);
	json_decref(root);
	return rc;
}

int
main(void)
{
	char root[HX_PATH], meta[HX_PATH * 2], msg[1024];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	json_t *mj, *pcs, *pc;
	int64_t lo[4], hi[4];
	char *problems = NULL;
	size_t i, k;
	int exact, good, rc;

	g = malloc((size_t)ROWS * COLS * sizeof(float));
	for (i = 0; i < (size_t)ROWS * COLS; i++)
		g[i] = (float)(i % 1000003) * 0.25f - 7.0f;
	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	hx_path(&d, root, "root");
	if (hx_connect(&d, &c) != 0 ||
	    ckpt_manager_open(c, root, NULL, &m) != 0)
		bail_out("cannot open the root");
	ok(save_step(m, 1) == 0, "a global array of two 4 MiB pieces is saved");
	if (!ok_call(ckpt_item_metadata(m, 1, &res), c, "item metadata"))
		bail_out("no step");
	snprintf(stepdir, sizeof stepdir, "%s", ckpt_restored_directory(res));
	ckpt_restored_free(res);
	snprintf(meta, sizeof meta, "%s/default/_METADATA", stepdir);

	/* the chunk sums of each piece, as an independent reader sees them */
	mj = json_load_file(meta, 0, NULL);
	pcs = mj != NULL ? pieces_of(mj) : NULL;
	is_int(pcs != NULL ? (long long)json_array_size(pcs) : -1, 2,
	    "_METADATA lists the two pieces");
	if (pcs == NULL || json_array_size(pcs) != 2)
		bail_out("no pieces");
	good = 1;
	json_array_foreach(pcs, i, pc) {
		const char *hex = json_string_value(json_object_get(pc,
		    "xxh3_chunks"));
		int64_t row0 = json_integer_value(json_array_get(
		    json_object_get(pc, "offsets"), 0));
		char want[17];

		good &= json_integer_value(json_object_get(pc, "chunk")) ==
		    CHUNK && hex != NULL && strlen(hex) == 2 * 16;
		for (k = 0; good && k < 2; k++) {
			snprintf(want, sizeof want, "%016" PRIx64, (uint64_t)
			    XXH3_64bits(&g[(size_t)(row0 + (int64_t)(k *
			    CROWS)) * COLS], CHUNK));
			good &= strncmp(hex + k * 16, want, 16) == 0;
		}
	}
	ok(good, "each piece has 2 MiB chunks, each sum the XXH3-64 of its "
	    "bytes");

	lo[0] = 1000; hi[0] = 1100;
	rc = restore_rows(c, m, 1, lo, hi, 0, &exact, msg, sizeof msg);
	ok(rc == 0 && exact, "rows 1000..1100 (across two chunks of piece "
	    "0) restore bit for bit");

	pc = json_array_get(pcs, 0);
	if (json_integer_value(json_array_get(json_object_get(pc, "offsets"),
	    0)) == 0)
		pc = json_array_get(pcs, 1);
	ok(flip(pc, BADROW, 7) == 0, "a byte of row %d (piece 1, chunk 1) "
	    "is corrupted on disk", BADROW);

	lo[0] = PROWS + 100; hi[0] = PROWS + 600;
	rc = restore_rows(c, m, 1, lo, hi, 0, &exact, msg, sizeof msg);
	if (rc != 0)
		diag("%s", msg);
	ok(rc == 0 && exact, "rows %d..%d read only chunk 0 of piece 1: "
	    "restored bit for bit", PROWS + 100, PROWS + 600);
	lo[0] = 10; hi[0] = 300;
	lo[1] = PROWS + 10; hi[1] = PROWS + 1000;
	rc = restore_rows(c, m, 2, lo, hi, 0, &exact, msg, sizeof msg);
	if (rc != 0)
		diag("%s", msg);
	ok(rc == 0 && exact, "two targets, each reading part of a piece "
	    "(one stream per piece), restore bit for bit");

	lo[0] = 3200; hi[0] = 3300;
	rc = restore_rows(c, m, 1, lo, hi, 0, &exact, msg, sizeof msg);
	is_int(rc, CKPT_ECORRUPT, "rows 3200..3300 lie in the bad chunk: "
	    "CKPT_ECORRUPT");
	has(msg, "'w'", "the message names the tensor");
	has(msg, "chunk 1)", "... and the chunk");
	lo[0] = 10; hi[0] = 300;
	lo[1] = BADROW; hi[1] = BADROW + 1;
	rc = restore_rows(c, m, 2, lo, hi, 0, &exact, msg, sizeof msg);
	is_int(rc, CKPT_ECORRUPT, "two streams, one reaching the bad chunk: "
	    "CKPT_ECORRUPT");
	has(msg, "chunk 1)", "... naming the chunk");
	rc = restore_rows(c, m, 1, NULL, NULL, 64, &exact, msg, sizeof msg);
	is_int(rc, CKPT_ECORRUPT, "a column block reads every row: "
	    "CKPT_ECORRUPT");
	rc = ckpt_restore(m, 1, NULL, &res);
	is_int(rc, CKPT_ECORRUPT, "the whole array: CKPT_ECORRUPT");
	ckpt_restored_free(res);
	res = NULL;

	rc = ckpt_verify(m, 1, &problems);
	is_int(rc, CKPT_ECORRUPT, "ckpt_verify finds a problem: "
	    "CKPT_ECORRUPT");
	has(ckpt_manager_errmsg(m), "1 problem found: ", "... and its "
	    "message counts it");
	has(problems != NULL ? problems : "", "first: chunk 1)",
	    "... and reports the bad chunk");
	free(problems);
	problems = NULL;

	/* as an older ckptd wrote it: whole pieces only */
	ok(strip_chunks(meta) == 0, "the chunk sums are removed from "
	    "_METADATA");
	lo[0] = PROWS + 100; hi[0] = PROWS + 600;
	rc = restore_rows(c, m, 1, lo, hi, 0, &exact, msg, sizeof msg);
	is_int(rc, CKPT_ECORRUPT, "without chunk sums the piece is checked "
	    "whole: the same restore fails");
	has(msg, "checksum mismatch for tensor 'w'", "... naming the tensor");
	ok(flip(pc, BADROW, 7) == 0, "the byte is put back");
	rc = restore_rows(c, m, 1, lo, hi, 0, &exact, msg, sizeof msg);
	ok(rc == 0 && exact, "and the step without chunk sums restores bit "
	    "for bit");
	rc = ckpt_verify(m, 1, &problems);
	ok(rc == 0 && problems != NULL && problems[0] == '\0',
	    "ckpt_verify is clean");
	free(problems);

	json_decref(mj);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	ok(hx_alive(&d), "ckptd still running");
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	free(g);
	return done_testing();
}
