//! A hub and two edges, as users run them: `scopehold daemon --listen` on one state
//! directory, `scopehold daemon --hub URL --join TOKEN` on two others (hosts `e1`, `e2`),
//! all real processes on this machine, set up with the real CLI. This process drives both
//! edges' sockets at once (closed-loop keep-alive agents, one thread per edge), so every
//! resolution crosses an edge, mutual TLS, the hub's decision and its durable, signed log.
//!
//! Printed per run: resolutions/s through both edges together, p50/p99, events per
//! fdatasync at the hub, CPU per resolution of the hub and of the edges; and, in the same
//! run, the hub's own socket driven directly at the same total concurrency (the single-node
//! figure, without edges).
//!
//! With `--store URL` the hub keeps its log in that PostgreSQL database (`daemon --store`):
//! every batch is one transaction there before its local copy, and the run also prints the
//! events per PostgreSQL commit, and the failover time: a standby made from the hub's backup
//! follows, the same load runs through both edges (which know both addresses), and the
//! active hub is killed (`kill -9`) in the middle of it. Without it, the hub's log is on local
//! files.
//!
//! `cargo run --release --example hub_bench -- --bin target/release/scopehold [--secs S] [--runs N] [--conc C] [--dir DIR] [--store URL]`
//! `examples/hub_vs_openbao.sh` runs it beside OpenBao in the same run.
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

#[path = "common/load.rs"]
mod load;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use scopehold::api::{endpoint, wire};
use scopehold::cli::client;

const VALUE: &str = "sk-bench-0123456789abcdef0123456789abcdef";

struct Args {
    bin: PathBuf,
    secs: f64,
    runs: usize,
    conc: usize,
    dir: PathBuf,
    store: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        bin: "target/release/scopehold".into(),
        secs: 5.0,
        runs: 3,
        conc: 16,
        dir: std::env::temp_dir(),
        store: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bin" => a.bin = v().into(),
            "--secs" => a.secs = v().parse().expect("--secs S"),
            "--runs" => a.runs = v().parse().expect("--runs N"),
            "--conc" => a.conc = v().parse().expect("--conc C"),
            "--dir" => a.dir = v().into(),
            "--store" => a.store = Some(v()),
            _ => {
                panic!(
                    "usage: hub_bench [--bin PATH] [--secs S] [--runs N] [--conc C] [--dir DIR] [--store URL]"
                )
            }
        }
    }
    a.bin = std::fs::canonicalize(&a.bin).expect("--bin: no such binary");
    a
}

/// One `scopehold daemon` process on its own state directory and socket.
struct Proc {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Proc {
    fn env(dir: &Path, sock: &Path, c: &mut Command) {
        c.env("SCOPEHOLD_HOME", dir.join("state"))
            .env("SCOPEHOLD_SOCKET", sock);
    }

    /// The state directory and socket of `name`, made empty.
    fn place(base: &Path, name: &str) -> (PathBuf, PathBuf) {
        let dir = base.join(format!("sh-hub-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        (dir, sock)
    }

    /// `scopehold daemon ARGS` in `dir`, not waited for; its notifications (`READY=1`,
    /// `STATUS=`) to `notify`, if given.
    fn spawn(
        bin: &Path,
        dir: PathBuf,
        sock: PathBuf,
        args: &[&str],
        notify: Option<&Path>,
    ) -> Self {
        let mut d = Command::new(bin);
        Self::env(&dir, &sock, &mut d);
        if let Some(n) = notify {
            d.env("NOTIFY_SOCKET", n);
        }
        let child = d
            .arg("daemon")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        Self { child, dir, sock }
    }

    fn start(bin: &Path, base: &Path, name: &str, args: &[&str]) -> Self {
        let (dir, sock) = Self::place(base, name);
        let mut p = Self::spawn(bin, dir, sock, args, None);
        for _ in 0..300 {
            if UnixStream::connect(&p.sock).is_ok() {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
        panic!("{name} did not answer on {}", p.sock.display());
    }

    fn cli(&self, bin: &Path, args: &[&str], stdin: Option<&str>) -> String {
        Self::cli_in(bin, &self.dir, &self.sock, args, stdin)
    }

    fn cli_in(bin: &Path, dir: &Path, sock: &Path, args: &[&str], stdin: Option<&str>) -> String {
        let mut c = Command::new(bin);
        Self::env(dir, sock, &mut c);
        let mut c = c
            .args(args)
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

    fn cpu(&self) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime, fields 14 and 15 of stat (11 and 12 after the command name).
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Events and batches the log committed; and the store's events and transactions.
    fn commits(&self) -> (u64, u64, u64, u64) {
        let s = client::call::<endpoint::Status>(&self.sock, &wire::Empty {}, None).unwrap();
        let c = s.commits.expect("status commits are for admins");
        let (se, sc) = s.log.store.map_or((0, 0), |st| (st.events, st.commits));
        (c.events, c.batches, se, sc)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.lines().last().unwrap()).unwrap()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

struct Run {
    edges_rps: f64,
    edges_p50: f64,
    edges_p99: f64,
    ev_per_sync: f64,
    ev_per_pg_commit: f64,
    hub_cpu_us: f64,
    edges_cpu_us: f64,
    direct_rps: f64,
    direct_p50: f64,
    /// With a store: after `kill -9` of the active hub under the same load, until the
    /// standby said it was ready, and the longest stretch with no answer through the edges.
    failover: Option<(f64, f64)>,
}

fn one_run(a: &Args) -> Run {
    let bin = a.bin.as_path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut hub_args = vec!["--listen", addr.as_str()];
    if let Some(url) = &a.store {
        hub_args.extend(["--store", url.as_str()]);
    }
    let mut hub = Proc::start(bin, &a.dir, "hub", &hub_args);
    // A standby's address, known to the edges from the start (nothing listens there until
    // it takes over).
    let addr_b = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let url_b = format!("https://{addr_b}");
    hub.cli(bin, &["project", "create", "bench"], None);
    hub.cli(
        bin,
        &["secret", "put", "openai/prod", "--project", "bench"],
        Some(VALUE),
    );
    let token = json(&hub.cli(bin, &["--json", "agent", "create", "bench"], None))["credential"]
        .as_str()
        .unwrap()
        .to_string();
    hub.cli(
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
    let url = format!("https://{addr}");
    let edges: Vec<Proc> = ["e1", "e2"]
        .iter()
        .map(|h| {
            let join = json(&hub.cli(bin, &["--json", "host", "add", h], None))["token"]
                .as_str()
                .unwrap()
                .to_string();
            Proc::start(
                bin,
                &a.dir,
                h,
                &["--hub", &url, "--hub", &url_b, "--join", &join],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    // Warm-up: pools fill on both sides, the data key is unwrapped.
    for e in &edges {
        load::run(&e.sock, &token, "openai/prod", "bench", a.conc, 0.5);
    }
    let (e0, b0, se0, sc0) = hub.commits();
    let hub0 = hub.cpu();
    let edges0: f64 = edges.iter().map(Proc::cpu).sum();
    let results: Vec<load::LoadResult> = std::thread::scope(|s| {
        let hs: Vec<_> = edges
            .iter()
            .map(|e| {
                let (sock, token) = (e.sock.clone(), token.clone());
                let (conc, secs) = (a.conc, a.secs);
                s.spawn(move || load::run(&sock, &token, "openai/prod", "bench", conc, secs))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let hub1 = hub.cpu();
    let edges1: f64 = edges.iter().map(Proc::cpu).sum();
    let (e1, b1, se1, sc1) = hub.commits();
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    assert_eq!(errors, 0, "resolutions through an edge failed under load");
    let all = load::LoadResult {
        ok,
        errors,
        secs: results.iter().map(|r| r.secs).fold(0.0, f64::max),
        latencies_us: results
            .iter()
            .flat_map(|r| r.latencies_us.clone())
            .collect(),
        ok_at: Vec::new(),
    };
    // The same hub, its own socket, the same total concurrency.
    let direct = load::run(
        &hub.sock,
        &token,
        "openai/prod",
        "bench",
        2 * a.conc,
        a.secs,
    );
    assert_eq!(direct.errors, 0);
    let failover = a
        .store
        .as_deref()
        .map(|url| failover(a, &mut hub, &edges, &token, url, &addr_b));
    Run {
        edges_rps: all.rate(),
        edges_p50: all.pct(0.5),
        edges_p99: all.pct(0.99),
        ev_per_sync: (e1 - e0) as f64 / (b1 - b0).max(1) as f64,
        ev_per_pg_commit: (se1 - se0) as f64 / (sc1 - sc0).max(1) as f64,
        hub_cpu_us: (hub1 - hub0) * 1e6 / ok.max(1) as f64,
        edges_cpu_us: (edges1 - edges0) * 1e6 / ok.max(1) as f64,
        direct_rps: direct.rate(),
        direct_p50: direct.pct(0.5),
        failover,
    }
}

/// A standby made from the hub's backup (`backup`, `restore`: keys sealed under a
/// passphrase), following; the same load through both edges; `kill -9` of the active hub in
/// the middle of it. Returns the seconds from the kill until the standby was ready, and the
/// longest stretch with no resolution answered through either edge.
fn failover(
    a: &Args,
    hub: &mut Proc,
    edges: &[Proc],
    token: &str,
    url: &str,
    addr_b: &str,
) -> (f64, f64) {
    let bin = a.bin.as_path();
    let (dir, sock) = Proc::place(&a.dir, "standby");
    let pass = dir.join("passphrase");
    std::fs::write(&pass, "bench-standby-passphrase\n").unwrap();
    // A passphrase file others can read is refused.
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pass = pass.to_str().unwrap();
    let backup = dir.join("hub.backup");
    let backup = backup.to_str().unwrap();
    hub.cli(
        bin,
        &["backup", "--out", backup, "--passphrase-file", pass],
        None,
    );
    Proc::cli_in(
        bin,
        &dir,
        &sock,
        &["restore", "--from", backup, "--passphrase-file", pass],
        None,
    );
    let notify = dir.join("notify.sock");
    let notices = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    notices
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let _standby = Proc::spawn(
        bin,
        dir,
        sock,
        &[
            "--passphrase-file",
            pass,
            "--store",
            url,
            "--listen",
            addr_b,
        ],
        Some(&notify),
    );
    let mut buf = [0u8; 512];
    let n = notices.recv(&mut buf).expect("the standby said nothing");
    assert!(
        buf[..n].starts_with(b"STATUS=standby"),
        "not a standby: {}",
        String::from_utf8_lossy(&buf[..n])
    );
    std::thread::sleep(Duration::from_secs(1));
    let secs = a.secs.max(4.0);
    let (killed, ready, results) = std::thread::scope(|s| {
        let hs: Vec<_> = edges
            .iter()
            .map(|e| {
                let sock = e.sock.clone();
                let conc = a.conc;
                s.spawn(move || load::run(&sock, token, "openai/prod", "bench", conc, secs))
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs / 3.0));
        hub.child.kill().unwrap();
        let killed = std::time::Instant::now();
        let _ = hub.child.wait();
        let n = notices
            .recv(&mut buf)
            .expect("the standby never became ready");
        assert_eq!(&buf[..n], b"READY=1\n");
        let ready = killed.elapsed().as_secs_f64();
        let r: Vec<load::LoadResult> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        (killed, ready, r)
    });
    // The interruption: the longest stretch without an answer through either edge, from
    // just before the kill on (answers already on their way when the hub died still arrive
    // after it; the first answer after the kill says nothing).
    let mut at: Vec<std::time::Instant> = results
        .iter()
        .flat_map(|r| r.ok_at.iter().copied())
        .filter(|t| *t + Duration::from_millis(500) > killed)
        .collect();
    at.sort();
    assert!(
        at.last()
            .is_some_and(|t| *t > killed + Duration::from_secs_f64(ready)),
        "nothing was answered after the failover"
    );
    let gap = at
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    (ready, gap.as_secs_f64())
}

fn main() {
    let a = args();
    let mut runs = Vec::new();
    for i in 0..a.runs {
        let r = one_run(&a);
        println!(
            "run {}: two edges x c{} rps={:.0} p50={:.0}us p99={:.0}us ev/sync={:.1} ev/pg-commit={:.1} hub cpu/res={:.1}us edges cpu/res={:.1}us | hub socket c{} rps={:.0} p50={:.0}us",
            i + 1,
            a.conc,
            r.edges_rps,
            r.edges_p50,
            r.edges_p99,
            r.ev_per_sync,
            r.ev_per_pg_commit,
            r.hub_cpu_us,
            r.edges_cpu_us,
            2 * a.conc,
            r.direct_rps,
            r.direct_p50
        );
        if let Some((ready, first)) = r.failover {
            println!(
                "run {}: failover after kill -9 of the active hub: standby ready in {:.0}ms, no resolution answered through the edges for {:.0}ms",
                i + 1,
                ready * 1e3,
                first * 1e3
            );
        }
        runs.push(r);
    }
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let (rps, lo, hi) = m(|r| r.edges_rps);
    let (p50, _, _) = m(|r| r.edges_p50);
    let (ev, _, _) = m(|r| r.ev_per_sync);
    let (evpg, _, _) = m(|r| r.ev_per_pg_commit);
    let log = if a.store.is_some() {
        "log on PostgreSQL"
    } else {
        "log on local files"
    };
    let (hub_cpu, _, _) = m(|r| r.hub_cpu_us);
    let (edge_cpu, _, _) = m(|r| r.edges_cpu_us);
    let (direct, dlo, dhi) = m(|r| r.direct_rps);
    let failover = if a.store.is_some() {
        let (ready, rlo, rhi) = m(|r| r.failover.map_or(f64::NAN, |f| f.0) * 1e3);
        let (first, flo, fhi) = m(|r| r.failover.map_or(f64::NAN, |f| f.1) * 1e3);
        format!(
            " | failover (kill -9 of the active hub under load): standby ready {ready:.0}ms ({rlo:.0}..{rhi:.0}), longest stretch with no answer through the edges {first:.0}ms ({flo:.0}..{fhi:.0})"
        )
    } else {
        String::new()
    };
    println!(
        "SUMMARY scopehold hub + 2 edges (real binaries, {log}, median of {} x {}s; min..max): edges c{}x2 rps={rps:.0} ({lo:.0}..{hi:.0}) p50={p50:.0}us ev/fsync={ev:.1} ev/pg-commit={evpg:.1} hub-cpu/res={hub_cpu:.1}us edges-cpu/res={edge_cpu:.1}us | hub-socket c{} rps={direct:.0} ({dlo:.0}..{dhi:.0}){failover}",
        a.runs,
        a.secs,
        a.conc,
        2 * a.conc
    );
}
