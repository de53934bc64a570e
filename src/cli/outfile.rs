//! Output files the CLI writes (`log export --out`, `log checkpoint --out`), written so that
//! no symlink is ever followed: the output path must not be a symlink, the data goes to a
//! fresh temporary file created with `O_CREAT|O_EXCL|O_NOFOLLOW` beside it, and a rename
//! relative to the directory's descriptor puts it in place (a rename replaces a name, never
//! what a link points at). A file planted at the output path by whoever can write that
//! directory is therefore never written through.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Writes `out` with `write`, atomically, never through a symlink.
pub fn write_output<T>(
    out: &Path,
    write: impl FnOnce(&mut BufWriter<fs::File>) -> Result<T>,
) -> Result<T> {
    if fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symlink; refusing to write through it (remove it or choose another path)",
            out.display()
        );
    }
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", out.display()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(parent)
        .with_context(|| format!("opening the directory {}", parent.display()))?;
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| anyhow!("OS random source: {e}"))?;
    let tmp = format!(".{}.{}.partial", name.to_string_lossy(), hex::encode(rnd));
    let f = nix::fcntl::openat(
        dir.as_fd(),
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map(fs::File::from)
    .map_err(|e| anyhow!("creating {}: {e}", parent.join(&tmp).display()))?;
    let mut w = BufWriter::new(f);
    let r = write(&mut w).and_then(|v| {
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        nix::fcntl::renameat(dir.as_fd(), tmp.as_str(), dir.as_fd(), name)
            .map_err(|e| anyhow!("renaming into {}: {e}", out.display()))?;
        dir.sync_all()?;
        Ok(v)
    });
    if r.is_err() {
        let _ = nix::unistd::unlinkat(
            dir.as_fd(),
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    r.with_context(|| format!("writing {}", out.display()))
}

/// `write_output` for a whole string.
pub fn write_text(out: &Path, text: &str) -> Result<()> {
    write_output(out, |w| Ok(w.write_all(text.as_bytes())?))
}
