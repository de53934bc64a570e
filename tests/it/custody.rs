//! Custody against the agent itself: what start-up trusts, what the daemon's memory gives
//! away, what a flood costs. Each test runs the real engine or the real binary on real files.

use std::path::{Path, PathBuf};

use scopehold::daemon::{Engine, Home};
use scopehold::domain::{Caller, Command};
use scopehold_log::codec::{Frame, decode_frame, put_event_frame};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn root(home: &Home) -> Caller {
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&home.root).unwrap());
    Caller {
        identity: format!("member:{}", scopehold::daemon::home::member_name_for(uid))
            .parse()
            .unwrap(),
        uid,
        pid: None,
    }
}

fn segment(home: &Home) -> PathBuf {
    home.log_dir().join("00000000000000000000.seg")
}

/// Rewrites the first event frame whose body contains `find`, replacing it with `replace`
/// (same length), and recomputes the frame's CRC: what someone with write access to the
/// files and no key can do. Returns the event's sequence number.
fn forge_body(seg: &Path, find: &[u8], replace: &[u8]) -> u64 {
    assert_eq!(find.len(), replace.len());
    let mut bytes = std::fs::read(seg).unwrap();
    let mut at = scopehold_log::codec::SEGMENT_HEADER_LEN;
    while at < bytes.len() {
        let d = decode_frame(&bytes[at..]).unwrap();
        let len = d.total_len;
        if let Frame::Event(parts) = d.frame
            && let Some((salt, body)) = parts.salt_and_body
            && let Some(i) = body.windows(find.len()).position(|w| w == find)
        {
            let mut forged = body.to_vec();
            forged[i..i + find.len()].copy_from_slice(replace);
            let mut frame = Vec::new();
            put_event_frame(&mut frame, parts.envelope_bytes, Some((salt, &forged)));
            assert_eq!(frame.len(), len);
            let seq = parts.envelope.seq;
            bytes[at..at + len].copy_from_slice(&frame);
            std::fs::write(seg, &bytes).unwrap();
            return seq;
        }
        at += len;
    }
    panic!("no event body holds {:?}", String::from_utf8_lossy(find));
}

#[test]
fn an_event_edited_on_disk_with_its_crc_recomputed_stops_start_up_naming_the_event() {
    let t = tempfile::tempdir().unwrap();
    let home = Home::new(Some(t.path().join("state")), None).unwrap();
    home.init().unwrap();
    {
        let engine = Engine::open(&home, scopehold_log::system_clock()).unwrap();
        let add = Command::AddMember {
            member: "alice".parse().unwrap(),
            uid: 4343,
            admin: false,
        };
        runtime()
            .block_on(engine.execute(&root(&home), &add))
            .unwrap();
        engine.close().unwrap();
    }
    // The issue's finding: "admin":false made "admin":true  (a space keeps the length).
    let seq = forge_body(&segment(&home), br#""admin":false"#, br#""admin":true "#);
    let err = Engine::open(&home, scopehold_log::system_clock()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("does not verify") && msg.contains(&format!("event {seq}")),
        "start-up must refuse, naming event {seq}: {msg}"
    );
    // The binary refuses too, with the same message, and serves nothing.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"))
        .arg("--home")
        .arg(&home.root)
        .arg("--socket")
        .arg(t.path().join("s.sock"))
        .arg("daemon")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(&format!("event {seq}")), "{stderr}");
    assert!(!t.path().join("s.sock").exists());
}
