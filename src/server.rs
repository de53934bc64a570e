//! The local socket: HTTP/1.1 with JSON bodies, versioned under `/v1/`.
//!
//! Every request is bounded before it touches state: header bytes and time, body bytes and
//! time, connections. Identity comes from the bearer credential and the kernel's peer
//! credentials of the connection, never from request fields. Errors are
//! `{"error":{"code":...,"message":...}}` with a stable code.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use crate::core::{ApiError, Core, Peer, new_credential};
use crate::domain::{self, Caller, GrantSpec};
use crate::seal::MAX_VALUE_LEN;

/// Largest request body: a 64 KiB value, JSON-escaped, with room to spare.
pub const MAX_BODY: usize = 512 * 1024;
/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 1024;

type Resp = Response<Full<Bytes>>;

fn json_response(status: u16, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Resp {
    json_response(
        e.status,
        &json!({"error": {"code": e.code, "message": e.message}}),
    )
}

/// Serves connections until `shutdown` completes, then stops accepting and lets in-flight
/// requests finish (bounded by `drain`).
pub async fn run(
    listener: UnixListener,
    core: Arc<Core>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached; refusing a connection");
            continue;
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                pid: c.pid(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials; refusing a connection");
                continue;
            }
        };
        let core = core.clone();
        let service = hyper::service::service_fn(move |req| {
            let core = core.clone();
            async move { Ok::<_, Infallible>(handle(&core, peer, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {drain:?}; stopping anyway");
    }
}

async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Err(_) => {
            return Err(ApiError::new(
                408,
                "timeout",
                "request body not received in time",
            ));
        }
        Ok(Err(e)) => {
            return Err(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ApiError::new(
                        413,
                        "too_large",
                        format!("request body over {MAX_BODY} bytes"),
                    )
                } else {
                    ApiError::new(400, "invalid_request", "could not read the request body")
                },
            );
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json's message names the field and the problem, never the input's content.
        ApiError::new(400, "invalid_request", format!("malformed JSON body: {e}"))
    })
}

fn bearer(req: &Request<Incoming>) -> Result<Option<String>, ApiError> {
    match req.headers().get(AUTHORIZATION) {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| ApiError::unauthenticated())?;
            match v.strip_prefix("Bearer ") {
                Some(t) if !t.is_empty() => Ok(Some(t.trim().to_string())),
                _ => Err(ApiError::unauthenticated()),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveReq {
    secret: String,
    project: String,
    version: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameReq {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretPutReq {
    name: String,
    projects: Vec<String>,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateReq {
    name: String,
    value: String,
    grace_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentReq {
    name: String,
    uid: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberReq {
    name: String,
    uid: u32,
    #[serde(default)]
    admin: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantReq {
    identity: String,
    secret: String,
    project: String,
    ttl_secs: Option<u64>,
    max_uses: Option<u64>,
    rate_per_min: Option<u32>,
    uid: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdReq {
    id: u64,
}

async fn handle(core: &Core, peer: Peer, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match route(core, peer, req).await {
        Ok(Reply::Json(v)) => json_response(200, &v),
        Ok(Reply::Secret(body)) => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            tracing::info!(%method, %path, uid = peer.uid, status = e.status, code = e.code, "request refused");
            error_response(&e)
        }
    }
}

/// A successful answer: ordinary JSON, or a body holding a secret value, built straight into a
/// buffer that is zeroized when the response has been sent.
enum Reply {
    Json(Value),
    Secret(Bytes),
}

/// A buffer wiped when dropped, as the owner of a response body.
struct Wiped(zeroize::Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `{"value":...,"version":N,"event":SEQ}` written into a zeroizing buffer: no intermediate
/// `String` or `serde_json::Value` holds the value.
fn secret_body(value: &str, version: u32, event: u64) -> Bytes {
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(value.len() + 64));
    buf.extend_from_slice(b"{\"value\":");
    // Writing a &str into a Vec cannot fail.
    serde_json::to_writer(&mut *buf, value).expect("writing JSON into a Vec");
    buf.extend_from_slice(format!(",\"version\":{version},\"event\":{event}}}").as_bytes());
    Bytes::from_owner(Wiped(buf))
}

async fn route(core: &Core, peer: Peer, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let m = req.method().clone();
    let path = req.uri().path().to_string();
    let known = [
        "/v1/health",
        "/v1/resolve",
        "/v1/whoami",
        "/v1/projects",
        "/v1/secrets",
        "/v1/secrets/rotate",
        "/v1/secrets/revoke",
        "/v1/agents",
        "/v1/agents/revoke",
        "/v1/agents/reissue",
        "/v1/members",
        "/v1/grants",
        "/v1/grants/revoke",
    ];
    if !known.contains(&path.as_str()) {
        return Err(ApiError::new(404, "not_found", format!("no route {path}")));
    }
    if path == "/v1/health" {
        return Ok(Reply::Json(health(core)));
    }
    let token = bearer(&req)?;
    let caller = core.authenticate(token.as_deref(), peer).await?;
    match (&m, path.as_str()) {
        (&Method::POST, "/v1/resolve") => {
            let r: ResolveReq = read_json(req).await?;
            if !domain::valid_secret_name(&r.secret) || !domain::valid_name(&r.project) {
                return Err(domain::Refusal::invalid("invalid secret or project name").into());
            }
            let res = core
                .resolve(&caller, &r.secret, &r.project, r.version)
                .await?;
            let value = std::str::from_utf8(&res.value)
                .map_err(|_| ApiError::new(500, "internal", "stored value is not UTF-8"))?;
            Ok(Reply::Secret(secret_body(value, res.version, res.event)))
        }
        (&Method::GET, "/v1/whoami") => {
            let st = core.snapshot();
            let grants: Vec<Value> = st
                .grants
                .iter()
                .filter(|(_, g)| g.identity == caller.identity && !g.revoked)
                .map(|(id, g)| json!({"id": id, "secret": g.secret, "project": g.project}))
                .collect();
            Ok(Reply::Json(
                json!({"identity": caller.identity, "uid": caller.uid, "grants": grants}),
            ))
        }
        _ => admin(core, &caller, m, &path, req).await.map(Reply::Json),
    }
}

fn health(core: &Core) -> Value {
    let s = core.log().status();
    json!({
        "status": if s.poisoned.is_some() { "log_unavailable" } else { "ok" },
        "log": {
            "events": s.size,
            "head": hex::encode(s.head),
            "checkpoint_size": s.checkpoint.body.size,
            "error": s.poisoned,
        }
    })
}

async fn admin(
    core: &Core,
    caller: &Caller,
    m: Method,
    path: &str,
    req: Request<Incoming>,
) -> Result<Value, ApiError> {
    core.require_admin(caller)?;
    let by = caller.identity.clone();
    match (m, path) {
        (Method::GET, p) => list(core, p).ok_or_else(|| {
            ApiError::new(
                405,
                "method_not_allowed",
                "method not allowed on this route",
            )
        }),
        (Method::POST, "/v1/projects") => {
            let r: NameReq = read_json(req).await?;
            let (_, seq) = core
                .change(|st, _| Ok(((), domain::decide_project_create(st, &r.name, &by)?)))
                .await?;
            Ok(json!({"project": r.name, "event": seq}))
        }
        (Method::POST, "/v1/secrets") => {
            let r: SecretPutReq = read_json(req).await?;
            domain::check_secret_name(&r.name)?;
            check_value(&r.value)?;
            let sealed = seal(core, &r.name, 1, &r.value)?;
            let (_, seq) = core
                .change(|st, _| {
                    Ok((
                        (),
                        domain::decide_secret_put(st, &r.name, &r.projects, sealed, &by)?,
                    ))
                })
                .await?;
            Ok(json!({"secret": r.name, "version": 1, "event": seq}))
        }
        (Method::POST, "/v1/secrets/rotate") => {
            let r: RotateReq = read_json(req).await?;
            check_value(&r.value)?;
            // Seal for the version that comes next, then decide under the lock; a concurrent
            // rotation in between is refused (409) rather than mis-numbered.
            let version = domain::next_version(&core.snapshot(), &r.name)?;
            let sealed = seal(core, &r.name, version, &r.value)?;
            let grace = r.grace_secs.map(|s| s.saturating_mul(1000));
            let (_, seq) = core
                .change(|st, now| {
                    Ok((
                        (),
                        domain::decide_secret_rotate(
                            st, &r.name, version, sealed, grace, now, &by,
                        )?,
                    ))
                })
                .await?;
            Ok(json!({"secret": r.name, "version": version, "event": seq}))
        }
        (Method::POST, "/v1/secrets/revoke") => {
            let r: NameReq = read_json(req).await?;
            let (_, seq) = core
                .change(|st, _| Ok(((), domain::decide_secret_revoke(st, &r.name, &by)?)))
                .await?;
            Ok(json!({"secret": r.name, "revoked": true, "event": seq}))
        }
        (Method::POST, "/v1/agents") => {
            let r: AgentReq = read_json(req).await?;
            let (cred, hash) = new_credential(core.master())?;
            let (_, seq) = core
                .change(|st, _| {
                    Ok((
                        (),
                        domain::decide_agent_create(st, &r.name, r.uid, hash, &by)?,
                    ))
                })
                .await?;
            Ok(json!({"agent": r.name, "credential": cred.as_str(), "event": seq}))
        }
        (Method::POST, "/v1/agents/reissue") => {
            let r: NameReq = read_json(req).await?;
            let (cred, hash) = new_credential(core.master())?;
            let (_, seq) = core
                .change(|st, _| Ok(((), domain::decide_agent_reissue(st, &r.name, hash, &by)?)))
                .await?;
            Ok(json!({"agent": r.name, "credential": cred.as_str(), "event": seq}))
        }
        (Method::POST, "/v1/agents/revoke") => {
            let r: NameReq = read_json(req).await?;
            let (_, seq) = core
                .change(|st, _| Ok(((), domain::decide_agent_revoke(st, &r.name, &by)?)))
                .await?;
            Ok(json!({"agent": r.name, "revoked": true, "event": seq}))
        }
        (Method::POST, "/v1/members") => {
            let r: MemberReq = read_json(req).await?;
            let (_, seq) = core
                .change(|st, _| {
                    Ok((
                        (),
                        domain::decide_member_add(st, &r.name, r.uid, r.admin, &by)?,
                    ))
                })
                .await?;
            Ok(json!({"member": r.name, "event": seq}))
        }
        (Method::POST, "/v1/grants") => {
            let r: GrantReq = read_json(req).await?;
            let spec = GrantSpec {
                identity: r.identity,
                secret: r.secret,
                project: r.project,
                ttl_ms: r.ttl_secs.map(|s| s.saturating_mul(1000)),
                max_uses: r.max_uses,
                rate_per_min: r.rate_per_min,
                uid: r.uid,
            };
            let (id, seq) = core
                .change(|st, now| domain::decide_grant_create(st, &spec, now, &by))
                .await?;
            Ok(json!({"grant": id, "event": seq}))
        }
        (Method::POST, "/v1/grants/revoke") => {
            let r: IdReq = read_json(req).await?;
            let (_, seq) = core
                .change(|st, _| Ok(((), domain::decide_grant_revoke(st, r.id, &by)?)))
                .await?;
            Ok(json!({"grant": r.id, "revoked": true, "event": seq}))
        }
        _ => Err(ApiError::new(
            405,
            "method_not_allowed",
            "method not allowed on this route",
        )),
    }
}

fn check_value(v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > MAX_VALUE_LEN {
        return Err(ApiError::new(
            400,
            "invalid_request",
            format!("a secret value is 1 to {MAX_VALUE_LEN} bytes"),
        ));
    }
    Ok(())
}

fn seal(
    core: &Core,
    name: &str,
    version: u32,
    value: &str,
) -> Result<crate::seal::Sealed, ApiError> {
    core.master()
        .seal(name, version, value.as_bytes())
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))
}

/// The listing behind a GET route, if the route has one.
fn list(core: &Core, path: &str) -> Option<Value> {
    let st = core.snapshot();
    Some(match path {
        "/v1/projects" => json!({"projects": st.projects}),
        "/v1/secrets" => json!({"secrets": st.secrets.iter().map(|(n, s)| {
            let holders: Vec<&str> = st.grants.values().filter(|g| &g.secret == n && !g.revoked).map(|g| g.identity.as_str()).collect();
            json!({"name": n, "projects": s.projects, "version": s.current, "versions": s.versions.len(), "revoked": s.revoked,
                   "grace": s.grace.map(|(v, until)| json!({"version": v, "until_ms": until})), "granted_to": holders})
        }).collect::<Vec<_>>()}),
        "/v1/agents" => json!({"agents": st.agents.iter().map(|(n, a)| json!({
            "name": n, "uid": a.uid, "revoked": a.revoked, "last_used_ms": a.last_used_ms,
            "grants": st.grants.iter().filter(|(_, g)| g.identity == format!("agent:{n}") && !g.revoked).map(|(id, _)| *id).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()}),
        "/v1/members" => {
            json!({"members": st.members.iter().map(|(n, m)| json!({"name": n, "uid": m.uid, "admin": m.admin})).collect::<Vec<_>>()})
        }
        "/v1/grants" => json!({"grants": st.grants.iter().map(|(id, g)| json!({
            "id": id, "identity": g.identity, "secret": g.secret, "project": g.project, "expires_at_ms": g.expires_at_ms,
            "max_uses": g.max_uses, "uses": g.uses, "rate_per_min": g.rate_per_min, "uid": g.uid, "revoked": g.revoked, "last_used_ms": g.last_used_ms,
        })).collect::<Vec<_>>()}),
        _ => return None,
    })
}
