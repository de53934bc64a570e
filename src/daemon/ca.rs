//! The ScopeHold certificate authority, for the injecting proxy's `HTTPS_PROXY` mode.
//!
//! Tools with no base-URL setting (git, curl, most CLIs) reach a provider through
//! `HTTPS_PROXY`: the daemon answers `CONNECT host:443` for a provider profile's hosts by
//! terminating TLS itself, with a leaf certificate for that host issued by this CA, so that it
//! can inject the key. Only the child process trusts the CA, through `SSL_CERT_FILE` (and
//! `REQUESTS_CA_BUNDLE`, `NODE_EXTRA_CA_CERTS`) pointing at [`BUNDLE`]: the system roots plus
//! this CA. Nothing system-wide trusts it.
//!
//! ```text
//! $SCOPEHOLD_HOME/
//!   ca.key          0600  the CA's ECDSA P-256 private scalar (32 bytes), plain or sealed
//!   ca.pem          0644  the CA's self-signed certificate
//!   ca-bundle.pem   0644  system roots + ca.pem, rewritten at every daemon start
//! ```
//!
//! `ca.key` is a key file like `log.key` and `master.key` (see [`super::keyfile`], role
//! `ca.key`): sealed under the passphrase exactly when they are, opened relative to the state
//! directory's descriptor with `O_NOFOLLOW`. The scalar, not a PKCS#8 document, is stored so
//! that the key file formats stay the same for every key; the public key is derived from it.
//!
//! The CA certificate: CN "ScopeHold local CA (<host> <id>)" (`id`: 8 hex digits of the
//! public key's BLAKE3, so two state directories on one host never share a subject),
//! basicConstraints CA:true pathlen:0 (critical), keyUsage keyCertSign + cRLSign, ten years.
//! **No name constraints**: the permitted DNS subtrees would be the profiles' hosts, which
//! change after `init`, and a constrained CA would have to be re-made (and re-trusted) at
//! every profile change. What confines the CA instead: only children started by ScopeHold
//! trust it, its key is kept like the log's signing key, and [`LeafResolver`] mints a leaf
//! only for a name the caller's predicate allows (the proxy: a provider profile's host).
//!
//! Leaves: SAN = exactly the SNI name, EKU serverAuth, CA:false, valid 7 days from an hour
//! ago (clock skew), re-minted a day before they expire, cached (256 names at most). One leaf
//! key pair per daemon run, made in memory and never written: every leaf is signed by the CA
//! anyway, so a key per host would add key generation to handshakes and protect nothing more
//! (all of them would live in the same process memory).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
    SigningKey,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::{Zeroize, Zeroizing};

use super::home::{self, Home};
use super::keyfile::{self, KeyFile, Passphrase, Role};

/// The CA's private key file.
pub const CA_KEY: &str = "ca.key";
/// The CA's certificate.
pub const CA_CERT: &str = "ca.pem";
/// The trust bundle for children: system roots plus the CA.
pub const BUNDLE: &str = "ca-bundle.pem";

/// The CA certificate's lifetime.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A leaf's lifetime from its `not_before`.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far back `not_before` is set: a child whose clock is a little behind still accepts.
const BACKDATE: Duration = Duration::from_secs(3600);
/// A cached leaf is re-minted when less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
/// The most leaves cached (a profile has a handful of hosts; the bound is against a client
/// cycling names, which the predicate mostly stops anyway).
pub const CACHE_MAX: usize = 256;
/// The largest `ca.pem` read.
const MAX_CERT_FILE: u64 = 64 * 1024;

/// An rcgen key pair whose PKCS#8 copy is zeroized on drop (rcgen's `KeyPair` only offers
/// `Zeroize`). Never printed.
pub(crate) struct ZKeyPair(KeyPair);

impl Drop for ZKeyPair {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZKeyPair {
    /// A fresh P-256 key pair.
    pub(crate) fn generate() -> Result<Self> {
        Ok(ZKeyPair(
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(|e| anyhow!("making a P-256 key: {e}"))?,
        ))
    }

    /// Its PKCS#8 document (the caller zeroizes it).
    pub(crate) fn serialize_der(&self) -> Vec<u8> {
        self.0.serialize_der()
    }

    /// Its PKCS#8 document as PEM (the caller zeroizes it).
    pub(crate) fn serialize_pem(&self) -> String {
        self.0.serialize_pem()
    }
}

impl std::fmt::Debug for ZKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ZKeyPair(..)")
    }
}

/// The P-256 key pair of a 32-byte scalar; `what` names it in errors.
pub(crate) fn key_pair_of(scalar: &[u8; 32], what: &str) -> Result<ZKeyPair> {
    key_pair(scalar, Path::new(what))
}

impl PublicKeyData for ZKeyPair {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        PublicKeyData::algorithm(&self.0)
    }
}

impl SigningKey for ZKeyPair {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}

/// The CA's key pair from its 32-byte scalar (ring needs a PKCS#8 document with the public
/// key in it; p256 derives the public key and writes the document, zeroized on drop).
fn key_pair(scalar: &[u8; 32], path: &Path) -> Result<ZKeyPair> {
    use p256::pkcs8::EncodePrivateKey;
    let sk = p256::SecretKey::from_bytes(p256::FieldBytes::from_slice(scalar))
        .map_err(|_| anyhow!("{} does not hold a valid P-256 private key", path.display()))?;
    let doc = sk
        .to_pkcs8_der()
        .map_err(|_| anyhow!("encoding the CA key from {}", path.display()))?;
    let kp = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(doc.as_bytes()),
        &PKCS_ECDSA_P256_SHA256,
    )
    .map_err(|e| anyhow!("loading the CA key from {}: {e}", path.display()))?;
    Ok(ZKeyPair(kp))
}

/// A fresh P-256 scalar: 32 random bytes, drawn again in the (2^-32) case they are not below
/// the group order.
fn new_scalar() -> Result<Zeroizing<[u8; 32]>> {
    loop {
        let k = keyfile::random_key()?;
        if p256::SecretKey::from_bytes(p256::FieldBytes::from_slice(&k[..])).is_ok() {
            return Ok(k);
        }
    }
}

pub(crate) fn serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow!("OS random source: {e}"))?;
    // Positive, and never a leading zero byte: 16 bytes exactly, as RFC 5280 allows (≤ 20).
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

/// A certificate as PEM with `\n` line ends (the pem crate's default is `\r\n`).
pub(crate) fn pem_cert(c: &CertificateDer<'_>) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", c.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub(crate) fn odt(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// The host named in the CA's subject: the kernel's host name, else the state directory.
fn host_label(root: &Path) -> String {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = h.trim();
    let label = if h.is_empty() {
        root.display().to_string()
    } else {
        h.to_string()
    };
    // A CN is at most 64 characters (RFC 5280's ub-common-name); the rest of it takes 30.
    label.chars().take(32).collect()
}

/// The CA certificate's parameters for `key`.
fn ca_params(root: &Path, key: &ZKeyPair, now: SystemTime) -> Result<CertificateParams> {
    let id = &blake3::hash(key.der_bytes()).to_hex()[..8];
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("ScopeHold local CA ({} {id})", host_label(root)),
    );
    dn.push(DnType::OrganizationName, "ScopeHold");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = odt(now - BACKDATE);
    p.not_after = odt(now + CA_VALIDITY);
    p.serial_number = Some(serial()?);
    Ok(p)
}

/// Whether `name` exists in `dir` (not following a symlink).
fn exists_at(dir: &fs::File, name: &str) -> Result<bool> {
    match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(anyhow!("checking {name} in the state directory: {e}")),
    }
}

/// Writes `bytes` to `name` in `dir` with `mode`: a temporary name (`O_EXCL|O_NOFOLLOW`),
/// synced, renamed over `name`, the directory synced. Readers see the old file or the new one.
pub(crate) fn replace_at(
    dir: &fs::File,
    root: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<()> {
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| anyhow!("OS random source: {e}"))?;
    let tmp = format!(".{name}.{}", hex::encode(rnd));
    let mut f = home::open_at(
        dir,
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| anyhow!("creating {}: {e}", root.join(&tmp).display()))?;
    // The umask may have narrowed the mode; the file's mode is set through its descriptor.
    let done = (|| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        nix::fcntl::renameat(dir, tmp.as_str(), dir, name)?;
        dir.sync_all()?;
        Ok(())
    })();
    if done.is_err() {
        let _ = nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    done.with_context(|| format!("writing {}", root.join(name).display()))
}

/// Reads `ca.pem`: a regular file of ours that no one else can write, bounded.
fn read_cert(dir: &fs::File, root: &Path) -> Result<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    let path = root.join(CA_CERT);
    let f = home::open_at(dir, CA_CERT, OFlag::O_RDONLY, Mode::empty()).map_err(|e| {
        anyhow!(
            "opening the CA certificate {} (a symlink is refused): {e}",
            path.display()
        )
    })?;
    let meta = f.metadata()?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        bail!(
            "the CA certificate {} must be a regular file owned by uid {me} that no one else can write",
            path.display()
        );
    }
    let mut text = Vec::new();
    f.take(MAX_CERT_FILE + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > MAX_CERT_FILE {
        bail!("the CA certificate {} is too large", path.display());
    }
    CertificateDer::from_pem_slice(&text)
        .map_err(|e| anyhow!("{} holds no PEM certificate: {e}", path.display()))
}

/// A certificate's SHA-256 fingerprint, colon-separated upper-case hex.
fn fingerprint_of(der: &CertificateDer<'_>) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The public key (SubjectPublicKeyInfo's bit string) a certificate names.
fn cert_public_key(der: &CertificateDer<'_>, path: &Path) -> Result<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("{} is not a valid certificate: {e}", path.display()))?;
    Ok(x.tbs_certificate
        .subject_pki
        .subject_public_key
        .data
        .to_vec())
}

/// Checks that `pem` (the text of a `ca.pem`) certifies the CA key `scalar`; `what` names
/// them in errors. A restore checks a backup's CA with it before writing anything.
pub(crate) fn check_pair(scalar: &[u8; 32], pem: &[u8], what: &str) -> Result<()> {
    use rustls_pki_types::pem::PemObject;
    let key = key_pair(scalar, Path::new(what))?;
    let cert = CertificateDer::from_pem_slice(pem)
        .map_err(|e| anyhow!("{what}: ca.pem holds no PEM certificate: {e}"))?;
    if cert_public_key(&cert, Path::new(what))? != key.0.public_key_raw() {
        bail!("{what}: ca.pem does not certify the key in ca.key (replaced or mixed up)");
    }
    Ok(())
}

/// Makes the CA (`ca.key`, sealed under `pass` if given, then `ca.pem`) in the state
/// directory open at `dir`. `ca.key` must not exist. Called by `init` and at start-up for a
/// state directory made before the CA existed.
pub(crate) fn create_at(dir: &fs::File, root: &Path, pass: Option<&Passphrase>) -> Result<()> {
    let scalar = new_scalar()?;
    let key = key_pair(&scalar, &root.join(CA_KEY))?;
    let cert = ca_params(root, &key, SystemTime::now())?
        .self_signed(&key)
        .map_err(|e| anyhow!("making the CA certificate: {e}"))?;
    // The certificate first: a crash between the two leaves a ca.pem with no ca.key, which
    // the next start replaces (the key is what marks the CA as made).
    replace_at(dir, root, CA_CERT, cert.pem().as_bytes(), 0o644)?;
    home::write_key(dir, root, Role::Ca, &scalar, pass)?;
    dir.sync_all()
        .with_context(|| format!("syncing {}", root.display()))?;
    Ok(())
}

/// Opens `ca.key` (plain, or sealed under `pass`) after finishing or discarding a
/// `ca.key.new` left by an interrupted `passphrase change`, as [`Home::load_keys`] does for
/// the other keys.
fn open_key(dir: &fs::File, root: &Path, pass: Option<&Passphrase>) -> Result<(ZKeyPair, bool)> {
    let path = root.join(CA_KEY);
    let pending = format!("{CA_KEY}.new");
    if let Some(pf) = home::read_pending(dir, root, Role::Ca)? {
        let taken = pf.open(Role::Ca, &root.join(&pending), pass).is_ok();
        if taken {
            nix::fcntl::renameat(dir, pending.as_str(), dir, CA_KEY)
                .map_err(|e| anyhow!("finishing a passphrase change ({pending}): {e}"))?;
            tracing::info!(file = %path.display(), "finished an interrupted passphrase change");
        } else {
            nix::unistd::unlinkat(
                dir,
                pending.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| anyhow!("removing the stale {pending}: {e}"))?;
        }
        dir.sync_all()
            .with_context(|| format!("syncing {}", root.display()))?;
    }
    let kf: KeyFile = home::read_key(dir, root, Role::Ca)?;
    let sealed = kf.is_sealed();
    let scalar = kf.open(Role::Ca, &path, pass)?;
    Ok((key_pair(&scalar, &path)?, sealed))
}

/// What `doctor` can tell of the CA's files without the passphrase and without locking the
/// state directory (a running daemon holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `ca.key` is sealed under the passphrase.
    pub key_sealed: bool,
    /// `master.key` is: `ca.key` must be sealed exactly when it is.
    pub master_sealed: bool,
    /// The end of `ca.pem`'s validity.
    pub not_after: SystemTime,
    /// `ca.pem`'s SHA-256 fingerprint (as [`Ca::fingerprint`]).
    pub fingerprint: String,
    /// Whether `ca.pem` certifies the key in `ca.key`; `None` when the key is sealed (it
    /// cannot be read without the passphrase).
    pub key_matches: Option<bool>,
}

/// Reads `ca.key` and `ca.pem` as the daemon would (through the state directory's
/// descriptor, `O_NOFOLLOW`, owner and mode checked) and reports on them. Fails naming the
/// file when one is missing, exposed or unreadable. The key never leaves this function.
pub fn inspect(home: &Home) -> Result<CaFiles> {
    let dir = home::open_private_dir(&home.root)?;
    let root = &home.root;
    for name in [CA_KEY, CA_CERT] {
        if !exists_at(&dir, name)? {
            bail!(
                "{} is missing (the daemon makes the CA at its next start)",
                root.join(name).display()
            );
        }
    }
    let master_sealed = home::read_key(&dir, root, Role::Master)?.is_sealed();
    let kf = home::read_key(&dir, root, Role::Ca)?;
    let cert = read_cert(&dir, root)?;
    let path = root.join(CA_CERT);
    let (_, x) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| anyhow!("{} is not a valid certificate: {e}", path.display()))?;
    let na = x.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(na).unwrap_or(0));
    let key_matches = match &kf {
        KeyFile::Plain(scalar) => {
            let key = key_pair(scalar, &root.join(CA_KEY))?;
            Some(cert_public_key(&cert, &path)? == key.0.public_key_raw())
        }
        KeyFile::Sealed(_) => None,
    };
    Ok(CaFiles {
        key_sealed: kf.is_sealed(),
        master_sealed,
        not_after,
        fingerprint: fingerprint_of(&cert),
        key_matches,
    })
}

/// Re-seals `ca.key` under `new` as `ca.key.new` (for [`Home::change_passphrase`], which
/// renames it into place with the others). `old` opens the current file. Without a CA
/// (a state directory of the previous release) nothing is written and `false` returned.
pub(crate) fn write_pending(
    dir: &fs::File,
    root: &Path,
    old: Option<&Passphrase>,
    new: &Passphrase,
) -> Result<bool> {
    if !exists_at(dir, CA_KEY)? {
        return Ok(false);
    }
    let path = root.join(CA_KEY);
    let scalar = home::read_key(dir, root, Role::Ca)?.open(Role::Ca, &path, old)?;
    let bytes = keyfile::encode(Role::Ca, &scalar, Some(new))?;
    home::write_at(dir, root, &format!("{CA_KEY}.new"), &bytes)?;
    Ok(true)
}

/// Where a trust bundle's system roots came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The system's store (rustls-native-certs: `SSL_CERT_FILE`/`SSL_CERT_DIR` if set, else
    /// the distribution's bundle); `errors` counts files or certificates that failed to load.
    System { count: usize, errors: usize },
    /// No system root could be loaded: Mozilla's roots compiled into ScopeHold
    /// (webpki-root-certs).
    Bundled { count: usize },
}

/// A trust bundle written for children.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The file: point `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` and `NODE_EXTRA_CA_CERTS` at it.
    pub path: PathBuf,
    /// Where the roots beside the CA came from.
    pub roots: Roots,
}

/// The ScopeHold CA, loaded: its certificate and its signing key (never printed).
pub struct Ca {
    issuer: Issuer<'static, ZKeyPair>,
    cert: CertificateDer<'static>,
    pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA of an initialised state directory: `ca.key` (opened with the passphrase
    /// from `home.passphrase` if it is sealed) and `ca.pem`, which must certify that key.
    /// Fails (naming the file) if either is missing, corrupt, of the wrong mode or owner.
    pub fn load(home: &Home) -> Result<Ca> {
        let dir = home::lock(home::open_private_dir(&home.root)?)?;
        Self::load_at(&dir, home, None)
    }

    /// [`Ca::load`], creating the CA first if the state directory has none (one made by a
    /// release before the CA existed). Returns whether it was created. A new `ca.key` is
    /// sealed when the other keys are, under their passphrase (checked against `master.key`
    /// before it seals anything).
    pub fn load_or_create(home: &Home) -> Result<(Ca, bool)> {
        let dir = home::lock(home::open_private_dir(&home.root)?)?;
        if exists_at(&dir, CA_KEY)? {
            return Ok((Self::load_at(&dir, home, None)?, false));
        }
        let master = home::read_key(&dir, &home.root, Role::Master)?;
        let pass = if master.is_sealed() {
            let p = home.passphrase.get()?;
            master.open(Role::Master, &home.master_key(), Some(&p))?;
            Some(p)
        } else {
            None
        };
        create_at(&dir, &home.root, pass.as_ref())?;
        Ok((Self::load_at(&dir, home, pass.as_ref())?, true))
    }

    fn load_at(dir: &fs::File, home: &Home, pass: Option<&Passphrase>) -> Result<Ca> {
        let root = &home.root;
        let master_sealed = home::read_key(dir, root, Role::Master)?.is_sealed();
        let asked;
        let pass = match pass {
            Some(p) => Some(p),
            None if master_sealed => {
                asked = home.passphrase.get()?;
                Some(&asked)
            }
            None => None,
        };
        let (key, sealed) = open_key(dir, root, pass)?;
        if sealed != master_sealed {
            bail!(
                "{}: ca.key is {} but master.key is {}; run `scopehold passphrase change` to seal every key",
                root.display(),
                if sealed { "sealed" } else { "not sealed" },
                if master_sealed {
                    "sealed"
                } else {
                    "not sealed"
                },
            );
        }
        let path = root.join(CA_CERT);
        let cert = read_cert(dir, root)?;
        if cert_public_key(&cert, &path)? != key.0.public_key_raw() {
            bail!(
                "the CA certificate {} does not certify the key in {} (replaced or mixed up)",
                path.display(),
                root.join(CA_KEY).display()
            );
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| anyhow!("reading the CA certificate {}: {e}", path.display()))?;
        let pem = pem_cert(&cert);
        Ok(Ca { issuer, cert, pem })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The certificate's SHA-256 fingerprint, colon-separated upper-case hex (as
    /// `openssl x509 -fingerprint -sha256` prints it).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.cert)
    }

    /// The trust bundle's text: the system roots (else the bundled Mozilla roots) then this
    /// CA, each once.
    pub fn bundle_pem(&self) -> (String, Roots) {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system root certificate did not load");
        }
        let (certs, roots) = if native.certs.is_empty() {
            let c: Vec<CertificateDer<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
            let n = c.len();
            (c, Roots::Bundled { count: n })
        } else {
            let n = native.certs.len();
            (
                native.certs,
                Roots::System {
                    count: n,
                    errors: native.errors.len(),
                },
            )
        };
        let mut seen = std::collections::HashSet::new();
        let mut out = String::new();
        for c in certs.iter().chain(std::iter::once(&self.cert)) {
            if seen.insert(c.as_ref().to_vec()) {
                out.push_str(&pem_cert(c));
            }
        }
        (out, roots)
    }

    /// Writes the trust bundle as [`BUNDLE`] in `dir` (mode 0644, owned by the daemon's uid,
    /// replaced atomically). `dir` must be ours and writable by no one else, so a child can
    /// read the bundle but not change it; a child of another uid must also be able to reach
    /// it (the state directory is 0700: for such children use a directory they can traverse,
    /// e.g. the socket's directory under `--socket-group`).
    pub fn write_bundle(&self, dir: &Path) -> Result<Bundle> {
        let d = home::open_private_dir(dir)?;
        let (text, roots) = self.bundle_pem();
        replace_at(&d, dir, BUNDLE, text.as_bytes(), 0o644)?;
        Ok(Bundle {
            path: dir.join(BUNDLE),
            roots,
        })
    }

    /// A resolver that mints leaves for the names `allow` accepts. Takes a fresh leaf key.
    pub fn leaf_resolver(
        self: &Arc<Self>,
        allow: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Result<LeafResolver> {
        let key = ZKeyPair(
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(|e| anyhow!("making the leaf key: {e}"))?,
        );
        let der = Zeroizing::new(key.0.serialize_der());
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(der.as_slice()),
        ))
        .map_err(|e| anyhow!("loading the leaf key: {e}"))?;
        Ok(LeafResolver {
            ca: self.clone(),
            key,
            signer,
            allow: Box::new(allow),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// A TLS server configuration (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`) that
    /// answers with leaves from [`Ca::leaf_resolver`]: what the proxy hands a
    /// `tokio_rustls::TlsAcceptor` after answering a `CONNECT`.
    pub fn server_config(
        self: &Arc<Self>,
        allow: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Result<Arc<rustls::ServerConfig>> {
        let resolver = Arc::new(self.leaf_resolver(allow)?);
        let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(c))
    }
}

struct Cached {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
    minted: SystemTime,
}

/// Answers a TLS ClientHello with a leaf for exactly its SNI name, when the caller's
/// predicate allows that name; `None` (the handshake fails) for any other name or none.
pub struct LeafResolver {
    ca: Arc<Ca>,
    key: ZKeyPair,
    signer: Arc<dyn rustls::sign::SigningKey>,
    allow: Box<dyn Fn(&str) -> bool + Send + Sync>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for LeafResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.cache.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("LeafResolver")
            .field("ca", &self.ca)
            .field("cached", &n)
            .finish_non_exhaustive()
    }
}

impl LeafResolver {
    /// The leaf for `name` (lower-cased), from the cache or minted now; an error if `allow`
    /// refuses the name or it is not a DNS name.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>> {
        self.leaf_at(name, SystemTime::now())
    }

    /// [`Self::leaf`] as of `now` (tests move the clock to see re-minting).
    pub fn leaf_at(&self, name: &str, now: SystemTime) -> Result<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if !(self.allow)(&name) {
            bail!("no certificate for {name}: not a host the proxy serves");
        }
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still a map.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&name)
            && now + RENEW_BEFORE < c.not_after
            && now >= c.minted
        {
            return Ok(c.key.clone());
        }
        let (key, not_after) = self.mint(&name, now)?;
        if cache.len() >= CACHE_MAX && !cache.contains_key(&name) {
            // The oldest leaf goes (one scan of at most CACHE_MAX entries, on a miss only).
            if let Some(old) = cache
                .iter()
                .min_by_key(|(_, c)| c.minted)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&old);
            }
        }
        cache.insert(
            name,
            Cached {
                key: key.clone(),
                not_after,
                minted: now,
            },
        );
        Ok(key)
    }

    /// How many leaves are cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn mint(&self, name: &str, now: SystemTime) -> Result<(Arc<CertifiedKey>, SystemTime)> {
        let mut p = CertificateParams::new(vec![name.to_string()])
            .map_err(|e| anyhow!("{name} is not a DNS name: {e}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let not_after = now - BACKDATE + LEAF_VALIDITY;
        p.not_before = odt(now - BACKDATE);
        p.not_after = odt(not_after);
        p.serial_number = Some(serial()?);
        let cert = p
            .signed_by(&self.key, &self.ca.issuer)
            .map_err(|e| anyhow!("issuing a certificate for {name}: {e}"))?;
        let ck = CertifiedKey::new(vec![cert.der().clone()], self.signer.clone());
        Ok((Arc::new(ck), not_after))
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            tracing::debug!("TLS client sent no server name: no certificate");
            return None;
        };
        match self.leaf(name) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::info!(error = %e, "TLS handshake refused");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    fn ca() -> (tempfile::TempDir, Arc<Ca>) {
        let t = tempfile::tempdir().unwrap();
        let home = Home::new(Some(t.path().join("state")), None).unwrap();
        home.init().unwrap();
        let ca = Arc::new(Ca::load(&home).unwrap());
        (t, ca)
    }

    fn dns_names(der: &[u8]) -> Vec<String> {
        let (_, x) = x509_parser::parse_x509_certificate(der).unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::DNSName(n) => n.to_string(),
                other => panic!("unexpected SAN {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_leaf_names_exactly_the_host_is_cached_and_reminted_before_it_expires() {
        let (_t, ca) = ca();
        let r = ca.leaf_resolver(|h| h == "api.example.test").unwrap();
        let now = SystemTime::now();
        // Asked in any case, issued for the lower-cased name only.
        let a = r.leaf_at("API.Example.test", now).unwrap();
        let der = a.cert[0].as_ref();
        assert_eq!(dns_names(der), ["api.example.test"]);
        let (_, x) = x509_parser::parse_x509_certificate(der).unwrap();
        let (_, cax) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(x.issuer().as_raw(), cax.subject().as_raw());
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth && !eku.any);
        let bc = x.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        let v = x.validity();
        let nb = v.not_before.timestamp();
        let na = v.not_after.timestamp();
        let unix = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            nb < unix && unix - nb <= 3600 + 1,
            "backdated an hour: {nb} vs {unix}"
        );
        assert_eq!(na - nb, 7 * 24 * 3600);
        // Cached: the same certificate, not a new one.
        let b = r
            .leaf_at("api.example.test", now + Duration::from_secs(60))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Five and a half days on (less than a day left of its seven): still the same.
        let later = now + Duration::from_secs(5 * 24 * 3600);
        assert!(Arc::ptr_eq(
            &a,
            &r.leaf_at("api.example.test", later).unwrap()
        ));
        // Six and a half days on: re-minted, a new serial, valid from then.
        let late = now + Duration::from_secs(6 * 24 * 3600 + 12 * 3600);
        let c = r.leaf_at("api.example.test", late).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        let (_, cx) = x509_parser::parse_x509_certificate(c.cert[0].as_ref()).unwrap();
        assert_ne!(cx.serial, x.serial);
        assert!(cx.validity().not_after.timestamp() > na);
        // A name the predicate refuses gets nothing, and nothing is cached for it.
        let e = r.leaf("evil.example.test").unwrap_err();
        assert!(e.to_string().contains("evil.example.test"), "{e}");
        assert_eq!(r.cached(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let (_t, ca) = ca();
        let r = ca.leaf_resolver(|_| true).unwrap();
        let t0 = SystemTime::now();
        for i in 0..CACHE_MAX + 10 {
            r.leaf_at(
                &format!("h{i}.example.test"),
                t0 + Duration::from_secs(i as u64),
            )
            .unwrap();
        }
        assert_eq!(r.cached(), CACHE_MAX);
        // The oldest went first: h0 is minted anew, the newest is still cached.
        let newest = format!("h{}.example.test", CACHE_MAX + 9);
        let t1 = t0 + Duration::from_secs(1000);
        let n1 = r.leaf_at(&newest, t1).unwrap();
        assert!(Arc::ptr_eq(&n1, &r.leaf_at(&newest, t1).unwrap()));
        let cache = r.cache.lock().unwrap();
        assert!(!cache.contains_key("h0.example.test"));
        assert!(cache.contains_key("h10.example.test"));
    }

    #[test]
    fn debug_output_holds_no_key() {
        let (t, ca) = ca();
        let r = ca.leaf_resolver(|_| true).unwrap();
        let scalar = fs::read(t.path().join("state").join(CA_KEY)).unwrap();
        let dbg = format!("{ca:?} {r:?}");
        assert!(dbg.contains(&ca.fingerprint()), "{dbg}");
        assert!(!dbg.contains(&hex::encode(&scalar)), "{dbg}");
        assert!(!dbg.to_lowercase().contains("private"), "{dbg}");
    }
}
