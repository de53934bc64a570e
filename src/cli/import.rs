//! `scopehold secret import --project P FILE`: the variables of a `.env` file stored as
//! secrets through the ordinary endpoints (`secret put`, or `secret rotate` with `--rotate`),
//! so each is one event like any other store. Nothing here prints a value: the parser's
//! errors name line numbers only, and the output names variables, lines and secrets.
//!
//! Everything that can be checked is checked before the first value is sent (the file parses,
//! every `--map` names a variable of the file, no two variables land on one secret, the
//! projects exist, an existing secret is refused without `--rotate`), so a refused import
//! stores nothing. A failure of the daemon midway (a full disk) is reported with what was
//! stored before it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, anyhow};
use serde_json::json;
use zeroize::Zeroizing;

use super::args::ImportArgs;
use super::commands::{Ctx, call};
use super::dotenv;
use super::exit::{EXIT_USAGE, Exit};
use super::out::outln;
use crate::api::endpoint;
use crate::api::wire::{self, Empty, SecretString};
use crate::domain::SecretName;

/// The largest `.env` file read.
const MAX_FILE: u64 = 1 << 20;

/// Reads the file into a zeroizing buffer and checks it is UTF-8 (naming the line if not).
fn read(path: &Path) -> Result<Zeroizing<String>, Exit> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    f.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(anyhow!("{} is larger than {MAX_FILE} bytes", path.display()).into());
    }
    match std::str::from_utf8(&bytes) {
        Ok(_) => {}
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            return Err(anyhow!("{}: line {line}: not UTF-8", path.display()).into());
        }
    }
    // Checked above; moving the bytes keeps them in one zeroizing buffer.
    let v = std::mem::take(&mut *bytes);
    Ok(Zeroizing::new(
        String::from_utf8(v).map_err(|_| anyhow!("not UTF-8"))?,
    ))
}

/// What happens to one variable.
enum Plan {
    Put(SecretName),
    Rotate(SecretName),
    Skip(&'static str),
}

/// `secret import`.
pub fn run(ctx: &Ctx, a: ImportArgs) -> Result<(), Exit> {
    let file = a.file.display().to_string();
    let text = read(&a.file)?;
    let vars = dotenv::parse(&text).map_err(|e| anyhow!("{file}: {e}"))?;

    // --map VAR=PROVIDER/NAME.
    let mut explicit: BTreeMap<String, SecretName> = BTreeMap::new();
    for m in &a.maps {
        let (var, secret) = m.split_once('=').ok_or_else(|| {
            Exit::new(EXIT_USAGE, anyhow!("--map {m}: expected VAR=PROVIDER/NAME"))
        })?;
        let secret: SecretName = secret
            .parse()
            .map_err(|e| Exit::new(EXIT_USAGE, anyhow!("--map {m}: {e}")))?;
        if explicit.insert(var.to_string(), secret).is_some() {
            return Err(Exit::new(
                EXIT_USAGE,
                anyhow!("--map {var}=...: the variable is mapped twice"),
            ));
        }
    }
    for var in explicit.keys() {
        if !vars.iter().any(|v| &v.name == var) {
            return Err(anyhow!("--map {var}=...: {file} sets no variable {var}").into());
        }
    }

    // The profiles' key variables: OPENAI_API_KEY -> openai/NAME. A variable two profiles
    // name is ambiguous and left to --map.
    let providers = call::<endpoint::ProviderList>(ctx, &Empty {}, None)?;
    let mut defaults: BTreeMap<String, Option<SecretName>> = BTreeMap::new();
    for p in &providers.providers {
        let Ok(secret) = format!("{}/{}", p.provider, a.name).parse::<SecretName>() else {
            continue;
        };
        for var in &p.profile.key_env {
            defaults
                .entry(var.clone())
                .and_modify(|e| *e = None)
                .or_insert_with(|| Some(secret.clone()));
        }
    }

    let projects = call::<endpoint::ProjectList>(ctx, &Empty {}, None)?;
    for p in &a.projects {
        if !projects.projects.contains(p) {
            return Err(
                anyhow!("no project {p}: create it first (scopehold project create {p})").into(),
            );
        }
    }
    let existing: BTreeMap<SecretName, wire::SecretInfo> =
        call::<endpoint::SecretList>(ctx, &Empty {}, None)?
            .secrets
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();

    let mut plans = Vec::with_capacity(vars.len());
    let mut targets: BTreeMap<SecretName, &str> = BTreeMap::new();
    let mut refusals = Vec::new();
    for v in &vars {
        let target = match explicit.get(&v.name) {
            Some(s) => Some(s.clone()),
            None => match defaults.get(&v.name) {
                Some(Some(s)) => Some(s.clone()),
                Some(None) => {
                    plans.push(Plan::Skip(
                        "more than one provider profile names this variable: --map it",
                    ));
                    continue;
                }
                None => None,
            },
        };
        let Some(secret) = target else {
            plans.push(Plan::Skip(
                "no mapping (--map VAR=PROVIDER/NAME to import it)",
            ));
            continue;
        };
        if v.value.is_empty() {
            plans.push(Plan::Skip("empty value"));
            continue;
        }
        if v.value.len() > crate::daemon::seal::MAX_VALUE_LEN {
            refusals.push(format!(
                "{} (line {}): the value is larger than {} bytes",
                v.name,
                v.line,
                crate::daemon::seal::MAX_VALUE_LEN
            ));
        }
        if let Some(other) = targets.insert(secret.clone(), &v.name) {
            refusals.push(format!(
                "{} (line {}) and {other} would both be stored as {secret}: --map one of them elsewhere",
                v.name, v.line
            ));
        }
        match existing.get(&secret) {
            Some(s) if s.revoked => {
                refusals.push(format!("{} (line {}): {secret} is revoked", v.name, v.line))
            }
            Some(_) if a.rotate => plans.push(Plan::Rotate(secret)),
            Some(_) => refusals.push(format!(
                "{} (line {}): {secret} exists; pass --rotate to add a new version to it",
                v.name, v.line
            )),
            None => plans.push(Plan::Put(secret)),
        }
    }
    if !refusals.is_empty() {
        return Err(anyhow!(
            "nothing was imported from {file}:\n  {}",
            refusals.join("\n  ")
        )
        .into());
    }

    let mut rows = Vec::with_capacity(vars.len());
    let mut stored = 0usize;
    for (v, plan) in vars.iter().zip(&plans) {
        let (action, secret, done): (&str, Option<&SecretName>, Option<wire::SecretVersionStored>) =
            match plan {
                Plan::Skip(why) => {
                    rows.push(json!({"variable": v.name, "line": v.line, "action": "skipped", "reason": why}));
                    continue;
                }
                Plan::Put(s) if a.dry_run => ("would store", Some(s), None),
                Plan::Rotate(s) if a.dry_run => ("would rotate", Some(s), None),
                Plan::Put(s) => {
                    let r = call::<endpoint::SecretPut>(
                        ctx,
                        &wire::SecretPutRequest {
                            name: s.clone(),
                            projects: a.projects.clone(),
                            value: SecretString::new(v.value.clone()),
                        },
                        None,
                    );
                    ("stored", Some(s), Some(midway(r, stored, &v.name)?))
                }
                Plan::Rotate(s) => {
                    let r = call::<endpoint::SecretRotate>(
                        ctx,
                        &wire::SecretRotateRequest {
                            name: s.clone(),
                            value: SecretString::new(v.value.clone()),
                            grace_secs: a.grace.map(|g| g.as_secs()),
                        },
                        None,
                    );
                    ("rotated", Some(s), Some(midway(r, stored, &v.name)?))
                }
            };
        if done.is_some() {
            stored += 1;
        }
        let mut row = json!({
            "variable": v.name,
            "line": v.line,
            "action": action,
            "secret": secret.map(|s| s.to_string()),
        });
        if let Some(d) = &done {
            row["version"] = json!(d.version);
            row["event"] = json!(d.event);
        }
        if let (Plan::Rotate(s), Some(info)) = (plan, secret.and_then(|s| existing.get(s))) {
            let missing: BTreeSet<_> = a
                .projects
                .iter()
                .filter(|p| !info.projects.contains(p))
                .map(|p| p.to_string())
                .collect();
            if !missing.is_empty() {
                row["note"] = json!(format!(
                    "{s} is not assigned to {} (--project applies to new secrets)",
                    missing.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        rows.push(row);
    }
    drop(vars);
    drop(text);

    let hint = if a.dry_run {
        "dry run: nothing was stored".to_string()
    } else if stored == 0 {
        format!("nothing was stored from {file}")
    } else {
        format!("the values are now in ScopeHold; delete {file} (shred -u {file})")
    };
    if ctx.json {
        outln!(
            "{}",
            json!({"file": file, "stored": stored, "variables": rows, "hint": hint})
        )?;
        return Ok(());
    }
    for r in &rows {
        let var = r["variable"].as_str().unwrap_or_default();
        let line = r["line"].as_u64().unwrap_or_default();
        let action = r["action"].as_str().unwrap_or_default();
        let what = match (r["secret"].as_str(), r["reason"].as_str()) {
            (_, Some(why)) => format!(": {why}"),
            (Some(s), None) => match r["version"].as_u64() {
                Some(ver) => format!(" -> {s} version {ver} (event {})", r["event"]),
                None => format!(" -> {s}"),
            },
            (None, None) => String::new(),
        };
        let note = r["note"]
            .as_str()
            .map(|n| format!("; note: {n}"))
            .unwrap_or_default();
        outln!("{action:<12} {var} (line {line}){what}{note}")?;
    }
    outln!("{hint}")?;
    Ok(())
}

/// A store that failed after others succeeded says what was already stored.
fn midway<T>(r: Result<T, Exit>, stored: usize, var: &str) -> Result<T, Exit> {
    r.map_err(|e| {
        if stored == 0 {
            e
        } else {
            Exit::new(
                e.code,
                anyhow!(
                    "storing {var} failed after {stored} variable(s) were stored (see `scopehold secret list`): {:#}",
                    e.error
                ),
            )
        }
    })
}
