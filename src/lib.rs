//! ScopeHold: provider API keys kept in one local daemon, granted narrowly to named agents,
//! resolved at run time, every use recorded in a tamper-evident log (`scopehold-log`).
//!
//! This crate holds the domain, the projection, the daemon and the CLI.
#![forbid(unsafe_code)]
// Outside tests, no `unwrap`: an `expect` names the invariant that makes it safe.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cli;
pub mod client;
pub mod commands;
pub mod console;
pub mod core;
pub mod daemon;
pub mod domain;
pub mod home;
pub mod logcmd;
pub mod seal;
pub mod server;
