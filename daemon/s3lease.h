/*
 * s3lease.h - one daemon writes an s3:// prefix at a time: a lease object
 * in the prefix names the daemon that holds it and until when.
 *
 * The lock of a step in progress (backend.h, lock) is a process's: a
 * second daemon writing the same prefix would take a live save's marker
 * for a leftover and remove it, and two saves of one step would meet. So
 * a daemon takes the prefix's lease, <prefix>/.ckptd-lease, before it
 * writes there:
 *
 *   taking     PUT If-None-Match: * (radosgw and S3 create the object only
 *              when it is absent, atomically: of concurrent takers one
 *              wins). Present: read it. A live lease of another daemon
 *              refuses the writer (CKPT_EBUSY naming the owner); one past
 *              its expiry, or of a dead process on this host, is taken
 *              over by PUT If-Match: <its ETag>, so that of two takers of
 *              a stale lease one wins.
 *   keeping    a thread renews every lease held each S3LEASE_RENEW s (PUT
 *              If-Match: the ETag it wrote last, so a lease taken over
 *              meanwhile is never written back: it is then lost, logged);
 *              the lease runs S3LEASE_TTL s past each renewal.
 *   releasing  S3LEASE_IDLE s after the last root handle of the prefix
 *              is closed, and at exit: DELETE (after checking it is still
 *              the one written).
 *
 * A reader (a root opened without writing) takes no lease; when it finds
 * another daemon's live lease it remembers it, and the tmp dirs under that
 * prefix are never taken for leftovers (s3lease_foreign).
 *
 * What it does not cover: a holder stalled longer than S3LEASE_TTL (no
 * renewal reached the store) may find its lease taken over and write on
 * until its next renewal fails; prefixes nested in one another have
 * leases of their own; a process on the same host in another pid
 * namespace with the same host name may be taken for dead.
 */
#ifndef CKPTD_S3LEASE_H
#define CKPTD_S3LEASE_H

#include "common.h"

struct s3_client;

#define S3LEASE_NAME ".ckptd-lease"
#define S3LEASE_TTL 60
#define S3LEASE_RENEW 15
#define S3LEASE_IDLE 120

/* Worker: the prefix (key prefix, "" or ending in '/') of bucket is about
 * to be written (write) or read: 0, or CKPT_EBUSY when another daemon's
 * live lease holds it and write is set. A writer gets one hold of the
 * lease (s3lease_drop). */
int s3lease_take(struct s3_client *c, const char *bucket, const char *prefix,
    int write, ckd_err *e);
/* A root handle holding the lease is closed. */
void s3lease_drop(const char *bucket, const char *prefix);
/* 1 when key is under a prefix another live daemon holds (as last seen). */
int s3lease_foreign(const char *bucket, const char *key);

#endif
