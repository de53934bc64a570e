//! The injecting proxy: agents call providers through the daemon, which decides each call
//! as a resolution, records it durably, and only then injects the key and forwards over TLS.
//! The agent holds a ScopeHold credential or a run's placeholder, never the key.
//!
//! Requests arrive in two forms, on the unix socket or the loopback listener:
//! * `/v1/proxy/PROJECT/PROVIDER/NAME/REST` (a base URL for SDKs): sent to the profile's
//!   first host as `https://HOST/REST`, authenticated by any credential;
//! * absolute form `http://HOST/REST` (a client whose `HTTP_PROXY` is the proxy): sent to
//!   `https://HOST/REST`, authenticated by a run's placeholder, which names the secret.
//!
//! The host must be one of the secret's profile; anything else is refused and recorded.
//! `upstream` is the TLS client, `peer` finds the uid behind a loopback TCP connection,
//! `runs` serves the held answer that keeps a run's placeholders alive.

pub mod peer;
pub mod runs;
pub mod upstream;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response};
use zeroize::Zeroizing;

pub use upstream::{Body, BoxError, Mitm, ProxyLimits, Upstream};

use super::engine::{Engine, PLACEHOLDER_PREFIX, Peer};
use crate::api::ApiError;
use crate::domain::{
    Caller, Command, Profile, ProjectName, ProxyResult, Refusal, SecretName, profile,
};

/// Where base-URL requests start.
pub const PROXY_PREFIX: &str = "/v1/proxy/";

/// Whether a request is for the proxy rather than the API: a path under [`PROXY_PREFIX`],
/// or an absolute-form (or authority-form) target, as sent to an HTTP proxy.
pub fn is_proxy_request<B>(req: &Request<B>) -> bool {
    req.uri().authority().is_some() || req.uri().path().starts_with(PROXY_PREFIX)
}

/// What a request names before anything is looked up.
struct Target {
    /// From the path: the project and secret (base-URL form). Absent in absolute form,
    /// where the placeholder names them.
    named: Option<(ProjectName, SecretName)>,
    /// The host asked for in absolute form; base-URL requests go to the profile's first.
    host: Option<String>,
    /// The upstream path and query, starting with `/`.
    rest: String,
}

fn bad(msg: &str) -> ApiError {
    ApiError::BadRequest(msg.to_string())
}

fn target<B>(req: &Request<B>) -> Result<Target, ApiError> {
    let uri = req.uri();
    let rest = uri.path_and_query().map_or("/", |p| p.as_str());
    if let Some(a) = uri.authority() {
        if uri
            .scheme_str()
            .is_some_and(|s| s != "http" && s != "https")
        {
            return Err(bad("only http:// and https:// targets are proxied"));
        }
        // `http://HOST` from an HTTP_PROXY client is still sent as https://HOST:443: the key
        // never travels in the clear. An explicit port is kept.
        let host = match a.port_u16() {
            Some(80) if uri.scheme_str() == Some("http") => a.host().to_ascii_lowercase(),
            Some(p) => format!("{}:{p}", a.host().to_ascii_lowercase()),
            None => a.host().to_ascii_lowercase(),
        };
        return Ok(Target {
            named: None,
            host: Some(host),
            rest: if rest.starts_with('/') {
                rest.into()
            } else {
                format!("/{rest}")
            },
        });
    }
    let tail = rest
        .strip_prefix(PROXY_PREFIX)
        .ok_or_else(|| bad("not a proxy path"))?;
    let mut parts = tail.splitn(4, '/');
    let (project, provider, name) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    // `name` may carry the query when nothing follows it (`/v1/proxy/p/openai/prod?x=1`).
    let (name, query) = match name.split_once('?') {
        Some((n, q)) => (n, Some(q)),
        None => (name, None),
    };
    let project: ProjectName = project.parse().map_err(|_| {
        bad("use /v1/proxy/PROJECT/PROVIDER/NAME/PATH (the project is not a valid name)")
    })?;
    let secret: SecretName = format!("{provider}/{name}").parse().map_err(|_| {
        bad("use /v1/proxy/PROJECT/PROVIDER/NAME/PATH (PROVIDER/NAME is not a valid secret name)")
    })?;
    let rest = match (parts.next(), query) {
        (Some(r), _) => format!("/{r}"),
        (None, Some(q)) => format!("/?{q}"),
        (None, None) => "/".to_string(),
    };
    Ok(Target {
        named: Some((project, secret)),
        host: None,
        rest,
    })
}

/// The path as recorded: the query's values left out (they may carry data), at most 256
/// characters of path.
pub fn audit_path(rest: &str) -> String {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mut out: String = path.chars().take(256).collect();
    if let Some(q) = query {
        out.push('?');
        let keys: Vec<&str> = q
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
            .take(16)
            .collect();
        out.push_str(
            &keys
                .iter()
                .map(|k| format!("{}=", k.chars().take(32).collect::<String>()))
                .collect::<Vec<_>>()
                .join("&"),
        );
    }
    out
}

/// The ScopeHold credential a request carries, wherever its SDK put it: any header whose
/// value is (or, after `Bearer `, `token ` or `Basic ` and `user:`, holds) a credential or
/// a placeholder. Two different ones are refused.
fn credential(headers: &HeaderMap) -> Result<Option<Zeroizing<String>>, ApiError> {
    let mut found: Option<Zeroizing<String>> = None;
    for v in headers.values() {
        let Ok(v) = v.to_str() else { continue };
        let v = v.trim();
        let token = if let Some(b) = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
        {
            use base64::Engine as _;
            let Ok(d) = base64::engine::general_purpose::STANDARD.decode(b.trim()) else {
                continue;
            };
            let d = Zeroizing::new(d);
            let Ok(d) = std::str::from_utf8(&d) else {
                continue;
            };
            Zeroizing::new(d.split_once(':').map_or(d, |(_, p)| p).to_string())
        } else {
            let t = ["Bearer ", "bearer ", "token ", "Token "]
                .iter()
                .find_map(|p| v.strip_prefix(p))
                .unwrap_or(v);
            Zeroizing::new(t.trim().to_string())
        };
        if !(token.starts_with(PLACEHOLDER_PREFIX)
            || token.starts_with(super::engine::CREDENTIAL_PREFIX))
        {
            continue;
        }
        match &found {
            Some(f) if **f != *token => {
                return Err(bad("the request carries two different credentials"));
            }
            _ => found = Some(token),
        }
    }
    Ok(found)
}

/// Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy owns: never forwarded.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The headers to send upstream: the request's, without hop-by-hop ones, without any that
/// carry the ScopeHold credential or an authorization of the agent's own, with the key in
/// the profile's header.
fn upstream_headers(
    src: &HeaderMap,
    profile: &Profile,
    credential: Option<&str>,
    key: &[u8],
) -> Result<HeaderMap, ApiError> {
    let listed: Vec<String> = src
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(src.len() + 1);
    for (name, v) in src {
        let n = name.as_str();
        let carries =
            credential.is_some_and(|c| v.to_str().is_ok_and(|s| s.contains(c)) || n.contains(c));
        if HOP.contains(&n)
            || n == "authorization"
            || n == profile.header
            || n.starts_with("x-scopehold-")
            || listed.iter().any(|l| l == n)
            || carries
        {
            continue;
        }
        out.append(name.clone(), v.clone());
    }
    let mut value = Zeroizing::new(Vec::with_capacity(profile.prefix.len() + key.len()));
    value.extend_from_slice(profile.prefix.as_bytes());
    value.extend_from_slice(key);
    let mut hv = HeaderValue::from_bytes(&value)
        .map_err(|_| ApiError::Internal("the stored key cannot travel in an HTTP header".into()))?;
    // Kept out of hyper's debug output and HPACK tables.
    hv.set_sensitive(true);
    let name = HeaderName::from_bytes(profile.header.as_bytes())
        .map_err(|_| ApiError::Internal("a profile's header is not a header name".into()))?;
    out.insert(name, hv);
    Ok(out)
}

/// The outcome of one call, written when its response has ended or been cut off.
struct CallGuard {
    engine: Arc<Engine>,
    call: u64,
    start: Instant,
    status: u16,
    up: Arc<AtomicU64>,
    down: u64,
    error: Option<&'static str>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.engine.note_proxy_result(ProxyResult {
            call: self.call,
            status: self.status,
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down,
            duration_us: u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX),
            error: self.error.map(str::to_string),
        });
    }
}

/// A request body on its way up: counted, and cut at the limit.
struct MeteredUp {
    inner: http_body_util::Limited<Incoming>,
    count: Arc<AtomicU64>,
}

impl hyper::body::Body for MeteredUp {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body on its way back: passed through frame by frame as it arrives (server-sent
/// events stream), counted, cut at the limit; its end (or its being dropped part-way)
/// records the call's outcome.
struct MeteredDown {
    inner: Incoming,
    limit: u64,
    ended: bool,
    guard: CallGuard,
}

impl hyper::body::Body for MeteredDown {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.guard.down += d.len() as u64;
                    if this.guard.down > this.limit {
                        this.guard.error = Some("response over the proxy's limit; cut");
                        this.ended = true;
                        return Poll::Ready(Some(Err("response over the proxy's limit".into())));
                    }
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.guard.error = Some("upstream failed mid-response");
                this.ended = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredDown {
    fn drop(&mut self) {
        if !self.ended && !self.inner.is_end_stream() && self.guard.error.is_none() {
            self.guard.error = Some("response cut short (the client went away)");
        }
    }
}

/// Serves one proxied request to its end; every failure is a JSON error.
pub async fn handle(engine: Arc<Engine>, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    let served = if req.method() == hyper::Method::CONNECT {
        connect(&engine, peer.clone(), req).await
    } else {
        match target(&req) {
            Ok(t) => serve(&engine, peer.clone(), req, t, None).await,
            Err(e) => Err(e),
        }
    };
    match served {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(
                uid = peer.uid,
                status = e.status(),
                code = e.code(),
                "proxied request refused"
            );
            super::server::error_response(&e)
        }
    }
}

/// The `host:port` a `CONNECT` names, normalised (`:443` dropped).
fn connect_host<B>(req: &Request<B>) -> Result<String, ApiError> {
    let a = req
        .uri()
        .authority()
        .ok_or_else(|| bad("CONNECT names host:port"))?;
    let host = a.host().to_ascii_lowercase();
    if !profile::valid_host(&host) {
        return Err(bad("CONNECT to an address that is not a DNS name"));
    }
    Ok(profile::normal_host(&format!(
        "{host}:{}",
        a.port_u16().unwrap_or(443)
    )))
}

/// `CONNECT host:port` (a client whose `HTTPS_PROXY` is the proxy). To a host of some
/// profile: answered 200, then TLS is terminated here with a leaf for exactly that host from
/// the ScopeHold CA (which only ScopeHold's children trust), and each request inside is
/// served as an absolute-form request to that host, authenticated by its own placeholder or
/// the tunnel's (`Proxy-Authorization`). To any other host: tunnelled untouched (no key goes
/// that way) for an authenticated caller, or refused if the daemon was told so.
async fn connect(
    engine: &Arc<Engine>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(upstream) = engine.upstream().cloned() else {
        return Err(bad("this daemon runs no injecting proxy"));
    };
    let host = connect_host(&req)?;
    let cred = credential(req.headers())?;
    let profiled = engine.read(|st| st.profiles_in_effect().any(|(_, p, _)| p.allows(&host)));
    // Who asks: a live placeholder, or an agent or member, as anywhere else.
    match cred.as_deref() {
        Some(c) if c.starts_with(PLACEHOLDER_PREFIX) => {
            let live = engine.placeholder(c).is_some_and(|(run, _)| {
                engine.read(|st| st.runs.get(&run).is_some_and(|r| r.uid == peer.uid))
            });
            if !live {
                // Dead, forged, or another uid's: counted and recorded as an unknown one.
                engine.authenticate(Some(c), peer.clone()).await?;
                return Err(Refusal::Unauthenticated.into());
            }
        }
        Some(c) => {
            engine.authenticate(Some(c), peer.clone()).await?;
        }
        None => {
            return Err(bad(
                "CONNECT needs a credential: HTTPS_PROXY=http://scopehold:PLACEHOLDER@... (scopehold run --proxy sets it)",
            ));
        }
    }
    // The tunnel keeps the connection's place in the limits, and ends when the daemon stops.
    let share = req
        .extensions()
        .get::<super::server::ConnectionShare>()
        .cloned();
    let mut stopping = engine.stopping();
    let empty = || {
        Response::new(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
    };
    if !profiled {
        if !upstream.tunnel_others {
            return Err(bad(
                "CONNECT to a host outside every provider profile is refused (daemon --tunnel-other-connect allows it)",
            ));
        }
        let (name, port) = host
            .rsplit_once(':')
            .map_or((host.as_str(), 443), |(n, p)| (n, p.parse().unwrap_or(443)));
        let dest = tokio::time::timeout(
            upstream.limits.connect_timeout,
            tokio::net::TcpStream::connect((name.to_string(), port)),
        )
        .await
        .map_err(|_| ApiError::UpstreamTimeout)?
        .map_err(|_| ApiError::Upstream(format!("{host} could not be reached")))?;
        tokio::spawn(async move {
            let _share = share;
            if let Ok(up) = hyper::upgrade::on(req).await {
                let mut up = hyper_util::rt::TokioIo::new(up);
                let mut dest = dest;
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut up, &mut dest) => {}
                    () = async { let _ = stopping.wait_for(|s| *s).await; } => {}
                }
            }
        });
        return Ok(empty());
    }
    let Some(mitm) = upstream.mitm.get() else {
        return Err(bad("this daemon has no certificate authority for CONNECT"));
    };
    let acceptor = mitm.acceptor.clone();
    let engine = engine.clone();
    tokio::spawn(async move {
        let _share = share;
        let Ok(up) = hyper::upgrade::on(req).await else {
            return;
        };
        let Ok(tls) = acceptor.accept(hyper_util::rt::TokioIo::new(up)).await else {
            return;
        };
        // The leaf is for the SNI name; it must be the CONNECT's host, so a tunnel opened to
        // one profile's host cannot be used to speak to another's.
        let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
        let name = host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n);
        if sni.as_deref() != Some(name) {
            return;
        }
        let tunnel_cred = cred.map(Arc::new);
        let svc = hyper::service::service_fn(move |inner: Request<Incoming>| {
            let (engine, host, tunnel_cred, peer) = (
                engine.clone(),
                host.clone(),
                tunnel_cred.clone(),
                peer.clone(),
            );
            async move {
                let t = Target {
                    named: None,
                    host: Some(host),
                    rest: inner
                        .uri()
                        .path_and_query()
                        .map_or("/".into(), |p| p.as_str().to_string()),
                };
                let fallback = tunnel_cred.as_deref().cloned();
                let r = match serve(&engine, peer, inner, t, fallback).await {
                    Ok(r) => r,
                    Err(e) => super::server::error_response(&e),
                };
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(super::server::HEADER_TIMEOUT)
            .max_buf_size(super::server::MAX_HEAD)
            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    });
    Ok(empty())
}

async fn serve(
    engine: &Arc<Engine>,
    peer: Peer,
    req: Request<Incoming>,
    t: Target,
    fallback: Option<Zeroizing<String>>,
) -> Result<Response<Body>, ApiError> {
    let Some(upstream) = engine.upstream().cloned() else {
        return Err(ApiError::BadRequest(
            "this daemon runs no injecting proxy".into(),
        ));
    };
    let start = Instant::now();
    if matches!(req.method().as_str(), "TRACE" | "TRACK" | "CONNECT") {
        // TRACE echoes the request's headers back: the key among them.
        return Err(bad("TRACE and TRACK are not proxied"));
    }
    let cred = match credential(req.headers())? {
        Some(c) => Some(c),
        None => fallback,
    };
    // No uid-only callers here: a uid is also its user's browser and every other program
    // it runs. The proxy needs an agent's credential or a run's placeholder.
    if cred.is_none() {
        return Err(bad(
            "the proxy needs a credential: an agent's (Authorization: Bearer shk_...) or a run's placeholder (scopehold run --proxy)",
        ));
    }
    // Who is calling, and for which secret and project.
    let (caller, run, project, secret) = match cred.as_deref() {
        Some(c) if c.starts_with(PLACEHOLDER_PREFIX) => match engine.placeholder(c) {
            Some((run, held)) => {
                let Some(r) = engine.read(|st| st.runs.get(&run).cloned()) else {
                    return Err(Refusal::Unauthenticated.into());
                };
                // The peer's uid, not the run's: `decide` refuses a placeholder used from
                // another uid than its run's.
                let caller = Caller {
                    identity: r.identity,
                    uid: peer.uid,
                    pid: peer.pid,
                    host: peer.host.clone(),
                };
                // In proxy form the placeholder names the run; the secret is the run's one
                // whose profile has the host (its own first).
                let (project, secret) = match t.named.clone() {
                    Some(named) => named,
                    None => {
                        let host = t.host.clone().unwrap_or_default();
                        let pick = engine.read(|st| {
                            std::iter::once(&held)
                                .chain(r.secrets.iter())
                                .find(|s| st.profile(s.provider()).is_some_and(|p| p.allows(&host)))
                                .cloned()
                        });
                        (r.project, pick.unwrap_or(held))
                    }
                };
                (caller, Some(run), project, secret)
            }
            // A dead or forged placeholder: counted and recorded as any unknown credential.
            None => {
                engine.authenticate(Some(c), peer.clone()).await?;
                return Err(Refusal::Unauthenticated.into());
            }
        },
        other => {
            let caller = engine.authenticate(other.map(|c| c.as_str()), peer).await?;
            let Some((project, secret)) = t.named.clone() else {
                return Err(bad(
                    "a request in proxy form needs a run's placeholder (scopehold run --proxy); with an agent credential use /v1/proxy/PROJECT/PROVIDER/NAME/PATH",
                ));
            };
            (caller, None, project, secret)
        }
    };
    let profile = engine.read(|st| st.profile(secret.provider()).cloned());
    let host = match (&t.host, &profile) {
        (Some(h), _) => h.clone(),
        (None, Some(p)) => p.primary_host().to_string(),
        // Decided (and recorded) as a denial below.
        (None, None) => String::new(),
    };
    let command = Command::Proxy {
        secret: secret.clone(),
        project,
        host: profile::normal_host(&host),
        method: req.method().as_str().to_string(),
        path: audit_path(&t.rest),
        run,
    };
    let auth = engine.proxy(&caller, &command).await?;
    let profile =
        profile.ok_or_else(|| ApiError::Internal("a proxied call without a profile".into()))?;
    let up_count = Arc::new(AtomicU64::new(0));
    let mut guard = CallGuard {
        engine: engine.clone(),
        call: auth.call,
        start,
        status: 502,
        up: up_count.clone(),
        down: 0,
        error: None,
    };
    let (parts, body) = req.into_parts();
    let headers = upstream_headers(
        &parts.headers,
        &profile,
        cred.as_deref().map(|c| c.as_str()),
        &auth.key,
    )?;
    drop(auth);
    let uri = format!("https://{host}{}", t.rest);
    let mut up = Request::builder()
        .method(parts.method)
        .uri(&uri)
        .body(
            MeteredUp {
                inner: http_body_util::Limited::new(body, upstream.limits.max_request_body),
                count: up_count,
            }
            .boxed(),
        )
        .map_err(|_| bad("the request's path cannot be sent upstream"))?;
    *up.headers_mut() = headers;
    let resp = match tokio::time::timeout(upstream.limits.head_timeout, upstream.client.request(up))
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            guard.error = Some("upstream unreachable or failed");
            tracing::info!(host = %host, error = ?e, "proxied call failed upstream");
            return Err(ApiError::Upstream(format!(
                "the upstream {host} could not be reached or failed"
            )));
        }
        Err(_) => {
            guard.error = Some("upstream response head timed out");
            guard.status = 504;
            return Err(ApiError::UpstreamTimeout);
        }
    };
    guard.status = resp.status().as_u16();
    let (mut parts, body) = resp.into_parts();
    let listed: Vec<String> = parts
        .headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for h in HOP.iter().copied().map(String::from).chain(listed) {
        parts.headers.remove(h.as_str());
    }
    let down = MeteredDown {
        inner: body,
        limit: upstream.limits.max_response_body,
        ended: false,
        guard,
    };
    Ok(Response::from_parts(parts, down.boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_recorded_without_query_values() {
        assert_eq!(audit_path("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(
            audit_path("/v1/models?key=sk-CANARY&limit=5"),
            "/v1/models?key=&limit="
        );
        assert!(!audit_path("/x?token=CANARY").contains("CANARY"));
    }

    #[test]
    fn base_url_targets_parse_and_bad_ones_are_refused() {
        let r = |u: &str| Request::builder().uri(u).body(()).unwrap();
        let t = target(&r("/v1/proxy/demo/openai/prod/v1/models?a=1")).unwrap();
        let (p, s) = t.named.unwrap();
        assert_eq!(
            (p.as_str(), s.as_str(), t.rest.as_str()),
            ("demo", "openai/prod", "/v1/models?a=1")
        );
        assert_eq!(target(&r("/v1/proxy/demo/openai/prod")).unwrap().rest, "/");
        assert!(target(&r("/v1/proxy/demo/openai")).is_err());
        assert!(target(&r("/v1/proxy/Demo/openai/prod/x")).is_err());
        let t = target(&r("http://API.example.test/v1/x")).unwrap();
        assert_eq!(
            (t.host.as_deref(), t.rest.as_str()),
            (Some("api.example.test"), "/v1/x")
        );
        let t = target(&r("http://localhost:8443/x")).unwrap();
        assert_eq!(t.host.as_deref(), Some("localhost:8443"));
    }

    #[test]
    fn credentials_are_found_in_any_header_form() {
        let cred = format!("{PLACEHOLDER_PREFIX}{}", "ab".repeat(32));
        for (name, value) in [
            ("authorization", format!("Bearer {cred}")),
            ("x-api-key", cred.clone()),
            ("authorization", format!("token {cred}")),
            (
                "proxy-authorization",
                format!("Basic {}", b64(&format!("scopehold:{cred}"))),
            ),
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), value.parse().unwrap());
            h.insert("accept", "application/json".parse().unwrap());
            assert_eq!(
                credential(&h).unwrap().as_deref().map(|s| s.as_str()),
                Some(cred.as_str()),
                "{name}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {cred}").parse().unwrap());
        h.insert(
            "x-api-key",
            format!("{PLACEHOLDER_PREFIX}other").parse().unwrap(),
        );
        assert!(credential(&h).is_err());
    }

    fn b64(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn the_agents_credential_never_goes_upstream_and_the_key_does() {
        let p = &crate::domain::profile::builtins()["anthropic"];
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "shr_placeholder".parse().unwrap());
        h.insert("authorization", "Bearer shr_placeholder".parse().unwrap());
        h.insert("connection", "x-drop".parse().unwrap());
        h.insert("x-drop", "1".parse().unwrap());
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());
        let out = upstream_headers(&h, p, Some("shr_placeholder"), b"sk-ant-KEY").unwrap();
        assert_eq!(out.get("x-api-key").unwrap(), "sk-ant-KEY");
        assert!(out.get("authorization").is_none() && out.get("x-drop").is_none());
        assert_eq!(out.get("anthropic-version").unwrap(), "2023-06-01");
        assert!(!format!("{out:?}").contains("sk-ant-KEY"));
    }
}
