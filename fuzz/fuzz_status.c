/*
 * fuzz_status.c - the status and startup answers: a Result whose data is an
 * AgentStatus name (protocol §7.1, §7.2; json.h envelope_data_str). The
 * status answer gates every build claim.
 */
#include <string.h>

#include "fuzz.h"
#include "json.h"

FUZZ_QUIET_INIT

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[300], *st = (char *)1;

	err[0] = '\0';
	if (envelope_data_str((const char *)data, size, &st, err, sizeof(err)) == -1) {
		FUZZ_ASSERT(st == NULL);
		FUZZ_ASSERT(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	/* Only an IMPORT_OK string lets the agent claim. */
	if (st != NULL && strcmp(st, "IMPORT_OK") == 0)
		FUZZ_ASSERT(memmem(data, size, "IMPORT_OK", 9) != NULL ||
		    memmem(data, size, "\\u", 2) != NULL);
	free(st);
	return 0;
}
