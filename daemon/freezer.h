/* freezer.h — freezes and thaws a sandbox the way a mount's
 * io.stasis.freeze label says: "cgroup:/sys/fs/cgroup/PATH" (cgroup v2
 * cgroup.freeze, waiting for cgroup.events to say "frozen 1"; or, where
 * PATH has no cgroup.freeze, the v1 freezer's freezer.state) or "runc:ID"
 * (`runc pause ID` / `runc resume ID`, runc from $STASIS_RUNC or PATH).
 * Owns whether it froze the sandbox, so freeze and thaw are idempotent and
 * freezer_free() thaws what it froze. Thread-safe (one internal lock held
 * across the freeze or thaw). Does not know about the mount or the API. */
#ifndef STASIS_FREEZER_H
#define STASIS_FREEZER_H

#include <stdbool.h>

/* A cgroup that does not settle in this long fails the freeze (and is
 * thawed again). */
#define FREEZER_TIMEOUT_NS (10ull * 1000000000ull)

struct freezer;

/* freezer_new(): from a label value; -EINVAL for a value naming no
 * method, -ENOENT for a cgroup path without a freezer. Nothing is frozen.
 * marker (may be NULL): a file that says the sandbox is frozen by us,
 * written (holding spec) before each freeze and removed after the thaw, so
 * that a kill -9 of the daemon does not leave the sandbox frozen for ever:
 * freezer_thaw_marked() thaws what it names. */
int freezer_new(const char *spec, const char *marker, struct freezer **ret);
/* freezer_thaw_marked(): thaw the sandbox a marker names (a daemon died
 * with it frozen) and remove the marker; 0 if there is none. The caller
 * makes sure no live daemon owns the marker. */
int freezer_thaw_marked(const char *marker);
/* freezer_free(): thaws if this freezer froze; accepts NULL; returns NULL. */
struct freezer *freezer_free(struct freezer *f);

/* freeze(): 0 (frozen now, or already), -ETIMEDOUT, -errno. thaw(): 0, -errno. */
int freezer_freeze(struct freezer *f);
int freezer_thaw(struct freezer *f);
bool freezer_frozen(struct freezer *f);
/* "cgroup2", "cgroup1" or "runc". */
const char *freezer_method(const struct freezer *f);

#endif
