//! Masking the values a run resolved in its child's output, as a stream.
//!
//! Each value of at least [`MIN_LEN`] bytes, and the forms a program most often prints it in,
//! becomes `<scopehold:PROVIDER/NAME>`:
//! - the raw bytes;
//! - base64, standard and URL-safe alphabets: the value's own encoding (padded and not), and
//!   for a value embedded in a longer base64 string, the *stable core* at each of the three
//!   byte alignments (the characters that depend only on the value's bits, as CI log maskers
//!   do; the 1-2 edge characters shared with neighbouring bytes stay, and tell ~a byte);
//! - hex, lower and upper case;
//! - percent-encoding as the common encoders write it (RFC 3986 unreserved kept, as Python's
//!   `quote(safe='')` and Go; JavaScript's `encodeURIComponent` set; Python's default `quote`,
//!   which keeps `/`; HTML form encoding, which keeps `*`), each with upper- and lower-case
//!   hex and with a space as `%20` or `+`.
//!
//! Where patterns overlap, the longest match at the leftmost position wins (a value that
//! contains another is masked whole). A value split across writes is still caught: the
//! masker holds back only the longest tail of its input that is a proper prefix of some
//! pattern, and passes everything before it on at once, so ordinary output and prompts are
//! not delayed; at end of stream everything is flushed.
//!
//! This is a guard against accidents (a test runner echoing its environment, a debug log of
//! request headers), not against a child that means to leak: it can print the value reversed,
//! or in pieces far apart. The injecting proxy is the protection for that.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// Values shorter than this are not masked: a three-letter value would turn every word that
/// contains it into a mask and say which three letters it is anyway (GitHub's masker skips
/// them too). Provider API keys are tens of bytes.
pub const MIN_LEN: usize = 4;

/// The patterns of a run's values, shared by its output streams' maskers.
pub struct Patterns {
    ac: AhoCorasick,
    /// The pattern bytes (values and their encodings): wiped when the run ends. (The
    /// automaton's own tables cannot be; the run process is non-dumpable.)
    pats: Vec<Zeroizing<Vec<u8>>>,
    /// Pattern index -> its replacement.
    masks: Vec<Vec<u8>>,
    /// First byte -> the patterns starting with it, to find the held-back tail quickly.
    by_first: Vec<Vec<usize>>,
    max_len: usize,
    labels: Vec<String>,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns")
            .field("labels", &self.labels)
            .field("patterns", &self.pats.len())
            .finish_non_exhaustive()
    }
}

impl Patterns {
    /// The patterns for `(label, value)` pairs; `None` when no value is long enough to mask.
    pub fn new<'a>(values: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<Arc<Self>> {
        let mut pats: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut masks = Vec::new();
        let mut labels = Vec::new();
        for (label, value) in values {
            if value.len() < MIN_LEN {
                continue;
            }
            labels.push(label.to_string());
            let mask = format!("<scopehold:{label}>").into_bytes();
            for p in forms(value) {
                // The same bytes from two secrets: the first one's label.
                if p.len() >= MIN_LEN && !pats.iter().any(|q| **q == *p) {
                    pats.push(p);
                    masks.push(mask.clone());
                }
            }
        }
        if pats.is_empty() {
            return None;
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(pats.iter().map(|p| p.as_slice()))
            .expect("a few hundred short patterns fit the automaton's limits");
        let mut by_first = vec![Vec::new(); 256];
        for (i, p) in pats.iter().enumerate() {
            by_first[p[0] as usize].push(i);
        }
        let max_len = pats.iter().map(|p| p.len()).max().unwrap_or(0);
        Some(Arc::new(Self {
            ac,
            pats,
            masks,
            by_first,
            max_len,
            labels,
        }))
    }

    /// Where the longest tail of `buf` that is a proper prefix of some pattern starts
    /// (`buf.len()` when there is none): output from there on may yet become a match.
    fn held_from(&self, buf: &[u8]) -> usize {
        let n = buf.len();
        for k in (1..self.max_len.min(n + 1)).rev() {
            let tail = &buf[n - k..];
            if self.by_first[tail[0] as usize]
                .iter()
                .any(|&i| self.pats[i].len() > k && self.pats[i].starts_with(tail))
            {
                return n - k;
            }
        }
        n
    }
}

/// One output stream's masker: bytes in, masked bytes out.
pub struct Masker {
    patterns: Arc<Patterns>,
    /// The held-back tail: a prefix of some pattern, so possibly part of a value.
    held: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("patterns", &self.patterns)
            .field("held", &self.held.len())
            .finish()
    }
}

impl Masker {
    pub fn new(patterns: Arc<Patterns>) -> Self {
        Self {
            patterns,
            held: Zeroizing::new(Vec::new()),
        }
    }

    /// Masks what `input` completes and appends it to `out`; keeps back what may still
    /// become a match.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.held.extend_from_slice(input);
        let p = &self.patterns;
        let buf = &self.held[..];
        let h = p.held_from(buf);
        // A match starting before `h` is final: no pattern starting there can grow with more
        // input (the tail from there is no pattern's prefix), and nothing before it can start
        // a longer one.
        let mut pos = 0;
        for m in p.ac.find_iter(buf) {
            if m.start() >= h {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(&p.masks[m.pattern().as_usize()]);
            pos = m.end();
        }
        let keep = pos.max(h);
        out.extend_from_slice(&buf[pos..keep]);
        self.held.drain(..keep);
    }

    /// End of stream: masks and appends everything held.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let p = &self.patterns;
        let buf = &self.held[..];
        let mut pos = 0;
        for m in p.ac.find_iter(buf) {
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(&p.masks[m.pattern().as_usize()]);
            pos = m.end();
        }
        out.extend_from_slice(&buf[pos..]);
        self.held.clear();
    }
}

/// The value and its encodings (duplicates and forms equal to the raw value included; the
/// caller drops them).
fn forms(v: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out = vec![Zeroizing::new(v.to_vec())];
    for e in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(Zeroizing::new(e.encode(v).into_bytes()));
    }
    for e in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for align in 0..3 {
            let mut d = Zeroizing::new(vec![0u8; align]);
            d.extend_from_slice(v);
            let enc = Zeroizing::new(e.encode(&*d).into_bytes());
            // Character i carries bits 6i..6i+6 of the input; the value holds bits
            // 8*align..8*(align+len): the characters inside that range are the core.
            let start = (8 * align).div_ceil(6);
            let end = 8 * (align + v.len()) / 6;
            out.push(Zeroizing::new(enc[start..end].to_vec()));
        }
    }
    out.push(Zeroizing::new(hex::encode(v).into_bytes()));
    out.push(Zeroizing::new(hex::encode_upper(v).into_bytes()));
    let unreserved = |c: u8| c.is_ascii_alphanumeric() || b"-._~".contains(&c);
    let js_component = |c: u8| c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c);
    let python_quote = |c: u8| c.is_ascii_alphanumeric() || b"-._~/".contains(&c);
    let form = |c: u8| c.is_ascii_alphanumeric() || b"*-._".contains(&c);
    let sets: [&dyn Fn(u8) -> bool; 4] = [&unreserved, &js_component, &python_quote, &form];
    for keep in sets {
        for upper in [true, false] {
            for plus in [false, true] {
                out.push(percent(v, keep, upper, plus));
            }
        }
    }
    out
}

fn percent(v: &[u8], keep: &dyn Fn(u8) -> bool, upper: bool, plus: bool) -> Zeroizing<Vec<u8>> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() * 3));
    for &c in v {
        if keep(c) {
            out.push(c);
        } else if c == b' ' && plus {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', digits[(c >> 4) as usize], digits[(c & 15) as usize]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CANARY: &str = "sk-CANARY-mask 7f3/Q+z=Yw";

    fn masker(values: &[(&str, &str)]) -> Masker {
        Masker::new(Patterns::new(values.iter().map(|(l, v)| (*l, v.as_bytes()))).unwrap())
    }

    /// The whole input through one masker in the given pieces.
    fn run(m: &mut Masker, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            m.push(p, &mut out);
        }
        m.finish(&mut out);
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// Every form a test looks for, computed independently of `forms` (a simple base64
    /// encoder after a marker byte at each alignment, both partial edge groups dropped).
    fn leaked_forms(v: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![v.to_vec(), hex::encode(v).into_bytes()];
        for pad in 0..3 {
            let mut d = vec![b'#'; pad];
            d.extend_from_slice(v);
            for e in [&STANDARD, &URL_SAFE] {
                let s = e.encode(&d).into_bytes();
                out.push(s[4..s.len() - 4].to_vec());
            }
        }
        out
    }

    fn assert_clean(out: &[u8], v: &[u8]) {
        for f in leaked_forms(v) {
            assert!(
                !contains(out, &f),
                "output {:?} holds {:?}",
                String::from_utf8_lossy(out),
                String::from_utf8_lossy(&f)
            );
        }
    }

    #[test]
    fn every_split_point_of_every_form_is_masked() {
        let v = CANARY.as_bytes();
        let mut shown = vec![v.to_vec(), STANDARD.encode(v).into_bytes()];
        shown.push(URL_SAFE_NO_PAD.encode(v).into_bytes());
        shown.push(hex::encode_upper(v).into_bytes());
        let form = |c: u8| c.is_ascii_alphanumeric() || b"*-._".contains(&c);
        shown.push(percent(v, &form, false, true).to_vec());
        for form in shown {
            let mut text = b"before ".to_vec();
            text.extend_from_slice(&form);
            text.extend_from_slice(b" after\n");
            for i in 0..=text.len() {
                let mut m = masker(&[("openai/prod", CANARY)]);
                let mut first = Vec::new();
                m.push(&text[..i], &mut first);
                // Nothing of the value is let out before it is known not to be one.
                let pre = i.min(7);
                assert_eq!(
                    &first[..pre.min(first.len())],
                    &text[..pre.min(first.len())]
                );
                assert!(first.len() <= 7 || i >= 7 + form.len(), "split {i}");
                let mut out = first;
                m.push(&text[i..], &mut out);
                m.finish(&mut out);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    "before <scopehold:openai/prod> after\n",
                    "form {:?} split at {i}",
                    String::from_utf8_lossy(&form)
                );
            }
        }
    }

    #[test]
    fn ordinary_output_and_prompts_pass_at_once() {
        let mut m = masker(&[("openai/prod", CANARY)]);
        let mut out = Vec::new();
        m.push(b"Password: ", &mut out);
        assert_eq!(out, b"Password: ");
        out.clear();
        // A tail that could be the value's start is held, and only that.
        m.push(b"key is sk-CA", &mut out);
        assert_eq!(out, b"key is ");
        out.clear();
        m.push(b"T and more", &mut out);
        assert_eq!(out, b"sk-CAT and more");
        out.clear();
        m.push(b"sk-C", &mut out);
        m.finish(&mut out);
        assert_eq!(out, b"sk-C", "end of stream flushes what was held");
    }

    #[test]
    fn the_longest_match_wins_and_short_values_are_left_alone() {
        let mut m = masker(&[
            ("a/inner", "CDEFG"),
            ("a/outer", "abCDEFGhi"),
            ("a/short", "xyz"),
        ]);
        let out = run(&mut m, &[b"1 abCDEFGhi 2 CDEFG 3 xyz 4 abCDEF"]);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "1 <scopehold:a/outer> 2 <scopehold:a/inner> 3 xyz 4 abCDEF",
        );
        assert!(
            Patterns::new([("a/b", b"abc".as_slice())]).is_none(),
            "a value under MIN_LEN is not masked"
        );
    }

    #[test]
    fn base64_inside_a_longer_string_is_masked_at_every_alignment() {
        let v = CANARY.as_bytes();
        for pre in 0..4 {
            for post in 0..4 {
                let mut d = b"{\"k\":\""[..pre].to_vec();
                d.extend_from_slice(v);
                d.extend_from_slice(&b"\"}\n trailer"[..post * 2]);
                for e in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD] {
                    let enc = e.encode(&d);
                    let mut m = masker(&[("openai/prod", CANARY)]);
                    let out = run(&mut m, &[enc.as_bytes()]);
                    assert_clean(&out, v);
                    assert!(contains(&out, b"<scopehold:openai/prod>"), "{enc}");
                }
            }
        }
    }

    #[test]
    fn percent_encoded_forms_are_masked() {
        let v = CANARY.as_bytes();
        for s in [
            "sk-CANARY-mask%207f3%2FQ%2Bz%3DYw",
            "sk-CANARY-mask+7f3%2fQ%2bz%3dYw",
            "sk-CANARY-mask%207f3/Q%2Bz%3DYw",
        ] {
            let mut m = masker(&[("openai/prod", CANARY)]);
            let out = run(&mut m, &[b"GET /x?key=", s.as_bytes(), b"&y=1"]);
            assert_eq!(out, b"GET /x?key=<scopehold:openai/prod>&y=1", "{s}");
            assert_clean(&out, v);
        }
    }

    #[test]
    fn debug_shows_labels_never_values() {
        let mut m = masker(&[("openai/prod", CANARY)]);
        let mut out = Vec::new();
        m.push(b"sk-CANARY", &mut out);
        let d = format!("{m:?}");
        assert!(d.contains("openai/prod") && !d.contains("CANARY"), "{d}");
    }

    /// A piece of output: filler, or the value in one of its forms.
    #[derive(Debug, Clone)]
    enum Piece {
        Text(Vec<u8>),
        Raw,
        /// Base64 (standard or URL-safe) of the value between `pre` and `post` other bytes.
        Base64 {
            pre: Vec<u8>,
            post: Vec<u8>,
            url: bool,
        },
        Percent {
            upper: bool,
            plus: bool,
        },
    }

    fn piece() -> impl Strategy<Value = Piece> {
        let text = proptest::collection::vec(
            proptest::sample::select(b" \n\t,;:#@!?<>[]{}\x1b".to_vec()),
            0..40,
        );
        let bytes = proptest::collection::vec(any::<u8>(), 0..5);
        prop_oneof![
            3 => text.prop_map(Piece::Text),
            1 => Just(Piece::Raw),
            1 => (bytes.clone(), bytes, any::<bool>()).prop_map(|(pre, post, url)| Piece::Base64 { pre, post, url }),
            1 => (any::<bool>(), any::<bool>()).prop_map(|(upper, plus)| Piece::Percent { upper, plus }),
        ]
    }

    proptest! {
        #[test]
        fn random_splits_never_let_the_value_out_and_keep_other_text(
            value in "[A-Za-z0-9_/+= -]{8,40}",
            pieces in proptest::collection::vec(piece(), 1..8),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let v = value.as_bytes();
            let mut text = Vec::new();
            let mut expected_exact = true;
            let mut expected = Vec::new();
            let mask = b"<scopehold:openai/prod>";
            for p in &pieces {
                match p {
                    Piece::Text(t) => {
                        text.extend_from_slice(t);
                        expected.extend_from_slice(t);
                    }
                    Piece::Raw => {
                        text.extend_from_slice(v);
                        expected.extend_from_slice(mask);
                    }
                    Piece::Base64 { pre, post, url } => {
                        let mut d = pre.clone();
                        d.extend_from_slice(v);
                        d.extend_from_slice(post);
                        let e = if *url { URL_SAFE.encode(&d) } else { STANDARD.encode(&d) };
                        text.extend_from_slice(e.as_bytes());
                        expected_exact = false;
                    }
                    Piece::Percent { upper, plus } => {
                        text.extend_from_slice(&percent(v, &|c: u8| c.is_ascii_alphanumeric() || b"-._~".contains(&c), *upper, *plus));
                        expected.extend_from_slice(mask);
                    }
                }
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(text.len() + 1)).collect();
            points.sort_unstable();
            let mut m = masker(&[("openai/prod", &value)]);
            let mut out = Vec::new();
            let mut at = 0;
            for p in points {
                m.push(&text[at..p], &mut out);
                at = p;
            }
            m.push(&text[at..], &mut out);
            m.finish(&mut out);
            assert_clean(&out, v);
            if expected_exact {
                prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
            } else {
                // The filler is all there, in order.
                let mut rest = &out[..];
                for p in &pieces {
                    if let Piece::Text(t) = p
                        && !t.is_empty()
                    {
                        let i = rest.windows(t.len()).position(|w| w == &t[..]);
                        prop_assert!(i.is_some(), "filler {:?} lost", t);
                        rest = &rest[i.unwrap_or(0) + t.len()..];
                    }
                }
            }
        }
    }
}
