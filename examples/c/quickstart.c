/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libovl2 quickstart: build a chain of layers, apply a layer tar, mount the container
 * layer, read and write through the mount, unmount, export the container's changes as a
 * tar, and list changes, layers, status and problems. Mounting needs root (or a user
 * namespace where overlayfs mounts are allowed).
 *
 *   make && ./quickstart [STORE_DIR]     (STORE_DIR defaults to a new temporary directory)
 *
 * Every call follows one pattern: it returns an ovl2_status, and on failure hands back an
 * ovl2_error through the last argument, which we print and free in `ok()`.
 */
#define _DEFAULT_SOURCE /* mkdtemp */
#include <ovl2.h>

#include <fcntl.h>
#include <signal.h>
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

/* Writes a one-file ustar archive: any tar producer works, this keeps the example whole. */
static int write_tar(int fd, const char *name, const char *body) {
    char h[512], pad[1024] = {0};
    size_t n = strlen(body);
    memset(h, 0, sizeof h);
    snprintf(h, 100, "%s", name);
    snprintf(h + 100, 8, "%07o", 0644);
    snprintf(h + 108, 8, "%07o", 0);
    snprintf(h + 116, 8, "%07o", 0);
    snprintf(h + 124, 12, "%011zo", n);
    snprintf(h + 136, 12, "%011o", 0);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof h; i++) sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    return write(fd, h, 512) == 512 && write(fd, body, n) == (ssize_t)n &&
           write(fd, pad, 512 - n % 512) == (ssize_t)(512 - n % 512) && write(fd, pad, 1024) == 1024;
}

int main(int argc, char **argv) {
    char tmp[] = "/tmp/ovl2-quickstart-XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    char home[4096], path[8192];
    if (argc > 1)
        snprintf(home, sizeof home, "%s", argv[1]);
    else
        snprintf(home, sizeof home, "%s/store", tmp);
    /* ovl2_diff writes to an fd; a pipe whose reader vanished must give EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    printf("libovl2 %s\n", ovl2_version());

    ovl2_options opts;
    ovl2_options_init(&opts);
    opts.max_depth = 128; /* Docker's limit, so Docker can mount this store too */

    ovl2_driver *d = NULL;
    ovl2_error *err = NULL;
    if (!ok(ovl2_open(home, &opts, &d, &err), err, "open")) return 1;

    /* The base layer, filled from a tar read from a file descriptor (a pipe works too). */
    if (!ok(ovl2_create(d, "base", NULL, NULL, &err), err, "create base")) goto fail;
    snprintf(path, sizeof path, "%s/base.tar", tmp);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || !write_tar(fd, "hello.txt", "hello from the base layer\n") || lseek(fd, 0, SEEK_SET) != 0) {
        perror(path);
        goto fail;
    }
    ovl2_apply_stats *applied = NULL;
    int applied_ok = ok(ovl2_apply_diff(d, "base", NULL, fd, &applied, &err), err, "apply base.tar");
    close(fd);
    if (!applied_ok) goto fail;
    printf("applied base: %llu bytes, %s\n", (unsigned long long)applied->size, applied->digest);
    ovl2_apply_stats_free(applied);

    /* An image layer and a container layer on top. */
    if (!ok(ovl2_create(d, "app", "base", NULL, &err), err, "create app") ||
        !ok(ovl2_create_rw(d, "container", "app", NULL, &err), err, "create container"))
        goto fail;
    ovl2_metadata *m = NULL;
    if (!ok(ovl2_layer_metadata(d, "container", &m, &err), err, "metadata")) goto fail;
    printf("LowerDir  %s\nUpperDir  %s\nWorkDir   %s\nMergedDir %s\n", m->lower_dir, m->upper_dir,
           m->work_dir, m->merged_dir);
    ovl2_metadata_free(m);

    /* Mount the container layer (Docker's Get), read the base's file through it, write
     * one, and unmount (Put). Every successful get needs one put. */
    char *merged = NULL;
    if (!ok(ovl2_get(d, "container", NULL, &merged, &err), err, "get container")) goto fail;
    printf("mounted at %s\n", merged);
    char line[256] = "";
    snprintf(path, sizeof path, "%s/hello.txt", merged);
    FILE *f = fopen(path, "r");
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

    /* What the container changed, and those changes exported as a layer tar to an fd. */
    ovl2_change_list *changes = NULL;
    if (!ok(ovl2_changes(d, "container", "app", &changes, &err), err, "changes")) goto fail;
    for (size_t i = 0; i < changes->len; i++)
        printf("change %c %s\n", "CAD"[changes->items[i].kind], changes->items[i].path);
    ovl2_change_list_free(changes);
    snprintf(path, sizeof path, "%s/container.tar", tmp);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ovl2_diff_stats *exported = NULL;
    int exported_ok = fd >= 0 && ok(ovl2_diff(d, "container", "app", fd, &exported, &err), err, "diff");
    if (fd >= 0) close(fd);
    if (!exported_ok) goto fail;
    printf("exported %s: %llu bytes, %llu entries, %s\n", path, (unsigned long long)exported->tar_bytes,
           (unsigned long long)exported->entries, exported->digest);
    ovl2_diff_stats_free(exported);

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
    snprintf(path, sizeof path, "rm -rf '%s'", tmp);
    return system(path) == 0 ? 0 : 1;

fail:
    ovl2_close(d);
    return 1;
}
