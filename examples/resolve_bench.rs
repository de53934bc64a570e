//! Resolution benchmark: the real daemon (in this process, on its own 2-thread runtime) on a
//! unix socket, a fresh state directory, one secret granted to one agent; closed-loop
//! keep-alive HTTP/1.1 agents on a one-thread load generator. Every resolution is durable and
//! signed before its answer leaves.
//!
//! Prints resolutions/s with 16 agents, single-agent p50/p99, and beside them the floor
//! measured in the same run: the log alone (resolution-sized events, fdatasync and one
//! signature per batch, no HTTP) with 16 and 1 appenders.
//!
//! `cargo run --release --example resolve_bench -- [--secs S] [--runs N] [--dir DIR]`
//! `examples/bench_vs_openbao.sh` runs it beside OpenBao in the same run.
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

#[path = "common/load.rs"]
mod load;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use scopehold::daemon::{Engine, Home};
use scopehold_log::{Entry, Log, LogKey, LogOptions};
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The floor: resolution-sized events appended straight to a log by `n` closed-loop threads.
fn floor(dir: &std::path::Path, n: usize, secs: f64) -> (f64, f64) {
    // The daemon's log settings (serial group commit), without the kept checkpoint.
    let opts = LogOptions {
        pipeline: false,
        ..LogOptions::default()
    };
    let log = Arc::new(Log::create(dir, LogKey::generate().unwrap(), opts).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let body = json!({"type": "secret_resolved", "identity": "agent:bench", "secret": "openai/prod", "version": 1,
                      "project": "bench", "grant": 1, "pid": 12345, "uid": 1000, "at_ms": 1_790_000_000_000u64})
    .to_string()
    .into_bytes();
    let start = Instant::now();
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let (log, stop, body) = (log.clone(), stop.clone(), body.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    log.append(Entry::public(12, body.clone())).unwrap();
                    lat.push(t0.elapsed().as_secs_f64() * 1e6);
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<f64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = lat[lat.len() / 2];
    Arc::try_unwrap(log).ok().unwrap().close().unwrap();
    (rate, p50)
}

fn main() {
    let (mut secs, mut runs, mut base) = (5.0, 3usize, std::path::PathBuf::from("."));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("missing value");
        match a.as_str() {
            "--secs" => secs = val().parse().unwrap(),
            "--runs" => runs = val().parse().unwrap(),
            "--dir" => base = val().into(),
            _ => panic!("usage: resolve_bench [--secs S] [--runs N] [--dir DIR]"),
        }
    }
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let home = Home::new(Some(tmp.path().join("state")), None).unwrap();
    home.init().unwrap();
    let core = Arc::new(Engine::open(&home, scopehold_log::system_clock()).unwrap());
    let socket = tmp.path().join("scopehold.sock");
    let std_listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_core = core.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::UnixListener::from_std(std_listener).unwrap();
            scopehold::daemon::server::run(
                l,
                None,
                None,
                server_core,
                async {
                    let _ = stop_rx.await;
                },
                Duration::from_secs(5),
            )
            .await;
        });
    });
    let admin = |path: &str, body: serde_json::Value| {
        let a = scopehold::cli::client::request(&socket, "POST", path, Some(&body), None).unwrap();
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        a.body
    };
    admin("/v1/projects", json!({"name": "bench"}));
    admin(
        "/v1/secrets",
        json!({"name": "openai/prod", "projects": ["bench"], "value": "sk-bench-0123456789abcdef0123456789abcdef"}),
    );
    let token = admin("/v1/agents", json!({"name": "bench"}))["credential"]
        .as_str()
        .unwrap()
        .to_string();
    admin(
        "/v1/grants",
        json!({"identity": "agent:bench", "secret": "openai/prod", "project": "bench"}),
    );

    println!(
        "resolve_bench: {runs} runs of {secs} s, state in {}",
        tmp.path().display()
    );
    load::run(&socket, &token, "openai/prod", "bench", 16, 1.0); // warm-up
    let (mut rps16, mut p50s, mut p99s, mut rps1) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let r = load::run(&socket, &token, "openai/prod", "bench", 16, secs);
        assert_eq!(r.errors, 0);
        rps16.push(r.rate());
        let r = load::run(&socket, &token, "openai/prod", "bench", 1, secs);
        assert_eq!(r.errors, 0);
        rps1.push(r.rate());
        p50s.push(r.pct(0.5));
        p99s.push(r.pct(0.99));
    }
    let _ = stop_tx.send(());
    server.join().unwrap();
    let status = core.log().status();
    Arc::try_unwrap(core).ok().unwrap().close().unwrap();
    let (mut f16, mut f1) = (vec![], vec![]);
    for r in 0..runs {
        f16.push(floor(&tmp.path().join(format!("floor16-{r}")), 16, secs).0);
        f1.push(floor(&tmp.path().join(format!("floor1-{r}")), 1, secs).1);
    }
    let (rps16, rps1, p50, p99, f16, f1) = (
        median(rps16),
        median(rps1),
        median(p50s),
        median(p99s),
        median(f16),
        median(f1),
    );
    println!(
        "scopehold resolve c16: {rps16:.0} resolutions/s   (floor, log only: {f16:.0} appends/s, {:.0}% of it)",
        100.0 * rps16 / f16
    );
    println!(
        "scopehold resolve c1:  p50 {p50:.0} us, p99 {p99:.0} us, {rps1:.0} resolutions/s   (floor, log only: p50 {f1:.0} us)"
    );
    println!(
        "log: {} events in {} group commits ({:.1} events per fdatasync)",
        status.size,
        status.batches,
        status.size as f64 / status.batches as f64
    );
    println!(
        "SUMMARY scopehold resolve (median of {runs} x {secs}s): c16 rps={rps16:.0} c1 p50={p50:.0}us p99={p99:.0}us rps1={rps1:.0} | floor c16={f16:.0}/s c1 p50={f1:.0}us"
    );
}
