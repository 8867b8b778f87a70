/* validate.c - checks of server-sent values before use (validate.h). */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "validate.h"

/* Fill why (when there is room) and return -1. */
static int
refuse(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* 1 when s holds a byte below 0x20 (but tab when tab_ok) or 0x7f. */
static int
has_control(const char *s, int tab_ok)
{
	for (; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && !(tab_ok && *s == '\t')) ||
		    *s == 0x7f)
			return 1;
	return 0;
}

/* A host name character (letters, digits, '-', '.', '_'). */
static int
host_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

/*
 * host[:port] at s, ending at end: returns 0, or -1 with why. An IPv6
 * literal is "[addr]".
 */
static int
authority_check(const char *s, const char *end, char *why, size_t whylen)
{
	const char *p = s, *colon;
	char buf[64];
	long port = 0;

	if (p == end)
		return refuse(why, whylen, "no host");
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t)(end - p));
		struct in6_addr a6;
		size_t n;

		if (close == NULL || (n = (size_t)(close - p - 1)) == 0 ||
		    n >= sizeof(buf))
			return refuse(why, whylen, "bad IPv6 host");
		memcpy(buf, p + 1, n);
		buf[n] = '\0';
		if (inet_pton(AF_INET6, buf, &a6) != 1)
			return refuse(why, whylen, "bad IPv6 host");
		p = close + 1;
		if (p != end && *p != ':')
			return refuse(why, whylen, "junk after the IPv6 host");
		colon = p != end ? p : NULL;
	} else {
		for (; p != end && *p != ':'; p++)
			if (!host_char(*p))
				return refuse(why, whylen, "byte 0x%02x in the host",
				    (unsigned char)*p);
		if (p == s)
			return refuse(why, whylen, "no host");
		if (p - s > 253)
			return refuse(why, whylen, "host longer than 253 bytes");
		colon = p != end ? p : NULL;
	}
	if (colon == NULL)
		return 0;
	for (p = colon + 1; p != end; p++) {
		if (!isdigit((unsigned char)*p) || p - colon > 5)
			return refuse(why, whylen, "bad port");
		port = port * 10 + (*p - '0');
	}
	if (port < 1 || port > 65535)
		return refuse(why, whylen, "port not in 1..65535");
	return 0;
}

/* gateway / fileGateway (validate.h). */
int
validate_gateway(const char *s, char *why, size_t whylen)
{
	const char *auth = s, *end, *p;
	int url = 0;

	if (s == NULL || *s == '\0')
		return refuse(why, whylen, "empty");
	if (strlen(s) > VALIDATE_GATEWAY_MAX)
		return refuse(why, whylen, "longer than %d bytes",
		    VALIDATE_GATEWAY_MAX);
	if (has_control(s, 0))
		return refuse(why, whylen, "control bytes");
	if (strncmp(s, "http://", 7) == 0) {
		auth = s + 7;
		url = 1;
	} else if (strncmp(s, "https://", 8) == 0) {
		auth = s + 8;
		url = 1;
	} else if (strstr(s, "://") != NULL) {
		return refuse(why, whylen, "scheme other than http:// or https://");
	} else if (strncasecmp(s, "http", 4) == 0) {
		return refuse(why, whylen, "starts with \"http\" but is not an "
		    "http:// or https:// URL");
	}
	end = auth + strcspn(auth, "/");
	if (!url && *end != '\0')
		return refuse(why, whylen, "a path without a scheme");
	if (memchr(auth, '@', (size_t)(end - auth)) != NULL)
		return refuse(why, whylen, "user info ('@')");
	if (authority_check(auth, end, why, whylen) == -1)
		return -1;
	for (p = end; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && strchr("-._~/%", *p) == NULL)
			return refuse(why, whylen, "byte '%c' in the path", *p);
	return 0;
}

/* props.ignoreLocalIps (validate.h). */
int
validate_ip_list(const char *s, char *why, size_t whylen)
{
	const char *p = s;

	if (s == NULL)
		return 0;
	if (strlen(s) > VALIDATE_IPS_MAX)
		return refuse(why, whylen, "longer than %d bytes", VALIDATE_IPS_MAX);
	while (*p != '\0') {
		unsigned char a[sizeof(struct in6_addr)];
		char buf[INET6_ADDRSTRLEN + 1];
		size_t len, l;

		while (*p == ' ' || *p == ',')
			p++;
		len = strcspn(p, ",");
		l = len;
		while (l > 0 && p[l - 1] == ' ')
			l--;
		if (l == 0) {
			p += len;
			continue;
		}
		if (l >= sizeof(buf))
			return refuse(why, whylen, "item %zu bytes long, not an IP", l);
		memcpy(buf, p, l);
		buf[l] = '\0';
		if (inet_pton(AF_INET, buf, a) != 1 && inet_pton(AF_INET6, buf, a) != 1)
			return refuse(why, whylen, "an item is not an IP address");
		p += len;
	}
	return 0;
}

/* An environment variable name (validate.h). */
int
validate_env_name(const char *s, char *why, size_t whylen)
{
	size_t i;

	if (s == NULL || *s == '\0')
		return refuse(why, whylen, "empty name");
	for (i = 0; s[i] != '\0'; i++)
		if (!(s[i] == '_' || isalpha((unsigned char)s[i]) ||
		    (i > 0 && isdigit((unsigned char)s[i]))))
			return refuse(why, whylen, "not an environment variable name");
	if (i > VALIDATE_ENV_NAME_MAX)
		return refuse(why, whylen, "name longer than %d bytes",
		    VALIDATE_ENV_NAME_MAX);
	return 0;
}

/* An environment variable value (validate.h). */
int
validate_env_value(const char *s, char *why, size_t whylen)
{
	if (s == NULL)
		return refuse(why, whylen, "no value");
	if (strlen(s) > VALIDATE_ENV_VALUE_MAX)
		return refuse(why, whylen, "value longer than %d bytes",
		    VALIDATE_ENV_VALUE_MAX);
	if (has_control(s, 1))
		return refuse(why, whylen, "control bytes (newline...) in the value");
	return 0;
}

/* The envs object of a heartbeat answer (validate.h). */
int
validate_envs(const cJSON *envs, char *why, size_t whylen)
{
	const cJSON *it;
	char one[128];
	int n = 0;

	if (envs == NULL)
		return 0;
	if (!cJSON_IsObject(envs))
		return refuse(why, whylen, "not an object");
	cJSON_ArrayForEach(it, envs) {
		if (++n > VALIDATE_ENVS_MAX)
			return refuse(why, whylen, "more than %d entries",
			    VALIDATE_ENVS_MAX);
		if (validate_env_name(it->string, one, sizeof(one)) == -1)
			return refuse(why, whylen, "entry %d: %s", n, one);
		if (cJSON_IsNull(it))
			continue;
		if (!cJSON_IsString(it))
			return refuse(why, whylen, "%s: not a string", it->string);
		if (validate_env_value(it->valuestring, one, sizeof(one)) == -1)
			return refuse(why, whylen, "%s: %s", it->string, one);
	}
	return 0;
}

/* A language tag (validate.h). */
int
validate_language(const char *s, char *why, size_t whylen)
{
	size_t n = 0;
	int first = 1;

	if (s == NULL)
		return refuse(why, whylen, "empty");
	for (;; s++) {
		if (*s == '\0' || *s == '-' || *s == '_') {
			if (n == 0 || n > 8 || (first && n < 2))
				return refuse(why, whylen, "not a language tag");
			if (*s == '\0')
				return 0;
			first = 0;
			n = 0;
			continue;
		}
		if (first ? !isalpha((unsigned char)*s) :
		    !isalnum((unsigned char)*s))
			return refuse(why, whylen, "not a language tag");
		n++;
	}
}

/* A count within lo..hi (validate.h). */
int
validate_range(long long n, long long lo, long long hi, char *why,
    size_t whylen)
{
	if (n < lo || n > hi)
		return refuse(why, whylen, "%lld not in %lld..%lld", n, lo, hi);
	return 0;
}
