#!/usr/bin/env bash
# Installs the Debian packages Ember needs, and only those that are missing.
# Idempotent: a second run with everything present installs nothing.
# Usage: scripts/deps.sh [--check]   (--check lists what is missing, exit 1 if any)
set -euo pipefail

# package                 why
packages=(
  build-essential         # gcc, make, libc headers: the C toolchain
  meson                   # build system
  ninja-build             # meson's backend
  pkg-config              # meson finds libraries through it
  python3                 # meson and tests/run.py
  libmicrohttpd-dev       # HTTP servers: agent RPC, emberd REST
  libevent-dev            # HTTP server of ember-vmm's API (evhttp: no TLS, small)
  libjansson-dev          # JSON everywhere
  libcurl4-openssl-dev    # HTTP clients: agent to VMM, CLI to emberd
  libsqlite3-dev          # emberd's default database
  libpq-dev               # emberd on PostgreSQL
  protobuf-c-compiler     # compiles proto/hostagent.proto
  libprotobuf-c-dev       # protobuf-c runtime
  libseccomp-dev          # VMM and agent syscall filters
  libcap-ng-dev           # dropping capabilities
  libzstd-dev             # compressed snapshot layers
  libxxhash-dev           # checksums of snapshot headers and vmstate files
  liburing-dev            # block I/O in the VMM
  qemu-system-x86         # the nested host (TCG with AMD SVM) and the QEMU peer in benchmarks
  qemu-utils              # qemu-img for disk images
  busybox-static          # the guest's userland and the nested host's initramfs
  linux-source-6.1        # the guest kernel's source
  bc                      # kernel build
  flex                    # kernel build
  bison                   # kernel build
  libelf-dev              # kernel build (objtool)
  libssl-dev              # kernel build (sign-file, extract-cert)
  cpio                    # nested host initramfs
  xz-utils                # unpacking the kernel source
  e2fsprogs               # mkfs.ext4 -d for root filesystems and scratch disks
  kmod                    # modinfo/depmod for the nested host's modules
  iproute2                # network namespaces, veth and tap devices
  iptables                # NAT for sandbox networking
  socat                   # tests talk to Unix sockets
  curl                    # tests and the demo talk to HTTP APIs
  postgresql              # emberd's PostgreSQL tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${1:-}" = "--check" ]; then
  [ ${#missing[@]} -eq 0 ] && { echo "deps: all ${#packages[@]} packages present"; exit 0; }
  echo "deps: missing: ${missing[*]}"; exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "deps: error: missing packages (${missing[*]}) and not root; run: sudo $0" >&2
  exit 1
fi
echo "deps: installing ${#missing[@]} packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
