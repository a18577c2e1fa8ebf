/* stasis-common.c — helpers the stasis commands share; see cli.h. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "store/oci.h"

int cli_usage(const struct cli_command *cmd, const char *fmt, ...)
{
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fprintf(stderr, "stasis: %s: %s\nusage: stasis %s %s\n", cmd->name, msg, cmd->name,
                cmd->usage);
        return EXIT_USAGE;
}

int cli_help(const struct cli_command *cmd)
{
        printf("usage: stasis %s %s\n\n%s\n%s", cmd->name, cmd->usage, cmd->summary, cmd->help);
        return EXIT_OK;
}

int cli_common_option(const struct cli_command *cmd, int opt, char **argv)
{
        switch (opt) {
        case OPT_HELP:
                return cli_help(cmd);
        case 'v':
                log_set_max_level(MIN(log_get_max_level() + 1, LOG_LVL_DEBUG));
                return CLI_CONTINUE;
        case OPT_REGISTRY_CONFIG:
        case OPT_CA_CERT:
        case OPT_INSECURE:
        case OPT_FETCH_TIMEOUT: {
                const char *env = opt == OPT_REGISTRY_CONFIG ? OCI_ENV_CONFIG
                                  : opt == OPT_CA_CERT       ? OCI_ENV_CA_CERT
                                  : opt == OPT_INSECURE      ? OCI_ENV_INSECURE
                                                             : OCI_ENV_FETCH_TIMEOUT;
                const char *val = opt == OPT_INSECURE ? "1" : optarg;
                char *end;
                double sec;

                if (opt == OPT_FETCH_TIMEOUT) {
                        errno = 0;
                        sec = strtod(val, &end);
                        if (errno || end == val || *end || !(sec > 0) || sec > 86400)
                                return cli_usage(cmd, "--fetch-timeout %s: expected seconds, 0 < s <= 86400", val);
                }
                if (setenv(env, val, 1) < 0)
                        return cli_usage(cmd, "%s: %m", argv[optind - 1]);
                return CLI_CONTINUE;
        }
        case '?':
                /* getopt's own message is off (opterr = 0): say it once, our way.
                 * optopt is 0 for an unknown long option, the option's value
                 * for one missing its argument. */
                if (optopt >= 0x100 || (optopt > 0 && strchr(CLI_SHORTOPTS, optopt)))
                        return cli_usage(cmd, "option '%s' needs an argument", argv[optind - 1]);
                if (optopt > 0)
                        return cli_usage(cmd, "unknown option '-%c'", optopt);
                return cli_usage(cmd, "unknown option '%s'", argv[optind - 1]);
        default:
                return cli_usage(cmd, "unexpected option");
        }
}

int cli_nargs(const struct cli_command *cmd, int argc, char **argv, int min, int max)
{
        int n = argc - optind;

        if (n < min)
                return cli_usage(cmd, "missing argument");
        if (n > max)
                return cli_usage(cmd, "unexpected argument '%s'", argv[optind + max]);
        return 0;
}

int cli_parse_u64(const char *s, uint64_t *ret)
{
        unsigned long long v;
        char *end;

        if (!s || !ret || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

void cli_set_context(char buf[static 512], const char *what)
{
        snprintf(buf, 512, "stasis: %s: ", what);
        log_set_prefix(buf);
}

const char *cli_store_path(const char *opt)
{
        const char *e;

        if (opt)
                return opt;
        e = getenv("STASIS_STORE");
        if (e && *e)
                return e;
        return STORE_DEFAULT;
}

int cli_open_store(const char *opt, bool create, struct backend **ret)
{
        const char *path = cli_store_path(opt);
        struct backend *b = NULL;
        struct stat st;
        int r;

        if (strncmp(path, "oci://", 6) == 0) {
                struct registry_opts o = {};
                struct oci_ref ref;

                if (oci_ref_parse(path, &ref) < 0 || ref.tag[0] || ref.has_digest)
                        return log_error_errno(EINVAL, "store %s: expected oci://HOST[:PORT]/REPO", path);
                r = registry_opts_from_env(&o);
                if (r < 0)
                        return r;
                return backend_oci_open(ref.host, ref.repo, &o, ret); /* logs */
        }
        if (!create && stat(path, &st) < 0)
                return log_error_errno(errno, "store %s: %m", path);
        r = backend_local_open(path, create, &b);
        if (r == -ENOENT)
                return log_error_errno(r, "store %s: no store there", path);
        if (r == -EINVAL)
                return r; /* logged: not an OCI layout */
        if (r < 0)
                return log_error_errno(r, "store %s: %m", path);
        *ret = b;
        return 0;
}

int cli_resolve(struct backend *b, const char *ref, struct digest *ret)
{
        if (strncmp(ref, "oci://", 6) == 0)
                return log_error_errno(EOPNOTSUPP, "%s: oci:// references are not supported yet",
                                       ref);
        /* store_resolve() logs why a reference does not resolve. */
        return store_resolve(b, ref, ret);
}

static int tag_cmp(const void *a, const void *b)
{
        return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

int cli_tags_of(struct backend *b, const struct digest *d, json_t **ret)
{
        _cleanup_(json_decrefp) json_t *index = NULL, *tags = NULL;
        _cleanup_(freep) json_t **list = NULL;
        char want[DIGEST_STR_LEN + 1];
        json_t *manifests, *m;
        size_t i, n = 0;
        int r;

        r = backend_index_read(b, &index);
        if (r < 0)
                return log_error_errno(r, "read index.json: %m");
        manifests = json_object_get(index, "manifests");
        list = calloc(json_array_size(manifests) + 1, sizeof *list);
        if (!list)
                return -ENOMEM;
        digest_str(d, want);
        json_array_foreach(manifests, i, m) {
                const char *dg = json_string_value(json_object_get(m, "digest"));
                json_t *tag = json_object_get(json_object_get(m, "annotations"), ANNOTATION_REF_NAME);

                if (dg && strcmp(dg, want) == 0 && json_is_string(tag))
                        list[n++] = tag;
        }
        qsort(list, n, sizeof list[0], tag_cmp);
        tags = json_array();
        if (!tags)
                return -ENOMEM;
        for (i = 0; i < n; i++)
                if (json_array_append(tags, list[i]) < 0)
                        return -ENOMEM;
        *ret = TAKE_PTR(tags);
        return 0;
}

int cli_print_json(const json_t *j)
{
        if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII) < 0 || fputc('\n', stdout) == EOF ||
            fflush(stdout) == EOF)
                return log_error_errno(errno ? errno : EIO, "write JSON to stdout: %m");
        return 0;
}

void cli_progress_init(struct cli_progress *p, const char *what)
{
        *p = (struct cli_progress){
                .enabled = isatty(STDERR_FILENO) == 1,
                .what = what,
        };
}

void cli_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
        struct cli_progress *p = ctx;
        char a[32], b[32];
        uint64_t now;

        if (!p || !p->enabled)
                return;
        now = now_ns();
        if (p->shown && now - p->last_ns < NSEC_PER_SEC / 10)
                return;
        p->last_ns = now;
        p->shown = true;
        if (total > 0)
                fprintf(stderr, "\r\033[K%s: %s %s / %s (%u%%)", p->what, phase,
                        format_bytes(done, a), format_bytes(total, b),
                        (unsigned)(done >= total ? 100 : done * 100 / total));
        else
                fprintf(stderr, "\r\033[K%s: %s %s", p->what, phase, format_bytes(done, a));
        fflush(stderr);
}

void cli_progress_done(struct cli_progress *p)
{
        if (p->enabled && p->shown) {
                fprintf(stderr, "\r\033[K");
                fflush(stderr);
                p->shown = false;
        }
}

int cli_opt_tag(const struct cli_command *cmd, const char *arg, const char **ret)
{
        if (!tag_valid(arg))
                return cli_usage(cmd, "--tag %s: not a valid tag", arg);
        *ret = arg;
        return 0;
}

int cli_opt_chunk_size(const struct cli_command *cmd, const char *arg, uint64_t *ret)
{
        uint64_t v;
        if (parse_size(arg, &v) < 0 || chunk_size_valid(v) <= 0)
                return cli_usage(cmd, "--chunk-size %s: not a power of two from 16K to 4M", arg);
        *ret = v;
        return 0;
}

int cli_opt_level(const struct cli_command *cmd, const char *arg, uint64_t *ret)
{
        uint64_t v;
        if (cli_parse_u64(arg, &v) < 0 || v < 1 || v > 19) /* 20+ are zstd's --ultra levels */
                return cli_usage(cmd, "--level %s: expected 1 to 19", arg);
        *ret = v;
        return 0;
}

int cli_opt_threads(const struct cli_command *cmd, const char *arg, uint64_t *ret)
{
        uint64_t v;
        if (cli_parse_u64(arg, &v) < 0 || v < 1 || v > 256)
                return cli_usage(cmd, "--threads %s: expected 1 to 256", arg);
        *ret = v;
        return 0;
}
