/*
 * stepmetrics.c - Orbax's metrics item (see stepmetrics.h).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "stepmetrics.h"

int
stepmetrics_write_nosync(const struct store_backend *be, int tmpfd,
    const char *metrics_json, mode_t dirmode, mode_t filemode,
    struct store_sync *b, ckd_err *e)
{
	json_t *o = NULL, *v;
	const char *k;
	void *tmp;
	char *text = NULL;
	int fd = -1, r;

	o = json_loads(metrics_json, JSON_REJECT_DUPLICATES, NULL);
	if (o == NULL || !json_is_object(o)) {
		r = err_set(e, CKPT_EINVAL, "metrics are not a JSON object");
		goto out;
	}
	json_object_foreach_safe(o, tmp, k, v)
		if (strncmp(k, STEPMETRICS_RESERVED,
		    strlen(STEPMETRICS_RESERVED)) == 0)
			json_object_del(o, k);
	if ((text = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory for metrics");
		goto out;
	}
	if ((r = store_mkdir_item(be, tmpfd, STEPMETRICS_ITEM, dirmode, &fd,
	    e)) != 0)
		goto out;
	if ((r = store_write_file_nosync(be, fd, STEPMETRICS_FILE, text,
	    strlen(text), filemode, b, e)) != 0)
		goto out;
	r = store_sync_add(b, fd, 1, e);        /* closes fd on failure */
	fd = -1;
out:
	if (fd >= 0)
		be->close(fd);
	free(text);
	json_decref(o);
	return r;
}

char *
stepmetrics_read(const struct store_backend *be, int stepfd)
{
	json_t *o = NULL;
	char *buf = NULL, *text = NULL;
	size_t len;
	ckd_err e;
	int fd;

	if ((fd = be->open_dir(stepfd, STEPMETRICS_ITEM)) < 0)
		return NULL;
	if (store_read_file(be, fd, STEPMETRICS_FILE, STEPMETRICS_MAX, &buf,
	    &len, &e) == 0 && (o = json_loadb(buf, len, JSON_REJECT_DUPLICATES,
	    NULL)) != NULL && json_is_object(o))
		text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	free(buf);
	be->close(fd);
	return text;
}

void
stepmetrics_fill(const struct store_backend *be, int stepfd,
    char **metrics_json)
{
	json_t *o;
	char *text;
	int empty = 1;

	if (*metrics_json != NULL) {
		o = json_loads(*metrics_json, 0, NULL);
		empty = o != NULL && json_is_object(o) && json_object_size(o) == 0;
		json_decref(o);
	}
	if (!empty || (text = stepmetrics_read(be, stepfd)) == NULL)
		return;
	free(*metrics_json);
	*metrics_json = text;
}
