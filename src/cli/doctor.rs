//! `scopehold doctor`: what this set-up protects, and where it cannot. Every finding says
//! what was seen and, for a warning or a failure, what to do.

use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use super::client;
use super::commands::Ctx;
use super::exit::{EXIT_ERROR, Exit};
use crate::api::endpoint;
use crate::api::wire::Empty;
use crate::daemon::Home;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but protects less than it could.
    Warn,
    /// Broken or unsafe.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub level: Level,
    /// What was checked.
    pub check: &'static str,
    /// What was found, and what to do.
    pub detail: String,
}

fn mode_str(m: u32) -> String {
    format!("{:04o}", m & 0o7777)
}

/// Runs every check and prints the findings.
pub fn run(home: &Home, ctx: &Ctx) -> Result<(), Exit> {
    let findings = check(home, ctx);
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(&findings).map_err(anyhow::Error::new)?
        );
    } else {
        for f in &findings {
            let tag = match f.level {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("{tag}  {:<16} {}", f.check, f.detail);
        }
    }
    if findings.iter().any(|f| f.level == Level::Fail) {
        return Err(Exit::new(EXIT_ERROR, anyhow::anyhow!("a check failed")));
    }
    Ok(())
}

/// The findings, in order: state directory, keys, socket, daemon, the caller.
pub fn check(home: &Home, ctx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |level, check, detail: String| {
        out.push(Finding {
            level,
            check,
            detail,
        })
    };
    let me = nix::unistd::geteuid().as_raw();

    match std::fs::symlink_metadata(&home.root) {
        Err(e) => add(
            Level::Warn,
            "state directory",
            format!(
                "{} cannot be examined from uid {me}: {e} (expected when an agent runs doctor)",
                home.root.display()
            ),
        ),
        Ok(m) if m.file_type().is_symlink() => add(
            Level::Fail,
            "state directory",
            format!(
                "{} is a symlink: the daemon refuses it",
                home.root.display()
            ),
        ),
        Ok(m) if m.mode() & 0o077 != 0 => add(
            Level::Fail,
            "state directory",
            format!(
                "{} is mode {}: others can reach it; make it 0700",
                home.root.display(),
                mode_str(m.mode())
            ),
        ),
        Ok(m) => add(
            Level::Ok,
            "state directory",
            format!(
                "{} owned by uid {}, mode {}",
                home.root.display(),
                m.uid(),
                mode_str(m.mode())
            ),
        ),
    }
    match home.is_sealed() {
        Ok(true) => add(
            Level::Ok,
            "keys",
            "sealed under a passphrase: a copy of the state directory decrypts and signs nothing".into(),
        ),
        Ok(false) => add(
            Level::Warn,
            "keys",
            "unsealed: whoever can read the state directory (the daemon's uid, root, a backup) can decrypt every secret and sign history; seal them with `scopehold passphrase change`".into(),
        ),
        Err(_) => {}
    }

    let socket = &ctx.socket;
    match std::fs::symlink_metadata(socket) {
        Err(e) => add(Level::Fail, "socket", format!("{}: {e}", socket.display())),
        Ok(m) => {
            let level = if m.mode() & 0o007 != 0 {
                Level::Warn
            } else {
                Level::Ok
            };
            add(
                level,
                "socket",
                format!(
                    "{} owned by uid {} gid {}, mode {}{}",
                    socket.display(),
                    m.uid(),
                    m.gid(),
                    mode_str(m.mode()),
                    if level == Level::Warn {
                        ": every local user can connect; use --socket-group"
                    } else {
                        ""
                    }
                ),
            );
        }
    }

    let daemon_uid = match client::peer_uid(socket) {
        Ok(u) => u,
        Err(e) => {
            add(Level::Fail, "daemon", format!("{e}"));
            return out;
        }
    };
    match client::call::<endpoint::Health>(socket, &Empty {}, None) {
        Ok(h) => {
            if h.status != "ok" {
                add(
                    Level::Fail,
                    "log",
                    format!("{}: {}", h.status, h.log.error.unwrap_or_default()),
                );
            } else {
                add(
                    Level::Ok,
                    "log",
                    format!("{} events, writable", h.log.events),
                );
            }
            if let Some(p) = h.process {
                if p.dumpable || p.core_dumps {
                    add(
                        Level::Fail,
                        "daemon memory",
                        format!(
                            "dumpable {}, core dumps {}: same-uid processes can read it",
                            p.dumpable, p.core_dumps
                        ),
                    );
                } else {
                    add(
                        Level::Ok,
                        "daemon memory",
                        "not dumpable, no core files: a same-uid process cannot read it".into(),
                    );
                }
                match p.memory_locked {
                    true => add(Level::Ok, "swap", "memory locked".into()),
                    false => add(Level::Warn, "swap", p.memory_lock_note.unwrap_or_default()),
                }
            }
            for a in &h.custody.agents_sharing_the_daemon_uid {
                add(
                    Level::Warn,
                    "shared uid",
                    format!(
                        "agent {a} calls from the daemon's own uid {daemon_uid}: it can read everything the daemon can on disk; run it under its own uid (README: Run it for agents)"
                    ),
                );
            }
        }
        Err(e) => add(Level::Fail, "daemon", format!("health: {e}")),
    }
    if me == daemon_uid {
        add(
            Level::Warn,
            "this uid",
            format!(
                "you run as the daemon's uid {me}: an agent started from here can read the state directory and, unsealed, every key; nothing on disk protects against it (fine for a one-person trial)"
            ),
        );
    } else {
        add(
            Level::Ok,
            "this uid",
            format!(
                "uid {me}, separate from the daemon's uid {daemon_uid}: agents started from here reach keys only through the socket"
            ),
        );
    }
    out
}
