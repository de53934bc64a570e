//! Start-up cost on a large log: the daemon verifies the whole log (chain from genesis, every
//! commitment, every checkpoint's signature) before it folds it into state.
//!
//! Builds a state directory whose log holds `--events` resolutions in group commits of
//! `--batch` (a checkpoint per batch, as the daemon writes them under load), then starts the
//! real `scopehold daemon` binary on it `--runs` times and prints the time from spawn until the
//! socket answers `/v1/health`. Beside it, in this process: the verification alone and the
//! replay alone, so the note can say where the time goes.
//!
//! `cargo run --release --example startup_bench -- --events 1000000 --batch 8 --runs 3`
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scopehold::daemon::{Engine, Home};
use scopehold::domain::{Caller, Command, Event, GrantSpec};
use scopehold_log::{Log, LogKey, LogOptions, StdStorage, Storage, StorageFile};

/// Writes without syncing: building the benchmark's log is not what is measured.
#[derive(Debug)]
struct NoSync;
struct NoSyncFile(Box<dyn StorageFile>);
impl StorageFile for NoSyncFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.truncate(len)
    }
}
impl Storage for NoSync {
    fn create_new(&self, p: &Path) -> std::io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(NoSyncFile(StdStorage.create_new(p)?)))
    }
    fn open_append(&self, p: &Path) -> std::io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(NoSyncFile(StdStorage.open_append(p)?)))
    }
    fn open_at(&self, p: &Path, offset: u64) -> std::io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(NoSyncFile(StdStorage.open_at(p, offset)?)))
    }
    fn rename(&self, a: &Path, b: &Path) -> std::io::Result<()> {
        StdStorage.rename(a, b)
    }
    fn sync_dir(&self, _: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn remove(&self, p: &Path) -> std::io::Result<()> {
        StdStorage.remove(p)
    }
}

fn build(home: &Home, events: u64, batch: u64) {
    home.init().unwrap();
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&home.root).unwrap());
    let root = Caller {
        identity: format!("member:{}", scopehold::daemon::home::member_name_for(uid))
            .parse()
            .unwrap(),
        uid,
        pid: None,
        host: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::open(&home.clone(), scopehold_log::system_clock()).unwrap();
    let sealed = engine
        .master()
        .seal("openai/prod", 1, b"sk-bench-0123456789abcdef")
        .unwrap();
    let (_, hash) = scopehold::daemon::engine::new_credential(engine.master()).unwrap();
    for c in [
        Command::CreateProject {
            project: "bench".parse().unwrap(),
        },
        Command::PutSecret {
            secret: "openai/prod".parse().unwrap(),
            projects: vec!["bench".parse().unwrap()],
            sealed,
        },
        Command::CreateAgent {
            agent: "bench".parse().unwrap(),
            uid: None,
            credential_hash: hash,
            host: None,
        },
        Command::CreateGrant(GrantSpec {
            identity: "agent:bench".parse().unwrap(),
            secret: "openai/prod".parse().unwrap(),
            project: "bench".parse().unwrap(),
            ttl_ms: None,
            max_uses: None,
            rate_per_min: None,
            uid: None,
            host: None,
        }),
    ] {
        rt.block_on(engine.execute(&root, &c)).unwrap();
    }
    engine.close().unwrap();
    let opts = LogOptions {
        storage: Arc::new(NoSync),
        ..home.log_options()
    };
    let log = Log::open(
        &home.log_dir(),
        LogKey::load(&home.log_key()).unwrap(),
        opts,
    )
    .unwrap();
    let mut done = 0;
    while done < events {
        let k = batch.min(events - done);
        let entries = (0..k)
            .map(|i| {
                Event::SecretResolved {
                    identity: "agent:bench".parse().unwrap(),
                    secret: "openai/prod".parse().unwrap(),
                    version: 1,
                    project: "bench".parse().unwrap(),
                    grant: 1,
                    pid: Some(1000 + ((done + i) % 30_000) as i32),
                    uid: 1000,
                    at_ms: 1_790_000_000_000 + done + i,
                    from_host: None,
                }
                .to_entry()
                .unwrap()
            })
            .collect();
        log.append_batch(entries).unwrap();
        done += k;
    }
    log.close().unwrap();
}

fn health(socket: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (mut events, mut batch, mut runs, mut base) =
        (1_000_000u64, 8u64, 3usize, std::path::PathBuf::from("/tmp"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("missing value");
        match a.as_str() {
            "--events" => events = val().parse().unwrap(),
            "--batch" => batch = val().parse().unwrap(),
            "--runs" => runs = val().parse().unwrap(),
            "--dir" => base = val().into(),
            _ => panic!("usage: startup_bench [--events N] [--batch B] [--runs R] [--dir DIR]"),
        }
    }
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let home = Home::new(Some(tmp.path().join("state")), None).unwrap();
    let t = Instant::now();
    build(&home, events, batch);
    let bytes: u64 = std::fs::read_dir(home.log_dir())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "built {events} events in batches of {batch} ({:.1} MB) in {:.1}s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let key = home.public_key().unwrap();
    let (mut verify, mut verify_all, mut replay, mut start) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        // As start-up verifies (the last checkpoint's signature), and as
        // `log verify --all-signatures` does (every checkpoint's).
        for (all, out) in [(false, &mut verify), (true, &mut verify_all)] {
            let t = Instant::now();
            let r = scopehold_log::verify_log(
                &home.log_dir(),
                &key,
                &scopehold_log::VerifyOptions {
                    all_signatures: all,
                    trusted: None,
                },
            )
            .unwrap();
            out.push(t.elapsed().as_secs_f64());
            assert!(r.events >= events, "every resolution verified");
            assert!(!all || r.signatures_checked > events / batch);
        }
        let t = Instant::now();
        scopehold::daemon::replay(&home.log_dir(), &key).unwrap();
        replay.push(t.elapsed().as_secs_f64());

        let socket = tmp.path().join("s.sock");
        let _ = std::fs::remove_file(&socket);
        let t = Instant::now();
        let mut child = std::process::Command::new(
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("scopehold"),
        )
        .arg("--home")
        .arg(&home.root)
        .arg("--socket")
        .arg(&socket)
        .arg("daemon")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        while !health(&socket) {
            assert!(t.elapsed() < Duration::from_secs(600), "no answer");
            std::thread::sleep(Duration::from_millis(5));
        }
        start.push(t.elapsed().as_secs_f64());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        child.wait().unwrap();
    }
    println!(
        "SUMMARY startup {events} events, batch {batch}: daemon ready in {:.2}s (median of {runs}; runs {:?}) | in-process: verify as start-up does {:.2}s, with every signature (log verify --all-signatures) {:.2}s, replay {:.2}s",
        median(start.clone()),
        start.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>(),
        median(verify),
        median(verify_all),
        median(replay)
    );
}
