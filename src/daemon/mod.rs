//! `scopehold daemon`: the foreground daemon on its embedded default.
//!
//! `home` lays out the state directory; `engine` holds the state, the log and the keys and
//! executes commands; `server` serves the socket, `handlers` answer each route, `http` reads
//! bodies and builds answers in zeroizing buffers; `seal` encrypts values at rest.

pub mod backup; // `backup` and `restore`: one file, keys sealed, the log to a checkpoint
pub mod ca; // the HTTPS_PROXY certificate authority
pub mod denials;
pub mod edge; // an edge: this host's agents served through a hub
pub mod engine;
pub mod handlers;
pub mod hardening;
pub mod home;
pub mod http;
pub mod hub; // the hub: its CA, host enrolment, what it believes of an edge
pub mod keyfile;
pub mod proxy;
pub mod seal;
pub mod server;
pub mod shred;
pub mod store;

pub use engine::{Engine, Peer, replay};
pub use home::Home;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// `--socket`, else `$SCOPEHOLD_SOCKET` (both via clap), else
/// `$XDG_RUNTIME_DIR/scopehold/scopehold.sock`, else `scopehold.sock` in the state directory.
pub fn socket_path(home: &Home, arg: Option<&Path>) -> PathBuf {
    if let Some(p) = arg {
        return p.to_path_buf();
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(r) => PathBuf::from(r).join("scopehold/scopehold.sock"),
        None => home.root.join("scopehold.sock"),
    }
}

/// When this process started serving as the daemon (`status` reports the uptime); unset for
/// an engine run inside a test.
static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

/// When [`run`] started, if it did in this process.
pub fn started_at() -> Option<std::time::SystemTime> {
    STARTED.get().copied()
}

fn group_id(name: &str) -> Result<u32> {
    if let Ok(g) = name.parse::<u32>() {
        return Ok(g);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => bail!("no group named {name}"),
    }
}

/// Where the daemon listens, and whether the socket's directory is the daemon's own to set
/// up (created by it, or a default location) rather than a directory the operator chose.
///
/// Without `--socket-group` this is [`socket_path`]. With it and no `--socket`, the socket
/// needs a directory of its own that the group can traverse, and never the state directory
/// (which stays 0700): `$RUNTIME_DIRECTORY` (set by systemd's `RuntimeDirectory=scopehold`),
/// else `/run/scopehold` as root, else `$XDG_RUNTIME_DIR/scopehold`; that directory is made
/// 0750, owned by the daemon's uid and the group.
pub fn daemon_socket_path(home: &Home, arg: Option<&Path>, group: bool) -> Result<(PathBuf, bool)> {
    if let Some(p) = arg {
        return Ok((p.to_path_buf(), false));
    }
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if !group {
        return Ok(match env("XDG_RUNTIME_DIR") {
            Some(_) => (socket_path(home, None), true),
            // The state directory: checked as such, never loosened.
            None => (socket_path(home, None), false),
        });
    }
    let dir = if let Some(d) = env("RUNTIME_DIRECTORY") {
        d
    } else if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/scopehold")
    } else if let Some(r) = env("XDG_RUNTIME_DIR") {
        r.join("scopehold")
    } else {
        bail!(
            "--socket-group needs a directory for the socket outside the state directory: pass --socket PATH (or set RUNTIME_DIRECTORY)"
        );
    };
    Ok((dir.join("scopehold.sock"), true))
}

fn os_err(what: String) -> impl FnOnce(nix::errno::Errno) -> anyhow::Error {
    move |e| anyhow::anyhow!("{what}: {e}")
}

/// Binds the socket so that no path swap can redirect it or its permissions.
///
/// The socket's directory is opened with `O_NOFOLLOW` and must be owned by the daemon's uid
/// and writable by no one else (a directory the daemon sets up, `managed`, is created if
/// missing and made 0700, or 0750 with `group`). The socket is bound inside a fresh 0700
/// subdirectory, reached through `/proc/self/fd` of that subdirectory's descriptor, given its
/// mode (0600, or 0660 and `group`) there, where nothing else can appear, and only then
/// renamed into place: from its first moment under its final name it has its final mode.
/// A stale socket is replaced by that rename (the log lock, already held, proves no other
/// daemon uses this state directory; a live listener is refused).
fn bind(path: &Path, group: Option<u32>, managed: bool) -> Result<tokio::net::UnixListener> {
    use nix::fcntl::{OFlag, openat, renameat};
    use nix::sys::stat::{FchmodatFlags, Mode, fchmodat, mkdirat};
    use nix::unistd::{Gid, UnlinkatFlags, fchownat, unlinkat};
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    let name = path
        .file_name()
        .with_context(|| format!("{} names no socket file", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut managed = managed;
    if std::fs::symlink_metadata(dir).is_err() {
        if let Some(pp) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(pp).with_context(|| format!("creating {}", pp.display()))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        managed = true;
    }
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "the socket's directory {} is a symlink; refusing it",
            dir.display()
        );
    }
    let dirf = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .with_context(|| format!("opening the socket's directory {}", dir.display()))?;
    let meta = dirf.metadata()?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me || meta.mode() & 0o022 != 0 {
        bail!(
            "the socket's directory {} must be owned by uid {me} and writable by no one else (it is owned by uid {}, mode {:o}): choose another --socket",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o777
        );
    }
    if managed {
        // Through the descriptor just checked, never by path.
        if let Some(g) = group {
            std::os::unix::fs::fchown(&dirf, None, Some(g))
                .with_context(|| format!("giving {} to group {g}", dir.display()))?;
        }
        let mode = if group.is_some() { 0o750 } else { 0o700 };
        dirf.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode {mode:o} on {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("something is already listening on {}", path.display());
    }
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
    let sub = format!(".bind-{}", hex::encode(rnd));
    mkdirat(dirf.as_fd(), sub.as_str(), Mode::from_bits_truncate(0o700))
        .map_err(os_err(format!("creating {}", dir.join(&sub).display())))?;
    let subf = openat(
        dirf.as_fd(),
        sub.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(std::fs::File::from)
    .map_err(os_err(format!("opening {}", dir.join(&sub).display())));
    let done = subf.and_then(|subf| {
        let via = PathBuf::from(format!("/proc/self/fd/{}/s", subf.as_raw_fd()));
        let l = std::os::unix::net::UnixListener::bind(&via)
            .with_context(|| format!("binding a socket in {}", dir.display()))?;
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        let set = (|| {
            fchmodat(
                subf.as_fd(),
                "s",
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(os_err(format!("setting mode {mode:o} on the socket")))?;
            if let Some(g) = group {
                fchownat(
                    subf.as_fd(),
                    "s",
                    None,
                    Some(Gid::from_raw(g)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(os_err(format!("giving the socket to group {g}")))?;
            }
            renameat(subf.as_fd(), "s", dirf.as_fd(), name)
                .map_err(os_err(format!("renaming the socket to {}", path.display())))
        })();
        if set.is_err() {
            let _ = unlinkat(subf.as_fd(), "s", UnlinkatFlags::NoRemoveDir);
        }
        set.map(|()| l)
    });
    let _ = unlinkat(dirf.as_fd(), sub.as_str(), UnlinkatFlags::RemoveDir);
    let l = done?;
    if let Some(g) = group {
        warn_unreachable(dir, g);
    }
    l.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(l)?)
}

/// Warns when members of group `g` cannot traverse every directory down to the socket.
fn warn_unreachable(dir: &Path, g: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(real) = std::fs::canonicalize(dir) else {
        return;
    };
    for a in real.ancestors() {
        let Ok(m) = std::fs::metadata(a) else {
            continue;
        };
        let mode = m.mode();
        let ok = mode & 0o001 != 0 || (m.gid() == g && mode & 0o010 != 0);
        if !ok {
            tracing::warn!(
                directory = %a.display(),
                mode = format!("{:o}", mode & 0o777),
                "members of the socket group cannot traverse this directory, so they cannot reach the socket"
            );
        }
    }
}

/// Tells a supervisor (systemd `Type=notify`) that the daemon is ready, if it asked.
fn notify_ready() {
    notify("READY=1\n");
}

/// Sends `state` (`READY=1\n`, `STATUS=...\n`) to the service manager, if one listens.
pub(crate) fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let t = target.to_string_lossy();
    let res = match t.strip_prefix('@') {
        Some(abs) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &*t),
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// The signals the daemon answers, registered before the log is opened: once registered, a
/// signal's default action (terminate, or dump core for SIGQUIT) no longer applies, so none
/// of them can stop the daemon in the middle of a write.
///
/// SIGTERM, SIGINT and SIGQUIT stop it cleanly (the log flushed, exit 0); SIGHUP, SIGUSR1 and
/// SIGUSR2 are logged and otherwise ignored (there is no configuration to reload).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    ignore: Vec<(tokio::signal::unix::Signal, &'static str)>,
}

impl Signals {
    /// Needs a runtime context (`Runtime::enter`).
    fn register() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let reg = |k: SignalKind, name: &'static str| {
            signal(k).with_context(|| format!("installing a handler for {name}"))
        };
        Ok(Self {
            term: reg(SignalKind::terminate(), "SIGTERM")?,
            int: reg(SignalKind::interrupt(), "SIGINT")?,
            quit: reg(SignalKind::quit(), "SIGQUIT")?,
            ignore: vec![
                (reg(SignalKind::hangup(), "SIGHUP")?, "SIGHUP"),
                (reg(SignalKind::user_defined1(), "SIGUSR1")?, "SIGUSR1"),
                (reg(SignalKind::user_defined2(), "SIGUSR2")?, "SIGUSR2"),
            ],
        })
    }

    /// Completes on the first stopping signal; logs the ignored ones meanwhile.
    async fn stopped(mut self) {
        for (mut s, name) in std::mem::take(&mut self.ignore) {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    tracing::info!(
                        "{name} ignored (the daemon has nothing to reload; SIGTERM stops it)"
                    );
                }
            });
        }
        let name = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.quit.recv() => "SIGQUIT",
        };
        tracing::info!("{name}: stopping");
    }
}

/// The injecting proxy's settings.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// A loopback address to serve the proxy on, besides the socket.
    pub listen: Option<std::net::SocketAddr>,
    /// Extra CA certificates (PEM) trusted for upstreams.
    pub upstream_ca: Option<PathBuf>,
    /// Tunnel `CONNECT` to hosts outside every profile untouched instead of refusing it.
    pub tunnel_other_connect: bool,
}

/// Runs the daemon in the foreground until SIGTERM, SIGINT or SIGQUIT.
/// The hub and edge options of `scopehold daemon`.
#[derive(Debug, Default)]
pub struct HubOptions {
    /// Serve enrolled hosts' edges on this address (a hub).
    pub listen: Option<std::net::SocketAddr>,
    /// Names for the hub's certificate.
    pub names: Vec<String>,
    /// Be an edge of the hub at these URLs (a hub and its standbys).
    pub hub: Vec<String>,
    /// Enrol first with this join token.
    pub join: Option<zeroize::Zeroizing<String>>,
    /// How long an edge waits for the hub's answer.
    pub timeout: Option<Duration>,
    /// An edge renews its host's certificate once it expires within this.
    pub renew_within: Option<Duration>,
    /// Keep the log in this PostgreSQL store.
    pub store: Option<store::StoreUrl>,
    /// The listener's certificate chain and key, from the admin (else a leaf of the hub CA).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The names a hub's certificate carries: the admin's, the listening address, localhost.
fn hub_names(listen: std::net::SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let ip = (!listen.ip().is_unspecified()).then(|| listen.ip().to_string());
    for n in extra
        .iter()
        .cloned()
        .chain(ip)
        .chain(["localhost".to_string(), "127.0.0.1".to_string()])
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// What every daemon process does first, a hub's or an edge's: the start time, the process
/// protections (before any key is read: no same-uid process may attach, read memory, or get
/// a core), the runtime, and the signal handlers (before the log is opened, see `Signals`).
fn start_process() -> Result<(tokio::runtime::Runtime, Signals)> {
    let _ = STARTED.set(std::time::SystemTime::now());
    let p = hardening::harden();
    tracing::info!(
        dumpable = p.dumpable,
        core_dumps = p.core_dumps,
        memory_locked = p.memory_locked,
        note = p.memory_lock_note.as_deref().unwrap_or(""),
        "process protections"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let signals = {
        let _in_runtime = rt.enter();
        Signals::register()?
    };
    Ok((rt, signals))
}

/// `scopehold daemon --hub URL`: this host's edge (see [`edge`]).
fn run_edge(
    home: Home,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    hub: HubOptions,
) -> Result<()> {
    let urls = hub
        .hub
        .iter()
        .map(|u| edge::HubUrl::parse(u))
        .collect::<Result<Vec<_>>>()?;
    let url = urls[0].clone();
    if home.is_initialised() {
        bail!(
            "{} holds a daemon's keys and log: an edge keeps no key or log, so it takes a state directory of its own (--home DIR)",
            home.root.display()
        );
    }
    let (rt, signals) = start_process()?;
    let group = socket_group.as_deref().map(group_id).transpose()?;
    let (path, managed) = daemon_socket_path(&home, socket.as_deref(), group.is_some())?;
    rt.block_on(async {
        if let Some(token) = &hub.join {
            let host = edge::enrol(&home, &url, token).await?;
            tracing::info!(host = %host, hub = %url.url, "enrolled with the hub");
        }
        let edge = Arc::new(edge::Edge::new(
            &home,
            urls.clone(),
            hub.timeout.unwrap_or(edge::HUB_TIMEOUT),
        )?);
        // The host's certificate is renewed before it expires: checked now (a failure is
        // said and the edge serves with the certificate it has) and twice a day.
        let within = hub.renew_within.unwrap_or(edge::RENEW_WITHIN);
        if let Err(e) = edge.renew_if_due(&home, within).await {
            tracing::warn!(error = %format!("{e:#}"), "this host's certificate is due for renewal and was not renewed; retrying later");
        }
        let renewer = {
            let (edge, home) = (edge.clone(), home.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(12 * 3600));
                every.tick().await;
                loop {
                    every.tick().await;
                    if let Err(e) = edge.renew_if_due(&home, within).await {
                        tracing::warn!(error = %format!("{e:#}"), "this host's certificate was not renewed; retrying later");
                    }
                }
            })
        };
        let listener = bind(&path, group, managed)?;
        tracing::info!(socket = %path.display(), host = %edge.host(), hubs = %hub.hub.join(","), "edge listening");
        notify_ready();
        edge::serve(listener, edge, signals.stopped()).await;
        renewer.abort();
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_file(&path);
    tracing::info!("edge stopped");
    Ok(())
}

pub fn run(
    home: Home,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    proxy: ProxyOptions,
    hub: HubOptions,
) -> Result<()> {
    if !hub.hub.is_empty() {
        return run_edge(home, socket, socket_group, hub);
    }
    if let Some(a) = proxy.listen
        && !a.ip().is_loopback()
    {
        bail!(
            "--proxy-listen {a}: the proxy listens on loopback only (credentials cross it in the clear)"
        );
    }
    let (rt, signals) = start_process()?;
    if !home.is_initialised() {
        let public = home.init()?;
        tracing::info!(home = %home.root.display(), log_public_key = %public, "initialised a new state directory");
    }
    let group = socket_group.as_deref().map(group_id).transpose()?;
    let mut upstream = proxy::Upstream::new(proxy.upstream_ca.as_deref(), Default::default())?;
    upstream.tunnel_others = proxy.tunnel_other_connect;
    tracing::info!(roots = %upstream.roots, "proxy upstream trust");
    // Bound before the engine is built so that runs are told where it is.
    let tcp = match proxy.listen {
        Some(a) => {
            let l = std::net::TcpListener::bind(a)
                .with_context(|| format!("binding the proxy listener on {a}"))?;
            l.set_nonblocking(true)?;
            upstream.listen = Some(l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    // Stopping is a flag from here on, so that a standby waiting to take over (in
    // `Engine::open_with_store`) sees it too.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        signals.stopped().await;
        let _ = stop_tx.send(true);
    });
    let Some(engine) = Engine::open_with_store(
        &home,
        scopehold_log::system_clock(),
        hub.store.clone(),
        &stop,
    )?
    else {
        tracing::info!("stopped while a standby");
        return Ok(());
    };
    let engine = Arc::new(engine.with_upstream(upstream));
    let status = engine.log().status();
    tracing::info!(events = status.size, head = %hex::encode(status.head), "log opened and replayed");
    // --- the HTTPS_PROXY certificate authority (ca.rs); the proxy takes `ca` from here ---
    let (ca, created) = ca::Ca::load_or_create(&home)?;
    if created {
        tracing::info!(home = %home.root.display(), fingerprint = %ca.fingerprint(), "this state directory had no certificate authority (made by an earlier release): created ca.key and ca.pem");
    }
    let bundle = ca.write_bundle(&home.root)?;
    tracing::info!(bundle = %bundle.path.display(), roots = ?bundle.roots, fingerprint = %ca.fingerprint(), "certificate authority loaded; trust bundle written");
    let ca = Arc::new(ca);
    // --- end of the certificate authority ---
    // CONNECT to a profile's host: leaves for names some profile has (the engine's profiles,
    // read at each handshake through a weak reference, so the engine can still be closed).
    let profiles = Arc::downgrade(&engine);
    let config = ca.server_config(move |sni| {
        profiles.upgrade().is_some_and(|e| {
            e.read(|st| {
                st.profiles_in_effect().any(|(_, p, _)| {
                    p.hosts
                        .iter()
                        .any(|h| h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n) == sni)
                })
            })
        })
    })?;
    if let Some(u) = engine.upstream() {
        let _ = u.mitm.set(proxy::Mitm {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            bundle_pem: ca.bundle_pem().0,
        });
    }
    let hub_tls = match hub.listen {
        Some(a) => {
            let ca = engine.hub.ca(engine.master())?;
            let names = hub_names(a, &hub.names);
            let config = match &hub.tls {
                Some((cert, key)) => {
                    let (config, pin) = ca.server_config_from_files(cert, key, &hub.names)?;
                    tracing::info!(cert = %cert.display(), ca_pin = %pin, "hub listener: the admin's certificate; join tokens pin its CA");
                    engine.hub.set_server_pin(pin);
                    config
                }
                None => ca.server_config(&names)?,
            };
            let l = std::net::TcpListener::bind(a)
                .with_context(|| format!("binding the hub listener on {a}"))?;
            l.set_nonblocking(true)?;
            tracing::info!(address = %l.local_addr()?, names = %names.join(","), ca_pin = %engine.hub.token_pin(engine.master())?, "hub listening for hosts (mutual TLS 1.3)");
            Some((l, tokio_rustls::TlsAcceptor::from(config)))
        }
        None => None,
    };
    let (path, managed) = daemon_socket_path(&home, socket.as_deref(), group.is_some())?;
    rt.block_on(async {
        let listener = bind(&path, group, managed)?;
        let hub_tls = match hub_tls {
            Some((l, a)) => Some((tokio::net::TcpListener::from_std(l)?, a)),
            None => None,
        };
        tracing::info!(socket = %path.display(), "listening");
        let tcp = match tcp {
            Some(l) => {
                let l = tokio::net::TcpListener::from_std(l)?;
                tracing::info!(address = %l.local_addr()?, "proxy listening on loopback");
                Some(l)
            }
            None => None,
        };
        notify_ready();
        // Housekeeping every second: denial counts whose window ended, the disk reserve, and
        // the data keys that ended grace periods no longer need. A weak reference, so that the
        // engine can be closed (and the log flushed) at shutdown.
        let keeper = Arc::downgrade(&engine);
        let pruning = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let Some(e) = keeper.upgrade() else { break };
                e.refresh_disk_reserve();
                e.prune_data_keys();
                if let Err(err) = e.flush_denials(false).await {
                    tracing::warn!(error = %err, "denial counts not written");
                }
                if let Err(err) = e.flush_proxy_results().await {
                    tracing::warn!(error = %err, "proxied call outcomes not written");
                }
                if let Err(err) = e.flush_ended_runs().await {
                    tracing::warn!(error = %err, "ended runs not recorded");
                }
            }
        });
        // A hub that loses the log to another (see `PgStore::lost`) stops serving at once.
        let mut lost = engine.store().map(|s| s.watch_lost());
        let mut stop = stop.clone();
        let stopped = async move {
            let lost = async {
                match lost.as_mut() {
                    Some(l) => {
                        let _ = l.wait_for(Option::is_some).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = lost => {}
            }
        };
        server::run(
            listener,
            tcp,
            hub_tls,
            engine.clone(),
            stopped,
            Duration::from_secs(10),
        )
        .await;
        pruning.abort();
        anyhow::Ok(())
    })?;
    let lost = engine.store().and_then(|s| s.watch_lost().borrow().clone());
    let _ = std::fs::remove_file(&path);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close()?,
        Err(_) => {
            tracing::warn!("requests still held the engine at exit; the log closes as they end")
        }
    }
    if let Some(why) = lost {
        bail!(
            "this hub stopped: it is no longer the log's writer ({why}). Nothing was answered after that; started again, it follows the log as a standby"
        );
    }
    tracing::info!("stopped; log flushed");
    Ok(())
}
