//! The local socket: HTTP/1.1 with JSON bodies, versioned under `/v1/`.
//!
//! Every request is bounded before it touches state: header bytes and time, body bytes and
//! time, connections. The route is looked up in the one table (`api::routes`) before
//! authentication; identity comes from the bearer credential and the kernel's peer
//! credentials of the connection, never from request fields. Errors are
//! `{"error":{"code":...,"message":...}}` with the code from `api::error`'s table.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::Instrument;
use zeroize::Zeroizing;

use super::engine::{Engine, Peer};
use super::handlers;
use super::http::{Reply, RequestBody};
use crate::api::{self, Access, ApiError, RouteSpec};
use crate::domain::Caller;

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Time allowed for a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections the hub's host listener serves at once, counted apart from the local
/// socket's: a flood from the network (TLS handshakes need no certificate) cannot take the
/// local agents' connections.
pub const MAX_HOST_CONNECTIONS: usize = 256;
/// Connections one peer uid may hold at once: one local user cannot take every slot and
/// starve the others (a sixteenth of all).
pub const MAX_CONNECTIONS_PER_UID: usize = MAX_CONNECTIONS / 16;

/// Connections held per peer uid.
#[derive(Debug, Default)]
pub(crate) struct PerUid(std::sync::Mutex<std::collections::HashMap<u32, usize>>);

/// One connection's share of its uid's count, given back when the connection ends.
#[derive(Debug)]
pub struct UidSlot {
    uid: u32,
    counts: Arc<PerUid>,
}

impl PerUid {
    pub(crate) fn take(self: &Arc<Self>, uid: u32) -> Option<UidSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(uid).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_UID {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            uid,
            counts: self.clone(),
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

type Resp = Response<super::proxy::Body>;

fn response(status: u16, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The JSON error answer of `e`, with its status.
pub(crate) fn error_response(e: &ApiError) -> Resp {
    // An error body holds no secret: a plain buffer will do.
    let body = serde_json::to_vec(&crate::api::wire::ErrorBody::from(e)).unwrap_or_default();
    response(e.status(), Bytes::from(body))
}

/// Serves connections until `shutdown` completes, then stops accepting and lets in-flight
/// requests finish (bounded by `drain`).
pub async fn run(
    listener: UnixListener,
    tcp: Option<tokio::net::TcpListener>,
    hub: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    // Graceful stop: every connection holds a permit of `limit`; at stop each is told to
    // finish its request in flight, and the drain waits for every permit to come back.
    // (hyper-util's GracefulShutdown does not take HTTP/1 connections with upgrades, which
    // CONNECT needs.)
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let host_limit = Arc::new(Semaphore::new(MAX_HOST_CONNECTIONS));
    let per_uid = Arc::new(PerUid::default());
    tokio::pin!(shutdown);
    loop {
        // The unix socket serves everything; the loopback listener only the proxy. A TCP
        // peer's uid comes from the kernel's socket table (`proxy::peer`).
        let accepted = tokio::select! {
            r = listener.accept() => r.map(|(s, _)| {
                let peer = s.peer_cred().map(|c| Peer::local(c.uid(), c.pid()));
                (Stream::Unix(s), peer.ok())
            }),
            // The TCP peer's uid is looked up after the permit is taken, off this loop
            // (reading the kernel's socket table can be slow when it is large).
            r = accept_tcp(tcp.as_ref()) => r.map(|(s, peer_addr)| {
                (Stream::Tcp(s, peer_addr), Some(Peer::local(u32::MAX, None)))
            }),
            r = accept_tcp(hub.as_ref().map(|(l, _)| l)) => r.map(|(s, peer_addr)| {
                (Stream::Hub(s, peer_addr), Some(Peer::local(u32::MAX, None)))
            }),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let pool = if matches!(stream, Stream::Hub(..)) {
            &host_limit
        } else {
            &limit
        };
        let Ok(permit) = pool.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached; refusing a connection");
            continue;
        };
        let Some(peer) = peer else {
            tracing::warn!("no peer credentials; refusing a connection");
            continue;
        };
        let engine = engine.clone();
        let stop = stop_rx.clone();
        match stream {
            Stream::Hub(s, addr) => {
                let acceptor = hub.as_ref().map(|(_, a)| a.clone());
                tokio::spawn(async move {
                    let Some(acceptor) = acceptor else { return };
                    serve_host(s, addr, acceptor, engine, stop).await;
                    drop(permit);
                });
            }
            Stream::Unix(s) => {
                let Some(slot) = per_uid.take(peer.uid) else {
                    tracing::debug!(
                        uid = peer.uid,
                        "per-uid connection limit reached; refusing a connection"
                    );
                    continue;
                };
                let held = Arc::new((permit, slot));
                let conn = connection(s, engine, peer, false, ConnectionShare(Some(held.clone())));
                tokio::spawn(serve_until_stopped(conn, stop, held));
            }
            Stream::Tcp(s, peer_addr) => {
                let per_uid = per_uid.clone();
                tokio::spawn(async move {
                    let Ok(local) = s.local_addr() else { return };
                    let uid = tokio::task::spawn_blocking(move || {
                        super::proxy::peer::tcp_peer_uid(local, peer_addr)
                    })
                    .await
                    .ok()
                    .flatten();
                    let Some(uid) = uid else {
                        tracing::warn!("no owner for a loopback connection; refusing it");
                        return;
                    };
                    let Some(slot) = per_uid.take(uid) else {
                        tracing::debug!(
                            uid,
                            "per-uid connection limit reached; refusing a connection"
                        );
                        return;
                    };
                    let peer = Peer::local(uid, None);
                    let held = Arc::new((permit, slot));
                    let conn =
                        connection(s, engine, peer, true, ConnectionShare(Some(held.clone())));
                    serve_until_stopped(conn, stop, held).await;
                });
            }
        }
    }
    // Held answers (runs) end within a heartbeat, tunnels close, waiting watches (long
    // polls) are answered: none holds up the drain below.
    engine.stop();
    drop(listener);
    drop(tcp);
    drop(hub);
    stop_tx.send_replace(true);
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let hosts = u32::try_from(MAX_HOST_CONNECTIONS).unwrap_or(u32::MAX);
    let drained = async {
        let a = limit.acquire_many(all).await;
        let b = host_limit.acquire_many(hosts).await;
        (a, b)
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {drain:?}; stopping anyway");
    }
}

/// Serves a connection to its end, or, once `stop` is set, lets its request in flight finish
/// and closes it. `_held` (its permits) goes back when it ends.
async fn serve_until_stopped<C>(conn: C, mut stop: tokio::sync::watch::Receiver<bool>, _held: Held)
where
    C: Future<Output = hyper::Result<()>> + GracefulConn,
{
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().stop_gracefully();
            conn.await
        }
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A connection that can be told to finish what it is doing and close.
trait GracefulConn {
    fn stop_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConn for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = super::proxy::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn stop_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    /// The hub's listener: other hosts' edges, over mutual TLS.
    Hub(tokio::net::TcpStream, std::net::SocketAddr),
}

/// Time allowed for a host's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection on the hub's listener: the TLS handshake, the host its certificate names
/// (if it offered one), then its requests, until it ends, the daemon stops, or its host is
/// revoked (checked at every change of hosts, and at every request).
async fn serve_host(
    s: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    engine: Arc<Engine>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(s)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(peer = %addr, error = %e, "hub listener: TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %addr, "hub listener: TLS handshake not finished in time");
            return;
        }
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let host = match &cert {
        Some(der) => match engine.read(|st| super::hub::host_of(st, der)) {
            Some(h) => HostConn::Host(h, super::hub::cert_sha256(der)),
            None => {
                // Signed by the hub CA, but no longer any enrolled host's: revoked, or
                // replaced by a later enrolment of the host. Its requests are answered
                // with that, so the edge can say it.
                tracing::info!(peer = %addr, "hub listener: a certificate of no enrolled host");
                HostConn::Stale
            }
        },
        None => HostConn::Enrolling,
    };
    let _link = match &host {
        HostConn::Host(h, _) => {
            tracing::info!(host = %h, peer = %addr, "host connected");
            Some(super::hub::HubState::link(&engine, h))
        }
        _ => None,
    };
    let mut changes = engine.hub.changes();
    let e2 = engine.clone();
    let h2 = host.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let engine = e2.clone();
        let host = h2.clone();
        async move { Ok::<_, Infallible>(handle_host(&engine, &host, addr, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "host connection ended with an error");
                }
                return;
            }
            () = async { let _ = stop.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                if let HostConn::Host(h, sha) = &host
                    && !engine.read(|st| super::hub::still_enrolled(st, h, sha))
                {
                    // Dropping the connection closes the socket now, mid-request or not.
                    tracing::info!(host = %h, "host revoked: its connection is cut");
                    return;
                }
            }
        }
    }
}

/// Who is on a connection of the hub's listener.
#[derive(Debug, Clone)]
enum HostConn {
    /// No client certificate: it may only enrol.
    Enrolling,
    /// An enrolled host, and its certificate's SHA-256.
    Host(crate::domain::Name, String),
    /// A certificate of the hub CA that no enrolled host holds now (revoked or replaced).
    Stale,
}

/// A request on a connection with no client certificate: enrolment, or a clear refusal.
async fn enrolling(
    engine: &Arc<Engine>,
    route: Option<&'static RouteSpec>,
    addr: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    if route.is_some_and(|r| r.route == api::Route::HostJoin) {
        return match handlers::join(engine, RequestBody::new(req), addr).await {
            Ok(r) => ok(r),
            Err(e) => {
                tracing::info!(
                    status = e.status(),
                    code = e.code(),
                    "host enrolment refused"
                );
                error_response(&e)
            }
        };
    }
    error_response(&ApiError::HostUnauthenticated(
        "this is a hub's host listener: it serves enrolled hosts, by their certificate (enrol with scopehold daemon --hub URL --join TOKEN)".into(),
    ))
}

/// One request on the hub's listener.
async fn handle_host(
    engine: &Arc<Engine>,
    host: &HostConn,
    addr: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    // Proxy requests are not in the route table (`handle` takes them first); the rest are
    // looked up before anything else, as on the local socket.
    let route = if super::proxy::is_proxy_request(&req) {
        None
    } else {
        match api::lookup(req.method().as_str(), req.uri().path()) {
            Ok(r) => Some(r),
            Err(e) => return error_response(&e),
        }
    };
    let (h, sha) = match host {
        HostConn::Host(h, sha) => (h, sha),
        HostConn::Stale => {
            return error_response(&ApiError::HostUnauthenticated(
                "this host's certificate belongs to no enrolled host: the host was revoked, or enrolled again with another key".into(),
            ));
        }
        HostConn::Enrolling => return enrolling(engine, route, addr, req).await,
    };
    if !engine.read(|st| super::hub::still_enrolled(st, h, sha)) {
        return error_response(&ApiError::HostUnauthenticated(format!(
            "host {h} is revoked"
        )));
    }
    if route.is_some_and(|r| r.route == api::Route::HostJoin) {
        return error_response(&ApiError::BadRequest(format!(
            "host {h} is enrolled already"
        )));
    }
    // The edge's own renewal carries no caller (every request it forwards carries the
    // caller's uid, which it sets itself); a forwarded one goes on and is refused as a
    // caller's.
    if route.is_some_and(|r| r.route == api::Route::HostRenew)
        && !req.headers().contains_key(super::hub::PEER_UID)
    {
        return match handlers::host_renew(engine, h, RequestBody::new(req)).await {
            Ok(r) => {
                tracing::info!(host = %h, "host certificate renewed");
                ok(r)
            }
            Err(e) => error_response(&e),
        };
    }
    // Base-URL proxy requests (`/v1/proxy/...`) and runs come through; the forms that need
    // a proxy on the agent's own host (`HTTP_PROXY`'s absolute form, `CONNECT`) do not yet.
    if req.method() == hyper::Method::CONNECT || req.uri().authority().is_some() {
        return error_response(&ApiError::BadRequest(
            "HTTP(S)_PROXY is not served through an edge yet: use base URLs (run --proxy gives them), or the hub's host".into(),
        ));
    }
    // The host's word for who called on it: a uid is required, a pid optional.
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let Some(uid) = header(super::hub::PEER_UID).and_then(|v| v.parse::<u32>().ok()) else {
        return error_response(&ApiError::BadRequest(format!(
            "a request from a host's edge carries the caller's uid ({})",
            super::hub::PEER_UID
        )));
    };
    let pid = header(super::hub::PEER_PID).and_then(|v| v.parse::<i32>().ok());
    let peer = Peer {
        uid,
        pid,
        host: Some(h.clone()),
    };
    handle(engine, peer, req, false).await
}

/// A connection's share of the limits (its permit of all connections and its uid's slot),
/// held by the connection and by any tunnel it turns into (CONNECT): a tunnel counts against
/// the limits, and the drain at stop waits for it, until it ends.
pub type Held = Arc<(tokio::sync::OwnedSemaphorePermit, UidSlot)>;

/// The connection's [`Held`], in each of its requests' extensions.
#[derive(Clone, Debug)]
pub struct ConnectionShare(pub Option<Held>);

async fn accept_tcp(
    l: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => {
            let (s, a) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((s, a))
        }
        None => std::future::pending().await,
    }
}

/// One connection's HTTP/1.1 server: the bounds on the request head, then [`handle`] for
/// every request (only proxy requests when `proxy_only`: the loopback listener).
fn connection<I>(
    io: I,
    engine: Arc<Engine>,
    peer: Peer,
    proxy_only: bool,
    share: ConnectionShare,
) -> hyper::server::conn::http1::UpgradeableConnection<
    TokioIo<I>,
    impl hyper::service::Service<
        Request<Incoming>,
        Response = Resp,
        Error = Infallible,
        Future = impl Future<Output = Result<Resp, Infallible>> + Send,
    > + Send,
>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let engine = engine.clone();
        req.extensions_mut().insert(share.clone());
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(&engine, peer, req, proxy_only).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service)
        // CONNECT: the proxy takes the connection over once it has answered 200.
        .with_upgrades()
}

/// Serves one connection from `peer` to its end, exactly as [`run`] serves each accepted
/// socket (without the graceful-shutdown watch): for tests and fuzzing, which feed bytes
/// through an in-memory stream instead of a unix socket.
pub async fn serve_connection<I>(io: I, engine: Arc<Engine>, peer: Peer) -> hyper::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    connection(io, engine, peer, false, ConnectionShare(None)).await
}

fn bearer(req: &Request<Incoming>) -> Result<Option<Zeroizing<String>>, ApiError> {
    match req.headers().get(AUTHORIZATION) {
        None => Ok(None),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::from(crate::domain::Refusal::Unauthenticated))?;
            match v.strip_prefix("Bearer ") {
                Some(t) if !t.is_empty() => Ok(Some(Zeroizing::new(t.trim().to_string()))),
                _ => Err(crate::domain::Refusal::Unauthenticated.into()),
            }
        }
    }
}

async fn handle(
    engine: &Arc<Engine>,
    peer: Peer,
    req: Request<Incoming>,
    proxy_only: bool,
) -> Resp {
    // Browsers are never clients: a web page (through DNS rebinding, or a form posted to
    // the loopback listener or a run's relay) would act with the uid of the browser's user.
    // They always send one of these; the CLI, SDKs, curl and agents do not.
    if ["origin", "sec-fetch-site", "sec-fetch-mode"]
        .iter()
        .any(|h| req.headers().contains_key(*h))
    {
        return error_response(&ApiError::BadRequest(
            "requests from web browsers are refused".into(),
        ));
    }
    // On the loopback listener an origin-form request must name a loopback host: a page
    // whose name was rebound to 127.0.0.1 sends its own name.
    if proxy_only && req.uri().authority().is_none() {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let name = host.rsplit_once(':').map_or(host, |(n, p)| {
            if p.bytes().all(|c| c.is_ascii_digit()) {
                n
            } else {
                host
            }
        });
        if !["127.0.0.1", "localhost", "[::1]"].contains(&name) {
            return error_response(&ApiError::BadRequest(
                "the proxy listener answers requests for 127.0.0.1 or localhost only".into(),
            ));
        }
    }
    if super::proxy::is_proxy_request(&req) {
        return super::proxy::handle(engine.clone(), peer, req).await;
    }
    if proxy_only {
        return error_response(&ApiError::NoRoute);
    }
    let route = match api::lookup(req.method().as_str(), req.uri().path()) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(method = %req.method(), path = %req.uri().path(), uid = peer.uid, status = e.status(), code = e.code(), "request refused");
            return error_response(&e);
        }
    };
    // Per request, at debug level: at the default level a disabled span costs next to
    // nothing on the resolution path. Refusals are logged at info with the same fields.
    let span = tracing::debug_span!(
        "request",
        route = route.name,
        uid = peer.uid,
        identity = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    async move {
        let mut who: Option<Caller> = None;
        let result = serve(engine, peer.clone(), route, req, &mut who).await;
        // The identity is written out only when something will print it: an enabled span,
        // or a refusal (logged at info). A served request at the default level pays nothing.
        let span = tracing::Span::current();
        let identity = (!span.is_disabled() || result.is_err())
            .then(|| who.as_ref().map(|c| c.identity.to_string()))
            .flatten();
        if let Some(i) = &identity {
            span.record("identity", i.as_str());
        }
        match result {
            Ok(resp) => {
                span.record("outcome", "ok");
                resp
            }
            Err(e) => {
                span.record("outcome", e.code());
                tracing::info!(
                    route = route.name,
                    uid = peer.uid,
                    identity = identity.as_deref().unwrap_or("-"),
                    status = e.status(),
                    code = e.code(),
                    "request refused"
                );
                error_response(&e)
            }
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    engine: &Arc<Engine>,
    peer: Peer,
    route: &'static RouteSpec,
    req: Request<Incoming>,
    who: &mut Option<Caller>,
) -> Result<Resp, ApiError> {
    if route.access == Access::Anyone {
        return handlers::anyone(engine, route.route).map(ok);
    }
    let token = bearer(&req)?;
    let caller = engine
        .authenticate(token.as_deref().map(|t| t.as_str()), peer)
        .await?;
    drop(token);
    let caller = &*who.insert(caller);
    if route.access == Access::Admin {
        engine.authorize_admin(caller)?;
    }
    if route.route == api::Route::RunStart {
        let r = RequestBody::new(req)
            .json::<crate::api::wire::RunStartRequest>()
            .await?;
        // The hub's loopback listener is of no use on another host: there, `run` relays
        // its child's loopback to the edge's socket.
        let listen = engine
            .upstream()
            .and_then(|u| u.listen)
            .filter(|_| caller.host.is_none())
            .map(|a| a.to_string());
        return super::proxy::runs::start(engine, caller, r, listen).await;
    }
    handlers::call(engine, caller, route.route, RequestBody::new(req))
        .await
        .map(ok)
}

fn ok(reply: Reply) -> Resp {
    response(200, reply.into_bytes())
}
