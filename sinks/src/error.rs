//! Sink errors, classified.

use thiserror::Error;

/// A sink error. `Conflict`, `Corrupt` and `BadRoot` are bad input (someone else's bytes are
/// there, or the root is misspelled); `Transient` may succeed later (the store already retried
/// it with backoff); `Denied` needs an operator (credentials, permissions); `Bug` is an
/// invariant violation.
#[derive(Debug, Error)]
pub enum SinkError {
    /// A write-once object exists with different bytes.
    #[error("write-once conflict at {path}: an object with different bytes already exists (existing sha256 {existing}, new sha256 {new})")]
    Conflict {
        /// Object path.
        path: String,
        /// sha256 of the existing bytes.
        existing: String,
        /// sha256 of the bytes we tried to write.
        new: String,
    },
    /// An object could not be decoded.
    #[error("corrupt object {path}: {message}")]
    Corrupt {
        /// Object path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Object store failure that may be transient.
    #[error("object store error at {path}: {source}")]
    Transient {
        /// Object path.
        path: String,
        /// Underlying error.
        #[source]
        source: object_store::Error,
    },
    /// The store refused the request for a reason retrying cannot fix (credentials,
    /// permissions, an operation the store does not support).
    #[error("object store refused {path}: {source}")]
    Denied {
        /// Object path.
        path: String,
        /// Underlying error.
        #[source]
        source: object_store::Error,
    },
    /// A data root spelled wrong (`--data`, `--out`, `wiring.object_store`).
    #[error("bad data root {root:?}: {message}")]
    BadRoot {
        /// What was given.
        root: String,
        /// What is wrong.
        message: String,
    },
    /// The object does not exist.
    #[error("object not found: {0}")]
    NotFound(String),
    /// A Kafka producer error (delivery failure, broker unreachable after retries).
    #[error("kafka: {0}")]
    Kafka(String),
    /// An invariant was violated.
    #[error("bug: {0}")]
    Bug(String),
}
