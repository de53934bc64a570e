//! Text output shared by the commands and the console glue.

/// A time (ms since the epoch) as RFC 3339 with milliseconds.
pub fn time_str(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// An optional value, or `-`.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |x| x.to_string())
}

/// Items joined with commas.
pub fn joined<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `revoked` or `active`.
pub fn state(revoked: bool) -> String {
    if revoked { "revoked" } else { "active" }.into()
}

/// Rows as a table: columns padded to their widest cell, two spaces apart.
pub fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, |r| r.len()))
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A header row from static strings.
pub fn header(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| c.to_string()).collect()
}

/// One proxied call's outcome, as the log listing and the console show it.
pub fn proxy_outcome(r: &crate::domain::ProxyResult) -> String {
    format!(
        "{} {}B up {}B down {}us{}",
        r.status,
        r.bytes_up,
        r.bytes_down,
        r.duration_us,
        r.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

/// `v3 current, v2 grace until T, 1 retired`: a secret's versions, newest first, as the
/// secret list and the console's Secrets view show them.
pub fn versions_text(states: &[(u32, crate::domain::VersionState)]) -> String {
    use crate::domain::VersionState;
    let mut parts: Vec<String> = states
        .iter()
        .rev()
        .filter_map(|(v, st)| match st {
            VersionState::Current => Some(format!("v{v} current")),
            VersionState::Grace { until_ms } => {
                Some(format!("v{v} grace until {}", time_str(*until_ms)))
            }
            VersionState::Retired => None,
        })
        .collect();
    let retired = states
        .iter()
        .filter(|(_, st)| *st == VersionState::Retired)
        .count();
    if retired > 0 {
        parts.push(format!("{retired} retired"));
    }
    parts.join(", ")
}
