/*
 * coord_etcd.c - the coordinator of daemons on several nodes through etcd
 * (coord.h; keys in daemon/README.md, "Multi-node coordination").
 *
 * Under /ckpt/v1/ (<s> is job/<job>/root/<root>/step/<step>):
 *   node/<node>                the node's lease is alive
 *   <s>/join/<node>            the node writes parts of the step (under
 *                              its lease)
 *   <s>/rank/<rank>            = <node>: the rank's part is durable
 *                              (under the node's lease)
 *   <s>/commit                 = "<node> <bytes> <name>": committed
 *                              (<name>: the step's directory)
 *   <s>/failed                 = "<node> <code>\n<message>"
 *   <s>/save                   = "<node> <0|1>": the job's decision to
 *                              save the step or not, the first node's
 *                              to ask (under a lease of 30 min)
 * <job> and <root> (the root's canonical path, the same on every node)
 * are percent-encoded (only [A-Za-z0-9._-] stay), <step> 20 digits. The
 * root is part of the key: one job saves into several roots (items,
 * runs), each with steps of the same numbers.
 *
 * commit and failed exclude each other (each is created only while both
 * are absent); commit also requires every join key of the nodes holding
 * parts, so a node whose lease expired cannot be committed over. A part's
 * metadata reaches the committing node (the one holding the primary
 * rank's part) through the file _PART-p<rank>.ckptd in the step's tmp dir,
 * written and synced before its rank key is put, removed before the
 * commit.
 *
 * The watch runs on the client's thread; its events go to the loop
 * through a queue and an eventfd. What arrives for a step that has no
 * transaction here yet is kept (a few hundred steps) for when it starts.
 *
 * A step's keys go with it: the daemon that deletes a committed step
 * (retention on the committer, or a delete request on any node) deletes
 * its <s>/ prefix in one range delete, found through the index
 * root/<root>/step/<step>/job/<job> (put with the tmp dir); the deletion of `commit` tells
 * every other node to drop the step from its list. A failed step's
 * prefix goes once the node of its primary part (the only one that may
 * commit it) has aborted it. The join keys deleted with a prefix are not
 * nodes gone (their deletion shares the revision of the commit's or
 * failure's).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "backend.h"
#include "coord.h"
#include "stepdir.h"
#include "root.h"
#include "etcd.h"
#include "layout.h"
#include "log.h"
#include "steptx.h"
#include "worker.h"

#define CE_PREFIX "/ckpt/v1/"
#define CE_KEY CKPT_ETCD_MAX_KEY
#define CE_KNOWN_MAX 256
/* What is known of a step with no transaction here is handed to one that
 * starts within this long (the longest async timeout that makes sense);
 * older, it is of an earlier attempt at the step. */
#define CE_KNOWN_NS (900ll * 1000000000)
#define CE_PART_FILE "_PART-p%" PRIu32 ".ckptd"
#define CE_PART_MAX (256u << 20)        /* bytes of one part's metadata */
/* A step's decision lives this long (the nodes all ask within the step's
 * async timeout, at most CE_KNOWN_NS). */
#define CE_DECISION_TTL 1800

enum cev_kind { CEV_RANK, CEV_COMMIT, CEV_FAILED, CEV_GONE, CEV_DROP,
	CEV_RESYNC };

/* An event of the watch for the loop. */
struct cev {
	struct cev *next;
	enum cev_kind kind;
	char root[CE_KEY];
	char job[256];
	uint64_t step;
	uint32_t rank;
	char node[64];
	uint64_t bytes;
	ckd_err why;
	int reread;                     /* of a range read (ce_reread) */
};

/* A failed step whose primary part is not here: its keys (written up
 * to rev) go at due_ns, unless a new attempt wrote some since. */
struct ce_gc {
	struct ce_gc *next;
	int64_t due_ns;
	int64_t rev;
	uint64_t step;
	char prefix[CE_KEY];
	char idx[CE_KEY];
};

/* What is known of a step with no transaction here (yet). */
struct known {
	struct known *next;
	int64_t at_ns;                  /* first heard of (monotonic) */
	char *root;
	char job[256];
	uint64_t step;
	int committed;
	uint64_t bytes;
	ckd_err why;                    /* code != 0: failed */
	unsigned n;
	uint32_t *ranks;
	char (*nodes)[64];
};

static struct {
	struct etcd *c;
	struct etcd_watch *w;
	char node[64];
	unsigned ttl;
	pthread_mutex_t mu;             /* lease, q */
	int64_t lease;
	struct cev *qhead, *qtail;
	int efd;
	struct event *ev;
	struct known *known;            /* loop */
	unsigned nknown;
	/* The watch's thread: the step whose commit or failure was deleted
	 * last, and the revision of that delete. */
	char wdel[CE_KEY];
	int64_t wdel_rev;
	int rereading;                  /* ce_reread runs */
	/* The loop: the steps committed in etcd, as a range read after a
	 * gap in the watch found them (CEV_COMMIT reread), until CEV_RESYNC. */
	struct ce_step { char *root; uint64_t step; } *rs;
	size_t nrs, caprs;
	/* The keys of failed steps to remove once due (dmu), and the loop's
	 * timer looking for them. */
	struct ce_gc *gc;
	struct event *gc_ev;
	/* The lease of the decisions this node records (ce_agree): one for
	 * every decision made within half its TTL. */
	pthread_mutex_t dmu;
	int64_t dlease, dlease_end_ns;
} CE = { .mu = PTHREAD_MUTEX_INITIALIZER, .dmu = PTHREAD_MUTEX_INITIALIZER,
	.efd = -1 };

/* ---- keys -------------------------------------------------------------- */

static int
ce_enc(const char *job, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	const unsigned char *p;

	for (p = (const unsigned char *)job; *p != '\0'; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' ||
		    *p == '-') {
			if (o + 1 >= len)
				return -1;
			buf[o++] = (char)*p;
			continue;
		}
		if (o + 3 >= len)
			return -1;
		buf[o++] = '%';
		buf[o++] = hex[*p >> 4];
		buf[o++] = hex[*p & 15];
	}
	if (o == 0) {           /* the job "" */
		if (len < 2)
			return -1;
		buf[o++] = '%';
	}
	buf[o] = '\0';
	return 0;
}

static int
ce_hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static int
ce_dec(const char *s, size_t n, char *buf, size_t len)
{
	size_t i, o = 0;
	int hi, lo;

	if (n == 1 && s[0] == '%') {
		buf[0] = '\0';
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (o + 1 >= len)
			return -1;
		if (s[i] != '%') {
			buf[o++] = s[i];
			continue;
		}
		if (i + 2 >= n)
			return -1;
		if ((hi = ce_hexval(s[i + 1])) < 0 ||
		    (lo = ce_hexval(s[i + 2])) < 0)
			return -1;
		buf[o++] = (char)(hi * 16 + lo);
		i += 2;
	}
	buf[o] = '\0';
	return 0;
}

/* CE_PREFIX "job/<job>/root/<root>/step/<step>/" + what, into buf. */
static int
ce_key(const struct steptx *tx, const char *what, char *buf, size_t len,
    ckd_err *e)
{
	char job[3 * 256 + 2], root[CE_KEY];

	if (ce_enc(tx->job, job, sizeof job) != 0 ||
	    ce_enc(tx->r->path, root, sizeof root) != 0 ||
	    (size_t)snprintf(buf, len, CE_PREFIX "job/%s/root/%s/step/%020"
	    PRIu64 "/%s", job, root, tx->step, what) >= len)
		return err_set(e, CKPT_EINVAL, "job name or root path too long "
		    "for etcd: %s, %s", tx->job, tx->r->path);
	return 0;
}

/* The step's entry in the index of the jobs saving each step of a root:
 * CE_PREFIX "root/<root>/step/<step>/job/<job>" (job: NULL, the prefix
 * of every job's), into buf. A delete, which knows the root and the step
 * but not the job, finds the keys of exactly that step through it. */
static int
ce_idx_key(const char *path, uint64_t step, const char *job, char *buf,
    size_t len, ckd_err *e)
{
	char jb[3 * 256 + 2], root[CE_KEY];

	if ((job != NULL && ce_enc(job, jb, sizeof jb) != 0) ||
	    ce_enc(path, root, sizeof root) != 0 ||
	    (size_t)snprintf(buf, len, CE_PREFIX "root/%s/step/%020" PRIu64
	    "/job/%s", root, step, job != NULL ? jb : "") >= len)
		return err_set(e, CKPT_EINVAL, "job name or root path too long "
		    "for etcd: %s, %s", job != NULL ? job : "", path);
	return 0;
}

static int
ce_valid_node(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n >= sizeof CE.node)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' &&
		    s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

/* ---- the lease (any thread) ------------------------------------------------ */

/* A write whose outcome is unknown because the member that took it lost
 * its leader (an election): one that is idempotent or guarded may be sent
 * again. */
static int
ce_lost_in_election(int r, const ckd_err *e)
{
	return (r == CKPT_ETIMEDOUT || r == CKPT_ECONN) &&
	    strstr(e->msg, "outcome unknown") != NULL;
}

/* The node's lease, granted again (with its node key) after it was lost:
 * as the keeper found, or as a put under lease stale (non-zero) was told
 * (the keeper may not have asked yet since etcd came back). */
static int
ce_lease(int64_t *lease, int64_t stale, ckd_err *e)
{
	char key[CE_KEY], val[64];
	int r = 0;

	pthread_mutex_lock(&CE.mu);
	if (CE.lease == 0 || (stale != 0 && CE.lease == stale) ||
	    etcd_lease_kept(CE.c) == CKPT_ENOTFOUND) {
		int64_t id;

		/* A grant lost in an election (a healed member calls one)
		 * is asked again: an orphan lease only expires. */
		if ((r = etcd_lease_grant(CE.c, CE.ttl, &id, e)) != 0 &&
		    ce_lost_in_election(r, e)) {
			log_info("etcd: %s; asking again", e->msg);
			memset(e, 0, sizeof *e);
			r = etcd_lease_grant(CE.c, CE.ttl, &id, e);
		}
		if (r != 0)
			goto out;
		snprintf(key, sizeof key, CE_PREFIX "node/%s", CE.node);
		snprintf(val, sizeof val, "%ld", (long)getpid());
		if ((r = etcd_lease_keep(CE.c, id, CE.ttl, e)) != 0 ||
		    (r = etcd_put(CE.c, key, val, strlen(val), id, NULL,
		    e)) != 0)
			goto out;
		if (CE.lease != 0) {
			log_warn("etcd: the lease of node %s was lost; a new "
			    "one is %" PRIx64, CE.node, (uint64_t)id);
			/* Cut off for a TTL: the watch's connection may be
			 * one the cut left silent. */
			etcd_watch_kick(CE.w);
		}
		CE.lease = id;
	}
out:
	*lease = CE.lease;
	pthread_mutex_unlock(&CE.mu);
	return r;
}

/* ---- the coordinator (worker side) ------------------------------------------ */

/* Put key = val under the node's lease. The put is idempotent (the same
 * value under the same lease), so when its outcome is unknown (the
 * member that took it lost its leader: an election) it is sent once
 * more, after the election had the client's timeout to end. */
static int
ce_put_leased(const char *key, const char *val, ckd_err *e)
{
	int64_t lease, stale = 0, end = now_mono_ns() / 1000000 +
	    2 * (int64_t)etcd_timeout_ms(CE.c);
	int r, renewed = 0;

	for (;;) {
		if ((r = ce_lease(&lease, stale, e)) != 0)
			return r;
		r = etcd_put(CE.c, key, val, strlen(val), lease, NULL, e);
		if (r == 0)
			return 0;
		if (r == CKPT_ENOTFOUND && !renewed) {
			/* The lease expired (a partition, an outage longer
			 * than its TTL): a new one, then the put again. */
			stale = lease;
			renewed = 1;
		} else if (!ce_lost_in_election(r, e) ||
		    now_mono_ns() / 1000000 >= end) {
			return r;
		}
		log_info("etcd: %s; sending it again", e->msg);
		memset(e, 0, sizeof *e);
	}
}

static int
ce_msg(ckd_err *e, int r, const char *what)
{
	char msg[CKPT_ERRLEN];

	snprintf(msg, sizeof msg, "%s", e->msg);
	return err_set(e, r, "%s through etcd (node %s): %s", what, CE.node,
	    msg);
}

/*
 * This node made the step's tmp dir: it begins a new attempt at the step
 * (and puts the step's entry in the index of a root's steps by job),
 * so a commit or failure recorded for the step belongs to an earlier one
 * (a step deleted and saved again, a failed step saved again after a
 * restart) and is removed, lest it refuse this attempt's commit. A commit
 * cannot be this attempt's: none of this node's parts is durable yet. A
 * failure put by a node of this attempt in the moment since the mkdir
 * would be lost with it; this attempt then fails at its timeout instead.
 */
static int
ce_clear_stale(struct steptx *tx, ckd_err *e)
{
	static const char *const what[] = { "commit", "failed" };
	char key[CE_KEY];
	int64_t n;
	unsigned i;
	int r;

	for (i = 0; i < 2; i++) {
		if ((r = ce_key(tx, what[i], key, sizeof key, e)) != 0)
			return r;
		if ((r = etcd_delete(CE.c, key, 0, &n, e)) != 0)
			return ce_msg(e, r, "clearing an earlier attempt");
		if (n > 0)
			log_info("etcd: step %" PRIu64 " of %s is saved again: "
			    "the %s of its earlier attempt is cleared",
			    tx->step, tx->r->path, what[i]);
	}
	if ((r = ce_idx_key(tx->r->path, tx->step, tx->job, key, sizeof key,
	    e)) != 0)
		return r;
	if ((r = etcd_put(CE.c, key, "", 0, 0, NULL, e)) != 0)
		return ce_msg(e, r, "indexing the step");
	return 0;
}

/* The lease of the decisions (ce_agree); stale: the one etcd did not
 * know. */
static int
ce_decision_lease(int64_t *lease, int64_t stale, ckd_err *e)
{
	int64_t now = now_mono_ns(), id;
	int r = 0;

	pthread_mutex_lock(&CE.dmu);
	if (CE.dlease == 0 || CE.dlease == stale || now >= CE.dlease_end_ns) {
		if ((r = etcd_lease_grant(CE.c, CE_DECISION_TTL, &id, e)) == 0) {
			CE.dlease = id;
			CE.dlease_end_ns = now + CE_DECISION_TTL / 2 *
			    1000000000ll;
		}
	}
	*lease = CE.dlease;
	pthread_mutex_unlock(&CE.dmu);
	return r;
}

/*
 * The job's decision for the step: the first node to ask records its
 * own (a create: once), the others take it. Every node thus saves the
 * same steps whatever its clock and its last save say (time-based
 * policies). The key expires with its lease; a step deleted or failed
 * loses it with its prefix.
 */
static int
ce_agree(struct steptx *tx, int local, int *saved, ckd_err *e)
{
	char key[CE_KEY], val[96], node[64];
	struct etcd_kv old;
	int64_t lease, stale = 0;
	int r, created = 0, d, tries;

	if ((r = ce_key(tx, "save", key, sizeof key, e)) != 0)
		return r;
	snprintf(val, sizeof val, "%s %d", CE.node, local ? 1 : 0);
	for (tries = 0;; tries++) {
		memset(&old, 0, sizeof old);
		if ((r = ce_decision_lease(&lease, stale, e)) != 0)
			return ce_msg(e, r, "deciding whether to save the step");
		r = etcd_create(CE.c, key, val, strlen(val), lease, &created,
		    NULL, &old, e);
		if (r == 0 || tries == 2)
			break;
		if (r == CKPT_ENOTFOUND)
			stale = lease;          /* granted again */
		else if (!ce_lost_in_election(r, e))
			break;
		/* A create is guarded: sending it again cannot decide twice. */
		log_info("etcd: step %" PRIu64 ": %s; deciding again", tx->step,
		    e->msg);
		memset(e, 0, sizeof *e);
	}
	if (r != 0)
		return ce_msg(e, r, "deciding whether to save the step");
	if (created) {
		*saved = local;
		return 0;
	}
	if (old.value == NULL || sscanf(old.value, "%63s %d", node, &d) != 2) {
		r = err_set(e, CKPT_EPROTO, "step %" PRIu64 ": the decision in "
		    "etcd is not one: '%s'", tx->step, old.value != NULL ?
		    old.value : "");
	} else {
		*saved = d != 0;
		if (*saved != local)
			log_debug("etcd: step %" PRIu64 ": node %s decided %s",
			    tx->step, node, d ? "to save" : "not to save");
	}
	etcd_kv_free(&old);
	return r;
}

/* A shared lock on the step's tmp dir fd. An exclusive one is held by a
 * collector of leftovers while it removes one (briefly: waited for), or
 * by a single-process save of the same name (then the step fails). */
static int
ce_lock_shared(int fd, const char *tmp, ckd_err *e)
{
	struct timespec ts = { 0, 10 * 1000000L };
	int waited;

	for (waited = 0; flock(fd, LOCK_SH | LOCK_NB) != 0; waited += 10) {
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK)
			return err_errno(e, errno, "flock %s", tmp);
		if (waited >= 3000)
			return err_set(e, CKPT_EBUSY, "%s belongs to a save in "
			    "progress", tmp);
		nanosleep(&ts, NULL);
	}
	return 0;
}

static int
ce_begin(struct steptx *tx, int rootfd, mode_t dmode, int *tmpfd,
    ckd_err *e)
{
	const struct store_backend *be = tx->r->be;
	char tmp[300], key[CE_KEY];
	struct stat st;
	int r, fd, made, tries;

	if ((size_t)snprintf(tmp, sizeof tmp, "%s%s", tx->name,
	    CKPT_TMP_SUFFIX) >= sizeof tmp)
		return err_set(e, CKPT_EINVAL, "step name too long: %s",
		    tx->name);
	if ((r = ce_key(tx, "join/", key, sizeof key, e)) != 0)
		return r;
	if (strlen(key) + strlen(CE.node) >= sizeof key)
		return err_set(e, CKPT_EINVAL, "key too long");
	strcat(key, CE.node);
	if ((r = ce_put_leased(key, "", e)) != 0)
		return ce_msg(e, r, "joining the step");
	if (be->stat(rootfd, tx->name, &st) == 0)
		return err_set(e, CKPT_EEXIST, "step directory %s already "
		    "exists", tx->name);
	/* The first node makes the tmp dir; the others join it. Every
	 * node's daemon holds a shared lock on it: a collector of leftovers
	 * (another node's daemon opening the root: its lock is exclusive)
	 * leaves it alone while one of them lives. The lock is taken before
	 * anything else, and a directory the collector took first (removed
	 * while we waited for the lock) is made again. The etcd coordinator
	 * runs on a POSIX filesystem every node mounts, so the handle is an
	 * fd. */
	for (tries = 0;; tries++) {
		if (tries == 8)
			return err_set(e, CKPT_EBUSY, "cannot create %s: it "
			    "keeps being removed", tmp);
		made = 0;
		if ((r = be->mkdir(rootfd, tmp, dmode, &fd, e)) == 0)
			made = 1;
		else if (r != CKPT_EEXIST)
			return r;
		else {
			memset(e, 0, sizeof *e);
			if ((fd = be->open_dir(rootfd, tmp)) < 0) {
				if (errno == ENOENT)
					continue;       /* removed meanwhile */
				return err_errno(e, errno, "open %s", tmp);
			}
		}
		if ((r = ce_lock_shared(fd, tmp, e)) != 0) {
			be->close(fd);
			return r;
		}
		if (be->same(rootfd, tmp, fd))
			break;
		be->close(fd);
	}
	if (made && (r = ce_clear_stale(tx, e)) != 0) {
		ckd_err e2 = { 0 };

		be->close(fd);
		(void)be->remove_tree(rootfd, tmp, &e2);
		return r;
	}
	*tmpfd = fd;
	return 0;
}

static int
ce_part_durable(struct steptx *tx, const struct steptx_part *s,
    uint32_t rank, mode_t fmode, ckd_err *e)
{
	const struct store_backend *be = tx->r->be;
	char name[64], key[CE_KEY], rk[32];
	unsigned char *buf;
	size_t n, k;
	int fd, r;

	n = ckpt__save__get_packed_size(s->sv);
	if (n > CE_PART_MAX)
		return err_set(e, CKPT_ETOOBIG, "rank %" PRIu32 ": metadata of "
		    "%zu bytes (at most %u)", rank, n, CE_PART_MAX);
	if ((buf = malloc(n + 8)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	for (k = 0; k < 8; k++)
		buf[k] = (unsigned char)(s->bytes >> (8 * k));
	ckpt__save__pack(s->sv, buf + 8);
	snprintf(name, sizeof name, CE_PART_FILE, rank);
	(void)be->unlink(tx->tmpfd, name);
	if ((fd = be->create(tx->tmpfd, name, fmode)) < 0) {
		r = err_errno(e, errno, "create %s", name);
		free(buf);
		return r;
	}
	k = 0;
	while (k < n + 8) {
		ssize_t w = be->write(fd, buf + k, n + 8 - k);

		if (w < 0) {
			r = err_errno(e, errno, "write %s", name);
			be->close(fd);
			free(buf);
			return r;
		}
		k += (size_t)w;
	}
	free(buf);
	if (be->fsync(fd) != 0 || be->fsync(tx->tmpfd) != 0) {
		r = err_errno(e, errno, "fsync %s", name);
		be->close(fd);
		return r;
	}
	be->close(fd);
	snprintf(rk, sizeof rk, "rank/%" PRIu32, rank);
	if ((r = ce_key(tx, rk, key, sizeof key, e)) != 0)
		return r;
	if ((r = ce_put_leased(key, CE.node, e)) != 0)
		return ce_msg(e, r, "publishing the part");
	return 0;
}

static int
ce_read_part(struct steptx *tx, unsigned slot, ckd_err *e)
{
	const struct store_backend *be = tx->r->be;
	uint32_t rank = tx->ranks != NULL ? tx->ranks[slot] : slot;
	char name[64];
	unsigned char *buf;
	struct stat st;
	size_t k;
	int fd, r;

	snprintf(name, sizeof name, CE_PART_FILE, rank);
	memset(e, 0, sizeof *e);
	if ((fd = be->open_read(tx->tmpfd, name, &st, e)) < 0) {
		if (e->code == CKPT_ENOTFOUND)
			return err_set(e, CKPT_ERANK, "step %" PRIu64 ": the "
			    "part of rank %" PRIu32 " (node %s) is gone from "
			    "the step's tmp dir (removed as a leftover after "
			    "that node's daemon died?)", tx->step, rank,
			    tx->remote[slot].node);
		return e->code != 0 ? e->code : err_errno(e, errno,
		    "open %s", name);
	}
	if (st.st_size < 8 || (uint64_t)st.st_size > CE_PART_MAX + 8ull) {
		be->close(fd);
		return err_set(e, CKPT_ECORRUPT, "%s: %lld bytes", name,
		    (long long)st.st_size);
	}
	if ((buf = malloc((size_t)st.st_size)) == NULL) {
		be->close(fd);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	r = be->read_range(fd, buf, (size_t)st.st_size, 0);
	be->close(fd);
	if (r != 0) {
		free(buf);
		return err_errno(e, errno, "read %s", name);
	}
	tx->remote[slot].bytes = 0;
	for (k = 0; k < 8; k++)
		tx->remote[slot].bytes |= (uint64_t)buf[k] << (8 * k);
	tx->remote[slot].sv = ckpt__save__unpack(NULL,
	    (size_t)st.st_size - 8, buf + 8);
	free(buf);
	if (tx->remote[slot].sv == NULL)
		return err_set(e, CKPT_ECORRUPT, "%s (rank %" PRIu32 " of node "
		    "%s): not a part's metadata", name, rank,
		    tx->remote[slot].node);
	return 0;
}

static int
ce_gather(struct steptx *tx, ckd_err *e)
{
	const struct store_backend *be = tx->r->be;
	char name[64];
	unsigned slot;
	int r;

	for (slot = 0; slot < tx->nparts; slot++) {
		uint32_t rank = tx->ranks != NULL ? tx->ranks[slot] : slot;

		if (tx->parts[slot] == NULL && tx->remote[slot].sv == NULL &&
		    (r = ce_read_part(tx, slot, e)) != 0)
			return r;
		/* Not part of the step's format: gone before the commit
		 * (the tmp dir is synced after this). */
		snprintf(name, sizeof name, CE_PART_FILE, rank);
		if (be->unlink(tx->tmpfd, name) != 0 && errno != ENOENT)
			return err_errno(e, errno, "remove %s", name);
	}
	return 0;
}

/* The nodes holding parts of tx: this one and those of remote parts. */
static unsigned
ce_nodes(const struct steptx *tx, const char **nodes, unsigned max)
{
	unsigned n = 0, i, k;

	nodes[n++] = CE.node;
	for (i = 0; i < tx->nparts && tx->remote != NULL; i++) {
		if (tx->parts[i] != NULL || !tx->remote[i].durable)
			continue;
		for (k = 0; k < n; k++)
			if (strcmp(nodes[k], tx->remote[i].node) == 0)
				break;
		if (k == n && n < max)
			nodes[n++] = tx->remote[i].node;
	}
	return n;
}

/* After a refused commit: why (the failure recorded, or the nodes gone). */
static int
ce_refused(struct steptx *tx, const char **nodes, unsigned n, ckd_err *e)
{
	struct etcd_kvs kvs;
	char key[CE_KEY], gone[512];
	size_t off = 0;
	unsigned i, k;
	int r;

	if ((r = ce_key(tx, "failed", key, sizeof key, e)) != 0)
		return r;
	if ((r = etcd_get(CE.c, key, 0, &kvs, e)) != 0)
		return ce_msg(e, r, "reading the step's state");
	if (kvs.n > 0) {
		const char *v = kvs.kv[0].value, *nl = strchr(v, '\n');
		int code = 0;

		if (nl == NULL || sscanf(v, "%*s %d", &code) != 1 ||
		    code >= 0)
			code = CKPT_EIO;
		err_set(e, code, "%s", nl != NULL ? nl + 1 : v);
		etcd_kvs_free(&kvs);
		return code;
	}
	etcd_kvs_free(&kvs);
	if ((r = ce_key(tx, "join/", key, sizeof key, e)) != 0)
		return r;
	if ((r = etcd_get(CE.c, key, 1, &kvs, e)) != 0)
		return ce_msg(e, r, "reading the step's state");
	gone[0] = '\0';
	for (i = 0; i < n; i++) {
		size_t kl = strlen(key);

		for (k = 0; k < kvs.n; k++)
			if (strcmp(kvs.kv[k].key + kl, nodes[i]) == 0)
				break;
		if (k < kvs.n)
			continue;
		r = snprintf(gone + off, sizeof gone - off, "%s%s",
		    off > 0 ? ", " : "", nodes[i]);
		if (r > 0 && (size_t)r < sizeof gone - off)
			off += (size_t)r;
	}
	etcd_kvs_free(&kvs);
	if (off > 0)
		return err_set(e, CKPT_ERANK, "step %" PRIu64 ": node %s is "
		    "gone (its etcd lease expired) before the step was "
		    "committed", tx->step, gone);
	return err_set(e, CKPT_EIO, "step %" PRIu64 ": etcd refused the "
	    "commit", tx->step);
}

/* The commit key is there and ours (a commit sent again). */
static int
ce_is_ours(struct steptx *tx)
{
	struct etcd_kvs kvs;
	char key[CE_KEY];
	size_t l = strlen(CE.node);
	ckd_err e;
	int ours;

	if (ce_key(tx, "commit", key, sizeof key, &e) != 0 ||
	    etcd_get(CE.c, key, 0, &kvs, &e) != 0)
		return 0;
	ours = kvs.n > 0 && strncmp(kvs.kv[0].value, CE.node, l) == 0 &&
	    kvs.kv[0].value[l] == ' ';
	etcd_kvs_free(&kvs);
	return ours;
}

/* Committed: the rank keys (one per rank and step, the most of a step's
 * keys) are of no more use, every part being durable. The watchers skip
 * their deletion. The join and commit keys stay until the step is
 * deleted (ce_step_deleted). */
static void
ce_drop_ranks(struct steptx *tx)
{
	char key[CE_KEY];
	ckd_err e = { 0 };
	int64_t n;

	if (ce_key(tx, "rank/", key, sizeof key, &e) != 0 ||
	    etcd_delete(CE.c, key, 1, &n, &e) != 0)
		log_info("etcd: removing the rank keys of step %" PRIu64 ": %s",
		    tx->step, e.msg);
}

static int
ce_decide(struct steptx *tx, ckd_err *e)
{
	const char *nodes[CKPT_ETCD_MAX_COMPARES - 2];
	struct etcd_cmp cmp[CKPT_ETCD_MAX_COMPARES];
	char (*keys)[CE_KEY] = NULL;
	char ckey[CE_KEY], fkey[CE_KEY], val[512];
	unsigned n, i;
	int r, won = 0;

	n = ce_nodes(tx, nodes, CKPT_ETCD_MAX_COMPARES - 2);
	if ((keys = calloc(n, sizeof *keys)) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	if ((r = ce_key(tx, "commit", ckey, sizeof ckey, e)) != 0 ||
	    (r = ce_key(tx, "failed", fkey, sizeof fkey, e)) != 0)
		goto out;
	cmp[0].key = ckey;
	cmp[0].kind = ETCD_ABSENT;
	cmp[1].key = fkey;
	cmp[1].kind = ETCD_ABSENT;
	for (i = 0; i < n; i++) {
		if ((r = ce_key(tx, "join/", keys[i], sizeof keys[i], e)) != 0)
			goto out;
		if (strlen(keys[i]) + strlen(nodes[i]) >= sizeof keys[i]) {
			r = err_set(e, CKPT_EINVAL, "key too long");
			goto out;
		}
		strcat(keys[i], nodes[i]);
		cmp[2 + i].key = keys[i];
		cmp[2 + i].kind = ETCD_EXISTS;
	}
	snprintf(val, sizeof val, "%s %" PRIu64 " %s", CE.node, tx->bytes,
	    tx->name);
	r = etcd_put_if(CE.c, cmp, 2 + n, ckey, val, strlen(val), 0, &won,
	    NULL, e);
	if (r != 0 && ce_lost_in_election(r, e) && !ce_is_ours(tx)) {
		/* Lost in an election (the commit key is not there): the
		 * txn is guarded, so sending it again cannot commit twice,
		 * nor over a failure, whichever of the two lands. */
		log_info("etcd: step %" PRIu64 ": %s; committing again",
		    tx->step, e->msg);
		memset(e, 0, sizeof *e);
		r = etcd_put_if(CE.c, cmp, 2 + n, ckey, val, strlen(val), 0,
		    &won, NULL, e);
	}
	if (r != 0) {
		if (ce_is_ours(tx)) {
			r = 0;
			goto out;
		}
		r = ce_msg(e, r, "committing the step");
		goto out;
	}
	if (!won)
		r = ce_is_ours(tx) ? 0 : ce_refused(tx, nodes, n, e);
	if (r == 0)
		ce_drop_ranks(tx);
out:
	free(keys);
	return r;
}

/*
 * (worker) This node recorded the failure of a step whose primary part
 * is not here. The node holding it, if any, removes the step's keys
 * once it has aborted (ce_forget); a primary part that never reached
 * any daemon leaves them (failed, join, rank, the index entry) to this
 * node: after the step's timeout (a primary late by then is failed by
 * what the watch told the nodes), unless a new attempt at the step has
 * written keys since.
 */
static void
ce_gc_add(struct steptx *tx, int64_t rev)
{
	struct ce_gc *g;
	double secs = tx->timeout_secs;
	ckd_err e;

	if (rev <= 0 || (g = calloc(1, sizeof *g)) == NULL)
		return;
	if (ce_key(tx, "", g->prefix, sizeof g->prefix, &e) != 0 ||
	    ce_idx_key(tx->r->path, tx->step, tx->job, g->idx, sizeof g->idx,
	    &e) != 0) {
		free(g);
		return;
	}
	if (!(secs >= 1))
		secs = 1;
	if (secs > (double)(CE_KNOWN_NS / 1000000000))
		secs = (double)(CE_KNOWN_NS / 1000000000);
	g->due_ns = now_mono_ns() + (int64_t)(secs * 1e9);
	g->rev = rev;
	g->step = tx->step;
	pthread_mutex_lock(&CE.dmu);
	g->next = CE.gc;
	CE.gc = g;
	pthread_mutex_unlock(&CE.dmu);
}

struct ce_gc_task {
	struct task t;
	struct ce_gc *g;
};

static void
ce_gc_run(struct task *t)
{
	struct ce_gc *g = ((struct ce_gc_task *)t)->g;
	int64_t n = 0;
	int done = 0;

	if (etcd_delete_older(CE.c, g->prefix, g->rev, g->idx, &done, &n,
	    &t->err) != 0)
		log_warn("etcd: removing the keys of failed step %" PRIu64
		    ": %s", g->step, t->err.msg);
	else if (done)
		log_info("etcd: failed step %" PRIu64 ", whose primary part "
		    "no node had: %" PRId64 " keys removed", g->step, n);
	else
		log_debug("etcd: failed step %" PRIu64 " is saved again: its "
		    "keys stay", g->step);
}

static void
ce_gc_done(struct task *t)
{
	free(((struct ce_gc_task *)t)->g);
	free(t);
}

/* (loop) Once a second: the removals that are due go to workers. */
static void
ce_gc_tick(evutil_socket_t fd, short what, void *arg)
{
	struct ce_gc *g, **pp, *due = NULL;
	struct ce_gc_task *k;
	int64_t now = now_mono_ns();

	(void)fd;
	(void)what;
	(void)arg;
	pthread_mutex_lock(&CE.dmu);
	for (pp = &CE.gc; (g = *pp) != NULL;) {
		if (g->due_ns > now) {
			pp = &g->next;
			continue;
		}
		*pp = g->next;
		g->next = due;
		due = g;
	}
	pthread_mutex_unlock(&CE.dmu);
	while ((g = due) != NULL) {
		due = g->next;
		if (CE.c == NULL || (k = task_new(sizeof *k, ce_gc_run,
		    ce_gc_done, NULL, 0)) == NULL) {
			free(g);
			continue;
		}
		k->g = g;
		worker_submit(&k->t);
	}
}

static int
ce_failed(struct steptx *tx, const ckd_err *why)
{
	struct etcd_cmp cmp[2];
	char ckey[CE_KEY], fkey[CE_KEY], val[CKPT_ERRLEN + 96];
	struct etcd_kvs kvs;
	ckd_err e;
	int64_t rev = 0;
	int won = 0, r;

	if (ce_key(tx, "commit", ckey, sizeof ckey, &e) != 0 ||
	    ce_key(tx, "failed", fkey, sizeof fkey, &e) != 0)
		return 0;
	cmp[0].key = ckey;
	cmp[0].kind = ETCD_ABSENT;
	cmp[1].key = fkey;
	cmp[1].kind = ETCD_ABSENT;
	snprintf(val, sizeof val, "%s %d\n%s", CE.node, why->code, why->msg);
	if (etcd_put_if(CE.c, cmp, 2, fkey, val, strlen(val), 0, &won, &rev,
	    &e) != 0) {
		/* Whether the step was committed is unknown: its tmp dir
		 * stays (a leftover, never listed). */
		log_warn("etcd: recording the failure of step %" PRIu64 ": %s",
		    tx->step, e.msg);
		return 1;
	}
	if (won) {
		if (tx->parts[tx->primary] == NULL)
			ce_gc_add(tx, rev);
		return 0;
	}
	if (etcd_get(CE.c, ckey, 0, &kvs, &e) != 0)
		return 1;
	r = kvs.n > 0;
	etcd_kvs_free(&kvs);
	return r;
}

/* The failed step's keys (its tmp dir is gone on the primary's node):
 * one range delete of its prefix. */
static void
ce_forget(struct steptx *tx)
{
	char key[CE_KEY];
	ckd_err e = { 0 };
	int64_t n = 0;

	if (ce_key(tx, "", key, sizeof key, &e) != 0 ||
	    etcd_delete(CE.c, key, 1, &n, &e) != 0 ||
	    ce_idx_key(tx->r->path, tx->step, tx->job, key, sizeof key,
	    &e) != 0 || etcd_delete(CE.c, key, 0, NULL, &e) != 0)
		log_warn("etcd: removing the keys of failed step %" PRIu64
		    ": %s", tx->step, e.msg);
	else
		log_debug("etcd: failed step %" PRIu64 " of %s: %" PRId64
		    " keys removed", tx->step, tx->r->path, n);
}

/*
 * A committed step of the root at path was deleted here: the prefix of
 * each job's step of that root and number goes, in one range delete
 * each, then the step's entries in the index. The job is not known to a
 * delete (any manager of the root may delete any step): the index names
 * the jobs holding keys of exactly that step (a range read of its
 * prefix); a step of a root no job coordinates has none.
 */
static int
ce_step_deleted(const char *path, uint64_t step, ckd_err *e)
{
	char idx[CE_KEY], root[CE_KEY], prefix[2 * CE_KEY];
	struct etcd_kvs kvs;
	size_t i, il;
	int64_t n;
	int r;

	if (path[0] != '/')
		return 0;       /* not a shared filesystem's root */
	if ((r = ce_idx_key(path, step, NULL, idx, sizeof idx, e)) != 0 ||
	    ce_enc(path, root, sizeof root) != 0)
		return r != 0 ? r : err_set(e, CKPT_EINVAL, "root path too "
		    "long for etcd: %s", path);
	il = strlen(idx);
	if ((r = etcd_get(CE.c, idx, 1, &kvs, e)) != 0)
		return ce_msg(e, r, "looking for the keys of a deleted step");
	for (i = 0; i < kvs.n && r == 0; i++) {
		if ((size_t)snprintf(prefix, sizeof prefix, CE_PREFIX
		    "job/%s/root/%s/step/%020" PRIu64 "/", kvs.kv[i].key + il,
		    root, step) >= sizeof prefix)
			continue;
		if ((r = etcd_delete(CE.c, prefix, 1, &n, e)) != 0)
			r = ce_msg(e, r, "removing the keys of a deleted step");
		else
			log_debug("etcd: step %" PRIu64 " of %s deleted: %"
			    PRId64 " keys removed", step, path, n);
	}
	etcd_kvs_free(&kvs);
	if (r == 0 && i > 0 && (r = etcd_delete(CE.c, idx, 1, NULL, e)) != 0)
		r = ce_msg(e, r, "removing the index of a deleted step");
	return r;
}

/* ---- the watch (its thread) and the loop -------------------------------------- */

static void
ce_push(struct cev *v)
{
	uint64_t one = 1;

	pthread_mutex_lock(&CE.mu);
	if (CE.qtail != NULL)
		CE.qtail->next = v;
	else
		CE.qhead = v;
	CE.qtail = v;
	pthread_mutex_unlock(&CE.mu);
	if (write(CE.efd, &one, sizeof one) < 0 && errno != EAGAIN)
		log_warn("etcd: waking the loop: %s", strerror(errno));
}

static void ce_on_event(void *arg, const struct etcd_event *ev);

/*
 * (the watch's thread) The history up to rev was compacted before the
 * watch saw it: events are lost (a delete made elsewhere meanwhile). The
 * steps' keys are read again and handed to the loop as events of a
 * reread, then CEV_RESYNC: the loop tells the transactions what they
 * missed and looks on disk for the listed steps etcd no longer holds.
 */
static void
ce_reread(int64_t rev)
{
	struct etcd_kvs kvs;
	struct cev *v;
	ckd_err e = { 0 };
	size_t i;

	log_warn("etcd: the watch missed the history up to revision %" PRId64
	    " (compacted): reading the steps again", rev);
	if (etcd_get(CE.c, CE_PREFIX "job/", 1, &kvs, &e) != 0) {
		log_warn("etcd: reading the steps again: %s (deletes made by "
		    "other nodes meanwhile show once a root is reloaded)",
		    e.msg);
		return;
	}
	CE.rereading = 1;
	for (i = 0; i < kvs.n; i++) {
		struct etcd_event pe = {
			.type = ETCD_EVENT_PUT,
			.key = kvs.kv[i].key,
			.value = kvs.kv[i].value,
			.value_len = kvs.kv[i].value_len,
			.mod_revision = kvs.kv[i].mod_revision,
			.create_revision = kvs.kv[i].create_revision,
			.lease = kvs.kv[i].lease,
		};

		ce_on_event(NULL, &pe);
	}
	CE.rereading = 0;
	etcd_kvs_free(&kvs);
	if ((v = calloc(1, sizeof *v)) == NULL)
		return;
	v->kind = CEV_RESYNC;
	ce_push(v);
}

static void
ce_on_event(void *arg, const struct etcd_event *ev)
{
	const char *k = ev->key, *p, *q, *rest;
	char digits[21];
	struct cev *v;

	(void)arg;
	if (ev->type == ETCD_EVENT_COMPACTED) {
		ce_reread(ev->mod_revision);
		return;
	}
	if (strncmp(k, CE_PREFIX "job/", strlen(CE_PREFIX "job/")) != 0)
		return;
	k += strlen(CE_PREFIX "job/");
	if ((q = strstr(k, "/root/")) == NULL ||
	    (p = strstr(q + 6, "/step/")) == NULL || strlen(p + 6) < 21 ||
	    p[6 + 20] != '/')
		return;
	if ((v = calloc(1, sizeof *v)) == NULL)
		return;
	memcpy(digits, p + 6, 20);
	digits[20] = '\0';
	v->step = strtoull(digits, NULL, 10);
	rest = p + 6 + 21;
	if (ce_dec(k, (size_t)(q - k), v->job, sizeof v->job) != 0 ||
	    ce_dec(q + 6, (size_t)(p - q - 6), v->root, sizeof v->root) != 0)
		goto drop;
	if (ev->type == ETCD_EVENT_PUT && strncmp(rest, "rank/", 5) == 0) {
		v->kind = CEV_RANK;
		v->rank = (uint32_t)strtoul(rest + 5, NULL, 10);
		snprintf(v->node, sizeof v->node, "%.*s", (int)ev->value_len,
		    ev->value);
	} else if (ev->type == ETCD_EVENT_PUT && strcmp(rest, "commit") == 0) {
		v->kind = CEV_COMMIT;
		if (sscanf(ev->value, "%63s %" SCNu64, v->node, &v->bytes) != 2)
			goto drop;
	} else if (ev->type == ETCD_EVENT_PUT && strcmp(rest, "failed") == 0) {
		const char *nl = strchr(ev->value, '\n');
		int code = 0;

		v->kind = CEV_FAILED;
		if (nl == NULL || sscanf(ev->value, "%63s %d", v->node,
		    &code) != 2 || code >= 0)
			code = CKPT_EIO;
		err_set(&v->why, code, "%s", nl != NULL ? nl + 1 : ev->value);
	} else if (ev->type == ETCD_EVENT_DELETE &&
	    (strcmp(rest, "commit") == 0 || strcmp(rest, "failed") == 0)) {
		/* The step deleted, its failure forgotten, or an earlier
		 * attempt cleared: the join keys deleted with it (same
		 * revision) are no node gone. */
		snprintf(CE.wdel, sizeof CE.wdel, "%.*s", (int)(rest - ev->key),
		    ev->key);
		CE.wdel_rev = ev->mod_revision;
		if (rest[0] != 'c')
			goto drop;
		v->kind = CEV_DROP;
	} else if (ev->type == ETCD_EVENT_DELETE &&
	    strncmp(rest, "join/", 5) == 0) {
		if (ev->mod_revision == CE.wdel_rev &&
		    strncmp(ev->key, CE.wdel, (size_t)(rest - ev->key)) == 0 &&
		    CE.wdel[rest - ev->key] == '\0')
			goto drop;
		v->kind = CEV_GONE;
		snprintf(v->node, sizeof v->node, "%s", rest + 5);
		err_set(&v->why, CKPT_ERANK, "step %" PRIu64 ": node %s is gone "
		    "(its etcd lease expired) before its parts of the step "
		    "were committed", v->step, v->node);
	} else {
		goto drop;
	}
	v->reread = CE.rereading;
	if (strcmp(v->node, CE.node) == 0 && !(v->reread &&
	    v->kind == CEV_COMMIT))
		goto drop;      /* this daemon's own */
	ce_push(v);
	return;
drop:
	free(v);
}

static void
ce_known_free(struct known *k)
{
	free(k->root);
	free(k->ranks);
	free(k->nodes);
	free(k);
}

static struct known *
ce_known(const char *root, const char *job, uint64_t step)
{
	struct known *k, **pp;

	for (k = CE.known; k != NULL; k = k->next)
		if (k->step == step && strcmp(k->job, job) == 0 &&
		    strcmp(k->root, root) == 0)
			return k;
	if (CE.nknown >= CE_KNOWN_MAX) {
		/* Forget the oldest (the list's tail). */
		for (pp = &CE.known; (*pp)->next != NULL; pp = &(*pp)->next)
			;
		k = *pp;
		*pp = NULL;
		ce_known_free(k);
		CE.nknown--;
	}
	if ((k = calloc(1, sizeof *k)) == NULL)
		return NULL;
	if ((k->root = strdup(root)) == NULL) {
		free(k);
		return NULL;
	}
	snprintf(k->job, sizeof k->job, "%s", job);
	k->at_ns = now_mono_ns();
	k->step = step;
	k->next = CE.known;
	CE.known = k;
	CE.nknown++;
	return k;
}

static void
ce_known_rank(struct known *k, uint32_t rank, const char *node)
{
	uint32_t *r;
	char (*nd)[64];

	if ((r = realloc(k->ranks, (k->n + 1) * sizeof *r)) == NULL)
		return;
	k->ranks = r;
	if ((nd = realloc(k->nodes, (k->n + 1) * sizeof *nd)) == NULL)
		return;
	k->nodes = nd;
	k->ranks[k->n] = rank;
	snprintf(k->nodes[k->n], sizeof k->nodes[k->n], "%s", node);
	k->n++;
}

/* The step's commit or an earlier attempt's is gone: what was known of
 * it is of that attempt. */
static void
ce_known_drop(const char *root, const char *job, uint64_t step)
{
	struct known *k, **pp;

	for (pp = &CE.known; (k = *pp) != NULL; pp = &k->next)
		if (k->step == step && strcmp(k->job, job) == 0 &&
		    strcmp(k->root, root) == 0)
			break;
	if (k == NULL)
		return;
	*pp = k->next;
	CE.nknown--;
	ce_known_free(k);
}

static void
ce_rs_clear(void)
{
	size_t i;

	for (i = 0; i < CE.nrs; i++)
		free(CE.rs[i].root);
	free(CE.rs);
	CE.rs = NULL;
	CE.nrs = CE.caprs = 0;
}

static void
ce_rs_add(const char *root, uint64_t step)
{
	struct ce_step *n;

	if (CE.nrs == CE.caprs) {
		size_t cap = CE.caprs ? 2 * CE.caprs : 64;

		if ((n = realloc(CE.rs, cap * sizeof *n)) == NULL)
			return;
		CE.rs = n;
		CE.caprs = cap;
	}
	if ((CE.rs[CE.nrs].root = strdup(root)) == NULL)
		return;
	CE.rs[CE.nrs++].step = step;
}

/* root_recheck_steps: step of the root at path is committed in etcd. */
static int
ce_rs_known(void *arg, const char *path, uint64_t step)
{
	size_t i;

	(void)arg;
	for (i = 0; i < CE.nrs; i++)
		if (CE.rs[i].step == step && strcmp(CE.rs[i].root, path) == 0)
			return 1;
	return 0;
}

/* An event of a reread: for a transaction here only (what is kept for
 * steps without one is of the live watch); commits are noted. */
static void
ce_reread_event(const struct cev *v)
{
	switch (v->kind) {
	case CEV_RANK:
		(void)steptx_remote_part(v->root, v->job, v->step, v->rank,
		    v->node);
		break;
	case CEV_COMMIT:
		ce_rs_add(v->root, v->step);
		if (strcmp(v->node, CE.node) != 0)
			(void)steptx_remote_commit(v->root, v->job, v->step,
			    v->bytes);
		break;
	case CEV_FAILED:
		(void)steptx_remote_fail(v->root, v->job, v->step, &v->why);
		break;
	default:
		break;
	}
}

static void
ce_drain(evutil_socket_t fd, short what, void *arg)
{
	struct cev *v, *next;
	struct known *k;
	uint64_t cnt;

	(void)what;
	(void)arg;
	if (read(fd, &cnt, sizeof cnt) < 0 && errno != EAGAIN)
		log_warn("etcd: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&CE.mu);
	v = CE.qhead;
	CE.qhead = CE.qtail = NULL;
	pthread_mutex_unlock(&CE.mu);
	for (; v != NULL; v = next) {
		next = v->next;
		if (v->reread) {
			ce_reread_event(v);
			free(v);
			continue;
		}
		switch (v->kind) {
		case CEV_RESYNC:
			log_info("etcd: %u listed steps that etcd no longer "
			    "holds are looked for on disk",
			    root_recheck_steps(ce_rs_known, NULL));
			ce_rs_clear();
			break;
		case CEV_RANK:
			if (steptx_remote_part(v->root, v->job, v->step,
			    v->rank, v->node) != 0 && (k = ce_known(v->root,
			    v->job, v->step)) != NULL)
				ce_known_rank(k, v->rank, v->node);
			break;
		case CEV_COMMIT:
			if (steptx_remote_commit(v->root, v->job, v->step,
			    v->bytes) != 0 && (k = ce_known(v->root, v->job,
			    v->step)) != NULL) {
				k->committed = 1;
				k->bytes = v->bytes;
			}
			break;
		case CEV_DROP:
			ce_known_drop(v->root, v->job, v->step);
			root_drop_step(v->root, v->step);
			break;
		case CEV_FAILED:
		case CEV_GONE:
			log_debug("etcd: %s", v->why.msg);
			if (steptx_remote_fail(v->root, v->job, v->step,
			    &v->why) != 0 && (k = ce_known(v->root, v->job,
			    v->step)) != NULL &&
			    !k->committed && k->why.code == 0)
				k->why = v->why;
			break;
		}
		free(v);
	}
}

static void
ce_tx_new(struct steptx *tx)
{
	struct known *k, **pp;
	unsigned i;

	for (pp = &CE.known; (k = *pp) != NULL; pp = &k->next)
		if (k->step == tx->step && strcmp(k->job, tx->job) == 0 &&
		    strcmp(k->root, tx->r->path) == 0)
			break;
	if (k == NULL)
		return;
	*pp = k->next;
	CE.nknown--;
	if (now_mono_ns() - k->at_ns > CE_KNOWN_NS) {
		ce_known_free(k);
		return;
	}
	if (k->why.code != 0 && tx->err.code == 0) {
		steptx_fail(tx, &k->why);
		tx->err_remote = 1;
	}
	for (i = 0; i < k->n; i++)
		steptx_remote_part(tx->r->path, tx->job, tx->step,
		    k->ranks[i], k->nodes[i]);
	if (k->committed)
		steptx_remote_commit(tx->r->path, tx->job, tx->step, k->bytes);
	ce_known_free(k);
}

static void
ce_status(char *buf, size_t len)
{
	char waiting[1024];
	const char *state;
	int64_t lease;
	int kept;

	if (CE.c == NULL) {
		snprintf(buf, len, "etcd (stopped), node %s", CE.node);
		return;
	}
	pthread_mutex_lock(&CE.mu);
	lease = CE.lease;
	kept = etcd_lease_kept(CE.c);
	pthread_mutex_unlock(&CE.mu);
	state = kept == 0 ? "alive" : kept == CKPT_ENOTFOUND ? "lost" :
	    "etcd unreachable";
	steptx_waiting(waiting, sizeof waiting);
	snprintf(buf, len, "etcd %s, node %s, lease %" PRIx64 " (%s, ttl %u "
	    "s), waiting on other nodes: %s", etcd_endpoints(CE.c), CE.node,
	    (uint64_t)lease, state, CE.ttl, waiting[0] != '\0' ? waiting :
	    "none");
}

/*
 * Start-up: a step committed in etcd whose directory is still the tmp
 * dir (its committer died between the commit and the rename, and no
 * other node's daemon was there to finish it) is renamed now. Its step
 * metadata, the last file written, was durable before the commit.
 * The etcd coordinator runs on a POSIX filesystem every node mounts.
 */
static void
ce_recover(void)
{
	struct etcd_kvs kvs;
	ckd_err e = { 0 };
	size_t i;

	if (etcd_get(CE.c, CE_PREFIX "job/", 1, &kvs, &e) != 0) {
		log_warn("etcd: looking for unfinished commits: %s", e.msg);
		return;
	}
	for (i = 0; i < kvs.n; i++) {
		const char *k = kvs.kv[i].key, *q, *p;
		char root[CE_KEY], node[64], name[256], path[CE_KEY + 300];
		size_t kl = strlen(k);
		uint64_t bytes;
		struct stat st;
		int fd;

		if (kl < 7 || strcmp(k + kl - 7, "/commit") != 0 ||
		    (q = strstr(k, "/root/")) == NULL ||
		    (p = strstr(q + 6, "/step/")) == NULL ||
		    ce_dec(q + 6, (size_t)(p - q - 6), root, sizeof root) != 0 ||
		    sscanf(kvs.kv[i].value, "%63s %" SCNu64 " %255s", node,
		    &bytes, name) != 3 || strchr(name, '/') != NULL ||
		    name[0] == '.' || root[0] != '/')
			continue;
		snprintf(path, sizeof path, "%s/%s%s/" STORE_STEP_METADATA,
		    root, name, CKPT_TMP_SUFFIX);
		if (stat(path, &st) != 0)
			continue;       /* no tmp dir, or not complete */
		snprintf(path, sizeof path, "%s/%s", root, name);
		if (stat(path, &st) == 0 || errno != ENOENT)
			continue;
		if ((fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			continue;
		memset(&e, 0, sizeof e);
		if (store_commit_synced(&backend_posix, fd, name, &e) == 0)
			log_warn("etcd: %s/%s was committed by node %s, which "
			    "did not rename it: renamed now", root, name, node);
		else
			log_warn("etcd: finishing the commit of %s/%s: %s",
			    root, name, e.msg);
		close(fd);
	}
	etcd_kvs_free(&kvs);
}

static void ce_shutdown(void);

static const struct coord_ops coord_etcd_ops = {
	.name = "etcd",
	.tx_new = ce_tx_new,
	.agree = ce_agree,
	.begin = ce_begin,
	.part_durable = ce_part_durable,
	.gather = ce_gather,
	.decide = ce_decide,
	.failed = ce_failed,
	.forget = ce_forget,
	.step_deleted = ce_step_deleted,
	.status = ce_status,
	.shutdown = ce_shutdown,
};

static void
ce_shutdown(void)
{
	struct cev *v;
	struct known *k;
	struct ce_gc *g;
	ckd_err e;

	etcd_watch_stop(CE.w);
	CE.w = NULL;
	if (CE.c != NULL) {
		etcd_lease_unkeep(CE.c);
		/* Steps this node had not finished fail on the others now
		 * rather than after the lease's TTL. */
		if (CE.lease != 0 && etcd_lease_revoke(CE.c, CE.lease, &e) != 0)
			log_warn("etcd: revoking the lease: %s", e.msg);
		etcd_close(CE.c);
		CE.c = NULL;
	}
	if (CE.ev != NULL)
		event_free(CE.ev);
	CE.ev = NULL;
	if (CE.gc_ev != NULL)
		event_free(CE.gc_ev);
	CE.gc_ev = NULL;
	while ((g = CE.gc) != NULL) {
		/* Left to etcd's operator (or the step saved again). */
		CE.gc = g->next;
		free(g);
	}
	if (CE.efd >= 0)
		close(CE.efd);
	CE.efd = -1;
	while ((v = CE.qhead) != NULL) {
		CE.qhead = v->next;
		free(v);
	}
	CE.qtail = NULL;
	while ((k = CE.known) != NULL) {
		CE.known = k->next;
		ce_known_free(k);
	}
	CE.nknown = 0;
	ce_rs_clear();
	CE.lease = 0;
	CE.dlease = 0;  /* its decisions stay for the other nodes */
}

int
coord_etcd_init(struct event_base *base, const struct coord_conf *cf,
    const struct coord_ops **ops, ckd_err *e)
{
	int64_t lease;
	int r;

	if (cf->node == NULL || !ce_valid_node(cf->node))
		return err_set(e, CKPT_EINVAL, "--etcd needs --node NAME (1 to "
		    "63 of A-Z a-z 0-9 . _ -), got '%s'", cf->node != NULL ?
		    cf->node : "");
	snprintf(CE.node, sizeof CE.node, "%s", cf->node);
	CE.ttl = cf->lease_ttl > 0 ? cf->lease_ttl : 10;
	if ((r = etcd_open(&CE.c, cf->etcd, cf->timeout_ms > 0 ?
	    (int)cf->timeout_ms : 5000, e)) != 0)
		return r;
	if ((CE.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		r = err_errno(e, errno, "eventfd");
		goto fail;
	}
	if ((CE.ev = event_new(base, CE.efd, EV_READ | EV_PERSIST, ce_drain,
	    NULL)) == NULL || event_add(CE.ev, NULL) != 0) {
		r = err_set(e, CKPT_ENOMEM, "event_new failed");
		goto fail;
	}
	{
		struct timeval tv = { 1, 0 };

		if ((CE.gc_ev = event_new(base, -1, EV_PERSIST, ce_gc_tick,
		    NULL)) == NULL || event_add(CE.gc_ev, &tv) != 0) {
			r = err_set(e, CKPT_ENOMEM, "event_new failed");
			goto fail;
		}
	}
	if ((r = ce_lease(&lease, 0, e)) != 0) {
		r = ce_msg(e, r, "taking the node's lease");
		goto fail;
	}
	if ((CE.w = etcd_watch_start(CE.c, CE_PREFIX "job/", 1, 0, ce_on_event,
	    NULL, e)) == NULL) {
		r = ce_msg(e, e->code != 0 ? e->code : CKPT_EIO,
		    "watching the steps");
		goto fail;
	}
	ce_recover();
	log_info("coordination through etcd %s as node %s (lease %" PRIx64
	    ", ttl %u s)", etcd_endpoints(CE.c), CE.node, (uint64_t)lease,
	    CE.ttl);
	*ops = &coord_etcd_ops;
	return 0;
fail:
	ce_shutdown();
	return r;
}
