//! The terminal loop: draws, reads keys and the mouse, and runs long work (verification,
//! filter scans, the projection) on other threads so the screen never freezes. New events
//! appear as the daemon appends them (file-change notification on the log directory).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind, MouseButton, MouseEventKind};
use notify::Watcher;
use scopehold_log::{PublicKey, VerifyOptions};

use crate::app::{Action, App, Effect, Filter, Mode, Request, VerifyState, View, map_key};
use crate::source::{Decoder, LogSource, ScanTarget, decode};
use crate::ui::{self, Geometry, Tables, Theme};

/// Computes the Secrets, Identities and Grants tables (the caller knows the domain).
pub type TablesFn = Arc<dyn Fn() -> Result<Tables, String> + Send + Sync>;

/// Sends a confirmed request to the daemon; returns what to tell the user.
pub type ActionsFn = Arc<dyn Fn(Request) -> Result<String, String> + Send + Sync>;

/// Fetches the page of the log's events from `from` on (a bundle's bytes), holding the call
/// up to the given wait for events to come; `None`: nothing there yet.
pub type PageFn = Arc<dyn Fn(u64, Duration) -> Result<Option<Vec<u8>>, String> + Send + Sync>;

/// The Secrets, Identities and Grants tables of the pages fetched so far.
pub type PagesTablesFn =
    Arc<dyn Fn(&[Arc<scopehold_log::BundleContents>]) -> Result<Tables, String> + Send + Sync>;

/// A daemon's log read through its socket, page by page (the console on another host, or
/// through an edge): every page verified with `key` as it arrives and continuing the chain
/// of the one before it; new events pushed to the console as they are committed.
#[derive(Clone)]
pub struct Remote {
    pub page: PageFn,
    pub tables: PagesTablesFn,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Remote")
    }
}

/// How long one request for new events waits on the daemon before it is made again.
const TAIL_WAIT: Duration = Duration::from_secs(20);

pub struct Config {
    pub log_dir: PathBuf,
    /// The log read through the daemon rather than from `log_dir` (see [`Remote`]).
    pub remote: Option<Remote>,
    /// Auditor mode: an exported bundle, verified with `key` before anything is shown, read
    /// only, with no daemon and no state directory (`log_dir` is then unused).
    pub bundle: Option<PathBuf>,
    pub key: PublicKey,
    pub decoder: Decoder,
    pub tables: Option<TablesFn>,
    /// Changes through the daemon; `None` makes the console read-only.
    pub actions: Option<ActionsFn>,
    /// `NO_COLOR` honoured by the caller.
    pub color: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("log_dir", &self.log_dir)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

enum Msg {
    VerifyProgress(u64, u64),
    VerifyDone(Result<(u64, String), String>),
    FilterProgress(u64, u64, u64),
    FilterDone(u64, Vec<u64>),
    Tables(Result<Tables, String>),
    ActionDone(Result<String, String>),
    LogChanged,
    /// A page of a remote log, verified, with its bytes (kept to verify again).
    Page(Arc<scopehold_log::BundleContents>, Arc<Vec<u8>>),
    PageFailed(String),
}

/// Reads and verifies one page of a remote log.
fn read_page(
    bytes: Vec<u8>,
    key: &PublicKey,
) -> Result<(Arc<scopehold_log::BundleContents>, Arc<Vec<u8>>), String> {
    let contents = scopehold_log::read_bundle(&bytes, key, &VerifyOptions::default())
        .map_err(|e| format!("a page of the log does not verify: {e}"))?;
    Ok((Arc::new(contents), Arc::new(bytes)))
}

/// Verifies the pages of a remote log again, each and their chain across pages: the events
/// and head they establish.
fn verify_pages(pages: &[Arc<Vec<u8>>], key: &PublicKey) -> Result<(u64, String), String> {
    let mut end = 0u64;
    let mut head: Option<[u8; 32]> = None;
    for bytes in pages {
        let c = scopehold_log::read_bundle(bytes, key, &VerifyOptions::default())
            .map_err(|e| format!("a page does not verify: {e}"))?;
        if c.header.from != end {
            return Err(format!(
                "a page starts at {} where {end} was next",
                c.header.from
            ));
        }
        if let (Some(h), Some(first)) = (head, c.records.first())
            && first.envelope.prev != h
        {
            return Err(format!("event {end} does not continue the chain"));
        }
        end = c.header.from + c.records.len() as u64;
        head = c.records.last().map(|r| r.hash).or(head);
    }
    Ok((end, hex::encode(&head.unwrap_or_default()[..8])))
}

fn now_str() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ui::time_str(ms)
}

/// The console's state machine, minus the terminal: used by `run` and by tests.
pub struct Console {
    pub app: App,
    pub source: LogSource,
    pub tables: Option<Tables>,
    cfg: Config,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    filter_gen: u64,
    tables_due: Option<Instant>,
    pub geometry: Geometry,
    bundle_bytes: Option<Arc<Vec<u8>>>,
    /// A remote log's pages as they came (see [`Remote`]).
    page_bytes: Vec<Arc<Vec<u8>>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl Console {
    pub fn open(cfg: Config) -> Result<Self, String> {
        let mut page_bytes = Vec::new();
        let (source, bundle_bytes) = match (&cfg.bundle, &cfg.remote) {
            (None, Some(remote)) => {
                let first =
                    (remote.page)(0, Duration::ZERO)?.ok_or("the daemon's log holds no events")?;
                let (contents, bytes) = read_page(first, &cfg.key)?;
                page_bytes.push(bytes);
                (LogSource::pages(contents, cfg.decoder.clone())?, None)
            }
            (Some(path), _) => {
                let bytes =
                    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                let contents =
                    scopehold_log::read_bundle(&bytes, &cfg.key, &VerifyOptions::default())
                        .map_err(|e| format!("the bundle does not verify: {e}"))?;
                (
                    LogSource::bundle(Arc::new(contents), cfg.decoder.clone()),
                    Some(Arc::new(bytes)),
                )
            }
            (None, None) => (LogSource::open(&cfg.log_dir, cfg.decoder.clone())?, None),
        };
        let mut app = App::new(source.first(), source.len());
        if bundle_bytes.is_some() || cfg.remote.is_some() {
            app.read_only = cfg.actions.is_none();
            // It had to verify to open at all: say so from the first frame.
            app.verify = VerifyState::Verified {
                events: source.end(),
                head: hex::encode(&source.checkpoint().body.head[..8]),
                at: now_str(),
            };
        }
        let (tx, rx) = mpsc::channel();
        let tables_due = (cfg.tables.is_some() || cfg.remote.is_some()).then(Instant::now);
        let mut c = Console {
            app,
            source,
            tables: None,
            cfg,
            tx,
            rx,
            filter_gen: 0,
            tables_due,
            geometry: Geometry::default(),
            bundle_bytes,
            page_bytes,
        };
        if let Some(remote) = c.cfg.remote.clone() {
            c.tail(remote);
        }
        c.maybe_tables();
        Ok(c)
    }

    /// Fetches the remote log's pages from where the first ended, then waits on the daemon
    /// for each next one: pages are pushed here as their events are committed. Ends when the
    /// console does.
    fn tail(&self, remote: Remote) {
        let (tx, key) = (self.tx.clone(), self.cfg.key);
        let mut at = self.source.end();
        std::thread::spawn(move || {
            loop {
                let sent = match (remote.page)(at, TAIL_WAIT) {
                    Ok(None) => continue,
                    Ok(Some(bytes)) => match read_page(bytes, &key) {
                        Ok((c, b)) => {
                            at = c.header.from + c.records.len() as u64;
                            tx.send(Msg::Page(c, b))
                        }
                        Err(e) => {
                            // A page that does not verify is not shown, and nothing after it.
                            let _ = tx.send(Msg::PageFailed(e));
                            return;
                        }
                    },
                    Err(e) => {
                        let r = tx.send(Msg::PageFailed(e));
                        std::thread::sleep(Duration::from_secs(1));
                        r
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
    }

    pub fn theme(&self) -> Theme {
        Theme {
            color: self.cfg.color,
        }
    }

    pub fn draw(&mut self, f: &mut ratatui::Frame) {
        let theme = self.theme();
        self.geometry = ui::draw(f, &mut self.app, &mut self.source, &self.tables, theme);
    }

    pub fn act(&mut self, a: Action) {
        if matches!(a, Action::Revoke | Action::Rotate | Action::NewGrant) {
            return self.prompt_for(a);
        }
        match self.app.update(a) {
            Some(Effect::StartVerify) => self.start_verify(),
            Some(Effect::StartFilter(f)) => self.start_filter(f, 0, Vec::new()),
            Some(Effect::Perform(r)) => self.perform(r),
            None => {}
        }
    }

    /// The first cell of the selected row of the current (non-audit) view.
    fn selected_key(&self) -> Option<String> {
        let t = self
            .tables
            .as_ref()?
            .get((self.app.view as usize).checked_sub(1)?)?;
        t.get(1 + self.app.selected[self.app.view as usize] as usize)
            .and_then(|r| r.first())
            .cloned()
    }

    /// Turns `r`, `R` and `n` into a prompt or a confirmation for the selected row.
    fn prompt_for(&mut self, a: Action) {
        if self.cfg.actions.is_none() {
            self.app.message = Some("read-only: no daemon to send changes to".into());
            return;
        }
        let key = self.selected_key();
        let next = match (a, self.app.view, key) {
            (Action::Revoke, View::Grants, Some(id)) => id
                .parse()
                .ok()
                .map(|id| Mode::Confirm(Request::RevokeGrant(id))),
            (Action::Revoke, View::Identities, Some(id)) => match id.strip_prefix("agent:") {
                Some(n) => Some(Mode::Confirm(Request::RevokeAgent(n.to_string()))),
                None => {
                    self.app.message = Some(
                        "members are managed with `scopehold member`; agents are revoked here"
                            .into(),
                    );
                    return;
                }
            },
            (Action::Rotate, View::Secrets, Some(name)) => Some(Mode::SecretValue {
                name,
                value: Default::default(),
            }),
            (Action::NewGrant, View::Secrets, Some(secret)) => Some(Mode::GrantTo {
                secret,
                input: String::new(),
            }),
            _ => None,
        };
        match next {
            Some(m) => self.app.mode = m,
            None => {
                self.app.message = Some("r revokes a grant (Grants) or an agent (Identities); R rotates and n grants a secret (Secrets)".into())
            }
        }
    }

    fn perform(&self, r: Request) {
        let Some(f) = self.cfg.actions.clone() else {
            return;
        };
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Msg::ActionDone(f(r)));
        });
    }

    fn start_verify(&self) {
        let (dir, key, tx) = (self.cfg.log_dir.clone(), self.cfg.key, self.tx.clone());
        if self.cfg.remote.is_some() {
            let pages = self.page_bytes.clone();
            std::thread::spawn(move || {
                let _ = tx.send(Msg::VerifyDone(verify_pages(&pages, &key)));
            });
            return;
        }
        if let Some(bytes) = self.bundle_bytes.clone() {
            std::thread::spawn(move || {
                let r = scopehold_log::verify_bundle(&bytes, &key, &VerifyOptions::default());
                let _ = tx.send(Msg::VerifyDone(
                    r.map(|r| (r.events, hex::encode(&r.head[..8])))
                        .map_err(|e| e.to_string()),
                ));
            });
            return;
        }
        std::thread::spawn(move || {
            let p = tx.clone();
            let r = scopehold_log::verify_log_with_progress(
                &dir,
                &key,
                &VerifyOptions::default(),
                &mut |d, t| {
                    let _ = p.send(Msg::VerifyProgress(d, t));
                },
            );
            let _ = tx.send(Msg::VerifyDone(
                r.map(|r| (r.events, hex::encode(&r.head[..8])))
                    .map_err(|e| e.to_string()),
            ));
        });
    }

    /// Scans events `from..` for `f` on another thread; `prefix` holds matches already known.
    fn start_filter(&mut self, f: Filter, from: u64, prefix: Vec<u64>) {
        self.filter_gen += 1;
        let (generation, target, dec, tx, size) = (
            self.filter_gen,
            self.source.scan_target(),
            self.cfg.decoder.clone(),
            self.tx.clone(),
            self.source.end(),
        );
        std::thread::spawn(move || {
            let mut out = prefix;
            let mut n = 0u64;
            target.scan(from, size, &mut |rec| {
                if f.matches(&decode(&dec, rec)) {
                    out.push(rec.seq());
                }
                n += 1;
                !(n.is_multiple_of(20_000)
                    && tx
                        .send(Msg::FilterProgress(generation, rec.seq(), size))
                        .is_err())
            });
            let _ = tx.send(Msg::FilterDone(generation, out));
        });
    }

    fn maybe_tables(&mut self) {
        let Some(due) = self.tables_due else { return };
        if Instant::now() < due {
            return;
        }
        let tx = self.tx.clone();
        if let (Some(r), ScanTarget::Pages(pages)) =
            (self.cfg.remote.clone(), self.source.scan_target())
        {
            self.tables_due = None;
            std::thread::spawn(move || {
                let _ = tx.send(Msg::Tables((r.tables)(&pages)));
            });
            return;
        }
        let Some(f) = self.cfg.tables.clone() else {
            return;
        };
        self.tables_due = None;
        std::thread::spawn(move || {
            let _ = tx.send(Msg::Tables(f()));
        });
    }

    /// Applies whatever the background work reported. Returns whether anything changed.
    pub fn pump(&mut self) -> bool {
        let mut changed = false;
        let mut log_changed = false;
        while let Ok(m) = self.rx.try_recv() {
            changed = true;
            match m {
                // A burst of file notifications is one refresh.
                Msg::LogChanged => log_changed = true,
                Msg::VerifyProgress(done, total) => {
                    self.app.verify = VerifyState::Running { done, total }
                }
                Msg::VerifyDone(Ok((events, head))) => {
                    self.app.verify = VerifyState::Verified {
                        events,
                        head,
                        at: now_str(),
                    }
                }
                Msg::VerifyDone(Err(message)) => {
                    self.app.verify = VerifyState::Failed {
                        message,
                        at: now_str(),
                    }
                }
                Msg::FilterProgress(generation, d, t) if generation == self.filter_gen => {
                    self.app.filtering = Some((d, t))
                }
                Msg::FilterDone(generation, v) if generation == self.filter_gen => {
                    self.app.filtered(v)
                }
                Msg::FilterProgress(..) | Msg::FilterDone(..) => {}
                Msg::Tables(Ok(t)) => self.tables = Some(t),
                Msg::Tables(Err(e)) => {
                    self.app.message = Some(format!("projection unavailable: {e}"))
                }
                Msg::ActionDone(Ok(m)) => self.app.message = Some(m),
                Msg::ActionDone(Err(e)) => self.app.message = Some(format!("refused: {e}")),
                Msg::Page(c, bytes) => {
                    let before = self.source.len();
                    match self.source.extend(c) {
                        Ok(()) => {
                            self.page_bytes.push(bytes);
                            self.grew(before);
                        }
                        Err(e) => {
                            self.app.verify = VerifyState::Failed {
                                message: e,
                                at: now_str(),
                            }
                        }
                    }
                }
                Msg::PageFailed(e) => {
                    self.app.message = Some(format!("the daemon's log: {e}"));
                    if e.contains("does not verify") {
                        self.app.verify = VerifyState::Failed {
                            message: e,
                            at: now_str(),
                        }
                    }
                }
            }
        }
        if log_changed {
            self.refresh();
        }
        self.maybe_tables();
        changed
    }

    /// Picks up events appended since the last look; the selection stays where it was.
    pub fn refresh(&mut self) {
        let before = self.source.len();
        if self.source.refresh() {
            self.grew(before);
        }
    }

    /// The source grew from `before` events.
    fn grew(&mut self, before: u64) {
        self.app.grew(self.source.len());
        // Extend an active filter over the new events only.
        if let (Some(f), Some(done)) = (self.app.filter.clone(), self.app.filtered.clone()) {
            self.start_filter(f, before, done);
        }
        if self.cfg.tables.is_some() || self.cfg.remote.is_some() {
            self.tables_due
                .get_or_insert(Instant::now() + Duration::from_millis(500));
        }
    }

    /// Waits for background work to report (tests and scripts).
    pub fn wait_idle(&mut self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            self.pump();
            let busy = matches!(self.app.verify, VerifyState::Running { .. })
                || self.app.filtering.is_some();
            if !busy
                && self.tables_due.is_none()
                && (self.tables.is_some()
                    || (self.cfg.tables.is_none() && self.cfg.remote.is_none()))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn click(&mut self, row: u16) {
        let g = self.geometry;
        if row >= g.body.y && row < g.body.y + g.body.height {
            let i = g.offset + u64::from(row - g.body.y);
            if i < self.app.rows() {
                let idx = self.app.view as usize;
                self.app.selected[idx] = i;
            }
        }
    }
}

/// Runs the console in the terminal until the user quits. The terminal is restored on exit
/// and on panic (ratatui's `init` installs the hook).
pub fn run(cfg: Config) -> std::io::Result<()> {
    let dir = cfg.log_dir.clone();
    // A remote log's new events come by its pages (see `Console::tail`).
    let live = cfg.bundle.is_none() && cfg.remote.is_none();
    let mut console = Console::open(cfg).map_err(std::io::Error::other)?;
    let tx = console.tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Only writes and new files mean new events; the console's own reads of the log
        // (access events) must not wake it, or it would refresh forever.
        if let Ok(ev) = res
            && matches!(
                ev.kind,
                notify::EventKind::Modify(_) | notify::EventKind::Create(_)
            )
        {
            let _ = tx.send(Msg::LogChanged);
        }
    })
    .map_err(std::io::Error::other)?;
    if live {
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;
    }

    let mut terminal = ratatui::init();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture);
    let result = (|| -> std::io::Result<()> {
        loop {
            terminal.draw(|f| console.draw(f))?;
            if console.app.quit {
                return Ok(());
            }
            if event::poll(Duration::from_millis(100))? {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        console.app.message = None;
                        if let Some(a) = map_key(&console.app.mode, k) {
                            console.act(a);
                        }
                    }
                    Event::Mouse(m) => match m.kind {
                        MouseEventKind::ScrollDown => console.act(Action::Down(3)),
                        MouseEventKind::ScrollUp => console.act(Action::Up(3)),
                        MouseEventKind::Down(MouseButton::Left) => console.click(m.row),
                        _ => {}
                    },
                    _ => {}
                }
            }
            console.pump();
            if console.app.view != View::Audit && console.tables.is_none() {
                console.maybe_tables();
            }
        }
    })();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
    ratatui::restore();
    drop(watcher);
    result
}
