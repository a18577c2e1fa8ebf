/* acl.c — POSIX ACLs in their xattr form (system.posix_acl_access and
 * _default: le32 version 2, then entries of le16 tag, le16 perm, le32 id),
 * the three pieces of the kernel's fs/posix_acl.c a FUSE filesystem with
 * FUSE_CAP_POSIX_ACL owes: an access ACL sets the mode (and is dropped if
 * the mode says it all), chmod rewrites the ACL, and a new inode gets its
 * parent's default ACL masked by the mode it was created with. The kernel
 * enforces ACLs; this file only keeps mode and ACL in step. Pure functions,
 * thread-safe. */
#include <string.h>
#include <sys/stat.h>

#include "fs-internal.h"

#define ACL_VERSION 2u
#define TAG_USER_OBJ 0x01
#define TAG_USER 0x02
#define TAG_GROUP_OBJ 0x04
#define TAG_GROUP 0x08
#define TAG_MASK 0x10
#define TAG_OTHER 0x20
#define HDR 4u
#define ENT 8u

static int acl_check(const void *v, size_t len, size_t *ret_n)
{
        uint32_t ver;

        if (len < HDR || (len - HDR) % ENT)
                return -EINVAL;
        memcpy(&ver, v, 4);
        if (ver != ACL_VERSION)
                return -EINVAL;
        *ret_n = (len - HDR) / ENT;
        return 0;
}

static uint16_t tag_of(const uint8_t *e) { return (uint16_t)(e[0] | e[1] << 8); }
static uint16_t perm_of(const uint8_t *e) { return (uint16_t)(e[2] | e[3] << 8); }
static void set_perm(uint8_t *e, unsigned p)
{
        e[2] = (uint8_t)(p & 7);
        e[3] = 0;
}

int acl_to_mode(const void *v, size_t len, mode_t *mode, bool *ret_minimal)
{
        const uint8_t *b = v;
        mode_t m = *mode & ~(mode_t)0777;
        bool equiv = true, have_user = false, have_group = false, have_other = false;
        size_t n;
        int r = acl_check(v, len, &n);

        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                const uint8_t *e = b + HDR + i * ENT;
                unsigned p = perm_of(e) & 7;
                switch (tag_of(e)) {
                case TAG_USER_OBJ: m |= (mode_t)p << 6; have_user = true; break;
                case TAG_GROUP_OBJ:
                        if (!(m & 070) || equiv) /* a mask, if any, wins below */
                                m = (m & ~(mode_t)070) | (mode_t)p << 3;
                        have_group = true;
                        break;
                case TAG_OTHER: m |= p; have_other = true; break;
                case TAG_MASK: equiv = false; break;
                case TAG_USER:
                case TAG_GROUP: equiv = false; break;
                default: return -EINVAL;
                }
        }
        if (!have_user || !have_group || !have_other)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) { /* the mask is the group class */
                const uint8_t *e = b + HDR + i * ENT;
                if (tag_of(e) == TAG_MASK)
                        m = (m & ~(mode_t)070) | (mode_t)(perm_of(e) & 7) << 3;
        }
        *mode = m;
        *ret_minimal = equiv;
        return 0;
}

void acl_chmod(void *v, size_t len, mode_t mode)
{
        uint8_t *b = v, *group = NULL, *mask = NULL;
        size_t n;

        if (acl_check(v, len, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                uint8_t *e = b + HDR + i * ENT;
                switch (tag_of(e)) {
                case TAG_USER_OBJ: set_perm(e, mode >> 6); break;
                case TAG_GROUP_OBJ: group = e; break;
                case TAG_MASK: mask = e; break;
                case TAG_OTHER: set_perm(e, mode); break;
                default: break;
                }
        }
        if (mask)
                set_perm(mask, mode >> 3);
        else if (group)
                set_perm(group, mode >> 3);
}

int acl_create(const void *dflt, size_t len, mode_t *mode, void **ret_access, size_t *ret_len)
{
        _cleanup_(freep) uint8_t *b = NULL;
        uint8_t *group = NULL, *mask = NULL;
        mode_t m = *mode;
        bool equiv = true;
        size_t n;
        int r = acl_check(dflt, len, &n);

        if (r < 0)
                return r;
        b = malloc(len);
        if (!b)
                return -ENOMEM;
        memcpy(b, dflt, len);
        for (size_t i = 0; i < n; i++) {
                uint8_t *e = b + HDR + i * ENT;
                unsigned p = perm_of(e);
                switch (tag_of(e)) {
                case TAG_USER_OBJ:
                        p &= (m >> 6) & 7;
                        set_perm(e, p);
                        m &= (mode_t)(p << 6) | ~(mode_t)S_IRWXU;
                        break;
                case TAG_USER:
                case TAG_GROUP: equiv = false; break;
                case TAG_GROUP_OBJ: group = e; break;
                case TAG_OTHER:
                        p &= m & 7;
                        set_perm(e, p);
                        m &= (mode_t)p | ~(mode_t)S_IRWXO;
                        break;
                case TAG_MASK: mask = e; equiv = false; break;
                default: return -EINVAL;
                }
        }
        if (mask || group) {
                uint8_t *e = mask ? mask : group;
                unsigned p = perm_of(e) & ((m >> 3) & 7);
                set_perm(e, p);
                m &= (mode_t)(p << 3) | ~(mode_t)S_IRWXG;
        }
        *mode = m;
        if (equiv) {
                *ret_access = NULL;
                *ret_len = 0;
        } else {
                *ret_access = TAKE_PTR(b);
                *ret_len = len;
        }
        return 0;
}
