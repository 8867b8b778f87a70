/* test_archive.c - archive_unpack: modes, symlinks, zip-slip rejection, caps. */
#include <errno.h>
#include <fcntl.h>
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
#include "t.h"
#include "util.h"

static char dir[] = "/tmp/unit-archive-XXXXXX";

struct ent {
	const char	*name;
	mode_t		 type;		/* AE_IFREG, AE_IFDIR, AE_IFLNK */
	mode_t		 perm;
	const char	*data;		/* file content or symlink target */
	const char	*hardlink;	/* tar only: hardlink target */
};

/* Write the entries into a new archive at path (zip, or pax tar). */
static int
make_archive(const char *path, int zip, const struct ent *ents, size_t n)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e;
	size_t i;

	if (zip)
		archive_write_set_format_zip(a);
	else
		archive_write_set_format_pax_restricted(a);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK)
		return -1;
	for (i = 0; i < n; i++) {
		e = archive_entry_new();
		archive_entry_set_pathname(e, ents[i].name);
		archive_entry_set_filetype(e, ents[i].type);
		archive_entry_set_perm(e, ents[i].perm);
		archive_entry_set_mtime(e, 1700000000, 0);
		if (ents[i].hardlink != NULL) {
			archive_entry_set_hardlink(e, ents[i].hardlink);
			archive_entry_set_size(e, 0);
		} else if (ents[i].type == AE_IFLNK) {
			archive_entry_set_symlink(e, ents[i].data);
		} else if (ents[i].type == AE_IFREG) {
			archive_entry_set_size(e, (la_int64_t)strlen(ents[i].data));
		}
		if (archive_write_header(a, e) != ARCHIVE_OK) {
			fprintf(stderr, "write_header %s: %s\n", ents[i].name,
			    archive_error_string(a));
			archive_entry_free(e);
			archive_write_free(a);
			return -1;
		}
		if (ents[i].type == AE_IFREG && ents[i].hardlink == NULL)
			archive_write_data(a, ents[i].data, strlen(ents[i].data));
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	return 0;
}

/* Path under the test dir; static buffer rotation of 4. */
static const char *
at(const char *rel)
{
	static char buf[4][PATH_MAX];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, rel);
	return buf[k];
}

TEST(name_checks)
{
	CHECK(archive_name_unsafe("bin/java") == NULL);
	CHECK(archive_name_unsafe("./bin/java") == NULL);
	CHECK(archive_name_unsafe("a..b/..c") == NULL);
	CHECK(archive_name_unsafe("../evil") != NULL);
	CHECK(archive_name_unsafe("a/../../evil") != NULL);
	CHECK(archive_name_unsafe("a/..") != NULL);
	CHECK(archive_name_unsafe("/etc/passwd") != NULL);
	CHECK(archive_name_unsafe("..\\evil") != NULL);
	CHECK(archive_name_unsafe("") != NULL);
}

TEST(link_checks)
{
	CHECK(archive_link_unsafe("lib/link", "../bin/java") == NULL);
	CHECK(archive_link_unsafe("link", "bin/java") == NULL);
	CHECK(archive_link_unsafe("./a/b/link", "../../x") == NULL);
	CHECK(archive_link_unsafe("link", "../x") != NULL);
	CHECK(archive_link_unsafe("lib/link", "../../x") != NULL);
	CHECK(archive_link_unsafe("lib/link", "a/../../../x") != NULL);
	CHECK(archive_link_unsafe("link", "/etc/passwd") != NULL);
	CHECK(archive_link_unsafe("link", "") != NULL);
}

TEST(zip_keeps_modes_and_links_rejects_slip)
{
	static const struct ent ents[] = {
		{ "jdk/", AE_IFDIR, 0755, NULL, NULL },
		{ "jdk/bin/java", AE_IFREG, 0755, "#!/bin/sh\necho java\n", NULL },
		{ "jdk/lib/data.txt", AE_IFREG, 0644, "data\n", NULL },
		{ "jdk/lib/java-link", AE_IFLNK, 0777, "../bin/java", NULL },
		{ "../evil", AE_IFREG, 0644, "pwned\n", NULL },
		{ "jdk/../../evil2", AE_IFREG, 0644, "pwned\n", NULL },
		{ "/tmp/unit-archive-abs-evil", AE_IFREG, 0644, "pwned\n", NULL },
		{ "jdk/out", AE_IFLNK, 0777, "../../outside", NULL },
		{ "jdk/abs", AE_IFLNK, 0777, "/etc/passwd", NULL },
		{ "jdk/suid", AE_IFREG, 04777, "x\n", NULL },
	};
	char err[256];
	struct archive_stats st;
	struct stat sb;
	char target[PATH_MAX];
	ssize_t n;

	CHECK(make_archive(at("a.zip"), 1, ents, nitems(ents)) == 0);
	CHECK(archive_unpack(at("a.zip"), at("out/target"), 0, &st, err,
	    sizeof(err)) == 0);
	CHECK(st.rejected == 5);
	CHECK(st.files == 3);
	CHECK(st.symlinks == 1);
	/* Executable bit kept, set-id and world write dropped. */
	CHECK(stat(at("out/target/jdk/bin/java"), &sb) == 0 &&
	    (sb.st_mode & 07777) == 0755);
	CHECK(stat(at("out/target/jdk/lib/data.txt"), &sb) == 0 &&
	    (sb.st_mode & 07777) == 0644);
	CHECK(stat(at("out/target/jdk/suid"), &sb) == 0 &&
	    (sb.st_mode & 07777) == 0755);
	/* The symlink stays a symlink with its target. */
	CHECK(lstat(at("out/target/jdk/lib/java-link"), &sb) == 0 &&
	    S_ISLNK(sb.st_mode));
	n = readlink(at("out/target/jdk/lib/java-link"), target, sizeof(target) - 1);
	CHECK(n > 0);
	if (n > 0) {
		target[n] = '\0';
		CHECK_STR(target, "../bin/java");
	}
	/* Nothing outside the target. */
	CHECK(!fs_exists(at("out/evil")));
	CHECK(!fs_exists(at("evil")));
	CHECK(!fs_exists(at("evil2")));
	CHECK(!fs_exists(at("out/evil2")));
	CHECK(!fs_exists("/tmp/unit-archive-abs-evil"));
	CHECK(!fs_exists(at("out/target/jdk/out")));
	CHECK(!fs_exists(at("out/target/jdk/abs")));
}

TEST(link_chain_and_write_through_link)
{
	/* "z -> ." passes the text check; "y -> z/.." resolves above the root;
	 * "z/through" would be written through a symlink. */
	static const struct ent ents[] = {
		{ "z", AE_IFLNK, 0777, ".", NULL },
		{ "y", AE_IFLNK, 0777, "z/..", NULL },
		{ "z/through", AE_IFREG, 0644, "x\n", NULL },
		{ "ok", AE_IFREG, 0644, "ok\n", NULL },
	};
	char err[256];
	struct archive_stats st;

	CHECK(make_archive(at("chain.zip"), 1, ents, nitems(ents)) == 0);
	CHECK(archive_unpack(at("chain.zip"), at("chain"), 0, &st, err,
	    sizeof(err)) == 0);
	CHECK(fs_is_file(at("chain/ok")));
	CHECK(fs_exists(at("chain/z")));
	CHECK(!fs_exists(at("chain/y")));
	CHECK(!fs_exists(at("chain/through")));
	CHECK(st.rejected == 2);
}

TEST(tar_hardlink_outside_rejected)
{
	static const struct ent ents[] = {
		{ "f", AE_IFREG, 0644, "f\n", NULL },
		{ "h-ok", AE_IFREG, 0644, "", "f" },
		{ "h-bad", AE_IFREG, 0644, "", "../secret" },
	};
	char err[256];
	struct archive_stats st;
	int fd;

	fd = open(at("secret"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd != -1);
	if (fd != -1)
		close(fd);
	CHECK(make_archive(at("h.tar"), 0, ents, nitems(ents)) == 0);
	CHECK(archive_unpack(at("h.tar"), at("hl"), 0, &st, err, sizeof(err)) == 0);
	CHECK(fs_is_file(at("hl/f")));
	CHECK(fs_is_file(at("hl/h-ok")));
	CHECK(!fs_exists(at("hl/h-bad")));
	CHECK(st.rejected == 1);
}

TEST(size_cap_and_corrupt_archive)
{
	static const struct ent ents[] = {
		{ "big", AE_IFREG, 0644, "0123456789012345678901234567890123456789", NULL },
	};
	char err[256];
	int fd;

	CHECK(make_archive(at("big.zip"), 1, ents, nitems(ents)) == 0);
	CHECK(archive_unpack(at("big.zip"), at("big"), 10, NULL, err,
	    sizeof(err)) == -1);
	CHECK(strstr(err, "exceeds") != NULL);
	CHECK(archive_unpack(at("big.zip"), at("big2"), 1000, NULL, err,
	    sizeof(err)) == 0);

	fd = open(at("junk.zip"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd != -1);
	if (fd != -1) {
		static const char junk[] = "PK\x03\x04 this is not a zip";
		CHECK(write(fd, junk, sizeof(junk) - 1) == (ssize_t)sizeof(junk) - 1);
		close(fd);
	}
	CHECK(archive_unpack(at("junk.zip"), at("junk"), 0, NULL, err,
	    sizeof(err)) == -1);
	CHECK(err[0] != '\0');
	CHECK(archive_unpack(at("missing.zip"), at("missing"), 0, NULL, err,
	    sizeof(err)) == -1);
}

int
main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	log_set_level(getenv("T_VERBOSE") ? LOG_DEBUG : LOG_ERROR);	/* rejected entries are expected here */
	RUN(name_checks);
	RUN(link_checks);
	RUN(zip_keeps_modes_and_links_rejects_slip);
	RUN(link_chain_and_write_through_link);
	RUN(tar_hardlink_outside_rejected);
	RUN(size_cap_and_corrupt_archive);
	(void)fs_rm_rf(dir);
	return t_done();
}
