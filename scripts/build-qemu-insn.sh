#!/usr/bin/env bash
# Builds a qemu-aarch64 (user mode) with TCG plugins and qemu's `insn` plugin, which counts the
# guest instructions a program executes, into target/qemu-insn/: Debian 12's qemu-user has no
# plugin support. Also builds the `hotblocks` plugin (execution counts per translated block, all
# of them instead of the top 20) for scripts/instruction-profile.sh. Uses Debian's qemu 7.2 source package (adds a deb-src entry), as root.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/target/qemu-insn
[ -x "$out/qemu-aarch64" ] && [ -f "$out/libinsn.so" ] && [ -f "$out/libhotblocks.so" ] &&
  { echo "$out is built"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs "deb-src" /etc/apt/sources.list.d/ /etc/apt/sources.list; then
  cat >/etc/apt/sources.list.d/debian-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends libglib2.0-dev ninja-build meson flex bison
src=target/qemu-src
mkdir -p "$src" "$out"
[ -d "$src"/qemu-7.2.0 ] ||
  (cd "$src" && apt-get source --download-only qemu && tar xf qemu_*.orig.tar.xz)
build=$(ls -d "$PWD/$src"/qemu-*/)build
mkdir -p "$build"
cd "$build"
../configure --target-list=aarch64-linux-user --enable-plugins --disable-docs --disable-werror \
  --disable-tools --disable-system --disable-install-blobs --meson=meson
ninja qemu-aarch64 tests/plugin/libinsn.so
sed -i 's/^static guint64 limit = 20;/static guint64 limit = 1000000;/' ../contrib/plugins/hotblocks.c
gcc -shared -fPIC -O2 -I../include/qemu $(pkg-config --cflags glib-2.0) \
  ../contrib/plugins/hotblocks.c -o libhotblocks.so $(pkg-config --libs glib-2.0)
cp qemu-aarch64 tests/plugin/libinsn.so libhotblocks.so "$out/"
echo "built $out/qemu-aarch64, $out/libinsn.so and $out/libhotblocks.so"
