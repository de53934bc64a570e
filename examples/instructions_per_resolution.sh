#!/usr/bin/env bash
# Instructions the daemon executes per resolution, counted by valgrind (callgrind), which holds
# still on this noisy machine where seconds do not (and where perf has no hardware counters).
# The real `scopehold daemon` runs as its own process under valgrind; a separate client makes
# N1 and then N2 resolutions on one keep-alive connection in two runs; the difference of the
# daemon's totals divided by N2 - N1 removes start-up, set-up and shutdown. A second pair of
# runs under valgrind's dhat counts heap allocations (blocks) and bytes allocated the same way.
#   examples/instructions_per_resolution.sh BINARY [BINARY...]   (N1=200 N2=2200 by default;
#   ALLOC=0 skips the allocation count)
set -euo pipefail
N1=${N1:-200}
N2=${N2:-2200}
. "$(dirname "$0")/common/bench_daemon.sh"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }

# A client as small as an agent's: N resolutions on one keep-alive connection.
client() {
  python3 - "$1" "$2" "$3" <<'PY'
import socket, sys
path, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = b'{"secret":"openai/prod","project":"bench"}'
req = (b"POST /v1/resolve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() +
       b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
       b"\r\n\r\n" + body)
s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile("rb")
for _ in range(n):
    s.sendall(req)
    status = f.readline()
    assert b" 200 " in status, status
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""): break
        if line.lower().startswith(b"content-length:"): length = int(line.split(b":")[1])
    f.read(length)
PY
}

# Totals of one daemon run that serves N resolutions under TOOL: callgrind's instructions, or
# dhat's "blocks bytes" allocated.
run() {
  local bin=$1 n=$2 tool=${3:-callgrind} dir sock pid tok out
  dir=$(mktemp -d "${TMPDIR:-/tmp}/sh-instr.XXXXXX")
  sock=$dir/s.sock
  export SCOPEHOLD_HOME=$dir/state SCOPEHOLD_SOCKET=$sock
  "$bin" init >/dev/null
  if [ "$tool" = dhat ]; then
    valgrind --tool=dhat --dhat-out-file=/dev/null "$bin" daemon 2>"$dir/vg.log" &
  else
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" daemon 2>"$dir/vg.log" &
  fi
  pid=$!
  wait_socket "$sock" 600
  tok=$(grant_bench_agent "$bin")
  client "$sock" "$tok" "$n"
  kill -TERM "$pid"; wait "$pid" || true
  if [ "$tool" = dhat ]; then
    # "Total:     1,234 bytes in 56 blocks"
    out=$(grep -E 'Total: ' "$dir/vg.log" | head -1 | tr -d , | awk '{print $6, $3}')
  else
    out=$(grep -E '^(summary|totals):' "$dir/cg.out" | head -1 | awk '{print $2}')
  fi
  rm -rf "$dir"
  unset SCOPEHOLD_HOME SCOPEHOLD_SOCKET
  echo "$out"
}

for bin in "$@"; do
  bin=$(realpath "$bin")
  a=$(run "$bin" "$N1")
  b=$(run "$bin" "$N2")
  awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" -v bin="$bin" 'BEGIN {
    printf "INSTR %s: %.0f instructions per resolution (daemon totals %d after %d, %d after %d)\n", bin, (b - a) / (n2 - n1), a, n1, b, n2
  }'
  [ "${ALLOC:-1}" = 0 ] && continue
  a=$(run "$bin" "$N1" dhat)
  b=$(run "$bin" "$N2" dhat)
  awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" -v bin="$bin" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    printf "ALLOC %s: %.1f allocations and %.0f bytes allocated per resolution\n", bin, (y[1] - x[1]) / (n2 - n1), (y[2] - x[2]) / (n2 - n1)
  }'
done
