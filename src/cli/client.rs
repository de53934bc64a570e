//! A small blocking HTTP/1.1 client over the daemon's unix socket, for the CLI and the
//! console. One request per connection (`Connection: close`); the daemon always sends
//! `Content-Length`.
//!
//! [`call`] is typed by [`Endpoint`]: the route's method, path, request and response come
//! from the API's one table. Requests and answers are held in zeroizing buffers sized once,
//! since they may carry a secret value or a credential.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::api::wire::{ErrorBody, ErrorDetail};
use crate::api::{Endpoint, Method};

/// Why a request did not get an answer from the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answered on the socket. The message names the socket and the likely fix,
    /// once (the cause is part of the message, not a `source` that `{:#}` would repeat).
    #[error(
        "cannot reach the daemon at {path}: {cause}; {}",
        unreachable_hint(cause)
    )]
    Unreachable {
        /// The socket.
        path: String,
        /// What the connection said.
        cause: std::io::Error,
    },
    /// Something answered, not in the daemon's protocol.
    #[error("bad answer from the daemon: {0}")]
    Protocol(String),
    /// The process on the socket runs as another uid than the daemon's: nothing was sent.
    #[error(
        "refusing to talk to {path}: the process listening there runs as uid {found}, not as the daemon's uid {expected}; nothing was sent (another user's program may have taken the socket's place; if the daemon really runs as uid {found}, pass --daemon-uid {found})"
    )]
    WrongPeer {
        /// The socket.
        path: String,
        /// The peer's uid, from the kernel.
        found: u32,
        /// The uid the daemon should run as.
        expected: u32,
    },
}

/// What to do when the socket cannot be reached, by what the connection said.
fn unreachable_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "this user may not use that socket: the daemon lets other uids in with `scopehold daemon --socket-group GROUP`, or set SCOPEHOLD_SOCKET (or --socket) to a socket you may use"
        }
        _ => {
            "is the daemon running? Start it with `scopehold daemon`, or set SCOPEHOLD_SOCKET (or --socket) to where it listens"
        }
    }
}

/// The uid a daemon is expected to run as: `explicit` (`--daemon-uid`,
/// `SCOPEHOLD_DAEMON_UID`), else the owner of the state directory `home` (the daemon runs as
/// its state directory's owner), else the owner of the socket's directory when nobody else
/// can write in it (only that owner, or root, can have made a socket there: an agent under
/// its own uid, with no state directory of its own, reaches `/run/scopehold` this way), else
/// this process's own uid.
pub fn expected_daemon_uid(explicit: Option<u32>, home: &Path, socket: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let private_dir_owner = || {
        let dir = socket.parent()?;
        let m = std::fs::symlink_metadata(dir).ok()?;
        (m.is_dir() && m.mode() & 0o022 == 0).then_some(m.uid())
    };
    explicit
        .or_else(|| std::fs::symlink_metadata(home).ok().map(|m| m.uid()))
        .or_else(private_dir_owner)
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw())
}

/// The uid of the process listening on `socket`, from the kernel's peer credentials.
pub fn peer_uid(socket: &Path) -> Result<u32, ClientError> {
    let s = UnixStream::connect(socket).map_err(|cause| ClientError::Unreachable {
        path: socket.display().to_string(),
        cause,
    })?;
    nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.uid())
        .map_err(|e| ClientError::Protocol(format!("reading the socket's peer credentials: {e}")))
}

/// Checks, from the kernel's peer credentials (`SO_PEERCRED`, taken when the daemon called
/// `listen`), that the process on the other end runs as `expected`.
fn check_peer(s: &UnixStream, socket: &Path, expected: u32) -> Result<(), ClientError> {
    let cred = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| {
            ClientError::Protocol(format!("reading the socket's peer credentials: {e}"))
        })?;
    let found = cred.uid();
    if found != expected {
        return Err(ClientError::WrongPeer {
            path: socket.display().to_string(),
            found,
            expected,
        });
    }
    Ok(())
}

/// Why a typed call did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon answered with an error.
    #[error("{}", refused_text(*status, error))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The stable code and the message.
        error: ErrorDetail,
    },
}

/// A refusal for people: `CODE (STATUS): MESSAGE`; a body over the daemon's limit (413) as
/// `value too large (limit N bytes)`, N from the daemon's message.
fn refused_text(status: u16, e: &ErrorDetail) -> String {
    if status == 413 {
        let limit = e
            .message
            .split_whitespace()
            .find_map(|w| w.parse::<u64>().ok());
        return match limit {
            Some(n) => format!("value too large (limit {n} bytes)"),
            None => "value too large".into(),
        };
    }
    format!("{} ({status}): {}", e.code, e.message)
}

/// An answer: status and the raw body, in a zeroizing buffer.
#[derive(Debug)]
pub struct RawAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Zeroizing<Vec<u8>>,
}

const MAX_ANSWER: usize = 16 << 20;

/// Counts what a serialiser writes, so the real buffer is allocated once at its final size.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `v` as JSON in a zeroizing buffer that is never reallocated.
fn to_json<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let bad = |e: serde_json::Error| ClientError::Protocol(format!("encoding the request: {e}"));
    let mut n = Counter(0);
    serde_json::to_writer(&mut n, v).map_err(bad)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(n.0));
    serde_json::to_writer(&mut *buf, v).map_err(bad)?;
    Ok(buf)
}

/// One request, head and body, in a zeroizing buffer of exact size (it carries the
/// credential, and the body may carry a value).
fn request_bytes(
    method: Method,
    path: &str,
    body: &[u8],
    token: Option<&str>,
    close: bool,
) -> Zeroizing<Vec<u8>> {
    let head = format!(
        "{} {path} HTTP/1.1\r\nHost: scopehold\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n",
        method.as_str(),
        if close { "Connection: close\r\n" } else { "" },
        body.len()
    );
    let auth = token.map_or(0, |t| t.len() + 32);
    let mut req = Zeroizing::new(Vec::with_capacity(head.len() + auth + 2 + body.len()));
    req.extend_from_slice(head.as_bytes());
    if let Some(t) = token {
        req.extend_from_slice(b"Authorization: Bearer ");
        req.extend_from_slice(t.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

/// Sends one request and reads the whole answer.
pub fn request_raw(
    socket: &Path,
    method: Method,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Result<RawAnswer, ClientError> {
    request_raw_expecting(socket, None, method, path, body, token)
}

/// As [`request_raw`], first checking that the socket's peer runs as uid `expect` (when
/// given): on a mismatch nothing at all is written to the socket.
pub fn request_raw_expecting(
    socket: &Path,
    expect: Option<u32>,
    method: Method,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Result<RawAnswer, ClientError> {
    request_raw_within(
        socket,
        expect,
        method,
        path,
        body,
        token,
        Some(READ_TIMEOUT),
    )
}

/// How long an ordinary answer may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// As [`request_raw_expecting`], waiting for the answer up to `read_timeout` (`None`: as long
/// as it takes, for a long poll).
fn request_raw_within(
    socket: &Path,
    expect: Option<u32>,
    method: Method,
    path: &str,
    body: &[u8],
    token: Option<&str>,
    read_timeout: Option<Duration>,
) -> Result<RawAnswer, ClientError> {
    let unreachable = |cause| ClientError::Unreachable {
        path: socket.display().to_string(),
        cause,
    };
    let mut s = UnixStream::connect(socket).map_err(unreachable)?;
    if let Some(uid) = expect {
        check_peer(&s, socket, uid)?;
    }
    s.set_read_timeout(read_timeout).map_err(unreachable)?;
    let req = request_bytes(method, path, body, token, true);
    // The daemon may answer before the request is all written (413 for a body over its
    // limit) and close: the write then fails, but the answer is there to be read.
    let sent = s.write_all(&req);
    drop(req);
    let mut buf = Zeroizing::new(Vec::with_capacity(64 * 1024));
    let read = s.take(MAX_ANSWER as u64).read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n");
    // A daemon that answers early and closes with the rest of the request unread makes the
    // kernel fail the read after its answer (ECONNRESET on a unix socket): an answer that is
    // all here, its head and `content-length` bytes of body, stands whatever the write and
    // the last read said.
    let whole = split.is_some_and(|at| answer_is_whole(&buf, at));
    let split = match (sent, read, split) {
        (_, Ok(_), Some(split)) => split,
        (_, Err(_), Some(split)) if whole => split,
        (Err(e), _, _) => {
            return Err(ClientError::Protocol(format!(
                "the daemon closed the connection before the request was sent, with no answer: {e}"
            )));
        }
        (Ok(()), Err(e), _) => {
            return Err(ClientError::Protocol(format!("reading the answer: {e}")));
        }
        (Ok(()), Ok(_), None) => return Err(ClientError::Protocol("no end of headers".into())),
    };
    let head = std::str::from_utf8(&buf[..split])
        .map_err(|_| ClientError::Protocol("non-UTF-8 headers".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol("no status".into()))?;
    let mut body = Zeroizing::new(Vec::with_capacity(buf.len() - split - 4));
    body.extend_from_slice(&buf[split + 4..]);
    Ok(RawAnswer { status, body })
}

/// Whether `buf` holds a whole answer: a head ending at `split` with a `content-length`, and
/// that many bytes after it.
fn answer_is_whole(buf: &[u8], split: usize) -> bool {
    let Ok(head) = std::str::from_utf8(&buf[..split]) else {
        return false;
    };
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|n| buf.len() >= split + 4 + n)
}

/// Calls an endpoint: its method and path from the route table, its request and response
/// types from [`Endpoint`].
pub fn call<E: Endpoint>(
    socket: &Path,
    req: &E::Request,
    token: Option<&str>,
) -> Result<E::Response, CallError> {
    call_expecting::<E>(socket, None, req, token)
}

/// As [`call`], first checking that the socket's peer runs as uid `expect` (when given).
pub fn call_expecting<E: Endpoint>(
    socket: &Path,
    expect: Option<u32>,
    req: &E::Request,
    token: Option<&str>,
) -> Result<E::Response, CallError> {
    call_within::<E>(socket, expect, req, token, Some(READ_TIMEOUT))
}

/// As [`call_expecting`], waiting as long as the answer takes: for a long poll
/// (`/v1/watch`), which the daemon answers when something changes or when it stops.
pub fn call_waiting<E: Endpoint>(
    socket: &Path,
    expect: Option<u32>,
    req: &E::Request,
    token: Option<&str>,
) -> Result<E::Response, CallError> {
    call_within::<E>(socket, expect, req, token, None)
}

fn call_within<E: Endpoint>(
    socket: &Path,
    expect: Option<u32>,
    req: &E::Request,
    token: Option<&str>,
    read_timeout: Option<Duration>,
) -> Result<E::Response, CallError> {
    let spec = E::ROUTE.spec();
    let body = match spec.method {
        Method::Get => Zeroizing::new(Vec::new()),
        Method::Post => to_json(req)?,
    };
    let a = request_raw_within(
        socket,
        expect,
        spec.method,
        spec.path,
        &body,
        token,
        read_timeout,
    )?;
    drop(body);
    if a.status == 200 {
        return serde_json::from_slice(&a.body).map_err(|e| {
            CallError::Client(ClientError::Protocol(format!("malformed answer: {e}")))
        });
    }
    let error = serde_json::from_slice::<ErrorBody>(&a.body)
        .map(|b| b.error)
        .unwrap_or_else(|_| ErrorDetail {
            code: "error".into(),
            message: String::new(),
        });
    Err(CallError::Refused {
        status: a.status,
        error,
    })
}

/// An untyped answer: status and JSON body (for tests and scripts that speak raw JSON).
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed.
    pub body: Value,
}

impl Answer {
    /// The stable error code, if this is an error.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
    /// The error message, if this is an error.
    pub fn error_message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// An untyped request: any method and path, any JSON body.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        m => return Err(ClientError::Protocol(format!("unsupported method {m}"))),
    };
    let body = match body {
        Some(b) => to_json(b)?,
        None => Zeroizing::new(Vec::new()),
    };
    let a = request_raw(socket, method, path, &body, token)?;
    let body = if a.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&a.body)
            .map_err(|e| ClientError::Protocol(format!("malformed JSON: {e}")))?
    };
    Ok(Answer {
        status: a.status,
        body,
    })
}

/// A held answer (`POST /v1/runs`) after its first line: the connection, which the caller
/// keeps open for as long as what it stands for should last.
#[derive(Debug)]
pub struct Held {
    /// The rest of the answer: chunks of heartbeats until the daemon ends it.
    pub rest: std::io::BufReader<UnixStream>,
}

impl Held {
    /// Blocks until the daemon ends the answer or the connection breaks.
    pub fn wait_end(mut self) {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            match self.rest.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                // `0\r\n`: the last chunk.
                Ok(_) if line.trim() == "0" => return,
                Ok(_) => {}
            }
        }
    }
}

/// Calls an endpoint whose answer is held open: its status, then (on 200) its first line.
pub fn call_held<E: Endpoint>(
    socket: &Path,
    expect: Option<u32>,
    req: &E::Request,
    token: Option<&str>,
) -> Result<(E::Response, Held), CallError> {
    use std::io::BufRead;
    let unreachable = |cause| ClientError::Unreachable {
        path: socket.display().to_string(),
        cause,
    };
    let proto = |m: &str| CallError::Client(ClientError::Protocol(m.to_string()));
    let spec = E::ROUTE.spec();
    let body = to_json(req)?;
    let s = UnixStream::connect(socket).map_err(unreachable)?;
    if let Some(uid) = expect {
        check_peer(&s, socket, uid)?;
    }
    // Not `Connection: close`: the answer is held open for as long as the run lasts.
    let out = request_bytes(spec.method, spec.path, &body, token, false);
    (&s).write_all(&out).map_err(unreachable)?;
    drop(out);
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(unreachable)?;
    let mut r = std::io::BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)
        .map_err(|_| proto("no status line"))?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| proto("no status"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut h = String::new();
        r.read_line(&mut h)
            .map_err(|_| proto("headers cut short"))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    if code != 200 {
        let mut b = vec![0u8; length.unwrap_or(0).min(MAX_ANSWER)];
        r.read_exact(&mut b)
            .map_err(|_| proto("error body cut short"))?;
        let error = serde_json::from_slice::<ErrorBody>(&b)
            .map(|b| b.error)
            .unwrap_or_else(|_| ErrorDetail {
                code: "error".into(),
                message: String::new(),
            });
        return Err(CallError::Refused {
            status: code,
            error,
        });
    }
    if !chunked {
        return Err(proto("a held answer must be chunked"));
    }
    // Chunks until the first line is complete.
    let mut first = Zeroizing::new(Vec::with_capacity(4096));
    while !first.ends_with(b"\n") {
        let mut size = String::new();
        r.read_line(&mut size)
            .map_err(|_| proto("chunk cut short"))?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| proto("bad chunk size"))?;
        if n == 0 || first.len() + n > MAX_ANSWER {
            return Err(proto("the held answer ended before its first line"));
        }
        let mut chunk = Zeroizing::new(vec![0u8; n + 2]);
        r.read_exact(&mut chunk)
            .map_err(|_| proto("chunk cut short"))?;
        if first.len() + n > first.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(2 * (first.len() + n)));
            bigger.extend_from_slice(&first);
            first = bigger;
        }
        first.extend_from_slice(&chunk[..n]);
    }
    // Heartbeats come every second; the hold waits on them without a deadline.
    r.get_ref()
        .set_read_timeout(None)
        .map_err(|e| proto(&format!("socket: {e}")))?;
    let resp = serde_json::from_slice(&first)
        .map_err(|e| CallError::Client(ClientError::Protocol(format!("malformed answer: {e}"))))?;
    drop(first);
    Ok((resp, Held { rest: r }))
}
