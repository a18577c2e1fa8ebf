/* digest-set.c — see snapshot-private.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot-private.h"
#include "util.h"

struct digest_set_slot {
        struct digest d;
        size_t value;
        bool used;
};

struct digest_set {
        size_t n, cap; /* cap is a power of two, n <= cap / 2 */
        struct digest_set_slot *slots;
};

static size_t slot_hash(const struct digest *d)
{
        uint64_t h;
        memcpy(&h, d->b, sizeof h);
        return (size_t)h;
}

struct digest_set *digest_set_new(void)
{
        struct digest_set *s = calloc(1, sizeof *s);
        if (!s)
                return NULL;
        s->cap = 64;
        s->slots = calloc(s->cap, sizeof *s->slots);
        if (!s->slots) {
                free(s);
                return NULL;
        }
        return s;
}

struct digest_set *digest_set_free(struct digest_set *s)
{
        if (s) {
                free(s->slots);
                free(s);
        }
        return NULL;
}

static struct digest_set_slot *slot_find(struct digest_set_slot *slots, size_t cap,
                                         const struct digest *d)
{
        size_t i = slot_hash(d) & (cap - 1);
        while (slots[i].used && !digest_eq(&slots[i].d, d))
                i = (i + 1) & (cap - 1);
        return &slots[i];
}

static int grow(struct digest_set *s)
{
        size_t cap = s->cap * 2;
        struct digest_set_slot *slots;

        if (cap < s->cap || cap > SIZE_MAX / sizeof *slots)
                return -ENOMEM;
        slots = calloc(cap, sizeof *slots);
        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < s->cap; i++)
                if (s->slots[i].used)
                        *slot_find(slots, cap, &s->slots[i].d) = s->slots[i];
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
        return 0;
}

int digest_set_put(struct digest_set *s, const struct digest *d, size_t value)
{
        struct digest_set_slot *slot;
        int r;

        if (!s || !d)
                return -EINVAL;
        slot = slot_find(s->slots, s->cap, d);
        if (slot->used)
                return 0;
        if ((s->n + 1) * 2 > s->cap) {
                r = grow(s);
                if (r < 0)
                        return r;
                slot = slot_find(s->slots, s->cap, d);
        }
        slot->d = *d;
        slot->value = value;
        slot->used = true;
        s->n++;
        return 1;
}

bool digest_set_get(const struct digest_set *s, const struct digest *d, size_t *ret_value)
{
        const struct digest_set_slot *slot;

        if (!s || !d)
                return false;
        slot = slot_find(s->slots, s->cap, d);
        if (!slot->used)
                return false;
        if (ret_value)
                *ret_value = slot->value;
        return true;
}

size_t digest_set_size(const struct digest_set *s)
{
        return s ? s->n : 0;
}
