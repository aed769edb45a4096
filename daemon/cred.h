/*
 * cred.h - the identity of a peer: who a request acts for. conn.c fills it
 * from the socket; worker.c takes it on for a task's file operations.
 */
#ifndef CKPTD_CRED_H
#define CKPTD_CRED_H

#include <sys/types.h>

/* Identity of the peer, from SO_PEERCRED and SO_PEERGROUPS. */
struct peer_cred {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int ngroups;
	gid_t groups[64];
};

#endif
