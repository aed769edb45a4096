/*
 * crashfs.c - a FUSE filesystem that can lose power.
 *
 * A passthrough over a backing directory (the live state, what programs
 * see) that also keeps, in memory, the state a strict POSIX filesystem
 * would have on its disk (the durable state):
 *
 *   - the contents of a regular file become durable when the file is
 *     fsynced or fdatasynced (through any descriptor);
 *   - the entries of a directory (create, mkdir, rename, unlink, rmdir)
 *     become durable when that directory is fsynced: the durable entries
 *     are then exactly the live ones, each bound to the inode it names.
 *
 * Nothing else is ever durable: a file created, written and renamed but
 * never fsynced, or an entry whose parent was never fsynced, is lost.
 * Inodes are tracked by their backing inode number, so a durable entry
 * keeps pointing at the same file across renames of it or of its parents.
 * Everything present in the backing directory at mount time is durable.
 * A rename between two directories becomes durable in each of them
 * separately, so a power cut between their fsyncs can leave the entry in
 * both (a file is then hard-linked in the image, a directory copied) or in
 * neither, as the strict model allows.
 *
 * Durability boundaries are fsync, fdatasync, fsync of a directory and
 * rename. They are counted; with crash_at=K, right after the K-th one the
 * power is cut: the durable state is written out as a plain directory tree
 * under image=DIR, and from then on every operation fails with EIO (the
 * process using the filesystem cannot make anything else durable; the test
 * kills it). With image=DIR, SIGUSR1 cuts the power at the next operation.
 * With kill_at=K, the process that made the K-th boundary gets SIGKILL right
 * after it (a kill -9, the filesystem goes on). The state file (state=FILE)
 * always holds "<boundaries> <crashed 0|1>\n" and is rewritten at every
 * boundary and at the power cut.
 * Every boundary is logged on stderr; with -o trace, every operation too.
 *
 *   crashfs MOUNTPOINT -o backing=DIR[,crash_at=K,kill_at=K,image=DIR,
 *           state=FILE,trace]
 *           [other FUSE options, e.g. -f]
 *
 * The filesystem runs single-threaded, so its state needs no lock. It
 * supports what ckptd does: open/create/read/write, fsync, fdatasync,
 * mkdir, rename (also of directories, RENAME_NOREPLACE), unlink, rmdir,
 * readdir, stat, chmod, truncate, utimens, mmap reads (no direct_io), and
 * O_DIRECT (the kernel turns it into ordinary requests; it is not passed to
 * the backing file). sync_file_range and posix_fadvise never reach a FUSE
 * filesystem, and neither makes anything durable. Symlinks, hard links,
 * xattrs and special files are not supported (ENOSYS).
 */
#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

/* ---- configuration --------------------------------------------------- */

struct cfs_conf {
	char *backing;
	char *image;
	char *state;
	unsigned long crash_at;         /* 0: never */
	unsigned long kill_at;          /* 0: never */
	int trace;                      /* log every operation */
};

static struct cfs_conf conf;

#define CFS_OPT(t, p) { t, offsetof(struct cfs_conf, p), 0 }
static const struct fuse_opt cfs_opts[] = {
	CFS_OPT("backing=%s", backing),
	CFS_OPT("image=%s", image),
	CFS_OPT("state=%s", state),
	CFS_OPT("crash_at=%lu", crash_at),
	CFS_OPT("kill_at=%lu", kill_at),
	{ "trace", offsetof(struct cfs_conf, trace), 1 },
	FUSE_OPT_END
};

/* ---- the inode model ------------------------------------------------- */

struct cfs_dent {
	char *name;
	size_t node;                    /* index into nodes[] */
};

struct cfs_node {
	ino_t ino;                      /* backing inode; 0 once replaced */
	int isdir;
	mode_t mode;
	/* durable state */
	int has_data;                   /* files: fsynced at least once */
	char *data;
	size_t len;
	struct cfs_dent *ents;          /* directories: entries at last fsync */
	size_t nents;
	/* image writing */
	char *written;                  /* path of a file already written */
	int onstack;                    /* directory being written (cycles) */
};

static struct cfs_node *nodes;
static size_t nnodes, capnodes;
static size_t root_node;
static unsigned long boundaries;
static int crashed;

static void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL) {
		fprintf(stderr, "crashfs: out of memory\n");
		abort();
	}
	return q;
}

/* The live node for backing inode `ino`, or (size_t)-1. */
static size_t
cfs_find(ino_t ino)
{
	size_t i;

	for (i = nnodes; i-- > 0;)
		if (nodes[i].ino == ino)
			return i;
	return (size_t)-1;
}

/* A new node for a new backing inode (any older node with the same inode
 * number belonged to a file that no longer exists). */
static size_t
cfs_new(const struct stat *st)
{
	size_t i = cfs_find(st->st_ino);
	struct cfs_node *n;

	if (i != (size_t)-1)
		nodes[i].ino = 0;
	if (nnodes == capnodes) {
		capnodes = capnodes ? capnodes * 2 : 64;
		nodes = xrealloc(nodes, capnodes * sizeof(*nodes));
	}
	n = &nodes[nnodes];
	memset(n, 0, sizeof(*n));
	n->ino = st->st_ino;
	n->isdir = S_ISDIR(st->st_mode);
	n->mode = st->st_mode & 07777;
	return nnodes++;
}

/* The node of an existing backing inode (a never-seen one gets a node with
 * nothing durable). */
static size_t
cfs_node_of(const struct stat *st)
{
	size_t i = cfs_find(st->st_ino);

	return i != (size_t)-1 ? i : cfs_new(st);
}

/* fsync of a file: its durable contents become the live ones. `fd` is
 * any descriptor of it. */
static int
cfs_capture_file(int fd)
{
	struct stat st;
	char proc[64], *buf = NULL;
	size_t len = 0, cap = 0;
	ssize_t got;
	int rfd;
	size_t i;

	if (fstat(fd, &st) != 0)
		return -errno;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if ((rfd = open(proc, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	for (;;) {
		if (cap - len < 65536) {
			cap = cap ? cap * 2 : 65536;
			buf = xrealloc(buf, cap);
		}
		got = pread(rfd, buf + len, cap - len, (off_t)len);
		if (got < 0) {
			got = -errno;
			close(rfd);
			free(buf);
			return (int)got;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	close(rfd);
	i = cfs_node_of(&st);
	free(nodes[i].data);
	nodes[i].data = buf;
	nodes[i].len = len;
	nodes[i].has_data = 1;
	nodes[i].mode = st.st_mode & 07777;
	return 0;
}

/* fsync of a directory: its durable entries become the live ones. */
static int
cfs_capture_dir(const char *bpath)
{
	struct cfs_dent *ents = NULL;
	size_t n = 0, i, k;
	struct dirent *de;
	struct stat st, dst;
	DIR *dir;
	int r = 0;

	if ((dir = opendir(bpath)) == NULL)
		return -errno;
	if (fstat(dirfd(dir), &dst) != 0) {
		r = -errno;
		goto out;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
			continue;
		ents = xrealloc(ents, (n + 1) * sizeof(*ents));
		ents[n].name = strdup(de->d_name);
		if (ents[n].name == NULL)
			abort();
		ents[n].node = cfs_node_of(&st);
		n++;
	}
	i = cfs_node_of(&dst);
	for (k = 0; k < nodes[i].nents; k++)
		free(nodes[i].ents[k].name);
	free(nodes[i].ents);
	nodes[i].ents = ents;
	nodes[i].nents = n;
	nodes[i].mode = dst.st_mode & 07777;
	ents = NULL;
out:
	closedir(dir);
	return r;
}

/* Everything under the backing directory at mount time is durable. */
static int
cfs_adopt(const char *bpath)
{
	char sub[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *dir;
	int fd, r = 0;

	if ((dir = opendir(bpath)) == NULL)
		return -errno;
	while (r == 0 && (de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", bpath, de->d_name);
		if (lstat(sub, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			r = cfs_adopt(sub);
		} else if (S_ISREG(st.st_mode)) {
			if ((fd = open(sub, O_RDONLY | O_CLOEXEC)) < 0)
				r = -errno;
			else {
				r = cfs_capture_file(fd);
				close(fd);
			}
		}
	}
	closedir(dir);
	return r != 0 ? r : cfs_capture_dir(bpath);
}

/* ---- power loss ------------------------------------------------------ */

static int
cfs_write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, p, n)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Write directory node `d`'s durable tree under path `out`. */
static int
cfs_image_dir(size_t d, const char *out)
{
	char path[PATH_MAX];
	struct cfs_node *c;
	size_t k;
	int fd, r = 0;

	nodes[d].onstack = 1;
	for (k = 0; r == 0 && k < nodes[d].nents; k++) {
		c = &nodes[nodes[d].ents[k].node];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", out,
		    nodes[d].ents[k].name) >= sizeof(path))
			return -1;
		if (c->isdir) {
			if (c->onstack)
				continue;       /* a cycle: cannot exist */
			if (mkdir(path, c->mode | 0700) != 0)
				return -1;
			r = cfs_image_dir(nodes[d].ents[k].node, path);
		} else if (c->written != NULL) {
			/* One inode under two durable names. */
			r = link(c->written, path);
		} else {
			fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			    c->mode | 0600);
			if (fd < 0)
				return -1;
			r = cfs_write_all(fd, c->data, c->len);
			if (close(fd) != 0)
				r = -1;
			c->written = strdup(path);
		}
	}
	nodes[d].onstack = 0;
	return r;
}

static void
cfs_write_state(void)
{
	char tmp[PATH_MAX], text[64];
	int fd, n;

	if (conf.state == NULL)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", conf.state);
	n = snprintf(text, sizeof(text), "%lu %d\n", boundaries, crashed);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) < 0)
		return;
	if (cfs_write_all(fd, text, (size_t)n) != 0 || close(fd) != 0 ||
	    rename(tmp, conf.state) != 0)
		fprintf(stderr, "crashfs: cannot write %s\n", conf.state);
}

/* Cut the power: write the durable state out, fail from now on. */
static void
cfs_power_cut(void)
{
	if (conf.image == NULL || cfs_image_dir(root_node, conf.image) != 0) {
		fprintf(stderr, "crashfs: cannot write the image\n");
		abort();
	}
	crashed = 1;
	cfs_write_state();
}

/* A durability boundary has just passed: count it; cut the power or kill
 * the calling process if this is the chosen one. */
static void
cfs_boundary(const char *op, const char *path)
{
	boundaries++;
	fprintf(stderr, "crashfs: boundary %lu: %s %s%s\n", boundaries, op,
	    path != NULL ? path : "(unlinked)",
	    boundaries == conf.crash_at ? " (power cut)" :
	    boundaries == conf.kill_at ? " (caller killed)" : "");
	if (boundaries == conf.kill_at)
		kill(fuse_get_context()->pid, SIGKILL);
	if (conf.crash_at != 0 && boundaries == conf.crash_at)
		cfs_power_cut();
	else
		cfs_write_state();
}

/* SIGUSR1: cut the power at the next operation. */
static volatile sig_atomic_t cut_requested;

static void
cfs_on_usr1(int sig)
{
	(void)sig;
	cut_requested = 1;
}

/* ---- operations ------------------------------------------------------ */

/* Every operation starts here: with -o trace it is logged, after the
 * power cut it fails. */
#define CFS_ENTER(p) do { \
	if (conf.trace) \
		fprintf(stderr, "crashfs: %s %s\n", __func__ + 4, \
		    (p) != NULL ? (p) : "(unlinked)"); \
	if (cut_requested && !crashed) \
		cfs_power_cut(); \
	if (crashed) \
		return -EIO; \
} while (0)

static int
cfs_bpath(char *buf, const char *path)
{
	if ((size_t)snprintf(buf, PATH_MAX, "%s%s", conf.backing, path) >=
	    PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

#define BPATH(var, path) \
	char var[PATH_MAX]; \
	do { int r_ = cfs_bpath(var, path); if (r_) return r_; } while (0)

static void *
cfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;
	cfg->hard_remove = 1;           /* no .fuse_hidden files */
	cfg->direct_io = 0;             /* mmap needs the page cache */
	cfg->kernel_cache = 0;
	cfg->entry_timeout = 0;
	cfg->attr_timeout = 0;
	cfg->negative_timeout = 0;
	return NULL;
}

static int
cfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	CFS_ENTER(path);
	if (fi != NULL)
		return fstat((int)fi->fh, st) == 0 ? 0 : -errno;
	BPATH(b, path);
	return lstat(b, st) == 0 ? 0 : -errno;
}

static int
cfs_access(const char *path, int mask)
{
	CFS_ENTER(path);
	BPATH(b, path);
	return access(b, mask) == 0 ? 0 : -errno;
}

static int
cfs_mkdir(const char *path, mode_t mode)
{
	struct stat st;

	CFS_ENTER(path);
	BPATH(b, path);
	if (mkdir(b, mode) != 0)
		return -errno;
	if (lstat(b, &st) == 0)
		(void)cfs_new(&st);
	return 0;
}

static int
cfs_unlink(const char *path)
{
	CFS_ENTER(path);
	BPATH(b, path);
	return unlink(b) == 0 ? 0 : -errno;
}

static int
cfs_rmdir(const char *path)
{
	CFS_ENTER(path);
	BPATH(b, path);
	return rmdir(b) == 0 ? 0 : -errno;
}

static int
cfs_rename(const char *from, const char *to, unsigned int flags)
{
	char what[PATH_MAX + 8];
	int r;

	CFS_ENTER(from);
	BPATH(bf, from);
	BPATH(bt, to);
	r = renameat2(AT_FDCWD, bf, AT_FDCWD, bt, flags) == 0 ? 0 : -errno;
	snprintf(what, sizeof(what), "%s ->", from);
	cfs_boundary(what, to);
	return r;
}

static int
cfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	CFS_ENTER(path);
	if (fi != NULL)
		return fchmod((int)fi->fh, mode) == 0 ? 0 : -errno;
	BPATH(b, path);
	return chmod(b, mode) == 0 ? 0 : -errno;
}

static int
cfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	CFS_ENTER(path);
	if (fi != NULL)
		return fchown((int)fi->fh, uid, gid) == 0 ? 0 : -errno;
	BPATH(b, path);
	return lchown(b, uid, gid) == 0 ? 0 : -errno;
}

static int
cfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	CFS_ENTER(path);
	if (fi != NULL)
		return ftruncate((int)fi->fh, size) == 0 ? 0 : -errno;
	BPATH(b, path);
	return truncate(b, size) == 0 ? 0 : -errno;
}

static int
cfs_utimens(const char *path, const struct timespec tv[2],
    struct fuse_file_info *fi)
{
	CFS_ENTER(path);
	if (fi != NULL)
		return futimens((int)fi->fh, tv) == 0 ? 0 : -errno;
	BPATH(b, path);
	return utimensat(AT_FDCWD, b, tv, AT_SYMLINK_NOFOLLOW) == 0 ? 0 :
	    -errno;
}

/* The backing file is opened read-write whenever possible (fsync capture
 * reads it back through /proc), never with O_DIRECT or O_*SYNC: the model,
 * not the backing disk, decides what is durable. */
static int
cfs_open_flags(int flags)
{
	return flags & ~(O_DIRECT | O_SYNC | O_DSYNC | O_NOFOLLOW | O_CREAT |
	    O_EXCL);
}

static int
cfs_open(const char *path, struct fuse_file_info *fi)
{
	int fd;

	CFS_ENTER(path);
	BPATH(b, path);
	if ((fd = open(b, cfs_open_flags(fi->flags) | O_CLOEXEC)) < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int
cfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct stat st;
	int fd, existed;

	CFS_ENTER(path);
	BPATH(b, path);
	existed = lstat(b, &st) == 0;
	fd = open(b, cfs_open_flags(fi->flags) | O_CREAT | (fi->flags & O_EXCL) |
	    O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (!existed && fstat(fd, &st) == 0)
		(void)cfs_new(&st);
	fi->fh = (uint64_t)fd;
	return 0;
}

static int
cfs_read(const char *path, char *buf, size_t size, off_t off,
    struct fuse_file_info *fi)
{
	ssize_t n;

	CFS_ENTER(path);
	n = pread((int)fi->fh, buf, size, off);
	return n < 0 ? -errno : (int)n;
}

static int
cfs_write(const char *path, const char *buf, size_t size, off_t off,
    struct fuse_file_info *fi)
{
	ssize_t n;

	CFS_ENTER(path);
	n = pwrite((int)fi->fh, buf, size, off);
	return n < 0 ? -errno : (int)n;
}

static int
cfs_statfs(const char *path, struct statvfs *sv)
{
	CFS_ENTER(path);
	BPATH(b, path);
	return statvfs(b, sv) == 0 ? 0 : -errno;
}

static int
cfs_flush(const char *path, struct fuse_file_info *fi)
{
	CFS_ENTER(path);
	return 0;
}

static int
cfs_release(const char *path, struct fuse_file_info *fi)
{
	close((int)fi->fh);
	return 0;
}

static int
cfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	int r;

	CFS_ENTER(path);
	r = cfs_capture_file((int)fi->fh);
	cfs_boundary(datasync ? "fdatasync" : "fsync", path);
	return r;
}

static int
cfs_opendir(const char *path, struct fuse_file_info *fi)
{
	DIR *d;

	CFS_ENTER(path);
	BPATH(b, path);
	if ((d = opendir(b)) == NULL)
		return -errno;
	fi->fh = (uint64_t)(uintptr_t)d;
	return 0;
}

static int
cfs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
    struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	struct dirent *de;
	struct stat st;

	CFS_ENTER(path);
	seekdir(d, off);
	while ((de = readdir(d)) != NULL) {
		memset(&st, 0, sizeof(st));
		st.st_ino = de->d_ino;
		st.st_mode = (mode_t)DTTOIF(de->d_type);
		if (fill(buf, de->d_name, &st, telldir(d), 0))
			break;
	}
	return 0;
}

static int
cfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	closedir((DIR *)(uintptr_t)fi->fh);
	return 0;
}

static int
cfs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	int r;

	CFS_ENTER(path);
	BPATH(b, path);
	r = cfs_capture_dir(b);
	cfs_boundary("fsync dir", path);
	return r;
}

static const struct fuse_operations cfs_ops = {
	.init = cfs_init,
	.getattr = cfs_getattr,
	.access = cfs_access,
	.mkdir = cfs_mkdir,
	.unlink = cfs_unlink,
	.rmdir = cfs_rmdir,
	.rename = cfs_rename,
	.chmod = cfs_chmod,
	.chown = cfs_chown,
	.truncate = cfs_truncate,
	.utimens = cfs_utimens,
	.open = cfs_open,
	.create = cfs_create,
	.read = cfs_read,
	.write = cfs_write,
	.statfs = cfs_statfs,
	.flush = cfs_flush,
	.release = cfs_release,
	.fsync = cfs_fsync,
	.opendir = cfs_opendir,
	.readdir = cfs_readdir,
	.releasedir = cfs_releasedir,
	.fsyncdir = cfs_fsyncdir,
};

int
main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct stat st;
	char *real;
	int r;

	if (fuse_opt_parse(&args, &conf, cfs_opts, NULL) != 0)
		return 1;
	if (conf.backing == NULL) {
		fprintf(stderr, "usage: crashfs MOUNTPOINT -o backing=DIR"
		    "[,crash_at=K,image=DIR,state=FILE] [FUSE options]\n");
		return 1;
	}
	if ((real = realpath(conf.backing, NULL)) == NULL ||
	    lstat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "crashfs: %s: not a directory\n", conf.backing);
		return 1;
	}
	free(conf.backing);
	conf.backing = real;
	if (conf.image == NULL && conf.crash_at != 0) {
		fprintf(stderr, "crashfs: crash_at needs image=DIR\n");
		return 1;
	}
	if (conf.image != NULL) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = cfs_on_usr1;
		sigemptyset(&sa.sa_mask);
		sa.sa_flags = SA_RESTART;
		sigaction(SIGUSR1, &sa, NULL);
	}
	root_node = cfs_new(&st);
	if ((r = cfs_adopt(real)) != 0) {
		fprintf(stderr, "crashfs: %s: %s\n", real, strerror(-r));
		return 1;
	}
	cfs_write_state();
	/* One thread: the model needs no lock. */
	if (fuse_opt_add_arg(&args, "-s") != 0)
		return 1;
	r = fuse_main(args.argc, args.argv, &cfs_ops, NULL);
	fuse_opt_free_args(&args);
	return r;
}
