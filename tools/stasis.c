/* stasis.c — the stasis command-line tool: global options, the command
 * table and dispatch. Each command lives in a cmd-*.c file; the helpers they
 * share are in stasis-common.c (see cli.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define STORE_HELP                                                                          \
        "  --store S         the store: a local directory (default $STASIS_STORE, else\n"    \
        "                    " STORE_DEFAULT "), or oci://HOST[:PORT]/REPO\n"
#define REGISTRY_HELP                                                                       \
        "  --registry-config FILE  docker config.json with credentials (default\n"            \
        "                    $DOCKER_CONFIG/config.json, else ~/.docker/config.json)\n"         \
        "  --ca-cert FILE    trust the CAs in FILE (PEM) instead of the system's\n"              \
        "  --insecure        allow plain HTTP and unverified TLS\n"                              \
        "  --fetch-timeout SECONDS  deadline of one registry read, retries included (30)\n"
/* --push's registry options: read here, sent to stasisd in the request. */
#define PUSH_HELP                                                                           \
        "  --registry-config FILE  docker config.json with the credentials for --push\n"     \
        "                    (default $DOCKER_CONFIG/config.json, else ~/.docker/config.json)\n" \
        "  --ca-cert FILE    trust the CAs in FILE (PEM) instead of the system's\n"              \
        "  --insecure        allow plain HTTP and unverified TLS\n"
#define COMMON_HELP                                                                         \
        "  -v, --verbose     more log output (repeat for debug)\n"                           \
        "  --help            this text\n"

const struct cli_command cli_commands[] = {
        {
                .name = "commit",
                .run = cmd_commit,
                .usage = "[--store S] [--parent REF] [--chunk-size N] [--tag T] [--label K=V]... "
                         "[--level N] [--threads N] [--json] DIR",
                .summary = "import a directory; prints the snapshot digest",
                .help = "Import DIR (a whole tree, read with O_NOATIME) as a new snapshot and\n"
                        "print its digest. Only chunks the store lacks are written.\n\n" STORE_HELP
                        "  --parent REF      the previous generation: its chunks are reused and\n"
                        "                    the new snapshot's generation is one more\n"
                        "  --chunk-size N    chunk size, a power of two from 16K to 4M (default:\n"
                        "                    the parent's, else 64K)\n"
                        "  --tag T           tag the new snapshot\n"
                        "  --label K=V       a label in the snapshot's config (repeatable)\n"
                        "  --level N         zstd compression level (default 3)\n"
                        "  --threads N       worker threads (default: one per CPU)\n"
                        "  --json            print the digest and statistics as one JSON object\n"
                        "                    (digest, tag, parent, generation, chunk_size, files,\n"
                        "                    dirs, bytes_logical, bytes_read, chunks_total,\n"
                        "                    chunks_new, chunks_reused, bytes_new, bytes_packed,\n"
                        "                    packs_new, tree_bytes, wall_ns, cpu_ns)\n"
                        "The store is created if it does not exist.\n" COMMON_HELP,
        },
        {
                .name = "restore",
                .run = cmd_restore,
                .usage = "[--store S] REF DIR",
                .summary = "materialize a snapshot into an empty directory, bit-exact",
                .help = "Write snapshot REF into DIR, which must be missing or empty: data,\n"
                        "holes, owners, modes, ns times, xattrs, ACLs, hardlinks, devices.\n"
                        "Every chunk is verified before it is written; on error DIR holds a\n"
                        "partial tree and the command exits 1.\n\n"
                        "REF is a tag or a digest sha256:<64 hex>.\n\n" STORE_HELP COMMON_HELP,
        },
        {
                .name = "inspect",
                .run = cmd_inspect,
                .usage = "[--store S] [--json] REF",
                .summary = "files, bytes, chunks, packs, parent, generation, chunk size",
                .help = "Describe snapshot REF: digest, tags, parent, generation, creation time,\n"
                        "chunk size, counts of files, directories, symlinks and other inodes,\n"
                        "logical bytes, chunks, packs (count and bytes), tree bytes, labels, and\n"
                        "for an imported image its OCI image config (\"image\": Entrypoint, Cmd,\n"
                        "Env, User, WorkingDir, ExposedPorts, Labels).\n\n" STORE_HELP
                        "  --json            one JSON object instead of text\n" COMMON_HELP,
        },
        {
                .name = "log",
                .run = cmd_log,
                .usage = "[--store S] [--json] REF",
                .summary = "the generation chain",
                .help = "List REF and its ancestors, newest first: digest, generation, creation\n"
                        "time and tags. The walk stops at a first generation or at a parent\n"
                        "the store no longer holds (shown as \"(parent not in store)\").\n\n" STORE_HELP
                        "  --json            one JSON array instead of text\n" COMMON_HELP,
        },
        {
                .name = "diff",
                .run = cmd_diff,
                .usage = "[--store S] [--json] REF1 REF2",
                .summary = "paths added, removed, changed (with changed byte ranges)",
                .help = "Compare two snapshots. One line per path that differs, in path order:\n"
                        "  A path                      added in REF2\n"
                        "  D path                      removed in REF2\n"
                        "  M path [off+len, ...]       regular file whose bytes changed\n"
                        "  M path (what)               metadata change (mode, owner, times, ...)\n\n" STORE_HELP
                        "  --json            one JSON object instead of text\n" COMMON_HELP,
        },
        {
                .name = "verify",
                .run = cmd_verify,
                .usage = "[--store S] [--json] [REF]",
                .summary = "re-hash every reachable chunk; exit 1 on any corruption",
                .help = "Re-read and re-hash every blob and chunk reachable from REF (default:\n"
                        "every snapshot in the store's index). Each problem is one line on\n"
                        "stderr naming the blob (and chunk); exits 1 if there was any.\n\n" STORE_HELP
                        "  --json            print the result as one JSON object\n" COMMON_HELP,
        },
        {
                .name = "gc",
                .run = cmd_gc,
                .usage = "[--store S] [--grace SECONDS] [--keep-last N] [--dry-run] [--json]",
                .summary = "delete blobs no kept snapshot reaches",
                .help = "Under the store's lock, delete every blob that no snapshot in the\n"
                        "index reaches, sparing blobs younger than the grace period and every\n"
                        "snapshot a mount of this node uses (the mounts registered in\n"
                        "$STASIS_RUN_DIR/mounts, else /run/stasis/mounts).\n\n" STORE_HELP
                        "  --grace SECONDS   spare blobs written in the last SECONDS (default 3600)\n"
                        "  --keep-last N     first untag all but the newest N generations of each\n"
                        "                    chain\n"
                        "  --dry-run         report what would be deleted, delete nothing\n"
                        "  --json            print the statistics as one JSON object\n" COMMON_HELP,
        },
        {
                .name = "tag",
                .run = cmd_tag,
                .usage = "[--store S] REF TAG",
                .summary = "point TAG at snapshot REF",
                .help = "Point TAG ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}) at REF, moving it if\n"
                        "it already names another snapshot.\n\n" STORE_HELP COMMON_HELP,
        },
        /* Later issues. Not listed in --help as working commands. */
        {
                .name = "push",
                .run = cmd_push,
                .usage = "[--store S] [--json] [--jobs N] [--mount-from REPO] REF oci://HOST[:PORT]/REPO:TAG",
                .summary = "copy a snapshot to an OCI registry; only blobs it lacks",
                .help = "Upload snapshot REF's blobs that the registry lacks (HEAD first), then its\n"
                        "manifest, tagged TAG; prints the manifest digest. A push that fails\n"
                        "publishes no manifest; run it again and it uploads only what is missing.\n\n" STORE_HELP
                        "  --jobs N          blobs uploaded at once (default 4)\n"
                        "  --mount-from REPO  mount blobs from repository REPO of the same registry\n"
                        "                    instead of uploading them, where it has them\n"
                        "  --json            print digest, blobs_total, blobs_uploaded, blobs_skipped,\n"
                        "                    blobs_mounted, bytes_total, bytes_uploaded, requests,\n"
                        "                    retries, wall_ns as one JSON object\n" REGISTRY_HELP COMMON_HELP,
        },
        {
                .name = "pull",
                .run = cmd_pull,
                .usage = "[--store S] [--json] [--jobs N] [--tag T] oci://HOST[:PORT]/REPO[:TAG|@DIGEST]",
                .summary = "copy a snapshot from an OCI registry into the store, verified",
                .help = "Download the snapshot's blobs that the store lacks, verifying each, then\n"
                        "its manifest; check the whole snapshot and tag it TAG (or --tag T; a\n"
                        "pull by digest without --tag adds an untagged root). Prints the digest.\n\n" STORE_HELP
                        "  --jobs N          blobs downloaded at once (default 4)\n"
                        "  --tag T           the local tag (default: the reference's tag)\n"
                        "  --json            print the digest and counters as one JSON object\n" REGISTRY_HELP
                        COMMON_HELP,
        },
        {
                .name = "mount",
                .run = cmd_mount,
                .usage = "[--store S] [--cache DIR] [--cache-size N] [--state DIR] [--label K=V]... "
                         "[--foreground] [--no-prefetch] [-o OPTS] REF|--empty MOUNTPOINT",
                .summary = "mount a snapshot, writable, lazily; returns when reads work",
                .help = "Start stasisd to mount snapshot REF (or, with --empty, an empty tree) on\n"
                        "MOUNTPOINT. No file data is read at mount time: chunks are fetched on first\n"
                        "read, verified, and kept in the node cache shared by every mount. The mount\n"
                        "is writable: changes go to a writable layer in the state directory, copied\n"
                        "up one chunk at a time; mounting again with the same --state presents the\n"
                        "same tree and bytes. A dead mount on MOUNTPOINT is cleaned up first; a live\n"
                        "one is refused, and so is a state directory another stasisd is using.\n\n" STORE_HELP
                        "  --cache DIR       node chunk cache (default $STASIS_CACHE, else /var/cache/stasis)\n"
                        "  --cache-size N    the cache's size bound (256M, 10G), recorded in DIR\n"
                        "  --state DIR       the writable layer, pid, log and api.sock\n"
                        "                    (default $STASIS_RUN_DIR/state/<hash>)\n"
                        "  --empty           mount an empty tree instead of a snapshot\n"
                        "  --label K=V       a label in the mount registry entry (repeatable)\n"
                        "  --foreground      run stasisd in the foreground\n"
                        "  --no-prefetch     do not prefetch what the snapshot's access trace names\n"
                        "  -o OPTS           extra FUSE mount options\n"
                        "Mounted allow_other,default_permissions (and suid,dev as root); noatime by\n"
                        "nature. $STASIS_JOURNAL_MAX bounds the layer's journal before it is compacted\n"
                        "(default 64M).\n" COMMON_HELP,
        },
        {
                .name = "checkpoint",
                .run = cmd_checkpoint,
                .usage = "[--tag T] [--label K=V]... [--push oci://HOST[:PORT]/REPO[:TAG]] [--json] MOUNTPOINT",
                .summary = "write a new snapshot of a mount while it runs",
                .help = "Ask the mount's stasisd to publish what the mount shows now as a new\n"
                        "snapshot (parent: the mount's base) in the store it was mounted from. A\n"
                        "mount labelled io.stasis.freeze=... is frozen while the changes are read.\n"
                        "With --push, stasisd then pushes it to a registry (only the blobs the\n"
                        "registry lacks; the sandbox runs meanwhile), tagged TAG (else --tag T,\n"
                        "else by digest). With no change since the last checkpoint to the same\n"
                        "target, the digest is the same and nothing is uploaded.\n"
                        "Prints the digest, or with --json the API's answer (digest, reference,\n"
                        "generation, parent, bytes_dirty, bytes_new, bytes_uploaded, chunks_new,\n"
                        "chunks_reused, duration_ns, stall_ns, reused).\n\n"
                        "  --tag T           tag the snapshot\n"
                        "  --label K=V       a label on the snapshot (repeatable)\n"
                        "  --push oci://HOST[:PORT]/REPO[:TAG]  also push it to this registry\n"
                        "  --json            the API's answer\n" PUSH_HELP COMMON_HELP,
        },
        {
                .name = "pause",
                .run = cmd_pause,
                .usage = "[--tag T] [--label K=V]... [--push oci://HOST[:PORT]/REPO[:TAG]] [--json] MOUNTPOINT",
                .summary = "checkpoint a mount, then keep it frozen and read-only",
                .help = "As stasis checkpoint, after which the sandbox stays frozen (if the mount is\n"
                        "labelled io.stasis.freeze=...) and the mount refuses changes and opens for\n"
                        "writing with EROFS, until stasis unpause or unmount. A failed pause (a\n"
                        "failed push included) leaves the mount running and writable. Pausing a\n"
                        "paused mount fails (Busy).\n\n"
                        "  --tag T           tag the snapshot\n"
                        "  --label K=V       a label on the snapshot (repeatable)\n"
                        "  --push oci://HOST[:PORT]/REPO[:TAG]  also push it to this registry\n"
                        "  --json            the API's answer\n" PUSH_HELP COMMON_HELP,
        },
        {
                .name = "status",
                .run = cmd_status,
                .usage = "[--json] MOUNTPOINT",
                .summary = "chunks and bytes fetched, cache hits/misses, errors",
                .help = "Ask the mount's stasisd (its control socket, found in the mount registry)\n"
                        "for its counters.\n\n"
                        "  --json            the daemon's status JSON\n" COMMON_HELP,
        },
        {
                .name = "unpause",
                .run = cmd_unpause,
                .usage = "MOUNTPOINT",
                .summary = "end a pause: writable again, the sandbox thawed",
                .help = "Make a paused mount writable again and thaw its sandbox (unless it was\n"
                        "frozen through the API's /freeze). Does nothing on a mount not paused.\n" COMMON_HELP,
        },
        {
                .name = "umount",
                .run = cmd_umount,
                .usage = "[--lazy] [--force] MOUNTPOINT",
                .summary = "unmount and stop its stasisd (also after a crash)",
                .help = "Unmount MOUNTPOINT, wait for its stasisd to exit, and clean up after a\n"
                        "daemon that died (ENOTCONN mount, registry entry, socket).\n\n"
                        "  --lazy            detach even if files are open\n"
                        "  --force           for a daemon that does not answer: abort the FUSE\n"
                        "                    connection first (requests in flight fail with\n"
                        "                    ENOTCONN; writes the kernel had not yet passed to\n"
                        "                    stasisd are lost, as with kill -9 of stasisd), then\n"
                        "                    detach lazily and stop the daemon\n" COMMON_HELP,
        },
        {
                .name = "import",
                .run = cmd_import,
                .usage = "[--store S] [--tag T] [--chunk-size N] [--level N] [--threads N] [--json] "
                         "oci:DIR[:TAG] | oci://HOST[:PORT]/REPO[:TAG|@DIGEST]",
                .summary = "an OCI image (layers, whiteouts, config) as a base snapshot",
                .help = "Import an OCI image as a first-generation snapshot and print its digest:\n"
                        "its layers are applied in order (whiteouts and opaque directories too),\n"
                        "streamed and chunked without unpacking, and the snapshot's config carries\n"
                        "the image config (Entrypoint, Cmd, Env, User, WorkingDir, ...). Chunks the\n"
                        "store already has (from its 32 newest snapshots) are not stored again, and\n"
                        "importing an image twice gives the same digest. Every blob is verified\n"
                        "(SHA-256, layer diff_ids); an entry that would leave the root, write\n"
                        "through a symlink or link to a missing file fails the import.\n\n"
                        "  oci:DIR[:TAG]     an OCI image layout; TAG is its ref.name annotation\n"
                        "                    (optional if the layout holds one image)\n"
                        "  oci://HOST/REPO[:TAG|@DIGEST]  a registry repository (default tag latest)\n"
                        "An image index resolves to its linux/amd64 manifest.\n\n" STORE_HELP
                        "  --tag T           tag the new snapshot\n"
                        "  --chunk-size N    chunk size, a power of two from 16K to 4M (default 64K)\n"
                        "  --level N         zstd compression level (default 3)\n"
                        "  --threads N       compression threads (default: one per CPU)\n"
                        "  --json            print the digest and statistics as one JSON object\n"
                        "                    (digest, tag, image, image_manifest, layers, entries,\n"
                        "                    whiteouts, files, dirs, symlinks, others, bytes_logical,\n"
                        "                    bytes_layers, bytes_tar, chunks_total, chunks_new,\n"
                        "                    chunks_reused, bytes_new, bytes_packed, packs_new,\n"
                        "                    known_snapshots, already_imported, tree_bytes, wall_ns)\n"
                        "The store is created if it does not exist.\n" REGISTRY_HELP COMMON_HELP,
        },
        {
                .name = "bench",
                .run = cmd_bench,
                .usage = "[--store S] [--json] DIR",
                .summary = "operator benchmark of this node: commit, resume, reads",
                .help = "Measure this node on DIR and the store: a full commit of DIR (time,\n"
                        "throughput, bytes new), for an oci:// store a push, then a resume: the\n"
                        "mount-ready time with an empty node cache, the first byte of one file, a\n"
                        "cold and a warm read of every file, stasisd's peak RSS. The snapshot stays\n"
                        "in the store, untagged, labelled stasis.bench=1 (gc removes it); the cache,\n"
                        "state and mountpoint are temporary (under $TMPDIR, else /var/tmp). As root\n"
                        "the guest page cache is dropped before the commit and the mount. The\n"
                        "checkpoint figure is skipped until stasis checkpoint exists.\n\n" STORE_HELP
                        "  --json            one JSON document (dir, store, files, bytes, chunk_size,\n"
                        "                    cold_cache_dropped, commit{digest, wall_ns, bytes_per_s,\n"
                        "                    bytes_new, bytes_packed, chunks_total, tree_bytes}, push,\n"
                        "                    mount_ref, mount_ready_ns, first_byte_ns, first_byte_file,\n"
                        "                    cold_read{wall_ns, bytes, bytes_per_s}, warm_read{...},\n"
                        "                    stasisd_peak_rss_bytes, checkpoint, notes)\n"
                        "Without --json: a table on stdout; progress on stderr when it is a TTY.\n" REGISTRY_HELP
                                COMMON_HELP,
        },
};
const size_t cli_n_commands = ELEMENTSOF(cli_commands);

static void help(FILE *f)
{
        fprintf(f, "usage: stasis [-v] [--version] [--help] COMMAND [ARGS]\n\n"
                   "stasis keeps root filesystems as snapshots in a content-addressed store.\n\n"
                   "Commands:\n");
        for (size_t i = 0; i < cli_n_commands; i++)
                if (cli_commands[i].run)
                        fprintf(f, "  %-9s %s\n", cli_commands[i].name, cli_commands[i].summary);
        fprintf(f, "\n'stasis COMMAND --help' describes a command's options.\n"
                   "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int main(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { "verbose", no_argument, NULL, 'v' },
                {},
        };
        const struct cli_command *cmd = NULL;
        int c;

        log_set_prefix("stasis: ");
        opterr = 0;
        while ((c = getopt_long(argc, argv, "+hv", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help(stdout);
                        return EXIT_OK;
                case 'V':
                        printf("stasis %s\n", STASIS_VERSION);
                        return EXIT_OK;
                case 'v':
                        log_set_max_level(MIN(log_get_max_level() + 1, LOG_LVL_DEBUG));
                        break;
                default:
                        fprintf(stderr, "stasis: unknown option '%s'\n", argv[optind - 1]);
                        fprintf(stderr, "usage: stasis [-v] [--version] [--help] COMMAND [ARGS]\n");
                        return EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                fprintf(stderr, "stasis: no command given\n");
                help(stderr);
                return EXIT_USAGE;
        }
        for (size_t i = 0; i < cli_n_commands; i++)
                if (strcmp(cli_commands[i].name, argv[optind]) == 0)
                        cmd = &cli_commands[i];
        if (!cmd) {
                fprintf(stderr, "stasis: unknown command '%s'\n", argv[optind]);
                fprintf(stderr, "usage: stasis [-v] [--version] [--help] COMMAND [ARGS]\n");
                return EXIT_USAGE;
        }
        if (!cmd->run) {
                fprintf(stderr, "stasis: %s: not available yet\n", cmd->name);
                return EXIT_FAIL;
        }

        /* The command parses its own options from its name on. */
        argc -= optind;
        argv += optind;
        optind = 0; /* glibc: 0 reinitializes getopt for a new vector */
        return cmd->run(cmd, argc, argv);
}
