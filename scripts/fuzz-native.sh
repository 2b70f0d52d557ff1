#!/usr/bin/env bash
# libFuzzer harnesses over the native engine (native/fuzz/README.md), with AddressSanitizer
# and UndefinedBehaviorSanitizer: builds each target into build-fuzz/, runs it for a bounded
# time on its committed seeds (native/fuzz/corpus/<target>/, replayed on every run: valid
# rings and chains, and the inputs of past findings) and a working corpus that grows from run
# to run (build-fuzz/corpus/<target>/), and reports for each target its executions, corpus
# and findings (crash-, leak-, timeout-, oom- files in build-fuzz/findings/<target>/).
#
#   scripts/fuzz-native.sh [--fresh] [--runs N] [SECONDS] [TARGET...]
#                        SECONDS per target, default 60; all targets. --runs N (or
#                        VHOSTKIT_FUZZ_NATIVE_RUNS=N): stop each target after N executions,
#                        with no time limit unless SECONDS is given too (then whichever
#                        comes first). --fresh: empty the working corpus first, so the run
#                        starts from the committed corpus alone.
#   scripts/fuzz-native.sh --build-only [TARGET...]
#   scripts/fuzz-native.sh --seeds                 regenerate the seed-* files (gen_seeds.cc)
#   scripts/fuzz-native.sh --merge [TARGET...]     shrink build-fuzz/corpus/<target> to the
#                                                  inputs that keep its coverage (-merge=1)
#   scripts/fuzz-native.sh --keep [TARGET...]      minimize the committed and the working
#                                                  corpus together (-merge=1 into a fresh
#                                                  directory) and make that the committed
#                                                  corpus: named files (seed-*, regression-*)
#                                                  stay, the SHA-1-named ones are replaced by
#                                                  the merge's inputs
#   scripts/fuzz-native.sh --list
#
# One fuzzing process at a time (no -jobs/-workers). Exit status: 0 no finding, 1 a finding
# (its sanitizer report is printed), 2 usage or build error. Needs clang++ with libFuzzer
# (Debian: clang-14 libclang-rt-14-dev); FUZZ_CXX overrides the compiler.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(split_ring packed_ring memory offload edit net blk host_io switch handoff guest_fault)
N=native
MEM_SRCS="$N/memory/memory.cc $N/memory/guest_fault.cc $N/memory/dirty_log.cc"
RING_SRCS="$MEM_SRCS $N/ring/virtqueue.cc $N/ring/split_ring.cc $N/ring/packed_ring.cc"
declare -A SRCS=(
  [split_ring]="native/fuzz/fuzz_ring.cc $RING_SRCS"
  [packed_ring]="native/fuzz/fuzz_ring.cc $RING_SRCS"
  [memory]="native/fuzz/fuzz_memory.cc $MEM_SRCS"
  [offload]="native/fuzz/fuzz_offload.cc $N/net/offload.cc"
  [edit]="native/fuzz/fuzz_edit.cc $N/net/edit.cc $N/net/offload.cc"
  [net]="native/fuzz/fuzz_net.cc $RING_SRCS $N/net/net.cc $N/net/offload.cc"
  [blk]="native/fuzz/fuzz_blk.cc $RING_SRCS $N/blk/blk.cc $N/blk/uring.cc $N/io/eventfd.cc"
  [host_io]="native/fuzz/fuzz_host_io.cc $RING_SRCS $N/io/host_io.cc $N/net/offload.cc"
  [switch]="native/fuzz/fuzz_switch.cc $RING_SRCS $N/switch/switch_fdb.cc $N/switch/switch_port.cc $N/switch/switch_capture.cc $N/switch/switch_host.cc $N/io/host_io.cc $N/switch/switch_forward.cc $N/switch/switch_flows.cc $N/switch/switch_handler.cc $N/switch/switch_handoff.cc $N/net/edit.cc $N/net/net.cc $N/net/offload.cc"
  [handoff]="native/fuzz/fuzz_handoff.cc $N/switch/switch_handoff.cc $N/switch/switch_fdb.cc"
  [guest_fault]="native/fuzz/fuzz_guest_fault.cc $RING_SRCS"
)
declare -A DEFS=([split_ring]="-DFUZZ_PACKED=0" [packed_ring]="-DFUZZ_PACKED=1")
FLAGS=(-std=c++20 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -gline-tables-only -O1 -fno-omit-frame-pointer
       -Wall -Wextra -Werror -Wno-missing-field-initializers -Inative)
OUT=build-fuzz

die() { echo "fuzz-native: $*" >&2; exit 2; }

find_cxx() {
  if [ -n "${FUZZ_CXX:-}" ]; then echo "$FUZZ_CXX"; return; fi
  for c in clang++ clang++-14 clang++-15 clang++-16; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return; fi
  done
  die "no clang++ found (Debian: apt-get install clang-14 libclang-rt-14-dev), or set FUZZ_CXX"
}

known() { local t; for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

# Is any of files $2... newer than $1?
newer() {
  local bin=$1 f
  shift
  for f in "$@"; do [ "$f" -nt "$bin" ] && return 0; done
  return 1
}

# An object of one source, compiled once and shared by every target that links it (the
# ring, memory and net sources go into most of them), rebuilt when the source or a header
# is newer. A harness (native/fuzz/) is compiled per target, with the target's own -D flags.
object() {
  local src=$1 tag=$2 defs=$3 obj
  obj=$OUT/obj/$(echo "${src%.cc}" | tr / _)${tag:+.$tag}.o
  if [ ! -f "$obj" ] || newer "$obj" "$src" native/fuzz/*.h native/*/*.h; then
    # shellcheck disable=SC2086
    if ! "$CXX" "${FLAGS[@]}" $defs -c "$src" -o "$obj.tmp" 2>"$OUT/logs/build-$(basename "$obj").log"; then
      cat "$OUT/logs/build-$(basename "$obj").log" >&2
      die "build of $src failed (is libFuzzer installed? Debian: libclang-rt-14-dev)"
    fi
    mv "$obj.tmp" "$obj"
  fi
  echo "$obj"
}

# Rebuilds build-fuzz/fuzz_<t> when one of its objects is newer than it.
build() {
  local t=$1 bin=$OUT/fuzz_$1 objs=() src obj
  mkdir -p "$OUT/obj"
  for src in ${SRCS[$t]}; do
    case $src in
      native/fuzz/*) obj=$(object "$src" "$t" "${DEFS[$t]:-}") || exit 2 ;;
      *) obj=$(object "$src" "" "") || exit 2 ;;
    esac
    objs+=("$obj")
  done
  if [ -f "$bin" ] && ! newer "$bin" "${objs[@]}"; then return 0; fi
  echo "fuzz-native: linking $bin"
  if ! "$CXX" "${FLAGS[@]}" "${objs[@]}" -o "$bin.tmp" 2>"$OUT/logs/build-$t.log"; then
    cat "$OUT/logs/build-$t.log" >&2
    die "link of $t failed (is libFuzzer installed? Debian: libclang-rt-14-dev)"
  fi
  mv "$bin.tmp" "$bin"
}

seeds() {
  mkdir -p "$OUT"
  "$CXX" -std=c++20 -O1 -g -Wall -Wextra -Werror -Wno-missing-field-initializers native/fuzz/gen_seeds.cc -o "$OUT/gen_seeds"
  rm -f native/fuzz/corpus/*/seed-*
  "$OUT/gen_seeds" native/fuzz/corpus
  echo "fuzz-native: seeds written: $(find native/fuzz/corpus -name 'seed-*' | wc -l) files under native/fuzz/corpus/"
}

# Replaces the working corpus of t by the smallest set of its inputs with the same coverage.
merge() {
  local t=$1 work=$OUT/corpus/$1 tmp=$OUT/corpus/$1.merge
  [ -d "$work" ] || return 0
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local before
  before=$(find "$work" -type f | wc -l)
  mkdir -p "$OUT/findings/$t"
  if ! "$OUT/fuzz_$t" -merge=1 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$OUT/findings/$t/" "$tmp" "$work" \
       >"$OUT/logs/merge-$t.log" 2>&1; then
    rm -rf "$tmp"
    die "merge of $t failed (see $OUT/logs/merge-$t.log)"
  fi
  rm -rf "$work"
  mv "$tmp" "$work"
  echo "fuzz-native: $t: working corpus $before -> $(find "$work" -type f | wc -l) files"
  # A merge runs every input and goes on past a crash: say so (the input is in findings/).
  if grep -q 'Test unit written' "$OUT/logs/merge-$t.log"; then
    echo "fuzz-native: $t: inputs crashed during the merge (see $OUT/logs/merge-$t.log, $OUT/findings/$t/)"
  fi
}

# Minimizes committed + working corpus of t into a fresh directory; the committed corpus
# becomes its named files plus the merged inputs that are not one of them.
keep() {
  local t=$1 committed=native/fuzz/corpus/$1 work=$OUT/corpus/$1 tmp=$OUT/corpus/$1.keep
  rm -rf "$tmp"
  mkdir -p "$tmp" "$work" "$OUT/findings/$t"
  local before_files before_bytes
  before_files=$(find "$committed" -type f | wc -l)
  before_bytes=$(find "$committed" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  if ! "$OUT/fuzz_$t" -merge=1 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$OUT/findings/$t/" "$tmp" "$committed" "$work" \
       >"$OUT/logs/keep-$t.log" 2>&1; then
    rm -rf "$tmp"
    die "merge of $t failed (see $OUT/logs/keep-$t.log)"
  fi
  if grep -q 'Test unit written' "$OUT/logs/keep-$t.log"; then
    rm -rf "$tmp"
    die "$t: inputs crashed during the merge (see $OUT/logs/keep-$t.log, $OUT/findings/$t/); committed corpus unchanged"
  fi
  # Named files (seed-*, regression-*, any name that is not a SHA-1) stay; drop merged
  # inputs equal to one of them (same SHA-1 name), and replace the SHA-1-named ones.
  find "$committed" -type f -regextype posix-extended -regex '.*/[0-9a-f]{40}' -delete
  local f
  for f in "$committed"/*; do
    [ -f "$f" ] && rm -f "$tmp/$(sha1sum "$f" | cut -d' ' -f1)"
  done
  cp "$tmp"/* "$committed"/ 2>/dev/null || true
  rm -rf "$tmp"
  local after_bytes
  after_bytes=$(find "$committed" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  echo "fuzz-native: $t: committed corpus $before_files files $before_bytes bytes -> $(find "$committed" -type f | wc -l) files $after_bytes bytes"
}

# The value of a libFuzzer final stat line ("stat::name: value").
statv() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

# Runs one target; prints its line; returns 1 on a finding.
run() {
  local t=$1 secs=$2 runs=$3
  local bin=$OUT/fuzz_$t work=$OUT/corpus/$t findings=$OUT/findings/$t log=$OUT/logs/$t.log
  if [ "$fresh" = 1 ]; then rm -rf "$work"; fi
  mkdir -p "$work" "$findings" "native/fuzz/corpus/$t"
  rm -f "$findings"/*  # findings are those of this run (kept until the next one)
  local rc=0
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$bin" -max_total_time="$secs" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$findings/" "$work" "native/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  local execs rate units files found cov ft
  execs=$(statv number_of_executed_units "$log")
  rate=$(statv average_exec_per_sec "$log")
  units=$(grep -oE 'corp: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || true)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || true)
  files=$(find "$work" -type f | wc -l)
  found=$(find "$findings" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) -printf '%f ' | sed 's/ $//')
  printf 'fuzz-native: %-11s %s executions (%s exec/s), corpus %s units (%s files in %s), cov %s ft %s, findings: %s\n' \
    "$t" "${execs:-?}" "${rate:-?}" "${units:-?}" "$files" "$work" "${cov:-?}" "${ft:-?}" "${found:-none}"
  if [ -n "$found" ] || [ "$rc" -ne 0 ]; then
    echo "fuzz-native: $t: libFuzzer exited with $rc; report (from $log):" >&2
    grep -E -A40 'ERROR: |INVARIANT FAILED|runtime error|SUMMARY|Test unit written' "$log" | head -n 80 >&2 || tail -n 40 "$log" >&2
    if [ -z "$found" ]; then echo "fuzz-native: $t: no finding file, but libFuzzer failed" >&2; fi
    return 1
  fi
  return 0
}

mode=run
secs=
fresh=0
runs=${VHOSTKIT_FUZZ_NATIVE_RUNS:-}
case "${1:-}" in
  --build-only) mode=build; shift ;;
  --seeds) mode=seeds; shift ;;
  --merge) mode=merge; shift ;;
  --keep) mode=keep; shift ;;
  --list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
  -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
esac
if [ "$mode" = run ]; then
  while [ $# -gt 0 ]; do
    case "$1" in
      --fresh) fresh=1; shift ;;
      --runs) [ $# -ge 2 ] || die "--runs needs a number"; runs=$2; shift 2 ;;
      --runs=*) runs=${1#--runs=}; shift ;;
      *) break ;;
    esac
  done
  if [[ "${1:-}" =~ ^[0-9]+$ ]]; then secs=$1; shift; fi
fi
if [ -n "$runs" ]; then
  [[ "$runs" =~ ^[0-9]+$ ]] && [ "$runs" -gt 0 ] || die "runs must be a positive whole number (got '$runs')"
  secs=${secs:-0}  # 0: no time limit
else
  runs=-1          # libFuzzer: no limit on executions
  secs=${secs:-60}
  [ "$secs" -gt 0 ] || die "seconds must be > 0"
fi
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${TARGETS[@]}")
for t in "${selected[@]}"; do known "$t" || die "unknown target '$t' (known: ${TARGETS[*]})"; done

CXX=$(find_cxx)
mkdir -p "$OUT/logs"
if [ "$mode" = seeds ]; then seeds; exit 0; fi
for t in "${selected[@]}"; do build "$t"; done
[ "$mode" = build ] && exit 0
if [ "$mode" = merge ]; then
  for t in "${selected[@]}"; do merge "$t"; done
  exit 0
fi
if [ "$mode" = keep ]; then
  for t in "${selected[@]}"; do keep "$t"; done
  exit 0
fi

failed=()
for t in "${selected[@]}"; do
  run "$t" "$secs" "$runs" || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-native: FINDINGS in ${failed[*]} (inputs under $OUT/findings/)"
  exit 1
fi
limit="${secs}s each"
if [ "$runs" != -1 ]; then
  limit="$runs executions each"
  if [ "$secs" != 0 ]; then limit="$limit (at most ${secs}s)"; fi
fi
echo "fuzz-native: ${#selected[@]} targets, $limit, no findings"
