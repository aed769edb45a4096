/*
 * bed.h - a multi-node test bed: network namespaces and etcd members.
 *
 * bed_init() makes a private "hub" namespace holding a bridge, and one
 * namespace per node joined to it by a veth pair; node i has the address
 * 10.66.0.(i+1)/24 on its eth0 and its own loopback. Nothing is added to
 * the namespace the test runs in: only loopback and addresses inside the
 * namespaces the bed made are used. bed_etcd_start() runs Debian's etcd
 * (ETCD_BIN, default "etcd") with 1 or 3 members on nodes 0.., each in its
 * node's namespace (so every member listens on port 2379/2380 of its own
 * address and no port of the machine is taken). bed_fini() kills the
 * members by PID and deletes the namespaces and the data directory.
 *
 * Every function returns 0 or -1 with a message on stderr (TAP diag).
 * Needs root (ip netns); a test without it fails with a clear message.
 */
#ifndef CKPT_TEST_BED_H
#define CKPT_TEST_BED_H

#include <stdint.h>
#include <sys/types.h>

#define BED_MAX_NODES 8
#define BED_MAX_MEMBERS 3

struct bed_member {
	pid_t pid;              /* 0 when not running */
	int node;
	uint64_t id;            /* etcd member id, once seen */
};

struct bed {
	char tag[32];           /* prefix of the namespaces: unique per test */
	char dir[256];          /* data dirs and logs of the members */
	int nnodes;
	int nmembers;
	struct bed_member m[BED_MAX_MEMBERS];
	char endpoints[512];    /* "http://10.66.0.1:2379,..." */
};

int bed_init(struct bed *b, int nnodes);
/* Start nmembers (1 or 3) members on nodes 0..nmembers-1 and wait (at
 * most 20 s) until they have a leader. */
int bed_etcd_start(struct bed *b, int nmembers);
/* The member that is leader now (waits up to timeout_ms for one), or -1. */
int bed_leader(struct bed *b, int timeout_ms);
/* SIGKILL member i and reap it. */
int bed_kill(struct bed *b, int member);
/* Start member i again (after bed_kill) on its data directory. */
int bed_revive(struct bed *b, int member);
/* Move the calling thread (and threads it starts later) into node's
 * namespace; node -1: back to the namespace the test started in. */
int bed_enter(struct bed *b, int node);
/* Cut (up = 0) or restore (up = 1) the node's link to the hub. */
int bed_link(struct bed *b, int node, int up);
/* The client URL of node's address ("http://10.66.0.N:2379"). */
void bed_url(int node, char *buf, size_t len);
/* Watch the keys under prefix from node's namespace (every member),
 * from now on: fn(arg, put, key) on the watch's thread for each event
 * (put 1, delete 0). NULL on error (told on stderr). */
struct bed_watch;
typedef void (*bed_event_fn)(void *arg, int put, const char *key);
struct bed_watch *bed_watch(struct bed *b, int node, const char *prefix,
    bed_event_fn fn, void *arg);
void bed_unwatch(struct bed_watch *w);
/* Read the keys under prefix from node's namespace: fn(arg, key) for
 * each, in key order. Their number, or -1 (told on stderr). */
typedef void (*bed_key_fn)(void *arg, const char *key);
int bed_keys(struct bed *b, int node, const char *prefix, bed_key_fn fn,
    void *arg);
/* Compact etcd's history up to its current revision (from node's
 * namespace): watches behind it are canceled as compacted. The revision,
 * or -1 (told on stderr). */
int64_t bed_compact(struct bed *b, int node);
void bed_fini(struct bed *b);

#endif
