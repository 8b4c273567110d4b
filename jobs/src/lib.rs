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
//! - [`dataset`]: training datasets from the archive: build, manifest, verify, zero-skew check.
//! - [`backfill`]: declared backfills into derived versions under `ofs/backfills/`.
//! - [`gov`]: governance facts under `gov/` and on the control topic.
//! - [`govcli`]: the `backfill` and `gov` subcommands.
//! - [`progress`]: progress bars (terminal) or plain progress lines.
//! - [`metrics`]: Prometheus metrics and the `/healthz`, `/readyz` endpoints of `run`.
//! - [`slow`]: logs operator activations slower than `wiring.slow_activation` (diagnostic).

pub mod backfill;
pub mod broker;
pub mod config;
pub mod dataflow;
pub mod dataset;
pub mod demo;
pub mod gov;
pub mod govcli;
pub mod kafka;
pub mod metrics;
pub mod progress;
pub mod publish;
pub mod replay;
pub mod resume;
pub mod run;
pub mod slow;
pub mod verify;
pub mod wallclock;
pub mod world;

/// The log filter of the CLI and the benchmarks: `RUST_LOG`, and warnings (retries, lease
/// takeovers, slow activations) where it says nothing.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
        .from_env_lossy()
}

/// Process-wide memory tuning, called first thing by the CLI and the benchmarks: transparent
/// huge pages off for this process. mimalloc returns freed memory to the OS and faults it back
/// in; with THP each fault zeroes a 2 MiB page, which cost a quarter of a replay's CPU
/// (`clear_page_erms` in perf). Databases with the same allocation pattern (Redis, MongoDB)
/// recommend the same. A failure (an old kernel) only leaves THP as it was.
pub fn tune_memory() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag on this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
