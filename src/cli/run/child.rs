//! Starting the child and waiting for it.

use std::sync::Arc;

use anyhow::anyhow;

use super::mask::Patterns;
use super::output::Plan;
use crate::api::wire::SecretString;
use crate::cli::exit::Exit;

/// Starts the child with the values in its environment and without SCOPEHOLD_TOKEN, forwards
/// SIGINT, SIGTERM, SIGHUP and SIGQUIT to it, and returns its exit status (128 + signal if a
/// signal ended it). With `masking`, its output passes through the masker (`output.rs`).
/// When `stop` completes (`run --watch`: a secret it holds changed), the child is sent
/// SIGTERM, and SIGKILL if it has not exited within the grace `stop` gives.
pub(super) fn spawn_and_wait(
    command: &[String],
    values: &[(String, SecretString)],
    masking: Option<Arc<Patterns>>,
    stop: impl std::future::Future<Output = std::time::Duration>,
) -> Result<i32, Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("starting the runtime: {e}"))?;
    rt.block_on(async {
        let mut plan = Plan::new(masking).map_err(|e| anyhow!("setting up masking: {e}"))?;
        let mut cmd = plan.command(command).map_err(|e| anyhow!("setting up masking: {e}"))?;
        cmd.env_remove("SCOPEHOLD_TOKEN");
        for (k, v) in values {
            cmd.env(k, v.expose());
        }
        // The handlers first: a signal that arrives once the child runs (it may already have
        // said it is ready) is forwarded to it, never left to kill `run` and orphan it.
        let mut winch = signal(SignalKind::window_change())
            .map_err(|e| anyhow!("installing signal handlers: {e}"))?;
        let mut sigs = Vec::new();
        for (k, n) in [
            (SignalKind::interrupt(), nix::sys::signal::Signal::SIGINT),
            (SignalKind::terminate(), nix::sys::signal::Signal::SIGTERM),
            (SignalKind::hangup(), nix::sys::signal::Signal::SIGHUP),
            (SignalKind::quit(), nix::sys::signal::Signal::SIGQUIT),
        ] {
            sigs.push((signal(k).map_err(|e| anyhow!("installing signal handlers: {e}"))?, n));
        }
        let mut child = cmd.spawn().map_err(|e| anyhow!("starting {}: {e}", command[0]))?;
        // The child's ends of its pipes and pty: ours closed, so its end of output shows.
        drop(cmd);
        let streams = plan.start().map_err(|e| anyhow!("masking the output: {e}"))?;
        let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
        tokio::pin!(stop);
        loop {
            let [(a, na), (b, nb), (c, nc), (d, nd)] = &mut sigs[..] else { unreachable!("four signals") };
            let forward = tokio::select! {
                status = child.wait() => {
                    let status = status.map_err(|e| anyhow!("waiting for {}: {e}", command[0]))?;
                    use std::os::unix::process::ExitStatusExt;
                    streams.finish().await;
                    return Ok::<i32, Exit>(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
                }
                _ = winch.recv() => {
                    streams.resize();
                    continue;
                }
                _ = a.recv() => *na,
                _ = b.recv() => *nb,
                _ = c.recv() => *nc,
                _ = d.recv() => *nd,
                grace = &mut stop => {
                    if let Some(p) = pid {
                        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
                    }
                    if tokio::time::timeout(grace, child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    let _ = child.wait().await;
                    streams.finish().await;
                    // The caller asked for the stop and knows why; the status is not its own.
                    return Ok(0);
                }
            };
            if let Some(p) = pid {
                let _ = nix::sys::signal::kill(p, forward);
            }
        }
    })
}
