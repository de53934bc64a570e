//! Provider profiles: where a provider's keys may be sent and how they are carried.
//!
//! A profile is data, not code: the upstream hosts a key may reach, the header (and its
//! prefix) the key travels in, and the environment variables that point SDKs at the proxy.
//! Built-ins cover the common providers; admins add or change profiles with events
//! (`provider_set`), which then override the built-in of the same name. The proxy sends a
//! key only to a host of its secret's profile, so even a proxied request cannot carry a key
//! to a server the profile does not name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a profile is malformed. Messages name the field, never echo the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// No host, or too many.
    #[error("a profile names 1 to 16 upstream hosts")]
    HostCount,
    /// A host that is not a lower-case DNS name with an optional port.
    #[error(
        "invalid upstream host: use a lower-case DNS name (letters, digits, '-', '.'), optionally with :PORT"
    )]
    Host,
    /// A header name that is not an HTTP token, or one the proxy must own.
    #[error(
        "invalid key header: use an HTTP header name (letters, digits, '-'), not a hop-by-hop or Host header"
    )]
    Header,
    /// A prefix with control characters or too long.
    #[error("invalid key prefix: at most 32 printable characters (e.g. \"Bearer \")")]
    Prefix,
    /// A base path that does not start with '/' or holds odd characters.
    #[error("invalid base path: empty, or '/' followed by URL path characters, at most 128")]
    BasePath,
    /// An environment variable name that is not `[A-Z_][A-Z0-9_]*`.
    #[error("invalid environment variable name: use A-Z, 0-9 and '_', not starting with a digit")]
    EnvVar,
}

/// How one provider is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawProfile")]
pub struct Profile {
    /// The hosts a key of this provider may be sent to, `host` or `host:port` (443 when no
    /// port is given). Requests through a base URL go to the first.
    pub hosts: Vec<String>,
    /// The header the key travels in, lower case (`authorization`, `x-api-key`).
    pub header: String,
    /// What precedes the key in that header (`Bearer `, `token `, or nothing).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Appended to the proxy's URL in the base-URL variables (`/v1` for OpenAI's SDKs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_path: String,
    /// Environment variables set to the proxy's base URL (`OPENAI_BASE_URL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_url_env: Vec<String>,
    /// Environment variables that receive the key, or under the proxy its placeholder
    /// (`OPENAI_API_KEY`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_env: Vec<String>,
}

/// A profile as read, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    hosts: Vec<String>,
    header: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    base_path: String,
    #[serde(default)]
    base_url_env: Vec<String>,
    #[serde(default)]
    key_env: Vec<String>,
}

impl TryFrom<RawProfile> for Profile {
    type Error = ProfileError;
    fn try_from(r: RawProfile) -> Result<Self, ProfileError> {
        let p = Profile {
            hosts: r.hosts,
            header: r.header.to_ascii_lowercase(),
            prefix: r.prefix,
            base_path: r.base_path,
            base_url_env: r.base_url_env,
            key_env: r.key_env,
        };
        p.check()?;
        Ok(p)
    }
}

/// Whether `h` is `name` or `name:port`, `name` a lower-case DNS name.
pub fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    if let Some(p) = port
        && (!p.parse::<u16>().is_ok_and(|p| p > 0) || p.starts_with('0'))
    {
        return false;
    }
    // A name, not an address: the last label of a DNS name is never all digits (so
    // `127.0.0.1`, `169.254.169.254` and `2130706433` are refused).
    let last_is_number = name
        .rsplit('.')
        .next()
        .is_some_and(|l| !l.is_empty() && l.bytes().all(|c| c.is_ascii_digit()));
    !name.is_empty()
        && !last_is_number
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

fn valid_env(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Headers the proxy itself owns: a profile cannot put a key in them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl Profile {
    /// Checks every field (also run on every profile read from a request or the log).
    pub fn check(&self) -> Result<(), ProfileError> {
        if self.hosts.is_empty() || self.hosts.len() > 16 {
            return Err(ProfileError::HostCount);
        }
        if !self.hosts.iter().all(|h| valid_host(h)) {
            return Err(ProfileError::Host);
        }
        let h = self.header.as_bytes();
        if h.is_empty()
            || h.len() > 64
            || !h
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            || RESERVED_HEADERS.contains(&self.header.as_str())
        {
            return Err(ProfileError::Header);
        }
        if self.prefix.len() > 32 || self.prefix.bytes().any(|c| !(0x20..0x7f).contains(&c)) {
            return Err(ProfileError::Prefix);
        }
        let bp = self.base_path.as_bytes();
        if !bp.is_empty()
            && (bp[0] != b'/'
                || bp.len() > 128
                || !bp
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"/-._~".contains(c)))
        {
            return Err(ProfileError::BasePath);
        }
        if !self
            .base_url_env
            .iter()
            .chain(&self.key_env)
            .all(|v| valid_env(v))
        {
            return Err(ProfileError::EnvVar);
        }
        Ok(())
    }

    /// Whether a key of this provider may be sent to `host` (`name` or `name:port`; no port
    /// means 443). Compared exactly, after lower-casing: no suffix or wildcard matching.
    pub fn allows(&self, host: &str) -> bool {
        let want = normal_host(host);
        self.hosts.iter().any(|h| normal_host(h) == want)
    }

    /// The host base-URL requests go to.
    pub fn primary_host(&self) -> &str {
        // `check` holds every profile to at least one host.
        &self.hosts[0]
    }
}

/// `host:443` -> `host`, lower case: the form hosts are compared in.
pub fn normal_host(h: &str) -> String {
    let h = h.to_ascii_lowercase();
    match h.strip_suffix(":443") {
        Some(n) => n.to_string(),
        None => h,
    }
}

fn builtin(
    hosts: &[&str],
    header: &str,
    prefix: &str,
    base_path: &str,
    base_url_env: &[&str],
    key_env: &[&str],
) -> Profile {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    Profile {
        hosts: v(hosts),
        header: header.into(),
        prefix: prefix.into(),
        base_path: base_path.into(),
        base_url_env: v(base_url_env),
        key_env: v(key_env),
    }
}

/// The profiles this release ships, by provider namespace. An admin's `provider set`
/// overrides one of these from its event on. Built once: the proxy looks one up per call.
pub fn builtins() -> &'static BTreeMap<&'static str, Profile> {
    static BUILTINS: std::sync::LazyLock<BTreeMap<&'static str, Profile>> =
        std::sync::LazyLock::new(make_builtins);
    &BUILTINS
}

fn make_builtins() -> BTreeMap<&'static str, Profile> {
    let bearer = "Bearer ";
    BTreeMap::from([
        (
            "openai",
            builtin(
                &["api.openai.com"],
                "authorization",
                bearer,
                "/v1",
                &["OPENAI_BASE_URL"],
                &["OPENAI_API_KEY"],
            ),
        ),
        (
            "anthropic",
            builtin(
                &["api.anthropic.com"],
                "x-api-key",
                "",
                "",
                &["ANTHROPIC_BASE_URL"],
                &["ANTHROPIC_API_KEY"],
            ),
        ),
        (
            "github",
            builtin(
                &["api.github.com", "uploads.github.com"],
                "authorization",
                bearer,
                "",
                &["GITHUB_API_URL"],
                &["GITHUB_TOKEN", "GH_TOKEN"],
            ),
        ),
        (
            "google",
            builtin(
                &["generativelanguage.googleapis.com"],
                "x-goog-api-key",
                "",
                "",
                &["GOOGLE_GEMINI_BASE_URL"],
                &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
            ),
        ),
        (
            "mistral",
            builtin(
                &["api.mistral.ai"],
                "authorization",
                bearer,
                "/v1",
                &["MISTRAL_BASE_URL"],
                &["MISTRAL_API_KEY"],
            ),
        ),
        (
            "groq",
            builtin(
                &["api.groq.com"],
                "authorization",
                bearer,
                "/openai/v1",
                &["GROQ_BASE_URL"],
                &["GROQ_API_KEY"],
            ),
        ),
        (
            "openrouter",
            builtin(
                &["openrouter.ai"],
                "authorization",
                bearer,
                "/api/v1",
                &["OPENROUTER_BASE_URL"],
                &["OPENROUTER_API_KEY"],
            ),
        ),
        (
            "deepseek",
            builtin(
                &["api.deepseek.com"],
                "authorization",
                bearer,
                "",
                &["DEEPSEEK_BASE_URL"],
                &["DEEPSEEK_API_KEY"],
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_hosts_compare_exactly() {
        for (name, p) in builtins().iter() {
            p.check().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let p = &builtins()["openai"];
        assert!(p.allows("api.openai.com"));
        assert!(p.allows("API.OpenAI.com:443"));
        assert!(!p.allows("api.openai.com:8443"));
        assert!(!p.allows("api.openai.com.evil.test"));
        assert!(!p.allows("evil.test"));
        assert!(!p.allows("openai.com"));
    }

    #[test]
    fn malformed_profiles_are_refused_when_read() {
        let ok = r#"{"hosts":["localhost:8443"],"header":"X-Api-Key"}"#;
        let p: Profile = serde_json::from_str(ok).unwrap();
        assert_eq!(p.header, "x-api-key");
        for (bad, why) in [
            (r#"{"hosts":[],"header":"x"}"#, "1 to 16"),
            (r#"{"hosts":["Evil.test/x"],"header":"x"}"#, "host"),
            (r#"{"hosts":["a.test:0"],"header":"x"}"#, "host"),
            (r#"{"hosts":["a.test:99999"],"header":"x"}"#, "host"),
            (r#"{"hosts":["127.0.0.1"],"header":"x"}"#, "host"),
            (r#"{"hosts":["2130706433:443"],"header":"x"}"#, "host"),
            (r#"{"hosts":["a.test"],"header":"host"}"#, "header"),
            (r#"{"hosts":["a.test"],"header":"x y"}"#, "header"),
            (
                r#"{"hosts":["a.test"],"header":"x","prefix":"a\nb"}"#,
                "prefix",
            ),
            (
                r#"{"hosts":["a.test"],"header":"x","base_path":"v1"}"#,
                "base path",
            ),
            (
                r#"{"hosts":["a.test"],"header":"x","key_env":["lower"]}"#,
                "environment",
            ),
            (
                r#"{"hosts":["a.test"],"header":"x","other":1}"#,
                "unknown field",
            ),
        ] {
            let e = serde_json::from_str::<Profile>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
