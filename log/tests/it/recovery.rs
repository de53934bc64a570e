//! Recovery on open: only a torn write past the last checkpoint is truncated; damage that a
//! checkpoint covers is corruption and stops the open with its offset and event.

use std::path::Path;

use scopehold_log::codec::{self, Frame, SEGMENT_HEADER_LEN};
use scopehold_log::{Entry, Log, LogError, LogOptions, VerifyOptions, verify_log};

use crate::common::{self, key, opts};

/// Offsets just past each checkpoint frame of a segment, with the size it covers.
fn checkpoint_ends(bytes: &[u8]) -> Vec<(usize, u64)> {
    let mut v = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
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

#[test]
fn a_torn_tail_cut_at_every_offset_recovers_to_the_last_checkpoint() {
    let src = tempfile::tempdir().unwrap();
    common::make_log(src.path(), 23, 6, opts());
    let seg = common::segment(src.path());
    let bytes = std::fs::read(&seg).unwrap();
    let cps = checkpoint_ends(&bytes);
    // The last batch (events 18..23 and their checkpoint) was "being written".
    let (prev_end, prev_size) = cps[cps.len() - 2];
    assert_eq!((prev_size, cps[cps.len() - 1].1), (18, 23));
    for cut in prev_end..bytes.len() {
        let d = common::copy_dir(src.path());
        std::fs::write(common::segment(d.path()), &bytes[..cut]).unwrap();
        let log =
            Log::open(d.path(), key(), opts()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let rec = log.recovery().clone();
        assert_eq!(rec.truncated_bytes, (cut - prev_end) as u64, "cut at {cut}");
        assert_eq!(log.status().size, 18, "cut at {cut}");
        // The log goes on from the recovered state.
        assert_eq!(
            log.append(Entry::public(1, b"next".to_vec())).unwrap().seq,
            18
        );
        log.close().unwrap();
        assert_eq!(verify(d.path()).events, 19, "cut at {cut}");
    }
}

#[test]
fn an_unsynced_tail_that_came_back_as_garbage_or_zeros_is_truncated() {
    for tail in [
        vec![0u8; 4096],
        (0..3000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    ] {
        let d = tempfile::tempdir().unwrap();
        common::make_log(d.path(), 10, 3, opts());
        let seg = common::segment(d.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        std::fs::write(&seg, &bytes).unwrap();
        let log = Log::open(d.path(), key(), opts()).unwrap();
        assert_eq!(log.recovery().truncated_bytes, tail.len() as u64);
        log.close().unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len as u64);
        assert_eq!(verify(d.path()).events, 10);
    }
}

#[test]
fn a_damaged_record_under_a_checkpoint_is_corruption_and_is_never_truncated() {
    let d = tempfile::tempdir().unwrap();
    common::make_log(d.path(), 30, 5, opts());
    let seg = common::segment(d.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let cps = checkpoint_ends(&bytes);
    // A byte in the batch of events 10..15 (after the checkpoint at 10, before the one at 15).
    let (start, size) = cps.iter().find(|(_, s)| *s == 10).copied().unwrap();
    assert_eq!(size, 10);
    let off = start + 40;
    bytes[off] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    // Without the index, open scans the whole last segment and meets the damage.
    std::fs::remove_file(d.path().join("index")).unwrap();
    match Log::open(d.path(), key(), opts()) {
        Err(LogError::Corrupted { offset, seq, .. }) => {
            assert_eq!(
                offset, start as u64,
                "the damaged frame starts right after the checkpoint"
            );
            assert_eq!(seq, Some(10));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "nothing may be truncated"
    );
    let err = verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.seq, Some(10), "{err}");
}

#[test]
fn damage_to_the_last_batch_is_refused_when_the_kept_checkpoint_covers_it() {
    let d = tempfile::tempdir().unwrap();
    let kept = d.path().join("checkpoint");
    let dir = d.path().join("log");
    let o = LogOptions {
        checkpoint_file: Some(kept),
        ..opts()
    };
    common::make_log(&dir, 12, 4, o.clone());
    let seg = common::segment(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1; // inside the final checkpoint or the event before it
    std::fs::write(&seg, &bytes).unwrap();
    // From the segment alone this looks like a torn final write; the kept checkpoint (12
    // events, written at close) proves those events were acknowledged.
    match Log::open(&dir, key(), o) {
        Err(LogError::Corrupted { seq, reason, .. }) => {
            assert_eq!(seq, Some(8));
            assert!(reason.contains("up to 11 were acknowledged"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "nothing may be truncated"
    );
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
