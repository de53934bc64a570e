//! A small blocking HTTP/1.1 client over the daemon's unix socket, for the CLI. One request
//! per connection (`Connection: close`); the daemon always sends `Content-Length`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Why a request did not get an answer from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the daemon at {path}: {source} (is `scopehold daemon` running?)")]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("bad answer from the daemon: {0}")]
    Protocol(String),
}

/// An answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
    pub fn error_message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

const MAX_ANSWER: usize = 16 << 20;

pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        path: socket.display().to_string(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(unreachable)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(unreachable)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: scopehold\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut req = zeroize::Zeroizing::new(head.into_bytes());
    req.extend_from_slice(body.as_bytes());
    s.write_all(&req).map_err(unreachable)?;
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    s.take(MAX_ANSWER as u64)
        .read_to_end(&mut buf)
        .map_err(|e| ClientError::Protocol(format!("reading the answer: {e}")))?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Protocol("no end of headers".into()))?;
    let head = std::str::from_utf8(&buf[..split])
        .map_err(|_| ClientError::Protocol("non-UTF-8 headers".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol("no status".into()))?;
    let body = &buf[split + 4..];
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ClientError::Protocol(format!("malformed JSON: {e}")))?
    };
    Ok(Answer { status, body })
}
