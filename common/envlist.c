/* envlist.c - build environments for children. */
#include <stdlib.h>
#include <string.h>

#include "envlist.h"
#include "util.h"

extern char **environ;

/* Start from environ or empty. */
void
envlist_init(struct envlist *e, int inherit)
{
	size_t i, n = 0;

	if (inherit)
		while (environ[n] != NULL)
			n++;
	e->v = xcalloc(n + 1, sizeof(char *));
	e->n = 0;
	for (i = 0; i < n; i++)
		if (strchr(environ[i], '=') != NULL)
			e->v[e->n++] = xstrdup(environ[i]);
	e->v[e->n] = NULL;
}

/* Index of KEY in e, or -1. */
static long
envlist_find(const struct envlist *e, const char *key)
{
	size_t i, kl = strlen(key);

	for (i = 0; i < e->n; i++)
		if (strncmp(e->v[i], key, kl) == 0 && e->v[i][kl] == '=')
			return (long)i;
	return -1;
}

/* Set KEY=VALUE, replacing KEY. */
void
envlist_set(struct envlist *e, const char *key, const char *value)
{
	long i = envlist_find(e, key);
	char *kv = xasprintf("%s=%s", key, value ? value : "");

	if (i >= 0) {
		free(e->v[i]);
		e->v[i] = kv;
		return;
	}
	e->v = xrealloc(e->v, (e->n + 2) * sizeof(char *));
	e->v[e->n++] = kv;
	e->v[e->n] = NULL;
}

/* Remove KEY. */
void
envlist_unset(struct envlist *e, const char *key)
{
	long i = envlist_find(e, key);

	if (i < 0)
		return;
	free(e->v[i]);
	memmove(&e->v[i], &e->v[i + 1], (e->n - (size_t)i) * sizeof(char *));
	e->n--;
}

/* Value of KEY, or NULL. */
const char *
envlist_get(const struct envlist *e, const char *key)
{
	long i = envlist_find(e, key);

	return i >= 0 ? strchr(e->v[i], '=') + 1 : NULL;
}

/* Free the vector and its strings. */
void
envlist_free(struct envlist *e)
{
	size_t i;

	for (i = 0; i < e->n; i++)
		free(e->v[i]);
	free(e->v);
	e->v = NULL;
	e->n = 0;
}
