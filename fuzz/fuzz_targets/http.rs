//! The HTTP request path: raw bytes through hyper, the route table, authentication and the
//! handlers, to the answer, on the real server (`daemon::server::serve_connection`) over an
//! in-memory stream.
//!
//! The first byte picks the peer: even, the uid that is no member, on an engine whose state
//! it cannot change; odd, the admin uid, on an engine the fuzzer may change at will. The
//! rest is what the client sends (one or more pipelined requests, then the end of the
//! stream); `@@TOKEN@@` in it is replaced by the agent `bot`'s credential (the seeds carry
//! it so that authenticated routes are reachable).
//!
//! Asserted: the daemon never panics; everything it writes back is a sequence of
//! well-formed HTTP/1.1 responses with a content-length; each is a 200 with a JSON body, an
//! error with the JSON error body `{"error":{"code","message"}}`, or one of hyper's own
//! refusals of a malformed request (4xx/5xx, empty body); the secret value (a canary) is in
//! no answer but a 200 resolve answer (`{"value": canary, ...}`), and, for the non-member
//! uid, only if the input holds the right credential and asks for `/v1/resolve`; the
//! credential itself is never in an answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scopehold::daemon::Peer;
use scopehold_fuzz::{CANARY, STRANGER_UID, contains, exchange, parse_responses, world};

const TOKEN: &[u8] = b"@@TOKEN@@";

fn substitute(input: &[u8], token: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(TOKEN) {
            out.extend_from_slice(token);
            i += TOKEN.len();
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// Every occurrence of `token` in `input` is a bearer credential.
fn only_as_bearer(input: &[u8], token: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = input[i..].windows(token.len()).position(|w| w == token) {
        let at = i + p;
        if !input[..at].ends_with(b"Bearer ") {
            return false;
        }
        i = at + token.len();
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    // `SCOPEHOLD_FUZZ_SEEDS=dir`: write the seed corpus of every target there (once).
    static SEEDS: std::sync::Once = std::sync::Once::new();
    SEEDS.call_once(|| {
        if let Some(dir) = std::env::var_os("SCOPEHOLD_FUZZ_SEEDS") {
            let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../log/golden");
            scopehold_fuzz::write_seeds(std::path::Path::new(&dir), &golden);
        }
    });
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let admin = sel & 1 == 1;
    let (engine, peer, token) = if admin {
        (
            &w.playground,
            w.admin.clone(),
            w.playground_token.as_bytes(),
        )
    } else {
        (
            &w.fixed,
            Peer::local(STRANGER_UID, Some(4242)),
            w.fixed_token.as_bytes(),
        )
    };
    let input = substitute(rest, token);
    let out = w.rt.block_on(exchange(engine, peer, &input));
    let answers = parse_responses(&out, contains(&input, b"HEAD"));

    if std::env::var_os("SCOPEHOLD_FUZZ_DEBUG").is_some() {
        for a in &answers {
            eprintln!("{} {}", a.status, String::from_utf8_lossy(&a.body));
        }
    }
    let canary = CANARY.as_bytes();
    // The caller may send the canary or the credential itself (in a field serde's message
    // quotes back): only answers to inputs that do not are checked for them.
    let check_canary = !contains(&input, canary);
    let check_token = only_as_bearer(&input, token);
    for a in &answers {
        let json = a
            .content_type
            .as_deref()
            .is_some_and(|c| c == b"application/json");
        match a.status {
            100..=199 => assert!(a.body.is_empty()),
            _ if a.bodiless => {}
            200 => {
                assert!(json, "a 200 is JSON");
                serde_json::from_slice::<serde_json::Value>(&a.body).expect("a 200's body is JSON");
            }
            400..=599 if json => {
                let v: serde_json::Value =
                    serde_json::from_slice(&a.body).expect("an error body is JSON");
                assert!(
                    v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                    "an error body is {{\"error\":{{\"code\",\"message\"}}}}: {v}"
                );
            }
            400..=599 => assert!(
                a.body.is_empty(),
                "hyper's own refusals have no body: {} {:?}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ),
            s => panic!("unexpected status {s}"),
        }
        if check_canary && contains(&a.body, canary) {
            assert_eq!(a.status, 200, "the secret value in a refusal");
            let v: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
            assert_eq!(
                v["value"].as_str(),
                Some(CANARY),
                "the secret value outside a resolve answer"
            );
            if !admin {
                assert!(
                    contains(&input, b"/v1/resolve") && contains(&input, token),
                    "the secret value resolved without the credential"
                );
            }
        }
        if check_token {
            assert!(!contains(&a.body, token), "the credential in an answer");
        }
    }
    // Nothing outside the bodies either (headers, status lines).
    if check_canary && !contains(&input, b"/v1/resolve") {
        assert!(
            !contains(&out, canary),
            "the secret value without a resolution"
        );
    }
    if check_token {
        assert!(!contains(&out, token), "the credential in an answer");
    }
});
