//! Producer signatures (SPEC §5 `BAD_SIGNATURE`): where the policy requires them, every ingress
//! record carries three Kafka record headers and IG admits it only if the HMAC verifies under a
//! key the policy lists, made within `max_skew` of the record timestamp, by the producer the
//! envelope names.
//!
//! Headers: `tm-key-id` (key id), `tm-signed-at` (epoch ms, decimal), `tm-signature`
//! (`v1=` + lowercase hex of HMAC-SHA256). The signed message is
//! `"v1." + key_id + "." + signed_at + "." + value` over the record value's exact bytes, so
//! the envelope needs no canonical form and any changed byte fails. Key material comes only
//! from the environment ([`key_env_var`]); the policy holds key ids and their producers, never
//! secrets, and [`Keyring`]'s `Debug` prints no key.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use tidemark_operators::RawRecord;

/// Header naming the key id.
pub const KEY_ID_HEADER: &str = "tm-key-id";
/// Header with the signing time (epoch ms, decimal).
pub const SIGNED_AT_HEADER: &str = "tm-signed-at";
/// Header with `v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "tm-signature";
/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// The `[ig.signing]` policy section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningPolicy {
    /// Require a valid signature on every ingress record (`BAD_SIGNATURE` otherwise).
    /// Default false (`local`); `dev` and `prod` turn it on.
    pub required: bool,
    /// How far the signed time may be from the record timestamp, either way. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub max_skew: Duration,
    /// Key id → the producer it belongs to. The key itself is read from the environment
    /// variable [`key_env_var`]`(id)` when the run starts. Default: none.
    pub keys: BTreeMap<String, String>,
}

impl Default for SigningPolicy {
    fn default() -> Self {
        SigningPolicy {
            required: false,
            max_skew: Duration::from_secs(300),
            keys: BTreeMap::new(),
        }
    }
}

/// The environment variable holding key `key_id`: `TIDEMARK_SIGNING_KEY_` + the id upper-cased
/// with every character other than `A-Z0-9` replaced by `_` (`card-switch-1` →
/// `TIDEMARK_SIGNING_KEY_CARD_SWITCH_1`).
pub fn key_env_var(key_id: &str) -> String {
    let tail: String = key_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("TIDEMARK_SIGNING_KEY_{tail}")
}

/// Why a keyring could not be built (a configuration error: the run does not start).
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The policy lists a key whose variable is unset.
    #[error("signing key {key_id:?} ({producer}): environment variable {var} is not set")]
    Missing {
        /// Key id.
        key_id: String,
        /// Its producer.
        producer: String,
        /// The variable read.
        var: String,
    },
    /// The key is shorter than [`MIN_KEY_BYTES`].
    #[error(
        "signing key {key_id:?}: {var} holds {len} bytes, at least {MIN_KEY_BYTES} are required"
    )]
    TooShort {
        /// Key id.
        key_id: String,
        /// The variable read.
        var: String,
        /// Its length.
        len: usize,
    },
    /// Signing is required but no key is listed.
    #[error("ig.signing.required is set but ig.signing.keys lists no key")]
    NoKeys,
    /// A producer asked to sign with a key the keyring does not hold.
    #[error("no signing key for producer {0:?}")]
    NoKeyFor(String),
}

struct Key {
    producer: String,
    secret: Vec<u8>,
}

/// The signing keys of a policy, with their material.
pub struct Keyring {
    keys: BTreeMap<String, Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: BTreeMap<&str, &str> = self
            .keys
            .iter()
            .map(|(id, k)| (id.as_str(), k.producer.as_str()))
            .collect();
        f.debug_struct("Keyring")
            .field("keys", &ids)
            .field("material", &"<redacted>")
            .finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], key_id: &str, signed_at: &[u8], value: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(b"v1.");
    m.update(key_id.as_bytes());
    m.update(b".");
    m.update(signed_at);
    m.update(b".");
    m.update(value);
    m
}

fn header<'a>(rec: &'a RawRecord, name: &str) -> Option<&'a [u8]> {
    rec.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

impl Keyring {
    /// The keyring of `policy`, each key read through `lookup` (the environment in the CLI:
    /// `|var| std::env::var(var).ok()`).
    pub fn load(
        policy: &SigningPolicy,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Keyring, KeyringError> {
        if policy.required && policy.keys.is_empty() {
            return Err(KeyringError::NoKeys);
        }
        let mut keys = BTreeMap::new();
        for (id, producer) in &policy.keys {
            let var = key_env_var(id);
            let secret = lookup(&var).ok_or_else(|| KeyringError::Missing {
                key_id: id.clone(),
                producer: producer.clone(),
                var: var.clone(),
            })?;
            if secret.len() < MIN_KEY_BYTES {
                return Err(KeyringError::TooShort {
                    key_id: id.clone(),
                    var,
                    len: secret.len(),
                });
            }
            let key = Key {
                producer: producer.clone(),
                secret: secret.into_bytes(),
            };
            keys.insert(id.clone(), key);
        }
        Ok(Keyring { keys })
    }

    /// The headers that sign `value` for `producer` at `signed_at` (the first key of that
    /// producer, by id).
    pub fn sign(
        &self,
        producer: &str,
        signed_at: u64,
        value: &[u8],
    ) -> Result<Vec<(String, Vec<u8>)>, KeyringError> {
        let (id, key) = self
            .keys
            .iter()
            .find(|(_, k)| k.producer == producer)
            .ok_or_else(|| KeyringError::NoKeyFor(producer.to_owned()))?;
        Ok(signature_headers(id, &key.secret, signed_at, value))
    }

    /// Verifies `rec`'s signature: `Ok(producer)` of the key that made it, or `Err(detail)`
    /// (missing or malformed headers, unknown key id, wrong HMAC, signed time more than
    /// `max_skew_ms` from the record timestamp). The HMAC comparison is constant-time.
    pub fn verify(&self, rec: &RawRecord, max_skew_ms: u64) -> Result<&str, String> {
        let (Some(id), Some(at), Some(sig)) = (
            header(rec, KEY_ID_HEADER),
            header(rec, SIGNED_AT_HEADER),
            header(rec, SIGNATURE_HEADER),
        ) else {
            return Err(format!(
                "missing signature: headers {KEY_ID_HEADER}, {SIGNED_AT_HEADER} and {SIGNATURE_HEADER} are required"
            ));
        };
        let id = std::str::from_utf8(id).map_err(|_| "key id is not UTF-8".to_owned())?;
        let Some(key) = self.keys.get(id) else {
            return Err(format!(
                "unknown key id {:?}",
                id.chars().take(64).collect::<String>()
            ));
        };
        let signed_at = std::str::from_utf8(at)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("{SIGNED_AT_HEADER} is not epoch milliseconds"))?;
        // Exactly one spelling is valid: 64 lowercase hex digits.
        let given = sig
            .strip_prefix(b"v1=")
            .filter(|h| h.len() == 64 && h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| format!("{SIGNATURE_HEADER} is not v1=<64 lowercase hex digits>"))?;
        mac(&key.secret, id, at, &rec.bytes)
            .verify_slice(&given)
            .map_err(|_| format!("signature does not verify under key {id:?}"))?;
        let skew = signed_at.abs_diff(rec.record_ts);
        if skew > max_skew_ms {
            return Err(format!(
                "signed at {signed_at}, {skew} ms from record timestamp {} (max {max_skew_ms}): stale or replayed",
                rec.record_ts
            ));
        }
        Ok(&key.producer)
    }
}

/// The three signature headers for `value`, signed with `secret` under `key_id` at `signed_at`.
pub fn signature_headers(
    key_id: &str,
    secret: &[u8],
    signed_at: u64,
    value: &[u8],
) -> Vec<(String, Vec<u8>)> {
    let at = signed_at.to_string();
    let tag = mac(secret, key_id, at.as_bytes(), value)
        .finalize()
        .into_bytes();
    vec![
        (KEY_ID_HEADER.to_owned(), key_id.as_bytes().to_vec()),
        (SIGNED_AT_HEADER.to_owned(), at.into_bytes()),
        (
            SIGNATURE_HEADER.to_owned(),
            format!("v1={}", hex::encode(tag)).into_bytes(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_operators::SourceCoord;

    const K1: &str = "0123456789abcdef0123456789abcdef-card";
    const K2: &str = "0123456789abcdef0123456789abcdef-auth";

    fn ring() -> Keyring {
        let policy = SigningPolicy {
            required: true,
            keys: [("cs-1", "card-switch"), ("auth-1", "auth-service")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
            ..Default::default()
        };
        Keyring::load(&policy, |v| match v {
            "TIDEMARK_SIGNING_KEY_CS_1" => Some(K1.into()),
            "TIDEMARK_SIGNING_KEY_AUTH_1" => Some(K2.into()),
            _ => None,
        })
        .unwrap()
    }

    fn rec(value: &[u8], ts: u64, headers: Vec<(String, Vec<u8>)>) -> RawRecord {
        RawRecord {
            coord: SourceCoord::default(),
            record_ts: ts,
            bytes: value.to_vec(),
            headers,
        }
    }

    #[test]
    fn signed_records_verify_and_every_mutation_fails() {
        let r = ring();
        let v = br#"{"event_id":"e1"}"#;
        let h = r.sign("card-switch", 1_000, v).unwrap();
        assert_eq!(
            r.verify(&rec(v, 1_000, h.clone()), 300_000),
            Ok("card-switch")
        );
        // Any flipped bit of the value or of the signature.
        for i in 0..v.len() * 8 {
            let mut w = v.to_vec();
            w[i / 8] ^= 1 << (i % 8);
            assert!(r.verify(&rec(&w, 1_000, h.clone()), 300_000).is_err());
        }
        for i in 0..h[2].1.len() * 8 {
            let mut bad = h.clone();
            bad[2].1[i / 8] ^= 1 << (i % 8);
            assert!(r.verify(&rec(v, 1_000, bad), 300_000).is_err(), "bit {i}");
        }
        // Stale: signed 10 minutes before the record timestamp.
        let e = r.verify(&rec(v, 601_000, h.clone()), 300_000).unwrap_err();
        assert!(e.contains("stale"), "{e}");
        // Missing, unknown key, a key of another producer (verifies, but names it).
        assert!(r
            .verify(&rec(v, 1_000, vec![]), 300_000)
            .unwrap_err()
            .contains("missing"));
        let unknown = signature_headers("nope", K1.as_bytes(), 1_000, v);
        assert!(r
            .verify(&rec(v, 1_000, unknown), 300_000)
            .unwrap_err()
            .contains("unknown"));
        let other = r.sign("auth-service", 1_000, v).unwrap();
        assert_eq!(r.verify(&rec(v, 1_000, other), 300_000), Ok("auth-service"));
        // The right key id with the wrong key material.
        let forged = signature_headers("cs-1", K2.as_bytes(), 1_000, v);
        assert!(r.verify(&rec(v, 1_000, forged), 300_000).is_err());
    }

    #[test]
    fn keyring_needs_every_key_and_prints_none() {
        let policy = SigningPolicy {
            required: true,
            keys: [("cs-1".to_owned(), "card-switch".to_owned())].into(),
            ..Default::default()
        };
        let e = Keyring::load(&policy, |_| None).unwrap_err();
        assert!(e.to_string().contains("TIDEMARK_SIGNING_KEY_CS_1"), "{e}");
        assert!(Keyring::load(&policy, |_| Some("short".into())).is_err());
        let empty = SigningPolicy {
            required: true,
            ..Default::default()
        };
        assert!(Keyring::load(&empty, |_| None).is_err());
        let dbg = format!("{:?}", ring());
        assert!(!dbg.contains(K1) && !dbg.contains("0123456789"), "{dbg}");
        assert_eq!(
            key_env_var("card-switch.1"),
            "TIDEMARK_SIGNING_KEY_CARD_SWITCH_1"
        );
    }
}
