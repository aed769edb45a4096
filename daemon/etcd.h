/*
 * etcd.h - a client of etcd v3 through its JSON gateway (/v3/...).
 *
 * The coordination of multi-node steps runs on etcd: node parts under
 * leases, one transaction that commits a step once, a watch through which
 * every daemon learns of commits and failures. This module is the client:
 * libcurl for HTTP, jansson for JSON, keys and values base64 on the wire.
 *
 *     struct etcd *c;
 *     int64_t lease, rev;
 *     int won;
 *     if (etcd_open(&c, "http://10.0.0.1:2379,http://10.0.0.2:2379",
 *         2000, &e) != 0) ...
 *     etcd_lease_grant(c, 5, &lease, &e);
 *     etcd_lease_keep(c, lease, 5, &e);           // refreshed every TTL/3
 *     etcd_put(c, "/ckpt/j/1/part/n0", "ok", 2, lease, &rev, &e);
 *     etcd_create(c, "/ckpt/j/1/commit", "n0", 2, 0, &won, &rev, NULL, &e);
 *     w = etcd_watch_start(c, "/ckpt/j/", 1, 0, on_event, arg, &e);
 *     ...
 *     etcd_watch_stop(w);
 *     etcd_close(c);
 *
 * Threads: every call may be made from any thread at the same time; each
 * call blocks its caller (at most the client's timeout), so the event loop
 * calls it from a worker. A watch and the lease keeper run on threads of
 * their own. Handles of curl are pooled under one mutex (the client's
 * only lock, a leaf).
 *
 * Endpoints and failover: a call starts at the endpoint that answered
 * last and goes round the others when one cannot be reached or answers
 * "unavailable" (no leader during an election), until the timeout. Reads
 * are retried after any transport error; a write whose request may have
 * reached etcd (the connection broke after sending) is not sent again:
 * the caller gets CKPT_ECONN or CKPT_ETIMEDOUT with "outcome unknown" and
 * reads the key to learn what happened.
 *
 * Errors (negative CKPT_E*, message in the ckd_err):
 *   CKPT_ETIMEDOUT  no answer within the timeout (every endpoint named)
 *   CKPT_ECONN      no endpoint could be reached (every endpoint named)
 *   CKPT_ENOTFOUND  the lease does not exist (expired or revoked)
 *   CKPT_EINVAL     bad endpoints, keys or arguments; refused by etcd
 *   CKPT_ETOOBIG    a reply over CKPT_ETCD_MAX_REPLY bytes
 *   CKPT_EPROTO     a reply that is not the JSON etcd sends
 *   CKPT_ENOMEM, CKPT_EIO (any other error of etcd, its message kept)
 */
#ifndef CKPTD_ETCD_H
#define CKPTD_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define CKPT_ETCD_MAX_ENDPOINTS 16
#define CKPT_ETCD_MAX_KEY 4096              /* bytes of a key */
#define CKPT_ETCD_MAX_VALUE (1 << 20)       /* bytes of a value (etcd: 1.5 MiB) */
#define CKPT_ETCD_MAX_REPLY (64 << 20)      /* bytes of one reply or event */

struct etcd;
struct etcd_watch;

/* One key with its value (a NUL is kept after the value bytes). */
struct etcd_kv {
	char *key;
	char *value;
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

/* The result of a range: kvs (owned, etcd_kvs_free) and the revision of
 * the store when it was read. */
struct etcd_kvs {
	struct etcd_kv *kv;
	size_t n;
	int64_t revision;
};

/* Connect to a comma-separated list of http:// or https:// endpoints
 * (at most CKPT_ETCD_MAX_ENDPOINTS). timeout_ms bounds each call (100 ..
 * 600000). Nothing is sent yet: an unreachable etcd shows on the first
 * call. *out is owned by the caller (etcd_close). */
int etcd_open(struct etcd **out, const char *endpoints, int timeout_ms,
    ckd_err *e);
/* Stop the lease keeper, revoke nothing, free. Watches must be stopped
 * first. NULL is a no-op. */
void etcd_close(struct etcd *c);
/* The endpoints as given, ", "-separated (for messages and status). */
const char *etcd_endpoints(const struct etcd *c);
int etcd_timeout_ms(const struct etcd *c);

/* Leases. grant: a new lease of ttl_s seconds (etcd may raise it to its
 * minimum); *id its id. keepalive: one refresh, *ttl_left (may be NULL)
 * the TTL granted again; CKPT_ENOTFOUND when the lease is gone. revoke:
 * the lease and every key attached to it are deleted (ENOTFOUND when it
 * was gone already). */
int etcd_lease_grant(struct etcd *c, int64_t ttl_s, int64_t *id, ckd_err *e);
int etcd_lease_keepalive(struct etcd *c, int64_t id, int64_t *ttl_left,
    ckd_err *e);
int etcd_lease_revoke(struct etcd *c, int64_t id, ckd_err *e);

/* Keep one lease alive from a thread of the client: a refresh every
 * ttl_s/3 seconds (at least every 500 ms) until etcd_lease_unkeep,
 * another etcd_lease_keep, or etcd_close. A refresh that fails is retried
 * at the next tick; once etcd answers that the lease is gone, the keeper
 * stops and etcd_lease_kept() returns CKPT_ENOTFOUND. */
int etcd_lease_keep(struct etcd *c, int64_t id, int64_t ttl_s, ckd_err *e);
void etcd_lease_unkeep(struct etcd *c);
/* 0 while the kept lease is refreshed, ENOTFOUND once it is lost,
 * ETIMEDOUT/ECONN while the last refresh failed. */
int etcd_lease_kept(struct etcd *c);

/* put: key = value (len bytes), attached to lease (0: none); *rev (may be
 * NULL) the revision of the write. */
int etcd_put(struct etcd *c, const char *key, const void *value, size_t len,
    int64_t lease, int64_t *rev, ckd_err *e);
/* range: the key, or with prefix != 0 every key starting with it, in key
 * order. *out is filled (etcd_kvs_free) even when nothing matches. */
int etcd_get(struct etcd *c, const char *key, int prefix,
    struct etcd_kvs *out, ckd_err *e);
void etcd_kvs_free(struct etcd_kvs *kvs);
/* delete the key (or the prefix); *deleted (may be NULL) how many. */
int etcd_delete(struct etcd *c, const char *key, int prefix,
    int64_t *deleted, ckd_err *e);

/* Delete every key under prefix, and the key also (NULL: none), in one
 * transaction, only if no key under prefix was created after revision
 * rev: leftovers of what happened up to rev go, nothing written since.
 * *done 1 when deleted; *deleted (may be NULL) the keys under prefix. */
int etcd_delete_older(struct etcd *c, const char *prefix, int64_t rev,
    const char *also, int *done, int64_t *deleted, ckd_err *e);

/* Compact the store's history up to revision rev: watches behind it are
 * told ETCD_EVENT_COMPACTED. (Tests; etcd's own --auto-compaction in
 * production.) */
int etcd_compact(struct etcd *c, int64_t rev, ckd_err *e);

/* Transactions. create: put key only if it does not exist (compare
 * create_revision == 0), the commit-once primitive. *created is 1 if this
 * call wrote it, 0 if it existed; then *existing (may be NULL; free with
 * etcd_kv_free) holds what is there. *rev: the store's revision after
 * the transaction.
 * cas: put key only if its mod_revision is still expect_mod_rev (0: the
 * key must not exist); *swapped as *created above. */
int etcd_create(struct etcd *c, const char *key, const void *value,
    size_t len, int64_t lease, int *created, int64_t *rev,
    struct etcd_kv *existing, ckd_err *e);
int etcd_cas(struct etcd *c, const char *key, int64_t expect_mod_rev,
    const void *value, size_t len, int64_t lease, int *swapped,
    int64_t *rev, ckd_err *e);
void etcd_kv_free(struct etcd_kv *kv);

/* A guarded put: every compare must hold for key = value to be written.
 * A compare is on a key's create_revision: ETCD_EXISTS (the key exists)
 * or ETCD_ABSENT (it does not). At most CKPT_ETCD_MAX_COMPARES. *won is 1
 * when they all held and the put was made. */
#define CKPT_ETCD_MAX_COMPARES 100
enum etcd_cmp_kind { ETCD_ABSENT, ETCD_EXISTS };
struct etcd_cmp {
	const char *key;
	enum etcd_cmp_kind kind;
};
int etcd_put_if(struct etcd *c, const struct etcd_cmp *cmp, size_t ncmp,
    const char *key, const void *value, size_t len, int64_t lease, int *won,
    int64_t *rev, ckd_err *e);

/* The member the client reaches first: its id and the leader it knows
 * (0 during an election). With one endpoint, that member's view. */
int etcd_status(struct etcd *c, uint64_t *member_id, uint64_t *leader_id,
    ckd_err *e);

/* Watch. Events are delivered in revision order on the watch's thread;
 * the callback must not call etcd_watch_stop on its own watch. */
enum etcd_event_type {
	ETCD_EVENT_PUT,
	ETCD_EVENT_DELETE,
	/* The revisions to resume from were compacted away: events may have
	 * been lost. The watch goes on from the current revision; the
	 * receiver reads the keys again (key: the watched key). */
	ETCD_EVENT_COMPACTED,
};

struct etcd_event {
	enum etcd_event_type type;
	const char *key;
	const char *value;          /* PUT: the new value (NUL after it) */
	size_t value_len;
	int64_t mod_revision;       /* the revision of the event */
	int64_t create_revision;
	int64_t lease;
};

typedef void (*etcd_watch_fn)(void *arg, const struct etcd_event *ev);

/* Watch the key (prefix != 0: every key under it) from revision
 * start_rev; start_rev <= 0 means "after now": the call reads the current
 * revision first, so every change made after it returns is delivered.
 * A broken stream (member killed, leader change, network) is opened again
 * on the next endpoint, resuming after the last revision delivered: no
 * event is lost or delivered twice. Returns NULL with e set on error. */
struct etcd_watch *etcd_watch_start(struct etcd *c, const char *key,
    int prefix, int64_t start_rev, etcd_watch_fn fn, void *arg, ckd_err *e);
/* Stop the thread (returns within the client's poll interval, 200 ms)
 * and free. NULL is a no-op. */
void etcd_watch_stop(struct etcd_watch *w);
/* Drop the stream being read and open it again (from the first revision
 * not delivered): for a caller that knows the network was cut, since a
 * stream on a connection cut silently only comes back when the member's
 * retransmissions reach it again. Any thread; takes effect within the
 * poll interval. NULL is a no-op. */
void etcd_watch_kick(struct etcd_watch *w);
/* How often the stream was opened again (for tests and status). */
unsigned etcd_watch_reconnects(struct etcd_watch *w);

#endif
