//! The edge: `scopehold daemon --hub https://HUB:PORT` serves this host's agents on the
//! local socket, with the same API, by forwarding every request to the hub over mutual TLS.
//!
//! The edge holds no key, no value and no decision: each request goes to the hub with the
//! caller's credential and the kernel's peer uid and pid ([`hub::PEER_UID`],
//! [`hub::PEER_PID`], which the edge sets and never takes from the caller), and the answer
//! comes back as the hub gave it, after the hub's event is durable. With the hub
//! unreachable, every request is answered 503 `hub_unreachable`, saying why.
//!
//! ```text
//! $SCOPEHOLD_HOME/           (the edge's own state directory, 0700)
//!   host.key    0600  this host's P-256 key (PKCS#8 PEM), made here, never sent
//!   host.pem    0644  its certificate, issued by the hub at enrolment (CN = the host)
//!   hub-ca.pem  0644  the hub CA: the only anchor the edge trusts the hub by
//! ```
//!
//! Enrolment (`--join TOKEN`, once): the token pins the hub CA's public key; the edge
//! checks the chain the hub sends against that pin before it sends the token, then sends a
//! certificate request for the key it made, and keeps what the hub answers.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use zeroize::Zeroizing;

use super::ca::{ZKeyPair, pem_cert};
use super::home::{self, Home};
use super::hub;
use crate::api::wire;
use crate::api::{ApiError, Route};

/// This host's key.
pub const HOST_KEY: &str = "host.key";
/// This host's certificate.
pub const HOST_CERT: &str = "host.pem";
/// The hub CA.
pub const HUB_CA: &str = "hub-ca.pem";
/// Time allowed to reach the hub (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the edge waits for the hub's answer unless `--hub-timeout` says otherwise
/// (a watch, which the hub holds until something changes, is not bounded by it).
pub const HUB_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest file of ours read.
const MAX_FILE: u64 = 64 * 1024;

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// The hub's address, from `https://HOST:PORT`.
#[derive(Debug, Clone)]
pub struct HubUrl {
    /// As given (without a trailing slash).
    pub url: String,
    host: String,
    port: u16,
}

impl HubUrl {
    /// Parses `https://HOST:PORT` (the port defaults to 443; nothing after it).
    pub fn parse(s: &str) -> Result<Self> {
        let u: Uri = s
            .trim_end_matches('/')
            .parse()
            .map_err(|e| anyhow!("--hub {s}: not a URL: {e}"))?;
        if u.scheme_str() != Some("https") {
            bail!("--hub {s}: the hub is reached over TLS: https://HOST:PORT");
        }
        if u.path_and_query().is_some_and(|p| p.as_str() != "/") {
            bail!("--hub {s}: give the hub's address only (https://HOST:PORT)");
        }
        let host = u
            .host()
            .ok_or_else(|| anyhow!("--hub {s}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(HubUrl {
            url: s.trim_end_matches('/').to_string(),
            host,
            port: u.port_u16().unwrap_or(443),
        })
    }

    fn server_name(&self) -> Result<ServerName<'static>> {
        ServerName::try_from(self.host.clone()).map_err(|e| anyhow!("--hub {}: {e}", self.url))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// At enrolment: trusts the hub if the chain it sends holds a CA whose public key has the
/// token's pin, and the leaf verifies against that CA for the hub's name. Remembers the CA.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    seen: Mutex<Option<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| hub::spki_pin(c).is_ok_and(|p| p == self.pin))
            .ok_or_else(|| {
                rustls::Error::General(
                    "the hub's CA does not have the public key the join token pins: this is not the hub that made the token".into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the hub's CA: {e}")))?;
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("the hub's CA: {e}")))?;
        let ok = v.verify_server_cert(end_entity, &[], server_name, ocsp, now)?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca.clone().into_owned());
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Opens (creating it 0700 if missing) the edge's state directory.
fn edge_dir(home: &Home) -> Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(&home.root).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&home.root)
            .with_context(|| format!("creating {}", home.root.display()))?;
    }
    home::open_private_dir(&home.root)
}

fn read_at(dir: &std::fs::File, root: &Path, name: &str) -> Result<Zeroizing<Vec<u8>>> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    use std::io::Read;
    let f = home::open_at(dir, name, OFlag::O_RDONLY, Mode::empty()).map_err(|e| {
        anyhow!(
            "opening {} (a symlink is refused): {e}",
            root.join(name).display()
        )
    })?;
    let mut buf = Zeroizing::new(Vec::new());
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", root.join(name).display()))?;
    if buf.len() as u64 > MAX_FILE {
        bail!("{} is too large", root.join(name).display());
    }
    Ok(buf)
}

/// Whether this state directory holds an enrolment.
pub fn is_enrolled(home: &Home) -> bool {
    home.root.join(HOST_KEY).exists()
}

/// Enrols this host with the hub at `url`, spending `token`; keeps the key, the certificate
/// and the hub CA in the state directory. Returns the host's name.
pub async fn enrol(home: &Home, url: &HubUrl, token: &str) -> Result<String> {
    let Some((_, pin)) = hub::split_token(token) else {
        bail!(
            "--join: not a join token (shj_<64 hex digits>.<64 hex digits>, from `scopehold host add NAME` on the hub)"
        );
    };
    let dir = edge_dir(home)?;
    if is_enrolled(home) {
        bail!(
            "{} is enrolled already (it holds {HOST_KEY}); start the edge without --join, or enrol with a fresh state directory (--home)",
            home.root.display()
        );
    }
    let pinned = Arc::new(PinnedCa {
        pin: pin.to_string(),
        seen: Mutex::new(None),
        provider: provider(),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (key, csr) = new_host_key()?;
    let body = serde_json::to_vec(&wire::HostJoinRequest {
        token: wire::SecretString::new(Zeroizing::new(token.trim().to_string())),
        csr_pem: csr,
    })?;
    let body = Zeroizing::new(body);
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| anyhow!("{}: no connection within {CONNECT_TIMEOUT:?}", url.url))?
    .with_context(|| format!("connecting to the hub {}", url.url))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(url.server_name()?, tcp)
        .await
        .with_context(|| format!("TLS with the hub {}", url.url))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    // Origin form: an absolute URI on a bare connection would be sent as such.
    let req = Request::post(Route::HostJoin.spec().path)
        .header(hyper::header::HOST, format!("{}:{}", url.host, url.port))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::copy_from_slice(&body)))?;
    drop(body);
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("the hub refused the enrolment: {}", refusal(status, &bytes));
    }
    let joined: wire::HostJoined = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("the hub's answer to the enrolment: {e}"))?;
    // The CA kept is the one the handshake checked against the pin, not a text the answer
    // carries.
    let ca = pinned
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| anyhow!("the hub's CA was not seen in the handshake"))?;
    let cert = CertificateDer::from_pem_slice(joined.cert_pem.as_bytes())
        .map_err(|e| anyhow!("the certificate the hub issued: {e}"))?;
    let key_pem = Zeroizing::new(key.serialize_pem());
    // The key last: it marks the directory as enrolled.
    super::ca::replace_at(&dir, &home.root, HUB_CA, pem_cert(&ca).as_bytes(), 0o644)?;
    super::ca::replace_at(
        &dir,
        &home.root,
        HOST_CERT,
        pem_cert(&cert).as_bytes(),
        0o644,
    )?;
    super::ca::replace_at(&dir, &home.root, HOST_KEY, key_pem.as_bytes(), 0o600)?;
    Ok(joined.host.to_string())
}

/// What `doctor` tells of an edge's enrolment.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The host's name (its certificate's CN).
    pub host: String,
    /// When its certificate expires.
    pub not_after: std::time::SystemTime,
    /// The SHA-256 of the hub CA's public key it trusts.
    pub ca_pin: String,
    /// `host.key`'s mode.
    pub key_mode: u32,
}

/// Reads an edge's enrolment: the files are there, parse, and belong together.
pub fn enrolment(home: &Home) -> Result<Enrolment> {
    use std::os::unix::fs::MetadataExt;
    let (_, host) = client_config(home)?;
    let dir = edge_dir(home)?;
    let root = &home.root;
    let cert = CertificateDer::from_pem_slice(&read_at(&dir, root, HOST_CERT)?)
        .map_err(|e| anyhow!("{}: {e}", root.join(HOST_CERT).display()))?;
    let (_, x) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| anyhow!("{}: {e}", root.join(HOST_CERT).display()))?;
    let secs = u64::try_from(x.validity().not_after.timestamp()).unwrap_or(0);
    let ca = CertificateDer::from_pem_slice(&read_at(&dir, root, HUB_CA)?)
        .map_err(|e| anyhow!("{}: {e}", root.join(HUB_CA).display()))?;
    let key_mode = std::fs::symlink_metadata(root.join(HOST_KEY))?.mode() & 0o7777;
    Ok(Enrolment {
        host,
        not_after: std::time::UNIX_EPOCH + Duration::from_secs(secs),
        ca_pin: hub::spki_pin(&ca)?,
        key_mode,
    })
}

/// The client TLS configuration of an enrolled edge: the hub CA as the only anchor, this
/// host's certificate and key.
fn client_config(home: &Home) -> Result<(rustls::ClientConfig, String)> {
    let dir = edge_dir(home)?;
    let root = &home.root;
    if !is_enrolled(home) {
        bail!(
            "{} is not enrolled with a hub: run `scopehold daemon --hub URL --join TOKEN` once (the token comes from `scopehold host add NAME` on the hub)",
            root.display()
        );
    }
    let ca = CertificateDer::from_pem_slice(&read_at(&dir, root, HUB_CA)?)
        .map_err(|e| anyhow!("{}: {e}", root.join(HUB_CA).display()))?;
    let cert = CertificateDer::from_pem_slice(&read_at(&dir, root, HOST_CERT)?)
        .map_err(|e| anyhow!("{}: {e}", root.join(HOST_CERT).display()))?;
    let key = PrivateKeyDer::from_pem_slice(&read_at(&dir, root, HOST_KEY)?)
        .map_err(|e| anyhow!("{}: {e}", root.join(HOST_KEY).display()))?;
    let name = {
        let (_, x) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| anyhow!("{}: {e}", root.join(HOST_CERT).display()))?;
        x.subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("?")
            .to_string()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| anyhow!("{}: {e}", root.join(HUB_CA).display()))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .map_err(|e| anyhow!("this host's certificate and key: {e}"))?;
    // ALPN is set by the connector (`enable_http1`), which refuses a config that has it.
    cfg.alpn_protocols.clear();
    Ok((cfg, name))
}

/// How long before its certificate expires an edge renews it (certificates last a year).
pub const RENEW_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// A pool of mutual-TLS connections to the hub, with this host's certificate.
type HubClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Body>;

/// The edge's link to its hub: a pool of mutual-TLS connections.
#[derive(Debug)]
pub struct Edge {
    /// Replaced whole when the host's certificate is renewed.
    client: std::sync::RwLock<HubClient>,
    /// Every hub address, in the order given; `current` is the one that answered last.
    hubs: Vec<HubUrl>,
    current: std::sync::atomic::AtomicUsize,
    host: String,
    /// Why the hub could not be reached last time, if it could not.
    last_error: Mutex<Option<String>>,
    /// How long to wait for an answer (not for a watch).
    timeout: Duration,
}

impl Edge {
    /// The edge of an enrolled state directory.
    pub fn new(home: &Home, hubs: Vec<HubUrl>, timeout: Duration) -> Result<Self> {
        if hubs.is_empty() {
            bail!("an edge needs a hub address (--hub https://HUB:PORT)");
        }
        let (client, host) = hub_client(home)?;
        Ok(Edge {
            client: std::sync::RwLock::new(client),
            hubs,
            current: std::sync::atomic::AtomicUsize::new(0),
            host,
            last_error: Mutex::new(None),
            timeout,
        })
    }

    fn client(&self) -> HubClient {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Renews this host's certificate if it expires within `within`: a new key made here,
    /// certified by the hub (`POST /v1/hosts/renew` on this edge's own connection), kept
    /// in place of the old key and certificate, and used for every connection from now on.
    /// Returns whether it renewed.
    pub async fn renew_if_due(&self, home: &Home, within: Duration) -> Result<bool> {
        let e = enrolment(home)?;
        if e.not_after > std::time::SystemTime::now() + within {
            return Ok(false);
        }
        let (key, csr) = new_host_key()?;
        let body = serde_json::to_vec(&wire::HostRenewRequest { csr_pem: csr })?;
        let client = self.client();
        let mut why = String::new();
        for hub in &self.hubs {
            let req = Request::post(format!("{}{}", hub.url, Route::HostRenew.spec().path))
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(full(body.clone()))?;
            let resp = match tokio::time::timeout(self.timeout, client.request(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    why = format!("{}: {}", hub.url, error_chain(&e));
                    continue;
                }
                Err(_) => {
                    why = format!("{}: no answer in time", hub.url);
                    continue;
                }
            };
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!(
                    "the hub refused to renew this host's certificate: {}",
                    refusal(status, &bytes)
                );
            }
            let renewed: wire::HostRenewed = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow!("the hub's answer to the renewal: {e}"))?;
            let cert = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes())
                .map_err(|e| anyhow!("the certificate the hub issued: {e}"))?;
            let dir = edge_dir(home)?;
            let key_pem = Zeroizing::new(key.serialize_pem());
            // The hub already holds only the new certificate for this host: both files are
            // replaced at once, each atomically (a stop between the two leaves a key and a
            // certificate that do not match, which the next start reports).
            super::ca::replace_at(
                &dir,
                &home.root,
                HOST_CERT,
                pem_cert(&cert).as_bytes(),
                0o644,
            )?;
            super::ca::replace_at(&dir, &home.root, HOST_KEY, key_pem.as_bytes(), 0o600)?;
            let (client, _) = hub_client(home)?;
            *self.client.write().unwrap_or_else(|p| p.into_inner()) = client;
            tracing::info!(host = %self.host, not_after_ms = renewed.not_after_ms, event = renewed.event, "renewed this host's certificate");
            return Ok(true);
        }
        bail!("no hub could be reached to renew this host's certificate: {why}")
    }
}

/// What a hub's error answer says (its message and code), or its status.
fn refusal(status: hyper::StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<wire::ErrorBody>(body)
        .map(|e| format!("{} ({})", e.error.message, e.error.code))
        .unwrap_or_else(|_| format!("HTTP {status}"))
}

/// A new host key and a certificate request for it (the hub chooses every field).
fn new_host_key() -> Result<(ZKeyPair, String)> {
    let key = ZKeyPair::generate()?;
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "scopehold host");
    p.distinguished_name = dn;
    let csr = p
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| anyhow!("making the certificate request: {e}"))?;
    Ok((key, csr))
}

/// The pooled client of an enrolled edge, and the host's name.
fn hub_client(home: &Home) -> Result<(HubClient, String)> {
    let (cfg, host) = client_config(home)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    // A watch waits on an idle connection for as long as nothing changes: keepalive
    // probes find a hub that went away meanwhile (in about 16 s).
    http.set_keepalive(Some(Duration::from_secs(10)));
    http.set_keepalive_interval(Some(Duration::from_secs(2)));
    http.set_keepalive_retries(Some(3));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .build(https);
    Ok((client, host))
}

impl Edge {
    /// This host's name, as its certificate says.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn unreachable(&self, why: String) -> Response<Body> {
        let e = ApiError::HubUnreachable(format!(
            "the edge of host {} cannot reach its hub ({}): {why}; nothing was asked and nothing released",
            self.host,
            self.hubs
                .iter()
                .map(|h| h.url.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        let body = serde_json::to_vec(&wire::ErrorBody::from(&e)).unwrap_or_default();
        let mut r = Response::new(full(body));
        *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        r
    }

    /// Forwards one request of a local caller (`uid`, `pid` from the kernel) to the hub: the
    /// one that answered last, else the next address that can be reached. A request whose
    /// connection could not even be made is sent to the next address (its body, if small,
    /// was kept for that); one that reached a hub is never sent twice.
    pub async fn forward(
        &self,
        uid: u32,
        pid: Option<i32>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        if req.method() == hyper::Method::CONNECT || req.uri().authority().is_some() {
            let e = ApiError::BadRequest(
                "HTTP(S)_PROXY is not served through an edge yet: use base URLs (run --proxy gives them), or the hub's host"
                    .into(),
            );
            let mut r = Response::new(full(
                serde_json::to_vec(&wire::ErrorBody::from(&e)).unwrap_or_default(),
            ));
            *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
            return r;
        }
        let (parts, body) = req.into_parts();
        // A watch, and a log page that waits for new events, are held open by the hub on
        // purpose (each bounds its own wait).
        let bounded = parts.uri.path() != Route::Watch.spec().path
            && parts.uri.path() != Route::LogPage.spec().path;
        // Small bodies (every API request) are kept, so that a hub that cannot be reached
        // does not cost the caller its request; larger ones (proxied uploads) stream once.
        let small = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n <= RETRY_BODY)
            || parts.method == hyper::Method::GET;
        let mut body = if small {
            match http_body_util::Limited::new(body, RETRY_BODY)
                .collect()
                .await
            {
                Ok(b) => Outgoing::Kept(b.to_bytes()),
                Err(_) => return self.unreachable("the request's body could not be read".into()),
            }
        } else {
            Outgoing::Stream(Some(body))
        };
        let n = self.hubs.len();
        let first = self.current.load(std::sync::atomic::Ordering::Relaxed) % n;
        let mut why = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let Some(b) = body.take() else { break };
            let Some(out) = self.request(&self.hubs[at], &parts, uid, pid, b) else {
                return self.unreachable("the request could not be forwarded".into());
            };
            let answer = if bounded {
                match tokio::time::timeout(self.timeout, self.client().request(out)).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(hub = %self.hubs[at].url, "no answer from the hub in time");
                        return self.unreachable(format!("no answer within {:?}", self.timeout));
                    }
                }
            } else {
                self.client().request(out).await
            };
            match answer {
                Ok(resp) => {
                    self.current.store(at, std::sync::atomic::Ordering::Relaxed);
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return resp.map(|b| b.boxed());
                }
                Err(e) => {
                    why = format!("{}: {}", self.hubs[at].url, error_chain(&e));
                    tracing::warn!(error = %why, "hub unreachable");
                    // Sent, or perhaps sent: never again, to any hub.
                    if !e.is_connect() {
                        break;
                    }
                }
            }
        }
        self.unreachable(why)
    }

    /// The request for `hub`: the caller's headers, less hop-by-hop ones and any claim of
    /// who it is, plus the kernel's uid and pid.
    fn request(
        &self,
        hub: &HubUrl,
        parts: &hyper::http::request::Parts,
        uid: u32,
        pid: Option<i32>,
        body: Body,
    ) -> Option<Request<Body>> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("{}{path}", hub.url).parse().ok()?;
        let mut out = Request::builder().method(parts.method.clone()).uri(uri);
        for (k, v) in &parts.headers {
            let n = k.as_str();
            if n == hub::PEER_UID
                || n == hub::PEER_PID
                || n == "host"
                || n == "connection"
                || n == "keep-alive"
                || n == "transfer-encoding"
                || n == "upgrade"
            {
                continue;
            }
            out = out.header(k, v);
        }
        out = out.header(hub::PEER_UID, uid.to_string());
        if let Some(p) = pid {
            out = out.header(hub::PEER_PID, p.to_string());
        }
        out.body(body).ok()
    }
}

/// The largest request body kept to be sent to another hub address if the first cannot be
/// reached.
const RETRY_BODY: usize = 1 << 20;

/// A request's body on its way to a hub.
enum Outgoing {
    /// Kept whole: can be sent again.
    Kept(Bytes),
    /// Streamed: once.
    Stream(Option<Incoming>),
}

impl Outgoing {
    fn take(&mut self) -> Option<Body> {
        match self {
            Outgoing::Kept(b) => Some(full(b.clone())),
            Outgoing::Stream(s) => s.take().map(|b| b.boxed()),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        why.push_str(": ");
        why.push_str(&s.to_string());
        src = s.source();
    }
    why
}

/// Serves the local socket as the edge of `edge`, until `shutdown`.
pub async fn serve(
    listener: tokio::net::UnixListener,
    edge: Arc<Edge>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let limit = Arc::new(tokio::sync::Semaphore::new(super::server::MAX_CONNECTIONS));
    let per_uid = Arc::new(super::server::PerUid::default());
    loop {
        let s = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
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
        let Ok(cred) = s.peer_cred() else {
            tracing::warn!("no peer credentials; refusing a connection");
            continue;
        };
        let (uid, pid) = (cred.uid(), cred.pid());
        // As on a hub's own socket: one local user cannot take every connection.
        let Some(slot) = per_uid.take(uid) else {
            tracing::debug!(
                uid,
                "per-uid connection limit reached; refusing a connection"
            );
            continue;
        };
        let edge = edge.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let edge = edge.clone();
                async move { Ok::<_, Infallible>(edge.forward(uid, pid, req).await) }
            });
            let r = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(super::server::HEADER_TIMEOUT)
                .max_buf_size(super::server::MAX_HEAD)
                .serve_connection(TokioIo::new(s), service)
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}
