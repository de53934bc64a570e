//! A throwaway CA and a `localhost` server certificate from it, for the loopback HTTPS
//! upstreams of the proxy's tests and benchmark (shared by `tests/it/proxy.rs` and
//! `examples/proxy_bench.rs` through `#[path]`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes the CA's certificate to `dir/name` (what the daemon's `--upstream-ca` takes) and
/// returns it with a TLS acceptor serving the `localhost` certificate.
pub fn localhost_acceptor(dir: &Path, name: &str) -> (PathBuf, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_pem = dir.join(name);
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (ca_pem, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
