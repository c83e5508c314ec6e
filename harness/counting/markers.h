/*
 * The worker's marker system calls, as a QEMU plugin sees them: one source for insn_count.c and
 * harness/timing/timing_plugin.c (both compile with -I harness/counting).
 *
 * The worker (harness/worker/markers.py) brackets its timed loop with
 *     lseek(-1, MARKER_BEGIN, SEEK_SET)   ...   lseek(-1, MARKER_END, SEEK_SET)
 * Both fail with EBADF on any system (fd -1), so they are harmless without a plugin; with one,
 * the syscall callback sees the syscall number, fd -1 and the 64-bit magic offset, which no
 * other program passes.
 */
#ifndef HARNESS_MARKERS_H
#define HARNESS_MARKERS_H

#include <stdint.h>
#include <string.h>

/* Keep in step with harness/worker/markers.py (tests compare them). */
#define MARKER_FD 0xffffffffu
#define MARKER_BEGIN UINT64_C(0x68726e734245474e) /* "hrnsBEGN" */
#define MARKER_END UINT64_C(0x68726e73454e442e)   /* "hrnsEND." */

enum marker { NOT_A_MARKER, BEGIN_MARKER, END_MARKER };

/* lseek's syscall number on the target QEMU runs (-1: unknown, pass syscall=N). */
static inline int64_t marker_syscall_number(const char *target_name)
{
    if (strcmp(target_name, "aarch64") == 0) {
        return 62;
    }
    if (strcmp(target_name, "x86_64") == 0) {
        return 8;
    }
    return -1;
}

/* Which marker a system call is, from the syscall callback's number and first two arguments. */
static inline enum marker marker_of(int64_t lseek_number, int64_t num, uint64_t a1, uint64_t a2)
{
    if (num != lseek_number || (uint32_t)a1 != MARKER_FD) {
        return NOT_A_MARKER;
    }
    return a2 == MARKER_BEGIN ? BEGIN_MARKER : a2 == MARKER_END ? END_MARKER : NOT_A_MARKER;
}

#endif
