//! The world generator: realistic, deterministic fraud traffic as raw ingress records.
//!
//! Same [`WorldConfig`] → byte-identical output. Everything is drawn from one ChaCha8 stream
//! seeded by `seed`; simulated time starts at [`WorldConfig::start_ms`] and advances by
//! exponential inter-arrival gaps. The world has accounts (1–3 cards, 1–2 home devices, an
//! email, a home IP and country), merchants by category, log-normal amounts, logins and
//! profile changes, and three fraud patterns with ground truth (card testing bursts, account
//! takeover, fraud rings sharing devices and emails), delayed labels, posture changes, and
//! injected bad input for every IG reason code.

mod json;
mod model;
pub mod sink;

use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use model::Pattern;
use model::{Pending, World};
pub use sink::{FileLogSink, KafkaWorldSink, NullSink, RecordSink};

/// Kinds of injected bad input, one per IG reason code (`BAD_SIGNATURE` comes from signing,
/// not from the generator). Several kinds have variants: `MALFORMED_JSON` is a truncated
/// record or one with a duplicate `producer` key, `BAD_VALUE` breaks one value rule (amount,
/// currency, country, IP, id length or characters), `CLOCK_SKEW` is far ahead of or far behind
/// the record timestamp.
pub const BAD_KINDS: [&str; 11] = [
    "MALFORMED_JSON",
    "MISSING_FIELD",
    "BAD_TYPE",
    "BAD_VALUE",
    "UNKNOWN_EVENT_TYPE",
    "UNSUPPORTED_SCHEMA_VERSION",
    "PRODUCER_NOT_ALLOWED",
    "PAYLOAD_TOO_LARGE",
    "LATE_EVENT",
    "CLOCK_SKEW",
    "DUPLICATE",
];

/// Parameters of a world.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorldConfig {
    /// Number of ingress records to produce (including injected bad ones and resends).
    pub events: u64,
    /// RNG seed.
    pub seed: u64,
    /// Ingress partitions.
    pub partitions: u32,
    /// Fraction of records replaced by (or, for duplicates, followed by) bad input, spread
    /// evenly over the kinds in [`BAD_KINDS`].
    pub bad_rate: f64,
    /// Simulated start time (epoch ms). Default 2026-01-01T00:00:00Z.
    pub start_ms: u64,
    /// Mean simulated events per second.
    pub rate_per_sec: f64,
    /// Fraction of events that start a fraud episode.
    pub fraud_rate: f64,
    /// Record timestamps trail event times by a uniform `0..jitter_ms` (transport delay).
    /// Default 300; live (paced) production uses 0 so latency is measured from the send.
    pub jitter_ms: u64,
    /// Delays of scheduled follow-ups (fraud episode steps, labels, posture recovery) are
    /// multiplied by this. Default 1.0; a live demo of a few seconds uses ~0.01 so episodes
    /// unfold in seconds instead of simulated minutes.
    pub follow_up_scale: f64,
    /// A tenth of the events are stragglers: their event time is up to this much (uniform)
    /// before the time they are sent. Default 2000; a demo with `allowed_lateness` L uses L,
    /// so only the injected LATE_EVENT records arrive behind the watermark.
    #[serde(default = "default_straggler_ms")]
    pub straggler_ms: u64,
}

fn default_straggler_ms() -> u64 {
    2_000
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            events: 100_000,
            seed: 7,
            partitions: 4,
            bad_rate: 0.01,
            start_ms: 1_767_225_600_000,
            rate_per_sec: 100.0,
            fraud_rate: 0.002,
            jitter_ms: 300,
            follow_up_scale: 1.0,
            straggler_ms: default_straggler_ms(),
        }
    }
}

/// What a world run produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorldStats {
    /// Records written.
    pub records: u64,
    /// Transactions.
    pub txns: u64,
    /// Fraudulent transactions by pattern.
    pub fraud_txns: u64,
    /// Label events.
    pub labels: u64,
    /// Posture events.
    pub postures: u64,
    /// Injected bad input per kind, in [`BAD_KINDS`] order.
    pub bad: Vec<(String, u64)>,
    /// Simulated time range.
    pub first_ms: u64,
    /// Last simulated event time.
    pub last_ms: u64,
}

/// Generates a world into `sink`. The ground truth of every fraudulent transaction is passed to
/// `truth(event_id, pattern)`.
pub fn generate(
    cfg: &WorldConfig,
    sink: &mut dyn RecordSink,
    truth: &mut dyn FnMut(&str, Pattern),
) -> std::io::Result<WorldStats> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut world = World::new(cfg, &mut rng);
    let mut pending: BinaryHeap<Pending> = BinaryHeap::new();
    let mut stats = WorldStats {
        first_ms: cfg.start_ms,
        bad: BAD_KINDS.iter().map(|k| (k.to_string(), 0)).collect(),
        ..Default::default()
    };
    let mean_gap_ms = 1000.0 / cfg.rate_per_sec.max(1e-6);
    let mut t = cfg.start_ms;
    // The simulated clock keeps its fraction of a millisecond: truncating every gap to whole
    // ms would make the world run faster than `rate_per_sec` (at 4000/s, ~50x faster).
    let mut t_exact = cfg.start_ms as f64;
    let mut buf = Vec::with_capacity(1024);
    let mut seq: u64 = 0;
    while stats.records < cfg.events {
        // Next event: a due pending (episode step, label) or a fresh background event.
        let ev = match pending.peek() {
            Some(p) if p.at <= t => pending.pop().map(|p| p.event),
            _ => {
                let u: f64 = rng.random::<f64>().max(1e-12);
                t_exact += -u.ln() * mean_gap_ms;
                t = t.max(t_exact as u64);
                world.background(&mut rng, t, &mut pending, cfg)
            }
        };
        sink.at(t)?;
        let Some(ev) = ev else { continue };
        seq += 1;
        let r = world.render(
            &mut rng,
            &ev,
            seq,
            cfg,
            &mut buf,
            &mut stats,
            truth,
            &mut pending,
        );
        sink.write(r.partition, &r.key, r.record_ts, &buf, r.producer)?;
        stats.records += 1;
        if let Some(resend_ts) = r.resend {
            if stats.records < cfg.events {
                sink.write(r.partition, &r.key, resend_ts, &buf, r.producer)?;
                stats.records += 1;
            }
        }
        stats.last_ms = stats.last_ms.max(ev.at);
    }
    sink.finish()?;
    Ok(stats)
}
