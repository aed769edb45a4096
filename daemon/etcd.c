/*
 * etcd.c - the etcd v3 client (JSON gateway over libcurl, see etcd.h).
 *
 * One call is one HTTP POST of a JSON document to /v3/<service>/<method>
 * on one endpoint; the reply is one JSON document. int64 fields travel as
 * decimal strings, keys and values as base64. The streaming methods
 * (lease keep-alive, watch) answer with JSON documents separated by
 * newlines, each {"result": ...} or {"error": ...}.
 *
 * Locking: c->lock guards the pool of curl handles, the preferred
 * endpoint and the keeper's state; it is never held across a request.
 * A curl easy handle is used by one thread at a time (taken from and put
 * back to the pool).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "etcd.h"

#define ETCD_POOL 8
#define ETCD_POLL_MS 200
/* gRPC status codes that the gateway hands on. */
enum {
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNAVAILABLE = 14,
};

struct etcd {
	char *ep[CKPT_ETCD_MAX_ENDPOINTS];
	size_t nep;
	char *ep_list;                  /* "a, b" for messages */
	int timeout_ms;
	struct curl_slist *headers;

	pthread_mutex_t lock;
	CURL *pool[ETCD_POOL];
	size_t npool;
	size_t preferred;               /* the endpoint that answered last */

	/* The lease keeper (under lock). */
	pthread_cond_t keep_cond;
	pthread_t keeper;
	bool keeper_running;
	bool keeper_stop;
	int64_t kept_id;
	int64_t kept_ttl;
	int kept_state;
};

struct etcd_watch {
	struct etcd *c;
	char *key;
	size_t key_len;
	char *end;                      /* range end, NULL for one key */
	size_t end_len;
	int64_t next_rev;               /* the first revision not delivered */
	etcd_watch_fn fn;
	void *arg;

	pthread_t thread;
	CURLM *multi;
	atomic_bool stop;
	atomic_bool kick;               /* drop the stream, open it again */
	atomic_uint reconnects;
	size_t ep;

	/* The stream being read: bytes of a line not ended yet. */
	char *line;
	size_t line_len, line_cap;
	bool stream_ok;                 /* the watch was created on it */
	bool stream_bad;                /* an error or a malformed document */
};

/* A reply buffer with a cap. */
struct etcd_buf {
	char *p;
	size_t len, cap;
	bool over;
};

static pthread_once_t etcd_once = PTHREAD_ONCE_INIT;
static CURLcode etcd_global_rc;

static void
etcd_global_init(void)
{
	etcd_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int64_t
etcd_now_ms(void)
{
	return now_mono_ns() / 1000000;
}

/* ---- base64 (RFC 4648, with padding) ---------------------------------- */

static const char b64_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *
etcd_b64_encode(const void *data, size_t len)
{
	const unsigned char *s = data;
	size_t n, i, o = 0;
	char *out;

	if (len > SIZE_MAX / 4 - 4)
		return NULL;
	n = (len + 2) / 3 * 4;
	if ((out = malloc(n + 1)) == NULL)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		out[o++] = b64_alpha[v >> 18 & 63];
		out[o++] = b64_alpha[v >> 12 & 63];
		out[o++] = b64_alpha[v >> 6 & 63];
		out[o++] = b64_alpha[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)s[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)s[i + 1] << 8;
		out[o++] = b64_alpha[v >> 18 & 63];
		out[o++] = b64_alpha[v >> 12 & 63];
		out[o++] = i + 1 < len ? b64_alpha[v >> 6 & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return out;
}

static int
b64_val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Decode into a new buffer with a NUL after the bytes; -1 if malformed. */
static int
etcd_b64_decode(const char *s, size_t len, char **out, size_t *out_len)
{
	size_t i, o = 0, pad = 0;
	uint32_t acc = 0;
	char *p;

	if (len % 4 != 0)
		return -1;
	if (len > 0 && s[len - 1] == '=')
		pad++;
	if (len > 1 && s[len - 2] == '=')
		pad++;
	if ((p = malloc(len / 4 * 3 + 1)) == NULL)
		return -1;
	for (i = 0; i < len; i++) {
		int v;

		if (i >= len - pad) {
			if (s[i] != '=')
				goto bad;
			v = 0;
		} else if ((v = b64_val((unsigned char)s[i])) < 0) {
			goto bad;
		}
		acc = acc << 6 | (uint32_t)v;
		if (i % 4 == 3) {
			p[o++] = (char)(acc >> 16);
			p[o++] = (char)(acc >> 8);
			p[o++] = (char)acc;
			acc = 0;
		}
	}
	o -= pad;
	p[o] = '\0';
	*out = p;
	*out_len = o;
	return 0;
bad:
	free(p);
	return -1;
}

/* ---- JSON helpers ------------------------------------------------------ */

/* An int64 field: a decimal string (what the gateway sends) or a number;
 * absent is 0 (proto3 leaves zero values out). -1 if malformed. */
static int
json_i64(const json_t *obj, const char *name, int64_t *out)
{
	json_t *v = json_object_get(obj, name);
	const char *s;
	char *end;
	long long n;

	*out = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return -1;
	s = json_string_value(v);
	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return -1;
	*out = n;
	return 0;
}

static int
json_u64(const json_t *obj, const char *name, uint64_t *out)
{
	json_t *v = json_object_get(obj, name);
	const char *s;
	char *end;
	unsigned long long n;

	*out = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return -1;
	s = json_string_value(v);
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || *s == '-')
		return -1;
	*out = n;
	return 0;
}

static json_t *
json_i64_str(int64_t v)
{
	char s[32];

	snprintf(s, sizeof(s), "%" PRId64, v);
	return json_string(s);
}

/* Set obj[name] = base64(data); -1 on allocation failure. */
static int
json_set_b64(json_t *obj, const char *name, const void *data, size_t len)
{
	char *b = etcd_b64_encode(data, len);
	int r;

	if (b == NULL)
		return -1;
	r = json_object_set_new(obj, name, json_string(b));
	free(b);
	return r;
}

/* A base64 field into a new NUL-terminated buffer ("" when absent). */
static int
json_get_b64(const json_t *obj, const char *name, char **out, size_t *len)
{
	json_t *v = json_object_get(obj, name);

	if (v == NULL || json_is_null(v))
		return etcd_b64_decode("", 0, out, len);
	if (!json_is_string(v))
		return -1;
	return etcd_b64_decode(json_string_value(v), json_string_length(v),
	    out, len);
}

void
etcd_kv_free(struct etcd_kv *kv)
{
	if (kv == NULL)
		return;
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

void
etcd_kvs_free(struct etcd_kvs *kvs)
{
	size_t i;

	if (kvs == NULL)
		return;
	for (i = 0; i < kvs->n; i++)
		etcd_kv_free(&kvs->kv[i]);
	free(kvs->kv);
	memset(kvs, 0, sizeof(*kvs));
}

static int
etcd_parse_kv(const json_t *o, struct etcd_kv *kv, ckd_err *e)
{
	size_t klen;

	memset(kv, 0, sizeof(*kv));
	if (!json_is_object(o) ||
	    json_get_b64(o, "key", &kv->key, &klen) != 0 ||
	    json_get_b64(o, "value", &kv->value, &kv->value_len) != 0 ||
	    json_i64(o, "create_revision", &kv->create_revision) != 0 ||
	    json_i64(o, "mod_revision", &kv->mod_revision) != 0 ||
	    json_i64(o, "version", &kv->version) != 0 ||
	    json_i64(o, "lease", &kv->lease) != 0) {
		etcd_kv_free(kv);
		return err_set(e, CKPT_EPROTO, "etcd: malformed key-value in a reply");
	}
	if (strlen(kv->key) != klen) {
		etcd_kv_free(kv);
		return err_set(e, CKPT_EPROTO, "etcd: a key holds a NUL byte");
	}
	return 0;
}

/* The revision of a reply's header. */
static int64_t
etcd_header_rev(const json_t *reply)
{
	int64_t rev;

	if (json_i64(json_object_get(reply, "header"), "revision", &rev) != 0)
		return 0;
	return rev;
}

/* ---- the client -------------------------------------------------------- */

static int
etcd_add_endpoint(struct etcd *c, const char *s, size_t len, ckd_err *e)
{
	char *ep;

	while (len > 0 && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' ||
	    s[len - 1] == '/'))
		len--;
	if (len == 0)
		return err_set(e, CKPT_EINVAL, "etcd: an empty endpoint in the list");
	if (!((len > 7 && strncmp(s, "http://", 7) == 0) ||
	    (len > 8 && strncmp(s, "https://", 8) == 0)))
		return err_set(e, CKPT_EINVAL,
		    "etcd: endpoint '%.*s' is not an http:// or https:// URL",
		    (int)(len > 200 ? 200 : len), s);
	if (len > 1024)
		return err_set(e, CKPT_EINVAL, "etcd: endpoint longer than 1024 bytes");
	if (c->nep == CKPT_ETCD_MAX_ENDPOINTS)
		return err_set(e, CKPT_EINVAL, "etcd: more than %d endpoints",
		    CKPT_ETCD_MAX_ENDPOINTS);
	if ((ep = strndup(s, len)) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	c->ep[c->nep++] = ep;
	return 0;
}

int
etcd_open(struct etcd **out, const char *endpoints, int timeout_ms,
    ckd_err *e)
{
	struct etcd *c;
	const char *p, *comma;
	size_t i, total = 0;
	int r;

	*out = NULL;
	if (endpoints == NULL || *endpoints == '\0')
		return err_set(e, CKPT_EINVAL, "etcd: no endpoints");
	if (timeout_ms < 100 || timeout_ms > 600000)
		return err_set(e, CKPT_EINVAL,
		    "etcd: timeout %d ms is out of 100 .. 600000", timeout_ms);
	pthread_once(&etcd_once, etcd_global_init);
	if (etcd_global_rc != CURLE_OK)
		return err_set(e, CKPT_EINTERNAL, "etcd: curl_global_init: %s",
		    curl_easy_strerror(etcd_global_rc));
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	c->timeout_ms = timeout_ms;
	pthread_mutex_init(&c->lock, NULL);
	/* The keeper waits on the monotonic clock. */
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&c->keep_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	for (p = endpoints;; p = comma + 1) {
		comma = strchr(p, ',');
		r = etcd_add_endpoint(c, p,
		    comma != NULL ? (size_t)(comma - p) : strlen(p), e);
		if (r != 0)
			goto fail;
		if (comma == NULL)
			break;
	}
	for (i = 0; i < c->nep; i++)
		total += strlen(c->ep[i]) + 2;
	r = CKPT_ENOMEM;
	if ((c->ep_list = malloc(total + 1)) == NULL)
		goto fail;
	c->ep_list[0] = '\0';
	for (i = 0; i < c->nep; i++) {
		if (i > 0)
			strcat(c->ep_list, ", ");
		strcat(c->ep_list, c->ep[i]);
	}
	if ((c->headers = curl_slist_append(NULL,
	    "Content-Type: application/json")) == NULL)
		goto fail;
	{
		struct curl_slist *h = curl_slist_append(c->headers, "Expect:");
		if (h == NULL)
			goto fail;
		c->headers = h;
	}
	*out = c;
	return 0;
fail:
	if (r == CKPT_ENOMEM)
		err_set(e, r, "etcd: out of memory");
	etcd_close(c);
	return r;
}

const char *
etcd_endpoints(const struct etcd *c)
{
	return c->ep_list;
}

int
etcd_timeout_ms(const struct etcd *c)
{
	return c->timeout_ms;
}

void
etcd_close(struct etcd *c)
{
	size_t i;

	if (c == NULL)
		return;
	etcd_lease_unkeep(c);
	for (i = 0; i < c->npool; i++)
		curl_easy_cleanup(c->pool[i]);
	for (i = 0; i < c->nep; i++)
		free(c->ep[i]);
	curl_slist_free_all(c->headers);
	free(c->ep_list);
	pthread_cond_destroy(&c->keep_cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static CURL *
etcd_handle_get(struct etcd *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->lock);
	if (c->npool > 0)
		h = c->pool[--c->npool];
	pthread_mutex_unlock(&c->lock);
	if (h != NULL) {
		curl_easy_reset(h);
		return h;
	}
	return curl_easy_init();
}

static void
etcd_handle_put(struct etcd *c, CURL *h)
{
	pthread_mutex_lock(&c->lock);
	if (c->npool < ETCD_POOL) {
		c->pool[c->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (h != NULL)
		curl_easy_cleanup(h);
}

static size_t
etcd_buf_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct etcd_buf *b = arg;
	size_t n = size * nmemb, want;
	char *p;

	if (b->len + n > CKPT_ETCD_MAX_REPLY) {
		b->over = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap) {
		want = b->cap ? b->cap : 4096;
		while (want < b->len + n + 1)
			want *= 2;
		if ((p = realloc(b->p, want)) == NULL)
			return 0;
		b->p = p;
		b->cap = want;
	}
	memcpy(b->p + b->len, ptr, n);
	b->len += n;
	b->p[b->len] = '\0';
	return n;
}

/* Options common to every transfer on endpoint ep. */
static int
etcd_setup(struct etcd *c, CURL *h, size_t ep, const char *path,
    const char *body, char *errbuf)
{
	char url[1200];

	snprintf(url, sizeof(url), "%s%s", c->ep[ep], path);
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 5L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 2L) != CURLE_OK)
		return -1;
	errbuf[0] = '\0';
	return 0;
}

/* Map a gRPC status of the gateway to a CKPT_E* code. */
static int
etcd_grpc_code(int64_t grpc)
{
	switch (grpc) {
	case GRPC_DEADLINE_EXCEEDED:
		return CKPT_ETIMEDOUT;
	case GRPC_NOT_FOUND:
		return CKPT_ENOTFOUND;
	case GRPC_INVALID_ARGUMENT:
	case GRPC_FAILED_PRECONDITION:
	case GRPC_OUT_OF_RANGE:
		return CKPT_EINVAL;
	case GRPC_RESOURCE_EXHAUSTED:
		return CKPT_ETOOBIG;
	case GRPC_UNAVAILABLE:
		return CKPT_ECONN;
	default:
		return CKPT_EIO;
	}
}

/* An error document: {"error": "msg", "code": N, "message": "msg"} (a
 * unary method) or {"error": {"grpc_code": N, "message": "msg"}} (a
 * stream). Returns 1 and fills *grpc and msg if doc is one. */
static int
etcd_error_doc(const json_t *doc, int64_t *grpc, char *msg, size_t msgsz)
{
	json_t *err = json_object_get(doc, "error");
	const char *m = NULL;

	if (err == NULL)
		return 0;
	*grpc = 2;  /* unknown */
	if (json_is_object(err)) {
		if (json_i64(err, "grpc_code", grpc) != 0)
			*grpc = 2;
		m = json_string_value(json_object_get(err, "message"));
	} else {
		if (json_i64(doc, "code", grpc) != 0)
			*grpc = 2;
		m = json_string_value(json_object_get(doc, "message"));
		if (m == NULL)
			m = json_string_value(err);
	}
	snprintf(msg, msgsz, "%s", m != NULL ? m : "unknown error");
	return 1;
}

enum etcd_kind {
	ETCD_READ,      /* may be sent again after any transport error */
	ETCD_WRITE,     /* sent again only if it cannot have reached etcd */
};

/*
 * POST req (consumed) to path; *reply is the first JSON document of the
 * answer (the "result" of a stream). Goes round the endpoints as etcd.h
 * describes, until the client's timeout.
 */
static int
etcd_call(struct etcd *c, const char *path, json_t *req, enum etcd_kind kind,
    json_t **reply, ckd_err *e)
{
	char *body = NULL;
	char errbuf[CURL_ERROR_SIZE];
	char last[400] = "";
	int64_t deadline, left, per_connect;
	size_t start, i, round;
	int last_code = CKPT_ECONN, r;
	CURL *h = NULL;

	*reply = NULL;
	body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (body == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	deadline = etcd_now_ms() + c->timeout_ms;
	/* A black-holed endpoint must leave time for the others. */
	per_connect = c->timeout_ms / (int64_t)c->nep;
	if (per_connect < 100)
		per_connect = 100;
	pthread_mutex_lock(&c->lock);
	start = c->preferred;
	pthread_mutex_unlock(&c->lock);

	for (round = 0;; round++) {
		for (i = 0; i < c->nep; i++) {
			size_t ep = (start + i) % c->nep;
			struct etcd_buf buf = { 0 };
			long status = 0, sent = 0;
			CURLcode cc;
			json_t *doc;
			json_error_t jerr;
			int64_t grpc;
			char msg[256];

			if ((left = deadline - etcd_now_ms()) <= 0)
				goto timeout;
			if ((h = etcd_handle_get(c)) == NULL) {
				r = err_set(e, CKPT_ENOMEM, "etcd: out of memory");
				goto out;
			}
			if (etcd_setup(c, h, ep, path, body, errbuf) != 0 ||
			    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, etcd_buf_cb) != CURLE_OK ||
			    curl_easy_setopt(h, CURLOPT_WRITEDATA, &buf) != CURLE_OK ||
			    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left) != CURLE_OK ||
			    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			    (long)(per_connect < left ? per_connect : left)) != CURLE_OK) {
				free(buf.p);
				r = err_set(e, CKPT_EINTERNAL, "etcd: curl_easy_setopt failed");
				goto out;
			}
			cc = curl_easy_perform(h);
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
			curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent);
			etcd_handle_put(c, h);
			h = NULL;
			if (cc != CURLE_OK) {
				free(buf.p);
				if (buf.over) {
					r = err_set(e, CKPT_ETOOBIG,
					    "etcd %s%s: reply over %d bytes",
					    c->ep[ep], path, CKPT_ETCD_MAX_REPLY);
					goto out;
				}
				snprintf(last, sizeof(last), "%s: %s", c->ep[ep],
				    errbuf[0] ? errbuf : curl_easy_strerror(cc));
				last_code = cc == CURLE_OPERATION_TIMEDOUT ?
				    CKPT_ETIMEDOUT : CKPT_ECONN;
				if (kind == ETCD_WRITE && sent > 0) {
					r = err_set(e, last_code,
					    "etcd %s%s: %s (the request was sent: "
					    "outcome unknown)", c->ep[ep], path,
					    errbuf[0] ? errbuf : curl_easy_strerror(cc));
					goto out;
				}
				continue;
			}
			doc = buf.p != NULL ? json_loadb(buf.p, buf.len,
			    JSON_DISABLE_EOF_CHECK, &jerr) : NULL;
			free(buf.p);
			if (doc == NULL) {
				r = err_set(e, CKPT_EPROTO,
				    "etcd %s%s: HTTP %ld, reply is not JSON",
				    c->ep[ep], path, status);
				goto out;
			}
			if (etcd_error_doc(doc, &grpc, msg, sizeof(msg))) {
				json_decref(doc);
				if (grpc == GRPC_UNAVAILABLE && (kind == ETCD_READ ||
				    strstr(msg, "no leader") != NULL)) {
					/* An election, or this member is cut off. */
					snprintf(last, sizeof(last), "%s: %s",
					    c->ep[ep], msg);
					last_code = CKPT_ECONN;
					continue;
				}
				r = err_set(e, etcd_grpc_code(grpc), "etcd %s%s: %s%s",
				    c->ep[ep], path, msg,
				    grpc == GRPC_UNAVAILABLE ? " (outcome unknown)" : "");
				goto out;
			}
			if (status != 200) {
				json_decref(doc);
				r = err_set(e, CKPT_EPROTO, "etcd %s%s: HTTP %ld",
				    c->ep[ep], path, status);
				goto out;
			}
			if (json_object_get(doc, "result") != NULL) {
				json_t *res = json_incref(json_object_get(doc, "result"));
				json_decref(doc);
				doc = res;
			}
			if (!json_is_object(doc)) {
				json_decref(doc);
				r = err_set(e, CKPT_EPROTO,
				    "etcd %s%s: reply is not a JSON object",
				    c->ep[ep], path);
				goto out;
			}
			pthread_mutex_lock(&c->lock);
			c->preferred = ep;
			pthread_mutex_unlock(&c->lock);
			*reply = doc;
			r = 0;
			goto out;
		}
		/* Every endpoint failed this round: pause, then again. */
		left = deadline - etcd_now_ms();
		if (left <= 0)
			goto timeout;
		{
			int64_t ms = round < 3 ? 50 : 200;
			struct timespec ts;

			if (ms > left)
				ms = left;
			ts.tv_sec = ms / 1000;
			ts.tv_nsec = (ms % 1000) * 1000000;
			nanosleep(&ts, NULL);
		}
	}
timeout:
	if (last_code == CKPT_ECONN && last[0] != '\0')
		r = err_set(e, CKPT_ECONN,
		    "etcd unreachable at %s within %d ms (last: %s)",
		    c->ep_list, c->timeout_ms, last);
	else
		r = err_set(e, CKPT_ETIMEDOUT,
		    "etcd at %s did not answer within %d ms%s%s%s",
		    c->ep_list, c->timeout_ms, last[0] ? " (last: " : "", last,
		    last[0] ? ")" : "");
out:
	if (h != NULL)
		etcd_handle_put(c, h);
	free(body);
	return r;
}

/* ---- keys --------------------------------------------------------------- */

static int
etcd_check_key(const char *key, ckd_err *e)
{
	size_t n;

	if (key == NULL || (n = strlen(key)) == 0)
		return err_set(e, CKPT_EINVAL, "etcd: empty key");
	if (n > CKPT_ETCD_MAX_KEY)
		return err_set(e, CKPT_EINVAL, "etcd: key longer than %d bytes",
		    CKPT_ETCD_MAX_KEY);
	return 0;
}

/* The end of the range of keys that start with key: key with its last
 * byte below 0xff incremented, the rest cut; "\0" (every key) if none. */
static char *
etcd_prefix_end(const char *key, size_t *len)
{
	size_t n = strlen(key);
	char *end = malloc(n + 1);

	if (end == NULL)
		return NULL;
	memcpy(end, key, n);
	while (n > 0 && (unsigned char)end[n - 1] == 0xff)
		n--;
	if (n == 0) {
		end[0] = '\0';
		*len = 1;
		return end;
	}
	end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
	*len = n;
	return end;
}

/* {"key": b64, ["range_end": b64]} */
static json_t *
etcd_key_obj(const char *key, int prefix)
{
	json_t *o = json_object();
	char *end = NULL;
	size_t elen;

	if (o == NULL || json_set_b64(o, "key", key, strlen(key)) != 0)
		goto fail;
	if (prefix) {
		if ((end = etcd_prefix_end(key, &elen)) == NULL ||
		    json_set_b64(o, "range_end", end, elen) != 0)
			goto fail;
		free(end);
	}
	return o;
fail:
	free(end);
	json_decref(o);
	return NULL;
}

static json_t *
etcd_put_obj(const char *key, const void *value, size_t len, int64_t lease)
{
	json_t *o = etcd_key_obj(key, 0);

	if (o == NULL || json_set_b64(o, "value", value, len) != 0 ||
	    (lease != 0 && json_object_set_new(o, "lease",
	    json_i64_str(lease)) != 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int
etcd_check_value(const void *value, size_t len, ckd_err *e)
{
	if (value == NULL && len > 0)
		return err_set(e, CKPT_EINVAL, "etcd: NULL value");
	if (len > CKPT_ETCD_MAX_VALUE)
		return err_set(e, CKPT_ETOOBIG, "etcd: value over %d bytes",
		    CKPT_ETCD_MAX_VALUE);
	return 0;
}

int
etcd_put(struct etcd *c, const char *key, const void *value, size_t len,
    int64_t lease, int64_t *rev, ckd_err *e)
{
	json_t *req, *reply;
	int r;

	if ((r = etcd_check_key(key, e)) != 0 ||
	    (r = etcd_check_value(value, len, e)) != 0)
		return r;
	if ((req = etcd_put_obj(key, value, len, lease)) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	if ((r = etcd_call(c, "/v3/kv/put", req, ETCD_WRITE, &reply, e)) != 0)
		return r;
	if (rev != NULL)
		*rev = etcd_header_rev(reply);
	json_decref(reply);
	return 0;
}

static int
etcd_parse_kvs(const json_t *arr, struct etcd_kvs *out, ckd_err *e)
{
	size_t i, n;
	int r;

	if (arr == NULL || json_is_null(arr))
		return 0;
	if (!json_is_array(arr))
		return err_set(e, CKPT_EPROTO, "etcd: kvs is not an array");
	n = json_array_size(arr);
	if (n == 0)
		return 0;
	if ((out->kv = calloc(n, sizeof(*out->kv))) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	for (i = 0; i < n; i++) {
		if ((r = etcd_parse_kv(json_array_get(arr, i), &out->kv[i], e)) != 0)
			return r;
		out->n++;
	}
	return 0;
}

int
etcd_get(struct etcd *c, const char *key, int prefix, struct etcd_kvs *out,
    ckd_err *e)
{
	json_t *req, *reply;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = etcd_check_key(key, e)) != 0)
		return r;
	if ((req = etcd_key_obj(key, prefix)) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	if ((r = etcd_call(c, "/v3/kv/range", req, ETCD_READ, &reply, e)) != 0)
		return r;
	out->revision = etcd_header_rev(reply);
	r = etcd_parse_kvs(json_object_get(reply, "kvs"), out, e);
	json_decref(reply);
	if (r != 0)
		etcd_kvs_free(out);
	return r;
}

/* The current revision of the store. */
static int
etcd_revision(struct etcd *c, const char *key, int64_t *rev, ckd_err *e)
{
	json_t *req, *reply;
	int r;

	if ((req = etcd_key_obj(key, 0)) == NULL ||
	    json_object_set_new(req, "count_only", json_true()) != 0) {
		json_decref(req);
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	}
	if ((r = etcd_call(c, "/v3/kv/range", req, ETCD_READ, &reply, e)) != 0)
		return r;
	*rev = etcd_header_rev(reply);
	json_decref(reply);
	if (*rev <= 0)
		return err_set(e, CKPT_EPROTO, "etcd: a reply without a revision");
	return 0;
}

int
etcd_delete(struct etcd *c, const char *key, int prefix, int64_t *deleted,
    ckd_err *e)
{
	json_t *req, *reply;
	int r;

	if ((r = etcd_check_key(key, e)) != 0)
		return r;
	if ((req = etcd_key_obj(key, prefix)) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	if ((r = etcd_call(c, "/v3/kv/deleterange", req, ETCD_WRITE, &reply,
	    e)) != 0)
		return r;
	if (deleted != NULL && json_i64(reply, "deleted", deleted) != 0)
		r = err_set(e, CKPT_EPROTO, "etcd: malformed deleted count");
	json_decref(reply);
	return r;
}

int
etcd_delete_older(struct etcd *c, const char *prefix, int64_t rev,
    const char *also, int *done, int64_t *deleted, ckd_err *e)
{
	json_t *req, *cmp, *del, *del2 = NULL, *succ, *reply, *resp;
	int r;

	*done = 0;
	if ((r = etcd_check_key(prefix, e)) != 0 ||
	    (also != NULL && (r = etcd_check_key(also, e)) != 0))
		return r;
	if (rev < 0)
		return err_set(e, CKPT_EINVAL, "etcd: negative revision");
	cmp = etcd_key_obj(prefix, 1);
	del = etcd_key_obj(prefix, 1);
	if (also != NULL)
		del2 = etcd_key_obj(also, 0);
	succ = json_array();
	if (cmp == NULL || del == NULL || succ == NULL ||
	    (also != NULL && del2 == NULL) ||
	    json_object_set_new(cmp, "target", json_string("CREATE")) != 0 ||
	    json_object_set_new(cmp, "result", json_string("LESS")) != 0 ||
	    json_object_set_new(cmp, "create_revision",
	    json_i64_str(rev + 1)) != 0 ||
	    json_array_append_new(succ, json_pack("{s:O}",
	    "request_delete_range", del)) != 0 ||
	    (del2 != NULL && json_array_append_new(succ, json_pack("{s:O}",
	    "request_delete_range", del2)) != 0) ||
	    (req = json_pack("{s:[O], s:O}", "compare", cmp, "success",
	    succ)) == NULL) {
		json_decref(cmp);
		json_decref(del);
		json_decref(del2);
		json_decref(succ);
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	}
	json_decref(cmp);
	json_decref(del);
	json_decref(del2);
	json_decref(succ);
	if ((r = etcd_call(c, "/v3/kv/txn", req, ETCD_WRITE, &reply, e)) != 0)
		return r;
	*done = json_is_true(json_object_get(reply, "succeeded"));
	if (deleted != NULL) {
		*deleted = 0;
		resp = json_object_get(json_array_get(
		    json_object_get(reply, "responses"), 0),
		    "response_delete_range");
		if (*done && resp != NULL)
			(void)json_i64(resp, "deleted", deleted);
	}
	json_decref(reply);
	return 0;
}

/* Compact the history up to rev (physical: waits until it is done). */
int
etcd_compact(struct etcd *c, int64_t rev, ckd_err *e)
{
	json_t *req, *reply;
	int r;

	if (rev <= 0)
		return err_set(e, CKPT_EINVAL, "etcd: compaction at revision %"
		    PRId64, rev);
	req = json_pack("{s:o, s:b}", "revision", json_i64_str(rev),
	    "physical", 1);
	if (req == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	if ((r = etcd_call(c, "/v3/kv/compaction", req, ETCD_WRITE, &reply,
	    e)) != 0)
		return r;
	json_decref(reply);
	return 0;
}

/* A transaction: if compare then put key else range key. */
static int
etcd_txn_put(struct etcd *c, const char *key, const char *target,
    const char *field, int64_t expect, const void *value, size_t len,
    int64_t lease, int *won, int64_t *rev, struct etcd_kv *existing,
    ckd_err *e)
{
	json_t *req = NULL, *cmp, *put, *get, *reply = NULL, *resp;
	int r;

	*won = 0;
	if (existing != NULL)
		memset(existing, 0, sizeof(*existing));
	if ((r = etcd_check_key(key, e)) != 0 ||
	    (r = etcd_check_value(value, len, e)) != 0)
		return r;
	if ((cmp = etcd_key_obj(key, 0)) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	req = json_pack("{s:[o], s:[{s:o}], s:[{s:o}]}",
	    "compare", cmp,
	    "success", "request_put",
	    (put = etcd_put_obj(key, value, len, lease)) ? put : json_null(),
	    "failure", "request_range",
	    (get = etcd_key_obj(key, 0)) ? get : json_null());
	if (req == NULL || put == NULL || get == NULL ||
	    json_object_set_new(cmp, "target", json_string(target)) != 0 ||
	    json_object_set_new(cmp, "result", json_string("EQUAL")) != 0 ||
	    json_object_set_new(cmp, field, json_i64_str(expect)) != 0) {
		json_decref(req);
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	}
	if ((r = etcd_call(c, "/v3/kv/txn", req, ETCD_WRITE, &reply, e)) != 0)
		return r;
	*won = json_is_true(json_object_get(reply, "succeeded"));
	if (rev != NULL)
		*rev = etcd_header_rev(reply);
	r = 0;
	if (!*won && existing != NULL) {
		resp = json_object_get(json_array_get(
		    json_object_get(reply, "responses"), 0), "response_range");
		resp = json_array_get(json_object_get(resp, "kvs"), 0);
		if (resp != NULL)
			r = etcd_parse_kv(resp, existing, e);
	}
	json_decref(reply);
	return r;
}

int
etcd_create(struct etcd *c, const char *key, const void *value, size_t len,
    int64_t lease, int *created, int64_t *rev, struct etcd_kv *existing,
    ckd_err *e)
{
	return etcd_txn_put(c, key, "CREATE", "create_revision", 0, value, len,
	    lease, created, rev, existing, e);
}

int
etcd_cas(struct etcd *c, const char *key, int64_t expect_mod_rev,
    const void *value, size_t len, int64_t lease, int *swapped, int64_t *rev,
    ckd_err *e)
{
	if (expect_mod_rev < 0)
		return err_set(e, CKPT_EINVAL, "etcd: negative revision");
	return etcd_txn_put(c, key, "MOD", "mod_revision", expect_mod_rev,
	    value, len, lease, swapped, rev, NULL, e);
}

int
etcd_put_if(struct etcd *c, const struct etcd_cmp *cmp, size_t ncmp,
    const char *key, const void *value, size_t len, int64_t lease, int *won,
    int64_t *rev, ckd_err *e)
{
	json_t *req, *cmps, *succ, *o, *put, *reply = NULL;
	size_t i;
	int r;

	*won = 0;
	if (ncmp > CKPT_ETCD_MAX_COMPARES)
		return err_set(e, CKPT_EINVAL, "etcd: %zu compares (at most %d)",
		    ncmp, CKPT_ETCD_MAX_COMPARES);
	if ((r = etcd_check_key(key, e)) != 0 ||
	    (r = etcd_check_value(value, len, e)) != 0)
		return r;
	for (i = 0; i < ncmp; i++)
		if ((r = etcd_check_key(cmp[i].key, e)) != 0)
			return r;
	req = json_object();
	cmps = json_array();
	succ = json_array();
	put = etcd_put_obj(key, value, len, lease);
	if (req == NULL || cmps == NULL || succ == NULL || put == NULL ||
	    json_object_set_new(req, "compare", cmps) != 0 ||
	    json_object_set_new(req, "success", succ) != 0 ||
	    json_array_append_new(succ, json_pack("{s:o}", "request_put",
	    put)) != 0) {
		if (cmps != NULL && json_object_get(req, "compare") != cmps)
			json_decref(cmps);
		if (succ != NULL && json_object_get(req, "success") != succ)
			json_decref(succ);
		json_decref(req);
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	}
	for (i = 0; i < ncmp; i++) {
		if ((o = etcd_key_obj(cmp[i].key, 0)) == NULL ||
		    json_object_set_new(o, "target", json_string("CREATE")) != 0 ||
		    json_object_set_new(o, "result", json_string(
		    cmp[i].kind == ETCD_EXISTS ? "GREATER" : "EQUAL")) != 0 ||
		    json_object_set_new(o, "create_revision",
		    json_i64_str(0)) != 0 ||
		    json_array_append_new(cmps, o) != 0) {
			json_decref(req);
			return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
		}
	}
	if ((r = etcd_call(c, "/v3/kv/txn", req, ETCD_WRITE, &reply, e)) != 0)
		return r;
	*won = json_is_true(json_object_get(reply, "succeeded"));
	if (rev != NULL)
		*rev = etcd_header_rev(reply);
	json_decref(reply);
	return 0;
}

/* ---- leases ------------------------------------------------------------- */

int
etcd_lease_grant(struct etcd *c, int64_t ttl_s, int64_t *id, ckd_err *e)
{
	json_t *req, *reply;
	int r;

	*id = 0;
	if (ttl_s < 1 || ttl_s > 9000000000LL)
		return err_set(e, CKPT_EINVAL, "etcd: lease TTL %" PRId64
		    " s out of range", ttl_s);
	if ((req = json_pack("{s:o}", "TTL", json_i64_str(ttl_s))) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	if ((r = etcd_call(c, "/v3/lease/grant", req, ETCD_WRITE, &reply, e)) != 0)
		return r;
	if (json_i64(reply, "ID", id) != 0 || *id == 0)
		r = err_set(e, CKPT_EPROTO, "etcd: lease grant without an ID");
	json_decref(reply);
	return r;
}

int
etcd_lease_keepalive(struct etcd *c, int64_t id, int64_t *ttl_left,
    ckd_err *e)
{
	json_t *req, *reply;
	int64_t ttl;
	int r;

	if ((req = json_pack("{s:o}", "ID", json_i64_str(id))) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	/* A refresh is idempotent: a read for the rules of sending again. */
	if ((r = etcd_call(c, "/v3/lease/keepalive", req, ETCD_READ, &reply,
	    e)) != 0)
		return r;
	if (json_i64(reply, "TTL", &ttl) != 0)
		r = err_set(e, CKPT_EPROTO, "etcd: malformed keep-alive reply");
	else if (ttl <= 0)
		r = err_set(e, CKPT_ENOTFOUND, "etcd: lease %" PRIx64
		    " has expired or was revoked", (uint64_t)id);
	else if (ttl_left != NULL)
		*ttl_left = ttl;
	json_decref(reply);
	return r;
}

int
etcd_lease_revoke(struct etcd *c, int64_t id, ckd_err *e)
{
	json_t *req, *reply;
	int r;

	if ((req = json_pack("{s:o}", "ID", json_i64_str(id))) == NULL)
		return err_set(e, CKPT_ENOMEM, "etcd: out of memory");
	if ((r = etcd_call(c, "/v3/lease/revoke", req, ETCD_WRITE, &reply,
	    e)) != 0)
		return r;
	json_decref(reply);
	return 0;
}

static void *
etcd_keeper_main(void *arg)
{
	struct etcd *c = arg;
	int64_t id, interval_ms;
	struct timespec ts;
	ckd_err err;
	int r;

	pthread_mutex_lock(&c->lock);
	while (!c->keeper_stop) {
		id = c->kept_id;
		interval_ms = c->kept_ttl * 1000 / 3;
		if (interval_ms < 200)
			interval_ms = 200;
		pthread_mutex_unlock(&c->lock);
		r = etcd_lease_keepalive(c, id, NULL, &err);
		pthread_mutex_lock(&c->lock);
		c->kept_state = r;
		if (r == CKPT_ENOTFOUND)
			break;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += interval_ms / 1000;
		ts.tv_nsec += (interval_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (!c->keeper_stop &&
		    pthread_cond_timedwait(&c->keep_cond, &c->lock, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

void
etcd_lease_unkeep(struct etcd *c)
{
	bool join;

	pthread_mutex_lock(&c->lock);
	join = c->keeper_running;
	c->keeper_stop = true;
	pthread_cond_broadcast(&c->keep_cond);
	pthread_mutex_unlock(&c->lock);
	if (join)
		pthread_join(c->keeper, NULL);
	pthread_mutex_lock(&c->lock);
	c->keeper_running = false;
	c->keeper_stop = false;
	pthread_mutex_unlock(&c->lock);
}

int
etcd_lease_keep(struct etcd *c, int64_t id, int64_t ttl_s, ckd_err *e)
{
	int r;

	if (ttl_s < 1)
		return err_set(e, CKPT_EINVAL, "etcd: lease TTL must be >= 1 s");
	etcd_lease_unkeep(c);
	pthread_mutex_lock(&c->lock);
	c->kept_id = id;
	c->kept_ttl = ttl_s;
	c->kept_state = 0;
	r = pthread_create(&c->keeper, NULL, etcd_keeper_main, c);
	c->keeper_running = r == 0;
	pthread_mutex_unlock(&c->lock);
	if (r != 0)
		return err_errno(e, r, "etcd: the lease keeper thread");
	return 0;
}

int
etcd_lease_kept(struct etcd *c)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = c->kept_state;
	pthread_mutex_unlock(&c->lock);
	return r;
}

int
etcd_status(struct etcd *c, uint64_t *member_id, uint64_t *leader_id,
    ckd_err *e)
{
	json_t *reply;
	int r;

	if ((r = etcd_call(c, "/v3/maintenance/status", json_object(),
	    ETCD_READ, &reply, e)) != 0)
		return r;
	if (json_u64(json_object_get(reply, "header"), "member_id",
	    member_id) != 0 || json_u64(reply, "leader", leader_id) != 0)
		r = err_set(e, CKPT_EPROTO, "etcd: malformed status reply");
	json_decref(reply);
	return r;
}

/* ---- watch -------------------------------------------------------------- */

/* One document of the stream. Returns -1 to end the stream. */
static int
etcd_watch_doc(struct etcd_watch *w, const char *p, size_t len)
{
	json_t *doc, *res, *events;
	json_error_t jerr;
	int64_t compact, grpc, max_rev = 0;
	char msg[256];
	size_t i;
	int r = 0;

	if ((doc = json_loadb(p, len, 0, &jerr)) == NULL)
		return -1;
	if (etcd_error_doc(doc, &grpc, msg, sizeof(msg))) {
		json_decref(doc);
		return -1;
	}
	res = json_object_get(doc, "result");
	if (!json_is_object(res)) {
		json_decref(doc);
		return -1;
	}
	if (json_is_true(json_object_get(res, "created")))
		w->stream_ok = true;
	if (json_is_true(json_object_get(res, "canceled"))) {
		if (json_i64(res, "compact_revision", &compact) == 0 &&
		    compact > 0) {
			struct etcd_event ev = {
				.type = ETCD_EVENT_COMPACTED,
				.key = w->key,
				.value = "",
				.mod_revision = compact,
			};
			w->fn(w->arg, &ev);
			w->next_rev = compact;
		}
		json_decref(doc);
		return -1;
	}
	events = json_object_get(res, "events");
	if (json_array_size(events) == 0 &&
	    !json_is_true(json_object_get(res, "created"))) {
		/* A progress notification: every event up to the header's
		 * revision has been sent. */
		int64_t hrev = etcd_header_rev(res);

		if (hrev >= w->next_rev)
			w->next_rev = hrev + 1;
	}
	for (i = 0; i < json_array_size(events); i++) {
		json_t *je = json_array_get(events, i);
		const char *type = json_string_value(json_object_get(je, "type"));
		struct etcd_kv kv;
		struct etcd_event ev;

		if (etcd_parse_kv(json_object_get(je, "kv"), &kv, NULL) != 0) {
			r = -1;
			break;
		}
		if (kv.mod_revision >= w->next_rev) {
			ev = (struct etcd_event){
				.type = type != NULL && strcmp(type, "DELETE") == 0 ?
				    ETCD_EVENT_DELETE : ETCD_EVENT_PUT,
				.key = kv.key,
				.value = kv.value,
				.value_len = kv.value_len,
				.mod_revision = kv.mod_revision,
				.create_revision = kv.create_revision,
				.lease = kv.lease,
			};
			w->fn(w->arg, &ev);
			if (kv.mod_revision > max_rev)
				max_rev = kv.mod_revision;
		}
		etcd_kv_free(&kv);
	}
	/* Every event of a revision comes in one document: resume after it. */
	if (max_rev >= w->next_rev)
		w->next_rev = max_rev + 1;
	json_decref(doc);
	return r;
}

static size_t
etcd_watch_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct etcd_watch *w = arg;
	size_t n = size * nmemb, start = 0, i;
	char *p;

	if (w->line_len + n > CKPT_ETCD_MAX_REPLY)
		return 0;
	if (w->line_len + n > w->line_cap) {
		size_t want = w->line_cap ? w->line_cap : 4096;

		while (want < w->line_len + n)
			want *= 2;
		if ((p = realloc(w->line, want)) == NULL)
			return 0;
		w->line = p;
		w->line_cap = want;
	}
	memcpy(w->line + w->line_len, ptr, n);
	w->line_len += n;
	for (i = 0; i < w->line_len; i++) {
		if (w->line[i] != '\n')
			continue;
		if (i > start && etcd_watch_doc(w, w->line + start, i - start) != 0) {
			w->stream_bad = true;
			return 0;
		}
		start = i + 1;
	}
	memmove(w->line, w->line + start, w->line_len - start);
	w->line_len -= start;
	return n;
}

/* Read one stream until it ends or the watch stops. */
static void
etcd_watch_stream(struct etcd_watch *w)
{
	struct etcd *c = w->c;
	char errbuf[CURL_ERROR_SIZE];
	json_t *req = NULL, *create;
	char *body = NULL;
	CURL *h = NULL;
	int running = 1;

	w->line_len = 0;
	w->stream_ok = false;
	w->stream_bad = false;
	if ((create = json_object()) == NULL ||
	    json_set_b64(create, "key", w->key, w->key_len) != 0 ||
	    (w->end != NULL &&
	    json_set_b64(create, "range_end", w->end, w->end_len) != 0) ||
	    json_object_set_new(create, "start_revision",
	    json_i64_str(w->next_rev)) != 0 ||
	    (req = json_pack("{s:o}", "create_request", create)) == NULL ||
	    (body = json_dumps(req, JSON_COMPACT)) == NULL) {
		if (req == NULL)
			json_decref(create);
		goto out;
	}
	if ((h = curl_easy_init()) == NULL ||
	    etcd_setup(c, h, w->ep, "/v3/watch", body, errbuf) != 0 ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, etcd_watch_cb) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, w) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)c->timeout_ms) != CURLE_OK ||
	    curl_multi_add_handle(w->multi, h) != CURLM_OK)
		goto out;
	atomic_store(&w->kick, false);
	while (running && !atomic_load(&w->stop) && !atomic_load(&w->kick)) {
		if (curl_multi_perform(w->multi, &running) != CURLM_OK)
			break;
		if (running && curl_multi_poll(w->multi, NULL, 0, ETCD_POLL_MS,
		    NULL) != CURLM_OK)
			break;
	}
	curl_multi_remove_handle(w->multi, h);
out:
	if (h != NULL)
		curl_easy_cleanup(h);
	free(body);
	json_decref(req);
}

static void *
etcd_watch_main(void *arg)
{
	struct etcd_watch *w = arg;
	int64_t backoff = 50, slept;

	while (!atomic_load(&w->stop)) {
		etcd_watch_stream(w);
		if (atomic_load(&w->stop))
			break;
		/* The stream ended: open it again on the next endpoint. */
		atomic_fetch_add(&w->reconnects, 1);
		if (w->stream_ok)
			backoff = 50;
		else if (backoff < 1000)
			backoff *= 2;
		w->ep = (w->ep + 1) % w->c->nep;
		for (slept = 0; slept < backoff && !atomic_load(&w->stop);
		    slept += 50) {
			struct timespec ts = { 0, 50 * 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

void
etcd_watch_kick(struct etcd_watch *w)
{
	if (w != NULL)
		atomic_store(&w->kick, true);
}

struct etcd_watch *
etcd_watch_start(struct etcd *c, const char *key, int prefix,
    int64_t start_rev, etcd_watch_fn fn, void *arg, ckd_err *e)
{
	struct etcd_watch *w;
	int r;

	if (etcd_check_key(key, e) != 0)
		return NULL;
	if (start_rev <= 0) {
		if (etcd_revision(c, key, &start_rev, e) != 0)
			return NULL;
		start_rev++;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->key = strdup(key)) == NULL ||
	    (prefix && (w->end = etcd_prefix_end(key, &w->end_len)) == NULL) ||
	    (w->multi = curl_multi_init()) == NULL) {
		err_set(e, CKPT_ENOMEM, "etcd: out of memory");
		goto fail;
	}
	w->key_len = strlen(key);
	w->c = c;
	w->fn = fn;
	w->arg = arg;
	w->next_rev = start_rev;
	pthread_mutex_lock(&c->lock);
	w->ep = c->preferred;
	pthread_mutex_unlock(&c->lock);
	atomic_init(&w->stop, false);
	atomic_init(&w->reconnects, 0);
	if ((r = pthread_create(&w->thread, NULL, etcd_watch_main, w)) != 0) {
		err_errno(e, r, "etcd: the watch thread");
		goto fail;
	}
	return w;
fail:
	if (w != NULL) {
		if (w->multi != NULL)
			curl_multi_cleanup(w->multi);
		free(w->end);
		free(w->key);
		free(w);
	}
	return NULL;
}

void
etcd_watch_stop(struct etcd_watch *w)
{
	if (w == NULL)
		return;
	atomic_store(&w->stop, true);
	curl_multi_wakeup(w->multi);
	pthread_join(w->thread, NULL);
	curl_multi_cleanup(w->multi);
	free(w->line);
	free(w->end);
	free(w->key);
	free(w);
}

unsigned
etcd_watch_reconnects(struct etcd_watch *w)
{
	return atomic_load(&w->reconnects);
}
