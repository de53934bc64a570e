//! The one module that knows how ScopeHold log structures become bytes.
//!
//! `FORMAT.md` (beside this crate's `Cargo.toml`) is the specification; this module is its
//! implementation, reading and writing side by side. Every structure that is hashed or signed
//! is encoded exactly once, when it is written; readers hash and verify the stored bytes and
//! never re-encode (so a future codec change is a migration, not a silent break).
//!
//! bincode 2.0.1 is used with one fixed configuration: little endian, fixed-width integers,
//! and a decoding limit far above any valid structure, so a length read from disk can never
//! make the decoder allocate. Every decode must consume its input exactly: trailing bytes are
//! an error. The golden files in `log/golden/` freeze the encoding.

use bincode::{Decode, Encode, config};

use crate::error::FrameError;

/// Version of the on-disk format, carried by every envelope, checkpoint and bundle header.
/// Segment headers carry their own version ([`SEGMENT_V1`], [`SEGMENT_V2`]).
pub const FORMAT_VERSION: u16 = 1;

/// Segment header version of a segment that grows with every append: its data ends at the
/// end of the file. Every segment written before segment version 2 existed.
pub const SEGMENT_V1: u16 = 1;
/// Segment header version of a pre-zeroed segment: the file was filled with zeros (and
/// synced) to its fixed size before any event went there, and its data ends where the zeros
/// begin (see `FORMAT.md`, Segment version 2). Same header layout as version 1.
pub const SEGMENT_V2: u16 = 2;

/// Most bytes one group commit writes (its event frames and its checkpoint). A torn write
/// therefore reaches at most this far past the last checkpoint: in a version-2 segment,
/// nonzero bytes farther than that after the end of the data are corruption, not a write in
/// flight. An append whose entries alone would exceed it is refused.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Largest frame (type byte plus payload) accepted anywhere. Checked before any allocation.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// Largest event body. Leaves room in a frame for the envelope and salt.
pub const MAX_BODY_LEN: usize = (MAX_FRAME_LEN as usize) - 1024;

/// Frame header: `len: u32 LE`, `crc32c: u32 LE`.
pub const FRAME_HEADER_LEN: usize = 8;

/// Frame type (the first byte inside a frame) of an event.
pub const FRAME_EVENT: u8 = 1;
/// Frame type of a checkpoint.
pub const FRAME_CHECKPOINT: u8 = 2;

/// Length of an encoded [`Envelope`].
pub const ENVELOPE_LEN: usize = 2 + 8 + 8 + 2 + 1 + 32 + 32 + 4;
/// Length of an encoded [`CheckpointBody`].
pub const CHECKPOINT_BODY_LEN: usize = 2 + 32 + 8 + 32 + 8;
/// Length of a salt for a secret-bearing body.
pub const SALT_LEN: usize = 32;
/// Total length of a checkpoint frame (header, type, body, signature).
pub const CHECKPOINT_FRAME_LEN: usize = FRAME_HEADER_LEN + 1 + CHECKPOINT_BODY_LEN + 64;

/// `present` of an event frame whose secret-bearing salt and body were left out (exports).
pub const BODY_LEFT_OUT: u8 = 0;
/// `present` of an event frame carrying its salt and body.
pub const BODY_PRESENT: u8 = 1;
/// `present` of an event frame whose secret-bearing salt and body were erased in place
/// (crypto-shredding): the same lengths, every byte zero, so the frame keeps its size.
pub const BODY_ERASED: u8 = 2;
/// Bytes of an event frame before its salt: frame header, type, `env_len`, envelope,
/// `present`, `salt_len`. What an erasure changes lies here (the CRC, `present`) or after.
pub const EVENT_HEAD_LEN: usize = FRAME_HEADER_LEN + 1 + 2 + ENVELOPE_LEN + 2;

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHLOGSEG";
/// Length of a segment header: `magic | version | log_id | first_seq | crc32c`. The first
/// frame of a segment starts here.
pub const SEGMENT_HEADER_LEN: usize = 8 + 2 + 32 + 8 + 4;
/// What every segment opens with: its header and one checkpoint frame (the genesis
/// checkpoint, or a copy of the one that ended the previous segment).
pub const SEGMENT_OPENING_LEN: usize = SEGMENT_HEADER_LEN + CHECKPOINT_FRAME_LEN;
/// First bytes of every export bundle.
pub const BUNDLE_MAGIC: [u8; 8] = *b"SHBUNDLE";
/// Length of a bundle header: `magic | version | log_id | public_key | from | to | crc32c`.
/// The first frame of a bundle starts here.
pub const BUNDLE_HEADER_LEN: usize = 8 + 2 + 32 + 32 + 8 + 8 + 4;

type Cfg = config::Configuration<config::LittleEndian, config::Fixint, config::Limit<4096>>;
const CFG: Cfg = config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<4096>();

/// Whether an event body may carry secret material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BodyClass {
    /// Kept in exports; committed without salt.
    Public = 0,
    /// May carry secret material (sealed values). Committed by a salted hash and left out
    /// of exports, which still verify because only the commitment is chained.
    Secret = 1,
}

impl BodyClass {
    /// The class stored as byte `b`, if it is one.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Public),
            1 => Some(Self::Secret),
            _ => None,
        }
    }
    /// Length of the salt committed with a body of this class (0 or [`SALT_LEN`]).
    pub fn salt_len(self) -> usize {
        match self {
            Self::Public => 0,
            Self::Secret => SALT_LEN,
        }
    }
}

/// The hashed part of an event. Its stored bytes are what the chain hashes.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// [`FORMAT_VERSION`].
    pub version: u16,
    /// Sequence number: the event's position in the log, from 0, without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, assigned by the writer, never decreasing.
    pub time_ms: u64,
    /// Opaque kind tag; its meaning belongs to the caller (the domain).
    pub kind: u16,
    /// A [`BodyClass`] as a byte.
    pub class: u8,
    /// Hash of the previous event's envelope (or the genesis hash for event 0).
    pub prev: [u8; 32],
    /// Commitment to `salt || body` (see `hash::commit_body`).
    pub commitment: [u8; 32],
    /// Length of the body in bytes (the body itself is not hashed into the chain).
    pub body_len: u32,
}

/// The signed part of a checkpoint.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    /// [`FORMAT_VERSION`].
    pub version: u16,
    /// The log's identity: a checkpoint of one log never passes for another's.
    pub log_id: [u8; 32],
    /// Number of events covered: events `0..size`.
    pub size: u64,
    /// Hash of event `size - 1`, or the genesis hash when `size == 0`.
    pub head: [u8; 32],
    /// When it was signed (milliseconds since the Unix epoch).
    pub time_ms: u64,
}

#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
struct SegmentHeaderRaw {
    magic: [u8; 8],
    version: u16,
    log_id: [u8; 32],
    first_seq: u64,
}

#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
struct BundleHeaderRaw {
    magic: [u8; 8],
    version: u16,
    log_id: [u8; 32],
    public_key: [u8; 32],
    from: u64,
    to: u64,
}

fn encode<T: Encode>(v: &T, out: &mut Vec<u8>) {
    // Encoding fixed-size structures into a Vec cannot fail: the limit only applies to
    // decoding and a Vec writer has no capacity bound.
    bincode::encode_into_std_write(v, out, CFG).expect("encoding into a Vec cannot fail");
}

fn decode_exact<T: Decode<()>>(bytes: &[u8], what: &'static str) -> Result<T, FrameError> {
    let (v, used) = bincode::decode_from_slice::<T, _>(bytes, CFG)
        .map_err(|e| FrameError::Decode(what, e.to_string()))?;
    if used != bytes.len() {
        return Err(FrameError::TrailingBytes(what, bytes.len() - used));
    }
    Ok(v)
}

impl Envelope {
    /// The envelope's bytes: what the chain hashes and the frame stores.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(ENVELOPE_LEN);
        encode(self, &mut v);
        debug_assert_eq!(v.len(), ENVELOPE_LEN);
        v
    }
    /// Decodes exactly [`ENVELOPE_LEN`] bytes, refusing an unknown version or class and a
    /// body length above [`MAX_BODY_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() != ENVELOPE_LEN {
            return Err(FrameError::BadLength("envelope", bytes.len()));
        }
        let e: Envelope = decode_exact(bytes, "envelope")?;
        if e.version != FORMAT_VERSION {
            return Err(FrameError::UnsupportedVersion(e.version));
        }
        if BodyClass::from_u8(e.class).is_none() {
            return Err(FrameError::BadClass(e.class));
        }
        if e.body_len as usize > MAX_BODY_LEN {
            return Err(FrameError::TooLarge(e.body_len as u64));
        }
        Ok(e)
    }
    /// The body's class.
    pub fn body_class(&self) -> BodyClass {
        // Envelope::decode rejects unknown classes and the writer only builds known ones.
        BodyClass::from_u8(self.class).unwrap_or(BodyClass::Secret)
    }
}

impl CheckpointBody {
    /// The bytes that are signed (after the signing prefix) and stored in the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CHECKPOINT_BODY_LEN);
        encode(self, &mut v);
        v
    }
    /// Decodes exactly [`CHECKPOINT_BODY_LEN`] bytes, refusing an unknown version.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() != CHECKPOINT_BODY_LEN {
            return Err(FrameError::BadLength("checkpoint", bytes.len()));
        }
        let c: CheckpointBody = decode_exact(bytes, "checkpoint")?;
        if c.version != FORMAT_VERSION {
            return Err(FrameError::UnsupportedVersion(c.version));
        }
        Ok(c)
    }
}

/// A segment header: `magic | version | log_id | first_seq | crc32c(all before)`, of segment
/// version `version` ([`SEGMENT_V1`] or [`SEGMENT_V2`]).
pub fn encode_segment_header(log_id: &[u8; 32], first_seq: u64, version: u16) -> Vec<u8> {
    debug_assert!(version == SEGMENT_V1 || version == SEGMENT_V2);
    let mut v = Vec::with_capacity(SEGMENT_HEADER_LEN);
    encode(
        &SegmentHeaderRaw {
            magic: SEGMENT_MAGIC,
            version,
            log_id: *log_id,
            first_seq,
        },
        &mut v,
    );
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// [`SEGMENT_V1`] (the data ends at the end of the file) or [`SEGMENT_V2`] (pre-zeroed:
    /// the data ends where the zeros begin).
    pub version: u16,
    /// The log's identity.
    pub log_id: [u8; 32],
    /// Sequence number of the segment's first event (its file name).
    pub first_seq: u64,
}

impl SegmentHeader {
    /// Whether the segment is pre-zeroed (version 2).
    pub fn prezeroed(&self) -> bool {
        self.version == SEGMENT_V2
    }
}

/// Checks and decodes the segment header at the start of `bytes` (CRC, magic, version 1 or
/// 2). Bytes after the header are the segment's frames.
pub fn segment_header(bytes: &[u8]) -> Result<SegmentHeader, FrameError> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let (body, crc) = bytes[..SEGMENT_HEADER_LEN].split_at(SEGMENT_HEADER_LEN - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(FrameError::BadCrc);
    }
    let h: SegmentHeaderRaw = decode_exact(body, "segment header")?;
    if h.magic != SEGMENT_MAGIC {
        return Err(FrameError::BadMagic);
    }
    if h.version != SEGMENT_V1 && h.version != SEGMENT_V2 {
        return Err(FrameError::UnsupportedVersion(h.version));
    }
    Ok(SegmentHeader {
        version: h.version,
        log_id: h.log_id,
        first_seq: h.first_seq,
    })
}

/// [`segment_header`], the log identity and first sequence number only.
pub fn decode_segment_header(bytes: &[u8]) -> Result<([u8; 32], u64), FrameError> {
    segment_header(bytes).map(|h| (h.log_id, h.first_seq))
}

/// Bundle header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleHeader {
    /// The identity of the log the events come from.
    pub log_id: [u8; 32],
    /// The log's public key, as the exporter claims it (verification compares it with the
    /// key the auditor brings).
    pub public_key: [u8; 32],
    /// First event sequence number in the bundle.
    pub from: u64,
    /// Last event sequence number in the bundle (inclusive).
    pub to: u64,
}

/// A bundle header: `magic | version | log_id | public_key | from | to | crc32c`.
pub fn encode_bundle_header(h: &BundleHeader) -> Vec<u8> {
    let mut v = Vec::with_capacity(BUNDLE_HEADER_LEN);
    encode(
        &BundleHeaderRaw {
            magic: BUNDLE_MAGIC,
            version: FORMAT_VERSION,
            log_id: h.log_id,
            public_key: h.public_key,
            from: h.from,
            to: h.to,
        },
        &mut v,
    );
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Checks and decodes the bundle header at the start of `bytes` (CRC, magic, version). Bytes
/// after the header are the bundle's frames.
pub fn decode_bundle_header(bytes: &[u8]) -> Result<BundleHeader, FrameError> {
    if bytes.len() < BUNDLE_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let (body, crc) = bytes[..BUNDLE_HEADER_LEN].split_at(BUNDLE_HEADER_LEN - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(FrameError::BadCrc);
    }
    let h: BundleHeaderRaw = decode_exact(body, "bundle header")?;
    if h.magic != BUNDLE_MAGIC {
        return Err(FrameError::BadMagic);
    }
    if h.version != FORMAT_VERSION {
        return Err(FrameError::UnsupportedVersion(h.version));
    }
    Ok(BundleHeader {
        log_id: h.log_id,
        public_key: h.public_key,
        from: h.from,
        to: h.to,
    })
}

fn frame_crc(len: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), data)
}

/// Appends a frame `len | crc32c(len || data) | data` where `data = frame_type || parts...`.
fn put_frame(out: &mut Vec<u8>, frame_type: u8, parts: &[&[u8]]) {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    debug_assert!(len <= MAX_FRAME_LEN as usize);
    let len = len as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(frame_type);
    for p in parts {
        out.extend_from_slice(p);
    }
    let crc = frame_crc(len, &out[start + FRAME_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A frame whose length and CRC checked out: its type byte and payload, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawFrame<'a> {
    pub(crate) frame_type: u8,
    pub(crate) payload: &'a [u8],
    /// Total bytes the frame occupies (header included).
    pub(crate) total_len: usize,
}

/// The total length (header included) of the frame whose 8-byte header is `header`, from its
/// length field alone. This is the one length check of the crate: the declared length must be
/// non-zero and at most [`MAX_FRAME_LEN`]. Readers of files call it on the header before they
/// allocate or read the rest of the frame, so a damaged length never causes a large
/// allocation; [`frame_extent`] adds the check against the bytes present.
pub fn frame_len(header: &[u8; FRAME_HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if len == 0 {
        return Err(FrameError::BadLength("frame", 0));
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len as u64));
    }
    Ok(FRAME_HEADER_LEN + len as usize)
}

/// The total length of the frame at the start of `buf`, from its length field alone (no
/// CRC check): [`frame_len`], and the frame must lie within `buf`.
pub fn frame_extent(buf: &[u8]) -> Result<usize, FrameError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(FrameError::Truncated);
    };
    let end = frame_len(header)?;
    if buf.len() < end {
        return Err(FrameError::Truncated);
    }
    Ok(end)
}

/// Checks the frame at the start of `buf`: its extent ([`frame_extent`]) and its CRC, before
/// anything else happens (nothing is allocated here at all). The payload is not decoded:
/// [`decode_frame`] does that; this lower layer serves the few places that only need the
/// frame type (recovery's and verification's structure checks).
pub(crate) fn read_frame(buf: &[u8]) -> Result<RawFrame<'_>, FrameError> {
    let end = frame_extent(buf)?;
    let len = (end - FRAME_HEADER_LEN) as u32;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let data = &buf[FRAME_HEADER_LEN..end];
    if frame_crc(len, data) != crc {
        return Err(FrameError::BadCrc);
    }
    Ok(RawFrame {
        frame_type: data[0],
        payload: &data[1..],
        total_len: end,
    })
}

/// A decoded frame: the two frame types of `FORMAT.md`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// Type `1`: an event, borrowing its envelope and body from the buffer.
    Event(EventParts<'a>),
    /// Type `2`: a checkpoint (its signature not yet checked).
    Checkpoint {
        /// The signed fields.
        body: CheckpointBody,
        /// ed25519 signature over the checkpoint message (see `FORMAT.md`).
        signature: [u8; 64],
    },
}

/// A frame decoded by [`decode_frame`], with the number of bytes it occupies.
#[derive(Debug, Clone, Copy)]
pub struct DecodedFrame<'a> {
    /// What the frame holds.
    pub frame: Frame<'a>,
    /// Total bytes the frame occupies, header included: the next frame starts here.
    pub total_len: usize,
}

/// The frame decoder: every reader of frames (the log reader, recovery, the index,
/// verification, bundles) goes through it. Checks, in order: the length against
/// [`MAX_FRAME_LEN`] and against the bytes in `buf` ([`frame_extent`]), the CRC32C, the frame
/// type, and the payload's own structure (exact lengths, no trailing bytes). Trailing bytes
/// after the frame in `buf` are left for the caller (they are the next frame). Allocates
/// nothing: the result borrows from `buf`.
pub fn decode_frame(buf: &[u8]) -> Result<DecodedFrame<'_>, FrameError> {
    let raw = read_frame(buf)?;
    let frame = match raw.frame_type {
        FRAME_EVENT => Frame::Event(decode_event_payload(raw.payload)?),
        FRAME_CHECKPOINT => {
            let (body, signature) = decode_checkpoint_payload(raw.payload)?;
            Frame::Checkpoint { body, signature }
        }
        t => return Err(FrameError::UnknownFrameType(t)),
    };
    Ok(DecodedFrame {
        frame,
        total_len: raw.total_len,
    })
}

/// The parts of an event frame's payload:
/// `env_len: u16 | envelope | present: u8 | salt_len: u8 | salt | body`.
#[derive(Clone, Copy)]
pub struct EventParts<'a> {
    /// The envelope as stored: what the chain hashes (never re-encoded).
    pub envelope_bytes: &'a [u8],
    /// The decoded envelope.
    pub envelope: Envelope,
    /// `None` when the body (and salt) were left out of an export, or erased.
    pub salt_and_body: Option<(&'a [u8], &'a [u8])>,
    /// The salt and body were erased in place (`present` = [`BODY_ERASED`]): a log whose
    /// secret-bearing body was destroyed on purpose. Never set in an export.
    pub erased: bool,
}

impl std::fmt::Debug for EventParts<'_> {
    // Bodies may carry (sealed) secret material: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventParts")
            .field("envelope", &self.envelope)
            .field("body_present", &self.salt_and_body.is_some())
            .field("erased", &self.erased)
            .finish()
    }
}

/// Appends an event frame holding `envelope_bytes` and, unless left out (`None`, exports of
/// secret-bearing events), its salt and body.
pub fn put_event_frame(
    out: &mut Vec<u8>,
    envelope_bytes: &[u8],
    salt_and_body: Option<(&[u8], &[u8])>,
) {
    let env_len = (envelope_bytes.len() as u16).to_le_bytes();
    match salt_and_body {
        Some((salt, body)) => {
            let tag = [1u8, salt.len() as u8];
            put_frame(
                out,
                FRAME_EVENT,
                &[&env_len, envelope_bytes, &tag, salt, body],
            );
        }
        None => put_frame(
            out,
            FRAME_EVENT,
            &[&env_len, envelope_bytes, &[BODY_LEFT_OUT, 0u8]],
        ),
    }
}

/// Total length of an event frame holding a salt of `salt_len` bytes and a body of
/// `body_len` bytes (as [`put_event_frame`] writes it with both present).
pub fn event_frame_len(salt_len: usize, body_len: usize) -> usize {
    EVENT_HEAD_LEN + salt_len + body_len
}

/// Appends the erased form of a secret-bearing event frame: the envelope as stored,
/// `present` = [`BODY_ERASED`], and zeros in place of the salt and the envelope's `body_len`
/// bytes of body. It is exactly as long as the frame it replaces.
pub fn put_erased_event_frame(out: &mut Vec<u8>, envelope_bytes: &[u8], body_len: usize) {
    let env_len = (envelope_bytes.len() as u16).to_le_bytes();
    let zeros = vec![0u8; SALT_LEN + body_len];
    put_frame(
        out,
        FRAME_EVENT,
        &[
            &env_len,
            envelope_bytes,
            &[BODY_ERASED, SALT_LEN as u8],
            &zeros,
        ],
    );
}

/// Decodes an event frame's payload (see [`EventParts`]).
fn decode_event_payload(payload: &[u8]) -> Result<EventParts<'_>, FrameError> {
    if payload.len() < 2 {
        return Err(FrameError::Truncated);
    }
    let env_len = u16::from_le_bytes([payload[0], payload[1]]) as usize;
    let rest = &payload[2..];
    if rest.len() < env_len + 2 {
        return Err(FrameError::Truncated);
    }
    let envelope_bytes = &rest[..env_len];
    let envelope = Envelope::decode(envelope_bytes)?;
    let present = rest[env_len];
    let salt_len = rest[env_len + 1] as usize;
    let rest = &rest[env_len + 2..];
    let class = envelope.body_class();
    let salt_and_body = match present {
        BODY_LEFT_OUT => {
            if class != BodyClass::Secret || salt_len != 0 || !rest.is_empty() {
                return Err(FrameError::BadRedaction);
            }
            None
        }
        BODY_PRESENT | BODY_ERASED => {
            if salt_len != class.salt_len() {
                return Err(FrameError::BadLength("salt", salt_len));
            }
            if rest.len() != salt_len + envelope.body_len as usize {
                return Err(FrameError::BadLength("body", rest.len()));
            }
            if present == BODY_PRESENT {
                Some(rest.split_at(salt_len))
            } else {
                // Only a secret-bearing body may be erased (a public one is in every export
                // and is checked against its commitment), and erased means every byte zero:
                // a frame cannot claim erasure while still carrying the sealed bytes.
                if class != BodyClass::Secret {
                    return Err(FrameError::BadErasure("the body is public"));
                }
                if rest.iter().any(|b| *b != 0) {
                    return Err(FrameError::BadErasure("its bytes are not all zero"));
                }
                None
            }
        }
        other => return Err(FrameError::BadPresence(other)),
    };
    Ok(EventParts {
        envelope_bytes,
        envelope,
        salt_and_body,
        erased: present == BODY_ERASED,
    })
}

/// Appends a checkpoint frame; its payload is `CheckpointBody | signature (64 bytes)`.
pub fn put_checkpoint_frame(out: &mut Vec<u8>, body_bytes: &[u8], signature: &[u8; 64]) {
    put_frame(out, FRAME_CHECKPOINT, &[body_bytes, signature]);
}

/// Decodes a checkpoint frame's payload: the body and its signature.
fn decode_checkpoint_payload(payload: &[u8]) -> Result<(CheckpointBody, [u8; 64]), FrameError> {
    if payload.len() != CHECKPOINT_BODY_LEN + 64 {
        return Err(FrameError::BadLength("checkpoint frame", payload.len()));
    }
    let (body, sig) = payload.split_at(CHECKPOINT_BODY_LEN);
    let body = CheckpointBody::decode(body)?;
    let mut s = [0u8; 64];
    s.copy_from_slice(sig);
    Ok((body, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope(seq: u64, class: BodyClass, body_len: u32) -> Envelope {
        Envelope {
            version: FORMAT_VERSION,
            seq,
            time_ms: 1_700_000_000_000 + seq,
            kind: 7,
            class: class as u8,
            prev: [seq as u8; 32],
            commitment: [0xAB; 32],
            body_len,
        }
    }

    proptest! {
        #[test]
        fn event_frames_round_trip(seq: u64, kind: u16, secret: bool, body in proptest::collection::vec(any::<u8>(), 0..600), salt: [u8; 32], redact: bool) {
            let class = if secret { BodyClass::Secret } else { BodyClass::Public };
            let mut env = envelope(seq, class, body.len() as u32);
            env.kind = kind;
            let env_bytes = env.encode();
            let salt: &[u8] = if secret { &salt } else { &[] };
            let sb = if secret && redact { None } else { Some((salt, &body[..])) };
            let mut out = Vec::new();
            put_event_frame(&mut out, &env_bytes, sb);
            let f = read_frame(&out).unwrap();
            prop_assert_eq!(f.total_len, out.len());
            if let Some((s, b)) = sb {
                prop_assert_eq!(out.len(), event_frame_len(s.len(), b.len()));
            }
            prop_assert_eq!(f.frame_type, FRAME_EVENT);
            let parts = decode_event_payload(f.payload).unwrap();
            prop_assert_eq!(parts.envelope, env);
            prop_assert_eq!(parts.envelope_bytes, &env_bytes[..]);
            prop_assert_eq!(parts.salt_and_body, sb);
            // Writing what was read gives back the same bytes.
            let mut again = Vec::new();
            put_event_frame(&mut again, parts.envelope_bytes, parts.salt_and_body);
            prop_assert_eq!(again, out);
        }

        #[test]
        fn frame_parser_never_panics_or_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(f) = read_frame(&bytes) {
                prop_assert!(f.total_len <= bytes.len());
                let _ = decode_event_payload(f.payload);
                let _ = decode_checkpoint_payload(f.payload);
            }
            if let Ok(d) = decode_frame(&bytes) {
                prop_assert!(d.total_len <= bytes.len());
            }
        }

        #[test]
        fn checkpoint_round_trip(size: u64, head: [u8; 32], time_ms: u64, log_id: [u8; 32], sig_byte: u8) {
            let body = CheckpointBody { version: FORMAT_VERSION, log_id, size, head, time_ms };
            let bytes = body.encode();
            prop_assert_eq!(bytes.len(), CHECKPOINT_BODY_LEN);
            let mut out = Vec::new();
            put_checkpoint_frame(&mut out, &bytes, &[sig_byte; 64]);
            let f = read_frame(&out).unwrap();
            prop_assert_eq!(f.frame_type, FRAME_CHECKPOINT);
            let (b, s) = decode_checkpoint_payload(f.payload).unwrap();
            prop_assert_eq!(b, body);
            prop_assert_eq!(s, [sig_byte; 64]);
        }
    }

    #[test]
    fn huge_length_is_rejected_without_allocation() {
        let mut buf = vec![0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];
        buf.extend_from_slice(&[0u8; 16]);
        assert!(matches!(
            read_frame(&buf),
            Err(FrameError::TooLarge(0xFFFF_FFFF))
        ));
        // A length within the limit but past the bytes present is "truncated", not an
        // allocation of that size.
        let mut buf = (MAX_FRAME_LEN).to_le_bytes().to_vec();
        buf.extend_from_slice(&[0u8; 12]);
        assert!(matches!(read_frame(&buf), Err(FrameError::Truncated)));
        // Envelope body_len set huge is refused by the envelope decoder.
        let mut env = envelope(1, BodyClass::Public, 0);
        env.body_len = u32::MAX;
        assert!(matches!(
            Envelope::decode(&env.encode()),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn the_one_length_check_refuses_zero_and_over_the_limit() {
        let header = |len: u32| {
            let mut h = [0u8; FRAME_HEADER_LEN];
            h[..4].copy_from_slice(&len.to_le_bytes());
            h
        };
        assert_eq!(
            frame_len(&header(0)),
            Err(FrameError::BadLength("frame", 0))
        );
        assert_eq!(
            frame_len(&header(MAX_FRAME_LEN)),
            Ok(FRAME_HEADER_LEN + MAX_FRAME_LEN as usize)
        );
        assert_eq!(
            frame_len(&header(MAX_FRAME_LEN + 1)),
            Err(FrameError::TooLarge(MAX_FRAME_LEN as u64 + 1))
        );
        // Fewer than a header's bytes, or a frame longer than the buffer: truncated.
        assert_eq!(frame_extent(&[1, 0, 0]), Err(FrameError::Truncated));
        assert_eq!(frame_extent(&header(5)), Err(FrameError::Truncated));
        // An unknown type with a valid CRC is refused by the decoder, not skipped.
        let mut out = Vec::new();
        put_frame(&mut out, 9, &[b"x"]);
        assert!(read_frame(&out).is_ok());
        assert_eq!(
            decode_frame(&out).map(|d| d.total_len),
            Err(FrameError::UnknownFrameType(9))
        );
    }

    #[test]
    fn an_erased_frame_keeps_its_length_and_decodes_without_a_body() {
        let env = envelope(4, BodyClass::Secret, 50);
        let bytes = env.encode();
        let mut original = Vec::new();
        put_event_frame(&mut original, &bytes, Some((&[7u8; SALT_LEN], &[9u8; 50])));
        let mut erased = Vec::new();
        put_erased_event_frame(&mut erased, &bytes, 50);
        assert_eq!(erased.len(), original.len());
        assert_eq!(erased[..4], original[..4]);
        assert_eq!(
            erased[FRAME_HEADER_LEN..EVENT_HEAD_LEN - 2],
            original[FRAME_HEADER_LEN..EVENT_HEAD_LEN - 2]
        );
        let p = decode_event_payload(read_frame(&erased).unwrap().payload).unwrap();
        assert!(p.erased && p.salt_and_body.is_none());
        assert_eq!(p.envelope, env);
        let p = decode_event_payload(read_frame(&original).unwrap().payload).unwrap();
        assert!(!p.erased && p.salt_and_body.is_some());
        // A public envelope cannot be erased, even with every length right.
        let public = envelope(4, BodyClass::Public, 50).encode();
        let mut out = Vec::new();
        put_frame(
            &mut out,
            FRAME_EVENT,
            &[
                &(ENVELOPE_LEN as u16).to_le_bytes(),
                &public,
                &[BODY_ERASED, 0],
                &[0; 50],
            ],
        );
        assert_eq!(
            decode_frame(&out).map(|d| d.total_len),
            Err(FrameError::BadErasure("the body is public"))
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = envelope(1, BodyClass::Public, 0).encode();
        bytes.push(0);
        assert!(Envelope::decode(&bytes).is_err());
        let r: Result<Envelope, _> = decode_exact(&bytes, "envelope");
        assert!(matches!(r, Err(FrameError::TrailingBytes("envelope", 1))));
    }

    #[test]
    fn encoded_lengths_match_the_spec() {
        assert_eq!(
            envelope(0, BodyClass::Public, 0).encode().len(),
            ENVELOPE_LEN
        );
        assert_eq!(
            encode_segment_header(&[1; 32], 5, SEGMENT_V1).len(),
            SEGMENT_HEADER_LEN
        );
        let h = BundleHeader {
            log_id: [1; 32],
            public_key: [2; 32],
            from: 3,
            to: 4,
        };
        let b = encode_bundle_header(&h);
        assert_eq!(b.len(), BUNDLE_HEADER_LEN);
        assert_eq!(decode_bundle_header(&b).unwrap(), h);
        for version in [SEGMENT_V1, SEGMENT_V2] {
            let h = encode_segment_header(&[1; 32], 5, version);
            assert_eq!(decode_segment_header(&h).unwrap(), ([1; 32], 5));
            assert_eq!(segment_header(&h).unwrap().version, version);
        }
        // Same layout, one version field: a version-2 header differs from a version-1 one
        // only there (and in the CRC).
        let (a, b) = (
            encode_segment_header(&[1; 32], 5, SEGMENT_V1),
            encode_segment_header(&[1; 32], 5, SEGMENT_V2),
        );
        assert_eq!((a[..8] == b[..8], a[10..50] == b[10..50]), (true, true));
        assert_eq!(CHECKPOINT_FRAME_LEN, 155);
        assert_eq!(SEGMENT_OPENING_LEN, 209);
    }
}
