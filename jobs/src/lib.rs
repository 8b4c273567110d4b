//! The tidemark jobs: the wiring of sources → dataflows → sinks behind the `tidemark` CLI.
//!
//! - [`config`]: profiles loaded in layers (defaults → profile TOML → `TIDEMARK__…` env vars),
//!   policy revisions and digests.
//! - [`world`]: the deterministic world generator.
//! - [`run`]: the online run: options, root checks, the supervised worker loop, run records.
//! - [`dataflow`]: the online dataflow of one worker (source → stages → writers → commits).
//! - [`resume`]: the data-root lease, the latest commit and what a resumed run starts from.
//! - [`broker`]: the local tansu broker and topic creation on any Kafka cluster.
//! - [`demo`]: multi-stage commands (world to file, verify, summary, the demos).
//! - [`kafka`]: producing worlds into the ingress topic, reading topics back.
//! - [`publish`]: what the online run appends to the output topics.
//! - [`wallclock`]: the only wall-clock reads (pacing, latency, run records).
//! - [`verify`]: archive completeness checks.

pub mod broker;
pub mod config;
pub mod dataflow;
pub mod demo;
pub mod kafka;
pub mod publish;
pub mod replay;
pub mod resume;
pub mod run;
pub mod verify;
pub mod wallclock;
pub mod world;
