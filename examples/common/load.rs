//! Closed-loop resolve load over keep-alive HTTP/1.1 connections on the unix socket: each
//! agent sends a resolution, waits for its answer, and sends the next.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    pub latencies_us: Vec<f64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    pub fn pct(&self, p: f64) -> f64 {
        let mut v = self.latencies_us.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    }
}

/// One agent: a keep-alive connection, a request built once, and a minimal response reader
/// (status line, `content-length`, body), like wrk: the load generator should cost as little
/// CPU as it can, since it shares the machine with the daemon.
async fn agent(
    socket: PathBuf,
    token: String,
    body: String,
    until: Instant,
) -> (u64, u64, Vec<f64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("connect");
    let req = format!(
        "POST /v1/resolve HTTP/1.1\r\nHost: scopehold\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let (mut ok, mut err, mut lat) = (0, 0, Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < until {
        let t0 = Instant::now();
        stream.write_all(&req).await.expect("write");
        let mut have = 0;
        let status;
        loop {
            let n = stream.read(&mut buf[have..]).await.expect("read");
            assert!(n > 0, "daemon closed the connection");
            have += n;
            let Some(head_end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&buf[..head_end]).expect("utf-8 head");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().expect("length"))
                })
                .expect("content-length");
            if have >= head_end + 4 + len {
                status = head.get(9..12).unwrap_or("").to_string();
                break;
            }
        }
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
        if status == "200" {
            ok += 1;
        } else {
            err += 1;
        }
    }
    (ok, err, lat)
}

/// Runs `agents` closed-loop agents for `secs` on a single-threaded runtime (like wrk with
/// one thread), so the load generator takes at most one core.
pub fn run(
    socket: &Path,
    token: &str,
    secret: &str,
    project: &str,
    agents: usize,
    secs: f64,
) -> LoadResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = serde_json::json!({"secret": secret, "project": project}).to_string();
    rt.block_on(async {
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(secs);
        let hs: Vec<_> = (0..agents)
            .map(|_| {
                tokio::spawn(agent(
                    socket.to_path_buf(),
                    token.to_string(),
                    body.clone(),
                    until,
                ))
            })
            .collect();
        let mut r = LoadResult {
            ok: 0,
            errors: 0,
            secs: 0.0,
            latencies_us: Vec::new(),
        };
        for h in hs {
            let (ok, err, lat) = h.await.expect("agent task");
            r.ok += ok;
            r.errors += err;
            r.latencies_us.extend(lat);
        }
        r.secs = start.elapsed().as_secs_f64();
        r
    })
}
