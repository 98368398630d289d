/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libovl2 quickstart: open a store, build a chain of layers, put content in the base layer,
 * mount the container layer and read and write through it, unmount, list layers, mounts and
 * status, check the store, handle errors, clean up. Mounting needs root (or a user
 * namespace where overlayfs mounts are allowed).
 *
 *   make && ./quickstart [STORE_DIR]     (STORE_DIR defaults to a new temporary directory)
 *
 * Every call follows one pattern: it returns an ovl2_status, and on failure hands back an
 * ovl2_error through the last argument, which we print and free in `ok()`.
 */
#define _DEFAULT_SOURCE /* mkdtemp */
#include <ovl2.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Prints and frees a failed call's error; returns whether the call succeeded. */
static int ok(ovl2_status s, ovl2_error *err, const char *what) {
    if (s == OVL2_STATUS_OK) return 1;
    fprintf(stderr, "%s: %s (errno %d): %s\n", what, ovl2_status_name(s), ovl2_error_errno(err),
            ovl2_error_message(err));
    ovl2_error_free(err);
    return 0;
}

int main(int argc, char **argv) {
    char tmp[] = "/tmp/ovl2-quickstart-XXXXXX";
    char home[4096];
    if (argc > 1) {
        snprintf(home, sizeof home, "%s", argv[1]);
    } else {
        if (!mkdtemp(tmp)) {
            perror("mkdtemp");
            return 1;
        }
        snprintf(home, sizeof home, "%s/store", tmp);
    }
    printf("libovl2 %s\n", ovl2_version());

    ovl2_options opts;
    ovl2_options_init(&opts);
    opts.max_depth = 128; /* Docker's limit, so Docker can mount this store too */

    ovl2_driver *d = NULL;
    ovl2_error *err = NULL;
    if (!ok(ovl2_open(home, &opts, &d, &err), err, "open")) return 1;

    /* Build a chain: two image layers and a container layer on top. */
    if (!ok(ovl2_create(d, "base", NULL, NULL, &err), err, "create base") ||
        !ok(ovl2_create(d, "app", "base", NULL, &err), err, "create app") ||
        !ok(ovl2_create_rw(d, "container", "app", NULL, &err), err, "create container"))
        goto fail;

    ovl2_metadata *m = NULL;
    if (!ok(ovl2_layer_metadata(d, "container", &m, &err), err, "metadata")) goto fail;
    printf("LowerDir  %s\nUpperDir  %s\nWorkDir   %s\nMergedDir %s\n", m->lower_dir, m->upper_dir,
           m->work_dir, m->merged_dir);
    char container_diff[4096];
    snprintf(container_diff, sizeof container_diff, "%s", m->upper_dir);
    ovl2_metadata_free(m);

    /* Content for the base layer. Written straight into its diff dir here; applying a
     * layer tar from an fd (ovl2_apply_diff) takes this place once the library has it. */
    if (!ok(ovl2_layer_metadata(d, "base", &m, &err), err, "metadata base")) goto fail;
    char path[8192];
    snprintf(path, sizeof path, "%s/hello.txt", m->upper_dir);
    ovl2_metadata_free(m);
    FILE *f = fopen(path, "w");
    if (!f || fputs("hello from the base layer\n", f) < 0 || fclose(f) != 0) {
        perror(path);
        goto fail;
    }

    /* Mount the container layer (Docker's Get), read a file from the base through it, write
     * one, and unmount (Put). Every successful get needs one put. */
    char *merged = NULL;
    if (!ok(ovl2_get(d, "container", NULL, &merged, &err), err, "get container")) goto fail;
    printf("mounted at %s\n", merged);
    char line[256] = "";
    snprintf(path, sizeof path, "%s/hello.txt", merged);
    f = fopen(path, "r");
    if (!f || !fgets(line, sizeof line, f)) {
        perror(path);
        ovl2_string_free(merged);
        goto fail;
    }
    fclose(f);
    printf("read through the mount: %s", line);
    snprintf(path, sizeof path, "%s/note.txt", merged);
    f = fopen(path, "w");
    if (f) {
        fputs("written in the container\n", f);
        fclose(f);
    }
    ovl2_string_free(merged);

    ovl2_mount_list *mounts = NULL;
    if (!ok(ovl2_mounts(d, &mounts, &err), err, "mounts")) goto fail;
    for (size_t i = 0; i < mounts->len; i++)
        printf("mount %s: %llu reference(s), method %s\n", mounts->items[i].id,
               (unsigned long long)mounts->items[i].count, mounts->items[i].method);
    ovl2_mount_list_free(mounts);
    if (!ok(ovl2_put(d, "container", &err), err, "put container")) goto fail;
    snprintf(path, sizeof path, "%s/note.txt", container_diff);
    printf("the write landed in the container's diff: %s\n", access(path, F_OK) == 0 ? "yes" : "no");

    /* Exporting the container's changes as a tar to an fd (ovl2_diff) joins here once the
     * library has it. */

    ovl2_layer_list *layers = NULL;
    if (!ok(ovl2_layers(d, &layers, &err), err, "layers")) goto fail;
    for (size_t i = 0; i < layers->len; i++) {
        const ovl2_layer *l = &layers->items[i];
        printf("layer %-9s depth %zu parent %s\n", l->id, l->depth, l->parent ? l->parent : "-");
    }
    ovl2_layer_list_free(layers);

    ovl2_kv_list *status = NULL;
    if (!ok(ovl2_driver_status(d, &status, &err), err, "status")) goto fail;
    for (size_t i = 0; i < status->len; i++) printf("status: %s = %s\n", status->items[i].key, status->items[i].value);
    ovl2_kv_list_free(status);

    /* An expected failure: a layer with children cannot be removed without force. */
    ovl2_status s = ovl2_remove(d, "base", false, &err);
    printf("remove base -> %s: %s\n", ovl2_status_name(s), ovl2_error_message(err));
    ovl2_error_free(err);
    err = NULL;

    ovl2_problem_list *problems = NULL;
    if (!ok(ovl2_check(d, &problems, &err), err, "check")) goto fail;
    printf("problems: %zu\n", problems->len);
    ovl2_problem_list_free(problems);

    if (!ok(ovl2_remove(d, "container", false, &err), err, "remove container") ||
        !ok(ovl2_remove(d, "app", false, &err), err, "remove app") ||
        !ok(ovl2_remove(d, "base", false, &err), err, "remove base"))
        goto fail;
    ovl2_close(d);
    if (argc <= 1) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) return 1;
    }
    return 0;

fail:
    ovl2_close(d);
    return 1;
}
