//! `scopehold status` (is the daemon there, what is it, what does it hold) and
//! `scopehold whoami` (who the daemon takes the caller for). Both ask the daemon: identity is
//! what the daemon decides from the credential and the kernel's peer credentials, never what
//! the CLI guesses.

use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use serde_json::{Value, json};

use super::client::{self, CallError, ClientError};
use super::commands::{Ctx, token};
use super::exit::{EXIT_DENIED, EXIT_ERROR, EXIT_UNREACHABLE, Exit};
use super::out::outln;
use super::output::time_str;
use crate::api::endpoint;
use crate::api::wire::{Empty, HealthResponse, StatusResponse, WhoamiResponse};

/// A failure to get any answer: 4 when nothing answered, 1 otherwise (a wrong peer, a bad
/// answer).
fn no_answer(e: ClientError) -> Exit {
    let code = match e {
        ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
        _ => EXIT_ERROR,
    };
    Exit::new(code, e)
}

/// Bytes for people: `1.5 GiB`.
pub fn bytes_str(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `status`: health (open to anyone) and, for a caller the daemon knows, `/v1/status`
/// (counts for admins only).
pub fn status(ctx: &Ctx) -> Result<(), Exit> {
    let health: HealthResponse = match client::call_expecting::<endpoint::Health>(
        &ctx.socket,
        ctx.daemon_uid,
        &Empty {},
        None,
    ) {
        Ok(h) => h,
        Err(CallError::Client(e)) => return Err(no_answer(e)),
        Err(e) => return Err(Exit::new(EXIT_ERROR, e)),
    };
    let t = token();
    let detail: Result<StatusResponse, String> = match client::call_expecting::<endpoint::Status>(
        &ctx.socket,
        ctx.daemon_uid,
        &Empty {},
        t.as_deref().map(|s| s.as_str()),
    ) {
        Ok(s) => Ok(s),
        // Unavailable is not a refusal of who you are: say what the daemon said.
        Err(CallError::Refused { status: 503, error }) => {
            Err(format!("{} (503): {}", error.code, error.message))
        }
        Err(CallError::Refused { status, error }) => Err(format!(
            "{} ({status}): the daemon takes you for nobody; version, uptime, proxy and counts are for callers it knows (see `scopehold whoami`)",
            error.code
        )),
        Err(CallError::Client(e)) => return Err(no_answer(e)),
    };
    let now = SystemTime::now();
    let uptime = detail
        .as_ref()
        .ok()
        .and_then(|s| s.started_at_ms)
        .map(|ms| {
            let started = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            now.duration_since(started).unwrap_or_default().as_secs()
        });
    let log = match &detail {
        Ok(s) => &s.log,
        Err(_) => &health.log,
    };
    if ctx.json {
        let mut v = json!({
            "reachable": true,
            "socket": ctx.socket,
            "status": health.status,
            "log": {
                "events": log.events,
                "head_seq": log.events.checked_sub(1),
                "head": log.head,
                "checkpoint_size": log.checkpoint_size,
                "error": log.error,
                "store": log.store,
            },
            "keys_sealed": health.custody.keys_sealed,
            "daemon_uid": health.custody.daemon_uid,
        });
        match &detail {
            Ok(s) => {
                let extra = json!({
                    "version": s.version,
                    "pid": s.pid,
                    "started_at_ms": s.started_at_ms,
                    "uptime_secs": uptime,
                    "proxy_listen": s.proxy_listen,
                    "disk": s.disk,
                    "counts": s.counts,
                    "commits": s.commits,
                });
                if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
                    m.extend(x);
                }
            }
            Err(why) => v["detail_refused"] = json!(why),
        }
        outln!("{v}")?;
        return Ok(());
    }
    let mut lines: Vec<(&str, String)> = Vec::new();
    let pid = detail
        .as_ref()
        .map(|s| format!("pid {}, ", s.pid))
        .unwrap_or_default();
    lines.push((
        "daemon",
        format!(
            "reachable on {} ({pid}uid {})",
            ctx.socket.display(),
            health.custody.daemon_uid
        ),
    ));
    if let Ok(s) = &detail {
        lines.push(("version", s.version.clone()));
        lines.push((
            "uptime",
            match (uptime, s.started_at_ms) {
                (Some(u), Some(ms)) => format!(
                    "{} (since {})",
                    humantime::format_duration(Duration::from_secs(u)),
                    time_str(ms)
                ),
                _ => "unknown".into(),
            },
        ));
    }
    let head = log
        .events
        .checked_sub(1)
        .map_or("empty".to_string(), |h| format!("head seq {h}"));
    lines.push((
        "log",
        format!(
            "{} event{} ({head}), last checkpoint covers {}, {}",
            log.events,
            if log.events == 1 { "" } else { "s" },
            log.checkpoint_size,
            match &log.error {
                None => "writable".to_string(),
                Some(e) => format!("NOT WRITABLE: {e}"),
            }
        ),
    ));
    if let Some(st) = &log.store {
        lines.push((
            "store",
            match &st.unreachable {
                Some(why) => format!("{}, UNREACHABLE: {why}", st.at),
                None => format!(
                    "{}, {} commits of {} events since start",
                    st.at, st.commits, st.events
                ),
            },
        ));
    }
    lines.push((
        "keys",
        if health.custody.keys_sealed {
            "sealed under a passphrase".into()
        } else {
            "unsealed (see `scopehold doctor`)".into()
        },
    ));
    match &detail {
        Ok(s) => {
            lines.push((
                "proxy",
                match &s.proxy_listen {
                    Some(a) => format!("listening on {a}, and on the socket under /v1/proxy/"),
                    None => {
                        "on the socket under /v1/proxy/ (no --proxy-listen: `run --proxy` relays)"
                            .into()
                    }
                },
            ));
            if let Some(d) = &s.disk {
                lines.push((
                    "disk",
                    format!(
                        "{} free for the log (reserve {}){}",
                        bytes_str(d.free_bytes),
                        bytes_str(d.reserve_bytes),
                        if d.under_reserve {
                            ": UNDER THE RESERVE, only revocations are logged"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            match &s.counts {
                Some(c) => {
                    lines.push(("projects", c.projects.to_string()));
                    lines.push((
                        "secrets",
                        format!("{} ({} revoked)", c.secrets, c.secrets_revoked),
                    ));
                    lines.push((
                        "agents",
                        format!("{} ({} revoked)", c.agents, c.agents_revoked),
                    ));
                    lines.push(("members", format!("{} ({} admin)", c.members, c.admins)));
                    lines.push((
                        "grants",
                        format!("{} ({} revoked)", c.grants, c.grants_revoked),
                    ));
                    lines.push(("runs", format!("{} in progress", c.runs)));
                }
                None => lines.push(("counts", "for admin members only".into())),
            }
            if let Some(c) = &s.commits
                && c.batches > 0
            {
                lines.push((
                    "commits",
                    format!(
                        "{} events in {} fdatasyncs since start ({:.1} per fdatasync)",
                        c.events,
                        c.batches,
                        c.events as f64 / c.batches as f64
                    ),
                ));
            }
        }
        Err(why) => lines.push(("details", why.clone())),
    }
    for (k, v) in lines {
        outln!("{k:<9} {v}")?;
    }
    Ok(())
}

/// `whoami`: the daemon's answer, or nobody (exit 3) with the reason it gave.
pub fn whoami(ctx: &Ctx) -> Result<(), Exit> {
    let t = token();
    let me_uid = nix::unistd::geteuid().as_raw();
    let me_pid = std::process::id();
    match client::call_expecting::<endpoint::Whoami>(
        &ctx.socket,
        ctx.daemon_uid,
        &Empty {},
        t.as_deref().map(|s| s.as_str()),
    ) {
        Ok(w) => print_known(ctx, &w),
        Err(CallError::Refused { status, error }) => {
            let why = match (status, t.is_some()) {
                (401, true) => "the daemon does not recognise the credential in SCOPEHOLD_TOKEN",
                (401, false) => "SCOPEHOLD_TOKEN is not set and your uid is not a member's",
                (403, true) => {
                    "the agent of SCOPEHOLD_TOKEN is refused (revoked, or calling from another uid than its own)"
                }
                _ => "the daemon refused to say",
            };
            let printed = if ctx.json {
                outln!(
                    "{}",
                    json!({
                        "identity": null,
                        "kind": null,
                        "by": null,
                        "uid": me_uid,
                        "pid": me_pid,
                        "admin": false,
                        "grants": [],
                        "reason": why,
                        "code": error.code,
                        "status": status,
                    })
                )
            } else {
                outln!("nobody: {why} ({} {status})", error.code)
                    .and_then(|()| outln!("uid      {me_uid}"))
                    .and_then(|()| outln!("pid      {me_pid}"))
                    .and_then(|()| outln!("admin    no"))
            };
            Err(super::out::failing(
                printed,
                Exit::new(EXIT_DENIED, anyhow!("the daemon takes you for nobody")),
            ))
        }
        Err(CallError::Client(e)) => Err(no_answer(e)),
    }
}

fn print_known(ctx: &Ctx, w: &WhoamiResponse) -> Result<(), Exit> {
    let (kind, by) = match &w.identity {
        crate::domain::Identity::Agent(_) => ("agent", "credential"),
        crate::domain::Identity::Member(_) => ("member", "uid"),
        crate::domain::Identity::Host(_) => ("host", "certificate"),
    };
    if ctx.json {
        outln!(
            "{}",
            json!({
                "identity": w.identity.to_string(),
                "kind": kind,
                "by": by,
                "uid": w.uid,
                "pid": w.pid,
                "admin": w.admin,
                "grants": w.grants,
            })
        )?;
        return Ok(());
    }
    let how = match kind {
        "agent" => "by the credential in SCOPEHOLD_TOKEN".to_string(),
        "member" => format!("by your uid {}", w.uid),
        _ => "by its certificate".to_string(),
    };
    outln!("{} ({how})", w.identity)?;
    outln!("uid      {}", w.uid)?;
    outln!(
        "pid      {}",
        w.pid.map_or("-".to_string(), |p| p.to_string())
    )?;
    outln!("admin    {}", if w.admin { "yes" } else { "no" })?;
    if w.grants.is_empty() {
        outln!("grants   none")?;
    } else {
        for (i, g) in w.grants.iter().enumerate() {
            outln!(
                "{:<8} #{} {} in {}",
                if i == 0 { "grants" } else { "" },
                g.id,
                g.secret,
                g.project
            )?;
        }
    }
    Ok(())
}
