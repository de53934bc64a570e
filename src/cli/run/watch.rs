//! `run --watch`: the child runs with the values it was given while one long poll
//! (`POST /v1/watch`) waits for the daemon to say that one of them changed. The daemon pushes
//! the change: nothing here asks again on a timer.
//!
//! * rotated: the child is stopped (SIGTERM, SIGKILL after the grace), every value is
//!   resolved again (each resolution recorded as always) and the child is started again;
//! * revoked, or access ended (grant revoked or expired, agent revoked or reissued): the child
//!   is stopped and `run` exits 3, as a denied resolution would;
//! * the child exits by itself: `run` exits with its status (a finished command is not
//!   restarted);
//! * the daemon goes away (stopped, restarted, crashed): the child keeps running. Nothing can
//!   be revoked while the daemon is down (revocations are made and recorded by it), and the
//!   watch is made again, with the versions held, as soon as the socket comes back (an
//!   inotify watch on its directory): a change made meanwhile is answered at once, since the
//!   daemon compares what is held with its state, not with events missed. Stopping every
//!   agent on each daemon restart would turn an upgrade into an outage.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::anyhow;

use super::child;
use crate::api::endpoint;
use crate::api::wire::{SecretString, WatchAnswer, WatchChange, WatchHold, WatchRequest};
use crate::cli::client::{self, CallError, ClientError};
use crate::cli::commands::{Ctx, token};
use crate::cli::exit::{EXIT_DENIED, Exit};
use crate::domain::{ProjectName, SecretName};

/// While the daemon is away, how long to wait for its socket to reappear before trying
/// again anyway: inotify misses a socket whose directory was itself removed and made again
/// (a systemd `RuntimeDirectory`). A reconnection attempt, not a question about changes.
const REAPPEAR_FALLBACK: Duration = Duration::from_secs(60);

/// Builds the masker for the values a (re)started child holds.
pub(super) type Masking<'a> =
    dyn Fn(&[(String, SecretString)]) -> Option<std::sync::Arc<super::mask::Patterns>> + 'a;

/// How a watch ended.
enum Verdict {
    /// Another version of a held secret is current.
    Rotated(WatchAnswer),
    /// The child must stop for good: a held secret revoked, or access to it ended.
    Ended(String),
    /// The watch cannot go on (a fault, not a change): the child is stopped too, since
    /// nothing would tell it of a revocation any more.
    Failed(Exit),
}

/// Resolves, starts the child, and restarts it on every rotation until it exits by itself
/// (its status is returned) or access ends (exit 3).
pub(super) fn run_watching(
    ctx: &Ctx,
    project: &ProjectName,
    mappings: &[(Option<String>, SecretName)],
    command: &[String],
    grace: Duration,
    masking: &Masking<'_>,
) -> Result<i32, Exit> {
    loop {
        let mut values = Vec::new();
        let mut holds: Vec<WatchHold> = Vec::new();
        for (var, r) in super::resolve_mapped(ctx, project, mappings)? {
            // Two variables of one secret hold one value: watched once.
            if !holds.iter().any(|h| h.secret == r.secret) {
                holds.push(WatchHold {
                    secret: r.secret.clone(),
                    project: project.clone(),
                    version: r.version,
                });
            }
            values.push((var, r.value));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (socket, expect) = (ctx.socket.clone(), ctx.daemon_uid);
        // A blocking request on its own thread: the child's runtime only awaits its answer.
        // The thread is left behind if the child exits first (the process exits with it).
        std::thread::Builder::new()
            .name("scopehold-watch".into())
            .spawn(move || {
                let _ = tx.send(watch_until_answered(&socket, expect, holds));
            })
            .map_err(|e| anyhow!("starting the watch: {e}"))?;
        let mut verdict = None;
        let code = child::spawn_and_wait(command, &values, masking(&values), async {
            match rx.await {
                Ok(v) => {
                    verdict = Some(v);
                    grace
                }
                // The watch thread ended without a verdict (it panicked): keep the child,
                // as when the daemon is away.
                Err(_) => std::future::pending().await,
            }
        })?;
        drop(values);
        match verdict {
            None => return Ok(code),
            Some(Verdict::Rotated(a)) => crate::cli::out::errln!(
                "scopehold: {} was rotated to version {}; restarting the command",
                a.secret,
                a.version.map_or_else(|| "?".into(), |v| v.to_string())
            ),
            Some(Verdict::Ended(why)) => {
                return Err(Exit::new(
                    EXIT_DENIED,
                    anyhow!("{why}; the command was stopped"),
                ));
            }
            Some(Verdict::Failed(e)) => return Err(e),
        }
    }
}

/// The socket's directory watched for the socket to come back, once the daemon is away.
struct Reappear {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
}

impl Reappear {
    fn new(socket: &Path) -> Option<Self> {
        use notify::Watcher;
        let dir = socket.parent()?.to_path_buf();
        let name = socket.file_name()?.to_os_string();
        let (tx, events) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Only the socket's own name: other files in a shared directory wake nobody.
            if let Ok(ev) = res
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str()))
            {
                let _ = tx.send(());
            }
        })
        .ok()?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .ok()?;
        Some(Self {
            _watcher: watcher,
            events,
        })
    }

    /// Waits for the socket to be created, renamed into place or removed (or the fallback).
    fn wait(&self) {
        let _ = self.events.recv_timeout(REAPPEAR_FALLBACK);
        // One wake for a burst of events.
        while self.events.try_recv().is_ok() {}
    }
}

/// Keeps one watch open until the daemon answers with a change, or refuses the caller.
fn watch_until_answered(socket: &Path, expect: Option<u32>, holds: Vec<WatchHold>) -> Verdict {
    let req = WatchRequest { holds };
    let mut away: Option<Option<Reappear>> = None;
    loop {
        let t = token();
        let r = client::call_waiting::<endpoint::Watch>(
            socket,
            expect,
            &req,
            t.as_deref().map(|s| s.as_str()),
        );
        drop(t);
        let why_away = match r {
            Ok(a) => {
                return match a.change {
                    WatchChange::Rotated => Verdict::Rotated(a),
                    WatchChange::Revoked => Verdict::Ended(format!("{} was revoked", a.secret)),
                    WatchChange::AccessEnded => Verdict::Ended(format!(
                        "access to {} in project {} ended (grant revoked or expired, or agent revoked)",
                        a.secret, a.project
                    )),
                };
            }
            Err(CallError::Refused {
                status: 401 | 403,
                error,
            }) => {
                return Verdict::Ended(format!(
                    "the daemon no longer accepts this caller: {}",
                    error.message
                ));
            }
            // Stopping, or a log that cannot be written (a restart clears it): away.
            Err(e @ CallError::Refused { status: 503, .. })
            | Err(
                e @ CallError::Client(ClientError::Unreachable { .. } | ClientError::Protocol(_)),
            ) => e,
            Err(e) => return Verdict::Failed(Exit::from(e)),
        };
        match &away {
            None => {
                crate::cli::out::errln!(
                    "scopehold: the daemon went away ({why_away}); the command keeps running with the values it has; watching again once the daemon is back"
                );
                // Watch the directory first, then try again at once: the daemon may be back
                // already, and a return after this point is seen.
                away = Some(Reappear::new(socket));
            }
            Some(Some(r)) => r.wait(),
            Some(None) => std::thread::sleep(REAPPEAR_FALLBACK),
        }
    }
}
