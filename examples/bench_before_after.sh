#!/usr/bin/env bash
# Two `scopehold` binaries side by side in one run, as users run them: each started as its own
# `scopehold daemon` process on a fresh state directory, set up with its own CLI, and driven by
# the same separate load-generator process (examples/resolve_load.rs) over the socket. Rounds
# alternate A, B, A, B... so drift on this noisy machine falls on both alike. Prints each run and
# the medians, with the ratio B / A.
#   examples/bench_before_after.sh OLD_BINARY NEW_BINARY [SECS] [ROUNDS]
# Build a previous release with: git worktree add /tmp/prev <commit> && cargo build --release
# --manifest-path /tmp/prev/Cargo.toml
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1")
B=$(realpath "$2")
SECS=${3:-5}
ROUNDS=${4:-3}
cargo build --release --locked --example resolve_load >&2
LOAD=target/release/examples/resolve_load
. examples/common/bench_daemon.sh

# One measurement: fresh state, the daemon as its own process, 16 agents then 1.
measure() {
  local bin=$1 dir sock pid tok out16 out1
  dir=$(mktemp -d "${TMPDIR:-/tmp}/sh-bench.XXXXXX")
  sock=$dir/s.sock
  export SCOPEHOLD_HOME=$dir/state SCOPEHOLD_SOCKET=$sock
  "$bin" init >/dev/null
  "$bin" daemon 2>"$dir/daemon.log" &
  pid=$!
  wait_socket "$sock"
  tok=$(grant_bench_agent "$bin")
  out16=$(SCOPEHOLD_TOKEN=$tok "$LOAD" --socket "$sock" --secret openai/prod --project bench --agents 16 --secs "$SECS")
  out1=$(SCOPEHOLD_TOKEN=$tok "$LOAD" --socket "$sock" --secret openai/prod --project bench --agents 1 --secs "$SECS")
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$dir"
  unset SCOPEHOLD_HOME SCOPEHOLD_SOCKET
  local rps p50
  rps=$(sed -E 's/.*resolutions\/s=([0-9.]+).*/\1/' <<<"$out16")
  p50=$(sed -E 's/.*p50=([0-9.]+)us.*/\1/' <<<"$out1")
  echo "$rps $p50"
}

ra=() rb=() pa=() pb=()
for r in $(seq "$ROUNDS"); do
  sync; sleep 1
  read -r x y < <(measure "$A"); ra+=("$x"); pa+=("$y")
  echo "round $r A: c16 ${x}/s, c1 p50 ${y}us" >&2
  sync; sleep 1
  read -r x y < <(measure "$B"); rb+=("$x"); pb+=("$y")
  echo "round $r B: c16 ${x}/s, c1 p50 ${y}us" >&2
done
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }
mra=$(med "${ra[@]}") mrb=$(med "${rb[@]}") mpa=$(med "${pa[@]}") mpb=$(med "${pb[@]}")
echo "A ($A): c16 median ${mra}/s (runs $(spread "${ra[@]}")), c1 p50 median ${mpa}us (runs $(spread "${pa[@]}"))"
echo "B ($B): c16 median ${mrb}/s (runs $(spread "${rb[@]}")), c1 p50 median ${mpb}us (runs $(spread "${pb[@]}"))"
awk -v a="$mra" -v b="$mrb" -v c="$mpa" -v d="$mpb" 'BEGIN {
  printf "RATIO B/A: throughput c16 %.3f, p50 c1 %.3f\n", b / a, d / c
}'
