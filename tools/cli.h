/* cli.h — internals of the stasis command-line tool, shared by stasis.c and
 * the cmd-*.c files: the command table, option and usage helpers, opening the
 * store, resolving references, TTY progress and JSON output.
 * Single-threaded, except cli_progress() which the store calls from one
 * thread at a time. The only module the CLI reaches into is store/, through
 * store/store.h. Owns no global mutable state: each command keeps its
 * context (log prefix buffer, progress state) on its own stack. */
#ifndef STASIS_CLI_H
#define STASIS_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

#define STASIS_VERSION "0.1.0"
#define STORE_DEFAULT "/var/lib/stasis/store"

/* Exit status, as DESIGN.md "Command line" promises. */
enum {
        EXIT_OK = 0,
        EXIT_FAIL = 1,
        EXIT_USAGE = 2,
};

struct cli_command {
        const char *name;
        /* run(): argv[0] is the command name; returns an exit status. NULL
         * for commands that are not available yet. */
        int (*run)(const struct cli_command *cmd, int argc, char **argv);
        const char *usage; /* the arguments after "stasis NAME" */
        const char *summary;
        const char *help; /* options and details for --help */
};

extern const struct cli_command cli_commands[];
extern const size_t cli_n_commands;

/* The commands (cmd-*.c). */
int cmd_commit(const struct cli_command *cmd, int argc, char **argv);
int cmd_restore(const struct cli_command *cmd, int argc, char **argv);
int cmd_inspect(const struct cli_command *cmd, int argc, char **argv);
int cmd_log(const struct cli_command *cmd, int argc, char **argv);
int cmd_diff(const struct cli_command *cmd, int argc, char **argv);
int cmd_verify(const struct cli_command *cmd, int argc, char **argv);
int cmd_gc(const struct cli_command *cmd, int argc, char **argv);
int cmd_tag(const struct cli_command *cmd, int argc, char **argv);
int cmd_push(const struct cli_command *cmd, int argc, char **argv);
int cmd_pull(const struct cli_command *cmd, int argc, char **argv);
int cmd_mount(const struct cli_command *cmd, int argc, char **argv);
int cmd_umount(const struct cli_command *cmd, int argc, char **argv);
int cmd_status(const struct cli_command *cmd, int argc, char **argv);
int cmd_checkpoint(const struct cli_command *cmd, int argc, char **argv);
int cmd_pause(const struct cli_command *cmd, int argc, char **argv);
int cmd_unpause(const struct cli_command *cmd, int argc, char **argv);
int cmd_import(const struct cli_command *cmd, int argc, char **argv);
int cmd_bench(const struct cli_command *cmd, int argc, char **argv);

/* Options every command takes; getopt_long values above 255 are ours. */
enum {
        OPT_STORE = 0x100,
        OPT_JSON,
        OPT_HELP,
        OPT_PARENT,
        OPT_CHUNK_SIZE,
        OPT_TAG,
        OPT_LABEL,
        OPT_LEVEL,
        OPT_THREADS,
        OPT_GRACE,
        OPT_KEEP_LAST,
        OPT_DRY_RUN,
        /* registry options (see CLI_COMMON_OPTIONS) and push/pull's own */
        OPT_REGISTRY_CONFIG,
        OPT_CA_CERT,
        OPT_INSECURE,
        OPT_FETCH_TIMEOUT,
        OPT_JOBS,
        OPT_MOUNT_FROM,
        OPT_PUSH,
};
/* The registry options are common because --store and REF may be oci://
 * anywhere; cli_common_option() turns each into its environment variable
 * (store/oci.h OCI_ENV_*), which the registry backend reads when a command
 * opens one and a daemon that a command starts inherits. */
#define CLI_COMMON_OPTIONS                                                     \
        { "store", required_argument, NULL, OPT_STORE },                       \
        { "help", no_argument, NULL, OPT_HELP },                               \
        { "verbose", no_argument, NULL, 'v' },                                 \
        { "registry-config", required_argument, NULL, OPT_REGISTRY_CONFIG },   \
        { "ca-cert", required_argument, NULL, OPT_CA_CERT },                   \
        { "insecure", no_argument, NULL, OPT_INSECURE },                       \
        { "fetch-timeout", required_argument, NULL, OPT_FETCH_TIMEOUT }
/* Options and arguments may come in any order (GNU getopt permutes). */
#define CLI_SHORTOPTS "v"

/* cli_usage(): "stasis: CMD: <message>" and the usage line on stderr;
 * returns EXIT_USAGE. */
int cli_usage(const struct cli_command *cmd, const char *fmt, ...) _printf_(2, 3);
/* cli_help(): the command's full help on stdout; returns EXIT_OK. */
int cli_help(const struct cli_command *cmd);
/* cli_common_option(): the default: branch of every command's getopt loop;
 * handles --help, -v and bad options. Returns CLI_CONTINUE to keep parsing
 * (after -v), else the exit status to return now (EXIT_OK after --help,
 * EXIT_USAGE after a bad option). */
#define CLI_CONTINUE (-1)
int cli_common_option(const struct cli_command *cmd, int opt, char **argv);
/* cli_nargs(): check the count of positional arguments left after getopt
 * (argv[optind..]); 0 or EXIT_USAGE. */
int cli_nargs(const struct cli_command *cmd, int argc, char **argv, int min, int max);

/* Option values shared by several commands. Each checks arg (an optarg), stores it
 * and returns 0, or prints the usage error and returns EXIT_USAGE. */
int cli_opt_tag(const struct cli_command *cmd, const char *arg, const char **ret);
int cli_opt_chunk_size(const struct cli_command *cmd, const char *arg, uint64_t *ret);
int cli_opt_level(const struct cli_command *cmd, const char *arg, uint64_t *ret);
int cli_opt_threads(const struct cli_command *cmd, const char *arg, uint64_t *ret);

/* cli_parse_u64(): a plain decimal number without sign or suffix; -EINVAL. */
int cli_parse_u64(const char *s, uint64_t *ret);

/* cli_set_context(): make every log line of this command read
 * "stasis: <what>: ..." — store errors then name the command and its
 * subject without being logged twice. buf must outlive the command. */
void cli_set_context(char buf[static 512], const char *what);

/* cli_store_path(): --store, else $STASIS_STORE, else STORE_DEFAULT. */
const char *cli_store_path(const char *opt);
/* cli_open_store(): open the store at cli_store_path(opt): a local
 * directory (created only if create), or oci://HOST[:PORT]/REPO, a registry
 * repository read lazily (registry options from the environment, see
 * CLI_COMMON_OPTIONS). Logs, and returns -errno, for a missing store, an
 * unreachable registry, refused credentials or anything else. */
int cli_open_store(const char *opt, bool create, struct backend **ret);
/* cli_resolve(): a tag or sha256: digest in the store; logs and returns
 * -errno if it does not resolve. */
int cli_resolve(struct backend *b, const char *ref, struct digest *ret);

/* cli_tags_of(): every tag pointing at d, as a JSON array of strings
 * (sorted, maybe empty). */
int cli_tags_of(struct backend *b, const struct digest *d, json_t **ret);

/* cli_mount_api(): METHOD path (body: JSON text or NULL) to the control API
 * of the stasisd serving mountpoint (found in the mount registry), waiting
 * at most timeout_s seconds for each read; *ret is the JSON of a 200
 * answer. Logs (an error answer with its sentence and reason) and returns
 * -errno. */
int cli_mount_api(const char *mountpoint, const char *method, const char *path, const char *body,
                  unsigned timeout_s, json_t **ret);

/* cli_print_json(): one JSON document and a newline on stdout; logs failures. */
int cli_print_json(const json_t *j);

/* Progress: a single line rewritten with \r on stderr, at most ~10 times a
 * second, and only when stderr is a TTY. */
struct cli_progress {
        bool enabled;
        bool shown;
        uint64_t last_ns;
        const char *what;
};
void cli_progress_init(struct cli_progress *p, const char *what);
void cli_progress(void *ctx, const char *phase, uint64_t done, uint64_t total);
/* cli_progress_done(): erase the progress line, if any. */
void cli_progress_done(struct cli_progress *p);

/* json_t cleanup: jansson's own json_decrefp(). */
static inline void backend_freep(struct backend **b) { backend_free(*b); }
static inline void snapshot_freep(struct snapshot **s) { snapshot_free(*s); }

#endif
