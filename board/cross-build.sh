#!/usr/bin/env bash
# Cross-builds `dermedge` with the camera feature for aarch64-unknown-linux-gnu on a Debian 12
# x86-64 machine, where rustup cannot add targets: Debian's rustc-web/cargo-web (1.96) with its
# arm64 standard library, the aarch64 GNU toolchain, and clang for v4l's bindgen.
#   board/cross-build.sh --install   # once, as root: the Debian packages
#   board/cross-build.sh             # -> target/cross/aarch64-unknown-linux-gnu/board/dermedge
# The binary runs here under qemu-aarch64-static (timings under qemu mean nothing for the board).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--install" ]; then
  export DEBIAN_FRONTEND=noninteractive
  dpkg --add-architecture arm64
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    qemu-user-static clang libclang-dev
  apt-get install -y -qq --no-install-recommends rustc-web cargo-web libstd-rust-web-dev:arm64
  exit 0
fi

# Debian's cargo and rustc, not rustup's: keep ~/.cargo/bin off PATH. LINKER_DIR (optional) goes
# first, for a linker of the same name (scripts/relink-unstripped.sh).
export PATH=${LINKER_DIR:+$LINKER_DIR:}/usr/sbin:/usr/bin:/sbin:/bin
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# No -L for qemu: with it, threaded programs hang; qemu finds libc6:arm64 by itself.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu"
cargo --version
rustc --version
cargo build --locked --profile board --target aarch64-unknown-linux-gnu --features camera \
  -p dermedge --bin dermedge --target-dir target/cross
ls -l target/cross/aarch64-unknown-linux-gnu/board/dermedge
