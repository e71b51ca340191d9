#!/usr/bin/env bash
# Builds Ember's base root filesystem: an ext4 image made with
# `mkfs.ext4 -d` (no loop mounts, no root privileges needed for the image
# itself) holding busybox from busybox-static with its applet links, the init
# script (init.sh, see there for the kernel command line it reads),
# boot-ready and, when the build folder has it, ember-init.
#
# Usage: guest/rootfs/build.sh OUT.ext4
#   EMBER_BUILD        build folder with boot-ready and ember-init
#                      (default: <repo>/build)
#   EMBER_ROOTFS_SIZE  image size for mkfs.ext4 (default 128M; the file is
#                      sparse)
# Rebuilds only when its inputs change: their hash is kept in OUT.ext4.key.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${EMBER_BUILD:-$root/build}
size=${EMBER_ROOTFS_SIZE:-128M}

die() { echo "guest-rootfs: error: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ "$1" != --help ] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; [ "${1:-}" = --help ]; exit $?; }
out=$1
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list >/dev/null 2>&1 ||
	die "$busybox is missing: install the package busybox-static (scripts/deps.sh does)"
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
	ldd "$busybox" 2>&1 | grep -q 'not a dynamic' ||
	die "$busybox is not statically linked: install busybox-static, not busybox"
command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is missing: install e2fsprogs"

boot_ready=$build/guest/rootfs/boot-ready
ember_init=$build/src/ember-init/ember-init
[ -x "$ember_init" ] || ember_init=

work=$(mktemp -d "${TMPDIR:-/tmp}/ember-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ ! -x "$boot_ready" ]; then
	# A sanitizer build has no static boot-ready; compile it here.
	boot_ready=$work/boot-ready
	cc -O2 -static -DEMBER_VERSION='"0"' -o "$boot_ready" "$here/boot-ready.c" ||
		die "cannot compile boot-ready.c statically (is build-essential installed?)"
fi

key=$( { echo "size=$size"; sha256sum "$here/init.sh" "$here/build.sh" "$busybox" \
	"$boot_ready" ${ember_init:+"$ember_init"} | cut -d' ' -f1; } | sha256sum | cut -c1-16)
if [ -s "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
	echo "guest-rootfs: up to date: $out" >&2
	exit 0
fi

start=$(date +%s%N)
tree=$work/tree
mkdir -p "$tree"
for d in bin sbin usr/bin usr/sbin etc root proc sys dev tmp run var/log mnt; do
	mkdir -p "$tree/$d"
done
chmod 1777 "$tree/tmp"
chmod 700 "$tree/root"
cp "$busybox" "$tree/bin/busybox"
# Applet links, each where busybox says it belongs (bin/ls, sbin/ip, ...).
"$busybox" --list-full | while read -r applet; do
	[ -e "$tree/$applet" ] || ln -s /bin/busybox "$tree/$applet"
done
install -m 755 "$here/init.sh" "$tree/sbin/init"
ln -sf /sbin/init "$tree/init"
install -m 755 "$boot_ready" "$tree/sbin/boot-ready"
[ -z "$ember_init" ] || install -m 755 "$ember_init" "$tree/sbin/ember-init"
echo ember-guest >"$tree/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$tree/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$tree/etc/group"
printf '127.0.0.1 localhost\n' >"$tree/etc/hosts"
: >"$tree/etc/fstab"

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
rm -f "$tmp"
mkfs.ext4 -q -F -L ember-root -E root_owner=0:0 -d "$tree" "$tmp" "$size" >/dev/null ||
	{ rm -f "$tmp"; die "mkfs.ext4 -d failed for $out"; }
mv -f "$tmp" "$out"
echo "$key" >"$out.key"
echo "guest-rootfs: built $out in $(( ($(date +%s%N) - start) / 1000000 )) ms${ember_init:+ (with ember-init)}" >&2
