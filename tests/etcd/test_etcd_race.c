/*
 * test_etcd_race.c - two nodes race to commit the same steps once.
 *
 * etcd runs on node 0; two clients, each on its own node (1 and 2) with
 * its own connection, start together on every round and both try to
 * create /race/<round>/commit with their name. Exactly one wins each
 * round, the loser is told the winner's name, and etcd holds the
 * winner's value. Then one client shared by four threads (the client is
 * thread-safe) races the same way on other keys.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "bed.h"
#include "etcd.h"
#include "tap.h"

#define ROUNDS 100

struct racer {
	struct bed *b;
	int node;
	char name[16];
	pthread_barrier_t *go;
	int won[ROUNDS];
	char seen[ROUNDS][16];      /* the winner's name as the loser read it */
	int errors;
	char err[CKPT_ERRLEN];
};

static void *
racer_main(void *arg)
{
	struct racer *r = arg;
	struct etcd *c = NULL;
	struct etcd_kv old;
	char key[64];
	ckd_err e = { 0 };
	int i, won;

	if (bed_enter(r->b, r->node) != 0 ||
	    etcd_open(&c, r->b->endpoints, 5000, &e) != 0) {
		r->errors = ROUNDS;
		snprintf(r->err, sizeof(r->err), "%s", e.msg);
		for (i = 0; i < ROUNDS; i++)
			pthread_barrier_wait(r->go);
		return NULL;
	}
	for (i = 0; i < ROUNDS; i++) {
		snprintf(key, sizeof(key), "/race/%d/commit", i);
		pthread_barrier_wait(r->go);
		won = -1;
		if (etcd_create(c, key, r->name, strlen(r->name), 0, &won, NULL,
		    &old, &e) != 0) {
			r->errors++;
			snprintf(r->err, sizeof(r->err), "%s", e.msg);
			continue;
		}
		r->won[i] = won;
		if (!won)
			snprintf(r->seen[i], sizeof(r->seen[i]), "%.*s",
			    (int)old.value_len, old.value);
		etcd_kv_free(&old);
	}
	etcd_close(c);
	return NULL;
}

#define SHARED_THREADS 4
#define SHARED_KEYS 50

struct sharer {
	struct etcd *c;
	pthread_barrier_t *go;
	int id;
	int won[SHARED_KEYS];
	int errors;
};

static void *
sharer_main(void *arg)
{
	struct sharer *s = arg;
	char key[64], val[16];
	ckd_err e;
	int i;

	snprintf(val, sizeof(val), "t%d", s->id);
	for (i = 0; i < SHARED_KEYS; i++) {
		snprintf(key, sizeof(key), "/shared/%d", i);
		pthread_barrier_wait(s->go);
		if (etcd_create(s->c, key, val, strlen(val), 0, &s->won[i], NULL,
		    NULL, &e) != 0)
			s->errors++;
	}
	return NULL;
}

static void
test_shared(struct etcd *c)
{
	static struct sharer s[SHARED_THREADS];
	pthread_t th[SHARED_THREADS];
	pthread_barrier_t go;
	int i, k, one = 0, errors = 0;

	pthread_barrier_init(&go, NULL, SHARED_THREADS);
	for (i = 0; i < SHARED_THREADS; i++) {
		s[i].c = c;
		s[i].go = &go;
		s[i].id = i;
		pthread_create(&th[i], NULL, sharer_main, &s[i]);
	}
	for (i = 0; i < SHARED_THREADS; i++)
		pthread_join(th[i], NULL);
	for (k = 0; k < SHARED_KEYS; k++) {
		int n = 0;

		for (i = 0; i < SHARED_THREADS; i++)
			n += s[i].won[k];
		one += n == 1;
	}
	for (i = 0; i < SHARED_THREADS; i++)
		errors += s[i].errors;
	ok(errors == 0, "one client, %d threads: no call failed", SHARED_THREADS);
	ok(one == SHARED_KEYS, "one client, %d threads: one winner for each of "
	    "%d keys (%d)", SHARED_THREADS, SHARED_KEYS, one);
	pthread_barrier_destroy(&go);
}

int
main(void)
{
	static struct racer r[2];
	pthread_barrier_t go;
	pthread_t th[2];
	struct bed b;
	struct etcd *c = NULL;
	struct etcd_kvs kvs;
	ckd_err e = { 0 };
	int i, one = 0, agree = 0, stored = 0, wins[2] = { 0, 0 };

	if (bed_init(&b, 3) != 0 || bed_etcd_start(&b, 1) != 0) {
		bail_out("cannot set up the test bed (root, ip, etcd-server)");
		bed_fini(&b);
		return 1;
	}
	pthread_barrier_init(&go, NULL, 2);
	for (i = 0; i < 2; i++) {
		r[i].b = &b;
		r[i].node = i + 1;
		r[i].go = &go;
		snprintf(r[i].name, sizeof(r[i].name), "node%d", i + 1);
		pthread_create(&th[i], NULL, racer_main, &r[i]);
	}
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	ok(r[0].errors == 0 && r[1].errors == 0, "no call failed (%s%s)",
	    r[0].err, r[1].err);

	if (bed_enter(&b, 1) != 0 || etcd_open(&c, b.endpoints, 5000, &e) != 0)
		bail_out(e.msg);
	for (i = 0; i < ROUNDS; i++) {
		int w = r[0].won[i] ? 0 : 1;
		char key[64];

		if (r[0].won[i] + r[1].won[i] == 1)
			one++;
		wins[w]++;
		if (strcmp(r[1 - w].seen[i], r[w].name) == 0)
			agree++;
		snprintf(key, sizeof(key), "/race/%d/commit", i);
		if (c != NULL && etcd_get(c, key, 0, &kvs, &e) == 0 && kvs.n == 1 &&
		    strcmp(kvs.kv[0].value, r[w].name) == 0 &&
		    kvs.kv[0].version == 1)
			stored++;
		etcd_kvs_free(&kvs);
	}
	ok(one == ROUNDS, "exactly one winner in each of %d rounds (%d)",
	    ROUNDS, one);
	ok(agree == ROUNDS, "the loser read the winner's name (%d)", agree);
	ok(stored == ROUNDS, "etcd holds the winner's value, written once (%d)",
	    stored);
	diag("wins: node1 %d, node2 %d", wins[0], wins[1]);
	if (c != NULL)
		test_shared(c);
	etcd_close(c);
	pthread_barrier_destroy(&go);
	bed_enter(&b, -1);
	bed_fini(&b);
	return done_testing();
}
