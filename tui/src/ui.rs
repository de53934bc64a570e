//! Drawing. Reads the state and the source; changes nothing but the table geometry it
//! remembers for mouse clicks.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TRow, Table};

use crate::app::{App, Mode, Pane, VerifyState, View};
use crate::source::LogSource;

/// Tables of the Secrets, Identities and Grants views: a header row, then rows.
pub type Tables = [Vec<Vec<String>>; 3];

/// Colours, or none at all (`NO_COLOR`): then only bold and reverse video mark things.
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
    fn selected(self) -> Style {
        if self.color {
            Style::default()
                .bg(Color::Blue)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }
    fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    fn good(self) -> Style {
        self.fg(Color::Green)
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) from milliseconds since the epoch.
pub fn time_str(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn short(h: &[u8; 32]) -> String {
    hex::encode(&h[..8])
}

/// Where the table body was drawn and which row is at its top (for mouse clicks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Geometry {
    pub body: Rect,
    pub offset: u64,
}

/// How the audit view shares the screen with the detail pane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrangement {
    /// Wide screens: the table on the left, the detail on the right.
    Beside,
    /// Tall screens: the table above, the detail below.
    Stacked,
    /// Small screens (80x24): the table alone; Tab shows the detail in its place.
    Alternate,
}

/// Where the audit view puts its detail pane on a main area of this size.
pub fn arrangement(area: Rect) -> Arrangement {
    if area.width >= 160 {
        Arrangement::Beside
    } else if area.height >= 30 {
        Arrangement::Stacked
    } else {
        Arrangement::Alternate
    }
}

pub fn draw(
    f: &mut Frame,
    app: &mut App,
    src: &mut LogSource,
    tables: &Option<Tables>,
    theme: Theme,
) -> Geometry {
    let [top, main, status, prompt] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_tabs(f, top, app, theme);
    let geo = match app.view {
        View::Audit => match arrangement(main) {
            Arrangement::Beside => {
                let detail = (main.width * 3 / 10).clamp(56, 72);
                let [left, right] =
                    Layout::horizontal([Constraint::Min(40), Constraint::Length(detail)])
                        .areas(main);
                let geo = draw_audit(f, left, app, src, theme, false);
                draw_detail(f, right, app, src, theme, false);
                geo
            }
            Arrangement::Stacked => {
                let [upper, lower] =
                    Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)])
                        .areas(main);
                let geo = draw_audit(f, upper, app, src, theme, false);
                draw_detail(f, lower, app, src, theme, false);
                geo
            }
            Arrangement::Alternate if app.pane == Pane::Detail => {
                draw_detail(f, main, app, src, theme, true);
                Geometry::default()
            }
            Arrangement::Alternate => draw_audit(f, main, app, src, theme, true),
        },
        v => draw_table(
            f,
            main,
            app,
            tables.as_ref().map(|t| &t[v as usize - 1]),
            theme,
        ),
    };
    draw_status(f, status, app, src, theme);
    draw_prompt(f, prompt, app, theme);
    if app.mode == Mode::Help {
        draw_help(f, main, app.view);
    }
    geo
}

fn draw_tabs(f: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let mut spans = vec![Span::styled(
        " ScopeHold ",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (i, v) in View::ALL.iter().enumerate() {
        let s = format!(" {} {} ", i + 1, v.title());
        spans.push(if *v == app.view {
            Span::styled(s, theme.selected())
        } else {
            Span::raw(s)
        });
    }
    if app.read_only {
        spans.push(Span::styled(
            "  [read-only bundle]",
            theme.fg(Color::Yellow),
        ));
    }
    if let Some(flt) = &app.filter {
        spans.push(Span::styled(
            format!("  filter: {}", flt.describe()),
            theme.fg(Color::Yellow),
        ));
        if let Some((d, t)) = app.filtering {
            spans.push(Span::raw(format!(" (scanning {d}/{t})")));
        }
    }
    f.render_widget(
        Paragraph::new(Line::from(fit_spans(spans, area.width))),
        area,
    );
}

/// `spans` cut to `w` columns, the last one kept marked with an ellipsis.
fn fit_spans(spans: Vec<Span<'static>>, w: u16) -> Vec<Span<'static>> {
    let mut out = Vec::new();
    let mut left = w;
    for sp in spans {
        let sw = width(&sp.content);
        if sw <= left {
            left -= sw;
            out.push(sp);
        } else {
            if left > 0 {
                out.push(Span::styled(cut(&sp.content, left), sp.style));
            }
            break;
        }
    }
    out
}

/// The display width of a cell's text.
fn width(s: &str) -> u16 {
    u16::try_from(Span::raw(s).width()).unwrap_or(u16::MAX)
}

/// `s` cut to `w` columns, with an ellipsis where it was cut: a cell is never cut silently.
pub fn cut(s: &str, w: u16) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0u16;
    for ch in s.chars() {
        let cw = width(ch.encode_utf8(&mut [0; 4]));
        if used + cw + 1 > w {
            break;
        }
        out.push(ch);
        used += cw;
    }
    if w > 0 {
        out.push('…');
    }
    out
}

/// Narrows the widest of the given columns, one column at a time, until `excess` columns
/// are saved or every one is at its minimum. Returns what is still in excess.
fn shrink(widths: &mut [u16], mins: &[u16], which: &[usize], mut excess: u16) -> u16 {
    while excess > 0 {
        let Some(&i) = which
            .iter()
            .filter(|&&i| widths[i] > mins[i])
            .max_by_key(|&&i| widths[i] - mins[i])
        else {
            break;
        };
        widths[i] -= 1;
        excess -= 1;
    }
    excess
}

/// Total width of columns `widths` one space apart.
fn total(widths: &[u16]) -> u16 {
    widths.iter().sum::<u16>() + u16::try_from(widths.len().saturating_sub(1)).unwrap_or(0)
}

/// The audit table's columns at a width, fitted to the rows on screen: seq, time, actor,
/// action and subject always (the time shortened, then actor, action and subject cut with an
/// ellipsis, when they must be); outcome, uid, pid and the remaining fields as they fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditColumns {
    /// Which of [`AUDIT_COLUMNS`] are shown, with their widths.
    pub shown: Vec<(usize, u16)>,
    /// Characters of `YYYY-MM-DD HH:MM:SS` shown (19, or the last 14 or 8).
    pub time: u16,
}

/// Every column the audit table can show, in order.
pub const AUDIT_COLUMNS: [&str; 9] = [
    "SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "OUTCOME", "UID", "PID", "DETAILS",
];

/// The text of audit column `c` for a row.
fn audit_cell(c: usize, seq: u64, time: &str, s: &crate::source::Summary) -> String {
    match c {
        0 => seq.to_string(),
        1 => time.to_string(),
        2 => s.actor.clone(),
        3 => s.kind.clone(),
        4 => s.subject.clone(),
        5 => s.outcome.clone(),
        6 => s.field("uid").unwrap_or("").to_string(),
        7 => s.field("pid").unwrap_or("").to_string(),
        _ => s.details.clone(),
    }
}

/// Fits the audit table's columns to `avail` columns and the rows `(seq, summary)` on screen.
pub fn fit_audit(avail: u16, rows: &[(u64, &crate::source::Summary)]) -> AuditColumns {
    let natural = |c: usize| {
        rows.iter()
            .map(|(seq, s)| width(&audit_cell(c, *seq, "", s)))
            .chain([width(AUDIT_COLUMNS[c])])
            .max()
            .unwrap_or(0)
    };
    // Core: seq, time, actor, action, subject.
    let mut w = vec![natural(0), 19, natural(2), natural(3), natural(4)];
    let mut time = 19;
    for t in [19, 14, 8] {
        w[1] = t;
        time = t;
        if total(&w) <= avail {
            break;
        }
    }
    // Then the action (a kind's name is still plain at 15 columns), then actor and subject
    // alike, each cut with an ellipsis; at the very least the subject keeps one column.
    let mut mins = [w[0], 8, 10.min(w[2]), 15.min(w[3]), 12.min(w[4])];
    let mut excess = total(&w).saturating_sub(avail);
    excess = shrink(&mut w, &mins, &[3], excess);
    excess = shrink(&mut w, &mins, &[2, 4], excess);
    mins[4] = 1;
    shrink(&mut w, &mins, &[4], excess);
    let mut shown: Vec<(usize, u16)> = w.iter().copied().enumerate().collect();
    // Then the outcome (cut if it must be, but not below 16 columns), and if it is whole,
    // uid and pid as they fit, and the remaining fields in what is left.
    let used = |shown: &[(usize, u16)]| total(&shown.iter().map(|x| x.1).collect::<Vec<_>>());
    let present = |c: usize| {
        rows.iter()
            .any(|(seq, s)| !audit_cell(c, *seq, "", s).is_empty())
    };
    let room = avail.saturating_sub(used(&shown) + 1);
    let outcome = natural(5);
    if !present(5) || room < outcome.min(16) {
        return AuditColumns { shown, time };
    }
    shown.push((5, outcome.min(room)));
    if outcome > room {
        return AuditColumns { shown, time };
    }
    for c in [6, 7] {
        let n = natural(c);
        if present(c) && used(&shown) + 1 + n <= avail {
            shown.push((c, n));
        }
    }
    let rest = avail.saturating_sub(used(&shown) + 1);
    if rest >= 12 && rows.iter().any(|(_, s)| !s.details.is_empty()) {
        shown.push((8, rest));
    }
    AuditColumns { shown, time }
}

fn draw_audit(
    f: &mut Frame,
    area: Rect,
    app: &mut App,
    src: &mut LogSource,
    theme: Theme,
    alternate: bool,
) -> Geometry {
    let title = if alternate {
        format!(" Audit ({} events) · Tab: detail ", app.rows())
    } else {
        format!(" Audit ({} events) ", app.rows())
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(if app.pane == Pane::Table {
            theme.fg(Color::Cyan)
        } else {
            Style::default()
        });
    let inner = block.inner(area);
    let visible = inner.height.saturating_sub(1).max(1) as u64;
    app.page = visible;
    let sel = app.selected[0];
    let offset = sel - sel % visible;
    // (index in the view, event number, the row or why it cannot be read)
    let mut rows: Vec<(u64, u64, Result<crate::source::Row, String>)> = Vec::new();
    for i in offset..(offset + visible).min(app.rows()) {
        let seq = match &app.filtered {
            Some(v) => v[i as usize],
            None => app.first + i,
        };
        rows.push((i, seq, src.row(seq).map_err(|e| format!("unreadable: {e}"))));
    }
    let fitted: Vec<(u64, &crate::source::Summary)> = rows
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok().map(|r| (r.seq, &r.summary)))
        .collect();
    let cols = fit_audit(inner.width, &fitted);
    let skip = 19 - usize::from(cols.time);
    let table_rows: Vec<TRow> = rows
        .iter()
        .map(|(i, seq, r)| {
            let r = match r {
                Ok(r) => r,
                // The event number where it belongs, the error in the subject's place.
                Err(e) => {
                    let cells = cols.shown.iter().map(|&(c, w)| match c {
                        0 => Cell::from(cut(&seq.to_string(), w)),
                        4 => Cell::from(cut(e, w)),
                        _ => Cell::from(""),
                    });
                    return TRow::new(cells.collect::<Vec<_>>()).style(theme.bad());
                }
            };
            let full = time_str(r.time_ms);
            let cells = cols.shown.iter().map(|&(c, w)| {
                Cell::from(cut(&audit_cell(c, r.seq, &full[skip..], &r.summary), w))
            });
            let row = TRow::new(cells.collect::<Vec<_>>());
            if *i == sel {
                row.style(theme.selected())
            } else if r.summary.denied {
                row.style(theme.fg(Color::Red))
            } else {
                row
            }
        })
        .collect();
    let header = TRow::new(
        cols.shown
            .iter()
            .map(|&(c, w)| Cell::from(cut(AUDIT_COLUMNS[c], w))),
    )
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths: Vec<Constraint> = cols
        .shown
        .iter()
        .map(|&(_, w)| Constraint::Length(w))
        .collect();
    f.render_widget(
        Table::new(table_rows, widths).header(header).block(block),
        area,
    );
    Geometry {
        body: Rect {
            y: inner.y + 1,
            height: inner.height.saturating_sub(1),
            ..inner
        },
        offset,
    }
}

/// `s` in lines of at most `room` characters, broken after a space where there is one (a
/// hash, which has none, is broken anywhere).
fn wrap(s: &str, room: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest: Vec<char> = s.chars().collect();
    while rest.len() > room {
        let at = rest[..=room]
            .iter()
            .rposition(|c| *c == ' ')
            .filter(|&i| i > 0)
            .map_or(room, |i| i + 1);
        out.push(rest[..at].iter().collect::<String>().trim_end().to_string());
        rest.drain(..at);
    }
    out.push(rest.into_iter().collect());
    out
}

/// `label value` lines, labels `label` wide, the value wrapped under itself (a hash, a long
/// list) at `width`.
fn kv_lines(items: &[(String, String)], label: u16, width: u16) -> Vec<Line<'static>> {
    let room = usize::from(width.saturating_sub(label).max(8));
    let mut out = Vec::new();
    for (k, v) in items {
        let mut chunks = wrap(v, room).into_iter();
        let first = chunks.next().unwrap_or_default();
        out.push(Line::from(vec![
            Span::styled(
                format!("{:<w$}", cut(k, label - 1), w = usize::from(label)),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(first),
        ]));
        for more in chunks {
            out.push(Line::raw(format!(
                "{:<w$}{more}",
                "",
                w = usize::from(label)
            )));
        }
    }
    out
}

/// The detail pane's lines for event `seq`, at `width` columns: what happened (actor, action,
/// subject, outcome), every field of the event, then its place in the chain.
fn detail_lines(src: &mut LogSource, seq: u64, width: u16, theme: Theme) -> Vec<Line<'static>> {
    let r = match src.row(seq) {
        Ok(r) => r,
        Err(e) => return vec![Line::styled(format!("unreadable: {e}"), theme.bad())],
    };
    let s = &r.summary;
    let kv = |k: &str, v: String| (k.to_string(), v);
    let mut head = vec![
        kv("event", format!("{} at {} UTC", r.seq, time_str(r.time_ms))),
        kv("actor", s.actor.clone()),
        kv("action", s.kind.clone()),
        kv("subject", s.subject.clone()),
    ];
    if !s.outcome.is_empty() {
        head.push(kv("outcome", s.outcome.clone()));
    }
    let mut chain = vec![
        kv("hash", hex::encode(r.hash)),
        kv("prev", hex::encode(r.prev)),
    ];
    let cp = src.checkpoint_covering(seq);
    if let Some(cp) = &cp {
        chain.push(kv(
            "signed by",
            format!("checkpoint of size {}", cp.body.size),
        ));
        chain.push(kv("  head", short(&cp.body.head)));
        chain.push(kv("  time", time_str(cp.body.time_ms)));
        chain.push(kv("  sig", hex::encode(&cp.signature[..16])));
    }
    let label = head
        .iter()
        .chain(&s.fields)
        .chain(&chain)
        .map(|(k, _)| self::width(k))
        .max()
        .unwrap_or(0)
        .min(width / 3)
        + 1;
    let section =
        |t: &'static str| Line::styled(t, Style::default().add_modifier(Modifier::UNDERLINED));
    let mut lines = kv_lines(&head, label, width);
    if !s.fields.is_empty() {
        lines.push(section("fields"));
        lines.extend(kv_lines(&s.fields, label, width));
    }
    if r.secret_bearing {
        lines.push(Line::raw(if r.body_present {
            "secret-bearing: its secret fields are withheld (committed with a salt)"
        } else {
            "secret-bearing: its body is left out of the bundle (its salted commitment verifies)"
        }));
    }
    lines.push(section("chain"));
    lines.extend(kv_lines(&chain, label, width));
    if cp.is_none() {
        lines.push(Line::styled("no checkpoint covers it yet", theme.bad()));
    }
    lines
}

fn draw_detail(
    f: &mut Frame,
    area: Rect,
    app: &mut App,
    src: &mut LogSource,
    theme: Theme,
    alternate: bool,
) {
    let mut block =
        Block::default()
            .borders(Borders::ALL)
            .border_style(if app.pane == Pane::Detail {
                theme.fg(Color::Cyan)
            } else {
                Style::default()
            });
    let Some(seq) = app.selected_seq() else {
        f.render_widget(
            Paragraph::new("no event selected").block(block.title(" Detail ")),
            area,
        );
        return;
    };
    let inner = block.inner(area);
    let lines = detail_lines(src, seq, inner.width, theme);
    let over = u16::try_from(lines.len())
        .unwrap_or(u16::MAX)
        .saturating_sub(inner.height);
    app.detail_scroll = app.detail_scroll.min(over);
    let mut title = format!(" Detail of event {seq} ");
    if over > 0 {
        let hint = if app.pane == Pane::Detail {
            "j/k scroll"
        } else {
            "Tab, j/k"
        };
        title.push_str(&format!(
            "· lines {}-{} of {} ({hint}) ",
            app.detail_scroll + 1,
            app.detail_scroll + inner.height,
            lines.len()
        ));
    }
    if alternate {
        title.push_str("· Tab: table ");
    }
    block = block.title(cut(&title, area.width.saturating_sub(2)));
    f.render_widget(
        Paragraph::new(lines)
            .scroll((app.detail_scroll, 0))
            .block(block),
        area,
    );
}

/// Column widths for a table: each column as wide as its widest cell when they all fit;
/// else the columns after the first four give way first, the widest of them first (cells then
/// cut with an ellipsis), then every column alike, so a secret's name keeps its width as long
/// as anything else can give.
pub fn fit_table(table: &[Vec<String>], avail: u16) -> Vec<u16> {
    let cols = table.first().map_or(0, Vec::len);
    let mut w: Vec<u16> = (0..cols)
        .map(|c| {
            table
                .iter()
                .map(|r| r.get(c).map_or(0, |s| width(s)))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mins: Vec<u16> = w.iter().map(|&x| x.min(6)).collect();
    let excess = total(&w).saturating_sub(avail);
    // The first four columns say what a row is (a grant's id, holder, secret and project):
    // the others give way first, then all alike.
    let rest: Vec<usize> = (cols.min(4)..cols).collect();
    let excess = shrink(&mut w, &mins, &rest, excess);
    let all: Vec<usize> = (0..cols).collect();
    let left = shrink(&mut w, &mins, &all, excess);
    if left > 0 {
        // Still too wide at every minimum: the last columns give way entirely.
        let mut left = left;
        for x in w.iter_mut().rev() {
            let give = left.min(*x);
            *x -= give;
            left -= give;
        }
    }
    w
}

fn draw_table(
    f: &mut Frame,
    area: Rect,
    app: &mut App,
    table: Option<&Vec<Vec<String>>>,
    theme: Theme,
) -> Geometry {
    let title = if app.read_only {
        format!(
            " {} · projected from the bundle's public events ",
            app.view.title()
        )
    } else {
        format!(" {} ", app.view.title())
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(theme.fg(Color::Cyan));
    let Some(table) = table.filter(|t| !t.is_empty()) else {
        f.render_widget(
            Paragraph::new("loading the projection from the log...").block(block),
            area,
        );
        return Geometry::default();
    };
    let inner = block.inner(area);
    let visible = inner.height.saturating_sub(1).max(1) as u64;
    app.page = visible;
    let idx = app.view as usize;
    app.table_rows[idx] = table.len() as u64 - 1;
    let sel = app.selected[idx].min(app.table_rows[idx].saturating_sub(1));
    let offset = sel - sel % visible;
    let fitted = fit_table(table, inner.width);
    let cells = |r: &Vec<String>| {
        r.iter()
            .zip(&fitted)
            .map(|(c, w)| Cell::from(cut(c, *w)))
            .collect::<Vec<_>>()
    };
    let rows: Vec<TRow> = table[1..]
        .iter()
        .enumerate()
        .skip(offset as usize)
        .take(visible as usize)
        .map(|(i, r)| {
            let row = TRow::new(cells(r));
            if i as u64 == sel {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let header = TRow::new(cells(&table[0])).style(Style::default().add_modifier(Modifier::BOLD));
    let widths: Vec<Constraint> = fitted.iter().map(|w| Constraint::Length(*w)).collect();
    f.render_widget(Table::new(rows, widths).header(header).block(block), area);
    Geometry {
        body: Rect {
            y: inner.y + 1,
            height: inner.height.saturating_sub(1),
            ..inner
        },
        offset,
    }
}

fn draw_status(f: &mut Frame, area: Rect, app: &App, src: &LogSource, theme: Theme) {
    let verified = match &app.verify {
        VerifyState::Never => Span::styled("not verified (press v)", theme.fg(Color::Yellow)),
        VerifyState::Running { done, total } => {
            let pct = if *total > 0 { 100 * done / total } else { 0 };
            let bar = "#".repeat((pct / 10) as usize) + &".".repeat(10 - (pct / 10) as usize);
            Span::styled(format!("verifying [{bar}] {pct}%"), theme.fg(Color::Yellow))
        }
        VerifyState::Verified { events, head, at } => Span::styled(
            format!("verified up to {events} events, head {head}, at {at}"),
            theme.good(),
        ),
        VerifyState::Failed { message, at } => Span::styled(
            format!("VERIFICATION FAILED at {at}: {message}"),
            theme.bad(),
        ),
    };
    let cp = src.checkpoint();
    // The longest form that fits; the verification result always comes first, whole if it
    // can be, and what is cut is cut with an ellipsis.
    let forms = [
        format!(
            " | checkpoint: size {} at {} | {} events | ? help",
            cp.body.size,
            time_str(cp.body.time_ms),
            src.len()
        ),
        format!(
            " | checkpoint {} | {} events | ? help",
            cp.body.size,
            src.len()
        ),
        " | ? help".to_string(),
        String::new(),
    ];
    let room = area.width.saturating_sub(width(&verified.content));
    let tail = forms
        .iter()
        .find(|t| width(t) <= room)
        .cloned()
        .unwrap_or_default();
    let verified = Span::styled(
        cut(&verified.content, area.width.saturating_sub(width(&tail))),
        verified.style,
    );
    f.render_widget(
        Paragraph::new(Line::from(vec![verified, Span::raw(tail)])),
        area,
    );
}

fn draw_prompt(f: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let line = match &app.mode {
        Mode::Filter(s) => Line::raw(format!(
            "/{s}_   (identity=NAME secret=P/N kind=K denied; Enter applies, Esc cancels)"
        )),
        Mode::Command(s) => Line::raw(format!(
            ":{s}_   (audit, secrets, identities, grants, N to jump, verify, q)"
        )),
        Mode::SecretValue { name, value } => Line::raw(format!(
            "new value for {name}: {}_   (hidden; Enter to confirm, Esc cancels)",
            "*".repeat(value.chars().count())
        )),
        Mode::GrantTo { secret, input } => Line::raw(format!(
            "grant {secret} to (IDENTITY PROJECT): {input}_   (Enter, Esc cancels)"
        )),
        Mode::Confirm(r) => Line::styled(
            format!("{}? [y/N]", capitalize(&r.describe())),
            theme.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        _ => match &app.message {
            Some(m) => Line::styled(m.clone(), theme.fg(Color::Yellow)),
            None => Line::raw(""),
        },
    };
    // A long message on a narrow screen ends in an ellipsis rather than silently.
    let style = line.style;
    let line = Line::from(fit_spans(line.spans, area.width)).style(style);
    f.render_widget(Paragraph::new(line), area);
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn draw_help(f: &mut Frame, area: Rect, view: View) {
    let w = 80.min(area.width);
    let h = 23.min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let mut text = vec![
        Line::styled(
            format!("{} view", view.title()),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Line::raw(""),
        Line::raw("j/k, arrows      move           PgUp/PgDn, Space   page"),
        Line::raw("g/G, Home/End    first / last   mouse wheel, click  scroll / select"),
        Line::raw("1-4, Shift-Tab   switch view    Tab                 table / detail"),
        Line::raw("                 with the detail focused, j/k and PgUp/PgDn scroll it"),
        Line::raw("/                filter: identity=NAME secret=P/N kind=K denied"),
        Line::raw("Esc              clear the filter"),
        Line::raw(":N               jump to event N   :secrets :grants ..."),
        Line::raw("v                verify the whole log (runs in the background)"),
        Line::raw("r                revoke the selected grant (Grants) or agent (Identities)"),
        Line::raw("R / n            rotate / grant the selected secret (Secrets)"),
        Line::raw("                 every change asks first: y to do it, anything else No"),
        Line::raw("?                this help      q                   quit"),
    ];
    if view == View::Audit {
        text.push(Line::raw(""));
        text.push(Line::raw(
            "Each row: who did it (actor), what (action), to what (subject).",
        ));
        text.push(Line::raw(
            "The detail pane shows every field, the event's hash, the hash it",
        ));
        text.push(Line::raw(
            "links to, and the signed checkpoint that covers it.",
        ));
    }
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Help (? or Esc closes) "),
        ),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Summary;

    fn summary(actor: &str, kind: &str, subject: &str, outcome: &str) -> Summary {
        Summary {
            kind: kind.into(),
            actor: actor.into(),
            subject: subject.into(),
            outcome: outcome.into(),
            fields: vec![("uid".into(), "1000".into()), ("pid".into(), "4242".into())],
            details: "grant=1 at=2026-01-01T00:00:00.000Z".into(),
            ..Summary::default()
        }
    }

    fn names(c: &AuditColumns) -> Vec<&'static str> {
        c.shown.iter().map(|(i, _)| AUDIT_COLUMNS[*i]).collect()
    }

    #[test]
    fn cells_are_cut_with_an_ellipsis_never_silently() {
        assert_eq!(cut("openai/prod", 11), "openai/prod");
        assert_eq!(cut("openai/prod", 10), "openai/pr…");
        assert_eq!(cut("openai/prod", 1), "…");
        assert_eq!(cut("—", 1), "—");
        assert_eq!(
            wrap("agent:bot, openai/prod in demo", 12),
            ["agent:bot,", "openai/prod", "in demo"]
        );
        assert_eq!(wrap(&"ab".repeat(8), 5), ["ababa", "babab", "ababa", "b"]);
        let spans = fit_spans(
            vec![Span::raw(" ScopeHold "), Span::raw("filter: openai")],
            16,
        );
        let text: String = spans.iter().map(|s| s.content.as_ref()).collect();
        assert_eq!(text, " ScopeHold filt…");
    }

    #[test]
    fn audit_columns_grow_with_the_width() {
        let a = summary(
            "agent:summariser",
            "secret_resolved",
            "anthropic/staging-eu in demo",
            "granted v1",
        );
        let rows = [(12, &a)];
        // 78 columns (80 less the borders): seq, time, actor, action and subject only, whole.
        let c = fit_audit(78, &rows);
        assert_eq!(names(&c), ["SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT"]);
        let w: Vec<u16> = c.shown.iter().map(|x| x.1).collect();
        assert_eq!(w[2..], [16, 15, 28]);
        assert!(total(&w) <= 78);
        // Wider: the outcome, uid, pid, then the remaining fields in what is left.
        let c = fit_audit(130, &rows);
        assert_eq!(c.time, 19);
        assert_eq!(names(&c)[5..], ["OUTCOME", "UID", "PID", "DETAILS"]);
        assert_eq!(total(&c.shown.iter().map(|x| x.1).collect::<Vec<_>>()), 130);
        // Too narrow for everything: the time shortens first, then the action is cut, then
        // actor and subject alike; the subject keeps at least a column.
        let c = fit_audit(60, &rows);
        assert_eq!(c.time, 8);
        let w: Vec<u16> = c.shown.iter().map(|x| x.1).collect();
        assert_eq!(total(&w), 60);
        assert_eq!(w[3], 15);
        let c = fit_audit(20, &rows);
        assert!(c.shown[4].1 >= 1);
    }

    #[test]
    fn table_columns_fit_and_the_widest_give_way_first() {
        let t: Vec<Vec<String>> = [
            ["ID", "SECRET", "EXPIRES"],
            ["1", "anthropic/staging-eu", "2026-01-01T00:00:00.000Z"],
        ]
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
        assert_eq!(fit_table(&t, 100), [2, 20, 24]);
        // Four columns short: the expiry gives them, the secret stays whole.
        assert_eq!(fit_table(&t, 44), [2, 20, 20]);
    }
}
