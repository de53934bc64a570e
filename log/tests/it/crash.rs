//! kill -9 crash loop: a child process (this test binary, re-executed) appends from several
//! threads and reports every acknowledged event on stdout; the parent SIGKILLs it at a
//! seed-chosen moment, reopens the log (recovery), and checks that every event ever
//! acknowledged is still there with its body, that nothing else appeared, and that the log
//! verifies. Repeated for many rounds on the same log.
//!
//! A SIGKILL loses nothing the kernel already holds, so what this exercises is recovery from a
//! process dying at any instruction: inside the batch `write()` (a torn tail, when the write
//! spans pages), between the write and its acknowledgement, inside a segment roll or a kept
//! checkpoint replacement, and with the index lagging behind the segments. Power cuts are
//! powercut.rs's business.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use scopehold_log::{
    BodyClass, Entry, Log, LogOptions, LogReader, Receipt, SignedCheckpoint, VerifyOptions,
    verify_log,
};

use crate::common;

const CHILD_DIR_ENV: &str = "SCOPEHOLD_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "SCOPEHOLD_CRASH_ROUND";
const CHILD_KEPT_ENV: &str = "SCOPEHOLD_CRASH_KEPT";
const ROUNDS_ENV: &str = "SCOPEHOLD_CRASH_ROUNDS";
const SEED_ENV: &str = "SCOPEHOLD_CRASH_SEED";

const DEFAULT_ROUNDS: u64 = 50;
const DEFAULT_SEED: u64 = 0x5c0b_e401_dc4a_5401;
const THREADS: u64 = 4;
/// Largest batch an appender submits: also the most events of one thread that can be
/// committed without having been acknowledged when the kill lands.
const MAX_BATCH: u64 = 3;

/// Bounds on the child in case the parent never kills it (it died, or a debugger holds it):
/// the child then stops by itself instead of filling the disk.
const CHILD_MAX_PER_THREAD: u64 = 5_000;
const CHILD_MAX_RUN: Duration = Duration::from_secs(20);
/// How long the parent waits for a child's first acknowledgement (process start and log
/// open) and for its output to end once it is dead. Generous: these only bound a hang.
const FIRST_ACK_WAIT: Duration = Duration::from_secs(30);
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// The options of both the child and the parent's recovery opens. Small (pre-zeroed)
/// segments so that rolls into the spare, and the spare's zero-filling, happen (and get
/// interrupted); a short kept-checkpoint interval so that kills also
/// land inside its replacement.
fn log_opts(kept: &Path) -> LogOptions {
    LogOptions {
        checkpoint_file: Some(kept.to_path_buf()),
        checkpoint_interval: Duration::from_millis(10),
        segment_bytes: 96 << 10,
        ..common::opts()
    }
}

/// The body of event `index` of appender `thread` in `round`: the parent recomputes it from
/// the acknowledgement line, and recognises bodies that were committed but never
/// acknowledged from their prefix.
fn body(round: u64, thread: u64, index: u64) -> Vec<u8> {
    let mix = round
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(thread.wrapping_mul(7_919))
        .wrapping_add(index.wrapping_mul(104_729));
    // Some bodies span pages, so that a batch's single write() covers several pages and a
    // SIGKILL can stop it between two of them: that is the only way a kill -9 leaves a torn
    // tail. Thread 0's are the largest, to widen that window without growing the log much.
    let pad = match (index % 8, thread) {
        (5, 0) => 16_000 + mix % 48_000,
        (5, _) => 1_500 + mix % 2_500,
        _ => mix % 64,
    };
    let mut b = format!("crash r{round:03} t{thread} i{index:06} ").into_bytes();
    b.resize(b.len() + pad as usize, b'a' + (mix % 26) as u8);
    b
}

fn is_secret(index: u64) -> bool {
    index % 3 == 1
}

fn entry(round: u64, thread: u64, index: u64) -> Entry {
    if is_secret(index) {
        Entry::secret(3, body(round, thread, index)).expect("random salt")
    } else {
        Entry::public(10 + thread as u16, body(round, thread, index))
    }
}

/// `(round, thread, index)` from a body's prefix.
fn parse_body(b: &[u8]) -> Option<(u64, u64, u64)> {
    let s = std::str::from_utf8(&b[..b.len().min(40)]).ok()?;
    let mut it = s.strip_prefix("crash ")?.split(' ');
    let round = it.next()?.strip_prefix('r')?.parse().ok()?;
    let thread = it.next()?.strip_prefix('t')?.parse().ok()?;
    let index = it.next()?.strip_prefix('i')?.parse().ok()?;
    Some((round, thread, index))
}

/// splitmix64: enough to spread kill times, and replayable from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi` (up to a negligible modulo bias).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// The child.

/// One line to the parent. The stdout lock keeps a batch's lines together and stops lines
/// of different threads from interleaving; flushing makes an acknowledgement visible before
/// the next append can start, so the parent's view is never behind by more than one batch.
fn tell(lines: impl IntoIterator<Item = String>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()
}

/// Appends until killed. Run only by `kill9_crash_loop`, which sets the environment; a plain
/// `cargo test -- --ignored` finds no directory and returns at once.
#[test]
#[ignore = "child process of crash::kill9_crash_loop, which runs it"]
fn child_appender() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    // libtest has printed "test crash::child_appender ... " without a newline: end that line
    // so that the first acknowledgement starts a line of its own.
    let _ = tell([String::new()]);
    let round = env_u64(CHILD_ROUND_ENV).expect("the parent sets the round");
    let kept = PathBuf::from(
        std::env::var_os(CHILD_KEPT_ENV).expect("the parent sets the kept checkpoint path"),
    );
    let log = match Log::open(&dir, common::key(), log_opts(&kept)) {
        Ok(l) => l,
        Err(e) => {
            let _ = tell([format!("FAIL round {round}: open: {e}")]);
            return;
        }
    };
    let deadline = Instant::now() + CHILD_MAX_RUN;
    thread::scope(|s| {
        for t in 0..THREADS {
            let log = &log;
            s.spawn(move || appender(log, round, t, deadline));
        }
    });
    // Reached only when the parent did not kill us in time.
    if let Err(e) = log.close() {
        let _ = tell([format!("FAIL round {round}: close: {e}")]);
    }
}

fn appender(log: &Log, round: u64, thread: u64, deadline: Instant) {
    let mut index = 0u64;
    let mut step = 0u64;
    while index < CHILD_MAX_PER_THREAD && Instant::now() < deadline {
        // Every fifth append is a batch: its events must get consecutive sequence numbers and
        // survive or vanish together with the rest of the group commit.
        let k = if step % 5 == 4 { MAX_BATCH } else { 1 };
        step += 1;
        let entries = (index..index + k)
            .map(|i| entry(round, thread, i))
            .collect();
        let lines = match log.append_batch(entries) {
            Ok(receipts) if receipts.len() as u64 == k => {
                ack_lines(&receipts, round, thread, index)
            }
            Ok(receipts) => vec![format!(
                "FAIL round {round} thread {thread}: {} receipts for a batch of {k}",
                receipts.len()
            )],
            Err(e) => vec![format!(
                "FAIL round {round} thread {thread} index {index}: append: {e}"
            )],
        };
        let failed = lines.iter().any(|l| l.starts_with("FAIL"));
        // A write error means the parent is gone: nobody is left to kill us, so stop.
        if tell(lines).is_err() || failed {
            return;
        }
        index += k;
    }
}

fn ack_lines(receipts: &[Receipt], round: u64, thread: u64, first_index: u64) -> Vec<String> {
    receipts
        .iter()
        .zip(first_index..)
        .map(|(r, i)| format!("ACK {} {round} {thread} {i}", r.seq))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The parent.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Who {
    round: u64,
    thread: u64,
    index: u64,
}

#[derive(Debug)]
enum Line {
    Ack(u64, Who),
    Fail(String),
}

fn parse_line(l: &str) -> Option<Line> {
    if let Some(rest) = l.strip_prefix("ACK ") {
        let f: Vec<u64> = rest
            .split(' ')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let [seq, round, thread, index] = f[..] else {
            return None;
        };
        return Some(Line::Ack(
            seq,
            Who {
                round,
                thread,
                index,
            },
        ));
    }
    if l.starts_with("FAIL") {
        return Some(Line::Fail(l.to_string()));
    }
    None
}

/// Kills (SIGKILL) and reaps the child however the parent leaves the round, so a failed
/// assertion never leaves an appender running. After a successful `wait`, `kill` is a no-op
/// rather than a signal to a possibly reused pid.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct ChildRun {
    acks: Vec<(u64, Who)>,
    status: ExitStatus,
    stderr: String,
}

/// Runs one child: waits for its first acknowledgement, lets it append for `delay`, kills it,
/// and collects every acknowledgement it managed to print.
fn run_child(exe: &Path, dir: &Path, kept: &Path, round: u64, delay: Duration) -> ChildRun {
    let mut child = Command::new(exe)
        .args([
            "crash::child_appender",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .env(CHILD_KEPT_ENV, kept)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the child test binary");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut guard = ChildGuard(child);

    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            let parsed = match parse_line(&l) {
                Some(p) => p,
                // A line starting "ACK " that does not parse is the child's fault, not chatter.
                None if l.starts_with("ACK ") => Line::Fail(format!("unparsable line {l:?}")),
                None => continue,
            };
            if tx.send(parsed).is_err() {
                break;
            }
        }
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });

    let mut lines = Vec::new();
    match rx.recv_timeout(FIRST_ACK_WAIT) {
        Ok(l) => {
            lines.push(l);
            thread::sleep(delay);
        }
        // Both end the round at once: the child exited early, or it hangs. The checks below
        // report it with its stderr.
        Err(RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout) => {}
    }
    let _ = guard.0.kill();
    let status = guard.0.wait().expect("waiting for the child");

    // The pipe closes with the child, so the reader ends; the timeout only bounds a hang.
    let drain_end = Instant::now() + DRAIN_WAIT;
    loop {
        match rx.recv_timeout(drain_end.saturating_duration_since(Instant::now())) {
            Ok(l) => lines.push(l),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                panic!("round {round}: child output did not end after it was killed")
            }
        }
    }
    reader.join().expect("stdout reader thread");
    let stderr = err_reader.join().expect("stderr reader thread");

    let mut acks = Vec::new();
    for l in lines {
        match l {
            Line::Ack(seq, who) => acks.push((seq, who)),
            Line::Fail(msg) => {
                panic!("round {round}: child reported: {msg}\nchild {status}, stderr:\n{stderr}")
            }
        }
    }
    ChildRun {
        acks,
        status,
        stderr,
    }
}

#[derive(Debug, Default)]
struct Stats {
    acked: u64,
    committed: u64,
    killed: u64,
    /// Rounds whose recovery cut a torn tail.
    torn: u64,
    truncated_bytes: u64,
    dropped_events: u64,
    /// Rounds in which events were committed but their acknowledgement never printed: the
    /// kill landed between the write and the appender hearing back.
    unacked: u64,
    /// Rounds that were torn or unacknowledged: the kill landed while appends were in flight.
    in_flight: u64,
    removed_segments: u64,
    index_rebuilt: u64,
    /// Rounds whose open found a half-made spare segment (the kill landed while it was
    /// being zero-filled) and removed it.
    spares_discarded: u64,
}

#[test]
fn kill9_crash_loop() {
    let rounds = env_u64(ROUNDS_ENV).unwrap_or(DEFAULT_ROUNDS);
    let seed = env_u64(SEED_ENV).unwrap_or(DEFAULT_SEED);
    println!("crash loop: {rounds} rounds, seed {seed:#x} ({SEED_ENV} replays the kill timings)");
    let started = Instant::now();
    let mut rng = Rng(seed);

    let root = tempfile::tempdir().expect("temporary directory");
    let dir = root.path().join("log");
    let kept = root.path().join("kept.checkpoint");
    Log::create(&dir, common::key(), log_opts(&kept))
        .expect("create log")
        .close()
        .expect("close new log");
    let exe = std::env::current_exe().expect("path of the test binary");
    let key = common::key();
    let public = key.public();

    let mut acked: BTreeMap<u64, Who> = BTreeMap::new();
    let mut size = 0u64;
    let mut st = Stats::default();

    for round in 0..rounds {
        let delay = Duration::from_millis(rng.range(5, 40));
        let run = run_child(&exe, &dir, &kept, round, delay);
        let ctx = format!(
            "round {round} (kill {delay:?} after the first ack; child {})",
            run.status
        );
        let ctx = &ctx;
        let stderr = &run.stderr;
        assert!(
            !run.acks.is_empty(),
            "{ctx}: the child acknowledged nothing\nchild stderr:\n{stderr}"
        );
        match run.status.signal() {
            Some(9) => st.killed += 1,
            // Only if it outran the kill: it then closed the log cleanly, which is fine.
            None if run.status.success() => {}
            _ => panic!("{ctx}: the child died on its own\nchild stderr:\n{stderr}"),
        }
        let kept_by_child = kept.exists().then(|| {
            SignedCheckpoint::read_file(&kept).expect("kept checkpoint left by the child")
        });

        // Readers must not need a recovery first: the crashed log, torn tail, stale index and
        // half-made segment included, already shows every acknowledged event of this round.
        {
            let reader = LogReader::open(&dir, Some(&public))
                .unwrap_or_else(|e| panic!("{ctx}: reader on the crashed, unrecovered log: {e}"));
            for &(seq, who) in &run.acks {
                let r = reader.get(seq).unwrap_or_else(|e| {
                    panic!("{ctx}: before recovery, acknowledged event {seq} ({who:?}): {e}")
                });
                let b = r.body.as_ref().map(|b| b.bytes.to_vec());
                assert!(
                    b == Some(body(who.round, who.thread, who.index)),
                    "{ctx}: before recovery, acknowledged event {seq} ({who:?}) has another body"
                );
            }
        }

        let log = Log::open(&dir, common::key(), log_opts(&kept)).unwrap_or_else(|e| {
            panic!("{ctx}: reopening after kill -9 failed: {e}\nchild stderr:\n{stderr}")
        });
        let rec = log.recovery().clone();
        let new_size = log.status().size;
        if rec.truncated_bytes > 0 {
            st.torn += 1;
            st.truncated_bytes += rec.truncated_bytes;
            st.dropped_events += rec.dropped_events;
        }
        st.removed_segments += u64::from(rec.removed_segment.is_some());
        st.index_rebuilt += u64::from(rec.index_rebuilt);
        st.spares_discarded += u64::from(rec.spare_discarded);

        // Acknowledged events of this round: new sequence numbers, within the committed log.
        let mut acked_by_thread = vec![Vec::new(); THREADS as usize];
        for &(seq, who) in &run.acks {
            assert!(
                who.round == round && who.thread < THREADS,
                "{ctx}: acknowledgement for someone else: {who:?}"
            );
            assert!(
                (size..new_size).contains(&seq),
                "{ctx}: acknowledged event {seq} ({who:?}) is not among the events committed this round ({size}..{new_size}): an acknowledged event was lost"
            );
            if let Some(before) = acked.insert(seq, who) {
                panic!("{ctx}: event {seq} acknowledged twice: {before:?} and {who:?}");
            }
            acked_by_thread[who.thread as usize].push(who.index);
        }

        let reader = LogReader::open(&dir, None).unwrap_or_else(|e| panic!("{ctx}: reader: {e}"));
        assert_eq!(
            reader.size(),
            new_size,
            "{ctx}: reader and writer disagree on the committed size"
        );

        // Every acknowledgement of every round so far still holds.
        for (&seq, &who) in &acked {
            let r = reader.get(seq).unwrap_or_else(|e| {
                panic!("{ctx}: acknowledged event {seq} ({who:?}) unreadable: {e}")
            });
            let b = r
                .body
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: event {seq} has no body"));
            assert!(
                *b.bytes == body(who.round, who.thread, who.index),
                "{ctx}: acknowledged event {seq} ({who:?}) has another body: {:?}",
                String::from_utf8_lossy(&b.bytes[..b.bytes.len().min(40)])
            );
            let class = if is_secret(who.index) {
                BodyClass::Secret
            } else {
                BodyClass::Public
            };
            assert_eq!(
                r.class(),
                class,
                "{ctx}: event {seq} ({who:?}) changed class"
            );
            assert_eq!(
                r.body_matches(),
                Some(true),
                "{ctx}: event {seq} ({who:?}) body does not match its commitment"
            );
        }

        // The events committed this round are exactly what the appenders submitted: per
        // thread, a gap-free run from index 0, of which the acknowledged ones are a prefix
        // and at most one batch is unacknowledged (a thread submits only after its previous
        // batch was acknowledged).
        let mut committed_by_thread = vec![Vec::new(); THREADS as usize];
        let mut seen = HashSet::new();
        for (seq, r) in (size..).zip(
            reader
                .events_from(size)
                .unwrap_or_else(|e| panic!("{ctx}: {e}")),
        ) {
            let r = r.unwrap_or_else(|e| panic!("{ctx}: reading event {seq}: {e}"));
            assert_eq!(r.seq(), seq, "{ctx}: events out of order");
            let b = r
                .body
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: event {seq} has no body"));
            let (er, et, ei) = parse_body(&b.bytes)
                .unwrap_or_else(|| panic!("{ctx}: event {seq} has a body no appender wrote"));
            assert!(
                er == round && et < THREADS,
                "{ctx}: event {seq} claims round {er}, thread {et}"
            );
            assert!(
                *b.bytes == body(er, et, ei),
                "{ctx}: event {seq} body was altered"
            );
            assert_eq!(
                r.body_matches(),
                Some(true),
                "{ctx}: event {seq} body does not match its commitment"
            );
            assert!(
                seen.insert((et, ei)),
                "{ctx}: thread {et} index {ei} committed twice"
            );
            committed_by_thread[et as usize].push(ei);
        }
        assert_eq!(
            seen.len() as u64,
            new_size - size,
            "{ctx}: events missing from iteration"
        );
        for t in 0..THREADS as usize {
            let (a, c) = (&mut acked_by_thread[t], &mut committed_by_thread[t]);
            a.sort_unstable();
            c.sort_unstable();
            let a_n = a.len() as u64;
            let c_n = c.len() as u64;
            assert!(
                a.iter().copied().eq(0..a_n),
                "{ctx}: thread {t} acknowledgements have gaps: {a:?}"
            );
            assert!(
                c.iter().copied().eq(0..c_n),
                "{ctx}: thread {t} committed events have gaps"
            );
            assert!(
                c_n >= a_n && c_n - a_n <= MAX_BATCH,
                "{ctx}: thread {t}: {c_n} committed, {a_n} acknowledged"
            );
        }
        drop(reader);

        let n_acked = run.acks.len() as u64;
        let n_committed = new_size - size;
        st.acked += n_acked;
        st.committed += n_committed;
        st.unacked += u64::from(n_committed > n_acked);
        st.in_flight += u64::from(n_committed > n_acked || rec.truncated_bytes > 0);

        log.close()
            .unwrap_or_else(|e| panic!("{ctx}: closing the recovered log: {e}"));
        let opts = VerifyOptions::default();
        let report =
            verify_log(&dir, &public, &opts).unwrap_or_else(|e| panic!("{ctx}: verify_log: {e}"));
        assert_eq!(
            report.events, new_size,
            "{ctx}: verify_log saw another size"
        );
        assert_eq!(
            report.pending_bytes, 0,
            "{ctx}: a closed log has pending bytes"
        );
        // What the child's kept checkpoint attested survived the kill.
        if let Some(cp) = kept_by_child {
            let opts = VerifyOptions {
                trusted: Some(cp),
                ..VerifyOptions::default()
            };
            verify_log(&dir, &public, &opts).unwrap_or_else(|e| {
                panic!("{ctx}: the log does not extend the child's kept checkpoint: {e}")
            });
        }
        let kept_now = SignedCheckpoint::read_file(&kept).expect("kept checkpoint after close");
        assert_eq!(
            kept_now.body.size, new_size,
            "{ctx}: close did not bring the kept checkpoint up to date"
        );
        size = new_size;
    }

    let all = VerifyOptions {
        all_signatures: true,
        ..VerifyOptions::default()
    };
    let report = verify_log(&dir, &public, &all)
        .unwrap_or_else(|e| panic!("final verify_log (all signatures): {e}"));
    let segments = common::segments(&dir).len();
    println!(
        "crash loop: {rounds} rounds in {:.1?}: {} events acknowledged, {} committed ({} checkpoints, {segments} segments); {} rounds ended by SIGKILL; kill landed mid-append in {} rounds ({} with committed but unacknowledged events, {} with a torn tail: {} bytes, {} whole events cut on reopen); {} interrupted segment rolls removed, {} half-made spares removed, index rebuilt {} times",
        started.elapsed(),
        st.acked,
        st.committed,
        report.checkpoints,
        st.killed,
        st.in_flight,
        st.unacked,
        st.torn,
        st.truncated_bytes,
        st.dropped_events,
        st.removed_segments,
        st.spares_discarded,
        st.index_rebuilt,
    );
    // Every segment the loop made is pre-zeroed, and (but for a batch larger than what was
    // left of one) exactly as long as it was made.
    for s in common::segments(&dir) {
        let bytes = std::fs::read(&s).expect("segment");
        assert!(common::is_prezeroed(&bytes), "{}", s.display());
        assert!(bytes.len() as u64 >= log_opts(&kept).segment_bytes.min(1 << 20));
    }
    assert_eq!(report.events, size);
    assert!(
        st.acked > 0,
        "no event was acknowledged: the loop tested nothing"
    );
    assert!(
        st.killed > 0,
        "no child was killed: the loop never crashed anything"
    );
    assert!(
        st.in_flight > 0,
        "no kill landed while appends were in flight: the loop never crashed mid-write"
    );
}
