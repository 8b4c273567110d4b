//! Fieldless enums spelled as fixed strings on the wire (JSON, Parquet, metrics): decisions,
//! postures and event types are typed in memory and keep their SPEC spellings in every output.

/// A name that is not one of an enum's spellings (bad input where it comes from a file or a
/// record, a bug where the pipeline made it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    /// What was being read, e.g. "decision".
    pub what: &'static str,
    /// The text that matched no variant.
    pub value: String,
}

/// Generates a fieldless enum with one fixed spelling per variant on the wire (JSON, Parquet,
/// metrics): `as_str`, `ALL`, `Display`, `FromStr` and serde as that spelling.
macro_rules! spelled_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::spelled::UnknownName;

            fn from_str(s: &str) -> Result<Self, $crate::spelled::UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::spelled::UnknownName {
                        what: $what,
                        value: s.chars().take(64).collect(),
                    }),
                }
            }
        }
    };
}

pub(crate) use spelled_enum;

#[cfg(test)]
mod tests {
    use crate::decision::{Decision, Posture};
    use crate::ingest::EventType;

    #[test]
    fn spellings_round_trip_through_str_and_serde() {
        for d in Decision::ALL {
            assert_eq!(d.as_str().parse::<Decision>(), Ok(*d));
            assert_eq!(
                serde_json::to_string(d).unwrap(),
                format!("{:?}", d.as_str())
            );
        }
        for p in Posture::ALL {
            assert_eq!(p.to_string().parse::<Posture>(), Ok(*p));
        }
        let mut spellings: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        for t in EventType::ALL {
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), *t);
        }
        // Declared in spelling order, so the derived order is the order of the strings.
        let sorted = {
            let mut s = spellings.clone();
            s.sort();
            s
        };
        assert_eq!(spellings, sorted);
        spellings.dedup();
        assert_eq!(spellings.len(), EventType::ALL.len());
        let err = "allow".parse::<Decision>().unwrap_err();
        assert_eq!(err.to_string(), "unknown decision \"allow\"");
        assert!(serde_json::from_str::<Posture>("\"CALM\"").is_err());
    }
}
