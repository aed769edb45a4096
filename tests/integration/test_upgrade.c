/*
 * test_upgrade.c - versions across upgrades.
 *
 * Protocol (raw frames): a hello offering a range gets the highest
 * version both sides speak and the daemon's range; an old hello with only
 * `version` still works; ranges that do not meet, empty ranges and a
 * hello without any version get CKPT_EVERSION with a message naming both
 * ranges, then the connection closes. libckpt's own hello negotiates.
 *
 * On disk: a step whose _METADATA or _CHECKPOINT_METADATA carries a
 * format version newer than this ckptd writes is refused on restore with
 * CKPT_EVERSION and a message that says a newer ckptd wrote it.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ckpt.pb-c.h"
#include "harness.h"
#include "raw.h"

#define V_MIN CKPT__VERSION__PROTOCOL_VERSION_MIN
#define V_MAX CKPT__VERSION__PROTOCOL_VERSION

static struct hx_daemon d;

/* A raw connection to the daemon (raw.h). */
static int connect_raw(void)
{
	int fd = raw_connect(d.sock);

	if (fd < 0)
		bail_out("connect %s: %s", d.sock, strerror(errno));
	return fd;
}

/* Send a hello (fields set as given; has < 0 leaves one out) and read
 * the reply. */
static Ckpt__Response *hello(int fd, int has_v, uint32_t v, int has_min,
    uint32_t min, int has_max, uint32_t max)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Hello h = CKPT__HELLO__INIT;

	h.has_version = has_v;
	h.version = v;
	h.has_min_version = has_min;
	h.min_version = min;
	h.has_max_version = has_max;
	h.max_version = max;
	h.client = "test_upgrade";
	req.has_id = 1;
	req.id = 1;
	req.op_case = CKPT__REQUEST__OP_HELLO;
	req.hello = &h;
	if (raw_send_req(fd, &req, NULL, 0) != 0)
		bail_out("send: %s", strerror(errno));
	return raw_recv(fd, 1, 5000);
}

static void accepted(const char *what, int has_v, uint32_t v, int has_min,
    uint32_t min, int has_max, uint32_t max, uint32_t want)
{
	int fd = connect_raw();
	Ckpt__Response *r = hello(fd, has_v, v, has_min, min, has_max, max);

	if (!ok(r != NULL && r->code == 0 &&
	    r->body_case == CKPT__RESPONSE__BODY_HELLO, "%s: accepted", what)) {
		if (r != NULL)
			diag("code %d: %s", r->code, r->message ? r->message : "");
	} else {
		is_int(r->hello->version, want, "... version %u chosen", want);
		ok(r->hello->has_min_version && r->hello->has_max_version &&
		    r->hello->min_version == V_MIN &&
		    r->hello->max_version == V_MAX,
		    "... and the daemon's range %u..%u told", V_MIN, V_MAX);
	}
	if (r != NULL)
		ckpt__response__free_unpacked(r, NULL);
	close(fd);
}

static void refused(const char *what, int has_v, uint32_t v, int has_min,
    uint32_t min, int has_max, uint32_t max, const char *needle)
{
	int fd = connect_raw();
	Ckpt__Response *r = hello(fd, has_v, v, has_min, min, has_max, max);

	ok(r != NULL, "%s: answered", what);
	if (r != NULL) {
		is_int(r->code, CKPT_EVERSION, "... with CKPT_EVERSION");
		has(r->message ? r->message : "", needle, "... saying why (%s)",
		    r->message ? r->message : "");
		ckpt__response__free_unpacked(r, NULL);
	}
	ok(raw_closed(fd, 5000, NULL), "... then closed");
	close(fd);
}

static void protocol_ranges(void)
{
	char ours[64];
	ckpt_client *c = NULL;

	accepted("old client, version only", 1, V_MAX, 0, 0, 0, 0, V_MAX);
	accepted("range min..max", 1, V_MIN, 1, V_MIN, 1, V_MAX, V_MAX);
	accepted("a newer client's range reaching down to ours", 1, V_MAX,
	    1, V_MAX, 1, V_MAX + 5, V_MAX);
	accepted("range with only max_version (min from version)", 1, V_MIN,
	    0, 0, 1, V_MAX + 3, V_MAX);
	snprintf(ours, sizeof ours, "speaks %u..%u", V_MIN, V_MAX);
	refused("a client newer than the daemon's range", 1, V_MAX + 1, 1,
	    V_MAX + 1, 1, V_MAX + 4, ours);
	refused("... says which side to upgrade", 1, V_MAX + 1, 1, V_MAX + 1,
	    1, V_MAX + 4, "upgrade ckptd");
	refused("a client older than the daemon's range", 1, 0, 1, 0, 1,
	    V_MIN - 1, "upgrade the client library");
	refused("old client with an unknown version", 1, V_MAX + 7, 0, 0, 0,
	    0, "client speaks");
	refused("an empty range", 1, V_MAX, 1, V_MAX + 1, 1, V_MAX,
	    "empty protocol range");
	refused("a hello with no version at all", 0, 0, 0, 0, 0, 0,
	    "no protocol version");

	ok_call(ckpt_connect(d.sock, &c), c, "libckpt negotiates its range");
	ok_call(ckpt_ping(c), c, "... and talks");
	ckpt_disconnect(c);
}

/* Rewrite "version": 1 in a JSON file of the step to version 9. */
static int bump_version(const char *path, const char *from, const char *to)
{
	char *text = hx_read_file(path, NULL), *p, *out;
	size_t n;
	int r;

	if (text == NULL || (p = strstr(text, from)) == NULL) {
		free(text);
		return -1;
	}
	n = strlen(text) + strlen(to) + 1;
	out = malloc(n);
	snprintf(out, n, "%.*s%s%s", (int)(p - text), text, to,
	    p + strlen(from));
	r = hx_write_file(path, out);
	free(out);
	free(text);
	return r;
}

static void disk_format(void)
{
	char root[HX_PATH], path[HX_PATH];
	ckpt_client *c = NULL;
	ckpt_manager *m = NULL;
	ckpt_restored *res = NULL;
	ckpt_tree *t;
	ckpt_save_args *a;
	float w[4] = { 1, 2, 3, 4 };
	int64_t shape[1] = { 4 };
	uint64_t step;
	int r;

	hx_path(&d, root, "fmt");
	if (hx_connect(&d, &c) != 0 ||
	    !ok_call(ckpt_manager_open(c, root, NULL, &m), c, "open"))
		bail_out("cannot open");
	for (step = 1; step <= 3; step++) {
		t = ckpt_tree_new();
		a = ckpt_save_args_new();
		ckpt_tree_add_array(t, "w", CKPT_F32, 1, shape, w, sizeof w);
		ckpt_save_args_add_tree(a, NULL, CKPT_HANDLER_STANDARD, t);
		ckpt_save_args_set_force(a, 1);
		ok_call(ckpt_save(m, step, a, NULL), c, "save step %llu",
		    (unsigned long long)step);
		ckpt_save_args_free(a);
		ckpt_tree_free(t);
	}
	ok_call(ckpt_wait_until_finished(m), c, "steps committed");

	/* Step 2: a newer tree format; step 3: a newer step format. */
	hx_path(&d, path, "fmt/2/default/_METADATA");
	ok(bump_version(path, "\"version\": 1", "\"version\": 9") == 0 ||
	    bump_version(path, "\"version\":1", "\"version\":9") == 0,
	    "step 2's _METADATA now says format version 9");
	hx_path(&d, path, "fmt/3/_CHECKPOINT_METADATA");
	ok(bump_version(path, "\"version\": 1", "\"version\": 9") == 0 ||
	    bump_version(path, "\"version\":1", "\"version\":9") == 0,
	    "step 3's _CHECKPOINT_METADATA now says format version 9");

	r = ckpt_restore(m, 1, NULL, &res);
	ok_call(r, c, "step 1 (this format) restores");
	ckpt_restored_free(res);
	res = NULL;
	r = ckpt_restore(m, 2, NULL, &res);
	is_int(r, CKPT_EVERSION, "step 2 (newer tree format): CKPT_EVERSION");
	has(ckpt_manager_errmsg(m), "newer ckptd", "... a newer ckptd wrote "
	    "it (%s)", ckpt_manager_errmsg(m));
	ckpt_restored_free(res);
	res = NULL;
	r = ckpt_restore(m, 3, NULL, &res);
	is_int(r, CKPT_EVERSION, "step 3 (newer step format): CKPT_EVERSION");
	has(ckpt_manager_errmsg(m), "format version 9", "... naming the "
	    "version (%s)", ckpt_manager_errmsg(m));
	ckpt_restored_free(res);
	ckpt_manager_close(m);
	ckpt_disconnect(c);
}

int main(void)
{
	hx_init(&d);
	if (hx_start(&d) != 0)
		bail_out("ckptd did not start");
	protocol_ranges();
	if (!d.external)
		disk_format();
	is_int(hx_stop(&d), 0, "ckptd exits cleanly");
	hx_cleanup(&d);
	return done_testing();
}
