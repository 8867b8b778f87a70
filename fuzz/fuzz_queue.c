/*
 * fuzz_queue.c - the Redis task queue's decoders (agent/queue.h): a task
 * message and a control message, as anyone who can RPUSH to the queue may
 * write them (docs/queue.md).
 */
#include <string.h>

#include "executor.h"
#include "fuzz.h"
#include "queue.h"

FUZZ_QUIET_INIT

/* One input as a task and as a control message, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct queue_task t;
	char err[512], *id = NULL;
	int rc, n = 0;

	err[0] = '\0';
	rc = queue_task_decode((const char *)data, size, &t, err, sizeof(err));
	FUZZ_ASSERT(rc == 0 || rc == -1 || rc == -2);
	FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL);
	if (rc != 0)
		FUZZ_ASSERT(err[0] != '\0');
	/* An id, when there is one, is a safe task dir name. */
	if (rc == -2)
		FUZZ_ASSERT(t.id == NULL);
	else
		FUZZ_ASSERT(t.id != NULL && exec_id_valid(t.id));
	if (rc == 0) {
		FUZZ_ASSERT(size <= QUEUE_MSG_MAX);
		FUZZ_ASSERT(t.type != NULL && t.argv != NULL && t.argv[0] != NULL);
		while (t.argv[n] != NULL) {
			FUZZ_ASSERT(n == 0 || t.argv[n] != NULL);
			n++;
		}
		FUZZ_ASSERT(n < QUEUE_ARGS_MAX);
		FUZZ_ASSERT(t.argv[0][0] != '\0' && strpbrk(t.argv[0], " \t\r\n") == NULL);
		FUZZ_ASSERT(t.timeout_ms >= 0);
	}
	queue_task_free(&t);
	FUZZ_ASSERT(t.id == NULL && t.argv == NULL);

	err[0] = '\0';
	rc = queue_control_decode((const char *)data, size, &id, err, sizeof(err));
	FUZZ_ASSERT(rc == 0 || rc == -1);
	if (rc == 0)
		FUZZ_ASSERT(id != NULL && exec_id_valid(id));
	else
		FUZZ_ASSERT(id == NULL && err[0] != '\0');
	free(id);
	return 0;
}
