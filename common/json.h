/*
 * json.h - decoding helpers over cJSON that reproduce GoAgent's rules
 * (protocol §1): keys matched case-insensitively with an exact-case match
 * preferred, absent == null == zero value, and a type mismatch is an error
 * that fails the whole decode.
 *
 * Getter convention: return 0 when the key is absent/null (output left at the
 * zero value) or holds the right type (output set), -1 on a type mismatch.
 */
#ifndef JSON_H
#define JSON_H

#include <stddef.h>
#include <cjson/cJSON.h>

/** Member key of obj: exact case first, then case-insensitive. NULL if absent. */
const cJSON *json_get(const cJSON *obj, const char *key);

/** String member; *out = new heap copy (caller frees) or NULL when absent. */
int json_get_str(const cJSON *obj, const char *key, char **out);
/** Integer member (must be an integral number within int range). */
int json_get_int(const cJSON *obj, const char *key, int *out, int *present);
/** 64-bit integer member. */
int json_get_ll(const cJSON *obj, const char *key, long long *out, int *present);
/** Boolean member. */
int json_get_bool(const cJSON *obj, const char *key, int *out);
/** Object member (or absent/null -> *out NULL). Borrowed pointer. */
int json_get_obj(const cJSON *obj, const char *key, const cJSON **out);
/** Array member (or absent/null -> *out NULL). Borrowed pointer. */
int json_get_arr(const cJSON *obj, const char *key, const cJSON **out);

/** Add a string member (NULL value -> JSON null). */
void json_add_str(cJSON *obj, const char *key, const char *value);

/** Serialise compactly; caller frees. Aborts on OOM. */
char *json_print(const cJSON *item);

/**
 * A decoded response envelope: BK-CI "Result" {status, message, data} or
 * "AgentResult" (the same plus agentStatus) (protocol §5.1-5.3).
 */
struct envelope {
	long long	 status;	/* 0 = success */
	char		*message;	/* may be NULL */
	char		*agent_status;	/* AgentResult only; may be NULL */
	const cJSON	*data;		/* borrowed from root; NULL when absent/null */
	cJSON		*root;		/* owned parse tree */
};

/**
 * Parse body (len bytes, need not be NUL-terminated) as an envelope.
 * Returns 0 on success; -1 when the body is not JSON, not an object, or a
 * key has the wrong type; then err (errlen bytes) says why and env holds
 * nothing to free. A missing status reads as 0, as Go's decoder does.
 */
int envelope_parse(const char *body, size_t len, struct envelope *env,
    char *err, size_t errlen);
/** Free what envelope_parse allocated; safe on a zeroed envelope. */
void envelope_free(struct envelope *env);

/**
 * Decode an answer whose data is a string: the startup and status calls,
 * where it is an AgentStatus name (protocol §7.1, §7.2; bk-ci
 * BuildAgentThirdPartyAgentResource startup/status). body: len bytes, need
 * not be NUL-terminated. Returns 0 when the body is an envelope with status
 * 0; then *out is a new copy of data (caller frees), or NULL when data is
 * absent or not a string. Returns -1 otherwise, *out NULL, with a one-line
 * reason in err (errlen bytes): the parse error, or "status N: <message>".
 */
int envelope_data_str(const char *body, size_t len, char **out, char *err,
    size_t errlen);

#endif
