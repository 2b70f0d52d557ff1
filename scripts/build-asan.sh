#!/usr/bin/env bash
# Builds the native addon a second time with AddressSanitizer and UndefinedBehaviorSanitizer
# into build-asan/vring.node (loaded when VHOSTKIT_NATIVE=asan). Same sources and warning
# flags as binding.gyp; -fno-sanitize-recover makes any UB finding fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
node_inc=""
for d in "$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node" \
         "$HOME/.cache/node-gyp/$(node -p process.versions.node)/include/node"; do
  if [ -f "$d/node_api.h" ]; then node_inc="$d"; break; fi
done
[ -n "$node_inc" ] || { echo "build-asan: cannot find Node's headers (node_api.h)" >&2; exit 1; }
napi_inc=$(node -p "require('node-addon-api').include_dir")
srcs=$(node -e "const g=JSON.parse(require('fs').readFileSync('binding.gyp','utf8').replace(/#.*$/mg,''));console.log(g.targets[0].sources.join(' '))")
mkdir -p build-asan
out=build-asan/vring.node
# Rebuild only when a source is newer than the output.
if [ -f "$out" ] && [ -z "$(find native binding.gyp -newer "$out" -print -quit)" ]; then exit 0; fi
echo "build-asan: compiling $(echo $srcs | wc -w) files with -fsanitize=address,undefined"
flags=(-std=c++20 -fPIC -O1 -g1 -fno-omit-frame-pointer
       -fsanitize=address,undefined -fno-sanitize-recover=undefined
       -Wall -Wextra -Werror -Wno-missing-field-initializers
       -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED
       -Inative -I"$node_inc" -I"$napi_inc")
# One compile per source, as many at once as there are CPUs (npm test runs this beside the
# unit tests, which leave a CPU free before this is done), then one link.
rm -rf build-asan/obj
mkdir -p build-asan/obj
# shellcheck disable=SC2016,SC2086
printf '%s\n' $srcs | xargs -P "$(nproc)" -n 1 bash -c \
  'src=${!#}; g++ "${@:1:$#-1}" -c "$src" -o "build-asan/obj/$(echo "${src%.cc}" | tr / _).o"' build-asan "${flags[@]}" \
  || { echo "build-asan: a compile failed" >&2; exit 1; }
g++ -shared "${flags[@]}" build-asan/obj/*.o -o "$out.tmp"
mv "$out.tmp" "$out"
