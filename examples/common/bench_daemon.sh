# Shared by the benchmark scripts (sourced): the set-up every benchmark daemon gets.

# Waits up to TRIES x 0.1 s for the daemon's socket SOCK to appear.
wait_socket() {
  local sock=$1 tries=${2:-200}
  for _ in $(seq "$tries"); do [ -S "$sock" ] && return 0; sleep 0.1; done
  echo "no socket at $sock" >&2
  return 1
}

# With BIN's daemon serving $SCOPEHOLD_SOCKET: the project `bench`, the secret
# `openai/prod` in it, the agent `bench` granted it. Prints the agent's credential.
grant_bench_agent() {
  local bin=$1
  "$bin" project create bench >/dev/null
  printf 'sk-bench-0123456789abcdef0123456789abcdef' | "$bin" secret put openai/prod --project bench >/dev/null
  "$bin" --json agent create bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["credential"])'
  "$bin" grant create agent:bench openai/prod --project bench >/dev/null
}
