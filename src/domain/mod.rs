//! The domain: names and identities as types, events (what happened, in the past tense), the
//! state they fold into, and the decisions that turn a command into events.
//!
//! Pure: nothing here does I/O, reads a clock or knows of HTTP or tokio. `state::State::apply`
//! holds no decision; `decide::decide` holds them all, and is tested given/when/then.

pub mod decide;
pub mod describe;
pub mod event;
pub mod names;
pub mod partial;
pub mod profile;
pub mod state;
pub mod status;
pub mod watch;

#[cfg(test)]
mod tests;

pub use decide::{
    Caller, Command, DenyReason, GrantSpec, Identified, MAX_RESOLVE_ALL, Refusal, Thing,
    authorize_admin, decide, denial_event, identify, next_version, recorded_refusal,
};
pub use describe::{Description, Who};
pub use event::{CredentialHash, DecodeError, Event, EventKind, ProxyResult, Sealed};
pub use names::{
    Actor, Identity, IdentityRef, Name, NameError, ProjectName, SecretName, valid_name,
};
pub use partial::{PartialState, fold_partial};
pub use profile::Profile;
pub use state::{Agent, ApplyError, Grant, GrantEnd, Member, Run, SecretEntry, State};
pub use status::{GrantState, VersionState, fmt_ms};
