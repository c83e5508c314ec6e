/*
 * vclock: a virtual clock for the QEMU process that runs a counting worker (LD_PRELOAD on the
 * host side; QEMU's -U LD_PRELOAD keeps it away from the emulated program).
 *
 * qemu-user serves the guest's clock_gettime/gettimeofday/time system calls by calling the host
 * C library's functions, so replacing them here replaces the clock the guest sees. Each read on a
 * thread advances that thread's virtual time by VCLOCK_STEP_NS, from the real time at the
 * thread's first read: code that acts on elapsed time (onnxruntime 1.32 runs extra telemetry
 * code in InferenceSession::Run once every 2 s of wall time) then acts the same on every run,
 * however loaded the machine is. Sleeping and waiting are untouched (real time).
 *
 * Build: gcc -shared -fPIC -O2 vclock.c -o libvclock.so -ldl
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define VCLOCK_STEP_NS 1000
#define NCLOCKS 16

static __thread int64_t base_ns[NCLOCKS];
static __thread uint64_t reads;

static int64_t real_ns(clockid_t clock)
{
    struct timespec ts;
    if (syscall(SYS_clock_gettime, clock, &ts) != 0) {
        return -1;
    }
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t virtual_ns(clockid_t clock)
{
    /* Per-process and per-thread CPU clocks (negative ids) share one slot. */
    int slot = (clock >= 0 && clock < NCLOCKS) ? (int)clock : NCLOCKS - 1;
    if (base_ns[slot] == 0) {
        int64_t now = real_ns(clock);
        if (now < 0) {
            return -1;
        }
        base_ns[slot] = now > 0 ? now : 1;
    }
    reads++;
    return base_ns[slot] + (int64_t)(reads * VCLOCK_STEP_NS);
}

int clock_gettime(clockid_t clock, struct timespec *ts)
{
    int64_t ns = virtual_ns(clock);
    if (ns < 0) {
        return (int)syscall(SYS_clock_gettime, clock, ts); /* unknown clock: its own error */
    }
    ts->tv_sec = ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
    return 0;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    int64_t ns = virtual_ns(CLOCK_REALTIME); /* tv is never NULL here (glibc: nonnull) */
    tv->tv_sec = ns / 1000000000;
    tv->tv_usec = (ns % 1000000000) / 1000;
    if (tz != NULL) {
        struct timezone *zone = tz;
        zone->tz_minuteswest = 0;
        zone->tz_dsttime = 0;
    }
    return 0;
}

time_t time(time_t *out)
{
    time_t now = (time_t)(virtual_ns(CLOCK_REALTIME) / 1000000000);
    if (out != NULL) {
        *out = now;
    }
    return now;
}
