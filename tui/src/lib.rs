//! ScopeHold's console: the audit trail as a table read lazily through the log's index, a
//! detail pane with each event's hash, the hash it links to and the checkpoint that signs it,
//! verification in the background with its result always in the status bar, filters, and the
//! projection's Secrets, Identities and Grants views. Started by `scopehold console`.
//!
//! `app` holds the state and the key map (pure, tested without a terminal); `source` reads
//! the log; `ui` draws; `run` owns the terminal and the background work.
#![forbid(unsafe_code)]

pub mod app;
pub mod run;
pub mod source;
pub mod ui;

pub use app::Request;
pub use run::{ActionsFn, Config, Console, PageFn, PagesTablesFn, Remote, TablesFn, run};
pub use source::{Decoder, Summary};
