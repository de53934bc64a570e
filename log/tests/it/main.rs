//! The log crate's integration tests: one test binary (fewer binaries build faster), one
//! module per area. Every test runs the real code on real files through the public API
//! (the format-level [`scopehold_log::codec`] and [`scopehold_log::hash`] modules included,
//! to build tampered or forged bytes); the crash loop re-runs this binary as a child.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly at the first surprise"
)]

mod alloc;
mod common;
mod crash;
mod erase;
mod golden;
mod lead;
mod log_basic;
mod powercut;
mod recovery;
mod replica;
mod tamper;
