//! `scopehold doctor`: what this set-up protects, and where it cannot. Every finding says
//! what was seen and, for a warning or a failure, what to do.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::client;
use super::commands::Ctx;
use super::exit::{EXIT_ERROR, Exit};
use super::out::outln;
use super::output::time_str;
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
    let printed = (|| {
        if ctx.json {
            outln!(
                "{}",
                serde_json::to_string(&findings).map_err(anyhow::Error::new)?
            )?;
        } else {
            for f in &findings {
                let tag = match f.level {
                    Level::Ok => "ok  ",
                    Level::Warn => "WARN",
                    Level::Fail => "FAIL",
                };
                outln!("{tag}  {:<16} {}", f.check, f.detail)?;
            }
        }
        Ok(())
    })();
    if findings.iter().any(|f| f.level == Level::Fail) {
        // A failed check fails the command even if standard output was closed meanwhile.
        return Err(super::out::failing(
            printed,
            Exit::new(EXIT_ERROR, anyhow::anyhow!("a check failed")),
        ));
    }
    printed
}

/// The findings, in order: state directory, keys, CA, log, socket, daemon, disk, proxy, the
/// caller.
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
    // The state directory is this uid's: what is in it can be examined, and a key file or
    // the log that cannot be read is a failure, not "someone else's".
    let ours = std::fs::symlink_metadata(&home.root).is_ok_and(|m| m.uid() == me);
    // An edge's state directory holds its host key and certificate, no key of the hub's
    // and no log: its checks are those of its enrolment, then the socket and the daemon
    // (whose health, through the edge, is the hub's).
    if ours && crate::daemon::edge::is_enrolled(home) {
        edge_check(home, &mut add);
    } else {
        keys_ca_log(home, ours, &mut add);
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
    // What only a caller the daemon knows is told: the proxy listener and its disk.
    let t = super::commands::token();
    let status =
        client::call::<endpoint::Status>(socket, &Empty {}, t.as_deref().map(|s| s.as_str()));
    let (disk, reserve_known) = match &status {
        Ok(s) => (s.disk, true),
        Err(_) => (None, false),
    };
    disk_check(home, disk, reserve_known, &mut add);
    match &status {
        Ok(s) => proxy_check(s.proxy_listen.as_deref(), &mut add),
        Err(e) => add(
            Level::Warn,
            "proxy",
            format!(
                "the daemon would not say ({e}); run doctor as a member or with the agent's SCOPEHOLD_TOKEN"
            ),
        ),
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

/// A CA certificate this close to its end is a warning.
const CA_WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `ca.key` and `ca.pem`: present, sealed exactly when the other keys are, matching (when the
/// key can be read without the passphrase), and not expiring within 30 days.
fn ca_check(home: &Home, add: &mut impl FnMut(Level, &'static str, String)) {
    let renew = "to renew it: stop the daemon, remove ca.key and ca.pem, start it (it makes a new CA; each `run --proxy` child trusts the new one from its next start)";
    let c = match crate::daemon::ca::inspect(home) {
        Ok(c) => c,
        Err(e) => return add(Level::Fail, "ca", format!("{e:#}")),
    };
    if c.key_sealed != c.master_sealed {
        return add(
            Level::Fail,
            "ca",
            format!(
                "ca.key is {} but master.key is {}: the daemon refuses to start; run `scopehold passphrase change` to seal every key",
                if c.key_sealed { "sealed" } else { "not sealed" },
                if c.master_sealed {
                    "sealed"
                } else {
                    "not sealed"
                },
            ),
        );
    }
    if c.key_matches == Some(false) {
        return add(
            Level::Fail,
            "ca",
            "ca.pem does not certify the key in ca.key (replaced or mixed up): the daemon refuses to start".into(),
        );
    }
    let until = time_str(
        c.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    let now = SystemTime::now();
    let left = c.not_after.duration_since(now).unwrap_or_default();
    if c.not_after <= now {
        add(
            Level::Fail,
            "ca",
            format!(
                "ca.pem expired at {until}: HTTPS_PROXY children refuse the daemon's certificates; {renew}"
            ),
        );
    } else if left < CA_WARN_BEFORE {
        add(
            Level::Warn,
            "ca",
            format!(
                "ca.pem expires at {until}, in {} days; {renew}",
                left.as_secs() / 86_400
            ),
        );
    } else {
        add(
            Level::Ok,
            "ca",
            format!(
                "ca.pem valid until {until} (SHA-256 {}), ca.key {}",
                c.fingerprint,
                if c.key_sealed {
                    "sealed like the other keys"
                } else {
                    "unsealed like the other keys"
                }
            ),
        );
    }
}

/// The whole log verified from its files: every record, chain link and the last
/// checkpoint's signature, against the kept checkpoint if there is one.
fn log_check(home: &Home, add: &mut impl FnMut(Level, &'static str, String)) {
    let key = match home.public_key() {
        Ok(k) => k,
        Err(e) => return add(Level::Fail, "log verify", format!("{e:#}")),
    };
    let trusted = if home.checkpoint_file.exists() {
        match scopehold_log::SignedCheckpoint::read_file(&home.checkpoint_file) {
            Ok(c) => Some(c),
            Err(e) => {
                return add(
                    Level::Fail,
                    "log verify",
                    format!(
                        "the kept checkpoint {}: {e}",
                        home.checkpoint_file.display()
                    ),
                );
            }
        }
    } else {
        None
    };
    let kept = trusted.is_some();
    let opts = scopehold_log::VerifyOptions {
        all_signatures: false,
        trusted,
    };
    match scopehold_log::verify_log(&home.log_dir(), &key, &opts) {
        Ok(r) => add(
            Level::Ok,
            "log verify",
            format!(
                "{} events, every chain link and the last signature valid{}",
                r.events - r.from,
                if kept {
                    ", extends the kept checkpoint"
                } else {
                    " (no kept checkpoint found)"
                }
            ),
        ),
        Err(e) => add(
            Level::Fail,
            "log verify",
            format!("{e} (run `scopehold log verify` for the details)"),
        ),
    }
}

/// Free space on the log's file system against the daemon's reserve, under which it logs
/// only revocations: as the daemon reports it, else as seen from here.
fn disk_check(
    home: &Home,
    daemon: Option<crate::api::wire::StatusDisk>,
    reserve_known: bool,
    add: &mut impl FnMut(Level, &'static str, String),
) {
    use super::status::bytes_str;
    let (free, reserve) = match daemon {
        Some(d) => (d.free_bytes, d.reserve_bytes),
        None => {
            let dir = home.log_dir();
            let at = if dir.exists() { dir } else { home.root.clone() };
            match nix::sys::statvfs::statvfs(&at) {
                Ok(v) => (
                    v.blocks_available().saturating_mul(v.fragment_size()),
                    crate::daemon::engine::Limits::default().disk_reserve_bytes,
                ),
                // Neither the daemon nor the file system would say: nothing to report.
                Err(_) if !reserve_known => return,
                Err(e) => return add(Level::Warn, "disk", format!("{}: {e}", at.display())),
            }
        }
    };
    if free < reserve {
        add(
            Level::Warn,
            "disk",
            format!(
                "{} free for the log, under the daemon's reserve of {}: only revocations are logged, everything else is refused (503 disk_reserve) until space is freed",
                bytes_str(free),
                bytes_str(reserve)
            ),
        );
    } else {
        add(
            Level::Ok,
            "disk",
            format!(
                "{} free for the log (the daemon keeps a reserve of {})",
                bytes_str(free),
                bytes_str(reserve)
            ),
        );
    }
}

/// The proxy's loopback listener, if the daemon has one. Not probed: a connection that
/// closes before its owner is read is refused and logged by the daemon as suspicious.
fn proxy_check(listen: Option<&str>, add: &mut impl FnMut(Level, &'static str, String)) {
    add(
        Level::Ok,
        "proxy",
        match listen {
            Some(a) => format!("listening on {a} (loopback), and on the socket under /v1/proxy/"),
            None => "on the socket under /v1/proxy/ only (no --proxy-listen): `run --proxy` relays its child's connections".into(),
        },
    );
}

/// The keys, the CA and the log of a daemon's state directory.
fn keys_ca_log(home: &Home, ours: bool, add: &mut impl FnMut(Level, &'static str, String)) {
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
        Err(e) if ours => add(Level::Fail, "keys", format!("{e:#}")),
        Err(_) => {}
    }
    if ours {
        ca_check(home, add);
        log_check(home, add);
    }
}

/// An edge's enrolment: its host certificate (how long it is good for), its key's mode, the
/// hub CA it trusts.
fn edge_check(home: &Home, add: &mut impl FnMut(Level, &'static str, String)) {
    match crate::daemon::edge::enrolment(home) {
        Err(e) => add(Level::Fail, "edge", format!("{e:#}")),
        Ok(en) => {
            let left = en
                .not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let days = left.as_secs() / 86_400;
            let (level, note) = if left.is_zero() {
                (
                    Level::Fail,
                    ": expired; the hub refuses it. Enrol again (host add on the hub, then daemon --hub --join with a fresh state directory)",
                )
            } else if left < Duration::from_secs(30 * 86_400) {
                (Level::Warn, ": expires soon; enrol again before then")
            } else {
                (Level::Ok, "")
            };
            add(
                level,
                "edge",
                format!(
                    "enrolled as host {} (hub CA pin {}...); certificate good until {} ({days} days){note}",
                    en.host,
                    &en.ca_pin[..16],
                    time_str(
                        en.not_after
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64)
                    ),
                ),
            );
            if en.key_mode & 0o077 != 0 {
                add(
                    Level::Fail,
                    "host key",
                    format!(
                        "{} is mode {}: make it 0600",
                        home.root.join(crate::daemon::edge::HOST_KEY).display(),
                        mode_str(en.key_mode)
                    ),
                );
            }
        }
    }
}
