/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Calls every function of libovl2 through the installed header, including each error path
 * and NULL argument, and checks statuses, errnos, messages and returned values. Run under
 * valgrind (see scripts/test-c-go.sh) so leaks and invalid accesses fail the run too.
 *
 * Usage: test_ovl2 [WORKDIR]   (a fresh temporary directory by default)
 * Prints one line per failure and, last, "N passed, N failed". Exit status 1 on failure.
 */
#define _GNU_SOURCE
#include <ovl2.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int passed, failed;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        pthread_mutex_lock(&count_lock);                                       \
        if (cond) {                                                            \
            passed++;                                                          \
        } else {                                                               \
            failed++;                                                          \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                        \
            printf(__VA_ARGS__);                                               \
            printf("\n");                                                      \
        }                                                                      \
        pthread_mutex_unlock(&count_lock);                                     \
    } while (0)

/* Checks that a call returned OK and left *err NULL; frees the error otherwise. */
#define OK(call, what)                                                         \
    do {                                                                       \
        ovl2_error *e_ = (ovl2_error *)&passed; /* not NULL: must be cleared */ \
        ovl2_status s_ = (call);                                               \
        CHECK(s_ == OVL2_STATUS_OK && e_ == NULL, "%s: status %s: %s", what,   \
              ovl2_status_name(s_), s_ == OVL2_STATUS_OK ? "" : ovl2_error_message(e_)); \
        if (s_ != OVL2_STATUS_OK) ovl2_error_free(e_);                         \
    } while (0)

/* Runs a call that must fail with `want` (and errno `want_errno` when >= 0), checks the
 * error object agrees with the returned status and has a message, then frees it. The same
 * call is made again with err == NULL and must return the same status. */
#define FAILS(call, want, want_errno, what)                                    \
    do {                                                                       \
        ovl2_error *e_ = NULL;                                                 \
        ovl2_status s_ = (call);                                               \
        CHECK(s_ == (want), "%s: got %s, want %s (%s)", what, ovl2_status_name(s_), \
              ovl2_status_name(want), ovl2_error_message(e_));                 \
        CHECK(e_ != NULL && ovl2_error_status(e_) == s_, "%s: error object missing or disagrees", what); \
        CHECK(strlen(ovl2_error_message(e_)) > 0, "%s: empty message", what);  \
        if ((want_errno) >= 0)                                                 \
            CHECK(ovl2_error_errno(e_) == (want_errno), "%s: errno %d, want %d (%s)", what, \
                  ovl2_error_errno(e_), (int)(want_errno), ovl2_error_message(e_)); \
        ovl2_error_free(e_);                                                   \
    } while (0)

#define FAILS_NOERR(call, want, what)                                          \
    do {                                                                       \
        ovl2_status s_ = (call);                                               \
        CHECK(s_ == (want), "%s (err=NULL): got %s, want %s", what, ovl2_status_name(s_), \
              ovl2_status_name(want));                                         \
    } while (0)

static char work[PATH_MAX];

static void path_in(char *buf, const char *rel) { snprintf(buf, PATH_MAX, "%s/%s", work, rel); }

static void test_static_strings(void) {
    const char *v = ovl2_version();
    CHECK(v != NULL && strcmp(v, OVL2_TEST_VERSION) == 0, "ovl2_version() = %s, want %s", v, OVL2_TEST_VERSION);
    CHECK(strcmp(ovl2_status_name(OVL2_STATUS_OK), "OK") == 0, "status name OK");
    CHECK(strcmp(ovl2_status_name(OVL2_STATUS_NOT_FOUND), "NOT_FOUND") == 0, "status name NOT_FOUND");
    CHECK(strcmp(ovl2_status_name(OVL2_STATUS_CORRUPT_ARCHIVE), "CORRUPT_ARCHIVE") == 0, "status name CORRUPT_ARCHIVE");
    CHECK(strcmp(ovl2_status_name(OVL2_STATUS_PANIC), "PANIC") == 0, "status name PANIC");
    CHECK(strcmp(ovl2_status_name(-1), "UNKNOWN") == 0, "status name of -1");
    CHECK(strcmp(ovl2_status_name(1000), "UNKNOWN") == 0, "status name of 1000");
    /* The numeric values are ABI; a change here breaks every compiled caller. */
    CHECK(OVL2_STATUS_OK == 0 && OVL2_STATUS_INVALID_ARGUMENT == 1 && OVL2_STATUS_NOT_FOUND == 2 &&
              OVL2_STATUS_EXISTS == 3 && OVL2_STATUS_MAX_DEPTH == 4 && OVL2_STATUS_BUSY == 5 &&
              OVL2_STATUS_UNSUPPORTED == 6 && OVL2_STATUS_PERMISSION == 7 && OVL2_STATUS_CORRUPT == 8 &&
              OVL2_STATUS_CORRUPT_ARCHIVE == 9 && OVL2_STATUS_IO == 10 && OVL2_STATUS_PANIC == 11,
          "status values changed");
    CHECK(strcmp(ovl2_problem_kind_name(OVL2_PROBLEM_KIND_MISSING_SHORT_LINK), "missing_short_link") == 0,
          "problem kind name");
    CHECK(strcmp(ovl2_problem_kind_name(OVL2_PROBLEM_KIND_MISSING_COMMITTED), "missing_committed") == 0,
          "problem kind name (last)");
    CHECK(strcmp(ovl2_problem_kind_name(999), "other") == 0, "unknown problem kind name");
}

static void test_null_tolerance(void) {
    /* Accessors and free functions accept NULL. */
    CHECK(ovl2_error_status(NULL) == OVL2_STATUS_INVALID_ARGUMENT, "error_status(NULL)");
    CHECK(ovl2_error_errno(NULL) == 0, "error_errno(NULL)");
    CHECK(ovl2_error_message(NULL) != NULL && ovl2_error_message(NULL)[0] == 0, "error_message(NULL)");
    CHECK(ovl2_home(NULL) == NULL, "home(NULL)");
    ovl2_error_free(NULL);
    ovl2_close(NULL);
    ovl2_string_free(NULL);
    ovl2_metadata_free(NULL);
    ovl2_kv_list_free(NULL);
    ovl2_layer_list_free(NULL);
    ovl2_problem_list_free(NULL);
    ovl2_repair_report_free(NULL);
    ovl2_mount_list_free(NULL);
    CHECK(1, "free functions accept NULL");

    CHECK(ovl2_options_init(NULL) == OVL2_STATUS_INVALID_ARGUMENT, "options_init(NULL)");
    CHECK(ovl2_create_opts_init(NULL) == OVL2_STATUS_INVALID_ARGUMENT, "create_opts_init(NULL)");

    /* Every handle-taking function refuses a NULL handle. */
    bool b = true;
    char *s = (char *)&b;
    ovl2_metadata *m = (ovl2_metadata *)&b;
    ovl2_kv_list *kv = (ovl2_kv_list *)&b;
    ovl2_layer_list *ll = (ovl2_layer_list *)&b;
    ovl2_problem_list *pl = (ovl2_problem_list *)&b;
    ovl2_repair_report *rr = (ovl2_repair_report *)&b;
    FAILS(ovl2_create(NULL, "a", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create(NULL driver)");
    FAILS(ovl2_create_rw(NULL, "a", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create_rw(NULL driver)");
    FAILS(ovl2_remove(NULL, "a", false, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "remove(NULL driver)");
    FAILS(ovl2_exists(NULL, "a", &b, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "exists(NULL driver)");
    CHECK(b == false, "exists clears *out on failure");
    FAILS(ovl2_parent(NULL, "a", &s, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "parent(NULL driver)");
    CHECK(s == NULL, "parent clears *out on failure");
    FAILS(ovl2_layer_metadata(NULL, "a", &m, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "metadata(NULL driver)");
    CHECK(m == NULL, "metadata clears *out on failure");
    FAILS(ovl2_driver_status(NULL, &kv, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "status(NULL driver)");
    CHECK(kv == NULL, "status clears *out on failure");
    FAILS(ovl2_layers(NULL, &ll, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "layers(NULL driver)");
    CHECK(ll == NULL, "layers clears *out on failure");
    FAILS(ovl2_check(NULL, &pl, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "check(NULL driver)");
    CHECK(pl == NULL, "check clears *out on failure");
    FAILS(ovl2_repair(NULL, &rr, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "repair(NULL driver)");
    CHECK(rr == NULL, "repair clears *out on failure");
    /* Apply and diff clear their stats too when an argument is refused before the work starts
     * (they cleared them only on failures from the work itself). */
    ovl2_apply_stats *ast = (ovl2_apply_stats *)&b;
    FAILS(ovl2_apply_diff(NULL, "a", NULL, 0, &ast, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "apply(NULL driver)");
    CHECK(ast == NULL, "apply clears *out on a refused argument");
    ast = (ovl2_apply_stats *)&b;
    FAILS(ovl2_apply_diff_with(NULL, "a", NULL, 0, NULL, &ast, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "apply_diff_with(NULL driver)");
    CHECK(ast == NULL, "apply_diff_with clears *out on a refused argument");
    ovl2_diff_stats *dst = (ovl2_diff_stats *)&b;
    FAILS(ovl2_diff(NULL, "a", NULL, 1, &dst, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "diff(NULL driver)");
    CHECK(dst == NULL, "diff clears *out on a refused argument");
    dst = (ovl2_diff_stats *)&b;
    FAILS(ovl2_diff_with(NULL, "a", NULL, 1, NULL, &dst, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "diff_with(NULL driver)");
    CHECK(dst == NULL, "diff_with clears *out on a refused argument");
    FAILS_NOERR(ovl2_remove(NULL, "a", false, NULL), OVL2_STATUS_INVALID_ARGUMENT, "remove(NULL driver)");
}

static void test_open_errors(void) {
    char home[PATH_MAX];
    path_in(home, "store-errors");
    ovl2_driver *d = (ovl2_driver *)&passed;
    ovl2_options o;
    CHECK(ovl2_options_init(&o) == OVL2_STATUS_OK, "options_init");
    CHECK(o.size == sizeof o && o.max_depth == 500 && o.sync && o.repair_on_open && !o.set_root,
          "option defaults: size %zu max_depth %u", o.size, o.max_depth);

    FAILS(ovl2_open(NULL, NULL, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(NULL home)");
    CHECK(d == NULL, "open clears *out on failure");
    FAILS(ovl2_open(home, NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(NULL out)");
    FAILS(ovl2_open("", NULL, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(empty home)");
    o.max_depth = 0;
    FAILS(ovl2_open(home, &o, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(max_depth 0)");
    o.max_depth = 501;
    FAILS(ovl2_open(home, &o, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(max_depth 501)");
    ovl2_options_init(&o);
    o.size = 0;
    FAILS(ovl2_open(home, &o, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(options size 0)");

    /* A caller built against a newer, larger struct: unknown trailing bytes must be zero. */
    struct {
        ovl2_options o;
        uint64_t future;
    } big;
    memset(&big, 0, sizeof big);
    ovl2_options_init(&big.o);
    big.o.size = sizeof big;
    big.future = 7;
    FAILS(ovl2_open(home, &big.o, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(unknown nonzero field)");
    big.future = 0;
    OK(ovl2_open(home, &big.o, &d, &e_), "open(larger struct, zero tail)");
    ovl2_close(d);

    /* A caller built against an older, smaller struct gets defaults for the rest. */
    ovl2_options_init(&o);
    o.size = offsetof(ovl2_options, sync);
    o.max_depth = 3;
    o.sync = false; /* beyond the caller's size: must be ignored */
    OK(ovl2_open(home, &o, &d, &e_), "open(smaller struct)");
    ovl2_kv_list *st = NULL;
    OK(ovl2_driver_status(d, &st, &e_), "status of small-struct store");
    int saw_depth = 0;
    for (size_t i = 0; st && i < st->len; i++)
        if (strcmp(st->items[i].key, "Max depth") == 0) saw_depth = strcmp(st->items[i].value, "3") == 0;
    CHECK(saw_depth, "max_depth from a smaller struct is used");
    ovl2_kv_list_free(st);
    ovl2_close(d);

    /* A home that is a regular file cannot be a store. */
    char file[PATH_MAX];
    path_in(file, "a-file");
    FILE *f = fopen(file, "w");
    fclose(f);
    ovl2_error *e = NULL;
    ovl2_status s = ovl2_open(file, NULL, &d, &e);
    CHECK(s != OVL2_STATUS_OK && d == NULL && e != NULL && ovl2_error_errno(e) != 0,
          "open(file as home) fails with an errno: %s", ovl2_error_message(e));
    ovl2_error_free(e);
    FAILS_NOERR(ovl2_open(NULL, NULL, &d, NULL), OVL2_STATUS_INVALID_ARGUMENT, "open(NULL home)");
}

/* open_mode: only OVL2_OPEN_CREATE makes a store; nothing is made in a non-empty directory
 * that is not a store; a read-only handle refuses writes with EROFS. */
static void test_open_modes(void) {
    char home[PATH_MAX], other[PATH_MAX], junk[PATH_MAX];
    path_in(home, "store-modes");
    ovl2_driver *d = NULL;
    ovl2_options o;
    ovl2_options_init(&o);
    CHECK(o.open_mode == OVL2_OPEN_CREATE, "open_mode defaults to OVL2_OPEN_CREATE");
    o.open_mode = OVL2_OPEN_READ_ONLY;
    FAILS(ovl2_open(home, &o, &d, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "read-only open of a missing home");
    o.open_mode = OVL2_OPEN_EXISTING;
    FAILS(ovl2_open(home, &o, &d, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "existing open of a missing home");
    struct stat st;
    CHECK(stat(home, &st) != 0 && errno == ENOENT, "no store was created");
    o.open_mode = 7;
    FAILS(ovl2_open(home, &o, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "unknown open_mode");

    /* A caller built before open_mode existed gets OVL2_OPEN_CREATE. */
    ovl2_options_init(&o);
    o.size = offsetof(ovl2_options, open_mode);
    o.open_mode = OVL2_OPEN_READ_ONLY; /* beyond the caller's size: must be ignored */
    OK(ovl2_open(home, &o, &d, &e_), "open(struct without open_mode) creates");
    OK(ovl2_create(d, "base", NULL, NULL, &e_), "create base");
    ovl2_close(d);

    ovl2_options_init(&o);
    o.open_mode = OVL2_OPEN_READ_ONLY;
    OK(ovl2_open(home, &o, &d, &e_), "read-only open of a store");
    FAILS(ovl2_create(d, "x", NULL, NULL, &e_), OVL2_STATUS_PERMISSION, EROFS, "create on a read-only handle");
    FAILS(ovl2_remove(d, "base", true, &e_), OVL2_STATUS_PERMISSION, EROFS, "remove on a read-only handle");
    ovl2_close(d);

    /* A directory that is not a store is refused in every mode, and left as it was. */
    path_in(other, "not-a-store");
    mkdir(other, 01777);
    chmod(other, 01777);
    snprintf(junk, sizeof junk, "%s/someone-elses", other);
    FILE *f = fopen(junk, "w");
    fclose(f);
    for (uint32_t m = OVL2_OPEN_CREATE; m <= OVL2_OPEN_READ_ONLY; m++) {
        o.open_mode = m;
        FAILS(ovl2_open(other, &o, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open of a non-store dir");
    }
    CHECK(stat(other, &st) == 0 && (st.st_mode & 07777) == 01777, "mode kept: %o", st.st_mode & 07777);
    snprintf(junk, sizeof junk, "%s/l", other);
    CHECK(stat(junk, &st) != 0, "no l/ made in a non-store dir");

    ovl2_error *e = NULL;
    CHECK(ovl2_open("/dev/null", NULL, &d, &e) != OVL2_STATUS_OK && ovl2_error_errno(e) == ENOTDIR,
          "/dev/null is not a directory: %s", ovl2_error_message(e));
    ovl2_error_free(e);
}

static int has_kv(const ovl2_kv_list *l, const char *k, const char *v) {
    for (size_t i = 0; i < l->len; i++)
        if (strcmp(l->items[i].key, k) == 0) return v == NULL || strcmp(l->items[i].value, v) == 0;
    return 0;
}

static void test_layers(void) {
    char home[PATH_MAX], buf[PATH_MAX * 2];
    path_in(home, "store");
    ovl2_driver *d = NULL;
    ovl2_options o;
    ovl2_options_init(&o);
    o.sync = false;
    OK(ovl2_open(home, &o, &d, &e_), "open");
    if (!d) return;
    char real[PATH_MAX];
    CHECK(realpath(home, real) && strcmp(ovl2_home(d), real) == 0, "home() = %s", ovl2_home(d));

    /* create / create_rw */
    OK(ovl2_create(d, "base", NULL, NULL, &e_), "create base");
    ovl2_create_opts co;
    CHECK(ovl2_create_opts_init(&co) == OVL2_STATUS_OK && co.size == sizeof co && co.mount_label == NULL,
          "create_opts_init");
    co.mount_label = "system_u:object_r:container_file_t:s0";
    OK(ovl2_create(d, "mid", "base", &co, &e_), "create mid with a mount label");
    OK(ovl2_create_rw(d, "top", "mid", NULL, &e_), "create_rw top");
    FAILS(ovl2_create(d, "base", NULL, NULL, &e_), OVL2_STATUS_EXISTS, EEXIST, "create existing");
    FAILS(ovl2_create_rw(d, "top", "mid", NULL, &e_), OVL2_STATUS_EXISTS, EEXIST, "create_rw existing");
    FAILS(ovl2_create(d, "orphan", "nope", NULL, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "create on missing parent");
    FAILS(ovl2_create(d, "self", "self", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create own parent");
    FAILS(ovl2_create(d, NULL, NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create(NULL id)");
    FAILS(ovl2_create_rw(d, NULL, NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create_rw(NULL id)");
    FAILS(ovl2_create(d, "", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create(empty id)");
    FAILS(ovl2_create(d, "../escape", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create(../ id)");
    FAILS(ovl2_create(d, "a/b", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create(id with /)");
    FAILS(ovl2_create(d, "ok", "../p", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create(bad parent id)");
    FAILS(ovl2_create(d, "\xff\xfe", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create(non-UTF-8 id)");
    const char *size_opt[] = {"size=10G", NULL};
    ovl2_create_opts_init(&co);
    co.storage_opt = size_opt;
    FAILS(ovl2_create(d, "sized", NULL, &co, &e_), OVL2_STATUS_UNSUPPORTED, EOPNOTSUPP, "create with size=");
    const char *bad_opt[] = {"colour=blue", NULL};
    co.storage_opt = bad_opt;
    FAILS(ovl2_create(d, "sized", NULL, &co, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "unknown storage opt");
    const char *no_eq[] = {"size", NULL};
    co.storage_opt = no_eq;
    FAILS(ovl2_create(d, "sized", NULL, &co, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "storage opt without =");
    ovl2_create_opts_init(&co);
    co.mount_label = "\xc3\x28";
    FAILS(ovl2_create(d, "lbl", NULL, &co, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "non-UTF-8 mount label");
    ovl2_create_opts_init(&co);
    co.size = 1;
    FAILS(ovl2_create(d, "sz", NULL, &co, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create_opts size 1");
    FAILS_NOERR(ovl2_create(d, "base", NULL, NULL, NULL), OVL2_STATUS_EXISTS, "create existing");

    /* exists */
    bool b = false;
    OK(ovl2_exists(d, "mid", &b, &e_), "exists mid");
    CHECK(b, "mid exists");
    OK(ovl2_exists(d, "orphan", &b, &e_), "exists orphan");
    CHECK(!b, "orphan does not exist (failed create left nothing)");
    FAILS(ovl2_exists(d, NULL, &b, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "exists(NULL id)");
    FAILS(ovl2_exists(d, "mid", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "exists(NULL out)");
    FAILS(ovl2_exists(d, "..", &b, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "exists(..)");

    /* parent */
    char *p = (char *)&b;
    OK(ovl2_parent(d, "base", &p, &e_), "parent of base");
    CHECK(p == NULL, "base has no parent");
    OK(ovl2_parent(d, "top", &p, &e_), "parent of top");
    CHECK(p && strcmp(p, "mid") == 0, "parent of top is mid, got %s", p ? p : "(null)");
    ovl2_string_free(p);
    FAILS(ovl2_parent(d, "nope", &p, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "parent of missing");
    FAILS(ovl2_parent(d, "top", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "parent(NULL out)");
    FAILS(ovl2_parent(d, NULL, &p, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "parent(NULL id)");

    /* metadata */
    ovl2_metadata *m = NULL;
    OK(ovl2_layer_metadata(d, "base", &m, &e_), "metadata of base");
    if (m) {
        snprintf(buf, sizeof buf, "%s/base/diff", real);
        CHECK(m->lower_dir == NULL, "base has no LowerDir");
        CHECK(strcmp(m->upper_dir, buf) == 0, "UpperDir %s", m->upper_dir);
        snprintf(buf, sizeof buf, "%s/base/work", real);
        CHECK(strcmp(m->work_dir, buf) == 0, "WorkDir %s", m->work_dir);
        snprintf(buf, sizeof buf, "%s/base/merged", real);
        CHECK(strcmp(m->merged_dir, buf) == 0, "MergedDir %s", m->merged_dir);
    }
    ovl2_metadata_free(m);
    OK(ovl2_layer_metadata(d, "top", &m, &e_), "metadata of top");
    if (m) {
        snprintf(buf, sizeof buf, "%s/mid/diff:%s/base/diff", real, real);
        CHECK(m->lower_dir && strcmp(m->lower_dir, buf) == 0, "LowerDir of top is %s", m->lower_dir);
    }
    ovl2_metadata_free(m);
    FAILS(ovl2_layer_metadata(d, "nope", &m, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "metadata of missing");
    FAILS(ovl2_layer_metadata(d, NULL, &m, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "metadata(NULL id)");
    FAILS(ovl2_layer_metadata(d, "top", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "metadata(NULL out)");

    /* status */
    ovl2_kv_list *st = NULL;
    OK(ovl2_driver_status(d, &st, &e_), "status");
    if (st) {
        CHECK(st->len >= 8, "status has %zu pairs", st->len);
        CHECK(strcmp(st->items[0].key, "Backing Filesystem") == 0, "first status key is %s", st->items[0].key);
        CHECK(has_kv(st, "Supports d_type", "true"), "Supports d_type true");
        CHECK(has_kv(st, "Layers", "3"), "Layers 3");
        CHECK(has_kv(st, "Home", real), "Home");
    }
    ovl2_kv_list_free(st);
    FAILS(ovl2_driver_status(d, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "status(NULL out)");

    /* layers */
    ovl2_layer_list *ll = NULL;
    OK(ovl2_layers(d, &ll, &e_), "layers");
    if (ll) {
        CHECK(ll->len == 3, "3 layers, got %zu", ll->len);
        for (size_t i = 0; i < ll->len; i++) {
            const ovl2_layer *l = &ll->items[i];
            CHECK(l->short_id && strlen(l->short_id) == 26, "short id of %s", l->id);
            if (strcmp(l->id, "base") == 0) CHECK(l->depth == 0 && l->parent == NULL, "base depth/parent");
            if (strcmp(l->id, "mid") == 0)
                CHECK(l->depth == 1 && l->parent && strcmp(l->parent, "base") == 0, "mid depth/parent");
            if (strcmp(l->id, "top") == 0)
                CHECK(l->depth == 2 && l->parent && strcmp(l->parent, "mid") == 0, "top depth/parent");
        }
        CHECK(ll->len == 3 && strcmp(ll->items[0].id, "base") == 0 && strcmp(ll->items[2].id, "top") == 0,
              "layers sorted by id");
    }
    ovl2_layer_list_free(ll);
    FAILS(ovl2_layers(d, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "layers(NULL out)");

    /* check / repair: a clean store, then one with its l/ link of "mid" deleted. */
    ovl2_problem_list *pl = NULL;
    OK(ovl2_check(d, &pl, &e_), "check clean store");
    CHECK(pl && pl->len == 0 && pl->items == NULL, "clean store has no problems");
    ovl2_problem_list_free(pl);
    char linkf[PATH_MAX], shortid[64] = {0}, lpath[PATH_MAX * 2];
    snprintf(linkf, sizeof linkf, "%s/mid/link", home);
    FILE *f = fopen(linkf, "r");
    CHECK(f && fgets(shortid, sizeof shortid, f), "read mid/link");
    if (f) fclose(f);
    snprintf(lpath, sizeof lpath, "%s/l/%s", home, shortid);
    CHECK(unlink(lpath) == 0, "unlink %s", lpath);
    OK(ovl2_check(d, &pl, &e_), "check damaged store");
    int found = 0;
    for (size_t i = 0; pl && i < pl->len; i++) {
        const ovl2_problem *pr = &pl->items[i];
        if (pr->kind == OVL2_PROBLEM_KIND_MISSING_SHORT_LINK && pr->layer && strcmp(pr->layer, "mid") == 0 &&
            pr->repairable && strlen(pr->detail) > 0)
            found = 1;
    }
    CHECK(found, "check reports mid's missing short link");
    ovl2_problem_list_free(pl);
    FAILS(ovl2_check(d, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "check(NULL out)");
    ovl2_repair_report *rr = NULL;
    OK(ovl2_repair(d, &rr, &e_), "repair");
    if (rr) {
        CHECK(rr->repaired.len >= 1 && rr->repaired.items[0].kind == OVL2_PROBLEM_KIND_MISSING_SHORT_LINK,
              "repair fixed the short link (%zu repaired)", rr->repaired.len);
        CHECK(rr->remaining.len == 0, "nothing remains after repair (%zu)", rr->remaining.len);
    }
    ovl2_repair_report_free(rr);
    struct stat sb;
    CHECK(lstat(lpath, &sb) == 0 && S_ISLNK(sb.st_mode), "repair recreated %s", lpath);
    FAILS(ovl2_repair(d, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "repair(NULL out)");

    /* A damaged lower file is reported as CORRUPT, not as a crash or a wrong answer. */
    OK(ovl2_create(d, "victim", "base", NULL, &e_), "create victim");
    char lowerf[PATH_MAX];
    snprintf(lowerf, sizeof lowerf, "%s/victim/lower", home);
    f = fopen(lowerf, "w");
    fputs("not a lower file", f);
    fclose(f);
    FAILS(ovl2_layer_metadata(d, "victim", &m, &e_), OVL2_STATUS_CORRUPT, EUCLEAN, "metadata of corrupt layer");
    FAILS(ovl2_parent(d, "victim", &p, &e_), OVL2_STATUS_CORRUPT, EUCLEAN, "parent of corrupt layer");
    OK(ovl2_remove(d, "victim", false, &e_), "remove corrupt layer");

    /* remove */
    FAILS(ovl2_remove(d, "base", false, &e_), OVL2_STATUS_BUSY, EBUSY, "remove layer with children");
    FAILS(ovl2_remove(d, "nope", false, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "remove missing");
    FAILS(ovl2_remove(d, NULL, false, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "remove(NULL id)");
    FAILS(ovl2_remove(d, "/abs", false, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "remove(/abs)");
    OK(ovl2_remove(d, "top", false, &e_), "remove top");
    /* force unmounts first; it never orphans a child. */
    FAILS(ovl2_remove(d, "base", true, &e_), OVL2_STATUS_BUSY, EBUSY, "force-remove base under mid");
    FAILS(ovl2_remove_with(d, "base", 4, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "remove_with unknown flag");
    /* Docker's Remove ignores children: mid becomes an orphan, flagged and explained. */
    OK(ovl2_remove_with(d, "base", OVL2_REMOVE_FORCE | OVL2_REMOVE_IGNORE_CHILDREN, &e_), "Docker-style remove");
    OK(ovl2_exists(d, "base", &b, &e_), "exists base after remove");
    CHECK(!b, "base is gone");
    OK(ovl2_layers(d, &ll, &e_), "layers with an orphan");
    CHECK(ll && ll->len == 1 && strcmp(ll->items[0].id, "mid") == 0 && ll->items[0].orphan && !ll->items[0].parent,
          "mid is flagged as an orphan");
    ovl2_layer_list_free(ll);
    OK(ovl2_check(d, &pl, &e_), "check with an orphan");
    CHECK(pl && pl->len == 1 && pl->items[0].kind == OVL2_PROBLEM_KIND_ORPHAN && !pl->items[0].repairable &&
              strstr(pl->items[0].detail, "`ovl2 rm --recursive mid`"),
          "check explains the orphan");
    CHECK(strcmp(ovl2_problem_kind_name(OVL2_PROBLEM_KIND_ORPHAN), "orphan") == 0 &&
              strcmp(ovl2_problem_kind_name(OVL2_PROBLEM_KIND_MISSING_LOWER), "missing_lower") == 0,
          "new problem kind names");
    ovl2_problem_list_free(pl);
    /* remove_tree takes a layer with everything built on it. */
    OK(ovl2_create(d, "leaf", "mid", NULL, &e_), "create leaf on mid");
    FAILS(ovl2_remove_tree(d, NULL, false, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "remove_tree(NULL id)");
    FAILS(ovl2_remove_tree(d, "nope", false, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "remove_tree missing");
    OK(ovl2_remove_tree(d, "mid", false, &e_), "remove_tree mid");
    /* remove_tree_with says what it removed, deepest first; NULL out is allowed. */
    OK(ovl2_create(d, "t1", NULL, NULL, &e_), "create t1");
    OK(ovl2_create(d, "t2", "t1", NULL, &e_), "create t2");
    OK(ovl2_create(d, "t3", "t2", NULL, &e_), "create t3");
    ovl2_id_list *ids = (ovl2_id_list *)&b;
    FAILS(ovl2_remove_tree_with(d, "t1", OVL2_REMOVE_IGNORE_CHILDREN, &ids, &e_), OVL2_STATUS_INVALID_ARGUMENT,
          EINVAL, "remove_tree_with refuses ignore_children");
    CHECK(ids == NULL, "remove_tree_with clears *out on failure");
    ids = (ovl2_id_list *)&b;
    FAILS(ovl2_remove_tree_with(NULL, "t1", 0, &ids, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "remove_tree_with(NULL driver)");
    CHECK(ids == NULL, "remove_tree_with clears *out on a NULL driver");
    OK(ovl2_remove_tree_with(d, "t2", 0, NULL, &e_), "remove_tree_with, ids not wanted");
    OK(ovl2_create(d, "t2", "t1", NULL, &e_), "create t2 again");
    OK(ovl2_create(d, "t3", "t2", NULL, &e_), "create t3 again");
    OK(ovl2_remove_tree_with(d, "t1", OVL2_REMOVE_FORCE, &ids, &e_), "remove_tree_with t1");
    CHECK(ids && ids->len == 3 && strcmp(ids->items[0].id, "t3") == 0 && strcmp(ids->items[1].id, "t2") == 0 &&
              strcmp(ids->items[2].id, "t1") == 0,
          "remove_tree_with lists t3, t2, t1");
    ovl2_id_list_free(ids);
    ovl2_id_list_free(NULL);
    OK(ovl2_layers(d, &ll, &e_), "layers of empty store");
    CHECK(ll && ll->len == 0 && ll->items == NULL, "empty store lists no layers");
    ovl2_layer_list_free(ll);
    ovl2_close(d);
}

static void test_max_depth(void) {
    char home[PATH_MAX];
    path_in(home, "store-depth");
    ovl2_driver *d = NULL;
    ovl2_options o;
    ovl2_options_init(&o);
    o.max_depth = 2;
    o.sync = false;
    OK(ovl2_open(home, &o, &d, &e_), "open max_depth 2");
    if (!d) return;
    OK(ovl2_create(d, "d1", NULL, NULL, &e_), "create d1");
    OK(ovl2_create(d, "d2", "d1", NULL, &e_), "create d2");
    /* Docker's rule: max_depth lower layers are allowed (d3 has 2), one more is not. */
    OK(ovl2_create(d, "d3", "d2", NULL, &e_), "create d3 with max_depth lowers");
    FAILS(ovl2_create(d, "d4", "d3", NULL, &e_), OVL2_STATUS_MAX_DEPTH, ETOOMANYREFS, "create past max depth");
    FAILS(ovl2_create_rw(d, "d4", "d3", NULL, &e_), OVL2_STATUS_MAX_DEPTH, ETOOMANYREFS, "create_rw past max depth");
    ovl2_close(d);
}

/* Many threads share one handle; each creates, inspects and removes its own chain, and
 * provokes an error, so errors must reach the thread that caused them. */
struct worker {
    ovl2_driver *d;
    int n;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    char base[64], child[64];
    for (int round = 0; round < 5; round++) {
        snprintf(base, sizeof base, "t%d-r%d-base", w->n, round);
        snprintf(child, sizeof child, "t%d-r%d-child", w->n, round);
        OK(ovl2_create(w->d, base, NULL, NULL, &e_), "thread create base");
        OK(ovl2_create_rw(w->d, child, base, NULL, &e_), "thread create child");
        FAILS(ovl2_create(w->d, child, base, NULL, &e_), OVL2_STATUS_EXISTS, EEXIST, "thread create existing");
        char *p = NULL;
        OK(ovl2_parent(w->d, child, &p, &e_), "thread parent");
        CHECK(p && strcmp(p, base) == 0, "thread parent of %s is %s", child, p ? p : "(null)");
        ovl2_string_free(p);
        FAILS(ovl2_remove(w->d, base, false, &e_), OVL2_STATUS_BUSY, EBUSY, "thread remove busy base");
        OK(ovl2_remove(w->d, child, false, &e_), "thread remove child");
        OK(ovl2_remove(w->d, base, false, &e_), "thread remove base");
        ovl2_layer_list *ll = NULL;
        OK(ovl2_layers(w->d, &ll, &e_), "thread layers");
        ovl2_layer_list_free(ll);
    }
    return NULL;
}

static void test_threads(void) {
    char home[PATH_MAX];
    path_in(home, "store-threads");
    ovl2_driver *d = NULL;
    ovl2_options o;
    ovl2_options_init(&o);
    o.sync = false;
    OK(ovl2_open(home, &o, &d, &e_), "open for threads");
    if (!d) return;
    enum { N = 8 };
    pthread_t t[N];
    struct worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){d, i};
        CHECK(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    ovl2_layer_list *ll = NULL;
    OK(ovl2_layers(d, &ll, &e_), "layers after threads");
    CHECK(ll && ll->len == 0, "threads left no layers behind");
    ovl2_layer_list_free(ll);
    ovl2_problem_list *pl = NULL;
    OK(ovl2_check(d, &pl, &e_), "check after threads");
    CHECK(pl && pl->len == 0, "store is sound after threads");
    ovl2_problem_list_free(pl);
    ovl2_close(d);
}


/* Whether this run may mount; without root it fails under CI=true or OVL2_REQUIRE_MOUNT=1
 * (the project rule: mount tests never silently skip in CI) and skips otherwise. */
static int can_mount(void) {
    if (geteuid() == 0) return 1;
    const char *ci = getenv("CI"), *req = getenv("OVL2_REQUIRE_MOUNT");
    int required = (ci && strcmp(ci, "true") == 0) || (req && strcmp(req, "1") == 0);
    CHECK(!required, "mount tests need root (CI=true or OVL2_REQUIRE_MOUNT=1 is set)");
    if (!required) printf("SKIP mount tests: not root\n");
    return 0;
}

static int write_file(const char *dir, const char *name, const char *text) {
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

static int file_is(const char *dir, const char *name, const char *text) {
    char p[PATH_MAX * 2], buf[256] = {0};
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n == strlen(text) && memcmp(buf, text, n) == 0;
}

/* Reports the single entry for `id` in the store's mounts, or zeros. */
static ovl2_mount_info mount_of(ovl2_driver *d, const char *id, size_t *total) {
    ovl2_mount_info out;
    memset(&out, 0, sizeof out);
    ovl2_mount_list *ml = NULL;
    OK(ovl2_mounts(d, &ml, &e_), "mounts");
    *total = ml ? ml->len : 0;
    for (size_t i = 0; ml && i < ml->len; i++)
        if (strcmp(ml->items[i].id, id) == 0) {
            out = ml->items[i];
            out.id = out.path = out.method = NULL; /* freed with the list */
            out.method = strncmp(ml->items[i].method, "legacy", 6) == 0 ? "legacy" : "new";
        }
    ovl2_mount_list_free(ml);
    return out;
}

struct getput {
    ovl2_driver *d;
    const char *id;
};

static void *getput_main(void *arg) {
    struct getput *g = arg;
    for (int i = 0; i < 10; i++) {
        char *p = NULL;
        OK(ovl2_get(g->d, g->id, NULL, &p, &e_), "thread get");
        CHECK(p && file_is(p, "hello.txt", "from base"), "thread reads through the mount");
        ovl2_string_free(p);
        OK(ovl2_put(g->d, g->id, &e_), "thread put");
    }
    return NULL;
}

static void test_mounts(void) {
    if (!can_mount()) return;
    char home[PATH_MAX], want[PATH_MAX * 2];
    path_in(home, "store-mount");
    ovl2_driver *d = NULL;
    ovl2_options o;
    ovl2_options_init(&o);
    o.sync = false;
    CHECK(o.mount_strategy == OVL2_MOUNT_STRATEGY_DEFAULT && o.disabled_features == NULL, "mount option defaults");
    OK(ovl2_open(home, &o, &d, &e_), "open for mounts");
    if (!d) return;
    const char *home_abs = ovl2_home(d);

    OK(ovl2_create(d, "base", NULL, NULL, &e_), "create base");
    OK(ovl2_create(d, "app", "base", NULL, &e_), "create app");
    OK(ovl2_create_rw(d, "ctr", "app", NULL, &e_), "create ctr");
    ovl2_metadata *m = NULL;
    OK(ovl2_layer_metadata(d, "base", &m, &e_), "metadata base");
    CHECK(m && write_file(m->upper_dir, "hello.txt", "from base"), "write into base/diff");
    ovl2_metadata_free(m);
    OK(ovl2_layer_metadata(d, "app", &m, &e_), "metadata app");
    CHECK(m && write_file(m->upper_dir, "app.txt", "from app"), "write into app/diff");
    ovl2_metadata_free(m);

    /* get / put with reference counts */
    char *p = NULL;
    OK(ovl2_get(d, "ctr", NULL, &p, &e_), "get ctr");
    snprintf(want, sizeof want, "%s/ctr/merged", home_abs);
    CHECK(p && strcmp(p, want) == 0, "get returns %s, got %s", want, p ? p : "(null)");
    CHECK(p && file_is(p, "hello.txt", "from base") && file_is(p, "app.txt", "from app"), "read lower files via mount");
    CHECK(p && write_file(p, "new.txt", "from ctr"), "write through the mount");
    snprintf(want, sizeof want, "%s/ctr/diff", home_abs);
    CHECK(file_is(want, "new.txt", "from ctr"), "write lands in ctr/diff");
    ovl2_string_free(p);
    size_t total = 0;
    ovl2_mount_info mi = mount_of(d, "ctr", &total);
    CHECK(total == 1 && mi.count == 1 && mi.processes == 1 && mi.persistent == 0 && mi.mounted && !mi.readonly,
          "mounts after one get: total %zu count %llu", total, (unsigned long long)mi.count);
    OK(ovl2_get(d, "ctr", "", &p, &e_), "second get ctr");
    ovl2_string_free(p);
    FAILS(ovl2_remove(d, "ctr", false, &e_), OVL2_STATUS_BUSY, EBUSY, "remove a mounted layer");
    OK(ovl2_put(d, "ctr", &e_), "first put");
    mi = mount_of(d, "ctr", &total);
    CHECK(mi.mounted, "still mounted after one of two puts");
    OK(ovl2_put(d, "ctr", &e_), "second put");
    mi = mount_of(d, "ctr", &total);
    CHECK(total == 0 && !mi.mounted, "unmounted after the last put (%zu mounts)", total);
    FAILS(ovl2_put(d, "ctr", &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "put of an unmounted layer");

    /* A base layer is not mounted: get returns its diff dir. */
    OK(ovl2_get(d, "base", NULL, &p, &e_), "get base");
    snprintf(want, sizeof want, "%s/base/diff", home_abs);
    CHECK(p && strcmp(p, want) == 0, "get base returns diff, got %s", p ? p : "(null)");
    ovl2_string_free(p);
    OK(ovl2_put(d, "base", &e_), "put base");

    /* get errors */
    FAILS(ovl2_get(d, "nope", NULL, &p, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "get missing");
    CHECK(p == NULL, "get clears *out on failure");
    FAILS(ovl2_get(d, NULL, NULL, &p, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get(NULL id)");
    FAILS(ovl2_get(d, "ctr", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get(NULL out)");
    FAILS(ovl2_get(NULL, "ctr", NULL, &p, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get(NULL driver)");
    FAILS(ovl2_get(d, "ctr", "a,b", &p, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get(label with ,)");
    FAILS(ovl2_get(d, "../x", NULL, &p, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get(bad id)");
    FAILS(ovl2_put(d, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "put(NULL id)");
    FAILS(ovl2_put(NULL, "ctr", &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "put(NULL driver)");
    FAILS(ovl2_put(d, "nope", &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "put missing");

    /* get_with: read-only and persistent references */
    ovl2_mount_opts mo;
    CHECK(ovl2_mount_opts_init(NULL) == OVL2_STATUS_INVALID_ARGUMENT, "mount_opts_init(NULL)");
    CHECK(ovl2_mount_opts_init(&mo) == OVL2_STATUS_OK && mo.size == sizeof mo && !mo.readonly && !mo.persistent &&
              !mo.volatile_mount && mo.mount_label == NULL,
          "mount_opts_init");
    mo.readonly = true;
    OK(ovl2_get_with(d, "ctr", &mo, &p, &e_), "get_with readonly");
    CHECK(p && file_is(p, "new.txt", "from ctr"), "readonly mount shows the layer's own files");
    CHECK(p && !write_file(p, "nope.txt", "x"), "readonly mount refuses writes");
    ovl2_string_free(p);
    mi = mount_of(d, "ctr", &total);
    CHECK(mi.readonly && mi.mounted, "mounts says readonly");
    FAILS(ovl2_get(d, "ctr", NULL, &p, &e_), OVL2_STATUS_BUSY, EBUSY, "read-write get of a read-only mount");
    OK(ovl2_put(d, "ctr", &e_), "put readonly");
    ovl2_mount_opts_init(&mo);
    mo.persistent = true;
    mo.volatile_mount = true;
    OK(ovl2_get_with(d, "ctr", &mo, &p, &e_), "get_with persistent+volatile");
    ovl2_string_free(p);
    mi = mount_of(d, "ctr", &total);
    CHECK(mi.persistent == 1 && mi.processes == 0 && mi.mounted, "persistent reference recorded");
    OK(ovl2_put(d, "ctr", &e_), "put persistent");
    OK(ovl2_get_with(d, "ctr", NULL, &p, &e_), "get_with NULL opts");
    ovl2_string_free(p);
    OK(ovl2_put(d, "ctr", &e_), "put after get_with NULL opts");
    ovl2_mount_opts_init(&mo);
    mo.size = 2;
    FAILS(ovl2_get_with(d, "ctr", &mo, &p, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get_with bad size");
    ovl2_mount_opts_init(&mo);
    mo.mount_label = "a\"b";
    FAILS(ovl2_get_with(d, "ctr", &mo, &p, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get_with bad label");
    FAILS(ovl2_get_with(d, NULL, NULL, &p, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get_with(NULL id)");
    FAILS(ovl2_get_with(d, "ctr", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "get_with(NULL out)");
    FAILS(ovl2_mounts(d, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "mounts(NULL out)");
    ovl2_mount_list *ml = (ovl2_mount_list *)&passed;
    FAILS(ovl2_mounts(NULL, &ml, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "mounts(NULL driver)");
    CHECK(ml == NULL, "mounts clears *out on failure");
    ovl2_mount_list_free(NULL);

    /* Threads share the handle and one layer's mount. */
    enum { N = 4 };
    pthread_t t[N];
    struct getput g = {d, "ctr"};
    for (int i = 0; i < N; i++) pthread_create(&t[i], NULL, getput_main, &g);
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    mi = mount_of(d, "ctr", &total);
    CHECK(total == 0, "threads' get/put balanced out (%zu mounts left)", total);

    /* cleanup unmounts whatever is held. */
    OK(ovl2_get(d, "ctr", NULL, &p, &e_), "get before cleanup");
    ovl2_string_free(p);
    OK(ovl2_get(d, "app", NULL, &p, &e_), "get app before cleanup");
    ovl2_string_free(p);
    OK(ovl2_cleanup(d, &e_), "cleanup");
    mi = mount_of(d, "ctr", &total);
    CHECK(total == 0 && !mi.mounted, "cleanup left %zu mounts", total);
    FAILS(ovl2_cleanup(NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "cleanup(NULL driver)");
    ovl2_close(d);

    /* Mount strategy and feature options. */
    ovl2_options_init(&o);
    o.mount_strategy = 42;
    FAILS(ovl2_open(home, &o, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(unknown mount strategy)");
    ovl2_options_init(&o);
    o.disabled_features = "warp-drive";
    FAILS(ovl2_open(home, &o, &d, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "open(unknown feature)");
    ovl2_options_init(&o);
    o.mount_strategy = OVL2_MOUNT_STRATEGY_LEGACY;
    o.disabled_features = "lowerdir+fd, O_PATH-fds";
    OK(ovl2_open(home, &o, &d, &e_), "open legacy");
    if (!d) return;
    OK(ovl2_get(d, "ctr", NULL, &p, &e_), "legacy get");
    CHECK(p && file_is(p, "hello.txt", "from base"), "legacy mount reads lower files");
    ovl2_string_free(p);
    mi = mount_of(d, "ctr", &total);
    CHECK(mi.method && strcmp(mi.method, "legacy") == 0, "mounted with the legacy strategy");
    OK(ovl2_put(d, "ctr", &e_), "legacy put");
    ovl2_close(d);
}

/* ---- archives: apply from fds (file and pipe), diff to fds, changes, diff_size ---- */

static int sh(const char *fmt, const char *a, const char *b) {
    char cmd[PATH_MAX * 3];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    return system(cmd) == 0;
}

struct feeder {
    int fd;
    const char *path;
};

/* Copies a file into a pipe, then closes the write end: a streaming producer. */
static void *feed_main(void *arg) {
    struct feeder *f = arg;
    FILE *in = fopen(f->path, "rb");
    char buf[4096];
    size_t n;
    while (in && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (write(f->fd, buf, n) != (ssize_t)n) break;
    if (in) fclose(in);
    close(f->fd);
    return NULL;
}

struct drain {
    int fd;
    long long bytes;
};

static void *drain_main(void *arg) {
    struct drain *dr = arg;
    char buf[4096];
    ssize_t n;
    while ((n = read(dr->fd, buf, sizeof buf)) > 0) dr->bytes += n;
    return NULL;
}

static int has_change(const ovl2_change_list *l, const char *path, ovl2_change_kind kind) {
    for (size_t i = 0; i < l->len; i++)
        if (strcmp(l->items[i].path, path) == 0) return l->items[i].kind == kind;
    return 0;
}

/* Issue 10, item 5a: after fork, the child's get was recorded with its parent's start time,
 * so the next open by any other process decided the child was dead, unmounted its rootfs
 * under it, and the child's put failed. Here the child gets, the parent (another process)
 * opens the store, and the child must still see its mount and be able to put it. */
static void test_fork_mount(void) {
    if (!can_mount()) return;
    char home[PATH_MAX];
    path_in(home, "store-fork");
    ovl2_driver *d = NULL;
    OK(ovl2_open(home, NULL, &d, &e_), "open for fork");
    if (!d) return;
    OK(ovl2_create(d, "base", NULL, NULL, &e_), "create base");
    ovl2_metadata *m = NULL;
    OK(ovl2_layer_metadata(d, "base", &m, &e_), "metadata base");
    CHECK(m && write_file(m->upper_dir, "hello.txt", "from base"), "write into base/diff");
    ovl2_metadata_free(m);
    OK(ovl2_create_rw(d, "ctr", "base", NULL, &e_), "create ctr");
    int to_parent[2], to_child[2];
    CHECK(pipe(to_parent) == 0 && pipe(to_child) == 0, "pipes");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* Child: report through the exit status (its counters die with it). */
        char *p = NULL, c = 0;
        int code = 0;
        if (ovl2_get(d, "ctr", NULL, &p, NULL) != OVL2_STATUS_OK) code = 10;
        if (write(to_parent[1], "g", 1) != 1 || read(to_child[0], &c, 1) != 1) code = code ? code : 11;
        if (!code && !file_is(p, "hello.txt", "from base")) code = 12; /* the mount is gone */
        if (!code && ovl2_put(d, "ctr", NULL) != OVL2_STATUS_OK) code = 13;
        ovl2_string_free(p);
        ovl2_close(d); /* the child's copy (valgrind checks the child for leaks too) */
        _exit(code);
    }
    char c = 0;
    CHECK(pid > 0 && read(to_parent[0], &c, 1) == 1, "the child got ctr");
    /* Another process opening the store reconciles every record (as `ovl2 ls` does). */
    ovl2_driver *other = NULL;
    OK(ovl2_open(home, NULL, &other, &e_), "open the store while the child holds ctr");
    size_t total = 0;
    ovl2_mount_info mi = mount_of(other, "ctr", &total);
    CHECK(total == 1 && mi.mounted && mi.processes == 1, "the child's mount survives another open (%zu mounts)", total);
    CHECK(write(to_child[1], "c", 1) == 1, "let the child go on");
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "forked child: mount kept and put succeeded (exit %d; 12: mount gone, 13: put failed)",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    mi = mount_of(other, "ctr", &total);
    CHECK(total == 0 && !mi.mounted, "the child's put unmounted ctr (%zu mounts)", total);
    close(to_parent[0]);
    close(to_parent[1]);
    close(to_child[0]);
    close(to_child[1]);
    ovl2_close(other);
    ovl2_close(d);
}

/* Whether openat2 works here. Valgrind 3.19 (Debian 12) does not know it and returns
 * ENOSYS, so under valgrind layers are seeded by copying files and only the applies that
 * fail before resolving names run; the native run (OVL2_REQUIRE_OPENAT2=1) does them all. */
static int have_openat2(void) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    long fd = syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
    if (fd >= 0) close((int)fd);
    int ok = !(fd < 0 && errno == ENOSYS);
    const char *req = getenv("OVL2_REQUIRE_OPENAT2");
    CHECK(ok || !(req && strcmp(req, "1") == 0), "openat2 is required (OVL2_REQUIRE_OPENAT2=1) but missing");
    if (!ok) printf("NOTE openat2 unavailable (valgrind?): successful applies are checked in the native run\n");
    return ok;
}

static void test_archives(void) {
    char home[PATH_MAX], src[PATH_MAX], tars[PATH_MAX], p[PATH_MAX * 2];
    path_in(home, "store-archive");
    path_in(src, "src");
    path_in(tars, "tars");
    mkdir(tars, 0755);
    /* Base content, then a child that modifies, adds and deletes (with a whiteout). */
    CHECK(sh("mkdir -p %s/base/dir && printf hello > %s/base/hello.txt", src, src), "make base tree");
    CHECK(sh("printf 12345 > %s/base/dir/a.txt && mkdir -p %s/child/dir", src, src), "make base tree 2");
    CHECK(sh("printf changed > %s/child/hello.txt && printf new > %s/child/new.txt", src, src), "make child tree");
    CHECK(sh(": > %s/child/dir/.wh.a.txt && test -d %s/child", src, src), "make whiteout");
    snprintf(p, sizeof p, "%s/base", src);
    CHECK(sh("tar --numeric-owner -C %s -cf %s/base.tar .", p, tars), "tar base");
    CHECK(sh("tar --numeric-owner -C %s -czf %s/base.tar.gz .", p, tars), "tar base gz");
    snprintf(p, sizeof p, "%s/child", src);
    CHECK(sh("tar --numeric-owner -C %s -cf %s/child.tar .", p, tars), "tar child");
    CHECK(sh("head -c 700 %s/base.tar > %s/truncated.tar", tars, tars), "truncated tar");
    CHECK(sh("printf 'BZh91AY&SY' > %s/x.bz2%s", tars, ""), "bzip2 magic");
    CHECK(sh("yes 'not a tar archive' | head -c 2048 > %s/garbage.tar%s", tars, ""), "garbage");

    ovl2_driver *d = NULL;
    ovl2_options o;
    ovl2_options_init(&o);
    o.sync = false;
    OK(ovl2_open(home, &o, &d, &e_), "open for archives");
    if (!d) return;
    OK(ovl2_create(d, "base", NULL, NULL, &e_), "create base");
    OK(ovl2_create(d, "child", "base", NULL, &e_), "create child");
    OK(ovl2_create(d, "gz", NULL, NULL, &e_), "create gz");

    int can_apply = have_openat2();
    int fd, pfd[2];
    pthread_t th;
    ovl2_apply_stats *st = NULL;
    uint64_t size = 0;
    if (can_apply) {
        /* apply from a file fd */
        snprintf(p, sizeof p, "%s/base.tar", tars);
        fd = open(p, O_RDONLY);
        OK(ovl2_apply_diff(d, "base", NULL, fd, &st, &e_), "apply base from a file");
        close(fd);
        if (st) {
            CHECK(st->size == 10, "apply size %llu, want 10", (unsigned long long)st->size);
            CHECK(st->compression == OVL2_COMPRESSION_NONE, "compression none");
            CHECK(st->files == 2 && st->dirs >= 1, "files %llu dirs %llu", (unsigned long long)st->files,
                  (unsigned long long)st->dirs);
            CHECK(st->digest && strncmp(st->digest, "sha256:", 7) == 0 && strlen(st->digest) == 71, "digest %s",
                  st->digest);
        }
        OK(ovl2_diff_size(d, "base", NULL, &size, &e_), "diff_size base");
        CHECK(st && size == st->size, "diff_size %llu equals apply size", (unsigned long long)size);
        ovl2_apply_stats_free(st);

        /* apply from a pipe fed by another thread, with stats not wanted */
        CHECK(pipe(pfd) == 0, "pipe");
        snprintf(p, sizeof p, "%s/child.tar", tars);
        struct feeder fe = {pfd[1], p};
        pthread_create(&th, NULL, feed_main, &fe);
        OK(ovl2_apply_diff(d, "child", "base", pfd[0], NULL, &e_), "apply child from a pipe");
        pthread_join(th, NULL);
        close(pfd[0]);
        char merged_hello[PATH_MAX * 2];
        snprintf(merged_hello, sizeof merged_hello, "%s/child/diff", home);
        CHECK(file_is(merged_hello, "hello.txt", "changed") && file_is(merged_hello, "new.txt", "new"), "child content");
        struct stat sb;
        snprintf(p, sizeof p, "%s/child/diff/dir/a.txt", home);
        CHECK(lstat(p, &sb) == 0 && S_ISCHR(sb.st_mode) && sb.st_rdev == 0, "whiteout became a 0/0 char device");

        /* gzip */
        snprintf(p, sizeof p, "%s/base.tar.gz", tars);
        fd = open(p, O_RDONLY);
        OK(ovl2_apply_diff(d, "gz", NULL, fd, &st, &e_), "apply gzip");
        close(fd);
        CHECK(st && st->compression == OVL2_COMPRESSION_GZIP && st->size == 10, "gzip stats");
        ovl2_apply_stats_free(st);
    } else {
        /* Seed the same trees by hand: base's files, child's changes and its whiteout. */
        CHECK(sh("cp -a %s/base/. %s/base/diff/", src, home), "seed base");
        CHECK(sh("cp -a %s/child/hello.txt %s/child/diff/", src, home) &&
                  sh("cp -a %s/child/new.txt %s/child/diff/", src, home) &&
                  sh("mkdir %s/child/diff/dir && mknod %s/child/diff/dir/a.txt c 0 0", home, home),
              "seed child");
        OK(ovl2_diff_size(d, "base", NULL, &size, &e_), "diff_size base");
        CHECK(size == 10, "diff_size %llu", (unsigned long long)size);
    }

    /* changes */
    ovl2_change_list *cl = NULL;
    OK(ovl2_changes(d, "child", "base", &cl, &e_), "changes child");
    if (cl) {
        CHECK(has_change(cl, "/hello.txt", OVL2_CHANGE_KIND_MODIFY), "hello.txt modified");
        CHECK(has_change(cl, "/new.txt", OVL2_CHANGE_KIND_ADD), "new.txt added");
        CHECK(has_change(cl, "/dir/a.txt", OVL2_CHANGE_KIND_DELETE), "dir/a.txt deleted");
        for (size_t i = 1; i < cl->len; i++)
            CHECK(strcmp(cl->items[i - 1].path, cl->items[i].path) < 0, "changes sorted");
    }
    ovl2_change_list_free(cl);
    OK(ovl2_changes(d, "base", NULL, &cl, &e_), "changes base");
    CHECK(cl && cl->len == 3 && has_change(cl, "/dir/a.txt", OVL2_CHANGE_KIND_ADD), "base adds 3 paths");
    ovl2_change_list_free(cl);

    /* diff to a file, re-apply it, and get the same bytes back */
    char exp1[PATH_MAX], exp2[PATH_MAX];
    snprintf(exp1, sizeof exp1, "%s/child-export.tar", tars);
    snprintf(exp2, sizeof exp2, "%s/child-export2.tar", tars);
    fd = open(exp1, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ovl2_diff_stats *ds = NULL;
    OK(ovl2_diff(d, "child", "base", fd, &ds, &e_), "diff child to a file");
    close(fd);
    CHECK(ds && strncmp(ds->digest, "sha256:", 7) == 0 && ds->entries >= 4, "diff stats");
    if (can_apply) {
        OK(ovl2_create(d, "child2", "base", NULL, &e_), "create child2");
        fd = open(exp1, O_RDONLY);
        OK(ovl2_apply_diff(d, "child2", "base", fd, &st, &e_), "apply the export");
        close(fd);
        CHECK(ds && st && strcmp(ds->digest, st->digest) == 0 && ds->tar_bytes == st->tar_bytes,
              "apply reads the digest diff wrote");
        ovl2_apply_stats_free(st);
        fd = open(exp2, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ovl2_diff_stats *ds2 = NULL;
        OK(ovl2_diff(d, "child2", "base", fd, &ds2, &e_), "diff child2");
        close(fd);
        CHECK(ds && ds2 && strcmp(ds->digest, ds2->digest) == 0, "export -> apply -> export is byte-identical");
        CHECK(sh("cmp -s %s %s", exp1, exp2), "the two exports are the same bytes");
        ovl2_diff_stats_free(ds2);
    }

    /* diff_with: digest off leaves it NULL; same bytes */
    ovl2_diff_opts dopt;
    CHECK(ovl2_diff_opts_init(NULL) == OVL2_STATUS_INVALID_ARGUMENT, "diff_opts_init(NULL)");
    CHECK(ovl2_diff_opts_init(&dopt) == OVL2_STATUS_OK && dopt.size == sizeof dopt && dopt.digest, "diff_opts_init");
    dopt.digest = false;
    snprintf(exp2, sizeof exp2, "%s/child-nodigest.tar", tars);
    fd = open(exp2, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ovl2_diff_stats *dsn = NULL;
    OK(ovl2_diff_with(d, "child", "base", fd, &dopt, &dsn, &e_), "diff_with digest off");
    close(fd);
    CHECK(dsn && dsn->digest == NULL && ds && dsn->tar_bytes == ds->tar_bytes, "no digest, same length");
    CHECK(sh("cmp -s %s %s", exp1, exp2), "digest off writes the same bytes");
    ovl2_diff_stats_free(dsn);
    OK(ovl2_diff_with(d, "child", "base", open("/dev/null", O_WRONLY | O_CLOEXEC), NULL, NULL, &e_),
       "diff_with NULL opts");
    dopt.size = 3;
    FAILS(ovl2_diff_with(d, "child", "base", 1, &dopt, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "diff_with bad size");

    /* apply_diff_with: the expected DiffID is enforced */
    ovl2_apply_opts aopt;
    CHECK(ovl2_apply_opts_init(NULL) == OVL2_STATUS_INVALID_ARGUMENT, "apply_opts_init(NULL)");
    CHECK(ovl2_apply_opts_init(&aopt) == OVL2_STATUS_OK && aopt.size == sizeof aopt && aopt.expect_digest == NULL &&
              !aopt.set_sync,
          "apply_opts_init");
    OK(ovl2_create(d, "want", "base", NULL, &e_), "create want");
    aopt.expect_digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    fd = open(exp1, O_RDONLY);
    FAILS(ovl2_apply_diff_with(d, "want", "base", fd, &aopt, NULL, &e_), can_apply ? OVL2_STATUS_CORRUPT_ARCHIVE
                                                                                  : OVL2_STATUS_UNSUPPORTED,
          -1, "apply with the wrong expected digest");
    close(fd);
    if (can_apply && ds) {
        aopt.expect_digest = ds->digest;
        aopt.set_sync = true;
        aopt.sync = true;
        fd = open(exp1, O_RDONLY);
        OK(ovl2_apply_diff_with(d, "want", "base", fd, &aopt, &st, &e_), "apply with the right expected digest");
        close(fd);
        CHECK(st && strcmp(st->digest, ds->digest) == 0, "expected digest applied");
        ovl2_apply_stats_free(st);
    }
    aopt.size = 0;
    FAILS(ovl2_apply_diff_with(d, "want", "base", 0, &aopt, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "apply_diff_with bad size");

    /* diff to a pipe drained by another thread, stats not wanted */
    CHECK(pipe(pfd) == 0, "pipe");
    struct drain dr = {pfd[0], 0};
    pthread_create(&th, NULL, drain_main, &dr);
    OK(ovl2_diff(d, "child", "base", pfd[1], NULL, &e_), "diff child to a pipe");
    close(pfd[1]);
    pthread_join(th, NULL);
    close(pfd[0]);
    CHECK(ds && dr.bytes == (long long)ds->tar_bytes, "pipe got %lld bytes", dr.bytes);
    ovl2_diff_stats_free(ds);

    /* A reader that goes away: EPIPE, not a crash (SIGPIPE ignored, as documented). */
    signal(SIGPIPE, SIG_IGN);
    CHECK(pipe(pfd) == 0, "pipe");
    close(pfd[0]);
    FAILS(ovl2_diff(d, "child", "base", pfd[1], NULL, &e_), OVL2_STATUS_IO, EPIPE, "diff to a closed pipe");
    close(pfd[1]);

    /* errors */
    OK(ovl2_create(d, "bad", NULL, NULL, &e_), "create bad");
    char bad[PATH_MAX * 2];
    snprintf(bad, sizeof bad, "%s/garbage.tar", tars);
    fd = open(bad, O_RDONLY);
    FAILS(ovl2_apply_diff(d, "bad", NULL, fd, &st, &e_), OVL2_STATUS_CORRUPT_ARCHIVE, -1, "apply garbage");
    close(fd);
    CHECK(st == NULL, "apply clears *out on failure");
    snprintf(bad, sizeof bad, "%s/truncated.tar", tars);
    fd = open(bad, O_RDONLY);
    FAILS(ovl2_apply_diff(d, "bad", NULL, fd, NULL, &e_), OVL2_STATUS_CORRUPT_ARCHIVE, -1, "apply truncated tar");
    close(fd);
    snprintf(bad, sizeof bad, "%s/x.bz2", tars);
    fd = open(bad, O_RDONLY);
    FAILS(ovl2_apply_diff(d, "bad", NULL, fd, NULL, &e_), OVL2_STATUS_UNSUPPORTED, -1, "apply bzip2");
    close(fd);
    OK(ovl2_exists(d, "bad", &(bool){false}, &e_), "bad still exists");
    OK(ovl2_changes(d, "bad", NULL, &cl, &e_), "changes of bad");
    CHECK(cl && cl->len == 0, "failed applies left the layer empty");
    ovl2_change_list_free(cl);
    snprintf(p, sizeof p, "%s/base.tar", tars);
    fd = open(p, O_RDONLY);
    FAILS(ovl2_apply_diff(d, "base", NULL, fd, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "apply to a layer with content");
    lseek(fd, 0, SEEK_SET);
    FAILS(ovl2_apply_diff(d, "child", "ghost", fd, NULL, &e_), OVL2_STATUS_NOT_FOUND, ENOENT,
          "apply onto a parent that does not exist");
    lseek(fd, 0, SEEK_SET);
    FAILS(ovl2_apply_diff(d, "nope", NULL, fd, NULL, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "apply to missing layer");
    close(fd);
    FAILS(ovl2_apply_diff(d, "bad", NULL, -1, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "apply(fd -1)");
    FAILS(ovl2_apply_diff(d, NULL, NULL, 0, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "apply(NULL id)");
    FAILS(ovl2_apply_diff(NULL, "bad", NULL, 0, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "apply(NULL driver)");
    FAILS(ovl2_apply_diff(d, "bad", NULL, 1 << 30, NULL, &e_), OVL2_STATUS_IO, EBADF, "apply(closed fd)");
    FAILS(ovl2_diff(d, "child", "base", -5, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "diff(fd -5)");
    FAILS(ovl2_diff(d, NULL, NULL, 1, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "diff(NULL id)");
    FAILS(ovl2_diff(NULL, "child", NULL, 1, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "diff(NULL driver)");
    FAILS(ovl2_diff(d, "nope", NULL, 1, NULL, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "diff of missing layer");
    /* Against no parent, a layer that has one exports as Docker's naive diff: the whole
     * merged tree (needs a mount, so root). */
    if (geteuid() == 0) {
        char naive[PATH_MAX];
        snprintf(naive, sizeof naive, "%s/child-naive.tar", tars);
        fd = open(naive, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        OK(ovl2_diff(d, "child", NULL, fd, &ds, &e_), "naive diff of child against nothing");
        close(fd);
        CHECK(sh("tar -tf %s | grep -qx ./new.txt%s", naive, "") || sh("tar -tf %s | grep -qx new.txt%s", naive, ""),
              "naive export has new.txt");
        CHECK(sh("tar -tf %s | grep -q a.txt && exit 1 || exit 0%s", naive, ""), "naive export has no deleted a.txt");
        ovl2_diff_stats_free(ds);
    }
    FAILS(ovl2_diff_size(d, "child", "base", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "diff_size(NULL out)");
    FAILS(ovl2_diff_size(d, "nope", NULL, &size, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "diff_size of missing");
    CHECK(size == 0, "diff_size clears *out on failure");
    FAILS(ovl2_diff_size(NULL, "child", NULL, &size, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "diff_size(NULL driver)");
    FAILS(ovl2_changes(d, "child", "base", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "changes(NULL out)");
    FAILS(ovl2_changes(d, "nope", NULL, &cl, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "changes of missing");
    CHECK(cl == NULL, "changes clears *out on failure");
    FAILS(ovl2_changes(NULL, "child", NULL, &cl, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "changes(NULL driver)");
    FAILS(ovl2_changes(d, NULL, NULL, &cl, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "changes(NULL id)");
    /* usage: a plain struct, zeroed on failure. */
    ovl2_layer_usage u = {1, 1};
    OK(ovl2_usage(d, "base", &u, &e_), "usage of base");
    CHECK(u.inodes == 4 && u.bytes > 0, "base uses %llu bytes in %llu inodes", (unsigned long long)u.bytes,
          (unsigned long long)u.inodes);
    FAILS(ovl2_usage(d, "nope", &u, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "usage of missing");
    CHECK(u.bytes == 0 && u.inodes == 0, "usage clears *out on failure");
    FAILS(ovl2_usage(d, "base", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "usage(NULL out)");
    FAILS(ovl2_usage(NULL, "base", &u, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "usage(NULL driver)");

    /* import_chain: one fd per layer (a file and a pipe), one list back, one free. */
    ovl2_import_opts io;
    CHECK(ovl2_import_opts_init(&io) == OVL2_STATUS_OK && io.size == sizeof io && !io.set_sync,
          "import_opts defaults");
    CHECK(ovl2_import_opts_init(NULL) == OVL2_STATUS_INVALID_ARGUMENT, "import_opts_init(NULL)");
    ovl2_import_list *il = (ovl2_import_list *)&size;
    int fds[2] = {-1, -1};
    FAILS(ovl2_import_chain(d, "img", NULL, fds, 2, NULL, &il, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "import_chain with a negative fd");
    CHECK(il == NULL, "import_chain clears *out on failure");
    FAILS(ovl2_import_chain(d, "img", NULL, NULL, 0, NULL, &il, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "import_chain(NULL fds)");
    FAILS(ovl2_import_chain(d, "img", NULL, fds, 0, NULL, &il, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "import_chain with no tars");
    FAILS(ovl2_import_chain(NULL, "img", NULL, fds, 2, NULL, &il, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL,
          "import_chain(NULL driver)");
    if (can_apply) {
        snprintf(p, sizeof p, "%s/base.tar", tars);
        fds[0] = open(p, O_RDONLY);
        CHECK(pipe(pfd) == 0, "pipe");
        snprintf(p, sizeof p, "%s/child.tar", tars);
        struct feeder fe2 = {pfd[1], p};
        pthread_create(&th, NULL, feed_main, &fe2);
        fds[1] = pfd[0];
        io.set_sync = 1;
        io.sync = 0;
        OK(ovl2_import_chain(d, "img", NULL, fds, 2, &io, &il, &e_), "import_chain from a file and a pipe");
        pthread_join(th, NULL);
        close(fds[0]);
        close(pfd[0]);
        CHECK(il && il->len == 2 && strcmp(il->items[0].id, "img-1") == 0 && strcmp(il->items[1].id, "img") == 0 &&
                  il->items[0].stats.size == 10 && il->items[1].stats.whiteouts == 1 &&
                  strncmp(il->items[1].stats.digest, "sha256:", 7) == 0,
              "import_chain lists img-1 then img with their stats");
        ovl2_import_list_free(il);
        snprintf(p, sizeof p, "%s/garbage.tar", tars);
        fds[0] = open(p, O_RDONLY);
        FAILS(ovl2_import_chain(d, "badimg", "img", fds, 1, NULL, &il, &e_), OVL2_STATUS_CORRUPT_ARCHIVE, -1,
              "import_chain of garbage");
        close(fds[0]);
        CHECK(il == NULL, "import_chain clears *out on a failed apply");
        bool ib = true;
        OK(ovl2_exists(d, "badimg", &ib, &e_), "exists badimg");
        CHECK(!ib, "a failed import leaves no layer");
    }
    ovl2_import_list_free(NULL);
    ovl2_apply_stats_free(NULL);
    ovl2_diff_stats_free(NULL);
    ovl2_change_list_free(NULL);
    ovl2_close(d);
}

/* Container layers: <ctr>-init with init entries, then <ctr>; every argument error. */
static void test_containers(void) {
    if (!can_mount()) return;
    char home[PATH_MAX], want[PATH_MAX * 2];
    path_in(home, "store-ctr");
    ovl2_driver *d = NULL;
    ovl2_options o;
    ovl2_options_init(&o);
    o.sync = false;
    OK(ovl2_open(home, &o, &d, &e_), "open for containers");
    if (!d) return;
    const char *home_abs = ovl2_home(d);
    OK(ovl2_create(d, "img", NULL, NULL, &e_), "create img");

    ovl2_container_opts co;
    CHECK(ovl2_container_opts_init(&co) == OVL2_STATUS_OK && co.size == sizeof co && !co.no_default_entries &&
              co.n_entries == 0 && co.entries == NULL && !co.remap_root && co.mount_label == NULL,
          "container opts defaults");
    CHECK(ovl2_container_opts_init(NULL) == OVL2_STATUS_INVALID_ARGUMENT, "container_opts_init(NULL)");

    FAILS(ovl2_create_container(NULL, "c", "img", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create_container(NULL driver)");
    FAILS(ovl2_create_container(d, NULL, "img", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create_container(NULL ctr)");
    FAILS(ovl2_create_container(d, "c", NULL, NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create_container(NULL image)");
    FAILS(ovl2_create_container(d, "../c", "img", NULL, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "create_container(bad id)");
    FAILS(ovl2_create_container(d, "c", "missing", NULL, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "create_container(missing image)");
    FAILS_NOERR(ovl2_create_container(d, "c", "missing", NULL, NULL), OVL2_STATUS_NOT_FOUND, "create_container(missing image)");
    ovl2_init_entry bad[] = {
        {"relative", OVL2_INIT_FILE, NULL},
        {"/x", 7, NULL},
        {"/x", OVL2_INIT_SYMLINK, NULL},
        {NULL, OVL2_INIT_DIR, NULL},
        {"/etc/../../escape", OVL2_INIT_FILE, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ovl2_container_opts_init(&co);
        co.entries = &bad[i];
        co.n_entries = 1;
        FAILS(ovl2_create_container(d, "c", "img", &co, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "bad init entry");
    }
    ovl2_container_opts_init(&co);
    co.n_entries = 2;
    FAILS(ovl2_create_container(d, "c", "img", &co, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "NULL entries, n_entries 2");
    co.n_entries = 0;
    co.size = 3;
    FAILS(ovl2_create_container(d, "c", "img", &co, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "container opts size 3");
    bool b = true;
    OK(ovl2_exists(d, "c-init", &b, &e_), "exists c-init");
    CHECK(!b, "refused creates left no init layer");

    /* Docker's entries plus two of ours, owned by a remapped root. */
    ovl2_container_opts_init(&co);
    ovl2_init_entry extra[] = {{"/run/secrets", OVL2_INIT_DIR, NULL}, {"/etc/motd", OVL2_INIT_SYMLINK, "/dev/null"}};
    co.entries = extra;
    co.n_entries = 2;
    co.remap_root = true;
    co.root_uid = 100000;
    co.root_gid = 100001;
    OK(ovl2_create_container(d, "c1", "img", &co, &e_), "create_container c1");
    FAILS(ovl2_create_container(d, "c1", "img", NULL, &e_), OVL2_STATUS_EXISTS, EEXIST, "create_container twice");
    char *par = NULL;
    OK(ovl2_parent(d, "c1", &par, &e_), "parent of c1");
    CHECK(par && strcmp(par, "c1-init") == 0, "c1 sits on c1-init, got %s", par ? par : "(null)");
    ovl2_string_free(par);
    struct stat st;
    snprintf(want, sizeof want, "%s/c1-init/diff/run/secrets", home_abs);
    CHECK(stat(want, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 100000 && st.st_gid == 100001,
          "extra dir owned by the remapped root");
    snprintf(want, sizeof want, "%s/c1-init/diff/etc/hosts", home_abs);
    CHECK(stat(want, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0755 && st.st_size == 0,
          "Docker's empty 0755 /etc/hosts");
    char target[64] = {0};
    snprintf(want, sizeof want, "%s/c1-init/diff/etc/motd", home_abs);
    CHECK(readlink(want, target, sizeof target - 1) == 9 && strcmp(target, "/dev/null") == 0, "extra symlink");
    snprintf(want, sizeof want, "%s/c1-init/committed", home_abs);
    CHECK(access(want, F_OK) == 0, "init layer committed once the container sits on it");

    /* Only our entries. */
    ovl2_container_opts_init(&co);
    ovl2_init_entry only = {"/only", OVL2_INIT_FILE, NULL};
    co.no_default_entries = true;
    co.entries = &only;
    co.n_entries = 1;
    OK(ovl2_create_container(d, "c2", "img", &co, &e_), "create_container c2 without defaults");
    snprintf(want, sizeof want, "%s/c2-init/diff/only", home_abs);
    CHECK(access(want, F_OK) == 0, "c2's only entry");
    snprintf(want, sizeof want, "%s/c2-init/diff/.dockerenv", home_abs);
    CHECK(access(want, F_OK) != 0, "no default entries in c2");

    /* Removal: refused while mounted unless forced. */
    char *p = NULL;
    OK(ovl2_get(d, "c1", NULL, &p, &e_), "mount c1");
    ovl2_string_free(p);
    FAILS(ovl2_remove_container(d, "c1", false, &e_), OVL2_STATUS_BUSY, EBUSY, "remove mounted container");
    OK(ovl2_remove_container(d, "c1", true, &e_), "force-remove mounted container");
    OK(ovl2_exists(d, "c1", &b, &e_), "exists c1");
    CHECK(!b, "c1 gone");
    OK(ovl2_exists(d, "c1-init", &b, &e_), "exists c1-init");
    CHECK(!b, "c1-init gone");
    OK(ovl2_remove_container(d, "c2", false, &e_), "remove c2");
    FAILS(ovl2_remove_container(d, "c2", false, &e_), OVL2_STATUS_NOT_FOUND, ENOENT, "remove container twice");
    FAILS(ovl2_remove_container(NULL, "c2", false, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "remove_container(NULL driver)");
    FAILS(ovl2_remove_container(d, NULL, false, &e_), OVL2_STATUS_INVALID_ARGUMENT, EINVAL, "remove_container(NULL ctr)");
    ovl2_mount_list *ml = NULL;
    OK(ovl2_mounts(d, &ml, &e_), "mounts after container tests");
    CHECK(ml && ml->len == 0, "nothing left mounted");
    ovl2_mount_list_free(ml);
    ovl2_close(d);
}

/* Issue 10, item 10: a home that is not UTF-8 (C strings are bytes) opens, and every path
 * that comes back (ovl2_home, metadata, get) is its exact bytes, not U+FFFD. */
static void test_non_utf8_home(void) {
    char home[PATH_MAX], real[PATH_MAX], buf[PATH_MAX * 2];
    path_in(home, "h\xff\xfeome");
    ovl2_driver *d = NULL;
    ovl2_options o;
    ovl2_options_init(&o);
    o.sync = false;
    OK(ovl2_open(home, &o, &d, &e_), "open a non-UTF-8 home");
    if (!d) return;
    CHECK(realpath(home, real) && strcmp(ovl2_home(d), real) == 0, "home() = %s", ovl2_home(d));
    CHECK(strstr(ovl2_home(d), "/h\xff\xfeome") != NULL, "home() keeps the bytes: %s", ovl2_home(d));
    OK(ovl2_create(d, "base", NULL, NULL, &e_), "create base");
    OK(ovl2_create_rw(d, "ctr", "base", NULL, &e_), "create_rw ctr");
    ovl2_metadata *m = NULL;
    OK(ovl2_layer_metadata(d, "ctr", &m, &e_), "metadata of ctr");
    if (m) {
        snprintf(buf, sizeof buf, "%s/base/diff", real);
        CHECK(m->lower_dir && strcmp(m->lower_dir, buf) == 0, "LowerDir %s", m->lower_dir);
        snprintf(buf, sizeof buf, "%s/ctr/diff", real);
        CHECK(strcmp(m->upper_dir, buf) == 0, "UpperDir %s", m->upper_dir);
        snprintf(buf, sizeof buf, "%s/ctr/work", real);
        CHECK(strcmp(m->work_dir, buf) == 0, "WorkDir %s", m->work_dir);
        snprintf(buf, sizeof buf, "%s/ctr/merged", real);
        CHECK(strcmp(m->merged_dir, buf) == 0, "MergedDir %s", m->merged_dir);
        struct stat st;
        CHECK(stat(m->upper_dir, &st) == 0 && S_ISDIR(st.st_mode), "UpperDir names the real directory");
    }
    ovl2_metadata_free(m);
    /* A base layer's get is its diff dir and needs no mount (so no root). */
    char *p = NULL;
    OK(ovl2_get(d, "base", NULL, &p, &e_), "get base");
    snprintf(buf, sizeof buf, "%s/base/diff", real);
    CHECK(p && strcmp(p, buf) == 0, "get base = %s", p ? p : "(null)");
    ovl2_string_free(p);
    OK(ovl2_put(d, "base", &e_), "put base");
    ovl2_close(d);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        snprintf(work, sizeof work, "%s", argv[1]);
        mkdir(work, 0700);
    } else {
        snprintf(work, sizeof work, "%s/ovl2-ctest-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(work)) {
            perror("mkdtemp");
            return 2;
        }
    }
    test_static_strings();
    test_null_tolerance();
    test_open_errors();
    test_open_modes();
    test_layers();
    test_non_utf8_home();
    test_max_depth();
    test_threads();
    test_mounts();
    test_fork_mount();
    test_archives();
    test_containers();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
