//! A careful `.env` parser for `secret import`. The file holds secrets, so nothing here ever
//! puts a value, or any part of a line that failed to parse, into an error: errors name the
//! line number and what was expected, nothing else. Values live in zeroizing buffers.
//!
//! Accepted, one assignment per line:
//!
//! ```text
//! # a comment               blank lines and comment lines are skipped
//! KEY=value                 unquoted: up to the end of the line or a ` #` comment, trimmed
//! export KEY=value          `export ` is allowed and ignored
//! KEY = value               spaces around `=` are allowed
//! KEY='value'               single quotes: literal, no escapes; may span lines
//! KEY="va\"lue\n"           double quotes: \\ \" \n \r \t \$ are escapes, any other \x is
//!                           kept as is; may span lines
//! KEY=                      an empty value (reported, never stored)
//! ```
//!
//! After a closing quote only spaces and a `#` comment may follow. `KEY` is
//! `[A-Za-z_][A-Za-z0-9_]*`. `${VAR}` is not expanded (kept as written). A variable set twice
//! is an error, not "last one wins": an import must be unambiguous.

use zeroize::Zeroizing;

/// One assignment: the variable, its line, its value.
pub struct Var {
    /// The variable's name (names are not secrets).
    pub name: String,
    /// The line the assignment starts on (1-based).
    pub line: usize,
    /// The value, zeroized on drop.
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Var {{ name: {:?}, line: {}, value: .. }}",
            self.name, self.line
        )
    }
}

/// Why a file did not parse: a line number and what was wrong, never the line's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what} (the line is not shown: it may hold a value)")]
pub struct ParseError {
    /// The line (1-based).
    pub line: usize,
    /// What was expected.
    pub what: &'static str,
}

fn err(line: usize, what: &'static str) -> ParseError {
    ParseError { line, what }
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Only spaces, or spaces then a `#` comment.
fn rest_is_blank_or_comment(rest: &str) -> bool {
    let t = rest.trim_start_matches([' ', '\t']);
    t.is_empty() || t.starts_with('#')
}

/// Parses the whole file. `text` must be UTF-8 (checked by the caller, which names the line).
pub fn parse(text: &str) -> Result<Vec<Var>, ParseError> {
    // Lines with their numbers; a `\r` before the `\n` is dropped.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut out: Vec<Var> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let n = i + 1;
        let line = lines[i].trim_start_matches([' ', '\t']);
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(r) if r.starts_with([' ', '\t']) => r.trim_start_matches([' ', '\t']),
            _ => line,
        };
        let Some((key, rest)) = line.split_once('=') else {
            return Err(err(n, "expected KEY=value"));
        };
        let key = key.trim_end_matches([' ', '\t']);
        if !is_name(key) {
            return Err(err(
                n,
                "the variable name must be letters, digits and '_', not starting with a digit",
            ));
        }
        if out.iter().any(|v| v.name == key) {
            return Err(err(n, "this variable is set a second time"));
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let mut value = Zeroizing::new(String::new());
        match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // The quoted value runs to the matching quote, across lines if need be.
                let mut cur: &str = &rest[1..];
                let mut closed = None;
                loop {
                    let mut escaped_newline = false;
                    let mut chars = cur.char_indices();
                    while let Some((j, c)) = chars.next() {
                        if c == q {
                            closed = Some(j);
                            break;
                        }
                        if q == '"' && c == '\\' {
                            match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, 'r')) => value.push('\r'),
                                Some((_, 't')) => value.push('\t'),
                                Some((_, e @ ('\\' | '"' | '$'))) => value.push(e),
                                Some((_, other)) => {
                                    value.push('\\');
                                    value.push(other);
                                }
                                // A backslash at the end of a line: the newline is escaped.
                                None => escaped_newline = true,
                            }
                            continue;
                        }
                        value.push(c);
                    }
                    if let Some(j) = closed {
                        if !rest_is_blank_or_comment(&cur[j + 1..]) {
                            return Err(err(i, "only a comment may follow the closing quote"));
                        }
                        break;
                    }
                    if i >= lines.len() {
                        return Err(err(n, "the quote opened on this line is never closed"));
                    }
                    // The value goes on: the line break is part of it (unless escaped).
                    if !escaped_newline {
                        value.push('\n');
                    }
                    cur = lines[i];
                    i += 1;
                }
            }
            _ => {
                // Unquoted: a `#` starts a comment only after a space (`a#b` is a value).
                let b = rest.as_bytes();
                let end = (0..b.len())
                    .find(|&j| b[j] == b'#' && (j == 0 || matches!(b[j - 1], b' ' | b'\t')))
                    .unwrap_or(b.len());
                value.push_str(rest[..end].trim_end_matches([' ', '\t']));
            }
        }
        out.push(Var {
            name: key.to_string(),
            line: n,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(text: &str) -> Vec<(String, usize, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.line, v.value.to_string()))
            .collect()
    }

    #[test]
    fn every_accepted_form() {
        let t = "# comment\n\n  \nA=plain\nexport B=two words  # note\nC = 'single #not a comment \\n'\nD=\"x\\\"y\\n\\tz\\$\\q\" # c\nE=\nF=a#b\nexportG=1\nH='multi\nline'\nI=\"one\\\ntwo\"\r\nJ=${A}\n";
        let v = vals(t);
        let want = [
            ("A", 4, "plain"),
            ("B", 5, "two words"),
            ("C", 6, "single #not a comment \\n"),
            ("D", 7, "x\"y\n\tz$\\q"),
            ("E", 8, ""),
            ("F", 9, "a#b"),
            ("exportG", 10, "1"),
            ("H", 11, "multi\nline"),
            ("I", 13, "onetwo"),
            ("J", 15, "${A}"),
        ];
        assert_eq!(v.len(), want.len(), "{v:?}");
        for (got, (n, l, val)) in v.iter().zip(want) {
            assert_eq!((got.0.as_str(), got.1, got.2.as_str()), (n, l, val));
        }
    }

    #[test]
    fn errors_name_the_line_and_never_the_content() {
        let secret = "sk-CANARY-parse-77";
        for (text, line) in [
            (format!("A=1\n{secret}\n"), 2),
            (format!("A=1\n\n9X={secret}\n"), 3),
            (format!("A='{secret}\nB=2\n"), 1),
            (format!("A=\"{secret}\" trailing{secret}\n"), 1),
            (format!("A={secret}\nA={secret}\n"), 2),
            (format!("A=\"{secret}"), 1),
            (format!("A='{secret}' x\n"), 1),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("CANARY"), "{shown}");
        }
        let v = parse(&format!("K={secret}")).unwrap();
        assert!(!format!("{v:?}").contains("CANARY"));
    }
}
