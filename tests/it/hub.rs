//! A hub and its edges, as real processes on loopback: `daemon --listen` on one state
//! directory, `daemon --hub URL --join TOKEN` on others (each its own host), the CLI on each
//! side's socket.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Daemon;

pub(crate) const CANARY: &str = "sk-live-CANARY-hub-5e21c9";

/// A loopback port nobody listens on now.
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub(crate) fn json(s: &str) -> Value {
    serde_json::from_str(s.lines().last().unwrap()).unwrap()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A hub on a loopback port, with project `demo` and secret `openai/prod` in it.
fn start_hub() -> (Daemon, String) {
    let mut hub = Daemon::new();
    let addr = format!("127.0.0.1:{}", free_port());
    hub.run_with(&["--listen", &addr]);
    hub.ok(&["project", "create", "demo"], None);
    hub.ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&format!("{CANARY}\n")),
    );
    (hub, format!("https://{addr}"))
}

/// `host add NAME` on the hub: the join token.
pub(crate) fn invite(hub: &Daemon, host: &str, ttl: Option<&str>) -> String {
    let mut args = vec!["--json", "host", "add", host];
    if let Some(t) = ttl {
        args.extend(["--ttl", t]);
    }
    let v = json(&hub.ok(&args, None));
    assert_eq!(v["host"], host);
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("shj_"), "{token}");
    assert!(token.ends_with(v["ca_pin"].as_str().unwrap()), "{v}");
    token
}

/// An edge enrolled with `token` and serving.
fn edge(url: &str, token: &str) -> Daemon {
    let mut e = Daemon::new();
    e.run_with(&["--hub", url, "--join", token]);
    e
}

fn hosts(hub: &Daemon) -> Vec<Value> {
    json(&hub.ok(&["--json", "host", "list"], None))["hosts"]
        .as_array()
        .unwrap()
        .clone()
}

pub(crate) fn resolve(d: &Daemon, cred: &str) -> std::process::Output {
    d.cli(
        &["resolve", "openai/prod", "--project", "demo"],
        None,
        Some(cred),
    )
}

/// An agent bound to `host`, granted `openai/prod` in `demo`: its credential.
fn agent_on(hub: &Daemon, name: &str, host: &str) -> String {
    let v = json(&hub.ok(&["--json", "agent", "create", name, "--host", host], None));
    hub.ok(
        &[
            "grant",
            "create",
            &format!("agent:{name}"),
            "openai/prod",
            "--project",
            "demo",
        ],
        None,
    );
    v["credential"].as_str().unwrap().to_string()
}

#[test]
fn a_host_enrols_once_and_its_agents_resolve_through_its_edge_with_the_host_recorded() {
    let (hub, url) = start_hub();
    let token = invite(&hub, "ci-1", None);
    let h = hosts(&hub);
    assert_eq!(
        (h[0]["name"].as_str(), h[0]["state"].as_str()),
        (Some("ci-1"), Some("invited"))
    );

    let e = edge(&url, &token);
    // The host's key is its own, 0600; nothing of the hub's secrets is on the host.
    let key = e.home.join("host.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    for f in std::fs::read_dir(&e.home).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !crate::common::contains(&bytes, CANARY.as_bytes()),
                "{}",
                p.display()
            );
            assert!(
                !crate::common::contains(&bytes, token.as_bytes()),
                "{}",
                p.display()
            );
        }
    }
    for f in ["master.key", "log.key", "log"] {
        assert!(!e.home.join(f).exists(), "an edge keeps no {f}");
    }
    // `doctor` on the host checks the enrolment, not keys an edge does not have.
    let o = e.cli(&["doctor"], None, None);
    let report = text(&o.stdout);
    assert!(o.status.success(), "{report}{}", text(&o.stderr));
    assert!(report.contains("enrolled as host ci-1"), "{report}");
    assert!(!report.contains("master.key"), "{report}");

    // The token is spent: a second host cannot enrol with it.
    let again = Daemon::new();
    let (code, err) = again.refused_start_with(&["--hub", &url, "--join", &token]);
    assert_ne!(code, Some(0));
    assert!(err.contains("join token unknown, already used"), "{err}");
    assert!(!again.home.join("host.key").exists());
    // Recorded, with the address it came from.
    let refused = json(&hub.ok(
        &["--json", "log", "show", "--kind", "host_join_denied"],
        None,
    ));
    assert_eq!(
        refused["event"]["reason"], "join token unknown or spent",
        "{refused}"
    );
    assert!(
        refused["event"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{refused}"
    );

    let cred = agent_on(&hub, "bot", "ci-1");
    let o = resolve(&e, &cred);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), CANARY);
    // Bound to ci-1: the same credential on the hub's own socket is denied.
    let o = resolve(&hub, &cred);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));

    // The hub's log names the host beside the uid and pid the edge's kernel reported.
    let rows: Vec<Value> = hub
        .ok(&["--json", "log", "show"], None)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kind = |k: &str| {
        rows.iter()
            .filter(|r| r["kind"] == k)
            .cloned()
            .collect::<Vec<_>>()
    };
    let resolved = kind("secret_resolved");
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let ev = &resolved[0]["event"];
    assert_eq!(ev["from_host"], "ci-1", "{ev}");
    assert_eq!(ev["uid"], nix::unistd::geteuid().as_raw(), "{ev}");
    assert!(ev["pid"].as_i64().unwrap() > 0, "{ev}");
    let denied = kind("resolution_denied");
    assert_eq!(
        denied[0]["event"]["reason"],
        "caller host not bound to agent"
    );
    assert!(denied[0]["event"].get("from_host").is_none(), "{denied:?}");
    assert_eq!(kind("host_invited").len(), 1);
    let enrolled = kind("host_enrolled");
    assert_eq!(enrolled[0]["actor"], "host:ci-1", "{enrolled:?}");
    // The invitation's token hash is secret-bearing: never printed.
    assert!(kind("host_invited")[0].get("event").is_none());

    // A grant narrowed to the host and a uid on it: an unbound agent may use it only there.
    let me = nix::unistd::geteuid().as_raw().to_string();
    let free = json(&hub.ok(&["--json", "agent", "create", "free"], None))["credential"]
        .as_str()
        .unwrap()
        .to_string();
    hub.ok(
        &[
            "grant",
            "create",
            "agent:free",
            "openai/prod",
            "--project",
            "demo",
            "--host",
            "ci-1",
            "--uid",
            &me,
        ],
        None,
    );
    let o = resolve(&e, &free);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = resolve(&hub, &free);
    assert_eq!(
        o.status.code(),
        Some(3),
        "the same uid on the hub's own host is another user"
    );
    assert!(
        text(&o.stderr).contains("bound to another host"),
        "{}",
        text(&o.stderr)
    );

    let h = hosts(&hub);
    assert_eq!(h[0]["state"], "enrolled");
    assert_eq!(h[0]["connected"], true, "{h:?}");
    let sha = h[0]["cert_sha256"].as_str().unwrap();
    let pem = std::fs::read_to_string(e.home.join("host.pem")).unwrap();
    let der = pem::parse(pem).unwrap();
    use sha2::Digest;
    assert_eq!(sha, hex::encode(sha2::Sha256::digest(der.contents())));
}

#[test]
fn a_host_speaks_only_for_its_own_uids() {
    let (hub, url) = start_hub();
    let e = edge(&url, &invite(&hub, "laptop", None));
    // The hub's admin is root on the hub's host. Root on the laptop is not that member:
    // nobody there is a member yet, so an admin call through the edge is refused.
    let o = e.cli(&["project", "list"], None, None);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("no valid credential"),
        "{}",
        text(&o.stderr)
    );
    // As a member of that host (a (host, uid) pair), the same uid is someone.
    let me = nix::unistd::geteuid().as_raw().to_string();
    hub.ok(
        &["member", "add", "lee", "--host", "laptop", "--uid", &me],
        None,
    );
    let o = e.cli(&["whoami"], None, None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("member:lee"),
        "{}",
        text(&o.stdout)
    );
    // Not an admin: an admin call is still refused.
    let o = e.cli(&["project", "list"], None, None);
    assert_ne!(o.status.code(), Some(0));
    // A member can only be bound to an enrolled host.
    let o = hub.cli(
        &["member", "add", "kim", "--host", "nowhere", "--uid", "7"],
        None,
        None,
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("no host nowhere"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn an_expired_token_and_a_hub_with_another_ca_are_refused() {
    let (hub, url) = start_hub();
    let token = invite(&hub, "late", Some("1s"));
    std::thread::sleep(Duration::from_millis(1500));
    let e = Daemon::new();
    let (code, err) = e.refused_start_with(&["--hub", &url, "--join", &token]);
    assert_ne!(code, Some(0));
    assert!(err.contains("join token expired"), "{err}");
    assert!(!e.home.join("host.key").exists());
    let refused = json(&hub.ok(
        &["--json", "log", "show", "--kind", "host_join_denied"],
        None,
    ));
    assert_eq!(
        (
            refused["actor"].as_str(),
            refused["event"]["reason"].as_str()
        ),
        (Some("host:late"), Some("join token expired")),
        "{refused}"
    );

    // Another hub (another state directory, so another CA) on another port: the token pins
    // the first hub's CA, so the host refuses the second before it sends the token.
    let (other, other_url) = start_hub();
    let token = invite(&hub, "ci-2", None);
    let e = Daemon::new();
    let (code, err) = e.refused_start_with(&["--hub", &other_url, "--join", &token]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not the hub that made the token"), "{err}");
    assert!(!e.home.join("host.key").exists());
    // The token never reached the other hub, and is still good at its own.
    let log = other.ok(&["--json", "log", "show"], None);
    assert!(!log.contains("host_enrolled"), "{log}");
    let e = edge(&url, &token);
    assert!(e.home.join("host.key").exists());
    // A garbled token is refused before any connection.
    let (code, err) = Daemon::new().refused_start_with(&["--hub", &url, "--join", "shj_nope"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not a join token"), "{err}");
}

#[test]
fn host_revoke_cuts_a_live_edge_and_an_unreachable_hub_is_a_503() {
    let (mut hub, url) = start_hub();
    let e = edge(&url, &invite(&hub, "ci-3", None));
    let cred = agent_on(&hub, "bot", "ci-3");
    let o = resolve(&e, &cred);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The edge keeps its connection to the hub open between requests.
    assert_eq!(hosts(&hub)[0]["connected"], true);

    hub.ok(&["host", "revoke", "ci-3"], None);
    // Cut at once, not at the edge's next request.
    let start = Instant::now();
    while hosts(&hub)[0]["connected"] == true {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the edge is still connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(hosts(&hub)[0]["state"], "revoked");
    let o = resolve(&e, &cred);
    assert_ne!(o.status.code(), Some(0));
    let err = text(&o.stderr);
    assert!(!text(&o.stdout).contains(CANARY));
    assert!(
        err.contains("revoked") || err.contains("no enrolled host"),
        "{err}"
    );
    let rows = hub.ok(&["--json", "log", "show", "--kind", "host_revoked"], None);
    assert_eq!(rows.lines().count(), 1, "{rows}");

    // A second edge, then the hub goes away: the edge answers 503 hub_unreachable and
    // says why; nothing is released.
    let e2 = edge(&url, &invite(&hub, "ci-4", None));
    let cred2 = agent_on(&hub, "bot2", "ci-4");
    assert!(resolve(&e2, &cred2).status.success());
    hub.stop();
    let o = e2.cli(
        &["--json", "resolve", "openai/prod", "--project", "demo"],
        None,
        Some(&cred2),
    );
    assert_ne!(o.status.code(), Some(0));
    let err = text(&o.stderr);
    assert!(
        err.contains("hub_unreachable") || err.contains("cannot reach its hub"),
        "{err}"
    );
    assert!(!text(&o.stdout).contains(CANARY));
}

/// A network namespace with a veth pair to this one, removed when dropped: a separate host,
/// as far as the network goes.
struct Netns {
    name: String,
    veth: String,
    hub_ip: String,
}

impl Netns {
    fn ip(args: &[&str]) -> bool {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `None` where this cannot be done here (not root, no `ip`).
    fn create() -> Option<Netns> {
        if !nix::unistd::geteuid().is_root() || !Self::ip(&["netns", "list"]) {
            eprintln!("skipped: needs root and iproute2 (CI has both)");
            return None;
        }
        let id = std::process::id() % 60000;
        let (hi, lo) = (id / 250 % 250, id % 250);
        let n = Netns {
            name: format!("shtest{id}"),
            veth: format!("shv{id}"),
            hub_ip: format!("10.{}.{}.1", 200 + hi % 50, lo),
        };
        let edge_ip = format!("10.{}.{}.2/30", 200 + hi % 50, lo);
        let peer = format!("{}p", n.veth);
        let hub_cidr = format!("{}/30", n.hub_ip);
        for cmd in [
            vec!["netns", "add", &n.name],
            vec![
                "link", "add", &n.veth, "type", "veth", "peer", "name", &peer,
            ],
            vec!["link", "set", &peer, "netns", &n.name],
            vec!["addr", "add", &hub_cidr, "dev", &n.veth],
            vec!["link", "set", &n.veth, "up"],
            vec!["-n", &n.name, "addr", "add", &edge_ip, "dev", &peer],
            vec!["-n", &n.name, "link", "set", &peer, "up"],
            vec!["-n", &n.name, "link", "set", "lo", "up"],
        ] {
            assert!(Self::ip(&cmd), "ip {cmd:?}");
        }
        Some(n)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        Self::ip(&["link", "del", &self.veth]);
        Self::ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn an_edge_in_its_own_network_namespace_serves_its_agents_through_the_hub() {
    let Some(ns) = Netns::create() else { return };
    let mut hub = Daemon::new();
    let addr = format!("{}:{}", ns.hub_ip, free_port());
    hub.run_with(&["--listen", &addr]);
    hub.ok(&["project", "create", "demo"], None);
    hub.ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&format!("{CANARY}\n")),
    );
    let token = invite(&hub, "far", None);
    // Inside the namespace, the hub's loopback is not there: only the veth reaches it.
    let mut e = Daemon::new();
    let url = format!("https://{addr}");
    e.run_in(
        &["ip", "netns", "exec", &ns.name],
        &["--hub", &url, "--join", &token, "--hub-timeout", "2s"],
    );
    let cred = agent_on(&hub, "bot", "far");
    let o = resolve(&e, &cred);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), CANARY);
    let rows = hub.ok(
        &["--json", "log", "show", "--kind", "secret_resolved"],
        None,
    );
    let ev: Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    assert_eq!(ev["event"]["from_host"], "far", "{ev}");
    // Cut the wire: the edge says the hub is unreachable, and releases nothing.
    assert!(Netns::ip(&["link", "set", &ns.veth, "down"]));
    let o = resolve(&e, &cred);
    assert_ne!(o.status.code(), Some(0));
    assert!(!text(&o.stdout).contains(CANARY));
    let err = text(&o.stderr);
    assert!(err.contains("hub_unreachable"), "{err}");
    drop(e);
    drop(hub);
}

#[test]
fn an_edge_moves_to_the_hub_address_it_can_reach() {
    let (hub, url) = start_hub();
    let mut e = edge(&url, &invite(&hub, "roam", None));
    let cred = agent_on(&hub, "bot", "roam");
    e.stop();
    // The first address has nobody behind it (a standby that is down): the request goes to
    // the next, whole, and the edge stays with the one that answered.
    let dead = format!("https://127.0.0.1:{}", free_port());
    e.run_with(&["--hub", &dead, "--hub", &url]);
    for _ in 0..3 {
        let o = resolve(&e, &cred);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout).trim(), CANARY);
    }
    let rows = hub.ok(
        &["--json", "log", "show", "--kind", "secret_resolved"],
        None,
    );
    assert_eq!(
        rows.lines().count(),
        3,
        "each resolution reached the hub once: {rows}"
    );
}

/// `curl` over a unix socket: the body of `GET PATH`, with extra headers.
fn curl_unix(socket: &std::path::Path, path: &str, headers: &[&str]) -> String {
    let mut c = std::process::Command::new("curl");
    c.arg("-sS").arg("--unix-socket").arg(socket);
    for h in headers {
        c.args(["-H", h]);
    }
    let o = c.arg(format!("http://scopehold{path}")).output().unwrap();
    text(&o.stdout)
}

#[test]
fn a_caller_cannot_claim_another_uid_by_the_edges_headers() {
    let (hub, url) = start_hub();
    let e = edge(&url, &invite(&hub, "laptop", None));
    let me = nix::unistd::geteuid().as_raw().to_string();
    hub.ok(
        &["member", "add", "lee", "--host", "laptop", "--uid", &me],
        None,
    );
    // An admin member of the laptop under another uid: the prize a caller would claim.
    hub.ok(
        &[
            "member", "add", "kim", "--host", "laptop", "--uid", "4242", "--admin",
        ],
        None,
    );
    let claim = ["x-scopehold-peer-uid: 4242", "x-scopehold-peer-pid: 1"];
    // Through the edge, the kernel's uid counts: the caller's own claim is dropped.
    let who = curl_unix(&e.socket, "/v1/whoami", &claim);
    assert!(who.contains("member:lee") && !who.contains("kim"), "{who}");
    let projects = curl_unix(&e.socket, "/v1/projects", &claim);
    assert!(projects.contains("\"forbidden\""), "{projects}");
    // On the hub's own socket the headers mean nothing at all: root is root.
    let who = curl_unix(&hub.socket, "/v1/whoami", &claim);
    assert!(who.contains("member:root") && !who.contains("kim"), "{who}");
    // Straight to the hub's listener without a host certificate: refused, headers or not.
    let o = std::process::Command::new("curl")
        .args(["-sS", "-k", "-H", claim[0]])
        .arg(format!("{url}/v1/whoami"))
        .output()
        .unwrap();
    let body = text(&o.stdout);
    assert!(
        body.contains("host_unauthenticated"),
        "{body}{}",
        text(&o.stderr)
    );
}

/// The console on a host that holds no log: `scopehold console` on an edge reads the hub's
/// trail through the edge page by page (each page verified here with the log's key), sees
/// new events pushed as they are committed, and sends its actions through the same socket.
#[test]
fn the_console_on_an_edges_host_reads_verifies_and_acts_through_the_edge() {
    use crate::console::{Session, quit, tmux, wait_screen};
    let (hub, url) = start_hub();
    let e = edge(&url, &invite(&hub, "laptop", None));
    let me = nix::unistd::geteuid().as_raw().to_string();
    hub.ok(
        &[
            "member", "add", "lee", "--host", "laptop", "--uid", &me, "--admin",
        ],
        None,
    );
    let cred = agent_on(&hub, "bot", "laptop");
    assert!(resolve(&e, &cred).status.success());
    assert!(!e.home.join("log").exists(), "an edge keeps no log");
    // The console itself, without a terminal: its projection, folded from the pages,
    // knows the host-bound agent and its grant (the invitation's body is left out of pages).
    let cfg = scopehold::cli::console::remote_config(&e.socket, None, None).unwrap();
    let mut c = scopehold_tui::Console::open(cfg).unwrap();
    c.wait_idle(Duration::from_secs(20));
    let grants = &c.tables.as_ref().expect("the projection")[2];
    assert!(
        grants.iter().any(|r| r.iter().any(|x| x == "agent:bot")),
        "{grants:?}"
    );
    drop(c);

    let session = Session(format!("sh-edge-{}", std::process::id()));
    let cmd = format!(
        "SCOPEHOLD_HOME={} SCOPEHOLD_SOCKET={} NO_COLOR=1 {} console",
        e.home.display(),
        e.socket.display(),
        env!("CARGO_BIN_EXE_scopehold")
    );
    tmux(
        &session.0,
        &[
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "160",
            "-y",
            "32",
            &cmd,
        ],
    );
    let s = wait_screen(&session.0, "secret_resolved");
    assert!(s.contains("host_enrolled"), "{s}");
    assert!(
        !s.contains(CANARY),
        "the console shows a secret value:\n{s}"
    );
    // Verified here: every page again, and the chain across them.
    tmux(&session.0, &["send-keys", "-t", &session.0, "v"]);
    wait_screen(&session.0, "verified up to");
    // Pushed: an event committed on the hub appears without a key pressed.
    hub.ok(&["project", "create", "pushed-live"], None);
    wait_screen(&session.0, "pushed-live");
    // An action through the edge: revoke the agent's grant.
    tmux(&session.0, &["send-keys", "-t", &session.0, "4"]);
    wait_screen(&session.0, "agent:bot");
    tmux(&session.0, &["send-keys", "-t", &session.0, "r"]);
    wait_screen(&session.0, "? [y/N]");
    tmux(&session.0, &["send-keys", "-t", &session.0, "y"]);
    wait_screen(&session.0, "done: revoke grant");
    assert_eq!(
        resolve(&e, &cred).status.code(),
        Some(3),
        "the grant still resolves"
    );
    // Its event, recorded on the hub, comes back through the edge.
    tmux(&session.0, &["send-keys", "-t", &session.0, "1", "G"]);
    wait_screen(&session.0, "grant_revoked");
    quit(&session);
    // A key other than the log's is refused before anything is shown.
    // (ed25519's base point: a valid key, and not this log's.)
    let other = format!("58{}", "66".repeat(31));
    let o = e.cli(&["console", "--remote", "--key", &other], None, None);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("another key"),
        "{}",
        text(&o.stderr)
    );
}

/// The hub's listener with the admin's own certificate (`--tls-cert`, `--tls-key`) rather than
/// a leaf of the hub CA: join tokens pin the admin's CA, an edge enrols against it and is
/// served; a key others can read, or a chain without its CA, stops the hub at start.
#[test]
fn a_hub_with_the_admins_certificate_has_hosts_pin_the_admins_ca() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let t = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "Example Corp internal CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(p, ca_key);
    let mut lp = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = lp.signed_by(&leaf_key, &issuer).unwrap();
    let chain = t.path().join("hub-chain.pem");
    std::fs::write(&chain, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    let key = t.path().join("hub.key");
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let leaf_only = t.path().join("leaf.pem");
    std::fs::write(&leaf_only, leaf.pem()).unwrap();
    let (chain_s, key_s) = (chain.to_str().unwrap(), key.to_str().unwrap());

    let mut hub = Daemon::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let tls = [
        "--tls-cert",
        chain_s,
        "--tls-key",
        key_s,
        "--hub-name",
        "127.0.0.1",
    ];
    let mut args = vec!["--listen", addr.as_str()];
    args.extend(tls);
    // A chain without the CA that issued it: tokens could pin nothing.
    let mut bad = args.clone();
    bad[2 + 1] = leaf_only.to_str().unwrap();
    let (code, err) = hub.refused_start_with(&bad);
    assert_ne!(code, Some(0));
    assert!(err.contains("the CA that issued it"), "{err}");
    // A private key that others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = hub.refused_start_with(&args);
    assert_ne!(code, Some(0));
    assert!(err.contains("readable by others"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    hub.run_with(&args);
    hub.ok(&["project", "create", "demo"], None);
    hub.ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&format!("{CANARY}\n")),
    );
    let v = json(&hub.ok(&["--json", "host", "add", "corp-1"], None));
    let admin_pin = scopehold::daemon::hub::spki_pin(ca.der()).unwrap();
    assert_eq!(v["ca_pin"], admin_pin.as_str(), "{v}");
    let e = edge(&format!("https://{addr}"), v["token"].as_str().unwrap());
    let cred = agent_on(&hub, "bot", "corp-1");
    let o = resolve(&e, &cred);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), CANARY);
}

/// A host's certificate is renewed by its edge before it expires (here: started with a
/// notice longer than the certificate's life, so it is due at once): a new key made on the
/// host, certified by the hub and recorded (`host_renewed`); the edge serves with it, and
/// the old certificate opens nothing. A caller on the host cannot renew it through the edge.
#[test]
fn an_edge_renews_its_hosts_certificate_and_the_old_one_opens_nothing() {
    let (hub, url) = start_hub();
    let mut e = edge(&url, &invite(&hub, "renew-1", None));
    let cred = agent_on(&hub, "bot", "renew-1");
    assert!(resolve(&e, &cred).status.success());
    // A caller's request for a renewal, forwarded by the edge, is refused as a caller's.
    let before = hub.ok(&["--json", "log", "show", "--kind", "host_renewed"], None);
    // (As the host's agent, authenticated: the request reaches the hub as the agent's.)
    let o = std::process::Command::new("curl")
        .args(["-sS", "-X", "POST", "--unix-socket"])
        .arg(&e.socket)
        .args(["-H", "content-type: application/json"])
        .args(["-H", &format!("authorization: Bearer {cred}")])
        .args(["-d", r#"{"csr_pem":"x"}"#])
        .arg("http://scopehold/v1/hosts/renew")
        .output()
        .unwrap();
    assert!(
        text(&o.stdout).contains("not by a caller"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(
        hub.ok(&["--json", "log", "show", "--kind", "host_renewed"], None),
        before
    );
    let old_cert = std::fs::read(e.home.join("host.pem")).unwrap();
    let old_key = std::fs::read(e.home.join("host.key")).unwrap();
    let kept = tempfile::tempdir().unwrap();
    let old_home = kept.path().join("state");
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(&e.home)
        .arg(&old_home)
        .output()
        .unwrap();
    assert!(o.status.success());
    e.stop();

    e.run_with(&["--hub", &url, "--renew-within", "400days"]);
    let new_cert = std::fs::read(e.home.join("host.pem")).unwrap();
    assert_ne!(new_cert, old_cert, "the certificate was not renewed");
    assert_ne!(
        std::fs::read(e.home.join("host.key")).unwrap(),
        old_key,
        "a new key"
    );
    let mode = std::fs::metadata(e.home.join("host.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let o = resolve(&e, &cred);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), CANARY);
    let renewed = json(&hub.ok(&["--json", "log", "show", "--kind", "host_renewed"], None));
    assert_eq!(renewed["event"]["host"], "renew-1", "{renewed}");
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&new_cert).unwrap();
    let sha = scopehold::daemon::hub::cert_sha256(&der);
    assert_eq!(renewed["event"]["cert_sha256"], sha.as_str());
    let h = hosts(&hub);
    assert_eq!(h[0]["cert_sha256"], sha.as_str(), "{h:?}");
    // Not due: started again with the default notice, it keeps the certificate it has.
    e.stop();
    e.run_with(&["--hub", &url]);
    assert_eq!(std::fs::read(e.home.join("host.pem")).unwrap(), new_cert);

    // The old certificate and key, kept aside, open nothing now.
    let mut old = Daemon::new();
    std::fs::remove_dir_all(&old.home).ok();
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(&old_home)
        .arg(&old.home)
        .output()
        .unwrap();
    assert!(o.status.success());
    old.run_with(&["--hub", &url]);
    let o = resolve(&old, &cred);
    assert!(!o.status.success());
    assert!(!text(&o.stdout).contains(CANARY));
    assert!(
        text(&o.stderr).contains("belongs to no enrolled host"),
        "{}",
        text(&o.stderr)
    );
}
