#!/usr/bin/env bash
# Builds the nested host's kernel and initramfs, cached in
# $EMBER_CACHE/nested/<hash of inputs>/, and prints that folder on stdout:
#   vmlinuz              Debian's stock kernel (the linux-image-6.1.*-amd64
#                        that linux-image-amd64 depends on, `apt-get download`)
#   initramfs.cpio.gz    busybox (busybox-static), init.sh as /init, the
#                        modules below in dependency order
#   root/lib/modules/V   the package's whole module tree with depmod run, for
#                        modprobe inside the nested host (over 9p)
#   version              the kernel release V
# A second run with the same inputs does nothing.
# TODO(nested): older <hash> folders (about 400 MB each) are kept, since a
# running nested host may still load modules from its own; prune by hand.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${EMBER_CACHE:-/var/cache/ember}

# Loaded at boot, in this order after their dependencies (modprobe resolves
# them). kvm-amd: /dev/kvm on the emulated AMD SVM; 9p: the outer root;
# virtio_net: the command channel; ext4 (+crc32c for metadata_csum): the
# scratch disk; overlay: a writable /var on the scratch disk; tun: tap
# devices for guests.
modules=(irqbypass ccp kvm kvm-amd virtio_ring virtio virtio_pci_modern_dev
	virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p tun
	failover net_failover virtio_net virtio_blk crc16 mbcache jbd2
	crc32c_generic ext4 overlay)

die() { echo "nested-host: error: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg depmod modprobe cpio gzip; do
	command -v $tool >/dev/null || die "$tool is missing (scripts/deps.sh installs what Ember needs)"
done
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox is missing: install busybox-static"

# The concrete kernel package behind linux-image-amd64.
pkg_of() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.1\.[^ ]*-amd64\)$/\1/p' | head -n1; }
pkg=$(pkg_of)
if [ -z "$pkg" ]; then
	echo "nested-host: apt lists do not know linux-image-amd64; running apt-get update" >&2
	apt-get update -qq >&2 || die "apt-get update failed"
	pkg=$(pkg_of)
	[ -n "$pkg" ] || die "apt-cache finds no linux-image-6.1.*-amd64 behind linux-image-amd64"
fi
pkg_ver=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
key=$( { echo "$pkg $pkg_ver ${modules[*]}"; sha256sum "$here/init.sh" "$here/build.sh" "$busybox" | cut -d' ' -f1; } | sha256sum | cut -c1-16)
out="$cache/nested/$key"
if [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ]; then
	echo "nested-host: cached in $out" >&2
	echo "$out"
	exit 0
fi

mkdir -p "$cache/nested" || die "cannot create $cache/nested (set EMBER_CACHE to a writable folder)"
# One build at a time; a second caller waits and then finds it cached.
exec 9>"$cache/nested/.lock"
flock -w 600 9 || die "another nested host build holds $cache/nested/.lock"
if [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ]; then
	echo "nested-host: cached in $out" >&2
	echo "$out"
	exit 0
fi
avail_kb=$(df -Pk "$cache" | awk 'NR==2 {print $4}')
[ "${avail_kb:-0}" -ge 1000000 ] || die "not enough space in $cache: the nested host needs 1 GB, $((avail_kb / 1024)) MB free"

work=$(mktemp -d "$cache/nested/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$cache/nested/build-$key.log"
start=$(date +%s)
echo "nested-host: fetching $pkg $pkg_ver; log: $log" >&2
(cd "$work" && apt-get download "$pkg=$pkg_ver") >"$log" 2>&1 ||
	die "apt-get download $pkg failed; see $log"
dpkg -x "$work"/"$pkg"_*.deb "$work/root" >>"$log" 2>&1 || die "dpkg -x failed; see $log"
rel=$(ls "$work/root/lib/modules" | head -n1)
[ -n "$rel" ] && [ -f "$work/root/boot/vmlinuz-$rel" ] || die "$pkg holds no kernel image"
depmod -b "$work/root" "$rel" >>"$log" 2>&1 || die "depmod failed; see $log"

ird=$work/initramfs
mkdir -p "$ird"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,newroot,lib/modules}
cp "$busybox" "$ird/bin/busybox"
"$busybox" --list-full | while read -r applet; do
	[ -e "$ird/$applet" ] || ln -s /bin/busybox "$ird/$applet"
done
install -m 755 "$here/init.sh" "$ird/init"
: >"$ird/modules"
for m in "${modules[@]}"; do
	modprobe -d "$work/root" -S "$rel" --show-depends "$m" >>"$work/deps" 2>>"$log" ||
		die "module $m is not in $pkg; see $log"
done
# "insmod /path/x.ko [params]" lines, dependencies first; keep first sightings.
awk '$1 == "insmod" && !seen[$2]++ {print $2}' "$work/deps" | while read -r ko; do
	cp "$ko" "$ird/lib/modules/"
	basename "$ko" >>"$ird/modules"
done
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.cpio.gz"

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/root/lib/modules"
mv "$work/root/boot/vmlinuz-$rel" "$tmp/vmlinuz"
mv "$work/root/lib/modules/$rel" "$tmp/root/lib/modules/$rel"
mv "$work/initramfs.cpio.gz" "$tmp/initramfs.cpio.gz"
echo "$rel" >"$tmp/version"
rm -rf "$out"
mv "$tmp" "$out"
echo "nested-host: built in $(( $(date +%s) - start )) s: $out" >&2
echo "$out"
