/* Standalone self-test of the scrypt core: known vectors on every backend this CPU runs.
 *
 *   cc -std=c11 -O3 -Wall -Wextra -Werror -Icext cext/<all but module.c>.c -o selftest -lpthread
 *   ./selftest [--backend NAME] [--slow] [--list]
 *
 * Per backend, with SHA-256 both at its best and forced portable, it checks the RFC 7914
 * vectors (general scrypt), every header vector through pow_hash_with(romix_one) and through
 * the verification queue's threads, and scan_nonces(): around each header's own nonce with the
 * maximum target, a count that is not a multiple of the lanes, a start that wraps past
 * 0xffffffff, and tight targets that must return exactly the nonces whose hash meets them.
 * Exit status: 0 all OK, 1 a mismatch, 2 bad usage or a requested backend this CPU cannot run.
 *
 * The vectors are public (shared/vectors/scrypt-pow.json); they are copied here so the program
 * needs nothing at run time, which matters when it runs under qemu on a bare sysroot. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <poll.h>

#include "scrypt_core.h"
#include "sha256.h"
#include "verify_queue.h"

typedef struct {
    const char *password, *salt;
    uint64_t N;
    uint32_t r, p;
    const char *expected; /* 64 bytes */
    int slow;
} rfc_vector;

static const rfc_vector RFC[] = {
    {"", "", 16, 1, 1,
     "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
     "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906",
     0},
    {"password", "NaCl", 1024, 8, 16,
     "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
     "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640",
     0},
    {"pleaseletmein", "SodiumChloride", 16384, 8, 1,
     "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
     "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887",
     0},
    {"pleaseletmein", "SodiumChloride", 1048576, 8, 1,
     "2101cb9b6a511aaeaddbbe09cf70f881ec568d574a2ffd4dabe5ee9820adaa47"
     "8e56fd8f4ba5d09ffa1c6d927c40f4c337304049e8a952fbcbf45c6fa77a41a4",
     1},
};
#define N_RFC (sizeof RFC / sizeof RFC[0])

typedef struct {
    const char *name;
    const char *header; /* 80 bytes */
    const char *hash;   /* raw, or byte-reversed (display order) when display = 1 */
    int display;
    const char *target; /* display order; NULL when the vector has no block target */
} header_vector;

static const header_vector HEADERS[] = {
    {"litecoin_scrypt tests: bytes(range(80))",
     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
     "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
     "bc540a1a801df96e493005c71e010e2d387607fbf0fec416fd3c2645aa1ba9d2", 0, NULL},
    {"litecoin_scrypt tests: bytes(80)",
     "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000000000000000000000000000000000000000000000000000",
     "161d0876f3b93b1048cda1bdeaa7332ee210f7131b42013cb43913a6553a4b69", 0, NULL},
    {"litecoin.info block hashing example",
     "01000000ae178934851bfa0e83ccb6a3fc4bfddff3641e104b6c4680c31509074e699be2bd672d8d2199ef37a596"
     "78f92443083e3b85edef8b45c71759371f823bab59a97126614f44d5001d45920180",
     "01796dae1f78a72dfb09356db6f027cd884ba0201e6365b72aa54b3b00000000", 0, NULL},
    {"Litecoin Core scrypt_tests.cpp #1",
     "020000004c1271c211717198227392b029a64a7971931d351b387bb80db027f270411e398a07046f7d4a08dd8154"
     "12a8712f874a7ebf0507e3878bd24e20a3b73fd750a667d2f451eac7471b00de6659",
     "065898d7ab2daa8235cdda9511d248f3010b5e11f682f80741ef2b0000000000", 0, NULL},
    {"Litecoin Core scrypt_tests.cpp #2",
     "0200000011503ee6a855e900c00cfdd98f5f55fffeaee9b6bf55bea9b852d9de2ce35828e204eef76acfd36949ae"
     "56d1fbe81c1ac9c0209e6331ad56414f9072506a77f8c6faf551eac7471b00389d01",
     "94fc881c9ff1da50d235ed28f2bbcfddfeb7084e63ebd5bd110d3a0000000000", 0, NULL},
    {"Litecoin Core scrypt_tests.cpp #3",
     "02000000a72c8a177f523946f42f22c3e86b8023221b4105e8007e59e81f6beb013e29aaf635295cb9ac966213fb"
     "56e046dc71df5b3f7f67ceaeab24038e743f883aff1aaafaf551eac7471b0166249b",
     "81caa81451ddf8659cf2afd8599d2d6c8a724432e188f295f8400b0000000000", 0, NULL},
    {"Litecoin Core scrypt_tests.cpp #4",
     "010000007824bc3a8a1b4628485eee3024abd8626721f7f870f8ad4d2f33a27155167f6a4009d1285049603888fe"
     "85a84b6c803a53305a8d497965a5e896e1a00568359589faf551eac7471b0065434e",
     "fe05e1971818866adc7e8e6e2fd7e8d8991e032349cd91580007300000000000", 0, NULL},
    {"Litecoin Core scrypt_tests.cpp #5",
     "0200000050bfd4e4a307a8cb6ef4aef69abc5c0f2d579648bd80d7733e1ccc3fbc90ed664a7f74006cb11bde8778"
     "5f229ecd366c2d4e44432832580e0608c579e4cb76f383f7f551eac7471b00c36982",
     "8cec00384d72c7e74f5b340d73af02fa47cb0c13c7afa426b4f0180000000000", 0, NULL},
    {"litecoin main block 0",
     "010000000000000000000000000000000000000000000000000000000000000000000000d9ced4ed1130f7b7faad"
     "9be25323ffafa33232a17c3edf6cfd97bee6bafbdd97b9aa8e4ef0ff0f1ecd513f7c",
     "0000050c34a64b415b6b15b37f2216634b5b1669cb9a2e38d76f7213b0671e00", 1,
     "00000ffff0000000000000000000000000000000000000000000000000000000"},
    {"dogecoin main block 0",
     "010000000000000000000000000000000000000000000000000000000000000000000000696ad20e2dd4365c7459"
     "b4a4a5af743d5e92c6da3229e6532cd605f6533f2a5b24a6a152f0ff0f1e67860100",
     "0000026f3f7874ca0c251314eaed2d2fcf83d7da3acfaacf59417d485310b448", 1,
     "00000ffff0000000000000000000000000000000000000000000000000000000"},
};
#define N_HEADERS (sizeof HEADERS / sizeof HEADERS[0])

static int failures;

static void fail(const char *backend, const char *sha, const char *what, const char *detail)
{
    failures++;
    fprintf(stderr, "FAIL [%s, sha256 %s] %s: %s\n", backend, sha, what, detail);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Vectors are compiled in, so a malformed one is a bug in this file: abort loudly. */
static void unhex(const char *hex, uint8_t *out, size_t n)
{
    if (strlen(hex) != 2 * n) {
        fprintf(stderr, "selftest: vector %.16s... is not %zu bytes\n", hex, n);
        exit(2);
    }
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            fprintf(stderr, "selftest: bad hex in vector %.16s...\n", hex);
            exit(2);
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
}

static void reverse32(uint8_t b[32])
{
    for (int i = 0; i < 16; i++) {
        uint8_t t = b[i];
        b[i] = b[31 - i];
        b[31 - i] = t;
    }
}

static void tohex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void fail_hash(const char *be, const char *sha, const char *what, const uint8_t *got,
                      const uint8_t *want, size_t n)
{
    char g[129], w[129], msg[300];
    tohex(got, n, g);
    tohex(want, n, w);
    snprintf(msg, sizeof msg, "got %s, want %s", g, w);
    fail(be, sha, what, msg);
}

/* Written apart from the core's hash_le_meets so a bug there cannot hide behind itself. */
static int le_cmp(const uint8_t a[32], const uint8_t b[32])
{
    for (int i = 31; i >= 0; i--)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return 0;
}

static void with_nonce(const uint8_t hdr[80], uint32_t nonce, uint8_t out[80])
{
    memcpy(out, hdr, 80);
    store_le32(out + 76, nonce);
}

/* The reference PoW hash through general RFC 7914 scrypt: independent of pow.c's midstate and
 * unrolled PBKDF2 and of every SIMD kernel. */
static int reference_hash(const uint8_t hdr[80], uint32_t nonce, uint8_t out[32])
{
    uint8_t h[80];
    with_nonce(hdr, nonce, h);
    return scrypt_general(h, 80, h, 80, POW_N, 1, 1, out, 32);
}

static void header_of(size_t i, uint8_t hdr[80], uint8_t want[32])
{
    unhex(HEADERS[i].header, hdr, 80);
    unhex(HEADERS[i].hash, want, 32);
    if (HEADERS[i].display)
        reverse32(want);
}

static int check_rfc(const char *be, const char *sha, const rfc_vector *v)
{
    uint8_t want[64], got[64];
    unhex(v->expected, want, 64);
    char what[96];
    snprintf(what, sizeof what, "RFC 7914 N=%llu r=%u p=%u", (unsigned long long)v->N, v->r, v->p);
    if (scrypt_general((const uint8_t *)v->password, strlen(v->password),
                       (const uint8_t *)v->salt, strlen(v->salt), v->N, v->r, v->p, got,
                       64) != 0) {
        fail(be, sha, what, "scrypt_general could not allocate its scratch");
        return 0;
    }
    if (memcmp(got, want, 64) != 0) {
        fail_hash(be, sha, what, got, want, 64);
        return 0;
    }
    return 1;
}

static int check_pow(const scrypt_backend *b, const char *sha, size_t i)
{
    uint8_t hdr[80], want[32], got[32];
    header_of(i, hdr, want);
    uint32_t *V = thread_scratch((size_t)POW_N * 128);
    if (V == NULL) {
        fail(b->name, sha, HEADERS[i].name, "no scratch memory");
        return 0;
    }
    pow_hash_with(b->romix_one, V, hdr, got);
    if (memcmp(got, want, 32) != 0) {
        char what[120];
        snprintf(what, sizeof what, "pow_hash_with(romix_one) %s", HEADERS[i].name);
        fail_hash(b->name, sha, what, got, want, 32);
        return 0;
    }
    return 1;
}

/* Every header vector through the verification queue's own threads (2 of them), results taken
 * when its pipe says so: what the agent does with each chip nonce. Lazy wake-ups, as the agent
 * runs it: half the headers urgent (a target every hash meets), the rest due after 50 ms. */
static int check_verify_queue(const scrypt_backend *b, const char *sha)
{
    static const uint8_t any_hash[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    verify_queue *q = vq_open(2, 50000000);
    if (q == NULL) {
        fail(b->name, sha, "verify queue", "vq_open failed");
        return 0;
    }
    uint8_t want[N_HEADERS][32];
    int ok = 1;
    for (size_t i = 0; i < N_HEADERS; i++) {
        uint8_t hdr[80];
        header_of(i, hdr, want[i]);
        if (vq_submit(q, 1000 + i, hdr, b->romix_one, i % 2 ? NULL : any_hash) != 0) {
            fail(b->name, sha, "verify queue", "vq_submit refused a header");
            ok = 0;
        }
    }
    size_t seen = 0;
    while (ok && seen < N_HEADERS) {
        struct pollfd pfd = {.fd = vq_fd(q), .events = POLLIN};
        if (poll(&pfd, 1, 30000) != 1) {
            fail(b->name, sha, "verify queue", "no result within 30 s");
            ok = 0;
            break;
        }
        vq_result *res;
        size_t n = vq_take(q, &res);
        for (size_t k = 0; k < n; k++) {
            size_t i = (size_t)(res[k].tag - 1000);
            if (i >= N_HEADERS || memcmp(res[k].hash, want[i], 32) != 0) {
                fail_hash(b->name, sha, "verify queue result", res[k].hash,
                          want[i < N_HEADERS ? i : 0], 32);
                ok = 0;
            }
        }
        seen += n;
        free(res);
    }
    if (ok && (seen != N_HEADERS || vq_pending(q) != 0)) {
        fail(b->name, sha, "verify queue", "a header came back twice or not at all");
        ok = 0;
    }
    vq_close(q);
    return ok;
}

/* Scans [start, start+count) with `target` and compares the hits, in order, with the nonces
 * whose reference hash meets it. `own`/`own_hash` (when own_hash != NULL) also pins the hash at
 * one nonce to a published vector. */
static int check_scan(const scrypt_backend *b, const char *sha, const char *what,
                      const uint8_t hdr[80], uint32_t start, uint32_t count,
                      const uint8_t target[32], uint32_t own, const uint8_t *own_hash)
{
    char msg[200];
    hits got = {NULL, 0, 0};
    if (scan_nonces(b, hdr, start, count, target, &got) != 0) {
        free(got.items);
        fail(b->name, sha, what, "scan_nonces ran out of memory");
        return 0;
    }
    int ok = 1;
    size_t k = 0; /* next hit to match */
    for (uint32_t d = 0; d < count && ok; d++) {
        uint32_t nonce = start + d; /* wraps at 2**32 like scan_nonces must */
        uint8_t ref[32];
        if (reference_hash(hdr, nonce, ref) != 0) {
            fail(b->name, sha, what, "reference scrypt could not allocate");
            ok = 0;
            break;
        }
        if (own_hash != NULL && nonce == own && memcmp(ref, own_hash, 32) != 0) {
            fail_hash(b->name, sha, "reference hash of the vector", ref, own_hash, 32);
            ok = 0;
            break;
        }
        if (le_cmp(ref, target) > 0)
            continue;
        if (k >= got.len) {
            snprintf(msg, sizeof msg, "nonce %08x meets the target but is missing (%zu hits)",
                     (unsigned)nonce, got.len);
            fail(b->name, sha, what, msg);
            ok = 0;
        } else if (got.items[k].nonce != nonce) {
            snprintf(msg, sizeof msg, "hit %zu is nonce %08x, want %08x", k,
                     (unsigned)got.items[k].nonce, (unsigned)nonce);
            fail(b->name, sha, what, msg);
            ok = 0;
        } else if (memcmp(got.items[k].hash, ref, 32) != 0) {
            snprintf(msg, sizeof msg, "%s, nonce %08x", what, (unsigned)nonce);
            fail_hash(b->name, sha, msg, got.items[k].hash, ref, 32);
            ok = 0;
        }
        k++;
    }
    if (ok && k != got.len) {
        snprintf(msg, sizeof msg, "%zu hits, want %zu (first extra nonce %08x)", got.len, k,
                 (unsigned)got.items[k].nonce);
        fail(b->name, sha, what, msg);
        ok = 0;
    }
    free(got.items);
    return ok;
}

/* Every scan check for one backend; returns how many passed. */
static int check_scans(const scrypt_backend *b, const char *sha)
{
    uint8_t max[32], zero[32] = {0};
    memset(max, 0xff, 32);
    const uint32_t lanes = b->lanes;
    /* lanes + 3 is never a multiple of 2, 4, 8 or 16: the last batch has dead lanes */
    const uint32_t odd = lanes + 3;
    int ok = 0;
    char what[160];

    for (size_t i = 0; i < N_HEADERS; i++) {
        uint8_t hdr[80], want[32];
        header_of(i, hdr, want);
        uint32_t own = load_le32(hdr + 76);
        /* the own nonce lands in a different lane per vector; bytes(80) has nonce 0, so its
         * window starts below 0 and wraps */
        uint32_t start = own - (uint32_t)(i % lanes);
        snprintf(what, sizeof what, "scan max target around %s", HEADERS[i].name);
        ok += check_scan(b, sha, what, hdr, start, odd, max, own, want);
        if (HEADERS[i].target != NULL) {
            /* a real block: its own block target, met by its own nonce */
            uint8_t target[32];
            unhex(HEADERS[i].target, target, 32);
            reverse32(target);
            snprintf(what, sizeof what, "scan block target around %s", HEADERS[i].name);
            ok += check_scan(b, sha, what, hdr, own - 2, odd, target, own, want);
        }
    }

    uint8_t hdr[80], want[32];
    header_of(2, hdr, want);
    uint32_t own = load_le32(hdr + 76);
    ok += check_scan(b, sha, "scan count 1 at the own nonce", hdr, own, 1, max, own, want);
    ok += check_scan(b, sha, "scan wrapping 0xfffffffe -> 0", hdr, 0xfffffffeu, odd, max, 0, NULL);
    ok += check_scan(b, sha, "scan zero target", hdr, 1000, odd, zero, 0, NULL);

    /* tight targets taken from the window's own hashes: the smallest (exactly one hit, so <=
     * is tested at equality) and the median (about half the nonces) */
    const uint32_t count = 2 * lanes + 3, base = 5000;
    uint8_t hashes[2 * MAX_LANES + 3][32];
    for (uint32_t d = 0; d < count; d++)
        if (reference_hash(hdr, base + d, hashes[d]) != 0) {
            fail(b->name, sha, "tight target", "reference scrypt could not allocate");
            return ok;
        }
    uint32_t order[2 * MAX_LANES + 3];
    for (uint32_t d = 0; d < count; d++) {
        uint32_t j = d;
        for (; j > 0 && le_cmp(hashes[order[j - 1]], hashes[d]) > 0; j--)
            order[j] = order[j - 1];
        order[j] = d;
    }
    ok += check_scan(b, sha, "scan target = smallest hash", hdr, base, count, hashes[order[0]], 0,
                     NULL);
    ok += check_scan(b, sha, "scan target = median hash", hdr, base, count,
                     hashes[order[count / 2]], 0, NULL);
    return ok;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run_backend(const scrypt_backend *b)
{
    const int before = failures;
    const double t0 = now_s();
    int ok = 0;
    char shas[64] = "";
    for (int portable = 0; portable <= 1; portable++) {
        sha256_dispatch(portable);
        const char *sha = sha256_impl();
        /* where the best SHA-256 is the portable one (ARM), a second pass would repeat itself */
        if (portable && strcmp(shas, sha) == 0)
            break;
        if (portable)
            strcat(shas, " + ");
        strcat(shas, sha);
        /* general scrypt does not go through the backend; it is checked here so each backend's
         * line stands on its own, and the SHA-256 in use changes it */
        for (size_t i = 0; i < N_RFC; i++)
            if (!RFC[i].slow)
                ok += check_rfc(b->name, sha, &RFC[i]);
        for (size_t i = 0; i < N_HEADERS; i++)
            ok += check_pow(b, sha, i);
        ok += check_scans(b, sha);
        ok += check_verify_queue(b, sha);
    }
    sha256_dispatch(0);
    const int bad = failures - before;
    if (bad == 0)
        printf("backend %s (%u lane%s): %d vectors OK (sha256 %s; %.2f s)\n", b->name, b->lanes,
               b->lanes == 1 ? "" : "s", ok, shas, now_s() - t0);
    else
        printf("backend %s (%u lane%s): %d FAILED, %d OK\n", b->name, b->lanes,
               b->lanes == 1 ? "" : "s", bad, ok);
    fflush(stdout);
    return bad == 0;
}

/* The 1 GiB RFC vector exercises only general scrypt, which no backend touches, so it runs
 * once per SHA-256 implementation rather than once per backend. */
static void run_slow(void)
{
    const double t0 = now_s();
    const int before = failures;
    char shas[64] = "";
    for (int portable = 0; portable <= 1; portable++) {
        sha256_dispatch(portable);
        const char *sha = sha256_impl();
        if (portable && strcmp(shas, sha) == 0)
            break;
        if (portable)
            strcat(shas, " + ");
        strcat(shas, sha);
        for (size_t i = 0; i < N_RFC; i++)
            if (RFC[i].slow)
                check_rfc("general", sha, &RFC[i]);
    }
    sha256_dispatch(0);
    printf("general scrypt RFC 7914 N=1048576 r=8 p=1 (1 GiB): %s (sha256 %s; %.2f s)\n",
           failures == before ? "OK" : "FAILED", shas, now_s() - t0);
}

static void usage(FILE *to)
{
    fprintf(to, "usage: selftest [--backend NAME] [--slow] [--list]\n"
                "  --backend NAME  test only that backend\n"
                "  --slow          also run the 1 GiB RFC 7914 vector\n"
                "  --list          print every backend of this build and whether it runs here\n");
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    int slow = 0, list = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--slow") == 0)
            slow = 1;
        else if (strcmp(argv[i], "--list") == 0)
            list = 1;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    size_t n;
    const scrypt_backend *all = scrypt_backends(&n);
    if (list) {
        for (size_t i = 0; i < n; i++)
            printf("%s %u %s\n", all[i].name, all[i].lanes,
                   all[i].available() ? "available" : "unavailable");
        return 0;
    }

    int tested = 0;
    for (size_t i = 0; i < n; i++) {
        if (only != NULL && strcmp(all[i].name, only) != 0)
            continue;
        if (!all[i].available()) {
            if (only != NULL) {
                fprintf(stderr, "selftest: backend %s is not available on this CPU\n", only);
                return 2;
            }
            continue;
        }
        run_backend(&all[i]);
        tested++;
    }
    if (only != NULL && tested == 0) {
        fprintf(stderr, "selftest: no backend named %s in this build\n", only);
        return 2;
    }
    if (slow)
        run_slow();
    if (failures) {
        fprintf(stderr, "selftest: %d check(s) failed\n", failures);
        return 1;
    }
    return 0;
}
