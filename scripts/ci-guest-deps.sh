#!/usr/bin/env bash
# What the QEMU guest tests (test/e2e, src/testing/guest.ts) need on a fresh Debian 12
# machine, installed idempotently (run as root, e.g. from .ci/run):
#   - busybox-static: the guest's whole userspace (a static /bin/busybox);
#   - xz-utils: `xz`, to decompress Debian's XZ bzImage into a vmlinux that QEMU boots
#     through its PVH entry (about 3 s faster per guest under TCG);
#   - qemu-system-x86 (QEMU and qemu-storage-daemon), qemu-utils and dpdk-dev (dpdk-testpmd),
#     the peers the guests are attached to (.ci/run installs these too; already-installed
#     packages cost nothing here);
#   - the guest kernel and modules: scripts/guest-kernel.sh (apt-get download + dpkg -x into
#     ~/.cache/vhostkit/guest/<release>, not a system-wide linux-image install).
# No cpio, zstd or kmod: the initramfs is written in TypeScript and Debian 12's modules are
# not compressed. Prints one line per step to stderr; exits non-zero if a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "ci-guest-deps: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s.%N)

PACKAGES=(busybox-static xz-utils qemu-system-x86 qemu-utils dpdk-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing packages (${missing[*]}); run as root: apt-get install -y ${missing[*]}"
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
log "done in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
