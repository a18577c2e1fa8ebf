/* snapshot-private.h — helpers shared by snapshot.c, verify.c and gc.c and by
 * nothing else: a hash set of digests and index.json entry accessors.
 * Not part of the store's contract; a struct digest_set belongs to one thread. */
#ifndef STASIS_SNAPSHOT_PRIVATE_H
#define STASIS_SNAPSHOT_PRIVATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "digest.h"

/* json_decrefp() for _cleanup_ comes with jansson >= 2.9. */

/* A set of digests, each with a size_t value (open addressing; SHA-256
 * digests are uniform, so their first bytes are the hash). */
struct digest_set;
struct digest_set *digest_set_new(void);
struct digest_set *digest_set_free(struct digest_set *s);
static inline void digest_set_freep(struct digest_set **s)
{
        digest_set_free(*s);
}
/* put(): 1 if added (with value), 0 if already present (value untouched), -ENOMEM. */
int digest_set_put(struct digest_set *s, const struct digest *d, size_t value);
/* get(): true if present, and its value in *ret_value (may be NULL). */
bool digest_set_get(const struct digest_set *s, const struct digest *d, size_t *ret_value);
size_t digest_set_size(const struct digest_set *s);

/* index.json entries. index_manifests(): the "manifests" array, created if
 * missing (*ret_created set); -EBADMSG (logged) if the index is not an object
 * or "manifests" is not an array. */
int index_manifests(json_t *index, json_t **ret, bool *ret_created);
/* index_entry_digest(): 0, or -EBADMSG if the entry has no valid sha256 digest. */
int index_entry_digest(const json_t *e, struct digest *ret);
/* index_entry_tag(): the ref.name annotation, or NULL. */
const char *index_entry_tag(const json_t *e);

#endif
