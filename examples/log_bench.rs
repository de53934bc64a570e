//! Benchmark of the log: durable, checkpointed, signed append throughput and latency with 1
//! and 16 closed-loop appenders (each waits for its acknowledgement before appending again;
//! 64 with `--64`), serial and pipelined, on growing segments (segment version 1, as before
//! pre-zeroing: `LogOptions::preallocate` off) and on pre-zeroed ones (version 2, the
//! default); beside them the raw ceiling of the same batches written and fdatasync'd with no
//! hashing or signing, into a growing file and into a pre-zeroed one; what creating a log
//! costs; and verification speed.
//!
//! Run: `cargo run --release --example log_bench -- [--secs S] [--runs N] [--dir DIR] [--64]`
//! Figures are medians of N runs, with the lowest and highest in brackets. The ratio to the
//! raw ceiling is what counts for the log's own overhead: the machine's fdatasync latency sets
//! both.
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
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

fn options(pipeline: bool, prezeroed: bool) -> LogOptions {
    LogOptions {
        pipeline,
        preallocate: prezeroed,
        ..LogOptions::default()
    }
}

fn append_run(dir: &Path, appenders: usize, secs: f64, pipeline: bool, prezeroed: bool) -> Run {
    let log = Arc::new(
        Log::create(
            dir,
            LogKey::from_seed(&BENCH_SEED),
            options(pipeline, prezeroed),
        )
        .unwrap(),
    );
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
    Run {
        events: st.size,
        secs: elapsed,
        batches: st.batches,
        bytes: st.bytes_written,
        p50_us: pct(&lat, 0.50),
        p99_us: pct(&lat, 0.99),
    }
}

fn pct(sorted_ns: &[u64], p: f64) -> f64 {
    sorted_ns[((sorted_ns.len() as f64 * p) as usize).min(sorted_ns.len() - 1)] as f64 / 1000.0
}

/// A file to write batches into and fdatasync: appended to (it grows, so every fdatasync
/// commits its size too), or overwritten in place after being filled with zeros and synced.
struct RawFile {
    file: std::fs::File,
    prezeroed: Option<u64>,
    pos: u64,
}

const RAW_PREZEROED: u64 = 16 << 20;

impl RawFile {
    fn new(path: &Path, prezeroed: bool) -> Self {
        let _ = std::fs::remove_file(path);
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        if prezeroed {
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..RAW_PREZEROED >> 20 {
                file.write_all(&zeros).unwrap();
            }
            file.sync_data().unwrap();
        }
        Self {
            file,
            prezeroed: prezeroed.then_some(RAW_PREZEROED),
            pos: 0,
        }
    }
    fn write_sync(&mut self, buf: &[u8]) {
        if let Some(len) = self.prezeroed
            && self.pos + buf.len() as u64 > len
        {
            // Round again over blocks already written: still no metadata to commit.
            self.pos = 0;
        }
        self.file.write_all_at(buf, self.pos).unwrap();
        self.pos += buf.len() as u64;
        self.file.sync_data().unwrap();
    }
}

/// `batches` writes of `batch_bytes` each, with an fdatasync after each: (batches per
/// second, p50 µs of one write and fdatasync).
fn raw(path: &Path, batches: u64, batch_bytes: usize, prezeroed: bool) -> (f64, f64) {
    let mut f = RawFile::new(path, prezeroed);
    let buf = vec![0x5au8; batch_bytes.max(1)];
    let mut lat = Vec::with_capacity(batches as usize);
    let start = Instant::now();
    for _ in 0..batches {
        let t0 = Instant::now();
        f.write_sync(&buf);
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    let rate = batches as f64 / start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    lat.sort_unstable();
    (rate, pct(&lat, 0.5))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `median [low-high]`, with `decimals` decimals.
fn spread(v: &[f64], decimals: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.*} [{:.*}-{:.*}]",
        decimals,
        median(v.to_vec()),
        decimals,
        lo,
        decimals,
        hi
    )
}

fn main() {
    let mut secs = 3.0;
    let mut runs = 3;
    let mut base: Option<PathBuf> = None;
    let mut with_64 = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--dir" => base = Some(args.next().unwrap().into()),
            "--64" => with_64 = true,
            _ => panic!("usage: log_bench [--secs S] [--runs N] [--dir DIR] [--64]"),
        }
    }
    let tmp = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir_in(".").unwrap(),
    };
    println!(
        "log_bench: {runs} runs of {secs} s each, in {}; medians [lowest-highest]",
        tmp.path().display()
    );

    // Raw: one write plus fdatasync of an event-sized batch (one 200-byte event and its
    // checkpoint, ~450 bytes), growing a file and into a pre-zeroed one.
    println!("\nraw write+fdatasync of one batch, growing file vs pre-zeroed file:");
    println!(
        "{:>12} {:>26} {:>26} {:>24} {:>24}",
        "batch bytes", "growing/s", "pre-zeroed/s", "growing p50 us", "pre-zeroed p50 us"
    );
    for bytes in [450usize, 4096, 65536] {
        let n = if bytes > 4096 { 1000 } else { 3000 };
        let (mut g, mut z, mut gl, mut zl) = (vec![], vec![], vec![], vec![]);
        for r in 0..runs {
            let (rate, p50) = raw(&tmp.path().join(format!("rawg-{r}")), n, bytes, false);
            g.push(rate);
            gl.push(p50);
            let (rate, p50) = raw(&tmp.path().join(format!("rawz-{r}")), n, bytes, true);
            z.push(rate);
            zl.push(p50);
        }
        println!(
            "{:>12} {:>26} {:>26} {:>24} {:>24}",
            bytes,
            spread(&g, 0),
            spread(&z, 0),
            spread(&gl, 0),
            spread(&zl, 0)
        );
    }

    // Creating a log: the first segment (pre-zeroed: 1 MiB of zeros, synced).
    let create = |prezeroed: bool| {
        let mut ms = vec![];
        for i in 0..20 {
            let dir = tmp.path().join(format!("create-{prezeroed}-{i}"));
            let t0 = Instant::now();
            Log::create(
                &dir,
                LogKey::from_seed(&BENCH_SEED),
                options(false, prezeroed),
            )
            .unwrap()
            .close()
            .unwrap();
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        ms
    };
    let (cg, cz) = (create(false), create(true));
    println!(
        "\nLog::create + close (20 each): growing segments {} ms, pre-zeroed {} ms",
        spread(&cg, 2),
        spread(&cz, 2)
    );

    println!(
        "\nappends (closed loop, 200-byte public events); raw = the same batches written and fdatasync'd by hand into the same kind of file:"
    );
    println!(
        "{:>9} {:>10} {:>9} {:>22} {:>22} {:>7} {:>7} {:>18} {:>16}",
        "mode", "segments", "appenders", "events/s", "raw/s", "ratio", "batch", "p50 us", "p99 us"
    );
    let mut biggest: Option<(PathBuf, u64)> = None;
    let mut configs = vec![(false, 1usize), (false, 16), (true, 1), (true, 16)];
    if with_64 {
        configs.extend([(false, 64), (true, 64)]);
    }
    for (pipeline, appenders) in configs {
        for prezeroed in [false, true] {
            let (mut ours, mut rawv, mut ratio, mut batch, mut p50, mut p99) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for r in 0..runs {
                let dir = tmp
                    .path()
                    .join(format!("log-{pipeline}-{prezeroed}-{appenders}-{r}"));
                let run = append_run(&dir, appenders, secs, pipeline, prezeroed);
                let eps = run.events as f64 / run.secs;
                let per_batch = run.events as f64 / run.batches as f64;
                let (raw_bps, _) = raw(
                    &tmp.path().join(format!("raw-{appenders}-{r}")),
                    run.batches,
                    (run.bytes / run.batches) as usize,
                    prezeroed,
                );
                let raw_eps = raw_bps * per_batch;
                ours.push(eps);
                rawv.push(raw_eps);
                ratio.push(100.0 * eps / raw_eps);
                batch.push(per_batch);
                p50.push(run.p50_us);
                p99.push(run.p99_us);
                if biggest.as_ref().is_none_or(|(_, n)| run.events > *n) {
                    if let Some((old, _)) = biggest.take() {
                        std::fs::remove_dir_all(old).unwrap();
                    }
                    biggest = Some((dir, run.events));
                } else {
                    std::fs::remove_dir_all(&dir).unwrap();
                }
            }
            println!(
                "{:>9} {:>10} {:>9} {:>22} {:>22} {:>6.0}% {:>7.1} {:>18} {:>16}",
                if pipeline { "pipelined" } else { "serial" },
                if prezeroed { "pre-zeroed" } else { "growing" },
                appenders,
                spread(&ours, 0),
                spread(&rawv, 0),
                median(ratio),
                median(batch),
                spread(&p50, 0),
                spread(&p99, 0)
            );
        }
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
    println!("\nverify: {} events/s ({events} events)", spread(&vps, 0));
}
