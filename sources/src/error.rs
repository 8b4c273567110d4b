//! Errors raised by source connectors, classified by who must act.

use thiserror::Error;

/// A source error. `BadInput` means the log itself is unusable (fix the input); `Transient`
/// may succeed on retry; `Bug` is an invariant violation inside tidemark.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The log or a record frame is unreadable (not a record-level validation failure).
    #[error("unreadable log {path}: {message}")]
    BadInput {
        /// The file or topic concerned.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An I/O error that may go away on retry.
    #[error("transient I/O error on {path}: {source}")]
    Transient {
        /// The file or topic concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A Kafka client or broker error (transient: retried with backoff before it surfaces).
    #[error("kafka error on {topic}: {message}")]
    Kafka {
        /// Topic (or topic/partition) concerned.
        topic: String,
        /// What failed.
        message: String,
    },
    /// The topic does not exist on the broker (configuration: create it first).
    #[error("topic {0} does not exist on the broker (create it with `tidemark broker topics` or your cluster's tooling)")]
    MissingTopic(String),
    /// An invariant inside tidemark was violated.
    #[error("bug: {0}")]
    Bug(String),
}
