#!/usr/bin/env bash
# Builds every fuzz target and runs each for 30 seconds (FUZZ_SECONDS) on its committed
# corpus, one after the other. Exits non-zero if a target crashes (the input that did is
# left in fuzz/artifacts/<target>/). Needs only the stable toolchain: cargo-fuzz passes -Z
# flags, which RUSTC_BOOTSTRAP=1 allows on stable; it is installed if missing.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
secs="${FUZZ_SECONDS:-30}"

# Pinned, as CI pins cargo-deny.
if ! cargo fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0.13.2'; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

# The committed lock file must be complete: fail rather than resolve anew.
cargo fetch --locked

cargo fuzz build
for target in $(cargo fuzz list); do
    # New inputs go to a scratch directory: the committed corpus is only read.
    scratch="$(mktemp -d)"
    echo "== fuzz/$target: ${secs}s on corpus/$target"
    if ! cargo fuzz run "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$secs" -print_final_stats=1; then
        echo "fuzz/$target: CRASH (see fuzz/artifacts/$target/)" >&2
        rm -rf "$scratch"
        exit 1
    fi
    rm -rf "$scratch"
done
echo "fuzz smoke: every target ran ${secs}s without a crash"
