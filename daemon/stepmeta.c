/*
 * stepmeta.c - _CHECKPOINT_METADATA of a step (contract: stepmeta.h).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dtype.h"
#include "layout.h"
#include "smallfile.h"
#include "stepmeta.h"

#define STORE_MAX_STEP_META (64u << 20)
#define STORE_MAX_ITEMS 4096

#define CORRUPT(...) do { r = err_set(e, CKPT_ECORRUPT, __VA_ARGS__); \
	goto out; } while (0)
#define NOMEM() do { r = err_set(e, CKPT_ENOMEM, "out of memory"); \
	goto out; } while (0)

/* ---- step metadata ------------------------------------------------------------- */

static json_t *
object_from_text(const char *text)
{
	json_t *o;

	if (text == NULL)
		return json_object();
	o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	if (o != NULL && !json_is_object(o)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

static int
step_meta_write(const struct store_backend *be, int stepfd,
    const struct store_step_meta *m, mode_t filemode, struct store_sync *b,
    ckd_err *e)
{
	json_t *root = NULL, *ih, *sh, *metrics, *custom;
	const char *ts, *sn;
	char *text = NULL;
	size_t i;
	int r = 0;

	if ((metrics = object_from_text(m->metrics_json)) == NULL)
		return err_set(e, CKPT_EINVAL, "metrics are not a JSON object");
	if ((custom = object_from_text(m->custom_json)) == NULL) {
		json_decref(metrics);
		return err_set(e, CKPT_EINVAL,
		    "custom metadata is not a JSON object");
	}
	root = json_pack("{s:{}, s:o, s:{}, s:I, s:I, s:o, "
	    "s:{s:i, s:I, s:{}}}",
	    "item_handlers", "metrics", metrics, "performance_metrics",
	    "init_timestamp_nsecs", (json_int_t)m->init_ns,
	    "commit_timestamp_nsecs", (json_int_t)m->commit_ns,
	    "custom_metadata", custom,
	    "ckptd", "version", STORE_FORMAT_VERSION, "bytes",
	    (json_int_t)m->bytes, "handlers");
	if (root == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	ih = json_object_get(root, "item_handlers");
	sh = json_object_get(json_object_get(root, "ckptd"), "handlers");
	for (i = 0; i < m->nitems; i++) {
		const char *name = m->item_names[i];

		if (!store_valid_component(name)) {
			r = err_set(e, CKPT_EINVAL, "invalid item name %s",
			    name != NULL ? name : "(null)");
			goto out;
		}
		ts = store_handler_typestr(m->handlers[i]);
		sn = store_handler_shortname(m->handlers[i]);
		if (ts == NULL || sn == NULL) {
			r = err_set(e, CKPT_EINVAL, "item %s: no handler", name);
			goto out;
		}
		if (json_object_get(ih, name) != NULL) {
			r = err_set(e, CKPT_EINVAL, "duplicate item %s", name);
			goto out;
		}
		if (json_object_set_new(ih, name, json_string(ts)) != 0 ||
		    json_object_set_new(sh, name, json_string(sn)) != 0) {
			r = err_set(e, CKPT_EINVAL, "item %s: cannot encode "
			    "name", name);
			goto out;
		}
	}
	if (m->metrics_item != NULL) {
		if (json_object_get(ih, m->metrics_item) != NULL) {
			r = err_set(e, CKPT_EINVAL, "an item named %s and "
			    "metrics", m->metrics_item);
			goto out;
		}
		if (json_object_set_new(ih, m->metrics_item, json_string(
		    store_handler_typestr(CKPT__HANDLER__HANDLER_JSON))) != 0) {
			r = err_set(e, CKPT_ENOMEM, "out of memory");
			goto out;
		}
	}
	if ((text = json_dumps(root, JSON_COMPACT)) == NULL) {
		r = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	/* Restore reads it back whole, up to CKPT_MAX_DOC. */
	if (strlen(text) > CKPT_MAX_DOC) {
		r = err_set(e, CKPT_ETOOBIG, "%s would be %zu bytes, more than "
		    "the %u a restore reads (metrics and custom metadata too "
		    "large)", STORE_STEP_METADATA, strlen(text), CKPT_MAX_DOC);
		goto out;
	}
	r = store_small_write(be, stepfd, STORE_STEP_METADATA, text,
	    strlen(text), filemode, b, e);
out:
	free(text);
	json_decref(root);
	return r;
}

int
store_write_step_meta(const struct store_backend *be, int stepfd,
    const struct store_step_meta *m, mode_t filemode, ckd_err *e)
{
	return step_meta_write(be, stepfd, m, filemode, NULL, e);
}

int
store_write_step_meta_nosync(const struct store_backend *be, int stepfd,
    const struct store_step_meta *m, mode_t filemode, struct store_sync *b,
    ckd_err *e)
{
	if (b == NULL)
		return err_set(e, CKPT_EINVAL, "no sync batch");
	return step_meta_write(be, stepfd, m, filemode, b, e);
}

void
store_step_meta_free(struct store_step_meta *m)
{
	size_t i;

	if (m == NULL)
		return;
	free(m->metrics_json);
	free(m->custom_json);
	for (i = 0; i < m->nitems && m->item_names != NULL; i++)
		free(m->item_names[i]);
	free(m->item_names);
	free(m->handlers);
	memset(m, 0, sizeof(*m));
}

/* Optional JSON object member as compact text (NULL when absent/null). */
static int
object_text(json_t *root, const char *k, char **out)
{
	json_t *v = json_object_get(root, k);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return -1;
	if ((*out = json_dumps(v, JSON_COMPACT)) == NULL)
		return -2;
	return 0;
}

static int
opt_int(json_t *root, const char *k, int64_t *out)
{
	json_t *v = json_object_get(root, k);

	*out = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v))
		return -1;
	*out = json_integer_value(v);
	return 0;
}

int
store_read_step_meta(const struct store_backend *be, int stepfd,
    struct store_step_meta *m, ckd_err *e)
{
	json_t *root = NULL, *ih, *ck, *sh = NULL, *v;
	json_error_t jerr;
	const char *key;
	char *buf = NULL;
	int64_t bytes = 0;
	size_t len, i, n;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = store_read_file(be, stepfd, STORE_STEP_METADATA,
	    STORE_MAX_STEP_META, &buf, &len, e)) != 0) {
		if (r == CKPT_ETOOBIG)
			r = err_set(e, CKPT_ECORRUPT, "%s: too large",
			    STORE_STEP_METADATA);
		return r;
	}
	if ((root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL)
		CORRUPT("%s: invalid JSON at line %d: %s", STORE_STEP_METADATA,
		    jerr.line, jerr.text);
	if (!json_is_object(root))
		CORRUPT("%s: not a JSON object", STORE_STEP_METADATA);
	if ((r = object_text(root, "metrics", &m->metrics_json)) != 0 ||
	    (r = object_text(root, "custom_metadata", &m->custom_json)) != 0) {
		if (r == -2)
			NOMEM();
		CORRUPT("%s: metrics/custom_metadata not an object",
		    STORE_STEP_METADATA);
	}
	if (opt_int(root, "init_timestamp_nsecs", &m->init_ns) != 0 ||
	    opt_int(root, "commit_timestamp_nsecs", &m->commit_ns) != 0)
		CORRUPT("%s: bad timestamps", STORE_STEP_METADATA);
	ck = json_object_get(root, "ckptd");
	if (ck != NULL) {
		int64_t fv;

		if (!json_is_object(ck) || opt_int(ck, "bytes", &bytes) != 0 ||
		    opt_int(ck, "version", &fv) != 0)
			CORRUPT("%s: bad ckptd section", STORE_STEP_METADATA);
		if (fv > STORE_FORMAT_VERSION) {
			r = err_set(e, CKPT_EVERSION, "%s: format version "
			    "%lld was written by a newer ckptd (this one reads "
			    "up to %d); upgrade ckptd", STORE_STEP_METADATA,
			    (long long)fv, STORE_FORMAT_VERSION);
			goto out;
		}
		sh = json_object_get(ck, "handlers");
		if (sh != NULL && !json_is_object(sh))
			CORRUPT("%s: bad ckptd handlers", STORE_STEP_METADATA);
		m->bytes = (uint64_t)bytes;
	}
	ih = json_object_get(root, "item_handlers");
	if (ih == NULL || json_is_null(ih))
		n = 0;
	else if (json_is_string(ih))
		n = 1;   /* Orbax single-item form: the handler of "default" */
	else if (json_is_object(ih))
		n = json_object_size(ih);
	else
		CORRUPT("%s: bad item_handlers", STORE_STEP_METADATA);
	if (n > STORE_MAX_ITEMS)
		CORRUPT("%s: too many items", STORE_STEP_METADATA);
	if (n > 0 && ((m->item_names = calloc(n, sizeof(char *))) == NULL ||
	    (m->handlers = calloc(n, sizeof(Ckpt__Handler))) == NULL))
		NOMEM();
	if (json_is_string(ih)) {
		if ((m->item_names[0] = strdup("default")) == NULL)
			NOMEM();
		m->nitems = 1;
		m->handlers[0] = store_handler_parse(json_string_value(ih));
	} else if (n > 0) {
		json_object_foreach(ih, key, v) {
			json_t *shv = sh != NULL ? json_object_get(sh, key) : NULL;

			if (!json_is_string(v) || !store_valid_component(key) ||
			    (shv != NULL && !json_is_string(shv)))
				CORRUPT("%s: bad item_handlers entry",
				    STORE_STEP_METADATA);
			i = m->nitems;
			if ((m->item_names[i] = strdup(key)) == NULL)
				NOMEM();
			m->nitems++;
			m->handlers[i] = CKPT__HANDLER__HANDLER_UNSPECIFIED;
			if (shv != NULL)
				m->handlers[i] = store_handler_parse(
				    json_string_value(shv));
			if (m->handlers[i] == CKPT__HANDLER__HANDLER_UNSPECIFIED)
				m->handlers[i] = store_handler_parse(
				    json_string_value(v));
		}
	}
	r = 0;
out:
	if (r != 0)
		store_step_meta_free(m);
	json_decref(root);
	free(buf);
	return r;
}
