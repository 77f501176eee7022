/* Linux system calls that Swift's Glibc module does not expose without _GNU_SOURCE.
 * Each wrapper calls syscall(2) directly, so the declarations do not depend on which
 * feature macros were in force when Glibc was imported. Each returns -1 and sets errno
 * on failure, as the system call does. */
#ifndef IMGTOOL_CSYSTEM_SHIM_H
#define IMGTOOL_CSYSTEM_SHIM_H
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* renameat2(2) flag: fail with EEXIST instead of replacing the target (Linux 3.15). */
#define IMGTOOL_RENAME_NOREPLACE 1u

static inline int imgtool_renameat2(int olddirfd, const char *oldpath, int newdirfd,
                                    const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

/* gettid(2): the calling thread's id, which setpriority(2) takes to change one thread. */
static inline int imgtool_gettid(void) {
    return (int)syscall(SYS_gettid);
}

/* prctl(2) PR_SET_NAME: names the calling thread (at most 15 bytes and a NUL). prctl is
 * variadic, which Swift cannot call. */
static inline int imgtool_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
}

/* fallocate(2) with mode 0 reserves blocks and extends the size (Linux 2.6.23). */
static inline int imgtool_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    return (int)syscall(SYS_fallocate, fd, mode, (off_t)offset, (off_t)length);
}

/* sync_file_range(2) (Linux 2.6.17); SYNC_FILE_RANGE_WRITE starts writeback of the
 * range's dirty pages without waiting for it. */
#define IMGTOOL_SYNC_FILE_RANGE_WRITE 2u

static inline int imgtool_sync_file_range(int fd, int64_t offset, int64_t length, unsigned int flags) {
    return (int)syscall(SYS_sync_file_range, fd, (off_t)offset, (off_t)length, flags);
}

/* open(2) flag O_DIRECT: transfers go between the caller's buffer and the device, past
 * the page cache. Its value differs between architectures. */
#if defined(__aarch64__) || defined(__arm__)
#define IMGTOOL_O_DIRECT 0200000
#elif defined(__powerpc__)
#define IMGTOOL_O_DIRECT 0400000
#else
#define IMGTOOL_O_DIRECT 040000
#endif

/* openat2(2) (Linux 5.6) with struct open_how laid out as in <linux/openat2.h>. */
struct imgtool_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};
#define IMGTOOL_RESOLVE_NO_XDEV 0x01u
#define IMGTOOL_RESOLVE_NO_MAGICLINKS 0x02u
#define IMGTOOL_RESOLVE_NO_SYMLINKS 0x04u
#define IMGTOOL_RESOLVE_BENEATH 0x08u
#define IMGTOOL_RESOLVE_IN_ROOT 0x10u

static inline int imgtool_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode,
                                  uint64_t resolve) {
#ifdef SYS_openat2
    struct imgtool_open_how how = { flags, mode, resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* The peer of a connected Unix socket (SO_PEERCRED); struct ucred needs _GNU_SOURCE,
 * so the same layout is declared here. */
struct imgtool_peer_credentials {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

static inline int imgtool_peer_credentials(int fd, struct imgtool_peer_credentials *out) {
    socklen_t length = sizeof *out;
    return getsockopt(fd, SOL_SOCKET, 17 /* SO_PEERCRED */, out, &length);
}
#endif
