//! Output files the CLI writes (`log export --out`, `log checkpoint --out`), written so that
//! no symlink is ever followed: the output path must not be a symlink, the data goes to a
//! fresh temporary file created with `O_CREAT|O_EXCL|O_NOFOLLOW` beside it, and a rename
//! relative to the directory's descriptor puts it in place (a rename replaces a name, never
//! what a link points at). A file planted at the output path by whoever can write that
//! directory is therefore never written through. A private output (a backup) is created
//! 0600 and never replaces an existing file unless asked to.

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
    write_file(out, 0o644, true, write)
}

/// [`write_output`] for a file that holds what only its owner may read (a backup): created
/// 0600, and an existing `out` is refused unless `replace` (`--force`). The refusal is
/// checked first, before any work, and again when the file is put in place (a rename that
/// never replaces), so a file that appears meanwhile is not overwritten either.
pub fn write_private<T>(
    out: &Path,
    replace: bool,
    write: impl FnOnce(&mut BufWriter<fs::File>) -> Result<T>,
) -> Result<T> {
    refuse_existing(out, replace)?;
    write_file(out, 0o600, replace, write)
}

/// The refusal [`write_private`] starts with, for a caller with work to do (a prompt) before
/// it writes.
pub fn refuse_existing(out: &Path, replace: bool) -> Result<()> {
    if !replace && fs::symlink_metadata(out).is_ok() {
        bail!(
            "{} exists; refusing to overwrite it (pass --force to replace it)",
            out.display()
        );
    }
    Ok(())
}

fn write_file<T>(
    out: &Path,
    mode: u32,
    replace: bool,
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
        Mode::from_bits_truncate(mode),
    )
    .map(fs::File::from)
    .map_err(|e| anyhow!("creating {}: {e}", parent.join(&tmp).display()))?;
    let mut w = BufWriter::new(f);
    let r = write(&mut w).and_then(|v| {
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        if replace {
            nix::fcntl::renameat(dir.as_fd(), tmp.as_str(), dir.as_fd(), name)
                .map_err(|e| anyhow!("renaming into {}: {e}", out.display()))?;
        } else {
            put_new(&dir, &tmp, name, out)?;
        }
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

/// Renames `tmp` to `name` in `dir` only if `name` does not exist (`RENAME_NOREPLACE`; where
/// the file system lacks it, a hard link, which never replaces either, then the temporary
/// name removed).
fn put_new(dir: &fs::File, tmp: &str, name: &std::ffi::OsStr, out: &Path) -> Result<()> {
    use nix::errno::Errno;
    let exists = || {
        anyhow!(
            "{} appeared while it was being written; refusing to overwrite it (pass --force to replace it)",
            out.display()
        )
    };
    match nix::fcntl::renameat2(
        dir.as_fd(),
        tmp,
        dir.as_fd(),
        name,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => Err(exists()),
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            nix::unistd::linkat(
                dir.as_fd(),
                tmp,
                dir.as_fd(),
                name,
                nix::fcntl::AtFlags::empty(),
            )
            .map_err(|e| match e {
                Errno::EEXIST => exists(),
                e => anyhow!("linking into {}: {e}", out.display()),
            })?;
            nix::unistd::unlinkat(dir.as_fd(), tmp, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(|e| anyhow!("removing the temporary {tmp}: {e}"))
        }
        Err(e) => Err(anyhow!("renaming into {}: {e}", out.display())),
    }
}
