//! The real daemon, as users run it: `scopehold init` and `scopehold daemon` started as their
//! own processes on a fresh state directory, set up with the real CLI, and driven from this
//! process (the load generator: closed-loop keep-alive agents on one thread) over the unix
//! socket. Every resolution is durable and signed before its answer leaves.
//!
//! For each concurrency it prints resolutions/s, p50/p99, events per fdatasync and bytes per
//! fdatasync (from the daemon's own counters, `GET /v1/status`), the daemon's CPU time per
//! resolution (user+sys from /proc over the load), and its RSS idle and under load. Beside
//! each, measured in the same run on the same file system: the raw ceiling, a plain
//! write+fdatasync loop of the same bytes per write, into a growing file and into a
//! pre-zeroed one, times the same events per fdatasync.
//!
//! `--agents N --grants N` first add N more agents (and grants for the first N of them)
//! through the admin API, to measure memory and the cost of authentication with many agents.
//!
//! `cargo build --release && cargo run --release --example daemon_bench -- --bin target/release/scopehold [--secs S] [--runs N] [--conc 1,4,16,64] [--agents N] [--grants N] [--dir DIR]`
//! `examples/bench_vs_openbao.sh` runs it beside OpenBao in the same run.
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

#[path = "common/load.rs"]
mod load;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scopehold::api::{endpoint, wire};
use scopehold::cli::client;

const VALUE: &str = "sk-bench-0123456789abcdef0123456789abcdef";

struct Args {
    bin: PathBuf,
    secs: f64,
    runs: usize,
    conc: Vec<usize>,
    agents: usize,
    grants: usize,
    dir: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        bin: PathBuf::from("target/release/scopehold"),
        secs: 5.0,
        runs: 3,
        conc: vec![1, 4, 16, 64],
        agents: 0,
        grants: 0,
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1).peekable();
    if it.peek().map(String::as_str) == Some("--floor-server") {
        it.next();
        floor_server(it);
    }
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("missing value");
        match k.as_str() {
            "--bin" => a.bin = v().into(),
            "--secs" => a.secs = v().parse().expect("--secs S"),
            "--runs" => a.runs = v().parse().expect("--runs N"),
            "--conc" => a.conc = v().split(',').map(|c| c.parse().expect("--conc")).collect(),
            "--agents" => a.agents = v().parse().expect("--agents N"),
            "--grants" => a.grants = v().parse().expect("--grants N"),
            "--dir" => a.dir = v().into(),
            _ => {
                eprintln!(
                    "usage: daemon_bench [--bin PATH] [--secs S] [--runs N] [--conc 1,4,16,64] [--agents N] [--grants N] [--dir DIR]"
                );
                std::process::exit(2);
            }
        }
    }
    a.bin = std::fs::canonicalize(&a.bin).expect("--bin: no such binary");
    a
}

struct Daemon {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Daemon {
    fn cli(&self, bin: &Path, args: &[&str], stdin: Option<&str>) -> String {
        let mut c = Command::new(bin)
            .args(args)
            .env("SCOPEHOLD_HOME", self.dir.join("state"))
            .env("SCOPEHOLD_SOCKET", &self.sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut i = c.stdin.take().unwrap();
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).unwrap();
        }
        drop(i);
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "scopehold {args:?} failed");
        String::from_utf8(o.stdout).unwrap()
    }

    fn start(bin: &Path, base: &Path) -> Self {
        let dir = base.join(format!(
            "sh-daemon-bench-{}-{}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let env = |c: &mut Command| {
            c.env("SCOPEHOLD_HOME", dir.join("state"))
                .env("SCOPEHOLD_SOCKET", &sock);
        };
        let mut init = Command::new(bin);
        env(&mut init);
        assert!(
            init.arg("init")
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success()
        );
        let mut d = Command::new(bin);
        env(&mut d);
        let mut child = d
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        for _ in 0..300 {
            if UnixStream::connect(&sock).is_ok() {
                return Self { child, dir, sock };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the daemon did not answer on {}", sock.display());
    }

    /// user+sys CPU seconds of the daemon so far.
    fn cpu(&self) -> f64 {
        proc_cpu(&self.child.id().to_string())
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let get = |k: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .map_or(0, |v| v.parse().unwrap())
        };
        (get("VmRSS:"), get("VmHWM:"))
    }

    /// (events, fdatasyncs, bytes) the daemon's log committed since start.
    fn commits(&self) -> (u64, u64, u64) {
        let s = client::call::<endpoint::Status>(&self.sock, &wire::Empty {}, None).unwrap();
        let c = s
            .commits
            .expect("status commits are for admins: run as the admin member");
        (c.events, c.batches, c.bytes)
    }

    fn stop(self) {
        // The drop does it.
    }
}

/// A bench that panics (a refused request, a failed set-up) stops its daemon too, rather
/// than leave it running and loading the machine under the next run.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// A scratch file that takes one write+fdatasync of the same bytes at a time, as the log's
/// batches do: into a file that grows with every write, or one zero-filled (and synced)
/// beforehand. With a key, each write is preceded by what the log must do before it
/// (promise 1: no value leaves before its event is durable *and* covered by a signed
/// checkpoint): an ed25519 signature of a checkpoint, by the log's own code.
struct Scratch {
    f: std::fs::File,
    /// The pre-zeroed size, where writes wrap; `None` for a growing file.
    room: Option<u64>,
    off: u64,
    buf: Vec<u8>,
    key: Option<scopehold_log::LogKey>,
}

impl Scratch {
    fn new(dir: &Path, bytes: usize, prezeroed: bool, signed: bool) -> Self {
        let path = dir.join(format!("sh-raw-{}-{}", std::process::id(), rand_u64()));
        let f = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // Unlinked at once: nothing is left behind, even by a process that is killed (the
        // floor server is). Syncing an open unlinked file costs the same.
        std::fs::remove_file(&path).unwrap();
        // A pre-zeroed file is overwritten in place, wrapping at its end: an overwrite of
        // blocks already written costs the file system no metadata either.
        let room = prezeroed.then_some(64u64 << 20);
        if let Some(room) = room {
            let zeros = vec![0u8; 1 << 20];
            for i in 0..(room >> 20) {
                f.write_all_at(&zeros, i << 20).unwrap();
            }
            f.sync_all().unwrap();
        }
        Self {
            f,
            room,
            off: 0,
            buf: vec![0x5au8; bytes.max(1)],
            key: signed.then(|| scopehold_log::LogKey::from_seed(&[7; 32])),
        }
    }

    /// (Signs,) writes and fdatasyncs one batch's bytes.
    fn commit(&mut self) {
        if self
            .room
            .is_some_and(|r| self.off + self.buf.len() as u64 > r)
        {
            self.off = 0;
        }
        if let Some(key) = &self.key {
            let cp =
                scopehold_log::SignedCheckpoint::sign(key, [1; 32], self.off, [2; 32], self.off);
            // The signature goes into the bytes written, so it cannot be optimised away.
            let n = self.buf.len().min(64);
            self.buf[..n].copy_from_slice(&cp.signature[..n]);
        }
        self.f.write_all_at(&self.buf, self.off).unwrap();
        self.f.sync_data().unwrap();
        self.off += self.buf.len() as u64;
    }
}

/// The raw ceiling: [`Scratch::commit`] back to back for `secs`. Returns (fdatasyncs per
/// second, p50 µs).
fn raw(dir: &Path, bytes: usize, secs: f64, prezeroed: bool, signed: bool) -> (f64, f64) {
    let mut scratch = Scratch::new(dir, bytes, prezeroed, signed);
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t0 = Instant::now();
        scratch.commit();
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let el = start.elapsed().as_secs_f64();
    let n = lat.len() as f64;
    (n / el, median(lat))
}

/// The floor of one agent's round trip as users run it: a server process that does, per
/// request, only what promise 1 requires (read the request from a unix socket, sign a
/// checkpoint, write `bytes` into a pre-zeroed file, fdatasync, answer), driven by this
/// process. No HTTP, no JSON, no decision, no hashing: what is left of the daemon's p50
/// above this is the cost of everything else. Returns (p50 µs, server CPU µs per request).
fn floor(dir: &Path, bytes: usize, secs: f64) -> (f64, f64) {
    let sock = dir.join(format!(
        "sh-floor-{}-{}.sock",
        std::process::id(),
        rand_u64()
    ));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--floor-server"])
        .arg(&sock)
        .arg(dir)
        .arg(bytes.to_string())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = None;
    for _ in 0..500 {
        if let Ok(s) = UnixStream::connect(&sock) {
            c = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut c = c.expect("floor server did not start");
    // About an HTTP resolution's request and answer.
    let (req, mut resp) = ([0x41u8; 200], [0u8; 150]);
    let once = |c: &mut UnixStream, resp: &mut [u8; 150]| {
        use std::io::Read;
        c.write_all(&req).unwrap();
        c.read_exact(resp).unwrap();
    };
    once(&mut c, &mut resp);
    let cpu0 = proc_cpu(&child.id().to_string());
    let (mut lat, start) = (Vec::new(), Instant::now());
    while start.elapsed().as_secs_f64() < secs {
        let t0 = Instant::now();
        once(&mut c, &mut resp);
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let cpu = (proc_cpu(&child.id().to_string()) - cpu0) * 1e6 / lat.len().max(1) as f64;
    drop(c);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
    (median(lat), cpu)
}

/// The server side of [`floor`]: `--floor-server SOCK DIR BYTES`, one connection.
fn floor_server(mut it: impl Iterator<Item = String>) -> ! {
    use std::io::Read;
    let sock = PathBuf::from(it.next().unwrap());
    let dir = PathBuf::from(it.next().unwrap());
    let bytes: usize = it.next().unwrap().parse().unwrap();
    let mut scratch = Scratch::new(&dir, bytes, true, true);
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (mut c, _) = l.accept().unwrap();
    let (mut req, resp) = ([0u8; 200], [0x42u8; 150]);
    while c.read_exact(&mut req).is_ok() {
        scratch.commit();
        if c.write_all(&resp).is_err() {
            break;
        }
    }
    std::process::exit(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One concurrency's figures in one run.
#[derive(Clone, Copy, Default)]
struct Fig {
    rps: f64,
    p50: f64,
    p99: f64,
    ev_per_sync: f64,
    bytes_per_sync: f64,
    cpu_us: f64,
    daemon_cores: f64,
    gen_cores: f64,
    raw_grow: f64,
    raw_zero: f64,
    raw_zero_p50: f64,
    raw_signed: f64,
    raw_signed_p50: f64,
    floor_p50: f64,
    floor_cpu: f64,
}

struct Run {
    rss_idle: u64,
    rss_load: u64,
    figs: Vec<Fig>,
}

fn one_run(a: &Args, token_out: &mut String) -> Run {
    let d = Daemon::start(&a.bin, &a.dir);
    let bin = a.bin.as_path();
    d.cli(bin, &["project", "create", "bench"], None);
    d.cli(
        bin,
        &["secret", "put", "openai/prod", "--project", "bench"],
        Some(VALUE),
    );
    let out = d.cli(bin, &["--json", "agent", "create", "bench"], None);
    let token = serde_json::from_str::<serde_json::Value>(&out).unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_string();
    d.cli(
        bin,
        &[
            "grant",
            "create",
            "agent:bench",
            "openai/prod",
            "--project",
            "bench",
        ],
        None,
    );
    if a.agents > 0 {
        let t0 = Instant::now();
        for i in 0..a.agents {
            let name = format!("load-{i}");
            let req = wire::AgentCreateRequest {
                name: name.parse().unwrap(),
                uid: None,
                host: None,
            };
            client::call::<endpoint::AgentCreate>(&d.sock, &req, None).unwrap();
            if i < a.grants {
                let req = wire::GrantCreateRequest {
                    identity: format!("agent:{name}").parse().unwrap(),
                    secret: "openai/prod".parse().unwrap(),
                    project: "bench".parse().unwrap(),
                    ttl_secs: None,
                    max_uses: None,
                    rate_per_min: None,
                    uid: None,
                    host: None,
                };
                client::call::<endpoint::GrantCreate>(&d.sock, &req, None).unwrap();
            }
        }
        eprintln!(
            "  set-up: {} agents, {} grants in {:.1}s",
            a.agents,
            a.grants.min(a.agents),
            t0.elapsed().as_secs_f64()
        );
    }
    // Idle: let start-up and set-up garbage settle.
    std::thread::sleep(Duration::from_secs(2));
    let (rss_idle, _) = d.rss();
    // Warm-up (first resolution unwraps the data key; connection pools fill).
    load::run(&d.sock, &token, "openai/prod", "bench", 16, 0.5);
    let mut figs = Vec::new();
    for &c in &a.conc {
        let (e0, b0, y0) = d.commits();
        let (cpu0, gen0) = (d.cpu(), proc_cpu("self"));
        let r = load::run(&d.sock, &token, "openai/prod", "bench", c, a.secs);
        let (cpu1, gen1) = (d.cpu(), proc_cpu("self"));
        let (e1, b1, y1) = d.commits();
        assert_eq!(r.errors, 0, "resolutions failed under load");
        let syncs = (b1 - b0).max(1) as f64;
        let ev = (e1 - e0) as f64 / syncs;
        let bytes = (y1 - y0) as f64 / syncs;
        let raw_secs = (a.secs / 2.0).max(1.0);
        let (grow, _) = raw(&a.dir, bytes as usize, raw_secs, false, false);
        let (zero, zero_p50) = raw(&a.dir, bytes as usize, raw_secs, true, false);
        let (signed, signed_p50) = raw(&a.dir, bytes as usize, raw_secs, true, true);
        let (floor_p50, floor_cpu) = if c == 1 {
            floor(&a.dir, bytes as usize, raw_secs)
        } else {
            (f64::NAN, f64::NAN)
        };
        figs.push(Fig {
            rps: r.rate(),
            p50: r.pct(0.5),
            p99: r.pct(0.99),
            ev_per_sync: ev,
            bytes_per_sync: bytes,
            cpu_us: (cpu1 - cpu0) * 1e6 / r.ok.max(1) as f64,
            // Cores busy: is the run bound by the machine's CPUs (the daemon and this load
            // generator share them) rather than by the disk?
            daemon_cores: (cpu1 - cpu0) / r.secs,
            gen_cores: (gen1 - gen0) / r.secs,
            raw_grow: grow * ev,
            raw_zero: zero * ev,
            raw_signed: signed * ev,
            raw_signed_p50: signed_p50,
            floor_p50,
            floor_cpu,
            raw_zero_p50: zero_p50,
        });
    }
    let (_, rss_load) = d.rss();
    *token_out = token;
    d.stop();
    Run {
        rss_idle,
        rss_load,
        figs,
    }
}

/// user+sys CPU seconds of process `pid` ("self" for this one) so far.
fn proc_cpu(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    ticks / hz
}

fn med_spread(v: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let a = args();
    let mut runs = Vec::new();
    let mut token = String::new();
    for i in 0..a.runs {
        let r = one_run(&a, &mut token);
        eprint!(
            "run {}: rss idle={}KiB load-peak={}KiB",
            i + 1,
            r.rss_idle,
            r.rss_load
        );
        for (c, f) in a.conc.iter().zip(&r.figs) {
            eprint!(
                " | c{c} rps={:.0} p50={:.0}us p99={:.0}us ev/sync={:.1} B/sync={:.0} cpu={:.1}us cores daemon={:.2} gen={:.2} raw-grow={:.0} raw-zeroed={:.0} ({:.0}us) signed={:.0} ({:.0}us)",
                f.rps,
                f.p50,
                f.p99,
                f.ev_per_sync,
                f.bytes_per_sync,
                f.cpu_us,
                f.daemon_cores,
                f.gen_cores,
                f.raw_grow,
                f.raw_zero,
                f.raw_zero_p50,
                f.raw_signed,
                f.raw_signed_p50
            );
        }
        eprintln!();
        runs.push(r);
    }
    let mut line = format!(
        "SUMMARY scopehold daemon (real binary, median of {} x {}s; min..max) agents+{} grants+{}:",
        a.runs,
        a.secs,
        a.agents,
        a.grants.min(a.agents)
    );
    for (i, c) in a.conc.iter().enumerate() {
        let m = |f: fn(&Fig) -> f64| med_spread(runs.iter().map(|r| f(&r.figs[i])));
        let (rps, rlo, rhi) = m(|f| f.rps);
        let (p50, plo, phi) = m(|f| f.p50);
        let (p99, _, _) = m(|f| f.p99);
        let (ev, _, _) = m(|f| f.ev_per_sync);
        let (cpu, _, _) = m(|f| f.cpu_us);
        let (dc, _, _) = m(|f| f.daemon_cores);
        let (gc, _, _) = m(|f| f.gen_cores);
        let (grow, _, _) = m(|f| f.raw_grow);
        let (zero, _, _) = m(|f| f.raw_zero);
        let (zp50, _, _) = m(|f| f.raw_zero_p50);
        let (frac, _, _) = m(|f| f.rps / f.raw_zero);
        let (signed, _, _) = m(|f| f.raw_signed);
        let (sp50, _, _) = m(|f| f.raw_signed_p50);
        let (sfrac, _, _) = m(|f| f.rps / f.raw_signed);
        if *c == 1 {
            let (fp50, _, _) = m(|f| f.floor_p50);
            let (fcpu, _, _) = m(|f| f.floor_cpu);
            line += &format!(
                " | c1-floor (server process: read, sign, write, fdatasync, answer) p50={fp50:.0}us cpu/req={fcpu:.1}us"
            );
        }
        line += &format!(
            " | c{c} rps={rps:.0} ({rlo:.0}..{rhi:.0}) p50={p50:.0}us ({plo:.0}..{phi:.0}) p99={p99:.0}us ev/fsync={ev:.1} cpu/res={cpu:.1}us cores daemon={dc:.2} gen={gc:.2} ceiling grow={grow:.0} zeroed={zero:.0} (p50 {zp50:.0}us) of-zeroed-ceiling={:.0}% signed-ceiling={signed:.0} (p50 {sp50:.0}us) of-signed-ceiling={:.0}%",
            frac * 100.0,
            sfrac * 100.0
        );
    }
    let (ri, _, _) = med_spread(runs.iter().map(|r| r.rss_idle as f64));
    let (rl, _, _) = med_spread(runs.iter().map(|r| r.rss_load as f64));
    line += &format!(
        " | rss idle={:.1}MiB load-peak={:.1}MiB",
        ri / 1024.0,
        rl / 1024.0
    );
    println!("{line}");
}
