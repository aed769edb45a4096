/*
 * s3.c - the S3 client: requests on libcurl easy handles signed by
 * CURLOPT_AWS_SIGV4, retries, multipart uploads with parallel parts,
 * ranged GETs, ListObjectsV2 (see s3.h).
 *
 * Every request goes through s3_perform(): it takes a curl handle from the
 * client's pool (connections stay open between requests), sets the
 * request up, and retries 5xx answers, timeouts and connection errors with
 * exponential backoff and jitter. Bodies stream from memory or straight
 * from a file with pread, and ranged GETs stream into memory or a file with
 * pwrite, so memory use does not depend on object sizes: an upload of
 * parallel parts uses `parallel` curl handles and nothing else. Answers
 * that are parsed (errors, lists, upload ids) are kept in memory up to
 * S3_MAX_XML.
 *
 * Payloads are sent with "x-amz-content-sha256: UNSIGNED-PAYLOAD" (the
 * transport protects them; the step format carries its own checksums).
 * Query strings are written already sorted and encoded the way SigV4
 * canonicalizes them, because libcurl signs the query as given.
 *
 * Lock: `lock` guards the handle pool only (a leaf: nothing is called
 * while it is held). Counters are atomics.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "s3.h"
#include "s3conf.h"
#include "s3xml.h"

#define POOL_MAX 64
#define BACKOFF_CAP_MS 5000

struct s3_client {
	struct s3_conf conf;
	char sigv4[96];              /* "aws:amz:REGION:s3" */
	char *token_header;          /* "x-amz-security-token: ..." or NULL */
	uint64_t part_size, threshold;
	unsigned parallel, retries, backoff_ms;
	unsigned connect_timeout_ms, stall_timeout_ms;
	pthread_mutex_t lock;        /* the pool */
	CURL *pool[POOL_MAX];
	size_t npool;
	struct s3_counters counters; /* atomics */
	char desc[384];
};

struct s3_mpu {
	char *bucket, *key, *upload_id;
	unsigned nparts;             /* of an open-ended upload: the most
	                                room, until complete counts them */
	bool open_ended;
	char (*etags)[80];           /* per part, filled by s3_mpu_part */
};

/* A growable answer body, bounded by S3_MAX_XML. */
struct rbuf {
	char *p;
	size_t len, cap;
};

struct s3_req {
	const char *method;
	const char *bucket, *key;    /* key NULL: a bucket request */
	const char *query;           /* encoded and sorted, or NULL */
	const char *cond;            /* a header line (If-Match...), or NULL */
	/* Request body: from body, or from body_fd at body_off. */
	bool has_body;
	const char *body;
	int body_fd;
	off_t body_off;
	uint64_t body_len, sent;
	/* Ranged GET into out_buf or out_fd at out_off. */
	bool data;
	bool short_ok;               /* an object shorter than the range is
	                                not an error (s3_get_first) */
	uint64_t off, len, got;
	char *out_buf;
	int out_fd;
	off_t out_off;
	/* What came back. */
	long status;
	struct rbuf resp;
	char etag[80];
	bool have_etag;
	uint64_t content_length;     /* from the headers (HEAD) */
	uint64_t total;              /* Content-Range: the object's size */
	bool have_total;
	int64_t last_modified;       /* from the headers (HEAD), or 0 */
	char s3code[64];             /* the S3 error code of a failure */
	unsigned attempts;
	/* An error raised inside a callback (stops the request, no retry). */
	int cb_code;
	ckd_err cb_err;
	curl_socket_t sock;          /* its connection's socket, or
	                                CURL_SOCKET_BAD (quickack) */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void
curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- names and URLs ---- */

static bool
is_unreserved(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* Append s URI-encoded the SigV4 way (keep_slash for object keys). */
static int
enc_append(char **dst, size_t *len, size_t *cap, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t need = strlen(s) * 3 + 1;
	if (*len + need > *cap) {
		size_t ncap = (*len + need) * 2;
		char *p = realloc(*dst, ncap);
		if (p == NULL)
			return CKPT_ENOMEM;
		*dst = p;
		*cap = ncap;
	}
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (is_unreserved(*p) || (keep_slash && *p == '/')) {
			(*dst)[(*len)++] = (char)*p;
		} else {
			(*dst)[(*len)++] = '%';
			(*dst)[(*len)++] = hex[*p >> 4];
			(*dst)[(*len)++] = hex[*p & 15];
		}
	}
	(*dst)[*len] = '\0';
	return 0;
}

static int
check_key(const char *key, ckd_err *e)
{
	size_t n = strlen(key);
	if (n == 0 || n > S3_MAX_KEY)
		return err_set(e, CKPT_EINVAL, "s3: object key of %zu bytes (1..%d)", n, S3_MAX_KEY);
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)key[i] < ' ' || key[i] == 0x7f)
			return err_set(e, CKPT_EINVAL, "s3: control character in object key");
	}
	return 0;
}

static bool
bucket_valid(const char *b, size_t n)
{
	if (n < 3 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = b[i];
		bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
		if (!alnum && ch != '.' && ch != '-')
			return false;
		if (!alnum && (i == 0 || i == n - 1))
			return false;
		if (ch == '.' && i > 0 && b[i - 1] == '.')
			return false;
	}
	return true;
}

bool
s3_url_is(const char *path)
{
	return path != NULL && strncmp(path, "s3://", 5) == 0;
}

int
s3_url_parse(const char *url, char **bucket, char **prefix, ckd_err *e)
{
	*bucket = *prefix = NULL;
	if (!s3_url_is(url))
		return err_set(e, CKPT_EINVAL, "'%s': not an s3:// URL", url);
	const char *b = url + 5;
	size_t bn = strcspn(b, "/");
	if (!bucket_valid(b, bn))
		return err_set(e, CKPT_EINVAL,
		    "'%s': bad bucket name (3..63 of a-z 0-9 . -, starting and ending "
		    "with a letter or digit)", url);
	const char *p = b[bn] == '/' ? b + bn + 1 : b + bn;
	size_t pn = strlen(p);
	if (pn > 0 && p[pn - 1] == '/')
		pn--;
	/* Leave room for the step and file names below the prefix. */
	if (pn > 512)
		return err_set(e, CKPT_EPATH, "'%s': prefix longer than 512 bytes", url);
	for (size_t i = 0, start = 0; i <= pn; i++) {
		if (i < pn && ((unsigned char)p[i] < ' ' || p[i] == 0x7f || p[i] == '\\'))
			return err_set(e, CKPT_EPATH, "'%s': control character or '\\' in the prefix", url);
		if (pn > 0 && (i == pn || p[i] == '/')) {
			size_t cn = i - start;
			if (cn == 0 || (cn == 1 && p[start] == '.') ||
			    (cn == 2 && p[start] == '.' && p[start + 1] == '.'))
				return err_set(e, CKPT_EPATH,
				    "'%s': empty, '.' or '..' component in the prefix", url);
			start = i + 1;
		}
	}
	if ((*bucket = strndup(b, bn)) == NULL || (*prefix = strndup(p, pn)) == NULL) {
		free(*bucket);
		*bucket = NULL;
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	return 0;
}

static char *
make_url(const struct s3_client *c, const struct s3_req *r)
{
	char *u = NULL;
	size_t len = 0, cap = 0;
	const char *sep = r->query != NULL ? "?" : "";
	const char *q = r->query != NULL ? r->query : "";
	int n;

	if (c->conf.path_style)
		n = asprintf(&u, "%s://%s/%s%s", c->conf.scheme, c->conf.host, r->bucket,
		    r->key != NULL ? "/" : "");
	else
		n = asprintf(&u, "%s://%s.%s/", c->conf.scheme, r->bucket, c->conf.host);
	if (n < 0)
		return NULL;
	len = (size_t)n;
	cap = len + 1;
	if (r->key != NULL && enc_append(&u, &len, &cap, r->key, true) != 0)
		goto fail;
	char *full;
	if (asprintf(&full, "%s%s%s", u, sep, q) < 0)
		goto fail;
	free(u);
	return full;
fail:
	free(u);
	return NULL;
}

/* "bkt/key" for messages. */
static void
what(char *out, size_t n, const struct s3_req *r)
{
	snprintf(out, n, "%s%s%s", r->bucket, r->key != NULL ? "/" : "",
	    r->key != NULL ? r->key : "");
}

/* ---- client ---- */

int
s3_client_new(struct s3_client **out, const struct s3_opts *opts, ckd_err *e)
{
	static const struct s3_opts none;
	struct s3_client *c;
	int r;

	*out = NULL;
	if (opts == NULL)
		opts = &none;
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK)
		return err_set(e, CKPT_EINTERNAL, "curl_global_init: %s",
		    curl_easy_strerror(curl_init_rc));
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	if ((r = s3conf_load(&c->conf, opts, e)) != 0) {
		free(c);
		return r;
	}
	c->part_size = opts->part_size != 0 ? opts->part_size : 16ull << 20;
	c->threshold = opts->multipart_threshold != 0 ? opts->multipart_threshold : c->part_size;
	c->parallel = opts->parallel != 0 ? opts->parallel : 4;
	c->retries = opts->retries != 0 ? opts->retries : 6;
	c->backoff_ms = opts->backoff_ms != 0 ? opts->backoff_ms : 100;
	c->connect_timeout_ms = opts->connect_timeout_ms != 0 ? opts->connect_timeout_ms : 10000;
	c->stall_timeout_ms = opts->stall_timeout_ms != 0 ? opts->stall_timeout_ms : 30000;
	if (c->part_size < S3_MIN_PART || c->part_size > S3_MAX_PART || c->parallel > 64 ||
	    c->retries > 100 || c->threshold > S3_MAX_PART) {
		s3conf_clear(&c->conf);
		free(c);
		return err_set(e, CKPT_EINVAL,
		    "s3: part size 5 MiB..5 GiB, threshold <= 5 GiB, parallel <= 64, retries <= 100");
	}
	snprintf(c->sigv4, sizeof(c->sigv4), "aws:amz:%s:s3", c->conf.region);
	if (c->conf.session_token != NULL &&
	    asprintf(&c->token_header, "x-amz-security-token: %s", c->conf.session_token) < 0) {
		s3conf_clear(&c->conf);
		free(c);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	pthread_mutex_init(&c->lock, NULL);
	snprintf(c->desc, sizeof(c->desc), "%s://%s (%s), region %s, key %s from %s",
	    c->conf.scheme, c->conf.host,
	    c->conf.path_style ? "path-style" : "virtual-hosted",
	    c->conf.region, c->conf.access_key, c->conf.key_source);
	*out = c;
	return 0;
}

void
s3_client_free(struct s3_client *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->npool; i++)
		curl_easy_cleanup(c->pool[i]);
	pthread_mutex_destroy(&c->lock);
	if (c->token_header != NULL) {
		explicit_bzero(c->token_header, strlen(c->token_header));
		free(c->token_header);
	}
	s3conf_clear(&c->conf);
	free(c);
}

const char *
s3_client_describe(const struct s3_client *c)
{
	return c->desc;
}

void
s3_counters(struct s3_client *c, struct s3_counters *out)
{
	out->requests = __atomic_load_n(&c->counters.requests, __ATOMIC_RELAXED);
	out->retries = __atomic_load_n(&c->counters.retries, __ATOMIC_RELAXED);
	out->bytes_up = __atomic_load_n(&c->counters.bytes_up, __ATOMIC_RELAXED);
	out->bytes_down = __atomic_load_n(&c->counters.bytes_down, __ATOMIC_RELAXED);
}

static CURL *
handle_get(struct s3_client *c)
{
	CURL *h = NULL;
	pthread_mutex_lock(&c->lock);
	if (c->npool > 0)
		h = c->pool[--c->npool];
	pthread_mutex_unlock(&c->lock);
	return h != NULL ? h : curl_easy_init();
}

static void
handle_put(struct s3_client *c, CURL *h)
{
	curl_easy_reset(h);    /* keeps the connections and the DNS cache */
	pthread_mutex_lock(&c->lock);
	if (c->npool < POOL_MAX) {
		c->pool[c->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (h != NULL)
		curl_easy_cleanup(h);
}

/* ---- callbacks ---- */

static int
rbuf_append(struct rbuf *b, const char *p, size_t n)
{
	if (n > S3_MAX_XML - b->len)
		return CKPT_ETOOBIG;
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap != 0 ? b->cap : 4096;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		char *q = realloc(b->p, ncap);
		if (q == NULL)
			return CKPT_ENOMEM;
		b->p = q;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static size_t
read_cb(char *dst, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t want = size * nmemb;
	uint64_t left = r->body_len - r->sent;
	if (want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	if (r->body != NULL) {
		memcpy(dst, r->body + r->sent, want);
		r->sent += want;
		return want;
	}
	ssize_t k;
	do {
		k = pread(r->body_fd, dst, want, r->body_off + (off_t)r->sent);
	} while (k < 0 && errno == EINTR);
	if (k <= 0) {
		r->cb_code = k < 0 ? err_errno(&r->cb_err, errno, "s3: reading the upload source")
		    : err_set(&r->cb_err, CKPT_EIO, "s3: the upload source is shorter than %" PRIu64
		        " bytes", r->body_len);
		return CURL_READFUNC_ABORT;
	}
	r->sent += (uint64_t)k;
	return (size_t)k;
}

static int
seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct s3_req *r = arg;
	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > r->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	r->sent = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

static size_t
write_cb(char *src, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t n = size * nmemb;

	if (!r->data || r->status / 100 != 2) {
		int code = rbuf_append(&r->resp, src, n);
		if (code != 0) {
			r->cb_code = err_set(&r->cb_err, code, "s3: answer larger than %u bytes",
			    S3_MAX_XML);
			return 0;
		}
		return n;
	}
	if (r->status == 200 && r->off + r->got != 0) {
		r->cb_code = err_set(&r->cb_err, CKPT_EPROTO,
		    "s3: the server ignored the byte range");
		return 0;
	}
	if (n > r->len - r->got) {
		r->cb_code = err_set(&r->cb_err, CKPT_EIO,
		    "s3: the server sent more than the %" PRIu64 " bytes asked for", r->len);
		return 0;
	}
	if (r->out_buf != NULL) {
		memcpy(r->out_buf + r->got, src, n);
	} else {
		size_t done = 0;
		while (done < n) {
			ssize_t k = pwrite(r->out_fd, src + done, n - done,
			    r->out_off + (off_t)(r->got + done));
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				r->cb_code = err_errno(&r->cb_err, errno, "s3: writing the download");
				return 0;
			}
			done += (size_t)k;
		}
	}
	r->got += n;
	return n;
}

static bool
header_is(const char *line, size_t n, const char *name, const char **val, size_t *vlen)
{
	size_t k = strlen(name);
	if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return false;
	const char *v = line + k + 1;
	const char *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	*val = v;
	*vlen = (size_t)(end - v);
	return true;
}

/*
 * Acknowledge what came at once. A server that writes an answer's headers
 * and then a short body, with Nagle's algorithm on (Ceph RGW's default),
 * holds the body until the headers are acknowledged, and on a connection
 * kept open from request to request the kernel delays that ACK (40 ms on
 * Linux): every small GET, LIST or error would wait that long. A fresh
 * connection acknowledges at once, which is why one curl(1) per request
 * does not see it. TCP_QUICKACK sends the pending ACK now; it lasts a
 * while only, so it is set again at each header line.
 */
static void
quickack(curl_socket_t s)
{
#ifdef TCP_QUICKACK
	int one = 1;

	if (s != CURL_SOCKET_BAD)
		(void)setsockopt(s, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
#else
	(void)s;
#endif
}

/* A new connection: its socket, for quickack. */
static int
sockopt_cb(void *arg, curl_socket_t s, curlsocktype purpose)
{
	struct s3_req *r = arg;

	(void)purpose;
	r->sock = s;
	return CURL_SOCKOPT_OK;
}

static size_t
header_cb(char *line, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t n = size * nmemb;
	const char *v;
	size_t vlen;

	quickack(r->sock);      /* what follows must not wait */
	if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* A new answer (after 100 Continue or a retry): forget the last. */
		const char *sp = memchr(line, ' ', n);
		r->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
		r->have_etag = false;
	} else if (header_is(line, n, "Content-Length", &v, &vlen)) {
		uint64_t x = 0;
		for (size_t i = 0; i < vlen && v[i] >= '0' && v[i] <= '9'; i++) {
			if (__builtin_mul_overflow(x, 10, &x) ||
			    __builtin_add_overflow(x, (uint64_t)(v[i] - '0'), &x)) {
				x = 0;
				break;
			}
		}
		r->content_length = x;
	} else if (header_is(line, n, "Content-Range", &v, &vlen)) {
		/* "bytes FIRST-LAST/TOTAL" */
		const char *sl = memchr(v, '/', vlen);
		uint64_t x = 0;
		bool ok = sl != NULL && sl + 1 < v + vlen;
		for (const char *q = sl != NULL ? sl + 1 : v; ok && q < v + vlen; q++)
			ok = *q >= '0' && *q <= '9' && !__builtin_mul_overflow(x, 10, &x) &&
			    !__builtin_add_overflow(x, (uint64_t)(*q - '0'), &x);
		r->total = ok ? x : 0;
		r->have_total = ok;
	} else if (header_is(line, n, "Last-Modified", &v, &vlen)) {
		char date[64];
		time_t t;

		if (vlen < sizeof(date)) {
			memcpy(date, v, vlen);
			date[vlen] = '\0';
			t = curl_getdate(date, NULL);
			r->last_modified = t > 0 ? (int64_t)t : 0;
		}
	} else if (header_is(line, n, "ETag", &v, &vlen)) {
		if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
			v++;
			vlen -= 2;
		}
		bool ok = vlen > 0 && vlen < sizeof(r->etag);
		for (size_t i = 0; ok && i < vlen; i++)
			ok = v[i] > ' ' && v[i] < 0x7f && v[i] != '"' && v[i] != '<' && v[i] != '&';
		if (ok) {
			memcpy(r->etag, v, vlen);
			r->etag[vlen] = '\0';
			r->have_etag = true;
		}
	}
	return n;
}

/* ---- errors ---- */

struct err_doc {
	char code[64];
	char message[256];
	bool is_error;
};

static int
err_doc_cb(enum s3xml_event ev, const char *path, const char *text, size_t len, void *arg)
{
	struct err_doc *d = arg;
	if (ev == S3XML_OPEN && strcmp(path, "Error") == 0)
		d->is_error = true;
	if (ev != S3XML_TEXT)
		return 0;
	if (strcmp(path, "Error/Code") == 0)
		snprintf(d->code, sizeof(d->code), "%.*s", (int)len, text);
	else if (strcmp(path, "Error/Message") == 0)
		snprintf(d->message, sizeof(d->message), "%.*s", (int)len, text);
	return 0;
}

static void
parse_error_doc(const struct rbuf *b, struct err_doc *d)
{
	memset(d, 0, sizeof(*d));
	if (b->len > 0)
		(void)s3xml_scan(b->p, b->len, err_doc_cb, d, NULL);
	/* Only printable ASCII goes into our messages. */
	for (char *p = d->message; *p != '\0'; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p >= 0x7f)
			*p = '?';
	for (char *p = d->code; *p != '\0'; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p >= 0x7f)
			*p = '?';
}

static int
code_for(long status, const char *s3code)
{
	/* Quotas first: radosgw answers 403 QuotaExceeded. */
	if (strcmp(s3code, "QuotaExceeded") == 0 || strcmp(s3code, "EntityTooLarge") == 0 ||
	    status == 507)
		return CKPT_ENOSPC;
	if (strcmp(s3code, "InvalidAccessKeyId") == 0 ||
	    strcmp(s3code, "SignatureDoesNotMatch") == 0 ||
	    strcmp(s3code, "AccessDenied") == 0 ||
	    strcmp(s3code, "ExpiredToken") == 0 ||
	    strcmp(s3code, "InvalidToken") == 0 ||
	    strcmp(s3code, "RequestTimeTooSkewed") == 0 ||
	    status == 401 || status == 403)
		return CKPT_EACCES;
	if (status == 404 || strcmp(s3code, "NoSuchKey") == 0 ||
	    strcmp(s3code, "NoSuchBucket") == 0 || strcmp(s3code, "NoSuchUpload") == 0)
		return CKPT_ENOTFOUND;
	if (status == 412)
		return CKPT_EEXIST;
	if (status == 416 || strcmp(s3code, "InvalidRange") == 0 ||
	    strcmp(s3code, "InvalidArgument") == 0 || strcmp(s3code, "InvalidBucketName") == 0 ||
	    strcmp(s3code, "KeyTooLongError") == 0)
		return CKPT_EINVAL;
	if (status == 409 && strcmp(s3code, "BucketNotEmpty") == 0)
		return CKPT_EBUSY;
	return CKPT_EIO;
}

static bool
curl_retryable(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_WEIRD_SERVER_REPLY:
		return true;
	default:
		return false;
	}
}

/* s3_thread_limits: the calling thread's retries (-1: the client's) and
 * time per request (0: none but the client's stall timeout). */
static __thread int thread_retries = -1;
static __thread unsigned thread_timeout_ms;

void
s3_thread_limits(int retries, unsigned timeout_ms)
{
	thread_retries = retries < 0 ? -1 : retries;
	thread_timeout_ms = timeout_ms;
}

/* The retries a request of the calling thread may take. */
static unsigned
retries_of(const struct s3_client *c)
{
	return thread_retries >= 0 ? (unsigned)thread_retries : c->retries;
}

static void
backoff(const struct s3_client *c, unsigned attempt)
{
	uint64_t ms = c->backoff_ms;
	for (unsigned i = 0; i < attempt && ms < BACKOFF_CAP_MS; i++)
		ms *= 2;
	if (ms > BACKOFF_CAP_MS)
		ms = BACKOFF_CAP_MS;
	/* Full jitter over the upper half, so parallel parts spread out. */
	uint64_t x = (uint64_t)now_mono_ns() ^ ((uint64_t)(uintptr_t)&attempt << 7);
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	ms = ms / 2 + x % (ms / 2 + 1);
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- the one request path ---- */

static int
setup(struct s3_client *c, CURL *h, struct s3_req *r, const char *url,
    struct curl_slist *hdrs, char *errbuf)
{
	CURLcode cc = CURLE_OK;
#define SET(opt, val) do { if (cc == CURLE_OK) cc = curl_easy_setopt(h, opt, val); } while (0)
	SET(CURLOPT_URL, url);
	SET(CURLOPT_PATH_AS_IS, 1L);
	SET(CURLOPT_AWS_SIGV4, c->sigv4);
	SET(CURLOPT_USERNAME, c->conf.access_key);
	SET(CURLOPT_PASSWORD, c->conf.secret_key);
	SET(CURLOPT_HTTPHEADER, hdrs);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_ERRORBUFFER, errbuf);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
	SET(CURLOPT_LOW_SPEED_TIME, (long)((c->stall_timeout_ms + 999) / 1000));
	if (thread_timeout_ms > 0)
		SET(CURLOPT_TIMEOUT_MS, (long)thread_timeout_ms);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_HEADERFUNCTION, header_cb);
	SET(CURLOPT_HEADERDATA, r);
	SET(CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
	SET(CURLOPT_SOCKOPTDATA, r);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, r);
	SET(CURLOPT_BUFFERSIZE, 512L * 1024);
	SET(CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
	if (strcmp(r->method, "HEAD") == 0) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (r->has_body || strcmp(r->method, "POST") == 0) {
		SET(CURLOPT_UPLOAD, 1L);
		SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
		SET(CURLOPT_READFUNCTION, read_cb);
		SET(CURLOPT_READDATA, r);
		SET(CURLOPT_SEEKFUNCTION, seek_cb);
		SET(CURLOPT_SEEKDATA, r);
		SET(CURLOPT_CUSTOMREQUEST, r->method);
	} else if (strcmp(r->method, "GET") != 0) {
		SET(CURLOPT_CUSTOMREQUEST, r->method);
	}
#undef SET
	return cc == CURLE_OK ? 0 : -1;
}

static int
s3_perform(struct s3_client *c, struct s3_req *r, ckd_err *e)
{
	char where[S3_MAX_KEY + 80], errbuf[CURL_ERROR_SIZE], range[64];
	struct curl_slist *hdrs = NULL, *h2;
	char *url = NULL;
	CURL *h = NULL;
	int rc = 0;

	what(where, sizeof(where), r);
	if ((url = make_url(c, r)) == NULL || (h = handle_get(c)) == NULL) {
		rc = err_set(e, CKPT_ENOMEM, "s3 %s %s: out of memory", r->method, where);
		goto out;
	}
	if ((hdrs = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD")) == NULL ||
	    (c->token_header != NULL &&
	     (h2 = curl_slist_append(hdrs, c->token_header)) == NULL) ||
	    (r->cond != NULL && (h2 = curl_slist_append(hdrs, r->cond)) == NULL)) {
		rc = err_set(e, CKPT_ENOMEM, "s3 %s %s: out of memory", r->method, where);
		goto out;
	}
	for (unsigned attempt = 0;; attempt++) {
		CURLcode cc;
		r->attempts = attempt + 1;
		r->status = 0;
		r->sent = 0;
		r->resp.len = 0;
		r->have_etag = false;
		r->content_length = 0;
		r->have_total = false;
		r->s3code[0] = '\0';
		r->cb_code = 0;
		errbuf[0] = '\0';
		curl_easy_reset(h);
		if (setup(c, h, r, url, hdrs, errbuf) != 0) {
			rc = err_set(e, CKPT_EINTERNAL, "s3 %s %s: curl option refused", r->method, where);
			goto out;
		}
		if (r->data) {
			/* Resume after what earlier attempts received. */
			snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64,
			    r->off + r->got, r->off + r->len - 1);
			curl_easy_setopt(h, CURLOPT_RANGE, range);
		}
		__atomic_add_fetch(&c->counters.requests, 1, __ATOMIC_RELAXED);
		uint64_t got0 = r->got;
		/* The connection kept from the last request, if any (a new
		 * one is told by sockopt_cb). */
		r->sock = CURL_SOCKET_BAD;
		curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, &r->sock);
		cc = curl_easy_perform(h);
		__atomic_add_fetch(&c->counters.bytes_up, r->sent, __ATOMIC_RELAXED);
		__atomic_add_fetch(&c->counters.bytes_down, r->got - got0, __ATOMIC_RELAXED);
		long status = 0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		if (status != 0)
			r->status = status;
		if (r->cb_code != 0) {
			rc = err_set(e, r->cb_code, "s3 %s %s: %s", r->method, where, r->cb_err.msg);
			goto out;
		}
		/* Retried: connection errors and timeouts, and 5xx answers. */
		if (cc != CURLE_OK) {
			if (!curl_retryable(cc) || attempt >= retries_of(c)) {
				rc = err_set(e, cc == CURLE_OPERATION_TIMEDOUT ? CKPT_ETIMEDOUT : CKPT_EIO,
				    "s3 %s %s at %s://%s: %s%s%s (%u tries)", r->method, where,
				    c->conf.scheme, c->conf.host, curl_easy_strerror(cc),
				    errbuf[0] != '\0' ? ": " : "", errbuf, attempt + 1);
				goto out;
			}
		} else if (r->status >= 500) {
			if (attempt >= retries_of(c)) {
				struct err_doc d;
				parse_error_doc(&r->resp, &d);
				rc = err_set(e, CKPT_EIO, "s3 %s %s: HTTP %ld %s%s%s (%u tries)",
				    r->method, where, r->status, d.code, d.message[0] ? ": " : "",
				    d.message, attempt + 1);
				goto out;
			}
		} else if (r->status / 100 == 2) {
			if (r->data && r->got != r->len && !r->short_ok) {
				/* A complete answer with fewer bytes than asked for
				 * (curl checks Content-Length): the range ends past the
				 * object. */
				rc = err_set(e, CKPT_EINVAL,
				    "s3 %s %s: bytes %" PRIu64 "..%" PRIu64 " asked for, the object "
				    "ends after %" PRIu64 " (HTTP %ld)", r->method, where, r->off,
				    r->off + r->len, r->off + r->got, r->status);
				goto out;
			} else {
				rc = 0;
				goto out;
			}
		} else {
			struct err_doc d;
			parse_error_doc(&r->resp, &d);
			/* Answers to HEAD have no error document. */
			if (d.code[0] == '\0' && r->status == 404)
				snprintf(d.code, sizeof(d.code), "%s",
				    r->key != NULL ? "NoSuchKey" : "NoSuchBucket");
			else if (d.code[0] == '\0' && r->status == 403)
				snprintf(d.code, sizeof(d.code), "AccessDenied");
			snprintf(r->s3code, sizeof(r->s3code), "%s", d.code);
			rc = err_set(e, code_for(r->status, d.code), "s3 %s %s: HTTP %ld %s%s%s",
			    r->method, where, r->status, d.code, d.message[0] ? ": " : "",
			    d.message);
			goto out;
		}
		__atomic_add_fetch(&c->counters.retries, 1, __ATOMIC_RELAXED);
		backoff(c, attempt);
	}
out:
	if (h != NULL)
		handle_put(c, h);
	curl_slist_free_all(hdrs);
	free(url);
	return rc;
}

static void
req_done(struct s3_req *r)
{
	free(r->resp.p);
	r->resp.p = NULL;
}

/* ---- single objects ---- */

/* Send PUT r; with etag, the object's ETag goes there. */
static int
put_perform(struct s3_client *c, struct s3_req *r, char *etag, ckd_err *e)
{
	int rc = s3_perform(c, r, e);

	if (rc == 0 && etag != NULL) {
		if (!r->have_etag)
			rc = err_set(e, CKPT_EPROTO, "s3 PUT %s/%s: no ETag in the "
			    "answer", r->bucket, r->key);
		else
			memcpy(etag, r->etag, sizeof(r->etag));
	}
	req_done(r);
	return rc;
}

static int
put_one(struct s3_client *c, const char *bucket, const char *key, const char *query,
    const void *buf, int fd, off_t off, uint64_t len, char *etag, ckd_err *e)
{
	struct s3_req r = {
		.method = "PUT", .bucket = bucket, .key = key, .query = query,
		.has_body = true, .body = buf, .body_fd = fd, .body_off = off,
		.body_len = len,
	};
	return put_perform(c, &r, etag, e);
}

static int put_source(struct s3_client *c, const char *bucket, const char *key,
    const void *buf, int fd, off_t off, uint64_t len, ckd_err *e);

int
s3_put_cond(struct s3_client *c, const char *bucket, const char *key,
    const void *buf, size_t len, const char *if_match, char *etag,
    ckd_err *e)
{
	char cond[128];
	int rc;

	if ((rc = check_key(key, e)) != 0)
		return rc;
	if (if_match == NULL)
		snprintf(cond, sizeof(cond), "If-None-Match: *");
	else if ((size_t)snprintf(cond, sizeof(cond), "If-Match: %s", if_match) >=
	    sizeof(cond) || strpbrk(if_match, "\r\n") != NULL)
		return err_set(e, CKPT_EINVAL, "s3 PUT %s/%s: bad ETag", bucket, key);
	struct s3_req r = {
		.method = "PUT", .bucket = bucket, .key = key, .cond = cond,
		.has_body = true, .body = buf, .body_fd = -1, .body_len = len,
	};
	return put_perform(c, &r, etag, e);
}

int
s3_put(struct s3_client *c, const char *bucket, const char *key,
    const void *buf, size_t len, ckd_err *e)
{
	return put_source(c, bucket, key, buf, -1, 0, len, e);
}

int
s3_put_fd(struct s3_client *c, const char *bucket, const char *key,
    int fd, off_t off, uint64_t len, ckd_err *e)
{
	if (off < 0)
		return err_set(e, CKPT_EINVAL, "s3: negative file offset");
	return put_source(c, bucket, key, NULL, fd, off, len, e);
}

static int
get_range(struct s3_client *c, const char *bucket, const char *key, uint64_t off,
    uint64_t len, void *buf, int fd, off_t fd_off, ckd_err *e)
{
	uint64_t end;
	int rc;
	if ((rc = check_key(key, e)) != 0)
		return rc;
	if (len == 0)
		return 0;
	if (__builtin_add_overflow(off, len, &end) || end > INT64_MAX ||
	    (buf == NULL && (fd_off < 0 || len > (uint64_t)INT64_MAX - (uint64_t)fd_off)))
		return err_set(e, CKPT_EINVAL, "s3 GET %s/%s: range overflows", bucket, key);
	struct s3_req r = {
		.method = "GET", .bucket = bucket, .key = key, .data = true,
		.off = off, .len = len, .out_buf = buf, .out_fd = fd, .out_off = fd_off,
	};
	rc = s3_perform(c, &r, e);
	req_done(&r);
	return rc;
}

int
s3_get(struct s3_client *c, const char *bucket, const char *key,
    uint64_t off, uint64_t len, void *buf, ckd_err *e)
{
	return get_range(c, bucket, key, off, len, buf, -1, 0, e);
}

int
s3_get_fd(struct s3_client *c, const char *bucket, const char *key,
    uint64_t off, uint64_t len, int fd, off_t fd_off, ckd_err *e)
{
	return get_range(c, bucket, key, off, len, NULL, fd, fd_off, e);
}

int
s3_get_first(struct s3_client *c, const char *bucket, const char *key,
    void *buf, uint64_t cap, uint64_t *got, struct s3_stat *st, ckd_err *e)
{
	int rc;
	if ((rc = check_key(key, e)) != 0)
		return rc;
	if (cap == 0 || cap > INT64_MAX)
		return err_set(e, CKPT_EINVAL, "s3 GET %s/%s: bad length", bucket, key);
	struct s3_req r = {
		.method = "GET", .bucket = bucket, .key = key, .data = true,
		.short_ok = true, .off = 0, .len = cap, .out_buf = buf, .out_fd = -1,
	};
	memset(st, 0, sizeof(*st));
	*got = 0;
	rc = s3_perform(c, &r, e);
	if (rc == 0) {
		/* 206: the size after the '/' of Content-Range; 200 (the
		 * whole object): its length. */
		st->size = r.status == 206 && r.have_total ? r.total : r.got;
		if (r.status == 206 && !r.have_total)
			rc = err_set(e, CKPT_EPROTO, "s3 GET %s/%s: no object size in "
			    "the answer", bucket, key);
		else if (st->size < r.got || (r.got < cap && st->size != r.got))
			rc = err_set(e, CKPT_EPROTO, "s3 GET %s/%s: %" PRIu64 " bytes of "
			    "an object of %" PRIu64, bucket, key, r.got, st->size);
		memcpy(st->etag, r.etag, sizeof(st->etag));
		st->mtime = r.last_modified;
		*got = r.got;
	}
	req_done(&r);
	if (rc == CKPT_EINVAL && strcmp(r.s3code, "InvalidRange") == 0) {
		/* an empty object has no byte 0 */
		rc = s3_head(c, bucket, key, st, e);
		if (rc == 0 && st->size != 0)
			rc = err_set(e, CKPT_EPROTO, "s3 GET %s/%s: byte 0 refused of "
			    "an object of %" PRIu64 " bytes", bucket, key, st->size);
	}
	return rc;
}

int
s3_head(struct s3_client *c, const char *bucket, const char *key,
    struct s3_stat *st, ckd_err *e)
{
	int rc;
	if ((rc = check_key(key, e)) != 0)
		return rc;
	struct s3_req r = { .method = "HEAD", .bucket = bucket, .key = key };
	memset(st, 0, sizeof(*st));
	rc = s3_perform(c, &r, e);
	if (rc == 0) {
		memcpy(st->etag, r.etag, sizeof(st->etag));
		st->size = r.content_length;
		st->mtime = r.last_modified;
	}
	req_done(&r);
	return rc;
}

int
s3_delete(struct s3_client *c, const char *bucket, const char *key, ckd_err *e)
{
	int rc;
	if ((rc = check_key(key, e)) != 0)
		return rc;
	struct s3_req r = { .method = "DELETE", .bucket = bucket, .key = key };
	rc = s3_perform(c, &r, e);
	if (rc == CKPT_ENOTFOUND && strcmp(r.s3code, "NoSuchKey") == 0)
		rc = 0;
	req_done(&r);
	return rc;
}

/* ---- lists ---- */

struct list_parse {
	struct s3_list *out;
	size_t cap_obj, cap_pre;
	char *key;
	uint64_t size;
	bool truncated, root_ok;
	ckd_err *e;
};

static int
parse_u64(const char *t, size_t len, uint64_t *out)
{
	uint64_t x = 0;
	if (len == 0 || len > 20)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (t[i] < '0' || t[i] > '9' || __builtin_mul_overflow(x, 10, &x) ||
		    __builtin_add_overflow(x, (uint64_t)(t[i] - '0'), &x))
			return -1;
	}
	*out = x;
	return 0;
}

static int
grow(void **p, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return 0;
	size_t ncap = *cap != 0 ? *cap * 2 : 64;
	void *q = reallocarray(*p, ncap, elem);
	if (q == NULL)
		return CKPT_ENOMEM;
	*p = q;
	*cap = ncap;
	return 0;
}

static int
list_cb(enum s3xml_event ev, const char *path, const char *text, size_t len, void *arg)
{
	struct list_parse *lp = arg;
	struct s3_list *l = lp->out;

	if (ev == S3XML_OPEN) {
		if (strchr(path, '/') == NULL) {
			if (strcmp(path, "ListBucketResult") != 0)
				return err_set(lp->e, CKPT_EPROTO, "s3 list: answer is <%s>", path);
			lp->root_ok = true;
		} else if (strcmp(path, "ListBucketResult/Contents") == 0) {
			free(lp->key);
			lp->key = NULL;
			lp->size = 0;
		}
		return 0;
	}
	if (ev == S3XML_CLOSE) {
		if (strcmp(path, "ListBucketResult/Contents") != 0)
			return 0;
		if (lp->key == NULL)
			return err_set(lp->e, CKPT_EPROTO, "s3 list: an entry without a key");
		if (grow((void **)&l->objects, &lp->cap_obj, l->nobjects, sizeof(*l->objects)) != 0)
			return err_set(lp->e, CKPT_ENOMEM, "out of memory");
		l->objects[l->nobjects].key = lp->key;
		l->objects[l->nobjects].size = lp->size;
		l->nobjects++;
		lp->key = NULL;
		return 0;
	}
	char **dst = NULL;
	if (strcmp(path, "ListBucketResult/Contents/Key") == 0) {
		free(lp->key);
		lp->key = NULL;
		dst = &lp->key;
	} else if (strcmp(path, "ListBucketResult/Contents/Size") == 0) {
		if (parse_u64(text, len, &lp->size) != 0)
			return err_set(lp->e, CKPT_EPROTO, "s3 list: bad size");
	} else if (strcmp(path, "ListBucketResult/IsTruncated") == 0) {
		lp->truncated = strcmp(text, "true") == 0;
	} else if (strcmp(path, "ListBucketResult/NextContinuationToken") == 0) {
		free(l->next_token);
		l->next_token = NULL;
		dst = &l->next_token;
	} else if (strcmp(path, "ListBucketResult/CommonPrefixes/Prefix") == 0) {
		if (grow((void **)&l->prefixes, &lp->cap_pre, l->nprefixes, sizeof(*l->prefixes)) != 0)
			return err_set(lp->e, CKPT_ENOMEM, "out of memory");
		dst = &l->prefixes[l->nprefixes];
		*dst = NULL;
	}
	if (dst == NULL)
		return 0;
	if (len == 0 || len > S3_MAX_KEY || strlen(text) != len)
		return err_set(lp->e, CKPT_EPROTO, "s3 list: key or token of %zu bytes", len);
	if ((*dst = strndup(text, len)) == NULL)
		return err_set(lp->e, CKPT_ENOMEM, "out of memory");
	if (strcmp(path, "ListBucketResult/CommonPrefixes/Prefix") == 0)
		l->nprefixes++;
	return 0;
}

void
s3_list_free(struct s3_list *l)
{
	for (size_t i = 0; i < l->nobjects; i++)
		free(l->objects[i].key);
	for (size_t i = 0; i < l->nprefixes; i++)
		free(l->prefixes[i]);
	free(l->objects);
	free(l->prefixes);
	free(l->next_token);
	memset(l, 0, sizeof(*l));
}

/* Append "&name=value" (value encoded) to a query being built. */
static int
query_add(char **q, size_t *len, size_t *cap, const char *name, const char *value)
{
	char head[64];
	snprintf(head, sizeof(head), "%s%s=", *len > 0 ? "&" : "", name);
	size_t hn = strlen(head);
	if (*len + hn + 1 > *cap) {
		char *p = realloc(*q, *len + hn + 64);
		if (p == NULL)
			return CKPT_ENOMEM;
		*q = p;
		*cap = *len + hn + 64;
	}
	memcpy(*q + *len, head, hn + 1);
	*len += hn;
	return enc_append(q, len, cap, value, false);
}

int
s3_list(struct s3_client *c, const char *bucket, const char *prefix,
    const char *delimiter, const char *token, unsigned max_keys,
    struct s3_list *out, ckd_err *e)
{
	struct list_parse lp = { .out = out, .e = e };
	char *q = NULL, mk[16];
	size_t qlen = 0, qcap = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (max_keys > 1000)
		max_keys = 1000;
	snprintf(mk, sizeof(mk), "%u", max_keys);
	/* Sorted by name, as SigV4 wants them. */
	if ((token != NULL && (rc = query_add(&q, &qlen, &qcap, "continuation-token", token)) != 0) ||
	    (delimiter != NULL && (rc = query_add(&q, &qlen, &qcap, "delimiter", delimiter)) != 0) ||
	    (rc = query_add(&q, &qlen, &qcap, "list-type", "2")) != 0 ||
	    (max_keys != 0 && (rc = query_add(&q, &qlen, &qcap, "max-keys", mk)) != 0) ||
	    (prefix != NULL && prefix[0] != '\0' &&
	     (rc = query_add(&q, &qlen, &qcap, "prefix", prefix)) != 0)) {
		free(q);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	struct s3_req r = { .method = "GET", .bucket = bucket, .query = q };
	if ((rc = s3_perform(c, &r, e)) != 0)
		goto out;
	if (r.resp.len == 0) {
		rc = err_set(e, CKPT_EPROTO, "s3 list %s: empty answer", bucket);
		goto out;
	}
	if ((rc = s3xml_scan(r.resp.p, r.resp.len, list_cb, &lp, e)) != 0)
		goto out;
	if (!lp.root_ok) {
		rc = err_set(e, CKPT_EPROTO, "s3 list %s: no ListBucketResult", bucket);
		goto out;
	}
	if (lp.truncated && out->next_token == NULL) {
		rc = err_set(e, CKPT_EPROTO, "s3 list %s: truncated without a continuation token",
		    bucket);
		goto out;
	}
	if (!lp.truncated) {
		free(out->next_token);
		out->next_token = NULL;
	}
out:
	free(lp.key);
	free(q);
	req_done(&r);
	if (rc != 0)
		s3_list_free(out);
	return rc;
}

/* ---- multipart ---- */

struct upload_id_parse {
	char *id;
	bool root_ok;
};

static int
upload_id_cb(enum s3xml_event ev, const char *path, const char *text, size_t len, void *arg)
{
	struct upload_id_parse *u = arg;
	if (ev == S3XML_OPEN && strcmp(path, "InitiateMultipartUploadResult") == 0)
		u->root_ok = true;
	if (ev == S3XML_TEXT && strcmp(path, "InitiateMultipartUploadResult/UploadId") == 0) {
		if (len == 0 || len > 1024 || strlen(text) != len)
			return CKPT_EPROTO;
		free(u->id);
		if ((u->id = strndup(text, len)) == NULL)
			return CKPT_ENOMEM;
	}
	return 0;
}

static void
mpu_free(struct s3_mpu *m)
{
	if (m == NULL)
		return;
	free(m->bucket);
	free(m->key);
	free(m->upload_id);
	free(m->etags);
	free(m);
}

int
s3_mpu_begin(struct s3_client *c, const char *bucket, const char *key,
    unsigned nparts, struct s3_mpu **out, ckd_err *e)
{
	struct upload_id_parse u = { 0 };
	struct s3_mpu *m = NULL;
	int rc;

	*out = NULL;
	if ((rc = check_key(key, e)) != 0)
		return rc;
	if (nparts > S3_MAX_PARTS)
		return err_set(e, CKPT_EINVAL, "s3: %u parts (1..%d)", nparts, S3_MAX_PARTS);
	bool open_ended = nparts == 0;
	if (open_ended)
		nparts = S3_MAX_PARTS;  /* calloc: untouched room costs no memory */
	if ((m = calloc(1, sizeof(*m))) == NULL || (m->bucket = strdup(bucket)) == NULL ||
	    (m->key = strdup(key)) == NULL || (m->etags = calloc(nparts, sizeof(*m->etags))) == NULL) {
		mpu_free(m);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	m->nparts = nparts;
	m->open_ended = open_ended;
	struct s3_req r = { .method = "POST", .bucket = bucket, .key = key, .query = "uploads=" };
	if ((rc = s3_perform(c, &r, e)) != 0)
		goto out;
	int sr = r.resp.len > 0 ? s3xml_scan(r.resp.p, r.resp.len, upload_id_cb, &u, e) : 0;
	if (sr == CKPT_ENOMEM) {
		rc = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if (sr != 0 || !u.root_ok || u.id == NULL) {
		rc = err_set(e, CKPT_EPROTO, "s3 POST %s/%s?uploads: no UploadId in the answer",
		    bucket, key);
		goto out;
	}
	m->upload_id = u.id;
	u.id = NULL;
	*out = m;
	m = NULL;
out:
	free(u.id);
	req_done(&r);
	mpu_free(m);
	return rc;
}

static char *
mpu_query(const struct s3_mpu *m, unsigned partno)
{
	char *q = NULL, pn[32];
	size_t len = 0, cap = 0;
	snprintf(pn, sizeof(pn), "%u", partno);
	if ((partno != 0 && query_add(&q, &len, &cap, "partNumber", pn) != 0) ||
	    query_add(&q, &len, &cap, "uploadId", m->upload_id) != 0) {
		free(q);
		return NULL;
	}
	return q;
}

int
s3_mpu_part(struct s3_client *c, struct s3_mpu *m, unsigned partno,
    const void *buf, int fd, off_t off, uint64_t len, ckd_err *e)
{
	if (partno == 0 || partno > m->nparts)
		return err_set(e, CKPT_EINVAL, "s3: part %u of %u", partno, m->nparts);
	if (len > S3_MAX_PART)
		return err_set(e, CKPT_ETOOBIG, "s3: part of %" PRIu64 " bytes (max 5 GiB)", len);
	char *q = mpu_query(m, partno);
	if (q == NULL)
		return err_set(e, CKPT_ENOMEM, "out of memory");
	int rc = put_one(c, m->bucket, m->key, q, buf, fd, off, len, m->etags[partno - 1], e);
	free(q);
	return rc;
}

struct complete_parse {
	bool result, error;
	char code[64];
};

static int
complete_cb(enum s3xml_event ev, const char *path, const char *text, size_t len, void *arg)
{
	struct complete_parse *p = arg;
	if (ev == S3XML_OPEN && strcmp(path, "CompleteMultipartUploadResult") == 0)
		p->result = true;
	if (ev == S3XML_OPEN && strcmp(path, "Error") == 0)
		p->error = true;
	if (ev == S3XML_TEXT && strcmp(path, "Error/Code") == 0)
		snprintf(p->code, sizeof(p->code), "%.*s", (int)len, text);
	return 0;
}

int
s3_mpu_complete(struct s3_client *c, struct s3_mpu *m, ckd_err *e)
{
	struct rbuf body = { 0 };
	char *q = NULL, line[160];
	int rc = 0;

	if (m->open_ended) {
		/* The parts are 1..the last one uploaded. */
		unsigned n = m->nparts;
		while (n > 0 && m->etags[n - 1][0] == '\0')
			n--;
		if (n == 0) {
			rc = err_set(e, CKPT_EINVAL, "s3 complete %s/%s: no part was uploaded",
			    m->bucket, m->key);
			goto out;
		}
		m->nparts = n;
		m->open_ended = false;
	}
	for (unsigned i = 0; i < m->nparts; i++) {
		if (m->etags[i][0] == '\0') {
			rc = err_set(e, CKPT_EINVAL, "s3 complete %s/%s: part %u was not uploaded",
			    m->bucket, m->key, i + 1);
			goto out;
		}
	}
	if ((q = mpu_query(m, 0)) == NULL ||
	    rbuf_append(&body, "<CompleteMultipartUpload>", 25) != 0) {
		rc = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < m->nparts; i++) {
		int n = snprintf(line, sizeof(line),
		    "<Part><PartNumber>%u</PartNumber><ETag>\"%s\"</ETag></Part>", i + 1, m->etags[i]);
		if (rbuf_append(&body, line, (size_t)n) != 0) {
			rc = err_set(e, CKPT_ENOMEM, "out of memory");
			goto out;
		}
	}
	if (rbuf_append(&body, "</CompleteMultipartUpload>", 26) != 0) {
		rc = err_set(e, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	/* A 200 answer may still carry an <Error> (S3 sends its headers
	 * before the parts are joined): retried like a 5xx. A retry after a
	 * lost answer finds the upload gone (NoSuchUpload): the object is
	 * there when its ETag says it was made of our parts. */
	for (unsigned attempt = 0;; attempt++) {
		struct s3_req r = {
			.method = "POST", .bucket = m->bucket, .key = m->key, .query = q,
			.has_body = true, .body = body.p, .body_len = body.len,
		};
		struct complete_parse p = { 0 };
		rc = s3_perform(c, &r, e);
		bool lost = rc == CKPT_ENOTFOUND && strcmp(r.s3code, "NoSuchUpload") == 0 &&
		    (attempt > 0 || r.attempts > 1);
		if (rc == 0 && r.resp.len > 0)
			(void)s3xml_scan(r.resp.p, r.resp.len, complete_cb, &p, NULL);
		req_done(&r);
		if (lost) {
			struct s3_stat st;
			char tail[16];
			snprintf(tail, sizeof(tail), "-%u", m->nparts);
			if (s3_head(c, m->bucket, m->key, &st, NULL) == 0 &&
			    strlen(st.etag) > strlen(tail) &&
			    strcmp(st.etag + strlen(st.etag) - strlen(tail), tail) == 0) {
				rc = 0;
				goto out;
			}
			goto out;
		}
		if (rc != 0)
			goto out;
		if (p.result && !p.error)
			goto out;
		if (attempt >= retries_of(c)) {
			rc = err_set(e, CKPT_EIO, "s3 complete %s/%s: %s", m->bucket, m->key,
			    p.error ? p.code : "no CompleteMultipartUploadResult in the answer");
			goto out;
		}
		__atomic_add_fetch(&c->counters.retries, 1, __ATOMIC_RELAXED);
		backoff(c, attempt);
	}
out:
	free(q);
	free(body.p);
	mpu_free(m);
	return rc;
}

int
s3_mpu_abort(struct s3_client *c, struct s3_mpu *m, ckd_err *e)
{
	int rc;
	char *q = mpu_query(m, 0);
	if (q == NULL) {
		mpu_free(m);
		return err_set(e, CKPT_ENOMEM, "out of memory");
	}
	struct s3_req r = { .method = "DELETE", .bucket = m->bucket, .key = m->key, .query = q };
	rc = s3_perform(c, &r, e);
	if (rc == CKPT_ENOTFOUND && strcmp(r.s3code, "NoSuchUpload") == 0)
		rc = 0;
	req_done(&r);
	free(q);
	mpu_free(m);
	return rc;
}

/* ---- whole uploads ---- */

struct upload {
	struct s3_client *c;
	struct s3_mpu *m;
	const char *buf;
	int fd;
	off_t off;
	uint64_t len, part;
	unsigned next;               /* atomic: next part index */
	int failed;                  /* atomic: first error wins */
	ckd_err err;
};

static void *
upload_worker(void *arg)
{
	struct upload *u = arg;
	ckd_err e;
	for (;;) {
		if (__atomic_load_n(&u->failed, __ATOMIC_ACQUIRE) != 0)
			break;
		unsigned i = __atomic_fetch_add(&u->next, 1, __ATOMIC_RELAXED);
		if (i >= u->m->nparts)
			break;
		uint64_t at = (uint64_t)i * u->part;
		uint64_t n = u->len - at < u->part ? u->len - at : u->part;
		int rc = s3_mpu_part(u->c, u->m, i + 1, u->buf != NULL ? u->buf + at : NULL,
		    u->fd, u->off + (off_t)at, n, &e);
		if (rc != 0) {
			int zero = 0;
			if (__atomic_compare_exchange_n(&u->failed, &zero, rc, false,
			    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
				u->err = e;
			break;
		}
	}
	return NULL;
}

static int
put_source(struct s3_client *c, const char *bucket, const char *key,
    const void *buf, int fd, off_t off, uint64_t len, ckd_err *e)
{
	int rc;
	if ((rc = check_key(key, e)) != 0)
		return rc;
	if (buf == NULL && len > (uint64_t)INT64_MAX - (uint64_t)off)
		return err_set(e, CKPT_EINVAL, "s3 PUT %s/%s: range overflows", bucket, key);
	if (len <= c->threshold)
		return put_one(c, bucket, key, NULL, buf, fd, off, len, NULL, e);

	/* Parts of part_size, larger when 10000 of them would not do. */
	uint64_t part = c->part_size;
	if (len / part >= S3_MAX_PARTS) {
		part = (len + S3_MAX_PARTS - 1) / S3_MAX_PARTS;
		part = (part + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
	}
	if (part > S3_MAX_PART)
		return err_set(e, CKPT_ETOOBIG, "s3 PUT %s/%s: %" PRIu64 " bytes is over S3's limit",
		    bucket, key, len);
	unsigned nparts = (unsigned)((len + part - 1) / part);
	struct upload u = {
		.c = c, .buf = buf, .fd = fd, .off = off, .len = len, .part = part,
	};
	if ((rc = s3_mpu_begin(c, bucket, key, nparts, &u.m, e)) != 0)
		return rc;
	unsigned nthreads = c->parallel < nparts ? c->parallel : nparts;
	pthread_t tids[64];
	unsigned started = 0;
	for (unsigned i = 1; i < nthreads; i++) {
		if (pthread_create(&tids[started], NULL, upload_worker, &u) != 0)
			break;
		started++;
	}
	upload_worker(&u);
	for (unsigned i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	if (u.failed != 0) {
		(void)s3_mpu_abort(c, u.m, NULL);
		return err_set(e, u.failed, "%s", u.err.msg);
	}
	return s3_mpu_complete(c, u.m, e);
}

/* ---- buckets ---- */

int
s3_bucket_create(struct s3_client *c, const char *bucket, ckd_err *e)
{
	char body[160];
	size_t blen = 0;
	int rc;
	if (!bucket_valid(bucket, strlen(bucket)))
		return err_set(e, CKPT_EINVAL, "s3: bad bucket name '%s'", bucket);
	if (strcmp(c->conf.region, "us-east-1") != 0)
		blen = (size_t)snprintf(body, sizeof(body),
		    "<CreateBucketConfiguration><LocationConstraint>%s</LocationConstraint>"
		    "</CreateBucketConfiguration>", c->conf.region);
	struct s3_req r = {
		.method = "PUT", .bucket = bucket, .has_body = true, .body = body, .body_len = blen,
	};
	rc = s3_perform(c, &r, e);
	if (rc != 0 && strcmp(r.s3code, "BucketAlreadyOwnedByYou") == 0)
		rc = 0;
	req_done(&r);
	return rc;
}

int
s3_bucket_delete(struct s3_client *c, const char *bucket, ckd_err *e)
{
	struct s3_req r = { .method = "DELETE", .bucket = bucket };
	int rc = s3_perform(c, &r, e);
	req_done(&r);
	return rc;
}
