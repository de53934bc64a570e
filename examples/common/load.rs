//! Closed-loop resolve load over keep-alive HTTP/1.1 connections on the unix socket: each
//! agent sends a resolution, waits for its answer, and sends the next.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    pub latencies_us: Vec<f64>,
    /// When each answered resolution's answer came (a failover's gap shows in them).
    pub ok_at: Vec<Instant>,
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

/// One request and its whole answer on a keep-alive connection; the answer's status code.
async fn round_trip(
    stream: &mut tokio::net::UnixStream,
    req: &[u8],
    buf: &mut [u8],
) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    stream.write_all(req).await?;
    let mut have = 0;
    loop {
        let n = stream.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        let Some(head_end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head not utf-8"))?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse().ok())
            })
            .ok_or_else(|| bad("no content-length"))?;
        if have >= head_end + 4 + len {
            return head
                .get(9..12)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad("no status"));
        }
    }
}

/// One agent: a keep-alive connection, a request built once, and a minimal response reader
/// (status line, `content-length`, body), like wrk: the load generator should cost as little
/// CPU as it can, since it shares the machine with the daemon.
///
/// The connection is made and answers one request before the clock starts: the daemon frees
/// a closed connection's per-uid slot only once its task ends, so right after a previous run
/// at the per-uid limit a new connection may be refused for a moment; it is retried here,
/// outside the measurement, instead of failing the run.
async fn agent(
    socket: PathBuf,
    token: String,
    body: String,
    secs: f64,
    ready: std::sync::Arc<tokio::sync::Barrier>,
) -> (u64, u64, Vec<f64>, Vec<Instant>) {
    let req = format!(
        "POST /v1/resolve HTTP/1.1\r\nHost: scopehold\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let mut buf = vec![0u8; 64 * 1024];
    let mut tries = 0;
    let mut stream = loop {
        let attempt = async {
            let mut s = tokio::net::UnixStream::connect(&socket).await?;
            round_trip(&mut s, &req, &mut buf).await?;
            Ok::<_, std::io::Error>(s)
        };
        match attempt.await {
            Ok(s) => break s,
            Err(_) if tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the daemon refused an agent's connection for 2 s: {e}"),
        }
    };
    ready.wait().await;
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let (mut ok, mut err, mut lat, mut ok_at) = (0, 0, Vec::new(), Vec::new());
    while Instant::now() < until {
        let t0 = Instant::now();
        let status = round_trip(&mut stream, &req, &mut buf)
            .await
            .unwrap_or_else(|e| panic!("an agent's request failed: {e}"));
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
        if status == 200 {
            ok += 1;
            ok_at.push(Instant::now());
        } else {
            err += 1;
        }
    }
    (ok, err, lat, ok_at)
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
        let ready = std::sync::Arc::new(tokio::sync::Barrier::new(agents + 1));
        let hs: Vec<_> = (0..agents)
            .map(|_| {
                tokio::spawn(agent(
                    socket.to_path_buf(),
                    token.to_string(),
                    body.clone(),
                    secs,
                    ready.clone(),
                ))
            })
            .collect();
        ready.wait().await;
        let start = Instant::now();
        let mut r = LoadResult {
            ok: 0,
            errors: 0,
            secs: 0.0,
            latencies_us: Vec::new(),
            ok_at: Vec::new(),
        };
        for h in hs {
            let (ok, err, lat, at) = h.await.expect("agent task");
            r.ok += ok;
            r.errors += err;
            r.latencies_us.extend(lat);
            r.ok_at.extend(at);
        }
        r.secs = start.elapsed().as_secs_f64();
        r
    })
}
