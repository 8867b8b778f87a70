/*
 * validate.h - checks of values the server sends before the agent keeps
 * them: in memory, in .agent.properties, in a path, in the worker's
 * environment or on a command line (docs/security.md "Values from the
 * server"). Each check returns 0 when the value may be used, else -1 and a
 * short reason in why (NUL-terminated, at most whylen bytes; why may be
 * NULL when whylen is 0). Nothing is allocated.
 */
#ifndef VALIDATE_H
#define VALIDATE_H

#include <stddef.h>

#include <cjson/cJSON.h>

#define VALIDATE_GATEWAY_MAX	512	/* bytes of a gateway value */
#define VALIDATE_IPS_MAX	4096	/* bytes of an ignoreLocalIps list */
#define VALIDATE_ENV_NAME_MAX	255	/* bytes of an env var name */
#define VALIDATE_ENV_VALUE_MAX	32768	/* bytes of an env var value */
#define VALIDATE_ENVS_MAX	1024	/* entries of the envs map */
#define VALIDATE_PARALLEL_MAX	1000	/* parallel and docker task counts */
#define VALIDATE_KEEP_HOURS_MAX	8760	/* props.keepLogsHours: a year */

/**
 * gateway / fileGateway (bk-ci ThirdPartyAgentHeartbeatResponse): either
 * "host[:port]" or "http://" / "https://" (lower case) + host[:port] +
 * an optional path of [A-Za-z0-9-._~/%]. host: letters, digits, '-', '.',
 * '_' (at most 253), or an IPv6 address in brackets; port 1..65535.
 * Refused: empty, longer than VALIDATE_GATEWAY_MAX, control bytes or
 * blanks, another scheme, user info ('@'), a query or fragment, and a bare
 * host that starts with "http" (the agent would take it for a URL).
 */
int validate_gateway(const char *s, char *why, size_t whylen);

/**
 * props.ignoreLocalIps: a comma-separated list of IPv4 or IPv6 addresses,
 * blanks around items allowed, empty items skipped; at most
 * VALIDATE_IPS_MAX bytes.
 */
int validate_ip_list(const char *s, char *why, size_t whylen);

/** An environment variable name: [A-Za-z_][A-Za-z0-9_]*, 1..255 bytes. */
int validate_env_name(const char *s, char *why, size_t whylen);

/**
 * An environment variable value: at most VALIDATE_ENV_VALUE_MAX bytes, no
 * control byte but tab (no newline or carriage return: values end up in
 * scripts and log lines).
 */
int validate_env_value(const char *s, char *why, size_t whylen);

/**
 * The heartbeat's envs object (borrowed; NULL is valid): at most
 * VALIDATE_ENVS_MAX entries, each name valid and each value a valid string
 * or null. why names the first bad entry.
 */
int validate_envs(const cJSON *envs, char *why, size_t whylen);

/**
 * A language tag (devops.language; zh_CN, en-US, zh-Hans-CN): a first part
 * of 2..8 letters, then parts of 1..8 letters or digits, joined by '-' or
 * '_'.
 */
int validate_language(const char *s, char *why, size_t whylen);

/** A count n within lo..hi (both included). */
int validate_range(long long n, long long lo, long long hi, char *why,
    size_t whylen);

#endif
