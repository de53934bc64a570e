//! Drawing. Reads the state and the source; changes nothing but the table geometry it
//! remembers for mouse clicks.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TRow, Table, Wrap};

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
        View::Audit => {
            let [left, right] =
                Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)])
                    .areas(main);
            let geo = draw_audit(f, left, app, src, theme);
            draw_detail(f, right, app, src, theme);
            geo
        }
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
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_audit(
    f: &mut Frame,
    area: Rect,
    app: &mut App,
    src: &mut LogSource,
    theme: Theme,
) -> Geometry {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" Audit ({} events) ", app.rows()))
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
    let mut rows = Vec::new();
    for i in offset..(offset + visible).min(app.rows()) {
        let seq = match &app.filtered {
            Some(v) => v[i as usize],
            None => app.first + i,
        };
        let r = match src.row(seq) {
            Ok(r) => r,
            Err(e) => {
                rows.push(
                    TRow::new(vec![
                        Cell::from(seq.to_string()),
                        Cell::from(format!("unreadable: {e}")),
                    ])
                    .style(theme.bad()),
                );
                continue;
            }
        };
        let s = &r.summary;
        let mut row = TRow::new(vec![
            Cell::from(r.seq.to_string()),
            Cell::from(time_str(r.time_ms)),
            Cell::from(s.identity.clone()),
            Cell::from(s.kind.clone()),
            Cell::from(s.secret.clone()),
            Cell::from(s.project.clone()),
            Cell::from(s.outcome.clone()),
        ]);
        if i == sel {
            row = row.style(theme.selected());
        } else if s.denied {
            row = row.style(theme.fg(Color::Red));
        }
        rows.push(row);
    }
    let header = TRow::new([
        "SEQ", "TIME", "IDENTITY", "KIND", "SECRET", "PROJECT", "OUTCOME",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(7),
        Constraint::Length(19),
        Constraint::Fill(3),
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Fill(1),
        Constraint::Fill(3),
    ];
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

fn draw_detail(f: &mut Frame, area: Rect, app: &App, src: &mut LogSource, theme: Theme) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" Detail ")
        .border_style(if app.pane == Pane::Detail {
            theme.fg(Color::Cyan)
        } else {
            Style::default()
        });
    let Some(seq) = app.selected_seq() else {
        f.render_widget(Paragraph::new("no event selected").block(block), area);
        return;
    };
    let mut lines: Vec<Line> = Vec::new();
    let kv = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(
                format!("{k:<10}"),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(v),
        ])
    };
    match src.row(seq) {
        Ok(r) => {
            let s = &r.summary;
            lines.push(kv("event", r.seq.to_string()));
            lines.push(kv("time", format!("{} UTC", time_str(r.time_ms))));
            lines.push(kv("kind", s.kind.clone()));
            if !s.identity.is_empty() {
                lines.push(kv("identity", s.identity.clone()));
            }
            if !s.secret.is_empty() {
                lines.push(kv("secret", s.secret.clone()));
            }
            if !s.project.is_empty() {
                lines.push(kv("project", s.project.clone()));
            }
            if !s.outcome.is_empty() {
                lines.push(kv("outcome", s.outcome.clone()));
            }
            for (k, v) in &s.fields {
                lines.push(kv(k, v.clone()));
            }
            if r.secret_bearing {
                lines.push(kv(
                    "body",
                    "secret-bearing: withheld (salted commitment only)".into(),
                ));
            }
            lines.push(Line::raw(""));
            lines.push(kv("hash", hex::encode(r.hash)));
            lines.push(kv("prev", hex::encode(r.prev)));
            match src.checkpoint_covering(seq) {
                Some(cp) => {
                    lines.push(kv(
                        "signed by",
                        format!("checkpoint of size {}", cp.body.size),
                    ));
                    lines.push(kv("  head", short(&cp.body.head)));
                    lines.push(kv("  time", time_str(cp.body.time_ms)));
                    lines.push(kv("  sig", hex::encode(&cp.signature[..16])));
                }
                None => lines.push(Line::styled("no checkpoint covers it yet", theme.bad())),
            }
        }
        Err(e) => lines.push(Line::styled(format!("unreadable: {e}"), theme.bad())),
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block),
        area,
    );
}

fn draw_table(
    f: &mut Frame,
    area: Rect,
    app: &mut App,
    table: Option<&Vec<Vec<String>>>,
    theme: Theme,
) -> Geometry {
    let title = format!(" {} ", app.view.title());
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
    let cols = table[0].len();
    let widths = vec![Constraint::Fill(1); cols];
    let rows: Vec<TRow> = table[1..]
        .iter()
        .enumerate()
        .skip(offset as usize)
        .take(visible as usize)
        .map(|(i, r)| {
            let row = TRow::new(r.iter().map(|c| Cell::from(c.clone())));
            if i as u64 == sel {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let header = TRow::new(table[0].iter().map(|c| Cell::from(c.clone())))
        .style(Style::default().add_modifier(Modifier::BOLD));
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
    let line = Line::from(vec![
        verified,
        Span::raw(format!(
            " | checkpoint: size {} at {} | {} events | ? help",
            cp.body.size,
            time_str(cp.body.time_ms),
            src.len()
        )),
    ]);
    f.render_widget(Paragraph::new(line), area);
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
            "The detail pane shows the event's hash, the previous hash it",
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
