#!/usr/bin/env bash
# The runtime library's tests built for aarch64 with Debian's cross toolchain (as
# board/cross-build.sh) and run under qemu-aarch64-static on two CPU models: cortex-a53 (NEON,
# no dotprod: the aarch64-neon kernel set) and qemu's max (dotprod: aarch64-neon-sdot as well).
# Built with the camera feature, as the board binary is, so the two builds share their dependencies.
# Usage: [AARCH64_TEST_CPUS="cortex-a53 cortex-a76"] scripts/test-aarch64.sh [TEST FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
for cpu in ${AARCH64_TEST_CPUS:-cortex-a53 max}; do
  echo "=== aarch64 library tests under qemu -cpu $cpu"
  QEMU_CPU=$cpu cargo test --locked --profile board --target aarch64-unknown-linux-gnu \
    --target-dir target/cross -p dermedge --features camera --lib -- "$@"
done
