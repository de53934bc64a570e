//! Tamper evidence: every single-byte change, rewrites with recomputed hashes and CRCs,
//! deletion, duplication, reordering, insertion and rollback are caught, and the failure
//! names the first bad event.

use std::ops::Range;
use std::path::Path;

use scopehold_log::codec::{self, Frame, SEGMENT_HEADER_LEN};
use scopehold_log::{
    Failure, Log, LogError, LogOptions, LogReader, SignedCheckpoint, VerifyOptions, export, hash,
    verify_bundle, verify_log,
};

use crate::alloc::largest_allocation;
use crate::common::{self, key, opts};

#[derive(Debug, Clone)]
enum Kind {
    Event(u64),
    Checkpoint(u64),
}

/// The frames of a segment file: byte range and what each one is.
fn frames(bytes: &[u8]) -> Vec<(Range<usize>, Kind)> {
    let mut v = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    // A pre-zeroed segment's frames end where the zeros begin.
    while !common::zeros_from(bytes, pos) {
        let f = codec::decode_frame(&bytes[pos..]).unwrap();
        let k = match f.frame {
            Frame::Event(p) => Kind::Event(p.envelope.seq),
            Frame::Checkpoint { body, .. } => Kind::Checkpoint(body.size),
            _ => unreachable!(),
        };
        v.push((pos..pos + f.total_len, k));
        pos += f.total_len;
    }
    v
}

/// Builds a log of `n` events in batches of varying size (1 to 7).
fn varied_log(dir: &Path, n: u64, o: LogOptions) {
    let log = Log::create(dir, key(), o).unwrap();
    let mut i = 0;
    let mut b = 1;
    while i < n {
        let k = b.min(n - i);
        log.append_batch((i..i + k).map(common::entry).collect())
            .unwrap();
        i += k;
        b = b % 7 + 1;
    }
    log.close().unwrap();
}

fn verify(dir: &Path) -> Result<scopehold_log::VerifyReport, scopehold_log::VerifyError> {
    verify_log(dir, &key().public(), &VerifyOptions::default())
}

#[test]
fn every_single_byte_change_to_the_log_is_detected_and_names_the_event() {
    let d = tempfile::tempdir().unwrap();
    varied_log(
        d.path(),
        240,
        LogOptions {
            segment_bytes: 12 * 1024,
            ..opts()
        },
    );
    verify(d.path()).unwrap();
    let mut checked = 0;
    for seg in common::segments(d.path()) {
        let original = std::fs::read(&seg).unwrap();
        let map = frames(&original);
        let mut bytes = original.clone();
        // Every byte of the frames; of a pre-zeroed segment's zero tail, a sample (each one
        // is checked the same way) and its last byte.
        let data = map.last().map_or(SEGMENT_HEADER_LEN, |(r, _)| r.end);
        let offsets = (0..data)
            .chain((data..original.len()).step_by(61))
            .chain((data < original.len()).then(|| original.len() - 1));
        for off in offsets {
            // Vary the flipped bits with the offset so every bit position is exercised.
            let mask = match off % 3 {
                0 => 1u8 << (off % 8),
                1 => 0xFF,
                _ => 0x80 >> (off % 8),
            };
            bytes[off] ^= mask;
            // In place: rewriting the whole file each time costs more than the check.
            common::write_at(&seg, off as u64, &bytes[off..=off]);
            let err = verify(d.path()).expect_err(&format!(
                "{}: change at offset {off} not detected",
                seg.display()
            ));
            if let Some((_, Kind::Event(seq))) = map.iter().find(|(r, _)| r.contains(&off)) {
                assert_eq!(
                    err.seq,
                    Some(*seq),
                    "change at offset {off} inside event {seq}: {err}"
                );
            }
            bytes[off] ^= mask;
            common::write_at(&seg, off as u64, &bytes[off..=off]);
            checked += 1;
        }
        std::fs::write(&seg, &original).unwrap();
    }
    verify(d.path()).unwrap();
    assert!(checked > 20_000, "swept only {checked} offsets");
}

#[test]
fn every_single_byte_change_to_a_bundle_is_detected() {
    let d = tempfile::tempdir().unwrap();
    varied_log(d.path(), 200, opts());
    let reader = LogReader::open(d.path(), None).unwrap();
    let mut b = Vec::new();
    export(&reader, &key().public(), 10, Some(150), &mut b).unwrap();
    let pk = key().public();
    verify_bundle(&b, &pk, &VerifyOptions::default()).unwrap();
    for off in 0..b.len() {
        for mask in [1u8 << (off % 8), 0xFF] {
            b[off] ^= mask;
            assert!(
                verify_bundle(&b, &pk, &VerifyOptions::default()).is_err(),
                "bundle change at offset {off} (mask {mask:#x}) not detected"
            );
            b[off] ^= mask;
        }
    }
    // A bundle cut anywhere fails.
    for cut in 0..b.len() {
        assert!(
            verify_bundle(&b[..cut], &pk, &VerifyOptions::default()).is_err(),
            "bundle cut at {cut} verified"
        );
    }
    // And one extra byte.
    let mut longer = b.clone();
    longer.push(0);
    assert!(verify_bundle(&longer, &pk, &VerifyOptions::default()).is_err());
}

/// Rewrites segment 0 frame by frame: `edit` may change event bodies; every commitment,
/// envelope hash, chain link, checkpoint head and CRC after it is recomputed, as an attacker
/// without the signing key would. Signatures are kept: they cannot be recomputed.
fn forge(seg: &Path, edit: impl Fn(u64, &mut Vec<u8>)) {
    let bytes = std::fs::read(seg).unwrap();
    let mut out = bytes[..SEGMENT_HEADER_LEN].to_vec();
    let (log_id, _) = codec::decode_segment_header(&bytes).unwrap();
    let mut head = hash::genesis(&log_id);
    for (r, _) in frames(&bytes) {
        let f = codec::decode_frame(&bytes[r.clone()]).unwrap();
        if let Frame::Event(p) = f.frame {
            let (salt, body) = p.salt_and_body.unwrap();
            let mut body = body.to_vec();
            edit(p.envelope.seq, &mut body);
            let mut env = p.envelope;
            env.commitment = hash::commit_body(salt, &body);
            env.body_len = body.len() as u32;
            env.prev = head;
            let env_bytes = env.encode();
            head = hash::event_hash(&env_bytes);
            codec::put_event_frame(&mut out, &env_bytes, Some((salt, &body)));
        } else if let Frame::Checkpoint {
            body: mut cp,
            signature: sig,
        } = f.frame
        {
            cp.head = head;
            codec::put_checkpoint_frame(&mut out, &cp.encode(), &sig);
        }
    }
    // A pre-zeroed segment keeps its zeros after the frames.
    if out.len() < bytes.len() {
        out.resize(bytes.len(), 0);
    }
    std::fs::write(seg, out).unwrap();
}

#[test]
fn a_rewrite_with_every_hash_and_crc_recomputed_is_caught_by_the_signature() {
    let d = tempfile::tempdir().unwrap();
    common::make_log(d.path(), 60, 5, opts());
    // An identity edit re-forges to the very same bytes: the forger is faithful.
    let before = std::fs::read(common::segment(d.path())).unwrap();
    forge(&common::segment(d.path()), |_, _| {});
    assert_eq!(std::fs::read(common::segment(d.path())).unwrap(), before);

    forge(&common::segment(d.path()), |seq, body| {
        if seq == 33 {
            body.extend_from_slice(b" (granted to attacker)");
        }
    });
    for all_signatures in [false, true] {
        let err = verify_log(
            d.path(),
            &key().public(),
            &VerifyOptions {
                all_signatures,
                trusted: None,
            },
        )
        .unwrap_err();
        // Batches of 5: the checkpoint at size 30 is still valid; event 30 is the first
        // event no valid signature covers.
        assert_eq!(
            err.failure,
            Failure::BadSignature {
                covered_by_valid: 30
            },
            "{err}"
        );
        assert_eq!(err.seq, Some(30));
    }
    // The writer refuses to build on it too.
    assert!(matches!(
        Log::open(d.path(), key(), opts()),
        Err(LogError::WrongKey)
    ));
}

fn splice(seg: &Path, f: impl Fn(&[u8], &[(Range<usize>, Kind)]) -> Vec<u8>) {
    let bytes = std::fs::read(seg).unwrap();
    let map = frames(&bytes);
    std::fs::write(seg, f(&bytes, &map)).unwrap();
}

fn event_range(map: &[(Range<usize>, Kind)], seq: u64) -> Range<usize> {
    map.iter()
        .find(|(_, k)| matches!(k, Kind::Event(s) if *s == seq))
        .unwrap()
        .0
        .clone()
}

#[test]
fn deleted_duplicated_reordered_and_inserted_events_are_detected() {
    let src = tempfile::tempdir().unwrap();
    common::make_log(src.path(), 30, 4, opts());

    // Deleted.
    let d = common::copy_dir(src.path());
    splice(&common::segment(d.path()), |b, m| {
        let r = event_range(m, 9);
        [&b[..r.start], &b[r.end..]].concat()
    });
    let e = verify(d.path()).unwrap_err();
    assert_eq!(
        (e.seq, &e.failure),
        (
            Some(9),
            &Failure::Sequence {
                expected: 9,
                found: 10
            }
        ),
        "{e}"
    );

    // Duplicated.
    let d = common::copy_dir(src.path());
    splice(&common::segment(d.path()), |b, m| {
        let r = event_range(m, 9);
        [&b[..r.end], &b[r.clone()], &b[r.end..]].concat()
    });
    let e = verify(d.path()).unwrap_err();
    assert_eq!(
        (e.seq, &e.failure),
        (
            Some(10),
            &Failure::Sequence {
                expected: 10,
                found: 9
            }
        ),
        "{e}"
    );

    // Reordered (two events of one batch swapped).
    let d = common::copy_dir(src.path());
    splice(&common::segment(d.path()), |b, m| {
        let (r1, r2) = (event_range(m, 9), event_range(m, 10));
        [&b[..r1.start], &b[r2.clone()], &b[r1.clone()], &b[r2.end..]].concat()
    });
    let e = verify(d.path()).unwrap_err();
    assert_eq!(
        (e.seq, &e.failure),
        (
            Some(9),
            &Failure::Sequence {
                expected: 9,
                found: 10
            }
        ),
        "{e}"
    );

    // Inserted: a well-formed event chained onto the head, appended without the key.
    let d = common::copy_dir(src.path());
    let head = LogReader::open(d.path(), None)
        .unwrap()
        .checkpoint()
        .body
        .head;
    let env = codec::Envelope {
        version: codec::FORMAT_VERSION,
        seq: 30,
        time_ms: 1_900_000_000_000,
        kind: 1,
        class: 0,
        prev: head,
        commitment: hash::commit_body(&[], b"forged grant"),
        body_len: 12,
    };
    let mut extra = Vec::new();
    codec::put_event_frame(&mut extra, &env.encode(), Some((&[], b"forged grant")));
    // Where the writer's next batch would go: over the zeros of a pre-zeroed segment.
    common::write_at(
        &common::segment(d.path()),
        common::committed_end(d.path()),
        &extra,
    );
    let e = verify(d.path()).unwrap_err();
    assert_eq!((e.seq, &e.failure), (Some(30), &Failure::NotCovered), "{e}");
    // Recovery drops it rather than signing it: unsigned events are never adopted.
    let log = Log::open(d.path(), key(), opts()).unwrap();
    assert_eq!(log.recovery().dropped_events, 1);
    log.close().unwrap();
    assert_eq!(verify(d.path()).unwrap().events, 30);
}

#[test]
fn a_log_cut_back_to_an_older_signed_state_is_caught_against_a_kept_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let kept = d.path().join("kept-checkpoint");
    let dir = d.path().join("log");
    let o = LogOptions {
        checkpoint_file: Some(kept.clone()),
        ..opts()
    };
    common::make_log(&dir, 20, 4, o.clone());
    // The auditor keeps the checkpoint at 20 events.
    let auditor = SignedCheckpoint::read_file(&kept).unwrap();
    assert_eq!(auditor.body.size, 20);
    let log = Log::open(&dir, key(), o.clone()).unwrap();
    for i in 20..28 {
        log.append(common::entry(i)).unwrap();
    }
    log.close().unwrap();

    // Cut the log back to the (validly signed) checkpoint at 12 events.
    let seg = common::segment(&dir);
    let bytes = std::fs::read(&seg).unwrap();
    let cut = frames(&bytes)
        .into_iter()
        .find(|(_, k)| matches!(k, Kind::Checkpoint(12)))
        .unwrap()
        .0
        .end;
    std::fs::write(&seg, &bytes[..cut]).unwrap();
    std::fs::remove_file(dir.join("index")).unwrap();

    // On its own the older state is a valid log...
    assert_eq!(verify(&dir).unwrap().events, 12);
    // ...but not one that extends what the auditor kept.
    let err = verify_log(
        &dir,
        &key().public(),
        &VerifyOptions {
            all_signatures: false,
            trusted: Some(auditor),
        },
    )
    .unwrap_err();
    assert_eq!(
        err.failure,
        Failure::Rollback {
            log_size: 12,
            trusted_size: 20
        },
        "{err}"
    );
    // And the writer refuses it against its kept checkpoint (size 28).
    match Log::open(&dir, key(), o) {
        Err(LogError::Rollback {
            log_size,
            kept_size,
            ..
        }) => assert_eq!((log_size, kept_size), (12, 28)),
        other => panic!("expected a rollback error, got {other:?}"),
    }
}

#[test]
fn a_trusted_checkpoint_of_another_history_is_a_fork() {
    let d = tempfile::tempdir().unwrap();
    common::make_log(d.path(), 10, 2, opts());
    let real = LogReader::open(d.path(), None).unwrap().checkpoint().body;
    // Validly signed (the test holds the key) but for a different head at size 6.
    let fork = SignedCheckpoint::sign(&key(), real.log_id, 6, [7; 32], real.time_ms);
    let err = verify_log(
        d.path(),
        &key().public(),
        &VerifyOptions {
            all_signatures: false,
            trusted: Some(fork),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err.failure, Failure::TrustedCheckpoint(_)),
        "{err}"
    );
    assert_eq!(err.seq, Some(5));
    // One that the log does extend passes.
    let ok = LogReader::open(d.path(), None).unwrap();
    let at6 = SignedCheckpoint::sign(
        &key(),
        real.log_id,
        6,
        ok.get(5).unwrap().hash,
        real.time_ms,
    );
    let r = verify_log(
        d.path(),
        &key().public(),
        &VerifyOptions {
            all_signatures: false,
            trusted: Some(at6),
        },
    )
    .unwrap();
    assert_eq!(r.extends_trusted, Some(6));
}

#[test]
fn huge_length_fields_give_a_clean_error_without_a_large_allocation() {
    for len in [
        u32::MAX,
        0xFFFF_FF00,
        codec::MAX_FRAME_LEN,
        codec::MAX_FRAME_LEN + 1,
    ] {
        let d = tempfile::tempdir().unwrap();
        // Small segments: what is measured is what a length field makes the readers
        // allocate, not the reading of a file.
        let o = LogOptions {
            segment_bytes: 64 << 10,
            ..opts()
        };
        common::make_log(d.path(), 20, 4, o);
        let seg = common::segment(d.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        let r = event_range(&frames(&bytes), 13);
        bytes[r.start..r.start + 4].copy_from_slice(&len.to_le_bytes());
        std::fs::write(&seg, &bytes).unwrap();

        let (res, largest) = largest_allocation(|| verify(d.path()));
        let err = res.unwrap_err();
        assert_eq!(err.seq, Some(13), "{err}");
        assert!(
            largest < 1 << 20,
            "verify allocated {largest} bytes for a length of {len}"
        );

        let reader = LogReader::open(d.path(), None).unwrap();
        let (res, largest) = largest_allocation(|| reader.get(13));
        assert!(res.is_err());
        assert!(
            largest < 2 << 20,
            "get allocated {largest} bytes for a length of {len}"
        );
        let (res, largest) = largest_allocation(|| {
            reader
                .events_from(0)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
        });
        assert!(res.is_err());
        assert!(
            largest < 2 << 20,
            "iteration allocated {largest} bytes for a length of {len}"
        );
    }
}

#[test]
fn a_bundle_with_a_checkpoint_before_its_first_event_or_an_overflowing_range_is_refused() {
    let d = tempfile::tempdir().unwrap();
    common::make_log(d.path(), 20, 2, opts());
    let reader = LogReader::open(d.path(), None).unwrap();
    let pk = key().public();
    let mut b = Vec::new();
    export(&reader, &pk, 6, Some(11), &mut b).unwrap();
    verify_bundle(&b, &pk, &VerifyOptions::default()).unwrap();
    // Insert a copy of the bundle's last checkpoint frame right after the header.
    let h = codec::BUNDLE_HEADER_LEN;
    let mut pos = h;
    let mut last_cp = 0..0;
    while pos < b.len() {
        let f = codec::decode_frame(&b[pos..]).unwrap();
        if let Frame::Checkpoint { .. } = f.frame {
            last_cp = pos..pos + f.total_len;
        }
        pos += f.total_len;
    }
    let forged = [&b[..h], &b[last_cp], &b[h..]].concat();
    assert!(verify_bundle(&forged, &pk, &VerifyOptions::default()).is_err());
    // A header claiming `to = u64::MAX`, with a recomputed CRC: an error, not a panic or wrap.
    let mut hdr = codec::decode_bundle_header(&b).unwrap();
    hdr.to = u64::MAX;
    let evil = [&codec::encode_bundle_header(&hdr)[..], &b[h..]].concat();
    assert!(verify_bundle(&evil, &pk, &VerifyOptions::default()).is_err());
}

#[test]
fn deleting_the_checkpoint_that_opens_a_segment_is_detected() {
    let d = tempfile::tempdir().unwrap();
    varied_log(
        d.path(),
        120,
        LogOptions {
            segment_bytes: 4096,
            ..opts()
        },
    );
    let segs = common::segments(d.path());
    assert!(segs.len() > 2);
    let seg = &segs[1];
    splice(seg, |b, m| {
        let (r, k) = &m[0];
        assert!(matches!(k, Kind::Checkpoint(_)));
        [&b[..r.start], &b[r.end..]].concat()
    });
    let err = verify(d.path()).unwrap_err();
    assert!(matches!(err.failure, Failure::Structure(_)), "{err}");
}

/// Feeds segments (file name, bytes) to a [`scopehold_log::SegmentVerifier`].
fn verify_segments(
    segs: &[(String, Vec<u8>)],
    opts: &VerifyOptions,
) -> Result<scopehold_log::VerifyReport, scopehold_log::VerifyError> {
    let public = key().public();
    let mut v = scopehold_log::SegmentVerifier::new(&public, opts);
    for (name, bytes) in segs {
        v.segment(name, bytes)?;
    }
    v.finish()
}

#[test]
fn a_log_handed_over_segment_by_segment_verifies_only_whole_and_unchanged() {
    let d = tempfile::tempdir().unwrap();
    varied_log(
        d.path(),
        120,
        LogOptions {
            segment_bytes: 8 * 1024,
            ..opts()
        },
    );
    let segs: Vec<(String, Vec<u8>)> = common::segments(d.path())
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    assert!(segs.len() >= 3, "several segments");
    let all = VerifyOptions {
        all_signatures: true,
        trusted: None,
    };
    let r = verify_segments(&segs, &all).unwrap();
    let whole = verify_log(d.path(), &key().public(), &all).unwrap();
    assert_eq!((r.events, r.head), (whole.events, whole.head));
    assert_eq!(r.checkpoints, whole.checkpoints);

    // A change to any byte (every 7th, every segment) is caught.
    for (i, (_, bytes)) in segs.iter().enumerate() {
        for off in (0..bytes.len()).step_by(7) {
            let mut s = segs.clone();
            s[i].1[off] ^= 0x04;
            verify_segments(&s, &all).expect_err(&format!("segment {i}, offset {off}"));
        }
    }
    // The last segment cut inside its final batch: it no longer ends with a checkpoint.
    let mut s = segs.clone();
    let last = s.last_mut().unwrap();
    let map = frames(&last.1);
    let (r, _) = map
        .iter()
        .rev()
        .find(|(_, k)| matches!(k, Kind::Event(_)))
        .unwrap();
    last.1.truncate(r.end);
    let e = verify_segments(&s, &all).unwrap_err();
    assert!(
        matches!(&e.failure, Failure::Structure(m) if m.contains("does not end with a checkpoint")),
        "{e}"
    );
    // A segment left out, or handed over under another name.
    let mut s = segs.clone();
    s.remove(1);
    verify_segments(&s, &all).unwrap_err();
    let mut s = segs.clone();
    s[1].0 = "00000000000000000001.seg".into();
    verify_segments(&s, &all).unwrap_err();
    // Nothing at all, and another key.
    verify_segments(&[], &all).unwrap_err();
    let other = scopehold_log::LogKey::from_seed(&[9; 32]).public();
    let mut v = scopehold_log::SegmentVerifier::new(&other, &all);
    let e = segs
        .iter()
        .try_for_each(|(n, b)| v.segment(n, b))
        .and_then(|_| v.finish().map(|_| ()))
        .unwrap_err();
    assert!(matches!(e.failure, Failure::BadSignature { .. }), "{e}");
}
