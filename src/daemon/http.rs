//! Request bodies in and answers out, both in zeroizing buffers: a body may carry a secret
//! value, an answer a resolved value or a fresh credential.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::api::ApiError;

/// Largest request body: a 64 KiB value, JSON-escaped, with room to spare.
pub const MAX_BODY: usize = 512 * 1024;
/// Time allowed for a request body.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A successful answer: a JSON body, built into a buffer that is zeroized once the response
/// has been sent (answers may hold a secret value or a fresh credential).
#[derive(Debug)]
pub struct Reply(Bytes);

/// A buffer wiped when dropped, as the owner of a response body.
struct Wiped(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Reply {
    /// The body, to send.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// An answer already built in a zeroizing buffer.
    pub fn wrap(buf: Zeroizing<Vec<u8>>) -> Self {
        Reply(Bytes::from_owner(Wiped(buf)))
    }

    /// Serialises `v` straight into a zeroizing buffer: no intermediate `String` or
    /// `serde_json::Value` holds what it carries. `hint` sizes the buffer so that it is
    /// not reallocated (a reallocation would leave an unwiped copy behind).
    pub fn json<T: Serialize>(v: &T, hint: usize) -> Result<Self, ApiError> {
        let mut buf = Zeroizing::new(Vec::with_capacity(hint));
        serde_json::to_writer(&mut *buf, v)
            .map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))?;
        Ok(Reply(Bytes::from_owner(Wiped(buf))))
    }
}

/// A request whose body is not yet read.
#[derive(Debug)]
pub struct RequestBody {
    req: Request<Incoming>,
}

impl RequestBody {
    /// Wraps a request whose route and caller are settled.
    pub fn new(req: Request<Incoming>) -> Self {
        Self { req }
    }
}

impl RequestBody {
    /// Reads and decodes the JSON body: bounded in size and time, collected into a
    /// zeroizing buffer (bodies may carry a secret value), refused if malformed.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        let mut body = Limited::new(self.req.into_body(), MAX_BODY);
        // Content-Length, when sent, sizes the buffer once.
        let hint = usize::try_from(hyper::body::Body::size_hint(&body).lower()).unwrap_or(0);
        let mut buf = Zeroizing::new(Vec::with_capacity(hint.min(MAX_BODY)));
        let collect = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        ApiError::TooLarge(MAX_BODY)
                    } else {
                        ApiError::BadRequest("could not read the request body".into())
                    }
                })?;
                if let Ok(data) = frame.into_data() {
                    // Grow by doubling into a fresh zeroizing buffer, so that no
                    // reallocation leaves an unwiped copy of what was read so far.
                    if buf.len() + data.len() > buf.capacity() {
                        let mut bigger = Zeroizing::new(Vec::with_capacity(
                            (buf.len() + data.len()).max(2 * buf.capacity()),
                        ));
                        bigger.extend_from_slice(&buf);
                        buf = bigger;
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok::<_, ApiError>(())
        };
        match tokio::time::timeout(BODY_TIMEOUT, collect).await {
            Err(_) => return Err(ApiError::Timeout),
            Ok(r) => r?,
        }
        serde_json::from_slice(&buf).map_err(|e| ApiError::BadRequest(json_error(&e)))
    }
}

/// A JSON decoding error, described without echoing the input. serde's own messages quote
/// what they found (`invalid type: string "..."`, `unknown field `...``), which could be a
/// secret put in the wrong field or bytes meant for a terminal. Kept: a missing field's name
/// (ours, from the request type) and the name grammar's messages (ours, fixed text).
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let full = e.to_string();
    // serde_json appends " at line L column C"; the rest is the message proper.
    let msg = full.split(" at line ").next().unwrap_or("");
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Eof => "malformed JSON body: it ends too early".into(),
        Category::Syntax | Category::Io => format!("malformed JSON body: not valid JSON ({at})"),
        Category::Data => {
            if let Some(field) = msg
                .strip_prefix("missing field `")
                .and_then(|f| f.strip_suffix('`'))
                .filter(|f| f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            {
                format!("malformed JSON body: missing field `{field}`")
            } else if crate::domain::NameError::is_message(msg) {
                format!("malformed JSON body: {msg} ({at})")
            } else {
                format!(
                    "malformed JSON body: a field is unknown or has the wrong type or value ({at})"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{GrantCreateRequest, ResolveRequest};

    #[test]
    fn json_errors_never_echo_the_input() {
        let canary = "sk-CANARY-echo";
        for body in [
            format!(r#"{{"secret": "{canary}", "project": "demo"}}"#),
            format!(r#"{{"secret": "openai/prod", "project": "demo", "{canary}": 1}}"#),
            format!(r#"{{"secret": "openai/prod", "project": "demo", "version": "{canary}"}}"#),
            format!(r#"{{"secret": "openai/prod" "{canary}"}}"#),
        ] {
            let e = serde_json::from_str::<ResolveRequest>(&body).unwrap_err();
            let m = json_error(&e);
            assert!(!m.contains(canary) && !m.contains("CANARY"), "{m}");
        }
        let e = serde_json::from_str::<ResolveRequest>(r#"{"secret": "openai/prod"}"#).unwrap_err();
        assert_eq!(
            json_error(&e),
            "malformed JSON body: missing field `project`"
        );
        let e = serde_json::from_str::<GrantCreateRequest>(
            r#"{"identity": "bot", "secret": "Nope", "project": "demo"}"#,
        )
        .unwrap_err();
        assert!(json_error(&e).starts_with("malformed JSON body: invalid secret name: use"));
    }
}
