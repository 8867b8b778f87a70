/*
 * archive.h - unpack zip (and tar) archives with libarchive, refusing every
 * entry that could land outside the target directory (W26, zip-slip).
 *
 * This header has the same name as libarchive's own <archive.h>, and
 * common/ comes first on the include path, so it pulls libarchive's header
 * in with #include_next: a file that includes "archive.h" or <archive.h>
 * gets both APIs. (The noun file is named after the noun, STYLE.md §1.)
 * The #include_next sits outside the guard on purpose: when this file was
 * found as "archive.h" next to the includer, GCC restarts the search at
 * the first -I directory and finds this file again; that second pass then
 * continues past common/ to libarchive's header.
 */
#include_next <archive.h>

#ifndef AGENT_ARCHIVE_H
#define AGENT_ARCHIVE_H

#include <stddef.h>

/* Most symlinks one unpack re-checks after extraction (bounded list). */
#define ARCHIVE_MAX_SYMLINKS	65536

struct archive_stats {
	unsigned long		files;		/* regular files written */
	unsigned long		dirs;		/* directories written */
	unsigned long		symlinks;	/* symlinks written (and kept) */
	unsigned long		rejected;	/* unsafe entries skipped, each logged */
	unsigned long long	bytes;		/* file content written, bytes */
};

/**
 * Unpack the archive file at path (zip, tar, tar.gz ...: whatever libarchive
 * reads) into dir, which is created (mode 0755) when missing; dir may be
 * relative to the cwd.
 *
 * Kept: regular files, directories and symlinks, with their permission bits
 * (so an executable stays executable) masked to 0755 - no setuid/setgid/
 * sticky, no group/other write - plus owner read (files) or owner rwx
 * (directories); modification times. Not kept: owners.
 *
 * Rejected (logged with log_warnx, counted in st->rejected, skipped; the rest
 * of the archive is still unpacked): an absolute name, a ".." component, a
 * backslash, a type other than file/directory/symlink/hardlink (devices,
 * fifos), a hardlink whose target is not a safe name, a symlink whose target
 * is absolute or climbs out of dir (checked on the text, and again after
 * extraction on the resolved path: a link resolving outside dir is removed),
 * and any entry libarchive will not write because its path goes through a
 * symlink (ARCHIVE_EXTRACT_SECURE_SYMLINKS). Entries naming dir itself
 * ("./") are ignored.
 *
 * max_bytes caps the unpacked content (zip bombs); 0 = no cap.
 * st (may be NULL) is zeroed and filled. Returns 0 when the archive was read
 * to the end (even with rejected entries: the caller decides whether a
 * rejection matters), or -1 with a one-line reason in err (errlen bytes):
 * unreadable or corrupt archive, a write error (disk full), the cap
 * exceeded. On -1, what was written so far stays in dir (callers unpack into
 * a fresh directory and remove it on failure).
 */
int archive_unpack(const char *path, const char *dir, unsigned long long max_bytes,
    struct archive_stats *st, char *err, size_t errlen);

/**
 * Why the entry name is unsafe to join to a target directory (absolute, a
 * ".." component, a backslash, empty), or NULL when it is safe. For tests
 * and for callers that list archives.
 */
const char *archive_name_unsafe(const char *name);

/**
 * Why a symlink at link_name (an archive name, already safe) pointing to
 * target would point outside the archive's root (absolute target, or ".."
 * climbing above the root), or NULL when it stays inside.
 */
const char *archive_link_unsafe(const char *link_name, const char *target);

#endif
