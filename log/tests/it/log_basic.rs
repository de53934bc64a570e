//! Round trips through the real writer and reader: appends, reopen, random access,
//! iteration, segment rolls, the index, concurrent appenders, readers of a live log.

use std::sync::Arc;

use proptest::prelude::*;
use scopehold_log::{
    BodyClass, Entry, Item, Log, LogError, LogOptions, LogReader, VerifyOptions, verify_log,
};

use crate::common::{self, body_of, key, make_log, opts};

#[test]
fn appended_events_read_back_identically() {
    let d = tempfile::tempdir().unwrap();
    let receipts = make_log(d.path(), 120, 7, opts());
    assert_eq!(receipts.len(), 120);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        assert!(
            r.checkpoint.body.size > r.seq,
            "the receipt's checkpoint covers the event"
        );
    }
    let reader = LogReader::open(d.path(), Some(&key().public())).unwrap();
    assert_eq!(reader.size(), 120);
    // Random access.
    for seq in [0u64, 1, 2, 57, 119] {
        let rec = reader.get(seq).unwrap();
        assert_eq!(rec.seq(), seq);
        assert_eq!(&rec.body.as_ref().unwrap().bytes[..], &body_of(seq)[..]);
        assert_eq!(rec.hash, receipts[seq as usize].hash);
        assert_eq!(rec.body_matches(), Some(true));
        let class = if seq % 3 == 2 {
            BodyClass::Secret
        } else {
            BodyClass::Public
        };
        assert_eq!(rec.class(), class);
    }
    assert!(matches!(reader.get(120), Err(LogError::OutOfRange(120))));
    // Iteration from the middle sees every later event once, in order.
    let seqs: Vec<u64> = reader
        .events_from(50)
        .unwrap()
        .map(|r| r.unwrap().seq())
        .collect();
    assert_eq!(seqs, (50..120).collect::<Vec<_>>());
    // The checkpoint that signs event 57 is the one its receipt carried.
    assert_eq!(
        reader.checkpoint_covering(57).unwrap(),
        receipts[57].checkpoint
    );
    let report = verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap();
    assert_eq!(report.events, 120);
    assert_eq!(report.head, receipts[119].hash);
}

#[test]
fn reopen_continues_the_chain() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 10, 3, opts());
    let log = Log::open(d.path(), key(), opts()).unwrap();
    assert_eq!(
        log.recovery(),
        &Default::default(),
        "a cleanly closed log needs no recovery"
    );
    let r = log
        .append(Entry::public(1, b"after reopen".to_vec()))
        .unwrap();
    assert_eq!(r.seq, 10);
    log.close().unwrap();
    let report = verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap();
    assert_eq!(report.events, 11);
}

#[test]
fn a_second_writer_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::create(d.path(), key(), opts()).unwrap();
    assert!(matches!(
        Log::open(d.path(), key(), opts()),
        Err(LogError::Locked(_))
    ));
    assert!(scopehold_log::is_live(d.path()));
    log.close().unwrap();
    assert!(!scopehold_log::is_live(d.path()));
    Log::open(d.path(), key(), opts()).unwrap().close().unwrap();
}

#[test]
fn a_wrong_key_cannot_open_the_log() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 3, 1, opts());
    let other = scopehold_log::LogKey::from_seed(&[1; 32]);
    assert!(matches!(
        Log::open(d.path(), other, opts()),
        Err(LogError::WrongKey)
    ));
}

#[test]
fn segments_roll_and_everything_stays_readable() {
    let d = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 4096,
        ..opts()
    };
    let receipts = make_log(d.path(), 400, 5, o.clone());
    let segs = common::segments(d.path());
    assert!(
        segs.len() > 5,
        "expected several segments, got {}",
        segs.len()
    );
    let reader = LogReader::open(d.path(), None).unwrap();
    assert_eq!(reader.size(), 400);
    for seq in (0..400).step_by(13) {
        assert_eq!(reader.get(seq).unwrap().hash, receipts[seq as usize].hash);
    }
    assert_eq!(reader.events_from(0).unwrap().count(), 400);
    crate::common::verify_all(d.path(), &key().public()).unwrap();
    // Reopen and append across the roll boundary.
    let log = Log::open(d.path(), key(), o).unwrap();
    log.append(Entry::public(1, b"more".to_vec())).unwrap();
    log.close().unwrap();
    verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap();
}

#[test]
fn a_missing_or_stale_index_is_rebuilt_and_a_current_one_is_used_as_is() {
    let d = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 8192,
        ..opts()
    };
    let receipts = make_log(d.path(), 300, 4, o.clone());
    let index = d.path().join("index");
    let good = std::fs::read(&index).unwrap();
    assert_eq!(good.len(), 40 + 300 * 12);

    // A current index: opening changes nothing.
    let log = Log::open(d.path(), key(), o.clone()).unwrap();
    assert!(!log.recovery().index_rebuilt);
    log.close().unwrap();
    assert_eq!(std::fs::read(&index).unwrap(), good);

    // Missing.
    std::fs::remove_file(&index).unwrap();
    let log = Log::open(d.path(), key(), o.clone()).unwrap();
    assert!(log.recovery().index_rebuilt);
    log.close().unwrap();
    assert_eq!(std::fs::read(&index).unwrap(), good);

    // Short (a crash before the index caught up).
    std::fs::write(&index, &good[..40 + 123 * 12 + 3]).unwrap();
    let r = LogReader::open(d.path(), None).unwrap();
    assert_eq!(r.get(250).unwrap().hash, receipts[250].hash);
    let log = Log::open(d.path(), key(), o.clone()).unwrap();
    assert!(log.recovery().index_rebuilt);
    log.close().unwrap();
    assert_eq!(std::fs::read(&index).unwrap(), good);

    // Damaged (a garbage last entry) and stale (a well-formed entry for another state of the
    // log, pointing at the wrong frame).
    let entry = |seq: u64, off: u64| {
        let mut e = off.to_le_bytes().to_vec();
        let check = crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), &off.to_le_bytes());
        e.extend_from_slice(&check.to_le_bytes());
        e
    };
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 8..].copy_from_slice(&7u64.to_le_bytes());
    std::fs::write(&index, &bad).unwrap();
    let r = LogReader::open(d.path(), None).unwrap();
    assert_eq!(r.get(299).unwrap().hash, receipts[299].hash);
    let mut stale = good.clone();
    stale[n - 12..].copy_from_slice(&entry(299, 54));
    std::fs::write(&index, &stale).unwrap();
    let r = LogReader::open(d.path(), None).unwrap();
    assert_eq!(r.get(299).unwrap().hash, receipts[299].hash);
    let log = Log::open(d.path(), key(), o).unwrap();
    assert!(log.recovery().index_rebuilt);
    log.close().unwrap();
    assert_eq!(std::fs::read(&index).unwrap(), good);
}

#[test]
fn concurrent_appenders_get_distinct_consecutive_sequence_numbers() {
    for pipeline in [false, true] {
        concurrent_appenders(pipeline);
    }
}

fn concurrent_appenders(pipeline: bool) {
    let d = tempfile::tempdir().unwrap();
    let o = LogOptions {
        pipeline,
        segment_bytes: 16 * 1024,
        ..opts()
    };
    let log = Arc::new(Log::create(d.path(), key(), o).unwrap());
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50u64)
                    .map(|i| {
                        let body = format!("t{t} i{i}").into_bytes();
                        (
                            log.append(Entry::public(1, body.clone())).unwrap().seq,
                            body,
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(u64, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(
        all.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..800).collect::<Vec<_>>()
    );
    let status = log.status();
    assert_eq!(status.size, 800);
    assert!(
        status.batches < 800,
        "group commit should batch concurrent appends ({} batches)",
        status.batches
    );
    Arc::try_unwrap(log).unwrap().close().unwrap();
    let r = LogReader::open(d.path(), None).unwrap();
    for (seq, body) in all {
        assert_eq!(&r.get(seq).unwrap().body.unwrap().bytes[..], &body[..]);
    }
}

#[test]
fn readers_see_a_live_log_up_to_its_last_checkpoint() {
    for (version, o) in common::both_versions() {
        readers_see_a_live_log(version, o);
    }
}

fn readers_see_a_live_log(version: &str, o: LogOptions) {
    let d = tempfile::tempdir().unwrap();
    let log = Log::create(d.path(), key(), o.clone()).unwrap();
    for i in 0..5 {
        log.append(common::entry(i)).unwrap();
    }
    let mut reader = LogReader::open(d.path(), None).unwrap();
    assert_eq!(reader.size(), 5);
    for i in 5..9 {
        log.append(common::entry(i)).unwrap();
    }
    assert!(reader.refresh().unwrap());
    assert_eq!(reader.size(), 9);
    // Bytes after the last checkpoint, as a reader sees a batch being written (into the
    // zeros of a pre-zeroed segment, or past the end of a version-1 one): while the writer
    // holds the log they are pending, not an error, and readers do not see them.
    let seg = common::segment(d.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    common::write_at(
        &seg,
        common::committed_end(d.path()),
        &[0x40, 0, 0, 0, 1, 2, 3],
    );
    let live = verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap();
    assert_eq!(live.events, 9, "{version}");
    assert_eq!(live.pending_bytes, 7, "{version}");
    assert!(!reader.refresh().unwrap());
    assert_eq!(LogReader::open(d.path(), None).unwrap().size(), 9);
    log.close().unwrap();
    // With no writer, nothing may lie outside the last checkpoint.
    let err = verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.seq, Some(9), "{version}: {err}");
    // Recovery removes the torn tail (cut off, or zeroed in place); then the log verifies.
    let log = Log::open(d.path(), key(), o).unwrap();
    assert_eq!(log.recovery().truncated_bytes, 7, "{version}");
    log.close().unwrap();
    // Cut back to where it was (version 1), or still as preallocated (version 2).
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "{version}");
    assert_eq!(
        verify_log(d.path(), &key().public(), &VerifyOptions::default())
            .unwrap()
            .events,
        9
    );
}

#[test]
fn oversized_bodies_are_refused_before_reaching_the_writer() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::create(d.path(), key(), opts()).unwrap();
    let big = vec![0u8; scopehold_log::codec::MAX_BODY_LEN + 1];
    assert!(matches!(
        log.append(Entry::public(1, big)),
        Err(scopehold_log::AppendError::TooLarge(_))
    ));
    // The log is unaffected and keeps working.
    assert_eq!(log.append(Entry::public(1, b"ok".to_vec())).unwrap().seq, 0);
    log.close().unwrap();
}

#[test]
fn iteration_yields_the_checkpoints_between_batches() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 9, 3, opts());
    let r = LogReader::open(d.path(), None).unwrap();
    let sizes: Vec<u64> = r
        .iter_from(0)
        .unwrap()
        .filter_map(|i| match i.unwrap() {
            Item::Checkpoint(c) => Some(c.body.size),
            Item::Event(_) => None,
        })
        .collect();
    assert_eq!(sizes, vec![3, 6, 9]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn any_sequence_of_entries_round_trips(batches in proptest::collection::vec(
        proptest::collection::vec((any::<bool>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)), 1..6), 1..8)) {
        let d = tempfile::tempdir().unwrap();
        let log = Log::create(d.path(), key(), LogOptions { segment_bytes: 1024, ..opts() }).unwrap();
        let mut expect = Vec::new();
        for b in &batches {
            let entries = b.iter().map(|(secret, kind, body)| if *secret {
                Entry::secret(*kind, body.clone()).unwrap()
            } else {
                Entry::public(*kind, body.clone())
            }).collect();
            log.append_batch(entries).unwrap();
            expect.extend(b.iter().cloned());
        }
        log.close().unwrap();
        let r = LogReader::open(d.path(), Some(&key().public())).unwrap();
        prop_assert_eq!(r.size(), expect.len() as u64);
        for (rec, (secret, kind, body)) in r.events_from(0).unwrap().zip(&expect) {
            let rec = rec.unwrap();
            prop_assert_eq!(rec.envelope.kind, *kind);
            prop_assert_eq!(rec.class() == BodyClass::Secret, *secret);
            prop_assert_eq!(&rec.body.as_ref().unwrap().bytes[..], &body[..]);
        }
        verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap();
    }
}

/// The property pre-zeroing exists for: an append into a pre-zeroed segment overwrites zeros
/// and leaves the file's length (and its allocation) as it was, so its fdatasync has no
/// metadata to commit. Rolled segments are preallocated to the segment size before use.
#[test]
fn an_append_into_a_prezeroed_segment_does_not_change_the_file_length() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 64 << 10,
        ..opts()
    };
    let log = Log::create(d.path(), key(), o.clone()).unwrap();
    let seg = common::segment(d.path());
    let before = std::fs::metadata(&seg).unwrap();
    assert_eq!(before.len(), 64 << 10);
    // Zeros written, not a hole: every block is allocated before the first append.
    assert!(
        before.blocks() * 512 >= before.len(),
        "{} blocks",
        before.blocks()
    );
    for i in 0..40 {
        log.append(common::entry(i)).unwrap();
        let now = std::fs::metadata(&seg).unwrap();
        assert_eq!(
            (now.len(), now.blocks()),
            (before.len(), before.blocks()),
            "append {i}"
        );
    }
    // Across rolls: every segment has the size it was made with.
    for i in 40..1500 {
        log.append(common::entry(i)).unwrap();
    }
    log.close().unwrap();
    let segs = common::segments(d.path());
    assert!(segs.len() >= 3, "{} segments", segs.len());
    for s in &segs {
        let bytes = std::fs::read(s).unwrap();
        assert_eq!(bytes.len(), 64 << 10, "{}", s.display());
        assert!(common::is_prezeroed(&bytes), "{}", s.display());
    }
    assert_eq!(
        verify_log(d.path(), &key().public(), &VerifyOptions::default())
            .unwrap()
            .events,
        1500
    );
}

/// The spare: made ahead of need, whole or not at all under its name; at open a whole one
/// is kept (even with the opening of a roll that crashed before its rename written into
/// it), a half-made or wrong-sized one removed.
#[test]
fn the_spare_segment_is_kept_reused_or_removed_at_open() {
    let d = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 16 << 10,
        ..opts()
    };
    make_log(d.path(), 40, 1, o.clone());
    let spare = d.path().join("segment.spare");
    let tmp = d.path().join("segment.spare.tmp");
    assert_eq!(std::fs::metadata(&spare).unwrap().len(), 16 << 10);
    assert!(!tmp.exists());
    // A roll that crashed after writing its opening into the spare, before the rename; and a
    // spare that a crash cut short.
    let reader = LogReader::open(d.path(), None).unwrap();
    let mut opening = scopehold_log::codec::encode_segment_header(
        &reader.log_id(),
        9,
        scopehold_log::codec::SEGMENT_V2,
    );
    scopehold_log::codec::put_checkpoint_frame(
        &mut opening,
        &reader.checkpoint().body.encode(),
        &reader.checkpoint().signature,
    );
    common::write_at(&spare, 0, &opening);
    std::fs::write(&tmp, [0u8; 100]).unwrap();
    let log = Log::open(d.path(), key(), o.clone()).unwrap();
    assert!(log.recovery().spare_discarded);
    assert!(!tmp.exists());
    assert!(spare.exists(), "a whole spare is kept");
    // Rolls into it (it is ready, so no zero-filling), and on.
    let segs = common::segments(d.path()).len();
    for i in 40..200 {
        log.append(common::entry(i)).unwrap();
    }
    log.close().unwrap();
    assert!(common::segments(d.path()).len() > segs);
    assert_eq!(
        verify_log(d.path(), &key().public(), &VerifyOptions::default())
            .unwrap()
            .events,
        200
    );
    // A spare of another size than the segments now made is removed.
    let o2 = LogOptions {
        segment_bytes: 32 << 10,
        ..opts()
    };
    assert!(spare.exists());
    let log = Log::open(d.path(), key(), o2).unwrap();
    assert!(log.recovery().spare_discarded);
    log.close().unwrap();
    assert!(!spare.exists() || std::fs::metadata(&spare).unwrap().len() == 32 << 10);
}

/// A log written before segment version 2: it keeps its version-1 segments as they are and
/// appends go to a new pre-zeroed segment, started at open. A version-1 last segment that
/// holds no event is replaced by a pre-zeroed one of the same name and contents. A writer
/// with `preallocate` off keeps appending into a pre-zeroed segment and rolls to version 1.
#[test]
fn a_version_1_log_opens_and_appends_go_to_a_new_prezeroed_segment() {
    for events in [0u64, 7] {
        let d = tempfile::tempdir().unwrap();
        make_log(d.path(), events, 3, common::v1_opts());
        let old = common::segment(d.path());
        let old_bytes = std::fs::read(&old).unwrap();
        assert!(!common::is_prezeroed(&old_bytes));
        let log = Log::open(d.path(), key(), opts()).unwrap();
        let new = log.recovery().started_segment.clone().unwrap();
        assert_eq!(new, d.path().join(format!("{events:020}.seg")));
        for i in events..events + 5 {
            log.append(common::entry(i)).unwrap();
        }
        log.close().unwrap();
        let new_bytes = std::fs::read(&new).unwrap();
        assert!(common::is_prezeroed(&new_bytes), "{events}");
        if events > 0 {
            assert_eq!(std::fs::read(&old).unwrap(), old_bytes, "left as it was");
            assert_eq!(common::segments(d.path()).len(), 2);
        } else {
            assert_eq!(common::segments(d.path()).len(), 1, "replaced");
        }
        // A second open has nothing to start.
        let log = Log::open(d.path(), key(), opts()).unwrap();
        assert_eq!(log.recovery().started_segment, None);
        log.close().unwrap();
        let r = LogReader::open(d.path(), Some(&key().public())).unwrap();
        assert_eq!(r.events_from(0).unwrap().count() as u64, events + 5);
        for seq in 0..events + 5 {
            assert_eq!(
                &r.get(seq).unwrap().body.unwrap().bytes[..],
                &body_of(seq)[..]
            );
        }
        verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap();
    }
    // Mixed the other way: growing segments after a pre-zeroed one.
    let d = tempfile::tempdir().unwrap();
    let small = LogOptions {
        segment_bytes: 2048,
        ..opts()
    };
    make_log(d.path(), 10, 2, small);
    let log = Log::open(
        d.path(),
        key(),
        LogOptions {
            segment_bytes: 2048,
            ..common::v1_opts()
        },
    )
    .unwrap();
    assert_eq!(log.recovery().started_segment, None);
    for i in 10..60 {
        log.append(common::entry(i)).unwrap();
    }
    log.close().unwrap();
    let versions: Vec<bool> = common::segments(d.path())
        .iter()
        .map(|s| common::is_prezeroed(&std::fs::read(s).unwrap()))
        .collect();
    assert!(
        versions.contains(&true) && versions.last() == Some(&false),
        "{versions:?}"
    );
    let r = LogReader::open(d.path(), None).unwrap();
    assert_eq!(r.events_from(0).unwrap().count(), 60);
    crate::common::verify_all(d.path(), &key().public()).unwrap();
}

/// One batch's write is bounded (it bounds how far a torn write can reach): entries that
/// would exceed it together are refused before reaching the writer; appends that each fit
/// are split into batches that do.
#[test]
fn entries_appended_together_are_bounded_by_one_batch() {
    use scopehold_log::codec::MAX_BATCH_BYTES;
    let d = tempfile::tempdir().unwrap();
    let o = LogOptions {
        pipeline: false,
        ..opts()
    };
    let log = Arc::new(Log::create(d.path(), key(), o).unwrap());
    let big = || Entry::public(1, vec![7u8; scopehold_log::codec::MAX_BODY_LEN]);
    let n = MAX_BATCH_BYTES / scopehold_log::codec::MAX_BODY_LEN + 1;
    assert!(!Log::fits_one_batch(
        &(0..n).map(|_| big()).collect::<Vec<_>>()
    ));
    assert!(matches!(
        log.append_batch((0..n).map(|_| big()).collect()),
        Err(scopehold_log::AppendError::BatchTooLarge(_))
    ));
    // Many appenders of large entries at once: each batch stays within the bound.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || log.append_batch(vec![big(), big()]).unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = log.status();
    assert_eq!(st.size, 16);
    assert!(st.bytes_written / st.batches <= MAX_BATCH_BYTES as u64);
    assert!(st.batches >= 16 / (MAX_BATCH_BYTES / scopehold_log::codec::MAX_BODY_LEN) as u64);
    Arc::try_unwrap(log).unwrap().close().unwrap();
    verify_log(d.path(), &key().public(), &VerifyOptions::default()).unwrap();
}

#[test]
fn a_reader_following_a_live_log_sees_every_batch_and_every_roll() {
    // A following reader (the console, `log show --follow`) refreshes by walking the frames
    // until the zeros, not by reading each pre-zeroed segment to its end: it must still see
    // every batch, erased bodies (runs of zeros inside a frame) included, and follow rolls.
    for (version, mut o) in common::both_versions() {
        o.segment_bytes = 96 << 10;
        let d = tempfile::tempdir().unwrap();
        let log = Log::create(d.path(), key(), o).unwrap();
        let mut reader = LogReader::open(d.path(), None).unwrap();
        let mut n = 0u64;
        for round in 0..40u64 {
            let batch: Vec<_> = (0..1 + round % 7)
                .map(|k| {
                    // Large bodies now and then, so that frames straddle the reader's chunks.
                    let big = (n + k).is_multiple_of(11);
                    let body = vec![b'a' + (round % 26) as u8; if big { 70_000 } else { 40 }];
                    Entry::secret(3, body).unwrap()
                })
                .collect();
            n += batch.len() as u64;
            log.append_batch(batch).unwrap();
            if round == 20 {
                log.erase(&[3]).unwrap();
            }
            assert!(reader.refresh().unwrap(), "{version}: round {round}");
            assert_eq!(reader.size(), n, "{version}: round {round}");
            assert_eq!(reader.get(n - 1).unwrap().envelope.seq, n - 1);
        }
        assert!(reader.segments().len() > 3, "{version}: no roll happened");
        assert_eq!(
            reader
                .iter_from(0)
                .unwrap()
                .filter(|i| matches!(i, Ok(scopehold_log::Item::Event(_))))
                .count() as u64,
            n,
            "{version}: iteration from a refreshed reader"
        );
        log.close().unwrap();
    }
}
