#!/usr/bin/env bash
# Links the board build (board/cross-build.sh, target/cross) again with its symbols, into
# target/cross-sym/dermedge, for scripts/instruction-profile.sh, in about a minute: the same
# compiled crates, linked through a wrapper of aarch64-linux-gnu-gcc that drops rustc's
# --strip-all (a profile with strip = false would compile every crate again). The stripped board
# binary is linked again afterwards, as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
wrapper=$(mktemp -d)
trap 'rm -rf "$wrapper"' EXIT
cat >"$wrapper/aarch64-linux-gnu-gcc" <<'SH'
#!/usr/bin/env bash
args=()
for arg in "$@"; do
  [ "$arg" = "-Wl,--strip-all" ] || args+=("$arg")
done
exec /usr/bin/aarch64-linux-gnu-gcc "${args[@]}"
SH
chmod +x "$wrapper/aarch64-linux-gnu-gcc"
binary=target/cross/aarch64-unknown-linux-gnu/board/dermedge
touch src/main.rs
LINKER_DIR=$wrapper board/cross-build.sh >/dev/null
mkdir -p target/cross-sym
cp "$binary" target/cross-sym/dermedge
touch src/main.rs
board/cross-build.sh >/dev/null
file target/cross-sym/dermedge
