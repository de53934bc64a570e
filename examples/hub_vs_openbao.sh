#!/usr/bin/env bash
# Issue 12's benchmark: the peer (OpenBao KV reads by a narrow token, file audit device on,
# single node) and a ScopeHold hub driven through two edges at C agents each
# (examples/hub_bench.rs), one after the other in the same run on the same machine.
# The goal is at least 3x OpenBao's single-node reads/s.
#   examples/hub_vs_openbao.sh [SECS] [RUNS] [C]
# STORE=pg keeps the hub's log in PostgreSQL: a private cluster (Debian's postgresql package,
# default durability: fsync on, synchronous_commit on) that this script starts on a unix
# socket in a temporary directory and removes at the end. STORE=files (the default) keeps it
# on local files.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RUNS=${2:-3}
C=${3:-16}
STORE=${STORE:-files}
PEER=${PEER:-../shared/bench/openbao-peer.sh}
cargo build --release --locked --bin scopehold --example hub_bench >&2
store_args=()
if [ "$STORE" = pg ]; then
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pgdir=$(mktemp -d)
  chmod 755 "$pgdir"
  mkdir "$pgdir/data" "$pgdir/sock"
  # PostgreSQL will not run as root: the cluster is the postgres user's (made by the package).
  as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$pgdir/data" "$pgdir/sock"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -U scopehold --auth=trust -E UTF8 -D "$pgdir/data" >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/data/server.log" -w \
    -o "-k $pgdir/sock -c listen_addresses=''" start >/dev/null
  trap '"${as[@]}" "$bin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null; rm -rf "$pgdir"' EXIT
  store_args=(--store "postgres://scopehold@/postgres?host=$pgdir/sock")
fi
peer=$(DURATION=$SECS RUNS=$RUNS bash "$PEER" | grep '^SUMMARY')
sync
sleep 2
ours=$(target/release/examples/hub_bench --bin target/release/scopehold --secs "$SECS" --runs "$RUNS" \
  --conc "$C" --dir "${TMPDIR:-/tmp}" "${store_args[@]}" | tee /dev/stderr | grep '^SUMMARY')
echo "$peer"
echo "$ours"
bao_rps=$(sed -E 's/.*audit_on c1 [^|]* c[0-9]+ rps=([0-9.]+).*/\1/' <<<"$peer")
our_rps=$(sed -E 's/.*edges c[0-9]+x2 rps=([0-9.]+).*/\1/' <<<"$ours")
awk -v a="$our_rps" -v b="$bao_rps" -v s="$STORE" 'BEGIN {
  printf "RATIO through two edges, hub log on %s: scopehold %.0f / openbao single node c16 %.0f = %.1fx (goal >= 3x)\n", s, a, b, a / b
}'
