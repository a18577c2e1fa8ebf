/* test-committer.c — stasis-committer's pure parts (tools/committer-util.c,
 * cm_status_patch in tools/committer-kube.c): argv splitting, the insecure
 * heuristic, credentials lookup, NAME mangling, the termination message's
 * shape and size, the status patch's CRD rules. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tools/committer.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

static void split_ok(const char *arg, const char *name, const char *uri)
{
        char *n = NULL, *u = NULL;

        cr_assert_eq(cm_split_target(arg, &n, &u), 0, "%s", arg);
        cr_assert_str_eq(n, name);
        cr_assert_str_eq(u, uri);
        free(n);
        free(u);
}

Test(committer, split_at_first_colon)
{
        char *n = NULL, *u = NULL;

        split_ok("c1:host:5000/r:t", "c1", "host:5000/r:t");
        split_ok("sandbox:reg.example.com/snaps/my-sb-sandbox:snap-gen2", "sandbox",
                 "reg.example.com/snaps/my-sb-sandbox:snap-gen2");
        split_ok("c:127.0.0.1:5000/snaps/sb-c1:snap-gen2", "c", "127.0.0.1:5000/snaps/sb-c1:snap-gen2");
        cr_assert_eq(cm_split_target("nocolon", &n, &u), -EINVAL);
        cr_assert_eq(cm_split_target(":uri", &n, &u), -EINVAL);
        cr_assert_eq(cm_split_target("name:", &n, &u), -EINVAL);
        cr_assert_null(n);
        cr_assert_null(u);
}

Test(committer, uri_host_and_oci_ref)
{
        char *h = NULL, *o = NULL;

        cr_assert_eq(cm_uri_host("127.0.0.1:5000/snaps/sb-c1:snap-gen2", &h), 0);
        cr_assert_str_eq(h, "127.0.0.1:5000");
        free(h);
        cr_assert_eq(cm_uri_host("oci://reg.example.com/a/b:c", &h), 0);
        cr_assert_str_eq(h, "reg.example.com");
        free(h);
        cr_assert_eq(cm_uri_host("nohost:tag", &h), -EINVAL);
        cr_assert_eq(cm_oci_ref("127.0.0.1:5000/snaps/sb-c1:snap-gen2", &o), 0);
        cr_assert_str_eq(o, "oci://127.0.0.1:5000/snaps/sb-c1:snap-gen2");
        free(o);
        cr_assert_eq(cm_oci_ref("oci://h/r:t", &o), 0);
        cr_assert_str_eq(o, "oci://h/r:t");
        free(o);
}

Test(committer, insecure_heuristic)
{
        static const char *const insecure[] = { "localhost:5000", "registry.local", "my-localreg",
                                                "127.0.0.1:5000", "10.0.0.5", "192.168.1.10:5000",
                                                "172.16.0.1", "172.31.255.255:443", "172.20.1.1" };
        static const char *const secure[] = { "reg.example.com", "docker.io", "172.15.0.1",
                                              "172.32.0.1", "172.1.0.1", "11.0.0.1", "192.169.0.1",
                                              "1.127.0.0", "172.160.0.1", "172.", "172.16" };

        for (size_t i = 0; i < ELEMENTSOF(insecure); i++)
                cr_expect(cm_host_looks_insecure(insecure[i]), "%s should count as insecure", insecure[i]);
        for (size_t i = 0; i < ELEMENTSOF(secure); i++)
                cr_expect(!cm_host_looks_insecure(secure[i]), "%s should count as secure", secure[i]);
        /* a valid bool wins; unset or invalid falls back to the heuristic */
        cr_assert(!cm_registry_insecure("false", "127.0.0.1:5000"));
        cr_assert(!cm_registry_insecure("0", "localhost"));
        cr_assert(cm_registry_insecure("true", "reg.example.com"));
        cr_assert(cm_registry_insecure("T", "reg.example.com"));
        cr_assert(cm_registry_insecure("TRUE", "reg.example.com"));
        cr_assert(!cm_registry_insecure("yes", "reg.example.com"));
        cr_assert(cm_registry_insecure("yes", "127.0.0.1"));
        cr_assert(cm_registry_insecure(NULL, "10.1.2.3"));
        cr_assert(!cm_registry_insecure(NULL, "reg.example.com"));
        cr_assert(!cm_registry_insecure("", "reg.example.com"));
}

static char *write_tmp(const char *content)
{
        char *path = strdup("/tmp/test-committer-XXXXXX");
        int fd = mkstemp(path);

        cr_assert(fd >= 0);
        cr_assert_eq(write_full(fd, content, strlen(content)), 0);
        close(fd);
        return path;
}

Test(committer, credentials)
{
        /* dXNlcjpwYXNz = base64("user:pass"); YWxpY2U6czNjcjN0 = base64("alice:s3cr3t") */
        char *p = write_tmp("{\"auths\": {"
                            "\"127.0.0.1:5000\": {\"auth\": \"dXNlcjpwYXNz\"},"
                            "\"reg.example.com\": {\"username\": \"alice\", \"password\": \"s3cr3t\"},"
                            "\"https://prefixed.example.com\": {\"auth\": \"dXNlcjpwYXNz\"},"
                            "\"empty.example.com\": {},"
                            "\"bad.example.com\": {\"auth\": \"%%%notbase64\"},"
                            "\"nocolon.example.com\": {\"auth\": \"dXNlcnBhc3M=\"}}}");
        char err[CM_ERR_MAX] = "", *a = NULL;

        cr_assert_eq(cm_registry_auth(p, "127.0.0.1:5000", &a, err), 0);
        cr_assert_str_eq(a, "dXNlcjpwYXNz");
        free(a);
        cr_assert_eq(cm_registry_auth(p, "reg.example.com", &a, err), 0);
        cr_assert_str_eq(a, "YWxpY2U6czNjcjN0");
        free(a);
        /* exact match only: no scheme stripping, no port guessing */
        a = (char *)"x";
        cr_assert_eq(cm_registry_auth(p, "prefixed.example.com", &a, err), 0);
        cr_assert_null(a);
        a = (char *)"x";
        cr_assert_eq(cm_registry_auth(p, "127.0.0.1", &a, err), 0);
        cr_assert_null(a);
        a = (char *)"x";
        cr_assert_eq(cm_registry_auth(p, "empty.example.com", &a, err), 0);
        cr_assert_null(a);
        cr_assert_eq(cm_registry_auth(p, "bad.example.com", &a, err), -EINVAL);
        cr_assert_null(strstr(err, "notbase64"), "the secret was quoted: %s", err);
        cr_assert_eq(cm_registry_auth(p, "nocolon.example.com", &a, err), -EINVAL);
        unlink(p);
        free(p);

        /* a missing file: anonymous; a file that is not JSON: an error */
        a = (char *)"x";
        cr_assert_eq(cm_registry_auth("/nonexistent/config.json", "127.0.0.1:5000", &a, err), 0);
        cr_assert_null(a);
        p = write_tmp("not json");
        cr_assert_eq(cm_registry_auth(p, "127.0.0.1:5000", &a, err), -EINVAL);
        unlink(p);
        free(p);
}

Test(committer, env_name)
{
        char *s = NULL;

        cr_assert_eq(cm_env_name("sandbox", &s), 0);
        cr_assert_str_eq(s, "SANDBOX");
        free(s);
        cr_assert_eq(cm_env_name("my-side-car2", &s), 0);
        cr_assert_str_eq(s, "MY_SIDE_CAR2");
        free(s);
}

Test(committer, digest_lines)
{
        struct cm_result r[] = { { "c1", "h/r1:t", D1 }, { "side-car", "h/r2:t", D2 } };
        char *s = NULL;

        cr_assert_eq(cm_digest_lines(r, 2, &s), 0);
        cr_assert_str_eq(s, "SNAPSHOT_DIGEST_C1=" D1 "\nSNAPSHOT_DIGEST_SIDE_CAR=" D2 "\nSNAPSHOT_DIGEST=" D1 "\n");
        free(s);
        cr_assert(cm_is_digest(D1));
        cr_assert(!cm_is_digest("sha256:abc"));
        cr_assert(!cm_is_digest("sha512:1111111111111111111111111111111111111111111111111111111111111111"));
        cr_assert(!cm_is_digest("sha256:111111111111111111111111111111111111111111111111111111111111111G"));
}

Test(committer, termination_message_shape)
{
        struct cm_result r[] = { { "sandbox", "reg.example.com/snaps/my-sb-sandbox:snap-gen2", D1 },
                                 { "c2", "h:5000/r:t", D2 } };
        json_error_t jerr;
        char *s = NULL;
        json_t *j;

        cr_assert_eq(cm_termination_message(r, 2, &s), 0);
        cr_assert_str_eq(s, "{\"containers\":[{\"name\":\"sandbox\",\"image\":\"reg.example.com/snaps/my-sb-sandbox:snap-gen2\","
                            "\"digest\":\"" D1 "\"},{\"name\":\"c2\",\"image\":\"h:5000/r:t\",\"digest\":\"" D2 "\"}]}\n");
        cr_assert_eq(strchr(s, '\n'), s + strlen(s) - 1, "one line");
        j = json_loads(s, 0, &jerr);
        cr_assert_not_null(j);
        cr_assert_eq(json_array_size(json_object_get(j, "containers")), 2);
        json_decref(j);
        free(s);
}

Test(committer, termination_message_size)
{
        struct cm_result r[64];
        char images[64][128], names[64][16];
        char *s = NULL;
        size_t n;

        for (size_t i = 0; i < ELEMENTSOF(r); i++) {
                snprintf(names[i], sizeof names[i], "c%zu", i);
                snprintf(images[i], sizeof images[i], "reg.example.com/snaps/a-long-sandbox-name-%zu:snap-gen2", i);
                r[i] = (struct cm_result){ names[i], images[i], D1 };
        }
        /* find the largest n that fits; it must be < 4096 bytes and n+1 must not fit */
        for (n = 1; n <= ELEMENTSOF(r); n++) {
                int rc = cm_termination_message(r, n, &s);
                if (rc == -E2BIG)
                        break;
                cr_assert_eq(rc, 0);
                cr_assert_lt(strlen(s), (size_t)CM_TERMINATION_MAX);
                free(s);
                s = NULL;
        }
        cr_assert_lt(n, ELEMENTSOF(r), "64 containers cannot fit in 4096 bytes");
        cr_assert_gt(n, 10);
}

Test(committer, reasons_are_camel_case)
{
        cr_assert_gt(cm_n_reasons, 10);
        for (size_t i = 0; i < cm_n_reasons; i++) {
                const char *r = cm_reasons[i].reason;
                cr_assert(r[0] >= 'A' && r[0] <= 'Z', "%s", r);
                for (const char *p = r; *p; p++)
                        cr_assert((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'), "%s", r);
                cr_assert_gt(strlen(cm_reasons[i].meaning), 20);
        }
        cr_assert(cm_reason_known("MountNotFound"));
        cr_assert(cm_reason_known("RegistryAuthFailed"));
        cr_assert(!cm_reason_known("Nope"));
}

static json_t *object(const char *status_json)
{
        json_t *o = json_pack("{s:{s:s, s:s, s:i, s:s}}", "metadata", "name", "s", "namespace", "ns", "generation",
                              7, "resourceVersion", "42");
        if (status_json)
                json_object_set_new(o, "status", json_loads(status_json, 0, NULL));
        return o;
}

Test(committer, status_patch_rules)
{
        struct cm_status_container c[] = { { "c1", "h/r:t", D1 } };
        struct cm_status_update u = { .phase = "Succeed", .containers = c, .n_containers = 1, .pod = "p",
                                      .node = "n", .now = 86400 };
        char err[CM_ERR_MAX];
        json_t *o, *p = NULL, *conds;

        o = object("{\"phase\":\"Committing\",\"conditions\":[{\"type\":\"Failed\",\"status\":\"False\"},"
                   "{\"type\":\"Other\",\"status\":\"True\",\"reason\":\"X\"}]}");
        cr_assert_eq(cm_status_patch(o, &u, &p, err), 0, "%s", err);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "metadata"), "resourceVersion")), "42");
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "status"), "phase")), "Succeed");
        cr_assert_eq(json_integer_value(json_object_get(json_object_get(p, "status"), "observedGeneration")), 7);
        conds = json_object_get(json_object_get(p, "status"), "conditions");
        cr_assert_eq(json_array_size(conds), 2, "Other kept, Failed/False dropped, Ready added");
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(conds, 1), "type")), "Ready");
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(conds, 1), "reason")), "SnapshotReady");
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(conds, 1), "lastTransitionTime")),
                         "1970-01-02T00:00:00Z");
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(json_object_get(p, "status"),
                                                                                          "containers"), 0),
                                                           "imageDigest")), D1);
        json_decref(p);
        json_decref(o);

        /* terminal phases never change */
        o = object("{\"phase\":\"Failed\"}");
        cr_assert_eq(cm_status_patch(o, &u, &p, err), -EPERM);
        json_decref(o);
        o = object("{\"phase\":\"Succeed\"}");
        u.phase = "Committing";
        cr_assert_eq(cm_status_patch(o, &u, &p, err), -EPERM);
        json_decref(o);
        /* no going back; no status at all counts as Pending */
        o = object("{\"phase\":\"Committing\"}");
        u.phase = "Pending";
        cr_assert_eq(cm_status_patch(o, &u, &p, err), -EINVAL);
        json_decref(o);
        o = object(NULL);
        u.phase = "Committing";
        cr_assert_eq(cm_status_patch(o, &u, &p, err), 0);
        cr_assert_null(json_object_get(json_array_get(json_object_get(json_object_get(p, "status"), "containers"), 0),
                                       "imageDigest"), "no digest before success");
        cr_assert_eq(json_array_size(json_object_get(json_object_get(p, "status"), "conditions")), 0);
        json_decref(p);
        /* Failed needs a reason and a message; Succeed needs digests */
        u.phase = "Failed";
        cr_assert_eq(cm_status_patch(o, &u, &p, err), -EINVAL);
        u.reason = "PushFailed";
        u.message = "the registry refused the upload";
        cr_assert_eq(cm_status_patch(o, &u, &p, err), 0);
        conds = json_object_get(json_object_get(p, "status"), "conditions");
        cr_assert_eq(json_array_size(conds), 1);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(conds, 0), "reason")), "PushFailed");
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(conds, 0), "status")), "True");
        json_decref(p);
        c[0].digest = NULL;
        u.phase = "Succeed";
        cr_assert_eq(cm_status_patch(o, &u, &p, err), -EINVAL);
        u.phase = "Finished";
        cr_assert_eq(cm_status_patch(o, &u, &p, err), -EINVAL);
        json_decref(o);
}
