//! Shared helpers: the forms a leaked secret could take in output.
//! (The log's own helpers moved with its tests to `log/tests/it/common.rs`.)

#![allow(dead_code)]

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

/// A canary value in every form a careless encoder might leave it: raw, hex (both cases),
/// base64 at each alignment (partial edge characters dropped).
pub fn canary_forms(v: &str) -> Vec<Vec<u8>> {
    let mut out = vec![
        v.as_bytes().to_vec(),
        hex::encode(v).into_bytes(),
        hex::encode_upper(v).into_bytes(),
    ];
    for pad in 0..3 {
        let mut d = vec![b'#'; pad];
        d.extend_from_slice(v.as_bytes());
        let e = b64(&d);
        out.push(e.as_bytes()[4..e.len() - 4].to_vec());
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
