//! Golden vectors freeze the on-disk format: a small log built from fixed inputs must come
//! out byte for byte as committed in `log/golden/`, the committed files must verify with the
//! committed public key, and the hashes recomputed from FORMAT.md's definitions with plain
//! BLAKE3 calls must match. Regenerate (after a deliberate format change, with a version
//! bump and a migration) with `SCOPEHOLD_UPDATE_GOLDEN=1 cargo test -p scopehold-log --test it golden`.
//!
//! `log/golden/` holds the frozen vectors of segment version 1 (growing segments, the first
//! release's format); `log/golden/v2/` those of segment version 2 (pre-zeroed), built from the
//! same inputs with 1 KiB segments, so that they hold a roll and stay small. The events and
//! checkpoints are the same bytes in both, and so is their export.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use scopehold_log::{
    Entry, Log, LogKey, LogOptions, LogReader, PublicKey, VerifyOptions, export, verify_bundle,
};

const SEED: [u8; 32] = *b"scopehold golden vector key seed";
const LOG_ID: [u8; 32] = *b"scopehold golden vector log id!!";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn golden_v2_dir() -> PathBuf {
    golden_dir().join("v2")
}

/// The segment files of the version-2 vectors.
const V2_SEGMENTS: [&str; 2] = ["00000000000000000000.seg", "00000000000000000003.seg"];

fn clock() -> scopehold_log::Clock {
    let t = Arc::new(AtomicU64::new(1_767_225_600_000)); // 2026-01-01T00:00:00Z
    Arc::new(move || t.fetch_add(1000, Ordering::Relaxed))
}

/// The options of the version-1 vectors: growing segments.
fn v1_options() -> LogOptions {
    LogOptions {
        clock: clock(),
        preallocate: false,
        ..LogOptions::default()
    }
}

/// The options of the version-2 vectors: pre-zeroed 1 KiB segments.
fn v2_options() -> LogOptions {
    LogOptions {
        clock: clock(),
        segment_bytes: 1024,
        ..LogOptions::default()
    }
}

/// Builds the golden log: fixed key, identity, clock and salts; batches of 1, 2 and 2.
fn build(dir: &Path, opts: LogOptions) {
    let log = Log::create_with_id(dir, LogKey::from_seed(&SEED), opts, LOG_ID).unwrap();
    log.append_batch(vec![Entry::public(1, br#"{"project":"demo"}"#.to_vec())])
        .unwrap();
    log.append_batch(vec![
        Entry::secret_with_salt(
            2,
            b"sealed value v1 (ciphertext in real use)".to_vec(),
            [0x11; 32],
        ),
        Entry::public(3, br#"{"grant":"agent-a openai/prod demo"}"#.to_vec()),
    ])
    .unwrap();
    log.append_batch(vec![
        Entry::public(4, br#"{"resolved":"openai/prod","by":"agent-a"}"#.to_vec()),
        Entry::secret_with_salt(2, b"sealed value v2".to_vec(), [0x22; 32]),
    ])
    .unwrap();
    log.close().unwrap();
}

fn expected_text(dir: &Path) -> String {
    let r = LogReader::open(dir, None).unwrap();
    let mut s = format!(
        "public-key {}\nlog-id {}\n",
        LogKey::from_seed(&SEED).public().to_hex(),
        hex::encode(r.log_id())
    );
    for rec in r.events_from(0).unwrap() {
        let rec = rec.unwrap();
        s += &format!(
            "event {} kind {} class {:?} commitment {} hash {}\n",
            rec.seq(),
            rec.envelope.kind,
            rec.class(),
            hex::encode(rec.envelope.commitment),
            hex::encode(rec.hash)
        );
    }
    s += &r.checkpoint().to_text();
    s
}

fn bundle_bytes(dir: &Path) -> Vec<u8> {
    let r = LogReader::open(dir, None).unwrap();
    let mut b = Vec::new();
    export(&r, &LogKey::from_seed(&SEED).public(), 0, None, &mut b).unwrap();
    b
}

#[test]
fn the_golden_log_is_reproduced_byte_for_byte() {
    // Version 1: the writer still writes exactly the frozen bytes when asked for growing
    // segments.
    let d = tempfile::tempdir().unwrap();
    build(d.path(), v1_options());
    let seg = std::fs::read(d.path().join("00000000000000000000.seg")).unwrap();
    let expected = expected_text(d.path());
    let bundle = bundle_bytes(d.path());
    let g = golden_dir();
    if std::env::var_os("SCOPEHOLD_UPDATE_GOLDEN").is_some() {
        std::fs::write(g.join("00000000000000000000.seg"), &seg).unwrap();
        std::fs::write(g.join("expected.txt"), &expected).unwrap();
        std::fs::write(g.join("bundle.bin"), &bundle).unwrap();
        std::fs::write(
            g.join("log.pub"),
            format!("{}\n", LogKey::from_seed(&SEED).public().to_hex()),
        )
        .unwrap();
    }
    assert_eq!(
        seg,
        std::fs::read(g.join("00000000000000000000.seg")).unwrap(),
        "segment bytes changed"
    );
    assert_eq!(
        expected,
        std::fs::read_to_string(g.join("expected.txt")).unwrap(),
        "hashes changed"
    );
    assert_eq!(
        bundle,
        std::fs::read(g.join("bundle.bin")).unwrap(),
        "bundle bytes changed"
    );
}

#[test]
fn the_version_2_golden_log_is_reproduced_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    build(d.path(), v2_options());
    let g = golden_v2_dir();
    let names: Vec<String> = common_segments(d.path());
    assert_eq!(names, V2_SEGMENTS, "the segments a 1 KiB roll makes");
    let expected = expected_text(d.path());
    if std::env::var_os("SCOPEHOLD_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(&g).unwrap();
        for n in &names {
            std::fs::copy(d.path().join(n), g.join(n)).unwrap();
        }
        std::fs::write(g.join("expected.txt"), &expected).unwrap();
    }
    for n in &names {
        let seg = std::fs::read(d.path().join(n)).unwrap();
        assert_eq!(seg.len(), 1024, "{n}: preallocated to the segment size");
        assert_eq!(seg, std::fs::read(g.join(n)).unwrap(), "{n}: bytes changed");
    }
    assert_eq!(
        expected,
        std::fs::read_to_string(g.join("expected.txt")).unwrap(),
        "hashes changed"
    );
    // The same events and checkpoints as version 1: the same listing and the same export.
    assert_eq!(
        expected,
        std::fs::read_to_string(golden_dir().join("expected.txt")).unwrap()
    );
    assert_eq!(
        bundle_bytes(d.path()),
        std::fs::read(golden_dir().join("bundle.bin")).unwrap()
    );
}

fn common_segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

/// The committed version-1 golden directory, its public key, and a temporary log directory
/// holding a copy of its segment.
fn golden_v1_copy() -> (PathBuf, PublicKey, tempfile::TempDir) {
    let g = golden_dir();
    let key = PublicKey::from_arg(g.join("log.pub").to_str().unwrap()).unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        g.join("00000000000000000000.seg"),
        d.path().join("00000000000000000000.seg"),
    )
    .unwrap();
    (g, key, d)
}

/// The frozen version-1 log, as a build of the first release left it: it opens, verifies,
/// reads, exports as it did, and takes appends, which go to a new pre-zeroed segment.
#[test]
fn the_version_1_golden_log_opens_verifies_exports_and_takes_appends() {
    let (g, key, d) = golden_v1_copy();
    assert_eq!(
        expected_text(d.path()),
        std::fs::read_to_string(g.join("expected.txt")).unwrap()
    );
    assert_eq!(
        bundle_bytes(d.path()),
        std::fs::read(g.join("bundle.bin")).unwrap()
    );
    let log = Log::open(d.path(), LogKey::from_seed(&SEED), LogOptions::default()).unwrap();
    let new = log.recovery().started_segment.clone().unwrap();
    assert_eq!(new, d.path().join("00000000000000000005.seg"));
    log.append(Entry::public(1, b"after the upgrade".to_vec()))
        .unwrap();
    log.close().unwrap();
    // The old segment is untouched; the new one is of version 2.
    assert_eq!(
        std::fs::read(d.path().join("00000000000000000000.seg")).unwrap(),
        std::fs::read(g.join("00000000000000000000.seg")).unwrap()
    );
    let bytes = std::fs::read(&new).unwrap();
    assert!(
        scopehold_log::codec::segment_header(&bytes)
            .unwrap()
            .prezeroed()
    );
    let r = crate::common::verify_all(d.path(), &key).unwrap();
    assert_eq!(r.events, 6);
    let reader = LogReader::open(d.path(), Some(&key)).unwrap();
    assert_eq!(reader.events_from(0).unwrap().count(), 6);
    let mut b = Vec::new();
    export(&reader, &key, 0, None, &mut b).unwrap();
    assert_eq!(
        verify_bundle(&b, &key, &VerifyOptions::default())
            .unwrap()
            .events,
        6
    );
}

#[test]
fn the_committed_golden_files_verify_with_the_committed_public_key() {
    let (g, key, d) = golden_v1_copy();
    let r = crate::common::verify_all(d.path(), &key).unwrap();
    assert_eq!(r.events, 5);
    let b = verify_bundle(
        &std::fs::read(g.join("bundle.bin")).unwrap(),
        &key,
        &VerifyOptions::default(),
    )
    .unwrap();
    assert_eq!((b.events, b.redacted_bodies), (5, 2));
    assert_eq!(b.head, r.head);
    let d = tempfile::tempdir().unwrap();
    for n in V2_SEGMENTS {
        std::fs::copy(golden_v2_dir().join(n), d.path().join(n)).unwrap();
    }
    let r2 = crate::common::verify_all(d.path(), &key).unwrap();
    // Genesis, three batches, and the copy that opens the second segment.
    assert_eq!((r2.events, r2.head, r2.checkpoints), (5, r.head, 5));
}

/// Recomputes hashes as FORMAT.md defines them, with BLAKE3 called directly (no
/// scopehold-log code), over the committed bytes of both versions' vectors.
#[test]
fn format_md_hash_definitions_match_the_golden_vectors() {
    let v1 = [std::fs::read(golden_dir().join("00000000000000000000.seg")).unwrap()];
    let v2 = V2_SEGMENTS.map(|n| std::fs::read(golden_v2_dir().join(n)).unwrap());
    let head1 = check_by_hand(&v1, 1);
    let head2 = check_by_hand(&v2, 2);
    assert_eq!(head1, head2);
}

/// Walks `segments` (one log's, in order) as FORMAT.md describes them; returns the head.
fn check_by_hand(segments: &[Vec<u8>], version: u16) -> [u8; 32] {
    let g = golden_dir();
    let k_event = blake3::derive_key("ScopeHold log v1 2026-11-26 event", b"");
    let k_body = blake3::derive_key("ScopeHold log v1 2026-11-26 body commitment", b"");
    let k_genesis = blake3::derive_key("ScopeHold log v1 2026-11-26 genesis", b"");
    let log_id: [u8; 32] = segments[0][10..42].try_into().unwrap();
    let mut prev = *blake3::keyed_hash(&k_genesis, &log_id).as_bytes();
    let mut events = 0u64;
    let mut last_cp: Option<Vec<u8>> = None;
    for seg in segments {
        // Segment header: magic(8) version(2) log_id(32) first_seq(8) crc32c(4).
        assert_eq!(&seg[..8], b"SHLOGSEG");
        assert_eq!(u16::from_le_bytes([seg[8], seg[9]]), version);
        assert_eq!(crc32c::crc32c(&seg[..50]).to_le_bytes(), seg[50..54]);
        assert_eq!(seg[10..42], log_id);
        assert_eq!(u64::from_le_bytes(seg[42..50].try_into().unwrap()), events);
        let mut pos = 54;
        let mut first = true;
        // Version 1: frames to the end of the file. Version 2: until four zero bytes where
        // a frame would start, every byte from there to the end of the file zero.
        while pos < seg.len() {
            let len = u32::from_le_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
            if version == 2 && len == 0 {
                assert!(seg[pos..].iter().all(|b| *b == 0), "zeros to the end");
                break;
            }
            let crc = u32::from_le_bytes(seg[pos + 4..pos + 8].try_into().unwrap());
            let frame = &seg[pos..pos + 8 + len];
            let data = &frame[8..];
            assert_eq!(
                crc32c::crc32c_append(crc32c::crc32c(&(len as u32).to_le_bytes()), data),
                crc
            );
            if first {
                // Every segment opens with a checkpoint: the genesis one, or a copy of the
                // one that ended the previous segment.
                assert_eq!(data[0], 2);
                if let Some(cp) = &last_cp {
                    assert_eq!(frame, &cp[..]);
                }
                first = false;
            }
            match data[0] {
                1 => {
                    let env_len = u16::from_le_bytes([data[1], data[2]]) as usize;
                    assert_eq!(env_len, 89);
                    let env = &data[3..3 + env_len];
                    // Envelope: version(2) seq(8) time(8) kind(2) class(1) prev(32)
                    // commitment(32) body_len(4).
                    assert_eq!(u64::from_le_bytes(env[2..10].try_into().unwrap()), events);
                    assert_eq!(&env[21..53], &prev);
                    let present = data[3 + env_len];
                    let salt_len = data[4 + env_len] as usize;
                    assert_eq!(present, 1);
                    let salt = &data[5 + env_len..5 + env_len + salt_len];
                    let body = &data[5 + env_len + salt_len..];
                    let mut h = blake3::Hasher::new_keyed(&k_body);
                    h.update(&[salt_len as u8]);
                    h.update(salt);
                    h.update(body);
                    assert_eq!(h.finalize().as_bytes(), &env[53..85]);
                    prev = *blake3::keyed_hash(&k_event, env).as_bytes();
                    events += 1;
                }
                2 => {
                    // Checkpoint body: version(2) log_id(32) size(8) head(32) time(8), then
                    // signature(64).
                    let body = &data[1..83];
                    assert_eq!(u64::from_le_bytes(body[34..42].try_into().unwrap()), events);
                    assert_eq!(&body[42..74], &prev);
                    let mut msg = b"ScopeHold log v1 checkpoint\n".to_vec();
                    msg.extend_from_slice(body);
                    let key_hex = std::fs::read_to_string(g.join("log.pub")).unwrap();
                    let mut kb = [0u8; 32];
                    hex::decode_to_slice(key_hex.trim(), &mut kb).unwrap();
                    let vk = ed25519_dalek::VerifyingKey::from_bytes(&kb).unwrap();
                    let sig =
                        ed25519_dalek::Signature::from_bytes(data[83..147].try_into().unwrap());
                    vk.verify_strict(&msg, &sig).unwrap();
                    last_cp = Some(frame.to_vec());
                }
                t => panic!("unknown frame type {t}"),
            }
            pos += 8 + len;
        }
    }
    assert_eq!(events, 5);
    let cp = last_cp.unwrap();
    assert_eq!(&cp[8 + 1 + 42..8 + 1 + 74], &prev);
    prev
}
