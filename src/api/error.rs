//! Every way a request can fail, and the one table that gives each its HTTP status and
//! stable code (as rustls maps each error to one alert). Clients act on the code; the
//! message is for people and never carries a secret value.

use crate::domain::Refusal;

/// A request's failure, as the API reports it: `{"error":{"code":...,"message":...}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The domain refused the command.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No route has this path (not repeated back: messages never echo request input).
    #[error("no such route")]
    NoRoute,
    /// The route exists, for another method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The request is malformed (body, JSON, names, header).
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the limit.
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive in time.
    #[error("request body not received in time")]
    Timeout,
    /// The audit log cannot be written: nothing is answered that it would have to record.
    #[error("{0}")]
    LogUnavailable(String),
    /// Free disk space is under the reserve: only revocations are still logged.
    #[error(
        "the disk holding the audit log is under its reserve: only revocations are logged until space is freed"
    )]
    DiskReserve,
    /// The proxy's upstream could not be reached or failed (after the call was recorded).
    #[error("{0}")]
    Upstream(String),
    /// The proxy's upstream sent no response head in time.
    #[error("the upstream sent no response in time")]
    UpstreamTimeout,
    /// A fault of the daemon's own (never the caller's input).
    #[error("{0}")]
    Internal(String),
    /// The hub's listener, and no enrolled host's certificate (or the host was revoked).
    #[error("{0}")]
    HostUnauthenticated(String),
    /// This daemon is an edge and cannot reach its hub: nothing was asked and nothing
    /// released (the edge caches no value and no decision).
    #[error("{0}")]
    HubUnreachable(String),
    /// The daemon is stopping: a waiting watch is ended (nothing changed; watch again once
    /// the daemon is back).
    #[error("the daemon is stopping; nothing changed; watch again once it is back")]
    Stopping,
}

impl ApiError {
    /// The HTTP status and the stable code: the one table.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            ApiError::Refused(r) => match r.innermost() {
                Refusal::Unauthenticated => (401, "unauthenticated"),
                Refusal::BadJoinToken | Refusal::JoinTokenExpired => (401, "bad_join_token"),
                Refusal::Denied(_) => (403, "denied"),
                Refusal::Unusable { .. } => (403, "grant_unusable"),
                Refusal::RateLimited(_) => (429, "rate_limited"),
                Refusal::NotAdmin => (403, "forbidden"),
                Refusal::Unknown(..) => (404, "not_found"),
                Refusal::AlreadyExists(..)
                | Refusal::AlreadyRevoked(..)
                | Refusal::Revoked(..)
                | Refusal::Deleted(_)
                | Refusal::UidTaken { .. }
                | Refusal::ConcurrentRotation(_)
                | Refusal::LastAdmin(_)
                | Refusal::NameRetired(_)
                | Refusal::NameTaken(..) => (409, "conflict"),
                // Only ever wraps the others: `innermost` has unwrapped it.
                Refusal::InBatch { .. } => (403, "denied"),
                Refusal::NoProjects
                | Refusal::NotInProject { .. }
                | Refusal::ZeroLimit
                | Refusal::KindNeeded(_)
                | Refusal::Invalid(_) => (400, "invalid_request"),
            },
            ApiError::NoRoute => (404, "not_found"),
            ApiError::MethodNotAllowed => (405, "method_not_allowed"),
            ApiError::BadRequest(_) => (400, "invalid_request"),
            ApiError::TooLarge(_) => (413, "too_large"),
            ApiError::Timeout => (408, "timeout"),
            ApiError::LogUnavailable(_) => (503, "log_unavailable"),
            ApiError::DiskReserve => (503, "disk_reserve"),
            ApiError::Upstream(_) => (502, "upstream_failed"),
            ApiError::UpstreamTimeout => (504, "upstream_timeout"),
            ApiError::Internal(_) => (500, "internal"),
            ApiError::Stopping => (503, "stopping"),
            ApiError::HubUnreachable(_) => (503, "hub_unreachable"),
            ApiError::HostUnauthenticated(_) => (401, "host_unauthenticated"),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status_and_code().0
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

impl From<crate::domain::NameError> for ApiError {
    fn from(e: crate::domain::NameError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DenyReason, Thing};

    #[test]
    fn every_denial_is_one_answer_and_a_rate_limit_says_retry() {
        for r in [
            DenyReason::NoSuchSecret,
            DenyReason::NotGranted,
            DenyReason::Expired,
            DenyReason::AgentRevoked,
        ] {
            let e = ApiError::from(Refusal::Denied(r));
            assert_eq!(
                (e.status(), e.code(), e.to_string().as_str()),
                (403, "denied", "not granted")
            );
        }
        let e = ApiError::from(Refusal::RateLimited(DenyReason::RateLimited));
        assert_eq!((e.status(), e.code()), (429, "rate_limited"));
        assert_eq!(
            ApiError::from(Refusal::Unknown(Thing::Agent, "x".into())).status_and_code(),
            (404, "not_found")
        );
        assert_eq!(
            ApiError::from(Refusal::Unauthenticated).status_and_code(),
            (401, "unauthenticated")
        );
    }
}
