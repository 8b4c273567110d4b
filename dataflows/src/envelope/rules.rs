//! Typed value rules (SPEC §5 `BAD_VALUE`): what a well-typed field's value must satisfy.
//! Each rule returns `Err(why)` with a short human-readable explanation for the receipt.

use std::net::IpAddr;

/// The longest id, in bytes (SPEC §4: ids are 1..128 bytes).
pub const MAX_ID_BYTES: usize = 128;

/// Whether `c` may not appear in an id: a Unicode control character (NUL, newline, DEL, C1) or
/// a bidirectional formatting character (LRM/RLM, the embedding/override/isolate marks), which
/// can make an id display as a different one.
pub fn forbidden_in_id(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// An id: 1..=128 bytes with no forbidden character.
pub fn id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty id".into());
    }
    if s.len() > MAX_ID_BYTES {
        return Err(format!("{} bytes > {MAX_ID_BYTES}", s.len()));
    }
    match s.char_indices().find(|(_, c)| forbidden_in_id(*c)) {
        Some((at, c)) => Err(format!(
            "control or bidi character U+{:04X} at byte {at}",
            c as u32
        )),
        None => Ok(()),
    }
}

/// An amount in minor units: `0 ..= max`.
pub fn amount(v: i64, max: i64) -> Result<(), String> {
    if (0..=max).contains(&v) {
        Ok(())
    } else {
        Err(format!("{v} outside [0, {max}]"))
    }
}

/// An active ISO-4217 alphabetic currency code, e.g. `EUR`.
pub fn currency(s: &str) -> Result<(), String> {
    match iso_currency::Currency::from_code(s) {
        Some(_) => Ok(()),
        None => Err(format!("{:?} is not an ISO-4217 currency code", clip(s))),
    }
}

/// An ISO-3166-1 alpha-2 country code in upper case, e.g. `NL`.
pub fn country(s: &str) -> Result<(), String> {
    let upper = s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase());
    if upper && isocountry::CountryCode::for_alpha2(s).is_ok() {
        Ok(())
    } else {
        Err(format!("{:?} is not an ISO-3166 alpha-2 code", clip(s)))
    }
}

/// An IPv4 or IPv6 address in its textual form.
pub fn ip(s: &str) -> Result<(), String> {
    s.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{:?} is not an IP address", clip(s)))
}

/// At most 40 characters of `s`, for details that quote hostile input.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_accept_the_valid_and_reject_the_hostile() {
        assert!(id("acct-1").is_ok());
        assert!(id(&"x".repeat(128)).is_ok());
        assert!(id("é".repeat(64).as_str()).is_ok());
        for bad in [
            String::new(),
            "x".repeat(129),
            "a\0b".into(),
            "a\u{202E}b".into(),
            "a\u{200F}".into(),
            "tab\there".into(),
            "\u{7f}".into(),
            "\u{85}".into(),
        ] {
            assert!(id(&bad).is_err(), "{bad:?}");
        }
        assert!(amount(0, 100).is_ok() && amount(100, 100).is_ok());
        assert!(amount(-5, 100).is_err() && amount(101, 100).is_err());
        assert!(amount(i64::MIN, i64::MAX).is_err());
        for c in ["EUR", "USD", "JPY", "GBP"] {
            assert!(currency(c).is_ok(), "{c}");
        }
        for c in ["NOTACURRENCY", "eur", "", "EU", "€"] {
            assert!(currency(c).is_err(), "{c}");
        }
        for c in ["NL", "US", "DE", "GB"] {
            assert!(country(c).is_ok(), "{c}");
        }
        for c in ["", "nl", "XX", "NLD", "N"] {
            assert!(country(c).is_err(), "{c}");
        }
        for a in ["10.0.0.1", "::1", "2001:db8::1"] {
            assert!(ip(a).is_ok(), "{a}");
        }
        for a in ["999.999.1.1", "", "1.2.3", "localhost", "1.2.3.4 "] {
            assert!(ip(a).is_err(), "{a}");
        }
    }
}
