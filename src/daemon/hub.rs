//! The hub: one daemon that serves the agents of other hosts, through their edges, over
//! mutual TLS 1.3.
//!
//! ```text
//!  host laptop-1                                 the hub (daemon --listen HOST:PORT)
//!  agent --unix--> edge --TLS 1.3, host cert--->  listener: host by its certificate,
//!        (uid,pid     (forwards the request,      caller by credential / (host, uid),
//!        from the     the credential, and the     decides, appends, answers
//!        kernel)      kernel's uid and pid)
//! ```
//!
//! **The hub CA.** Its P-256 key is derived from the master key
//! ([`MasterKey::hub_ca_scalar`]): no other key file, sealed and backed up as the master key
//! is. Its certificate is re-made at each start with the same subject and key; edges keep
//! it as a trust anchor, which is its subject and key only (webpki reads nothing else of an
//! anchor), so a re-made certificate is the same anchor.
//!
//! **The hub's TLS leaf** is made in memory at each start, for `--hub-name` names, the
//! listening address, `localhost` and `127.0.0.1`; it is sent with the CA certificate, so a
//! host that has only the CA's pin can check the chain.
//!
//! **Enrolment.** `host add NAME` records the keyed hash of a one-time join token
//! `shj_<64 hex>.<CA pin>` (the pin: SHA-256 of the CA's SubjectPublicKeyInfo, as kubeadm
//! pins its CA). The host checks the pin against the chain the hub sends before it sends the
//! token, makes its own key, and sends a certificate request. The hub spends the token
//! (`host_enrolled`, durable before the certificate leaves) and certifies the key: CN = the
//! host, clientAuth, a year. From then on only that exact certificate (by SHA-256, recorded in
//! the event) identifies the host, and only while the host is not revoked: a revocation is
//! checked at every request and cuts live connections at once.
//!
//! **What the hub believes of a host.** Its certificate says which host it is; the host's
//! word (headers [`PEER_UID`], [`PEER_PID`]) says which uid and pid on that host called. A uid
//! matters only for members and agents bound to that host (`--host`): a host cannot speak for
//! another host's users, nor for the hub's own.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use super::ca::{ZKeyPair, key_pair_of, odt, pem_cert, serial};
use super::seal::MasterKey;
use crate::api::ApiError;
use crate::domain::{CredentialHash, Name};

/// What a join token starts with.
pub const TOKEN_PREFIX: &str = "shj_";
/// How long a join token stays good unless `host add --ttl` says otherwise.
pub const TOKEN_TTL_SECS: u64 = 3600;
/// The longest a join token may be good for.
pub const TOKEN_TTL_MAX_SECS: u64 = 7 * 24 * 3600;
/// The header in which an edge tells the hub the caller's uid on its host (the kernel's
/// peer credentials there). Believed only on a connection with an enrolled host's
/// certificate.
pub const PEER_UID: &str = "x-scopehold-peer-uid";
/// The header in which an edge tells the hub the caller's pid on its host.
pub const PEER_PID: &str = "x-scopehold-peer-pid";
/// A host certificate's lifetime.
const HOST_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The CA certificate's lifetime (re-made at every start).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The hub leaf's lifetime (re-made at every start).
const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Clock skew allowed between hosts.
const BACKDATE: Duration = Duration::from_secs(3600);
/// The largest certificate request taken.
pub const MAX_CSR: usize = 8 * 1024;

/// The hub's certificate authority: derived from the master key, never written.
pub struct HubCa {
    issuer: Issuer<'static, ZKeyPair>,
    cert: CertificateDer<'static>,
    /// SHA-256 (hex) of the CA's SubjectPublicKeyInfo: what join tokens pin.
    pub pin: String,
}

impl std::fmt::Debug for HubCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCa")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// SHA-256 (hex) of a certificate's SubjectPublicKeyInfo (DER).
pub fn spki_pin(cert: &CertificateDer<'_>) -> Result<String> {
    use sha2::Digest;
    let (_, x) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| anyhow!("not a valid certificate: {e}"))?;
    Ok(hex::encode(sha2::Sha256::digest(
        x.tbs_certificate.subject_pki.raw,
    )))
}

/// SHA-256 (hex) of a certificate's DER: how a host's certificate is recorded.
pub fn cert_sha256(cert: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(cert))
}

impl HubCa {
    /// The CA of this master key.
    pub fn derive(master: &MasterKey) -> Result<HubCa> {
        let scalar = master.hub_ca_scalar();
        let key = key_pair_of(&scalar, "the hub CA key")?;
        let id = &blake3::hash(key.der_bytes()).to_hex()[..8];
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("ScopeHold hub CA {id}"));
        dn.push(DnType::OrganizationName, "ScopeHold");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        p.not_before = odt(now - BACKDATE);
        p.not_after = odt(now + CA_VALIDITY);
        p.serial_number = Some(serial()?);
        let cert = p
            .self_signed(&key)
            .map_err(|e| anyhow!("making the hub CA certificate: {e}"))?;
        let cert = cert.der().clone();
        let pin = spki_pin(&cert)?;
        let issuer = Issuer::new(p, key);
        Ok(HubCa { issuer, cert, pin })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert)
    }

    /// The listener's TLS configuration: TLS 1.3 only, a leaf for `names` sent with the CA,
    /// client certificates of this CA verified when offered (a host enrolling has none yet;
    /// such a connection may only enrol).
    pub fn server_config(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>> {
        let leaf_key = ZKeyPair::generate()?;
        let mut p = CertificateParams::new(names.to_vec())
            .map_err(|e| anyhow!("the hub's names ({}): {e}", names.join(", ")))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        p.not_before = odt(now - BACKDATE);
        p.not_after = odt(now + LEAF_VALIDITY);
        p.serial_number = Some(serial()?);
        let leaf = p
            .signed_by(&leaf_key, &self.issuer)
            .map_err(|e| anyhow!("issuing the hub's certificate: {e}"))?;
        let der = Zeroizing::new(leaf_key.serialize_der());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()));
        let chain = vec![leaf.der().clone(), self.cert.clone()];
        self.config_with(chain, key)
    }

    /// The listener's TLS configuration with the certificate the admin gives (`--tls-cert`,
    /// `--tls-key`) instead of a leaf of this CA: `cert` holds the hub's certificate first
    /// and the CA that issued it last, which join tokens then pin (the edge finds it in the
    /// chain the hub sends). Hosts' certificates stay this CA's (enrolment issues them). The
    /// key file must be private (no access for group or others), and the certificate must
    /// verify against that CA for every name in `names`, checked now rather than at each
    /// host's enrolment. Returns the configuration and the pin.
    pub fn server_config_from_files(
        &self,
        cert: &std::path::Path,
        key: &std::path::Path,
        names: &[String],
    ) -> Result<(Arc<rustls::ServerConfig>, String)> {
        use rustls_pki_types::pem::PemObject;
        use std::os::unix::fs::MetadataExt;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| anyhow!("--tls-cert {}: {e}", cert.display()))?;
        if chain.len() < 2 {
            return Err(anyhow!(
                "--tls-cert {}: the file holds the hub's certificate and then the CA that issued it, last (join tokens pin that CA); it holds {} certificate(s)",
                cert.display(),
                chain.len()
            ));
        }
        let meta =
            std::fs::metadata(key).map_err(|e| anyhow!("--tls-key {}: {e}", key.display()))?;
        if meta.mode() & 0o077 != 0 {
            return Err(anyhow!(
                "--tls-key {}: the hub's private key is readable by others (mode {:o}); chmod 600 it",
                key.display(),
                meta.mode() & 0o777
            ));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| anyhow!("--tls-key {}: {e}", key.display()))?;
        let ca = chain.last().expect("two or more").clone();
        let pin = spki_pin(&ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| anyhow!("--tls-cert: the CA at the end of the chain: {e}"))?;
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|e| anyhow!("--tls-cert: {e}"))?;
        for n in names {
            let name = rustls_pki_types::ServerName::try_from(n.clone())
                .map_err(|e| anyhow!("--hub-name {n}: {e}"))?;
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                v.as_ref(),
                &chain[0],
                &chain[1..chain.len() - 1],
                &name,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .map_err(|e| {
                anyhow!(
                    "--tls-cert {}: edges reaching the hub as {n} would refuse it: {e}",
                    cert.display()
                )
            })?;
        }
        Ok((self.config_with(chain, key_der)?, pin))
    }

    /// TLS 1.3, `chain` and `key` presented, hosts' certificates of this CA verified when
    /// offered.
    fn config_with(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .map_err(|e| anyhow!("the hub CA as a trust anchor: {e}"))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow!("the host certificate verifier: {e}"))?;
        let mut c = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| anyhow!("TLS versions: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| anyhow!("the hub's certificate: {e}"))?;
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(c))
    }

    /// Certifies the key in `csr_pem` for `host`: every field is the hub's choice (the
    /// request gives its public key and nothing else). Returns the certificate and when it
    /// expires (ms since the epoch).
    pub fn certify_host(
        &self,
        host: &Name,
        csr_pem: &str,
        now_ms: u64,
    ) -> Result<(CertificateDer<'static>, u64), ApiError> {
        if csr_pem.len() > MAX_CSR {
            return Err(ApiError::BadRequest(format!(
                "the certificate request is over {MAX_CSR} bytes"
            )));
        }
        // Parsing checks the request's self-signature: the host holds the key.
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            ApiError::BadRequest(format!("not a valid certificate request (PEM): {e}"))
        })?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(ApiError::BadRequest(
                "a host key is ECDSA P-256 (scopehold daemon --hub --join makes one)".into(),
            ));
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms);
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.as_str());
        dn.push(DnType::OrganizationName, "ScopeHold host");
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let not_after = now + HOST_CERT_VALIDITY;
        p.not_before = odt(now - BACKDATE);
        p.not_after = odt(not_after);
        p.serial_number = Some(serial().map_err(|e| ApiError::Internal(e.to_string()))?);
        let cert = p
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| ApiError::Internal(format!("issuing the host certificate: {e}")))?;
        let ms = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok((cert.der().clone(), ms))
    }
}

/// A fresh join token pinning `pin`, and the keyed hash of its secret part (what the log
/// keeps).
pub fn new_join_token(
    master: &MasterKey,
    pin: &str,
) -> Result<(Zeroizing<String>, CredentialHash)> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut()).map_err(|e| anyhow!("OS random source: {e}"))?;
    let secret = Zeroizing::new(format!("{TOKEN_PREFIX}{}", hex::encode(raw.as_ref())));
    let hash = CredentialHash(master.credential_hash(&secret));
    Ok((Zeroizing::new(format!("{}.{pin}", secret.as_str())), hash))
}

/// A join token's parts: its secret and the CA pin. `None` if it is not a join token.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let (secret, pin) = token.trim().split_once('.')?;
    let ok = secret
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        && pin.len() == 64
        && pin.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some((secret, pin))
}

/// What the hub keeps in memory about its listener: the CA (derived once), the hosts
/// connected now, and a signal that hosts changed (a revocation: live connections check
/// whether their host still stands).
#[derive(Debug)]
pub struct HubState {
    ca: OnceLock<Result<Arc<HubCa>, String>>,
    /// The CA join tokens pin when the listener presents the admin's certificate
    /// (`--tls-cert`) rather than one of `ca`'s.
    server_pin: OnceLock<String>,
    links: Mutex<HashMap<Name, usize>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for HubState {
    fn default() -> Self {
        Self {
            ca: OnceLock::new(),
            server_pin: OnceLock::new(),
            links: Mutex::new(HashMap::new()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// One live connection of a host, counted until it is dropped.
#[derive(Debug)]
pub struct Link {
    hub: Arc<super::Engine>,
    host: Name,
}

impl Drop for Link {
    fn drop(&mut self) {
        let mut m = self.hub.hub.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.host);
            }
        }
    }
}

impl HubState {
    /// The CA, derived from `master` on first use.
    pub fn ca(&self, master: &MasterKey) -> Result<Arc<HubCa>, ApiError> {
        self.ca
            .get_or_init(|| {
                HubCa::derive(master)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(ApiError::Internal)
    }

    /// Join tokens pin `pin` from now on: the listener presents a chain that ends with that
    /// CA (see [`HubCa::server_config_from_files`]).
    pub fn set_server_pin(&self, pin: String) {
        let _ = self.server_pin.set(pin);
    }

    /// What join tokens pin: the CA of the listener's certificate.
    pub fn token_pin(&self, master: &MasterKey) -> Result<String, ApiError> {
        match self.server_pin.get() {
            Some(p) => Ok(p.clone()),
            None => Ok(self.ca(master)?.pin.clone()),
        }
    }

    /// The hosts with a live connection now.
    pub fn connected(&self) -> BTreeSet<Name> {
        let m = self.links.lock().unwrap_or_else(|p| p.into_inner());
        m.keys().cloned().collect()
    }

    /// Counts a live connection of `host` until the returned link is dropped.
    pub fn link(engine: &Arc<super::Engine>, host: &Name) -> Link {
        let mut m = engine.hub.links.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(host.clone()).or_insert(0) += 1;
        Link {
            hub: engine.clone(),
            host: host.clone(),
        }
    }

    /// Tells live connections that hosts changed.
    pub fn notify(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A receiver of [`Self::notify`].
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Which enrolled, unrevoked host presents this certificate (by its SHA-256).
pub fn host_of(st: &crate::domain::State, cert: &[u8]) -> Option<Name> {
    let sha = cert_sha256(cert);
    st.hosts
        .iter()
        .find(|(_, h)| !h.revoked && h.cert_sha256.as_deref() == Some(sha.as_str()))
        .map(|(n, _)| n.clone())
}

/// Whether `host` still stands with this certificate SHA-256.
pub fn still_enrolled(st: &crate::domain::State, host: &Name, sha: &str) -> bool {
    st.hosts
        .get(host)
        .is_some_and(|h| !h.revoked && h.cert_sha256.as_deref() == Some(sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_the_same_key_at_every_start_and_tokens_split() {
        let m = MasterKey::generate().unwrap();
        let a = HubCa::derive(&m).unwrap();
        let b = HubCa::derive(&m).unwrap();
        assert_eq!(a.pin, b.pin);
        let other = HubCa::derive(&MasterKey::generate().unwrap()).unwrap();
        assert_ne!(a.pin, other.pin);
        let (t, h) = new_join_token(&m, &a.pin).unwrap();
        let (secret, pin) = split_token(&t).unwrap();
        assert_eq!(pin, a.pin);
        assert_eq!(m.credential_hash(secret), h.0);
        assert!(split_token("shj_zz.00").is_none());
        assert!(split_token(&t.replace('.', "")).is_none());
    }
}
