//! Benchmark of the log: durable, checkpointed, signed append throughput with 1, 16 and 64
//! closed-loop appenders (each waits for its acknowledgement before appending again), beside
//! the raw ceiling measured in the same run (the same bytes, in the same batch sizes, written
//! and fdatasync'd with no hashing or signing), and verification speed.
//!
//! Run: `cargo run --release --example log_bench -- [--secs S] [--runs N] [--dir DIR]`
//! Figures are medians of N runs. The ratio to the raw ceiling is what counts: the machine's
//! fdatasync latency sets both.
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use scopehold_log::{Entry, Log, LogKey, LogOptions, VerifyOptions, verify_log};

/// A fixed key: benchmark logs are throwaway, and verification needs the public half.
const BENCH_SEED: [u8; 32] = [7; 32];

/// A body the size of a typical resolution event (identity, secret, project, grant, pid, uid
/// as JSON), 200 bytes.
fn body(i: u64) -> Vec<u8> {
    let mut b = format!(
        "{{\"resolved\":\"openai/prod\",\"by\":\"agent-{i}\",\"project\":\"demo\",\"grant\":{i}}}"
    )
    .into_bytes();
    b.resize(200, b' ');
    b
}

struct Run {
    events: u64,
    secs: f64,
    batches: u64,
    bytes: u64,
    p50_us: f64,
    p99_us: f64,
}

fn append_run(dir: &Path, appenders: usize, secs: f64, pipeline: bool) -> Run {
    let opts = LogOptions {
        pipeline,
        ..LogOptions::default()
    };
    let log = Arc::new(Log::create(dir, LogKey::from_seed(&BENCH_SEED), opts).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..appenders)
        .map(|t| {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    log.append(Entry::public(4, body(i))).unwrap();
                    lat.push(t0.elapsed().as_nanos() as u64);
                    i += appenders as u64;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let st = log.status();
    Arc::try_unwrap(log).ok().unwrap().close().unwrap();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    Run {
        events: st.size,
        secs: elapsed,
        batches: st.batches,
        bytes: st.bytes_written,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// The same number of batches of the same average size, written and fdatasync'd raw.
fn raw_ceiling(path: &Path, batches: u64, batch_bytes: usize, events_per_batch: f64) -> f64 {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let buf = vec![0x5au8; batch_bytes];
    let start = Instant::now();
    for _ in 0..batches {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
    }
    batches as f64 * events_per_batch / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut secs = 3.0;
    let mut runs = 3;
    let mut base: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--dir" => base = Some(args.next().unwrap().into()),
            _ => panic!("usage: log_bench [--secs S] [--runs N] [--dir DIR]"),
        }
    }
    let tmp = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir_in(".").unwrap(),
    };
    println!(
        "log_bench: {runs} runs of {secs} s each, in {}",
        tmp.path().display()
    );
    println!(
        "{:>9} {:>9} {:>12} {:>12} {:>7} {:>10} {:>9} {:>9}",
        "mode", "appenders", "events/s", "raw/s", "ratio", "avg batch", "p50 us", "p99 us"
    );
    let mut biggest: Option<(PathBuf, u64)> = None;
    for (pipeline, appenders) in [
        (false, 1usize),
        (false, 16),
        (false, 64),
        (true, 1),
        (true, 16),
        (true, 64),
    ] {
        let (mut ours, mut raw, mut ratio, mut batch, mut p50, mut p99) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for r in 0..runs {
            let dir = tmp.path().join(format!("log-{pipeline}-{appenders}-{r}"));
            let run = append_run(&dir, appenders, secs, pipeline);
            let eps = run.events as f64 / run.secs;
            let per_batch = run.events as f64 / run.batches as f64;
            let raw_eps = raw_ceiling(
                &tmp.path().join(format!("raw-{appenders}-{r}")),
                run.batches,
                (run.bytes / run.batches) as usize,
                per_batch,
            );
            ours.push(eps);
            raw.push(raw_eps);
            ratio.push(eps / raw_eps);
            batch.push(per_batch);
            p50.push(run.p50_us);
            p99.push(run.p99_us);
            if biggest.as_ref().is_none_or(|(_, n)| run.events > *n) {
                biggest = Some((dir, run.events));
            }
        }
        println!(
            "{:>9} {:>9} {:>12.0} {:>12.0} {:>6.0}% {:>10.1} {:>9.0} {:>9.0}",
            if pipeline { "pipelined" } else { "serial" },
            appenders,
            median(ours),
            median(raw),
            100.0 * median(ratio),
            median(batch),
            median(p50),
            median(p99)
        );
    }
    // Verification speed over the largest log written above (read from the page cache).
    let (dir, events) = biggest.expect("at least one run");
    let key = LogKey::from_seed(&BENCH_SEED).public();
    let mut vps = vec![];
    for _ in 0..runs {
        let t0 = Instant::now();
        let r = verify_log(&dir, &key, &VerifyOptions::default()).unwrap();
        assert_eq!(r.events, events);
        vps.push(events as f64 / t0.elapsed().as_secs_f64());
    }
    println!(
        "verify: {:.0} events/s (median of {runs}, {events} events)",
        median(vps)
    );
}
