/*
 * bench_dist.c - a distributed step on one node: N ranks (threads, each
 * with its own connection and manager, speaking the wire as a rank's
 * client would) save their piece of one global float32 array together.
 *
 *     bench_dist SOCKET ROOT [MIB_PER_RANK=256] [RANKS=4] [RUNS=3]
 *
 * Per run it prints JSON lines {"case", "run", "value", "unit"}:
 *   dist_blocking     per rank: Save sent until SaveReply{saved} (the
 *                     rank may go on training), the median over ranks
 *   dist_memcpy       memcpy of one rank's part (prefaulted), right before
 *   dist_commit       first Save sent until the last rank's SaveDone: the
 *                     step is durable and listed, once
 * Compare dist_commit with `dd if=/dev/zero bs=8M oflag=direct
 * conv=fsync` of RANKS x MIB_PER_RANK on the same filesystem.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.pb-c.h"
#include "raw.h"

#define COLS 1024

static const char *sock_path, *root;
static unsigned nranks;
static uint64_t part_bytes;
static pthread_barrier_t start;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_dist: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The wire through raw.h; a commit of several GiB on a slow disk may take
 * minutes, so a reply is awaited up to 10 minutes. */
#define WAIT_MS (10 * 60 * 1000)

static void send_req(int fd, Ckpt__Request *req, uint64_t id, int memfd)
{
	req->has_id = 1;
	req->id = id;
	if (raw_send_req(fd, req, memfd >= 0 ? &memfd : NULL,
	    memfd >= 0 ? 1 : 0) != 0)
		die("sendmsg");
}

/* The next frame, a reply or an event. */
static Ckpt__Response *recv_resp(int fd)
{
	Ckpt__Response *resp = raw_next(fd, WAIT_MS);

	if (resp == NULL)
		die("no response");
	return resp;
}

struct rank {
	pthread_t th;
	unsigned r;
	int fd, memfd;
	uint64_t mgr;
	char *src, *dst;        /* memcpy baseline */
	double t0, blocking, done, memcpy_s;
	uint64_t step;
};

static void rank_open(struct rank *k)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__OpenManager om = CKPT__OPEN_MANAGER__INIT;
	Ckpt__ManagerOptions o = CKPT__MANAGER_OPTIONS__INIT;
	Ckpt__Response *resp;
	uint64_t i;

	if ((k->fd = raw_greeted(sock_path)) < 0)
		die("connect");
	o.has_process_index = 1;
	o.process_index = k->r;
	o.has_process_count = 1;
	o.process_count = nranks;
	o.job = "bench";
	o.has_max_to_keep = 1;
	o.max_to_keep = 1;
	om.root = (char *)root;
	om.options = &o;
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = &om;
	send_req(k->fd, &req, 2, -1);
	resp = recv_resp(k->fd);
	if (resp->code != 0 || resp->body_case !=
	    CKPT__RESPONSE__BODY_OPEN_MANAGER) {
		fprintf(stderr, "bench_dist: open: %s\n", resp->message);
		exit(1);
	}
	k->mgr = resp->open_manager->manager;
	ckpt__response__free_unpacked(resp, NULL);
	k->memfd = memfd_create("bench-part", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (k->memfd < 0 || ftruncate(k->memfd, (off_t)part_bytes) != 0)
		die("memfd");
	k->src = mmap(NULL, part_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
	    k->memfd, 0);
	k->dst = malloc(part_bytes);
	if (k->src == MAP_FAILED || k->dst == NULL)
		die("mmap");
	for (i = 0; i < part_bytes / 8; i++)
		((uint64_t *)k->src)[i] = i * 0x9e3779b97f4a7c15ull + k->r;
	memset(k->dst, 1, part_bytes);
	if (fcntl(k->memfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
		die("seal");
}

static void *rank_save(void *arg)
{
	struct rank *k = arg;
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Save sv = CKPT__SAVE__INIT;
	Ckpt__Item item = CKPT__ITEM__INIT, *items[1] = { &item };
	Ckpt__Leaf l = CKPT__LEAF__INIT, *leaves[1] = { &l };
	Ckpt__PathElem pe = CKPT__PATH_ELEM__INIT, *pes[1] = { &pe };
	uint64_t rows = part_bytes / (COLS * 4);
	uint64_t shape[2] = { rows, COLS }, g[2] = { rows * nranks, COLS };
	uint64_t offs[2] = { rows * k->r, 0 };
	Ckpt__Response *resp;
	double t;

	t = now_s();
	memcpy(k->dst, k->src, part_bytes);
	k->memcpy_s = now_s() - t;
	pe.has_kind = 1;
	pe.kind = CKPT__KEY_KIND__KEY_DICT;
	pe.key = "w";
	l.n_path = 1;
	l.path = pes;
	l.has_kind = 1;
	l.kind = CKPT__LEAF_KIND__LEAF_ARRAY;
	l.has_dtype = 1;
	l.dtype = CKPT__DTYPE__DTYPE_F32;
	l.n_shape = 2;
	l.shape = shape;
	l.n_global_shape = 2;
	l.global_shape = g;
	l.n_piece_offsets = 2;
	l.piece_offsets = offs;
	l.has_offset = 1;
	l.has_nbytes = 1;
	l.nbytes = part_bytes;
	item.name = "default";
	item.has_handler = 1;
	item.handler = CKPT__HANDLER__HANDLER_STANDARD;
	item.n_leaves = 1;
	item.leaves = leaves;
	sv.has_manager = 1;
	sv.manager = k->mgr;
	sv.has_step = 1;
	sv.step = k->step;
	sv.has_force = 1;
	sv.force = 1;
	sv.n_items = 1;
	sv.items = items;
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &sv;
	pthread_barrier_wait(&start);
	k->t0 = now_s();
	send_req(k->fd, &req, 10 + k->step, k->memfd);
	for (;;) {
		resp = recv_resp(k->fd);
		if (resp->id != 0) {
			if (resp->code != 0 || !resp->save->saved) {
				fprintf(stderr, "bench_dist: save: %s\n",
				    resp->message ? resp->message : "skipped");
				exit(1);
			}
			k->blocking = now_s() - k->t0;
		} else if (resp->body_case ==
		    CKPT__RESPONSE__BODY_SAVE_DONE) {
			if (resp->save_done->code != 0) {
				fprintf(stderr, "bench_dist: step: %s\n",
				    resp->save_done->message);
				exit(1);
			}
			k->done = now_s();
			ckpt__response__free_unpacked(resp, NULL);
			return NULL;
		}
		ckpt__response__free_unpacked(resp, NULL);
	}
}

static int dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	unsigned runs, run, i;
	struct rank *k;
	double *v;

	if (argc < 3) {
		fprintf(stderr, "usage: bench_dist SOCKET ROOT [MIB_PER_RANK] "
		    "[RANKS] [RUNS]\n");
		return 2;
	}
	sock_path = argv[1];
	root = argv[2];
	part_bytes = (argc > 3 ? strtoull(argv[3], NULL, 10) : 256) << 20;
	nranks = argc > 4 ? (unsigned)atoi(argv[4]) : 4;
	runs = argc > 5 ? (unsigned)atoi(argv[5]) : 3;
	if (nranks == 0 || part_bytes == 0 || part_bytes % (COLS * 4) != 0)
		return 2;
	k = calloc(nranks, sizeof *k);
	v = calloc(nranks, sizeof *v);
	pthread_barrier_init(&start, NULL, nranks);
	for (i = 0; i < nranks; i++) {
		k[i].r = i;
		rank_open(&k[i]);
	}
	for (run = 0; run <= runs; run++) {      /* run 0: warm-up */
		double t0 = 1e300, t1 = 0, mc = 0;

		for (i = 0; i < nranks; i++) {
			k[i].step = run;
			pthread_create(&k[i].th, NULL, rank_save, &k[i]);
		}
		for (i = 0; i < nranks; i++) {
			pthread_join(k[i].th, NULL);
			v[i] = k[i].blocking;
			t0 = k[i].t0 < t0 ? k[i].t0 : t0;
			t1 = k[i].done > t1 ? k[i].done : t1;
			mc += k[i].memcpy_s / nranks;
		}
		if (run == 0)
			continue;
		qsort(v, nranks, sizeof *v, dcmp);
		printf("{\"case\": \"dist_blocking\", \"run\": %u, \"value\": "
		    "%.6f, \"unit\": \"s\"}\n", run, v[nranks / 2]);
		printf("{\"case\": \"dist_memcpy\", \"run\": %u, \"value\": "
		    "%.6f, \"unit\": \"s\"}\n", run, mc);
		printf("{\"case\": \"dist_commit\", \"run\": %u, \"value\": "
		    "%.6f, \"unit\": \"s\", \"bytes\": %llu}\n", run, t1 - t0,
		    (unsigned long long)(part_bytes * nranks));
		fflush(stdout);
	}
	return 0;
}
