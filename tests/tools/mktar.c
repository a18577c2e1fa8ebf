/* mktar.c — test helper: write a pax tar whose entries say exactly what the
 * test wants (hostile names, whiteouts, hardlinks anywhere), which tar(1)
 * refuses or rewrites.
 *
 *   mktar OUT SPEC...
 *
 * Each SPEC is one entry, fields separated by '|':
 *   f|NAME|CONTENT       regular file (mode 0644)
 *   d|NAME               directory (0755)
 *   l|NAME|TARGET        symlink
 *   h|NAME|TARGET        hardlink to TARGET
 *   x|NAME|XATTR|BYTES   regular file with an xattr of BYTES bytes ('v' each)
 *   z|NAME|SIZE          regular file whose header claims SIZE bytes; the
 *                        archive ends right after that header (absurd sizes)
 *   n|LEN                regular file whose name is LEN bytes long
 * Exit 0, or 1 with a message. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int die(struct archive *a, const char *what)
{
        fprintf(stderr, "mktar: %s: %s\n", what, a ? archive_error_string(a) : "bad spec");
        return 1;
}

int main(int argc, char **argv)
{
        struct archive *a;

        if (argc < 2) {
                fprintf(stderr, "usage: mktar OUT SPEC...\n");
                return 1;
        }
        a = archive_write_new();
        if (!a || archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
            archive_write_set_bytes_per_block(a, 0) != ARCHIVE_OK || archive_write_open_filename(a, argv[1]) != ARCHIVE_OK)
                return die(a, argv[1]);
        for (int i = 2; i < argc; i++) {
                char *spec = strdup(argv[i]), *f[4] = { 0 }, *save = NULL;
                struct archive_entry *e = archive_entry_new();
                char *name = NULL;
                const char *buf = NULL;
                size_t n = 0, blen = 0;
                bool truncate_here = false;

                if (!spec || !e)
                        return die(NULL, "out of memory");
                for (char *t = strtok_r(spec, "|", &save); t && n < 4; t = strtok_r(NULL, "|", &save))
                        f[n++] = t;
                if (n < 2)
                        return die(NULL, argv[i]);
                archive_entry_set_pathname(e, f[1]);
                archive_entry_set_mtime(e, 1700000000, 123456789);
                archive_entry_set_uid(e, 0);
                archive_entry_set_gid(e, 0);
                switch (f[0][0]) {
                case 'f':
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_perm(e, 0644);
                        buf = f[2] ? f[2] : "";
                        blen = strlen(buf);
                        archive_entry_set_size(e, (la_int64_t)blen);
                        break;
                case 'd':
                        archive_entry_set_filetype(e, AE_IFDIR);
                        archive_entry_set_perm(e, 0755);
                        break;
                case 'l':
                        if (!f[2])
                                return die(NULL, argv[i]);
                        archive_entry_set_filetype(e, AE_IFLNK);
                        archive_entry_set_perm(e, 0777);
                        archive_entry_set_symlink(e, f[2]);
                        break;
                case 'h':
                        if (!f[2])
                                return die(NULL, argv[i]);
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_perm(e, 0644);
                        archive_entry_set_hardlink(e, f[2]);
                        archive_entry_set_size(e, 0);
                        break;
                case 'x': {
                        size_t len = f[3] ? strtoul(f[3], NULL, 10) : 0;
                        char *v = malloc(len + 1);
                        if (!f[2] || !v)
                                return die(NULL, argv[i]);
                        memset(v, 'v', len);
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_perm(e, 0644);
                        archive_entry_set_size(e, 0);
                        archive_entry_xattr_add_entry(e, f[2], v, len);
                        free(v);
                        break;
                }
                case 'z':
                        if (!f[2])
                                return die(NULL, argv[i]);
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_perm(e, 0644);
                        archive_entry_set_size(e, (la_int64_t)strtoll(f[2], NULL, 10));
                        truncate_here = true;
                        break;
                case 'n': {
                        size_t len = strtoul(f[1], NULL, 10);
                        name = malloc(len + 1);
                        if (!name || len == 0)
                                return die(NULL, argv[i]);
                        for (size_t k = 0; k < len; k++)
                                name[k] = (k % 100 == 99) ? '/' : 'n';
                        name[len - 1] = 'n';
                        archive_entry_set_pathname(e, name);
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_perm(e, 0644);
                        archive_entry_set_size(e, 0);
                        break;
                }
                default:
                        return die(NULL, argv[i]);
                }
                if (archive_write_header(a, e) < ARCHIVE_WARN)
                        return die(a, argv[i]);
                if (truncate_here) {
                        /* The header is on disk (no blocking). End the file
                         * here: closing would pad the entry's data, and
                         * libarchive's failed-writer teardown leaks. */
                        _exit(0);
                }
                if (blen && archive_write_data(a, buf, blen) != (la_ssize_t)blen)
                        return die(a, argv[i]);
                archive_entry_free(e);
                free(name);
                free(spec);
        }
        if (archive_write_close(a) != ARCHIVE_OK)
                return die(a, "close");
        archive_write_free(a);
        return 0;
}
