//! The HTTPS_PROXY certificate authority (`daemon::ca`): real TLS handshakes over loopback
//! against its leaves (rustls and curl, trusting only the bundle it writes), its files'
//! modes and sealing, and clear errors for damaged files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use scopehold::daemon::Home;
use scopehold::daemon::ca::{self, Ca, Roots};
use scopehold::daemon::keyfile::{MAGIC, Passphrase, PassphraseSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "api.example.test";

fn home(t: &tempfile::TempDir, pass: Option<&str>) -> Home {
    let mut h = Home::new(Some(t.path().join("state")), None).unwrap();
    if let Some(p) = pass {
        // One file per passphrase: a second home on the same directory leaves the first's.
        let f = t.path().join(format!("pass-{}", p.replace(' ', "-")));
        std::fs::write(&f, p).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        h.passphrase = PassphraseSource { file: Some(f) };
    }
    h
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A TLS server on 127.0.0.1 answering one fixed HTTP response, with leaves from the CA for
/// `HOST` only.
struct Server {
    rt: tokio::runtime::Runtime,
    port: u16,
}

fn serve(ca: &Arc<Ca>) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(|h| h == HOST).unwrap());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                let body = format!("served {sni}");
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Server { rt, port }
}

fn client_config(roots: Vec<CertificateDer<'static>>) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    let (ok, _) = store.add_parsable_certificates(roots);
    assert!(ok > 0);
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth(),
    )
}

/// A rustls handshake to the server as `name`; on success the server's leaf and its answer.
fn connect(
    s: &Server,
    cfg: &Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<(CertificateDer<'static>, String), String> {
    let connector = tokio_rustls::TlsConnector::from(cfg.clone());
    let port = s.port;
    s.rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = tls.read_to_string(&mut out).await;
        Ok((leaf, out))
    })
}

fn bundle_certs(p: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(p)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn curl(bundle: &Path, port: u16, name: &str) -> std::process::Output {
    // SSL_CERT_FILE, as a child of `scopehold run` gets it, rather than --cacert.
    Command::new("curl")
        .env_clear()
        .env("SSL_CERT_FILE", bundle)
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/"))
        .output()
        .unwrap()
}

#[test]
fn only_clients_trusting_the_bundle_complete_a_handshake_and_only_for_allowed_names() {
    let t = tempfile::tempdir().unwrap();
    let h = home(&t, None);
    h.init().unwrap();
    let ca = Arc::new(Ca::load(&h).unwrap());
    let bundle = ca.write_bundle(&h.root).unwrap();
    assert_eq!(bundle.path, h.root.join(ca::BUNDLE));
    assert_eq!(mode(&bundle.path), 0o644);
    let in_bundle = bundle_certs(&bundle.path);
    // The system roots (or the bundled ones) and the CA, once.
    assert!(in_bundle.len() > 10, "{} certificates", in_bundle.len());
    assert_eq!(in_bundle.iter().filter(|c| *c == ca.cert_der()).count(), 1);
    match bundle.roots {
        Roots::System { count, .. } | Roots::Bundled { count } => {
            assert_eq!(count + 1, in_bundle.len())
        }
    }

    let s = serve(&ca);
    let trusting = client_config(in_bundle);
    let (leaf, answer) = connect(&s, &trusting, ServerName::try_from(HOST).unwrap()).unwrap();
    assert!(answer.ends_with("served api.example.test"), "{answer}");
    let (_, x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        format!("{:?}", san.general_names),
        format!("[DNSName({HOST:?})]")
    );
    // The same leaf again from the cache.
    let (again, _) = connect(&s, &trusting, ServerName::try_from(HOST).unwrap()).unwrap();
    assert_eq!(leaf, again);

    // A name the predicate refuses: no certificate, the handshake fails.
    let e = connect(
        &s,
        &trusting,
        ServerName::try_from("evil.example.test").unwrap(),
    )
    .unwrap_err();
    assert!(e.contains("handshake") || e.contains("alert"), "{e}");
    // No SNI at all (rustls sends none for an IP address): fails too.
    let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    assert!(connect(&s, &trusting, ip).is_err());
    // A client that trusts only the public roots does not accept the leaf.
    let public = client_config(webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec());
    let e = connect(&s, &public, ServerName::try_from(HOST).unwrap()).unwrap_err();
    assert!(
        e.contains("UnknownIssuer") || e.contains("unknown issuer"),
        "{e}"
    );

    // curl (OpenSSL) through SSL_CERT_FILE: the allowed name works, another does not, and
    // without the bundle the allowed name fails verification.
    let o = curl(&bundle.path, s.port, HOST);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "served api.example.test"
    );
    let o = curl(&bundle.path, s.port, "evil.example.test");
    assert!(!o.status.success());
    let empty = t.path().join("empty.pem");
    std::fs::write(&empty, webpki_pem()).unwrap();
    let o = curl(&empty, s.port, HOST);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The public roots only, as PEM: a bundle without the ScopeHold CA.
fn webpki_pem() -> String {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
        .collect()
}

#[test]
fn the_ca_certificate_is_a_pathlen_0_ca_for_signing_certificates_only() {
    let t = tempfile::tempdir().unwrap();
    let h = home(&t, None);
    h.init().unwrap();
    let pem_path = h.root.join(ca::CA_CERT);
    assert_eq!(mode(&pem_path), 0o644);
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&pem_path)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let after = |what: &str| {
        let i = text
            .find(what)
            .unwrap_or_else(|| panic!("no {what} in\n{text}"));
        text[i..].lines().take(2).collect::<Vec<_>>().join("\n")
    };
    let bc = after("X509v3 Basic Constraints");
    assert!(
        bc.contains("critical") && bc.contains("CA:TRUE, pathlen:0"),
        "{bc}"
    );
    let ku = after("X509v3 Key Usage");
    assert!(ku.contains("critical"), "{ku}");
    assert_eq!(
        ku.lines().nth(1).unwrap().trim(),
        "Certificate Sign, CRL Sign"
    );
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    assert!(
        text.contains("Subject: CN = ScopeHold local CA ("),
        "{text}"
    );
    assert!(!text.contains("Name Constraints"));
    // Ten years.
    let der = bundle_certs(&pem_path).remove(0);
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    let v = x.validity();
    let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86400;
    assert!((3650..=3651).contains(&days), "{days} days");
    // `Ca::fingerprint` is what openssl prints.
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&pem_path)
        .output()
        .unwrap();
    let ca = Ca::load(&h).unwrap();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().trim(),
        format!("sha256 Fingerprint={}", ca.fingerprint())
    );
}

#[test]
fn ca_key_is_0600_and_sealed_with_the_other_keys() {
    let t = tempfile::tempdir().unwrap();
    let plain = home(&t, None);
    plain.init().unwrap();
    let key = plain.root.join(ca::CA_KEY);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);

    let t2 = tempfile::tempdir().unwrap();
    let sealed = home(&t2, Some("correct horse"));
    sealed.init().unwrap();
    let key = sealed.root.join(ca::CA_KEY);
    assert_eq!(mode(&key), 0o600);
    let bytes = std::fs::read(&key).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with(&format!("{MAGIC}\nrole: ca.key\n")),
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"));
    let ca = Ca::load(&sealed).unwrap();
    // The wrong passphrase opens nothing, and says so.
    let wrong = home(&t2, Some("wrong"));
    let e = Ca::load(&wrong).unwrap_err();
    assert!(format!("{e:#}").contains("wrong passphrase"), "{e:#}");

    // `passphrase change` re-seals ca.key with the others; the CA stays the same.
    std::fs::write(t2.path().join("new"), "battery staple").unwrap();
    std::fs::set_permissions(
        t2.path().join("new"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    sealed
        .change_passphrase(&sealed.passphrase, || {
            Passphrase::from_file(&t2.path().join("new"))
        })
        .unwrap();
    assert_ne!(std::fs::read_to_string(&key).unwrap(), text);
    assert!(Ca::load(&sealed).is_err());
    let renewed = home(&t2, Some("battery staple"));
    renewed.load_keys().unwrap();
    assert_eq!(Ca::load(&renewed).unwrap().fingerprint(), ca.fingerprint());

    // Sealing an unsealed state seals ca.key too.
    std::fs::write(t.path().join("new"), "battery staple").unwrap();
    std::fs::set_permissions(t.path().join("new"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = Ca::load(&plain).unwrap().fingerprint();
    plain
        .change_passphrase(&plain.passphrase, || {
            Passphrase::from_file(&t.path().join("new"))
        })
        .unwrap();
    let k = std::fs::read(plain.root.join(ca::CA_KEY)).unwrap();
    assert!(k.starts_with(MAGIC.as_bytes()));
    let plain = Home {
        passphrase: PassphraseSource {
            file: Some(t.path().join("new")),
        },
        ..plain
    };
    assert_eq!(Ca::load(&plain).unwrap().fingerprint(), before);
}

#[test]
fn a_damaged_or_exposed_ca_file_gets_a_clear_error_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let h = home(&t, None);
    h.init().unwrap();
    let key = h.root.join(ca::CA_KEY);
    let cert = h.root.join(ca::CA_CERT);
    let good_key = std::fs::read(&key).unwrap();
    let err = |h: &Home| format!("{:#}", Ca::load(h).unwrap_err());

    // Corrupted: neither a key nor a sealed key file.
    std::fs::write(&key, b"garbage, not a key").unwrap();
    let e = err(&h);
    assert!(
        e.contains(&key.display().to_string()) && e.contains("neither"),
        "{e}"
    );
    // 32 bytes that are no P-256 scalar (above the group order).
    std::fs::write(&key, [0xffu8; 32]).unwrap();
    let e = err(&h);
    assert!(
        e.contains(&key.display().to_string()) && e.contains("P-256"),
        "{e}"
    );
    // Readable by others.
    std::fs::write(&key, &good_key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = err(&h);
    assert!(
        e.contains(&key.display().to_string()) && e.contains("644"),
        "{e}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A symlink in its place.
    let elsewhere = t.path().join("elsewhere.key");
    std::fs::rename(&key, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
    let e = err(&h);
    assert!(e.contains("symlink"), "{e}");
    std::fs::remove_file(&key).unwrap();
    std::fs::rename(&elsewhere, &key).unwrap();
    Ca::load(&h).unwrap();

    // ca.pem: damaged, or another CA's certificate.
    let good_cert = std::fs::read(&cert).unwrap();
    std::fs::write(&cert, b"not a certificate").unwrap();
    let e = err(&h);
    assert!(e.contains(&cert.display().to_string()), "{e}");
    let t2 = tempfile::tempdir().unwrap();
    let other = home(&t2, None);
    other.init().unwrap();
    std::fs::copy(other.root.join(ca::CA_CERT), &cert).unwrap();
    let e = err(&h);
    assert!(e.contains("does not certify"), "{e}");
    std::fs::write(&cert, &good_cert).unwrap();
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = err(&h);
    assert!(e.contains(&cert.display().to_string()), "{e}");
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    Ca::load(&h).unwrap();
}

#[test]
fn a_state_directory_without_a_ca_gets_one_sealed_like_its_keys() {
    let t = tempfile::tempdir().unwrap();
    let h = home(&t, Some("correct horse"));
    h.init().unwrap();
    // As the previous release left it: no ca.key, no ca.pem.
    for f in [ca::CA_KEY, ca::CA_CERT] {
        std::fs::remove_file(h.root.join(f)).unwrap();
    }
    let err = format!("{:#}", Ca::load(&h).unwrap_err());
    assert!(err.contains("ca.key"), "{err}");
    // Created with the passphrase of the other keys; a wrong one is refused before
    // anything is written.
    let wrong = home(&t, Some("wrong"));
    assert!(Ca::load_or_create(&wrong).is_err());
    assert!(!h.root.join(ca::CA_KEY).exists());
    let (ca, created) = Ca::load_or_create(&h).unwrap();
    assert!(created);
    let k = std::fs::read(h.root.join(ca::CA_KEY)).unwrap();
    assert!(k.starts_with(MAGIC.as_bytes()));
    let (again, created) = Ca::load_or_create(&h).unwrap();
    assert!(!created);
    assert_eq!(again.fingerprint(), ca.fingerprint());
}
