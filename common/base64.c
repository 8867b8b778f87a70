/* base64.c - base64 via OpenSSL EVP_EncodeBlock/EVP_DecodeBlock. */
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "base64.h"
#include "util.h"

/* Standard base64 with padding. */
char *
base64_encode(const void *data, size_t len)
{
	size_t cap = 4 * ((len + 2) / 3) + 1;
	char *out = xmalloc(cap);

	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* Strict base64 decode (padding required, no white space). */
int
base64_decode(const char *in, unsigned char **out, size_t *out_len)
{
	size_t len = strlen(in), pad = 0, i;
	unsigned char *buf;
	int n;

	if (len % 4 != 0 || len > (size_t)1 << 30)
		return -1;
	for (i = 0; i < len; i++) {
		char c = in[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '+' || c == '/' ||
		    (c == '=' && i >= len - 2)))
			return -1;
	}
	if (len >= 1 && in[len - 1] == '=')
		pad++;
	if (len >= 2 && in[len - 2] == '=') {
		if (in[len - 1] != '=')
			return -1;
		pad++;
	}
	buf = xmalloc(len / 4 * 3 + 1);
	n = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len);
	if (n < 0 || (size_t)n < pad) {
		free(buf);
		return -1;
	}
	*out_len = (size_t)n - pad;
	buf[*out_len] = '\0';
	*out = buf;
	return 0;
}
