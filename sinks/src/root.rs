//! Where a data root lives: a local directory or an S3 bucket and prefix.
//!
//! Spelled on the command line (`--data`, `--out`) and in `wiring.object_store` as a path,
//! `file://PATH`, or `s3://BUCKET[/PREFIX]`. S3 endpoint, region and credentials never appear
//! here: they come from the standard `AWS_*` environment variables only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::SinkError;

/// A data root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Root {
    /// A directory on the local filesystem.
    Local(PathBuf),
    /// A prefix (possibly empty) in an S3 bucket.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing `/` (empty: the bucket's top level).
        prefix: String,
    },
}

impl Root {
    /// The local directory, for a local root.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Root::Local(p) => Some(p),
            Root::S3 { .. } => None,
        }
    }

    /// A root below this one (`sub` is a `/`-separated relative path).
    pub fn join(&self, sub: &str) -> Root {
        let sub = sub.trim_matches('/');
        match self {
            Root::Local(p) => Root::Local(p.join(sub)),
            Root::S3 { bucket, prefix } => Root::S3 {
                bucket: bucket.clone(),
                prefix: if prefix.is_empty() {
                    sub.to_owned()
                } else {
                    format!("{prefix}/{sub}")
                },
            },
        }
    }
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Root::Local(p) => write!(f, "{}", p.display()),
            Root::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Root::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl FromStr for Root {
    type Err = SinkError;

    fn from_str(s: &str) -> Result<Root, SinkError> {
        let bad = |message: &str| SinkError::BadRoot {
            root: s.to_owned(),
            message: message.to_owned(),
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // S3 bucket naming rules (the subset every S3-protocol server accepts).
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
                && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
                && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !valid_bucket {
                return Err(bad(
                    "the bucket must be 3..63 characters of a-z, 0-9, '-' and '.'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix
                .split('/')
                .any(|seg| seg.is_empty() && !prefix.is_empty())
                || prefix.split('/').any(|seg| seg == "." || seg == "..")
                || prefix.chars().any(char::is_control)
            {
                return Err(bad(
                    "the prefix must be '/'-separated names without '.', '..' or empty parts",
                ));
            }
            return Ok(Root::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if scheme != "file" {
                return Err(bad(
                    "unsupported scheme (use a path, file://PATH or s3://BUCKET/PREFIX)",
                ));
            }
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        Ok(Root::Local(PathBuf::from(path)))
    }
}

impl From<&Path> for Root {
    fn from(p: &Path) -> Root {
        Root::Local(p.to_path_buf())
    }
}

impl From<PathBuf> for Root {
    fn from(p: PathBuf) -> Root {
        Root::Local(p)
    }
}

impl From<&PathBuf> for Root {
    fn from(p: &PathBuf) -> Root {
        Root::Local(p.clone())
    }
}

impl From<&Root> for Root {
    fn from(r: &Root) -> Root {
        r.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let r: Root = "s3://fraud-data/tidemark/prod".parse().unwrap();
        assert_eq!(
            r,
            Root::S3 {
                bucket: "fraud-data".into(),
                prefix: "tidemark/prod".into()
            }
        );
        assert_eq!(r.to_string(), "s3://fraud-data/tidemark/prod");
        assert_eq!(
            r.join("replay/").to_string(),
            "s3://fraud-data/tidemark/prod/replay"
        );
        let top: Root = "s3://bkt/".parse().unwrap();
        assert_eq!(top.to_string(), "s3://bkt");
        assert_eq!(top.join("x").to_string(), "s3://bkt/x");
        assert_eq!(
            "file:///tmp/a".parse::<Root>().unwrap(),
            Root::Local("/tmp/a".into())
        );
        assert_eq!(
            "rel/dir".parse::<Root>().unwrap(),
            Root::Local("rel/dir".into())
        );
        for bad in [
            "s3://",
            "s3://A_B/x",
            "s3://ok-bucket/a//b",
            "s3://ok-bucket/../x",
            "gs://b/x",
            "",
        ] {
            let e = bad.parse::<Root>().unwrap_err();
            assert!(matches!(e, SinkError::BadRoot { .. }), "{bad}: {e}");
        }
    }
}
