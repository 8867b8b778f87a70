/* md5.c - MD5 digests (OpenSSL EVP), streaming and whole-file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "log.h"
#include "fsutil.h"
#include "md5.h"

struct md5_stream {
	EVP_MD_CTX *ctx;
};

/* Start a streaming MD5. */
struct md5_stream *
md5_stream_new(void)
{
	struct md5_stream *s;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1)
		fatalx("md5: cannot initialise OpenSSL digest");
	s = OPENSSL_malloc(sizeof(*s));
	if (s == NULL)
		fatalx("md5: out of memory");
	s->ctx = ctx;
	return s;
}

/* Feed bytes to a streaming MD5. */
void
md5_stream_update(struct md5_stream *s, const void *data, size_t len)
{
	if (len > 0)
		EVP_DigestUpdate(s->ctx, data, len);
}

/* Finish a streaming MD5 into lowercase hex and free it. */
void
md5_stream_final(struct md5_stream *s, char hex[MD5_HEX_LEN])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;

	EVP_DigestFinal_ex(s->ctx, md, &n);
	for (i = 0; i < n && i < 16; i++)
		snprintf(hex + (size_t)i * 2, 3, "%02x", md[i]);
	hex[32] = '\0';
	EVP_MD_CTX_free(s->ctx);
	OPENSSL_free(s);
}

/* MD5 of a buffer as lowercase hex. */
void
md5_hex(const void *data, size_t len, char hex[MD5_HEX_LEN])
{
	struct md5_stream *s = md5_stream_new();

	md5_stream_update(s, data, len);
	md5_stream_final(s, hex);
}

/* MD5 of a file's content as lowercase hex. */
int
md5_file(const char *path, char hex[MD5_HEX_LEN])
{
	char buf[65536];
	struct md5_stream *s;
	ssize_t n;
	int fd, saved;

	hex[0] = '\0';
	/* A FIFO in place of the file must not block: regular files only. */
	if ((fd = fs_open_regular(path, 0)) == -1)
		return -1;
	s = md5_stream_new();
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			saved = errno;
			md5_stream_final(s, hex);
			hex[0] = '\0';
			close(fd);
			errno = saved;
			return -1;
		}
		md5_stream_update(s, buf, (size_t)n);
	}
	close(fd);
	md5_stream_final(s, hex);
	return 0;
}
