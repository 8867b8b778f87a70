/*
 * osversion.c - the heartbeat's props.osVersion, as GoAgent HEAD reports it
 * (bk-ci src/agent/agent/src/pkg/config/config_linux.go, config_darwin.go):
 *
 *   Linux  a JSON text of {"Name","Version","ID","IDLike","PrettyName",
 *          "VersionID"} from /etc/os-release plus "KernelVersion" and
 *          "Architecture" from uname(2);
 *   macOS  "<ProductVersion>;<kern.osrelease>";
 *   else   "".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#ifdef __APPLE__
#include <sys/sysctl.h>
#endif

#include "agent.h"
#include "fsutil.h"
#include "json.h"
#include "util.h"

#define OS_RELEASE_MAX	((size_t)64 * 1024)

/*
 * The value of key in os-release text (KEY=value, optionally in double or
 * single quotes, as os-release(5) allows); new string, "" when absent.
 */
static char *
os_release_value(const char *text, const char *key)
{
	size_t klen = strlen(key);
	const char *p = text;

	while (p != NULL && *p != '\0') {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
			const char *v = p + klen + 1;
			size_t vlen = len - klen - 1;
			if (vlen > 0 && v[vlen - 1] == '\r')
				vlen--;
			if (vlen >= 2 && (v[0] == '"' || v[0] == '\'') &&
			    v[vlen - 1] == v[0]) {
				v++;
				vlen -= 2;
			}
			return xstrndup(v, vlen);
		}
		p = eol ? eol + 1 : NULL;
	}
	return xstrdup("");
}

/* props.osVersion of this host; new string, "" when unknown. */
char *
os_version_detect(void)
{
#ifdef __APPLE__
	char prod[64] = "", rel[64] = "";
	size_t n = sizeof(prod);

	if (sysctlbyname("kern.osproductversion", prod, &n, NULL, 0) == -1)
		return xstrdup("");
	n = sizeof(rel);
	if (sysctlbyname("kern.osrelease", rel, &n, NULL, 0) == -1)
		return xstrdup("");
	return xasprintf("%s;%s", prod, rel);
#elif defined(__linux__)
	static const char *keys[][2] = {
		{ "Name", "NAME" }, { "Version", "VERSION" }, { "ID", "ID" },
		{ "IDLike", "ID_LIKE" }, { "PrettyName", "PRETTY_NAME" },
		{ "VersionID", "VERSION_ID" },
	};
	struct utsname u;
	char *text = NULL, *out;
	cJSON *o;
	size_t i;

	if (fs_read_regular("/etc/os-release", OS_RELEASE_MAX, &text, NULL) == -1 &&
	    fs_read_regular("/usr/lib/os-release", OS_RELEASE_MAX, &text, NULL) == -1)
		text = xstrdup("");
	o = cJSON_CreateObject();
	for (i = 0; i < nitems(keys); i++) {
		char *v = os_release_value(text, keys[i][1]);
		json_add_str(o, keys[i][0], v);
		free(v);
	}
	free(text);
	if (uname(&u) == 0) {
		json_add_str(o, "KernelVersion", u.release);
		json_add_str(o, "Architecture", u.machine);
	} else {
		json_add_str(o, "KernelVersion", "");
		json_add_str(o, "Architecture", "");
	}
	out = json_print(o);
	cJSON_Delete(o);
	return out;
#else
	return xstrdup("");
#endif
}
