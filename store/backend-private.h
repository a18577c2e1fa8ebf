/* backend-private.h — helpers shared by the backend implementations only (not
 * part of the contract in backend.h): the empty OCI image index and its
 * validation. Thread-safe: no state. */
#ifndef STASIS_BACKEND_PRIVATE_H
#define STASIS_BACKEND_PRIVATE_H

#include <jansson.h>

#define OCI_INDEX_MEDIA_TYPE "application/vnd.oci.image.index.v1+json"

/* backend_index_new_empty(): {"schemaVersion":2,"mediaType":...,"manifests":[]}; NULL on OOM. */
json_t *backend_index_new_empty(void);
/* backend_index_check(): 0 if index is an object with a "manifests" array, else -EBADMSG. */
int backend_index_check(const json_t *index);

#endif
