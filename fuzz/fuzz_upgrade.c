/*
 * fuzz_upgrade.c - the upgrade check answer (protocol §7.4 UpgradeItem in
 * an AgentResult; agent.h upgrade_answer_parse): it decides whether the
 * agent downloads and installs new binaries, a worker jar or a JDK.
 */
#include <string.h>

#include "agent.h"
#include "fuzz.h"

FUZZ_QUIET_INIT

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int want[4] = { 7, 7, 7, 7 }, rc, i, any = 0;
	char err[300];

	err[0] = '\0';
	rc = upgrade_answer_parse((const char *)data, size, want, err, sizeof(err));
	FUZZ_ASSERT(rc >= -1 && rc <= 1);
	for (i = 0; i < 4; i++) {
		FUZZ_ASSERT(want[i] == 0 || want[i] == 1);
		any |= want[i];
	}
	/* Something is asked exactly when 1 is returned. */
	FUZZ_ASSERT((rc == 1) == (any == 1));
	if (rc == -1)
		FUZZ_ASSERT(err[0] != '\0');
	FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL);
	/* An upgrade needs an answer that says true somewhere. */
	if (rc == 1)
		FUZZ_ASSERT(memmem(data, size, "true", 4) != NULL);
	return 0;
}
