#!/usr/bin/env bash
# Issue 12's benchmark, as far as it is built: the peer (OpenBao KV reads by a narrow token,
# file audit device on, single node) and a ScopeHold hub driven through two edges at C agents
# each (examples/hub_bench.rs), one after the other in the same run on the same machine.
# The goal is at least 3x OpenBao's single-node reads/s. The hub's log is on local files:
# the PostgreSQL store is not built yet.
#   examples/hub_vs_openbao.sh [SECS] [RUNS] [C]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RUNS=${2:-3}
C=${3:-16}
PEER=${PEER:-../shared/bench/openbao-peer.sh}
cargo build --release --locked --bin scopehold --example hub_bench >&2
peer=$(DURATION=$SECS RUNS=$RUNS bash "$PEER" | grep '^SUMMARY')
sync
sleep 2
ours=$(target/release/examples/hub_bench --bin target/release/scopehold --secs "$SECS" --runs "$RUNS" \
  --conc "$C" --dir "${TMPDIR:-/tmp}" | tee /dev/stderr | grep '^SUMMARY')
echo "$peer"
echo "$ours"
bao_rps=$(sed -E 's/.*audit_on c1 [^|]* c[0-9]+ rps=([0-9.]+).*/\1/' <<<"$peer")
our_rps=$(sed -E 's/.*edges c[0-9]+x2 rps=([0-9.]+).*/\1/' <<<"$ours")
awk -v a="$our_rps" -v b="$bao_rps" 'BEGIN {
  printf "RATIO through two edges: scopehold %.0f / openbao single node c16 %.0f = %.1fx (goal >= 3x)\n", a, b, a / b
}'
