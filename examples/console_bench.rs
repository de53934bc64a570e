//! Console scale benchmark: a log of N events (default 1,000,000) on disk; then, each in a
//! fresh process on the real log file, the time to the console's first frame, and the frame
//! times for paging, jumping to a sequence number and drawing while a filter scans the whole
//! log in the background (the UI thread never waits for the scan).
//!
//! `cargo run --release --example console_bench -- [--events N] [--runs R] [--dir DIR]`
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use scopehold::domain::Event;
use scopehold_log::{Entry, Log, LogKey, LogOptions};
use scopehold_tui::app::Action;
use scopehold_tui::{Config, Console};

const SEED: [u8; 32] = [9; 32];

fn build(dir: &Path, n: u64) {
    let log = Log::create(dir, LogKey::from_seed(&SEED), LogOptions::default()).unwrap();
    let mut i = 0;
    while i < n {
        let k = 4096.min(n - i);
        let batch = (i..i + k)
            .map(|j| {
                let ev = if j % 50 == 7 {
                    Event::ResolutionDenied {
                        identity: format!("agent:a{}", j % 97).parse().unwrap(),
                        secret: Some("openai/prod".parse().unwrap()),
                        project: Some("demo".parse().unwrap()),
                        reason: "not granted".into(),
                        pid: Some(1000 + (j % 3000) as i32),
                        uid: 1000,
                        at_ms: 0,
                        from_host: None,
                    }
                } else {
                    Event::SecretResolved {
                        identity: format!("agent:a{}", j % 97).parse().unwrap(),
                        secret: "openai/prod".parse().unwrap(),
                        version: 1,
                        project: "demo".parse().unwrap(),
                        grant: 1,
                        pid: Some(1000 + (j % 3000) as i32),
                        uid: 1000,
                        at_ms: 0,
                        from_host: None,
                    }
                };
                Entry::public(ev.kind().number(), serde_json::to_vec(&ev).unwrap())
            })
            .collect();
        log.append_batch(batch).unwrap();
        i += k;
    }
    log.close().unwrap();
}

fn frame(term: &mut Terminal<TestBackend>, c: &mut Console) -> Duration {
    let t = Instant::now();
    term.draw(|f| c.draw(f)).unwrap();
    t.elapsed()
}

/// Runs in a fresh process: open the real log and draw, timing each step.
fn measure(dir: &Path) {
    let t0 = Instant::now();
    let mut c = Console::open(Config {
        log_dir: dir.to_path_buf(),
        remote: None,
        bundle: None,
        key: LogKey::from_seed(&SEED).public(),
        decoder: scopehold::cli::console::decoder(),
        tables: None,
        actions: None,
        color: true,
    })
    .unwrap();
    let mut term = Terminal::new(TestBackend::new(160, 40)).unwrap();
    term.draw(|f| c.draw(f)).unwrap();
    let first = t0.elapsed();
    let mut page = Duration::ZERO;
    for _ in 0..20 {
        c.act(Action::PageDown);
        page = page.max(frame(&mut term, &mut c));
    }
    let total = c.app.total;
    c.app.jump(total / 2 + 12_345);
    let jump = frame(&mut term, &mut c);
    c.act(Action::Bottom);
    let bottom = frame(&mut term, &mut c);
    // A filter over every event, scanned in the background while frames keep being drawn.
    c.app.mode = scopehold_tui::app::Mode::Filter("identity=a13 denied".into());
    c.act(Action::Submit);
    let scan = Instant::now();
    let (mut frames, mut worst) = (0u32, Duration::ZERO);
    while c.app.filtering.is_some() && scan.elapsed() < Duration::from_secs(120) {
        c.pump();
        worst = worst.max(frame(&mut term, &mut c));
        frames += 1;
        std::thread::sleep(Duration::from_millis(16));
    }
    let scanned = scan.elapsed();
    println!(
        "RESULT first_frame_ms={:.1} page_max_ms={:.2} jump_ms={:.2} bottom_ms={:.2} filter_scan_s={:.2} frames_during_scan={frames} worst_frame_during_scan_ms={:.2} matches={}",
        first.as_secs_f64() * 1e3,
        page.as_secs_f64() * 1e3,
        jump.as_secs_f64() * 1e3,
        bottom.as_secs_f64() * 1e3,
        scanned.as_secs_f64(),
        worst.as_secs_f64() * 1e3,
        c.app.rows()
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut n, mut runs, mut base) = (1_000_000u64, 5usize, PathBuf::from("."));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--measure" => return measure(Path::new(&args.next().unwrap())),
            "--events" => n = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--dir" => base = args.next().unwrap().into(),
            _ => panic!("usage: console_bench [--events N] [--runs R] [--dir DIR]"),
        }
    }
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let dir = tmp.path().join("log");
    let t = Instant::now();
    build(&dir, n);
    println!(
        "built a log of {n} events in {:.1} s ({})",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    let exe = std::env::current_exe().unwrap();
    let mut results: Vec<Vec<(String, f64)>> = Vec::new();
    for _ in 0..runs {
        let out = std::process::Command::new(&exe)
            .arg("--measure")
            .arg(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT"))
            .expect("a RESULT line")
            .to_string();
        println!("{line}");
        results.push(
            line.split_whitespace()
                .skip(1)
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
                })
                .collect(),
        );
    }
    let keys: Vec<String> = results[0].iter().map(|(k, _)| k.clone()).collect();
    let med: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k}={}", median(results.iter().map(|r| r[i].1).collect())))
        .collect();
    println!(
        "SUMMARY console {n} events (median of {runs} fresh processes): {}",
        med.join(" ")
    );
}
