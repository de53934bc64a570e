//! The event body decoder: what replay runs on every body in the log.
//!
//! The first two bytes are the kind number from the envelope (little endian), the rest is
//! the body. Asserted: `Event::from_body` never panics; a decoded event is of the kind its
//! envelope says; serialising it and decoding again gives the same event
//! (decode(encode(decode(x))) == decode(x)) and serialising that gives the same bytes (the
//! encoding is a fixed point); its log entry is built without error; and the projection
//! applies it (to an empty state, and to a state that holds a project, a secret, an agent
//! and a grant) or refuses it without panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use scopehold::domain::{Event, State};

/// A state with something in it, made from real event bodies, so that events about existing
/// things get past the first checks of `apply`.
fn populated() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut st = State::default();
        let bodies: &[(u16, &str)] = &[
            (1, r#"{"type":"project_created","project":"demo","by":"init"}"#),
            (
                6,
                r#"{"type":"secret_stored","secret":"openai/prod","projects":["demo"],"by":"init"}"#,
            ),
            (
                7,
                r#"{"type":"secret_version_sealed","secret":"openai/prod","version":1,"sealed":{"wrapped_key":"00","key_nonce":"00","nonce":"00","ciphertext":"00"}}"#,
            ),
            (3, r#"{"type":"agent_created","agent":"bot","uid":null,"by":"init"}"#),
        ];
        for (kind, body) in bodies {
            let ev = Event::from_body(*kind, body.as_bytes()).expect("a valid event body");
            st.apply(&ev).expect("a valid history");
        }
        st
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let kind = u16::from_le_bytes(*kind);
    let Ok(ev) = Event::from_body(kind, body) else {
        return;
    };
    assert_eq!(ev.kind().number(), kind);
    let bytes = serde_json::to_vec(&ev).expect("events always serialise");
    let again = Event::from_body(kind, &bytes).expect("a serialised event decodes");
    assert_eq!(again, ev, "decode(encode(decode(x))) == decode(x)");
    assert_eq!(
        serde_json::to_vec(&again).expect("events always serialise"),
        bytes,
        "the encoding is a fixed point"
    );
    assert_eq!(
        ev.is_secret_bearing(),
        ev.kind().class() == scopehold_log::BodyClass::Secret
    );
    ev.to_entry().expect("a decoded event is a valid log entry");
    let _ = (ev.identity(), ev.secret(), ev.is_denial());
    let _ = State::default().apply(&ev);
    let mut st = populated().clone();
    let _ = st.apply(&ev);
});
