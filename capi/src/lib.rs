//! A C ABI over [`edgekd_runtime`]: load a model, run batches of f32 (or raw 8-bit pixels,
//! normalized the way the model's metadata says), free it. No JNI and no allocation the caller
//! must free besides the model, so an Android app (through a thin JNI or NDK wrapper), an iOS
//! app or plain C can call it alike. The header is `include/edgekd.h`.
//!
//! Every function catches panics and reports failure through its return value; the reason is
//! kept per thread for [`edgekd_last_error`]. That needs unwinding: build the library with the
//! `capi` profile (`cargo build -p edgekd-capi --profile capi`), not the binary's `device`
//! profile, whose `panic = "abort"` would end the app instead.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;

use edgekd_runtime::{Backend, Model, Options, Preprocess};

/// A loaded model, opaque to C.
pub struct EdgekdModel {
    model: Model,
    input_len: usize,
    preprocess: Option<Preprocess>,
    backend: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: impl Into<String>) {
    let text = message.into().replace('\0', " ");
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(text).unwrap_or_default());
}

/// Runs `f`, turning an error or a panic into `failed` and a message for `edgekd_last_error`.
fn guarded<T>(failed: T, f: impl FnOnce() -> Result<T, String>) -> T {
    match catch_unwind(AssertUnwindSafe(|| {
        #[cfg(feature = "test-panic")]
        if std::env::var_os("EDGEKD_CAPI_TEST_PANIC").is_some() {
            panic!("EDGEKD_CAPI_TEST_PANIC is set");
        }
        f()
    })) {
        Ok(Ok(v)) => {
            set_error("");
            v
        }
        Ok(Err(message)) => {
            set_error(message);
            failed
        }
        Err(_) => {
            set_error("edgekd panicked (a bug: please report it with the model)");
            failed
        }
    }
}

fn wrap(model: Model) -> Result<*mut EdgekdModel, String> {
    let info = model.info();
    let input_len = info
        .inputs
        .first()
        .and_then(|i| i.sample_len())
        .ok_or("the model's input has free dimensions besides the batch")?;
    let preprocess = Preprocess::for_model(info).filter(|p| p.len() == input_len);
    let backend = CString::new(model.backend()).unwrap_or_default();
    Ok(Box::into_raw(Box::new(EdgekdModel {
        model,
        input_len,
        preprocess,
        backend,
    })))
}

fn options(threads: u32) -> Options {
    Options {
        backend: Backend::Auto,
        threads: threads.max(1) as usize,
        ..Default::default()
    }
}

/// Loads an ONNX model from a file (UTF-8 path). `threads`: threads per inference (0 means 1).
/// Returns NULL on failure.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn edgekd_model_load(path: *const c_char, threads: u32) -> *mut EdgekdModel {
    guarded(ptr::null_mut(), || {
        if path.is_null() {
            return Err("path is NULL".into());
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let path = unsafe { CStr::from_ptr(path) }
            .to_str()
            .map_err(|_| "path is not UTF-8".to_string())?;
        let model = Model::load_with(Path::new(path), options(threads))
            .map_err(|e| format!("loading {path}: {e}"))?;
        wrap(model)
    })
}

/// Loads an ONNX model from `len` bytes in memory (an app's bundled asset). Returns NULL on
/// failure.
///
/// # Safety
/// `bytes` must point to `len` readable bytes (or be NULL).
#[no_mangle]
pub unsafe extern "C" fn edgekd_model_load_bytes(
    bytes: *const u8,
    len: usize,
    threads: u32,
) -> *mut EdgekdModel {
    guarded(ptr::null_mut(), || {
        if bytes.is_null() {
            return Err("bytes is NULL".into());
        }
        // SAFETY: the caller guarantees `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(bytes, len) };
        wrap(Model::from_bytes_with(bytes, options(threads)).map_err(|e| e.to_string())?)
    })
}

/// f32 values per sample the model takes (e.g. 784 for a 28x28 grayscale image); 0 if
/// `model` is NULL.
///
/// # Safety
/// `model` must be NULL or a live pointer from `edgekd_model_load*`.
#[no_mangle]
pub unsafe extern "C" fn edgekd_model_input_len(model: *const EdgekdModel) -> usize {
    // SAFETY: per the contract above.
    unsafe { model.as_ref() }.map_or(0, |m| m.input_len)
}

/// The engine running the model ("native", "tract"), owned by the model.
///
/// # Safety
/// `model` must be NULL or a live pointer from `edgekd_model_load*`.
#[no_mangle]
pub unsafe extern "C" fn edgekd_model_backend(model: *const EdgekdModel) -> *const c_char {
    // SAFETY: per the contract above.
    unsafe { model.as_ref() }.map_or(ptr::null(), |m| m.backend.as_ptr())
}

/// The model behind `model` and the `batch` samples of input at `data`.
///
/// # Safety
/// `model` must be NULL or live; `data` NULL or pointing to `batch * input_len` values.
unsafe fn batch_of<'a, T>(
    model: *const EdgekdModel,
    data: *const T,
    batch: usize,
) -> Result<(&'a EdgekdModel, &'a [T]), String> {
    // SAFETY: per the contract above.
    let m = unsafe { model.as_ref() }.ok_or("model is NULL")?;
    let len = batch.checked_mul(m.input_len).ok_or("batch too large")?;
    if data.is_null() {
        return Err("input is NULL".into());
    }
    // SAFETY: the caller guarantees `batch * input_len` readable values.
    Ok((m, unsafe { std::slice::from_raw_parts(data, len) }))
}

fn run(
    m: &EdgekdModel,
    input: &[f32],
    batch: usize,
    output: *mut f32,
    capacity: usize,
) -> Result<isize, String> {
    let logits = m.model.logits(input, batch).map_err(|e| e.to_string())?;
    if logits.data.len() > capacity {
        return Err(format!(
            "the output buffer holds {capacity} floats; {} are needed ({batch} x {})",
            logits.data.len(),
            logits.data.len() / batch.max(1)
        ));
    }
    if output.is_null() {
        return Err("output is NULL".into());
    }
    // SAFETY: the caller guarantees `capacity` writable floats at `output`; we write fewer.
    unsafe { ptr::copy_nonoverlapping(logits.data.as_ptr(), output, logits.data.len()) };
    Ok(logits.data.len() as isize)
}

/// Runs `batch` samples of `edgekd_model_input_len` f32 values each and writes the logits
/// (batch x classes, row-major) to `output`, which holds `capacity` floats. Returns the number
/// of floats written, or -1 on failure.
///
/// # Safety
/// `model` must be a live pointer from `edgekd_model_load*`; `input` must point to
/// `batch * edgekd_model_input_len(model)` floats and `output` to `capacity` floats.
#[no_mangle]
pub unsafe extern "C" fn edgekd_model_run(
    model: *const EdgekdModel,
    input: *const f32,
    batch: usize,
    output: *mut f32,
    capacity: usize,
) -> isize {
    guarded(-1, || {
        // SAFETY: per the contract above.
        let (m, input) = unsafe { batch_of(model, input, batch) }?;
        run(m, input, batch, output, capacity)
    })
}

/// Like `edgekd_model_run`, from 8-bit pixels (planar C x H x W per sample, as many as the
/// input takes), normalized as the model's metadata says (edgekd's exports record it; other
/// models get pixels / 255).
///
/// # Safety
/// As `edgekd_model_run`, with `pixels` pointing to `batch * edgekd_model_input_len(model)`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn edgekd_model_run_pixels(
    model: *const EdgekdModel,
    pixels: *const u8,
    batch: usize,
    output: *mut f32,
    capacity: usize,
) -> isize {
    guarded(-1, || {
        // SAFETY: per the contract above.
        let (m, pixels) = unsafe { batch_of(model, pixels, batch) }?;
        let input = match &m.preprocess {
            Some(p) => p.apply(pixels),
            None => pixels.iter().map(|&p| p as f32 / 255.0).collect(),
        };
        run(m, &input, batch, output, capacity)
    })
}

/// Frees a model (NULL is ignored).
///
/// # Safety
/// `model` must be NULL or a pointer from `edgekd_model_load*` not freed before.
#[no_mangle]
pub unsafe extern "C" fn edgekd_model_free(model: *mut EdgekdModel) {
    if !model.is_null() {
        // SAFETY: per the contract above, we own it now.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// Why the last call on this thread failed ("" if it did not). The string stays valid until
/// this thread's next edgekd call.
#[no_mangle]
pub extern "C" fn edgekd_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library's version, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn edgekd_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

// The header promises that one model may be run from several threads at once.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<EdgekdModel>();
};
