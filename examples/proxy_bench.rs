//! The injecting proxy under load, against its floor, in one run: the same HTTPS upstream
//! on loopback called directly (TLS, keep-alive) and through the real daemon's loopback
//! proxy listener (plain HTTP in, the decision and its durable `proxy_call` event, the key
//! injected, TLS out on a pooled connection), at 1 and at N concurrent agents.
//!
//! `cargo build --release && cargo run --release --example proxy_bench -- --bin target/release/scopehold [--agents 16] [--secs 5] [--rounds 3]`
//!
//! The daemon is the real binary in its own process with a fresh state directory on disk
//! (fdatasync is real); the upstream and the load generator share this process.
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/test_tls.rs"]
mod test_tls;

const KEY: &str = "sk-bench-0123456789abcdef0123456789abcdef";

fn upstream(dir: &Path) -> (u16, PathBuf, tokio::runtime::Runtime) {
    let (ca_pem, acceptor) = test_tls::localhost_acceptor(dir, "bench-ca.pem");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = l.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let ok = req.headers().get("x-api-key").is_some_and(|v| v == KEY);
                        let mut r = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(if ok {
                                b"{\"ok\":true,\"id\":\"chatcmpl-bench\"}"
                            } else {
                                b"{\"ok\":false}"
                            }),
                        ));
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca_pem, rt)
}

/// Reads one HTTP/1.1 response with a Content-Length; returns its status.
fn read_response(r: &mut impl BufRead) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_string())
        {
            len = v.parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    status
}

#[derive(Clone, Copy)]
enum Path2 {
    Direct,
    Proxied,
}

struct Run {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn load(
    how: Path2,
    agents: usize,
    secs: f64,
    upstream_port: u16,
    proxy_port: u16,
    tls: &Arc<rustls::ClientConfig>,
    cred: &str,
) -> Run {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..agents)
        .map(|_| {
            let (tls, cred) = (tls.clone(), cred.to_string());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                match how {
                    Path2::Direct => {
                        let tcp = TcpStream::connect(("127.0.0.1", upstream_port)).unwrap();
                        tcp.set_nodelay(true).unwrap();
                        let conn = rustls::ClientConnection::new(
                            tls,
                            "localhost".try_into().unwrap(),
                        )
                        .unwrap();
                        let mut s = BufReader::new(rustls::StreamOwned::new(conn, tcp));
                        let req = format!(
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:{upstream_port}\r\nx-api-key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                        );
                        while Instant::now() < stop {
                            let t = Instant::now();
                            s.get_mut().write_all(req.as_bytes()).unwrap();
                            s.get_mut().flush().unwrap();
                            if read_response(&mut s) != 200 {
                                errors += 1;
                            }
                            lat.push(t.elapsed().as_micros() as u32);
                        }
                    }
                    Path2::Proxied => {
                        let tcp = TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
                        tcp.set_nodelay(true).unwrap();
                        let mut w = tcp.try_clone().unwrap();
                        let mut r = BufReader::new(tcp);
                        let req = format!(
                            "POST /v1/proxy/bench/acme/prod/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {cred}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                        );
                        while Instant::now() < stop {
                            let t = Instant::now();
                            w.write_all(req.as_bytes()).unwrap();
                            if read_response(&mut r) != 200 {
                                errors += 1;
                            }
                            lat.push(t.elapsed().as_micros() as u32);
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64;
    Run {
        rate: all.len() as f64 / secs,
        p50: pct(0.5),
        p99: pct(0.99),
        errors,
    }
}

fn cli(bin: &Path, home: &Path, sock: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new(bin);
    c.arg("--home")
        .arg(home)
        .arg("--socket")
        .arg(sock)
        .args(args);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut ch = c.spawn().unwrap();
    if let Some(s) = stdin {
        ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(ch.stdin.take());
    let o = ch.wait_with_output().unwrap();
    assert!(o.status.success(), "{args:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// The physical floor of a durable event: p50 of one small append + fdatasync, on the
/// file system of the daemon's state directory.
fn fdatasync_floor(dir: &Path) -> f64 {
    let path = dir.join("fsync-floor");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let mut lat: Vec<f64> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&[b'x'; 200]).unwrap();
            f.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let _ = std::fs::remove_file(path);
    median(std::mem::take(&mut lat))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (mut bin, mut agents, mut secs, mut rounds) = (
        PathBuf::from("target/release/scopehold"),
        16usize,
        5.0,
        3usize,
    );
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("missing value");
        match a.as_str() {
            "--bin" => bin = val().into(),
            "--agents" => agents = val().parse().unwrap(),
            "--secs" => secs = val().parse().unwrap(),
            "--rounds" => rounds = val().parse().unwrap(),
            _ => panic!("usage: proxy_bench [--bin PATH] [--agents N] [--secs S] [--rounds R]"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (up_port, ca_pem, _rt) = upstream(dir.path());
    let proxy_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = dir.path().join("state");
    let sock = dir.path().join("s.sock");
    let listen = format!("127.0.0.1:{proxy_port}");
    let mut daemon = Command::new(&bin)
        .arg("--home")
        .arg(&home)
        .arg("--socket")
        .arg(&sock)
        .args(["daemon", "--proxy-listen", &listen, "--upstream-ca"])
        .arg(&ca_pem)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = |a: &[&str], i: Option<&str>| cli(&bin, &home, &sock, a, i);
    c(&["project", "create", "bench"], None);
    let host = format!("localhost:{up_port}");
    c(
        &[
            "provider",
            "add",
            "acme",
            "--host",
            &host,
            "--header",
            "x-api-key",
        ],
        None,
    );
    c(
        &["secret", "put", "acme/prod", "--project", "bench"],
        Some(KEY),
    );
    let out = c(&["--json", "agent", "create", "bench"], None);
    let cred = serde_json::from_str::<serde_json::Value>(&out).unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_string();
    c(
        &[
            "grant",
            "create",
            "bench",
            "acme/prod",
            "--project",
            "bench",
        ],
        None,
    );

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    // Warm both paths (TLS sessions, the daemon's pool, the data key).
    load(Path2::Direct, agents, 0.5, up_port, proxy_port, &tls, &cred);
    load(
        Path2::Proxied,
        agents,
        0.5,
        up_port,
        proxy_port,
        &tls,
        &cred,
    );
    let mut m: [Vec<f64>; 8] = Default::default();
    let mut errors = 0;
    for round in 0..rounds {
        let d1 = load(Path2::Direct, 1, secs, up_port, proxy_port, &tls, &cred);
        let p1 = load(Path2::Proxied, 1, secs, up_port, proxy_port, &tls, &cred);
        let dn = load(
            Path2::Direct,
            agents,
            secs,
            up_port,
            proxy_port,
            &tls,
            &cred,
        );
        let pn = load(
            Path2::Proxied,
            agents,
            secs,
            up_port,
            proxy_port,
            &tls,
            &cred,
        );
        let floor = fdatasync_floor(dir.path());
        errors += d1.errors + p1.errors + dn.errors + pn.errors;
        println!(
            "round {round}: c1 p50 direct={:.0}us proxied={:.0}us added={:.0}us (p99 {:.0}/{:.0}) fdatasync floor={floor:.0}us | c{agents} direct={:.0}/s proxied={:.0}/s (p50 {:.0}us, p99 {:.0}us)",
            d1.p50,
            p1.p50,
            p1.p50 - d1.p50,
            d1.p99,
            p1.p99,
            dn.rate,
            pn.rate,
            pn.p50,
            pn.p99
        );
        for (i, v) in [
            d1.p50,
            p1.p50,
            p1.p50 - d1.p50,
            dn.rate,
            pn.rate,
            pn.p50,
            pn.p99,
            floor,
        ]
        .into_iter()
        .enumerate()
        {
            m[i].push(v);
        }
    }
    let [a, b, c_, d, e, f, g, h] = m.map(median);
    println!(
        "SUMMARY proxy c1_p50_direct_us={a:.0} c1_p50_proxied_us={b:.0} c1_p50_added_us={c_:.0} fdatasync_floor_us={h:.0} added_beyond_floor_us={:.0} c{agents}_direct_per_s={d:.0} c{agents}_proxied_per_s={e:.0} c{agents}_proxied_p50_us={f:.0} c{agents}_proxied_p99_us={g:.0} errors={errors} rounds={rounds} (medians)",
        c_ - h
    );
    // The log holds one proxy_call per proxied request, each durable before its forward.
    let _ = daemon.kill();
    let _ = daemon.wait();
}
