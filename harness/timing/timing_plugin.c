/*
 * timing_plugin: a QEMU TCG plugin that, between the worker's two marker system calls, counts the
 * guest instructions per vCPU by class and runs every memory access through a simulated L1D + L2
 * cache, for harness's timing model (harness/timing/model.py).
 *
 * Markers: the same as insn_count.c, from the same source (harness/counting/markers.h):
 * lseek(-1, MAGIC, SEEK_SET) with MAGIC "hrnsBEGN" / "hrnsEND.". Instruction counts are taken the same way as insn_count.c (each
 * translation block adds its instructions as it starts), so `insns` equals insn_count's count.
 *
 * Classes are decided once per instruction, when QEMU translates it, from its disassembly
 * (capstone, as QEMU prints it): the idea of contrib/plugins/howvec.c, by mnemonic and operands
 * instead of encoding masks, so that one table serves aarch64 and x86_64. Each block keeps its
 * class histogram; a block callback adds it to its vCPU's counters.
 *
 * Caches (after contrib/plugins/cache.c): per vCPU, set-associative, LRU, write-allocate; an L1
 * miss looks up the L2. A miss whose line follows (+1 line) one of the last STREAMS missed lines
 * is counted as `sequential` too: the misses a hardware stream prefetcher hides. The caches run
 * only between the markers (they start cold at BEGIN), which keeps the warm-up inferences fast.
 *
 * Arguments (`-plugin libtiming.so,outfile=PATH,l1d=32768:2:64,l2=1048576:16:64`):
 *   outfile=PATH           where each END marker appends its records (required)
 *   l1d=SIZE:WAYS:LINE     L1 data cache (default 32768:2:64, Cortex-A72)
 *   l2=SIZE:WAYS:LINE      L2 cache, or l2=0 for none (default 1048576:16:64)
 *   syscall=N              the lseek number, when the target is neither aarch64 nor x86_64
 *   classes=PATH           at each END, write every distinct instruction text translated so
 *                          far with its class (to check the classifier)
 *
 * Output (appended; one JSON object a line):
 *   {"record":"vcpu","pair":1,"vcpu":0,"insns":N,"classes":{"int":..,...},   (class_names)
 *    "loads":..,"stores":..,"load_bytes":..,"store_bytes":..,
 *    "l1d_accesses":..,"l1d_misses":..,"l1d_misses_seq":..,"l2_misses":..,"l2_misses_seq":..}
 *   {"record":"total","pair":1,"insns":N,"vcpus":V}     (after its vCPU records)
 */
#include <glib.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

#include "markers.h" /* harness/counting/markers.h */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_VCPUS 256
#define STREAMS 16

/* Keep in step with CLASSES in harness/timing/model.py. */
/* SIMD classes come in pairs, floating-point then integer (incl. shuffles and logic), by width:
 * C_SIMD64 + width_index * 2 + is_int. Integer multiplies and multiply-accumulates (dot products:
 * what int8 kernels are made of, and what cores run at their own rates) are C_SIMD_INT_MUL,
 * whatever their width. */
enum {
    C_INT, C_INT_MUL, C_LOAD, C_STORE, C_BRANCH, C_FP,
    C_SIMD64, C_SIMD64_INT, C_SIMD128, C_SIMD128_INT, C_SIMD256, C_SIMD256_INT,
    C_SIMD512, C_SIMD512_INT, C_SIMD_INT_MUL, C_OTHER, N_CLASSES
};
static const char *const class_names[N_CLASSES] = {
    "int", "int_mul", "load", "store", "branch", "fp",
    "simd64_fp", "simd64_int", "simd128_fp", "simd128_int", "simd256_fp", "simd256_int",
    "simd512_fp", "simd512_int", "simd_int_mul", "other",
};

typedef struct {
    uint64_t *tags; /* sets * ways; 0 = empty, else line number + 1 */
    uint64_t *used; /* LRU stamps */
    uint64_t stamp;
    unsigned int sets, ways, line_bits;
    uint64_t streams[STREAMS]; /* the last missed lines, for `sequential` */
    unsigned int next_stream;
} cache_t;

typedef struct {
    uint64_t insns;
    uint64_t classes[N_CLASSES];
    uint64_t loads, stores, load_bytes, store_bytes;
    uint64_t l1_accesses, l1_misses, l1_seq, l2_misses, l2_seq;
} counters_t;

typedef struct {
    counters_t now;
    counters_t begin;
    cache_t l1, l2;
    bool has_l2;
} vcpu_t;

typedef struct {
    uint32_t n_insns;
    uint32_t classes[N_CLASSES];
} tb_info_t;

static char *outfile;
static char *classes_file;
static int64_t lseek_number = -1;
static bool is_x86;
static GMutex lock;
static volatile bool active; /* between BEGIN and END: the caches run */
static uint64_t pair;
static vcpu_t *vcpus[MAX_VCPUS];
static unsigned int l1_size = 32768, l1_ways = 2, l1_line = 64;
static unsigned int l2_size = 1048576, l2_ways = 16, l2_line = 64;
static GHashTable *seen_insns; /* classes=PATH: disassembly -> class */

/* ---- classification ------------------------------------------------------------------- */

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool in_list(const char *word, const char *const *list)
{
    for (; *list != NULL; list++) {
        if (strcmp(word, *list) == 0) {
            return true;
        }
    }
    return false;
}

/* A scalar FP/SIMD register operand: b0..b31, h, s, d, q (aarch64). */
static bool has_fp_scalar_reg(const char *ops)
{
    const char *p = ops;
    while (*p) {
        bool boundary = p == ops || p[-1] == ' ' || p[-1] == ',' || p[-1] == '[' || p[-1] == '{';
        if (boundary && strchr("bhsdq", *p) && g_ascii_isdigit(p[1])) {
            const char *q = p + 1;
            while (g_ascii_isdigit(*q)) {
                q++;
            }
            if (*q == '\0' || *q == ',' || *q == ' ' || *q == ']' || *q == '}') {
                return true;
            }
        }
        p++;
    }
    return false;
}

static int classify_aarch64(const char *mn, const char *ops)
{
    static const char *const branches[] = {"b", "bl", "br", "blr", "ret", "cbz", "cbnz", "tbz",
                                           "tbnz", "braa", "blraa", "retaa", NULL};
    static const char *const muls[] = {"mul", "madd", "msub", "mneg", "smull", "umull", "smulh",
                                       "umulh", "smaddl", "umaddl", "smsubl", "umsubl", "sdiv",
                                       "udiv", "smnegl", "umnegl", NULL};
    static const char *const others[] = {"nop", "svc", "mrs", "msr", "dmb", "dsb", "isb", "hint",
                                         "yield", "brk", "prfm", "prfum", "clrex", "sev", "wfe",
                                         "paciasp", "autiasp", "bti", "hlt", NULL};
    if (in_list(mn, branches) || starts(mn, "b.")) {
        return C_BRANCH;
    }
    if (in_list(mn, others)) {
        return C_OTHER;
    }
    if (starts(mn, "ld") || starts(mn, "cas") || starts(mn, "swp")) {
        return C_LOAD;
    }
    if (starts(mn, "st")) {
        return C_STORE;
    }
    /* FP SIMD: the f-prefixed arithmetic and the int<->float conversions. */
    int is_int = !(mn[0] == 'f' || strcmp(mn, "scvtf") == 0 || strcmp(mn, "ucvtf") == 0);
    static const char *const int_muls[] = {"sml", "uml", "smul", "umul", "mul", "mla", "mls",
                                           "sqdm", "sqrdm", "sdot", "udot", "usdot", "pmul",
                                           NULL};
    bool vector_op = strstr(ops, "v") != NULL && strchr(ops, '.') != NULL;
    if (is_int && vector_op) {
        for (const char *const *m = int_muls; *m != NULL; m++) {
            if (starts(mn, *m)) {
                return C_SIMD_INT_MUL;
            }
        }
    }
    if (strstr(ops, ".16b") || strstr(ops, ".8h") || strstr(ops, ".4s") || strstr(ops, ".2d") ||
        strstr(ops, ".1q")) {
        return C_SIMD128 + is_int;
    }
    if (strstr(ops, ".8b") || strstr(ops, ".4h") || strstr(ops, ".2s") || strstr(ops, ".1d")) {
        return C_SIMD64 + is_int;
    }
    if (strstr(ops, "v") && (strstr(ops, ".b[") || strstr(ops, ".h[") || strstr(ops, ".s[") ||
                             strstr(ops, ".d["))) {
        return C_SIMD128 + is_int; /* element moves: ins, umov, dup from an element */
    }
    if (has_fp_scalar_reg(ops)) {
        return C_FP;
    }
    if (in_list(mn, muls)) {
        return C_INT_MUL;
    }
    return C_INT;
}

/* x86: the destination is the last operand in AT&T syntax (capstone as QEMU sets it), the first
 * in Intel syntax. */
static bool x86_memory_is_destination(const char *ops)
{
    bool att = strchr(ops, '%') != NULL;
    const char *comma = NULL; /* the first (Intel) or last (AT&T) comma outside brackets */
    int depth = 0;
    for (const char *p = ops; *p; p++) {
        depth += (*p == '(' || *p == '[') - (*p == ')' || *p == ']');
        if (*p == ',' && depth == 0 && (att || comma == NULL)) {
            comma = p;
        }
    }
    if (comma == NULL) {
        return false;
    }
    const char *dest = att ? comma + 1 : ops;
    const char *end = att ? ops + strlen(ops) : comma;
    for (const char *p = dest; p < end; p++) {
        if (*p == '(' || *p == '[') {
            return true;
        }
    }
    return false;
}

static int classify_x86(const char *mn, const char *ops)
{
    static const char *const muls[] = {"mul", "imul", "div", "idiv", "mulx", "mulq", "imulq",
                                       "imull", "mull", "divq", "idivq", "divl", "idivl", NULL};
    static const char *const others[] = {"nop", "nopw", "nopl", "endbr64", "syscall", "cpuid",
                                         "rdtsc", "rdtscp", "xgetbv", "pause", "lfence", "mfence",
                                         "sfence", "hlt", "ud2", "int3", "vzeroupper",
                                         "vzeroall", "fnstcw", "fldcw", "stmxcsr", "ldmxcsr",
                                         "vstmxcsr", "vldmxcsr", "xsave", "xrstor", "xsavec",
                                         "fxsave", "fxrstor", "rdrand", NULL};
    const char *bare = mn;
    if (starts(bare, "rep ") || starts(bare, "lock ") || starts(bare, "repne ") ||
        starts(bare, "bnd ") || starts(bare, "notrack ")) {
        bare = strchr(bare, ' ') + 1;
    }
    if (bare[0] == 'j' || starts(bare, "call") || starts(bare, "ret") || starts(bare, "loop")) {
        return C_BRANCH;
    }
    if (in_list(bare, others) || starts(bare, "prefetch") || starts(bare, "nop")) {
        return C_OTHER;
    }
    bool memory = strchr(ops, '(') != NULL || strchr(ops, '[') != NULL;
    bool zmm = strstr(ops, "zmm") != NULL;
    bool ymm = strstr(ops, "ymm") != NULL;
    bool xmm = strstr(ops, "xmm") != NULL;
    bool vector = zmm || ymm || xmm || strstr(ops, "%mm") != NULL;
    if (starts(bare, "push")) {
        return C_STORE;
    }
    if (starts(bare, "pop")) {
        return C_LOAD;
    }
    bool pure_move = starts(bare, "mov") || starts(bare, "vmov") || starts(bare, "vbroadcast") ||
                     starts(bare, "vpbroadcast") || starts(bare, "lddqu") ||
                     starts(bare, "vlddqu") || starts(bare, "vmaskmov") ||
                     starts(bare, "vpmaskmov") || starts(bare, "stos") || starts(bare, "lods");
    /* Moves between registers and memory are loads or stores, whatever the register. */
    if (memory && pure_move) {
        return x86_memory_is_destination(ops) ? C_STORE : C_LOAD;
    }
    if (vector) {
        const char *v = bare[0] == 'v' ? bare + 1 : bare;
        size_t n = strlen(v);
        bool scalar = n > 2 && (g_str_has_suffix(v, "ss") || g_str_has_suffix(v, "sd") ||
                                g_str_has_suffix(v, "sh")) &&
                      !starts(v, "pmadd") && !starts(v, "psad") && !starts(v, "pabs");
        if (scalar || starts(v, "comis") || starts(v, "ucomis") || starts(v, "cvtsi2") ||
            starts(v, "cvttss2") || starts(v, "cvttsd2") || starts(v, "cvtss2") ||
            starts(v, "cvtsd2")) {
            return C_FP;
        }
        /* FP SIMD: packed single/double/half arithmetic (…ps, …pd, …ph) and conversions. */
        int is_int = !(g_str_has_suffix(v, "ps") || g_str_has_suffix(v, "pd") ||
                       g_str_has_suffix(v, "ph") || starts(v, "cvt") || starts(v, "broadcastss") ||
                       starts(v, "broadcastsd") || starts(v, "fmadd") || starts(v, "fmsub") ||
                       starts(v, "fnmadd") || starts(v, "fnmsub"));
        if (is_int && (starts(v, "pmadd") || starts(v, "pdp") || starts(v, "pmul"))) {
            return C_SIMD_INT_MUL;
        }
        if (zmm) {
            return C_SIMD512 + is_int;
        }
        if (ymm) {
            return C_SIMD256 + is_int;
        }
        if (xmm) {
            return C_SIMD128 + is_int;
        }
        return C_SIMD64 + is_int; /* MMX */
    }
    if (bare[0] == 'f') {
        return C_FP; /* x87 */
    }
    if (in_list(bare, muls)) {
        return C_INT_MUL;
    }
    if (starts(bare, "stos") || starts(bare, "movs")) {
        return C_STORE;
    }
    if (starts(bare, "lods") || starts(bare, "cmps") || starts(bare, "scas")) {
        return C_LOAD;
    }
    return C_INT;
}

static int classify(const char *text)
{
    /* "mnemonic operands"; x86 prefixes ("rep movsb") stay in the mnemonic. */
    g_autofree char *copy = g_strdup(text);
    g_strstrip(copy);
    char *ops = copy;
    while (*ops && *ops != ' ' && *ops != '\t') {
        ops++;
    }
    if (is_x86 && (starts(copy, "rep ") || starts(copy, "lock ") || starts(copy, "repne ") ||
                   starts(copy, "bnd ") || starts(copy, "notrack "))) {
        ops++;
        while (*ops && *ops != ' ' && *ops != '\t') {
            ops++;
        }
    }
    if (*ops) {
        *ops++ = '\0';
        while (*ops == ' ' || *ops == '\t') {
            ops++;
        }
    }
    return is_x86 ? classify_x86(copy, ops) : classify_aarch64(copy, ops);
}

/* ---- caches ------------------------------------------------------------------------------ */

static bool parse_cache(const char *spec, unsigned int *size, unsigned int *ways,
                        unsigned int *line)
{
    if (strcmp(spec, "0") == 0) {
        *size = 0;
        return true;
    }
    unsigned int s, w, l;
    if (sscanf(spec, "%u:%u:%u", &s, &w, &l) != 3 || s == 0 || w == 0 || l == 0 ||
        (l & (l - 1)) != 0 || s % (w * l) != 0) {
        return false;
    }
    unsigned int sets = s / (w * l);
    if ((sets & (sets - 1)) != 0) {
        return false;
    }
    *size = s;
    *ways = w;
    *line = l;
    return true;
}

static void cache_init(cache_t *c, unsigned int size, unsigned int ways, unsigned int line)
{
    c->ways = ways;
    c->sets = size / (ways * line);
    c->line_bits = (unsigned int)__builtin_ctz(line);
    c->tags = g_new0(uint64_t, (size_t)c->sets * ways);
    c->used = g_new0(uint64_t, (size_t)c->sets * ways);
}

static void cache_clear(cache_t *c)
{
    memset(c->tags, 0, sizeof(uint64_t) * c->sets * c->ways);
    memset(c->used, 0, sizeof(uint64_t) * c->sets * c->ways);
    memset(c->streams, 0, sizeof(c->streams));
    c->stamp = 0;
}

/* Looks `line` up; on a miss, fills it (LRU victim). Returns true on a hit. */
static bool cache_access(cache_t *c, uint64_t line)
{
    uint64_t set = line & (c->sets - 1);
    uint64_t *tags = c->tags + set * c->ways;
    uint64_t *used = c->used + set * c->ways;
    uint64_t tag = line + 1;
    unsigned int victim = 0;
    c->stamp++;
    for (unsigned int w = 0; w < c->ways; w++) {
        if (tags[w] == tag) {
            used[w] = c->stamp;
            return true;
        }
        if (used[w] < used[victim]) {
            victim = w;
        }
    }
    tags[victim] = tag;
    used[victim] = c->stamp;
    return false;
}

/* Whether a missed line continues one of the recent miss streams (and record it). */
static bool stream_hit(cache_t *c, uint64_t line)
{
    for (unsigned int i = 0; i < STREAMS; i++) {
        if (c->streams[i] == line) { /* each entry holds the line its stream expects next */
            c->streams[i] = line + 1;
            return true;
        }
    }
    c->streams[c->next_stream] = line + 1;
    c->next_stream = (c->next_stream + 1) % STREAMS;
    return false;
}

static void access_line(vcpu_t *v, uint64_t line_l1, uint64_t address)
{
    counters_t *n = &v->now;
    n->l1_accesses++;
    if (cache_access(&v->l1, line_l1)) {
        return;
    }
    n->l1_misses++;
    n->l1_seq += stream_hit(&v->l1, line_l1);
    if (!v->has_l2) {
        return;
    }
    uint64_t line_l2 = address >> v->l2.line_bits;
    if (cache_access(&v->l2, line_l2)) {
        return;
    }
    n->l2_misses++;
    n->l2_seq += stream_hit(&v->l2, line_l2);
}

/* ---- callbacks ----------------------------------------------------------------------------- */

static vcpu_t *new_vcpu(void)
{
    vcpu_t *v = g_new0(vcpu_t, 1);
    cache_init(&v->l1, l1_size, l1_ways, l1_line);
    v->has_l2 = l2_size != 0;
    if (v->has_l2) {
        cache_init(&v->l2, l2_size, l2_ways, l2_line);
    }
    return v;
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int index)
{
    if (index >= MAX_VCPUS) {
        return;
    }
    g_mutex_lock(&lock);
    if (vcpus[index] == NULL) {
        vcpus[index] = new_vcpu();
    }
    g_mutex_unlock(&lock);
}

static void tb_exec(unsigned int index, void *udata)
{
    if (index >= MAX_VCPUS || vcpus[index] == NULL) {
        return;
    }
    const tb_info_t *tb = udata;
    counters_t *n = &vcpus[index]->now;
    n->insns += tb->n_insns;
    for (int c = 0; c < N_CLASSES; c++) {
        n->classes[c] += tb->classes[c];
    }
}

static void mem_access(unsigned int index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                       void *udata)
{
    if (!active || index >= MAX_VCPUS || vcpus[index] == NULL) {
        return;
    }
    vcpu_t *v = vcpus[index];
    unsigned int size = 1u << qemu_plugin_mem_size_shift(info);
    if (qemu_plugin_mem_is_store(info)) {
        v->now.stores++;
        v->now.store_bytes += size;
    } else {
        v->now.loads++;
        v->now.load_bytes += size;
    }
    uint64_t first = vaddr >> v->l1.line_bits;
    uint64_t last = (vaddr + size - 1) >> v->l1.line_bits;
    for (uint64_t line = first; line <= last; line++) {
        access_line(v, line, line << v->l1.line_bits);
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    tb_info_t *info = g_new0(tb_info_t, 1); /* lives as long as QEMU may run the block */
    info->n_insns = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        g_autofree char *text = qemu_plugin_insn_disas(insn);
        int c = classify(text != NULL ? text : "");
        info->classes[c]++;
        if (seen_insns != NULL && text != NULL) {
            g_mutex_lock(&lock);
            if (!g_hash_table_contains(seen_insns, text)) {
                g_hash_table_insert(seen_insns, g_strdup(text), GINT_TO_POINTER(c));
            }
            g_mutex_unlock(&lock);
        }
        qemu_plugin_register_vcpu_mem_cb(insn, mem_access, QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, NULL);
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, info);
}

/* ---- markers and output -------------------------------------------------------------------- */

static void append(GString *text)
{
    FILE *out = fopen(outfile, "a");
    if (out == NULL) {
        g_autofree char *message = g_strdup_printf("timing_plugin: cannot append to %s\n", outfile);
        qemu_plugin_outs(message);
        return;
    }
    fputs(text->str, out);
    fclose(out);
}

static void write_records(void)
{
    g_autoptr(GString) text = g_string_new(NULL);
    uint64_t total = 0;
    unsigned int busy = 0;
    for (unsigned int i = 0; i < MAX_VCPUS; i++) {
        vcpu_t *v = vcpus[i];
        if (v == NULL || v->now.insns == v->begin.insns) {
            continue;
        }
        const counters_t *a = &v->begin, *b = &v->now;
        uint64_t insns = b->insns - a->insns;
        total += insns;
        busy++;
        g_string_append_printf(text,
                               "{\"record\":\"vcpu\",\"pair\":%" PRIu64 ",\"vcpu\":%u,"
                               "\"insns\":%" PRIu64 ",\"classes\":{",
                               pair, i, insns);
        for (int c = 0; c < N_CLASSES; c++) {
            g_string_append_printf(text, "%s\"%s\":%" PRIu64, c ? "," : "", class_names[c],
                                   b->classes[c] - a->classes[c]);
        }
        g_string_append_printf(
            text,
            "},\"loads\":%" PRIu64 ",\"stores\":%" PRIu64 ",\"load_bytes\":%" PRIu64
            ",\"store_bytes\":%" PRIu64 ",\"l1d_accesses\":%" PRIu64 ",\"l1d_misses\":%" PRIu64
            ",\"l1d_misses_seq\":%" PRIu64 ",\"l2_misses\":%" PRIu64 ",\"l2_misses_seq\":%" PRIu64
            "}\n",
            b->loads - a->loads, b->stores - a->stores, b->load_bytes - a->load_bytes,
            b->store_bytes - a->store_bytes, b->l1_accesses - a->l1_accesses,
            b->l1_misses - a->l1_misses, b->l1_seq - a->l1_seq, b->l2_misses - a->l2_misses,
            b->l2_seq - a->l2_seq);
    }
    g_string_append_printf(text,
                           "{\"record\":\"total\",\"pair\":%" PRIu64 ",\"insns\":%" PRIu64
                           ",\"vcpus\":%u,\"l1d\":\"%u:%u:%u\",\"l2\":\"%u:%u:%u\"}\n",
                           pair, total, busy, l1_size, l1_ways, l1_line, l2_size, l2_ways,
                           l2_line);
    append(text);
}

static void write_classes(void)
{
    FILE *out = fopen(classes_file, "w");
    if (out == NULL) {
        return;
    }
    GHashTableIter iter;
    gpointer key, value;
    g_hash_table_iter_init(&iter, seen_insns);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        fprintf(out, "%s\t%s\n", class_names[GPOINTER_TO_INT(value)], (const char *)key);
    }
    fclose(out);
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
    if (marker == BEGIN_MARKER) {
        pair++;
        for (unsigned int i = 0; i < MAX_VCPUS; i++) {
            if (vcpus[i] != NULL) {
                cache_clear(&vcpus[i]->l1);
                if (vcpus[i]->has_l2) {
                    cache_clear(&vcpus[i]->l2);
                }
                vcpus[i]->begin = vcpus[i]->now;
            }
        }
        active = true;
    } else if (active) {
        active = false;
        write_records();
        if (seen_insns != NULL) {
            write_classes();
        }
    }
    g_mutex_unlock(&lock);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    g_mutex_lock(&lock);
    if (active) {
        g_autoptr(GString) text = g_string_new(NULL);
        g_string_append_printf(text, "{\"record\":\"unfinished\",\"pair\":%" PRIu64 "}\n", pair);
        append(text);
        active = false;
    }
    g_mutex_unlock(&lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (g_str_has_prefix(arg, "outfile=")) {
            outfile = g_strdup(arg + strlen("outfile="));
        } else if (g_str_has_prefix(arg, "classes=")) {
            classes_file = g_strdup(arg + strlen("classes="));
        } else if (g_str_has_prefix(arg, "syscall=")) {
            lseek_number = g_ascii_strtoll(arg + strlen("syscall="), NULL, 10);
        } else if (g_str_has_prefix(arg, "l1d=")) {
            if (!parse_cache(arg + 4, &l1_size, &l1_ways, &l1_line) || l1_size == 0) {
                fprintf(stderr, "timing_plugin: %s: want l1d=SIZE:WAYS:LINE with power-of-two "
                                "sets and line\n", arg);
                return -1;
            }
        } else if (g_str_has_prefix(arg, "l2=")) {
            if (!parse_cache(arg + 3, &l2_size, &l2_ways, &l2_line)) {
                fprintf(stderr, "timing_plugin: %s: want l2=SIZE:WAYS:LINE (power-of-two sets "
                                "and line) or l2=0\n", arg);
                return -1;
            }
        } else {
            fprintf(stderr, "timing_plugin: unknown argument %s (known: outfile, l1d, l2, "
                            "syscall, classes)\n", arg);
            return -1;
        }
    }
    if (outfile == NULL || outfile[0] == '\0') {
        fprintf(stderr, "timing_plugin: outfile=PATH is required\n");
        return -1;
    }
    is_x86 = strcmp(info->target_name, "x86_64") == 0;
    if (lseek_number < 0) {
        lseek_number = marker_syscall_number(info->target_name);
    }
    if (lseek_number < 0) {
        fprintf(stderr, "timing_plugin: no lseek number known for %s: pass syscall=N\n",
                info->target_name);
        return -1;
    }
    if (classes_file != NULL) {
        seen_insns = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    }
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
