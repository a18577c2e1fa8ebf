/* cmd-checkpoint.c — `stasis checkpoint`, `pause` and `unpause`: clients of
 * the mount's control API (POST /api/v1/checkpoint, /pause, /unpause;
 * docs/control-api.md). A --push target travels in the request with the
 * registry options resolved here (credentials, CA text): stasisd reads no
 * registry config of its own. */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "store/oci.h"

/* A checkpoint reads and packs every dirty chunk (and pushes) before it answers. */
#define CHECKPOINT_TIMEOUT_S 3600u
#define CA_MAX (1u << 20)

static void json_decrefp_(json_t **j) { json_decref(*j); }

/* wipe_freep_(): free a string that held a secret, zeroed first. */
static void wipe_freep_(char **p)
{
        if (*p)
                explicit_bzero(*p, strlen(*p));
        free(*p);
}

/* push_registry(): the request's "registry" object for a push to host,
 * from this process's registry options (CLI_COMMON_OPTIONS put them in the
 * environment): the credentials the docker config has for host (stasisd
 * reads no config of its own), the CA bundle as text, insecure. Logs;
 * -errno. */
static int push_registry(const char *host, json_t *req)
{
        struct registry_opts o = {};
        _cleanup_(wipe_freep_) char *auth = NULL;
        _cleanup_(freep) char *ca = NULL;
        json_t *reg;
        size_t len;
        int r;

        r = registry_opts_from_env(&o); /* logs */
        if (r < 0)
                return r;
        r = oci_registry_auth(o.config_path, host, &auth); /* logs */
        if (r < 0)
                return r;
        if (o.ca_cert) {
                r = read_file_at(AT_FDCWD, o.ca_cert, CA_MAX, &ca, &len);
                if (r < 0)
                        return log_error_errno(r, "--ca-cert %s: %m", o.ca_cert);
        }
        reg = json_pack("{s:b}", "insecure", o.insecure);
        if (!reg || json_object_set_new(req, "registry", reg) < 0)
                return -ENOMEM;
        if ((*auth && json_object_set_new(reg, "auth", json_string(auth)) < 0) ||
            (ca && json_object_set_new(reg, "ca_cert", json_string(ca)) < 0))
                return -ENOMEM;
        return 0;
}

/* snapshot(): checkpoint or pause (path), which take the same options. */
static int snapshot(const struct cli_command *cmd, int argc, char **argv, const char *path)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "tag", required_argument, NULL, OPT_TAG },
                { "label", required_argument, NULL, OPT_LABEL },
                { "json", no_argument, NULL, OPT_JSON },
                { "push", required_argument, NULL, OPT_PUSH },
                {},
        };
        _cleanup_(json_decrefp_) json_t *req = json_object(), *labels = json_object(), *res = NULL;
        _cleanup_(wipe_freep_) char *body = NULL; /* may hold credentials */
        const char *tag = NULL, *push = NULL;
        struct oci_ref ref;
        char ctx[512], what[PATH_MAX + 16];
        bool json = false;
        int c, r;

        if (!req || !labels)
                return log_error_errno(-ENOMEM, "%m"), EXIT_FAIL;
        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_TAG:
                        r = cli_opt_tag(cmd, optarg, &tag);
                        if (r)
                                return r;
                        break;
                case OPT_LABEL: {
                        const char *eq = strchr(optarg, '=');
                        _cleanup_(freep) char *k = NULL;
                        if (!eq || eq == optarg)
                                return cli_usage(cmd, "--label %s: expected KEY=VALUE", optarg);
                        k = strndup(optarg, (size_t)(eq - optarg));
                        if (!k || json_object_set_new(labels, k, json_string(eq + 1)) < 0)
                                return log_error_errno(-ENOMEM, "%m"), EXIT_FAIL;
                        break;
                }
                case OPT_JSON:
                        json = true;
                        break;
                case OPT_PUSH:
                        if (oci_ref_parse(optarg, &ref) < 0 || ref.has_digest)
                                return cli_usage(cmd, "--push %s: expected oci://HOST[:PORT]/REPO[:TAG]", optarg);
                        push = optarg;
                        break;
                default:
                        r = cli_common_option(cmd, c, argv);
                        if (r != CLI_CONTINUE)
                                return r;
                }
        }
        r = cli_nargs(cmd, argc, argv, 1, 1);
        if (r)
                return r;
        snprintf(what, sizeof what, "%s %s", cmd->name, argv[optind]);
        cli_set_context(ctx, what);
        if ((tag && json_object_set_new(req, "tag", json_string(tag)) < 0) ||
            (json_object_size(labels) && json_object_set(req, "labels", labels) < 0) ||
            (push && json_object_set_new(req, "push", json_string(push)) < 0))
                return log_error_errno(-ENOMEM, "%m"), EXIT_FAIL;
        if (push) {
                r = push_registry(ref.host, req);
                if (r < 0)
                        return r == -ENOMEM ? (log_error_errno(r, "%m"), EXIT_FAIL) : EXIT_FAIL;
        }
        body = json_dumps(req, JSON_COMPACT);
        /* the credentials now live in body alone */
        if (push) {
                json_t *a = json_object_get(json_object_get(req, "registry"), "auth");
                if (a)
                        explicit_bzero((char *)json_string_value(a), json_string_length(a));
        }
        if (!body)
                return log_error_errno(-ENOMEM, "%m"), EXIT_FAIL;
        r = cli_mount_api(argv[optind], "POST", path, body, CHECKPOINT_TIMEOUT_S, &res);
        if (r < 0)
                return EXIT_FAIL;
        if (json)
                return cli_print_json(res) < 0 ? EXIT_FAIL : EXIT_OK;
        printf("%s\n", json_string_value(json_object_get(res, "digest")));
        return EXIT_OK;
}

int cmd_checkpoint(const struct cli_command *cmd, int argc, char **argv)
{
        return snapshot(cmd, argc, argv, "/api/v1/checkpoint");
}

int cmd_pause(const struct cli_command *cmd, int argc, char **argv)
{
        return snapshot(cmd, argc, argv, "/api/v1/pause");
}

int cmd_unpause(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(json_decrefp_) json_t *res = NULL;
        char ctx[512], what[PATH_MAX + 16];
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                r = cli_common_option(cmd, c, argv);
                if (r != CLI_CONTINUE)
                        return r;
        }
        r = cli_nargs(cmd, argc, argv, 1, 1);
        if (r)
                return r;
        snprintf(what, sizeof what, "unpause %s", argv[optind]);
        cli_set_context(ctx, what);
        r = cli_mount_api(argv[optind], "POST", "/api/v1/unpause", "{}", 60, &res);
        return r < 0 ? EXIT_FAIL : EXIT_OK;
}
