//! Sink errors, classified.

use thiserror::Error;

/// A sink error. `Conflict` and `Corrupt` are bad input (someone else's bytes are there);
/// `Transient` may succeed on retry; `Bug` is an invariant violation.
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
