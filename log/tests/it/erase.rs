//! Erasure of secret-bearing bodies in place (`Log::erase`): the bodies are gone from every
//! file, while the chain, the checkpoints and exports still verify; what may not be erased is
//! refused with nothing changed; a frame marked erased that an erasure cannot have written is
//! refused; the journal is finished or discarded on open.
//! (Power cuts at each step of an erasure: `powercut.rs`.)

use std::path::{Path, PathBuf};

use scopehold_log::codec::{self, Frame, SEGMENT_HEADER_LEN};
use scopehold_log::{
    ERASE_JOURNAL, EraseError, Failure, FrameError, Log, LogError, LogOptions, LogReader,
    VerifyOptions, export, verify_bundle, verify_log,
};

use crate::common::{self, key, opts};

fn verify(dir: &Path) -> Result<scopehold_log::VerifyReport, scopehold_log::VerifyError> {
    verify_log(dir, &key().public(), &VerifyOptions::default())
}

/// Every file's bytes in `dir`, concatenated (to look for a body anywhere in the log).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        // The spare holds nothing but zeros, and is removed when the options change.
        if p.is_file() && !common::is_spare(&p) {
            v.extend(std::fs::read(p).unwrap());
        }
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A log of `n` common entries (every third secret-bearing), small segments.
fn log_of(dir: &Path, n: u64) {
    common::make_log(
        dir,
        n,
        4,
        LogOptions {
            segment_bytes: 1024,
            ..opts()
        },
    );
}

#[test]
fn erased_bodies_are_gone_and_everything_still_verifies() {
    let d = tempfile::tempdir().unwrap();
    log_of(d.path(), 30);
    let before = verify(d.path()).unwrap();
    assert_eq!(before.erased_bodies, 0);
    let targets = [2u64, 8, 17, 29];
    for &t in &targets {
        assert!(contains(&all_bytes(d.path()), &common::body_of(t)));
    }
    let sizes: Vec<u64> = common::segments(d.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();

    let log = Log::open(d.path(), key(), opts()).unwrap();
    let r = log.erase(&targets).unwrap();
    assert_eq!(r.erased, targets.to_vec());
    assert!(r.already.is_empty());
    // Asking again is no error: they are erased already.
    let r = log.erase(&[8, 2]).unwrap();
    assert_eq!((r.erased, r.already), (vec![], vec![2, 8]));
    // The log goes on, after the erasure as before.
    let receipt = log.append(common::entry(30)).unwrap();
    assert_eq!(receipt.seq, 30);
    log.close().unwrap();

    // Same segment sizes (offsets unchanged); no journal left; the bodies are nowhere.
    let after: Vec<u64> = common::segments(d.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(after[..sizes.len() - 1], sizes[..sizes.len() - 1]);
    assert!(!d.path().join(ERASE_JOURNAL).exists());
    let bytes = all_bytes(d.path());
    for &t in &targets {
        assert!(!contains(&bytes, &common::body_of(t)), "event {t}");
    }
    // Every other body is as it was.
    assert!(contains(&bytes, &common::body_of(5)));
    assert!(contains(&bytes, &common::body_of(3)));

    let report = verify(d.path()).unwrap();
    assert_eq!((report.events, report.erased_bodies), (31, 4));
    assert_eq!(report.head, verify(d.path()).unwrap().head);
    let all = crate::common::verify_all(d.path(), &key().public()).unwrap();
    assert_eq!(all.erased_bodies, 4);

    let reader = LogReader::open(d.path(), Some(&key().public())).unwrap();
    for rec in reader.events_from(0).unwrap() {
        let rec = rec.unwrap();
        let erased = targets.contains(&rec.seq());
        assert_eq!(rec.erased, erased, "event {}", rec.seq());
        if erased {
            assert!(rec.body.is_none() && rec.body_matches().is_none());
        } else {
            assert_eq!(rec.body_matches(), Some(true), "event {}", rec.seq());
        }
    }

    // An export of an erased record is like any export: the body left out, and it verifies.
    let mut bundle = Vec::new();
    let s = export(&reader, &key().public(), 0, None, &mut bundle).unwrap();
    assert_eq!(s.events, 31);
    let rep = verify_bundle(&bundle, &key().public(), &VerifyOptions::default()).unwrap();
    assert_eq!((rep.events, rep.erased_bodies), (31, 0));
    assert_eq!(rep.redacted_bodies, 10); // every third of 31
    assert_eq!(rep.head, report.head);
}

#[test]
fn what_may_not_be_erased_is_refused_with_nothing_changed() {
    let d = tempfile::tempdir().unwrap();
    log_of(d.path(), 12);
    let before = all_bytes(d.path());
    let log = Log::open(d.path(), key(), opts()).unwrap();
    // A public body, even beside secret ones: the whole request is refused.
    assert_eq!(log.erase(&[2, 3, 5]), Err(EraseError::Public(3)));
    assert_eq!(log.erase(&[2, 12]), Err(EraseError::NotCommitted(12)));
    assert_eq!(log.erase(&[]).unwrap(), Default::default());
    log.close().unwrap();
    let after = all_bytes(d.path());
    assert_eq!(before.len(), after.len());
    for seq in [2u64, 5] {
        assert!(contains(&after, &common::body_of(seq)));
    }
    assert_eq!(verify(d.path()).unwrap().erased_bodies, 0);
    // A closed log refuses.
    let log = Log::open(d.path(), key(), opts()).unwrap();
    log.close().unwrap();
}

/// The frame of event `seq` in `dir`, as (segment, range, bytes of the segment).
fn frame_of(dir: &Path, seq: u64) -> (PathBuf, std::ops::Range<usize>, Vec<u8>) {
    for seg in common::segments(dir) {
        let bytes = std::fs::read(&seg).unwrap();
        let mut pos = SEGMENT_HEADER_LEN;
        while !common::zeros_from(&bytes, pos) {
            let d = codec::decode_frame(&bytes[pos..]).unwrap();
            if let Frame::Event(p) = d.frame
                && p.envelope.seq == seq
            {
                return (seg, pos..pos + d.total_len, bytes);
            }
            pos += d.total_len;
        }
    }
    panic!("event {seq} not in the log")
}

/// Rewrites event `seq`'s frame as `f(envelope bytes)` would frame it (CRC recomputed).
fn rewrite_frame(dir: &Path, seq: u64, f: impl FnOnce(&[u8], u32) -> Vec<u8>) {
    let (seg, range, mut bytes) = frame_of(dir, seq);
    let d = codec::decode_frame(&bytes[range.clone()]).unwrap();
    let Frame::Event(p) = d.frame else {
        unreachable!()
    };
    let new = f(p.envelope_bytes, p.envelope.body_len);
    assert_eq!(new.len(), range.len());
    bytes.splice(range, new);
    std::fs::write(seg, bytes).unwrap();
}

#[test]
fn an_erasure_of_a_public_body_or_one_not_zeroed_is_refused() {
    // A public body marked erased (lengths right, CRC recomputed): public bodies are in every
    // export and checked against their commitment, so the decoder refuses it everywhere.
    let d = tempfile::tempdir().unwrap();
    log_of(d.path(), 6);
    rewrite_frame(d.path(), 1, |env, body_len| {
        let mut out = Vec::new();
        let env_len = (env.len() as u16).to_le_bytes();
        // present 2 with salt_len 0, zeros in place of the body: built by hand, as the
        // library builds erased frames only for secret-bearing bodies.
        let mut payload = vec![codec::FRAME_EVENT];
        payload.extend_from_slice(&env_len);
        payload.extend_from_slice(env);
        payload.extend_from_slice(&[codec::BODY_ERASED, 0]);
        payload.extend(std::iter::repeat_n(0u8, body_len as usize));
        let len = payload.len() as u32;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &payload);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend(payload);
        out
    });
    let e = verify(d.path()).unwrap_err();
    assert_eq!(e.seq, Some(1));
    assert_eq!(
        e.failure,
        Failure::Frame(FrameError::BadErasure("the body is public"))
    );
    assert!(LogReader::open(d.path(), None).unwrap().get(1).is_err());

    // A secret-bearing body marked erased that still holds bytes: refused.
    let d = tempfile::tempdir().unwrap();
    log_of(d.path(), 6);
    rewrite_frame(d.path(), 2, |env, body_len| {
        let mut erased = Vec::new();
        codec::put_erased_event_frame(&mut erased, env, body_len as usize);
        // Put one byte of body back and recompute the CRC.
        let n = erased.len();
        erased[n - 1] = b'x';
        let len = u32::from_le_bytes(erased[..4].try_into().unwrap());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&erased[..4]), &erased[8..]);
        assert_eq!(len as usize, n - 8);
        erased[4..8].copy_from_slice(&crc.to_le_bytes());
        erased
    });
    let e = verify(d.path()).unwrap_err();
    assert_eq!(
        (e.seq, e.failure),
        (
            Some(2),
            Failure::Frame(FrameError::BadErasure("its bytes are not all zero"))
        )
    );

    // Erased by hand, exactly as `erase` would: the log crate cannot tell who erased it
    // (that is the domain's rule: a deletion event must list it), and it verifies.
    let d = tempfile::tempdir().unwrap();
    log_of(d.path(), 6);
    rewrite_frame(d.path(), 2, |env, body_len| {
        let mut erased = Vec::new();
        codec::put_erased_event_frame(&mut erased, env, body_len as usize);
        erased
    });
    assert_eq!(verify(d.path()).unwrap().erased_bodies, 1);
}

#[test]
fn an_erased_frame_in_a_bundle_is_refused() {
    let d = tempfile::tempdir().unwrap();
    log_of(d.path(), 6);
    let reader = LogReader::open(d.path(), None).unwrap();
    let mut bundle = Vec::new();
    export(&reader, &key().public(), 0, None, &mut bundle).unwrap();
    // Replace the left-out frame of event 2 by its erased form (a different length, so
    // rebuild the bundle frame by frame).
    let mut out = bundle[..codec::BUNDLE_HEADER_LEN].to_vec();
    let mut pos = codec::BUNDLE_HEADER_LEN;
    while pos < bundle.len() {
        let f = codec::decode_frame(&bundle[pos..]).unwrap();
        match f.frame {
            Frame::Event(p) if p.envelope.seq == 2 => codec::put_erased_event_frame(
                &mut out,
                p.envelope_bytes,
                p.envelope.body_len as usize,
            ),
            _ => out.extend_from_slice(&bundle[pos..pos + f.total_len]),
        }
        pos += f.total_len;
    }
    let e = verify_bundle(&out, &key().public(), &VerifyOptions::default()).unwrap_err();
    assert_eq!(e.seq, Some(2));
    assert!(
        matches!(e.failure, Failure::Frame(FrameError::BadErasure(_))),
        "{e}"
    );
}

/// Erases `seqs` as an interrupted erasure would leave it: journal written, frames not (yet)
/// overwritten. Done by erasing a copy and taking its journal's place.
fn interrupted_erasure(dir: &Path, seqs: &[u64]) -> Vec<u8> {
    // A real erasure on a copy, stopped after its journal: the journal is what `erase`
    // writes first; get it by failing the overwrite through the storage seam.
    #[derive(Debug)]
    struct NoOverwrite;
    impl scopehold_log::Storage for NoOverwrite {
        fn create_new(&self, p: &Path) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
            scopehold_log::StdStorage.create_new(p)
        }
        fn open_append(&self, p: &Path) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
            scopehold_log::StdStorage.open_append(p)
        }
        fn open_at(
            &self,
            p: &Path,
            offset: u64,
        ) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
            scopehold_log::StdStorage.open_at(p, offset)
        }
        fn rename(&self, a: &Path, b: &Path) -> std::io::Result<()> {
            scopehold_log::StdStorage.rename(a, b)
        }
        fn sync_dir(&self, d: &Path) -> std::io::Result<()> {
            scopehold_log::StdStorage.sync_dir(d)
        }
        fn remove(&self, p: &Path) -> std::io::Result<()> {
            scopehold_log::StdStorage.remove(p)
        }
        fn open_overwrite(&self, _: &Path) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
            Err(std::io::Error::other("injected: no overwrite"))
        }
    }
    let log = Log::open(
        dir,
        key(),
        LogOptions {
            storage: std::sync::Arc::new(NoOverwrite),
            ..opts()
        },
    )
    .unwrap();
    let e = log.erase(seqs).unwrap_err();
    assert!(matches!(e, EraseError::Poisoned(_)), "{e}");
    // The writer is stopped for good: appends fail too.
    assert!(log.append(common::entry(99)).is_err());
    let _ = log.close();
    std::fs::read(dir.join(ERASE_JOURNAL)).expect("the journal stays")
}

#[test]
fn an_interrupted_erasure_is_finished_on_open_and_read_as_done_meanwhile() {
    let d = tempfile::tempdir().unwrap();
    log_of(d.path(), 12);
    interrupted_erasure(d.path(), &[2, 8]);
    // Nothing overwritten yet: the bodies are still there, but the verifier reads the
    // journal's frames in their place (the erasure is as good as done).
    assert!(contains(&all_bytes(d.path()), &common::body_of(8)));
    assert_eq!(verify(d.path()).unwrap().erased_bodies, 2);
    // Half overwritten (as a power cut could leave it): the verifier still reads it as done.
    let (seg, range, mut bytes) = frame_of(d.path(), 2);
    bytes[range.end - 10..range.end].fill(0);
    std::fs::write(seg, &bytes).unwrap();
    assert_eq!(verify(d.path()).unwrap().erased_bodies, 2);

    let log = Log::open(d.path(), key(), opts()).unwrap();
    assert_eq!(log.recovery().erasures_finished, 2);
    log.close().unwrap();
    assert!(!d.path().join(ERASE_JOURNAL).exists());
    let bytes = all_bytes(d.path());
    assert!(!contains(&bytes, &common::body_of(2)));
    assert!(!contains(&bytes, &common::body_of(8)));
    assert_eq!(verify(d.path()).unwrap().erased_bodies, 2);
}

#[test]
fn a_torn_journal_is_discarded_and_a_foreign_one_refused() {
    let d = tempfile::tempdir().unwrap();
    log_of(d.path(), 12);
    let journal = interrupted_erasure(d.path(), &[5]);
    // Torn: cut short. Nothing was overwritten, so it is dropped and the body stays.
    std::fs::write(d.path().join(ERASE_JOURNAL), &journal[..journal.len() - 3]).unwrap();
    assert_eq!(verify(d.path()).unwrap().erased_bodies, 0);
    let log = Log::open(d.path(), key(), opts()).unwrap();
    assert!(log.recovery().erase_journal_discarded);
    assert_eq!(log.recovery().erasures_finished, 0);
    log.close().unwrap();
    assert!(!d.path().join(ERASE_JOURNAL).exists());
    assert!(contains(&all_bytes(d.path()), &common::body_of(5)));

    // A valid journal that names a frame that is not there: the open is refused, named,
    // and nothing is written.
    let other = tempfile::tempdir().unwrap();
    log_of(other.path(), 12);
    let foreign = interrupted_erasure(other.path(), &[5]);
    std::fs::write(d.path().join(ERASE_JOURNAL), &foreign).unwrap();
    let (seg5, _, before) = frame_of(d.path(), 5);
    match Log::open(d.path(), key(), opts()) {
        Err(LogError::Invalid(m)) => assert!(m.contains("another log"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read(&seg5).unwrap(), before);

    // This log's own journal, but the frame it names has changed since (its envelope): the
    // open is refused as corruption at that frame, and nothing is written.
    std::fs::write(d.path().join(ERASE_JOURNAL), &journal).unwrap();
    let (seg, range, mut bytes) = frame_of(d.path(), 5);
    bytes[range.start + 20] ^= 1; // inside the envelope (its time)
    std::fs::write(&seg, &bytes).unwrap();
    match Log::open(d.path(), key(), opts()) {
        Err(LogError::Corrupted {
            offset,
            seq: Some(5),
            reason,
            ..
        }) => {
            assert_eq!(offset, range.start as u64);
            assert!(reason.contains("does not match"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}
