/*
 * A disk that fills up or turns read-only for a few records, for tests: preloaded (LD_PRELOAD),
 * it makes write() and fdatasync()/fsync() on one file fail for chosen records.
 *
 * Settings (environment):
 *   FULL_DISK_PATH      the file to fail (compared with the descriptor's /proc/self/fd target)
 *   FULL_DISK_RECORDS   FROM-TO: the records (counted from 1 by the writes that start a line
 *                       with '{') whose writes fail; later records succeed again (space is back)
 *   FULL_DISK_ERRNO     ENOSPC (default) or EROFS
 * The first failing record first gets half its bytes written, as on a disk that fills up in the
 * middle of a record, so the writer must cut the partial record off again.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);
static long records;
static int half_written;

static int is_journal(int fd) {
    const char *path = getenv("FULL_DISK_PATH");
    if (!path || fd <= 2) return 0;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = '\0';
    return strcmp(target, path) == 0;
}

static int failing_record(void) {
    long from = 0, to = -1;
    const char *range = getenv("FULL_DISK_RECORDS");
    if (range) sscanf(range, "%ld-%ld", &from, &to);
    return records >= from && records <= to;
}

static int fail(void) {
    const char *name = getenv("FULL_DISK_ERRNO");
    errno = name && strcmp(name, "EROFS") == 0 ? EROFS : ENOSPC;
    return -1;
}

ssize_t write(int fd, const void *buf, size_t count) {
    if (!real_write) real_write = dlsym(RTLD_NEXT, "write");
    if (!is_journal(fd)) return real_write(fd, buf, count);
    if (count > 0 && ((const char *)buf)[0] == '{') records++;
    if (!failing_record()) return real_write(fd, buf, count);
    if (!half_written && count > 1) {
        half_written = 1;
        return real_write(fd, buf, count / 2);
    }
    return fail();
}

int fdatasync(int fd) {
    if (!real_fdatasync) real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    if (is_journal(fd) && failing_record()) return fail();
    return real_fdatasync(fd);
}

int fsync(int fd) {
    if (!real_fsync) real_fsync = dlsym(RTLD_NEXT, "fsync");
    if (is_journal(fd) && failing_record()) return fail();
    return real_fsync(fd);
}
