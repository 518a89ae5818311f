//! The fast-path key file: one `ID:SECRET` per line, the first signing.
//! What the `l2lb-fastpath` Secret holds, what the speaker reads (and
//! re-reads, so rotation needs no restart), and what the controller
//! generates at install when the Secret is missing.

use super::wire::{Keyring, MIN_SECRET_LEN};
use ring::error::Unspecified;
use ring::rand::SecureRandom;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    /// A line is not `ID:SECRET` with ID 0–255.
    #[error("line {line}: expected ID:SECRET with ID 0-255")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// A secret is shorter than the codec accepts.
    #[error("line {line}: secret shorter than {min} bytes", min = MIN_SECRET_LEN)]
    Short {
        /// 1-based line number.
        line: usize,
    },
    /// No key at all.
    #[error("no key in the file")]
    Empty,
}

/// Parses a fast-path key file: one `ID:SECRET` per line (blank lines and
/// `#` comments skipped). Every key is accepted on receive; the **first**
/// line's key signs. Rotation is three edits, each rolled out to every
/// node before the next: add the new key as a second line; move it to the
/// first line; remove the old one.
pub fn parse_keys(text: &str) -> Result<Keyring, KeyFileError> {
    let mut ring: Option<Keyring> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, secret) = line
            .split_once(':')
            .ok_or(KeyFileError::Syntax { line: n + 1 })?;
        let id: u8 = id
            .trim()
            .parse()
            .map_err(|_| KeyFileError::Syntax { line: n + 1 })?;
        let secret = secret.trim().as_bytes();
        let short = |_| KeyFileError::Short { line: n + 1 };
        match &mut ring {
            None => ring = Some(Keyring::new(id, secret).map_err(short)?),
            Some(r) => r.add(id, secret).map_err(short)?,
        }
    }
    ring.ok_or(KeyFileError::Empty)
}

/// The data key of the `l2lb-fastpath` Secret that holds the key file
/// (mounted at `/etc/l2lb/fastpath/keys`).
pub const SECRET_KEY: &str = "keys";

/// Bytes of randomness in a generated secret (written as hex, so twice as
/// many characters): the full strength of HMAC-SHA256's key.
pub const GENERATED_SECRET_BYTES: usize = 32;

/// A new key file with one key (id 1) from `rng`, as the controller writes
/// it into the Secret at install and the lab into its key file.
pub fn generate(rng: &dyn SecureRandom) -> Result<String, Unspecified> {
    let mut secret = [0u8; GENERATED_SECRET_BYTES];
    rng.fill(&mut secret)?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "# l2lb LAN fast-path keys: ID:SECRET per line, the first signs.\n1:{hex}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastpath::wire::{Body, MessageRepr};

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let ring =
            parse_keys("# rotation step 1\n1:0123456789abcdef0123\n\n2: fedcba9876543210fedc \n")
                .unwrap();
        assert_eq!(ring.signing_key_id(), 1);
        let only2 = parse_keys("2:fedcba9876543210fedc").unwrap();
        let msg = MessageRepr {
            sender: "a".into(),
            incarnation: 1,
            seq: 1,
            recipient: None,
            body: Body::Unknown(9),
        };
        let signed_by_2 = msg.emit(&only2).unwrap();
        assert!(
            MessageRepr::parse(&signed_by_2, &ring).is_ok(),
            "accepts key 2"
        );
        let signed_by_1 = msg.emit(&ring).unwrap();
        assert!(
            MessageRepr::parse(&signed_by_1, &only2).is_err(),
            "key 1 unknown there"
        );
    }

    #[test]
    fn bad_key_files_are_refused_with_the_line() {
        assert_eq!(parse_keys("").err(), Some(KeyFileError::Empty));
        assert_eq!(
            parse_keys("x").err(),
            Some(KeyFileError::Syntax { line: 1 })
        );
        assert_eq!(
            parse_keys("1:0123456789abcdef\n300:0123456789abcdef").err(),
            Some(KeyFileError::Syntax { line: 2 })
        );
        assert_eq!(
            parse_keys("1:short").err(),
            Some(KeyFileError::Short { line: 1 })
        );
    }

    #[test]
    fn a_generated_key_file_parses_and_differs_each_time() {
        let rng = ring::rand::SystemRandom::new();
        let a = generate(&rng).unwrap();
        let ring = parse_keys(&a).unwrap();
        assert_eq!(ring.key_ids(), [1]);
        let line = a.lines().find(|l| l.starts_with("1:")).unwrap();
        assert_eq!(line.len(), 2 + 2 * GENERATED_SECRET_BYTES);
        assert_ne!(a, generate(&rng).unwrap());
    }
}
