/*
 * md5.h - MD5 through OpenSSL EVP. Digests travel as 32-char lowercase hex
 * (protocol §1: X-Checksum-Md5, eTag).
 */
#ifndef MD5_H
#define MD5_H

#include <stddef.h>

#define MD5_HEX_LEN 33	/* 32 hex digits + NUL */

struct md5_stream;

/** Start a streaming digest. Never NULL (aborts on OOM). Free with md5_stream_final. */
struct md5_stream *md5_stream_new(void);
/** Feed len bytes. */
void md5_stream_update(struct md5_stream *s, const void *data, size_t len);
/** Finish: writes the hex digest into hex[MD5_HEX_LEN] and frees s. */
void md5_stream_final(struct md5_stream *s, char hex[MD5_HEX_LEN]);

/** Digest of a buffer into hex[MD5_HEX_LEN]. */
void md5_hex(const void *data, size_t len, char hex[MD5_HEX_LEN]);

/**
 * Digest of a file's content into hex[MD5_HEX_LEN]. Returns 0, or -1 with
 * errno (a missing file gives ENOENT and hex = "").
 */
int md5_file(const char *path, char hex[MD5_HEX_LEN]);

#endif
