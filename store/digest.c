/* digest.c — see digest.h. */
#include "digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

void digest_sha256(const void *data, size_t len, struct digest *ret)
{
        SHA256(data, len, ret->b);
}

static int unhex(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

int digest_parse_hex(const char *hex, struct digest *ret)
{
        struct digest d;
        if (!hex || !ret)
                return -EINVAL;
        for (size_t i = 0; i < DIGEST_LEN; i++) {
                int hi = unhex(hex[2 * i]), lo;
                if (hi < 0)
                        return -EINVAL;
                lo = unhex(hex[2 * i + 1]);
                if (lo < 0)
                        return -EINVAL;
                d.b[i] = (uint8_t)(hi << 4 | lo);
        }
        if (hex[DIGEST_HEX_LEN] != '\0')
                return -EINVAL;
        *ret = d;
        return 0;
}

int digest_parse(const char *s, struct digest *ret)
{
        if (!s || strncmp(s, "sha256:", 7) != 0)
                return -EINVAL;
        return digest_parse_hex(s + 7, ret);
}

char *digest_hex(const struct digest *d, char buf[static DIGEST_HEX_LEN + 1])
{
        static const char x[] = "0123456789abcdef";
        for (size_t i = 0; i < DIGEST_LEN; i++) {
                buf[2 * i] = x[d->b[i] >> 4];
                buf[2 * i + 1] = x[d->b[i] & 15];
        }
        buf[DIGEST_HEX_LEN] = '\0';
        return buf;
}

char *digest_str(const struct digest *d, char buf[static DIGEST_STR_LEN + 1])
{
        memcpy(buf, "sha256:", 7);
        digest_hex(d, buf + 7);
        return buf;
}

int digest_cmp(const struct digest *a, const struct digest *b)
{
        return memcmp(a->b, b->b, DIGEST_LEN);
}

struct sha256 {
        EVP_MD_CTX *ctx;
};

struct sha256 *sha256_new(void)
{
        struct sha256 *s = calloc(1, sizeof *s);
        if (!s)
                return NULL;
        s->ctx = EVP_MD_CTX_new();
        if (!s->ctx || EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(s->ctx);
                free(s);
                return NULL;
        }
        return s;
}

struct sha256 *sha256_free(struct sha256 *s)
{
        if (s) {
                EVP_MD_CTX_free(s->ctx);
                free(s);
        }
        return NULL;
}

int sha256_update(struct sha256 *s, const void *data, size_t len)
{
        if (!s)
                return -EINVAL;
        return EVP_DigestUpdate(s->ctx, data, len) == 1 ? 0 : -EIO;
}

int sha256_final(struct sha256 *s, struct digest *ret)
{
        unsigned n = 0;
        struct digest d;
        if (!s || !ret)
                return -EINVAL;
        if (EVP_DigestFinal_ex(s->ctx, d.b, &n) != 1 || n != DIGEST_LEN)
                return -EIO;
        if (EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1)
                return -EIO;
        *ret = d;
        return 0;
}
