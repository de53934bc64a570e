//! The serial writer's lead (see `writer/serial.rs`): a lone appender commits on its own
//! thread, queued entries keep the order they were queued in and wait for their lead,
//! overlapping appenders are committed by the writer thread, erasures run behind what was
//! queued before them, callbacks may append again, and the kept checkpoint still follows an
//! inline commit within its interval.

use std::sync::mpsc;
use std::time::Duration;

use scopehold_log::{Entry, Log, LogOptions, LogReader, Receipt, verify_log};

use crate::common::{key, opts};

fn serial() -> LogOptions {
    LogOptions {
        pipeline: false,
        ..opts()
    }
}

/// Both forms: serial, and pipelined (the writer thread signs the next batch while a sync
/// thread writes the last); a lone appender leads in either.
fn both() -> [(&'static str, LogOptions); 2] {
    [
        ("serial", serial()),
        (
            "pipelined",
            LogOptions {
                pipeline: true,
                ..opts()
            },
        ),
    ]
}

type Outcome = Result<Vec<Receipt>, scopehold_log::AppendError>;

/// A callback that reports its outcome and the thread it ran on.
fn reporting() -> (
    scopehold_log::Callback,
    mpsc::Receiver<(Outcome, std::thread::ThreadId)>,
) {
    let (tx, rx) = mpsc::channel();
    (
        Box::new(move |r| {
            let _ = tx.send((r, std::thread::current().id()));
        }),
        rx,
    )
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_lone_appender_commits_its_batch_on_its_own_thread() {
    for (form, o) in both() {
        lone_appender(form, o);
    }
}

fn lone_appender(form: &str, o: LogOptions) {
    let d = tempfile::tempdir().unwrap();
    let log = Log::create(d.path(), key(), o).unwrap();
    let me = std::thread::current().id();
    for i in 0..20u64 {
        let (cb, rx) = reporting();
        log.submit(vec![Entry::public(1, format!("e{i}").into_bytes())], cb);
        // Committed before `submit` returned, on this thread: no hand-off to the writer.
        let (r, on) = rx
            .try_recv()
            .unwrap_or_else(|_| panic!("{form}: committed inline, before submit returned"));
        assert_eq!(r.unwrap()[0].seq, i);
        assert_eq!(on, me, "{form}: the callback ran on the appender's thread");
    }
    assert_eq!(log.status().batches, 20);
    log.close().unwrap();
    verify_log(d.path(), &key().public(), &Default::default()).unwrap();
}

#[test]
fn queued_entries_wait_for_their_lead_and_keep_their_order() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::create(d.path(), key(), serial()).unwrap();
    let (cb_a, rx_a) = reporting();
    let (cb_b, rx_b) = reporting();
    // As the daemon does: decide and queue under a lock of its own, commit after.
    let lead_a = log.queue(vec![Entry::public(1, b"first".to_vec())], cb_a);
    let lead_b = log.queue(
        vec![
            Entry::public(1, b"second".to_vec()),
            Entry::public(1, b"third".to_vec()),
        ],
        cb_b,
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        rx_a.try_recv().is_err() && rx_b.try_recv().is_err(),
        "nothing is committed before a lead"
    );
    assert_eq!(log.status().size, 0);
    // The later lead commits both, in the order they were queued, in one batch (two were
    // queued, so the writer thread commits them rather than this thread).
    lead_b.commit();
    let (a, _) = rx_a.recv_timeout(WAIT).unwrap();
    let (b, _) = rx_b.recv_timeout(WAIT).unwrap();
    drop(lead_a);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.iter().map(|r| r.seq).collect::<Vec<_>>(), [0]);
    assert_eq!(b.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        a[0].checkpoint, b[1].checkpoint,
        "one batch, one checkpoint"
    );
    assert_eq!(log.status().batches, 1);
    log.close().unwrap();
    let r = LogReader::open(d.path(), Some(&key().public())).unwrap();
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|s| r.get(s).unwrap().body.unwrap().bytes.to_vec())
        .collect();
    assert_eq!(
        bodies,
        [b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
    );
}

#[test]
fn a_dropped_lead_commits_too() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::create(d.path(), key(), serial()).unwrap();
    let (cb, rx) = reporting();
    drop(log.queue(vec![Entry::public(1, b"x".to_vec())], cb));
    let (r, _) = rx.try_recv().expect("committed when the lead was dropped");
    assert_eq!(r.unwrap()[0].seq, 0);
}

#[test]
fn an_erasure_queued_behind_an_unled_append_runs_after_it() {
    for (_, o) in both() {
        erasure_after_queued_append(o);
    }
}

fn erasure_after_queued_append(o: LogOptions) {
    let d = tempfile::tempdir().unwrap();
    let log = Log::create(d.path(), key(), o).unwrap();
    log.append(Entry::public(1, b"before".to_vec())).unwrap();
    let (cb, rx) = reporting();
    let lead = log.queue(
        vec![Entry::secret(3, b"sk-canary-lead-0001".to_vec()).unwrap()],
        cb,
    );
    // Seq 1 is only queued: were the erasure carried out before it, it would be refused as
    // not committed.
    let (etx, erx) = mpsc::channel();
    log.submit_erase(
        vec![1],
        Box::new(move |r| {
            let _ = etx.send(r);
        }),
    );
    let erased = erx.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(erased.erased, [1]);
    let (r, _) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(r.unwrap()[0].seq, 1);
    drop(lead);
    log.close().unwrap();
    let r = LogReader::open(d.path(), Some(&key().public())).unwrap();
    assert!(r.get(1).unwrap().erased);
    verify_log(d.path(), &key().public(), &Default::default()).unwrap();
}

#[test]
fn a_callback_may_append_again() {
    for (_, o) in both() {
        callback_appends(o);
    }
}

fn callback_appends(o: LogOptions) {
    let d = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::create(d.path(), key(), o).unwrap());
    let (tx, rx) = mpsc::channel();
    let again = log.clone();
    log.submit(
        vec![Entry::public(1, b"outer".to_vec())],
        Box::new(move |r| {
            let outer = r.unwrap()[0].seq;
            // From inside the commit that acknowledges `outer`: queued behind it, committed
            // by the writer thread (the caller's commit is still under way).
            let tx2 = tx.clone();
            again.submit(
                vec![Entry::public(1, b"inner".to_vec())],
                Box::new(move |r| {
                    let _ = tx2.send(("inner", r.unwrap()[0].seq));
                }),
            );
            let _ = tx.send(("outer", outer));
        }),
    );
    let mut got = [
        rx.recv_timeout(WAIT).unwrap(),
        rx.recv_timeout(WAIT).unwrap(),
    ];
    got.sort();
    assert_eq!(got, [("inner", 1), ("outer", 0)]);
}

#[test]
fn overlapping_appenders_are_batched_by_the_writer_thread() {
    for (form, o) in both() {
        overlapping(form, o);
    }
}

fn overlapping(form: &str, o: LogOptions) {
    let d = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::create(d.path(), key(), o).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut on_writer = 0;
                for i in 0..100 {
                    let (cb, rx) = reporting();
                    log.submit(vec![Entry::public(1, format!("{t}-{i}").into_bytes())], cb);
                    let (r, on) = rx.recv_timeout(WAIT).unwrap();
                    r.unwrap();
                    if on != std::thread::current().id() {
                        on_writer += 1;
                    }
                }
                on_writer
            })
        })
        .collect();
    let on_writer: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let s = log.status();
    assert_eq!(s.size, 800);
    drop(log);
    verify_log(d.path(), &key().public(), &Default::default()).unwrap();
    assert!(
        s.batches < 800 && on_writer > 0,
        "{form}: overlapping appends are batched ({} batches, {on_writer} acknowledged by another thread)",
        s.batches
    );
}

#[test]
fn the_kept_checkpoint_follows_an_inline_commit_within_its_interval() {
    let d = tempfile::tempdir().unwrap();
    let kept = d.path().join("kept");
    let o = LogOptions {
        checkpoint_file: Some(kept.clone()),
        checkpoint_interval: Duration::from_millis(100),
        ..serial()
    };
    let log_dir = d.path().join("log");
    let log = Log::create(&log_dir, key(), o).unwrap();
    // A first commit writes the kept checkpoint at once (none was written for a while); the
    // second, right after it, leaves it due, and nothing else is appended.
    log.append(Entry::public(1, b"a".to_vec())).unwrap();
    let r = log.append(Entry::public(1, b"b".to_vec())).unwrap();
    let covers = || {
        scopehold_log::SignedCheckpoint::read_file(&kept)
            .ok()
            .map(|c| c.body.size)
    };
    let mut seen = None;
    for _ in 0..100 {
        seen = covers();
        if seen == Some(r.seq + 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen,
        Some(r.seq + 1),
        "the writer thread wrote the kept checkpoint after the inline commit"
    );
    log.close().unwrap();
}
