/*
 * stepmetrics.h - Orbax's metrics item of a step: <step>/metrics/metrics,
 * a JSON object written by the metrics JsonCheckpointHandler. ckptd writes
 * it next to _CHECKPOINT_METADATA.metrics, so that Orbax ranks a root
 * written by ckptd, and reads it for steps Orbax wrote.
 */
#ifndef CKPTD_STEPMETRICS_H
#define CKPTD_STEPMETRICS_H

#include <sys/types.h>

#include "common.h"
#include "store.h"

#define STEPMETRICS_ITEM "metrics"
#define STEPMETRICS_FILE "metrics"
#define STEPMETRICS_MAX (1 << 20)
/* Keys of this prefix are ckpt's own (best_fn values): not written here. */
#define STEPMETRICS_RESERVED "__ckpt_"

/* Create <tmpfd>/metrics/ and write metrics/metrics from metrics_json (a
 * JSON object; reserved keys dropped), both added to batch b. */
int stepmetrics_write_nosync(const struct store_backend *be, int tmpfd,
    const char *metrics_json, mode_t dirmode, mode_t filemode,
    struct store_sync *b, ckd_err *e);
/* <stepfd>/metrics/metrics as JSON object text (malloc'ed), or NULL when
 * absent, unreadable, too large or not an object. */
char *stepmetrics_read(const struct store_backend *be, int stepfd);
/* When *metrics_json (from _CHECKPOINT_METADATA) is NULL or {}, replace it
 * with <stepfd>/metrics/metrics when that exists (Orbax keeps them there). */
void stepmetrics_fill(const struct store_backend *be, int stepfd,
    char **metrics_json);

#endif
