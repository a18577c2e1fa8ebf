/* cmd-checkpoint.c — `stasis checkpoint`, `pause` and `unpause`: clients of
 * the mount's control API (POST /api/v1/checkpoint, /pause, /unpause;
 * docs/control-api.md). */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* A checkpoint reads and packs every dirty chunk before it answers. */
#define CHECKPOINT_TIMEOUT_S 3600u

static void json_decrefp_(json_t **j) { json_decref(*j); }

/* snapshot(): checkpoint or pause (path), which take the same options. */
static int snapshot(const struct cli_command *cmd, int argc, char **argv, const char *path)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "tag", required_argument, NULL, OPT_TAG },
                { "label", required_argument, NULL, OPT_LABEL },
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        _cleanup_(json_decrefp_) json_t *req = json_object(), *labels = json_object(), *res = NULL;
        _cleanup_(freep) char *body = NULL;
        const char *tag = NULL;
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
            (json_object_size(labels) && json_object_set(req, "labels", labels) < 0))
                return log_error_errno(-ENOMEM, "%m"), EXIT_FAIL;
        body = json_dumps(req, JSON_COMPACT);
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
