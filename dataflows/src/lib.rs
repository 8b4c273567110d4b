//! tidemark's stages as pure functions from input streams to output streams.
//!
//! - [`ig`]: the Ingestion Gate (SPEC §5): validation with stable reason codes, logical-time
//!   assignment against partition watermarks, windowed dedup, receipts.
//! - [`envelope`]: the canonical envelope and per-event-type payload schemas (SPEC §4).
//! - [`event`]: the admitted envelope parsed once into a compact typed event (an
//!   [`EventSchema`](event::EventSchema) of the fields and types the stages read).
//! - [`ofp`]: feature definitions grouped by key field (SPEC §7).
//! - [`ieg`]: the identity graph (SPEC §6).
//! - [`df`]: bundles, scoring, decisions and action intents (SPEC §8).
//! - [`pipeline`]: IEG → OFP → DF → DLA as one function, `decide` (audit records, snapshots
//!   and, for datasets, typed decision details).
//! - [`labels`]: the label-as-of rule of training datasets (SPEC §10).
//!
//! Nothing here performs I/O: the same functions run online (fed by a live source) and offline
//! (fed by the archive), which is what makes their outputs comparable byte for byte.

pub mod df;
pub mod envelope;
pub mod event;
pub mod ieg;
pub mod ig;
pub mod labels;
pub mod ofp;
pub mod pipeline;
pub use tidemark_operators::ReasonCode;
