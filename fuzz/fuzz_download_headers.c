/*
 * fuzz_download_headers.c - the response headers of an upgrade download
 * (protocol §7.5; common/http.h http_md5_header_parse): X-Checksum-Md5
 * decides whether a downloaded binary replaces the installed one.
 * The input is a header block; each line goes to the parser as libcurl
 * hands it over ("Name: value\r\n", not NUL-terminated).
 */
#include <string.h>

#include "fuzz.h"
#include "http.h"
#include "md5.h"

/* 1 when s is 32 lower-case hex digits. */
static int
is_md5(const char *s)
{
	size_t i;

	for (i = 0; i < 32; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[32] == '\0';
}

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	char md5[MD5_HEX_LEN];

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl != NULL ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		/* An exact-size copy: a read past the line is an ASan report. */
		char *line = malloc(len ? len : 1);

		if (line == NULL)
			abort();
		memcpy(line, p, len);
		memset(md5, 'x', sizeof(md5));
		if (http_md5_header_parse(line, len, md5) == 1) {
			FUZZ_ASSERT(memchr(md5, '\0', sizeof(md5)) != NULL);
			/* A checksum, nothing, or a value no md5 can equal. */
			FUZZ_ASSERT(md5[0] == '\0' || is_md5(md5) || md5[0] == '!');
			for (size_t i = 0; md5[i] != '\0'; i++)
				FUZZ_ASSERT(md5[i] >= 0x20 && md5[i] < 0x7f);
		} else {
			FUZZ_ASSERT(md5[0] == 'x');
		}
		free(line);
		p += len;
	}
	return 0;
}
