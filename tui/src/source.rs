//! Where the audit view's rows come from: the log, read lazily through its index (only the
//! rows on screen are read), decoded by a function the caller supplies (the console knows the
//! log, not the domain).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use scopehold_log::{BodyClass, BundleContents, LogReader, SignedCheckpoint};

/// What the domain says about one event, for the table and the detail pane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub kind: String,
    /// Who did it (`member:root`, `agent:bot`, `uid 1000`; `—` when the event does not say).
    pub actor: String,
    /// What it was done to (`agent:bot, openai/prod in demo`, `openai/prod in demo`).
    pub subject: String,
    /// e.g. `granted v2`, `DENIED (grant expired)`.
    pub outcome: String,
    pub denied: bool,
    /// Every field of the event by name, for the detail pane (never secret material: the
    /// decoder shows a sealed value or a credential hash as a placeholder). `uid` and `pid`,
    /// when present, also get columns of their own on wide screens.
    pub fields: Vec<(String, String)>,
    /// The fields that actor, subject and outcome do not say, as `name=value` words: the
    /// widest table's last column.
    pub details: String,
    /// For filters: the identity the event is about or by, its secret and its project(s).
    pub identity: String,
    pub secret: String,
    pub project: String,
}

impl Summary {
    /// The value of field `name`, if the event has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes an event from its kind tag and its body, when the record holds one (an exported
/// bundle leaves secret-bearing bodies out). A decoder is handed secret-bearing bodies so
/// that it can say who did what (a reissued credential, a sealed version); it must put no
/// secret material in the summary.
pub type Decoder = Arc<dyn Fn(u16, Option<&[u8]>) -> Summary + Send + Sync>;

/// One event as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub seq: u64,
    pub time_ms: u64,
    pub hash: [u8; 32],
    pub prev: [u8; 32],
    pub secret_bearing: bool,
    /// Whether the body was there to decode (bundles leave secret-bearing bodies out).
    pub body_present: bool,
    pub summary: Summary,
}

enum Inner {
    /// A log directory, read lazily through its index.
    Log(PathBuf, Box<LogReader>),
    /// An exported bundle, verified when opened, held in memory (read-only auditor mode).
    Bundle(Arc<BundleContents>),
    /// Pages of a daemon's log fetched through its socket (the console on another host),
    /// each verified as it arrived and continuing the one before it.
    Pages(Vec<Arc<BundleContents>>),
}

/// What a background scan reads: the log directory again, or the bundle in memory.
#[derive(Clone, Debug)]
pub enum ScanTarget {
    Dir(PathBuf),
    Bundle(Arc<BundleContents>),
    Pages(Vec<Arc<BundleContents>>),
}

impl ScanTarget {
    /// Calls `f(record)` for committed events `from..size` in order, until it returns false.
    pub fn scan(&self, from: u64, size: u64, f: &mut dyn FnMut(&scopehold_log::Record) -> bool) {
        match self {
            ScanTarget::Dir(dir) => {
                let Ok(r) = LogReader::open(dir, None) else {
                    return;
                };
                let Ok(it) = r.events_from(from) else { return };
                for rec in it {
                    let Ok(rec) = rec else { return };
                    if rec.seq() >= size || !f(&rec) {
                        return;
                    }
                }
            }
            ScanTarget::Bundle(b) => {
                for rec in b
                    .records
                    .iter()
                    .filter(|r| r.seq() >= from && r.seq() < size)
                {
                    if !f(rec) {
                        return;
                    }
                }
            }
            ScanTarget::Pages(pages) => {
                for rec in pages
                    .iter()
                    .flat_map(|p| p.records.iter())
                    .filter(|r| r.seq() >= from && r.seq() < size)
                {
                    if !f(rec) {
                        return;
                    }
                }
            }
        }
    }
}

/// The audit trail as a lazily read table.
pub struct LogSource {
    inner: Inner,
    decoder: Decoder,
    cache: HashMap<u64, Row>,
}

impl std::fmt::Debug for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSource")
            .field("first", &self.first())
            .field("size", &self.len())
            .finish()
    }
}

const CACHE_ROWS: usize = 4096;

/// Decodes one record with `decoder`. Secret-bearing bodies are passed too (see [`Decoder`]).
pub fn decode(decoder: &Decoder, rec: &scopehold_log::Record) -> Summary {
    decoder(rec.envelope.kind, rec.body.as_ref().map(|b| &b.bytes[..]))
}

impl LogSource {
    pub fn open(dir: &Path, decoder: Decoder) -> Result<Self, String> {
        let reader = LogReader::open(dir, None).map_err(|e| e.to_string())?;
        Ok(Self {
            inner: Inner::Log(dir.to_path_buf(), Box::new(reader)),
            decoder,
            cache: HashMap::new(),
        })
    }

    /// A bundle already verified (see `scopehold_log::read_bundle`).
    pub fn bundle(contents: Arc<BundleContents>, decoder: Decoder) -> Self {
        Self {
            inner: Inner::Bundle(contents),
            decoder,
            cache: HashMap::new(),
        }
    }

    /// Pages of a log, the first from event 0 (see [`Self::extend`]).
    pub fn pages(first: Arc<BundleContents>, decoder: Decoder) -> Result<Self, String> {
        if first.header.from != 0 {
            return Err(format!(
                "the log's first page starts at event {}",
                first.header.from
            ));
        }
        Ok(Self {
            inner: Inner::Pages(vec![first]),
            decoder,
            cache: HashMap::new(),
        })
    }

    /// Adds the next page of a log fetched by pages: it must start where the last one ended,
    /// with an event whose previous hash is the last one's (the chain goes on across pages;
    /// each page's own chain and checkpoints were verified when it was read).
    pub fn extend(&mut self, page: Arc<BundleContents>) -> Result<(), String> {
        let Inner::Pages(pages) = &mut self.inner else {
            return Err("not a log read by pages".into());
        };
        let last = pages.last().expect("a first page");
        let end = last.header.from + last.records.len() as u64;
        if page.header.log_id != last.header.log_id {
            return Err("a page of another log".into());
        }
        if page.header.from != end {
            return Err(format!(
                "a page from event {} where event {end} was next",
                page.header.from
            ));
        }
        let (Some(before), Some(next)) = (last.records.last(), page.records.first()) else {
            return Err("an empty page".into());
        };
        if next.envelope.prev != before.hash {
            return Err(format!(
                "event {end} does not continue the chain of the events before it (another history)"
            ));
        }
        pages.push(page);
        Ok(())
    }

    pub fn scan_target(&self) -> ScanTarget {
        match &self.inner {
            Inner::Log(dir, _) => ScanTarget::Dir(dir.clone()),
            Inner::Bundle(b) => ScanTarget::Bundle(b.clone()),
            Inner::Pages(p) => ScanTarget::Pages(p.clone()),
        }
    }
    pub fn decoder(&self) -> Decoder {
        self.decoder.clone()
    }
    /// First event shown (bundles may start after 0).
    pub fn first(&self) -> u64 {
        match &self.inner {
            Inner::Log(..) | Inner::Pages(_) => 0,
            Inner::Bundle(b) => b.header.from,
        }
    }
    /// Number of events shown.
    pub fn len(&self) -> u64 {
        match &self.inner {
            Inner::Log(_, r) => r.size(),
            Inner::Bundle(b) => b.records.len() as u64,
            Inner::Pages(p) => p.iter().map(|b| b.records.len() as u64).sum(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One past the last sequence number.
    pub fn end(&self) -> u64 {
        self.first() + self.len()
    }
    pub fn checkpoint(&self) -> SignedCheckpoint {
        match &self.inner {
            Inner::Log(_, r) => *r.checkpoint(),
            Inner::Bundle(b) => *b.report.checkpoint.checkpoint(),
            Inner::Pages(p) => *p
                .last()
                .expect("a first page")
                .report
                .checkpoint
                .checkpoint(),
        }
    }

    /// Picks up newly committed events. Returns whether the log grew.
    pub fn refresh(&mut self) -> bool {
        match &mut self.inner {
            Inner::Log(_, r) => r.refresh().unwrap_or(false),
            // Pages come by `extend`.
            Inner::Bundle(_) | Inner::Pages(_) => false,
        }
    }

    pub fn row(&mut self, seq: u64) -> Result<Row, String> {
        if let Some(r) = self.cache.get(&seq) {
            return Ok(r.clone());
        }
        let owned;
        let rec = match &self.inner {
            Inner::Log(_, r) => {
                owned = r.get(seq).map_err(|e| e.to_string())?;
                &owned
            }
            Inner::Bundle(b) => seq
                .checked_sub(b.header.from)
                .and_then(|i| b.records.get(i as usize))
                .ok_or_else(|| format!("event {seq} is not in the bundle"))?,
            Inner::Pages(p) => {
                let i = p.partition_point(|b| b.header.from <= seq);
                i.checked_sub(1)
                    .and_then(|i| p[i].records.get((seq - p[i].header.from) as usize))
                    .ok_or_else(|| format!("event {seq} has not been fetched"))?
            }
        };
        let row = Row {
            seq,
            time_ms: rec.envelope.time_ms,
            hash: rec.hash,
            prev: rec.envelope.prev,
            secret_bearing: rec.class() == BodyClass::Secret,
            body_present: rec.body.is_some(),
            summary: decode(&self.decoder, rec),
        };
        if self.cache.len() >= CACHE_ROWS {
            self.cache.clear();
        }
        self.cache.insert(seq, row.clone());
        Ok(row)
    }

    /// The checkpoint that signs event `seq`.
    pub fn checkpoint_covering(&self, seq: u64) -> Option<SignedCheckpoint> {
        match &self.inner {
            Inner::Log(_, r) => r.checkpoint_covering(seq).ok(),
            Inner::Bundle(b) => b.checkpoints.iter().find(|c| c.body.size > seq).copied(),
            Inner::Pages(p) => p
                .iter()
                .flat_map(|b| b.checkpoints.iter())
                .find(|c| c.body.size > seq)
                .copied(),
        }
    }
}
