//! Standby hubs on one PostgreSQL store, as real processes against a real cluster each test
//! starts (`pg`): a standby is made from the active hub's backup (keys sealed under a
//! passphrase), follows the log without serving, and takes over when the active hub's
//! session ends, whether its process is killed under load from two edges or its session
//! terminated by an administrator; the hub that lost the log stops; a standby that reads a
//! rewritten chain refuses to go on.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Daemon, Notices};
use crate::hub::{CANARY, free_port, invite, json, resolve, text};
use crate::pg::Pg;

const PASS: &str = "standby-passphrase-CANARY-41d2";

/// An active hub on `pg`'s store, listening on loopback, with project `demo` and secret
/// `openai/prod`: the hub and its URL.
fn active_hub(pg: &Pg) -> (Daemon, String) {
    let mut a = Daemon::new();
    let addr = format!("127.0.0.1:{}", free_port());
    a.run_with(&["--store", &pg.url(), "--listen", &addr]);
    a.ok(&["project", "create", "demo"], None);
    a.ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&format!("{CANARY}\n")),
    );
    (a, format!("https://{addr}"))
}

/// A standby of `a`, set up the documented way: `backup` on the active hub's state (its
/// keys sealed under a passphrase for the file), `restore` into a new state directory. Not
/// started yet; the passphrase file for its daemon.
fn standby_of(a: &Daemon) -> (Daemon, String) {
    let b = Daemon::new();
    let pp = b.t.path().join("passphrase");
    std::fs::write(&pp, format!("{PASS}\n")).unwrap();
    std::fs::set_permissions(&pp, std::fs::Permissions::from_mode(0o600)).unwrap();
    let bk = b.t.path().join("active.backup");
    let pp = pp.to_str().unwrap().to_string();
    a.ok(
        &[
            "backup",
            "--out",
            bk.to_str().unwrap(),
            "--passphrase-file",
            &pp,
        ],
        None,
    );
    b.ok(
        &[
            "restore",
            "--from",
            bk.to_str().unwrap(),
            "--passphrase-file",
            &pp,
        ],
        None,
    );
    (b, pp)
}

/// Starts `b` as a hub on `pg`'s store listening at `addr`, expecting it to find the lock
/// held: it says it is a standby and is not ready.
fn start_standby(b: &mut Daemon, pp: Option<&str>, pg: &Pg, addr: &str) -> Notices {
    let url = pg.url();
    let mut args = vec!["--store", &url, "--listen", addr];
    if let Some(pp) = pp {
        args.extend(["--passphrase-file", pp]);
    }
    let notices = b.spawn_with(&args);
    let first = notices.next(Duration::from_secs(60));
    assert!(
        first
            .as_deref()
            .is_some_and(|m| m.starts_with("STATUS=standby")),
        "{first:?}: {}",
        b.stderr()
    );
    assert!(!b.socket.exists(), "a standby serves nothing");
    notices
}

/// Events in the local copy of `d`'s log.
fn local_size(d: &Daemon) -> u64 {
    scopehold_log::LogReader::open(&d.home.join("log"), None)
        .unwrap()
        .size()
}

/// The log's size in the store.
fn store_size(pg: &Pg) -> u64 {
    pg.sql("SELECT size FROM scopehold_log").parse().unwrap()
}

/// Waits (bounded) until `d`'s copy holds everything the store does.
fn caught_up(d: &Daemon, pg: &Pg) {
    let start = Instant::now();
    while local_size(d) != store_size(pg) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the standby did not follow: {} of {}",
            local_size(d),
            store_size(pg)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn verify(d: &Daemon) {
    let o = d.cli(&["log", "verify"], None, None);
    assert!(o.status.success(), "log verify: {}", text(&o.stderr));
}

/// The log's events of `kind`, as `log show --json` prints them.
fn events_of(d: &Daemon, kind: &str) -> Vec<Value> {
    d.ok(&["--json", "log", "show", "--kind", kind], None)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

/// Agent `name` bound to `host`, granted `openai/prod` for at most `uses` resolutions.
fn limited_agent(hub: &Daemon, name: &str, host: &str, uses: u64) -> String {
    let v = json(&hub.ok(&["--json", "agent", "create", name, "--host", host], None));
    hub.ok(
        &[
            "grant",
            "create",
            &format!("agent:{name}"),
            "openai/prod",
            "--project",
            "demo",
            "--max-uses",
            &uses.to_string(),
        ],
        None,
    );
    v["credential"].as_str().unwrap().to_string()
}

/// An edge for `host`, enrolled through `hubs[0]`, knowing every hub address.
fn edge_of(hubs: &[&str], token: &str) -> Daemon {
    let mut e = Daemon::new();
    let mut args = Vec::new();
    for h in hubs {
        args.extend(["--hub", h]);
    }
    args.extend(["--join", token]);
    e.run_with(&args);
    e
}

#[test]
fn a_standby_takes_over_within_seconds_when_the_active_hub_is_killed_under_load_from_two_edges() {
    const USES: u64 = 40;
    let pg = Pg::start();
    let (mut a, url_a) = active_hub(&pg);
    let addr_b = format!("127.0.0.1:{}", free_port());
    let url_b = format!("https://{addr_b}");
    let edges: Vec<Arc<Daemon>> = ["h1", "h2"]
        .iter()
        .map(|h| Arc::new(edge_of(&[&url_a, &url_b], &invite(&a, h, None))))
        .collect();
    let creds = [
        limited_agent(&a, "bot1", "h1", USES),
        limited_agent(&a, "bot2", "h2", USES),
    ];
    let (mut b, pp) = standby_of(&a);
    let notices = start_standby(&mut b, Some(&pp), &pg, &addr_b);
    caught_up(&b, &pg);
    // One lock granted (the active hub's), one waited for (the standby's).
    assert_eq!(
        pg.sql("SELECT count(*) FILTER (WHERE granted) || '/' || count(*) FILTER (WHERE NOT granted) FROM pg_locks WHERE locktype = 'advisory'"),
        "1/1"
    );

    // Two agents on each edge resolve as fast as they can, until their grant is spent.
    let stop = Arc::new(AtomicBool::new(false));
    let got: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut workers = Vec::new();
    for (i, e) in edges.iter().enumerate() {
        for _ in 0..2 {
            let (e, cred, got, stop) = (e.clone(), creds[i].clone(), got[i].clone(), stop.clone());
            workers.push(std::thread::spawn(move || {
                let mut exhausted = 0;
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(90) {
                    let o = resolve(&e, &cred);
                    if o.status.success() {
                        assert_eq!(text(&o.stdout).trim(), CANARY);
                        got.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    // Denied (exit 3): the grant is spent. Anything else (503 while no
                    // hub is active) is tried again.
                    if o.status.code() == Some(3) {
                        exhausted += 1;
                        if exhausted >= 3 {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
    }
    let total = || got.iter().map(|g| g.load(Ordering::SeqCst)).sum::<u64>();
    let start = Instant::now();
    while total() < USES / 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no load: {}",
            total()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = total();
    let mut killed = a.child.take().unwrap();
    killed.kill().unwrap();
    let t0 = Instant::now();
    killed.wait().unwrap();
    let ready = notices.next(Duration::from_secs(30));
    let takeover = t0.elapsed();
    assert_eq!(ready.as_deref(), Some("READY=1\n"), "{}", b.stderr());
    assert!(
        takeover < Duration::from_secs(5),
        "the standby took {takeover:?} to take over"
    );
    eprintln!("failover: the standby was ready {takeover:?} after the active hub was killed");
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(total() > before, "nothing was served after the failover");

    // Every use of each grant was spent exactly once across the failover, and every value an
    // agent received has its event in the log (a resolution recorded but not answered, cut
    // by the kill, is the only way for the two counts to differ).
    let resolved = events_of(&b, "secret_resolved");
    for (i, host) in ["h1", "h2"].iter().enumerate() {
        let recorded = resolved
            .iter()
            .filter(|r| r["event"]["from_host"] == *host)
            .count() as u64;
        let received = got[i].load(Ordering::SeqCst);
        assert_eq!(recorded, USES, "{host}: max_uses across the failover");
        assert!(
            received <= recorded,
            "{host}: {received} values, {recorded} events"
        );
        // At most the two requests in flight on the host when the hub died were recorded
        // without their answer arriving.
        assert!(
            received + 2 >= recorded,
            "{host}: only {received} values received"
        );
    }
    // The taken-over hub's copy verifies and equals the store; the hub has the lock.
    verify(&b);
    assert_eq!(local_size(&b), store_size(&pg));
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"),
        "1"
    );
    assert!(!b.stderr().contains(CANARY));
    assert!(!b.stderr().contains(PASS));
}

#[test]
fn terminating_the_active_hubs_session_hands_the_log_to_the_standby_and_the_old_hub_stops() {
    let pg = Pg::start();
    let (mut a, _url) = active_hub(&pg);
    let v = json(&a.ok(&["--json", "agent", "create", "bot"], None));
    let cred = v["credential"].as_str().unwrap().to_string();
    a.ok(
        &[
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "demo",
        ],
        None,
    );
    assert!(resolve(&a, &cred).status.success());
    let (mut b, pp) = standby_of(&a);
    let notices = start_standby(
        &mut b,
        Some(&pp),
        &pg,
        &format!("127.0.0.1:{}", free_port()),
    );
    caught_up(&b, &pg);
    // A secret put and deleted while the standby follows: its copy of the sealed value is
    // erased as the deletion reaches it, as the active hub's is (not at takeover).
    a.ok(
        &["secret", "put", "anthropic/dev", "--project", "demo"],
        Some("sk-ant-CANARY-deleted-7e1f\n"),
    );
    let sealed = events_of(&a, "secret_version_sealed")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    caught_up(&b, &pg);
    let erased = |d: &Daemon| {
        scopehold_log::LogReader::open(&d.home.join("log"), None)
            .unwrap()
            .get(sealed)
            .unwrap()
            .erased
    };
    assert!(!erased(&b));
    a.ok(&["secret", "delete", "anthropic/dev", "--yes"], None);
    caught_up(&b, &pg);
    let start = Instant::now();
    while !erased(&b) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the standby kept a deleted secret's sealed value"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(erased(&a));

    let ended = pg.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'scopehold-hub'",
    );
    assert_eq!(ended, "1");
    let t0 = Instant::now();
    let ready = notices.next(Duration::from_secs(30));
    assert_eq!(ready.as_deref(), Some("READY=1\n"), "{}", b.stderr());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // The hub that lost its session finds the lock taken and stops, saying why, without
    // having appended anything more.
    let mut child = a.child.take().unwrap();
    let status = crate::common::wait_bounded(&mut child, Duration::from_secs(20))
        .expect("the hub that lost the log is still running");
    let err = a.stderr();
    assert!(!status.success(), "{err}");
    assert!(err.contains("no longer the log's writer"), "{err}");
    let o = resolve(&a, &cred);
    assert!(!o.status.success() && !text(&o.stdout).contains(CANARY));

    // The new active hub serves, on the same log, and its copy verifies.
    let o = resolve(&b, &cred);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), CANARY);
    assert_eq!(events_of(&b, "secret_resolved").len(), 2);
    assert_eq!(local_size(&b), store_size(&pg));
    verify(&b);
    // Started again, the old hub is the standby now.
    let notices = start_standby(&mut a, None, &pg, &format!("127.0.0.1:{}", free_port()));
    drop(notices);
    caught_up(&a, &pg);
    let status = a.stop();
    assert!(status.success(), "a standby stops cleanly: {}", a.stderr());
}

#[test]
fn a_standby_that_reads_a_rewritten_chain_refuses_to_go_on() {
    let pg = Pg::start();
    let (a, _url) = active_hub(&pg);
    let (mut b, pp) = standby_of(&a);
    let notices = start_standby(
        &mut b,
        Some(&pp),
        &pg,
        &format!("127.0.0.1:{}", free_port()),
    );
    caught_up(&b, &pg);
    let n = local_size(&b);
    // The batch the standby's copy ends with now names another head in the store: another
    // chain under the same sequence numbers.
    pg.sql(&format!(
        "UPDATE scopehold_batch SET head = decode(repeat('ab', 32), 'hex') WHERE size = {n}"
    ));
    a.ok(&["project", "create", "after-the-rewrite"], None);
    let mut child = b.child.take().unwrap();
    let status = crate::common::wait_bounded(&mut child, Duration::from_secs(20))
        .expect("the standby went on after reading another chain");
    assert!(!status.success());
    let err = b.stderr();
    assert!(err.contains("fork") && err.contains("differs"), "{err}");
    assert!(
        notices.next(Duration::from_millis(100)).is_none(),
        "never ready"
    );
    // Its copy is as it was: it verifies, and holds nothing of the rewritten store.
    assert_eq!(local_size(&b), n);
    verify(&b);
}

#[test]
fn a_store_password_is_refused_on_the_command_line_and_taken_from_the_environment() {
    let pg = Pg::start();
    let secret = "pw-CANARY-store-9f3e";
    let with_pw = format!(
        "postgres://scopehold:{secret}@/postgres?host={}",
        pg.sock.display()
    );
    let d = Daemon::new();
    let (code, err) = d.refused_start_with(&["--store", &with_pw]);
    assert_ne!(code, Some(0));
    assert!(err.contains("SCOPEHOLD_STORE"), "{err}");
    assert!(!err.contains(secret), "{err}");
    let (code, err) = d.refused_start_with(&[&format!("--store={with_pw}")]);
    assert_ne!(code, Some(0));
    assert!(!err.contains(secret), "{err}");
    // From the environment: accepted (the cluster trusts the socket, so the password is not
    // even needed), and never printed.
    let mut d = d;
    d.env.push(("SCOPEHOLD_STORE".into(), with_pw.clone()));
    d.run();
    let st = json(&d.ok(&["--json", "status"], None));
    assert!(
        st["log"]["store"]["at"]
            .as_str()
            .unwrap()
            .contains("postgres on"),
        "{st}"
    );
    assert!(!st.to_string().contains(secret));
    d.stop();
    assert!(!d.stderr().contains(secret));
}
