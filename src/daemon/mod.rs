//! `scopehold daemon`: the foreground daemon on its embedded default.
//!
//! `home` lays out the state directory; `engine` holds the state, the log and the keys and
//! executes commands; `server` serves the socket, `handlers` answer each route, `http` reads
//! bodies and builds answers in zeroizing buffers; `seal` encrypts values at rest.

pub mod denials;
pub mod engine;
pub mod handlers;
pub mod hardening;
pub mod home;
pub mod http;
pub mod seal;
pub mod server;

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

fn group_id(name: &str) -> Result<u32> {
    if let Ok(g) = name.parse::<u32>() {
        return Ok(g);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => bail!("no group named {name}"),
    }
}

/// Binds the socket: its directory made if missing (0700), a stale socket file replaced (the
/// log lock, already held, proves no other daemon uses this state directory), mode 0600, or
/// 0660 owned by `group` so agents under other uids can connect.
fn bind(path: &Path, group: Option<u32>) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("something is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    if let Some(g) = group {
        std::os::unix::fs::chown(path, None, Some(g))
            .with_context(|| format!("giving {} to group {g}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

/// Tells a supervisor (systemd `Type=notify`) that the daemon is ready, if it asked.
fn notify_ready() {
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
                .and_then(|a| sock.send_to_addr(b"READY=1\n", &a))
        }
        None => sock.send_to(b"READY=1\n", &*t),
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "could not notify readiness");
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

/// Runs the daemon in the foreground until SIGTERM, SIGINT or SIGQUIT.
pub fn run(home: Home, socket: Option<PathBuf>, socket_group: Option<String>) -> Result<()> {
    // Before any key is read: no same-uid process may attach, read memory, or get a core.
    let p = hardening::harden();
    tracing::info!(
        dumpable = p.dumpable,
        core_dumps = p.core_dumps,
        memory_locked = p.memory_locked,
        note = p.memory_lock_note.as_deref().unwrap_or(""),
        "process protections"
    );
    // The runtime and the signal handlers come before the log is opened (see `Signals`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let signals = {
        let _in_runtime = rt.enter();
        Signals::register()?
    };
    if !home.is_initialised() {
        let public = home.init()?;
        tracing::info!(home = %home.root.display(), log_public_key = %public, "initialised a new state directory");
    }
    let group = socket_group.as_deref().map(group_id).transpose()?;
    let engine = Arc::new(Engine::open(&home, scopehold_log::system_clock())?);
    let status = engine.log().status();
    tracing::info!(events = status.size, head = %hex::encode(status.head), "log opened and replayed");
    let path = socket_path(&home, socket.as_deref());
    rt.block_on(async {
        let listener = bind(&path, group)?;
        tracing::info!(socket = %path.display(), "listening");
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
            }
        });
        server::run(
            listener,
            engine.clone(),
            signals.stopped(),
            Duration::from_secs(10),
        )
        .await;
        pruning.abort();
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_file(&path);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close()?,
        Err(_) => {
            tracing::warn!("requests still held the engine at exit; the log closes as they end")
        }
    }
    tracing::info!("stopped; log flushed");
    Ok(())
}
