/*
 * test_etcd_leader.c - a 3-member cluster loses its leader: the watch
 * resumes on another member from the last revision it delivered (no
 * event lost, none twice), and writes go on after the election.
 *
 * Members on nodes 0..2, the clients on node 3. The watching client
 * lists the leader first, so its stream runs on the member that is
 * killed, then an address where nobody answers (its connect takes the
 * client's timeout, longer than the election), then the followers: the
 * writes made after the election and before the stream is back must come
 * from etcd's history. The writing client lists the followers only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bed.h"
#include "etcd.h"
#include "evlog.h"
#include "tap.h"

#define KEYS 200
#define KILL_AT 60

/* Put until it is done; a put that may have reached etcd is sent again
 * (the same value: a second event for the key at worst). */
static int
put_retry(struct etcd *c, const char *key, int *failures)
{
	ckd_err e = { 0 };
	int64_t end = tap_now_ms() + 30000;

	while (etcd_put(c, key, key, strlen(key), 0, NULL, &e) != 0) {
		(*failures)++;
		if (tap_now_ms() > end) {
			diag("put %s: %s", key, e.msg);
			return -1;
		}
	}
	return 0;
}

int
main(void)
{
	struct bed b;
	struct etcd *c = NULL, *wc = NULL;
	struct etcd_watch *w = NULL;
	struct etcd_kvs kvs = { 0 };
	struct evlog log;
	char eps[512], weps[512] = "", url[64], key[64];
	ckd_err e = { 0 };
	int leader, newleader, i, j, failures = 0, put_ok = 0;
	int ordered = 1, matched = 0, late = 0;
	static int64_t put_done[KEYS];
	int64_t t_kill, t_back = -1;
	size_t n;

	evlog_init(&log);
	if (bed_init(&b, 4) != 0 || bed_etcd_start(&b, 3) != 0 ||
	    (leader = bed_leader(&b, 10000)) < 0) {
		bail_out("cannot set up the test bed (root, ip, etcd-server)");
		bed_fini(&b);
		return 1;
	}
	diag("leader: member %d", leader);
	bed_url(b.m[leader].node, eps, sizeof(eps));
	strcat(eps, ",http://10.66.0.99:2379");
	for (i = 0; i < 3; i++) {
		if (i == leader)
			continue;
		bed_url(b.m[i].node, url, sizeof(url));
		strcat(eps, ",");
		strcat(eps, url);
		if (weps[0] != '\0')
			strcat(weps, ",");
		strcat(weps, url);
	}
	if (bed_enter(&b, 3) != 0 || etcd_open(&wc, eps, 3000, &e) != 0 ||
	    etcd_open(&c, weps, 1000, &e) != 0 ||
	    (w = etcd_watch_start(wc, "/lead/", 1, 0, evlog_cb, &log, &e)) == NULL) {
		bail_out(e.msg);
		bed_fini(&b);
		return 1;
	}
	for (i = 0; i < KEYS; i++) {
		if (i == KILL_AT) {
			/* Let the stream catch up, so that it is open. */
			snprintf(key, sizeof(key), "/lead/%03d", i - 1);
			ok(evlog_wait(&log, key, ETCD_EVENT_PUT, 10000) >= 0,
			    "the watch saw the first %d puts", KILL_AT);
			ok(etcd_watch_reconnects(w) == 0,
			    "its stream has not broken yet");
			bed_enter(&b, -1);
			ok(bed_kill(&b, leader) == 0, "SIGKILL the leader (member %d)",
			    leader);
			bed_enter(&b, 3);
			t_kill = tap_now_ms();
		}
		snprintf(key, sizeof(key), "/lead/%03d", i);
		if (put_retry(c, key, &failures) == 0)
			put_ok++;
		put_done[i] = tap_now_us();
		if (i == KILL_AT)
			t_back = tap_now_ms() - t_kill;
	}
	ok(put_ok == KEYS, "all %d puts done (%d failed calls retried; the "
	    "first after the kill took %" PRId64 " ms)", KEYS, failures, t_back);
	bed_enter(&b, -1);
	newleader = bed_leader(&b, 10000);
	ok(newleader >= 0 && newleader != leader, "a new leader: member %d",
	    newleader);
	bed_enter(&b, 3);

	snprintf(key, sizeof(key), "/lead/%03d", KEYS - 1);
	ok(evlog_wait(&log, key, ETCD_EVENT_PUT, 15000) >= 0,
	    "the watch saw the last put");
	ok(etcd_watch_reconnects(w) >= 1, "the watch stream was opened again "
	    "(%u times)", etcd_watch_reconnects(w));

	/* Every key's history as etcd has it, against what was delivered. */
	i = etcd_get(c, "/lead/", 1, &kvs, &e);
	ok(i == 0 && kvs.n == KEYS,
	    "etcd holds %d keys (%zu)", KEYS, kvs.n);
	n = evlog_count(&log);
	for (j = 1; (size_t)j < n; j++)
		if (log.ev[j].rev <= log.ev[j - 1].rev)
			ordered = 0;
	for (i = 0; (size_t)i < kvs.n; i++) {
		int64_t last = 0;

		for (j = 0; (size_t)j < n; j++)
			if (strcmp(log.ev[j].key, kvs.kv[i].key) == 0)
				last = log.ev[j].rev;
		if (last == kvs.kv[i].mod_revision)
			matched++;
	}
	/* Events delivered long after their put: read from the history
	 * when the stream came back. */
	for (j = 0; (size_t)j < n; j++) {
		i = atoi(log.ev[j].key + strlen("/lead/"));
		if (i >= 0 && i < KEYS && log.ev[j].at_us - put_done[i] > 500000)
			late++;
	}
	ok(late > 0, "%d events were written while the stream was down and "
	    "came from etcd's history", late);
	ok(ordered, "events in increasing revisions, none twice (%zu events)", n);
	ok(matched == KEYS, "each key's last event is its revision in etcd "
	    "(%d of %d): no event lost", matched, KEYS);
	ok(n == (size_t)(KEYS + failures) || n >= (size_t)KEYS,
	    "%zu events for %d puts", n, KEYS);
	etcd_kvs_free(&kvs);

	etcd_watch_stop(w);
	etcd_close(wc);
	etcd_close(c);
	evlog_free(&log);
	bed_enter(&b, -1);
	bed_fini(&b);
	return done_testing();
}
