/* Text a person will read in an error: checked for printable UTF-8, quoted and cut. */
#ifndef NANNY_TEXT_H
#define NANNY_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Longest quoted value that text_quote() writes, quotes and "..." included. */
#define TEXT_QUOTE_MAX 72

/* The length of the valid UTF-8 sequence at s (at most len bytes, len > 0), or 0. */
size_t text_utf8_length(const unsigned char *s, size_t len);

/* True when s (len bytes) is valid UTF-8 without control characters: text that can be
 * shown in a message or a JSON string as it is. */
bool text_printable(const char *s, size_t len);

/* Writes s (len bytes) into buf in double quotes for a message: control characters and
 * invalid UTF-8 escaped, cut at a character boundary with "..." when long. buf should hold
 * TEXT_QUOTE_MAX + 1 bytes; it is always NUL-terminated. */
void text_quote(const char *s, size_t len, char *buf, size_t size);

#endif
