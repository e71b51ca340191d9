#!/usr/bin/env bash
# Builds (or finds in $EMBER_CACHE) the slow artifacts and links them into
# build/artifacts/:
#   vmlinux, bzImage    the guest kernel (guest/kernel/build.sh)
#   rootfs.ext4         the base root filesystem (guest/rootfs/build.sh)
#   nested/             the nested host's kernel and initramfs (hosts/nested/build.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
art="$root/build/artifacts"
mkdir -p "$art"

kdir=$("$root/guest/kernel/build.sh")
ln -sfn "$kdir/vmlinux" "$art/vmlinux"
ln -sfn "$kdir/bzImage" "$art/bzImage"

if [ -x "$root/guest/rootfs/build.sh" ]; then
  "$root/guest/rootfs/build.sh" "$art/rootfs.ext4"
fi
if [ -x "$root/hosts/nested/build.sh" ]; then
  ndir=$("$root/hosts/nested/build.sh")
  ln -sfn "$ndir" "$art/nested"
fi
