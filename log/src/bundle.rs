//! Export bundles: one self-contained file an auditor verifies with the log's public key
//! alone. Layout: a header (log identity, public key, the range `from..=to`), then the
//! range's frames as they are in the log (events and the checkpoints between them) with
//! secret-bearing bodies left out, ending with the signed checkpoint of the last event.
//! Because only commitments are chained, leaving bodies out changes no hash or signature.

use std::io::Write;
use std::path::Path;

use crate::checkpoint::SignedCheckpoint;
use crate::codec::{self, BUNDLE_HEADER_LEN, BodyClass, BundleHeader, Frame};
use crate::error::{FrameError, LogError};
use crate::keys::PublicKey;
use crate::reader::{Item, LogReader, Record};
use crate::verify::{Chain, Failure, VerifyError, VerifyOptions, VerifyReport};

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// First event included.
    pub from: u64,
    /// Last event included. Checkpoints are signed per group commit, so a requested end
    /// inside a batch is extended to the batch's end, where its checkpoint is.
    pub to: u64,
    /// The end the caller asked for (or the last committed event).
    pub requested_to: u64,
    /// Events written.
    pub events: u64,
    /// Secret-bearing events whose bodies were left out.
    pub redacted: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

/// The real end of an export of `from..=to`: checks the range against the committed events
/// and extends `to` to the end of its batch, where the checkpoint that signs it is.
/// Returns `(to, requested_to)`.
pub fn export_range(
    reader: &LogReader,
    from: u64,
    to: Option<u64>,
) -> Result<(u64, u64), LogError> {
    let size = reader.size();
    if size == 0 {
        return Err(LogError::Invalid(
            "the log holds no events to export".into(),
        ));
    }
    let requested_to = to.unwrap_or(size - 1);
    if from > requested_to || requested_to >= size {
        return Err(LogError::Invalid(format!(
            "range {from}..={requested_to} is not within the log's committed events 0..={}",
            size - 1
        )));
    }
    Ok((
        reader.checkpoint_covering(requested_to)?.body.size - 1,
        requested_to,
    ))
}

/// The range an export covers and the frames in it, shared by every export format: checks
/// `from..=to` against the committed events, extends `to` to the end of its batch (where the
/// checkpoint that signs it is), and calls `each` for every event in the range and every
/// checkpoint after `from`, in log order (the checkpoint copies that open segments skipped).
/// A secret-bearing body is never handed out: `each` gets the record with its body removed.
pub fn export_items(
    reader: &LogReader,
    from: u64,
    to: Option<u64>,
    each: &mut dyn FnMut(&Item) -> std::io::Result<()>,
) -> Result<ExportSummary, LogError> {
    let (to, requested_to) = export_range(reader, from, to)?;
    let mut s = ExportSummary {
        from,
        to,
        requested_to,
        events: 0,
        redacted: 0,
        checkpoints: 0,
    };
    let mut last_cp_size = from;
    let io = |e| LogError::io("writing the export", e);
    for item in reader.iter_from(from)? {
        match item? {
            Item::Event(mut r) => {
                if r.seq() > to {
                    break;
                }
                if r.class() != BodyClass::Public {
                    r.body = None;
                    s.redacted += 1;
                }
                s.events += 1;
                each(&Item::Event(r)).map_err(io)?;
            }
            Item::Checkpoint(cp) => {
                // Skip the copies that open each segment (same size as the one before).
                if cp.body.size <= last_cp_size {
                    continue;
                }
                last_cp_size = cp.body.size;
                s.checkpoints += 1;
                each(&Item::Checkpoint(cp)).map_err(io)?;
                if cp.body.size > to {
                    break;
                }
            }
        }
    }
    if last_cp_size != to + 1 {
        return Err(LogError::Invalid(format!(
            "no checkpoint found at the end of event {to}"
        )));
    }
    Ok(s)
}

/// Writes the bundle for events `from..=to` (default: the whole committed log) to `out`.
pub fn export(
    reader: &LogReader,
    public_key: &PublicKey,
    from: u64,
    to: Option<u64>,
    out: &mut impl Write,
) -> Result<ExportSummary, LogError> {
    let mut body = Vec::new();
    let s = export_items(reader, from, to, &mut |item| {
        match item {
            Item::Event(r) => codec::put_event_frame(
                &mut body,
                &r.envelope_bytes,
                r.body.as_ref().map(|b| (&b.salt[..], &b.bytes[..])),
            ),
            Item::Checkpoint(cp) => {
                codec::put_checkpoint_frame(&mut body, &cp.body.encode(), &cp.signature)
            }
        }
        Ok(())
    })?;
    let (from, to) = (s.from, s.to);
    let header = codec::encode_bundle_header(&BundleHeader {
        log_id: reader.log_id(),
        public_key: *public_key.as_bytes(),
        from,
        to,
    });
    out.write_all(&header)
        .and_then(|_| out.write_all(&body))
        .and_then(|_| out.flush())
        .map_err(|e| LogError::io("writing the bundle", e))?;
    Ok(s)
}

/// Writes a bundle to `path` (a temporary file renamed into place, so a failed export leaves
/// no partial bundle).
pub fn export_to_file(
    reader: &LogReader,
    public_key: &PublicKey,
    from: u64,
    to: Option<u64>,
    path: &Path,
) -> Result<ExportSummary, LogError> {
    let tmp = path.with_extension("partial");
    // A new file, never an existing one: `create_new` (O_EXCL) fails on anything already at
    // that name, a symlink planted there included, so the bundle cannot be written through
    // it; the rename then replaces whatever is at `path` itself rather than following it.
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| LogError::io(format!("creating {}", tmp.display()), e))?,
    );
    let r = export(reader, public_key, from, to, &mut f).and_then(|s| {
        f.into_inner()
            .map_err(|e| LogError::io("writing the bundle", e.into_error()))?
            .sync_all()
            .map_err(|e| LogError::io("syncing the bundle", e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| LogError::io(format!("renaming to {}", path.display()), e))?;
        Ok(s)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Verifies a bundle with nothing but the log's public key.
pub fn verify_bundle(
    bytes: &[u8],
    key: &PublicKey,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let err = |seq, loc: Option<String>, f| VerifyError {
        seq,
        location: loc,
        failure: f,
    };
    let h = codec::decode_bundle_header(bytes).map_err(|e| {
        err(
            None,
            Some("bundle@0".into()),
            Failure::Structure(format!("bundle header: {e}")),
        )
    })?;
    if h.public_key != *key.as_bytes() {
        return Err(err(None, Some("bundle@0".into()), Failure::WrongKey));
    }
    if h.to < h.from {
        return Err(err(
            None,
            Some("bundle@0".into()),
            Failure::Structure("empty range".into()),
        ));
    }
    let mut chain = Chain::new(key, opts, h.log_id, h.from, true)?;
    if let Some((off, e)) =
        chain.frames(&bytes[BUNDLE_HEADER_LEN..], BUNDLE_HEADER_LEN, "bundle")?
    {
        return Err(err(
            Some(chain.next_seq),
            Some(format!("bundle@{off}")),
            Failure::Frame(e),
        ));
    }
    if Some(chain.next_seq) != h.to.checked_add(1) {
        return Err(err(
            Some(chain.next_seq),
            None,
            Failure::Structure(format!(
                "the header says the bundle ends at event {}, it holds events up to {}",
                h.to,
                chain.next_seq as i128 - 1
            )),
        ));
    }
    chain.finish(0)
}

/// Reads the header of a bundle (to show what it claims before verifying).
pub fn bundle_header(bytes: &[u8]) -> Result<BundleHeader, FrameError> {
    codec::decode_bundle_header(bytes)
}

/// A verified bundle's contents, for reading (the console's auditor mode).
#[derive(Debug)]
pub struct BundleContents {
    /// What the bundle says it holds: log, key and range.
    pub header: BundleHeader,
    /// Events `from..=to`, in order (secret-bearing bodies left out).
    pub records: Vec<Record>,
    /// The checkpoints in the bundle, in order.
    pub checkpoints: Vec<SignedCheckpoint>,
    /// What verification established (every checkpoint's signature was checked).
    pub report: VerifyReport,
}

/// Verifies a bundle with `key` and, only if it verifies, returns its events and checkpoints.
pub fn read_bundle(
    bytes: &[u8],
    key: &PublicKey,
    opts: &VerifyOptions,
) -> Result<BundleContents, VerifyError> {
    // Every checkpoint handed out for display is signature-checked, not only the last.
    let all = VerifyOptions {
        all_signatures: true,
        ..opts.clone()
    };
    let report = verify_bundle(bytes, key, &all)?;
    // Verification succeeded, so every frame below parses; a failure here would be a bug,
    // reported rather than trusted.
    let header = codec::decode_bundle_header(bytes).map_err(|e| VerifyError {
        seq: None,
        location: None,
        failure: Failure::Frame(e),
    })?;
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    let mut pos = BUNDLE_HEADER_LEN;
    while pos < bytes.len() {
        let d = codec::decode_frame(&bytes[pos..]).map_err(|e| VerifyError {
            seq: None,
            location: Some(format!("bundle@{pos}")),
            failure: Failure::Frame(e),
        })?;
        match d.frame {
            Frame::Event(p) => records.push(Record::from_parts(&p)),
            Frame::Checkpoint { body, signature } => {
                checkpoints.push(SignedCheckpoint { body, signature })
            }
        }
        pos += d.total_len;
    }
    Ok(BundleContents {
        header,
        records,
        checkpoints,
        report,
    })
}
