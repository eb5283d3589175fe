/* Calls libedgekd through edgekd.h only, as an app would: load from a file and from memory,
 * run floats and pixels, check the error paths, free. Prints the logits for the Rust side to
 * compare with the runtime's own. Usage: classify MODEL */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgekd.h"

#define CHECK(cond, what)                                                                   \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "FAILED: %s (last error: %s)\n", what, edgekd_last_error());    \
            return 1;                                                                       \
        }                                                                                   \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    printf("version %s\n", edgekd_version());

    CHECK(edgekd_model_load("/nonexistent/model.onnx", 1) == NULL, "a missing file loads");
    CHECK(strstr(edgekd_last_error(), "/nonexistent/model.onnx") != NULL, "error names the file");

    EdgekdModel *model = edgekd_model_load(argv[1], 1);
    CHECK(model != NULL, "load");
    CHECK(edgekd_last_error()[0] == '\0', "error cleared after success");
    size_t n = edgekd_model_input_len(model);
    CHECK(n > 0, "input length");
    printf("backend %s input %zu\n", edgekd_model_backend(model), n);

    const size_t batch = 2;
    float *input = malloc(batch * n * sizeof(float));
    unsigned char *pixels = malloc(batch * n);
    for (size_t i = 0; i < batch * n; i++) {
        pixels[i] = (unsigned char)((i * 37) % 256);
        input[i] = (float)pixels[i] / 255.0f;
    }
    float out[64];
    ptrdiff_t written = edgekd_model_run(model, input, batch, out, 64);
    CHECK(written > 0 && written % batch == 0, "run");
    printf("logits");
    for (ptrdiff_t i = 0; i < written; i++) printf(" %.9g", out[i]);
    printf("\n");

    CHECK(edgekd_model_run(model, input, batch, out, 1) == -1, "a short output buffer is refused");
    CHECK(strstr(edgekd_last_error(), "output buffer") != NULL, "error names the buffer");
    CHECK(edgekd_model_run(NULL, input, batch, out, 64) == -1, "a NULL model is refused");

    float from_pixels[64];
    CHECK(edgekd_model_run_pixels(model, pixels, batch, from_pixels, 64) == written, "pixels");
    printf("pixels");
    for (ptrdiff_t i = 0; i < written; i++) printf(" %.9g", from_pixels[i]);
    printf("\n");

    /* The same model from memory gives the same logits. */
    FILE *f = fopen(argv[1], "rb");
    CHECK(f != NULL, "open");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = malloc((size_t)size);
    CHECK(fread(bytes, 1, (size_t)size, f) == (size_t)size, "read");
    fclose(f);
    EdgekdModel *again = edgekd_model_load_bytes(bytes, (size_t)size, 2);
    CHECK(again != NULL, "load from memory");
    float out2[64];
    CHECK(edgekd_model_run(again, input, batch, out2, 64) == written, "run from memory");
    CHECK(memcmp(out, out2, (size_t)written * sizeof(float)) == 0, "memory = file");
    CHECK(edgekd_model_load_bytes(bytes, 10, 1) == NULL, "truncated bytes load");

    edgekd_model_free(again);
    edgekd_model_free(model);
    edgekd_model_free(NULL);
    free(bytes);
    free(input);
    free(pixels);
    printf("ok\n");
    return 0;
}
