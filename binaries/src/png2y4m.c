/*
 * png2y4m: convert PNG frames into one YUV4MPEG2 stream (4:2:0, 8-bit, BT.601 limited range).
 *
 *   png2y4m -o OUT.y4m [-r N:D] IN.png [IN.png ...]
 *
 * Every input must share one size. The output is written to a temporary file beside OUT and
 * renamed into place only when every frame converted, so a failure never leaves a partial
 * OUT behind. Inputs may be 1-16 bit gray, gray+alpha, RGB, RGBA or palette; alpha is dropped.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *usage_text =
    "usage: png2y4m -o OUT.y4m [-r N:D] IN.png [IN.png ...]\n"
    "  -o OUT.y4m  output file (written atomically)\n"
    "  -r N:D      frame rate written in the header (default 24:1)\n"
    "Converts PNG frames of one size (8/16-bit gray, RGB, RGBA) to YUV4MPEG2 4:2:0,\n"
    "8-bit, BT.601 limited range.\n";

typedef struct {
    uint32_t width, height;
    /* R, G, B in [0, 1], row-major, 3 values per pixel */
    double *rgb;
} frame_t;

static char tmp_path[4096];

static void fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "png2y4m: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    if (tmp_path[0]) unlink(tmp_path);
    exit(1);
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

/* Read one PNG into linear-coded [0,1] RGB doubles. Returns 0 on success. */
static int read_png(const char *path, frame_t *out) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "png2y4m: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    unsigned char sig[8];
    if (fread(sig, 1, 8, fp) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        fprintf(stderr, "png2y4m: %s: not a PNG file (bad signature)\n", path);
        fclose(fp);
        return -1;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, (png_voidp)path,
                                             png_error_fn, png_warning_fn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        fprintf(stderr, "png2y4m: out of memory reading %s\n", path);
        fclose(fp);
        return -1;
    }
    png_bytep *rows = NULL;
    png_bytep data = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        free(data);
        png_destroy_read_struct(&png, &info, NULL);
        fclose(fp);
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
        fprintf(stderr, "png2y4m: %s: unsupported PNG layout (%d channels, %d bit)\n", path,
                channels, outdepth);
        png_longjmp(png, 1);
    }
    if (w == 0 || h == 0 || (size_t)w * h > (size_t)1 << 28) {
        fprintf(stderr, "png2y4m: %s: unsupported image size %ux%u\n", path, (unsigned)w,
                (unsigned)h);
        png_longjmp(png, 1);
    }
    data = malloc(rowbytes * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!data || !rows) {
        fprintf(stderr, "png2y4m: out of memory for %s\n", path);
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = data + y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);

    double *rgb = malloc(sizeof(double) * 3 * (size_t)w * h);
    if (!rgb) {
        fprintf(stderr, "png2y4m: out of memory for %s\n", path);
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
    fclose(fp);
    out->width = w;
    out->height = h;
    out->rgb = rgb;
    return 0;
}

static uint8_t clamp8(double v) {
    double r = v + 0.5;
    if (r < 0) return 0;
    if (r > 255) return 255;
    return (uint8_t)r;
}

/* BT.601 with limited (studio) range: Y in [16, 235], Cb/Cr in [16, 240]. */
static void convert(const frame_t *f, uint8_t *y, uint8_t *cb, uint8_t *cr) {
    uint32_t w = f->width, h = f->height, cw = (w + 1) / 2, ch = (h + 1) / 2;
    for (uint32_t j = 0; j < h; j++)
        for (uint32_t i = 0; i < w; i++) {
            const double *p = f->rgb + 3 * ((size_t)j * w + i);
            y[(size_t)j * w + i] = clamp8(16.0 + 219.0 * (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]));
        }
    /* 4:2:0 with JPEG (centered) siting: each chroma sample averages its 2x2 block; blocks at
       an odd right or bottom edge average the pixels they have. */
    for (uint32_t j = 0; j < ch; j++)
        for (uint32_t i = 0; i < cw; i++) {
            double sb = 0, sr = 0;
            int count = 0;
            for (uint32_t dy = 0; dy < 2; dy++)
                for (uint32_t dx = 0; dx < 2; dx++) {
                    uint32_t x = 2 * i + dx, yy = 2 * j + dy;
                    if (x >= w || yy >= h) continue;
                    const double *p = f->rgb + 3 * ((size_t)yy * w + x);
                    sb += -0.168736 * p[0] - 0.331264 * p[1] + 0.5 * p[2];
                    sr += 0.5 * p[0] - 0.418688 * p[1] - 0.081312 * p[2];
                    count++;
                }
            cb[(size_t)j * cw + i] = clamp8(128.0 + 224.0 * sb / count);
            cr[(size_t)j * cw + i] = clamp8(128.0 + 224.0 * sr / count);
        }
}

int main(int argc, char **argv) {
    const char *outpath = NULL, *rate = "24:1";
    int opt;
    while ((opt = getopt(argc, argv, "o:r:h")) != -1) {
        switch (opt) {
        case 'o': outpath = optarg; break;
        case 'r': rate = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (!outpath || optind >= argc) {
        fputs("png2y4m: need -o OUT.y4m and at least one input PNG\n", stderr);
        fputs(usage_text, stderr);
        return 2;
    }
    unsigned rn, rd;
    char extra;
    if (sscanf(rate, "%u:%u%c", &rn, &rd, &extra) != 2 || rn == 0 || rd == 0) {
        fprintf(stderr, "png2y4m: frame rate must be N:D with positive integers, got '%s'\n", rate);
        return 2;
    }
    if (strlen(outpath) + 16 >= sizeof(tmp_path)) {
        fprintf(stderr, "png2y4m: output path is too long: %s\n", outpath);
        return 2;
    }
    snprintf(tmp_path, sizeof(tmp_path), "%s.tmpXXXXXX", outpath);
    int fd = mkstemp(tmp_path);
    if (fd < 0) {
        tmp_path[0] = 0;
        fail("cannot create a temporary file beside %s: %s", outpath, strerror(errno));
    }
    FILE *out = fdopen(fd, "wb");
    if (!out) fail("cannot open %s: %s", tmp_path, strerror(errno));

    uint32_t width = 0, height = 0;
    uint8_t *planes = NULL;
    for (int k = optind; k < argc; k++) {
        frame_t f;
        if (read_png(argv[k], &f) != 0) fail("no output written (%s%s)", "input failed", "");
        if (k == optind) {
            width = f.width;
            height = f.height;
            fprintf(out, "YUV4MPEG2 W%u H%u F%u:%u Ip A1:1 C420jpeg\n", width, height, rn, rd);
            planes = malloc((size_t)width * height + 2 * (size_t)((width + 1) / 2) * ((height + 1) / 2));
            if (!planes) fail("out of memory for %s%s", argv[k], "");
        } else if (f.width != width || f.height != height) {
            char sizes[128];
            snprintf(sizes, sizeof(sizes), "%ux%u but the first input is %ux%u", f.width, f.height,
                     width, height);
            fail("%s is %s; every input must have one size", argv[k], sizes);
        }
        size_t ysz = (size_t)width * height, csz = (size_t)((width + 1) / 2) * ((height + 1) / 2);
        convert(&f, planes, planes + ysz, planes + ysz + csz);
        free(f.rgb);
        if (fputs("FRAME\n", out) == EOF || fwrite(planes, 1, ysz + 2 * csz, out) != ysz + 2 * csz)
            fail("write to %s failed: %s", tmp_path, strerror(errno));
    }
    free(planes);
    if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0)
        fail("write to %s failed: %s", tmp_path, strerror(errno));
    if (rename(tmp_path, outpath) != 0) fail("cannot rename to %s: %s", outpath, strerror(errno));
    return 0;
}
