/*
 * edgekd: run distilled, quantized ONNX students from C, C++, Swift/Objective-C or an
 * Android NDK/JNI wrapper. Link libedgekd.so (cargo build -p edgekd-capi --release) or
 * libedgekd.a (cargo rustc -p edgekd-capi --lib --crate-type staticlib --release; link it
 * with -lpthread -ldl -lm). See targets/README.md.
 *
 * Errors: functions returning a pointer return NULL, functions returning ptrdiff_t return -1;
 * edgekd_last_error() then says why (the message is kept per thread). One model may be run
 * from several threads at once.
 */
#ifndef EDGEKD_H
#define EDGEKD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A loaded model. */
typedef struct EdgekdModel EdgekdModel;

/* Loads an ONNX model from a file. threads: threads per inference (0 means 1). */
EdgekdModel *edgekd_model_load(const char *path, uint32_t threads);

/* Loads an ONNX model from len bytes in memory (e.g. an app's bundled asset). */
EdgekdModel *edgekd_model_load_bytes(const uint8_t *bytes, size_t len, uint32_t threads);

/* f32 values per sample the model takes (784 for a 28x28 grayscale image); 0 for NULL. */
size_t edgekd_model_input_len(const EdgekdModel *model);

/* The engine running the model: "native" or "tract". Owned by the model. */
const char *edgekd_model_backend(const EdgekdModel *model);

/* Runs batch samples (batch * edgekd_model_input_len floats) and writes batch x classes
 * logits, row-major, into output, which holds capacity floats. Returns the number of floats
 * written, or -1. */
ptrdiff_t edgekd_model_run(const EdgekdModel *model, const float *input, size_t batch,
                           float *output, size_t capacity);

/* As edgekd_model_run, from 8-bit pixels (planar C x H x W per sample), normalized as the
 * model's metadata says (edgekd's exports record it; otherwise pixels / 255). */
ptrdiff_t edgekd_model_run_pixels(const EdgekdModel *model, const uint8_t *pixels,
                                  size_t batch, float *output, size_t capacity);

/* Frees a model; NULL is ignored. */
void edgekd_model_free(EdgekdModel *model);

/* Why the last call on this thread failed ("" if it did not); valid until the next call. */
const char *edgekd_last_error(void);

/* The library version, e.g. "0.1.0". */
const char *edgekd_version(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGEKD_H */
