//! ScopeHold's integration tests: one test binary (fewer binaries build faster), one module
//! per area. Every test runs the real code on real files (and, for the CLI, the real binary).
//! The log crate's own tests (format, recovery, tampering, crashes, power cuts, golden
//! vectors) live with it, in `log/tests/it/`.
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod agents;
mod audit;
mod backup;
mod ca;
mod cli;
mod common;
mod compat;
mod console;
mod conventions;
mod custody;
mod daemon;
mod hub;
mod lifecycle;
mod masking;
mod paths;
mod pg;
mod proxy;
mod setup;
mod shred;
mod standby;
mod store;
mod users;
mod watch;
