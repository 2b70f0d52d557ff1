#!/usr/bin/env bash
# npm run fuzz: the property tests (fast-check) with many more runs, then every libFuzzer
# target over the native engine (ASan + UBSan) for longer than `npm test` gives them.
#   VHOSTKIT_FUZZ_RUNS     fast-check runs per property (default 2000; npm test uses each
#                          property's own default, a few hundred)
#   VHOSTKIT_FUZZ_SECONDS  seconds per libFuzzer target (default 300; npm test: 15)
#   VHOSTKIT_FUZZ_NATIVE_RUNS  executions per libFuzzer target, read by fuzz-native.sh
#                          (each target stops at the runs or the seconds, whichever first)
# Replaying a fast-check failure: VHOSTKIT_FUZZ_SEED / VHOSTKIT_FUZZ_PATH (test/vhost-user/fuzz-runs.ts).
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${VHOSTKIT_FUZZ_RUNS:-2000}
secs=${VHOSTKIT_FUZZ_SECONDS:-300}
echo "== property tests, $runs runs per property =="
VHOSTKIT_FUZZ_RUNS=$runs node node_modules/mocha/bin/mocha.js --timeout 0 \
  'dist/test/vhost-user/*-property.test.js' \
  dist/test/native/ring-property.test.js dist/test/native/net-deliver.test.js \
  dist/test/native/offload.test.js dist/test/native/blk-engine.test.js \
  dist/test/native/inflight-packed.test.js
props=$?
echo "== libFuzzer targets, $secs s each =="
bash scripts/fuzz-native.sh "$secs"
native=$?
if [ $props -ne 0 ] || [ $native -ne 0 ]; then
  echo "fuzz: findings (property tests exit $props, libFuzzer exit $native)"
  exit 1
fi
echo "fuzz: no finding"
