/* json.c - cJSON helpers with Go decoding semantics, and envelopes. */
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "util.h"

/* Member by key: exact case first, then case-insensitive (Go). */
const cJSON *
json_get(const cJSON *obj, const char *key)
{
	const cJSON *it;

	if (obj == NULL || !cJSON_IsObject(obj))
		return NULL;
	/* Duplicate keys: the last one wins, as in Go. */
	const cJSON *exact = NULL, *fold = NULL;
	cJSON_ArrayForEach(it, obj) {
		if (it->string == NULL)
			continue;
		if (strcmp(it->string, key) == 0)
			exact = it;
		else if (strcasecmp(it->string, key) == 0)
			fold = it;
	}
	return exact != NULL ? exact : fold;
}

/* True for a missing member or a JSON null. */
static int
absent(const cJSON *it)
{
	return it == NULL || cJSON_IsNull(it);
}

/* String member, copied; -1 on a type mismatch. */
int
json_get_str(const cJSON *obj, const char *key, char **out)
{
	const cJSON *it = json_get(obj, key);

	*out = NULL;
	if (absent(it))
		return 0;
	if (!cJSON_IsString(it))
		return -1;
	*out = xstrdup(it->valuestring);
	return 0;
}

/* Integral number member as long long; -1 on a mismatch. */
int
json_get_ll(const cJSON *obj, const char *key, long long *out, int *present)
{
	const cJSON *it = json_get(obj, key);
	double d;

	if (present != NULL)
		*present = 0;
	if (absent(it))
		return 0;
	if (!cJSON_IsNumber(it))
		return -1;
	d = it->valuedouble;
	if (d != floor(d) || d < -9.2e18 || d > 9.2e18)
		return -1;
	*out = (long long)d;
	if (present != NULL)
		*present = 1;
	return 0;
}

/* Integral number member within int; -1 on a mismatch. */
int
json_get_int(const cJSON *obj, const char *key, int *out, int *present)
{
	long long v = 0;
	int p = 0;

	if (present != NULL)
		*present = 0;
	if (json_get_ll(obj, key, &v, &p) == -1)
		return -1;
	if (!p)
		return 0;
	if (v < INT_MIN || v > INT_MAX)
		return -1;
	*out = (int)v;
	if (present != NULL)
		*present = 1;
	return 0;
}

/* Boolean member; -1 on a type mismatch. */
int
json_get_bool(const cJSON *obj, const char *key, int *out)
{
	const cJSON *it = json_get(obj, key);

	if (absent(it))
		return 0;
	if (!cJSON_IsBool(it))
		return -1;
	*out = cJSON_IsTrue(it);
	return 0;
}

/* Object member (borrowed); -1 on a type mismatch. */
int
json_get_obj(const cJSON *obj, const char *key, const cJSON **out)
{
	const cJSON *it = json_get(obj, key);

	*out = NULL;
	if (absent(it))
		return 0;
	if (!cJSON_IsObject(it))
		return -1;
	*out = it;
	return 0;
}

/* Array member (borrowed); -1 on a type mismatch. */
int
json_get_arr(const cJSON *obj, const char *key, const cJSON **out)
{
	const cJSON *it = json_get(obj, key);

	*out = NULL;
	if (absent(it))
		return 0;
	if (!cJSON_IsArray(it))
		return -1;
	*out = it;
	return 0;
}

/* Add a string member, or null for NULL. */
void
json_add_str(cJSON *obj, const char *key, const char *value)
{
	if (value == NULL)
		cJSON_AddNullToObject(obj, key);
	else
		cJSON_AddStringToObject(obj, key, value);
}

/* Compact JSON text; aborts on out of memory. */
char *
json_print(const cJSON *item)
{
	char *s = cJSON_PrintUnformatted(item);

	if (s == NULL)
		fatalx("json: out of memory while printing");
	return s;
}

/* Decode a Result / AgentResult envelope with Go's rules. */
int
envelope_parse(const char *body, size_t len, struct envelope *env,
    char *err, size_t errlen)
{
	const char *end = NULL;

	memset(env, 0, sizeof(*env));
	if (body == NULL || len == 0) {
		snprintf(err, errlen, "empty response body");
		return -1;
	}
	env->root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (env->root == NULL) {
		snprintf(err, errlen, "response is not JSON (near byte %ld)",
		    end != NULL ? (long)(end - body) : -1L);
		return -1;
	}
	/* Go rejects anything but white space after the value. */
	while (end != NULL && end < body + len && (*end == ' ' || *end == '\n' ||
	    *end == '\r' || *end == '\t'))
		end++;
	if (end != body + len) {
		snprintf(err, errlen, "response has data after the JSON value");
		goto fail;
	}
	if (!cJSON_IsObject(env->root)) {
		snprintf(err, errlen, "response is not a JSON object");
		goto fail;
	}
	if (json_get_ll(env->root, "status", &env->status, NULL) == -1) {
		snprintf(err, errlen, "response 'status' is not an integer");
		goto fail;
	}
	if (json_get_str(env->root, "message", &env->message) == -1) {
		snprintf(err, errlen, "response 'message' is not a string");
		goto fail;
	}
	if (json_get_str(env->root, "agentStatus", &env->agent_status) == -1) {
		snprintf(err, errlen, "response 'agentStatus' is not a string");
		goto fail;
	}
	env->data = json_get(env->root, "data");
	if (env->data != NULL && cJSON_IsNull(env->data))
		env->data = NULL;
	return 0;
fail:
	envelope_free(env);
	return -1;
}

/* Free a decoded envelope. */
void
envelope_free(struct envelope *env)
{
	free(env->message);
	free(env->agent_status);
	cJSON_Delete(env->root);
	memset(env, 0, sizeof(*env));
}

/* Envelope with status 0 and (maybe) a string data, e.g. an AgentStatus. */
int
envelope_data_str(const char *body, size_t len, char **out, char *err,
    size_t errlen)
{
	struct envelope env;

	*out = NULL;
	if (envelope_parse(body, len, &env, err, errlen) == -1)
		return -1;
	if (env.status != 0) {
		snprintf(err, errlen, "status %lld: %s", env.status,
		    env.message != NULL ? env.message : "(no message)");
		envelope_free(&env);
		return -1;
	}
	if (env.data != NULL && cJSON_IsString(env.data))
		*out = xstrdup(env.data->valuestring);
	envelope_free(&env);
	return 0;
}
