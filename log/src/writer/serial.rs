//! How batches are formed and who commits them.
//!
//! Handing every batch to a writer thread costs two thread wake-ups per commit (appender →
//! writer, writer → appender). With one appender in flight those wake-ups are most of what a
//! commit costs above its fdatasync. So an appender that finds the writer idle, with no other
//! appender in flight, commits its own batch on its own thread (it *leads*). One that finds a
//! commit in progress only queues its entries, and the committer hands what queued up behind
//! it to the writer thread, which keeps committing batches back to back while appenders keep
//! arriving: everything that arrived during the previous commit goes into the next.
//!
//! Pipelined (`LogOptions::pipeline`), the writer thread only prepares (chains, signs) and
//! hands each batch to a sync thread, so the next batch is signed while the previous one is
//! being fdatasync'd; an inline leader still writes its own batch.
//!
//! One token, `busy`, says who may form and prepare batches: an inline leader or the writer
//! thread. Batches are taken from the front of one queue, so sequence numbers follow the order
//! of [`Serial::push`], which is what a caller that decides under its own lock relies on.
//! Prepared batches are written in the order of their first sequence number, whoever writes
//! them (`commit_in_order`). Erasures, the kept checkpoint's timer and the close belong to the
//! writer thread. No callback runs under the queue's lock, so a callback may append again.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    AppendError, Callback, CloseError, Entry, EraseError, Msg, Prepared, Sequencer, Syncer,
    batch_len, poisoned_reason,
};
use crate::codec::{CHECKPOINT_FRAME_LEN, MAX_BATCH_BYTES};

struct Queue {
    msgs: VecDeque<Msg>,
    /// Someone (an inline leader or the thread) is forming and preparing batches.
    busy: bool,
    /// The `busy` token is the thread's: it takes batches until the queue is empty.
    thread_turn: bool,
    /// The thread has closed the log: every later message fails.
    closed: bool,
    /// When the thread must write the kept checkpoint (a commit left it due).
    kept_deadline: Option<Instant>,
    /// Events in the last batch taken: more than one means appenders overlap.
    last_batch: usize,
}

/// The storage side: the syncer, and the first sequence number of the next batch to write.
struct SyncSide {
    syncer: Syncer,
    next: u64,
    /// Writers waiting for their batch's turn (whether `synced` needs a wake-up).
    waiting: usize,
}

/// The queue, the token, the sequencer and the syncer, shared by [`Log`](super::Log), the
/// writer thread and (pipelined) the sync thread.
pub(super) struct Serial {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Touched only by the holder of the `busy` token.
    seq: Mutex<Sequencer>,
    sync: Mutex<SyncSide>,
    /// A batch was written: the next one in order may go.
    synced: Condvar,
    max_batch_events: usize,
    /// Whether a lone appender may commit on its own thread. Off once a replica is attached:
    /// a commit to a remote store may wait for it to come back, and must not hold an async
    /// caller's thread (a runtime worker) meanwhile.
    inline: std::sync::atomic::AtomicBool,
}

type Batch = Vec<(Vec<Entry>, Callback)>;

impl Serial {
    pub(super) fn new(seq: Sequencer, sync: Syncer) -> Arc<Self> {
        let max_batch_events = seq.max_batch_events.max(1);
        let next = seq.next_seq;
        Arc::new(Self {
            queue: Mutex::new(Queue {
                msgs: VecDeque::new(),
                busy: false,
                thread_turn: false,
                closed: false,
                kept_deadline: None,
                last_batch: 0,
            }),
            wake: Condvar::new(),
            seq: Mutex::new(seq),
            sync: Mutex::new(SyncSide {
                syncer: sync,
                next,
                waiting: 0,
            }),
            synced: Condvar::new(),
            max_batch_events,
            inline: std::sync::atomic::AtomicBool::new(true),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync(&self) -> MutexGuard<'_, SyncSide> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message. An append waits for [`lead`](Self::lead) (or for whoever holds the
    /// token); an erasure or the close is handed to the thread at once if nobody does.
    pub(super) fn push(&self, msg: Msg) {
        let mut q = self.queue();
        if q.closed {
            drop(q);
            return fail(msg);
        }
        let to_thread = !matches!(msg, Msg::Append(..));
        q.msgs.push_back(msg);
        if to_thread && !q.busy {
            q.busy = true;
            q.thread_turn = true;
            drop(q);
            self.wake.notify_one();
        }
    }

    /// Commits what is queued at the front, on the calling thread, if nobody holds the token
    /// and appenders do not overlap; returns at once otherwise (the token's holder, or the
    /// thread, takes it). Whatever queued up meanwhile is handed to the thread, so the caller
    /// returns after one commit.
    ///
    /// Why only when appenders do not overlap: the caller's thread is blocked for the write
    /// and fdatasync. For a lone appender that is the cheapest path there is. When several
    /// are in flight, the callers are the threads that serve the other appenders (a server's
    /// few workers), and blocking one of them for a commit costs more than the two wake-ups
    /// the thread's commit costs, which batching spreads over many events anyway.
    pub(super) fn lead(&self) {
        let mut batch = Vec::new();
        {
            let mut q = self.queue();
            if q.busy || !matches!(q.msgs.front(), Some(Msg::Append(..))) {
                return;
            }
            q.busy = true;
            if q.last_batch > 1
                || q.msgs.len() > 1
                || !self.inline.load(std::sync::atomic::Ordering::Relaxed)
            {
                q.thread_turn = true;
                drop(q);
                self.wake.notify_one();
                return;
            }
            q.last_batch = self.take_appends(&mut q.msgs, &mut batch);
        }
        // The token is held until the batch is written: another lone appender arriving
        // meanwhile is left to the thread rather than block a second caller's thread.
        if let Some(p) = self.prepare(&mut batch) {
            self.commit_in_order(p);
        }
        let mut q = self.queue();
        if q.msgs.is_empty() {
            q.busy = false;
        } else {
            q.thread_turn = true;
            drop(q);
            self.wake.notify_one();
        }
    }

    /// Takes appends from the front of the queue, as many as one batch may hold; returns the
    /// number of events taken.
    fn take_appends(&self, msgs: &mut VecDeque<Msg>, out: &mut Batch) -> usize {
        let mut events = 0usize;
        let mut bytes = CHECKPOINT_FRAME_LEN;
        while let Some(Msg::Append(es, _)) = msgs.front() {
            let n = batch_len(es) - CHECKPOINT_FRAME_LEN;
            // One write per batch stays within the bound a torn write is judged by.
            if !out.is_empty() && (bytes + n > MAX_BATCH_BYTES || events >= self.max_batch_events) {
                break;
            }
            bytes += n;
            events += es.len();
            if let Some(Msg::Append(es, cb)) = msgs.pop_front() {
                out.push((es, cb));
            }
        }
        events
    }

    /// Chains, frames and signs a batch (the token's holder only); fails it if the writer
    /// has stopped.
    fn prepare(&self, batch: &mut Batch) -> Option<Prepared> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = poisoned_reason(&seq.shared) {
            drop(seq);
            for (_, cb) in batch.drain(..) {
                cb(Err(AppendError::Poisoned(why.clone())));
            }
            return None;
        }
        Some(seq.prepare(batch))
    }

    /// Checks and places a copied batch (the token's holder only); fails it if the writer has
    /// stopped or the batch does not continue the log.
    fn prepare_copied(&self, frames: Vec<u8>, cb: Callback) -> Option<Prepared> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = poisoned_reason(&seq.shared) {
            drop(seq);
            cb(Err(AppendError::Poisoned(why)));
            return None;
        }
        match seq.prepare_copied(frames, cb) {
            Ok(p) => Some(p),
            Err((cb, why)) => {
                drop(seq);
                cb(Err(AppendError::Refused(why)));
                None
            }
        }
    }

    /// Waits until every batch prepared before `upto` (a first sequence number) is written,
    /// or the writer has stopped; returns the syncer's side, locked.
    fn wait_written(&self, upto: u64) -> MutexGuard<'_, SyncSide> {
        let mut s = self.sync();
        while s.next != upto && s.syncer.poisoned.is_none() {
            s.waiting += 1;
            s = self.synced.wait(s).unwrap_or_else(|p| p.into_inner());
            s.waiting -= 1;
        }
        s
    }

    /// Writes, fdatasyncs and acknowledges a prepared batch once every batch before it is
    /// written; re-arms the kept checkpoint's timer.
    fn commit_in_order(&self, p: Prepared) {
        let end = p.checkpoint.body.size;
        let mut s = self.wait_written(p.first_seq);
        let acks = s.syncer.commit(p);
        s.next = end;
        let deadline = s
            .syncer
            .kept_due()
            .then(|| Instant::now() + s.syncer.kept_wait());
        let waiting = s.waiting > 0;
        drop(s);
        if waiting {
            self.synced.notify_all();
        }
        for (cb, r) in acks {
            cb(r);
        }
        let mut q = self.queue();
        let arm = deadline.is_some() && q.kept_deadline.is_none();
        q.kept_deadline = deadline;
        drop(q);
        if arm {
            self.wake.notify_one();
        }
    }

    /// Hands every batch from now on to `r` before its local write (see
    /// [`Log::attach_replica`](super::Log::attach_replica)), once what was queued before is
    /// written.
    pub(super) fn attach_replica(&self, r: std::sync::Arc<dyn crate::replica::Replica>) {
        self.inline
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut s = self.wait_written(self.next_seq());
        s.syncer.opts.replica = Some(r);
    }

    /// The next sequence number the sequencer gives (the token's holder only).
    fn next_seq(&self) -> u64 {
        self.seq.lock().unwrap_or_else(|p| p.into_inner()).next_seq
    }

    /// The writer thread: takes batches while appends overlap (and, pipelined, hands them to
    /// a sync thread of its own), carries out erasures, writes the kept checkpoint when it
    /// falls due, and closes the log.
    pub(super) fn run(self: Arc<Self>, pipelined: bool) {
        // Rendezvous: at most one batch prepared ahead of the one being written.
        let (to_sync, sync_thread) = if pipelined {
            let (tx, rx) = mpsc::sync_channel::<Prepared>(0);
            let me = self.clone();
            let h = std::thread::Builder::new()
                .name("scopehold-log-sync".into())
                .spawn(move || {
                    while let Ok(p) = rx.recv() {
                        me.commit_in_order(p);
                    }
                })
                .expect("spawning the log sync thread");
            (Some(tx), Some(h))
        } else {
            (None, None)
        };
        let mut q = self.queue();
        loop {
            if !q.thread_turn {
                let now = Instant::now();
                match q.kept_deadline {
                    Some(d) if d <= now => {
                        q.kept_deadline = None;
                        drop(q);
                        let deadline = {
                            let mut s = self.sync();
                            if s.syncer.kept_due() {
                                s.syncer.write_kept();
                            }
                            s.syncer
                                .kept_due()
                                .then(|| Instant::now() + s.syncer.kept_wait())
                        };
                        q = self.queue();
                        if q.kept_deadline.is_none() {
                            q.kept_deadline = deadline;
                        }
                    }
                    Some(d) => {
                        q = self
                            .wake
                            .wait_timeout(q, d - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    None => {
                        q = self
                            .wake
                            .wait_timeout(q, Duration::from_secs(3600))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
                continue;
            }
            match q.msgs.front() {
                None => {
                    q.busy = false;
                    q.thread_turn = false;
                }
                Some(Msg::Append(..)) => {
                    let mut batch = Vec::new();
                    q.last_batch = self.take_appends(&mut q.msgs, &mut batch);
                    drop(q);
                    if let Some(p) = self.prepare(&mut batch) {
                        match &to_sync {
                            Some(tx) => {
                                if let Err(mpsc::SendError(p)) = tx.send(p) {
                                    self.commit_in_order(p);
                                }
                            }
                            None => self.commit_in_order(p),
                        }
                    }
                    q = self.queue();
                }
                Some(Msg::Copy(..)) => {
                    let Some(Msg::Copy(frames, cb)) = q.msgs.pop_front() else {
                        unreachable!("the front was a copied batch");
                    };
                    drop(q);
                    if let Some(p) = self.prepare_copied(frames, cb) {
                        self.commit_in_order(p);
                    }
                    q = self.queue();
                }
                Some(Msg::Erase(..)) => {
                    let Some(Msg::Erase(seqs, done)) = q.msgs.pop_front() else {
                        unreachable!("the front was an erasure");
                    };
                    drop(q);
                    // After everything queued before it is durable.
                    let r = self.wait_written(self.next_seq()).syncer.erase(seqs);
                    done(r);
                    q = self.queue();
                }
                Some(Msg::Close(_)) => {
                    let Some(Msg::Close(ack)) = q.msgs.pop_front() else {
                        unreachable!("the front was the close");
                    };
                    q.closed = true;
                    // Fail whatever raced in behind the close request.
                    let late: Vec<Msg> = q.msgs.drain(..).collect();
                    drop(q);
                    late.into_iter().for_each(fail);
                    drop(to_sync);
                    if let Some(h) = sync_thread {
                        let _ = h.join();
                    }
                    let r = {
                        let mut s = self.wait_written(self.next_seq());
                        s.syncer.finish();
                        s.syncer.close_result()
                    };
                    let _ = ack.send(r);
                    return;
                }
            }
        }
    }
}

/// Fails a message that came after the close.
fn fail(msg: Msg) {
    match msg {
        Msg::Append(_, cb) | Msg::Copy(_, cb) => cb(Err(AppendError::Closed)),
        Msg::Erase(_, done) => done(Err(EraseError::Closed)),
        Msg::Close(ack) => {
            let _ = ack.send(Ok::<(), CloseError>(()));
        }
    }
}
