#!/usr/bin/env bash
# Fetches a Debian guest kernel and its modules for the end-to-end tests (test/lib/guest.ts)
# WITHOUT installing linux-image-amd64 on the host (installing it would build a host initramfs,
# about a minute): `apt-get download` of the versioned linux-image package that the
# linux-image-amd64 metapackage depends on, then `dpkg -x` into a cache directory.
#
#   scripts/guest-kernel.sh [DIR]
#
# DIR defaults to ${VHOSTKIT_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/vhostkit}/guest/<release>,
# e.g. ~/.cache/vhostkit/guest/6.1.0-56-amd64. Prints DIR on stdout (and nothing else there);
# progress goes to stderr. Idempotent: a complete DIR for the same package version is reused
# at once. `apt-get update` runs only when the package cannot be found (that needs root).
#
# DIR then holds:
#   boot/vmlinuz-<release>      the bzImage as Debian ships it
#   boot/config-<release>
#   lib/modules/<release>/      the whole modules tree (the package ships no modules.dep:
#                               guest.ts reads module dependencies from each .ko's .modinfo)
#   vmlinux                     the same kernel, decompressed (an ELF with a PVH entry note):
#                               QEMU boots it directly, which skips SeaBIOS's real-mode loader
#                               and the in-guest XZ decompression (about 3 s per boot under
#                               TCG). Needs the `xz` command (xz-utils) for Debian's XZ
#                               kernels; without it only vmlinuz is there and guests boot slower.
#   release                     "<release>" (e.g. 6.1.0-56-amd64)
#   .complete                   "<package> <version>", written last
#
# The guest's userspace is the host's static busybox (Debian package busybox-static); this
# script only checks that it is there and says what to install when it is not.
set -euo pipefail

log() { echo "guest-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v apt-cache >/dev/null || die "apt-cache not found: this script needs a Debian system"
command -v dpkg >/dev/null || die "dpkg not found: this script needs a Debian system"

# --- busybox (check only) -------------------------------------------------------------------
busybox_ok=0
for b in /usr/bin/busybox /bin/busybox; do
  if [ -x "$b" ]; then
    ldd_out=$(ldd "$b" 2>&1 || true)
    case $ldd_out in *"not a dynamic executable"*) busybox_ok=1; break ;; esac
  fi
done
if [ "$busybox_ok" = 0 ]; then
  log "warning: no static busybox at /usr/bin/busybox or /bin/busybox; guests need it:" \
    "apt-get install -y busybox-static"
fi

# --- which kernel package -------------------------------------------------------------------
# One apt-cache call (about 1 s): the candidate linux-image-amd64's dependency names the
# versioned package and pins its version, "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)".
resolve_pkg() {
  apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
    sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,|]*\) (= \([^)]*\)).*/\1 \2/p' | head -n 1
}

PKGVER=$(resolve_pkg || true)
if [ -z "$PKGVER" ]; then
  log "linux-image-amd64 is not in the apt lists: running apt-get update"
  if [ "$(id -u)" != 0 ]; then die "apt-get update needs root (run this script as root once)"; fi
  apt-get update -qq >&2 || die "apt-get update failed"
  PKGVER=$(resolve_pkg || true)
fi
[ -n "$PKGVER" ] || die "cannot resolve the package that linux-image-amd64 depends on (apt-cache show linux-image-amd64)"
PKG=${PKGVER%% *}
VERSION=${PKGVER#* }
RELEASE=${PKG#linux-image-}
RELEASE=${RELEASE%-unsigned}

CACHE_ROOT=${VHOSTKIT_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/vhostkit}
DIR=${1:-$CACHE_ROOT/guest/$RELEASE}
DIR=${DIR%/}
[ -n "$DIR" ] || die "empty directory argument"

if [ -f "$DIR/.complete" ] && [ "$(cat "$DIR/.complete")" = "$PKG $VERSION" ] &&
  [ -f "$DIR/boot/vmlinuz-$RELEASE" ] && [ -d "$DIR/lib/modules/$RELEASE" ]; then
  log "$PKG $VERSION already in $DIR"
  echo "$DIR"
  exit 0
fi

# Only ever replace a directory that is ours (or empty / absent): never rm -rf a stranger's.
if [ -e "$DIR" ]; then
  [ -d "$DIR" ] || die "$DIR exists and is not a directory"
  if [ -n "$(ls -A "$DIR")" ] && [ ! -e "$DIR/.complete" ] && [ ! -e "$DIR/.vhostkit-guest" ]; then
    die "$DIR is not empty and was not made by this script; give an empty or new directory"
  fi
fi
mkdir -p "$DIR"
touch "$DIR/.vhostkit-guest"

WORK=$(mktemp -d "$DIR/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- download -------------------------------------------------------------------------------
DEB=""
for f in /var/cache/apt/archives/"${PKG}"_"${VERSION//:/%3a}"_*.deb; do
  if [ -f "$f" ]; then DEB=$f; log "using $f from the apt cache"; fi
done
if [ -z "$DEB" ]; then
  log "downloading $PKG $VERSION"
  # apt drops to the _apt user for downloads: give it a directory it can reach and write
  # (a cache under /root is not reachable by _apt; that gives a "sandbox" warning only).
  DL=$(mktemp -d "${TMPDIR:-/tmp}/vhostkit-kernel-dl.XXXXXX")
  trap 'rm -rf "$WORK" "$DL"' EXIT
  if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$DL"; fi
  (cd "$DL" && apt-get download -q "$PKG=$VERSION" >&2) || die "apt-get download $PKG=$VERSION failed"
  DEB=$(ls "$DL"/*.deb | head -n 1)
fi

# --- extract --------------------------------------------------------------------------------
log "extracting $(basename "$DEB")"
dpkg -x "$DEB" "$WORK/x"
[ -f "$WORK/x/boot/vmlinuz-$RELEASE" ] || die "$DEB has no boot/vmlinuz-$RELEASE"
[ -d "$WORK/x/lib/modules/$RELEASE" ] || die "$DEB has no lib/modules/$RELEASE"

# --- vmlinux for a PVH boot -----------------------------------------------------------------
# A bzImage is a small x86 setup + decompressor followed by the compressed ELF kernel: find
# the payload's magic and decompress it (what the kernel's scripts/extract-vmlinux does).
extract_vmlinux() {
  local img=$1 out=$2 magic tool off
  for pair in $'\xfd7zXZ:xz' $'\x28\xb5\x2f\xfd:zstd' $'\x1f\x8b\x08:gzip'; do
    magic=${pair%%:*}
    tool=${pair##*:}
    command -v "$tool" >/dev/null || continue
    for off in $(LC_ALL=C grep -aboF "$magic" "$img" 2>/dev/null | cut -d: -f1 | head -n 3); do
      case $tool in
        xz) tail -c +$((off + 1)) "$img" | xz -dcq --single-stream >"$out" 2>/dev/null || true ;;
        zstd) tail -c +$((off + 1)) "$img" | zstd -dcq >"$out" 2>/dev/null || true ;;
        gzip) tail -c +$((off + 1)) "$img" | gzip -dcq >"$out" 2>/dev/null || true ;;
      esac
      if [ "$(head -c 4 "$out" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; then
        return 0
      fi
    done
  done
  rm -f "$out"
  return 1
}
if grep -qx 'CONFIG_PVH=y' "$WORK/x/boot/config-$RELEASE" 2>/dev/null; then
  if extract_vmlinux "$WORK/x/boot/vmlinuz-$RELEASE" "$WORK/vmlinux"; then
    log "decompressed vmlinux for a PVH boot"
  else
    log "warning: could not decompress the kernel (install xz-utils); guests will boot the bzImage, about 3 s slower"
  fi
fi

# --- move into place ------------------------------------------------------------------------
rm -f "$DIR/.complete"
rm -rf "$DIR/boot" "$DIR/lib" "$DIR/vmlinux" "$DIR/release"
mv "$WORK/x/boot" "$DIR/boot"
mkdir -p "$DIR/lib"
mv "$WORK/x/lib/modules" "$DIR/lib/modules"
if [ -f "$WORK/vmlinux" ]; then mv "$WORK/vmlinux" "$DIR/vmlinux"; fi
echo "$RELEASE" >"$DIR/release"
echo "$PKG $VERSION" >"$DIR/.complete"
log "$PKG $VERSION ready in $DIR"
echo "$DIR"
