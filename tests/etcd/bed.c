/*
 * bed.c - network namespaces and etcd members for multi-node tests
 * (bed.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bed.h"
#include "etcd.h"

static int bed_home_fd = -1;    /* the namespace the test started in */

static void
bed_msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "# bed: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

static void
bed_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Run a command given as one line of words (no shell); 0 if it exits 0. */
static int
bed_run(const char *fmt, ...)
{
	char line[1024], *argv[64], *save = NULL, *w;
	int n = 0, status;
	va_list ap;
	pid_t pid;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	for (w = strtok_r(line, " ", &save); w != NULL && n < 63;
	    w = strtok_r(NULL, " ", &save))
		argv[n++] = w;
	argv[n] = NULL;
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0)
			dup2(devnull, 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		return -1;
	return 0;
}

static void
bed_ns_name(struct bed *b, int node, char *buf, size_t len)
{
	if (node < 0)
		snprintf(buf, len, "%sh", b->tag);
	else
		snprintf(buf, len, "%sn%d", b->tag, node);
}

void
bed_url(int node, char *buf, size_t len)
{
	snprintf(buf, len, "http://10.66.0.%d:2379", node + 1);
}

static int
bed_ns_fd(struct bed *b, int node)
{
	char name[64], path[128];

	bed_ns_name(b, node, name, sizeof(name));
	snprintf(path, sizeof(path), "/run/netns/%s", name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* Remove the namespaces of beds whose test process is gone (killed by a
 * timeout before bed_fini): ckb<pid>h and ckb<pid>n<i>. */
static void
bed_sweep(void)
{
	DIR *d = opendir("/run/netns");
	struct dirent *de;
	char *end;
	long pid;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "ckb", 3) != 0)
			continue;
		pid = strtol(de->d_name + 3, &end, 10);
		if (end == de->d_name + 3 || (*end != 'h' && *end != 'n') ||
		    pid <= 0 || pid == (long)getpid())
			continue;
		if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
			bed_msg("removing %s, left by a test that is gone",
			    de->d_name);
			bed_run("ip netns del %s", de->d_name);
		}
	}
	closedir(d);
}

int
bed_init(struct bed *b, int nnodes)
{
	const char *tmp = getenv("TMPDIR");
	char hub[64], ns[64];
	int i;

	memset(b, 0, sizeof(*b));
	if (geteuid() != 0) {
		bed_msg("needs root (ip netns)");
		return -1;
	}
	if (nnodes < 1 || nnodes > BED_MAX_NODES)
		return -1;
	bed_sweep();
	if (bed_home_fd < 0)
		bed_home_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	snprintf(b->tag, sizeof(b->tag), "ckb%d", (int)getpid());
	snprintf(b->dir, sizeof(b->dir), "%s/ckpt-bed.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(b->dir) == NULL) {
		bed_msg("mkdtemp %s: %s", b->dir, strerror(errno));
		b->dir[0] = '\0';
		return -1;
	}
	b->nnodes = nnodes;
	bed_ns_name(b, -1, hub, sizeof(hub));
	if (bed_run("ip netns add %s", hub) != 0 ||
	    bed_run("ip -n %s link set lo up", hub) != 0 ||
	    bed_run("ip -n %s link add br0 type bridge", hub) != 0 ||
	    bed_run("ip -n %s link set br0 up", hub) != 0) {
		bed_msg("cannot make the hub namespace %s", hub);
		goto fail;
	}
	for (i = 0; i < nnodes; i++) {
		bed_ns_name(b, i, ns, sizeof(ns));
		if (bed_run("ip netns add %s", ns) != 0 ||
		    bed_run("ip -n %s link set lo up", ns) != 0 ||
		    bed_run("ip -n %s link add v%d type veth peer name eth0 "
		    "netns %s", hub, i, ns) != 0 ||
		    bed_run("ip -n %s link set v%d master br0", hub, i) != 0 ||
		    bed_run("ip -n %s link set v%d up", hub, i) != 0 ||
		    bed_run("ip -n %s addr add 10.66.0.%d/24 dev eth0", ns,
		    i + 1) != 0 ||
		    bed_run("ip -n %s link set eth0 up", ns) != 0) {
			bed_msg("cannot make node namespace %s", ns);
			goto fail;
		}
	}
	return 0;
fail:
	bed_fini(b);
	return -1;
}

int
bed_enter(struct bed *b, int node)
{
	int fd = node < 0 ? bed_home_fd : bed_ns_fd(b, node), r;

	if (fd < 0) {
		bed_msg("namespace of node %d: %s", node, strerror(errno));
		return -1;
	}
	r = setns(fd, CLONE_NEWNET);
	if (r != 0)
		bed_msg("setns node %d: %s", node, strerror(errno));
	if (node >= 0)
		close(fd);
	return r;
}

int
bed_link(struct bed *b, int node, int up)
{
	char hub[64];

	bed_ns_name(b, -1, hub, sizeof(hub));
	return bed_run("ip -n %s link set v%d %s", hub, node, up ? "up" : "down");
}

static pid_t
bed_spawn_member(struct bed *b, int i)
{
	char name[16], log[300], data[300], url[64], peer[64];
	char cluster[400] = "", token[64];
	int j, fd;
	pid_t pid;

	snprintf(name, sizeof(name), "m%d", i);
	snprintf(log, sizeof(log), "%s/m%d.log", b->dir, i);
	snprintf(data, sizeof(data), "%s/m%d", b->dir, i);
	snprintf(url, sizeof(url), "http://10.66.0.%d:2379", i + 1);
	snprintf(peer, sizeof(peer), "http://10.66.0.%d:2380", i + 1);
	snprintf(token, sizeof(token), "%s", b->tag);
	for (j = 0; j < b->nmembers; j++) {
		size_t n = strlen(cluster);
		snprintf(cluster + n, sizeof(cluster) - n, "%sm%d=http://10.66.0.%d:2380",
		    j ? "," : "", j, j + 1);
	}
	if ((fd = bed_ns_fd(b, i)) < 0)
		return -1;
	if ((pid = fork()) < 0) {
		close(fd);
		return -1;
	}
	if (pid == 0) {
		const char *bin = getenv("ETCD_BIN");
		int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (setns(fd, CLONE_NEWNET) != 0 || out < 0)
			_exit(126);
		dup2(out, 1);
		dup2(out, 2);
		execlp(bin != NULL ? bin : "etcd", "etcd",
		    "--name", name, "--data-dir", data,
		    "--listen-client-urls", url, "--advertise-client-urls", url,
		    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		    "--initial-cluster", cluster, "--initial-cluster-state", "new",
		    "--initial-cluster-token", token,
		    "--heartbeat-interval", "50", "--election-timeout", "500",
		    /* as etcd >= 3.5 by default: a member back from a
		     * partition does not depose the leader */
		    "--pre-vote",
		    "--logger", "zap", "--log-level", "warn",
		    (char *)NULL);
		_exit(127);
	}
	close(fd);
	return pid;
}

/* One member's view (its id and its leader), asked from its namespace. */
static int
bed_member_status(struct bed *b, int i, uint64_t *id, uint64_t *leader)
{
	char url[64];
	struct etcd *c = NULL;
	ckd_err e;
	int here, r = -1;

	if ((here = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	if (bed_enter(b, b->m[i].node) != 0)
		goto out;
	bed_url(b->m[i].node, url, sizeof(url));
	if (etcd_open(&c, url, 500, &e) == 0 &&
	    etcd_status(c, id, leader, &e) == 0)
		r = 0;
	etcd_close(c);
	if (setns(here, CLONE_NEWNET) != 0)
		r = -1;
out:
	close(here);
	return r;
}

int
bed_leader(struct bed *b, int timeout_ms)
{
	int waited, i, j;

	for (waited = 0; waited <= timeout_ms; waited += 100) {
		for (i = 0; i < b->nmembers; i++) {
			uint64_t id, leader;

			if (b->m[i].pid == 0 ||
			    bed_member_status(b, i, &id, &leader) != 0)
				continue;
			b->m[i].id = id;
			if (leader == 0)
				continue;
			for (j = 0; j < b->nmembers; j++)
				if (b->m[j].pid != 0 && b->m[j].id == leader)
					return j;
		}
		bed_sleep_ms(100);
	}
	return -1;
}

int
bed_etcd_start(struct bed *b, int nmembers)
{
	int i, n;
	size_t len;

	if (nmembers < 1 || nmembers > BED_MAX_MEMBERS || nmembers > b->nnodes)
		return -1;
	b->nmembers = nmembers;
	b->endpoints[0] = '\0';
	for (i = 0; i < nmembers; i++) {
		b->m[i].node = i;
		if ((b->m[i].pid = bed_spawn_member(b, i)) < 0) {
			b->m[i].pid = 0;
			bed_msg("cannot start etcd member %d", i);
			return -1;
		}
		len = strlen(b->endpoints);
		snprintf(b->endpoints + len, sizeof(b->endpoints) - len,
		    "%shttp://10.66.0.%d:2379", i ? "," : "", i + 1);
	}
	/* Every member has answered (its id) and they agree on a leader. */
	for (n = 0; n < 200; n++) {
		uint64_t id, leader, first = 0;
		int agree = 0;

		for (i = 0; i < nmembers; i++) {
			if (bed_member_status(b, i, &id, &leader) != 0 || leader == 0)
				continue;
			b->m[i].id = id;
			if (first == 0)
				first = leader;
			agree += leader == first;
		}
		if (agree == nmembers)
			return 0;
		for (i = 0; i < nmembers; i++) {
			int status;
			if (waitpid(b->m[i].pid, &status, WNOHANG) == b->m[i].pid) {
				b->m[i].pid = 0;
				bed_msg("etcd member %d exited (see %s/m%d.log)",
				    i, b->dir, i);
				return -1;
			}
		}
		bed_sleep_ms(100);
	}
	bed_msg("etcd has no leader after 20 s (logs in %s)", b->dir);
	return -1;
}

int
bed_kill(struct bed *b, int i)
{
	if (i < 0 || i >= b->nmembers || b->m[i].pid == 0)
		return -1;
	kill(b->m[i].pid, SIGKILL);
	waitpid(b->m[i].pid, NULL, 0);
	b->m[i].pid = 0;
	return 0;
}

int
bed_revive(struct bed *b, int i)
{
	if (i < 0 || i >= b->nmembers || b->m[i].pid != 0)
		return -1;
	if ((b->m[i].pid = bed_spawn_member(b, i)) < 0) {
		b->m[i].pid = 0;
		bed_msg("cannot start etcd member %d again", i);
		return -1;
	}
	return 0;
}

struct bed_watch {
	struct etcd *c;
	struct etcd_watch *w;
	bed_event_fn fn;
	void *arg;
};

static void
bed_on_event(void *arg, const struct etcd_event *ev)
{
	struct bed_watch *bw = arg;

	if (ev->type == ETCD_EVENT_PUT || ev->type == ETCD_EVENT_DELETE)
		bw->fn(bw->arg, ev->type == ETCD_EVENT_PUT, ev->key);
}

struct bed_watch *
bed_watch(struct bed *b, int node, const char *prefix, bed_event_fn fn,
    void *arg)
{
	struct bed_watch *bw = calloc(1, sizeof(*bw));
	ckd_err e = { 0 };

	if (bw == NULL)
		return NULL;
	bw->fn = fn;
	bw->arg = arg;
	if (bed_enter(b, node) != 0)
		goto fail;
	if (etcd_open(&bw->c, b->endpoints, 2000, &e) != 0 ||
	    (bw->w = etcd_watch_start(bw->c, prefix, 1, 0, bed_on_event, bw,
	    &e)) == NULL) {
		bed_msg("watch %s: %s", prefix, e.msg);
		bed_enter(b, -1);
		goto fail;
	}
	if (bed_enter(b, -1) != 0) {
		bed_unwatch(bw);
		return NULL;
	}
	return bw;
fail:
	etcd_close(bw->c);
	free(bw);
	return NULL;
}

void
bed_unwatch(struct bed_watch *bw)
{
	if (bw == NULL)
		return;
	etcd_watch_stop(bw->w);
	etcd_close(bw->c);
	free(bw);
}

int
bed_keys(struct bed *b, int node, const char *prefix, bed_key_fn fn,
    void *arg)
{
	struct etcd *c = NULL;
	struct etcd_kvs kvs;
	ckd_err e = { 0 };
	size_t i;
	int r = -1;

	if (bed_enter(b, node) != 0)
		return -1;
	if (etcd_open(&c, b->endpoints, 5000, &e) != 0 ||
	    etcd_get(c, prefix, 1, &kvs, &e) != 0) {
		bed_msg("range %s: %s", prefix, e.msg);
	} else {
		for (i = 0; i < kvs.n; i++)
			fn(arg, kvs.kv[i].key);
		r = (int)kvs.n;
		etcd_kvs_free(&kvs);
	}
	etcd_close(c);
	if (bed_enter(b, -1) != 0)
		return -1;
	return r;
}

int64_t
bed_compact(struct bed *b, int node)
{
	struct etcd *c = NULL;
	struct etcd_kvs kvs;
	ckd_err e = { 0 };
	int64_t rev = -1;

	if (bed_enter(b, node) != 0)
		return -1;
	if (etcd_open(&c, b->endpoints, 5000, &e) != 0 ||
	    etcd_get(c, "/", 1, &kvs, &e) != 0) {
		bed_msg("range /: %s", e.msg);
	} else {
		if (etcd_compact(c, kvs.revision, &e) == 0)
			rev = kvs.revision;
		else
			bed_msg("compaction at %lld: %s",
			    (long long)kvs.revision, e.msg);
		etcd_kvs_free(&kvs);
	}
	etcd_close(c);
	if (bed_enter(b, -1) != 0)
		return -1;
	return rev;
}

void
bed_fini(struct bed *b)
{
	char ns[64];
	int i;

	for (i = 0; i < b->nmembers; i++)
		bed_kill(b, i);
	for (i = 0; i < b->nnodes; i++) {
		bed_ns_name(b, i, ns, sizeof(ns));
		bed_run("ip netns del %s", ns);
	}
	if (b->tag[0] != '\0') {
		bed_ns_name(b, -1, ns, sizeof(ns));
		bed_run("ip netns del %s", ns);
	}
	if (b->dir[0] != '\0' && getenv("BED_KEEP") == NULL)
		bed_run("rm -rf %s", b->dir);
	b->nnodes = b->nmembers = 0;
}
