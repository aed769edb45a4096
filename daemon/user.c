/*
 * user.c - per-user accounting and limits (see user.h).
 *
 * Records live in a small hash table keyed by uid and are freed with their
 * last reference (connections and saves hold one each). Loop thread only:
 * no locks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "user.h"

#define USER_BUCKETS 64

struct user_limits user_limits = {
	.conns = USER_DEFAULT_CONNS,
	.conns_per_user = USER_DEFAULT_CONNS_PER_USER,
	.conns_reserve = USER_DEFAULT_CONNS_RESERVE,
	.idle_secs = USER_DEFAULT_IDLE_SECS,
	.inflight_per_user = USER_DEFAULT_INFLIGHT_PER_USER,
	.leaves_per_request = USER_DEFAULT_LEAVES_PER_REQUEST,
};

static struct {
	struct user *buckets[USER_BUCKETS];
	unsigned active;
} U;

static struct user **
user_bucket(uid_t uid)
{
	return &U.buckets[((uint32_t)uid * 2654435761u) % USER_BUCKETS];
}

struct user *
user_get(uid_t uid)
{
	struct user **b = user_bucket(uid), *u;

	for (u = *b; u != NULL; u = u->next)
		if (u->uid == uid) {
			u->refs++;
			return u;
		}
	if ((u = calloc(1, sizeof *u)) == NULL)
		return NULL;
	u->uid = uid;
	u->refs = 1;
	u->next = *b;
	*b = u;
	return u;
}

void
user_put(struct user *u)
{
	struct user **p;

	if (u == NULL || --u->refs > 0)
		return;
	for (p = user_bucket(u->uid); *p != u; p = &(*p)->next)
		;
	*p = u->next;
	free(u);
}

unsigned
user_active(void)
{
	return U.active;
}

void
user_activity(struct user *u, int was_active)
{
	int now = user_is_active(u);

	if (now && !was_active)
		U.active++;
	else if (!now && was_active && U.active > 0)
		U.active--;
}

int
user_conn_admit(const struct user *u, unsigned total, char *msg,
    size_t msglen)
{
	const struct user_limits *L = &user_limits;

	if (u->conns >= L->conns_per_user) {
		snprintf(msg, msglen, "uid %u already has %u connections to "
		    "ckptd (the limit per user; ckptd "
		    "--max-connections-per-user)", (unsigned)u->uid, u->conns);
		return CKPT_ELIMIT;
	}
	if (total >= L->conns || (L->conns - total <= L->conns_reserve &&
	    u->conns >= USER_RESERVE_SMALL)) {
		snprintf(msg, msglen, "ckptd has %u connections; the remaining "
		    "ones are kept for other users (uid %u holds %u; ckptd "
		    "--max-connections)", total, (unsigned)u->uid, u->conns);
		return CKPT_ELIMIT;
	}
	return 0;
}
