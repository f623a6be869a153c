/*
 * png2y4m: convert PNG frames into one YUV4MPEG2 stream (8-bit, limited range).
 *
 *   png2y4m -o OUT.y4m [-r N:D] IN.png [IN.png ...]
 *   png2y4m -i -d -o OUT.y4m DIR/%08d.png          (the command line of daala's png2y4m)
 *
 * An input is a PNG file, '-' (one PNG on standard input), or a printf pattern: a file name
 * holding one integer conversion (%d, %08d, %i, %u ...) stands for every file of its directory
 * whose name is exactly what the pattern prints for some number, in numeric order, as daala's
 * png2y4m reads its input. Every frame must share one size. The output is written to a
 * temporary file beside OUT and renamed into place only when every frame converted; with -i
 * frames are appended to an existing OUT, which is cut back to its old length on failure. So a
 * failure never leaves a partial OUT behind, and -d deletes the inputs only after success.
 * Inputs may be 1-16 bit gray, gray+alpha, RGB, RGBA or palette; alpha is dropped.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *usage_text =
    "usage: png2y4m -o OUT.y4m [options] INPUT [INPUT ...]\n"
    "  INPUT is a PNG file, '-' (one PNG on standard input), or a printf pattern such as\n"
    "  frames/%08d.png: every file of frames/ named exactly as the pattern prints a number,\n"
    "  in numeric order (a literal % in a pattern is written %%).\n"
    "  -o, --output OUT              output file, written atomically; '-' for standard output\n"
    "  -r N:D                        frame rate (default 24:1); or -f N and -F D:\n"
    "  -f, --framerate-numerator N   frame rate numerator (default 24)\n"
    "  -F, --framerate-denominator D frame rate denominator (default 1)\n"
    "  -s, --aspect-numerator N      pixel aspect ratio numerator (default 1)\n"
    "  -S, --aspect-denominator D    pixel aspect ratio denominator (default 1; 0:0 = unknown)\n"
    "  --chroma-422, --chroma-444    chroma subsampling (default 4:2:0)\n"
    "  --rec709                      ITU-R BT.709 matrix (default --rec601, BT.601)\n"
    "  -i                            incremental: append the frames to OUT if it exists\n"
    "  -d                            delete the input PNGs once OUT is written\n"
    "  --no-dither                   accepted for daala's command line; png2y4m never dithers\n"
    "  -h, --help                    this help\n"
    "Converts PNG frames of one size (1-16 bit gray, RGB, RGBA, palette) to 8-bit YUV4MPEG2,\n"
    "limited range.\n";

typedef struct {
    uint32_t width, height;
    /* R, G, B in [0, 1], row-major, 3 values per pixel */
    double *rgb;
} frame_t;

/* What to undo if the run fails: a temporary file to remove, or an appended file to cut back. */
static char tmp_path[4096];
static int append_fd = -1;
static off_t append_from;

static void undo_and_exit(int status) {
    if (tmp_path[0]) unlink(tmp_path);
    if (append_fd >= 0 && ftruncate(append_fd, append_from) != 0)
        fprintf(stderr, "png2y4m: could not cut the output back to %lld bytes: %s\n",
                (long long)append_from, strerror(errno));
    /* _exit: flushing the output stream now would write frames after the cut. */
    _exit(status);
}

static void fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "png2y4m: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    undo_and_exit(1);
}

static int usage_error(const char *fmt, const char *a) {
    fprintf(stderr, "png2y4m: ");
    fprintf(stderr, fmt, a);
    fputs("\n", stderr);
    fputs(usage_text, stderr);
    return 2;
}

static void png_error_fn(png_structp png, png_const_charp msg) {
    const char *name = (const char *)png_get_error_ptr(png);
    fprintf(stderr, "png2y4m: %s: not a valid PNG: %s\n", name, msg);
    png_longjmp(png, 1);
}

static void png_warning_fn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* benign warnings (unknown chunks, sRGB profile notes) are not errors */
}

/* Read one PNG ('-' is standard input) into [0,1] RGB doubles. Returns 0 on success. */
static int read_png(const char *path, frame_t *out) {
    int from_stdin = strcmp(path, "-") == 0;
    const char *name = from_stdin ? "standard input" : path;
    FILE *fp = from_stdin ? stdin : fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "png2y4m: cannot open %s: %s%s\n", path, strerror(errno),
                strchr(path, '%') ? " (a pattern takes one %d, %i or %u conversion, as in %08d.png)"
                                  : "");
        return -1;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "png2y4m: %s is a directory, not a PNG file\n", name);
        fclose(fp);
        return -1;
    }
    unsigned char sig[8];
    if (fread(sig, 1, 8, fp) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        fprintf(stderr, "png2y4m: %s: not a PNG file (bad signature)\n", name);
        if (!from_stdin) fclose(fp);
        return -1;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, (png_voidp)name,
                                             png_error_fn, png_warning_fn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        fprintf(stderr, "png2y4m: out of memory reading %s\n", name);
        if (!from_stdin) fclose(fp);
        return -1;
    }
    png_bytep *rows = NULL;
    png_bytep data = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        free(data);
        png_destroy_read_struct(&png, &info, NULL);
        if (!from_stdin) fclose(fp);
        return -1;
    }
    png_init_io(png, fp);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info);
    png_uint_32 h = png_get_image_height(png, info);
    int color = png_get_color_type(png, info);
    int depth = png_get_bit_depth(png, info);

    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (color & PNG_COLOR_MASK_ALPHA || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    if (depth == 16) png_set_swap(png); /* host order (little endian) for uint16 access */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t rowbytes = png_get_rowbytes(png, info);
    int channels = png_get_channels(png, info);
    int outdepth = png_get_bit_depth(png, info);
    if (channels != 3 || (outdepth != 8 && outdepth != 16)) {
        fprintf(stderr, "png2y4m: %s: unsupported PNG layout (%d channels, %d bit)\n", name,
                channels, outdepth);
        png_longjmp(png, 1);
    }
    if (w == 0 || h == 0 || (size_t)w * h > (size_t)1 << 28) {
        fprintf(stderr, "png2y4m: %s: unsupported image size %ux%u\n", name, (unsigned)w,
                (unsigned)h);
        png_longjmp(png, 1);
    }
    data = malloc(rowbytes * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!data || !rows) {
        fprintf(stderr, "png2y4m: out of memory for %s\n", name);
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = data + y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);

    double *rgb = malloc(sizeof(double) * 3 * (size_t)w * h);
    if (!rgb) {
        fprintf(stderr, "png2y4m: out of memory for %s\n", name);
        png_longjmp(png, 1);
    }
    size_t n = (size_t)w * h * 3;
    if (outdepth == 16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, data + 2 * i, 2);
            rgb[i] = v / 65535.0;
        }
    } else {
        for (size_t i = 0; i < n; i++) rgb[i] = data[i] / 255.0;
    }
    free(rows);
    free(data);
    png_destroy_read_struct(&png, &info, NULL);
    if (!from_stdin) fclose(fp);
    out->width = w;
    out->height = h;
    out->rgb = rgb;
    return 0;
}

/* The output format: chroma subsampling (1 = halved in that direction) and the matrix. */
typedef struct {
    int hsub, vsub;
    double kr, kb; /* luma weights of R and B: BT.601 0.299/0.114, BT.709 0.2126/0.0722 */
    const char *tag;
} format_t;

static uint32_t chroma_w(const format_t *fmt, uint32_t w) { return fmt->hsub ? (w + 1) / 2 : w; }
static uint32_t chroma_h(const format_t *fmt, uint32_t h) { return fmt->vsub ? (h + 1) / 2 : h; }

static uint8_t clamp8(double v) {
    double r = v + 0.5;
    if (r < 0) return 0;
    if (r > 255) return 255;
    return (uint8_t)r;
}

/* Limited (studio) range: Y in [16, 235], Cb/Cr in [16, 240]. */
static void convert(const frame_t *f, const format_t *fmt, uint8_t *y, uint8_t *cb, uint8_t *cr) {
    uint32_t w = f->width, h = f->height, cw = chroma_w(fmt, w), ch = chroma_h(fmt, h);
    double kr = fmt->kr, kb = fmt->kb, kg = 1.0 - kr - kb;
    for (uint32_t j = 0; j < h; j++)
        for (uint32_t i = 0; i < w; i++) {
            const double *p = f->rgb + 3 * ((size_t)j * w + i);
            y[(size_t)j * w + i] = clamp8(16.0 + 219.0 * (kr * p[0] + kg * p[1] + kb * p[2]));
        }
    /* Each chroma sample averages its block (2x2, 2x1 or 1x1; JPEG, centered, siting); blocks
       at an odd right or bottom edge average the pixels they have. */
    for (uint32_t j = 0; j < ch; j++)
        for (uint32_t i = 0; i < cw; i++) {
            double sb = 0, sr = 0;
            int count = 0;
            for (uint32_t dy = 0; dy <= (uint32_t)fmt->vsub; dy++)
                for (uint32_t dx = 0; dx <= (uint32_t)fmt->hsub; dx++) {
                    uint32_t x = (fmt->hsub ? 2 * i : i) + dx, yy = (fmt->vsub ? 2 * j : j) + dy;
                    if (x >= w || yy >= h) continue;
                    const double *p = f->rgb + 3 * ((size_t)yy * w + x);
                    double luma = kr * p[0] + kg * p[1] + kb * p[2];
                    sb += (p[2] - luma) / (2.0 * (1.0 - kb));
                    sr += (p[0] - luma) / (2.0 * (1.0 - kr));
                    count++;
                }
            cb[(size_t)j * cw + i] = clamp8(128.0 + 224.0 * sb / count);
            cr[(size_t)j * cw + i] = clamp8(128.0 + 224.0 * sr / count);
        }
}

/* ---- inputs: file names and printf patterns ---- */

typedef struct {
    char **items;
    size_t n, cap;
} list_t;

static void list_add(list_t *l, char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->items = realloc(l->items, l->cap * sizeof(char *));
        if (!l->items) {
            fputs("png2y4m: out of memory listing the inputs\n", stderr);
            exit(1);
        }
    }
    l->items[l->n++] = s;
}

/* Length of the printf integer conversion at s ("%08d", "%-3i", "%u" ...), or 0 if s starts
   none. Flags, width and precision as printf has them for d/i/u; no length modifiers. */
static size_t int_conversion(const char *s) {
    if (s[0] != '%') return 0;
    size_t k = 1;
    while (s[k] == '-' || s[k] == '+' || s[k] == ' ' || s[k] == '0') k++;
    size_t digits = 0;
    while (isdigit((unsigned char)s[k])) k++, digits++;
    if (s[k] == '.') {
        k++;
        while (isdigit((unsigned char)s[k])) k++, digits++;
    }
    if (digits > 3) return 0; /* a width over 999 never names a file (NAME_MAX is 255) */
    return (s[k] == 'd' || s[k] == 'i' || s[k] == 'u') ? k + 1 : 0;
}

typedef struct {
    char *dir;    /* directory to scan ("." when the argument has no '/') */
    char *lead;   /* what goes before a matching name: the argument's directory part */
    char *prefix; /* literal text before the number, %% undone */
    char *spec;   /* the conversion, e.g. "%08d" */
    char *suffix; /* literal text after the number, %% undone */
    char conv;    /* 'd', 'i' or 'u' */
} pattern_t;

/* Append name[from, to) to out, turning %% into %. */
static void unescape(char *out, const char *name, size_t from, size_t to) {
    size_t o = strlen(out);
    for (size_t k = from; k < to; k++) {
        out[o++] = name[k];
        if (name[k] == '%' && name[k + 1] == '%') k++;
    }
    out[o] = 0;
}

/* 1: arg is a pattern, parsed into *p; 0: arg is a file name; -1: a bad pattern (reported).
   Only the last path component is a pattern, as in daala's png2y4m (dirname is literal). */
static int parse_pattern(const char *arg, pattern_t *p) {
    const char *slash = strrchr(arg, '/');
    const char *name = slash ? slash + 1 : arg;
    size_t at = 0, len = 0, n = strlen(name);
    for (size_t k = 0; k < n; k++) {
        if (name[k] == '%' && name[k + 1] == '%') {
            k++;
            continue;
        }
        size_t c = int_conversion(name + k);
        if (c && len) {
            fprintf(stderr, "png2y4m: pattern %s holds more than one number conversion; use one\n", arg);
            return -1;
        }
        if (c) at = k, len = c, k += c - 1;
    }
    if (!len) return 0;
    for (size_t k = 0; k < n; k++) {
        if (k == at) {
            k += len - 1;
        } else if (name[k] == '%' && name[k + 1] == '%') {
            k++;
        } else if (name[k] == '%') {
            fprintf(stderr,
                    "png2y4m: pattern %s has a '%%' that is not its number conversion; write a "
                    "literal %% as %%%%\n",
                    arg);
            return -1;
        }
    }
    size_t lead_len = slash ? (size_t)(name - arg) : 0;
    p->lead = strndup(arg, lead_len);
    p->dir = slash ? (lead_len > 1 ? strndup(arg, lead_len - 1) : strdup("/")) : strdup(".");
    p->spec = strndup(name + at, len);
    p->prefix = calloc(1, at + 1);
    p->suffix = calloc(1, n - at - len + 1);
    if (!p->lead || !p->dir || !p->spec || !p->prefix || !p->suffix) {
        fputs("png2y4m: out of memory\n", stderr);
        exit(1);
    }
    unescape(p->prefix, name, 0, at);
    unescape(p->suffix, name, at + len, n);
    p->conv = name[at + len - 1];
    return 1;
}

/* What the pattern prints for number v, into buf; its length, or -1 if v is out of range. */
static int format_number(const pattern_t *p, long long v, char *buf, size_t size) {
    if (p->conv == 'u' ? (v < 0 || v > (long long)UINT_MAX) : (v < INT_MIN || v > INT_MAX)) return -1;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    /* spec is one validated d/i/u conversion (int_conversion), so one int argument fits it */
    return p->conv == 'u' ? snprintf(buf, size, p->spec, (unsigned)v) : snprintf(buf, size, p->spec, (int)v);
#pragma GCC diagnostic pop
}

/* The number a file name stands for under the pattern, if the pattern prints exactly that
   name for it (daala's rule: the formatted name equals the file name). */
static int match_name(const pattern_t *p, const char *fname, long long *value) {
    size_t n = strlen(fname), lp = strlen(p->prefix), ls = strlen(p->suffix);
    if (n <= lp + ls || strncmp(fname, p->prefix, lp) != 0 || strcmp(fname + n - ls, p->suffix) != 0)
        return 0;
    char middle[512];
    size_t m = n - lp - ls;
    if (m >= sizeof(middle)) return 0;
    memcpy(middle, fname + lp, m);
    middle[m] = 0;
    size_t k = 0; /* spaces (width padding), a sign, digits, spaces (left alignment) */
    while (middle[k] == ' ') k++;
    if (middle[k] == '+' || middle[k] == '-') k++;
    size_t digits_at = k;
    while (isdigit((unsigned char)middle[k])) k++;
    if (k == digits_at) return 0;
    while (middle[k] == ' ') k++;
    if (k != m) return 0;
    errno = 0;
    long long v = strtoll(middle, NULL, 10);
    if (errno) return 0;
    char again[512];
    int len = format_number(p, v, again, sizeof(again));
    if (len < 0 || (size_t)len != m || strcmp(again, middle) != 0) return 0;
    *value = v;
    return 1;
}

typedef struct {
    long long value;
    char *path;
} numbered_t;

static int by_number(const void *a, const void *b) {
    long long x = ((const numbered_t *)a)->value, y = ((const numbered_t *)b)->value;
    return (x > y) - (x < y);
}

/* Add every file the pattern names, in numeric order; exits with an error if there is none. */
static void expand_pattern(const char *arg, const pattern_t *p, list_t *inputs) {
    DIR *d = opendir(p->dir);
    if (!d) {
        char why[256];
        snprintf(why, sizeof(why), "%s", strerror(errno));
        fail("cannot read the directory of pattern %s: %s", arg, why);
    }
    numbered_t *found = NULL;
    size_t count = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        long long v;
        if (!match_name(p, de->d_name, &v)) continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 64;
            found = realloc(found, cap * sizeof(numbered_t));
        }
        char *path = malloc(strlen(p->lead) + strlen(de->d_name) + 1);
        if (!found || !path) fail("out of memory listing %s%s", arg, "");
        strcpy(path, p->lead);
        strcat(path, de->d_name);
        found[count].value = v;
        found[count].path = path;
        count++;
    }
    closedir(d);
    if (count == 0) {
        char example[512];
        if (format_number(p, 1, example, sizeof(example)) < 0) example[0] = 0;
        fprintf(stderr,
                "png2y4m: no file in %s matches the pattern %s (it names files like %s%s%s); "
                "nothing written\n",
                p->dir, arg, p->prefix, example, p->suffix);
        undo_and_exit(1);
    }
    qsort(found, count, sizeof(numbered_t), by_number);
    for (size_t k = 0; k < count; k++) list_add(inputs, found[k].path);
    free(found);
}

/* ---- numbers on the command line ---- */

/* A whole non-negative decimal number up to INT_MAX, or -1. */
static long parse_count(const char *s) {
    if (!*s) return -1;
    for (const char *c = s; *c; c++)
        if (!isdigit((unsigned char)*c)) return -1;
    errno = 0;
    long v = strtol(s, NULL, 10);
    return (errno || v > INT_MAX) ? -1 : v;
}

/* ---- -i: the existing output's header ---- */

/* Check that the frames we are about to append fit the Y4M already in fd (size bytes): its
   width, height and chroma subsampling, and that it ends on a frame boundary. */
static void check_existing(int fd, off_t size, const char *outpath, const format_t *fmt,
                           uint32_t width, uint32_t height, const char *first_input) {
    char header[4096];
    ssize_t got = pread(fd, header, sizeof(header) - 1, 0);
    if (got < 0) fail("cannot read %s: %s", outpath, strerror(errno));
    header[got] = 0;
    char *nl = memchr(header, '\n', (size_t)got);
    if (strncmp(header, "YUV4MPEG2 ", 10) != 0 || !nl)
        fail("-i appends to a YUV4MPEG2 stream, but %s is not one; remove it or drop -i%s", outpath, "");
    *nl = 0;
    unsigned long w = 0, h = 0;
    const char *chroma = "420jpeg";
    for (char *tok = strtok(header + 10, " "); tok; tok = strtok(NULL, " ")) {
        if (tok[0] == 'W') w = strtoul(tok + 1, NULL, 10);
        if (tok[0] == 'H') h = strtoul(tok + 1, NULL, 10);
        if (tok[0] == 'C') chroma = tok + 1;
    }
    int hs, vs;
    if (strncmp(chroma, "420", 3) == 0) hs = vs = 1;
    else if (strncmp(chroma, "422", 3) == 0) hs = 1, vs = 0;
    else if (strcmp(chroma, "444") == 0) hs = vs = 0;
    else fail("%s has chroma format C%s, which png2y4m cannot append to", outpath, chroma);
    char have[96], want[96];
    snprintf(have, sizeof(have), "%lux%lu C%s", w, h, chroma);
    snprintf(want, sizeof(want), "%ux%u C%s", (unsigned)width, (unsigned)height, fmt->tag);
    if (w != width || h != height || hs != fmt->hsub || vs != fmt->vsub) {
        fprintf(stderr, "png2y4m: %s holds %s frames but %s makes %s; -i appends frames of one format\n",
                outpath, have, first_input, want);
        undo_and_exit(1);
    }
    off_t frame = 6 + (off_t)width * height + 2 * (off_t)chroma_w(fmt, width) * chroma_h(fmt, height);
    off_t body = size - (off_t)(nl - header + 1);
    if (body % frame != 0) {
        char sizes[96];
        snprintf(sizes, sizeof(sizes), "%lld bytes of frames is not a whole number of %lld-byte frames",
                 (long long)body, (long long)frame);
        fail("%s does not end on a frame boundary (%s); remove it or drop -i", outpath, sizes);
    }
}

int main(int argc, char **argv) {
    const char *outpath = NULL, *rate = NULL;
    long fps_n = -1, fps_d = -1, asp_n = -1, asp_d = -1;
    int incremental = 0, delete_after = 0;
    format_t fmt = {1, 1, 0.299, 0.114, "420jpeg"};
    enum { OPT_444 = 256, OPT_422, OPT_NO_DITHER, OPT_REC601, OPT_REC709 };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {"framerate-numerator", required_argument, NULL, 'f'},
        {"framerate-denominator", required_argument, NULL, 'F'},
        {"aspect-numerator", required_argument, NULL, 's'},
        {"aspect-denominator", required_argument, NULL, 'S'},
        {"chroma-444", no_argument, NULL, OPT_444},
        {"chroma-422", no_argument, NULL, OPT_422},
        {"no-dither", no_argument, NULL, OPT_NO_DITHER},
        {"rec601", no_argument, NULL, OPT_REC601},
        {"rec709", no_argument, NULL, OPT_REC709},
        {NULL, 0, NULL, 0},
    };
    int opt;
    long *number = NULL;
    while ((opt = getopt_long(argc, argv, "o:r:f:F:s:S:idh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'o': outpath = optarg; break;
        case 'r': rate = optarg; break;
        case 'f': number = &fps_n; break;
        case 'F': number = &fps_d; break;
        case 's': number = &asp_n; break;
        case 'S': number = &asp_d; break;
        case 'i': incremental = 1; break;
        case 'd': delete_after = 1; break;
        case OPT_444: fmt.hsub = fmt.vsub = 0, fmt.tag = "444"; break;
        case OPT_422: fmt.hsub = 1, fmt.vsub = 0, fmt.tag = "422"; break;
        case OPT_NO_DITHER: break; /* png2y4m rounds each sample; it has no dither to turn off */
        case OPT_REC601: fmt.kr = 0.299, fmt.kb = 0.114; break;
        case OPT_REC709: fmt.kr = 0.2126, fmt.kb = 0.0722; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
        if (number) {
            if ((*number = parse_count(optarg)) < 0)
                return usage_error("-f, -F, -s and -S take a whole number, got '%s'", optarg);
            number = NULL;
        }
    }
    if (!outpath || optind >= argc)
        return usage_error("need -o OUT.y4m and at least one input%s", "");

    unsigned rn = 24, rd = 1;
    if (rate && (fps_n >= 0 || fps_d >= 0))
        return usage_error("give the frame rate as -r N:D or as -f N -F D, not both%s", "");
    if (rate) {
        char extra;
        if (sscanf(rate, "%u:%u%c", &rn, &rd, &extra) != 2 || rn == 0 || rd == 0)
            return usage_error("frame rate must be N:D with positive integers, got '%s'", rate);
    }
    if (fps_n == 0 || fps_d == 0)
        return usage_error("the frame rate numerator and denominator must be positive%s", "");
    if (fps_n > 0) rn = (unsigned)fps_n;
    if (fps_d > 0) rd = (unsigned)fps_d;
    unsigned an = asp_n >= 0 ? (unsigned)asp_n : 1, ad = asp_d >= 0 ? (unsigned)asp_d : 1;
    if ((an == 0) != (ad == 0))
        return usage_error("the aspect ratio is two positive numbers, or 0:0 for unknown%s", "");
    int to_stdout = strcmp(outpath, "-") == 0;
    if (to_stdout && incremental)
        return usage_error("-i appends to an output file; it cannot write to standard output%s", "");

    /* Every input is known (and every pattern matched something) before any output exists. */
    list_t inputs = {0};
    int stdin_inputs = 0;
    for (int k = optind; k < argc; k++) {
        pattern_t p;
        int kind = strcmp(argv[k], "-") == 0 ? 0 : parse_pattern(argv[k], &p);
        if (kind < 0) {
            fputs(usage_text, stderr);
            return 2;
        }
        if (kind == 1) {
            expand_pattern(argv[k], &p, &inputs);
        } else {
            stdin_inputs += strcmp(argv[k], "-") == 0;
            list_add(&inputs, argv[k]);
        }
    }
    if (stdin_inputs > 1) return usage_error("standard input ('-') holds one PNG; give it once%s", "");

    FILE *out;
    off_t existing = 0;
    if (to_stdout) {
        out = stdout;
    } else {
        int fd = -1;
        struct stat st;
        if (incremental && stat(outpath, &st) == 0 && st.st_size > 0) {
            fd = open(outpath, O_RDWR);
            if (fd < 0) fail("cannot open %s to append: %s", outpath, strerror(errno));
            existing = st.st_size;
            append_fd = fd;
            append_from = existing;
        } else {
            if (strlen(outpath) + 16 >= sizeof(tmp_path))
                return usage_error("output path is too long: %s", outpath);
            snprintf(tmp_path, sizeof(tmp_path), "%s.tmpXXXXXX", outpath);
            fd = mkstemp(tmp_path);
            if (fd < 0) {
                tmp_path[0] = 0;
                fail("cannot create a temporary file beside %s: %s", outpath, strerror(errno));
            }
            mode_t mask = umask(0); /* mkstemp makes 0600; the output gets what fopen would give */
            umask(mask);
            if (fchmod(fd, 0666 & ~mask) != 0) fail("cannot set the mode of %s: %s", tmp_path, strerror(errno));
        }
        out = fdopen(fd, existing ? "r+b" : "wb");
        if (!out || (existing && fseeko(out, 0, SEEK_END) != 0))
            fail("cannot open %s: %s", outpath, strerror(errno));
    }

    uint32_t width = 0, height = 0;
    uint8_t *planes = NULL;
    size_t ysz = 0, csz = 0;
    for (size_t k = 0; k < inputs.n; k++) {
        const char *in = inputs.items[k];
        frame_t f;
        if (read_png(in, &f) != 0) {
            if (existing) fail("%s is left as it was (%s failed)", outpath, in);
            fail("no output written (%s failed)%s", in, "");
        }
        if (k == 0) {
            width = f.width;
            height = f.height;
            if (existing) check_existing(append_fd, existing, outpath, &fmt, width, height, in);
            else fprintf(out, "YUV4MPEG2 W%u H%u F%u:%u Ip A%u:%u C%s\n", width, height, rn, rd, an, ad, fmt.tag);
            ysz = (size_t)width * height;
            csz = (size_t)chroma_w(&fmt, width) * chroma_h(&fmt, height);
            planes = malloc(ysz + 2 * csz);
            if (!planes) fail("out of memory for %s%s", in, "");
        } else if (f.width != width || f.height != height) {
            char sizes[128];
            snprintf(sizes, sizeof(sizes), "%ux%u but the first input is %ux%u", f.width, f.height,
                     width, height);
            fail("%s is %s; every input must have one size", in, sizes);
        }
        convert(&f, &fmt, planes, planes + ysz, planes + ysz + csz);
        free(f.rgb);
        if (fputs("FRAME\n", out) == EOF || fwrite(planes, 1, ysz + 2 * csz, out) != ysz + 2 * csz)
            fail("write to %s failed: %s", outpath, strerror(errno));
    }
    free(planes);
    if (to_stdout) {
        if (fflush(out) != 0) fail("write to standard output failed: %s%s", strerror(errno), "");
    } else {
        if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0)
            fail("write to %s failed: %s", outpath, strerror(errno));
        append_fd = -1; /* fclose closed it; the frames are in */
        if (tmp_path[0]) {
            if (rename(tmp_path, outpath) != 0) fail("cannot rename to %s: %s", outpath, strerror(errno));
            tmp_path[0] = 0;
        }
    }
    int status = 0;
    for (size_t k = 0; delete_after && k < inputs.n; k++) {
        const char *in = inputs.items[k];
        if (strcmp(in, "-") != 0 && unlink(in) != 0 && errno != ENOENT) {
            fprintf(stderr, "png2y4m: %s is written, but -d could not delete %s: %s\n", outpath, in,
                    strerror(errno));
            status = 1;
        }
    }
    return status;
}
