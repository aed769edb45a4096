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
	.conns = 4096,
	.conns_per_user = 1024,
	.conns_reserve = 256,
	.idle_secs = 600,
	.inflight_per_user = 512,
	.leaves_per_request = 200000,
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

/* ---- options -------------------------------------------------------------- */

const struct option user_options[] = {
	{ "max-connections", required_argument, NULL, USER_OPT_BASE + 0 },
	{ "max-connections-per-user", required_argument, NULL,
	    USER_OPT_BASE + 1 },
	{ "connections-reserve", required_argument, NULL, USER_OPT_BASE + 2 },
	{ "idle-timeout", required_argument, NULL, USER_OPT_BASE + 3 },
	{ "max-requests-per-user", required_argument, NULL,
	    USER_OPT_BASE + 4 },
	{ "max-leaves", required_argument, NULL, USER_OPT_BASE + 5 },
	{ NULL, 0, NULL, 0 },
};

int
user_option(int idx, const char *arg)
{
	static const unsigned long long lo[] = { 1, 1, 0, 0, 1, 1 };
	static const unsigned long long hi[] = { 1000000, 1000000, 1000000,
	    86400 * 365, 1000000, 100000000 };
	unsigned long long v;
	char *end;

	if (idx < 0 || idx >= (int)(sizeof lo / sizeof lo[0]))
		return -1;
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (*arg < '0' || *arg > '9' || *end != '\0' || errno != 0 ||
	    v < lo[idx] || v > hi[idx]) {
		fprintf(stderr, "ckptd: --%s must be %llu..%llu, not '%s'\n",
		    user_options[idx].name, lo[idx], hi[idx], arg);
		return -1;
	}
	switch (idx) {
	case 0: user_limits.conns = (unsigned)v; break;
	case 1: user_limits.conns_per_user = (unsigned)v; break;
	case 2: user_limits.conns_reserve = (unsigned)v; break;
	case 3: user_limits.idle_secs = (unsigned)v; break;
	case 4: user_limits.inflight_per_user = (unsigned)v; break;
	case 5: user_limits.leaves_per_request = v; break;
	}
	return 0;
}

void
user_usage(FILE *f)
{
	const struct user_limits *L = &user_limits;

	fprintf(f,
"Per-user limits (a refusal is error CKPT_ELIMIT to that client only):\n"
"      --max-connections N    connections in all (default %u)\n"
"      --max-connections-per-user N\n"
"                             connections of one uid (default %u)\n"
"      --connections-reserve N\n"
"                             the last N connection slots go only to uids\n"
"                             holding fewer than %d (default %u)\n"
"      --idle-timeout SECS    close connections without a manager or a\n"
"                             request in flight after SECS (default %u;\n"
"                             0: never)\n"
"      --max-requests-per-user N\n"
"                             requests awaiting a reply plus unfinished\n"
"                             saves of one uid (default %u)\n"
"      --max-leaves N         leaves in one save request (default %llu)\n",
	    L->conns, L->conns_per_user, USER_RESERVE_SMALL, L->conns_reserve,
	    L->idle_secs, L->inflight_per_user,
	    (unsigned long long)L->leaves_per_request);
}
