//! The daemon's process, made unreadable to processes of its own uid (as ssh-agent and
//! gpg-agent do): not dumpable, so no same-uid process can ptrace it or read its
//! `/proc/PID/mem`, `environ` or `maps`, and no core file, so a crash or a SIGQUIT leaves no
//! key on disk. Memory is locked against swap where the system allows it.
//!
//! Root (or anything with CAP_SYS_PTRACE) can still read the daemon's memory: no user-space
//! process can protect itself from the kernel's administrator.

pub use crate::api::wire::Protections;

/// What [`harden`] achieved in this process: a fact about the process, so kept with it.
static APPLIED: std::sync::OnceLock<Protections> = std::sync::OnceLock::new();

/// The protections applied to this process, if [`harden`] ran (the daemon binary; not an
/// engine opened in-process by a test).
pub fn applied() -> Option<&'static Protections> {
    APPLIED.get()
}

/// Makes this process non-dumpable and core-less; locks its memory if permitted. Call before
/// any key is read.
pub fn harden() -> Protections {
    let p = apply();
    let _ = APPLIED.set(p.clone());
    p
}

fn apply() -> Protections {
    // Order matters little, but both come before keys are loaded.
    let dumpable = nix::sys::prctl::set_dumpable(false).is_err()
        || nix::sys::prctl::get_dumpable().unwrap_or(true);
    let core_dumps =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0).is_err();
    let (memory_locked, memory_lock_note) = lock_memory();
    Protections {
        dumpable,
        core_dumps,
        memory_locked,
        memory_lock_note,
    }
}

/// Only non-dumpable, for a short-lived process that holds a credential while its child runs
/// (`scopehold run`): the child, under the same uid, cannot read the parent's environment or
/// memory. (`execve` makes the child itself dumpable again; it holds no credential.)
pub fn not_dumpable() -> Result<(), nix::Error> {
    nix::sys::prctl::set_dumpable(false)
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`, only when the lock cannot run out:
/// with CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK. With a finite limit, a later allocation
/// past it would fail under MCL_FUTURE and stop the daemon mid-request, which is worse than
/// swap. MCL_ONFAULT locks pages as they are touched, so idle thread stacks are not made
/// resident. Systemd's unit grants it with `LimitMEMLOCK=infinity`.
fn lock_memory() -> (bool, Option<String>) {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    let unlimited =
        getrlimit(Resource::RLIMIT_MEMLOCK).is_ok_and(|(soft, _)| soft == RLIM_INFINITY);
    if !unlimited && !has_cap_ipc_lock() {
        return (
            false,
            Some("RLIMIT_MEMLOCK is finite and CAP_IPC_LOCK is absent (set LimitMEMLOCK=infinity): pages may be swapped".into()),
        );
    }
    // MCL_ONFAULT (Linux 4.4) is not among nix's named flags; its value is fixed by the ABI.
    const MCL_ONFAULT: i32 = 4;
    let flags = MlockAllFlags::MCL_CURRENT
        | MlockAllFlags::MCL_FUTURE
        | MlockAllFlags::from_bits_retain(MCL_ONFAULT);
    match mlockall(flags) {
        Ok(()) => (true, None),
        Err(e) => (false, Some(format!("mlockall: {e}"))),
    }
}

/// Whether CAP_IPC_LOCK (bit 14) is in this process's effective set.
fn has_cap_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}
