/*
 * insn_count: a QEMU TCG plugin that counts the guest instructions executed between two marker
 * system calls, for harness's `counted` figures.
 *
 * The worker (harness/worker/markers.py) brackets its timed loop with two marker system calls
 * (markers.h, shared with the timing plugin). The count is of every vCPU (every guest thread),
 * between the markers.
 *
 * Counting: every translation block adds its instruction count when it starts executing. With
 * plugin API 2 (QEMU >= 9) that is an inline add into a per-vCPU scoreboard. API 1 (QEMU 7.2, 8.x)
 * has no per-vCPU inline ops, so by default each block calls a small callback that adds to its
 * vCPU's slot (`mode=callback`); `mode=inline` adds inline to one shared counter instead (faster,
 * but concurrent guest threads may lose updates). A marker reads the sum over the vCPUs; END writes
 * the difference from BEGIN. Blocks end at system calls, so the block holding BEGIN is outside the
 * count and the block holding END inside it: the same on every run.
 *
 * Arguments (`-plugin libinsn_count.so,outfile=PATH,mode=callback`):
 *   outfile=PATH    where each END marker appends one line (required)
 *   mode=callback|inline   API 1 only (default callback)
 *   syscall=N       the lseek syscall number, when the target is neither aarch64 nor x86_64
 *
 * Output lines (appended; the file may hold the lines of several runs):
 *   # insn_count api=1 target=aarch64 mode=callback
 *   count insns=123456 pair=1 vcpus=1 mode=callback
 *   # unfinished insns=789 pair=2          (at exit, when a BEGIN had no END)
 */
#include <glib.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

#include "markers.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_VCPUS 1024

static char *outfile;
static int64_t lseek_number = -1;
static const char *mode_name;
static GMutex lock;
static bool active;
static uint64_t pair;
static uint64_t begin_total;
static uint64_t begin_vcpu[MAX_VCPUS];

#if QEMU_PLUGIN_VERSION >= 2
static struct qemu_plugin_scoreboard *score;
static qemu_plugin_u64 insns;

static unsigned int vcpu_slots(void)
{
    int n = qemu_plugin_num_vcpus();
    return n < 0 ? 0 : (n > MAX_VCPUS ? MAX_VCPUS : (unsigned int)n);
}

static uint64_t vcpu_count(unsigned int index)
{
    return qemu_plugin_u64_get(insns, index);
}

static uint64_t total_count(void)
{
    return qemu_plugin_u64_sum(insns);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb, QEMU_PLUGIN_INLINE_ADD_U64, insns, qemu_plugin_tb_n_insns(tb));
}
#else
/* One cache line per vCPU, so that guest threads do not share a line. */
typedef struct {
    uint64_t n;
    char pad[56];
} slot_t;

static bool use_inline;
static slot_t slots[MAX_VCPUS];
static uint64_t overflow;     /* vCPUs beyond MAX_VCPUS, added atomically */
static uint64_t shared_total; /* mode=inline */
static unsigned int highest_vcpu;

static unsigned int vcpu_slots(void)
{
    unsigned int n = __atomic_load_n(&highest_vcpu, __ATOMIC_RELAXED) + 1;
    return n > MAX_VCPUS ? MAX_VCPUS : n;
}

static uint64_t vcpu_count(unsigned int index)
{
    return __atomic_load_n(&slots[index].n, __ATOMIC_RELAXED);
}

static uint64_t total_count(void)
{
    if (use_inline) {
        return __atomic_load_n(&shared_total, __ATOMIC_RELAXED);
    }
    uint64_t sum = __atomic_load_n(&overflow, __ATOMIC_RELAXED);
    for (unsigned int i = 0; i < vcpu_slots(); i++) {
        sum += vcpu_count(i);
    }
    return sum;
}

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    uint64_t n = (uint64_t)GPOINTER_TO_UINT(udata);
    if (vcpu_index < MAX_VCPUS) {
        slots[vcpu_index].n += n; /* only this vCPU's thread writes its slot */
    } else {
        __atomic_fetch_add(&overflow, n, __ATOMIC_RELAXED);
    }
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    unsigned int seen = __atomic_load_n(&highest_vcpu, __ATOMIC_RELAXED);
    while (vcpu_index > seen &&
           !__atomic_compare_exchange_n(&highest_vcpu, &seen, vcpu_index, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (use_inline) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &shared_total, n);
    } else {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                             GUINT_TO_POINTER((unsigned int)n));
    }
}
#endif

static void append_line(const char *line)
{
    FILE *out = fopen(outfile, "a");
    if (out == NULL) {
        g_autofree char *message =
            g_strdup_printf("insn_count: cannot open %s for appending\n", outfile);
        qemu_plugin_outs(message);
        return;
    }
    fputs(line, out);
    fclose(out);
}

/* vCPUs that executed instructions since BEGIN (inline mode cannot tell: 0). */
static unsigned int busy_vcpus(void)
{
#if QEMU_PLUGIN_VERSION < 2
    if (use_inline) {
        return 0;
    }
#endif
    unsigned int busy = 0;
    for (unsigned int i = 0; i < vcpu_slots(); i++) {
        busy += vcpu_count(i) != begin_vcpu[i];
    }
    return busy;
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    enum marker marker = marker_of(lseek_number, num, a1, a2);
    if (marker == NOT_A_MARKER) {
        return;
    }
    g_mutex_lock(&lock);
    uint64_t now = total_count();
    if (marker == BEGIN_MARKER) {
        pair++;
        active = true;
        begin_total = now;
        for (unsigned int i = 0; i < MAX_VCPUS; i++) {
            begin_vcpu[i] = i < vcpu_slots() ? vcpu_count(i) : 0;
        }
    } else if (active) {
        active = false;
        g_autofree char *line =
            g_strdup_printf("count insns=%" PRIu64 " pair=%" PRIu64 " vcpus=%u mode=%s\n",
                            now - begin_total, pair, busy_vcpus(), mode_name);
        append_line(line);
    } else {
        append_line("# end marker without a begin marker\n");
    }
    g_mutex_unlock(&lock);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    g_mutex_lock(&lock);
    if (active) {
        g_autofree char *line =
            g_strdup_printf("# unfinished insns=%" PRIu64 " pair=%" PRIu64 "\n",
                            total_count() - begin_total, pair);
        append_line(line);
        active = false;
    }
    g_mutex_unlock(&lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *mode = "callback";
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (g_str_has_prefix(arg, "outfile=")) {
            outfile = g_strdup(arg + strlen("outfile="));
        } else if (g_str_has_prefix(arg, "mode=")) {
            mode = arg + strlen("mode=");
        } else if (g_str_has_prefix(arg, "syscall=")) {
            lseek_number = g_ascii_strtoll(arg + strlen("syscall="), NULL, 10);
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (known: outfile, mode, syscall)\n",
                    arg);
            return -1;
        }
    }
    if (outfile == NULL || outfile[0] == '\0') {
        fprintf(stderr, "insn_count: outfile=PATH is required\n");
        return -1;
    }
    if (lseek_number < 0) {
        lseek_number = marker_syscall_number(info->target_name);
    }
    if (lseek_number < 0) {
        fprintf(stderr, "insn_count: no lseek syscall number known for %s: pass syscall=N\n",
                info->target_name);
        return -1;
    }
#if QEMU_PLUGIN_VERSION >= 2
    if (strcmp(mode, "callback") != 0 && strcmp(mode, "scoreboard") != 0) {
        fprintf(stderr, "insn_count: mode=%s: plugin API %d always counts per vCPU inline\n",
                mode, QEMU_PLUGIN_VERSION);
    }
    mode_name = "scoreboard";
    score = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    insns = qemu_plugin_scoreboard_u64(score);
#else
    if (strcmp(mode, "inline") == 0) {
        use_inline = true;
        mode_name = "inline";
    } else if (strcmp(mode, "callback") == 0) {
        mode_name = "callback";
    } else {
        fprintf(stderr, "insn_count: mode=%s is not callback or inline\n", mode);
        return -1;
    }
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
#endif
    g_autofree char *header = g_strdup_printf("# insn_count api=%d target=%s mode=%s\n",
                                              QEMU_PLUGIN_VERSION, info->target_name, mode_name);
    append_line(header);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
