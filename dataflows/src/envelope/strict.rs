//! Strict JSON: parses bytes into a borrowed document ([`Json`]) with serde_json's parser,
//! accepting and rejecting exactly what `serde_json::from_slice::<Value>` does, except that an
//! object with the same key twice (at any depth) is an error. Plain serde_json keeps the last
//! value of a repeated key, so `{"producer":"a","producer":"b"}` would read as `b` here and
//! possibly as `a` in another consumer: a spoofing path IG closes by quarantining such records
//! `MALFORMED_JSON` (SPEC §5).
//!
//! The document borrows every string without escapes from the input and keeps each object's
//! members sorted by key, so [`Json::write_canonical`] writes the canonical envelope (sorted
//! keys, no whitespace) byte for byte as `serde_json::Value::to_string` would, without building
//! a `Value` (one `String` and one `BTreeMap` node per field) first.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// One JSON value, borrowing its strings from the parsed bytes where it can.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as serde_json holds it (u64, i64 or finite f64).
    Number(Number),
    /// A string: borrowed when the input spelled it without escapes.
    Str(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object.
    Object(Object<'a>),
}

/// A JSON object's members, sorted by key (byte order, as `serde_json::Map`), keys unique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, keeping the members sorted (replaces an existing value).
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Json<'a>) {
        let key = key.into();
        match self
            .0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref()))
        {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    /// The members in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl<'a> Json<'a> {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is a number that fits i64.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// Appends the canonical serialisation: object keys sorted, no whitespace, strings escaped
    /// as serde_json escapes them — the bytes `serde_json::Value::to_string` gives for the
    /// same value.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::Number(n) => write_serde(out, n),
            Json::Str(s) => write_str(out, s),
            Json::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_canonical(out);
                }
                out.push(b']');
            }
            Json::Object(obj) => {
                out.push(b'{');
                for (i, (k, v)) in obj.0.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, k);
                    out.push(b':');
                    v.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// Writes a string as serde_json does: serde_json escapes only `"`, `\` and control
/// characters, so a string without them (every string spelled without escapes in the input)
/// is copied as is; any other goes through serde_json.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        write_serde(out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn write_serde<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Serialising a string or number into a Vec cannot fail.
    let _ = serde_json::to_writer(out, v);
}

/// Parses `bytes` as one JSON value, rejecting duplicate object keys.
pub fn from_slice(bytes: &[u8]) -> Result<Json<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = JsonSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

struct JsonSeed;

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        JsonSeed.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(JsonSeed)? {
            out.push(v);
        }
        Ok(Json::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut out: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
        while let Some(Str(key)) = map.next_key()? {
            // Objects are small (an envelope has ~15 members): a scan beats hashing.
            if out.iter().any(|(k, _)| *k == key) {
                return Err(A::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let v = map.next_value_seed(JsonSeed)?;
            out.push((key, v));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(Json::Object(Object(out)))
    }
}

/// A JSON string (or object key), borrowed from the input when spelled without escapes
/// (serde's own `Cow<str>` always copies).
pub struct Str<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn canonical(text: &str) -> String {
        let mut out = Vec::new();
        from_slice(text.as_bytes())
            .unwrap()
            .write_canonical(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn canonical_bytes_equal_serde_json_value() {
        for text in [
            r#"{"a":1,"b":[1,-2,3.5,1e3,18446744073709551615,-9223372036854775808],"c":{"d":null,"e":true,"f":"\u00e9\n"}}"#,
            "[]",
            "{}",
            "\"x\"",
            "  {\"z\":1,\"a\":2}  ",
            r#"{"k\"ey":"a\\b","\u0041":"\u0001\u001f\t","é":"ü\u2028","b":1.50,"a":-0.0,"c":12e-4}"#,
            r#"{"z":{"y":[{"b":2,"a":1},[]],"x":{}},"aa":"\/slash","a":""}"#,
        ] {
            let theirs: Value = serde_json::from_slice(text.as_bytes()).unwrap();
            assert_eq!(canonical(text), theirs.to_string(), "{text}");
        }
    }

    /// Arbitrary JSON: strings over a small alphabet with quotes, backslashes, control and
    /// non-ASCII characters; integers and floats at the edges.
    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let string = || {
            proptest::string::string_regex("[a-c\"\\\u{0}-\u{3}\n\u{7f}é\u{2028}😀]{0,6}")
                .expect("a regex")
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(string(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Against serde_json's own rendering of the same value, from compact, pretty and
        /// ASCII-escaped spellings of it.
        #[test]
        fn canonical_bytes_equal_serde_json_on_arbitrary_values(v in arb_json()) {
            let expected = v.to_string();
            let pretty = serde_json::to_string_pretty(&v).expect("serialises");
            let escaped = expected.replace('é', "\\u00e9");
            for text in [&expected, &pretty, &escaped] {
                proptest::prop_assert_eq!(&canonical(text), &expected, "{}", text);
            }
        }
    }

    #[test]
    fn borrows_strings_without_escapes() {
        let doc = from_slice(br#"{"a":"plain","b":"esc\n"}"#).unwrap();
        let obj = doc.as_object().unwrap();
        assert!(matches!(
            obj.get("a"),
            Some(Json::Str(Cow::Borrowed("plain")))
        ));
        assert!(matches!(obj.get("b"), Some(Json::Str(Cow::Owned(_)))));
        assert!(obj.get("c").is_none());
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        for text in [
            r#"{"producer":"a","producer":"b"}"#,
            r#"{"a":{"x":1,"x":1}}"#,
            r#"{"a":[{"k":1},{"k":2,"k":3}]}"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let err = from_slice(text.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("duplicate key"), "{text}: {err}");
            // Plain serde_json would have accepted it.
            assert!(serde_json::from_slice::<Value>(text.as_bytes()).is_ok());
        }
    }

    #[test]
    fn rejects_what_serde_json_rejects_with_its_message() {
        for text in [
            "{",
            "{\"a\":1}x",
            "NaN",
            "{\"a\":01}",
            "",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":1e999}",
            "\"\\ud800\"",
        ] {
            let ours = from_slice(text.as_bytes()).unwrap_err();
            let theirs = serde_json::from_slice::<Value>(text.as_bytes()).unwrap_err();
            assert_eq!(ours.to_string(), theirs.to_string(), "{text:?}");
        }
    }
}
