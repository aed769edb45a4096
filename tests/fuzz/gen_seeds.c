/*
 * gen_seeds.c - writes the seed corpus of the fuzz targets (committed
 * under corpus/; rerun after a format change):
 *   gen_seeds DIR    writes DIR/frame, DIR/request, DIR/save, DIR/store
 * Request seeds are packed requests (hello, open_manager with policies,
 * save, restore, wait), frame seeds the same with their length prefix;
 * save seeds are parameter strings (fuzz_save.c), among them leaves whose
 * sizes wrap around 2^64 (the class of the heap overflow); store seeds are files written
 * by the daemon's own writers (_METADATA, safetensors,
 * _CHECKPOINT_METADATA).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

/* Every store call here is on a local filesystem. */
static const struct store_backend *const be = &backend_posix;

static char outdir[4096];

static void
emit(const char *sub, const char *name, uint8_t prefix, const void *p,
    size_t n)
{
	char path[8192];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", outdir, sub);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/%s/%s", outdir, sub, name);
	if ((f = fopen(path, "wb")) == NULL || fwrite(&prefix, 1, 1, f) != 1 ||
	    (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
		fprintf(stderr, "gen_seeds: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

static void
emit_req(const char *name, uint8_t memsel, const Ckpt__Request *req)
{
	size_t n = ckpt__request__get_packed_size(req);
	uint8_t *buf = malloc(n ? n : 1);

	uint8_t *fr = malloc(4 + n);

	ckpt__request__pack(req, buf);
	emit("request", name, memsel, buf, n);
	/* The same as a frame on the stream (length prefix, big-endian). */
	fr[0] = (uint8_t)(n >> 24);
	fr[1] = (uint8_t)(n >> 16);
	fr[2] = (uint8_t)(n >> 8);
	fr[3] = (uint8_t)n;
	memcpy(fr + 4, buf, n);
	emit("frame", name, memsel, fr, 4 + n);
	free(fr);
	free(buf);
}

static void
requests(void)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Hello h = CKPT__HELLO__INIT;
	Ckpt__OpenManager om = CKPT__OPEN_MANAGER__INIT;
	Ckpt__ManagerOptions o = CKPT__MANAGER_OPTIONS__INIT;
	Ckpt__SavePolicyNode sp[3], *spp[3];
	Ckpt__PreservationNode pn[3], *pnp[3];
	uint32_t kids[2] = { 1, 2 };
	uint64_t steps[3] = { 5, 10, 15 };
	Ckpt__Save sv = CKPT__SAVE__INIT;
	Ckpt__Item it[2], *itp[2];
	Ckpt__Leaf lf[3], *lfp[3];
	Ckpt__PathElem pe[3], *pep[3];
	uint64_t shape[3][2] = { { 4, 4 }, { 16, 0 }, { 2, 3 } };
	Ckpt__Restore rs = CKPT__RESTORE__INIT;
	char *items[2] = { "params", "meta" };
	Ckpt__WaitSaves ws = CKPT__WAIT_SAVES__INIT;
	size_t i;

	req.has_id = 1;
	req.id = 1;
	h.has_version = 1;
	h.version = 1;
	h.client = "libckpt 0.1.0";
	req.op_case = CKPT__REQUEST__OP_HELLO;
	req.hello = &h;
	emit_req("hello", 0, &req);

	for (i = 0; i < 3; i++) {
		ckpt__save_policy_node__init(&sp[i]);
		ckpt__preservation_node__init(&pn[i]);
		spp[i] = &sp[i];
		pnp[i] = &pn[i];
	}
	sp[0].has_kind = 1;
	sp[0].kind = CKPT__SAVE_POLICY_NODE__KIND__ANY;
	sp[0].n_children = 2;
	sp[0].children = kids;
	sp[1].has_kind = 1;
	sp[1].kind = CKPT__SAVE_POLICY_NODE__KIND__FIXED_INTERVAL;
	sp[1].has_interval = 1;
	sp[1].interval = 10;
	sp[2].has_kind = 1;
	sp[2].kind = CKPT__SAVE_POLICY_NODE__KIND__SPECIFIC_STEPS;
	sp[2].n_steps = 3;
	sp[2].steps = steps;
	pn[0].has_kind = 1;
	pn[0].kind = CKPT__PRESERVATION_NODE__KIND__ANY;
	pn[0].n_children = 2;
	pn[0].children = kids;
	pn[1].has_kind = 1;
	pn[1].kind = CKPT__PRESERVATION_NODE__KIND__LATEST_N;
	pn[1].has_n = 1;
	pn[1].n = 3;
	pn[2].has_kind = 1;
	pn[2].kind = CKPT__PRESERVATION_NODE__KIND__BEST_N;
	pn[2].has_n = 1;
	pn[2].n = 2;
	pn[2].metric = "loss";
	o.n_save_policy = 3;
	o.save_policy = spp;
	o.n_preservation = 3;
	o.preservation = pnp;
	o.step_prefix = "ckpt";
	om.root = "/srv/run1";
	om.options = &o;
	req.op_case = CKPT__REQUEST__OP_OPEN_MANAGER;
	req.open_manager = &om;
	emit_req("open_policies", 0, &req);
	o.n_save_policy = o.n_preservation = 0;
	o.has_max_to_keep = 1;
	o.max_to_keep = 3;
	o.has_keep_period = 1;
	o.keep_period = 100;
	o.best_metric = "loss";
	o.n_save_on_steps = 3;
	o.save_on_steps = steps;
	emit_req("open_options", 0, &req);

	for (i = 0; i < 3; i++) {
		ckpt__path_elem__init(&pe[i]);
		pe[i].has_kind = 1;
		pe[i].kind = CKPT__KEY_KIND__KEY_DICT;
		pe[i].key = i == 0 ? "w" : i == 1 ? "b" : "step";
		pep[i] = &pe[i];
		ckpt__leaf__init(&lf[i]);
		lf[i].n_path = 1;
		lf[i].path = &pep[i];
		lf[i].has_kind = 1;
		lf[i].kind = CKPT__LEAF_KIND__LEAF_ARRAY;
		lf[i].has_dtype = 1;
		lf[i].dtype = i == 0 ? CKPT__DTYPE__DTYPE_F32 :
		    CKPT__DTYPE__DTYPE_U8;
		lf[i].n_shape = 2;
		lf[i].shape = shape[i];
		lf[i].has_offset = 1;
		lf[i].offset = i * 128;
		lf[i].has_nbytes = 1;
		lf[i].nbytes = store_dtype_size(lf[i].dtype) * shape[i][0] *
		    shape[i][1];
		lfp[i] = &lf[i];
	}
	lf[2].kind = CKPT__LEAF_KIND__LEAF_INT;
	lf[2].has_int_value = 1;
	lf[2].int_value = 7;
	lf[2].tag = "np.int64";
	for (i = 0; i < 2; i++) {
		ckpt__item__init(&it[i]);
		it[i].name = items[i];
		it[i].has_handler = 1;
		itp[i] = &it[i];
	}
	it[0].handler = CKPT__HANDLER__HANDLER_STANDARD;
	it[0].n_leaves = 3;
	it[0].leaves = lfp;
	it[1].handler = CKPT__HANDLER__HANDLER_JSON;
	it[1].json = "{\"epoch\": 3}";
	sv.has_manager = 1;
	sv.manager = 1;
	sv.has_step = 1;
	sv.step = 10;
	sv.n_items = 2;
	sv.items = itp;
	sv.has_composite = 1;
	sv.composite = 1;
	sv.metrics_json = "{\"loss\": 0.5}";
	req.op_case = CKPT__REQUEST__OP_SAVE;
	req.save = &sv;
	emit_req("save", 2, &req);
	lf[1].offset = 32;      /* overlaps w */
	emit_req("save_overlap", 2, &req);

	rs.has_manager = 1;
	rs.manager = 1;
	rs.has_step = 1;
	rs.step = 10;
	rs.n_items = 2;
	rs.items = items;
	req.op_case = CKPT__REQUEST__OP_RESTORE;
	req.restore = &rs;
	emit_req("restore", 0, &req);
	ws.has_manager = 1;
	ws.manager = 1;
	ws.has_timeout_ms = 1;
	ws.timeout_ms = 1000;
	req.op_case = CKPT__REQUEST__OP_WAIT_SAVES;
	req.wait_saves = &ws;
	emit_req("wait_saves", 0, &req);
}

static void
saves(void)
{
	/* The heap overflow's class: overlapping leaves at offset 0 whose
	 * sizes add up to 2^64. memsize 2^63, two U8 [2^63] leaves. */
	static const uint8_t wrap2[] = {
		0, 0, 2, 0, 1, 0, 2, 1, 22, 0, 0, 0,
	};
	/* memsize 2^62, 4096 U8 [2^46, 64] leaves at offset 0. */
	static const uint8_t wrap4096[] = {
		0, 0, 7, 0, 1, 0, 2, 2, 19, 10, 0, 0, 0,
	};
	/* memsize 4096; 2 items, 3 leaves, two templates F32 [4,4] and
	 * U8 [16] with stride 64. */
	static const uint8_t small[] = {
		0, 1, 3, 1, 1, 0, 10, 2, 4, 4, 0, 10, 1, 0, 2, 1, 8, 10, 10, 1,
		3, 0, 3, 0, 0, 0, 0, 0,
	};
	/* memsize 4096; 3 leaves of 2048 at offset 0: sum past the memfd. */
	static const uint8_t sum[] = {
		0, 0, 3, 0, 1, 0, 2, 1, 255, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0,
	};

	emit("save", "wrap2", 22, wrap2, sizeof wrap2);
	emit("save", "wrap4096", 21, wrap4096, sizeof wrap4096);
	emit("save", "small", 12, small, sizeof small);
	emit("save", "sum_past_memfd", 12, sum, sizeof sum);
}

static uint8_t *
slurp(int dirfd, const char *name, size_t *n)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *buf;

	if (fd < 0 || fstat(fd, &st) != 0 ||
	    (buf = malloc((size_t)st.st_size + 1)) == NULL ||
	    read(fd, buf, (size_t)st.st_size) != st.st_size) {
		fprintf(stderr, "gen_seeds: reading %s\n", name);
		exit(1);
	}
	close(fd);
	*n = (size_t)st.st_size;
	return buf;
}

static void
stores(void)
{
	const char *tmp = getenv("TMPDIR");
	char dir[4096];
	float w[16];
	uint64_t shape[2] = { 4, 4 };
	struct store_tensor t = { "w", CKPT__DTYPE__DTYPE_F32, 2, shape, w,
	    sizeof w, 0, 0 };
	Ckpt__Item it = CKPT__ITEM__INIT;
	Ckpt__Leaf lf = CKPT__LEAF__INIT, *lfp = &lf;
	Ckpt__PathElem pe = CKPT__PATH_ELEM__INIT, *pep = &pe;
	struct store_step_meta m;
	char *names[1] = { "default" };
	Ckpt__Handler hs[1] = { CKPT__HANDLER__HANDLER_STANDARD };
	uint8_t *buf, *st;
	size_t n, nst, i;
	ckd_err e;
	int dfd;

	for (i = 0; i < 16; i++)
		w[i] = (float)i;
	snprintf(dir, sizeof dir, "%s/ckpt-gen-seeds.XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL ||
	    (dfd = open(dir, O_RDONLY | O_DIRECTORY)) < 0)
		exit(1);
	if (store_write_safetensors(be, dfd, "data-00000.safetensors", 0600, &t,
	    1, &e) != 0) {
		fprintf(stderr, "gen_seeds: %s\n", e.msg);
		exit(1);
	}
	pe.has_kind = 1;
	pe.kind = CKPT__KEY_KIND__KEY_DICT;
	pe.key = "w";
	lf.n_path = 1;
	lf.path = &pep;
	lf.has_kind = 1;
	lf.kind = CKPT__LEAF_KIND__LEAF_ARRAY;
	lf.has_dtype = 1;
	lf.dtype = CKPT__DTYPE__DTYPE_F32;
	lf.n_shape = 2;
	lf.shape = shape;
	lf.has_nbytes = 1;
	lf.nbytes = sizeof w;
	lf.file = "data-00000.safetensors";
	lf.tensor = "w";
	lf.has_xxh3 = 1;
	lf.xxh3 = t.xxh3;
	it.name = "default";
	it.n_leaves = 1;
	it.leaves = &lfp;
	if (store_write_tree_metadata(be, dfd, &it, 0600, &e) != 0) {
		fprintf(stderr, "gen_seeds: %s\n", e.msg);
		exit(1);
	}
	memset(&m, 0, sizeof m);
	m.init_ns = 1700000000000000000;
	m.commit_ns = 1700000000500000000;
	m.metrics_json = "{\"loss\": 0.25}";
	m.nitems = 1;
	m.item_names = names;
	m.handlers = hs;
	m.bytes = sizeof w;
	if (store_write_step_meta(be, dfd, &m, 0600, &e) != 0) {
		fprintf(stderr, "gen_seeds: %s\n", e.msg);
		exit(1);
	}
	buf = slurp(dfd, STORE_TREE_METADATA, &n);
	emit("store", "tree_metadata", 0, buf, n);
	st = slurp(dfd, "data-00000.safetensors", &nst);
	/* Mode 3: _METADATA whose file is the same bytes: not a valid
	 * pairing, but a start for the fuzzer. */
	emit("store", "tree_metadata_files", 3, buf, n);
	free(buf);
	buf = slurp(dfd, STORE_STEP_METADATA, &n);
	emit("store", "step_metadata", 1, buf, n);
	free(buf);
	/* Mode 2: the writer's own file, with the dtype and shape bytes
	 * fuzz_store reads in front. */
	buf = malloc(nst + 3);
	buf[0] = 9;             /* 1 + 9 % 15 = 10 = F32, two dimensions */
	buf[1] = 4;
	buf[2] = 4;
	memcpy(buf + 3, st, nst);
	emit("store", "safetensors", 2, buf, nst + 3);
	free(buf);
	free(st);
	unlinkat(dfd, "data-00000.safetensors", 0);
	unlinkat(dfd, STORE_TREE_METADATA, 0);
	unlinkat(dfd, STORE_STEP_METADATA, 0);
	close(dfd);
	rmdir(dir);
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_seeds DIR\n");
		return 2;
	}
	snprintf(outdir, sizeof outdir, "%s", argv[1]);
	mkdir(outdir, 0755);
	requests();
	saves();
	stores();
	return 0;
}
