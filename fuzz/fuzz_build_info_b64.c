/*
 * fuzz_build_info_b64.c - the build info as it travels to the worker and
 * back from a journal or an @file: argument: base64 (common/base64.h) of a
 * JSON object checked by build_info_check (agent-behaviour §6.4, protocol
 * Appendix B). Also: any bytes survive base64_encode/base64_decode.
 */
#include <string.h>

#include "base64.h"
#include "build.h"
#include "fuzz.h"

FUZZ_QUIET_INIT

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size), *enc, err[300];
	unsigned char *dec = NULL;
	size_t declen = 0;
	cJSON *info;

	/* Round trip of the raw bytes. */
	enc = base64_encode(data, size);
	FUZZ_ASSERT(strlen(enc) == (size + 2) / 3 * 4);
	FUZZ_ASSERT(base64_decode(enc, &dec, &declen) == 0);
	FUZZ_ASSERT(declen == size && (size == 0 || memcmp(dec, data, size) == 0));
	free(dec);
	free(enc);

	/* The input as an argument: base64 text of a build info. */
	dec = NULL;
	if (base64_decode(text, &dec, &declen) == 0) {
		FUZZ_ASSERT(dec != NULL && dec[declen] == '\0');
		info = cJSON_ParseWithLength((const char *)dec, declen);
		if (info != NULL) {
			if (cJSON_IsObject(info))
				(void)build_info_check(info, err, sizeof(err));
			cJSON_Delete(info);
		}
		free(dec);
	}
	free(text);
	return 0;
}
