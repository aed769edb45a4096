/*
 * evlog.h - a watch callback that records events, for the etcd tests.
 */
#ifndef CKPT_TEST_EVLOG_H
#define CKPT_TEST_EVLOG_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "tap.h"

struct evrec {
	enum etcd_event_type type;
	char key[128];
	char value[128];
	int64_t rev;
	int64_t at_us;          /* when it was delivered (monotonic) */
};

struct evlog {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct evrec *ev;
	size_t n, cap;
};

static __attribute__((unused)) void
evlog_init(struct evlog *l)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
}

static __attribute__((unused)) void
evlog_free(struct evlog *l)
{
	free(l->ev);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
}

static __attribute__((unused)) void
evlog_cb(void *arg, const struct etcd_event *ev)
{
	struct evlog *l = arg;
	struct evrec *r;

	pthread_mutex_lock(&l->lock);
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct evrec *p = realloc(l->ev, cap * sizeof(*p));
		if (p == NULL) {
			pthread_mutex_unlock(&l->lock);
			abort();
		}
		l->ev = p;
		l->cap = cap;
	}
	r = &l->ev[l->n++];
	r->type = ev->type;
	snprintf(r->key, sizeof(r->key), "%s", ev->key);
	snprintf(r->value, sizeof(r->value), "%.*s", (int)ev->value_len,
	    ev->value != NULL ? ev->value : "");
	r->rev = ev->mod_revision;
	r->at_us = tap_now_us();
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

/* Wait until an event of type for key has come (its index), or -1 after
 * timeout_ms. */
static __attribute__((unused)) long
evlog_wait(struct evlog *l, const char *key, enum etcd_event_type type,
    int timeout_ms)
{
	int64_t end = tap_now_ms() + timeout_ms;
	size_t i;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		for (i = 0; i < l->n; i++) {
			if (l->ev[i].type == type && strcmp(l->ev[i].key, key) == 0) {
				pthread_mutex_unlock(&l->lock);
				return (long)i;
			}
		}
		if (tap_now_ms() >= end)
			break;
		{
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&l->cond, &l->lock, &ts);
		}
	}
	pthread_mutex_unlock(&l->lock);
	return -1;
}

static __attribute__((unused)) size_t
evlog_count(struct evlog *l)
{
	size_t n;

	pthread_mutex_lock(&l->lock);
	n = l->n;
	pthread_mutex_unlock(&l->lock);
	return n;
}

#endif
