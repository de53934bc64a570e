//! ScopeHold's integration tests: one test binary (fewer binaries build faster), one module
//! per area. Every test runs the real code on real files (and, for the CLI, the real binary).
#![allow(
    clippy::unwrap_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod alloc;
mod cli;
mod common;
mod compat;
mod console;
mod crash;
mod daemon;
mod golden;
mod log_basic;
mod powercut;
mod recovery;
mod tamper;
