/*
 * test_lease_s3.c - two real ckptd on one s3:// prefix (radosgw of
 * rgw.sh): the first to write it holds its lease object; the second
 * daemon's writer is refused with the holder named (CKPT_EBUSY), its
 * reader works; a tmp dir of the holder's save is not taken for a
 * leftover by the other daemon; the lease goes when its daemon stops
 * (the other may write then), and a daemon SIGKILLed on this host leaves
 * a lease the next daemon takes over; a daemon stopping while the store
 * is down or hung does not wait for it (its lease is left, to expire or
 * be taken over).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "s3peek.h"
#include "cephbed.h"

#define BUCKET "ckpt-lease"
#define ROOT "s3://" BUCKET "/run"
#define LEASE "run/.ckptd-lease"

static struct cephbed bed;
static struct hx_daemon a, b;
static char grant[64];

static void
start(struct hx_daemon *d)
{
	hx_init(d);
	d->extra[0] = "--s3-allow";
	d->extra[1] = grant;
	d->extra[2] = NULL;
	if (hx_start(d) != 0)
		bail_out("ckptd did not start");
}

/* The pid of the test bed's radosgw, or -1. */
static pid_t
rgw_pid(void)
{
	char path[600], *s;
	long pid;

	snprintf(path, sizeof path, "%s/run/rgw.pid", bed.dir);
	if ((s = hx_read_file(path, NULL)) == NULL)
		return -1;
	pid = strtol(s, NULL, 10);
	free(s);
	return pid > 0 ? (pid_t)pid : -1;
}

static int
save_small(ckpt_client *c, ckpt_manager *m, uint64_t step)
{
	ckpt_tree *t = ckpt_tree_new();
	ckpt_save_args *sa = ckpt_save_args_new();
	float w[256];
	int64_t sh[1] = { 256 };
	int saved = 0, r, i;

	for (i = 0; i < 256; i++)
		w[i] = (float)(i + (int)step);
	ckpt_tree_add_array(t, "w", CKPT_F32, 1, sh, w, sizeof w);
	ckpt_save_args_add_tree(sa, NULL, CKPT_HANDLER_STANDARD, t);
	r = ckpt_save(m, step, sa, &saved);
	if (r == 0)
		r = ckpt_wait_until_finished(m);
	if (r != 0)
		diag("save %" PRIu64 ": %s", step, ckpt_client_errmsg(c));
	ckpt_save_args_free(sa);
	ckpt_tree_free(t);
	return r;
}

static char *
owner_of_lease(void)
{
	size_t len = 0;
	char *raw = s3peek_get(LEASE, &len), *body, *o;

	if (raw == NULL)
		return NULL;
	/* the object's bytes, as a string */
	body = strndup(raw, len);
	free(raw);
	if (body == NULL || (o = strstr(body, "owner ")) == NULL) {
		free(body);
		return NULL;
	}
	memmove(body, o + 6, strlen(o + 6) + 1);
	body[strcspn(body, "\n")] = '\0';
	return body;
}

int
main(void)
{
	ckpt_client *ca = NULL, *cb = NULL;
	ckpt_manager *ma = NULL, *mb = NULL;
	ckpt_options *ro = ckpt_options_new(), *nc = ckpt_options_new();
	char want[64], *owner, *log;
	int64_t latest = -2, t0;
	pid_t rgw;
	int r;

	if (cephbed_start(&bed) != 0)
		bail_out("no radosgw");
	if (s3peek_init(BUCKET) != 0)
		bail_out("no bucket");
	snprintf(grant, sizeof grant, "%u:s3://%s", (unsigned)getuid(),
	    BUCKET);
	start(&a);
	start(&b);

	/* A writes: it holds the lease. */
	if (hx_connect(&a, &ca) != 0 || hx_connect(&b, &cb) != 0)
		bail_out("connect");
	if (!ok_call(ckpt_manager_open(ca, ROOT, NULL, &ma), ca,
	    "daemon A opens %s", ROOT))
		bail_out("no manager");
	ok_call(save_small(ca, ma, 1), ca, "A saves step 1");
	owner = owner_of_lease();
	snprintf(want, sizeof want, " pid %ld ", (long)a.pid);
	ok(owner != NULL && strstr(owner, want) != NULL,
	    "%s names daemon A (%s)", LEASE, owner ? owner : "none");
	free(owner);

	/* A save of A in progress, as another daemon's collector of
	 * leftovers sees one: its marker (A, the root loaded, does not look
	 * again). */
	ok(s3peek_put("run/2.ckptd-tmp", "", 0) == 0 &&
	    s3peek_put("run/2/default/x", "x", 1) == 0,
	    "a tmp dir of A's under the prefix");

	/* B may not write it, with or without create. */
	r = ckpt_manager_open(cb, ROOT, NULL, &mb);
	is_int(r, CKPT_EBUSY, "daemon B's writer is refused");
	has(ckpt_client_errmsg(cb), "being written by another ckptd",
	    "saying why");
	has(ckpt_client_errmsg(cb), want, "naming A's process");
	ckpt_manager_close(mb);
	mb = NULL;
	ckpt_options_set_create(nc, 0);
	r = ckpt_manager_open(cb, ROOT, nc, &mb);
	ok(r != 0, "nor without create (%d: %s)", r, ckpt_client_errmsg(cb));
	ckpt_manager_close(mb);
	mb = NULL;

	/* B reads it. */
	ckpt_options_set_read_only(ro, 1);
	if (ok_call(ckpt_manager_open(cb, ROOT, ro, &mb), cb,
	    "daemon B opens it read-only")) {
		ckpt_latest_step(mb, &latest);
		is_int(latest, 1, "and sees step 1");
		ckpt_manager_close(mb);
		mb = NULL;
	}
	/* B's load of the root collected leftovers: the save of A in
	 * progress stays. */
	ok(s3peek_has("run/2.ckptd-tmp") && s3peek_has("run/2/default/x"),
	    "B took A's tmp dir for no leftover");
	ok(s3peek_has(LEASE), "the lease is still there");

	/* A stops: the lease goes, B may write. */
	ckpt_manager_close(ma);
	ma = NULL;
	ckpt_disconnect(ca);
	ca = NULL;
	ok(hx_stop(&a) == 0, "daemon A stopped");
	ok(!s3peek_has(LEASE), "its lease released");
	if (!ok_call(ckpt_manager_open(cb, ROOT, NULL, &mb), cb,
	    "daemon B opens %s to write now", ROOT))
		bail_out("no manager");
	ok_call(save_small(cb, mb, 3), cb, "B saves step 3");
	owner = owner_of_lease();
	snprintf(want, sizeof want, " pid %ld ", (long)b.pid);
	ok(owner != NULL && strstr(owner, want) != NULL,
	    "the lease names daemon B (%s)", owner ? owner : "none");
	free(owner);
	ckpt_disconnect(cb);
	cb = NULL;
	mb = NULL;

	/* B killed: its lease stays, and A, on this host, takes it over
	 * (B's process is gone). */
	hx_kill9(&b);
	ok(s3peek_has(LEASE), "B SIGKILLed: its lease is left");
	if (hx_start(&a) != 0)
		bail_out("ckptd A did not start again");
	if (hx_connect(&a, &ca) != 0)
		bail_out("connect");
	if (ok_call(ckpt_manager_open(ca, ROOT, NULL, &ma), ca,
	    "daemon A opens %s to write", ROOT)) {
		ok_call(save_small(ca, ma, 4), ca, "A saves step 4");
		ckpt_manager_close(ma);
	}
	log = hx_read_file(a.log, NULL);
	ok(log != NULL && strstr(log, "took over the lease") != NULL &&
	    strstr(log, "its process is gone") != NULL,
	    "A says it took the lease over");
	free(log);
	owner = owner_of_lease();
	snprintf(want, sizeof want, " pid %ld ", (long)a.pid);
	ok(owner != NULL && strstr(owner, want) != NULL,
	    "the lease names daemon A (%s)", owner ? owner : "none");
	free(owner);
	ckpt_disconnect(ca);

	/* The store down when A stops: one try at the release, no backoff. */
	if (cephbed_rgw(&bed, "kill-rgw") != 0)
		bail_out("cannot stop radosgw");
	t0 = hx_now_ms();
	ok(hx_stop(&a) == 0, "daemon A stops while the store is down");
	t0 = hx_now_ms() - t0;
	ok(t0 < 3000, "in %lld ms (under 3 s; the release's retries would "
	    "take 6)", (long long)t0);
	if (cephbed_rgw(&bed, "start-rgw") != 0)
		bail_out("cannot start radosgw again");
	owner = owner_of_lease();
	ok(owner != NULL && strstr(owner, want) != NULL,
	    "A's lease is left (%s)", owner ? owner : "none");
	free(owner);

	/* The store hung (radosgw stopped: its socket still takes
	 * connections, nothing answers) when A stops: each request of the
	 * release is given up after a second. */
	if (hx_start(&a) != 0 || hx_connect(&a, &ca) != 0)
		bail_out("ckptd A did not start again");
	if (ok_call(ckpt_manager_open(ca, ROOT, NULL, &ma), ca,
	    "A opens %s again", ROOT)) {
		ok_call(save_small(ca, ma, 5), ca, "A saves step 5");
		ckpt_manager_close(ma);
	}
	ckpt_disconnect(ca);
	rgw = rgw_pid();
	ok(rgw > 0 && kill(rgw, SIGSTOP) == 0, "radosgw stopped (SIGSTOP)");
	t0 = hx_now_ms();
	ok(hx_stop(&a) == 0, "daemon A stops while the store hangs");
	t0 = hx_now_ms() - t0;
	ok(t0 < 5000, "in %lld ms (under 5 s; the stall timeout is 30 s)",
	    (long long)t0);
	if (rgw > 0)
		kill(rgw, SIGCONT);

	ckpt_options_free(ro);
	ckpt_options_free(nc);
	hx_cleanup(&a);
	hx_cleanup(&b);
	s3peek_done();
	cephbed_stop(&bed);
	return done_testing();
}
