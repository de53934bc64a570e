//! `scopehold completions SHELL` and `scopehold man [--out DIR]`: generated from the same clap
//! types that parse the command line, so they cannot drift from it. Neither needs a state
//! directory or a daemon. And `scopehold path [NAME]`: where the files are, as the command
//! line resolves them (so a README line never guesses a default).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;
use super::args::PathName;
use super::exit::Exit;
use super::out::outln;
use crate::daemon::Home;

/// The command as the man pages and completions see it: no `help` subcommand of its own
/// (clap's `help` is not a ScopeHold command and would get a page of its own).
fn command() -> clap::Command {
    let mut c = Cli::command().disable_help_subcommand(true);
    // Propagates display names (`scopehold-grant-create`) and global options down the tree.
    c.build();
    c
}

/// Prints the completion script for `shell` on standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Exit> {
    let mut c = command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut c, "scopehold", &mut script);
    // A closed pipe (`| head`) ends quietly, as for every command's output.
    super::out::write_bytes(&script)
}

/// One page, rendered.
fn render(cmd: clap::Command) -> Result<(String, Vec<u8>), Exit> {
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render(&mut page).context("rendering a manual page")?;
    Ok((man.get_filename(), page))
}

/// Every page: the top one, then each subcommand's (depth first), as clap_mangen names them.
fn pages(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), Exit> {
    out.push(render(cmd.clone())?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, out)?;
    }
    Ok(())
}

/// Writes every page into `dir` (each atomically, never through a symlink), or prints the
/// top page on standard output.
pub fn man(dir: Option<&Path>, json: bool) -> Result<(), Exit> {
    let cmd = command();
    let Some(dir) = dir else {
        let (_, page) = render(cmd)?;
        return super::out::write_bytes(&page);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut all = Vec::new();
    pages(&cmd, &mut all)?;
    let mut written: Vec<PathBuf> = Vec::with_capacity(all.len());
    for (name, page) in &all {
        let path = dir.join(name);
        super::outfile::write_output(&path, |w| Ok(w.write_all(page)?))?;
        written.push(path);
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({"dir": dir, "pages": written.len(), "files": written})
        )?;
    } else {
        outln!(
            "wrote {} manual pages to {} (try: man -l {})",
            written.len(),
            dir.display(),
            dir.join("scopehold.1").display()
        )?;
    }
    Ok(())
}

/// Every path `scopehold path` knows, in the order it lists them.
fn paths(home: &Home, socket: &Path) -> Vec<(PathName, &'static str, PathBuf)> {
    use crate::daemon::ca::{BUNDLE, CA_CERT};
    vec![
        (PathName::Home, "home", home.root.clone()),
        (PathName::Socket, "socket", socket.to_path_buf()),
        (PathName::LogPub, "log-pub", home.log_pub()),
        (PathName::Log, "log", home.log_dir()),
        (
            PathName::Checkpoint,
            "checkpoint",
            home.checkpoint_file.clone(),
        ),
        (PathName::CaCert, "ca-cert", home.root.join(CA_CERT)),
        (PathName::CaBundle, "ca-bundle", home.root.join(BUNDLE)),
    ]
}

/// `path [NAME]`: one path alone on its line, or every path with its name.
pub fn path(home: &Home, socket: &Path, which: Option<PathName>, json: bool) -> Result<(), Exit> {
    let all = paths(home, socket);
    let chosen: Vec<_> = all
        .iter()
        .filter(|(n, _, _)| which.is_none_or(|w| w == *n))
        .collect();
    if json {
        let m: serde_json::Map<String, serde_json::Value> = chosen
            .iter()
            .map(|(_, k, p)| ((*k).to_string(), serde_json::json!(p)))
            .collect();
        outln!("{}", serde_json::Value::Object(m))?;
    } else if which.is_some() {
        for (_, _, p) in &chosen {
            outln!("{}", p.display())?;
        }
    } else {
        for (_, k, p) in &chosen {
            outln!("{k:<11} {}", p.display())?;
        }
    }
    Ok(())
}
