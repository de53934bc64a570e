//! The command line's defaults: the default project, and parsing with it.
//!
//! A command that takes `--project` (resolve, run, secret put, grant create, ...) may leave
//! it out; the project is then `SCOPEHOLD_PROJECT`, else `project = "NAME"` in
//! `$XDG_CONFIG_HOME/scopehold/config.toml` (else `~/.config/scopehold/config.toml`). Both
//! are read only when a required `--project` is missing, so a broken config file troubles
//! no command that does not need it; when it is needed, it names the file.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use super::args::Cli;
use super::exit::{Coded, EXIT_USAGE, Exit};
use crate::domain::ProjectName;

/// The variable that names the default project.
pub const PROJECT_ENV: &str = "SCOPEHOLD_PROJECT";

/// The config file, as written by people: unknown keys are refused, so a misspelt key is an
/// error rather than a setting silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The default project.
    project: Option<String>,
}

/// `$XDG_CONFIG_HOME/scopehold/config.toml`, else `$HOME/.config/scopehold/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("scopehold/config.toml"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".config/scopehold/config.toml"))
}

fn config_error(message: String) -> Exit {
    Exit::new(EXIT_USAGE, Coded::new("config", message))
}

/// The default project: `SCOPEHOLD_PROJECT`, else the config file's `project`, else none. A
/// malformed value or file is an error naming where it came from.
pub fn default_project() -> Result<Option<ProjectName>, Exit> {
    if let Some(v) = std::env::var_os(PROJECT_ENV).filter(|v| !v.is_empty()) {
        let v = v.to_string_lossy();
        return v
            .parse()
            .map(Some)
            .map_err(|e| config_error(format!("{PROJECT_ENV}={v:?}: {e}")));
    }
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(config_error(format!(
                "reading the config file {}: {e}",
                path.display()
            )));
        }
    };
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        config_error(format!(
            "malformed config file {}: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    file.project
        .map(|p| {
            p.parse().map_err(|e| {
                config_error(format!(
                    "config file {}: project = {p:?}: {e}",
                    path.display()
                ))
            })
        })
        .transpose()
}

/// Why the command line could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// clap's own: a usage error, or `--help`/`--version`.
    Clap(clap::Error),
    /// The default project was needed and could not be found or read.
    Exit(Exit),
}

/// Parses the command line, filling a missing required `--project` with the default
/// project (see the module's documentation).
pub fn parse_from(args: &[OsString]) -> Result<Cli, ParseError> {
    let e = match Cli::try_parse_from(args) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let Some(only_project) = misses_project(&e) else {
        return Err(ParseError::Clap(e));
    };
    let Some(project) = default_project().map_err(ParseError::Exit)? else {
        if !only_project {
            // clap's message lists every missing argument, --project among them.
            return Err(ParseError::Clap(e));
        }
        let file = config_path().map_or_else(
            || "$XDG_CONFIG_HOME/scopehold/config.toml".to_string(),
            |p| p.display().to_string(),
        );
        return Err(ParseError::Exit(Exit::usage(format!(
            "no project given: pass --project NAME, set {PROJECT_ENV}=NAME, or put project = \"NAME\" in {file}"
        ))));
    };
    let matches = with_default_project(Cli::command(), project.as_str())
        .try_get_matches_from(args)
        .map_err(ParseError::Clap)?;
    Cli::from_arg_matches(&matches).map_err(ParseError::Clap)
}

/// Whether clap refused the line for a missing `--project`: `Some(true)` when it is the
/// only argument missing, `Some(false)` when others are missing too.
fn misses_project(e: &clap::Error) -> Option<bool> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::MissingRequiredArgument {
        return None;
    }
    let missing: Vec<&str> = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::Strings(v)) => v.iter().map(String::as_str).collect(),
        Some(ContextValue::String(a)) => vec![a.as_str()],
        _ => return None,
    };
    missing
        .iter()
        .any(|a| a.starts_with("--project "))
        .then_some(missing.len() == 1)
}

/// `cmd` with every required `--project`, at any depth, defaulting to `project`.
fn with_default_project(mut cmd: clap::Command, project: &str) -> clap::Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_long() == Some("project") && a.is_required_set())
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        let p = project.to_string();
        cmd = cmd.mut_arg(id, |a| a.required(false).default_value(p));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| with_default_project(s, project));
    }
    cmd
}
