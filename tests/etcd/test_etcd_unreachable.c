/*
 * test_etcd_unreachable.c - etcd cannot be reached: every call fails
 * with a clear error (CKPT_ECONN or CKPT_ETIMEDOUT naming the endpoints)
 * within the client's timeout, and a watch cannot be started.
 *
 * The test is a client on node 0 of a bed without etcd: 10.66.0.1 (its
 * own address, nothing listening: refused at once), 10.66.0.2 (node 1,
 * whose link is cut: no answer to ARP, connect times out), 10.66.0.99
 * (nobody).
 */
#include <inttypes.h>
#include <string.h>

#include "bed.h"
#include "etcd.h"
#include "tap.h"

#define TIMEOUT_MS 1500
#define MARGIN_MS 1500

static void
expect_fail(struct etcd *c, const char *what, int want1, int want2)
{
	struct etcd_kvs kvs;
	int64_t t0, el, lease;
	ckd_err e = { 0 };
	int r, won;

	t0 = tap_now_ms();
	r = etcd_create(c, "/u/commit", "n0", 2, 0, &won, NULL, NULL, &e);
	el = tap_now_ms() - t0;
	ok(r == want1 || r == want2, "%s: txn fails with %s (%s)", what,
	    err_code_name(r) ? err_code_name(r) : "0", e.msg);
	ok(el <= TIMEOUT_MS + MARGIN_MS, "%s: within the timeout (%" PRId64
	    " ms)", what, el);
	ok(strstr(e.msg, etcd_endpoints(c)) != NULL ||
	    strstr(e.msg, "http://10.66.0.") != NULL,
	    "%s: the message names the endpoint", what);

	t0 = tap_now_ms();
	r = etcd_get(c, "/u/commit", 0, &kvs, &e);
	el = tap_now_ms() - t0;
	ok((r == want1 || r == want2) && el <= TIMEOUT_MS + MARGIN_MS,
	    "%s: range fails in %" PRId64 " ms: %s", what, el, e.msg);
	ok(strstr(e.msg, etcd_endpoints(c)) != NULL,
	    "%s: a read names every endpoint", what);
	r = etcd_lease_grant(c, 5, &lease, &e);
	ok(r == want1 || r == want2, "%s: lease grant fails: %s", what, e.msg);
	ok(etcd_watch_start(c, "/u/", 1, 0, NULL, NULL, &e) == NULL,
	    "%s: a watch cannot start: %s", what, e.msg);
}

int
main(void)
{
	struct bed b;
	struct etcd *c = NULL;
	ckd_err e = { 0 };

	if (bed_init(&b, 2) != 0 || bed_enter(&b, 0) != 0) {
		bail_out("cannot set up the test bed (root, ip)");
		bed_fini(&b);
		return 1;
	}
	ok(bed_link(&b, 1, 0) == 0, "cut node 1");

	ok(etcd_open(&c, "http://10.66.0.1:2379", TIMEOUT_MS, &e) == 0,
	    "open: nothing is sent yet");
	expect_fail(c, "refused", CKPT_ECONN, CKPT_ECONN);
	etcd_close(c);

	ok(etcd_open(&c, "http://127.0.0.1:2379,http://10.66.0.1:2379",
	    TIMEOUT_MS, &e) == 0, "open two endpoints");
	expect_fail(c, "two refused", CKPT_ECONN, CKPT_ECONN);
	etcd_close(c);

	ok(etcd_open(&c, "http://10.66.0.2:2379,http://10.66.0.99:2379",
	    TIMEOUT_MS, &e) == 0, "open two silent endpoints");
	expect_fail(c, "silent", CKPT_ETIMEDOUT, CKPT_ECONN);
	etcd_close(c);

	bed_enter(&b, -1);
	bed_fini(&b);
	return done_testing();
}
