//! The log's frame decoder and the fixed-size structures behind it.
//!
//! The input is read as the log reads its files: a segment (segment header, frames), a
//! bundle (bundle header, frames), or bare frames, and every structure decoder is also
//! given the whole input. Asserted: nothing panics or reads past the input; whatever
//! decodes re-encodes, with the crate's own encoders, to exactly the bytes it came from
//! (str4d/rage `fuzz/fuzz_targets/header.rs`). When the first byte is odd the CRCs are
//! rewritten first, so that mutations reach the decoders behind the CRC checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scopehold_fuzz::{fix_frame_crcs, fix_header_crc};
use scopehold_log::codec::{
    self, BUNDLE_HEADER_LEN, CheckpointBody, Envelope, FRAME_HEADER_LEN, Frame, SEGMENT_HEADER_LEN,
};

/// Decodes frames from `buf` until one fails, checking each.
fn frames(buf: &[u8]) {
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let Ok(d) = codec::decode_frame(rest) else {
            return;
        };
        assert!(d.total_len > FRAME_HEADER_LEN && d.total_len <= rest.len());
        assert_eq!(codec::frame_extent(rest), Ok(d.total_len));
        let header = rest
            .first_chunk::<FRAME_HEADER_LEN>()
            .expect("a whole frame");
        assert_eq!(codec::frame_len(header), Ok(d.total_len));
        let original = &rest[..d.total_len];
        let mut again = Vec::new();
        match d.frame {
            Frame::Event(p) => {
                assert_eq!(p.envelope.encode(), p.envelope_bytes);
                assert_eq!(Envelope::decode(p.envelope_bytes), Ok(p.envelope));
                if let Some((salt, body)) = p.salt_and_body {
                    assert_eq!(salt.len(), p.envelope.body_class().salt_len());
                    assert_eq!(body.len(), p.envelope.body_len as usize);
                }
                if p.erased {
                    assert!(p.salt_and_body.is_none());
                    codec::put_erased_event_frame(
                        &mut again,
                        p.envelope_bytes,
                        p.envelope.body_len as usize,
                    );
                } else {
                    codec::put_event_frame(&mut again, p.envelope_bytes, p.salt_and_body);
                }
            }
            Frame::Checkpoint { body, signature } => {
                let bytes = body.encode();
                assert_eq!(CheckpointBody::decode(&bytes), Ok(body));
                codec::put_checkpoint_frame(&mut again, &bytes, &signature);
            }
            _ => unreachable!("the decoder has two frame types"),
        }
        assert_eq!(again, original, "a decoded frame re-encodes to its bytes");
        pos += d.total_len;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    let fix = mode & 1 == 1;

    // The fixed-size structures on their own.
    if let Ok(e) = Envelope::decode(&buf) {
        assert_eq!(e.encode(), buf);
    }
    if let Ok(c) = CheckpointBody::decode(&buf) {
        assert_eq!(c.encode(), buf);
    }

    // A segment: its header, then frames.
    let mut seg = buf.clone();
    if fix {
        fix_header_crc(&mut seg, SEGMENT_HEADER_LEN);
    }
    if let Ok(h) = codec::segment_header(&seg) {
        // Either version round-trips: the header names its own.
        assert_eq!(
            codec::encode_segment_header(&h.log_id, h.first_seq, h.version),
            seg[..SEGMENT_HEADER_LEN]
        );
        if fix {
            fix_frame_crcs(&mut seg, SEGMENT_HEADER_LEN);
        }
        frames(&seg[SEGMENT_HEADER_LEN..]);
    }

    // A bundle: its header, then frames.
    let mut bundle = buf.clone();
    if fix {
        fix_header_crc(&mut bundle, BUNDLE_HEADER_LEN);
    }
    if let Ok(h) = codec::decode_bundle_header(&bundle) {
        assert_eq!(codec::encode_bundle_header(&h), bundle[..BUNDLE_HEADER_LEN]);
        assert_eq!(scopehold_log::bundle_header(&bundle), Ok(h));
        if fix {
            fix_frame_crcs(&mut bundle, BUNDLE_HEADER_LEN);
        }
        frames(&bundle[BUNDLE_HEADER_LEN..]);
    }

    // Bare frames.
    if fix {
        fix_frame_crcs(&mut buf, 0);
    }
    frames(&buf);
});
