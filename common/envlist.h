/*
 * envlist.h - a NULL-terminated environment vector for execve(), built from
 * the current environment plus overrides (later sets win).
 */
#ifndef ENVLIST_H
#define ENVLIST_H

#include <stddef.h>

struct envlist {
	char	**v;	/* "KEY=VALUE" strings, NULL-terminated; owned */
	size_t	  n;	/* entries, excluding the NULL */
};

/** Start from a copy of environ (inherit = 1) or empty (0). */
void envlist_init(struct envlist *e, int inherit);
/** Set KEY=VALUE, replacing an existing KEY. Both strings are copied. */
void envlist_set(struct envlist *e, const char *key, const char *value);
/** Remove KEY if present. */
void envlist_unset(struct envlist *e, const char *key);
/** Value of KEY or NULL (borrowed). */
const char *envlist_get(const struct envlist *e, const char *key);
/** Free every string and the vector. */
void envlist_free(struct envlist *e);

#endif
