//! Runs under the proxy: `POST /v1/runs` answers with the run's placeholders and then stays
//! open, a newline every second, for as long as the run lasts. The run's process holds that
//! answer; when it ends or dies the connection closes, the next newline cannot be written,
//! hyper drops the body, and the placeholders die with it. No polling, no lease to renew,
//! and a `kill -9` of the run ends it as surely as a clean exit.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use super::upstream::{Body, BoxError};
use crate::api::ApiError;
use crate::api::wire::{RunPlaceholder, RunStartRequest, RunStarted, SecretString};
use crate::daemon::engine::Engine;
use crate::daemon::http::Reply;
use crate::domain::Caller;

/// How often a held run's answer writes a newline (and so finds out the run went away).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The held answer of one run.
struct Held {
    first: Option<Bytes>,
    tick: tokio::time::Interval,
    stopping: tokio::sync::watch::Receiver<bool>,
    engine: Arc<Engine>,
    run: u64,
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.tick.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                // The daemon is stopping, or the run was ended by its process: the answer
                // ends, so a graceful stop is not held up by runs.
                let ended = self.engine.read(|st| !st.runs.contains_key(&self.run));
                if *self.stopping.borrow() || ended {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"\n")))))
                }
            }
        }
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.engine
            .run_gone(self.run, "its process ended or went away");
    }
}

/// Starts a run for `caller` and answers with its placeholders, held open.
pub async fn start(
    engine: &Arc<Engine>,
    caller: &Caller,
    req: RunStartRequest,
    proxy_listen: Option<String>,
) -> Result<hyper::Response<Body>, ApiError> {
    if req.secrets.is_empty() || req.secrets.len() > 64 {
        return Err(ApiError::BadRequest("a run holds 1 to 64 secrets".into()));
    }
    // A placeholder is worth nothing if the child can be a member by its uid alone (run
    // `scopehold resolve` with no credential): the run would protect only against a child
    // that does not try. Agents run under their own uids (README: Run it for agents).
    if !req.allow_member_uid
        && let Some(member) = engine.read(|st| {
            st.member_by_uid(caller.host.as_ref(), caller.uid)
                .map(|(n, _)| n.clone())
        })
    {
        return Err(ApiError::BadRequest(format!(
            "uid {} is member {member}'s: a child under it could resolve as {member}, so a run under the proxy would not keep the key from it; run the agent under its own uid (or pass --allow-member-uid for a trial)",
            caller.uid
        )));
    }
    let (run, placeholders) = engine.start_run(caller, &req.project, &req.secrets).await?;
    let mut out = Vec::with_capacity(placeholders.len());
    for (secret, p) in placeholders {
        let profile = engine
            .read(|st| st.profile(secret.provider()).cloned())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "provider {} has no profile: add one with `scopehold provider add`",
                    secret.provider()
                ))
            });
        let profile = match profile {
            Ok(p) => p,
            Err(e) => {
                engine.end_run(run, "no provider profile").await?;
                return Err(e);
            }
        };
        out.push(RunPlaceholder {
            secret,
            placeholder: SecretString::new(p),
            profile,
        });
    }
    let ca_bundle = engine
        .upstream()
        .and_then(|u| u.mitm.get())
        .map(|m| m.bundle_pem.clone());
    let hint = 512 * (1 + out.len()) + ca_bundle.as_ref().map_or(0, |b| b.len() * 2);
    let started = RunStarted {
        run,
        proxy_listen,
        placeholders: out,
        ca_bundle,
    };
    let mut first = Reply::json(&started, hint)?.into_bytes();
    // One line: the client reads up to the newline.
    first = {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(first.len() + 1));
        v.extend_from_slice(&first);
        v.push(b'\n');
        Reply::wrap(v).into_bytes()
    };
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once: skip it, the first line goes first anyway.
    tick.reset();
    let body = Held {
        first: Some(first),
        tick,
        stopping: engine.stopping(),
        engine: engine.clone(),
        run,
    };
    let mut r = hyper::Response::new(body.boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(r)
}
