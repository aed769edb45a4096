/*
 * nodes.c - ckptd on several nodes of a test bed (nodes.h).
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nodes.h"

struct nodes_arg {
	struct nodes *s;
	int i;
};

static struct nodes_arg args[NODES_MAX_RANKS];

void
nodes_init(struct nodes *s, int nnodes, int nmembers, int nranks,
    unsigned ttl_s, unsigned timeout_ms)
{
	int i;

	memset(s, 0, sizeof *s);
	if (geteuid() != 0)
		bail_out("needs root (network namespaces)");
	if (nnodes > NODES_MAX || nranks > NODES_MAX_RANKS)
		bail_out("too many nodes or ranks");
	s->n = nnodes;
	s->nranks = nranks;
	s->job = "multi/node job";
	for (i = 0; i < nranks; i++)
		s->rank_node[i] = i * nnodes / nranks;
	snprintf(s->ttl, sizeof s->ttl, "%u", ttl_s);
	snprintf(s->timeout, sizeof s->timeout, "%u", timeout_ms);
	if (bed_init(&s->b, nnodes) != 0 ||
	    bed_etcd_start(&s->b, nmembers) != 0) {
		bed_fini(&s->b);
		bail_out("cannot make the test bed");
	}
	for (i = 0; i < nnodes; i++) {
		snprintf(s->name[i], sizeof s->name[i], "n%d", i);
		hx_init(&s->d[i]);
		s->d[i].extra[0] = "--etcd";
		s->d[i].extra[1] = s->b.endpoints;
		s->d[i].extra[2] = "--node";
		s->d[i].extra[3] = s->name[i];
		s->d[i].extra[4] = "--etcd-lease-ttl";
		s->d[i].extra[5] = s->ttl;
		s->d[i].extra[6] = "--etcd-timeout";
		s->d[i].extra[7] = s->timeout;
		if (nodes_start(s, i, 0) != 0) {
			hx_dump_log(&s->d[i], 40);
			bed_fini(&s->b);
			bail_out("ckptd of node %d did not start", i);
		}
	}
	hx_path(&s->d[0], s->root, "shared-root");
	hx_mkdirs(s->root);
}

int
nodes_start(struct nodes *s, int node, int restart)
{
	int r;

	if (bed_enter(&s->b, node) != 0)
		return -1;
	r = restart ? hx_restart(&s->d[node]) : hx_start(&s->d[node]);
	if (bed_enter(&s->b, -1) != 0)
		return -1;
	return r;
}

static void *
nodes_rank(void *arg)
{
	struct nodes_arg *a = arg;
	struct nodes *s = a->s;
	struct rank *k = &s->k[a->i];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_options *o = ckpt_options_new();
	ckpt_tree *t = ckpt_tree_new();

	k->save_rc = k->wait_rc = CKPT_EINTERNAL;
	ckpt_options_set_process_index(o, (uint32_t)k->index);
	ckpt_options_set_process_count(o, (uint32_t)s->nranks);
	ckpt_options_set_job(o, s->job);
	if (s->async_timeout > 0)
		ckpt_options_set_async_timeout(o, s->async_timeout);
	if (s->max_to_keep > 0)
		ckpt_options_set_max_to_keep(o, s->max_to_keep);
	if (hx_connect(&s->d[s->rank_node[k->index]], &c) != 0 ||
	    ckpt_manager_open(c, s->root, o, &m) != 0) {
		snprintf(k->msg, sizeof k->msg, "open: %s", c != NULL ?
		    ckpt_client_errmsg(c) : "connect");
		goto out;
	}
	ranks_add_pieces(t, k->index, s->nranks);
	ranks_add_replicated(t, k->step);
	k->save_rc = ranks_save(m, k->step, t);
	if (k->save_rc != 0) {
		snprintf(k->msg, sizeof k->msg, "%s", ckpt_manager_errmsg(m));
		goto out;
	}
	k->wait_rc = ckpt_wait_until_finished(m);
	snprintf(k->msg, sizeof k->msg, "%s", ckpt_manager_errmsg(m));
out:
	ckpt_options_free(o);
	ckpt_tree_free(t);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return NULL;
}

void
nodes_save(struct nodes *s, int first, int last, uint64_t step)
{
	int i;

	for (i = first; i < last; i++) {
		memset(&s->k[i], 0, sizeof s->k[i]);
		s->k[i].index = i;
		s->k[i].step = step;
		args[i].s = s;
		args[i].i = i;
		pthread_create(&s->th[i], NULL, nodes_rank, &args[i]);
	}
}

void
nodes_join(struct nodes *s, int first, int last)
{
	int i;

	for (i = first; i < last; i++)
		pthread_join(s->th[i], NULL);
}

int
nodes_step(struct nodes *s, uint64_t step)
{
	char what[32];

	nodes_save(s, 0, s->nranks, step);
	nodes_join(s, 0, s->nranks);
	snprintf(what, sizeof what, "step %" PRIu64, step);
	return ranks_all_ok(s->k, s->nranks, what);
}

int
nodes_rc(const struct nodes *s, int i)
{
	return s->k[i].save_rc != 0 ? s->k[i].save_rc : s->k[i].wait_rc;
}

int
nodes_listed(struct nodes *s, int node, uint64_t step)
{
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	uint64_t *v = NULL;
	size_t n = 0, i;
	int found = -1;

	if (hx_connect(&s->d[node], &c) != 0 ||
	    ckpt_manager_open(c, s->root, NULL, &m) != 0 ||
	    ckpt_all_steps(m, &v, &n) != 0)
		goto out;
	for (found = 0, i = 0; i < n; i++)
		found |= v[i] == step;
	free(v);
out:
	ckpt_manager_close(m);
	ckpt_disconnect(c);
	return found;
}

int
nodes_step_dir(struct nodes *s, uint64_t step)
{
	char path[HX_PATH + 32];

	snprintf(path, sizeof path, "%s/%" PRIu64, s->root, step);
	return hx_exists(path);
}

int
nodes_leftovers(struct nodes *s)
{
	DIR *dir = opendir(s->root);
	struct dirent *de;
	int n = 0;

	if (dir == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL)
		if (strchr(de->d_name, '.') != NULL && strcmp(de->d_name, ".") &&
		    strcmp(de->d_name, "..")) {
			diag("left in the root: %s", de->d_name);
			n++;
		}
	closedir(dir);
	return n;
}

void
nodes_coordination(struct nodes *s, int node, const char *want,
    int timeout_ms, char *buf, size_t len)
{
	ckpt_client *c = NULL;
	int64_t end = hx_now_ms() + timeout_ms;

	buf[0] = '\0';
	if (hx_connect(&s->d[node], &c) != 0)
		return;
	while (ckpt_status_coordination(c, buf, len) == 0 &&
	    strstr(buf, want) == NULL && hx_now_ms() < end)
		hx_sleep_ms(20);
	ckpt_disconnect(c);
}

void
nodes_fini(struct nodes *s)
{
	int i;

	for (i = 0; i < s->n; i++) {
		ok(hx_alive(&s->d[i]), "node %d's ckptd still running", i);
		is_int(hx_stop(&s->d[i]), 0, "node %d's ckptd exits cleanly", i);
	}
	for (i = 0; i < s->n; i++) {
		if (tap_failures() > 0)
			hx_dump_log(&s->d[i], 40);
		hx_cleanup(&s->d[i]);
	}
	bed_fini(&s->b);
}
