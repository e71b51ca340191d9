#!/usr/bin/env bash
# Builds Ember's guest kernel (vmlinux and bzImage) from Debian's
# linux-source-6.1 with tinyconfig plus config.fragment, cached in
# $EMBER_CACHE/kernel/<hash of inputs>/. Prints the cache folder on stdout.
# A second run with the same inputs does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${EMBER_CACHE:-/var/cache/ember}
src_tar=/usr/src/linux-source-6.1.tar.xz
jobs=${EMBER_JOBS:-$(nproc)}

die() { echo "guest-kernel: error: $*" >&2; exit 1; }

[ -r "$src_tar" ] || die "$src_tar is missing: install the package linux-source-6.1 (scripts/deps.sh does)"
src_ver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || echo unknown)
key=$( { echo "$src_ver"; cat "$here/config.fragment" "$here/build.sh"; } | sha256sum | cut -c1-16)
out="$cache/kernel/$key"
if [ -s "$out/vmlinux" ] && [ -s "$out/bzImage" ]; then
  echo "guest-kernel: cached in $out" >&2
  echo "$out"
  exit 0
fi

mkdir -p "$cache/kernel" || die "cannot create $cache/kernel (set EMBER_CACHE to a writable folder)"
# One build at a time: a second caller waits here, then finds the result.
exec 9>"$cache/kernel/.lock"
flock 9
if [ -s "$out/vmlinux" ] && [ -s "$out/bzImage" ]; then
  echo "guest-kernel: cached in $out" >&2
  echo "$out"
  exit 0
fi
avail_kb=$(df -Pk "$cache" | awk 'NR==2 {print $4}')
[ "${avail_kb:-0}" -ge 3000000 ] || die "not enough space in $cache: the kernel build needs 3 GB, $((avail_kb / 1024)) MB free"

work=$(mktemp -d "$cache/kernel/build.XXXXXX")
log="$cache/kernel/build-$key.log"
trap 'rm -rf "$work"' EXIT
echo "guest-kernel: building (about 7 minutes on 2 cores); log: $log" >&2
start=$(date +%s)
{
  tar -xf "$src_tar" -C "$work"
  cd "$work/linux-source-6.1"
  make -s tinyconfig
  ./scripts/kconfig/merge_config.sh -m .config "$here/config.fragment"
  make -s olddefconfig
} >"$log" 2>&1 || die "kernel configuration failed; see $log"
cd "$work/linux-source-6.1"
missing=0
while IFS= read -r line; do
  case "$line" in CONFIG_*=*) ;; *) continue ;; esac
  grep -qx "$line" .config || { echo "guest-kernel: option not set: $line" >>"$log"; missing=1; }
done <"$here/config.fragment"
[ "$missing" = 0 ] || die "options of config.fragment did not survive olddefconfig; see $log"
make -j"$jobs" vmlinux bzImage >>"$log" 2>&1 || die "kernel build failed; see $log"
tmp="$out.tmp.$$"
mkdir -p "$tmp"
cp vmlinux "$tmp/vmlinux"
cp arch/x86/boot/bzImage "$tmp/bzImage"
cp .config "$tmp/config"
sync -f "$tmp/vmlinux"
rm -rf "$out"
mv "$tmp" "$out"
echo "guest-kernel: built in $(( $(date +%s) - start )) s: $out" >&2
echo "$out"
