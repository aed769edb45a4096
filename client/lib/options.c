/*
 * options.c - ckpt_options: CheckpointManagerOptions with Orbax's
 * validation, carried as a Ckpt__ManagerOptions to the daemon.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"

CKPT_API ckpt_options *
ckpt_options_new(void)
{
	ckpt_options *o = calloc(1, sizeof *o);

	if (o == NULL)
		return NULL;
	ckpt__manager_options__init(&o->pb);
	o->pb.has_create = 1;
	o->pb.create = 1;
	return o;
}

static void
free_save_nodes(ckpt_options *o)
{
	size_t i;

	for (i = 0; i < o->pb.n_save_policy; i++) {
		free(o->pb.save_policy[i]->steps);
		free(o->pb.save_policy[i]->children);
		free(o->pb.save_policy[i]);
	}
	free(o->pb.save_policy);
}

static void
free_pres_nodes(ckpt_options *o)
{
	size_t i;

	for (i = 0; i < o->pb.n_preservation; i++) {
		free(o->pb.preservation[i]->steps);
		free(o->pb.preservation[i]->children);
		free(o->pb.preservation[i]->metric);
		free(o->pb.preservation[i]);
	}
	free(o->pb.preservation);
}

CKPT_API void
ckpt_options_free(ckpt_options *o)
{
	size_t i;

	if (o == NULL)
		return;
	free(o->pb.best_metric);
	free(o->pb.step_prefix);
	free(o->pb.save_on_steps);
	free(o->pb.todelete_subdir);
	free(o->pb.root_metadata_json);
	for (i = 0; i < o->pb.n_item_names; i++)
		free(o->pb.item_names[i]);
	free(o->pb.item_names);
	free(o->pb.active_processes);
	free(o->pb.job);
	free_save_nodes(o);
	free_pres_nodes(o);
	free(o);
}

#define SETBOOL(field) do {                                            \
	if (o == NULL)                                                  \
		return CKPT_EINVAL;                                     \
	o->pb.has_##field = 1;                                          \
	o->pb.field = on != 0;                                          \
	return 0;                                                       \
} while (0)

CKPT_API int
ckpt_options_set_create(ckpt_options *o, int on) { SETBOOL(create); }
CKPT_API int
ckpt_options_set_read_only(ckpt_options *o, int on) { SETBOOL(read_only); }
CKPT_API int
ckpt_options_set_keep_checkpoints_without_metrics(ckpt_options *o, int on)
{ SETBOOL(keep_checkpoints_without_metrics); }
CKPT_API int
ckpt_options_set_cleanup_tmp_directories(ckpt_options *o, int on)
{ SETBOOL(cleanup_tmp_directories); }
CKPT_API int
ckpt_options_set_enable_background_delete(ckpt_options *o, int on)
{ SETBOOL(enable_background_delete); }
CKPT_API int
ckpt_options_set_async(ckpt_options *o, int on) { SETBOOL(enable_async); }
CKPT_API int
ckpt_options_set_prevent_write_metrics(ckpt_options *o, int on)
{ SETBOOL(prevent_write_metrics); }

CKPT_API int
ckpt_options_set_max_to_keep(ckpt_options *o, int64_t n)
{
	if (o == NULL || n < 0)
		return CKPT_EINVAL;
	o->pb.has_max_to_keep = 1;
	o->pb.max_to_keep = n;
	return 0;
}

CKPT_API int
ckpt_options_set_keep_period(ckpt_options *o, uint64_t n)
{
	if (o == NULL || n == 0)
		return CKPT_EINVAL;
	o->pb.has_keep_period = 1;
	o->pb.keep_period = n;
	return 0;
}

CKPT_API int
ckpt_options_set_keep_time_interval(ckpt_options *o, double secs)
{
	if (o == NULL || !(secs >= 0) || secs > 1e12)
		return CKPT_EINVAL;
	o->pb.has_keep_time_interval_secs = 1;
	o->pb.keep_time_interval_secs = secs;
	return 0;
}

static int
replace_str(char **field, const char *v)
{
	char *s = NULL;

	if (v != NULL && (s = strdup(v)) == NULL)
		return CKPT_ENOMEM;
	free(*field);
	*field = s;
	return 0;
}

CKPT_API int
ckpt_options_set_best(ckpt_options *o, const char *metric, int mode_min)
{
	int r;

	if (o == NULL || (metric != NULL && (*metric == '\0' ||
	    strlen(metric) > 1024)))
		return CKPT_EINVAL;
	if ((r = replace_str(&o->pb.best_metric, metric)) != 0)
		return r;
	o->pb.has_best_mode_min = 1;
	o->pb.best_mode_min = mode_min != 0;
	return 0;
}

/* A single path component (same rules as the daemon's store). */
static int
valid_component(const char *s)
{
	size_t n;
	static const char tmp[] = ".ckptd-tmp";

	if (s == NULL || (n = strlen(s)) == 0 || n > 255)
		return 0;
	if (strchr(s, '/') != NULL || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return 0;
	if (n >= sizeof tmp - 1 && strcmp(s + n - (sizeof tmp - 1), tmp) == 0)
		return 0;
	return 1;
}

CKPT_API int
ckpt_options_set_step_prefix(ckpt_options *o, const char *prefix)
{
	if (o == NULL)
		return CKPT_EINVAL;
	if (prefix != NULL && *prefix != '\0' &&
	    (!valid_component(prefix) || strlen(prefix) > 100))
		return CKPT_EINVAL;
	return replace_str(&o->pb.step_prefix,
	    prefix != NULL && *prefix != '\0' ? prefix : NULL);
}

CKPT_API int
ckpt_options_set_step_format_fixed_length(ckpt_options *o, unsigned n)
{
	if (o == NULL || n > 20)
		return CKPT_EINVAL;
	o->pb.has_step_format_fixed_length = n != 0;
	o->pb.step_format_fixed_length = n;
	return 0;
}

CKPT_API int
ckpt_options_set_save_interval_steps(ckpt_options *o, uint64_t n)
{
	if (o == NULL)
		return CKPT_EINVAL;
	o->pb.has_save_interval_steps = 1;
	o->pb.save_interval_steps = n;
	return 0;
}

static int
copy_steps(uint64_t **dst, size_t *ndst, const uint64_t *steps, size_t n)
{
	uint64_t *s = NULL;

	if (n > CKPT_MAX_STEPS_LIST || (n > 0 && steps == NULL))
		return CKPT_EINVAL;
	if (n > 0) {
		if ((s = malloc(n * sizeof *s)) == NULL)
			return CKPT_ENOMEM;
		memcpy(s, steps, n * sizeof *s);
	}
	free(*dst);
	*dst = s;
	*ndst = n;
	return 0;
}

CKPT_API int
ckpt_options_set_save_on_steps(ckpt_options *o, const uint64_t *steps,
    size_t n)
{
	if (o == NULL)
		return CKPT_EINVAL;
	return copy_steps(&o->pb.save_on_steps, &o->pb.n_save_on_steps, steps, n);
}

CKPT_API int
ckpt_options_set_todelete_subdir(ckpt_options *o, const char *subdir)
{
	if (o == NULL)
		return CKPT_EINVAL;
	if (subdir != NULL && *subdir != '\0' && !valid_component(subdir))
		return CKPT_EINVAL;
	return replace_str(&o->pb.todelete_subdir,
	    subdir != NULL && *subdir != '\0' ? subdir : NULL);
}

CKPT_API int
ckpt_options_set_async_timeout(ckpt_options *o, double secs)
{
	if (o == NULL || !(secs > 0) || secs > 1e9)
		return CKPT_EINVAL;
	o->pb.has_async_timeout_secs = 1;
	o->pb.async_timeout_secs = secs;
	return 0;
}

CKPT_API int
ckpt_options_set_path_permission_mode(ckpt_options *o, unsigned mode)
{
	if (o == NULL || mode > 07777)
		return CKPT_EINVAL;
	o->pb.has_path_permission_mode = 1;
	o->pb.path_permission_mode = mode;
	return 0;
}

CKPT_API int
ckpt_options_set_should_save_fn(ckpt_options *o, ckpt_should_save_fn fn,
    void *arg)
{
	if (o == NULL)
		return CKPT_EINVAL;
	o->should_save_fn = fn;
	o->should_save_arg = fn != NULL ? arg : NULL;
	return 0;
}

CKPT_API int
ckpt_options_set_root_metadata(ckpt_options *o, const char *json)
{
	json_t *j;

	if (o == NULL)
		return CKPT_EINVAL;
	if (json != NULL) {
		if ((j = json_loads(json, JSON_DECODE_ANY, NULL)) == NULL)
			return CKPT_EINVAL;
		json_decref(j);
	}
	return replace_str(&o->pb.root_metadata_json, json);
}

CKPT_API int
ckpt_options_set_item_names(ckpt_options *o, const char *const *names,
    size_t n)
{
	char **v = NULL;
	size_t i;

	/* The names go to the daemon as given: it alone judges them
	 * (count, validity, duplicates) and says why it refuses. */
	if (o == NULL || (n > 0 && names == NULL))
		return CKPT_EINVAL;
	for (i = 0; i < n; i++)
		if (names[i] == NULL)
			return CKPT_EINVAL;
	if (n > 0 && (v = calloc(n, sizeof *v)) == NULL)
		return CKPT_ENOMEM;
	for (i = 0; i < n; i++) {
		if ((v[i] = strdup(names[i])) == NULL) {
			while (i-- > 0)
				free(v[i]);
			free(v);
			return CKPT_ENOMEM;
		}
	}
	for (i = 0; i < o->pb.n_item_names; i++)
		free(o->pb.item_names[i]);
	free(o->pb.item_names);
	o->pb.item_names = v;
	o->pb.n_item_names = n;
	return 0;
}

/* ---- distributed steps ---------------------------------------------------------- */

CKPT_API int
ckpt_options_set_process_index(ckpt_options *o, uint32_t index)
{
	if (o == NULL || index >= CKPT_MAX_PROCESSES)
		return CKPT_EINVAL;
	o->pb.has_process_index = 1;
	o->pb.process_index = index;
	return 0;
}

CKPT_API int
ckpt_options_set_process_count(ckpt_options *o, uint32_t count)
{
	if (o == NULL || count == 0 || count > CKPT_MAX_PROCESSES)
		return CKPT_EINVAL;
	o->pb.has_process_count = 1;
	o->pb.process_count = count;
	return 0;
}

CKPT_API int
ckpt_options_set_primary_host(ckpt_options *o, uint32_t rank)
{
	if (o == NULL || rank >= CKPT_MAX_PROCESSES)
		return CKPT_EINVAL;
	o->pb.has_primary_host = 1;
	o->pb.primary_host = rank;
	return 0;
}

CKPT_API int
ckpt_options_set_active_processes(ckpt_options *o, const uint32_t *ranks,
    size_t n)
{
	uint32_t *v = NULL;
	size_t i, j;

	if (o == NULL || (n > 0 && ranks == NULL) || n > CKPT_MAX_PROCESSES)
		return CKPT_EINVAL;
	for (i = 0; i < n; i++) {
		if (ranks[i] >= CKPT_MAX_PROCESSES)
			return CKPT_EINVAL;
		for (j = 0; j < i; j++)
			if (ranks[i] == ranks[j])
				return CKPT_EINVAL;
	}
	if (n > 0) {
		if ((v = malloc(n * sizeof *v)) == NULL)
			return CKPT_ENOMEM;
		memcpy(v, ranks, n * sizeof *v);
	}
	free(o->pb.active_processes);
	o->pb.active_processes = v;
	o->pb.n_active_processes = n;
	return 0;
}

CKPT_API int
ckpt_options_set_job(ckpt_options *o, const char *job)
{
	if (o == NULL || (job != NULL && strlen(job) > CKPT_MAX_JOB))
		return CKPT_EINVAL;
	return replace_str(&o->pb.job, job);
}

/* Is rank one of the manager's processes? */
static int
opts_has_rank(const Ckpt__ManagerOptions *pb, uint32_t rank)
{
	size_t i;

	if (pb->n_active_processes == 0)
		return rank < (pb->has_process_count ? pb->process_count : 1);
	for (i = 0; i < pb->n_active_processes; i++)
		if (pb->active_processes[i] == rank)
			return 1;
	return 0;
}

int
opts_check_processes(const Ckpt__ManagerOptions *pb, char *err, size_t len)
{
	uint32_t count = pb->has_process_count ? pb->process_count : 1;
	uint32_t index = pb->has_process_index ? pb->process_index : 0;
	uint32_t primary = pb->has_primary_host ? pb->primary_host : 0;

	if (pb->n_active_processes > 0 && pb->n_active_processes != count) {
		snprintf(err, len, "active_processes names %zu processes but "
		    "process_count is %u", pb->n_active_processes, count);
		return CKPT_EINVAL;
	}
	if (!opts_has_rank(pb, index)) {
		snprintf(err, len, "process_index %u is not one of the %u "
		    "processes of the job", index, count);
		return CKPT_EINVAL;
	}
	if (!opts_has_rank(pb, primary)) {
		snprintf(err, len, "primary_host %u is not one of the %u "
		    "processes of the job", primary, count);
		return CKPT_EINVAL;
	}
	return 0;
}

/* ---- policies ------------------------------------------------------------------ */

CKPT_API int
ckpt_options_save_policy_add(ckpt_options *o, ckpt_save_policy_kind kind,
    uint64_t interval, const uint64_t *steps, size_t nsteps, double secs)
{
	Ckpt__SavePolicyNode *nd, **nv;
	int r;

	if (o == NULL || o->pb.n_save_policy >= CKPT_MAX_POLICY_NODES)
		return CKPT_EINVAL;
	switch (kind) {
	case CKPT_SAVE_FIXED_INTERVAL:
		if (interval == 0)
			return CKPT_EINVAL;
		break;
	case CKPT_SAVE_CONTINUOUS:
		if (!(secs >= 0) || secs > 1e12)
			return CKPT_EINVAL;
		break;
	case CKPT_SAVE_SPECIFIC_STEPS: case CKPT_SAVE_INITIAL:
	case CKPT_SAVE_PREEMPTION: case CKPT_SAVE_ANY:
		break;
	default:
		return CKPT_EINVAL;
	}
	if ((nd = calloc(1, sizeof *nd)) == NULL)
		return CKPT_ENOMEM;
	ckpt__save_policy_node__init(nd);
	nd->has_kind = 1;
	nd->kind = (Ckpt__SavePolicyNode__Kind)kind;
	if (kind == CKPT_SAVE_FIXED_INTERVAL) {
		nd->has_interval = 1;
		nd->interval = interval;
	}
	if (kind == CKPT_SAVE_CONTINUOUS) {
		nd->has_minimum_interval_secs = 1;
		nd->minimum_interval_secs = secs;
	}
	if (kind == CKPT_SAVE_SPECIFIC_STEPS &&
	    (r = copy_steps(&nd->steps, &nd->n_steps, steps, nsteps)) != 0) {
		free(nd);
		return r;
	}
	nv = realloc(o->pb.save_policy, (o->pb.n_save_policy + 1) * sizeof *nv);
	if (nv == NULL) {
		free(nd->steps);
		free(nd);
		return CKPT_ENOMEM;
	}
	o->pb.save_policy = nv;
	nv[o->pb.n_save_policy] = nd;
	return (int)o->pb.n_save_policy++;
}

static int
add_child(uint32_t **children, size_t *n, int child)
{
	uint32_t *nc = realloc(*children, (*n + 1) * sizeof *nc);

	if (nc == NULL)
		return CKPT_ENOMEM;
	nc[(*n)++] = (uint32_t)child;
	*children = nc;
	return 0;
}

CKPT_API int
ckpt_options_save_policy_child(ckpt_options *o, int parent, int child)
{
	Ckpt__SavePolicyNode *p;

	if (o == NULL || parent < 0 || child <= parent ||
	    (size_t)child >= o->pb.n_save_policy)
		return CKPT_EINVAL;
	p = o->pb.save_policy[parent];
	if (p->kind != CKPT__SAVE_POLICY_NODE__KIND__ANY ||
	    p->n_children >= CKPT_MAX_POLICY_NODES)
		return CKPT_EINVAL;
	return add_child(&p->children, &p->n_children, child);
}

CKPT_API int
ckpt_options_preservation_add(ckpt_options *o, ckpt_preserve_kind kind,
    int64_t n, double secs, const uint64_t *steps, size_t nsteps,
    const char *metric, int mode_min, int keep_without_metrics)
{
	Ckpt__PreservationNode *nd, **nv;
	int r = 0;

	if (o == NULL || o->pb.n_preservation >= CKPT_MAX_POLICY_NODES)
		return CKPT_EINVAL;
	switch (kind) {
	case CKPT_PRESERVE_LATEST_N:
		if (n < 0)
			return CKPT_EINVAL;
		break;
	case CKPT_PRESERVE_EVERY_N_STEPS:
	case CKPT_PRESERVE_EVERY_N_STEPS_CLOSEST:
		if (n <= 0)
			return CKPT_EINVAL;
		break;
	case CKPT_PRESERVE_BEST_N:
		if (n < 0 || metric == NULL || *metric == '\0' ||
		    strlen(metric) > 1024)
			return CKPT_EINVAL;
		break;
	case CKPT_PRESERVE_EVERY_N_SECONDS: case CKPT_PRESERVE_LATEST_DURATION:
		if (!(secs >= 0) || secs > 1e12)
			return CKPT_EINVAL;
		break;
	case CKPT_PRESERVE_ALL: case CKPT_PRESERVE_CUSTOM_STEPS:
	case CKPT_PRESERVE_ANY:
		break;
	default:
		return CKPT_EINVAL;
	}
	if ((nd = calloc(1, sizeof *nd)) == NULL)
		return CKPT_ENOMEM;
	ckpt__preservation_node__init(nd);
	nd->has_kind = 1;
	nd->kind = (Ckpt__PreservationNode__Kind)kind;
	if (kind == CKPT_PRESERVE_LATEST_N || kind == CKPT_PRESERVE_EVERY_N_STEPS ||
	    kind == CKPT_PRESERVE_EVERY_N_STEPS_CLOSEST ||
	    kind == CKPT_PRESERVE_BEST_N) {
		nd->has_n = 1;
		nd->n = n;
	}
	if (kind == CKPT_PRESERVE_EVERY_N_SECONDS ||
	    kind == CKPT_PRESERVE_LATEST_DURATION) {
		nd->has_secs = 1;
		nd->secs = secs;
	}
	if (kind == CKPT_PRESERVE_CUSTOM_STEPS)
		r = copy_steps(&nd->steps, &nd->n_steps, steps, nsteps);
	if (r == 0 && kind == CKPT_PRESERVE_BEST_N) {
		if ((nd->metric = strdup(metric)) == NULL)
			r = CKPT_ENOMEM;
		nd->has_mode_min = 1;
		nd->mode_min = mode_min != 0;
		nd->has_keep_without_metrics = 1;
		nd->keep_without_metrics = keep_without_metrics != 0;
	}
	if (r == 0) {
		nv = realloc(o->pb.preservation,
		    (o->pb.n_preservation + 1) * sizeof *nv);
		if (nv == NULL) {
			r = CKPT_ENOMEM;
		} else {
			o->pb.preservation = nv;
			nv[o->pb.n_preservation] = nd;
			return (int)o->pb.n_preservation++;
		}
	}
	free(nd->steps);
	free(nd->metric);
	free(nd);
	return r;
}

CKPT_API int
ckpt_options_preservation_child(ckpt_options *o, int parent, int child)
{
	Ckpt__PreservationNode *p;

	if (o == NULL || parent < 0 || child <= parent ||
	    (size_t)child >= o->pb.n_preservation)
		return CKPT_EINVAL;
	p = o->pb.preservation[parent];
	if (p->kind != CKPT__PRESERVATION_NODE__KIND__ANY ||
	    p->n_children >= CKPT_MAX_POLICY_NODES)
		return CKPT_EINVAL;
	return add_child(&p->children, &p->n_children, child);
}

CKPT_API int
ckpt_options_preservation_every_n(ckpt_options *o, int node, int exact,
    int64_t max_to_keep)
{
	Ckpt__PreservationNode *p;

	if (o == NULL || node < 0 || (size_t)node >= o->pb.n_preservation ||
	    max_to_keep < -1)
		return CKPT_EINVAL;
	p = o->pb.preservation[node];
	if (p->kind == CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS_CLOSEST) {
		if (!exact)
			return CKPT_EINVAL;
	} else if (p->kind != CKPT__PRESERVATION_NODE__KIND__EVERY_N_STEPS)
		return CKPT_EINVAL;
	p->has_exact_interval = 1;
	p->exact_interval = exact != 0;
	p->has_max_to_keep = max_to_keep >= 0;
	p->max_to_keep = max_to_keep >= 0 ? max_to_keep : 0;
	return 0;
}
