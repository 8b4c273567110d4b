//! The tidemark jobs: the wiring of sources → dataflows → sinks behind the `tidemark` CLI.
//!
//! - [`config`]: profiles loaded in layers (defaults → profile TOML → `TIDEMARK__…` env vars),
//!   policy revisions and digests.
//! - [`world`]: the deterministic world generator.
//! - [`run`]: the online run (IG over a partitioned ingress log into the archive).
//! - [`verify`]: archive completeness checks.

pub mod config;
pub mod replay;
pub mod run;
pub mod verify;
pub mod world;
