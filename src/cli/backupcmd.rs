//! `scopehold backup` and `scopehold restore`: the CLI side of `daemon::backup` (which holds
//! the format and every check); this file asks for passphrases and prints what was done.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::exit::{EXIT_VERIFY_FAILED, Exit};
use super::out::outln;
use super::output::time_str;
use crate::daemon::Home;
use crate::daemon::backup::{self, BackupPassphrase, Damaged};
use crate::daemon::keyfile::Passphrase;

/// A damaged backup exits with the verification-failed status; anything else with 1.
fn exit(e: anyhow::Error) -> Exit {
    if e.chain().any(|c| c.is::<Damaged>()) {
        Exit::new(EXIT_VERIFY_FAILED, e)
    } else {
        Exit::from(e)
    }
}

/// `backup --out FILE [--force] [--passphrase-file F]`.
pub fn backup(
    home: &Home,
    out: &Path,
    force: bool,
    passphrase_file: Option<PathBuf>,
    json_out: bool,
) -> Result<(), Exit> {
    // Refused before a passphrase is asked for or a key sealed.
    super::outfile::refuse_existing(out, force)?;
    let keys = backup::take_keys(
        home,
        &BackupPassphrase {
            file: passphrase_file,
        },
    )?;
    let s = super::outfile::write_private(out, force, |w| backup::write(home, &keys, w))?;
    let cp = s.report.checkpoint.checkpoint();
    let mut names = vec!["master.key", "log.key"];
    if s.ca {
        names.push("ca.key");
    }
    if json_out {
        outln!(
            "{}",
            json!({
                "out": out,
                "bytes": s.bytes,
                "events": s.report.events,
                "head": hex::encode(s.report.head),
                "log_id": hex::encode(s.report.log_id),
                "checkpoint": {"size": cp.body.size, "head": hex::encode(cp.body.head), "time": time_str(cp.body.time_ms), "time_ms": cp.body.time_ms},
                "signatures_checked": s.report.signatures_checked,
                "segments": s.segments,
                "keys": names,
                "ca": s.ca,
                "keys_sealed_by_backup": keys.sealed_by_backup,
                "passphrase_checked": keys.passphrase_checked,
                "extends_kept_checkpoint": s.report.extends_trusted,
            })
        )?;
        return Ok(());
    }
    outln!("backup written to {} ({} bytes)", out.display(), s.bytes)?;
    outln!(
        "log:   {} events, head {}, up to the checkpoint signed at {}",
        s.report.events,
        hex::encode(s.report.head),
        time_str(cp.body.time_ms)
    )?;
    outln!(
        "       verified: {} checkpoints, every signature{}",
        s.report.checkpoints,
        match (s.report.extends_trusted, &s.kept_checkpoint) {
            (Some(n), Some(p)) => format!(
                ", extends the kept checkpoint of size {n} ({})",
                p.display()
            ),
            _ => String::new(),
        }
    )?;
    if keys.sealed_by_backup {
        outln!(
            "keys:  {} sealed under the passphrase given (the state directory itself stays unsealed)",
            names.join(", ")
        )?;
    } else {
        outln!(
            "keys:  {} as sealed in the state directory ({})",
            names.join(", "),
            if keys.passphrase_checked {
                "the passphrase given opens them"
            } else {
                "not opened: restoring needs the state's passphrase"
            }
        )?;
    }
    outln!(
        "also:  log.pub{}, {} segment{}",
        if s.ca { ", ca.pem" } else { "" },
        s.segments,
        if s.segments == 1 { "" } else { "s" }
    )?;
    outln!(
        "note:  anyone with this file and the passphrase has every key: it is as safe as the passphrase is strong. Keep it off this disk."
    )?;
    Ok(())
}

/// `restore --from FILE [--passphrase-file F]` into `--home` (or the default).
pub fn restore(
    home: &Home,
    from: &Path,
    passphrase_file: Option<PathBuf>,
    json_out: bool,
) -> Result<(), Exit> {
    let s = backup::restore(home, from, || match &passphrase_file {
        Some(f) => Passphrase::from_file(f),
        None => Passphrase::prompt("the backup's passphrase", "pass --passphrase-file FILE"),
    })
    .map_err(exit)?;
    let cp = s.report.checkpoint.checkpoint();
    if json_out {
        outln!(
            "{}",
            json!({
                "home": s.root,
                "from": from,
                "taken": time_str(s.created_ms),
                "taken_ms": s.created_ms,
                "events": s.report.events,
                "head": hex::encode(s.report.head),
                "log_id": hex::encode(s.report.log_id),
                "public_key": s.public_key.to_hex(),
                "checkpoint": {"size": cp.body.size, "head": hex::encode(cp.body.head), "time": time_str(cp.body.time_ms), "time_ms": cp.body.time_ms},
                "signatures_checked": s.report.signatures_checked,
                "segments": s.segments,
                "ca": s.ca,
                "sealed": true,
                "keys_sealed_by_backup": s.sealed_by_backup,
                "checkpoint_file": s.checkpoint_file,
            })
        )?;
        return Ok(());
    }
    outln!(
        "restored {} events into {} from {} (taken at {})",
        s.report.events,
        s.root.display(),
        from.display(),
        time_str(s.created_ms)
    )?;
    outln!("log id:          {}", hex::encode(s.report.log_id))?;
    outln!("head:            {}", hex::encode(s.report.head))?;
    outln!(
        "last checkpoint: size {} at {}; {} checkpoints, every signature valid (key {})",
        cp.body.size,
        time_str(cp.body.time_ms),
        s.report.checkpoints,
        s.public_key
    )?;
    outln!("kept checkpoint: {}", s.checkpoint_file.display())?;
    outln!(
        "keys:            sealed under the backup's passphrase: the daemon needs it to start (--passphrase-file FILE, or asked on a terminal)"
    )?;
    if s.sealed_by_backup {
        outln!(
            "                 (the state backed up was not sealed; the restored one is, and stays so: `scopehold passphrase change` sets another passphrase)"
        )?;
    }
    if !s.ca {
        outln!(
            "                 (the backup held no CA; the daemon makes one at its first start)"
        )?;
    }
    Ok(())
}
