/* digest.h — SHA-256 content addresses: the "sha256:<hex>" form, one-shot and
 * streaming hashing (OpenSSL EVP). Thread-safe: no shared state; a
 * struct sha256 stream belongs to one thread at a time. */
#ifndef STASIS_DIGEST_H
#define STASIS_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_LEN 32
#define DIGEST_HEX_LEN 64
#define DIGEST_STR_LEN (7 + DIGEST_HEX_LEN) /* "sha256:" + hex */

struct digest {
        uint8_t b[DIGEST_LEN];
};

void digest_sha256(const void *data, size_t len, struct digest *ret);

/* digest_parse(): exactly "sha256:" + 64 lowercase hex digits; -EINVAL otherwise. */
int digest_parse(const char *s, struct digest *ret);
/* digest_parse_hex(): exactly 64 lowercase hex digits (a blobs/sha256/ file name). */
int digest_parse_hex(const char *hex, struct digest *ret);
/* Formatting; both return buf. */
char *digest_str(const struct digest *d, char buf[static DIGEST_STR_LEN + 1]);
char *digest_hex(const struct digest *d, char buf[static DIGEST_HEX_LEN + 1]);

int digest_cmp(const struct digest *a, const struct digest *b);
static inline bool digest_eq(const struct digest *a, const struct digest *b)
{
        return digest_cmp(a, b) == 0;
}

/* Streaming SHA-256. */
struct sha256;
struct sha256 *sha256_new(void);
struct sha256 *sha256_free(struct sha256 *s);
int sha256_update(struct sha256 *s, const void *data, size_t len);
/* sha256_final(): writes the digest and resets the stream for reuse. */
int sha256_final(struct sha256 *s, struct digest *ret);

#endif
