//! The bundle reader: what an auditor runs on a file someone handed them.
//!
//! `verify_bundle` and `read_bundle` with the golden log's public key (the key of the seed
//! bundles). Asserted: neither panics; with every signature checked they agree; an accepted
//! bundle holds exactly the events its header claims, in order, each with the body its
//! class allows, and its last checkpoint signs its last event. When the first byte is odd
//! the header and frame CRCs are rewritten first, so mutations reach the chain and
//! signature checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scopehold_fuzz::{fix_frame_crcs, fix_header_crc};
use scopehold_log::codec::BUNDLE_HEADER_LEN;
use scopehold_log::{BodyClass, PublicKey, VerifyOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if mode & 1 == 1 {
        fix_header_crc(&mut buf, BUNDLE_HEADER_LEN);
        fix_frame_crcs(&mut buf, BUNDLE_HEADER_LEN);
    }
    let key = PublicKey::from_hex(include_str!("../../log/golden/log.pub").trim())
        .expect("the golden public key");
    let some = VerifyOptions::default();
    let all = VerifyOptions {
        all_signatures: true,
        ..VerifyOptions::default()
    };
    let quick = scopehold_log::verify_bundle(&buf, &key, &some);
    let full = scopehold_log::verify_bundle(&buf, &key, &all);
    let read = scopehold_log::read_bundle(&buf, &key, &some);
    assert_eq!(
        full.is_ok(),
        read.is_ok(),
        "read_bundle verifies every signature"
    );
    if full.is_ok() {
        assert!(quick.is_ok(), "checking more signatures cannot accept more");
    }
    let Ok(c) = read else {
        return;
    };
    let h = c.header;
    assert_eq!(scopehold_log::bundle_header(&buf), Ok(h));
    assert_eq!(h.public_key, *key.as_bytes());
    assert_eq!(c.report.log_id, h.log_id);
    assert_eq!(c.report.from, h.from);
    assert_eq!(c.report.events, h.to + 1);
    assert_eq!(c.records.len() as u64, h.to - h.from + 1);
    for (i, r) in c.records.iter().enumerate() {
        assert_eq!(r.seq(), h.from + i as u64);
        if r.class() == BodyClass::Secret {
            assert!(r.body.is_none() || r.body_matches() == Some(true));
        } else {
            assert_eq!(
                r.body_matches(),
                Some(true),
                "a public body is kept and committed"
            );
        }
    }
    let last = c
        .checkpoints
        .last()
        .expect("a bundle ends with a checkpoint");
    assert_eq!(last.body.size, h.to + 1);
    assert_eq!(
        last.body.head,
        c.records.last().expect("at least one event").hash
    );
    assert_eq!(c.report.head, last.body.head);
});
