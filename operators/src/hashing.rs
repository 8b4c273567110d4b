//! Stable hashing used for routing, bucketing and content digests.
//!
//! Everything that reaches an output (bucket numbers, digests) uses an algorithm documented in
//! `docs/hashing.md`, so an independent program can recompute it:
//! - buckets: `xxh3_64(key bytes, seed 0) % buckets`;
//! - file and section digests: SHA-256, lower-case hex;
//! - key ids (entity keys, distinct values): `xxh3_128(bytes, seed 0)`, see [`key_id`].

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

/// Stable 64-bit hash of a byte string (XXH3-64, seed 0). Used for exchange routing and buckets.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// The bucket of `key` among `buckets` fixed buckets (independent of worker count).
pub fn bucket_of(key: &str, buckets: u32) -> u32 {
    (stable_hash(key.as_bytes()) % u64::from(buckets.max(1))) as u32
}

/// A fixed-width key id: XXH3-128 (seed 0) of the key's canonical bytes.
///
/// Hot-path state is keyed by these ids instead of Strings. The id is a pure function of the
/// bytes, so it does not depend on worker count, arrival order or process. Two distinct keys
/// collide with probability about `n² / 2¹²⁹` for `n` keys (below 10⁻²⁰ at a billion keys);
/// `docs/hashing.md` documents the encoding so an independent program can recompute it.
pub fn key_id(bytes: &[u8]) -> u128 {
    xxh3_128(bytes)
}

/// A key id of several parts, each followed by the unit separator `0x1F` (the canonical
/// encoding of a typed key such as `card_id 0x1F card-17 0x1F`).
pub fn key_id_of(parts: &[&[u8]]) -> u128 {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        buf.extend_from_slice(p);
        buf.push(0x1F);
    }
    xxh3_128(&buf)
}

/// 128-bit digest of a fixed-width state tuple: XXH3-128 of `a ‖ b ‖ c` (16 + 16 + 8 bytes,
/// little endian). Snapshot digests are wrapping sums of these.
pub fn state_digest(a: u128, b: u128, c: i64) -> u128 {
    let mut buf = [0u8; 40];
    buf[..16].copy_from_slice(&a.to_le_bytes());
    buf[16..32].copy_from_slice(&b.to_le_bytes());
    buf[32..].copy_from_slice(&c.to_le_bytes());
    xxh3_128(&buf)
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    lower_hex(&Sha256::digest(bytes))
}

/// The first 32 hex digits (16 bytes) of the SHA-256 of `parts` joined by the unit separator
/// `0x1F`: the same digits as `sha256_hex(parts.join("\x1f"))[..32]`, without building the
/// joined string.
pub fn sha256_hex32(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0x1F]);
        }
        h.update(p);
    }
    lower_hex(&h.finalize()[..16])
}

/// Lower-case hex of `bytes` (at most 32 of them) through a stack buffer.
fn lower_hex(bytes: &[u8]) -> String {
    let mut buf = [0u8; 64];
    let n = bytes.len().min(32);
    let out = &mut buf[..2 * n];
    if hex::encode_to_slice(&bytes[..n], out).is_err() {
        return hex::encode(bytes);
    }
    std::str::from_utf8(out)
        .map(str::to_owned)
        .unwrap_or_else(|_| hex::encode(bytes))
}

/// A 128-bit identity of a sequence of byte strings (BLAKE3 over each part's length and bytes,
/// first 16 bytes little-endian). Used to recognise output records already on a topic.
pub fn identity128(parts: &[&[u8]]) -> u128 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    u128::from_le_bytes(out)
}

/// BLAKE3 of `bytes` as lower-case hex.
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vector() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// The prefix digest equals the first 32 hex digits of the digest of the joined string.
    #[test]
    fn sha256_hex32_is_the_joined_prefix() {
        for parts in [&["abc"][..], &["ev-1", "b3:00ff", "ig@1"], &["", ""], &[]] {
            let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            assert_eq!(
                sha256_hex32(&bytes),
                sha256_hex(parts.join("\u{1f}").as_bytes())[..32]
            );
        }
    }

    #[test]
    fn xxh3_known_vector() {
        // XXH3_64bits("") with seed 0, from the xxHash reference implementation.
        assert_eq!(stable_hash(b""), 0x2D06800538D394C2);
    }

    #[test]
    fn buckets_in_range() {
        for k in ["a", "b", "account:1", ""] {
            assert!(bucket_of(k, 8) < 8);
            assert_eq!(bucket_of(k, 1), 0);
        }
    }
}
