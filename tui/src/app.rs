//! The console's state and behaviour, without a terminal: keys map to actions (a pure
//! function), actions update the state and may ask for work to be done off the UI thread
//! (`Effect`). Everything here is tested without drawing anything.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A change the console asks the daemon for. Every one is confirmed first (default No).
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    RevokeGrant(u64),
    RevokeAgent(String),
    RotateSecret {
        name: String,
        value: zeroize::Zeroizing<String>,
    },
    Grant {
        identity: String,
        secret: String,
        project: String,
    },
}

impl std::fmt::Debug for Request {
    // The new value of a rotation is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Request {
    pub fn describe(&self) -> String {
        match self {
            Request::RevokeGrant(id) => format!("revoke grant {id}"),
            Request::RevokeAgent(n) => format!("revoke agent {n} (all its grants stop)"),
            Request::RotateSecret { name, .. } => format!("rotate {name} to the value just typed"),
            Request::Grant {
                identity,
                secret,
                project,
            } => format!("grant {secret} to {identity} in project {project}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Audit,
    Secrets,
    Identities,
    Grants,
}

impl View {
    pub const ALL: [View; 4] = [View::Audit, View::Secrets, View::Identities, View::Grants];
    pub fn title(self) -> &'static str {
        match self {
            View::Audit => "Audit",
            View::Secrets => "Secrets",
            View::Identities => "Identities",
            View::Grants => "Grants",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Table,
    Detail,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    /// Typing a filter after `/`.
    Filter(String),
    /// Typing a command after `:`.
    Command(String),
    /// Typing a new secret value (masked) for a rotation.
    SecretValue {
        name: String,
        value: zeroize::Zeroizing<String>,
    },
    /// Typing `IDENTITY PROJECT` to grant a secret.
    GrantTo {
        secret: String,
        input: String,
    },
    /// Waiting for `y` to a request; anything else is No.
    Confirm(Request),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Up(u64),
    Down(u64),
    PageUp,
    PageDown,
    Top,
    Bottom,
    NextPane,
    ToggleHelp,
    StartFilter,
    StartCommand,
    Input(char),
    Backspace,
    Submit,
    Cancel,
    Verify,
    ClearFilter,
    SwitchView(View),
    NextView,
    /// `r`: revoke the selected grant or agent.
    Revoke,
    /// `R`: rotate the selected secret.
    Rotate,
    /// `n`: grant the selected secret to an identity.
    NewGrant,
    Yes,
    No,
}

/// Key -> action, given the mode. Pure: the whole keymap is tested without a terminal.
pub fn map_key(mode: &Mode, key: KeyEvent) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    match mode {
        Mode::Confirm(_) => match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::Yes),
            _ => Some(Action::No),
        },
        Mode::Filter(_) | Mode::Command(_) | Mode::SecretValue { .. } | Mode::GrantTo { .. } => {
            match key.code {
                KeyCode::Enter => Some(Action::Submit),
                KeyCode::Esc => Some(Action::Cancel),
                KeyCode::Backspace => Some(Action::Backspace),
                KeyCode::Char(c) if !ctrl => Some(Action::Input(c)),
                _ => None,
            }
        }
        Mode::Help => match key.code {
            KeyCode::Char('?') | KeyCode::Esc | KeyCode::Char('q') => Some(Action::ToggleHelp),
            _ => None,
        },
        Mode::Normal => match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Up | KeyCode::Char('k') => Some(Action::Up(1)),
            KeyCode::Down | KeyCode::Char('j') => Some(Action::Down(1)),
            KeyCode::PageUp => Some(Action::PageUp),
            KeyCode::PageDown | KeyCode::Char(' ') => Some(Action::PageDown),
            KeyCode::Char('u') if ctrl => Some(Action::PageUp),
            KeyCode::Char('d') if ctrl => Some(Action::PageDown),
            KeyCode::Home | KeyCode::Char('g') => Some(Action::Top),
            KeyCode::End | KeyCode::Char('G') => Some(Action::Bottom),
            KeyCode::Tab => Some(Action::NextPane),
            KeyCode::BackTab => Some(Action::NextView),
            KeyCode::Char('?') => Some(Action::ToggleHelp),
            KeyCode::Char('/') => Some(Action::StartFilter),
            KeyCode::Char(':') => Some(Action::StartCommand),
            KeyCode::Char('v') => Some(Action::Verify),
            KeyCode::Char('r') => Some(Action::Revoke),
            KeyCode::Char('R') => Some(Action::Rotate),
            KeyCode::Char('n') => Some(Action::NewGrant),
            KeyCode::Esc => Some(Action::ClearFilter),
            KeyCode::Char('1') => Some(Action::SwitchView(View::Audit)),
            KeyCode::Char('2') => Some(Action::SwitchView(View::Secrets)),
            KeyCode::Char('3') => Some(Action::SwitchView(View::Identities)),
            KeyCode::Char('4') => Some(Action::SwitchView(View::Grants)),
            _ => None,
        },
    }
}

/// What the audit view shows: events matching every given field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub identity: Option<String>,
    pub secret: Option<String>,
    pub kind: Option<String>,
    pub denied: bool,
    /// Free words, each matched against identity, secret, kind and project.
    pub words: Vec<String>,
}

impl Filter {
    /// `identity=NAME secret=P/N kind=K denied` and free words, in any order.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut f = Filter::default();
        for tok in s.split_whitespace() {
            match tok.split_once('=') {
                Some(("identity" | "id", v)) => f.identity = Some(v.to_string()),
                Some(("secret", v)) => f.secret = Some(v.to_string()),
                Some(("kind", v)) => f.kind = Some(v.to_string()),
                Some((k, _)) => {
                    return Err(format!(
                        "unknown filter field {k:?}: use identity=, secret=, kind=, denied"
                    ));
                }
                None if tok == "denied" => f.denied = true,
                None => f.words.push(tok.to_string()),
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(i) = &self.identity {
            v.push(format!("identity={i}"));
        }
        if let Some(s) = &self.secret {
            v.push(format!("secret={s}"));
        }
        if let Some(k) = &self.kind {
            v.push(format!("kind={k}"));
        }
        if self.denied {
            v.push("denied".into());
        }
        v.extend(self.words.iter().cloned());
        v.join(" ")
    }

    /// Whether a decoded event matches. An identity matches `agent:NAME` given `NAME`.
    pub fn matches(&self, s: &crate::source::Summary) -> bool {
        let id_ok = |want: &str| {
            s.identity == want || s.identity.split_once(':').is_some_and(|(_, n)| n == want)
        };
        self.identity.as_deref().is_none_or(id_ok)
            && self.secret.as_deref().is_none_or(|w| s.secret == w)
            && self.kind.as_deref().is_none_or(|w| s.kind == w)
            && (!self.denied || s.denied)
            && self.words.iter().all(|w| {
                [
                    &s.identity,
                    &s.secret,
                    &s.kind,
                    &s.project,
                    &s.actor,
                    &s.subject,
                ]
                .iter()
                .any(|f| f.contains(w.as_str()))
            })
    }
}

/// The state of the last (or running) verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyState {
    Never,
    Running {
        done: u64,
        total: u64,
    },
    /// Verified up to `events` with head `head`, at `at` (a display time).
    Verified {
        events: u64,
        head: String,
        at: String,
    },
    Failed {
        message: String,
        at: String,
    },
}

/// Work the UI thread hands off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    StartVerify,
    StartFilter(Filter),
    /// Confirmed: send it to the daemon.
    Perform(Request),
}

#[derive(Debug)]
pub struct App {
    pub view: View,
    pub pane: Pane,
    pub mode: Mode,
    /// Row index (into all events, or into the filtered list) per view.
    pub selected: [u64; 4],
    /// Rows currently in the audit view's source (all events).
    pub total: u64,
    /// First sequence number (bundles may start later than 0).
    pub first: u64,
    pub filter: Option<Filter>,
    /// Sequence numbers matching the filter; `None` while not filtered.
    pub filtered: Option<Vec<u64>>,
    /// Filter scan progress (done, total), while a scan runs.
    pub filtering: Option<(u64, u64)>,
    pub verify: VerifyState,
    pub message: Option<String>,
    pub page: u64,
    pub quit: bool,
    /// Row counts of the other views' tables.
    pub table_rows: [u64; 4],
    pub read_only: bool,
    /// First line of the detail pane shown: with the detail pane focused (Tab), the movement
    /// keys scroll it. Back to the top whenever the selection moves.
    pub detail_scroll: u16,
}

impl App {
    pub fn new(first: u64, total: u64) -> Self {
        Self {
            view: View::Audit,
            pane: Pane::Table,
            mode: Mode::Normal,
            selected: [0; 4],
            total,
            first,
            filter: None,
            filtered: None,
            filtering: None,
            verify: VerifyState::Never,
            message: None,
            page: 20,
            quit: false,
            table_rows: [0; 4],
            read_only: false,
            detail_scroll: 0,
        }
    }

    fn idx(&self) -> usize {
        self.view as usize
    }

    /// Rows of the current view.
    pub fn rows(&self) -> u64 {
        match self.view {
            View::Audit => self
                .filtered
                .as_ref()
                .map_or(self.total, |f| f.len() as u64),
            v => self.table_rows[v as usize],
        }
    }

    /// The event sequence number of the audit view's selected row.
    pub fn selected_seq(&self) -> Option<u64> {
        let i = self.selected[0];
        match &self.filtered {
            Some(f) => f.get(i as usize).copied(),
            None if i < self.total => Some(self.first + i),
            None => None,
        }
    }

    fn clamp(&mut self) {
        let rows = self.rows();
        let i = self.idx();
        self.selected[i] = self.selected[i].min(rows.saturating_sub(1));
    }

    /// New events were committed: the selection stays on the same event.
    pub fn grew(&mut self, total: u64) {
        self.total = total;
    }

    /// Jumps the audit view to event `seq` (or the nearest shown one after it).
    pub fn jump(&mut self, seq: u64) {
        self.view = View::Audit;
        self.detail_scroll = 0;
        self.selected[0] = match &self.filtered {
            Some(f) => f.partition_point(|s| *s < seq) as u64,
            None => seq.saturating_sub(self.first),
        };
        self.clamp();
    }

    /// Scrolls the detail pane (the drawing clamps it to the pane's content).
    fn scroll_detail(&mut self, a: &Action) -> bool {
        if self.view != View::Audit || self.pane != Pane::Detail {
            return false;
        }
        let page = u16::try_from(self.page).unwrap_or(u16::MAX);
        let s = &mut self.detail_scroll;
        match a {
            Action::Up(n) => *s = s.saturating_sub(u16::try_from(*n).unwrap_or(u16::MAX)),
            Action::Down(n) => *s = s.saturating_add(u16::try_from(*n).unwrap_or(u16::MAX)),
            Action::PageUp => *s = s.saturating_sub(page),
            Action::PageDown => *s = s.saturating_add(page),
            Action::Top => *s = 0,
            Action::Bottom => *s = u16::MAX,
            _ => return false,
        }
        true
    }

    pub fn update(&mut self, a: Action) -> Option<Effect> {
        if self.scroll_detail(&a) {
            return None;
        }
        let i = self.idx();
        if matches!(
            a,
            Action::Up(_)
                | Action::Down(_)
                | Action::PageUp
                | Action::PageDown
                | Action::Top
                | Action::Bottom
        ) {
            self.detail_scroll = 0;
        }
        match a {
            Action::Quit => self.quit = true,
            Action::Up(n) => self.selected[i] = self.selected[i].saturating_sub(n),
            Action::Down(n) => {
                self.selected[i] = self.selected[i].saturating_add(n);
                self.clamp();
            }
            Action::PageUp => self.selected[i] = self.selected[i].saturating_sub(self.page),
            Action::PageDown => {
                self.selected[i] = self.selected[i].saturating_add(self.page);
                self.clamp();
            }
            Action::Top => self.selected[i] = 0,
            Action::Bottom => self.selected[i] = self.rows().saturating_sub(1),
            Action::NextPane => {
                self.pane = match self.pane {
                    Pane::Table => Pane::Detail,
                    Pane::Detail => Pane::Table,
                }
            }
            Action::NextView => {
                let n = View::ALL.iter().position(|v| *v == self.view).unwrap_or(0);
                self.view = View::ALL[(n + 1) % View::ALL.len()];
            }
            Action::SwitchView(v) => self.view = v,
            Action::ToggleHelp => {
                self.mode = if self.mode == Mode::Help {
                    Mode::Normal
                } else {
                    Mode::Help
                };
            }
            Action::StartFilter => {
                self.view = View::Audit;
                self.mode = Mode::Filter(
                    self.filter
                        .as_ref()
                        .map(Filter::describe)
                        .unwrap_or_default(),
                );
            }
            Action::StartCommand => self.mode = Mode::Command(String::new()),
            Action::Input(c) => match &mut self.mode {
                Mode::Filter(s) | Mode::Command(s) | Mode::GrantTo { input: s, .. } => s.push(c),
                Mode::SecretValue { value, .. } => value.push(c),
                _ => {}
            },
            Action::Backspace => match &mut self.mode {
                Mode::Filter(s) | Mode::Command(s) | Mode::GrantTo { input: s, .. } => {
                    s.pop();
                }
                Mode::SecretValue { value, .. } => {
                    value.pop();
                }
                _ => {}
            },
            // Revoke, Rotate and NewGrant need the selected table row: the console turns them
            // into prompts (see `Console::act`).
            Action::Revoke | Action::Rotate | Action::NewGrant => {}
            Action::Yes => {
                if let Mode::Confirm(r) = std::mem::replace(&mut self.mode, Mode::Normal) {
                    return Some(Effect::Perform(r));
                }
            }
            Action::No => {
                if let Mode::Confirm(r) = std::mem::replace(&mut self.mode, Mode::Normal) {
                    self.message = Some(format!("not done: {}", r.describe()));
                }
            }
            Action::Cancel => self.mode = Mode::Normal,
            Action::Submit => {
                let mode = std::mem::replace(&mut self.mode, Mode::Normal);
                match mode {
                    Mode::Filter(s) => match Filter::parse(&s) {
                        Ok(f) if f.is_empty() => return self.update(Action::ClearFilter),
                        Ok(f) => {
                            self.filter = Some(f.clone());
                            self.filtering = Some((0, self.total));
                            return Some(Effect::StartFilter(f));
                        }
                        Err(e) => self.message = Some(e),
                    },
                    Mode::Command(s) => return self.command(s.trim()),
                    Mode::SecretValue { name, value } => {
                        if value.is_empty() {
                            self.message = Some("empty value: nothing done".into());
                        } else {
                            self.mode = Mode::Confirm(Request::RotateSecret { name, value });
                        }
                    }
                    Mode::GrantTo { secret, input } => {
                        match input.split_whitespace().collect::<Vec<_>>()[..] {
                            [identity, project] => {
                                self.mode = Mode::Confirm(Request::Grant {
                                    identity: identity.into(),
                                    secret,
                                    project: project.into(),
                                })
                            }
                            _ => {
                                self.message =
                                    Some("type IDENTITY PROJECT, e.g. summariser demo".into())
                            }
                        }
                    }
                    _ => {}
                }
            }
            Action::ClearFilter => {
                let keep = self.selected_seq();
                self.filter = None;
                self.filtered = None;
                self.filtering = None;
                if let Some(seq) = keep {
                    self.jump(seq);
                }
            }
            Action::Verify => {
                if !matches!(self.verify, VerifyState::Running { .. }) {
                    self.verify = VerifyState::Running { done: 0, total: 0 };
                    return Some(Effect::StartVerify);
                }
            }
        }
        None
    }

    fn command(&mut self, c: &str) -> Option<Effect> {
        match c {
            "q" | "quit" => self.quit = true,
            "audit" | "a" => self.view = View::Audit,
            "secrets" | "s" => self.view = View::Secrets,
            "identities" | "i" => self.view = View::Identities,
            "grants" | "g" => self.view = View::Grants,
            "verify" | "v" => return self.update(Action::Verify),
            n => match n.parse::<u64>() {
                Ok(seq) => self.jump(seq),
                Err(_) => {
                    self.message = Some(format!(
                        "unknown command :{n} (try :audit, :secrets, :identities, :grants, :N, :verify, :q)"
                    ))
                }
            },
        }
        None
    }

    /// A filter scan finished: `matches` are the sequence numbers shown from now on.
    pub fn filtered(&mut self, matches: Vec<u64>) {
        let keep = self.selected_seq();
        self.filtering = None;
        self.filtered = Some(matches);
        self.selected[0] = 0;
        if let Some(seq) = keep {
            self.jump(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_actions_in_each_mode() {
        let n = Mode::Normal;
        assert_eq!(map_key(&n, key(KeyCode::Char('j'))), Some(Action::Down(1)));
        assert_eq!(map_key(&n, key(KeyCode::Down)), Some(Action::Down(1)));
        assert_eq!(map_key(&n, key(KeyCode::Char('k'))), Some(Action::Up(1)));
        assert_eq!(map_key(&n, key(KeyCode::Char('G'))), Some(Action::Bottom));
        assert_eq!(map_key(&n, key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(
            map_key(&n, key(KeyCode::Char('/'))),
            Some(Action::StartFilter)
        );
        assert_eq!(
            map_key(&n, key(KeyCode::Char(':'))),
            Some(Action::StartCommand)
        );
        assert_eq!(map_key(&n, key(KeyCode::Tab)), Some(Action::NextPane));
        assert_eq!(
            map_key(&n, key(KeyCode::Char('?'))),
            Some(Action::ToggleHelp)
        );
        assert_eq!(map_key(&n, key(KeyCode::Char('v'))), Some(Action::Verify));
        assert_eq!(
            map_key(&n, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        // Typing in a prompt: letters are input, `q` does not quit.
        let f = Mode::Filter(String::new());
        assert_eq!(
            map_key(&f, key(KeyCode::Char('q'))),
            Some(Action::Input('q'))
        );
        assert_eq!(map_key(&f, key(KeyCode::Enter)), Some(Action::Submit));
        assert_eq!(map_key(&f, key(KeyCode::Esc)), Some(Action::Cancel));
        assert_eq!(map_key(&Mode::Help, key(KeyCode::Char('j'))), None);
    }

    #[test]
    fn movement_is_clamped_and_page_sized() {
        let mut a = App::new(0, 100);
        a.page = 10;
        a.update(Action::Up(1));
        assert_eq!(a.selected_seq(), Some(0));
        a.update(Action::PageDown);
        assert_eq!(a.selected_seq(), Some(10));
        a.update(Action::Bottom);
        assert_eq!(a.selected_seq(), Some(99));
        a.update(Action::Down(5));
        assert_eq!(a.selected_seq(), Some(99));
        a.update(Action::Top);
        assert_eq!(a.selected_seq(), Some(0));
    }

    #[test]
    fn new_events_do_not_move_the_selection() {
        let mut a = App::new(0, 50);
        a.jump(20);
        a.grew(80);
        assert_eq!(a.selected_seq(), Some(20));
    }

    #[test]
    fn filter_and_command_prompts() {
        let mut a = App::new(0, 1000);
        a.update(Action::StartFilter);
        for c in "identity=bot denied".chars() {
            a.update(Action::Input(c));
        }
        let e = a.update(Action::Submit);
        let want = Filter {
            identity: Some("bot".into()),
            denied: true,
            ..Filter::default()
        };
        assert_eq!(e, Some(Effect::StartFilter(want)));
        a.filtered(vec![3, 70, 400]);
        assert_eq!(a.rows(), 3);
        assert_eq!(a.selected_seq(), Some(3));
        a.update(Action::Down(1));
        assert_eq!(a.selected_seq(), Some(70));
        // Clearing keeps the selected event.
        a.update(Action::ClearFilter);
        assert_eq!(a.selected_seq(), Some(70));
        // `:N` jumps; `:secrets` switches view; nonsense says so.
        a.update(Action::StartCommand);
        for c in "512".chars() {
            a.update(Action::Input(c));
        }
        a.update(Action::Submit);
        assert_eq!(a.selected_seq(), Some(512));
        a.mode = Mode::Command("secrets".into());
        a.update(Action::Submit);
        assert_eq!(a.view, View::Secrets);
        a.mode = Mode::Command("nonsense".into());
        a.update(Action::Submit);
        assert!(a.message.as_deref().unwrap().contains("unknown command"));
        assert!(Filter::parse("colour=red").is_err());
    }

    #[test]
    fn confirmation_defaults_to_no_and_never_shows_the_value() {
        let mut a = App::new(0, 10);
        a.mode = Mode::Confirm(Request::RevokeGrant(3));
        // Any key but y is No.
        let act = map_key(&a.mode, key(KeyCode::Enter)).unwrap();
        assert_eq!(act, Action::No);
        assert_eq!(a.update(act), None);
        assert_eq!(a.mode, Mode::Normal);
        a.mode = Mode::Confirm(Request::RevokeGrant(3));
        let act = map_key(&a.mode, key(KeyCode::Char('y'))).unwrap();
        assert_eq!(
            a.update(act),
            Some(Effect::Perform(Request::RevokeGrant(3)))
        );
        // A rotation: typed, confirmed; its value never in Debug output.
        a.mode = Mode::SecretValue {
            name: "openai/prod".into(),
            value: Default::default(),
        };
        for c in "sk-new".chars() {
            a.update(Action::Input(c));
        }
        a.update(Action::Submit);
        let Mode::Confirm(r) = &a.mode else {
            panic!("{:?}", a.mode)
        };
        assert!(!format!("{r:?} {:?}", a.mode).contains("sk-new"));
        assert_eq!(
            a.update(Action::Yes),
            Some(Effect::Perform(Request::RotateSecret {
                name: "openai/prod".into(),
                value: zeroize::Zeroizing::new("sk-new".into())
            }))
        );
    }

    #[test]
    fn with_the_detail_focused_the_movement_keys_scroll_it_not_the_selection() {
        let mut a = App::new(0, 100);
        a.page = 10;
        a.jump(40);
        a.update(Action::NextPane);
        a.update(Action::Down(3));
        a.update(Action::PageDown);
        assert_eq!((a.selected_seq(), a.detail_scroll), (Some(40), 13));
        a.update(Action::Up(1));
        assert_eq!(a.detail_scroll, 12);
        a.update(Action::Top);
        assert_eq!(a.detail_scroll, 0);
        // Back to the table: the keys move the selection, and the detail starts at its top.
        a.update(Action::Bottom);
        a.update(Action::NextPane);
        a.update(Action::Down(1));
        assert_eq!((a.selected_seq(), a.detail_scroll), (Some(41), 0));
    }

    #[test]
    fn verify_runs_once_at_a_time() {
        let mut a = App::new(0, 10);
        assert_eq!(a.update(Action::Verify), Some(Effect::StartVerify));
        assert_eq!(a.update(Action::Verify), None);
    }
}
