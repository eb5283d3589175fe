#!/usr/bin/env bash
# Builds edgekd's device binary (`run` and `bench` on the runtime crate, no training code) for
# one target, installing what is missing where it can. See targets/README.md.
#
#   targets/build.sh TARGET [--profile device] [--tract] [--no-install] [--target-dir DIR]
#
# Prints the binary's path on the last line of stdout; everything else goes to stderr.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: targets/build.sh TARGET [options]

Targets:
  aarch64-unknown-linux-gnu       Raspberry Pi 4/5/Zero 2, 64-bit Raspberry Pi OS / Debian
  armv7-unknown-linux-gnueabihf   Raspberry Pi 2/3, 32-bit OS
  aarch64-unknown-linux-musl      static, any 64-bit ARM Linux board
  x86_64-unknown-linux-musl       static, any x86_64 Linux box
  armv7-unknown-linux-musleabihf  static 32-bit ARM (std built with nightly, linked by zig)
  aarch64-linux-android           Android arm64 (needs cargo-ndk and the Android NDK; without
  armv7-linux-androideabi         them only the C library is built, as a static archive)

Options:
  --profile NAME    cargo profile (default: device = fat LTO, 1 codegen unit, panic=abort,
                    stripped; device-test skips LTO for quicker builds)
  --tract           also build tract in, for ONNX operators the native engine lacks (~+10 MB)
  --no-install      fail instead of installing a missing rustup target or Debian package
  --target-dir DIR  cargo's target directory (default: $CARGO_TARGET_DIR or ./target)
EOF
    exit 2
}

say() { echo "build.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

[ $# -ge 1 ] || usage
target="$1"
shift
profile=device
features=()
install=1
target_dir="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --tract) features=(--features tract); shift ;;
    --no-install) install=0; shift ;;
    --target-dir) target_dir="${2:?--target-dir needs a directory}"; shift 2 ;;
    -h | --help) usage ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
cd "$(dirname "$0")/.."

# What each target links with and runs under (the same as .cargo/config.toml), as Debian
# packages.
case "$target" in
aarch64-unknown-linux-gnu) packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user); tools=(aarch64-linux-gnu-gcc) ;;
aarch64-unknown-linux-musl) packages=(gcc-aarch64-linux-gnu qemu-user); tools=(aarch64-linux-gnu-gcc) ;;
armv7-unknown-linux-gnueabihf) packages=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user); tools=(arm-linux-gnueabihf-gcc) ;;
armv7-unknown-linux-musleabihf) packages=(qemu-user); tools=() ;;
x86_64-unknown-linux-musl) packages=(); tools=(cc) ;;
aarch64-linux-android | armv7-linux-androideabi) packages=(); tools=() ;;
*) die "unknown target '$target' (see --help for the list)" ;;
esac

apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$install" = 1 ] || die "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})"
    command -v apt-get >/dev/null || die "missing ${missing[*]}, and this is not a Debian/Ubuntu system: install a cross gcc for $target yourself"
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    say "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
}

rustup_target() {
    rustup target list --installed 2>/dev/null | grep -qx "$target" && return 0
    [ "$install" = 1 ] || die "rustup target $target is not installed (rustup target add $target)"
    say "adding rustup target $target"
    rustup target add "$target" >&2 ||
        die "rustup could not download the standard library for $target (rustup's server must be reachable)"
}

command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
if command -v dpkg >/dev/null && [ ${#packages[@]} -gt 0 ]; then
    apt_install "${packages[@]}"
fi
for t in "${tools[@]}"; do
    command -v "$t" >/dev/null || die "$t is not on PATH (the linker .cargo/config.toml names for $target)"
done

start=$(date +%s)
cargo_args=(--profile "$profile" --no-default-features "${features[@]}" --target "$target" --target-dir "$target_dir")
case "$target" in
armv7-unknown-linux-musleabihf)
    # rustup ships no std for this target: build it from source with nightly, and link with
    # zig (cargo-zigbuild), which carries musl's crt objects that a source-built std lacks.
    if ! rustup toolchain list | grep -q '^nightly'; then
        [ "$install" = 1 ] || die "building std for $target needs the nightly toolchain (rustup toolchain install nightly --component rust-src)"
        rustup toolchain install nightly --profile minimal --component rust-src >&2 || die "could not install nightly"
    fi
    rustup component add rust-src --toolchain nightly >&2 || die "could not add rust-src to nightly"
    zig_venv="${EDGEKD_ZIG_VENV:-$HOME/.cache/edgekd-zig}"
    [ -d "$zig_venv/bin" ] && export PATH="$zig_venv/bin:$PATH"
    if ! command -v zig >/dev/null && ! python3 -c 'import ziglang' 2>/dev/null; then
        [ "$install" = 1 ] || die "zig is missing (python3 -m pip install ziglang)"
        say "installing zig from PyPI into $zig_venv"
        python3 -m venv "$zig_venv" && "$zig_venv/bin/pip" install -q ziglang >&2 || die "pip install ziglang failed"
        export PATH="$zig_venv/bin:$PATH"
    fi
    if ! command -v cargo-zigbuild >/dev/null; then
        [ "$install" = 1 ] || die "cargo-zigbuild is missing (cargo install cargo-zigbuild)"
        cargo install cargo-zigbuild >&2 || die "cargo install cargo-zigbuild failed"
    fi
    RUSTFLAGS="${RUSTFLAGS:-} -C link-self-contained=no" \
        cargo +nightly zigbuild -Zbuild-std=std,panic_abort "${cargo_args[@]}" --bin edgekd >&2
    binary="$target_dir/$target/$profile/edgekd"
    ;;
aarch64-linux-android | armv7-linux-androideabi)
    rustup_target
    if command -v cargo-ndk >/dev/null && [ -n "${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}" ]; then
        # cargo-ndk picks the NDK's clang as linker and passes --target itself.
        cargo ndk --target "$target" --platform 24 -- build --profile "$profile" --no-default-features \
            "${features[@]}" --target-dir "$target_dir" --bin edgekd >&2
        binary="$target_dir/$target/$profile/edgekd"
    else
        say "no Android NDK (cargo-ndk and ANDROID_NDK_HOME): building the C library as a static archive only"
        # The C library unwinds (its entry points turn panics into errors): the capi profile
        # in place of the binary's panic=abort device profile.
        lib_profile=$profile
        [ "$profile" = device ] && lib_profile=capi
        cargo rustc -p edgekd-capi --lib --crate-type staticlib --profile "$lib_profile" --target "$target" --target-dir "$target_dir" >&2
        binary="$target_dir/$target/$lib_profile/libedgekd.a"
    fi
    ;;
*)
    rustup_target
    cargo build "${cargo_args[@]}" --bin edgekd >&2
    binary="$target_dir/$target/$profile/edgekd"
    ;;
esac
[ -f "$binary" ] || die "cargo finished but $binary is missing"
seconds=$(($(date +%s) - start))
size=$(stat -c %s "$binary")
say "$target ($profile): $binary, $((size / 1024)) KiB, built in ${seconds}s"
echo "$binary"
