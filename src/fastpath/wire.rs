//! The fast path's message codec: typed [`MessageRepr`]s with symmetric
//! [`MessageRepr::parse`] / [`MessageRepr::emit`], authenticated with
//! HMAC-SHA256 under a shared cluster secret ([`Keyring`]).
//!
//! Contract (as smoltcp's `wire`): inbound bytes are checked once, in
//! `parse`, and every read is bounds-checked, so no input can panic the
//! decoder. The MAC is verified (in constant time) *before* any field past
//! the fixed header is read, so unauthenticated bytes never reach the field
//! parser: a LAN host without the key can neither keep a dead node alive nor
//! kill a live one. Replay protection needs state and lives in the detector
//! (per-sender incarnation and sequence number, both covered by the MAC).
//!
//! Forward compatibility: an unknown message type still parses (header and
//! MAC checked) as [`Body::Unknown`], and bytes after the known fields of a
//! body are ignored, so a later version may append fields. A different
//! `version` byte is a different layout and is rejected.
//!
//! This module must never do I/O, read a clock or panic on any input.
//!
//! Layout (integers big-endian; `name` = length byte + UTF-8 bytes, 1..=253):
//!
//! ```text
//! 0  "L2"  version(1)  type(1)  key_id(1)  reserved(1, sent 0, ignored)
//! 6  incarnation u64   seq u64                       sender's, replay-checked
//! 22 sender name       recipient name (length 0 = broadcast)
//!    body (per type, extensible at the end)
//!    HMAC-SHA256 over every byte before it (32)
//!
//! heartbeat (1): flags(1: bit0 binding)  detect_after_ms u32  api_age_ms u32
//!                witness count(1)  count × (incarnation u64, name)
//! ack (2):       acked_incarnation u64  acked_seq u64  api_age_ms u32
//! suspect (3):   subject name  subject_incarnation u64  last_seq u64
//!                flags(1: bit0 binding)  witness count(1)  count × (incarnation u64, name)
//! ```

use ring::hmac;

/// First two bytes of every message, to tell our frames from stray traffic cheaply.
pub const MAGIC: [u8; 2] = *b"L2";
/// The layout version this codec reads and writes.
pub const VERSION: u8 = 1;
/// Length of the HMAC-SHA256 tag at the end of every message.
pub const MAC_LEN: usize = 32;
/// Longest node name: a Kubernetes node name is a DNS subdomain (≤ 253 bytes).
pub const MAX_NAME_LEN: usize = 253;
/// Most witnesses one heartbeat may declare; far above any sensible `k`, and
/// it bounds a message at about 4.5 KiB (used to reject absurd counts early).
pub const MAX_WITNESSES: usize = 16;
/// Shortest secret accepted: 128 bits. The install generates 32 random bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// `api_age_ms` value meaning "no evidence that any node reaches the API".
const API_AGE_NONE: u32 = u32::MAX;

/// Fixed header before the sender name: magic, version, type, key id,
/// reserved, incarnation, seq.
const FIXED_LEN: usize = 2 + 1 + 1 + 1 + 1 + 8 + 8;
/// The shortest message that can be valid: fixed header, a one-byte sender,
/// an empty recipient, the MAC. Anything shorter is rejected before hashing.
const MIN_LEN: usize = FIXED_LEN + 2 + 1 + MAC_LEN;

const TYPE_HEARTBEAT: u8 = 1;
const TYPE_ACK: u8 = 2;
const TYPE_SUSPECT: u8 = 3;
const FLAG_BINDING: u8 = 0x01;

/// Why bytes were not accepted as a message. Values, never panics: the
/// receive loop counts them (by [`WireError::metric_label`]) and drops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the layout needs.
    #[error("truncated fast-path message ({len} bytes)")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// Not our magic: stray traffic, not an attack.
    #[error("not a fast-path message (bad magic)")]
    Magic,
    /// A layout version this codec does not know.
    #[error("unsupported fast-path version {0}")]
    Version(u8),
    /// Signed with a key id we do not hold (mid-rotation, or another cluster).
    #[error("unknown key id {0}")]
    UnknownKey(u8),
    /// The MAC does not match: forged, corrupted, or signed with another secret.
    #[error("message authentication failed")]
    Authentication,
    /// A name that is empty, too long, or not UTF-8.
    #[error("invalid node name in fast-path message")]
    Name,
    /// More witnesses than [`MAX_WITNESSES`].
    #[error("too many witnesses ({0})")]
    TooManyWitnesses(usize),
}

impl WireError {
    /// A bounded metric label for this error (`l2lb_fastpath_dropped_total{reason}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            WireError::Truncated { .. } => "truncated",
            WireError::Magic => "magic",
            WireError::Version(_) => "version",
            WireError::UnknownKey(_) => "unknown_key",
            WireError::Authentication => "authentication",
            WireError::Name => "malformed",
            WireError::TooManyWitnesses(_) => "malformed",
        }
    }
}

/// A secret that is too short to be a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fast-path secret too short: {len} bytes, need at least {MIN_SECRET_LEN}")]
pub struct KeyError {
    /// Length of the rejected secret.
    pub len: usize,
}

/// The shared secrets this node accepts, each under a one-byte key id, and
/// the one it signs with.
///
/// Several keys exist only during a rotation: every node first learns the
/// new key (accepts both), then signs with it, then drops the old one. The
/// key id travels in clear so a receiver picks the key without trial
/// verification.
#[derive(Clone)]
pub struct Keyring {
    /// Accepted keys by id.
    keys: Vec<(u8, hmac::Key)>,
    /// Key id used to sign outgoing messages; always present in `keys`.
    send_id: u8,
}

impl Keyring {
    /// A keyring holding one secret, used for signing and verifying.
    pub fn new(key_id: u8, secret: &[u8]) -> Result<Keyring, KeyError> {
        let mut ring = Keyring {
            keys: Vec::new(),
            send_id: key_id,
        };
        ring.add(key_id, secret)?;
        Ok(ring)
    }

    /// Accepts `secret` under `key_id` as well (replacing a key with that id).
    pub fn add(&mut self, key_id: u8, secret: &[u8]) -> Result<(), KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError { len: secret.len() });
        }
        self.keys.retain(|(id, _)| *id != key_id);
        self.keys
            .push((key_id, hmac::Key::new(hmac::HMAC_SHA256, secret)));
        Ok(())
    }

    /// The ids of the keys accepted, in the order they were added.
    pub fn key_ids(&self) -> Vec<u8> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    /// Signs with `key_id` from now on. Returns false (and changes nothing)
    /// when that key is not held.
    pub fn sign_with(&mut self, key_id: u8) -> bool {
        let held = self.key(key_id).is_some();
        if held {
            self.send_id = key_id;
        }
        held
    }

    /// Stops accepting `key_id`. The signing key cannot be removed (switch first).
    pub fn remove(&mut self, key_id: u8) -> bool {
        if key_id == self.send_id {
            return false;
        }
        let before = self.keys.len();
        self.keys.retain(|(id, _)| *id != key_id);
        before != self.keys.len()
    }

    fn key(&self, key_id: u8) -> Option<&hmac::Key> {
        self.keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, k)| k)
    }

    /// The HMAC-SHA256 tag of `data` under the signing key (also for the fuzz
    /// target, which signs random bodies to reach the field parser).
    pub fn tag(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        if let Some(key) = self.key(self.send_id) {
            out.copy_from_slice(hmac::sign(key, data).as_ref());
        }
        out
    }

    /// The key id outgoing messages carry.
    pub fn signing_key_id(&self) -> u8 {
        self.send_id
    }
}

/// Never prints secrets; only which key ids are held.
impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("send_id", &self.send_id)
            .finish()
    }
}

/// A node a heartbeat names as its witness, with the incarnation of that
/// node the sender last heard. Incarnation 0 means "not known yet": such a
/// witness can never complete a verdict (see `detector`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Witness {
    /// Node name.
    pub name: String,
    /// The witness's incarnation as the sender knows it; 0 = unknown.
    pub incarnation: u64,
}

/// "I am alive": sent every interval to each witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRepr {
    /// The sender holds itself to the fence for `witnesses`: only a binding
    /// set may ever become the basis of a verdict against the sender.
    pub binding: bool,
    /// Silence the sender promises to treat as fatal for itself: a witness
    /// suspects no earlier than the longer of this and its own setting, so a
    /// rolling config change cannot break `T_fence < T_detect`.
    pub detect_after_ms: u32,
    /// How long ago the sender last had evidence that some node reaches the
    /// API server (`None`: no evidence). See `detector` ("API outage").
    pub api_age_ms: Option<u32>,
    /// The sender's current witness set (the same in every heartbeat of a round).
    pub witnesses: Vec<Witness>,
}

/// "I heard your heartbeat": the sender's only proof that it is heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRepr {
    /// Incarnation of the heartbeat's sender the ack answers.
    pub acked_incarnation: u64,
    /// Sequence number of the heartbeat acknowledged.
    pub acked_seq: u64,
    /// The acker's API evidence age, relayed along the ring.
    pub api_age_ms: Option<u32>,
}

/// "I have not heard `subject` for longer than it allows": a witness's
/// final, broadcast report. A verdict needs one from every witness of a
/// binding set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspectRepr {
    /// The node suspected.
    pub subject: String,
    /// Its incarnation the report is about.
    pub subject_incarnation: u64,
    /// Sequence number of the last heartbeat the reporter heard from it.
    pub last_seq: u64,
    /// The `binding` flag of that heartbeat.
    pub binding: bool,
    /// The witness set that heartbeat declared.
    pub witnesses: Vec<Witness>,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Type 1.
    Heartbeat(HeartbeatRepr),
    /// Type 2.
    Ack(AckRepr),
    /// Type 3.
    Suspect(SuspectRepr),
    /// An authenticated message of a type this version does not know
    /// (emitted with an empty body).
    Unknown(u8),
}

impl Body {
    fn type_byte(&self) -> u8 {
        match self {
            Body::Heartbeat(_) => TYPE_HEARTBEAT,
            Body::Ack(_) => TYPE_ACK,
            Body::Suspect(_) => TYPE_SUSPECT,
            Body::Unknown(t) => *t,
        }
    }
}

/// One fast-path message: who sent it, in which incarnation and with which
/// sequence number (together the replay key), to whom, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRepr {
    /// Sending node.
    pub sender: String,
    /// Sender's incarnation: grows on every restart and every rejoin after a fence.
    pub incarnation: u64,
    /// Sender's message counter within the incarnation; strictly increasing.
    pub seq: u64,
    /// Addressee; `None` for broadcasts (suspect reports).
    pub recipient: Option<String>,
    /// Content.
    pub body: Body,
}

impl MessageRepr {
    /// Checks, authenticates and decodes one message.
    ///
    /// The MAC is verified before any variable field is read; extra bytes
    /// at the end of a known body are ignored.
    pub fn parse(bytes: &[u8], keys: &Keyring) -> Result<MessageRepr, WireError> {
        if bytes.len() < MIN_LEN {
            return Err(WireError::Truncated { len: bytes.len() });
        }
        if bytes[0..2] != MAGIC {
            return Err(WireError::Magic);
        }
        if bytes[2] != VERSION {
            return Err(WireError::Version(bytes[2]));
        }
        let key = keys.key(bytes[4]).ok_or(WireError::UnknownKey(bytes[4]))?;
        let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        // ring compares in constant time.
        hmac::verify(key, signed, tag).map_err(|_| WireError::Authentication)?;

        let mut r = Reader {
            buf: signed,
            at: 2 + 1,
        };
        let msg_type = r.u8()?;
        let _key_id = r.u8()?;
        let _reserved = r.u8()?;
        let incarnation = r.u64()?;
        let seq = r.u64()?;
        let sender = r.name()?;
        let recipient = r.optional_name()?;
        let body = match msg_type {
            TYPE_HEARTBEAT => {
                let flags = r.u8()?;
                let detect_after_ms = r.u32()?;
                let api_age_ms = api_age(r.u32()?);
                let witnesses = r.witnesses()?;
                Body::Heartbeat(HeartbeatRepr {
                    binding: flags & FLAG_BINDING != 0,
                    detect_after_ms,
                    api_age_ms,
                    witnesses,
                })
            }
            TYPE_ACK => Body::Ack(AckRepr {
                acked_incarnation: r.u64()?,
                acked_seq: r.u64()?,
                api_age_ms: api_age(r.u32()?),
            }),
            TYPE_SUSPECT => {
                let subject = r.name()?;
                let subject_incarnation = r.u64()?;
                let last_seq = r.u64()?;
                let flags = r.u8()?;
                let witnesses = r.witnesses()?;
                Body::Suspect(SuspectRepr {
                    subject,
                    subject_incarnation,
                    last_seq,
                    binding: flags & FLAG_BINDING != 0,
                    witnesses,
                })
            }
            other => Body::Unknown(other),
        };
        Ok(MessageRepr {
            sender,
            incarnation,
            seq,
            recipient,
            body,
        })
    }

    /// Bytes [`MessageRepr::emit`] writes, MAC included.
    pub fn buffer_len(&self) -> usize {
        let name = |n: &str| 1 + n.len();
        let witnesses = |ws: &[Witness]| 1 + ws.iter().map(|w| 8 + name(&w.name)).sum::<usize>();
        let body = match &self.body {
            Body::Heartbeat(h) => 1 + 4 + 4 + witnesses(&h.witnesses),
            Body::Ack(_) => 8 + 8 + 4,
            Body::Suspect(s) => name(&s.subject) + 8 + 8 + 1 + witnesses(&s.witnesses),
            Body::Unknown(_) => 0,
        };
        FIXED_LEN + name(&self.sender) + self.recipient.as_deref().map_or(1, name) + body + MAC_LEN
    }

    /// Encodes and signs the message with the keyring's signing key.
    ///
    /// Fails only for a message no peer could parse (an empty or over-long
    /// name, too many witnesses), so a bad value never reaches the wire.
    pub fn emit(&self, keys: &Keyring) -> Result<Vec<u8>, WireError> {
        let mut w = Writer(Vec::with_capacity(self.buffer_len()));
        w.0.extend_from_slice(&MAGIC);
        w.0.extend_from_slice(&[VERSION, self.body.type_byte(), keys.signing_key_id(), 0]);
        w.u64(self.incarnation);
        w.u64(self.seq);
        w.name(&self.sender)?;
        match &self.recipient {
            Some(r) => w.name(r)?,
            None => w.0.push(0),
        }
        match &self.body {
            Body::Heartbeat(h) => {
                w.0.push(if h.binding { FLAG_BINDING } else { 0 });
                w.u32(h.detect_after_ms);
                w.u32(
                    h.api_age_ms
                        .map_or(API_AGE_NONE, |a| a.min(API_AGE_NONE - 1)),
                );
                w.witnesses(&h.witnesses)?;
            }
            Body::Ack(a) => {
                w.u64(a.acked_incarnation);
                w.u64(a.acked_seq);
                w.u32(
                    a.api_age_ms
                        .map_or(API_AGE_NONE, |a| a.min(API_AGE_NONE - 1)),
                );
            }
            Body::Suspect(s) => {
                w.name(&s.subject)?;
                w.u64(s.subject_incarnation);
                w.u64(s.last_seq);
                w.0.push(if s.binding { FLAG_BINDING } else { 0 });
                w.witnesses(&s.witnesses)?;
            }
            Body::Unknown(_) => {}
        }
        let tag = keys.tag(&w.0);
        w.0.extend_from_slice(&tag);
        Ok(w.0)
    }
}

fn api_age(raw: u32) -> Option<u32> {
    (raw != API_AGE_NONE).then_some(raw)
}

/// A bounds-checked cursor: every read is `get`, so running past the end is
/// an error value, never a panic.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n);
        let bytes = end
            .and_then(|end| self.buf.get(self.at..end))
            .ok_or(WireError::Truncated {
                len: self.buf.len() + MAC_LEN,
            })?;
        self.at += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn optional_name(&mut self) -> Result<Option<String>, WireError> {
        let len = usize::from(self.u8()?);
        if len == 0 {
            return Ok(None);
        }
        self.name_of_len(len).map(Some)
    }

    fn name(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        if len == 0 {
            return Err(WireError::Name);
        }
        self.name_of_len(len)
    }

    fn name_of_len(&mut self, len: usize) -> Result<String, WireError> {
        if len > MAX_NAME_LEN {
            return Err(WireError::Name);
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| WireError::Name)
    }

    fn witnesses(&mut self) -> Result<Vec<Witness>, WireError> {
        let count = usize::from(self.u8()?);
        if count > MAX_WITNESSES {
            return Err(WireError::TooManyWitnesses(count));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let incarnation = self.u64()?;
            let name = self.name()?;
            out.push(Witness { name, incarnation });
        }
        Ok(out)
    }
}

/// Appends fields, refusing values a reader would reject.
struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn name(&mut self, name: &str) -> Result<(), WireError> {
        match u8::try_from(name.len()) {
            Ok(len) if len > 0 && name.len() <= MAX_NAME_LEN => {
                self.0.push(len);
                self.0.extend_from_slice(name.as_bytes());
                Ok(())
            }
            _ => Err(WireError::Name),
        }
    }

    fn witnesses(&mut self, ws: &[Witness]) -> Result<(), WireError> {
        let count = u8::try_from(ws.len())
            .ok()
            .filter(|c| usize::from(*c) <= MAX_WITNESSES)
            .ok_or(WireError::TooManyWitnesses(ws.len()))?;
        self.0.push(count);
        for w in ws {
            self.u64(w.incarnation);
            self.name(&w.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> Keyring {
        Keyring::new(1, SECRET).unwrap()
    }

    fn heartbeat() -> MessageRepr {
        MessageRepr {
            sender: "node-a".into(),
            incarnation: 7,
            seq: 42,
            recipient: Some("node-b".into()),
            body: Body::Heartbeat(HeartbeatRepr {
                binding: true,
                detect_after_ms: 250,
                api_age_ms: Some(0),
                witnesses: vec![
                    Witness {
                        name: "node-b".into(),
                        incarnation: 3,
                    },
                    Witness {
                        name: "node-c".into(),
                        incarnation: 9,
                    },
                ],
            }),
        }
    }

    /// The heartbeat above, byte for byte. The MAC was computed
    /// independently (Python's `hmac.new(SECRET, signed, hashlib.sha256)`),
    /// so this pins the layout *and* the authentication.
    const HEARTBEAT_BYTES: &str = concat!(
        "4c32",
        "01",
        "01",
        "01",
        "00",               // magic, version, heartbeat, key 1, reserved
        "0000000000000007", // incarnation
        "000000000000002a", // seq
        "06",
        "6e6f64652d61", // sender "node-a"
        "06",
        "6e6f64652d62", // recipient "node-b"
        "01",
        "000000fa",
        "00000000", // binding, detect 250 ms, api age 0
        "02",       // two witnesses
        "0000000000000003",
        "06",
        "6e6f64652d62",
        "0000000000000009",
        "06",
        "6e6f64652d63",
        "88198b079b9b471a9897236799439cabce934cc44c3b65297b6e7f7b6fa06b5b",
    );

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn heartbeat_matches_fixed_bytes() {
        let bytes = heartbeat().emit(&keys()).unwrap();
        assert_eq!(bytes, hex(HEARTBEAT_BYTES));
        assert_eq!(bytes.len(), heartbeat().buffer_len());
        assert_eq!(MessageRepr::parse(&bytes, &keys()), Ok(heartbeat()));
    }

    #[test]
    fn ack_and_suspect_round_trip_with_fixed_bytes() {
        let ack = MessageRepr {
            sender: "b".into(),
            incarnation: 1,
            seq: 2,
            recipient: Some("a".into()),
            body: Body::Ack(AckRepr {
                acked_incarnation: 7,
                acked_seq: 42,
                api_age_ms: None,
            }),
        };
        let bytes = ack.emit(&keys()).unwrap();
        let signed_len = bytes.len() - MAC_LEN;
        assert_eq!(
            bytes[..signed_len],
            hex(concat!(
                "4c32010201000000000000000001",
                "0000000000000002",
                "0162",
                "0161",
                "0000000000000007",
                "000000000000002a",
                "ffffffff",
            ))[..]
        );
        assert_eq!(MessageRepr::parse(&bytes, &keys()), Ok(ack));

        let suspect = MessageRepr {
            sender: "c".into(),
            incarnation: 5,
            seq: 6,
            recipient: None,
            body: Body::Suspect(SuspectRepr {
                subject: "a".into(),
                subject_incarnation: 7,
                last_seq: 42,
                binding: true,
                witnesses: vec![Witness {
                    name: "c".into(),
                    incarnation: 5,
                }],
            }),
        };
        let bytes = suspect.emit(&keys()).unwrap();
        assert_eq!(
            bytes[..bytes.len() - MAC_LEN],
            hex(concat!(
                "4c32010301000000000000000005",
                "0000000000000006",
                "0163",
                "00",
                "0161",
                "0000000000000007",
                "000000000000002a",
                "01",
                "01",
                "0000000000000005",
                "0163",
            ))[..]
        );
        assert_eq!(MessageRepr::parse(&bytes, &keys()), Ok(suspect));
    }

    #[test]
    fn a_flipped_bit_anywhere_fails_authentication_or_framing() {
        let bytes = heartbeat().emit(&keys()).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let err = MessageRepr::parse(&b, &keys()).unwrap_err();
            assert!(
                matches!(
                    err,
                    WireError::Authentication
                        | WireError::Magic
                        | WireError::Version(_)
                        | WireError::UnknownKey(_)
                ),
                "byte {i}: {err:?}"
            );
        }
    }

    #[test]
    fn another_secret_or_key_id_is_rejected() {
        let bytes = heartbeat().emit(&keys()).unwrap();
        let other = Keyring::new(1, b"another secret of 32 bytes......").unwrap();
        assert_eq!(
            MessageRepr::parse(&bytes, &other),
            Err(WireError::Authentication)
        );
        let other_id = Keyring::new(2, SECRET).unwrap();
        assert_eq!(
            MessageRepr::parse(&bytes, &other_id),
            Err(WireError::UnknownKey(1))
        );
    }

    #[test]
    fn rotation_accepts_both_keys_then_only_the_new_one() {
        let old = keys();
        let mut rotating = keys();
        rotating
            .add(2, b"the next secret, 32 bytes long..")
            .unwrap();
        let from_old = heartbeat().emit(&old).unwrap();
        assert!(MessageRepr::parse(&from_old, &rotating).is_ok());
        assert!(rotating.sign_with(2));
        let from_new = heartbeat().emit(&rotating).unwrap();
        assert_eq!(from_new[4], 2);
        assert!(MessageRepr::parse(&from_new, &rotating).is_ok());
        assert!(rotating.remove(1));
        assert!(!rotating.remove(2), "the signing key stays");
        assert_eq!(
            MessageRepr::parse(&from_old, &rotating),
            Err(WireError::UnknownKey(1))
        );
        assert_eq!(Keyring::new(1, b"short").unwrap_err(), KeyError { len: 5 });
        assert!(!format!("{rotating:?}").contains("secret"));
    }

    /// Signs arbitrary bytes as if they were a message body, to exercise the
    /// field parser behind the MAC.
    fn sign_raw(keys: &Keyring, header_and_body: &[u8]) -> Vec<u8> {
        let mut bytes = header_and_body.to_vec();
        bytes.extend_from_slice(&keys.tag(header_and_body));
        bytes
    }

    #[test]
    fn unknown_types_parse_and_trailing_fields_are_ignored() {
        let k = keys();
        let unknown = MessageRepr {
            sender: "x".into(),
            incarnation: 1,
            seq: 1,
            recipient: None,
            body: Body::Unknown(0x7f),
        };
        let bytes = unknown.emit(&k).unwrap();
        assert_eq!(MessageRepr::parse(&bytes, &k), Ok(unknown));

        // A future version appends a field to the heartbeat: still readable.
        let mut signed = heartbeat().emit(&k).unwrap();
        signed.truncate(signed.len() - MAC_LEN);
        signed.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(
            MessageRepr::parse(&sign_raw(&k, &signed), &k),
            Ok(heartbeat())
        );
    }

    #[test]
    fn malformed_but_authentic_fields_are_errors_not_panics() {
        let k = keys();
        let mut signed = heartbeat().emit(&k).unwrap();
        signed.truncate(signed.len() - MAC_LEN);
        // Cut inside the witness list.
        let cut = &signed[..signed.len() - 3];
        assert!(matches!(
            MessageRepr::parse(&sign_raw(&k, cut), &k),
            Err(WireError::Truncated { .. })
        ));
        // Empty sender name.
        let mut empty = signed.clone();
        empty[22] = 0;
        assert_eq!(
            MessageRepr::parse(&sign_raw(&k, &empty), &k),
            Err(WireError::Name)
        );
        // Sender name not UTF-8.
        let mut bad = signed.clone();
        bad[23] = 0xff;
        assert_eq!(
            MessageRepr::parse(&sign_raw(&k, &bad), &k),
            Err(WireError::Name)
        );
    }

    #[test]
    fn emit_refuses_what_no_peer_could_parse() {
        let mut m = heartbeat();
        m.sender = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(m.emit(&keys()), Err(WireError::Name));
        let mut m = heartbeat();
        m.recipient = Some(String::new());
        assert_eq!(m.emit(&keys()), Err(WireError::Name));
        let mut m = heartbeat();
        if let Body::Heartbeat(h) = &mut m.body {
            h.witnesses = vec![
                Witness {
                    name: "w".into(),
                    incarnation: 1
                };
                MAX_WITNESSES + 1
            ];
        }
        assert_eq!(
            m.emit(&keys()),
            Err(WireError::TooManyWitnesses(MAX_WITNESSES + 1))
        );
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9.-]{0,40}"
    }

    fn witnesses() -> impl Strategy<Value = Vec<Witness>> {
        prop::collection::vec(
            (name(), any::<u64>()).prop_map(|(name, incarnation)| Witness { name, incarnation }),
            0..=MAX_WITNESSES,
        )
    }

    fn api_age_ms() -> impl Strategy<Value = Option<u32>> {
        prop::option::of(0..API_AGE_NONE)
    }

    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            (any::<bool>(), any::<u32>(), api_age_ms(), witnesses()).prop_map(
                |(binding, detect_after_ms, api_age_ms, witnesses)| {
                    Body::Heartbeat(HeartbeatRepr {
                        binding,
                        detect_after_ms,
                        api_age_ms,
                        witnesses,
                    })
                }
            ),
            (any::<u64>(), any::<u64>(), api_age_ms()).prop_map(
                |(acked_incarnation, acked_seq, api_age_ms)| Body::Ack(AckRepr {
                    acked_incarnation,
                    acked_seq,
                    api_age_ms,
                })
            ),
            (
                name(),
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                witnesses()
            )
                .prop_map(
                    |(subject, subject_incarnation, last_seq, binding, witnesses)| {
                        Body::Suspect(SuspectRepr {
                            subject,
                            subject_incarnation,
                            last_seq,
                            binding,
                            witnesses,
                        })
                    }
                ),
            (4u8..=255).prop_map(Body::Unknown),
        ]
    }

    fn message() -> impl Strategy<Value = MessageRepr> {
        (
            name(),
            any::<u64>(),
            any::<u64>(),
            prop::option::of(name()),
            body(),
        )
            .prop_map(|(sender, incarnation, seq, recipient, body)| MessageRepr {
                sender,
                incarnation,
                seq,
                recipient,
                body,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trip(m in message()) {
            let k = keys();
            let bytes = m.emit(&k).unwrap();
            prop_assert_eq!(bytes.len(), m.buffer_len());
            prop_assert_eq!(MessageRepr::parse(&bytes, &k), Ok(m));
        }

        /// Random bytes never panic the decoder and never authenticate,
        /// even when they start like one of our messages.
        #[test]
        fn random_bytes_never_panic_nor_authenticate(
            tail in prop::collection::vec(any::<u8>(), 0..600),
            framed in any::<bool>(),
        ) {
            let mut bytes = if framed { vec![b'L', b'2', VERSION, 1, 1, 0] } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            let result = MessageRepr::parse(&bytes, &keys());
            prop_assert!(result.is_err());
            prop_assert!(result != Err(WireError::Name));
        }

        /// Behind a valid MAC, arbitrary fields still never panic the parser.
        #[test]
        fn authentic_garbage_never_panics(tail in prop::collection::vec(any::<u8>(), 0..600), t in any::<u8>()) {
            let k = keys();
            let mut signed = vec![b'L', b'2', VERSION, t, 1, 0];
            signed.extend_from_slice(&tail);
            let _ = MessageRepr::parse(&sign_raw(&k, &signed), &k);
        }
    }
}
