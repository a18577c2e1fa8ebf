/* store.h — the store module's public header: content-addressed chunks,
 * packs, the snapshot tree, backends (local OCI layout, in-memory, fault
 * injection) and the commit/restore/verify/gc operations on them.
 * Knows nothing of FUSE or HTTP. Thread-safety is stated per part. */
#ifndef STASIS_STORE_H
#define STASIS_STORE_H

#include "util.h"
#include "digest.h"
#include "chunk.h"
#include "backend.h"
#include "tree.h"
#include "snapshot.h"
#include "commit.h"
#include "packer.h"
#include "import.h"

#endif
