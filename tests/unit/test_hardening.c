/*
 * test_hardening.c - regression tests for defects found by the hardening
 * work (issue #7): static analysis, sanitizers and fuzzing. Each test names
 * the finding it pins down.
 */
#include <string.h>

#include "log.h"
#include "t.h"

/*
 * Found in review of a clang-tidy finding in log_redact: a secret made of
 * '*' was found again inside its own mask, so the loop never ended.
 */
TEST(redact_star_secret_terminates)
{
	char line[64];

	log_clear_secrets();
	log_add_secret("***");
	snprintf(line, sizeof(line), "key=*** and ***");
	log_redact(line, sizeof(line));
	CHECK_STR(line, "key=*** and ***");

	log_clear_secrets();
	log_add_secret("*");
	snprintf(line, sizeof(line), "a*b**");
	log_redact(line, sizeof(line));
	CHECK_STR(line, "a*b**");

	log_clear_secrets();
	log_add_secret("s3cr3t");
	snprintf(line, sizeof(line), "s3cr3ts3cr3t|xs3cr3t");
	log_redact(line, sizeof(line));
	CHECK_STR(line, "******|x***");
	log_clear_secrets();
}

int
main(void)
{
	RUN(redact_star_secret_terminates);
	return t_done();
}
