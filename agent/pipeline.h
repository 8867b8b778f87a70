/*
 * pipeline.h - decoding of one pending pipeline item (protocol §7.9;
 * agent-behaviour §8), kept apart from the loop in pipeline.c so that it
 * can be tested and fuzzed without side effects (fuzz/fuzz_pipeline.c).
 */
#ifndef PIPELINE_H
#define PIPELINE_H

#include <cjson/cJSON.h>

/* What the loop does with an item. */
enum pipeline_verdict {
	PI_SKIP_TYPE,	/* not a COMMAND: warn, leave it pending (§7.9) */
	PI_SKIP_SEQ,	/* COMMAND without a usable seqId: cannot be answered */
	PI_REFUSE,	/* answer FAILURE with refusal, never run */
	PI_RUN,		/* run command under the task name seq_id */
};

/** A decoded item; every pointer is owned (pipeline_item_free). */
struct pipeline_item {
	char		*type;		/* NULL when absent or not a string */
	char		*seq_id;	/* NULL for PI_SKIP_TYPE / PI_SKIP_SEQ */
	int		 seq_was_number;/* seqId came as an integer (a type error
					   that can still be answered) */
	char		*command;	/* PI_RUN: the non-blank script text */
	const char	*refusal;	/* PI_REFUSE: why (static text) */
};

/**
 * Decode data, the object of a pipelines answer (protocol §7.9 COMMAND /
 * FILE item; bk-ci BuildAgentThirdPartyAgentResource agents/pipelines):
 * type must be the string "COMMAND"; seqId a non-empty string (or an
 * integer, answered as its decimal text); command a non-blank string; the
 * seqId also names files, so it must pass exec_id_valid(). Fills it (free
 * with pipeline_item_free) and returns the verdict. No side effects.
 */
enum pipeline_verdict pipeline_item_parse(const cJSON *data,
    struct pipeline_item *it);
/** Free what pipeline_item_parse allocated; it is zeroed. */
void pipeline_item_free(struct pipeline_item *it);

#endif
