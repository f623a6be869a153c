/*
 * scanstep: one step of a chained scan (a prefix computation) over data chunks.
 *
 *   scanstep local CHUNK SUMMARY          summarise one chunk: length, byte sum, hash
 *   scanstep combine PREV|none SUMMARY STATE REPORT INDEX
 *                                         fold a chunk's summary into the running state
 *
 * The hash is polynomial, H(d) = sum (d[j]+1) * P^(n-1-j) mod 2^64, so
 * H(A||B) = H(A) * P^|B| + H(B): each worker summarises its chunk in parallel and the cheap
 * combine runs in chain order, as ExCamera passed encoder state from worker to worker.
 * Every output is written to a temporary file and renamed, so none is ever partial.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint64_t P = 1099511628211ULL;

static void die(const char *msg, const char *arg) {
    fprintf(stderr, "scanstep: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    exit(1);
}

static uint64_t power(uint64_t base, uint64_t exp) {
    uint64_t result = 1;
    while (exp) {
        if (exp & 1) result *= base;
        base *= base;
        exp >>= 1;
    }
    return result;
}

static void write_atomic(const char *path, const char *text) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) die("path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f) die(strerror(errno), tmp);
    if (fputs(text, f) == EOF || fclose(f) != 0) die("write failed", tmp);
    if (rename(tmp, path) != 0) die(strerror(errno), path);
}

static void local(const char *chunk, const char *out) {
    FILE *f = fopen(chunk, "rb");
    if (!f) die(strerror(errno), chunk);
    uint64_t len = 0, sum = 0, hash = 0;
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < n; i++) {
            hash = hash * P + (uint64_t)buf[i] + 1;
            sum += buf[i];
        }
        len += n;
    }
    if (ferror(f)) die("read failed", chunk);
    fclose(f);
    char text[128];
    snprintf(text, sizeof text, "%" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", len, sum, hash);
    write_atomic(out, text);
}

static void read_line(const char *path, const char *fmt, int want, void *a, void *b, void *c, void *d) {
    FILE *f = fopen(path, "r");
    if (!f) die(strerror(errno), path);
    int got = want == 3 ? fscanf(f, fmt, a, b, c) : fscanf(f, fmt, a, b, c, d);
    fclose(f);
    if (got != want) die("malformed file", path);
}

static void combine(const char *prev, const char *summary, const char *state, const char *report, const char *index) {
    uint64_t chunks = 0, len = 0, sum = 0, hash = 0;
    if (strcmp(prev, "none") != 0)
        read_line(prev, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNx64, 4, &chunks, &len, &sum, &hash);
    uint64_t l_len, l_sum, l_hash;
    read_line(summary, "%" SCNu64 " %" SCNu64 " %" SCNx64, 3, &l_len, &l_sum, &l_hash, NULL);
    char *end;
    unsigned long long idx = strtoull(index, &end, 10);
    if (*index == '\0' || *end != '\0') die("INDEX must be a whole number", index);
    if (idx != chunks) {
        char msg[128];
        snprintf(msg, sizeof msg, "chunk %llu follows a state of %" PRIu64 " chunks", idx, chunks);
        die(msg, "the chain is out of order");
    }
    hash = hash * power(P, l_len) + l_hash;
    len += l_len;
    sum += l_sum;
    chunks += 1;
    char text[256];
    snprintf(text, sizeof text, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", chunks, len, sum, hash);
    write_atomic(state, text);
    snprintf(text, sizeof text, "chunk %llu: bytes_so_far=%" PRIu64 " sum_so_far=%" PRIu64 " hash_so_far=%016" PRIx64 "\n",
             idx, len, sum, hash);
    write_atomic(report, text);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "local") == 0) {
        local(argv[2], argv[3]);
    } else if (argc == 7 && strcmp(argv[1], "combine") == 0) {
        combine(argv[2], argv[3], argv[4], argv[5], argv[6]);
    } else {
        fputs("usage: scanstep local CHUNK SUMMARY\n"
              "       scanstep combine PREV|none SUMMARY STATE REPORT INDEX\n", stderr);
        return 2;
    }
    return 0;
}
