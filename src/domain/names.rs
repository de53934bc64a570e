//! Names and identities as types. Each is validated once, where it enters (a request, a log
//! body, a command-line argument), and is then carried as a value that cannot be malformed.
//!
//! They serialise exactly as the strings they replace (`demo`, `openai/prod`,
//! `agent:bot`, `member:root`, `init`), so the log's bytes are unchanged: events written
//! before these types existed decode into them, and events written with them read the same.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid name, secret name or identity. The message says what the
/// grammar is, never echoing more than the kind of thing that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Not 1-63 of `a-z 0-9 . _ -` starting with a letter or digit.
    #[error(
        "invalid {0} name: use 1 to 63 characters from a-z, 0-9, '.', '_', '-', starting with a letter or digit"
    )]
    Name(&'static str),
    /// Not `provider/name` with two valid halves.
    #[error(
        "invalid secret name: use provider/name, each part 1 to 63 characters from a-z, 0-9, '.', '_', '-'"
    )]
    Secret,
    /// Not `agent:NAME`, `member:NAME` or `host:NAME`.
    #[error("invalid identity: use agent:NAME, member:NAME or a bare NAME")]
    Identity,
}

impl NameError {
    /// Whether `msg` is exactly one of these errors' messages (fixed text that names no
    /// input), so that a decoder may pass it on.
    pub fn is_message(msg: &str) -> bool {
        const WHATS: [&str; 6] = [
            "agent or member",
            "agent",
            "member",
            "host",
            "project",
            "identity",
        ];
        WHATS
            .iter()
            .map(|w| NameError::Name(w))
            .chain([NameError::Secret, NameError::Identity])
            .any(|e| e.to_string() == msg)
    }
}

/// The name grammar: 1 to 63 characters from `a-z 0-9 . _ -`, starting with a letter or
/// digit. Shared by projects, agents, members, hosts and both halves of a secret name.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// Serde for a type that is a validated string: written as the string, read through
/// `FromStr` so that a malformed value is refused where it is decoded.
macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A name of an agent, member or host (see [`valid_name`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Validates `s` as the name of a `what` (the word used in the error).
    pub fn parse_as(what: &'static str, s: &str) -> Result<Self, NameError> {
        if valid_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Name(what))
        }
    }
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse_as("agent or member", s)
    }
}

/// A project's name (see [`valid_name`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProjectName(String);

impl ProjectName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProjectName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if valid_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Name("project"))
        }
    }
}

/// A provider secret's name, `provider/name`, each half a valid name: `openai/prod`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

impl SecretName {
    /// The whole name, `provider/name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The provider namespace: `openai` in `openai/prod`.
    pub fn provider(&self) -> &str {
        // Validated at construction: there is exactly one '/'.
        self.0.split_once('/').map_or("", |(p, _)| p)
    }
}

impl FromStr for SecretName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match s.split_once('/') {
            Some((p, n)) if valid_name(p) && valid_name(n) => Ok(Self(s.to_owned())),
            _ => Err(NameError::Secret),
        }
    }
}

/// Who someone is, as established by a credential or the kernel: written `agent:NAME`,
/// `member:NAME` (and, for hosts enrolled with a hub, `host:NAME`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identity {
    /// A program, known by its credential.
    Agent(Name),
    /// A human, known by their unix uid.
    Member(Name),
    /// A host enrolled with a hub, known by its certificate.
    Host(Name),
}

impl Identity {
    /// The name without its kind.
    pub fn name(&self) -> &Name {
        match self {
            Identity::Agent(n) | Identity::Member(n) | Identity::Host(n) => n,
        }
    }
    /// The agent's name, if this is an agent.
    pub fn agent(&self) -> Option<&Name> {
        match self {
            Identity::Agent(n) => Some(n),
            _ => None,
        }
    }
    /// The member's name, if this is a member.
    pub fn member(&self) -> Option<&Name> {
        match self {
            Identity::Member(n) => Some(n),
            _ => None,
        }
    }
}

/// An identity equals its written form (`agent:NAME`), compared without allocating.
impl PartialEq<str> for Identity {
    fn eq(&self, other: &str) -> bool {
        let (kind, n) = match self {
            Identity::Agent(n) => ("agent", n),
            Identity::Member(n) => ("member", n),
            Identity::Host(n) => ("host", n),
        };
        other.split_once(':') == Some((kind, n.as_str()))
    }
}

impl PartialEq<&str> for Identity {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl FromStr for Identity {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (kind, name) = s.split_once(':').ok_or(NameError::Identity)?;
        let name = |what| Name::parse_as(what, name);
        match kind {
            "agent" => Ok(Identity::Agent(name("agent")?)),
            "member" => Ok(Identity::Member(name("member")?)),
            "host" => Ok(Identity::Host(name("host")?)),
            _ => Err(NameError::Identity),
        }
    }
}

/// Who made a change: an identity, or `init` (the state directory's creation, which has no
/// caller: it records the first admin member).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Actor {
    /// `scopehold init`, before any identity exists.
    Init,
    /// An authenticated caller.
    Identity(Identity),
}

impl FromStr for Actor {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s == "init" {
            Ok(Actor::Init)
        } else {
            s.parse().map(Actor::Identity)
        }
    }
}

impl From<Identity> for Actor {
    fn from(i: Identity) -> Self {
        Actor::Identity(i)
    }
}

/// An identity as an admin names it: `agent:NAME`, `member:NAME`, or a bare `NAME` that the
/// decision resolves (an agent of that name, else a member).
#[derive(Clone, PartialEq, Eq)]
pub enum IdentityRef {
    /// `agent:NAME` or `member:NAME`.
    Qualified(Identity),
    /// `NAME`.
    Bare(Name),
}

impl FromStr for IdentityRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            s.parse().map(IdentityRef::Qualified)
        } else {
            Name::parse_as("identity", s)
                .map(IdentityRef::Bare)
                .map_err(|_| NameError::Identity)
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Agent(n) => write!(f, "agent:{n}"),
            Identity::Member(n) => write!(f, "member:{n}"),
            Identity::Host(n) => write!(f, "host:{n}"),
        }
    }
}
impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Init => f.write_str("init"),
            Actor::Identity(i) => i.fmt(f),
        }
    }
}
impl fmt::Display for IdentityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityRef::Qualified(i) => i.fmt(f),
            IdentityRef::Bare(n) => n.fmt(f),
        }
    }
}

// Names are not secrets: Debug shows them as their text, quoted, as a `String` field did.
macro_rules! debug_as_display {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.to_string())
            }
        }
    )*};
}
debug_as_display!(Name, ProjectName, SecretName, Identity, Actor, IdentityRef);

string_serde!(Name);
string_serde!(ProjectName);
string_serde!(SecretName);
string_serde!(Identity);
string_serde!(Actor);
string_serde!(IdentityRef);

/// Serde for an optional name written as `""` when absent: a denial recorded before the
/// request was read (a revoked agent's credential) names no secret and no project, and the
/// log has always written that as an empty string.
pub mod empty_as_none {
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `None` as `""`.
    pub fn serialize<T: std::fmt::Display, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_str(""),
        }
    }

    /// Reads `""` as `None`, anything else through `FromStr`.
    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_grammar() {
        for ok in ["a", "demo", "agent-1", "x.y_z", "0day"] {
            assert!(valid_name(ok), "{ok}");
            assert_eq!(ok.parse::<Name>().unwrap().as_str(), ok);
        }
        for bad in ["", "-a", "A", "a b", "a/b", &"a".repeat(64), "é"] {
            assert!(!valid_name(bad), "{bad}");
            assert!(bad.parse::<ProjectName>().is_err(), "{bad}");
        }
        assert_eq!(
            "openai/prod".parse::<SecretName>().unwrap().provider(),
            "openai"
        );
        for bad in ["openai", "openai/", "/prod", "a/b/c", "Openai/prod"] {
            assert!(bad.parse::<SecretName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn identities_and_actors_read_and_write_as_the_strings_they_replace() {
        for s in ["agent:bot", "member:root", "host:ci-1"] {
            let i: Identity = s.parse().unwrap();
            assert_eq!(i.to_string(), s);
            assert_eq!(serde_json::to_string(&i).unwrap(), format!("\"{s}\""));
            let back: Identity = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(back, i);
        }
        assert_eq!("init".parse::<Actor>().unwrap(), Actor::Init);
        assert_eq!(serde_json::to_string(&Actor::Init).unwrap(), "\"init\"");
        for bad in ["bot", "agent:", "agent:Bot", "robot:x", ":x", "init:x"] {
            assert!(bad.parse::<Identity>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Identity>("\"root\"").is_err());
        assert!(matches!(
            "bot".parse::<IdentityRef>().unwrap(),
            IdentityRef::Bare(_)
        ));
        assert!(matches!(
            "member:bot".parse::<IdentityRef>().unwrap(),
            IdentityRef::Qualified(Identity::Member(_))
        ));
    }
}
