//! Denials counted, not written one by one: a caller refused again and again costs one event
//! per window, not one per attempt, and every refusal is still accounted for.
//!
//! The first denial of a key (an identity and a reason, or a uid with no valid credential) is
//! recorded as it happens. Repeats within the window after it are counted in memory; when the
//! window ends (the daemon's flusher, every second) or the daemon stops, the count becomes one
//! `denials_counted` event. Distinct keys per window are bounded: past the bound, denials fold
//! into one overflow count, so fanning a flood out over many uids or identities does not
//! multiply the events either. A crash (kill -9) loses at most the counts of the open
//! windows; no denial is ever answered with anything but a refusal.

use std::collections::HashMap;

use crate::domain::{DenyReason, Event, Identity, Name};

/// What denials are counted by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DenialKey {
    /// An authenticated caller, for one reason.
    Caller(Identity, DenyReason),
    /// A peer uid with no valid credential, on a host (`None`: this one): the same uid on
    /// two hosts is two callers.
    Unauthenticated(Option<Name>, u32),
    /// Refused enrolments from one network address.
    Join(std::net::IpAddr),
    /// Everyone past the bound on distinct keys.
    Overflow,
}

#[derive(Debug)]
struct Counting {
    from_ms: u64,
    last_ms: u64,
    uid: Option<u32>,
    /// The host of the first denial's caller (`None`: this one).
    host: Option<Name>,
    /// Denials since the recorded one, not yet written.
    count: u64,
}

impl Counting {
    fn opened(now_ms: u64, uid: Option<u32>, host: Option<&Name>) -> Self {
        Self {
            from_ms: now_ms,
            last_ms: now_ms,
            uid,
            host: host.cloned(),
            count: 0,
        }
    }
}

/// The windows open now.
#[derive(Debug)]
pub struct Denials {
    window_ms: u64,
    max_keys: usize,
    open: HashMap<DenialKey, Counting>,
}

impl Denials {
    /// Windows of `window_ms`, at most `max_keys` distinct keys in them.
    pub fn new(window_ms: u64, max_keys: usize) -> Self {
        Self {
            window_ms,
            max_keys,
            open: HashMap::new(),
        }
    }

    /// Notes a denial. [`Noted::Record`]: it opens a window and must be recorded now, as it
    /// happens (with the count of the key's previous window, if that one ended unflushed).
    /// [`Noted::Counted`]: it is counted, to be recorded when its window ends.
    pub fn note(&mut self, key: DenialKey, uid: u32, host: Option<&Name>, now_ms: u64) -> Noted {
        let window = self.window_ms;
        if let Some(c) = self.open.get_mut(&key) {
            if now_ms < c.from_ms.saturating_add(window) {
                c.count += 1;
                c.last_ms = now_ms;
                return Noted::Counted;
            }
            // The key's window ended before the flusher saw it: close it here, in order.
            let ended = self.open.remove(&key).and_then(|c| count_event(&key, &c));
            self.open
                .insert(key, Counting::opened(now_ms, Some(uid), host));
            return Noted::Record(ended.map(Box::new));
        }
        if self.open.len() >= self.max_keys {
            let c = self
                .open
                .entry(DenialKey::Overflow)
                .or_insert_with(|| Counting::opened(now_ms, None, None));
            c.count += 1;
            c.last_ms = now_ms;
            return Noted::Counted;
        }
        self.open
            .insert(key, Counting::opened(now_ms, Some(uid), host));
        Noted::Record(None)
    }

    /// Closes the windows that have ended (every window, with `all`), returning the counts
    /// to record.
    pub fn take_due(&mut self, now_ms: u64, all: bool) -> Vec<Event> {
        let window = self.window_ms;
        let mut out = Vec::new();
        self.open.retain(|key, c| {
            if !all && now_ms < c.from_ms.saturating_add(window) {
                return true;
            }
            out.extend(count_event(key, c));
            false
        });
        out
    }
}

/// What noting a denial asks of the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Noted {
    /// Counted: nothing to write now.
    Counted,
    /// Record this denial now, after the ended window's count if there is one (boxed: an
    /// event is large, and most denials are counted).
    Record(Option<Box<Event>>),
}

/// The event for a window's count, if it counted anything.
fn count_event(key: &DenialKey, c: &Counting) -> Option<Event> {
    if c.count == 0 {
        return None;
    }
    let (identity, uid, reason) = match key {
        DenialKey::Caller(i, r) => (Some(i.clone()), c.uid, r.as_str().to_string()),
        DenialKey::Unauthenticated(_, u) => (None, Some(*u), "no valid credential".to_string()),
        DenialKey::Join(ip) => (None, None, format!("enrolment refused (from {ip})")),
        DenialKey::Overflow => (None, None, "many callers at once".to_string()),
    };
    Some(Event::DenialsCounted {
        identity,
        uid,
        reason,
        from_host: c.host.clone(),
        count: c.count,
        from_ms: c.from_ms,
        to_ms: c.last_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_recorded_repeats_are_counted_and_the_window_closes() {
        let mut d = Denials::new(10_000, 2);
        let bot = DenialKey::Caller("agent:bot".parse().unwrap(), DenyReason::NotGranted);
        assert_eq!(d.note(bot.clone(), 1000, None, 0), Noted::Record(None));
        for t in 1..=99 {
            assert_eq!(d.note(bot.clone(), 1000, None, t), Noted::Counted);
        }
        assert!(
            d.take_due(9_999, false).is_empty(),
            "the window is still open"
        );
        let due = d.take_due(10_000, false);
        assert!(matches!(
            &due[..],
            [Event::DenialsCounted {
                count: 99,
                from_ms: 0,
                to_ms: 99,
                ..
            }]
        ));
        // A new window: the next denial is recorded again.
        assert_eq!(d.note(bot.clone(), 1000, None, 10_001), Noted::Record(None));
        assert_eq!(d.note(bot.clone(), 1000, None, 10_002), Noted::Counted);
        // A window that ended unflushed is closed by the next denial, its count first.
        assert!(matches!(
            d.note(bot.clone(), 1000, None, 20_001),
            Noted::Record(Some(e)) if matches!(*e, Event::DenialsCounted { count: 1, .. })
        ));
        d.take_due(40_000, true);
        // Past the bound on keys, everyone folds into one count.
        assert_eq!(d.note(bot, 1000, None, 40_001), Noted::Record(None));
        assert_eq!(
            d.note(DenialKey::Unauthenticated(None, 7), 7, None, 40_002),
            Noted::Record(None)
        );
        for u in 8..100 {
            assert_eq!(
                d.note(DenialKey::Unauthenticated(None, u), u, None, 40_003),
                Noted::Counted
            );
        }
        let all = d.take_due(40_004, true);
        assert!(all.iter().any(|e| matches!(
            e,
            Event::DenialsCounted {
                identity: None,
                uid: None,
                count: 92,
                ..
            }
        )));
    }

    #[test]
    fn the_same_uid_on_two_hosts_is_counted_as_two_callers_and_the_count_names_the_host() {
        let mut d = Denials::new(10_000, 16);
        let ci: Name = "ci-1".parse().unwrap();
        let here = DenialKey::Unauthenticated(None, 1000);
        let there = DenialKey::Unauthenticated(Some(ci.clone()), 1000);
        assert_eq!(d.note(here.clone(), 1000, None, 0), Noted::Record(None));
        assert_eq!(
            d.note(there.clone(), 1000, Some(&ci), 1),
            Noted::Record(None)
        );
        assert_eq!(d.note(there, 1000, Some(&ci), 2), Noted::Counted);
        let due = d.take_due(20_000, false);
        assert!(
            matches!(&due[..], [Event::DenialsCounted { from_host: Some(h), count: 1, .. }] if *h == ci),
            "{due:?}"
        );
    }
}
