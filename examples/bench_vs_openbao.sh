#!/usr/bin/env bash
# The peer (OpenBao KV reads by a narrow token, file audit device on) and the real
# `scopehold daemon` process, driven by a separate load-generator process
# (examples/daemon_bench.rs) over its socket, one after the other in the same run on the same
# machine. Prints both SUMMARY lines and the ratios issue 11 sets as targets: throughput >= 10x
# OpenBao's at 16 agents; single-agent p50 <= 0.5x OpenBao's; >= 85% of the raw
# write+fdatasync ceiling of the same batch sizes; RSS <= 16 MiB idle and 64 MiB under load.
# INSTR=1 adds the daemon's instructions per resolution (callgrind; perf has no counters here).
#   examples/bench_vs_openbao.sh [SECS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RUNS=${2:-3}
PEER=${PEER:-../shared/bench/openbao-peer.sh}
cargo build --release --locked --bin scopehold --example daemon_bench >&2
peer=$(DURATION=$SECS RUNS=$RUNS bash "$PEER" | grep '^SUMMARY')
# The peer's audit log leaves dirty pages behind (it never fsyncs); let the kernel write them
# back before our run, whose every answer waits on fdatasync.
sync
sleep 2
ours=$(target/release/examples/daemon_bench --bin target/release/scopehold --secs "$SECS" --runs "$RUNS" \
  --conc 1,4,16,64 --dir "${TMPDIR:-/tmp}" | grep '^SUMMARY')
echo "$peer"
echo "$ours"
bao_rps=$(sed -E 's/.*audit_on c1 [^|]* c[0-9]+ rps=([0-9.]+).*/\1/' <<<"$peer")
bao_p50=$(sed -E 's/.*audit_on c1 p50=([0-9.]+)us.*/\1/' <<<"$peer")
our_rps=$(sed -E 's/.*\| c16 rps=([0-9.]+).*/\1/' <<<"$ours")
our_p50=$(sed -E 's/.*\| c1 rps=[^|]* p50=([0-9.]+)us.*/\1/' <<<"$ours")
ceiling=$(sed -E 's/.*\| c16 [^|]* of-zeroed-ceiling=([0-9]+)%.*/\1/' <<<"$ours")
sceiling=$(sed -E 's/.*\| c16 [^|]* signed-ceiling=([0-9]+) .*/\1/' <<<"$ours")
sfrac=$(sed -E 's/.*\| c16 [^|]* of-signed-ceiling=([0-9]+)%.*/\1/' <<<"$ours")
fp50=$(sed -E 's/.*\| c1-floor [^|]* p50=([0-9]+)us.*/\1/' <<<"$ours")
sp50=$(sed -E 's/.*\| c1 [^|]* signed-ceiling=[0-9]+ \(p50 ([0-9]+)us\).*/\1/' <<<"$ours")
awk -v a="$our_rps" -v b="$bao_rps" -v c="$our_p50" -v d="$bao_p50" -v e="$ceiling" \
  -v f="$sceiling" -v g="$sfrac" -v h="$sp50" -v i="$fp50" 'BEGIN {
  printf "RATIO throughput c16: scopehold %.0f / openbao %.0f = %.1fx (target >= 10x)\n", a, b, a / b
  printf "RATIO p50 c1: scopehold %.0f us / openbao %.0f us = %.2f (target <= 0.5)\n", c, d, c / d
  printf "RATIO c16 of the raw pre-zeroed write+fdatasync ceiling, same batch sizes: %d%% (target >= 85%%)\n", e
  # The bound promise 1 sets: a batch is answered only once it is signed and synced.
  printf "BOUND c16 sign+write+fdatasync ceiling, same batch sizes: %.0f/s = %.1fx openbao; scopehold at %d%% of it\n", f, f / b, g
  printf "BOUND c1 sign+write+fdatasync p50: %.0f us = %.2f of openbao'"'"'s p50; scopehold %.0f us\n", h, h / d, c
  printf "BOUND c1 round trip to a server process that only reads, signs, writes, fdatasyncs and answers: p50 %.0f us = %.2f of openbao'"'"'s p50; scopehold %.0f us\n", i, i / d, c
}'
if [ "${INSTR:-0}" = 1 ]; then
  examples/instructions_per_resolution.sh target/release/scopehold
fi
