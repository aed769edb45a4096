/*
 * stepmeta.h - _CHECKPOINT_METADATA, the metadata of one step (Orbax's
 * item handlers, metrics, timestamps, custom metadata; ckptd's section).
 */
#ifndef CKPTD_STEPMETA_H
#define CKPTD_STEPMETA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"
#include "ckpt.pb-c.h"
#include "syncbatch.h"

struct store_step_meta {
	int64_t init_ns, commit_ns;
	char *metrics_json;     /* JSON object text, or NULL */
	char *custom_json;      /* JSON object text, or NULL */
	size_t nitems;
	char **item_names;
	Ckpt__Handler *handlers;
	uint64_t bytes;         /* total bytes of array data */
	const char *metrics_item; /* write: the item holding the step's
				   metrics, which Orbax lists among
				   item_handlers (a Json item), or NULL */
};
/* Write <stepfd>/_CHECKPOINT_METADATA:
 * {"item_handlers": {"<item>": "<orbax handler type string>", ...},
 *  "metrics": {...}, "performance_metrics": {}, "init_timestamp_nsecs": N,
 *  "commit_timestamp_nsecs": N, "custom_metadata": {...},
 *  "ckptd": {"version": 1, "bytes": N, "handlers": {"<item>": "STANDARD"}}}
 * and fsync. With metrics_item, that item is in item_handlers too (not in
 * ckptd.handlers: it is no item of the save). */
int store_write_step_meta(const struct store_backend *be, int stepfd,
    const struct store_step_meta *m, mode_t filemode, ckd_err *e);
int store_write_step_meta_nosync(const struct store_backend *be, int stepfd,
    const struct store_step_meta *m, mode_t filemode, struct store_sync *b,
    ckd_err *e);
/* Parse it back (strictly: wrong types are CKPT_ECORRUPT). */
int store_read_step_meta(const struct store_backend *be, int stepfd,
    struct store_step_meta *m, ckd_err *e);
void store_step_meta_free(struct store_step_meta *m);

#endif
