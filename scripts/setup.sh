#!/usr/bin/env bash
# The README's first step on a Debian or Ubuntu machine: the tools the native addon builds
# with (g++, make, python3; apt-get, through sudo unless run as root), then npm install (the
# addon and the TypeScript build). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || [ "$(node -p 'Number(process.versions.node.split(".")[0])')" -lt 20 ]; then
  echo "setup: vhostkit needs Node.js 20 or newer with npm (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
missing=()
for p in g++ make python3; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
npm install --no-audit --no-fund
