//! `scopehold run --proxy`: the child gets placeholders and base URLs, never a key.
//!
//! The run asks the daemon for a run (`POST /v1/runs`): one placeholder per secret, valid
//! only through the proxy, for this run's grants, from this uid, until the run ends. The
//! daemon's answer stays open while the run lasts; this process holds it, and when it exits
//! (or is killed) the connection closes and the placeholders die.
//!
//! The child reaches the proxy on loopback: the daemon's own listener if it has one, else a
//! relay here that copies bytes between loopback connections (from this uid only) and the
//! daemon's socket. Either way the key is injected in the daemon; it never passes through
//! this process or the child.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::anyhow;
use zeroize::Zeroizing;

use super::child;
use crate::api::endpoint;
use crate::api::wire::{RunEndRequest, RunStartRequest, RunStarted, SecretString};
use crate::cli::client::{self, CallError};
use crate::cli::commands::Ctx;
use crate::cli::exit::{EXIT_DENIED, EXIT_ERROR, EXIT_UNREACHABLE, Exit};
use crate::domain::{ProjectName, SecretName};

/// Runs `command` with placeholders for `secrets`; `vars` names the variable of a secret
/// when `--env` did.
pub fn run(
    ctx: &Ctx,
    project: &ProjectName,
    secrets: &[(Option<String>, SecretName)],
    command: &[String],
    allow_member_uid: bool,
) -> Result<(), Exit> {
    let token = super::token();
    let req = RunStartRequest {
        project: project.clone(),
        secrets: secrets.iter().map(|(_, s)| s.clone()).collect(),
        allow_member_uid,
    };
    if allow_member_uid {
        crate::cli::out::errln!(
            "scopehold: warning: --allow-member-uid: the command runs under a member's uid and could act as that member; the key is kept from it only if it does not try"
        );
    }
    let (started, held) = client::call_held::<endpoint::RunStart>(
        &ctx.socket,
        ctx.daemon_uid,
        &req,
        token.as_deref().map(|t| t.as_str()),
    )
    .map_err(call_exit)?;
    let base = match &started.proxy_listen {
        Some(a) => format!("http://{a}"),
        None => {
            let addr = relay(ctx.socket.clone(), ctx.daemon_uid)?;
            format!("http://{addr}")
        }
    };
    let mut env = child_env(&started, secrets, project, &base);
    // HTTPS_PROXY for tools with no base-URL setting (git, curl, gh...): the daemon answers
    // CONNECT to a profile's host with a leaf of the ScopeHold CA, which this child alone
    // trusts, through a bundle written here (system roots + the CA).
    let bundle_dir = match (&started.ca_bundle, started.placeholders.first()) {
        (Some(pem), Some(first)) => {
            let dir = private_dir()?;
            let file = dir.join("ca-bundle.pem");
            std::fs::write(&file, pem).map_err(|e| anyhow!("writing the CA bundle: {e}"))?;
            let f = file.display().to_string();
            let hostport = base.trim_start_matches("http://");
            let proxy_url = format!("http://scopehold:{}@{hostport}", first.placeholder.expose());
            let plain = |s: String| SecretString::new(Zeroizing::new(s));
            for k in ["HTTPS_PROXY", "https_proxy"] {
                env.push((k.into(), plain(proxy_url.clone())));
            }
            // The base URLs are on 127.0.0.1: not through the proxy again.
            for k in ["NO_PROXY", "no_proxy"] {
                env.push((k.into(), plain("127.0.0.1".into())));
            }
            for k in [
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
                "CURL_CA_BUNDLE",
                "GIT_SSL_CAINFO",
            ] {
                env.push((k.into(), plain(f.clone())));
            }
            Some(dir)
        }
        _ => None,
    };
    // The held answer, on its own thread: if the daemon ends the run (it stops, or the run
    // is ended from elsewhere) the child is told on stderr; its proxied calls are refused.
    let run = started.run;
    std::thread::spawn(move || {
        held.wait_end();
        crate::cli::out::errln!(
            "scopehold: run {run} was ended by the daemon; proxied calls are refused from now on"
        );
    });
    // No masking: the child holds no value to leak, only placeholders that die with the run.
    let code = child::spawn_and_wait(command, &env, None, std::future::pending())?;
    // Ends the run at once (the closing connection would end it within a second anyway).
    let _ = client::call_expecting::<endpoint::RunEnd>(
        &ctx.socket,
        ctx.daemon_uid,
        &RunEndRequest { run },
        token.as_deref().map(|t| t.as_str()),
    );
    drop(env);
    if let Some(d) = bundle_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    std::process::exit(code);
}

/// A fresh 0700 directory under the temporary directory (created, never reused: a path
/// that exists, a symlink included, fails).
fn private_dir() -> Result<PathBuf, Exit> {
    use std::os::unix::fs::DirBuilderExt;
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| anyhow!("OS random source: {e}"))?;
    let d = std::env::temp_dir().join(format!("scopehold-run-{}", hex::encode(rnd)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&d)
        .map_err(|e| anyhow!("creating {}: {e}", d.display()))?;
    Ok(d)
}

fn call_exit(e: CallError) -> Exit {
    let code = match &e {
        CallError::Client(client::ClientError::Unreachable { .. }) => EXIT_UNREACHABLE,
        CallError::Refused {
            status: 401 | 403 | 429,
            ..
        } => EXIT_DENIED,
        _ => EXIT_ERROR,
    };
    Exit::new(code, e)
}

/// The child's variables: for each secret its placeholder (in `--env`'s variable, else its
/// profile's key variables, else `PROVIDER_NAME`), and its profile's base-URL variables
/// pointing at the proxy (the first secret of a provider sets them).
fn child_env(
    started: &RunStarted,
    secrets: &[(Option<String>, SecretName)],
    project: &ProjectName,
    base: &str,
) -> Vec<(String, SecretString)> {
    let mut env: Vec<(String, SecretString)> = Vec::new();
    let plain = |s: String| SecretString::new(Zeroizing::new(s));
    let set = |env: &mut Vec<(String, SecretString)>, k: &str, v: SecretString| {
        if !env.iter().any(|(e, _)| e == k) {
            env.push((k.to_string(), v));
        }
    };
    for p in &started.placeholders {
        let explicit = secrets
            .iter()
            .find(|(_, s)| *s == p.secret)
            .and_then(|(v, _)| v.clone());
        let alone = started
            .placeholders
            .iter()
            .filter(|o| o.secret.provider() == p.secret.provider())
            .count()
            == 1;
        let vars: Vec<String> = match explicit {
            Some(v) => vec![v],
            None if alone && !p.profile.key_env.is_empty() => p.profile.key_env.clone(),
            None => vec![super::env_name(&p.secret)],
        };
        for v in vars {
            set(&mut env, &v, p.placeholder.clone());
        }
        let url = format!(
            "{base}/v1/proxy/{project}/{}{}",
            p.secret, p.profile.base_path
        );
        for v in &p.profile.base_url_env {
            set(&mut env, v, plain(url.clone()));
        }
    }
    set(&mut env, "SCOPEHOLD_PROXY", plain(base.to_string()));
    env
}

/// A loopback listener relaying each connection, from this uid only, to the daemon's
/// socket (checked to be the daemon's uid, as every CLI call is). Returns its address.
fn relay(socket: PathBuf, daemon_uid: Option<u32>) -> Result<SocketAddr, Exit> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| anyhow!("binding the proxy relay: {e}"))?;
    let addr = l
        .local_addr()
        .map_err(|e| anyhow!("the proxy relay's address: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| anyhow!("the proxy relay: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                crate::cli::out::errln!("scopehold: the proxy relay cannot start: {e}");
                return;
            }
        };
        rt.block_on(async move {
            let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                return;
            };
            loop {
                let Ok((tcp, peer)) = l.accept().await else {
                    continue;
                };
                // Another uid cannot use this run's relay, even with a stolen placeholder.
                if crate::daemon::proxy::peer::tcp_peer_uid(addr, peer) != Some(me) {
                    continue;
                }
                let socket = socket.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let Ok(unix) = std::os::unix::net::UnixStream::connect(&socket) else {
                        return;
                    };
                    if let Some(want) = daemon_uid {
                        let cred = nix::sys::socket::getsockopt(
                            &unix,
                            nix::sys::socket::sockopt::PeerCredentials,
                        );
                        if cred.map(|c| c.uid()).ok() != Some(want) {
                            return;
                        }
                    }
                    if unix.set_nonblocking(true).is_err() {
                        return;
                    }
                    let Ok(mut unix) = tokio::net::UnixStream::from_std(unix) else {
                        return;
                    };
                    let mut tcp = tcp;
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                });
            }
        });
    });
    Ok(addr)
}
