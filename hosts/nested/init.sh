#!/bin/sh
# The nested host's /init (inside its initramfs; busybox only).
#
# Loads the modules listed in /modules (in dependency order, resolved by
# build.sh), mounts the outer machine's root read-only over 9p (mount tag
# hostroot) as the inner host's root, a tmpfs on /run, the scratch disk
# (/dev/vda, ext4) on /run/ember-nested/scratch with /var and /tmp overlaid
# on it (so /var/lib/ember is writable and on the scratch disk, and /tmp
# shows the outer /tmp plus what the inner host writes), sets up the
# network (10.0.2.15/24 via 10.0.2.2) and switches root to
# `ember-nested serve`, the command server the launcher talks to.
#
# Kernel command line, set by `ember-nested start`:
#   ember.serve=PATH     the launcher binary, as a path in the outer root
#   ember.port=N         TCP port the command server listens on
#   ember.modroot=DIR    folder (outer root) holding lib/modules/<version>
#                        of this kernel, for modprobe inside the host
#   ember.token=HEX      shared secret of the command channel
#   ember.9pcache=MODE   9p cache mode of the root (default loose: files
#                        are cached and not revalidated, which makes running
#                        programs from the outer root several times faster;
#                        none sees every outer change at once)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

say() { echo "ember-nested-init: $*" >/dev/console; }
fail() {
	say "error: $*"
	sleep 1
	echo o >/proc/sysrq-trigger 2>/dev/null
	poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

cmdline=" $(cat /proc/cmdline)"
arg() {
	case "$cmdline" in
	*" $1="*) v=${cmdline#*" $1="}; printf '%s' "${v%% *}" ;;
	esac
}

while read -r ko; do
	insmod "/lib/modules/$ko" || say "warning: insmod $ko failed"
done </modules

new=/newroot
mkdir -p $new
cache=$(arg ember.9pcache)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=${cache:-loose} hostroot $new ||
	fail "cannot mount the outer root (9p, mount tag hostroot)"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs $new/run || fail "tmpfs on /run"
state=$new/run/ember-nested
mkdir -p $state/scratch
# Run a copy of the server from /run: the outer file may change while the
# host is up.
serve=$(arg ember.serve)
[ -n "$serve" ] && [ -x "$new$serve" ] || fail "ember.serve=$serve: not an executable in the outer root"
cp "$new$serve" $state/ember-nested || fail "cannot copy $serve"
mount --move /dev $new/dev || fail "moving /dev"
mkdir -p $new/dev/pts $new/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $new/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $new/dev/shm
mount -t proc proc $new/proc
mount -t sysfs sysfs $new/sys
mount -t cgroup2 cgroup2 $new/sys/fs/cgroup 2>/dev/null

if [ -b $new/dev/vda ]; then
	mount -t ext4 -o noatime $new/dev/vda $state/scratch ||
		fail "cannot mount the scratch disk /dev/vda"
	mkdir -p $state/scratch/var.upper $state/scratch/var.work
	mount -t overlay -o lowerdir=$new/var,upperdir=$state/scratch/var.upper,workdir=$state/scratch/var.work \
		overlay $new/var || say "warning: /var stays read-only (overlay failed)"
	mkdir -p $new/var/lib/ember $new/var/tmp
	chmod 1777 $new/var/tmp
	# /tmp shows the outer /tmp (a checkout or build folder may live there,
	# as CI's clones do) with writes going to the scratch disk.
	mkdir -p $state/scratch/tmp.upper $state/scratch/tmp.work
	chmod 1777 $state/scratch/tmp.upper
	mount -t overlay -o lowerdir=$new/tmp,upperdir=$state/scratch/tmp.upper,workdir=$state/scratch/tmp.work \
		overlay $new/tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $new/tmp ||
		fail "no writable /tmp"
else
	say "warning: no scratch disk; /var stays read-only"
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $new/tmp || fail "tmpfs on /tmp"
fi

ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 &&
	ip route add default via 10.0.2.2 || say "warning: network setup failed"
hostname ember-nested

modroot=$(arg ember.modroot)
if [ -n "$modroot" ] && [ -d "$new$modroot/lib/modules" ]; then
	printf '#!/bin/sh\nexec /sbin/modprobe -d %s "$@"\n' "$modroot" >$state/modprobe
	chmod 755 $state/modprobe
	echo /run/ember-nested/modprobe >/proc/sys/kernel/modprobe
fi

port=$(arg ember.port)
export EMBER_NESTED_TOKEN="$(arg ember.token)"
say "serving on port ${port:-?}"
exec switch_root $new /run/ember-nested/ember-nested serve --port "${port:-7022}"
fail "switch_root failed"
