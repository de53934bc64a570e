//! The replica seam: every batch reaches the replica, in order, before it is acknowledged; a
//! replica's refusal poisons the writer; batches copied into another writer of the same log
//! are checked before anything is written, and the copy verifies.

use std::sync::{Arc, Mutex};

use scopehold_log::replica::{Batch, BatchVerifier, Replica, for_each_batch};
use scopehold_log::{AppendError, Log, LogOptions, VerifyOptions, hash, verify_log};

use crate::common::{entry, key, opts};

/// What the replica was told of one batch: first seq, previous head, size, frames.
type Seen = (u64, [u8; 32], u64, Vec<u8>);

#[derive(Debug, Default)]
struct Recorder {
    batches: Mutex<Vec<Seen>>,
    refuse: Mutex<bool>,
}

impl Replica for Recorder {
    fn commit(&self, b: &Batch<'_>) -> Result<(), String> {
        if *self.refuse.lock().unwrap() {
            return Err("the store is gone".into());
        }
        self.batches.lock().unwrap().push((
            b.first_seq,
            b.prev,
            b.checkpoint.body.size,
            b.frames.to_vec(),
        ));
        Ok(())
    }
}

fn with(rec: &Arc<Recorder>) -> LogOptions {
    LogOptions {
        replica: Some(rec.clone() as Arc<dyn Replica>),
        ..opts()
    }
}

#[test]
fn every_batch_reaches_the_replica_in_chain_order_and_copies_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let rec = Arc::new(Recorder::default());
    let log = Log::create(&a, key(), with(&rec)).unwrap();
    let id = log.log_id();
    for i in 0..5u64 {
        log.append_batch((i * 3..i * 3 + 3).map(entry).collect())
            .unwrap();
    }
    let head = log.status().head;
    log.close().unwrap();
    let got = rec.batches.lock().unwrap().clone();
    assert_eq!(got.len(), 5, "one replica commit per batch");
    let mut prev = hash::genesis(&id);
    let mut v = BatchVerifier::new(id, key().public());
    for (i, (first, p, size, frames)) in got.iter().enumerate() {
        assert_eq!((*first, *size), (i as u64 * 3, i as u64 * 3 + 3));
        assert_eq!(*p, prev, "each batch names the head before it");
        let c = v.check(frames).unwrap();
        prev = c.checkpoint.body.head;
    }
    assert_eq!(prev, head);

    // The local log reads back as exactly those batches.
    let mut local = Vec::new();
    for_each_batch(&a, 0, |b| {
        local.push((
            b.first_seq,
            b.prev,
            b.checkpoint.body.size,
            b.frames.to_vec(),
        ));
        Ok(())
    })
    .unwrap();
    assert_eq!(local, got);

    // Another writer of the same log takes them, checked; the copy verifies and ends where
    // the original does. A tampered or out-of-order batch is refused with nothing written.
    let copy = Log::create_with_id(&b, key(), opts(), id).unwrap();
    let mut tampered = got[0].3.clone();
    let n = tampered.len();
    tampered[n / 2] ^= 1;
    assert!(matches!(
        copy.append_copied(tampered),
        Err(AppendError::Refused(_))
    ));
    assert!(
        matches!(copy.append_copied(got[1].3.clone()), Err(AppendError::Refused(why)) if why.contains("comes next"))
    );
    assert_eq!(copy.status().size, 0, "a refused batch writes nothing");
    for (_, _, size, frames) in &got {
        assert_eq!(copy.append_copied(frames.clone()).unwrap().seq + 1, *size);
    }
    assert_eq!(copy.status().head, head);
    // And the writer appends its own events after them, on the same chain.
    copy.append(entry(15)).unwrap();
    copy.close().unwrap();
    let r = verify_log(&b, &key().public(), &VerifyOptions::default()).unwrap();
    assert_eq!(r.events, 16);
}

#[test]
fn a_replica_refusal_poisons_the_writer_and_nothing_is_written_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::default());
    let log = Log::create(tmp.path(), key(), with(&rec)).unwrap();
    log.append(entry(0)).unwrap();
    *rec.refuse.lock().unwrap() = true;
    let e = log.append(entry(1)).unwrap_err();
    assert!(
        matches!(&e, AppendError::Poisoned(why) if why.contains("the store is gone")),
        "{e}"
    );
    *rec.refuse.lock().unwrap() = false;
    assert!(log.append(entry(2)).is_err(), "poisoned until reopened");
    assert_eq!(log.status().size, 1);
    drop(log);
    let r = verify_log(tmp.path(), &key().public(), &VerifyOptions::default()).unwrap();
    assert_eq!(
        r.events, 1,
        "the refused batch never reached the local segment"
    );
}

/// A frame may end in a zero byte (here, a checkpoint's signature): the batch it closes is
/// still read back whole, where the data ends is found from the frames, not from the last
/// nonzero byte of the segment.
#[test]
fn a_batch_whose_last_byte_is_zero_is_read_back_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let log = Log::create(&dir, key(), opts()).unwrap();
    // Each batch's checkpoint signature ends in a zero byte one time in 256: bounded, and
    // with 4000 tries missing it has odds of about 1 in 10^7.
    let mut found = false;
    for i in 0..4000u64 {
        log.append_batch(vec![entry(i)]).unwrap();
        let mut last = None;
        for_each_batch(&dir, i, |b| {
            last = Some(b.frames.last().copied());
            Ok(())
        })
        .unwrap();
        assert!(last.is_some(), "batch {i} was not read back");
        if last == Some(Some(0)) {
            found = true;
            break;
        }
    }
    assert!(found, "no checkpoint ended in a zero byte");
    let size = log.status().size;
    let mut n = 0;
    for_each_batch(&dir, 0, |b| {
        n = b.checkpoint.body.size;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, size);
}
