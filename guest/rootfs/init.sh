#!/bin/sh
# Ember base image: /sbin/init (and /init). PID 1 of the guest.
#
# Mounts proc, sys, dev, dev/pts, /tmp and /run, sets the hostname, signals
# the monitor that the guest is up (Firecracker's boot timer: boot-ready),
# prints "ember-guest: ready", then runs the command given on the kernel
# command line, if any, and prints "ember-guest: exit <status>".
#
# Kernel command line (read from /proc/cmdline; names with a dot are not
# passed to init by the kernel, so they never clash with its own options):
#   ember.run="CMD ARGS"   a shell command (no double quotes inside)
#   ember.run=CMD          the same, without spaces
#   ember.run64=BASE64     a shell command, base64-encoded (any characters)
#   ember.reboot=1         after the command (or at once with none): sync and
#                          reboot -f; with reboot=k the guest resets through
#                          the i8042 controller and the monitor exits
#   ember.shell=1          stay up with a shell on the console
#   ember.hostname=NAME    hostname (default ember-guest)
#   ember.init=0           do not hand over to /sbin/ember-init
# With no command and no reboot, the guest stays up: /sbin/ember-init takes
# over as PID 1 when the image has it, else this script waits forever.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
umask 022

[ -e /proc/self ] || mount -t proc proc /proc
cmdline=" $(cat /proc/cmdline)"

# arg NAME: the value of NAME=value or NAME="value" on the command line.
arg() {
	case "$cmdline" in
	*" $1=\""*)
		v=${cmdline#*" $1=\""}
		printf '%s' "${v%%\"*}" ;;
	*" $1="*)
		v=${cmdline#*" $1="}
		printf '%s' "${v%% *}" ;;
	esac
}

# mounted DIR: whether DIR is a mount point (busybox-static has no
# mountpoint applet).
mounted() { grep -q "^[^ ]* $1 " /proc/mounts; }
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mounted /dev/shm || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mounted /run || mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
[ -e /dev/console ] && exec </dev/console >/dev/console 2>&1
ip link set lo up 2>/dev/null

name=$(arg ember.hostname)
hostname "${name:-ember-guest}"

cmd=$(arg ember.run)
b64=$(arg ember.run64)
[ -n "$b64" ] && cmd=$(printf '%s' "$b64" | base64 -d)

# When ember-init takes over it signals boot-ready and prints the ready line
# itself once it listens (the line then means "the agent is listening").
agent=0
if [ -z "$cmd" ] && [ "$(arg ember.reboot)" != 1 ] && [ "$(arg ember.shell)" != 1 ] &&
   [ -x /sbin/ember-init ] && [ "$(arg ember.init)" != 0 ]; then
	agent=1
fi
if [ "$agent" = 0 ]; then
	/sbin/boot-ready 2>/dev/null
	echo "ember-guest: ready"
fi
if [ -n "$cmd" ]; then
	sh -c "$cmd"
	echo "ember-guest: exit $?"
fi

if [ "$(arg ember.reboot)" = 1 ]; then
	sync
	reboot -f
fi
if [ "$(arg ember.shell)" = 1 ]; then
	while :; do setsid cttyhack sh -l; done
fi
[ "$agent" = 1 ] && exec /sbin/ember-init
# Stay up; as PID 1 the shell reaps orphans while it waits.
while :; do sleep 3600; done
