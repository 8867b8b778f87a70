/*
 * base64.h - standard base64 with padding (RFC 4648 §4) through OpenSSL.
 * Used for the worker's build-info argument (agent-behaviour §6.4).
 */
#ifndef BASE64_H
#define BASE64_H

#include <stddef.h>

/** Encode len bytes; returns a new NUL-terminated string (caller frees). */
char *base64_encode(const void *data, size_t len);

/**
 * Decode a base64 string (white space not allowed, padding required).
 * On success *out is a new buffer (caller frees, NUL-terminated for
 * convenience) of *out_len bytes and 0 is returned; -1 on malformed input.
 */
int base64_decode(const char *in, unsigned char **out, size_t *out_len);

#endif
