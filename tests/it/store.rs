//! The hub's log on PostgreSQL (`daemon --store`), against a real cluster each test starts
//! (`pg`): batches land in the database before the local copy, the copy catches up from it,
//! PostgreSQL stopped means 503 and nothing released until it is back (with no restart), a
//! terminated session is replaced, one hub appends at a time, and a store that lost or
//! rewrote events is refused as a fork.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Daemon;
use crate::pg::Pg;

const CANARY: &str = "sk-live-CANARY-store-7c1d0e";

fn json(s: &str) -> Value {
    serde_json::from_str(s.lines().last().unwrap()).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A daemon on `pg`'s store with project `demo`, secret `openai/prod` and an agent granted
/// it: the agent's credential.
fn hub_on(pg: &Pg) -> (Daemon, String) {
    let mut d = Daemon::new();
    d.run_with(&["--store", &pg.url()]);
    d.ok(&["project", "create", "demo"], None);
    d.ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&format!("{CANARY}\n")),
    );
    let v = json(&d.ok(&["--json", "agent", "create", "summariser"], None));
    d.ok(
        &[
            "grant",
            "create",
            "agent:summariser",
            "openai/prod",
            "--project",
            "demo",
        ],
        None,
    );
    (d, v["credential"].as_str().unwrap().to_string())
}

fn resolve(d: &Daemon, cred: &str) -> std::process::Output {
    d.cli(
        &["resolve", "openai/prod", "--project", "demo"],
        None,
        Some(cred),
    )
}

fn health(d: &Daemon) -> Value {
    json(&d.ok(&["--json", "status"], None))
}

fn events(d: &Daemon) -> u64 {
    health(d)["log"]["events"].as_u64().unwrap()
}

/// `secret_resolved` events in the log (`log show --json` prints one per line).
fn resolved(d: &Daemon) -> usize {
    d.ok(
        &["--json", "log", "show", "--kind", "secret_resolved"],
        None,
    )
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count()
}

/// `(size, head hex)` of the log's row in the store.
fn row(pg: &Pg) -> (u64, String) {
    let r = pg.sql("SELECT size, encode(head, 'hex') FROM scopehold_log");
    let (s, h) = r.split_once('|').unwrap();
    (s.parse().unwrap(), h.to_string())
}

fn verify(d: &Daemon) {
    let o = d.cli(&["log", "verify"], None, None);
    assert!(o.status.success(), "log verify: {}", text(&o.stderr));
}

#[test]
fn every_event_is_in_the_store_and_a_stale_copy_catches_up_from_it() {
    let pg = Pg::start();
    let (mut d, cred) = hub_on(&pg);
    let o = resolve(&d, &cred);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), CANARY);
    // The store holds every event, as batches that tile the log exactly, and agrees with
    // the local copy's head.
    let st = health(&d);
    let n = st["log"]["events"].as_u64().unwrap();
    assert_eq!(
        row(&pg),
        (n, st["log"]["head"].as_str().unwrap().to_string())
    );
    // Batches tile the log: each starts where the one before it ends.
    assert_eq!(
        pg.sql("SELECT sum(size - first_seq), min(first_seq), max(size), bool_and(size > first_seq) FROM scopehold_batch"),
        format!("{n}|0|{n}|t")
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM scopehold_batch b WHERE first_seq > 0 AND NOT EXISTS (SELECT 1 FROM scopehold_batch p WHERE p.size = b.first_seq AND p.head = b.prev)"),
        "0"
    );
    assert!(
        st["log"]["store"]["at"]
            .as_str()
            .unwrap()
            .contains("postgres on"),
        "{st}"
    );
    assert!(st["log"]["store"]["commits"].as_u64().unwrap() > 0, "{st}");
    // No secret in the clear in the database: values travel sealed in the frames.
    let dump = pg.sql("SELECT encode(frames, 'escape') FROM scopehold_batch");
    assert!(!dump.contains(CANARY));
    assert!(
        !pg.sql("SELECT string_agg(checkpoint, '') FROM scopehold_log")
            .contains(CANARY)
    );

    // A copy of the state directory taken now falls behind while the hub goes on...
    d.stop();
    let stale = tempfile::tempdir().unwrap();
    copy_dir(&d.home, &stale.path().join("state"));
    d.run_with(&["--store", &pg.url()]);
    for _ in 0..3 {
        assert!(resolve(&d, &cred).status.success());
    }
    d.ok(
        &[
            "grant",
            "create",
            "agent:summariser",
            "openai/prod",
            "--project",
            "demo",
            "--max-uses",
            "1",
        ],
        None,
    );
    let ahead = events(&d);
    d.stop();
    // ... and catches up from the store when a hub starts on it: every event, checked, the
    // same head, the same projection (four resolutions, two grants), and it verifies.
    std::fs::remove_dir_all(&d.home).unwrap();
    copy_dir(&stale.path().join("state"), &d.home);
    d.run_with(&["--store", &pg.url()]);
    assert_eq!(events(&d), ahead);
    assert_eq!(row(&pg).0, ahead);
    assert_eq!(resolved(&d), 4);
    let grants = json(&d.ok(&["--json", "grant", "list"], None));
    assert_eq!(grants["grants"].as_array().unwrap().len(), 2, "{grants}");
    verify(&d);
    assert!(resolve(&d, &cred).status.success());
}

#[test]
fn with_postgres_stopped_nothing_is_released_and_service_resumes_when_it_is_back() {
    let pg = Pg::start();
    let (d, cred) = hub_on(&pg);
    assert!(resolve(&d, &cred).status.success());
    let pid = d.child.as_ref().unwrap().id();
    let before = resolved(&d);
    pg.stop();
    // Every request is refused, promptly and saying why; nothing is answered.
    let start = Instant::now();
    for _ in 0..3 {
        let o = resolve(&d, &cred);
        assert!(
            !o.status.success(),
            "a value was released with the store down"
        );
        assert!(!text(&o.stdout).contains(CANARY));
        let err = text(&o.stderr);
        assert!(err.contains("store is unreachable"), "{err}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let h = json(&text(&d.cli(&["--json", "status"], None, None).stdout));
    assert!(h["log"]["store"]["unreachable"].is_string(), "{h}");
    // Back: service resumes by itself, in the same process.
    pg.start_again();
    let start = Instant::now();
    loop {
        let o = resolve(&d, &cred);
        if o.status.success() {
            assert_eq!(text(&o.stdout).trim(), CANARY);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            text(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(d.child.as_ref().unwrap().id(), pid);
    assert!(health(&d)["log"]["store"]["unreachable"].is_null());
    // The record held while the store was down (the first refused request's) is in the
    // log; the two refused before deciding left none. Every released value has its event.
    assert_eq!(resolved(&d), before + 2);
    assert_eq!(row(&pg).0, events(&d));
    verify(&d);
}

#[test]
fn a_terminated_session_is_replaced_and_a_second_hub_waits_as_a_standby() {
    let pg = Pg::start();
    let (mut d, cred) = hub_on(&pg);
    let lock = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted";
    assert_eq!(pg.sql(lock), "1");
    let ended = pg.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'scopehold-hub'",
    );
    assert_eq!(ended, "1");
    // The next commit finds its session gone, takes a new one (and the lock with it), checks
    // where the log stands, and goes on.
    let o = resolve(&d, &cred);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(pg.sql(lock), "1");
    assert_eq!(row(&pg).0, events(&d));

    // Another hub on the same log (a copy of this state directory) does not append while
    // this one holds the lock: it is a standby (see `standby`), serving nothing.
    d.stop();
    let mut other = Daemon::new();
    copy_dir(&d.home, &other.home);
    d.run_with(&["--store", &pg.url()]);
    let notices = other.spawn_with(&["--store", &pg.url()]);
    let said = notices.next(Duration::from_secs(30)).unwrap_or_default();
    assert!(
        said.starts_with("STATUS=standby"),
        "{said}: {}",
        other.stderr()
    );
    assert!(!other.socket.exists());
    assert!(resolve(&d, &cred).status.success());
    assert_eq!(row(&pg).0, events(&d));
    assert!(other.stop().success(), "{}", other.stderr());
}

#[test]
fn a_store_that_lost_or_rewrote_events_is_refused_as_a_fork() {
    let pg = Pg::start();
    let (mut d, cred) = hub_on(&pg);
    d.stop();
    // `old`: the state as it was at N events.
    let old = Daemon::new();
    copy_dir(&d.home, &old.home);
    let n = row(&pg).0;
    d.run_with(&["--store", &pg.url()]);
    assert!(resolve(&d, &cred).status.success());
    assert!(resolve(&d, &cred).status.success());
    let m = events(&d);
    d.stop();
    let (_, head_m) = row(&pg);

    // A batch rewritten in place (one byte of its frames) is refused by a copy that reads it.
    pg.sql(&format!(
        "UPDATE scopehold_batch SET frames = overlay(frames placing '\\x00'::bytea from 60 for 1) WHERE first_seq = {n}"
    ));
    let (code, err) = old.refused_start_with(&["--store", &pg.url()]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("disagree") && err.contains(&format!("batch at {n}")),
        "{err}"
    );

    // The store loses its tail (an asynchronous failover): the hub that saw it refuses.
    pg.sql(&format!(
        "DELETE FROM scopehold_batch WHERE first_seq >= {n}; UPDATE scopehold_log SET size = {n}, head = (SELECT head FROM scopehold_batch WHERE size = {n})"
    ));
    let (code, err) = d.refused_start_with(&["--store", &pg.url()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("lost committed events"), "{err}");

    // Meanwhile the old copy, consistent with the shortened store, writes other events at
    // the same sequence numbers: a second history. The hub that saw the first refuses it.
    let mut old = old;
    old.run_with(&["--store", &pg.url()]);
    let v = json(&old.ok(&["--json", "agent", "create", "other"], None));
    assert!(v["credential"].is_string());
    old.ok(&["project", "create", "second"], None);
    old.stop();
    assert!(row(&pg).0 >= m, "the second history reaches past the first");
    assert_ne!(row(&pg).1, head_m);
    let (code, err) = d.refused_start_with(&["--store", &pg.url()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("fork") && err.contains("differs"), "{err}");
    // Nothing in the refused hub's copy changed: it still verifies on its own.
    verify(&d);
}

/// Copies a stopped daemon's state directory (modes kept).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "cp: {}", text(&o.stderr));
}

#[test]
fn deleting_a_secret_erases_its_sealed_values_in_the_store_too() {
    let pg = Pg::start();
    let (d, _cred) = hub_on(&pg);
    let sealed: Vec<u64> = d
        .ok(
            &["--json", "log", "show", "--kind", "secret_version_sealed"],
            None,
        )
        .lines()
        .map(|l| json(l)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(sealed.len(), 1);
    let s = sealed[0];
    let in_store = |pg: &Pg| {
        pg.sql(&format!(
            "SELECT encode(frames, 'hex') FROM scopehold_batch WHERE first_seq <= {s} AND size > {s}"
        ))
    };
    let local = |d: &Daemon| {
        let mut found = String::new();
        scopehold_log::replica::for_each_batch(&d.home.join("log"), 0, |b| {
            if b.first_seq <= s && s < b.checkpoint.body.size {
                found = hex::encode(&*b.frames);
            }
            Ok(())
        })
        .unwrap();
        found
    };
    let before = in_store(&pg);
    assert_eq!(
        before,
        local(&d),
        "the store holds the batch as the segment does"
    );
    d.ok(&["secret", "delete", "openai/prod", "--yes"], None);
    let after = in_store(&pg);
    assert_ne!(
        after, before,
        "the store's copy of the sealed value was not erased"
    );
    assert_eq!(after, local(&d), "the store's batch is the erased one");
    verify(&d);
}

/// A database on another machine is reached over TLS only, with the server verified: here a
/// cluster on a loopback TCP port that refuses plain connections, its certificate from a CA
/// the test makes. Without that CA (the system's roots) the hub refuses to start; with it
/// (`--store-ca`) the hub's session is TLS. A remote host without `sslmode=require` is
/// refused before anything is sent.
#[test]
fn the_store_over_tls_verifies_the_server_and_a_plain_remote_host_is_refused() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "database CA of the test");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(p, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let pg = Pg::start_tls(&cert.pem(), &key.serialize_pem());
    let mut d = Daemon::new();
    let ca_file = d.t.path().join("db-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let (code, err) = d.refused_start_with(&["--store", "postgres://scopehold@db.example.com/x"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("sslmode=require"), "{err}");
    let (code, err) = d.refused_start_with(&["--store", &pg.tls_url()]);
    assert_ne!(code, Some(0));
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    d.run_with(&[
        "--store",
        &pg.tls_url(),
        "--store-ca",
        ca_file.to_str().unwrap(),
    ]);
    d.ok(&["project", "create", "demo"], None);
    d.ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&format!("{CANARY}\n")),
    );
    let v = json(&d.ok(&["--json", "agent", "create", "bot"], None));
    d.ok(
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
    let o = resolve(&d, v["credential"].as_str().unwrap());
    assert_eq!(text(&o.stdout).trim(), CANARY, "{}", text(&o.stderr));
    assert_eq!(
        pg.sql("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'scopehold-hub'"),
        "t"
    );
    let st = health(&d);
    assert!(
        st["log"]["store"]["at"].as_str().unwrap().contains("TLS"),
        "{st}"
    );
    assert_eq!(row(&pg).0, events(&d));
}
