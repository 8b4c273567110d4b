//! The continuous service's cost in throughput, measured in one process on a generated file
//! log: commits on (`commit_interval` 1m) vs effectively off (only the genesis commit),
//! alternated twice, in records per CPU-second. (Restart cost is measured over Kafka with a
//! real SIGKILL; see docs/operations.md.)
//!
//! `TIDEMARK_BENCH_EVENTS` sets the world size (default 200k records at 100/s: 33 minutes of
//! event time, 1-minute files and commits).

use std::time::Duration;

use tidemark_benches::{env_or, measure};
use tidemark_jobs::config::{load, Profile};
use tidemark_jobs::run::{run_with, Ingress, RunOptions};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/profiles/service.toml"
);

fn main() -> anyhow::Result<()> {
    tidemark_jobs::tune_memory();
    let events: u64 = env_or("TIDEMARK_BENCH_EVENTS", 200_000);
    let cfg = WorldConfig {
        events,
        ..Default::default()
    };
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("in");
    let mut sink = FileLogSink::create(&log, cfg.partitions)?;
    generate(&cfg, &mut sink, &mut |_, _| {})?;
    let ingress = Ingress::File(log);
    let base = load(PROFILE)?;
    let opts = RunOptions::threads(2);

    // Commits on vs off.
    let rate = |label: &str, p: &Profile, i: usize| -> anyhow::Result<f64> {
        let data = tmp.path().join(format!("{label}-{i}"));
        let (wall, cpu, out) = measure(|| run_with(p, &ingress, &data, &opts));
        out?;
        let commits = std::fs::read_dir(data.join("ckpt/commits"))?.count();
        let r = events as f64 / cpu.as_secs_f64();
        println!(
            "commits {label:<3} -w2: {events} records, {r:.0} records/CPU-s, {:.2}s wall, {commits} commit files",
            wall.as_secs_f64()
        );
        Ok(r)
    };
    let mut off = base.clone();
    off.wiring.commit_interval = Duration::from_secs(3600 * 24 * 365);
    let mut ratios = Vec::new();
    for i in 0..2 {
        let on = rate("on", &base, i)?;
        let of = rate("off", &off, i)?;
        ratios.push(on / of);
    }
    println!(
        "commits on / off (records per CPU-s): {:.3}, {:.3}",
        ratios[0], ratios[1]
    );

    Ok(())
}
