#!/usr/bin/env bash
# Runs the peer (OpenBao KV reads by a narrow token, file audit device) and ScopeHold's
# resolution benchmark one after the other in the same run, on the same machine, and prints
# both SUMMARY lines and the ratios the daemon issue sets as targets (throughput >= 10x at 16
# connections; single-agent p50 < half of OpenBao's, audit device on).
#   examples/bench_vs_openbao.sh [SECS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RUNS=${2:-3}
PEER=${PEER:-../shared/bench/openbao-peer.sh}
cargo build --release --example resolve_bench >&2
peer=$(DURATION=$SECS RUNS=$RUNS bash "$PEER" | grep '^SUMMARY')
# The peer's audit log leaves dirty pages behind (it never fsyncs); let the kernel write them
# back before our run, whose every answer waits on fdatasync.
sync
sleep 2
ours=$(target/release/examples/resolve_bench --secs "$SECS" --runs "$RUNS" --dir "${TMPDIR:-/tmp}" | tee /dev/stderr | grep '^SUMMARY')
echo "$peer"
echo "$ours"
bao_rps=$(sed -E 's/.*audit_on c1 [^|]* c[0-9]+ rps=([0-9.]+).*/\1/' <<<"$peer")
bao_p50=$(sed -E 's/.*audit_on c1 p50=([0-9.]+)us.*/\1/' <<<"$peer")
our_rps=$(sed -E 's/.* c16 rps=([0-9.]+).*/\1/' <<<"$ours")
our_p50=$(sed -E 's/^[^|]* c1 p50=([0-9.]+)us.*/\1/' <<<"$ours")
awk -v a="$our_rps" -v b="$bao_rps" -v c="$our_p50" -v d="$bao_p50" 'BEGIN {
  printf "RATIO throughput c16: scopehold %.0f / openbao %.0f = %.1fx (target >= 10x)\n", a, b, a / b
  printf "RATIO p50 c1: scopehold %.0f us / openbao %.0f us = %.2f (target < 0.5)\n", c, d, c / d
}'
