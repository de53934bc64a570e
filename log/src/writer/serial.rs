//! The serial writer: group commit led by the appender itself when the disk is idle.
//!
//! Handing every batch to a writer thread costs two thread wake-ups per commit (appender →
//! writer, writer → appender). With one appender in flight those wake-ups are most of what a
//! commit costs above its fdatasync. So an appender that finds the writer idle commits its own
//! batch on its own thread (it *leads*); one that finds a commit in progress only queues its
//! entries, and the committer hands what queued up behind it to the writer thread, which keeps
//! committing batches back to back while appenders keep arriving (the same batches the
//! thread-only writer formed: everything that arrived during the previous fdatasync).
//!
//! One token, `busy`, says who may touch the writer's state (`Core`): an inline leader or the
//! thread. Whoever holds it takes batches from the front of the queue, so sequence numbers
//! follow the order of [`Serial::push`], which is what a caller that decides under its own
//! lock relies on. Erasures and the close go to the thread; a leader never runs them on its
//! caller's thread. The queue's lock and the core's lock are never held together, and no
//! callback runs under the queue's lock, so a callback may append again.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{AppendError, Callback, CloseError, EraseError, Msg, Sequencer, Syncer, batch_len};
use crate::codec::{CHECKPOINT_FRAME_LEN, MAX_BATCH_BYTES};

/// The writer's state, touched only by the holder of the `busy` token.
pub(super) struct Core {
    pub(super) seq: Sequencer,
    pub(super) sync: Syncer,
}

impl Core {
    /// Commits one batch (or fails it if the writer has stopped).
    fn append(&mut self, batch: &mut Vec<(Vec<super::Entry>, Callback)>) {
        if let Some(why) = self.sync.poisoned.clone() {
            for (_, cb) in batch.drain(..) {
                cb(Err(AppendError::Poisoned(why.clone())));
            }
            return;
        }
        let p = self.seq.prepare(batch);
        self.sync.commit(p);
    }

    /// When the kept checkpoint falls due, if a commit is waiting for it.
    fn kept_deadline(&self) -> Option<Instant> {
        self.sync
            .kept_due()
            .then(|| Instant::now() + self.sync.kept_wait())
    }
}

struct Queue {
    msgs: VecDeque<Msg>,
    /// Someone (an inline leader or the thread) is committing.
    busy: bool,
    /// The `busy` token is the thread's: it commits until the queue is empty.
    thread_turn: bool,
    /// The thread has closed the log: every later message fails.
    closed: bool,
    /// When the thread must write the kept checkpoint (a commit left it due).
    kept_deadline: Option<Instant>,
    /// Events in the last batch committed: more than one means appenders overlap.
    last_batch: usize,
}

/// The queue, the token and the core, shared by [`Log`](super::Log) and the writer thread.
pub(super) struct Serial {
    queue: Mutex<Queue>,
    wake: Condvar,
    core: Mutex<Core>,
    max_batch_events: usize,
}

impl Serial {
    pub(super) fn new(seq: Sequencer, sync: Syncer) -> Arc<Self> {
        let max_batch_events = seq.max_batch_events.max(1);
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
            core: Mutex::new(Core { seq, sync }),
            max_batch_events,
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message. An append waits for [`lead`](Self::lead) (or for whoever commits
    /// now); an erasure or the close is handed to the thread at once if nobody commits.
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

    /// Commits what is queued at the front, on the calling thread, if nobody is committing
    /// and appenders do not overlap; returns at once otherwise (the committer, or the thread,
    /// takes it). Whatever queued up meanwhile is handed to the thread, so the caller returns
    /// after one commit.
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
            if q.last_batch > 1 || q.msgs.len() > 1 {
                q.thread_turn = true;
                drop(q);
                self.wake.notify_one();
                return;
            }
            self.take_appends(&mut q.msgs, &mut batch);
        }
        let events = batch.iter().map(|(es, _)| es.len()).sum();
        let deadline = {
            let mut core = self.core();
            core.append(&mut batch);
            core.kept_deadline()
        };
        let mut q = self.queue();
        let arm = deadline.is_some() && q.kept_deadline.is_none();
        q.kept_deadline = deadline;
        q.last_batch = events;
        if !q.msgs.is_empty() {
            q.thread_turn = true;
        } else {
            q.busy = false;
            if !arm {
                return;
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Takes appends from the front of the queue, as many as one batch may hold.
    fn take_appends(&self, msgs: &mut VecDeque<Msg>, out: &mut Vec<(Vec<super::Entry>, Callback)>) {
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
    }

    /// The writer thread: commits what is handed to it, carries out erasures, writes the kept
    /// checkpoint when it falls due, and closes the log.
    pub(super) fn run(self: Arc<Self>) {
        let mut q = self.queue();
        loop {
            if !q.thread_turn {
                let now = Instant::now();
                match q.kept_deadline {
                    Some(d) if d <= now => {
                        if q.busy {
                            // A leader commits; it re-arms the deadline when it is done.
                            q.kept_deadline = None;
                            continue;
                        }
                        q.busy = true;
                        q.thread_turn = true;
                        q.kept_deadline = None;
                        drop(q);
                        let deadline = {
                            let mut core = self.core();
                            if core.sync.kept_due() {
                                core.sync.write_kept();
                            }
                            core.kept_deadline()
                        };
                        q = self.queue();
                        q.kept_deadline = deadline;
                        continue;
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
                    self.take_appends(&mut q.msgs, &mut batch);
                    let events = batch.iter().map(|(es, _)| es.len()).sum();
                    drop(q);
                    let deadline = {
                        let mut core = self.core();
                        core.append(&mut batch);
                        core.kept_deadline()
                    };
                    q = self.queue();
                    q.kept_deadline = deadline;
                    q.last_batch = events;
                }
                Some(Msg::Erase(..)) => {
                    let Some(Msg::Erase(seqs, done)) = q.msgs.pop_front() else {
                        unreachable!("the front was an erasure");
                    };
                    drop(q);
                    self.core().sync.erase(seqs, done);
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
                    let r = {
                        let mut core = self.core();
                        core.sync.finish();
                        core.sync.close_result()
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
        Msg::Append(_, cb) => cb(Err(AppendError::Closed)),
        Msg::Erase(_, done) => done(Err(EraseError::Closed)),
        Msg::Close(ack) => {
            let _ = ack.send(Ok::<(), CloseError>(()));
        }
    }
}
