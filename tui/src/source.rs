//! Where the audit view's rows come from: the log, read lazily through its index (only the
//! rows on screen are read), decoded by a function the caller supplies (the console knows the
//! log, not the domain).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use scopehold_log::{BodyClass, LogReader, SignedCheckpoint};

/// What the domain says about one event, for the table and the detail pane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub kind: String,
    pub identity: String,
    pub secret: String,
    pub project: String,
    /// e.g. `granted v2`, `DENIED (grant expired)`.
    pub outcome: String,
    pub denied: bool,
    /// Further fields for the detail pane (never secret values: secret-bearing bodies are not
    /// handed to the decoder).
    pub fields: Vec<(String, String)>,
}

/// Decodes an event from its kind tag and, for public events, its body.
pub type Decoder = Arc<dyn Fn(u16, Option<&[u8]>) -> Summary + Send + Sync>;

/// One event as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub seq: u64,
    pub time_ms: u64,
    pub hash: [u8; 32],
    pub prev: [u8; 32],
    pub secret_bearing: bool,
    pub summary: Summary,
}

/// The log as a lazily read table.
pub struct LogSource {
    dir: PathBuf,
    reader: LogReader,
    decoder: Decoder,
    cache: HashMap<u64, Row>,
}

impl std::fmt::Debug for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSource")
            .field("dir", &self.dir)
            .field("size", &self.reader.size())
            .finish()
    }
}

const CACHE_ROWS: usize = 4096;

/// Decodes one record with `decoder`, never passing it a secret-bearing body.
pub fn decode(decoder: &Decoder, rec: &scopehold_log::Record) -> Summary {
    let body = match (rec.class(), &rec.body) {
        (BodyClass::Public, Some(b)) => Some(&b.bytes[..]),
        _ => None,
    };
    decoder(rec.envelope.kind, body)
}

impl LogSource {
    pub fn open(dir: &Path, decoder: Decoder) -> Result<Self, String> {
        let reader = LogReader::open(dir, None).map_err(|e| e.to_string())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            reader,
            decoder,
            cache: HashMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn decoder(&self) -> Decoder {
        self.decoder.clone()
    }
    pub fn len(&self) -> u64 {
        self.reader.size()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn checkpoint(&self) -> SignedCheckpoint {
        *self.reader.checkpoint()
    }

    /// Picks up newly committed events. Returns whether the log grew.
    pub fn refresh(&mut self) -> bool {
        self.reader.refresh().unwrap_or(false)
    }

    pub fn row(&mut self, seq: u64) -> Result<Row, String> {
        if let Some(r) = self.cache.get(&seq) {
            return Ok(r.clone());
        }
        let rec = self.reader.get(seq).map_err(|e| e.to_string())?;
        let row = Row {
            seq,
            time_ms: rec.envelope.time_ms,
            hash: rec.hash,
            prev: rec.envelope.prev,
            secret_bearing: rec.class() == BodyClass::Secret,
            summary: decode(&self.decoder, &rec),
        };
        if self.cache.len() >= CACHE_ROWS {
            self.cache.clear();
        }
        self.cache.insert(seq, row.clone());
        Ok(row)
    }

    /// The checkpoint that signs event `seq`.
    pub fn checkpoint_covering(&self, seq: u64) -> Option<SignedCheckpoint> {
        self.reader.checkpoint_covering(seq).ok()
    }
}
