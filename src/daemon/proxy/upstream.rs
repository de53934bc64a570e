//! The proxy's client to providers: HTTP/1.1 over TLS only (rustls, ring), pooled, with the
//! system's roots (Mozilla's, from webpki-root-certs, when the system has none) plus an optional private CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Any body error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A streamed body, either way.
pub type Body = BoxBody<Bytes, BoxError>;

/// Bounds on one proxied call.
#[derive(Debug, Clone, Copy)]
pub struct ProxyLimits {
    /// Largest request body sent upstream.
    pub max_request_body: usize,
    /// Largest response body passed back (a stream past it is cut, and recorded as such).
    pub max_response_body: u64,
    /// Time for the upstream's response head (a model may think for minutes).
    pub head_timeout: Duration,
    /// Time to connect (TCP and TLS).
    pub connect_timeout: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            max_request_body: 32 * 1024 * 1024,
            max_response_body: 1024 * 1024 * 1024,
            head_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The pooled TLS client the proxy forwards through.
pub struct Upstream {
    pub(super) client: Client<HttpsConnector<HttpConnector>, Body>,
    /// The bounds.
    pub limits: ProxyLimits,
    /// Where the roots came from, for the start-up log line.
    pub roots: String,
    /// The daemon's loopback listener for the proxy, if it has one (told to runs).
    pub listen: Option<std::net::SocketAddr>,
    /// `CONNECT` to a profile's host: TLS terminated with a leaf from the ScopeHold CA.
    pub mitm: std::sync::OnceLock<Mitm>,
    /// `CONNECT` to any other host: tunnelled untouched (true) or refused.
    pub tunnel_others: bool,
}

/// What `CONNECT` to a profile's host needs: the acceptor (leaves minted on SNI), and the
/// bundle (system roots + the CA) that runs hand their children.
pub struct Mitm {
    /// The TLS acceptor.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The trust bundle, PEM.
    pub bundle_pem: String,
}

impl std::fmt::Debug for Mitm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitm").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("limits", &self.limits)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client trusting the system's roots (webpki's if none load) and, if given, the CA
    /// certificates in the PEM file `extra_ca`.
    pub fn new(extra_ca: Option<&Path>, limits: ProxyLimits) -> Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        let mut from = if added > 0 {
            format!("{added} system roots")
        } else {
            let (n, _) = roots.add_parsable_certificates(
                webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned(),
            );
            format!("{n} webpki roots (no system roots found)")
        };
        if let Some(f) = extra_ca {
            let mut n = 0;
            for c in CertificateDer::pem_file_iter(f)
                .with_context(|| format!("reading --upstream-ca {}", f.display()))?
            {
                let c = c.with_context(|| format!("a certificate in {}", f.display()))?;
                roots
                    .add(c)
                    .with_context(|| format!("a certificate in {}", f.display()))?;
                n += 1;
            }
            if n == 0 {
                bail!("--upstream-ca {} holds no certificate", f.display());
            }
            from.push_str(&format!(" + {n} from {}", f.display()));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(limits.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            // A key never travels in the clear: plain http:// upstreams are refused.
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(https);
        Ok(Self {
            client,
            limits,
            roots: from,
            listen: None,
            mitm: std::sync::OnceLock::new(),
            tunnel_others: false,
        })
    }
}
