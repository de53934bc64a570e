//! Recovery on open: only a torn write past the last checkpoint is removed (cut off a
//! version-1 segment, zeroed in a pre-zeroed one); damage that a checkpoint covers is
//! corruption and stops the open with its offset and event. Each rule is checked on both
//! segment versions where both apply.

use std::path::Path;

use scopehold_log::codec::{self, Frame, SEGMENT_HEADER_LEN};
use scopehold_log::{Entry, Log, LogError, LogOptions, VerifyOptions, verify_log};

use crate::common::{self, key, opts};

/// Offsets just past each checkpoint frame of a segment, with the size it covers.
fn checkpoint_ends(bytes: &[u8]) -> Vec<(usize, u64)> {
    let mut v = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while !common::zeros_from(bytes, pos) {
        let f = codec::decode_frame(&bytes[pos..]).unwrap();
        pos += f.total_len;
        if let Frame::Checkpoint { body, .. } = f.frame {
            v.push((pos, body.size));
        }
    }
    v
}

fn verify(dir: &Path) -> scopehold_log::VerifyReport {
    verify_log(dir, &key().public(), &VerifyOptions::default()).unwrap()
}

/// The offset just past the last nonzero byte of `bytes[from..to]`, or `from`.
fn nonzero_end(bytes: &[u8], from: usize, to: usize) -> usize {
    bytes[from..to]
        .iter()
        .rposition(|b| *b != 0)
        .map_or(from, |i| from + i + 1)
}

/// Small pre-zeroed segments, so that copying a log per case stays cheap.
fn small_v2() -> LogOptions {
    LogOptions {
        segment_bytes: 8 << 10,
        ..opts()
    }
}

#[test]
fn a_torn_tail_cut_at_every_offset_recovers_to_the_last_checkpoint() {
    for (version, o) in [("version 1", common::v1_opts()), ("version 2", small_v2())] {
        let src = tempfile::tempdir().unwrap();
        common::make_log(src.path(), 23, 6, o.clone());
        let seg = common::segment(src.path());
        let bytes = std::fs::read(&seg).unwrap();
        let cps = checkpoint_ends(&bytes);
        // The last batch (events 18..23 and their checkpoint) was "being written".
        let (prev_end, prev_size) = cps[cps.len() - 2];
        let (end, size) = cps[cps.len() - 1];
        assert_eq!((prev_size, size), (18, 23));
        for cut in prev_end..end {
            let ctx = format!("{version}, cut at {cut}");
            let d = common::copy_dir(src.path());
            let torn = if version == "version 1" {
                // Growing file: the write reached the disk up to `cut`.
                bytes[..cut].to_vec()
            } else {
                // Pre-zeroed file: the bytes of the write after `cut` are still zeros.
                let mut b = bytes.clone();
                b[cut..end].fill(0);
                b
            };
            if torn == bytes {
                // The write's last bytes were zeros (a signature can end in 0x00): zeroing
                // them tore nothing.
                continue;
            }
            std::fs::write(common::segment(d.path()), &torn).unwrap();
            let log =
                Log::open(d.path(), key(), o.clone()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let rec = log.recovery().clone();
            // Up to the last nonzero byte: zeros at the end of a pre-zeroed segment are no
            // write at all.
            let torn_len = if version == "version 1" {
                cut
            } else {
                nonzero_end(&torn, prev_end, cut)
            };
            assert_eq!(
                rec.truncated_bytes,
                (torn_len - prev_end) as u64,
                "{ctx}: {rec:?}, size {}",
                log.status().size
            );
            assert_eq!(log.status().size, 18, "{ctx}");
            if version == "version 2" {
                let after = std::fs::read(common::segment(d.path())).unwrap();
                assert_eq!(after.len(), bytes.len(), "{ctx}: still preallocated");
                assert!(common::zeros_from(&after, prev_end), "{ctx}: zeroed");
            }
            // The log goes on from the recovered state.
            assert_eq!(
                log.append(Entry::public(1, b"next".to_vec())).unwrap().seq,
                18
            );
            log.close().unwrap();
            assert_eq!(verify(d.path()).events, 19, "{ctx}");
        }
    }
}

/// A torn batch whose first page never reached the disk while later ones did: zeros where
/// the batch's first frame starts, its later bytes (its checkpoint among them) after them. The
/// checkpoint is followed by nothing, so this is the unsynced tail, zeroed on open; once it
/// is, a later, shorter batch cannot end in front of what is left of it.
#[test]
fn a_torn_batch_whose_first_page_is_zero_and_later_pages_present_is_zeroed() {
    let o = LogOptions {
        segment_bytes: 64 << 10,
        ..opts()
    };
    let src = tempfile::tempdir().unwrap();
    let log = Log::create(src.path(), key(), o.clone()).unwrap();
    for i in 0..4 {
        log.append(common::entry(i)).unwrap();
    }
    // Three pages and more in one batch.
    let big: Vec<Entry> = (0..4)
        .map(|i| Entry::public(2, vec![b'a' + i as u8; 3000]))
        .collect();
    log.append_batch(big).unwrap();
    log.close().unwrap();
    let seg = common::segment(src.path());
    let bytes = std::fs::read(&seg).unwrap();
    let cps = checkpoint_ends(&bytes);
    let (prev_end, end) = (cps[cps.len() - 2].0, cps[cps.len() - 1].0);
    assert!(end - prev_end > 3 * 4096);
    let first_page = prev_end / 4096 * 4096;
    for zeroed in [
        // The batch's first page (the part after the previous batch).
        vec![first_page],
        // Its first two pages.
        vec![first_page, first_page + 4096],
        // Its first and its third.
        vec![first_page, first_page + 8192],
    ] {
        let ctx = format!("pages at {zeroed:?} lost");
        let d = common::copy_dir(src.path());
        let mut torn = bytes.clone();
        for p in &zeroed {
            torn[(*p).max(prev_end)..(p + 4096).min(end)].fill(0);
        }
        assert_eq!(torn[prev_end..prev_end + 4], [0; 4], "{ctx}");
        std::fs::write(common::segment(d.path()), &torn).unwrap();
        // The index is appended only once a batch is durable: it has no entry for a torn one.
        std::fs::remove_file(d.path().join(scopehold_log::INDEX_FILE)).unwrap();
        // A reader of the crashed log sees it up to the last checkpoint.
        assert_eq!(
            scopehold_log::LogReader::open(d.path(), None)
                .unwrap()
                .size(),
            4
        );
        let log = Log::open(d.path(), key(), o.clone()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(log.status().size, 4, "{ctx}");
        assert_eq!(
            log.recovery().truncated_bytes,
            (nonzero_end(&torn, prev_end, end) - prev_end) as u64,
            "{ctx}"
        );
        let after = std::fs::read(common::segment(d.path())).unwrap();
        assert!(
            common::zeros_from(&after, prev_end),
            "{ctx}: the torn bytes are zeroed"
        );
        assert_eq!(after.len(), bytes.len(), "{ctx}: still preallocated");
        // A shorter batch now, then a reopen: nothing of the torn one is found after it.
        log.append(Entry::public(1, b"short".to_vec())).unwrap();
        log.close().unwrap();
        let log = Log::open(d.path(), key(), o.clone()).unwrap();
        assert_eq!(log.recovery().truncated_bytes, 0, "{ctx}");
        log.close().unwrap();
        assert_eq!(verify(d.path()).events, 5, "{ctx}");
    }
}

/// A batch into the last bytes of a pre-zeroed segment, torn; and a batch too large for a
/// whole segment, which grows the file past its preallocated end, torn there too.
#[test]
fn a_torn_write_at_the_very_end_of_a_segment_recovers() {
    let o = LogOptions {
        segment_bytes: 8192,
        ..opts()
    };
    // (a) A batch sized to end on the segment's last byte (across its two pages).
    let src = tempfile::tempdir().unwrap();
    let log = Log::create(src.path(), key(), o.clone()).unwrap();
    log.append(Entry::public(1, b"first".to_vec())).unwrap();
    let used = common::committed_end(src.path()) as usize;
    let overhead = codec::EVENT_HEAD_LEN + codec::CHECKPOINT_FRAME_LEN;
    let fill = 8192 - used - overhead;
    log.append(Entry::public(1, vec![b'z'; fill])).unwrap();
    log.close().unwrap();
    let seg = common::segment(src.path());
    let bytes = std::fs::read(&seg).unwrap();
    assert_eq!(bytes.len(), 8192, "the batch did not grow the file");
    assert_eq!(common::committed_end(src.path()), 8192);
    assert_eq!(common::segments(src.path()).len(), 1);
    for (i, lost) in [vec![0usize], vec![1], vec![0, 1]].into_iter().enumerate() {
        let d = common::copy_dir(src.path());
        let mut torn = bytes.clone();
        for p in &lost {
            // The batch's pages: the part of page 0 after the first batch, and page 1.
            let from = (p * 4096).max(used);
            torn[from..(p + 1) * 4096].fill(0);
        }
        std::fs::write(common::segment(d.path()), &torn).unwrap();
        std::fs::remove_file(d.path().join(scopehold_log::INDEX_FILE)).unwrap();
        let log = Log::open(d.path(), key(), o.clone()).unwrap();
        assert_eq!(log.status().size, 1, "case {i}");
        assert_eq!(
            log.recovery().truncated_bytes,
            (nonzero_end(&torn, used, 8192) - used) as u64,
            "case {i}"
        );
        // The next batch goes where the torn one was: it fits in what is left.
        log.append(Entry::public(1, b"again".to_vec())).unwrap();
        log.close().unwrap();
        assert_eq!(common::segments(d.path()).len(), 1, "case {i}");
        assert_eq!(verify(d.path()).events, 2, "case {i}");
    }

    // (b) A batch larger than a whole segment, into a segment that holds no event yet: it
    // runs past the preallocated end and the file grows; torn, the growth may be cut short.
    let src = tempfile::tempdir().unwrap();
    let log = Log::create(src.path(), key(), o.clone()).unwrap();
    let big: Vec<Entry> = (0..4u8)
        .map(|i| Entry::public(2, vec![b'q' + i; 2500]))
        .collect();
    log.append_batch(big).unwrap();
    log.close().unwrap();
    let bytes = std::fs::read(common::segment(src.path())).unwrap();
    assert!(bytes.len() > 8192, "the batch grew the file");
    let opening = codec::SEGMENT_OPENING_LEN;
    for cut in (8192..bytes.len()).step_by(256).chain([bytes.len() - 1]) {
        for zero_first in [false, true] {
            let ctx = format!("file cut to {cut}, first page zeroed: {zero_first}");
            let d = common::copy_dir(src.path());
            let mut torn = bytes[..cut].to_vec();
            std::fs::remove_file(d.path().join(scopehold_log::INDEX_FILE)).unwrap();
            if zero_first {
                torn[opening..4096].fill(0);
            }
            std::fs::write(common::segment(d.path()), &torn).unwrap();
            let log =
                Log::open(d.path(), key(), o.clone()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(log.status().size, 0, "{ctx}");
            log.append(Entry::public(1, b"after".to_vec())).unwrap();
            log.close().unwrap();
            assert_eq!(verify(d.path()).events, 1, "{ctx}");
        }
    }
}

#[test]
fn an_unsynced_tail_that_came_back_as_garbage_or_zeros_is_truncated() {
    for (version, o) in common::both_versions() {
        for tail in [
            vec![0u8; 4096],
            (0..3000u32)
                .map(|i| (i * 7919 % 251) as u8)
                .collect::<Vec<_>>(),
        ] {
            let ctx = format!("{version}, {} bytes", tail.len());
            let d = tempfile::tempdir().unwrap();
            common::make_log(d.path(), 10, 3, o.clone());
            let seg = common::segment(d.path());
            let len = std::fs::metadata(&seg).unwrap().len();
            let end = common::committed_end(d.path());
            // Where the next write would have gone: past the end of a version-1 segment, over
            // the zeros of a pre-zeroed one.
            common::write_at(&seg, end, &tail);
            let log = Log::open(d.path(), key(), o.clone()).unwrap();
            // Zeros written over zeros are no write at all.
            let expected = if version == "version 1" {
                tail.len()
            } else {
                nonzero_end(&tail, 0, tail.len())
            };
            assert_eq!(log.recovery().truncated_bytes, expected as u64, "{ctx}");
            log.close().unwrap();
            let after = std::fs::read(&seg).unwrap();
            assert_eq!(after.len() as u64, len, "{ctx}");
            assert!(common::zeros_from(&after, end as usize), "{ctx}");
            assert_eq!(verify(d.path()).events, 10, "{ctx}");
        }
    }
}

#[test]
fn a_damaged_record_under_a_checkpoint_is_corruption_and_is_never_truncated() {
    for (version, o) in common::both_versions() {
        let d = tempfile::tempdir().unwrap();
        common::make_log(d.path(), 30, 5, o.clone());
        let seg = common::segment(d.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        let cps = checkpoint_ends(&bytes);
        // A byte in the batch of events 10..15 (after the checkpoint at 10, before the one at
        // 15).
        let (start, size) = cps.iter().find(|(_, s)| *s == 10).copied().unwrap();
        assert_eq!(size, 10);
        let off = start + 40;
        bytes[off] ^= 0x20;
        std::fs::write(&seg, &bytes).unwrap();
        // Without the index, open scans the whole last segment and meets the damage.
        std::fs::remove_file(d.path().join("index")).unwrap();
        match Log::open(d.path(), key(), o.clone()) {
            Err(LogError::Corrupted { offset, seq, .. }) => {
                assert_eq!(
                    offset, start as u64,
                    "{version}: the damaged frame starts right after the checkpoint"
                );
                assert_eq!(seq, Some(10), "{version}");
            }
            other => panic!("{version}: expected corruption, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&seg).unwrap(),
            bytes,
            "{version}: nothing may be truncated or zeroed"
        );
        let err = verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap_err();
        assert_eq!(err.seq, Some(10), "{version}: {err}");
    }
}

/// Damage inside the synced data of a pre-zeroed segment: a page of it zeroed (as a lost
/// write-back of already synced data would leave it), and a nonzero byte planted in the zero
/// tail farther past the end than any write in flight reaches. Both are refused, named, and
/// nothing is changed; a byte within that reach reads as a torn write and is zeroed (the limit
/// of what the bytes alone can tell).
#[test]
fn damage_in_the_synced_data_or_zero_tail_of_a_prezeroed_segment_is_refused() {
    // A zeroed page in the middle of synced data.
    let d = tempfile::tempdir().unwrap();
    common::make_log(d.path(), 200, 4, opts());
    let seg = common::segment(d.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(common::committed_end(d.path()) > 4 * 4096);
    bytes[4096..8192].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::remove_file(d.path().join("index")).unwrap();
    match Log::open(d.path(), key(), opts()) {
        Err(LogError::Corrupted {
            segment,
            offset,
            seq,
            ..
        }) => {
            assert_eq!(segment, seg);
            assert!((4096 - 1000..=8192).contains(&offset), "{offset}");
            assert!(seq.is_some());
        }
        other => panic!("zeroed page: expected corruption, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "nothing may be truncated or zeroed"
    );
    let err = verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap_err();
    assert!(err.seq.is_some_and(|s| s < 200), "{err}");

    // A nonzero byte far past the end, in a segment larger than one batch's reach.
    let o = LogOptions {
        segment_bytes: (codec::MAX_BATCH_BYTES + (1 << 20)) as u64,
        ..opts()
    };
    let d = tempfile::tempdir().unwrap();
    // Written by an older build, so that the upgrade starts a full-size segment at once.
    common::make_log(d.path(), 6, 2, common::v1_opts());
    let log = Log::open(d.path(), key(), o.clone()).unwrap();
    let last = log.recovery().started_segment.clone().unwrap();
    log.append_batch((6..9).map(common::entry).collect())
        .unwrap();
    log.close().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    assert_eq!(bytes.len() as u64, o.segment_bytes);
    let end = common::committed_end(d.path()) as usize;
    let far = bytes.len() - 1;
    bytes[far] = 0x01;
    std::fs::write(&last, &bytes).unwrap();
    match Log::open(d.path(), key(), o.clone()) {
        Err(LogError::Corrupted {
            segment,
            offset,
            seq,
            ..
        }) => {
            assert_eq!((segment, offset, seq), (last.clone(), far as u64, Some(9)));
        }
        other => panic!("far byte: expected corruption, got {other:?}"),
    }
    assert!(scopehold_log::LogReader::open(d.path(), None).is_err());
    assert_eq!(
        std::fs::read(&last).unwrap(),
        bytes,
        "nothing may be zeroed"
    );
    let err = verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap_err();
    assert!(
        err.location
            .as_deref()
            .is_some_and(|l| l.ends_with(&format!("@{far}"))),
        "{err}"
    );
    // Within reach of a write in flight, the same byte is a torn write: zeroed.
    bytes[far] = 0;
    let near = end + codec::MAX_BATCH_BYTES - 1;
    bytes[near] = 0x01;
    std::fs::write(&last, &bytes).unwrap();
    let log = Log::open(d.path(), key(), o).unwrap();
    assert_eq!(log.recovery().truncated_bytes, (near + 1 - end) as u64);
    log.close().unwrap();
    assert!(common::zeros_from(&std::fs::read(&last).unwrap(), end));
    assert_eq!(verify(d.path()).events, 9);
}

#[test]
fn damage_to_the_last_batch_is_refused_when_the_kept_checkpoint_covers_it() {
    for (version, o) in common::both_versions() {
        let d = tempfile::tempdir().unwrap();
        let kept = d.path().join("checkpoint");
        let dir = d.path().join("log");
        let o = LogOptions {
            checkpoint_file: Some(kept),
            ..o
        };
        common::make_log(&dir, 12, 4, o.clone());
        let seg = common::segment(&dir);
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = common::committed_end(&dir) as usize;
        bytes[n - 100] ^= 1; // inside the final checkpoint or the event before it
        std::fs::write(&seg, &bytes).unwrap();
        // From the segment alone this looks like a torn final write; the kept checkpoint (12
        // events, written at close) proves those events were acknowledged.
        match Log::open(&dir, key(), o) {
            Err(LogError::Corrupted { seq, reason, .. }) => {
                assert_eq!(seq, Some(8), "{version}");
                assert!(reason.contains("up to 11 were acknowledged"), "{reason}");
            }
            other => panic!("{version}: expected a refusal, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&seg).unwrap(),
            bytes,
            "{version}: nothing may be truncated or zeroed"
        );
    }
}

#[test]
fn a_segment_whose_creation_was_interrupted_is_removed() {
    let d = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 2048,
        ..opts()
    };
    common::make_log(d.path(), 60, 3, o.clone());
    let segs = common::segments(d.path());
    let last = segs.last().unwrap();
    let size = scopehold_log::LogReader::open(d.path(), None)
        .unwrap()
        .size();
    // A roll that crashed after creating the file, mid-header.
    let next = d.path().join(format!("{:020}.seg", size + 1_000));
    let header = codec::encode_segment_header(
        &scopehold_log::LogReader::open(d.path(), None)
            .unwrap()
            .log_id(),
        size + 1_000,
        codec::SEGMENT_V2,
    );
    std::fs::write(&next, &header[..20]).unwrap();
    let log = Log::open(d.path(), key(), o).unwrap();
    assert_eq!(
        log.recovery().removed_segment.as_deref(),
        Some(next.as_path())
    );
    assert!(!next.exists());
    log.append(Entry::public(1, b"x".to_vec())).unwrap();
    log.close().unwrap();
    assert!(last.exists());
    assert_eq!(verify(d.path()).events, size + 1);
}

#[test]
fn a_damaged_last_segment_holding_events_is_refused_not_removed() {
    let d = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 2048,
        ..opts()
    };
    common::make_log(d.path(), 60, 3, o.clone());
    let last = common::segments(d.path()).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    assert!(bytes.len() > 400, "the last segment holds events");
    for off in [3usize, SEGMENT_HEADER_LEN + 20] {
        bytes[off] ^= 0x10;
        std::fs::write(&last, &bytes).unwrap();
        std::fs::remove_file(d.path().join("index")).ok();
        match Log::open(d.path(), key(), o.clone()) {
            Err(LogError::Corrupted { .. }) => {}
            other => panic!("damage at {off}: expected corruption, got {other:?}"),
        }
        assert!(
            last.exists(),
            "a segment of acknowledged events was removed"
        );
        bytes[off] ^= 0x10;
        std::fs::write(&last, &bytes).unwrap();
    }
    Log::open(d.path(), key(), o).unwrap().close().unwrap();
}

#[test]
fn a_missing_kept_checkpoint_stops_the_open_unless_accepted() {
    let d = tempfile::tempdir().unwrap();
    let kept = d.path().join("checkpoint");
    let dir = d.path().join("log");
    let o = LogOptions {
        checkpoint_file: Some(kept.clone()),
        ..opts()
    };
    common::make_log(&dir, 5, 1, o.clone());
    std::fs::remove_file(&kept).unwrap();
    assert!(matches!(
        Log::open(&dir, key(), o.clone()),
        Err(LogError::BadCheckpointFile { .. })
    ));
    let accept = LogOptions {
        accept_missing_checkpoint: true,
        ..o.clone()
    };
    Log::open(&dir, key(), accept).unwrap().close().unwrap();
    assert!(kept.exists(), "a new kept checkpoint is written");
    Log::open(&dir, key(), o).unwrap().close().unwrap();
}

#[test]
fn live_verification_does_not_excuse_damage_to_committed_data() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::create(d.path(), key(), opts()).unwrap();
    for i in 0..12 {
        log.append(common::entry(i)).unwrap();
    }
    // The writer holds the log: a damaged *old* frame followed by checkpoints is still caught.
    let seg = common::segment(d.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let cps = checkpoint_ends(&bytes);
    bytes[cps[2].0 + 30] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    assert!(scopehold_log::is_live(d.path()));
    assert!(verify_log(d.path(), &key().public(), &VerifyOptions::default()).is_err());
    bytes[cps[2].0 + 30] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    log.close().unwrap();
}
