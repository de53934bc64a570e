//! The walk behind `log show`: the records of the log in order, inside `--since`/`--until`,
//! a line buffer for `--limit`, the `--project` test, and `--follow`, which waits for new
//! events with a `notify` watch on the log directory (as the console does) and ends when
//! the reader of standard output goes away.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::Duration;

use notify::Watcher;
use scopehold_log::{BodyClass, LogReader, Record};

use super::args::ShowOptions;
use super::exit::{EXIT_OK, Exit};
use super::out::{self, outln};
use crate::domain::{Event, EventKind, ProjectName};

/// Records read from the log at a time (the reader borrows the files only while reading).
const CHUNK: usize = 256;
/// Longest wait between two checks for new events while following: a missed notification
/// (or a reader of the output that went away) is noticed within this.
const FOLLOW_TICK: Duration = Duration::from_secs(1);

/// Where `log show` is in the log, and what it still holds back.
#[derive(Debug)]
pub struct Scan<'a> {
    reader: LogReader,
    next: u64,
    buf: VecDeque<Record>,
    opts: &'a ShowOptions,
    /// With `--limit`, until the end of the log is reached: the last lines that matched.
    held: VecDeque<String>,
    caught_up: bool,
    /// With `--project`: the project of every grant seen so far, so that an event naming
    /// only a grant (`grant_revoked`) is known to be about the grant's project.
    grant_projects: HashMap<u64, ProjectName>,
    follow: Option<Follow>,
}

/// The watch on the log directory.
#[derive(Debug)]
struct Follow {
    _watcher: notify::RecommendedWatcher,
    changed: mpsc::Receiver<()>,
}

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

impl<'a> Scan<'a> {
    /// From the log's first event. With `--follow` the watch starts here, before the first
    /// read, so no commit can fall between the end of the read and the watch.
    pub fn new(reader: LogReader, opts: &'a ShowOptions) -> Result<Self, Exit> {
        let follow = if opts.follow {
            let (tx, changed) = mpsc::channel();
            let mut watcher =
                notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                    // Writes and new segments mean new events; reads (ours) do not.
                    if let Ok(ev) = res
                        && matches!(
                            ev.kind,
                            notify::EventKind::Modify(_) | notify::EventKind::Create(_)
                        )
                    {
                        let _ = tx.send(());
                    }
                })
                .map_err(|e| anyhow::anyhow!("watching the log directory: {e}"))?;
            watcher
                .watch(reader.dir(), notify::RecursiveMode::NonRecursive)
                .map_err(|e| {
                    anyhow::anyhow!("watching the log directory {}: {e}", reader.dir().display())
                })?;
            Some(Follow {
                _watcher: watcher,
                changed,
            })
        } else {
            None
        };
        Ok(Self {
            reader,
            next: 0,
            buf: VecDeque::new(),
            opts,
            held: VecDeque::new(),
            caught_up: false,
            grant_projects: HashMap::new(),
            follow,
        })
    }

    /// The next record inside the time window; with `--follow`, waits for one at the end.
    /// `None` at the end of the log (without `--follow`).
    pub fn next_record(&mut self) -> Option<Result<Record, Exit>> {
        loop {
            if let Some(r) = self.buf.pop_front() {
                self.note_grant(&r);
                let t = r.envelope.time_ms;
                if self.opts.since.is_some_and(|s| t < s.0)
                    || self.opts.until.is_some_and(|u| t > u.0)
                {
                    continue;
                }
                return Some(Ok(r));
            }
            match self.fill() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
            if !self.caught_up {
                self.caught_up = true;
                if let Err(e) = self.flush_held() {
                    return Some(Err(e));
                }
            }
            match self.wait() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads the next chunk of committed records; whether there were any.
    fn fill(&mut self) -> Result<bool, Exit> {
        if self.next >= self.reader.size() {
            return Ok(false);
        }
        for r in self.reader.events_from(self.next)?.take(CHUNK) {
            let r = r?;
            self.next = r.seq() + 1;
            self.buf.push_back(r);
        }
        Ok(!self.buf.is_empty())
    }

    /// At the end of the log: with `--follow`, waits until the log grows (true); false when
    /// not following, or when `--until` has passed and nothing more can match.
    fn wait(&mut self) -> Result<bool, Exit> {
        let Some(f) = &self.follow else {
            return Ok(false);
        };
        loop {
            if self.opts.until.is_some_and(|u| u.0 < now_ms()) {
                return Ok(false);
            }
            if self.reader.refresh()? {
                return Ok(true);
            }
            if out::reader_gone() {
                return Err(Exit::new(EXIT_OK, out::Closed));
            }
            match f.changed.recv_timeout(FOLLOW_TICK) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Exit::from(anyhow::anyhow!(
                        "the watch on the log directory stopped"
                    )));
                }
            }
            // Several notifications per commit: one refresh for them all.
            while f.changed.try_recv().is_ok() {}
        }
    }

    fn note_grant(&mut self, r: &Record) {
        if self.opts.project.is_none() || r.envelope.kind != EventKind::GrantCreated.number() {
            return;
        }
        if let (BodyClass::Public, Some(b)) = (r.class(), &r.body)
            && let Ok(Event::GrantCreated { grant, project, .. }) =
                Event::from_body(r.envelope.kind, &b.bytes)
        {
            self.grant_projects.insert(grant, project);
        }
    }

    /// Whether the event passes `--project`: it names the project (a `project` field, or
    /// the project among its `projects`), or names a grant made in it. Read from the event's
    /// serialised fields, so that a kind added later with a `project` field is covered
    /// without a list to keep up to date.
    pub fn about_project(&self, ev: Option<&Event>) -> bool {
        let Some(want) = &self.opts.project else {
            return true;
        };
        let Some(v) = ev.and_then(|e| serde_json::to_value(e).ok()) else {
            return false;
        };
        let want = want.as_str();
        v["project"].as_str() == Some(want)
            || v["projects"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p.as_str() == Some(want)))
            || v["grant"]
                .as_u64()
                .and_then(|g| self.grant_projects.get(&g))
                .is_some_and(|p| p.as_str() == want)
    }

    /// Prints one matching line, or (with `--limit`, before the end of the log is reached)
    /// keeps it among the last N.
    pub fn emit(&mut self, line: String) -> Result<(), Exit> {
        match self.opts.limit {
            Some(n) if !self.caught_up => {
                self.held.push_back(line);
                while self.held.len() > n {
                    self.held.pop_front();
                }
                Ok(())
            }
            _ => outln!("{line}"),
        }
    }

    fn flush_held(&mut self) -> Result<(), Exit> {
        while let Some(l) = self.held.pop_front() {
            outln!("{l}")?;
        }
        Ok(())
    }

    /// After the last record: prints what `--limit` held back.
    pub fn finish(mut self) -> Result<(), Exit> {
        self.flush_held()
    }
}
