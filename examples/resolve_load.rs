//! Resolve load generator: N concurrent agents against a running daemon, each on its own
//! keep-alive connection, each waiting for its answer before asking again.
//!
//! `SCOPEHOLD_TOKEN=shk_... cargo run --release --example resolve_load -- --secret openai/prod --project demo --agents 16 --secs 10`
//! (socket from `--socket`, `$SCOPEHOLD_SOCKET`, or `$XDG_RUNTIME_DIR/scopehold/scopehold.sock`).
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

#[path = "common/load.rs"]
mod load;

fn main() {
    let mut socket = std::env::var_os("SCOPEHOLD_SOCKET").map(std::path::PathBuf::from);
    let (mut secret, mut project, mut agents, mut secs) =
        (String::new(), String::new(), 16usize, 10.0);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("missing value");
        match a.as_str() {
            "--socket" => socket = Some(val().into()),
            "--secret" => secret = val(),
            "--project" => project = val(),
            "--agents" => agents = val().parse().expect("--agents N"),
            "--secs" => secs = val().parse().expect("--secs S"),
            _ => panic!(
                "usage: resolve_load --secret S --project P [--agents N] [--secs S] [--socket PATH]"
            ),
        }
    }
    let socket = socket.unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").expect("set --socket"))
            .join("scopehold/scopehold.sock")
    });
    let token = std::env::var("SCOPEHOLD_TOKEN").expect("SCOPEHOLD_TOKEN");
    let r = load::run(&socket, &token, &secret, &project, agents, secs);
    println!(
        "agents={agents} resolutions/s={:.0} ok={} errors={} p50={:.0}us p99={:.0}us",
        r.rate(),
        r.ok,
        r.errors,
        r.pct(0.5),
        r.pct(0.99)
    );
}
