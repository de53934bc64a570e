//! `scopehold log ...`: show, verify, export and checkpoint: these read the log files
//! directly, with no daemon.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow};
use scopehold_log::{
    BodyClass, ExportSummary, Item, LogReader, PublicKey, SignedCheckpoint, VerifyOptions,
    VerifyReport, export_items, export_range, verify_bundle, verify_log,
};
use serde_json::json;

use super::args::{ExportArgs, ExportFormat, ShowOptions, VerifyArgs};
use super::exit::{EXIT_VERIFY_FAILED, Exit};
use super::out::outln;
use super::output::time_str;
use crate::daemon::Home;
use crate::domain::describe::ABSENT;
use crate::domain::{Event, EventKind};

fn key_for(home: &Home, arg: Option<&str>) -> anyhow::Result<PublicKey> {
    match arg {
        Some(a) => PublicKey::from_arg(a).map_err(anyhow::Error::msg),
        None => home.public_key().with_context(|| {
            format!(
                "no --key given and no public key in {}",
                home.root.display()
            )
        }),
    }
}

/// `log verify`: the log or a bundle, with its public key.
pub fn verify(home: &Home, a: &VerifyArgs, json_out: bool) -> Result<(), Exit> {
    // The log must extend a checkpoint kept outside it: the auditor's own, or else (for the
    // state directory's log) the daemon's kept checkpoint.
    let (trusted, trusted_from) = match &a.trusted_checkpoint {
        Some(p) => (Some(SignedCheckpoint::read_file(p)?), Some(p.clone())),
        None if a.bundle.is_none() && home.checkpoint_file.exists() => (
            Some(SignedCheckpoint::read_file(&home.checkpoint_file)?),
            Some(home.checkpoint_file.clone()),
        ),
        None => (None, None),
    };
    let opts = VerifyOptions {
        all_signatures: a.all_signatures,
        trusted,
    };
    let key = key_for(home, a.key.as_deref())?;
    let (what, result) = match &a.bundle {
        Some(b) => {
            let bytes =
                std::fs::read(b).with_context(|| format!("reading bundle {}", b.display()))?;
            (
                format!("bundle {}", b.display()),
                verify_bundle(&bytes, &key, &opts),
            )
        }
        None => (
            format!("log {}", home.log_dir().display()),
            verify_log(&home.log_dir(), &key, &opts),
        ),
    };
    match result {
        Ok(r) => {
            // The log accepts any erasure of a secret-bearing body; ScopeHold's rule is that
            // each is a sealed value listed by a later secret_deleted (see daemon::shred).
            if a.bundle.is_none()
                && r.erased_bodies > 0
                && let Err(e) = crate::daemon::shred::check_erasures(&home.log_dir())
            {
                let printed = if json_out {
                    outln!(
                        "{}",
                        json!({"ok": false, "target": what, "reason": format!("{e:#}")})
                    )
                } else {
                    outln!("FAILED: {what}").and_then(|()| outln!("first bad: {e:#}"))
                };
                return Err(super::out::failing(
                    printed,
                    Exit {
                        code: EXIT_VERIFY_FAILED,
                        error: anyhow!("verification failed: {e:#}"),
                    },
                ));
            }
            print_report(&what, &r, &key, trusted_from.as_deref(), json_out)
        }
        Err(e) => {
            let printed = if json_out {
                outln!(
                    "{}",
                    json!({"ok": false, "target": what, "event": e.seq, "location": e.location, "reason": e.failure.to_string()})
                )
            } else {
                outln!("FAILED: {what}").and_then(|()| outln!("first bad: {e}"))
            };
            Err(super::out::failing(
                printed,
                Exit {
                    code: EXIT_VERIFY_FAILED,
                    error: anyhow!("verification failed: {e}"),
                },
            ))
        }
    }
}

fn print_report(
    what: &str,
    r: &VerifyReport,
    key: &PublicKey,
    trusted: Option<&Path>,
    json_out: bool,
) -> Result<(), Exit> {
    let cp = r.checkpoint.checkpoint();
    if json_out {
        outln!(
            "{}",
            json!({
                "ok": true,
                "target": what,
                "log_id": hex::encode(r.log_id),
                "from": r.from,
                "events": r.events - r.from,
                "next_seq": r.events,
                "head": hex::encode(r.head),
                "checkpoint": {"size": cp.body.size, "head": hex::encode(cp.body.head), "time": time_str(cp.body.time_ms), "time_ms": cp.body.time_ms},
                "checkpoints": r.checkpoints,
                "signatures_checked": r.signatures_checked,
                "redacted_bodies": r.redacted_bodies,
                "erased_bodies": r.erased_bodies,
                "pending_bytes": r.pending_bytes,
                "extends_trusted_size": r.extends_trusted,
                "public_key": key.to_hex(),
                "rollback_checked": trusted.is_some(),
            })
        )?;
        return Ok(());
    }
    outln!("OK: {what}")?;
    outln!("log id:          {}", hex::encode(r.log_id))?;
    if r.events > r.from {
        outln!(
            "events:          {} (sequence {}..={})",
            r.events - r.from,
            r.from,
            r.events - 1
        )?;
    } else {
        outln!("events:          0")?;
    }
    outln!("head:            {}", hex::encode(r.head))?;
    outln!(
        "last checkpoint: size {} at {}, signature valid (key {})",
        cp.body.size,
        time_str(cp.body.time_ms),
        key
    )?;
    outln!(
        "checked:         {} checkpoints, {} signatures",
        r.checkpoints,
        r.signatures_checked
    )?;
    if r.redacted_bodies > 0 {
        outln!(
            "bodies left out: {} (secret-bearing; their commitments verified in the chain)",
            r.redacted_bodies
        )?;
    }
    if r.erased_bodies > 0 {
        outln!(
            "erased:          {} (sealed values destroyed by a recorded secret deletion; their events verified in the chain)",
            r.erased_bodies
        )?;
    }
    if let (Some(size), Some(p)) = (r.extends_trusted, trusted) {
        outln!(
            "extends:         trusted checkpoint of size {size} ({})",
            p.display()
        )?;
    }
    if trusted.is_none() && r.from == 0 && r.events > 0 {
        outln!(
            "note:            no checkpoint kept elsewhere was given or found: a log cut back to an older, validly signed state would not be noticed (--trusted-checkpoint FILE)"
        )?;
    }
    if r.pending_bytes > 0 {
        outln!(
            "pending:         {} bytes after the last checkpoint: an append in flight (a writer holds the log open)",
            r.pending_bytes
        )?;
    }
    Ok(())
}

/// `log export`: a bundle or JSONL for auditors.
pub fn export(home: &Home, a: &ExportArgs, json_out: bool) -> Result<(), Exit> {
    let key = home.public_key()?;
    let reader = LogReader::open(&home.log_dir(), Some(&key))
        .with_context(|| format!("opening the log in {}", home.log_dir().display()))?;
    let s = match a.format {
        ExportFormat::Bundle => super::outfile::write_output(&a.out, |w| {
            Ok(scopehold_log::export(&reader, &key, a.from, a.to, w)?)
        })?,
        ExportFormat::Jsonl => export_jsonl(&reader, &key, a.from, a.to, &a.out)?,
    };
    if json_out {
        outln!(
            "{}",
            json!({"out": a.out, "format": format!("{:?}", a.format).to_lowercase(), "from": s.from, "to": s.to, "requested_to": s.requested_to, "events": s.events, "redacted": s.redacted, "checkpoints": s.checkpoints})
        )?;
    } else {
        outln!(
            "exported events {}..={} ({} events, {} secret-bearing bodies left out, {} checkpoints) to {}",
            s.from,
            s.to,
            s.events,
            s.redacted,
            s.checkpoints,
            a.out.display()
        )?;
        if s.to != s.requested_to {
            outln!(
                "(extended from event {} to {}: the end of its group commit, where the checkpoint that signs it is)",
                s.requested_to,
                s.to
            )?;
        }
    }
    Ok(())
}

/// One JSON object per line: a header, then events and checkpoints in log order. Each event
/// carries its raw envelope bytes in hex, so a verifier in another language can recompute
/// the chain; public bodies are included (as UTF-8 text when they are, else hex), secret-
/// bearing bodies never.
fn export_jsonl(
    reader: &LogReader,
    key: &PublicKey,
    from: u64,
    to: Option<u64>,
    out: &Path,
) -> anyhow::Result<ExportSummary> {
    let (real_to, _) = export_range(reader, from, to)?;
    super::outfile::write_output(out, |w| {
        writeln!(
            w,
            "{}",
            json!({"type": "header", "format": "scopehold-log-export-jsonl v1", "log_id": hex::encode(reader.log_id()), "public_key": key.to_hex(), "from": from, "to": real_to})
        )?;
        let s = export_items(reader, from, to, &mut |item| {
            let line = match item {
                Item::Event(r) => {
                    let mut o = json!({
                        "type": "event",
                        "seq": r.seq(),
                        "time": time_str(r.envelope.time_ms),
                        "time_ms": r.envelope.time_ms,
                        "kind": r.envelope.kind,
                        "kind_name": EventKind::name_of(r.envelope.kind),
                        "class": match r.class() { BodyClass::Public => "public", BodyClass::Secret => "secret" },
                        "prev": hex::encode(r.envelope.prev),
                        "hash": hex::encode(r.hash),
                        "commitment": hex::encode(r.envelope.commitment),
                        "envelope_hex": hex::encode(&r.envelope_bytes),
                    });
                    // export_items hands out no secret-bearing body.
                    match &r.body {
                        Some(b) => match std::str::from_utf8(&b.bytes) {
                            Ok(t) => o["body"] = json!(t),
                            Err(_) => o["body_hex"] = json!(hex::encode(&b.bytes[..])),
                        },
                        None => {
                            o["body"] = serde_json::Value::Null;
                            o["redacted"] = json!(true);
                        }
                    }
                    o
                }
                Item::Checkpoint(cp) => {
                    json!({"type": "checkpoint", "size": cp.body.size, "head": hex::encode(cp.body.head), "time": time_str(cp.body.time_ms), "time_ms": cp.body.time_ms, "body_hex": hex::encode(cp.body.encode()), "signature": hex::encode(cp.signature)})
                }
            };
            writeln!(w, "{line}")
        })?;
        Ok(s)
    })
}

/// `log checkpoint`: the latest signed checkpoint, for an auditor to keep.
pub fn checkpoint(home: &Home, out: Option<&Path>, json_out: bool) -> Result<(), Exit> {
    let key = home.public_key()?;
    let reader = LogReader::open(&home.log_dir(), Some(&key))
        .with_context(|| format!("opening the log in {}", home.log_dir().display()))?;
    let cp = reader.checkpoint();
    let text = cp.to_text();
    match out {
        Some(p) => {
            super::outfile::write_text(p, &text)?;
            if json_out {
                outln!(
                    "{}",
                    json!({"out": p, "size": cp.body.size, "head": hex::encode(cp.body.head)})
                )?;
            } else {
                outln!(
                    "checkpoint of size {} written to {}",
                    cp.body.size,
                    p.display()
                )?;
            }
        }
        None if json_out => outln!(
            "{}",
            json!({"size": cp.body.size, "head": hex::encode(cp.body.head), "time": time_str(cp.body.time_ms), "time_ms": cp.body.time_ms, "checkpoint": text})
        )?,
        None => super::out::text(&text)?,
    }
    Ok(())
}

/// `log show`: the log's events decoded, filtered. Reads the log files directly (no daemon
/// needed); secret-bearing bodies are never printed (they are described, redacted). The
/// window, limit, project and follow are [`Scan`](super::logscan::Scan)'s.
pub fn show(
    home: &Home,
    identity: Option<&str>,
    secret: Option<&str>,
    kind: Option<EventKind>,
    denied: bool,
    options: &ShowOptions,
    json_out: bool,
) -> Result<(), Exit> {
    let key = home.public_key()?;
    let reader = LogReader::open(&home.log_dir(), Some(&key))
        .with_context(|| format!("opening the log in {}", home.log_dir().display()))?;
    let want_identity = |i: &str| match identity {
        None => true,
        Some(w) if w.contains(':') => i == w,
        Some(w) => i.split_once(':').map(|(_, n)| n) == Some(w),
    };
    if !json_out {
        outln!(
            "{:>6}  {:<24}  {:<16} {:<23} {:<30} DETAILS",
            "SEQ",
            "TIME",
            "ACTOR",
            "ACTION",
            "SUBJECT"
        )?;
    }
    let mut scan = super::logscan::Scan::new(reader, options)?;
    while let Some(rec) = scan.next_record() {
        let rec = rec?;
        if kind.is_some_and(|k| k.number() != rec.envelope.kind) {
            continue;
        }
        let ev = match (rec.class(), &rec.body) {
            (BodyClass::Public, Some(b)) => Some(
                Event::from_body(rec.envelope.kind, &b.bytes)
                    .with_context(|| format!("event {}", rec.seq()))?,
            ),
            _ => None,
        };
        if denied && !ev.as_ref().is_some_and(Event::is_denial) {
            continue;
        }
        let ev_identity = ev.as_ref().and_then(Event::identity).unwrap_or_default();
        if identity.is_some() && !want_identity(&ev_identity) {
            continue;
        }
        let ev_secret = ev
            .as_ref()
            .and_then(Event::secret)
            .map(|s| s.to_string())
            .unwrap_or_default();
        if secret.is_some_and(|s| s != ev_secret) {
            continue;
        }
        if !scan.about_project(ev.as_ref()) {
            continue;
        }
        // A secret-bearing body is decoded only to say who did what to whom (a reissued
        // credential): its description redacts the secret fields, and the body itself is
        // never printed.
        let secret_ev = match (rec.class(), &rec.body) {
            (BodyClass::Secret, Some(b)) => Some(
                Event::from_body(rec.envelope.kind, &b.bytes)
                    .with_context(|| format!("event {}", rec.seq()))?,
            ),
            _ => None,
        };
        let described = ev.as_ref().or(secret_ev.as_ref());
        if json_out {
            scan.emit(json_row(&rec, ev.as_ref(), described)?.to_string())?;
        } else {
            scan.emit(text_row(&rec, described))?;
        }
    }
    scan.finish()
}

/// One `log show` line: seq, time, actor, action (the kind), subject, then the outcome and
/// every other field as `name=value` (the domain's description: the console shows the same).
fn text_row(rec: &scopehold_log::Record, ev: Option<&Event>) -> String {
    let kind = EventKind::name_of(rec.envelope.kind);
    let (actor, subject, rest) = match ev.map(Event::describe) {
        Some(d) => {
            let rest = [d.outcome.clone(), d.details_text()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("  ");
            (d.actor_text(), d.subject, rest)
        }
        None => (ABSENT.to_string(), "(no body)".to_string(), String::new()),
    };
    format!(
        "{:>6}  {}  {actor:<16} {kind:<23} {subject:<30} {rest}",
        rec.seq(),
        time_str(rec.envelope.time_ms),
    )
    .trim_end()
    .to_string()
}

/// One `log show --json` line: seq, time, kind, hash and (public bodies only) the event, with
/// the description's actor (`null` when not recorded), subject, outcome and fields.
fn json_row(
    rec: &scopehold_log::Record,
    public: Option<&Event>,
    described: Option<&Event>,
) -> anyhow::Result<serde_json::Value> {
    let mut o = json!({"seq": rec.seq(), "time": time_str(rec.envelope.time_ms), "kind": EventKind::name_of(rec.envelope.kind), "hash": hex::encode(rec.hash)});
    if let Some(e) = public {
        o["event"] = serde_json::to_value(e)?;
    }
    if let Some(d) = described.map(Event::describe) {
        o["actor"] = json!(d.actor.as_ref().map(ToString::to_string));
        o["subject"] = json!(d.subject);
        o["outcome"] = json!(d.outcome);
        o["fields"] = serde_json::Value::Object(
            d.fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        );
    }
    Ok(o)
}
