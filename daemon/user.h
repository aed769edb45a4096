/*
 * user.h - per-user (peer uid) accounting and limits.
 *
 * A root daemon serves many users through one 0666 socket. Everything one
 * user can make the daemon hold is counted per peer uid here, so that no
 * user can exhaust the daemon for the others:
 *
 *   connections     at most limits.conns_per_user per uid, and at most
 *                   limits.conns in all; the last limits.conns_reserve
 *                   slots go only to uids holding fewer than
 *                   USER_RESERVE_SMALL connections, so one uid never takes
 *                   the last slots;
 *   idle            a connection with no manager and no request in flight
 *                   is closed after limits.idle_secs;
 *   in flight       requests waiting for their reply plus saves not yet
 *                   finished: at most limits.inflight_per_user per uid;
 *   leaves          at most limits.leaves_per_request leaves in one save,
 *                   checked on the wire before the request is unpacked;
 *   staging memory  a save is charged the bytes its leaves reference plus
 *                   its unpacked request; admission gives every uid a fair
 *                   share of --memory-budget (save.c).
 *
 * A refusal is a CKPT_ELIMIT error to that client only. Loop thread only.
 */
#ifndef CKPTD_USER_H
#define CKPTD_USER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Uids holding fewer connections than this may use the reserved slots. */
#define USER_RESERVE_SMALL 8

/* Defaults of the limits (settings in config.c). */
#define USER_DEFAULT_CONNS 4096
#define USER_DEFAULT_CONNS_PER_USER 1024
#define USER_DEFAULT_CONNS_RESERVE 256
#define USER_DEFAULT_IDLE_SECS 600
#define USER_DEFAULT_INFLIGHT_PER_USER 512
#define USER_DEFAULT_LEAVES_PER_REQUEST 200000

struct user_limits {
	unsigned conns;                 /* --max-connections */
	unsigned conns_per_user;        /* --max-connections-per-user */
	unsigned conns_reserve;         /* --connections-reserve */
	unsigned idle_secs;             /* --idle-timeout (0: never) */
	unsigned inflight_per_user;     /* --max-requests-per-user */
	uint64_t leaves_per_request;    /* --max-leaves */
};
extern struct user_limits user_limits;

struct user {
	uid_t uid;
	unsigned refs;
	unsigned conns;                 /* live, admitted connections */
	unsigned inflight;              /* requests waiting for a reply */
	unsigned saves;                 /* saves queued or running */
	unsigned queued;                /* saves waiting for memory */
	uint64_t queued_mem;            /* their unpacked requests */
	uint64_t staging;               /* memory charged to running saves */
	uint64_t pass;                  /* save.c admission pass marker */
	struct user *next;              /* hash chain */
};

/* The record of uid with one more reference (created when needed); NULL
 * when out of memory. */
struct user *user_get(uid_t uid);
void user_put(struct user *u);
/* Uids with saves running or waiting for memory. */
unsigned user_active(void);
/* Called when u->queued or u->staging changes from / to zero. */
void user_activity(struct user *u, int was_active);
static inline int
user_is_active(const struct user *u)
{
	return u->staging > 0 || u->queued > 0;
}

/* 0 when a uid holding `held` connections may open one more while `total`
 * connections are open; else CKPT_ELIMIT with a message in msg. */
int user_conn_admit(const struct user *u, unsigned total, char *msg,
    size_t msglen);

#endif
