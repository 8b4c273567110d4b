//! tidemark's stages as pure functions from input streams to output streams.
//!
//! - [`ig`]: the Ingestion Gate (SPEC §5): validation with stable reason codes, logical-time
//!   assignment against partition watermarks, windowed dedup, receipts.
//! - [`envelope`]: the canonical envelope and per-event-type payload schemas (SPEC §4).
//!
//! Nothing here performs I/O: the same functions run online (fed by a live source) and offline
//! (fed by the archive), which is what makes their outputs comparable byte for byte.

pub mod df;
pub mod envelope;
pub mod event;
pub mod ieg;
pub mod ig;
pub mod ofp;
pub mod pipeline;
pub use tidemark_operators::ReasonCode;
