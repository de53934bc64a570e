//! ScopeHold: provider API keys kept in one local daemon, granted narrowly to named agents,
//! resolved at run time, every use recorded in a tamper-evident log (`scopehold-log`).
//!
//! `domain` is the pure core (names, events, the projection, decisions); `api` is the
//! socket's contract (routes, wire types, the refusal table); `daemon` serves it; `cli` is
//! the command line and the console's glue.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod daemon;
pub mod domain;
