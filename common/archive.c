/* archive.c - safe unpacking of zip/tar archives through libarchive. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive.h"
#include <archive_entry.h>

#include "fsutil.h"
#include "log.h"
#include "util.h"

/*
 * libarchive is loaded at the first unpack (dlopen), not when the program
 * starts: it brings about ten more shared libraries (libxml2, ICU,
 * libstdc++, liblzma ...) whose mapping and relocation cost every start of
 * the agent (and so every restart by the daemon) more than a millisecond,
 * while only the JDK unpack of an install or an upgrade needs them. Each
 * libarchive function used here is called through a pointer of its own
 * name (the defines below), filled by archive_lib_load().
 */
#ifndef ARCHIVE_SONAME
#ifdef __APPLE__
#define ARCHIVE_SONAME	"libarchive.13.dylib"
#else
#define ARCHIVE_SONAME	"libarchive.so.13"
#endif
#endif

#define ARCHIVE_FUNCS(X) \
	X(archive_entry_filetype) \
	X(archive_entry_hardlink) \
	X(archive_entry_pathname) \
	X(archive_entry_perm) \
	X(archive_entry_set_hardlink) \
	X(archive_entry_set_pathname) \
	X(archive_entry_set_perm) \
	X(archive_entry_symlink) \
	X(archive_error_string) \
	X(archive_read_data_block) \
	X(archive_read_free) \
	X(archive_read_new) \
	X(archive_read_next_header) \
	X(archive_read_open_filename) \
	X(archive_read_support_filter_all) \
	X(archive_read_support_format_all) \
	X(archive_write_close) \
	X(archive_write_data_block) \
	X(archive_write_disk_new) \
	X(archive_write_disk_set_options) \
	X(archive_write_finish_entry) \
	X(archive_write_free) \
	X(archive_write_header)

#define ARCHIVE_PTR(f)	static __typeof__(&(f)) p_##f;
ARCHIVE_FUNCS(ARCHIVE_PTR)
#undef ARCHIVE_PTR

/* Each function's name and the pointer dlsym fills. */
static const struct archive_sym {
	const char	*name;
	void		*ptr;	/* &p_<name> */
} archive_syms[] = {
#define ARCHIVE_SYM(f)	{ #f, &p_##f },
	ARCHIVE_FUNCS(ARCHIVE_SYM)
#undef ARCHIVE_SYM
};

#define archive_entry_filetype           (*p_archive_entry_filetype)
#define archive_entry_hardlink           (*p_archive_entry_hardlink)
#define archive_entry_pathname           (*p_archive_entry_pathname)
#define archive_entry_perm               (*p_archive_entry_perm)
#define archive_entry_set_hardlink       (*p_archive_entry_set_hardlink)
#define archive_entry_set_pathname       (*p_archive_entry_set_pathname)
#define archive_entry_set_perm           (*p_archive_entry_set_perm)
#define archive_entry_symlink            (*p_archive_entry_symlink)
#define archive_error_string             (*p_archive_error_string)
#define archive_read_data_block          (*p_archive_read_data_block)
#define archive_read_free                (*p_archive_read_free)
#define archive_read_new                 (*p_archive_read_new)
#define archive_read_next_header         (*p_archive_read_next_header)
#define archive_read_open_filename       (*p_archive_read_open_filename)
#define archive_read_support_filter_all  (*p_archive_read_support_filter_all)
#define archive_read_support_format_all  (*p_archive_read_support_format_all)
#define archive_write_close              (*p_archive_write_close)
#define archive_write_data_block         (*p_archive_write_data_block)
#define archive_write_disk_new           (*p_archive_write_disk_new)
#define archive_write_disk_set_options   (*p_archive_write_disk_set_options)
#define archive_write_finish_entry       (*p_archive_write_finish_entry)
#define archive_write_free               (*p_archive_write_free)
#define archive_write_header             (*p_archive_write_header)

/* dlopen libarchive once and resolve its functions: 0, or -1 with err set. */
static int
archive_lib_load(char *err, size_t errlen)
{
	static void *lib;
	void *h, *sym;
	size_t i;

	if (lib != NULL)
		return 0;
	if ((h = dlopen(ARCHIVE_SONAME, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(err, errlen, "cannot load %s: %s", ARCHIVE_SONAME, dlerror());
		return -1;
	}
	for (i = 0; i < nitems(archive_syms); i++) {
		if ((sym = dlsym(h, archive_syms[i].name)) == NULL) {
			snprintf(err, errlen, "%s: %s", ARCHIVE_SONAME, dlerror());
			(void)dlclose(h);
			return -1;
		}
		/* ISO C has no cast from an object to a function pointer. */
		memcpy(archive_syms[i].ptr, &sym, sizeof(sym));
	}
	lib = h;
	return 0;
}

/* Flags for archive_write_disk: never through a symlink, never "..". */
#define UNPACK_FLAGS	(ARCHIVE_EXTRACT_SECURE_SYMLINKS | \
			 ARCHIVE_EXTRACT_SECURE_NODOTDOT | \
			 ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME)

/* Names that must never be joined to the target directory. */
const char *
archive_name_unsafe(const char *name)
{
	const char *p = name;

	if (name == NULL || *name == '\0')
		return "empty name";
	if (*name == '/')
		return "absolute path";
	if (strchr(name, '\\') != NULL)
		return "backslash in name";
	/* Look at every component: "..", "../x", "x/..", "x/../y". */
	while (*p != '\0') {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return "'..' component";
		p += n;
		while (*p == '/')
			p++;
	}
	return NULL;
}

/* Symlink targets must stay below the root, judged on the text. */
const char *
archive_link_unsafe(const char *link_name, const char *target)
{
	const char *p;
	long depth = 0;

	if (target == NULL || *target == '\0')
		return "empty symlink target";
	if (*target == '/')
		return "absolute symlink target";
	/* Depth of the directory holding the link: its components minus one. */
	for (p = link_name; *p != '\0'; ) {
		size_t n = strcspn(p, "/");
		if (n > 0 && !(n == 1 && p[0] == '.'))
			depth++;
		p += n;
		while (*p == '/')
			p++;
	}
	depth--;
	/* Walk the target from there; it must never climb above the root. */
	for (p = target; *p != '\0'; ) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (--depth < 0)
				return "symlink target outside the directory";
		} else if (n > 0 && !(n == 1 && p[0] == '.')) {
			depth++;
		}
		p += n;
		while (*p == '/')
			p++;
	}
	return NULL;
}

/* name without "." and empty components ("./a//b" -> "a/b"); new string. */
static char *
name_clean(const char *name)
{
	char *out = xmalloc(strlen(name) + 1), *o = out;
	const char *p = name;

	while (*p != '\0') {
		size_t n = strcspn(p, "/");
		if (n > 0 && !(n == 1 && p[0] == '.')) {
			if (o != out)
				*o++ = '/';
			memcpy(o, p, n);
			o += n;
		}
		p += n;
		while (*p == '/')
			p++;
	}
	*o = '\0';
	return out;
}

/* 1 when the real path of child is root or below it. */
static int
path_under(const char *child, const char *root)
{
	size_t n = strlen(root);

	if (strcmp(root, "/") == 0)
		return 1;
	return strncmp(child, root, n) == 0 && (child[n] == '\0' || child[n] == '/');
}

/* Why the entry must be skipped, or NULL. name is the cleaned name. */
static const char *
entry_unsafe(struct archive_entry *e, const char *raw, const char *name)
{
	const char *why, *hl = archive_entry_hardlink(e);
	mode_t type = archive_entry_filetype(e);

	if ((why = archive_name_unsafe(raw)) != NULL)
		return why;
	if (hl != NULL) {
		if (archive_name_unsafe(hl) != NULL)
			return "hardlink target is not a safe name";
		return NULL;
	}
	if (type == AE_IFLNK)
		return archive_link_unsafe(name, archive_entry_symlink(e));
	if (type != AE_IFREG && type != AE_IFDIR)
		return "not a file, directory or symlink";
	return NULL;
}

/* Copy one entry's data from in to out, counting against the cap. */
static int
copy_data(struct archive *in, struct archive *out, struct archive_stats *st,
    unsigned long long max_bytes, char *err, size_t errlen)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int r;

	for (;;) {
		r = archive_read_data_block(in, &buf, &len, &off);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r < ARCHIVE_WARN) {
			snprintf(err, errlen, "read: %s", archive_error_string(in));
			return -1;
		}
		st->bytes += len;
		if (max_bytes > 0 && st->bytes > max_bytes) {
			snprintf(err, errlen, "unpacked size exceeds %llu bytes", max_bytes);
			return -1;
		}
		if (archive_write_data_block(out, buf, len, off) < ARCHIVE_WARN) {
			snprintf(err, errlen, "write: %s", archive_error_string(out));
			return -1;
		}
	}
}

/*
 * Second look at the symlinks written: the text check cannot see a link
 * that climbs through another link ("y -> z/.." with "z -> ."), so each one
 * that resolves must resolve inside root; any other is removed.
 */
static void
links_recheck(char **links, size_t n, const char *root, const char *path,
    struct archive_stats *st)
{
	char real[PATH_MAX];
	size_t i;

	for (i = 0; i < n; i++) {
		if (realpath(links[i], real) != NULL && !path_under(real, root)) {
			log_warnx("archive %s: symlink %s resolves to %s, outside %s;"
			    " removed", path, links[i], real, root);
			if (unlink(links[i]) == -1)
				log_warn("unlink %s", links[i]);
			st->symlinks--;
			st->rejected++;
		}
	}
}

/* One unpack in progress. */
struct unpack {
	struct archive		*in, *out;
	const char		*path;		/* the archive, for messages */
	char			 root[PATH_MAX];	/* real target directory */
	unsigned long long	 max_bytes;
	struct archive_stats	*st;
	char			**links;	/* written symlinks (full paths) */
	size_t			 nlinks;
	char			*err;
	size_t			 errlen;
};

/* Write one entry below u->root. Returns 0 (written or skipped) or -1. */
static int
unpack_entry(struct unpack *u, struct archive_entry *e)
{
	const char *why;
	char *raw, *name, *full = NULL;
	mode_t type, perm;
	int r, rc = -1;

	/* Copied: set_pathname below frees the entry's own string. */
	raw = xstrdup(archive_entry_pathname(e) != NULL ?
	    archive_entry_pathname(e) : "");
	name = name_clean(raw);
	if ((why = entry_unsafe(e, raw, name)) != NULL) {
		log_warnx("archive %s: entry '%s' rejected: %s", u->path, raw, why);
		u->st->rejected++;
		rc = 0;
		goto out;
	}
	if (*name == '\0') {		/* "./": the root itself */
		rc = 0;
		goto out;
	}
	full = xasprintf("%s/%s", u->root, name);
	archive_entry_set_pathname(e, full);
	if (archive_entry_hardlink(e) != NULL) {
		char *hn = name_clean(archive_entry_hardlink(e));
		char *hf = xasprintf("%s/%s", u->root, hn);
		archive_entry_set_hardlink(e, hf);
		free(hn);
		free(hf);
	}
	/* Keep the x bits; drop set-id, sticky, group/other write. */
	type = archive_entry_filetype(e);
	perm = archive_entry_perm(e) & 0755;
	perm |= type == AE_IFDIR ? 0700 : 0400;
	archive_entry_set_perm(e, perm);

	r = archive_write_header(u->out, e);
	if (r == ARCHIVE_FAILED || r == ARCHIVE_RETRY) {
		/* e.g. "Cannot extract through symlink": this entry only. */
		log_warnx("archive %s: entry '%s' rejected: %s", u->path, raw,
		    archive_error_string(u->out));
		u->st->rejected++;
		rc = 0;
		goto out;
	}
	if (r < ARCHIVE_WARN) {
		snprintf(u->err, u->errlen, "%s: %s", full, archive_error_string(u->out));
		goto out;
	}
	if (type == AE_IFREG && archive_entry_hardlink(e) == NULL &&
	    copy_data(u->in, u->out, u->st, u->max_bytes, u->err, u->errlen) == -1)
		goto out;
	if (archive_write_finish_entry(u->out) < ARCHIVE_WARN) {
		snprintf(u->err, u->errlen, "%s: %s", full, archive_error_string(u->out));
		goto out;
	}
	if (type == AE_IFDIR) {
		u->st->dirs++;
	} else if (type == AE_IFLNK) {
		if (u->nlinks >= ARCHIVE_MAX_SYMLINKS) {
			snprintf(u->err, u->errlen, "more than %d symlinks",
			    ARCHIVE_MAX_SYMLINKS);
			goto out;
		}
		u->links = xrealloc(u->links, (u->nlinks + 1) * sizeof(*u->links));
		u->links[u->nlinks++] = full;
		full = NULL;
		u->st->symlinks++;
	} else {
		u->st->files++;
	}
	rc = 0;
out:
	free(raw);
	free(name);
	free(full);
	return rc;
}

/* Read every entry, write the safe ones, then re-check the symlinks. */
int
archive_unpack(const char *path, const char *dir, unsigned long long max_bytes,
    struct archive_stats *stp, char *err, size_t errlen)
{
	struct archive_stats local = { 0 };
	struct archive_entry *e;
	struct unpack u;
	size_t i;
	int r, rc = -1;

	memset(&u, 0, sizeof(u));
	u.st = stp != NULL ? stp : &local;
	u.path = path;
	u.max_bytes = max_bytes;
	u.err = err;
	u.errlen = errlen;
	memset(u.st, 0, sizeof(*u.st));
	err[0] = '\0';
	if (archive_lib_load(err, errlen) == -1)
		return -1;
	/* A real root, so SECURE_SYMLINKS never trips over a link above it. */
	if (fs_mkdir_p(dir, 0755) == -1 || realpath(dir, u.root) == NULL) {
		snprintf(err, errlen, "target %s: %s", dir, strerror(errno));
		return -1;
	}
	u.in = archive_read_new();
	u.out = archive_write_disk_new();
	if (u.in == NULL || u.out == NULL)
		fatalx("libarchive: out of memory");
	archive_read_support_format_all(u.in);
	archive_read_support_filter_all(u.in);
	archive_write_disk_set_options(u.out, UNPACK_FLAGS);
	if (archive_read_open_filename(u.in, path, 65536) != ARCHIVE_OK) {
		snprintf(err, errlen, "open %s: %s", path, archive_error_string(u.in));
		goto out;
	}
	for (;;) {
		r = archive_read_next_header(u.in, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			snprintf(err, errlen, "%s: %s", path, archive_error_string(u.in));
			goto out;
		}
		if (unpack_entry(&u, e) == -1)
			goto out;
	}
	/* Directory modes and times are applied here, deepest first. */
	if (archive_write_close(u.out) != ARCHIVE_OK) {
		snprintf(err, errlen, "finish: %s", archive_error_string(u.out));
		goto out;
	}
	links_recheck(u.links, u.nlinks, u.root, path, u.st);
	rc = 0;
out:
	for (i = 0; i < u.nlinks; i++)
		free(u.links[i]);
	free(u.links);
	archive_read_free(u.in);
	archive_write_free(u.out);
	return rc;
}
